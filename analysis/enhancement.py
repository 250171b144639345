"""Enhancement operations: contrast, sharpening, denoising, background/bias correction.

Intensity-domain conventions
----------------------------
Every function receives a 2-D array in **physical units** (HU, a.u., grey level; any
dtype — it is converted to float32 explicitly) and returns a float32 array. Each
registry entry states its domain in ``domain=``:

* *linear filters and denoisers* (Gaussian, median, bilateral, NLM, unsharp, Laplacian)
  work directly on the physical values and return the same units;
* *tone mappings* (stretch, gamma, log, equalization, CLAHE) rescale the data to
  ``u ∈ [0, 1]`` over a stated intensity range (the image's min–max, a percentile range
  or a window in physical units), transform ``u`` and map the result back onto that
  range, so the output stays inside the input's value range. The values are then
  remapped intensities, no longer measurements: the Result's ``units`` says so
  (``"HU (remapped)"``), views window them on their own and exports do not label them HU;
* scikit-image functions that assume ``[0, 1]`` / ``[-1, 1]`` floats (CLAHE, TV) are
  only ever called on such rescaled data — never on HU floats.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from analysis.registry import Param, Result, register

__all__ = [
    "stretch", "gamma", "log_transform", "equalize", "clahe", "unsharp", "laplacian_sharpen",
    "gaussian", "median", "bilateral", "nl_means", "tv_denoise", "background", "match_histogram",
    "intensity_range",
]

RANGE_MODES = ("image", "percentiles 0.5–99.5", "window")

_WINDOW_PARAMS = [
    # no upper bounds: typed as numbers (a 1..140000 slider cannot hit 400 HU), any finite center
    Param("center", 40.0, step=1.0, unit="phys. units",
          help="Window center in the image's physical units, e.g. 40 HU (used when the range is 'window')."),
    Param("width", 400.0, min=1.0, step=1.0, unit="phys. units",
          help="Window width in physical units, e.g. 400 HU (used when the range is 'window')."),
]


# ----------------------------------------------------------------------------- helpers
def _as_float(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 2:
        raise ValueError(f"image must be a 2-D greyscale array; got shape {a.shape}")
    return a.astype(np.float32, copy=False)


def _finite_values(a: np.ndarray) -> np.ndarray:
    return a[np.isfinite(a)] if not np.isfinite(a).all() else a


def intensity_range(a: np.ndarray, mode: str = "image", *, center: float = 40.0, width: float = 400.0,
                    low_pct: float = 0.5, high_pct: float = 99.5) -> tuple[float, float]:
    """The ``(lo, hi)`` range in physical units a tone mapping rescales to ``[0, 1]``.

    ``mode``: ``"image"`` (min–max), ``"percentiles …"`` (``low_pct``–``high_pct``) or
    ``"window"`` (``center ± width/2``, physical units).
    """
    a = np.asarray(a, dtype=np.float32)
    if mode == "image" and a.size:  # fast path: min/max propagate NaN, so one check covers non-finite data
        lo, hi = float(a.min()), float(a.max())
        if np.isfinite(lo) and np.isfinite(hi):
            return (lo, hi) if hi > lo else (lo, lo + 1.0)
    f = _finite_values(a)
    if f.size == 0:
        return 0.0, 1.0
    if mode == "window":
        lo, hi = float(center) - float(width) / 2.0, float(center) + float(width) / 2.0
    elif mode.startswith("percentiles"):
        lo, hi = (float(v) for v in np.percentile(f, [low_pct, high_pct]))
    elif mode == "image":
        lo, hi = float(f.min()), float(f.max())
    else:
        raise ValueError(f"parameter 'range_mode' must be one of {list(RANGE_MODES)}; got {mode!r}")
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def _to_unit(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """float32 ``(a - lo) / (hi - lo)`` clipped to [0, 1] (in place on a fresh array)."""
    u = np.subtract(a, np.float32(lo), dtype=np.float32)
    u *= np.float32(1.0 / (hi - lo))
    return np.clip(u, 0.0, 1.0, out=u)


def _from_unit(u: np.ndarray, lo: float, hi: float) -> np.ndarray:
    out = np.multiply(u, np.float32(hi - lo), dtype=np.float32)
    out += np.float32(lo)
    return out


def remapped_units(units: str | None) -> str:
    """Unit label of a tone-mapped output: same numeric range as the input, but no longer a
    physical measurement (so views auto-window it and exports do not call it HU)."""
    return f"{units} (remapped)" if units and not str(units).endswith("(remapped)") else (units or "remapped intensity")


def _remapped(out: np.ndarray, units: str | None) -> Result:
    return Result(image=out, units=remapped_units(units))


def _span(a: np.ndarray) -> float:
    """1–99 % intensity span (robust scale for relative parameters)."""
    f = _finite_values(a)
    if f.size == 0:
        return 1.0
    lo, hi = np.percentile(f, [1.0, 99.0])
    if hi > lo:
        return float(hi - lo)
    return float(max(f.max() - f.min(), 1.0))


# ----------------------------------------------------------------------------- tone mappings
@register(
    "enhancement.stretch",
    title="Linear contrast stretch",
    domain="physical units; the range [lo, hi] (percentiles or a window in physical units) is mapped linearly "
           "onto the image's full min–max range, values outside are clipped; output: remapped intensities in the input's "
           "range (units labelled '(remapped)')",
    params=[
        Param("mode", "percentiles", options=("percentiles", "window"), help="How [lo, hi] is chosen."),
        Param("low_pct", 1.0, min=0.0, max=49.9, step=0.1, unit="%", help="Lower percentile (mode 'percentiles')."),
        Param("high_pct", 99.0, min=50.0, max=100.0, step=0.1, unit="%", help="Upper percentile (mode 'percentiles')."),
        *_WINDOW_PARAMS,
    ],
)
def stretch(image: np.ndarray, *, mode: str = "percentiles", low_pct: float = 1.0, high_pct: float = 99.0,
            center: float = 40.0, width: float = 400.0, units: str | None = None) -> Result:
    """Linear contrast stretch (Gonzalez & Woods, *Digital Image Processing*, 4th ed., §3.2,
    piecewise-linear transformation): ``out = m + (M - m) * clip((f - lo) / (hi - lo), 0, 1)``
    with ``m, M`` the image's min and max."""
    a = _as_float(image)
    if mode == "percentiles" and not high_pct > low_pct:
        raise ValueError("parameter 'high_pct' must be greater than 'low_pct'")
    lo, hi = intensity_range(a, "window" if mode == "window" else "percentiles", center=center, width=width,
                             low_pct=low_pct, high_pct=high_pct)
    m, mx = intensity_range(a, "image")
    return _remapped(_from_unit(_to_unit(a, lo, hi), m, mx), units)


