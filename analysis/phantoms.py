"""Seeded synthetic images with exact ground truth (pure NumPy/SciPy, no I/O).

Everything here is deterministic given its seed, so tests and the sample-dataset builder
(``data/build_sample.py``) can rely on exact masks, label maps and transforms.

Conventions
-----------
* Arrays are ``(M, N)`` = (rows, cols); physical coordinates are in mm, ``y`` along rows
  and ``x`` along columns, origin at the image centre.
* **Transforms** are 3×3 homogeneous matrices ``T`` in ``(row, col, 1)`` pixel coordinates
  mapping FIXED coordinates to MOVING coordinates: ``fixed(p) = moving(T @ p)``. Hence
  ``scipy.ndimage.affine_transform(moving, T[:2, :2], offset=T[:2, 2])`` (what
  :func:`warp_affine` does) reproduces the fixed image.
* **Displacement fields** ``d`` have shape ``(2, M, N)`` (row, col components in px) with
  ``fixed(p) = moving(p + d(p))`` (:func:`warp_displacement`).
* Tissue label codes are :data:`TISSUE`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "TISSUE",
    "T1_VALUES",
    "T2_VALUES",
    "PET_VALUES",
    "SubjectParams",
    "LesionSpec",
    "HeadSlice",
    "subject_params",
    "head_slice",
    "sample_lesion",
    "lesion_mask",
    "smooth_field",
    "render_contrast",
    "one_hot",
    "downsample_block",
    "block_transform",
    "rigid_matrix",
    "similarity_matrix",
    "flip_matrix",
    "warp_affine",
    "smooth_displacement",
    "warp_displacement",
    "bias_field",
    "add_gaussian_noise",
    "add_rician_noise",
    "chest_radiograph",
    "equivalent_diameter_mm",
]

#: tissue label codes used by every label map produced here
TISSUE: dict[str, int] = {"air": 0, "scalp": 1, "skull": 2, "csf": 3, "gm": 4, "wm": 5, "lesion": 6}

#: mean CT numbers (HU) of the head phantom (skull is graded between tables and diploe)
HU_MEAN: dict[str, float] = {"air": -1000.0, "scalp": 20.0, "csf": 8.0, "gm": 38.0, "wm": 28.0}
SKULL_TABLE_HU = 1450.0
SKULL_DIPLOE_HU = 780.0

#: T1-like (a.u.): WM bright, CSF dark, fat-rich scalp bright, cortical bone dark
T1_VALUES: dict[int, float] = {0: 0.0, 1: 600.0, 2: 80.0, 3: 150.0, 4: 450.0, 5: 650.0, 6: 300.0}
#: T2-like (a.u.): inverted — CSF bright, WM dark, lesion bright
T2_VALUES: dict[int, float] = {0: 0.0, 1: 350.0, 2: 60.0, 3: 1000.0, 4: 550.0, 5: 380.0, 6: 850.0}
#: PET-like uptake (kBq/ml, FDG-like): GM > WM, lesion is a hot spot
PET_VALUES: dict[int, float] = {0: 0.0, 1: 1.0, 2: 0.5, 3: 0.5, 4: 8.0, 5: 3.0, 6: 16.0}


def _rng(*seed: int) -> np.random.Generator:
    return np.random.default_rng([int(s) % (2**32) for s in seed])


# ----------------------------------------------------------------------------- head phantom
@dataclass(frozen=True)
class SubjectParams:
    """Subject-specific head geometry (all lengths in mm, angles in degrees)."""

    seed: int
    semi_axes_mm: tuple[float, float]  # (rows = antero-posterior, cols = left-right), widest level
    angle_deg: float
    center_mm: tuple[float, float]
    harmonics: tuple[tuple[int, float, float], ...]  # (k, amplitude, phase) of the outline
    scalp_mm: float
    skull_mm: float
    gm_mm: float
    sulcus_freq: int
    sulcus_phase: float
    ventricle_scale: float


def subject_params(seed: int) -> SubjectParams:
    """Random but reproducible head geometry for subject ``seed``."""
    r = _rng(seed, 101)
    harmonics = tuple((k, float(r.uniform(0.0, 0.025)), float(r.uniform(0, 2 * np.pi))) for k in (2, 3, 4, 5))
    return SubjectParams(
        seed=int(seed),
        semi_axes_mm=(float(r.uniform(82.0, 90.0)), float(r.uniform(67.0, 75.0))),
        angle_deg=float(r.uniform(-9.0, 9.0)),
        center_mm=(float(r.uniform(-4.0, 4.0)), float(r.uniform(-4.0, 4.0))),
        harmonics=harmonics,
        scalp_mm=float(r.uniform(3.0, 5.0)),
        skull_mm=float(r.uniform(5.0, 8.0)),
        gm_mm=float(r.uniform(2.5, 3.5)),
        sulcus_freq=int(r.integers(16, 24)),
        sulcus_phase=float(r.uniform(0, 2 * np.pi)),
        ventricle_scale=float(r.uniform(0.8, 1.3)),
    )


@dataclass(frozen=True)
class LesionSpec:
    """An irregular blob: polar outline ``radius*(1 + Σ a_k cos(kθ + φ_k))`` around ``center_mm``.

    ``center_mm`` is (y, x) in image-centred mm. For a 3-D lesion give ``z_center``/``z_radius``
    (in the same units as the ``z`` passed to :func:`head_slice`); the in-plane radius then
    shrinks as ``sqrt(1 - ((z - z_center)/z_radius)^2)``.
    """

    center_mm: tuple[float, float]
    radius_mm: float
    harmonics: tuple[tuple[int, float, float], ...] = ()
    hu: float = 75.0
    z_center: float | None = None
    z_radius: float | None = None

    def radius_at(self, z: float | None) -> float:
        if self.z_center is None or self.z_radius is None or z is None:
            return self.radius_mm
        t = (z - self.z_center) / self.z_radius
        return self.radius_mm * math.sqrt(max(0.0, 1.0 - t * t))

    @property
    def max_extent_mm(self) -> float:
        return self.radius_mm * (1.0 + sum(abs(a) for _, a, _ in self.harmonics))


@dataclass
class HeadSlice:
    """One CT slice of the head phantom with its exact ground truth."""

    hu: np.ndarray  # float32 HU (noise included)
    labels: np.ndarray  # uint8, codes of TISSUE (lesion overrides parenchyma)
    lesion_mask: np.ndarray  # bool, exactly the pixels labelled "lesion"
    brain_mask: np.ndarray  # bool, intracranial soft tissue (CSF, GM, WM, lesion)
    clean_hu: np.ndarray  # float32 HU before partial-volume blur and noise
    spacing: tuple[float, float]
    lesion: LesionSpec | None = None
    info: dict = field(default_factory=dict)


def _grid_mm(shape: tuple[int, int], spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    m, n = shape
    y = (np.arange(m, dtype=np.float64) - (m - 1) / 2.0) * spacing[0]
    x = (np.arange(n, dtype=np.float64) - (n - 1) / 2.0) * spacing[1]
    return np.meshgrid(y, x, indexing="ij")


def smooth_field(shape: tuple[int, int], sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std smooth random field (white noise low-passed by a Gaussian)."""
    f = ndi.gaussian_filter(rng.standard_normal(shape), sigma_px, mode="wrap")
    s = f.std()
    return ((f - f.mean()) / (s if s > 0 else 1.0)).astype(np.float64)


