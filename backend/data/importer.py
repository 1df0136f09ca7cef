"""Run a dataset import in a child process, with its progress streamed back.

The web app imports this way: a big file (a 500 MB CSV) is parsed in a process of its own, so the app's process
keeps serving pages, its memory does not grow with the file, and a failure in the import cannot take the app down.

    python -m backend.data.importer   # reads one JSON request on stdin; writes JSON lines on stdout:
                                 # {"progress": 0.4, "message": "..."} ..., then {"dataset": id, "report": {...}}
                                 # or {"error": "the DataError's message"} (exit status 2)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend import supervisor
from backend.data.readers import DataError
from backend.settings import Paths


def import_in_subprocess(
    paths: Paths, file: str, *, progress: Callable[[float, str], None] | None = None, **options: Any
) -> tuple[str, dict[str, Any], dict[str, int]]:
    """``backend.data.datasets.import_dataset`` in a child process. Returns (dataset id, report dict, resources)
    where resources has the child's peak memory (``max_rss_kb``). Raises DataError with the child's message."""
    from backend.data.datasets import new_dataset_id

    dataset_id = new_dataset_id()
    request = json.dumps({"file": str(file), "dataset_id": dataset_id, **options})
    proc = supervisor.start(
        supervisor.python("-m", "backend.data.importer"),
        paths,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin and proc.stdout and proc.stderr
    proc.stdin.write(request)
    proc.stdin.close()
    result: dict[str, Any] = {}
    for line in proc.stdout:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if "progress" in msg:
            if progress:
                progress(float(msg["progress"]), str(msg.get("message", "")))
        else:
            result = msg
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    resources = {"max_rss_kb": int(usage.ru_maxrss)}
    if "dataset" not in result:
        # Killed (out of memory, a signal) before it could clean up: its half-written version goes too.
        shutil.rmtree(Path(paths.tmp) / f"{dataset_id}.partial", ignore_errors=True)
    if "error" in result:
        raise DataError(result["error"])
    if proc.returncode != 0 or "dataset" not in result:
        last = err.strip().splitlines()[-1] if err.strip() else f"exit status {proc.returncode}"
        raise DataError(unexpected(Path(file).name, RuntimeError(f"the import process ended: {last}")))
    return result["dataset"], result["report"], resources


def unexpected(file_name: str, exc: BaseException) -> str:
    """The message for an import problem that has no message of its own (nothing was saved)."""
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return (
        f"{file_name}: TuneDeck could not read this file ({type(exc).__name__}: {first}). Nothing was saved. "
        "Fix: open it in a spreadsheet app and save it again as CSV (UTF-8), then upload that; if it still fails, "
        "please report it with the file."
    )


def main() -> int:
    from backend.core.store import Store
    from backend.data.datasets import import_dataset

    request = json.loads(sys.stdin.read())
    paths = Paths.from_env()
    store = Store(paths.db)
    file = request.pop("file")

    def progress(fraction: float, message: str) -> None:
        print(json.dumps({"progress": round(fraction, 4), "message": message}), flush=True)

    try:
        record, report = import_dataset(store, paths, file, progress=progress, **request)
    except DataError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 2
    except Exception as exc:  # noqa: BLE001 - a case we did not foresee: still a message, never a traceback
        import traceback

        traceback.print_exc()  # to stderr, for whoever reports it
        print(json.dumps({"error": unexpected(Path(file).name, exc)}), flush=True)
        return 2
    print(json.dumps({"dataset": record.id, "report": report.as_dict()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
