"""End to end, as a person uses it from the command line: real worker processes training tiny-offline.

One module-scoped data directory holds a dataset and a finished 30-step run that several tests look at.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.settings import CAPITALS_CSV, PROJECT_ROOT, Paths
from tests.cli_util import (
    JOB_TEST_TIMEOUT_S,
    offline_env,
    plain_peft_answer,
    tunedeck,
    tunedeck_json,
    tunedeck_wait,
)
from tests.conftest import link_starter_model, link_tiny_model

pytestmark = pytest.mark.slow
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, tiny_model_build: Path, starter_model_build: Path):
    """One data directory for the module. Tests share its dataset and finished run; whatever one of them leaves
    queued or running is cancelled after it (finish_jobs), so the one-job-at-a-time queue never makes the next test
    wait on it. The starter model is linked in so the app's background preparation of it has nothing to do."""
    root = tmp_path_factory.mktemp("e2e-home")
    link_tiny_model(Paths.from_env(root), tiny_model_build)
    link_starter_model(Paths.from_env(root), starter_model_build)
    env = offline_env(root)
    added = tunedeck_json(env, "data", "add", str(CAPITALS_CSV), "--name", "capitals")
    assert added["rows"] == 32 and added["mapping"]["prompt"] == "question"
    yield {"root": root, "env": env}
    finish_jobs({"root": root, "env": env})


@pytest.fixture(autouse=True)
def _no_job_left_behind(request: pytest.FixtureRequest):
    """After each test that uses the shared home, cancel what it left queued or running (also when it failed)."""
    yield
    if "home" in request.fixturenames:
        finish_jobs(request.getfixturevalue("home"))


def finish_jobs(home: dict) -> None:
    for job in tunedeck_json(home["env"], "jobs"):
        if job["status"] in ("queued", "running"):
            tunedeck(home["env"], "cancel", job["id"], "--timeout", "60")


