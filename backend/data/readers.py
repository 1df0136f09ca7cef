"""Reading uploaded files: CSV/TSV (any delimiter, any common encoding), Excel .xlsx, JSON, JSONL and Parquet.

``open_table(path, shown_name)`` checks the file (size limit, empty, binary, encoding) and returns a ``Table``:

- ``table.head(n)`` reads only the first rows (fast, for the preview: well under a second for a 500 MB CSV);
- ``table.batches(size)`` streams the whole file as ``Batch``es of raw values with the row number a person sees
  (spreadsheet row with the header as row 1 for CSV/XLSX, line number for JSONL, record number for JSON and
  Parquet) and how far through the file it is, so an import can show progress and keep its memory small.

Every problem is a ``DataError`` naming the file, the line or row, and what to do. Nothing here knows about
prompts or chats: that is ``backend.data.shapes``.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backend.errors import TuneDeckError


class DataError(TuneDeckError, ValueError):
    """A problem with an uploaded file, explained for a person: what is wrong, where, and what to do."""


TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
SUPPORTED = (*TEXT_SUFFIXES, ".xlsx", ".json", ".jsonl", ".ndjson", ".parquet")
SAMPLE_BYTES = 1 << 20  # what the preview reads of a text file
EXACT_COUNT_BYTES = 8 << 20  # smaller text files are counted exactly in the preview; bigger ones estimated
JSON_MAX_MB = 256  # a JSON list is read whole; bigger files should be JSON Lines
DEFAULT_MAX_UPLOAD_MB = 2048
DEFAULT_MAX_CELL_CHARS = 100_000
SAVE_AS_CSV = "save the sheet as CSV (in Excel: File > Save As > CSV UTF-8) and upload that"


# -- settings ------------------------------------------------------------------------------------------------------


def max_upload_bytes() -> int:
    """TUNEDECK_MAX_UPLOAD_MB (default 2048), in bytes (read and checked in backend.settings)."""
    return _settings().max_upload_bytes


def max_cell_chars() -> int:
    """TUNEDECK_MAX_CELL_CHARS (default 100000): the longest text one cell (or chat message) may hold."""
    return _settings().max_cell_chars


def _settings():
    from backend.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        raise DataError(str(exc)) from None


# -- what a reader hands out ---------------------------------------------------------------------------------------


@dataclass
class Batch:
    """Raw rows: ``frame`` has the file's columns (str values for CSV/XLSX; any JSON value otherwise)."""

    frame: pd.DataFrame
    rows: np.ndarray  # the row/line number a person sees, one per row of frame
    fraction: float  # how far through the file this batch ends, 0..1


@dataclass
class Table:
    """An opened, checked file. ``kind``: csv | xlsx | json | jsonl | parquet."""

    path: Path
    name: str
    kind: str
    columns: list[str]
    encoding: str = ""
    delimiter: str = ""
    sheet: str = ""
    sheets: list[str] = field(default_factory=list)
    row_word: str = (
        "row"  # how messages name a position: "row" (CSV/XLSX/Parquet), "line" (JSONL), "record" (JSON)
    )
    notes: list[str] = field(default_factory=list)
    _records: list[dict] | None = None  # JSON lists are parsed once

    # -- reading ----------------------------------------------------------------------------------------------

    def head(self, n: int) -> Batch:
        for batch in self._iter(n, limit=n):
            return batch
        return Batch(pd.DataFrame(columns=self.columns), np.array([], dtype=np.int64), 1.0)

    def batches(self, size: int = 50_000) -> Iterator[Batch]:
        yield from self._iter(size, limit=None)

    def count_rows(self) -> tuple[int, bool]:
        """(rows, exact). Exact for small files and for formats that know their length; else an estimate."""
        size = self.path.stat().st_size
        if self.kind == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(self.path).metadata.num_rows, True
        if self.kind == "json":
            return len(self._load_records()), True
        if self.kind == "xlsx":
            return _xlsx_row_estimate(self), False
        if size <= EXACT_COUNT_BYTES:
            return sum(len(b.frame) for b in self.batches(100_000)), True
        # Rows in the first megabyte (cut at its last line end), scaled to the file's size.
        with open(self.path, "rb") as f:
            raw = f.read(SAMPLE_BYTES)
        raw = raw[: raw.rfind(b"\n") + 1] or raw
        if self.kind == "jsonl":
            n = sum(1 for line in raw.splitlines() if line.strip())
        else:
            try:
                n = len(
                    pd.read_csv(
                        io.BytesIO(raw),
                        sep=self.delimiter,
                        dtype=str,
                        keep_default_na=False,
                        encoding=self.encoding,
                        engine="c",
                    )
                )
            except (pd.errors.ParserError, UnicodeDecodeError):
                n = raw.count(b"\n") - 1
        return int(round(max(n, 1) * size / max(len(raw), 1), -2)), False

    def _iter(self, size: int, limit: int | None) -> Iterator[Batch]:
        if self.kind == "csv":
            yield from _csv_batches(self, size, limit)
        elif self.kind == "xlsx":
            yield from _xlsx_batches(self, size, limit)
        elif self.kind == "jsonl":
            yield from _jsonl_batches(self, size, limit)
        elif self.kind == "json":
            yield from _json_batches(self, size, limit)
        else:
            yield from _parquet_batches(self, size, limit)

    def _load_records(self) -> list[dict]:
        if self._records is None:
            self._records = _json_records(self.path, self.name)
        return self._records

    def where(self, row: int) -> str:
        return f"{self.row_word} {row}"


