"""AppTest (no browser) of the Fusion page on the sample dataset: it starts on a
functional-on-anatomical pair, shows metrics that equal the pure computation, renders the
comparator, registers a moved PET back, and runs the dataset-wide comparison."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from analysis import dataset as ds
from analysis import fusion as F
from analysis import registry

ROOT = Path(__file__).resolve().parents[2]


def _fusion_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/fusion.py").run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _metrics(at: AppTest) -> dict[str, float]:
    return {m.label: float(m.value) for m in at.metric if m.label in F.METRIC_INFO}


def _pure_pair(sample, a_id: str, b_id: str) -> tuple[np.ndarray, np.ndarray]:
    ia, ib = ds.load_entry(sample.entry(a_id)), ds.load_entry(sample.entry(b_id))
    a, b, _, _ = F.common_grid(ia.grey(), ia.spacing, ib.grey(), ib.spacing)
    return a, b


def test_page_opens_on_t1_pet_with_metrics_equal_to_the_pure_computation(sample_dataset):
    at = _fusion_page()
    label = at.selectbox(key="fusion.known").value
    assert label.endswith(": t1 + pet"), label
    pid = label.split(":")[0]
    # A, B and the fused result are shown side by side (plus the comparator's bar chart)
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert sum('"heatmap"' in s or '"image"' in s for s in specs) >= 3
    # B (4x coarser PET) was resampled to A's grid, and the page says how
    assert any("resampled onto" in c.value for c in at.caption)
    shown = _metrics(at)
    assert set(shown) == set(F.METRIC_INFO)
    a, b = _pure_pair(sample_dataset, f"{pid}_t1", f"{pid}_pet")
    fused = registry.run("fusion.weighted_average", a, {}, moving=b).image
    expected = F.fusion_metrics(*F.normalise_pair(a, b), fused)
    for k, v in expected.items():
        assert shown[k] == pytest.approx(v, rel=1e-3, abs=1e-3), k


def test_comparator_scores_every_method(sample_dataset):
    at = _fusion_page()
    bars = [c.proto.spec for c in at.get("plotly_chart") if '"bar"' in c.proto.spec]
    assert bars, "comparator bar chart missing"
    tables = [d.value for d in at.dataframe]
    cmp = next(t for t in tables if "qabf" in t.columns and len(t) == len(F.METHODS))
    assert cmp["qabf"].between(0, 1).all() and cmp["entropy"].gt(0).all()
    assert cmp.loc["Laplacian pyramid", "qabf"] > cmp.loc["Weighted average", "qabf"]
    assert any(c.value.startswith("★ ") for c in at.caption), "the best tile is not marked"


def test_method_parameters_change_the_result(sample_dataset):
    at = _fusion_page()
    at.selectbox(key="fusion.op").select("fusion.laplacian_pyramid").run()
    assert not at.exception
    q_max = _metrics(at)["qabf"]
    at.selectbox(key="fusion.fusion.laplacian_pyramid.rule").select("average").run()
    assert not at.exception
    q_avg = _metrics(at)["qabf"]
    assert q_max > q_avg  # choose-max keeps more edges than averaging the detail bands


def test_register_first_recovers_the_known_motion(sample_dataset):
    at = _fusion_page()
    box = at.selectbox(key="fusion.known")
    label = next(o for o in box.options if o.endswith(": t1 + pet_moving"))
    pid = label.split(":")[0]
    box.select(label)
    at.checkbox(key="fusion.register").check()
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    cap = next(c.value for c in at.caption if c.value.startswith("Registration:"))
    theta = float(re.search(r"θ (-?[\d.]+)°", cap).group(1))
    true = json.loads(sample_dataset.entry(f"{pid}_t2_moving")["transform"])  # same rigid motion as pet_moving
    from analysis.registration import decompose

    ia = ds.load_entry(sample_dataset.entry(f"{pid}_t1"))
    c = ((ia.shape2d[0] - 1) / 2, (ia.shape2d[1] - 1) / 2)
    assert theta == pytest.approx(decompose(np.array(true), center=c, spacing=ia.spacing)["theta_deg"], abs=0.5)
    before, after = (float(x) for x in re.search(r"([\d.]+) → ([\d.]+) bits", cap).groups())
    assert after > before


def test_dataset_wide_distributions(sample_dataset):
    at = _fusion_page()
    n_pairs = sum(1 for pid, g in sample_dataset.entries.groupby("pair_id") if {"t1", "pet"} <= set(g["pair_role"]))
    at.button(key="fusion.ds.go").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert any(c.value.startswith(f"{n_pairs} pairs fused, 0 failed") for c in at.caption), [c.value for c in at.caption]
    assert any('"box"' in c.proto.spec for c in at.get("plotly_chart"))
    med = next(d.value for d in at.dataframe if "qabf" in d.value.columns and "laplacian_pyramid" in d.value.index)
    assert set(med.index) == {k.split(".")[1] for k in F.METHODS}
