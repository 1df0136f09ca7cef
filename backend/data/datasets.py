"""Files in, validated dataset versions out.

``inspect_file`` reads only the first rows of an upload (fast, also for a 500 MB CSV): the columns, the detected
shape (prompt/response, chat or plain text, see ``backend.data.shapes``) and a suggested column mapping.
``import_dataset`` streams the whole file into an immutable dataset version: ``datasets/<id>/data.parquet`` with
the shape's columns plus ``source_row`` and ``split``, and a store record whose info holds the shape, the mapping,
the content hash and a report of what was kept and dropped (and why, with row numbers). Every problem is a
``DataError`` that names the file, the row or line, the column, and what to do; nothing is registered unless
everything succeeded.

Datasets can also be renamed, deleted (refused while a queued or running job uses them) and written back out as a
CSV that spreadsheet programs will not execute (``export_csv``).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backend.core.status import JobStatus
from backend.core.store import DatasetRecord, Store
from backend.data.readers import (
    SUPPORTED,
    DataError,
    Table,
    cell_text,
    check_encoding,
    max_cell_chars,
    open_table,
)
from backend.data.shapes import (
    CONTENT_COLUMNS,
    MAPPING_KEYS,
    MAPPING_LABELS,
    OUTPUT_COLUMNS,
    PREFERENCE_SHAPES,
    REASONS,
    SHAPES,
    Where,
    check_mapping,
    detect_shape,
    normalise,
    suggest_columns,
    suggest_mapping,
)
from backend.settings import Paths

__all__ = [
    "DataError",
    "ImportReport",
    "Preview",
    "SUPPORTED",
    "delete_dataset",
    "export_csv",
    "import_dataset",
    "inspect_file",
    "load_examples",
    "rename_dataset",
    "safe_dataset_name",
    "safe_file_name",
    "suggest_columns",
]

PREVIEW_ROWS = 10
SNIFF_ROWS = 200  # rows the shape and mapping are guessed from
BATCH_ROWS = 50_000
MIN_ROWS = 2
VALIDATION_MIN_ROWS = 16
VALIDATION_FRACTION = 0.01
VALIDATION_AUTO_FROM = 100  # fewer rows than this: all of them train (16 would be too big a share)
DEFAULT_SEED = 42
SAMPLE_ROWS = 10  # row numbers kept per drop reason
OVER_LENGTH = ("truncate", "drop")
VALIDATION = ("auto", "file", "none")
Progress = Callable[[float, str], None]


# -- previewing ----------------------------------------------------------------------------------------------------


@dataclass
class Preview:
    file_name: str
    kind: str  # csv | xlsx | json | jsonl | parquet
    columns: list[str]
    n_rows: int
    n_rows_exact: bool
    head: pd.DataFrame  # the first rows as text, for display
    sample: pd.DataFrame  # the first SNIFF_ROWS rows, raw values (lists for JSON chats)
    sample_rows: list[int]  # their row/line numbers
    shape: str
    shape_reason: str
    mapping: dict[str, str | None]
    delimiter: str = ""
    encoding: str = ""
    sheet: str = ""
    sheets: list[str] = field(default_factory=list)
    row_word: str = "row"
    notes: list[str] = field(default_factory=list)

    @property
    def prompt_col(self) -> str | None:
        return (
            self.mapping.get("prompt") if self.shape == "prompt_response" else suggest_columns(self.sample)[0]
        )

    @property
    def response_col(self) -> str | None:
        return (
            self.mapping.get("response")
            if self.shape == "prompt_response"
            else suggest_columns(self.sample)[1]
        )

    def mapping_for(self, shape: str) -> dict[str, str | None]:
        return self.mapping if shape == self.shape else suggest_mapping(shape, self.sample)

    def rows_text(self) -> str:
        return f"{self.n_rows:,} rows" if self.n_rows_exact else f"about {self.n_rows:,} rows"


def inspect_file(path: str | Path, display_name: str | None = None, *, sheet: str | None = None) -> Preview:
    """The first rows, the shape and a suggested mapping. Reads only the start of big files."""
    shown = safe_file_name(display_name or Path(path).name)
    table = open_table(path, shown, sheet=sheet)
    sample = table.head(SNIFF_ROWS)
    if len(sample.frame) == 0:
        raise _no_rows(table)
    shape, why = detect_shape(sample.frame)
    n_rows, exact = table.count_rows()
    return Preview(
        file_name=shown,
        kind=table.kind,
        columns=list(table.columns),
        n_rows=n_rows,
        n_rows_exact=exact,
        head=display_frame(sample.frame.head(PREVIEW_ROWS), sample.rows[:PREVIEW_ROWS], table.row_word),
        sample=sample.frame,
        sample_rows=[int(r) for r in sample.rows],
        shape=shape,
        shape_reason=why,
        mapping=suggest_mapping(shape, sample.frame),
        delimiter=table.delimiter,
        encoding=table.encoding,
        sheet=table.sheet,
        sheets=table.sheets,
        row_word=table.row_word,
        notes=list(table.notes),
    )


def display_frame(frame: pd.DataFrame, rows: Any, row_word: str = "row") -> pd.DataFrame:
    """Raw values as plain text for a table (lists and objects as JSON); a first column with the row numbers."""
    import json

    def text(v: Any) -> str:
        if isinstance(v, np.ndarray):
            v = v.tolist()
        if isinstance(v, (list, dict)):
            return json.dumps(v, ensure_ascii=False)
        return cell_text(v)

    out = pd.DataFrame({c: frame[c].map(text) for c in frame.columns})
    label = row_word
    while label in out.columns:  # the file has a column of that name itself
        label = f"({label})"
    out.insert(0, label, [int(r) for r in rows])
    return out


def _no_rows(table: Table) -> DataError:
    if table.kind == "xlsx":
        return DataError(
            f"{table.name}: the sheet {table.sheet!r} has a header but no example rows. "
            "Fix: add rows below the header."
        )
    return DataError(
        f"{table.name}: the file has a header but no example rows. Fix: add rows below the header."
    )


# -- names ---------------------------------------------------------------------------------------------------------


def safe_dataset_name(text: str) -> str:
    """A dataset name made of letters, digits, '-', '_' and '.', at most 64 characters."""
    text = Path(str(text).replace("\\", "/")).name or str(text)
    stem = Path(text).stem if Path(text).suffix.lower() in SUPPORTED else text
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")
    return name[:64] or "dataset"


def safe_file_name(text: str) -> str:
    """An uploaded file's name without folders or odd characters, for messages and records."""
    base = str(text).replace("\\", "/").split("/")[-1]
    base = re.sub(r"[\x00-\x1f\x7f<>:\"|?*]+", "-", base).strip(" .-")
    base = re.sub(r"-{2,}", "-", base)
    if len(base) > 120:
        stem, suffix = os.path.splitext(base)
        base = stem[: 120 - len(suffix)] + suffix
    return base or "upload"


