"""Tokenizing a dataset version for training: the same tokens and loss labels TRL makes, cached next to the data.

Each shape is compared with what TRL's SFTTrainer itself prepares from the same rows (its own tokenization path),
so our faster batched path cannot drift from TRL's rules unnoticed.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from backend.models import tiny as tinymodel
from backend.training import prepare

ROWS = [
    ("What is the capital of France?", "The capital of France is Paris.", ""),
    ("Say hello.", "Hello!", "Be brief."),
    ("Count to three.", "One, two, three.", ""),
    ("Name a river.", "The Seine.", ""),
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_build: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_build)


@pytest.fixture(scope="module")
def tiny(tiny_model_build: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_build)


def trl_prepared(tiny, tokenizer, columns: dict, **config) -> tuple[list, list]:
    """What TRL's own preparation makes of these columns (input_ids, labels)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-out-"),
        use_cpu=True,
        bf16=False,
        report_to="none",
        max_length=64,
        activation_checkpointing=False,
        save_strategy="no",
        **config,
    )
    trainer = SFTTrainer(
        model=tiny, args=args, train_dataset=Dataset.from_dict(columns), processing_class=tokenizer
    )
    ds = trainer.train_dataset
    return [list(x) for x in ds["input_ids"]], [list(x) for x in ds["labels"]]


def frame_pr() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "prompt": [r[0] for r in ROWS],
            "response": [r[1] for r in ROWS],
            "system": [r[2] for r in ROWS],
            "source_row": [2, 3, 4, 5],
        }
    )


def test_prompt_response_matches_trl_completion_only(tiny, tokenizer):
    columns = prepare.to_columns(frame_pr(), "prompt_response", system_prompt="You are kind.")
    ids, labels, how = prepare.tokenize(columns, tokenizer)
    ids, labels, cut, dropped = prepare.truncate(ids, labels, 64)
    assert (ids, labels) == trl_prepared(tiny, tokenizer, columns, completion_only_loss=True)
    assert "completion" in how
    # The loss covers exactly the response and the end-of-turn: decode what is trained.
    trained = tokenizer.decode([t for t, lab in zip(ids[0], labels[0], strict=True) if lab != -100])
    assert trained == "The capital of France is Paris.<|end|>\n"
    # The row's own system prompt wins; rows without one get the run's.
    assert "You are kind." in tokenizer.decode(ids[0]) and "Be brief." in tokenizer.decode(ids[1])


def test_chat_trains_on_every_assistant_turn_like_trl_assistant_only_loss(tiny, tokenizer):
    convs = [
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Goodbye."},
        ],
        [
            {"role": "system", "content": "Short."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
        ],
    ]
    frame = pd.DataFrame({"messages": [json.dumps(c) for c in convs], "source_row": [2, 3]})
    columns = prepare.to_columns(frame, "chat")
    template, how = prepare.mask_template(tokenizer)
    assert template == tinymodel.TRAINING_CHAT_TEMPLATE and "tiny" in how
    ids, labels, _ = prepare.tokenize(columns, tokenizer, template=template)

    marked = tokenizer  # TRL reads the markers from the tokenizer's own template
    original = marked.chat_template
    marked.chat_template = tinymodel.TRAINING_CHAT_TEMPLATE
    try:
        assert (ids, labels) == trl_prepared(tiny, marked, columns, assistant_only_loss=True)
    finally:
        marked.chat_template = original
    trained = tokenizer.decode([t for t, lab in zip(ids[0], labels[0], strict=True) if lab != -100])
    assert trained == "Hello.<|end|>\nGoodbye.<|end|>\n"  # both replies, nothing the user said

    # A template without markers: each assistant turn is found by rendering up to it; same labels.
    ids2, labels2, how2 = prepare.tokenize(columns, tokenizer, template=None)
    assert (ids2, labels2) == (ids, labels) and "rendered" in how2


def test_training_template_renders_exactly_like_the_chat_template(tokenizer):
    conv = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U"},
        {"role": "assistant", "content": "A"},
    ]
    for gen in (False, True):
        plain = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
        marked = tokenizer.apply_chat_template(
            conv, tokenize=False, add_generation_prompt=gen, chat_template=tinymodel.TRAINING_CHAT_TEMPLATE
        )
        assert plain == marked


def test_text_trains_on_everything_with_eos_like_trl(tiny, tokenizer):
    frame = pd.DataFrame(
        {"text": ["The weather is sunny.", "Send the report by Friday."], "source_row": [2, 3]}
    )
    columns = prepare.to_columns(frame, "text")
    ids, labels, _ = prepare.tokenize(columns, tokenizer)
    assert (ids, labels) == trl_prepared(tiny, tokenizer, columns)
    assert all(i[-1] == tokenizer.eos_token_id for i in ids)