def lesion_mask(shape: tuple[int, int], spacing: tuple[float, float], spec: LesionSpec,
                z: float | None = None) -> np.ndarray:
    """Exact boolean mask of the pixels whose centres lie inside the lesion outline."""
    yy, xx = _grid_mm(shape, spacing)
    dy, dx = yy - spec.center_mm[0], xx - spec.center_mm[1]
    rr = np.hypot(dy, dx)
    th = np.arctan2(dy, dx)
    rad = spec.radius_at(z)
    if rad <= 0:
        return np.zeros(shape, bool)
    bound = np.ones_like(th)
    for k, a, ph in spec.harmonics:
        bound += a * np.cos(k * th + ph)
    return rr <= rad * bound


def equivalent_diameter_mm(mask: np.ndarray, spacing: tuple[float, float]) -> float:
    """Diameter of the disc with the same area as ``mask``."""
    area = float(mask.sum()) * spacing[0] * spacing[1]
    return 2.0 * math.sqrt(area / math.pi)


def head_slice(
    params: SubjectParams,
    z: float,
    *,
    shape: tuple[int, int] = (256, 256),
    spacing: tuple[float, float] = (0.8, 0.8),
    lesion: LesionSpec | None = None,
    noise_sigma: float = 5.0,
    hu_offset: float = 0.0,
    blur_px: float = 0.6,
    seed: int = 0,
) -> HeadSlice:
    """Axial CT slice of a head-like phantom in Hounsfield units.

    Parameters
    ----------
    params : SubjectParams
        Subject geometry (see :func:`subject_params`).
    z : float
        Level in the head, ``-0.3`` (skull base) .. ``0.8`` (vertex); 0 is the widest level.
        Ventricles appear for ``-0.1 < z < 0.5``, deep grey nuclei for ``-0.25 < z < 0.25``.
    lesion : LesionSpec, optional
        A hyperdense lesion placed exactly (label 6) over the parenchyma.
    noise_sigma : float
        Standard deviation (HU) of the additive Gaussian noise.
    hu_offset : float
        Added to all soft tissue and bone (models a scanner calibration difference).
    blur_px : float
        Partial-volume blur (Gaussian sigma in px) applied before the noise.
    seed : int
        Seed of texture and noise.
    """
    if not -0.35 <= z <= 0.85:
        raise ValueError(f"z must lie in [-0.35, 0.85], got {z}")
    rng = _rng(params.seed, seed, 7)
    yy, xx = _grid_mm(shape, spacing)
    # rotate into the head frame
    a = math.radians(params.angle_deg)
    dy, dx = yy - params.center_mm[0], xx - params.center_mm[1]
    u = math.cos(a) * dy + math.sin(a) * dx  # along the head's long axis
    v = -math.sin(a) * dy + math.cos(a) * dx
    r = np.hypot(u, v)
    th = np.arctan2(v, u)
    s = math.sqrt(max(1.0 - z * z, 0.05))
    A, B = params.semi_axes_mm[0] * s, params.semi_axes_mm[1] * s
    R = A * B / np.sqrt((B * np.cos(th)) ** 2 + (A * np.sin(th)) ** 2)
    for k, amp, ph in params.harmonics:
        R = R * (1.0 + amp * np.cos(k * th + ph))
    depth = R - r  # mm below the outer surface along the radius

    labels = np.zeros(shape, np.uint8)
    scalp_end = params.scalp_mm
    skull_end = scalp_end + params.skull_mm
    csf_end = skull_end + 1.2
    labels[depth >= 0] = TISSUE["scalp"]
    skull = (depth >= scalp_end) & (depth < skull_end)
    labels[skull] = TISSUE["skull"]
    intracranial = depth >= skull_end
    labels[intracranial] = TISSUE["csf"]
    db = depth - csf_end  # depth below the brain surface
    g = np.clip((np.cos(params.sulcus_freq * th + params.sulcus_phase) - 0.5) / 0.5, 0.0, 1.0)
    sulcus_depth = 9.0 * s
    gm_thick = params.gm_mm * (1.0 + 0.3 * np.sin(7 * th + params.sulcus_phase))
    parenchyma = db >= 0
    sulcus = parenchyma & (g > 0.9) & (db < sulcus_depth * g ** 3)
    gm = parenchyma & ~sulcus & (db < gm_thick + sulcus_depth * g ** 2)
    wm = parenchyma & ~sulcus & ~gm
    labels[gm] = TISSUE["gm"]
    labels[wm] = TISSUE["wm"]
    # deep structures (in the head frame, mm)
    if -0.25 < z < 0.25:
        for side in (-1.0, 1.0):
            nuc = ((u - 4.0 * s) / (13.0 * s)) ** 2 + ((v - side * 21.0 * s) / (8.0 * s)) ** 2 <= 1.0
            labels[nuc & wm] = TISSUE["gm"]
    if -0.1 < z < 0.5:
        prof = math.sin(math.pi * (z + 0.1) / 0.6) * params.ventricle_scale
        for side in (-1.0, 1.0):
            c, sn = math.cos(side * 0.22), math.sin(side * 0.22)
            uu = c * (u + 3.0) + sn * (v - side * 6.5)
            vv = -sn * (u + 3.0) + c * (v - side * 6.5)
            vent = (uu / (24.0 * prof + 1e-6)) ** 2 + (vv / (4.5 * prof + 1e-6)) ** 2 <= 1.0
            labels[vent & parenchyma] = TISSUE["csf"]

    tex = smooth_field(shape, 3.0, rng)
    tex2 = smooth_field(shape, 1.5, rng)
    clean = np.full(shape, HU_MEAN["air"], np.float64)
    for name in ("scalp", "csf", "gm", "wm"):
        sel = labels == TISSUE[name]
        amp = {"scalp": 4.0, "csf": 1.0, "gm": 2.0, "wm": 1.6}[name]
        clean[sel] = HU_MEAN[name] + amp * (0.7 * tex[sel] + 0.3 * tex2[sel])
    t = np.clip((depth[skull] - scalp_end) / params.skull_mm, 0.0, 1.0)
    clean[skull] = np.clip(SKULL_DIPLOE_HU + (SKULL_TABLE_HU - SKULL_DIPLOE_HU) * (2.0 * t - 1.0) ** 2
                           + 30.0 * tex[skull], 700.0, 1500.0)

    les = np.zeros(shape, bool)
    if lesion is not None:
        les = lesion_mask(shape, spacing, lesion, z) & (labels >= TISSUE["csf"]) & intracranial
        labels[les] = TISSUE["lesion"]
        clean[les] = lesion.hu + 1.5 * tex2[les]
    clean[labels != TISSUE["air"]] += hu_offset

    hu = ndi.gaussian_filter(clean, blur_px) if blur_px > 0 else clean.copy()
    if noise_sigma > 0:
        hu = hu + rng.normal(0.0, noise_sigma, shape)
    brain = labels >= TISSUE["csf"]
    return HeadSlice(
        hu=hu.astype(np.float32),
        labels=labels,
        lesion_mask=les,
        brain_mask=brain,
        clean_hu=clean.astype(np.float32),
        spacing=(float(spacing[0]), float(spacing[1])),
        lesion=lesion,
        info={"z": float(z), "noise_sigma": float(noise_sigma), "hu_offset": float(hu_offset)},
    )


