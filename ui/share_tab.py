"""Share tab: publish a password-protected demo of a run, download its adapter, export or push it.

Every action here is also a CLI command (``tunedeck demo``, ``tunedeck export``, ``tunedeck push``).
"""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from backend.core.status import JobStatus
from backend.serving import demo, export
from ui.context import AppContext
from ui.style import error_md, note_md, ok_md


def shareable_runs(ctx: AppContext) -> list[str]:
    return [
        j.id
        for j in ctx.store.list_jobs((JobStatus.SUCCEEDED, JobStatus.CANCELLED))
        if (j.result or {}).get("adapter_dir")
    ]


def on_open(current: str | None, seen: str | None, ctx: AppContext) -> tuple[dict, pd.DataFrame, str | None]:
    """Share opened: fresh choices with the run just trained selected (ui.follow), and the running demos."""
    from ui.follow import follow

    runs = shareable_runs(ctx)
    newest = runs[0] if runs else None
    return gr.update(choices=runs, value=follow(current, runs, newest, seen)), demos_table(ctx), newest


def demos_table(ctx: AppContext) -> pd.DataFrame:
    rows = [
        {"run": d["run_id"], "local URL": d["local_url"], "public link": d["share_url"] or "(none)"}
        for d in demo.list_demos(ctx.paths)
    ]
    return pd.DataFrame(rows, columns=["run", "local URL", "public link"])


def publish_demo(run: str | None, password: str, share: bool, ctx: AppContext):
    """Start a demo of the run. Yields (message, demos table): first that it is starting (loading the model takes
    a while), then its address as a link, and the password when one was generated."""
    if not run:
        yield error_md("Pick a finished run first."), demos_table(ctx)
        return
    yield (
        ok_md(f"Starting the demo of **{run}**: its own process loads the model (about 10-30 s)…"),
        demos_table(ctx),
    )
    try:
        info = demo.start_demo(ctx.store, ctx.paths, run, password=(password or None), share=bool(share))
    except (demo.DemoError, export.ExportError) as exc:
        yield error_md(str(exc)), demos_table(ctx)
        return
    text = ok_md(info.summary())
    for url in filter(None, (info.local_url, info.share_url)):
        shown = html.escape(url)
        text = text.replace(shown, f'<a href="{shown}" target="_blank" rel="noopener"><b>{shown}</b></a>')
    yield text, demos_table(ctx)


def stop_demo(run: str | None, ctx: AppContext) -> tuple[str, pd.DataFrame]:
    if not run:
        return error_md("Pick the run whose demo to stop."), demos_table(ctx)
    if demo.stop_demo(ctx.paths, run):
        return ok_md(f"Stopped the demo of **{run}**."), demos_table(ctx)
    return error_md(f"No demo of {run} is running."), demos_table(ctx)


def download_adapter(run: str | None, ctx: AppContext) -> tuple[str, str | None]:
    """Zip the adapter (with tokenizer and model card); returns (message, zip path for download)."""
    if not run:
        return error_md("Pick a finished run first."), None
    try:
        out = export.export_adapter(ctx.store, run, ctx.paths.home / "exports")
    except export.ExportError as exc:
        return error_md(str(exc)), None
    return ok_md(f"Adapter of **{run}** zipped with its tokenizer and a model card: download it below."), str(
        out.zip_path
    )


def space_bundle(run: str | None, ctx: AppContext) -> tuple[str, str | None]:
    if not run:
        return error_md("Pick a finished run first."), None
    try:
        out = export.export_space(ctx.store, run, ctx.paths.home / "exports")
    except export.ExportError as exc:
        return error_md(str(exc)), None
    job = ctx.store.get_job(run)
    warn = (
        ""
        if job is None or job.config.get("base_model") != "tiny-offline"
        else (
            " Note: its base model is tiny-offline, which exists only on this machine, so a Space cannot load it."
        )
    )
    return ok_md(
        f"Space bundle for **{run}** (app.py, requirements.txt, adapter/): upload the unzipped folder as a "
        f"Gradio Space.{warn}"
    ), str(out.zip_path)


def push_to_hub(run: str | None, repo: str, token: str, merged: bool, ctx: AppContext) -> str:
    """The token typed here is used for this upload only: it is never stored or logged."""
    if not run:
        return error_md("Pick a finished run first.")
    try:
        url = export.push(
            ctx.store, ctx.paths, run, (repo or "").strip(), merged=bool(merged), token=token or None
        )
    except export.ExportError as exc:
        return error_md(str(exc))
    return ok_md(f"Pushed **{run}** to {url}")


def render(ctx: AppContext) -> dict:
    with gr.Row():
        run = gr.Dropdown(
            label="Run to share",
            choices=shareable_runs(ctx),
            interactive=True,
            allow_custom_value=True,
            info="A finished (or cancelled) run with a saved adapter.",
            scale=3,
        )
        refresh = gr.Button("↻ Update list", size="sm", scale=0)
    with gr.Accordion("Publish a demo", open=True):
        gr.Markdown(
            note_md(
                "A chat page for this run alone (no training, data or settings), in its own process. It is password "
                "protected: leave the password empty to get a generated one, shown once."
            )
        )
        with gr.Row():
            password = gr.Textbox(label="Password (optional, 8+ characters)", type="password")
            share = gr.Checkbox(label="Also make a public Gradio link (needs internet; expires after 72 h)")
        with gr.Row():
            publish = gr.Button("Publish demo", variant="primary")
            stop = gr.Button("Stop this run's demo", variant="stop")
        demo_msg = gr.Markdown()
        demos = gr.Dataframe(label="Running demos", interactive=False)
    with gr.Accordion("Export", open=True):
        with gr.Row():
            zip_btn = gr.Button("Download adapter (.zip)")
            space_btn = gr.Button("Hugging Face Space bundle (.zip)")
        export_msg = gr.Markdown()
        file_out = gr.File(label="Download", interactive=False, height=90)
    with gr.Accordion("Push to the Hugging Face Hub", open=False):
        with gr.Row():
            repo = gr.Textbox(label="Repository", placeholder="your-name/my-fine-tune")
            token = gr.Textbox(
                label="Token (or set HF_TOKEN)",
                type="password",
                info="Used for this upload only; never saved or logged.",
            )
            merged = gr.Checkbox(label="Merged model (instead of the adapter)")
        push = gr.Button("Push")
        push_msg = gr.Markdown()

    refresh.click(
        lambda: (gr.update(choices=shareable_runs(ctx)), demos_table(ctx)),
        None,
        [run, demos],
        api_name="shareable_runs",
    )

    def publish_fn(r, p, s):
        yield from publish_demo(r, p, s, ctx)

    publish.click(
        publish_fn,
        [run, password, share],
        [demo_msg, demos],
        api_name="publish_demo",
    )
    stop.click(lambda r: stop_demo(r, ctx), run, [demo_msg, demos], api_name="stop_demo")
    zip_btn.click(
        lambda r: download_adapter(r, ctx), run, [export_msg, file_out], api_name="download_adapter"
    )
    space_btn.click(lambda r: space_bundle(r, ctx), run, [export_msg, file_out], api_name="space_bundle")
    push.click(
        lambda r, rp, t, m: push_to_hub(r, rp, t, m, ctx),
        [run, repo, token, merged],
        push_msg,
        api_name="push_to_hub",
    )
    return {"run": run, "demos": demos}
