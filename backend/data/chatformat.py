"""A model's chat template and tokenizer, without torch: what the model will be trained on, token by token.

``ChatFormat.load(model, paths)`` reads the model's ``tokenizer.json`` with the ``tokenizers`` library and its chat
template (``chat_template.jinja`` or ``tokenizer_config.json``), and renders it with a sandboxed jinja2 environment
set up the way transformers sets up its own (trim_blocks, lstrip_blocks, ``raise_exception``, ``tojson``,
``strftime_now``, loop controls, ``{% generation %}``), so the web UI can show the exact training text.

``encode_rows`` produces, for stored rows of any shape, the token ids and which of them carry the loss, following
TRL's SFTTrainer:

- prompt_response: the prompt rendered with the generation prompt vs. the whole conversation; the loss-bearing
  part starts where their tokens diverge (TRL's ``common_prefix_length``);
- chat: every assistant turn, found by rendering the conversation up to each turn (or the template's
  ``{% generation %}`` blocks when it has them), including the end-of-turn marker that follows it;
- text: all of it, with the end-of-sequence token appended as TRL does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from backend.data.readers import DataError
from backend.data.shapes import PREFERENCE_SHAPES, example_parts
from backend.models import registry as models
from backend.settings import Paths

SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


@dataclass
class Encoded:
    """One example as the model sees it: the text, its tokens, and which tokens carry the loss."""

    text: str
    ids: list[int]
    trained: list[bool]
    offsets: list[tuple[int, int]] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return len(self.ids)

    @property
    def n_trained(self) -> int:
        return sum(self.trained)

    @property
    def n_prompt(self) -> int:
        """Tokens before the first trained one: what must fit in max_length for any response to be learned."""
        return next((i for i, t in enumerate(self.trained) if t), len(self.ids))

    def cut(self, max_length: int) -> tuple[Encoded, str]:
        """(the first ``max_length`` tokens, the text after them): what training keeps of a longer example (TRL
        keeps the start), and what it leaves out."""
        if max_length <= 0 or self.n_tokens <= max_length:
            return self, ""
        end = self.offsets[max_length - 1][1] if self.offsets else len(self.text)
        kept = Encoded(
            self.text[:end], self.ids[:max_length], self.trained[:max_length], self.offsets[:max_length]
        )
        return kept, self.text[end:]

    def segments(self) -> list[tuple[str, bool]]:
        """The text cut into runs of (text, trained), following the tokens' character offsets."""
        if not self.offsets:
            return [(self.text, all(self.trained))] if self.text else []
        out: list[tuple[str, bool]] = []
        pos = 0
        for (start, end), trained in zip(self.offsets, self.trained, strict=True):
            start, end = max(start, pos), max(end, pos)
            if end <= start:
                continue
            piece = self.text[pos:end]
            pos = end
            if out and out[-1][1] == trained:
                out[-1] = (out[-1][0] + piece, trained)
            else:
                out.append((piece, trained))
        if pos < len(self.text):  # text no token covers (e.g. trailing spaces a tokenizer drops)
            out.append((self.text[pos:], out[-1][1] if out else False))
        return out