# -- the report ----------------------------------------------------------------------------------------------------


@dataclass
class ImportReport:
    rows_in_file: int
    rows_kept: int
    dropped_empty_prompt: int = 0
    dropped_empty_response: int = 0
    empty_rows_sample: list[int] = field(default_factory=list)
    dropped: dict[str, dict[str, Any]] = field(default_factory=dict)  # reason -> {"count", "rows"}
    shape: str = "prompt_response"
    row_word: str = "row"
    train_rows: int = 0
    validation_rows: int = 0
    validation: str = "none"  # auto | file | none
    validation_file: str | None = None
    validation_rows_in_file: int = 0
    seed: int = DEFAULT_SEED
    over_length: dict[str, Any] | None = None  # {"max_length", "policy", "model", "count", "rows"}
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImportReport:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def dropped_count(self, reason: str) -> int:
        return int(self.dropped.get(reason, {}).get("count", 0))

    def summary(self) -> str:
        """One paragraph: kept of total, each group left out with its rows, the split."""
        parts = [f"{self.rows_kept} of {self.rows_in_file} rows kept"]
        empty = self.dropped_empty_prompt + self.dropped_empty_response
        if empty:
            parts.append(
                f"{empty} skipped because the prompt or response was empty ({self._rows(self.empty_rows_sample, empty)})"
            )
        for reason, info in self.dropped.items():
            if reason in ("empty_prompt", "empty_response") or not info.get("count"):
                continue
            n = info["count"]
            parts.append(f"{n} skipped: {REASONS.get(reason, reason)} ({self._rows(info['rows'], n)})")
        over = self.over_length
        if over and over.get("count") and over.get("policy") == "truncate":
            parts.append(
                f"{over['count']} longer than {over['max_length']} tokens will be cut to that length "
                f"({self._rows(over['rows'], over['count'])})"
            )
        text = "; ".join(parts) + "."
        if self.validation_rows:
            how = {"auto": f"picked at random, seed {self.seed}", "file": f"from {self.validation_file}"}.get(
                self.validation, self.validation
            )
            text += f" Training: {self.train_rows} rows; validation: {self.validation_rows} rows ({how})."
        return text

    def _rows(self, rows: list[int], n: int) -> str:
        word = self.row_word + ("s" if n > 1 else "")
        more = ", ..." if n > len(rows) else ""
        return f"{word} {', '.join(str(r) for r in rows)}{more}"


