"""Fusion: methods, metrics against hand-computed values and known properties, spacing-aware
resampling (physical extent kept), the comparator and the dataset-wide task."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from analysis import fusion as F
from analysis import phantoms as P
from analysis import registry
from analysis.image import Image
from analysis.metrics import entropy


# ----------------------------------------------------------------------------- fixtures
def _pair(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T1-like 256² at 0.8 mm and PET-like 64² at 3.2 mm of the same head slice (+ labels)."""
    hs = P.head_slice(P.subject_params(seed), 0.1, shape=(256, 256), spacing=(0.8, 0.8), noise_sigma=0)
    fr = P.one_hot(hs.labels)
    t1 = P.render_contrast(fr, P.T1_VALUES, blur_px=0.6)
    pet = P.downsample_block(P.render_contrast(fr, P.PET_VALUES, blur_px=3.0), 4).astype(np.float32)
    return t1, pet, hs.labels


def _disk(shape, spacing, center_mm, diameter_mm, value=100.0, background=0.0) -> np.ndarray:
    m, n = shape
    y = (np.arange(m) + 0.5) * spacing[0] - m * spacing[0] / 2
    x = (np.arange(n) + 0.5) * spacing[1] - n * spacing[1] / 2
    yy, xx = np.meshgrid(y, x, indexing="ij")
    inside = (yy - center_mm[0]) ** 2 + (xx - center_mm[1]) ** 2 <= (diameter_mm / 2) ** 2
    return np.where(inside, value, background).astype(np.float32)


def _diameter_mm(img: np.ndarray, spacing, level: float) -> float:
    area = float((img >= level).sum()) * spacing[0] * spacing[1]
    return 2.0 * math.sqrt(area / math.pi)


def _centroid_mm(img: np.ndarray, spacing) -> tuple[float, float]:
    """Intensity-weighted centre (mm from the image centre) of a non-negative image."""
    m, n = img.shape
    w = np.asarray(img, np.float64)
    rr, cc = np.mgrid[:m, :n]
    r, c = (rr * w).sum() / w.sum(), (cc * w).sum() / w.sum()
    return ((r + 0.5) * spacing[0] - m * spacing[0] / 2, (c + 0.5) * spacing[1] - n * spacing[1] / 2)


# ----------------------------------------------------------------------------- normalisation
def test_normalise_percentile_and_minmax():
    a = np.arange(1000, dtype=np.float32) - 500  # -500 .. 499
    lo, hi = np.percentile(a, [0.5, 99.5])
    n = F.normalise(a, "percentile")
    assert n.min() == 0.0 and n.max() == 1.0
    assert n[500] == pytest.approx((0 - lo) / (hi - lo), abs=1e-6)
    assert (n[a <= lo] == 0).all() and (n[a >= hi] == 1).all()  # clipped outside the range
    m = F.normalise(a, "minmax")
    assert m[0] == 0.0 and m[-1] == 1.0 and m[250] == pytest.approx(250 / 999, abs=1e-6)
    assert (F.normalise(np.full((4, 4), 7.0)) == 0).all()
    with pytest.raises(ValueError, match="normalise"):
        F.normalise(a, "zscore")


def test_normalisation_makes_units_irrelevant():
    t1, pet, _ = _pair()
    a, b, _, _ = F.common_grid(t1, (0.8, 0.8), pet, (3.2, 3.2))
    r1 = registry.run("fusion.laplacian_pyramid", a, {}, moving=b).image
    # the same pair in other units (HU-like offset/scale for A, Bq/ml ×1000 for B)
    r2 = registry.run("fusion.laplacian_pyramid", a * 3.0 - 1000.0, {}, moving=b * 1000.0).image
    np.testing.assert_allclose(r1, r2, atol=1e-4)


# ----------------------------------------------------------------------------- methods
def test_weighted_average_weight_one_returns_a_and_hand_values():
    t1, pet, _ = _pair()
    a, b, _, _ = F.common_grid(t1, (0.8, 0.8), pet, (3.2, 3.2))
    for norm in F.NORMALISATIONS:
        out = registry.run("fusion.weighted_average", a, {"weight": 1.0, "normalise": norm}, moving=b).image
        np.testing.assert_array_equal(out, F.normalise(a, norm))
        out0 = registry.run("fusion.weighted_average", a, {"weight": 0.0, "normalise": norm}, moving=b).image
        np.testing.assert_array_equal(out0, F.normalise(b, norm))
    # an image already spanning [0, 1] is returned unchanged by minmax + weight 1
    x = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    y = np.array([[1.0, 0.0], [0.0, 0.5]], np.float32)
    np.testing.assert_array_equal(registry.run("fusion.weighted_average", x, {"weight": 1.0, "normalise": "minmax"}, moving=y).image, x)
    out = registry.run("fusion.weighted_average", x, {"weight": 0.25, "normalise": "minmax"}, moving=y).image
    np.testing.assert_allclose(out, [[0.75, 0.0625], [0.125, 0.625]], atol=1e-7)


