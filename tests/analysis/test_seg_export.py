"""Exports: mask PNG, region CSV, DICOM SEG (read back with highdicom and pydicom)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image as PILImage

from analysis import seg_export as se
from analysis.image import Image
from analysis.privacy import is_identifying_keyword
from tests.helpers.dicom import CANARIES, ct_dicom


def ct_image():
    rr, cc = np.mgrid[:64, :80]
    hu = np.where((rr - 30) ** 2 + (cc - 40) ** 2 < 15**2, 60.0, -1000.0).astype(np.float32)
    return Image(hu, name="ct.dcm", spacing=(0.5, 0.75), units="HU", modality="CT", window=(40.0, 400.0), source_format="dicom"), hu > 0


def test_mask_png_roundtrip():
    _, m = ct_image()
    back = np.asarray(PILImage.open(io.BytesIO(se.mask_png(m))))
    assert back.dtype == np.uint8 and set(np.unique(back)) == {0, 255}
    assert ((back > 0) == m).all()
    lab = np.zeros((20, 20), np.int32)
    lab[2:5, 2:5] = 7
    lab[10:15, 10:15] = 300
    back = np.asarray(PILImage.open(io.BytesIO(se.mask_png(lab))))
    assert (back.astype(np.int32) == lab).all()


def test_region_csv_roundtrip():
    t = pd.DataFrame({"label": [1, 2], "area_mm2": [3.5, 7.25]})
    back = pd.read_csv(io.BytesIO(se.table_csv(t)))
    pd.testing.assert_frame_equal(back, t)


def test_dicom_seg_reads_back_and_matches_mask():
    img, m = ct_image()
    seg_bytes, src = se.dicom_seg(m, img, method="segmentation.otsu", label="Disk")
    assert (se.read_seg_mask(seg_bytes) == m).all()
    ds = pydicom.dcmread(io.BytesIO(seg_bytes))
    assert ds.Modality == "SEG" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    ref = ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
    assert ref == src.SOPInstanceUID
    assert ds.SegmentSequence[0].SegmentLabel == "Disk"
    # geometry travels: pixel spacing of the source
    pm = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [float(v) for v in pm.PixelSpacing] == [0.5, 0.75]


def test_deidentified_source_keeps_physical_values():
    img, _ = ct_image()
    src = se.deidentified_source(img)
    hu = src.pixel_array * float(src.RescaleSlope) + float(src.RescaleIntercept)
    np.testing.assert_allclose(hu, img.pixels, atol=0.5)
    float_img = Image(np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64), units="a.u.", modality="MR", spacing=(1.0, 1.0))
    s2 = se.deidentified_source(float_img)
    back = s2.pixel_array * float(s2.RescaleSlope) + float(s2.RescaleIntercept)
    np.testing.assert_allclose(back, float_img.pixels, atol=1e-4)


#: elements describing the export itself (when it was written, plane geometry), not the patient
EXPORT_OWN = {"InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime", "ContributionDateTime",
              "ImageOrientationPatient", "ImagePositionPatient"}


def test_seg_from_a_real_dicom_carries_no_identifiers(tmp_path):
    from analysis.io import load_image

    p = tmp_path / "canary.dcm"
    p.write_bytes(ct_dicom(p))
    img = load_image(p)
    m = img.grey() > 0
    data = se.dicom_seg_zip(m, img, method="segmentation.otsu")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert sorted(z.namelist()) == ["seg.dcm", "source.dcm"]
        blobs = {n: z.read(n) for n in z.namelist()}
    for name, blob in blobs.items():
        for value in CANARIES.values():
            assert value.encode() not in blob, f"{name} leaks {value}"
        ds = pydicom.dcmread(io.BytesIO(blob))
        assert str(ds.get("PatientName", "")) == "" and str(ds.get("PatientID", "")) == ""
        assert str(ds.get("PatientBirthDate", "")) == "" and str(ds.get("StudyDate", "")) == ""
        for elem in ds.iterall():
            if elem.keyword in EXPORT_OWN or elem.VR in ("UI", "SQ"):
                continue  # the export's own creation time / fresh UIDs / geometry: not about the patient
            if elem.keyword and is_identifying_keyword(elem.keyword, elem.VR):
                assert str(elem.value) in ("", "none"), (name, elem.keyword, elem.value)
    seg = pydicom.dcmread(io.BytesIO(blobs["seg.dcm"]))
    src = pydicom.dcmread(io.BytesIO(blobs["source.dcm"]))
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert (se.read_seg_mask(blobs["seg.dcm"]) == m).all()


def test_seg_of_a_photograph_without_spacing():
    rgb = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    img = Image(rgb, name="photo.png", source_format="png")
    m = img.grey() > 120
    seg_bytes, src = se.dicom_seg(m, img)
    assert "PixelSpacing" not in src
    assert (se.read_seg_mask(seg_bytes) == m).all()


def test_seg_rejects_empty_and_mismatched_masks():
    img, m = ct_image()
    with pytest.raises(ValueError, match="empty"):
        se.dicom_seg(np.zeros_like(m), img)
    with pytest.raises(ValueError, match="shape"):
        se.dicom_seg(np.ones((3, 3), bool), img)
