"""The job manager: queueing, one job at a time, cancel, crashes, and surviving a restart.

Workers are ``tests/fake_worker.py`` (no torch): each test says how its worker ends. The scheduler is driven by
calling ``try_acquire()`` and ``tick()`` in a loop until what the test waits for is true (``run_until``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from backend.core.status import JobStatus
from backend.core.store import DatasetRecord, JobRecord, Store
from backend.data.datasets import import_dataset
from backend.jobs.config import ConfigError, RunConfig
from backend.jobs.handoff import JobSpec, RunResult
from backend.jobs.manager import Manager, _alive, decide, queue_positions
from backend.settings import CAPITALS_CSV, Paths
from tests.conftest import add_dataset_record

FAKE_WORKER = Path(__file__).resolve().with_name("fake_worker.py")
FAKE_OOM_WORKER = Path(__file__).resolve().with_name("fake_oom_worker.py")
CONFIG = RunConfig.parse({"base_model": "tiny-offline", "max_steps": 5})
KILL_AFTER_S = 0.5
TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


# -- fixtures and helpers ----------------------------------------------------------------------------------------


@pytest.fixture
def dataset(store: Store, paths: Paths) -> DatasetRecord:
    record, _ = import_dataset(store, paths, CAPITALS_CSV)
    return record


@pytest.fixture
def make_manager(store: Store, paths: Paths, tiny_model: Path):
    """``make_manager(mode)``: a Manager whose workers are fake workers ending as ``mode`` says.

    On teardown every manager lets go of the lock and every worker still alive is killed (its whole process
    group) and reaped, whether or not the test got that far.
    """
    made: list[Manager] = []

    def make(
        mode: str = "succeed",
        *,
        kill_after_s: float = KILL_AFTER_S,
        worker: Path = FAKE_WORKER,
        gpus: list | None = None,
        hang_after_s: float | None = None,
    ) -> Manager:
        manager = Manager(
            store,
            paths,
            worker_command=lambda job_dir: [sys.executable, str(worker), mode, str(job_dir)],
            kill_after_s=kill_after_s,
            poll_s=0.05,
            gpu_probe=lambda: list(gpus or []),
            hang_after_s=hang_after_s,
        )
        made.append(manager)
        return manager

    yield make

    for manager in made:
        manager.release()
    for job in store.list_jobs():
        if job.pid and _alive(job.pid, Path(job.job_dir)):  # only our own workers, never a reused pid
            try:
                os.killpg(job.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for manager in made:
        for run in manager._running.values():
            if run.proc is not None:
                run.proc.wait(timeout=10)


def run_until(manager: Manager, predicate: Callable[[], bool], timeout: float = 15.0, on_tick=None) -> None:
    """Act as the scheduler (acquire + tick) until ``predicate()`` is true; fail with the jobs' state if it never is."""
    deadline = time.monotonic() + timeout
    while True:
        assert manager.try_acquire(), "another scheduler holds the lock"
        manager.tick()
        if on_tick is not None:
            on_tick()
        if predicate():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"not done after {timeout} s:\n{describe(manager.store)}")
        time.sleep(manager.poll_s)


def describe(store: Store) -> str:
    lines = []
    for job in store.list_jobs():
        log = Path(job.job_dir) / "worker.log"
        tail = log.read_text(errors="replace")[-500:] if log.exists() else "(no worker.log)"
        lines.append(f"{job.id} {job.status.value} pid={job.pid} reason={job.reason!r}\n{tail}")
    return "\n".join(lines) or "(no jobs)"


def job(store: Store, job_id: str) -> JobRecord:
    record = store.get_job(job_id)
    assert record is not None
    return record


def has_status(store: Store, job_id: str, *statuses: JobStatus) -> Callable[[], bool]:
    return lambda: job(store, job_id).status in statuses


def worker_ready(store: Store, job_id: str) -> Callable[[], bool]:
    """The worker is running and has installed its signal handlers (it wrote ``ready``)."""
    return lambda: (
        job(store, job_id).status is JobStatus.RUNNING
        and (Path(job(store, job_id).job_dir) / "ready").exists()
    )


def run_to_end(manager: Manager, job_id: str, timeout: float = 15.0) -> JobRecord:
    run_until(manager, has_status(manager.store, job_id, *TERMINAL), timeout)
    return job(manager.store, job_id)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- submitting ------------------------------------------------------------------------------------------------------


def test_submit_queues_the_job_with_its_files(make_manager, store, paths, dataset):
    manager = make_manager()
    queued = manager.submit(dataset.name, CONFIG, preset="tiny-offline")
    assert queued.status is JobStatus.QUEUED
    assert queued.dataset_id == dataset.id
    assert queued.config == CONFIG.model_dump()
    job_dir = Path(queued.job_dir)
    assert job_dir.parent == paths.jobs
    spec = JobSpec.load(job_dir)
    assert (spec.job_id, spec.dataset_id, spec.dataset_path) == (queued.id, dataset.id, dataset.path)
    assert spec.home == str(paths.home)
    config_yaml = (job_dir / "config.yaml").read_text()
    assert config_yaml.startswith(
        f"# TuneDeck run config (preset tiny-offline, dataset capitals = {dataset.id})."
    )
    assert "max_steps: 5" in config_yaml
    assert queue_positions(store) == {queued.id: 1}
    assert not manager.is_scheduler  # submitting does not make this process the scheduler


