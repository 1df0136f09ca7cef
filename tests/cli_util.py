"""Run the ``tunedeck`` CLI as a person would, in a subprocess, against a given data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from backend.settings import PROJECT_ROOT, SAMPLE_CSV, Paths
from tests.conftest import link_tiny_model


def offline_env(home: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "TUNEDECK_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        **extra,
    }


def tunedeck(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "backend", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tunedeck_json(env: dict[str, str], *args: str, timeout: float = 300) -> dict | list:
    res = tunedeck(env, *args, "--json", timeout=timeout)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def home_with_sample(root: Path, tiny_model_build: Path) -> dict[str, str]:
    """A data directory with tiny-offline and the sample dataset 'capitals'; returns its environment."""
    link_tiny_model(Paths.from_env(root), tiny_model_build)
    env = offline_env(root)
    tunedeck_json(env, "data", "add", str(SAMPLE_CSV), "--name", "capitals")
    return env


def train_sample(env: dict[str, str], steps: int = 30) -> dict:
    res = tunedeck(
        env,
        "train",
        "capitals",
        "--preset",
        "tiny-offline",
        "--set",
        f"max_steps={steps}",
        "--wait",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)
