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
    "**6. Share**: publish a password-protected demo, download or push the adapter, or get a GGUF for llama.cpp and "
    "Ollama."
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

        # A dataset made from the blind-test votes: listed in the Data tab and picked in the Train tab, to train on
        # with DPO from the run the votes were about (compare_tab.make_vote_dataset says so).
        def votes_to_train(msg: str | None) -> tuple:
            if "td-ok" not in (msg or ""):
                return gr.update(), data_tab.datasets_table(ctx), gr.update(), gr.update(), gr.update()
            listed, objective, start, base = train_tab.train_on_votes(
                data_tab.dataset_choices(ctx), compare_tab.votes_run(ctx), ctx
            )
            return listed, data_tab.datasets_table(ctx), objective, start, base

        compare["votes_event"].then(
            votes_to_train,
            compare["votes_msg"],
            [
                train["dataset"],
                data["table"],
                *(train[k] for k in ("objective", "continue_from", "base_model")),
            ],
            api_visibility="private",
        )
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
        # Opening Chat, Compare or Share picks the run the person just trained (ui.follow); each tab remembers the
        # newest run it has shown, so a pick made since is kept until another run finishes.
        chat_seen, compare_seen, share_seen = gr.State(None), gr.State(None), gr.State(None)
        chat_t.select(
            lambda current, seen: chat_tab.on_open(current, seen, ctx),
            [chat["target"], chat_seen],
            [chat["target"], chat_seen],
            api_visibility="private",
        )
        compare_pickers = [
            compare["runs"],
            compare["eval_run"],
            compare["left"],
            compare["right"],
            compare["pick"],
        ]
        compare_t.select(
            lambda *args: compare_tab.on_open(*args, ctx=ctx),
            [*compare_pickers, compare_seen],
            [*compare_pickers, compare["rates"], compare["rates_plot"], compare_seen],
            api_visibility="private",
        )
        share_t.select(
            lambda current, seen: share_tab.on_open(current, seen, ctx),
            [share["run"], share_seen],
            [share["run"], share["demos"], share["ggufs"], share_seen],
            api_visibility="private",
        )
        # Fill the Train tab from the default preset when the page loads.
        app.load(
            train_tab.preset_values,
            train["preset"],
            [train["about"], *train["widgets"]],
            api_visibility="private",
        )
        app.load(  # the newest dataset is the one to train: a reloaded page does not start on an empty choice
            lambda: (
                gr.update(
                    choices=(names := data_tab.dataset_choices(ctx)), value=names[0] if names else None
                ),
                data_tab.datasets_table(ctx),
            ),
            None,
            [train["dataset"], data["table"]],
            api_visibility="private",
        )
        app.load(lambda: runs_tab.refresh(None, ctx), None, runs["refresh_outputs"], api_visibility="private")
    return app
