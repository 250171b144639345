"""Home page: choose the working dataset, browse it (gallery + metadata table), pick and view
the working image."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.io import LoadError
from ui import data, picker, state
from ui.common import header, plain_name, safe_text, show_errors
from ui.viewer import viewer

SOURCES = {"sample": "Built-in sample dataset", "upload": "Upload files", "folder": "Server folder"}
GALLERY_PAGE = 24
TABLE_COLUMNS = ["id", "name", "format", "modality", "label", "subject", "role", "pair_id", "pair_role"]


def _source_picker() -> None:
    cur = state.get(state.K_SOURCE, "sample")
    choice = st.radio("Working dataset", list(SOURCES), format_func=SOURCES.get, index=list(SOURCES).index(cur),
                      horizontal=True, key="home.source")
    if choice != cur:
        state.set(state.K_SOURCE, choice)
        state.set(state.K_IMAGE, None)
        state.set(state.K_PAIR, None)
    if choice == "sample" and data.sample_dataset() is None:
        st.warning("The sample dataset has not been built on this server yet. Run `make sample` "
                   "(`make run` does it automatically), then reload.")
    elif choice == "upload":
        _uploader()
    elif choice == "folder":
        _folder_input()


def _uploader() -> None:
    files = st.file_uploader(
        "DICOM (any transfer syntax, multi-frame, series), PNG / JPEG / TIFF (8/16-bit), NIfTI, or a ZIP of a folder",
        accept_multiple_files=True, key="home.upload",
        help="Files stay in your session's private folder on this server and are deleted after 24 h.",
    )
    done: set = st.session_state.setdefault("medlens.upload_done", set())
    new = [f for f in (files or []) if f.file_id not in done]
    if new:
        batch = []
        for f in new:
            done.add(f.file_id)
            batch.append((f.name, f.getvalue()))
        with st.spinner(f"Reading {len(batch)} file(s)…"):
            data.add_uploads(batch)
        up = state.get(state.K_UPLOADS)
        if up is not None and len(up):
            picker.choose_image(str(up.entries["id"].iloc[-1]))
        st.rerun()  # so the sidebar picker (drawn before this page) shows the new images
    show_errors(state.get(state.K_UPLOAD_ERRORS, []) or [])


def _folder_input() -> None:
    with st.form("home.folder_form"):
        folder = st.text_input("Folder on this server", value=state.get(state.K_FOLDER) or "",
                               placeholder="/data/study42", help="Scanned recursively; sub-folder names become labels.")
        ok = st.form_submit_button("Open folder")
    if ok:
        from pathlib import Path

        p = Path(folder).expanduser()
        if not folder.strip() or not p.is_dir():
            st.error(f"Not a readable folder: {safe_text(folder)}")
        else:
            state.set(state.K_FOLDER, str(p))
            state.set(state.K_IMAGE, None)


def _filtered_table(df: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in TABLE_COLUMNS if c in df.columns]
    with st.expander("Filter", expanded=False):
        text = st.text_input("Name contains", key="home.filter.text")
        c1, c2, c3 = st.columns(3)
        filters = {}
        for col, box in zip(("modality", "label", "role"), (c1, c2, c3)):
            if col in df.columns:
                opts = sorted(v for v in df[col].astype(str).unique() if v)
                if opts:
                    filters[col] = box.multiselect(col.capitalize(), opts, key=f"home.filter.{col}")
    out = df
    if text:
        out = out[out["name"].astype(str).str.contains(text, case=False, regex=False)]
    for col, vals in filters.items():
        if vals:
            out = out[out[col].astype(str).isin(vals)]
    return out[cols]


def _table(view: pd.DataFrame) -> None:
    shown = view.copy()
    shown["name"] = [plain_name(n) for n in shown["name"]]

    def _on_select() -> None:
        sel = st.session_state.get("home.table", {})
        rows = (sel or {}).get("selection", {}).get("rows", [])
        if rows:
            picker.choose_image(str(view["id"].iloc[rows[0]]))

    st.dataframe(shown, hide_index=True, width="stretch", height=280, key="home.table",
                 on_select=_on_select, selection_mode="single-row")


def _gallery(dataset, view: pd.DataFrame) -> None:  # type: ignore[no-untyped-def]
    n = len(view)
    pages = max(1, (n + GALLERY_PAGE - 1) // GALLERY_PAGE)
    page = st.number_input("Gallery page", 1, pages, 1, key="home.gallery.page") if pages > 1 else 1
    sub = view.iloc[(page - 1) * GALLERY_PAGE : page * GALLERY_PAGE]
    cols = st.columns(8)
    for k, eid in enumerate(sub["id"].astype(str)):
        entry = dataset.entry(eid)
        with cols[k % 8]:
            thumb = data.thumbnail(entry)
            if thumb is not None:
                st.image(thumb, width="stretch")
            else:
                st.caption("⚠️ unreadable")
            # button labels and tooltips render Markdown: escape user-supplied names
            st.button(safe_text(entry["name"], 18), key=f"home.g.{eid}", on_click=picker.choose_image, args=(eid,),
                      help=safe_text(entry["name"]), width="stretch")


def home_page() -> None:
    header("MedLens", "Exploratory medical image analysis: techniques on one image, statistics over the whole dataset — "
           "in physical units (HU, mm), with DICOM windowing done right.")
    _source_picker()
    dataset = data.working_dataset()
    if dataset is None or not len(dataset):
        st.info("No images in the working dataset yet.")
        return
    df = dataset.entries
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Images", len(df))
    m2.metric("Modalities", df["modality"].astype(str).replace("", pd.NA).nunique())
    m3.metric("Labelled", int((df["label"].astype(str) != "").sum()))
    m4.metric("Pairs", len(dataset.pairs()))
    view = _filtered_table(df)
    st.caption(f"{len(view)} of {len(df)} images · click a row or a thumbnail to make it the working image")
    _table(view)
    if len(view):
        _gallery(dataset, view)
    st.divider()
    entry = data.working_entry(dataset)
    if entry is None:
        return
    st.subheader(f"Working image: {safe_text(entry['name'])}")
    try:
        image = data.load(entry)
    except LoadError as exc:
        show_errors([{"file": exc.filename, "reason": exc.reason}])
        return
    viewer(image, key="home.viewer")
