"""Write a small Llama-architecture GGUF file from a Hugging Face model folder, for the conversion tests.

Test-only: it writes f32 tensors with llama.cpp's tensor names (from the ``gguf`` package's own name map) and its
rotary layout for q/k (llama.cpp permutes them; transformers' GGUF loader permutes them back), plus the tokenizer as
a GPT-2 style BPE vocabulary with merges and the chat template. Enough for tiny-offline; not a general exporter.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_llama_gguf(
    model_dir: Path, out: Path, *, arch: str = "llama", truncate_to: int | None = None
) -> Path:
    import gguf
    from safetensors.numpy import load_file

    cfg = json.loads((model_dir / "config.json").read_text())
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    tok_cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    template = (
        (model_dir / "chat_template.jinja").read_text()
        if (model_dir / "chat_template.jinja").is_file()
        else ""
    )
    n_head, n_kv, layers = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["num_hidden_layers"]

    w = gguf.GGUFWriter(str(out), arch)
    w.add_name("tiny test model")
    w.add_block_count(layers)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(cfg["hidden_size"] // n_head)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg.get("rope_parameters", {}).get("rope_theta", 10000.0))
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)

    vocab = tok["model"]["vocab"]
    added = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    tokens = [""] * cfg["vocab_size"]
    types = [gguf.TokenType.NORMAL] * cfg["vocab_size"]
    for text, i in {**vocab, **added}.items():
        tokens[i] = text
        if text in added:
            types[i] = gguf.TokenType.CONTROL
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    for key, add in (
        ("bos_token", w.add_bos_token_id),
        ("eos_token", w.add_eos_token_id),
        ("pad_token", w.add_pad_token_id),
    ):
        if tok_cfg.get(key) in added:
            add(added[tok_cfg[key]])
    if template:
        w.add_chat_template(template)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    for key, value in load_file(str(model_dir / "model.safetensors")).items():
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        assert name, key
        value = value.astype(np.float32)
        if key.endswith("q_proj.weight"):
            value = _permute(value, n_head)
        elif key.endswith("k_proj.weight"):
            value = _permute(value, n_kv)
        w.add_tensor(name, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if truncate_to is not None:
        with open(out, "r+b") as f:
            f.truncate(truncate_to)
    return out
