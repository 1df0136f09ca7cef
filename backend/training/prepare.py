"""A dataset version → token ids and loss labels, ready for the trainer, cached next to the dataset.

TRL's SFTTrainer tokenizes the whole dataset, one example at a time, before the first step. We do the same work in
batches (the chat template rendered per row, the tokenizer run on all rows at once in Rust) and keep the result
under ``datasets/<id>/cache/tok-<key>/``, keyed by everything that changes the tokens: the dataset file, its shape,
the tokenizer, the chat template, the system prompt and max_length. A second job on the same dataset and model
loads it memory-mapped at once. The labels follow TRL's rules exactly (``tests/test_prepare.py`` compares them):

- ``prompt_response``: TRL's conversational prompt/completion; loss on the completion only (from where the
  tokenized prompt and prompt + completion stop agreeing);
- ``chat``: a ``messages`` conversation; loss on the assistant turns only, through the chat template's
  ``{% generation %}`` markers (TRL's ``assistant_only_loss``). For a template without them we use TRL's training
  version of it when TRL ships one, else we find each assistant turn by rendering the conversation up to it;
- ``text``: plain text with the end-of-sequence token appended; loss on every token.

Examples longer than max_length are cut (keep the start), and examples left with no loss tokens are dropped and
counted. Rows whose ``split`` is ``validation`` become the evaluation set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backend.data.chatformat import common_prefix

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when the tokenization below changes (2: a "length" column)


@dataclass
class Stats:
    n_train: int = 0
    n_eval: int = 0
    train_tokens: int = 0  # real tokens, prompt and response, after truncation
    loss_tokens: int = 0
    longest: int = 0
    truncated: int = 0
    dropped_no_loss: int = 0
    padding_waste: float = 0.0  # share of a padded batch that would be padding (random batches of batch_size)
    mask_method: str = ""
    seconds: float = 0.0
    cache_hit: bool = False
    lengths_sample: list[int] = field(default_factory=list)


# -- rows → TRL columns --------------------------------------------------------------------------------------------


def to_columns(frame: Any, shape: str, system_prompt: str = "") -> dict[str, list]:
    """Our stored rows → TRL's dataset columns (the data module owns the shapes)."""
    from backend.data.shapes import to_trl_columns

    return to_trl_columns(frame, shape, system_prompt=system_prompt)


def split_frame(frame: Any) -> tuple[Any, Any | None]:
    """(train rows, validation rows or None). Without a ``split`` column everything trains and nothing is evaluated."""
    if "split" not in frame.columns:
        return frame, None
    is_eval = frame["split"].astype(str).str.lower().eq("validation")
    evaluation = frame[is_eval]
    return frame[~is_eval], (evaluation if len(evaluation) else None)


# -- the chat template used for masks ------------------------------------------------------------------------------


def mask_template(tokenizer: Any) -> tuple[str | None, str]:
    """(a template with ``{% generation %}`` markers, how it was found); (None, ...) when there is none."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    from backend.models import tiny as tinymodel

    template = tokenizer.chat_template
    if template == tinymodel.CHAT_TEMPLATE:
        return tinymodel.TRAINING_CHAT_TEMPLATE, "tiny-offline training template"
    if isinstance(template, str) and has_generation_markers(template):
        return template, "the model's template ({% generation %} markers)"
    try:
        patched = get_training_chat_template(tokenizer)
    except (ValueError, TypeError):
        return None, "assistant turns found by rendering each conversation up to them"
    return (patched or template), "TRL's training version of the model's template"


# -- tokenizing ----------------------------------------------------------------------------------------------------


def _encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def tokenize(
    columns: dict[str, list], tokenizer: Any, *, template: str | None = None
) -> tuple[list, list, str]:
    """Columns in TRL's format → (input_ids, labels with -100 where there is no loss, how masks were made)."""
    if "prompt" in columns:
        prompts = [list(p) for p in columns["prompt"]]
        fulls = [p + list(c) for p, c in zip(prompts, columns["completion"], strict=True)]
        prompt_text = tokenizer.apply_chat_template(prompts, tokenize=False, add_generation_prompt=True)
        full_text = tokenizer.apply_chat_template(fulls, tokenize=False)
        ids_p, ids = _encode(tokenizer, prompt_text), _encode(tokenizer, full_text)
        labels = []
        for p, f in zip(ids_p, ids, strict=True):
            k = common_prefix(p, f)
            labels.append([-100] * k + f[k:])
        return ids, labels, "completion only (prompt/completion)"
    if "messages" in columns:
        convs = [list(m) for m in columns["messages"]]
        if template is not None:
            out = tokenizer.apply_chat_template(
                convs,
                tokenize=True,
                return_dict=True,
                chat_template=template,
                return_assistant_tokens_mask=True,
            )
            ids, masks = out["input_ids"], out["assistant_masks"]
            labels = [
                [t if m else -100 for t, m in zip(i, mk, strict=True)]
                for i, mk in zip(ids, masks, strict=True)
            ]
            return ids, labels, "assistant turns ({% generation %} markers)"
        return (*_assistant_by_prefix(convs, tokenizer), "assistant turns (rendered up to each turn)")
    texts = [
        t + tokenizer.eos_token if tokenizer.eos_token and not t.endswith(tokenizer.eos_token) else t
        for t in columns["text"]
    ]
    ids = _encode(tokenizer, texts)
    return ids, [list(i) for i in ids], "every token (plain text)"


