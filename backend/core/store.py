"""The SQLite store: datasets, jobs, their progress and metrics, under the data directory.

WAL mode lets the web UI read while a worker writes metrics and the manager writes status. Each call opens its
own short-lived connection, so the store is safe to use from any thread or process. The schema carries a version
number; ``_migrate`` brings an older database forward so that stored runs survive upgrades.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.core.status import JobStatus, check_transition

SCHEMA_VERSION = 6


class DatasetGone(KeyError):
    """A job was queued on a dataset that was deleted in the meantime."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS datasets (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    source_file TEXT NOT NULL,
    path TEXT NOT NULL,
    n_rows INTEGER NOT NULL,
    info TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    dataset_id TEXT NOT NULL,
    preset TEXT NOT NULL,
    config TEXT NOT NULL,
    job_dir TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    pid INTEGER,
    started REAL,
    finished REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    result TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS progress (
    job_id TEXT PRIMARY KEY,
    step INTEGER NOT NULL,
    total_steps INTEGER NOT NULL,
    eta_s REAL,
    updated REAL NOT NULL,
    activity TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    prompt TEXT NOT NULL,
    left TEXT NOT NULL,
    right TEXT NOT NULL,
    winner TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS metrics (
    job_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_job ON metrics (job_id, name, step);
CREATE TABLE IF NOT EXISTS accelerator_leases (
    holder TEXT PRIMARY KEY,
    gb REAL NOT NULL,
    pid INTEGER NOT NULL,
    since REAL NOT NULL,
    release_requested INTEGER NOT NULL DEFAULT 0
);
"""

# The votes table's columns after its first five, added by ``_migrate`` to new and old databases alike (one path,
# so the upgrade of a database from before schema 6 is the code every new database runs too).
VOTE_COLUMNS = {
    "system": "TEXT NOT NULL DEFAULT ''",  # the system prompt both contestants answered with ("" if none)
    "left_answer": "TEXT",  # NULL: voted before TuneDeck kept the answers
    "right_answer": "TEXT",
    "left_model": "TEXT",  # JSON {"base_model", "run", "adapter_dir"}; run and adapter_dir null for the base
    "right_model": "TEXT",
    "decoding": "TEXT NOT NULL DEFAULT '{}'",  # JSON: max_new_tokens, temperature, seed
    "better": "TEXT NOT NULL DEFAULT ''",  # an answer the person wrote, better than both ("" if none)
}


def _add_columns(c: sqlite3.Connection, table: str, columns: dict[str, str]) -> None:
    """Add the missing ``columns`` (name -> SQL type) to ``table``, in one write transaction, so that two processes
    opening an old database at once do not both try to add the same column."""
    c.execute("BEGIN IMMEDIATE")
    try:
        have = {r["name"] for r in c.execute(f"PRAGMA table_info({table})").fetchall()}
        for name, sql_type in columns.items():
            if name not in have:
                c.execute(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}")
    except BaseException:
        c.execute("ROLLBACK")
        raise
    c.execute("COMMIT")


@dataclass(frozen=True)
class DatasetRecord:
    id: str
    name: str
    created: float
    source_file: str
    path: str
    n_rows: int
    info: dict[str, Any]


@dataclass(frozen=True)
class JobRecord:
    id: str
    seq: int
    created: float
    dataset_id: str
    preset: str
    config: dict[str, Any]
    job_dir: str
    status: JobStatus
    reason: str
    pid: int | None
    started: float | None
    finished: float | None
    cancel_requested: bool
    result: dict[str, Any] = field(default_factory=dict)
    resumed_from: str = ""  # the job this one continues from its checkpoint ("" if none)
    retry_of: str = ""  # the job that ran out of GPU memory and this one retries with a smaller batch


@dataclass(frozen=True)
class Lease:
    """Who holds the GPU's memory besides training (see backend.jobs.accelerator)."""

    holder: str  # "chat" (the model server), "score:<pid>", "export:<pid>"
    gb: float
    pid: int
    since: float
    release_requested: bool


@dataclass(frozen=True)
class Progress:
    step: int
    total_steps: int
    eta_s: float | None
    updated: float
    activity: str = ""  # what the worker does besides training steps, in words; "" while it trains


class Store:
    def __init__(self, path: str | Path):
        self.path = str(path)
        with self._conn() as c:
            c.execute("PRAGMA journal_mode=WAL")
            c.executescript(_SCHEMA)
            self._migrate(c)

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA foreign_keys=ON")
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._conn() as c:
            c.execute("BEGIN IMMEDIATE")
            try:
                yield c
            except BaseException:
                c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")

    def _migrate(self, c: sqlite3.Connection) -> None:
        row = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = int(row["value"]) if row else 0
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"The database {self.path} was written by a newer TuneDeck (schema {version}, this one knows "
                f"{SCHEMA_VERSION}). Upgrade TuneDeck, or point TUNEDECK_HOME at another folder."
            )
        # Future migrations go here, one `if version < N:` block each, so old runs and datasets stay readable.
        if version < 2:
            # Datasets get their content hash as a column (it was only inside info), to find identical versions.
            cols = {r["name"] for r in c.execute("PRAGMA table_info(datasets)").fetchall()}
            if "sha256" not in cols:
                c.execute("ALTER TABLE datasets ADD COLUMN sha256 TEXT NOT NULL DEFAULT ''")
            c.execute(
                "UPDATE datasets SET sha256 = COALESCE(json_extract(info, '$.sha256'), '') WHERE sha256 = ''"
            )
            c.execute("CREATE INDEX IF NOT EXISTS datasets_sha256 ON datasets (sha256)")
        if version < 3:
            # Jobs that continue another: resumed by the person (resumed_from) or retried after running out of GPU
            # memory (retry_of). Idempotent, so it is safe whichever blocks ran before.
            cols = {r["name"] for r in c.execute("PRAGMA table_info(jobs)").fetchall()}
            for col in ("resumed_from", "retry_of"):
                if col not in cols:
                    c.execute(f"ALTER TABLE jobs ADD COLUMN {col} TEXT NOT NULL DEFAULT ''")
        if version < 4:
            # What a running worker does besides training steps ("scoring 5/16 held-out examples"), for the UI.
            cols = {r["name"] for r in c.execute("PRAGMA table_info(progress)").fetchall()}
            if "activity" not in cols:
                c.execute("ALTER TABLE progress ADD COLUMN activity TEXT NOT NULL DEFAULT ''")
        if version < 6:
            # Votes keep what was voted on (both answers, the models, the decoding, a written better answer), so
            # they can become preference data (backend.serving.votes). Old rows keep NULL answers: still counted
            # in win rates, never turned into data.
            _add_columns(c, "votes", VOTE_COLUMNS)
        c.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    # -- datasets -------------------------------------------------------------------------------------------

    def add_dataset(self, rec: DatasetRecord) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO datasets (id, name, created, source_file, path, n_rows, info, sha256) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (
                    rec.id,
                    rec.name,
                    rec.created,
                    rec.source_file,
                    rec.path,
                    rec.n_rows,
                    json.dumps(rec.info),
                    str(rec.info.get("sha256", "")),
                ),
            )

    def datasets_with_hash(self, sha256: str) -> list[DatasetRecord]:
        """Dataset versions with exactly this content (oldest first)."""
        with self._conn() as c:
            rows = c.execute("SELECT * FROM datasets WHERE sha256=? ORDER BY created", (sha256,)).fetchall()
        return [_dataset(r) for r in rows]

    def rename_dataset(self, dataset_id: str, new_name: str) -> DatasetRecord:
        """Raises sqlite3.IntegrityError when the name is taken, KeyError when there is no such dataset."""
        with self._tx() as c:
            if c.execute("UPDATE datasets SET name=? WHERE id=?", (new_name, dataset_id)).rowcount == 0:
                raise KeyError(dataset_id)
        rec = self.get_dataset(dataset_id)
        assert rec is not None
        return rec

    def delete_dataset(self, dataset_id: str, unless_used_by: tuple[JobStatus, ...]) -> list[str]:
        """Delete the record unless a job in one of ``unless_used_by`` uses it (checked in the same transaction).

        Returns the ids of the jobs that block it (nothing is deleted then); an empty list means deleted.
        """
        with self._tx() as c:
            if unless_used_by:
                marks = ",".join("?" * len(unless_used_by))
                blocking = c.execute(
                    f"SELECT id FROM jobs WHERE dataset_id=? AND status IN ({marks}) ORDER BY seq",
                    (dataset_id, *[s.value for s in unless_used_by]),
                ).fetchall()
                if blocking:
                    return [r["id"] for r in blocking]
            if c.execute("DELETE FROM datasets WHERE id=?", (dataset_id,)).rowcount == 0:
                raise KeyError(dataset_id)
        return []

    def list_datasets(self) -> list[DatasetRecord]:
        with self._conn() as c:
            rows = c.execute("SELECT * FROM datasets ORDER BY created DESC").fetchall()
        return [_dataset(r) for r in rows]

    def get_dataset(self, key: str) -> DatasetRecord | None:
        """By id or by name."""
        with self._conn() as c:
            r = c.execute("SELECT * FROM datasets WHERE id=? OR name=?", (key, key)).fetchone()
        return _dataset(r) if r else None

    def dataset_name_taken(self, name: str) -> bool:
        with self._conn() as c:
            return c.execute("SELECT 1 FROM datasets WHERE name=?", (name,)).fetchone() is not None

    # -- jobs -----------------------------------------------------------------------------------------------

    def add_job(
        self,
        job_id: str,
        dataset_id: str,
        preset: str,
        config: dict[str, Any],
        job_dir: str,
        *,
        resumed_from: str = "",
        retry_of: str = "",
    ) -> None:
        """Raises DatasetGone when the dataset no longer exists: checked in the insert's own transaction, so a
        dataset deleted at the same moment can never leave a queued job that points at nothing."""
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO jobs (id, created, dataset_id, preset, config, job_dir, status, resumed_from, retry_of) "
                "SELECT ?,?,?,?,?,?,?,?,? WHERE EXISTS (SELECT 1 FROM datasets WHERE id=?)",
                (
                    job_id,
                    time.time(),
                    dataset_id,
                    preset,
                    json.dumps(config),
                    job_dir,
                    JobStatus.QUEUED.value,
                    resumed_from,
                    retry_of,
                    dataset_id,
                ),
            )
            if cur.rowcount == 0:
                raise DatasetGone(dataset_id)

    def trusts_remote_code(self, base_model: str) -> bool:
        """Whether the person allowed this model's own code: a run on it was started with trust_remote_code on.
        Chat, compare and demos of that model (its base alone too) then load it the same way."""
        with self._conn() as c:
            row = c.execute(
                "SELECT 1 FROM jobs WHERE json_extract(config, '$.base_model')=? "
                "AND json_extract(config, '$.trust_remote_code')=1 LIMIT 1",
                (base_model,),
            ).fetchone()
        return row is not None

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._conn() as c:
            r = c.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _job(r) if r else None

    def list_jobs(self, statuses: tuple[JobStatus, ...] = ()) -> list[JobRecord]:
        """Newest first."""
        with self._conn() as c:
            if statuses:
                marks = ",".join("?" * len(statuses))
                rows = c.execute(
                    f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY seq DESC",
                    [s.value for s in statuses],
                ).fetchall()
            else:
                rows = c.execute("SELECT * FROM jobs ORDER BY seq DESC").fetchall()
        return [_job(r) for r in rows]

    def queued_jobs(self) -> list[JobRecord]:
        """Oldest first: the order they will run in."""
        return list(reversed(self.list_jobs((JobStatus.QUEUED,))))

    def status_writer(self, scheduler_lock_fd: int) -> StatusWriter:
        """The one way to change job status, for the process that holds the scheduler's lock (``manager.lock``,
        opened as ``scheduler_lock_fd``): refused to anyone else."""
        writer = StatusWriter(self, scheduler_lock_fd)
        writer.check()
        return writer

    def request_cancel(self, job_id: str) -> None:
        """Ask the manager to cancel a job (any process may ask; only the manager acts)."""
        with self._tx() as c:
            c.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,))

    def jobs_using_dataset(self, dataset_id: str, statuses: tuple[JobStatus, ...]) -> list[JobRecord]:
        return [j for j in self.list_jobs(statuses) if j.dataset_id == dataset_id]

    # -- progress and metrics (written by the worker) -------------------------------------------------------

    def set_progress(self, job_id: str, step: int, total_steps: int, eta_s: float | None) -> None:
        """Training progress (clears any activity: the worker is back to taking steps)."""
        with self._tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO progress (job_id, step, total_steps, eta_s, updated, activity) "
                "VALUES (?,?,?,?,?,'')",
                (job_id, step, total_steps, eta_s, time.time()),
            )

    def set_activity(self, job_id: str, activity: str) -> None:
        """What the worker is doing besides training steps (making a model copy, scoring 5/16), keeping the step."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO progress (job_id, step, total_steps, eta_s, updated, activity) VALUES (?,0,0,NULL,?,?) "
                "ON CONFLICT(job_id) DO UPDATE SET activity=excluded.activity, updated=excluded.updated",
                (job_id, time.time(), activity),
            )

    # -- accelerator leases (backend.jobs.accelerator) -----------------------------------------------------------

    def put_lease(self, holder: str, gb: float, pid: int) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO accelerator_leases VALUES (?,?,?,?,0)",
                (holder, float(gb), pid, time.time()),
            )

    def drop_lease(self, holder: str) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM accelerator_leases WHERE holder=?", (holder,))

    def request_lease_release(self, holder: str) -> None:
        with self._tx() as c:
            c.execute("UPDATE accelerator_leases SET release_requested=1 WHERE holder=?", (holder,))

    def list_leases(self) -> list[Lease]:
        with self._conn() as c:
            rows = c.execute("SELECT * FROM accelerator_leases ORDER BY since").fetchall()
        return [Lease(r["holder"], r["gb"], r["pid"], r["since"], bool(r["release_requested"])) for r in rows]

    def beat(self, job_id: str) -> None:
        """A sign of life from the worker, between steps (during a validation pass)."""
        with self._tx() as c:
            c.execute("UPDATE progress SET updated=? WHERE job_id=?", (time.time(), job_id))

    def get_progress(self, job_id: str) -> Progress | None:
        with self._conn() as c:
            r = c.execute("SELECT * FROM progress WHERE job_id=?", (job_id,)).fetchone()
        return Progress(r["step"], r["total_steps"], r["eta_s"], r["updated"], r["activity"]) if r else None

    def add_metrics(self, job_id: str, step: int, values: dict[str, float]) -> None:
        now = time.time()
        rows = [(job_id, step, k, float(v), now) for k, v in values.items()]
        if rows:
            with self._tx() as c:
                c.executemany("INSERT INTO metrics VALUES (?,?,?,?,?)", rows)

    def record_step(
        self,
        job_id: str,
        step: int,
        total_steps: int | None,
        eta_s: float | None,
        values: dict[str, float],
        at: float | None = None,
    ) -> None:
        """The step's metrics, and its progress unless total_steps is None, in one transaction (the worker's metrics
        writer calls this once a logged step; ``at``: when the step ended, if it is written later)."""
        now = time.time() if at is None else at
        with self._tx() as c:
            if total_steps is not None:
                c.execute(
                    "INSERT OR REPLACE INTO progress (job_id, step, total_steps, eta_s, updated, activity) "
                    "VALUES (?,?,?,?,?,'')",
                    (job_id, step, total_steps, eta_s, now),
                )
            c.executemany(
                "INSERT INTO metrics VALUES (?,?,?,?,?)",
                [(job_id, step, k, float(v), now) for k, v in values.items()],
            )

    def last_metrics(self, job_id: str, names: tuple[str, ...]) -> dict[str, float]:
        """The latest value of each of these metrics (those the job has), in one query."""
        marks = ",".join("?" * len(names))
        with self._conn() as c:
            rows = c.execute(
                f"SELECT name, value FROM metrics WHERE job_id=? AND name IN ({marks}) ORDER BY step, rowid",
                (job_id, *names),
            ).fetchall()
        return {r["name"]: r["value"] for r in rows}

    def copy_metrics(self, from_job: str, to_job: str, up_to_step: int) -> int:
        """Give a resumed job the points of the run it continues, up to the checkpoint it starts from."""
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO metrics SELECT ?, step, name, value, time FROM metrics WHERE job_id=? AND step<=? "
                "ORDER BY step, rowid",
                (to_job, from_job, up_to_step),
            )
            return cur.rowcount

    def metrics(self, job_id: str, name: str | None = None) -> list[tuple[int, str, float]]:
        """(step, name, value) rows in step order."""
        with self._conn() as c:
            if name:
                q = c.execute(
                    "SELECT step, name, value FROM metrics WHERE job_id=? AND name=? ORDER BY step, rowid",
                    (job_id, name),
                )
            else:
                q = c.execute(
                    "SELECT step, name, value FROM metrics WHERE job_id=? ORDER BY step, rowid", (job_id,)
                )
            return [(r["step"], r["name"], r["value"]) for r in q.fetchall()]


@dataclass(frozen=True)
class Vote:
    """One blind-test vote. Votes from before schema 6 have no answers (None): they count in win rates only."""

    id: int
    time: float
    prompt: str
    left: str  # the contestant shown as A: a run id, or "base model"
    right: str  # shown as B
    winner: str  # left's or right's name, or "tie"
    system: str = ""
    left_answer: str | None = None
    right_answer: str | None = None
    left_model: dict[str, Any] | None = None  # {"base_model", "run", "adapter_dir"}; None on old rows
    right_model: dict[str, Any] | None = None
    decoding: dict[str, Any] = field(default_factory=dict)
    better: str = ""  # an answer the person wrote, better than both

    @property
    def has_answers(self) -> bool:
        return self.left_answer is not None and self.right_answer is not None


class VoteStore:
    """Blind-test votes, a table of the same database. Each keeps what was voted on, so that votes become
    preference data (``backend.serving.votes``) and stay reproducible (which models, which decoding)."""

    def __init__(self, store: Store):
        self.store = store

    def add(
        self,
        prompt: str,
        left: str,
        right: str,
        winner: str,
        *,
        system: str = "",
        left_answer: str | None = None,
        right_answer: str | None = None,
        left_model: dict[str, Any] | None = None,
        right_model: dict[str, Any] | None = None,
        decoding: dict[str, Any] | None = None,
        better: str = "",
        at: float | None = None,
    ) -> int:
        """Store a vote; returns its id. ``winner`` is ``left``'s or ``right``'s name, or "tie". Both answers or
        neither: a vote with one answer could not become a pair."""
        if winner not in (left, right, "tie"):
            raise ValueError(f"winner must be {left!r}, {right!r} or 'tie', got {winner!r}")
        if (left_answer is None) != (right_answer is None):
            raise ValueError("give both answers (left_answer and right_answer) or neither")
        with self.store._tx() as c:
            cur = c.execute(
                "INSERT INTO votes (time, prompt, left, right, winner, system, left_answer, right_answer, "
                "left_model, right_model, decoding, better) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    time.time() if at is None else at,
                    prompt,
                    left,
                    right,
                    winner,
                    system or "",
                    left_answer,
                    right_answer,
                    None if left_model is None else json.dumps(left_model),
                    None if right_model is None else json.dumps(right_model),
                    json.dumps(decoding or {}),
                    better or "",
                ),
            )
            return int(cur.lastrowid or 0)

    def votes(self) -> list[Vote]:
        """Every vote, oldest first."""
        with self.store._conn() as c:
            rows = c.execute("SELECT * FROM votes ORDER BY time, id").fetchall()
        return [_vote(r) for r in rows]

    def tally(self) -> dict[str, dict[str, int]]:
        """Per contestant: wins, losses, ties and games."""
        out: dict[str, dict[str, int]] = {}
        with self.store._conn() as c:
            rows = c.execute("SELECT left, right, winner FROM votes").fetchall()
        for r in rows:
            for me, other in ((r["left"], r["right"]), (r["right"], r["left"])):
                t = out.setdefault(me, {"wins": 0, "losses": 0, "ties": 0, "games": 0})
                t["games"] += 1
                if r["winner"] == "tie":
                    t["ties"] += 1
                elif r["winner"] == me:
                    t["wins"] += 1
                elif r["winner"] == other:
                    t["losses"] += 1
        return out


class NotTheScheduler(RuntimeError):
    """Job status was about to be written by a process that does not hold the scheduler's lock."""


