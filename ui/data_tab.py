"""Data tab: upload a file, see what TuneDeck makes of it, see what the model will be trained on, save a dataset.

Steps on the page: 1. the file and its first rows; 2. what is what (the shape and the column mapping, suggested
and changeable); 3. one example rendered with the chosen model's chat template, the trained part highlighted;
4. options (max length, validation) and Save, which streams the file with a progress bar and shows the report.
Below: the saved datasets, with their report, rename, delete and download.

Handlers are plain functions over plain values (the context comes in through closures made in ``render``).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from backend.data.datasets import (
    DataError,
    ImportReport,
    Preview,
    delete_dataset,
    export_csv,
    first_rows,
    get_dataset,
    inspect_file,
    rename_dataset,
    safe_dataset_name,
)
from backend.data.importer import import_in_subprocess, unexpected
from backend.data.readers import Batch, max_cell_chars
from backend.data.shapes import (
    MAPPING_KEYS,
    PREFERENCE_SHAPES,
    REASONS,
    SHAPE_LABELS,
    SHAPES,
    Where,
    check_mapping,
    normalise,
)
from backend.jobs import views
from backend.settings import SAMPLE_CSV, SAMPLE_VALIDATION_CSV, Paths
from ui.context import AppContext
from ui.style import error_md, ok_md

FILE_TYPES = [".csv", ".tsv", ".txt", ".xlsx", ".json", ".jsonl", ".parquet"]
NONE = "(none)"
SHAPE_CHOICES = [(SHAPE_LABELS[s], s) for s in SHAPES]
OVER_CHOICES = [("Cut them to the max length", "truncate"), ("Leave them out", "drop")]
VALIDATION_CHOICES = [
    ("Automatic (1 %, at least 16 rows, seeded)", "auto"),
    ("A separate file", "file"),
    ("None", "none"),
]
DEFAULT_MAX_LENGTH = 1024  # when the default preset cannot be read


def _preset_max_length(ctx: AppContext) -> int:
    """The default preset's max length, so the Data and Train tabs start on the same number."""
    from backend.jobs.presets import PresetError, load_preset

    try:
        return load_preset(ctx.default_preset).config.max_length
    except (PresetError, ValueError):
        return DEFAULT_MAX_LENGTH


TRAINED_STYLE = "background:#c9f2d4;color:#0b3d1a;border-radius:3px"
AVOID_STYLE = "background:#f8d0d0;color:#5c0b0b;border-radius:3px"  # a worse or bad answer: learned to avoid
CONTEXT_STYLE = "color:#666"
BOX = "border:1px solid #ddd;border-radius:6px;padding:10px 12px;background:#fcfcfc"


# -- step 1: the file ----------------------------------------------------------------------------------------------


# The mapping dropdowns, in the order of the handlers' arguments: the first six as before preference data came, so
# calls of the API by position keep working; the preference roles after them.
ROLE_KEYS = ("prompt", "response", "system", "context", "messages", "text")
PREF_KEYS = ("chosen", "rejected", "completion", "label")


def _mapping_updates(p: Preview | None, shape: str | None) -> list[dict]:
    """Dropdown updates for every role (ROLE_KEYS, then PREF_KEYS), visible per shape."""
    cols = p.columns if p else []
    mapping = p.mapping_for(shape) if p and shape else {}
    out = []
    for key in ROLE_KEYS + PREF_KEYS:
        visible = shape is not None and key in MAPPING_KEYS[shape]
        # the prompt of preference data may come from the answers' conversations
        optional = key in ("system", "context") or (key == "prompt" and shape in PREFERENCE_SHAPES)
        choices = ([NONE] if optional else []) + cols
        value = mapping.get(key) or (NONE if optional else None)
        out.append(
            gr.update(
                choices=choices,
                value=value if p else None,
                visible=visible or shape is None and key in ("prompt", "response"),
            )
        )
    return out


def _preview(file: str, sheet: str | None = None) -> Preview:
    return inspect_file(file, Path(file).name, sheet=sheet or None)


def preview_file(file: str | None) -> tuple:
    """Read an upload's first rows: message, first rows, shape, mapping (6 dropdowns), sheet, name, example row."""
    return _preview_outputs(file, None)


def choose_sheet(file: str | None, sheet: str | None) -> tuple:
    """The same as preview_file, for another sheet of an Excel workbook."""
    return _preview_outputs(file, sheet)


