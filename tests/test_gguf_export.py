"""Export to GGUF: the file llama.cpp loads answers as TuneDeck does, prompted by the template training used.

A run is exported as a person would (``tunedeck export RUN --gguf``); the GGUF is then loaded by an independent runtime
(llama.cpp, through llama-cpp-python), prompted with the text the exported Modelfile's TEMPLATE renders, and its greedy
answer compared with TuneDeck's own. Bad input is refused before any work, and a cancelled export leaves nothing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from backend.core.store import JobStatus, Store
from backend.serving import gguf_export, ollama
from backend.serving.export import ExportError
from backend.settings import PROJECT_ROOT, Paths
from tests.cli_util import home_with_sample, tunedeck, tunedeck_json

pytestmark = pytest.mark.slow
QUESTION = "What is the capital of France?"
SYSTEM = "Answer with the name of the city."


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_model_build: Path) -> dict:
    root = tmp_path_factory.mktemp("gguf-home")
    env = home_with_sample(root, tiny_model_build)
    job = tunedeck_json(
        env,
        "train",
        "capitals",
        "--preset",
        "tiny-offline",
        "--set",
        "max_steps=40",
        "--set",
        f"system_prompt={SYSTEM}",
        "--wait",
    )
    assert job["status"] == "succeeded"
    reply = tunedeck_json(env, "generate", job["id"], "--prompt", QUESTION, "--max-new-tokens", "24")["reply"]
    return {"root": root, "env": env, "job": job, "reply": reply}


def read_modelfile(folder: Path) -> tuple[str, str | None]:
    text = (folder / "Modelfile").read_text()
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M).group(1)
    system = re.search(r'^SYSTEM """(.*?)"""$', text, re.S | re.M)
    return template, system.group(1) if system else None


def llama_cpp_answer(gguf: Path, prompt: str, n: int = 24) -> str:
    """Greedy, in llama.cpp, from the prompt text as Ollama would send it; stops at the end of the turn."""
    from llama_cpp import Llama

    llm = Llama(str(gguf), n_ctx=512, verbose=False, seed=0)
    ids = llm.tokenize(
        prompt.encode(),
        add_bos=bool(llm.metadata.get("tokenizer.ggml.add_bos_token") == "true"),
        special=True,
    )
    out = []
    for tok in llm.generate(ids, temp=0.0, top_k=1, reset=True):
        if gguf_export.is_end_of_turn(llm, tok) or len(out) >= n:
            break
        out.append(tok)
    return llm.detokenize(out).decode(errors="replace")


def export(run: dict, quant: str, dest: Path) -> dict:
    return tunedeck_json(
        run["env"], "export", run["job"]["id"], "--gguf", "--quant", quant, "--to", str(dest)
    )


def test_an_f16_export_answers_through_its_modelfile_as_tunedeck_chat_does(run: dict, tmp_path: Path) -> None:
    out = export(run, "f16", tmp_path)
    folder = Path(out["folder"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]  # nothing half-made beside it
    assert {p.name for p in folder.iterdir()} >= {
        Path(out["gguf"]).name,
        "Modelfile",
        "README.md",
        "check.json",
    }
    assert out["template_differences"] == [] and out["tokens_match"] is True
    assert out["answers"] and all(a["identical"] for a in out["answers"])

    template, system = read_modelfile(folder)
    assert system == SYSTEM  # the run's system prompt travels with the model
    prompt = ollama.render_go(template, [{"role": "user", "content": QUESTION}], system)
    answer = llama_cpp_answer(Path(out["gguf"]), prompt)
    assert answer == run["reply"], (answer, run["reply"])
    readme = (folder / "README.md").read_text()
    assert "ollama create" in readme and "The prompt text is identical" in readme


def test_the_gguf_carries_the_run_template_eos_and_system_prompt(run: dict, tmp_path: Path) -> None:
    from llama_cpp import Llama

    out = export(run, "q8_0", tmp_path)
    llm = Llama(out["gguf"], vocab_only=True, verbose=False)
    template = llm.metadata["tokenizer.chat_template"]
    assert SYSTEM in template and "{% generation %}" not in template
    assert llm.detokenize([llm.token_eos()], special=True).decode() == "<|end|>"  # tiny-offline's end of turn
    assert 'PARAMETER stop "<|end|>"' in (Path(out["folder"]) / "Modelfile").read_text()
    # q8_0: a bounded difference, measured and reported, never hidden
    for a in out["answers"]:
        assert 0 <= a["same_tokens"] <= a["of"] and 0 <= a["next_token_agreement"] <= 1
    assert out["size_bytes"] == os.path.getsize(out["gguf"]) > 0  # what is reported is the file handed out


def test_a_4_bit_export_is_made_by_llama_cpp_and_reports_how_far_answers_drift(
    run: dict, tmp_path: Path
) -> None:
    out = export(run, "q4_k_m", tmp_path)
    assert Path(out["gguf"]).name.endswith("-q4_k_m.gguf")
    f16 = export(run, "f16", tmp_path)
    assert out["size_bytes"] < f16["size_bytes"] * 0.6
    assert all("same_tokens" in a for a in out["answers"])
    assert not list(Path(out["folder"]).glob("f16.gguf"))  # the intermediate file is gone


def test_bad_requests_are_refused_before_any_work(run: dict, tmp_path: Path) -> None:
    env, job = run["env"], run["job"]["id"]
    res = tunedeck(env, "export", job, "--gguf", "--quant", "q3_k", "--to", str(tmp_path))
    assert res.returncode == 2 and "'q3_k' is not a GGUF type" in res.stderr and "q8_0" in res.stderr
    assert "Traceback" not in res.stderr
    res = tunedeck(env, "export", "run-nope", "--gguf", "--to", str(tmp_path))
    assert res.returncode == 2 and "There is no run 'run-nope'" in res.stderr
    res = tunedeck(env, "export", job, "--quant", "q8_0", "--to", str(tmp_path))
    assert res.returncode == 2 and "--quant goes with --gguf" in res.stderr
    assert list(tmp_path.iterdir()) == []


def _fake_run(paths: Paths, store: Store, status, base: Path, adapter: bool = True) -> str:
    """A run on ``base`` that ended with an (empty) adapter folder, or one still queued."""
    from tests.conftest import add_dataset_record

    add_dataset_record(store)
    store.add_job("run-x", "ds-1", "tiny-offline", {"base_model": str(base)}, str(paths.jobs / "run-x"))
    if adapter:
        folder = paths.jobs / "run-x" / "adapter"
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text("{}")
        status.set("run-x", JobStatus.RUNNING, pid=1)
        status.set("run-x", JobStatus.SUCCEEDED, result={"adapter_dir": str(folder)})
    return "run-x"


def test_an_architecture_the_converter_does_not_know_is_named(
    paths: Paths, store: Store, status, tmp_path: Path
) -> None:
    base = tmp_path / "odd-model"
    base.mkdir()
    (base / "config.json").write_text(
        json.dumps({"architectures": ["MadeUpForCausalLM"], "dtype": "float32"})
    )
    (base / "model.safetensors").write_bytes(b"\0" * 1024)
    run_id = _fake_run(paths, store, status, base)
    with pytest.raises(ExportError, match=r"does not know the architecture .*MadeUpForCausalLM.*--merged"):
        gguf_export.plan(store, paths, run_id, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything was made


def test_a_disk_too_small_is_refused_with_the_sizes(
    paths: Paths, store: Store, status, tmp_path: Path, tiny_model: Path
) -> None:
    from tests.conftest import tmpfs

    run_id = _fake_run(paths, store, status, tiny_model)
    with tmpfs(tmp_path / "small", "size=64k") as small:
        with pytest.raises(ExportError, match=r"Not enough disk space in .*small.*needs about .* is free"):
            gguf_export.plan(store, paths, run_id, small, "f16")
        assert list(small.iterdir()) == []


def test_a_run_without_an_adapter_is_refused(paths: Paths, store: Store, status, tmp_path: Path) -> None:
    run_id = _fake_run(paths, store, status, Path("tiny-offline"), adapter=False)
    with pytest.raises(ExportError, match="has no saved adapter .*queued"):
        gguf_export.plan(store, paths, run_id, tmp_path)


def test_a_cancelled_export_leaves_nothing_behind(run: dict, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "backend",
            "export",
            run["job"]["id"],
            "--gguf",
            "--quant",
            "f16",
            "--to",
            str(tmp_path),
        ],
        cwd=PROJECT_ROOT,
        env=run["env"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    for line in proc.stderr:  # wait until it is converting: the merged model and the partial folder exist
        if "converting" in line:
            break
    assert any(tmp_path.iterdir())
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert list(tmp_path.iterdir()) == []


def share_ctx(run: dict):
    from types import SimpleNamespace

    return SimpleNamespace(paths=Paths.from_env(run["root"]), store=Store(Paths.from_env(run["root"]).db))


def test_the_share_tab_shows_progress_then_offers_the_three_files(run: dict) -> None:
    from ui import share_tab

    fractions: list[float] = []
    steps = list(
        share_tab.export_gguf(
            run["job"]["id"], "q8_0", share_ctx(run), lambda f, desc="": fractions.append(f)
        )
    )
    messages = [m for m, _ in steps]
    assert (
        any("%, converting" in m for m in messages)
        and fractions == sorted(fractions)
        and fractions[-1] == 1.0
    )
    final, files = steps[-1]
    assert [Path(f).name for f in files] == [f"{run['job']['id']}-q8_0.gguf", "Modelfile", "README.md"]
    assert all(Path(f).is_file() for f in files)
    assert "Prompted exactly as in training" in final and "ollama create" in final
    # listed on the Share tab, as a reopened page shows it
    table = share_tab.gguf_exports_table(share_ctx(run))
    row = table[table["file"] == f"{run['job']['id']}-q8_0.gguf"].iloc[0]
    assert row["prompt"] == "as in training" and row["size"].endswith("MB")


def test_the_share_tab_cancel_stops_the_export_and_leaves_nothing(run: dict) -> None:
    from ui import share_tab

    ctx = share_ctx(run)
    exports = ctx.paths.home / "exports"
    before = set(exports.iterdir()) if exports.exists() else set()
    steps = share_tab.export_gguf(run["job"]["id"], "bf16", ctx)
    for message, _ in steps:
        if "converting" in message:
            table = share_tab.gguf_exports_table(ctx)
            assert "being written now" in set(table["made"])
            assert "being exported already" in next(share_tab.export_gguf(run["job"]["id"], "bf16", ctx))[0]
            assert "Cancelling" in share_tab.cancel_gguf(run["job"]["id"])
            break
    last = list(steps)[-1][0]
    assert "cancelled: nothing was left behind" in last
    assert set(exports.iterdir()) == before
    assert "No export of this run is in progress" in share_tab.cancel_gguf(run["job"]["id"])
