"""trust_remote_code: a model's own Python code runs only when the person turned it on for a run on that model.

The model here is tiny-offline dressed up as an architecture transformers does not know: its config.json names
``custom_code.py`` (shipped in the model folder, as on the Hub) for AutoConfig and AutoModelForCausalLM. That code
leaves a mark file when it is imported, so the tests see whether it ran, not only whether loading failed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from backend.jobs.config import RunConfig
from tests.cli_util import home_with_sample, tunedeck, tunedeck_json

CUSTOM_CODE = """
import os
from pathlib import Path

from transformers import LlamaConfig, LlamaForCausalLM

Path(os.environ["TUNEDECK_TEST_MARK"]).write_text("the model's own code ran")


class CustomConfig(LlamaConfig):
    model_type = "tunedeck_custom"


class CustomForCausalLM(LlamaForCausalLM):
    config_class = CustomConfig
"""


@pytest.fixture
def custom_model(tmp_path: Path, tiny_model_build: Path) -> Path:
    folder = tmp_path / "custom-model"
    shutil.copytree(tiny_model_build, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="tunedeck_custom",
        architectures=["CustomForCausalLM"],
        auto_map={
            "AutoConfig": "custom_code.CustomConfig",
            "AutoModelForCausalLM": "custom_code.CustomForCausalLM",
        },
    )
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "custom_code.py").write_text(CUSTOM_CODE)
    return folder


def test_remote_code_is_off_unless_asked_for():
    assert RunConfig.parse({}).trust_remote_code is False
    assert "authors you trust" in RunConfig.model_fields["trust_remote_code"].description


@pytest.mark.slow
def test_a_model_with_its_own_code_runs_it_only_after_the_person_allows_it(
    tmp_path: Path, tiny_model_build, custom_model: Path
):
    mark = tmp_path / "mark.txt"
    env = home_with_sample(tmp_path / "home2", tiny_model_build)
    env.update(TUNEDECK_TEST_MARK=str(mark), HF_MODULES_CACHE=str(tmp_path / "hf-modules"))
    common = [
        "train",
        "capitals",
        "--preset",
        "tiny-offline",
        "--set",
        f"base_model={custom_model}",
        "--set",
        "max_steps=2",
        "--set",
        "score_examples=0",
        "--wait",
        "--json",
    ]

    refused = tunedeck(env, *common)
    assert refused.returncode != 0
    job = json.loads(refused.stdout)
    assert job["status"] == "failed"
    assert "ships Python code of its own" in job["reason"] and "trust_remote_code" in job["reason"]
    assert not mark.exists(), "the model's code ran although nobody allowed it"
    chat = tunedeck(env, "generate", "--base", str(custom_model), "--prompt", "Hi", "--max-new-tokens", "4")
    assert chat.returncode != 0 and "ships Python code of its own" in chat.stderr
    assert not mark.exists()  # nor does chatting with the base alone run it

    allowed = tunedeck(env, *common, "--set", "trust_remote_code=true")
    assert allowed.returncode == 0, allowed.stderr
    run = json.loads(allowed.stdout)
    assert run["status"] == "succeeded" and mark.read_text() == "the model's own code ran"
    # Once allowed for a run on this model, chatting with the run, or with its base alone, loads it the same way.
    reply = tunedeck_json(env, "generate", run["id"], "--prompt", "Hi", "--max-new-tokens", "4")
    base = tunedeck_json(
        env, "generate", "--base", str(custom_model), "--prompt", "Hi", "--max-new-tokens", "4"
    )
    assert isinstance(reply["reply"], str) and isinstance(base["reply"], str)
