"""Train tab: pick a dataset and a preset, adjust the main settings, see whether it fits, queue a job.

The widgets are made from ``RunConfig``'s fields (type, choices, help text), and the handler passes their values
straight to ``RunConfig.parse`` on top of the preset: the UI holds no mapping of its own and decides nothing.
The *basic* settings are the handful most people change; beside "What it learns from", for preference methods, the
run to start from; *More settings* holds all the others. Below them, the estimated peak GPU memory and time per epoch
(``Manager.fit_report``, torch-free) follow every change, and what Train would refuse (a dataset of preference pairs
with sft, say) shows before it is pressed.
"""

from __future__ import annotations

import re
import typing
from typing import Any

import gradio as gr

from backend.errors import TuneDeckError, explain
from backend.jobs.admission import start_note
from backend.jobs.config import ConfigError, RunConfig
from backend.jobs.presets import PresetError, list_presets, load_preset
from backend.models.registry import BUILTINS, TINY_DESCRIPTION, TINY_MODEL
from ui.context import AppContext
from ui.style import error_md, note_md, ok_md

BASIC = (
    "base_model",
    "objective",
    "method",
    "max_steps",
    "num_epochs",
    "learning_rate",
    "max_length",
    "batch_size",
)
# Shown beside "What it learns from" while it is a preference method (dpo, orpo, kto): for those, where a run starts
# is the choice that matters most (they usually follow an sft run).
WITH_OBJECTIVE = ("continue_from",)
ADVANCED = (
    "beta",
    "sft_weight",
    "lora_r",
    "grad_accum",
    "gradient_checkpointing",
    "optimizer",
    "lora_alpha",
    "lora_layers",
    "lora_dropout",
    "target_modules",
    "use_dora",
    "use_rslora",
    "batching",
    "lr_scheduler",
    "warmup_ratio",
    "logging_steps",
    "save_steps",
    "eval_steps",
    "oom_retry",
    "score_examples",
    "trust_remote_code",
    "system_prompt",
    "seed",
    "device",
    "precision",
    "num_devices",
    "multi_device",
    "min_steps",  # added last: the API's earlier arguments keep their places
)
FIELDS = BASIC + WITH_OBJECTIVE + ADVANCED  # the order of the API's arguments: keep it

# What people call each setting. The config keeps its field names (the CLI, YAML presets and the API use them);
# the page says these instead, in labels, help texts and messages (``in_words``).
LABELS = {
    "base_model": "Base model",
    "method": "Method (LoRA, or 4-bit QLoRA)",
    "objective": "What it learns from",
    "beta": "Preference strength (beta)",
    "sft_weight": "Also learn the better answers (weight)",
    "continue_from": "Start from a finished run's adapter",
    "max_steps": "Training steps (-1: use passes)",
    "num_epochs": "Passes over the data",
    "min_steps": "At least N steps (small datasets get more passes)",
    "learning_rate": "Learning rate",
    "lora_r": "Adapter size (rank)",
    "max_length": "Longest example (tokens)",
    "batch_size": "Examples per step",
    "grad_accum": "Steps to add up before an update",
    "gradient_checkpointing": "Save memory by recomputing (slower)",
    "optimizer": "Optimizer",
    "lora_alpha": "Adapter scale (alpha)",
    "lora_layers": "Adapters on the last N blocks (0: all)",
    "lora_dropout": "Adapter dropout",
    "target_modules": "Layers that get adapters",
    "use_dora": "DoRA adapters",
    "use_rslora": "rsLoRA scaling",
    "batching": "How examples share a batch",
    "lr_scheduler": "Learning-rate schedule",
    "warmup_ratio": "Warm-up (share of steps)",
    "logging_steps": "Record the loss every N steps",
    "save_steps": "Save a checkpoint every N steps",
    "eval_steps": "Validate every N steps (0: about 10 times)",
    "oom_retry": "Retry with a smaller batch if out of GPU memory",
    "score_examples": "Held-out examples to score at the end",
    "trust_remote_code": "Run the model's own code",
    "system_prompt": "System prompt",
    "seed": "Random seed",
    "device": "Train on",
    "precision": "Number format",
    "num_devices": "GPUs to use",
    "multi_device": "With several GPUs",
}
# Choices shown in words; the value the config gets stays the same ("padding_free" shows as "padding free").
CHOICE_LABELS = {
    "sft": "examples to imitate (SFT)",
    "dpo": "better vs worse answers (DPO)",
    "orpo": "better vs worse answers, no reference (ORPO)",
    "kto": "answers marked good or bad (KTO)",
    "lora": "LoRA",
    "qlora": "QLoRA (base in 4-bit)",
    "cpu": "CPU",
    "cuda": "NVIDIA GPU (CUDA)",
    "mps": "Apple GPU (MPS)",
    "fp32": "fp32 (exact, slowest)",
    "ddp": "a copy on each GPU (DDP)",
    "fsdp": "split across GPUs (FSDP)",
}
# Only the snake_case names: "device", "seed" or "method" are also plain words of the help texts.
_NAMES = re.compile(
    r"\b(" + "|".join(sorted((n for n in LABELS if "_" in n), key=len, reverse=True)) + r")\b"
)