def _preview_outputs(file: str | None, sheet: str | None) -> tuple:
    empty = pd.DataFrame()
    none = _mapping_updates(None, None)
    blank = (
        *none[: len(ROLE_KEYS)],
        gr.update(visible=False),
        "",
        gr.update(choices=[], value=None),
        *none[len(ROLE_KEYS) :],
    )
    if not file:
        return ("", empty, gr.update(value="prompt_response"), *blank)
    try:
        p = _preview(file, sheet)
    except DataError as exc:
        return (error_md(str(exc)), empty, gr.update(), *blank)
    except Exception as exc:  # noqa: BLE001 - a file we did not foresee still gets a message, not "Error"
        return (error_md(unexpected(Path(file).name, exc)), empty, gr.update(), *blank)
    notes = "".join(f"\nNote: {n}." for n in p.notes)
    mapped = ", ".join(f"{k} = **{v}**" for k, v in p.mapping.items() if v)
    msg = ok_md(
        f"**{p.file_name}**: {p.rows_text()}, {len(p.columns)} columns ({', '.join(p.columns)}). "
        f"It looks like **{SHAPE_LABELS[p.shape].lower()}** data: {p.shape_reason}. "
        f"Suggested: {mapped}. Change them below if needed.{notes}"
    )
    sheet_update = gr.update(choices=p.sheets, value=p.sheet or None, visible=len(p.sheets) > 1)
    rows = [int(r) for r in p.head[p.row_word]]
    updates = _mapping_updates(p, p.shape)
    return (
        msg,
        p.head,
        gr.update(value=p.shape),
        *updates[: len(ROLE_KEYS)],
        sheet_update,
        safe_dataset_name(p.file_name),
        gr.update(choices=rows, value=rows[0] if rows else None, label=f"Example ({p.row_word})"),
        *updates[len(ROLE_KEYS) :],
    )


def change_shape(file: str | None, sheet: str | None, shape: str) -> tuple:
    """New mapping dropdowns for another shape."""
    if not file:
        return tuple(_mapping_updates(None, shape))
    try:
        p = _preview(file, sheet)
    except DataError:
        return tuple(_mapping_updates(None, shape))
    return tuple(_mapping_updates(p, shape))


# -- step 3: one example as the model sees it ----------------------------------------------------------------------


def _mapping_from(shape: str, values: dict[str, str | None]) -> dict[str, str | None]:
    return {k: (None if values.get(k) in (None, "", NONE) else values[k]) for k in MAPPING_KEYS[shape]}


def render_example(
    file: str | None,
    sheet: str | None,
    shape: str,
    prompt: str | None,
    response: str | None,
    system: str | None,
    context: str | None,
    messages: str | None,
    text: str | None,
    model: str | None,
    row: Any,
    system_prompt: str | None,
    max_length: float | None = None,
    over_length: str | None = None,
    chosen: str | None = None,
    rejected: str | None = None,
    completion: str | None = None,
    label: str | None = None,
    *,
    ctx: AppContext,
) -> str:
    """One row of the upload, rendered with the model's chat template; the trained part highlighted, and cut at
    the max length as training will cut it."""
    if not file:
        return ""
    try:
        p = _preview(file, sheet)
    except Exception:  # noqa: BLE001 - a file that cannot be read: the message under the upload says why, once
        return ""
    try:
        values = {
            "prompt": prompt,
            "response": response,
            "system": system,
            "context": context,
            "messages": messages,
            "text": text,
            "chosen": chosen,
            "rejected": rejected,
            "completion": completion,
            "label": label,
        }
        mapping = check_mapping(shape, _mapping_from(shape, values), p.columns, p.file_name)
        rows = p.sample_rows
        i = rows.index(int(row)) if row is not None and int(row) in rows else 0
        batch = Batch(p.sample.iloc[[i]].reset_index(drop=True), np.array([rows[i]]), 1.0)
        norm = normalise(shape, mapping, batch, Where(p.file_name, p.row_word), max_cell_chars())
        if len(norm.frame) == 0:
            why = next((REASONS[k] for k, v in norm.dropped.items() if v), "it is empty")
            return _box(
                f"<b>{p.row_word.capitalize()} {rows[i]} would be left out</b>: {html.escape(why)}. "
                "Pick another example above."
            )
        return example_html(
            ctx.paths,
            model or ctx.default_model,
            shape,
            norm.frame.iloc[0].to_dict(),
            system_prompt or "",
            f"{p.row_word} {rows[i]}",
            int(max_length) if max_length else None,
            over_length or "truncate",
        )
    except DataError as exc:
        return error_md(str(exc))
    except Exception as exc:  # noqa: BLE001 - as in the preview
        return error_md(unexpected(Path(file).name, exc))


