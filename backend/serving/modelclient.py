"""The web UI's handle on the model server (``backend.serving.modelserver``): starts it on first use, streams replies.

Torch-free. One request at a time (a lock), because one process owns the model; a server that died is
restarted on the next request, and its last log lines are shown in the error.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

from backend import supervisor
from backend.errors import TuneDeckError
from backend.settings import Paths

WAITING = -1  # the column number of "your request waits because..." messages


class ModelServerError(TuneDeckError, RuntimeError):
    pass


class ModelClient:
    def __init__(self, paths: Paths):
        self.paths = paths
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._log_path = paths.logs / "modelserver.log"

    def _ensure(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        with open(self._log_path, "ab") as log:
            self._proc = supervisor.start(
                supervisor.python("-m", "backend.serving.modelserver"),
                self.paths,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                bufsize=1,
            )
        ready = self._proc.stdout.readline() if self._proc.stdout else ""
        if not ready:
            raise ModelServerError(f"the model server did not start; see {self._log_path}")
        return self._proc

    def compare(
        self,
        base_model: str,
        adapters: list[str | None],
        messages: list[dict[str, str]],
        **decoding: Any,
    ) -> Iterator[list[str]]:
        """Answer with the base (None) and each adapter in turn, one base in memory; yields all columns so far."""
        texts = ["" for _ in adapters]
        for column, piece in self._request(
            {"base_model": base_model, "adapters": adapters, "messages": messages, **decoding}
        ):
            if column == WAITING:
                yield [f"⏳ {piece}" for _ in adapters]
                continue
            texts[column] += piece
            yield list(texts)

    def stream(
        self,
        base_model: str,
        adapter_dir: str | None,
        messages: list[dict[str, str]],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        stop: list[str] | None = None,
        seed: int = 0,
    ) -> Iterator[str]:
        """Yield the reply so far, growing piece by piece. Closing the iterator early stops the generation."""
        text = ""
        for column, piece in self._request(
            {
                "base_model": base_model,
                "adapter_dir": adapter_dir,
                "messages": messages,
                "max_new_tokens": max_new_tokens,
                "temperature": temperature,
                "top_p": top_p,
                "repetition_penalty": repetition_penalty,
                "stop": stop or [],
                "seed": seed,
            }
        ):
            if column == WAITING:
                yield f"⏳ {piece}"
                continue
            text += piece
            yield text

    def _request(self, req: dict[str, Any]) -> Iterator[tuple[int, str]]:
        """Send one request; yield (column, piece) until it is done, or (WAITING, why) while it waits for the GPU.
        Closing early cancels it in the server."""
        with self._lock:
            proc = self._ensure()
            rid = next(self._ids)
            req = {**req, "id": rid}
            assert proc.stdin and proc.stdout
            proc.stdin.write(json.dumps(req) + "\n")
            proc.stdin.flush()
            finished = False
            try:
                for line in proc.stdout:
                    msg = json.loads(line)
                    if msg.get("id") != rid:
                        continue
                    if "delta" in msg:
                        yield msg.get("column", 0), msg["delta"]
                    elif "wait" in msg:
                        yield WAITING, msg["wait"]
                    elif "error" in msg:
                        finished = True
                        raise ModelServerError(msg["error"])
                    elif msg.get("done"):
                        finished = True
                        return
                finished = True
                raise ModelServerError(f"the model server stopped unexpectedly; see {self._log_path}")
            finally:
                if (
                    not finished
                ):  # the caller stopped listening (the Stop button): stop generating, drain its reply
                    self._cancel(proc, rid)

    def _cancel(self, proc: subprocess.Popen, rid: int) -> None:
        assert proc.stdin and proc.stdout
        try:
            proc.stdin.write(json.dumps({"op": "cancel", "id": rid}) + "\n")
            proc.stdin.flush()
            for line in proc.stdout:
                msg = json.loads(line)
                if msg.get("id") == rid and ("done" in msg or "error" in msg):
                    return
        except (OSError, ValueError):
            self.close()

    def close(self) -> None:
        if self._proc is not None:
            supervisor.stop(self._proc, grace_s=10)
        self._proc = None
