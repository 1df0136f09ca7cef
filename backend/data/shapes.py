"""The shapes of training data, and how raw rows become each of them. Pure: no torch, no files.

- ``prompt_response``: a prompt (plus an optional context/input column, as in Alpaca's instruction / input / output)
  and the response to learn, with an optional system prompt. Loss on the response only.
- ``chat``: a multi-turn conversation per row, in OpenAI ``messages`` form (role/content) or ShareGPT
  ``conversations`` form (from/value with human/gpt/system). Loss on every assistant turn.
- ``text``: one text column, for continued pre-training. Loss on everything.
- ``preference``: a prompt with a better (chosen) and a worse (rejected) answer, for DPO and ORPO. The answers are
  text, or conversations that end in the answer (UltraFeedback, TRL's hh-rlhf: the prompt is then the turns before
  it), or Anthropic HH-RLHF's raw "Human: ... Assistant: ..." text. Stored: the prompt as a JSON list of messages
  (system first, if any; may hold earlier turns), ``chosen`` and ``rejected`` as the answers' text.
- ``feedback``: unpaired answers, each marked good or bad (KTO): prompt / completion / label, stored like a
  preference row with ``completion`` and ``label`` ("true" or "false").

A dataset version stores, per shape, the columns in ``OUTPUT_COLUMNS`` (the contract with the training engine).
``to_trl_columns`` turns stored rows into the columns TRL's SFTTrainer reads.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from backend.data.readers import Batch, DataError, cell_text

SHAPES = ("prompt_response", "chat", "text", "preference", "feedback")
PREFERENCE_SHAPES = ("preference", "feedback")  # trained with preference methods (DPO, ORPO, KTO)
SHAPE_LABELS = {
    "prompt_response": "Prompt and response",
    "chat": "Multi-turn chat",
    "text": "Plain text (continued pre-training)",
    "preference": "Preference pairs: a better and a worse answer (DPO, ORPO)",
    "feedback": "Answers marked good or bad (KTO)",
}
OUTPUT_COLUMNS = {
    "prompt_response": ["prompt", "response", "system", "source_row", "split"],
    "chat": ["messages", "source_row", "split"],
    "text": ["text", "source_row", "split"],
    "preference": ["prompt", "chosen", "rejected", "source_row", "split"],
    "feedback": ["prompt", "completion", "label", "source_row", "split"],
}
CONTENT_COLUMNS = {
    shape: [c for c in cols if c not in ("source_row", "split")] for shape, cols in OUTPUT_COLUMNS.items()
}
MAPPING_KEYS = {
    "prompt_response": ("prompt", "response", "system", "context"),
    "chat": ("messages",),
    "text": ("text",),
    "preference": ("prompt", "chosen", "rejected", "system"),
    "feedback": ("prompt", "completion", "label", "system"),
}
# The prompt of preference and feedback data may come from the answers' conversations instead of a column of its own.
REQUIRED_KEYS = {
    "prompt_response": ("prompt", "response"),
    "chat": ("messages",),
    "text": ("text",),
    "preference": ("chosen", "rejected"),
    "feedback": ("completion", "label"),
}
MAPPING_LABELS = {
    "prompt": "prompt",
    "response": "response",
    "system": "system prompt",
    "context": "context/input",
    "messages": "messages",
    "text": "text",
    "chosen": "better answer (chosen)",
    "rejected": "worse answer (rejected)",
    "completion": "answer",
    "label": "good/bad label",
}

PROMPT_NAMES = (
    "prompt",
    "instruction",
    "question",
    "input",
    "query",
    "user",
    "human",
    "source",
    "request",
    "text",
    "frage",
    "pregunta",
    "domanda",
)
RESPONSE_NAMES = (
    "response",
    "output",
    "answer",
    "completion",
    "assistant",
    "reply",
    "target",
    "gpt",
    "label",
    "antwort",
    "respuesta",
    "rponse",
    "risposta",
    "resposta",
)
SYSTEM_NAMES = ("system", "systemprompt", "persona")
CONTEXT_NAMES = ("input", "context", "passage", "document", "article")
CHOSEN_NAMES = ("chosen", "preferred", "better", "accepted", "winner", "chosenresponse", "responsechosen")
REJECTED_NAMES = ("rejected", "dispreferred", "worse", "loser", "rejectedresponse", "responserejected")
LABEL_NAMES = ("label", "desirable", "good", "rating", "thumbsup", "thumbs", "kto", "ktotag", "feedback")
COMPLETION_NAMES = ("completion", "response", "answer", "output", "reply", "assistant")
# What a good/bad cell may say, lower-cased (KTO's label).
GOOD_LABELS = (
    "true",
    "1",
    "1.0",
    "yes",
    "y",
    "good",
    "desirable",
    "chosen",
    "positive",
    "pos",
    "+",
    "+1",
    "up",
    "thumbs up",
    "thumbsup",
    "\N{THUMBS UP SIGN}",
    "accept",
    "accepted",
    "correct",
    "ok",
)
BAD_LABELS = (
    "false",
    "0",
    "0.0",
    "-1",
    "no",
    "n",
    "bad",
    "undesirable",
    "rejected",
    "negative",
    "neg",
    "-",
    "down",
    "thumbs down",
    "thumbsdown",
    "\N{THUMBS DOWN SIGN}",
    "reject",
    "incorrect",
    "wrong",
)
MESSAGE_NAMES = ("messages", "conversations", "conversation", "chat", "dialog", "dialogue", "turns")
TEXT_NAMES = ("text", "content", "document", "body", "passage")

ROLES = ("system", "user", "assistant")
ROLE_ALIASES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "model": "assistant",
    "bard": "assistant",
    "bing": "assistant",
}

# Why a row is left out, in plain words (the keys are stored in the report).
REASONS = {
    "empty_prompt": "empty prompt",
    "empty_response": "empty response",
    "empty_text": "empty text",
    "empty_chat": "empty conversation",
    "empty_message": "a message with no text",
    "invalid_roles": "invalid roles (no assistant reply after a user message, or a system message that is not first)",
    "duplicate": "exact duplicate of an earlier row",
    "duplicate_of_train": "also in the training data",
    "too_long": "longer than the max length",
    "empty_chosen": "empty better (chosen) answer",
    "empty_rejected": "empty worse (rejected) answer",
    "empty_completion": "empty answer",
    "same_answers": "the better and the worse answer are the same text",
    "prompts_differ": "the two answers' conversations start differently, so they do not answer the same prompt",
    "no_answer": "the conversation does not end with an assistant answer",
}
LABEL_FIX = "Fix: mark each answer good or bad with true/false, 1/0, yes/no or good/bad (an empty cell is not allowed)."
MESSAGES_FIX = (
    'Fix: the cell must hold a JSON list of messages, like [{"role": "user", "content": "Hi"}, '
    '{"role": "assistant", "content": "Hello!"}] (or ShareGPT\'s {"from": "human", "value": "Hi"}).'
)


# -- detecting the shape and suggesting the mapping ----------------------------------------------------------------


def _key(name: str) -> str:
    return re.sub(r"[^a-z]", "", str(name).lower())


def _by_name(
    cols: list[str], names: tuple[str, ...], exclude: tuple[str | None, ...] = (), exact: bool = False
):
    for wanted in names:
        for c in cols:
            if c not in exclude and _key(c) == wanted:
                return c
    if exact:
        return None
    for wanted in names:
        for c in cols:
            if c not in exclude and wanted in _key(c):
                return c
    return None


def _looks_like_chat(values: pd.Series) -> bool:
    seen = 0
    for v in values.head(20):
        if isinstance(v, np.ndarray):
            v = v.tolist()
        if isinstance(v, str):
            s = v.strip()
            if not s:
                continue
            if not s.startswith("["):
                return False
            try:
                v = json.loads(s)
            except ValueError:
                return False
        if isinstance(v, list) and not v:
            continue
        if not isinstance(v, list) or not isinstance(v[0], dict):
            return False
        if not ({"role", "content"} <= set(v[0]) or {"from", "value"} <= set(v[0])):
            return False
        seen += 1
    return seen > 0


def detect_shape(frame: pd.DataFrame) -> tuple[str, str]:
    """(shape, why) from the columns and the first rows."""
    cols = [str(c) for c in frame.columns]
    chosen, rejected = _by_name(cols, CHOSEN_NAMES, exact=True), _by_name(cols, REJECTED_NAMES, exact=True)
    if chosen and rejected:
        return "preference", f"the columns {chosen!r} and {rejected!r} hold a better and a worse answer"
    label = _label_column(frame, cols)
    if label:
        answer = _by_name(cols, COMPLETION_NAMES, (label,))
        if answer:
            return "feedback", f"the column {label!r} marks each answer in {answer!r} good or bad"
    named = _by_name(cols, MESSAGE_NAMES, exact=True)
    candidates = ([named] if named else []) + [c for c in cols if c != named]
    for c in candidates:
        if _looks_like_chat(frame[c]):
            form = "ShareGPT" if _first_message_keys(frame[c]) >= {"from", "value"} else "OpenAI"
            return "chat", f"the column {c!r} holds conversations ({form} form)"
    prompt = _by_name(cols, PROMPT_NAMES)
    response = _by_name(cols, RESPONSE_NAMES, (prompt,))
    if prompt and response:
        return "prompt_response", f"the columns {prompt!r} and {response!r} look like prompts and responses"
    text = _by_name(cols, TEXT_NAMES, exact=True)
    filled = [
        c
        for c in cols
        if frame[c].map(lambda v: bool(cell_text(v).strip()) if not _nested(v) else True).any()
    ]
    if text and not response:
        return "text", f"the column {text!r} holds plain text"
    if len(filled) <= 1:
        return "text", "the file has one column of text"
    return (
        "prompt_response",
        "two or more text columns: the shorter, question-like one is taken as the prompt",
    )


def _label_column(frame: pd.DataFrame, cols: list[str]) -> str | None:
    """A column named like a good/bad label whose first cells all read as good or bad."""
    col = _by_name(cols, LABEL_NAMES, exact=True)
    if col is None:
        return None
    values = [v for v in frame[col].head(SNIFF) if not _blank(v)]
    return col if values and all(parse_label(v) is not None for v in values) else None


SNIFF = 50


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip())


def parse_label(value: Any) -> bool | None:
    """A good/bad cell → True (good), False (bad) or None (not a label TuneDeck reads)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        if value == 1:
            return True
        if value in (0, -1):
            return False
        return None
    text = str(value).strip().lower()
    if text in GOOD_LABELS:
        return True
    if text in BAD_LABELS:
        return False
    return None


