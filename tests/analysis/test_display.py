"""Display windowing is the DICOM VOI linear function and never changes the data."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import display
from analysis.image import Image


def test_voi_linear_matches_dicom_definition():
    c, w = 40.0, 80.0
    x = np.array([-1000, c - 0.5 - (w - 1) / 2, c - 0.5, c - 0.5 + (w - 1) / 2, c - 0.5 + (w - 1) / 2 + 0.01, 3000], np.float32)
    v = display.voi_linear(x, c, w)
    assert v[0] == 0 and v[1] == 0
    assert v[2] == pytest.approx(0.5)
    assert v[3] == pytest.approx(1.0)
    assert v[4] == 1 and v[5] == 1


def test_window_to_uint8_and_monochrome1_inversion():
    x = np.array([[-1000.0, 40.0, 3000.0]], np.float32)
    normal = display.window_to_uint8(x, 40, 400)
    inverted = display.window_to_uint8(x, 40, 400, invert=True)
    assert normal.tolist() == [[0, 128, 255]]
    np.testing.assert_array_equal(inverted.astype(int), 255 - normal.astype(int))


def test_to_display_uses_image_window_and_does_not_touch_pixels():
    px = np.linspace(-1000, 1000, 100, dtype=np.float32).reshape(10, 10)
    img = Image(px.copy(), units="HU", window=(0.0, 200.0), invert=True)
    d = display.to_display(img)
    np.testing.assert_array_equal(img.pixels, px)  # a view, not a change
    assert d[0, 0] == 255 and d[-1, -1] == 0  # MONOCHROME1: low HU displayed bright
    lung = display.to_display(img, display.CT_PRESETS["lung"], invert=False)
    assert lung.dtype == np.uint8 and lung.min() < lung.max()


def test_presets_only_for_hu_and_auto_window_percentiles():
    ct = Image(np.zeros((4, 4), np.float32), units="HU")
    mr = Image(np.zeros((4, 4), np.float32), units="a.u.")
    assert "lung" in display.preset_names(ct) and "lung" not in display.preset_names(mr)
    a = np.arange(1001, dtype=np.float32)
    c, w = display.auto_window(a, 1, 99)
    assert c == pytest.approx(500) and w == pytest.approx(980)
    c, w = display.auto_window(a, 0, 100)
    assert (c - w / 2, c + w / 2) == pytest.approx((0, 1000))


def test_non_finite_pixels_display_without_error():
    a = np.array([[np.nan, 0.0], [np.inf, -np.inf]], np.float32)
    d = display.to_display(Image(a), (0.0, 10.0))
    assert d.dtype == np.uint8 and d.shape == (2, 2)


def test_downsample_block_mean_and_histogram():
    a = np.arange(16, dtype=np.float32).reshape(4, 4)
    d = display.downsample(a, 2)
    assert d.shape == (2, 2) and d[0, 0] == pytest.approx((0 + 1 + 4 + 5) / 4)
    counts, edges = display.histogram(np.array([0, 0, 1, np.nan]), bins=2)
    assert counts.tolist() == [2, 1]
