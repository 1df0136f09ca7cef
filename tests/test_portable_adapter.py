"""An adapter names a base that plain PEFT can load (issue 21): the Hub id where known, else the folder on this
machine that holds the model (tiny-offline's build; a .gguf file's converted copy), never a name only TuneDeck knows.

Real runs from the command line, a few steps each: on tiny-offline, and on a GGUF file written from it
(``tests/gguf_util.py``). Each adapter loads offline with ``AutoPeftModelForCausalLM`` from its folder alone and
answers as ``tunedeck generate`` does; the exported model card of the GGUF run names the file it came from.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.models import registry as models
from backend.settings import Paths
from tests.cli_util import home_with_sample, plain_peft_answer, train_sample, tunedeck_json
from tests.gguf_util import write_llama_gguf

pytestmark = pytest.mark.slow
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, tiny_model_build: Path) -> dict:
    root = tmp_path_factory.mktemp("portable-home")
    gguf = write_llama_gguf(tiny_model_build, tmp_path_factory.mktemp("gguf") / "tiny-chat.gguf")
    return {"root": root, "env": home_with_sample(root, tiny_model_build), "gguf": gguf}


def adapter_changes_the_answer(model, enc) -> bool:
    """The loaded adapter is in use: the model's output differs with it switched off."""
    import torch

    with torch.inference_mode():
        tuned = model(**enc).logits
        with model.disable_adapter():
            return not torch.allclose(tuned, model(**enc).logits)


@pytest.mark.parametrize("kind", ["tiny-offline", "gguf"])
def test_the_adapter_loads_with_auto_peft_offline_and_answers_as_tunedeck_generate(home, kind, tmp_path):
    paths = Paths.from_env(home["root"])
    base_model = str(home["gguf"]) if kind == "gguf" else "tiny-offline"
    job = train_sample(home["env"], 8, f"base_model={base_model}", "score_examples=0")
    assert job["status"] == "succeeded", job["reason"]
    assert job["estimate"]["steps"] == 8 and job["estimate"]["fits"] is True  # `train --json` carries it

    adapter = Path(job["adapter_dir"])
    named = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    folder = models.resolve(base_model, paths).location  # tiny-offline's build, or the GGUF's converted copy
    assert named == folder and Path(named).is_absolute() and (Path(named) / "config.json").is_file()
    if kind == "gguf":
        assert Path(named).parent == paths.models / "gguf"

    ours = tunedeck_json(home["env"], "generate", job["id"], "--prompt", QUESTION, "--max-new-tokens", "16")
    plain, model, _, enc = plain_peft_answer(None, adapter, QUESTION, 16)  # AutoPeftModelForCausalLM
    assert plain == ours["reply"] and adapter_changes_the_answer(model, enc)

    # The export keeps that name, and its model card loads the base from it (and says where a GGUF base came from).
    out = tunedeck_json(home["env"], "export", job["id"], "--to", str(tmp_path / "out"))
    exported = Path(out["folder"])
    assert json.loads((exported / "adapter_config.json").read_text())["base_model_name_or_path"] == named
    assert json.loads((exported / "tunedeck_run.json").read_text())["base_model"] == named
    card = (exported / "README.md").read_text()
    assert f'AutoModelForCausalLM.from_pretrained("{named}")' in card
    if kind == "gguf":
        assert "converted from the GGUF file `tiny-chat.gguf`" in card and str(home["gguf"]) in card
        assert "sha256 `" in card and f"`{named}`" in card
    assert plain_peft_answer(None, exported, QUESTION, 16)[0] == ours["reply"]