def _first_message_keys(values: pd.Series) -> set:
    for v in values.head(5):
        if isinstance(v, str):
            try:
                v = json.loads(v)
            except ValueError:
                continue
        if isinstance(v, np.ndarray):
            v = v.tolist()
        if isinstance(v, list) and v and isinstance(v[0], dict):
            return set(v[0])
    return set()


def _nested(v: Any) -> bool:
    return isinstance(v, (list, dict, np.ndarray))


def suggest_columns(frame: pd.DataFrame) -> tuple[str | None, str | None]:
    """Guess (prompt column, response column) from the column names, then from the contents."""
    cols = [str(c) for c in frame.columns]
    prompt = _by_name(cols, PROMPT_NAMES)
    response = _by_name(cols, RESPONSE_NAMES, (prompt,))
    if prompt and response:
        return prompt, response
    # By content: text columns ordered by mean length; questions ('?') lean to the prompt side.
    sample = frame.head(200)
    stats = []
    for c in cols:
        values = sample[c].map(lambda v: "" if _nested(v) else cell_text(v))
        if values.str.strip().eq("").all():
            continue
        stats.append((c, values.str.len().mean(), values.str.contains(r"\?").mean()))
    if not stats:
        return prompt, response
    if prompt is None and response is None:
        # A column that holds clearly more questions than any other is the prompt, whatever the lengths.
        ranked = sorted(stats, key=lambda s: s[2], reverse=True)
        if ranked[0][2] > 0 and (len(ranked) == 1 or ranked[0][2] > ranked[1][2]):
            prompt = ranked[0][0]
    if response is None:
        others = [s for s in stats if s[0] != prompt]
        response = max(others, key=lambda s: s[1])[0] if others else None
    if prompt is None:
        others = [s for s in stats if s[0] != response]
        if others:
            prompt = max(others, key=lambda s: (s[2], -cols.index(s[0])))[0]
    return prompt, response


