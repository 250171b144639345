"""Image registration: transforms, similarity metrics, automatic and deformable methods.

Conventions (shared with :mod:`analysis.phantoms` and the sample dataset)
-----------------------------------------------------------------------
* Arrays are ``(M, N)`` = (rows, cols). A **transform** is a 3×3 homogeneous matrix ``T``
  in ``(row, col, 1)`` *pixel* coordinates that maps FIXED coordinates to MOVING
  coordinates: ``fixed(p) ≈ moving(T @ p)``. Hence
  ``scipy.ndimage.affine_transform(moving, T[:2, :2], offset=T[:2, 2])`` (:func:`warp`)
  resamples the moving image onto the fixed grid.
* A **displacement field** ``d`` has shape ``(2, M, N)`` (row, col components in px) with
  ``fixed(p) ≈ moving(p + d(p))`` (:func:`warp_field`).
* Physical coordinates: pixel ``(r, c)`` sits at ``y = r·Δr``, ``x = c·Δc`` mm (spacing
  ``(Δr, Δc)``). Rotation angles and scales are reported in this *physical* frame, so an
  anisotropic pixel grid still gives true degrees; translations are reported in px and mm.
  ``ty`` is the row (vertical) component, ``tx`` the column (horizontal) one.
* Two images with different shapes/spacings are put on one grid by aligning the centres
  of their fields of view (:func:`grid_transform`, :func:`resample_to`).

Intensity domains: metrics and optimisers work on float64 copies of the physical values;
methods that need a bounded range (ORB features, optical flow) rescale explicitly between
robust percentiles and say so in their ``domain``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from dataclasses import field as dfield
from typing import Any, Sequence

import numpy as np
from scipy import ndimage as ndi

from analysis.registry import Param, Result, register

__all__ = [
    "Spacing",
    "METRICS",
    "MANUAL_PARAMS",
    "INTENSITY_METRICS",
    "FEATURE_DETECTORS",
    "CONVENTION",
    "METHODS",
    "DEFORMABLE",
    "center_of",
    "make_transform",
    "translation",
    "decompose",
    "grid_transform",
    "warp",
    "warp_field",
    "resample_to",
    "overlap_mask",
    "transform_points",
    "invert",
    "mse",
    "ncc",
    "nmi",
    "similarity",
    "aligned_similarity",
    "manual_transform",
    "cost_landscape",
    "Estimate",
    "phase_shift",
    "estimate_translation",
    "rotation_scale",
    "estimate_rotation_scale",
    "flip_candidates",
    "estimate_flip",
    "to_physical",
    "from_physical",
    "intensity_register",
    "feature_register",
    "optical_flow",
    "bspline_register",
    "grid_points",
    "tre",
    "random_transform",
    "simulate_moving",
    "transform_error",
    "checkerboard",
    "magenta_green",
    "fade",
    "difference",
    "difference_rgb",
    "draw_matches",
    "quiver_points",
    "transform_to_json",
    "transform_from_json",
    "transform_to_itk",
    "to_png16",
    "phase_correlation",
    "fourier_mellin",
    "flip",
    "intensity",
    "features",
    "optical_flow_op",
    "bspline",
    "Registration",
    "register_images",
    "suggest_metric",
    "pair_items",
    "true_transform",
    "register_pair_task",
]

Spacing = tuple[float, float] | None


# ============================================================================ transforms
def _sp(spacing: Spacing) -> np.ndarray:
    return np.array([1.0, 1.0]) if spacing is None else np.asarray(spacing, float)


def _phys(spacing: Spacing) -> np.ndarray:
    """3×3 matrix px (row, col, 1) → physical (y, x, 1) mm."""
    s = _sp(spacing)
    return np.diag([s[0], s[1], 1.0])


def center_of(shape: Sequence[int]) -> np.ndarray:
    """Centre of an ``(M, N)`` grid in px: ``((M-1)/2, (N-1)/2)``."""
    return (np.asarray(shape[:2], float) - 1.0) / 2.0


def make_transform(
    *,
    ty: float = 0.0,
    tx: float = 0.0,
    theta_deg: float = 0.0,
    scale: float = 1.0,
    flip_rows: bool = False,
    flip_cols: bool = False,
    center: Sequence[float] = (0.0, 0.0),
    spacing: Spacing = None,
    units: str = "px",
) -> np.ndarray:
    """Fixed→moving matrix from intuitive parameters.

    ``T p = c + L (p - c) + t`` with the linear part ``L = D⁻¹ (s R(θ) F) D`` built in the
    physical frame (``D = diag(spacing)``, ``F`` the optional reflection), so ``theta_deg``
    is a true angle even on anisotropic grids. ``t = (ty, tx)`` is in px, or in mm when
    ``units="mm"``. ``center`` (px) is the pivot — usually :func:`center_of` the fixed grid.
    """
    if scale <= 0:
        raise ValueError(f"scale must be > 0; got {scale!r}")
    a = math.radians(theta_deg)
    R = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    F = np.diag([-1.0 if flip_rows else 1.0, -1.0 if flip_cols else 1.0])
    s = _sp(spacing)
    L = (np.diag(1.0 / s) @ (scale * R @ F) @ np.diag(s))
    t = np.array([ty, tx], float)
    if units == "mm":
        t = t / s
    elif units != "px":
        raise ValueError(f"units must be 'px' or 'mm'; got {units!r}")
    c = np.asarray(center, float)
    T = np.eye(3)
    T[:2, :2] = L
    T[:2, 2] = c - L @ c + t
    return T


def translation(ty: float, tx: float) -> np.ndarray:
    """Pure translation: ``fixed(p) = moving(p + (ty, tx))``."""
    T = np.eye(3)
    T[:2, 2] = (ty, tx)
    return T


def decompose(T: np.ndarray, *, center: Sequence[float] = (0.0, 0.0), spacing: Spacing = None) -> dict[str, float]:
    """Readable parameters of a fixed→moving matrix (inverse of :func:`make_transform`).

    Returns ``ty_px, tx_px, ty_mm, tx_mm`` (translation of the pivot ``center``),
    ``theta_deg`` (rotation of the physical linear part, in (-180, 180]), ``scale``
    (``sqrt|det|``, isotropic part), ``scale_row``/``scale_col`` and ``shear`` (from a QR-style
    split of the physical linear part), ``flip`` (1.0 when the determinant is negative) and
    ``det``. With a flip, θ is the rotation that follows a column mirror.
    """
    T = np.asarray(T, float)
    s = _sp(spacing)
    L = T[:2, :2]
    c = np.asarray(center, float)
    t = T[:2, 2] - c + L @ c
    Lp = np.diag(s) @ L @ np.diag(1.0 / s)  # physical linear part
    det = float(np.linalg.det(Lp))
    flip = det < 0
    A = Lp @ np.diag([1.0, -1.0]) if flip else Lp
    theta = math.degrees(math.atan2(A[1, 0] - A[0, 1], A[0, 0] + A[1, 1]))
    # A = R(θ) · U with U upper-triangular-ish: scale_row/col and shear
    a = math.radians(theta)
    Rt = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    U = Rt @ A
    return {
        "ty_px": float(t[0]),
        "tx_px": float(t[1]),
        "ty_mm": float(t[0] * s[0]),
        "tx_mm": float(t[1] * s[1]),
        "theta_deg": float(theta),
        "scale": float(math.sqrt(abs(det))),
        "scale_row": float(U[0, 0]),
        "scale_col": float(U[1, 1]),
        "shear": float((U[0, 1] + U[1, 0]) / 2.0),
        "flip": 1.0 if flip else 0.0,
        "det": det,
    }


def grid_transform(ref_shape: Sequence[int], ref_spacing: Spacing, mov_shape: Sequence[int], mov_spacing: Spacing) -> np.ndarray:
    """Matrix from reference-grid px to moving-grid px with the two fields of view centred
    on each other (each pixel is a square of side ``spacing`` around its centre).

    When a spacing is unknown both images are taken to cover the same field of view.
    For a block-mean downsampling by ``f`` this is ``q = (p - (f-1)/2) / f``.
    """
    rs = np.asarray(ref_shape[:2], float)
    ms = np.asarray(mov_shape[:2], float)
    if ref_spacing is None or mov_spacing is None:
        ratio = rs / ms  # same extent: mov_spacing / ref_spacing
    else:
        ratio = np.asarray(mov_spacing, float) / np.asarray(ref_spacing, float)
    k = 1.0 / ratio
    T = np.eye(3)
    T[0, 0], T[1, 1] = k
    T[:2, 2] = (ms - 1.0) / 2.0 - k * (rs - 1.0) / 2.0
    return T


def warp(moving: np.ndarray, T: np.ndarray, *, output_shape: Sequence[int] | None = None, order: int = 1,
         cval: float = 0.0) -> np.ndarray:
    """Resample ``moving`` on the fixed grid: ``out(p) = moving(T p)`` (float64).

    ``order`` is the spline order (0 nearest, 1 linear, 3 cubic); outside the moving image
    the value is ``cval``.
    """
    T = np.asarray(T, float)
    a = np.asarray(moving, np.float64)
    shape = tuple(output_shape[:2]) if output_shape is not None else a.shape[:2]
    if np.allclose(T[:2, :2], np.eye(2)) and np.allclose(T[:2, 2], np.round(T[:2, 2])) and shape == a.shape:
        # integer translation: exact and much cheaper than interpolation
        return _int_shift(a, int(round(T[0, 2])), int(round(T[1, 2])), cval)
    L = T[:2, :2]
    if L[0, 1] == 0.0 and L[1, 0] == 0.0:  # axis-aligned: scipy's separable zoom/shift path is much faster
        L = np.diag(L)
    return ndi.affine_transform(a, L, offset=T[:2, 2], output_shape=shape, order=order, cval=cval,
                                mode="constant", prefilter=order > 1)


def _int_shift(a: np.ndarray, dr: int, dc: int, cval: float) -> np.ndarray:
    out = np.full_like(a, cval)
    m, n = a.shape
    r0, r1 = max(0, -dr), min(m, m - dr)
    c0, c1 = max(0, -dc), min(n, n - dc)
    if r1 > r0 and c1 > c0:
        out[r0:r1, c0:c1] = a[r0 + dr:r1 + dr, c0 + dc:c1 + dc]
    return out


def warp_field(moving: np.ndarray, d: np.ndarray, *, order: int = 1, cval: float = 0.0) -> np.ndarray:
    """``out(p) = moving(p + d(p))`` for a displacement field ``d`` of shape ``(2, M, N)``."""
    m, n = d.shape[1:]
    rr, cc = np.meshgrid(np.arange(m, dtype=np.float64), np.arange(n, dtype=np.float64), indexing="ij")
    coords = np.stack([rr + d[0], cc + d[1]])
    return ndi.map_coordinates(np.asarray(moving, np.float64), coords, order=order, cval=cval, mode="constant")


def resample_to(moving: np.ndarray, moving_spacing: Spacing, ref_shape: Sequence[int], ref_spacing: Spacing, *,
                order: int = 1, cval: float = 0.0, antialias: bool = True) -> np.ndarray:
    """Resample ``moving`` onto a reference grid (``ref_shape``, ``ref_spacing``), keeping
    physical size: the two fields of view are centred on each other (:func:`grid_transform`).

    When the moving grid is finer than the reference it is Gaussian-smoothed first
    (σ = (ratio−1)/2 px per axis) so downsampling does not alias. Values stay in the input
    units; outside the moving field of view the value is ``cval``. Returns float64.
    """
    a = np.asarray(moving, np.float64)
    if a.ndim != 2:
        raise ValueError(f"moving must be a 2-D array; got shape {a.shape}")
    G = grid_transform(ref_shape, ref_spacing, a.shape, moving_spacing)
    if antialias:
        step = np.abs(np.diag(G[:2, :2]))  # moving px per reference px
        sig = np.where(step > 1.0, (step - 1.0) / 2.0, 0.0)
        if np.any(sig > 0):
            a = ndi.gaussian_filter(a, sig, mode="nearest")
    return warp(a, G, output_shape=ref_shape, order=order, cval=cval)


def overlap_mask(fixed_shape: Sequence[int], moving_shape: Sequence[int], T: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """Fixed pixels whose mapped position ``T p`` falls inside the moving grid (± ``margin``)."""
    m, n = fixed_shape[:2]
    T = np.asarray(T, float)
    if T[0, 1] == 0.0 and T[1, 0] == 0.0:  # axis-aligned: the mask is an outer product
        r = T[0, 0] * np.arange(m) + T[0, 2]
        c = T[1, 1] * np.arange(n) + T[1, 2]
        ok_r = (r >= -margin) & (r <= moving_shape[0] - 1 + margin)
        ok_c = (c >= -margin) & (c <= moving_shape[1] - 1 + margin)
        return ok_r[:, None] & ok_c[None, :]
    rr = np.arange(m, dtype=np.float64)[:, None]
    cc = np.arange(n, dtype=np.float64)[None, :]
    q0 = T[0, 0] * rr + T[0, 1] * cc + T[0, 2]
    q1 = T[1, 0] * rr + T[1, 1] * cc + T[1, 2]
    return ((q0 >= -margin) & (q0 <= moving_shape[0] - 1 + margin)
            & (q1 >= -margin) & (q1 <= moving_shape[1] - 1 + margin))


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply ``T`` to ``(K, 2)`` (row, col) points."""
    p = np.asarray(points, float)
    return p @ np.asarray(T, float)[:2, :2].T + np.asarray(T, float)[:2, 2]


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse matrix (moving→fixed)."""
    return np.linalg.inv(np.asarray(T, float))


# ============================================================================ metrics
def _valid(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape; got {a.shape} and {b.shape}")
    ok = np.isfinite(a)
    ok &= np.isfinite(b)
    if mask is not None:
        ok &= np.asarray(mask, bool)
    if ok.all():
        return a.ravel(), b.ravel()
    return a[ok], b[ok]


def mse(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean squared difference over ``mask`` (input units²; lower is better)."""
    return _mse(*_valid(a, b, mask))