@register(
    "enhancement.gamma",
    title="Gamma correction",
    domain="any real values: rescaled to [0, 1] over the image's min–max, gamma applied, mapped back onto that range "
           "(remapped intensities; gamma 1 returns the input unchanged)",
    params=[Param("gamma", 1.0, min=0.1, max=5.0, step=0.05, log=True, help="< 1 brightens dark values, > 1 darkens; 1 is the identity.")],
)
def gamma(image: np.ndarray, *, gamma: float = 1.0, units: str | None = None) -> np.ndarray | Result:
    """Power-law (gamma) intensity transform ``out = lo + (hi - lo) * u**gamma``,
    with ``u`` the input rescaled to [0, 1] over its range (Gonzalez & Woods, 3.2.3).
    ``gamma = 1`` returns the input values unchanged (still physical units)."""
    a = _as_float(image)
    if gamma == 1.0:
        return a.copy()
    lo, hi = intensity_range(a, "image")
    return _remapped(_from_unit(np.power(_to_unit(a, lo, hi), gamma), lo, hi), units)


@register(
    "enhancement.log",
    title="Log transform",
    domain="any real values: rescaled to u ∈ [0, 1] over the image's min–max, out = log(1 + g·u) / log(1 + g), "
           "mapped back onto that range (remapped intensities)",
    params=[Param("gain", 10.0, min=0.01, max=1000.0, step=0.5, log=True,
                  help="Curvature g: small ≈ identity, large expands dark values strongly.")],
)
def log_transform(image: np.ndarray, *, gain: float = 10.0, units: str | None = None) -> Result:
    """Logarithmic transform ``s = c · log(1 + r)`` (Gonzalez & Woods, §3.2.2), normalised
    so that ``u = 0 → 0`` and ``u = 1 → 1`` on the [0, 1]-rescaled image."""
    a = _as_float(image)
    lo, hi = intensity_range(a, "image")
    u = _to_unit(a, lo, hi)
    u *= np.float32(gain)
    np.log1p(u, out=u)
    u *= np.float32(1.0 / np.log1p(gain))
    return _remapped(_from_unit(u, lo, hi), units)


