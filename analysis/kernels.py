"""Compiled per-pixel kernels for the catalog's ingest (Numba), each with a reference path.

Why Numba: the catalog's sharpness (variance of the 4-neighbour Laplacian) and Immerkær noise
σ of a 512² CT slice took four OpenCV passes over float32 copies (Laplacian, sum, sum of
squares, separable Immerkær filter + L1 norm: ≈ 0.29 ms, a fifth of the whole per-file ingest).
One integer pass over the stored pixels gives the same sums exactly in ≈ 0.16 ms. The 512² → 64²
thumbnail's block means likewise (0.04 vs 0.07–0.12 ms for ``cv2.resize(INTER_AREA)``).

The compiled kernels run in batch processes only — Dask / process-pool workers and the
``medlens ingest`` command (:func:`enable_compiled`); Numba compiles them once per app folder
(``cache=True``, in ``MEDLENS_HOME/cache/numba``; ≈ 0.7 s per pixel type the first time, 0.2 s
to load after). Elsewhere, or without Numba, the OpenCV path runs and the numbers are the same.

Sums are exact: the stored values are 8/16-bit integers, each Laplacian / Immerkær response
fits an int32, and per-row sums of squares fit an int64 for rows up to 10⁷ pixels.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from typing import Any, Callable

import numpy as np

__all__ = ["laplacian_immerkaer_sums", "block_mean", "immerkaer_sigma", "enable_compiled", "have_numba"]


_LOG = logging.getLogger(__name__)
_ON = os.environ.get("MEDLENS_COMPILED_KERNELS", "") == "1"
_COMPILED: dict[str, Callable[..., Any]] | None = None
_LOCK = threading.Lock()


def enable_compiled(on: bool = True) -> None:
    """Use the compiled kernels in this process. Worker processes turn them on
    (:func:`analysis.batch._worker_init`): Numba and LLVM add ≈ 230 MB to a process and 0.4 s to
    its first image, worth it where thousands of files go through, not in the web server's
    own process for a handful (the OpenCV path gives the same numbers)."""
    global _ON
    _ON = on
    if on:
        os.environ["MEDLENS_COMPILED_KERNELS"] = "1"  # also for processes this one starts
    else:
        os.environ.pop("MEDLENS_COMPILED_KERNELS", None)


def compiled_enabled() -> bool:
    return _ON


def have_numba() -> bool:
    import importlib.util

    return importlib.util.find_spec("numba") is not None


def _compiled() -> dict[str, Callable[..., Any]] | None:
    """The jitted kernels (compiled on first use, or loaded from the cache), or None."""
    global _COMPILED
    if not _ON:
        return None
    if _COMPILED is None:
        with _LOCK:
            if _COMPILED is None:
                _COMPILED = _build()
    return _COMPILED or None


def _build() -> dict[str, Callable[..., Any]]:
    if not os.environ.get("NUMBA_CACHE_DIR"):  # the cache goes under the app's own folder
        from analysis.dataset import app_home

        os.environ["NUMBA_CACHE_DIR"] = str(app_home() / "cache" / "numba")
    try:
        import numba
    except Exception:  # noqa: BLE001 - optional speed-up; the OpenCV path is the reference
        return {}
    # module-level functions only: Numba's on-disk cache misses for closures
    for cache in (True, False):  # no writable cache folder: compile in memory each process
        try:
            jit = numba.njit(cache=cache, nogil=True)
            return {"lap_immerkaer": jit(_lap_immerkaer), "block_mean": jit(_block_mean)}
        except Exception as exc:  # noqa: BLE001
            _LOG.warning("compiled kernels%s unavailable (%s)", " with a disk cache" if cache else "",
                         type(exc).__name__)
    return {}


def _call(name: str, *args: Any) -> Any:
    """Run a compiled kernel; None (→ the OpenCV path) if there is none or it fails — a
    compilation or LLVM error turns the compiled kernels off for this process, once."""
    global _COMPILED
    k = _compiled()
    if k is None:
        return None
    try:
        return k[name](*args)
    except Exception as exc:  # noqa: BLE001 - never a reason for a file to fail
        _LOG.warning("compiled kernel %s failed (%s); using the OpenCV path in this process",
                     name, type(exc).__name__)
        _COMPILED = {}
        return None


def _lap_immerkaer(a: Any) -> tuple[float, float, float]:
    m, n = a.shape
    s = 0.0
    s2 = 0.0
    sab = 0.0
    up = np.empty(n, np.int32)
    mid = np.empty(n, np.int32)
    dn = np.empty(n, np.int32)
    for j in range(n):
        up[j] = a[0, j]
        mid[j] = a[1, j]
    for i in range(1, m - 1):
        row = a[i + 1]
        for j in range(n):
            dn[j] = row[j]
        ls = 0
        ls2 = 0
        la = 0
        for j in range(1, n - 1):
            c = mid[j]
            h = mid[j - 1] + mid[j + 1]
            vv = up[j] + dn[j]
            v = vv + h - 4 * c  # 4-neighbour Laplacian
            ls += v
            ls2 += np.int64(v) * np.int64(v)
            # Immerkær's mask [1 -2 1; -2 4 -2; 1 -2 1]
            d = up[j - 1] + up[j + 1] + dn[j - 1] + dn[j + 1] - 2 * (vv + h) + 4 * c
            la += np.int64(abs(d))
        s += ls
        s2 += ls2
        sab += la
        t = up
        up = mid
        mid = dn
        dn = t
    # the Laplacian on the border pixels (reflect-101, as cv2.Laplacian), which the interior
    # loop left out; the Immerkær sum is over the interior only
    for i in range(m):
        step = 1 if i == 0 or i == m - 1 else n - 1
        for j in range(0, n, step):
            c = np.int64(a[i, j])
            iu = i - 1 if i > 0 else 1  # reflect-101: index −1 is 1, index m is m − 2
            idn = i + 1 if i < m - 1 else m - 2
            jl = j - 1 if j > 0 else 1
            jr = j + 1 if j < n - 1 else n - 2
            v = (np.int64(a[iu, j]) + np.int64(a[idn, j]) + np.int64(a[i, jl]) + np.int64(a[i, jr]) - 4 * c)
            s += v
            s2 += float(v) * float(v)
    return s, s2, sab


def _block_mean(a: Any, f: int) -> Any:
    m, n = a.shape
    om = m // f
    on = n // f
    out = np.empty((om, on), np.float32)
    acc = np.empty(n, np.int32)  # f ≤ 128: f²·65535 < 2³¹
    inv = 1.0 / (f * f)
    for bi in range(om):
        acc[:] = 0
        for r in range(bi * f, bi * f + f):
            row = a[r]
            for j in range(n):
                acc[j] += row[j]
        for bj in range(on):
            t = 0
            for k in range(bj * f, bj * f + f):
                t += acc[k]
            out[bi, bj] = t * inv
    return out


def block_mean(a: np.ndarray, f: int) -> np.ndarray | None:
    """Mean of each f×f block of an 8/16-bit integer image whose sides are multiples of f, as
    float32 — what ``cv2.resize(INTER_AREA)`` computes for an integer factor, with exact integer
    sums (4× faster here: the catalog's 512² → 64² thumbnail). None when it does not apply."""
    if a.ndim != 2 or a.dtype.kind not in "iu" or a.dtype.itemsize > 2 or f < 1 \
            or f > 128 or a.shape[0] % f or a.shape[1] % f:
        return None
    if _compiled() is None:
        return None
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return _call("block_mean", np.ascontiguousarray(a), int(f))


def laplacian_immerkaer_sums(a: np.ndarray, *, compiled: bool = True) -> tuple[float, float, float]:
    """(Σ L, Σ L², Σ |M|) of a 2-D array (both sides ≥ 3): L the 4-neighbour Laplacian over
    every pixel with reflect-101 borders (``cv2.Laplacian(ksize=1)``), M Immerkær's noise mask
    over the interior. 8/16-bit integer arrays use the compiled integer kernel (``compiled``),
    everything else OpenCV on float32."""
    if compiled and a.dtype.kind in "iu" and a.dtype.itemsize <= 2:
        if _compiled() is not None:
            if not a.dtype.isnative:  # big-endian stored data: Numba takes native byte order only
                a = a.astype(a.dtype.newbyteorder("="))
            got = _call("lap_immerkaer", np.ascontiguousarray(a))
            if got is not None:
                return float(got[0]), float(got[1]), float(got[2])
    return _opencv_sums(a)


_D2 = np.array([1, -2, 1], dtype=np.float32)


def _opencv_sums(a: np.ndarray) -> tuple[float, float, float]:
    import cv2

    f = a if a.dtype == np.float32 else a.astype(np.float32)
    lap = cv2.Laplacian(f, cv2.CV_32F, ksize=1)
    s1 = float(cv2.sumElems(lap)[0])
    s2 = float(cv2.norm(lap, cv2.NORM_L2SQR))
    conv = cv2.sepFilter2D(f, cv2.CV_32F, _D2, _D2)  # M = [1,-2,1]ᵀ[1,-2,1], separable
    l1 = float(cv2.norm(conv[1:-1, 1:-1], cv2.NORM_L1))
    return s1, s2, l1


def immerkaer_sigma(l1: float, m: int, n: int) -> float:
    """Immerkær (1996) noise σ from Σ|M| over the (m−2)(n−2) interior pixels."""
    return math.sqrt(math.pi / 2.0) * l1 / (6.0 * (m - 2) * (n - 2))