def suggest_mapping(shape: str, frame: pd.DataFrame) -> dict[str, str | None]:
    """A column for each role of ``shape`` (None where there is none)."""
    cols = [str(c) for c in frame.columns]
    if shape == "chat":
        named = _by_name(cols, MESSAGE_NAMES, exact=True)
        found = next((c for c in ([named] if named else []) + cols if c and _looks_like_chat(frame[c])), None)
        return {"messages": found or named}
    if shape == "text":
        text = _by_name(cols, TEXT_NAMES, exact=True)
        if text is None:  # the longest column
            lengths = {
                c: frame[c].map(lambda v: len(cell_text(v)) if not _nested(v) else 0).mean() for c in cols
            }
            text = max(lengths, key=lambda c: lengths[c]) if lengths else None
        return {"text": text}
    if shape in PREFERENCE_SHAPES:
        return _suggest_preference(shape, frame, cols)
    prompt, response = suggest_columns(frame)
    system = _by_name(cols, SYSTEM_NAMES, (prompt, response), exact=True)
    context = _by_name(cols, CONTEXT_NAMES, (prompt, response, system), exact=True)
    return {"prompt": prompt, "response": response, "system": system, "context": context}


def _suggest_preference(shape: str, frame: pd.DataFrame, cols: list[str]) -> dict[str, str | None]:
    if shape == "preference":
        a = _by_name(cols, CHOSEN_NAMES, exact=True) or _by_name(cols, CHOSEN_NAMES)
        b = _by_name(cols, REJECTED_NAMES, (a,), exact=True) or _by_name(cols, REJECTED_NAMES, (a,))
        answers = {"chosen": a, "rejected": b}
    else:
        label = _label_column(frame, cols) or _by_name(cols, LABEL_NAMES, exact=True)
        answers = {"completion": _by_name(cols, COMPLETION_NAMES, (label,)), "label": label}
    taken = tuple(answers.values())
    prompt = _by_name(cols, PROMPT_NAMES, taken, exact=True) or _by_name(cols, PROMPT_NAMES, taken)
    system = _by_name(cols, SYSTEM_NAMES, (*taken, prompt), exact=True)
    return {"prompt": prompt, **answers, "system": system}


