"""`tunedeck estimate` (issue 21): the Train tab's time and memory estimate from the command line.

The command runs in this process (``cli.main``) against a data directory with tiny-offline and the capitals sample,
with the free memory pinned (``ram_available_gb``) so that the command and the Manager see the same machine, and
``device=cpu`` so that the estimate is the CPU one wherever the tests run. One test runs it as a person would, in a
subprocess.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cli
from backend.core.store import Store
from backend.data.datasets import import_dataset
from backend.jobs import estimate
from backend.jobs.admission import ESTIMATE_KEYS
from backend.jobs.config import RunConfig
from backend.jobs.manager import Manager
from backend.jobs.presets import load_preset
from backend.models import devices as hardware
from backend.settings import CAPITALS_CSV, Paths
from tests.cli_util import offline_env, tunedeck

FREE_GB = 8.0  # what this "machine" has free, for the command and the test alike
ON_CPU = ("--preset", "tiny-offline", "--set", "device=cpu")


@pytest.fixture
def manager(paths: Paths, store: Store, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Manager:
    import_dataset(store, paths, CAPITALS_CSV, name="capitals")
    monkeypatch.setattr(hardware, "ram_available_gb", lambda pids=None: FREE_GB)
    return Manager(store, paths, gpu_probe=list)


def config_of(**changes) -> RunConfig:
    """What `--preset tiny-offline --set device=cpu --set k=v ...` parses to."""
    return RunConfig.parse({**load_preset("tiny-offline").config.model_dump(), "device": "cpu", **changes})


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_shows_the_managers_estimate_for_the_same_settings(manager, capsys):
    code, out, err = run_cli(capsys, "estimate", "capitals", *ON_CPU, "--set", "max_steps=40", "--json")
    assert code == 0, err
    got = json.loads(out)
    config = config_of(max_steps=40)
    assert got == manager.estimate("capitals", config)
    assert tuple(got) == ESTIMATE_KEYS  # a stable shape for scripts

    cpu = manager.cpu_estimate("capitals", config)
    assert cpu is not None and cpu.fits
    assert got["fits"] is True and got["device"] == "cpu" and got["gpu_gb"] is None
    assert got["ram_gb"] == round(cpu.run.ram_gb, 2) and got["available_gb"] == FREE_GB
    assert got["steps"] == cpu.run.steps == 40
    assert got["train_rows"] == cpu.train_rows == 32 and got["tokens_per_epoch"] == cpu.tokens_per_epoch
    assert got["epochs"] == pytest.approx(40 * 8 / 32)
    assert got["total_s"] == pytest.approx(cpu.run.total_s, abs=0.05)
    assert got["total_s"] == pytest.approx(
        got["train_s"] + got["eval_s"] + got["score_s"] + got["start_s"], abs=0.2
    )
    assert got["score_s"] > 0  # the preset scores 16 held-out examples after training
    assert got["precision"] == "fp32" and got["cores"] == cpu.cores and got["suggestions"] == []
    # The Train tab's own text, without its Markdown; the command without --json prints just that.
    fits, tab = manager.fit_report("capitals", config)
    assert fits and got["message"] == tab.replace("**", "").replace("  \n", "\n")
    assert f"Peak memory about {cpu.run.ram_gb:.1f} GB of the {FREE_GB:.1f} GB" in got["message"]
    assert f"{estimate._secs(cpu.run.total_s)} from Train to finished" in got["message"]
    code, text, _ = run_cli(capsys, "estimate", "capitals", *ON_CPU, "--set", "max_steps=40")
    assert code == 0 and text.strip() == got["message"]


def test_a_job_that_would_not_fit_exits_3_and_names_the_fix_train_would_refuse_it_with(
    manager, capsys, monkeypatch
):
    big = config_of(batch_size=32, grad_accum=1)
    cpu = manager.cpu_estimate("capitals", big)
    assert cpu is not None
    halved = estimate.cpu_memory_gb(
        estimate.model_shape("tiny-offline", manager.paths),
        big.updated(batch_size=16, grad_accum=2),
        seq_len=cpu.longest,
        bf16=cpu.bf16,
        mean_len=cpu.tokens_per_epoch / cpu.train_rows,
    )
    assert halved < cpu.run.ram_gb
    between = (halved + cpu.run.ram_gb) / 2  # the halved batch fits, the full one does not
    monkeypatch.setattr(hardware, "ram_available_gb", lambda pids=None: between)
    args = ("capitals", *ON_CPU, "--set", "batch_size=32", "--set", "grad_accum=1")

    code, out, err = run_cli(capsys, "estimate", *args, "--json")
    assert code == cli.EXIT_WOULD_NOT_FIT == 3
    got = json.loads(out)
    assert got["fits"] is False and got["ram_gb"] == round(cpu.run.ram_gb, 2)
    halve = "halve the batch (batch_size 16) and double gradient accumulation (grad_accum 2)"
    assert any(tip.startswith(halve + " (about") for tip in got["suggestions"]), got["suggestions"]
    assert "Will not fit: this job needs about" in got["message"]
    assert err.startswith("error: it would be refused: memory = ")
    assert "Fix: " in err and halve in err and err.rstrip().endswith(".")

    # `train` with the same arguments refuses it with the same words, and queues nothing.
    code, _, train_err = run_cli(capsys, "train", *args)
    assert code == 2 and train_err.removeprefix("error: ") == err.removeprefix("error: it would be refused: ")
    assert manager.store.list_jobs() == []
    code, text, _ = run_cli(capsys, "estimate", *args)
    assert code == 3 and "Will not fit" in text and "halve the batch" in text


@pytest.mark.parametrize(
    "args",
    [
        ("no-such-data", *ON_CPU),
        ("capitals", *ON_CPU, "--set", "learning_rate=0", "--set", "lora_r=0"),
        ("capitals", *ON_CPU, "--set", "max_steps"),
        ("capitals", "--preset", "no-such-preset"),
    ],
    ids=["dataset", "settings", "set-syntax", "preset"],
)
def test_a_bad_dataset_setting_or_preset_reads_as_train_says_it(manager, capsys, args):
    code, out, err = run_cli(capsys, "estimate", *args)
    train_code, _, train_err = run_cli(capsys, "train", *args)
    assert code == train_code == 2 and err == train_err and out == ""
    assert err.startswith("error: ") and ("Fix" in err or "e.g." in err)
    assert "Traceback" not in err
    assert manager.store.list_jobs() == []


def test_train_json_carries_the_estimate_it_was_admitted_with(manager, capsys, monkeypatch):
    # queued only: this test reads the output
    monkeypatch.setattr(cli, "ensure_scheduler", lambda paths: False)
    code, out, err = run_cli(capsys, "train", "capitals", *ON_CPU, "--set", "max_steps=12", "--json")
    assert code == 0, err
    job = json.loads(out)
    assert job["status"] == "queued"
    assert job["estimate"] == manager.estimate("capitals", config_of(max_steps=12))
    assert job["estimate"]["steps"] == 12 and job["estimate"]["fits"] is True


def test_the_command_as_a_person_runs_it(paths, store, tiny_model):
    import_dataset(store, paths, CAPITALS_CSV, name="capitals")
    res = tunedeck(offline_env(paths.home), "estimate", "capitals", *ON_CPU, "--json", timeout=120)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert tuple(got) == ESTIMATE_KEYS and got["fits"] is True and got["steps"] == 60
    assert got["ram_gb"] < got["available_gb"] and got["total_s"] > got["train_s"] > 0


def test_on_a_gpu_the_same_keys_hold_the_gpu_figures_and_the_fixes(paths, store, tiny_model, monkeypatch):
    """No GPU needed: a probe that reports one (the estimate reads nvidia-smi only, never torch)."""
    import_dataset(store, paths, CAPITALS_CSV, name="capitals")
    monkeypatch.setattr(hardware, "gpu_memory_of_groups", lambda groups, index: 0.0)
    config = config_of(device="auto", max_steps=20)

    def on(free_gb: float) -> dict:
        gpu = hardware.Gpu(0, "NVIDIA A100", 80.0, 80.0 - free_gb)
        return Manager(store, paths, gpu_probe=lambda: [gpu]).estimate("capitals", config)

    roomy = on(40.0)
    assert tuple(roomy) == ESTIMATE_KEYS
    assert roomy["fits"] is True and roomy["device"] == "cuda" and roomy["ram_gb"] is None
    assert 0 < roomy["gpu_gb"] < 40 and roomy["available_gb"] == 40.0 and roomy["suggestions"] == []
    assert roomy["steps"] == 20 and roomy["train_rows"] == 32 and roomy["train_s"] is not None  # ms here
    assert roomy["total_s"] is None and roomy["precision"] == "fp32"  # only training is timed on a GPU
    assert "Estimated peak GPU memory" in roomy["message"] and "NVIDIA A100" in roomy["message"]
    tight = on(roomy["gpu_gb"] / 2)
    assert tight["fits"] is False and tight["message"].startswith("Will not fit")
    # the refusal's fixes, one per item (here none of the usual changes is enough: mostly CUDA's own overhead)
    assert "Fix: " + "; or ".join(tight["suggestions"]) + "\n" in tight["message"]
    assert tight["suggestions"] == ["use a smaller model"]
