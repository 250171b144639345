"""No identifier leaves a file: allow-listed metadata only, canaries never seen, pseudonyms keyed."""

from __future__ import annotations

import dataclasses
import io
import re
import warnings
import zipfile

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from analysis import privacy
from analysis.io import LoadError, load_bytes, load_many, read_metadata
from analysis.privacy import (IDENTIFYING_KEYWORDS, SAFE_DICOM_TAGS, SAFE_METADATA_KEYS, is_identifying_keyword,
                              pseudonym, restrict, safe_metadata)
from tests.analysis.test_io_dicom import TEST_FILES, make_dicom

CANARY = {
    "PatientName": "CANARYSURNAME^CANARYGIVEN",
    "PatientID": "CANARY-PID-4471",
    "PatientBirthDate": "19230417",
    "PatientAge": "077Y",
    "PatientAddress": "1 CANARY LANE",
    "OtherPatientIDs": "CANARY-OTHER-ID",
    "InstitutionName": "CANARY MEMORIAL HOSPITAL",
    "InstitutionAddress": "CANARY STREET 9",
    "ReferringPhysicianName": "CANARYDOC^REFERRING",
    "PerformingPhysicianName": "CANARYDOC^PERFORMING",
    "OperatorsName": "CANARYOPERATOR",
    "AccessionNumber": "CANARYACC77",
    "StudyID": "CANARYSTUDY",
    "DeviceSerialNumber": "CANARY-SERIAL-991",
    "StationName": "CANARYSTATION",
    "StudyDate": "19990909",
    "SeriesDate": "19990908",
    "StudyTime": "235959.123",
    "StudyInstanceUID": "1.2.826.0.1.3680043.99.777001",
    "FrameOfReferenceUID": "1.2.826.0.1.3680043.99.777002",
    "ImageComments": "CANARY-COMMENT",
    "ProtocolName": "CANARY-PROTOCOL",
}
SERIES_UID = "1.2.826.0.1.3680043.99.777003"
SOP_UID = "1.2.826.0.1.3680043.99.777004"
CANARY_STRINGS = [v for v in CANARY.values()] + [SERIES_UID, SOP_UID, "CANARY"]
UID_PATTERN = re.compile(r"\b\d+(\.\d+){3,}\b")


def canary_dicom(**extra) -> bytes:
    req = Dataset()
    req.RequestedProcedureID = "CANARY-RPID"
    tags = dict(CANARY, SeriesInstanceUID=SERIES_UID, SOPInstanceUID=SOP_UID,
                SeriesDescription="CHEST CANARYSURNAME^CANARYGIVEN", StudyDescription="CT CHEST",
                RequestAttributesSequence=Sequence([req]), RescaleIntercept="-1024", RescaleSlope="1",
                WindowCenter="40", WindowWidth="400", PixelSpacing=[0.5, 0.5])
    tags.update(extra)
    return make_dicom(np.arange(64, dtype=np.int16).reshape(8, 8), **tags)


