"""Accuracy facts listed in the README's validation table, measured on the sample dataset:
the lesion preset's median Dice on the cohort's lesion slices, and the watershed preset's
object count on the real nuclei image with its real instance mask."""

from __future__ import annotations

import os

import numpy as np
import pytest

from analysis import registry
from analysis import segmentation as seg
from analysis.dataset import load_aux, load_entry, load_sample
from analysis.seg_metrics import dice



def test_lesion_preset_median_dice_at_least_085():
    ds = load_sample()
    steps = seg.PRESETS["CT hyperdense lesion (band 55–200 HU + clean-up)"]["steps"]
    lesions = [r for r in ds.records() if r["role"] == "cohort" and r["label"] == "lesion"]
    assert len(lesions) >= 50
    scores = []
    for rec in lesions[::3]:
        img = load_entry(rec)
        res = registry.run_chain(steps, img.grey(), spacing=img.spacing, units=img.units)
        scores.append(dice(res.mask, load_aux(rec, "mask_path")))
    assert np.median(scores) >= 0.85, np.median(scores)


def test_watershed_preset_counts_real_nuclei_within_10_percent():
    ds = load_sample()
    recs = [r for r in ds.records() if r["id"] == "real_nuclei_bbbc038"]
    if not recs:
        # `make sample` fetches the stardist wheel from PyPI; a machine without PyPI access builds
        # the set without the nuclei image. CI always has PyPI, so there this must not skip.
        if os.environ.get("CI"):
            pytest.fail("nuclei image missing from the sample build on CI (stardist wheel not fetched)")
        pytest.skip("nuclei image not in this sample build (stardist wheel could not be fetched from PyPI)")
    rec = recs[0]
    from analysis.io import load_image
    from analysis.dataset import entry_path

    truth = load_image(entry_path(rec, "mask_path")).pixels
    n_true = len(np.unique(truth)) - 1
    assert n_true == 125
    img = load_entry(rec)
    res = registry.run_chain(seg.PRESETS["Nuclei count (Otsu + distance watershed)"]["steps"], img.grey(), spacing=img.spacing)
    labels = res.labels if res.labels is not None else __import__("skimage.measure", fromlist=["label"]).label(res.mask)
    n = len(np.unique(labels)) - 1
    assert abs(n - n_true) / n_true <= 0.10, (n, n_true)
