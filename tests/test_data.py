"""Data import: files in, validated dataset versions out; every bad file is explained and leaves nothing behind."""

from __future__ import annotations

import pandas as pd
import pytest

from backend.core.store import Store
from backend.data.datasets import DataError, import_dataset, inspect_file, load_examples, safe_dataset_name
from backend.settings import CAPITALS_CSV, Paths

QA = "question,answer\nWhat is 1+1?,Two.\nWhat is 2+2?,Four.\n"


def assert_nothing_left(store: Store, paths: Paths) -> None:
    assert store.list_datasets() == []
    assert list(paths.datasets.iterdir()) == []
    assert list(paths.tmp.iterdir()) == []


def import_fails(store: Store, paths: Paths, file, **kwargs) -> str:
    """Import ``file``, expect a DataError, check nothing was kept, and return the message."""
    with pytest.raises(DataError) as info:
        import_dataset(store, paths, file, **kwargs)
    assert_nothing_left(store, paths)
    return str(info.value)


# -- the happy paths -------------------------------------------------------------------------------------------


def test_sample_file_suggests_question_and_answer():
    preview = inspect_file(CAPITALS_CSV)
    assert (preview.prompt_col, preview.response_col) == ("question", "answer")
    assert preview.columns == ["question", "answer"]
    assert preview.n_rows == 32
    assert preview.delimiter == ","
    assert preview.head.iloc[0]["question"] == "What is the capital of France?"


def test_sample_file_imports_as_a_dataset(store: Store, paths: Paths):
    record, report = import_dataset(store, paths, CAPITALS_CSV)
    assert record.name == "capitals"  # from the file name
    assert record.n_rows == report.rows_kept == report.rows_in_file == 32
    assert record.info["mapping"] == {
        "prompt": "question",
        "response": "answer",
        "system": None,
        "context": None,
    }
    assert record.info["shape"] == "prompt_response"
    assert store.get_dataset("capitals") == record
    assert store.get_dataset(record.id) == record
    frame = load_examples(record)
    assert list(frame.columns) == ["prompt", "response", "system", "source_row", "split"]
    assert frame.iloc[0].to_dict() == {
        "prompt": "What is the capital of France?",
        "response": "The capital of France is Paris.",
        "system": "",
        "source_row": 2,
        "split": "train",  # 32 rows: too few for an automatic validation split
    }
    assert record.path.startswith(str(paths.datasets / record.id))
    assert list(paths.tmp.iterdir()) == []
    assert report.summary() == "32 of 32 rows kept."


def test_columns_are_suggested_by_content_when_names_do_not_help(csv_file):
    f = csv_file(
        "col_a,col_b\n"
        'What is the capital of France?,"The capital of France is Paris, on the Seine."\n'
        'What is two plus two?,"It is four, as anyone who has done some arithmetic knows."\n'
    )
    preview = inspect_file(f)
    assert (preview.prompt_col, preview.response_col) == ("col_a", "col_b")


def test_content_suggestion_follows_the_questions_not_the_column_order(csv_file):
    f = csv_file(
        "col_a,col_b\n"
        '"The capital of France is Paris, on the Seine.",What is the capital of France?\n'
        '"It is four, as anyone who has done some arithmetic knows.",What is two plus two?\n'
    )
    preview = inspect_file(f)
    assert (preview.prompt_col, preview.response_col) == ("col_b", "col_a")


def test_names_like_instruction_and_output_are_recognised(csv_file):
    f = csv_file("id,Instruction,Output\n1,Say hi,Hi!\n")
    preview = inspect_file(f)
    assert (preview.prompt_col, preview.response_col) == ("Instruction", "Output")


@pytest.mark.parametrize(("sep", "name"), [(";", "semicolons.csv"), ("\t", "tabs.tsv")])
def test_semicolon_and_tab_separated_files(store, paths, csv_file, sep, name):
    f = csv_file(f"question{sep}answer\nWhat is 1+1?{sep}Two, of course.\nWhat is 2+2?{sep}Four.\n", name)
    assert inspect_file(f).delimiter == sep
    record, report = import_dataset(store, paths, f)
    assert report.rows_kept == 2
    frame = load_examples(record)
    assert frame["response"].tolist() == ["Two, of course.", "Four."]


def test_utf8_bom_is_not_part_of_the_first_column_name(store, paths, csv_file):
    f = csv_file(b"\xef\xbb\xbf" + QA.encode())
    preview = inspect_file(f)
    assert preview.columns == ["question", "answer"]
    record, _ = import_dataset(store, paths, f)
    assert record.info["mapping"]["prompt"] == "question"


