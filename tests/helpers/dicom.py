"""Make small, valid DICOM files in tests (nothing binary is committed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

CANARIES = {
    "PatientName": "CANARY^ZEBRA",
    "PatientID": "CANARY-ID-7731",
    "PatientBirthDate": "19010203",
    "InstitutionName": "CANARY GENERAL HOSPITAL",
    "ReferringPhysicianName": "CANARY^DOCTOR",
    "AccessionNumber": "CANARYACC99",
}


def ct_dicom(path: Path | None = None, *, hu: np.ndarray | None = None, spacing=(0.5, 0.75), canaries: bool = True,
             intercept: float = -1024.0, slope: float = 1.0, photometric: str = "MONOCHROME2") -> bytes:
    """A CT image whose stored values map to ``hu`` through RescaleSlope/Intercept."""
    if hu is None:
        rr, cc = np.mgrid[:64, :64]
        hu = np.where((rr - 32) ** 2 + (cc - 32) ** 2 < 20 ** 2, 60.0, -1000.0)
    stored = np.round((np.asarray(hu, np.float64) - intercept) / slope).astype(np.int16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path or "mem.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    if canaries:
        for k, v in CANARIES.items():
            setattr(ds, k, v)
    ds.Rows, ds.Columns = stored.shape
    ds.PixelSpacing = [str(spacing[0]), str(spacing[1])]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = str(intercept)
    ds.RescaleSlope = str(slope)
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.PixelData = stored.tobytes()
    from io import BytesIO

    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data
