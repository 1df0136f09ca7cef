"""Preference tuning of the starter model (SmolLM2-135M, a real model) on a small preference set it has never seen:
the Aurora thermostat pairs of ``bench/answers.py``, each question with the right fact as the better answer and a
plausible wrong fact as the worse one, validated on pairs whose questions are worded differently.

What a person judges a preference run by: does the model itself now find the right answer likelier? That is the
run's held-out *preference accuracy* (per token), not TRL's reward accuracy on the charts, which only says the
better answer gained on the worse one since the start (issue 22: 0.94 on the chart, 0.21 -> 0.21 in the scores).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.settings import Paths
from bench.answers import write_aurora
from tests.cli_util import JOB_TEST_TIMEOUT_S, offline_env, tunedeck_json, tunedeck_wait
from tests.conftest import link_starter_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(JOB_TEST_TIMEOUT_S)]


def test_the_from_base_dpo_preset_makes_the_starter_prefer_the_right_facts(
    tmp_path: Path, starter_model_build: Path
) -> None:
    home = tmp_path / "home"
    link_starter_model(Paths.from_env(home), starter_model_build)
    env = offline_env(home)
    files = write_aurora(tmp_path / "aurora")
    added = tunedeck_json(
        env,
        "data",
        "add",
        str(files["preferences"]),
        "--validation-file",
        str(files["preferences_validation"]),
        "--name",
        "aurora-pairs",
    )
    assert added["validation_rows"] == 12
    res = tunedeck_wait(env, "train", "aurora-pairs", "--preset", "smollm2-135m-dpo-base", "--wait", "--json")
    assert res.returncode == 0, res.stderr
    job = json.loads(res.stdout)
    assert job["status"] == "succeeded", job["reason"]
    scores = job["scores"]
    base, tuned = scores["base"]["pref_accuracy"], scores["tuned"]["pref_accuracy"]
    assert tuned >= 0.8 and tuned >= base + 0.3, (base, tuned)
    judge = scores["judge"]
    assert judge["wins"] > judge["losses"], (
        judge
    )  # its own answers are closer to the right facts than the base's
