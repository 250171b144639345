"""Behaviour of the seeded phantom generators (exact masks, labels, transforms)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from analysis import phantoms as ph

T = ph.TISSUE


def _slice(seed: int = 3, z: float = 0.1, lesion: bool = True, noise: float = 5.0, spacing=(0.8, 0.8)):
    p = ph.subject_params(seed)
    les = None
    if lesion:
        base = ph.head_slice(p, z, spacing=spacing, noise_sigma=0.0)
        les = ph.sample_lesion(base.labels, spacing, np.random.default_rng(seed))
    return ph.head_slice(p, z, spacing=spacing, lesion=les, noise_sigma=noise, seed=11), les


# ----------------------------------------------------------------------------- head phantom
def test_subject_params_are_seeded_and_distinct():
    assert ph.subject_params(5) == ph.subject_params(5)
    assert ph.subject_params(5) != ph.subject_params(6)


def test_head_slice_deterministic_and_seed_dependent():
    a, _ = _slice(seed=4)
    b, _ = _slice(seed=4)
    c, _ = _slice(seed=5)
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)


def test_head_slice_tissue_values_in_hu():
    h, _ = _slice(noise=0.0)
    clean = h.clean_hu
    assert set(np.unique(h.labels)) <= set(T.values())
    assert np.all(clean[h.labels == T["air"]] == -1000.0)
    skull = clean[h.labels == T["skull"]]
    assert skull.size > 1000 and 700 <= skull.min() and skull.max() <= 1500
    for name, lo, hi in (("gm", 25, 45), ("wm", 22, 35), ("csf", 0, 15)):
        v = clean[h.labels == T[name]]
        assert v.size > 50, name
        assert lo <= np.median(v) <= hi, (name, np.median(v))
    assert np.median(clean[h.labels == T["gm"]]) > np.median(clean[h.labels == T["wm"]]) + 5


def test_lesion_mask_is_exactly_the_lesion_label_and_inside_brain():
    h, les = _slice()
    assert h.lesion_mask.any()
    np.testing.assert_array_equal(h.lesion_mask, h.labels == T["lesion"])
    assert np.all(h.brain_mask[h.lesion_mask])
    # the clean lesion value is the spec's HU (± texture)
    assert abs(float(np.mean(h.clean_hu[h.lesion_mask])) - les.hu) < 2.0
    # mask = lesion_mask() of the spec restricted to intracranial tissue
    np.testing.assert_array_equal(h.lesion_mask, ph.lesion_mask(h.labels.shape, h.spacing, les, h.info["z"]))


def test_sampled_lesion_in_parenchyma_with_diameter_in_range():
    for seed in range(6):
        p = ph.subject_params(100 + seed)
        base = ph.head_slice(p, 0.2, spacing=(0.85, 0.85), noise_sigma=0.0)
        les = ph.sample_lesion(base.labels, (0.85, 0.85), np.random.default_rng(seed))
        m = ph.lesion_mask(base.labels.shape, (0.85, 0.85), les)
        parench = np.isin(base.labels, [T["gm"], T["wm"]])
        assert np.all(parench[m]), seed
        d = ph.equivalent_diameter_mm(m, (0.85, 0.85))
        assert 6.0 <= d <= 25.0, d
        assert 60.0 <= les.hu <= 90.0


def test_lesion_mask_of_a_disc_has_disc_area():
    spec = ph.LesionSpec(center_mm=(1.0, -2.0), radius_mm=10.0)
    m = ph.lesion_mask((128, 128), (0.5, 0.5), spec)
    area = m.sum() * 0.25
    assert abs(area - math.pi * 100.0) / (math.pi * 100.0) < 0.02
    assert abs(ph.equivalent_diameter_mm(m, (0.5, 0.5)) - 20.0) < 0.2
    # centre pixel (row/col of (1, -2) mm) is inside
    assert m[int(round(63.5 + 2.0)), int(round(63.5 - 4.0))]


def test_3d_lesion_shrinks_away_from_its_centre():
    spec = ph.LesionSpec(center_mm=(0.0, 0.0), radius_mm=10.0, z_center=0.2, z_radius=0.1)
    areas = [ph.lesion_mask((64, 64), (1.0, 1.0), spec, z).sum() for z in (0.2, 0.25, 0.29, 0.31)]
    assert areas[0] > areas[1] > areas[2] > 0 and areas[3] == 0


def test_noise_sigma_is_respected():
    h, _ = _slice(noise=7.0)
    resid = h.hu.astype(np.float64) - ndi.gaussian_filter(h.clean_hu.astype(np.float64), 0.6)
    assert abs(resid.std() - 7.0) < 0.2


def test_hu_offset_shifts_tissue_not_air():
    p = ph.subject_params(9)
    a = ph.head_slice(p, 0.1, noise_sigma=0.0)
    b = ph.head_slice(p, 0.1, noise_sigma=0.0, hu_offset=5.0)
    d = b.clean_hu - a.clean_hu
    assert np.allclose(d[a.labels == T["air"]], 0.0)
    assert np.allclose(d[a.labels == T["wm"]], 5.0)


def test_bad_level_raises():
    with pytest.raises(ValueError, match="z"):
        ph.head_slice(ph.subject_params(1), 2.0)


# ----------------------------------------------------------------------------- rendering
def test_render_contrast_of_pure_labels_is_exact():
    labels = np.array([[0, 3, 4], [5, 6, 2]], np.uint8)
    t2 = ph.render_contrast(ph.one_hot(labels), ph.T2_VALUES)
    expect = np.vectorize(ph.T2_VALUES.get)(labels).astype(np.float32)
    np.testing.assert_array_equal(t2, expect)
    # T1/T2 contrasts are inverted for CSF vs WM
    assert ph.T1_VALUES[T["wm"]] > ph.T1_VALUES[T["csf"]]
    assert ph.T2_VALUES[T["wm"]] < ph.T2_VALUES[T["csf"]]


def test_block_transform_matches_downsample_block():
    rr, cc = np.meshgrid(np.arange(32.0), np.arange(24.0), indexing="ij")
    low = ph.downsample_block(rr + 100 * cc, 4)  # linear ramp: block mean = value at block centre
    D = ph.block_transform(4)
    for p in [(5.5, 9.5), (13.5, 1.5), (29.5, 21.5)]:
        q = D @ np.array([p[0], p[1], 1.0])
        assert np.allclose(q[:2], np.round(q[:2]))
        assert low[int(q[0]), int(q[1])] == pytest.approx(p[0] + 100 * p[1])
    with pytest.raises(ValueError):
        ph.downsample_block(np.zeros((10, 8)), 4)


# ----------------------------------------------------------------------------- transforms
def test_rigid_matrix_maps_centre_to_centre_plus_shift():
    T = ph.rigid_matrix(17.0, (4.0, -3.0), (50.0, 60.0))
    assert np.allclose(T @ [50, 60, 1], [54, 57, 1])
    L = T[:2, :2]
    assert np.allclose(L @ L.T, np.eye(2)) and np.linalg.det(L) == pytest.approx(1.0)
    S = ph.similarity_matrix(17.0, 1.2, (0, 0), (0, 0))
    assert np.linalg.det(S[:2, :2]) == pytest.approx(1.44)


def test_flip_matrix_is_an_involution_with_negative_determinant():
    F = ph.flip_matrix((10, 7), axis=1)
    assert np.allclose(F @ F, np.eye(3))
    assert np.linalg.det(F) == pytest.approx(-1.0)
    a = np.arange(70.0).reshape(10, 7)
    np.testing.assert_array_equal(ph.warp_affine(a, F), a[:, ::-1])
    np.testing.assert_array_equal(ph.warp_affine(a, ph.flip_matrix((10, 7), axis=0)), a[::-1, :])


def test_warp_affine_convention_fixed_p_equals_moving_Tp():
    a = np.random.default_rng(0).random((21, 21))
    # 90 degrees about the centre: T p = c + R (p - c), R = [[0,-1],[1,0]]  →  fixed[r, c] = moving[N-1-c, r]
    T = ph.rigid_matrix(90.0, (0.0, 0.0), (10.0, 10.0))
    np.testing.assert_allclose(ph.warp_affine(a, T), np.rot90(a, -1), atol=1e-9)
    # pure shift: fixed(p) = moving(p + s)
    S = ph.rigid_matrix(0.0, (3.0, -2.0), (0.0, 0.0))
    f = ph.warp_affine(a, S)
    np.testing.assert_allclose(f[0:18, 2:21], a[3:21, 0:19])
    # agrees with scipy's affine_transform used as documented
    R = ph.similarity_matrix(13.0, 0.9, (1.5, -2.5), (10.0, 10.0))
    np.testing.assert_allclose(ph.warp_affine(a, R), ndi.affine_transform(a, R[:2, :2], offset=R[:2, 2], order=1))


def test_smooth_displacement_and_its_warp():
    d = ph.smooth_displacement((64, 48), max_px=6.0, sigma_px=10.0, seed=1)
    assert d.shape == (2, 64, 48) and d.dtype == np.float32
    assert np.sqrt((d.astype(np.float64) ** 2).sum(0)).max() == pytest.approx(6.0, rel=1e-5)
    assert np.abs(d[:, 0, :]).max() < 1.0 and np.abs(d[:, :, 0]).max() < 1.0  # tapers at the border
    np.testing.assert_array_equal(d, ph.smooth_displacement((64, 48), max_px=6.0, sigma_px=10.0, seed=1))
    a = np.random.default_rng(2).random((64, 48))
    const = np.zeros((2, 64, 48), np.float32)
    const[0] = 2.0
    const[1] = -1.0
    np.testing.assert_allclose(ph.warp_displacement(a, const)[0:62, 1:48], a[2:64, 0:47])


# ----------------------------------------------------------------------------- degradations
def test_bias_field_amplitude():
    f = ph.bias_field((80, 90), 0.3, seed=4)
    assert np.abs(f - 1).max() == pytest.approx(0.3)
    assert f.min() >= 0.7 - 1e-12 and f.max() <= 1.3 + 1e-12
    assert np.abs(np.diff(f, axis=0)).max() < 0.05  # smooth


def test_gaussian_and_rician_noise_statistics():
    x = np.full((200, 200), 500.0)
    g = ph.add_gaussian_noise(x, 20.0, seed=1)
    assert abs((g - x).std() - 20.0) < 0.5
    zero = np.zeros((200, 200))
    r = ph.add_rician_noise(zero, 20.0, seed=1)
    assert abs(r.mean() - 20.0 * math.sqrt(math.pi / 2)) < 0.5  # Rayleigh in the background
    rh = ph.add_rician_noise(x, 20.0, seed=2)
    assert abs(rh.std() - 20.0) < 0.6 and abs(rh.mean() - 500.0) < 1.5


def test_chest_radiograph_lungs_transmit_more_than_spine():
    cr = ph.chest_radiograph((320, 288), seed=0, noise_sigma=0.0)
    lung = cr[140, 288 // 2 + 60]
    spine = cr[140, 288 // 2]
    assert lung > 1.5 * spine
    assert cr.min() >= 0 and cr.max() <= 4095
