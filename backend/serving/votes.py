"""Blind-test votes as data: preference pairs for DPO/ORPO, and each contestant's win rate over time.

A vote says which of two hidden answers to one prompt was better; that is a preference pair (chosen, rejected),
the data DPO and ORPO train on. ``preference_rows`` turns votes into pairs and says why any vote gave none;
``export_votes`` saves the pairs as a dataset of shape "preference" through the ordinary import (same checks, same
report, an immutable version). Pure apart from ``export_votes``: no torch, no gradio.

Which pairs a vote gives:

- A or B won: the winner's answer is chosen, the loser's rejected.
- A written better answer (the box asks for one "better than both") is chosen against each answer shown: the loser
  and the winner, or both sides of a tie. A vote A > B with a written answer W is a ranking W > A > B, and a
  ranking gives every pair in it (as ranked comparisons are used for reward models and DPO), so three pairs.
- Left out, with a reason in ``counts``: a tie with nothing written (neither is better), one contestant against
  itself or the same answer twice (nothing to prefer), a vote from before TuneDeck kept the answers, an empty answer.
  A written answer still counts on a tie or a same-answer vote: it is better than what was shown.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Iterable
from typing import Any

from backend.core.store import Vote

BASE = "base model"  # the blind test's name for the base model alone (a vote's left or right)
# Why a vote gave no pair, in words a person reads in the export's message and in `tunedeck votes export`.
NO_ANSWERS = "from before TuneDeck kept the answers"
TIE = "ties with no better answer written"
SAME = "the same contestant or the same answer on both sides"
EMPTY = "an empty answer"
REASONS = (NO_ANSWERS, TIE, SAME, EMPTY)

NO_PAIRS_FIX = "vote A or B on a few more prompts, or write a better answer"


def prompt_messages(vote: Vote) -> list[dict[str, str]]:
    """The conversation both contestants answered: the system prompt first (if there was one), then the prompt."""
    system = [{"role": "system", "content": vote.system}] if (vote.system or "").strip() else []
    return [*system, {"role": "user", "content": vote.prompt}]


def vote_pairs(vote: Vote) -> tuple[list[tuple[str, str]], str | None]:
    """The (chosen, rejected) answers one vote gives, and why it gave none (a reason from ``REASONS``) or None."""
    if not vote.has_answers:
        return [], NO_ANSWERS
    a, b = vote.left_answer or "", vote.right_answer or ""
    same = vote.left == vote.right or a.strip() == b.strip()
    empty = not a.strip() or not b.strip()
    pairs: list[tuple[str, str]] = []
    if vote.winner != "tie" and not same and not empty:
        pairs.append((a, b) if vote.winner == vote.left else (b, a))
    written = (vote.better or "").strip()
    if written:
        shown = [a] if a.strip() == b.strip() else [a, b]
        pairs += [(written, x) for x in shown if x.strip() and x.strip() != written]
    pairs = list({(c.strip(), r.strip()): (c, r) for c, r in pairs}.values())  # a written copy of the winner
    if pairs:
        return pairs, None
    return [], SAME if same else EMPTY if empty else TIE


def preference_rows(votes: Iterable[Vote]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Votes as preference rows ``{"prompt": [messages], "chosen": text, "rejected": text}``, and the counts:
    ``votes``, ``pairs``, ``written`` (pairs whose chosen answer the person wrote) and ``left_out`` (reason ->
    number of votes that gave no pair; only reasons that occurred)."""
    rows: list[dict[str, Any]] = []
    counts: dict[str, Any] = {"votes": 0, "pairs": 0, "written": 0, "left_out": {}}
    for vote in votes:
        counts["votes"] += 1
        pairs, reason = vote_pairs(vote)
        if reason:
            counts["left_out"][reason] = counts["left_out"].get(reason, 0) + 1
        written = (vote.better or "").strip()
        prompt = prompt_messages(vote)
        for chosen, rejected in pairs:
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
            counts["written"] += int(bool(written) and chosen == written)
        counts["pairs"] += len(pairs)
    return rows, counts


def voted_run(votes: Iterable[Vote], eligible: Iterable[str] | None = None) -> str | None:
    """The run the votes were about: the one to start a preference run from, on the dataset the votes make (its
    answers are what the votes judged). The run in the most votes that give a pair, the one voted on last breaking
    a tie; only runs in ``eligible`` (e.g. finished, with an adapter) when given. None when no such vote has a run
    in it (the base model against itself, or no votes)."""
    allowed = None if eligible is None else set(eligible)
    seen: dict[str, tuple[int, int]] = {}  # run -> (votes, the latest vote's position)
    for n, vote in enumerate(votes):
        if not vote_pairs(vote)[0]:
            continue
        for name, model in ((vote.left, vote.left_model), (vote.right, vote.right_model)):
            run = model.get("run") if model else (None if name == BASE else name)
            if run and (allowed is None or run in allowed):
                seen[run] = (seen.get(run, (0, 0))[0] + 1, n)
    return max(seen, key=lambda r: seen[r]) if seen else None


