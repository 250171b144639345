"""Loading DICOM, PNG, JPEG, TIFF, NIfTI and ZIP archives into :class:`analysis.image.Image`.

Public API
----------
``load_bytes(data, name)``   any supported content; a ZIP gives many images, a DICOM series
                             (several files sharing a SeriesInstanceUID) gives one volume.
``load_path(path)``          a file or a folder (recursive); series grouped.
``load_many(sources)``       paths / ``(name, bytes)`` / uploaded-file objects; never raises
                             for a bad file: returns ``(images, errors)``.
``load_image(src)``          exactly one image (the first), for batch code.
``read_metadata(src)``       header only, allow-listed keys only.
``sniff_format(data, name)`` by magic bytes, never by extension.

Every failure is a :class:`LoadError` with a plain-language reason; no other exception
type leaves these functions. Limits (:class:`analysis.limits.Limits`) are checked from
headers *before* anything is decoded or inflated.

Pixel conventions (see :mod:`analysis.image`)
----------------------------------------------
* DICOM greyscale: modality LUT (Rescale Slope/Intercept, Modality LUT Sequence, per-frame
  functional groups; RT Dose Grid Scaling) → ``float32`` in physical units; MONOCHROME1 sets
  ``invert=True`` without touching pixels; VOI window / VOI LUT kept for display.
  Colour (RGB, YBR_* converted to RGB by pydicom, PALETTE COLOR via its LUT) → uint8/uint16.
* PNG/JPEG/TIFF: values as stored (uint8/uint16/int/float32), colour → RGB, alpha dropped.
* NIfTI: ``scl_slope``/``scl_inter`` applied → ``float32``. Volumes are laid out
  ``(slices, rows, cols)`` along the last voxel axis. When the header carries an
  orientation (qform/sform code > 0) the volume is first reoriented to the closest RAS
  axes (flips/permutations only, no resampling) and shown like a radiological axial
  view: slices inferior→superior, rows anterior→posterior, columns patient right→left
  (as DICOM axial images are). Without orientation, plane ``k`` is ``data[:, :, k]``.
* Non-finite float pixels (NaN/±inf) are **replaced by the lowest finite value** of the
  image and counted in ``metadata["notes"]``; an image with no finite value is refused.
* A DICOM window width ≤ 0 (or non-finite) is ignored (``window=None``) with a note.

Privacy: metadata passes :func:`analysis.privacy.safe_metadata` / ``restrict``; error
reasons never quote file contents (decoder messages only); pydicom's *read* validation is
set to IGNORE process-wide on first use, because its warnings quote element values.
"""

from __future__ import annotations

import hashlib
import io as _io
import logging
import math
import os
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, Union

import numpy as np

from analysis import privacy
from analysis.image import Image, content_digest
from analysis.limits import Limits, format_bytes

__all__ = [
    "LoadError",
    "Limits",
    "load_bytes",
    "load_path",
    "load_many",
    "load_image",
    "read_metadata",
    "sniff_format",
    "FORMATS",
]

log = logging.getLogger(__name__)

#: Values :func:`sniff_format` can return.
FORMATS = ("dicom", "png", "jpeg", "tiff", "nifti", "zip", "unknown")

HEAD_BYTES = 64 * 1024
_CHUNK = 1 << 20


# ====================================================================== errors
class LoadError(Exception):
    """The one error type raised by every loader: ``str(e) == f"{filename}: {reason}"``.

    ``filename`` is the name as given (``archive.zip/inner/x.dcm`` for ZIP entries);
    ``reason`` is short, plain language, and never contains patient data or a traceback.
    Picklable, so it can cross process boundaries.
    """

    def __init__(self, filename: str, reason: str):
        self.filename = str(filename)
        self.reason = str(reason)
        super().__init__(f"{self.filename}: {self.reason}")

    def __reduce__(self):
        return (type(self), (self.filename, self.reason))


class _Reject(Exception):
    """Internal: a reason without a file name; turned into LoadError at the boundary."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


#: Exceptions that must never be turned into a LoadError. Everything else, including
#: BaseException subclasses raised by native decoders (e.g. a Rust panic in a codec
#: surfaces as ``pyo3_runtime.PanicException``), becomes a LoadError at the boundary.
_FATAL = (KeyboardInterrupt, SystemExit, GeneratorExit)


def _short(exc: BaseException, limit: int = 160) -> str:
    """First meaningful line of a decoder message, single-line and capped."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    if len(lines) > 1 and text.rstrip().endswith(":"):
        text = lines[1]  # pydicom: "Unable to decode ... plugins:\n  pylibjpeg: <reason>"
    return privacy.clean_text(text, max_len=limit)


def _reason(exc: BaseException) -> str:
    """Plain-language reason for an unexpected exception (no message text: may hold data)."""
    from PIL import Image as PILImage

    if isinstance(exc, _Reject):
        return exc.reason
    if isinstance(exc, MemoryError):
        return "not enough memory to load this image"
    if isinstance(exc, RecursionError):
        return "data nested too deeply (e.g. DICOM sequences) to read safely"
    if isinstance(exc, PILImage.DecompressionBombError):
        return "image too large (decompression bomb protection)"
    if isinstance(exc, zlib.error):
        return "damaged compressed data"
    if isinstance(exc, (EOFError, struct.error)):
        return "file is truncated or damaged"
    if isinstance(exc, zipfile.BadZipFile):
        return "damaged ZIP data"
    if isinstance(exc, OSError):
        return "file could not be read"
    return f"could not read this file ({type(exc).__name__})"


def _mpx(n: int) -> str:
    """A pixel-count limit in words: ``50 Mpx``, ``89.5 Mpx``, ``1000 px``."""
    if n < 1_000_000:
        return f"{n} px"
    return f"{n // 1_000_000} Mpx" if n % 1_000_000 == 0 else f"{n / 1e6:.1f} Mpx"


def _pixel_limit(limits: Limits, pil: bool = False) -> int:
    limit = limits.max_pixels_per_frame
    if pil:  # never let Pillow warn: its own bomb threshold is a limit too
        from PIL import Image as PILImage

        if PILImage.MAX_IMAGE_PIXELS:
            limit = min(limit, int(PILImage.MAX_IMAGE_PIXELS))
    return limit


def _check_plane(rows: int, cols: int, limits: Limits, *, pil: bool = False) -> None:
    if rows <= 0 or cols <= 0:
        raise _Reject(f"image has no pixels ({cols}×{rows} px)")
    limit = _pixel_limit(limits, pil)
    if rows * cols > limit:
        raise _Reject(f"image too large: {cols}×{rows} px exceeds the {_mpx(limit)} limit")


def _check_total(nbytes: int, what: str, limits: Limits) -> None:
    if nbytes > limits.max_decoded_bytes:
        raise _Reject(f"image too large: {what} would need {format_bytes(nbytes)} once decoded "
                      f"(limit {format_bytes(limits.max_decoded_bytes)})")


def _check_frames(n: int, limits: Limits) -> None:
    if n > limits.max_frames:
        raise _Reject(f"too many frames: {n} (limit {limits.max_frames})")


def _finite(arr: np.ndarray, notes: list[str]) -> np.ndarray:
    """Replace NaN/±inf by the lowest finite value (documented policy), in place."""
    if arr.dtype.kind != "f":
        return arr
    bad = ~np.isfinite(arr)
    nbad = int(np.count_nonzero(bad))
    if nbad == 0:
        return arr
    if nbad == arr.size:
        raise _Reject("no finite pixel values (all NaN or infinite)")
    fill = float(np.min(arr, where=~bad, initial=np.inf))
    if not arr.flags.writeable:
        arr = arr.copy()
    arr[bad] = fill
    notes.append(f"{nbad} non-finite pixel values (NaN/±inf) replaced by the lowest finite value {fill:g}")
    return arr


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ====================================================================== sniffing
_DICOM_VRS = {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB",
    b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
    b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
}
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
_FIRST_GROUPS = {0x0002, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028}


def _walk_dicom_elements(head: bytes, endian: str, explicit: bool, max_n: int = 4) -> list[int] | None:
    """Tags of the first elements if ``head`` parses as a plain DICOM element stream."""
    pos, tags = 0, []
    while len(tags) < max_n and pos + 8 <= len(head):
        group, elem = struct.unpack(endian + "HH", head[pos:pos + 4])
        tag = (group << 16) | elem
        if tags and tag <= tags[-1]:
            return None
        if explicit:
            vr = head[pos + 4:pos + 6]
            if vr not in _DICOM_VRS:
                return None
            if vr in _LONG_VRS:
                if pos + 12 > len(head):
                    break
                length = struct.unpack(endian + "I", head[pos + 8:pos + 12])[0]
                pos += 12
            else:
                length = struct.unpack(endian + "H", head[pos + 6:pos + 8])[0]
                pos += 8
        else:
            length = struct.unpack(endian + "I", head[pos + 4:pos + 8])[0]
            pos += 8
        tags.append(tag)
        if length == 0xFFFFFFFF:
            break  # sequence / encapsulated data of undefined length: good enough
        pos += length
    return tags or None


def _looks_like_raw_dicom(head: bytes) -> bool:
    """DICOM without the 128-byte preamble: a plausible, ordered element stream."""
    if len(head) < 8:
        return False
    for endian in "<>":
        group = struct.unpack(endian + "H", head[:2])[0]
        if group not in _FIRST_GROUPS:
            continue
        for explicit in (True, False):
            if not explicit and endian == ">":
                continue  # implicit VR is always little endian
            tags = _walk_dicom_elements(head, endian, explicit)
            if tags and (len(tags) >= 2 or len(head) < 64):
                return True
    return False


def _is_nifti(head: bytes) -> bool:
    if len(head) < 348:
        return False
    for endian in "<>":
        n = struct.unpack(endian + "i", head[:4])[0]
        if n == 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
            return True
        if n == 540 and head[4:8] in (b"n+2\x00", b"ni2\x00"):
            return True
    return False


