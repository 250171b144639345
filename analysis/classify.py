"""Image classification on feature tables with honest validation (scikit-learn).

* :data:`MODELS` — typed specs (``analysis.registry.Param``) for scikit-learn ``Pipeline``\\ s
  (median imputation → standard scaling → model): random forest, histogram gradient boosting,
  SVM (RBF) with **explicit** probability calibration (``CalibratedClassifierCV``;
  ``SVC(probability=True)`` is deprecated), logistic regression, k-nearest neighbours.
* :func:`cross_validate` — grouped by subject (``StratifiedGroupKFold``) whenever subjects are
  known; reports per-fold accuracy, balanced accuracy, macro F1 and one-vs-rest ROC AUC with their
  spread, out-of-fold probabilities, the confusion matrix, and **leakage warnings with numbers**
  (how many subjects an ungrouped split would put on both sides; near-duplicate images that
  cross folds).
* :func:`roc_pr_curves`, :func:`permutation_importance_cv` (on held-out folds),
  :func:`projection` (PCA, optional t-SNE).
* :class:`TrainedModel` with :func:`save_model` / :func:`load_model`: **skops** files checked
  against an explicit trusted-type list (:data:`TRUSTED_TYPES`) before loading; anything else is
  refused with :class:`ModelFileError`. Nothing is ever unpickled.
* Patch-wise annotation maps: :func:`patch_training_table`, :func:`annotation_map`
  (``L(x, y) = Σ_c P(c | x, y) · l_c``).
* Labels from folder names, a CSV (file → label) or a safe metadata key (:func:`labels_from_folders`,
  :func:`labels_from_csv`, :func:`labels_from_metadata`).
"""

from __future__ import annotations

import io
import time
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from analysis.registry import Param, did_you_mean

__all__ = [
    "ModelSpec",
    "MODELS",
    "DEFAULT_MODEL",
    "make_pipeline",
    "LeakReport",
    "CVResult",
    "cross_validate",
    "leak_report",
    "roc_pr_curves",
    "permutation_importance_cv",
    "projection",
    "TrainedModel",
    "train",
    "predict",
    "save_model",
    "load_model",
    "ModelFileError",
    "TRUSTED_TYPES",
    "patch_training_table",
    "annotation_map",
    "labels_from_folders",
    "labels_from_csv",
    "labels_from_metadata",
    "NEAR_DUPLICATE_R",
]

#: signature correlation at or above which two images count as near-duplicates
NEAR_DUPLICATE_R = 0.998
MODEL_FORMAT = "medlens-model/1"


# ----------------------------------------------------------------------------- model specs
@dataclass(frozen=True)
class ModelSpec:
    key: str
    title: str
    params: tuple[Param, ...]
    build: Callable[[dict[str, Any], int], Any]
    note: str = ""

    def validate(self, params: dict[str, Any] | None) -> dict[str, Any]:
        params = dict(params or {})
        names = [p.name for p in self.params]
        for k in params:
            if k not in names:
                raise ValueError(f"{self.key}: unknown parameter '{k}'" + did_you_mean(k, names))
        return {p.name: p.validate(params.get(p.name, p.default), self.key) for p in self.params}

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}


def _cw(v: str) -> str | None:
    return None if v == "none" else v


def _rf(p: dict[str, Any], seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(
        n_estimators=p["n_estimators"], max_depth=p["max_depth"] or None, min_samples_leaf=p["min_samples_leaf"],
        max_features=None if p["max_features"] == "all" else p["max_features"], class_weight=_cw(p["class_weight"]),
        random_state=seed, n_jobs=1,
    )


def _hgb(p: dict[str, Any], seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        learning_rate=p["learning_rate"], max_iter=p["max_iter"], max_leaf_nodes=p["max_leaf_nodes"],
        l2_regularization=p["l2_regularization"], class_weight=_cw(p["class_weight"]), early_stopping=False,
        random_state=seed,
    )


def _svm(p: dict[str, Any], seed: int) -> Any:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    svc = SVC(kernel="rbf", C=p["C"], gamma=p["gamma"], class_weight=_cw(p["class_weight"]), random_state=seed)
    return CalibratedClassifierCV(svc, method=p["calibration"], cv=p["calibration_folds"])


def _logreg(p: dict[str, Any], seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=p["C"], class_weight=_cw(p["class_weight"]), max_iter=5000, random_state=seed)


def _knn(p: dict[str, Any], seed: int) -> Any:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=p["n_neighbors"], weights=p["weights"], algorithm="brute")


_CLASS_WEIGHT = Param("class_weight", "balanced", options=("balanced", "none"),
                      help="'balanced' weights classes inversely to their frequency.")

