"""The shared picker: one working image and one working pair for every page (sidebar)."""

from __future__ import annotations

import streamlit as st

from analysis.dataset import Dataset
from ui import data, state
from ui.common import plain_name

W_IMAGE = "picker.image"
W_FIXED = "picker.fixed"
W_MOVING = "picker.moving"


def _label(dataset: Dataset) -> dict[str, str]:
    e = dataset.entries
    labels = {}
    for eid, name, lab in zip(e["id"].astype(str), e["name"].astype(str), e.get("label", [""] * len(e))):
        extra = f" · {lab}" if str(lab) else ""
        labels[eid] = plain_name(f"{name}{extra}", 80)
    return labels


def choose_image(entry_id: str) -> None:
    """Make ``entry_id`` the working image (safe to call from widget callbacks)."""
    state.set(state.K_IMAGE, str(entry_id))
    state.set(state.K_PLANE, None)
    st.session_state[W_IMAGE] = str(entry_id)


def choose_pair(a: str, b: str) -> None:
    state.set(state.K_PAIR, (str(a), str(b)))
    st.session_state[W_FIXED] = str(a)
    st.session_state[W_MOVING] = str(b)


def sidebar() -> None:
    """Sidebar picker shown on every page."""
    dataset = data.working_dataset()
    with st.sidebar:
        src = state.get(state.K_SOURCE, "sample")
        st.caption(f"Working dataset: **{ {'sample': 'built-in sample', 'upload': 'your uploads', 'folder': 'server folder'}.get(src, src) }**")
        if dataset is None or not len(dataset):
            st.caption("No images yet — choose a dataset on Home.")
            return
        labels = _label(dataset)
        ids = list(labels)
        cur = state.get(state.K_IMAGE)
        if cur not in labels:
            cur = ids[0]
            state.set(state.K_IMAGE, cur)
        if st.session_state.get(W_IMAGE) not in labels:
            st.session_state[W_IMAGE] = cur

        def _on_image() -> None:
            choose_image(st.session_state[W_IMAGE])

        st.selectbox("Working image", ids, format_func=labels.get, key=W_IMAGE, on_change=_on_image,
                     help="Every technique page works on this image. Also set by clicking a row on Home.")
        with st.expander("Working pair (fusion, registration)"):
            pair = state.get(state.K_PAIR)
            if not pair or pair[0] not in labels or pair[1] not in labels:
                pairs = dataset.pairs(("fixed", "moving")) or dataset.pairs()
                pair = (str(pairs[0][0]["id"]), str(pairs[0][1]["id"])) if pairs else (ids[0], ids[min(1, len(ids) - 1)])
                state.set(state.K_PAIR, pair)
            for w, v in ((W_FIXED, pair[0]), (W_MOVING, pair[1])):
                if st.session_state.get(w) not in labels:
                    st.session_state[w] = v

            def _on_pair() -> None:
                state.set(state.K_PAIR, (st.session_state[W_FIXED], st.session_state[W_MOVING]))

            st.selectbox("Fixed / reference (A)", ids, format_func=labels.get, key=W_FIXED, on_change=_on_pair)
            st.selectbox("Moving / second (B)", ids, format_func=labels.get, key=W_MOVING, on_change=_on_pair)
            pairs = dataset.pairs()
            if pairs:
                names = {f"{p[0]['pair_id']}": p for p in pairs}
                pick = st.selectbox("…or a known pair of the dataset", ["—"] + list(names), key="picker.knownpair")
                if pick != "—":
                    a, b = names[pick]
                    st.button("Use this pair", key="picker.usepair", on_click=choose_pair, args=(a["id"], b["id"]))
