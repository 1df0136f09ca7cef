"""What went wrong, in words a person can act on. Torch-free: the CLI, the model server and the worker all use it."""

from __future__ import annotations

__all__ = ["OOM_FIX", "RunFailed", "explain", "is_out_of_memory"]

OOM_FIX = "lower batch_size (and raise grad_accum), lower max_length, turn on gradient_checkpointing, or use method qlora."


class RunFailed(RuntimeError):
    """A failure we can explain to the person; the message is shown as the job's reason."""


def is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc).lower()
    return (
        type(exc).__name__ == "OutOfMemoryError"
        or "cuda out of memory" in text
        or ("out of memory" in text and "cuda" in text)
    )


def explain(exc: BaseException) -> str:
    """A reason a person can act on, for the errors we know; the type and message otherwise."""
    text = str(exc)
    if isinstance(exc, RunFailed):
        return text
    name = type(exc).__name__
    if is_out_of_memory(exc):
        return f"out of GPU memory. Fix: {OOM_FIX}"
    if "trust_remote_code=True" in text:
        return (
            "this model ships Python code of its own, which TuneDeck runs only when you allow it for the run. Fix: "
            "if you trust the model's authors, turn on trust_remote_code (Train tab, More settings; or "
            "--set trust_remote_code=true); else pick a model that transformers supports itself."
        )
    if name in ("OfflineModeIsEnabled", "LocalEntryNotFoundError") or "offline" in text.lower():
        return f"the model could not be loaded offline: {text}. Fix: download it once with internet, or pick tiny-offline."
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{name}: {first}" if first else name
