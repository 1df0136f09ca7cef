"""Files in: every supported format and encoding, and every kind of bad file, explained with its line or row.

Each refused file must leave nothing registered and nothing on disk (``import_fails`` checks that).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from backend.data.datasets import export_csv, import_dataset, inspect_file, load_examples
from tests.test_data import import_fails

QA = "question,answer\nWhat is 1+1?,Two.\nWhat is 2+2?,Four.\n"


# -- CSV dialects and encodings --------------------------------------------------------------------------------


def test_pipe_separated_file(store, paths, csv_file):
    f = csv_file("question|answer\nWhat is 1+1?|Two, of course.\nWhat is 2+2?|Four.\n", "pipes.csv")
    assert inspect_file(f).delimiter == "|"
    record, _ = import_dataset(store, paths, f)
    assert load_examples(record)["response"].tolist() == ["Two, of course.", "Four."]


def test_quoted_cells_with_newlines_and_crlf_line_endings(store, paths, csv_file):
    f = csv_file(
        'question,answer\r\n"Write a poem, please","Roses are red,\r\nviolets are blue"\r\n'
        'Say "hi","He said ""hi"""\r\nLast?,Yes.\r\n'
    )
    record, report = import_dataset(store, paths, f)
    frame = load_examples(record)
    assert frame["prompt"].tolist() == ["Write a poem, please", 'Say "hi"', "Last?"]
    assert frame["response"].tolist()[:2] == ["Roses are red,\r\nviolets are blue", 'He said "hi"']
    # Spreadsheet rows, not physical lines: the two-line cell is still one row.
    assert frame["source_row"].tolist() == [2, 3, 4]


def test_latin1_export_is_read_as_windows_1252(store, paths, csv_file):
    f = csv_file(
        "question;answer\nO\xf9 est la gare?;\xc0 gauche.\nEt le caf\xe9?;Tout droit.\n".encode("latin-1")
    )
    preview = inspect_file(f)
    assert preview.delimiter == ";"
    assert any("Windows-1252" in n for n in preview.notes)
    record, _ = import_dataset(store, paths, f)
    assert load_examples(record)["prompt"].tolist() == ["Où est la gare?", "Et le café?"]


def test_a_windows_1252_byte_after_the_first_megabyte_is_still_read(store, paths, csv_file):
    rows = "".join(f"question {i}?,answer {i}\n" for i in range(60_000))  # ~1.3 MB of plain ASCII
    f = csv_file(("question,answer\n" + rows + "Caf\xe9?,Oui.\n").encode("cp1252"))
    record, report = import_dataset(store, paths, f)
    assert load_examples(record)["prompt"].iloc[-1] == "Café?"
    assert any("line 60002 is not UTF-8" in n for n in report.notes)


def test_undecodable_bytes_late_in_a_big_file_name_their_line(store, paths, csv_file):
    rows = "".join(f"question {i}?,answer {i}\n" for i in range(60_000))
    f = csv_file(("question,answer\n" + rows).encode() + b"bad?,\x81\x8d\n")
    msg = import_fails(store, paths, f)
    assert "line 60002 has bytes that are not valid UTF-8" in msg


def test_utf8_with_one_stray_byte_is_refused_not_garbled(store, paths, csv_file):
    """Re-reading it all as Windows-1252 would turn every correct é into Ã©: name the bad line instead."""
    f = csv_file("question,answer\nCafé au lait?,Oui.\n".encode() + b"Na\xefve?,Yes.\n")
    assert "line 3 has bytes that are not valid UTF-8" in import_fails(store, paths, f)


def test_a_trailing_comma_on_every_line_is_harmless(store, paths, csv_file):
    record, _ = import_dataset(
        store, paths, csv_file("question,answer,\nWhat is 1+1?,Two.,\nWhat is 2+2?,Four.,\n")
    )
    assert load_examples(record)["response"].tolist() == ["Two.", "Four."]
    record, _ = import_dataset(
        store, paths, csv_file("question,answer\nQ one?,A one.,\nQ two?,A two.,\n", "b.csv")
    )
    assert load_examples(record)["prompt"].tolist() == ["Q one?", "Q two?"]


def test_values_in_a_column_with_no_header_are_named(store, paths, csv_file):
    f = csv_file("question,answer\nWhat is 1+1?,Two.,\nWhat is 2+2?,Four.,oops\n")
    msg = import_fails(store, paths, f)
    assert "row 3 has more values than the header has column names ('oops'" in msg and "Fix:" in msg