def test_submit_reports_every_problem_and_creates_nothing(make_manager, store, paths, dataset):
    manager = make_manager()
    config = RunConfig.parse({"base_model": "nobody-here/not-a-cached-model"})
    with pytest.raises(ConfigError) as info:
        manager.submit("capitols", config)
    assert [p.field for p in info.value.problems] == ["dataset", "base_model"]
    text = str(info.value)
    assert "dataset = 'capitols': there is no dataset with this name or id" in text
    assert "existing: capitals" in text
    assert "base_model = 'nobody-here/not-a-cached-model'" in text and "HF_HUB_OFFLINE=1" in text
    assert text.count("Fix:") == 2
    assert store.list_jobs() == []
    assert list(paths.jobs.iterdir()) == []


def test_a_dataset_deleted_while_its_job_is_queued_leaves_no_job_behind(
    make_manager, store, paths, dataset, monkeypatch
):
    """The dataset exists when submit checks it, and is gone by the time the job is inserted (another window
    deleted it in between): the insert refuses, and neither a job record nor a job folder is left."""
    manager = make_manager()
    real_add_job = store.add_job

    def delete_then_add(*args, **kwargs):
        assert store.delete_dataset(dataset.id, unless_used_by=(JobStatus.QUEUED, JobStatus.RUNNING)) == []
        return real_add_job(*args, **kwargs)

    monkeypatch.setattr(store, "add_job", delete_then_add)
    with pytest.raises(ConfigError) as info:
        manager.submit(dataset.name, CONFIG)
    assert "was deleted while the job was being queued" in str(info.value)
    assert "import it again" in str(info.value)
    assert store.list_jobs() == []
    assert list(paths.jobs.iterdir()) == []


def test_submit_refuses_a_max_length_shorter_than_the_longest_prompt(make_manager, store, paths, csv_file):
    long_prompt = " ".join(["Please summarize the weather report for the meeting on Friday morning."] * 12)
    f = csv_file(f"question,answer\nHi?,Hello.\nHow are you?,Fine.\n{long_prompt},Sunny.\nBye?,Bye.\n")
    record, _ = import_dataset(store, paths, f, name="long")
    manager = make_manager()
    with pytest.raises(ConfigError) as info:
        manager.submit("long", CONFIG.updated(max_length=64))
    assert [p.field for p in info.value.problems] == ["max_length"]
    text = str(info.value)
    assert "max_length = 64: the longest prompt (row 4 of the file)" in text
    assert "Fix: set max_length to at least" in text
    assert store.list_jobs() == []
    assert list(paths.jobs.iterdir()) == []
    # With room for it, the same job is accepted.
    assert manager.submit(record.id, CONFIG.updated(max_length=1024)).status is JobStatus.QUEUED


# -- how a run ends ------------------------------------------------------------------------------------------------


def test_worker_that_succeeds(make_manager, store, dataset):
    manager = make_manager("succeed")
    queued = manager.submit(dataset.name, CONFIG)
    done = run_to_end(manager, queued.id)
    assert done.status is JobStatus.SUCCEEDED
    assert done.reason == ""
    assert done.result["status"] == "succeeded"
    assert (done.result["steps"], done.result["final_loss"]) == (5, 0.25)
    assert done.pid and done.started and done.finished and done.finished >= done.started
    assert "fake worker succeed" in (Path(done.job_dir) / "worker.log").read_text()
    assert manager.idle()


def test_worker_that_reports_a_failure(make_manager, store, dataset):
    manager = make_manager("fail")
    done = run_to_end(manager, manager.submit(dataset.name, CONFIG).id)
    assert done.status is JobStatus.FAILED
    assert done.reason == "boom: bad row 7"
    assert done.result["status"] == "failed"


def test_worker_that_exits_without_a_result(make_manager, store, dataset):
    manager = make_manager("crash")
    done = run_to_end(manager, manager.submit(dataset.name, CONFIG).id)
    assert done.status is JobStatus.FAILED
    assert "worker exited with code 3 without writing its result" in done.reason
    assert "worker.log" in done.reason
    assert done.result == {}


def test_worker_killed_by_sigkill_names_the_signal(make_manager, store, dataset):
    manager = make_manager("sigkill_self")
    done = run_to_end(manager, manager.submit(dataset.name, CONFIG).id)
    assert done.status is JobStatus.FAILED
    assert "signal 9" in done.reason and "SIGKILL" in done.reason
    assert "out-of-memory" in done.reason  # the usual culprit, named for the person


def test_external_kill_9_of_a_running_worker(make_manager, store, dataset):
    manager = make_manager("hang")
    job_id = manager.submit(dataset.name, CONFIG).id
    run_until(manager, worker_ready(store, job_id))
    os.kill(job(store, job_id).pid, signal.SIGKILL)
    done = run_to_end(manager, job_id)
    assert done.status is JobStatus.FAILED
    assert "signal 9 (SIGKILL)" in done.reason


# -- cancelling ------------------------------------------------------------------------------------------------------