def _gunzip_head(data: bytes, n: int = HEAD_BYTES) -> bytes:
    try:
        return zlib.decompressobj(31).decompress(bytes(data[:HEAD_BYTES]), n)
    except zlib.error:
        return b""


def sniff_format(data: bytes, name: str = "") -> str:
    """``'dicom' | 'png' | 'jpeg' | 'tiff' | 'nifti' | 'zip' | 'unknown'`` by content.

    The name is ignored on purpose (a PNG called ``x.dcm`` is a PNG). DICOM is recognised
    by ``DICM`` at byte 128 (or 0), or without preamble by a plausible implicit/explicit
    VR element stream. gzip content reports the format inside it (NIfTI or DICOM).
    """
    return _sniff(bytes(data[:HEAD_BYTES]), allow_gzip=True)


def _sniff(head: bytes, allow_gzip: bool) -> str:
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"DICM"):
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if _is_nifti(head):
        return "nifti"
    if head[:2] == b"\x1f\x8b":
        if not allow_gzip:
            return "unknown"
        inner = _sniff(_gunzip_head(head), allow_gzip=False)
        return inner if inner in ("nifti", "dicom") else "unknown"
    if _looks_like_raw_dicom(head):
        return "dicom"
    return "unknown"


def _describe_unknown(data: bytes) -> str:
    head = bytes(data[:4096])
    if head.startswith(b"%PDF"):
        return "looks like a PDF document"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "looks like a GIF image; GIF is not supported"
    if head.startswith(b"BM") and len(head) > 26:
        return "looks like a BMP image; BMP is not supported"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "looks like a WebP image; WebP is not supported"
    if head.startswith((b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51")):
        return "looks like a JPEG 2000 file; JPEG 2000 is supported only inside DICOM"
    if head[:2] == b"\x1f\x8b":
        return "gzip-compressed data that is neither NIfTI nor DICOM"
    if head[:4] in (b"Rar!", b"7z\xbc\xaf") or head[257:262] == b"ustar":
        return "looks like an archive; only ZIP archives are supported"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        text = head[: e.start].decode("utf-8", "ignore") if e.start > len(head) - 4 else ""
    if text and sum(ch.isprintable() or ch in "\r\n\t" for ch in text) >= 0.95 * len(text):
        low = text.lstrip().lower()
        if low.startswith(("<!doctype html", "<html")) or "<html" in low[:512]:
            return "looks like HTML"
        return "looks like text"
    return "unrecognised binary data"


# ====================================================================== gzip
def _gunzip(data: bytes, limit: int) -> bytes:
    """Inflate gzip data (all members), never producing more than ``limit`` bytes."""
    chunks: list[bytes] = []
    total = 0
    buf = bytes(data)
    d = zlib.decompressobj(31)
    try:
        while True:
            out = d.decompress(buf, _CHUNK)
            total += len(out)
            if total > limit:
                raise _Reject(f"compressed file would inflate beyond {format_bytes(limit)} (limit)")
            chunks.append(out)
            buf = d.unconsumed_tail
            if d.eof:
                rest = d.unused_data
                if rest[:2] == b"\x1f\x8b":
                    d, buf = zlib.decompressobj(31), rest
                    continue
                break
            if not out and not buf:
                raise _Reject("truncated gzip data")
    except zlib.error:
        raise _Reject("damaged gzip data") from None
    return b"".join(chunks)


# ====================================================================== entries (files, ZIP members)
@dataclass
class _Entry:
    """One file to load: a name and a bounded reader (``reader(n)`` → at most ``n`` bytes)."""

    name: str
    reader: Callable[[int], bytes]
    size: int | None = None
    depth: int = 0  # ZIP nesting level of the container holding it (0 = not in a ZIP)

    def head(self) -> bytes:
        return self.reader(HEAD_BYTES)

    def read(self, limits: Limits) -> bytes:
        if self.size is not None and self.size > limits.max_file_bytes:
            raise _Reject(f"file too large: {format_bytes(self.size)} (limit {format_bytes(limits.max_file_bytes)})")
        data = self.reader(limits.max_file_bytes + 1)
        if len(data) > limits.max_file_bytes:
            raise _Reject(f"file too large: more than {format_bytes(limits.max_file_bytes)}")
        return data


def _bytes_entry(name: str, data: bytes | bytearray | memoryview) -> _Entry:
    if not isinstance(data, bytes):
        data = bytes(data)

    def reader(n: int, _d: bytes = data) -> bytes:
        return _d if n >= len(_d) else _d[:n]

    return _Entry(str(name), reader, len(data))


def _read_file(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


_JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini", "dicomdir"}


def _is_junk(relpath: str) -> bool:
    parts = [p for p in relpath.replace("\\", "/").split("/") if p]
    if not parts:
        return True
    base = parts[-1]
    return (base.lower() in _JUNK_NAMES or base.startswith("._") or "__MACOSX" in parts
            or any(p.startswith(".") and p not in (".", "..") for p in parts))


def _path_entries(path: Path) -> Iterator[_Entry | LoadError]:
    label = path.name or str(path)
    try:
        if path.is_dir():
            base = path
            for root, dirs, files in os.walk(base, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for fn in sorted(files):
                    p = Path(root) / fn
                    rel = p.relative_to(base).as_posix()
                    if _is_junk(rel):
                        continue
                    try:
                        size = p.stat().st_size
                    except OSError:
                        yield LoadError(f"{label}/{rel}", "file could not be read")
                        continue
                    yield _Entry(f"{label}/{rel}", partial(_read_file, p), size)
        elif path.is_file():
            yield _Entry(label, partial(_read_file, path), path.stat().st_size)
        elif path.exists():
            yield LoadError(label, "not a regular file or folder")
        else:
            yield LoadError(label, "file not found")
    except OSError:
        yield LoadError(label, "file could not be read")


# ---------------------------------------------------------------------- ZIP
def _eocd_entry_count(data: bytes) -> int | None:
    """Entry count from the End Of Central Directory record (ZIP64 aware), without zipfile."""
    start = max(0, len(data) - (0xFFFF + 22))
    pos = data.rfind(b"PK\x05\x06", start)
    if pos < 0 or pos + 22 > len(data):
        return None
    total = struct.unpack("<H", data[pos + 10:pos + 12])[0]
    if total == 0xFFFF:
        loc = pos - 20
        if loc >= 0 and data[loc:loc + 4] == b"PK\x06\x07":
            off = struct.unpack("<Q", data[loc + 8:loc + 16])[0]
            if off + 40 <= len(data) and data[off:off + 4] == b"PK\x06\x06":
                total = struct.unpack("<Q", data[off + 32:off + 40])[0]
    return total


def _unsafe_zip_name(name: str) -> bool:
    norm = name.replace("\\", "/")
    if not norm or "\x00" in norm or norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        return True
    return any(part == ".." for part in norm.split("/"))


def _zip_read(zf: zipfile.ZipFile, info: zipfile.ZipInfo, n: int) -> bytes:
    """Read at most ``n`` bytes of an entry, in chunks (zipfile itself never yields more
    than the declared size and verifies the CRC when the end is reached)."""
    chunks, total = [], 0
    try:
        with zf.open(info) as f:
            while total < n:
                c = f.read(min(_CHUNK, n - total))
                if not c:
                    break
                chunks.append(c)
                total += len(c)
    except zipfile.BadZipFile:
        raise _Reject("damaged ZIP entry (CRC check failed or data truncated)") from None
    except NotImplementedError:
        raise _Reject(f"unsupported ZIP compression method {info.compress_type}") from None
    except RuntimeError:
        raise _Reject("encrypted ZIP entry (password-protected): not supported") from None
    except (zlib.error, EOFError, OSError):
        raise _Reject("damaged ZIP entry (corrupt compressed data)") from None
    return b"".join(chunks)


def _zip_entries(data: bytes, name: str, limits: Limits, depth: int) -> list[_Entry | LoadError]:
    """Entries of a ZIP after the central-directory checks (count, total size, ratio)."""
    declared = _eocd_entry_count(data)
    if declared is not None and declared > limits.zip_max_entries:
        raise _Reject(f"ZIP has {declared} entries (limit {limits.zip_max_entries})")
    try:
        zf = zipfile.ZipFile(_io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, struct.error):
        raise _Reject("damaged ZIP archive (central directory unreadable)") from None
    if len(infos) > limits.zip_max_entries:
        raise _Reject(f"ZIP has {len(infos)} entries (limit {limits.zip_max_entries})")
    total = sum(i.file_size for i in infos)
    packed = sum(i.compress_size for i in infos)
    if total > limits.zip_max_total_bytes:
        raise _Reject(f"ZIP bomb: entries would inflate to {format_bytes(total)} "
                      f"(limit {format_bytes(limits.zip_max_total_bytes)})")
    worst = max(infos, key=lambda i: i.file_size / max(i.compress_size, 1), default=None)
    for big, small in ([(worst.file_size, worst.compress_size)] if worst else []) + [(total, packed)]:
        if big >= limits.zip_ratio_min_bytes and big > limits.zip_max_ratio * max(small, 1):
            raise _Reject(f"ZIP bomb: entries would inflate to {format_bytes(total)} from "
                          f"{format_bytes(len(data))} (ratio {big / max(small, 1):.0f}×, "
                          f"limit {limits.zip_max_ratio}×)")
    out: list[_Entry | LoadError] = []
    for info in infos:
        ename = f"{name}/{info.filename}"
        if info.is_dir():
            continue
        if _unsafe_zip_name(info.filename):
            out.append(LoadError(ename, f"unsafe path in ZIP: {info.filename}"))
            continue
        if _is_junk(info.filename):
            continue
        if ((info.external_attr >> 16) & 0o170000) == 0o120000:
            out.append(LoadError(ename, "symbolic link in ZIP: not followed"))
            continue
        if info.flag_bits & 0x1:
            out.append(LoadError(ename, "encrypted ZIP entry (password-protected): not supported"))
            continue
        if info.file_size > limits.max_file_bytes:
            out.append(LoadError(ename, f"file too large: {format_bytes(info.file_size)} "
                                        f"(limit {format_bytes(limits.max_file_bytes)})"))
            continue
        out.append(_Entry(ename, partial(_zip_read, zf, info), info.file_size, depth))
    return out


# ====================================================================== DICOM
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _quiet_pydicom() -> None:
    """pydicom's read validation warns and logs *values* of malformed elements (a bad
    PatientBirthDate would be echoed into the server log). MedLens validates what it uses
    itself, so read validation is switched off process-wide (writing is unaffected)."""
    import pydicom.config

    if pydicom.config.settings.reading_validation_mode != pydicom.config.IGNORE:
        pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


def _read_dicom(data: bytes, *, header_only: bool):
    import pydicom

    _quiet_pydicom()

    if data[:4] == b"DICM":
        data = bytes(128) + data
    try:
        ds = pydicom.dcmread(_io.BytesIO(data), force=True, stop_before_pixels=header_only)
    except RecursionError:
        raise _Reject("DICOM sequences nested too deeply to read safely") from None
    except (EOFError, struct.error):
        raise _Reject("truncated DICOM header") from None
    except MemoryError:
        raise
    except Exception as e:
        raise _Reject(f"damaged DICOM header ({type(e).__name__})") from None
    if len(ds) == 0:
        if data[128:132] == b"DICM":
            raise _Reject("truncated DICOM file: no data elements after the file meta header")
        raise _Reject("not a DICOM image: no data elements could be read")
    _check_truncated_elements(ds)
    return ds


def _check_truncated_elements(ds) -> None:
    """pydicom silently keeps a value cut short by the end of the file: refuse that
    (except for pixel data, which gets its own precise message later)."""
    for raw in ds.elements():
        length, value = getattr(raw, "length", None), getattr(raw, "value", None)
        if (isinstance(value, (bytes, bytearray)) and isinstance(length, int) and length != 0xFFFFFFFF
                and len(value) < length and int(raw.tag) not in (0x7FE00010, 0x7FE00008, 0x7FE00009)):
            raise _Reject(f"truncated DICOM header: the file ends inside element "
                          f"({int(raw.tag) >> 16:04X},{int(raw.tag) & 0xFFFF:04X})")


def _get(ds, keyword: str, default: Any = None) -> Any:
    """Top-level value, or ``default`` when absent or unreadable (forced reads)."""
    try:
        v = ds.get(keyword, default)
    except Exception:
        return default
    return default if v is None or (isinstance(v, str) and not v.strip()) else v


def _as_int(v: Any) -> int | None:
    try:
        if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
            v = v[0]
        f = float(str(v).strip()) if isinstance(v, (str, bytes)) else float(v)
        return int(f) if math.isfinite(f) and f == int(f) else None
    except Exception:
        return None


def _as_float(v: Any) -> float | None:
    try:
        if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
            if len(v) == 0:
                return None
            v = v[0]
        return float(v)
    except Exception:
        return None


def _floats(v: Any, n: int) -> tuple[float, ...] | None:
    try:
        vals = tuple(float(x) for x in v)
    except Exception:
        return None
    return vals if len(vals) == n and all(math.isfinite(x) for x in vals) else None


def _spacing_of(v: Any) -> tuple[float, float] | None:
    sp = _floats(v, 2) if v is not None else None
    return (sp[0], sp[1]) if sp and sp[0] > 0 and sp[1] > 0 else None


def _dicom_kind(ds) -> str:
    sop = _get(ds, "SOPClassUID")
    if sop is None and getattr(ds, "file_meta", None) is not None:
        sop = _get(ds.file_meta, "MediaStorageSOPClassUID")
    name = privacy.uid_name(sop) if sop else "private"
    if name != "private":
        return re.sub(r"\s+Storage$", "", name)
    mod = _get(ds, "Modality")
    return f"modality {privacy.clean_text(mod, max_len=16)}" if mod else "no pixel data"


def _fg_item(ds, frame: int, seq_keyword: str):
    """First item of a functional-group macro for ``frame`` (per-frame, else shared)."""
    for groups_kw, idx in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        groups = _get(ds, groups_kw)
        try:
            if groups and len(groups) > idx:
                seq = groups[idx].get(seq_keyword)
                if seq:
                    return seq[0]
        except Exception:
            continue
    return None


def _ensure_transfer_syntax(ds, pix_kw: str, notes: list[str]) -> None:
    from pydicom import uid as U
    from pydicom.dataset import FileMetaDataset

    fm = getattr(ds, "file_meta", None)
    if fm is None:
        ds.file_meta = fm = FileMetaDataset()
    if str(_get(fm, "TransferSyntaxUID", "")).strip():
        return
    if pix_kw == "PixelData" and ds["PixelData"].is_undefined_length:
        raise _Reject("compressed pixel data but no transfer syntax in the file: cannot tell the codec")
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit or implicit is None:
        ts = U.ImplicitVRLittleEndian
    else:
        ts = U.ExplicitVRLittleEndian if little in (True, None) else U.ExplicitVRBigEndian
    fm.TransferSyntaxUID = ts
    notes.append(f"no transfer syntax in the file; read as {ts.name}")


@dataclass
class _Geom:
    rows: int
    cols: int
    frames: int
    spp: int
    bits: int
    photometric: str
    encapsulated: bool


def _dicom_geometry(ds, pix_kw: str, limits: Limits, notes: list[str]) -> _Geom:
    rows, cols = _as_int(_get(ds, "Rows")), _as_int(_get(ds, "Columns"))
    if rows is None or cols is None:
        raise _Reject("missing Rows/Columns in the DICOM header")
    if rows <= 0 or cols <= 0:
        raise _Reject(f"image has no pixels (Rows={rows}, Columns={cols})")
    default_bits = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}.get(pix_kw)
    bits = _as_int(_get(ds, "BitsAllocated")) or default_bits
    if bits is None:
        raise _Reject("missing BitsAllocated in the DICOM header")
    if bits not in (1, 8, 16, 32, 64):
        raise _Reject(f"BitsAllocated {bits} is not supported")
    if default_bits is None and "BitsAllocated" not in ds:
        ds.BitsAllocated = bits
    spp = _as_int(_get(ds, "SamplesPerPixel"))
    if spp is None:
        spp = 1
        ds.SamplesPerPixel = 1
        notes.append("SamplesPerPixel missing; assumed 1")
    if spp not in (1, 3):
        raise _Reject(f"SamplesPerPixel {spp} is not supported")
    photometric = str(_get(ds, "PhotometricInterpretation", "")).strip().upper()
    if not photometric:
        photometric = "MONOCHROME2" if spp == 1 else "RGB"
        ds.PhotometricInterpretation = photometric
        notes.append(f"PhotometricInterpretation missing; assumed {photometric}")
    if pix_kw == "PixelData":
        if _as_int(_get(ds, "PixelRepresentation")) is None:
            ds.PixelRepresentation = 0
            notes.append("PixelRepresentation missing; assumed unsigned")
        if _as_int(_get(ds, "BitsStored")) is None:
            ds.BitsStored = bits
    _check_plane(rows, cols, limits)

    encapsulated = pix_kw == "PixelData" and bool(ds["PixelData"].is_undefined_length)
    frame_bytes = rows * cols * spp * bits / 8
    if photometric == "YBR_FULL_422" and not encapsulated:
        frame_bytes = rows * cols * 2 * bits / 8
    raw_frames = ds.get("NumberOfFrames") if "NumberOfFrames" in ds else None
    frames = _as_int(raw_frames) if raw_frames is not None else 1
    if raw_frames is not None and str(raw_frames).strip() == "":
        frames = 1
    if frames is None:
        if encapsulated:
            raise _Reject("NumberOfFrames is unreadable")
        actual = len(ds[pix_kw].value or b"")
        frames = int(actual // frame_bytes) if frame_bytes else 0
        if frames < 1:
            raise _Reject(f"truncated pixel data: expected {int(math.ceil(frame_bytes))} bytes, found {actual}")
        ds.NumberOfFrames = frames
        notes.append(f"NumberOfFrames unreadable; {frames} inferred from the pixel data length")
    if frames < 1:
        raise _Reject(f"NumberOfFrames is {frames}")
    _check_frames(frames, limits)
    out_bytes = 4 if (spp == 1 and photometric != "PALETTE COLOR") else 3 * (1 if bits <= 8 else 2)
    _check_total(frames * rows * cols * out_bytes, f"{frames} frame(s) of {cols}×{rows} px", limits)
    if not encapsulated:
        expected = int(math.ceil(frames * frame_bytes))
        actual = len(ds[pix_kw].value or b"")
        if actual < expected:
            raise _Reject(f"truncated pixel data: expected {expected} bytes, found {actual}")
    return _Geom(rows, cols, frames, spp, bits, photometric, encapsulated)


_CODEC_NAMES = (("JPEG 2000", "JPEG 2000"), ("JPEG-LS", "JPEG-LS"), ("JPEG", "JPEG"),
                ("RLE", "RLE"), ("Deflate", "deflate"))


def _codec_name(ts) -> str:
    name = privacy.uid_name(ts)
    for key, short in _CODEC_NAMES:
        if key.lower() in name.lower():
            return "HTJ2K" if "High-Throughput" in name else short
    return name


def _decode_dicom(ds, geom: _Geom) -> np.ndarray:
    from pydicom.pixels import get_decoder

    ts = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        tsname = privacy.uid_name(ts)
        raise _Reject("unsupported transfer syntax " + (tsname if tsname != "private" else "(not a standard DICOM transfer syntax)")) from None
    except Exception:
        raise _Reject("unsupported transfer syntax") from None
    if not decoder.is_available:
        raise _Reject(f"no decoder installed for {privacy.uid_name(ts)}")
    try:
        arr = ds.pixel_array
    except MemoryError:
        raise
    except RecursionError:
        raise _Reject("DICOM sequences nested too deeply to read safely") from None
    except BaseException as e:  # native decoders may raise BaseException subclasses (panics)
        if isinstance(e, _FATAL):
            raise
        if geom.encapsulated:
            raise _Reject(f"decoding {_codec_name(ts)} failed: {_short(e)}") from None
        raise _Reject(f"pixel data could not be read: {_short(e)}") from None
    expected: tuple[int, ...] = (geom.rows, geom.cols) + ((3,) if geom.spp == 3 else ())
    if geom.frames > 1:
        expected = (geom.frames,) + expected
    if tuple(arr.shape) != expected:
        raise _Reject(f"decoded pixel array has shape {tuple(arr.shape)}, the header says {expected}")
    return arr


def _colour(arr: np.ndarray, bits_stored: int | None, notes: list[str]) -> np.ndarray:
    """RGB pixels as uint8/uint16 (32-bit colour is shifted down to 16 bits)."""
    if arr.dtype.kind == "f":
        return arr.astype(np.float32)
    if arr.dtype.itemsize > 2:
        shift = max((bits_stored or 32) - 16, 0)
        notes.append(f"{bits_stored or 32}-bit colour reduced to 16 bits")
        return (np.clip(arr, 0, None).astype(np.uint64) >> shift).astype(np.uint16)
    if arr.dtype.kind == "i":
        arr = np.clip(arr, 0, None)
    return arr.astype(np.uint8 if arr.dtype.itemsize == 1 else np.uint16)


_RESCALE_UNITS = {"HU": "HU", "OD": "OD", "MGML": "mg/mL", "Z_EFF": "Z eff", "ED": "electron density",
                  "EDW": "electron density (water)", "HU_MOD": "HU (modified)", "PCT": "%"}
_PET_UNITS = {"BQML": "Bq/mL", "CNTS": "counts", "GML": "g/mL", "PROPCNTS": "counts (proportional)",
              "NONE": "a.u.", "CM2": "cm²", "PCNT": "%", "MGMINML": "mg/min/mL", "UMOLMINML": "µmol/min/mL"}


def _grey_units(ds, modality: str, rescaled: bool, rescale_type: str | None) -> str:
    rt = (rescale_type or "").strip().upper()
    if rt and rt != "US":
        return _RESCALE_UNITS.get(rt, privacy.clean_text(rt, max_len=16))
    if modality == "CT" and rescaled:
        return "HU"
    if modality == "PT":
        u = str(_get(ds, "Units", "")).strip().upper()
        return _PET_UNITS.get(u, privacy.clean_text(u, max_len=16) if u else "a.u.")
    if modality == "NM":
        return "counts"
    if modality == "MR":
        return "a.u."
    if modality == "SEG":
        return "label"
    return "grey level"


def _modality_lut(ds, arr: np.ndarray, geom: _Geom, notes: list[str]) -> tuple[np.ndarray, bool, str | None]:
    """Greyscale stored values → float32 physical values. Returns (pixels, rescaled, type)."""
    from pydicom.pixels import apply_modality_lut

    frames = arr if geom.frames > 1 else arr[None]
    out = np.empty(frames.shape, dtype=np.float32)
    if _get(ds, "ModalityLUTSequence"):
        lut_type = _get(ds.ModalityLUTSequence[0], "ModalityLUTType")
        try:
            for i in range(frames.shape[0]):
                out[i] = apply_modality_lut(frames[i], ds)
        except Exception:
            raise _Reject("Modality LUT Sequence is damaged") from None
        return (out if geom.frames > 1 else out[0]), True, (str(lut_type) if lut_type else None)

    has_top = "RescaleSlope" in ds or "RescaleIntercept" in ds
    params: list[tuple[float, float, str | None]] = []
    if has_top:
        params = [(_as_float(_get(ds, "RescaleSlope", 1.0)), _as_float(_get(ds, "RescaleIntercept", 0.0)),
                   _get(ds, "RescaleType"))]
    else:
        for i in range(frames.shape[0]):
            item = _fg_item(ds, i, "PixelValueTransformationSequence")
            if item is None:
                params = []
                break
            params.append((_as_float(item.get("RescaleSlope", 1.0)), _as_float(item.get("RescaleIntercept", 0.0)),
                           item.get("RescaleType")))
    for slope, intercept, _ in params:
        if slope is None or not math.isfinite(slope) or slope == 0:
            raise _Reject(f"invalid Rescale Slope ({slope})")
        if intercept is None or not math.isfinite(intercept):
            raise _Reject(f"invalid Rescale Intercept ({intercept})")
    if not params:
        out[...] = frames
        return (out if geom.frames > 1 else out[0]), False, None
    if has_top:
        ds.RescaleSlope, ds.RescaleIntercept = params[0][0], params[0][1]
        slope, intercept = params[0][0], params[0][1]
        if slope == 1.0 and intercept == int(intercept) and frames.dtype.kind in "iu" and frames.dtype.itemsize <= 2:
            np.add(frames, np.float32(intercept), out=out, dtype=np.float32)  # exact: integers < 2**24
        else:
            for i in range(frames.shape[0]):  # frame by frame: pydicom returns float64
                out[i] = apply_modality_lut(frames[i], ds)
    else:
        if len({p[:2] for p in params}) > 1:
            notes.append("rescale slope/intercept vary per frame (per-frame functional groups)")
        for i, (slope, intercept, _) in enumerate(params):
            out[i] = frames[i].astype(np.float64) * slope + intercept
    rtype = params[0][2]
    return (out if geom.frames > 1 else out[0]), True, (str(rtype) if rtype else None)


def _voi(ds, notes: list[str]) -> tuple[tuple[float, float] | None, np.ndarray | None, float]:
    """Default window (center, width), VOI LUT table and its first mapped value."""
    wc, ww = _as_float(_get(ds, "WindowCenter")), _as_float(_get(ds, "WindowWidth"))
    if wc is None and ww is None:
        item = _fg_item(ds, 0, "FrameVOILUTSequence")
        if item is not None:
            wc, ww = _as_float(item.get("WindowCenter")), _as_float(item.get("WindowWidth"))
    window = None
    if wc is not None and ww is not None:
        if math.isfinite(wc) and math.isfinite(ww) and ww > 0:
            window = (wc, ww)
        else:
            notes.append(f"window in the file ignored (center {wc:g}, width {ww:g})")
    lut, first = None, 0.0
    seq = _get(ds, "VOILUTSequence")
    if seq:
        try:
            item = seq[0]
            desc = [int(x) for x in item.LUTDescriptor]
            n = desc[0] or 65536
            first = float(desc[1])
            if _as_int(_get(ds, "PixelRepresentation")) == 1 and first >= 32768:
                first -= 65536
            raw = item.LUTData
            if isinstance(raw, (bytes, bytearray)):
                dt = np.dtype("<u1" if desc[2] <= 8 and len(raw) == n else "<u2")
                table = np.frombuffer(raw, dtype=dt)[:n]
            else:
                table = np.asarray(list(raw) if not np.isscalar(raw) else [raw])[:n]
            lut = table.astype(np.uint16 if table.max(initial=0) > 255 else np.uint8)
            if window is None:
                window = (first + n / 2.0, float(n))
        except Exception:
            notes.append("VOI LUT Sequence unreadable; ignored")
            lut, first = None, 0.0
    return window, lut, first


def _dicom_spacing(ds, geom: _Geom, notes: list[str]) -> tuple[tuple[float, float] | None, float | None]:
    sp = _spacing_of(_get(ds, "PixelSpacing"))
    if sp is None:
        sp = _spacing_of(_get(ds, "ImagerPixelSpacing"))
    pm = _fg_item(ds, 0, "PixelMeasuresSequence")
    if sp is None and pm is not None:
        sp = _spacing_of(pm.get("PixelSpacing"))
    if sp is None:
        for region in _get(ds, "SequenceOfUltrasoundRegions", []) or []:
            try:
                if int(region.PhysicalUnitsXDirection) == 3 and int(region.PhysicalUnitsYDirection) == 3:
                    dx, dy = abs(float(region.PhysicalDeltaX)), abs(float(region.PhysicalDeltaY))
                    if dx > 0 and dy > 0 and math.isfinite(dx + dy):
                        sp = (dy * 10.0, dx * 10.0)
                        notes.append("pixel spacing from the ultrasound region calibration")
                        break
            except Exception:
                continue
    slice_sp = None
    if geom.frames > 1:
        slice_sp = _as_float(_get(ds, "SpacingBetweenSlices"))
        if slice_sp is None and pm is not None:
            slice_sp = _as_float(pm.get("SpacingBetweenSlices"))
        offsets = _get(ds, "GridFrameOffsetVector")
        if slice_sp is None and offsets is not None:
            try:
                d = np.diff(np.asarray([float(x) for x in offsets]))
                if d.size and np.allclose(d, d[0], rtol=1e-3, atol=1e-4) and d[0] != 0:
                    slice_sp = abs(float(d[0]))
            except Exception:
                pass
        if slice_sp is not None and not (math.isfinite(slice_sp) and slice_sp > 0):
            slice_sp = None
    return sp, slice_sp


def _dicom_image(data: bytes, name: str, limits: Limits, digest: str) -> Image:
    from pydicom.pixels import apply_color_lut

    ds = _read_dicom(data, header_only=False)
    notes: list[str] = []
    pix_kw = next((k for k in _PIXEL_KEYWORDS if k in ds), None)
    if pix_kw is None:
        if "Rows" in ds and "Columns" in ds and "BitsAllocated" in ds:
            raise _Reject("truncated DICOM file: the image header is there but the pixel data is missing")
        raise _Reject(f"no image in this DICOM ({_dicom_kind(ds)})")
    _ensure_transfer_syntax(ds, pix_kw, notes)
    geom = _dicom_geometry(ds, pix_kw, limits, notes)
    arr = _decode_dicom(ds, geom)
    modality = privacy.clean_text(_get(ds, "Modality", "OT"), max_len=16) or "OT"
    bits_stored = _as_int(_get(ds, "BitsStored"))
    voi_lut, voi_first, window = None, 0.0, None
    if geom.photometric == "PALETTE COLOR":
        try:
            pixels = _colour(apply_color_lut(arr, ds), 16, notes)
        except _Reject:
            raise
        except Exception:
            raise _Reject("PALETTE COLOR image without a readable colour palette") from None
        units = "RGB"
    elif geom.spp == 3:
        pixels = _colour(arr, bits_stored, notes)  # pydicom 3 converts YBR_* to RGB
        units = "RGB"
    else:
        if pix_kw == "PixelData":
            pixels, rescaled, rtype = _modality_lut(ds, arr, geom, notes)
        else:
            pixels, rescaled, rtype = arr.astype(np.float32), False, None
        units = _grey_units(ds, modality, rescaled, rtype)
        if modality == "RTDOSE":
            scale = _as_float(_get(ds, "DoseGridScaling"))
            if scale is not None and math.isfinite(scale) and scale > 0:
                pixels *= np.float32(scale)
                units = "Gy" if str(_get(ds, "DoseUnits", "GY")).upper() == "GY" else "relative dose"
        pixels = _finite(pixels, notes)
        window, voi_lut, voi_first = _voi(ds, notes)
    spacing, slice_sp = _dicom_spacing(ds, geom, notes)
    meta = privacy.safe_metadata(ds)
    meta.update(format="DICOM", rows=geom.rows, cols=geom.cols, frames=geom.frames)
    if notes:
        meta["notes"] = notes
    return Image(
        pixels=pixels, name=name, spacing=spacing, slice_spacing=slice_sp, units=units,
        modality=modality, window=window, invert=geom.photometric == "MONOCHROME1",
        stack="frame" if geom.frames > 1 else None, source_format="dicom",
        metadata=privacy.restrict(meta), digest=digest, voi_lut=voi_lut, voi_lut_first=voi_first,
    )


# ---------------------------------------------------------------------- DICOM series
@dataclass
class _Rec:
    entry: _Entry
    order: int
    uid: str
    rows: int | None
    cols: int | None
    frames: int | None
    spp: int | None
    photometric: str
    iop: tuple[float, ...] | None
    ipp: tuple[float, ...] | None
    instance: int | None
    thickness: float | None
    between: float | None
    series_number: int | None


def _dicom_record(data: bytes, entry: _Entry, order: int) -> _Rec | None:
    ds = _read_dicom(data, header_only=True)
    uid = str(_get(ds, "SeriesInstanceUID", "")).strip()
    if not uid:
        return None
    nf = _get(ds, "NumberOfFrames")
    return _Rec(
        entry=entry, order=order, uid=uid,
        rows=_as_int(_get(ds, "Rows")), cols=_as_int(_get(ds, "Columns")),
        frames=_as_int(nf) if nf is not None else 1, spp=_as_int(_get(ds, "SamplesPerPixel", 1)),
        photometric=str(_get(ds, "PhotometricInterpretation", "MONOCHROME2")).strip().upper(),
        iop=_floats(_get(ds, "ImageOrientationPatient"), 6) if _get(ds, "ImageOrientationPatient") is not None else None,
        ipp=_floats(_get(ds, "ImagePositionPatient"), 3) if _get(ds, "ImagePositionPatient") is not None else None,
        instance=_as_int(_get(ds, "InstanceNumber")), thickness=_as_float(_get(ds, "SliceThickness")),
        between=_as_float(_get(ds, "SpacingBetweenSlices")), series_number=_as_int(_get(ds, "SeriesNumber")),
    )


def _series_plan(recs: list[_Rec]) -> tuple[list[_Rec] | None, str, float | None, str]:
    """Order for stacking, or (None, reason). Returns (ordered, why, slice_spacing, positions)."""
    if any((r.frames or 1) != 1 for r in recs):
        return None, "the series contains multi-frame files", None, ""
    if any(r.spp not in (1, None) or not r.photometric.startswith("MONOCHROME") for r in recs):
        return None, "the series contains colour images", None, ""
    if len({(r.rows, r.cols) for r in recs}) > 1:
        return None, "images of the series have inconsistent shapes", None, ""
    if len({r.photometric for r in recs}) > 1:
        return None, "images of the series mix MONOCHROME1 and MONOCHROME2", None, ""
    if all(r.iop is not None and r.ipp is not None for r in recs):
        iops = np.asarray([r.iop for r in recs])
        if np.abs(iops - iops[0]).max() > 1e-3:
            return None, "images of the series have different orientations", None, ""
        row_dir, col_dir = iops[0, :3], iops[0, 3:]
        normal = np.cross(row_dir, col_dir)
        if np.linalg.norm(normal) < 1e-6:
            return None, "invalid Image Orientation (Patient)", None, ""
        normal /= np.linalg.norm(normal)
        d = np.asarray([np.dot(r.ipp, normal) for r in recs])
        idx = np.argsort(d, kind="stable")
        diffs = np.diff(d[idx])
        if diffs.size and diffs.min() < 1e-3:
            return None, "several images share a slice position (time points or echoes?)", None, ""
        spacing = float(np.median(diffs)) if diffs.size else None
        positions = "regular"
        if diffs.size and (diffs.max() - diffs.min()) > max(0.05 * spacing, 0.01):
            positions = f"irregular ({diffs.min():.3g}–{diffs.max():.3g} mm)"
        return [recs[i] for i in idx], "", spacing, positions
    inst = [r.instance for r in recs]
    if all(i is not None for i in inst) and len(set(inst)) == len(inst):
        ordered = sorted(recs, key=lambda r: r.instance)  # type: ignore[arg-type, return-value]
        sp = next((v for v in (recs[0].between, recs[0].thickness) if v and math.isfinite(v) and v > 0), None)
        return ordered, "", sp, "instance number"
    return None, "no slice positions or distinct instance numbers to order the series", None, ""


def _common_dir(names: Sequence[str]) -> str:
    parts = [n.split("/")[:-1] for n in names]
    common: list[str] = []
    for seg in zip(*parts):
        if all(s == seg[0] for s in seg):
            common.append(seg[0])
        else:
            break
    return "/".join(common)


def _load_series(recs: list[_Rec], limits: Limits, errors: list[LoadError]) -> list[Image]:
    recs = sorted(recs, key=lambda r: r.order)
    if len(recs) == 1:
        r = recs[0]
        data = r.entry.read(limits)
        return [_dicom_image(data, r.entry.name, limits, _sha(data))]
    ordered, why, slice_sp, positions = _series_plan(recs)
    if ordered is None:
        out = []
        for r in recs:
            try:
                data = r.entry.read(limits)
                img = _dicom_image(data, r.entry.name, limits, _sha(data))
            except BaseException as e:
                if isinstance(e, _FATAL):
                    raise
                errors.append(LoadError(r.entry.name, _reason(e)))
                continue
            img.metadata.setdefault("notes", []).append(f"not stacked into a volume: {why}")
            out.append(img)
        return out
    n, rows, cols = len(ordered), int(ordered[0].rows or 0), int(ordered[0].cols or 0)
    series_name = _common_dir([r.entry.name for r in ordered]) or f"{ordered[0].entry.name} (+{n - 1} files)"
    if n > limits.max_series_files:
        raise LoadError(series_name, f"series has {n} files (limit {limits.max_series_files})")
    try:
        _check_plane(rows, cols, limits)
        _check_total(n * rows * cols * 4, f"a series of {n} slices of {cols}×{rows} px", limits)
    except _Reject as e:
        raise LoadError(series_name, e.reason) from None
    vol = np.empty((n, rows, cols), dtype=np.float32)
    ok: list[int] = []
    digests: list[str] = []
    imgs: dict[int, Image] = {}
    for i, r in enumerate(ordered):
        try:
            data = r.entry.read(limits)
            img = _dicom_image(data, r.entry.name, limits, _sha(data))
            if img.pixels.shape != (rows, cols):
                raise _Reject(f"slice shape {img.pixels.shape} differs from the series ({rows}, {cols})")
        except BaseException as e:
            if isinstance(e, _FATAL):
                raise
            errors.append(e if isinstance(e, LoadError) else LoadError(r.entry.name, _reason(e)))
            continue
        vol[i] = img.pixels
        ok.append(i)
        digests.append(img.digest)
        imgs[i] = img.with_pixels(np.zeros((1, 1), np.float32))  # keep header facts, drop pixels
    if not ok:
        return []
    if len(ok) < n:
        vol = vol[ok]
        recs_ok = [ordered[i] for i in ok]
        again, _, slice_sp, positions = _series_plan(recs_ok)
        if again is None or len(ok) == 1:
            slice_sp = None
    mid = imgs[ok[len(ok) // 2]]
    notes = list(mid.metadata.get("notes", []))
    if len(ok) < n:
        notes.append(f"{n - len(ok)} of {n} slices could not be read and are missing")
    if positions.startswith("irregular"):
        notes.append(f"irregular slice spacing: {positions[len('irregular '):].strip('()')}; no single slice spacing")
        slice_sp = None
    if len({imgs[i].spacing for i in ok}) > 1:
        notes.append("pixel spacing differs between slices; the middle slice's is used")
    if len({imgs[i].units for i in ok}) > 1:
        notes.append("slices have different units; the middle slice's is used")
    meta = dict(mid.metadata)
    meta.update(frames=len(ok), series_files=len(ok), slice_positions=positions.split(" ")[0] if positions else "")
    meta.pop("instance_number", None)
    if notes:
        meta["notes"] = notes
    if len(ok) == 1:
        only = ordered[ok[0]]
        return [Image(pixels=vol[0], name=only.entry.name, spacing=mid.spacing, units=mid.units,
                      modality=mid.modality, window=mid.window, invert=mid.invert, source_format="dicom",
                      metadata=privacy.restrict(meta), digest=digests[0],
                      voi_lut=mid.voi_lut, voi_lut_first=mid.voi_lut_first)]
    return [Image(
        pixels=vol, name=series_name, spacing=mid.spacing, slice_spacing=slice_sp, units=mid.units,
        modality=mid.modality, window=mid.window, invert=mid.invert, stack="slice", source_format="dicom",
        metadata=privacy.restrict(meta), digest=content_digest("dicom-series", *digests),
        voi_lut=mid.voi_lut, voi_lut_first=mid.voi_lut_first,
    )]


# ====================================================================== PNG / JPEG
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _png_header(data: bytes) -> tuple[int, int, int, int]:
    if len(data) < 26 or data[12:16] != b"IHDR":
        raise _Reject("damaged PNG: the header chunk is missing")
    w, h = struct.unpack(">II", data[16:24])
    return w, h, data[24], data[25]


def _jpeg_header(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, precision, components) from the first SOF marker."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise _Reject("damaged JPEG: marker structure broken")
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker == 0xD9:
            break
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in _SOF_MARKERS:
            if i + 10 > n:
                break
            precision = data[i + 4]
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h, precision, data[i + 9]
        i += 2 + length
    raise _Reject("damaged JPEG: no frame header found")


def _pil_array(im) -> np.ndarray:
    mode = im.mode
    if mode == "1":
        return np.array(im, dtype=bool).astype(np.uint8)
    if mode == "L":
        return np.array(im)
    if mode in ("LA", "La"):
        return np.array(im.getchannel(0))
    if mode.startswith("I;16"):
        return np.array(im).astype(np.uint16)
    if mode == "I":
        return np.array(im, dtype=np.int32)
    if mode == "F":
        return np.array(im, dtype=np.float32)
    if mode == "RGB":
        return np.array(im)
    return np.array(im.convert("RGB"))  # P, PA, RGBA, RGBX, CMYK, YCbCr, LAB, HSV


_PNG_COLOUR = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}


def _raster_image(data: bytes, fmt: str, name: str, limits: Limits, digest: str) -> Image:
    from PIL import Image as PILImage
    from PIL import ImageOps

    notes: list[str] = []
    if fmt == "png":
        w, h, depth, ctype = _png_header(data)
        channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(ctype, 4)
    else:
        w, h, depth, channels = _jpeg_header(data)
        ctype = -1
    _check_plane(h, w, limits, pil=True)
    _check_total(h * w * max(channels, 1) * (2 if depth > 8 else 1), f"a {w}×{h} px image", limits)
    meta: dict[str, Any] = {"format": fmt.upper(), "rows": h, "cols": w, "bit_depth": depth, "frames": 1}
    if fmt == "png" and depth == 16 and ctype != 0:
        arr = _png16(data, ctype)
        meta["mode"] = _PNG_COLOUR.get(ctype, "?") + " 16-bit"
    else:
        try:
            with PILImage.open(_io.BytesIO(data), formats=[fmt.upper()]) as im:
                _check_plane(im.height, im.width, limits, pil=True)
                if getattr(im, "n_frames", 1) > 1:
                    notes.append(f"multi-frame {fmt.upper()}: the first of {im.n_frames} frames is loaded")
                meta["mode"] = im.mode
                im.load()
                if fmt == "jpeg":
                    turned = ImageOps.exif_transpose(im)
                    if turned.size != im.size or turned.tobytes() != im.tobytes():
                        notes.append("rotated/flipped as its EXIF orientation says")
                    im = turned
                arr = _pil_array(im)
        except _Reject:
            raise
        except PILImage.DecompressionBombError:
            raise _Reject(f"image too large: {w}×{h} px exceeds the {_mpx(_pixel_limit(limits, True))} limit") from None
        except ValueError as e:
            if "text" in str(e).lower() or "too large" in str(e).lower():
                raise _Reject("PNG text chunks too large (possible decompression bomb)") from None
            raise _Reject(f"decoding {fmt.upper()} failed: {_short(e)}") from None
        except (OSError, SyntaxError, EOFError, struct.error, zlib.error) as e:
            if "truncated" in str(e).lower():
                raise _Reject(f"truncated {fmt.upper()} image data") from None
            raise _Reject(f"decoding {fmt.upper()} failed: {_short(e)}") from None
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.ndim == 2 and arr.dtype == np.int32 and arr.size and arr.min() >= 0 and arr.max() <= 65535:
        arr = arr.astype(np.uint16)
    arr = _finite(np.ascontiguousarray(arr), notes)
    meta["rows"], meta["cols"] = int(arr.shape[0]), int(arr.shape[1])
    if notes:
        meta["notes"] = notes
    return Image(pixels=arr, name=name, units="RGB" if arr.ndim == 3 else "grey level", modality="OT",
                 source_format=fmt, metadata=privacy.restrict(meta), digest=digest)


def _png16(data: bytes, ctype: int) -> np.ndarray:
    """16-bit colour / grey+alpha PNG at full depth (Pillow would reduce it to 8 bits)."""
    import cv2

    a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if a is None:
        raise _Reject("decoding PNG failed: damaged or truncated data")
    if a.ndim == 3:
        if ctype == 4:
            a = a[..., 0]
        else:
            a = a[..., [2, 1, 0]]  # BGR(A) -> RGB, alpha dropped
    return np.ascontiguousarray(a)


# ====================================================================== TIFF
_UNIT_MM = {"mm": 1.0, "millimeter": 1.0, "millimetre": 1.0, "cm": 10.0, "centimeter": 10.0,
            "centimetre": 10.0, "micron": 1e-3, "um": 1e-3, "µm": 1e-3, "\\u00b5m": 1e-3, "m": 1000.0}


def _tiff_spacing(tif, page, notes: list[str]) -> tuple[tuple[float, float] | None, float | None, str | None]:
    try:
        xres, yres = page.resolution
        unit = int(page.resolutionunit)
    except Exception:
        return None, None, None
    factor, unit_name, zsp = None, None, None
    if unit == 3:
        factor, unit_name = 10.0, "centimetre"
    elif unit == 4:  # tifffile's MILLIMETER (non-standard, written by some tools)
        factor, unit_name = 1.0, "millimetre"
    elif tif.is_imagej and tif.imagej_metadata:
        u = str(tif.imagej_metadata.get("unit", "")).strip().lower()
        if u in _UNIT_MM:
            factor, unit_name = _UNIT_MM[u], u
            z = _as_float(tif.imagej_metadata.get("spacing"))
            if z and z > 0 and math.isfinite(z):
                zsp = z * factor
    if factor is None or not (xres > 0 and yres > 0 and math.isfinite(xres + yres)):
        return None, None, None
    return (factor / yres, factor / xres), zsp, unit_name


def _tiff_image(data: bytes, name: str, limits: Limits, digest: str) -> Image:
    import tifffile

    notes: list[str] = []
    try:
        tif = tifffile.TiffFile(_io.BytesIO(data))
    except Exception:
        raise _Reject("damaged TIFF header") from None
    with tif:
        try:
            n_pages = len(tif.pages)
            series = tif.series
        except Exception:
            raise _Reject("damaged TIFF structure") from None
        if n_pages == 0 or not series:
            raise _Reject("TIFF contains no image")
        _check_frames(n_pages, limits)
        s = series[0]
        if len(series) > 1:
            notes.append(f"TIFF holds {len(series)} image series; the first is loaded")
        shape, dtype, axes = tuple(int(x) for x in s.shape), np.dtype(s.dtype), str(s.axes)
        if "Y" not in axes or "X" not in axes:
            raise _Reject(f"unsupported TIFF layout ({axes})")
        rows, cols = shape[axes.index("Y")], shape[axes.index("X")]
        _check_plane(rows, cols, limits)
        n_values = int(np.prod(shape, dtype=np.int64))
        _check_frames(n_values // max(rows * cols, 1) // max(shape[axes.index("S")] if "S" in axes else 1, 1), limits)
        _check_total(n_values * max(dtype.itemsize, 4 if dtype.kind == "f" else 1), f"a TIFF of shape {shape}", limits)
        if dtype.kind == "c" or (dtype.kind in "iu" and dtype.itemsize > 4):
            raise _Reject(f"TIFF sample format {dtype} is not supported")
        page = s.keyframe
        photometric = getattr(page.photometric, "name", str(page.photometric))
        compression = getattr(page.compression, "name", str(page.compression))
        spacing, zsp, unit_name = _tiff_spacing(tif, page, notes)
        arr = None
        if photometric not in ("SEPARATED", "YCBCR", "CIELAB", "ICCLAB", "ITULAB"):
            try:
                arr = s.asarray()
            except BaseException as e:
                if isinstance(e, _FATAL):
                    raise
                if "imagecodecs" not in str(e):
                    raise _Reject(f"decoding TIFF failed: {_short(e)}") from None
        if arr is not None:
            if photometric == "PALETTE" and page.colormap is not None:
                cmap = np.asarray(page.colormap)
                arr = np.moveaxis(cmap[:, np.clip(arr, 0, cmap.shape[1] - 1)], 0, -1)
                if np.all(cmap % 257 == 0):
                    arr = (arr // 257).astype(np.uint8)
                axes = axes + "S"
            arr = _normalise_axes(arr, axes)
        else:
            arr = _pil_tiff(data, limits, notes)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind == "f":
        arr = arr.astype(np.float32, copy=False)
    elif arr.dtype.kind == "i" and arr.dtype.itemsize == 1:
        arr = arr.astype(np.int16)
    arr = _finite(np.ascontiguousarray(arr), notes)
    colour = arr.shape[-1] == 3 and arr.ndim in (3, 4) and (arr.ndim == 4 or "S" in axes or photometric in ("RGB", "PALETTE", "YCBCR", "SEPARATED"))
    planes = arr.shape[0] if arr.ndim == (4 if colour else 3) else 1
    meta: dict[str, Any] = {"format": "TIFF", "rows": rows, "cols": cols, "frames": planes, "dtype": str(arr.dtype),
                            "bit_depth": int(getattr(page, "bitspersample", 0) or 0), "photometric": photometric,
                            "compression": compression}
    if unit_name:
        meta["resolution_unit"] = unit_name
    if notes:
        meta["notes"] = notes
    stack = None
    if planes > 1:
        stack = "slice" if ("Z" in axes and not any(a in axes for a in "TCQI")) else "frame"
    return Image(pixels=arr, name=name, spacing=spacing, slice_spacing=zsp if planes > 1 else None,
                 units="RGB" if colour else "grey level", modality="OT", invert=photometric == "MINISWHITE",
                 stack=stack, source_format="tiff", metadata=privacy.restrict(meta), digest=digest)


def _normalise_axes(arr: np.ndarray, axes: str) -> np.ndarray:
    """tifffile axes → (P, M, N[, 3]) or (M, N[, 3]); alpha/extra samples dropped."""
    if "S" in axes:
        arr = np.moveaxis(arr, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    lead = axes[: axes.index("Y")]
    spp = arr.shape[-1] if axes.endswith("S") else 1
    plane = arr.shape[len(lead):len(lead) + 2]
    p = int(np.prod(arr.shape[: len(lead)], dtype=np.int64)) if lead else 1
    arr = arr.reshape((p,) + tuple(plane) + ((spp,) if axes.endswith("S") else ()))
    if axes.endswith("S"):
        if spp in (1, 2):
            arr = arr[..., 0]
        elif spp in (3, 4):
            arr = arr[..., :3]
        else:
            raise _Reject(f"TIFF with {spp} samples per pixel is not supported")
    return arr[0] if p == 1 else arr


def _pil_tiff(data: bytes, limits: Limits, notes: list[str]) -> np.ndarray:
    """Pillow fallback for TIFF codecs tifffile cannot decode without imagecodecs."""
    from PIL import Image as PILImage
    from PIL import ImageSequence

    try:
        with PILImage.open(_io.BytesIO(data), formats=["TIFF"]) as im:
            planes = []
            for k, frame in enumerate(ImageSequence.Iterator(im)):
                _check_frames(k + 1, limits)
                _check_plane(frame.height, frame.width, limits, pil=True)
                frame.load()
                planes.append(_pil_array(frame))
    except _Reject:
        raise
    except PILImage.DecompressionBombError:
        raise _Reject("image too large (decompression bomb protection)") from None
    except BaseException as e:
        if isinstance(e, _FATAL):
            raise
        raise _Reject(f"decoding TIFF failed: {_short(e)}") from None
    if len(planes) > 1 and len({(p.shape, p.dtype) for p in planes}) == 1:
        return np.stack(planes)
    if len(planes) > 1:
        notes.append(f"TIFF pages differ in size; the first of {len(planes)} is loaded")
    return planes[0]


# ====================================================================== NIfTI
def _nifti_image(data: bytes, name: str, limits: Limits, digest: str) -> Image:
    import nibabel as nib
    from nibabel import orientations as ornt_mod

    notes: list[str] = []
    if len(data) < 348:
        raise _Reject("truncated NIfTI header")
    n1 = struct.unpack("<i", data[:4])[0] in (348,) or struct.unpack(">i", data[:4])[0] == 348
    magic = data[344:348] if n1 else data[4:8]
    if magic in (b"ni1\x00", b"ni2\x00"):
        raise _Reject("NIfTI header without image data (.hdr/.img pair); use a single-file .nii or .nii.gz")
    try:
        img = (nib.Nifti1Image if n1 else nib.Nifti2Image).from_bytes(data)
        hdr = img.header
        shape = tuple(int(x) for x in hdr.get_data_shape())
        dtype = np.dtype(hdr.get_data_dtype())
        zooms = [float(z) for z in hdr.get_zooms()]
        offset = int(getattr(img.dataobj, "offset", 0)) or int(hdr.get_data_offset())
        # the image's header copy has its scaling reset; the data proxy keeps scl_slope/scl_inter
        slope = _as_float(getattr(img.dataobj, "slope", None))
        inter = _as_float(getattr(img.dataobj, "inter", None))
        affine = img.affine
        oriented = int(hdr["qform_code"]) > 0 or int(hdr["sform_code"]) > 0
        space_unit = hdr.get_xyzt_units()[0]
        cal = (float(hdr["cal_min"]), float(hdr["cal_max"]))
    except _Reject:
        raise
    except Exception:
        raise _Reject("damaged NIfTI header") from None
    if len(shape) < 2 or any(d <= 0 for d in shape):
        raise _Reject(f"NIfTI has no voxels (shape {shape})")
    if dtype.kind == "c" or dtype.kind == "V" and not dtype.fields:
        raise _Reject(f"NIfTI data type {dtype} is not supported")
    x, y = shape[0], shape[1]
    z = shape[2] if len(shape) > 2 else 1
    extra = int(np.prod(shape[3:], dtype=np.int64)) if len(shape) > 3 else 1
    if extra > 1:
        notes.append(f"{len(shape)}-D NIfTI: the first of {extra} volumes is loaded")
    _check_plane(y, x, limits)
    rgb = bool(dtype.fields)
    _check_total(x * y * z * (3 if rgb else 4), f"a volume of {x}×{y}×{z} voxels", limits)
    count = x * y * z
    need = count * dtype.itemsize
    if len(data) < offset + need:
        raise _Reject(f"truncated voxel data: expected {need} bytes, found {max(len(data) - offset, 0)}")
    raw = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape((x, y, z), order="F")
    if rgb:
        names = list(dtype.names or ())
        vol = np.stack([raw[f].astype(np.uint8) for f in names[:3]], axis=-1)
    else:
        vol = raw.astype(np.float32)
        if slope is not None and math.isfinite(slope) and slope != 0 and (slope != 1 or (inter or 0) != 0):
            vol *= np.float32(slope)
            vol += np.float32(inter if inter is not None and math.isfinite(inter) else 0.0)
        vol = _finite(vol, notes)
    unit_mm = {"meter": 1000.0, "micron": 1e-3}.get(space_unit, 1.0)
    z3 = np.asarray((zooms + [1.0, 1.0, 1.0])[:3], dtype=float) * unit_mm
    if oriented:
        try:
            ornt = ornt_mod.io_orientation(affine)
            vol = ornt_mod.apply_orientation(vol, ornt)
            zc = np.empty(3)
            zc[ornt[:, 0].astype(int)] = z3
            z3 = zc
        except Exception:
            oriented = False
            notes.append("NIfTI orientation unusable; voxel order kept")
    if oriented:
        vol = np.moveaxis(vol[::-1, ::-1], 2, 0)
        vol = np.swapaxes(vol, 1, 2)  # (S, A→P rows, R→L cols)
        spacing = (float(z3[1]), float(z3[0]))
        orientation = "RAS reoriented; slices inferior→superior, rows anterior→posterior, cols right→left"
    else:
        vol = np.moveaxis(vol, 2, 0)  # plane k = data[:, :, k]
        spacing = (float(z3[0]), float(z3[1]))
        orientation = "voxel order; plane k = data[:, :, k]"
    vol = np.ascontiguousarray(vol)
    if vol.shape[0] == 1:
        vol = vol[0]
    sp_ok = all(math.isfinite(s) and s > 0 for s in spacing)
    meta: dict[str, Any] = {"format": "NIfTI-1" if n1 else "NIfTI-2", "nifti_shape": list(shape),
                            "voxel_size": [float(v) for v in z3], "dtype": str(dtype), "orientation": orientation,
                            "rows": int(vol.shape[-3 if rgb else -2]), "cols": int(vol.shape[-2 if rgb else -1]),
                            "frames": z}
    if notes:
        meta["notes"] = notes
    window = None
    if cal[1] > cal[0] and math.isfinite(cal[0] + cal[1]):
        window = ((cal[0] + cal[1]) / 2.0, cal[1] - cal[0])
    slice_sp = float(z3[2]) if z > 1 and math.isfinite(z3[2]) and z3[2] > 0 else None
    return Image(pixels=vol, name=name, spacing=spacing if sp_ok else None, slice_spacing=slice_sp,
                 units="RGB" if rgb else "a.u.", modality="OT", window=window,
                 stack="slice" if z > 1 else None, source_format="nifti",
                 metadata=privacy.restrict(meta), digest=digest)


# ====================================================================== dispatch
def _load_one(data: bytes, fmt: str, name: str, limits: Limits) -> list[Image]:
    """One non-container file → images (exceptions are mapped by the caller)."""
    if len(data) == 0:
        raise _Reject("empty file (0 bytes)")
    digest = _sha(data)
    if data[:2] == b"\x1f\x8b" and fmt in ("nifti", "dicom"):
        data = _gunzip(data, limits.max_decoded_bytes)
        fmt = _sniff(bytes(data[:HEAD_BYTES]), allow_gzip=False)
    if fmt == "dicom":
        return [_dicom_image(data, name, limits, digest)]
    if fmt in ("png", "jpeg"):
        return [_raster_image(data, fmt, name, limits, digest)]
    if fmt == "tiff":
        return [_tiff_image(data, name, limits, digest)]
    if fmt == "nifti":
        return [_nifti_image(data, name, limits, digest)]
    raise _Reject(f"not an image: unrecognised content ({_describe_unknown(data)})")


Source = Union[str, os.PathLike, tuple, bytes, Any]


def _process(items: Iterable[_Entry | LoadError], limits: Limits, errors: list[LoadError], *,
             group_top: bool = True) -> list[Image]:
    """Load every entry; group DICOM files by series; images and errors in input order.

    ``group_top=False``: a top-level DICOM entry (not from a ZIP) is loaded directly,
    skipping the series pass (one file on its own cannot form a series)."""
    slots: list[tuple[int, list[Image]]] = []
    failed: list[tuple[int, LoadError]] = []
    series: dict[str, list[_Rec]] = {}
    counter = 0

    def handle(entry: _Entry, order: int) -> None:
        head = entry.head()
        if not head:
            raise _Reject("empty file (0 bytes)")
        fmt = _sniff(head, allow_gzip=True)
        if fmt == "zip":
            if entry.depth >= limits.zip_max_depth:
                raise _Reject(f"ZIP inside a ZIP is not opened (nesting limit {limits.zip_max_depth})")
            for sub in _zip_entries(entry.read(limits), entry.name, limits, entry.depth + 1):
                guarded(sub)
            return
        data = entry.read(limits)
        if fmt == "dicom" and data[:2] != b"\x1f\x8b" and (group_top or entry.depth > 0):
            rec = _dicom_record(data, entry, order)
            if rec is not None:
                series.setdefault(rec.uid, []).append(rec)
                return
        slots.append((order, _load_one(data, fmt, entry.name, limits)))

    def guarded(item: _Entry | LoadError) -> None:
        nonlocal counter
        order = counter
        counter += 1
        if isinstance(item, LoadError):
            failed.append((order, item))
            return
        try:
            handle(item, order)
        except LoadError as e:
            failed.append((order, e))
        except BaseException as e:  # the boundary: nothing but LoadError leaves
            if isinstance(e, _FATAL):
                raise
            failed.append((order, LoadError(item.name, _reason(e))))

    for item in items:
        guarded(item)
    for recs in series.values():
        first = min(r.order for r in recs)
        where = {r.entry.name: r.order for r in recs}
        sub: list[LoadError] = []
        try:
            slots.append((first, _load_series(recs, limits, sub)))
        except LoadError as e:
            sub.append(e)
        except BaseException as e:
            if isinstance(e, _FATAL):
                raise
            sub.append(LoadError(min(recs, key=lambda r: r.order).entry.name, _reason(e)))
        failed.extend((where.get(e.filename, first), e) for e in sub)
    slots.sort(key=lambda t: t[0])
    failed.sort(key=lambda t: t[0])
    errors.extend(e for _, e in failed)
    images = [im for _, ims in slots for im in ims]
    _dedupe_names(images)
    return images


def _dedupe_names(images: list[Image]) -> None:
    seen: dict[str, int] = {}
    for im in images:
        seen[im.name] = seen.get(im.name, 0) + 1
    counts: dict[str, int] = {}
    for im in images:
        if seen[im.name] > 1:
            counts[im.name] = counts.get(im.name, 0) + 1
            sn = im.metadata.get("series_number")
            tag = f"series {sn}" if sn is not None else f"#{counts[im.name]}"
            im.name = f"{im.name} [{tag}]"


def _source_items(source: Source, index: int) -> Iterator[_Entry | LoadError]:
    if isinstance(source, tuple) and len(source) == 2:
        name, data = source
        if isinstance(data, (bytes, bytearray, memoryview)):
            yield _bytes_entry(str(name), data)
        else:
            yield LoadError(str(name), "not bytes: pass (name, bytes) or a path")
    elif isinstance(source, (bytes, bytearray, memoryview)):
        yield _bytes_entry(f"upload {index + 1}", source)
    elif hasattr(source, "getvalue") and hasattr(source, "name"):  # e.g. Streamlit UploadedFile
        yield _bytes_entry(str(source.name), source.getvalue())
    elif isinstance(source, (str, os.PathLike)):
        yield from _path_entries(Path(source))
    else:
        yield LoadError(f"source {index + 1}", f"unsupported source type {type(source).__name__}")


def _finish(images: list[Image], errs: list[LoadError], errors: list | None, name: str) -> list[Image]:
    if errors is not None:
        errors.extend(errs)
        return images
    if not images:
        if len(errs) == 1:
            raise errs[0]
        if errs:
            raise LoadError(name, f"no image could be loaded: {len(errs)} files failed (first: {errs[0]})")
        raise LoadError(name, "no images found")
    if errs:
        log.info("%d file(s) could not be loaded and were skipped", len(errs))
    return images


# ====================================================================== public API
def load_bytes(data: bytes, name: str, *, limits: Limits | None = None,
               errors: list[LoadError] | None = None) -> list[Image]:
    """Images in ``data`` (any supported format; a ZIP gives many; a DICOM series in a
    ZIP gives one volume per series).

    Raises :class:`LoadError` when nothing loads. Per-entry failures of a ZIP are appended
    to ``errors`` when given, else skipped (use :func:`load_many` to get them).
    """
    limits = limits or Limits()
    errs: list[LoadError] = []
    try:
        if len(data) > limits.max_file_bytes:
            raise LoadError(name, f"file too large: {format_bytes(len(data))} (limit {format_bytes(limits.max_file_bytes)})")
        images = _process([_bytes_entry(name, data)], limits, errs, group_top=False)
    except LoadError:
        raise
    except BaseException as e:
        if isinstance(e, _FATAL):
            raise
        raise LoadError(name, _reason(e)) from None
    return _finish(images, errs, errors, name)


def load_path(path: str | os.PathLike, *, limits: Limits | None = None,
              errors: list[LoadError] | None = None) -> list[Image]:
    """Images from a file or a folder (recursive, hidden files skipped, series grouped).

    Names are the file name, or ``folder/sub/file`` relative to the folder's parent.
    Failure handling as :func:`load_bytes`.
    """
    limits = limits or Limits()
    p = Path(path)
    errs: list[LoadError] = []
    try:
        images = _process(_path_entries(p), limits, errs, group_top=p.is_dir())
    except LoadError:
        raise
    except BaseException as e:
        if isinstance(e, _FATAL):
            raise
        raise LoadError(p.name or str(p), _reason(e)) from None
    return _finish(images, errs, errors, p.name or str(p))


def load_many(sources: Iterable[Source], *, limits: Limits | None = None) -> tuple[list[Image], list[LoadError]]:
    """Load many sources: paths (files/folders), ``(name, bytes)``, bytes, or objects with
    ``.name`` and ``.getvalue()`` (Streamlit uploads). Never raises for a bad file.

    DICOM files are grouped by series across *all* sources, so a series uploaded as loose
    files becomes one volume. Returns ``(images, errors)`` in input order.
    """
    limits = limits or Limits()
    errs: list[LoadError] = []

    def items() -> Iterator[_Entry | LoadError]:
        for i, src in enumerate(sources):
            try:
                yield from _source_items(src, i)
            except BaseException as e:
                if isinstance(e, _FATAL):
                    raise
                yield LoadError(f"source {i + 1}", _reason(e))

    try:
        images = _process(items(), limits, errs)
    except BaseException as e:  # defensive: a bug must not hide the errors gathered so far
        if isinstance(e, _FATAL):
            raise
        errs.append(LoadError("(batch)", _reason(e)))
        images = []
    return images, errs


def load_image(path_or_bytes: str | os.PathLike | bytes, name: str | None = None, *,
               limits: Limits | None = None) -> Image:
    """Exactly one image: the first one found (for batch code)."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        images = load_bytes(bytes(path_or_bytes), name or "image", limits=limits)
    else:
        images = load_path(path_or_bytes, limits=limits)
    return images[0]


def read_metadata(path_or_bytes: str | os.PathLike | bytes, name: str | None = None, *,
                  limits: Limits | None = None) -> dict:
    """Header-only metadata (no pixel decoding), allow-listed keys only."""
    limits = limits or Limits()
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        label = name or "image"
        entry = _bytes_entry(label, path_or_bytes)
    else:
        p = Path(path_or_bytes)
        label = name or p.name or str(p)
        if not p.is_file():
            raise LoadError(label, "file not found" if not p.exists() else "not a regular file")
        entry = _Entry(label, partial(_read_file, p), p.stat().st_size)
    try:
        return privacy.restrict(_metadata(entry, limits))
    except LoadError:
        raise
    except BaseException as e:
        if isinstance(e, _FATAL):
            raise
        raise LoadError(label, _reason(e)) from None


def _metadata(entry: _Entry, limits: Limits) -> dict[str, Any]:
    head = entry.head()
    if not head:
        raise _Reject("empty file (0 bytes)")
    fmt = _sniff(head, allow_gzip=True)
    if head[:2] == b"\x1f\x8b":
        head = _gunzip_head(head)
    if fmt == "png":
        w, h, depth, ctype = _png_header(head)
        return {"format": "PNG", "rows": h, "cols": w, "bit_depth": depth, "frames": 1,
                "mode": _PNG_COLOUR.get(ctype, "?")}
    if fmt == "jpeg":
        data = head if len(head) < HEAD_BYTES else entry.read(limits)
        w, h, depth, comps = _jpeg_header(data)
        return {"format": "JPEG", "rows": h, "cols": w, "bit_depth": depth, "frames": 1, "samples_per_pixel": comps}
    if fmt == "nifti":
        import nibabel as nib

        n1 = 348 in (struct.unpack("<i", head[:4])[0], struct.unpack(">i", head[:4])[0])
        hdr = (nib.Nifti1Header if n1 else nib.Nifti2Header).from_fileobj(_io.BytesIO(head))
        shape = [int(v) for v in hdr.get_data_shape()]
        return {"format": "NIfTI-1" if n1 else "NIfTI-2", "nifti_shape": shape,
                "voxel_size": [float(z) for z in hdr.get_zooms()], "dtype": str(hdr.get_data_dtype()),
                "rows": shape[1] if len(shape) > 1 else 1, "cols": shape[0],
                "frames": shape[2] if len(shape) > 2 else 1}
    data = entry.read(limits)
    if fmt == "dicom":
        if data[:2] == b"\x1f\x8b":
            data = _gunzip(data, limits.max_decoded_bytes)
        ds = _read_dicom(data, header_only=True)
        meta = privacy.safe_metadata(ds)
        meta["format"] = "DICOM"
        return meta
    if fmt == "tiff":
        import tifffile

        with tifffile.TiffFile(_io.BytesIO(data)) as tif:
            page = tif.pages[0]
            return {"format": "TIFF", "rows": int(page.imagelength), "cols": int(page.imagewidth),
                    "frames": len(tif.pages), "dtype": str(page.dtype),
                    "bit_depth": int(page.bitspersample),
                    "photometric": getattr(page.photometric, "name", str(page.photometric)),
                    "compression": getattr(page.compression, "name", str(page.compression))}
    if fmt == "zip":
        declared = _eocd_entry_count(data)
        if declared is not None and declared > limits.zip_max_entries:
            raise _Reject(f"ZIP has {declared} entries (limit {limits.zip_max_entries})")
        try:
            with zipfile.ZipFile(_io.BytesIO(data)) as zf:
                infos = zf.infolist()
        except Exception:
            raise _Reject("damaged ZIP archive (central directory unreadable)") from None
        return {"format": "ZIP", "entries": len(infos), "uncompressed_bytes": sum(i.file_size for i in infos)}
    raise _Reject(f"not an image: unrecognised content ({_describe_unknown(data)})")
