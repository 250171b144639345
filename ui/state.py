"""Session-state keys and the shared working-image / working-pair choice.

Only ids, parameters and digests live in session state — never pixel data of other users,
never patient identifiers.
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import streamlit as st

from analysis.dataset import app_home

K_SESSION = "medlens.session_id"
K_SOURCE = "medlens.source"  # "sample" | "upload" | "folder"
K_FOLDER = "medlens.folder"
K_UPLOADS = "medlens.uploads"  # Dataset of this session's uploads
K_UPLOAD_ERRORS = "medlens.upload_errors"
K_IMAGE = "medlens.image_id"  # working image entry id
K_PAIR = "medlens.pair"  # (fixed_id, moving_id)
K_PLANE = "medlens.plane"  # slice/frame index of the working image

SESSION_MAX_AGE_S = 24 * 3600


def session_id() -> str:
    if K_SESSION not in st.session_state:
        st.session_state[K_SESSION] = uuid.uuid4().hex
    return st.session_state[K_SESSION]


def session_dir() -> Path:
    """This user's private folder inside the app's own folder (uploads, exports)."""
    d = app_home() / "sessions" / session_id()
    d.mkdir(parents=True, exist_ok=True)
    return d


def prune_old_sessions(max_age_s: float = SESSION_MAX_AGE_S) -> int:
    """Delete session folders untouched for ``max_age_s`` (uploads are not kept forever)."""
    root = app_home() / "sessions"
    if not root.is_dir():
        return 0
    n = 0
    now = time.time()
    for d in root.iterdir():
        try:
            if d.is_dir() and now - d.stat().st_mtime > max_age_s:
                shutil.rmtree(d, ignore_errors=True)
                n += 1
        except OSError:
            continue
    return n


def get(key: str, default=None):  # type: ignore[no-untyped-def]
    return st.session_state.get(key, default)


def set(key: str, value) -> None:  # type: ignore[no-untyped-def]  # noqa: A001
    st.session_state[key] = value


def memo(namespace: str, key: tuple, make, size: int = 24):  # type: ignore[no-untyped-def]
    """Per-session LRU cache: ``make()`` once per ``key`` within this browser session.

    Results derived from a user's images live only in that user's session state, so they can
    never reach another session (unlike Streamlit's shared caches)."""
    from collections import OrderedDict

    lru: OrderedDict = st.session_state.setdefault(f"medlens.memo.{namespace}", OrderedDict())
    if key in lru:
        lru.move_to_end(key)
        return lru[key]
    val = make()
    lru[key] = val
    while len(lru) > size:
        lru.popitem(last=False)
    return val