def test_cancel_a_running_worker(make_manager, store, dataset):
    manager = make_manager("hang")
    job_id = manager.submit(dataset.name, CONFIG).id
    run_until(manager, worker_ready(store, job_id))
    asked = manager.cancel(job_id)
    assert asked.cancel_requested
    assert asked.status is JobStatus.RUNNING  # the scheduler acts on the request
    done = run_to_end(manager, job_id)
    assert done.status is JobStatus.CANCELLED
    assert done.reason == "stopped at step 2 on request"  # what the worker recorded
    assert done.result["steps"] == 2
    assert not _alive(done.pid, Path(done.job_dir))


def test_cancel_a_worker_that_ignores_sigterm_escalates_to_sigkill(make_manager, store, dataset):
    manager = make_manager("stubborn", kill_after_s=KILL_AFTER_S)
    job_id = manager.submit(dataset.name, CONFIG).id
    run_until(manager, worker_ready(store, job_id))
    asked_at = time.monotonic()
    manager.cancel(job_id)
    done = run_to_end(manager, job_id)
    assert time.monotonic() - asked_at >= KILL_AFTER_S
    assert done.status is JobStatus.CANCELLED
    assert "did not stop within 0.5 s and was killed" in done.reason
    assert not _alive(done.pid, Path(done.job_dir))


def test_cancel_a_queued_job_never_starts_it(make_manager, store, dataset):
    manager = make_manager("hang")
    first = manager.submit(dataset.name, CONFIG).id
    second = manager.submit(dataset.name, CONFIG).id
    run_until(manager, worker_ready(store, first))
    assert job(store, second).status is JobStatus.QUEUED
    manager.cancel(second)
    run_until(manager, has_status(store, second, JobStatus.CANCELLED))
    cancelled = job(store, second)
    assert cancelled.reason == "cancelled before it started"
    assert (cancelled.pid, cancelled.started) == (None, None)
    assert not (Path(cancelled.job_dir) / "worker.log").exists()
    assert job(store, first).status is JobStatus.RUNNING  # the running one is not touched
    manager.cancel(first)
    assert run_to_end(manager, first).status is JobStatus.CANCELLED
    assert job(store, second).started is None


def test_cancel_before_any_scheduler_ran(make_manager, store, dataset):
    manager = make_manager("succeed")
    job_id = manager.submit(dataset.name, CONFIG).id
    manager.cancel(job_id)
    assert job(store, job_id).status is JobStatus.QUEUED
    done = run_to_end(manager, job_id)
    assert (done.status, done.reason, done.pid) == (JobStatus.CANCELLED, "cancelled before it started", None)


def test_cancel_of_a_finished_job_changes_nothing(make_manager, store, dataset):
    manager = make_manager("succeed")
    job_id = manager.submit(dataset.name, CONFIG).id
    run_to_end(manager, job_id)
    after = manager.cancel(job_id)
    assert (after.status, after.cancel_requested) == (JobStatus.SUCCEEDED, False)
    with pytest.raises(KeyError, match="no job 'run-nope'"):
        manager.cancel("run-nope")


# -- the queue -------------------------------------------------------------------------------------------------------


def test_jobs_run_one_at_a_time_in_submission_order(make_manager, store, dataset):
    manager = make_manager("succeed")
    ids = [manager.submit(dataset.name, CONFIG).id for _ in range(3)]
    assert queue_positions(store) == {ids[0]: 1, ids[1]: 2, ids[2]: 3}
    assert manager.try_acquire()
    manager.tick()
    assert job(store, ids[0]).status is JobStatus.RUNNING
    assert queue_positions(store) == {ids[1]: 1, ids[2]: 2}

    seen_running = [ids[0]]

    def check_one_running() -> None:
        running = store.list_jobs((JobStatus.RUNNING,))
        assert len(running) <= 1, [j.id for j in running]
        if running and running[0].id not in seen_running:
            seen_running.append(running[0].id)

    run_until(manager, manager.idle, timeout=20, on_tick=check_one_running)
    done = [job(store, i) for i in ids]
    assert [j.status for j in done] == [JobStatus.SUCCEEDED] * 3
    assert seen_running == ids
    assert [j.id for j in sorted(done, key=lambda j: j.started)] == ids
    assert done[0].finished <= done[1].started and done[1].finished <= done[2].started


def test_only_one_scheduler_at_a_time(make_manager, paths):
    first, second = make_manager(), make_manager()
    assert first.try_acquire()
    assert first.is_scheduler
    assert paths.manager_lock.read_text().strip() == str(os.getpid())
    assert not second.try_acquire()
    assert not second.is_scheduler
    with pytest.raises(AssertionError, match="only the scheduler"):
        second.tick()
    first.release()
    assert not first.is_scheduler
    assert second.try_acquire()
    assert not first.try_acquire()


# -- restarts ----------------------------------------------------------------------------------------------------------