class _Drops:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.rows: dict[str, list[int]] = {}

    def add(self, reason: str, rows: list[int]) -> None:
        if not rows:
            return
        self.counts[reason] = self.counts.get(reason, 0) + len(rows)
        kept = self.rows.setdefault(reason, [])
        kept.extend(rows[: SAMPLE_ROWS - len(kept)])

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {r: {"count": n, "rows": self.rows[r]} for r, n in self.counts.items()}


# -- importing -----------------------------------------------------------------------------------------------------


def new_dataset_id() -> str:
    return f"ds-{secrets.token_hex(4)}"


def import_dataset(
    store: Store,
    paths: Paths,
    file: str | Path,
    *,
    name: str | None = None,
    shape: str | None = None,
    mapping: dict[str, str | None] | None = None,
    prompt_col: str | None = None,
    response_col: str | None = None,
    system_col: str | None = None,
    context_col: str | None = None,
    messages_col: str | None = None,
    text_col: str | None = None,
    display_name: str | None = None,
    sheet: str | None = None,
    validation: str = "auto",
    validation_file: str | Path | None = None,
    validation_display_name: str | None = None,
    seed: int = DEFAULT_SEED,
    model: str | None = None,
    max_length: int | None = None,
    over_length: str = "truncate",
    system_prompt: str = "",
    progress: Progress | None = None,
    dataset_id: str | None = None,
) -> tuple[DatasetRecord, ImportReport]:
    """Validate and store a file as a new dataset version. All or nothing.

    The mapping: keys given in ``mapping`` (None = no column) or as ``*_col`` arguments are used as given; the
    others are suggested from the file. With ``model`` and ``max_length``, every example is measured with that
    model's tokenizer and chat template; longer ones are dropped or kept to be cut at ``max_length``
    (``over_length``). ``validation``: "auto" (a seeded random pick, at least 16 rows when the file has 100 or
    more), "file" (``validation_file``, same columns) or "none".
    """
    say = progress or (lambda fraction, message: None)
    shown = safe_file_name(display_name or Path(file).name)
    table = open_table(file, shown, sheet=sheet)
    sample = table.head(SNIFF_ROWS)
    if len(sample.frame) == 0:
        raise _no_rows(table)
    if shape is None:
        shape = detect_shape(sample.frame)[0]
    if shape not in SHAPES:
        raise DataError(f"Unknown shape {shape!r}. Fix: use one of {', '.join(SHAPES)}.")
    chosen = dict(mapping or {})
    for key, col in (
        ("prompt", prompt_col),
        ("response", response_col),
        ("system", system_col),
        ("context", context_col),
        ("messages", messages_col),
        ("text", text_col),
    ):
        if col is not None:
            chosen[key] = col or None
    suggested = suggest_mapping(shape, sample.frame)
    if shape == "prompt_response":
        # System and context columns are used only when asked for, or when the names say so plainly.
        suggested = {**suggested, **{k: None for k in ("system", "context") if chosen and k not in chosen}}
    full = {k: chosen[k] if k in chosen else suggested.get(k) for k in MAPPING_KEYS[shape]}
    mapping = check_mapping(shape, full, list(table.columns), shown)

    if over_length not in OVER_LENGTH:
        raise DataError(f"over_length {over_length!r}: use 'truncate' or 'drop'.")
    if validation_file is not None:
        validation = "file"
    if validation not in VALIDATION:
        raise DataError(f"validation {validation!r}: use 'auto', 'file' or 'none'.")
    val_table = None
    if validation == "file":
        if validation_file is None:
            raise DataError(
                "validation 'file' needs a validation file. Fix: choose one, or use automatic validation."
            )
        val_shown = safe_file_name(validation_display_name or Path(validation_file).name)
        val_table = open_table(validation_file, val_shown, sheet=sheet)
        missing = [c for c in mapping.values() if c and c not in val_table.columns]
        if missing:
            raise DataError(
                f"{val_shown}: the validation file lacks the column(s) {', '.join(map(repr, missing))} "
                f"that the training file uses. Its columns are: {', '.join(map(repr, val_table.columns))}. "
                "Fix: give both files the same header."
            )

    name = safe_dataset_name(name or shown)
    if store.dataset_name_taken(name):
        raise DataError(f"A dataset named {name!r} already exists. Fix: choose another name.")
    if max_length is not None and max_length < 1:
        raise DataError(f"max_length = {max_length}: must be at least 1. Fix: use e.g. 1024.")
    fmt = None
    if model and max_length:
        from backend.data.chatformat import ChatFormat

        fmt = ChatFormat.load(model, paths)

    say(0.0, f"Checking {shown}")
    check_encoding(table, lambda f: say(0.03 * f, f"Checking {shown}"))
    if val_table is not None:
        check_encoding(val_table)
    source_sha = _file_sha256(Path(file), lambda f: say(0.03 + 0.02 * f, f"Checking {shown}"))

    dataset_id = dataset_id or new_dataset_id()  # the importer's parent picks it, to clean up after a crash
    tmp = Path(paths.tmp) / f"{dataset_id}.partial"
    final = Path(paths.datasets) / dataset_id
    try:
        tmp.mkdir(parents=True)
        writer = _Writer(shape, tmp, fmt, system_prompt, max_length, over_length)
        seen: dict[int, int] = {}
        report = writer.read(table, mapping, seen, "train", lambda f: say(0.05 + 0.8 * f, f"Reading {shown}"))
        _check_enough(table, shape, mapping, report, writer)
        val_report = None
        if val_table is not None:
            val_report = writer.read(
                val_table,
                mapping,
                seen,
                "validation",
                lambda f: say(0.85 + 0.05 * f, f"Reading {val_table.name}"),
            )
            if writer.kept["validation"] == 0:
                raise DataError(
                    f"{val_table.name}: no usable rows are left in the validation file "
                    f"({val_report.summary()}). Fix: check it, or use automatic validation."
                )
        say(0.9, "Writing the dataset")
        n_train = writer.kept["train"]
        val_mask = np.zeros(n_train, dtype=bool)
        if validation == "auto":
            n_val = auto_validation_size(n_train)
            if n_val:
                val_mask[np.random.default_rng(seed).choice(n_train, n_val, replace=False)] = True
        digest, lengths = writer.finish(val_mask, lambda f: say(0.9 + 0.1 * f, "Writing the dataset"))
        os.replace(tmp, final)
        train_rows = int(n_train - val_mask.sum())
        validation_rows = int(val_mask.sum()) + (writer.kept["validation"] if val_table is not None else 0)
        drops = writer.drops["train"].as_dict()
        report_obj = ImportReport(
            rows_in_file=writer.rows_in["train"],
            rows_kept=n_train,  # of the rows in the file; a validation file's count is validation_rows_in_file
            dropped_empty_prompt=writer.drops["train"].counts.get("empty_prompt", 0),
            dropped_empty_response=writer.drops["train"].counts.get("empty_response", 0),
            empty_rows_sample=sorted(
                writer.drops["train"].rows.get("empty_prompt", [])
                + writer.drops["train"].rows.get("empty_response", [])
            )[:SAMPLE_ROWS],
            dropped=drops,
            shape=shape,
            row_word=table.row_word,
            train_rows=train_rows,
            validation_rows=validation_rows,
            validation=validation if validation_rows or validation != "auto" else "none",
            validation_file=val_table.name if val_table is not None else None,
            validation_rows_in_file=writer.rows_in["validation"],
            seed=seed,
            over_length=writer.over_length_info(model),
            notes=list(table.notes) + _split_notes(validation, n_train, validation_rows),
        )
        if val_report is not None:
            report_obj.notes.append(f"validation file {val_table.name}: {val_report.summary()}")
        info = {
            "shape": shape,
            "mapping": mapping,
            "columns": list(table.columns),
            "sha256": digest,
            "source_sha256": source_sha,
            "report": report_obj.as_dict(),
            "format": table.kind,
            "reader": {"delimiter": table.delimiter, "encoding": table.encoding, "sheet": table.sheet},
            "validation": {"mode": report_obj.validation, "seed": seed, "file": report_obj.validation_file},
            "length_policy": {"model": model, "max_length": max_length, "over_length": over_length}
            if max_length
            else None,
            "system_prompt": system_prompt,
        }
        if shape == "prompt_response":
            info["max_prompt_chars"] = writer.max_prompt_chars
        record = DatasetRecord(
            id=dataset_id,
            name=name,
            created=time.time(),
            source_file=shown,
            path=str(final / "data.parquet"),
            n_rows=report_obj.rows_kept,
            info=info,
        )
        store.add_dataset(record)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        raise
    if fmt is not None and lengths is not None:
        from backend.data.report import save_lengths

        save_lengths(record, fmt, system_prompt, *lengths)
    same = [d.name for d in store.datasets_with_hash(digest) if d.id != record.id]
    if same:
        report_obj.notes.append(f"the same content as the dataset {same[0]!r}")
    say(1.0, "Done")
    return record, report_obj


