"""AppTest (no browser) of the Recognition page on the sample cohort: extract features, train
with subject-grouped CV (numbers equal the pure computation on the same table), predict the
working image with an annotation map, save the model and load it back, refuse a tampered file."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from analysis import classify as C
from analysis import dataset as ds
from analysis import features as F

ROOT = Path(__file__).resolve().parents[2]
LESION_IMAGE = "cohort_s01_z01"  # a lesion slice of the sample cohort (subject s01)


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


def _spec(at: AppTest, key: str) -> dict:
    for ch in at.get("plotly_chart"):
        if ch.proto.id and key in ch.proto.id or getattr(ch, "key", None) == key:
            return json.loads(ch.proto.spec)
    raise AssertionError(f"no plotly chart {key}")


def _decode(arr):
    if isinstance(arr, dict) and "bdata" in arr:
        return np.frombuffer(base64.b64decode(arr["bdata"]), dtype=np.dtype(arr["dtype"]))
    return np.asarray(arr)


@pytest.fixture(scope="module")
def trained(sample_dataset):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at.run()
    at.switch_page("pages/recognition.py").run()
    _ok(at)
    assert at.selectbox(key="rec.subset").value == "cohort"
    at.button(key="rec.extract").click().run()
    _ok(at)
    at.button(key="rec.train").click().run()
    _ok(at)
    return at


def test_features_table_is_the_cohort(trained, sample_dataset):
    df = trained.session_state["rec.features"]["df"]
    n = int((sample_dataset.entries["role"] == "cohort").sum())
    assert len(df) == n and (df["error"] == "").all()
    settings = F.FeatureSettings.from_kwargs(**trained.session_state["rec.features"]["settings"])
    assert settings == F.default_settings("CT")  # the soft-tissue range is the CT default
    # one row equals the pure extraction of that entry
    rec = sample_dataset.entry(df["id"].iloc[5])
    pure = F.extract_entry(rec, **settings.as_kwargs())
    for col in ("fo_mean", "fo_skewness", "glcm_contrast", "lbp_entropy"):
        assert df[col].iloc[5] == pytest.approx(pure[col], rel=1e-9)
    assert any("168 images" in c.value or f"{n} images" in c.value for c in trained.caption)


def test_grouped_cv_numbers_match_pure_computation(trained):
    got = trained.session_state["rec.cv"]
    cv = got["cv"]
    assert cv.splitter.startswith("StratifiedGroupKFold")
    df = got["table"]
    pure = C.cross_validate(df[got["features"]].to_numpy(float), got["labels"], df["subject"].to_numpy(), seed=0)
    shown = {m.label: m.value for m in trained.metric}
    mean, sd = pure.summary["balanced_accuracy"]
    assert shown["balanced accuracy"] == f"{mean:.3f} ± {sd:.3f}"
    assert mean >= 0.90
    for tr, te in cv.splits:  # never one subject on both sides
        assert not set(df["subject"].iloc[tr]) & set(df["subject"].iloc[te])
    assert any("12 of 12 subjects" in i.value for i in trained.info)
    spec = _spec(trained, "rec.confusion")
    assert "Confusion matrix" in json.dumps(spec["layout"]["title"])
    z = np.asarray(spec["data"][0]["z"], dtype=float) if not isinstance(spec["data"][0]["z"], dict) else _decode(spec["data"][0]["z"])
    assert np.asarray(z).size == 4


def test_ungrouped_split_warns_with_numbers(trained):
    at = trained
    at.checkbox(key="rec.ungrouped").check().run()
    at.button(key="rec.train").click().run()
    _ok(at)
    assert any("12 of 12 subjects have images in both training and test" in w.value.replace("\\", "") for w in at.warning)
    at.checkbox(key="rec.ungrouped").uncheck().run()
    at.button(key="rec.train").click().run()
    _ok(at)
    assert not at.warning


def test_predicts_working_image_with_annotation_map(trained):
    at = trained
    at.selectbox(key="picker.image").set_value(LESION_IMAGE).run()
    _ok(at)
    pred = {m.label: m.value for m in at.metric}["Predicted"]
    assert pred in ("lesion", "normal")
    proba = _spec(at, "rec.proba")
    assert [str(x) for x in proba["data"][0]["x"]] == ["lesion", "normal"]
    at.button(key="rec.patch_go").click().run()
    _ok(at)
    spec = _spec(at, "rec.annot")
    names = [t.get("name") for t in spec["data"]]
    assert "annotation map" in names and "structure" in names  # L overlay + the lesion outline
    amap = list(at.session_state["medlens.memo.rec.amap"].values())[-1]
    mask = ds.load_aux(ds.load_sample().entry(LESION_IMAGE), "mask_path")
    assert np.nanmean(amap["L"][mask]) > 0.5 > np.nanmean(amap["L"][~mask])
    assert any("Annotation map L(x, y)" in c.value for c in at.caption)


def test_model_round_trips_and_tampered_file_is_refused(trained, tmp_path):
    at = trained
    tm = at.session_state["rec.cv"]["model"]
    good = C.save_model(tm)
    at.file_uploader(key="rec.model_upload").set_value(("mine.skops", good, "application/octet-stream")).run()
    _ok(at)
    assert any("loaded from mine.skops" in c.value.replace("\\", "") for c in at.caption)
    assert not at.error
    import skops.io as sio

    payload = sio.loads(good, trusted=sio.get_untrusted_types(data=good))
    payload["hook"] = os.system
    evil = sio.dumps(payload)
    at.file_uploader(key="rec.model_upload").set_value(("evil.skops", evil, "application/octet-stream")).run()
    _ok(at)
    errors = " ".join(e.value for e in at.error)
    assert "refused" in errors and "untrusted" in errors
    at.file_uploader(key="rec.model_upload").set_value(("junk.skops", b"\x80\x04junk", "application/octet-stream")).run()
    _ok(at)
    assert "pickle" in " ".join(e.value for e in at.error)


def test_bin_width_advisor_and_glcm_sensitivity(trained):
    at = trained
    df = at.session_state["rec.features"]["df"]
    shown = at.dataframe
    lo, hi = df["_range_min"].to_numpy(float), df["_range_max"].to_numpy(float)
    widths = sorted(float(x) for x in at.text_input(key="rec.bw_list").value.split(","))
    expected = F.bin_advice(lo, hi, widths)
    assert any(len(d.value) == len(widths) and np.allclose(d.value["bins_median"], expected["bins_median"]) for d in shown
               if "bins_median" in getattr(d.value, "columns", []))
    at.button(key="rec.sens_go").click().run()
    _ok(at)
    sens = at.session_state["rec.sensitivity"]["df"]
    assert set(sens["bin_width"]) == set(widths) and set(sens["feature"]) == set(F.GLCM_PROPS)
    finest = sens[sens["bin_width"] == min(widths)]
    assert (finest["median_rel_change"] == 0).all()  # the reference width does not move
    assert "rank correlation" in json.dumps(_spec(at, "rec.sens_fig")["layout"])


def test_labels_from_an_uploaded_csv(trained):
    at = trained
    df = at.session_state["rec.features"]["df"]
    rows = ["file,label"] + [f"{n},{'A' if k % 3 else 'B'}" for k, n in enumerate(df["name"].head(60))]
    at.radio(key="rec.label_src").set_value("CSV (file → label)").run()
    at.file_uploader(key="rec.label_csv").set_value(("labels.csv", "\n".join(rows).encode(), "text/csv")).run()
    _ok(at)
    assert any("60 of 168 images matched" in c.value for c in at.caption)
    assert any("Classes: A (40), B (20)" in c.value.replace("\\", "") and "108 unlabelled" in c.value for c in at.caption)
    at.radio(key="rec.label_src").set_value("dataset label column").run()
    _ok(at)


def test_permutation_importance_and_tsne(trained):
    at = trained
    at.slider(key="rec.imp_reps").set_value(1).run()
    at.button(key="rec.imp_go").click().run()
    _ok(at)
    imp = at.session_state["rec.importance"]["df"]
    got = at.session_state["rec.cv"]
    assert list(imp["feature"].sort_values()) == sorted(got["features"])
    assert imp["importance_mean"].iloc[0] == imp["importance_mean"].max() > 0  # something matters
    at.radio(key="rec.proj_method").set_value("tsne").run()
    _ok(at)
    spec = _spec(at, "rec.proj")
    assert "t-SNE 1" in json.dumps(spec["layout"]["xaxis"])