def left_out_text(counts: dict[str, Any]) -> str:
    """The votes that gave no pair, in words: "ties with no better answer written (2), from before ... (1)"."""
    return ", ".join(f"{reason} ({n})" for reason, n in counts.get("left_out", {}).items())


def _n(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def counts_text(counts: dict[str, Any]) -> str:
    """What became of the votes, in one sentence for the UI and the CLI."""
    made = f"{_n(counts['pairs'], 'preference pair')} from {_n(counts['votes'], 'vote')}"
    if counts.get("written"):
        made += f" ({counts['written']} with your written answer as the better one)"
    gone = left_out_text(counts)
    return made + (f"; left out: {gone}" if gone else "") + "."


def no_pairs_message(counts: dict[str, Any]) -> str:
    """Why there is nothing to export, and what to do (a DataError's text: the problem, then "Fix:")."""
    if not counts["votes"]:
        return (
            "There are no blind-test votes yet. Fix: in Compare > Blind test, get two answers and vote A or B on "
            "a few prompts (or write a better answer)."
        )
    return (
        f"No preference pairs in {_n(counts['votes'], 'vote')}, left out: {left_out_text(counts)}. "
        f"Fix: {NO_PAIRS_FIX}."
    )


def default_name(taken: Iterable[str], today: dt.date) -> str:
    """ "votes-<date>", or "votes-<date>-2", ... when that name is taken (a second export on the same day)."""
    used = set(taken)
    base = f"votes-{today.isoformat()}"
    n = 1
    name = base
    while name in used:
        n += 1
        name = f"{base}-{n}"
    return name


def export_votes(store: Any, paths: Any, name: str | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Save the votes' preference pairs as a new dataset of shape "preference". Returns (DatasetRecord,
    ImportReport, counts). Raises DataError when no vote gives a pair (with how many there were and why) or when
    the import refuses the rows (e.g. the name is taken). The rows go through a JSONL file in ``paths.tmp``, so
    they get the import's checks and report; the file is removed whatever happens."""
    from backend.core.store import VoteStore
    from backend.data.datasets import MIN_ROWS, import_dataset
    from backend.data.readers import DataError

    rows, counts = preference_rows(VoteStore(store).votes())
    if not rows:
        raise DataError(no_pairs_message(counts))
    # Too few pairs is said here, in the votes' terms: the import would name a file the person never saw.
    if len(rows) < MIN_ROWS:
        raise DataError(
            f"Only {counts_text(counts)} A dataset needs at least {MIN_ROWS} pairs. Fix: {NO_PAIRS_FIX}."
        )
    if not (name or "").strip():
        name = default_name((d.name for d in store.list_datasets()), dt.date.today())
    paths.tmp.mkdir(parents=True, exist_ok=True)
    file = paths.tmp / f"votes-{secrets.token_hex(6)}.jsonl"
    try:
        with file.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        record, report = import_dataset(
            store,
            paths,
            file,
            name=name,
            display_name="blind-test votes.jsonl",
            shape="preference",
            mapping={"prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "system": None},
            validation="auto",
        )
    finally:
        file.unlink(missing_ok=True)
    return record, report, counts


# -- win rates over time -------------------------------------------------------------------------------------------


def win_rate_history(votes: Iterable[Vote]) -> list[dict[str, Any]]:
    """Each contestant's win rate (ties count half, as in the win-rate table) after each vote it took part in:
    rows ``{"vote", "time", "contestant", "win rate", "games"}`` (``vote``: how many votes so far, all
    contestants), oldest first. Shows whether a model's rate has settled or still moves with every vote."""
    tally: dict[str, list[float]] = {}  # contestant -> [points, games]
    out: list[dict[str, Any]] = []
    for n, vote in enumerate(votes, start=1):
        for me in (vote.left, vote.right):
            points = 1.0 if vote.winner == me else 0.5 if vote.winner == "tie" else 0.0
            t = tally.setdefault(me, [0.0, 0])
            t[0] += points
            t[1] += 1
            out.append(
                {"vote": n, "time": vote.time, "contestant": me, "win rate": t[0] / t[1], "games": int(t[1])}
            )
    return out


def vote_view(vote: Vote) -> dict[str, Any]:
    """One vote for `tunedeck votes list --json`: who was A and B, who won, and whether it can become data."""
    return {
        "id": vote.id,
        "time": dt.datetime.fromtimestamp(vote.time).isoformat(timespec="seconds"),
        "prompt": vote.prompt,
        "system": vote.system,
        "a": vote.left,
        "b": vote.right,
        "winner": vote.winner,
        "better_answer": bool((vote.better or "").strip()),
        "answers_kept": vote.has_answers,
        "decoding": vote.decoding,
    }
