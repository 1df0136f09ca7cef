"""Run the ``tunedeck`` CLI as a person would, in a subprocess, against a given data directory; wait on a job while it
makes progress (not on a clock); stop everything a test started in a data directory.

Rules these helpers keep: *wait on progress, not a clock* (``wait_for_job``, ``tunedeck_wait``: a job may take as
long as it needs on a slow machine while it moves, and fails fast once it stops moving), and *tests stop what they
start* (``stop_jobs``: training workers live in process groups of their own, so stopping the CLI or the app that
started them leaves them running). Every data directory ``offline_env`` makes an environment for is remembered
(``HOMES``), so that tests/conftest.py can stop what still runs in it when its test or module ends.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from backend.settings import CAPITALS_CSV, PROJECT_ROOT, Paths
from tests.conftest import link_tiny_model


def offline_env(home: Path, **extra: str) -> dict[str, str]:
    remember_home(home)
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
    tunedeck_json(env, "data", "add", str(CAPITALS_CSV), "--name", "capitals")
    return env


def train_sample(env: dict[str, str], steps: int = 30, *settings: str) -> dict:
    """A finished tiny-offline run on the sample; ``settings``: more KEY=VALUE for --set."""
    res = tunedeck(
        env,
        "train",
        "capitals",
        "--preset",
        "tiny-offline",
        *(arg for setting in (f"max_steps={steps}", *settings) for arg in ("--set", setting)),
        "--wait",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def plain_peft_answer(
    base_dir: Path | None, adapter_dir: str | Path, question: str, max_new_tokens: int, dtype=None
):
    """What a person gets loading the base and a run's adapter with plain transformers + PEFT, greedy:
    (answer, model, tokenizer, encoded prompt), so a test can go on with the same model (e.g. merge it).
    ``base_dir`` None: from the adapter folder alone, with AutoPeftModelForCausalLM (the base it names)."""
    import torch
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(adapter_dir)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    if base_dir is None:
        model = AutoPeftModelForCausalLM.from_pretrained(adapter_dir, **kwargs).eval()
    else:
        base = AutoModelForCausalLM.from_pretrained(base_dir, **kwargs)
        model = PeftModel.from_pretrained(base, adapter_dir).eval()
    enc = tok.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.inference_mode():
        out = model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
        )
    return tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True), model, tok, enc


# -- jobs a test starts: wait on their progress, stop them afterwards ------------------------------------------------

STALL_S = 600.0  # nothing moved for this long (no step, activity, heartbeat or log line): the job is stuck
CAP_S = 3600.0  # however well it moves, no job of a test may take longer than this
# pytest-timeout (600 s in pyproject.toml) for a test that waits on a real training run with these helpers, or whose
# module fixture does (a module fixture's setup counts in the first test's time): above CAP_S, so the wait's own
# message, which names the last step and activity, is what a slow or stuck run ends with.
JOB_TEST_TIMEOUT_S = int(CAP_S + 900)
# Every data directory offline_env (or browser_util.ServedApp) was used for, in order (a dict: each once).
HOMES: dict[Path, None] = {}


def remember_home(home: str | os.PathLike) -> Path:
    """Note a data directory a test starts TuneDeck in, for tests/conftest.py to stop what runs there at the end."""
    resolved = Path(home).resolve()
    HOMES.setdefault(resolved, None)
    return resolved


def _job_rows(home: Path, where: str = "") -> list[sqlite3.Row]:
    """The store's jobs with their progress, read without writing (no Store(): it would create or migrate the
    database); [] where there is no database (yet) or it cannot be read."""
    db = Path(home) / "tunedeck.db"
    if not db.is_file():
        return []
    try:
        conn = sqlite3.connect(f"{db.as_uri()}?mode=rw", uri=True, timeout=30)
        try:
            conn.row_factory = sqlite3.Row
            return conn.execute(
                "SELECT j.id, j.status, j.pid, j.job_dir, j.reason, p.step, p.total_steps, p.activity, p.updated "
                f"FROM jobs j LEFT JOIN progress p ON p.job_id = j.id {where} ORDER BY j.seq"
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []


def _log_size(job_dir: str) -> int:
    try:
        return (Path(job_dir) / "worker.log").stat().st_size
    except OSError:
        return -1


def _log_tail(job_dir: str, lines: int = 5) -> str:
    try:
        text = (Path(job_dir) / "worker.log").read_text(errors="replace")
    except OSError:
        return "(no worker.log)"
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:]) or "(empty)"


def _moves(home: Path) -> tuple:
    """What changes while the jobs of a data directory make progress: each job's status, step, activity and last
    sign of life (progress.updated: steps, activity and the worker's heartbeat between steps), and each unfinished
    job's log size."""
    return tuple(
        (r["id"], r["status"], r["step"], r["activity"], r["updated"])
        + ((_log_size(r["job_dir"]),) if r["status"] in ("queued", "running") else ())
        for r in _job_rows(home)
    )


def _where_it_stands(home: Path, job_id: str | None) -> str:
    """The job (or else the newest unfinished one, or the newest) in words: status, step, activity, log's end."""
    rows = _job_rows(home)
    row = next((r for r in rows if r["id"] == job_id), None) if job_id else None
    row = row or next((r for r in reversed(rows) if r["status"] in ("queued", "running")), None)
    row = row or (rows[-1] if rows else None)
    if row is None:
        return f"no job in {home} yet"
    ago = f", last sign of life {time.time() - row['updated']:.0f} s ago" if row["updated"] else ""
    step = f"step {row['step']}/{row['total_steps']}" if row["step"] is not None else "no step yet"
    return (
        f"{row['id']} is {row['status']} at {step}, activity {row['activity'] or 'none'!r}{ago}; "
        f"its worker.log ends:\n{_log_tail(row['job_dir'])}"
    )


def wait_while_progressing(
    home: str | os.PathLike,
    done: Callable[[], object],
    *,
    what: str,
    job_id: str | None = None,
    stall_s: float = STALL_S,
    cap_s: float = CAP_S,
    poll_s: float = 2.0,
) -> None:
    """Wait until ``done()`` is true while the jobs of this data directory make progress (``_moves``); fail the
    test once nothing has moved for ``stall_s``, or after ``cap_s`` in all, naming where the job stands."""
    import pytest

    home = Path(home)
    start = last_move = time.monotonic()
    seen = _moves(home)
    while not done():
        now = time.monotonic()
        current = _moves(home)
        if current != seen:
            seen, last_move = current, now
        elif now - last_move > stall_s:
            pytest.fail(
                f"{what}: nothing moved for {now - last_move:.0f} s: {_where_it_stands(home, job_id)}",
                pytrace=False,
            )
        if now - start > cap_s:
            pytest.fail(
                f"{what}: still not done after {now - start:.0f} s (the cap, though it moves): "
                f"{_where_it_stands(home, job_id)}",
                pytrace=False,
            )
        time.sleep(poll_s)


def wait_for_job(home: str | os.PathLike, job_id: str, **limits: float):
    """Wait for a job to end (succeeded, failed or cancelled) for as long as it makes progress; returns its
    JobRecord. ``limits``: stall_s, cap_s, poll_s (see wait_while_progressing)."""
    from backend.core.store import Store

    store = Store(Path(home) / "tunedeck.db")

    def ended() -> bool:
        job = store.get_job(job_id)
        return job is not None and job.status.is_terminal

    wait_while_progressing(home, ended, what=f"waiting for {job_id} to end", job_id=job_id, **limits)
    return store.get_job(job_id)


def tunedeck_wait(env: dict[str, str], *args: str, **limits: float) -> subprocess.CompletedProcess:
    """``tunedeck ... --wait`` as a person runs it, for as long as its data directory's jobs make progress (instead
    of a fixed subprocess timeout, which kills only the CLI and leaves the worker training). ``limits``: see
    wait_while_progressing. On a stall the CLI is killed and the test fails; its worker is stopped at teardown."""
    assert "--wait" in args, "tunedeck_wait is for commands that wait on a job (--wait)"
    # Output to files: a pipe could fill up and block the CLI while nothing reads it.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "backend", *args], cwd=PROJECT_ROOT, env=env, stdout=out, stderr=err
        )
        try:
            wait_while_progressing(
                env["TUNEDECK_HOME"],
                lambda: proc.poll() is not None,
                what=f"tunedeck {' '.join(args)}",
                **limits,
            )
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def stop_jobs(
    *homes: str | os.PathLike, under: str | os.PathLike | None = None, grace_s: float = 10.0
) -> list[str]:
    """Stop everything still running in these data directories (and, with ``under``, in any data directory inside
    that folder): the worker of every queued or running job (its pid from the store; each leads a process group
    of its own), and every other process running with TUNEDECK_HOME set to one of them (the background scheduler,
    first of all, so it starts nothing new; a standby worker, the model server, demos, exports). SIGTERM to each
    process group, SIGKILL to what is left after ``grace_s``. Never this process or its group (a CLI a test ran in
    our group is stopped alone). Returns what was stopped, in words; [] when nothing ran."""
    import psutil

    from backend import supervisor

    wanted = {Path(h).resolve() for h in homes}
    folder = Path(under).resolve() if under is not None else None
    if folder is not None:
        wanted |= {h for h in HOMES if h.is_relative_to(folder)}
    stopped: list[str] = []
    for _ in range(3):  # again, in case a scheduler started a worker while the first round stopped it
        found: dict[int, str] = {}
        for proc in psutil.process_iter():
            if proc.pid == os.getpid():
                continue
            try:
                home = proc.environ().get("TUNEDECK_HOME")
                if not home:
                    continue
                resolved = Path(home).resolve()
                if resolved in wanted or (folder is not None and resolved.is_relative_to(folder)):
                    wanted.add(resolved)
                    found[proc.pid] = f"pid {proc.pid} ({' '.join(proc.cmdline())[:100]})"
            except (psutil.Error, OSError):
                continue  # another user's, gone, or a zombie
        for home in sorted(wanted):
            for row in _job_rows(home, "WHERE j.status IN ('queued', 'running')"):
                if row["pid"] and supervisor.alive(row["pid"], marker=row["job_dir"]):
                    found[row["pid"]] = f"the worker of {row['id']} ({row['status']}, pid {row['pid']})"
        if not found:
            break
        _terminate(found, grace_s)
        stopped += found.values()
    return stopped


def _terminate(pids: Iterable[int], grace_s: float) -> None:
    """SIGTERM to each process's group (to the process alone if it shares ours), SIGKILL after ``grace_s``."""
    import psutil

    ours = os.getpgrp()
    groups: set[int] = set()
    alone: dict[int, psutil.Process] = {}  # processes in our own group: signalled one by one
    procs = []
    for pid in pids:
        try:
            pgid = os.getpgid(pid)
            proc = psutil.Process(pid)
        except (ProcessLookupError, psutil.Error):
            continue
        procs.append(proc)
        if pgid == ours or pgid <= 1:
            alone[pid] = proc
        else:
            groups.add(pgid)

    def send(sig: int, singles: Iterable[int]) -> None:
        for pgid in groups:
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in singles:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    send(signal.SIGTERM, alone)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)  # also reaps those that are our own children
    # SIGKILL to every group (the rest of it too, where its leader went on SIGTERM), and to our group's stragglers
    send(signal.SIGKILL, [p.pid for p in alive if p.pid in alone])
    psutil.wait_procs(alive, timeout=10)
