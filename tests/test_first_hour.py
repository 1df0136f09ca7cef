"""What a newcomer trips over in the first hour (issue 14), checked at the handlers: the run just trained is the one
each tab opens on, messages belong to the latest action, numbers and names read as words, buttons that cannot
apply are off, the preview shows the cut. No browser, no torch: the browser journey checks the same on the page."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from backend.core.status import JobStatus
from backend.data.datasets import DataError, inspect_file
from backend.jobs.config import RunConfig
from ui import chat_tab, compare_tab, data_tab, runs_tab, share_tab, train_tab
from ui.context import AppContext
from ui.follow import follow, follow_many


@pytest.fixture
def ctx(capitals_ctx) -> AppContext:
    return capitals_ctx


def finished(ctx: AppContext, status, tmp_path, n: int = 1) -> list[str]:
    """``n`` runs that ended with an adapter, oldest first."""
    ids = []
    for i in range(n):
        job = ctx.manager.submit("capitals", RunConfig.parse({"max_steps": 3}))
        adapter = tmp_path / f"adapter-{i}"
        adapter.mkdir()
        status.set(job.id, JobStatus.RUNNING, pid=1)
        status.set(job.id, JobStatus.SUCCEEDED, result={"adapter_dir": str(adapter), "steps": 3})
        ids.append(job.id)
    return ids


# -- the run just trained is what each tab opens on ---------------------------------------------------------------


def test_follow_picks_the_new_run_then_keeps_the_persons_choice():
    runs = ["run-3", "run-2", "run-1"]
    assert follow(None, runs, "run-3", None) == "run-3"  # first visit: the newest
    assert follow("run-1", runs, "run-3", "run-3") == "run-1"  # they picked another since: kept
    assert follow("run-1", ["run-4", *runs], "run-4", "run-3") == "run-4"  # a new run finished: it comes up
    assert follow("gone", runs, "run-3", "run-3") == "run-3"  # their pick was deleted
    assert follow(None, [], None, None) is None
    assert follow_many([], runs, "run-3", "run-3", 4) == ["run-3"]  # nothing picked: the newest
    assert follow_many(["run-1"], ["run-4", *runs], "run-4", "run-3", 2) == ["run-1", "run-4"]
    assert follow_many(["run-1", "run-2"], ["run-4", *runs], "run-4", "run-3", 2) == ["run-2", "run-4"]
    assert follow_many(["run-1"], runs, "run-3", "run-3", 4) == ["run-1"]


def test_chat_compare_and_share_open_on_the_run_just_trained(ctx, status, tmp_path):
    older, newest = finished(ctx, status, tmp_path, 2)

    target, seen = chat_tab.on_open("base: tiny-offline", None, ctx)
    assert target["value"] == newest and seen == newest  # not the base model the page was built with

    runs, eval_run, left, right, pick, table, rates, seen = compare_tab.on_open(
        [], None, None, None, [], None, ctx=ctx
    )
    assert runs["value"] == [newest] and eval_run["value"] == newest and pick["value"] == [newest]
    assert (
        left["value"] == compare_tab.BASE and right["value"] == newest
    )  # a blind test that can start at once

    run, demos, ggufs, seen = share_tab.on_open(None, None, ctx)
    assert run["value"] == newest and isinstance(demos, pd.DataFrame)

    # The person picks the older run; reopening the tab keeps it until another run finishes.
    assert chat_tab.on_open(older, newest, ctx)[0]["value"] == older
    assert share_tab.on_open(older, newest, ctx)[0]["value"] == older


# -- messages belong to the latest action --------------------------------------------------------------------------


def test_a_fixed_setting_clears_its_error_and_a_change_clears_the_queued_message(ctx):
    values = train_tab.preset_values("tiny-offline")[1:]
    lr = train_tab.FIELDS.index("learning_rate")
    bad = list(values)
    bad[lr] = -1
    estimate, message = train_tab.check_settings("capitals", "tiny-offline", *bad, ctx=ctx)
    assert estimate == "" and "td-error" in message and "“Learning rate” = -1" in message
    assert "learning_rate" not in message  # said in words, not as the config's field name
    estimate, message = train_tab.check_settings("capitals", "tiny-offline", *values, ctx=ctx)
    assert message == "" and "td-ok" in estimate  # the error is gone with its cause; the estimate is back


def test_the_save_message_sits_under_the_save_button_and_a_new_file_clears_the_old_report(ctx):
    import gradio as gr

    with gr.Blocks() as page:
        parts = data_tab.render(ctx)
        train_dataset = gr.Dropdown()
        data_tab.wire(parts, train_dataset, ctx)
    config = page.get_config_file()
    ids = {c["id"]: c for c in config["components"]}
    save = next(d for d in config["dependencies"] if d.get("api_name") == "save_dataset")
    assert ids[save["outputs"][0]]["props"].get("elem_id") == "td-save-message"
    upload_events = [
        d
        for d in config["dependencies"]
        if any(t[0] == parts["save_inputs"][0]._id and t[1] == "change" for t in d["targets"])
    ]
    cleared = {o for d in upload_events for o in d["outputs"]}
    assert {parts["save_message"]._id, parts["report"]._id} <= cleared


# -- words, numbers, charts ------------------------------------------------------------------------------------


def test_every_setting_has_a_label_in_words_and_help_texts_name_no_field():
    assert set(train_tab.LABELS) == set(train_tab.FIELDS)
    for name in train_tab.FIELDS:
        widget = train_tab.widget_for(name)
        assert "_" not in widget.label, name
        assert not any(f in (widget.info or "") for f in train_tab.FIELDS if "_" in f), (name, widget.info)
    # Plain words stay plain: "on the device" is not the "Train on" setting.
    assert train_tab.in_words("Examples per pass on the device; see max_steps.") == (
        "Examples per pass on the device; see “Training steps (-1: use passes)”."
    )


def test_numbers_read_as_people_write_them():
    from backend.jobs.estimate import Memory, size
    from backend.serving.evaluate import fmt_score

    assert fmt_score(12260.4) == "12,260" and fmt_score(0.4731) == "0.473" and fmt_score(float("nan")) == "-"
    assert size(0.004) == "4 MB" and size(0.0) == "1 MB" and size(2.26) == "2.3 GB"
    text = Memory(
        weights=0.001, adapter=0.0003, activations=0.01, logits=0.002, overhead=0.5, lora_params=1
    ).summary()
    assert "0.0," not in text and "0.00" not in text and "MB" in text


def test_the_win_rate_is_a_quantity_from_the_first_frame_and_reads_as_a_percentage(ctx):
    import gradio as gr

    from backend.core.store import VoteStore

    empty = compare_tab.win_rates(ctx)
    plot = gr.BarPlot(x="contestant", y="win rate")
    assert plot.postprocess(empty).datatypes["win rate"] == "quantitative"  # not "nominal" (bars floating)
    VoteStore(ctx.store).add("q", "base model", "run-1", "run-1")
    VoteStore(ctx.store).add("q", "base model", "run-1", "tie")
    rates = compare_tab.win_rates(ctx)
    assert plot.postprocess(rates).datatypes["win rate"] == "quantitative"
    assert (
        compare_tab.rates_chart(empty)["visible"] is False
        and compare_tab.rates_chart(rates)["visible"] is True
    )
    table = compare_tab.rates_table(rates)
    assert dict(zip(table["contestant"], table["win rate"], strict=True)) == {
        "run-1": "75%",
        "base model": "25%",
    }


def test_data_table_headers_are_words(ctx):
    table = data_tab.datasets_table(ctx)
    assert not [c for c in table.columns if "_" in c]
    assert table.loc[0, "kind"] == "Prompt and response" and table.loc[0, "name"] == "capitals"


def test_side_charts_wait_for_two_points(ctx, store):
    job = ctx.manager.submit("capitals", RunConfig.parse({"max_steps": 3}))
    store.add_metrics(job.id, 1, {"learning_rate": 0.01})
    assert all(
        c["visible"] is False for c in runs_tab.job_charts(job.id, ctx)
    )  # one point: no 6-decimal axis
    store.add_metrics(job.id, 2, {"learning_rate": 0.02})
    charts = dict(zip(runs_tab.CHART_NAMES, runs_tab.job_charts(job.id, ctx), strict=True))
    assert charts["learning_rate"]["visible"] is True and charts["grad_norm"]["visible"] is False


# -- buttons that cannot apply are off ------------------------------------------------------------------------------


def test_cancel_and_resume_are_on_only_where_they_apply(ctx, status, tmp_path):
    from tests.fake_oom_worker import write_checkpoint

    assert [b["interactive"] for b in runs_tab.job_buttons(None, ctx)] == [False, False]
    queued = ctx.manager.submit("capitals", RunConfig.parse({"max_steps": 3}))
    assert [b["interactive"] for b in runs_tab.job_buttons(queued.id, ctx)] == [True, False]
    ctx.manager.cancel(queued.id)
    assert [b["interactive"] for b in runs_tab.job_buttons(queued.id, ctx)] == [False, False]  # already asked
    (done,) = finished(ctx, status, tmp_path)
    assert [b["interactive"] for b in runs_tab.job_buttons(done, ctx)] == [False, False]
    failed = ctx.manager.submit("capitals", RunConfig.parse({"max_steps": 30}))
    status.set(failed.id, JobStatus.RUNNING, pid=1)
    status.set(failed.id, JobStatus.FAILED, reason="worker died")
    write_checkpoint(Path(failed.job_dir), 10)
    assert [b["interactive"] for b in runs_tab.job_buttons(failed.id, ctx)] == [False, True]


def test_the_scores_slider_offers_only_the_held_out_rows_there_are(ctx, status, tmp_path):
    (run,) = finished(ctx, status, tmp_path)
    update = compare_tab.score_limit(run, ctx)
    # The capitals sample: 32 rows, too few for a validation split, so scoring samples all 32 (not 256).
    assert ctx.store.get_dataset("capitals").n_rows == 32
    assert update["maximum"] == 32 and update["value"] <= update["maximum"]


def test_scores_say_what_each_measures_and_the_example_table_is_readable(ctx):
    from backend.serving import evaluate

    assert set(evaluate.ABOUT) == set(evaluate.METRICS + evaluate.PREF_METRICS)
    full = pd.DataFrame(
        [
            {
                "prompt": "Capital of France?",
                "reference": "Paris.",
                "base_answer": "Lyon.",
                "tuned_answer": "Paris.",
                "base_rougeL": 0.0,
                "tuned_rougeL": 1.0,
                "base_chrf": 10.0,
                "tuned_chrf": 100.0,
            }
        ]
    )
    shown = compare_tab.example_rows(full, evaluate.score_columns({"n_examples": 1}))
    assert list(shown.columns) == [
        "question",
        "reference answer",
        "base model",
        "fine-tuned",
        "base model ROUGE-L",
        "fine-tuned ROUGE-L",
    ]
    assert shown.iloc[0]["fine-tuned ROUGE-L"] == "100%"


# -- the data, as trained ---------------------------------------------------------------------------------------


def test_a_first_row_of_numbers_is_not_taken_as_the_header(csv_file):
    with pytest.raises(
        DataError, match=r"nums\.csv: the first row \(1, 2, 3\) looks like data.*Fix: add a first row"
    ):
        inspect_file(csv_file("1,2,3\n4,5,6\n", "nums.csv"))
    # A header of words with numbers below it is fine, and so is a pandas export's blank index header.
    assert inspect_file(csv_file("question,answer\n1,2\n", "ok.csv")).columns == ["question", "answer"]
    assert "0" in inspect_file(csv_file(",0,1\n0,a,b\n", "pandas.csv")).columns


def test_a_file_that_cannot_be_read_is_explained_once_not_again_in_the_example(ctx, csv_file):
    nums = str(csv_file("1,2,3\n4,5,6\n", "nums.csv"))
    assert "looks like data" in data_tab.preview_file(nums)[0]
    example = data_tab.render_example(
        nums, None, "prompt_response", None, None, None, None, None, None, "tiny-offline", None, "", ctx=ctx
    )
    assert example == ""


def test_the_preview_of_an_over_length_row_shows_the_cut(ctx):
    row = {"prompt": "Tell me everything.", "response": " ".join(["word"] * 400)}
    whole = data_tab.example_html(ctx.paths, "tiny-offline", "prompt_response", row, "", "row 2")
    assert "td-cut" not in whole  # no max length: all of it
    cut = data_tab.example_html(
        ctx.paths, "tiny-offline", "prompt_response", row, "", "row 2", 64, "truncate"
    )
    assert "as <b>tiny-offline</b> sees it: 64 tokens" in cut and "Cut to 64 tokens" in cut
    assert 'class="td-cut-off"' in cut  # the rest, struck through
    trained = cut.split('class="td-cut-off"')[0]
    assert trained.count("word") < 64  # what is highlighted stops at the cut
    dropped = data_tab.example_html(
        ctx.paths, "tiny-offline", "prompt_response", row, "", "row 2", 64, "drop"
    )
    assert "Left out of training" in dropped and "td-trained" not in dropped