@register(
    "enhancement.equalize",
    title="Histogram equalization",
    domain="any real values: histogram over the image's min–max with nbins bins; the CDF (in [0, 1]) is mapped "
           "back onto the input's min–max range (remapped intensities in the input's range)",
    params=[Param("nbins", 256, min=16, max=4096, step=16, help="Histogram bins used for the CDF.")],
)
def equalize(image: np.ndarray, *, nbins: int = 256, units: str | None = None) -> Result:
    """Global histogram equalization (Gonzalez & Woods, §3.3.1; scikit-image
    ``exposure.equalize_hist``): each value is replaced by its cumulative distribution
    value, which makes the output histogram approximately uniform."""
    from skimage import exposure

    a = _as_float(image)
    lo, hi = intensity_range(a, "image")
    cdf = exposure.equalize_hist(a, nbins=int(nbins))
    return _remapped(_from_unit(cdf, lo, hi), units)


@register(
    "enhancement.clahe",
    title="CLAHE (adaptive equalization)",
    domain="physical units → rescaled to [0, 1] over the chosen range (image min–max, 0.5–99.5 % percentiles or a "
           "window in physical units; values outside are clipped), CLAHE on [0, 1] floats (scikit-image rejects HU "
           "floats), result mapped back onto that range (remapped intensities, units labelled '(remapped)')",
    params=[
        Param("kernel_size", 64, min=8, max=512, step=8, unit="px", help="Contextual region (tile) size."),
        Param("clip_limit", 0.01, min=0.001, max=1.0, step=0.001, log=True,
              help="Normalised clip limit (scikit-image convention): higher = more contrast and more noise."),
        Param("nbins", 256, min=16, max=4096, step=16, help="Histogram bins per tile."),
        Param("range_mode", "image", options=RANGE_MODES, label="intensity range",
              help="Intensity range rescaled to [0, 1] before CLAHE (window: center/width below)."),
        *_WINDOW_PARAMS,
    ],
)
def clahe(image: np.ndarray, *, kernel_size: int = 64, clip_limit: float = 0.01, nbins: int = 256,
          range_mode: str = "image", center: float = 40.0, width: float = 400.0, units: str | None = None) -> Result:
    """Contrast-limited adaptive histogram equalization (Zuiderveld, "Contrast Limited
    Adaptive Histogram Equalization", *Graphics Gems IV*, 1994; Pizer et al., CVGIP 39,
    1987) via ``skimage.exposure.equalize_adapthist`` on explicitly rescaled data.

    scikit-image is used (not OpenCV) because its normalised ``clip_limit`` means the same
    thing for 8- and 16-bit data; at 512² it costs ~15–25 ms.
    """
    from skimage import exposure

    a = _as_float(image)
    lo, hi = intensity_range(a, range_mode, center=center, width=width)
    u = _to_unit(a, lo, hi)
    ks = int(min(kernel_size, max(a.shape)))
    out = exposure.equalize_adapthist(u, kernel_size=ks, clip_limit=float(clip_limit), nbins=int(nbins))
    return _remapped(_from_unit(out, lo, hi), units)


# ----------------------------------------------------------------------------- sharpening
@register(
    "enhancement.unsharp",
    title="Unsharp mask",
    domain="physical units; linear: out = f + amount·(f − G_radius * f), no clipping, output in input units",
    params=[
        Param("radius", 2.0, min=0.1, max=50.0, step=0.1, unit="px", help="σ of the Gaussian blur in pixels."),
        Param("amount", 1.0, min=0.0, max=10.0, step=0.1, help="Gain of the detail layer (0 = identity)."),
    ],
)
def unsharp(image: np.ndarray, *, radius: float = 2.0, amount: float = 1.0) -> np.ndarray:
    """Unsharp masking ``g = f + k (f − f̄)`` with ``f̄`` a Gaussian blur (Gonzalez & Woods,
    §3.6.3; scikit-image ``filters.unsharp_mask`` with ``preserve_range=True`` so HU values
    are neither rescaled nor clipped)."""
    from skimage.filters import unsharp_mask

    a = _as_float(image)
    return unsharp_mask(a, radius=float(radius), amount=float(amount), preserve_range=True).astype(np.float32, copy=False)


