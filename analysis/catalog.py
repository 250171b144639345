"""The dataset catalog: one DuckDB row per image, for thousands to millions of images.

What a row holds (see :data:`COLUMNS`): the file's relative path, content hash (SHA-256),
size and mtime; non-identifying DICOM tags (allow-list of :mod:`analysis.privacy`);
**pseudonymous** subject / study / series keys (salted HMAC of PatientID / StudyInstanceUID /
SeriesInstanceUID via :func:`analysis.privacy.pseudonym`; the salt is generated once and kept
in the app folder; raw identifiers never reach the database); image statistics **in
physical units** (after the DICOM modality LUT: HU for CT) computed from one histogram pass;
a 64-px PNG thumbnail; two perceptual hashes (dHash, pHash); for failures, the reason.

Storage rules

* **Incremental** — a file whose path, size and mtime are unchanged is not read again; a file
  whose size/mtime changed is re-hashed and only re-processed when its content changed.
* **Resumable** — results are committed after every batch; a killed ingest loses nothing
  committed and the next run continues with the files not yet in the catalog.
* **Streaming** — files go to workers in bounded batches and rows go to DuckDB per batch;
  nothing grows with the number of images except the list of paths.
* **Readers never block or corrupt** — readers open the file read-only. While an ingest holds
  the write lock (DuckDB allows one writer process), a reader asks for a *snapshot*: the
  writer checkpoints and publishes a consistent copy between two batches, which the reader
  opens read-only.

Statistics (all in physical units; ``noise_sigma``/``sharpness`` on the middle plane)

* ``min_value, max_value, mean, std, p01 … p99`` — exact (``np.percentile``'s linear rule)
  from an integer histogram of the stored values mapped through RescaleSlope/Intercept.
* ``entropy`` — Shannon entropy (bits) of a 256-bin histogram over [min, max] (same as
  :func:`analysis.metrics.entropy`).
* ``sharpness`` — variance of the 4-neighbour Laplacian.
* ``noise_sigma`` — Immerkær's fast estimate (σ = √(π/2)·mean|I ∗ M| / 6, M the 3×3
  second-difference mask; Immerkær 1996, CVIU 64:300).
* ``background_fraction`` — CT: fraction of pixels ≤ −900 HU (air, outside the field of
  view); other modalities: pixels ≤ min + 5 % of (p99 − min).
* ``snr`` — (mean of foreground − mean of background) / noise σ; when there is no
  background the reference is −1000 HU for CT (air) and 0 otherwise.
* ``subair_fraction`` — CT only: fraction of pixels between −1500 and −1100 HU: colder than
  air, yet above the padding values scanners put outside the field of view (−2000, −3024 …).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import math
import os
import secrets
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

__all__ = [
    "COLUMNS",
    "Catalog",
    "CatalogBusy",
    "IngestReport",
    "ingest",
    "ingest_file",
    "image_statistics",
    "load_salt",
    "default_db_path",
    "list_files",
]

SCHEMA_VERSION = "1"
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
THUMB = 64
CT_AIR_HU = -900.0
CT_SUBAIR_HU = -1100.0
CT_PADDING_HU = -1500.0
COMMIT_ROWS = 1024  # ingest commits at least this many rows per transaction …
COMMIT_SECONDS = 2.0  # … or what finished in this long, whichever comes first

#: (column, DuckDB type) — the catalog's one table, ``images``.
COLUMNS: list[tuple[str, str]] = [
    ("root_id", "VARCHAR"), ("path", "VARCHAR"), ("name", "VARCHAR"), ("content_hash", "VARCHAR"),
    ("size_bytes", "BIGINT"), ("mtime_ns", "BIGINT"), ("format", "VARCHAR"), ("status", "VARCHAR"),
    ("error", "VARCHAR"), ("ingested_at", "DOUBLE"), ("label", "VARCHAR"), ("role", "VARCHAR"),
    ("modality", "VARCHAR"), ("manufacturer", "VARCHAR"), ("model", "VARCHAR"), ("body_part", "VARCHAR"),
    ("study_description", "VARCHAR"), ("series_description", "VARCHAR"), ("sop_class", "VARCHAR"),
    ("transfer_syntax", "VARCHAR"), ("photometric", "VARCHAR"), ("rows", "INTEGER"), ("cols", "INTEGER"),
    ("frames", "INTEGER"), ("spacing_row_mm", "DOUBLE"), ("spacing_col_mm", "DOUBLE"),
    ("slice_thickness_mm", "DOUBLE"), ("slice_position_mm", "DOUBLE"), ("instance_number", "INTEGER"),
    ("bits_allocated", "INTEGER"), ("bits_stored", "INTEGER"), ("pixel_representation", "INTEGER"),
    ("kvp", "DOUBLE"), ("convolution_kernel", "VARCHAR"), ("window_center", "DOUBLE"),
    ("window_width", "DOUBLE"), ("rescale_slope", "DOUBLE"), ("rescale_intercept", "DOUBLE"),
    ("rescale_type", "VARCHAR"), ("has_modality_lut", "BOOLEAN"), ("units", "VARCHAR"),
    ("subject_key", "VARCHAR"), ("study_key", "VARCHAR"), ("series_key", "VARCHAR"),
    ("n_pixels", "BIGINT"), ("min_value", "DOUBLE"), ("max_value", "DOUBLE"), ("mean", "DOUBLE"),
    ("std", "DOUBLE"), ("p01", "DOUBLE"), ("p05", "DOUBLE"), ("p25", "DOUBLE"), ("p50", "DOUBLE"),
    ("p75", "DOUBLE"), ("p95", "DOUBLE"), ("p99", "DOUBLE"), ("entropy", "DOUBLE"),
    ("sharpness", "DOUBLE"), ("noise_sigma", "DOUBLE"), ("snr", "DOUBLE"),
    ("background_fraction", "DOUBLE"), ("subair_fraction", "DOUBLE"), ("dhash", "UBIGINT"),
    ("phash", "UBIGINT"), ("thumb", "BLOB"),
]
COLUMN_NAMES = [c for c, _ in COLUMNS]
COLUMN_TYPES = dict(COLUMNS)
_DOUBLE_COLUMNS = [c for c, t in COLUMNS if t == "DOUBLE"]
STAT_COLUMNS = ["min_value", "max_value", "mean", "std", "p01", "p05", "p25", "p50", "p75", "p95", "p99",
                "entropy", "sharpness", "noise_sigma", "snr", "background_fraction"]
NUMERIC_COLUMNS = [c for c, t in COLUMNS if t in ("DOUBLE", "INTEGER", "BIGINT") and c not in
                   ("mtime_ns", "ingested_at")]
CATEGORICAL_COLUMNS = ["modality", "label", "manufacturer", "model", "body_part", "role", "format",
                       "photometric", "transfer_syntax", "sop_class", "study_description",
                       "series_description", "convolution_kernel", "rescale_type", "units", "status"]

SKIP_SUFFIXES = {".txt", ".csv", ".json", ".md", ".npy", ".py", ".html", ".htm", ".xml", ".pdf", ".log",
                 ".duckdb", ".wal", ".parquet", ".lock", ".key", ".yaml", ".yml", ".tmp", ".sh"}


class CatalogBusy(RuntimeError):
    """The catalog is being written by another ingest and no snapshot could be had in time."""


# ============================================================================ paths and salt
def default_db_path() -> Path:
    from analysis.dataset import app_home

    return app_home() / "catalog.duckdb"


def load_salt(home: str | Path | None = None) -> bytes:
    """The app's secret pseudonym salt (32 random bytes, created once, mode 0600)."""
    if home is None:
        from analysis.dataset import app_home

        home = app_home()
    path = Path(home) / "pseudonym_salt.key"
    try:
        data = path.read_bytes()
        if len(data) >= 16:
            return data
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    salt = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        time.sleep(0.05)
        return path.read_bytes()
    with os.fdopen(fd, "wb") as fh:
        fh.write(salt)
    return salt


def salt_id(salt: bytes) -> str:
    """Non-reversible fingerprint of the salt (stored in the catalog to detect a salt change)."""
    from analysis.privacy import pseudonym

    return pseudonym("medlens-catalog-salt-check", salt, length=16)


def root_id_for(root: str | Path) -> str:
    return hashlib.sha256(str(Path(root).resolve()).encode("utf-8", "surrogatepass")).hexdigest()[:16]


# ============================================================================ statistics
def _percentiles_from_hist(values: np.ndarray, counts: np.ndarray, qs: Sequence[float]) -> list[float]:
    """``np.percentile(data, qs)`` (linear rule) from sorted distinct values and their counts."""
    cs = np.cumsum(counts)
    n = int(cs[-1])
    pos = np.asarray(qs, dtype=np.float64) / 100.0 * (n - 1)
    k = np.floor(pos).astype(np.int64)
    f = pos - k
    v0 = values[np.searchsorted(cs, k, side="right")]
    v1 = values[np.searchsorted(cs, np.minimum(k + 1, n - 1), side="right")]
    return [float(a + w * (b - a)) if w else float(a) for a, b, w in zip(v0, v1, f)]


