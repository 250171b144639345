"""Image-quality metrics against values known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import metrics as mt
from analysis.registry import Result


def test_psnr_closed_form_and_identity():
    ref = np.zeros((50, 50), np.float32)
    ref[0, 0] = 1000.0  # data range 1000
    test = ref + 10.0  # MSE 100
    assert mt.psnr(ref, test) == pytest.approx(10 * math.log10(1000 ** 2 / 100))
    assert mt.psnr(ref, ref) == math.inf
    assert mt.psnr(ref, test, data_range=100.0) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="shape"):
        mt.psnr(ref, ref[:10])


def test_ssim_identity_and_degradation():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 100, (64, 64))
    assert mt.ssim(a, a) == pytest.approx(1.0)
    assert mt.ssim(a, a + rng.normal(0, 100, a.shape)) < 0.8


def test_cnr_known_boxes():
    a = np.zeros((40, 40))
    a[20:30, 20:30] = 50.0
    rng = np.random.default_rng(1)
    bg_noise = rng.normal(0, 1, (10, 10))
    bg_noise = (bg_noise - bg_noise.mean()) / bg_noise.std() * 5.0
    a[0:10, 0:10] = bg_noise
    assert mt.cnr(a, (20, 20, 30, 30), (0, 0, 10, 10)) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="roi"):
        mt.cnr(a, (20, 20, 20, 30), (0, 0, 10, 10))


def test_noise_sigma_recovers_known_sigma():
    rng = np.random.default_rng(2)
    rr, cc = np.mgrid[:256, :256]
    smooth = 100 * np.sin(rr / 40.0) + 2 * cc
    assert mt.noise_sigma(smooth + rng.normal(0, 12.0, smooth.shape)) == pytest.approx(12.0, rel=0.1)


def test_entropy_uniform_and_constant():
    assert mt.entropy(np.arange(256.0), bins=256) == pytest.approx(8.0)
    assert mt.entropy(np.full((5, 5), 3.0)) == 0.0


def test_quality_metrics_with_clean_and_boxes():
    rng = np.random.default_rng(3)
    clean = np.zeros((64, 64), np.float32)
    clean[20:40, 20:40] = 100
    noisy = clean + rng.normal(0, 10, clean.shape).astype(np.float32)
    roi, bg = (22, 22, 38, 38), (2, 2, 14, 14)
    m = mt.quality_metrics(noisy, clean, clean=clean, roi=roi, background=bg)
    assert m["psnr_clean"] == math.inf and m["ssim_clean"] == pytest.approx(1.0)
    assert m["psnr_input"] == pytest.approx(mt.psnr(noisy, clean))
    assert m["cnr"] == math.inf  # the clean background is flat
    m2 = mt.quality_metrics(noisy, noisy)
    assert "psnr_clean" not in m2 and "cnr" not in m2
    assert m2["noise_sigma"] > 5
    r, b = mt.default_boxes((100, 200))
    assert r == (40, 80, 60, 120) and b == (4, 8, 16, 32)


def test_enhancement_measure_before_after_pairs(tmp_path):
    from analysis.dicomwrite import write_dicom

    rng = np.random.default_rng(4)
    clean = np.zeros((64, 64), np.float32)
    clean[16:48, 16:48] = 200
    noisy = clean + rng.normal(0, 20, clean.shape).astype(np.float32)
    write_dicom(tmp_path / "clean.dcm", np.round(clean), modality="CT", spacing=(1.0, 1.0))
    entry = {"id": "x", "path": "noisy.dcm", "clean_path": "clean.dcm", "root": str(tmp_path)}
    out = mt.enhancement_measure(noisy, Result(image=clean.copy()), entry, None)
    assert out["psnr_clean_after"] == math.inf
    assert out["psnr_clean_before"] == pytest.approx(mt.psnr(clean, noisy))
    assert out["noise_sigma_after"] < out["noise_sigma_before"]
    no_clean = mt.enhancement_measure(noisy, Result(image=noisy), {"id": "y", "path": "n.dcm"}, None)
    assert "psnr_clean_before" not in no_clean and no_clean["psnr_input"] == math.inf
    with pytest.raises(ValueError, match="image"):
        mt.enhancement_measure(noisy, Result(mask=noisy > 0), {"id": "z"}, None)
