"""Which device trains, and which number formats it supports.

``detect`` imports torch (worker processes only). ``gpu_inventory`` does not: the web UI and the job manager use it
(through ``nvidia-smi``) to check that a job fits on the GPU before it is queued.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass

from backend.hf import DeviceCaps


def detect(preference: str = "auto") -> DeviceCaps:
    import torch

    if preference in ("auto", "cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return DeviceCaps(
            "cuda",
            bf16=torch.cuda.is_bf16_supported(),  # Ampere and newer; never ask for bf16 where it is emulated
            fp16=True,
            name=torch.cuda.get_device_name(0),
            memory_gb=round(props.total_memory / 2**30, 2),
        )
    if preference == "cuda":
        raise RuntimeError(
            "device = cuda was asked for, but no CUDA GPU is visible. Fix: use device auto or cpu."
        )
    mps = getattr(torch.backends, "mps", None)
    if preference in ("auto", "mps") and mps is not None and mps.is_available():
        return DeviceCaps(
            "mps", bf16=False, fp16=False, name="Apple MPS"
        )  # fp32: mixed precision on MPS is not dependable
    if preference == "mps":
        raise RuntimeError(
            "device = mps was asked for, but Apple MPS is not available. Fix: use device auto or cpu."
        )
    # fp32 on CPU: bf16 autocast on CPU is slow on most chips and changes results; correctness first.
    return DeviceCaps("cpu", bf16=False, fp16=False, name="CPU")


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    total_gb: float
    used_gb: float
    uuid: str = ""

    @property
    def free_gb(self) -> float:
        return max(self.total_gb - self.used_gb, 0.0)


QUERY = "--query-gpu=name,memory.total,memory.used,uuid"


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """Rows of ``nvidia-smi --query-gpu=name,memory.total,memory.used[,uuid] --format=csv,noheader,nounits``
    (memory in MiB)."""
    gpus = []
    for line in (line for line in text.splitlines() if line.strip()):
        parts = [p.strip() for p in line.split(",")]
        uuid = parts.pop() if len(parts) >= 4 and parts[-1].startswith("GPU-") else ""
        if len(parts) < 3:
            continue
        name = ",".join(parts[:-2])
        try:
            gpus.append(Gpu(len(gpus), name, float(parts[-2]) / 1024, float(parts[-1]) / 1024, uuid))
        except ValueError:
            continue  # "[N/A]" on some virtual GPUs: unknown memory, so nothing to check against
    return gpus


_CACHE: dict[str, tuple[float, list[Gpu]]] = {}


def gpu_inventory(max_age_s: float = 10.0) -> list[Gpu]:
    """The NVIDIA GPUs of this machine with their memory, without importing torch; [] when there are none."""
    cached = _CACHE.get("gpus")
    if cached and time.monotonic() - cached[0] < max_age_s:
        return cached[1]
    exe = shutil.which("nvidia-smi")
    gpus: list[Gpu] = []
    if exe:
        try:
            out = subprocess.run(
                [exe, QUERY, "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
            gpus = parse_nvidia_smi(out)
        except (OSError, subprocess.SubprocessError):
            gpus = []
    _CACHE["gpus"] = (time.monotonic(), gpus)
    return gpus


def gpu_memory_of_groups(process_groups: list[int], gpu_index: int) -> float:
    """GB that processes of these process groups (our workers: each leads its own group) hold on one GPU."""
    groups = {g for g in process_groups if g}
    exe = shutil.which("nvidia-smi")
    if not groups or not exe:
        return 0.0
    gpus = {g.uuid: g.index for g in gpu_inventory()}
    try:
        out = subprocess.run(
            [exe, "--query-compute-apps=gpu_uuid,pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0.0
    total = 0.0
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3 or gpus.get(parts[0]) != gpu_index:
            continue
        try:
            pid, used = int(parts[1]), float(parts[2])
            if os.getpgid(pid) in groups:
                total += used / 1024
        except (ValueError, OSError):
            continue
    return total
