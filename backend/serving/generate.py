"""Load a base model (optionally with a run's LoRA adapter) and generate replies with its chat template.

Used by the CLI (``tunedeck generate``) and by the model server behind the Chat tab. Greedy unless a temperature
above 0 is given, so answers are reproducible.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from backend.core.store import Store
from backend.data.shapes import with_system
from backend.models import devices
from backend.settings import Paths


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    base_model: str
    adapter_dir: str | None
    # The system prompt the run was trained with: used when a conversation brings none, as training did.
    system_prompt: str = ""


def prompt_text(loaded: Loaded, messages: list[dict[str, str]]) -> str:
    """The exact text the model is prompted with for ``messages`` (chat template, generation prompt)."""
    return loaded.tokenizer.apply_chat_template(
        with_system(messages, loaded.system_prompt), add_generation_prompt=True, tokenize=False
    )


def inference_dtype(adapter_dir: str | None, device: str = "auto") -> str:
    """The number format to load a base in: the one the adapter was trained in (its run card), so answers match
    training; for a base alone, or an old adapter without a card, what this machine runs best (``precision: auto``)."""
    from backend.models import runcard
    from backend.models.devices import detect

    caps = detect(device)
    trained = runcard.read(adapter_dir).get("dtype")
    if trained == "float32" or (trained == "bfloat16" and (caps.bf16 or caps.kind == "cpu")):
        return trained
    if trained == "float16" and caps.fp16:
        return trained
    return devices.compute_dtype_name(caps)


def load(
    base_model: str,
    adapter_dir: str | None,
    paths: Paths,
    device: str = "auto",
    dtype_name: str | None = None,
) -> Loaded:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from backend.models import registry as models
    from backend.models.devices import detect

    ref = models.check_available(base_model, paths)
    models.materialize(ref)
    caps = detect(device)
    dtype = getattr(torch, dtype_name or inference_dtype(adapter_dir, device))
    trust = Store(paths.db).trusts_remote_code(base_model)  # only a model the person trusted for a run
    models.require_no_own_code(ref, trust)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir or ref.location, trust_remote_code=trust)
    model = AutoModelForCausalLM.from_pretrained(ref.location, dtype=dtype, trust_remote_code=trust)
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    model.to(caps.kind if caps.kind != "cpu" else "cpu")
    model.eval()
    from backend.models import runcard

    system = runcard.read(adapter_dir).get("config", {}).get("system_prompt") or ""
    return Loaded(model, tokenizer, base_model, adapter_dir, system)


def _inputs(loaded: Loaded, messages: list[dict[str, str]]) -> Any:
    enc = loaded.tokenizer.apply_chat_template(
        with_system(messages, loaded.system_prompt),
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    return {k: v.to(loaded.model.device) for k, v in enc.items()}


@dataclass(frozen=True)
class Decoding:
    """How to pick tokens. Greedy (reproducible) unless temperature > 0."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int = 0


def _gen_kwargs(loaded: Loaded, d: Decoding, should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    kw: dict[str, Any] = {"max_new_tokens": d.max_new_tokens, "pad_token_id": loaded.tokenizer.pad_token_id}
    if d.temperature and d.temperature > 0:
        torch.manual_seed(d.seed)
        kw.update(do_sample=True, temperature=d.temperature, top_p=d.top_p)
    else:
        kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if d.repetition_penalty and d.repetition_penalty != 1.0:
        kw["repetition_penalty"] = d.repetition_penalty
    stops = [s for s in d.stop if s]
    if stops:
        kw.update(stop_strings=stops, tokenizer=loaded.tokenizer)
    if should_stop is not None:

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):  # noqa: ANN001 - transformers' signature
                return should_stop()

        kw["stopping_criteria"] = StoppingCriteriaList([_Cancelled()])
    return kw


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return text[:cut] if cut >= 0 else text


