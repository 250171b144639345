"""AppTest (no browser): the Dataset page ingests the sample dataset from the UI, its filters
drive the counts and the charts (checked against the catalog itself), and every view renders."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from analysis import catalog as cat
from analysis.dataset import sample_manifest_path

ROOT = Path(__file__).resolve().parents[2]


def _manifest_rows() -> int:
    """The catalog has one row per image file of the manifest (series folders are not extra rows)."""
    import csv

    with open(sample_manifest_path(), newline="") as fh:
        return sum(1 for _ in csv.DictReader(fh))


def _metric(at: AppTest, label: str) -> int:
    return int(str(next(m for m in at.metric if m.label == label).value).replace(",", ""))


def _arr(v):  # plotly ≥ 6 ships arrays as base64 blocks
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
    return np.asarray(v)


def _figure(at: AppTest, title_part: str) -> dict:
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        title = spec.get("layout", {}).get("title", {})
        text = title.get("text", "") if isinstance(title, dict) else str(title)
        if title_part in text:
            return spec
    raise AssertionError(f"no chart titled {title_part!r}")


def _ranking(at: AppTest):
    return next(d.value for d in at.dataframe if {"tag", "adjusted_mi"} <= set(d.value.columns))


def _ingested_app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/dataset.py").run()
    assert not at.exception, at.exception
    if any(b.key == "ds.ingest" for b in at.button) and not cat.Catalog().path.exists():
        at.button(key="ds.ingest").click().run()
    deadline = time.time() + 300
    while time.time() < deadline:
        if not at.get("progress") and any(m.label == "Images" for m in at.metric):
            break
        time.sleep(1.0)
        at.run()
    assert not at.exception, at.exception
    return at


def test_ingest_from_the_page_and_filters_drive_counts_and_charts():
    at = _ingested_app()
    n_sample = _manifest_rows()
    assert _metric(at, "Images") == n_sample
    hist = _figure(at, "mean by modality")
    assert sum(int(_arr(t["y"]).sum()) for t in hist["data"]) == n_sample
    with cat.Catalog().reader() as con:
        n_ct = con.execute("SELECT count(*) FROM images WHERE modality = 'CT' AND status = 'ok'").fetchone()[0]
        n_ct_a = con.execute("SELECT count(*) FROM images WHERE modality = 'CT' AND status = 'ok' "
                             "AND manufacturer = 'MedLensSim A'").fetchone()[0]
    at.multiselect(key="ds.f.modality").select("CT").run()
    assert not at.exception
    assert _metric(at, "Images") == n_ct
    hist = _figure(at, "mean by modality")
    assert [t["name"] for t in hist["data"]] == ["CT"]
    assert int(_arr(hist["data"][0]["y"]).sum()) == n_ct
    at.multiselect(key="ds.f.manufacturer").select("MedLensSim A").run()
    assert _metric(at, "Images") == n_ct_a
    bars = _figure(at, "Images by manufacturer")
    assert list(bars["data"][0]["y"]) == ["MedLensSim A"] and int(_arr(bars["data"][0]["x"])[0]) == n_ct_a


def test_numeric_range_filter_matches_the_database():
    at = _ingested_app()
    at.multiselect(key="ds.f.ranges").select("noise_sigma").run()
    lo, hi = at.slider(key="ds.r.noise_sigma").value
    cut = lo + (hi - lo) / 3
    at.slider(key="ds.r.noise_sigma").set_value((lo, cut)).run()
    assert not at.exception
    with cat.Catalog().reader() as con:
        expect = con.execute("SELECT count(*) FROM images WHERE status = 'ok' AND noise_sigma BETWEEN ? AND ?",
                             [lo, cut]).fetchone()[0]
    assert 0 < expect < _manifest_rows()
    assert _metric(at, "Images") == expect


def test_every_view_renders_and_the_scanner_effect_is_found():
    at = _ingested_app()
    at.multiselect(key="ds.f.modality").select("CT").run()
    for view in at.radio(key="ds.view").options:
        at.radio(key="ds.view").set_value(view).run()
        assert not at.exception, (view, at.exception)
        if view == "Quality":
            assert any({"severity", "rule", "images"} <= set(d.value.columns) for d in at.dataframe)
        if view == "Clusters":
            ranking = _ranking(at)
            assert {"tag", "adjusted_mi"} <= set(ranking.columns)
    # the sample's two simulated CT scanners differ in noise: with 2 clusters on noise and
    # contrast features, Manufacturer / KVP / kernel explain the clusters best
    at.radio(key="ds.view").set_value("Clusters").run()
    at.slider(key="ds.cl.k").set_value(2).run()
    at.multiselect(key="ds.cl.feat").set_value(["noise_sigma", "snr"]).run()
    at.multiselect(key="ds.f.label").select("normal").select("lesion").run()
    ranking = _ranking(at)
    assert ranking["tag"].iloc[0] in ("manufacturer", "model", "kvp", "convolution_kernel"), ranking.head()
