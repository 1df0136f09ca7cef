"""Run one training job. Started by the job manager as a fresh interpreter in its own process group:

    python -m backend.worker <job dir>

It reads ``job.json`` from the job directory, trains, and writes ``result.json`` (succeeded, cancelled, or failed
with the reason). Its stdout/stderr go to ``worker.log`` in the same directory. SIGTERM asks it to stop after the
current step and save the adapter. It never writes the job's status: the manager decides that from the exit code
and ``result.json``. Exit codes: 0 result written (succeeded or cancelled), 1 failed (result written), 2 bad call.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

from backend.logs import setup_worker_logging
from backend.settings import Paths
from backend.store import Store
from backend.train import JobSpec, Recipe, RunFailed, RunResult

log = logging.getLogger("backend.worker")


def explain(exc: BaseException) -> str:
    """A reason a person can act on, for the errors we know; the type and message otherwise."""
    text = str(exc)
    if isinstance(exc, RunFailed):
        return text
    name = type(exc).__name__
    if "out of memory" in text.lower() or name == "OutOfMemoryError":
        return (
            "out of GPU memory. Fix: lower batch_size (and raise grad_accum to keep the effective batch), lower "
            "max_length, turn on gradient_checkpointing, or use method qlora."
        )
    if name in ("OfflineModeIsEnabled", "LocalEntryNotFoundError") or "offline" in text.lower():
        return f"the model could not be loaded offline: {text}. Fix: download it once with internet, or pick tiny-offline."
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{name}: {first}" if first else name


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not (Path(argv[0]) / "job.json").is_file():
        print("usage: python -m backend.worker <job dir containing job.json>", file=sys.stderr)
        return 2
    job_dir = Path(argv[0])
    spec = JobSpec.load(job_dir)
    setup_worker_logging(spec.job_id)

    stop = threading.Event()

    def on_term(signum, frame):  # only sets a flag: the training loop checks it after each step
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    store = Store(Paths.from_env(spec.home).db)
    log.info("worker pid %d started for %s", os.getpid(), job_dir)
    try:
        recipe = Recipe(spec, job_dir, store, stop)
        recipe.setup()
        result = recipe.train()
    except BaseException as exc:  # noqa: BLE001 - every failure must end as a result the person can read
        traceback.print_exc()
        result = RunResult(status="failed", reason=explain(exc))
    result.save(job_dir)
    log.info("finished: %s %s", result.status, result.reason)
    return 1 if result.status == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