def in_words(text: str) -> str:
    """A help text or message with each setting's field name (``max_steps``) replaced by its label."""
    return _NAMES.sub(lambda m: f"“{LABELS[m.group(1)]}”", text)


def widget_for(name: str) -> gr.components.Component:
    """A widget for one RunConfig field, labelled as people say it, with its help text."""
    field = RunConfig.model_fields[name]
    label, info = LABELS[name], in_words(field.description or "")
    ann = field.annotation
    if typing.get_origin(ann) is typing.Literal:
        choices = [(CHOICE_LABELS.get(v, str(v).replace("_", " ")), v) for v in typing.get_args(ann)]
        return gr.Dropdown(label=label, info=info, choices=choices, interactive=True)
    if ann is bool:
        return gr.Checkbox(label=label, info=info)
    if ann is int:
        return gr.Number(label=label, info=info, precision=0)
    if ann is float:
        return gr.Number(label=label, info=info)
    if name == "continue_from":  # finished runs are listed when it shows and when it is opened (render)
        return gr.Dropdown(
            label=label,
            info=info,
            choices=[NEW_ADAPTER],
            value="",
            allow_custom_value=True,
            interactive=True,
            visible=False,  # shown for preference objectives (start_from)
            elem_id="train-continue-from",
        )
    lines = 2 if name == "system_prompt" else 1
    return gr.Textbox(label=label, info=info, lines=lines)


NEW_ADAPTER = ("none: a new adapter", "")


def finished_runs(ctx: AppContext) -> list[tuple[str, str]]:
    """The runs a new run can start from: finished, with an adapter; newest first, with base model and objective."""
    from backend.core.status import JobStatus

    runs = [NEW_ADAPTER]
    for job in ctx.store.list_jobs((JobStatus.SUCCEEDED,)):
        if (job.result or {}).get("adapter_dir"):
            what = f"{job.id} ({job.config.get('base_model')}, {job.config.get('objective', 'sft')})"
            runs.append((what, job.id))
    return runs  # list_jobs gives the newest first


def start_from(objective: str | None, current: str | None, ctx: AppContext) -> dict:
    """The run to start from ("Start from a finished run's adapter") follows the objective: shown, with the finished
    runs listed afresh, for a preference method; hidden for sft, unless it holds a run (an sft run continuing another
    shows what it continues rather than hide it)."""
    from backend.jobs.config import PREFERENCE_OBJECTIVES

    if objective in PREFERENCE_OBJECTIVES or current:
        return gr.update(visible=True, choices=finished_runs(ctx))
    return gr.update(visible=False)


