"""AppTest of the Segmentation page: preset on a cohort lesion slice reaches the truth, a
typed seed changes the region table, the threshold grid shows every method (minimum's
failure as an error, not an exception), uploads of a reference mask, exports."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from streamlit.testing.v1 import AppTest

from analysis import seg_metrics
from analysis.dataset import load_aux, load_entry, load_sample

ROOT = Path(__file__).resolve().parents[2]
T = "segmentation"
LESION_PRESET = "CT hyperdense lesion (band 55–200 HU + clean-up)"


def _lesion_entry() -> dict:
    ds = load_sample()
    e = ds.entries
    row = e[(e["role"] == "cohort") & (e["label"] == "lesion")].iloc[0]
    return ds.entry(row["id"])


def _page(entry_id: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    if entry_id is not None:
        at.selectbox(key="picker.image").set_value(entry_id).run()
    at.switch_page("pages/segmentation.py").run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _metric(at: AppTest, label: str) -> float:
    vals = [m.value for m in at.metric if m.label == label]
    assert vals, f"metric {label} missing; have {[m.label for m in at.metric]}"
    return float(vals[0])


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


def test_lesion_preset_matches_ground_truth():
    entry = _lesion_entry()
    at = _page(entry["id"])
    at.selectbox(key=f"{T}.preset").set_value(LESION_PRESET).run()
    at.button(key=f"{T}.preset.load").click().run()
    _ok(at)
    assert at.selectbox(key=f"{T}.op.Thresholds").value == "segmentation.manual"
    assert at.number_input(key=f"{T}.post.opening").value == pytest.approx(1.5)
    dice = _metric(at, "dice")
    # the page's Dice equals the library's on the same chain
    from analysis import registry
    from analysis.segmentation import PRESETS

    img = load_entry(entry)
    res = registry.run_chain(PRESETS[LESION_PRESET]["steps"], img.grey(), spacing=img.spacing)
    assert dice == pytest.approx(seg_metrics.dice(res.mask, load_aux(entry, "mask_path")), abs=1e-3)
    assert dice > 0.7
    # area is reported in mm² from the pixel spacing
    area = _metric(at, "area_mm2")
    assert area == pytest.approx(res.mask.sum() * img.spacing[0] * img.spacing[1], rel=1e-3)
    # ground-truth tab offers the FP/FN overlay mode
    assert "errors vs ground truth" in at.radio(key=f"{T}.mode").options


def test_typed_seed_changes_region_table():
    entry = _lesion_entry()
    at = _page(entry["id"])
    at.radio(key=f"{T}.family").set_value("Regions").run()
    at.selectbox(key=f"{T}.op.Regions").set_value("segmentation.region_growing").run()
    _ok(at)
    truth = load_aux(entry, "mask_path")
    r, c = (int(v) for v in np.argwhere(truth).mean(axis=0).round())  # a seed inside the lesion
    at.number_input(key=f"{T}.segmentation.region_growing.tolerance").set_value(15.0).run()
    at.number_input(key=f"{T}.segmentation.region_growing.row").set_value(r).run()
    at.number_input(key=f"{T}.segmentation.region_growing.col").set_value(c).run()
    _ok(at)
    tables = [d.value for d in at.dataframe if "area (mm²)" in d.value.columns]
    assert tables and len(tables[0]) == 1
    area_lesion = float(tables[0]["area (mm²)"].iloc[0])
    img = load_entry(entry)
    true_area = truth.sum() * img.spacing[0] * img.spacing[1]
    assert area_lesion == pytest.approx(true_area, rel=0.3)
    # move the seed outside the head (air): the region becomes much larger
    at.number_input(key=f"{T}.segmentation.region_growing.row").set_value(2).run()
    at.number_input(key=f"{T}.segmentation.region_growing.col").set_value(2).run()
    _ok(at)
    tables = [d.value for d in at.dataframe if "area (mm²)" in d.value.columns]
    assert float(tables[0]["area (mm²)"].max()) > 20 * area_lesion


def test_threshold_grid_lists_every_method_and_shows_minimum_failure_cleanly():
    at = _page()
    at.toggle(key=f"{T}.grid.on").set_value(True).run()
    _ok(at)
    grid = [d.value for d in at.dataframe if "method" in d.value.columns]
    assert grid, "threshold grid table missing"
    assert set(grid[0]["method"]) == {"Otsu", "Li", "Yen", "Triangle", "Isodata", "Mean", "Minimum"}


def test_uploaded_reference_mask_gives_dice():
    entry = _lesion_entry()
    at = _page(entry["id"])
    truth = load_aux(entry, "mask_path")
    buf = io.BytesIO()
    PILImage.fromarray((truth * 255).astype(np.uint8)).save(buf, format="PNG")
    at.selectbox(key=f"{T}.preset").set_value(LESION_PRESET).run()
    at.button(key=f"{T}.preset.load").click().run()
    at.file_uploader(key=f"{T}.truth.upload").upload("ref.png", buf.getvalue(), "image/png").run()
    _ok(at)
    assert _metric(at, "dice") > 0.7
    wrong = io.BytesIO()
    PILImage.fromarray(np.zeros((10, 10), np.uint8)).save(wrong, format="PNG")
    at.file_uploader(key=f"{T}.truth.upload").upload("small.png", wrong.getvalue(), "image/png").run()
    _ok(at)
    assert any("10×10" in e.value for e in at.error)


def test_slow_method_runs_in_a_form_on_a_preview():
    entry = _lesion_entry()
    at = _page(entry["id"])
    at.radio(key=f"{T}.family").set_value("Regions").run()
    at.selectbox(key=f"{T}.op.Regions").set_value("segmentation.chan_vese").run()
    _ok(at)
    # sample CT slices are 256² (≤ the preview size): computed at full size, inside a form
    assert at.get("form"), "slow methods must take their parameters in a form"
    assert _metric(at, "objects") >= 1


def test_edge_method_shows_response_and_no_post_processing():
    at = _page()
    at.radio(key=f"{T}.family").set_value("Edges").run()
    at.selectbox(key=f"{T}.op.Edges").set_value("segmentation.sobel").run()
    _ok(at)
    assert any("post-processing applies to masks" in c.value for c in at.caption)
    at.selectbox(key=f"{T}.op.Edges").set_value("segmentation.canny").run()
    _ok(at)
    assert _metric(at, "edge_px") > 0


def test_dataset_wide_dice_by_class():
    at = _page(_lesion_entry()["id"])
    at.selectbox(key=f"{T}.preset").set_value(LESION_PRESET).run()
    at.button(key=f"{T}.preset.load").click().run()
    at.button(key=f"{T}.ds.go").click().run()
    _ok(at)
    metric_box = at.selectbox(key=f"{T}.ds.metric")
    assert {"dice", "hausdorff_mm", "regions", "total_area_mm2"} <= set(metric_box.options)
    metric_box.set_value("dice").run()
    at.selectbox(key=f"{T}.ds.group").set_value("label").run()
    _ok(at)
    # worst cases are offered as buttons that open the image
    worst = [b for b in at.button if str(b.key).startswith(f"{T}.ds.open.Worst")]
    assert worst, "worst-case buttons missing"


@pytest.mark.parametrize("entry_id", ["real_skimage_retina", "real_ct_small_png16", "real_mni_t1_2mm_volume",
                                      "real_pydicom_examples_ybr_color"])
def test_page_handles_colour_unknown_spacing_and_volumes(entry_id):
    ds = load_sample()
    assert entry_id in set(ds.entries["id"]), f"the sample build always contains {entry_id}"
    at = _page(entry_id)
    # default method (manual band) gives an area; without spacing it is in px²
    labels = [m.label for m in at.metric]
    entry = ds.entry(entry_id)
    img = load_entry(entry)
    assert ("area_mm2" in labels) == (img.spacing is not None) and ("area_px2" in labels) == (img.spacing is None)


def test_seed_on_a_preview_is_scaled_back_to_full_resolution():
    ds = load_sample()
    assert (ds.entries["id"] == "real_pydicom_693_J2KI").any(), "the sample build always contains a 512² CT"
    at = _page("real_pydicom_693_J2KI")
    at.radio(key=f"{T}.family").set_value("Regions").run()
    at.selectbox(key=f"{T}.op.Regions").set_value("segmentation.morph_gac").run()
    _ok(at)
    assert at.toggle(key=f"{T}.preview.segmentation.morph_gac").value is True
    assert any("preview" in c.value for c in at.caption)
    # the seed marker is drawn at the full-resolution seed (centre of 512²) on the full-size figure
    import json

    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    seed = [t for t in spec["data"] if t.get("name") == "seed"]
    assert seed and seed[0]["x"] == [256] and seed[0]["y"] == [256]


def test_preview_helpers_map_seeds_and_masks_between_grids():
    from analysis import registry
    from ui.segmentation import _enlarge, _scaled

    op = registry.get("segmentation.region_growing")
    assert _scaled(op, {"row": 301, "col": -1, "tolerance": 5.0}, 2) == {"row": 150, "col": -1, "tolerance": 5.0}
    small = np.zeros((3, 4), bool)
    small[1, 2] = True
    big = _enlarge(small, 2, (5, 7))
    assert big.shape == (5, 7) and big[2:4, 4:6].all() and big.sum() == 4