def auto_validation_size(n: int) -> int:
    """How many rows automatic validation sets aside: 1 %, at least 16, and none below 100 rows."""
    if n < VALIDATION_AUTO_FROM:
        return 0
    return max(VALIDATION_MIN_ROWS, int(np.ceil(n * VALIDATION_FRACTION)))


def _split_notes(validation: str, n_train: int, validation_rows: int) -> list[str]:
    if validation == "auto" and validation_rows == 0:
        return [
            f"no validation split: with fewer than {VALIDATION_AUTO_FROM} rows every row is used for training"
        ]
    return []


def _check_enough(table: Table, shape: str, mapping: dict, report: ImportReport, writer: _Writer) -> None:
    kept = writer.kept["train"]
    if writer.rows_in["train"] == 0:
        raise _no_rows(table)
    drops = writer.drops["train"]
    if kept == 0:
        if shape in PREFERENCE_SHAPES and not mapping.get("prompt") and drops.counts.get("empty_prompt"):
            raise DataError(
                f"{table.name}: no prompt column was chosen, and the answers are plain text, not conversations that "
                "hold the prompt, so no row has a prompt. Fix: choose the column that holds the prompts."
            )
        if shape == "prompt_response":
            p, r = mapping["prompt"], mapping["response"]
            if drops.counts.get("empty_response", 0) == writer.rows_in["train"]:
                raise DataError(
                    f"{table.name}: every response (column {r!r}) is empty, so there is nothing to learn. "
                    "Fix: check that you picked the right response column, or fill in the responses."
                )
            if set(drops.counts) <= {"empty_prompt", "empty_response"}:
                raise DataError(
                    f"{table.name}: every row has an empty {p!r} or {r!r}, so nothing is left to train on. "
                    "Fix: check that you picked the right columns, or fill in the empty cells."
                )
        raise DataError(
            f"{table.name}: no row is left to train on ({report.summary()}). "
            "Fix: check the column mapping and the rows named above."
        )
    if kept < MIN_ROWS:
        row = writer.first_row
        raise DataError(
            f"{table.name}: only one example is left ({table.row_word} {row}); TuneDeck needs at least {MIN_ROWS} "
            "to fine-tune (a few hundred is typical). Fix: add more examples."
        )