def _assistant_by_prefix(convs: list[list[dict]], tokenizer: Any) -> tuple[list, list]:
    """Loss on each assistant turn: the tokens between the conversation rendered up to the turn (with the generation
    prompt) and rendered through it. Works for any template that renders earlier turns the same way."""
    full_text = tokenizer.apply_chat_template(convs, tokenize=False)
    ids = _encode(tokenizer, full_text)
    labels = [[-100] * len(i) for i in ids]
    for n, conv in enumerate(convs):
        for j, message in enumerate(conv):
            if message.get("role") != "assistant":
                continue
            before = _encode(
                tokenizer,
                [tokenizer.apply_chat_template(conv[:j], tokenize=False, add_generation_prompt=True)],
            )[0]
            through = _encode(tokenizer, [tokenizer.apply_chat_template(conv[: j + 1], tokenize=False)])[0]
            start = common_prefix(before, ids[n])
            end = common_prefix(through, ids[n])
            labels[n][start:end] = ids[n][start:end]
    return ids, labels


def truncate(ids: list[list[int]], labels: list[list[int]], max_length: int) -> tuple[list, list, int, int]:
    """Keep the start of each example; drop examples with no loss tokens left. (ids, labels, truncated, dropped)."""
    out_ids, out_labels, cut, dropped = [], [], 0, 0
    for i, lab in zip(ids, labels, strict=True):
        if len(i) > max_length:
            cut += 1
            i, lab = i[:max_length], lab[:max_length]
        if all(x == -100 for x in lab):  # as TRL: an example with nothing to learn is dropped
            dropped += 1
            continue
        out_ids.append(i)
        out_labels.append(lab)
    return out_ids, out_labels, cut, dropped


def padding_waste(lengths: list[int], batch_size: int, seed: int = 0) -> float:
    """Share of a padded batch that is padding, for random batches of ``batch_size`` (what padding would cost)."""
    if batch_size <= 1 or len(lengths) < 2:
        return 0.0
    rng = random.Random(seed)
    order = list(lengths)
    rng.shuffle(order)
    real = padded = 0
    for i in range(0, len(order), batch_size):
        batch = order[i : i + batch_size]
        real += sum(batch)
        padded += max(batch) * len(batch)
    return 1 - real / padded if padded else 0.0


# -- the cache -----------------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    train: Any  # datasets.Dataset with input_ids, labels
    eval: Any | None
    stats: Stats
    cache_dir: Path