def test_truncation_keeps_the_start_and_drops_examples_left_without_a_response():
    ids = [[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], [7, 8]]
    labels = [[-100, -100, 3, 4, 5, 6], [-100, -100, -100, -100, 5, 6], [-100, 8]]
    out_ids, out_labels, cut, dropped = prepare.truncate(ids, labels, 4)
    assert out_ids == [[1, 2, 3, 4], [7, 8]]
    assert out_labels == [[-100, -100, 3, 4], [-100, 8]]
    assert (cut, dropped) == (2, 1)


def test_padding_waste_is_zero_for_flat_lengths_and_large_for_skewed_ones():
    assert prepare.padding_waste([50] * 64, 8) == 0.0
    skewed = [20] * 60 + [500] * 4
    assert prepare.padding_waste(skewed, 8) > 0.5
    assert prepare.padding_waste(skewed, 1) == 0.0


def test_prepared_dataset_is_cached_per_dataset_tokenizer_and_max_length(
    tmp_path, tokenizer, tiny_model_build, monkeypatch
):
    folder = tmp_path / "ds-1"
    folder.mkdir()
    frame = frame_pr()
    frame["split"] = ["train", "train", "train", "validation"]
    path = folder / "data.parquet"
    frame.to_parquet(path)
    tok_file = str(tiny_model_build / "tokenizer.json")

    first = prepare.prepare(str(path), "prompt_response", tokenizer, max_length=64, tokenizer_file=tok_file)
    assert not first.stats.cache_hit
    assert (first.stats.n_train, first.stats.n_eval) == (3, 1)  # the validation row is held out
    assert len(first.train) == 3 and len(first.eval) == 1
    assert first.cache_dir.parent == folder / "cache"
    with monkeypatch.context() as m:  # a cache hit does not tokenize again (checked, not timed)
        m.setattr(prepare, "tokenize", lambda *a, **k: pytest.fail("tokenized again despite the cache"))
        second = prepare.prepare(
            str(path), "prompt_response", tokenizer, max_length=64, tokenizer_file=tok_file
        )
    assert second.stats.cache_hit and second.cache_dir == first.cache_dir
    assert second.train["input_ids"] == first.train["input_ids"]
    assert second.train["labels"] == first.train["labels"]
    # Another max_length or system prompt is another cache entry.
    other = prepare.prepare(str(path), "prompt_response", tokenizer, max_length=32, tokenizer_file=tok_file)
    assert not other.stats.cache_hit and other.cache_dir != first.cache_dir
    assert not prepare.prepare(
        str(path), "prompt_response", tokenizer, max_length=64, system_prompt="x", tokenizer_file=tok_file
    ).stats.cache_hit


def test_old_datasets_without_a_split_column_train_on_everything_and_skip_eval(tmp_path, tokenizer):
    path = tmp_path / "data.parquet"
    frame_pr().to_parquet(path)
    prepared = prepare.prepare(str(path), "prompt_response", tokenizer, max_length=64)
    assert prepared.stats.n_train == 4 and prepared.eval is None


def test_a_max_length_that_would_cut_off_whole_responses_is_refused_with_the_row(tmp_path, tokenizer):
    from backend.training.recipe import RunFailed

    path = tmp_path / "data.parquet"
    frame = frame_pr()
    frame.loc[2, "prompt"] = "Please count slowly and carefully from one to three for me, " * 3
    frame.to_parquet(path)
    with pytest.raises(
        RunFailed,
        match=r"max_length = 24 is shorter than the longest prompt \(\d+ tokens, row 4 of "
        r"the file\), so its response would be cut off entirely. Fix: set max_length",
    ):
        prepare.prepare(str(path), "prompt_response", tokenizer, max_length=24)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing half-built


def test_a_dataset_with_nothing_left_to_learn_is_refused(tmp_path, tokenizer):
    from backend.training.recipe import RunFailed

    path = tmp_path / "data.parquet"
    long_turn = [
        {"role": "user", "content": "Tell me about the weather in the morning. " * 4},
        {"role": "assistant", "content": "Sunny."},
    ]
    pd.DataFrame({"messages": [json.dumps(long_turn)] * 2, "source_row": [2, 3]}).to_parquet(path)
    with pytest.raises(
        RunFailed, match="no training example has any response tokens left within max_length = 16"
    ):
        prepare.prepare(str(path), "chat", tokenizer, max_length=16)
