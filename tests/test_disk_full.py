"""A disk that fills up during training, on a small filesystem of its own (a tmpfs the test mounts, which needs root:
skipped where mounting is not allowed, failed on CI: tests.conftest.skip_or_fail): the job fails with the reason, the
scheduler says what stops it while the disk is full,
and once space is back the queue goes on by itself, without a restart.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from backend import supervisor
from backend.core.status import JobStatus
from backend.core.store import Store
from backend.data.datasets import import_dataset
from backend.jobs.config import RunConfig
from backend.jobs.manager import Manager
from backend.jobs.presets import load_preset
from backend.settings import CAPITALS_CSV, Paths
from tests.cli_util import stop_jobs
from tests.conftest import link_tiny_model, tmpfs

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path: Path):
    with tmpfs(tmp_path / "small-disk", "size=48m") as mount:
        yield mount


def fill(disk: Path) -> Path:
    """Write a file until the filesystem has no space left."""
    ballast = disk / "ballast"
    chunk = b"\0" * (1 << 20)
    try:
        with open(ballast, "wb") as f:
            while True:
                f.write(chunk)
                f.flush()
    except OSError:
        pass
    return ballast


def wait_for(what, timeout: float = 120.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (value := what()):
        assert time.monotonic() < deadline, f"timed out waiting for {what.__doc__ or what}"
        time.sleep(every)
    return value


def test_a_disk_that_fills_during_training_fails_the_job_and_the_queue_goes_on_once_space_is_back(
    small_disk: Path, tiny_model_build: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNEDECK_STANDBY_WORKER", "0")
    home = small_disk / "home"
    monkeypatch.setenv("TUNEDECK_HOME", str(home))
    paths = Paths.from_env(home)
    link_tiny_model(paths, tiny_model_build)
    store = Store(paths.db)
    import_dataset(store, paths, CAPITALS_CSV, name="capitals")
    manager = Manager(store, paths, poll_s=0.1)
    stop = threading.Event()
    scheduler = threading.Thread(target=manager.run, args=(stop,), daemon=True)
    scheduler.start()
    try:
        # A run far longer than the test, with a checkpoint every 2 steps: it writes all the time.
        config = RunConfig.parse({**load_preset("tiny-offline").config.model_dump(), "max_steps": 100000})
        job = manager.submit("capitals", config.updated(save_steps=2), preset="tiny-offline")

        def training():
            """the first job to take a few steps"""
            progress = store.get_progress(job.id)
            return progress is not None and progress.step >= 3

        wait_for(training)
        pid = store.get_job(job.id).pid
        ballast = fill(small_disk)

        def worker_gone():
            """the worker to stop on the full disk"""
            return not supervisor.alive(
                pid
            )  # exited (a zombie until the scheduler can record it counts as gone)

        wait_for(worker_gone)

        def problem_shown():
            """the scheduler to say what stops it"""
            return manager.problem

        assert "cannot write to its data directory" in wait_for(problem_shown)
        assert "is full" in manager.problem and str(home) in manager.problem
        assert scheduler.is_alive()

        os.unlink(ballast)  # space comes back; nobody restarts anything

        def failed():
            """the first job to be recorded as failed"""
            return store.get_job(job.id).status.is_terminal

        wait_for(failed)
        ended = store.get_job(job.id)
        assert ended.status is JobStatus.FAILED and "is full" in ended.reason, ended.reason
        second = manager.submit("capitals", config.updated(max_steps=3), preset="tiny-offline")

        def second_done():
            """the next job to finish"""
            return store.get_job(second.id).status.is_terminal

        wait_for(second_done)
        assert store.get_job(second.id).status is JobStatus.SUCCEEDED, store.get_job(second.id).reason
        assert manager.problem is None
    finally:
        stop.set()
        scheduler.join(timeout=30)
        stop_jobs(home)  # the 100000-step run, should the test have failed before the disk filled
