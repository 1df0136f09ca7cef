"""The model server: generation in a process of its own, so the web UI never imports torch.

    python -m backend.modelserver     (started and owned by ``backend.modelclient.ModelClient``)

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
from typing import Any

from backend.logs import quiet_hf
from backend.settings import Paths

log = logging.getLogger("backend.modelserver")


def serve(stdin: Any = None, stdout: Any = None) -> None:
    from backend.generate import Decoding, load, stream
    from backend.models import ModelError
    from backend.worker import explain

    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    paths = Paths.from_env()
    loaded = None
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

    threading.Thread(target=read, daemon=True).start()
    send({"ready": True})
    while (req := requests.get()) is not None:
        rid = req.get("id")
        try:
            key = (req["base_model"], req.get("adapter_dir") or None)
            if loaded is None or (loaded.base_model, loaded.adapter_dir) != key:
                loaded = None  # free the previous model before loading the next
                log.info("loading %s with adapter %s", *key)
                loaded = load(key[0], key[1], paths)
            decoding = Decoding(
                max_new_tokens=int(req.get("max_new_tokens", 128)),
                temperature=float(req.get("temperature", 0.0)),
                top_p=float(req.get("top_p", 1.0)),
                repetition_penalty=float(req.get("repetition_penalty", 1.0)),
                stop=tuple(req.get("stop") or ()),
                seed=int(req.get("seed", 0)),
            )
            for piece in stream(loaded, req["messages"], decoding=decoding, should_stop=lambda rid=rid: rid in cancelled):
                if piece:
                    send({"id": rid, "delta": piece})
            send({"id": rid, "done": True})
        except ModelError as exc:
            send({"id": rid, "error": str(exc)})
        except Exception as exc:  # noqa: BLE001 - the server must survive any one bad request
            log.exception("request %s failed", rid)
            send({"id": rid, "error": explain(exc)})


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_hf()
    serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
