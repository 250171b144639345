"""Display windowing: a *view* of pixels in physical units, never a change of the data.

The VOI linear function follows DICOM PS3.3 C.11.2.1.2.1 (window center ``c`` and width
``w`` in the units of the modality-LUT output, e.g. HU):

* ``x <= c - 0.5 - (w - 1) / 2``  → lowest display value
* ``x >  c - 0.5 + (w - 1) / 2``  → highest display value
* otherwise ``((x - (c - 0.5)) / (w - 1) + 0.5)`` scaled to the display range.

MONOCHROME1 images are inverted *after* windowing (PS3.3 C.7.6.3.1.2).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from analysis.image import Image
from analysis.registry import Param, register

__all__ = [
    "CT_PRESETS",
    "AUTO_WINDOWS",
    "voi_linear",
    "window_to_uint8",
    "auto_window",
    "default_window",
    "to_display",
    "histogram",
    "downsample",
    "window_image",
]

#: CT window presets (center, width) in HU, as commonly used in radiology workstations.
CT_PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (32.0, 8.0),
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "abdomen": (50.0, 400.0),
    "liver": (30.0, 150.0),
    "bone": (400.0, 1800.0),
}

#: percentile auto-windows (low %, high %)
AUTO_WINDOWS: dict[str, tuple[float, float]] = {
    "auto 0.5–99.5 %": (0.5, 99.5),
    "auto 1–99 %": (1.0, 99.0),
    "full range": (0.0, 100.0),
}


def voi_linear(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM VOI LINEAR function → float32 in [0, 1]."""
    width = max(float(width), 1.0)
    c = float(center) - 0.5
    half = (width - 1.0) / 2.0
    x = np.asarray(x, dtype=np.float32)
    out = (x - c) / max(width - 1.0, 1e-6) + 0.5
    out = np.where(x <= c - half, 0.0, np.where(x > c + half, 1.0, out))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def window_to_uint8(x: np.ndarray, center: float, width: float, *, invert: bool = False) -> np.ndarray:
    """Window physical values into uint8 display values (MONOCHROME1: invert after)."""
    v = voi_linear(x, center, width)
    if invert:
        v = 1.0 - v
    return np.round(v * 255.0).astype(np.uint8)