def _mse(x: np.ndarray, y: np.ndarray) -> float:
    d = x - y
    return float(np.einsum("i,i->", d, d) / d.size) if d.size else float("nan")


def ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Normalised cross-correlation (Pearson r) over ``mask``, in [-1, 1] (higher is better)."""
    return _ncc(*_valid(a, b, mask))


def _ncc(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2:
        return float("nan")
    x = x - x.mean()
    y = y - y.mean()
    # einsum, not BLAS dot: identical result, and immune to BLAS thread contention
    den = math.sqrt(float(np.einsum("i,i->", x, x)) * float(np.einsum("i,i->", y, y)))
    return float(np.einsum("i,i->", x, y) / den) if den > 0 else 0.0


def _quantise(x: np.ndarray, bins: int) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros(x.shape, np.int64)
    q = ((x - lo) * (bins / (hi - lo))).astype(np.int64)
    np.clip(q, 0, bins - 1, out=q)
    return q


def _entropy_counts(c: np.ndarray) -> float:
    c = c[c > 0].astype(np.float64)
    p = c / c.sum()
    return float(-(p * np.log(p)).sum())


def nmi(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, bins: int = 64) -> float:
    """Normalised mutual information ``(H(A) + H(B)) / H(A, B)`` (Studholme) over ``mask``.

    1 for independent images, 2 for identical ones (higher is better); valid across
    modalities. Each image is quantised into ``bins`` bins over its own range.
    """
    return _nmi(*_valid(a, b, mask), bins=bins)


def _nmi(x: np.ndarray, y: np.ndarray, bins: int = 64) -> float:
    if x.size < 2:
        return float("nan")
    qa, qb = _quantise(x, bins), _quantise(y, bins)
    joint = np.bincount(qa * bins + qb, minlength=bins * bins)
    hab = _entropy_counts(joint)
    if hab <= 0:
        return 2.0
    ha = _entropy_counts(np.bincount(qa, minlength=bins))
    hb = _entropy_counts(np.bincount(qb, minlength=bins))
    return float((ha + hb) / hab)


#: metric name → (function, True when higher is better)
METRICS: dict[str, tuple[Any, bool]] = {"mse": (mse, False), "ncc": (ncc, True), "nmi": (nmi, True)}


def similarity(fixed: np.ndarray, registered: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """MSE, NCC and NMI between ``fixed`` and a moving image already on the fixed grid."""
    x, y = _valid(fixed, registered, mask)
    if x.size < 2:
        return {"mse": float("nan"), "ncc": float("nan"), "nmi": float("nan")}
    return {"mse": _mse(x, y), "ncc": _ncc(x, y), "nmi": _nmi(x, y)}


def aligned_similarity(fixed: np.ndarray, moving: np.ndarray, T: np.ndarray, *, order: int = 1) -> dict[str, float]:
    """Similarity of ``fixed`` and ``moving`` warped by ``T``, over the overlap only."""
    reg = warp(moving, T, output_shape=fixed.shape, order=order)
    return similarity(fixed, reg, overlap_mask(fixed.shape, np.shape(moving), T))


# ============================================================================ pyramid helper
def _block(a: np.ndarray, f: int) -> np.ndarray:
    if f <= 1:
        return np.asarray(a, np.float64)
    m, n = (np.asarray(a.shape) // f) * f
    a = np.asarray(a, np.float64)[:m, :n]
    return a.reshape(m // f, f, n // f, f).mean(axis=(1, 3))


def _block_matrix(f: int) -> np.ndarray:
    """px of the full grid → px of the ``f×`` block-mean grid."""
    o = -(f - 1.0) / 2.0 / f
    return np.array([[1.0 / f, 0.0, o], [0.0, 1.0 / f, o], [0.0, 0.0, 1.0]])


def _at_level(T: np.ndarray, f: int) -> np.ndarray:
    B = _block_matrix(f)
    return B @ np.asarray(T, float) @ np.linalg.inv(B)


# ============================================================================ manual mode
#: manual-mode parameters: name → (label, unit)
MANUAL_PARAMS: dict[str, tuple[str, str]] = {
    "ty": ("ty (rows)", "px"),
    "tx": ("tx (columns)", "px"),
    "theta_deg": ("θ", "°"),
    "scale": ("scale", ""),
}


def manual_transform(shape: Sequence[int], spacing: Spacing = None, **params: Any) -> np.ndarray:
    """:func:`make_transform` about the centre of a fixed grid of ``shape`` (translation in px)."""
    return make_transform(center=center_of(shape), spacing=spacing, **params)


def cost_landscape(
    fixed: np.ndarray,
    moving: np.ndarray,
    params: dict[str, Any],
    vary: str,
    values: Sequence[float],
    *,
    metric: str = "ncc",
    spacing: Spacing = None,
    max_side: int = 256,
) -> np.ndarray:
    """Metric value for each of ``values`` of manual parameter ``vary`` (``ty``, ``tx``,
    ``theta_deg`` or ``scale``), the other parameters held at ``params``.

    Computed over the overlap on a block-mean pyramid level whose longest side is at most
    ``max_side`` (the transform is mapped exactly to that level), so dragging stays live.
    """
    if vary not in MANUAL_PARAMS:
        raise ValueError(f"vary must be one of {list(MANUAL_PARAMS)}; got {vary!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}; got {metric!r}")
    fixed = np.asarray(fixed, np.float64)
    f = max(1, int(math.ceil(max(fixed.shape) / max_side)))
    fl, ml = _block(fixed, f), _block(moving, f)
    func = METRICS[metric][0]
    out = np.empty(len(values))
    for i, v in enumerate(values):
        T = manual_transform(fixed.shape, spacing, **{**params, vary: float(v)})
        Tl = _at_level(T, f)
        reg = warp(ml, Tl, output_shape=fl.shape)
        out[i] = func(fl, reg, overlap_mask(fl.shape, ml.shape, Tl))
    return out


# ============================================================================ estimates
@dataclass
class Estimate:
    """What an automatic method found: ``T`` (fixed→moving px on the shared grid), an
    optional displacement field applied after it, numbers and drawable extras."""

    T: np.ndarray
    field: np.ndarray | None = None
    info: dict[str, float] = dfield(default_factory=dict)
    extras: dict[str, Any] = dfield(default_factory=dict)
    notes: list[str] = dfield(default_factory=list)


def _need_moving(moving: np.ndarray | None, shape: Sequence[int]) -> np.ndarray:
    if moving is None:
        raise ValueError("this operation needs a moving image (a working pair)")
    moving = np.asarray(moving, np.float64)
    if moving.shape != tuple(shape):
        raise ValueError(f"moving image {moving.shape} must be on the fixed grid {tuple(shape)}; resample it first")
    return moving


def _robust01(a: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Rescale to [0, 1] between robust percentiles (0.5 %, 99.5 %) or given bounds."""
    a = np.asarray(a, np.float64)
    if lo is None or hi is None:
        fin = a[np.isfinite(a)]
        lo, hi = (np.percentile(fin, [0.5, 99.5]) if fin.size else (0.0, 1.0))
    span = hi - lo if hi > lo else 1.0
    return np.clip((np.nan_to_num(a, nan=lo) - lo) / span, 0.0, 1.0)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    return np.round(_robust01(a) * 255.0).astype(np.uint8)