class ChatFormat:
    def __init__(self, model: str, tokenizer_path: str, template: str | None, special: dict[str, Any]):
        from tokenizers import Tokenizer

        self.model = model
        self.tokenizer_path = tokenizer_path
        self.template_source = template
        self.special = special
        self.tokenizer = Tokenizer.from_file(tokenizer_path)
        self.template = _compile(template) if template else None
        digest = hashlib.sha256(Path(tokenizer_path).read_bytes())
        digest.update((template or "").encode())
        digest.update(json.dumps(special, sort_keys=True, default=str).encode())
        self.fingerprint = digest.hexdigest()[:16]

    # -- loading ----------------------------------------------------------------------------------------------

    @classmethod
    def load(cls, model: str, paths: Paths) -> ChatFormat:
        """The tokenizer and chat template of ``model`` (tiny-offline, a local folder, or a cached Hub id)."""
        try:
            ref = models.resolve(model, paths)
        except models.ModelError as exc:
            raise DataError(str(exc)) from None
        if ref.made_here and models.tokenizer_file(ref) is None:
            try:
                models.materialize_in_child(ref, paths)
            except models.ModelError as exc:
                raise DataError(str(exc)) from None
        tok = models.tokenizer_file(ref)
        if tok is None:
            raise DataError(
                f"The tokenizer of {model} is not on this machine, so TuneDeck cannot show how it sees the data. "
                f"Fix: download the model once (`huggingface-cli download {model}`), or pick tiny-offline or a "
                "local model folder."
            )
        folder = Path(tok).parent
        config = _read_json(folder / "tokenizer_config.json")
        template_file = folder / "chat_template.jinja"
        if ref.kind == "hub":
            found = models.hub_cached_file(ref.location, "chat_template.jinja")
            template_file = Path(found) if found else template_file
        template = (
            template_file.read_text(encoding="utf-8")
            if template_file.is_file()
            else config.get("chat_template")
        )
        if isinstance(template, list):  # named templates: take "default"
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default") or next(iter(named.values()), None)
        special = {k: _token_text(config.get(k)) for k in SPECIAL_KEYS if config.get(k) is not None}
        extra = config.get("extra_special_tokens") or config.get("additional_special_tokens")
        if isinstance(extra, list):
            special["additional_special_tokens"] = [_token_text(t) for t in extra]
        return cls(model, tok, template, special)

    @property
    def eos_token(self) -> str:
        return str(self.special.get("eos_token") or "")

    # -- rendering --------------------------------------------------------------------------------------------

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        if self.template is None:
            raise DataError(
                f"The model {self.model} has no chat template, so prompts and chats cannot be formatted for it. "
                "Fix: pick an instruct/chat model (e.g. Qwen/Qwen2.5-0.5B-Instruct), or use the plain-text shape."
            )
        import jinja2

        try:
            return self.template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                tools=None,
                documents=None,
                **self.special,
            )
        except jinja2.TemplateError as exc:
            raise DataError(
                f"The chat template of {self.model} refused this example: {exc}. Fix: check the roles "
                "(many templates need user and assistant turns to alternate)."
            ) from None

    def render_with_spans(self, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
        """The whole conversation and the character spans of the assistant turns (the trained part)."""
        full = self.render(messages)
        spans = self._generation_spans(messages)
        if spans is not None:
            return full, spans
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before = self.render(messages[:i], add_generation_prompt=True)
            upto = self.render(messages[: i + 1])
            if full.startswith(upto) and upto.startswith(before):
                spans.append((len(before), len(upto)))
            else:  # a template that renders history differently: fall back to finding the reply's text
                start = full.find(m["content"], spans[-1][1] if spans else 0)
                if start >= 0:
                    end = start + len(m["content"])
                    if self.eos_token and full.startswith(self.eos_token, end):
                        end += len(self.eos_token)
                    spans.append((start, end))
        return full, spans

    def _generation_spans(self, messages: list[dict]) -> list[tuple[int, int]] | None:
        if not self.template_source or "generation" not in self.template_source:
            return None
        import re

        if not re.search(r"\{%-?\s*generation\s*-?%\}", self.template_source):
            return None
        blocks: list[str] = []
        spans: list[tuple[int, int]] = []
        env = self.template.environment
        with env.activate_tracker(blocks, spans):  # type: ignore[attr-defined]
            for block in self.template.generate(
                messages=messages, add_generation_prompt=False, tools=None, documents=None, **self.special
            ):
                blocks.append(block)
        return spans

    # -- tokens -----------------------------------------------------------------------------------------------

    def encode(self, shape: str, row: dict, system_prompt: str = "") -> Encoded:
        return self.encode_rows(shape, [row], system_prompt, offsets=True)[0]

    def encode_rows(
        self, shape: str, rows: list[dict], system_prompt: str = "", *, offsets: bool = False
    ) -> list[Encoded]:
        """Stored rows → tokens and loss mask, as TRL's SFTTrainer computes them (see the module docstring)."""
        parts = [example_parts(shape, r, system_prompt) for r in rows]
        if shape in (
            "prompt_response",
            *PREFERENCE_SHAPES,
        ):  # a preference row: its chosen answer, or row["side"]
            prompts = [self.render(p["prompt"], add_generation_prompt=True) for p in parts]
            fulls = [self.render(p["prompt"] + p["completion"]) for p in parts]
            p_enc = self.tokenizer.encode_batch(prompts, add_special_tokens=False)
            f_enc = self.tokenizer.encode_batch(fulls, add_special_tokens=False)
            out = []
            for text, pe, fe in zip(fulls, p_enc, f_enc, strict=True):
                n = common_prefix(pe.ids, fe.ids)
                out.append(
                    Encoded(text, fe.ids, [i >= n for i in range(len(fe.ids))], fe.offsets if offsets else [])
                )
            return out
        if shape == "chat":
            rendered = [self.render_with_spans(p["messages"]) for p in parts]
            encs = self.tokenizer.encode_batch([t for t, _ in rendered], add_special_tokens=False)
            out = []
            for (text, spans), e in zip(rendered, encs, strict=True):
                trained = [any(s < end and start < e_ for s, e_ in spans) for start, end in e.offsets]
                out.append(Encoded(text, e.ids, trained, e.offsets if offsets else []))
            return out
        eos = self.eos_token
        texts = [p["text"] + eos if eos and not p["text"].endswith(eos) else p["text"] for p in parts]
        encs = self.tokenizer.encode_batch(texts, add_special_tokens=True)
        return [
            Encoded(t, e.ids, [True] * len(e.ids), e.offsets if offsets else [])
            for t, e in zip(texts, encs, strict=True)
        ]


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two id lists share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _token_text(t: Any) -> Any:
    return t.get("content") if isinstance(t, dict) else t


def _compile(template: str):
    """The chat template compiled in a sandbox, as transformers compiles it (see module docstring)."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class AssistantTracker(jinja2.ext.Extension):
        tags = {"generation"}

        def __init__(self, environment):
            super().__init__(environment)
            environment.extend(activate_tracker=self.activate_tracker)
            self._blocks: list[str] | None = None
            self._spans: list[tuple[int, int]] | None = None

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(
                lineno
            )

        @jinja2.pass_eval_context
        def _generation_support(self, context, caller):
            rv = caller()
            if self._blocks is not None and self._spans is not None:
                start = len("".join(self._blocks))
                self._spans.append((start, start + len(rv)))
            return rv

        def activate_tracker(self, blocks, spans):
            from contextlib import contextmanager

            @contextmanager
            def active():
                self._blocks, self._spans = blocks, spans
                try:
                    yield
                finally:
                    self._blocks, self._spans = None, None

            return active()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise DataError(
            f"The model's chat template has a syntax error (line {exc.lineno}: {exc.message}). "
            "Fix: pick another model, or correct chat_template.jinja in the model folder."
        ) from None


def cached_models(paths: Paths) -> list[str]:
    """Models whose tokenizer is (or can be made) on this machine without a download."""
    return models.on_this_machine(paths)