def _weighted_hist256(values: np.ndarray, weights: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """``np.histogram(values, 256, (vmin, vmax), weights=weights)[0]`` with numpy's own bin rule
    (index from the scaled value, then corrected against the edges), without its overhead."""
    edges = np.linspace(vmin, vmax, 257)
    idx = ((values - vmin) * (256.0 / (vmax - vmin))).astype(np.intp)
    np.clip(idx, 0, 255, out=idx)
    idx[values < edges[idx]] -= 1
    inc = (values >= edges[idx + 1]) & (idx != 255)
    idx[inc] += 1
    return np.bincount(idx, weights=weights, minlength=256)


def _hist_stats(values: np.ndarray, counts: np.ndarray, modality: str) -> dict[str, float]:
    """Summary statistics from a histogram of distinct physical values (ascending)."""
    c = counts.astype(np.float64)
    n = float(c.sum())
    mean = float((c * values).sum() / n)
    var = float((c * (values - mean) ** 2).sum() / n)
    vmin, vmax = float(values[0]), float(values[-1])
    pct = _percentiles_from_hist(values, counts, PERCENTILES)
    out: dict[str, float] = {"n_pixels": int(n), "min_value": vmin, "max_value": vmax, "mean": mean,
                             "std": math.sqrt(max(var, 0.0))}
    out.update({f"p{q:02d}": v for q, v in zip(PERCENTILES, pct)})
    if vmax > vmin:
        h256 = _weighted_hist256(values, c, vmin, vmax)
        p = h256[h256 > 0] / n
        out["entropy"] = float(-(p * np.log2(p)).sum())
    else:
        out["entropy"] = 0.0
    ct = modality == "CT"
    thr = CT_AIR_HU if ct else vmin + 0.05 * (pct[-1] - vmin)
    bg = values <= thr
    nbg = float(c[bg].sum())
    out["background_fraction"] = nbg / n
    out["_mean_bg"] = float((c[bg] * values[bg]).sum() / nbg) if nbg else (-1000.0 if ct else 0.0)
    out["_mean_fg"] = float((c[~bg] * values[~bg]).sum() / (n - nbg)) if n > nbg else out["_mean_bg"]
    if ct:  # below air but above the conventional out-of-field padding values (≤ −1500 HU)
        sub = (values < CT_SUBAIR_HU) & (values > CT_PADDING_HU)
        out["subair_fraction"] = float(c[sub].sum() / n)
    return out


_CALCHIST_MAX = 1 << 24


def _int_histogram(a: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(distinct stored values ascending, counts) of an integer array in one bincount pass.

    8/16-bit data: ``bincount(a − min)`` (the difference viewed unsigned, exact modulo 2¹⁶),
    so the histogram has one bin per value between min and max and nothing else.
    """
    flat = a.reshape(-1)
    if flat.size == 0:
        return None
    dt = flat.dtype
    if dt.itemsize <= 2 and dt.kind in "iu":
        udt = np.uint16 if dt.itemsize == 2 else np.uint8
        if flat.size < _CALCHIST_MAX:
            import cv2

            # OpenCV: min and max in one pass, and a histogram ~3× faster than bincount (no
            # int64 copy); its float32 counts are exact integers below 2**24 pixels. Bins are
            # one stored value wide ([lo, lo + 1) …), so the binning is exact.
            lo_, hi_ = cv2.minMaxLoc(flat.reshape(1, -1))[:2]
            mn, mx = int(lo_), int(hi_)
            if mn >= 0:  # no shift needed: the histogram's range starts at the minimum
                u, start = flat.view(udt), mn
            else:
                u, start = (flat - dt.type(mn)).view(udt), 0
            nb = mx - mn + 1
            h = cv2.calcHist([u.reshape(1, -1)], [0], None, [nb], [start, start + nb]).reshape(-1).astype(np.int64)
        else:
            mn = int(flat.min())
            h = np.bincount((flat - dt.type(mn)).view(udt) if mn else flat.view(udt))
    elif dt.kind in "iu":
        mn, mx = int(flat.min()), int(flat.max())
        if mx - mn > (1 << 24):
            return None
        h = np.bincount(flat.astype(np.int64) - mn)
    else:
        return None
    nz = np.flatnonzero(h)
    return (nz + mn).astype(np.float64), h[nz]


def _spatial_stats(plane: np.ndarray, scale: float) -> dict[str, float]:
    """Sharpness (variance of the Laplacian) and Immerkær noise σ of a 2-D plane (stored
    integers or float32), times |scale| (:mod:`analysis.kernels`)."""
    from analysis.kernels import immerkaer_sigma, laplacian_immerkaer_sums

    m, n = plane.shape
    if m < 3 or n < 3:
        return {"sharpness": float("nan"), "noise_sigma": float("nan")}
    s1, s2, l1 = laplacian_immerkaer_sums(plane)
    npx = float(m * n)
    var_lap = max(s2 / npx - (s1 / npx) ** 2, 0.0)
    return {"sharpness": var_lap * scale * scale, "noise_sigma": immerkaer_sigma(l1, m, n) * abs(scale)}


def image_statistics(stored: np.ndarray, *, slope: float = 1.0, intercept: float = 0.0,
                     modality: str = "") -> dict[str, float]:
    """Statistics in physical units (``slope·stored + intercept``) of a greyscale array.

    ``stored`` is (M, N) or (P, M, N); integer arrays take the single-bincount path, float
    arrays a float path with the same definitions. Spatial measures (sharpness, noise) use
    the middle plane.
    """
    a = np.asarray(stored)
    plane = a[a.shape[0] // 2] if a.ndim == 3 else a
    hist = _int_histogram(a) if a.dtype.kind in "iu" else None
    if hist is not None:
        values, counts = hist
        phys = values * slope + intercept
        if slope < 0:
            phys, counts = phys[::-1], counts[::-1]
        out = _hist_stats(phys, counts, modality)
        out.update(_spatial_stats(plane, slope))
    else:
        f = a.astype(np.float64) * slope + intercept
        f = f[np.isfinite(f)]
        if f.size == 0:
            raise ValueError("the image has no finite pixel values")
        values, counts = np.unique(f, return_counts=True)
        out = _hist_stats(values, counts, modality)
        p = plane.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        out.update(_spatial_stats(np.nan_to_num(p), 1.0))
    ref_bg = out.pop("_mean_bg")
    mean_fg = out.pop("_mean_fg")
    sig = out["noise_sigma"]
    out["snr"] = (mean_fg - ref_bg) / sig if sig and sig > 0 and math.isfinite(sig) else float("nan")
    return out


# ============================================================================ thumbnails / hashes
def _bits_to_int(bits: np.ndarray) -> int:
    return int(np.packbits(bits.astype(np.uint8).reshape(-1)).view(">u8")[0])


def perceptual_hashes(plane: np.ndarray) -> tuple[int, int]:
    """(dHash, pHash) — 64-bit perceptual hashes of a 2-D float image (any units).

    dHash: 9×8 area-resampled, sign of horizontal differences. pHash: 32×32 DCT, low 8×8
    coefficients (DC excluded from the median) against their median.
    """
    import cv2

    f = np.nan_to_num(plane.astype(np.float32, copy=False))
    d = cv2.resize(f, (9, 8), interpolation=cv2.INTER_AREA)
    dh = _bits_to_int(d[:, 1:] > d[:, :-1])
    s = cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(s)[:8, :8]
    med = float(np.partition(low.reshape(-1)[1:], 31)[31])  # median of the 63 AC terms
    ph = _bits_to_int(low > med)
    return dh, ph


def thumbnail_png(small: np.ndarray, window: tuple[float, float] | None, invert: bool) -> bytes:
    """PNG bytes of an already-downsampled physical-unit image, windowed for display."""
    from analysis.display import window_to_uint8

    if window is None:
        lo, hi = np.nanpercentile(small, [1, 99]) if small.size else (0.0, 1.0)
        window = ((lo + hi) / 2.0, max(hi - lo, 1.0))
    if small.dtype.kind == "f" and not np.isfinite(small).all():
        small = np.nan_to_num(small)
    return png_grey8(window_to_uint8(small, window[0], window[1], invert=invert))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return _U32BE.pack(len(body)) + kind + body + _U32BE.pack(zlib.crc32(body, zlib.crc32(kind)))


_U32BE = struct.Struct(">I")


def png_grey8(u8: np.ndarray) -> bytes:
    """A greyscale 8-bit PNG of a 2-D uint8 array: filter "none" on every row, zlib level 1.

    For 64×64 thumbnails this is 2.5× faster than ``cv2.imencode`` (which tries libpng's five
    row filters) and no larger; any PNG reader decodes it to the same pixels.
    """
    h, w = u8.shape
    raw = np.empty((h, w + 1), np.uint8)
    raw[:, 0] = 0
    raw[:, 1:] = u8
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 1)) + _png_chunk(b"IEND", b""))


def _small(plane: np.ndarray) -> np.ndarray:
    """``plane`` area-resampled to at most THUMB pixels a side (float32); 8/16-bit integer
    planes in exact integer blocks when the factor is whole (:func:`analysis.kernels.block_mean`)."""
    import cv2

    m, n = plane.shape[:2]
    scale = THUMB / max(m, n)
    if scale >= 1:
        return plane.astype(np.float32, copy=False)
    if max(m, n) % THUMB == 0:
        from analysis.kernels import block_mean

        out = block_mean(plane, max(m, n) // THUMB)
        if out is not None:
            return out
    size = (max(1, round(n * scale)), max(1, round(m * scale)))
    return cv2.resize(plane.astype(np.float32, copy=False), size, interpolation=cv2.INTER_AREA)


def _visual(plane: np.ndarray, slope: float, intercept: float, window: tuple[float, float] | None,
            invert: bool, stats: dict[str, float]) -> dict[str, Any]:
    """Thumbnail + perceptual hashes of a 2-D plane of stored values (physical = slope·x + intercept)."""
    small = _small(plane) * np.float32(slope) + np.float32(intercept)
    win = window
    if win is not None and not (win[1] >= 1 and win[0] + win[1] / 2 > stats["min_value"]
                                and win[0] - win[1] / 2 < stats["max_value"]):
        win = None  # the file's window misses the data: use the data's own 1–99 % range
    if win is None:
        lo, hi = stats["p01"], stats["p99"]
        win = ((lo + hi) / 2.0, max(hi - lo, 1e-6))
    dh, ph = perceptual_hashes(small)
    return {"thumb": thumbnail_png(small, win, invert), "dhash": dh, "phash": ph}


# ============================================================================ DICOM header, fast
_STR_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
_NUM_FMT = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d"}
_IDENT_KEYWORDS = ("PatientName", "PatientID", "OtherPatientIDs", "OtherPatientNames", "PatientBirthDate",
                   "AccessionNumber", "InstitutionName", "InstitutionAddress", "ReferringPhysicianName",
                   "PerformingPhysicianName", "OperatorsName", "StudyID", "DeviceSerialNumber", "StationName",
                   "PatientBirthName", "PatientMotherBirthName", "StudyDate", "SeriesDate")


_TAGS: dict[str, tuple[int, str]] = {}
try:
    from pydicom.dataelem import RawDataElement as _RAW
except ImportError:  # pragma: no cover
    _RAW = tuple  # type: ignore[misc,assignment]


def _as_list(val: Any) -> list[Any]:
    return list(val) if isinstance(val, (list, tuple)) or type(val).__name__ == "MultiValue" else [val]


def _tag_info(keyword: str) -> tuple[int, str]:
    info = _TAGS.get(keyword)
    if info is None:
        from pydicom.datadict import dictionary_VR
        from pydicom.tag import Tag

        tag = Tag(keyword)
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
        info = _TAGS[keyword] = (int(tag), vr)  # plain int: dict lookups skip BaseTag.__eq__
    return info


# ---------------------------------------------------------------------------- own header walk
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_ALL_VRS = _LONG_VRS | {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT",
                        b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
_IMPLICIT_LE = "1.2.840.10008.1.2"
_NOT_WALKED = {"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2"}  # deflated, big endian: pydicom reads them
_MAX_KEPT = 1 << 16  # values longer than this (private blobs, overlays) are not copied
_MAX_DEPTH = 32
_U16x2 = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class _Walk(Exception):
    """The quick header walk met something it leaves to pydicom."""


def _skip_sequence(data: bytes, pos: int, explicit: bool, depth: int) -> int:
    """Position after an undefined-length sequence whose first item starts at ``pos``."""
    if depth > _MAX_DEPTH:
        raise _Walk
    end = len(data)
    while pos + 8 <= end:
        grp, el = _U16x2.unpack_from(data, pos)
        length = _U32.unpack_from(data, pos + 4)[0]
        pos += 8
        if grp != 0xFFFE:
            raise _Walk
        if el == 0xE0DD:  # sequence delimiter
            return pos
        if el != 0xE000:
            raise _Walk
        if length != 0xFFFFFFFF:
            pos += length
            continue
        while True:  # elements of an undefined-length item, up to its delimiter
            if pos + 8 > end:
                raise _Walk
            grp, el = _U16x2.unpack_from(data, pos)
            if grp == 0xFFFE and el == 0xE00D:
                pos += 8
                break
            pos, _vr, length, _start = _element_header(data, pos, explicit)
            pos = _skip_sequence(data, pos, explicit, depth + 1) if length == 0xFFFFFFFF else pos + length
    raise _Walk


def _element_header(data: bytes, pos: int, explicit: bool) -> tuple[int, bytes | None, int, int]:
    """(value start, VR or None, length, value start) of the element at ``pos``."""
    if not explicit:
        return pos + 8, None, _U32.unpack_from(data, pos + 4)[0], pos + 8
    vr = data[pos + 4: pos + 6]
    if vr in _LONG_VRS:
        length = _U32.unpack_from(data, pos + 8)[0]
        if length == 0xFFFFFFFF and vr != b"SQ":
            raise _Walk  # UN / OB of undefined length: leave to pydicom
        return pos + 12, vr, length, pos + 12
    if vr not in _ALL_VRS:
        raise _Walk  # implicit data in an explicit file, or damage: pydicom copes or explains
    return pos + 8, vr, _U16.unpack_from(data, pos + 6)[0], pos + 8


def _walk_header(data: bytes) -> tuple[dict[int, tuple[str | None, bytes]], int, str | None] | None:
    """Top-level elements of a Part 10 file with a little-endian data set, without pydicom.

    Returns ``({tag: (VR or None, value bytes)}, position of the pixel data element, transfer
    syntax UID)`` or None — no preamble, deflated / big-endian syntax, undefined-length
    non-sequence elements, anything unusual — and the caller reads the file with pydicom.
    About 4× faster than ``dcmread(stop_before_pixels=True)`` for a CT header.
    """
    if len(data) < 144 or data[128:132] != b"DICM":
        return None
    elems: dict[int, tuple[str | None, bytes]] = {}
    end = len(data)
    pos = 132
    try:
        while pos + 8 <= end:  # file meta: always explicit VR little endian
            grp, el = _U16x2.unpack_from(data, pos)
            if grp != 0x0002:
                break
            pos, vr, length, start = _element_header(data, pos, True)
            if length == 0xFFFFFFFF or start + length > end:
                return None
            elems[(grp << 16) | el] = (vr.decode(), data[start: start + length])  # type: ignore[union-attr]
            pos = start + length
        ts_raw = elems.get(0x00020010)
        ts = ts_raw[1].decode("ascii", "replace").strip("\x00 ") if ts_raw else None
        if ts is None or ts in _NOT_WALKED:
            return None
        explicit = ts != _IMPLICIT_LE
        pixel_pos = end
        while pos + 8 <= end:
            grp, el = _U16x2.unpack_from(data, pos)
            if grp == 0x7FE0 and el in (0x0008, 0x0009, 0x0010):
                pixel_pos = pos
                break
            if grp == 0xFFFE or grp < 0x0008:
                return None
            start, vr, length, _ = _element_header(data, pos, explicit)
            if length == 0xFFFFFFFF:
                pos = _skip_sequence(data, start, explicit, 1)
                elems[(grp << 16) | el] = ("SQ", b"")
                continue
            if start + length > end:
                return None  # truncated: pydicom's reader gives the reason
            elems[(grp << 16) | el] = (vr.decode() if vr else None,
                                       data[start: start + length] if length <= _MAX_KEPT else b"")
            pos = start + length
    except (_Walk, struct.error, UnicodeDecodeError):
        return None
    return elems, pixel_pos, ts


class _Header:
    """Decodes only the elements asked for, straight from raw elements — pydicom's (``ds``)
    or the quick walk's (``raw``); pydicom's value conversion costs more than the whole pixel
    decode of an uncompressed image."""

    def __init__(self, ds: Any = None, raw: dict[int, tuple[str | None, bytes]] | None = None) -> None:
        self.ds = ds
        self.raw = raw
        self._enc: str | None = None

    def _raw(self, keyword: str) -> tuple[str | None, Any, bool]:
        tag, dict_vr = _tag_info(keyword)
        if self.raw is not None:
            got = self.raw.get(tag)
            if got is None:
                return None, None, True
            return (got[0] or dict_vr), got[1], True
        elem = self.ds._dict.get(tag)
        if elem is None:
            return None, None, True
        if type(elem) is _RAW:
            return (elem.VR or dict_vr), elem.value, bool(elem.is_little_endian)
        return "converted", elem.value, True

    def encoding(self) -> str:
        if self._enc is None:
            vr, raw, _ = self._raw("SpecificCharacterSet")
            cs = raw.decode("ascii", "replace") if isinstance(raw, (bytes, bytearray)) else str(raw or "")
            cs = cs.replace("\\", " ").strip().upper()
            self._enc = "ascii" if cs in ("", "ISO_IR 6") else ("utf-8" if "192" in cs else
                                                                 ("latin-1" if cs == "ISO_IR 100" else "pydicom"))
        return self._enc

    def has(self, keyword: str) -> bool:
        return self._raw(keyword)[0] is not None

    def strings(self, keyword: str) -> list[str]:
        vr, raw, _ = self._raw(keyword)
        if vr is None or raw is None:
            return []
        if vr == "converted":
            return self._from_value(raw)
        if vr not in _STR_VRS:
            return []
        enc = self.encoding()
        if enc == "pydicom" and vr in ("LO", "SH", "ST", "LT", "UT", "PN", "UC"):
            try:
                val = self.ds[keyword].value
            except Exception:  # noqa: BLE001 - undecodable text is left out
                return []
            return self._from_value(val)
        text = bytes(raw).decode("latin-1" if enc in ("pydicom", "ascii") else enc, "replace")
        return [p.strip(" \x00") for p in text.split("\\") if p.strip(" \x00")]

    @staticmethod
    def _from_value(val: Any) -> list[str]:
        return [str(v).strip() for v in _as_list(val) if str(v).strip()]

    def text(self, keyword: str) -> str | None:
        s = self.strings(keyword)
        return "\\".join(s) if s else None

    def numbers(self, keyword: str) -> list[float]:
        vr, raw, little = self._raw(keyword)
        if vr is None or raw is None:
            return []
        if vr == "converted":
            out = []
            for v in _as_list(raw):
                try:
                    out.append(float(v))
                except (TypeError, ValueError):
                    continue
            return out
        if vr in _NUM_FMT:
            fmt = _NUM_FMT[vr]
            size = struct.calcsize(fmt)
            b = bytes(raw)
            k = len(b) // size
            return [float(x) for x in struct.unpack(("<" if little else ">") + fmt * k, b[: k * size])]
        if vr in ("DS", "IS"):
            out = []
            for p in bytes(raw).decode("latin-1", "replace").split("\\"):
                try:
                    out.append(float(p.strip(" \x00")))
                except ValueError:
                    continue
            return [v for v in out if math.isfinite(v)]
        return []

    def number(self, keyword: str) -> float | None:
        v = self.numbers(keyword)
        return v[0] if v else None

    def integer(self, keyword: str) -> int | None:
        v = self.number(keyword)
        return int(v) if v is not None else None


def _clean(value: str | None, forbidden: list[str]) -> str | None:
    from analysis.privacy import clean_text

    if not value:
        return None
    low = value.lower()
    s = clean_text(value, forbidden=[w for w in forbidden if w.lower() in low])  # only words present
    return s or None


def _uid_name(uid: str | None) -> str | None:
    if not uid:
        return None
    if not uid.startswith("1.2.840.10008."):
        return "private"  # what privacy.uid_name says of every non-standard UID
    return _standard_uid_name(uid)  # only standard (non-identifying) UIDs are memoised


@functools.lru_cache(maxsize=256)
def _standard_uid_name(uid: str) -> str:
    import warnings

    from analysis.privacy import uid_name  # the one rule: standard UIDs by name only, never the UID

    with warnings.catch_warnings():  # pydicom warns about malformed UIDs; the answer is "private"
        warnings.simplefilter("ignore")
        return uid_name(uid)


def _dicom_row(h: _Header, salt: bytes, ts_uid: str | None) -> dict[str, Any]:
    """Allow-listed tags + pseudonymous keys of one DICOM header."""
    from analysis.privacy import pseudonym

    forbidden: list[str] = []
    texts = {k: h.text(kw) for k, kw in (("manufacturer", "Manufacturer"), ("model", "ManufacturerModelName"),
                                         ("body_part", "BodyPartExamined"), ("study_description", "StudyDescription"),
                                         ("series_description", "SeriesDescription"),
                                         ("convolution_kernel", "ConvolutionKernel"))}
    if any(texts.values()):
        for kw in _IDENT_KEYWORDS:
            for s in h.strings(kw):
                forbidden.append(s)
                forbidden.extend(p for p in s.replace("^", " ").replace("=", " ").replace(",", " ").split() if len(p) >= 3)
    row: dict[str, Any] = {k: _clean(v, forbidden) for k, v in texts.items()}
    modality = (h.text("Modality") or "").upper()[:16] or "OT"
    row["modality"] = modality
    ps = h.numbers("PixelSpacing") or h.numbers("ImagerPixelSpacing")
    if len(ps) >= 2 and ps[0] > 0 and ps[1] > 0:
        row["spacing_row_mm"], row["spacing_col_mm"] = ps[0], ps[1]
    row["slice_thickness_mm"] = h.number("SliceThickness")
    pos, ori = h.numbers("ImagePositionPatient"), h.numbers("ImageOrientationPatient")
    if len(pos) == 3 and len(ori) == 6:  # position along the slice normal (row × column cosines)
        r0, r1, r2, c0, c1, c2 = ori
        normal = (r1 * c2 - r2 * c1, r2 * c0 - r0 * c2, r0 * c1 - r1 * c0)
        row["slice_position_mm"] = float(normal[0] * pos[0] + normal[1] * pos[1] + normal[2] * pos[2])
    row["instance_number"] = h.integer("InstanceNumber")
    row["kvp"] = h.number("KVP")
    wc, ww = h.numbers("WindowCenter"), h.numbers("WindowWidth")
    row["window_center"] = wc[0] if wc else None
    row["window_width"] = ww[0] if ww else None
    slope, icpt = h.number("RescaleSlope"), h.number("RescaleIntercept")
    row["rescale_slope"], row["rescale_intercept"] = slope, icpt
    row["rescale_type"] = _clean(h.text("RescaleType"), forbidden)
    row["has_modality_lut"] = h.has("ModalityLUTSequence")
    row["photometric"] = (h.text("PhotometricInterpretation") or "").upper()[:24] or None
    row["sop_class"] = _uid_name((h.strings("SOPClassUID") or [None])[0])
    row["transfer_syntax"] = _uid_name(ts_uid)
    for key, kw in (("rows", "Rows"), ("cols", "Columns"), ("bits_allocated", "BitsAllocated"),
                    ("bits_stored", "BitsStored"), ("pixel_representation", "PixelRepresentation")):
        row[key] = h.integer(kw)
    row["frames"] = h.integer("NumberOfFrames") or 1
    for key, kw in (("subject_key", "PatientID"), ("study_key", "StudyInstanceUID"), ("series_key", "SeriesInstanceUID")):
        v = (h.strings(kw) or [None])[0]
        if key == "subject_key" and not v:
            v = (h.strings("PatientName") or [None])[0]
        row[key] = pseudonym(v, salt) if v else None
    units = {"CT": "HU", "MR": "a.u.", "PT": (h.text("Units") or "counts")}.get(modality, "grey level")
    if modality == "CT" and row["rescale_type"] not in (None, "HU"):
        units = row["rescale_type"]
    row["units"] = _clean(units, forbidden)
    return row


_NATIVE_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}


def _native_pixels(data: bytes, pos: int, h: _Header, ts_uid: str | None) -> np.ndarray | None:
    """Zero-copy view of uncompressed little-endian greyscale pixel data, or None (slow path)."""
    if ts_uid not in _NATIVE_LE or len(data) < pos + 8:
        return None
    grp, el = struct.unpack_from("<HH", data, pos)
    if (grp, el) != (0x7FE0, 0x0010):
        return None
    if ts_uid == "1.2.840.10008.1.2":  # implicit VR
        length = struct.unpack_from("<I", data, pos + 4)[0]
        start = pos + 8
    else:
        vr = data[pos + 4: pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"OD", b"OL", b"UN", b"OV"):
            length = struct.unpack_from("<I", data, pos + 8)[0]
            start = pos + 12
        else:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            start = pos + 8
    if length == 0xFFFFFFFF:
        return None
    geo = _grey_geometry(h)
    if geo is None:
        return None
    rows, cols, frames, ba, bs, pr = geo
    count = rows * cols * frames
    dtype = np.dtype(f"<{'i' if pr else 'u'}{ba // 8}")
    if min(length, len(data) - start) < count * dtype.itemsize:
        from analysis.io import LoadError

        raise LoadError("", f"pixel data is shorter than Rows × Columns × frames says "
                            f"({len(data) - start} of {count * dtype.itemsize} bytes): the file is truncated")
    a = np.frombuffer(data, dtype=dtype, count=count, offset=start)
    return _bits_stored(a.reshape((frames, rows, cols) if frames > 1 else (rows, cols)), ba, bs, pr)


def _grey_geometry(h: _Header) -> tuple[int, int, int, int, int, int] | None:
    """(rows, cols, frames, bits allocated, bits stored, pixel representation) of a one-sample
    image with 8/16/32-bit pixels, else None."""
    spp = h.integer("SamplesPerPixel") or 1
    rows, cols = h.integer("Rows") or 0, h.integer("Columns") or 0
    frames = h.integer("NumberOfFrames") or 1
    ba, bs = h.integer("BitsAllocated"), h.integer("BitsStored")
    pr = h.integer("PixelRepresentation") or 0
    if spp != 1 or ba not in (8, 16, 32) or rows <= 0 or cols <= 0 or frames < 1 or pr not in (0, 1):
        return None
    return rows, cols, frames, ba, (bs if bs and 0 < bs <= ba else ba), pr


def _bits_stored(a: np.ndarray, ba: int, bs: int, pr: int) -> np.ndarray:
    """Keep the BitsStored low bits (unsigned) or sign-extend them (signed), as pydicom does."""
    if bs < ba:
        lo, hi = int(a.min()), int(a.max())
        if pr == 0 and hi >= (1 << bs):
            a = a & a.dtype.type((1 << bs) - 1)
        elif pr == 1 and (lo < -(1 << (bs - 1)) or hi >= (1 << (bs - 1))):
            shift = ba - bs
            a = np.right_shift(np.left_shift(a, shift), shift)
    return a


_RLE = "1.2.840.10008.1.2.5"


def _rle_pixels(data: bytes, pos: int, h: _Header, ts_uid: str | None) -> np.ndarray | None:
    """RLE Lossless greyscale decoded straight with pylibjpeg-rle (the codec pydicom itself
    calls), without a second full ``dcmread``; None means "use pydicom's pipeline"."""
    if ts_uid != _RLE or len(data) < pos + 12 or data[pos: pos + 4] != b"\xe0\x7f\x10\x00" \
            or data[pos + 4: pos + 6] not in (b"OB", b"OW"):
        return None
    if _U32.unpack_from(data, pos + 8)[0] != 0xFFFFFFFF:
        return None
    geo = _grey_geometry(h)
    if geo is None:
        return None
    rows, cols, frames, ba, bs, pr = geo
    try:
        from pydicom.encaps import generate_frames
        from rle.utils import decode_frame
    except ImportError:  # pragma: no cover - the codec is a declared dependency
        return None
    dtype = np.dtype(f"<{'i' if pr else 'u'}{ba // 8}")
    planes = []
    try:
        for frame in generate_frames(data[pos + 12:], number_of_frames=frames):
            raw = decode_frame(frame, rows * cols, ba, "<")
            planes.append(np.frombuffer(raw, dtype=dtype, count=rows * cols).reshape(rows, cols))
            if len(planes) == frames:
                break
    except Exception:  # noqa: BLE001 - damaged data: pydicom's pipeline gives the reason
        return None
    if len(planes) != frames:
        return None
    a = planes[0] if frames == 1 else np.stack(planes)
    return _bits_stored(a, ba, bs, pr)


def _dicom_image(data: bytes, name: str, salt: bytes) -> dict[str, Any]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    from analysis.io import LoadError

    walked = _walk_header(data)
    h = _Header(raw=walked[0]) if walked else None
    if h is not None and h.encoding() == "pydicom":
        h = None  # text in a character set only pydicom decodes
    if h is not None and walked is not None:
        pos, ts_uid = walked[1], walked[2]
    else:
        fp = io.BytesIO(data)
        try:
            ds = pydicom.dcmread(fp, stop_before_pixels=True, force=data[128:132] != b"DICM")
        except (InvalidDicomError, EOFError, ValueError, struct.error, OSError) as exc:
            raise LoadError(name, f"not a readable DICOM file ({type(exc).__name__}): the header is damaged or truncated") from None
        pos = fp.tell()
        h = _Header(ds)
        ts_uid = None
        fm = getattr(ds, "file_meta", None)
        if fm is not None and "TransferSyntaxUID" in fm:
            ts_uid = str(fm.TransferSyntaxUID).strip("\x00 ")
    if pos >= len(data) - 8:
        raise LoadError(name, "no pixel data: the file ends after its header (truncated, or a DICOM object without an image)")
    row = _dicom_row(h, salt, ts_uid)
    row["format"] = "dicom"
    try:
        stored = _native_pixels(data, pos, h, ts_uid)
    except LoadError as exc:
        raise LoadError(name, exc.reason) from None
    if stored is None and ts_uid == _RLE:
        stored = _rle_pixels(data, pos, h, ts_uid)
    slope = row["rescale_slope"] if row["rescale_slope"] not in (None, 0) else 1.0
    icpt = row["rescale_intercept"] if row["rescale_intercept"] is not None else 0.0
    if stored is None or row["has_modality_lut"]:
        stored, slope, icpt = _dicom_pixels_slow(data, name, row)
    if (h.integer("SamplesPerPixel") or 1) >= 3 and stored.ndim >= 3 and stored.shape[-1] in (3, 4):
        stored = (0.299 * stored[..., 0] + 0.587 * stored[..., 1] + 0.114 * stored[..., 2]).astype(np.float32)  # luminance
    plane = stored[stored.shape[0] // 2] if stored.ndim == 3 else stored
    stats = image_statistics(stored, slope=slope, intercept=icpt, modality=row["modality"])
    row.update(stats)
    win = (row["window_center"], row["window_width"]) if row["window_center"] is not None and row["window_width"] else None
    row.update(_visual(plane, slope, icpt, win, row.get("photometric") == "MONOCHROME1", stats))
    if row.get("rows") is None:
        row["rows"], row["cols"] = int(plane.shape[0]), int(plane.shape[1])
    return row


def _dicom_pixels_slow(data: bytes, name: str, row: dict[str, Any]) -> tuple[np.ndarray, float, float]:
    """Compressed / big-endian / colour / modality-LUT files: pydicom's pixel pipeline."""
    import pydicom

    from analysis.io import LoadError

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoder errors are per-file reasons
        msg = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise LoadError(name, f"pixel data could not be decoded ({type(exc).__name__}: {msg})") from None
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32), 1.0, 0.0
    slope = row["rescale_slope"] if row["rescale_slope"] not in (None, 0) else 1.0
    icpt = row["rescale_intercept"] if row["rescale_intercept"] is not None else 0.0
    return arr, slope, icpt


def _other_image(data: bytes, name: str, path: Path) -> dict[str, Any]:
    """PNG / JPEG / TIFF / NIfTI / stored uploads: through the project's loaders (physical units)."""
    from analysis.image import Image
    from analysis.io import LoadError

    if name.endswith(".mlimg.npz"):
        from analysis.store import load_stored

        img = load_stored(path)
    else:
        from analysis import io as mlio

        images = mlio.load_bytes(data, name)
        if not images:
            raise LoadError(name, "no image in this file")
        img: Image = images[0]
    a = img.pixels
    if img.is_rgb:
        a = img.pixels[..., :3]
        a = (0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]).astype(np.float32)
    elif a.dtype.kind == "f" and a.size and np.array_equal(a, np.round(a)) and np.nanmax(np.abs(a)) < 2 ** 24:
        a = a.astype(np.int32)  # integer-valued: exact histogram path
    meta = img.metadata or {}
    row: dict[str, Any] = {
        "format": (img.source_format or path.suffix.lstrip(".")).lower(),
        "modality": (img.modality or "OT").upper(),
        "units": img.units,
        "rows": int(img.shape2d[0]), "cols": int(img.shape2d[1]), "frames": int(img.n_planes),
        "photometric": "RGB" if img.is_rgb else (meta.get("photometric") or None),
    }
    if img.spacing:
        row["spacing_row_mm"], row["spacing_col_mm"] = float(img.spacing[0]), float(img.spacing[1])
    for key in ("manufacturer", "model", "body_part", "study_description", "series_description"):
        if isinstance(meta.get(key), str):
            row[key] = meta[key]
    bd = meta.get("bit_depth") or meta.get("bits_stored")
    if isinstance(bd, (int, float)):
        row["bits_stored"] = int(bd)
    if img.window:
        row["window_center"], row["window_width"] = float(img.window[0]), float(img.window[1])
    stats = image_statistics(a, modality=row["modality"])
    row.update(stats)
    row.update(_visual(a[a.shape[0] // 2] if a.ndim == 3 else a, 1.0, 0.0, img.window, bool(img.invert), stats))
    return row


def _looks_dicom(data: bytes, name: str) -> bool:
    if data[128:132] == b"DICM":
        return True
    suf = PurePosixPath(name).suffix.lower()
    if suf in (".dcm", ".dicom", ".ima"):
        return True
    # files named by UID or without an extension: a DICOM data set starts with a group-0008 tag
    return (suf == "" or suf[1:].isdigit()) and len(data) > 8 and data[:2] in (b"\x08\x00", b"\x02\x00")


_thread_setup = threading.local()


def _setup_worker() -> None:
    """Per-process tuning for ingest work (idempotent).

    * OpenCV on one thread: the engine parallelises across files.
    * glibc malloc: serve arrays up to 32 MiB from the heap and keep up to 64 MiB of freed
      heap before trimming. With the default (mmap for every fresh ≥ 128 KiB array) each image's
      temporaries are page-faulted in and unmapped again, which measured ~30 % of ingest CPU
      (same cause as Dask's MALLOC_TRIM_THRESHOLD_ trap in the performance guide). Memory
      stays bounded by the largest image's working set.
    """
    if getattr(_thread_setup, "done", False):
        return
    try:
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # noqa: BLE001
        pass
    _tune_malloc()
    _thread_setup.done = True


_MALLOC_TUNED = False


def _tune_malloc() -> None:
    global _MALLOC_TUNED
    if _MALLOC_TUNED or os.environ.get("MEDLENS_NO_MALLOC_TUNING") == "1":
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass
    _MALLOC_TUNED = True


def file_hash(data: bytes) -> str:
    """The catalog's content hash: ``"xxh3:"`` + XXH3-128 hex of the file's bytes.

    Used for change detection (incremental ingest) and exact-duplicate groups only — never as
    a security boundary (the app's shared caches key on SHA-256 digests, see ``ui.data``).
    XXH3-128 is 5.5× faster than SHA-256 here (0.05 vs 0.29 ms for a 512 KiB file).
    """
    import xxhash

    return "xxh3:" + xxhash.xxh3_128_hexdigest(data)


def ingest_file(item: dict[str, Any], *, salt: bytes, max_bytes: int = 2 << 30) -> dict[str, Any]:
    """Read, hash, describe and measure one file (runs in a worker; picklable).

    ``item``: ``{"abs": path, "path": relative path, "size", "mtime_ns", "old_hash"}``.
    Returns a catalog row (``status`` ok/failed). When ``old_hash`` equals the new content
    hash, returns ``{"_unchanged": True, ...}`` and nothing is decoded.
    """
    from analysis.io import LoadError

    _setup_worker()
    p = Path(item["abs"])
    rel = item["path"]
    base = {"path": rel, "name": PurePosixPath(rel).name, "size_bytes": item.get("size"),
            "mtime_ns": item.get("mtime_ns"), "label": item.get("label"), "role": item.get("role")}
    try:
        if item.get("size") is not None and item["size"] > max_bytes:
            raise LoadError(p.name, f"file is larger than the {max_bytes >> 20} MiB limit")
        data = p.read_bytes()
    except LoadError as exc:
        return {**base, "status": "failed", "error": exc.reason, "format": _fmt(rel)}
    except OSError as exc:
        return {**base, "status": "failed", "error": f"cannot read the file ({type(exc).__name__})", "format": _fmt(rel)}
    digest = file_hash(data)
    base["content_hash"] = digest
    base["size_bytes"] = len(data)
    if item.get("old_hash") and item["old_hash"] == digest:
        return {**base, "_unchanged": True}
    name = base["name"]
    try:
        if PurePosixPath(rel).suffix.lower() == ".zip":
            raise LoadError(name, "ZIP archives are not catalogued file by file: unpack it into the folder, or upload it")
        row = _dicom_image(data, name, salt) if _looks_dicom(data, name) else _other_image(data, name, p)
    except LoadError as exc:
        return {**base, "status": "failed", "error": exc.reason, "format": _fmt(rel)}
    except MemoryError:
        return {**base, "status": "failed", "error": "out of memory while reading this image", "format": _fmt(rel)}
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this file's reason, not a crash
        msg = str(exc).splitlines()[0][:160] if str(exc) else ""
        return {**base, "status": "failed", "error": f"could not be read ({type(exc).__name__}{': ' + msg if msg else ''})",
                "format": _fmt(rel)}
    row.update(base)
    row["status"] = "ok"
    row["error"] = None
    return _normalise(row)


def _normalise(row: dict[str, Any]) -> dict[str, Any]:
    """Catalog types in the worker (finite float or None, int, str), so the writer's Arrow
    conversion is one C call per column instead of a Python loop on the writer's core."""
    for k, v in row.items():
        t = COLUMN_TYPES.get(k)
        if v is None or t is None:
            continue
        if t == "DOUBLE":
            v = float(v)
            row[k] = v if math.isfinite(v) else None
        elif t in ("INTEGER", "BIGINT", "UBIGINT"):
            row[k] = int(v)
        elif t == "VARCHAR" and type(v) is not str:
            row[k] = str(v)
    return row


def _fmt(rel: str) -> str:
    name = PurePosixPath(rel).name.lower()
    if name.endswith(".nii.gz"):
        return "nifti"
    if name.endswith(".mlimg.npz"):
        return "upload"
    suf = PurePosixPath(name).suffix.lstrip(".")
    return {"dcm": "dicom", "jpg": "jpeg", "tif": "tiff", "nii": "nifti"}.get(suf, suf or "dicom?")


def run_items(items: Sequence[dict[str, Any]], salt: bytes) -> list[dict[str, Any]]:
    """Process a batch of files in this process (what one engine task does)."""
    return [ingest_file(it, salt=salt) for it in items]


# ============================================================================ file listing
def list_files(root: str | Path, *, use_manifest: bool = True) -> Iterator[dict[str, Any]]:
    """Files to catalogue under ``root``: ``{"abs", "path", "size", "mtime_ns", "label", "role"}``.

    A ``manifest.csv`` with a ``path`` column (the sample dataset) lists the images and gives
    their ``label`` / ``role``; otherwise the folder is walked (hidden entries skipped; files
    that are plainly not images — text, CSV, JSON, NumPy, databases — skipped) and ``label``
    is the first sub-folder's name. (Plain string paths: pathlib cost 0.3 ms a file here.)
    """
    root = Path(root)
    man = root / "manifest.csv"
    if use_manifest and man.is_file():
        with open(man, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        if rows and "path" in rows[0]:
            for r in rows:
                rel = (r.get("path") or "").strip()
                if not rel:
                    continue
                p = root / rel
                members = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
                for q in members:
                    yield _stat_item(str(q), q.relative_to(root).as_posix(), label=r.get("label") or None,
                                     role=r.get("role") or None)
            return
    top = os.fspath(root)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        sub = os.path.relpath(dirpath, top)
        sub = "" if sub == "." else sub.replace(os.sep, "/") + "/"
        label = sub.split("/", 1)[0] if sub else None
        for fn in sorted(filenames):
            if fn.startswith(".") or fn.endswith((".nii.gz.tmp",)):
                continue
            low = fn.lower()
            dot = low.rfind(".")
            suf = low[dot:] if dot > 0 else ""
            if suf in SKIP_SUFFIXES or low.endswith((".duckdb.wal", ".mlimg.npz.tmp")):
                continue
            ap = os.path.join(dirpath, fn)
            if os.path.islink(ap):
                continue
            yield _stat_item(ap, sub + fn, label=label, role=None)


def _stat_item(abs_path: str, rel: str, *, label: str | None, role: str | None) -> dict[str, Any]:
    try:
        s = os.stat(abs_path)
        size, mtime = int(s.st_size), int(s.st_mtime_ns)
    except OSError:
        size, mtime = None, None
    return {"abs": abs_path, "path": rel, "size": size, "mtime_ns": mtime, "label": label, "role": role}


# ============================================================================ the catalog
_WRITERS: dict[str, threading.Lock] = {}
_WRITERS_LOCK = threading.Lock()


def _is_lock_error(exc: BaseException) -> bool:
    msg = str(exc).lower()
    return ("lock" in msg or "different configuration" in msg or "already open" in msg
            or "resource temporarily unavailable" in msg)


def _try_read_only(path: Path) -> Any:
    """A read-only connection, or None while another connection holds a conflicting lock — or
    when the file vanished between the caller's check and the open (the writer removes its
    snapshot when it finishes; the caller's loop then reads the catalog file itself)."""
    import duckdb

    try:
        return duckdb.connect(str(path), read_only=True)
    except (duckdb.IOException, duckdb.ConnectionException) as exc:
        if not _is_lock_error(exc) and path.exists():
            raise
        return None


class Catalog:
    """A DuckDB catalog file. ``reader()`` for queries, ``writer()`` for ingest (one at a time)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.snapshot_path = self.path.with_name(self.path.name + ".snapshot")
        self.want_snapshot_path = self.path.with_name(self.path.name + ".want-snapshot")

    # ---------------------------------------------------------------- state
    def exists(self) -> bool:
        return self.path.exists() or self.snapshot_path.exists()

    def stamp(self) -> tuple:
        """Changes whenever the catalog's content may have changed (cache key for readers)."""
        out = []
        for p in (self.path, self.path.with_name(self.path.name + ".wal"), self.snapshot_path):
            try:
                s = p.stat()
                out.append((s.st_size, s.st_mtime_ns))
            except OSError:
                out.append(None)
        return tuple(out)

    # ---------------------------------------------------------------- connections
    @contextlib.contextmanager
    def reader(self, *, wait_s: float = 10.0) -> Iterator[Any]:
        """A read-only connection: the file itself, or — while an ingest holds the write lock —
        a consistent snapshot the writer publishes between batches. Raises
        :class:`CatalogBusy` if neither is available within ``wait_s``."""
        if not self.path.exists():
            raise FileNotFoundError(f"no catalog yet at {self.path.name}: ingest a dataset first")
        deadline = time.monotonic() + wait_s
        asked = False
        while True:
            con = _try_read_only(self.path)
            if con is not None:
                break
            if not asked:
                with contextlib.suppress(OSError):
                    self.want_snapshot_path.touch()
                asked = True
            con = _try_read_only(self.snapshot_path) if self.snapshot_path.exists() else None
            if con is not None:
                break
            if time.monotonic() > deadline:
                raise CatalogBusy("the catalog is being written by an ingest; try again in a moment")
            time.sleep(0.05)
        try:
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def writer(self, *, wait_s: float = 30.0) -> Iterator["_Writer"]:
        import duckdb

        key = str(self.path.resolve())
        with _WRITERS_LOCK:
            lock = _WRITERS.setdefault(key, threading.Lock())
        if not lock.acquire(timeout=wait_s):
            raise CatalogBusy("another ingest in this process is writing this catalog")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    con = duckdb.connect(str(self.path))
                    break
                except (duckdb.IOException, duckdb.ConnectionException) as exc:
                    if not _is_lock_error(exc) or time.monotonic() > deadline:
                        raise CatalogBusy("another process is writing this catalog (an ingest is running)") from exc
                    time.sleep(0.1)
            con.execute("SET threads = 1")  # small batches: thread hand-offs cost more than they give
            # keep the writer's buffer pool small: written pages are on disk after each checkpoint,
            # so memory stays flat however many rows the catalog grows to
            con.execute("SET memory_limit = '96MB'")
            con.execute("SET checkpoint_threshold = '8MB'")
            w = _Writer(self, con)
            try:
                w.ensure_schema()
                yield w
            finally:
                w.close()
        finally:
            lock.release()

    # ---------------------------------------------------------------- convenience reads
    def query(self, sql: str, params: Sequence[Any] | None = None):  # type: ignore[no-untyped-def]
        """Run one read-only query and return a pandas DataFrame."""
        with self.reader() as con:
            return con.execute(sql, list(params or [])).df()

    def count(self, status: str | None = None) -> int:
        if not self.exists():
            return 0
        with self.reader() as con:
            if status:
                return int(con.execute("SELECT count(*) FROM images WHERE status = ?", [status]).fetchone()[0])
            return int(con.execute("SELECT count(*) FROM images").fetchone()[0])

    def export(self, out: str | Path, *, where: str = "", params: Sequence[Any] | None = None,
               columns: Sequence[str] | None = None) -> Path:
        """Write rows (no thumbnail blob) to ``.parquet`` or ``.csv`` (chosen by suffix)."""
        out = Path(out)
        cols = [c for c in (columns or COLUMN_NAMES) if c in COLUMN_TYPES and c != "thumb"]
        sel = ", ".join(_q(c) for c in cols)
        fmt = "PARQUET" if out.suffix.lower() == ".parquet" else "CSV, HEADER"
        cond = f"WHERE {where}" if where else ""
        with self.reader() as con:  # COPY's target cannot be a parameter: a quoted literal
            con.execute(f"COPY (SELECT {sel} FROM images {cond} ORDER BY root_id, path) TO {_lit(str(out))} "
                        f"(FORMAT {fmt})", list(params or []))
        return out


def _q(col: str) -> str:
    if col not in COLUMN_TYPES and col not in ("cluster", "score"):
        raise ValueError(f"unknown catalog column {col!r}")
    return f'"{col}"'


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


class _Writer:
    """The ingest side of a catalog: batch upserts, snapshot publishing on request."""

    def __init__(self, catalog: Catalog, con: Any) -> None:
        self.catalog = catalog
        self.con = con
        self._last_snapshot = 0.0
        self._snapshot_cost = 0.0
        self.published = False

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One commit (one WAL sync) for several statements, rolled back on any error."""
        self.con.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def ensure_schema(self) -> None:
        cols = ", ".join(f'"{c}" {t}' for c, t in COLUMNS)
        with self.transaction():
            self.con.execute(f"CREATE TABLE IF NOT EXISTS images ({cols}, PRIMARY KEY (root_id, path))")
            self.con.execute("CREATE TABLE IF NOT EXISTS roots (root_id VARCHAR PRIMARY KEY, name VARCHAR, "
                             "kind VARCHAR, first_ingest DOUBLE, last_ingest DOUBLE, complete BOOLEAN)")
            self.con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
            self.con.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", [SCHEMA_VERSION])
            existing = {r[0] for r in self.con.execute("SELECT column_name FROM information_schema.columns "
                                                       "WHERE table_name = 'images'").fetchall()}
            for c, t in COLUMNS:  # additive schema evolution
                if c not in existing:
                    self.con.execute(f'ALTER TABLE images ADD COLUMN "{c}" {t}')

    def check_salt(self, salt: bytes) -> None:
        sid = salt_id(salt)
        row = self.con.execute("SELECT value FROM meta WHERE key = 'salt_id'").fetchone()
        if row is None:
            n = self.con.execute("SELECT count(*) FROM images WHERE subject_key IS NOT NULL").fetchone()[0]
            if n:
                raise ValueError("this catalog has pseudonymous keys but no salt fingerprint; rebuild it")
            self.con.execute("INSERT INTO meta VALUES ('salt_id', ?)", [sid])
        elif row[0] != sid:
            raise ValueError("this catalog was built with another pseudonym salt (another MEDLENS_HOME); "
                             "its subject/study/series keys would not match. Use the same app folder, or a new --db.")

    def known(self, root_id: str) -> dict[str, tuple[int | None, int | None, str | None]]:
        rows = self.con.execute("SELECT path, size_bytes, mtime_ns, content_hash FROM images WHERE root_id = ?",
                                [root_id]).fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def register_root(self, root_id: str, name: str, kind: str) -> None:
        now = time.time()
        self.con.execute("INSERT INTO roots VALUES (?, ?, ?, ?, ?, false) ON CONFLICT (root_id) DO UPDATE SET "
                         "name = excluded.name, kind = excluded.kind, last_ingest = excluded.last_ingest, complete = false",
                         [root_id, name, kind, now, now])

    def finish_root(self, root_id: str) -> None:
        self.con.execute("UPDATE roots SET complete = true, last_ingest = ? WHERE root_id = ?", [time.time(), root_id])

    def upsert(self, rows: list[dict[str, Any]], *, replace: bool = True) -> None:
        """Insert (``replace``: or replace) full rows, committed as one transaction."""
        if not rows:
            return
        table = _arrow_rows(rows)
        with self.transaction():
            self.con.register("_batch", table)
            self.con.execute(f"INSERT {'OR REPLACE ' if replace else ''}INTO images SELECT * FROM _batch")
            self.con.unregister("_batch")

    def touch(self, root_id: str, rows: list[dict[str, Any]]) -> None:
        """Files whose mtime/size changed but whose content did not: update the stat only."""
        if not rows:
            return
        with self.transaction():
            for r in rows:
                self.con.execute("UPDATE images SET size_bytes = ?, mtime_ns = ? WHERE root_id = ? AND path = ?",
                                 [r.get("size_bytes"), r.get("mtime_ns"), root_id, r["path"]])

    def delete_missing(self, root_id: str, gone: list[str]) -> int:
        """Delete the rows of files no longer under the root (paths the listing did not find)."""
        if gone:
            import pyarrow as pa

            with self.transaction():
                self.con.register("_gone", pa.table({"path": gone}))
                self.con.execute("DELETE FROM images WHERE root_id = ? AND path IN (SELECT path FROM _gone)",
                                 [root_id])
                self.con.unregister("_gone")
        return len(gone)

    def maybe_publish(self, *, force: bool = False) -> None:
        """Publish a snapshot for readers if one was asked for (at most every few seconds,
        never more than ~10 % of the ingest's time)."""
        want = self.catalog.want_snapshot_path.exists()
        if not (want or force):
            return
        now = time.monotonic()
        if not force and now - self._last_snapshot < max(2.0, 10 * self._snapshot_cost):
            return
        t0 = time.monotonic()
        self.con.execute("CHECKPOINT")
        snap = self.catalog.snapshot_path
        tmp = snap.with_name(snap.name + f".{os.getpid()}.tmp")
        import shutil

        shutil.copyfile(self.catalog.path, tmp)
        os.replace(tmp, snap)
        with contextlib.suppress(OSError):
            self.catalog.want_snapshot_path.unlink()
        self._snapshot_cost = time.monotonic() - t0
        self._last_snapshot = time.monotonic()
        self.published = True

    def close(self) -> None:
        try:
            self.con.close()
        finally:
            # readers go back to the file itself; a stale snapshot would only waste disk
            for p in (self.catalog.snapshot_path, self.catalog.want_snapshot_path):
                with contextlib.suppress(OSError):
                    p.unlink()


_ARROW_TYPES = {"VARCHAR": "string", "BIGINT": "int64", "INTEGER": "int32", "DOUBLE": "float64",
                "BOOLEAN": "bool_", "UBIGINT": "uint64", "BLOB": "binary"}


@functools.lru_cache(maxsize=1)
def _arrow_schema():  # type: ignore[no-untyped-def]
    import pyarrow as pa

    return pa.schema([(c, getattr(pa, _ARROW_TYPES[COLUMN_TYPES[c]])()) for c in COLUMN_NAMES])


def _arrow_rows(rows: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    """An Arrow table of catalog rows: one C++ pass over the row dicts when they are already
    normalised (what ``ingest_file`` returns: finite floats or None, ints, str — 0.005 ms a row
    against 0.03 column by column), else the column-by-column conversion that cleans values."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        table = pa.Table.from_pylist(rows, schema=_arrow_schema())
        if not any(pc.any(pc.invert(pc.is_finite(table[c]))).as_py() for c in _DOUBLE_COLUMNS):  # NaN / ±inf
            return table
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError, ValueError):
        pass
    return pa.table({c: _arrow_column(c, [r.get(c) for r in rows]) for c in COLUMN_NAMES})


def _arrow_column(col: str, values: list[Any]):  # type: ignore[no-untyped-def]
    """One column of rows that are not normalised: non-finite floats become null, numbers and
    text are coerced to the column's type."""
    import pyarrow as pa

    t = COLUMN_TYPES[col]
    typ = _arrow_schema().field(col).type
    if t == "DOUBLE":
        values = [None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v) for v in values]
    elif t in ("INTEGER", "BIGINT", "UBIGINT"):
        values = [None if v is None else int(v) for v in values]
    elif t == "VARCHAR":
        values = [None if v is None else str(v) for v in values]
    return pa.array(values, type=typ)


# ============================================================================ ingest
@dataclass
class IngestReport:
    root_id: str
    total: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    touched: int = 0
    failed: int = 0
    removed: int = 0
    seconds: float = 0.0
    errors: list[dict[str, str]] = field(default_factory=list)


Progress = Callable[[int, int], None]


def ingest(
    root: str | Path,
    *,
    catalog: Catalog | str | Path | None = None,
    engine: Any = None,
    workers: int | None = None,
    batch_size: int | None = None,
    progress: Progress | None = None,
    on_error: Callable[[str, str], None] | None = None,
    kind: str = "folder",
    salt: bytes | None = None,
    prune: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> IngestReport:
    """Catalogue every image under ``root`` (incremental, resumable, streaming).

    Parameters
    ----------
    root : path
        Folder to ingest (the sample dataset's folder, an uploads folder, a server folder).
    catalog : Catalog or path, optional
        Default: ``app_home()/catalog.duckdb``.
    engine : Engine, optional
        Anything with ``map_chunks(func, chunks, on_chunk)`` (:mod:`analysis.batch`,
        :class:`analysis.engine.DaskEngine`). Default: :func:`analysis.engine.default_engine`.
    batch_size : int, optional
        Files per task and per committed transaction (default 64; fewer for small folders).
    progress : callable, optional
        ``progress(done, total)`` after each committed batch (and once at 0).
    on_error : callable, optional
        ``on_error(relative_path, reason)`` for every file that failed.
    should_stop : callable, optional
        Checked between batches; when it returns True the ingest stops after committing
        what is done (the next run continues).
    """
    from functools import partial

    t0 = time.perf_counter()
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root.name or root}")
    cat = catalog if isinstance(catalog, Catalog) else Catalog(catalog)
    salt = salt or load_salt()
    rid = root_id_for(root)
    report = IngestReport(root_id=rid)
    with cat.writer() as w:
        with w.transaction():
            w.check_salt(salt)
            w.register_root(rid, root.name, kind)
        known = w.known(rid)
        todo: list[dict[str, Any]] = []
        present: set[str] = set()
        for it in list_files(root):
            if it["path"] in present:  # listed twice (a manifest naming a folder and its files)
                continue
            present.add(it["path"])
            old = known.get(it["path"])
            if old is not None and old[0] == it["size"] and old[1] == it["mtime_ns"] and it["size"] is not None:
                report.unchanged += 1
                continue
            if old is not None:
                it["old_hash"] = old[2]
            it["_existed"] = old is not None
            todo.append(it)
        gone = [p for p in known if p not in present]  # the writer lock keeps this true to the end
        del known
        report.total = len(todo)
        if progress:
            progress(0, len(todo))
        if engine is None:
            from analysis.engine import default_engine

            engine = default_engine(len(todo), workers)
        nw = max(1, int(getattr(engine, "workers", 1) or 1))
        if batch_size is None:
            batch_size = int(min(64, max(1, math.ceil(len(todo) / (2 * nw)))))
        existed = {it["path"]: it.pop("_existed") for it in todo}
        chunks = [[(i, it) for i, it in enumerate(todo[k: k + batch_size], start=k)]
                  for k in range(0, len(todo), batch_size)]
        func = partial(_ingest_item, salt=salt)
        done = 0

        class _Stop(Exception):
            pass

        def on_chunk(results: list[tuple[int, dict]]) -> None:
            nonlocal done
            rows, touched = [], []
            for idx, row in results:
                it = todo[idx]
                if "path" not in row:  # the engine lost this item (worker crash)
                    row = {"path": it["path"], "name": PurePosixPath(it["path"]).name, "status": "failed",
                           "error": row.get("error") or "the worker failed on this file", "format": _fmt(it["path"]),
                           "size_bytes": it["size"], "mtime_ns": it["mtime_ns"], "label": it.get("label"),
                           "role": it.get("role")}
                row["mtime_ns"] = it["mtime_ns"]
                if row.pop("_unchanged", False):
                    touched.append(row)
                    continue
                row["root_id"] = rid
                row["ingested_at"] = time.time()
                rows.append(row)
                if row.get("status") == "failed":
                    report.failed += 1
                    report.errors.append({"file": row["path"], "reason": row.get("error") or ""})
                    if on_error:
                        on_error(row["path"], row.get("error") or "")
                if existed.get(row["path"]):
                    report.updated += 1
                else:
                    report.added += 1
            pending.extend(rows)
            w.touch(rid, touched)
            report.touched += len(touched)
            done += len(results)
            stop = should_stop is not None and should_stop()
            if len(pending) >= commit_rows or time.monotonic() - last_commit[0] > COMMIT_SECONDS or stop:
                flush()
            w.maybe_publish()
            if progress:
                progress(done, len(todo))
            if stop:
                raise _Stop()

        pending: list[dict[str, Any]] = []
        last_commit = [time.monotonic()]
        commit_rows = max(batch_size, COMMIT_ROWS)

        def flush() -> None:
            """Commit the finished rows: one transaction per ≥ COMMIT_ROWS rows or COMMIT_SECONDS
            (a kill loses at most that much work; measured writer CPU a row: 0.12 ms in 64-row
            commits, 0.05 ms in 256-row, 0.02 ms in 1 024-row ones)."""
            if pending:
                w.upsert([r for r in pending if not existed.get(r["path"])], replace=False)
                w.upsert([r for r in pending if existed.get(r["path"])], replace=True)
                pending.clear()
            last_commit[0] = time.monotonic()

        stopped = False
        if todo:
            try:
                engine.map_chunks(func, chunks, on_chunk)
            except _Stop:
                stopped = True
            finally:
                flush()  # whatever finished is kept, also when the run is interrupted
        if not stopped:
            if prune:
                report.removed = w.delete_missing(rid, gone)
            w.finish_root(rid)
    report.seconds = time.perf_counter() - t0
    return report


def _ingest_item(item: dict[str, Any], salt: bytes) -> dict[str, Any]:
    return ingest_file(item, salt=salt)


# ============================================================================ queries (the page's aggregation layer)
@dataclass
class Filters:
    """A filter over catalog rows, compiled to a parameterised SQL ``WHERE`` (columns are
    checked against the schema; values always travel as parameters).

    ``values``: column → allowed values (``None`` in the list matches missing values);
    ``ranges``: numeric column → (low, high) inclusive; ``roots``: root ids; ``status``.
    """

    values: dict[str, list[Any]] = field(default_factory=dict)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    roots: list[str] = field(default_factory=list)
    status: str | None = "ok"

    def where(self) -> tuple[str, list[Any]]:
        parts: list[str] = []
        params: list[Any] = []
        if self.roots:
            parts.append("root_id IN (" + ", ".join("?" for _ in self.roots) + ")")
            params.extend(self.roots)
        if self.status:
            parts.append("status = ?")
            params.append(self.status)
        for col, vals in sorted(self.values.items()):
            if vals is None or len(vals) == 0:
                continue
            q = _q(col)
            present = [v for v in vals if v is not None and v != MISSING]
            sub = []
            if present:
                sub.append(f"CAST({q} AS VARCHAR) IN (" + ", ".join("?" for _ in present) + ")")
                params.extend(str(v) for v in present)
            if len(present) < len(vals):
                sub.append(f"{q} IS NULL")
            parts.append("(" + " OR ".join(sub) + ")")
        for col, (lo, hi) in sorted(self.ranges.items()):
            q = _q(col)
            parts.append(f"{q} BETWEEN ? AND ?")
            params.extend([float(lo), float(hi)])
        return (" AND ".join(parts) if parts else "TRUE"), params

    def key(self) -> str:
        sql, params = self.where()
        return sql + "|" + repr(params)


MISSING = "(missing)"


def counts_by(con: Any, col: str, flt: Filters | None = None, *, limit: int = 40) -> Any:
    """Rows per value of ``col`` (missing values as ``(missing)``), most frequent first."""
    where, params = (flt or Filters()).where()
    q = _q(col)
    return con.execute(f"SELECT coalesce(CAST({q} AS VARCHAR), '{MISSING}') AS value, count(*) AS n FROM images "
                       f"WHERE {where} GROUP BY 1 ORDER BY n DESC, value LIMIT {int(limit)}", params).df()


def cross_counts(con: Any, col: str, by: str, flt: Filters | None = None, *, limit: int = 30) -> Any:
    where, params = (flt or Filters()).where()
    a, b = _q(col), _q(by)
    return con.execute(f"SELECT coalesce(CAST({a} AS VARCHAR), '{MISSING}') AS value, "
                       f"coalesce(CAST({b} AS VARCHAR), '{MISSING}') AS grp, count(*) AS n FROM images WHERE {where} "
                       f"GROUP BY 1, 2 ORDER BY n DESC LIMIT {int(limit) * 10}", params).df()


def matrix_sizes(con: Any, flt: Filters | None = None, *, limit: int = 30) -> Any:
    """Rows per matrix size (``rows×cols``)."""
    where, params = (flt or Filters()).where()
    return con.execute(f"SELECT coalesce(rows || '×' || cols, '{MISSING}') AS value, count(*) AS n FROM images "
                       f"WHERE {where} GROUP BY 1 ORDER BY n DESC LIMIT {int(limit)}", params).df()


def total(con: Any, flt: Filters | None = None) -> int:
    where, params = (flt or Filters()).where()
    return int(con.execute(f"SELECT count(*) FROM images WHERE {where}", params).fetchone()[0])


def numeric_ranges(con: Any, cols: Sequence[str], flt: Filters | None = None) -> dict[str, tuple[float, float]]:
    where, params = (flt or Filters(status="ok")).where()
    sel = ", ".join(f"min({_q(c)}), max({_q(c)})" for c in cols)
    row = con.execute(f"SELECT {sel} FROM images WHERE {where}", params).fetchone()
    out = {}
    for i, c in enumerate(cols):
        lo, hi = row[2 * i], row[2 * i + 1]
        if lo is not None and hi is not None:
            out[c] = (float(lo), float(hi))
    return out


def histogram(con: Any, col: str, flt: Filters | None = None, *, group: str | None = None, bins: int = 40,
              top_groups: int = 8) -> Any:
    """Binned counts of a numeric column (optionally per group), computed in DuckDB.

    Returns columns ``lo, hi, grp, n``; groups beyond the ``top_groups`` most frequent
    are pooled as ``other``.
    """
    where, params = (flt or Filters()).where()
    q = _q(col)
    lo, hi = con.execute(f"SELECT min({q}), max({q}) FROM images WHERE {where} AND {q} IS NOT NULL", params).fetchone()
    if lo is None:
        import pandas as pd

        return pd.DataFrame(columns=["lo", "hi", "grp", "n"])
    lo, hi = float(lo), float(hi)
    width = (hi - lo) / bins if hi > lo else 1.0
    if group:
        g = _q(group)
        gexpr = f"coalesce(CAST({g} AS VARCHAR), '{MISSING}')"
        tops = [r[0] for r in con.execute(f"SELECT {gexpr}, count(*) n FROM images WHERE {where} GROUP BY 1 "
                                          f"ORDER BY n DESC LIMIT {int(top_groups)}", params).fetchall()]
        gsel = f"CASE WHEN {gexpr} IN ({', '.join('?' for _ in tops)}) THEN {gexpr} ELSE 'other' END" if tops else "'all'"
        gparams = list(tops)
    else:
        gsel, gparams = "'all'", []
    sql = (f"SELECT least(floor(({q} - ?) / ?), ?)::INTEGER AS b, {gsel} AS grp, count(*) AS n FROM images "
           f"WHERE {where} AND {q} IS NOT NULL GROUP BY 1, 2 ORDER BY 1")
    df = con.execute(sql, [lo, width, bins - 1] + gparams + params).df()
    df["lo"] = lo + df["b"] * width
    df["hi"] = df["lo"] + width
    return df[["lo", "hi", "grp", "n"]]


def sample_rows(con: Any, cols: Sequence[str], flt: Filters | None = None, *, n: int = 3000, seed: int = 0) -> Any:
    """Up to ``n`` filtered rows (uniform reservoir sample, repeatable) with ``root_id, path``."""
    where, params = (flt or Filters()).where()
    want = list(dict.fromkeys(["root_id", "path", *cols]))
    sel = ", ".join(_q(c) for c in want)
    k = total(con, flt)
    if k <= n:
        return con.execute(f"SELECT {sel} FROM images WHERE {where} ORDER BY root_id, path", params).df()
    return con.execute(f"SELECT * FROM (SELECT {sel} FROM images WHERE {where}) "
                       f"USING SAMPLE reservoir({int(n)} ROWS) REPEATABLE ({int(seed)})", params).df() \
        .sort_values(["root_id", "path"]).reset_index(drop=True)


def correlation(con: Any, cols: Sequence[str], flt: Filters | None = None) -> Any:
    """Pearson correlation matrix of numeric columns (pairwise complete rows), in DuckDB."""
    import pandas as pd

    where, params = (flt or Filters()).where()
    cols = list(cols)
    pairs = [(a, b) for i, a in enumerate(cols) for b in cols[i + 1:]]
    if not pairs:
        return pd.DataFrame(np.eye(len(cols)), index=cols, columns=cols)
    sel = ", ".join(f"corr({_q(a)}, {_q(b)})" for a, b in pairs)
    row = con.execute(f"SELECT {sel} FROM images WHERE {where}", params).fetchone()
    m = np.eye(len(cols))
    for (a, b), v in zip(pairs, row):
        i, j = cols.index(a), cols.index(b)
        m[i, j] = m[j, i] = np.nan if v is None else float(v)
    return pd.DataFrame(m, index=cols, columns=cols)


def thumbnails(con: Any, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
    """PNG thumbnails for (root_id, path) keys."""
    if not keys:
        return {}
    import pyarrow as pa

    t = pa.table({"root_id": [k[0] for k in keys], "path": [k[1] for k in keys]})
    con.register("_keys", t)
    try:
        rows = con.execute("SELECT i.root_id, i.path, i.thumb FROM images i JOIN _keys k "
                           "ON i.root_id = k.root_id AND i.path = k.path").fetchall()
    finally:
        con.unregister("_keys")
    return {(r[0], r[1]): r[2] for r in rows if r[2]}


def failures(con: Any, roots: Sequence[str] | None = None, *, limit: int = 500) -> Any:
    flt = Filters(roots=list(roots or []), status="failed")
    where, params = flt.where()
    return con.execute(f"SELECT path, format, error AS reason FROM images WHERE {where} ORDER BY path "
                       f"LIMIT {int(limit)}", params).df()


def roots(con: Any) -> Any:
    return con.execute("SELECT r.root_id, r.name, r.kind, r.complete, r.last_ingest, count(i.path) AS images, "
                       "count(*) FILTER (WHERE i.status = 'failed') AS failed FROM roots r "
                       "LEFT JOIN images i USING (root_id) GROUP BY ALL ORDER BY r.last_ingest DESC").df()


# ============================================================================ quality report
QUALITY_COLUMNS = ["root_id", "path", "modality", "format", "photometric", "rows", "cols", "spacing_row_mm",
                   "spacing_col_mm", "slice_thickness_mm", "slice_position_mm", "bits_stored", "window_center",
                   "window_width", "rescale_slope", "rescale_intercept", "rescale_type", "series_key",
                   "min_value", "max_value", "std", "p50", "subair_fraction"]
_EXPECT_WINDOW = {"CT", "MR", "PT", "NM", "CR", "DX", "MG", "XA", "RF", "DR"}
_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


def quality_report(con: Any, flt: Filters | None = None) -> Any:
    """Medical-aware findings, one row per (rule, image): ``rule, severity, root_id, path, detail``.

    Rules: missing/implausible VOI window; missing/implausible rescale (modality LUT);
    CT values that cannot be Hounsfield units; constant images; MONOCHROME1 (informative);
    bit depth differing from the rest of its modality; pixel spacing, matrix size or slice
    thickness inconsistent within a series; irregular slice positions within a series;
    missing pixel spacing for cross-sectional modalities. Ordinary MONOCHROME2 greyscale
    images with complete tags produce no finding.
    """
    import pandas as pd

    flt = flt or Filters()
    where, params = Filters(values=flt.values, ranges=flt.ranges, roots=flt.roots, status="ok").where()
    df = con.execute(f"SELECT {', '.join(_q(c) for c in QUALITY_COLUMNS)} FROM images WHERE {where}", params).df()
    return quality_rules(df) if len(df) else pd.DataFrame(columns=["rule", "severity", "root_id", "path", "detail"])


def quality_rules(df: Any) -> Any:
    """The rules of :func:`quality_report` on a DataFrame of catalog rows."""
    import pandas as pd

    out: list[pd.DataFrame] = []

    def add(mask: Any, rule: str, severity: str, detail: Any) -> None:
        mask = pd.Series(mask, index=df.index).fillna(False).astype(bool)
        if not mask.any():
            return
        sub = df.loc[mask, ["root_id", "path"]].copy()
        sub.insert(0, "severity", severity)
        sub.insert(0, "rule", rule)
        sub["detail"] = detail[mask] if isinstance(detail, pd.Series) else detail
        out.append(sub)

    dicom = df["format"].eq("dicom")
    mod = df["modality"].fillna("")
    ct = dicom & mod.eq("CT")
    wc, ww = df["window_center"], df["window_width"]
    add(dicom & mod.isin(list(_EXPECT_WINDOW)) & (wc.isna() | ww.isna()), "window missing", "info",
        "no default window (WindowCenter/Width): viewers fall back to an automatic window")
    bad_w = ww.notna() & ((ww <= 0) | (wc + ww / 2 < df["min_value"]) | (wc - ww / 2 > df["max_value"]))
    add(dicom & bad_w, "window implausible", "warning",
        "window " + wc.round(1).astype(str) + "/" + ww.round(1).astype(str) + " does not overlap the pixel values ["
        + df["min_value"].round(1).astype(str) + ", " + df["max_value"].round(1).astype(str) + "]")
    add(ct & (df["rescale_slope"].isna() | df["rescale_intercept"].isna()), "rescale missing", "error",
        "CT without Rescale Slope/Intercept: the values are stored numbers, not Hounsfield units")
    bad_r = (df["rescale_slope"] <= 0) | (df["rescale_intercept"].abs() > 10000) | \
        (mod.eq("CT") & df["rescale_type"].notna() & ~df["rescale_type"].fillna("HU").isin(["HU", "US"]))
    add(dicom & bad_r, "rescale implausible", "warning",
        "slope " + df["rescale_slope"].astype(str) + ", intercept " + df["rescale_intercept"].astype(str)
        + ", type " + df["rescale_type"].fillna("—").astype(str))
    no_air = df["min_value"] >= -200
    odd_median = (df["p50"] > 2000) | (df["p50"] < -1100)
    subair = df["subair_fraction"].fillna(0) > 0.05  # noise on air and lossy ringing stay well below
    huge = df["max_value"] > 40000
    reason = pd.Series("", index=df.index)
    reason = reason.where(~no_air, reason + "no value below −200 HU (no air at all: rescale not applied?); ")
    reason = reason.where(~odd_median, reason + "median " + df["p50"].round(0).astype(str) + " HU is outside the body's range; ")
    reason = reason.where(~subair, reason + (100 * df["subair_fraction"].fillna(0)).round(1).astype(str)
                          + " % of pixels between −1500 and −1100 HU (colder than air); ")
    reason = reason.where(~huge, reason + "values above 40 000; ")
    add(ct & (no_air | odd_median | subair | huge), "HU range not CT", "error", "values cannot be CT Hounsfield units: " + reason.str.rstrip("; "))
    add(df["max_value"] <= df["min_value"], "constant image", "error",
        "every pixel has the value " + df["min_value"].astype(str))
    add(df["photometric"].eq("MONOCHROME1"), "MONOCHROME1", "info",
        "inverted grey scale (low values white): shown inverted; tools that ignore PhotometricInterpretation see a negative")
    cross = dicom & mod.isin(["CT", "MR", "PT", "NM"])
    add(cross & (df["spacing_row_mm"].isna() | df["spacing_col_mm"].isna()), "pixel spacing missing", "info",
        "no Pixel Spacing: lengths and areas can only be given in pixels")
    # mixed bit depths within a modality (DICOM): flag images not at the modality's usual depth
    bs = df.loc[dicom & df["bits_stored"].notna(), ["modality", "bits_stored"]]
    if len(bs):
        usual = bs.groupby("modality")["bits_stored"].agg(lambda s: s.value_counts().index[0])
        kinds = bs.groupby("modality")["bits_stored"].nunique()
        mixed_mods = kinds[kinds > 1].index
        exp = df["modality"].map(usual)
        add(dicom & df["modality"].isin(mixed_mods) & df["bits_stored"].notna() & (df["bits_stored"] != exp),
            "mixed bit depth", "warning",
            "BitsStored " + df["bits_stored"].astype("Int64").astype(str) + " while most " + df["modality"].astype(str)
            + " images have " + exp.astype("Int64").astype(str))
    # consistency within a series
    ser = df[df["series_key"].notna()]
    if len(ser):
        g = ser.groupby("series_key")
        n = g["path"].transform("size")

        def spread(col: str) -> Any:
            return g[col].transform("max") - g[col].transform("min")

        spr, spc, thick = spread("spacing_row_mm"), spread("spacing_col_mm"), spread("slice_thickness_mm")
        size = (spread("rows").fillna(0) > 0).astype(int) + (spread("cols").fillna(0) > 0).astype(int) + 2
        bad = (n > 1) & ((spr.fillna(0) > 1e-3) | (spc.fillna(0) > 1e-3) | (thick.fillna(0) > 1e-3) | (size > 2))
        detail = ("within its series (" + n.astype(str) + " images) pixel spacing varies by "
                  + spr.fillna(0).round(4).astype(str) + "/" + spc.fillna(0).round(4).astype(str) + " mm, slice thickness by "
                  + thick.fillna(0).round(3).astype(str) + " mm" + np.where(size > 2, ", matrix size differs", ""))
        add(bad.reindex(df.index, fill_value=False), "spacing inconsistent in series", "warning", detail.reindex(df.index))
        gaps = _irregular_series(ser)
        if gaps:
            m = df["series_key"].isin(list(gaps))
            add(m, "slice positions irregular", "warning", df["series_key"].map(gaps))
    if not out:
        return pd.DataFrame(columns=["rule", "severity", "root_id", "path", "detail"])
    rep = pd.concat(out, ignore_index=True)
    rep["_o"] = rep["severity"].map(_SEVERITY_ORDER)
    return rep.sort_values(["_o", "rule", "path"]).drop(columns="_o").reset_index(drop=True)


def _irregular_series(ser: Any) -> dict[str, str]:
    """Series whose sorted slice positions have gaps differing > 10 % (and > 0.1 mm) from the
    series' median gap, or repeated positions (vectorised over all series)."""
    pos = ser.loc[ser["slice_position_mm"].notna(), ["series_key", "slice_position_mm"]]
    if pos.empty:
        return {}
    pos = pos.sort_values(["series_key", "slice_position_mm"])
    n = pos.groupby("series_key")["slice_position_mm"].transform("size")
    pos = pos[n >= 3].copy()
    if pos.empty:
        return {}
    pos["gap"] = pos.groupby("series_key")["slice_position_mm"].diff()
    gaps = pos.dropna(subset=["gap"])
    med = gaps.groupby("series_key")["gap"].transform("median")
    dev = (gaps["gap"] - med).abs()
    bad = (med <= 0) | (dev > np.maximum(0.1 * med, 0.1))
    out: dict[str, str] = {}
    if not bad.any():
        return out
    worst = gaps.assign(dev=dev, med=med)[bad.to_numpy()].sort_values("dev", ascending=False).drop_duplicates("series_key")
    for r in worst.itertuples():
        if r.med <= 0 or r.gap <= 0:
            out[r.series_key] = "several images at the same slice position"
        else:
            out[r.series_key] = (f"slice gap {r.gap:.2f} mm where the series' usual gap is {r.med:.2f} mm "
                                 "(missing or duplicated slice?)")
    return out


# ============================================================================ mining
FEATURE_COLUMNS = ["mean", "std", "p01", "p05", "p25", "p50", "p75", "p95", "p99", "entropy", "sharpness",
                   "noise_sigma", "snr", "background_fraction", "rows", "cols", "spacing_row_mm"]
TAG_COLUMNS = ["manufacturer", "model", "kvp", "convolution_kernel", "modality", "body_part", "label",
               "spacing_row_mm", "slice_thickness_mm", "rows", "bits_stored", "photometric", "series_description"]


def feature_matrix(df: Any, cols: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Standardised (z-score) matrix of the usable numeric ``cols`` (missing → column median;
    constant columns dropped). Heavy-tailed statistics are used as given (robust scaling
    would hide the very outliers we look for)."""
    use = []
    for c in cols:
        if c not in df.columns:
            continue
        v = df[c].astype("float64")
        if v.notna().sum() >= 2 and float(v.std(skipna=True) or 0) > 0:
            use.append(c)
    if not use:
        return np.zeros((len(df), 0)), []
    X = df[use].astype("float64").to_numpy()
    med = np.nanmedian(X, axis=0)
    X = np.where(np.isnan(X), med, X)
    sd = X.std(axis=0)
    sd[sd == 0] = 1.0
    return (X - X.mean(axis=0)) / sd, use


def embed(X: np.ndarray, method: str = "pca", *, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D embedding of standardised features: ``pca`` or ``tsne`` (t-SNE, PCA-initialised)."""
    n = X.shape[0]
    if n == 0 or X.shape[1] == 0:
        return np.zeros((n, 2))
    if method == "pca":
        from sklearn.decomposition import PCA

        k = min(2, X.shape[1], n)
        Y = PCA(n_components=k, random_state=seed).fit_transform(X)
        return np.pad(Y, ((0, 0), (0, 2 - k)))
    if method == "tsne":
        from sklearn.manifold import TSNE

        if n < 5:
            return embed(X, "pca", seed=seed)
        p = float(min(perplexity, max(2.0, (n - 1) / 3.0)))
        return TSNE(n_components=2, perplexity=p, init="pca", random_state=seed, max_iter=500).fit_transform(X)
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


def cluster(X: np.ndarray, method: str = "kmeans", *, k: int = 4, eps: float = 1.5, min_samples: int = 5,
            seed: int = 0) -> np.ndarray:
    """Cluster labels (DBSCAN noise is −1)."""
    n = X.shape[0]
    if n == 0:
        return np.zeros(0, dtype=int)
    if method == "kmeans":
        from sklearn.cluster import KMeans

        k = max(1, min(int(k), n))
        return KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(X)
    if method == "dbscan":
        from sklearn.cluster import DBSCAN

        return DBSCAN(eps=float(eps), min_samples=int(min_samples)).fit_predict(X)
    raise ValueError(f"method must be 'kmeans' or 'dbscan', got {method!r}")


def _as_category(s: Any, max_values: int = 20) -> Any:
    """A tag as categories: numeric tags with many values are cut into quintiles; rare values
    beyond the ``max_values`` most frequent are pooled as ``other`` (keeps adjusted MI cheap)."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(s) and s.nunique(dropna=True) > 12:
        try:
            return pd.qcut(s, 5, duplicates="drop").astype(str).fillna(MISSING)
        except ValueError:
            pass
    out = s.astype(object).where(s.notna(), MISSING).astype(str)
    top = out.value_counts().index[:max_values]
    return out.where(out.isin(top), "other")


def explain_clusters(labels: np.ndarray, df: Any, tags: Sequence[str] | None = None) -> Any:
    """Which tags explain the clusters: mutual information (bits), normalised and adjusted MI
    between cluster labels and each tag — a scanner / site effect detector (a high adjusted MI
    for Manufacturer, KVP or model means the image statistics separate by acquisition)."""
    import pandas as pd
    from sklearn.metrics import adjusted_mutual_info_score, mutual_info_score, normalized_mutual_info_score

    rows = []
    for t in (tags or TAG_COLUMNS):
        if t not in df.columns:
            continue
        cat_ = _as_category(df[t])
        nv = cat_.nunique()
        if nv < 2:
            continue
        rows.append({"tag": t, "values": int(nv),
                     "mutual_information_bits": mutual_info_score(labels, cat_) / math.log(2),
                     "normalized_mi": normalized_mutual_info_score(labels, cat_),
                     "adjusted_mi": adjusted_mutual_info_score(labels, cat_)})
    out = pd.DataFrame(rows, columns=["tag", "values", "mutual_information_bits", "normalized_mi", "adjusted_mi"])
    return out.sort_values("adjusted_mi", ascending=False).reset_index(drop=True)


def outliers(X: np.ndarray, names: Sequence[str], method: str = "iforest", *, seed: int = 0,
             n_neighbors: int = 20, top_features: int = 3) -> Any:
    """Outlier score per row (higher = more unusual) and the features that drive it.

    ``iforest``: IsolationForest (score = −score_samples); ``lof``: LocalOutlierFactor
    (score = negative outlier factor, negated). ``drivers``: the ``top_features`` features
    with the largest |z| of that row, e.g. ``noise_sigma z=+4.1``.
    """
    import pandas as pd

    n = X.shape[0]
    if n == 0 or X.shape[1] == 0:
        return pd.DataFrame({"score": np.zeros(n), "drivers": [""] * n})
    if method == "iforest":
        from sklearn.ensemble import IsolationForest

        score = -IsolationForest(n_estimators=200, random_state=seed).fit(X).score_samples(X)
    elif method == "lof":
        from sklearn.neighbors import LocalOutlierFactor

        lof = LocalOutlierFactor(n_neighbors=max(2, min(n_neighbors, n - 1)))
        lof.fit(X)
        score = -lof.negative_outlier_factor_
    else:
        raise ValueError(f"method must be 'iforest' or 'lof', got {method!r}")
    order = np.argsort(-np.abs(X), axis=1)[:, :top_features]
    drivers = [", ".join(f"{names[j]} z={X[i, j]:+.1f}" for j in order[i]) for i in range(n)]
    return pd.DataFrame({"score": score, "drivers": drivers, "max_abs_z": np.abs(X).max(axis=1)})


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x = np.bitwise_xor(a.astype(np.uint64), b.astype(np.uint64))
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def duplicate_groups(df: Any, *, max_distance: int = 4, max_bucket: int = 2000) -> Any:
    """Exact duplicates (same content hash) and near duplicates (pHash and dHash both within
    ``max_distance`` bits). Near pairs are found by banding: the 64 pHash bits are cut into
    ``max_distance + 1`` bands, and two hashes within ``max_distance`` bits agree exactly on at
    least one band (pigeonhole) — so only rows sharing a band value are compared, not all pairs.
    Band buckets larger than ``max_bucket`` (thousands of near-identical images) are skipped.

    Returns ``group, kind, root_id, path, distance`` (pHash distance to the group's first member).
    """
    import pandas as pd

    rows: list[dict[str, Any]] = []
    gid = 0
    exact_of: dict[Any, int] = {}
    if "content_hash" in df.columns:
        ch = df[df["content_hash"].notna()]
        dup = ch[ch.duplicated("content_hash", keep=False)]
        for _, grp in dup.groupby("content_hash", sort=False):
            gid += 1
            for idx, r in grp.iterrows():
                exact_of[idx] = gid
                rows.append({"group": gid, "kind": "exact", "root_id": r["root_id"], "path": r["path"], "distance": 0})
    ph = df[df["phash"].notna() & df["dhash"].notna()]
    if len(ph) >= 2:
        idx = ph.index.to_numpy()
        p = ph["phash"].astype("uint64").to_numpy()
        d = ph["dhash"].astype("uint64").to_numpy()
        parent = np.arange(len(idx))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        nb = max_distance + 1
        edges = np.linspace(0, 64, nb + 1).astype(int)
        pairs_i: list[np.ndarray] = []
        pairs_j: list[np.ndarray] = []
        for b in range(nb):
            width = int(edges[b + 1] - edges[b])
            keys = (p >> np.uint64(edges[b])) & np.uint64((1 << width) - 1)
            order = np.argsort(keys, kind="stable")
            ks = keys[order]
            group = np.cumsum(np.r_[True, ks[1:] != ks[:-1]])
            sizes = np.bincount(group)
            big = sizes[group] > max_bucket  # skip huge buckets (documented limit)
            for k in range(1, int(min(sizes.max(), max_bucket))):
                same = (group[:-k] == group[k:]) & ~big[:-k]
                if not same.any():
                    break
                i, j = order[:-k][same], order[k:][same]
                close = (hamming(p[i], p[j]) <= max_distance) & (hamming(d[i], d[j]) <= max_distance)
                pairs_i.append(i[close])
                pairs_j.append(j[close])
        for i, j in zip(np.concatenate(pairs_i or [np.zeros(0, int)]), np.concatenate(pairs_j or [np.zeros(0, int)])):
            ri, rj = find(int(i)), find(int(j))
            if ri != rj:
                parent[rj] = ri
        linked = np.flatnonzero(parent != np.arange(len(idx)))  # only rows that joined another
        comps: dict[int, list[int]] = {}
        for i in linked:
            comps.setdefault(find(int(i)), []).append(int(i))
        for root_, members in comps.items():
            members = sorted([root_, *members])
            labels = {exact_of.get(idx[m]) for m in members}
            if len(labels) == 1 and None not in labels:
                continue  # all members already form one exact group
            gid += 1
            first = members[0]
            dist = hamming(np.full(len(members), p[first]), p[members])
            for m, dd in zip(members, dist):
                r = ph.loc[idx[m]]
                rows.append({"group": gid, "kind": "near", "root_id": r["root_id"], "path": r["path"],
                             "distance": int(dd)})
    return pd.DataFrame(rows, columns=["group", "kind", "root_id", "path", "distance"])