def _finite(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        a = a[np.isfinite(a)]
    return a


def auto_window(pixels: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """(center, width) spanning the ``low``–``high`` percentiles of the finite values.

    Large images are sampled on a regular grid (every k-th pixel) to stay fast.
    """
    a = _finite(pixels).ravel()
    if a.size == 0:
        return (0.0, 1.0)
    if a.size > 1_000_000:
        a = a[:: a.size // 1_000_000 + 1]
    lo, hi = np.percentile(a, [low, high]) if (low, high) != (0.0, 100.0) else (a.min(), a.max())
    lo, hi = float(lo), float(hi)
    if hi <= lo:
        hi = lo + 1.0
    return ((lo + hi) / 2.0, hi - lo)


def default_window(image: Image) -> tuple[float, float]:
    """The file's own window when it has a usable one, else the 0.5–99.5 % auto-window."""
    if image.window is not None:
        c, w = image.window
        if np.isfinite(c) and np.isfinite(w) and w >= 1:
            return (float(c), float(w))
    if image.is_rgb:
        return (127.5, 256.0) if image.pixels.dtype == np.uint8 else auto_window(image.pixels)
    return auto_window(image.pixels)


def _apply_voi_lut(x: np.ndarray, lut: np.ndarray, first: float) -> np.ndarray:
    lut = np.asarray(lut, dtype=np.float32)
    idx = np.clip(np.round(np.asarray(x, dtype=np.float64) - first), 0, len(lut) - 1).astype(np.intp)
    vals = lut[idx]
    lo, hi = float(lut.min()), float(lut.max())
    return ((vals - lo) / max(hi - lo, 1e-6)).astype(np.float32)


def to_display(
    image: Image | np.ndarray,
    window: tuple[float, float] | None = None,
    *,
    invert: bool | None = None,
    use_voi_lut: bool = False,
) -> np.ndarray:
    """uint8 display array (2-D grey or (M, N, 3) RGB) for a 2-D image.

    Greyscale: ``window`` (center, width) in physical units; default = the image's own.
    Colour: 8-bit data shown as stored, 16-bit scaled by the window.
    """
    img = image if isinstance(image, Image) else Image(np.asarray(image))
    img = img.middle_plane()
    inv = img.invert if invert is None else invert
    a = img.pixels
    if img.is_rgb:
        a = a[..., :3]
        if a.dtype == np.uint8 and window is None:
            return np.ascontiguousarray(a)
        c, w = window or default_window(img)
        return window_to_uint8(a, c, w)
    if use_voi_lut and img.voi_lut is not None and window is None:
        v = _apply_voi_lut(a, img.voi_lut, img.voi_lut_first)
        if inv:
            v = 1.0 - v
        return np.round(v * 255).astype(np.uint8)
    c, w = window or default_window(img)
    a = np.asarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        a = np.nan_to_num(a, nan=c - w, posinf=c + w, neginf=c - w)
    return window_to_uint8(a, c, w, invert=inv)


def histogram(pixels: np.ndarray, bins: int = 256, value_range: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(counts, edges) of finite values; numpy-side so plots ship a few kB, not every pixel."""
    a = _finite(pixels).ravel()
    if a.size == 0:
        return np.zeros(bins, dtype=np.int64), np.linspace(0, 1, bins + 1)
    if value_range is None:
        value_range = (float(a.min()), float(a.max()) if a.max() > a.min() else float(a.min()) + 1.0)
    return np.histogram(a, bins=bins, range=value_range)


def downsample(a: np.ndarray, max_side: int) -> np.ndarray:
    """Block-mean downsample a 2-D (or (M, N, C)) array so its longer side ≤ ``max_side``."""
    m, n = a.shape[:2]
    f = int(np.ceil(max(m, n) / max_side))
    if f <= 1:
        return a
    mm, nn = (m // f) * f, (n // f) * f
    b = a[:mm, :nn].astype(np.float32)
    b = b.reshape(mm // f, f, nn // f, f, *a.shape[2:]).mean(axis=(1, 3))
    return b.astype(a.dtype) if a.dtype.kind in "ui" else b


# ----------------------------------------------------------------------------- registry
@register(
    "display.window",
    title="Display window (VOI linear)",
    domain="physical units in (HU, a.u., grey level); display fraction [0, 1] out — a view, not for measurement",
    params=[
        Param("center", 40.0, min=-5000.0, max=70000.0, step=1.0, unit="phys. units", help="Window center (level) in the image's physical units, e.g. HU for CT."),
        Param("width", 400.0, min=1.0, max=140000.0, step=1.0, unit="phys. units", help="Window width in physical units (≥ 1)."),
        Param("invert", False, help="Invert after windowing (MONOCHROME1 display)."),
    ],
)
def window_image(image: np.ndarray, *, center: float = 40.0, width: float = 400.0, invert: bool = False) -> np.ndarray:
    """Apply the DICOM VOI linear window (PS3.3 C.11.2.1.2.1); returns display fraction in [0, 1]."""
    v = voi_linear(image, center, width)
    return (1.0 - v) if invert else v


def preset_names(image: Image) -> list[str]:
    """Window presets that make sense for this image (CT presets only for HU data)."""
    names: list[str] = []
    if image.window is not None:
        names.append("file window")
    if image.units == "HU":
        names += list(CT_PRESETS)
    names += list(AUTO_WINDOWS)
    return names


def preset_window(image: Image, name: str) -> tuple[float, float]:
    if name == "file window" and image.window is not None:
        return default_window(image)
    if name in CT_PRESETS:
        return CT_PRESETS[name]
    if name in AUTO_WINDOWS:
        lo, hi = AUTO_WINDOWS[name]
        return auto_window(image.pixels, lo, hi)
    raise ValueError(f"unknown window preset {name!r}")


def describe_window(window: tuple[float, float], units: str) -> dict[str, Any]:
    c, w = window
    return {"center": c, "width": w, "low": c - w / 2, "high": c + w / 2, "units": units}
