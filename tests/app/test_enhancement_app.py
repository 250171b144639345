"""AppTest of the Enhancement page (the generic technique page): change a parameter, build a
sweep grid, load a pipeline preset, restore settings from the URL."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from analysis.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[2]
T = "enhancement"


def _metric(at: AppTest, label: str) -> str:
    vals = [m.value for m in at.metric if m.label == label]
    assert vals, f"metric {label} missing; have {[m.label for m in at.metric]}"
    return vals[0]


def _page(query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    at.switch_page("pages/enhancement.py")
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _open_tab(at: AppTest, label: str) -> None:
    """Tabs are lazy (only the open one runs): open one the way a click does."""
    at.session_state[f"{T}.tab"] = label
    at.run()
    assert not at.exception, [e.message for e in at.exception]


def _choose_op(at: AppTest, key: str) -> None:
    at.selectbox(key=f"{T}.op").set_value(key).run()
    assert not at.exception, [e.message for e in at.exception]


def test_changing_a_parameter_changes_result_metrics():
    at = _page()
    _choose_op(at, "enhancement.gamma")
    assert _metric(at, "psnr_input") == "∞"  # gamma 1 is the identity
    at.number_input(key=f"{T}.enhancement.gamma.gamma").set_value(2.0).run()
    assert not at.exception
    value = _metric(at, "psnr_input")
    assert value != "∞" and 0 < float(value) < 60
    # the URL carries the new setting
    assert at.query_params["op"] == ["enhancement.gamma"] or at.query_params["op"] == "enhancement.gamma"
    assert "gamma=2.0" in str(at.query_params["params"])


def test_sweep_grid_builds_tiles_chart_and_marks_best():
    at = _page()
    _choose_op(at, "enhancement.clahe")
    _open_tab(at, "Sweep grid")
    at.selectbox(key=f"{T}.sweep.p1").set_value("clip_limit").run()
    assert not at.exception, [e.message for e in at.exception]
    tables = [d.value for d in at.dataframe if "clip_limit" in d.value.columns and "error" in d.value.columns]
    assert tables, "sweep table missing"
    table = tables[0]
    assert len(table) == 5 and (table["error"] == "").all()
    assert table["clip_limit"].is_monotonic_increasing
    # a higher clip limit equalizes more (higher entropy) and amplifies noise more
    assert table["entropy"].iloc[-1] > table["entropy"].iloc[0]
    assert table["noise_sigma"].iloc[-1] > 2 * table["noise_sigma"].iloc[0]
    best = [c.value for c in at.caption if c.value.startswith("★ best")]
    assert len(best) == 1
    # "Use these settings" puts the tile's value into the operation's widget
    use = [b for b in at.button if b.key and b.key.startswith(f"{T}.sweep.use.")]
    assert len(use) == 5
    use[-1].click().run()
    assert not at.exception
    assert not [d for d in at.dataframe if "Δ (B − A)" in d.value.columns]  # other tabs did not run
    widget = at.number_input(key=f"{T}.enhancement.clahe.clip_limit")
    assert math.isclose(widget.value, float(table["clip_limit"].iloc[-1]))


def test_sweep_grid_failing_tile_shows_error_and_rest_render():
    at = _page()
    _choose_op(at, "enhancement.gamma")
    _open_tab(at, "Sweep grid")
    at.selectbox(key=f"{T}.sweep.p1").set_value("gamma").run()
    at.number_input(key=f"{T}.sweep.r1.gamma.lo").set_value(0.01).run()  # below the allowed 0.1
    at.number_input(key=f"{T}.sweep.r1.gamma.hi").set_value(2.0).run()
    assert not at.exception, [e.message for e in at.exception]
    table = [d.value for d in at.dataframe if "gamma" in d.value.columns and "error" in d.value.columns][0]
    failed = table[table["error"] != ""]
    assert len(failed) == 2 and (table["gamma"][table["error"] != ""] < 0.1).all()
    assert (table["error"] == "").sum() == 3 and table.loc[table["error"] == "", "rms_contrast"].notna().all()
    errors = [e.value for e in at.error if "gamma" in e.value and "must be" in e.value]
    assert len(errors) == 2, "each failing tile shows its error"


def test_loading_a_pipeline_preset_applies_it():
    at = _page()
    preset = Pipeline.of([("enhancement.gaussian", {"sigma": 1.5}), ("enhancement.clahe", {"clip_limit": 0.02}),
                          ("enhancement.unsharp", {"radius": 1.0, "amount": 0.5})])
    at.file_uploader(key=f"{T}.pipe.upload").upload("preset.json", preset.to_json().encode(), "application/json").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.session_state[f"{T}.pipeline"] == preset
    steps = [c.value for c in at.caption if c.value[:2] in ("1.", "2.", "3.")]
    assert len(steps) == 3 and "Gaussian" in steps[0] and "CLAHE" in steps[1]
    assert at.radio(key=f"{T}.show").value == "pipeline"
    assert "pipeline" in str(at.query_params["pipeline"]) or "enhancement.gaussian" in str(at.query_params["pipeline"])
    assert _metric(at, "psnr_input") != "∞"
    # reorder and remove
    at.button(key=f"{T}.pipe.up.2").click().run()
    assert [s.op for s in at.session_state[f"{T}.pipeline"]][1] == "enhancement.unsharp"
    at.button(key=f"{T}.pipe.remove.0").click().run()
    assert len(at.session_state[f"{T}.pipeline"]) == 2


def test_bad_preset_is_reported_not_raised():
    at = _page()
    at.file_uploader(key=f"{T}.pipe.upload").upload("bad.json", b'{"steps": [{"op": "enhancement.gausian"}]}',
                                                     "application/json").run()
    assert not at.exception
    assert any("did you mean" in c.value for c in at.caption)


def test_url_state_restores_operation_params_and_pipeline():
    pipe = Pipeline.of([("enhancement.median", {"size": 5}), ("enhancement.gamma", {"gamma": 0.7})])
    at = _page({"op": "enhancement.unsharp", "params": "radius=3.5,amount=2.25", "pipeline": pipe.to_query(),
                "show": "s:pipeline"})
    assert at.selectbox(key=f"{T}.op").value == "enhancement.unsharp"
    assert at.slider(key=f"{T}.enhancement.unsharp.radius").value == pytest.approx(3.5)
    assert at.slider(key=f"{T}.enhancement.unsharp.amount").value == pytest.approx(2.25)
    assert at.session_state[f"{T}.pipeline"] == pipe
    assert at.radio(key=f"{T}.show").value == "pipeline"


def test_ab_view_shows_metric_deltas():
    at = _page()
    _open_tab(at, "A/B")
    at.selectbox(key=f"{T}.abB.op").set_value("enhancement.gaussian").run()
    assert not at.exception
    tables = [d.value for d in at.dataframe if "Δ (B − A)" in d.value.columns]
    assert tables
    tab = tables[0].set_index("metric")
    assert tab.loc["psnr_input", "Δ (B − A)"] == pytest.approx(tab.loc["psnr_input", "B"] - tab.loc["psnr_input", "A"])


def test_preview_image_downsamples_and_scales_spacing():
    import numpy as np

    from analysis.image import Image
    from ui.technique import PREVIEW_SIDE, preview_image

    big = Image(np.arange(1536 * 1024, dtype=np.float32).reshape(1536, 1024), spacing=(0.2, 0.3), units="HU")
    small, f = preview_image(big)
    assert f == 4 and small.shape2d == (384, 256) and max(small.shape2d) <= PREVIEW_SIDE
    assert small.spacing == pytest.approx((0.8, 1.2)) and small.digest != big.digest
    assert float(small.grey()[0, 0]) == pytest.approx(float(big.grey()[:4, :4].mean()))
    same, f1 = preview_image(Image(np.zeros((200, 300), np.float32)))
    assert f1 == 1 and same.shape2d == (200, 300)


def test_two_parameter_sweep_builds_a_grid_and_heatmap():
    at = _page()
    _choose_op(at, "enhancement.unsharp")
    _open_tab(at, "Sweep grid")
    at.selectbox(key=f"{T}.sweep.p1").set_value("radius").run()
    at.selectbox(key=f"{T}.sweep.p2").set_value("amount").run()
    assert not at.exception, [e.message for e in at.exception]
    table = [d.value for d in at.dataframe if {"radius", "amount", "error"} <= set(d.value.columns)][0]
    assert len(table) == 5 * 3 and table["radius"].nunique() == 5 and table["amount"].nunique() == 3
    # amount 0 is the identity whatever the radius: PSNR vs input is infinite there
    assert (table.loc[table["amount"] == 0.0, "psnr_input"] == float("inf")).all()
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert any('"heatmap"' in s and '"best"' in s for s in specs), "metric heatmap with the best cell marked"
    assert len([c for c in at.caption if c.value.startswith("★ best")]) == 1


def test_dataset_wide_histogram_matching_uses_the_chosen_reference():
    at = _page()
    _choose_op(at, "enhancement.match_histogram")
    ref_box = at.selectbox(key=f"{T}.reference")
    _open_tab(at, "Dataset-wide")
    assert not at.exception, [e.message for e in at.exception]
    at.button(key=f"{T}.ds.go").click().run()
    assert not at.exception, [e.message for e in at.exception]
    done = [c.value for c in at.caption if "images processed" in c.value]
    assert done and done[0].endswith(", 0 failed."), done
    runs = [c.value for c in at.caption if "matched to reference" in c.value]
    assert runs, [c.value for c in at.caption]
    # another reference is another task: the old result is not shown for it until it is run
    from analysis.dataset import load_sample

    other = next(r["id"] for r in load_sample().records() if str(r["id"]) != str(ref_box.value)
                 and r.get("modality") == "MR")
    at.selectbox(key=f"{T}.reference").set_value(str(other)).run()
    assert not at.exception, [e.message for e in at.exception]
    assert not [c.value for c in at.caption if "images processed" in c.value]
    at.button(key=f"{T}.ds.go").click().run()
    assert [c.value for c in at.caption if "images processed" in c.value and c.value.endswith(", 0 failed.")]
