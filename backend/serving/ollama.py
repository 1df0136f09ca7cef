"""The run's chat template as an Ollama Modelfile, and a check that it renders what training rendered.

Ollama's TEMPLATE is a Go ``text/template``, not Jinja, so the Jinja chat template cannot be copied across. Instead
``probe`` renders the template with marker messages and reads off what it puts around each role (ChatML's
``<|im_start|>user\\n`` … ``<|im_end|>\\n``, Llama 3's headers, a default system prompt it inserts), and ``modelfile``
writes that as a Go template in which every piece of literal text is a quoted string (so Go's ``{{-`` whitespace
trimming can never eat a newline of the template). This covers the templates that format each message on its own
(ChatML / Qwen2 / SmolLM2, Llama 3, tiny-offline's); a template that does more (renders the last turn differently,
puts the system prompt inside the first user turn) is found out by ``parity``, which renders a set of conversations
both ways and names the ones that differ, so the export can say so instead of hiding it.

``render_go`` is a small interpreter for exactly the Go-template subset that ``modelfile`` writes: there is no
maintained Python implementation of Go's text/template, and Ollama itself is not installable from a package
registry here. It refuses any construct outside that subset rather than guess.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

Render = Callable[[list[dict], bool], str]
ROLES = ("system", "user", "assistant")

# Conversations the parity check renders: one turn, several turns, with and without a system prompt, and a
# message with a trailing space, and one with a blank line before a number.
CONVERSATIONS: list[list[dict]] = [
    [{"role": "user", "content": "Hello!"}],
    [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "Hi there"},
    ],
    [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And times 3?"},
    ],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one,\nplease."},
    ],
    # what people type: a space at the end (Llama 3's template trims it away, a Modelfile cannot)
    [{"role": "user", "content": "Thanks! "}],
    # a blank line before a number (llama.cpp splits "\n\n1" unlike Hugging Face's tokenizers for some vocabularies)
    [{"role": "user", "content": "Steps:\n\n1. Open the app."}],
]


class TemplateShapeError(ValueError):
    """The chat template does not format messages one by one, so no Modelfile TEMPLATE can equal it."""


@dataclass(frozen=True)
class TurnFormat:
    """What a chat template puts around each message, read off by ``probe``."""

    start: str  # before the first message (a BOS text, say); "" when a default system message carries it
    prefix: dict[str, str]
    suffix: dict[str, str]
    generation: str  # after the last message, where the reply starts
    default_system: str | None  # the system text the template inserts when a conversation has none

    def render(self, messages: list[dict]) -> str:
        """The prompt this format gives (with the generation prompt), as Ollama would build it."""
        if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.default_system}, *messages]
        body = "".join(self.prefix[m["role"]] + m["content"] + self.suffix[m["role"]] for m in messages)
        return self.start + body + self.generation


_MARK = {
    "system": "TDSYSTEMMARK",
    "user": "TDUSERMARK",
    "assistant": "TDASSISTANTMARK",
    "user2": "TDUSERTWOMARK",
}


def _split(text: str, marks: list[str]) -> list[str]:
    """``text`` cut at each marker, in order; each marker must be there exactly once."""
    pieces, rest = [], text
    for mark in marks:
        if rest.count(mark) != 1:
            raise TemplateShapeError(f"the template does not show the message text {mark!r} exactly once")
        before, rest = rest.split(mark)
        pieces.append(before)
    return [*pieces, rest]


def probe(render: Render) -> TurnFormat:
    """Read a chat template's per-role text from renders of marker conversations (see the module docstring)."""
    s = {"role": "system", "content": _MARK["system"]}
    u = {"role": "user", "content": _MARK["user"]}
    a = {"role": "assistant", "content": _MARK["assistant"]}
    u2 = {"role": "user", "content": _MARK["user2"]}
    su = render([s, u], False)
    su_gen = render([s, u], True)
    sua = render([s, u, a], False)
    suau_gen = render([s, u, a, u2], True)
    if not su_gen.startswith(su) or not sua.startswith(su) or not suau_gen.startswith(sua):
        raise TemplateShapeError("the template renders earlier turns differently once more turns follow")
    head, mid, user_suffix = _split(su, [_MARK["system"], _MARK["user"]])
    generation = su_gen[len(su) :]
    asst_prefix, asst_suffix = _split(sua[len(su) :], [_MARK["assistant"]])
    user_prefix, tail = _split(suau_gen[len(sua) :], [_MARK["user2"]])
    if tail != user_suffix + generation:
        raise TemplateShapeError("the template formats the second user turn unlike the first")
    if not mid.endswith(user_prefix):
        raise TemplateShapeError("the template joins the system prompt to the first user turn")
    sys_suffix = mid[: len(mid) - len(user_prefix)]

    # Without a system message: either the template inserts a default one, or it starts straight with the user.
    u_gen = render([u], True)
    start, default_system, sys_prefix = "", None, head
    after_user = user_prefix + _MARK["user"] + user_suffix + generation
    if not u_gen.endswith(after_user):
        raise TemplateShapeError("the template formats a conversation without a system prompt differently")
    before = u_gen[: len(u_gen) - len(after_user)]
    if before.startswith(head) and before.endswith(sys_suffix) and len(before) >= len(head) + len(sys_suffix):
        default_system = before[len(head) : len(before) - len(sys_suffix)]
    elif head.startswith(before):
        start, sys_prefix = before, head[len(before) :]
    else:
        raise TemplateShapeError("the template starts a conversation without a system prompt differently")
    return TurnFormat(
        start=start,
        prefix={"system": sys_prefix, "user": user_prefix, "assistant": asst_prefix},
        suffix={"system": sys_suffix, "user": user_suffix, "assistant": asst_suffix},
        generation=generation,
        default_system=default_system,
    )


