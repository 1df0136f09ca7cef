"""TuneDeck web app: ``python app.py`` (or ``tunedeck serve``) serves it at http://127.0.0.1:7860.

settings → store → job manager (schedules jobs in a background thread of this process, or defers to another
process that already does) → model client (chat runs in its own process) → ``ui.build_app`` → launch.
This process never imports torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from backend.manager import Manager  # noqa: E402
from backend.modelclient import ModelClient  # noqa: E402
from backend.settings import Paths  # noqa: E402
from backend.store import Store  # noqa: E402

log = logging.getLogger("tunedeck")


def create(paths: Paths | None = None):
    """Build everything except the network listener. Returns (gradio app, context, stop function)."""
    from ui import AppContext, build_app

    paths = paths or Paths.from_env()
    store = Store(paths.db)
    manager = Manager(store, paths)
    ctx = AppContext(paths=paths, store=store, manager=manager, models=ModelClient(paths))
    stop = threading.Event()
    thread = threading.Thread(target=manager.run, args=(stop,), name="tunedeck-scheduler", daemon=True)
    thread.start()

    def shutdown() -> None:
        stop.set()
        thread.join(timeout=10)
        ctx.models.close()

    return build_app(ctx), ctx, shutdown


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tunedeck serve", description=__doc__)
    p.add_argument("--host", default=os.environ.get("TUNEDECK_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("TUNEDECK_PORT", "7860")))
    p.add_argument("--share", action="store_true", help="also ask Gradio for a public link (needs internet)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ui import CSS

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run the clean shutdown below on `kill`
    app, ctx, shutdown = create()
    log.info("data directory: %s", ctx.paths.home)
    try:
        app.queue(default_concurrency_limit=4).launch(
            server_name=args.host, server_port=args.port, share=args.share, css=CSS, prevent_thread_lock=True,
            show_error=True, allowed_paths=[str(ctx.paths.home)],
        )
        if args.share and not getattr(app, "share_url", None):
            print("TuneDeck: could not create a public share link (no internet, or the tunnel is blocked). "
                  f"The app still works locally at http://{args.host}:{args.port}", file=sys.stderr)
        app.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
