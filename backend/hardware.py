"""Which device trains, and which number formats it supports (imported only in worker processes)."""

from __future__ import annotations

from backend.hf import DeviceCaps


def detect(preference: str = "auto") -> DeviceCaps:
    import torch

    if preference in ("auto", "cuda") and torch.cuda.is_available():
        return DeviceCaps("cuda", bf16=torch.cuda.is_bf16_supported(), fp16=True, name=torch.cuda.get_device_name(0))
    if preference == "cuda":
        raise RuntimeError("device = cuda was asked for, but no CUDA GPU is visible. Fix: use device auto or cpu.")
    mps = getattr(torch.backends, "mps", None)
    if preference in ("auto", "mps") and mps is not None and mps.is_available():
        return DeviceCaps("mps", bf16=False, fp16=False, name="Apple MPS")  # fp32: mixed precision on MPS is not dependable
    if preference == "mps":
        raise RuntimeError("device = mps was asked for, but Apple MPS is not available. Fix: use device auto or cpu.")
    # fp32 on CPU: bf16 autocast on CPU is slow on most chips and changes results; correctness first.
    return DeviceCaps("cpu", bf16=False, fp16=False, name="CPU")
