"""Run one training job. Started by the job manager in its own process group:

    python -m backend.training.worker <job dir>

It reads ``job.json`` from the job directory, trains, and writes ``result.json`` (succeeded, cancelled, or failed
with the reason). Its stdout/stderr go to ``worker.log`` in the same directory. SIGTERM asks it to stop after the
current step, save a checkpoint and the adapter. It never writes the job's status: the manager decides that from
the exit code and ``result.json``. Exit codes: 0 result written (succeeded or cancelled), 1 failed (result
written), 2 bad call, 28 the disk is full (no result could be written).

Under ``accelerate launch`` (a job with ``num_devices`` > 1) one worker runs per device; only the first writes
``result.json``.

    python -m backend.training.worker --standby

starts a *standby* worker: it imports torch, transformers, TRL and PEFT (several seconds), then waits for a job
directory on stdin and runs that job as above. The manager keeps one ready while idle, so that pressing Train
does not wait for those imports. It exits when stdin closes (the manager went away).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

from backend.core.store import Store
from backend.errors import EXIT_DISK_FULL, disk_full_message, is_disk_full
from backend.jobs.handoff import JobSpec
from backend.logs import setup_worker_logging
from backend.settings import Paths
from backend.training.recipe import Recipe, failure

log = logging.getLogger("backend.training.worker")

__all__ = ["main", "run_job"]


def run_job(job_dir: Path) -> int:
    spec = JobSpec.load(job_dir)
    setup_worker_logging(spec.job_id)
    stop = threading.Event()

    def on_term(signum, frame):  # only sets a flag: the training loop checks it after each step
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    store = Store(Paths.from_env(spec.home).db)
    rank = int(os.environ.get("RANK", "0"))
    log.info("worker pid %d started for %s%s", os.getpid(), job_dir, f" (process {rank})" if rank else "")
    recipe: Recipe | None = None
    try:
        recipe = Recipe(spec, job_dir, store, stop)
        recipe.setup()
        result = recipe.train()
        recipe.score(result)
    except BaseException as exc:  # noqa: BLE001 - every failure must end as a result the person can read
        try:
            traceback.print_exc()
        except OSError:
            pass  # the log cannot be written (a full disk): the result below says why, if it can be written
        result = failure(exc, recipe)
        if is_disk_full(exc) or (recipe is not None and _disk_full(recipe)):
            result.reason = disk_full_message(Paths.from_env(spec.home).home)
    if rank == 0:
        try:
            result.save(job_dir)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            # Nowhere to write the result: the exit code says why (the manager reads it as "disk full").
            print(f"worker: cannot write result.json, the disk is full: {exc}", file=sys.stderr, flush=True)
            return EXIT_DISK_FULL
    log.info("finished: %s %s", result.status, result.reason)
    return 1 if result.status == "failed" else 0


def _disk_full(recipe) -> bool:
    """Whether the job's folder has no space left now (torch reports a failed checkpoint write without the cause)."""
    import shutil

    try:
        return shutil.disk_usage(recipe.job_dir).free < 1 << 20
    except OSError:
        return False


def standby() -> int:
    """Import the heavy libraries now, then run the job whose directory arrives on stdin."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    from backend.logs import quiet_hf

    quiet_hf()  # first: importing the libraries below already logs (bitsandbytes' optional-kernel notice)
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401
    from peft import LoraConfig  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401
    from trl import SFTConfig, SFTTrainer  # noqa: F401

    from backend.training import prepare  # noqa: F401

    print(f"ready {os.getpid()}", flush=True)
    line = sys.stdin.readline().strip()
    if not line:
        return 0  # the manager closed the pipe: nothing to do
    job_dir = Path(line)
    if not (job_dir / "job.json").is_file():
        print(f"standby worker: no job.json in {job_dir}", file=sys.stderr)
        return 2
    # From here on this process is that job's worker: its folder, its log.
    os.chdir(job_dir)
    log_fd = os.open(job_dir / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    return run_job(job_dir)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv == ["--standby"]:
            return standby()
        if len(argv) != 1 or not (Path(argv[0]) / "job.json").is_file():
            print(
                "usage: python -m backend.training.worker <job dir containing job.json> | --standby",
                file=sys.stderr,
            )
            return 2
        return run_job(Path(argv[0]))
    except OSError as exc:
        if is_disk_full(exc):  # nothing could be written, not even why: the exit code says it
            return EXIT_DISK_FULL
        raise


if __name__ == "__main__":
    sys.exit(main())
