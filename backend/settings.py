"""Where TuneDeck keeps its files: everything lives under one data directory (``TUNEDECK_HOME``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = Path.home() / ".tunedeck"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
PRESETS_DIR = PROJECT_ROOT / "presets"
# The sample a person tries first: 215 support questions about a fictional robot vacuum (43 facts, five phrasings
# each) and a validation file asking about the same 43 facts in words the training rows do not use.
SAMPLE_CSV = PROJECT_ROOT / "presets" / "samples" / "skylark-support.csv"
SAMPLE_VALIDATION_CSV = PROJECT_ROOT / "presets" / "samples" / "skylark-support-validation.csv"
# 32 questions about capital cities: small enough that tests train tiny-offline on it in seconds.
CAPITALS_CSV = PROJECT_ROOT / "presets" / "samples" / "capitals.csv"


@dataclass(frozen=True)
class Paths:
    """The layout of the data directory. The app writes nothing outside ``home``."""

    home: Path

    @classmethod
    def from_env(cls, home: str | os.PathLike | None = None) -> Paths:
        root = Path(home or os.environ.get("TUNEDECK_HOME") or DEFAULT_HOME).expanduser().resolve()
        paths = cls(root)
        paths.ensure()
        return paths

    @property
    def db(self) -> Path:
        return self.home / "tunedeck.db"

    @property
    def datasets(self) -> Path:
        return self.home / "datasets"

    @property
    def jobs(self) -> Path:
        return self.home / "jobs"

    @property
    def models(self) -> Path:
        return self.home / "models"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def tmp(self) -> Path:
        return self.home / "tmp"

    @property
    def manager_lock(self) -> Path:
        return self.home / "manager.lock"

    def job_dir(self, job_id: str) -> Path:
        return self.jobs / job_id

    def ensure(self) -> None:
        for d in (self.home, self.datasets, self.jobs, self.models, self.logs, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
