"""Image quality metrics and the per-image measurements used by dataset-wide runs.

All metrics take arrays in physical units and say which range/units they use:

* :func:`psnr`, :func:`ssim` — full-reference, ``data_range`` = the *reference's*
  max − min (stated explicitly, never guessed from the dtype);
* :func:`rms_contrast`, :func:`noise_sigma` — in the image's own units;
* :func:`cnr` — unit-free ratio for two boxes;
* :func:`entropy` — bits, histogram over the data range.

Boxes are ``(r0, c0, r1, c1)`` in pixel indices, half-open (``a[r0:r1, c0:c1]``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = [
    "entropy", "rms_contrast", "psnr", "ssim", "cnr", "noise_sigma", "data_range",
    "quality_metrics", "enhancement_tile_metrics", "basic_measure", "enhancement_measure", "METRIC_INFO", "default_boxes",
]

#: metric name → (higher is better?, short description)
METRIC_INFO: dict[str, tuple[bool, str]] = {
    "psnr_input": (True, "PSNR vs the input (dB): how little the image changed"),
    "ssim_input": (True, "SSIM vs the input"),
    "psnr_clean": (True, "PSNR vs the clean reference (dB)"),
    "ssim_clean": (True, "SSIM vs the clean reference"),
    "rms_contrast": (True, "RMS contrast: std of the values (input units)"),
    "cnr": (True, "contrast-to-noise ratio between the ROI and the background box"),
    "entropy": (True, "Shannon entropy of the histogram (bits)"),
    "noise_sigma": (False, "estimated Gaussian noise σ (input units, wavelet MAD)"),
}


def entropy(a: np.ndarray, bins: int = 256) -> float:
    """Shannon entropy (bits) of the value histogram with ``bins`` bins over the data range."""
    a = np.asarray(a, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0 or a.max() == a.min():
        return 0.0
    counts, _ = np.histogram(a, bins=bins)
    p = counts[counts > 0] / a.size
    return float(-(p * np.log2(p)).sum())


def rms_contrast(a: np.ndarray) -> float:
    """Standard deviation of the values (RMS contrast, in input units)."""
    return float(np.nanstd(np.asarray(a, dtype=np.float64)))


def _reference_range(reference: np.ndarray) -> float:
    """max − min of the finite values of ``reference`` (1.0 for a constant image)."""
    r = np.asarray(reference, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return 1.0
    span = float(r.max() - r.min())
    return span if span > 0 else 1.0


data_range = _reference_range


def _check_pair(reference: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(reference, dtype=np.float64)
    t = np.asarray(test, dtype=np.float64)
    if r.shape != t.shape:
        raise ValueError(f"reference and test images differ in shape: {r.shape} vs {t.shape}")
    return r, t


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(R² / MSE)`` with ``R`` the
    reference's max − min unless given (``inf`` for identical images)."""
    r, t = _check_pair(reference, test)
    rng = float(data_range) if data_range is not None else _reference_range(r)
    ok = np.isfinite(r) & np.isfinite(t)
    mse = float(np.mean((r[ok] - t[ok]) ** 2)) if ok.any() else float("nan")
    if mse == 0:
        return float("inf")
    return float(10.0 * math.log10(rng * rng / mse))


def ssim(reference: np.ndarray, test: np.ndarray, data_range: float | None = None) -> float:
    """Structural similarity (Wang et al., IEEE TIP 13(4), 2004; scikit-image
    ``metrics.structural_similarity``, 7×7 uniform window) with ``data_range`` = the
    reference's max − min unless given."""
    from skimage.metrics import structural_similarity

    r, t = _check_pair(reference, test)
    if min(r.shape) < 7:
        raise ValueError("ssim needs images of at least 7×7 pixels")
    rng = float(data_range) if data_range is not None else _reference_range(r)
    return float(structural_similarity(np.nan_to_num(r), np.nan_to_num(t), data_range=rng))


def _box(a: np.ndarray, box: Sequence[int], name: str) -> np.ndarray:
    if len(box) != 4:
        raise ValueError(f"{name} must be (r0, c0, r1, c1); got {box!r}")
    r0, c0, r1, c1 = (int(v) for v in box)
    m, n = a.shape[:2]
    r0, r1 = max(0, min(r0, r1)), min(m, max(r0, r1))
    c0, c1 = max(0, min(c0, c1)), min(n, max(c0, c1))
    vals = a[r0:r1, c0:c1]
    if vals.size < 2:
        raise ValueError(f"{name} box {tuple(box)} covers fewer than 2 pixels of a {m}×{n} image")
    return vals.astype(np.float64)


def cnr(a: np.ndarray, roi: Sequence[int], background: Sequence[int]) -> float:
    """Contrast-to-noise ratio ``|mean(ROI) − mean(BG)| / std(BG)`` (e.g. Bushberg et al.,
    *The Essential Physics of Medical Imaging*, 3rd ed., §4.8). Unit-free; ``inf`` when
    the background box is perfectly flat and the means differ."""
    a = np.asarray(a)
    r = _box(a, roi, "roi")
    b = _box(a, background, "background")
    diff = abs(float(np.nanmean(r)) - float(np.nanmean(b)))
    sd = float(np.nanstd(b))
    if sd == 0:
        return float("inf") if diff > 0 else 0.0
    return diff / sd


def noise_sigma(a: np.ndarray) -> float:
    """Gaussian noise σ in input units: Donoho & Johnstone's wavelet MAD estimator
    (median |HH₁ detail| / 0.6745) via ``skimage.restoration.estimate_sigma``."""
    from skimage.restoration import estimate_sigma

    a = np.asarray(a, dtype=np.float64)
    if min(a.shape) < 4:
        return float("nan")
    return float(estimate_sigma(np.nan_to_num(a)))