def open_table(path: str | Path, name: str | None = None, *, sheet: str | None = None) -> Table:
    """Check a file and open it for reading. Raises DataError for anything a person must fix."""
    path = Path(path)
    name = name or path.name
    if not path.is_file():
        raise DataError(f"{name}: file not found.")
    size = path.stat().st_size
    limit = max_upload_bytes()
    if size > limit:
        raise DataError(
            f"{name}: the file is {_mb(size)}, over the upload limit of {_mb(limit)}. Fix: split it into smaller "
            "files, or raise the limit with the setting TUNEDECK_MAX_UPLOAD_MB (in MB) before starting TuneDeck."
        )
    suffix = path.suffix.lower() or Path(name).suffix.lower()
    if suffix == ".xls":
        raise DataError(
            f"{name}: this is the old Excel format (.xls), which TuneDeck cannot read. "
            "Fix: in Excel use File > Save As > Excel Workbook (.xlsx), or CSV UTF-8, and upload that."
        )
    if suffix and suffix not in SUPPORTED:
        raise DataError(
            f"{name}: TuneDeck reads CSV/TSV, Excel (.xlsx), JSON, JSONL and Parquet files, not {suffix}. "
            f"Fix: {SAVE_AS_CSV}."
        )
    if size == 0:
        raise DataError(
            f"{name}: the file is empty. Fix: upload a file with a header row and at least one example row."
        )
    if suffix == ".xlsx":
        return _open_xlsx(path, name, sheet)
    if suffix == ".parquet":
        return _open_parquet(path, name)
    if suffix in (".json", ".jsonl", ".ndjson"):
        return _open_json(path, name, suffix)
    return _open_csv(path, name)


def _mb(n: float) -> str:
    return f"{n / (1 << 30):.1f} GB" if n >= 1 << 30 else f"{n / (1 << 20):,.1f} MB"


# -- CSV / TSV -----------------------------------------------------------------------------------------------------


def _open_csv(path: Path, name: str) -> Table:
    with open(path, "rb") as f:
        raw = f.read(SAMPLE_BYTES)
    if not raw.strip():
        raise DataError(
            f"{name}: the file is empty. Fix: upload a CSV with a header row and at least one example row."
        )
    _refuse_binary(raw, name)
    encoding, text = _sniff_encoding(raw, name, whole=len(raw) == path.stat().st_size)
    if len(raw) < path.stat().st_size:
        text = text[: text.rfind("\n") + 1] or text  # drop the partial last line of the sample
    delimiter = sniff_delimiter(text)
    try:  # the header as pandas names it (duplicates become "a.1", blanks "Unnamed: 2"), like the batches do
        header = pd.read_csv(io.StringIO(text), sep=delimiter, nrows=0, dtype=str).columns
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        header = []
    columns = unique_names(str(c).strip() for c in header)
    _refuse_data_as_header(columns, name)
    table = Table(path, name, "csv", columns, encoding=encoding, delimiter=delimiter)
    if encoding == "cp1252":
        table.notes.append("read as Windows-1252 text (an Excel export), not UTF-8")
    elif encoding == "utf-16":
        table.notes.append("read as UTF-16 text (Excel's 'Unicode Text')")
    return table


