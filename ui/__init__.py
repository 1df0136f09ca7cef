"""TuneDeck's Gradio front end: one module per tab, wired together here. Imports no torch."""

from __future__ import annotations

import gradio as gr

from ui import chat_tab, compare_tab, data_tab, runs_tab, share_tab, train_tab
from ui.context import AppContext
from ui.style import CSS

__all__ = ["AppContext", "build_app", "CSS"]

INTRO = (
    "# TuneDeck\n"
    "Teach an open language model from your own examples. **1. Data**: upload your examples (a spreadsheet, JSON or Parquet). "
    "**2. Train**: pick a preset and press Train. **3. Runs**: watch it learn. **4. Chat**: talk to the result. "
    "**5. Compare**: the base and your runs side by side, blind tests, scores. "
    "**6. Share**: publish a password-protected demo, download or push the adapter."
)


def build_app(ctx: AppContext) -> gr.Blocks:
    with gr.Blocks(title="TuneDeck") as app:
        gr.Markdown(INTRO)
        with gr.Tabs() as tabs:
            with gr.Tab("1. Data", id="data"):
                data = data_tab.render(ctx)
            with gr.Tab("2. Train", id="train"):
                train = train_tab.render(ctx)
            with gr.Tab("3. Runs", id="runs"):
                runs = runs_tab.render(ctx)
            with gr.Tab("4. Chat", id="chat") as chat_t:
                chat = chat_tab.render(ctx)
            with gr.Tab("5. Compare", id="compare") as compare_t:
                compare = compare_tab.render(ctx)
            with gr.Tab("6. Share", id="share") as share_t:
                share = share_tab.render(ctx)

        # Saving, renaming or deleting a dataset refreshes the dataset table and the Train tab's dataset list.
        data_tab.wire(data, train["dataset"], ctx)
        # A queued job: show the Runs tab with that job selected.
        train["train_event"].then(
            lambda job_id: (
                (gr.Tabs(selected="runs"), gr.update(choices=runs_tab.job_choices(ctx), value=job_id))
                if job_id
                else (gr.Tabs(), gr.update())
            ),
            train["job_id"],
            [tabs, runs["job"]],
            api_visibility="private",
        )
        chat_t.select(
            lambda: gr.update(choices=chat_tab.chat_targets(ctx)),
            None,
            chat["target"],
            api_visibility="private",
        )
        compare_t.select(
            lambda: (
                *(gr.update(choices=compare_tab.finished_runs(ctx)) for _ in range(2)),
                *(gr.update(choices=[compare_tab.BASE] + compare_tab.finished_runs(ctx)) for _ in range(2)),
                gr.update(choices=compare_tab.all_runs(ctx)),
                compare_tab.win_rates(ctx),
                compare_tab.win_rates(ctx),
            ),
            None,
            [
                compare["runs"],
                compare["eval_run"],
                compare["left"],
                compare["right"],
                compare["pick"],
                compare["rates"],
                compare["rates_plot"],
            ],
            api_visibility="private",
        )
        share_t.select(
            lambda: (gr.update(choices=share_tab.shareable_runs(ctx)), share_tab.demos_table(ctx)),
            None,
            [share["run"], share["demos"]],
            api_visibility="private",
        )
        # Fill the Train tab from the default preset when the page loads.
        app.load(
            train_tab.preset_values,
            train["preset"],
            [train["about"], *train["widgets"]],
            api_visibility="private",
        )
        app.load(
            lambda: (gr.update(choices=data_tab.dataset_choices(ctx)), data_tab.datasets_table(ctx)),
            None,
            [train["dataset"], data["table"]],
            api_visibility="private",
        )
        app.load(lambda: runs_tab.refresh(None, ctx), None, runs["refresh_outputs"], api_visibility="private")
    return app
