"""What may leave a medical file: the metadata allow-list and identifier handling.

Rule: **allow-list, never block-list.** Only the keys in :data:`SAFE_METADATA_KEYS` ever
enter :attr:`analysis.image.Image.metadata`; DICOM values come from the fixed keyword map
:data:`SAFE_DICOM_TAGS`. Everything else (names, IDs, birth dates, sex, age, institution,
physicians, operators, accession numbers, device serials, station names, every UID, every
date and time) stays out.

:data:`IDENTIFYING_KEYWORDS` / :func:`is_identifying_keyword` describe what is identifying,
for tests and for a future de-identifier. :func:`pseudonym` is a salted (keyed) hash for
the rare place where a stable stand-in for an identifier is needed (e.g. grouping by
patient without showing who).

Free-text tags that are allowed (series / study description) are cleaned: control
characters removed, length capped, and any identifying value of the same dataset
(patient name parts, IDs, accession number, dates, institution) found inside them is
replaced by ``[removed]``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from typing import Any, Iterable, Mapping

__all__ = [
    "SAFE_DICOM_TAGS",
    "SAFE_METADATA_KEYS",
    "IDENTIFYING_KEYWORDS",
    "is_identifying_keyword",
    "safe_metadata",
    "restrict",
    "pseudonym",
    "clean_text",
    "uid_name",
    "identifying_values",
]

#: Output key -> DICOM keyword (top-level elements only).
SAFE_DICOM_TAGS: dict[str, str] = {
    "modality": "Modality",
    "manufacturer": "Manufacturer",
    "model": "ManufacturerModelName",
    "body_part": "BodyPartExamined",
    "rows": "Rows",
    "cols": "Columns",
    "frames": "NumberOfFrames",
    "samples_per_pixel": "SamplesPerPixel",
    "pixel_spacing": "PixelSpacing",
    "imager_pixel_spacing": "ImagerPixelSpacing",
    "slice_thickness": "SliceThickness",
    "spacing_between_slices": "SpacingBetweenSlices",
    "bits_allocated": "BitsAllocated",
    "bits_stored": "BitsStored",
    "pixel_representation": "PixelRepresentation",
    "photometric": "PhotometricInterpretation",
    "kvp": "KVP",
    "window_center": "WindowCenter",
    "window_width": "WindowWidth",
    "rescale_slope": "RescaleSlope",
    "rescale_intercept": "RescaleIntercept",
    "rescale_type": "RescaleType",
    "series_description": "SeriesDescription",
    "study_description": "StudyDescription",
    "image_type": "ImageType",
    "burned_in_annotation": "BurnedInAnnotation",
    "lossy_compression": "LossyImageCompression",
    "series_number": "SeriesNumber",
    "instance_number": "InstanceNumber",
    "echo_time": "EchoTime",
    "repetition_time": "RepetitionTime",
    "magnetic_field_strength": "MagneticFieldStrength",
    "pet_units": "Units",
    "dose_units": "DoseUnits",
    "dose_grid_scaling": "DoseGridScaling",
    "convolution_kernel": "ConvolutionKernel",
}

#: Every key allowed in ``Image.metadata`` (DICOM keys above plus loader-generated keys).
SAFE_METADATA_KEYS: frozenset[str] = frozenset(SAFE_DICOM_TAGS) | frozenset({
    "sop_class",          # SOP Class *name* (e.g. "CT Image Storage"), never the UID
    "transfer_syntax",    # transfer syntax *name*
    "format",             # container format: DICOM, PNG, JPEG, TIFF, NIfTI
    "mode",               # PIL mode of the file (L, I;16, RGB, P ...)
    "bit_depth",          # bits per sample of non-DICOM files
    "dtype",              # numpy dtype as stored
    "compression",        # TIFF / NIfTI compression name
    "resolution_unit",    # TIFF resolution unit used for spacing
    "nifti_shape",        # full voxel array shape of a NIfTI file
    "voxel_size",         # NIfTI zooms
    "orientation",        # how planes were laid out (NIfTI)
    "series_files",       # number of files stacked into a volume
    "entries",            # number of files in a ZIP (read_metadata)
    "uncompressed_bytes", # declared total size of a ZIP (read_metadata)
    "slice_positions",    # "regular" / "irregular" / "instance number"
    "notes",              # loader notes (plain text written by MedLens, never file text)
})

#: DICOM keywords that identify (directly or as quasi-identifiers) a person, place,
#: device or study. Not exhaustive on purpose: :func:`is_identifying_keyword` also
#: catches every UID, date, time and person-name element by rule.
IDENTIFYING_KEYWORDS: frozenset[str] = frozenset({
    "PatientName", "PatientID", "IssuerOfPatientID", "OtherPatientIDs", "OtherPatientIDsSequence",
    "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName", "PatientBirthDate",
    "PatientBirthTime", "PatientSex", "PatientAge", "PatientSize", "PatientWeight",
    "PatientAddress", "PatientTelephoneNumbers", "PatientComments", "EthnicGroup",
    "MilitaryRank", "BranchOfService", "Occupation", "MedicalRecordLocator",
    "PatientReligiousPreference", "AdditionalPatientHistory", "PregnancyStatus",
    "ResponsiblePerson", "ResponsibleOrganization", "PatientInsurancePlanCodeSequence",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "InstitutionCodeSequence", "ReferringPhysicianName", "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers", "PerformingPhysicianName", "OperatorsName",
    "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "RequestingPhysician",
    "ScheduledPerformingPhysicianName", "ReviewerName", "PersonName", "ContentCreatorName",
    "AccessionNumber", "StudyID", "RequestedProcedureID", "PerformedProcedureStepID",
    "ScheduledProcedureStepID", "AdmissionID", "AdmittingDiagnosesDescription",
    "DeviceSerialNumber", "StationName", "DetectorID", "DeviceUID",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "MediaStorageSOPInstanceUID",
    "FrameOfReferenceUID", "ReferencedSOPInstanceUID", "IrradiationEventUID",
    "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "InstanceCreationDate",
    "StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime", "AcquisitionDateTime",
    "InstanceCreationTime", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "RequestAttributesSequence", "ReferencedPatientSequence", "ReferencedStudySequence",
    "ProtocolName", "ImageComments", "StudyComments", "TextValue",
})

_IDENT_VRS = {"PN", "DA", "TM", "DT", "UI"}
_IDENT_WORDS = ("Patient", "Physician", "Institution", "Operator", "Address", "Telephone",
                "Birth")


def is_identifying_keyword(keyword: str, vr: str | None = None) -> bool:
    """True for keywords that identify a person/place/device/study (by list or by rule).

    Rules: listed in :data:`IDENTIFYING_KEYWORDS`; a PN/DA/TM/DT/UI value representation
    (person names, dates, times, UIDs; looked up in pydicom's dictionary when ``vr`` is
    not given); a keyword ending in ``UID``/``Date``/``DateTime``/``ID``/``IDs``/
    ``SerialNumber``; or one mentioning a patient, physician, institution, operator,
    address, telephone or birth. (``EchoTime`` is a DS duration, not identifying.)
    """
    if keyword in IDENTIFYING_KEYWORDS:
        return True
    if vr is None:
        try:
            from pydicom.datadict import dictionary_VR

            vr = dictionary_VR(keyword)
        except Exception:
            vr = None
    if vr is not None and str(vr) in _IDENT_VRS:
        return True
    if keyword.endswith(("UID", "UIDs", "Date", "DateTime", "ID", "IDs", "SerialNumber")):
        return True
    return any(w in keyword for w in _IDENT_WORDS)


# ---------------------------------------------------------------- value conversion
_CTRL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MAX_TEXT = 128


_SUBSTRING_MIN = 6


def clean_text(text: Any, *, forbidden: Iterable[str] = (), max_len: int = _MAX_TEXT) -> str:
    """A single-line string: control characters removed, length capped, forbidden
    identifier values (case-insensitive, ≥ 3 characters) replaced by ``[removed]``.

    Values of 6 characters or more are removed wherever they occur (an ID glued to other
    text); shorter ones only as whole words, so that a 3-letter name part does not eat into
    ordinary words ("Med" in "Medical")."""
    s = _CTRL.sub(" ", str(text)).strip()
    for word in sorted({w for w in forbidden if w and len(w) >= 3}, key=len, reverse=True):
        pat = re.escape(word) if len(word) >= _SUBSTRING_MIN else rf"(?<![0-9A-Za-z]){re.escape(word)}(?![0-9A-Za-z])"
        s = re.sub(pat, "[removed]", s, flags=re.IGNORECASE)
    if len(s) > max_len:
        s = s[: max_len - 1] + "…"
    return s


def _plain(value: Any, forbidden: Iterable[str]) -> Any:
    """pydicom value -> plain JSON-able Python (float/int/str/list), or None."""
    from pydicom.multival import MultiValue
    from pydicom.valuerep import DSdecimal, DSfloat, IS

    if value is None:
        return None
    if isinstance(value, (MultiValue, list, tuple)):
        items = [_plain(v, forbidden) for v in value]
        items = [v for v in items if v is not None]
        return items[:16] or None
    if isinstance(value, bool):
        return value
    if isinstance(value, (IS, int)):
        return int(value)
    if isinstance(value, (DSfloat, DSdecimal, float)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, (bytes, bytearray)):
        return None  # binary values never enter metadata
    s = clean_text(value, forbidden=forbidden)
    return s or None


def identifying_values(ds: Any) -> list[str]:
    """String values of identifying top-level elements of ``ds`` (and name components),
    used to scrub free text. Never returned to callers outside MedLens' own checks."""
    out: list[str] = []
    for keyword in ("PatientName", "PatientID", "OtherPatientIDs", "OtherPatientNames",
                    "PatientBirthDate", "AccessionNumber", "InstitutionName",
                    "InstitutionAddress", "ReferringPhysicianName", "PerformingPhysicianName",
                    "OperatorsName", "StudyID", "DeviceSerialNumber", "StationName",
                    "PatientBirthName", "PatientMotherBirthName", "StudyDate", "SeriesDate"):
        try:
            v = ds.get(keyword)
        except Exception:
            continue
        if v is None:
            continue
        vals = list(v) if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue" else [v]
        for item in vals:
            s = str(item).strip()
            if not s:
                continue
            out.append(s)
            out.extend(p for p in re.split(r"[\^=\s,]+", s) if len(p) >= 3)
    return out


