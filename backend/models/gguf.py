"""A ``.gguf`` file (what llama.cpp, Ollama and LM Studio keep on disk) → a plain model folder TuneDeck can train.

``inspect`` reads only the file's header with the ``gguf`` package (llama.cpp's own reader; numpy, no torch), so the
web UI and the job manager can check a file before any work: is it a GGUF at all, is it whole, does transformers
know its architecture, how big is the model, will converting it fit in this machine's memory. It refuses with a
message that names the file and what to do.

``convert`` (torch; worker and model-server processes) de-quantizes the file with transformers' own GGUF loader
(``from_pretrained(..., gguf_file=...)``), which also rebuilds the tokenizer and chat template from the file. Such
a model refuses ``save_pretrained`` ("quantized with gguf and is not serializable"); its state dict loaded into a
plain model of the same config saves as ordinary safetensors, and every later use loads that copy in well under a
second. The copy is written into a temporary folder beside the target and renamed into place only when complete,
under a lock, so a crash or a second process never leaves or sees a half-made model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.errors import TuneDeckError

log = logging.getLogger(__name__)

MAGIC = b"GGUF"
MANIFEST = "TUNEDECK.json"
# Architectures that transformers' GGUF loader knows but that are not decoder-only chat models we can fine-tune.
NOT_CAUSAL = frozenset({"t5", "umt5"})
# De-quantized weights are kept in fp32 up to this many parameters (exact for every GGUF quant type; CPU training
# wants fp32 anyway); bigger models are kept in bf16 to halve the copy's size and the memory to make it.
FP32_UP_TO_PARAMS = 2_000_000_000
# Converting holds the file's tensors de-quantized to fp32 (numpy) and the model's own copy at once, on top of the
# process itself (torch and transformers: ~0.6 GB). Measured for SmolLM2-135M in fp32: 1.48 GB peak RSS.
CONVERT_OVERHEAD = 1.1
PROCESS_BYTES = int(0.6 * 2**30)

Progress = Callable[[str], None]


class GgufError(TuneDeckError, ValueError):
    """A GGUF file TuneDeck cannot use; the message names the file, the problem and what to do."""


@dataclass(frozen=True)
class GgufInfo:
    path: str
    size_bytes: int
    architecture: str
    name: str
    params: int
    config: dict[str, Any]  # the shape in config.json's words (for the estimate), before any conversion
    has_chat_template: bool
    file_type: str

    @property
    def keep_dtype(self) -> str:
        return "float32" if self.params <= FP32_UP_TO_PARAMS else "bfloat16"

    @property
    def convert_bytes(self) -> int:
        """Memory the conversion needs at its peak: fp32 de-quantized tensors and the kept copy at once."""
        per_param = 4 if self.keep_dtype == "float32" else 2
        return int(self.params * (4 + per_param) * CONVERT_OVERHEAD) + PROCESS_BYTES


def supported_architectures() -> list[str]:
    """The GGUF architectures transformers can load as a causal LM (its own table; importing it needs no torch)."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    return sorted(a for a in GGUF_CONFIG_MAPPING if a not in ("general", "tokenizer") and a not in NOT_CAUSAL)


def _field(reader: Any, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return default
    try:
        return f.contents()
    except (ValueError, IndexError, TypeError):
        return default


def inspect(path: str | Path) -> GgufInfo:
    """Check a GGUF file without loading it (a few seconds for the token table); raise GgufError if unusable."""
    path = Path(path).expanduser()
    shown = path.name
    if not path.is_file():
        raise GgufError(f"The model file {path} does not exist. Fix: check the path.")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
    if head != MAGIC:
        raise GgufError(
            f"{shown} is not a GGUF file (it does not start with 'GGUF'). Fix: give a .gguf model file as "
            "llama.cpp, Ollama or LM Studio store them, or a folder that holds config.json."
        )
    try:
        import gguf
    except ImportError:
        raise GgufError(
            "Reading .gguf files needs the gguf package. Fix: pip install gguf (make setup installs it)."
        ) from None
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, IndexError, OSError, KeyError, TypeError) as exc:
        raise GgufError(
            f"{shown} is damaged or incomplete: its header cannot be read ({type(exc).__name__}: "
            f"{str(exc)[:120]}). Fix: download or copy the file again."
        ) from None
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if not reader.tensors or end > size:
        raise GgufError(
            f"{shown} is incomplete: its tensors need {end:,} bytes but the file has {size:,}. "
            "Fix: download or copy the file again (a copy may have been cut short)."
        )
    arch = str(_field(reader, "general.architecture", "") or "")
    known = supported_architectures()
    if arch not in known:
        raise GgufError(
            f"{shown} holds a {arch or 'model of unknown architecture'!s} model, which transformers' GGUF "
            f"loader cannot turn into a trainable model. Fix: use a model of one of these architectures: "
            f"{', '.join(known)}; or its original folder from the Hugging Face Hub."
        )

    def a(key: str, default: Any = None) -> Any:
        return _field(reader, f"{arch}.{key}", default)

    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = int(a("vocab_size", 0) or (len(tokens.data) if tokens is not None else 0))
    hidden = int(a("embedding_length", 0))
    heads = int(a("attention.head_count", 0) or 0)
    names = {t.name for t in reader.tensors}
    config = {
        "hidden_size": hidden,
        "num_hidden_layers": int(a("block_count", 0)),
        "num_attention_heads": heads,
        "num_key_value_heads": int(a("attention.head_count_kv", heads) or heads),
        "intermediate_size": int(a("feed_forward_length", 4 * hidden) or 4 * hidden),
        "vocab_size": vocab,
        "tie_word_embeddings": "output.weight" not in names,
        "max_position_embeddings": int(a("context_length", 0) or 0),
        "model_type": arch,
    }
    head_dim = a("attention.key_length") or a("rope.dimension_count")
    if head_dim and heads and int(head_dim) != hidden // heads:
        config["head_dim"] = int(head_dim)
    params = sum(int(t.n_elements) for t in reader.tensors)
    file_type = _field(reader, "general.file_type")
    try:
        ft = gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_") if file_type is not None else ""
    except ValueError:
        ft = str(file_type)
    return GgufInfo(
        path=str(path.resolve()),
        size_bytes=size,
        architecture=arch,
        name=str(_field(reader, "general.name", "") or path.stem),
        params=params,
        config=config,
        has_chat_template=bool(_field(reader, "tokenizer.chat_template")),
        file_type=ft,
    )


