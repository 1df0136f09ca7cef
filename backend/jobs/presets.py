"""Presets: ``presets/*.yaml`` files, each a complete ``RunConfig`` plus a description and a hardware note."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from backend.errors import TuneDeckError
from backend.jobs.config import ConfigError, Problem, RunConfig
from backend.settings import PRESETS_DIR, Paths

_META_KEYS = ("description", "hardware")


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    hardware: str
    config: RunConfig


class PresetError(TuneDeckError, ValueError):
    pass


STARTER_PRESET = "smollm2-135m"  # a real model that trains on any CPU with no network
GPU_PRESET = "qwen2.5-0.5b-qlora"  # the smallest real Hub assistant, for a machine with a GPU and the Hub


def default_preset(paths: Paths, has_gpu: Callable[[], bool] | None = None) -> str:
    """The preset a person starts from (the Train tab, ``tunedeck train`` without --preset): the starter model
    wherever there is no GPU; on a GPU, the small Hub assistant when its model can be had (cached, or the Hub
    reachable), else the starter model again."""
    from backend.models import devices as hardware
    from backend.models import registry as models

    if not (has_gpu or (lambda: bool(hardware.gpu_inventory())))():
        return STARTER_PRESET
    try:
        models.check_available(load_preset(GPU_PRESET).config.base_model, paths)
        return GPU_PRESET
    except (PresetError, ConfigError, models.ModelError):
        return STARTER_PRESET


def list_presets(directory: Path = PRESETS_DIR) -> list[Preset]:
    return [load_preset(p.stem, directory) for p in sorted(directory.glob("*.yaml"))]


def preset_names(directory: Path = PRESETS_DIR) -> list[str]:
    return [p.stem for p in sorted(directory.glob("*.yaml"))]


def load_preset(name: str, directory: Path = PRESETS_DIR) -> Preset:
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(preset_names(directory)) or "(none)"
        raise PresetError(f"There is no preset named {name!r}. Fix: use one of: {known}.")
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PresetError(f"Preset file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PresetError(f"Preset file {path} must hold key: value settings, not {type(data).__name__}.")
    meta = {k: str(data.pop(k, "")) for k in _META_KEYS}
    try:
        config = RunConfig.parse(data)
    except ConfigError as exc:
        raise ConfigError(
            [Problem(f"{path.name}: {p.field}", p.value, p.message, p.fix) for p in exc.problems]
        ) from None
    return Preset(name=name, config=config, **meta)