def sample_lesion(
    labels: np.ndarray,
    spacing: tuple[float, float],
    rng: np.random.Generator,
    *,
    diameter_mm: tuple[float, float] = (7.0, 22.0),
    hu: tuple[float, float] = (66.0, 84.0),
    margin_mm: float = 2.0,
) -> LesionSpec:
    """Draw a lesion that lies entirely inside the parenchyma (GM/WM) of ``labels``.

    The centre is chosen among pixels whose distance to anything other than GM/WM exceeds
    the lesion's largest radius plus ``margin_mm``; the diameter shrinks if no room.
    """
    allowed = (labels == TISSUE["gm"]) | (labels == TISSUE["wm"])
    dist = ndi.distance_transform_edt(allowed, sampling=spacing)
    harmonics = tuple((k, float(rng.uniform(0.03, 0.12)), float(rng.uniform(0, 2 * np.pi))) for k in (2, 3, 4))
    radius = float(rng.uniform(*diameter_mm)) / 2.0
    hu_val = float(rng.uniform(*hu))
    extent = 1.0 + sum(a for _, a, _ in harmonics)
    while True:
        cand = np.flatnonzero(dist.ravel() >= radius * extent + margin_mm)
        if cand.size or radius <= diameter_mm[0] / 2.0 * 0.8:
            break
        radius *= 0.9
    if cand.size == 0:
        raise ValueError("no room for a lesion in this slice")
    idx = int(cand[rng.integers(cand.size)])
    r, c = np.unravel_index(idx, labels.shape)
    m, n = labels.shape
    center = ((r - (m - 1) / 2.0) * spacing[0], (c - (n - 1) / 2.0) * spacing[1])
    return LesionSpec(center_mm=(float(center[0]), float(center[1])), radius_mm=radius,
                      harmonics=harmonics, hu=hu_val)


