"""The one image model of MedLens.

An :class:`Image` holds pixels **in physical units** (CT in Hounsfield units after the
DICOM modality LUT, MR/PET/X-ray in the scanner's stored units, photographs in their
native 0..255 or 0..65535 range) together with the pixel spacing in millimetres and a
*default display window*.  Windowing is a view (see :mod:`analysis.display`); it never
changes ``pixels``.

Array layout (rows/cols, never x/y):

* ``(M, N)``        single greyscale plane
* ``(P, M, N)``     volume (``stack="slice"``) or multi-frame (``stack="frame"``)
* ``(M, N, 3)``     colour plane (RGB, uint8 or float)
* ``(P, M, N, 3)``  colour multi-frame

Only non-identifying metadata ever enters :attr:`Image.metadata` (see
:data:`analysis.privacy.SAFE_METADATA_KEYS`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Image", "content_digest"]


def content_digest(*parts: bytes | str | np.ndarray) -> str:
    """SHA-256 hex digest of bytes / strings / arrays (array shape and dtype included)."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            a = np.ascontiguousarray(p)
            h.update(str((a.shape, a.dtype.str)).encode())
            h.update(a.data)
        elif isinstance(p, str):
            h.update(p.encode("utf-8", "surrogatepass"))
        else:
            h.update(p)
    return h.hexdigest()


@dataclass(eq=False)
class Image:
    """Pixels in physical units plus what is needed to measure and display them.

    Attributes
    ----------
    pixels : ndarray
        See module docstring for layouts. Greyscale data is float32 (physical units) or
        an integer type for photographs; colour data is uint8/uint16 RGB.
    name : str
        Display name (file name, possibly ``zip.zip/inner/path.dcm``). Never an identifier.
    spacing : (float, float) or None
        Pixel spacing (row, col) in mm. ``None`` when unknown (photographs): lengths are
        then reported in px.
    slice_spacing : float or None
        Distance between slices of a volume in mm.
    units : str
        Physical unit of greyscale values: ``"HU"``, ``"a.u."`` (MR, arbitrary units),
        ``"counts"``, ``"grey level"`` ...
    modality : str
        DICOM modality (``CT``, ``MR``, ``PT``, ``CR``, ``US`` ...) or ``"OT"``.
    window : (center, width) or None
        Default display window in physical units (from the file's VOI tags or a preset).
    invert : bool
        True for MONOCHROME1: display must invert after windowing.
    stack : {"slice", "frame", None}
        What the leading axis of a 3-D/4-D array means.
    source_format : str
        ``dicom``, ``png``, ``jpeg``, ``tiff``, ``nifti`` ...
    metadata : dict
        Allow-listed, non-identifying tags only.
    digest : str
        Digest of the source bytes (plus frame/series index); cache key.
    """

    pixels: np.ndarray
    name: str = "image"
    spacing: tuple[float, float] | None = None
    slice_spacing: float | None = None
    units: str = "grey level"
    modality: str = "OT"
    window: tuple[float, float] | None = None
    invert: bool = False
    stack: str | None = None
    source_format: str = "array"
    metadata: dict[str, Any] = field(default_factory=dict)
    digest: str = ""
    voi_lut: np.ndarray | None = None  # optional VOI LUT table (input = physical value - first)
    voi_lut_first: float = 0.0

    def __post_init__(self) -> None:
        self.pixels = np.asarray(self.pixels)
        if not self.digest:
            self.digest = content_digest(self.pixels)

    # ------------------------------------------------------------------ shape helpers
    @property
    def is_rgb(self) -> bool:
        return self.pixels.ndim >= 3 and self.pixels.shape[-1] in (3, 4) and (
            self.pixels.ndim == 4 or self.stack is None
        )

    @property
    def n_planes(self) -> int:
        """Number of slices/frames (1 for a single plane)."""
        nd = self.pixels.ndim - (1 if self.is_rgb else 0)
        return int(self.pixels.shape[0]) if nd == 3 else 1

    @property
    def shape2d(self) -> tuple[int, int]:
        s = self.pixels.shape
        if self.is_rgb:
            return (int(s[-3]), int(s[-2]))
        return (int(s[-2]), int(s[-1]))

    def plane(self, index: int = 0) -> "Image":
        """A 2-D Image for slice/frame ``index`` (the image itself when it is 2-D)."""
        if self.n_planes == 1:
            return self
        index = int(np.clip(index, 0, self.n_planes - 1))
        return dataclasses.replace(
            self,
            pixels=self.pixels[index],
            name=f"{self.name} [{self.stack or 'plane'} {index + 1}/{self.n_planes}]",
            stack=None,
            digest=content_digest(self.digest, f"plane{index}"),
        )

    def middle_plane(self) -> "Image":
        """The middle slice/frame of a volume or multi-frame (the image itself when 2-D): the
        plane every dataset-wide run, catalog row and thumbnail uses."""
        return self.plane(self.n_planes // 2)

    def grey(self) -> np.ndarray:
        """2-D float32 greyscale array in physical units (colour → luminance, ITU-R BT.601).

        Volumes/multi-frames return the middle plane; call :meth:`plane` first to choose.
        """
        img = self.middle_plane()
        a = img.pixels
        if img.is_rgb:
            a = a[..., :3].astype(np.float32)
            return (0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]).astype(np.float32)
        return a.astype(np.float32, copy=False)

    def with_pixels(self, pixels: np.ndarray, *, name: str | None = None, units: str | None = None,
                    window: tuple[float, float] | None | str = "keep", tag: str = "derived") -> "Image":
        """A derived image sharing spacing/modality/metadata, with a new digest."""
        return dataclasses.replace(
            self,
            pixels=np.asarray(pixels),
            name=name or self.name,
            units=units or self.units,
            window=self.window if window == "keep" else window,  # type: ignore[arg-type]
            stack=self.stack if np.asarray(pixels).ndim == self.pixels.ndim else None,
            digest=content_digest(self.digest, tag, np.asarray(pixels)),
            voi_lut=self.voi_lut if window == "keep" else None,
        )

    @property
    def pixel_area_mm2(self) -> float | None:
        return float(self.spacing[0] * self.spacing[1]) if self.spacing else None

    def summary(self) -> dict[str, Any]:
        """Small, safe description for tables."""
        m, n = self.shape2d
        return {
            "name": self.name,
            "format": self.source_format,
            "modality": self.modality,
            "rows": m,
            "cols": n,
            "planes": self.n_planes,
            "units": self.units,
            "spacing_mm": (f"{self.spacing[0]:.4g} × {self.spacing[1]:.4g}" if self.spacing else ""),
            "colour": bool(self.is_rgb),
        }