def check_mapping(shape: str, mapping: dict[str, str | None], columns: list[str], file_name: str) -> dict:
    """The mapping with only this shape's keys; DataError listing every problem at once."""
    if shape not in SHAPES:
        raise DataError(f"Unknown shape {shape!r}. Fix: use one of {', '.join(SHAPES)}.")
    clean = {k: (mapping.get(k) or None) for k in MAPPING_KEYS[shape]}
    problems = []
    for key in MAPPING_KEYS[shape]:
        col = clean[key]
        if col is None and key in REQUIRED_KEYS[shape]:
            problems.append(f"no {MAPPING_LABELS[key]} column was chosen and none could be guessed")
        elif col is not None and col not in columns:
            problems.append(f"the {MAPPING_LABELS[key]} column {col!r} is not in the file")
    if shape in ("prompt_response", *PREFERENCE_SHAPES):
        used = [(k, v) for k, v in clean.items() if v]
        for i, (k, v) in enumerate(used):
            for k2, v2 in used[i + 1 :]:
                if v == v2:
                    problems.append(f"the {MAPPING_LABELS[k]} and the {MAPPING_LABELS[k2]} are both {v!r}")
    if problems:
        fix = {
            "prompt_response": "choose one column for the prompt and a different one for the response",
            "chat": "choose the column that holds the conversations",
            "text": "choose the column that holds the text",
            "preference": "choose the column of better answers and a different one of worse answers",
            "feedback": "choose the column of answers and the column that marks each good or bad",
        }[shape]
        if shape == "prompt_response" and all(("system" in p or "context" in p) for p in problems):
            fix = "choose one of the file's columns for it, or none"
        if shape == "prompt_response" and len(columns) < 2:
            raise DataError(
                f"{file_name}: found only one column ({columns[0]!r}). TuneDeck needs a prompt column and a response "
                "column for prompt/response data. Fix: make sure the file is comma-, semicolon- or tab-separated "
                "with a header row naming both, or choose the plain-text shape to train on the text itself."
            )
        raise DataError(
            f"{file_name}: "
            + "; ".join(problems)
            + f". The file's columns are: {', '.join(map(repr, columns))}. "
            f"Fix: {fix}."
        )
    return clean


# -- normalising raw rows ------------------------------------------------------------------------------------------


@dataclass
class Normalised:
    """Rows kept (the shape's content columns plus source_row) and, per reason, the rows left out."""

    frame: pd.DataFrame
    dropped: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Where:
    """How messages name a place: '<file>: row 5, column 'answer''."""

    file_name: str
    row_word: str = "row"

    def at(self, row: int, col: str) -> str:
        return f"{self.file_name}: {self.row_word} {row}, column {col!r}"


