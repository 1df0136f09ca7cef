"""Settings are read in one place and checked once: the same value means the same thing to `serve` and `data add`,
a bad one is named with its fix before anything starts, and a data directory that cannot be written is named with
its path (not "attempt to write a readonly database")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from backend.settings import PROJECT_ROOT as ROOT
from backend.settings import Paths, SettingsError, home_unwritable, load_settings
from tests.conftest import tmpfs


def test_every_setting_is_read_the_same_way_and_all_problems_are_named_at_once():
    settings = load_settings({"TUNEDECK_MAX_UPLOAD_MB": "0.5", "TUNEDECK_PORT": "8000"})
    assert settings.max_upload_bytes == 512 * 1024 and settings.port == 8000  # half a megabyte, for everyone
    with pytest.raises(SettingsError) as err:
        load_settings(
            {"TUNEDECK_MAX_UPLOAD_MB": "lots", "TUNEDECK_PORT": "99999", "TUNEDECK_HANG_TIMEOUT_S": "0"}
        )
    text = str(err.value)
    assert "TUNEDECK_MAX_UPLOAD_MB='lots' is not a number. Fix:" in text
    assert "TUNEDECK_PORT=99999 is not a port number. Fix:" in text
    assert "TUNEDECK_HANG_TIMEOUT_S='0' must be a number greater than 0" in text


def test_the_cli_refuses_a_bad_setting_with_its_name_and_no_traceback(tmp_path: Path):
    res = subprocess.run(
        [sys.executable, "-m", "backend", "data", "list"],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "TUNEDECK_HOME": str(tmp_path / "home"),
            "TUNEDECK_MAX_UPLOAD_MB": "half",
        },
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "TUNEDECK_MAX_UPLOAD_MB='half' is not a number" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.fixture
def read_only_home(tmp_path: Path):
    """A data directory on a read-only filesystem (root, as the tests run here, writes through permissions)."""
    with tmpfs(tmp_path / "ro-home", "ro,size=1m") as home:
        yield home


def test_a_read_only_data_directory_is_named_with_its_path_and_the_fix(read_only_home: Path):
    with pytest.raises(
        SettingsError, match=r"cannot create its data directory .*ro-home.*Read-only.*Fix: make"
    ):
        Paths.from_env(read_only_home)
    message = home_unwritable(Paths(read_only_home))
    assert message and str(read_only_home) in message and "Fix: make it writable" in message
    res = subprocess.run(
        [sys.executable, "-m", "backend", "data", "list"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "TUNEDECK_HOME": str(read_only_home)},
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2, res.stderr
    assert f"its data directory {read_only_home}" in res.stderr and "Traceback" not in res.stderr
    assert "readonly database" not in res.stderr
