"""Every child process TuneDeck starts goes through here: training workers (and the standby one), the background
scheduler, the importer, the model server, demos, scoring, model conversion.

One way to build a child's environment (the data directory, the project on the import path, unbuffered output),
to start it in a process group of its own (so a stop reaches everything it started, e.g. ``accelerate launch``'s
workers), to tell whether a process is still one of ours and alive (psutil: portable, and a reused pid or a zombie
does not count), and to stop it: SIGTERM to the group, then SIGKILL after a grace period. Torch-free.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from backend.settings import PROJECT_ROOT, Paths

__all__ = ["alive", "child_env", "free_port", "python", "signal_group", "start", "stop"]


def child_env(paths: Paths, **extra: str) -> dict[str, str]:
    """The environment of a child: ours, with the data directory, the project importable, unbuffered output."""
    env = {**os.environ, "TUNEDECK_HOME": str(paths.home), "PYTHONUNBUFFERED": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def python(*args: str) -> list[str]:
    """A command line running this interpreter (``python(-m, backend.training.worker, dir)``)."""
    return [sys.executable, *args]


def start(
    cmd: Sequence[str],
    paths: Paths,
    *,
    cwd: str | Path | None = None,
    log: Path | None = None,
    stdin: Any = subprocess.DEVNULL,
    stdout: Any = None,
    stderr: Any = None,
    text: bool = False,
    env: dict[str, str] | None = None,
    **popen: Any,
) -> subprocess.Popen:
    """Start ``cmd`` in a new session and process group. ``log``: append its stdout and stderr to this file
    (otherwise ``stdout``/``stderr`` as given)."""
    out: IO[bytes] | None = open(log, "ab") if log is not None else None  # noqa: SIM115 - the child owns it
    try:
        return subprocess.Popen(
            list(cmd),
            cwd=str(cwd) if cwd is not None else str(PROJECT_ROOT),
            env=env if env is not None else child_env(paths),
            stdin=stdin,
            stdout=out if out is not None else stdout,
            stderr=subprocess.STDOUT if out is not None else stderr,
            text=text,
            start_new_session=True,
            **popen,
        )
    finally:
        if out is not None:
            out.close()


def alive(pid: int | None, *, marker: str | Path | None = None) -> bool:
    """Is ``pid`` a live process (not a zombie) and, with ``marker``, one of ours: its command line or working
    folder holds it (a job directory, a demo folder), so a pid the system gave to another program does not count."""
    import psutil

    if not pid or pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if marker is None:
            return True
        mark = str(marker)
        if any(mark in part for part in proc.cmdline()):
            return True
        return proc.cwd() == mark  # a standby worker that took a job works in the job's folder
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group ``pid`` leads (our children each lead their own)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(proc: subprocess.Popen | int, *, grace_s: float = 10.0) -> None:
    """SIGTERM to the process's group; SIGKILL if it has not ended after ``grace_s``. Reaps our own children."""
    pid = proc if isinstance(proc, int) else proc.pid
    popen = proc if isinstance(proc, subprocess.Popen) else None
    if popen is not None and popen.poll() is not None:
        return
    signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if (popen.poll() is not None) if popen is not None else not alive(pid):
            return
        time.sleep(0.05)
    signal_group(pid, signal.SIGKILL)
    if popen is not None:
        try:
            popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def free_port() -> int:
    """A TCP port free on this machine right now (for a demo, or the processes of a multi-device job)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