def test_new_scheduler_reattaches_to_a_running_worker_and_cancels_it(make_manager, store, dataset):
    before = make_manager("hang")
    job_id = before.submit(dataset.name, CONFIG).id
    run_until(before, worker_ready(store, job_id))
    pid = job(store, job_id).pid
    before.release()  # the app stops; its worker (own process group) keeps running

    after = make_manager("succeed")
    assert after.try_acquire()
    adopted = job(store, job_id)
    assert (adopted.status, adopted.pid) == (JobStatus.RUNNING, pid)
    assert _alive(pid, Path(adopted.job_dir))
    assert not after.idle()
    after.tick()  # watching it does not start another job or change this one
    assert job(store, job_id).status is JobStatus.RUNNING

    after.cancel(job_id)
    done = run_to_end(after, job_id)
    assert done.status is JobStatus.CANCELLED
    assert done.reason == "stopped at step 2 on request"  # decided from result.json
    assert not _alive(pid, Path(done.job_dir))


def test_new_scheduler_sees_a_reattached_worker_finish(make_manager, store, dataset):
    before = make_manager("slow_succeed")
    job_id = before.submit(dataset.name, CONFIG).id
    run_until(before, has_status(store, job_id, JobStatus.RUNNING))
    pid = job(store, job_id).pid
    before.release()

    after = make_manager("fail")
    assert after.try_acquire()
    assert job(store, job_id).pid == pid
    assert (
        job(store, job_id).status is JobStatus.RUNNING
    )  # still working: the new scheduler re-attached to it
    (Path(job(store, job_id).job_dir) / "finish").touch()
    done = run_to_end(after, job_id)
    assert done.status is JobStatus.SUCCEEDED
    assert done.result["final_loss"] == 0.25


def test_worker_that_finished_while_nobody_watched(make_manager, store, dataset):
    before = make_manager("succeed")
    job_id = before.submit(dataset.name, CONFIG).id
    assert before.try_acquire()
    before.tick()
    running = job(store, job_id)
    assert running.status is JobStatus.RUNNING
    before.release()
    wait_for(lambda: not _alive(running.pid, Path(running.job_dir)))

    after = make_manager("fail")
    assert after.try_acquire()  # recovery happens on taking the lock
    done = job(store, job_id)
    assert done.status is JobStatus.SUCCEEDED
    assert done.result["steps"] == 5


@pytest.mark.parametrize("whose_pid", ["dead", "reused"])
def test_running_job_whose_worker_is_gone_is_failed_on_restart(make_manager, store, dataset, whose_pid):
    manager = make_manager()
    job_id = manager.submit(dataset.name, CONFIG).id
    if whose_pid == "dead":
        pid = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        pid = int(pid.stdout)
    else:
        pid = os.getpid()  # alive, but not a worker for this job: the pid was reused
    assert manager.try_acquire()
    manager.status.set(job_id, JobStatus.RUNNING, pid=pid)  # as a scheduler that died would have left it
    manager.release()

    assert manager.try_acquire()
    done = job(store, job_id)
    assert done.status is JobStatus.FAILED
    assert "worker died while TuneDeck was not watching" in done.reason
    assert "left no result" in done.reason
    assert manager.idle()


# -- decide: the final status from how the worker ended ------------------------------------------------------------


def _result(status: str, reason: str = "") -> RunResult:
    return RunResult(status=status, reason=reason)


@pytest.mark.parametrize(
    ("code", "result", "cancel_requested", "killed", "status", "reason"),
    [
        (0, _result("succeeded"), False, False, JobStatus.SUCCEEDED, ""),
        ("gone", _result("succeeded"), False, False, JobStatus.SUCCEEDED, ""),
        (0, _result("cancelled", "stopped at step 3"), True, False, JobStatus.CANCELLED, "stopped at step 3"),
        (0, _result("cancelled"), True, False, JobStatus.CANCELLED, "cancelled"),
        (1, _result("failed", "out of GPU memory"), False, False, JobStatus.FAILED, "out of GPU memory"),
        (
            1,
            _result("failed"),
            False,
            False,
            JobStatus.FAILED,
            "the worker reported a failure without a reason",
        ),
        ("gone", _result("failed", "bad row"), False, False, JobStatus.FAILED, "bad row"),
    ],
)
def test_decide_trusts_the_workers_result(code, result, cancel_requested, killed, status, reason):
    assert decide(code, result, cancel_requested=cancel_requested, killed=killed) == (status, reason)


def test_decide_cancel_that_needed_sigkill():
    status, reason = decide(-9, None, cancel_requested=True, killed=True, kill_after_s=30)
    assert status is JobStatus.CANCELLED
    assert reason == "cancelled: the worker did not stop within 30 s and was killed"
    # Also when a re-attached worker was killed (its exit code cannot be read).
    assert decide("gone", None, cancel_requested=True, killed=True)[0] is JobStatus.CANCELLED


def test_decide_cancel_that_arrived_while_the_worker_was_starting():
    status, reason = decide(-signal.SIGTERM, None, cancel_requested=True, killed=False)
    assert status is JobStatus.CANCELLED
    assert "starting" in reason


def test_decide_sigterm_nobody_asked_for_is_a_failure():
    status, reason = decide(-signal.SIGTERM, None, cancel_requested=False, killed=False)
    assert status is JobStatus.FAILED
    assert "signal 15 (SIGTERM)" in reason
    assert "out-of-memory" not in reason