def example_html(
    paths: Paths,
    model: str,
    shape: str,
    row: dict,
    system_prompt: str,
    where: str,
    max_length: int | None = None,
    over_length: str = "truncate",
) -> str:
    """One example exactly as trained: past ``max_length`` tokens it is cut (the rest shown struck through) or,
    with "leave them out", not trained on at all. A preference pair shows both answers: the better one the model
    learns to make more likely, the worse one less likely (red); a good/bad answer is green or red by its mark."""
    from backend.data.chatformat import ChatFormat

    if shape == "preference" and "side" not in row:
        args = (paths, model, shape)
        return example_html(
            *args, {**row, "side": "chosen"}, system_prompt, where, max_length, over_length
        ) + (example_html(*args, {**row, "side": "rejected"}, system_prompt, where, max_length, over_length))
    avoid = row.get("side") == "rejected" or (shape == "feedback" and str(row.get("label")) == "false")
    style = AVOID_STYLE if avoid else TRAINED_STYLE

    fmt = ChatFormat.load(model, paths)
    full = fmt.encode(shape, row, system_prompt)
    limit = int(max_length or 0)
    enc, rest = full.cut(limit)
    body = "".join(
        f'<span style="{style if trained else CONTEXT_STYLE}" class="{"td-trained" if trained else "td-context"}">'
        f"{html.escape(piece)}</span>"
        for piece, trained in enc.segments()
    )
    what = {
        "prompt_response": "the response",
        "chat": "every assistant turn",
        "text": "all of the text",
        "preference": "the worse answer" if avoid else "the better answer",
        "feedback": "the answer",
    }[shape]
    cut_note = ""
    if rest and over_length == "drop":
        body = f'<s style="color:#888">{html.escape(full.text)}</s>'
        cut_note = (
            f'<div class="td-cut" style="color:#a40"><b>Left out of training</b>: {full.n_tokens:,} tokens is more '
            f"than the max length ({limit:,}), and longer examples are set to be left out.</div>"
        )
    elif rest:
        body += f'<s class="td-cut-off" style="color:#999">{html.escape(rest)}</s>'
        lost = full.n_trained - enc.n_trained
        cut_note = (
            f'<div class="td-cut" style="color:#a40"><b>Cut to {limit:,} tokens</b> (the max length): the last '
            f"{full.n_tokens - limit:,} tokens, struck through, are not trained on"
            + (f", {lost:,} of them from {what}" if lost else "")
            + ". Raise the max length to keep them.</div>"
        )
    legend = (
        f'<span style="{AVOID_STYLE};padding:0 4px">red</span> = what the model learns <b>not</b> to write'
        if avoid
        else f'<span style="{TRAINED_STYLE};padding:0 4px">highlighted</span> = what the model learns to write'
    )
    side = {"chosen": "Better answer: ", "rejected": "Worse answer: "}.get(row.get("side") or "", "")
    return (
        f'<div style="{BOX};margin-bottom:6px" id="{"td-rendered-avoid" if avoid else "td-rendered"}">'
        f"<div><b>{side}{html.escape(where)}</b>, as <b>{html.escape(model)}</b> sees it: {enc.n_tokens:,} tokens, "
        f"{enc.n_trained if not (rest and over_length == 'drop') else 0:,} of them trained on ({what}). "
        f"{legend}; "
        f'<span style="{CONTEXT_STYLE}">grey</span> = what it reads first.</div>{cut_note}'
        f'<pre style="white-space:pre-wrap;word-break:break-word;margin:8px 0 0;font-size:13px;max-height:480px;'
        f'overflow-y:auto">{body}</pre></div>'
    )


def _box(inner: str) -> str:
    return f'<div style="{BOX}">{inner}</div>'


# -- step 4: save ------------------------------------------------------------------------------------------------


