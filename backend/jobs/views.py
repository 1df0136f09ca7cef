"""Plain-data views of jobs and datasets, shared by the CLI (``--json``), the Gradio API and the UI tables."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from backend.core.status import JobStatus
from backend.core.store import DatasetRecord, JobRecord, Store
from backend.jobs import handoff
from backend.jobs.manager import queue_positions


def dataset_view(d: DatasetRecord) -> dict[str, Any]:
    report = d.info.get("report", {})
    return {
        "id": d.id,
        "name": d.name,
        "rows": d.n_rows,
        "source_file": d.source_file,
        "mapping": d.info.get("mapping", {}),
        "skipped_rows": report.get("rows_in_file", d.n_rows) - d.n_rows,
        "created": _iso(d.created),
        "path": d.path,
        "shape": d.info.get("shape", "prompt_response"),
        "train_rows": report.get("train_rows", d.n_rows),
        "validation_rows": report.get("validation_rows", 0),
        "sha256": d.info.get("sha256", ""),
    }


def job_view(store: Store, job: JobRecord, positions: dict[str, int] | None = None) -> dict[str, Any]:
    positions = queue_positions(store) if positions is None else positions
    progress = store.get_progress(job.id)
    losses = store.metrics(job.id, "loss")
    result = job.result or {}
    adapter = result.get("adapter_dir") or ""
    dataset = store.get_dataset(job.dataset_id)
    view: dict[str, Any] = {
        "id": job.id,
        "status": job.status.value,
        "reason": job.reason,
        "dataset": dataset.name if dataset else f"{job.dataset_id} (deleted)",
        "dataset_id": job.dataset_id,
        "preset": job.preset,
        "base_model": job.config.get("base_model"),
        "method": job.config.get("method"),
        "scores_after": int(job.config.get("score_examples", 0) or 0),  # held-out examples scored at the end
        "created": _iso(job.created),
        "queue_position": positions.get(job.id),
        "pid": job.pid if job.status is JobStatus.RUNNING else None,
        "step": progress.step if progress else 0,
        "activity": progress.activity if progress and job.status is JobStatus.RUNNING else "",
        "total_steps": progress.total_steps if progress else None,
        "eta_s": round(progress.eta_s, 1)
        if progress and progress.eta_s is not None and job.status is JobStatus.RUNNING
        else None,
        "last_loss": losses[-1][2] if losses else None,
        "first_loss": losses[0][2] if losses else None,
        "cancel_requested": job.cancel_requested,
        "adapter_dir": adapter if adapter and Path(adapter).is_dir() else None,
        "job_dir": job.job_dir,
        "elapsed_s": round((job.finished or time.time()) - job.started, 1) if job.started else None,
        **_training_view(store, job),
    }
    return view


def _training_view(store: Store, job: JobRecord) -> dict[str, Any]:
    """What the training engine adds: where a run came from, whether it can be resumed, its latest measurements."""
    from backend.jobs.handoff import last_checkpoint

    result = job.result or {}
    extra = result.get("extra") or {}
    resumable = (
        job.status in (JobStatus.CANCELLED, JobStatus.FAILED) and last_checkpoint(job.job_dir) is not None
    )

    last = store.last_metrics(
        job.id, ("tokens_per_s", "eval_loss", "peak_gpu_gb", "eval_rewards/accuracies", "rewards/accuracies")
    )
    # A preference run's last reward accuracy (TRL's: the better answer gained more than the worse one since the
    # start), on the validation pairs when it has them, else on the training batches; None for other runs.
    on = "validation" if "eval_rewards/accuracies" in last else "training"
    return {
        "resumed_from": job.resumed_from or None,
        "retry_of": job.retry_of or None,
        "resumable": resumable,
        "tokens_per_s": last.get("tokens_per_s"),
        "eval_loss": last.get("eval_loss"),
        "peak_gpu_gb": extra.get("peak_gpu_gb") or last.get("peak_gpu_gb"),
        "batching": extra.get("batching"),
        "reward_accuracy": last.get("eval_rewards/accuracies", last.get("rewards/accuracies")),
        "reward_accuracy_on": on,
    }


def job_detail(store: Store, job: JobRecord) -> dict[str, Any]:
    view = job_view(store, job)
    metrics: dict[str, list[list[float]]] = {}
    for step, name, value in store.metrics(job.id):
        metrics.setdefault(name, []).append([step, value])
    view["metrics"] = metrics
    view["config"] = job.config
    view["result"] = job.result
    view["scores"] = handoff.read_scores(job.job_dir)  # eval.json: the one place a run's scores are kept
    return view


def status_line(v: dict[str, Any]) -> str:
    """One human line: what the job is doing now."""
    s = v["status"]
    if s == "queued":
        pos = v.get("queue_position")
        return f"queued (position {pos} in line)" if pos else "queued"
    if s == "running":
        total = v.get("total_steps")
        if v.get("activity"):
            return f"running: {v['activity']}"
        if not total:
            return "running: loading the model and data"
        if v.get("step") == total:
            then = ", then scoring it on held-out examples" if v.get("scores_after") else ""
            return f"running: step {total}/{total}, training done; saving{then}"
        eta = v.get("eta_s")
        return f"running: step {v['step']}/{total}" + (
            f", about {format_duration(eta)} left" if eta is not None else ""
        )
    if s == "succeeded":
        loss = v.get("last_loss")
        return "succeeded" + (f": final loss {loss:.4f}" if loss is not None else "")
    return f"{s}: {v['reason']}" if v.get("reason") else s


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def log_tail(job: JobRecord, lines: int = 14) -> str:
    path = Path(job.job_dir) / "worker.log"
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no log yet: the job has not started)"
    return "\n".join(text.splitlines()[-lines:])


def _iso(t: float | None) -> str | None:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else None
