"""De-identification (PS3.15 Annex E basic profile, analysis.deid) against canary values.

A canary is a unique value planted in an identifying attribute; after de-identification
and writing, none may appear anywhere in the file's bytes.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from analysis import deid
from tests.helpers.dicom import CANARIES, ct_dicom

TEXT_VRS = {"LO", "SH", "LT", "ST", "UT", "UC", "PN", "AE", "CS", "UR"}


def _write(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    meta = getattr(ds, "file_meta", None)
    complete = meta is not None and all(str(meta.get(k, "") or "") for k in ("MediaStorageSOPClassUID",
                                                                           "MediaStorageSOPInstanceUID"))
    ds.save_as(buf, enforce_file_format=complete)  # some pydicom test files have no file meta
    return buf.getvalue()


def _canary_dataset(seed: int = 0) -> tuple[Dataset, dict[str, bytes]]:
    """The canary CT plus a unique canary in every Table E.1-1 attribute pydicom knows
    (text, dates, times, UIDs, binary, sequences), private tags at top level and inside a
    kept sequence, and identifying text inside kept free text."""
    ds = pydicom.dcmread(io.BytesIO(ct_dicom()))
    canaries: dict[str, bytes] = {k: v.encode() for k, v in CANARIES.items()}
    n = 0
    for tag, code in sorted(deid._EXACT.items()):
        if tag >> 16 in (0x0000, 0x0002):
            continue
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            continue
        kw = keyword_for_tag(tag) or f"tag{tag:08X}"
        if kw in CANARIES:
            continue
        n += 1
        if vr in TEXT_VRS:
            val = f"CNRY{n:04d}" if vr != "PN" else f"CNRY{n:04d}^PERSON"
            if vr == "CS":
                val = f"CNRY{n:04d}"
            ds.add_new(tag, vr, val)
            canaries[kw] = f"CNRY{n:04d}".encode()
        elif vr in ("DA", "DT", "TM", "UI"):
            date = f"1{n % 1000:03d}0{1 + n % 9}{10 + n % 18}"
            val = {"DA": date, "DT": date + "101010", "TM": f"{10 + n % 13}{10 + n % 49}{10 + n % 49}.{n:04d}",
                   "UI": f"1.2.999.{seed}.{n}.777"}[vr]
            ds.add_new(tag, vr, val)
            canaries[kw] = val.encode()
        elif vr in ("OB", "UN"):
            val = f"CNRYBIN{n:04d}".encode()
            ds.add_new(tag, vr, val)
            canaries[kw] = val
        elif vr == "SQ":
            item = Dataset()
            item.PatientName = f"CNRY{n:04d}^NESTED"
            item.CodeMeaning = f"CNRYSQ{n:04d}"
            ds.add_new(tag, vr, Sequence([item]))
            canaries[kw + ".item"] = f"CNRY{n:04d}".encode()
            canaries[kw + ".meaning"] = f"CNRYSQ{n:04d}".encode()
    # private elements at top level and inside a sequence the profile keeps
    ds.add_new((0x0009, 0x0010), "LO", "CNRYCREATOR")
    ds.add_new((0x0009, 0x1001), "LO", "CNRYPRIVATE")
    ds.add_new((0x0009, 0x1002), "UN", b"CNRYPRIVBIN")
    kept = Dataset()
    kept.CodeValue = "T-D1100"
    kept.CodingSchemeDesignator = "SRT"
    kept.CodeMeaning = "ZEBRA region"  # a part of PatientName inside kept text
    kept.add_new((0x0011, 0x0010), "LO", "CNRYNESTEDCREATOR")
    kept.add_new((0x0011, 0x1001), "LO", "CNRYNESTEDPRIV")
    kept.PatientName = "CNRYNESTED^NAME"  # the table applies inside sequences too
    kept.EvaluatorName = "CNRYEVAL^NAME"  # a person name Table E.1-1 does not list: safety net
    ds.AnatomicRegionSequence = Sequence([kept])
    ds.Manufacturer = "canary general hospital scanners"  # institution name inside kept text
    canaries.update(CNRYCREATOR=b"CNRYCREATOR", CNRYPRIVATE=b"CNRYPRIVATE", CNRYPRIVBIN=b"CNRYPRIVBIN",
                    nested_creator=b"CNRYNESTEDCREATOR", nested_priv=b"CNRYNESTEDPRIV",
                    nested_name=b"CNRYNESTED", evaluator=b"CNRYEVAL", zebra=b"ZEBRA", hospital=b"CANARY GENERAL HOSPITAL")
    return ds, canaries


def _leaks(data: bytes, canaries: dict[str, bytes]) -> list[str]:
    low = data.lower()
    return [k for k, v in canaries.items() if v.lower() in low]


def test_canary_dataset_really_carries_the_canaries():
    ds, canaries = _canary_dataset()
    raw = _write(ds)
    assert len(canaries) > 300
    # every canary is in the source file: the test below can fail
    assert _leaks(raw, canaries) == list(canaries)


def test_no_canary_survives_in_the_written_file():
    ds, canaries = _canary_dataset()
    out = deid.deidentify(ds, deid.new_uid_map())
    data = _write(out)
    assert _leaks(data, canaries) == []
    back = pydicom.dcmread(io.BytesIO(data))
    assert back.PatientIdentityRemoved == "YES"
    assert "Annex E" in back.DeidentificationMethod
    code = back.DeidentificationMethodCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("113100", "DCM")
    assert back.LongitudinalTemporalInformationModified == "REMOVED"
    # type-2 identity attributes stay present but empty
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "AccessionNumber"):
        assert kw in back and not str(back[kw].value or "")
    # what is not identifying is kept: pixels, geometry, rescale
    np.testing.assert_array_equal(back.pixel_array, pydicom.dcmread(io.BytesIO(ct_dicom())).pixel_array)
    assert [float(x) for x in back.PixelSpacing] == [0.5, 0.75]
    assert back.Modality == "CT" and float(back.RescaleIntercept) == -1024.0
    # identifying text inside kept free text is scrubbed, the rest of the text kept
    assert back.AnatomicRegionSequence[0].CodeMeaning == "[removed] region"
    assert back.Manufacturer == "[removed] scanners"


def test_private_tags_are_gone_at_every_level():
    ds, _ = _canary_dataset()
    out = deid.deidentify(ds, deid.new_uid_map())
    back = pydicom.dcmread(io.BytesIO(_write(out)))
    private = []
    back.walk(lambda d, el: private.append(el.tag) if el.tag.is_private else None)
    assert private == []
    assert len(back.AnatomicRegionSequence) == 1  # the sequence itself was kept


def test_uids_replaced_consistently_across_two_files_of_one_export():
    study, frame = "1.2.999.5.1", "1.2.999.5.2"
    a = pydicom.dcmread(io.BytesIO(ct_dicom()))
    b = pydicom.dcmread(io.BytesIO(ct_dicom()))
    for ds in (a, b):
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = "1.2.999.5.3"
        ds.FrameOfReferenceUID = frame
    ref = Dataset()
    ref.ReferencedSOPClassUID = a.SOPClassUID
    ref.ReferencedSOPInstanceUID = a.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = a.SeriesInstanceUID
    series.ReferencedInstanceSequence = Sequence([ref])
    b.ReferencedSeriesSequence = Sequence([series])  # kept by the profile: its UIDs are mapped
    old = {a.SOPInstanceUID, b.SOPInstanceUID, study, frame, "1.2.999.5.3"}

    export = deid.new_uid_map()
    a2 = pydicom.dcmread(io.BytesIO(_write(deid.deidentify(a, export))))
    b2 = pydicom.dcmread(io.BytesIO(_write(deid.deidentify(b, export))))
    assert a2.StudyInstanceUID == b2.StudyInstanceUID != study
    assert a2.SeriesInstanceUID == b2.SeriesInstanceUID
    assert a2.FrameOfReferenceUID == b2.FrameOfReferenceUID != frame
    assert a2.SOPInstanceUID != b2.SOPInstanceUID
    assert a2.file_meta.MediaStorageSOPInstanceUID == a2.SOPInstanceUID
    inner = b2.ReferencedSeriesSequence[0]
    assert inner.SeriesInstanceUID == a2.SeriesInstanceUID
    assert inner.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == a2.SOPInstanceUID
    assert inner.ReferencedInstanceSequence[0].ReferencedSOPClassUID == a.SOPClassUID  # standard UID kept
    for ds in (a2, b2):
        raw = _write(ds)
        assert not any(u.encode() in raw for u in old)
    # another export gets other new UIDs: nothing links two exports
    c2 = deid.deidentify(a, deid.new_uid_map())
    assert c2.StudyInstanceUID != a2.StudyInstanceUID
    assert all(v.startswith("2.25.") for v in export.values())


def test_preview_lists_actions_and_never_values():
    ds, canaries = _canary_dataset()
    df = deid.preview_removal(ds)
    assert list(df.columns) == ["tag", "keyword", "action", "effect"]
    by_kw = dict(zip(df["keyword"], df["action"]))
    assert by_kw["PatientName"] == "Z"
    assert by_kw["PatientID"] == "Z/D"
    assert by_kw["InstitutionName"] == "X/Z/D"
    assert by_kw["StudyInstanceUID"] == "U"
    assert by_kw["AnatomicRegionSequence[0] > PatientName"] == "Z"
    assert by_kw["AnatomicRegionSequence[0] > EvaluatorName"] == "N"
    assert (df["action"] == "P").sum() >= 3
    assert set(df.loc[df["keyword"] == "Manufacturer", "action"]) == {"S"}
    text = df.to_csv(index=False).encode()
    assert _leaks(text, canaries) == []
    # every element the preview announces as removed is really absent afterwards
    out = deid.deidentify(ds, deid.new_uid_map())
    for kw, eff in zip(df["keyword"], df["effect"]):
        if eff == "would be removed" and " > " not in kw and kw.isidentifier():
            assert kw not in out, kw


def test_preview_of_a_clean_dataset_is_small():
    ds = pydicom.dcmread(io.BytesIO(ct_dicom(canaries=False)))
    df = deid.preview_removal(ds)
    assert set(df["action"]) <= {"U"}  # only the instance/study/series UIDs


@pytest.mark.parametrize("fields, risky", [
    ({"Modality": "US"}, True),
    ({"Modality": "US", "BurnedInAnnotation": "NO"}, False),
    ({"Modality": "CT", "BurnedInAnnotation": "YES"}, True),
    ({"Modality": "CT"}, False),
    ({"Modality": "OT", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}, True),
    ({"Modality": "MR", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}, True),
])
def test_burned_in_risk_from_a_dataset(fields, risky):
    ds = Dataset()
    for k, v in fields.items():
        setattr(ds, k, v)
    assert (deid.burned_in_risk(ds) is not None) is risky


@pytest.mark.parametrize("meta, risky", [
    ({"format": "PNG"}, True),
    ({"format": "TIFF"}, True),
    ({"format": "NIfTI-1"}, False),
    ({"format": "DICOM", "modality": "US"}, True),
    ({"format": "DICOM", "modality": "CT"}, False),
    ({"format": "DICOM", "modality": "US", "burned_in_annotation": "NO"}, False),
    ({"format": "DICOM", "modality": "MR", "burned_in_annotation": "YES"}, True),
    ({"format": "DICOM", "modality": "MR", "sop_class": "Secondary Capture Image Storage"}, True),
])
def test_burned_in_risk_from_image_metadata(meta, risky):
    assert (deid.burned_in_risk(meta) is not None) is risky


def test_burned_in_risk_from_a_loaded_image():
    from analysis import io as mio

    img = mio.load_bytes(ct_dicom(), "ct.dcm")[0]
    assert deid.burned_in_risk(img) is None
    ds = pydicom.dcmread(io.BytesIO(ct_dicom()))
    ds.Modality, ds.BurnedInAnnotation = "US", "YES"
    img = mio.load_bytes(_write(ds), "us.dcm")[0]
    assert "YES" in deid.burned_in_risk(img)


def test_deidentify_refuses_burned_in_risk_unless_confirmed():
    ds = pydicom.dcmread(io.BytesIO(ct_dicom()))
    ds.Modality = "US"
    with pytest.raises(deid.BurnedInAnnotationError):
        deid.deidentify(ds, deid.new_uid_map())
    out = deid.deidentify(ds, deid.new_uid_map(), allow_burned_in=True)
    assert out.PatientIdentityRemoved == "YES"
    assert "BurnedInAnnotation" not in out  # never asserted "NO" on the user's behalf


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "test-SR.dcm", "nested_priv_SQ.dcm",
                                  "waveform_ecg.dcm", "rtstruct.dcm"])
def test_real_files_lose_their_identifiers(name):
    # the wheel's own folder (get_testdata_file would try the network for a file it lacks)
    path = Path(pydicom.__file__).parent / "data" / "test_files" / name
    assert path.is_file(), f"pydicom's wheel ships {name}"
    ds = pydicom.dcmread(path, force=True)
    values = []
    for kw in ("PatientName", "PatientID", "InstitutionName", "StudyInstanceUID", "SOPInstanceUID", "ReferringPhysicianName",
               "OperatorsName", "StationName", "DeviceSerialNumber"):
        v = str(ds.get(kw, "") or "").strip()
        if len(v) >= 4:
            values.append(v.encode())
    had_private = []
    ds.walk(lambda d, el: had_private.append(el.tag) if el.tag.is_private else None)
    out = deid.deidentify(ds, deid.new_uid_map(), allow_burned_in=True)
    data = _write(out)
    assert values or had_private, "the test file carries identifiers or private tags"
    back = pydicom.dcmread(io.BytesIO(data), force=True)
    # The UIDs the de-identifier made up are random digits: a short numeric ID (e.g. "2721") can
    # occur inside one by chance (~2 % of runs). Mask them; a UID copied from the source is not
    # masked, so it is still caught.
    source_uids, new_uids = set(), set()
    ds.walk(lambda d, el: source_uids.add(str(el.value)) if el.VR == "UI" and el.value else None)
    back.walk(lambda d, el: new_uids.add(str(el.value)) if el.VR == "UI" and el.value else None)
    masked = data
    for uid in sorted(new_uids - source_uids, key=len, reverse=True):
        masked = masked.replace(uid.encode(), b"#" * len(uid))
    assert [v for v in values if v in masked] == []
    private = []
    back.walk(lambda d, el: private.append(el.tag) if el.tag.is_private else None)
    assert private == [] and back.PatientIdentityRemoved == "YES"


def test_derived_export_is_also_free_of_canaries():
    """The derived (from scratch) DICOM export of analysis.export meets the same checks."""
    from analysis import export
    from analysis import io as mio

    img = mio.load_bytes(ct_dicom(), "CANARY^ZEBRA.dcm")[0]
    data = export.deidentified_dicom_bytes(img.grey(), modality=img.modality, units=img.units, spacing=img.spacing)
    assert _leaks(data, {k: v.encode() for k, v in CANARIES.items()}) == []
    back = pydicom.dcmread(io.BytesIO(data))
    assert back.PatientIdentityRemoved == "YES"
