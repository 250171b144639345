"""Behaviour of the enhancement operations on images with known ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from analysis import enhancement as enh
from analysis import phantoms as ph
from analysis import registry
from analysis.metrics import psnr


@pytest.fixture(scope="module")
def head():
    """Clean CT head slice (HU) and a copy with known Gaussian noise σ = 100 HU (low-dose-like)."""
    clean = ph.head_slice(ph.subject_params(11), 0.1, spacing=(0.8, 0.8), noise_sigma=0.0, seed=3).hu.astype(np.float32)
    noisy = ph.add_gaussian_noise(clean, 100.0, seed=4).astype(np.float32)
    return clean, noisy


def hu_ramp(shape=(128, 160)) -> np.ndarray:
    """int16 HU image spanning −1024..3000 with structure in every region."""
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    base = -1024 + (cc / (shape[1] - 1)) * 4024
    base = base + 80 * np.sin(rr / 5.0)
    return np.clip(np.round(base), -1024, 3000).astype(np.int16)


@pytest.mark.parametrize("key,params", [
    ("enhancement.gaussian", {"sigma": 1.2}),
    ("enhancement.median", {"size": 3}),
    ("enhancement.bilateral", {"sigma_spatial": 2.0, "sigma_range": 0.05}),
    ("enhancement.nlm", {}),
    ("enhancement.tv", {"weight": 0.02}),
])
def test_denoising_known_sigma_raises_psnr_against_clean(head, key, params):
    clean, noisy = head
    before = psnr(clean, noisy)
    out = registry.run(key, noisy, params).image
    after = psnr(clean, out)
    assert out.shape == noisy.shape and out.dtype == np.float32
    assert after > before + 3.0, f"{key}: PSNR {before:.2f} → {after:.2f} dB"


def test_nlm_estimates_the_known_sigma(head):
    _, noisy = head
    res = registry.run("enhancement.nlm", noisy, {"h_factor": 0.8})
    assert res.metrics["sigma_est"] == pytest.approx(100.0, rel=0.15)
    assert res.metrics["h"] == pytest.approx(0.8 * res.metrics["sigma_est"])


def test_gamma_one_is_identity_and_gamma_keeps_range():
    a = hu_ramp().astype(np.float32)
    np.testing.assert_array_equal(registry.run("enhancement.gamma", a, {"gamma": 1.0}).image, a)
    out = registry.run("enhancement.gamma", a, {"gamma": 2.0}).image
    assert out.min() == pytest.approx(a.min()) and out.max() == pytest.approx(a.max())
    mid = (a.min() + a.max()) / 2
    # u = 0.5 → 0.25 for gamma 2
    i = np.argmin(np.abs(a - mid))
    u = (a.flat[i] - a.min()) / (a.max() - a.min())
    assert out.flat[i] == pytest.approx(a.min() + (a.max() - a.min()) * u ** 2, rel=1e-5)


@pytest.mark.parametrize("key", ["enhancement.clahe", "enhancement.equalize"])
def test_clahe_and_equalization_work_on_int16_hu_and_keep_units(key):
    a = hu_ramp()
    out = registry.run(key, a, {}).image
    assert out.dtype == np.float32 and out.shape == a.shape
    # output stays in the HU range of the input (not squashed to [0, 1])
    assert out.min() >= -1024 - 1e-3 and out.max() <= 3000 + 1e-3
    assert out.max() - out.min() > 3000
    # monotone on a column at fixed row for equalization (a global monotone mapping)
    if key == "enhancement.equalize":
        row = out[0]
        assert np.all(np.diff(row[np.argsort(a[0], kind="stable")]) >= -1e-3)


def test_clahe_window_range_maps_back_to_window_units():
    a = hu_ramp()
    out = registry.run("enhancement.clahe", a, {"range_mode": "window", "center": 40, "width": 400}).image
    assert out.min() >= -160 - 1e-3 and out.max() <= 240 + 1e-3
    # values far below the window are clipped to its low end before CLAHE: they map to the
    # bottom of the output range (CLAHE's own output for u = 0 lies within a few % of it)
    assert np.all(out[a < -400] <= -160 + 0.02 * 400)


def test_equalization_histogram_is_near_uniform(head):
    clean, noisy = head
    out = registry.run("enhancement.equalize", noisy, {"nbins": 256}).image
    counts, _ = np.histogram(out, bins=16, range=(out.min(), out.max()))
    frac = counts / counts.sum()
    assert np.all(np.abs(frac - 1 / 16) < 0.02), frac
    before, _ = np.histogram(noisy, bins=16)
    assert (before / before.sum()).max() > 0.3  # the input was far from uniform


def test_stretch_maps_percentiles_to_full_range():
    a = hu_ramp().astype(np.float32)
    out = registry.run("enhancement.stretch", a, {"mode": "window", "center": 0, "width": 1000}).image
    assert np.allclose(out[a <= -500], a.min()) and np.allclose(out[a >= 500], a.max())
    inside = (a > -500) & (a < 500)
    expected = a.min() + (a.max() - a.min()) * (a[inside] + 500) / 1000
    np.testing.assert_allclose(out[inside], expected, rtol=1e-5, atol=1e-2)
    with pytest.raises(ValueError, match="high_pct"):
        registry.run("enhancement.stretch", a, {"low_pct": 40, "high_pct": 40})


def test_log_transform_endpoints_and_concavity():
    a = hu_ramp().astype(np.float32)
    out = registry.run("enhancement.log", a, {"gain": 50.0}).image
    assert out.min() == pytest.approx(a.min()) and out.max() == pytest.approx(a.max(), rel=1e-6)
    assert np.all(out >= a - 1e-2)  # concave mapping lifts every value


def test_laplacian_sharpening_is_real_sharpening():
    flat = np.full((40, 40), 50.0, np.float32)
    np.testing.assert_allclose(registry.run("enhancement.laplacian", flat, {"strength": 1.0}).image, flat)
    rr, cc = np.mgrid[:40, :40].astype(np.float32)
    ramp = 3 * rr + 2 * cc
    out = registry.run("enhancement.laplacian", ramp, {"strength": 1.0}).image
    np.testing.assert_allclose(out[2:-2, 2:-2], ramp[2:-2, 2:-2], atol=1e-4)  # ∇² of a ramp is 0
    step = np.where(cc < 20, 0.0, 100.0).astype(np.float32)
    out = registry.run("enhancement.laplacian", step, {"strength": 0.5}).image
    assert out[10, 19] < 0 and out[10, 20] > 100  # undershoot / overshoot at the edge
    assert out.mean() == pytest.approx(step.mean(), abs=1e-3)
    blurred = ndi.gaussian_filter(step, 2.0)
    sharp = registry.run("enhancement.laplacian", blurred, {"strength": 1.0}).image
    assert np.abs(np.diff(sharp, axis=1)).max() > np.abs(np.diff(blurred, axis=1)).max()


def test_unsharp_mask_formula_and_no_clipping():
    a = hu_ramp().astype(np.float32)
    out = registry.run("enhancement.unsharp", a, {"radius": 2.0, "amount": 1.5}).image
    blur = ndi.gaussian_filter(a.astype(np.float64), 2.0, mode="nearest")
    inner = (slice(8, -8), slice(8, -8))  # borders depend on the padding mode
    np.testing.assert_allclose(out[inner], (a + 1.5 * (a - blur))[inner], rtol=1e-4, atol=0.5)
    assert out.max() > 3000  # HU kept, overshoot not clipped to [0, 1]


def test_median_opencv_and_scipy_paths_agree():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 100, (64, 70)).astype(np.float32)
    for size in (3, 5):
        np.testing.assert_array_equal(enh.median(a, size=size), ndi.median_filter(a, size=size, mode="nearest"))
    # salt noise is removed exactly on a flat image
    b = np.full((50, 50), 10.0, np.float32)
    b[10, 10] = 5000
    assert enh.median(b, size=3).max() == 10.0
    assert enh.median(b, size=7).max() == 10.0


def test_bilateral_preserves_edges_better_than_gaussian():
    rng = np.random.default_rng(2)
    rr, cc = np.mgrid[:80, :80]
    clean = np.where(cc < 40, 0.0, 1000.0).astype(np.float32)
    noisy = clean + rng.normal(0, 30, clean.shape).astype(np.float32)
    bil = registry.run("enhancement.bilateral", noisy, {"sigma_spatial": 3.0, "sigma_range": 0.1}).image
    gau = registry.run("enhancement.gaussian", noisy, {"sigma": 3.0}).image
    edge = slice(37, 43)
    assert np.abs(bil[:, edge] - clean[:, edge]).mean() < 0.5 * np.abs(gau[:, edge] - clean[:, edge]).mean()


def test_background_methods_remove_a_known_background():
    rr, cc = np.mgrid[:128, :128].astype(np.float32)
    bg = 200.0 + 0.5 * cc  # slowly varying background
    spots = np.zeros_like(bg)
    spots[30:34, 30:34] = 500.0
    spots[90:93, 70:73] = 300.0
    a = bg + spots
    for method in ("top-hat", "rolling ball"):
        out = registry.run("enhancement.background", a, {"method": method, "radius": 10}).image
        assert out[31, 31] == pytest.approx(500.0, abs=25.0), method
        assert out[91, 71] == pytest.approx(300.0, abs=25.0), method
        assert np.median(out) < 10.0, method


def test_bias_field_correction_flattens_a_multiplicative_field():
    clean = np.zeros((128, 128), np.float32)
    rr, cc = np.mgrid[:128, :128]
    body = (rr - 64) ** 2 + (cc - 64) ** 2 < 55 ** 2
    clean[body] = 600.0
    field = ph.bias_field(clean.shape, 0.3, seed=5).astype(np.float32)
    a = clean * field
    out = registry.run("enhancement.background", a, {"method": "bias field", "radius": 30}).image
    inner = (rr - 64) ** 2 + (cc - 64) ** 2 < 40 ** 2
    cv_before = a[inner].std() / a[inner].mean()
    cv_after = out[inner].std() / out[inner].mean()
    assert cv_after < 0.5 * cv_before
    assert out[~body].max() == 0.0  # background untouched


def test_histogram_matching_takes_reference_distribution():
    rng = np.random.default_rng(3)
    a = rng.normal(100, 10, (60, 60)).astype(np.float32)
    ref = rng.normal(-500, 200, (50, 70)).astype(np.float32)
    out = registry.run("enhancement.match_histogram", a, {}, reference=ref).image
    assert np.mean(out) == pytest.approx(ref.mean(), abs=20)
    assert np.std(out) == pytest.approx(ref.std(), rel=0.05)
    assert np.all(np.diff(out.ravel()[np.argsort(a.ravel())]) >= 0)  # order preserved
    with pytest.raises(ValueError, match="reference"):
        registry.run("enhancement.match_histogram", a, {})


def test_every_enhancement_op_accepts_int16_hu_and_returns_float32():
    a = hu_ramp()
    for op in registry.operations("enhancement"):
        ctx = {"reference": a} if "reference" in op.context else {}
        out = registry.run(op.key, a, {}, **ctx).image
        assert out.dtype == np.float32 and out.shape == a.shape, op.key
        assert np.isfinite(out).all(), op.key


def test_non_2d_input_is_rejected():
    with pytest.raises(ValueError, match="2-D"):
        registry.run("enhancement.gaussian", np.zeros((3, 8, 8), np.float32), {})


@pytest.mark.parametrize("key", ["enhancement.stretch", "enhancement.log", "enhancement.equalize", "enhancement.clahe"])
def test_tone_mappings_label_their_output_as_remapped(key):
    a = hu_ramp()
    res = registry.run(key, a, {}, units="HU")
    assert res.units == "HU (remapped)"  # same range, no longer Hounsfield units
    assert registry.run("enhancement.gaussian", a, {}, units="HU").units is None  # filters keep the input units
    assert registry.run("enhancement.gamma", a, {"gamma": 1.0}, units="HU").units is None  # identity stays physical
    assert registry.run("enhancement.gamma", a, {"gamma": 0.5}, units="HU").units == "HU (remapped)"
