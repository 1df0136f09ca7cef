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

from backend.errors import RunFailed


@dataclass(frozen=True)
class DeviceCaps:
    """What the training device supports; decided by ``backend.models.devices.detect`` in the worker."""

    kind: str  # "cuda" | "mps" | "cpu"
    bf16: bool
    fp16: bool
    name: str = ""
    memory_gb: float = 0.0  # total memory of one GPU; 0 when not a GPU


def compute_dtype_name(caps: DeviceCaps) -> str:
    if caps.bf16:
        return "bfloat16"
    if caps.fp16:
        return "float16"
    return "float32"


def cpu_has_bf16() -> bool:
    """Does this CPU have bf16 matrix instructions (x86 AVX512-BF16 or AMX)? Torch-free (``/proc/cpuinfo``).

    Only there is bf16 faster than fp32 on a CPU (measured 1.3x for SmolLM2-135M LoRA steps on 2 AMD EPYC cores,
    bench/RESULTS.md); elsewhere torch emulates it, slower than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def detect(preference: str = "auto", precision: str = "auto") -> DeviceCaps:
    """The device to use and the number formats it will run in (``precision``: auto, fp32, bf16, fp16)."""
    import torch

    if preference in ("auto", "cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        bf16_ok = torch.cuda.is_bf16_supported()  # Ampere and newer; never ask for bf16 where it is emulated
        if precision == "bf16" and not bf16_ok:
            raise RunFailed(
                f"precision = bf16 was asked for, but {torch.cuda.get_device_name(0)} does not support bf16. "
                "Fix: use precision auto (fp16 on this GPU) or fp32."
            )
        return DeviceCaps(
            "cuda",
            bf16=bf16_ok and precision in ("auto", "bf16"),
            fp16=precision in ("auto", "fp16"),
            name=torch.cuda.get_device_name(0),
            memory_gb=round(props.total_memory / 2**30, 2),
        )
    if preference == "cuda":
        raise RunFailed(
            "device = cuda was asked for, but no CUDA GPU is visible. Fix: use device auto or cpu."
        )
    if precision == "fp16":
        raise RunFailed("precision = fp16 needs a CUDA GPU, and there is none. Fix: use precision auto.")
    mps = getattr(torch.backends, "mps", None)
    if preference in ("auto", "mps") and mps is not None and mps.is_available():
        return DeviceCaps(
            "mps", bf16=False, fp16=False, name="Apple MPS"
        )  # fp32: mixed precision on MPS is not dependable
    if preference == "mps":
        raise RunFailed(
            "device = mps was asked for, but Apple MPS is not available. Fix: use device auto or cpu."
        )
    # bf16 on a CPU only where it has bf16 instructions (or when asked for): elsewhere it is emulated and slower.
    bf16 = precision == "bf16" or (precision == "auto" and cpu_has_bf16())
    return DeviceCaps("cpu", bf16=bf16, fp16=False, name="CPU" + (" (bf16)" if bf16 else ""))


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


def ram_available_gb(our_pids: list[int] | None = None) -> float:
    """Memory a new job can count on (GB): what is free now, plus what our own running processes hold (a queued
    job starts only after them). Torch-free."""
    import psutil

    free = psutil.virtual_memory().available
    for pid in our_pids or []:
        try:
            proc = psutil.Process(pid)
            free += proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
        except (psutil.Error, OSError):
            continue
    return free / 2**30
