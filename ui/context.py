"""What the UI's handlers work with: passed in by app.py, never created at import (no module-level state)."""

from __future__ import annotations

from dataclasses import dataclass

from backend.manager import Manager
from backend.modelclient import ModelClient
from backend.settings import Paths
from backend.store import Store


@dataclass
class AppContext:
    paths: Paths
    store: Store
    manager: Manager
    models: ModelClient