def report_html(report: ImportReport, tokens: Any | None = None) -> str:
    """Kept and left-out rows per reason (with row numbers), the split, token statistics and a histogram."""
    word = report.row_word

    def where(rows: list[int], count: int) -> str:
        more = ", ..." if count > len(rows) else ""
        return f"{word}{'s' if count > 1 else ''} {', '.join(str(r) for r in rows)}{more}"

    rows = [("Kept", report.rows_kept, "")]
    for reason, info in report.dropped.items():
        if info.get("count"):
            rows.append(
                (
                    f"Left out: {REASONS.get(reason, reason)}",
                    info["count"],
                    where(info["rows"], info["count"]),
                )
            )
    over = report.over_length
    if over and over.get("count") and over.get("policy") == "truncate":
        rows.append(
            (
                f"Kept but cut to {over['max_length']} tokens",
                over["count"],
                where(over["rows"], over["count"]),
            )
        )
    cell = "border:none;padding:2px 12px 2px 0"
    table = "".join(
        f"<tr><td style='{cell}'>{html.escape(a)}</td><td style='{cell};text-align:right'>{b:,}</td>"
        f"<td style='{cell};color:#555'>{html.escape(c)}</td></tr>"
        for a, b, c in rows
    )
    split = (
        f"Training: <b>{report.train_rows:,}</b> rows; validation: <b>{report.validation_rows:,}</b> rows"
        + {
            "auto": f" (picked at random, seed {report.seed})",
            "file": f" (from {html.escape(str(report.validation_file))})",
        }.get(report.validation, "")
        + "."
    )
    parts = [
        f"<div><b>{report.rows_kept:,} of {report.rows_in_file:,} rows kept.</b> {split}</div>",
        f"<table style='margin:6px 0;border:none;border-collapse:collapse'>{table}</table>",
    ]
    for note in report.notes:
        parts.append(f"<div style='color:#555'>Note: {html.escape(note)}.</div>")
    if tokens is not None:
        parts.append(tokens_html(tokens))
    return f'<div style="{BOX}" id="td-report">{"".join(parts)}</div>'


def tokens_html(tokens: Any) -> str:
    about = "about " if tokens.sampled else ""
    lines = [
        f"<div style='margin-top:8px'><b>Tokens</b> ({html.escape(tokens.model)}): {about}<b>{tokens.tokens_per_epoch:,}"
        f"</b> per epoch, {about}{tokens.trained_tokens_per_epoch:,} of them trained on; median example "
        f"{tokens.median:.0f} tokens, longest {tokens.longest:,} (row {tokens.longest_row}).</div>"
    ]
    if tokens.max_length:
        lines.append(
            f"<div>{about}{tokens.over_max_length:,} examples are longer than the max length "
            f"({tokens.max_length:,}).</div>"
        )
    if tokens.sampled:
        lines.append(
            f"<div style='color:#555'>Measured on a random sample of {tokens.measured:,} rows.</div>"
        )
    top = max((b["rows"] for b in tokens.histogram), default=1) or 1
    cell = "border:none;padding:1px 8px"
    bars = "".join(
        f"<tr><td style='{cell};text-align:right;white-space:nowrap'>{b['tokens']}</td>"
        f"<td style='{cell};width:100%'><div style='background:#5b8def;height:12px;"
        f"width:{100 * b['rows'] / top:.1f}%;min-width:{1 if b['rows'] else 0}px'></div></td>"
        f"<td style='{cell}'>{b['rows']:,}</td></tr>"
        for b in tokens.histogram
    )
    lines.append(
        "<div style='margin-top:6px'>Example lengths in tokens (rows per range):</div>"
        "<table style='width:100%;font-size:12px;border:none;border-collapse:collapse' id='td-histogram'>"
        f"{bars}</table>"
    )
    return "".join(lines)