def train_on_votes(datasets: list[str], run: str | None, ctx: AppContext) -> tuple[dict, dict, dict, dict]:
    """The Train tab after "Make a dataset from my votes" (Compare): the datasets listed afresh with the new one
    (the newest, first) picked, DPO, and the run the votes were about (``run``) to start from, on its base model;
    without a run, the dataset and DPO only. Updates for (dataset, objective, continue_from, base_model)."""
    job = ctx.store.get_job(run) if run else None
    if job is None:
        picked, base = gr.update(visible=True), gr.update()
    else:
        picked = gr.update(choices=finished_runs(ctx), value=run, visible=True)
        base = gr.update(value=job.config["base_model"]) if job.config.get("base_model") else gr.update()
    listed = gr.update(choices=datasets, value=datasets[0] if datasets else None)
    return listed, gr.update(value="dpo"), picked, base


def preset_values(preset: str) -> list[Any]:
    """The description and the settings of a preset, in FIELDS order, to fill the widgets."""
    try:
        p = load_preset(preset)
    except (PresetError, ConfigError) as exc:
        return [error_md(str(exc))] + [gr.update() for _ in FIELDS]
    values = p.config.model_dump()
    about = f"**{p.name}**: {p.description}  \nNeeds: {p.hardware}"
    return [about] + [values[f] for f in FIELDS]


def model_note(base_model: str) -> str:
    """What the person should know about a model made on this machine (the tiny one, the starter model)."""
    name = (base_model or "").strip()
    if name == TINY_MODEL:
        return note_md(TINY_DESCRIPTION)
    if name in BUILTINS:
        return note_md(BUILTINS[name].about)
    return ""


def widget_config(preset: str, values: tuple) -> RunConfig:
    """The widgets' values on top of the preset, as one validated config (PresetError / ConfigError if not)."""
    base = load_preset(preset).config.model_dump()
    return RunConfig.parse({**base, **{f: _plain(v) for f, v in zip(FIELDS, values, strict=True)}})


def submit_job(dataset: str | None, preset: str, *values: Any, ctx: AppContext) -> tuple[str, str | None]:
    """Queue a job from the widgets. Returns (message, the new job's id or None)."""
    if not dataset:
        return error_md("Choose a dataset first (make one in the Data tab)."), None
    try:
        config = widget_config(preset, values)
        job = ctx.manager.submit(dataset, config, preset=preset)
    except ConfigError as exc:
        return error_md(problems_text(exc)), None
    except (
        TuneDeckError,
        OSError,
    ) as exc:  # a preset that does not load, a data directory that cannot be written
        return error_md(explain(exc)), None
    return ok_md(
        f"Queued **{job.id}**. Follow it in the **Runs** tab; you can close this page, it keeps training."
    ), job.id


def problems_text(exc: ConfigError) -> str:
    n = len(exc.problems)
    return f"{n} setting{'s' if n > 1 else ''} to fix before training:\n" + in_words(str(exc))


def check_settings(dataset: str | None, preset: str, *values: Any, ctx: AppContext) -> tuple[str, str]:
    """(estimate, message) after any change: the estimate for these settings, and under Train what is wrong with
    them now, or nothing, so that no message of an earlier press or value stays on the page. "Now" includes the
    objective against the dataset (preference pairs picked with sft) and the run to start from, as Train checks
    them (``Admission.objective_problems``)."""
    try:
        config = widget_config(preset, values)
    except ConfigError as exc:
        return "", error_md(problems_text(exc))
    except PresetError as exc:
        return "", error_md(str(exc))
    record = ctx.store.get_dataset(dataset) if dataset else None
    problems = ctx.manager.admission.objective_problems(record, config) if record else []
    advice = start_note(config)
    message = (
        error_md(problems_text(ConfigError(problems))) if problems else note_md(advice) if advice else ""
    )
    return estimate_text(dataset, preset, *values, ctx=ctx), message


def estimate_text(dataset: str | None, preset: str, *values: Any, ctx: AppContext) -> str:
    """The Train tab's estimate: peak GPU memory and time per epoch for these settings (or what is wrong)."""
    try:
        config = widget_config(preset, values)
    except (PresetError, ConfigError):
        return ""  # Train reports the settings' problems; no estimate for settings that do not parse
    try:
        fits, text = ctx.manager.fit_report(dataset, config)
    except Exception as exc:  # noqa: BLE001 - an estimate must never break the form
        return note_md(f"No estimate: {exc}")
    return (ok_md(text) if fits else error_md(text)) if text else ""