class StatusWriter:
    """Writes job status; only the scheduler has one (``Store.status_writer`` with the scheduler's lock).

    Every write first checks that this process still holds ``manager.lock`` (an exclusive ``flock`` on the file
    descriptor it was made with), so the rule "one writer of job status" is enforced, not a convention."""

    def __init__(self, store: Store, lock_fd: int):
        self._store, self._fd = store, lock_fd

    def check(self) -> None:
        import fcntl

        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a no-op for the holder, refused to others
        except OSError:
            raise NotTheScheduler(
                "only the process that holds the scheduler's lock may change job status"
            ) from None

    def set(
        self,
        job_id: str,
        new: JobStatus,
        *,
        reason: str | None = None,
        pid: int | None = None,
        result: dict[str, Any] | None = None,
    ) -> JobRecord:
        """Change a job's status, if ``check_transition`` allows the move, recording when it
        started or finished."""
        self.check()
        now = time.time()
        with self._store._tx() as c:
            r = c.execute("SELECT status FROM jobs WHERE id=?", (job_id,)).fetchone()
            if r is None:
                raise KeyError(job_id)
            check_transition(JobStatus(r["status"]), new)
            sets, args = ["status=?"], [new.value]
            if reason is not None:
                sets.append("reason=?")
                args.append(reason)
            if pid is not None:
                sets.append("pid=?")
                args.append(pid)
            if result is not None:
                sets.append("result=?")
                args.append(json.dumps(result))
            if new is JobStatus.RUNNING:
                sets.append("started=?")
                args.append(now)
            if new.is_terminal:
                sets.append("finished=?")
                args.append(now)
            c.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id=?", (*args, job_id))
        job = self._store.get_job(job_id)
        assert job is not None
        return job


