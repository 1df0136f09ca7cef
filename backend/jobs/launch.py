"""The command line that runs a job's worker: ``python -m backend.training.worker <job dir>``, or ``accelerate
launch`` of it for a job on several devices. Pure apart from reading the job's spec; the scheduler starts it through
``backend.supervisor``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from backend import supervisor
from backend.jobs.config import RunConfig
from backend.jobs.handoff import JobSpec
from backend.models import devices


def default_worker_command(job_dir: Path) -> list[str]:
    """``python -m backend.training.worker``, or ``accelerate launch`` of it for a job on several devices."""
    spec = JobSpec.load(job_dir)
    cfg = RunConfig.parse(spec.config)
    if cfg.num_devices > 1:
        on_cpu = cfg.device == "cpu" or (cfg.device == "auto" and not devices.gpu_inventory())
        return accelerate_command(cfg, str(job_dir), port=supervisor.free_port(), on_cpu=on_cpu)
    return [sys.executable, "-m", "backend.training.worker", str(job_dir)]


def accelerate_command(
    cfg: RunConfig, job_dir: str, *, port: int, on_cpu: bool, python: str = sys.executable
) -> list[str]:
    """``accelerate launch`` of the worker for ``cfg.num_devices`` processes: DDP, or FSDP (full shard, auto-wrap of
    the transformer blocks, LoRA-friendly settings) for models that do not fit on one card. On a CPU the processes
    talk over gloo: ``--multi_gpu`` starts them through torchrun, and the worker's ``use_cpu`` makes accelerate
    pick gloo (``--cpu`` alone would start a single process)."""
    cmd = [
        python,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(cfg.num_devices),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",  # the Trainer's bf16 / fp16 settings decide
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
    ]
    if cfg.multi_device == "fsdp" and not on_cpu:
        cmd += [
            "--use_fsdp",
            # FSDP1 is the combination seen to work with 4-bit bitsandbytes weights (stored in bf16, see bnb_config).
            "--fsdp_version",
            "1",
            "--fsdp_sharding_strategy",
            "FULL_SHARD",
            "--fsdp_auto_wrap_policy",
            "TRANSFORMER_BASED_WRAP",
            "--fsdp_state_dict_type",
            "SHARDED_STATE_DICT",
            "--fsdp_cpu_ram_efficient_loading",
            "true",
            "--fsdp_sync_module_states",
            "true",
            "--fsdp_use_orig_params",
            "true",  # frozen base and trainable adapters share FSDP units
        ]
    else:
        cmd += ["--multi_gpu"]
    return cmd + ["-m", "backend.training.worker", str(job_dir)]
