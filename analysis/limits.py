"""Configurable resource limits for image loading.

Every loader in :mod:`analysis.io` checks these limits *before* it decodes or inflates
anything (image headers, the DICOM header, the ZIP central directory, the NIfTI header),
and the ZIP/gzip readers enforce them again while streaming, so a hostile file costs
neither much time nor much memory.

Defaults suit an interactive dashboard on a small machine. They can be overridden per
call (``load_bytes(..., limits=Limits(max_pixels_per_frame=10_000_000))``) or from the
environment with :meth:`Limits.from_env` (``MEDLENS_MAX_PIXELS=100000000`` ...).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Mapping

__all__ = ["Limits", "ENV_NAMES", "format_bytes"]

GiB = 1 << 30
MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Resource limits applied while loading images.

    Attributes
    ----------
    max_pixels_per_frame : int
        Rows × columns of one plane (frame / slice / page).
    max_decoded_bytes : int
        Memory the decoded result may occupy (float32 physical-unit pixels for
        greyscale, the stored type for colour), summed over frames/slices; also the bound
        for inflating a gzip-compressed file.
    max_file_bytes : int
        Size of one input file or one ZIP entry.
    max_frames : int
        Frames of a multi-frame file or pages of a TIFF.
    zip_max_entries : int
        Entries (files and folders) in one ZIP archive.
    zip_max_total_bytes : int
        Sum of the uncompressed sizes of a ZIP's entries.
    zip_max_ratio : int
        Largest compression ratio accepted for an entry of at least
        ``zip_ratio_min_bytes`` uncompressed (smaller entries cannot amplify much).
    zip_ratio_min_bytes : int
        See ``zip_max_ratio``.
    zip_max_depth : int
        How many ZIP levels are opened: 1 = a ZIP is opened, a ZIP inside it is not.
    max_series_files : int
        Files stacked into one DICOM series volume.
    """

    max_pixels_per_frame: int = 50_000_000
    max_decoded_bytes: int = 1 * GiB
    max_file_bytes: int = 2 * GiB
    max_frames: int = 10_000
    zip_max_entries: int = 10_000
    zip_max_total_bytes: int = 2 * GiB
    zip_max_ratio: int = 200
    zip_ratio_min_bytes: int = 1 * MiB
    zip_max_depth: int = 1
    max_series_files: int = 5_000

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"Limits.{f.name} must be an int, got {type(v).__name__}")
            if v < 0 or (v == 0 and f.name != "zip_ratio_min_bytes"):
                raise ValueError(f"Limits.{f.name} must be positive, got {v}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: int) -> "Limits":
        """Defaults, overridden by ``MEDLENS_*`` environment variables, then by ``overrides``.

        Variable names are listed in :data:`ENV_NAMES` (``MEDLENS_MAX_PIXELS``,
        ``MEDLENS_MAX_DECODED_BYTES``, ``MEDLENS_ZIP_MAX_RATIO`` ...). Values are integers;
        ``_`` separators and the suffixes ``K``/``M``/``G`` (binary, e.g. ``2G``) are accepted.
        A malformed value raises ``ValueError`` naming the variable.
        """
        env = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for field_name, var in ENV_NAMES.items():
            raw = env.get(var)
            if raw is None or not str(raw).strip():
                continue
            try:
                values[field_name] = _parse_int(str(raw))
            except ValueError:
                raise ValueError(f"{var}={raw!r} is not a whole number (e.g. 50000000 or 2G)") from None
        values.update(overrides)
        return cls(**values)


def _parse_int(text: str) -> int:
    t = text.strip().replace("_", "").upper()
    mult = 1
    if t.endswith("IB"):
        t = t[:-2]
    elif t.endswith("B") and len(t) > 1 and t[-2] in "KMG":
        t = t[:-1]
    if t and t[-1] in "KMG":
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[t[-1]]
        t = t[:-1]
    if not t.isdigit():
        raise ValueError(text)
    return int(t) * mult


#: Limits field -> environment variable read by :meth:`Limits.from_env`.
ENV_NAMES: dict[str, str] = {
    "max_pixels_per_frame": "MEDLENS_MAX_PIXELS",
    "max_decoded_bytes": "MEDLENS_MAX_DECODED_BYTES",
    "max_file_bytes": "MEDLENS_MAX_FILE_BYTES",
    "max_frames": "MEDLENS_MAX_FRAMES",
    "zip_max_entries": "MEDLENS_ZIP_MAX_ENTRIES",
    "zip_max_total_bytes": "MEDLENS_ZIP_MAX_TOTAL_BYTES",
    "zip_max_ratio": "MEDLENS_ZIP_MAX_RATIO",
    "zip_ratio_min_bytes": "MEDLENS_ZIP_RATIO_MIN_BYTES",
    "zip_max_depth": "MEDLENS_ZIP_MAX_DEPTH",
    "max_series_files": "MEDLENS_MAX_SERIES_FILES",
}


def format_bytes(n: float) -> str:
    """Human-readable size: ``1.0 GiB``, ``12.3 MiB``, ``512 bytes``."""
    n = float(n)
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"