def _looks_like_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def _refuse_data_as_header(columns: list[str], name: str) -> None:
    """A first row of numbers is data, not column names (``1,2,3`` then ``4,5,6``): taken as a header it would name
    the columns "1", "2", "3" and lose that row without a word."""
    if columns and all(c and _looks_like_number(c) for c in columns):
        shown = ", ".join(columns[:5]) + (", ..." if len(columns) > 5 else "")
        raise DataError(
            f"{name}: the first row ({shown}) looks like data, not column names, so TuneDeck cannot tell which "
            "column is the prompt and which the response. Fix: add a first row that names the columns, e.g. "
            "prompt,response, and upload the file again."
        )


def _refuse_binary(raw: bytes, name: str) -> None:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return
    if raw.startswith(b"PK\x03\x04"):
        raise DataError(
            f"{name}: this is not a text CSV file (it is a zip archive; is it an Excel workbook renamed to .csv?). "
            f"Fix: upload the workbook with its .xlsx name, or {SAVE_AS_CSV}."
        )
    if b"\x00" in raw[:8192]:
        raise DataError(
            f"{name}: this is not a text CSV file (it contains binary data; is it an Excel workbook or a zip?). "
            f"Fix: {SAVE_AS_CSV}."
        )


def _sniff_encoding(raw: bytes, name: str, *, whole: bool) -> tuple[str, str]:
    """(encoding, decoded sample). UTF-16 by BOM, else UTF-8 (BOM or not), else Windows-1252 (Excel)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return "utf-16", codecs.getincrementaldecoder("utf-16")().decode(raw, final=whole)
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{name}: the file looks like UTF-16 but could not be decoded ({exc.reason}). "
                "Fix: re-save the file as 'CSV UTF-8' and upload it again."
            ) from None
    try:
        return "utf-8-sig", codecs.getincrementaldecoder("utf-8-sig")().decode(raw, final=whole)
    except UnicodeDecodeError as exc:
        bad_line = raw[: exc.start].count(b"\n") + 1
        try:
            # Excel on Windows exports cp1252; accept it, but only when every byte maps to a character and no
            # valid UTF-8 letter is in it (then it is UTF-8 with a stray byte, and cp1252 would garble the rest).
            if _UTF8_MULTIBYTE.search(raw):
                raise UnicodeDecodeError("utf-8", raw, exc.start, exc.end, "mixed")
            return "cp1252", raw.decode("cp1252")
        except UnicodeDecodeError:
            raise not_utf8(name, bad_line, "CSV UTF-8") from None


def not_utf8(file_name: str, line: int, save_as: str = "UTF-8") -> DataError:
    """The one message for text that is not UTF-8, naming the line."""
    return DataError(
        f"{file_name}: line {line} has bytes that are not valid UTF-8 text. "
        f"Fix: re-save the file as '{save_as}' and upload it again."
    )


def check_encoding(table: Table, on_progress=None) -> None:
    """Read a whole text file once to confirm its encoding (the preview only looked at the start).

    A UTF-8 file with a stray Windows-1252 byte after the first megabyte is re-read as Windows-1252 if that decodes
    everything; otherwise the error names the first bad line.
    """
    if table.kind != "csv" or table.encoding != "utf-8-sig":
        return
    size = table.path.stat().st_size
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 0
    done = 0
    with open(table.path, "rb") as f:
        while chunk := f.read(8 << 20):
            try:
                decoder.decode(chunk, final=False)
            except UnicodeDecodeError as exc:
                bad_line = lines + chunk[: exc.start].count(b"\n") + 1
                break
            lines += chunk.count(b"\n")
            done += len(chunk)
            if on_progress:
                on_progress(done / size)
        else:
            try:
                decoder.decode(b"", final=True)
                return
            except UnicodeDecodeError:
                bad_line = lines + 1
    if _decodes_as(table.path, "cp1252") and not _has_utf8_letters(table.path):
        table.encoding = "cp1252"
        table.notes.append(f"read as Windows-1252 text (an Excel export): line {bad_line} is not UTF-8")
        return
    raise not_utf8(table.name, bad_line, "CSV UTF-8")


# A valid UTF-8 sequence for a non-ASCII character. Real Windows-1252 text almost never holds one (it would read
# as mojibake such as "Ã©" there), so a file with one is UTF-8 with a few bad bytes, not a cp1252 export.
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


def _has_utf8_letters(path: Path) -> bool:
    with open(path, "rb") as f:
        tail = b""
        while chunk := f.read(8 << 20):
            if _UTF8_MULTIBYTE.search(tail + chunk):
                return True
            tail = chunk[-3:]
    return False


def _decodes_as(path: Path, encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(8 << 20):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def sniff_delimiter(text: str) -> str:
    """The separator (comma, semicolon, tab or pipe) that splits the first lines into the same number of fields."""
    sample = text[:65536]
    best, best_score = ",", (0, 0.0, 0)
    for d in (",", ";", "\t", "|"):
        try:
            records = [r for r in csv.reader(io.StringIO(sample), delimiter=d) if r][:50]
        except csv.Error:
            continue
        if not records:
            continue
        width = len(records[0])
        if width < 2:
            continue
        same = sum(len(r) == width for r in records) / len(records)
        score = (1, same, width)
        if score > best_score:
            best, best_score = d, score
    return best


def unique_names(names: Iterable[str]) -> list[str]:
    """Column names made unique the way pandas does it ("a", "a.1", ...): two headers that differ only in spaces,
    or an Excel sheet with the same header twice, would otherwise make one name stand for two columns."""
    out: list[str] = []
    taken: set[str] = set()
    for name in names:
        candidate, n = name, 0
        while candidate in taken:
            n += 1
            candidate = f"{name}.{n}"
        taken.add(candidate)
        out.append(candidate)
    return out


def _one_value_too_many(chunk: pd.DataFrame, table: Table, seen: int) -> pd.DataFrame:
    """Every row of this chunk has one value more than the header has names, so pandas made the first column
    the index. A trailing delimiter on every line (empty last values, as some exports write) is harmless: drop
    it. Real values in a column with no name are refused, naming the first such row."""
    header = list(chunk.columns)
    frame = chunk.reset_index()  # the values in file order again: header's columns, then the extra ones
    frame.columns = range(len(frame.columns))
    extra = frame.iloc[:, len(header) :].astype(str).apply(lambda col: col.str.strip() != "")
    if extra.to_numpy().any():
        i = int(np.argmax(extra.to_numpy().any(axis=1)))
        value = next(v for v, e in zip(frame.iloc[i, len(header) :], extra.iloc[i], strict=True) if e)
        raise DataError(
            f"{table.name}: row {seen + i + 2} has more values than the header has column names ({value[:40]!r} "
            "has no column). Fix: give every column a name in the header row, or remove the extra values."
        )
    frame = frame.iloc[:, : len(header)]
    frame.columns = header
    frame.index = pd.RangeIndex(seen, seen + len(frame))
    return frame


def _csv_batches(table: Table, size: int, limit: int | None) -> Iterator[Batch]:
    total = max(table.path.stat().st_size, 1)
    with open(table.path, "rb") as f:
        try:
            reader = pd.read_csv(
                f,
                sep=table.delimiter,
                dtype=str,
                keep_default_na=False,
                skip_blank_lines=False,
                encoding=table.encoding,
                chunksize=size,
                nrows=limit,
                engine="c",
            )
            seen = 0
            offset = 0  # records read so far, blank lines included: row numbers count them
            for chunk in reader:
                n_read = len(chunk)
                if not isinstance(chunk.index, pd.RangeIndex):
                    chunk = _one_value_too_many(chunk, table, offset)
                offset += n_read
                chunk.columns = unique_names(str(c).strip() for c in chunk.columns)
                # Blank lines are read (as empty rows) so that row numbers stay the spreadsheet's, then dropped.
                chunk = chunk[(chunk != "").any(axis=1)]
                rows = chunk.index.to_numpy(dtype=np.int64) + 2  # the header is row 1
                seen += len(chunk)
                yield Batch(chunk.reset_index(drop=True), rows, min(f.tell() / total, 1.0))
                if limit is not None and seen >= limit:
                    return
        except pd.errors.EmptyDataError:
            raise DataError(
                f"{table.name}: the file has no columns. Fix: the first line must name the columns."
            ) from None
        except pd.errors.ParserError as exc:
            raise DataError(_csv_parse_message(table, str(exc))) from None
        except UnicodeDecodeError:
            check_encoding(table)  # names the line
            raise


def _csv_parse_message(table: Table, text: str) -> str:
    ragged = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if ragged:
        want, row, got = ragged.groups()
        return (
            f"{table.name}: the rows do not line up with the header at row {row}: the header has {want} columns "
            f"but that row has {got} cells. Fix: check that row for an extra {_sep_name(table.delimiter)} or an "
            "unclosed quote, or re-export the sheet as CSV."
        )
    eof = re.search(r"EOF inside string starting at row (\d+)", text)
    if eof:
        return (
            f"{table.name}: a quote opened at row {int(eof.group(1)) + 1} is never closed, so the rest of the "
            'file is read as one cell. Fix: close that quote (a quote inside a cell is written as two quotes "").'
        )
    return f"{table.name}: the file could not be read as CSV ({text.strip()}). Fix: re-export the sheet as CSV UTF-8."


def _sep_name(d: str) -> str:
    return {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}.get(d, repr(d))


# -- Excel ---------------------------------------------------------------------------------------------------------


def _open_xlsx(path: Path, name: str, sheet: str | None) -> Table:
    wb = _workbook(path, name)
    try:
        sheets = list(wb.sheetnames)
        chosen = sheet or sheets[0]
        if chosen not in sheets:
            raise DataError(
                f"{name}: there is no sheet named {chosen!r}. The workbook's sheets are: "
                f"{', '.join(map(repr, sheets))}. Fix: pick one of them."
            )
        ws = wb[chosen]
        header: list[str] = []
        for values in ws.iter_rows(min_row=1, max_row=1, values_only=True):
            header = [cell_text(v).strip() for v in values]
    finally:
        wb.close()
    while header and not header[-1]:
        header.pop()
    if not header:
        raise DataError(
            f"{name}: the sheet {chosen!r} is empty. Fix: put a header row in row 1 and examples below it"
            + (f", or pick another sheet ({', '.join(map(repr, sheets))})." if len(sheets) > 1 else ".")
        )
    _refuse_data_as_header(header, name)
    columns = unique_names(h or f"column {_letters(i)}" for i, h in enumerate(header))
    return Table(path, name, "xlsx", columns, sheet=chosen, sheets=sheets)


def _workbook(path: Path, name: str):
    from openpyxl import load_workbook

    if not zipfile.is_zipfile(path):
        raise DataError(
            f"{name}: this is not a valid Excel workbook (.xlsx files are zip archives; this one is not). "
            f"Fix: open it in Excel and save it again as .xlsx, or {SAVE_AS_CSV}."
        )
    try:
        return load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many types for a broken workbook
        raise DataError(
            f"{name}: this Excel workbook could not be read ({type(exc).__name__}: {exc}). "
            f"Fix: open it in Excel and save it again as .xlsx, or {SAVE_AS_CSV}."
        ) from None


def _letters(i: int) -> str:
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(65 + r) + s
    return s


def _xlsx_batches(table: Table, size: int, limit: int | None) -> Iterator[Batch]:
    wb = _workbook(table.path, table.name)
    try:
        ws = wb[table.sheet]
        total = max((ws.max_row or 1) - 1, 1)
        width = len(table.columns)
        values: list[list[str]] = []
        rows: list[int] = []
        seen = 0
        for number, cells in enumerate(ws.iter_rows(min_row=2, values_only=True), start=2):
            texts = [cell_text(v) for v in cells[:width]]
            if not any(t.strip() for t in texts) and not any(cell_text(v).strip() for v in cells[width:]):
                continue  # a blank row
            extra = [cell_text(v) for v in cells[width:] if cell_text(v).strip()]
            if extra:
                raise DataError(
                    f"{table.name}: row {number} of sheet {table.sheet!r} has a value ({extra[0][:40]!r}) in a "
                    "column with no header. Fix: give that column a name in row 1, or clear the cell."
                )
            values.append(texts + [""] * (width - len(texts)))
            rows.append(number)
            seen += 1
            if len(values) >= size or (limit is not None and seen >= limit):
                yield Batch(
                    pd.DataFrame(values, columns=table.columns),
                    np.array(rows),
                    min((number - 1) / total, 1.0),
                )
                values, rows = [], []
                if limit is not None and seen >= limit:
                    return
        if values:
            yield Batch(pd.DataFrame(values, columns=table.columns), np.array(rows), 1.0)
    finally:
        wb.close()


def _xlsx_row_estimate(table: Table) -> int:
    wb = _workbook(table.path, table.name)
    try:
        return max((wb[table.sheet].max_row or 1) - 1, 0)
    finally:
        wb.close()


def cell_text(v: Any) -> str:
    """A spreadsheet or JSON scalar as the text a person sees (1.0 → '1', None → '')."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, float | np.floating):
        if math.isnan(v):
            return ""
        return str(int(v)) if float(v).is_integer() and abs(v) < 1e16 else repr(float(v))
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, datetime | date | time):
        return v.isoformat(sep=" ") if isinstance(v, datetime) else v.isoformat()
    return str(v)