def save_dataset(
    file: str | None,
    name: str | None,
    prompt_col: str | None,
    response_col: str | None,
    ctx: AppContext,
    shape: str | None = None,
    system_col: str | None = None,
    context_col: str | None = None,
    messages_col: str | None = None,
    text_col: str | None = None,
    sheet: str | None = None,
    model: str | None = None,
    max_length: float | None = None,
    over_length: str | None = None,
    validation: str | None = None,
    validation_file: str | None = None,
    seed: float | None = None,
    system_prompt: str | None = None,
    progress: Any = None,
    chosen_col: str | None = None,
    rejected_col: str | None = None,
    completion_col: str | None = None,
    label_col: str | None = None,
) -> tuple:
    """Import the upload as a dataset version. Returns (message, datasets table, dataset choices update, report)."""
    if not file:
        return (
            error_md("Upload a file first (or press 'Use the sample CSV')."),
            datasets_table(ctx),
            gr.update(),
            "",
        )
    shape = shape or None
    values = {
        "prompt": prompt_col,
        "response": response_col,
        "system": system_col,
        "context": context_col,
        "messages": messages_col,
        "text": text_col,
        "chosen": chosen_col,
        "rejected": rejected_col,
        "completion": completion_col,
        "label": label_col,
    }
    mapping = None
    if shape:
        mapping = _mapping_from(shape, values)
    elif prompt_col or response_col:
        mapping = {k: v for k, v in _mapping_from("prompt_response", values).items() if v}
    model = model or ctx.default_model
    # Every example is measured during the import only when longer ones are left out; otherwise the report
    # below measures them (a sample of big files) and training cuts them.
    drop = over_length == "drop" and bool(max_length)
    try:
        dataset_id, report_dict, _ = import_in_subprocess(
            ctx.paths,
            file,
            name=name or None,
            shape=shape,
            mapping=mapping,
            display_name=Path(file).name,
            sheet=sheet or None,
            validation=validation or "auto",
            validation_file=validation_file if validation == "file" else None,
            validation_display_name=Path(validation_file).name
            if validation == "file" and validation_file
            else None,
            seed=int(seed if seed is not None else 42),
            model=model if drop else None,
            max_length=int(max_length) if drop else None,
            over_length="drop" if drop else "truncate",
            system_prompt=system_prompt or "",
            progress=(lambda f, m: progress(f, desc=m)) if progress else None,
        )
    except DataError as exc:
        return error_md(str(exc)), datasets_table(ctx), gr.update(), ""
    record = get_dataset(ctx.store, dataset_id)
    report = ImportReport.from_dict(report_dict)
    tokens = _tokens(ctx, record, model, int(max_length) if max_length else None, system_prompt or "")
    msg = ok_md(f"Saved dataset **{record.name}** ({record.id}). {report.summary()} Next: the **Train** tab.")
    return (
        msg,
        datasets_table(ctx),
        gr.update(choices=dataset_choices(ctx), value=record.name),
        report_html(report, tokens),
    )


def _tokens(ctx: AppContext, record: Any, model: str, max_length: int | None, system_prompt: str) -> Any:
    from backend.data.chatformat import ChatFormat
    from backend.data.report import token_report

    try:
        fmt = ChatFormat.load(model, ctx.paths)
        return token_report(record, fmt, system_prompt=system_prompt, max_length=max_length)
    except DataError:
        return None


# -- saved datasets ------------------------------------------------------------------------------------------------


def datasets_table(ctx: AppContext) -> pd.DataFrame:
    """The saved datasets, headed in words (the CLI's `data list --json` keeps the field names)."""
    columns = {
        "name": "name",
        "shape": "kind",
        "rows": "rows",
        "train_rows": "for training",
        "validation_rows": "for validation",
        "skipped_rows": "left out",
        "source_file": "from file",
        "created": "saved",
        "id": "id",
    }
    rows = []
    for d in ctx.store.list_datasets():
        v = views.dataset_view(d)
        v["shape"] = SHAPE_LABELS.get(v["shape"], v["shape"])
        v["created"] = str(v["created"]).replace("T", " ")[:16]
        rows.append({label: v[key] for key, label in columns.items()})
    return pd.DataFrame(rows, columns=list(columns.values()))


def dataset_choices(ctx: AppContext) -> list[str]:
    return [d.name for d in ctx.store.list_datasets()]


