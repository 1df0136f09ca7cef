"""Runs tab: every job with its status, progress and ETA; the selected one's live charts and log; Cancel, Resume.

Charts: training loss with the validation loss (when the dataset has a validation split), learning rate, gradient
norm, real tokens per second (padding not counted), and peak GPU memory (on a GPU only). Everything here is read
from the store on a ``gr.Timer``: the page only observes jobs, so closing or reloading it never touches them, and
reopening it shows them as they are. A resumed run's charts start with the points of the run it continues.
"""

from __future__ import annotations

import gradio as gr
import pandas as pd

from backend.jobs import handoff, views
from backend.jobs.manager import queue_positions
from backend.serving import evaluate
from ui.context import AppContext
from ui.style import LINE_COLOURS, curve_frame, error_md, note_md, ok_md

REFRESH_S = 1.5


def jobs_table(ctx: AppContext) -> pd.DataFrame:
    positions = queue_positions(ctx.store)
    rows = []
    for job in ctx.store.list_jobs():
        v = views.job_view(ctx.store, job, positions)
        total = v["total_steps"]
        rows.append(
            {
                "run": v["id"],
                "status": v["status"],
                "progress": f"{v['step']}/{total}" if total else "-",
                "ETA": views.format_duration(v["eta_s"]) if v["eta_s"] is not None else "",
                "loss": round(v["last_loss"], 4) if v["last_loss"] is not None else None,
                "model": v["base_model"],
                "started": v["created"],
                "details": views.status_line(v),
            }
        )
    cols = ["run", "status", "progress", "ETA", "loss", "model", "started", "details"]
    return pd.DataFrame(rows, columns=cols)


def job_choices(ctx: AppContext) -> list[str]:
    return [j.id for j in ctx.store.list_jobs()]


SIDE_CHARTS = (
    ("learning_rate", "Learning rate"),
    ("grad_norm", "Gradient norm"),
    ("tokens_per_s", "Tokens per second (real, no padding)"),
    ("peak_gpu_gb", "Peak GPU memory (GB)"),
)
# Preference runs (DPO, ORPO, KTO) log these too; an SFT run never shows them (a chart shows from two points).
# TRL calls the share of pairs whose better answer gained more "reward accuracy"; the scores' "preference accuracy"
# is another measure (PREF_NOTE), so the charts keep TRL's name.
PREF_CHARTS = (
    ("rewards/margins", "Reward margin: better minus worse answer (training)"),
    ("rewards/accuracies", "Reward accuracy: better answer gained more (training)"),
    ("eval_rewards/accuracies", "Reward accuracy on the validation pairs"),
)
# Beside the preference charts: what they measure, and how that differs from the scores' preference accuracy.
PREF_NOTE = (
    "**Reading these charts.** A reward is how much likelier the run made an answer than the model it started from "
    "(times beta): the *margin* is how much more the better answer gained than the worse one, and *reward accuracy* "
    "the share of pairs where it gained more. It can reach 1.0 while the model still finds most worse answers "
    "likelier: a small push the right way on every pair. The scores at the end ask the other question: "
    "*preference accuracy* is how often the tuned model itself finds the better answer likelier (per token), "
    "whatever it started from."
)
PREF_NOTE_ORPO = (
    "**Reading these charts.** ORPO has no model to start from as a reference: its rewards are the model's own "
    "log-probability per token of each answer (times beta), so its *reward accuracy* is how often it finds the better "
    "answer likelier on these batches, and the *margin* by how much. The scores at the end ask the same of held-out "
    "pairs (*preference accuracy*)."
)
REWARD_SERIES = ("better (chosen)", "worse (rejected)")
# What job_charts updates, in order: the side and preference charts, the rewards chart, and the note beside them.
CHART_NAMES = (*(name for name, _ in SIDE_CHARTS + PREF_CHARTS), "rewards", "note")
N_CHARTS = len(CHART_NAMES)


LOSS_SERIES = ("training", "validation")


def loss_points(store, job_id: str) -> pd.DataFrame:
    """Training and validation loss, one row per point, for one chart with a line for each."""
    rows = [(s, v, "training") for s, _, v in store.metrics(job_id, "loss")]
    rows += [(s, v, "validation") for s, _, v in store.metrics(job_id, "eval_loss")]
    return curve_frame(rows, names=LOSS_SERIES)


def job_charts(job_id: str | None, ctx: AppContext) -> list:
    """The side charts of one job, then the preference charts' note. A chart shows once it has two points: with
    none Vega draws an empty frame ("Infinite extent"), with one an axis of six decimals; peak GPU memory never
    shows on a CPU. The note shows with the preference charts."""
    out = []
    for name, _ in SIDE_CHARTS + PREF_CHARTS:
        points = ctx.store.metrics(job_id, name) if job_id else []
        frame = pd.DataFrame({"step": [s for s, _, _ in points], "value": [v for _, _, v in points]})
        out.append(gr.update(value=frame, visible=len(points) >= 2))
    rewards = reward_points(ctx.store, job_id) if job_id else None
    out.append(gr.update(value=rewards, visible=rewards is not None))
    shown = rewards is not None or any(u["visible"] for u in out[len(SIDE_CHARTS) :])
    job = ctx.store.get_job(job_id) if job_id and shown else None
    orpo = job is not None and job.config.get("objective") == "orpo"
    out.append(gr.update(value=PREF_NOTE_ORPO if orpo else PREF_NOTE, visible=shown))
    return out


