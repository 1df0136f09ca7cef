"""Where a base model comes from, checked without importing torch (the web UI uses this before queueing a job).

A base model is ``tiny-offline`` (built on this machine), a local folder, or a Hugging Face Hub id. A Hub id that is
neither cached nor reachable fails here within seconds, with a message that says why and what to do.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from backend.config import TINY_MODEL
from backend.settings import Paths

TINY_DESCRIPTION = (
    "tiny-offline is a ~0.16M-parameter Llama-shaped model built on this machine with random weights. "
    "It learns your examples by heart and knows nothing else; use a real model (e.g. Qwen/Qwen2.5-0.5B-Instruct) "
    "for a useful assistant."
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelError(ValueError):
    pass


@dataclass(frozen=True)
class ModelRef:
    name: str
    kind: str  # "tiny" | "local" | "hub"
    location: str  # folder for tiny/local, repo id for hub

    @property
    def is_tiny(self) -> bool:
        return self.kind == "tiny"


def tiny_model_dir(paths: Paths) -> Path:
    return paths.models / TINY_MODEL


def resolve(name: str, paths: Paths) -> ModelRef:
    name = name.strip()
    if name == TINY_MODEL:
        return ModelRef(name, "tiny", str(tiny_model_dir(paths)))
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelError(
                f"The folder {local} has no config.json, so it is not a model folder. "
                "Fix: point to the folder that holds config.json and the weights."
            )
        return ModelRef(name, "local", str(local.resolve()))
    if name.startswith(("/", ".", "~")):
        raise ModelError(f"The model folder {name} does not exist. Fix: check the path.")
    if not _HUB_ID.match(name):
        raise ModelError(
            f"{name!r} is neither a local folder nor a Hugging Face Hub id (owner/name). "
            "Fix: use an id like Qwen/Qwen2.5-0.5B-Instruct, a folder path, or tiny-offline."
        )
    return ModelRef(name, "hub", name)


def hub_cached_file(repo_id: str, filename: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename)
    return found if isinstance(found, str) else None


def _hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or "huggingface.co"
    port = urlparse(endpoint).port or 443
    ok = [False]

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok[0] = True
        except OSError:
            pass

    # DNS lookups ignore socket timeouts, so bound the whole probe with a thread.
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return ok[0]


def _offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def check_available(name: str, paths: Paths) -> ModelRef:
    """Raise ModelError (fast, clear) when the model cannot be had on this machine right now."""
    ref = resolve(name, paths)
    if ref.kind != "hub" or hub_cached_file(ref.location, "config.json"):
        return ref
    why = (
        "Hugging Face Hub access is switched off on this machine (HF_HUB_OFFLINE=1)"
        if _offline_mode()
        else "the Hugging Face Hub cannot be reached (no internet connection?)"
    )
    if _offline_mode() or not _hub_reachable():
        raise ModelError(
            f"The model {name} is not downloaded on this machine and {why}. "
            "Fix: connect to the internet (and unset HF_HUB_OFFLINE), download it once with "
            f"`huggingface-cli download {name}`, give a local folder, or pick tiny-offline to try TuneDeck offline."
        )
    return ref


def tokenizer_file(ref: ModelRef) -> str | None:
    """The model's tokenizer.json if it is on this machine (for length checks without torch)."""
    if ref.kind == "hub":
        return hub_cached_file(ref.location, "tokenizer.json")
    f = Path(ref.location) / "tokenizer.json"
    return str(f) if f.is_file() else None


def build_tiny(paths: Paths) -> None:
    """Build tiny-offline in a child interpreter: the web UI process must not import torch."""
    import subprocess
    import sys

    from backend.settings import PROJECT_ROOT

    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from backend.tinymodel import build; build(sys.argv[1])",
            str(tiny_model_dir(paths)),
        ],
        check=True,
        cwd=str(PROJECT_ROOT),
        capture_output=True,
        timeout=300,
    )
