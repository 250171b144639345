"""MedLens entry point: `streamlit run app.py` (or `make run`)."""

from __future__ import annotations


def _icon():  # type: ignore[no-untyped-def]
    """A local favicon: Material/emoji page icons make the browser fetch from the internet."""
    import numpy as np
    from PIL import Image as PILImage

    rr, cc = np.mgrid[:32, :32]
    disk = (rr - 15.5) ** 2 + (cc - 15.5) ** 2 < 14 ** 2
    lens = (rr - 13) ** 2 + (cc - 18) ** 2 < 5 ** 2
    rgb = np.zeros((32, 32, 4), np.uint8)
    rgb[disk] = (31, 78, 121, 255)
    rgb[lens] = (245, 133, 24, 255)
    return PILImage.fromarray(rgb, "RGBA")


def main() -> None:
    import streamlit as st

    st.set_page_config(page_title="MedLens", page_icon=_icon(), layout="wide")
    from ui import picker, state

    pages = [
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
    nav = st.navigation(pages)
    picker.sidebar()
    nav.run()


# Worker processes (batch map, Dask nanny workers, decoder sandbox) start with "spawn"/"forkserver"
# and import the parent's main script as "__mp_main__"; under Streamlit that is this file. They
# need none of the app: skip it there (Streamlit itself is imported in main() only, so a worker
# does not pay for importing it).
if __name__ != "__mp_main__":
    main()