def dataset_details(
    dataset: str | None, model: str | None, max_length: float | None, ctx: AppContext
) -> tuple[str, str]:
    """A saved dataset's report (with token statistics for the model) and its first example rendered."""
    if not dataset:
        return "", ""
    try:
        record = get_dataset(ctx.store, dataset)
        report = ImportReport.from_dict(record.info.get("report", {}))
        model = model or ctx.default_model
        system_prompt = record.info.get("system_prompt", "") or ""
        tokens = _tokens(ctx, record, model, int(max_length) if max_length else None, system_prompt)
        head = (
            f"<div style='margin-bottom:6px'><b>{html.escape(record.name)}</b> ({record.id}, "
            f"{html.escape(SHAPE_LABELS[record.info.get('shape', 'prompt_response')].lower())}, from "
            f"{html.escape(record.source_file)}; content hash {record.info.get('sha256', '')[:12]})</div>"
        )
        first = first_rows(record, 1)
        example = (
            example_html(
                ctx.paths,
                model,
                record.info.get("shape", "prompt_response"),
                first.iloc[0].to_dict(),
                system_prompt,
                f"row {int(first.iloc[0]['source_row'])}",
            )
            if len(first)
            else ""
        )
        return head + report_html(report, tokens), example
    except DataError as exc:
        return error_md(str(exc)), ""


def rename(dataset: str | None, new_name: str | None, ctx: AppContext) -> tuple:
    if not dataset or not (new_name or "").strip():
        return error_md("Pick a dataset and type its new name."), datasets_table(ctx), gr.update()
    try:
        record = rename_dataset(ctx.store, dataset, new_name or "")
    except DataError as exc:
        return error_md(str(exc)), datasets_table(ctx), gr.update()
    return (
        ok_md(f"Renamed **{dataset}** to **{record.name}**."),
        datasets_table(ctx),
        gr.update(choices=dataset_choices(ctx), value=record.name),
    )


def delete(dataset: str | None, ctx: AppContext) -> tuple:
    if not dataset:
        return error_md("Pick a dataset to delete."), datasets_table(ctx), gr.update()
    try:
        record = delete_dataset(ctx.store, ctx.paths, dataset)
    except DataError as exc:
        return error_md(str(exc)), datasets_table(ctx), gr.update()
    return (
        ok_md(f"Deleted dataset **{record.name}** ({record.id}). Runs trained on it keep their adapters."),
        datasets_table(ctx),
        gr.update(choices=dataset_choices(ctx), value=None),
    )


def download_csv(dataset: str | None, ctx: AppContext) -> tuple[str, dict]:
    """Write the dataset as CSV under the data directory's exports/; (message, file update)."""
    if not dataset:
        return error_md("Pick a dataset to download."), gr.update(visible=False)
    try:
        record = get_dataset(ctx.store, dataset)
    except DataError as exc:
        return error_md(str(exc)), gr.update(visible=False)
    folder = ctx.paths.home / "exports"
    folder.mkdir(exist_ok=True)
    out = export_csv(record, folder / f"{record.name}.csv")
    return ok_md(
        f"**{record.name}** as CSV (cells that start with = + - @ are written as text): download it below."
    ), gr.update(value=str(out), visible=True)


# -- the page ------------------------------------------------------------------------------------------------------


