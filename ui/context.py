"""What the UI's handlers work with: passed in by app.py, never created at import (no module-level state)."""

from __future__ import annotations

from dataclasses import dataclass

from backend.core.store import Store
from backend.jobs.manager import Manager
from backend.serving.modelclient import ModelClient
from backend.settings import Paths


@dataclass
class AppContext:
    paths: Paths
    store: Store
    manager: Manager
    models: ModelClient
    default_preset: str = "smollm2-135m"  # where a person starts: decided once by app.py from the machine

    @property
    def default_model(self) -> str:
        """The default preset's base model: what the Data tab renders and measures examples with."""
        from backend.jobs.presets import load_preset

        return load_preset(self.default_preset).config.base_model
