"""Files in, validated dataset versions out.

``inspect_file`` reads an uploaded file and suggests which columns hold the prompt and the response;
``import_dataset`` turns it into an immutable dataset version: a Parquet file of normalised ``prompt`` /
``response`` (and optional ``system``) columns under the data directory, plus a store record holding the mapping
and a report of what was kept and dropped. Every problem becomes a ``DataError`` that names the file, the row
or column, and what to do. Nothing is registered unless everything succeeded.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from backend.settings import Paths
from backend.store import DatasetRecord, Store

PROMPT_NAMES = ("prompt", "instruction", "question", "input", "query", "user", "human", "source", "request", "text")
RESPONSE_NAMES = ("response", "output", "answer", "completion", "assistant", "reply", "target", "gpt", "label")
SYSTEM_NAMES = ("system", "system_prompt")
SUPPORTED = (".csv", ".tsv", ".txt")
PREVIEW_ROWS = 10


class DataError(ValueError):
    """A problem with an uploaded file, explained for a person: what is wrong, where, and what to do."""


@dataclass
class Preview:
    file_name: str
    columns: list[str]
    n_rows: int
    head: pd.DataFrame
    prompt_col: str | None
    response_col: str | None
    delimiter: str = ","
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ImportReport:
    rows_in_file: int
    rows_kept: int
    dropped_empty_prompt: int
    dropped_empty_response: int
    empty_rows_sample: list[int]

    def summary(self) -> str:
        parts = [f"{self.rows_kept} of {self.rows_in_file} rows kept"]
        dropped = self.dropped_empty_prompt + self.dropped_empty_response
        if dropped:
            where = ", ".join(str(r) for r in self.empty_rows_sample)
            parts.append(
                f"{dropped} skipped because the prompt or response was empty (rows {where}"
                f"{', ...' if dropped > len(self.empty_rows_sample) else ''})"
            )
        return "; ".join(parts) + "."


# -- reading -----------------------------------------------------------------------------------------------------


def read_table(path: str | Path, display_name: str | None = None) -> tuple[pd.DataFrame, str]:
    """Read a CSV/TSV file as text columns. Returns (frame, delimiter). Raises DataError with a clear message."""
    path = Path(path)
    name = display_name or path.name
    if not path.is_file():
        raise DataError(f"{name}: file not found.")
    suffix = path.suffix.lower()
    if suffix and suffix not in SUPPORTED:
        raise DataError(
            f"{name}: TuneDeck reads CSV files (.csv, .tsv) for now, not {suffix}. "
            "Fix: save the sheet as CSV (in Excel: File > Save As > CSV UTF-8) and upload that."
        )
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{name}: the file is empty. Fix: upload a CSV with a header row and at least one example row.")
    if b"\x00" in raw[:8192] and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(
            f"{name}: this is not a text CSV file (it contains binary data; is it an Excel workbook or a zip?). "
            "Fix: save the sheet as CSV (in Excel: File > Save As > CSV UTF-8) and upload that."
        )
    text = _decode(raw, name)
    delimiter = _sniff_delimiter(text)
    try:
        frame = pd.read_csv(
            io.StringIO(text), sep=delimiter, dtype=str, keep_default_na=False, skip_blank_lines=True
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"{name}: the file has no columns. Fix: the first line must name the columns.") from None
    except pd.errors.ParserError as exc:
        line = re.search(r"line (\d+)", str(exc))
        where = f" at line {line.group(1)}" if line else ""
        raise DataError(
            f"{name}: the rows do not line up with the header{where} ({exc}). "
            "Fix: check that line for an extra separator or an unclosed quote, or re-export the sheet as CSV."
        ) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if len(frame.columns) < 2:
        raise DataError(
            f"{name}: found only one column ({frame.columns[0]!r}). TuneDeck needs a prompt column and a response "
            "column. Fix: make sure the file is comma-, semicolon- or tab-separated with a header row naming both."
        )
    if len(frame) == 0:
        raise DataError(f"{name}: the file has a header but no example rows. Fix: add rows below the header.")
    return frame, delimiter


def _decode(raw: bytes, name: str) -> str:
    # UTF-16 first (Excel's "Unicode Text" export): its BOM is not UTF-8, and cp1252 would "decode" it into garbage.
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise DataError(f"{name}: the file looks like UTF-16 but could not be decoded ({exc}).") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad_line = raw[: exc.start].count(b"\n") + 1
        try:
            # Excel on Windows exports cp1252; accept it, but only when every byte maps to a character.
            return raw.decode("cp1252")
        except UnicodeDecodeError:
            raise DataError(
                f"{name}: line {bad_line} has bytes that are not valid UTF-8 text. "
                "Fix: re-save the file as 'CSV UTF-8' and upload it again."
            ) from None


def _sniff_delimiter(text: str) -> str:
    sample = text[:65536]
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


# -- suggesting the mapping ----------------------------------------------------------------------------------------


def suggest_columns(frame: pd.DataFrame) -> tuple[str | None, str | None]:
    """Guess (prompt column, response column) from the column names, then from the contents."""
    cols = list(frame.columns)
    lowered = {c: re.sub(r"[^a-z]", "", c.lower()) for c in cols}

    def by_name(names: tuple[str, ...], exclude: str | None) -> str | None:
        for wanted in names:
            for c in cols:
                if c != exclude and lowered[c] == wanted:
                    return c
        for wanted in names:
            for c in cols:
                if c != exclude and wanted in lowered[c]:
                    return c
        return None

    prompt = by_name(PROMPT_NAMES, None)
    response = by_name(RESPONSE_NAMES, prompt)
    if prompt and response:
        return prompt, response
    # By content: text columns ordered by mean length; questions ('?') lean to the prompt side.
    sample = frame.head(200)
    stats = []
    for c in cols:
        values = sample[c].astype(str)
        if values.str.strip().eq("").all():
            continue
        stats.append((c, values.str.len().mean(), values.str.contains(r"\?").mean()))
    if not stats:
        return prompt, response
    if response is None:
        others = [s for s in stats if s[0] != prompt]
        response = max(others, key=lambda s: s[1])[0] if others else None
    if prompt is None:
        others = [s for s in stats if s[0] != response]
        if others:
            prompt = max(others, key=lambda s: (s[2], -cols.index(s[0])))[0]
    return prompt, response


def inspect_file(path: str | Path, display_name: str | None = None) -> Preview:
    frame, delimiter = read_table(path, display_name)
    prompt, response = suggest_columns(frame)
    return Preview(
        file_name=display_name or Path(path).name,
        columns=list(frame.columns),
        n_rows=len(frame),
        head=frame.head(PREVIEW_ROWS),
        prompt_col=prompt,
        response_col=response,
        delimiter=delimiter,
    )


# -- importing -----------------------------------------------------------------------------------------------------


def safe_dataset_name(text: str) -> str:
    """A dataset name made of letters, digits, '-', '_' and '.', at most 64 characters."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(text).stem if "." in text else text).strip("-._")
    return name[:64] or "dataset"