def test_decide_worker_gone_without_result():
    status, reason = decide("gone", None, cancel_requested=False, killed=False)
    assert status is JobStatus.FAILED
    assert reason.startswith("worker died while TuneDeck was not watching")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            -9,
            "worker died: signal 9 (SIGKILL) (often the system's out-of-memory killer) before writing its result",
        ),
        (-11, "worker died: signal 11 (SIGSEGV) before writing its result"),
        (-99, "worker died: signal 99 (signal 99) before writing its result"),
        (3, "worker exited with code 3 without writing its result"),
        (0, "worker exited with code 0 without writing its result"),
    ],
)
def test_decide_worker_ended_without_result(code, expected):
    status, reason = decide(code, None, cancel_requested=False, killed=False)
    assert status is JobStatus.FAILED
    assert reason == f"{expected}; see worker.log"


def test_decide_a_result_does_not_hide_a_crash_after_it():
    # Killed by a signal after writing "succeeded" (e.g. while exiting): the exit says something went wrong.
    status, reason = decide(-9, _result("succeeded"), cancel_requested=False, killed=False)
    assert status is JobStatus.FAILED
    assert "signal 9" in reason


# -- resuming ----------------------------------------------------------------------------------------------------------


def finished_with_checkpoint(
    manager: Manager, store: Store, dataset: DatasetRecord, config: RunConfig = CONFIG, step: int = 3
) -> JobRecord:
    """A job that crashed after writing a checkpoint at ``step``, with a loss curve up to step 5."""
    from tests.fake_oom_worker import write_checkpoint

    queued = manager.submit(dataset.name, config)
    done = run_to_end(manager, queued.id)
    write_checkpoint(Path(done.job_dir), step)
    store.add_metrics(done.id, 1, {"loss": 3.0})
    for s in range(2, 6):
        store.add_metrics(done.id, s, {"loss": 3.0 - s / 10, "num_tokens": 100.0 * s})
    return job(store, done.id)


def test_resume_queues_a_new_job_that_continues_from_the_last_checkpoint(make_manager, store, dataset):
    manager = make_manager("crash")
    crashed = finished_with_checkpoint(manager, store, dataset)
    assert crashed.status is JobStatus.FAILED
    resumed = manager.resume(crashed.id)
    assert resumed.status is JobStatus.QUEUED and resumed.id != crashed.id
    assert resumed.resumed_from == crashed.id and resumed.config == crashed.config
    spec = JobSpec.load(resumed.job_dir)
    copied = Path(spec.resume_from)
    assert copied == Path(resumed.job_dir) / "checkpoints" / "checkpoint-3"  # a copy, in the new job's folder
    assert (copied / "adapter_model.safetensors").read_bytes() == b"fake"
    # The new job's chart starts with the earlier points up to the checkpoint; the later ones are trained again.
    assert [s for s, _, _ in store.metrics(resumed.id, "loss")] == [1, 2, 3]
    assert store.metrics(resumed.id, "num_tokens")[-1] == (3, "num_tokens", 300.0)
    assert job(store, crashed.id).status is JobStatus.FAILED  # the stopped run stays as it ended


def test_resume_can_change_settings_such_as_the_number_of_steps(make_manager, store, dataset):
    from backend.jobs.manager import ResumeError

    manager = make_manager("crash")
    crashed = finished_with_checkpoint(manager, store, dataset)
    resumed = manager.resume(crashed.id, {"max_steps": 50})
    assert resumed.config["max_steps"] == 50
    # What the checkpoint was made with cannot change: the resumed job would only fail loading it.
    jobs_before = len(store.list_jobs())
    with pytest.raises(ResumeError, match=r"lora_r, optimizer cannot change when a run resumes.*Fix: resume"):
        manager.resume(crashed.id, {"lora_r": 32, "optimizer": "adamw_torch", "max_steps": 60})
    assert len(store.list_jobs()) == jobs_before
    assert (
        manager.resume(crashed.id, {"lora_r": CONFIG.lora_r}).config["lora_r"] == CONFIG.lora_r
    )  # unchanged


def test_resume_refuses_what_cannot_be_resumed(make_manager, store, dataset):
    from backend.jobs.manager import ResumeError

    manager = make_manager("succeed")
    done = run_to_end(manager, manager.submit(dataset.name, CONFIG).id)
    with pytest.raises(ResumeError, match="finished successfully; there is nothing left to resume"):
        manager.resume(done.id)
    manager.release()
    crasher = make_manager("crash")
    crashed = run_to_end(crasher, crasher.submit(dataset.name, CONFIG).id)
    with pytest.raises(
        ResumeError, match=r"stopped before it saved any checkpoint .*save_steps = 100.*Fix: start"
    ):
        manager.resume(crashed.id)
    queued = manager.submit(dataset.name, CONFIG)
    with pytest.raises(ResumeError, match="is still queued. Fix: cancel it first"):
        manager.resume(queued.id)
    with pytest.raises(ResumeError, match="no job 'run-nope'"):
        manager.resume("run-nope")


# -- out of GPU memory -------------------------------------------------------------------------------------------------