def available_memory_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def check_memory(info: GgufInfo, available: int | None = None) -> None:
    """Refuse, before any work, a conversion this machine's memory cannot hold."""
    free = available_memory_bytes() if available is None else available
    if info.convert_bytes > free:
        raise GgufError(
            f"{Path(info.path).name} is a {info.params / 1e9:.1f}B-parameter model: making a trainable copy needs "
            f"about {info.convert_bytes / 2**30:.1f} GB of memory, and this machine has {free / 2**30:.1f} GB "
            "free. Fix: use a smaller model, or close other programs; on a GPU machine use the model's Hub id "
            "with method qlora."
        )


def sha256_of(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(folder: str | Path) -> dict[str, Any]:
    try:
        return json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def convert(
    source: str | Path,
    target: str | Path,
    *,
    expected_sha256: str | None = None,
    upstream: str = "",
    note: str = "",
    progress: Progress | None = None,
) -> Path:
    """Make ``target`` a plain model folder (safetensors, tokenizer, chat template) from the GGUF ``source``, once.

    Later calls (from any process) return at once. ``expected_sha256``: refuse a file whose checksum differs (the
    packaged starter model). ``upstream``: the Hub id the weights come from, recorded in the copy's manifest."""
    import fcntl

    target = Path(target)
    if (target / "config.json").is_file():
        return target
    say = progress or (lambda text: log.info("%s", text))
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits here, then finds the copy made
        if (target / "config.json").is_file():
            return target
        for stale in target.parent.glob(f".{target.name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a process killed mid-way (we hold the lock)
        info = inspect(source)
        check_memory(info)
        t0 = time.monotonic()
        digest = sha256_of(source)
        if expected_sha256 and digest != expected_sha256:
            raise GgufError(
                f"{Path(source).name} is not the file TuneDeck expects (sha256 {digest[:16]}…, expected "
                f"{expected_sha256[:16]}…): it may be damaged or replaced. Fix: reinstall the package that "
                "ships it (see the README)."
            )
        say(
            f"Making a trainable copy of {info.name} from {Path(source).name} "
            f"({info.params / 1e6:.0f}M parameters, {info.file_type or 'GGUF'}); this happens once…"
        )
        tmp = target.parent / f".{target.name}.partial-{os.getpid()}"
        try:
            _convert_into(info, tmp)
            manifest = {
                "what": "converted from GGUF",
                "source": info.path,
                "source_sha256": digest,
                "source_file_type": info.file_type,
                "architecture": info.architecture,
                "name": info.name,
                "upstream": upstream,
                "params": info.params,
                "dtype": info.keep_dtype,
                "note": note,
                "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        say(f"Trainable copy ready in {time.monotonic() - t0:.0f} s: {target}")
    return target


def _convert_into(info: GgufInfo, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(Path(info.path).parent), Path(info.path).name
    dtype = getattr(torch, info.keep_dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    except (ValueError, KeyError, NotImplementedError, RuntimeError) as exc:
        raise GgufError(
            f"transformers could not load {name} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
            "Fix: use a GGUF of a common architecture and quantization (e.g. Q8_0, Q4_K_M), or the model's "
            "original folder."
        ) from None
    # A GGUF-loaded model refuses save_pretrained: it is marked as quantized, although its weights are plain
    # de-quantized tensors by now. Unmarking it saves those same tensors as ordinary safetensors, with no second
    # copy in memory (a fresh model loaded with its state dict would need twice the memory; tests/test_gguf.py
    # checks that the saved weights equal the loaded ones).
    loaded.hf_quantizer = None
    loaded.is_quantized = False
    loaded.quantization_method = None
    if hasattr(loaded.config, "quantization_config"):
        del loaded.config.quantization_config
    out.mkdir(parents=True)
    loaded.save_pretrained(out)
    tokenizer.save_pretrained(out)