def reward_points(store, job_id: str) -> pd.DataFrame | None:
    """A preference run's implied rewards of the better and the worse answers (training), one line each; None for
    a run that logs none."""
    chosen, rejected = store.metrics(job_id, "rewards/chosen"), store.metrics(job_id, "rewards/rejected")
    if len(chosen) < 2:
        return None
    rows = [(s, v, REWARD_SERIES[0]) for s, _, v in chosen] + [
        (s, v, REWARD_SERIES[1]) for s, _, v in rejected
    ]
    return curve_frame(rows, columns=("step", "reward", "series"), names=REWARD_SERIES)


def job_buttons(job_id: str | None, ctx: AppContext) -> tuple[dict, dict]:
    """Cancel only for a run that is queued or running (and not already cancelling); Resume only for one that
    stopped with a checkpoint to continue from."""
    job = ctx.store.get_job(job_id) if job_id else None
    if job is None:
        return gr.update(interactive=False), gr.update(interactive=False)
    v = views.job_view(ctx.store, job)
    can_cancel = not job.status.is_terminal and not job.cancel_requested
    return gr.update(interactive=can_cancel), gr.update(interactive=bool(v["resumable"]))


def job_panel(job_id: str | None, ctx: AppContext) -> tuple[str, pd.DataFrame, str]:
    """(summary, loss points, log tail) of one job."""
    empty = curve_frame([], names=LOSS_SERIES)
    if not job_id:
        return "Pick a run to see its loss chart and log.", empty, ""
    job = ctx.store.get_job(job_id)
    if job is None:
        return error_md(f"There is no run {job_id}."), empty, ""
    v = views.job_view(ctx.store, job)
    lines = [
        f"**{job.id}**: {views.status_line(v)}",
        f"Model {v['base_model']} ({v['method']}), preset {v['preset']}, dataset {v['dataset']}"
        + (
            f", objective {objective.upper()}"
            if (objective := job.config.get("objective", "sft")) != "sft"
            else ""
        )
        + (
            f", starting from {job.config['continue_from']}'s adapter"
            if job.config.get("continue_from")
            else ""
        )
        + ".",
    ]
    if v["pid"]:
        lines.append(f"Worker process {v['pid']}.")
    if v["first_loss"] is not None and v["last_loss"] is not None:
        lines.append(f"Loss {v['first_loss']:.4f} at the start, {v['last_loss']:.4f} now.")
    if v["eval_loss"] is not None:
        lines.append(f"Validation loss {v['eval_loss']:.4f}.")
    if v["tokens_per_s"]:
        lines.append(
            f"{v['tokens_per_s']:,.0f} tokens/s"
            + (f", peak GPU memory {v['peak_gpu_gb']:.2f} GB." if v["peak_gpu_gb"] else ".")
        )
    if v["resumed_from"]:
        lines.append(f"Continues {v['resumed_from']} from its last checkpoint.")
    if v["retry_of"]:
        lines.append(f"Retries {v['retry_of']}, which ran out of GPU memory, with a smaller batch.")
    if v["adapter_dir"]:
        lines.append(f"Adapter saved in `{v['adapter_dir']}`: try it in the **Chat** tab.")
    if v["resumable"]:
        lines.append("It can be resumed from its last checkpoint: press **Resume**.")
    text = "  \n".join(lines)
    scores = handoff.read_scores(job.job_dir)
    if scores:
        text += "\n\n" + evaluate.scores_markdown(scores)
        gap = evaluate.preference_gap(v["reward_accuracy"], scores, job.config, v["reward_accuracy_on"])
        if gap:
            text += "\n\n" + note_md(gap)
    return text, loss_points(ctx.store, job.id), views.log_tail(job)


def cancel_job(job_id: str | None, ctx: AppContext) -> str:
    if not job_id:
        return error_md("Pick a run to cancel.")
    job = ctx.store.get_job(job_id)
    if job is None:
        return error_md(f"There is no run {job_id}.")
    if job.status.is_terminal:
        return error_md(f"{job_id} has already ended ({job.status.value}); there is nothing to cancel.")
    ctx.manager.cancel(job_id)
    return ok_md(
        f"Cancel requested for **{job_id}**: it stops after the current step and keeps the adapter so far."
    )


def resume_job(job_id: str | None, ctx: AppContext) -> tuple[str, str | None]:
    """Queue a new job continuing this one from its last checkpoint. Returns (message, the new job's id or None)."""
    from backend.jobs.manager import ResumeError

    if not job_id:
        return error_md("Pick a run to resume."), None
    try:
        job = ctx.manager.resume(job_id)
    except ResumeError as exc:
        return error_md(str(exc)), None
    return ok_md(f"Queued **{job.id}**: it continues {job_id} from its last checkpoint."), job.id