def test_out_of_memory_with_oom_retry_queues_a_smaller_batch_from_the_checkpoint(
    make_manager, store, dataset
):
    manager = make_manager("oom", worker=FAKE_OOM_WORKER)
    config = CONFIG.updated(batch_size=8, grad_accum=1, oom_retry=True)
    first = manager.submit(dataset.name, config).id
    run_until(manager, manager.idle, timeout=30)
    jobs = list(reversed(store.list_jobs()))  # oldest first: the first run and its retries
    assert [j.status for j in jobs] == [JobStatus.FAILED, JobStatus.FAILED, JobStatus.SUCCEEDED]
    assert [(j.config["batch_size"], j.config["grad_accum"]) for j in jobs] == [(8, 1), (4, 2), (2, 4)]
    assert jobs[0].id == first and jobs[1].retry_of == first and jobs[2].retry_of == jobs[1].id
    assert jobs[0].reason.startswith("out of GPU memory at step 5 of 10.")
    assert (
        f"Retrying automatically as {jobs[1].id} with batch_size 4 and grad_accum 2, from step 3."
        in jobs[0].reason
    )
    # Each retry started from the checkpoint of the run it retries.
    assert jobs[2].result["extra"]["resume_from"].endswith("checkpoint-3")


def test_a_preference_run_retried_after_out_of_memory_keeps_the_adapter_it_started_from(
    make_manager, store, paths, dataset, csv_file
):
    """DPO continuing an SFT run runs out of memory twice: each retry starts from the checkpoint, with the copy of the
    SFT adapter the first attempt took, even after the SFT run's own adapter is gone."""
    import shutil

    manager = make_manager("oom", worker=FAKE_OOM_WORKER)
    sft = run_to_end(manager, manager.submit(dataset.name, CONFIG.updated(batch_size=2)).id)
    assert sft.status is JobStatus.SUCCEEDED
    rows = "prompt,chosen,rejected\n" + "".join(f"q{i},a full answer {i},no\n" for i in range(8))
    pairs, _ = import_dataset(store, paths, csv_file(rows, "pairs.csv"), name="pairs")
    config = CONFIG.updated(objective="dpo", continue_from=sft.id, batch_size=8, grad_accum=1, oom_retry=True)
    first = manager.submit(pairs.name, config).id
    shutil.rmtree(sft.result["adapter_dir"])  # the person deletes the SFT run's files while the DPO run waits
    run_until(manager, manager.idle, timeout=30)
    attempts = [j for j in reversed(store.list_jobs()) if j.dataset_id == pairs.id]
    assert [j.status for j in attempts] == [JobStatus.FAILED, JobStatus.FAILED, JobStatus.SUCCEEDED]
    assert attempts[0].id == first and all(j.config["continue_from"] == sft.id for j in attempts)
    assert [j.config["objective"] for j in attempts] == ["dpo"] * 3
    done = attempts[-1].result["extra"]
    assert done["start_adapter"] and done["resume_from"].endswith("checkpoint-3")
    assert (done["batch_size"], done["grad_accum"]) == (2, 4)


def test_a_retry_that_cannot_be_queued_does_not_stop_the_scheduler(make_manager, store, dataset, monkeypatch):
    """The dataset is deleted (or the disk fills) between the out-of-memory failure and its retry's queueing: the
    failure stays recorded and the jobs queued behind it still run."""
    manager = make_manager("oom", worker=FAKE_OOM_WORKER)
    first = manager.submit(dataset.name, CONFIG.updated(batch_size=8, grad_accum=1, oom_retry=True)).id
    behind = manager.submit(dataset.name, CONFIG.updated(batch_size=2)).id
    queue = manager._queue

    def queue_but_not_retries(*args, **kw):
        if kw.get("retry_of"):
            raise OSError(28, "No space left on device")
        return queue(*args, **kw)

    monkeypatch.setattr(manager, "_queue", queue_but_not_retries)
    run_until(manager, manager.idle, timeout=30)
    assert job(store, first).status is JobStatus.FAILED and job(store, behind).status is JobStatus.SUCCEEDED
    assert len(store.list_jobs()) == 2  # no half-made retry


def test_out_of_memory_without_oom_retry_just_fails(make_manager, store, dataset):
    manager = make_manager("oom", worker=FAKE_OOM_WORKER)
    done = run_to_end(manager, manager.submit(dataset.name, CONFIG.updated(batch_size=8)).id)
    assert done.status is JobStatus.FAILED and "Retrying" not in done.reason
    assert len(store.list_jobs()) == 1


# -- GPU memory before queueing ----------------------------------------------------------------------------------------


def big_model(tmp_path: Path) -> str:
    """A local model folder with the config.json of Llama-3.1-8B (no weights: the check reads only the shape)."""
    import json

    folder = tmp_path / "llama-8b-shape"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "hidden_size": 4096,
                "num_hidden_layers": 32,
                "num_attention_heads": 32,
                "num_key_value_heads": 8,
                "intermediate_size": 14336,
                "vocab_size": 128256,
                "tie_word_embeddings": False,
            }
        )
    )
    return str(folder)