def cache_key(
    dataset_path: str,
    shape: str,
    system_prompt: str,
    max_length: int,
    tokenizer_fingerprint: str,
    template: str | None,
) -> str:
    st = os.stat(dataset_path)
    material = json.dumps(
        {
            "v": CACHE_VERSION,
            "file": os.path.realpath(dataset_path),
            "size": st.st_size,
            "mtime": st.st_mtime_ns,
            "shape": shape,
            "system": system_prompt,
            "max_length": max_length,
            "tokenizer": tokenizer_fingerprint,
            "template": template or "",
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:20]


def tokenizer_fingerprint(tokenizer: Any, tokenizer_file: str | None) -> str:
    """Identifies the vocabulary and its merges: the tokenizer.json's hash when we have the file."""
    h = hashlib.sha256()
    if tokenizer_file and Path(tokenizer_file).is_file():
        with open(tokenizer_file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    else:
        h.update(
            tokenizer.backend_tokenizer.to_str().encode() if hasattr(tokenizer, "backend_tokenizer") else b""
        )
    h.update(
        json.dumps(
            [
                str(tokenizer.chat_template),
                tokenizer.eos_token,
                tokenizer.bos_token,
                tokenizer.pad_token,
                len(tokenizer),
            ]
        ).encode()
    )
    return h.hexdigest()[:20]


def prepare(
    dataset_path: str,
    shape: str,
    tokenizer: Any,
    *,
    max_length: int,
    system_prompt: str = "",
    batch_size: int = 1,
    tokenizer_file: str | None = None,
) -> Prepared:
    """Load the tokenized dataset from the cache, or build it there (atomically) and load it.

    Raises RunFailed when max_length would cut off a whole response (the longest prompt does not fit): the person
    should choose, rather than lose those examples unseen. A cached version passed that check already."""
    from datasets import load_from_disk

    t0 = time.monotonic()
    template = mask_template(tokenizer)[0] if shape == "chat" else None
    key = cache_key(
        dataset_path,
        shape,
        system_prompt,
        max_length,
        tokenizer_fingerprint(tokenizer, tokenizer_file),
        template,
    )
    cache_dir = Path(dataset_path).parent / "cache" / f"tok-{key}"
    if not (cache_dir / "stats.json").is_file():
        _build(
            dataset_path,
            shape,
            tokenizer,
            cache_dir,
            max_length=max_length,
            system_prompt=system_prompt,
            template=template,
        )
        hit = False
    else:
        hit = True
    stats = Stats(**json.loads((cache_dir / "stats.json").read_text()))
    train = load_from_disk(str(cache_dir / "train"))
    evaluation = load_from_disk(str(cache_dir / "eval")) if (cache_dir / "eval").is_dir() else None
    stats.padding_waste = padding_waste(stats.lengths_sample, batch_size)
    stats.cache_hit = hit
    stats.seconds = round(time.monotonic() - t0, 3)
    return Prepared(train, evaluation, stats, cache_dir)


def _build(
    dataset_path: str,
    shape: str,
    tokenizer: Any,
    cache_dir: Path,
    *,
    max_length: int,
    system_prompt: str,
    template: str | None,
) -> None:
    import pandas as pd
    from datasets import Dataset

    frame = pd.read_parquet(dataset_path)
    train_rows, eval_rows = split_frame(frame)
    stats = Stats()
    parts: dict[str, Any] = {}
    for name, rows in (("train", train_rows), ("eval", eval_rows)):
        if rows is None or len(rows) == 0:
            continue
        ids, labels, how = tokenize(to_columns(rows, shape, system_prompt), tokenizer, template=template)
        if shape == "prompt_response":
            _check_prompt_lengths(labels, rows, max_length)
        ids, labels, cut, dropped = truncate(ids, labels, max_length)
        if name == "train":
            lengths = [len(i) for i in ids]
            stats.n_train, stats.truncated, stats.dropped_no_loss, stats.mask_method = (
                len(ids),
                cut,
                dropped,
                how,
            )
            stats.train_tokens = sum(lengths)
            stats.loss_tokens = sum(sum(1 for x in lab[1:] if x != -100) for lab in labels)
            stats.longest = max(lengths, default=0)
            stats.lengths_sample = random.Random(0).sample(lengths, min(len(lengths), 4096))
        else:
            stats.n_eval = len(ids)
        if ids:  # "length": for batches grouped by length, without reading every example at the first step
            parts[name] = Dataset.from_dict(
                {"input_ids": ids, "labels": labels, "length": [len(i) for i in ids]}
            )
    if "train" not in parts:
        from backend.errors import RunFailed

        raise RunFailed(
            f"no training example has any response tokens left within max_length = {max_length}. "
            "Fix: raise max_length, or check that the responses are not empty."
        )
    tmp = cache_dir.parent / f".{cache_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name, ds in parts.items():
            ds.save_to_disk(str(tmp / name))
        (tmp / "stats.json").write_text(json.dumps(asdict(stats)))
        try:
            os.replace(tmp, cache_dir)
        except OSError:  # another job built the same cache meanwhile: theirs is as good as ours
            if not (cache_dir / "stats.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_prompt_lengths(labels: list[list[int]], rows: Any, max_length: int) -> None:
    """The prompt is what comes before the first trained token; it must leave room for the response."""
    prompt_lengths = [next((i for i, x in enumerate(lab) if x != -100), len(lab)) for lab in labels]
    longest = max(prompt_lengths, default=0)
    if longest < max_length:
        return
    from backend.errors import RunFailed
    from backend.jobs.config import max_length_for

    i = prompt_lengths.index(longest)
    row = int(rows["source_row"].iloc[i]) if "source_row" in rows else i + 1
    raise RunFailed(
        f"max_length = {max_length} is shorter than the longest prompt ({longest} tokens, row {row} of the file), "
        f"so its response would be cut off entirely. Fix: set max_length to at least {max_length_for(longest)}, or "
        "shorten that prompt."
    )


def pack(dataset: Any, max_length: int) -> Any:
    """Best-fit-decreasing packing into rows of at most max_length tokens (TRL's), keeping each example whole;
    ``seq_lengths`` lets the collator restart positions so packed examples never attend to each other."""
    from trl.data_utils import pack_dataset

    if "length" in dataset.column_names:
        dataset = dataset.remove_columns("length")
    return pack_dataset(dataset, max_length, "bfd", {})
