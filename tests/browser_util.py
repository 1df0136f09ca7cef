"""Helpers for the real-browser tests: serve the app in a subprocess, find Debian's Chromium."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@contextlib.contextmanager
def chromium_page(height: int = 900, expect_timeout_ms: int | None = None, width: int = 1280) -> Iterator:
    """A Playwright page in Debian's Chromium (never `playwright install`), 1280 px wide unless told.

    Without Chromium the test fails on CI (where `make test` installs it) and is skipped elsewhere."""
    from tests.conftest import skip_or_fail

    exe = chromium_path()
    if exe is None:
        skip_or_fail(
            "Chromium is not installed: `make test` installs it with apt (scripts/install-chromium.sh, chromium package)"
        )
    from playwright.sync_api import expect, sync_playwright

    if expect_timeout_ms:
        expect.set_options(timeout=expect_timeout_ms)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServedApp:
    """``python app.py`` on a free port with its own data directory; close() stops it and everything it started."""

    def __init__(self, home: Path, log_path: Path):
        from tests.cli_util import remember_home

        # remembered, so that conftest stops what runs there should close() never be called
        self.home = remember_home(home)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "TUNEDECK_HOME": str(home),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "PYTHONUNBUFFERED": "1",
        }
        self.log = open(log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"the app exited early; see {log_path}")
            try:
                urllib.request.urlopen(self.url, timeout=2).read(100)
                return
            except OSError:
                time.sleep(0.5)
        self.close()
        raise RuntimeError(f"the app did not answer within 90 s; see {log_path}")

    def close(self) -> None:
        """Stop the demos it published (they outlive the app by design), the app (its process group), then what it
        started in groups of their own, which stopping the app leaves running: training workers above all
        (tests.cli_util.stop_jobs)."""
        import signal

        from backend.serving import demo
        from backend.settings import Paths
        from tests.cli_util import stop_jobs

        try:
            paths = Paths.from_env(self.home)
            for running in demo.list_demos(paths):
                demo.stop_demo(paths, running["run_id"])
        finally:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(15)
            stop_jobs(self.home)
            self.log.close()


def line_width_drawn(png: bytes, rgb: tuple[int, int, int] = (249, 115, 22), tolerance: int = 40) -> float:
    """Of a chart's screenshot, the fraction of pixel columns in its top three quarters (the plot, not the legend
    below it) that show the first series' colour (Gradio's orange): about the share of the x axis a line covers."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    width, height = image.size
    px = image.load()
    near = lambda p: all(abs(a - b) <= tolerance for a, b in zip(p, rgb, strict=True))  # noqa: E731
    drawn = sum(1 for x in range(width) if any(near(px[x, y]) for y in range(int(height * 0.75))))
    return drawn / width


def wait_until(measure, *, above: float, timeout_s: float = 30.0, every_s: float = 0.25) -> float:
    """Measure again until the value passes ``above`` (or the time is up); returns the last value measured."""
    import time

    deadline = time.monotonic() + timeout_s
    value = measure()
    while value <= above and time.monotonic() < deadline:
        time.sleep(every_s)
        value = measure()
    return value
