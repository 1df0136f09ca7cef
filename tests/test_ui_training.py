"""The Train and Runs tabs' handlers for the training engine: the estimate, the charts, Resume. No browser, no torch."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.models.devices import Gpu
from ui import runs_tab, train_tab
from ui.context import AppContext


@pytest.fixture
def ctx(capitals_ctx) -> AppContext:
    return capitals_ctx


def values(preset: str = "tiny-offline", **changes) -> list:
    out = train_tab.preset_values(preset)[1:]
    for name, value in changes.items():
        out[train_tab.FIELDS.index(name)] = value
    return out


def test_the_estimate_follows_the_settings_and_says_where_it_trains(ctx):
    text = train_tab.estimate_text("capitals", "tiny-offline", *values(), ctx=ctx)
    assert "td-ok" in text and "No NVIDIA GPU here: it will train on the CPU" in text
    assert "60 steps" in text and "32 examples" in text
    assert (
        train_tab.estimate_text("capitals", "tiny-offline", *values(lora_r=0), ctx=ctx) == ""
    )  # Train explains


def test_the_estimate_warns_before_a_job_that_will_not_fit_and_train_refuses_it(ctx, tmp_path):
    import json

    big = tmp_path / "big-model"
    big.mkdir()
    (big / "config.json").write_text(
        json.dumps(
            {
                "hidden_size": 4096,
                "num_hidden_layers": 32,
                "num_attention_heads": 32,
                "num_key_value_heads": 8,
                "intermediate_size": 14336,
                "vocab_size": 128256,
            }
        )
    )
    ctx.manager.gpu_probe = lambda: [Gpu(0, "NVIDIA GeForce RTX 3060", 12.0, 0.5)]
    settings = values(base_model=str(big), method="lora", batch_size=8, max_length=2048)
    warning = train_tab.estimate_text("capitals", "tiny-offline", *settings, ctx=ctx)
    assert "td-error" in warning and "Will not fit" in warning and "RTX 3060 has 11.5 GB free" in warning
    message, job_id = train_tab.submit_job("capitals", "tiny-offline", *settings, ctx=ctx)
    assert job_id is None and "memory" in message and "Fix:" in message
    assert ctx.store.list_jobs() == []


def test_runs_charts_show_validation_loss_and_hide_gpu_memory_on_a_cpu(ctx, store):
    from backend.jobs.config import RunConfig

    job = ctx.manager.submit("capitals", RunConfig.parse({"max_steps": 3}))
    for step in (1, 2, 3):
        store.add_metrics(
            job.id,
            step,
            {"loss": 3.0 - step / 2, "learning_rate": 0.01, "grad_norm": 1.0, "tokens_per_s": 900.0 + step},
        )
    store.add_metrics(job.id, 2, {"eval_loss": 2.5})
    loss = runs_tab.loss_points(store, job.id)
    assert list(loss["series"]) == ["training"] * 3 + ["validation"]
    charts = runs_tab.job_charts(job.id, ctx)
    by_name = dict(zip(runs_tab.CHART_NAMES, charts, strict=True))
    assert by_name["rewards"]["visible"] is False  # an SFT run has no preference charts
    assert list(by_name["tokens_per_s"]["value"]["value"]) == [901.0, 902.0, 903.0]
    assert by_name["peak_gpu_gb"]["visible"] is False and by_name["learning_rate"]["visible"] is True
    summary, _, _ = runs_tab.job_panel(job.id, ctx)
    assert "Validation loss 2.5000" in summary and "903 tokens/s" in summary


def test_resume_button(ctx, store):
    from backend.core.status import JobStatus
    from backend.jobs.config import RunConfig
    from tests.fake_oom_worker import write_checkpoint

    job = ctx.manager.submit("capitals", RunConfig.parse({"max_steps": 30}))
    assert "Pick a run" in runs_tab.resume_job(None, ctx)[0]
    message, new = runs_tab.resume_job(job.id, ctx)
    assert new is None and "is still queued" in message
    ctx.manager.try_acquire()
    ctx.manager.status.set(job.id, JobStatus.RUNNING, pid=1)
    ctx.manager.status.set(job.id, JobStatus.FAILED, reason="worker died: signal 9")
    ctx.manager.release()
    write_checkpoint(Path(job.job_dir), 10)
    assert "press **Resume**" in runs_tab.job_panel(job.id, ctx)[0]
    message, new = runs_tab.resume_job(job.id, ctx)
    assert new and new in message and f"continues {job.id}" in message
    assert f"Continues {job.id} from its last checkpoint." in runs_tab.job_panel(new, ctx)[0]


def test_loss_charts_colour_their_lines_by_name_even_before_the_first_point(ctx):
    """Gradio fixes a chart's Vega spec from the first frame it gets. An empty frame with float columns made the
    colour column "quantitative": the Runs chart stayed blank with a "-Infinity" legend. Every loss frame the
    tabs hand out, empty or not, must type the series as names and the axes as numbers, and name every line."""
    import gradio as gr

    from ui import compare_tab

    job = ctx.manager.submit("capitals", train_tab.RunConfig.parse({"max_steps": 3}))
    ctx.store.record_step(job.id, 1, 3, None, {"loss": 2.5})
    frames = {
        "runs, nothing picked": runs_tab.job_panel(None, ctx)[1],
        "runs, no points yet": runs_tab.loss_points(ctx.store, "run-without-points"),
        "runs, one point": runs_tab.job_panel(job.id, ctx)[1],
        "compare, nothing picked": compare_tab.curves([], ctx)[0],
        "compare, one run": compare_tab.curves([job.id], ctx)[0],
    }
    for what, frame in frames.items():
        types = gr.LinePlot(x="step", y="loss", color="series").postprocess(frame).datatypes
        assert (types["step"], types["loss"], types["series"]) == (
            "quantitative",
            "quantitative",
            "nominal",
        ), what
    one = frames["runs, one point"]
    assert list(one.dropna().itertuples(index=False, name=None)) == [(1, 2.5, "training")]
    # Every line the chart may ever draw is named from the first frame (with no value until it has points), so
    # the validation loss, or a second run in Compare, shows up when its points arrive.
    assert set(one["series"]) == set(frames["runs, nothing picked"]["series"]) == {"training", "validation"}
    assert set(frames["compare, nothing picked"]["series"]) == set(frames["compare, one run"]["series"])
    assert len(set(frames["compare, one run"]["series"])) == 8  # four runs, train and eval each


# -- preference runs: where to start, and data that needs another objective ----------------------------------------


def test_the_run_to_start_from_shows_beside_the_objective_for_preference_methods(ctx, status):
    import gradio as gr

    from backend.core.status import JobStatus
    from backend.jobs.config import RunConfig

    done = ctx.manager.submit("capitals", RunConfig.parse({"max_steps": 3}))
    status.set(done.id, JobStatus.RUNNING, pid=1)
    status.set(done.id, JobStatus.SUCCEEDED, result={"adapter_dir": "/adapters/x"})
    for objective in ("dpo", "orpo", "kto"):
        shown = train_tab.start_from(objective, "", ctx)
        assert shown["visible"] is True and done.id in [v for _, v in shown["choices"]]  # listed as it shows
    assert train_tab.start_from("sft", "", ctx) == gr.update(visible=False)
    assert train_tab.start_from("sft", done.id, ctx)["visible"] is True  # sft continuing a run: shown

    with gr.Blocks() as page:
        parts = train_tab.render(ctx)
    config = page.get_config_file()
    by_id = {c["id"]: c for c in config["components"]}
    start = by_id[parts["continue_from"]._id]
    assert (
        start["props"]["label"] == "Start from a finished run's adapter"
    )  # the label browser tests look for
    assert start["props"]["visible"] is False  # the default preset is sft

    row = _parent(config["layout"], parts["continue_from"]._id)
    assert parts["objective"]._id in [c["id"] for c in row["children"]]  # beside "What it learns from"
    (more,) = [c for c in config["components"] if c["props"].get("label") == "More settings"]
    assert _parent(_node(config["layout"], more["id"]), parts["continue_from"]._id) is None  # not in the box
    toggles = [
        d
        for d in config["dependencies"]
        if [t[0] for t in d["targets"]] == [parts["objective"]._id]
        and d["outputs"] == [parts["continue_from"]._id]
    ]
    assert len(toggles) == 1  # the objective shows or hides it


def _node(layout: dict, component_id: int) -> dict | None:
    """The part of a page's layout (``get_config_file()["layout"]``) that is this component, with what it holds."""
    if layout.get("id") == component_id:
        return layout
    return next((n for c in layout.get("children", []) if (n := _node(c, component_id))), None)


def _parent(layout: dict | None, component_id: int) -> dict | None:
    """The layout node that directly holds this component, if it is within ``layout``."""
    children = (layout or {}).get("children", [])
    if any(c["id"] == component_id for c in children):
        return layout
    return next((n for c in children if (n := _parent(c, component_id))), None)


def test_preference_pairs_picked_with_sft_say_which_objective_they_need(ctx, csv_file):
    from backend.data.datasets import import_dataset

    rows = "".join(f"Q{i}?,Yes {i}.,No {i}.\n" for i in range(12))
    pairs = csv_file("prompt,chosen,rejected\n" + rows, "p.csv")
    import_dataset(ctx.store, ctx.paths, pairs, name="pairs")
    _, message = train_tab.check_settings("pairs", "tiny-offline", *values(), ctx=ctx)
    assert "td-error" in message and "holds preference pairs" in message and "dpo or orpo or kto" in message
    _, message = train_tab.check_settings("pairs", "tiny-offline", *values(objective="dpo"), ctx=ctx)
    assert "td-error" not in message and "No run to start from" in message  # advice, not a refusal
    _, message = train_tab.check_settings("capitals", "tiny-offline", *values(), ctx=ctx)
    assert message == ""