def test_submit_refuses_a_job_that_will_not_fit_the_gpu_with_changes_that_would(
    make_manager, store, paths, dataset, tmp_path
):
    from backend.models.devices import Gpu

    t4 = Gpu(0, "Tesla T4", total_gb=15.0, used_gb=0.3)
    manager = make_manager(gpus=[t4])
    too_big = CONFIG.updated(
        base_model=big_model(tmp_path),
        method="lora",
        batch_size=8,
        max_length=2048,
        gradient_checkpointing=False,
    )
    with pytest.raises(ConfigError) as info:
        manager.submit(dataset.name, too_big)
    (problem,) = info.value.problems
    text = str(info.value)
    assert problem.field == "memory"
    assert "this job needs about" in text and "Tesla T4 has 14.7 GB free" in text
    assert "Fix: " in text and ("use method qlora" in text or "gradient_checkpointing" in text)
    assert store.list_jobs() == []
    # The suggested change fits and is accepted.
    fits = too_big.updated(method="qlora", gradient_checkpointing=True, batch_size=2, grad_accum=4)
    assert manager.submit(dataset.name, fits).status is JobStatus.QUEUED
    # Training on the CPU is never refused for GPU memory.
    assert manager.submit(dataset.name, too_big.updated(device="cpu")).status is JobStatus.QUEUED


def test_fit_report_shows_memory_and_time_for_the_train_tab(make_manager, dataset, tmp_path, tiny_model):
    import shutil

    from backend.models.devices import Gpu

    model = big_model(tmp_path)
    manager = make_manager(gpus=[Gpu(0, "NVIDIA A100-SXM4-80GB", total_gb=80.0, used_gb=1.0)])
    config = CONFIG.updated(base_model=model, method="qlora", max_length=2048, gradient_checkpointing=True)
    fits, text = manager.fit_report(dataset.name, config)
    assert fits and "Estimated peak GPU memory" in text and "A100" in text
    assert "steps" not in text  # no tokenizer here: no token counts, so no time estimate
    # With its tokenizer and chat template, the dataset's real lengths (short questions, counted exactly as they
    # will be trained) replace max_length, and the time shows.
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny_model / name).is_file():
            shutil.copy(tiny_model / name, model)
    fits, shorter = manager.fit_report(dataset.name, config)
    need = [float(t.split(" GB")[0]) for t in (text.split("memory ")[1], shorter.split("memory ")[1])]
    assert need[1] < need[0]
    assert "5 steps" in shorter and "32 examples" in shorter
    cpu_manager = make_manager(gpus=[])
    fits, text = cpu_manager.fit_report(dataset.name, CONFIG)
    assert fits and text.startswith("No NVIDIA GPU here: it will train on the CPU")
    fits, text = cpu_manager.fit_report(None, CONFIG.updated(base_model="someone/not-here"))
    assert fits and "No estimate" in text


def test_submit_refuses_a_cpu_job_that_will_not_fit_in_memory_with_changes_that_would(
    make_manager, store, dataset, tmp_path, tiny_model, monkeypatch
):
    """No GPU: the job trains on the CPU, and the estimate of its peak memory is checked against free RAM."""
    import shutil

    from backend.jobs import estimate
    from backend.models import devices as hardware

    model = big_model(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny_model / name).is_file():
            shutil.copy(tiny_model / name, model)
    manager = make_manager(gpus=[])
    big = CONFIG.updated(base_model=model, batch_size=64, grad_accum=1, gradient_checkpointing=False)
    cpu = manager.cpu_estimate(dataset.name, big)
    assert cpu is not None and cpu.run.ram_gb > 16  # 8B parameters in 16-bit, at least
    halved = big.updated(batch_size=32, grad_accum=2)
    need_halved = estimate.cpu_memory_gb(
        estimate.model_shape(model, manager.paths),
        halved,
        seq_len=cpu.longest,
        bf16=cpu.bf16,
        mean_len=cpu.tokens_per_epoch / cpu.train_rows,
    )
    assert need_halved < cpu.run.ram_gb
    monkeypatch.setattr(hardware, "ram_available_gb", lambda pids=None: (cpu.run.ram_gb + need_halved) / 2)
    with pytest.raises(ConfigError) as info:
        manager.submit(dataset.name, big)
    (problem,) = info.value.problems
    assert problem.field == "memory"
    assert re.search(
        r"needs about [\d.]+ GB of memory on the CPU, and this machine has [\d.]+ GB free", str(problem)
    )
    assert "halve the batch (batch_size 32) and double gradient accumulation (grad_accum 2)" in str(problem)
    assert store.list_jobs() == []
    fits, text = manager.fit_report(dataset.name, big)
    assert not fits and "Will not fit" in text
    assert manager.submit(dataset.name, halved).status is JobStatus.QUEUED


# -- the watchdog -----------------------------------------------------------------------------------------------------


def test_a_worker_that_stops_giving_signs_of_life_is_failed_and_killed_and_the_queue_moves_on(
    make_manager, store, dataset
):
    manager = make_manager("hang", hang_after_s=1.0)
    first = manager.submit(dataset.name, CONFIG).id
    second = manager.submit(dataset.name, CONFIG).id
    manager.worker_command = lambda job_dir: [
        sys.executable,
        str(FAKE_WORKER),
        "hang" if job_dir.name == first else "succeed",  # the first never beats; the next one is fine
        str(job_dir),
    ]
    run_until(manager, has_status(store, first, JobStatus.RUNNING))
    pid = job(store, first).pid
    done = run_to_end(manager, first)
    assert done.status is JobStatus.FAILED
    assert re.match(r"worker stopped responding: no progress for \d+ s", done.reason), done.reason
    assert "resume it from its last checkpoint" in done.reason
    assert not _alive(pid, Path(done.job_dir))
    assert run_to_end(manager, second).status is JobStatus.SUCCEEDED


