"""The jobs and metrics part of the store: the schema-3 migration and what the training engine reads and writes."""

from __future__ import annotations

import json
import sqlite3

from backend.core.store import SCHEMA_VERSION, Store
from tests.conftest import add_dataset_record

V1_JOBS = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, created REAL NOT NULL, dataset_id TEXT NOT NULL,
    preset TEXT NOT NULL, config TEXT NOT NULL, job_dir TEXT NOT NULL, status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '', pid INTEGER, started REAL, finished REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0, result TEXT NOT NULL DEFAULT '{}'
);
INSERT INTO meta VALUES ('schema_version', '1');
"""


def test_a_version_1_database_keeps_its_runs_and_gains_the_resume_columns(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as c:
        c.executescript(V1_JOBS)
        c.execute(
            "INSERT INTO jobs (id, created, dataset_id, preset, config, job_dir, status, reason) "
            "VALUES ('run-old', 1.0, 'ds-1', 'tiny-offline', ?, '/jobs/run-old', 'succeeded', '')",
            (json.dumps({"max_steps": 30}),),
        )
    store = Store(path)
    old = store.get_job("run-old")
    assert old is not None and old.status.value == "succeeded" and old.config == {"max_steps": 30}
    assert (old.resumed_from, old.retry_of) == ("", "")
    with sqlite3.connect(path) as c:
        assert (
            int(c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
            == SCHEMA_VERSION
            >= 3
        )
    Store(path)  # opening it again changes nothing (the migration is idempotent)
    add_dataset_record(store, "ds-1")
    store.add_job("run-new", "ds-1", "tiny-offline", {}, "/jobs/run-new", resumed_from="run-old")
    assert store.get_job("run-new").resumed_from == "run-old"


def test_record_step_copy_and_last_metrics(store):
    add_dataset_record(store, "ds")
    store.add_job("run-a", "ds", "p", {}, "/a")
    store.add_job("run-b", "ds", "p", {}, "/b", resumed_from="run-a")
    for step in (1, 2, 3, 4):
        store.record_step(
            "run-a", step, 10, 5.0, {"loss": 5.0 - step, "num_tokens": 100.0 * step}, at=1000.0 + step
        )
    store.record_step("run-a", 4, None, None, {"eval_loss": 1.5})  # metrics only, progress untouched
    assert store.get_progress("run-a").step == 4 and store.get_progress("run-a").updated == 1004.0
    assert store.last_metrics("run-a", ("loss", "eval_loss", "tokens_per_s")) == {
        "loss": 1.0,
        "eval_loss": 1.5,
    }
    assert store.copy_metrics("run-a", "run-b", up_to_step=2) == 4  # two steps, two metrics each
    assert store.metrics("run-b", "loss") == [(1, "loss", 4.0), (2, "loss", 3.0)]
    assert store.metrics("run-a", "loss")[-1] == (4, "loss", 1.0)  # the original is untouched
