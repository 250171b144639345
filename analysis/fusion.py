"""Image fusion: two co-registered images of different modalities → one image, and the
metrics that score a fused result.

Every fusion operation is registered with ``inputs="pair"``: it takes image **A** (the
anatomical / reference image, e.g. T1 MR or CT) as its first argument and image **B** (e.g.
PET or T2) as the ``moving`` context keyword, both 2-D arrays in their own physical units.

Intensity domain
----------------
Modalities have unrelated units (HU, MR a.u., kBq/ml), so each input is first mapped to
``[0, 1]`` **over its own range** (:func:`normalise`):

* ``"percentile"`` (default): ``(x - p0.5) / (p99.5 - p0.5)`` clipped to [0, 1], where the
  percentiles are that image's own (robust to hot spots and air);
* ``"minmax"``: ``(x - min) / (max - min)`` over that image's full range (no clipping needed).

Fused greyscale outputs are in that common normalised domain, ``[0, 1]`` (clipped where a
multi-scale reconstruction overshoots). Alpha blending returns an RGB ``uint8`` image.

Geometry
--------
Fusion needs both images on one pixel grid. :func:`common_grid` resamples spacing-aware,
keeping the physical extent: pixel ``i`` of an image with spacing ``s`` and ``n`` pixels is
centred at ``(i + 0.5)·s - n·s/2`` mm from the image centre, and both images are assumed to
share their centre (the usual case for scanner-aligned slices; otherwise register first).
An operation given arrays of different shapes resamples B onto A's grid assuming the same
field of view and says so in its notes.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import cv2
import numpy as np
from scipy import ndimage as ndi

from analysis.metrics import entropy as _hist_entropy
from analysis.registry import Param, Result, register

__all__ = [
    "normalise",
    "resample_to",
    "common_grid",
    "colormap_lut",
    "mutual_information",
    "ssim",
    "qabf",
    "fusion_metrics",
    "METHODS",
    "compare_methods",
    "fuse_pair_entry",
    "NORMALISATIONS",
]

NORMALISATIONS = ("percentile", "minmax")
PERCENTILES = (0.5, 99.5)
NORM_DOMAIN = (
    "each input mapped to [0, 1] over its own range (percentile: its 0.5–99.5 % range, clipped; "
    "minmax: its full range); output in that normalised domain [0, 1]"
)
FUSED_UNITS = "normalised (0–1)"

_NORM_PARAM = Param(
    "normalise", "percentile", options=NORMALISATIONS,
    help="How each input is mapped to [0, 1] before fusing (modalities have different units): "
         "percentile = the image's own 0.5–99.5 % range, clipped; minmax = its full range.",
)


# ----------------------------------------------------------------------------- intensity
def normalise(a: np.ndarray, method: str = "percentile", *, percentiles: tuple[float, float] = PERCENTILES) -> np.ndarray:
    """Map ``a`` (physical units) to float32 ``[0, 1]`` over its own range.

    ``method="percentile"`` uses the image's ``percentiles`` (default 0.5 and 99.5 %) and
    clips; ``"minmax"`` uses its minimum and maximum. Non-finite values become 0. A
    constant image maps to all zeros.
    """
    if method not in NORMALISATIONS:
        raise ValueError(f"normalise must be one of {list(NORMALISATIONS)}; got {method!r}")
    a = np.asarray(a, dtype=np.float32)
    finite = np.isfinite(a)
    vals = a[finite] if not finite.all() else a
    if vals.size == 0:
        return np.zeros(a.shape, np.float32)
    if method == "minmax":
        lo, hi = float(vals.min()), float(vals.max())
    else:
        lo, hi = (float(v) for v in np.percentile(vals, percentiles))
    if not hi > lo:
        return np.zeros(a.shape, np.float32)
    out = (a - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    np.clip(out, 0.0, 1.0, out=out)
    if not finite.all():
        out[~finite] = 0.0
    return out


# ----------------------------------------------------------------------------- geometry
def resample_to(
    a: np.ndarray,
    spacing_in: tuple[float, float],
    shape_out: tuple[int, int],
    spacing_out: tuple[float, float],
    *,
    order: int = 1,
    cval: float | None = None,
    antialias: bool = True,
) -> np.ndarray:
    """Resample a 2-D image onto another pixel grid with the same centre (physical extent kept).

    Output pixel ``j`` (centre at ``(j + 0.5)·s_out - E_out/2`` mm, ``E = n·s``) samples the
    input at the same physical position. When the output is coarser, a Gaussian
    anti-aliasing pre-filter (σ = (factor - 1)/2 px, as scikit-image's ``resize``) is applied.
    Outside the input's extent the value is ``cval`` (default: the input's minimum).
    """
    a = np.asarray(a, dtype=np.float32)
    m_in, n_in = a.shape
    m_out, n_out = int(shape_out[0]), int(shape_out[1])
    s_in = np.asarray(spacing_in, float)
    s_out = np.asarray(spacing_out, float)
    if (m_in, n_in) == (m_out, n_out) and np.allclose(s_in, s_out):
        return a.copy()
    scale = s_out / s_in  # input px per output px
    ext_in = np.array([m_in, n_in]) * s_in
    ext_out = np.array([m_out, n_out]) * s_out
    offset = (0.5 * s_out - ext_out / 2 + ext_in / 2) / s_in - 0.5
    src = a
    if antialias and (scale > 1).any():
        sig = np.maximum(0.0, (scale - 1) / 2)
        src = ndi.gaussian_filter(a, sig, mode="nearest")
    if cval is None:
        finite = a[np.isfinite(a)]
        cval = float(finite.min()) if finite.size else 0.0
    out = ndi.affine_transform(src, scale, offset=offset, output_shape=(m_out, n_out), order=order,
                               mode="constant", cval=cval, prefilter=order > 1)
    return out.astype(np.float32, copy=False)


def common_grid(
    a: np.ndarray,
    spacing_a: tuple[float, float] | None,
    b: np.ndarray,
    spacing_b: tuple[float, float] | None,
    *,
    grid: str = "A",
) -> tuple[np.ndarray, np.ndarray, tuple[float, float] | None, list[str]]:
    """Put A and B on one pixel grid, spacing-aware, centres aligned.

    Parameters
    ----------
    grid : {"A", "B", "finest"}
        ``"A"``: B is resampled onto A's grid (A untouched); ``"B"``: the reverse;
        ``"finest"``: both go onto A's field of view sampled at the finer spacing per axis.

    Returns
    -------
    (a2, b2, spacing, notes) — arrays of equal shape, their spacing (mm, or None when
    unknown) and plain-language notes of what was done.

    When either spacing is unknown and the shapes differ, B is stretched onto A's shape
    (same field of view assumed) and a note says so.
    """
    if grid not in ("A", "B", "finest"):
        raise ValueError(f"grid must be 'A', 'B' or 'finest'; got {grid!r}")
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    notes: list[str] = []
    if spacing_a is None or spacing_b is None:
        if a.shape == b.shape:
            return a, b, spacing_a or spacing_b, notes
        sp_a = (1.0, 1.0)
        sp_b = (a.shape[0] / b.shape[0], a.shape[1] / b.shape[1])
        notes.append(
            "pixel spacing unknown for at least one image: B was stretched onto A's grid assuming both show the same field of view"
        )
        return a, resample_to(b, sp_b, a.shape, sp_a), spacing_a or spacing_b, notes
    sa = (float(spacing_a[0]), float(spacing_a[1]))
    sb = (float(spacing_b[0]), float(spacing_b[1]))
    if a.shape == b.shape and np.allclose(sa, sb):
        return a, b, sa, notes
    if grid == "B":
        a2, b2, sp, nt = common_grid(b, sb, a, sa, grid="A")
        return b2, a2, sp, [n.replace("B was", "A was") for n in nt] or [
            f"A ({a.shape[0]}×{a.shape[1]} px at {sa[0]:.3g}×{sa[1]:.3g} mm) resampled onto B's grid"]
    if grid == "A":
        out_sp, out_shape = sa, a.shape
    else:
        out_sp = (min(sa[0], sb[0]), min(sa[1], sb[1]))
        out_shape = (max(1, int(round(a.shape[0] * sa[0] / out_sp[0]))), max(1, int(round(a.shape[1] * sa[1] / out_sp[1]))))
    a2 = resample_to(a, sa, out_shape, out_sp)
    b2 = resample_to(b, sb, out_shape, out_sp)
    if grid == "finest" and a2.shape != a.shape:
        notes.append(f"A resampled to {out_shape[0]}×{out_shape[1]} px at {out_sp[0]:.3g}×{out_sp[1]:.3g} mm")
    notes.append(
        f"B ({b.shape[0]}×{b.shape[1]} px at {sb[0]:.3g}×{sb[1]:.3g} mm) resampled onto "
        f"{out_shape[0]}×{out_shape[1]} px at {out_sp[0]:.3g}×{out_sp[1]:.3g} mm (centres aligned, physical extent kept)"
    )
    ext_a = np.array(a.shape) * np.array(sa)
    ext_b = np.array(b.shape) * np.array(sb)
    if (ext_b + 1e-6 < ext_a).any():
        notes.append("B covers a smaller field of view than A: outside it B is filled with its minimum")
    return a2, b2, out_sp, notes


def _prepare(image: np.ndarray, moving: np.ndarray | None, method: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if moving is None:
        raise ValueError("fusion needs a second image B (the 'moving' image of the pair)")
    a = np.asarray(image, dtype=np.float32)
    b = np.asarray(moving, dtype=np.float32)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError("fusion works on 2-D greyscale planes (convert colour to grey first)")
    notes = []
    if a.shape != b.shape:
        sp_b = (a.shape[0] / b.shape[0], a.shape[1] / b.shape[1])
        b = resample_to(b, sp_b, a.shape, (1.0, 1.0))
        notes.append("B had another shape: it was stretched onto A's grid assuming the same field of view "
                     "(use the page's common grid, which is spacing-aware, for real pairs)")
    return normalise(a, method), normalise(b, method), notes


def _result(fused: np.ndarray, notes: list[str], method: str, **extras: Any) -> Result:
    notes = [f"inputs normalised to [0, 1] ({method}); output in that domain"] + notes
    return Result(image=np.asarray(fused, dtype=np.float32), units=FUSED_UNITS, notes=notes, extras=dict(extras))


def _pair_op(key: str, title: str, params: Sequence[Param] = (), domain: str = NORM_DOMAIN) -> Callable:
    """``register`` for a two-input fusion operation (B arrives as the ``moving`` context)."""
    return register(key, title=title, inputs="pair", domain=domain, params=[*params, _NORM_PARAM])


# ----------------------------------------------------------------------------- simple rules
@_pair_op("fusion.weighted_average", "Weighted average", [
    Param("weight", 0.5, min=0.0, max=1.0, step=0.05, label="weight of A",
          help="F = w·A + (1 − w)·B on the normalised inputs; 1 returns A, 0 returns B."),
])
def weighted_average(image: np.ndarray, *, weight: float = 0.5, normalise: str = "percentile",
                     moving: np.ndarray | None = None) -> Result:
    """Pixel-wise weighted average ``w·A + (1 − w)·B`` of the normalised inputs."""
    a, b, notes = _prepare(image, moving, normalise)
    w = np.float32(weight)
    return _result(w * a + (np.float32(1) - w) * b, notes, normalise)


@_pair_op("fusion.maximum", "Maximum selection")
def maximum(image: np.ndarray, *, normalise: str = "percentile", moving: np.ndarray | None = None) -> Result:
    """Pixel-wise maximum of the normalised inputs (keeps the brighter structure of either)."""
    a, b, notes = _prepare(image, moving, normalise)
    return _result(np.maximum(a, b), notes, normalise)


@_pair_op("fusion.minimum", "Minimum selection")
def minimum(image: np.ndarray, *, normalise: str = "percentile", moving: np.ndarray | None = None) -> Result:
    """Pixel-wise minimum of the normalised inputs (keeps the darker structure of either)."""
    a, b, notes = _prepare(image, moving, normalise)
    return _result(np.minimum(a, b), notes, normalise)


@_pair_op("fusion.pca", "PCA weighting")
def pca(image: np.ndarray, *, normalise: str = "percentile", moving: np.ndarray | None = None) -> Result:
    """Weighted average with weights from the principal component of the 2×2 covariance
    of (A, B): ``w = |v| / Σ|v|`` for the eigenvector ``v`` of the largest eigenvalue."""
    a, b, notes = _prepare(image, moving, normalise)
    cov = np.cov(np.stack([a.ravel(), b.ravel()]).astype(np.float64))
    if not np.isfinite(cov).all() or np.allclose(cov, 0):
        wa = 0.5
    else:
        vals, vecs = np.linalg.eigh(cov)
        v = np.abs(vecs[:, int(np.argmax(vals))])
        wa = float(v[0] / v.sum()) if v.sum() > 0 else 0.5
    notes.append(f"PCA weights: A {wa:.3f}, B {1 - wa:.3f}")
    fused = np.float32(wa) * a + np.float32(1 - wa) * b
    res = _result(fused, notes, normalise, weight_a=wa)
    res.metrics["weight_a"] = wa
    return res


@_pair_op("fusion.checkerboard", "Checkerboard mosaic", [
    Param("tile", 32, min=2, max=256, step=2, unit="px", help="Side of a checkerboard square in pixels of the common grid."),
])
def checkerboard(image: np.ndarray, *, tile: int = 32, normalise: str = "percentile", moving: np.ndarray | None = None) -> Result:
    """Alternating squares of A and B (A in the top-left square): a QA view of alignment."""
    a, b, notes = _prepare(image, moving, normalise)
    rr = (np.arange(a.shape[0]) // int(tile))[:, None]
    cc = (np.arange(a.shape[1]) // int(tile))[None, :]
    return _result(np.where((rr + cc) % 2 == 0, a, b), notes, normalise)


# ----------------------------------------------------------------------------- colour overlay
_CMAP_ANCHORS: dict[str, list[tuple[float, float, float]]] = {
    # matplotlib-like "hot": black → red → yellow → white (PET convention)
    "hot": [(0, 0, 0), (1, 0, 0), (1, 1, 0), (1, 1, 1)],
    # "jet"-like rainbow
    "rainbow": [(0, 0, 0.5), (0, 0, 1), (0, 1, 1), (1, 1, 0), (1, 0, 0), (0.5, 0, 0)],
    # viridis, 10 samples of the published map
    "viridis": [(0x44, 0x01, 0x54), (0x48, 0x28, 0x78), (0x3E, 0x49, 0x89), (0x31, 0x68, 0x8E), (0x26, 0x82, 0x8E),
                (0x1F, 0x9E, 0x89), (0x35, 0xB7, 0x79), (0x6E, 0xCE, 0x58), (0xB5, 0xDE, 0x2B), (0xFD, 0xE7, 0x25)],
}
COLORMAPS = tuple(_CMAP_ANCHORS)


def colormap_lut(name: str, n: int = 256) -> np.ndarray:
    """``(n, 3)`` float32 RGB table in [0, 1] for ``name`` in :data:`COLORMAPS` (no matplotlib needed)."""
    if name not in _CMAP_ANCHORS:
        raise ValueError(f"colormap must be one of {list(COLORMAPS)}; got {name!r}")
    anchors = np.asarray(_CMAP_ANCHORS[name], np.float64)
    if anchors.max() > 1:
        anchors = anchors / 255.0
    if name == "rainbow":
        pos = np.array([0.0, 0.125, 0.375, 0.625, 0.875, 1.0])
    else:
        pos = np.linspace(0, 1, len(anchors))
    x = np.linspace(0, 1, n)
    return np.stack([np.interp(x, pos, anchors[:, k]) for k in range(3)], -1).astype(np.float32)


@_pair_op("fusion.alpha_blend", "Alpha blend (colour overlay)", [
    Param("alpha", 0.5, min=0.0, max=1.0, step=0.05, help="Opacity of the colour overlay of B."),
    Param("colormap", "hot", options=COLORMAPS, help="Colour map for B (hot is the usual PET map)."),
    Param("threshold", 0.1, min=0.0, max=1.0, step=0.01,
          help="B below this normalised value is not overlaid (transparent), so background stays grey."),
], domain=NORM_DOMAIN.replace("output in that normalised domain [0, 1]",
                              "A drawn in grey, B through a colour map; RGB uint8 output (a view)"))
def alpha_blend(image: np.ndarray, *, alpha: float = 0.5, colormap: str = "hot", threshold: float = 0.1,
                normalise: str = "percentile", moving: np.ndarray | None = None) -> Result:
    """Functional-on-anatomical overlay: ``RGB = (1 − α·m)·grey(A) + α·m·cmap(B)`` with
    ``m = [B ≥ threshold]`` on the normalised inputs; returns RGB ``uint8``."""
    a, b, notes = _prepare(image, moving, normalise)
    lut = colormap_lut(colormap)
    idx = np.clip(np.rint(b * 255), 0, 255).astype(np.intp)
    col = lut[idx]
    m = (b >= threshold).astype(np.float32)[..., None] * np.float32(alpha)
    rgb = (1 - m) * a[..., None] + m * col
    out = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
    notes = [f"inputs normalised to [0, 1] ({normalise}); A in grey, B through '{colormap}' where B ≥ {threshold:g}, opacity {alpha:g}"] + notes
    return Result(image=out, units="RGB", notes=notes)


# ----------------------------------------------------------------------------- multi-scale
RULES = ("max_abs", "average", "local_energy")
_RULE_PARAM = Param(
    "rule", "max_abs", options=RULES,
    help="Detail-coefficient selection: max_abs keeps the larger |coefficient|; local_energy keeps the one whose 3×3 "
         "energy is larger (less noisy choice maps); average averages. The coarsest level is always averaged.",
)


def _combine(ca: np.ndarray, cb: np.ndarray, rule: str) -> np.ndarray:
    if rule == "average":
        return 0.5 * (ca + cb)
    if rule == "max_abs":
        return np.where(np.abs(ca) >= np.abs(cb), ca, cb)
    ea = cv2.blur(np.ascontiguousarray(ca * ca, dtype=np.float32), (3, 3))
    eb = cv2.blur(np.ascontiguousarray(cb * cb, dtype=np.float32), (3, 3))
    return np.where(ea >= eb, ca, cb)


def _max_levels(shape: tuple[int, ...], minimum: int = 8) -> int:
    return max(1, int(math.floor(math.log2(max(min(shape[:2]) / minimum, 1.0)))))


def laplacian_pyramid_levels(x: np.ndarray, levels: int) -> list[np.ndarray]:
    """Laplacian pyramid (Burt & Adelson, 5-tap Gaussian via OpenCV): ``levels`` detail
    bands followed by the coarsest Gaussian level; exact reconstruction by :func:`collapse`."""
    g = [np.ascontiguousarray(x, dtype=np.float32)]
    for _ in range(levels):
        g.append(cv2.pyrDown(g[-1]))
    out = []
    for i in range(levels):
        up = cv2.pyrUp(g[i + 1], dstsize=(g[i].shape[1], g[i].shape[0]))
        out.append(g[i] - up)
    out.append(g[-1])
    return out


def collapse(pyr: Sequence[np.ndarray]) -> np.ndarray:
    x = pyr[-1]
    for band in reversed(pyr[:-1]):
        x = cv2.pyrUp(x, dstsize=(band.shape[1], band.shape[0])) + band
    return x


@_pair_op("fusion.laplacian_pyramid", "Laplacian pyramid", [
    Param("levels", 4, min=1, max=8, help="Number of detail bands (capped so the coarsest level keeps ≥ 8 px)."),
    _RULE_PARAM,
], domain=NORM_DOMAIN + " (clipped after reconstruction)")
def laplacian_pyramid(image: np.ndarray, *, levels: int = 4, rule: str = "max_abs", normalise: str = "percentile",
                      moving: np.ndarray | None = None) -> Result:
    """Multi-scale fusion: combine the Laplacian pyramids of A and B band by band (``rule``
    for detail bands, average for the coarsest), then collapse."""
    a, b, notes = _prepare(image, moving, normalise)
    lv = min(int(levels), _max_levels(a.shape))
    if lv < levels:
        notes.append(f"levels capped at {lv} for a {a.shape[0]}×{a.shape[1]} image")
    pa, pb = laplacian_pyramid_levels(a, lv), laplacian_pyramid_levels(b, lv)
    fused = [_combine(x, y, rule) for x, y in zip(pa[:-1], pb[:-1])] + [0.5 * (pa[-1] + pb[-1])]
    out = np.clip(collapse(fused), 0.0, 1.0)
    return _result(out, notes, normalise, levels=lv)


WAVELETS = ("db2", "haar", "db4", "sym4", "bior2.2")


@_pair_op("fusion.wavelet", "Wavelet (DWT)", [
    Param("wavelet", "db2", options=WAVELETS, help="PyWavelets wavelet family."),
    Param("levels", 3, min=1, max=6, help="Decomposition levels (capped at PyWavelets' maximum for the size)."),
    _RULE_PARAM,
], domain=NORM_DOMAIN + " (clipped after reconstruction)")
def wavelet(image: np.ndarray, *, wavelet: str = "db2", levels: int = 3, rule: str = "max_abs",
            normalise: str = "percentile", moving: np.ndarray | None = None) -> Result:
    """2-D discrete wavelet fusion (PyWavelets ``wavedec2``, symmetric extension): detail
    sub-bands combined with ``rule``, approximation averaged, inverse DWT."""
    import pywt

    a, b, notes = _prepare(image, moving, normalise)
    w = pywt.Wavelet(wavelet)
    lv = max(1, min(int(levels), pywt.dwt_max_level(min(a.shape), w.dec_len)))
    if lv < levels:
        notes.append(f"levels capped at {lv} for a {a.shape[0]}×{a.shape[1]} image")
    ca = pywt.wavedec2(a, w, level=lv, mode="symmetric")
    cb = pywt.wavedec2(b, w, level=lv, mode="symmetric")
    fused: list[Any] = [0.5 * (ca[0] + cb[0])]
    for da, db in zip(ca[1:], cb[1:]):
        fused.append(tuple(_combine(x.astype(np.float32), y.astype(np.float32), rule) for x, y in zip(da, db)))
    out = pywt.waverec2(fused, w, mode="symmetric")[: a.shape[0], : a.shape[1]]
    return _result(np.clip(out, 0.0, 1.0), notes, normalise, levels=lv)


# ----------------------------------------------------------------------------- metrics
def _quantise(a: np.ndarray, bins: int) -> np.ndarray:
    """Bin index 0..bins-1 of each value over the array's own range, exactly as
    ``np.histogram(a, bins)`` assigns them (last bin closed)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.intp)
    edges = np.linspace(lo, hi, bins + 1)
    idx = ((a - lo) * (bins / (hi - lo))).astype(np.intp)
    np.clip(idx, 0, bins - 1, out=idx)
    # the same edge corrections as numpy's histogram (float rounding at bin edges)
    idx[a < edges[idx]] -= 1
    inc = (a >= edges[idx + 1]) & (idx != bins - 1)
    idx[inc] += 1
    return idx