def test_headers_that_differ_only_in_spaces_stay_two_columns(store, paths, csv_file):
    preview = inspect_file(csv_file("prompt,prompt ,response\nHi,Hey,Hello.\nBye,Ciao,Goodbye.\n"))
    assert preview.columns == ["prompt", "prompt.1", "response"]
    record, _ = import_dataset(
        store, paths, csv_file("prompt,prompt ,response\nHi,Hey,Hello.\nBye,Ciao,Bye.\n", "d.csv")
    )
    assert load_examples(record)["prompt"].tolist() == ["Hi", "Bye"]


def test_a_column_called_row_is_shown_next_to_the_row_numbers(csv_file):
    preview = inspect_file(csv_file("row,question,answer\n7,What is 1+1?,Two.\n8,What is 2+2?,Four.\n"))
    assert preview.head[["(row)", "row"]].values.tolist() == [[2, "7"], [3, "8"]]


def test_row_numbers_count_blank_lines_like_a_spreadsheet(store, paths, csv_file):
    f = csv_file("question,answer\nWhat is 1+1?,Two.\n\nWhat is 2+2?,\nWhat is 3+3?,Six.\n")
    record, report = import_dataset(store, paths, f)
    assert load_examples(record)["source_row"].tolist() == [2, 5]
    assert "(row 4)" in report.summary()


def test_an_unclosed_quote_is_named(store, paths, csv_file):
    f = csv_file('question,answer\nq1,a1\nq2,"a2\nq3,a3\n')
    msg = import_fails(store, paths, f)
    assert "a quote opened at row 3 is never closed" in msg


def test_file_names_with_folders_and_odd_characters_are_stored_under_a_safe_name(store, paths, csv_file):
    f = csv_file(QA, "upload.csv")
    record, _ = import_dataset(store, paths, f, display_name="../../etc/<my>:data?.csv")
    assert record.source_file == "my-data-.csv"
    assert record.name == "my-data"
    assert [p.name for p in paths.datasets.iterdir()] == [record.id]  # nothing written anywhere else
    msg = import_fails_named(store, paths, csv_file("", "x.csv"), "C:\\Users\\me\\empty\x00.csv")
    assert msg.startswith("empty-.csv: the file is empty.")


def import_fails_named(store, paths, f, shown):
    from backend.data.datasets import DataError

    with pytest.raises(DataError) as info:
        import_dataset(store, paths, f, display_name=shown)
    return str(info.value)


def test_a_file_over_the_upload_limit_is_refused_with_the_setting_to_change(
    store, paths, csv_file, monkeypatch
):
    monkeypatch.setenv("TUNEDECK_MAX_UPLOAD_MB", "0.0001")  # about 100 bytes
    f = csv_file(QA * 4, "big.csv")
    msg = import_fails(store, paths, f)
    assert msg.startswith("big.csv: the file is 0.0 MB, over the upload limit of 0.0 MB.")
    assert "raise the limit with the setting TUNEDECK_MAX_UPLOAD_MB" in msg
    with pytest.raises(Exception, match="big.csv: the file is"):
        inspect_file(f)


def test_a_huge_cell_is_refused_naming_row_column_and_setting(store, paths, csv_file, monkeypatch):
    monkeypatch.setenv("TUNEDECK_MAX_CELL_CHARS", "50")
    f = csv_file("question,answer\nq1?,short\nq2?," + "x" * 51 + "\n")
    msg = import_fails(store, paths, f)
    assert "data.csv: row 3, column 'answer' holds 51 characters, more than the limit of 50" in msg
    assert "raise the limit with the setting TUNEDECK_MAX_CELL_CHARS" in msg


def test_default_cell_limit_is_100000_characters(store, paths, csv_file):
    ok = csv_file("question,answer\nq1?," + "y" * 100_000 + "\nq2?,fine\n", "ok.csv")
    assert import_dataset(store, paths, ok)[1].rows_kept == 2
    msg = import_fails_named(
        store, paths, csv_file("question,answer\nq1?," + "y" * 100_001 + "\nq2?,a\n"), "big.csv"
    )
    assert "row 2, column 'answer' holds 100,001 characters, more than the limit of 100,000" in msg


def test_formula_like_cells_stay_text_and_are_escaped_in_exported_csv(store, paths, csv_file, tmp_path):
    f = csv_file("question,answer\n=SUM(A1:A9),+1 is one\n-2?,\"@cmd|' /C calc'!A0\"\n")
    record, _ = import_dataset(store, paths, f)
    frame = load_examples(record)
    assert frame["prompt"].tolist() == ["=SUM(A1:A9)", "-2?"]  # stored exactly as typed
    assert frame["response"].tolist() == ["+1 is one", "@cmd|' /C calc'!A0"]
    out = export_csv(record, tmp_path / "out.csv")
    text = out.read_text(encoding="utf-8-sig")
    assert "'=SUM(A1:A9),'+1 is one" in text
    assert "'-2?" in text and "'@cmd|" in text
    back = pd.read_csv(out, dtype=str, encoding="utf-8-sig")
    assert back["prompt"].tolist() == ["'=SUM(A1:A9)", "'-2?"]


