"""MedLens entry point: `streamlit run app.py` (or `make run`)."""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="MedLens", page_icon=":material/radiology:", layout="wide")

from ui import picker, state  # noqa: E402  (after set_page_config)

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/enhancement.py", title="Enhancement", icon=":material/auto_fix_high:", url_path="Enhancement"),
    st.Page("pages/segmentation.py", title="Segmentation", icon=":material/category:", url_path="Segmentation"),
    st.Page("pages/fusion.py", title="Fusion", icon=":material/layers:", url_path="Fusion"),
    st.Page("pages/registration.py", title="Registration", icon=":material/center_focus_strong:", url_path="Registration"),
    st.Page("pages/recognition.py", title="Recognition", icon=":material/search:", url_path="Recognition"),
    st.Page("pages/dataset.py", title="Dataset", icon=":material/dataset:", url_path="Dataset"),
]

if "medlens.pruned" not in st.session_state:
    st.session_state["medlens.pruned"] = state.prune_old_sessions()
nav = st.navigation(PAGES)
picker.sidebar()
nav.run()
