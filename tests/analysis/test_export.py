"""Exports: 16-bit PNG values, de-identified derived DICOM, CSV, pipeline JSON."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pydicom
import pytest

from analysis import export
from analysis.pipeline import Pipeline
from analysis.privacy import IDENTIFYING_KEYWORDS, is_identifying_keyword
from tests.helpers.dicom import CANARIES, ct_dicom


def _processed_hu() -> np.ndarray:
    rng = np.random.default_rng(0)
    a = rng.normal(40, 30, (48, 64))
    a[:10] = -1000.5
    a[-5:] = 2999.25
    return a.astype(np.float32)


def test_png16_round_trip_within_quantisation():
    a = _processed_hu()
    data = export.png16_bytes(a, units="HU")
    back, text = export.read_png16(data)
    span = float(a.max() - a.min())
    assert np.abs(back - a).max() <= span / 65535 / 2 + 1e-6
    assert text["medlens:units"] == "HU"
    from PIL import Image as PILImage

    im = PILImage.open(io.BytesIO(data))
    assert im.mode in ("I;16", "I;16B", "I") and np.asarray(im).max() == 65535


def test_png16_with_window_clips_outside():
    a = _processed_hu()
    back, _ = export.read_png16(export.png16_bytes(a, value_range=(-160.0, 240.0)))
    assert back.min() == pytest.approx(-160.0) and back.max() == pytest.approx(240.0)


def _read(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def test_dicom_export_pixels_after_rescale_float_data():
    a = _processed_hu()
    ds = _read(export.deidentified_dicom_bytes(a, modality="CT", units="HU", spacing=(0.5, 0.75), window=(40, 400)))
    phys = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    tol = float(ds.RescaleSlope) / 2 + 1e-6
    assert np.abs(phys - a).max() <= tol
    assert [float(v) for v in ds.PixelSpacing] == [0.5, 0.75]
    assert ds.RescaleType == "HU" and float(ds.WindowCenter) == 40.0


def test_dicom_export_integer_data_is_exact():
    a = np.arange(-1024, -1024 + 60 * 50).reshape(60, 50).astype(np.float32)
    ds = _read(export.deidentified_dicom_bytes(a, modality="CT", units="HU"))
    assert float(ds.RescaleSlope) == 1.0
    phys = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(phys, a)


def test_dicom_export_has_no_identifiers_and_new_uids(tmp_path):
    from analysis.io import load_image

    src_bytes = ct_dicom()  # carries canary identifiers
    src = pydicom.dcmread(io.BytesIO(src_bytes))
    path = tmp_path / "src.dcm"
    path.write_bytes(src_bytes)
    image = load_image(path)
    data = export.deidentified_dicom_bytes(image.grey(), modality=image.modality, units=image.units,
                                           spacing=image.spacing, window=image.window, derivation="Gaussian (sigma=1)")
    out = _read(data)
    assert list(out.ImageType) == ["DERIVED", "SECONDARY"]
    assert out.PatientIdentityRemoved == "YES" and "MedLens" in out.DeidentificationMethod
    assert out.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert out.SOPClassUID == export.SECONDARY_CAPTURE
    uids = {out.SOPInstanceUID, out.StudyInstanceUID, out.SeriesInstanceUID, out.file_meta.MediaStorageSOPInstanceUID}
    assert not uids & {src.SOPInstanceUID, src.StudyInstanceUID, src.SeriesInstanceUID}
    assert out.SOPInstanceUID == out.file_meta.MediaStorageSOPInstanceUID
    for elem in out.iterall():
        kw = elem.keyword
        if kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "PatientIdentityRemoved",
                  "DeidentificationMethod", "DeidentificationMethodCodeSequence"):
            continue
        if kw in IDENTIFYING_KEYWORDS or is_identifying_keyword(kw, elem.VR):
            assert elem.value in ("", None), (kw, elem.value)
    raw = data.decode("latin-1")
    for v in CANARIES.values():
        assert v not in raw
    # a second export gets different UIDs
    assert _read(export.deidentified_dicom_bytes(image.grey())).SOPInstanceUID != out.SOPInstanceUID
    phys = out.pixel_array.astype(np.float64) * float(out.RescaleSlope) + float(out.RescaleIntercept)
    np.testing.assert_allclose(phys, image.grey(), atol=float(out.RescaleSlope) / 2 + 1e-6)


def test_dicom_export_rejects_colour():
    with pytest.raises(ValueError, match="2-D"):
        export.deidentified_dicom_bytes(np.zeros((4, 4, 3)))


def test_metrics_csv_and_pipeline_json():
    rows = [{"metric": "psnr_clean", "before": 30.0, "after": 34.5}, {"metric": "cnr", "before": 2.0, "after": 3.0}]
    df = pd.read_csv(io.BytesIO(export.metrics_csv_bytes(rows)))
    assert df.shape == (2, 3) and df["after"].tolist() == [34.5, 3.0]
    p = Pipeline.of([("enhancement.gaussian", {"sigma": 2.0})])
    assert Pipeline.from_json(export.pipeline_json_bytes(p)) == p
