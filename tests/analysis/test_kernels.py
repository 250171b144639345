"""The compiled sharpness / noise kernel against ground truth and against the OpenCV path."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis import kernels
from analysis.catalog import _spatial_stats, image_statistics
from analysis.kernels import immerkaer_sigma, laplacian_immerkaer_sums

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16])
@pytest.mark.parametrize("shape", [(3, 3), (3, 8), (9, 4), (37, 513), (256, 256)])
def test_compiled_sums_equal_opencv_on_full_range_data(dtype, shape):
    info = np.iinfo(dtype)
    a = np.random.default_rng(sum(shape)).integers(info.min, info.max, shape, endpoint=True, dtype=dtype)
    got = laplacian_immerkaer_sums(a)
    ref = laplacian_immerkaer_sums(a, compiled=False)
    assert got[0] == ref[0] and got[2] == ref[2]
    assert got[1] == pytest.approx(ref[1], rel=1e-12)


@pytest.fixture(autouse=True)
def compiled():
    kernels.enable_compiled()  # as in a worker process
    yield
    kernels.enable_compiled(False)


def test_compiled_kernel_is_used_in_ci():
    # Numba is a declared dependency: without it the catalog silently falls back to the slower
    # OpenCV path, which is correct but not what the ingest benchmark measures
    assert kernels.have_numba() and kernels._compiled() is not None


def test_the_web_server_process_does_not_load_numba(tmp_path):
    # ≈ 230 MB and 0.4 s: only batch processes turn the compiled kernels on; elsewhere the
    # OpenCV path gives the same statistics
    code = (
        "import sys, numpy as np\n"
        "from analysis import catalog as cat\n"
        "a = (np.arange(64 * 64).reshape(64, 64) % 97).astype(np.int16)\n"
        "s = cat.image_statistics(a, slope=2.0, intercept=-5.0, modality='CT')\n"
        "print(repr((s['sharpness'], s['noise_sigma'])), 'numba' in sys.modules)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MEDLENS_HOME": str(tmp_path)}
    env.pop("MEDLENS_COMPILED_KERNELS", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out[-1] == "False"
    a = (np.arange(64 * 64).reshape(64, 64) % 97).astype(np.int16)
    s = image_statistics(a, slope=2.0, intercept=-5.0, modality="CT")  # compiled, in this process
    assert eval(" ".join(out[:-1])) == pytest.approx((s["sharpness"], s["noise_sigma"]), rel=1e-12)


def test_byte_order_views_and_read_only_buffers_give_the_same_sums():
    a = np.random.default_rng(3).integers(-2000, 3000, (64, 80)).astype(np.int16)
    ref = laplacian_immerkaer_sums(a, compiled=False)
    big = a.astype(">i2")
    ro = np.frombuffer(a.tobytes(), dtype=np.int16).reshape(a.shape)  # as the catalog reads files
    strided = np.zeros((64, 160), np.int16)
    strided[:, ::2] = a
    for b in (big, ro, strided[:, ::2]):
        assert laplacian_immerkaer_sums(b) == pytest.approx(ref, rel=1e-12)


def test_checkerboard_laplacian_variance_is_64_a_squared():
    # every pixel, borders included (reflect-101), has Laplacian −8·c for c = ±A
    A = 100
    i, j = np.mgrid[:64, :96]
    board = np.where((i + j) % 2 == 0, A, -A).astype(np.int16)
    out = _spatial_stats(board, scale=0.5)
    assert out["sharpness"] == pytest.approx(64 * A * A * 0.25, rel=1e-12)


def test_immerkaer_sigma_recovers_gaussian_noise():
    rng = np.random.default_rng(7)
    sigma = 20.0
    flat = np.round(1000 + rng.normal(0, sigma, (512, 512))).astype(np.int16)
    s1, s2, l1 = laplacian_immerkaer_sums(flat)
    est = immerkaer_sigma(l1, *flat.shape)
    assert est == pytest.approx(sigma, rel=0.03)
    # and a smooth ramp (no noise) has none: the mask annihilates planes
    ramp = (np.add.outer(np.arange(100), 2 * np.arange(120)) + 5).astype(np.uint16)
    assert laplacian_immerkaer_sums(ramp)[2] == 0.0
    assert math.isclose(_spatial_stats(ramp, 1.0)["noise_sigma"], 0.0, abs_tol=1e-12)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.uint16])
@pytest.mark.parametrize("shape,f", [((512, 512), 8), ((512, 384), 8), ((256, 256), 4), ((6, 9), 3)])
def test_block_mean_equals_area_resampling_for_whole_factors(dtype, shape, f):
    import cv2

    info = np.iinfo(dtype)
    a = np.random.default_rng(f).integers(info.min, info.max, shape, endpoint=True, dtype=dtype)
    got = kernels.block_mean(a, f)
    ref = cv2.resize(a.astype(np.float32), (shape[1] // f, shape[0] // f), interpolation=cv2.INTER_AREA)
    assert got.dtype == np.float32 and got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6 * max(abs(info.min), info.max))
    # a block of known values: its mean exactly
    b = np.zeros(shape, dtype)
    b[:f, :f] = np.arange(f * f).reshape(f, f).astype(dtype) % max(2, min(info.max, 100))
    assert kernels.block_mean(b, f)[0, 0] == pytest.approx(float(b[:f, :f].astype(np.float64).mean()), rel=1e-6)


def test_block_mean_declines_what_it_cannot_do_exactly():
    a = np.zeros((100, 100), np.int16)
    assert kernels.block_mean(a, 3) is None  # 100 is not a multiple of 3
    assert kernels.block_mean(a.astype(np.float32), 4) is None  # float data: OpenCV's resize
    assert kernels.block_mean(np.zeros((4, 4, 4), np.int16), 2) is None


def test_a_failing_compiled_kernel_falls_back_to_the_same_numbers(monkeypatch):
    a = np.random.default_rng(5).integers(-1000, 3000, (40, 48)).astype(np.int16)
    ref = laplacian_immerkaer_sums(a, compiled=False)

    def broken(*_args):
        raise RuntimeError("LLVM ERROR")

    monkeypatch.setattr(kernels, "_COMPILED", {"lap_immerkaer": broken, "block_mean": broken})
    assert laplacian_immerkaer_sums(a) == ref  # the file does not fail: OpenCV gives the sums
    assert kernels._compiled() is None  # and the compiled kernels are off for this process
    assert kernels.block_mean(a[:40, :40], 4) is None  # → the caller's cv2.resize
