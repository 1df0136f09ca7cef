"""A stand-in for ``python -m backend.training.worker <job_dir>`` in the manager tests: no torch, ends the way MODE says.

    python tests/fake_worker.py MODE <job_dir>

MODE: succeed, fail, crash, hang, stubborn, sigkill_self, slow_succeed (succeeds once the test writes ``finish``
into the job dir). The job dir stays on the command line
because the manager recognises its workers by it (``/proc/<pid>/cmdline``). Once the signal handlers are in place
the worker writes ``ready`` into the job dir, so a test can wait for that before it cancels.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.training.recipe import RunResult  # noqa: E402

MODES = ("succeed", "fail", "crash", "hang", "stubborn", "sigkill_self", "slow_succeed")


def succeeded(job_dir: Path) -> RunResult:
    return RunResult(
        status="succeeded",
        adapter_dir=str(job_dir / "adapter"),
        steps=5,
        total_steps=5,
        first_loss=2.5,
        final_loss=0.25,
        train_seconds=0.1,
        device="cpu",
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in MODES or not Path(argv[1]).is_dir():
        print(f"usage: fake_worker.py {{{','.join(MODES)}}} <job_dir>", file=sys.stderr)
        return 2
    mode, job_dir = argv[0], Path(argv[1])

    if mode == "hang":

        def on_term(signum, frame):
            RunResult(status="cancelled", reason="stopped at step 2 on request", steps=2, total_steps=5).save(
                job_dir
            )
            sys.exit(0)

        signal.signal(signal.SIGTERM, on_term)
    elif mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    (job_dir / "ready").write_text(str(os.getpid()))
    print(f"fake worker {mode} pid {os.getpid()}", flush=True)

    if mode == "succeed":
        succeeded(job_dir).save(job_dir)
        return 0
    if mode == "slow_succeed":  # runs until the test writes `finish` into the job dir (at most a minute)
        deadline = time.monotonic() + 60
        while not (job_dir / "finish").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        succeeded(job_dir).save(job_dir)
        return 0
    if mode == "fail":
        RunResult(status="failed", reason="boom: bad row 7").save(job_dir)
        return 1
    if mode == "crash":
        return 3
    if mode == "sigkill_self":
        os.kill(os.getpid(), signal.SIGKILL)
    while True:  # hang, stubborn
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