@pytest.fixture(scope="module")
def trained(home: dict) -> dict:
    res = tunedeck(
        home["env"],
        "train",
        "capitals",
        "--preset",
        "tiny-offline",
        "--set",
        "max_steps=30",
        "--wait",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_training_lowers_the_loss_and_saves_an_adapter(home: dict, trained: dict) -> None:
    assert trained["status"] == "succeeded", trained["reason"]
    losses = [v for _, v in trained["metrics"]["loss"]]
    assert len(losses) == 30
    assert losses[-1] < 0.5 * losses[0], losses
    adapter = Path(trained["adapter_dir"])
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    job_dir = Path(trained["job_dir"])
    assert (job_dir / "config.yaml").is_file() and (job_dir / "result.json").is_file()
    assert trained["id"] in (job_dir / "worker.log").read_text()
    # show --json says the same, with no pid once the worker is gone
    shown = tunedeck_json(home["env"], "show", trained["id"])
    assert shown["status"] == "succeeded" and shown["pid"] is None and shown["adapter_dir"] == str(adapter)
    listed = tunedeck_json(home["env"], "jobs")
    assert trained["id"] in [j["id"] for j in listed]


def test_a_finished_run_is_scored_against_its_base_model(home: dict, trained: dict) -> None:
    """Scoring runs in the worker when training ends, with the model it just trained: the numbers are saved with
    the run, and the fine-tune beats the base on the examples it learned (the sample has no validation split)."""
    job_dir = Path(trained["job_dir"])
    saved = json.loads((job_dir / "eval.json").read_text())
    assert saved["n_examples"] == 16  # the tiny-offline preset's score_examples
    assert "no validation split" in saved["source"]  # it says what the numbers measure
    base, tuned = saved["base"], saved["tuned"]
    assert tuned["eval_loss"] < 0.5 * base["eval_loss"]
    assert tuned["rougeL"] > base["rougeL"] + 0.3 and tuned["chrf"] > base["chrf"]
    assert trained["scores"]["tuned"]["rougeL"] == tuned["rougeL"]  # `show --json` reports them
    with open(job_dir / "eval_examples.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16 and {"prompt", "reference", "base_answer", "tuned_answer", "tuned_rougeL"} <= set(
        rows[0]
    )
    # The same run scored again on demand, through a fresh load of base + adapter, gives the same numbers.
    again = tunedeck_json(home["env"], "eval", trained["id"], "--limit", "16")
    assert again["tuned"]["rougeL"] == pytest.approx(tuned["rougeL"])
    assert again["base"]["eval_loss"] == pytest.approx(base["eval_loss"], rel=1e-4)


def test_adapter_reloads_with_plain_peft_and_answers_the_same(home: dict, trained: dict) -> None:
    import torch

    ours = tunedeck_json(
        home["env"], "generate", trained["id"], "--prompt", QUESTION, "--max-new-tokens", "24"
    )
    base_dir = Paths.from_env(home["root"]).models / "tiny-offline"
    plain, model, tok, enc = plain_peft_answer(base_dir, trained["adapter_dir"], QUESTION, 24)
    assert ours["reply"] == plain
    assert plain.startswith("The capital of")  # 30 steps learn the answers' pattern (60 learn the cities too)
    merged = model.merge_and_unload()
    with torch.inference_mode():
        out2 = merged.generate(**enc, max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
    assert tok.decode(out2[0, enc["input_ids"].shape[1] :], skip_special_tokens=True) == plain
    base = tunedeck_json(
        home["env"], "generate", "--base", "tiny-offline", "--prompt", QUESTION, "--max-new-tokens", "24"
    )
    assert base["reply"] != plain  # the adapter is what changed the answer


def test_cancel_stops_a_running_job_and_keeps_its_adapter(home: dict) -> None:
    # Far more steps than the test waits for: the cancel always lands mid-run, however fast the machine.
    job = tunedeck_json(
        home["env"], "train", "capitals", "--preset", "tiny-offline", "--set", "max_steps=100000"
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        shown = tunedeck_json(home["env"], "show", job["id"])
        if shown["status"] == "running" and shown["step"] >= 3:
            break
        time.sleep(0.5)
    assert shown["pid"], shown
    done = tunedeck_json(home["env"], "cancel", job["id"], "--timeout", "60")
    assert done["status"] == "cancelled", done
    assert "cancelled at step" in done["reason"] and done["step"] < 100000
    assert done["adapter_dir"] and Path(done["adapter_dir"], "adapter_config.json").is_file()


def test_a_failing_worker_ends_as_failed_with_its_reason(home: dict, tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    res = tunedeck(
        home["env"],
        "train",
        "capitals",
        "--preset",
        "tiny-offline",
        "--set",
        f"base_model={broken}",
        "--wait",
        "--json",
    )
    assert res.returncode == 1
    detail = json.loads(res.stdout)
    assert detail["status"] == "failed" and detail["reason"]
    assert "Traceback" not in detail["reason"]


def test_hub_model_without_network_fails_fast_and_creates_nothing(home: dict) -> None:
    before = {j["id"] for j in tunedeck_json(home["env"], "jobs")}
    t0 = time.monotonic()
    res = tunedeck(home["env"], "train", "capitals", "--preset", "qwen2.5-0.5b-lora")
    assert (
        time.monotonic() - t0 < 120
    )  # seconds, not the minutes of a download's retries (a busy CI box is slow)
    assert res.returncode != 0
    assert "Qwen/Qwen2.5-0.5B-Instruct is not downloaded" in res.stderr and "HF_HUB_OFFLINE" in res.stderr
    assert "Traceback" not in res.stderr
    assert {j["id"] for j in tunedeck_json(home["env"], "jobs")} == before


def test_bad_settings_are_all_reported_at_once(home: dict) -> None:
    res = tunedeck(
        home["env"],
        "train",
        "capitals",
        "--preset",
        "tiny-offline",
        "--set",
        "learning_rate=0",
        "--set",
        "lora_r=0",
        "--set",
        "max_steps=0",
    )
    assert res.returncode == 2
    for field in ("learning_rate = 0", "lora_r = 0", "max_steps = 0"):
        assert field in res.stderr
    assert res.stderr.count("Fix:") == 3
    short = tunedeck(home["env"], "train", "capitals", "--preset", "tiny-offline", "--set", "max_length=16")
    assert short.returncode == 2 and "max_length = 16" in short.stderr and "row " in short.stderr


def test_the_web_app_process_never_imports_torch(home: dict) -> None:
    code = (
        "import sys, app; a, ctx, stop = app.create(); stop(); "
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'trl') if m in sys.modules))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env=home["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_every_ui_action_works_through_the_gradio_api(home: dict, trained: dict, monkeypatch) -> None:
    from gradio_client import Client, handle_file

    import app as tunedeck_app
    from tests.browser_util import free_port

    monkeypatch.setenv("TUNEDECK_HOME", str(home["root"]))
    blocks, ctx, stop = tunedeck_app.create()
    port = free_port()
    blocks.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}", verbose=False)
        names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
        for endpoint in (
            "/preview_file",
            "/save_dataset",
            "/list_datasets",
            "/preset_values",
            "/submit_job",
            "/list_jobs",
            "/job_detail",
            "/cancel_job",
            "/chat",
            "/chat_targets",
            "/estimate",
            "/resume_job",
        ):
            assert endpoint in names
        message, *_ = client.predict(handle_file(str(CAPITALS_CSV)), api_name="/preview_file")
        assert "32 rows" in message
        saved = client.predict(
            handle_file(str(CAPITALS_CSV)),
            f"api-capitals-{port}",  # a name of its own: the module's data directory outlives this test
            "question",
            "answer",
            api_name="/save_dataset",
        )
        assert "Saved dataset" in saved[0]
        summary, _, log = client.predict(trained["id"], api_name="/job_detail")
        assert "succeeded" in summary and trained["id"] in log
        assert "Held-out scores" in summary and "ROUGE-L" in summary  # scored when training ended
        chat = client.predict(QUESTION, [], trained["id"], "", 0, 24, api_name="/chat")
        reply = "".join(part["text"] for part in chat[0][-1]["content"])  # Gradio 6: a list of text parts
        assert reply.startswith("The capital of")
        refused = client.predict(trained["id"], api_name="/cancel_job")
        assert "already ended" in refused
        not_again, new_id = client.predict(trained["id"], api_name="/resume_job")
        assert "nothing left to resume" in not_again and not new_id
        estimate = client.predict(
            "capitals",
            "tiny-offline",
            *client.predict("tiny-offline", api_name="/preset_values")[1:],
            api_name="/estimate",
        )
        assert "GB" in estimate and "steps" in estimate
        # A script from before the "write a better answer" box still votes with one argument (the box's default).
        pair = json.dumps({"prompt": "Capital of Peru?", "a": "base model", "b": trained["id"]})
        voted = client.predict(pair, api_name="/vote_b")
        assert f"Recorded. A was <b>base model</b>, B was <b>{trained['id']}</b>" in voted[0]
        # The README's example: settings from a preset, then a job, then cancel it.
        values = client.predict("tiny-offline", api_name="/preset_values")[1:]
        message, job_id = client.predict("capitals", "tiny-offline", *values, api_name="/submit_job")
        assert job_id.startswith("run-") and job_id in message
        assert "Cancel requested" in client.predict(job_id, api_name="/cancel_job")
        deadline = time.monotonic() + 60
        while not (ended := ctx.store.get_job(job_id)).status.is_terminal:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert ended.status.value in ("cancelled", "succeeded"), ended.reason
    finally:
        blocks.close()
        stop()


# -- resuming, several processes, the warm worker --------------------------------------------------------------------


def wait_for_step(env: dict, job_id: str, step: int, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = tunedeck_json(env, "show", job_id)
        if shown["status"] == "running" and shown["step"] >= step:
            return shown
        assert shown["status"] in ("queued", "running"), shown
        time.sleep(0.5)
    pytest.fail(f"{job_id} did not reach step {step}")


def test_a_cancelled_run_resumes_where_it_stopped(home: dict) -> None:
    # A run far longer than the test (it can never finish before the cancel lands, however fast the machine),
    # resumed with a few more steps than it had taken: a person who stops a long run and finishes it shorter.
    job = tunedeck_json(
        home["env"], "train", "capitals", "--preset", "tiny-offline", "--set", "max_steps=100000"
    )
    wait_for_step(home["env"], job["id"], 5)
    cancelled = tunedeck_json(home["env"], "cancel", job["id"], "--timeout", "60")
    assert cancelled["status"] == "cancelled" and cancelled["resumable"]
    stopped_at = cancelled["step"]
    end = stopped_at + 8
    shown = tunedeck(home["env"], "show", job["id"])
    assert f"tunedeck resume {job['id']}" in shown.stdout

    res = tunedeck(home["env"], "resume", job["id"], "--set", f"max_steps={end}", "--wait", "--json")
    assert res.returncode == 0, res.stderr
    assert f"from its checkpoint at step {stopped_at}" in res.stderr
    resumed = json.loads(res.stdout)
    assert resumed["status"] == "succeeded" and resumed["resumed_from"] == job["id"]
    assert resumed["result"]["extra"]["resumed_from_step"] == stopped_at and resumed["result"]["steps"] == end
    # One loss curve, step 1 to the end: the earlier run's points, then the resumed ones.
    steps = [s for s, _ in resumed["metrics"]["loss"]]
    assert steps == list(range(1, end + 1))
    before = {s: v for s, v in cancelled_metrics(home, job["id"])}
    assert all(v == before[s] for s, v in resumed["metrics"]["loss"] if s <= stopped_at)
    tokens = [v for _, v in resumed["metrics"]["num_tokens"]]
    assert tokens == sorted(tokens)  # the token count goes on rising
    # A finished run cannot be resumed; the message says why.
    again = tunedeck(home["env"], "resume", resumed["id"])
    assert again.returncode == 2 and "nothing left to resume" in again.stderr


def cancelled_metrics(home: dict, job_id: str) -> list:
    return tunedeck_json(home["env"], "show", job_id)["metrics"]["loss"]


def test_a_killed_worker_resumes_from_its_last_periodic_checkpoint(home: dict) -> None:
    # Far more steps than the test waits for, so the kill always lands mid-run, however fast the machine.
    job = tunedeck_json(
        home["env"],
        "train",
        "capitals",
        "--preset",
        "tiny-offline",
        "--set",
        "max_steps=100000",
        "--set",
        "save_steps=5",
    )
    shown = wait_for_step(home["env"], job["id"], 12)
    os.killpg(shown["pid"], 9)  # the machine's out-of-memory killer, or a power cut of the worker
    deadline = time.monotonic() + 60
    while (crashed := tunedeck_json(home["env"], "show", job["id"]))["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert crashed["status"] == "failed" and "signal 9" in crashed["reason"] and crashed["resumable"]
    end = crashed["step"] + 10
    res = tunedeck(home["env"], "resume", job["id"], "--set", f"max_steps={end}", "--wait", "--json")
    assert res.returncode == 0, res.stderr
    resumed = json.loads(res.stdout)
    start = resumed["result"]["extra"]["resumed_from_step"]
    assert 10 <= start <= crashed["step"] and start % 5 == 0  # the last checkpoint before the kill
    assert [s for s, _ in resumed["metrics"]["loss"]] == list(range(1, end + 1))


@pytest.mark.timeout(JOB_TEST_TIMEOUT_S)
def test_two_processes_through_accelerate_launch_train_one_adapter(home: dict) -> None:
    """num_devices 2 on a CPU: `accelerate launch` starts two workers that train together over gloo."""
    res = tunedeck_wait(
        home["env"],
        "train",
        "capitals",
        "--preset",
        "tiny-offline",
        "--set",
        "num_devices=2",
        "--set",
        "device=cpu",
        "--set",
        "max_steps=6",
        "--wait",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    done = json.loads(res.stdout)
    assert done["status"] == "succeeded", done["reason"]
    assert done["result"]["extra"]["world_size"] == 2
    assert [s for s, _ in done["metrics"]["loss"]] == list(range(1, 7))  # one writer: one point per step
    adapters = list(Path(done["job_dir"]).rglob("adapter_model.safetensors"))
    assert [p.parent.name for p in adapters if "checkpoint" not in str(p)] == ["adapter"]
    log = (Path(done["job_dir"]) / "worker.log").read_text()
    assert "process 1 of 2" in log and "process 2 of 2" in log


def test_the_app_keeps_a_warm_worker_so_a_job_starts_without_waiting_for_imports(
    home: dict, monkeypatch
) -> None:
    import threading

    from backend.core.status import JobStatus
    from backend.core.store import Store
    from backend.jobs.manager import Manager
    from backend.settings import Paths

    monkeypatch.setenv("TUNEDECK_HOME", str(home["root"]))
    paths = Paths.from_env(home["root"])
    store = Store(paths.db)
    assert not store.list_jobs(
        (JobStatus.QUEUED, JobStatus.RUNNING)
    )  # else the scheduler would run those first
    manager = Manager(store, paths, poll_s=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=manager.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        standby_log = paths.logs / "standby-worker.log"
        standby = None
        while not (
            (standby := manager._standby) is not None  # read once: the scheduler thread may replace it
            and standby_log.is_file()
            and f"ready {standby.pid}" in standby_log.read_text().splitlines()
        ):
            assert time.monotonic() < deadline, "the standby worker never got ready"
            time.sleep(0.2)
        standby_pid = standby.pid
        from backend.jobs.config import RunConfig
        from backend.jobs.presets import load_preset

        config = RunConfig.parse({**load_preset("tiny-offline").config.model_dump(), "max_steps": 5})
        queued = manager.submit("capitals", config, preset="tiny-offline")
        while not (job := store.get_job(queued.id)).status.is_terminal:
            assert time.monotonic() < deadline + 120
            time.sleep(0.2)
        assert job.status.value == "succeeded", job.reason
        assert job.pid == standby_pid  # it ran in the process that had already imported torch and TRL
        first_step = job.result["extra"]["first_step_at"] - queued.created
        assert 0 < first_step < 30
        print(f"first optimizer step {first_step:.2f} s after submit (warm worker)")
        assert "started" in (Path(job.job_dir) / "worker.log").read_text()
    finally:
        stop.set()
        thread.join(timeout=30)
    assert manager._standby is None  # stopping the scheduler ends its standby worker
