"""One owner of the accelerator: who may hold the GPU's memory, and when.

Training jobs come first. Everything else that loads a model on the GPU (the chat/compare model server, scoring,
merged export) asks here for a *lease* first: it waits, telling the person why, while a training job runs, then
holds the lease (with the memory it needs) until it unloads. When a queued job wants the GPU, the scheduler asks
every holder to let go; the model server unloads its idle model and releases, and the job starts. So a chat model
kept loaded never makes Train refuse a job or run out of memory, and Score never loads a model beside a training
job. Leases live in the store (one table), so every process sees the same state; a lease whose process has died
is dropped. Torch-free; on a machine without a GPU nobody needs a lease.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from backend import supervisor
from backend.core.status import JobStatus
from backend.core.store import Lease, Store

WAIT_POLL_S = 2.0


def waiting_message(holder_kind: str, job_id: str) -> str:
    what = {"chat": "Your request", "score": "Scoring", "export": "The export"}.get(holder_kind, "This")
    return (
        f"The GPU is busy training {job_id}, which goes first. {what} waits and starts by itself when the "
        f"training ends. To go first, pause the training: Cancel {job_id} in the Runs tab (it saves a checkpoint), "
        "then press Resume there when you are done; it continues where it stopped."
    )


class Accelerator:
    def __init__(self, store: Store):
        self.store = store

    # -- everything but training ------------------------------------------------------------------------------

    def wait_for_turn(
        self,
        holder: str,
        gb: float,
        *,
        notify: Callable[[str], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
        fits: Callable[[], bool] | None = None,
        describe: Callable[[str], str] | None = None,
        poll_s: float = WAIT_POLL_S,
    ) -> bool:
        """Block while a training job runs (telling ``notify`` why; ``describe(job id)`` words it), unless
        ``fits()`` says there is room beside it; then take the lease. False if ``cancelled()`` first."""
        kind = holder.split(":", 1)[0]
        while True:
            if cancelled is not None and cancelled():
                return False
            running = self.store.list_jobs((JobStatus.RUNNING,))
            if not running or (fits is not None and fits()):
                self.store.put_lease(holder, gb, os.getpid())
                return True
            if notify is not None:
                notify((describe or (lambda job: waiting_message(kind, job)))(running[0].id))
            time.sleep(poll_s)

    def release(self, holder: str) -> None:
        self.store.drop_lease(holder)

    def asked_to_release(self, holder: str) -> bool:
        lease = next((x for x in self.leases() if x.holder == holder), None)
        return lease is not None and lease.release_requested

    # -- the scheduler ----------------------------------------------------------------------------------------

    def leases(self) -> list[Lease]:
        """The leases held by live processes (those of dead ones are dropped on the way)."""
        live = []
        for lease in self.store.list_leases():
            if supervisor.alive(lease.pid):
                live.append(lease)
            else:
                self.store.drop_lease(lease.holder)
        return live

    def clear_for_training(self) -> list[Lease]:
        """Ask every holder to let go (a queued job wants the GPU); returns those still holding it."""
        held = self.leases()
        for lease in held:
            if not lease.release_requested:
                self.store.request_lease_release(lease.holder)
        return held

    def held_gb(self) -> float:
        """Memory held by chat, scoring or export: theirs until a job needs it, then given back."""
        return sum(lease.gb for lease in self.leases())
