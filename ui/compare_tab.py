"""Compare tab: did the fine-tune help? Side-by-side answers, a blind test, scores, and run-to-run differences.

Answers come from the model server (one base model in memory, adapters switched per request). Scoring runs
``tunedeck eval`` in a child process, because this process never imports torch.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from backend import supervisor
from backend.core.status import JobStatus
from backend.core.store import VoteStore
from backend.errors import TuneDeckError, explain
from backend.jobs import handoff
from backend.serving import evaluate
from backend.serving.modelclient import ModelServerError
from backend.serving.votes import BASE, counts_text, export_votes, voted_run, win_rate_history
from ui.context import AppContext
from ui.style import LINE_COLOURS, curve_frame, error_md, ok_md
from ui.train_tab import LABELS

MAX_COLUMNS = 4


def finished_runs(ctx: AppContext) -> list[str]:
    return [
        j.id
        for j in ctx.store.list_jobs((JobStatus.SUCCEEDED, JobStatus.CANCELLED))
        if (j.result or {}).get("adapter_dir")
    ]


def all_runs(ctx: AppContext) -> list[str]:
    return [j.id for j in ctx.store.list_jobs()]


def on_open(
    runs: list[str] | None,
    eval_run: str | None,
    left: str | None,
    right: str | None,
    pick: list[str] | None,
    seen: str | None,
    *,
    ctx: AppContext,
) -> tuple:
    """Compare opened: fresh choices everywhere, and the run just trained ready in each part (ui.follow): side by
    side with the base model, scored, as the blind test's second contestant against the base, and in the curves."""
    from ui.follow import follow, follow_many

    done = finished_runs(ctx)
    newest = done[0] if done else None
    everyone = [BASE] + done
    left_value = left if left in everyone else BASE
    right_value = follow(right if right != BASE else None, done, newest, seen)
    if right_value == left_value:
        right_value = BASE if left_value != BASE else right_value
    rates = win_rates(ctx)
    return (
        gr.update(choices=done, value=follow_many(runs, done, newest, seen, MAX_COLUMNS)),
        gr.update(choices=done, value=follow(eval_run, done, newest, seen)),
        gr.update(choices=everyone, value=left_value),
        gr.update(choices=everyone, value=right_value),
        gr.update(choices=all_runs(ctx), value=follow_many(pick, all_runs(ctx), newest, seen, OVERLAY_RUNS)),
        rates_table(rates),
        rates_chart(rates),
        newest,
    )


def _adapters(runs: list[str], ctx: AppContext) -> tuple[str, list[str]]:
    """(the runs' common base model, their adapter dirs). Raises ValueError with a message for the person."""
    jobs = [ctx.store.get_job(r) for r in runs]
    missing = [
        r for r, j in zip(runs, jobs, strict=True) if j is None or not (j.result or {}).get("adapter_dir")
    ]
    if missing:
        raise ValueError(f"No adapter for {', '.join(missing)}: pick finished runs.")
    bases = sorted({j.config["base_model"] for j in jobs})
    if len(bases) > 1:
        raise ValueError(
            f"These runs have different base models ({', '.join(bases)}): compare runs of one base."
        )
    return bases[0], [j.result["adapter_dir"] for j in jobs]


def validation_prompts(runs: list[str] | None, ctx: AppContext) -> dict:
    """Prompts from the first run's held-out examples, to pick from."""
    if not runs:
        return gr.update(choices=[], value=None)
    job = ctx.store.get_job(runs[0])
    try:
        examples, _ = evaluate.held_out_examples(ctx.store, job, limit=20) if job else ([], "")
    except evaluate.EvalError:
        examples = []
    return gr.update(choices=[p[-1]["content"] for p, _ in examples], value=None)


