"""The tests' own helpers for jobs (tests/cli_util.py) and for setup that cannot happen here (tests/conftest.py):
waiting on a job's progress rather than a clock, stopping what a test started, and failing on CI instead of skipping.
No training: a temporary store, `sleep` and tests/fake_worker.py stand in for jobs and their workers."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from backend import supervisor
from backend.core.status import JobStatus
from tests.cli_util import offline_env, stop_jobs, tunedeck_wait, wait_for_job, wait_while_progressing
from tests.conftest import add_dataset_record, skip_or_fail

FAKE_WORKER = Path(__file__).parent / "fake_worker.py"
QUICK = {"poll_s": 0.05}


def queued_job(paths, store, job_id: str) -> Path:
    """A job in the store (queued), with its folder; returns the folder."""
    add_dataset_record(store)
    job_dir = paths.jobs / job_id
    job_dir.mkdir(parents=True)
    store.add_job(job_id, "ds-1", "tiny-offline", {}, str(job_dir))
    return job_dir


@pytest.fixture
def job(paths, store, status) -> str:
    """A job recorded as running, at step 3 of 10, scoring (the worker's activity)."""
    job_dir = queued_job(paths, store, "run-test")
    status.set("run-test", JobStatus.RUNNING, pid=999_999)
    store.set_progress("run-test", 3, 10, None)
    store.set_activity("run-test", "scoring 5/16 held-out examples")
    (job_dir / "worker.log").write_text("loading the model\nstep 3 of 10\n")
    return "run-test"


def test_a_job_that_stops_moving_fails_the_wait_naming_its_step_activity_and_log(paths, job) -> None:
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception) as failed:
        wait_while_progressing(paths.home, lambda: False, what="the test's job", stall_s=0.5, **QUICK)
    assert time.monotonic() - started < 5  # the stall window, not a cap or a clock of minutes
    message = str(failed.value)
    assert "the test's job: nothing moved for" in message
    assert "run-test is running at step 3/10" in message and "scoring 5/16 held-out examples" in message
    assert "step 3 of 10" in message  # the end of its worker.log


def test_a_job_that_keeps_moving_is_waited_for_past_the_stall_window_until_it_ends(
    paths, store, status, job
) -> None:
    def train() -> None:  # a step every 0.1 s for 1.2 s, a heartbeat, then it succeeds
        for step in range(4, 16):
            time.sleep(0.1)
            if step % 4:
                store.set_progress(job, step, 16, None)
            else:
                store.beat(job)
        status.set(job, JobStatus.SUCCEEDED)

    worker = threading.Thread(target=train)
    started = time.monotonic()
    worker.start()
    try:
        ended = wait_for_job(paths.home, job, stall_s=0.5, **QUICK)
    finally:
        worker.join()
    assert ended.status is JobStatus.SUCCEEDED
    assert time.monotonic() - started > 1.0  # longer than the stall window: progress kept it waiting


def test_a_job_that_moves_but_never_ends_fails_at_the_cap(paths, store, job) -> None:
    stop = threading.Event()

    def busy() -> None:
        step = 3
        while not stop.wait(0.05):
            step += 1
            store.set_progress(job, step, 10**6, None)

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        with pytest.raises(pytest.fail.Exception, match=r"still not done after \d+ s \(the cap"):
            wait_for_job(paths.home, job, stall_s=5, cap_s=0.5, **QUICK)
    finally:
        stop.set()
        worker.join()


def test_tunedeck_wait_runs_the_cli_to_its_end_and_gives_back_its_exit_status_and_output(
    tmp_path: Path,
) -> None:
    res = tunedeck_wait(offline_env(tmp_path / "home"), "train", "no-such-data", "--wait", "--json", **QUICK)
    assert res.returncode == 2 and "there is no dataset" in res.stderr and res.stdout == ""


def _without_home() -> dict[str, str]:
    """Our environment without TUNEDECK_HOME: a process started with it is found through the store alone."""
    return {k: v for k, v in os.environ.items() if k != "TUNEDECK_HOME"}


def test_stop_jobs_ends_a_running_jobs_whole_process_group_found_through_the_store(
    paths, store, status
) -> None:
    job_dir = queued_job(paths, store, "run-group")
    # A worker that started a child of its own (as `accelerate launch` does), both in the worker's process group.
    leader = supervisor.start(["bash", "-c", "sleep 300 & wait", str(job_dir)], paths, env=_without_home())
    status.set("run-group", JobStatus.RUNNING, pid=leader.pid)
    deadline = time.monotonic() + 10
    while not (children := psutil.Process(leader.pid).children()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    stopped = stop_jobs(paths.home, grace_s=5)
    assert stopped == [f"the worker of run-group (running, pid {leader.pid})"]
    assert leader.wait(5) is not None
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)


def test_stop_jobs_kills_a_worker_that_ignores_sigterm_after_the_grace_period(paths, store, status) -> None:
    job_dir = queued_job(paths, store, "run-stubborn")
    worker = supervisor.start(
        supervisor.python(str(FAKE_WORKER), "stubborn", str(job_dir)), paths, env=_without_home()
    )
    status.set("run-stubborn", JobStatus.RUNNING, pid=worker.pid)
    deadline = time.monotonic() + 30
    while not (job_dir / "ready").exists():  # its SIGTERM handler is in place
        assert time.monotonic() < deadline and worker.poll() is None
        time.sleep(0.05)
    started = time.monotonic()
    assert len(stop_jobs(paths.home, grace_s=0.5)) == 1
    took = time.monotonic() - started
    assert worker.wait(5) is not None and not supervisor.alive(worker.pid)
    assert 0.5 <= took < 5  # it waited out the grace period, then killed it


def test_stop_jobs_ends_other_processes_of_that_home_only_and_never_our_own_group(tmp_path: Path) -> None:
    """The background scheduler, a demo...: any process running with TUNEDECK_HOME set to that home. One in our
    process group (a CLI a test started) is stopped alone, or the test run would stop itself."""
    sleep = ["sleep", "300"]
    home, other = tmp_path / "one-home", tmp_path / "other-home"
    own_group = subprocess.Popen(sleep, env={**_without_home(), "TUNEDECK_HOME": str(home)})
    apart = subprocess.Popen(
        sleep, env={**_without_home(), "TUNEDECK_HOME": str(home)}, start_new_session=True
    )
    elsewhere = subprocess.Popen(
        sleep, env={**_without_home(), "TUNEDECK_HOME": str(other)}, start_new_session=True
    )
    try:
        stopped = stop_jobs(home, grace_s=5)
        assert sorted(stopped) == sorted(f"pid {p.pid} (sleep 300)" for p in (own_group, apart))
        assert own_group.wait(5) is not None and apart.wait(5) is not None
        assert elsewhere.poll() is None
        # `under`: every data directory inside a folder (what conftest does after each test with its tmp_path)
        assert stop_jobs(under=tmp_path, grace_s=5) == [f"pid {elsewhere.pid} (sleep 300)"]
        assert elsewhere.wait(5) is not None
    finally:
        for p in (own_group, apart, elsewhere):
            p.kill()
            p.wait()


@pytest.mark.parametrize("ci", ["true", ""])
def test_skip_or_fail_skips_here_but_fails_on_ci(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(outcome, match="cannot mount a tmpfs here"):
        skip_or_fail("cannot mount a tmpfs here")