def _dataset(r: sqlite3.Row) -> DatasetRecord:
    return DatasetRecord(
        id=r["id"],
        name=r["name"],
        created=r["created"],
        source_file=r["source_file"],
        path=r["path"],
        n_rows=r["n_rows"],
        info=json.loads(r["info"]),
    )


def _job(r: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=r["id"],
        seq=r["seq"],
        created=r["created"],
        dataset_id=r["dataset_id"],
        preset=r["preset"],
        config=json.loads(r["config"]),
        job_dir=r["job_dir"],
        status=JobStatus(r["status"]),
        reason=r["reason"],
        pid=r["pid"],
        started=r["started"],
        finished=r["finished"],
        cancel_requested=bool(r["cancel_requested"]),
        result=json.loads(r["result"]),
        resumed_from=r["resumed_from"] if "resumed_from" in r.keys() else "",
        retry_of=r["retry_of"] if "retry_of" in r.keys() else "",
    )


def _vote(r: sqlite3.Row) -> Vote:
    return Vote(
        id=r["id"],
        time=r["time"],
        prompt=r["prompt"],
        left=r["left"],
        right=r["right"],
        winner=r["winner"],
        system=r["system"],
        left_answer=r["left_answer"],
        right_answer=r["right_answer"],
        left_model=json.loads(r["left_model"]) if r["left_model"] else None,
        right_model=json.loads(r["right_model"]) if r["right_model"] else None,
        decoding=json.loads(r["decoding"] or "{}"),
        better=r["better"],
    )
