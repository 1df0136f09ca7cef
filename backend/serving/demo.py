"""Published demos: a standalone chat page for one run, in a process and on a port of its own.

    python -m backend.serving.demo <demo dir>        (started by ``start_demo``; ``tunedeck demo start RUN``)

The page offers only a chat with that run: no training, no data, no settings. A password is required by default:
one the person sets, or a generated one shown once. Only a salted PBKDF2 hash of it is written (in
``demos/<run>/demo.json``); the demo process checks logins against that hash. A Gradio share link is asked for
only on request; where it cannot be made (no internet, blocked tunnel), ``status.json`` says so and the local URL
keeps working. A custom share server (``--share-server-address host:port``) is supported for self-hosting.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend import supervisor
from backend.core.store import Store
from backend.errors import TuneDeckError
from backend.settings import Paths

DEMO_USER = "demo"
_PBKDF2_ROUNDS = 200_000


class DemoError(TuneDeckError, RuntimeError):
    pass


@dataclass
class DemoInfo:
    run_id: str
    pid: int
    local_url: str
    share_url: str | None
    share_message: str
    username: str
    password: str | None  # only right after start, when TuneDeck generated it: shown once, never stored

    def summary(self) -> str:
        lines = [f"Demo of {self.run_id} is live at {self.local_url}"]
        if self.share_url:
            lines.append(f"Public link: {self.share_url} (Gradio share links expire after 72 hours)")
        elif self.share_message:
            lines.append(self.share_message)
        if self.password:
            lines.append(
                f"Log in with user '{self.username}' and password '{self.password}' "
                "(shown only now: note it down)."
            )
        else:
            lines.append(f"Log in with user '{self.username}' and the password you chose.")
        return "\n".join(lines)


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _PBKDF2_ROUNDS)
    return f"pbkdf2_sha256${_PBKDF2_ROUNDS}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        _, rounds, salt, digest = stored.split("$")
    except ValueError:
        return False
    got = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), int(rounds))
    return hmac.compare_digest(got.hex(), digest)


def demo_dir(paths: Paths, run_id: str) -> Path:
    return paths.home / "demos" / run_id


def start_demo(
    store: Store,
    paths: Paths,
    run_id: str,
    *,
    password: str | None = None,
    share: bool = False,
    port: int | None = None,
    host: str = "127.0.0.1",
    share_server_address: str | None = None,
    timeout_s: float = 180,
) -> DemoInfo:
    from backend.serving.export import finished_run

    job = finished_run(store, run_id)
    folder = demo_dir(paths, run_id)
    running = list_demos(paths)
    if any(d["run_id"] == run_id for d in running):
        raise DemoError(
            f"A demo of {run_id} is already running. Fix: stop it first (tunedeck demo stop {run_id})."
        )
    if password is not None and len(password) < 8:
        raise DemoError(
            "The demo password must have at least 8 characters. Fix: choose a longer one, or leave it "
            "empty to get a generated one."
        )
    generated = password is None
    password = password or secrets.token_urlsafe(9)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "status.json").unlink(missing_ok=True)
    spec = {
        "run_id": run_id,
        "base_model": job.config["base_model"],
        "adapter_dir": job.result["adapter_dir"],
        "system_prompt": job.config.get("system_prompt", ""),
        "host": host,
        "port": port or supervisor.free_port(),
        "share": share,
        "share_server_address": share_server_address,
        "username": DEMO_USER,
        "password_hash": hash_password(password),
        "home": str(paths.home),
    }
    (folder / "demo.json").write_text(json.dumps(spec, indent=2))
    os.chmod(folder / "demo.json", 0o600)
    proc = supervisor.start(
        supervisor.python("-m", "backend.serving.demo", str(folder)),
        paths,
        log=folder / "demo.log",
        env=supervisor.child_env(paths, GRADIO_ANALYTICS_ENABLED="False"),
    )
    threading.Thread(
        target=proc.wait, name="tunedeck-reap-demo", daemon=True
    ).start()  # no zombie when it stops
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = _read_status(folder)
        if status.get("ready"):
            return DemoInfo(
                run_id,
                proc.pid,
                status["local_url"],
                status.get("share_url"),
                status.get("share_message", ""),
                DEMO_USER,
                password if generated else None,
            )
        if proc.poll() is not None:
            tail = (folder / "demo.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise DemoError(f"The demo of {run_id} stopped while starting: {' / '.join(tail)}")
        time.sleep(0.3)
    supervisor.stop(proc, grace_s=0)
    raise DemoError(f"The demo of {run_id} did not start within {timeout_s:.0f} s; see {folder / 'demo.log'}")


def stop_demo(paths: Paths, run_id: str, timeout_s: float = 15) -> bool:
    """Stop a running demo. Returns False when none was running."""
    status = _read_status(demo_dir(paths, run_id))
    pid = status.get("pid")
    folder = demo_dir(paths, run_id)
    if not pid or not supervisor.alive(pid, marker=folder):
        (folder / "status.json").unlink(missing_ok=True)
        return False
    supervisor.stop(pid, grace_s=timeout_s)
    (folder / "status.json").unlink(missing_ok=True)
    return True


def list_demos(paths: Paths) -> list[dict[str, Any]]:
    out = []
    root = paths.home / "demos"
    for folder in sorted(root.glob("*")) if root.is_dir() else []:
        status = _read_status(folder)
        if status.get("ready") and supervisor.alive(status.get("pid", 0), marker=folder):
            out.append(
                {
                    "run_id": folder.name,
                    "pid": status["pid"],
                    "local_url": status["local_url"],
                    "share_url": status.get("share_url"),
                    "share_message": status.get("share_message", ""),
                }
            )
    return out


def _read_status(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "status.json").read_text())
    except (OSError, ValueError):
        return {}


# -- the demo process itself -------------------------------------------------------------------------------------


def serve(folder: Path) -> None:
    import gradio as gr

    from backend.logs import quiet_hf
    from backend.serving.generate import load, stream

    quiet_hf()
    spec = json.loads((folder / "demo.json").read_text())
    paths = Paths.from_env(spec["home"])
    loaded = load(spec["base_model"], spec["adapter_dir"], paths)

    def reply(message: str, history: list[dict]):
        msgs = [{"role": "system", "content": spec["system_prompt"]}] if spec["system_prompt"] else []
        for m in history or []:
            content = m["content"]
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            msgs.append({"role": m["role"], "content": str(content)})
        msgs.append({"role": "user", "content": message})
        text = ""
        for piece in stream(loaded, msgs, max_new_tokens=256):
            text += piece
            yield text

    def login(username: str, password: str) -> bool:
        return hmac.compare_digest(username, spec["username"]) and check_password(
            password, spec["password_hash"]
        )

    demo = gr.ChatInterface(
        reply,
        title=f"Demo: {spec['run_id']}",
        description=f"A fine-tune of {spec['base_model']} made with TuneDeck. Answers are generated by the model "
        "and may be wrong.",
        api_name="chat",
    )
    kwargs: dict[str, Any] = {}
    if spec.get("share_server_address"):
        kwargs["share_server_address"] = spec["share_server_address"]
    demo.queue(default_concurrency_limit=1).launch(
        server_name=spec["host"],
        server_port=spec["port"],
        share=bool(spec["share"]),
        auth=login,
        auth_message="This demo is password protected.",
        prevent_thread_lock=True,
        quiet=True,
        **kwargs,
    )
    share_url = getattr(demo, "share_url", None)
    share_message = ""
    if spec["share"] and not share_url:
        share_message = (
            "Could not create a public share link (no internet connection, or the tunnel is blocked). "
            "The local URL works; to share, put it behind your own server or set a share server address."
        )
    local_url = f"http://{'127.0.0.1' if spec['host'] in ('0.0.0.0', '::') else spec['host']}:{spec['port']}/"
    tmp = folder / "status.json.tmp"
    tmp.write_text(
        json.dumps(
            {
                "ready": True,
                "pid": os.getpid(),
                "local_url": local_url,
                "share_url": share_url,
                "share_message": share_message,
            }
        )
    )
    tmp.replace(folder / "status.json")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        demo.block_thread()
    finally:
        demo.close()


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
