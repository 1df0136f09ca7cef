"""Load a base model (optionally with a run's LoRA adapter) and generate replies with its chat template.

Used by the CLI (``tunedeck generate``) and by the model server behind the Chat tab. Greedy unless a temperature
above 0 is given, so answers are reproducible.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from backend.settings import Paths


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    base_model: str
    adapter_dir: str | None


def load(base_model: str, adapter_dir: str | None, paths: Paths, device: str = "auto") -> Loaded:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backend import hf, models, tinymodel
    from backend.hardware import detect

    ref = models.check_available(base_model, paths)
    if ref.is_tiny:
        tinymodel.build(ref.location)
    caps = detect(device)
    dtype = getattr(torch, hf.compute_dtype_name(caps))
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir or ref.location)
    model = AutoModelForCausalLM.from_pretrained(ref.location, dtype=dtype)
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    model.to(caps.kind if caps.kind != "cpu" else "cpu")
    model.eval()
    return Loaded(model, tokenizer, base_model, adapter_dir)


def _inputs(loaded: Loaded, messages: list[dict[str, str]]) -> Any:
    enc = loaded.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    return {k: v.to(loaded.model.device) for k, v in enc.items()}


def _gen_kwargs(loaded: Loaded, max_new_tokens: int, temperature: float, seed: int) -> dict[str, Any]:
    import torch

    kw: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": loaded.tokenizer.pad_token_id}
    if temperature and temperature > 0:
        torch.manual_seed(seed)
        kw.update(do_sample=True, temperature=temperature, top_p=1.0)
    else:
        kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kw


def generate(
    loaded: Loaded, messages: list[dict[str, str]], max_new_tokens: int = 128, temperature: float = 0.0, seed: int = 0
) -> str:
    import torch

    inputs = _inputs(loaded, messages)
    with torch.inference_mode():
        out = loaded.model.generate(**inputs, **_gen_kwargs(loaded, max_new_tokens, temperature, seed))
    return loaded.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def stream(
    loaded: Loaded, messages: list[dict[str, str]], max_new_tokens: int = 128, temperature: float = 0.0, seed: int = 0
) -> Iterator[str]:
    """Yield pieces of the reply as they are generated."""
    import torch
    from transformers import TextIteratorStreamer

    inputs = _inputs(loaded, messages)
    streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=300)
    kw = _gen_kwargs(loaded, max_new_tokens, temperature, seed)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with torch.inference_mode():
                loaded.model.generate(**inputs, **kw, streamer=streamer)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            errors.append(exc)
            streamer.end()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    yield from streamer
    t.join()
    if errors:
        raise errors[0]