def test_max_min_checkerboard_hand_values():
    x = np.array([[0.0, 0.2], [0.9, 1.0]], np.float32)
    y = np.array([[1.0, 0.0], [0.3, 0.6]], np.float32)
    kw = {"normalise": "minmax"}
    np.testing.assert_allclose(registry.run("fusion.maximum", x, kw, moving=y).image, [[1.0, 0.2], [0.9, 1.0]])
    np.testing.assert_allclose(registry.run("fusion.minimum", x, kw, moving=y).image, [[0.0, 0.0], [0.3, 0.6]])
    big_a = np.zeros((8, 8), np.float32)
    big_a[0, 0] = 1  # so minmax keeps zeros at 0
    big_b = np.ones((8, 8), np.float32)
    big_b[0, 0] = 0
    cb = registry.run("fusion.checkerboard", big_a, {"tile": 4, **kw}, moving=big_b).image
    assert cb[1, 1] == 0 and cb[1, 5] == 1 and cb[5, 1] == 1 and cb[5, 5] == 0  # A top-left, alternating
    assert cb[0, 0] == 1  # top-left square is A


def test_pca_weights():
    t1, _, _ = _pair()
    same = registry.run("fusion.pca", t1, {}, moving=t1.copy())
    assert same.metrics["weight_a"] == pytest.approx(0.5, abs=1e-6)
    flat = t1.copy() * 0 + 5.0
    res = registry.run("fusion.pca", t1, {}, moving=flat)  # B carries no variance → all weight on A
    assert res.metrics["weight_a"] == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(res.image, F.normalise(t1), atol=1e-6)


def test_laplacian_pyramid_exact_reconstruction_and_self_fusion():
    t1, _, _ = _pair()
    x = F.normalise(t1)
    pyr = F.laplacian_pyramid_levels(x, 4)
    assert len(pyr) == 5 and pyr[-1].shape == (16, 16)
    np.testing.assert_allclose(F.collapse(pyr), x, atol=1e-5)
    for rule in F.RULES:
        out = registry.run("fusion.laplacian_pyramid", t1, {"rule": rule}, moving=t1.copy()).image
        np.testing.assert_allclose(out, x, atol=1e-5)
        out = registry.run("fusion.wavelet", t1, {"rule": rule}, moving=t1.copy()).image
        np.testing.assert_allclose(out, x, atol=1e-5)


def test_multiscale_max_abs_preserves_edges_better_than_averaging():
    t1, pet, _ = _pair()
    a, b, _, _ = F.common_grid(t1, (0.8, 0.8), pet, (3.2, 3.2))
    an, bn = F.normalise_pair(a, b)
    avg = registry.run("fusion.weighted_average", a, {}, moving=b).image
    lap = registry.run("fusion.laplacian_pyramid", a, {"rule": "max_abs"}, moving=b).image
    wav = registry.run("fusion.wavelet", a, {"rule": "max_abs"}, moving=b).image
    q_avg, q_lap, q_wav = F.qabf(an, bn, avg), F.qabf(an, bn, lap), F.qabf(an, bn, wav)
    assert q_lap > q_avg + 0.1 and q_wav > q_avg + 0.05


