"""Exports of a processed image and its numbers.

* :func:`png16_bytes` — 16-bit greyscale PNG: physical values mapped linearly to
  0..65535 over a stated range; the mapping is written in the PNG's text chunks so
  values can be recovered (:func:`read_png16`).
* :func:`deidentified_dicom_bytes` — a *derived* DICOM (Secondary Capture) built **from
  scratch** from the pixels and an allow-list of technical values only. Nothing is copied
  from the source file: new random UIDs, ``ImageType = DERIVED\\SECONDARY``, empty
  patient/study identity attributes (type 2, present but empty), no dates or times,
  ``PatientIdentityRemoved = YES`` and a ``DeidentificationMethod`` (+ code sequence
  DCM 113100 "Basic Application Confidentiality Profile"). Pixel values are stored as
  integers with ``RescaleSlope/Intercept`` so a reader applying the modality LUT recovers
  the physical values (exactly for integer data, to ± slope/2 otherwise).
* :func:`metrics_csv_bytes` — a metrics table as CSV.
* :func:`pipeline_json_bytes` — a pipeline preset (see :mod:`analysis.pipeline`).
"""

from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "png16_bytes", "read_png16", "deidentified_dicom_bytes", "stored_values", "metrics_csv_bytes",
    "pipeline_json_bytes", "DEID_METHOD", "SECONDARY_CAPTURE",
]

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
#: LO (≤ 64 characters)
DEID_METHOD = "MedLens derived export: pixels only, nothing copied, new UIDs"
_MAX_TEXT = 64