# -- JSON / JSONL --------------------------------------------------------------------------------------------------


def _open_json(path: Path, name: str, suffix: str) -> Table:
    with open(path, "rb") as f:
        raw = f.read(SAMPLE_BYTES)
    if not raw.strip():
        raise DataError(f"{name}: the file is empty. Fix: upload a file with at least one example record.")
    _refuse_binary(raw, name)
    first = raw.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    kind = "jsonl" if suffix in (".jsonl", ".ndjson") else "json"
    if kind == "json" and first == b"{":
        # Many "JSON" exports are really JSON Lines: one object per line.
        lines = [ln for ln in raw.splitlines() if ln.strip()]
        if len(lines) > 1 and lines[0].rstrip().endswith(b"}") and lines[1].lstrip().startswith(b"{"):
            kind = "jsonl"
    table = Table(path, name, kind, [], row_word="line" if kind == "jsonl" else "record")
    if kind == "json":
        size = path.stat().st_size
        if size > JSON_MAX_MB << 20:
            raise DataError(
                f"{name}: a JSON list is read into memory whole, and this one is {_mb(size)}. "
                "Fix: save it as JSON Lines (.jsonl, one record per line), which TuneDeck streams."
            )
        records = table._load_records()
        table.columns = list(records[0].keys())
    else:
        head = table.head(1)
        table.columns = list(head.frame.columns)
        if not table.columns:
            raise DataError(f"{name}: the file has no records. Fix: put one JSON object per line.")
    return table