# ----------------------------------------------------------------------------- multimodal
def one_hot(labels: np.ndarray, codes: Sequence[int] | None = None) -> dict[int, np.ndarray]:
    """Label map → {code: float fraction map} (0/1)."""
    codes = sorted(set(int(c) for c in np.unique(labels))) if codes is None else list(codes)
    return {int(c): (labels == c).astype(np.float64) for c in codes}


def render_contrast(
    fractions: Mapping[int, np.ndarray],
    values: Mapping[int, float],
    *,
    blur_px: float = 0.0,
    noise_sigma: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Σ fraction_k · value_k, optionally blurred and with additive Gaussian noise (float32)."""
    shape = next(iter(fractions.values())).shape
    out = np.zeros(shape, np.float64)
    for code, frac in fractions.items():
        out += values.get(int(code), 0.0) * frac
    if blur_px > 0:
        out = ndi.gaussian_filter(out, blur_px)
    if noise_sigma > 0:
        if rng is None:
            raise ValueError("rng is required when noise_sigma > 0")
        out = out + rng.normal(0.0, noise_sigma, shape)
    return out.astype(np.float32)


def downsample_block(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over non-overlapping ``factor × factor`` blocks (shape must be divisible)."""
    m, n = image.shape
    if m % factor or n % factor:
        raise ValueError(f"shape {image.shape} is not divisible by factor {factor}")
    return image.reshape(m // factor, factor, n // factor, factor).mean(axis=(1, 3))


def block_transform(factor: int) -> np.ndarray:
    """Matrix mapping high-resolution px to the px of :func:`downsample_block` output.

    Low-res pixel ``q`` covers high-res pixels ``factor*q .. factor*q + factor - 1`` whose
    centre is ``factor*q + (factor-1)/2``; hence ``q = (p - (factor-1)/2) / factor``.
    """
    f = float(factor)
    o = -(f - 1.0) / 2.0 / f
    return np.array([[1 / f, 0.0, o], [0.0, 1 / f, o], [0.0, 0.0, 1.0]])


# ----------------------------------------------------------------------------- transforms
def similarity_matrix(angle_deg: float, scale: float, shift: tuple[float, float],
                      center: tuple[float, float]) -> np.ndarray:
    """Fixed→moving matrix: rotate by ``angle_deg`` and scale by ``scale`` about ``center``,
    then translate by ``shift`` (all in (row, col) px): ``T p = S R (p - c) + c + shift``.
    """
    a = math.radians(angle_deg)
    L = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    c = np.asarray(center, float)
    T = np.eye(3)
    T[:2, :2] = L
    T[:2, 2] = c - L @ c + np.asarray(shift, float)
    return T


def rigid_matrix(angle_deg: float, shift: tuple[float, float], center: tuple[float, float]) -> np.ndarray:
    """Rigid fixed→moving matrix (see :func:`similarity_matrix` with ``scale=1``)."""
    return similarity_matrix(angle_deg, 1.0, shift, center)


def flip_matrix(shape: tuple[int, int], axis: int = 1) -> np.ndarray:
    """Reflection: ``axis=1`` mirrors columns (``c → N-1-c``), ``axis=0`` mirrors rows."""
    T = np.eye(3)
    T[axis, axis] = -1.0
    T[axis, 2] = shape[axis] - 1.0
    return T


def warp_affine(moving: np.ndarray, T: np.ndarray, *, output_shape: tuple[int, int] | None = None,
                order: int = 1, cval: float = 0.0) -> np.ndarray:
    """``fixed(p) = moving(T p)`` (T maps fixed (row, col) px to moving px); float64.

    Same convention as, and delegated to, :func:`analysis.registration.warp`.
    """
    from analysis.registration import warp  # lazy: registration may import this module

    return warp(moving, T, output_shape=output_shape, order=order, cval=cval)


def smooth_displacement(shape: tuple[int, int], *, max_px: float, sigma_px: float, seed: int) -> np.ndarray:
    """Smooth random displacement field ``(2, M, N)`` float32 with ``max |d| = max_px``.

    The field tapers to zero near the border so the warped image keeps its frame.
    """
    rng = _rng(seed, 303)
    d = np.stack([smooth_field(shape, sigma_px, rng), smooth_field(shape, sigma_px, rng)])
    m, n = shape
    wr = np.sin(np.pi * (np.arange(m) + 0.5) / m)[:, None]
    wc = np.sin(np.pi * (np.arange(n) + 0.5) / n)[None, :]
    d *= wr * wc
    mag = np.sqrt((d ** 2).sum(0)).max()
    return (d * (max_px / mag)).astype(np.float32)


def warp_displacement(moving: np.ndarray, d: np.ndarray, *, order: int = 1, cval: float = 0.0) -> np.ndarray:
    """``fixed(p) = moving(p + d(p))`` for ``d`` of shape ``(2, M, N)`` (see
    :func:`analysis.registration.warp_field`, to which this delegates)."""
    from analysis.registration import warp_field

    return warp_field(moving, d, order=order, cval=cval)


# ----------------------------------------------------------------------------- degradations
def bias_field(shape: tuple[int, int], amplitude: float, seed: int) -> np.ndarray:
    """Smooth multiplicative bias field with values in ``[1 - amplitude, 1 + amplitude]``.

    A random low-order 2-D polynomial rescaled so that ``max |field - 1| = amplitude``.
    """
    rng = _rng(seed, 404)
    m, n = shape
    y = np.linspace(-1, 1, m)[:, None]
    x = np.linspace(-1, 1, n)[None, :]
    c = rng.uniform(-1, 1, 6)
    f = c[0] * y + c[1] * x + c[2] * y * x + c[3] * y ** 2 + c[4] * x ** 2 + 0.5 * c[5] * (y ** 3 - x ** 3)
    f = f - f.mean()
    return (1.0 + amplitude * f / np.abs(f).max()).astype(np.float64)


def add_gaussian_noise(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """``image + N(0, sigma²)`` (float64)."""
    return np.asarray(image, np.float64) + _rng(seed, 505).normal(0.0, sigma, np.shape(image))


def add_rician_noise(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """Magnitude of complex Gaussian noise on a real signal: ``|x + n1 + i n2|``, ``n ~ N(0, σ²)``."""
    r = _rng(seed, 606)
    x = np.asarray(image, np.float64)
    return np.hypot(x + r.normal(0.0, sigma, x.shape), r.normal(0.0, sigma, x.shape))


# ----------------------------------------------------------------------------- radiograph
def chest_radiograph(shape: tuple[int, int] = (320, 288), seed: int = 0, noise_sigma: float = 12.0) -> np.ndarray:
    """Chest-radiograph-like *detector exposure* image (float, ~0..4000).

    High values = much transmitted radiation (lungs, air); bones and mediastinum are low.
    Stored as MONOCHROME1, bones display bright as on film.
    """
    rng = _rng(seed, 707)
    m, n = shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, m), np.linspace(-1, 1, n), indexing="ij")
    att = np.zeros(shape)
    body = (yy / 0.95) ** 2 + (xx / 0.85) ** 2 <= 1.0
    att += 1.0 * body
    for side in (-1, 1):
        lung = ((yy + 0.05) / 0.62) ** 2 + ((xx - side * 0.4) / 0.3) ** 2 <= 1.0
        att -= 0.55 * lung
    att += 0.8 * ((np.abs(xx) < 0.09) & body)  # spine / mediastinum
    heart = ((yy - 0.25) / 0.3) ** 2 + ((xx + 0.12) / 0.28) ** 2 <= 1.0
    att += 0.3 * heart
    for k in range(8):  # ribs: arcs
        y0 = -0.55 + 0.15 * k
        for side in (-1, 1):
            arc = np.abs(yy - (y0 + 0.25 * (np.abs(xx) - 0.1) ** 2 * 2.0)) < 0.025
            att += 0.35 * (arc & (side * xx > 0.1) & (np.abs(xx) < 0.78) & body)
    att = ndi.gaussian_filter(att, 1.2)
    exposure = 3600.0 * np.exp(-1.6 * att)
    if noise_sigma > 0:
        exposure += rng.normal(0.0, noise_sigma, shape)
    return np.clip(exposure, 0.0, 4095.0)
