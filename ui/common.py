"""Small Streamlit helpers shared by every page: page header, safe text, error lists."""

from __future__ import annotations

import re
from typing import Iterable

import pandas as pd
import streamlit as st

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$&:])")
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f]")


def safe_text(s: object, limit: int = 200) -> str:
    """A user-supplied string (file name, reason) made inert for Markdown/HTML display:
    bidi overrides shown as visible codes, Markdown and HTML specials escaped, length capped."""
    t = str(s)
    t = _BIDI.sub(lambda m: f"<U+{ord(m.group(0)):04X}>", t)
    t = "".join(ch if ch.isprintable() else "?" for ch in t)
    if len(t) > limit:
        t = t[: limit - 1] + "…"
    # Streamlit renders Markdown without raw HTML; backslash-escaping every Markdown/HTML special
    # character makes the text literal (no links, images, emphasis or tags), apostrophes intact.
    return _MD_SPECIAL.sub(r"\\\1", t)


def plain_name(s: object, limit: int = 120) -> str:
    """A file name for widgets that render plain text (labels of selectboxes, tables)."""
    t = _BIDI.sub(lambda m: f"<U+{ord(m.group(0)):04X}>", str(s))
    t = "".join(ch if ch.isprintable() else "?" for ch in t)
    return t if len(t) <= limit else t[: limit - 1] + "…"


def header(title: str, intro: str = "") -> None:
    st.title(title)
    if intro:
        st.caption(intro)


def show_errors(errors: Iterable[dict], *, title: str = "Files that could not be used") -> None:
    """Per-file error list: each row names the file (escaped) and a plain reason."""
    errors = list(errors)
    if not errors:
        return
    if len(errors) <= 5:
        for e in errors:
            st.error(f"**{safe_text(e.get('file', '?'))}** — {safe_text(e.get('reason', ''), 400)}", icon="⚠️")
    else:
        st.error(f"{len(errors)} files could not be used; the rest loaded. Details below.", icon="⚠️")
        st.dataframe(
            pd.DataFrame({"file": [plain_name(e.get("file", "")) for e in errors],
                          "reason": [plain_name(e.get("reason", ""), 400) for e in errors]}),
            hide_index=True, width="stretch",
        )


def not_built(what: str, issue: str) -> None:
    st.info(f"{what} is not built yet ({issue}). This page will offer it once that work lands; nothing here is simulated.")