def _private(data: bytes) -> bytes:
    """Add a private tag holding a canary."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data))
    block = ds.private_block(0x0011, "CANARY CREATOR", create=True)
    block.add_new(0x01, "LO", "CANARY-PRIVATE-VALUE")
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def _all_text(img) -> str:
    parts = []
    for f in dataclasses.fields(img):
        v = getattr(img, f.name)
        if not isinstance(v, np.ndarray):
            parts.append(repr(v))
    return " ".join(parts)


def _assert_clean(text: str) -> None:
    for c in CANARY_STRINGS:
        assert c not in text, c
    assert not UID_PATTERN.search(text), UID_PATTERN.search(text)


# ---------------------------------------------------------------------------- images
def test_canaries_never_reach_image_fields_or_metadata():
    data = _private(canary_dicom())
    (img,) = load_bytes(data, "scan.dcm")
    _assert_clean(_all_text(img))
    assert set(img.metadata) <= SAFE_METADATA_KEYS
    # allowed values survive, free text is scrubbed of the patient's name
    assert img.metadata["series_description"] == "CHEST [removed]"
    assert img.metadata["study_description"] == "CT CHEST"
    assert img.metadata["sop_class"] == "CT Image Storage" and img.units == "HU" and img.window == (40.0, 400.0)
    _assert_clean(repr(read_metadata(data, "scan.dcm")))


def test_canaries_never_reach_series_volumes_or_multiframes():
    files = [canary_dicom(SOPInstanceUID=f"{SOP_UID}.{k}", InstanceNumber=k + 1,
                          ImagePositionPatient=[0, 0, float(k)], ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
             for k in range(3)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, d in enumerate(files):
            zf.writestr(f"series/{k}.dcm", d)
    (vol,) = load_bytes(buf.getvalue(), "study.zip")
    assert vol.pixels.shape == (3, 8, 8)
    _assert_clean(_all_text(vol))
    _assert_clean(_all_text(vol.plane(1)))
    mf = make_dicom(np.zeros((2, 4, 4), np.int16), **CANARY)
    _assert_clean(_all_text(load_bytes(mf, "mf.dcm")[0]))


def test_errors_carry_no_patient_data():
    for bad in (canary_dicom(Rows=0), canary_dicom(BitsAllocated=12), canary_dicom()[:-10],
                canary_dicom(RescaleSlope="NaN"), canary_dicom(PixelData=None)):
        images, errors = load_many([("x.dcm", bad)])
        assert not images and len(errors) == 1
        _assert_clean(errors[0].reason)
    with pytest.raises(LoadError) as info:
        load_bytes(canary_dicom(Rows=0), "x.dcm")
    _assert_clean(str(info.value))


def test_malformed_values_are_not_echoed_into_logs_or_warnings(caplog, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = make_dicom(BodyPartExamined="CANARY-PART", SeriesNumber="7654321")
    data = data.replace(b"7654321 ", b"CANARY7 ")  # an IS value pydicom cannot parse (it would quote it)
    monkeypatch.setattr(pydicom.config.settings, "reading_validation_mode", pydicom.config.WARN)
    caplog.clear()  # the writer's own warnings above do not count
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("DEBUG"):
        warnings.simplefilter("always")
        (img,) = load_bytes(data, "x.dcm")
        read_metadata(data, "x.dcm")
    text = caplog.text + " ".join(str(w.message) for w in caught)
    assert "CANARY" not in text
    assert img.metadata["body_part"] == "CANARY-PART"  # allow-listed value, kept in metadata only


def test_pydicom_test_files_metadata_is_allow_listed_and_uid_free():
    checked = 0
    for path in sorted(TEST_FILES.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        try:
            (img,) = load_bytes(data, path.name)
        except LoadError:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True) if data[:2] != b"\x1f\x8b" else None
        text = repr(img.metadata)
        assert set(img.metadata) <= SAFE_METADATA_KEYS
        assert not UID_PATTERN.search(text), (path.name, UID_PATTERN.search(text))
        if ds is not None:
            for kw in ("PatientName", "PatientID", "InstitutionName", "AccessionNumber"):
                value = str(ds.get(kw, "") or "").strip()
                if len(value) >= 3:
                    assert value not in text, (path.name, kw)
        checked += 1
    assert checked >= 80


# ---------------------------------------------------------------------------- the allow-list itself
def test_allow_list_and_identifying_keywords_do_not_overlap():
    assert not set(SAFE_DICOM_TAGS.values()) & IDENTIFYING_KEYWORDS
    for kw in SAFE_DICOM_TAGS.values():
        vr = pydicom.datadict.dictionary_VR(kw)
        assert not is_identifying_keyword(kw, vr), kw
    for kw in IDENTIFYING_KEYWORDS:
        assert is_identifying_keyword(kw), kw


@pytest.mark.parametrize("kw, vr, expected", [
    ("PatientWeight", "DS", True), ("AcquisitionDateTime", "DT", True), ("FrameOfReferenceUID", "UI", True),
    ("ConsultingPhysicianName", "PN", True), ("IssuerOfAdmissionID", "LO", True), ("ContentTime", "TM", True),
    ("Rows", "US", False), ("ManufacturerModelName", "LO", False), ("SeriesDescription", "LO", False),
    ("RescaleIntercept", "DS", False),
])
def test_identifying_keyword_rules(kw, vr, expected):
    assert is_identifying_keyword(kw, vr) is expected


def test_safe_metadata_reports_names_not_uids():
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.Modality = "CT"
    ds.PatientName = "CANARYSURNAME^CANARYGIVEN"
    assert safe_metadata(ds) == {"modality": "CT", "sop_class": "CT Image Storage"}
    ds.SOPClassUID = "1.2.826.0.1.3680043.99.5"  # private SOP class: never echoed
    assert safe_metadata(ds)["sop_class"] == "private"


def test_restrict_drops_unknown_keys():
    assert restrict({"modality": "CT", "PatientName": "X", "patient_id": "Y", "notes": []}) == \
        {"modality": "CT", "notes": []}


def test_clean_text_scrubs_identifiers_and_control_characters():
    s = privacy.clean_text("Head\x00 CT for canary smith\nreview", forbidden=["CANARY SMITH", "ab"])
    assert s == "Head  CT for [removed] review"
    assert len(privacy.clean_text("x" * 500)) == 128


def test_clean_text_short_name_parts_only_as_whole_words():
    # a 3-letter name part must not eat into ordinary words; long IDs go wherever they are glued
    forbidden = ["Med", "Li", "AB123456"]
    assert privacy.clean_text("GE Medical Systems", forbidden=forbidden) == "GE Medical Systems"
    assert privacy.clean_text("brain MR for med, li", forbidden=forbidden) == "brain MR for [removed], li"
    assert privacy.clean_text("series_AB123456x", forbidden=forbidden) == "series_[removed]x"
    assert privacy.clean_text("MED-scan", forbidden=forbidden) == "[removed]-scan"


# ---------------------------------------------------------------------------- pseudonyms
def test_pseudonym_is_keyed_stable_and_not_the_value():
    a = pseudonym("CANARY-PID-4471", "salt-1")
    assert a == pseudonym(" CANARY-PID-4471 ", b"salt-1")  # normalised, bytes or str salt
    assert a != pseudonym("CANARY-PID-4471", "salt-2")
    assert a != pseudonym("CANARY-PID-4472", "salt-1")
    assert a.startswith("anon-") and len(a) == 5 + 16 and "CANARY" not in a
    assert len(pseudonym("x", "s", length=32)) == 5 + 32
    with pytest.raises(ValueError):
        pseudonym("x", "")
