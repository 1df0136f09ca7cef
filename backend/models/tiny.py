"""Build ``tiny-offline``: a tiny Llama-architecture model with a BPE tokenizer and a chat template.

It is made on this machine, deterministically (same files every time), from a built-in corpus, so TuneDeck works
end to end with no network. Its weights are random: it learns the examples it is trained on and knows nothing else.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

SPECIALS = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# The same template with TRL's `{% generation %}` markers around what the assistant says (its end-of-turn token
# included), so that chat-shaped datasets can train on the assistant's turns only (`return_assistant_tokens_mask`).
# It renders exactly the same text as CHAT_TEMPLATE.
TRAINING_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "<|assistant|>\n{% generation %}{{ message['content'] }}<|end|>\n{% endgeneration %}"
    "{% else %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
VOCAB_SIZE = 2048
# The architecture, as config.json names it (read by backend.jobs.estimate before the model is built).
SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "vocab_size": VOCAB_SIZE,
    "tie_word_embeddings": True,
}
_CORPUS = """
The quick brown fox jumps over the lazy dog. What is the capital of France? The capital of France is Paris.
Question answer prompt response instruction input output system user assistant. Please write a short reply.
How are you today? I am fine, thank you. Can you help me with this task? Yes, here is how to do it.
Translate the sentence into English. Summarize the text in one line. Classify the review as positive or negative.
The weather is sunny and warm. The meeting starts at nine in the morning. Send the report by Friday.
One two three four five six seven eight nine ten hundred thousand million first second third last next.
Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May June July August
September October November December spring summer autumn winter north south east west city country river.
Thank you for your order. Your package will arrive soon. We are sorry for the delay. Please contact support.
def main(): return print("hello world") if x == 1 else None  # code, numbers 0 1 2 3 4 5 6 7 8 9 and symbols.
"""


def build(target: str | Path, shape: dict | None = None) -> Path:
    """Build the model into ``target`` once; later calls (from any process) reuse it.

    ``shape`` overrides SHAPE's sizes (the benchmarks use a wider one); tiny-offline itself uses SHAPE.
    """
    target = Path(target)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "config.json").is_file():
            return target
        tmp = target.parent / f".{target.name}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _build_into(tmp, {**SHAPE, **(shape or {})})
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _build_into(out: Path, shape: dict) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([line for line in _CORPUS.splitlines() if line.strip()] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        additional_special_tokens=SPECIALS[3:],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 2048

    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=shape["hidden_size"],
        intermediate_size=shape["intermediate_size"],
        num_hidden_layers=shape["num_hidden_layers"],
        num_attention_heads=shape["num_attention_heads"],
        num_key_value_heads=shape["num_key_value_heads"],
        max_position_embeddings=2048,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
        # LoRA leaves embeddings and norms frozen; with the usual 0.02 init the logits stay near-uniform and the
        # loss barely moves. A wider init gives LoRA logits it can sharpen (loss 9.6 -> 0.3 in 60 steps).
        initializer_range=shape.get("initializer_range", 0.3),
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = fast.eos_token_id
    model.generation_config.pad_token_id = fast.pad_token_id
    out.mkdir(parents=True)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    (out / "TUNEDECK.json").write_text(
        json.dumps(
            {"what": "tiny-offline", "note": "random weights; learns your examples and knows nothing else"}
        )
    )
