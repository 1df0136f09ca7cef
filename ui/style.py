"""Small shared bits of presentation."""

from __future__ import annotations

import html
import re

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