def normalise(shape: str, mapping: dict, batch: Batch, where: Where, max_chars: int) -> Normalised:
    if shape == "prompt_response":
        return _normalise_pr(mapping, batch, where, max_chars)
    if shape == "chat":
        return _normalise_chat(mapping["messages"], batch, where, max_chars)
    if shape in PREFERENCE_SHAPES:
        return _normalise_preference(shape, mapping, batch, where, max_chars)
    return _normalise_text(mapping["text"], batch, where, max_chars)


def _text_column(batch: Batch, col: str | None, where: Where, max_chars: int) -> pd.Series:
    if col is None:
        return pd.Series([""] * len(batch.frame), dtype="str")
    s = batch.frame[col]
    if not isinstance(s.dtype, pd.StringDtype):  # CSV/XLSX give text; JSON and Parquet may give anything
        nested = s.map(_nested)
        if nested.any():
            i = int(np.flatnonzero(nested.to_numpy())[0])
            kind = "a list" if isinstance(s.iloc[i], (list, np.ndarray)) else "an object"
            raise DataError(
                f"{where.at(int(batch.rows[i]), col)} holds {kind}, not text. Fix: choose a column of "
                "text for this role, or the chat shape if the column holds conversations."
            )
        s = s.map(cell_text)
    s = s.astype(str).fillna("")  # a JSON null in a text column is an empty cell
    _check_lengths(s, batch.rows, col, where, max_chars)
    return s.str.strip()


def _check_lengths(s: pd.Series, rows: np.ndarray, col: str, where: Where, max_chars: int) -> None:
    lengths = s.str.len().to_numpy()
    over = np.flatnonzero(lengths > max_chars)
    if len(over):
        i = int(over[0])
        raise DataError(_too_long_cell(where.at(int(rows[i]), col), int(lengths[i]), max_chars))


def _too_long_cell(place: str, n: int, max_chars: int) -> str:
    return (
        f"{place} holds {n:,} characters, more than the limit of {max_chars:,} for one cell. Fix: shorten or "
        "remove that cell, or raise the limit with the setting TUNEDECK_MAX_CELL_CHARS."
    )


def _normalise_pr(mapping: dict, batch: Batch, where: Where, max_chars: int) -> Normalised:
    prompt = _text_column(batch, mapping["prompt"], where, max_chars)
    response = _text_column(batch, mapping["response"], where, max_chars)
    system = _text_column(batch, mapping.get("system"), where, max_chars)
    if mapping.get("context"):
        context = _text_column(batch, mapping["context"], where, max_chars)
        has_both = prompt.ne("") & context.ne("")
        prompt = prompt.where(~has_both, prompt + "\n\n" + context).where(prompt.ne(""), context)
    empty_p = prompt.eq("").to_numpy()
    empty_r = response.eq("").to_numpy() & ~empty_p
    keep = ~(empty_p | empty_r)
    frame = pd.DataFrame(
        {
            "prompt": prompt[keep].tolist(),
            "response": response[keep].tolist(),
            "system": system[keep].tolist(),
            "source_row": batch.rows[keep].astype(np.int64),
        }
    )
    return Normalised(
        frame, {"empty_prompt": batch.rows[empty_p].tolist(), "empty_response": batch.rows[empty_r].tolist()}
    )


def _normalise_text(col: str, batch: Batch, where: Where, max_chars: int) -> Normalised:
    text = _text_column(batch, col, where, max_chars)
    empty = text.eq("").to_numpy()
    frame = pd.DataFrame({"text": text[~empty].tolist(), "source_row": batch.rows[~empty].astype(np.int64)})
    return Normalised(frame, {"empty_text": batch.rows[empty].tolist()})


def _normalise_chat(col: str, batch: Batch, where: Where, max_chars: int) -> Normalised:
    kept, rows = [], []
    dropped: dict[str, list[int]] = {"empty_chat": [], "empty_message": [], "invalid_roles": []}
    for value, row in zip(batch.frame[col].tolist(), batch.rows.tolist(), strict=True):
        msgs = parse_messages(value, where.at(int(row), col), max_chars)
        problem = chat_problem(msgs)
        if problem:
            dropped[problem].append(int(row))
            continue
        kept.append(json.dumps(msgs, ensure_ascii=False))
        rows.append(int(row))
    return Normalised(pd.DataFrame({"messages": kept, "source_row": np.array(rows, dtype=np.int64)}), dropped)


