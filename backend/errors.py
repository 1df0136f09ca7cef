"""What went wrong, in words a person can act on. Torch-free: the CLI, the model server and the worker all use it."""

from __future__ import annotations

__all__ = [
    "EXIT_DISK_FULL",
    "OOM_FIX",
    "NotFound",
    "RunFailed",
    "TuneDeckError",
    "disk_full_message",
    "explain",
    "is_disk_full",
    "is_out_of_memory",
]

import errno
import sqlite3
from pathlib import Path

EXIT_DISK_FULL = 28  # a worker that could not even write its result because the disk is full (ENOSPC is 28)

OOM_FIX = "lower batch_size (and raise grad_accum), lower max_length, turn on gradient_checkpointing, or use method qlora."


class TuneDeckError(Exception):
    """The base of every problem TuneDeck explains to a person: the message says what is wrong (the file, row,
    field or path) and, after "Fix:", what to do. The CLI prints it as it is and exits 2; the UI shows it in its
    error box; a worker writes it as the job's reason. Anything else is a bug, shown with its type."""

    @property
    def message(self) -> str:
        return str(self).split(" Fix: ", 1)[0]

    @property
    def fix(self) -> str:
        parts = str(self).split(" Fix: ", 1)
        return parts[1] if len(parts) > 1 else ""


class RunFailed(TuneDeckError, RuntimeError):
    """A failure we can explain to the person; the message is shown as the job's reason."""


class NotFound(TuneDeckError, KeyError):
    """There is no job, run or dataset of that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return (
        type(exc).__name__ == "OutOfMemoryError"
        or "cuda out of memory" in text
        or ("out of memory" in text and "cuda" in text)
    )


def is_disk_full(exc: BaseException) -> bool:
    """A write that failed because the disk is full (or SQLite could not write its files), by error code."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return (
        isinstance(exc, sqlite3.Error)
        and code is not None
        and code & 0xFF in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR)
    )


def disk_full_message(where: str | Path) -> str:
    return (
        f"the disk holding {where} is full: no space left to write the job's files. Fix: free some space there "
        "(old runs' checkpoints in the Runs tab, or other files), then resume the run; or set TUNEDECK_HOME to a "
        "folder on a bigger disk."
    )


def explain(exc: BaseException) -> str:
    """A reason a person can act on, for the errors we know; the type and message otherwise."""
    text = str(exc)
    if isinstance(exc, TuneDeckError):
        return text
    name = type(exc).__name__
    if is_out_of_memory(exc):
        return f"out of GPU memory. Fix: {OOM_FIX}"
    if is_disk_full(exc):
        return disk_full_message(getattr(exc, "filename", None) or "TuneDeck's data directory")
    if name in ("OfflineModeIsEnabled", "LocalEntryNotFoundError"):
        return (
            f"the model could not be loaded offline: {text}. Fix: download it once with internet, or pick the "
            "starter model smollm2-135m, which needs no network."
        )
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{name}: {first}" if first else name
