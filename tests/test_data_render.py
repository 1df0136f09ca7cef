"""What the model will see: the chat template rendered without torch, tokens, the trained part, token reports.

The renderer must agree with transformers (same text, same token ids) and the trained part with TRL's SFTTrainer
(``test_data_training.py`` checks that against a real trainer for every shape).
"""

from __future__ import annotations

import json

import pytest

from backend.data.chatformat import ChatFormat
from backend.data.datasets import DataError, import_dataset, load_examples
from backend.data.report import histogram, token_report

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there, ok?"},
    {"role": "assistant", "content": "Hello! Fine."},
    {"role": "user", "content": "Bye"},
    {"role": "assistant", "content": "Bye bye"},
]


@pytest.fixture
def fmt(paths, tiny_model) -> ChatFormat:
    return ChatFormat.load("tiny-offline", paths)


def test_rendering_and_tokens_match_transformers(fmt, tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    assert fmt.render(CHAT) == tok.apply_chat_template(CHAT, tokenize=False)
    assert fmt.render(CHAT[:2], add_generation_prompt=True) == tok.apply_chat_template(
        CHAT[:2], tokenize=False, add_generation_prompt=True
    )
    encoded = fmt.encode("chat", {"messages": json.dumps(CHAT)})
    assert encoded.ids == tok.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"]
    text = fmt.encode("text", {"text": "Once upon a time."})
    assert text.ids == tok(text="Once upon a time." + tok.eos_token)["input_ids"]


def test_prompt_response_trains_on_the_response_and_its_end_marker(fmt):
    enc = fmt.encode(
        "prompt_response", {"prompt": "What is 2+2?", "response": "Four.", "system": "Be brief."}
    )
    assert enc.segments() == [
        ("<|bos|><|system|>\nBe brief.<|end|>\n<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n", False),
        ("Four.<|end|>\n", True),
    ]
    assert 0 < enc.n_trained < enc.n_tokens


def test_default_system_prompt_fills_rows_without_one(fmt):
    enc = fmt.encode(
        "prompt_response", {"prompt": "Hi", "response": "Yo", "system": ""}, system_prompt="Pirate."
    )
    assert enc.text.startswith("<|bos|><|system|>\nPirate.<|end|>")
    own = fmt.encode(
        "prompt_response", {"prompt": "Hi", "response": "Yo", "system": "Own."}, system_prompt="Pirate."
    )
    assert "Pirate." not in own.text and "Own." in own.text


def test_chat_trains_on_every_assistant_turn_only(fmt):
    segments = fmt.encode("chat", {"messages": json.dumps(CHAT)}).segments()
    assert [s for s, trained in segments if trained] == ["Hello! Fine.<|end|>\n", "Bye bye<|end|>\n"]
    assert "".join(s for s, _ in segments) == fmt.render(CHAT)


def test_plain_text_trains_on_everything_with_the_end_token(fmt):
    assert fmt.encode("text", {"text": "Once upon a time."}).segments() == [
        ("Once upon a time.<|end|>", True)
    ]


def test_a_template_with_generation_markers_is_followed(paths, tiny_model, tmp_path):
    import shutil

    folder = tmp_path / "marked-model"
    shutil.copytree(tiny_model, folder)
    (folder / "chat_template.jinja").write_text(
        "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n"
        "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}{% endgeneration %}"
        "{% else %}{{ message['content'] }}{% endif %}<|end|>\n{% endfor %}"
    )
    marked = ChatFormat.load(str(folder), paths)
    trained = [s for s, t in marked.encode("chat", {"messages": json.dumps(CHAT)}).segments() if t]
    assert trained == ["Hello! Fine.", "Bye bye"]  # exactly the {% generation %} blocks


def test_template_errors_are_explained(paths, tiny_model, tmp_path):
    import shutil

    folder = tmp_path / "strict-model"
    shutil.copytree(tiny_model, folder)
    (folder / "chat_template.jinja").write_text(
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}{{ m['content'] }}{% endfor %}"
    )
    strict = ChatFormat.load(str(folder), paths)
    with pytest.raises(
        DataError, match="The chat template of .* refused this example: System role not supported"
    ):
        strict.encode("chat", {"messages": json.dumps(CHAT)})


