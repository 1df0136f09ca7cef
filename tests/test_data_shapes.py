"""Shapes (prompt/response, chat, text), the report (drops per reason, duplicates, length, split) and to_trl_columns."""

from __future__ import annotations

import json

import pytest

from backend.data.datasets import auto_validation_size, import_dataset, inspect_file, load_examples
from backend.data.shapes import to_trl_columns
from tests.test_data import import_fails


def chat(*turns: tuple[str, str], sharegpt: bool = False) -> list[dict]:
    if sharegpt:
        return [{"from": r, "value": c} for r, c in turns]
    return [{"role": r, "content": c} for r, c in turns]


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


# -- detecting the shape -----------------------------------------------------------------------------------------


def test_openai_messages_are_detected_and_stored_as_json(store, paths, csv_file):
    rows = [
        {
            "messages": chat(
                ("system", "Be brief."),
                ("user", "Hi"),
                ("assistant", "Hello!"),
                ("user", "Bye"),
                ("assistant", "Bye!"),
            )
        },
        {"messages": chat(("user", "2+2?"), ("assistant", "4"))},
    ]
    f = csv_file(jsonl(rows), "chats.jsonl")
    preview = inspect_file(f)
    assert (preview.shape, preview.mapping) == ("chat", {"messages": "messages"})
    assert "OpenAI form" in preview.shape_reason
    record, report = import_dataset(store, paths, f)
    frame = load_examples(record)
    assert list(frame.columns) == ["messages", "source_row", "split"]
    assert json.loads(frame["messages"].iloc[1]) == chat(("user", "2+2?"), ("assistant", "4"))
    assert record.info["shape"] == "chat"


def test_sharegpt_conversations_are_normalised_to_roles(store, paths, csv_file):
    rows = [
        {
            "id": "a",
            "conversations": chat(("system", "Be kind."), ("human", "Hi"), ("gpt", "Hello!"), sharegpt=True),
        },
        {"id": "b", "conversations": chat(("human", "Name?"), ("gpt", "Bot."), sharegpt=True)},
    ]
    f = csv_file(json.dumps(rows), "sharegpt.json")
    preview = inspect_file(f)
    assert preview.shape == "chat" and "ShareGPT form" in preview.shape_reason
    record, _ = import_dataset(store, paths, f)
    first = json.loads(load_examples(record)["messages"].iloc[0])
    assert first == chat(("system", "Be kind."), ("user", "Hi"), ("assistant", "Hello!"))


def test_chat_in_a_csv_cell_as_json_text(store, paths, csv_file):
    cell = json.dumps(chat(("user", "Hi"), ("assistant", "Hello")))
    cell2 = json.dumps(chat(("user", "Yo"), ("assistant", "Hey")))
    f = csv_file('id,dialog\n1,"' + cell.replace('"', '""') + '"\n2,"' + cell2.replace('"', '""') + '"\n')
    assert inspect_file(f).mapping == {"messages": "dialog"}
    record, _ = import_dataset(store, paths, f)
    assert record.info["shape"] == "chat" and record.n_rows == 2


def test_plain_text_column_for_continued_pretraining(store, paths, csv_file):
    f = csv_file(jsonl([{"text": "Once upon a time."}, {"text": ""}, {"text": "The end."}]), "books.jsonl")
    preview = inspect_file(f)
    assert (preview.shape, preview.mapping) == ("text", {"text": "text"})
    record, report = import_dataset(store, paths, f)
    assert load_examples(record)["text"].tolist() == ["Once upon a time.", "The end."]
    assert report.dropped == {"empty_text": {"count": 1, "rows": [2]}}


def test_shape_and_mapping_can_be_overridden(store, paths, csv_file):
    f = csv_file("title,body,notes\nT1,The first body.,n\nT2,The second body.,m\n")
    record, _ = import_dataset(store, paths, f, shape="text", text_col="body")
    assert record.info["mapping"] == {"text": "body"}
    assert load_examples(record)["text"].tolist() == ["The first body.", "The second body."]


def test_alpaca_instruction_input_output(store, paths, csv_file):
    f = csv_file("instruction,input,output\nTranslate,Bonjour,Hello\nSay hi,,Hi!\n")
    preview = inspect_file(f)
    assert preview.mapping == {
        "prompt": "instruction",
        "response": "output",
        "system": None,
        "context": "input",
    }
    record, _ = import_dataset(store, paths, f)
    assert load_examples(record)["prompt"].tolist() == ["Translate\n\nBonjour", "Say hi"]


