"""TuneDeck web app: ``python app.py`` (or ``tunedeck serve``) serves it at http://127.0.0.1:7860.

settings → store → job manager (schedules jobs in a background thread of this process, or defers to another
process that already does) → model client (chat runs in its own process) → ``ui.build_app`` → launch.
This process never imports torch.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
import signal
import sys
import threading

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from backend.core.store import Store  # noqa: E402
from backend.jobs.manager import Manager  # noqa: E402
from backend.serving.modelclient import ModelClient  # noqa: E402
from backend.settings import (  # noqa: E402
    Paths,
    SettingsError,
    home_low_on_space,
    home_unwritable,
    load_settings,
)

log = logging.getLogger("tunedeck")


def prepare_model(name: str, paths: Paths) -> None:
    """Make the default model's local copy (the starter model's first use converts its GGUF, about 30 s) while the
    person looks at the page, so the Data tab's preview and the first run do not wait for it."""
    from backend.models import registry as models

    try:
        ref = models.resolve(name, paths)
        if ref.made_here and not ref.ready:
            log.info("preparing %s in the background (once)", name)
            models.materialize_in_child(ref, paths)
            log.info("%s is ready", name)
    except (models.ModelError, OSError) as exc:
        log.warning("could not prepare %s: %s", name, exc)
    except Exception as exc:  # noqa: BLE001 - a background nicety must never stop the app; the first use retries
        log.warning("could not prepare %s: %s", name, exc)


def create(paths: Paths | None = None):
    """Build everything except the network listener. Returns (gradio app, context, stop function)."""
    from backend.jobs.presets import default_preset
    from ui import AppContext, build_app

    paths = paths or Paths.from_env()
    store = Store(paths.db)
    manager = Manager(store, paths)
    ctx = AppContext(
        paths=paths,
        store=store,
        manager=manager,
        models=ModelClient(paths),
        default_preset=default_preset(paths),
    )
    stop = threading.Event()
    thread = threading.Thread(target=manager.run, args=(stop,), name="tunedeck-scheduler", daemon=True)
    thread.start()
    threading.Thread(
        target=prepare_model, args=(ctx.default_model, paths), name="tunedeck-model-copy", daemon=True
    ).start()

    def shutdown() -> None:
        stop.set()
        thread.join(timeout=10)
        ctx.models.close()

    return build_app(ctx), ctx, shutdown


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def exposure_problem(host: str, share: bool, has_password: bool, allowed: bool) -> str | None:
    """Refuse to expose the app (a non-local address, or a share link) without a password, unless told to."""
    if has_password or allowed or (host in LOCAL_HOSTS and not share):
        return None
    where = "a public share link" if share else f"address {host} (reachable from other machines)"
    return (
        f"refusing to serve on {where} without a password: anyone who reaches it could train, read your data "
        "and run jobs. Fix: set TUNEDECK_PASSWORD (and optionally TUNEDECK_USERNAME), or pass "
        "--allow-no-password if this network is trusted."
    )


def hide_api_before_login(server_app) -> None:
    """Serve the page to a visitor who has not logged in without the app's API description.

    Gradio embeds that description (every endpoint, with the choices of each dropdown: the names of your datasets
    and runs) in every page it serves, its login page included, although its own /info route asks for a login.
    A route in front of Gradio's page route blanks it until the visitor has logged in; the page then fetches it
    from /info like any client. It reads Gradio's session cookie the way Gradio does (tests/test_share.py checks
    this against the login page of a real server)."""
    import re

    from starlette.routing import Route

    gradio_page = next(
        r for r in server_app.router.routes if getattr(r, "path", None) == "/" and "GET" in (r.methods or ())
    )
    api_info = re.compile(rb"window\.gradio_api_info = .*?;</script>", re.S)

    def page(request):
        cookie = server_app.cookie_id
        token = request.cookies.get(f"access-token-{cookie}") or request.cookies.get(
            f"access-token-unsecure-{cookie}"
        )
        user = server_app.tokens.get(token)
        response = gradio_page.endpoint(
            request, user=user, deep_link=request.query_params.get("deep_link", "")
        )
        if user is None:
            body = api_info.sub(b"window.gradio_api_info = null;</script>", response.body)
            response.body = body
            response.headers["content-length"] = str(len(body))
        return response

    server_app.router.routes.insert(0, Route("/", page, methods=["GET"]))


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings()
        paths = Paths.from_env()
    except SettingsError as exc:
        print(f"tunedeck: {exc}", file=sys.stderr)
        return 2
    problem = home_unwritable(paths)
    if problem:
        print(f"tunedeck: {problem}", file=sys.stderr)
        return 2
    p = argparse.ArgumentParser(prog="tunedeck serve", description=__doc__)
    p.add_argument("--host", default=settings.host)
    p.add_argument("--port", type=int, default=settings.port)
    p.add_argument("--share", action="store_true", help="also ask Gradio for a public link (needs internet)")
    p.add_argument(
        "--username",
        default=settings.username,
        help="login name when a password is set (env TUNEDECK_USERNAME)",
    )
    p.add_argument(
        "--password",
        default=settings.password,
        help="require this password to open the app (env TUNEDECK_PASSWORD, preferred: flags show in ps)",
    )
    p.add_argument(
        "--allow-no-password",
        action="store_true",
        help="serve on a non-local address or a share link without a password (not recommended)",
    )
    args = p.parse_args(argv)
    problem = exposure_problem(args.host, args.share, bool(args.password), args.allow_no_password)
    if problem:
        print(f"tunedeck: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per internal request otherwise
    from ui import CSS

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run the clean shutdown below on `kill`
    low = home_low_on_space(paths)
    if low:
        log.warning("%s", low)
    app, ctx, shutdown = create(paths)
    log.info("data directory: %s", ctx.paths.home)
    try:
        auth = None
        if args.password:
            user, secret = args.username, args.password
            auth = lambda u, p: hmac.compare_digest(u, user) and hmac.compare_digest(p, secret)  # noqa: E731
        app.queue(default_concurrency_limit=4).launch(
            server_name=args.host,
            server_port=args.port,
            share=args.share,
            css=CSS,
            prevent_thread_lock=True,
            show_error=True,
            allowed_paths=[str(ctx.paths.home)],
            auth=auth,
            max_file_size=settings.max_upload_bytes,
            auth_message="TuneDeck: log in with the username and password this server was started with.",
            quiet=True,  # Gradio's own banner suggests share=True, which is a flag of ours (--share)
        )
        shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        print(f"TuneDeck is running at http://{shown_host}:{app.server_port}  (Ctrl+C stops it)", flush=True)
        if getattr(app, "share_url", None):
            print(f"Public link: {app.share_url}", flush=True)
        if auth is not None:
            hide_api_before_login(app.server_app)
        if args.share and not getattr(app, "share_url", None):
            print(
                "TuneDeck: could not create a public share link (no internet, or the tunnel is blocked). "
                f"The app still works locally at http://{args.host}:{args.port}",
                file=sys.stderr,
            )
        app.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
