"""Write a 2-D array as a valid DICOM Part 10 file (explicit VR little endian).

Used by the sample-dataset builder and by tests that need real DICOM files with known
content. UIDs are derived deterministically from caller-supplied strings
(:func:`deterministic_uid`), so building twice gives byte-identical files.

``pixels`` are given in **physical units** (HU for CT); they are converted to stored
values with ``stored = round((pixels - rescale_intercept) / rescale_slope)`` so a reader
applying the modality LUT recovers them (up to rounding).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    PYDICOM_IMPLEMENTATION_UID,
    generate_uid,
)

__all__ = ["SOP_CLASS", "deterministic_uid", "write_dicom", "dicom_bytes", "read_physical"]

#: SOP Class UID per modality (anything else → Secondary Capture)
SOP_CLASS: dict[str, str] = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "PT": "1.2.840.10008.5.1.4.1.1.128",  # Positron Emission Tomography Image Storage
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "NM": "1.2.840.10008.5.1.4.1.1.20",  # Nuclear Medicine Image Storage
    "US": "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
#: UID root of pydicom (organisational root for generated UIDs)
UID_PREFIX = "1.2.826.0.1.3680043.8.498."


def deterministic_uid(*parts: Any) -> str:
    """A valid UID derived only from ``parts`` (same parts → same UID)."""
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=["medlens"] + [str(p) for p in parts])


def _stored_values(pixels: np.ndarray, slope: float, intercept: float, dtype: Any | None) -> np.ndarray:
    a = np.asarray(pixels)
    if a.ndim != 2:
        raise ValueError(f"pixels must be 2-D, got shape {a.shape}")
    if slope == 0:
        raise ValueError("rescale_slope must be non-zero")
    stored = np.rint((a.astype(np.float64) - intercept) / slope)
    if dtype is None:
        dtype = np.int16 if stored.min() < 0 else np.uint16
    dtype = np.dtype(dtype)
    info = np.iinfo(dtype)
    if stored.min() < info.min or stored.max() > info.max:
        raise ValueError(
            f"pixels do not fit {dtype} after rescale (range {stored.min()}..{stored.max()}); "
            "adjust rescale_slope/rescale_intercept"
        )
    return stored.astype(dtype)


def dicom_bytes(
    pixels: np.ndarray,
    *,
    modality: str,
    spacing: tuple[float, float] | None,
    rescale_slope: float = 1.0,
    rescale_intercept: float = 0.0,
    window: tuple[float, float] | None = None,
    photometric: str = "MONOCHROME2",
    extra: Mapping[str, Any] | None = None,
    series_uid: str | None = None,
    study_uid: str | None = None,
    frame_uid: str | None = None,
    instance_number: int | None = None,
    position: Sequence[float] | None = None,
    orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    slice_thickness: float | None = None,
    uid_seed: str = "",
    dtype: Any | None = None,
    patient_name: str = "Phantom^Anonymous",
    patient_id: str = "PHANTOM",
    rescale_type: str | None = None,
    bits_stored: int | None = None,
) -> bytes:
    """The bytes of a DICOM file (see :func:`write_dicom` for the parameters)."""
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be MONOCHROME1 or MONOCHROME2, got {photometric!r}")
    modality = modality.upper()
    stored = _stored_values(pixels, float(rescale_slope), float(rescale_intercept), dtype)
    sop_class = SOP_CLASS.get(modality, SECONDARY_CAPTURE)
    seed = uid_seed or f"{modality}:{stored.shape}:{stored.tobytes()[:64].hex()}"
    study_uid = study_uid or deterministic_uid("study", seed)
    series_uid = series_uid or deterministic_uid("series", seed)
    frame_uid = frame_uid or deterministic_uid("frame", series_uid)
    sop_uid = deterministic_uid("instance", seed, instance_number)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MEDLENS_SAMPLE"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] if modality in ("CT", "MR", "PT") else ["DERIVED", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = "20240101"
    ds.SeriesDate = "20240101"
    ds.ContentDate = "20240101"
    ds.StudyTime = "120000"
    ds.SeriesTime = "120000"
    ds.ContentTime = "120000"
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.Manufacturer = "MedLens synthetic"
    ds.ReferringPhysicianName = ""
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = int(instance_number) if instance_number is not None else 1
    if sop_class == SECONDARY_CAPTURE:
        ds.ConversionType = "SYN"
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    if modality in ("CT", "MR", "PT", "NM") or position is not None:
        ds.ImagePositionPatient = [float(v) for v in (position if position is not None else (0.0, 0.0, 0.0))]
        ds.ImageOrientationPatient = [float(v) for v in orientation]
    if slice_thickness is not None:
        ds.SliceThickness = float(slice_thickness)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = (int(s) for s in stored.shape)
    if spacing is not None:
        if modality in ("CR", "DX"):
            ds.ImagerPixelSpacing = [float(spacing[0]), float(spacing[1])]
        ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
    bits = stored.dtype.itemsize * 8
    used = int(bits_stored or bits)
    if not 1 <= used <= bits:
        raise ValueError(f"bits_stored must lie in 1..{bits}, got {bits_stored}")
    if stored.dtype.kind == "u" and stored.max() >= 2 ** used:
        raise ValueError(f"pixels do not fit bits_stored={used}")
    if stored.dtype.kind == "i" and not -(2 ** (used - 1)) <= stored.min() <= stored.max() < 2 ** (used - 1):
        raise ValueError(f"pixels do not fit bits_stored={used}")
    ds.BitsAllocated = bits
    ds.BitsStored = used
    ds.HighBit = used - 1
    ds.PixelRepresentation = 1 if stored.dtype.kind == "i" else 0
    ds.RescaleIntercept = float(rescale_intercept)
    ds.RescaleSlope = float(rescale_slope)
    ds.RescaleType = rescale_type or ("HU" if modality == "CT" else "US")
    if window is not None:
        ds.WindowCenter = float(window[0])
        ds.WindowWidth = float(window[1])
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(stored.astype(stored.dtype.newbyteorder("<"))).tobytes()

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write_dicom(path: str | Path, pixels: np.ndarray, **kwargs: Any) -> Path:
    """Write ``pixels`` (2-D, physical units) as a DICOM file and return the path.

    Parameters
    ----------
    path : str or Path
        Output file (parent folders are created).
    pixels : ndarray
        2-D array in physical units (HU for CT).
    modality : str
        ``CT``, ``MR``, ``PT``, ``CR``, ``NM`` … (selects the SOP Class; others get
        Secondary Capture).
    spacing : (float, float) or None
        PixelSpacing (row, col) in mm.
    rescale_slope, rescale_intercept : float
        Modality LUT; stored = round((pixels - intercept) / slope).
    window : (center, width), optional
        Default VOI window in physical units.
    photometric : {"MONOCHROME2", "MONOCHROME1"}
    extra : mapping, optional
        Further keyword → value attributes (e.g. ``{"KVP": 120, "BodyPartExamined": "HEAD"}``).
    series_uid, study_uid, frame_uid : str, optional
        Shared UIDs for series; generated from ``uid_seed`` otherwise.
    instance_number : int, optional
    position : 3 floats, optional
        ImagePositionPatient (mm).
    slice_thickness : float, optional
    uid_seed : str
        Entropy for the generated UIDs (give a unique, stable string per file).
    dtype : numpy integer dtype, optional
        Stored dtype (default int16 if any stored value is negative, else uint16).
    bits_stored : int, optional
        BitsStored (HighBit follows); default = all allocated bits.
    patient_name, patient_id : str
        Identity tags (synthetic by default).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dicom_bytes(pixels, **kwargs))
    return path


def read_physical(path: str | Path) -> np.ndarray:
    """Read a single-frame greyscale DICOM and apply the modality LUT (float64)."""
    ds = pydicom.dcmread(str(path))
    a = ds.pixel_array.astype(np.float64)
    return a * float(getattr(ds, "RescaleSlope", 1.0)) + float(getattr(ds, "RescaleIntercept", 0.0))