def generate(
    loaded: Loaded,
    messages: list[dict[str, str]],
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    seed: int = 0,
    decoding: Decoding | None = None,
) -> str:
    import torch

    d = decoding or Decoding(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    inputs = _inputs(loaded, messages)
    with torch.inference_mode():
        out = loaded.model.generate(**inputs, **_gen_kwargs(loaded, d))
    text = loaded.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return _cut_at_stop(text, d.stop)


def generate_batch(
    loaded: Loaded, conversations: list[list[dict[str, str]]], max_new_tokens: list[int]
) -> list[str]:
    """Greedy answers to several conversations in one ``generate`` call (left-padded), each cut to its own budget.

    On a CPU a batch of 8 costs little more per step than one answer, so scoring many examples is several times
    faster than answering them one by one. The batch runs for the largest budget; shorter budgets are cut after."""
    import torch

    tok = loaded.tokenizer
    side = tok.padding_side
    tok.padding_side = "left"  # generation appends on the right, so prompts must end at the same column
    try:
        enc = tok.apply_chat_template(
            [with_system(c, loaded.system_prompt) for c in conversations],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
            padding=True,
        )
    finally:
        tok.padding_side = side
    enc = {k: v.to(loaded.model.device) for k, v in enc.items()}
    kw = _gen_kwargs(loaded, Decoding(max_new_tokens=max(max_new_tokens)))
    with torch.inference_mode():
        out = loaded.model.generate(**enc, **kw)
    start = enc["input_ids"].shape[1]
    return [
        tok.decode(row[start : start + budget], skip_special_tokens=True)
        for row, budget in zip(out, max_new_tokens, strict=True)
    ]


def stream(
    loaded: Loaded,
    messages: list[dict[str, str]],
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    seed: int = 0,
    decoding: Decoding | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[str]:
    """Yield pieces of the reply as they are generated; ``should_stop()`` returning True ends it early."""
    import torch
    from transformers import TextIteratorStreamer

    d = decoding or Decoding(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    inputs = _inputs(loaded, messages)
    streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=300)
    kw = _gen_kwargs(loaded, d, should_stop)
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
    text, stopped = "", False
    for piece in streamer:  # drained to the end so the generating thread finishes
        if stopped:
            continue
        if d.stop:
            # generate() stops at a stop string too, but the piece it arrives in may hold text after it: cut there.
            new = _cut_at_stop(text + piece, d.stop)
            if len(new) < len(text + piece):
                stopped = True
                piece = new[len(text) :]
        text += piece
        if piece:
            yield piece
    t.join()
    if errors:
        raise errors[0]


class ModelPool:
    """One base model in memory serving many adapters: PEFT's named adapters, switched per request.

    ``use(base_model, adapter_dir)`` returns the loaded model with that adapter active, or with adapters
    disabled for the base alone, so a side-by-side comparison of the base and four runs holds one copy of the
    base weights. Asking for another base model unloads the current one first.
    """

    def __init__(self, paths: Paths, device: str = "auto"):
        self.paths = paths
        self.device = device
        self.loaded: Loaded | None = None
        self.dtype = ""  # the number format the loaded base is in
        self._names: dict[str, str] = {}  # adapter dir -> adapter name inside the PeftModel

    def unload(self) -> None:
        self.loaded = None
        self._names.clear()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    def use(self, base_model: str, adapter_dir: str | None, like: str | None = None) -> tuple[Loaded, Any]:
        """(loaded model, context manager to generate in). The context disables adapters for the base alone.

        The base is loaded in the number format the adapter was trained in; alone, in the format of the adapter it
        is compared with (``like``: scores and side-by-side answers compare like with like), else this machine's
        best. So every answer equals that of a model loaded on its own in that format; a run trained in another
        format than the machine's best (tiny-offline's fp32) costs a reload when the pool switches to it."""
        import contextlib

        want = inference_dtype(adapter_dir or like, self.device)
        if self.loaded is None or self.loaded.base_model != base_model or want != self.dtype:
            self.unload()
            self.loaded = load(base_model, None, self.paths, self.device, dtype_name=want)
            self.dtype = want
        loaded = self.loaded
        if adapter_dir is None:
            ctx = loaded.model.disable_adapter() if self._names else contextlib.nullcontext()
            return loaded, ctx
        name = self._names.get(adapter_dir)
        if name is None:
            name = f"a{len(self._names)}"
            if not self._names:
                from peft import PeftModel

                loaded.model = PeftModel.from_pretrained(loaded.model, adapter_dir, adapter_name=name)
                loaded.model.eval()
            else:
                loaded.model.load_adapter(adapter_dir, adapter_name=name)
            self._names[adapter_dir] = name
        loaded.model.set_adapter(name)
        return loaded, contextlib.nullcontext()