def test_the_heartbeat_beats_during_a_long_phase_and_shows_it(store):
    from backend.training.recipe import Heartbeat

    add_dataset_record(store)
    store.add_job("run-beat", "ds-1", "test", {}, "/tmp/run-beat")
    beat = Heartbeat(store, "run-beat", every_s=0.05)
    with beat.during("Loading the model"):
        first = store.get_progress("run-beat").updated
        time.sleep(0.5)
        later = store.get_progress("run-beat")
    assert later.updated > first and later.activity == "loading the model"


# -- one owner of the accelerator ------------------------------------------------------------------------------------


def test_a_queued_gpu_job_asks_chat_to_let_go_and_starts_once_it_has(make_manager, store, dataset):
    from backend.jobs.accelerator import Accelerator
    from backend.models.devices import Gpu

    manager = make_manager(gpus=[Gpu(0, "NVIDIA A100-SXM4-80GB", total_gb=80.0, used_gb=70.0)])
    chat = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"]
    )  # the model server's process
    try:
        store.put_lease("chat", 9.0, chat.pid)  # a chat model loaded on the GPU
        assert (
            manager.fit_report(dataset.name, CONFIG)[1].find("19.0 GB") >= 0
        )  # its memory counts as coming back
        job_id = manager.submit(dataset.name, CONFIG).id
        assert manager.try_acquire()
        for _ in range(3):
            manager.tick()
        assert job(store, job_id).status is JobStatus.QUEUED  # waiting for chat to let go
        assert Accelerator(store).asked_to_release("chat")
        store.drop_lease("chat")  # the model server unloads its model and lets go
        run_until(manager, has_status(store, job_id, JobStatus.RUNNING, JobStatus.SUCCEEDED))
    finally:
        chat.kill()
        chat.wait()


def test_a_lease_of_a_process_that_died_is_dropped(store):
    from backend.jobs.accelerator import Accelerator

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    store.put_lease("score:1", 2.0, int(gone.stdout))
    assert Accelerator(store).leases() == [] and store.list_leases() == []


def test_scoring_waits_its_turn_while_a_job_trains_and_says_why(store, status):
    import threading

    from backend.jobs.accelerator import Accelerator

    add_dataset_record(store)
    store.add_job("run-a", "ds-1", "test", {}, "/tmp/run-a")
    status.set("run-a", JobStatus.RUNNING, pid=1)
    said: list[str] = []
    got = threading.Event()
    waiter = threading.Thread(
        target=lambda: (
            Accelerator(store).wait_for_turn("score:7", 0.0, notify=said.append, poll_s=0.05) and got.set()
        )
    )
    waiter.start()
    time.sleep(0.3)
    assert not got.is_set() and said and "The GPU is busy training run-a" in said[0]
    assert "Scoring waits and starts by itself" in said[0]
    status.set("run-a", JobStatus.SUCCEEDED)
    waiter.join(timeout=10)
    assert got.is_set() and [x.holder for x in store.list_leases()] == ["score:7"]


def test_one_row_far_over_max_length_keeps_the_cpu_estimate_within_the_fully_padded_batch(
    make_manager, store, paths, csv_file
):
    """Issue 21: one pasted 3,000-word row among short answers, cut at max_length. No batch can hold more than
    batch_size x max_length tokens, so the estimate must not go past that bound (it read 29 GB for a 6 GB run)."""
    from backend.jobs import estimate

    rows = ["question,answer"] + [f"Question {i}?,Short answer number {i}." for i in range(40)]
    rows.append("Paste my log?," + " ".join(["word"] * 3000))
    outlier, _ = import_dataset(store, paths, csv_file("\n".join(rows), "outlier.csv"), name="outlier")
    short, _ = import_dataset(store, paths, csv_file("\n".join(rows[:-1]), "short.csv"), name="short")
    manager = make_manager(gpus=[])
    # fp32: the activations are the whole of what varies (bf16 adds a term for varied batch shapes, not activations)
    cfg = CONFIG.updated(max_length=64, batch_size=8, grad_accum=1, precision="fp32")
    cpu = manager.cpu_estimate(outlier.name, cfg)
    assert cpu is not None and cpu.longest == 64 and not cpu.bf16  # the long row is cut at max_length
    shape = estimate.model_shape(cfg.base_model, paths)
    # every row 64 tokens long: batch_size x max_length in every batch
    padded = estimate.cpu_memory_gb(shape, cfg, seq_len=cfg.max_length, mean_len=cfg.max_length)
    assert cpu.run.ram_gb <= padded
    mean = cpu.tokens_per_epoch / cpu.train_rows
    assert mean < 0.5 * cpu.longest  # a real spread: the old allowance multiplied the activations by up to 3x
    without = manager.cpu_estimate(short.name, cfg)
    assert without.run.ram_gb < cpu.run.ram_gb  # the outlier still costs what its batch costs
