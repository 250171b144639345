"""AppTest (no browser): every page starts without an exception; the shared picker's choice
reaches other pages."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["pages/home.py", "pages/enhancement.py", "pages/segmentation.py", "pages/fusion.py",
         "pages/registration.py", "pages/recognition.py", "pages/dataset.py"]


def _app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("page", PAGES)
def test_every_page_starts_without_exception(page):
    at = _app()
    at.switch_page(page).run()
    assert not at.exception, [e.message for e in at.exception]


def test_home_shows_sample_dataset_and_viewer():
    at = _app()
    imgs = [m for m in at.metric if m.label == "Images"]
    assert imgs and int(imgs[0].value) >= 200
    assert any("Working image" in s.value for s in at.subheader)
    assert at.get("plotly_chart"), "viewer figure missing"


def test_picker_choice_reaches_another_page():
    at = _app()
    from analysis.dataset import load_sample

    sample = load_sample()
    chosen = str(sample.entries["id"].iloc[5])
    at.selectbox(key="picker.image").set_value(chosen).run()
    assert not at.exception
    at.switch_page("pages/enhancement.py").run()
    assert not at.exception
    assert at.session_state["medlens.image_id"] == chosen
    # the enhancement page names the working image it works on
    name = sample.entry(chosen)["name"]
    texts = [c.value.replace("\\", "") for c in at.caption] + [m.value.replace("\\", "") for m in at.markdown]
    assert any(name.split(".")[0] in t for t in texts), texts[:8]


def test_window_preset_changes_viewer_range():
    at = _app()
    # choose a CT image of the sample cohort
    from analysis.dataset import load_sample

    ds = load_sample()
    ct = ds.entries[(ds.entries["modality"] == "CT") & (ds.entries["role"] == "cohort")].iloc[0]
    at.selectbox(key="picker.image").set_value(str(ct["id"])).run()
    sel = at.selectbox(key="home.viewer.preset")
    assert "lung" in sel.options and "brain" in sel.options
    sel.set_value("brain").run()
    c = [s for s in at.slider if s.key and s.key.endswith(".c")][0]
    w = [s for s in at.slider if s.key and s.key.endswith(".w")][0]
    assert (c.value, w.value) == (40.0, 80.0)
    at.selectbox(key="home.viewer.preset").set_value("lung").run()
    c = [s for s in at.slider if s.key and s.key.endswith(".c")][0]
    w = [s for s in at.slider if s.key and s.key.endswith(".w")][0]
    assert (c.value, w.value) == (-600.0, 1500.0)
    assert not at.exception