def test_cp1252_file_from_excel_keeps_its_accents(store, paths, csv_file):
    f = csv_file("question,answer\nCafé or thé?,Crème brûlée – always.\nÇa va?,Très bien.\n".encode("cp1252"))
    record, _ = import_dataset(store, paths, f)
    frame = load_examples(record)
    assert frame.iloc[0]["prompt"] == "Café or thé?"
    assert frame.iloc[0]["response"] == "Crème brûlée – always."


def test_utf16_unicode_text_export(store, paths, csv_file):
    f = csv_file("question\tanswer\nWhat is 1+1?\tTwo.\nGrüße?\tHallo.\n".encode("utf-16"), "unicode.txt")
    preview = inspect_file(f)
    assert preview.columns == ["question", "answer"]
    record, _ = import_dataset(store, paths, f)
    assert load_examples(record)["prompt"].tolist() == ["What is 1+1?", "Grüße?"]


def test_values_are_trimmed_and_a_system_column_is_kept(store, paths, csv_file):
    f = csv_file("prompt,response,system\n  Hi  , Hello! ,Be kind.\nBye,Bye!,\n")
    record, _ = import_dataset(store, paths, f, system_col="system")
    row = load_examples(record).iloc[0]
    assert (row["prompt"], row["response"], row["system"]) == ("Hi", "Hello!", "Be kind.")


def test_name_and_mapping_can_be_chosen(store, paths, csv_file):
    f = csv_file("a,b,c\nx?,y,z\nx2?,y2,z2\n")
    record, _ = import_dataset(store, paths, f, name="My data (v2)", prompt_col="c", response_col="a")
    assert record.name == "My-data-v2"
    row = load_examples(record).iloc[0]
    assert (row["prompt"], row["response"]) == ("z", "x?")


def test_safe_dataset_name():
    assert safe_dataset_name("My Sheet (final).csv") == "My-Sheet-final"
    assert safe_dataset_name("../../etc/passwd") == "passwd"
    assert safe_dataset_name("???") == "dataset"
    assert len(safe_dataset_name("x" * 200)) == 64


# -- rows that are skipped -----------------------------------------------------------------------------------------


def test_rows_with_empty_prompt_or_response_are_skipped_and_counted(store, paths, csv_file):
    f = csv_file(
        "question,answer\n"
        "q1?,a1\n"  # row 2
        ",a2\n"  # row 3: no prompt
        "q3?,a3\n"  # row 4
        "q4?,   \n"  # row 5: blank response
        "q5?\n"  # row 6: short row, no response
        "q6?,a6\n"  # row 7
    )
    record, report = import_dataset(store, paths, f)
    assert (report.rows_in_file, report.rows_kept) == (6, 3)
    assert (report.dropped_empty_prompt, report.dropped_empty_response) == (1, 2)
    assert report.empty_rows_sample == [3, 5, 6]  # spreadsheet rows: the header is row 1
    assert (
        report.summary()
        == "3 of 6 rows kept; 3 skipped because the prompt or response was empty (rows 3, 5, 6)."
    )
    assert record.n_rows == 3
    assert load_examples(record)["source_row"].tolist() == [2, 4, 7]
    assert record.info["report"]["empty_rows_sample"] == [3, 5, 6]


def test_many_skipped_rows_are_sampled(store, paths, csv_file):
    f = csv_file("question,answer\nq1?,a\nq2?,b\n" + "q?,\n" * 15)
    _, report = import_dataset(store, paths, f)
    assert report.empty_rows_sample == list(range(4, 14))
    assert report.summary() == (
        "2 of 17 rows kept; 15 skipped because the prompt or response was empty "
        "(rows 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, ...)."
    )


def test_all_rows_empty_is_refused(store, paths, csv_file):
    f = csv_file("question,answer\n,a1\nq2,\n")
    msg = import_fails(store, paths, f)
    assert "every row has an empty 'question' or 'answer'" in msg
    assert "nothing is left to train on" in msg and "Fix:" in msg


# -- files that are refused ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", ["", "\n\n  \n"], ids=["empty", "blank-lines"])
def test_empty_file(store, paths, csv_file, content):
    msg = import_fails(store, paths, csv_file(content, "nothing.csv"))
    assert msg.startswith("nothing.csv: the file is empty.")
    assert "Fix:" in msg