def _go(text: str) -> str:
    """A Go interpreted string literal (json's escapes are a subset of Go's; non-ASCII stays as UTF-8)."""
    return json.dumps(text, ensure_ascii=False)


def go_template(fmt: TurnFormat) -> str:
    """``fmt`` as an Ollama TEMPLATE over ``.Messages``: each role's text around ``.Content``, then the reply's start."""
    lines = []
    if fmt.start:
        lines.append(f"{{{{- {_go(fmt.start)} }}}}")
    if (
        fmt.default_system is not None
    ):  # what the template writes when a chat has no system message of its own
        default = fmt.prefix["system"] + fmt.default_system + fmt.suffix["system"]
        lines.append(
            f'{{{{- if ne (index .Messages 0).Role "system" }}}}{{{{ {_go(default)} }}}}{{{{ end }}}}'
        )
    lines.append("{{- range .Messages }}")
    for i, role in enumerate(ROLES):
        keyword = "if" if i == 0 else "else if"
        lines.append(f'{{{{- {keyword} eq .Role "{role}" }}}}')
        lines.append(f"{{{{- {_go(fmt.prefix[role])} }}}}{{{{ .Content }}}}{{{{ {_go(fmt.suffix[role])} }}}}")
    lines.append("{{- end }}")
    lines.append("{{- end }}")
    lines.append(f"{{{{- {_go(fmt.generation)} }}}}")
    return "\n".join(lines)


def stop_words(fmt: TurnFormat, eos: str) -> list[str]:
    """Where a reply ends: the EOS text and the end of the assistant's turn (stripped of its newline)."""
    out = [eos] if eos else []
    end = fmt.suffix["assistant"].strip()
    if end and end not in out:
        out.append(end)
    return out


def _quote_block(text: str) -> str:
    if '"""' in text:
        raise TemplateShapeError('the text contains """, which a Modelfile cannot quote')
    return f'"""{text}"""'


@dataclass(frozen=True)
class Modelfile:
    text: str
    template: str
    system: str | None
    stops: list[str] = field(default_factory=list)


def modelfile(gguf_name: str, fmt: TurnFormat, eos: str, *, temperature: float = 0.0) -> Modelfile:
    """An Ollama Modelfile next to ``gguf_name``: FROM, TEMPLATE, SYSTEM, stop words, greedy by default."""
    template = go_template(fmt)
    stops = stop_words(fmt, eos)
    parts = [f"FROM ./{gguf_name}", f"TEMPLATE {_quote_block(template)}"]
    if fmt.default_system:
        parts.append(f"SYSTEM {_quote_block(fmt.default_system)}")
    parts += [f"PARAMETER stop {_go(s)}" for s in stops]
    parts.append(f"PARAMETER temperature {temperature:g}")
    return Modelfile("\n".join(parts) + "\n", template, fmt.default_system, stops)


# -- a Go text/template interpreter for the subset go_template writes -------------------------------------------

_NO_SYSTEM = 'if ne (index .Messages 0).Role "system"'
_ACTION = re.compile(r"\{\{(-\s)?\s*(.*?)\s*(\s-)?\}\}", re.S)
_STRING = re.compile(r'^"(?:[^"\\]|\\.)*"$', re.S)


