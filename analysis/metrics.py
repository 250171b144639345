"""Image quality metrics and the default per-image measurement used by dataset-wide runs.

All metrics take arrays in physical units and state their domain.
"""

from __future__ import annotations

from typing import Any

import numpy as np


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
