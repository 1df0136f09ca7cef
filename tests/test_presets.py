"""Presets: every presets/*.yaml is a valid, documented RunConfig; bad ones fail with the file and field named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backend.jobs.config import ConfigError, RunConfig
from backend.jobs.presets import PresetError, list_presets, load_preset, preset_names
from backend.settings import PRESETS_DIR

PRESET_FILES = sorted(PRESETS_DIR.glob("*.yaml"))
META_KEYS = {"description", "hardware"}  # texts about the preset itself, not settings with a trade-off
KEY_LINE = re.compile(r"^(?P<key>[A-Za-z_]\w*)\s*:(?P<rest>.*)$")


def test_there_are_presets():
    assert {"tiny-offline", "qwen2.5-0.5b-lora"} <= set(preset_names())


@pytest.mark.parametrize("path", PRESET_FILES, ids=lambda p: p.name)
def test_preset_loads_and_validates(path: Path):
    preset = load_preset(path.stem)
    assert preset.name == path.stem
    assert isinstance(preset.config, RunConfig)
    assert preset.description.strip(), f"{path.name}: add a description: line"
    assert preset.hardware.strip(), f"{path.name}: add a hardware: line"


@pytest.mark.parametrize("path", PRESET_FILES, ids=lambda p: p.name)
def test_every_setting_line_documents_its_trade_off(path: Path):
    """House rule: each setting in a preset carries a trailing `# comment` saying why this value."""
    undocumented = []
    settings = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = KEY_LINE.match(line)
        assert m, f"{path.name}:{number}: expected `key: value  # why`, got {line!r}"
        if m["key"] in META_KEYS:
            continue
        settings += 1
        if not re.search(r"\s#\s*\S", m["rest"]):
            undocumented.append(f"{path.name}:{number}: {m['key']}")
    assert settings > 0
    assert not undocumented, "settings without a trailing # comment: " + ", ".join(undocumented)


def test_tiny_offline_preset_is_the_offline_one():
    preset = load_preset("tiny-offline")
    assert preset.config.base_model == "tiny-offline"
    assert preset.config.max_steps > 0


def test_list_presets_returns_every_file():
    assert [p.name for p in list_presets()] == [p.stem for p in PRESET_FILES]


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(PresetError, match="no preset named 'nope'") as info:
        load_preset("nope")
    for name in preset_names():
        assert name in str(info.value)


def test_unknown_preset_in_an_empty_folder_says_none(tmp_path: Path):
    with pytest.raises(PresetError, match=r"use one of: \(none\)"):
        load_preset("anything", tmp_path)


def test_broken_preset_names_the_file_and_each_field(tmp_path: Path):
    (tmp_path / "broken.yaml").write_text(
        'description: "a broken one"\nlearning_rate: -1  # too low\nlora_r: 16\nwarp_speed: 9\n'
    )
    with pytest.raises(ConfigError) as info:
        load_preset("broken", tmp_path)
    text = str(info.value)
    assert "broken.yaml: learning_rate = -1" in text
    assert "broken.yaml: warp_speed = 9: is not a setting TuneDeck knows" in text
    assert "lora_r" not in {p.field.split(": ")[1] for p in info.value.problems}
    assert text.count("Fix:") == 2


def test_preset_that_is_not_yaml_is_refused(tmp_path: Path):
    (tmp_path / "garbled.yaml").write_text("lora_r: [16\n")
    with pytest.raises(PresetError, match=r"garbled.yaml is not valid YAML"):
        load_preset("garbled", tmp_path)


def test_preset_that_is_not_a_mapping_is_refused(tmp_path: Path):
    (tmp_path / "listy.yaml").write_text("- lora_r\n- 16\n")
    with pytest.raises(PresetError, match=r"listy.yaml must hold key: value settings, not list"):
        load_preset("listy", tmp_path)


def test_minimal_preset_gets_defaults_and_meta(tmp_path: Path):
    (tmp_path / "mini.yaml").write_text('description: "mini"\nhardware: "any"\nmax_steps: 5  # quick\n')
    preset = load_preset("mini", tmp_path)
    assert (preset.description, preset.hardware, preset.config.max_steps) == ("mini", "any", 5)
    assert preset.config == RunConfig.parse({"max_steps": 5})


def test_qlora_presets_cover_small_medium_and_large_instruct_models():
    from backend.jobs import estimate

    sizes = sorted(
        estimate.KNOWN[p.config.base_model.lower()].params / 1e9
        for p in list_presets()
        if p.config.method == "qlora"
    )
    assert (
        any(s < 1 for s in sizes)
        and any(1 <= s <= 3.5 for s in sizes)
        and any(6.5 <= s <= 8.5 for s in sizes)
    )


@pytest.mark.parametrize("path", PRESET_FILES, ids=lambda p: p.name)
def test_gpu_memory_a_preset_states_covers_the_estimate(path: Path):
    """A preset that states the GPU memory it needs says at least what the estimate says, at its max_length."""
    from backend.jobs import estimate

    preset = load_preset(path.stem)
    stated = re.search(r"GPU with (\d+(?:\.\d+)?) GB", preset.hardware)
    if preset.config.base_model == "tiny-offline":
        assert stated is None and "CPU" in preset.hardware
        return
    assert stated, f"{path.name}: the hardware line must state the GPU memory it needs ('GPU with N GB')"
    shape = estimate.KNOWN[preset.config.base_model.lower()]
    need = estimate.memory(shape, preset.config).total
    assert need <= float(stated.group(1)) <= need * 1.5 + 2, (need, stated.group(1))