def default_boxes(shape: tuple[int, int]) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """A central ROI (middle 20 %) and a background box (a 12 % square near the top-left
    corner, inset by 4 %) — starting points the user then moves."""
    m, n = int(shape[0]), int(shape[1])
    roi = (int(m * 0.4), int(n * 0.4), int(m * 0.6), int(n * 0.6))
    bg = (int(m * 0.04), int(n * 0.04), int(m * 0.16), int(n * 0.16))
    return roi, bg


def quality_metrics(before: np.ndarray, after: np.ndarray, *, clean: np.ndarray | None = None,
                    roi: Sequence[int] | None = None, background: Sequence[int] | None = None,
                    with_ssim: bool = True) -> dict[str, float]:
    """Metrics shown under every enhancement result (see :data:`METRIC_INFO`).

    ``psnr_input``/``ssim_input`` compare with the input (data range of the input);
    ``psnr_clean``/``ssim_clean`` with a clean reference when one is given and has the
    same shape; ``cnr`` when both boxes are given.
    """
    b = np.asarray(before, dtype=np.float32)
    a = np.asarray(after, dtype=np.float32)
    out: dict[str, float] = {}
    if a.shape == b.shape:
        out["psnr_input"] = psnr(b, a)
        if with_ssim:
            out["ssim_input"] = ssim(b, a)
    if clean is not None and np.shape(clean) == a.shape:
        c = np.asarray(clean, dtype=np.float32)
        out["psnr_clean"] = psnr(c, a)
        if with_ssim:
            out["ssim_clean"] = ssim(c, a)
    out["rms_contrast"] = rms_contrast(a)
    if roi is not None and background is not None:
        out["cnr"] = cnr(a, roi, background)
    out["entropy"] = entropy(a)
    out["noise_sigma"] = noise_sigma(a)
    return out


def enhancement_tile_metrics(before: np.ndarray, result: Any, image: Any = None, *, clean: np.ndarray | None = None,
                             roi: Sequence[int] | None = None, background: Sequence[int] | None = None) -> dict[str, float]:
    """Numbers under every enhancement result / sweep tile: :func:`quality_metrics` of the
    result image plus the operation's own scalar metrics (e.g. the estimated σ of NLM)."""
    a = getattr(result, "image", None)
    if a is None:
        return {k: float(v) for k, v in getattr(result, "metrics", {}).items() if np.isscalar(v)}
    out = quality_metrics(before, a, clean=clean, roi=roi, background=background)
    out.update({k: float(v) for k, v in getattr(result, "metrics", {}).items() if np.isscalar(v)})
    return out


def basic_measure(before: np.ndarray, result: Any, entry: dict, image: Any) -> dict[str, float]:
    """Default dataset-wide measurement: statistics of the input and of the output."""
    out = {"mean_before": float(np.nanmean(before)), "std_before": rms_contrast(before), "entropy_before": entropy(before)}
    prim = getattr(result, "primary", None)
    if prim is not None:
        a = np.asarray(prim, dtype=np.float64)
        if a.dtype == bool or getattr(result, "mask", None) is not None and result.image is None:
            out["area_fraction"] = float(np.mean(a > 0))
        else:
            out.update({"mean_after": float(np.nanmean(a)), "std_after": rms_contrast(a), "entropy_after": entropy(a)})
    out.update({f"metric_{k}": float(v) for k, v in getattr(result, "metrics", {}).items() if np.isscalar(v)})
    return out


def _clean_of(entry: dict, shape: tuple[int, ...]) -> np.ndarray | None:
    if not str(entry.get("clean_path", "") or ""):
        return None
    from analysis.dataset import load_aux

    clean = load_aux(entry, "clean_path")
    if clean is None:
        return None
    clean = np.asarray(clean)
    if clean.ndim == 3 and clean.shape[1:] == shape:  # a volume's clean reference: middle plane
        clean = clean[clean.shape[0] // 2]
    return clean if clean.shape == shape else None


def enhancement_measure(before: np.ndarray, result: Any, entry: dict, image: Any) -> dict[str, float]:
    """Dataset-wide measure for enhancement pipelines (module-level, picklable).

    Returns ``<metric>_before`` / ``<metric>_after`` pairs so a chart can compare them:
    PSNR and SSIM against the entry's clean reference (when it has ``clean_path``), RMS
    contrast, entropy and estimated noise σ; plus ``psnr_input`` / ``ssim_input`` of the
    output against the input.
    """
    b = np.asarray(before, dtype=np.float32)
    a = getattr(result, "image", None)
    if a is None:
        raise ValueError("the pipeline does not produce an image")
    a = np.asarray(a, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"the pipeline produced a {a.ndim}-D output; expected a 2-D image")
    out: dict[str, float] = {}
    clean = _clean_of(entry, b.shape)
    if clean is not None:
        out["psnr_clean_before"] = psnr(clean, b)
        out["psnr_clean_after"] = psnr(clean, a) if a.shape == clean.shape else float("nan")
        out["ssim_clean_before"] = ssim(clean, b)
        out["ssim_clean_after"] = ssim(clean, a) if a.shape == clean.shape else float("nan")
    out["rms_contrast_before"] = rms_contrast(b)
    out["rms_contrast_after"] = rms_contrast(a)
    out["entropy_before"] = entropy(b)
    out["entropy_after"] = entropy(a)
    out["noise_sigma_before"] = noise_sigma(b)
    out["noise_sigma_after"] = noise_sigma(a)
    if a.shape == b.shape:
        out["psnr_input"] = psnr(b, a)
        out["ssim_input"] = ssim(b, a)
    return out