def side_by_side(
    runs: list[str] | None,
    with_base: bool,
    prompt: str,
    temperature: float,
    max_new: float,
    seed: float,
    ctx: AppContext,
):
    """Stream the answers of the base (optional) and up to four runs into columns: (status, *column updates)."""
    runs = list(runs or [])[:MAX_COLUMNS]
    blank = [gr.update(value="", visible=False, label="") for _ in range(MAX_COLUMNS + 1)]
    if not runs or not (prompt or "").strip():
        yield error_md("Pick at least one run and type (or pick) a prompt."), *blank
        return
    try:
        base, adapters = _adapters(runs, ctx)
    except ValueError as exc:
        yield error_md(str(exc)), *blank
        return
    labels = ([f"{BASE}: {base}"] if with_base else []) + runs
    columns: list[str | None] = ([None] if with_base else []) + list(adapters)
    status = ok_md(
        f"Same prompt, same decoding (temperature {temperature}, seed {int(seed)}), one copy of **{base}** "
        "in memory; adapters switched per answer."
    )
    try:
        for texts in ctx.models.compare(
            base,
            columns,
            [{"role": "user", "content": prompt}],
            max_new_tokens=int(max_new),
            temperature=float(temperature),
            seed=int(seed),
        ):
            yield status, *_columns(labels, texts)
    except ModelServerError as exc:
        yield error_md(str(exc)), *blank


def _columns(labels: list[str], texts: list[str]) -> list[dict]:
    out = [gr.update(value=t, label=label, visible=True) for label, t in zip(labels, texts, strict=True)]
    return out + [gr.update(value="", visible=False) for _ in range(MAX_COLUMNS + 1 - len(out))]


# -- blind test ----------------------------------------------------------------------------------------------------


# The blind test's decoding, passed to the model server and stored with every vote: greedy, so that an answer is
# the model's own best and a vote can be reproduced.
BLIND_DECODING = {
    "max_new_tokens": 128,
    "temperature": 0.0,
    "top_p": 1.0,
    "repetition_penalty": 1.0,
    "seed": 0,
}


def _model(name: str, base: str, adapter_dir: str | None, ctx: AppContext) -> dict[str, Any]:
    """Which model a contestant is, stored with the vote: the base model id, and for a run its id, adapter and the
    run's own system prompt (used when the blind test's system prompt is empty)."""
    if name == BASE:
        return {"base_model": base, "run": None, "adapter_dir": None}
    job = ctx.store.get_job(name)
    own = (job.config.get("system_prompt") or "") if job else ""
    return {"base_model": base, "run": name, "adapter_dir": adapter_dir, "system_prompt": own}


def blind_pair(
    left: str | None,
    right: str | None,
    prompt: str,
    ctx: AppContext,
    rng_seed: int | None = None,
    system: str | None = "",
):
    """Two answers with hidden labels. Returns (message, answer A, answer B, hidden state as JSON). The hidden
    state keeps everything the vote stores: who was A and B, the prompt and system prompt, both answers, both
    models and the decoding."""
    if not left or not right or left == right or not (prompt or "").strip():
        return error_md("Pick two different contestants and type a prompt."), "", "", ""
    who = [left, right]
    runs = [w for w in who if w != BASE]
    try:
        base, adapters = _adapters(runs, ctx)
    except ValueError as exc:
        return error_md(str(exc)), "", "", ""
    by_name = dict(zip(runs, adapters, strict=True))
    random.Random(rng_seed).shuffle(who)
    columns = [by_name.get(w) for w in who]
    system = (system or "").strip()
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    texts = ["", ""]
    try:
        for latest in ctx.models.compare(base, columns, messages, **BLIND_DECODING):
            texts = latest
    except ModelServerError as exc:
        return error_md(str(exc)), "", "", ""
    hidden = json.dumps(
        {
            "a": who[0],
            "b": who[1],
            "prompt": prompt,
            "system": system,
            "answers": texts,
            "models": [_model(w, base, by_name.get(w), ctx) for w in who],
            "decoding": BLIND_DECODING,
        }
    )
    return ok_md("Which answer is better? The names are hidden until you vote."), texts[0], texts[1], hidden


