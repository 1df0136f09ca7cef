"""Where TuneDeck keeps its files: everything lives under one data directory (``TUNEDECK_HOME``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from backend.errors import TuneDeckError

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
        try:
            for d in (self.home, self.datasets, self.jobs, self.models, self.logs, self.tmp):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SettingsError(
                f"TuneDeck cannot create its data directory {exc.filename or self.home} ({exc.strerror or exc}). "
                "Fix: make the folder writable for this user, or point TUNEDECK_HOME at a folder you can write to."
            ) from None


# -- settings from the environment: read in one place, each validated once -------------------------------------------


class SettingsError(TuneDeckError, ValueError):
    """One or more TUNEDECK_* settings are wrong; the message lists each with its fix."""


@dataclass(frozen=True)
class Settings:
    max_upload_mb: float  # TUNEDECK_MAX_UPLOAD_MB: the largest file the app and `data add` accept
    max_cell_chars: int  # TUNEDECK_MAX_CELL_CHARS: the longest text one cell (or chat message) may hold
    host: str  # TUNEDECK_HOST: where `tunedeck serve` listens
    port: int  # TUNEDECK_PORT
    username: str  # TUNEDECK_USERNAME: the login name when a password is set
    password: str | None  # TUNEDECK_PASSWORD
    standby_worker: bool  # TUNEDECK_STANDBY_WORKER: keep a worker with torch imported while idle (app only)
    hang_timeout_s: float  # TUNEDECK_HANG_TIMEOUT_S: a running job silent this long is failed and stopped
    model_idle_s: float  # TUNEDECK_MODEL_IDLE_S: unload a chat model unused this long

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * (1 << 20))


def _number(
    env, name: str, default: float, problems: list[str], *, whole: bool = False, low: float = 0
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        problems.append(
            f"{name}={raw!r} is not a number. Fix: set it to a number such as {default:g}, or unset it."
        )
        return default
    if value <= low or (whole and not value.is_integer()):
        kind = "a whole number" if whole else "a number"
        problems.append(
            f"{name}={raw!r} must be {kind} greater than {low:g}. Fix: set it to e.g. {default:g}."
        )
        return default
    return value


def load_settings(env=None) -> Settings:
    """Every TUNEDECK_* setting, validated; raises SettingsError listing every problem at once."""
    env = os.environ if env is None else env
    problems: list[str] = []
    port = _number(env, "TUNEDECK_PORT", 7860, problems, whole=True)
    if port > 65535:
        problems.append(
            f"TUNEDECK_PORT={port:g} is not a port number. Fix: use a port from 1 to 65535, e.g. 7860."
        )
        port = 7860
    standby = env.get("TUNEDECK_STANDBY_WORKER", "1").strip().lower()
    if standby not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
        problems.append(f"TUNEDECK_STANDBY_WORKER={standby!r}: use 1 (on, the default) or 0 (off).")
    settings = Settings(
        max_upload_mb=_number(env, "TUNEDECK_MAX_UPLOAD_MB", 2048, problems),
        max_cell_chars=int(_number(env, "TUNEDECK_MAX_CELL_CHARS", 100_000, problems, whole=True)),
        host=env.get("TUNEDECK_HOST", "").strip() or "127.0.0.1",
        port=int(port),
        username=env.get("TUNEDECK_USERNAME", "").strip() or "admin",
        password=env.get("TUNEDECK_PASSWORD") or None,
        standby_worker=standby not in ("0", "false", "no", "off"),
        hang_timeout_s=_number(env, "TUNEDECK_HANG_TIMEOUT_S", 900, problems),
        model_idle_s=_number(env, "TUNEDECK_MODEL_IDLE_S", 600, problems),
    )
    if problems:
        raise SettingsError("\n".join(problems))
    return settings


def home_unwritable(paths: Paths) -> str | None:
    """Why TuneDeck cannot write to its data directory (with the path and the fix), or None when it can."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=paths.home, prefix=".write-check-"):
            pass
    except OSError as exc:
        return (
            f"TuneDeck cannot write to its data directory {paths.home} ({exc.strerror or exc}). Fix: make it "
            "writable for this user, or point TUNEDECK_HOME at a folder you can write to."
        )
    return None


def home_low_on_space(paths: Paths, min_free_gb: float = 1.0) -> str | None:
    """A warning when the data directory's disk has less than ``min_free_gb`` free, else None."""
    import shutil

    try:
        free = shutil.disk_usage(paths.home).free / 2**30
    except OSError:
        return None
    if free >= min_free_gb:
        return None
    return (
        f"The disk holding {paths.home} has only {free:.2f} GB free: datasets, checkpoints and adapters may not "
        "fit. Fix: free some space there, or point TUNEDECK_HOME at a folder on a bigger disk."
    )
