"""Privacy widgets every page shows before an export.

* :func:`burned_in_gate` — when the pixels may carry burned-in identifying text
  (``BurnedInAnnotation = YES``, or not stated for US / SC / OT / photographs, or a
  PNG/JPEG/TIFF picture), a warning and a confirmation checkbox. Returns whether a DICOM
  export may proceed: pages pass ``disabled=not ok`` to the DICOM download button. Picture
  (PNG) exports are only warned about.
* :func:`removal_preview` — an expander with the "what would be removed" table of
  :func:`analysis.deid.preview_removal` for the working image's source file: tag, keyword,
  action, effect; never a value.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from analysis import deid
from analysis.image import Image
from ui.common import safe_text

__all__ = ["burned_in_gate", "removal_preview", "preview_table"]

CONFIRM_LABEL = "I have looked at the pixels: they show no names, dates, IDs or other identifying text"


def burned_in_gate(image: Image, key: str) -> bool:
    """Warn about burned-in text; ``True`` when a DICOM export may proceed (no risk, or the
    user ticked the confirmation). The confirmation is per image and per page (``key``)."""
    risk = deid.burned_in_risk(image)
    if risk is None:
        return True
    st.warning(
        f"**Burned-in text** — {safe_text(risk, 400)} De-identification removes header fields only; "
        "text inside the pixels stays in every exported picture. The DICOM export is blocked until you confirm.",
        icon="⚠️",
    )
    return bool(st.checkbox(CONFIRM_LABEL, key=f"{key}.burned_in_ok.{image.digest[:16]}", value=False))


@st.cache_data(show_spinner=False, max_entries=256, ttl=3600)
def _file_preview(digest: str, path: str) -> pd.DataFrame | None:
    """Preview of a server-side DICOM file (sample / folder): header only; rows carry no values."""
    import warnings

    import pydicom

    from analysis import io

    try:
        with open(path, "rb") as fh:
            head = fh.read(io.HEAD_BYTES)
        if io.sniff_format(head) != "dicom" or head[:2] == b"\x1f\x8b":
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        return deid.preview_removal(ds)
    except Exception:  # noqa: BLE001 - an unreadable header has nothing to preview
        return None


def preview_table(entry: dict[str, Any] | None) -> pd.DataFrame | None:
    """The "what would be removed" table for a dataset entry, or ``None`` when its source is
    not a single DICOM file (uploads carry the table computed at upload time)."""
    if not entry:
        return None
    stored = str(entry.get("deid_preview", "") or "")
    if stored:
        try:
            return pd.DataFrame(json.loads(stored), columns=["tag", "keyword", "action", "effect"])
        except (ValueError, TypeError):
            return None
    if entry.get("role") == "upload":
        return None
    from analysis import dataset as ds
    from ui import data

    p = ds.entry_path(entry)
    if not p.is_file():
        return None
    return _file_preview(data.entry_digest(entry), str(p))


def removal_preview(key: str, entry: dict[str, Any] | None = None) -> pd.DataFrame | None:
    """Expander "What an export removes" for ``entry`` (default: the working image)."""
    if entry is None:
        from ui import data

        entry = data.working_entry()
    df = preview_table(entry)
    with st.expander("What an export removes (de-identification preview)", expanded=False):
        if df is None:
            st.caption("The source is not a single DICOM file, so it has no header fields to remove. Exports never "
                       "copy PNG text chunks, EXIF or TIFF descriptions: a picture export holds pixels only.")
        elif df.empty:
            st.caption("No identifying header fields were found in the source file.")
        else:
            counts = df["effect"].value_counts()
            st.caption(f"{len(df)} header fields of the source would be removed or replaced "
                       f"(DICOM PS3.15 Annex E basic profile, Table E.1-1 {deid.PROFILE_EDITION}). Values are never "
                       "shown here. " + "; ".join(f"{n} {safe_text(e)}" for e, n in counts.items()))
            st.dataframe(df, hide_index=True, width="stretch", height=min(400, 38 + 35 * len(df)), key=f"{key}.deid_preview")
        st.caption("The DICOM export is a new derived image: only pixels and technical fields (modality, spacing, "
                   "rescale, window) are written; new UIDs; PatientIdentityRemoved = YES.")
    return df