def test_formula_like_cells_are_plain_text_in_the_preview(csv_file):
    preview = inspect_file(csv_file('question,answer\n=1+1,two\n=HYPERLINK("x"),y\n'))
    assert preview.head["question"].tolist() == ["=1+1", '=HYPERLINK("x")']


# -- Excel -------------------------------------------------------------------------------------------------------


def _workbook(path, sheets: dict[str, list[list]]):
    from openpyxl import Workbook

    wb = Workbook()
    wb.remove(wb.active)
    for title, rows in sheets.items():
        ws = wb.create_sheet(title)
        for row in rows:
            ws.append(row)
    wb.save(path)
    return path


def test_excel_first_sheet_and_a_chosen_sheet(store, paths, tmp_path):
    f = _workbook(
        tmp_path / "book.xlsx",
        {
            "Notes": [["just", "notes"], ["a", "b"]],
            "Examples": [
                ["Question", "Answer", None],
                ["What is 1+1?", 2, None],
                [None, None, None],
                ["Capital of Italy?", "Rome", None],
            ],
        },
    )
    first = inspect_file(f)
    assert (first.sheet, first.sheets) == ("Notes", ["Notes", "Examples"])
    preview = inspect_file(f, sheet="Examples")
    assert preview.columns == ["Question", "Answer"]
    assert (preview.mapping["prompt"], preview.mapping["response"]) == ("Question", "Answer")
    record, report = import_dataset(store, paths, f, sheet="Examples")
    frame = load_examples(record)
    assert frame["response"].tolist() == ["2", "Rome"]  # numbers as the person typed them
    assert frame["source_row"].tolist() == [2, 4]  # Excel's row numbers; the blank row 3 is skipped
    assert record.info["reader"]["sheet"] == "Examples"


def test_excel_missing_sheet_lists_the_sheets(store, paths, tmp_path):
    f = _workbook(tmp_path / "book.xlsx", {"A": [["q", "a"], ["x", "y"]], "B": [["q", "a"]]})
    msg = import_fails(store, paths, f, sheet="C")
    assert "there is no sheet named 'C'. The workbook's sheets are: 'A', 'B'" in msg
    msg = import_fails(store, paths, f, sheet="B")
    assert "book.xlsx: the sheet 'B' has a header but no example rows" in msg


def test_old_xls_and_unknown_types_are_refused(store, paths, csv_file):
    assert "old Excel format (.xls)" in import_fails(store, paths, csv_file(b"\xd0\xcf\x11\xe0", "old.xls"))
    msg = import_fails(store, paths, csv_file(b"%PDF-1.4", "paper.pdf"))
    assert "TuneDeck reads CSV/TSV, Excel (.xlsx), JSON, JSONL and Parquet files, not .pdf" in msg


def test_a_workbook_renamed_to_csv_is_explained(store, paths, tmp_path):
    book = _workbook(tmp_path / "book.xlsx", {"S": [["q", "a"], ["x", "y"]]})
    renamed = tmp_path / "book.csv"
    renamed.write_bytes(book.read_bytes())
    msg = import_fails(store, paths, renamed)
    assert (
        "book.csv: this is not a text CSV file (it is a zip archive; is it an Excel workbook renamed" in msg
    )


# -- JSON, JSONL, Parquet ----------------------------------------------------------------------------------------


def test_json_list_of_records(store, paths, csv_file):
    recs = [
        {"instruction": "Add", "input": "1 and 1", "output": "2"},
        {"instruction": "Name a colour", "input": "", "output": "Red"},
    ]
    record, _ = import_dataset(store, paths, csv_file(json.dumps(recs), "alpaca.json"))
    frame = load_examples(record)
    assert record.info["mapping"] == {
        "prompt": "instruction",
        "response": "output",
        "system": None,
        "context": "input",
    }
    assert frame["prompt"].tolist() == ["Add\n\n1 and 1", "Name a colour"]
    assert frame["source_row"].tolist() == [1, 2]  # record numbers


def test_jsonl_lines_are_the_row_numbers(store, paths, csv_file):
    lines = [
        '{"prompt": "a?", "response": "A"}',
        "",
        '{"prompt": "b?", "response": ""}',
        '{"prompt": "c?", "response": "C"}',
    ]
    record, report = import_dataset(store, paths, csv_file("\n".join(lines) + "\n", "data.jsonl"))
    assert load_examples(record)["source_row"].tolist() == [1, 4]
    assert (
        report.summary() == "2 of 3 rows kept; 1 skipped because the prompt or response was empty (line 3)."
    )


