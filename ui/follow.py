"""What a run picker shows when its tab opens: the run the person just trained, or what they had picked.

Gradio fixes a dropdown's value when the page is built (at server start), so without this Chat would open on the
base model and Compare and Share on nothing, after the person has just trained a run. Pure functions, tested alone.
"""

from __future__ import annotations

from typing import Any


def follow(current: Any, valid: list[str], newest: str | None, seen: str | None) -> str | None:
    """One picker: the newest finished run if it finished since the person last opened this tab (``seen``), else
    their pick while it is still a choice, else the newest run, else the first choice."""
    if newest and newest != seen:
        return newest
    if isinstance(current, str) and current in valid:
        return current
    if newest in valid:
        return newest
    return valid[0] if valid else None


def follow_many(current: Any, valid: list[str], newest: str | None, seen: str | None, most: int) -> list[str]:
    """A multi-select picker: the person's picks that are still choices, with the newest run added when it is new
    since they last looked (the oldest pick makes room), or the newest run alone when nothing is picked."""
    picks = [r for r in (current or []) if r in valid]
    if newest and newest in valid and (newest != seen or not picks) and newest not in picks:
        picks = (picks + [newest])[-most:]
    return picks
