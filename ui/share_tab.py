"""Share tab: publish a password-protected demo of a run, download its adapter, export or push it.

Every action here is also a CLI command (``tunedeck demo``, ``tunedeck export``, ``tunedeck push``). The GGUF export
runs as that command in a child process (it loads torch; this process must not), which reports its progress on stderr.
"""

from __future__ import annotations

import html
import json
import subprocess
from pathlib import Path

import gradio as gr
import pandas as pd

from backend import supervisor
from backend.core.status import JobStatus
from backend.serving import demo, export, gguf_export
from ui.context import AppContext
from ui.style import error_md, note_md, ok_md


def shareable_runs(ctx: AppContext) -> list[str]:
    return [
        j.id
        for j in ctx.store.list_jobs((JobStatus.SUCCEEDED, JobStatus.CANCELLED))
        if (j.result or {}).get("adapter_dir")
    ]


def on_open(current: str | None, seen: str | None, ctx: AppContext):
    """Share opened: fresh choices with the run just trained selected (ui.follow), the running demos, the GGUF
    exports made or being made."""
    from ui.follow import follow

    runs = shareable_runs(ctx)
    newest = runs[0] if runs else None
    value = follow(current, runs, newest, seen)
    return gr.update(choices=runs, value=value), demos_table(ctx), gguf_exports_table(ctx), newest


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


GGUF_CHOICES = [(f"{q.name}: {q.about}", q.name) for q in gguf_export.QUANTS.values()]
_exports: dict[str, subprocess.Popen] = {}  # run → its export in progress (one per run)


def export_gguf(run: str | None, quant: str | None, ctx: AppContext, progress=None):
    """Write the run as GGUF + Modelfile + README in a child process. Yields (message, files to download)."""
    if not run:
        yield error_md("Pick a finished run first."), None
        return
    quant = quant or "q8_0"
    if run in _exports and _exports[run].poll() is None:
        yield error_md(f"**{run}** is being exported already: wait for it, or cancel it."), None
        return
    proc = supervisor.start(
        [*gguf_export.command(run, quant, ctx.paths.home / "exports"), "--json"],
        ctx.paths,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _exports[run] = proc
    said: list[str] = []
    try:
        yield ok_md(f"Exporting **{run}** as {quant}: starting…"), None
        for line in proc.stderr:  # type: ignore[union-attr]
            line = line.strip()
            if line.startswith(gguf_export.PROGRESS_PREFIX):
                pct, _, what = line.removeprefix(gguf_export.PROGRESS_PREFIX).partition("% ")
                if progress is not None:
                    progress(int(pct) / 100, desc=what)
                yield ok_md(f"Exporting **{run}** as {quant}: {pct}%, {what}…"), None
            elif line:
                said.append(line)
        out = proc.stdout.read() if proc.stdout is not None else ""
        proc.wait(timeout=60)
    finally:
        _exports.pop(run, None)
    if proc.returncode != 0:
        if proc.returncode < 0 or proc.returncode in (143, 137):
            yield ok_md(f"Export of **{run}** cancelled: nothing was left behind."), None
            return
        error = next((x for x in reversed(said) if x.startswith("error:")), "\n".join(said[-3:]))
        yield error_md(error.removeprefix("error: ") or "the export failed"), None
        return
    view = json.loads(out)
    yield gguf_summary(run, view), [view["gguf"], view["modelfile"], view["readme"]]


def gguf_summary(run: str, view: dict) -> str:
    """What a person needs after an export: where it is, whether it is prompted as trained, how to run it."""
    size = view["size_bytes"] / 2**20
    lines = [
        f"**{run}** as `{view['quant']}`: {size:,.0f} MB, made in {view['seconds']:.0f} s. Download below."
    ]
    if not view["template_differences"]:
        lines.append(
            "✓ Prompted exactly as in training: TuneDeck's chat, the GGUF's template and the Modelfile agree."
        )
    else:
        which = sorted({d["what"] for d in view["template_differences"]})
        lines.append(
            f"⚠ {', '.join(which)} renders {len(view['template_differences'])} test conversations differently from "
            "training (details in README.md)."
        )
    if view["answers"]:
        same = sum(a["identical"] for a in view["answers"])
        agree = [
            a["next_token_agreement"] for a in view["answers"] if a.get("next_token_agreement") is not None
        ]
        lines.append(
            f"{'✓' if view['answers_close'] else '⚠'} llama.cpp answers {same} of {len(view['answers'])} test "
            "prompts token for token as transformers does"
            + (
                "."
                if same == len(view["answers"]) or not agree
                else f"; along transformers' answers it picks the same next token {100 * sum(agree) / len(agree):.0f}"
                " % of the time (quantizing changes the numbers a little)."
            )
        )
    lines += [f"⚠ {n}" for n in view["notes"] if not n.startswith("transformers' weights")]
    lines.append(
        f"Ollama: put the three files in one folder, then `ollama create {run.lower()} -f Modelfile`."
    )
    return ok_md("\n\n".join(lines))


def gguf_exports_table(ctx: AppContext) -> pd.DataFrame:
    """GGUF exports in the data directory, newest first: those made (also from the CLI, or after the page that
    started them was closed) and those being written now."""
    import time

    folder = ctx.paths.home / "exports"
    rows = []
    for d in (
        sorted(folder.glob("*-gguf*"), key=lambda p: p.stat().st_mtime, reverse=True)
        if folder.is_dir()
        else []
    ):
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(d.stat().st_mtime))
        if d.name.startswith(".") and d.name.endswith(".partial"):
            rows.append(
                {
                    "file": d.name[1:].removesuffix("-gguf.partial") + ".gguf",
                    "size": "…",
                    "made": "being written now",
                    "prompt": "",
                    "folder": str(d.parent),
                }
            )
            continue
        try:
            check = json.loads((d / "check.json").read_text())
        except (OSError, ValueError):
            continue
        rows.append(
            {
                "file": Path(check["gguf"]).name,
                "size": f"{check['size_bytes'] / 2**20:,.0f} MB",
                "made": when,
                "prompt": "as in training" if not check["template_differences"] else "differs (see README)",
                "folder": str(d),
            }
        )
    return pd.DataFrame(rows, columns=["file", "size", "made", "prompt", "folder"])