def test_unusual_column_names_mapped_by_hand(store, paths, csv_file):
    f = csv_file(
        "Kundenfrage,Antwort vom Team,Persona\nWo ist mein Paket?,Unterwegs.,Freundlich\n"
        "Wann kommt es?,Morgen.,\n"
    )
    record, _ = import_dataset(
        store,
        paths,
        f,
        mapping={
            "prompt": "Kundenfrage",
            "response": "Antwort vom Team",
            "system": "Persona",
            "context": None,
        },
    )
    row = load_examples(record).iloc[0]
    assert (row["prompt"], row["response"], row["system"]) == (
        "Wo ist mein Paket?",
        "Unterwegs.",
        "Freundlich",
    )
    assert record.info["mapping"]["system"] == "Persona"


# -- bad chats ---------------------------------------------------------------------------------------------------


def test_chat_with_an_unknown_role_names_row_message_and_role(store, paths, csv_file):
    rows = [
        {"messages": chat(("user", "Hi"), ("assistant", "Hello"))},
        {"messages": chat(("user", "Hi"), ("narrator", "Meanwhile..."))},
    ]
    msg = import_fails(store, paths, csv_file(jsonl(rows), "roles.jsonl"), shape="chat")
    assert (
        "roles.jsonl: line 2, column 'messages': message 2 has the role 'narrator', which TuneDeck does not "
        "know. Fix: use 'system', 'user' or 'assistant'" in msg
    )


def test_chat_message_without_content(store, paths, csv_file):
    rows = [
        {"messages": chat(("user", "Hi"), ("assistant", "Hello"))},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant"}]},
    ]
    msg = import_fails(store, paths, csv_file(jsonl(rows), "nocontent.jsonl"), shape="chat")
    assert "nocontent.jsonl: line 2, column 'messages': message 2 ('assistant') has no 'content'" in msg


def test_messages_that_are_not_a_list(store, paths, csv_file):
    rows = [{"messages": chat(("user", "Hi"), ("assistant", "Hello"))}, {"messages": {"role": "user"}}]
    msg = import_fails(store, paths, csv_file(jsonl(rows), "notalist.jsonl"), shape="chat")
    assert "notalist.jsonl: line 2, column 'messages' holds an object, not a list of messages." in msg
    bad_cell = csv_file('messages\n"[{""role"": ""user"", ""content"": ""hi""}, oops]"\n', "cell.csv")
    msg = import_fails(store, paths, bad_cell, shape="chat", messages_col="messages")
    assert "cell.csv: row 2, column 'messages' is not valid JSON" in msg


def test_conversations_with_invalid_roles_are_dropped_and_counted(store, paths, csv_file):
    rows = [
        {"messages": chat(("user", "Hi"), ("assistant", "Hello"))},  # line 1: fine
        {"messages": chat(("user", "Only a question"))},  # 2: no assistant reply
        {"messages": chat(("assistant", "I speak first"), ("user", "ok"))},  # 3: no user before the reply
        {"messages": chat(("user", "Hi"), ("system", "late"), ("assistant", "x"))},  # 4: system not first
        {"messages": chat(("user", "Q"), ("assistant", ""))},  # 5: empty reply
        {"messages": []},  # 6: empty
        {"messages": chat(("user", "Yo"), ("assistant", "Hey"))},  # 7: fine
    ]
    record, report = import_dataset(store, paths, csv_file(jsonl(rows), "mixed.jsonl"))
    assert report.rows_kept == 2
    assert report.dropped["invalid_roles"] == {"count": 3, "rows": [2, 3, 4]}
    assert report.dropped["empty_message"] == {"count": 1, "rows": [5]}
    assert report.dropped["empty_chat"] == {"count": 1, "rows": [6]}
    assert "3 skipped: invalid roles" in report.summary() and "(lines 2, 3, 4)" in report.summary()


# -- the report --------------------------------------------------------------------------------------------------


def test_exact_duplicates_are_dropped_and_counted(store, paths, csv_file):
    f = csv_file("question,answer\nq1?,a1\nq2?,a2\n  q1?,a1 \nq1?,different\nq2?,a2\n")
    record, report = import_dataset(store, paths, f)
    assert load_examples(record)["source_row"].tolist() == [2, 3, 5]
    assert report.dropped["duplicate"] == {"count": 2, "rows": [4, 6]}
    assert "2 skipped: exact duplicate of an earlier row (rows 4, 6)" in report.summary()


def test_automatic_validation_split_is_seeded_and_at_least_16_rows(store, paths, csv_file):
    body = "".join(f"question {i}?,answer {i}\n" for i in range(300))
    f = csv_file("question,answer\n" + body)
    a, report = import_dataset(store, paths, f, name="a")
    b, _ = import_dataset(store, paths, f, name="b")
    c, _ = import_dataset(store, paths, f, name="c", seed=7)
    split = load_examples(a)["split"]
    assert (split == "validation").sum() == 16 == report.validation_rows
    assert report.train_rows == 284
    assert load_examples(b)["split"].tolist() == split.tolist()  # same seed, same split
    assert load_examples(c)["split"].tolist() != split.tolist()
    assert a.info["sha256"] == b.info["sha256"] != c.info["sha256"]
    assert "Training: 284 rows; validation: 16 rows (picked at random, seed 42)." in report.summary()
    assert any(
        "the same content as the dataset 'a'" in n for n in import_dataset(store, paths, f, name="d")[1].notes
    )


