"""The starter model end to end, as a person uses it from the command line: a real pretrained model (SmolLM2-135M)
fine-tuned on the sample support dataset on a CPU, with no network.

The run uses the starter preset's defaults (about 4 minutes on 2 cores in fp32 or bf16; 8 scored examples instead of
16 to save a little); bench/RESULTS.md has the same journey's numbers (``bench/bench_answers.py``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from backend.settings import SAMPLE_CSV, SAMPLE_VALIDATION_CSV, Paths
from tests.cli_util import JOB_TEST_TIMEOUT_S, offline_env, plain_peft_answer, tunedeck_json, tunedeck_wait
from tests.conftest import link_starter_model

# The module fixture's run (in the first test's time) takes as long as it needs while it makes progress.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(JOB_TEST_TIMEOUT_S)]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, starter_model_build: Path) -> dict:
    root = tmp_path_factory.mktemp("starter-home")
    link_starter_model(Paths.from_env(root), starter_model_build)
    env = offline_env(root)
    added = tunedeck_json(
        env,
        "data",
        "add",
        str(SAMPLE_CSV),
        "--validation-file",
        str(SAMPLE_VALIDATION_CSV),
        "--name",
        "support",
    )
    assert added["validation_rows"] == 43
    res = tunedeck_wait(
        env,
        "train",
        "support",  # no --preset: the starter model is the default without a GPU
        "--set",
        "score_examples=8",
        "--wait",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    return {"env": env, "root": root, "job": json.loads(res.stdout)}


def test_the_starter_model_learns_the_sample_and_beats_its_base_on_held_out_questions(run: dict) -> None:
    job = run["job"]
    assert job["status"] == "succeeded" and job["preset"] == "smollm2-135m", job["reason"]
    assert job["base_model"] == "smollm2-135m"
    validation = [v for _, v in job["metrics"]["eval_loss"]]
    assert len(validation) >= 2 and validation[-1] < validation[0], validation  # it goes on learning
    scores = job["scores"]
    assert scores["source"] == "the validation split"  # questions asked in words the training rows do not use
    assert scores["tuned"]["eval_loss"] < 0.5 * scores["base"]["eval_loss"]
    assert scores["tuned"]["rougeL"] > scores["base"]["rougeL"] + 0.1
    with open(Path(job["job_dir"]) / "eval_examples.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    closer = sum(float(r["tuned_rougeL"]) > float(r["base_rougeL"]) for r in rows)
    assert closer >= 0.75 * len(rows), [(r["prompt"], r["tuned_answer"]) for r in rows]
    extra = job["result"]["extra"]
    assert extra["base_model_upstream"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert extra["peak_rss_mb"] < 4096  # the goal for the starter defaults on a 24 GB, 2-core machine


def test_the_adapter_names_its_hub_base_and_reloads_with_plain_peft_giving_the_same_answer(run: dict) -> None:
    import torch

    from backend.models import runcard

    job = run["job"]
    adapter = job["adapter_dir"]
    config = json.loads((Path(adapter) / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    question = "How long does the Skylark S2 battery last?"  # a training question
    ours = tunedeck_json(run["env"], "generate", job["id"], "--prompt", question, "--max-new-tokens", "40")
    # Plain PEFT on the same weights (the local copy, as the Hub id cannot be downloaded here), in the number
    # format the run was trained in.
    dtype = getattr(torch, runcard.read(adapter)["dtype"])
    base_dir = Paths.from_env(run["root"]).models / "smollm2-135m"
    plain, *_ = plain_peft_answer(base_dir, adapter, question, 40, dtype=dtype)
    assert ours["reply"] == plain
    assert "150 minutes" in plain, plain  # the fact it was taught, not the base model's guess
    base = tunedeck_json(
        run["env"], "generate", "--base", "smollm2-135m", "--prompt", question, "--max-new-tokens", "40"
    )
    assert "150 minutes" not in base["reply"]


def test_the_estimate_of_memory_is_never_below_the_measured_run_and_not_far_above(run: dict) -> None:
    """Issue 21's target on every CPU: measured / estimated peak RAM between 0.80 and 1.00 (a refusal must never
    turn away a job that fits, and a promise must hold). 3 % is left for run-to-run noise of the measured peak."""
    from backend.core.store import Store
    from backend.jobs.config import RunConfig
    from backend.jobs.manager import Manager

    job = run["job"]
    paths = Paths.from_env(run["root"])
    manager = Manager(Store(paths.db), paths, gpu_probe=lambda: [])
    estimate = manager.cpu_estimate("support", RunConfig.parse(job["config"]))
    measured_gb = job["result"]["extra"]["peak_rss_mb"] / 1024
    assert estimate is not None
    assert 0.80 <= measured_gb / estimate.run.ram_gb <= 1.03, (estimate.run.ram_gb, measured_gb)
