"""A stand-in worker (no torch) for the manager's resume and out-of-memory tests.

    python tests/fake_oom_worker.py MODE <job_dir>

MODE ``oom``: with batch_size above 2, saves a checkpoint at step 3 (the files the trainer writes), then fails as out
of GPU memory at step 5, the way ``backend.training.recipe.failure`` reports it; with a smaller batch it succeeds. ``checkpoint_then_crash``: saves the checkpoint, then exits without a
result (like a worker killed by the system). ``succeed``: writes an adapter folder and records the checkpoint it
would have resumed from and whether it had an adapter to start from (``continue_from``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.jobs.handoff import START_ADAPTER, JobSpec
from backend.training.recipe import RunResult  # noqa: E402


def write_checkpoint(job_dir: Path, step: int) -> Path:
    ckpt = job_dir / "checkpoints" / f"checkpoint-{step}"
    ckpt.mkdir(parents=True, exist_ok=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (ckpt / "adapter_model.safetensors").write_bytes(b"fake")
    return ckpt


def main(mode: str, job_dir: Path) -> int:
    spec = JobSpec.load(job_dir)
    if mode == "oom" and spec.config["batch_size"] > 2:
        ckpt = write_checkpoint(job_dir, 3)
        RunResult(
            status="failed",
            reason="out of GPU memory at step 5 of 10. Fix: ...",
            steps=5,
            total_steps=10,
            extra={"out_of_memory": True, "step": 5, "checkpoint": str(ckpt)},
        ).save(job_dir)
        return 1
    if mode == "checkpoint_then_crash":
        write_checkpoint(job_dir, 3)
        return 3
    adapter = job_dir / "adapter"
    adapter.mkdir(exist_ok=True)
    (adapter / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": spec.config["base_model"]})
    )
    RunResult(
        status="succeeded",
        steps=10,
        total_steps=10,
        adapter_dir=str(adapter),
        extra={
            "resume_from": spec.resume_from,
            "batch_size": spec.config["batch_size"],
            "grad_accum": spec.config["grad_accum"],
            "start_adapter": (job_dir / START_ADAPTER / "adapter_config.json").is_file(),
        },
    ).save(job_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
