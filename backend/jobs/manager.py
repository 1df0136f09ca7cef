"""The job manager: the only writer of job status.

Any process may *submit* a job (it is validated first and stored as queued) or *ask* to cancel one (a flag in the
store). Exactly one process at a time *schedules*: whoever holds the lock file ``manager.lock`` (the web app, or
a short-lived ``tunedeck manager --until-idle`` daemon started by the CLI). The scheduler:

- starts the oldest queued job when nothing runs (one job at a time on the device), as a fresh
  ``python -m backend.training.worker <job dir>`` in its own process group, output to ``worker.log``;
- turns a cancel request into SIGTERM to the worker's group, and SIGKILL after ``kill_after_s``;
- decides the final status from the worker's exit and its ``result.json``: a worker that dies without a result
  (OOM killer, segfault, ``kill -9``) ends as failed with the signal named;
- on taking the lock, re-attaches to workers still alive from an earlier scheduler and fails those that are gone;
- when a job ran out of GPU memory and its config says ``oom_retry``, queues a retry of it with half the
  micro-batch and twice the gradient accumulation, from its last checkpoint;
- while idle (the web app's scheduler only), keeps one *standby* worker that has already imported torch and the
  training libraries, and hands it the next job, so a job does not wait seconds for imports before its first step.

Before queueing, ``submit`` checks the job as a whole: the dataset, the model, and (``backend.jobs.admission``)
max_length against the longest prompt and the estimated peak memory against the GPU or this machine's RAM,
refusing with concrete changes that would fit. ``resume`` queues a new job that continues a cancelled, failed or
crashed one from its last checkpoint.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend import supervisor
from backend.core.status import JobStatus
from backend.core.store import DatasetGone, DatasetRecord, JobRecord, StatusWriter, Store
from backend.errors import EXIT_DISK_FULL, TuneDeckError, disk_full_message
from backend.jobs import estimate
from backend.jobs.accelerator import Accelerator
from backend.jobs.admission import Admission, CpuEstimate, _shape
from backend.jobs.config import ConfigError, Problem, RunConfig
from backend.jobs.handoff import (
    START_ADAPTER,
    JobSpec,
    RunResult,
    checkpoint_step,
    last_checkpoint,
    read_result,
)
from backend.jobs.launch import default_worker_command
from backend.models import devices as hardware
from backend.models import registry as models
from backend.settings import Paths

log = logging.getLogger(__name__)

WorkerCommand = Callable[[Path], list[str]]
GpuProbe = Callable[[], list[hardware.Gpu]]
STANDBY_ENV = "TUNEDECK_STANDBY_WORKER"  # "0" turns the standby worker off
LEASE_GRACE_S = 60.0  # how long a queued GPU job waits for chat or scoring to let go of the GPU


# Settings a resumed run may change: how long it goes on, how it batches and logs. The rest (model, method,
# adapter shape, optimizer, schedule) is baked into the checkpoint it continues.
RESUME_CHANGES = frozenset(
    {
        "max_steps",
        "num_epochs",
        "save_steps",
        "logging_steps",
        "eval_steps",
        "batch_size",
        "grad_accum",
        "gradient_checkpointing",
        "batching",
        "oom_retry",
        "score_examples",
        "device",
        "precision",
    }
)


class ResumeError(TuneDeckError, ValueError):
    """A job that cannot be resumed; the message says why and what to do."""


@dataclass(frozen=True)
class _Retry:
    """A job to queue again after it ran out of GPU memory (decided before the failure is recorded)."""

    job_id: str
    dataset: DatasetRecord
    config: RunConfig
    checkpoint: Path | None
    note: str


@dataclass
class _Running:
    job_id: str
    pid: int
    proc: subprocess.Popen | None  # None when re-attached to a worker an earlier scheduler started
    job_dir: Path
    term_sent_at: float | None = None
    killed: bool = False
    hung_for: float | None = None  # seconds without a sign of life when the watchdog stopped it


class Manager:
    def __init__(
        self,
        store: Store,
        paths: Paths,
        *,
        worker_command: WorkerCommand = default_worker_command,
        kill_after_s: float = 30.0,
        poll_s: float = 0.5,
        gpu_probe: GpuProbe = hardware.gpu_inventory,
        hang_after_s: float | None = None,
    ):
        self.store = store
        self.paths = paths
        self.worker_command = worker_command
        self.kill_after_s = kill_after_s
        self.poll_s = poll_s
        self.gpu_probe = gpu_probe
        # A running job with no sign of life (a step, a beat) for this long is failed and its worker killed.
        self.hang_after_s = hang_after_s if hang_after_s is not None else _settings().hang_timeout_s
        self._running: dict[str, _Running] = {}
        self._lock_file: int | None = None
        self._standby: subprocess.Popen | None = None
        self._standby_wanted = False
        self._standby_failures = 0
        self._standby_retry_at = 0.0
        self.problem: str | None = None  # why the last scheduling pass failed, until one works again
        self.status: StatusWriter | None = None  # the one writer of job status, while this process schedules
        self._clearing_since: float | None = None  # when the next job asked chat/scoring to let go of the GPU
        self.admission = Admission(
            store,
            paths,
            gpu_probe=lambda: self.gpu_probe(),  # read each time: tests and the UI may swap the probe
            running_pids=lambda: [r.pid for r in self._running.values()],
        )

    # -- any process ------------------------------------------------------------------------------------------

    def submit(self, dataset: str, config: RunConfig, preset: str = "custom") -> JobRecord:
        """Check the job as a whole (``problems``), then queue it.

        Raises ConfigError with every problem."""
        record, problems = self._check(dataset, config)
        if problems:
            raise ConfigError(problems)
        assert record is not None
        return self._queue(record, config, preset)

    def problems(self, dataset: str, config: RunConfig) -> list[Problem]:
        """Why ``submit`` would refuse this job (dataset, model, objective, lengths, then memory), or []."""
        return self._check(dataset, config)[1]

    def _check(self, dataset: str, config: RunConfig) -> tuple[DatasetRecord | None, list[Problem]]:
        problems: list[Problem] = []
        record = self.store.get_dataset(dataset)
        if record is None:
            names = ", ".join(d.name for d in self.store.list_datasets()) or "none yet"
            problems.append(
                Problem(
                    "dataset",
                    dataset,
                    "there is no dataset with this name or id",
                    f"import one first (Data tab or `tunedeck data add FILE`); existing: {names}",
                )
            )
        try:
            ref = models.check_available(config.base_model, self.paths)
        except models.ModelError as exc:
            problems.append(
                Problem(
                    "base_model",
                    config.base_model,
                    str(exc).split(" Fix: ")[0].rstrip("."),
                    str(exc).split(" Fix: ")[-1].rstrip("."),
                )
            )
            ref = None
        problems.extend(self.admission.objective_problems(record, config))
        if record is not None and ref is not None and not problems:
            problems.extend(self.admission.length_problems(record, config))
        if not problems:
            problems.extend(self.admission.memory_problems(config, record, ref))
        return record, problems

    def _queue(
        self,
        dataset: DatasetRecord,
        config: RunConfig,
        preset: str,
        *,
        resume_checkpoint: Path | None = None,
        resumed_from: str = "",
        retry_of: str = "",
        job_id: str | None = None,
    ) -> JobRecord:
        dataset_id, dataset_name = dataset.id, dataset.name
        job_id = job_id or new_job_id()
        job_dir = self.paths.job_dir(job_id)
        job_dir.mkdir(parents=True)
        try:
            resume_from = ""
            if resume_checkpoint is not None:
                # A copy, not a reference: the earlier run's folder may be deleted, and its checkpoints rotate.
                target = job_dir / "checkpoints" / resume_checkpoint.name
                shutil.copytree(resume_checkpoint, target)
                resume_from = str(target)
            if config.continue_from:
                # A copy of the adapter to start from, as with a checkpoint: the earlier run may be deleted meanwhile.
                source = self._start_adapter(config, resumed_from or retry_of)
                if source is None:
                    raise ConfigError(
                        [
                            Problem(
                                "continue_from",
                                config.continue_from,
                                "the adapter of that run is gone",
                                "continue from another finished run, or leave continue_from empty",
                            )
                        ]
                    )
                shutil.copytree(source, job_dir / START_ADAPTER)
            JobSpec(
                job_id,
                str(self.paths.home),
                dataset_id,
                dataset.path,
                config.model_dump(),
                shape=_shape(dataset),
                resume_from=resume_from,
                submitted_at=time.time(),
            ).save(job_dir)
            (job_dir / "config.yaml").write_text(_yaml(config, preset, dataset_name, dataset_id))
            self.store.add_job(
                job_id,
                dataset_id,
                preset,
                config.model_dump(),
                str(job_dir),
                resumed_from=resumed_from,
                retry_of=retry_of,
            )
        except BaseException as exc:
            shutil.rmtree(job_dir, ignore_errors=True)  # no half-made job folder
            if isinstance(exc, DatasetGone):
                raise ConfigError(
                    [
                        Problem(
                            "dataset",
                            dataset_name,
                            "this dataset was deleted while the job was being queued",
                            "import it again (Data tab or `tunedeck data add FILE`) and start the job again",
                        )
                    ]
                ) from None
            raise
        if resume_checkpoint is not None:
            # The curve up to the checkpoint; the worker appends the rest (the chart orders points by step).
            self.store.copy_metrics(resumed_from or retry_of, job_id, checkpoint_step(resume_checkpoint))
        job = self.store.get_job(job_id)
        assert job is not None
        log.info(
            "queued %s on dataset %s (preset %s)%s",
            job_id,
            dataset_name,
            preset,
            f", continuing {resumed_from or retry_of} from {resume_checkpoint.name}"
            if resume_checkpoint
            else "",
        )
        return job

    def resume(self, job_id: str, changes: dict | None = None) -> JobRecord:
        """Queue a new job that continues ``job_id`` (cancelled, failed or crashed) from its last checkpoint.

        The new job records which job it resumes; it gets a copy of that checkpoint and of the loss curve up to it,
        so its chart starts with the earlier points and its step count goes on from the checkpoint's: what the
        person sees is one run that continued, under a new id, while the stopped run stays as it ended.
        """
        job = self.store.get_job(job_id)
        if job is None:
            raise ResumeError(f"There is no job {job_id!r}. Fix: see `tunedeck jobs` for the list.")
        if job.status is JobStatus.SUCCEEDED:
            raise ResumeError(
                f"{job_id} finished successfully; there is nothing left to resume. "
                "Fix: to train more, start a new job with more steps."
            )
        if not job.status.is_terminal:
            raise ResumeError(
                f"{job_id} is still {job.status.value}. Fix: cancel it first (that saves a checkpoint), "
                "then resume it."
            )
        checkpoint = last_checkpoint(job.job_dir)
        if checkpoint is None:
            raise ResumeError(
                f"{job_id} stopped before it saved any checkpoint (it saves one every save_steps = "
                f"{job.config.get('save_steps')} steps, and when cancelled). Fix: start it again as a new job."
            )
        record = self.store.get_dataset(job.dataset_id)
        if record is None:
            raise ResumeError(
                f"the dataset of {job_id} ({job.dataset_id}) was deleted. Fix: start a new job."
            )
        config = RunConfig.parse({**job.config, **(changes or {})})
        before, after = RunConfig.parse(job.config).model_dump(), config.model_dump()
        fixed = sorted(
            k for k in (changes or {}) if before.get(k) != after.get(k) and k not in RESUME_CHANGES
        )
        if fixed:
            raise ResumeError(
                f"{', '.join(fixed)} cannot change when a run resumes: its checkpoint holds adapter weights and "
                "optimizer state made with the old value. Fix: resume without changing it, or start a new run "
                f"with the new settings. What can change: {', '.join(sorted(RESUME_CHANGES))}."
            )
        return self._queue(
            record,
            config,
            job.preset,
            resume_checkpoint=checkpoint,
            resumed_from=job.id,
        )

    # -- estimates (backend.jobs.admission) ------------------------------------------------------------------

    def fit_report(self, dataset: str | None, config: RunConfig) -> tuple[bool, str]:
        """(fits, a few lines for the Train tab): estimated peak memory and time. Torch-free."""
        return self.admission.fit_report(dataset, config)

    def estimate(self, dataset: str | None, config: RunConfig) -> dict[str, Any]:
        """The same estimate as plain data in fixed keys (``Admission.estimate_dict``): what `tunedeck estimate` prints and `train --json` carries."""
        return self.admission.estimate_dict(dataset, config)

    def token_report(self, record: DatasetRecord, config: RunConfig):
        return self.admission.token_report(record, config)

    def cpu_estimate(self, dataset: str | DatasetRecord | None, config: RunConfig) -> CpuEstimate | None:
        return self.admission.cpu_estimate(dataset, config)

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
        self.status = self.store.status_writer(fd)
        self._recover()
        return True

    def release(self) -> None:
        self._stop_standby()
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            os.close(self._lock_file)
            self._lock_file = None
            self.status = None

    @property
    def is_scheduler(self) -> bool:
        return self._lock_file is not None

    def run(self, stop: threading.Event, *, until_idle: bool = False) -> None:
        """Schedule until ``stop`` is set (or, with until_idle, until nothing is queued or running).

        A long-lived scheduler (the web app's) keeps a standby worker while idle; a short-lived one does not."""
        self._standby_wanted = (
            not until_idle and self.worker_command is default_worker_command and _settings().standby_worker
        )
        failures = 0
        try:
            while not stop.is_set():
                try:
                    if self.try_acquire():
                        self.tick()
                        if until_idle and self.idle():
                            return
                    elif until_idle:
                        return  # another process schedules
                    if failures:
                        log.info("scheduling works again after %d failed passes", failures)
                    failures, self.problem = 0, None
                except Exception as exc:  # noqa: BLE001 - a scheduler must outlive any one bad pass
                    # A full disk, a locked or unwritable database, an I/O error: say so, wait, try again. Jobs
                    # stay as they are meanwhile; the next pass that works picks up where this one stopped.
                    failures += 1
                    self.problem = self._describe_problem(exc)
                    log.exception("a scheduling pass failed (%d in a row): %s", failures, self.problem)
                    stop.wait(min(self.poll_s * 2**failures, 30.0))
                    continue
                stop.wait(self.poll_s)
        finally:
            self.release()

    def _describe_problem(self, exc: BaseException) -> str:
        """What stops the scheduler, for the UI: the folder and the fix where we know them."""
        from backend.errors import disk_full_message, explain, is_disk_full

        if is_disk_full(exc):
            return "TuneDeck cannot write to its data directory: " + disk_full_message(self.paths.home)
        return f"TuneDeck cannot schedule jobs right now ({explain(exc)}); it tries again by itself."

    def idle(self) -> bool:
        return not self._running and not self.store.list_jobs((JobStatus.QUEUED, JobStatus.RUNNING))

    def tick(self) -> None:
        assert self.is_scheduler, "only the scheduler may change job status"
        for job in self.store.queued_jobs():
            if job.cancel_requested:
                self.status.set(job.id, JobStatus.CANCELLED, reason="cancelled before it started")
        for run in list(self._running.values()):
            self._watch(run)
        if not self._running:
            queued = self.store.queued_jobs()
            if queued:
                if self._gpu_clear_for(queued[0]):
                    self._start(queued[0])
            elif self._standby_wanted:
                self._keep_standby()

    def _gpu_clear_for(self, job: JobRecord) -> bool:
        """A job that trains on the GPU starts once chat, scoring and export have let go of it (they are asked to;
        the model server unloads its model). One that does not let go within LEASE_GRACE_S is not waited for."""
        device = job.config.get("device", "auto")
        if device not in ("auto", "cuda") or not self.gpu_probe():
            self._clearing_since = None
            return True
        held = Accelerator(self.store).clear_for_training()
        if not held:
            self._clearing_since = None
            return True
        now = time.monotonic()
        if self._clearing_since is None:
            self._clearing_since = now
            log.info("%s waits for %s to let go of the GPU", job.id, ", ".join(x.holder for x in held))
        if now - self._clearing_since > LEASE_GRACE_S:
            log.warning(
                "%s did not let go of the GPU in %.0f s; starting %s anyway",
                held[0].holder,
                LEASE_GRACE_S,
                job.id,
            )
            self._clearing_since = None
            return True
        return False

    # -- internals ----------------------------------------------------------------------------------------------

    def _keep_standby(self) -> None:
        """A worker that has done its imports and waits on stdin for a job directory (see backend.training.worker)."""
        if self._standby is not None and self._standby.poll() is None:
            return
        if self._standby is not None:  # it ended without a job: something is wrong; do not spin on it
            self._standby = None
            self._standby_failures += 1
            self._standby_retry_at = time.monotonic() + 30 * self._standby_failures
            log.warning("the standby worker exited on its own (see logs/standby-worker.log)")
            if self._standby_failures >= 3:
                self._standby_wanted = False  # jobs start fresh workers, as without a standby
            return
        if time.monotonic() < self._standby_retry_at:
            return
        try:
            self._standby = supervisor.start(
                supervisor.python("-m", "backend.training.worker", "--standby"),
                self.paths,
                cwd=self.paths.home,
                log=self.paths.logs / "standby-worker.log",
                stdin=subprocess.PIPE,
            )
        except OSError as exc:
            log.warning("could not start a standby worker: %s", exc)
            self._standby_wanted = False

    def _take_standby(self, job_dir: Path) -> subprocess.Popen | None:
        proc, self._standby = self._standby, None
        if proc is None or proc.poll() is not None or proc.stdin is None:
            return None
        try:
            proc.stdin.write(f"{job_dir}\n".encode())
            proc.stdin.close()
        except OSError:
            return None
        return proc

    def _stop_standby(self) -> None:
        proc, self._standby = self._standby, None
        if proc is not None:
            supervisor.stop(proc, grace_s=10)

    def _start(self, job: JobRecord) -> None:
        job_dir = Path(job.job_dir)
        (job_dir / "result.json").unlink(missing_ok=True)
        if self._standby is not None and job.config.get("num_devices", 1) == 1:
            proc = self._take_standby(job_dir)
            if proc is not None:
                # Watched before the store says so: if that write fails, the next pass retries it (_watch) and
                # never starts the job a second time.
                self._running[job.id] = _Running(job.id, proc.pid, proc, job_dir)
                self.status.set(job.id, JobStatus.RUNNING, pid=proc.pid)
                log.info("started %s in the standby worker (pid %d)", job.id, proc.pid)
                return
        try:  # its own process group: a cancel signals the whole group (accelerate's workers too)
            proc = supervisor.start(
                self.worker_command(job_dir), self.paths, cwd=job_dir, log=job_dir / "worker.log"
            )
        except OSError as exc:
            self.status.set(job.id, JobStatus.FAILED, reason=f"could not start the worker: {exc}")
            return
        self._running[job.id] = _Running(job.id, proc.pid, proc, job_dir)
        self.status.set(job.id, JobStatus.RUNNING, pid=proc.pid)
        log.info("started %s as pid %d", job.id, proc.pid)

    def _watch(self, run: _Running) -> None:
        code = self._exit_code(run)
        job = self.store.get_job(run.job_id)
        if job is not None and job.status is JobStatus.QUEUED:  # the write that said it started had failed
            job = self.status.set(run.job_id, JobStatus.RUNNING, pid=run.pid)
        if code is not None:
            self._finish(run, code)
            return
        if job is not None and run.hung_for is None:
            self._check_alive(run, job)
        if job is None or not job.cancel_requested:
            return
        now = time.monotonic()
        if run.term_sent_at is None:
            log.info("cancelling %s: SIGTERM to process group %d", run.job_id, run.pid)
            supervisor.signal_group(run.pid, signal.SIGTERM)
            run.term_sent_at = now
        elif not run.killed and now - run.term_sent_at > self.kill_after_s:
            log.warning("%s did not stop within %.0f s: SIGKILL", run.job_id, self.kill_after_s)
            supervisor.signal_group(run.pid, signal.SIGKILL)
            run.killed = True

    def _check_alive(self, run: _Running, job: JobRecord) -> None:
        """The watchdog: a worker whose last sign of life (a step, a heartbeat, or its start) is older than
        hang_after_s is stuck (a deadlock, a stalled disk or device call): kill it, so the queue moves on. The job
        ends as failed with that reason when the manager sees the worker gone."""
        progress = self.store.get_progress(run.job_id)
        last = max(progress.updated if progress else 0.0, job.started or 0.0)
        silent = time.time() - last
        if last and silent > self.hang_after_s:
            log.warning(
                "%s: no sign of life for %.0f s, killing its worker (pid %d)", run.job_id, silent, run.pid
            )
            run.hung_for = silent
            supervisor.signal_group(run.pid, signal.SIGKILL)

    def _exit_code(self, run: _Running) -> int | str | None:
        """The exit code (negative: killed by that signal), 'gone' for a re-attached worker that ended, or None."""
        if run.proc is not None:
            return run.proc.poll()
        return None if _alive(run.pid, run.job_dir) else "gone"

    def _finish(self, run: _Running, code: int | str) -> None:
        """Decide and record how the job ended. It stays watched until that is written, so a failed write (a full
        disk) is retried on the next pass instead of leaving the job running for ever."""
        job = self.store.get_job(run.job_id)
        assert job is not None
        result = read_result(run.job_dir)
        status, reason = decide(
            code,
            result,
            cancel_requested=job.cancel_requested,
            killed=run.killed,
            kill_after_s=self.kill_after_s,
        )
        if code == EXIT_DISK_FULL and result is None:
            reason = disk_full_message(self.paths.home)
        if run.hung_for is not None and result is None:
            status, reason = (
                JobStatus.FAILED,
                stopped_responding(run.hung_for, self.store.get_progress(job.id)),
            )
        payload = result.__dict__ if result else {}
        retry = None
        if status is JobStatus.FAILED and result is not None and result.extra.get("out_of_memory"):
            retry = self._oom_retry_plan(job, result)
            if retry is not None:
                reason += retry.note
        self.status.set(run.job_id, status, reason=reason, result=payload)
        self._running.pop(run.job_id, None)
        log.info("%s ended: %s %s", run.job_id, status.value, reason)
        if retry is None:
            return
        # Queued only once the failure is recorded: a retried _finish never queues twice. If the queueing fails
        # (the dataset deleted, or the disk full, since the plan was made) the scheduler goes on with the others.
        try:
            self._queue(
                retry.dataset,
                retry.config,
                job.preset,
                resume_checkpoint=retry.checkpoint,
                retry_of=job.id,
                job_id=retry.job_id,
            )
        except (ConfigError, OSError) as exc:
            log.error("%s: the automatic retry %s could not be queued: %s", run.job_id, retry.job_id, exc)
            return
        log.info("%s: out of GPU memory, retrying as %s", run.job_id, retry.job_id)

    def _start_adapter(self, config: RunConfig, earlier_attempt: str) -> Path | None:
        """The adapter folder a ``continue_from`` job copies to start from: a resumed or retried job takes the copy
        its earlier attempt had (the run it continues may be gone by now), a new job that run's adapter."""
        earlier = self.store.get_job(earlier_attempt) if earlier_attempt else None
        source = Path(earlier.job_dir) / START_ADAPTER if earlier else None
        if source is None or not source.is_dir():
            run = self.store.get_job(config.continue_from)
            source = Path((run.result or {}).get("adapter_dir") or "") if run else None
        return source if source is not None and source.is_dir() else None

    def _oom_retry_plan(self, job: JobRecord, result: RunResult) -> _Retry | None:
        """With oom_retry on: the same job with half the micro-batch and twice the accumulation (the same
        effective batch), from the last checkpoint if there is one."""
        config = RunConfig.parse(job.config)
        smaller = estimate.halved_batch(config)
        if not config.oom_retry or smaller is None:
            return None
        record = self.store.get_dataset(job.dataset_id)
        if record is None or (config.continue_from and self._start_adapter(config, job.id) is None):
            return None  # nothing the retry could start from: the failure says what to change instead
        ckpt = result.extra.get("checkpoint") or ""
        checkpoint = Path(ckpt) if ckpt and Path(ckpt).is_dir() else last_checkpoint(job.job_dir)
        retry_id = new_job_id()
        note = (
            f" Retrying automatically as {retry_id} with batch_size {smaller.batch_size} and grad_accum "
            f"{smaller.grad_accum}" + (f", from step {checkpoint_step(checkpoint)}." if checkpoint else ".")
        )
        return _Retry(retry_id, record, smaller, checkpoint, note)

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


HANG_ENV = (
    "TUNEDECK_HANG_TIMEOUT_S"  # read in backend.settings (default 900 s: far longer than any step we know)
)


def stopped_responding(silent_s: float, progress) -> str:
    at = f" at step {progress.step} of {progress.total_steps}" if progress and progress.total_steps else ""
    doing = f" while {progress.activity}" if progress and progress.activity else ""
    return (
        f"worker stopped responding: no progress for {silent_s:.0f} s{at}{doing}, so TuneDeck stopped it (a "
        "deadlock, or a disk or device call that never returned). Fix: resume it from its last checkpoint; if it "
        f"happens again, see worker.log, or give slow steps more time with {HANG_ENV}."
    )


def _settings():
    """The TUNEDECK_* settings (the app and the CLI refuse to start with a bad one, so this never fails there)."""
    from backend.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError:
        return load_settings({})


def decide(
    code: int | str,
    result: RunResult | None,
    *,
    cancel_requested: bool,
    killed: bool,
    kill_after_s: float = 30,
) -> tuple[JobStatus, str]:
    """The final status of a job, from how its worker ended and what it recorded. Pure: tested on its own."""
    if result is not None and code in (0, 1, "gone"):
        if result.status == "succeeded":
            return JobStatus.SUCCEEDED, ""
        if result.status == "cancelled":
            return JobStatus.CANCELLED, result.reason or "cancelled"
        return JobStatus.FAILED, result.reason or "the worker reported a failure without a reason"
    if killed and cancel_requested:
        return (
            JobStatus.CANCELLED,
            f"cancelled: the worker did not stop within {kill_after_s:g} s and was killed",
        )
    if cancel_requested and code == -signal.SIGTERM:
        # Our cancel's SIGTERM arrived before the worker installed its handler (it was still starting up).
        return JobStatus.CANCELLED, "cancelled while the worker was starting, before it saved anything"
    if code == EXIT_DISK_FULL:
        return JobStatus.FAILED, disk_full_message("TuneDeck's data directory")
    if code == "gone":
        return JobStatus.FAILED, (
            "worker died while TuneDeck was not watching (it was started before a restart and left no result); "
            "see worker.log"
        )
    assert isinstance(code, int)
    if code < 0:
        name = _signal_name(-code)
        hint = " (often the system's out-of-memory killer)" if -code == signal.SIGKILL else ""
        return (
            JobStatus.FAILED,
            f"worker died: signal {-code} ({name}){hint} before writing its result; see worker.log",
        )
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
    proc = supervisor.start(
        supervisor.python("-m", "backend", "manager", "--until-idle"), paths, log=paths.logs / "manager.log"
    )
    # Reaped when it ends (it may end before this command does): no zombie left behind while we wait.
    threading.Thread(target=proc.wait, name="tunedeck-reap-scheduler", daemon=True).start()
    return True


def _alive(pid: int, job_dir: Path) -> bool:
    """Is ``pid`` a live worker for this job dir? (A pid the system gave to another program does not count.)"""
    return supervisor.alive(pid, marker=job_dir)


def _signal_name(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def _yaml(config: RunConfig, preset: str, dataset_name: str, dataset_id: str) -> str:
    import yaml

    head = f"# TuneDeck run config (preset {preset}, dataset {dataset_name} = {dataset_id}).\n"
    return head + yaml.safe_dump(config.model_dump(), sort_keys=False)