def _json_records(path: Path, name: str) -> list[dict]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise not_utf8(name, line) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{name}: line {exc.lineno}, column {exc.colno} is not valid JSON ({exc.msg}). "
            "Fix: correct that spot (a validator such as `python -m json.tool FILE` shows it)."
        ) from None
    if not isinstance(data, list):
        hint = ""
        if isinstance(data, dict):
            lists = [k for k, v in data.items() if isinstance(v, list) and v and isinstance(v[0], dict)]
            keys = ", ".join(map(repr, list(data)[:6]))
            hint = f" (it is one object with the keys {keys})"
            if lists:
                hint += f"; the records seem to be under {lists[0]!r}"
        else:
            hint = f" (it is a {_json_type(data)})"
        raise DataError(
            f"{name}: the file is not a list of records{hint}. Fix: the file must be a JSON list of "
            'objects, like [{"prompt": "...", "response": "..."}, ...], or JSON Lines (one object per line).'
        )
    if not data:
        raise DataError(f"{name}: the list is empty. Fix: add at least one record.")
    keys = None
    for i, rec in enumerate(data, start=1):
        if not isinstance(rec, dict):
            raise DataError(
                f"{name}: record {i} is a {_json_type(rec)}, not an object with named fields. "
                'Fix: make every record an object, like {"prompt": "...", "response": "..."}.'
            )
        if keys is None:
            keys = list(rec)
        elif set(rec) != set(keys):
            raise DataError(_keys_message(name, f"record {i}", "record 1", set(rec), keys))
    return data