def test_parquet_file(store, paths, tmp_path):
    f = tmp_path / "data.parquet"
    pd.DataFrame({"question": ["q1?", "q2?"], "answer": ["a1", "a2"], "score": [1.5, 2.0]}).to_parquet(f)
    preview = inspect_file(f)
    assert (preview.n_rows, preview.n_rows_exact) == (2, True)
    record, _ = import_dataset(store, paths, f)
    assert load_examples(record)["response"].tolist() == ["a1", "a2"]


def test_a_broken_json_line_is_named(store, paths, csv_file):
    f = csv_file(
        '{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": "d"}\n{"prompt": "e", "response": }\n',
        "broken.jsonl",
    )
    msg = import_fails(store, paths, f)
    assert msg.startswith("broken.jsonl: line 3 is not valid JSON (Expecting value at character 29).")


def test_broken_json_names_line_and_column(store, paths, csv_file):
    f = csv_file('[\n  {"prompt": "a", "response": "b"},\n  {"prompt": "c" "response": "d"}\n]\n', "bad.json")
    msg = import_fails(store, paths, f)
    assert "bad.json: line 3, column 18 is not valid JSON (Expecting ',' delimiter)" in msg


def test_json_that_is_not_a_list_of_records(store, paths, csv_file):
    msg = import_fails(
        store, paths, csv_file(json.dumps({"data": [{"prompt": "a", "response": "b"}]}), "x.json")
    )
    assert (
        "x.json: the file is not a list of records (it is one object with the keys 'data'); the records seem "
        "to be under 'data'" in msg
    )
    msg = import_fails(store, paths, csv_file(json.dumps(["just", "strings"]), "y.json"))
    assert "y.json: record 1 is a string, not an object with named fields" in msg
    msg = import_fails(store, paths, csv_file("[1, 2]\n", "z.jsonl"))
    assert "z.jsonl: line 1 is a list, not an object with named fields" in msg


def test_records_with_inconsistent_keys(store, paths, csv_file):
    recs = [
        {"prompt": "a", "response": "b"},
        {"prompt": "c", "response": "d"},
        {"prompt": "e", "answer": "f"},
    ]
    msg = import_fails(store, paths, csv_file(json.dumps(recs), "keys.json"))
    assert (
        "keys.json: record 3 has different fields from record 1: it lacks 'response' and has 'answer' too"
        in msg
    )
    lines = "\n".join(json.dumps(r) for r in recs)
    msg = import_fails(store, paths, csv_file(lines, "keys.jsonl"))
    assert "keys.jsonl: line 3 has different fields from line 1" in msg


def test_a_response_that_is_a_list_is_named(store, paths, csv_file):
    recs = [{"prompt": "a", "response": "b"}, {"prompt": "c", "response": ["d", "e"]}]
    msg = import_fails(store, paths, csv_file(json.dumps(recs), "lists.json"))
    assert "lists.json: record 2, column 'response' holds a list, not text" in msg


# -- how many rows ---------------------------------------------------------------------------------------------


def test_a_single_row_is_refused(store, paths, csv_file):
    msg = import_fails(store, paths, csv_file("question,answer\nWhat is 1+1?,Two.\n", "one.csv"))
    assert msg.startswith("one.csv: only one example is left (row 2); TuneDeck needs at least 2")
    assert "Fix: add more examples." in msg


def test_all_responses_empty(store, paths, csv_file):
    msg = import_fails(store, paths, csv_file("question,answer\nq1?,\nq2?,  \nq3?,\n", "noanswers.csv"))
    assert msg.startswith(
        "noanswers.csv: every response (column 'answer') is empty, so there is nothing to learn."
    )
    assert "Fix: check that you picked the right response column" in msg


def test_big_file_preview_reads_only_the_start(csv_file):
    rows = "".join(f"question {i}?,answer {i}\n" for i in range(400_000))  # ~9 MB
    f = csv_file("question,answer\n" + rows)
    preview = inspect_file(f)
    assert not preview.n_rows_exact
    assert 300_000 < preview.n_rows < 500_000
    assert preview.rows_text().startswith("about ")
    assert len(preview.head) == 10


def test_json_nulls_and_numbers_are_empty_cells_and_text(store, paths, csv_file):
    recs = [
        {"prompt": "a?", "response": None},
        {"prompt": 7, "response": 1.5},
        {"prompt": "b?", "response": "B"},
    ]
    record, report = import_dataset(store, paths, csv_file(json.dumps(recs), "nulls.json"))
    frame = load_examples(record)
    assert frame["prompt"].tolist() == ["7", "b?"] and frame["response"].tolist() == ["1.5", "B"]
    assert report.dropped["empty_response"] == {"count": 1, "rows": [1]}
