"""Accuracy of the Recognition defaults on the sample lesion cohort (subject-grouped 5-fold CV).

    python bench/accuracy_recognition.py [--all-models] [--seeds N]

Extracts the default features (CT soft-tissue resegmentation −20..150 HU; first-order, GLCM 32
levels, LBP, HOG) for every image with role "cohort" through the batch map, then cross-validates
the default pipeline (random forest) with StratifiedGroupKFold by subject and prints balanced
accuracy (and the other metrics) as mean ± std across folds. ``--all-models`` adds every model;
``--seeds`` repeats the CV with different fold assignments. Also reports the annotation map's
pixel-level separation (patch model, held-out subjects).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import classify as C  # noqa: E402
from analysis import dataset as ds  # noqa: E402
from analysis import features as F  # noqa: E402
from analysis.batch import CallTask, batch_map  # noqa: E402


def cohort_table(settings: F.FeatureSettings):
    d = ds.load_sample()
    recs = [r for r in d.records() if r["role"] == "cohort"]
    t0 = time.perf_counter()
    df = batch_map(CallTask(F.extract_entry, tuple(settings.as_kwargs().items())), recs)
    secs = time.perf_counter() - t0
    for col in ("label", "subject", "id", "mask_path"):
        df[col] = [r[col] for r in recs]
    df["root"] = str(d.root)
    return df, recs, secs


def fmt(cv: C.CVResult) -> str:
    return "  ".join(f"{m} {cv.summary[m][0]:.3f} ± {cv.summary[m][1]:.3f}" for m in C.METRICS)


def annotation_check(recs, settings: F.FeatureSettings) -> None:
    """Patch model trained on 2/3 of the subjects, annotation maps on the other third's lesion
    images: mean L inside the true lesion vs outside (in-range pixels)."""
    subjects = sorted({r["subject"] for r in recs})
    test_subj = set(subjects[::3])
    train = [r for r in recs if r["subject"] not in test_subj]
    test = [r for r in recs if r["subject"] in test_subj and r["label"] == "lesion"]
    ps = F.FeatureSettings.from_kwargs(**{**settings.as_kwargs(), "groups": ("first_order", "glcm")})
    t0 = time.perf_counter()
    table = C.patch_training_table(train, [r["label"] for r in train], settings=ps, patch=24, stride=12)
    feats = F.feature_columns(table)
    tm = C.train(table, "patch_label", feats, settings=ps.as_kwargs(), kind="patch",
                 extra={"patch": 24, "stride": 8, "background": C.guess_background(table.patch_label)})
    t_train = time.perf_counter() - t0
    inside, outside, times = [], [], []
    for r in test:
        a, sp, m = C._load_entry_arrays(r)
        t = time.perf_counter()
        L = C.annotation_map(a, tm, spacing=sp)["L"]
        times.append(time.perf_counter() - t)
        inside.append(float(np.nanmean(L[m])))
        far = ~np.asarray(__import__("scipy.ndimage", fromlist=["x"]).binary_dilation(m, iterations=24))
        outside.append(float(np.nanmean(L[far])))
    print(f"annotation map (patch model, {len(table)} windows from {len(train)} images, trained in {t_train:.1f} s; "
          f"{len(test)} held-out lesion images): mean L inside lesion {np.mean(inside):.2f} ± {np.std(inside):.2f}, "
          f"far from it {np.mean(outside):.3f} ± {np.std(outside):.3f}; map {np.median(times):.2f} s/image")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--all-models", action="store_true")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--no-map", action="store_true")
    ap.add_argument("--quick", action="store_true", help="skip the (slower) annotation-map check")
    args = ap.parse_args()
    if args.quick:
        args.no_map = True
    settings = F.default_settings("CT")
    df, recs, secs = cohort_table(settings)
    bad = df[df["error"] != ""]
    print(f"{len(df)} cohort images, {df['subject'].nunique()} subjects, labels {df['label'].value_counts().to_dict()}; "
          f"features extracted in {secs:.1f} s ({len(bad)} errors)")
    feats = F.feature_columns(df)
    X, y, g = df[feats].to_numpy(float), df["label"].to_numpy(), df["subject"].to_numpy()
    models = list(C.MODELS) if args.all_models else [C.DEFAULT_MODEL]
    for model in models:
        for seed in range(args.seeds):
            cv = C.cross_validate(X, y, g, model=model, seed=seed, signatures=df["_signature"].tolist())
            print(f"{model:24s} seed {seed}: {fmt(cv)}  [{cv.splitter}; {cv.seconds:.1f} s]")
            if model == C.DEFAULT_MODEL and seed == 0:
                print("   per-fold balanced accuracy:", [round(v, 3) for v in cv.folds["balanced_accuracy"]])
                for w in cv.warnings + cv.leaks.infos:
                    print("   note:", w)
    ung = C.cross_validate(X, y, g, grouped=False)
    print(f"for comparison, UNGROUPED stratified 5-fold (leaky): balanced accuracy "
          f"{ung.summary['balanced_accuracy'][0]:.3f} ± {ung.summary['balanced_accuracy'][1]:.3f}")
    if not args.no_map:
        annotation_check(recs, settings)


if __name__ == "__main__":
    main()