def _normalise_preference(
    shape: str, mapping: dict, batch: Batch, where: Where, max_chars: int
) -> Normalised:
    """Preference or feedback rows → prompt (JSON messages) and answer text(s). Each row's answers may be text or a
    conversation ending in the answer; the prompt is then the turns before it, else the prompt column."""
    answers = ("chosen", "rejected") if shape == "preference" else ("completion",)
    reasons = ["empty_prompt", *(f"empty_{a}" for a in answers), "invalid_roles", "no_answer"]
    if shape == "preference":
        reasons += ["same_answers", "prompts_differ"]
    dropped: dict[str, list[int]] = {r: [] for r in reasons}
    out: dict[str, list] = {"prompt": [], **{a: [] for a in answers}, "source_row": []}
    if shape == "feedback":
        out["label"] = []
    frame, cols = batch.frame, {k: v for k, v in mapping.items() if v}
    for i, row in enumerate(batch.rows.tolist()):
        row = int(row)
        cell = {k: frame[c].iloc[i] for k, c in cols.items()}
        try:
            texts, prefixes = {}, {}
            for a in answers:
                prefixes[a], texts[a] = _answer(cell.get(a), where.at(row, cols[a]), max_chars)
        except _Skip as skip:
            dropped[skip.reason].append(row)
            continue
        empty = next((a for a in answers if not texts[a]), None)
        if empty:
            dropped[f"empty_{empty}"].append(row)
            continue
        if shape == "preference":
            a, b = prefixes["chosen"], prefixes["rejected"]
            if a and b and a != b:
                dropped["prompts_differ"].append(row)
                continue
            if texts["chosen"] == texts["rejected"]:
                dropped["same_answers"].append(row)
                continue
        prefix = next((p for p in prefixes.values() if p), [])
        if prefix:
            prompt = prefix
        else:
            prompt = _prompt_messages(
                cell.get("prompt"), where.at(row, cols.get("prompt", "prompt")), max_chars
            )
        system = cell_text(cell["system"]).strip() if "system" in cell and not _blank(cell["system"]) else ""
        prompt = with_system(prompt, system) if prompt else prompt
        if not prompt or not any(m["content"] for m in prompt if m["role"] == "user"):
            dropped["empty_prompt"].append(row)
            continue
        if _prompt_problem(prompt):
            dropped["invalid_roles"].append(row)
            continue
        if shape == "feedback":
            label = parse_label(cell["label"]) if not _blank(cell["label"]) else None
            if label is None:
                raise DataError(
                    f"{where.at(row, cols['label'])} says {cell_text(cell['label'])!r}, which is neither good nor "
                    f"bad. {LABEL_FIX}"
                )
            out["label"].append("true" if label else "false")
        out["prompt"].append(json.dumps(prompt, ensure_ascii=False))
        for a in answers:
            out[a].append(texts[a])
        out["source_row"].append(row)
    result = pd.DataFrame({**out, "source_row": np.array(out["source_row"], dtype=np.int64)})
    return Normalised(result, dropped)


class _Skip(Exception):
    def __init__(self, reason: str):
        self.reason = reason


HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")


def _answer(value: Any, place: str, max_chars: int) -> tuple[list[dict[str, str]], str]:
    """(the turns before the answer, the answer's text) of one answer cell: text, a conversation ending in the
    answer, or HH-RLHF's "\n\nHuman: ...\n\nAssistant: ..." text."""
    if _blank(value):
        return [], ""
    if isinstance(value, (list, np.ndarray)) or (isinstance(value, str) and value.lstrip().startswith("[")):
        try:
            msgs = parse_messages(value, place, max_chars)
        except DataError:
            if isinstance(value, str):  # text that happens to start with "["
                return [], _checked(value, place, max_chars)
            raise
        if not msgs:
            return [], ""
        if msgs[-1]["role"] != "assistant":
            raise _Skip("no_answer")
        return msgs[:-1], msgs[-1]["content"]
    text = cell_text(value)
    if HH_TURN.match(text.lstrip("\n")) and "Assistant:" in text:
        turns = HH_TURN.split("\n\n" + text.lstrip("\n"))[1:]
        msgs = [
            {"role": "user" if who == "Human" else "assistant", "content": said.strip()}
            for who, said in zip(turns[::2], turns[1::2], strict=True)
        ]
        if not msgs or msgs[-1]["role"] != "assistant":
            raise _Skip("no_answer")
        return msgs[:-1], _checked(msgs[-1]["content"], place, max_chars)
    return [], _checked(text, place, max_chars)