def test_alpha_blend_colours():
    x = np.array([[0.0, 0.5], [1.0, 1.0]], np.float32)
    y = np.array([[0.0, 0.5], [0.05, 1.0]], np.float32)
    kw = {"normalise": "minmax", "colormap": "hot"}
    grey = registry.run("fusion.alpha_blend", x, {**kw, "alpha": 0.0}, moving=y).image
    assert grey.dtype == np.uint8 and grey.shape == (2, 2, 3)
    np.testing.assert_array_equal(grey[..., 0], np.rint(x * 255).astype(np.uint8))
    full = registry.run("fusion.alpha_blend", x, {**kw, "alpha": 1.0, "threshold": 0.1}, moving=y).image
    np.testing.assert_array_equal(full[1, 1], [255, 255, 255])  # hot(1) = white
    np.testing.assert_array_equal(full[1, 0], [255, 255, 255])  # B 0.05 < threshold: A (white) shows through
    # hot(0.5) lies halfway between red (1/3) and yellow (2/3): (1, 0.5, 0); LUT index 128 → 128/255
    g = 3 * (128 / 255) - 1
    np.testing.assert_array_equal(full[0, 1], [255, int(np.rint(g * 255)), 0])
    half = registry.run("fusion.alpha_blend", x, {**kw, "alpha": 0.5, "threshold": 0.1}, moving=y).image
    np.testing.assert_array_equal(half[0, 1], np.rint(np.array([0.75, 0.5 * 0.5 + 0.5 * g, 0.25]) * 255).astype(np.uint8))
    lut = F.colormap_lut("viridis")
    np.testing.assert_allclose(lut[0], np.array([0x44, 0x01, 0x54]) / 255, atol=1e-6)
    np.testing.assert_allclose(lut[-1], np.array([0xFD, 0xE7, 0x25]) / 255, atol=1e-6)


def test_missing_second_image_is_a_clear_error():
    with pytest.raises(ValueError, match="second image"):
        registry.run("fusion.maximum", np.zeros((8, 8), np.float32), {})


@pytest.mark.parametrize("key", F.METHODS)
def test_every_method_runs_on_different_size_inputs_after_resampling(key):
    t1, pet, _ = _pair()
    # B also has another field of view: 48×80 px at 4 mm = 192 × 320 mm vs A's 204.8 mm square
    pet2 = pet[8:56, :].repeat(1, 0)
    pet2 = np.pad(pet2, ((0, 0), (8, 8)))
    for grid in ("A", "finest", "B"):
        a, b, sp, notes = F.common_grid(t1, (0.8, 0.8), pet2, (4.0, 4.0), grid=grid)
        assert a.shape == b.shape and notes
        res = registry.run(key, a, {}, moving=b)
        assert res.image.shape[:2] == a.shape
        m = F.fusion_metrics(*F.normalise_pair(a, b), res.image)
        assert set(m) == set(F.METRIC_INFO) and all(np.isfinite(v) for v in m.values())
    # without the common grid an op stretches B onto A and says so
    res = registry.run(key, t1, {}, moving=pet)
    assert res.image.shape[:2] == t1.shape and any("stretched" in n for n in res.notes)


# ----------------------------------------------------------------------------- metrics
def test_entropy_and_mutual_information_hand_values():
    a = np.array([[0.0, 0.0], [1.0, 1.0]])
    b = np.array([[0.0, 1.0], [0.0, 1.0]])
    assert entropy(np.array([0.0, 1.0, 2.0, 3.0]), bins=4) == pytest.approx(2.0)
    assert F.mutual_information(a, b) == pytest.approx(0.0, abs=1e-12)  # independent halves
    assert F.mutual_information(a, a) == pytest.approx(1.0)
    assert F.mutual_information(a, 1 - a) == pytest.approx(1.0)  # an inverted image carries the same information
    # 4 values, one of them shared by two pixels: H = 1.5 bits
    c = np.array([[0.0, 1.0], [2.0, 2.0]])
    assert F.mutual_information(c, c, bins=3) == pytest.approx(1.5)
    # c determines a (pairs (0,0),(0,1),(1,2),(1,2)): MI = H(a) = 1
    assert F.mutual_information(a, c, bins=3) == pytest.approx(1.0)
    # b × c: pairs (0,0),(1,1),(0,2),(1,2) are 4 equiprobable cells: H(b)=1, H(c)=1.5, H(b,c)=2 → MI 0.5
    assert F.mutual_information(b, c, bins=3) == pytest.approx(0.5)


def test_mi_of_image_with_itself_equals_its_entropy():
    t1, _, _ = _pair()
    noisy = t1 + np.random.default_rng(0).normal(0, 20, t1.shape).astype(np.float32)
    for img in (t1, noisy):
        assert F.mutual_information(img, img) == pytest.approx(entropy(img), abs=1e-9)
    assert F.mutual_information(noisy, np.random.default_rng(1).random(t1.shape)) < 0.2 * entropy(noisy)