def _plain(v: Any) -> Any:
    # gr.Number gives floats; whole numbers go to int fields as ints (pydantic refuses 60.0 for an int in strict
    # cases and shows "60.0" in messages otherwise).
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    return v


def render(ctx: AppContext) -> dict:
    presets = list_presets()
    with gr.Row():
        dataset = gr.Dropdown(
            label="Dataset",
            choices=[d.name for d in ctx.store.list_datasets()],
            interactive=True,
            allow_custom_value=True,  # datasets saved after the page loaded; submit checks it
            info="Made in the Data tab.",
        )
        preset = gr.Dropdown(
            label="Preset",
            choices=[p.name for p in presets],
            value=ctx.default_preset,
            interactive=True,
            info="Sensible settings for a model; change any of them below.",
        )
    about = gr.Markdown()
    widgets: dict[str, gr.components.Component] = {}
    with gr.Group():
        for i in range(0, len(BASIC), 4):
            with gr.Row():
                for f in BASIC[i : i + 4]:
                    widgets[f] = widget_for(f)
                    if f == "objective":  # the run to start from, beside it (shown for preference methods)
                        widgets.update({w: widget_for(w) for w in WITH_OBJECTIVE})
    note = gr.Markdown()
    with gr.Accordion("More settings", open=False):
        for i in range(0, len(ADVANCED), 3):
            with gr.Row():
                for f in ADVANCED[i : i + 3]:
                    widgets[f] = widget_for(f)
    fit = gr.Markdown(elem_id="train-estimate")
    train = gr.Button("Train", variant="primary", size="lg")
    message = gr.Markdown()
    job_id = gr.Textbox(visible=False)  # not gr.State: the API returns it to gradio_client callers

    ordered = [widgets[f] for f in FIELDS]
    # Shown with a preference objective, with the finished runs listed then; and again whenever it is opened, as runs
    # finish meanwhile.
    widgets["objective"].change(
        lambda o, c: start_from(o, c, ctx),
        [widgets["objective"], widgets["continue_from"]],
        widgets["continue_from"],
        api_visibility="private",
        show_progress="hidden",
    )
    widgets["continue_from"].focus(
        lambda: gr.update(choices=finished_runs(ctx)),
        None,
        widgets["continue_from"],
        api_visibility="private",
    )
    preset.change(preset_values, preset, [about, *ordered], api_name="preset_values")
    widgets["base_model"].change(model_note, widgets["base_model"], note, api_visibility="private")
    train_event = train.click(
        lambda d, p, *v: submit_job(d, p, *v, ctx=ctx),
        [dataset, preset, *ordered],
        [message, job_id],
        api_name="submit_job",
    )
    # The estimate follows the dataset, the preset and every setting (it reads no GPU state but nvidia-smi's).
    estimate = gr.Button("Estimate", size="sm", visible=False)
    estimate.click(
        lambda d, p, *v: estimate_text(d, p, *v, ctx=ctx),
        [dataset, preset, *ordered],
        fit,
        api_name="estimate",
    )
    # Text boxes count when left (or Enter), not per keystroke: a new system prompt means re-tokenizing the dataset.
    triggers = [dataset.change]
    for w in ordered:
        triggers += [w.blur, w.submit] if isinstance(w, gr.Textbox) else [w.change]
    gr.on(
        triggers,
        lambda d, p, *v: check_settings(d, p, *v, ctx=ctx),
        [dataset, preset, *ordered],
        [fit, message],
        api_visibility="private",
        show_progress="hidden",
        trigger_mode="always_last",
    )  # one listener: a preset filling every widget makes one estimate, not 28
    return {
        "dataset": dataset,
        "objective": widgets["objective"],
        "continue_from": widgets["continue_from"],
        "base_model": widgets["base_model"],
        "preset": preset,
        "about": about,
        "widgets": ordered,
        "note": note,
        "train_event": train_event,
        "job_id": job_id,
        "estimate": fit,
    }