def test_binary_file_named_csv(store, paths, csv_file):
    f = csv_file(b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00[Content_Types].xml", "book.csv")
    msg = import_fails(store, paths, f)
    assert "book.csv: this is not a text CSV file" in msg
    assert "save the sheet as CSV" in msg


def test_bytes_that_are_neither_utf8_nor_cp1252_name_the_line(store, paths, csv_file):
    f = csv_file(b"question,answer\nq1,a1\nq2,\x81\x8d\n")
    msg = import_fails(store, paths, f)
    assert "line 3 has bytes that are not valid UTF-8" in msg
    assert "Fix: re-save the file as 'CSV UTF-8'" in msg


def test_header_only(store, paths, csv_file):
    msg = import_fails(store, paths, csv_file("question,answer\n"))
    assert "the file has a header but no example rows" in msg


def test_single_column_is_plain_text_but_not_prompt_response(store, paths, csv_file):
    f = csv_file("text\nhello there\ngeneral kenobi\n")
    assert inspect_file(f).shape == "text"
    msg = import_fails(store, paths, f, shape="prompt_response")
    assert "found only one column ('text')" in msg
    assert "needs a prompt column and a response column" in msg
    assert "or choose the plain-text shape" in msg


def test_ragged_rows_name_the_line(store, paths, csv_file):
    f = csv_file("question,answer\nq1,a1\nq2,a2\nq3,a3,oops\nq4,a4\n")
    msg = import_fails(store, paths, f)
    assert "the rows do not line up with the header at row 4" in msg
    assert "the header has 2 columns but that row has 3 cells" in msg
    assert "Fix: check that row for an extra comma" in msg


def test_chosen_column_missing_lists_the_files_columns(store, paths):
    msg = import_fails(store, paths, CAPITALS_CSV, prompt_col="Question")
    assert "the prompt column 'Question' is not in the file" in msg
    assert "The file's columns are: 'question', 'answer'" in msg


def test_missing_system_column_is_reported_too(store, paths):
    msg = import_fails(store, paths, CAPITALS_CSV, system_col="persona")
    assert "the system prompt column 'persona' is not in the file" in msg


def test_same_column_for_prompt_and_response(store, paths):
    msg = import_fails(store, paths, CAPITALS_CSV, prompt_col="question", response_col="question")
    assert "the prompt and the response are both 'question'" in msg
    assert "choose one column for the prompt and a different one for the response" in msg


def test_duplicate_dataset_name_is_refused(store, paths, csv_file):
    first, _ = import_dataset(store, paths, CAPITALS_CSV)
    with pytest.raises(
        DataError, match="A dataset named 'capitals' already exists. Fix: choose another name."
    ):
        import_dataset(store, paths, csv_file(QA, "capitals.csv"))
    assert store.list_datasets() == [first]
    assert [p.name for p in paths.datasets.iterdir()] == [first.id]


def test_broken_excel_workbook_is_refused_with_save_again(store, paths, csv_file):
    f = csv_file(b"PK\x03\x04 not really a workbook", "sheet.xlsx")
    msg = import_fails(store, paths, f)
    assert "sheet.xlsx: this is not a valid Excel workbook" in msg
    assert "save it again as .xlsx, or save the sheet as CSV" in msg


def test_missing_file(store, paths, tmp_path):
    msg = import_fails(store, paths, tmp_path / "gone.csv")
    assert msg == "gone.csv: file not found."


def test_display_name_is_used_in_messages(store, paths, csv_file):
    f = csv_file("", "tmpab12cd.csv")
    msg = import_fails(store, paths, f, display_name="my examples.csv")
    assert msg.startswith("my examples.csv: the file is empty.")


def test_a_failure_while_saving_leaves_nothing_behind(store, paths, monkeypatch):
    def broken_add(record):
        raise OSError("disk full")

    monkeypatch.setattr(store, "add_dataset", broken_add)
    with pytest.raises(OSError, match="disk full"):
        import_dataset(store, paths, CAPITALS_CSV)
    assert_nothing_left(store, paths)


def test_imports_are_separate_versions(store, paths, csv_file):
    a, _ = import_dataset(store, paths, csv_file(QA), name="v1")
    b, _ = import_dataset(store, paths, csv_file(QA.replace("Four", "4")), name="v2")
    assert a.id != b.id and a.path != b.path
    assert a.info["sha256"] != b.info["sha256"]
    assert isinstance(load_examples(a), pd.DataFrame)
    assert load_examples(a)["response"].tolist() == ["Two.", "Four."]