class _Writer:
    """Pass 1 writes kept rows per part; ``finish`` adds the split and writes data.parquet (pass 2)."""

    def __init__(
        self, shape: str, folder: Path, fmt: Any, system_prompt: str, max_length: int | None, over_length: str
    ):
        self.shape = shape
        self.folder = folder
        self.fmt = fmt
        self.system_prompt = system_prompt
        self.max_length = max_length
        self.over_length = over_length
        self.writers: dict[str, Any] = {}
        self.kept = {"train": 0, "validation": 0}
        self.rows_in = {"train": 0, "validation": 0}
        self.drops = {"train": _Drops(), "validation": _Drops()}
        self.over_rows: list[int] = []
        self.over_count = 0
        self.lengths: dict[str, list[np.ndarray]] = {"train": [], "validation": []}
        self.keys: dict[str, list[np.ndarray]] = {"train": [], "validation": []}  # content keys of kept rows
        self.max_prompt_chars = 0
        self.first_row = 0
        self.max_chars = max_cell_chars()

    def _schema(self):
        import pyarrow as pa

        types = {"source_row": pa.int64()}
        return pa.schema([(c, types.get(c, pa.string())) for c in OUTPUT_COLUMNS[self.shape]])

    def read(
        self,
        table: Table,
        mapping: dict,
        seen: dict[int, int],
        part: str,
        on_progress: Callable[[float], None],
    ) -> ImportReport:
        import pyarrow as pa
        import pyarrow.parquet as pq

        where = Where(table.name, table.row_word)
        cols = CONTENT_COLUMNS[self.shape]
        drops = self.drops[part]
        for batch in table.batches(BATCH_ROWS):
            self.rows_in[part] += len(batch.frame)
            norm = normalise(self.shape, mapping, batch, where, self.max_chars)
            for reason, rows in norm.dropped.items():
                drops.add(reason, rows)
            frame = norm.frame
            keys = np.zeros((0, 2), dtype=np.uint64)
            if len(frame):
                keep, dup_rows, keys = _dedupe(frame, cols, seen, part)
                drops.add("duplicate" if part == "train" else "duplicate_of_train", dup_rows[0])
                drops.add("duplicate", dup_rows[1])
                frame, keys = frame[keep].reset_index(drop=True), keys[keep]
            if len(frame) and self.fmt is not None:
                frame, keys = self._measure(frame, keys, part, drops)
            self.keys[part].append(keys)
            if len(frame):
                if not self.first_row:
                    self.first_row = int(frame["source_row"].iloc[0])
                if self.shape == "prompt_response":
                    self.max_prompt_chars = max(self.max_prompt_chars, int(frame["prompt"].str.len().max()))
                if part not in self.writers:
                    schema = self._schema().remove(len(OUTPUT_COLUMNS[self.shape]) - 1)  # no split yet
                    self.writers[part] = pq.ParquetWriter(self.folder / f"{part}.part.parquet", schema)
                writer = self.writers[part]
                writer.write_table(pa.Table.from_pandas(frame, schema=writer.schema, preserve_index=False))
                self.kept[part] += len(frame)
            on_progress(batch.fraction)
        if part in self.writers:
            self.writers[part].close()
        return ImportReport(
            rows_in_file=self.rows_in[part],
            rows_kept=self.kept[part],
            dropped_empty_prompt=drops.counts.get("empty_prompt", 0),
            dropped_empty_response=drops.counts.get("empty_response", 0),
            empty_rows_sample=sorted(
                drops.rows.get("empty_prompt", []) + drops.rows.get("empty_response", [])
            )[:SAMPLE_ROWS],
            dropped=drops.as_dict(),
            shape=self.shape,
            row_word=table.row_word,
        )

    def _measure(
        self, frame: pd.DataFrame, keys: np.ndarray, part: str, drops: _Drops
    ) -> tuple[pd.DataFrame, np.ndarray]:
        encoded = self.fmt.encode_rows(self.shape, frame.to_dict("records"), self.system_prompt)
        total = np.array([e.n_tokens for e in encoded], dtype=np.int32)
        trained = np.array([e.n_trained for e in encoded], dtype=np.int32)
        prompt = np.array([e.n_prompt for e in encoded], dtype=np.int32)
        over = total > self.max_length
        if over.any():
            rows = frame["source_row"].to_numpy()[over].tolist()
            if self.over_length == "drop":
                drops.add("too_long", rows)
            else:
                self.over_count += len(rows)
                self.over_rows.extend(rows[: SAMPLE_ROWS - len(self.over_rows)])
        if self.over_length == "drop":
            frame, keys = frame[~over].reset_index(drop=True), keys[~over]
            total, trained, prompt = total[~over], trained[~over], prompt[~over]
        self.lengths[part].append(np.stack([total, trained, prompt]))
        return frame, keys

    def over_length_info(self, model: str | None) -> dict[str, Any] | None:
        if self.fmt is None:
            return None
        count = (
            self.over_count
            if self.over_length == "truncate"
            else self.drops["train"].counts.get("too_long", 0)
        )
        rows = (
            self.over_rows if self.over_length == "truncate" else self.drops["train"].rows.get("too_long", [])
        )
        return {
            "max_length": self.max_length,
            "policy": self.over_length,
            "model": model,
            "count": count,
            "rows": rows,
        }

    def finish(
        self, val_mask: np.ndarray, on_progress: Callable[[float], None]
    ) -> tuple[str, tuple[np.ndarray, np.ndarray] | None]:
        """Write data.parquet: training part (split from val_mask), then the validation file's part.

        The content hash covers every kept row's content key (hash and lengths) in order, and the split.
        """
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        schema = self._schema()
        digest = hashlib.sha256(self.shape.encode())
        total = max(self.kept["train"] + self.kept["validation"], 1)
        done = 0
        with pq.ParquetWriter(self.folder / "data.parquet", schema) as out:
            for part in ("train", "validation"):
                path = self.folder / f"{part}.part.parquet"
                if not path.exists():
                    continue
                keys = (
                    np.concatenate(self.keys[part]) if self.keys[part] else np.zeros((0, 2), dtype=np.uint64)
                )
                mask = val_mask if part == "train" else np.ones(len(keys), dtype=bool)
                digest.update(keys.tobytes())
                digest.update(mask.astype(np.uint8).tobytes())
                pos = 0
                for rb in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
                    split = pc.if_else(pa.array(mask[pos : pos + rb.num_rows]), "validation", "train")
                    pos += rb.num_rows
                    done += rb.num_rows
                    out.write_batch(pa.RecordBatch.from_arrays([*rb.columns, split], schema=schema))
                    on_progress(done / total)
                path.unlink()
        lengths = None
        if self.fmt is not None:
            parts = self.lengths["train"] + self.lengths["validation"]
            both = np.concatenate(parts, axis=1) if parts else np.zeros((3, 0), dtype=np.int32)
            lengths = (both[0], both[1], both[2])
        return digest.hexdigest(), lengths