def scheduler_problem(ctx: AppContext) -> str:
    """Why jobs cannot be scheduled right now (a full disk, an unwritable database), until it works again."""
    problem = ctx.manager.problem
    return error_md(problem) if problem else ""


def refresh(selected: str | None, ctx: AppContext):
    """Timer tick: what stops scheduling (if anything), the table, the run list (keeping the selection; the newest
    if none), and the selected run. When the store cannot be read, only the problem is shown: the page keeps what
    it had and the next tick tries again."""
    try:
        choices = job_choices(ctx)
        if selected not in choices:
            selected = choices[0] if choices else None
        summary, loss, log = job_panel(selected, ctx)
        return (
            scheduler_problem(ctx),
            jobs_table(ctx),
            gr.update(choices=choices, value=selected),
            summary,
            loss,
            log,
            *job_charts(selected, ctx),
            *job_buttons(selected, ctx),
        )
    except Exception as exc:  # noqa: BLE001 - the page must keep refreshing whatever the store says
        from backend.errors import explain

        problem = ctx.manager.problem or f"TuneDeck cannot read its job database right now: {explain(exc)}"
        return (error_md(problem), *(gr.update() for _ in range(7 + N_CHARTS)))


def render(ctx: AppContext) -> dict:
    timer = gr.Timer(REFRESH_S)
    problem = gr.Markdown(elem_id="scheduler-problem")
    table = gr.Dataframe(label="All runs (newest first)", interactive=False, max_height=260, wrap=True)
    with gr.Row():
        job = gr.Dropdown(
            label="Run", choices=job_choices(ctx), interactive=True, scale=3, allow_custom_value=True
        )  # runs made after the page loaded (the handlers check ids)
        cancel = gr.Button("Cancel this run", variant="stop", scale=1, interactive=False)
        resume = gr.Button("Resume where it stopped", scale=1, interactive=False)
    message = gr.Markdown()
    summary = gr.Markdown(elem_id="run-summary")
    chart = gr.LinePlot(
        x="step",
        y="loss",
        color="series",
        title="Loss (training, and validation when there is a validation split)",
        x_title="step",
        y_title="loss",
        height=300,
        color_map=dict(zip(LOSS_SERIES, LINE_COLOURS, strict=False)),
        elem_id="run-loss-chart",
    )

    def small_chart(name: str, title: str, **kw) -> gr.LinePlot:
        return gr.LinePlot(
            x="step",
            y="value",
            title=title,
            x_title="step",
            y_title="",
            height=220,
            elem_id=f"chart-{name}",
            **kw,
        )

    side = []
    with gr.Row():
        side += [small_chart(name, title) for name, title in SIDE_CHARTS]
    pref_note = gr.Markdown(PREF_NOTE, visible=False, elem_id="pref-charts-note")
    with gr.Row():  # preference runs only: hidden until they have points
        side += [small_chart(name.replace("/", "-"), title, visible=False) for name, title in PREF_CHARTS]
        side.append(
            gr.LinePlot(
                x="step",
                y="reward",
                color="series",
                title="Rewards: better vs worse answer (training)",
                x_title="step",
                y_title="reward",
                height=220,
                visible=False,
                color_map=dict(zip(REWARD_SERIES, LINE_COLOURS, strict=False)),
                elem_id="chart-rewards",
            )
        )
    side.append(pref_note)  # job_charts' last update
    log = gr.Textbox(
        label="Log (last lines; the whole log is worker.log in the run folder)",
        lines=14,
        max_lines=14,
        autoscroll=True,
        interactive=False,
        elem_id="run-log",
    )
    resumed = gr.Textbox(visible=False)

    outs = [problem, table, job, summary, chart, log, *side, cancel, resume]
    timer.tick(lambda s: refresh(s, ctx), job, outs, api_visibility="private", show_progress="hidden")
    job.change(
        lambda j: job_panel(j, ctx), job, [summary, chart, log], api_name="job_detail", show_progress="hidden"
    )
    job.change(lambda j: job_charts(j, ctx), job, side, api_visibility="private", show_progress="hidden")
    job.change(
        lambda j: job_buttons(j, ctx), job, [cancel, resume], api_visibility="private", show_progress="hidden"
    )
    cancel.click(lambda j: cancel_job(j, ctx), job, message, api_name="cancel_job")
    resume.click(lambda j: resume_job(j, ctx), job, [message, resumed], api_name="resume_job").then(
        lambda new: gr.update(choices=job_choices(ctx), value=new) if new else gr.update(),
        resumed,
        job,
        api_visibility="private",
    )
    gr.Button("Refresh", size="sm", visible=False).click(
        lambda: jobs_table(ctx), None, table, api_name="list_jobs"
    )
    return {
        "job": job,
        "table": table,
        "summary": summary,
        "chart": chart,
        "log": log,
        "refresh_outputs": outs,
    }