def _h(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def mutual_information(a: np.ndarray, b: np.ndarray, *, bins: int = 256) -> float:
    """Mutual information (bits) of two images from their joint histogram, each binned into
    ``bins`` equal bins over its own range: ``MI = H(A) + H(B) − H(A, B)``.
    ``mutual_information(a, a)`` equals the entropy of ``a`` (same binning)."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape; got {a.shape} and {b.shape}")
    ia, ib = _quantise(a, bins), _quantise(b, bins)
    n = ia.size
    joint = np.bincount(ia * bins + ib, minlength=bins * bins).astype(np.float64) / n
    pa = np.bincount(ia, minlength=bins) / n
    pb = np.bincount(ib, minlength=bins) / n
    return max(0.0, _h(pa) + _h(pb) - _h(joint))


def ssim(a: np.ndarray, b: np.ndarray, *, data_range: float = 1.0, win_size: int = 7) -> float:
    """Structural similarity (Wang et al. 2004) of two images in the same [0, ``data_range``]
    domain: ``win_size``² uniform window, sample covariances, K1 = 0.01, K2 = 0.03, mean over
    the pixels whose window lies inside the image — the same definition and numbers as
    ``skimage.metrics.structural_similarity`` (OpenCV box filters, ~6× faster)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape; got {a.shape} and {b.shape}")
    win = min(int(win_size), min(a.shape) - (1 - min(a.shape) % 2))
    if win < 3:
        raise ValueError("SSIM needs images of at least 3×3 pixels")
    k = (win, win)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.blur(x, k, borderType=cv2.BORDER_REFLECT)

    npx = win * win
    cov_norm = npx / (npx - 1.0)
    ux, uy = box(a), box(b)
    vx = cov_norm * (box(a * a) - ux * ux)
    vy = cov_norm * (box(b * b) - uy * uy)
    vxy = cov_norm * (box(a * b) - ux * uy)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean(dtype=np.float64))


