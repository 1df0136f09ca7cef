"""The job manager: the only writer of job status.

Any process may *submit* a job (it is validated first and stored as queued) or *ask* to cancel one (a flag in the
store). Exactly one process at a time *schedules*: whoever holds the lock file ``manager.lock`` (the web app, or
a short-lived ``tunedeck manager --until-idle`` daemon started by the CLI). The scheduler:

- starts the oldest queued job when nothing runs (one job at a time on the device), as a fresh
  ``python -m backend.worker <job dir>`` in its own process group, output to ``worker.log``;
- turns a cancel request into SIGTERM to the worker's group, and SIGKILL after ``kill_after_s``;
- decides the final status from the worker's exit and its ``result.json``: a worker that dies without a result
  (OOM killer, segfault, ``kill -9``) ends as failed with the signal named;
- on taking the lock, re-attaches to workers still alive from an earlier scheduler and fails those that are gone.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backend import models
from backend.config import ConfigError, Problem, RunConfig
from backend.jobs import JobStatus
from backend.settings import PROJECT_ROOT, Paths
from backend.store import JobRecord, Store
from backend.train import JobSpec, RunResult, read_result

log = logging.getLogger(__name__)

WorkerCommand = Callable[[Path], list[str]]
TEMPLATE_OVERHEAD_TOKENS = 16  # role markers and separators the chat template adds around a prompt


def default_worker_command(job_dir: Path) -> list[str]:
    return [sys.executable, "-m", "backend.worker", str(job_dir)]


@dataclass
class _Running:
    job_id: str
    pid: int
    proc: subprocess.Popen | None  # None when re-attached to a worker an earlier scheduler started
    job_dir: Path
    term_sent_at: float | None = None
    killed: bool = False


class Manager:
    def __init__(
        self,
        store: Store,
        paths: Paths,
        *,
        worker_command: WorkerCommand = default_worker_command,
        kill_after_s: float = 30.0,
        poll_s: float = 0.5,
    ):
        self.store = store
        self.paths = paths
        self.worker_command = worker_command
        self.kill_after_s = kill_after_s
        self.poll_s = poll_s
        self._running: dict[str, _Running] = {}
        self._lock_file: int | None = None

    # -- any process ------------------------------------------------------------------------------------------

    def submit(self, dataset: str, config: RunConfig, preset: str = "custom") -> JobRecord:
        """Check the job as a whole (dataset, model, lengths), then queue it. Raises ConfigError with every problem."""
        problems: list[Problem] = []
        record = self.store.get_dataset(dataset)
        if record is None:
            names = ", ".join(d.name for d in self.store.list_datasets()) or "none yet"
            problems.append(Problem("dataset", dataset, "there is no dataset with this name or id",
                                    f"import one first (Data tab or `tunedeck data add FILE`); existing: {names}"))
        try:
            ref = models.check_available(config.base_model, self.paths)
        except models.ModelError as exc:
            problems.append(Problem("base_model", config.base_model, str(exc).split(" Fix: ")[0].rstrip("."),
                                    str(exc).split(" Fix: ")[-1].rstrip(".")))
            ref = None
        if record is not None and ref is not None:
            problems.extend(_length_problems(record.path, ref, config, self.paths))
        if problems:
            raise ConfigError(problems)
        assert record is not None
        job_id = new_job_id()
        job_dir = self.paths.job_dir(job_id)
        job_dir.mkdir(parents=True)
        JobSpec(job_id, str(self.paths.home), record.id, record.path, config.model_dump()).save(job_dir)
        (job_dir / "config.yaml").write_text(_yaml(config, preset, record.name, record.id))
        self.store.add_job(job_id, record.id, preset, config.model_dump(), str(job_dir))
        job = self.store.get_job(job_id)
        assert job is not None
        log.info("queued %s on dataset %s (preset %s)", job_id, record.name, preset)
        return job

    def cancel(self, job_id: str) -> JobRecord:
        job = self.store.get_job(job_id)
        if job is None:
            raise KeyError(f"there is no job {job_id!r}")
        if not job.status.is_terminal:
            self.store.request_cancel(job_id)
        return self.store.get_job(job_id)  # type: ignore[return-value]

    # -- the scheduler role -----------------------------------------------------------------------------------

    def try_acquire(self) -> bool:
        """Become the scheduler if no other process is. Held until release() or process exit."""
        if self._lock_file is not None:
            return True
        fd = os.open(self.paths.manager_lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_file = fd
        self._recover()
        return True

    def release(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            os.close(self._lock_file)
            self._lock_file = None

    @property
    def is_scheduler(self) -> bool:
        return self._lock_file is not None

    def run(self, stop: threading.Event, *, until_idle: bool = False) -> None:
        """Schedule until ``stop`` is set (or, with until_idle, until nothing is queued or running)."""
        try:
            while not stop.is_set():
                if self.try_acquire():
                    self.tick()
                    if until_idle and self.idle():
                        return
                elif until_idle:
                    return  # another process schedules
                stop.wait(self.poll_s)
        finally:
            self.release()

    def idle(self) -> bool:
        return not self._running and not self.store.list_jobs((JobStatus.QUEUED, JobStatus.RUNNING))

    def tick(self) -> None:
        assert self.is_scheduler, "only the scheduler may change job status"
        for job in self.store.queued_jobs():
            if job.cancel_requested:
                self.store.set_status(job.id, JobStatus.CANCELLED, reason="cancelled before it started")
        for run in list(self._running.values()):
            self._watch(run)
        if not self._running:
            queued = self.store.queued_jobs()
            if queued:
                self._start(queued[0])

    # -- internals ----------------------------------------------------------------------------------------------

    def _start(self, job: JobRecord) -> None:
        job_dir = Path(job.job_dir)
        (job_dir / "result.json").unlink(missing_ok=True)
        env = {**os.environ, "TUNEDECK_HOME": str(self.paths.home), "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        with open(job_dir / "worker.log", "ab") as out:
            try:
                proc = subprocess.Popen(
                    self.worker_command(job_dir),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=str(job_dir),
                    env=env,
                    start_new_session=True,  # own session and process group: cancel signals the whole group
                )
            except OSError as exc:
                self.store.set_status(job.id, JobStatus.FAILED, reason=f"could not start the worker: {exc}")
                return
        self.store.set_status(job.id, JobStatus.RUNNING, pid=proc.pid)
        self._running[job.id] = _Running(job.id, proc.pid, proc, job_dir)
        log.info("started %s as pid %d", job.id, proc.pid)

    def _watch(self, run: _Running) -> None:
        code = self._exit_code(run)
        if code is not None:
            self._finish(run, code)
            return
        job = self.store.get_job(run.job_id)
        if job is None or not job.cancel_requested:
            return
        now = time.monotonic()
        if run.term_sent_at is None:
            log.info("cancelling %s: SIGTERM to process group %d", run.job_id, run.pid)
            _signal_group(run.pid, signal.SIGTERM)
            run.term_sent_at = now
        elif not run.killed and now - run.term_sent_at > self.kill_after_s:
            log.warning("%s did not stop within %.0f s: SIGKILL", run.job_id, self.kill_after_s)
            _signal_group(run.pid, signal.SIGKILL)
            run.killed = True

    def _exit_code(self, run: _Running) -> int | str | None:
        """The exit code (negative: killed by that signal), 'gone' for a re-attached worker that ended, or None."""
        if run.proc is not None:
            return run.proc.poll()
        return None if _alive(run.pid, run.job_dir) else "gone"

    def _finish(self, run: _Running, code: int | str) -> None:
        self._running.pop(run.job_id, None)
        job = self.store.get_job(run.job_id)
        assert job is not None
        result = read_result(run.job_dir)
        status, reason = decide(code, result, cancel_requested=job.cancel_requested, killed=run.killed,
                                kill_after_s=self.kill_after_s)
        payload = result.__dict__ if result else {}
        self.store.set_status(run.job_id, status, reason=reason, result=payload)
        log.info("%s ended: %s %s", run.job_id, status.value, reason)

    def _recover(self) -> None:
        """Adopt workers an earlier scheduler started; fail those that died while nobody watched."""
        for job in self.store.list_jobs((JobStatus.RUNNING,)):
            if job.id in self._running:
                continue
            job_dir = Path(job.job_dir)
            if job.pid and _alive(job.pid, job_dir):
                log.info("re-attached to %s (pid %d)", job.id, job.pid)
                self._running[job.id] = _Running(job.id, job.pid, None, job_dir)
            else:
                self._finish(_Running(job.id, job.pid or 0, None, job_dir), "gone")


def decide(
    code: int | str, result: RunResult | None, *, cancel_requested: bool, killed: bool, kill_after_s: float = 30
) -> tuple[JobStatus, str]:
    """The final status of a job, from how its worker ended and what it recorded. Pure: tested on its own."""
    if result is not None and code in (0, 1, "gone"):
        if result.status == "succeeded":
            return JobStatus.SUCCEEDED, ""
        if result.status == "cancelled":
            return JobStatus.CANCELLED, result.reason or "cancelled"
        return JobStatus.FAILED, result.reason or "the worker reported a failure without a reason"
    if killed and cancel_requested:
        return JobStatus.CANCELLED, f"cancelled: the worker did not stop within {kill_after_s:g} s and was killed"
    if cancel_requested and code == -signal.SIGTERM:
        # Our cancel's SIGTERM arrived before the worker installed its handler (it was still starting up).
        return JobStatus.CANCELLED, "cancelled while the worker was starting, before it saved anything"
    if code == "gone":
        return JobStatus.FAILED, (
            "worker died while TuneDeck was not watching (it was started before a restart and left no result); "
            "see worker.log"
        )
    assert isinstance(code, int)
    if code < 0:
        name = _signal_name(-code)
        hint = " (often the system's out-of-memory killer)" if -code == signal.SIGKILL else ""
        return JobStatus.FAILED, f"worker died: signal {-code} ({name}){hint} before writing its result; see worker.log"
    return JobStatus.FAILED, f"worker exited with code {code} without writing its result; see worker.log"


def queue_positions(store: Store) -> dict[str, int]:
    """1-based place in the queue of each queued job (1 = next to run)."""
    return {job.id: i for i, job in enumerate(store.queued_jobs(), start=1)}


def new_job_id() -> str:
    return f"run-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def ensure_scheduler(paths: Paths) -> bool:
    """Start a background scheduler (``tunedeck manager --until-idle``) unless one is running. True if started."""
    fd = os.open(paths.manager_lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # the app or another daemon schedules
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    env = {**os.environ, "TUNEDECK_HOME": str(paths.home)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    with open(paths.logs / "manager.log", "ab") as out:
        subprocess.Popen(
            [sys.executable, "-m", "backend", "manager", "--until-idle"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
    return True


def _length_problems(dataset_path: str, ref: models.ModelRef, config: RunConfig, paths: Paths) -> list[Problem]:
    """max_length must leave room for the response after the longest prompt (checked with the real tokenizer)."""
    tok_file = models.tokenizer_file(ref)
    if tok_file is None and ref.is_tiny:
        _build_tiny(paths)
        tok_file = models.tokenizer_file(ref)
    if tok_file is None:
        return []  # not downloaded yet: the worker checks once it has the tokenizer
    import pandas as pd
    from tokenizers import Tokenizer

    frame = pd.read_parquet(dataset_path, columns=["prompt", "system", "source_row"])
    texts = [(s or config.system_prompt) + "\n" + p for p, s in zip(frame["prompt"], frame["system"], strict=True)]
    lengths = [len(e.ids) + TEMPLATE_OVERHEAD_TOKENS for e in Tokenizer.from_file(tok_file).encode_batch(texts)]
    longest = max(lengths)
    if longest < config.max_length:
        return []
    row = int(frame["source_row"].iloc[lengths.index(longest)])
    need = (longest + 64 + 63) // 64 * 64
    return [Problem("max_length", config.max_length,
                    f"the longest prompt (row {row} of the file) is about {longest} tokens, so its response would be cut off",
                    f"set max_length to at least {need}, or shorten that prompt")]


def _build_tiny(paths: Paths) -> None:
    # Built in a child interpreter: the web UI process must not import torch.
    subprocess.run(
        [sys.executable, "-c", "import sys; from backend.tinymodel import build; build(sys.argv[1])",
         str(models.tiny_model_dir(paths))],
        check=True, cwd=str(PROJECT_ROOT), capture_output=True, timeout=300,
    )


def _alive(pid: int, job_dir: Path) -> bool:
    """Is ``pid`` a live worker for this job dir? (Guards against the pid having been reused.)"""
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True  # no /proc (macOS): trust the pid
    return str(job_dir) in cmdline


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def _yaml(config: RunConfig, preset: str, dataset_name: str, dataset_id: str) -> str:
    import yaml

    head = f"# TuneDeck run config (preset {preset}, dataset {dataset_name} = {dataset_id}).\n"
    return head + yaml.safe_dump(config.model_dump(), sort_keys=False)