def import_dataset(
    store: Store,
    paths: Paths,
    file: str | Path,
    *,
    name: str | None = None,
    prompt_col: str | None = None,
    response_col: str | None = None,
    system_col: str | None = None,
    display_name: str | None = None,
) -> tuple[DatasetRecord, ImportReport]:
    """Validate and store a file as a new dataset version. All or nothing."""
    shown = display_name or Path(file).name
    frame, _ = read_table(file, shown)
    suggested_prompt, suggested_response = suggest_columns(frame)
    prompt_col = prompt_col or suggested_prompt
    response_col = response_col or suggested_response
    problems = []
    for role, col in (("prompt", prompt_col), ("response", response_col), ("system", system_col)):
        if role != "system" and not col:
            problems.append(f"no {role} column was chosen and none could be guessed")
        elif col and col not in frame.columns:
            problems.append(f"the {role} column {col!r} is not in the file")
    if prompt_col and prompt_col == response_col:
        problems.append(f"the prompt and the response are both {prompt_col!r}")
    if problems:
        raise DataError(
            f"{shown}: " + "; ".join(problems) + f". The file's columns are: {', '.join(map(repr, frame.columns))}. "
            "Fix: choose one column for the prompt and a different one for the response."
        )
    assert prompt_col and response_col

    name = safe_dataset_name(name or shown)
    if store.dataset_name_taken(name):
        raise DataError(f"A dataset named {name!r} already exists. Fix: choose another name.")

    prompts = frame[prompt_col].astype(str).str.strip()
    responses = frame[response_col].astype(str).str.strip()
    empty_p, empty_r = prompts.eq(""), responses.eq("")
    keep = ~(empty_p | empty_r)
    # Row numbers as a person sees them in a spreadsheet: the header is row 1, the first example row 2.
    dropped_rows = [int(i) + 2 for i in frame.index[~keep][:10]]
    report = ImportReport(
        rows_in_file=len(frame),
        rows_kept=int(keep.sum()),
        dropped_empty_prompt=int(empty_p.sum()),
        dropped_empty_response=int((empty_r & ~empty_p).sum()),
        empty_rows_sample=dropped_rows,
    )
    if report.rows_kept == 0:
        raise DataError(
            f"{shown}: every row has an empty {prompt_col!r} or {response_col!r}, so nothing is left to train on. "
            "Fix: check that you picked the right columns, or fill in the empty cells."
        )
    out = pd.DataFrame(
        {
            "prompt": prompts[keep].tolist(),
            "response": responses[keep].tolist(),
            "system": (frame[system_col].astype(str).str.strip()[keep].tolist() if system_col else [""] * report.rows_kept),
            "source_row": [int(i) + 2 for i in frame.index[keep]],
        }
    )
    digest = hashlib.sha256(pd.util.hash_pandas_object(out[["prompt", "response", "system"]], index=False).values.tobytes()).hexdigest()
    dataset_id = f"ds-{secrets.token_hex(4)}"
    tmp = Path(paths.tmp) / f"{dataset_id}.partial"
    final = Path(paths.datasets) / dataset_id
    try:
        tmp.mkdir(parents=True)
        out.to_parquet(tmp / "data.parquet", index=False)
        os.replace(tmp, final)
        record = DatasetRecord(
            id=dataset_id,
            name=name,
            created=time.time(),
            source_file=shown,
            path=str(final / "data.parquet"),
            n_rows=report.rows_kept,
            info={
                "shape": "prompt_response",
                "mapping": {"prompt": prompt_col, "response": response_col, "system": system_col},
                "columns": list(frame.columns),
                "sha256": digest,
                "report": report.__dict__,
                "max_prompt_chars": int(out["prompt"].str.len().max()),
            },
        )
        store.add_dataset(record)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        raise
    return record, report


def load_examples(record: DatasetRecord) -> pd.DataFrame:
    return pd.read_parquet(record.path)
