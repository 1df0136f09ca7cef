"""Token statistics of a dataset version with a given model's tokenizer, cached per version and tokenizer.

``token_report(record, fmt)`` measures every example as the model will see it (``ChatFormat.encode_rows``): the
histogram of lengths, tokens per epoch (all and loss-bearing), how many rows are over a max length. Big datasets
are measured on a seeded sample of ``SAMPLE_LIMIT`` rows and scaled (the report says so). Measurements are kept in
``datasets/<id>/cache/`` keyed by the tokenizer's fingerprint, so asking again is instant, and deleting the
dataset deletes them. (The training engine keeps its tokenized copy in the same folder: ``backend.training.prepare``.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backend.core.store import DatasetRecord
from backend.data.chatformat import ChatFormat

SAMPLE_LIMIT = 10_000
BATCH = 2_000


@dataclass
class TokenReport:
    model: str
    rows: int  # rows in the dataset version
    measured: int  # rows measured (all, or a sample)
    sampled: bool
    mean: float
    median: float
    p95: float
    longest: int
    longest_row: int  # source_row of the longest example
    train_rows: int
    validation_rows: int
    tokens_per_epoch: int  # training rows; estimated when sampled; capped at max_length when given
    trained_tokens_per_epoch: int  # the loss-bearing part of those
    validation_tokens: int
    max_length: int | None
    over_max_length: int  # rows longer than max_length (estimated when sampled)
    histogram: list[dict[str, Any]]  # [{"tokens": "0-63", "rows": n, "from": 0, "to": 63}]
    validation_trained_tokens: int = 0  # the loss-bearing part of the validation tokens (reference answers)
    train_longest: int = 0  # the longest training example, capped at max_length (what a micro-batch can hold)
    longest_prompt: int = 0  # the most tokens before a training example's first trained token
    longest_prompt_row: int = 0  # its source_row

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        about = "about " if self.sampled else ""
        parts = [
            f"{self.model}: {about}{self.tokens_per_epoch:,} tokens per epoch over {self.train_rows:,} training rows "
            f"({about}{self.trained_tokens_per_epoch:,} of them trained)",
            f"median length {self.median:.0f} tokens, longest {self.longest:,} (row {self.longest_row})",
        ]
        if self.validation_rows:
            parts.append(
                f"validation: {self.validation_rows:,} rows, {about}{self.validation_tokens:,} tokens"
            )
        if self.max_length:
            parts.append(f"{about}{self.over_max_length:,} rows longer than max length {self.max_length:,}")
        if self.sampled:
            parts.append(f"measured on a random sample of {self.measured:,} rows")
        return "; ".join(parts) + "."


def cache_dir(record: DatasetRecord) -> Path:
    return Path(record.path).parent / "cache"


LENGTHS_VERSION = 3  # 2: the rows of a separate validation file are measured too; 3: prompt lengths kept


def _key(fmt: ChatFormat, system_prompt: str) -> str:
    return f"{fmt.fingerprint}-v{LENGTHS_VERSION}-{hashlib.sha256(system_prompt.encode()).hexdigest()[:8]}"


def save_lengths(
    record: DatasetRecord,
    fmt: ChatFormat,
    system_prompt: str,
    total: np.ndarray,
    trained: np.ndarray,
    prompt: np.ndarray,
) -> None:
    """Keep lengths measured during an import (of every row, in file order)."""
    folder = cache_dir(record)
    folder.mkdir(exist_ok=True)
    target = folder / f"lengths-{_key(fmt, system_prompt)}.npz"
    tmp = target.with_name(target.name + ".tmp.npz")
    np.savez(tmp, index=np.arange(len(total)), total=total, trained=trained, prompt=prompt)
    tmp.replace(target)


def _measure(
    record: DatasetRecord,
    fmt: ChatFormat,
    system_prompt: str,
    sample_limit: int,
    progress: Callable[[float], None] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row index, tokens, trained tokens, tokens before the first trained one) of every row, or a sample."""
    folder = cache_dir(record)
    target = folder / f"lengths-{_key(fmt, system_prompt)}.npz"
    if target.is_file():
        with np.load(target) as z:
            return z["index"], z["total"], z["trained"], z["prompt"]
    import pyarrow.parquet as pq

    shape = record.info.get("shape", "prompt_response")
    # Every stored row, the validation file's included (record.n_rows counts the rows kept from the main file).
    n = pq.ParquetFile(record.path).metadata.num_rows
    index = np.arange(n)
    if n > sample_limit:
        index = np.sort(np.random.default_rng(0).choice(n, sample_limit, replace=False))
    frame = _rows(record, index)
    total = np.zeros(len(frame), dtype=np.int32)
    trained = np.zeros(len(frame), dtype=np.int32)
    prompt = np.zeros(len(frame), dtype=np.int32)
    records = frame.to_dict("records")
    for start in range(0, len(records), BATCH):
        encoded = fmt.encode_rows(shape, records[start : start + BATCH], system_prompt)
        total[start : start + len(encoded)] = [e.n_tokens for e in encoded]
        trained[start : start + len(encoded)] = [e.n_trained for e in encoded]
        prompt[start : start + len(encoded)] = [e.n_prompt for e in encoded]
        if progress:
            progress(min(1.0, (start + BATCH) / max(len(records), 1)))
    folder.mkdir(exist_ok=True)
    tmp = target.with_name(target.name + ".tmp.npz")
    np.savez(tmp, index=index, total=total, trained=trained, prompt=prompt)
    tmp.replace(target)
    return index, total, trained, prompt