def _hann(shape: Sequence[int]) -> np.ndarray:
    return np.outer(np.hanning(shape[0]), np.hanning(shape[1]))


def _dft_region(data: np.ndarray, size: int, ups: float, offsets: np.ndarray) -> np.ndarray:
    """Inverse DFT of ``data`` evaluated on a ``size × size`` grid of points spaced 1/``ups``
    px starting at ``-offsets/ups`` (matrix-multiply DFT, Guizar-Sicairos et al. 2008)."""
    out = data
    for axis in (1, 0):
        n = data.shape[axis]
        k = np.exp((-2j * np.pi / (n * ups)) * np.outer(np.arange(size) - offsets[axis], np.fft.ifftshift(np.arange(n)) - n // 2))
        out = k @ out if axis == 0 else out @ k.T
    return out


def phase_shift(fixed: np.ndarray, moving: np.ndarray, *, upsample_factor: int = 100, window: bool = False) -> tuple[np.ndarray, float]:
    """Translation ``t`` (row, col px) with ``fixed(p) ≈ moving(p + t)`` by phase correlation
    (normalised cross-power spectrum) refined to 1/``upsample_factor`` px with the
    matrix-multiply DFT of Guizar-Sicairos et al. (2008), in two stages (×10 over ±0.75 px,
    then ×``upsample_factor`` over ±0.075 px) so the cost stays far below one FFT-sized
    product. Returns ``(t, 1 − normalised peak height)``."""
    import scipy.fft as sfft

    f = np.asarray(fixed, np.float64)
    m = np.asarray(moving, np.float64)
    if f.shape != m.shape:
        raise ValueError(f"images must have the same shape; got {f.shape} and {m.shape}")
    f = f - f.mean()
    m = m - m.mean()
    if window:
        w = _hann(f.shape)
        f, m = f * w, m * w
    prod = sfft.fft2(f) * np.conj(sfft.fft2(m))
    prod /= np.maximum(np.abs(prod), 1e-12 * max(float(np.abs(prod).max()), 1e-300))
    cc = sfft.ifft2(prod)
    peak = np.array(np.unravel_index(int(np.argmax(np.abs(cc))), cc.shape), float)
    shape = np.array(f.shape, float)
    peak = np.where(peak > shape // 2, peak - shape, peak)  # shift s: fixed(p) ≈ moving(p - s)
    height = float(np.abs(cc).max()) / f.size
    ups_total = max(1, int(upsample_factor))
    stages = [u for u in (10, ups_total) if u > 1 and u <= ups_total]
    stages = sorted(set(stages))
    prev = 1
    conj = np.conj(prod)
    for ups in stages:
        width = 1.5 / prev  # search ±0.75 px of the previous precision
        size = int(math.ceil(width * ups))
        centre = float(np.fix(size / 2.0))
        peak = np.round(peak * ups) / ups
        offsets = centre - peak * ups
        region = np.conj(_dft_region(conj, size, ups, offsets))
        k = np.array(np.unravel_index(int(np.argmax(np.abs(region))), region.shape), float)
        peak = peak + (k - centre) / ups
        height = float(np.abs(region).max()) / f.size
        prev = ups
    return -peak, float(1.0 - min(height, 1.0))


def estimate_translation(fixed: np.ndarray, moving: np.ndarray, *, upsample_factor: int = 100, window: bool = False) -> Estimate:
    t, err = phase_shift(fixed, moving, upsample_factor=upsample_factor, window=window)
    return Estimate(T=translation(*t), info={"phase_error": err})


def _log_polar_spectrum(a: np.ndarray, side: int, n_angles: int, n_radii: int, radius: float) -> np.ndarray:
    from skimage.transform import warp_polar

    a = np.asarray(a, np.float64)
    a = (a - a.mean()) * _hann(a.shape)
    pad = np.zeros((side, side))  # square, so both frequency axes have the same scale
    pad[: a.shape[0], : a.shape[1]] = a
    spec = np.abs(np.fft.fftshift(np.fft.fft2(pad)))
    # high-pass (σ = 0.1 cycle/px): low frequencies carry the window's footprint and the
    # field-of-view outline, which do not rotate/scale with the content and pin the peak at 0
    yy = (np.arange(side) - side // 2)[:, None] / side
    xx = (np.arange(side) - side // 2)[None, :] / side
    spec = spec * (1.0 - np.exp(-(yy ** 2 + xx ** 2) / (2 * 0.1 ** 2)))
    lp = warp_polar(spec, center=(side // 2, side // 2), radius=radius, output_shape=(n_angles, n_radii),
                    scaling="log", order=1)
    return np.log1p(lp[: n_angles // 2])


def rotation_scale(fixed: np.ndarray, moving: np.ndarray, *, allow_scale: bool = True,
                   upsample_factor: int = 20) -> tuple[float, float]:
    """(θ degrees, scale) of the fixed→moving linear part from log-polar phase correlation of
    the high-passed Fourier magnitude spectra (Fourier–Mellin). θ is defined modulo 180°."""
    from skimage.registration import phase_cross_correlation

    side = int(max(np.shape(fixed)[:2] + np.shape(moving)[:2]))
    n_angles = 720
    radius = side * 0.45
    n_radii = int(max(128, side))
    lf = _log_polar_spectrum(fixed, side, n_angles, n_radii, radius)
    lm = _log_polar_spectrum(moving, side, n_angles, n_radii, radius)
    shift, _, _ = phase_cross_correlation(lf, lm, upsample_factor=int(upsample_factor), normalization=None)
    theta = (360.0 / n_angles) * float(shift[0])
    klog = n_radii / math.log(radius)
    scale = math.exp(float(shift[1]) / klog) if allow_scale else 1.0
    return theta, scale


def _best_of(fixed: np.ndarray, moving: np.ndarray, candidates: list[np.ndarray], metric: str) -> tuple[int, list[float]]:
    func, higher = METRICS[metric]
    scores = []
    for T in candidates:
        reg = warp(moving, T, output_shape=fixed.shape)
        scores.append(func(fixed, reg, overlap_mask(fixed.shape, moving.shape, T, margin=-1.0)))
    arr = np.array([s if np.isfinite(s) else (-np.inf if higher else np.inf) for s in scores])
    if not higher:
        arr = -arr
    # ties (e.g. a left-right symmetric image: mirrored and unmirrored fit equally) go to the
    # first, i.e. simplest, candidate instead of to floating-point noise
    best = float(arr.max())
    return int(np.flatnonzero(arr >= best - 1e-9 * max(1.0, abs(best)))[0]), scores


def estimate_rotation_scale(fixed: np.ndarray, moving: np.ndarray, *, allow_scale: bool = True,
                            upsample_factor: int = 100, metric: str = "ncc") -> Estimate:
    """Fourier–Mellin: rotation and scale from the log-polar magnitude spectra, then the
    translation by phase correlation; the 180° ambiguity is settled by ``metric``.
    Assumes square pixels (angles are pixel-grid angles)."""
    fixed = np.asarray(fixed, np.float64)
    moving = np.asarray(moving, np.float64)
    theta, scale = rotation_scale(fixed, moving, allow_scale=allow_scale)
    c = center_of(fixed.shape)
    cands = []
    for th in (theta, theta + 180.0):
        Trs = make_transform(theta_deg=th, scale=scale, center=c)
        m_rs = warp(moving, Trs, output_shape=fixed.shape)
        t, _ = phase_shift(fixed, m_rs, upsample_factor=upsample_factor, window=True)
        cands.append(Trs @ translation(*t))
    best, scores = _best_of(fixed, moving, cands, metric)
    th = theta + 180.0 * best
    th = (th + 180.0) % 360.0 - 180.0
    return Estimate(T=cands[best], info={"theta_spectrum_deg": float(th), "scale_spectrum": float(scale),
                                         f"{metric}_other_candidate": float(scores[1 - best])})


#: base estimators the flip detector can wrap
_FLIP_BASES = ("translation", "rotation_scale")


def flip_candidates(shape: Sequence[int]) -> dict[str, np.ndarray]:
    """The four axis reflections of an ``(M, N)`` grid as fixed→moving matrices."""
    m, n = shape[:2]
    out = {}
    for name, fr, fc in (("none", False, False), ("columns", False, True), ("rows", True, False), ("both", True, True)):
        F = np.eye(3)
        if fr:
            F[0, 0], F[0, 2] = -1.0, m - 1.0
        if fc:
            F[1, 1], F[1, 2] = -1.0, n - 1.0
        out[name] = F
    return out


def estimate_flip(fixed: np.ndarray, moving: np.ndarray, *, base: str = "rotation_scale", metric: str = "ncc",
                  upsample_factor: int = 100) -> Estimate:
    """Try every reflection of the moving image (none, columns, rows, both), register each
    with ``base`` (translation or Fourier–Mellin), keep the best by ``metric``."""
    if base not in _FLIP_BASES:
        raise ValueError(f"base must be one of {list(_FLIP_BASES)}; got {base!r}")
    fixed = np.asarray(fixed, np.float64)
    moving = np.asarray(moving, np.float64)
    cands, names = [], []
    for name, F in flip_candidates(moving.shape).items():
        mf = warp(moving, F)  # exact index reflection
        if base == "translation":
            est = estimate_translation(fixed, mf, upsample_factor=upsample_factor, window=True)
        else:
            est = estimate_rotation_scale(fixed, mf, upsample_factor=upsample_factor, metric=metric)
        cands.append(F @ est.T)
        names.append(name)
    best, scores = _best_of(fixed, moving, cands, metric)
    table = [{"reflection": n, metric: float(s)} for n, s in zip(names, scores)]
    return Estimate(T=cands[best], info={"flip_rows": float(names[best] in ("rows", "both")),
                                         "flip_cols": float(names[best] in ("columns", "both"))},
                    extras={"flip_scores": table, "flip": names[best]},
                    notes=[f"best reflection: {names[best]} ({metric} {scores[best]:.4f})"])


# ============================================================================ SimpleITK
def _px_to_phys(spacing: Spacing) -> np.ndarray:
    """px (row, col, 1) → ITK physical (x, y, 1) with x along columns (origin at pixel 0)."""
    s = _sp(spacing)
    return np.array([[0.0, s[1], 0.0], [s[0], 0.0, 0.0], [0.0, 0.0, 1.0]])


def to_physical(T: np.ndarray, fixed_spacing: Spacing, moving_spacing: Spacing) -> np.ndarray:
    """Our px matrix → ITK physical (x, y) matrix: ``H = Pm T Pf⁻¹``."""
    return _px_to_phys(moving_spacing) @ np.asarray(T, float) @ np.linalg.inv(_px_to_phys(fixed_spacing))


def from_physical(H: np.ndarray, fixed_spacing: Spacing, moving_spacing: Spacing) -> np.ndarray:
    return np.linalg.inv(_px_to_phys(moving_spacing)) @ np.asarray(H, float) @ _px_to_phys(fixed_spacing)


def _sitk_threads() -> int:
    """ITK threads for one registration: ``MEDLENS_ITK_THREADS`` or 1. Measured here, one
    thread per registration is as fast as two when idle and far faster when the cores are
    busy (ITK's thread barriers spin under contention); batches parallelise across pairs."""
    import os

    try:
        return max(1, int(os.environ.get("MEDLENS_ITK_THREADS", "1")))
    except ValueError:
        return 1


class _itk_threads:
    """Context manager: ITK's global default thread count set to :func:`_sitk_threads` for
    the duration (the metric's internal filters use it; with more than one thread Mattes MI
    sums in a varying order and B-spline results are not reproducible)."""

    def __enter__(self) -> "_itk_threads":
        import SimpleITK as sitk

        self._old = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(_sitk_threads())
        return self

    def __exit__(self, *exc: object) -> None:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(self._old)


def _with_itk_threads(func: Any) -> Any:
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _itk_threads():
            return func(*args, **kwargs)

    return wrapper


def _sitk_image(a: np.ndarray, spacing: Spacing):  # type: ignore[no-untyped-def]
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(a, dtype=np.float32))
    s = _sp(spacing)
    img.SetSpacing((float(s[1]), float(s[0])))
    return img


def _sitk_transform(kind: str, H: np.ndarray, center_xy: np.ndarray):  # type: ignore[no-untyped-def]
    """ITK transform of ``kind`` initialised from physical matrix ``H`` about ``center_xy``."""
    import SimpleITK as sitk

    M = H[:2, :2]
    t = H[:2, 2] - center_xy + M @ center_xy  # y = M (x - c) + c + t
    angle = math.atan2(M[1, 0] - M[0, 1], M[0, 0] + M[1, 1])
    if kind == "rigid":
        tx = sitk.Euler2DTransform()
        tx.SetCenter(tuple(center_xy))
        tx.SetAngle(angle)
        tx.SetTranslation(tuple(t))
    elif kind == "similarity":
        tx = sitk.Similarity2DTransform()
        tx.SetCenter(tuple(center_xy))
        tx.SetAngle(angle)
        tx.SetScale(float(math.sqrt(abs(np.linalg.det(M)))))
        tx.SetTranslation(tuple(t))
    elif kind == "affine":
        tx = sitk.AffineTransform(2)
        tx.SetCenter(tuple(center_xy))
        tx.SetMatrix(tuple(M.ravel()))
        tx.SetTranslation(tuple(t))
    else:
        raise ValueError(f"transform must be rigid, similarity or affine; got {kind!r}")
    return tx


def _sitk_matrix(tx) -> np.ndarray:  # type: ignore[no-untyped-def]
    M = np.array(tx.GetMatrix(), float).reshape(2, 2)
    c = np.array(tx.GetCenter(), float)
    t = np.array(tx.GetTranslation(), float)
    H = np.eye(3)
    H[:2, :2] = M
    H[:2, 2] = c - M @ c + t
    return H


INTENSITY_METRICS = ("correlation", "mattes", "mean_squares")
INTENSITY_INITS = ("moments", "geometry", "fourier_mellin")


@_with_itk_threads
def intensity_register(
    fixed: np.ndarray,
    moving: np.ndarray,
    *,
    transform: str = "rigid",
    metric: str = "mattes",
    levels: int = 3,
    iterations: int = 200,
    sampling: float = 0.25,
    bins: int = 50,
    spacing: Spacing = None,
    moving_spacing: Spacing = None,
    initial: np.ndarray | None = None,
    search_deg: float = 20.0,
    init: str = "moments",
    seed: int = 7,
) -> Estimate:
    """Rigid / similarity / affine registration by intensity optimisation (SimpleITK):
    regular-step gradient descent on a multi-resolution pyramid (shrink 2^(levels-1) … 1,
    Gaussian smoothing (levels-1) … 0 px), with metric ``correlation`` (same modality),
    ``mattes`` (Mattes mutual information, multimodal) or ``mean_squares``.

    Works in physical space (mm), so anisotropic pixels are handled. The start is
    ``initial`` (a px matrix) or, by default, the field-of-view centres (``init="geometry"``)
    or the intensity centroids (``init="moments"``, on robustly rescaled images so HU work)
    aligned, or a Fourier–Mellin estimate (``init="fourier_mellin"``, same modality). Gradient descent has a narrow capture range in angle, so a rigid search first
    runs short coarse-level optimisations from starts every 10° within ``±search_deg`` and
    keeps the best (0 disables it).
    """
    import SimpleITK as sitk

    if metric not in INTENSITY_METRICS:
        raise ValueError(f"metric must be one of {list(INTENSITY_METRICS)}; got {metric!r}")
    moving_spacing = spacing if moving_spacing is None else moving_spacing
    f_img = _sitk_image(fixed, spacing)
    m_img = _sitk_image(moving, moving_spacing)
    if init not in INTENSITY_INITS:
        raise ValueError(f"init must be one of {list(INTENSITY_INITS)}; got {init!r}")
    c_xy = (_px_to_phys(spacing) @ np.r_[center_of(np.shape(fixed)), 1.0])[:2]
    if initial is None and init == "fourier_mellin" and np.shape(fixed) == np.shape(moving):
        initial = estimate_rotation_scale(fixed, moving).T
        search_deg = 0.0  # the spectrum already gave a global estimate of the angle
    if initial is None:
        initial = grid_transform(np.shape(fixed), spacing, np.shape(moving), moving_spacing)
        if init == "moments":
            cf = ndi.center_of_mass(_robust01(fixed))
            cm = ndi.center_of_mass(_robust01(moving))
            if np.all(np.isfinite(cf)) and np.all(np.isfinite(cm)):
                # shift so the fixed centroid lands on the moving centroid (in moving px)
                initial = translation(*(np.asarray(cm) - transform_points(initial, [cf])[0])) @ initial
    H0 = to_physical(initial, spacing, moving_spacing)
    levels = max(1, int(levels))
    coarse = 2 ** (levels - 1)
    n_starts = 0
    if search_deg > 0:
        base = _sitk_transform("rigid", H0, c_xy)
        a0 = base.GetAngle()
        offsets = np.arange(-math.floor(search_deg / 10.0), math.floor(search_deg / 10.0) + 1) * 10.0
        best: tuple[float, Any] | None = None
        for off in offsets:
            t_try = sitk.Euler2DTransform(base)
            t_try.SetAngle(a0 + math.radians(float(off)))
            n_coarse = float(np.prod(np.shape(fixed)[:2])) / max(coarse, 2) ** 2
            r2 = _sitk_method(metric, bins, float(min(1.0, 0.5 * 16384.0 / n_coarse)), seed)
            r2.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=60,
                                                        relaxationFactor=0.5)
            r2.SetOptimizerScalesFromPhysicalShift()
            r2.SetShrinkFactorsPerLevel([max(coarse, 2)])
            r2.SetSmoothingSigmasPerLevel([float(max(levels - 1, 1))])
            r2.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
            r2.SetInitialTransform(t_try, inPlace=True)
            r2.Execute(f_img, m_img)
            v = float(r2.GetMetricValue())
            n_starts += 1
            if best is None or v < best[0]:
                best = (v, t_try)
        assert best is not None
        rigid_H = _sitk_matrix(best[1])
        if transform == "rigid":
            H0 = rigid_H
        else:  # keep the initial scale/shear, take the searched rotation and translation
            H0 = rigid_H @ np.linalg.inv(_sitk_matrix(base)) @ H0
        levels_fine = max(1, levels - 1)
    else:
        levels_fine = levels
    tx = _sitk_transform(transform, H0, c_xy)
    reg = _sitk_method(metric, bins, sampling, seed)
    shrinks = [2 ** k for k in range(levels_fine - 1, -1, -1)]
    if sampling < 1.0:  # ``sampling`` is the fraction of a 256² level: the sample count stays bounded on big images
        n_px = float(np.prod(np.shape(fixed)[:2]))
        reg.SetMetricSamplingPercentagePerLevel([float(min(1.0, sampling * 65536.0 * k * k / n_px)) for k in shrinks], int(seed))
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4, numberOfIterations=int(iterations),
                                                 relaxationFactor=0.6, gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(shrinks)
    reg.SetSmoothingSigmasPerLevel([float(k) for k in range(levels_fine - 1, -1, -1)])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(tx, inPlace=True)
    trace: list[float] = []
    reg.AddCommand(sitk.sitkIterationEvent, lambda: trace.append(float(reg.GetMetricValue())))
    reg.Execute(f_img, m_img)
    T = from_physical(_sitk_matrix(tx), spacing, moving_spacing)
    return Estimate(
        T=T,
        info={"final_metric": float(reg.GetMetricValue()), "iterations": float(len(trace)), "starts": float(n_starts)},
        extras={"metric_trace": trace, "stop": reg.GetOptimizerStopConditionDescription()},
        notes=[f"SimpleITK {transform}, {metric}: {n_starts} coarse starts, then {len(trace)} iterations "
               f"over {levels_fine} level(s)"],
    )


def _sitk_method(metric: str, bins: int, sampling: float, seed: int):  # type: ignore[no-untyped-def]
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    reg.SetNumberOfThreads(_sitk_threads())
    if metric == "correlation":
        reg.SetMetricAsCorrelation()
    elif metric == "mattes":
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(bins))
    else:
        reg.SetMetricAsMeanSquares()
    if sampling < 1.0:
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(float(sampling), int(seed))
    reg.SetInterpolator(sitk.sitkLinear)
    return reg


# ============================================================================ features
FEATURE_DETECTORS = ("sift", "orb")


def feature_register(
    fixed: np.ndarray,
    moving: np.ndarray,
    *,
    detector: str = "sift",
    max_features: int = 2000,
    model: str = "similarity",
    ratio: float = 0.8,
    ransac_px: float = 3.0,
    seed: int = 0,
) -> Estimate:
    """Keypoints (SIFT or ORB via OpenCV) matched with Lowe's ratio test, then a
    similarity or affine model fitted by RANSAC. Images are rescaled to 8 bit between
    their own 0.5/99.5 % percentiles first (the detectors need 8-bit input).

    Fewer than 3 usable matches gives the identity with a note (never an exception).
    ``extras["matches"]`` holds ``fixed_rc``, ``moving_rc`` (K×2 px) and ``inlier`` (bool K).
    """
    import cv2

    if detector not in FEATURE_DETECTORS:
        raise ValueError(f"detector must be one of {list(FEATURE_DETECTORS)}; got {detector!r}")
    if model not in ("similarity", "affine"):
        raise ValueError(f"model must be 'similarity' or 'affine'; got {model!r}")
    f8, m8 = _to_uint8(fixed), _to_uint8(moving)
    if detector == "orb":
        det = cv2.ORB_create(nfeatures=int(max_features), fastThreshold=5, edgeThreshold=15, patchSize=15)
        norm = cv2.NORM_HAMMING
    else:
        det = cv2.SIFT_create(nfeatures=int(max_features))
        norm = cv2.NORM_L2
    kf, df = det.detectAndCompute(f8, None)
    km, dm = det.detectAndCompute(m8, None)
    empty = {"fixed_rc": np.zeros((0, 2)), "moving_rc": np.zeros((0, 2)), "inlier": np.zeros(0, bool)}
    info = {"keypoints_fixed": float(len(kf)), "keypoints_moving": float(len(km)), "matches": 0.0, "inliers": 0.0}
    if df is None or dm is None or len(kf) < 3 or len(km) < 3:
        return Estimate(T=np.eye(3), info=info, extras={"matches": empty},
                        notes=["too few keypoints: transform left at identity"])
    knn = cv2.BFMatcher(norm).knnMatch(df, dm, k=2)
    good = [p[0] for p in knn if len(p) == 2 and p[0].distance < ratio * p[1].distance]
    good.sort(key=lambda mt: (mt.distance, mt.queryIdx, mt.trainIdx))
    info["matches"] = float(len(good))
    if len(good) < 3:
        return Estimate(T=np.eye(3), info=info, extras={"matches": empty},
                        notes=[f"only {len(good)} matches passed the ratio test: transform left at identity"])
    pf = np.array([kf[mt.queryIdx].pt for mt in good], np.float64)  # (x, y) = (col, row)
    pm = np.array([km[mt.trainIdx].pt for mt in good], np.float64)
    cv2.setRNGSeed(int(seed))
    fit = cv2.estimateAffinePartial2D if model == "similarity" else cv2.estimateAffine2D
    A, inl = fit(pf, pm, method=cv2.RANSAC, ransacReprojThreshold=float(ransac_px), maxIters=5000,
                 confidence=0.999, refineIters=20)
    fixed_rc, moving_rc = pf[:, ::-1], pm[:, ::-1]
    if A is None:
        return Estimate(T=np.eye(3), info=info,
                        extras={"matches": {"fixed_rc": fixed_rc, "moving_rc": moving_rc, "inlier": np.zeros(len(good), bool)}},
                        notes=["RANSAC found no consistent model: transform left at identity"])
    inlier = inl.ravel().astype(bool)
    info["inliers"] = float(inlier.sum())
    H = np.vstack([A, [0.0, 0.0, 1.0]])  # (x, y) → (x, y)
    S = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # swap (row, col) ↔ (x, y)
    T = S @ H @ S
    return Estimate(T=T, info=info, extras={"matches": {"fixed_rc": fixed_rc, "moving_rc": moving_rc, "inlier": inlier}},
                    notes=[f"{detector.upper()}: {len(kf)}/{len(km)} keypoints, {len(good)} matches, {int(inlier.sum())} RANSAC inliers"])


# ============================================================================ deformable
def optical_flow(fixed: np.ndarray, moving: np.ndarray, *, method: str = "tvl1", attachment: float = 15.0,
                 radius: int = 7, num_warp: int = 5) -> Estimate:
    """Dense displacement ``d`` with ``fixed(p) ≈ moving(p + d(p))`` by TV-L1 (``attachment``
    = data weight) or iterative Lucas–Kanade (``radius`` = window radius px), from
    :mod:`skimage.registration`. Both images are rescaled to [0, 1] over their *joint* robust
    range (0.5–99.5 %), so this suits same-modality pairs."""
    from skimage.registration import optical_flow_ilk, optical_flow_tvl1

    f = np.asarray(fixed, np.float64)
    m = np.asarray(moving, np.float64)
    both = np.concatenate([f[np.isfinite(f)], m[np.isfinite(m)]])
    lo, hi = np.percentile(both, [0.5, 99.5]) if both.size else (0.0, 1.0)
    f01, m01 = _robust01(f, lo, hi).astype(np.float32), _robust01(m, lo, hi).astype(np.float32)
    if method == "tvl1":
        d = optical_flow_tvl1(f01, m01, attachment=float(attachment), num_warp=int(num_warp), prefilter=False)
    elif method == "ilk":
        d = optical_flow_ilk(f01, m01, radius=int(radius), num_warp=int(num_warp), prefilter=False)
    else:
        raise ValueError(f"method must be 'tvl1' or 'ilk'; got {method!r}")
    d = np.asarray(d, np.float64)
    mag = np.hypot(d[0], d[1])
    return Estimate(T=np.eye(3), field=d, info={"max_displacement_px": float(mag.max()), "mean_displacement_px": float(mag.mean())},
                    notes=[f"{'TV-L1' if method == 'tvl1' else 'iterative Lucas–Kanade'} optical flow"])


@_with_itk_threads
def bspline_register(fixed: np.ndarray, moving: np.ndarray, *, mesh: int = 8, metric: str = "mattes",
                     iterations: int = 100, spacing: Spacing = None, bins: int = 50) -> Estimate:
    """Free-form deformation: a cubic B-spline transform on a ``mesh × mesh`` control grid
    optimised with L-BFGS-B (SimpleITK, two pyramid levels, all pixels sampled). The dense
    displacement is returned in px on the fixed grid."""
    import SimpleITK as sitk

    if metric not in INTENSITY_METRICS:
        raise ValueError(f"metric must be one of {list(INTENSITY_METRICS)}; got {metric!r}")
    f_img = _sitk_image(fixed, spacing)
    m_img = _sitk_image(moving, spacing)
    tx = sitk.BSplineTransformInitializer(f_img, [int(mesh), int(mesh)], 3)
    reg = _sitk_method(metric, bins, 1.0, 0)
    reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=int(iterations),
                             maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=4 * int(iterations),
                             costFunctionConvergenceFactor=1e7)
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(tx, inPlace=True)
    reg.Execute(f_img, m_img)
    disp = sitk.TransformToDisplacementField(tx, sitk.sitkVectorFloat64, f_img.GetSize(), f_img.GetOrigin(),
                                             f_img.GetSpacing(), f_img.GetDirection())
    v = sitk.GetArrayFromImage(disp)  # (M, N, 2) as (x, y) mm
    s = _sp(spacing)
    d = np.stack([v[..., 1] / s[0], v[..., 0] / s[1]]).astype(np.float64)
    mag = np.hypot(d[0], d[1])
    return Estimate(T=np.eye(3), field=d,
                    info={"final_metric": float(reg.GetMetricValue()), "max_displacement_px": float(mag.max()),
                          "mean_displacement_px": float(mag.mean())},
                    notes=[f"B-spline {mesh}×{mesh} control grid, {metric}, stop: {reg.GetOptimizerStopConditionDescription()[:120]}"])


# ============================================================================ accuracy
def grid_points(shape: Sequence[int], step: int | None = None, *, margin: float = 0.1,
                mask: np.ndarray | None = None) -> np.ndarray:
    """Regular grid of target points ``(K, 2)`` (row, col) inside the central part of an
    ``(M, N)`` grid (``margin`` fraction of each side left out), optionally inside ``mask``."""
    m, n = shape[:2]
    step = step or max(4, int(min(m, n) // 12))
    rows = np.arange(round(margin * (m - 1)), (1 - margin) * (m - 1) + 1e-9, step)
    cols = np.arange(round(margin * (n - 1)), (1 - margin) * (n - 1) + 1e-9, step)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    pts = np.c_[rr.ravel(), cc.ravel()].astype(float)
    if mask is not None:
        keep = np.asarray(mask, bool)[pts[:, 0].astype(int), pts[:, 1].astype(int)]
        pts = pts[keep]
    return pts


def _mapped(points: np.ndarray, T: np.ndarray, field: np.ndarray | None) -> np.ndarray:
    p = np.asarray(points, float)
    if field is not None:
        d = np.stack([ndi.map_coordinates(field[k], p.T, order=1, mode="nearest") for k in (0, 1)], axis=1)
        p = p + d
    return transform_points(T, p)


def tre(T_est: np.ndarray, T_true: np.ndarray, points: np.ndarray, *, moving_spacing: Spacing = None,
        fixed_spacing: Spacing = None, field_est: np.ndarray | None = None,
        field_true: np.ndarray | None = None) -> dict[str, Any]:
    """Target registration error at ``points`` (fixed px): distance between where the
    estimate and the truth send each point (``p + d(p)`` then ``T``) in the moving image.

    Returns per-point ``errors_px`` (expressed in *fixed* px: mm ÷ fixed spacing, which
    equals moving px when both grids agree) and ``errors_mm`` (when spacings are known),
    plus ``median``, ``mean``, ``max`` and ``p95`` of each.
    """
    a = _mapped(points, T_est, field_est)
    b = _mapped(points, T_true, field_true)
    delta = a - b  # moving px
    ms, fs = _sp(moving_spacing), _sp(fixed_spacing if fixed_spacing is not None else moving_spacing)
    mm = delta * ms
    err_px = np.hypot(mm[:, 0] / fs[0], mm[:, 1] / fs[1])
    out: dict[str, Any] = {"errors_px": err_px, "n_points": int(len(err_px))}
    if moving_spacing is not None:
        out["errors_mm"] = np.hypot(mm[:, 0], mm[:, 1])
    for unit in ("px", "mm"):
        e = out.get(f"errors_{unit}")
        if e is None or not len(e):
            continue
        out[f"median_{unit}"] = float(np.median(e))
        out[f"mean_{unit}"] = float(np.mean(e))
        out[f"max_{unit}"] = float(np.max(e))
        out[f"p95_{unit}"] = float(np.percentile(e, 95))
    return out


def random_transform(seed: int, shape: Sequence[int], *, max_shift_px: float = 10.0, max_angle_deg: float = 15.0,
                     scale_range: tuple[float, float] = (1.0, 1.0), flip: bool = False,
                     spacing: Spacing = None) -> tuple[np.ndarray, dict[str, float]]:
    """A random fixed→moving transform about the grid centre and its parameters."""
    r = np.random.default_rng([int(seed), 1234])
    p = {
        "ty": float(r.uniform(-max_shift_px, max_shift_px)),
        "tx": float(r.uniform(-max_shift_px, max_shift_px)),
        "theta_deg": float(r.uniform(-max_angle_deg, max_angle_deg)),
        "scale": float(r.uniform(*scale_range)),
        "flip_cols": bool(flip and r.uniform() < 0.5) if flip else False,
    }
    return manual_transform(shape, spacing, **p), p


def simulate_moving(fixed: np.ndarray, T: np.ndarray, *, order: int = 3, cval: float | None = None) -> np.ndarray:
    """The moving image a known transform implies: ``moving(q) = fixed(T⁻¹ q)`` so that
    registering (fixed, moving) should recover ``T``. Outside the field of view: ``cval``
    (default: the image minimum, i.e. background)."""
    fixed = np.asarray(fixed, np.float64)
    cv = float(np.nanmin(fixed)) if cval is None else float(cval)
    return warp(fixed, invert(T), order=order, cval=cv)


def transform_error(T_est: np.ndarray, T_true: np.ndarray, shape: Sequence[int], *, spacing: Spacing = None,
                    step: int | None = None) -> dict[str, float]:
    """Known-transform scorecard: TRE on a grid (px, mm), error of the angle (°), scale and
    of the centre's translation (px, mm)."""
    c = center_of(shape)
    a = decompose(T_est, center=c, spacing=spacing)
    b = decompose(T_true, center=c, spacing=spacing)
    t = tre(T_est, T_true, grid_points(shape, step), moving_spacing=spacing, fixed_spacing=spacing)
    dth = (a["theta_deg"] - b["theta_deg"] + 180.0) % 360.0 - 180.0
    out = {
        "tre_median_px": t["median_px"],
        "tre_max_px": t["max_px"],
        "angle_error_deg": float(abs(dth)),
        "scale_error": float(abs(a["scale"] - b["scale"])),
        "shift_error_px": float(math.hypot(a["ty_px"] - b["ty_px"], a["tx_px"] - b["tx_px"])),
        "flip_correct": float(a["flip"] == b["flip"]),
    }
    if spacing is not None:
        out["tre_median_mm"] = t["median_mm"]
        out["tre_max_mm"] = t["max_mm"]
        out["shift_error_mm"] = float(math.hypot(a["ty_mm"] - b["ty_mm"], a["tx_mm"] - b["tx_mm"]))
    return out


# ============================================================================ QA views (display only)
def checkerboard(a: np.ndarray, b: np.ndarray, tile: int = 32) -> np.ndarray:
    """Alternate ``tile``-px squares of ``a`` and ``b`` (same shape; any dtype / channels)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"checkerboard needs equal shapes; got {a.shape} and {b.shape}")
    tile = max(1, int(tile))
    rr = (np.arange(a.shape[0]) // tile)[:, None]
    cc = (np.arange(a.shape[1]) // tile)[None, :]
    sel = ((rr + cc) % 2).astype(bool)
    if a.ndim == 3:
        sel = sel[..., None]
    return np.where(sel, b, a)


def magenta_green(a8: np.ndarray, b8: np.ndarray) -> np.ndarray:
    """RGB false-colour overlay: fixed in magenta (R+B), moving in green; aligned structures
    turn grey/white, misaligned ones keep their colour. Inputs are display-windowed uint8."""
    a8, b8 = np.asarray(a8, np.uint8), np.asarray(b8, np.uint8)
    return np.stack([a8, b8, a8], axis=-1)


def fade(a8: np.ndarray, b8: np.ndarray, alpha: float) -> np.ndarray:
    """``(1-α)·a + α·b`` of two display-windowed uint8 images (α = 0 shows ``a``)."""
    w = int(round(float(np.clip(alpha, 0.0, 1.0)) * 256))
    a16, b16 = np.asarray(a8, np.uint16), np.asarray(b8, np.uint16)
    return ((a16 * (256 - w) + b16 * w + 128) >> 8).astype(np.uint8)


def difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Signed difference ``a - b`` in input units (meaningful for same-modality pairs)."""
    return np.asarray(a, np.float64) - np.asarray(b, np.float64)


def difference_rgb(diff: np.ndarray, limit: float | None = None) -> np.ndarray:
    """Diverging blue–white–red rendering of a signed difference (±``limit``, default the
    99th percentile of |diff|)."""
    d = np.nan_to_num(np.asarray(diff, np.float32))
    if limit:
        lim = float(limit)
    else:  # 99th percentile of |diff| on a regular subsample (display only)
        sub = np.abs(d[:: max(1, d.shape[0] // 128), :: max(1, d.shape[1] // 128)])
        lim = float(np.percentile(sub, 99)) or 1.0
    idx = np.clip(np.rint((d * (1.0 / lim) + 1.0) * 127.0), 0, 254).astype(np.uint8)
    return _DIVERGING[idx]


def _diverging_lut() -> np.ndarray:
    t = np.linspace(-1.0, 1.0, 255)  # odd count: 0 maps to exactly white
    pos, neg = np.clip(t, 0, 1), np.clip(-t, 0, 1)
    rgb = np.stack([1.0 - neg, 1.0 - np.maximum(pos, neg), 1.0 - pos], -1)
    return np.round(rgb * 255).astype(np.uint8)


_DIVERGING = _diverging_lut()


def draw_matches(f8: np.ndarray, m8: np.ndarray, matches: dict[str, np.ndarray], *, max_lines: int = 150) -> np.ndarray:
    """Side-by-side RGB image (fixed | moving) with inlier matches in green, outliers in red."""
    import cv2

    f8, m8 = np.asarray(f8, np.uint8), np.asarray(m8, np.uint8)
    h = max(f8.shape[0], m8.shape[0])
    canvas = np.zeros((h, f8.shape[1] + m8.shape[1], 3), np.uint8)
    canvas[: f8.shape[0], : f8.shape[1]] = f8[..., None]
    canvas[: m8.shape[0], f8.shape[1]:] = m8[..., None]
    fr, mr, inl = matches["fixed_rc"], matches["moving_rc"], matches["inlier"]
    order = np.r_[np.flatnonzero(~inl), np.flatnonzero(inl)]  # inliers drawn on top
    step = max(1, int(math.ceil(len(order) / max_lines)))
    for k in order[::step]:
        p = (int(round(fr[k, 1])), int(round(fr[k, 0])))
        q = (int(round(mr[k, 1])) + f8.shape[1], int(round(mr[k, 0])))
        colour = (40, 220, 60) if inl[k] else (230, 50, 40)
        cv2.line(canvas, p, q, colour, 1, cv2.LINE_AA)
        cv2.circle(canvas, p, 2, colour, -1)
        cv2.circle(canvas, q, 2, colour, -1)
    return canvas


def quiver_points(field: np.ndarray, n: int = 20) -> dict[str, np.ndarray]:
    """Sparse arrows of a displacement field: about ``n`` per side, (row, col, d_row, d_col)."""
    m, k = field.shape[1:]
    step = max(1, int(max(m, k) // n))
    rr, cc = np.meshgrid(np.arange(step // 2, m, step), np.arange(step // 2, k, step), indexing="ij")
    return {"row": rr.ravel(), "col": cc.ravel(), "d_row": field[0][rr, cc].ravel(), "d_col": field[1][rr, cc].ravel()}


# ============================================================================ exports
CONVENTION = ("T maps FIXED pixel coordinates (row, col, 1) to MOVING pixel coordinates: fixed(p) ~ moving(T p); "
              "scipy.ndimage.affine_transform(moving, T[:2, :2], offset=T[:2, 2]) resamples moving onto the fixed grid")


def transform_to_json(T: np.ndarray, *, fixed_shape: Sequence[int], fixed_spacing: Spacing = None,
                      moving_shape: Sequence[int] | None = None, moving_spacing: Spacing = None,
                      method: str = "", params: dict[str, Any] | None = None) -> str:
    """The estimated transform as JSON: matrix, convention, readable parameters, and the
    equivalent physical (x = columns, y = rows, mm, origin at pixel (0, 0)) matrix."""
    moving_spacing = fixed_spacing if moving_spacing is None else moving_spacing
    T = np.asarray(T, float)
    doc = {
        "convention": CONVENTION,
        "matrix": T.tolist(),
        "fixed_shape": [int(v) for v in fixed_shape[:2]],
        "moving_shape": [int(v) for v in (moving_shape or fixed_shape)[:2]],
        "fixed_spacing_mm": list(fixed_spacing) if fixed_spacing else None,
        "moving_spacing_mm": list(moving_spacing) if moving_spacing else None,
        "parameters": decompose(T, center=center_of(fixed_shape), spacing=fixed_spacing),
        "physical_matrix_xy_mm": to_physical(T, fixed_spacing, moving_spacing).tolist(),
        "method": method,
        "method_params": params or {},
    }
    return json.dumps(doc, indent=2, default=float)


def transform_from_json(text: str | dict) -> np.ndarray:
    """Read a 3×3 matrix from :func:`transform_to_json` output or a bare ``[[...], ...]`` list
    (the sample manifest's ``transform`` column)."""
    doc = json.loads(text) if isinstance(text, str) else text
    mat = doc["matrix"] if isinstance(doc, dict) else doc
    T = np.asarray(mat, float)
    if T.shape != (3, 3):
        raise ValueError(f"a transform must be a 3×3 matrix; got shape {T.shape}")
    return T


def transform_to_itk(T: np.ndarray, fixed_spacing: Spacing = None, moving_spacing: Spacing = None) -> str:
    """ITK transform file text (``.tfm``, ``AffineTransform_double_2_2``) of ``T`` in the
    images' physical frame (x along columns, y along rows, mm; origin at pixel (0, 0),
    identity direction). Readable by ``SimpleITK.ReadTransform``."""
    import os
    import tempfile

    import SimpleITK as sitk

    H = to_physical(T, fixed_spacing, fixed_spacing if moving_spacing is None else moving_spacing)
    tx = sitk.AffineTransform(2)
    tx.SetMatrix(tuple(H[:2, :2].ravel()))
    tx.SetTranslation(tuple(H[:2, 2]))
    fd, path = tempfile.mkstemp(suffix=".tfm")
    os.close(fd)
    try:
        sitk.WriteTransform(tx, path)
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    finally:
        os.unlink(path)


def to_png16(a: np.ndarray) -> tuple[bytes, float, float]:
    """16-bit PNG of a float image with a linear map ``value = png * slope + intercept``
    (returned, so physical units can be recovered to 1/65535 of the range)."""
    import cv2

    a = np.nan_to_num(np.asarray(a, np.float64))
    lo, hi = float(a.min()), float(a.max())
    slope = (hi - lo) / 65535.0 if hi > lo else 1.0
    q = np.round((a - lo) / slope).astype(np.uint16)
    ok, buf = cv2.imencode(".png", q)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes(), slope, lo


# ============================================================================ registry operations
def _registered(moving: np.ndarray, T: np.ndarray, field: np.ndarray | None, shape: Sequence[int], cval: float) -> np.ndarray:
    if field is None:
        return warp(moving, T, output_shape=shape, cval=cval)
    m, n = shape[:2]
    rr, cc = np.meshgrid(np.arange(m, dtype=np.float64), np.arange(n, dtype=np.float64), indexing="ij")
    p = np.stack([rr + field[0], cc + field[1]])
    q0 = T[0, 0] * p[0] + T[0, 1] * p[1] + T[0, 2]
    q1 = T[1, 0] * p[0] + T[1, 1] * p[1] + T[1, 2]
    return ndi.map_coordinates(np.asarray(moving, np.float64), np.stack([q0, q1]), order=1, cval=cval, mode="constant")


def _result(fixed: np.ndarray, moving: np.ndarray, est: Estimate, spacing: Spacing) -> Result:
    fixed = np.asarray(fixed, np.float64)
    cval = float(np.nanmin(moving))
    reg = _registered(moving, est.T, est.field, fixed.shape, cval)
    inside = overlap_mask(fixed.shape, moving.shape, est.T)
    if est.field is not None:
        inside &= _registered(np.ones_like(moving), est.T, est.field, fixed.shape, 0.0) > 0.999
    before = similarity(fixed, moving)
    after = similarity(fixed, reg, inside)
    metrics = {f"{k}_before": v for k, v in before.items()}
    metrics.update({f"{k}_after": v for k, v in after.items()})
    if est.field is None:
        p = decompose(est.T, center=center_of(fixed.shape), spacing=spacing)
        for k in ("ty_px", "tx_px", "theta_deg", "scale", "flip"):
            metrics[k] = p[k]
        if spacing is not None:
            metrics["ty_mm"], metrics["tx_mm"] = p["ty_mm"], p["tx_mm"]
    metrics.update({k: float(v) for k, v in est.info.items()})
    metrics["overlap_fraction"] = float(inside.mean())
    extras = {"T": est.T, "field": est.field, "overlap": inside, **est.extras}
    return Result(image=reg.astype(np.float32), metrics=metrics, notes=list(est.notes), extras=extras)


_PAIR_DOMAIN = "any real values in physical units; both images on the fixed grid (same shape)"


@register(
    "registration.phase_correlation",
    title="Phase correlation (translation)",
    inputs="pair",
    domain=_PAIR_DOMAIN + "; same modality (Fourier phase of mean-removed images)",
    params=[
        Param("upsample_factor", 100, min=1, max=1000, help="sub-pixel precision = 1/upsample_factor px"),
        Param("window", False, help="Hann window before the FFT (for non-periodic content with strong edges)"),
    ],
)
def phase_correlation(image: np.ndarray, *, upsample_factor: int = 100, window: bool = False,
                      moving: np.ndarray | None = None, spacing: Spacing = None) -> Result:
    """Translation by phase correlation with matrix-multiply DFT upsampling."""
    mv = _need_moving(moving, np.shape(image))
    return _result(image, mv, estimate_translation(image, mv, upsample_factor=upsample_factor, window=window), spacing)


@register(
    "registration.fourier_mellin",
    title="Fourier–Mellin (rotation + scale + translation)",
    inputs="pair",
    slow=True,
    domain=_PAIR_DOMAIN + "; same modality, square pixels",
    params=[
        Param("allow_scale", True, help="estimate a scale change as well as the rotation"),
        Param("upsample_factor", 100, min=1, max=1000, help="sub-pixel precision of the final translation"),
    ],
)
def fourier_mellin(image: np.ndarray, *, allow_scale: bool = True, upsample_factor: int = 100,
                   moving: np.ndarray | None = None, spacing: Spacing = None) -> Result:
    """Rotation and scale from log-polar phase correlation of the magnitude spectra, then translation."""
    mv = _need_moving(moving, np.shape(image))
    return _result(image, mv, estimate_rotation_scale(image, mv, allow_scale=allow_scale, upsample_factor=upsample_factor), spacing)


@register(
    "registration.flip",
    title="Flip detection (reflections + Fourier–Mellin)",
    inputs="pair",
    slow=True,
    domain=_PAIR_DOMAIN + "; NCC for same modality, NMI across modalities",
    params=[
        Param("base", "rotation_scale", options=_FLIP_BASES, help="registration run for each reflection"),
        Param("metric", "ncc", options=("ncc", "nmi"), help="score that picks the best reflection"),
    ],
)
def flip(image: np.ndarray, *, base: str = "rotation_scale", metric: str = "ncc",
         moving: np.ndarray | None = None, spacing: Spacing = None) -> Result:
    """Try no / column / row / both reflections of the moving image, keep the best."""
    mv = _need_moving(moving, np.shape(image))
    return _result(image, mv, estimate_flip(image, mv, base=base, metric=metric), spacing)


@register(
    "registration.intensity",
    title="Intensity-based rigid / similarity / affine (SimpleITK)",
    inputs="pair",
    slow=True,
    domain=_PAIR_DOMAIN + "; correlation for same modality, Mattes mutual information across modalities",
    params=[
        Param("transform", "rigid", options=("rigid", "similarity", "affine")),
        Param("metric", "mattes", options=INTENSITY_METRICS, help="correlation: same modality; mattes: multimodal"),
        Param("levels", 3, min=1, max=5, help="pyramid levels (shrink 2^(levels-1) … 1)"),
        Param("iterations", 200, min=10, max=2000, help="optimizer iterations per level"),
        Param("sampling", 0.25, min=0.01, max=1.0, step=0.01, help="fraction of pixels sampled per iteration"),
        Param("search_deg", 20.0, min=0.0, max=90.0, step=5.0, unit="°", help="coarse rotation search ± (starts every 10°)"),
        Param("init", "moments", options=INTENSITY_INITS,
              help="start from aligned intensity centroids, image centres, or a Fourier–Mellin estimate (same modality)"),
    ],
)
def intensity(image: np.ndarray, *, transform: str = "rigid", metric: str = "mattes", levels: int = 3, iterations: int = 200,
              sampling: float = 0.25, search_deg: float = 20.0, init: str = "moments",
              moving: np.ndarray | None = None, spacing: Spacing = None) -> Result:
    """Multi-resolution intensity optimisation with a coarse rotation search."""
    mv = _need_moving(moving, np.shape(image))
    est = intensity_register(image, mv, transform=transform, metric=metric, levels=levels, iterations=iterations,
                             sampling=sampling, search_deg=search_deg, init=init, spacing=spacing)
    return _result(image, mv, est, spacing)


@register(
    "registration.features",
    title="Keypoints + RANSAC (SIFT / ORB)",
    inputs="pair",
    slow=True,
    domain=_PAIR_DOMAIN + "; rescaled to 8 bit between each image's 0.5–99.5 % percentiles for the detector",
    params=[
        Param("detector", "sift", options=FEATURE_DETECTORS),
        Param("max_features", 2000, min=100, max=20000),
        Param("model", "similarity", options=("similarity", "affine")),
        Param("ratio", 0.8, min=0.5, max=0.95, step=0.05, help="Lowe ratio test"),
        Param("ransac_px", 3.0, min=0.5, max=20.0, step=0.5, unit="px", help="RANSAC inlier distance"),
    ],
)
def features(image: np.ndarray, *, detector: str = "sift", max_features: int = 2000, model: str = "similarity",
             ratio: float = 0.8, ransac_px: float = 3.0, moving: np.ndarray | None = None, spacing: Spacing = None) -> Result:
    """Feature matching with a RANSAC-fitted similarity or affine model."""
    mv = _need_moving(moving, np.shape(image))
    est = feature_register(image, mv, detector=detector, max_features=max_features, model=model, ratio=ratio, ransac_px=ransac_px)
    return _result(image, mv, est, spacing)


@register(
    "registration.optical_flow",
    title="Optical flow (TV-L1 / iterative Lucas–Kanade)",
    inputs="pair",
    slow=True,
    domain=_PAIR_DOMAIN + "; rescaled to [0, 1] over the joint 0.5–99.5 % range (same modality)",
    params=[
        Param("method", "tvl1", options=("tvl1", "ilk")),
        Param("attachment", 15.0, min=1.0, max=100.0, step=1.0, help="TV-L1 data-term weight (higher: less smooth)"),
        Param("radius", 7, min=2, max=30, unit="px", help="ILK window radius"),
        Param("num_warp", 5, min=1, max=20, help="warps per pyramid level"),
    ],
)
def optical_flow_op(image: np.ndarray, *, method: str = "tvl1", attachment: float = 15.0, radius: int = 7, num_warp: int = 5,
                    moving: np.ndarray | None = None, spacing: Spacing = None) -> Result:
    """Dense deformable registration by optical flow (displacement field in extras)."""
    mv = _need_moving(moving, np.shape(image))
    return _result(image, mv, optical_flow(image, mv, method=method, attachment=attachment, radius=radius, num_warp=num_warp), spacing)


@register(
    "registration.bspline",
    title="B-spline free-form deformation (SimpleITK)",
    inputs="pair",
    slow=True,
    domain=_PAIR_DOMAIN + "; correlation for same modality, Mattes mutual information across modalities",
    params=[
        Param("mesh", 8, min=2, max=32, help="control points per side"),
        Param("metric", "mattes", options=INTENSITY_METRICS),
        Param("iterations", 100, min=5, max=1000),
    ],
)
def bspline(image: np.ndarray, *, mesh: int = 8, metric: str = "mattes", iterations: int = 100,
            moving: np.ndarray | None = None, spacing: Spacing = None) -> Result:
    """Cubic B-spline deformable registration (displacement field in extras)."""
    mv = _need_moving(moving, np.shape(image))
    return _result(image, mv, bspline_register(image, mv, mesh=mesh, metric=metric, iterations=iterations, spacing=spacing), spacing)


#: method name shown to users → operation key
METHODS: dict[str, str] = {
    "Phase correlation": "registration.phase_correlation",
    "Fourier–Mellin": "registration.fourier_mellin",
    "Flip detection": "registration.flip",
    "Intensity (SimpleITK)": "registration.intensity",
    "Keypoints + RANSAC": "registration.features",
    "Optical flow": "registration.optical_flow",
    "B-spline": "registration.bspline",
}
DEFORMABLE = ("registration.optical_flow", "registration.bspline")


# ============================================================================ whole-image pipeline
@dataclass
class Registration:
    """Outcome of :func:`register_images`: ``T`` maps fixed px to the ORIGINAL moving px;
    ``result`` holds the registered image (on the fixed grid), metrics and extras;
    ``grid`` is the fixed→moving grid matrix used to resample the moving image first."""

    T: np.ndarray
    field: np.ndarray | None
    result: Result
    grid: np.ndarray
    moving_on_grid: np.ndarray
    runtime_s: float


def register_images(fixed: Any, moving: Any, key: str, params: dict[str, Any] | None = None) -> Registration:
    """Register two :class:`~analysis.image.Image` s (any shapes/spacings) with operation
    ``key``: the moving image is first resampled onto the fixed grid (fields of view centred,
    spacing-aware), registered there, and the grid matrix composed into ``T``."""
    from analysis import registry

    f = fixed.grey().astype(np.float64)
    m = moving.grey().astype(np.float64)
    G = grid_transform(f.shape, fixed.spacing, m.shape, moving.spacing)
    if m.shape == f.shape and np.allclose(G, np.eye(3)):
        m_on = m
    else:
        m_on = resample_to(m, moving.spacing, f.shape, fixed.spacing, cval=float(np.nanmin(m)))
    t0 = time.perf_counter()
    res = registry.run(key, f, params or {}, moving=m_on, spacing=fixed.spacing)
    dt = time.perf_counter() - t0
    T = G @ res.extras["T"]
    return Registration(T=T, field=res.extras.get("field"), result=res, grid=G, moving_on_grid=m_on, runtime_s=dt)


def suggest_metric(fixed_entry: dict[str, Any] | None, moving_entry: dict[str, Any] | None) -> str:
    """``correlation`` when both entries look like the same modality and contrast, else
    ``mattes`` (mutual information)."""
    if not fixed_entry or not moving_entry:
        return "mattes"
    mod = [str(e.get("modality", "") or "").upper() for e in (fixed_entry, moving_entry)]
    lab = [str(e.get("label", "") or "").lower() for e in (fixed_entry, moving_entry)]
    roles = [str(e.get("pair_role", "") or "").lower().replace("_moving", "") for e in (fixed_entry, moving_entry)]
    if str(fixed_entry.get("role", "")) == "multimodal" or str(moving_entry.get("role", "")) == "multimodal":
        same = roles[0] == roles[1]
    else:
        same = mod[0] == mod[1] and (lab[0] == lab[1] or not lab[0] or not lab[1] or str(fixed_entry.get("role")) == "registration")
    return "correlation" if same else "mattes"


# ============================================================================ dataset-wide
def pair_items(dataset: Any) -> list[dict[str, Any]]:
    """Registration work items of a dataset: every ``fixed``/``moving`` pair, and in
    multimodal groups the first image (``t1``) against every other image that carries a
    known transform (``t2_moving``, ``pet``, ``pet_moving`` …). Items are picklable dicts
    ``{id, name, label, modality, role, fixed, moving}``."""
    e = dataset.entries
    if "pair_id" not in e.columns:
        return []
    items: list[dict[str, Any]] = []
    for pid, grp in e[e["pair_id"].fillna("").astype(str) != ""].groupby("pair_id", sort=False):
        recs = grp.to_dict("records")
        if any(str(r.get("role", "")) == "reference" for r in recs):
            continue  # clean/degraded groups are enhancement references, not registration pairs
        for r in recs:
            r["root"] = str(dataset.root)
        by_role = {str(r.get("pair_role", "")): r for r in recs}
        combos: list[tuple[dict, dict]] = []
        if "fixed" in by_role and "moving" in by_role:
            combos.append((by_role["fixed"], by_role["moving"]))
        elif len(recs) >= 2:
            ref = by_role.get("t1", recs[0])
            for r in recs:
                if r is ref:
                    continue
                if str(r.get("transform", "") or "") or str(r.get("field_path", "") or ""):
                    combos.append((ref, r))
            if not combos:
                combos.append((recs[0], recs[1]))
        for fx, mv in combos:
            items.append({
                "id": f"{pid}:{mv.get('pair_role', '') or mv.get('id')}",
                "name": f"{fx.get('name') or fx.get('id')} ← {mv.get('name') or mv.get('id')}",
                "label": str(mv.get("label", "") or ""),
                "modality": f"{fx.get('modality', '')}/{mv.get('modality', '')}",
                "role": str(mv.get("role", "") or ""),
                "fixed": fx,
                "moving": mv,
            })
    return items


def true_transform(fixed_entry: dict[str, Any], moving_entry: dict[str, Any]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Known ground truth of a pair: (T, field) from the moving entry's ``transform`` /
    ``field_path`` columns (None, None when unknown)."""
    from analysis.dataset import load_aux

    T = None
    raw = str(moving_entry.get("transform", "") or "")
    if raw:
        T = transform_from_json(raw)
    fld = load_aux(moving_entry, "field_path") if str(moving_entry.get("field_path", "") or "") else None
    if fld is not None and (np.ndim(fld) != 3 or np.shape(fld)[0] != 2):
        fld = None  # e.g. a bias field stored for enhancement, not a displacement
    if fld is not None and T is None:
        T = np.eye(3)
    return T, (None if fld is None else np.asarray(fld, np.float64))


def register_pair_task(item: dict[str, Any], *, key: str, params_json: str = "{}", metric: str = "auto",
                       tre_step: int = 0, converged_px: float = 2.0) -> dict[str, Any]:
    """Batch task (module level, picklable through :class:`analysis.batch.CallTask`): load a
    pair, register it with operation ``key``, measure metric improvement, runtime and — when
    the exact transform or field is known — TRE on a grid of points."""
    from analysis.dataset import load_entry

    params = json.loads(params_json)
    fx, mv = item["fixed"], item["moving"]
    f_img, m_img = load_entry(fx), load_entry(mv)
    f_img = f_img.middle_plane()
    m_img = m_img.middle_plane()
    if key == "registration.intensity" or key == "registration.bspline":
        if metric == "auto" or "metric" not in params:
            params = {**params, "metric": suggest_metric(fx, mv) if metric == "auto" else metric}
    reg = register_images(f_img, m_img, key, params)
    r = reg.result
    row: dict[str, Any] = {
        "method": key.split(".", 1)[1],
        "runtime_s": reg.runtime_s,
        "ncc_before": r.metrics.get("ncc_before"),
        "ncc_after": r.metrics.get("ncc_after"),
        "nmi_before": r.metrics.get("nmi_before"),
        "nmi_after": r.metrics.get("nmi_after"),
        "nmi_gain": r.metrics.get("nmi_after", np.nan) - r.metrics.get("nmi_before", np.nan),
    }
    if "metric" in params:
        row["metric_used"] = params["metric"]
    if reg.field is None:  # parameters of the transform on the fixed grid (physical angles)
        p = decompose(r.extras["T"], center=center_of(f_img.shape2d), spacing=f_img.spacing)
        row.update({"theta_deg": p["theta_deg"], "scale": p["scale"], "ty_px": p["ty_px"], "tx_px": p["tx_px"]})
    T_true, field_true = true_transform(fx, mv)
    if T_true is not None:
        shape = f_img.shape2d
        pts = grid_points(shape, tre_step or None)
        grid_field = reg.field
        t = tre(reg.T, T_true, pts, moving_spacing=m_img.spacing, fixed_spacing=f_img.spacing,
                field_est=grid_field, field_true=field_true)
        row.update({"tre_median_px": t["median_px"], "tre_max_px": t["max_px"], "tre_p95_px": t["p95_px"]})
        if "median_mm" in t:
            row["tre_median_mm"] = t["median_mm"]
        row["converged"] = bool(t["median_px"] < converged_px)
    return row