def render(ctx: AppContext) -> dict:
    from backend.data.chatformat import cached_models

    gr.Markdown(
        "Upload your examples: a spreadsheet (**CSV** or **Excel .xlsx**), **JSON**, **JSONL** or **Parquet**. "
        "One example per row: a *prompt* and the *response* you want, a whole *chat*, or plain *text*. TuneDeck "
        "works out which, shows you exactly what the model will be trained on, and checks every row before saving."
    )
    with gr.Row():
        upload = gr.File(
            label="Your file", file_types=FILE_TYPES, type="filepath", scale=3, elem_id="td-upload"
        )
        with gr.Column(scale=1):
            sample = gr.Button("Use the sample CSV", variant="secondary")
            gr.Markdown(
                "<small>301 customer-support questions about a (fictional) robot vacuum, and 43 more asked in "
                "other words to check what it learned: try TuneDeck straight away.</small>"
            )
    message = gr.HTML()
    sheet = gr.Dropdown(label="Sheet", choices=[], visible=False, interactive=True, allow_custom_value=True)
    preview = gr.Dataframe(
        label="1. The first rows of your file", interactive=False, wrap=True, max_height=300
    )

    # Dropdowns filled from the file take any value (the handlers check it): the API may name a column directly.
    gr.Markdown("### 2. What is what\nThe kind of data and which column is which (suggested from the file).")
    shape = gr.Radio(SHAPE_CHOICES, value="prompt_response", label="Kind of data", interactive=True)
    with gr.Row():
        prompt_col = gr.Dropdown(
            label="Prompt column (what the model is asked)",
            choices=[],
            interactive=True,
            allow_custom_value=True,
        )
        response_col = gr.Dropdown(
            label="Response column (what it should answer)",
            choices=[],
            interactive=True,
            allow_custom_value=True,
        )
        system_col = gr.Dropdown(
            label="System prompt column (optional)",
            choices=[NONE],
            value=NONE,
            interactive=True,
            allow_custom_value=True,
        )
        context_col = gr.Dropdown(
            label="Context / input column (optional, added to the prompt)",
            choices=[NONE],
            value=NONE,
            interactive=True,
            allow_custom_value=True,
        )
        messages_col = gr.Dropdown(
            label="Conversations column", choices=[], interactive=True, visible=False, allow_custom_value=True
        )
        text_col = gr.Dropdown(
            label="Text column", choices=[], interactive=True, visible=False, allow_custom_value=True
        )
        pref_cols = [
            gr.Dropdown(label=label, choices=[], interactive=True, visible=False, allow_custom_value=True)
            for label in (
                "Better answer column (chosen)",
                "Worse answer column (rejected)",
                "Answer column",
                "Good/bad column (true/false, 1/0, good/bad)",
            )
        ]

    gr.Markdown("### 3. What the model will see")
    with gr.Row():
        model = gr.Dropdown(
            label="Model (its chat template and tokenizer)",
            choices=cached_models(ctx.paths),
            value=ctx.default_model,
            allow_custom_value=True,
            interactive=True,
            scale=2,
        )
        example_row = gr.Dropdown(
            label="Example (row)", choices=[], interactive=True, scale=1, allow_custom_value=True
        )
        system_prompt = gr.Textbox(
            label="Default system prompt (optional)", scale=2, placeholder="used for rows without one"
        )
    rendered = gr.HTML()

    gr.Markdown("### 4. Check and save")
    with gr.Row():
        max_length = gr.Number(
            label="Max length (tokens)",
            value=_preset_max_length(ctx),
            precision=0,
            minimum=0,
            info="For this check and the preview; the Train tab's value is what training uses.",
        )
        over_length = gr.Radio(OVER_CHOICES, value="truncate", label="Longer examples")
        validation = gr.Radio(VALIDATION_CHOICES, value="auto", label="Validation rows")
        seed = gr.Number(label="Seed", value=42, precision=0)
    validation_file = gr.File(
        label="Validation file (same columns)", file_types=FILE_TYPES, type="filepath", visible=False
    )
    with gr.Row():
        name = gr.Textbox(label="Dataset name", placeholder="e.g. support-replies", scale=3)
        save = gr.Button("Save dataset", variant="primary", scale=1)
    save_message = gr.HTML(elem_id="td-save-message")  # right under the button, where the person looks
    report = gr.HTML()

    gr.Markdown("### Your datasets")
    table = gr.Dataframe(interactive=False, max_height=250)
    with gr.Row():
        chosen = gr.Dropdown(
            label="Dataset", choices=dataset_choices(ctx), interactive=True, scale=2, allow_custom_value=True
        )
        new_name = gr.Textbox(label="New name", scale=2)
        rename_btn = gr.Button("Rename", scale=1)
        delete_btn = gr.Button("Delete", variant="stop", scale=1)
        download_btn = gr.Button("Download CSV", scale=1)
    manage_message = gr.HTML()
    download = gr.File(label="Download", visible=False, interactive=False)
    details = gr.HTML()
    details_example = gr.HTML()

    roles = [prompt_col, response_col, system_col, context_col, messages_col, text_col]
    mapping = roles + pref_cols
    example_inputs = [
        upload,
        sheet,
        shape,
        *roles,
        model,
        example_row,
        system_prompt,
        max_length,
        over_length,
        *pref_cols,
    ]

    def show_example(*values):  # example_inputs, in render_example's order
        return render_example(*values, ctx=ctx)

    preview_outs = [message, preview, shape, *roles, sheet, name, example_row, *pref_cols]
    # A new file: the last save's message and report belong to another file, so they go.
    upload.change(lambda: ("", ""), None, [save_message, report], api_visibility="private")
    upload.change(preview_file, upload, preview_outs, api_name="preview_file").then(
        show_example, example_inputs, rendered, api_name="render_example"
    )
    sheet.input(choose_sheet, [upload, sheet], preview_outs, api_name="choose_sheet").then(
        show_example, example_inputs, rendered, api_visibility="private"
    )
    shape.input(change_shape, [upload, sheet, shape], mapping, api_name="change_shape").then(
        show_example, example_inputs, rendered, api_visibility="private"
    )
    for widget in (*mapping, model, example_row, max_length, over_length):
        widget.input(show_example, example_inputs, rendered, api_visibility="private")
    system_prompt.submit(show_example, example_inputs, rendered, api_visibility="private")
    validation.change(
        lambda v: gr.update(visible=v == "file"), validation, validation_file, api_visibility="private"
    )
    sample.click(
        lambda: (str(SAMPLE_CSV), "file", gr.update(value=str(SAMPLE_VALIDATION_CSV), visible=True)),
        None,
        [upload, validation, validation_file],
        api_visibility="private",
    )
    gr.Button("List", visible=False).click(lambda: datasets_table(ctx), None, table, api_name="list_datasets")

    def show_details(dataset, model_, max_len):
        return dataset_details(dataset, model_, max_len, ctx)

    # The list under "Dataset" follows the table (filled when the page loads, after a save, rename or delete).
    table.change(lambda: gr.update(choices=dataset_choices(ctx)), None, chosen, api_visibility="private")
    chosen.change(
        show_details, [chosen, model, max_length], [details, details_example], api_name="dataset_details"
    )
    download_btn.click(
        lambda d: download_csv(d, ctx), chosen, [manage_message, download], api_name="download_dataset"
    )

    def save_handler(
        file: str | None,
        name: str | None = None,
        prompt_col: str | None = None,
        response_col: str | None = None,
        shape: str | None = None,
        system_col: str | None = None,
        context_col: str | None = None,
        messages_col: str | None = None,
        text_col: str | None = None,
        sheet: str | None = None,
        model: str | None = None,
        max_length: float | None = None,
        over_length: str | None = None,
        validation: str | None = None,
        validation_file: str | None = None,
        seed: float | None = None,
        system_prompt: str | None = None,
        chosen_col: str | None = None,
        rejected_col: str | None = None,
        completion_col: str | None = None,
        label_col: str | None = None,
        progress=gr.Progress(),  # noqa: B008 - how Gradio hands a handler its progress bar
    ):
        return save_dataset(
            file,
            name,
            prompt_col,
            response_col,
            ctx,
            shape,
            system_col,
            context_col,
            messages_col,
            text_col,
            sheet,
            model,
            max_length,
            over_length,
            validation,
            validation_file,
            seed,
            system_prompt,
            progress,
            chosen_col,
            rejected_col,
            completion_col,
            label_col,
        )

    return {
        "table": table,
        "message": message,
        "save_message": save_message,
        "save": save,
        "save_inputs": [
            upload,
            name,
            prompt_col,
            response_col,
            shape,
            system_col,
            context_col,
            messages_col,
            text_col,
            sheet,
            model,
            max_length,
            over_length,
            validation,
            validation_file,
            seed,
            system_prompt,
            *pref_cols,
        ],
        "save_handler": save_handler,
        "report": report,
        "chosen": chosen,
        "rename": (rename_btn, [chosen, new_name]),
        "delete": delete_btn,
        "manage_message": manage_message,
    }


def wire(data: dict, train_dataset: gr.Dropdown, ctx: AppContext) -> None:
    """Connect the save, rename and delete buttons; they also refresh the Train tab's dataset list."""

    data["save"].click(
        data["save_handler"],
        data["save_inputs"],
        [data["save_message"], data["table"], train_dataset, data["report"]],
        api_name="save_dataset",
    ).then(lambda: gr.update(choices=dataset_choices(ctx)), None, data["chosen"], api_visibility="private")
    button, inputs = data["rename"]
    button.click(
        lambda d, n: rename(d, n, ctx),
        inputs,
        [data["manage_message"], data["table"], data["chosen"]],
        api_name="rename_dataset",
    ).then(lambda: gr.update(choices=dataset_choices(ctx)), None, train_dataset, api_visibility="private")
    data["delete"].click(
        lambda d: delete(d, ctx),
        data["chosen"],
        [data["manage_message"], data["table"], data["chosen"]],
        api_name="delete_dataset",
    ).then(lambda: gr.update(choices=dataset_choices(ctx)), None, train_dataset, api_visibility="private")
