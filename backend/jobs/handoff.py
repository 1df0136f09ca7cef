"""What passes between the scheduler and a worker, as files in the job's folder: the typed hand-off.

``job.json`` (``JobSpec``: what to run, written once by the scheduler when it queues the job, validated again by
the worker), ``result.json`` (``RunResult``: how it ended, written by the worker; the scheduler decides the job's
status from it and the worker's exit), ``checkpoints/checkpoint-<step>/`` (the trainer's, to resume from) and
``eval.json`` (the held-out scores). Torch-free: the scheduler, the views and the worker all read these.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

START_ADAPTER = (
    "start-adapter"  # in a job folder: the copy of the adapter a run continues from (continue_from)
)


@dataclass
class JobSpec:
    """Everything a worker needs, written by the manager as ``job.json`` in the job directory."""

    job_id: str
    home: str
    dataset_id: str
    dataset_path: str
    config: dict[str, Any]
    shape: str = "prompt_response"  # the dataset's shape (backend.data.shapes.SHAPES)
    resume_from: str = ""  # a checkpoint folder to continue from (a resumed or retried job)
    submitted_at: float = 0.0

    @classmethod
    def load(cls, job_dir: str | Path) -> JobSpec:
        data = json.loads((Path(job_dir) / "job.json").read_text())
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def save(self, job_dir: str | Path) -> None:
        (Path(job_dir) / "job.json").write_text(json.dumps(asdict(self), indent=2))


@dataclass
class RunResult:
    status: str  # "succeeded" | "cancelled" | "failed"
    reason: str = ""
    adapter_dir: str = ""
    steps: int = 0
    total_steps: int = 0
    first_loss: float | None = None
    final_loss: float | None = None
    train_seconds: float = 0.0
    device: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, job_dir: str | Path) -> None:
        tmp = Path(job_dir) / "result.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(Path(job_dir) / "result.json")


def read_result(job_dir: str | Path) -> RunResult | None:
    path = Path(job_dir) / "result.json"
    try:
        return RunResult(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def last_checkpoint(job_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a job (one the trainer finished writing), or None."""
    folder = Path(job_dir) / "checkpoints"
    found = []
    for d in folder.glob("checkpoint-*") if folder.is_dir() else []:
        try:
            step = int(d.name.split("-", 1)[1])
        except ValueError:
            continue
        if (d / "trainer_state.json").is_file() and any(d.glob("adapter_model.*")):
            found.append((step, d))
    return max(found)[1] if found else None


def checkpoint_step(checkpoint: str | Path) -> int:
    return int(json.loads((Path(checkpoint) / "trainer_state.json").read_text())["global_step"])


def read_scores(job_dir: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(job_dir) / "eval.json").read_text())
    except (OSError, ValueError):
        return None