@register(
    "enhancement.laplacian",
    title="Laplacian sharpening",
    domain="physical units; linear: out = f − c·∇²f (∇² the 4-neighbour Laplacian, or Laplacian of Gaussian "
           "when sigma > 0); flat regions and linear ramps are unchanged; output in input units",
    params=[
        Param("strength", 0.5, min=0.0, max=5.0, step=0.05, help="c in f − c·∇²f (0 = identity)."),
        Param("sigma", 0.0, min=0.0, max=5.0, step=0.1, unit="px",
              help="Pre-smoothing σ (Laplacian of Gaussian) to avoid amplifying noise; 0 = plain Laplacian."),
    ],
)
def laplacian_sharpen(image: np.ndarray, *, strength: float = 0.5, sigma: float = 0.0) -> np.ndarray:
    """Laplacian sharpening ``g = f − c ∇²f`` (Gonzalez & Woods, §3.6.2, eq. 3-63 with the
    centre-negative kernel ``[[0,1,0],[1,-4,1],[0,1,0]]``). The equivalent kernel
    ``δ − c·L`` sums to 1, so the mean level of flat regions is preserved and edges get the
    characteristic over/undershoot."""
    a = _as_float(image)
    if sigma > 0:
        lap = ndi.gaussian_laplace(a, sigma=float(sigma), mode="reflect")
    else:
        import cv2  # ksize=1 is exactly the 4-neighbour kernel; ~3× faster than ndi.laplace

        lap = cv2.Laplacian(np.ascontiguousarray(a), cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REFLECT)
    lap *= np.float32(-strength)
    lap += a
    return lap


# ----------------------------------------------------------------------------- smoothing / denoising
@register(
    "enhancement.gaussian",
    title="Gaussian smoothing",
    domain="any real values; linear filter, output in input units",
    params=[Param("sigma", 1.0, min=0.1, max=20.0, step=0.1, unit="px", help="Standard deviation of the Gaussian kernel in pixels.")],
)
def gaussian(image: np.ndarray, *, sigma: float = 1.0) -> np.ndarray:
    """Gaussian low-pass filter (scipy.ndimage.gaussian_filter, reflect borders)."""
    return ndi.gaussian_filter(_as_float(image), sigma=sigma, mode="reflect")


@register(
    "enhancement.median",
    title="Median filter",
    domain="physical units; order statistic of a size×size square window (edges replicated), output in input units",
    params=[Param("size", 3, min=2, max=15, step=1, unit="px", help="Side of the square window.")],
)
def median(image: np.ndarray, *, size: int = 3) -> np.ndarray:
    """Median filter over a square window (Gonzalez & Woods, §5.3.2).

    Odd sizes ≤ 5 use OpenCV's ``medianBlur`` on float32 (exact, ~50× faster than
    ``scipy.ndimage.median_filter`` at 512²); other sizes use scipy. Both replicate edges,
    so the two paths give identical results.
    """
    a = np.ascontiguousarray(_as_float(image))
    size = int(size)
    if size in (3, 5) and np.isfinite(a).all():
        import cv2

        return cv2.medianBlur(a, size)
    return ndi.median_filter(a, size=size, mode="nearest")


@register(
    "enhancement.bilateral",
    title="Bilateral filter",
    domain="physical units; range kernel σ_r = sigma_range × the image's 1–99 % intensity span (so it adapts to HU, "
           "a.u. or grey levels), output in input units",
    params=[
        Param("sigma_spatial", 3.0, min=0.5, max=20.0, step=0.5, unit="px", help="Spatial Gaussian σ in pixels."),
        Param("sigma_range", 0.1, min=0.005, max=2.0, step=0.005, log=True,
              help="Range σ as a fraction of the 1–99 % intensity span: smaller keeps more edges."),
    ],
    slow=True,
)
def bilateral(image: np.ndarray, *, sigma_spatial: float = 3.0, sigma_range: float = 0.1) -> Result:
    """Bilateral filter (Tomasi & Manduchi, ICCV 1998): edge-preserving smoothing with a
    spatial and a range Gaussian.

    OpenCV's ``bilateralFilter`` on float32 is used because it is ~60× faster than
    ``skimage.restoration.denoise_bilateral`` (~12 ms vs ~690 ms at 512²) and takes the
    range σ in the data's own units (no rescaling). Window radius = round(1.5 σ_spatial).
    """
    import cv2

    a = np.ascontiguousarray(_as_float(image))
    sr = float(sigma_range) * _span(a)
    out = cv2.bilateralFilter(a, -1, sr, float(sigma_spatial))
    return Result(image=out, metrics={"sigma_range_units": sr}, notes=[f"range σ = {sr:.4g} (input units)"])


