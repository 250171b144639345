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
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import ndimage as ndi

from analysis.registry import Param, Result, register

__all__ = [
    "Spacing", "center_of", "make_transform", "translation", "decompose", "grid_transform", "warp",
    "warp_field", "resample_to", "overlap_mask", "transform_points",
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
    return ndi.affine_transform(a, T[:2, :2], offset=T[:2, 2], output_shape=shape, order=order, cval=cval,
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
