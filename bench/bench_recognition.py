"""Recognition speed, measured in this run (medians; ratios to baselines from the same run).

* GLCM with 32 grey levels vs 256 levels on a 256² cohort slice (registry path, 4 angles);
* per-image feature extraction (default CT settings, all groups) vs the bare decode of the
  same file (how much the features add to reading the image);
* whole-cohort extraction through the batch map: process pool (2 cores) vs serial;
* training + subject-grouped 5-fold CV of every model on the cohort feature table, vs one fit
  of the default random forest;
* annotation map of one slice (patch classifier, 24-px windows every 8 px).

Run: ``python bench/bench_recognition.py [--quick]`` (needs the built sample dataset).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import median_time, parser, report  # noqa: E402

from analysis import classify as C  # noqa: E402
from analysis import dataset as ds  # noqa: E402
from analysis import features as F  # noqa: E402
from analysis import registry  # noqa: E402
from analysis.batch import CallTask, ProcessEngine, SerialEngine, batch_map  # noqa: E402


def main() -> None:
    args = parser(__doc__.split("\n\n")[0]).parse_args()
    reps = 3 if args.quick else 7
    d = ds.load_sample()
    recs = [r for r in d.records() if r["role"] == "cohort"]
    if args.quick:
        recs = recs[::2]
    entry = recs[1]
    img = ds.load_entry(entry).grey()
    settings = F.default_settings("CT")

    print("== GLCM cost by grey levels (256² slice, soft-tissue range, distance 1, 4 angles)")
    t32 = median_time(lambda: registry.run("features.glcm", img, {"bin_count": 32, "range_min": -20.0, "range_max": 150.0}), reps)
    t64 = median_time(lambda: registry.run("features.glcm", img, {"bin_count": 64, "range_min": -20.0, "range_max": 150.0}), reps)
    t256 = median_time(lambda: registry.run("features.glcm", img, {"bin_count": 256, "range_min": -20.0, "range_max": 150.0}), reps)
    report("GLCM 32 levels (baseline: 256 levels)", t32, t256, target="≤ 0.2×")
    report("GLCM 64 levels (baseline: 256 levels)", t64, t256)

    print("== one image: decode vs decode + all default features")
    t_decode = median_time(lambda: ds.load_entry(entry), reps)
    t_feat = median_time(lambda: F.extract_entry(entry, **settings.as_kwargs()), reps)
    report("decode + features (baseline: decode only)", t_feat, t_decode)
    groups = {}
    for g in F.GROUPS[:-1]:
        s = F.FeatureSettings.from_kwargs(**{**settings.as_kwargs(), "groups": (g,)})
        groups[g] = median_time(lambda s=s: F.compute_features(img, s, spacing=(0.8, 0.8)), reps)
    print("   per group (ms): " + ", ".join(f"{g} {t * 1000:.1f}" for g, t in groups.items()))

    print(f"== whole cohort ({len(recs)} images) through the batch map")
    task = CallTask(F.extract_entry, tuple(settings.as_kwargs().items()))
    t0 = time.perf_counter()
    ser = batch_map(task, recs, engine=SerialEngine())
    t_ser = time.perf_counter() - t0
    eng = ProcessEngine(2)
    batch_map(task, recs[:8], engine=eng)  # start the pool outside the timing
    t0 = time.perf_counter()
    par = batch_map(task, recs, engine=eng)
    t_par = time.perf_counter() - t0
    assert (ser["error"] == "").all() and (par["error"] == "").all()
    report(f"{len(recs)} images, 2 processes (baseline: serial)", t_par, t_ser, target="≪ 60 s absolute")
    print(f"   absolute: {t_par:.1f} s with 2 processes ({1000 * t_par / len(recs):.0f} ms/image), {t_ser:.1f} s serial")

    print("== training + subject-grouped 5-fold CV on the cohort table")
    feats = F.feature_columns(par)
    X = par[feats].to_numpy(float)
    y = np.array([r["label"] for r in recs])
    g = np.array([r["subject"] for r in recs])
    fit_once = median_time(lambda: C.make_pipeline().fit(X, y), 1 if args.quick else 3, warmup=0)
    for model in C.MODELS:
        t0 = time.perf_counter()
        cv = C.cross_validate(X, y, g, model=model)
        C.train(par.assign(_y=y), "_y", feats, model=model, cv=cv)
        t = time.perf_counter() - t0
        report(f"{model}: CV + final fit (baseline: 1 RF fit)", t, fit_once)
        print(f"   {model}: {t:.2f} s; balanced accuracy {cv.summary['balanced_accuracy'][0]:.3f} "
              f"± {cv.summary['balanced_accuracy'][1]:.3f}")

    print("== annotation map (patch classifier)")
    train = recs[: max(8, len(recs) // 3)]
    ps = F.FeatureSettings.from_kwargs(**{**settings.as_kwargs(), "groups": ("first_order", "glcm")})
    t0 = time.perf_counter()
    table = C.patch_training_table(train, [r["label"] for r in train], settings=ps, patch=24, stride=12)
    t_tab = time.perf_counter() - t0
    tm = C.train(table, "patch_label", F.feature_columns(table), settings=ps.as_kwargs(), kind="patch",
                 extra={"patch": 24, "stride": 8, "background": "normal"})
    t_map = median_time(lambda: C.annotation_map(img, tm, spacing=(0.8, 0.8)), reps, warmup=1)
    report("annotation map of one slice (baseline: its features)", t_map, t_feat)
    print(f"   windows sampled from {len(train)} images in {t_tab:.1f} s ({len(table)} windows); map {t_map:.2f} s")


if __name__ == "__main__":
    main()