def vote(choice: str, hidden: str, ctx: AppContext, better: str | None = "") -> tuple[str, pd.DataFrame, str]:
    """Record a vote ("A", "B" or "tie") with what was voted on and the optional better answer the person wrote;
    reveal who was who; return the win-rate table. A hidden state from before answers were kept (a page left open
    across an upgrade) still records the vote, without answers."""
    if not hidden:
        return error_md("Get two answers first."), win_rates(ctx), ""
    h = json.loads(hidden)
    winner = {"A": h["a"], "B": h["b"]}.get(choice, "tie")
    answers = h.get("answers") or [None, None]
    models = h.get("models") or [None, None]
    better = (better or "").strip()
    VoteStore(ctx.store).add(
        h["prompt"],
        h["a"],
        h["b"],
        winner,
        system=h.get("system") or "",
        left_answer=answers[0],
        right_answer=answers[1],
        left_model=models[0],
        right_model=models[1],
        decoding=h.get("decoding"),
        better=better,
    )
    kept = " Your better answer is kept too." if better else ""
    return ok_md(f"Recorded. A was **{h['a']}**, B was **{h['b']}**.{kept}"), win_rates(ctx), ""


RATE_COLUMNS = {
    "contestant": object,
    "win rate": "float64",
    "wins": "int64",
    "losses": "int64",
    "ties": "int64",
}
RATE_COLUMNS["games"] = "int64"


def win_rates(ctx: AppContext) -> pd.DataFrame:
    """Votes per contestant, win rate as a fraction (ties count half), best first; typed even when empty, because
    Gradio fixes a chart's axis types from the first frame it gets (an untyped empty frame made the win rate an
    axis of categories, "0" above "1", with floating bars)."""
    rows = [
        {"contestant": k, "win rate": (v["wins"] + 0.5 * v["ties"]) / v["games"], **v}
        for k, v in VoteStore(ctx.store).tally().items()
        if v["games"]
    ]
    frame = pd.DataFrame(rows, columns=list(RATE_COLUMNS)).astype(RATE_COLUMNS)
    return frame.sort_values("win rate", ascending=False, ignore_index=True)


def rates_chart(rates: pd.DataFrame) -> dict:
    """The win-rate bars, shown once there is a vote (an empty chart is a frame with "Infinite extent")."""
    return gr.update(value=rates, visible=len(rates) > 0)


def rates_table(rates: pd.DataFrame) -> pd.DataFrame:
    """The win rates for people: a percentage, not 0.667."""
    shown = rates.astype({"win rate": object})
    shown["win rate"] = [f"{v:.0%}" for v in rates["win rate"]]
    return shown


HISTORY_COLUMNS = {
    "vote": "str",
    "time": "datetime64[ns]",
    "contestant": object,
    "win rate": "float64",
    "games": "int64",
}
# Votes: past this many, the x axis's labels (one per vote) would run into each other.
HISTORY_LABELS_UP_TO = 40


def rates_history(ctx: AppContext) -> pd.DataFrame:
    """Each contestant's win rate after each of its votes (``votes.win_rate_history``), typed even when empty (the
    lesson of ``win_rates``: Gradio fixes the axis types from the first frame). The chart's axis is the number of
    votes so far, not the clock: votes cast a few seconds apart made a time axis of ".800" ticks. The number is
    text, a category to Vega: as a quantity, three votes got ticks at 1.2, 1.4, ... (Gradio's LinePlot sets no
    minimum tick step); ``history_chart`` puts the categories in order."""
    rows = win_rate_history(VoteStore(ctx.store).votes())
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    frame["time"] = pd.to_datetime(frame["time"], unit="s")
    frame["vote"] = [str(v) for v in frame["vote"]]
    return frame.astype(HISTORY_COLUMNS)


