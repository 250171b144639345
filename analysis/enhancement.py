"""Enhancement operations (contrast, sharpening, denoising, bias correction).

Intensity domain conventions: every function receives a 2-D float32 array in physical
units (HU, a.u., grey level) and returns an array in the *same* units unless its
``domain`` says otherwise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from analysis.registry import Param, register


def _range(a: np.ndarray) -> tuple[float, float]:
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    return lo, (hi if hi > lo else lo + 1.0)


@register(
    "enhancement.gamma",
    title="Gamma correction",
    domain="any real values: rescaled to [0, 1] over the image's min–max, gamma applied, mapped back to input units",
    params=[Param("gamma", 1.0, min=0.1, max=5.0, step=0.05, log=True, help="< 1 brightens dark values, > 1 darkens; 1 is the identity.")],
)
def gamma(image: np.ndarray, *, gamma: float = 1.0) -> np.ndarray:
    """Power-law (gamma) intensity transform ``out = lo + (hi - lo) * u**gamma``,
    with ``u`` the input rescaled to [0, 1] over its range (Gonzalez & Woods, 3.2.3)."""
    a = np.asarray(image, dtype=np.float32)
    if gamma == 1.0:
        return a.copy()
    lo, hi = _range(a)
    u = np.clip((a - lo) / (hi - lo), 0.0, 1.0)
    return (lo + (hi - lo) * np.power(u, gamma)).astype(np.float32)


@register(
    "enhancement.gaussian",
    title="Gaussian smoothing",
    domain="any real values; linear filter, output in input units",
    params=[Param("sigma", 1.0, min=0.1, max=20.0, step=0.1, unit="px", help="Standard deviation of the Gaussian kernel in pixels.")],
)
def gaussian(image: np.ndarray, *, sigma: float = 1.0) -> np.ndarray:
    """Gaussian low-pass filter (scipy.ndimage.gaussian_filter, reflect borders)."""
    return ndi.gaussian_filter(np.asarray(image, dtype=np.float32), sigma=sigma, mode="reflect")
