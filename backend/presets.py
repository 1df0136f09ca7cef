"""Presets: ``presets/*.yaml`` files, each a complete ``RunConfig`` plus a description and a hardware note."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from backend.config import ConfigError, Problem, RunConfig
from backend.settings import PRESETS_DIR

_META_KEYS = ("description", "hardware")


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    hardware: str
    config: RunConfig


class PresetError(ValueError):
    pass


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