def history_chart(history: pd.DataFrame) -> dict:
    """The win rates over time as lines, shown once a contestant has two points (a line of one point draws
    nothing). The colours are sent with every frame: Gradio redraws a chart's colour domain only when such a
    setting changes, so a contestant that appears later would otherwise never get a line. So is the order of the
    votes on the x axis (as text "10" would come before "2"), labelled while there are few enough to read."""
    names = list(dict.fromkeys(history["contestant"]))
    colours = {n: LINE_COLOURS[i % len(LINE_COLOURS)] for i, n in enumerate(names)}
    two_points = bool(len(history)) and int(history["contestant"].value_counts().max()) >= 2
    order = sorted(set(history["vote"]), key=int)
    return gr.update(
        value=history,
        color_map=colours or None,
        sort=order or None,
        x_axis_labels_visible=len(order) <= HISTORY_LABELS_UP_TO,
        visible=two_points,
    )


def make_vote_dataset(name: str | None, ctx: AppContext) -> str:
    """ "Make a dataset from my votes": the votes' preference pairs saved as a dataset (``votes.export_votes``).
    Says what was made (its name, the pairs kept, the votes left out and why) or why nothing could be, and offers the
    run the votes were about as the run to start from (the Train tab picks it with DPO: ``train_on_votes``)."""
    try:
        record, report, counts = export_votes(ctx.store, ctx.paths, name=(name or "").strip() or None)
    except (TuneDeckError, OSError) as exc:
        return error_md(explain(exc))
    run = votes_run(ctx)
    then = (
        f"Train on it with DPO starting from **{run}**, the run these votes were about (its answers are what you "
        "judged): the **Train** tab has both picked for you; orpo and kto train on it too."
        if run
        else "Train on it in the **Train** tab with the objective dpo, orpo or kto."
    )
    return ok_md(
        f"Made dataset **{record.name}** ({record.id}): {counts_text(counts)} Import: {report.summary()} {then}"
    )


def votes_run(ctx: AppContext) -> str | None:
    """The run the blind-test votes were about (``votes.voted_run``), among those a run can start from."""
    from ui.train_tab import finished_runs as startable

    return voted_run(VoteStore(ctx.store).votes(), [run for _, run in startable(ctx) if run])


# -- scores --------------------------------------------------------------------------------------------------------


