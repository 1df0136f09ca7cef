"""Data tab: upload a CSV, see it, map its columns, save it as a named dataset."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from backend import views
from backend.data import DataError, import_dataset, inspect_file, safe_dataset_name
from backend.settings import SAMPLE_CSV
from ui.context import AppContext
from ui.style import error_md, ok_md


def preview_file(file: str | None) -> tuple[str, pd.DataFrame, dict, dict, str]:
    """Read an uploaded file: message, first rows, suggested prompt/response columns, a default dataset name."""
    empty = pd.DataFrame()
    if not file:
        return "", empty, gr.update(choices=[], value=None), gr.update(choices=[], value=None), ""
    shown = Path(file).name
    try:
        p = inspect_file(file, shown)
    except DataError as exc:
        return error_md(str(exc)), empty, gr.update(choices=[], value=None), gr.update(choices=[], value=None), ""
    msg = ok_md(
        f"**{p.file_name}**: {p.n_rows} rows, {len(p.columns)} columns ({', '.join(p.columns)}). "
        f"Suggested: prompt = **{p.prompt_col}**, response = **{p.response_col}**. Change them below if needed."
    )
    return (
        msg,
        p.head,
        gr.update(choices=p.columns, value=p.prompt_col),
        gr.update(choices=p.columns, value=p.response_col),
        safe_dataset_name(p.file_name),
    )


def save_dataset(file: str | None, name: str, prompt_col: str | None, response_col: str | None, ctx: AppContext):
    """Import the file as a dataset. Returns (message, datasets table, train-tab dataset dropdown)."""
    if not file:
        return error_md("Upload a CSV file first (or press 'Use the sample CSV')."), datasets_table(ctx), gr.update()
    try:
        record, report = import_dataset(
            ctx.store, ctx.paths, file, name=name or None, prompt_col=prompt_col, response_col=response_col,
            display_name=Path(file).name,
        )
    except DataError as exc:
        return error_md(str(exc)), datasets_table(ctx), gr.update()
    msg = ok_md(f"Saved dataset **{record.name}**. {report.summary()} Next: the **Train** tab.")
    return msg, datasets_table(ctx), gr.update(choices=dataset_choices(ctx), value=record.name)


def datasets_table(ctx: AppContext) -> pd.DataFrame:
    rows = [views.dataset_view(d) for d in ctx.store.list_datasets()]
    cols = ["name", "rows", "skipped_rows", "source_file", "created", "id"]
    return pd.DataFrame([{c: r[c] for c in cols} for r in rows], columns=cols)


def dataset_choices(ctx: AppContext) -> list[str]:
    return [d.name for d in ctx.store.list_datasets()]


def render(ctx: AppContext) -> dict:
    gr.Markdown(
        "Upload a spreadsheet saved as **CSV**, one example per row: a column with what you would ask "
        "(the *prompt*) and a column with the answer you want (the *response*)."
    )
    with gr.Row():
        upload = gr.File(label="CSV file", file_types=[".csv", ".tsv", ".txt"], type="filepath", scale=3)
        with gr.Column(scale=1):
            sample = gr.Button("Use the sample CSV", variant="secondary")
            gr.Markdown("<small>32 questions about capital cities, to try TuneDeck straight away.</small>")
    message = gr.Markdown()
    preview = gr.Dataframe(label="First rows", interactive=False, wrap=True, max_height=300)
    with gr.Row():
        prompt_col = gr.Dropdown(label="Prompt column (what the model is asked)", choices=[], interactive=True)
        response_col = gr.Dropdown(label="Response column (what it should answer)", choices=[], interactive=True)
        name = gr.Textbox(label="Dataset name", placeholder="e.g. support-replies")
    save = gr.Button("Save dataset", variant="primary")
    gr.Markdown("### Your datasets")
    table = gr.Dataframe(interactive=False, max_height=250)

    outs = [message, preview, prompt_col, response_col, name]
    upload.change(preview_file, upload, outs, api_name="preview_file")
    sample.click(lambda: str(SAMPLE_CSV), None, upload, api_visibility="private")
    gr.Button("List", visible=False).click(lambda: datasets_table(ctx), None, table, api_name="list_datasets")
    # The save button is wired in ui/__init__.py: it also updates the Train tab's dataset list.
    return {"table": table, "message": message, "save": save, "save_inputs": [upload, name, prompt_col, response_col]}