def estimate_noise(a: np.ndarray) -> float:
    """Gaussian noise σ in input units (Donoho & Johnstone wavelet MAD, via
    ``skimage.restoration.estimate_sigma``)."""
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(np.asarray(a, dtype=np.float64)))


@register(
    "enhancement.nlm",
    title="Non-local means",
    domain="physical units; noise σ estimated from the image (wavelet MAD, input units), filtering strength "
           "h = h_factor·σ in input units; output in input units",
    params=[
        Param("patch_size", 5, min=3, max=11, step=1, unit="px", help="Side of the compared patches."),
        Param("patch_distance", 6, min=1, max=15, step=1, unit="px", help="Search radius for similar patches."),
        Param("h_factor", 0.8, min=0.05, max=3.0, step=0.05, help="h as a multiple of the estimated noise σ (0.6–1.0 is typical)."),
    ],
    slow=True,
)
def nl_means(image: np.ndarray, *, patch_size: int = 5, patch_distance: int = 6, h_factor: float = 0.8) -> Result:
    """Non-local means denoising (Buades, Coll & Morel, CVPR 2005; fast mode of Darbon et
    al., ISBI 2008) via ``skimage.restoration.denoise_nl_means`` with ``preserve_range``
    semantics (floats are used as given, h in input units). The noise σ is estimated with
    ``skimage.restoration.estimate_sigma`` and passed as ``sigma``."""
    from skimage.restoration import denoise_nl_means

    a = _as_float(image)
    sigma = estimate_noise(a)
    if sigma <= 0:
        return Result(image=a.copy(), metrics={"sigma_est": 0.0, "h": 0.0}, notes=["no noise detected: image unchanged"])
    h = float(h_factor) * sigma
    out = denoise_nl_means(a, patch_size=int(patch_size), patch_distance=int(patch_distance), h=h,
                           fast_mode=True, sigma=sigma, preserve_range=True)
    return Result(image=np.asarray(out, dtype=np.float32), metrics={"sigma_est": sigma, "h": h},
                  notes=[f"estimated noise σ = {sigma:.4g}, h = {h:.4g} (input units)"])


@register(
    "enhancement.tv",
    title="Total-variation denoising",
    domain="physical units → rescaled to [0, 1] over the image's min–max (the weight is relative to that range), "
           "Chambolle TV on [0, 1], mapped back to input units",
    params=[
        Param("weight", 0.05, min=0.001, max=2.0, step=0.005, log=True, help="Denoising weight on the [0, 1]-rescaled image: larger = flatter."),
        Param("max_num_iter", 200, min=10, max=1000, step=10, help="Maximum iterations."),
    ],
    slow=True,
)
def tv_denoise(image: np.ndarray, *, weight: float = 0.05, max_num_iter: int = 200) -> np.ndarray:
    """Total-variation (ROF) denoising (Rudin, Osher & Fatemi, Physica D 1992) with
    Chambolle's projection algorithm (J. Math. Imaging Vis. 2004), scikit-image
    ``restoration.denoise_tv_chambolle``."""
    from skimage.restoration import denoise_tv_chambolle

    a = _as_float(image)
    lo, hi = intensity_range(a, "image")
    u = (a - lo) / (hi - lo)
    out = denoise_tv_chambolle(u, weight=float(weight), max_num_iter=int(max_num_iter))
    return _from_unit(out, lo, hi)


