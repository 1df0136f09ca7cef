"""Runs tab: every job with its status, progress and ETA; the live loss chart and log of the selected one; Cancel.

Everything here is read from the store on a ``gr.Timer``: the page only observes jobs, so closing or reloading
it never touches them, and reopening it shows them as they are.
"""

from __future__ import annotations

import gradio as gr
import pandas as pd

from backend import views
from backend.manager import queue_positions
from ui.context import AppContext
from ui.style import error_md, ok_md

REFRESH_S = 1.5


def jobs_table(ctx: AppContext) -> pd.DataFrame:
    positions = queue_positions(ctx.store)
    rows = []
    for job in ctx.store.list_jobs():
        v = views.job_view(ctx.store, job, positions)
        total = v["total_steps"]
        rows.append({
            "run": v["id"],
            "status": v["status"],
            "progress": f"{v['step']}/{total}" if total else "-",
            "ETA": views.format_duration(v["eta_s"]) if v["eta_s"] is not None else "",
            "loss": round(v["last_loss"], 4) if v["last_loss"] is not None else None,
            "model": v["base_model"],
            "started": v["created"],
            "details": views.status_line(v),
        })
    cols = ["run", "status", "progress", "ETA", "loss", "model", "started", "details"]
    return pd.DataFrame(rows, columns=cols)


def job_choices(ctx: AppContext) -> list[str]:
    return [j.id for j in ctx.store.list_jobs()]


def job_panel(job_id: str | None, ctx: AppContext) -> tuple[str, pd.DataFrame, str]:
    """(summary, loss points, log tail) of one job."""
    empty = pd.DataFrame({"step": [], "loss": []})
    if not job_id:
        return "Pick a run to see its loss chart and log.", empty, ""
    job = ctx.store.get_job(job_id)
    if job is None:
        return error_md(f"There is no run {job_id}."), empty, ""
    v = views.job_view(ctx.store, job)
    lines = [f"**{job.id}**: {views.status_line(v)}",
             f"Model {v['base_model']} ({v['method']}), preset {v['preset']}, dataset {v['dataset']}."]
    if v["pid"]:
        lines.append(f"Worker process {v['pid']}.")
    if v["first_loss"] is not None and v["last_loss"] is not None:
        lines.append(f"Loss {v['first_loss']:.4f} at the start, {v['last_loss']:.4f} now.")
    if v["adapter_dir"]:
        lines.append(f"Adapter saved in `{v['adapter_dir']}`: try it in the **Chat** tab.")
    points = ctx.store.metrics(job.id, "loss")
    loss = pd.DataFrame({"step": [s for s, _, _ in points], "loss": [x for _, _, x in points]})
    return "  \n".join(lines), loss, views.log_tail(job)


def cancel_job(job_id: str | None, ctx: AppContext) -> str:
    if not job_id:
        return error_md("Pick a run to cancel.")
    job = ctx.store.get_job(job_id)
    if job is None:
        return error_md(f"There is no run {job_id}.")
    if job.status.is_terminal:
        return error_md(f"{job_id} has already ended ({job.status.value}); there is nothing to cancel.")
    ctx.manager.cancel(job_id)
    return ok_md(f"Cancel requested for **{job_id}**: it stops after the current step and keeps the adapter so far.")


def refresh(selected: str | None, ctx: AppContext):
    """Timer tick: the table, the run list (keeping the selection; the newest if none), and the selected run."""
    choices = job_choices(ctx)
    if selected not in choices:
        selected = choices[0] if choices else None
    summary, loss, log = job_panel(selected, ctx)
    return jobs_table(ctx), gr.update(choices=choices, value=selected), summary, loss, log


def render(ctx: AppContext) -> dict:
    timer = gr.Timer(REFRESH_S)
    table = gr.Dataframe(label="All runs (newest first)", interactive=False,
                         max_height=260, wrap=True)
    with gr.Row():
        job = gr.Dropdown(label="Run", choices=job_choices(ctx), interactive=True, scale=3,
                          allow_custom_value=True)  # runs made after the page loaded (the handlers check ids)
        cancel = gr.Button("Cancel this run", variant="stop", scale=1)
    message = gr.Markdown()
    summary = gr.Markdown(elem_id="run-summary")
    chart = gr.LinePlot(x="step", y="loss", title="Training loss", x_title="step", y_title="loss", height=300)
    log = gr.Textbox(label="Log (last lines; the whole log is worker.log in the run folder)", lines=14, max_lines=14,
                     autoscroll=True, interactive=False, elem_id="run-log")

    outs = [table, job, summary, chart, log]
    timer.tick(lambda s: refresh(s, ctx), job, outs, api_visibility="private", show_progress="hidden")
    job.change(lambda j: job_panel(j, ctx), job, [summary, chart, log], api_name="job_detail",
               show_progress="hidden")
    cancel.click(lambda j: cancel_job(j, ctx), job, message, api_name="cancel_job")
    gr.Button("Refresh", size="sm", visible=False).click(
        lambda: jobs_table(ctx), None, table, api_name="list_jobs")
    return {"job": job, "table": table, "summary": summary, "chart": chart, "log": log, "refresh_outputs": outs}
