"""Overlap, surface distances and region properties against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import seg_metrics as sm
from analysis.registry import Result


def square(shape, r0, r1, c0, c1):
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    return m


# ----------------------------------------------------------------------------- overlap
def test_dice_and_iou_hand_computed():
    a = square((10, 10), 0, 4, 0, 4)  # 16 px
    b = square((10, 10), 2, 6, 0, 4)  # 16 px, overlap rows 2-3 → 8 px
    assert sm.dice(a, b) == pytest.approx(2 * 8 / 32)
    assert sm.iou(a, b) == pytest.approx(8 / 24)
    assert sm.dice(a, a) == 1.0 and sm.iou(a, ~a) == 0.0


def test_empty_masks():
    z = np.zeros((5, 5), bool)
    assert sm.dice(z, z) == 1.0 and sm.iou(z, z) == 1.0
    assert sm.hausdorff(z, z) == 0.0
    one = z.copy()
    one[2, 2] = True
    assert sm.dice(one, z) == 0.0
    assert math.isinf(sm.hausdorff(one, z)) and math.isinf(sm.average_surface_distance(one, z))


def test_hausdorff_single_pixels_with_anisotropic_spacing():
    a = np.zeros((20, 20), bool)
    b = np.zeros((20, 20), bool)
    a[2, 3] = True
    b[5, 7] = True  # 3 rows and 4 cols away
    assert sm.hausdorff(a, b) == pytest.approx(5.0)  # px
    # rows 0.5 mm, cols 2 mm: sqrt(1.5² + 8²)
    assert sm.hausdorff(a, b, (0.5, 2.0)) == pytest.approx(math.hypot(1.5, 8.0))
    assert sm.average_surface_distance(a, b, (0.5, 2.0)) == pytest.approx(math.hypot(1.5, 8.0))


def test_hausdorff_shifted_squares_and_asd():
    a = square((30, 30), 5, 15, 5, 15)
    b = square((30, 30), 5, 15, 8, 18)  # shifted 3 columns
    # every boundary point of a is within 3 px of b's boundary and the far edges are exactly 3 apart
    assert sm.hausdorff(a, b) == pytest.approx(3.0)
    assert sm.hausdorff(a, b, (1.0, 0.5)) == pytest.approx(1.5)
    d1, d2 = sm.surface_distances(a, b)
    # hand count over a's 36 surface pixels (b's surface: rows 5/14, cols 8/17):
    #   top and bottom rows, cols 5..14: distances 3, 2, 1, then 0 × 7      → 6 + 6
    #   left column (c = 5), rows 6..13: 3 each (to b's left column)        → 24
    #   right column (c = 14), rows 6..13: min(3 to c = 17, to rows 5/14)   → 1+2+3+3+3+3+2+1 = 18
    assert d1.size == 36 and d1.sum() == pytest.approx(54.0)
    assert d2.sum() == pytest.approx(54.0)  # mirror image
    assert sm.average_surface_distance(a, b) == pytest.approx(108 / 72)
    # symmetric
    assert sm.hausdorff(b, a) == sm.hausdorff(a, b)


def test_hausdorff_matches_skimage_on_isotropic_grid():
    from skimage.metrics import hausdorff_distance

    rng = np.random.default_rng(3)
    for _ in range(5):
        a = rng.random((40, 40)) > 0.97
        b = rng.random((40, 40)) > 0.97
        # skimage measures between all object pixels; for sparse single pixels every pixel is a surface pixel
        assert sm.hausdorff(a, b) == pytest.approx(hausdorff_distance(a, b))


def test_overlap_metrics_keys_name_units_and_fp_fn_areas():
    a = square((10, 10), 0, 4, 0, 4)
    b = square((10, 10), 2, 6, 0, 4)
    m = sm.overlap_metrics(a, b, (0.5, 0.5))
    assert m["false_positive_mm2"] == pytest.approx(8 * 0.25)
    assert m["false_negative_mm2"] == pytest.approx(8 * 0.25)
    assert m["hausdorff_mm"] == pytest.approx(1.0)
    p = sm.overlap_metrics(a, b)
    assert "hausdorff_px" in p and "hausdorff_mm" not in p
    em = sm.error_map(a, b)
    assert (em == 1).sum() == 8 and (em == 2).sum() == 8 and (em == 3).sum() == 8


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        sm.dice(np.zeros((3, 3)), np.zeros((4, 4)))


# ----------------------------------------------------------------------------- regions
def test_region_table_areas_use_pixel_spacing():
    lab = np.zeros((40, 60), np.int32)
    lab[5:15, 5:25] = 1  # 10 × 20 px
    lab[20:35, 30:40] = 2  # 15 × 10 px
    inten = np.where(lab == 1, 100.0, np.where(lab == 2, -50.0, 0.0))
    t = sm.region_table(lab, inten, spacing=(0.5, 2.0))
    assert list(t["label"]) == [1, 2]
    assert t["area_mm2"].tolist() == pytest.approx([200 * 1.0, 150 * 1.0])
    assert t["equivalent_diameter_mm"].tolist() == pytest.approx([2 * math.sqrt(200 / math.pi), 2 * math.sqrt(150 / math.pi)])
    assert t["intensity_mean"].tolist() == pytest.approx([100.0, -50.0])
    assert t["centroid_row"].tolist() == pytest.approx([9.5, 27.0]) and t["centroid_col"].tolist() == pytest.approx([14.5, 34.5])
    # region 1 is 5 mm × 40 mm: very elongated in mm although 10 × 20 px
    assert t["eccentricity"].iloc[0] > 0.99
    # perimeter of a 5 × 40 mm rectangle is 90 mm (corners rounded slightly by the estimator)
    assert t["perimeter_mm"].iloc[0] == pytest.approx(90.0, rel=0.05)
    px = sm.region_table(lab, inten)
    assert "area_px2" in px.columns and px["area_px2"].tolist() == [200, 150]


def test_perimeter_of_a_disc_close_to_two_pi_r():
    rr, cc = np.mgrid[:120, :120]
    d = (rr - 60) ** 2 + (cc - 60) ** 2 <= 40**2
    assert sm.region_perimeter(d, (0.25, 0.25)) == pytest.approx(2 * math.pi * 10.0, rel=0.015)
    thin = np.zeros((10, 30), bool)
    thin[5, 5:25] = True  # 1-px line: falls back to the raw contour ≈ 2 × length
    assert sm.region_perimeter(thin) == pytest.approx(2 * 19, rel=0.1)


def test_region_table_empty_and_bool_input():
    assert sm.region_table(np.zeros((5, 5), np.int32)).empty
    t = sm.region_table(np.eye(5, dtype=bool) | np.eye(5, dtype=bool)[::-1])
    assert len(t) == 1


def test_count_objects_and_labels():
    m = square((20, 20), 0, 5, 0, 5) | square((20, 20), 10, 15, 10, 15)
    assert sm.count_objects(m) == 2
    lab = np.zeros((20, 20), int)
    lab[m] = 3
    lab[0, 0] = 7
    assert sm.count_objects(lab) == 2
    assert sm.segmentation_labels(Result(mask=m)).max() == 2


def test_dataset_measure_with_ground_truth(tmp_path):
    from PIL import Image as PILImage

    from analysis.image import Image

    truth = square((40, 40), 10, 20, 10, 20)
    inst = np.zeros((40, 40), np.uint8)
    inst[10:20, 10:20] = 1
    inst[25:30, 25:30] = 2
    PILImage.fromarray(inst).save(tmp_path / "m.png")
    pred = square((40, 40), 10, 20, 12, 22)
    entry = {"id": "e1", "path": "img.png", "mask_path": "m.png", "root": str(tmp_path)}
    image = Image(np.zeros((40, 40), np.float32), spacing=(0.5, 0.5))
    out = sm.dataset_measure(np.zeros((40, 40)), Result(mask=pred | square((40, 40), 25, 30, 25, 30)), entry, image)
    assert out["regions"] == 2 and out["true_regions"] == 2 and out["count_error_pct"] == 0
    truth_all = inst > 0
    assert out["dice"] == pytest.approx(sm.dice(pred | square((40, 40), 25, 30, 25, 30), truth_all))
    assert out["total_area_mm2"] == pytest.approx((100 + 25) * 0.25)
    no_gt = sm.dataset_measure(np.zeros((40, 40)), Result(mask=pred), {"id": "e2", "path": "x"}, image)
    assert "dice" not in no_gt and no_gt["regions"] == 1
    assert isinstance(pd.DataFrame([out]), pd.DataFrame)


def test_region_table_matches_skimage_regionprops():
    from skimage.measure import regionprops_table
    from skimage.segmentation import slic

    rng = np.random.default_rng(5)
    lab = slic(rng.random((80, 90)), n_segments=40, compactness=0.5, channel_axis=None, start_label=1)
    lab[lab % 7 == 0] = 0  # some background
    inten = rng.normal(40, 10, lab.shape)
    sp = (0.6, 1.3)
    mine = sm.region_table(lab, inten, sp)
    ref = regionprops_table(lab, inten, properties=("label", "area", "eccentricity", "solidity", "centroid",
                                                     "intensity_mean", "intensity_min", "intensity_max"), spacing=sp)
    np.testing.assert_array_equal(mine["label"], ref["label"])
    np.testing.assert_allclose(mine["area_mm2"], ref["area"])
    np.testing.assert_allclose(mine["eccentricity"], ref["eccentricity"], atol=1e-9)
    np.testing.assert_allclose(mine["solidity"], ref["solidity"])
    np.testing.assert_allclose(mine["centroid_row"], ref["centroid-0"] / sp[0])
    np.testing.assert_allclose(mine["centroid_col"], ref["centroid-1"] / sp[1])
    for k in ("intensity_mean", "intensity_min", "intensity_max"):
        np.testing.assert_allclose(mine[k], ref[k])


def test_region_table_skips_details_beyond_the_limit():
    lab = np.arange(1, 101).reshape(10, 10)
    t = sm.region_table(lab, detail_limit=50)
    assert len(t) == 100 and t["perimeter_px"].isna().all() and t["solidity"].isna().all()
    assert "100 regions" in t.attrs["note"]
    assert t["area_px2"].eq(1).all()