def _keys_message(name: str, where: str, first: str, got: set, want: list) -> str:
    missing = [k for k in want if k not in got]
    extra = sorted(k for k in got if k not in want)
    parts = []
    if missing:
        parts.append(f"lacks {', '.join(map(repr, missing))}")
    if extra:
        parts.append(f"has {', '.join(map(repr, extra))} too")
    return (
        f"{name}: {where} has different fields from {first}: it {' and '.join(parts)} "
        f'({first} has {", ".join(map(repr, want))}). Fix: give every record the same fields (use "" for '
        "an empty value)."
    )


def _json_type(v: Any) -> str:
    return {
        dict: "object",
        list: "list",
        str: "string",
        int: "number",
        float: "number",
        bool: "true/false",
    }.get(type(v), "null" if v is None else type(v).__name__)


def _json_batches(table: Table, size: int, limit: int | None) -> Iterator[Batch]:
    records = table._load_records()
    end = len(records) if limit is None else min(limit, len(records))
    for start in range(0, end, size):
        stop = min(start + size, end)
        frame = pd.DataFrame.from_records(records[start:stop], columns=table.columns)
        yield Batch(frame, np.arange(start + 1, stop + 1), stop / max(len(records), 1))


def _jsonl_batches(table: Table, size: int, limit: int | None) -> Iterator[Batch]:
    total = max(table.path.stat().st_size, 1)
    keys: list[str] | None = list(table.columns) or None
    keyset = set(keys) if keys else None
    first_line = 0
    records: list[dict] = []
    rows: list[int] = []
    seen = 0
    done = 0
    with open(table.path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            done += len(raw)
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise not_utf8(table.name, number) from None
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{table.name}: line {number} is not valid JSON ({exc.msg} at character {exc.colno}). "
                    "Fix: each line must be one complete JSON object; correct or remove that line."
                ) from None
            if not isinstance(rec, dict):
                raise DataError(
                    f"{table.name}: line {number} is a {_json_type(rec)}, not an object with named fields. "
                    'Fix: put one object per line, like {"prompt": "...", "response": "..."}.'
                )
            if keys is None:
                keys, keyset, first_line = list(rec), set(rec), number
            elif set(rec) != keyset:
                raise DataError(
                    _keys_message(
                        table.name,
                        f"line {number}",
                        f"line {first_line or _first_line(table)}",
                        set(rec),
                        keys,
                    )
                )
            records.append(rec)
            rows.append(number)
            seen += 1
            if len(records) >= size or (limit is not None and seen >= limit):
                yield Batch(pd.DataFrame.from_records(records, columns=keys), np.array(rows), done / total)
                records, rows = [], []
                if limit is not None and seen >= limit:
                    return
    if records:
        yield Batch(pd.DataFrame.from_records(records, columns=keys), np.array(rows), 1.0)
    elif keys is None:
        raise DataError(
            f"{table.name}: the file has no records (only blank lines). Fix: put one JSON object per line."
        )


def _first_line(table: Table) -> int:
    with open(table.path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if raw.strip():
                return number
    return 1


# -- Parquet -------------------------------------------------------------------------------------------------------


def _open_parquet(path: Path, name: str) -> Table:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid/OSError for a broken file
        raise DataError(
            f"{name}: this is not a readable Parquet file ({exc}). Fix: write it again with "
            "pandas `to_parquet` or pyarrow, or upload CSV/JSONL instead."
        ) from None
    columns = list(pf.schema_arrow.names)
    if pf.metadata.num_rows == 0:
        raise DataError(
            f"{name}: the file has columns ({', '.join(columns)}) but no rows. Fix: add example rows."
        )
    return Table(path, name, "parquet", columns)


def _parquet_batches(table: Table, size: int, limit: int | None) -> Iterator[Batch]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(table.path)
    total = max(pf.metadata.num_rows, 1)
    start = 0
    for rb in pf.iter_batches(batch_size=size):
        if limit is not None and start >= limit:
            return
        if limit is not None:
            rb = rb.slice(0, limit - start)
        frame = pd.DataFrame(rb.to_pydict(), columns=table.columns)
        yield Batch(frame, np.arange(start + 1, start + len(frame) + 1), (start + len(frame)) / total)
        start += len(frame)