def _row_keys(frame: pd.DataFrame, cols: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per row: a 64-bit hash of the content columns, and their lengths packed into another 64 bits."""
    h = pd.util.hash_pandas_object(frame[cols], index=False).to_numpy()
    lengths = np.zeros(len(frame), dtype=np.uint64)
    for c in cols:
        lengths = (lengths << np.uint64(21)) | (
            frame[c].str.len().to_numpy().astype(np.uint64) & np.uint64(0x1FFFFF)
        )
    return h, lengths


def _dedupe(
    frame: pd.DataFrame, cols: list[str], seen: dict[int, int], part: str
) -> tuple[np.ndarray, tuple[list[int], list[int]], np.ndarray]:
    """Keep the first of each exact duplicate. ``seen``: content key → signed row (negative = validation part).

    The key is a 64-bit hash of the content and the exact lengths of its columns (a false match is about as
    likely as a 128-bit hash collision). Returns (keep mask, (rows repeating a row of the other part, rows
    repeating one of this part), the keys as a (n, 2) uint64 array).
    """
    h, lengths = _row_keys(frame, cols)
    rows = frame["source_row"].to_numpy()
    keep = np.ones(len(frame), dtype=bool)
    other, same = [], []
    sign = 1 if part == "train" else -1
    for i, (a, b, row) in enumerate(zip(h.tolist(), lengths.tolist(), rows.tolist(), strict=True)):
        key = (a << 64) | b
        first = seen.get(key)
        if first is None:
            seen[key] = sign * row
            continue
        keep[i] = False
        (same if (first > 0) == (sign > 0) else other).append(row)
    return keep, (other, same), np.stack([h, lengths], axis=1)


def _file_sha256(path: Path, on_progress: Callable[[float], None] | None = None) -> str:
    digest = hashlib.sha256()
    size, done = max(path.stat().st_size, 1), 0
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
            done += len(chunk)
            if on_progress:
                on_progress(done / size)
    return digest.hexdigest()


# -- using, renaming, deleting, exporting --------------------------------------------------------------------------


def first_rows(record: DatasetRecord, n: int = 5) -> pd.DataFrame:
    """The first ``n`` rows of a dataset version, without reading the rest."""
    import pyarrow.parquet as pq

    for rb in pq.ParquetFile(record.path).iter_batches(batch_size=max(n, 1)):
        return rb.to_pandas()
    return pd.DataFrame(columns=OUTPUT_COLUMNS[record.info.get("shape", "prompt_response")])


def load_examples(record: DatasetRecord, split: str | None = None) -> pd.DataFrame:
    frame = pd.read_parquet(record.path)
    if split is not None and "split" in frame:
        frame = frame[frame["split"] == split].reset_index(drop=True)
    return frame


def get_dataset(store: Store, key: str) -> DatasetRecord:
    record = store.get_dataset(key)
    if record is None:
        names = ", ".join(d.name for d in store.list_datasets()) or "none yet"
        raise DataError(f"There is no dataset {key!r}. Existing datasets: {names}.")
    return record


def rename_dataset(store: Store, key: str, new_name: str) -> DatasetRecord:
    import sqlite3

    record = get_dataset(store, key)
    name = safe_dataset_name(new_name)
    if name == record.name:
        return record
    try:
        return store.rename_dataset(record.id, name)
    except sqlite3.IntegrityError:
        raise DataError(f"A dataset named {name!r} already exists. Fix: choose another name.") from None


def delete_dataset(store: Store, paths: Paths, key: str) -> DatasetRecord:
    """Delete a dataset version: refused while a queued or running job uses it. The record goes first (in one
    transaction with that check), then the folder (moved aside, then removed), so nothing half-deleted is listed."""
    record = get_dataset(store, key)
    blocking = store.delete_dataset(record.id, unless_used_by=(JobStatus.QUEUED, JobStatus.RUNNING))
    if blocking:
        jobs = ", ".join(blocking)
        raise DataError(
            f"The dataset {record.name!r} is used by {'a job' if len(blocking) == 1 else 'jobs'} that "
            f"{'is' if len(blocking) == 1 else 'are'} queued or running ({jobs}), so it was not deleted. "
            "Fix: wait for the job to finish, or cancel it, then delete the dataset."
        )
    folder = Path(record.path).parent
    if folder.parent.resolve() == Path(paths.datasets).resolve() and folder.is_dir():
        trash = Path(paths.tmp) / f"{folder.name}.deleted-{secrets.token_hex(3)}"
        os.replace(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)
    return record


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> str:
    """A cell that spreadsheet programs show as text: one starting with = + - @ (a formula) gets a leading '."""
    text = cell_text(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def export_csv(record: DatasetRecord, target: str | Path) -> Path:
    """Write a dataset version as CSV (UTF-8 with BOM, so Excel reads the accents), formula-like cells escaped."""
    import pyarrow.parquet as pq

    target = Path(target)
    with open(target, "w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f)
        header_written = False
        for rb in pq.ParquetFile(record.path).iter_batches(batch_size=BATCH_ROWS):
            frame = rb.to_pandas()
            if not header_written:
                writer.writerow(list(frame.columns))
                header_written = True
            writer.writerows([csv_safe(v) for v in row] for row in frame.itertuples(index=False, name=None))
    return target


def mapping_text(record: DatasetRecord) -> str:
    m = record.info.get("mapping", {})
    return ", ".join(f"{MAPPING_LABELS.get(k, k)}={v!r}" for k, v in m.items() if v)