def safe_metadata(ds: Any) -> dict[str, Any]:
    """Allow-listed, non-identifying metadata of a pydicom ``Dataset`` (header only).

    Reads top-level elements by keyword only, so nothing identifying can slip in through
    sequences or private tags. SOP class and transfer syntax are reported by *name*;
    unknown or private UIDs are reported as ``"private"``.
    """
    forbidden = identifying_values(ds)
    meta: dict[str, Any] = {}
    for key, keyword in SAFE_DICOM_TAGS.items():
        try:
            if keyword not in ds:
                continue
            value = _plain(ds[keyword].value, forbidden)
        except Exception:  # malformed value in a forced read: leave it out
            continue
        if value is not None:
            meta[key] = value
    sop = None
    try:
        sop = ds.get("SOPClassUID")
        if sop is None and getattr(ds, "file_meta", None) is not None:
            sop = ds.file_meta.get("MediaStorageSOPClassUID")
    except Exception:
        sop = None
    if sop:
        meta["sop_class"] = uid_name(sop)
    try:
        ts = ds.file_meta.get("TransferSyntaxUID") if getattr(ds, "file_meta", None) is not None else None
    except Exception:
        ts = None
    if ts:
        meta["transfer_syntax"] = uid_name(ts)
    return meta


def uid_name(uid: Any) -> str:
    """Registered name of a standard UID; never the UID string of anything else."""
    from pydicom.uid import UID

    try:
        u = UID(str(uid).strip().rstrip("\x00"))
        name = u.name
    except Exception:
        return "private"
    if not name or name == str(u) or not u.is_valid or not str(u).startswith("1.2.840.10008."):
        return "private"
    return clean_text(name)


def restrict(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Drop every key not in :data:`SAFE_METADATA_KEYS` (the final gate of every loader)."""
    return {k: v for k, v in meta.items() if k in SAFE_METADATA_KEYS}


def pseudonym(value: Any, salt: bytes | str, *, length: int = 16) -> str:
    """Stable, salted stand-in for an identifier: ``"anon-" + HMAC-SHA256(salt, value)[:length]``.

    The same value and salt always give the same pseudonym; without the salt the value
    cannot be recovered or confirmed by hashing guesses. ``value`` is normalised (``str``,
    surrounding whitespace stripped). An empty salt is refused.
    """
    if isinstance(salt, str):
        salt = salt.encode("utf-8")
    if not salt:
        raise ValueError("pseudonym() needs a non-empty secret salt")
    if not 4 <= length <= 64:
        raise ValueError("length must be between 4 and 64 hex digits")
    v = value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)
    mac = hmac.new(salt, v.strip().encode("utf-8"), hashlib.sha256).hexdigest()
    return "anon-" + mac[:length]