def _checked(text: str, place: str, max_chars: int) -> str:
    if len(text) > max_chars:
        raise DataError(_too_long_cell(place, len(text), max_chars))
    return text.strip()


def _prompt_messages(value: Any, place: str, max_chars: int) -> list[dict[str, str]]:
    """A prompt cell → messages: text is one user message; a JSON list of messages is taken as it is."""
    if _blank(value):
        return []
    if isinstance(value, (list, np.ndarray)) or (isinstance(value, str) and value.lstrip().startswith("[")):
        try:
            return parse_messages(value, place, max_chars)
        except DataError:
            if not isinstance(value, str):
                raise
    return [{"role": "user", "content": _checked(cell_text(value), place, max_chars)}]


def _prompt_problem(msgs: list[dict[str, str]]) -> bool:
    """A prompt must be (system,) user, assistant, user, ... ending with the user's turn."""
    roles = [m["role"] for m in msgs]
    body = roles[1:] if roles[0] == "system" else roles
    return "system" in body or not body or body[-1] != "user" or body[0] != "user"


def parse_messages(value: Any, place: str, max_chars: int | None = None) -> list[dict[str, str]]:
    """One cell of a chat column → [{"role", "content"}], normalised from OpenAI or ShareGPT form.

    Structural problems (not a list, a message with no content, an unknown role) raise DataError naming the place.
    """
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{place} is not valid JSON ({exc.msg} at character {exc.pos + 1}). {MESSAGES_FIX}"
            ) from None
    if not isinstance(value, list):
        kind = {
            dict: "an object",
            str: "a string",
            int: "a number",
            float: "a number",
            bool: "true/false",
        }.get(type(value), type(value).__name__)
        raise DataError(f"{place} holds {kind}, not a list of messages. {MESSAGES_FIX}")
    out = []
    for i, m in enumerate(value, start=1):
        if not isinstance(m, dict):
            raise DataError(
                f"{place}: message {i} is not an object with a role and a content. {MESSAGES_FIX}"
            )
        role_key, content_key = ("from", "value") if "from" in m and "role" not in m else ("role", "content")
        if role_key not in m:
            raise DataError(f"{place}: message {i} has no 'role' (or ShareGPT 'from'). {MESSAGES_FIX}")
        content = m.get(content_key)
        if content is None:
            raise DataError(
                f"{place}: message {i} ({m[role_key]!r}) has no {content_key!r}. Fix: give every "
                f"message its text under {content_key!r} (tool calls are not supported)."
            )
        if isinstance(content, list):  # OpenAI content parts
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                raise DataError(
                    f"{place}: message {i} has content parts that are not text (images or tools). "
                    "Fix: TuneDeck trains on text only; keep only text parts."
                )
            content = "".join(str(p.get("text", "")) for p in content)
        if not isinstance(content, str):
            content = cell_text(content)
        role = ROLE_ALIASES.get(str(m[role_key]).strip().lower())
        if role is None:
            raise DataError(
                f"{place}: message {i} has the role {m[role_key]!r}, which TuneDeck does not know. Fix: use "
                "'system', 'user' or 'assistant' (ShareGPT: 'system', 'human' or 'gpt')."
            )
        if max_chars is not None and len(content) > max_chars:
            raise DataError(_too_long_cell(f"{place}, message {i}", len(content), max_chars))
        out.append({"role": role, "content": content.strip()})
    return out


def chat_problem(msgs: list[dict[str, str]]) -> str | None:
    """Why a well-formed conversation cannot be trained on (a key of REASONS), or None."""
    if not msgs:
        return "empty_chat"
    if any(not m["content"] for m in msgs if m["role"] != "system"):
        return "empty_message"
    roles = [m["role"] for m in msgs]
    if "system" in roles[1:]:
        return "invalid_roles"
    body = roles[1:] if roles[0] == "system" else roles
    if not body or body[0] != "user" or "assistant" not in body:
        return "invalid_roles"
    return None


# -- into TRL ------------------------------------------------------------------------------------------------------