def test_model_without_a_tokenizer_is_explained(paths):
    with pytest.raises(DataError, match="The tokenizer of Qwen/Qwen2.5-0.5B-Instruct is not on this machine"):
        ChatFormat.load("Qwen/Qwen2.5-0.5B-Instruct", paths)


def test_sandbox_blocks_python_internals(paths, tiny_model, tmp_path):
    import shutil

    folder = tmp_path / "evil-model"
    shutil.copytree(tiny_model, folder)
    (folder / "chat_template.jinja").write_text("{{ messages.__class__.__mro__ }}")
    evil = ChatFormat.load(str(folder), paths)
    with pytest.raises(Exception, match="unsafe|not safely|access"):
        evil.render(CHAT)


# -- token reports -----------------------------------------------------------------------------------------------


def test_token_report_counts_histogram_and_over_length(store, paths, csv_file, fmt):
    rows = "".join(f"Question number {i}?,{'The answer is yes. ' * (1 + i % 5)}\n" for i in range(150))
    record, _ = import_dataset(store, paths, csv_file("question,answer\n" + rows))
    report = token_report(record, fmt, max_length=64)
    frame = load_examples(record)
    encoded = fmt.encode_rows("prompt_response", frame.to_dict("records"))
    train = [e for e, s in zip(encoded, frame["split"], strict=True) if s == "train"]
    assert (report.train_rows, report.validation_rows) == (134, 16)
    assert report.tokens_per_epoch == sum(min(e.n_tokens, 64) for e in train)
    assert report.longest == max(e.n_tokens for e in encoded)
    assert report.over_max_length == sum(e.n_tokens > 64 for e in encoded)
    assert sum(b["rows"] for b in report.histogram) == 150
    assert not report.sampled
    assert "tokens per epoch over 134 training rows" in report.summary()


def test_token_report_is_cached_per_dataset_and_tokenizer(store, paths, csv_file, fmt, monkeypatch):
    record, _ = import_dataset(store, paths, csv_file("question,answer\nq1?,a1\nq2?,a2\n"))
    cache = paths.datasets / record.id / "cache"
    assert not cache.exists()
    first = token_report(record, fmt)
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 1 and files[0].startswith(f"lengths-{fmt.fingerprint}")
    mtime = (cache / files[0]).stat().st_mtime_ns
    with monkeypatch.context() as m:  # from the cache: nothing is measured again (checked, not timed)
        m.setattr(type(fmt), "encode_rows", lambda *a, **k: pytest.fail("measured again despite the cache"))
        again = token_report(record, fmt)
    assert again == first and (cache / files[0]).stat().st_mtime_ns == mtime
    token_report(record, fmt, system_prompt="Be brief.")  # another system prompt is another measurement
    assert len(list(cache.iterdir())) == 2


def test_big_datasets_are_measured_on_a_sample(store, paths, csv_file, fmt):
    rows = "".join(f"q{i}?,a{i}\n" for i in range(500))
    record, _ = import_dataset(store, paths, csv_file("question,answer\n" + rows))
    report = token_report(record, fmt, sample_limit=100)
    assert report.sampled and report.measured == 100 and report.rows == 500
    assert "about " in report.summary() and "measured on a random sample of 100 rows" in report.summary()


def test_import_with_a_max_length_fills_the_cache(store, paths, csv_file, fmt):
    record, _ = import_dataset(
        store, paths, csv_file("question,answer\nq1?,a1\nq2?,a2\n"), model="tiny-offline", max_length=512
    )
    assert len(list((paths.datasets / record.id / "cache").glob("lengths-*.npz"))) == 1


def test_histogram_uses_round_ranges():
    import numpy as np

    bins = histogram(np.array([1, 5, 30, 31, 100]), bins=4)
    assert [b["tokens"] for b in bins] == [
        "0-31",
        "32-63",
        "64-95",
        "96-127",
    ]  # round ranges from the shortest
    assert [b["rows"] for b in bins] == [4, 0, 0, 1]