# Xydeas & Petrović (2000) sigmoid constants
_KG, _SG = -15.0, 0.5
_KA, _SA = -22.0, 0.8
_GG = 1.0 + math.exp(_KG * (1.0 - _SG))  # scaled so perfect preservation (G = 1) scores exactly 1
_GA = 1.0 + math.exp(_KA * (1.0 - _SA))


def _sobel(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.ascontiguousarray(x, dtype=np.float32)
    gx = cv2.Sobel(x, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT)
    gy = cv2.Sobel(x, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT)
    return cv2.magnitude(gx, gy), np.arctan2(gy, gx)


def _edge_preservation(gs: np.ndarray, as_: np.ndarray, gf: np.ndarray, af: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        G = np.minimum(gs, gf) / np.maximum(gs, gf)
    G = np.nan_to_num(G, nan=1.0, copy=False)  # both zero: nothing to lose
    pi = np.float32(np.pi)
    d = np.abs(as_ - af) % pi
    d = np.minimum(d, pi - d)  # orientation difference in [0, π/2]
    A = 1.0 - d / (pi / 2)
    qg = np.float32(_GG) / (1.0 + np.exp(np.float32(_KG) * (G - np.float32(_SG))))
    qa = np.float32(_GA) / (1.0 + np.exp(np.float32(_KA) * (A - np.float32(_SA))))
    return qg * qa


def qabf(a: np.ndarray, b: np.ndarray, fused: np.ndarray) -> float:
    """Xydeas–Petrović edge-preservation index Q^AB/F in [0, 1].

    Sobel strength ``g`` and orientation ``α`` of A, B and F; per pixel the relative strength
    ``G`` (smaller/larger) and orientation agreement ``A = 1 − Δα/(π/2)`` (Δα the orientation
    difference folded to [0, π/2]) pass through the paper's sigmoids (κ_g = −15, σ_g = 0.5,
    κ_α = −22, σ_α = 0.8); ``Q = Σ(Q^AF·g_A + Q^BF·g_B) / Σ(g_A + g_B)``.
    The sigmoid gains Γ are set so a perfectly preserved edge scores exactly 1 (the
    published 0.9994 / 0.9879 are their reciprocals to 4 digits, which caps the index at
    0.975). Fusing A with itself gives 1; a flat F gives ≈ 0.
    """
    ga, aa = _sobel(a)
    gb, ab = _sobel(b)
    gf, af = _sobel(fused)
    qaf = _edge_preservation(ga, aa, gf, af)
    qbf = _edge_preservation(gb, ab, gf, af)
    den = float(ga.sum(dtype=np.float64) + gb.sum(dtype=np.float64))
    if den <= 0:
        return float("nan")
    num = float((qaf * ga).sum(dtype=np.float64) + (qbf * gb).sum(dtype=np.float64))
    return num / den


def as_grey01(fused: np.ndarray) -> np.ndarray:
    """A fused result as 2-D float in [0, 1]: RGB uint8 → BT.601 luminance / 255."""
    f = np.asarray(fused)
    if f.ndim == 3:
        f = f[..., :3].astype(np.float32)
        f = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
        return (f / 255.0).astype(np.float32)
    return f.astype(np.float32, copy=False)


METRIC_INFO: dict[str, str] = {
    "entropy": "Shannon entropy of F (bits, 256 bins) — information content; higher = richer",
    "mi_a": "mutual information F↔A (bits) — how much of A is carried",
    "mi_b": "mutual information F↔B (bits) — how much of B is carried",
    "mi_sum": "MI(F,A) + MI(F,B) — total information transferred",
    "ssim_a": "SSIM(F, A) on the normalised [0, 1] inputs",
    "ssim_b": "SSIM(F, B) on the normalised [0, 1] inputs",
    "qabf": "Xydeas–Petrović Q^AB/F edge preservation, 0..1 (1 = every edge of A and B kept)",
    "std": "standard deviation of F (contrast, normalised units)",
}


def fusion_metrics(a: np.ndarray, b: np.ndarray, fused: np.ndarray, *, bins: int = 256) -> dict[str, float]:
    """Every fusion metric of F against the two sources.

    ``a`` and ``b`` are the **normalised** sources (``[0, 1]``, as the fusion operations see
    them), ``fused`` the result (2-D in [0, 1], or RGB uint8 which is scored on its
    luminance). Keys and meanings: :data:`METRIC_INFO`.
    """
    f = as_grey01(fused)
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    mi_a = mutual_information(f, a, bins=bins)
    mi_b = mutual_information(f, b, bins=bins)
    return {
        "entropy": _hist_entropy(f, bins=bins),
        "mi_a": mi_a,
        "mi_b": mi_b,
        "mi_sum": mi_a + mi_b,
        "ssim_a": ssim(f, a),
        "ssim_b": ssim(f, b),
        "qabf": qabf(a, b, f),
        "std": float(np.std(f, dtype=np.float64)),
    }


# ----------------------------------------------------------------------------- comparator
#: the comparator's methods in display order (operation keys)
METHODS = (
    "fusion.weighted_average",
    "fusion.alpha_blend",
    "fusion.maximum",
    "fusion.minimum",
    "fusion.pca",
    "fusion.laplacian_pyramid",
    "fusion.wavelet",
    "fusion.checkerboard",
)


def compare_methods(
    a: np.ndarray,
    b: np.ndarray,
    *,
    methods: Sequence[str] = METHODS,
    normalise: str = "percentile",
    params: dict[str, dict[str, Any]] | None = None,
    run: Callable[..., Result] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Result]]:
    """Run every method on (A, B) (same grid) and score each result.

    Returns ``(rows, results)``: one row per method ``{"method", "title", <metrics>...}``
    (an ``error`` column when a method failed) and the :class:`Result` of each method.
    ``run(key, a, params, moving=b)`` defaults to :func:`analysis.registry.run` (the page
    passes its cached runner).
    """
    from analysis import registry

    run = run or (lambda key, x, p, **ctx: registry.run(key, x, p, **ctx))
    an, bn = normalise_pair(a, b, normalise)
    rows: list[dict[str, Any]] = []
    results: dict[str, Result] = {}
    for key in methods:
        op = registry.get(key)
        p = dict((params or {}).get(key, {}))
        if any(q.name == "normalise" for q in op.params):
            p.setdefault("normalise", normalise)
        row: dict[str, Any] = {"method": key.split(".", 1)[1], "title": op.title}
        try:
            res = run(key, a, p, moving=b)
            results[key] = res
            row.update(fusion_metrics(an, bn, res.image))
        except Exception as exc:  # noqa: BLE001 - one failing method becomes a row with its reason
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        rows.append(row)
    return rows, results


def normalise_pair(a: np.ndarray, b: np.ndarray, method: str = "percentile") -> tuple[np.ndarray, np.ndarray]:
    """Both sources normalised as the fusion operations normalise them (B stretched onto A's shape if needed)."""
    an, bn, _ = _prepare(a, b, method)
    return an, bn


# ----------------------------------------------------------------------------- dataset-wide
def fuse_pair_entry(
    item: dict[str, Any],
    *,
    methods: Sequence[str] = METHODS,
    normalise: str = "percentile",
    grid: str = "A",
) -> dict[str, Any]:
    """Batch task (picklable through ``analysis.batch.CallTask``): load the two entries of
    ``item = {"id", "name", "a": entry, "b": entry}``, put them on a common grid
    (:func:`common_grid`), run every method and return ``{"<method>.<metric>": value}``."""
    from analysis.dataset import load_entry

    planes = []
    for k in ("a", "b"):
        img = load_entry(item[k])
        planes.append(img.middle_plane())
    ia, ib = planes
    a, b, _, notes = common_grid(ia.grey(), ia.spacing, ib.grey(), ib.spacing, grid=grid)
    rows, _ = compare_methods(a, b, methods=methods, normalise=normalise)
    out: dict[str, Any] = {"resampled": bool(notes)}
    errors = []
    for r in rows:
        if r.get("error"):
            errors.append(f"{r['method']}: {r['error']}")
            continue
        for k in METRIC_INFO:
            out[f"{r['method']}.{k}"] = r[k]
    if errors and len(errors) == len(rows):
        raise ValueError("; ".join(errors))
    if errors:
        out["method_errors"] = "; ".join(errors)
    return out