def cancel_gguf(run: str | None) -> str:
    proc = _exports.get(run or "")
    if proc is None or proc.poll() is not None:
        return error_md("No export of this run is in progress.")
    supervisor.stop(proc)
    return ok_md(f"Cancelling the export of **{run}**…")


def push_to_hub(run: str | None, repo: str, token: str, merged: bool, ctx: AppContext) -> str:
    """The token typed here is used for this upload only: it is never stored or logged."""
    if not run:
        return error_md("Pick a finished run first.")
    repo = (repo or "").strip()
    if (
        merged
    ):  # merging loads torch: `tunedeck push --merged` in a child; the token goes in its environment only
        env = supervisor.child_env(ctx.paths, **({"HF_TOKEN": token} if token else {}))
        proc = supervisor.start(
            supervisor.python("-m", "backend", "push", run, "--repo", repo, "--merged", "--json"),
            ctx.paths,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        out, err = proc.communicate()
        if proc.returncode != 0:
            lines = [x for x in err.splitlines() if x.strip()]
            error = next((x for x in reversed(lines) if x.startswith("error:")), lines[-1] if lines else "")
            return error_md(export.scrub(error.removeprefix("error: "), token) or "the upload failed")
        return ok_md(f"Pushed **{run}** (merged) to {json.loads(out)['url']}")
    try:
        url = export.push(ctx.store, ctx.paths, run, repo, merged=False, token=token or None)
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
    with gr.Accordion("For llama.cpp, Ollama and LM Studio (GGUF)", open=True):
        gr.Markdown(
            note_md(
                "One .gguf file (the adapter merged into the base), an Ollama Modelfile with the chat template, "
                "system prompt and stop words the run was trained with, and a README with what was checked."
            )
        )
        with gr.Row():
            gguf_type = gr.Dropdown(
                label="Number format", choices=GGUF_CHOICES, value="q8_0", interactive=True, scale=3
            )
            gguf_btn = gr.Button("Download for llama.cpp / Ollama", variant="primary", scale=1)
            gguf_cancel = gr.Button("Cancel export", variant="stop", scale=0)
        gguf_msg = gr.Markdown(elem_id="td-gguf-message")
        gguf_files = gr.File(
            label="GGUF, Modelfile and README",
            file_count="multiple",
            interactive=False,
            height=200,
            elem_id="td-gguf-files",
        )
        ggufs = gr.Dataframe(label="GGUF exports on this machine", interactive=False, wrap=True)
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
        lambda: (gr.update(choices=shareable_runs(ctx)), demos_table(ctx), gguf_exports_table(ctx)),
        None,
        [run, demos, ggufs],
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

    def gguf_fn(r, q, progress=gr.Progress()):  # noqa: B008 - Gradio's way of asking for a progress bar
        yield from export_gguf(r, q, ctx, progress)

    gguf_btn.click(gguf_fn, [run, gguf_type], [gguf_msg, gguf_files], api_name="export_gguf").then(
        lambda: gguf_exports_table(ctx), None, ggufs, api_visibility="private"
    )
    gguf_cancel.click(cancel_gguf, run, gguf_msg, api_name="cancel_gguf")
    push.click(
        lambda r, rp, t, m: push_to_hub(r, rp, t, m, ctx),
        [run, repo, token, merged],
        push_msg,
        api_name="push_to_hub",
    )
    return {"run": run, "demos": demos, "ggufs": ggufs}