MODELS: dict[str, ModelSpec] = {
    "random_forest": ModelSpec("random_forest", "Random forest", (
        Param("n_estimators", 200, min=10, max=1000, step=10, help="Number of trees."),
        Param("max_depth", 0, min=0, max=64, help="Maximum tree depth (0 = unlimited)."),
        Param("min_samples_leaf", 1, min=1, max=50, help="Minimum samples per leaf."),
        Param("max_features", "sqrt", options=("sqrt", "log2", "all"), help="Features tried per split."),
        _CLASS_WEIGHT,
    ), _rf),
    "hist_gradient_boosting": ModelSpec("hist_gradient_boosting", "Histogram gradient boosting", (
        Param("learning_rate", 0.1, min=0.001, max=1.0, log=True),
        Param("max_iter", 200, min=10, max=1000, step=10, help="Boosting iterations."),
        Param("max_leaf_nodes", 15, min=2, max=255),
        Param("l2_regularization", 0.0, min=0.0, max=10.0, step=0.1),
        _CLASS_WEIGHT,
    ), _hgb),
    "svm_rbf": ModelSpec("svm_rbf", "SVM (RBF kernel, calibrated)", (
        Param("C", 1.0, min=0.001, max=1000.0, log=True, help="Inverse regularisation."),
        Param("gamma", "scale", options=("scale", "auto"), help="Kernel width rule."),
        Param("calibration", "sigmoid", options=("sigmoid", "isotonic"),
              help="Probability calibration (CalibratedClassifierCV) — SVC(probability=True) is deprecated."),
        Param("calibration_folds", 3, min=2, max=10, help="Internal folds of the calibration."),
        _CLASS_WEIGHT,
    ), _svm, note="probabilities from CalibratedClassifierCV (internal folds are not grouped by subject)"),
    "logistic_regression": ModelSpec("logistic_regression", "Logistic regression", (
        Param("C", 1.0, min=0.0001, max=1000.0, log=True, help="Inverse L2 regularisation."),
        _CLASS_WEIGHT,
    ), _logreg),
    "knn": ModelSpec("knn", "k-nearest neighbours", (
        Param("n_neighbors", 5, min=1, max=50),
        Param("weights", "distance", options=("uniform", "distance")),
    ), _knn),
}
DEFAULT_MODEL = "random_forest"


def _quiet_single_thread() -> Any:
    """Context for fits and predictions: warnings silenced and native thread pools (OpenMP,
    BLAS) limited to one thread. On 2 cores shared with the batch pool and the server, the
    OpenMP threads of HistGradientBoosting made a 168-sample fit ~50× slower (9.8 s vs 0.2 s)."""
    from contextlib import ExitStack

    from threadpoolctl import threadpool_limits

    stack = ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(threadpool_limits(limits=1))
    return stack


def make_pipeline(model: str = DEFAULT_MODEL, params: dict[str, Any] | None = None, *, seed: int = 0) -> Any:
    """``Pipeline([impute (median), scale (standard), model])`` from a model key and parameters."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}" + did_you_mean(model, MODELS))
    spec = MODELS[model]
    p = spec.validate(params)
    return Pipeline([
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("scale", StandardScaler()),
        ("model", spec.build(p, seed)),
    ])


# ----------------------------------------------------------------------------- splitting & leakage
@dataclass
class LeakReport:
    """Numbers behind the leakage warnings."""

    n_subjects: int = 0
    ungrouped_straddling_subjects: int = 0  # subjects an ungrouped split puts on both sides
    ungrouped_test_with_sibling: float = 0.0  # share of test images with a same-subject image in training
    used_straddling_subjects: int = 0  # the same for the split actually used
    near_duplicate_pairs: int = 0
    near_duplicate_pairs_across_folds: int = 0
    near_duplicate_images_across_folds: int = 0
    messages: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)


def _straddling(folds: np.ndarray, groups: np.ndarray) -> tuple[int, float]:
    """Subjects with images in the test fold *and* the training folds of some split; and the
    share of test images whose subject also has images in training."""
    straddle: set[Any] = set()
    with_sib = 0
    for f in np.unique(folds):
        test = folds == f
        train_groups = set(groups[~test].tolist())
        for g in set(groups[test].tolist()):
            if g in train_groups:
                straddle.add(g)
        with_sib += int(np.isin(groups[test], list(train_groups)).sum())
    return len(straddle), with_sib / max(len(groups), 1)


def _folds_of(splits: list[tuple[np.ndarray, np.ndarray]], n: int) -> np.ndarray:
    folds = np.full(n, -1, int)
    for k, (_, test) in enumerate(splits):
        folds[test] = k
    return folds


def make_splits(
    y: np.ndarray, groups: np.ndarray | None, *, n_splits: int = 5, seed: int = 0, grouped: bool = True,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], str, list[str]]:
    """CV splits: StratifiedGroupKFold by subject when possible, else stratified k-fold.
    Returns ``(splits, description, warnings)``."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    y = np.asarray(y)
    n = len(y)
    warn: list[str] = []
    _, counts = np.unique(y, return_counts=True)
    if len(counts) < 2:
        raise ValueError("need at least two classes to train a classifier")
    X0 = np.zeros((n, 1))
    k = int(n_splits)
    if grouped and groups is not None:
        groups = np.asarray(groups)
        n_groups = len(np.unique(groups))
        if n_groups >= 2:
            if n_groups < k:
                warn.append(f"only {n_groups} subjects: using {n_groups}-fold grouped CV instead of {k}-fold")
                k = n_groups
            # stratification is possible when every class occurs in at least k subjects
            per_class = [len(np.unique(groups[y == c])) for c in np.unique(y)]
            if min(per_class) >= k:
                sp = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
                desc = f"StratifiedGroupKFold, {k} folds by subject"
            else:
                sp = GroupKFold(n_splits=k)
                desc = f"GroupKFold, {k} folds by subject (a class occurs in fewer than {k} subjects: not stratified)"
            return [(tr, te) for tr, te in sp.split(X0, y, groups)], desc, warn
        warn.append("only one subject: grouped CV is impossible; folds are not grouped")
    min_class = int(counts.min())
    if min_class >= 2:
        kk = min(k, min_class)
        if kk < k:
            warn.append(f"the smallest class has {min_class} images: using {kk} folds")
        sp = StratifiedKFold(n_splits=kk, shuffle=True, random_state=seed)
        return [(tr, te) for tr, te in sp.split(X0, y)], f"StratifiedKFold, {kk} folds (not grouped)", warn
    sp = KFold(n_splits=min(k, n), shuffle=True, random_state=seed)
    warn.append("a class has a single image: folds are not stratified")
    return [(tr, te) for tr, te in sp.split(X0)], f"KFold, {min(k, n)} folds (not grouped)", warn


