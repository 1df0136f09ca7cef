"""The model server: generation in a process of its own, so the web UI never imports torch.

    python -m backend.serving.modelserver     (started and owned by ``backend.serving.modelclient.ModelClient``)

Protocol: one JSON request per line on stdin, ``{"id", "base_model", "adapter_dir", "messages", "max_new_tokens",
"temperature", "top_p", "repetition_penalty", "stop", "seed"}``, or ``{"op": "cancel", "id"}`` to stop a reply
early; replies on stdout, one JSON object per line: ``{"id", "delta"}`` pieces, then
``{"id", "done": true}`` or ``{"id", "error": "..."}``. It keeps the last model it loaded, so a conversation pays
the load once. Logs go to stderr.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

from backend.logs import quiet_hf
from backend.settings import Paths

log = logging.getLogger("backend.serving.modelserver")
WAIT_POLL_S = 5.0
CHAT_LEASE = "chat"  # this server's lease on the GPU (backend.jobs.accelerator), held while a model is loaded


def gpu_wait_message(needed_bytes: int, free_bytes: int, training_job: str | None) -> str | None:
    """Why a request must wait for the GPU, or None. Pure: the policy, tested without a GPU.

    Only a running training job is waited for: it will end and free its memory. If nothing else holds the GPU,
    loading goes ahead (and an out-of-memory error is reported with its fix, as for training).
    """
    if training_job is None or needed_bytes <= free_bytes:
        return None
    gib = 1024**3
    return (
        f"The GPU is busy training {training_job}: this model needs about {needed_bytes / gib:.1f} GB and "
        f"{free_bytes / gib:.1f} GB are free. Your request waits and starts when the training ends. To "
        f"go first, pause the training: Cancel {training_job} in the Runs tab (it saves a checkpoint), then "
        "press Resume there when you are done; it continues where it stopped."
    )


def _model_bytes(base_model: str, paths: Paths) -> int:
    """Weights on disk x 1.2 (activations, KV cache, CUDA context): a floor, not an exact figure."""
    from backend.models import registry as models

    ref = models.resolve(base_model, paths)
    folder = Path(ref.location) if ref.kind != "hub" else None
    if folder is None:
        cfg = models.hub_cached_file(ref.location, "config.json")
        folder = Path(cfg).parent if cfg else None
    if folder is None or not folder.is_dir():
        return 0
    size = sum(f.stat().st_size for f in folder.iterdir() if f.suffix in (".safetensors", ".bin"))
    return int(size * 1.2)


def _wait_for_gpu(base_model: str, paths: Paths, notify, cancelled) -> None:
    """Take the accelerator's lease for chat (backend.jobs.accelerator): wait, telling the client why, while a training
    job holds the GPU memory this model needs. No GPU: nothing to wait for."""
    import torch

    from backend.core.store import Store
    from backend.jobs.accelerator import Accelerator

    if not torch.cuda.is_available():
        return
    needed = _model_bytes(base_model, paths)

    def free() -> int:
        return torch.cuda.mem_get_info()[0]

    Accelerator(Store(paths.db)).wait_for_turn(
        CHAT_LEASE,
        needed / 2**30,
        notify=notify,
        cancelled=cancelled,
        fits=lambda: needed <= free(),
        describe=lambda job: gpu_wait_message(needed, free(), job) or "",
        poll_s=WAIT_POLL_S,
    )


def serve(stdin: Any = None, stdout: Any = None) -> None:
    from backend.errors import explain
    from backend.models.registry import ModelError
    from backend.serving.generate import Decoding, ModelPool, stream

    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    paths = Paths.from_env()
    pool = ModelPool(paths)
    from backend.settings import SettingsError, load_settings

    try:
        idle_s = load_settings().model_idle_s
    except SettingsError:
        idle_s = load_settings({}).model_idle_s
    requests: queue.Queue[dict[str, Any] | None] = queue.Queue()
    cancelled: set[Any] = set()

    def read() -> None:  # a reader thread, so a cancel can arrive while a reply is being generated
        for line in stdin:
            if not line.strip():
                continue
            msg = json.loads(line)
            if msg.get("op") == "cancel":
                cancelled.add(msg.get("id"))
            else:
                requests.put(msg)
        requests.put(None)

    def send(obj: dict[str, Any]) -> None:
        stdout.write(json.dumps(obj) + "\n")
        stdout.flush()

    from backend.core.store import Store
    from backend.jobs.accelerator import Accelerator

    accelerator = Accelerator(Store(paths.db))

    def unload(why: str) -> None:
        log.info("%s: unloading %s", why, pool.loaded.base_model if pool.loaded else "the model")
        pool.unload()
        accelerator.release(CHAT_LEASE)

    threading.Thread(target=read, daemon=True).start()
    send({"ready": True})
    last_used = time.monotonic()
    while True:
        try:
            req = requests.get(timeout=min(idle_s, WAIT_POLL_S))
        except queue.Empty:
            if pool.loaded is not None:
                if accelerator.asked_to_release(CHAT_LEASE):
                    unload("a training job needs the GPU")
                elif time.monotonic() - last_used > idle_s:
                    unload(f"idle for {idle_s:.0f} s")
            continue
        last_used = time.monotonic()
        if req is None:
            break
        rid = req.get("id")
        try:
            decoding = Decoding(
                max_new_tokens=int(req.get("max_new_tokens", 128)),
                temperature=float(req.get("temperature", 0.0)),
                top_p=float(req.get("top_p", 1.0)),
                repetition_penalty=float(req.get("repetition_penalty", 1.0)),
                stop=tuple(req.get("stop") or ()),
                seed=int(req.get("seed", 0)),
            )
            # "adapters": several columns (None = the base alone) answered in turn by one base model in memory.
            columns = req["adapters"] if "adapters" in req else [req.get("adapter_dir") or None]
            if pool.loaded is None or pool.loaded.base_model != req["base_model"]:
                _wait_for_gpu(
                    req["base_model"],
                    paths,
                    lambda m, rid=rid: send({"id": rid, "wait": m}),
                    lambda rid=rid: rid in cancelled,
                )
            like = next((a for a in columns if a), None)  # the base alone answers in the runs' number format
            for col, adapter in enumerate(columns):
                loaded, mode = pool.use(req["base_model"], adapter, like=like)
                with mode:
                    for piece in stream(
                        loaded,
                        req["messages"],
                        decoding=decoding,
                        should_stop=lambda rid=rid: rid in cancelled,
                    ):
                        if piece:
                            send({"id": rid, "delta": piece, "column": col})
                if rid in cancelled:
                    break
            send({"id": rid, "done": True})
        except ModelError as exc:
            send({"id": rid, "error": str(exc)})
        except Exception as exc:  # noqa: BLE001 - the server must survive any one bad request
            log.exception("request %s failed", rid)
            send({"id": rid, "error": explain(exc)})


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    quiet_hf()
    serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
