"""Shared fixtures: an isolated TuneDeck home per test, its store, and a helper to write CSV files.

Every test runs offline and with its own ``TUNEDECK_HOME`` (see ``_isolated_env``), so nothing touches the real
data directory or the network. Add new shared fixtures as plain functions below.

Tests stop what they start: after each test, whatever still runs in a data directory inside its tmp_path (a training
worker, a background scheduler, a demo) is stopped; after each module, whatever still runs in a data directory its
tests or fixtures made with ``tests.cli_util.offline_env`` (module-scoped ones too). Either says so in a warning.

A test that cannot set itself up here (no root to mount a tmpfs, no Chromium) calls ``skip_or_fail``: skipped on a
developer's machine, failed on CI (``CI=true``), where everything it needs is meant to be there.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

from backend.core.store import Store
from backend.settings import Paths


def on_ci() -> bool:
    """Whether the tests run on CI (``CI=true``, as GitHub Actions, GitLab and most others set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip_or_fail(reason: str, *, allow_module_level: bool = False) -> NoReturn:
    """For a test that cannot set itself up here: skip it with ``reason`` on a developer's machine; on CI, fail it
    with ``reason`` (CI is meant to provide what it needs, so a skip there would hide that it never ran). Not for
    what CI lacks by design (a CUDA GPU: see tests/test_gpu.py), which stays a plain skip."""
    if on_ci():
        pytest.fail(
            f"{reason}. This would be skipped elsewhere, but on CI (CI=true) it must run.", pytrace=False
        )
    pytest.skip(reason, allow_module_level=allow_module_level)


def _stopped_warning(where: str, stopped: list[str]) -> None:
    if stopped:
        warnings.warn(f"still running after {where}, now stopped: " + "; ".join(stopped), stacklevel=2)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.setenv("TUNEDECK_HOME", str(tmp_path / "home"))
    yield
    from tests.cli_util import stop_jobs

    _stopped_warning("the test", stop_jobs(tmp_path / "home", under=tmp_path))


@pytest.fixture(scope="module", autouse=True)
def _stop_module_homes():
    """After a module (its module-scoped fixtures torn down first): stop what still runs in the data directories its
    tests made with offline_env, e.g. the worker of a `tunedeck train --wait` whose CLI a timeout killed."""
    from tests import cli_util

    known = len(cli_util.HOMES)
    yield
    _stopped_warning("the module", cli_util.stop_jobs(*list(cli_util.HOMES)[known:]))


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    """A fresh data directory (the same one TUNEDECK_HOME points at), with its sub-folders created."""
    return Paths.from_env(tmp_path / "home")


@pytest.fixture
def store(paths: Paths) -> Store:
    return Store(paths.db)


@pytest.fixture
def csv_file(tmp_path: Path) -> Callable[..., Path]:
    """``csv_file(text_or_bytes, name="data.csv")`` writes a file under tmp_path/uploads and returns its path.

    Text is written as UTF-8 exactly as given (no newline translation); bytes are written as they are.
    """
    folder = tmp_path / "uploads"
    folder.mkdir()

    def write(content: str | bytes, name: str = "data.csv") -> Path:
        path = folder / name
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    return write


@pytest.fixture(scope="session")
def tiny_model_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-offline, built once per test session (about 5 s)."""
    from backend.models.tiny import build

    return build(tmp_path_factory.mktemp("tiny-model") / "tiny-offline")


def link_tiny_model(home_paths: Paths, built: Path) -> Path:
    """Put the session's tiny-offline into a data directory, as if it had been built there."""
    from backend.models import registry as models

    link = models.tiny_model_dir(home_paths)
    if not link.exists():
        link.symlink_to(built, target_is_directory=True)
    return link


@pytest.fixture
def tiny_model(paths: Paths, tiny_model_build: Path) -> Path:
    return link_tiny_model(paths, tiny_model_build)


@pytest.fixture(scope="session")
def starter_model_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The starter model (smollm2-135m) converted once per test session from its PyPI package (about 30 s)."""
    from backend.models import registry as models

    root = Paths.from_env(tmp_path_factory.mktemp("starter-home"))
    return Path(models.materialize(models.resolve(models.STARTER.name, root)))


def link_starter_model(home_paths: Paths, built: Path) -> Path:
    """Put the session's converted starter model into a data directory, as if it had been converted there."""
    from backend.models import registry as models

    link = home_paths.models / models.STARTER.name
    if not link.exists():
        link.symlink_to(built, target_is_directory=True)
    return link


@pytest.fixture
def starter_home(paths: Paths, starter_model_build: Path) -> Paths:
    link_starter_model(paths, starter_model_build)
    return paths


def add_dataset_record(store: Store, ds_id: str = "ds-1") -> None:
    """A dataset row for store-level tests that add jobs (a job needs its dataset to exist); no files."""
    import time

    from backend.core.store import DatasetRecord

    if store.get_dataset(ds_id) is None:
        store.add_dataset(
            DatasetRecord(
                ds_id, f"data-{ds_id}", time.time(), "data.csv", f"/data/{ds_id}/data.parquet", 1, {}
            )
        )


@pytest.fixture
def status(paths: Paths, store: Store):
    """The job-status writer, as the scheduler holds it (this test takes the scheduler's lock for its duration)."""
    import fcntl
    import os

    fd = os.open(paths.manager_lock, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        yield store.status_writer(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def tmpfs(folder: Path, options: str):
    """A tmpfs mounted on ``folder`` for the test (``options``: e.g. "size=48m" or "ro,size=1m"), unmounted after;
    where mounting is not allowed (it needs root) the test is skipped, or fails on CI (skip_or_fail)."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True
    )
    if res.returncode != 0:
        skip_or_fail(
            f"cannot mount a tmpfs here ({options}; it needs root): {res.stderr.strip() or res.returncode}"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture
def capitals_ctx(paths: Paths, store: Store, tiny_model: Path):
    """The web app's context (no torch) with the capitals sample saved as the dataset "capitals"."""
    from backend.data.datasets import import_dataset
    from backend.jobs.manager import Manager
    from backend.serving.modelclient import ModelClient
    from backend.settings import CAPITALS_CSV
    from ui.context import AppContext

    import_dataset(store, paths, CAPITALS_CSV, name="capitals")
    return AppContext(
        paths=paths,
        store=store,
        manager=Manager(store, paths, gpu_probe=lambda: []),
        models=ModelClient(paths),
    )