# ----------------------------------------------------------------------------- background / bias
@register(
    "enhancement.background",
    title="Background / bias correction",
    domain="physical units. 'rolling ball' and 'top-hat' subtract a background estimate (output = input − background, "
           "input units, ≥ 0); 'bias field' divides the foreground by a smooth multiplicative field normalised to mean 1 "
           "(MR/X-ray shading; output in input units, background pixels unchanged)",
    params=[
        Param("method", "top-hat", options=("top-hat", "rolling ball", "bias field"), help="Background model."),
        Param("radius", 25, min=2, max=300, step=1, unit="px", help="Size of the largest structure kept (ball / square half-size / field σ)."),
    ],
    slow=True,
)
def background(image: np.ndarray, *, method: str = "top-hat", radius: int = 25) -> Result:
    """Background and bias-field correction.

    * ``rolling ball``: Sternberg, "Biomedical image processing", IEEE Computer 16(1), 1983
      (``skimage.restoration.rolling_ball``; the ball radius is in px *and* intensity units).
    * ``top-hat``: white top-hat ``f − (f ∘ B)`` with a flat square of side 2·radius+1
      (Gonzalez & Woods, §9.6.3); separable, so fast at any radius.
    * ``bias field``: homomorphic correction by normalised convolution of the foreground
      (Cohen, DuBois & Zeineh, Hum. Brain Mapp. 10, 2000): ``B = G*(f·m) / G*m`` with ``m``
      the Otsu foreground and ``G`` a Gaussian of σ = radius; ``out = f · mean_m(B) / B`` on
      the foreground.
    """
    a = _as_float(image)
    r = int(radius)
    if method == "rolling ball":
        from skimage.restoration import rolling_ball

        bg = rolling_ball(a, radius=r).astype(np.float32)
        return Result(image=(a - bg).astype(np.float32), extras={"background": bg})
    if method == "top-hat":
        bg = ndi.grey_opening(a, size=(2 * r + 1, 2 * r + 1), mode="reflect")
        return Result(image=(a - bg).astype(np.float32), extras={"background": bg})
    if method == "bias field":
        from skimage.filters import threshold_otsu

        f = _finite_values(a)
        m = a > threshold_otsu(f) if f.size and f.max() > f.min() else np.ones_like(a, bool)
        if not m.any():
            m = np.ones_like(a, bool)
        mf = m.astype(np.float32)
        num = ndi.gaussian_filter(a * mf, sigma=r, mode="reflect")
        den = ndi.gaussian_filter(mf, sigma=r, mode="reflect")
        field = np.where(den > 1e-3, num / np.maximum(den, 1e-3), np.nan)
        mean_b = float(np.nanmean(field[m]))
        if not np.isfinite(mean_b) or mean_b == 0:
            return Result(image=a.copy(), notes=["no usable foreground: image unchanged"])
        gain = mean_b / field
        ok = m & np.isfinite(gain) & (field > 0)
        out = a.copy()
        out[ok] = a[ok] * gain[ok]
        rel = np.where(ok, field / mean_b, 1.0).astype(np.float32)
        return Result(image=out.astype(np.float32), extras={"background": rel},
                      notes=[f"estimated bias field range {float(rel[m].min()):.3f}–{float(rel[m].max()):.3f} (relative)"])
    raise ValueError(f"parameter 'method' must be one of ['top-hat', 'rolling ball', 'bias field']; got {method!r}")


# ----------------------------------------------------------------------------- histogram matching
@register(
    "enhancement.match_histogram",
    title="Histogram matching to a reference",
    domain="any real values; output takes the reference image's value distribution and units "
           "(quantile mapping, exact for the reference's values)",
    params=[],
)
def match_histogram(image: np.ndarray, *, reference: np.ndarray | None = None) -> Result:
    """Histogram specification (Gonzalez & Woods, §3.3.2) via
    ``skimage.exposure.match_histograms``: each value is mapped to the reference value of
    the same quantile. Needs the ``reference`` context image."""
    from skimage.exposure import match_histograms

    if reference is None:
        raise ValueError("enhancement.match_histogram needs a reference image (parameter 'reference')")
    a = _as_float(image)
    ref = np.asarray(reference)
    if ref.ndim != 2:
        raise ValueError(f"parameter 'reference' must be a 2-D greyscale image; got shape {ref.shape}")
    out = match_histograms(a, ref.astype(np.float32, copy=False)).astype(np.float32, copy=False)
    return Result(image=out, units="reference's units")
