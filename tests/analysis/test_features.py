"""Feature values against hand-computed ground truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import features as F
from analysis import registry


# ----------------------------------------------------------------------------- first order
def test_first_order_known_array():
    # values 0,0,0,0,10: mean 2; deviations -2 (×4) and 8
    # m2 = (4·4 + 64)/5 = 16, m3 = (4·(−8) + 512)/5 = 96, m4 = (4·16 + 4096)/5 = 832
    a = np.array([[0, 0, 0, 0, 10]], np.float32)
    v = registry.run("features.first_order", a, {"bin_width": 5.0}).metrics
    assert v["mean"] == pytest.approx(2.0)
    assert v["std"] == pytest.approx(4.0)
    assert v["skewness"] == pytest.approx(96 / 16 ** 1.5)  # 1.5
    assert v["kurtosis"] == pytest.approx(832 / 16 ** 2)  # 3.25 (non-excess)
    assert v["min"] == 0 and v["max"] == 10 and v["range"] == 10
    assert v["energy"] == pytest.approx(100.0)
    assert v["rms"] == pytest.approx(math.sqrt(20.0))
    assert v["mad"] == pytest.approx((4 * 2 + 8) / 5)
    # bin width 5: bins floor(x/5) -> {0: 4, 2: 1}: p = 0.8, 0.2
    assert v["entropy"] == pytest.approx(-(0.8 * math.log2(0.8) + 0.2 * math.log2(0.2)))
    assert v["uniformity"] == pytest.approx(0.8 ** 2 + 0.2 ** 2)
    assert v["p50"] == 0 and v["p90"] == pytest.approx(6.0)  # linear interpolation 0 → 10 at 0.6


def test_first_order_bin_width_matters_for_entropy_only():
    a = np.arange(1, 11, dtype=np.float32).reshape(2, 5)
    coarse = F.first_order_values(a, bin_width=5.0)
    fine = F.first_order_values(a, bin_width=1.0)
    # width 5: floor(x/5) → 0 (1..4), 1 (5..9), 2 (10): p = .4 .5 .1
    assert coarse["entropy"] == pytest.approx(-(0.4 * math.log2(0.4) + 0.5 * math.log2(0.5) + 0.1 * math.log2(0.1)))
    assert fine["entropy"] == pytest.approx(math.log2(10))  # ten distinct bins
    assert coarse["mean"] == fine["mean"] == pytest.approx(5.5)
    assert coarse["kurtosis"] == pytest.approx((2 * (4.5**4 + 3.5**4 + 2.5**4 + 1.5**4 + 0.5**4) / 10) / 8.25**2)


def test_first_order_mask_and_range_restrict_the_region():
    a = np.array([[-1000, 10, 20], [30, 40, 2000]], np.float32)
    inside = F.first_order_values(a, range_min=-20, range_max=150)
    assert inside["n_pixels"] == 4 and inside["mean"] == pytest.approx(25.0)
    m = np.array([[0, 1, 1], [0, 0, 0]], bool)
    r = registry.run("features.first_order", a, {}, mask=m, spacing=(0.5, 2.0)).metrics
    assert r["mean"] == pytest.approx(15.0) and r["roi_area_mm2"] == pytest.approx(2.0)


def test_range_min_above_max_is_refused():
    with pytest.raises(ValueError, match="range_min"):
        F.first_order_values(np.zeros((4, 4)), range_min=10, range_max=5)


# ----------------------------------------------------------------------------- GLCM
def _checkerboard(n=16):
    return (np.indices((n, n)).sum(axis=0) % 2).astype(np.float32) * 100.0


def test_glcm_checkerboard_horizontal():
    # every horizontal neighbour pair differs by one level: P(0,1) = P(1,0) = 1/2
    v = registry.run("features.glcm", _checkerboard(), {"bin_mode": "count", "bin_count": 2, "angles": "0"}).metrics
    assert v["n_levels"] == 2
    assert v["contrast"] == pytest.approx(1.0)
    assert v["dissimilarity"] == pytest.approx(1.0)
    assert v["homogeneity"] == pytest.approx(0.5)
    assert v["ASM"] == pytest.approx(0.5)
    assert v["energy"] == pytest.approx(math.sqrt(0.5))
    assert v["correlation"] == pytest.approx(-1.0)


def test_glcm_checkerboard_diagonal_and_average():
    diag = F.glcm_values(_checkerboard(), bin_count=2, angles_deg=(45.0,))
    assert diag["contrast"] == pytest.approx(0.0)
    assert diag["homogeneity"] == pytest.approx(1.0)
    assert diag["correlation"] == pytest.approx(1.0)
    # 0/90 contrast 1, 45/135 contrast 0 → mean 0.5 over the four angles
    both = F.glcm_values(_checkerboard(), bin_count=2)
    assert both["contrast"] == pytest.approx(0.5)
    assert both["homogeneity"] == pytest.approx(0.75)


def test_glcm_bin_width_levels_and_mask():
    a = _checkerboard()  # values 0 and 100
    v = F.glcm_values(a, bin_mode="width", bin_width=25.0, angles_deg=(0.0,))
    # levels floor(x/25): 0 and 4 → 5 levels, neighbours differ by 4 levels: contrast 16
    assert v["n_levels"] == 5 and v["contrast"] == pytest.approx(16.0) and v["dissimilarity"] == pytest.approx(4.0)
    # inside a one-column mask there are no horizontal pairs; vertical pairs still differ
    m = np.zeros(a.shape, bool)
    m[:, 3] = True
    assert math.isnan(F.glcm_values(a, mask=m, bin_count=2, angles_deg=(0.0,))["contrast"])
    assert F.glcm_values(a, mask=m, bin_count=2, angles_deg=(90.0,))["contrast"] == pytest.approx(1.0)


def test_quantize_fixed_width_edges_and_too_many_levels():
    q, n = F.quantize(np.array([-30.0, -25.0, -1.0, 0.0, 24.9, 25.0]), bin_width=25.0)
    # bins start at floor(-30/25)*25 = -50: [-50,-25) [-25,0) [0,25) [25,50)
    assert n == 4 and q.tolist() == [0, 1, 1, 2, 2, 3]
    with pytest.raises(ValueError, match="bin_width"):
        F.quantize(np.array([0.0, 1e6]), bin_width=1.0)


# ----------------------------------------------------------------------------- LBP / HOG
def test_lbp_flat_image_is_all_uniform_code_P():
    v = registry.run("features.lbp", np.full((20, 20), 7.0, np.float32), {"P": 8, "R": 1.0}).metrics
    # every neighbour ≥ centre: all bits set → uniform code P
    assert v["8"] == pytest.approx(1.0) and v["entropy"] == pytest.approx(0.0)
    assert sum(v[str(k)] for k in range(10)) == pytest.approx(1.0)


def test_hog_vertical_stripes_have_one_dominant_orientation():
    a = np.tile(np.repeat([0.0, 1.0], 8), (64, 4)).astype(np.float32)
    v = F.hog_values(a, cell=8)
    assert v["orient_dominance"] > 0.9
    rnd = np.random.default_rng(0).normal(size=(64, 64))
    assert F.hog_values(rnd, cell=8)["orient_entropy"] > v["orient_entropy"] + 1.0


# ----------------------------------------------------------------------------- shape
def _disk(radius_mm, spacing, center_mm=(30.0, 30.0), size_mm=(60.0, 60.0)):
    m, n = int(size_mm[0] / spacing[0]), int(size_mm[1] / spacing[1])
    yy, xx = np.meshgrid(np.arange(m) * spacing[0], np.arange(n) * spacing[1], indexing="ij")
    return (yy - center_mm[0]) ** 2 + (xx - center_mm[1]) ** 2 <= radius_mm ** 2


def test_shape_of_a_disk_with_anisotropic_spacing():
    sp = (0.5, 1.0)  # a 20 mm-radius disk is 80 px tall and 40 px wide
    disk = _disk(20.0, sp)
    v = registry.run("features.shape", disk.astype(np.float32), {}, mask=disk, spacing=sp).metrics
    assert v["area_mm2"] == pytest.approx(math.pi * 400, rel=0.01)
    assert v["perimeter_mm"] == pytest.approx(2 * math.pi * 20, rel=0.02)
    assert v["compactness"] == pytest.approx(1.0, abs=0.04)
    assert v["eccentricity"] < 0.15  # round in mm although elongated in pixels
    assert v["solidity"] > 0.95
    assert v["equivalent_diameter_mm"] == pytest.approx(40.0, rel=0.01)
    # the same pixels read with isotropic spacing are an ellipse with axes 2:1
    px = F.shape_values(disk, spacing=(1.0, 1.0))
    assert px["eccentricity"] == pytest.approx(math.sqrt(1 - 0.25), abs=0.02)
    assert px["major_axis_mm"] / px["minor_axis_mm"] == pytest.approx(2.0, rel=0.03)


def test_shape_without_mask_uses_largest_bright_region():
    a = np.zeros((60, 60), np.float32)
    a[10:30, 10:30] = 100  # 400 px square
    a[50:52, 50:52] = 100  # small distractor
    v = registry.run("features.shape", a, {"threshold": 50.0}, spacing=(1.0, 1.0)).metrics
    assert v["area_mm2"] == pytest.approx(400.0)
    assert v["solidity"] == pytest.approx(1.0)
    # a 20-px square: perimeter 80 (the 1-px contour smoothing rounds the corners slightly)
    assert v["perimeter_mm"] == pytest.approx(80.0, rel=0.05)
    assert v["compactness"] < 0.9  # a disc would be 1


# ----------------------------------------------------------------------------- settings, entries, patches
def test_compute_features_prefixes_and_settings_validation():
    a = np.random.default_rng(1).normal(40, 5, (64, 64)).astype(np.float32)
    f = F.compute_features(a, F.FeatureSettings())
    assert {c.split("_")[0] for c in f} == {"fo", "glcm", "lbp", "hog"}
    assert all(np.isfinite(v) for v in f.values())
    with pytest.raises(ValueError, match="unknown feature setting"):
        F.FeatureSettings.from_kwargs(bin_widht=3)
    with pytest.raises(ValueError, match="roi"):
        F.FeatureSettings(roi="elsewhere")


def test_largest_region_finds_the_enclosed_soft_tissue():
    a = np.full((100, 100), -1000.0, np.float32)
    yy, xx = np.ogrid[:100, :100]
    r = np.hypot(yy - 50, xx - 50)
    a[r < 45] = 20.0  # scalp ring
    a[r < 40] = 1000.0  # skull
    a[r < 35] = 35.0  # brain: the largest in-range region
    m = F.largest_region(a, -20, 150, erode_mm=2.0, spacing=(1.0, 1.0))
    assert m[50, 50] and not m[50, 50 + 42]  # brain in, scalp out
    assert m.sum() == pytest.approx(np.pi * 33 ** 2, rel=0.05)  # 35 px radius eroded by 2


def test_extract_entry_reads_png_and_mask(tmp_path):
    from PIL import Image as PILImage

    a = np.zeros((64, 64), np.uint8)
    a[16:48, 16:48] = 200
    PILImage.fromarray(a).save(tmp_path / "img.png")
    PILImage.fromarray((a > 0).astype(np.uint8) * 255).save(tmp_path / "img_mask.png")
    entry = {"id": "x", "path": "img.png", "mask_path": "img_mask.png", "root": str(tmp_path)}
    row = F.extract_entry(entry, groups=("first_order", "shape"), roi="mask")
    assert row["fo_mean"] == pytest.approx(200.0) and row["fo_std"] == pytest.approx(0.0)
    assert row["shape_area_mm2"] == pytest.approx(32 * 32)  # PNG: no spacing → px²
    assert row["_roi"] == "mask" and len(row["_signature"]) == 2 * 16 * 16


def test_patch_features_grid():
    a = np.zeros((64, 96), np.float32)
    corners, X = F.patch_features(a, F.FeatureSettings(groups=("first_order",)), patch=32, stride=16)
    assert corners.shape == (3 * 5, 2) and len(X) == 15
    assert corners[:, 0].max() == 32 and corners[:, 1].max() == 64


def test_signature_detects_near_duplicates():
    from analysis.phantoms import head_slice, subject_params

    h1 = head_slice(subject_params(1), 0.1, seed=1).hu
    h1b = head_slice(subject_params(1), 0.1, seed=2).hu + 30.0  # same anatomy, new noise, offset
    h2 = head_slice(subject_params(7), 0.1, seed=1).hu  # another subject, same level
    C = F.signature_matrix([F.signature(h) for h in (h1, h1b, h2)])
    assert C[0, 0] == pytest.approx(1.0)
    assert C[0, 1] > 0.998 > C[0, 2]


# ----------------------------------------------------------------------------- bin-width advisor
def test_bin_advice_counts_levels():
    adv = F.bin_advice([0, -10], [100, 290], [10, 25])
    r10 = adv[adv.bin_width == 10].iloc[0]
    # [0,100] → 0..10 = 11 levels; [-10,290] → -1..29 = 31 levels
    assert r10.bins_min == 11 and r10.bins_max == 31 and r10.share_in_target == pytest.approx(0.5)
    assert F.suggest_bin_width([0], [640], target_bins=64) == 10.0


def test_glcm_sensitivity_finest_width_is_the_reference():
    rng = np.random.default_rng(0)
    imgs = [rng.normal(40, s, (48, 48)).astype(np.float32) for s in (2, 4, 6, 8)]
    sens = F.glcm_bin_sensitivity(imgs, [1.0, 2.0, 20.0])
    ref = sens[sens.bin_width == 1.0]
    assert (ref.median_rel_change == 0).all()
    contrast = sens[sens.feature == "contrast"].set_index("bin_width")
    # noise σ orders GLCM contrast at any reasonable width
    assert contrast.loc[2.0, "rank_corr_vs_finest"] == pytest.approx(1.0)
    assert contrast.loc[20.0, "median_levels"] < contrast.loc[1.0, "median_levels"]