def test_validation_size_rule():
    assert [auto_validation_size(n) for n in (2, 99, 100, 1600, 10_000, 1_000_000)] == [
        0,
        0,
        16,
        16,
        100,
        10_000,
    ]


def test_small_files_keep_every_row_for_training(store, paths):
    from backend.settings import CAPITALS_CSV

    record, report = import_dataset(store, paths, CAPITALS_CSV)
    assert (report.train_rows, report.validation_rows) == (32, 0)
    assert any("fewer than 100 rows every row is used for training" in n for n in report.notes)
    _, none = import_dataset(store, paths, CAPITALS_CSV, name="none", validation="none")
    assert none.validation == "none" and not any("fewer than 100" in n for n in none.notes)


def test_a_separate_validation_file(store, paths, csv_file):
    train = csv_file("question,answer\nq1?,a1\nq2?,a2\nq3?,a3\n", "train.csv")
    val = csv_file("question,answer\nv1?,b1\nq2?,a2\nv2?,b2\n", "val.csv")
    record, report = import_dataset(store, paths, train, validation_file=val)
    frame = load_examples(record)
    assert frame["split"].tolist() == ["train"] * 3 + ["validation"] * 2
    assert frame[frame["split"] == "validation"]["prompt"].tolist() == ["v1?", "v2?"]
    assert (report.train_rows, report.validation_rows, report.validation_file) == (3, 2, "val.csv")
    assert any("val.csv" in n and "also in the training data (row 3)" in n for n in report.notes)


def test_validation_file_with_other_columns_is_refused(store, paths, csv_file):
    train = csv_file("question,answer\nq1?,a1\nq2?,a2\n", "train.csv")
    val = csv_file("q,a\nv1?,b1\n", "val.csv")
    msg = import_fails(store, paths, train, validation_file=val)
    assert "val.csv: the validation file lacks the column(s) 'question', 'answer'" in msg


@pytest.mark.parametrize("policy", ["drop", "truncate"])
def test_examples_longer_than_max_length_are_dropped_or_kept_to_be_cut(
    store, paths, csv_file, tiny_model, policy
):
    long = "The weather is sunny and warm. " * 20
    f = csv_file(f"question,answer\nHi?,Hello.\n{long},Yes.\nBye?,Bye.\n")
    record, report = import_dataset(store, paths, f, model="tiny-offline", max_length=48, over_length=policy)
    over = report.over_length
    assert (over["max_length"], over["policy"], over["model"]) == (48, policy, "tiny-offline")
    if policy == "drop":
        assert report.dropped["too_long"] == {"count": 1, "rows": [3]}
        assert load_examples(record)["source_row"].tolist() == [2, 4]
        assert "1 skipped: longer than the max length (row 3)" in report.summary()
    else:
        assert (over["count"], over["rows"]) == (1, [3])
        assert load_examples(record)["source_row"].tolist() == [2, 3, 4]
        assert "1 longer than 48 tokens will be cut to that length (row 3)" in report.summary()
    assert record.info["length_policy"] == {"model": "tiny-offline", "max_length": 48, "over_length": policy}


# -- into TRL ----------------------------------------------------------------------------------------------------


def test_to_trl_columns_for_each_shape():
    import pandas as pd

    from backend.data.shapes import to_conversations

    pr = pd.DataFrame(
        {"prompt": ["Hi"], "response": ["Hello"], "system": [""], "source_row": [2], "split": ["train"]}
    )
    assert (
        to_trl_columns(pr, "prompt_response", "Be kind.")
        == to_conversations(pr, "Be kind.")
        == {
            "prompt": [[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]],
            "completion": [[{"role": "assistant", "content": "Hello"}]],
        }
    )
    msgs = chat(("user", "Hi"), ("assistant", "Hello"))
    ch = pd.DataFrame({"messages": [json.dumps(msgs)], "source_row": [1], "split": ["train"]})
    assert to_trl_columns(ch, "chat") == {"messages": [msgs]}
    assert to_trl_columns(ch, "chat", "Be kind.")["messages"][0][0] == {
        "role": "system",
        "content": "Be kind.",
    }
    tx = pd.DataFrame({"text": ["Once."], "source_row": [1], "split": ["train"]})
    assert to_trl_columns(tx, "text", "ignored") == {"text": ["Once."]}
    with pytest.raises(ValueError, match="unknown shape 'table'"):
        to_trl_columns(tx, "table")
