"""Classifier pipelines, grouped validation, leakage checks, safe model files, annotation maps."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np
import pandas as pd
import pytest

from analysis import classify as C
from analysis import features as F


def _grouped_data(n_subjects=10, per_subject=8, n_features=6, seed=0, informative=True):
    """Each subject has images of both classes; class 'b' shifts feature 0 by 3 when informative;
    a per-subject offset on every feature makes subjects recognisable (the leak grouping prevents)."""
    rng = np.random.default_rng(seed)
    X, y, g = [], [], []
    for s in range(n_subjects):
        offset = rng.normal(0, 2, n_features)
        for k in range(per_subject):
            lab = "b" if k % 2 else "a"
            x = offset + rng.normal(0, 1, n_features)
            if informative and lab == "b":
                x[0] += 3.0
            X.append(x)
            y.append(lab)
            g.append(f"s{s:02d}")
    return np.array(X), np.array(y), np.array(g)


def test_grouped_cv_never_puts_a_subject_on_both_sides():
    X, y, g = _grouped_data()
    cv = C.cross_validate(X, y, g, model="logistic_regression", n_splits=5)
    assert cv.splitter.startswith("StratifiedGroupKFold")
    assert len(cv.splits) == 5
    for tr, te in cv.splits:
        assert not set(g[tr]) & set(g[te])
    assert sorted(np.concatenate([te for _, te in cv.splits]).tolist()) == list(range(len(y)))
    assert cv.leaks.used_straddling_subjects == 0
    # the report says what an ungrouped split would have done, with numbers
    assert cv.leaks.ungrouped_straddling_subjects == 10
    assert any("10 of 10 subjects" in m for m in cv.leaks.infos)
    assert not cv.warnings


def test_ungrouped_cv_warns_with_numbers():
    X, y, g = _grouped_data()
    cv = C.cross_validate(X, y, g, model="logistic_regression", grouped=False)
    assert "not grouped" in cv.splitter
    assert cv.leaks.used_straddling_subjects == 10
    assert any("10 of 10 subjects have images in both training and test" in w for w in cv.warnings)


def test_fewer_subjects_than_folds_reduces_folds():
    X, y, g = _grouped_data(n_subjects=3)
    cv = C.cross_validate(X, y, g, model="knn", n_splits=5)
    assert len(cv.splits) == 3 and any("3-fold" in w for w in cv.warnings)
    for tr, te in cv.splits:
        assert not set(g[tr]) & set(g[te])


def test_missing_subjects_warns():
    X, y, _ = _grouped_data()
    cv = C.cross_validate(X, y, None, model="logistic_regression")
    assert any("no subject" in w for w in cv.warnings)


def test_near_duplicates_crossing_folds_are_counted():
    rng = np.random.default_rng(3)
    base = [rng.normal(size=(32, 32)) for _ in range(10)]
    imgs = base + [b + rng.normal(0, 0.001, b.shape) for b in base[:4]]  # 4 near-copies
    sigs = [F.signature(a) for a in imgs]
    y = np.array(["a", "b"] * 7)
    folds = np.arange(14) % 2  # copy k+10 sits in fold (k+10)%2 == k%2 → same fold …
    folds[10] = 1 - folds[0]  # … except the first copy, moved across
    rep = C.leak_report(y, None, folds, signatures=sigs)
    assert rep.near_duplicate_pairs == 4
    assert rep.near_duplicate_pairs_across_folds == 1 and rep.near_duplicate_images_across_folds == 2
    assert any("1 near-duplicate image pairs" in m for m in rep.messages)


def test_metrics_on_separable_and_on_shuffled_labels():
    X, y, g = _grouped_data(informative=True)
    X[:, 0] = np.where(y == "b", 100.0, -100.0)  # perfectly separable
    cv = C.cross_validate(X, y, g, model="logistic_regression")
    for m in ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr"):
        assert cv.summary[m][0] == pytest.approx(1.0)
    assert (np.diag(cv.confusion) == [40, 40]).all() and cv.confusion.sum() == 80
    Xn, yn, gn = _grouped_data(n_subjects=16, informative=False, seed=5)
    cvn = C.cross_validate(Xn, yn, gn, model="logistic_regression")
    assert cvn.summary["balanced_accuracy"][0] < 0.75  # nothing to learn: near chance
    assert set(cvn.folds.columns) >= {"fold", "n_train", "n_test", *C.METRICS}


def test_every_model_gives_probabilities_and_svm_is_calibrated_explicitly():
    X, y, g = _grouped_data(n_subjects=6)
    for key in C.MODELS:
        pipe = C.make_pipeline(key, {"n_estimators": 20} if key == "random_forest" else None).fit(X, y)
        p = pipe.predict_proba(X)
        assert p.shape == (len(y), 2) and np.allclose(p.sum(axis=1), 1.0)
        assert [s for s, _ in pipe.steps] == ["impute", "scale", "model"]
    from sklearn.calibration import CalibratedClassifierCV

    svm = C.make_pipeline("svm_rbf").named_steps["model"]
    assert isinstance(svm, CalibratedClassifierCV) and svm.estimator.probability in (False, "deprecated")
    with pytest.raises(ValueError, match="n_estimators"):
        C.make_pipeline("random_forest", {"n_estimators": 0})
    with pytest.raises(ValueError, match="did you mean"):
        C.make_pipeline("random_forest", {"n_estimator": 5})


def test_nan_features_are_imputed_inside_the_pipeline():
    X, y, g = _grouped_data(n_subjects=6)
    X[::3, 1] = np.nan
    cv = C.cross_validate(X, y, g, model="knn", n_splits=3)
    assert np.isfinite(cv.proba).all()


def test_permutation_importance_ranks_the_informative_feature_first():
    X, y, g = _grouped_data(n_subjects=10)
    X[:, 0] = np.where(y == "b", 5.0, 0.0) + np.random.default_rng(1).normal(0, 0.5, len(y))
    cv = C.cross_validate(X, y, g, model="logistic_regression")
    imp = C.permutation_importance_cv(X, y, cv.splits, [f"f{i}" for i in range(X.shape[1])], model="logistic_regression")
    assert imp.iloc[0].feature == "f0" and imp.iloc[0].importance_mean > 0.3
    assert abs(imp.set_index("feature").loc["f5", "importance_mean"]) < 0.1


def test_roc_pr_and_projection():
    X, y, g = _grouped_data()
    cv = C.cross_validate(X, y, g, model="logistic_regression")
    curves = C.roc_pr_curves(y, cv.proba, cv.classes)
    assert set(curves) == {"a", "b"}
    c = curves["b"]
    assert c["fpr"][0] == 0 and c["tpr"][-1] == 1 and 0.5 < c["auc"] <= 1
    assert c["recall"][0] == 1 and c["prevalence"] == pytest.approx(0.5)
    P, info = C.projection(X)
    assert P.shape == (len(y), 2) and len(info["explained_variance_ratio"]) == 2


# ----------------------------------------------------------------------------- save / load
def _trained(model="random_forest"):
    X, y, g = _grouped_data(n_subjects=6)
    df = pd.DataFrame(X, columns=[f"fo_{i}" for i in range(X.shape[1])]).assign(label=y, id=[f"i{k}" for k in range(len(y))])
    cv = C.cross_validate(df[[f"fo_{i}" for i in range(6)]].values, y, g, model=model,
                          params={"n_estimators": 20} if model == "random_forest" else None)
    tm = C.train(df, "label", [f"fo_{i}" for i in range(6)], model=model,
                 params={"n_estimators": 20} if model == "random_forest" else None, cv=cv,
                 settings=F.FeatureSettings(range_min=-20.0, range_max=150.0).as_kwargs())
    return tm, df


@pytest.mark.parametrize("model", list(C.MODELS))
def test_saved_model_round_trips(model, tmp_path):
    tm, df = _trained(model)
    path = tmp_path / "m.skops"
    C.save_model(tm, path)
    back = C.load_model(path)
    assert back.features == tm.features and back.classes == tm.classes and back.model == model
    np.testing.assert_allclose(back.proba(df), tm.proba(df))
    assert back.cv["summary"]["balanced_accuracy"] == pytest.approx(list(tm.cv["summary"]["balanced_accuracy"]))
    assert F.FeatureSettings.from_kwargs(**back.settings) == F.FeatureSettings(range_min=-20.0, range_max=150.0)
    pred = C.predict(back, df)
    assert list(pred.columns) == ["id", "predicted", "p_a", "p_b"]


def test_model_file_with_untrusted_type_is_refused(tmp_path):
    import skops.io as sio

    tm, _ = _trained("logistic_regression")
    good = C.save_model(tm)
    import sklearn

    payload = {"format": C.MODEL_FORMAT, "pipeline": tm.pipeline, "features": tm.features, "classes": tm.classes,
               "model": tm.model, "params": {}, "settings": {}, "cv": {}, "kind": "image", "extra": {},
               "sklearn_version": sklearn.__version__, "hook": os.system}
    evil = sio.dumps(payload)
    assert any("system" in t for t in sio.get_untrusted_types(data=evil))
    with pytest.raises(C.ModelFileError, match="untrusted type"):
        C.load_model(evil)
    assert C.load_model(good).classes == tm.classes  # the good file still loads


def test_corrupted_pickled_and_foreign_files_are_refused():
    import skops.io as sio

    tm, _ = _trained("logistic_regression")
    good = C.save_model(tm)
    # flip bytes in the middle of the archive
    bad = bytearray(good)
    mid = len(bad) // 2
    bad[mid:mid + 64] = b"\x00" * 64
    with pytest.raises(C.ModelFileError):
        C.load_model(bytes(bad))
    with pytest.raises(C.ModelFileError, match="not a zip"):
        C.load_model(good[: len(good) // 3])  # truncated
    with pytest.raises(C.ModelFileError, match="pickle"):
        C.load_model(pickle.dumps(tm.pipeline))  # never unpickled
    with pytest.raises(C.ModelFileError, match="not a MedLens model"):
        C.load_model(sio.dumps({"hello": [1, 2, 3]}))
    # a zip that is not skops
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("schema.json", "{not json")
    with pytest.raises(C.ModelFileError):
        C.load_model(buf.getvalue())


def test_trusted_list_covers_every_model_kind():
    import skops.io as sio

    for key in C.MODELS:
        tm, _ = _trained(key)
        assert set(sio.get_untrusted_types(data=C.save_model(tm))) <= set(C.TRUSTED_TYPES), key


# ----------------------------------------------------------------------------- annotation map
def _bright_square_images(n=12, seed=0):
    """Noisy 64² images (40 ± 5); 'lesion' ones hold a 14-px square at 85 with its exact mask."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        a = rng.normal(40, 5, (64, 64)).astype(np.float32)
        m = np.zeros((64, 64), bool)
        lab = "normal"
        if k % 2:
            r, c = rng.integers(8, 42, 2)
            m[r:r + 14, c:c + 14] = True
            a[m] += 45
            lab = "lesion"
        out.append((a, m, lab))
    return out