def _parse_go(template: str) -> list:
    """Nodes: ("text", s) | ("out", expr) | ("range", body) | ("if", [(role, body)...], else_body) |
    ("no-system", body), the last for ``if ne (index .Messages 0).Role "system"``."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(template):
        text = template[pos : m.start()]
        if m.group(1):  # "{{- " trims the whitespace before it
            text = text.rstrip(" \t\r\n")
        if tokens and tokens[-1][0] == "trim-next":
            tokens.pop()
            text = text.lstrip(" \t\r\n")
        if text:
            tokens.append(("text", text))
        tokens.append(("action", m.group(2)))
        if m.group(3):
            tokens.append(("trim-next", ""))
        pos = m.end()
    tail = template[pos:]
    if tokens and tokens[-1][0] == "trim-next":
        tokens.pop()
        tail = tail.lstrip(" \t\r\n")
    if tail:
        tokens.append(("text", tail))

    def block(i: int, closers: tuple[str, ...]) -> tuple[list, int, str]:
        nodes: list = []
        while i < len(tokens):
            kind, value = tokens[i]
            if kind == "text":
                nodes.append(("text", value))
                i += 1
                continue
            if value == "end" or value == "else" or value.startswith("else if "):
                if value.split(" ")[0] not in closers and value not in closers:
                    raise TemplateShapeError(f"unexpected {{{{ {value} }}}} in the template")
                return nodes, i, value
            if value == "range .Messages":
                body, i, closer = block(i + 1, ("end",))
                nodes.append(("range", body))
                i += 1
                continue
            if value == _NO_SYSTEM:
                body, i, closer = block(i + 1, ("end",))
                nodes.append(("no-system", body))
                i += 1
                continue
            if value.startswith("if "):
                branches, else_body = [], []
                cond, j = value[3:], i
                while True:
                    body, j, closer = block(j + 1, ("end", "else"))
                    branches.append((_role_condition(cond), body))
                    if closer.startswith("else if "):
                        cond = closer[len("else if ") :]
                        continue
                    if closer == "else":
                        else_body, j, closer = block(j + 1, ("end",))
                    break
                nodes.append(("if", branches, else_body))
                i = j + 1
                continue
            if _STRING.match(value) or value in (".Content", ".Role"):
                nodes.append(("out", value))
                i += 1
                continue
            raise TemplateShapeError(f"{{{{ {value} }}}} is outside the Go-template subset TuneDeck checks")
        if closers:
            raise TemplateShapeError("the template has an unclosed block")
        return nodes, i, ""

    nodes, _, _ = block(0, ())
    return nodes


def _role_condition(cond: str) -> str:
    m = re.fullmatch(r'eq \.Role "(\w+)"', cond)
    if not m:
        raise TemplateShapeError(f"the condition {cond!r} is outside the Go-template subset TuneDeck checks")
    return m.group(1)


def render_go(template: str, messages: list[dict], system: str | None = None) -> str:
    """Render an Ollama TEMPLATE the way Ollama's chat does: SYSTEM goes first when the chat has no system message."""
    if system and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": system}, *messages]

    def run(nodes: list, msg: dict | None) -> str:
        out = []
        for node in nodes:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "out":
                value = node[1]
                if value in (".Content", ".Role"):
                    if msg is None:
                        raise TemplateShapeError(f"{value} used outside range .Messages")
                    out.append(msg["content" if value == ".Content" else "role"])
                else:
                    out.append(json.loads(value))
            elif node[0] == "no-system":
                if not messages or messages[0]["role"] != "system":
                    out.append(run(node[1], msg))
            elif node[0] == "range":
                out.extend(run(node[1], m) for m in messages)
            else:
                if msg is None:
                    raise TemplateShapeError(".Role used outside range .Messages")
                for role, body in node[1]:
                    if msg["role"] == role:
                        out.append(run(body, msg))
                        break
                else:
                    out.append(run(node[2], msg))
        return "".join(out)

    return run(_parse_go(template), None)


@dataclass(frozen=True)
class Difference:
    conversation: int
    what: str  # which renderer differs from training
    expected: str
    got: str


def parity(
    renderers: dict[str, Callable[[list[dict]], str]], conversations: list[list[dict]] = CONVERSATIONS
):
    """Render each conversation with every renderer; the first one is the reference (training).

    Returns the list of differences (empty when every renderer gives the same prompt text for every conversation).
    """
    names = list(renderers)
    diffs: list[Difference] = []
    for n, conv in enumerate(conversations):
        expected = renderers[names[0]](conv)
        for name in names[1:]:
            try:
                got = renderers[name](conv)
            except Exception as exc:  # noqa: BLE001 - a renderer that fails is a difference to report
                got = f"(failed: {exc})"
            if got != expected:
                diffs.append(Difference(n, name, expected, got))
    return diffs
