"""Small shared bits of presentation."""

from __future__ import annotations

import html
import re
from typing import Any

CSS = """
.td-error { border-left: 4px solid #d33; background: #fff1f1; padding: 8px 12px; border-radius: 4px; color: #611; }
.td-ok { border-left: 4px solid #2a7; background: #effaf3; padding: 8px 12px; border-radius: 4px; color: #143; }
.td-note { border-left: 4px solid #d90; background: #fff8e6; padding: 8px 12px; border-radius: 4px; color: #541; }
"""


def _box(cls: str, text: str) -> str:
    body = "<br>".join(html.escape(line) for line in text.splitlines())
    return f'<div class="{cls}">{body}</div>'


def error_md(text: str) -> str:
    return _box("td-error", text)


def ok_md(text: str) -> str:
    # Allow **bold** in our own messages: escape first, then turn **x** into <b>x</b>.
    body = "<br>".join(html.escape(line) for line in text.splitlines())
    body = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", body)
    return f'<div class="td-ok">{body}</div>'


def note_md(text: str) -> str:
    return _box("td-note", text)


# Colours of chart lines, in order: Gradio's orange first, then colours that stay apart for colour-blind eyes.
LINE_COLOURS = ("#f97316", "#2563eb", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777")


def curve_frame(
    rows: list, columns: tuple[str, ...] = ("step", "loss", "series"), names: tuple[str, ...] = ()
) -> Any:
    """Points for a gr.LinePlot coloured by its "series" column, in the form Gradio 6 can draw.

    Gradio fixes a coloured chart's Vega spec from the first frame it receives: the colour column's type from the
    frame's dtypes (an empty frame has float columns: "quantitative", and nothing is ever drawn) and the colour
    domain from the series names present then (a line that appears later, such as the validation loss, is never
    drawn). So the columns are typed even when empty, and every name in ``names`` is present from the start, as
    one point with no value (drawn as nothing) where it has no real points yet."""
    import math

    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(columns))
    present = set(frame["series"]) if len(frame) else set()
    filler = [
        {"step": 0, "series": n, **{c: math.nan for c in columns if c not in ("step", "series")}}
        for n in names
        if n not in present
    ]
    if filler:
        frame = pd.concat([frame, pd.DataFrame(filler, columns=list(columns))], ignore_index=True)
    # the measured columns are quantities (a "reward" typed as text made its axis one of sorted labels); others,
    # such as a run's name, stay text
    numeric = ("loss", "value", "reward")
    return frame.astype(
        {c: ("int64" if c == "step" else "float64" if c in numeric else "object") for c in columns}
    )