def _rows(record: DatasetRecord, index: np.ndarray) -> pd.DataFrame:
    """The rows at ``index`` (sorted), read one batch at a time: a 1M-row dataset is never loaded whole."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    picked, start = [], 0
    for rb in pq.ParquetFile(record.path).iter_batches(batch_size=50_000):
        lo, hi = np.searchsorted(index, [start, start + rb.num_rows])
        if hi > lo:
            picked.append(rb.take(pa.array(index[lo:hi] - start)))
        start += rb.num_rows
    if not picked:
        return pd.DataFrame()
    return pa.Table.from_batches(picked).to_pandas()


def token_report(
    record: DatasetRecord,
    fmt: ChatFormat,
    *,
    system_prompt: str = "",
    max_length: int | None = None,
    sample_limit: int = SAMPLE_LIMIT,
    bins: int = 12,
    progress: Callable[[float], None] | None = None,
) -> TokenReport:
    index, total, trained, prompt = _measure(record, fmt, system_prompt, sample_limit, progress)
    meta = pd.read_parquet(record.path, columns=["source_row", "split"])
    split = meta["split"].to_numpy()[index]
    source_rows = meta["source_row"].to_numpy()[index]
    is_train = split == "train"
    n_train = int((meta["split"] == "train").sum())
    n_val = len(meta) - n_train
    scale_train = n_train / max(int(is_train.sum()), 1)
    scale_val = n_val / max(int((~is_train).sum()), 1)
    capped = np.minimum(total, max_length) if max_length else total
    # Cutting at max_length keeps the start: the trained tokens cut off are the ones past max_length.
    trained_capped = np.maximum(trained - (total - capped), 0) if max_length else trained
    longest_i = int(np.argmax(total)) if len(total) else 0
    sampled = len(index) < len(meta)
    over = int(((total > max_length) if max_length else np.zeros(len(total), dtype=bool)).sum())
    return TokenReport(
        model=fmt.model,
        rows=len(meta),
        measured=len(index),
        sampled=sampled,
        mean=float(total.mean()) if len(total) else 0.0,
        median=float(np.median(total)) if len(total) else 0.0,
        p95=float(np.percentile(total, 95)) if len(total) else 0.0,
        longest=int(total.max()) if len(total) else 0,
        longest_row=int(source_rows[longest_i]) if len(total) else 0,
        train_rows=n_train,
        validation_rows=n_val,
        tokens_per_epoch=int(round(capped[is_train].sum() * scale_train)),
        trained_tokens_per_epoch=int(round(trained_capped[is_train].sum() * scale_train)),
        validation_tokens=int(round(capped[~is_train].sum() * scale_val)),
        max_length=max_length,
        over_max_length=int(round(over * len(meta) / max(len(index), 1))),
        histogram=histogram(total, bins),
        validation_trained_tokens=int(round(trained_capped[~is_train].sum() * scale_val)),
        train_longest=int(capped[is_train].max()) if is_train.any() else 0,
        longest_prompt=int(prompt[is_train].max()) if is_train.any() else 0,
        longest_prompt_row=int(source_rows[is_train][int(np.argmax(prompt[is_train]))])
        if is_train.any()
        else 0,
    )


def histogram(lengths: np.ndarray, bins: int = 12) -> list[dict[str, Any]]:
    """Counts of lengths in ``bins`` ranges of round width (e.g. 0-63, 64-127, ...)."""
    if len(lengths) == 0:
        return []
    top = int(lengths.max()) + 1
    width = _round_width((top - int(lengths.min())) / bins)
    start = int(lengths.min()) // width * width
    edges = np.arange(start, top + width, width)
    counts, _ = np.histogram(lengths, bins=edges)
    return [
        {
            "tokens": f"{int(lo)}-{int(lo + width - 1)}" if width > 1 else f"{int(lo)}",
            "rows": int(c),
            "from": int(lo),
            "to": int(lo + width - 1),
        }
        for lo, c in zip(edges[:-1], counts, strict=True)
    ]


def _round_width(raw: float) -> int:
    for w in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768):
        if raw <= w:
            return w
    return 65536
