"""Accuracy of the segmentation presets on the sample dataset (facts about the methods).

1. Cohort lesion slices (role ``cohort``, label ``lesion``, CT in HU, exact lesion masks):
   Dice, Hausdorff and ASD (mm) of every preset that targets lesions, plus Otsu alone as a
   reference; the best preset's median Dice is the headline number (target ≥ 0.85).
2. Real images with a real *instance* mask (e.g. nuclei): object count of the watershed
   preset vs the true count (target within 10 %). When the sample set holds none, this
   part says so and measures the same preset on synthetic touching nuclei with a known
   count (clearly labelled as synthetic).

Run: ``python bench/accuracy_segmentation.py`` (``--quick``: first 20 lesion slices).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis import registry  # noqa: E402
from analysis import segmentation as seg  # noqa: E402
from analysis.dataset import load_aux, load_entry, load_sample  # noqa: E402
from analysis.seg_metrics import count_objects, instance_labels, overlap_metrics, segmentation_labels  # noqa: E402

LESION_PRESET = "CT hyperdense lesion (band 55–200 HU + clean-up)"
NUCLEI_PRESET = "Nuclei count (Otsu + distance watershed)"


def lesion_accuracy(ds, quick: bool) -> pd.DataFrame:
    e = ds.entries
    rows = e[(e["role"] == "cohort") & (e["label"] == "lesion") & (e["mask_path"] != "")]
    if quick:
        rows = rows.head(20)
    chains = {LESION_PRESET: seg.PRESETS[LESION_PRESET]["steps"], "Otsu alone (reference)": [("segmentation.otsu", {})]}
    out = []
    for rec in rows.to_dict("records"):
        rec["root"] = str(ds.root)
        img = load_entry(rec)
        truth = load_aux(rec, "mask_path")
        for name, steps in chains.items():
            res = registry.run_chain(steps, img.grey(), spacing=img.spacing, units=img.units)
            m = overlap_metrics(res.mask, truth, img.spacing)
            out.append({"id": rec["id"], "subject": rec["subject"], "method": name, **m})
    return pd.DataFrame(out)


def instance_entries(ds) -> list[dict]:
    """Entries whose ground-truth mask stores more than one object label (instance masks)."""
    found = []
    for rec in ds.records():
        if not str(rec.get("mask_path", "")) or rec.get("role") in ("cohort", "series"):
            continue
        inst = instance_labels(rec)
        if inst is not None and len(np.unique(inst)) > 2:
            found.append(rec)
    return found


def synthetic_nuclei(seed: int = 0, n: int = 60, shape=(512, 512)) -> tuple[np.ndarray, int]:
    """Fluorescence-like blobs (radius 6–11 px, some touching) on a dark background, noise."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape, np.float32)
    centres: list[tuple[float, float, float]] = []
    while len(centres) < n:
        r, c, rad = rng.uniform(20, shape[0] - 20), rng.uniform(20, shape[1] - 20), rng.uniform(6, 11)
        # allow touching (distance ≥ 0.8 × sum of radii) but not heavy overlap
        if all(np.hypot(r - r2, c - c2) >= 0.8 * (rad + q2) for r2, c2, q2 in centres):
            centres.append((r, c, rad))
    for r, c, rad in centres:
        img = np.maximum(img, np.clip(1.0 - ((rr - r) ** 2 + (cc - c) ** 2) / rad**2, 0, 1) ** 0.3 * rng.uniform(120, 200))
    img += rng.normal(10, 6, shape).astype(np.float32)
    return img.astype(np.float32), n


def count_accuracy(ds) -> pd.DataFrame:
    steps = seg.PRESETS[NUCLEI_PRESET]["steps"]
    out = []
    for rec in instance_entries(ds):
        img = load_entry(rec)
        res = registry.run_chain(steps, img.grey(), spacing=img.spacing, units=img.units)
        n_true = count_objects(instance_labels(rec))
        n = count_objects(segmentation_labels(res))
        out.append({"image": rec["id"], "kind": "real", "true_count": n_true, "watershed_count": n,
                    "error_pct": 100.0 * (n - n_true) / n_true})
    for seed in range(3):
        img, n_true = synthetic_nuclei(seed)
        res = registry.run_chain(steps, img, spacing=None)
        n = count_objects(segmentation_labels(res))
        out.append({"image": f"synthetic nuclei seed {seed}", "kind": "synthetic", "true_count": n_true,
                    "watershed_count": n, "error_pct": 100.0 * (n - n_true) / n_true})
    return pd.DataFrame(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    ds = load_sample()
    les = lesion_accuracy(ds, args.quick)
    print(f"== Cohort lesion slices: {les['id'].nunique()} slices")
    summary = les.groupby("method").agg(
        dice_median=("dice", "median"), dice_q25=("dice", lambda s: s.quantile(0.25)), dice_min=("dice", "min"),
        iou_median=("iou", "median"), hausdorff_mm_median=("hausdorff_mm", "median"), asd_mm_median=("asd_mm", "median"),
    )
    print(summary.round(3).to_string())
    best = summary["dice_median"].idxmax()
    print(f"best preset: {best} — median Dice {summary.loc[best, 'dice_median']:.3f} (target ≥ 0.85)")
    cnt = count_accuracy(ds)
    print("== Object count, watershed preset")
    if not (cnt["kind"] == "real").any():
        print("no real image with an instance mask in the sample set: synthetic nuclei only")
    print(cnt.round(1).to_string(index=False))


if __name__ == "__main__":
    main()