def to_conversations(frame: Any, system_prompt: str = "") -> dict[str, list]:
    """prompt/response rows → TRL's conversational prompt/completion format (loss on the completion only)."""
    prompts, completions = [], []
    systems = frame["system"] if "system" in frame else [""] * len(frame)
    for p, r, s in zip(frame["prompt"], frame["response"], systems, strict=True):
        sys_text = s or system_prompt
        msgs = ([{"role": "system", "content": sys_text}] if sys_text else []) + [
            {"role": "user", "content": p}
        ]
        prompts.append(msgs)
        completions.append([{"role": "assistant", "content": r}])
    return {"prompt": prompts, "completion": completions}


def with_system(messages: list[dict[str, str]], system_prompt: str) -> list[dict[str, str]]:
    """``messages`` with ``system_prompt`` first when they have no system message: the rule training follows, and
    so chat, scoring and the GGUF export follow it too."""
    if system_prompt and (not messages or messages[0]["role"] != "system"):
        return [{"role": "system", "content": system_prompt}, *messages]
    return messages


def chat_messages(messages_json: str, system_prompt: str = "") -> list[dict[str, str]]:
    return with_system(json.loads(messages_json), system_prompt)


def to_trl_columns(frame: Any, shape: str, system_prompt: str = "") -> dict[str, list]:
    """Stored rows of one shape → the columns TRL's SFTTrainer reads.

    prompt_response → {"prompt": [[system?, user]], "completion": [[assistant]]} (loss on the completion);
    chat → {"messages": [[...]]} (for loss on the assistant turns only, SFTTrainer needs assistant_only_loss with a
    template that marks them, or the pre-tokenized columns from ``backend.data.chatformat.encode_rows``);
    text → {"text": [...]}. ``system_prompt`` fills in where a row has none (not for text).
    """
    if shape == "prompt_response":
        return to_conversations(frame, system_prompt)
    if shape == "chat":
        return {"messages": [chat_messages(m, system_prompt) for m in frame["messages"]]}
    if shape == "text":
        return {"text": [str(t) for t in frame["text"]]}
    raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")


def example_parts(shape: str, row: dict, system_prompt: str = "") -> dict[str, Any]:
    """One stored row as the messages (or text) the chat template renders."""
    if shape == "prompt_response":
        sys_text = row.get("system") or system_prompt
        prompt = ([{"role": "system", "content": sys_text}] if sys_text else []) + [
            {"role": "user", "content": row["prompt"]}
        ]
        return {"prompt": prompt, "completion": [{"role": "assistant", "content": row["response"]}]}
    if shape == "chat":
        return {"messages": chat_messages(row["messages"], system_prompt)}
    if shape in PREFERENCE_SHAPES:
        answer = row["completion"] if shape == "feedback" else row[row.get("side") or "chosen"]
        return {
            "prompt": chat_messages(row["prompt"], system_prompt),
            "completion": [{"role": "assistant", "content": answer}],
        }
    return {"text": str(row["text"])}


def preference_columns(frame: Any, shape: str, system_prompt: str = "") -> dict[str, list]:
    """Stored preference or feedback rows → the conversational columns TRL's DPO/ORPO and KTO trainers read:
    {"prompt": [[system?, user, ...]], "chosen": [[assistant]], "rejected": [[assistant]]}, or for KTO
    "completion" and a boolean "label". A preference set given to KTO is unpaired: each chosen answer good, each
    rejected one bad (as TRL's unpair_preference_dataset does)."""
    prompts = [chat_messages(p, system_prompt) for p in frame["prompt"]]

    def turn(text: str) -> list[dict[str, str]]:
        return [{"role": "assistant", "content": text}]

    if shape == "preference":
        return {
            "prompt": prompts,
            "chosen": [turn(t) for t in frame["chosen"]],
            "rejected": [turn(t) for t in frame["rejected"]],
        }
    if shape == "feedback":
        return {
            "prompt": prompts,
            "completion": [turn(t) for t in frame["completion"]],
            "label": [str(v) == "true" for v in frame["label"]],
        }
    raise ValueError(f"{shape!r} is not preference data")


def unpaired(columns: dict[str, list]) -> dict[str, list]:
    """Preference columns → KTO's: every pair becomes a good and a bad answer to the same prompt."""
    n = len(columns["prompt"])
    return {
        "prompt": columns["prompt"] * 2,
        "completion": columns["chosen"] + columns["rejected"],
        "label": [True] * n + [False] * n,
    }
