"""Radiomics-style image features in physical units (2-D), as registry entries.

Groups (each a registry operation with ``output="table"`` returning
``Result(metrics={name: value})``; whole image, or inside ``mask`` when given):

* ``features.first_order`` — mean, std, skewness, kurtosis, percentiles, range, energy,
  entropy and uniformity. Values are in the image's physical units (HU for CT); entropy and
  uniformity use an **explicit bin width** in those units (pyradiomics' fixed-bin-width rule:
  bins start at ``floor(min / w) * w``).
* ``features.glcm`` — grey-level co-occurrence features (contrast, dissimilarity, homogeneity,
  energy, correlation, ASM) averaged over the chosen distances and angles, after quantising
  with an explicit bin width (physical units) or bin count (32–64 levels by default: 256 levels
  cost ~10× more and give noisier matrices on small regions).
* ``features.lbp`` — uniform local binary pattern histogram (P neighbours, radius R).
* ``features.hog`` — summary of histograms of oriented gradients.
* ``features.shape`` — area (mm²), perimeter (mm), eccentricity, solidity, compactness of a
  mask, honouring anisotropic pixel spacing.

Optionally an intensity *resegmentation range* (``range_min``/``range_max``, physical units)
restricts every group to pixels inside that window (e.g. soft tissue −100..200 HU keeps air and
bone out of a head CT's statistics).

:func:`compute_features` computes any set of groups with prefixed names (``fo_``, ``glcm_``,
``lbp_``, ``hog_``, ``shape_``); :func:`extract_entry` does it for a dataset entry and is the
picklable task for :func:`analysis.batch.batch_map`. :func:`patch_features` gives the same
features for sliding patches (annotation maps). :func:`bin_advice` and
:func:`glcm_bin_sensitivity` are the bin-width advisor's computations.

pyradiomics does not install here; conventions follow it where it has one (kurtosis is the
non-excess m4/m2², 3 for a Gaussian; energy is Σx²; GLCM symmetric and averaged over angles).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from analysis.registry import Param, Result, register

__all__ = [
    "FeatureSettings",
    "quantize",
    "first_order_values",
    "glcm_values",
    "lbp_values",
    "hog_values",
    "shape_values",
    "compute_features",
    "extract_entry",
    "patch_features",
    "feature_columns",
    "bins_per_image",
    "bin_advice",
    "glcm_bin_sensitivity",
    "signature",
    "patch_corners",
    "window_sums",
    "signature_matrix",
    "MAX_LEVELS",
    "default_settings",
    "features_for_image",
    "largest_region",
    "roi_mask",
    "RANGE_PRESETS",
    "ROI_MODES",
]

#: refuse quantisations with more grey levels than this (a too-small bin width)
MAX_LEVELS = 1024
PERCENTILES = (1, 10, 25, 50, 75, 90, 99)
GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation", "ASM")
ANGLE_SETS = {
    "0,45,90,135": (0.0, 45.0, 90.0, 135.0),
    "0": (0.0,),
    "0,90": (0.0, 90.0),
    "45,135": (45.0, 135.0),
}
DISTANCE_SETS = {"1": (1,), "1,2": (1, 2), "1,2,4": (1, 2, 4), "2": (2,), "3": (3,)}
GROUPS = ("first_order", "glcm", "lbp", "hog", "shape")
ROI_MODES = {
    "whole": "whole image",
    "mask": "inside the entry's mask (whole image when it has none)",
    "largest": "largest connected region within the resegmentation range (holes filled, eroded)",
}
#: resegmentation presets (physical units); "CT soft tissue" keeps air and bone out of head/body CT
RANGE_PRESETS: dict[str, tuple[float | None, float | None]] = {
    "none": (None, None),
    "CT soft tissue (−20..150 HU)": (-20.0, 150.0),
    "CT broad soft tissue (−100..200 HU)": (-100.0, 200.0),
    "CT bone (≥ 300 HU)": (300.0, None),
}
PREFIX = {"first_order": "fo_", "glcm": "glcm_", "lbp": "lbp_", "hog": "hog_", "shape": "shape_"}


# ----------------------------------------------------------------------------- helpers
def _roi(a: np.ndarray, mask: np.ndarray | None, range_min: float | None, range_max: float | None) -> np.ndarray:
    """Boolean region: finite pixels, inside ``mask`` and inside the resegmentation range."""
    a = np.asarray(a)
    roi = np.isfinite(a) if a.dtype.kind == "f" else np.ones(a.shape, bool)
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != a.shape:
            raise ValueError(f"mask shape {m.shape} does not match the image {a.shape}")
        roi &= m.astype(bool)
    if range_min is not None:
        roi &= a >= range_min
    if range_max is not None:
        roi &= a <= range_max
    if range_min is not None and range_max is not None and range_min >= range_max:
        raise ValueError(f"parameter 'range_min' ({range_min}) must be below 'range_max' ({range_max})")
    return roi


def quantize(
    a: np.ndarray,
    roi: np.ndarray | None = None,
    *,
    bin_width: float | None = None,
    bin_count: int | None = None,
) -> tuple[np.ndarray, int]:
    """Discretise ``a`` inside ``roi`` into grey levels ``0..n-1`` (``-1`` outside).

    Fixed bin width (physical units): level = ``floor(x / w) - floor(min / w)``, i.e. bin edges
    at multiples of ``w`` (pyradiomics' rule, comparable across images). Fixed bin count: ``n``
    equal bins over the ROI's [min, max]. Exactly one of the two must be given.
    Returns ``(levels int32, n_levels)``.
    """
    a = np.asarray(a, dtype=np.float64)
    roi = np.ones(a.shape, bool) if roi is None else np.asarray(roi, bool)
    out = np.full(a.shape, -1, np.int32)
    if not roi.any():
        return out, 1
    v = a[roi]
    lo, hi = float(v.min()), float(v.max())
    if (bin_width is None) == (bin_count is None):
        raise ValueError("give exactly one of 'bin_width' and 'bin_count'")
    if bin_width is not None:
        if not bin_width > 0:
            raise ValueError(f"parameter 'bin_width' must be > 0; got {bin_width!r}")
        base = math.floor(lo / bin_width)
        n = int(math.floor(hi / bin_width) - base + 1)
        if n > MAX_LEVELS:
            raise ValueError(
                f"parameter 'bin_width' = {bin_width:g} gives {n} grey levels over {lo:.4g}..{hi:.4g} "
                f"(more than {MAX_LEVELS}); use a wider bin or a resegmentation range"
            )
        q = np.floor(v / bin_width).astype(np.int64) - base
    else:
        n = int(bin_count)  # type: ignore[arg-type]
        if n < 2:
            raise ValueError(f"parameter 'bin_count' must be ≥ 2; got {bin_count!r}")
        if hi > lo:
            q = np.floor((v - lo) / (hi - lo) * n).astype(np.int64)
        else:
            q = np.zeros(v.shape, np.int64)
    out[roi] = np.clip(q, 0, n - 1)
    return out, n


def _entropy_bits(hist: np.ndarray) -> float:
    """Shannon entropy (bits) of a histogram of counts or weights."""
    h = np.asarray(hist, dtype=np.float64)
    tot = h.sum()
    if tot <= 0:
        return 0.0
    p = h[h > 0] / tot
    return float(-(p * np.log2(p)).sum())


def _entropy_uniformity(levels: np.ndarray) -> tuple[float, float]:
    counts = np.bincount(levels)
    p = counts[counts > 0] / levels.size
    return _entropy_bits(counts), float((p * p).sum())


# ----------------------------------------------------------------------------- first order
def first_order_values(
    a: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    bin_width: float = 25.0,
    range_min: float | None = None,
    range_max: float | None = None,
    spacing: tuple[float, float] | None = None,
) -> dict[str, float]:
    """First-order statistics of the pixels in the region, in physical units.

    Population moments (ddof 0): ``skewness = m3 / m2^1.5``, ``kurtosis = m4 / m2²``
    (not excess: 3 for a Gaussian). ``energy = Σ x²`` (units²), ``rms = sqrt(mean x²)``;
    ``entropy`` (bits) and ``uniformity = Σ p²`` over bins of width ``bin_width``.
    """
    roi = _roi(a, mask, range_min, range_max)
    v = np.asarray(a, dtype=np.float64)[roi]
    n = int(v.size)
    out: dict[str, float] = {"n_pixels": float(n)}
    if spacing is not None:
        out["roi_area_mm2"] = float(n * spacing[0] * spacing[1])
    if n == 0:
        nan = float("nan")
        for k in ("mean", "std", "skewness", "kurtosis", "min", "max", "range", "iqr", "mad", "rms", "energy",
                  "entropy", "uniformity", *[f"p{p}" for p in PERCENTILES]):
            out[k] = nan
        return out
    mean = float(v.mean())
    d = v - mean
    m2 = float(np.mean(d * d))
    m3 = float(np.mean(d ** 3))
    m4 = float(np.mean(d ** 4))
    pct = np.percentile(v, PERCENTILES)
    out.update({
        "mean": mean,
        "std": math.sqrt(m2),
        "skewness": m3 / m2 ** 1.5 if m2 > 0 else 0.0,
        "kurtosis": m4 / (m2 * m2) if m2 > 0 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "range": float(v.max() - v.min()),
        "iqr": float(pct[PERCENTILES.index(75)] - pct[PERCENTILES.index(25)]),
        "mad": float(np.mean(np.abs(d))),
        "rms": float(math.sqrt(np.mean(v * v))),
        "energy": float(np.sum(v * v)),
    })
    for p, val in zip(PERCENTILES, pct):
        out[f"p{p}"] = float(val)
    levels, _ = quantize(v, bin_width=bin_width)
    out["entropy"], out["uniformity"] = _entropy_uniformity(levels)
    return out


# ----------------------------------------------------------------------------- GLCM
def _glcm_props(P: np.ndarray) -> dict[str, float]:
    """Haralick-style properties of one normalised co-occurrence matrix ``P`` (n×n)."""
    n = P.shape[0]
    i, j = np.ogrid[0:n, 0:n]
    diff = (i - j).astype(np.float64)
    asm = float((P * P).sum())
    mu_i = float((i * P).sum())
    mu_j = float((j * P).sum())
    var_i = float((((i - mu_i) ** 2) * P).sum())
    var_j = float((((j - mu_j) ** 2) * P).sum())
    if var_i < 1e-15 or var_j < 1e-15:
        corr = 1.0  # constant region: perfectly (trivially) correlated — scikit-image's convention
    else:
        corr = float((((i - mu_i) * (j - mu_j)) * P).sum() / math.sqrt(var_i * var_j))
    return {
        "contrast": float((P * diff * diff).sum()),
        "dissimilarity": float((P * np.abs(diff)).sum()),
        "homogeneity": float((P / (1.0 + diff * diff)).sum()),
        "energy": math.sqrt(asm),
        "correlation": corr,
        "ASM": asm,
    }


def glcm_values(
    a: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    bin_mode: str = "count",
    bin_count: int = 32,
    bin_width: float = 10.0,
    distances: Sequence[int] = (1,),
    angles_deg: Sequence[float] = (0.0, 45.0, 90.0, 135.0),
    symmetric: bool = True,
    range_min: float | None = None,
    range_max: float | None = None,
    levels: tuple[np.ndarray, int] | None = None,
) -> dict[str, float]:
    """GLCM properties averaged over ``distances`` (px) × ``angles_deg``.

    Only pairs whose *both* pixels lie in the region count (pixels outside are mapped to an
    extra grey level whose row and column are dropped). ``homogeneity`` is Σ P/(1+(i−j)²);
    ``energy`` is √ASM (scikit-image's definitions). Returns ``n_levels`` too.
    """
    from skimage.feature import graycomatrix

    if levels is None:
        roi = _roi(a, mask, range_min, range_max)
        q, n = quantize(a, roi, bin_width=bin_width if bin_mode == "width" else None,
                        bin_count=bin_count if bin_mode == "count" else None)
    else:
        q, n = levels
    if not (q >= 0).any():
        return {**{k: float("nan") for k in GLCM_PROPS}, "n_levels": float(n)}
    img = np.where(q >= 0, q, n)
    img = img.astype(np.uint16 if n + 1 > 256 else np.uint8)
    angles = [math.radians(t) for t in angles_deg]
    M = graycomatrix(img, list(distances), angles, levels=n + 1, symmetric=symmetric, normed=False)
    M = M[:n, :n].astype(np.float64)
    acc: dict[str, list[float]] = {k: [] for k in GLCM_PROPS}
    for di in range(M.shape[2]):
        for ai in range(M.shape[3]):
            s = M[:, :, di, ai].sum()
            if s <= 0:
                continue
            for k, v in _glcm_props(M[:, :, di, ai] / s).items():
                acc[k].append(v)
    out = {k: (float(np.mean(v)) if v else float("nan")) for k, v in acc.items()}
    out["n_levels"] = float(n)
    return out


# ----------------------------------------------------------------------------- LBP, HOG
def _rank_uint16(a: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """Order-preserving integer version of ``a`` over the ROI range (LBP needs integers)."""
    a = np.asarray(a, dtype=np.float64)
    v = a[roi]
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    span = hi - lo if hi > lo else 1.0
    x = np.clip((np.nan_to_num(a, nan=lo) - lo) / span, 0.0, 1.0)
    return np.round(x * 65535.0).astype(np.uint16)


def lbp_values(
    a: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    P: int = 8,
    R: float = 1.0,
    range_min: float | None = None,
    range_max: float | None = None,
) -> dict[str, float]:
    """Histogram (fractions) of rotation-invariant uniform LBP codes ``0..P+1`` in the region,
    plus its entropy (bits). Code ``P+1`` collects the non-uniform patterns."""
    from skimage.feature import local_binary_pattern

    roi = _roi(a, mask, range_min, range_max)
    out: dict[str, float] = {}
    if not roi.any():
        return {**{f"{k}": float("nan") for k in range(P + 2)}, "entropy": float("nan")}
    codes = local_binary_pattern(_rank_uint16(a, roi), int(P), float(R), method="uniform")
    h = np.bincount(codes[roi].astype(np.int64), minlength=P + 2)[: P + 2].astype(np.float64)
    h /= h.sum()
    for k in range(P + 2):
        out[str(k)] = float(h[k])
    out["entropy"] = _entropy_bits(h)
    return out


def hog_values(
    a: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    orientations: int = 9,
    cell: int = 16,
    range_min: float | None = None,
    range_max: float | None = None,
) -> dict[str, float]:
    """Summary of HOG descriptors: mean/std/p90 of the block-normalised cell histograms,
    entropy (bits) and dominance (max share) of the overall orientation histogram.

    Domain: the region's intensities are mapped linearly to [0, 1] over its own range (or the
    resegmentation range); inside a mask the bounding box of the mask is used."""
    from skimage.feature import hog

    roi = _roi(a, mask, range_min, range_max)
    nan = {k: float("nan") for k in ("mean", "std", "p90", "orient_entropy", "orient_dominance")}
    if not roi.any():
        return nan
    a = np.asarray(a, dtype=np.float64)
    v = a[roi]
    lo = range_min if range_min is not None else float(v.min())
    hi = range_max if range_max is not None else float(v.max())
    x = np.clip((np.nan_to_num(a, nan=lo) - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
    if mask is not None:
        rows, cols = np.nonzero(np.asarray(mask, bool))
        r0, r1 = max(rows.min() - cell // 2, 0), min(rows.max() + cell // 2 + 1, a.shape[0])
        c0, c1 = max(cols.min() - cell // 2, 0), min(cols.max() + cell // 2 + 1, a.shape[1])
        x = x[r0:r1, c0:c1]
    if min(x.shape) < 2 * cell:
        cell = max(2, min(x.shape) // 2)
    if min(x.shape) < 4:
        return nan
    H = hog(x, orientations=int(orientations), pixels_per_cell=(cell, cell), cells_per_block=(2, 2),
            feature_vector=False)
    flat = H.reshape(-1)
    orient = H.reshape(-1, int(orientations)).sum(axis=0)
    tot = orient.sum()
    ent = _entropy_bits(orient)
    dom = float(orient.max() / tot) if tot > 0 else float("nan")
    return {"mean": float(flat.mean()), "std": float(flat.std()), "p90": float(np.percentile(flat, 90)),
            "orient_entropy": ent, "orient_dominance": dom}


# ----------------------------------------------------------------------------- shape
def _perimeter_mm(mask: np.ndarray, spacing: tuple[float, float]) -> float:
    """Contour length of the mask in mm (holes count).

    The iso-0.5 contour (marching squares) of the mask blurred by a 1-px Gaussian: on raw pixel
    staircases marching squares overestimates a disc's perimeter by ~10 %; the blurred contour is
    within ~1 % for discs of radius ≥ 5 px. Masks under 50 px use the raw contour (the blur would
    shrink them)."""
    from skimage.measure import find_contours

    padded = np.pad(mask.astype(np.float32), 3)
    if int(mask.sum()) >= 50:
        padded = ndi.gaussian_filter(padded, 1.0)
    total = 0.0
    for c in find_contours(padded, 0.5):
        d = np.diff(c, axis=0) * np.asarray(spacing, dtype=np.float64)
        total += float(np.hypot(d[:, 0], d[:, 1]).sum())
    return total


def shape_values(mask: np.ndarray, *, spacing: tuple[float, float] | None = None) -> dict[str, float]:
    """Shape of a binary mask in physical units (mm when ``spacing`` is known, else px).

    ``area_mm2`` = pixels × row spacing × col spacing; ``perimeter_mm`` = contour length in mm
    (see :func:`_perimeter_mm`); ``eccentricity`` from the second moments of the pixel centres in mm
    (0 for a disc, →1 for a line); ``solidity`` = area / convex-hull area (invariant to axis
    scaling); ``compactness`` = 4π·area / perimeter² (1 for a disc).
    """
    from skimage.measure import regionprops

    m = np.asarray(mask, bool)
    sp = tuple(float(s) for s in spacing) if spacing is not None else (1.0, 1.0)
    n = int(m.sum())
    if n == 0:
        return {k: float("nan") for k in ("area_mm2", "perimeter_mm", "eccentricity", "solidity", "compactness",
                                         "equivalent_diameter_mm", "major_axis_mm", "minor_axis_mm")} | {"n_components": 0.0}
    area = n * sp[0] * sp[1]
    perim = _perimeter_mm(m, sp)  # type: ignore[arg-type]
    rr, cc = np.nonzero(m)
    y = rr * sp[0]
    x = cc * sp[1]
    cov = np.cov(np.vstack([y, x]), bias=True) if n > 1 else np.zeros((2, 2))
    ev = np.sort(np.linalg.eigvalsh(cov))[::-1]
    ev = np.clip(ev, 0.0, None)
    ecc = math.sqrt(1.0 - ev[1] / ev[0]) if ev[0] > 0 else 0.0
    props = regionprops(m.astype(np.uint8))[0]
    _, ncomp = ndi.label(m)
    return {
        "area_mm2": float(area),
        "perimeter_mm": float(perim),
        "eccentricity": float(ecc),
        "solidity": float(props.solidity),
        "compactness": float(4.0 * math.pi * area / perim ** 2) if perim > 0 else float("nan"),
        "equivalent_diameter_mm": float(2.0 * math.sqrt(area / math.pi)),
        "major_axis_mm": float(4.0 * math.sqrt(ev[0])),
        "minor_axis_mm": float(4.0 * math.sqrt(ev[1])),
        "n_components": float(ncomp),
    }


# ----------------------------------------------------------------------------- registry entries
_RANGE_PARAMS = [
    Param("range_min", None, optional=True, unit="image units", label="resegmentation min",
          help="Only pixels ≥ this value count (e.g. −100 HU keeps air out). Empty: no lower limit."),
    Param("range_max", None, optional=True, unit="image units", label="resegmentation max",
          help="Only pixels ≤ this value count (e.g. 200 HU keeps bone out). Empty: no upper limit."),
]


@register(
    "features.first_order",
    title="First-order statistics",
    domain="physical units (HU for CT); bin width for entropy/uniformity in the same units",
    output="table",
    params=[
        Param("bin_width", 25.0, min=0.001, max=10000.0, log=True, unit="image units",
              help="Histogram bin width for entropy and uniformity (pyradiomics default 25 for HU)."),
        *_RANGE_PARAMS,
    ],
)
def first_order(image, *, bin_width=25.0, range_min=None, range_max=None, mask=None, spacing=None):
    """Mean, std, skewness, kurtosis, percentiles, range, energy, entropy of the region."""
    vals = first_order_values(image, mask=mask, bin_width=bin_width, range_min=range_min, range_max=range_max,
                              spacing=spacing)
    notes = [f"{int(vals['n_pixels'])} pixels {'inside the mask' if mask is not None else 'in the image'}"
             + (" within the resegmentation range" if range_min is not None or range_max is not None else "")]
    return Result(metrics=vals, notes=notes)


@register(
    "features.glcm",
    title="GLCM texture",
    domain="physical units, quantised by an explicit bin width (image units) or bin count over the region's range",
    output="table",
    params=[
        Param("bin_mode", "count", options=("count", "width"), help="Fixed bin count over the region's range, or fixed bin width in image units."),
        Param("bin_count", 32, min=2, max=256, help="Grey levels when bin mode is 'count' (32–64 is ~10× cheaper than 256)."),
        Param("bin_width", 10.0, min=0.001, max=10000.0, log=True, unit="image units", help="Bin width when bin mode is 'width'."),
        Param("distances", "1", options=tuple(DISTANCE_SETS), unit="px", help="Pixel offsets (averaged)."),
        Param("angles", "0,45,90,135", options=tuple(ANGLE_SETS), unit="°", help="Directions (averaged)."),
        Param("symmetric", True, help="Count each pair in both directions."),
        *_RANGE_PARAMS,
    ],
)
def glcm(image, *, bin_mode="count", bin_count=32, bin_width=10.0, distances="1", angles="0,45,90,135", symmetric=True,
         range_min=None, range_max=None, mask=None):
    """Contrast, dissimilarity, homogeneity, energy, correlation, ASM of the co-occurrence matrix."""
    vals = glcm_values(image, mask=mask, bin_mode=bin_mode, bin_count=int(bin_count), bin_width=float(bin_width),
                       distances=DISTANCE_SETS[distances], angles_deg=ANGLE_SETS[angles], symmetric=symmetric,
                       range_min=range_min, range_max=range_max)
    return Result(metrics=vals, notes=[f"{int(vals['n_levels'])} grey levels"])


@register(
    "features.lbp",
    title="Local binary patterns",
    domain="any real values (only the order of neighbouring values matters)",
    output="table",
    params=[
        Param("P", 8, min=4, max=24, help="Number of circular neighbours."),
        Param("R", 1.0, min=0.5, max=5.0, step=0.5, unit="px", help="Radius of the circle."),
        *_RANGE_PARAMS,
    ],
)
def lbp(image, *, P=8, R=1.0, range_min=None, range_max=None, mask=None):
    """Histogram of uniform rotation-invariant LBP codes in the region."""
    return Result(metrics=lbp_values(image, mask=mask, P=int(P), R=float(R), range_min=range_min, range_max=range_max))


@register(
    "features.hog",
    title="HOG summary",
    domain="region intensities mapped linearly to [0, 1] over their range (or the resegmentation range)",
    output="table",
    params=[
        Param("orientations", 9, min=4, max=18),
        Param("cell", 16, min=4, max=64, unit="px", help="Cell size."),
        *_RANGE_PARAMS,
    ],
)
def hog_summary(image, *, orientations=9, cell=16, range_min=None, range_max=None, mask=None):
    """Mean, spread and orientation entropy of histograms of oriented gradients."""
    return Result(metrics=hog_values(image, mask=mask, orientations=int(orientations), cell=int(cell),
                                     range_min=range_min, range_max=range_max))


@register(
    "features.shape",
    title="Shape of the mask",
    domain="a binary mask (context 'mask', else the largest region ≥ threshold in image units); lengths in mm from the pixel spacing",
    output="table",
    params=[
        Param("threshold", None, optional=True, unit="image units",
              help="Without a mask: the structure is the largest connected region ≥ this value (empty: Otsu's threshold)."),
    ],
)
def shape(image, *, threshold=None, mask=None, spacing=None):
    """Area (mm²), perimeter (mm), eccentricity, solidity, compactness of the structure."""
    if mask is None:
        a = np.asarray(image, dtype=np.float64)
        if threshold is None:
            from skimage.filters import threshold_otsu

            finite = a[np.isfinite(a)]
            threshold = float(threshold_otsu(finite)) if finite.size and np.ptp(finite) > 0 else float("inf")
        lab, n = ndi.label(a >= threshold)
        if n == 0:
            raise ValueError(f"features.shape: no pixel ≥ parameter 'threshold' ({threshold})")
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        mask = lab == int(sizes.argmax())
    vals = shape_values(mask, spacing=spacing)
    notes = [] if spacing is not None else ["pixel spacing unknown: lengths in px, areas in px²"]
    return Result(metrics=vals, mask=np.asarray(mask, bool), notes=notes)


# ----------------------------------------------------------------------------- settings & extraction
@dataclass(frozen=True)
class FeatureSettings:
    """Everything that determines a feature table (hashable: it is part of cache keys)."""

    groups: tuple[str, ...] = ("first_order", "glcm", "lbp", "hog")
    roi: str = "whole"  # whole | mask (entry's mask_path; whole image when an entry has none) | largest
    roi_erode_mm: float = 2.0  # roi "largest": erosion of the auto region (drops partial-volume rims)
    range_min: float | None = None
    range_max: float | None = None
    fo_bin_width: float = 25.0
    glcm_bin_mode: str = "count"
    glcm_bin_count: int = 32
    glcm_bin_width: float = 10.0
    glcm_distances: str = "1"
    glcm_angles: str = "0,45,90,135"
    lbp_P: int = 8
    lbp_R: float = 1.0
    hog_cell: int = 16

    def __post_init__(self) -> None:
        bad = [g for g in self.groups if g not in GROUPS]
        if bad:
            raise ValueError(f"unknown feature group(s) {bad}; choose from {list(GROUPS)}")
        if self.roi not in ROI_MODES:
            raise ValueError(f"parameter 'roi' must be one of {list(ROI_MODES)}; got {self.roi!r}")
        if self.range_min is not None and self.range_max is not None and self.range_min >= self.range_max:
            raise ValueError(f"parameter 'range_min' ({self.range_min}) must be below 'range_max' ({self.range_max})")
        if self.glcm_distances not in DISTANCE_SETS:
            raise ValueError(f"parameter 'glcm_distances' must be one of {list(DISTANCE_SETS)}")
        if self.glcm_angles not in ANGLE_SETS:
            raise ValueError(f"parameter 'glcm_angles' must be one of {list(ANGLE_SETS)}")

    def as_kwargs(self) -> dict[str, Any]:
        d = asdict(self)
        d["groups"] = tuple(d["groups"])
        return d

    @classmethod
    def from_kwargs(cls, **kw: Any) -> "FeatureSettings":
        names = {f.name for f in fields(cls)}
        unknown = set(kw) - names
        if unknown:
            from analysis.registry import did_you_mean

            k = sorted(unknown)[0]
            raise ValueError(f"unknown feature setting '{k}'" + did_you_mean(k, names))
        if "groups" in kw:
            kw["groups"] = tuple(kw["groups"])
        return cls(**kw)


def default_settings(modality: str = "", units: str = "") -> FeatureSettings:
    """The default feature settings for a dataset: CT (HU) gets the soft-tissue
    resegmentation range (air and bone dominate whole-slice statistics otherwise); other
    modalities use the whole image."""
    if str(modality).upper() == "CT" or str(units) == "HU":
        lo, hi = RANGE_PRESETS["CT soft tissue (−20..150 HU)"]
        return FeatureSettings(range_min=lo, range_max=hi)
    return FeatureSettings()


def largest_region(a: np.ndarray, range_min: float | None, range_max: float | None, *,
                   erode_mm: float = 2.0, spacing: tuple[float, float] | None = None) -> np.ndarray:
    """Automatic ROI: the largest connected region of pixels within the range, holes filled,
    eroded by ``erode_mm`` (px when spacing is unknown). E.g. the brain of a head CT for the
    soft-tissue range (the skull separates it from the scalp)."""
    inr = _roi(a, None, range_min, range_max)
    lab, n = ndi.label(inr)
    if n == 0:
        return np.zeros(inr.shape, bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    m = ndi.binary_fill_holes(lab == int(sizes.argmax()))
    if erode_mm > 0:
        sp = spacing or (1.0, 1.0)
        ry, rx = erode_mm / sp[0], erode_mm / sp[1]
        iy, ix = int(math.floor(ry)), int(math.floor(rx))
        yy, xx = np.ogrid[-iy:iy + 1, -ix:ix + 1]
        se = (yy / max(ry, 1e-9)) ** 2 + (xx / max(rx, 1e-9)) ** 2 <= 1.0
        if se.sum() > 1:
            m = ndi.binary_erosion(m, structure=se)
    return m


def roi_mask(a: np.ndarray, settings: FeatureSettings, *, mask: np.ndarray | None = None,
             spacing: tuple[float, float] | None = None) -> np.ndarray | None:
    """The mask the features use for ``settings.roi`` (None = whole image)."""
    if settings.roi == "mask":
        return mask if mask is not None and np.asarray(mask).any() else None
    if settings.roi == "largest":
        return largest_region(a, settings.range_min, settings.range_max, erode_mm=settings.roi_erode_mm, spacing=spacing)
    return None


def compute_features(
    a: np.ndarray,
    settings: FeatureSettings | None = None,
    *,
    mask: np.ndarray | None = None,
    spacing: tuple[float, float] | None = None,
    shape_mask: np.ndarray | None = None,
) -> dict[str, float]:
    """All feature groups of ``settings`` for one 2-D array, as ``{prefix_name: value}``.

    ``mask`` is the region the intensity/texture groups use (None: whole image); the shape
    group describes ``shape_mask`` (default: ``mask``)."""
    s = settings or FeatureSettings()
    a = np.asarray(a, dtype=np.float32)
    out: dict[str, float] = {}
    rng = dict(range_min=s.range_min, range_max=s.range_max)
    if "first_order" in s.groups:
        fo = first_order_values(a, mask=mask, bin_width=s.fo_bin_width, spacing=spacing, **rng)
        out.update({f"fo_{k}": v for k, v in fo.items() if k not in ("n_pixels", "roi_area_mm2")})
    if "glcm" in s.groups:
        g = glcm_values(a, mask=mask, bin_mode=s.glcm_bin_mode, bin_count=s.glcm_bin_count, bin_width=s.glcm_bin_width,
                        distances=DISTANCE_SETS[s.glcm_distances], angles_deg=ANGLE_SETS[s.glcm_angles], **rng)
        out.update({f"glcm_{k}": v for k, v in g.items() if k != "n_levels"})
    if "lbp" in s.groups:
        out.update({f"lbp_{k}": v for k, v in lbp_values(a, mask=mask, P=s.lbp_P, R=s.lbp_R, **rng).items()})
    if "hog" in s.groups:
        out.update({f"hog_{k}": v for k, v in hog_values(a, mask=mask, cell=s.hog_cell, **rng).items()})
    if "shape" in s.groups:
        sm = shape_mask if shape_mask is not None else mask
        if sm is not None and np.asarray(sm).any():
            sv = shape_values(sm, spacing=spacing)
        else:
            sv = {k: float("nan") for k in shape_values(np.ones((3, 3), bool))}
        out.update({f"shape_{k}": v for k, v in sv.items()})
    return out


def signature(a: np.ndarray, size: int = 16) -> str:
    """Near-duplicate signature of a 2-D array: a ``size``×``size`` block-mean thumbnail of the
    image mapped to [0, 1] between its 1st and 99th percentiles (so windowing and offsets do not
    matter), as 8-bit hex. Compare with :func:`signature_similarity`."""
    a = np.asarray(a, dtype=np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return "00" * size * size
    lo, hi = np.percentile(a[finite], [1, 99])
    x = np.clip((np.where(finite, a, lo) - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
    m, n = x.shape
    rows = np.linspace(0, m, size + 1).astype(int)
    cols = np.linspace(0, n, size + 1).astype(int)
    if np.any(np.diff(rows) == 0) or np.any(np.diff(cols) == 0):  # tiny image: nearest-neighbour
        t = x[np.ix_(np.minimum(rows[:-1], m - 1), np.minimum(cols[:-1], n - 1))]
    else:
        t = np.add.reduceat(np.add.reduceat(x, rows[:-1], axis=0), cols[:-1], axis=1)
        t /= np.outer(np.diff(rows), np.diff(cols))
    return np.round(t * 255).astype(np.uint8).tobytes().hex()


def signature_matrix(signatures: Sequence[str]) -> np.ndarray:
    """Pairwise Pearson correlation of signatures (K×K). Near-duplicates: ≥ 0.998
    (re-noised copies of one image score > 0.9999; different subjects of the sample cohort
    ≤ 0.994)."""
    T = np.array([np.frombuffer(bytes.fromhex(s), dtype=np.uint8).astype(np.float64) for s in signatures])
    if T.size == 0:
        return np.zeros((0, 0))
    T -= T.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(T, axis=1, keepdims=True)
    T = np.divide(T, norm, out=np.zeros_like(T), where=norm > 0)
    return T @ T.T


def extract_entry(entry: dict[str, Any], **settings: Any) -> dict[str, Any]:
    """Load a dataset entry (middle plane of volumes) and compute its features.

    Module-level and picklable: ``batch_map(CallTask(extract_entry, tuple(settings.items())), records)``.
    Adds non-feature columns ``_signature`` (near-duplicate thumbnail, :func:`signature`), ``_rows``/``_cols``,
    ``_spacing_row_mm``/``_spacing_col_mm``, ``_roi`` (whole | mask) and ``_range_min``/``_range_max``
    (ROI intensity range, for the bin-width advisor).
    """
    from analysis.dataset import load_aux, load_entry

    s = FeatureSettings.from_kwargs(**settings)
    image = load_entry(entry)
    plane = image.middle_plane()
    a = plane.grey()
    given = None
    if (s.roi == "mask" or "shape" in s.groups) and str(entry.get("mask_path", "") or ""):
        m = load_aux(entry, "mask_path")
        if m is not None and m.shape == a.shape and m.any():
            given = m
    return features_for_image(a, s, spacing=plane.spacing, given_mask=given)


def features_for_image(
    a: np.ndarray,
    settings: FeatureSettings,
    *,
    spacing: tuple[float, float] | None = None,
    given_mask: np.ndarray | None = None,
) -> dict[str, Any]:
    """Features of one 2-D plane exactly as :func:`extract_entry` computes them (same ROI rules),
    plus the ``_``-prefixed bookkeeping columns. ``given_mask``: the entry's mask, if any."""
    s = settings
    a = np.asarray(a, dtype=np.float32)
    if given_mask is not None and (given_mask.shape != a.shape or not given_mask.any()):
        given_mask = None
    mask = roi_mask(a, s, mask=given_mask, spacing=spacing)
    row: dict[str, Any] = compute_features(a, s, mask=mask, spacing=spacing, shape_mask=given_mask)
    roi = _roi(a, mask, s.range_min, s.range_max)
    v = a[roi]
    row.update({
        "_signature": signature(a),
        "_rows": int(a.shape[0]),
        "_cols": int(a.shape[1]),
        "_spacing_row_mm": float(spacing[0]) if spacing else float("nan"),
        "_spacing_col_mm": float(spacing[1]) if spacing else float("nan"),
        "_roi": s.roi if mask is not None else "whole",
        "_range_min": float(v.min()) if v.size else float("nan"),
        "_range_max": float(v.max()) if v.size else float("nan"),
    })
    return row


def feature_columns(df: pd.DataFrame) -> list[str]:
    """The numeric feature columns of a feature table (prefixed names, not metadata)."""
    return [c for c in df.columns if any(c.startswith(p) for p in PREFIX.values()) and pd.api.types.is_numeric_dtype(df[c])]


def window_sums(mask: np.ndarray, corners: np.ndarray, patch: int) -> np.ndarray:
    """Number of true pixels of ``mask`` in each ``patch``×``patch`` window (integral image)."""
    ii = np.pad(np.asarray(mask, bool).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    r, c = corners[:, 0], corners[:, 1]
    return ii[r + patch, c + patch] - ii[r, c + patch] - ii[r + patch, c] + ii[r, c]


def patch_corners(
    a: np.ndarray,
    settings: FeatureSettings | None = None,
    *,
    patch: int = 32,
    stride: int = 16,
    within: np.ndarray | None = None,
    min_fraction: float = 0.5,
) -> np.ndarray:
    """Top-left corners ``(K, 2)`` of sliding windows every ``stride`` px (the last row/column of
    windows touches the border) that have at least ``min_fraction`` of their pixels in the
    resegmentation range and, with ``within``, their centre pixel in it."""
    s = settings or FeatureSettings()
    a = np.asarray(a)
    m, n = a.shape
    if patch > min(m, n):
        raise ValueError(f"parameter 'patch' ({patch} px) is larger than the image ({m}×{n})")
    if stride < 1:
        raise ValueError("parameter 'stride' must be ≥ 1")
    r0s = list(range(0, m - patch + 1, stride))
    c0s = list(range(0, n - patch + 1, stride))
    if r0s[-1] != m - patch:
        r0s.append(m - patch)
    if c0s[-1] != n - patch:
        c0s.append(n - patch)
    rr, cc = np.meshgrid(r0s, c0s, indexing="ij")
    corners = np.stack([rr.ravel(), cc.ravel()], axis=1).astype(np.int64)
    keep = window_sums(_roi(a, None, s.range_min, s.range_max), corners, patch) >= min_fraction * patch * patch
    if within is not None:
        keep &= np.asarray(within, bool)[corners[:, 0] + patch // 2, corners[:, 1] + patch // 2]
    return corners[keep]


def patch_settings(settings: FeatureSettings | None, patch: int) -> FeatureSettings:
    """Settings for windows: no shape group, whole window as ROI, HOG cells fitting the window."""
    s = settings or FeatureSettings()
    return FeatureSettings.from_kwargs(**{**s.as_kwargs(), "groups": tuple(g for g in s.groups if g != "shape"),
                                          "roi": "whole", "hog_cell": min(s.hog_cell, max(4, patch // 2))})


def patch_features(
    a: np.ndarray,
    settings: FeatureSettings | None = None,
    *,
    patch: int = 32,
    stride: int = 16,
    spacing: tuple[float, float] | None = None,
    within: np.ndarray | None = None,
    min_fraction: float = 0.5,
    corners: np.ndarray | None = None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Features of sliding ``patch``×``patch`` windows (see :func:`patch_corners`; or at the
    given ``corners``). Returns the corners ``(K, 2)`` and a ``K``-row table with the column
    names of :func:`compute_features` (shape group excluded)."""
    s = patch_settings(settings, patch)
    a = np.asarray(a, dtype=np.float32)
    if corners is None:
        corners = patch_corners(a, s, patch=patch, stride=stride, within=within, min_fraction=min_fraction)
    corners = np.asarray(corners, dtype=np.int64).reshape(-1, 2)
    rows = [compute_features(a[r0:r0 + patch, c0:c0 + patch], s, spacing=spacing) for r0, c0 in corners]
    return corners, pd.DataFrame(rows)


# ----------------------------------------------------------------------------- bin-width advisor
def bins_per_image(range_min: Iterable[float], range_max: Iterable[float], bin_width: float) -> np.ndarray:
    """Grey levels a fixed ``bin_width`` produces for each image's ROI intensity range."""
    lo = np.asarray(list(range_min), dtype=np.float64)
    hi = np.asarray(list(range_max), dtype=np.float64)
    if not bin_width > 0:
        raise ValueError(f"parameter 'bin_width' must be > 0; got {bin_width!r}")
    return np.floor(hi / bin_width) - np.floor(lo / bin_width) + 1


def bin_advice(
    range_min: Sequence[float],
    range_max: Sequence[float],
    widths: Sequence[float],
    *,
    target: tuple[int, int] = (30, 130),
) -> pd.DataFrame:
    """For each candidate bin width: distribution of bins per image over the dataset and the
    share of images inside ``target`` (pyradiomics' advice: roughly 30–130 bins)."""
    rows = []
    lo = np.asarray(range_min, dtype=np.float64)
    hi = np.asarray(range_max, dtype=np.float64)
    ok = np.isfinite(lo) & np.isfinite(hi)
    for w in widths:
        b = bins_per_image(lo[ok], hi[ok], float(w))
        if b.size == 0:
            continue
        rows.append({
            "bin_width": float(w),
            "bins_min": float(b.min()),
            "bins_p5": float(np.percentile(b, 5)),
            "bins_median": float(np.median(b)),
            "bins_p95": float(np.percentile(b, 95)),
            "bins_max": float(b.max()),
            "share_in_target": float(np.mean((b >= target[0]) & (b <= target[1]))),
        })
    return pd.DataFrame(rows)


def suggest_bin_width(range_min: Sequence[float], range_max: Sequence[float], *, target_bins: int = 64) -> float:
    """A 'round' bin width giving about ``target_bins`` levels for the median image range."""
    span = np.nanmedian(np.asarray(range_max, float) - np.asarray(range_min, float))
    if not np.isfinite(span) or span <= 0:
        return 1.0
    raw = span / target_bins
    mag = 10 ** math.floor(math.log10(raw))
    for f in (1, 2, 2.5, 5, 10):
        if raw <= f * mag:
            return float(f * mag)
    return float(10 * mag)


def glcm_bin_sensitivity(
    images: Sequence[np.ndarray],
    widths: Sequence[float],
    *,
    masks: Sequence[np.ndarray | None] | None = None,
    range_min: float | None = None,
    range_max: float | None = None,
    distances: Sequence[int] = (1,),
    angles_deg: Sequence[float] = (0.0, 45.0, 90.0, 135.0),
) -> pd.DataFrame:
    """How much GLCM features move with the bin width, over a set of images.

    For each width and property: the median relative change versus the *finest* width
    (``|f_w − f_ref| / |f_ref|``) and the Spearman rank correlation across images with the
    reference (1.0 = the width does not reorder images, which is what a classifier sees).
    Widths giving more than :data:`MAX_LEVELS` levels on some image are reported with NaN.
    """
    from scipy.stats import spearmanr

    widths = sorted(float(w) for w in widths)
    masks = list(masks) if masks is not None else [None] * len(images)
    vals: dict[float, list[dict[str, float]]] = {}
    for w in widths:
        col = []
        for a, m in zip(images, masks):
            try:
                col.append(glcm_values(a, mask=m, bin_mode="width", bin_width=w, distances=distances, angles_deg=angles_deg,
                                       range_min=range_min, range_max=range_max))
            except ValueError:
                col.append({k: float("nan") for k in (*GLCM_PROPS, "n_levels")})
        vals[w] = col
    ref_w = widths[0]
    rows = []
    for w in widths:
        for prop in GLCM_PROPS:
            f = np.array([d[prop] for d in vals[w]], dtype=np.float64)
            r = np.array([d[prop] for d in vals[ref_w]], dtype=np.float64)
            ok = np.isfinite(f) & np.isfinite(r)
            rel = np.abs(f[ok] - r[ok]) / np.maximum(np.abs(r[ok]), 1e-12)
            if ok.sum() >= 3 and np.ptp(f[ok]) > 0 and np.ptp(r[ok]) > 0:
                rho = float(spearmanr(f[ok], r[ok]).statistic)
            else:
                rho = float("nan")
            rows.append({
                "bin_width": w,
                "feature": prop,
                "median_levels": float(np.nanmedian([d["n_levels"] for d in vals[w]])),
                "median_rel_change": float(np.median(rel)) if rel.size else float("nan"),
                "rank_corr_vs_finest": rho,
            })
    return pd.DataFrame(rows)