# ----------------------------------------------------------------------------- PNG
def _value_range(a: np.ndarray, value_range: tuple[float, float] | None) -> tuple[float, float]:
    if value_range is not None:
        lo, hi = float(value_range[0]), float(value_range[1])
    else:
        f = a[np.isfinite(a)]
        lo, hi = (float(f.min()), float(f.max())) if f.size else (0.0, 1.0)
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def png16_bytes(pixels: np.ndarray, *, value_range: tuple[float, float] | None = None, units: str = "",
                compress_level: int = 1) -> bytes:
    """16-bit greyscale PNG of a 2-D array in physical units.

    ``stored = round((value − lo) / (hi − lo) · 65535)`` with ``(lo, hi)`` = ``value_range``
    (default: the data's min–max); values outside are clipped. The text chunks
    ``medlens:lo``, ``medlens:hi`` and ``medlens:units`` record the mapping.
    """
    from PIL import Image as PILImage
    from PIL import PngImagePlugin

    a = np.asarray(pixels, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"png16 export needs a 2-D greyscale image; got shape {a.shape}")
    lo, hi = _value_range(a, value_range)
    u = np.clip((np.nan_to_num(a, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    stored = np.round(u * 65535.0).astype(np.uint16)
    img = PILImage.fromarray(stored)  # mode I;16
    info = PngImagePlugin.PngInfo()
    info.add_text("medlens:lo", repr(lo))
    info.add_text("medlens:hi", repr(hi))
    info.add_text("medlens:units", _ascii(units))
    info.add_text("medlens:mapping", "value = lo + stored / 65535 * (hi - lo)")
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info, compress_level=int(compress_level))
    return buf.getvalue()


def read_png16(data: bytes) -> tuple[np.ndarray, dict[str, str]]:
    """Read a PNG written by :func:`png16_bytes`: (values in physical units, text chunks)."""
    from PIL import Image as PILImage

    img = PILImage.open(io.BytesIO(data))
    stored = np.asarray(img).astype(np.float64)
    text = dict(getattr(img, "text", {}) or {})
    lo, hi = float(text.get("medlens:lo", 0.0)), float(text.get("medlens:hi", 65535.0))
    return lo + stored / 65535.0 * (hi - lo), text


def _ascii(s: Any, limit: int = _MAX_TEXT) -> str:
    t = "".join(ch for ch in str(s) if 32 <= ord(ch) < 127 and ch != "\\")
    return t[:limit]


# ----------------------------------------------------------------------------- DICOM
def stored_values(pixels: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(stored integer array, slope, intercept) such that ``stored·slope + intercept``
    reproduces ``pixels``: exact (slope 1) for integer-valued data that fits int16/uint16,
    else uint16 over the data range (error ≤ slope/2)."""
    a = np.asarray(pixels, dtype=np.float64)
    f = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(f.min()), float(f.max())
    if np.array_equal(f, np.round(f)):
        if lo >= -32768 and hi <= 32767:
            return f.astype(np.int16), 1.0, 0.0
        if lo >= 0 and hi <= 65535:
            return f.astype(np.uint16), 1.0, 0.0
    span = hi - lo if hi > lo else 1.0
    slope = span / 65535.0
    stored = np.clip(np.round((f - lo) / slope), 0, 65535).astype(np.uint16)
    return stored, slope, lo


def _ds(value: float) -> str:
    """Decimal String (≤ 16 characters) for slope/intercept/window values."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value))


def deidentified_dicom_bytes(
    pixels: np.ndarray,
    *,
    modality: str = "OT",
    units: str = "",
    spacing: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    invert: bool = False,
    derivation: str = "",
    series_description: str = "MedLens derived image",
) -> bytes:
    """A de-identified derived DICOM (Secondary Capture Image Storage) of a 2-D image in
    physical units. Only the arguments (all technical) enter the file; see the module
    docstring for what is set and what is left empty."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DSequence
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

    a = np.asarray(pixels)
    if a.ndim != 2:
        raise ValueError(f"DICOM export needs a 2-D greyscale image; got shape {a.shape}")
    stored, slope, intercept = stored_values(a)
    modality = _ascii(modality, 16).upper() or "OT"

    meta = FileMetaDataset()
    sop_uid = generate_uid()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MEDLENS_EXPORT"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = sop_uid
    # Patient / study identity: type 2 (must be present) and deliberately empty.
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
               "ReferringPhysicianName", "StudyID", "AccessionNumber"):
        setattr(ds, kw, "")
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEID_METHOD
    code = Dataset()
    code.CodeValue = "113100"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = DSequence([code])
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Modality = modality
    ds.ConversionType = "WSD"  # workstation
    ds.Manufacturer = "MedLens"
    ds.SeriesDescription = _ascii(series_description)
    ds.BurnedInAnnotation = "NO"
    if derivation:
        ds.DerivationDescription = _ascii(derivation, 1024)
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if invert else "MONOCHROME2"
    ds.Rows, ds.Columns = (int(s) for s in stored.shape)
    if spacing is not None:
        ds.PixelSpacing = [_ds(spacing[0]), _ds(spacing[1])]
    bits = stored.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if stored.dtype.kind == "i" else 0
    ds.RescaleIntercept = _ds(intercept)
    ds.RescaleSlope = _ds(slope)
    ds.RescaleType = "HU" if units == "HU" else "US"
    if window is not None and np.isfinite(window[0]) and np.isfinite(window[1]) and window[1] >= 1:
        ds.WindowCenter = _ds(window[0])
        ds.WindowWidth = _ds(window[1])
    ds.PixelData = np.ascontiguousarray(stored.astype(stored.dtype.newbyteorder("<"))).tobytes()

    # slope/intercept were written as DS strings (≤ 16 chars): re-derive the stored values
    # with the written numbers so the modality LUT reproduces the pixels as closely as possible.
    w_slope, w_icpt = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    if (w_slope, w_icpt) != (slope, intercept):
        f = np.nan_to_num(np.asarray(a, dtype=np.float64))
        info = np.iinfo(stored.dtype)
        stored = np.clip(np.round((f - w_icpt) / w_slope), info.min, info.max).astype(stored.dtype)
        ds.PixelData = np.ascontiguousarray(stored.astype(stored.dtype.newbyteorder("<"))).tobytes()

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# ----------------------------------------------------------------------------- tables / presets
def metrics_csv_bytes(rows: Sequence[Mapping[str, Any]] | Any) -> bytes:
    """CSV (UTF-8) of a list of metric rows or a DataFrame."""
    import pandas as pd

    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    return df.to_csv(index=False).encode("utf-8")


def pipeline_json_bytes(pipeline: Any) -> bytes:
    """The JSON preset of an :class:`analysis.pipeline.Pipeline` (or list of steps)."""
    from analysis.pipeline import Pipeline

    p = pipeline if isinstance(pipeline, Pipeline) else Pipeline.of(pipeline)
    return p.to_json().encode("utf-8")