def run_eval(run: str | None, limit: float, ctx: AppContext):
    """Score a run and its base on held-out examples (in a child process). Yields (message, scores, examples, csv)."""
    if not run:
        yield error_md("Pick a finished run."), None, None, None
        return
    from backend.jobs.accelerator import waiting_message

    # Scoring waits its turn while a job trains (backend.jobs.accelerator): say so for as long as it waits.
    while busy := ctx.store.list_jobs((JobStatus.RUNNING,)):
        yield ok_md(waiting_message("score", busy[0].id)), None, None, None
        time.sleep(2)
    job = ctx.store.get_job(run)
    # the backend's rule for what is scored: the run it started from only where its copy of that adapter is kept
    start = job.config["continue_from"] if job and evaluate.start_adapter(job) else ""
    who = (
        f"**{run}**, its base model and **{start}**, the run it started from"
        if start
        else f"**{run}** and its base model"
    )
    yield ok_md(f"Scoring {who}: each answers every held-out example…"), None, None, None
    proc = supervisor.start(
        supervisor.python("-m", "backend", "eval", run, "--limit", str(int(limit)), "--json"),
        ctx.paths,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Its stderr says how far it is ("scored 8 of 32 answers"), a line a batch; stdout is one JSON at the end.
    said: list[str] = []
    for line in proc.stderr:  # type: ignore[union-attr]
        line = line.strip()
        if line.startswith(evaluate.PROGRESS_PREFIX):
            done = line.removeprefix(evaluate.PROGRESS_PREFIX)
            yield ok_md(f"Scoring {who}: {done} written…"), None, None, None
        elif line:
            said.append(line)
    if proc.stdout is not None:
        proc.stdout.read()  # the scores are read from eval.json below
    proc.wait(timeout=60)
    if proc.returncode != 0:
        error = next((x for x in reversed(said) if x.startswith("error:")), "\n".join(said[-3:]))
        yield error_md(error.removeprefix("error: ") or "the evaluation failed"), None, None, None
        return
    yield show_eval(run, ctx)


def show_eval(run: str | None, ctx: AppContext):
    job = ctx.store.get_job(run) if run else None
    data = handoff.read_scores(job.job_dir) if job else None
    if not data:
        return ("Not scored yet: press *Score*.", None, None, None)

    columns = evaluate.score_columns(data)  # base model, the run it started from (if any), fine-tuned
    table = pd.DataFrame(
        [
            {
                "score": evaluate.LABELS[m],
                **{label: evaluate.fmt_score(data[side].get(m)) for side, label in columns},
                "what it measures": evaluate.ABOUT[m],
            }
            for m in evaluate.METRICS + evaluate.PREF_METRICS
            if m in evaluate.METRICS or m in data["tuned"]  # preference data only
        ]
    )
    csv_path = Path(job.job_dir) / "eval_examples.csv"
    examples = example_rows(pd.read_csv(csv_path), columns) if csv_path.is_file() else None
    msg = ok_md(
        f"**{run}** on {data['n_examples']} examples from {data['source']} ({data['seconds']} s). "
        "↓ lower is better, ↑ higher is better."
        + "".join(f"  \n{line}" for line in evaluate.judge_lines(data))
    )
    return msg, table, examples, str(csv_path) if csv_path.is_file() else None


def score_limit(run: str | None, ctx: AppContext) -> dict:
    """The Examples slider goes up to the held-out examples there are (``evaluate.held_out_count``): no "32"
    offered where only 16 exist."""
    job = ctx.store.get_job(run) if run else None
    n = min(evaluate.held_out_count(ctx.store, job), 256) if job else 0
    if n <= 0:
        return gr.update()
    return gr.update(minimum=1, maximum=n, value=min(32, n), step=1)


def example_rows(full: pd.DataFrame, columns: list[tuple[str, str]]) -> pd.DataFrame:
    """The per-example table for reading: the question, the reference and each model's answer (``columns``: side,
    label), with one score each (ROUGE-L, in %). Every column of every score stays in the CSV download."""
    shown = pd.DataFrame({"question": full.get("prompt"), "reference answer": full.get("reference")})
    for side, label in columns:
        shown[label] = full.get(f"{side}_answer")
    for side, label in columns:
        col = full.get(f"{side}_rougeL")
        shown[f"{label} ROUGE-L"] = [f"{v:.0%}" for v in col] if col is not None else None
    return shown


# -- run to run ----------------------------------------------------------------------------------------------------


# Line names are slots (run 1..4), not run ids: Gradio 6 fixes a chart's colour domain from the first frame it
# gets (see ui.style.curve_frame), so the names must not change when the person picks other runs. The metrics
# table's "line" column says which run is which.
OVERLAY_RUNS = 4
OVERLAY_SERIES = tuple(f"{i} {kind}" for i in range(1, OVERLAY_RUNS + 1) for kind in ("train", "eval"))
OVERLAY_COLOURS = dict(
    zip(
        OVERLAY_SERIES,
        ("#f97316", "#fdba74", "#2563eb", "#93c5fd", "#16a34a", "#86efac", "#9333ea", "#d8b4fe"),
        strict=True,
    )
)


def curves(
    runs: list[str] | None, ctx: AppContext
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, str | None]:
    """Overlaid loss curves (train and eval) of up to four runs, a metrics table, and a CSV of the curve points."""
    runs = [r for r in (runs or []) if ctx.store.get_job(r) is not None][:OVERLAY_RUNS]
    points, metrics = [], []
    for line, r in enumerate(runs, start=1):
        job = ctx.store.get_job(r)
        for name in ("loss", "eval_loss"):
            for step, _, value in ctx.store.metrics(r, name):
                points.append(
                    {
                        "run": r,
                        "series": f"{line} {'train' if name == 'loss' else 'eval'}",
                        "step": step,
                        "loss": value,
                    }
                )
        ev = handoff.read_scores(job.job_dir) or {}
        losses = ctx.store.metrics(r, "loss")
        metrics.append(
            {
                "line": line,
                "run": r,
                "status": job.status.value,
                "base model": job.config.get("base_model"),
                "steps": (job.result or {}).get("steps"),
                "final train loss": round(losses[-1][2], 4) if losses else None,
                **{
                    f"{evaluate.LABELS.get(k, k)} (fine-tuned)": evaluate.fmt_score(v)
                    for k, v in (ev.get("tuned") or {}).items()
                    if isinstance(v, (int, float))
                },
            }
        )
    csv_path = None
    if runs:
        csv_path = ctx.paths.home / "exports" / "loss-curves.csv"
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        evaluate.write_csv(points, csv_path)
    frame = curve_frame(points, ("run", "series", "step", "loss"), names=OVERLAY_SERIES)
    return frame, pd.DataFrame(metrics), config_diff(runs, True, ctx), str(csv_path) if csv_path else None


def config_diff(runs: list[str] | None, only_differences: bool, ctx: AppContext) -> pd.DataFrame:
    jobs = [j for j in (ctx.store.get_job(r) for r in (runs or [])) if j is not None]
    if not jobs:
        return pd.DataFrame()
    keys = sorted({k for j in jobs for k in j.config} | {"dataset", "preset"})

    def value(j: Any, k: str) -> Any:
        return {"dataset": j.dataset_id, "preset": j.preset}.get(k, j.config.get(k))

    rows = []
    for k in keys:
        vals = [value(j, k) for j in jobs]
        if only_differences and len({json.dumps(v, default=str) for v in vals}) == 1:
            continue
        label = {"dataset": "Dataset", "preset": "Preset"}.get(k) or LABELS.get(k, k)
        rows.append({"setting": label, **{j.id: v for j, v in zip(jobs, vals, strict=True)}})
    return pd.DataFrame(rows)


def render(ctx: AppContext) -> dict:
    runs_now = finished_runs(ctx)
    with gr.Accordion("Side by side", open=True):
        with gr.Row():
            runs = gr.Dropdown(
                label="Runs (up to 4, same base model)",
                elem_id="sbs-runs",
                choices=runs_now,
                multiselect=True,
                max_choices=MAX_COLUMNS,
                interactive=True,
                allow_custom_value=True,
                scale=3,
            )
            with_base = gr.Checkbox(label="Also the base model alone", value=True, scale=1)
        with gr.Row():
            prompt = gr.Textbox(
                label="Prompt", placeholder="Type a prompt, or pick one from the validation set", scale=3
            )
            picked = gr.Dropdown(label="…or a held-out prompt", choices=[], interactive=True, scale=2)
        with gr.Row():
            temperature = gr.Slider(0, 2, value=0, step=0.05, label="Temperature (0 = greedy)")
            max_new = gr.Slider(8, 1024, value=128, step=8, label="Max new tokens")
            seed = gr.Number(value=0, precision=0, label="Seed (same for every column)")
        go = gr.Button("Answer side by side", variant="primary")
        sbs_msg = gr.Markdown()
        with gr.Row():
            cols = [
                gr.Textbox(visible=False, lines=8, interactive=False, elem_id=f"answer-{i}")
                for i in range(MAX_COLUMNS + 1)
            ]
    with gr.Accordion("Blind test", open=False):
        gr.Markdown(
            "Two answers with the names hidden: pick the better one. Votes build a win rate per model."
        )
        with gr.Row():
            left = gr.Dropdown(
                label="Contestant 1", choices=[BASE] + runs_now, interactive=True, allow_custom_value=True
            )
            right = gr.Dropdown(
                label="Contestant 2", choices=[BASE] + runs_now, interactive=True, allow_custom_value=True
            )
        blind_prompt = gr.Textbox(label="Prompt")
        blind_system = gr.Textbox(
            label="System prompt (optional)",
            placeholder="Empty: each run uses its own, as in Chat",
            elem_id="blind-system",
        )
        ask = gr.Button("Get two answers")
        blind_msg = gr.Markdown()
        with gr.Row():
            ans_a = gr.Textbox(label="Answer A", lines=6, interactive=False)
            ans_b = gr.Textbox(label="Answer B", lines=6, interactive=False)
        hidden = gr.Textbox(visible=False)
        better = gr.Textbox(
            label="Optional: write a better answer than both",
            lines=3,
            placeholder="Kept with your vote; it becomes the preferred answer when you make a dataset",
            elem_id="better-answer",
        )
        with gr.Row():
            vote_a, vote_tie, vote_b = gr.Button("A is better"), gr.Button("Tie"), gr.Button("B is better")
        rates = gr.Dataframe(rates_table(win_rates(ctx)), label="Win rates", interactive=False)
        rates_now = win_rates(ctx)
        history_now = history_chart(rates_history(ctx))
        with gr.Row():
            rates_plot = gr.BarPlot(
                rates_now,  # typed from the first frame on: the win rate is a quantity, 0 to 100 %
                visible=len(rates_now) > 0,
                x="contestant",
                y="win rate",
                y_lim=[0, 1],
                y_axis_format=".0%",
                height=220,
                buttons=["export"],
                elem_id="win-rates",
            )
            history_plot = gr.LinePlot(
                history_now["value"],  # typed from the first frame on: votes, a quantity from 0 to 100 %
                visible=history_now["visible"],
                color_map=history_now["color_map"],
                sort=history_now["sort"],
                x_axis_labels_visible=history_now["x_axis_labels_visible"],
                x="vote",
                x_title="votes so far",
                y="win rate",
                color="contestant",
                y_lim=[0, 1],
                y_axis_format=".0%",
                height=220,
                title="Win rate after each vote",
                buttons=["export"],
                elem_id="win-rates-over-time",
            )
        gr.Markdown(
            "Votes become data: each vote A or B (and each answer you wrote) is a pair of a better and a worse "
            "answer, what preference training (dpo, orpo, kto) learns from. Ties and votes from before TuneDeck kept "
            "the answers are left out."
        )
        with gr.Row():
            votes_name = gr.Textbox(
                label="Name for the new dataset (optional)", placeholder="votes-<today's date>", scale=2
            )
            make_dataset = gr.Button("Make a dataset from my votes", scale=1)
        votes_msg = gr.Markdown(elem_id="votes-dataset-message")
    with gr.Accordion("Scores on held-out examples", open=False):
        with gr.Row():
            eval_run = gr.Dropdown(
                label="Run to score", choices=runs_now, interactive=True, allow_custom_value=True
            )
            limit = gr.Slider(4, 256, value=32, step=4, label="Examples")
        score = gr.Button("Score (base vs fine-tuned)")
        eval_msg = gr.Markdown()
        scores = gr.Dataframe(label="Scores", interactive=False, wrap=True)
        gr.Markdown(
            "Base model and fine-tuned run answer the same held-out questions, never seen in training. Trust eval "
            "loss and ROUGE-L first; read a few answers below before believing any one number."
        )
        examples = gr.Dataframe(
            label="Per example (click a column header to sort; the CSV has every score)",
            interactive=False,
            wrap=True,
            max_height=420,
            column_widths=["22%", "20%", "22%", "22%", "7%", "7%"],
        )
        examples_csv = gr.File(label="Per-example table (CSV)", interactive=False, height=80)
    with gr.Accordion("Compare runs", open=False):
        pick = gr.Dropdown(
            label="Runs (up to 4)",
            choices=all_runs(ctx),
            multiselect=True,
            interactive=True,
            allow_custom_value=True,
            max_choices=OVERLAY_RUNS,
        )
        overlay = gr.LinePlot(
            x="step",
            y="loss",
            color="series",
            color_map=OVERLAY_COLOURS,
            height=300,
            title="Loss of up to 4 runs (train, and eval when there is a validation split); "
            "lines are numbered as in the Metrics table",
            buttons=["fullscreen", "export"],
            elem_id="compare-overlay",
        )
        curves_csv = gr.File(label="Curve data (CSV)", interactive=False, height=80)
        metrics_table = gr.Dataframe(label="Metrics", interactive=False)
        only_diff = gr.Checkbox(label="Only settings that differ", value=True)
        diff = gr.Dataframe(label="Settings", interactive=False)

    def answer(*args: Any):
        yield from side_by_side(*args, ctx=ctx)

    def score_run(run: str | None, n: float):
        yield from run_eval(run, n, ctx)

    runs.change(lambda r: validation_prompts(r, ctx), runs, picked, api_visibility="private")
    picked.change(lambda p: p or gr.update(), picked, prompt, api_visibility="private")
    go.click(
        answer,
        [runs, with_base, prompt, temperature, max_new, seed],
        [sbs_msg, *cols],
        api_name="side_by_side",
    )
    ask.click(
        lambda a, b, p, s: blind_pair(a, b, p, ctx, system=s),
        [left, right, blind_prompt, blind_system],
        [blind_msg, ans_a, ans_b, hidden],
        api_name="blind_pair",
    )

    def voted(choice: str):
        # written defaults to None: the API then lists it as optional, so scripts from before the box still vote
        # with one argument (Gradio reads a None default as "optional"; the box's empty value is not enough)
        def fn(h: str, written: str | None = None):
            msg, rates, cleared = vote(choice, h, ctx, better=written)
            return (
                msg,
                rates_table(rates),
                rates_chart(rates),
                history_chart(rates_history(ctx)),
                cleared,
                "" if h else gr.update(),  # recorded: the written answer went with the vote
            )

        return fn

    for btn, choice in ((vote_a, "A"), (vote_b, "B"), (vote_tie, "tie")):
        btn.click(
            voted(choice),
            [hidden, better],
            [blind_msg, rates, rates_plot, history_plot, hidden, better],
            api_name=f"vote_{choice.lower()}",
        )
    # Opening the tab refreshes the win-rate table (compare_tab.on_open, wired in ui/__init__.py); the lines follow
    # it (after a vote they are already drawn: the same frame again).
    rates.change(lambda: history_chart(rates_history(ctx)), None, history_plot, api_visibility="private")
    votes_event = make_dataset.click(
        lambda n: make_vote_dataset(n, ctx), votes_name, votes_msg, api_name="export_votes"
    )
    score.click(score_run, [eval_run, limit], [eval_msg, scores, examples, examples_csv], api_name="evaluate")
    eval_run.change(
        lambda r: show_eval(r, ctx),
        eval_run,
        [eval_msg, scores, examples, examples_csv],
        api_name="eval_results",
    )
    eval_run.change(lambda r: score_limit(r, ctx), eval_run, limit, api_visibility="private")
    pick.change(
        lambda r: curves(r, ctx), pick, [overlay, metrics_table, diff, curves_csv], api_name="compare_runs"
    )
    only_diff.change(lambda r, o: config_diff(r, o, ctx), [pick, only_diff], diff, api_visibility="private")
    return {
        "runs": runs,
        "left": left,
        "right": right,
        "eval_run": eval_run,
        "pick": pick,
        "rates": rates,
        "rates_plot": rates_plot,
        "votes_event": votes_event,
        "votes_msg": votes_msg,
    }
