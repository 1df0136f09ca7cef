"""The SQLite store: datasets, jobs, status changes, progress and metrics; it survives a restart."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing

import pytest

from backend.core.status import InvalidTransition, JobStatus
from backend.core.store import SCHEMA_VERSION, DatasetRecord, Store
from tests.conftest import add_dataset_record


def _dataset(name: str = "capitals", ds_id: str = "ds-0001", created: float | None = None) -> DatasetRecord:
    return DatasetRecord(
        id=ds_id,
        name=name,
        created=time.time() if created is None else created,
        source_file=f"{name}.csv",
        path=f"/data/{ds_id}/data.parquet",
        n_rows=32,
        info={"mapping": {"prompt": "question", "response": "answer"}, "report": {"rows_in_file": 33}},
    )


def _add_job(store: Store, job_id: str, dataset_id: str = "ds-0001") -> None:
    add_dataset_record(store, dataset_id)
    store.add_job(
        job_id, dataset_id, "tiny-offline", {"base_model": "tiny-offline", "max_steps": 5}, f"/jobs/{job_id}"
    )


def test_dataset_by_name_and_by_id(store: Store):
    rec = _dataset()
    store.add_dataset(rec)
    assert store.get_dataset("capitals") == rec
    assert store.get_dataset("ds-0001") == rec
    assert store.get_dataset("nope") is None
    assert store.dataset_name_taken("capitals")
    assert not store.dataset_name_taken("other")


def test_datasets_list_newest_first_and_names_are_unique(store: Store):
    store.add_dataset(_dataset("old", "ds-1", created=1.0))
    store.add_dataset(_dataset("new", "ds-2", created=2.0))
    assert [d.name for d in store.list_datasets()] == ["new", "old"]
    with pytest.raises(sqlite3.IntegrityError):
        store.add_dataset(_dataset("old", "ds-3"))
    assert len(store.list_datasets()) == 2


def test_new_job_is_queued_with_its_config(store: Store):
    _add_job(store, "run-a")
    job = store.get_job("run-a")
    assert job is not None
    assert job.status is JobStatus.QUEUED
    assert job.config == {"base_model": "tiny-offline", "max_steps": 5}
    assert (job.preset, job.dataset_id, job.job_dir) == ("tiny-offline", "ds-0001", "/jobs/run-a")
    assert (job.pid, job.started, job.finished, job.reason, job.result) == (None, None, None, "", {})
    assert not job.cancel_requested
    assert store.get_job("run-missing") is None


def test_jobs_list_newest_first_and_queue_oldest_first(store: Store, status):
    for job_id in ("run-1", "run-2", "run-3"):
        _add_job(store, job_id)
    assert [j.id for j in store.list_jobs()] == ["run-3", "run-2", "run-1"]
    assert [j.id for j in store.queued_jobs()] == ["run-1", "run-2", "run-3"]
    status.set("run-1", JobStatus.RUNNING, pid=123)
    assert [j.id for j in store.queued_jobs()] == ["run-2", "run-3"]
    assert [j.id for j in store.list_jobs((JobStatus.RUNNING,))] == ["run-1"]
    assert [j.id for j in store.list_jobs((JobStatus.RUNNING, JobStatus.QUEUED))] == [
        "run-3",
        "run-2",
        "run-1",
    ]


def test_set_status_records_start_pid_finish_reason_and_result(store: Store, status):
    _add_job(store, "run-a")
    before = time.time()
    running = status.set("run-a", JobStatus.RUNNING, pid=4242)
    assert running.status is JobStatus.RUNNING
    assert running.pid == 4242
    assert running.started is not None and running.started >= before
    assert running.finished is None

    done = status.set("run-a", JobStatus.FAILED, reason="out of GPU memory", result={"steps": 3})
    assert done.status is JobStatus.FAILED
    assert done.reason == "out of GPU memory"
    assert done.result == {"steps": 3}
    assert done.pid == 4242  # kept for the record
    assert done.started == running.started
    assert done.finished is not None and done.finished >= done.started
    assert store.get_job("run-a") == done


@pytest.mark.parametrize("final", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_set_status_refuses_leaving_a_final_state(store: Store, final: JobStatus, status):
    _add_job(store, "run-a")
    status.set("run-a", JobStatus.RUNNING, pid=1)
    status.set("run-a", final, reason="first")
    with pytest.raises(InvalidTransition, match=f"from {final.value} to running"):
        status.set("run-a", JobStatus.RUNNING, pid=2)
    job = store.get_job("run-a")
    assert (job.status, job.reason, job.pid) == (final, "first", 1)  # unchanged


def test_set_status_refuses_skipping_running(store: Store, status):
    _add_job(store, "run-a")
    with pytest.raises(InvalidTransition, match="from queued to succeeded"):
        status.set("run-a", JobStatus.SUCCEEDED)
    assert store.get_job("run-a").status is JobStatus.QUEUED


def test_set_status_of_unknown_job_raises_key_error(store: Store, status):
    with pytest.raises(KeyError, match="run-ghost"):
        status.set("run-ghost", JobStatus.RUNNING)


def test_request_cancel_only_sets_the_flag(store: Store):
    _add_job(store, "run-a")
    store.request_cancel("run-a")
    job = store.get_job("run-a")
    assert job.cancel_requested
    assert job.status is JobStatus.QUEUED  # only the manager changes status


def test_progress_round_trip(store: Store):
    assert store.get_progress("run-a") is None
    store.set_progress("run-a", 0, 60, None)
    store.set_progress("run-a", 12, 60, 34.5)
    p = store.get_progress("run-a")
    assert (p.step, p.total_steps, p.eta_s) == (12, 60, 34.5)
    assert p.updated <= time.time()


def test_metrics_round_trip_in_step_order(store: Store):
    store.add_metrics("run-a", 2, {"loss": 1.5, "learning_rate": 1e-4})
    store.add_metrics("run-a", 1, {"loss": 2.5})
    store.add_metrics("run-a", 3, {})  # nothing to write
    store.add_metrics("run-b", 1, {"loss": 9.0})
    assert store.metrics("run-a", "loss") == [(1, "loss", 2.5), (2, "loss", 1.5)]
    assert store.metrics("run-a") == [(1, "loss", 2.5), (2, "loss", 1.5), (2, "learning_rate", 1e-4)]
    assert store.metrics("run-c") == []


def test_everything_survives_reopening_the_database(paths, status):
    first = Store(paths.db)
    first.add_dataset(_dataset())
    _add_job(first, "run-a")
    _add_job(first, "run-b")
    status.set("run-a", JobStatus.RUNNING, pid=77)
    status.set("run-a", JobStatus.SUCCEEDED, result={"final_loss": 0.3})
    first.request_cancel("run-b")
    first.set_progress("run-a", 5, 5, 0.0)
    first.add_metrics("run-a", 1, {"loss": 2.0})
    del first

    again = Store(paths.db)  # as after a restart of the app
    assert again.get_dataset("capitals") == _dataset(created=again.get_dataset("capitals").created)
    a, b = again.get_job("run-a"), again.get_job("run-b")
    assert (a.status, a.pid, a.result) == (JobStatus.SUCCEEDED, 77, {"final_loss": 0.3})
    assert (b.status, b.cancel_requested) == (JobStatus.QUEUED, True)
    assert again.get_progress("run-a").step == 5
    assert again.metrics("run-a", "loss") == [(1, "loss", 2.0)]
    assert [j.id for j in again.queued_jobs()] == ["run-b"]


def test_schema_version_is_recorded(paths):
    Store(paths.db)
    with closing(sqlite3.connect(paths.db)) as c:
        (version,) = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    assert int(version) == SCHEMA_VERSION


def test_database_from_a_newer_tunedeck_is_refused_clearly(paths):
    Store(paths.db)
    with closing(sqlite3.connect(paths.db)) as c, c:
        c.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(
        RuntimeError, match=r"newer TuneDeck.*Upgrade TuneDeck, or point TUNEDECK_HOME at another folder"
    ):
        Store(paths.db)
    with closing(sqlite3.connect(paths.db)) as c:  # and the marker is not rewritten down
        (version,) = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    assert int(version) == SCHEMA_VERSION + 1


def test_job_status_is_written_only_by_the_process_that_holds_the_schedulers_lock(
    paths, store: Store, status
):
    """There is no other way to write a status: the Store has no public setter, and a writer needs the lock."""
    import fcntl
    import os

    from backend.core.store import NotTheScheduler

    assert not hasattr(store, "set_status")
    store.add_dataset(_dataset())
    _add_job(store, "run-a")
    other = os.open(paths.manager_lock, os.O_RDWR)  # the lock file, opened as any other code would
    try:
        with pytest.raises(NotTheScheduler, match="only the process that holds the scheduler's lock"):
            store.status_writer(other)
        with pytest.raises(OSError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the scheduler (the fixture) holds it
    finally:
        os.close(other)
    assert status.set("run-a", JobStatus.RUNNING, pid=1).status is JobStatus.RUNNING