def leak_report(
    y: np.ndarray,
    groups: np.ndarray | None,
    folds: np.ndarray,
    *,
    signatures: Sequence[str] | None = None,
    n_splits: int = 5,
    seed: int = 0,
    threshold: float = NEAR_DUPLICATE_R,
) -> LeakReport:
    """Leakage numbers for the split ``folds`` (fold index per image).

    With subjects: what an *ungrouped* stratified split would do (subjects on both sides,
    share of test images with a same-subject sibling in training) and what the used split does.
    With signatures (:func:`analysis.features.signature`): near-duplicate pairs that cross folds.
    """
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y)
    rep = LeakReport()
    if groups is not None:
        groups = np.asarray(groups).astype(str)
        rep.n_subjects = int(len(np.unique(groups)))
        _, counts = np.unique(y, return_counts=True)
        kk = max(2, min(n_splits, int(counts.min())))
        if counts.min() >= 2:
            ung = _folds_of(list(StratifiedKFold(kk, shuffle=True, random_state=seed).split(np.zeros((len(y), 1)), y)), len(y))
            rep.ungrouped_straddling_subjects, rep.ungrouped_test_with_sibling = _straddling(ung, groups)
        rep.used_straddling_subjects, used_share = _straddling(folds, groups)
        if rep.used_straddling_subjects:
            rep.messages.append(
                f"{rep.used_straddling_subjects} of {rep.n_subjects} subjects have images in both training and test "
                f"folds ({used_share:.0%} of test images have a same-subject image in training): scores are optimistic. "
                "Group the folds by subject.")
        elif rep.ungrouped_straddling_subjects:
            rep.infos.append(
                f"Folds are grouped by subject. An ungrouped {kk}-fold split would have put {rep.ungrouped_straddling_subjects} "
                f"of {rep.n_subjects} subjects on both sides ({rep.ungrouped_test_with_sibling:.0%} of test images with a "
                "same-subject image in training).")
    if signatures is not None and len(signatures) == len(y):
        from analysis.features import signature_matrix

        C = signature_matrix(list(signatures))
        iu = np.triu_indices(len(y), 1)
        dup = C[iu] >= threshold
        rep.near_duplicate_pairs = int(dup.sum())
        a, b = iu[0][dup], iu[1][dup]
        cross = folds[a] != folds[b]
        rep.near_duplicate_pairs_across_folds = int(cross.sum())
        rep.near_duplicate_images_across_folds = int(len(set(a[cross].tolist()) | set(b[cross].tolist())))
        if rep.near_duplicate_pairs_across_folds:
            rep.messages.append(
                f"{rep.near_duplicate_pairs_across_folds} near-duplicate image pairs ({rep.near_duplicate_images_across_folds} "
                f"images, thumbnail correlation ≥ {threshold}) fall in different folds: test scores on them are optimistic.")
        elif rep.near_duplicate_pairs:
            rep.infos.append(f"{rep.near_duplicate_pairs} near-duplicate pairs found; all stay within one fold.")
    return rep


