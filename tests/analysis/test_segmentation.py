"""Segmentation operations against known ground truth (synthetic disks with exact masks)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from analysis import registry
from analysis import segmentation as seg
from analysis.seg_metrics import count_objects, dice

RNG = np.random.default_rng(42)


def disk(shape=(128, 128), center=(64, 60), radius=30) -> np.ndarray:
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    return (rr - center[0]) ** 2 + (cc - center[1]) ** 2 <= radius**2


def ct_disk(noise=5.0, inside=80.0, outside=20.0, seed=0):
    """A 80 HU disk on 20 HU with Gaussian noise σ (HU): image and exact mask."""
    m = disk()
    img = np.where(m, inside, outside).astype(np.float32)
    img += np.random.default_rng(seed).normal(0, noise, m.shape).astype(np.float32)
    return img, m


# ----------------------------------------------------------------------------- thresholds
def test_otsu_recovers_disk():
    img, m = ct_disk()
    r = registry.run("segmentation.otsu", img)
    assert dice(r.mask, m) > 0.99
    assert 35 < r.metrics["threshold"] < 65  # in HU, between the two tissues


@pytest.mark.parametrize("method", ["li", "isodata", "minimum"])
def test_other_global_thresholds_recover_disk(method):
    img, m = ct_disk()
    r = registry.run(f"segmentation.{method}", img)
    assert dice(r.mask, m) > 0.99


def test_threshold_is_in_physical_units_and_polarity_flips():
    img, m = ct_disk(inside=-500.0, outside=-900.0)  # lung-like HU values
    r = registry.run("segmentation.otsu", img, {"polarity": "bright"})
    assert -900 < r.metrics["threshold"] < -500
    dark = registry.run("segmentation.otsu", img, {"polarity": "dark"})
    assert dice(dark.mask, ~m) > 0.99


def test_manual_band_in_hu():
    img, m = ct_disk()
    r = registry.run("segmentation.manual", img, {"low": 50.0, "high": 200.0, "smooth_sigma": 1.0})
    assert dice(r.mask, m) > 0.99
    none = registry.run("segmentation.manual", img, {"low": 500.0, "high": 900.0})
    assert not none.mask.any()
    with pytest.raises(ValueError, match="high"):
        registry.run("segmentation.manual", img, {"low": 100.0, "high": 50.0})


def test_minimum_threshold_failure_is_a_clean_value_error():
    flat = np.tile(np.arange(64, dtype=np.float32), (64, 1))  # a ramp: flat histogram, no two peaks
    with pytest.raises(ValueError, match="Minimum threshold cannot be found"):
        registry.run("segmentation.minimum", flat)


def test_multi_otsu_three_classes():
    rr, cc = np.mgrid[:120, :120]
    img = np.full((120, 120), 0.0, np.float32)
    img[:, 40:80] = 100.0
    img[:, 80:] = 200.0
    img += np.random.default_rng(0).normal(0, 4, img.shape).astype(np.float32)
    r = registry.run("segmentation.multi_otsu", img, {"classes": 3})
    truth = np.zeros((120, 120), int)
    truth[:, 40:80] = 1
    truth[:, 80:] = 2
    assert (r.labels == truth).mean() > 0.999
    assert 0 < r.metrics["threshold_1"] < 100 < r.metrics["threshold_2"] < 200


def test_local_threshold_handles_a_ramp_that_defeats_otsu():
    rr, cc = np.mgrid[:128, :128]
    m = disk(radius=12, center=(64, 100)) | disk(radius=12, center=(64, 28))
    img = (cc * 3.0 + np.where(m, 60.0, 0.0)).astype(np.float32)  # strong ramp + objects
    glob = registry.run("segmentation.otsu", img)
    loc = registry.run("segmentation.local", img, {"block_size": 61, "offset": -20.0})
    assert dice(loc.mask, m) > 0.9 > dice(glob.mask, m)
    with pytest.raises(ValueError, match="odd"):
        registry.run("segmentation.local", img, {"block_size": 60})


def test_hysteresis_keeps_weak_pixels_connected_to_strong():
    img = np.zeros((40, 40), np.float32)
    img[10:20, 10:20] = 50.0  # weak object touching a strong core
    img[14:16, 14:16] = 100.0
    img[30:35, 30:35] = 50.0  # weak object alone
    r = registry.run("segmentation.hysteresis", img, {"low": 40.0, "high": 80.0})
    assert r.mask[10:20, 10:20].all() and not r.mask[30:35, 30:35].any()


# ----------------------------------------------------------------------------- edges
def test_canny_finds_the_disk_edge():
    img, m = ct_disk()
    r = registry.run("segmentation.canny", img, {"sigma": 2.0, "low": 0.1, "high": 0.2})
    edge = m ^ ndi.binary_erosion(m)
    dist_to_edge = ndi.distance_transform_edt(~edge)
    assert r.mask.sum() > 0.8 * edge.sum()
    assert dist_to_edge[r.mask].max() <= 1.5  # every detected edge pixel lies on the true boundary
    covered = ndi.distance_transform_edt(~r.mask)[edge] <= 1.5
    assert covered.mean() > 0.98  # and the whole boundary is found


@pytest.mark.parametrize("name", ["sobel", "scharr", "prewitt", "roberts"])
def test_gradient_magnitude_peaks_on_the_boundary(name):
    img, m = ct_disk(noise=0.0)
    r = registry.run(f"segmentation.{name}", img, units="HU")
    edge = (m ^ ndi.binary_erosion(m)) | (ndi.binary_dilation(m) ^ m)
    assert r.image[edge].mean() > 20 * (r.image[~ndi.binary_dilation(edge, iterations=2)].mean() + 1e-6)
    assert r.units == "HU/px"


@pytest.mark.parametrize("key", ["segmentation.log", "segmentation.dog"])
def test_log_dog_zero_crossings_follow_the_boundary(key):
    img, m = ct_disk(noise=0.0)
    r = registry.run(key, img, {"sigma": 2.0})
    edge = m ^ ndi.binary_erosion(m)
    d = ndi.distance_transform_edt(~edge)
    assert r.mask.sum() > 0.8 * edge.sum()
    assert np.median(d[r.mask]) <= 1.0


# ----------------------------------------------------------------------------- regions
def two_touching_disks():
    rr, cc = np.mgrid[:100, :130]
    a = (rr - 50) ** 2 + (cc - 42) ** 2 <= 22**2
    b = (rr - 50) ** 2 + (cc - 86) ** 2 <= 24**2
    return np.where(a | b, 100.0, 0.0).astype(np.float32), a, b


def test_watershed_splits_two_touching_disks():
    img, a, b = two_touching_disks()
    assert count_objects(a | b) == 1  # they touch: one connected component
    r = registry.run("segmentation.watershed", img, {"min_distance": 10.0, "smooth_sigma": 0.0}, spacing=(1.0, 1.0))
    assert r.metrics["regions"] == 2
    la = np.bincount(r.labels[a]).argmax()
    lb = np.bincount(r.labels[b]).argmax()
    assert la != lb and la > 0 and lb > 0
    assert (r.labels[a] == la).mean() > 0.95 and (r.labels[b] == lb).mean() > 0.95


def test_watershed_min_distance_is_in_mm():
    img, a, b = two_touching_disks()
    # centres are 44 px apart: with 0.5 mm pixels that is 22 mm; a 30 mm minimum distance merges them
    merged = registry.run("segmentation.watershed", img, {"min_distance": 30.0, "smooth_sigma": 0.0}, spacing=(0.5, 0.5))
    split = registry.run("segmentation.watershed", img, {"min_distance": 5.0, "smooth_sigma": 0.0}, spacing=(0.5, 0.5))
    assert merged.metrics["regions"] == 1 and split.metrics["regions"] == 2


def test_watershed_gradient_markers_partition_the_image():
    img, a, b = two_touching_disks()
    r = registry.run("segmentation.watershed", img, {"markers": "gradient"})
    assert (r.labels > 0).all() and r.metrics["regions"] >= 2


def test_region_growing_stops_at_the_disk_edge():
    img, m = ct_disk()
    r = registry.run("segmentation.region_growing", img, {"row": 64, "col": 60, "tolerance": 25.0, "smooth_sigma": 1.0})
    assert dice(r.mask, m) > 0.98
    assert not r.mask[~ndi.binary_dilation(m, iterations=2)].any()
    assert r.extras["seed"] == (64, 60)
    with pytest.raises(ValueError, match="row"):
        registry.run("segmentation.region_growing", img, {"row": 500, "col": 10})


def test_region_growing_seed_outside_grows_background():
    img, m = ct_disk()
    r = registry.run("segmentation.region_growing", img, {"row": 5, "col": 5, "tolerance": 25.0})
    assert dice(r.mask, ~m) > 0.98


def test_superpixels_cover_the_image():
    img, m = ct_disk()
    s = registry.run("segmentation.slic", img, {"n_segments": 50}, spacing=(1.0, 1.0))
    f = registry.run("segmentation.felzenszwalb", img)
    for r in (s, f):
        assert (r.labels > 0).all() and r.metrics["regions"] >= 2
    # SLIC boundaries respect the disk: most superpixels are mostly inside or outside it
    purity = [max(m[s.labels == k].mean(), 1 - m[s.labels == k].mean()) for k in np.unique(s.labels)]
    assert np.median(purity) > 0.95


@pytest.mark.parametrize("key,params", [
    ("segmentation.chan_vese", {"max_num_iter": 100}),
    ("segmentation.morph_chan_vese", {"num_iter": 40}),
    ("segmentation.morph_gac", {"row": 64, "col": 60, "radius": 5.0, "balloon": 1.0, "num_iter": 150}),
    ("segmentation.random_walker", {"row": 64, "col": 60}),
])
def test_slow_region_methods_recover_disk(key, params):
    img, m = ct_disk()
    assert registry.get(key).slow
    r = registry.run(key, img, params, spacing=(1.0, 1.0))
    assert dice(r.mask, m) > 0.9


def test_unit_range_is_explicit_and_clipped():
    a = np.linspace(-1000, 3000, 1001).astype(np.float32)
    u = seg.unit_range(a)
    assert u.min() == 0.0 and u.max() == 1.0
    assert np.all(np.diff(u) >= 0)


# ----------------------------------------------------------------------------- post-processing
def test_fill_holes_and_keep_largest():
    m = disk()
    holed = m.copy()
    holed[60:66, 58:62] = False
    speck = np.zeros_like(m)
    speck[5:8, 5:8] = True
    r = registry.run("segmentation.fill_holes", (holed | speck).view(np.uint8))
    assert (r.mask == (m | speck)).all()
    r2 = registry.run("segmentation.keep_largest", r.mask)
    assert (r2.mask == m).all()


def test_remove_small_uses_mm2():
    m = np.zeros((60, 60), bool)
    m[5:9, 5:9] = True  # 16 px
    m[20:40, 20:40] = True  # 400 px
    # 0.5 mm pixels: 4 mm² and 100 mm²
    r = registry.run("segmentation.remove_small", m, {"min_area": 5.0}, spacing=(0.5, 0.5))
    assert not r.mask[5:9, 5:9].any() and r.mask[20:40, 20:40].all()
    kept = registry.run("segmentation.remove_small", m, {"min_area": 3.0}, spacing=(0.5, 0.5))
    assert kept.mask[5:9, 5:9].all()
    # without spacing the same number is px²
    px = registry.run("segmentation.remove_small", m, {"min_area": 5.0})
    assert px.mask[5:9, 5:9].all() and any("spacing unknown" in n for n in px.notes)


def test_opening_radius_in_mm_with_anisotropic_pixels():
    m = np.zeros((80, 80), bool)
    m[10:70, 10:70] = True
    m[38:41, 70:78] = True  # a 3-row-thick spur
    # rows 0.5 mm, cols 1 mm: a 1.0 mm radius spans 2 rows → removes a 3-row spur (1.5 mm thick)
    r = registry.run("segmentation.opening", m, {"radius": 1.0}, spacing=(0.5, 1.0))
    assert not r.mask[38:41, 72:78].any() and r.mask[12:68, 12:68].all()
    fp = seg.ellipse_footprint(1.0, (0.5, 1.0))
    assert fp.shape == (5, 3)


def test_closing_bridges_gap():
    m = np.zeros((40, 60), bool)
    m[10:30, 5:28] = True
    m[10:30, 30:55] = True  # 2 px gap
    r = registry.run("segmentation.closing", m, {"radius": 2.0}, spacing=(1.0, 1.0))
    assert count_objects(r.mask) == 1 and count_objects(m) == 2


def test_post_processing_keeps_labels():
    lab = np.zeros((50, 50), np.int32)
    lab[5:10, 5:10] = 1  # 25 px
    lab[20:40, 20:40] = 2  # 400 px
    lab[20:40, 40:45] = 3  # touches label 2, 100 px
    r = registry.run("segmentation.remove_small", lab, {"min_area": 50.0}, spacing=(1.0, 1.0))
    assert set(np.unique(r.labels)) == {0, 2, 3}
    big = registry.run("segmentation.keep_largest", lab)
    assert set(np.unique(big.labels)) == {0, 2}


def test_chain_threshold_then_post_processing():
    img, m = ct_disk(noise=15.0)
    steps = [("segmentation.otsu", {}), ("segmentation.opening", {"radius": 1.0}),
             ("segmentation.keep_largest", {}), ("segmentation.fill_holes", {})]
    r = registry.run_chain(steps, img, spacing=(1.0, 1.0))
    single = registry.run("segmentation.otsu", img)
    assert dice(r.mask, m) > dice(single.mask, m) and dice(r.mask, m) > 0.99


def test_presets_are_valid_chains():
    for name, preset in seg.PRESETS.items():
        for key, params in preset["steps"]:
            registry.validate(key, params)
        assert preset["description"]


def test_post_processing_ops_are_marked_as_mask_inputs():
    keys = {o.key for o in registry.operations("segmentation", inputs="mask")}
    assert keys == set(seg.POST_KEYS)