def test_ssim_matches_scikit_image_and_known_values():
    t1, pet, _ = _pair()
    a, b, _, _ = F.common_grid(t1, (0.8, 0.8), pet, (3.2, 3.2))
    an, bn = F.normalise_pair(a, b)
    assert F.ssim(an, an) == pytest.approx(1.0)
    assert F.ssim(an, 1 - an) < 0
    ref = structural_similarity(an.astype(np.float64), bn.astype(np.float64), data_range=1.0)
    assert F.ssim(an, bn) == pytest.approx(ref, abs=1e-9)


def test_qabf_known_values():
    t1, pet, _ = _pair()
    a, b, _, _ = F.common_grid(t1, (0.8, 0.8), pet, (3.2, 3.2))
    an, bn = F.normalise_pair(a, b)
    flat = np.zeros_like(an)
    assert F.qabf(an, an, an) == pytest.approx(1.0, abs=1e-6)  # fusing A with itself
    assert F.qabf(an, flat, an) == pytest.approx(1.0, abs=1e-6)  # all edges of A kept, B has none
    # F = A/2 keeps every orientation but half the strength: G = 0.5 → Q_g = Γ_g / 2 exactly
    gamma_g = 1 + math.exp(-15 * 0.5)
    assert F.qabf(an, flat, 0.5 * an) == pytest.approx(gamma_g / 2, abs=1e-5)
    assert F.qabf(an, bn, flat) < 0.01  # nothing preserved
    assert F.qabf(an, bn, np.maximum(an, bn)) > F.qabf(an, bn, 0.5 * (an + bn))


def test_fusion_metrics_of_source_itself():
    t1, pet, _ = _pair()
    a, b, _, _ = F.common_grid(t1, (0.8, 0.8), pet, (3.2, 3.2))
    an, bn = F.normalise_pair(a, b)
    m = F.fusion_metrics(an, bn, an)  # "fusion" that returns A
    assert m["ssim_a"] == pytest.approx(1.0)
    assert m["mi_a"] == pytest.approx(entropy(an), abs=1e-9) and m["entropy"] == pytest.approx(m["mi_a"], abs=1e-9)
    assert m["std"] == pytest.approx(float(np.std(an, dtype=np.float64)))
    assert m["mi_sum"] == pytest.approx(m["mi_a"] + m["mi_b"])
    rgb = np.repeat((an * 255).round().astype(np.uint8)[..., None], 3, -1)  # grey RGB scored on its luminance
    assert F.fusion_metrics(an, bn, rgb)["ssim_a"] > 0.999


# ----------------------------------------------------------------------------- resampling
@pytest.mark.parametrize(
    "shape_in, sp_in, shape_out, sp_out",
    [((128, 128), (2.0, 2.0), (512, 512), (0.5, 0.5)),  # upsampling ×4
     ((400, 400), (0.5, 0.5), (100, 100), (2.0, 2.0)),  # downsampling ×4 (anti-aliased)
     ((100, 160), (2.0, 1.25), (256, 256), (0.8, 0.8)),  # anisotropic in, another FOV out
     ]
)
def test_resampling_keeps_physical_size_and_position(shape_in, sp_in, shape_out, sp_out):
    center = (12.0, -18.0)
    src = _disk(shape_in, sp_in, center, 20.0)
    out = F.resample_to(src, sp_in, shape_out, sp_out)
    assert out.shape == shape_out
    assert _diameter_mm(out, sp_out, 50.0) == pytest.approx(20.0, abs=max(sp_out) * 0.75)
    # the mass centre (mm) of what was drawn moves by less than a tenth of a pixel
    assert _centroid_mm(out, sp_out) == pytest.approx(_centroid_mm(src, sp_in), abs=0.1 * max(sp_in + sp_out))
    assert _centroid_mm(out, sp_out) == pytest.approx(center, abs=0.5 * max(sp_in))


def test_common_grid_matches_block_downsampling_convention():
    # the low-res PET of the sample builder is a block mean: resampling it back must land on the hi-res grid
    t1, _, labels = _pair()
    hi = P.render_contrast(P.one_hot(labels), P.PET_VALUES, blur_px=3.0)
    lo = P.downsample_block(hi, 4)
    a, b, sp, notes = F.common_grid(t1, (0.8, 0.8), lo, (3.2, 3.2))
    assert sp == (0.8, 0.8) and b.shape == t1.shape and notes
    inner = (slice(8, -8), slice(8, -8))
    assert np.corrcoef(b[inner].ravel(), hi[inner].ravel())[0, 1] > 0.99
    # a sub-pixel misplacement would show as a shift of the PET mass centre
    w_b, w_hi = b[inner], hi[inner]
    rr, cc = np.mgrid[: w_b.shape[0], : w_b.shape[1]]
    assert (rr * w_b).sum() / w_b.sum() == pytest.approx((rr * w_hi).sum() / w_hi.sum(), abs=0.1)
    assert (cc * w_b).sum() / w_b.sum() == pytest.approx((cc * w_hi).sum() / w_hi.sum(), abs=0.1)