def test_annotation_map_lights_up_the_structure():
    imgs = _bright_square_images()
    settings = F.FeatureSettings(groups=("first_order",))
    entries = [{"id": str(k), "k": k} for k in range(len(imgs))]
    table = C.patch_training_table(entries, [l for *_, l in imgs], settings=settings, patch=12, stride=6,
                                   load=lambda e: (imgs[e["k"]][0], (1.0, 1.0), imgs[e["k"]][1]))
    assert set(table.patch_label) == {"normal", "lesion"}
    feats = F.feature_columns(table)
    tm = C.train(table, "patch_label", feats, model="logistic_regression", settings=settings.as_kwargs(), kind="patch",
                 extra={"patch": 12, "stride": 4, "background": C.guess_background(table.patch_label)})
    assert C.default_label_values(tm) == {"normal": 0.0, "lesion": 1.0}
    test_img, test_mask, _ = _bright_square_images(n=2, seed=9)[1]
    out = C.annotation_map(test_img, tm, spacing=(1.0, 1.0))
    L = out["L"]
    assert out["proba"].shape == (2, 64, 64) and np.allclose(np.nansum(out["proba"], axis=0), 1.0)
    core = np.zeros_like(test_mask)
    rr, cc = np.nonzero(test_mask)
    core[rr.min() + 4:rr.max() - 3, cc.min() + 4:cc.max() - 3] = True
    far = ~np.pad(test_mask, 0) & (np.abs(np.arange(64)[:, None] - rr.mean()) + np.abs(np.arange(64)[None, :] - cc.mean()) > 30)
    assert np.nanmean(L[core]) > 0.8
    assert np.nanmean(L[far]) < 0.2


def test_guess_background():
    assert C.guess_background(["lesion", "Normal", "lesion"]) == "Normal"
    assert C.guess_background(["cat", "dog", "dog"]) == "dog"


# ----------------------------------------------------------------------------- labels
def test_labels_from_folders_csv_and_metadata():
    assert C.labels_from_folders(["benign/a.png", "malignant/x/b.dcm", "c.png"]) == ["benign", "malignant", ""]
    assert C.labels_from_folders(["malignant/x/b.dcm"], level="parent") == ["x"]
    csv = b"filename,diagnosis\nimgs/a.png,lesion\nb.png,normal\n"
    labels, n = C.labels_from_csv([["a.png", "x/imgs/a.png"], ["b.png"], ["zzz.png"]], csv)
    assert labels == ["lesion", "normal", ""] and n == 2
    assert C.labels_from_metadata([{"body_part": "HEAD"}, {}], "body_part") == ["HEAD", ""]
    with pytest.raises(ValueError, match="safe metadata key"):
        C.labels_from_metadata([{}], "PatientName")