# ----------------------------------------------------------------------------- cross-validation
@dataclass
class CVResult:
    classes: list[str]
    folds: pd.DataFrame  # one row per fold: n_train, n_test, metrics
    summary: dict[str, tuple[float, float]]  # metric -> (mean, std across folds)
    proba: np.ndarray  # out-of-fold class probabilities (n × k)
    pred: np.ndarray  # out-of-fold predicted labels
    fold_of: np.ndarray  # fold index per image
    confusion: np.ndarray  # k × k, rows = true, cols = predicted
    splitter: str
    warnings: list[str]
    leaks: LeakReport
    splits: list[tuple[np.ndarray, np.ndarray]]
    seconds: float = 0.0

    def summary_table(self) -> pd.DataFrame:
        return pd.DataFrame([{"metric": k, "mean": m, "std": s} for k, (m, s) in self.summary.items()])


METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc_ovr")


def _fold_metrics(y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

    pred = classes[np.argmax(proba, axis=1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {
            "accuracy": float(accuracy_score(y_true, pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y_true, pred)),
            "f1_macro": float(f1_score(y_true, pred, average="macro", labels=classes, zero_division=0)),
        }
        present = np.unique(y_true)
        try:
            if len(present) < 2:
                auc = float("nan")
            elif len(classes) == 2:
                auc = float(roc_auc_score(y_true == classes[1], proba[:, 1]))
            else:
                keep = np.isin(classes, present)
                p = proba[:, keep]
                p = p / np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)
                auc = float(roc_auc_score(y_true, p, multi_class="ovr", labels=classes[keep]))
        except ValueError:
            auc = float("nan")
    out["roc_auc_ovr"] = auc
    return out


def _proba_full(pipe: Any, X: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Probabilities for all ``classes`` (a fold's model may have seen fewer)."""
    p = pipe.predict_proba(X)
    out = np.zeros((len(X), len(classes)))
    idx = {c: i for i, c in enumerate(classes)}
    for j, c in enumerate(pipe.classes_):
        out[:, idx[c]] = p[:, j]
    return out


def cross_validate(
    X: np.ndarray | pd.DataFrame,
    y: Sequence[Any],
    groups: Sequence[Any] | None = None,
    *,
    model: str = DEFAULT_MODEL,
    params: dict[str, Any] | None = None,
    n_splits: int = 5,
    seed: int = 0,
    grouped: bool = True,
    signatures: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CVResult:
    """k-fold cross-validation of ``make_pipeline(model, params)`` (grouped by ``groups``).

    Every fold's model is fitted on the training folds only (scaling and imputation included),
    so nothing of a test image reaches its model. Metrics are computed per fold; their mean and
    (population) standard deviation across folds are in ``summary``.
    """
    t0 = time.perf_counter()
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray([str(v) for v in y])
    g = None if groups is None else np.asarray([str(v) for v in groups])
    if g is not None and (g == "").all():
        g = None
    classes = np.unique(y)
    splits, desc, warn = make_splits(y, g, n_splits=n_splits, seed=seed, grouped=grouped)
    if g is None:
        warn.append("no subject/patient column: folds cannot be grouped — images of one person may sit on both sides")
    proba = np.zeros((len(y), len(classes)))
    rows = []
    if progress:
        progress(0, len(splits))
    for k, (tr, te) in enumerate(splits):
        pipe = make_pipeline(model, params, seed=seed)
        with _quiet_single_thread():
            pipe.fit(X[tr], y[tr])
            p = _proba_full(pipe, X[te], classes)
        proba[te] = p
        rows.append({"fold": k + 1, "n_train": len(tr), "n_test": len(te), **_fold_metrics(y[te], p, classes)})
        if progress:
            progress(k + 1, len(splits))
    folds_df = pd.DataFrame(rows)
    summary = {m: (float(np.nanmean(folds_df[m])), float(np.nanstd(folds_df[m]))) for m in METRICS}
    pred = classes[np.argmax(proba, axis=1)]
    from sklearn.metrics import confusion_matrix

    fold_of = _folds_of(splits, len(y))
    leaks = leak_report(y, g, fold_of, signatures=signatures, n_splits=n_splits, seed=seed)
    return CVResult(
        classes=[str(c) for c in classes], folds=folds_df, summary=summary, proba=proba, pred=pred, fold_of=fold_of,
        confusion=confusion_matrix(y, pred, labels=classes), splitter=desc, warnings=warn + leaks.messages,
        leaks=leaks, splits=splits, seconds=time.perf_counter() - t0,
    )


def roc_pr_curves(y: Sequence[Any], proba: np.ndarray, classes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """One-vs-rest ROC and precision–recall curves of out-of-fold probabilities, per class."""
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    y = np.asarray([str(v) for v in y])
    out: dict[str, dict[str, Any]] = {}
    for j, c in enumerate(classes):
        pos = y == c
        if pos.all() or not pos.any():
            continue
        fpr, tpr, _ = roc_curve(pos, proba[:, j])
        prec, rec, _ = precision_recall_curve(pos, proba[:, j])
        out[str(c)] = {"fpr": fpr, "tpr": tpr, "auc": float(auc(fpr, tpr)), "precision": prec, "recall": rec,
                       "ap": float(average_precision_score(pos, proba[:, j])), "prevalence": float(pos.mean())}
    return out


def permutation_importance_cv(
    X: np.ndarray | pd.DataFrame,
    y: Sequence[Any],
    splits: list[tuple[np.ndarray, np.ndarray]],
    feature_names: Sequence[str],
    *,
    model: str = DEFAULT_MODEL,
    params: dict[str, Any] | None = None,
    n_repeats: int = 3,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Permutation importance (drop of balanced accuracy) measured on each **held-out** fold
    and averaged: ``feature, importance_mean, importance_std`` sorted by importance."""
    from sklearn.inspection import permutation_importance

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray([str(v) for v in y])
    per_fold = []
    for k, (tr, te) in enumerate(splits):
        pipe = make_pipeline(model, params, seed=seed)
        with _quiet_single_thread():
            pipe.fit(X[tr], y[tr])
            r = permutation_importance(pipe, X[te], y[te], scoring="balanced_accuracy", n_repeats=n_repeats,
                                       random_state=seed, n_jobs=1)
        per_fold.append(r.importances_mean)
        if progress:
            progress(k + 1, len(splits))
    imp = np.vstack(per_fold)
    df = pd.DataFrame({"feature": list(feature_names), "importance_mean": imp.mean(axis=0), "importance_std": imp.std(axis=0)})
    return df.sort_values("importance_mean", ascending=False, ignore_index=True)


def projection(X: np.ndarray | pd.DataFrame, *, method: str = "pca", seed: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """2-D projection of standardised features: PCA (with explained variance) or t-SNE."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(X, dtype=np.float64)
    Z = StandardScaler().fit_transform(SimpleImputer(strategy="median", keep_empty_features=True).fit_transform(X))
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed).fit(Z)
        return pca.transform(Z), {"explained_variance_ratio": pca.explained_variance_ratio_.tolist()}
    if method == "tsne":
        from sklearn.manifold import TSNE

        perp = float(max(2.0, min(30.0, (len(Z) - 1) / 3)))
        return TSNE(n_components=2, perplexity=perp, random_state=seed, init="pca").fit_transform(Z), {"perplexity": perp}
    raise ValueError(f"parameter 'method' must be 'pca' or 'tsne'; got {method!r}")


# ----------------------------------------------------------------------------- trained models
@dataclass
class TrainedModel:
    """A fitted pipeline with what is needed to use and judge it."""

    pipeline: Any
    features: list[str]
    classes: list[str]
    model: str
    params: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)  # feature settings (FeatureSettings kwargs)
    cv: dict[str, Any] = field(default_factory=dict)  # summary metrics, per-fold values, splitter
    kind: str = "image"  # image | patch
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. patch size/stride, label values

    def proba(self, table: pd.DataFrame | np.ndarray) -> np.ndarray:
        X = _align(table, self.features)
        with _quiet_single_thread():
            return _proba_full(self.pipeline, X, np.asarray(self.classes))


def _align(table: pd.DataFrame | np.ndarray, features: Sequence[str]) -> np.ndarray:
    if isinstance(table, pd.DataFrame):
        missing = [f for f in features if f not in table.columns]
        if missing:
            raise ValueError(f"the feature table lacks {len(missing)} feature(s) the model needs, e.g. {missing[:3]}")
        return table[list(features)].to_numpy(dtype=np.float64)
    X = np.asarray(table, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(features):
        raise ValueError(f"expected {len(features)} feature columns, got shape {X.shape}")
    return X


def train(
    table: pd.DataFrame,
    label_col: str,
    features: Sequence[str],
    *,
    model: str = DEFAULT_MODEL,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    settings: dict[str, Any] | None = None,
    cv: CVResult | None = None,
    kind: str = "image",
    extra: dict[str, Any] | None = None,
) -> TrainedModel:
    """Fit the pipeline on all rows (the CV result, if given, is stored with it)."""
    X = _align(table, features)
    y = table[label_col].astype(str).to_numpy()
    pipe = make_pipeline(model, params, seed=seed)
    with _quiet_single_thread():
        pipe.fit(X, y)
    cv_info: dict[str, Any] = {}
    if cv is not None:
        cv_info = {"splitter": cv.splitter, "summary": {k: [m, s] for k, (m, s) in cv.summary.items()},
                   "folds": {m: [float(v) for v in cv.folds[m]] for m in METRICS}, "n_images": int(len(cv.pred))}
    return TrainedModel(pipeline=pipe, features=list(features), classes=[str(c) for c in pipe.classes_], model=model,
                        params=MODELS[model].validate(params), settings=dict(settings or {}), cv=cv_info, kind=kind,
                        extra=dict(extra or {}))


def predict(tm: TrainedModel, table: pd.DataFrame, *, id_cols: Sequence[str] = ("id", "name")) -> pd.DataFrame:
    """Predicted label and class probabilities for every row of a feature table."""
    P = tm.proba(table)
    out = pd.DataFrame({c: table[c].to_numpy() for c in id_cols if c in table.columns})
    out["predicted"] = np.asarray(tm.classes)[np.argmax(P, axis=1)]
    for j, c in enumerate(tm.classes):
        out[f"p_{c}"] = P[:, j]
    return out


# ----------------------------------------------------------------------------- safe save / load
#: the only types (beyond skops' own defaults: builtins, numpy arrays, scikit-learn estimators)
#: a MedLens model file may contain. Anything else — functions such as os.system, unknown classes —
#: makes :func:`load_model` refuse the file before a single object is built.
TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "sklearn._loss._loss.CyHalfMultinomialLoss",
)

MAX_MODEL_BYTES = 200 * 1024 * 1024


class ModelFileError(ValueError):
    """A model file that MedLens refuses to load (plain-language reason)."""


def _to_plain(v: Any) -> Any:
    """Settings / metadata as builtins only (tuples → lists, numpy scalars → Python)."""
    if isinstance(v, dict):
        return {str(k): _to_plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_to_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


def save_model(tm: TrainedModel, path: str | Path | None = None) -> bytes:
    """Serialise with skops (no pickle). Writes ``path`` when given; returns the bytes."""
    import sklearn
    import skops.io as sio

    payload = {
        "format": MODEL_FORMAT,
        "pipeline": tm.pipeline,
        "features": list(tm.features),
        "classes": list(tm.classes),
        "model": tm.model,
        "params": _to_plain(tm.params),
        "settings": _to_plain(tm.settings),
        "cv": _to_plain(tm.cv),
        "kind": tm.kind,
        "extra": _to_plain(tm.extra),
        "sklearn_version": sklearn.__version__,
    }
    data = sio.dumps(payload)
    if path is not None:
        Path(path).write_bytes(data)
    return data


def load_model(source: str | Path | bytes) -> TrainedModel:
    """Load a skops model file **only** if every type it holds is trusted.

    Raises :class:`ModelFileError` (nothing is executed) for: a file that is not a skops
    archive (e.g. a pickle, or corrupted bytes), one holding types outside skops' defaults and
    :data:`TRUSTED_TYPES` (listed in the message), or one that is not a MedLens model.
    """
    import skops.io as sio

    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    if len(data) > MAX_MODEL_BYTES:
        raise ModelFileError(f"model file too large ({len(data) / 1e6:.0f} MB; limit {MAX_MODEL_BYTES / 1e6:.0f} MB)")
    if not zipfile.is_zipfile(io.BytesIO(data)):
        hint = " (it looks like a Python pickle, which is never loaded)" if data[:1] == b"\x80" else ""
        raise ModelFileError("not a skops model file: it is not a zip archive" + hint)
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # noqa: BLE001 - any parse failure means "refuse"
        raise ModelFileError(f"the model file is damaged or not a skops file ({type(exc).__name__})") from None
    bad = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if bad:
        shown = ", ".join(bad[:5]) + (" …" if len(bad) > 5 else "")
        raise ModelFileError(f"refused: the file contains {len(bad)} untrusted type(s): {shown}. Only MedLens models are loaded.")
    try:
        payload = sio.loads(data, trusted=list(untrusted))
    except Exception as exc:  # noqa: BLE001
        raise ModelFileError(f"the model file could not be read ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ModelFileError("not a MedLens model (format marker missing)")
    from sklearn.pipeline import Pipeline

    pipe = payload.get("pipeline")
    feats = payload.get("features")
    classes = payload.get("classes")
    if not isinstance(pipe, Pipeline) or not isinstance(feats, list) or not all(isinstance(f, str) for f in feats):
        raise ModelFileError("not a MedLens model (pipeline or feature list missing)")
    if not isinstance(classes, list) or [str(c) for c in getattr(pipe, "classes_", [])] != [str(c) for c in classes]:
        raise ModelFileError("inconsistent model file: the stored classes do not match the pipeline")
    model = str(payload.get("model", ""))
    return TrainedModel(pipeline=pipe, features=feats, classes=[str(c) for c in classes], model=model,
                        params=dict(payload.get("params") or {}), settings=dict(payload.get("settings") or {}),
                        cv=dict(payload.get("cv") or {}), kind=str(payload.get("kind", "image")),
                        extra=dict(payload.get("extra") or {}))


# ----------------------------------------------------------------------------- patch-wise annotation maps
def patch_rows(
    a: np.ndarray,
    label: str,
    *,
    mask: np.ndarray | None,
    settings: Any,
    patch: int,
    stride: int,
    background: str,
    spacing: tuple[float, float] | None = None,
    max_patches: int = 24,
    seed: int = 0,
) -> pd.DataFrame:
    """Labelled patch features of one image for training a patch classifier.

    With a non-empty ``mask``: windows whose centre lies in the mask get ``label`` (taken on a
    3× finer grid, so small structures still give several windows); windows without any mask
    pixel get ``background``; partly overlapping ones are skipped. Without one, every window
    gets ``label``. At most ``max_patches`` windows per class and image (seeded sample);
    features are computed only for the chosen windows."""
    from analysis.features import patch_corners, patch_features, window_sums

    rng = np.random.default_rng(seed)
    corners = patch_corners(a, settings, patch=patch, stride=stride)
    has_mask = mask is not None and np.asarray(mask).any()
    if has_mask:
        m = np.asarray(mask, bool)
        outside = corners[window_sums(m, corners, patch) == 0]
        inside = patch_corners(a, settings, patch=patch, stride=max(1, stride // 3), within=m, min_fraction=0.0)
        pick_in = inside[rng.choice(len(inside), size=min(max_patches, len(inside)), replace=False)] if len(inside) else inside
        pick_out = outside[rng.choice(len(outside), size=min(max_patches, len(outside)), replace=False)] if len(outside) else outside
        chosen = np.concatenate([pick_in, pick_out]).reshape(-1, 2)
        labels = [label] * len(pick_in) + [background] * len(pick_out)
    else:
        chosen = corners[rng.choice(len(corners), size=min(max_patches, len(corners)), replace=False)] if len(corners) else corners
        labels = [label] * len(chosen)
    if len(chosen) == 0:
        return pd.DataFrame()
    _, X = patch_features(a, settings, patch=patch, spacing=spacing, corners=chosen)
    X.insert(0, "patch_label", labels)
    X.insert(1, "patch_row", chosen[:, 0])
    X.insert(2, "patch_col", chosen[:, 1])
    return X


BACKGROUND_NAMES = ("normal", "background", "healthy", "negative", "control", "benign", "none", "0")


def guess_background(labels: Sequence[str]) -> str:
    """The class patches outside a mask belong to: a label named like 'normal' / 'background' /
    'healthy' / 'negative' / 'control', else the most common label."""
    labs = [str(x) for x in labels if str(x)]
    if not labs:
        raise ValueError("no labels")
    for name in BACKGROUND_NAMES:
        for lab in sorted(set(labs)):
            if lab.lower() == name:
                return lab
    return str(pd.Series(labs).mode().iloc[0])


def entry_patches(entry: dict[str, Any], *, background: str, settings: dict[str, Any], patch: int = 24, stride: int = 12,
                  max_patches: int = 24, seed: int = 0) -> dict[str, Any]:
    """Batch-map task: labelled patch rows of one dataset entry (label in ``entry["_label"]``).
    Returns ``{"n_patches": k, "patches": DataFrame}``."""
    from analysis.features import FeatureSettings

    a, sp, m = _load_entry_arrays(entry)
    s = FeatureSettings.from_kwargs(**settings)
    sid = zlib.crc32(str(entry.get("id", "")).encode())  # deterministic per entry
    df = patch_rows(a, str(entry["_label"]), mask=m, settings=s, patch=patch, stride=stride, background=background,
                    spacing=sp, max_patches=max_patches, seed=seed + sid)
    return {"n_patches": int(len(df)), "patches": df}


def patch_training_table(
    entries: Sequence[dict[str, Any]],
    labels: Sequence[str],
    *,
    settings: Any,
    patch: int = 24,
    stride: int = 12,
    background: str | None = None,
    max_patches: int = 24,
    seed: int = 0,
    load: Callable[[dict[str, Any]], tuple[np.ndarray, tuple[float, float] | None, np.ndarray | None]] | None = None,
) -> pd.DataFrame:
    """Patch rows (:func:`patch_rows`) over dataset entries (serial), with ``item`` (entry id)
    and ``subject`` columns so CV can group patches. ``background`` defaults to
    :func:`guess_background`."""
    load = load or _load_entry_arrays
    background = background or guess_background(labels)
    frames = []
    for k, (e, lab) in enumerate(zip(entries, labels)):
        a, sp, m = load(e)
        df = patch_rows(a, str(lab), mask=m, settings=settings, patch=patch, stride=stride, background=background,
                        spacing=sp, max_patches=max_patches, seed=seed + k)
        if len(df):
            df.insert(0, "item", str(e.get("id", k)))
            df.insert(1, "subject", str(e.get("subject", "") or e.get("id", k)))
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _load_entry_arrays(entry: dict[str, Any]) -> tuple[np.ndarray, tuple[float, float] | None, np.ndarray | None]:
    from analysis.dataset import load_aux, load_entry

    img = load_entry(entry)
    plane = img.middle_plane()
    a = plane.grey()
    m = load_aux(entry, "mask_path") if str(entry.get("mask_path", "") or "") else None
    if m is not None and m.shape != a.shape:
        m = None
    return a, plane.spacing, m


def default_label_values(tm: TrainedModel) -> dict[str, float]:
    """``l_c``: 0 for the model's background class (``extra["background"]``, else the first
    class), then 1, 2, … for the others in class order."""
    bg = tm.extra.get("background")
    bg = bg if bg in tm.classes else tm.classes[0]
    others = [c for c in tm.classes if c != bg]
    return {bg: 0.0, **{c: float(i + 1) for i, c in enumerate(others)}}


def annotation_map(
    a: np.ndarray,
    tm: TrainedModel,
    *,
    spacing: tuple[float, float] | None = None,
    label_values: dict[str, float] | None = None,
    patch: int | None = None,
    stride: int | None = None,
) -> dict[str, Any]:
    """Per-pixel class probabilities from sliding-window classification, and the annotation
    map ``L(x, y) = Σ_c P(c | x, y) · l_c``.

    Each window's probabilities are spread over its pixels and averaged where windows overlap;
    pixels no accepted window covers (e.g. outside the resegmentation range) are NaN.
    ``label_values`` gives ``l_c`` (default :func:`default_label_values`: the background class 0,
    the others 1, 2, … — for two classes ``L`` is the probability of the non-background class).
    Returns ``{"L", "proba" (k, M, N), "classes", "n_windows"}``.
    """
    from analysis.features import FeatureSettings, patch_features

    patch = int(patch or tm.extra.get("patch", 24))
    stride = int(stride or tm.extra.get("stride", max(1, patch // 2)))
    settings = FeatureSettings.from_kwargs(**tm.settings) if tm.settings else FeatureSettings()
    a = np.asarray(a, dtype=np.float32)
    corners, X = patch_features(a, settings, patch=patch, stride=stride, spacing=spacing)
    k = len(tm.classes)
    acc = np.zeros((k,) + a.shape, np.float64)
    cnt = np.zeros(a.shape, np.float64)
    if len(X):
        P = tm.proba(X)
        for (r, c), p in zip(corners, P):
            acc[:, r:r + patch, c:c + patch] += p[:, None, None]
            cnt[r:r + patch, c:c + patch] += 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        proba = np.where(cnt > 0, acc / np.maximum(cnt, 1.0), np.nan)
    values = label_values or default_label_values(tm)
    lv = np.array([float(values[c]) for c in tm.classes])
    L = np.tensordot(lv, proba, axes=(0, 0))
    return {"L": L.astype(np.float32), "proba": proba.astype(np.float32), "classes": list(tm.classes),
            "n_windows": int(len(X)), "label_values": {c: float(v) for c, v in zip(tm.classes, lv)}}


# ----------------------------------------------------------------------------- labels
def labels_from_folders(paths: Sequence[str], *, level: str = "top") -> list[str]:
    """Label = the first folder of each relative path (``level="top"``) or its parent
    folder (``"parent"``); "" for files at the root."""
    out = []
    for p in paths:
        parts = Path(str(p)).parts
        if len(parts) < 2:
            out.append("")
        else:
            out.append(parts[0] if level == "top" else parts[-2])
    return out


def labels_from_csv(keys: Sequence[Sequence[str]], csv_bytes: bytes) -> tuple[list[str], int]:
    """Labels from a CSV with a file column and a label column (header names ``file``/``path``/
    ``name``/``filename`` and ``label``/``class``/``diagnosis``; else the first two columns).

    ``keys`` gives, per entry, the strings it may be known by (name, relative path, id); matches
    are exact, then by base name. Returns ``(labels, n_matched)``; unmatched entries get "".
    """
    text = csv_bytes.decode("utf-8-sig", errors="replace")
    df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    if df.shape[1] < 2:
        raise ValueError("the CSV needs two columns: file and label")
    cols = {c.lower().strip(): c for c in df.columns}
    fcol = next((cols[c] for c in ("file", "path", "filename", "name", "image", "id") if c in cols), df.columns[0])
    lcol = next((cols[c] for c in ("label", "class", "diagnosis", "target") if c in cols), df.columns[1])
    exact = dict(zip(df[fcol].str.strip(), df[lcol].str.strip()))
    base = {Path(k).name: v for k, v in exact.items()}
    labels, n = [], 0
    for ks in keys:
        lab = next((exact[k] for k in ks if k in exact), None)
        if lab is None:
            lab = next((base[Path(k).name] for k in ks if Path(k).name in base), None)
        labels.append(lab or "")
        n += lab is not None
    return labels, n


def labels_from_metadata(metas: Sequence[dict[str, Any]], key: str) -> list[str]:
    """Label = a safe (allow-listed, non-identifying) metadata value, e.g. ``body_part``,
    ``series_description``, ``manufacturer``. Identifying tags are never available."""
    from analysis.privacy import SAFE_METADATA_KEYS

    if key not in SAFE_METADATA_KEYS:
        raise ValueError(f"parameter 'key' must be a safe metadata key; {key!r} is not" + did_you_mean(key, SAFE_METADATA_KEYS))
    return ["" if m is None or m.get(key) in (None, "") else str(m.get(key)) for m in metas]


def summary_text(cv: CVResult, metric: str = "balanced_accuracy") -> str:
    m, s = cv.summary[metric]
    return f"{metric.replace('_', ' ')} {m:.3f} ± {s:.3f} ({cv.splitter})"