def test_common_grid_policies_and_unknown_spacing():
    a = _disk((200, 160), (1.0, 1.0), (10.0, 5.0), 20.0)
    b = _disk((64, 64), (4.0, 4.0), (10.0, 5.0), 20.0)  # 256 mm FOV, coarser
    a2, b2, sp, _ = F.common_grid(a, (1.0, 1.0), b, (4.0, 4.0), grid="A")
    assert sp == (1.0, 1.0) and a2.shape == b2.shape == (200, 160)
    np.testing.assert_array_equal(a2, a)
    assert _centroid_mm(b2, sp) == pytest.approx(_centroid_mm(b, (4.0, 4.0)), abs=0.2)
    assert _centroid_mm(b2, sp) == pytest.approx(_centroid_mm(a, sp), abs=2.0)  # 4 mm pixels drew the disk
    a3, b3, sp3, _ = F.common_grid(a, (1.0, 1.0), b, (4.0, 4.0), grid="B")
    assert sp3 == (4.0, 4.0) and a3.shape == (64, 64)
    np.testing.assert_array_equal(b3, b)
    assert _diameter_mm(a3, sp3, 50) == pytest.approx(20.0, abs=3.0)
    a4, b4, sp4, _ = F.common_grid(a, (1.0, 1.0), b, (0.5, 4.0), grid="finest")
    assert sp4 == (0.5, 1.0) and a4.shape == (400, 160)
    # unknown spacing: same field of view assumed, with a note
    a5, b5, sp5, notes = F.common_grid(a, None, b, (4.0, 4.0))
    assert b5.shape == a.shape and sp5 == (4.0, 4.0) and "same field of view" in notes[0]
    with pytest.raises(ValueError, match="grid"):
        F.common_grid(a, (1, 1), b, (4, 4), grid="C")


# ----------------------------------------------------------------------------- comparator, dataset
def test_compare_methods_scores_every_method():
    t1, pet, _ = _pair()
    a, b, _, _ = F.common_grid(t1, (0.8, 0.8), pet, (3.2, 3.2))
    rows, results = F.compare_methods(a, b)
    assert [r["method"] for r in rows] == [k.split(".")[1] for k in F.METHODS]
    assert set(results) == set(F.METHODS)
    for r in rows:
        assert "error" not in r
        assert 0 <= r["qabf"] <= 1 and -1 <= r["ssim_a"] <= 1 and r["entropy"] > 0
    by = {r["method"]: r for r in rows}
    # maximum selection is closer to the brighter T1 anatomy, minimum to the dark-background PET
    assert by["maximum"]["ssim_a"] > by["minimum"]["ssim_a"]
    rows_bad, _ = F.compare_methods(a, b, methods=("fusion.weighted_average",), params={"fusion.weighted_average": {"weight": 2.0}})
    assert "weight" in rows_bad[0]["error"]


def test_fuse_pair_entry_on_stored_images(tmp_path):
    from analysis.store import save_image

    t1, pet, _ = _pair()
    pa = save_image(Image(t1, name="t1", spacing=(0.8, 0.8), units="a.u.", modality="MR"), tmp_path / "t1")
    pb = save_image(Image(pet, name="pet", spacing=(3.2, 3.2), units="kBq/ml", modality="PT"), tmp_path / "pet")
    item = {"id": "p1", "name": "p1", "a": {"id": "a", "path": pa.name, "root": str(tmp_path)},
            "b": {"id": "b", "path": pb.name, "root": str(tmp_path)}}
    row = F.fuse_pair_entry(item, methods=("fusion.weighted_average", "fusion.laplacian_pyramid"))
    assert row["resampled"] is True
    assert set(row) == {"resampled"} | {f"{m}.{k}" for m in ("weighted_average", "laplacian_pyramid") for k in F.METRIC_INFO}
    a, b, _, _ = F.common_grid(t1, (0.8, 0.8), pet, (3.2, 3.2))
    direct = registry.run("fusion.laplacian_pyramid", a, {}, moving=b).image
    assert row["laplacian_pyramid.qabf"] == pytest.approx(F.qabf(*F.normalise_pair(a, b), direct))
