"""DICOM loading: pydicom's own test files, physical units, VOI, photometric, frames, series.

Every DICOM used here is either shipped inside pydicom or generated in the test.
`make_dicom` is imported by the other loader tests.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import pathlib
import random
import warnings
import zipfile

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut
from pydicom.sequence import Sequence
from pydicom.uid import (CTImageStorage, EnhancedCTImageStorage, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian, generate_uid)

from analysis.io import LoadError, load_bytes, load_many, load_path, read_metadata, sniff_format

TEST_FILES = pathlib.Path(pydicom.__file__).parent / "data" / "test_files"
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


# ---------------------------------------------------------------------------- builder
def make_dicom(pixels=None, *, ts=ExplicitVRLittleEndian, meta: bool = True, **tags) -> bytes:
    """A small DICOM (CT by default) with ``pixels`` as stored values; ``tags`` override
    (``None`` deletes). ``meta=False`` writes a bare dataset: no preamble, no file meta."""
    pixels = np.arange(64, dtype=np.int16).reshape(8, 8) if pixels is None else np.asarray(pixels)
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = tags.get("SOPClassUID", CTImageStorage)
    fm.MediaStorageSOPInstanceUID = generate_uid()
    fm.TransferSyntaxUID = ts
    ds = Dataset()
    ds.file_meta = fm
    ds.SOPClassUID = fm.MediaStorageSOPClassUID
    ds.SOPInstanceUID = fm.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.Rows, ds.Columns = (int(v) for v in pixels.shape[-2:])
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    ds.PixelData = pixels.tobytes()
    for k, v in tags.items():
        if v is None:
            if k in ds:
                delattr(ds, k)
        else:
            setattr(ds, k, v)
    buf = io.BytesIO()
    if meta:
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    else:
        del ds.file_meta
        pydicom.dcmwrite(buf, ds, implicit_vr=ts == ImplicitVRLittleEndian, little_endian=True)
    return buf.getvalue()


def _read(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data), force=True)


# ---------------------------------------------------------------------------- pydicom's files
def _header_shape(ds: Dataset) -> tuple[int, int, int]:
    rows, cols = int(ds.Rows), int(ds.Columns)
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except ValueError:  # unreadable value: the loader infers it from the data length
        frame_bytes = rows * cols * int(ds.SamplesPerPixel) * int(ds.BitsAllocated) // 8
        frames = len(ds.PixelData) // frame_bytes
    return rows, cols, frames


def test_every_pydicom_test_file_loads_or_raises_loaderror():
    files = sorted(p for p in TEST_FILES.rglob("*") if p.is_file())
    assert len(files) > 150
    loaded, failed, top_pixel, top_loaded = [], [], 0, 0
    for path in files:
        data = path.read_bytes()
        gzipped = data[:2] == b"\x1f\x8b"  # zipMR.gz: a gzip-compressed MR_small
        try:
            ds = _read(gzip.decompress(data) if gzipped else data)
            has_pixels = any(k in ds for k in PIXEL_KEYWORDS)
        except Exception:
            ds, has_pixels = None, False
        top_level = path.parent == TEST_FILES and not gzipped
        top_pixel += has_pixels and top_level
        try:
            images = load_bytes(data, path.name)
        except LoadError as e:
            assert e.filename == path.name and e.reason and str(e) == f"{path.name}: {e.reason}"
            assert "Traceback" not in e.reason and len(e.reason) < 300
            failed.append((path.relative_to(TEST_FILES).as_posix(), has_pixels, e.reason))
            continue
        assert has_pixels, f"{path.name} loaded although it has no pixel data"
        assert len(images) == 1
        img = images[0]
        rows, cols, frames = _header_shape(ds)
        assert img.shape2d == (rows, cols), path.name
        assert img.n_planes == frames, path.name
        assert img.stack == ("frame" if frames > 1 else None)
        colour = int(ds.SamplesPerPixel) == 3 or ds.PhotometricInterpretation == "PALETTE COLOR"
        assert img.is_rgb == colour, path.name
        assert img.pixels.dtype == (np.float32 if not colour else img.pixels.dtype)
        if colour:
            assert img.pixels.dtype in (np.uint8, np.uint16)
        assert img.source_format == "dicom"
        assert img.digest == hashlib.sha256(data).hexdigest()
        loaded.append(path)
        top_loaded += top_level
    pixel_failures = [f for f in failed if f[1]]
    print(f"\npydicom test files: {top_loaded}/{top_pixel} top-level pixel files load; "
          f"{len(loaded)} images in all; pixel files that fail:")
    for name, _, reason in pixel_failures:
        print(f"  {name}: {reason}")
    assert top_pixel == 64
    assert "zipMR.gz" in {p.name for p in loaded}
    assert top_loaded >= 58
    # every file of the DICOMDIR test tree that has pixels loads
    assert not [f for f in pixel_failures if f[0].startswith("dicomdirtests/")]
    # files without pixel data say so (SOP class / modality named)
    reasons = {name: reason for name, _, reason in failed}
    assert reasons["rtplan.dcm"] == "no image in this DICOM (RT Plan)"
    assert reasons["test-SR.dcm"] == "no image in this DICOM (Comprehensive SR)"
    assert reasons["rtstruct.dcm"] == "no image in this DICOM (RT Structure Set)"
    assert reasons["MR_truncated.dcm"] == "truncated pixel data: expected 8192 bytes, found 8130"
    assert reasons["README.txt"] == "not an image: unrecognised content (looks like text)"
    assert reasons["JPEG-lossy.dcm"].startswith("decoding JPEG failed: ")
    assert reasons["JPEG2000-embedded-sequence-delimiter.dcm"].startswith("decoding JPEG 2000 failed: ")


# ---------------------------------------------------------------------------- physical units
def test_ct_small_is_in_hounsfield_units_exactly():
    data = (TEST_FILES / "CT_small.dcm").read_bytes()
    ds = _read(data)
    (img,) = load_bytes(data, "CT_small.dcm")
    expected = apply_modality_lut(ds.pixel_array, ds)
    assert img.pixels.dtype == np.float32
    np.testing.assert_array_equal(img.pixels, expected.astype(np.float32))
    assert float(img.pixels.min()) == -896.0 and float(img.pixels.max()) == 1167.0
    assert img.units == "HU" and img.modality == "CT"
    assert img.spacing == pytest.approx((0.661468, 0.661468))
    assert img.window is None  # CT_small carries no VOI window
    assert img.metadata["rescale_intercept"] == -1024.0 and img.metadata["rescale_slope"] == 1.0
    assert img.metadata["transfer_syntax"] == "Explicit VR Little Endian"
    assert img.metadata["sop_class"] == "CT Image Storage"


def test_window_comes_from_tags_first_value_of_multivalued():
    ds = _read((TEST_FILES / "CT_small.dcm").read_bytes())
    ds.WindowCenter = [40, -600]
    ds.WindowWidth = [400, 1500]
    buf = io.BytesIO()
    ds.save_as(buf)
    (img,) = load_bytes(buf.getvalue(), "ct.dcm")
    assert img.window == (40.0, 400.0)
    (mr,) = load_bytes((TEST_FILES / "MR_small.dcm").read_bytes(), "MR_small.dcm")
    assert mr.window == (600.0, 1600.0) and mr.units == "a.u." and mr.modality == "MR"


def test_rescale_slope_and_intercept_give_physical_values():
    stored = np.arange(-50, 50, dtype=np.int16).reshape(10, 10)
    data = make_dicom(stored, RescaleSlope="0.5", RescaleIntercept="-100", RescaleType="HU")
    (img,) = load_bytes(data, "x.dcm")
    np.testing.assert_array_equal(img.pixels, stored.astype(np.float32) * 0.5 - 100)
    assert img.units == "HU"


def test_only_intercept_present_means_slope_one():
    stored = np.arange(64, dtype=np.int16).reshape(8, 8)
    (img,) = load_bytes(make_dicom(stored, RescaleIntercept="-1024"), "x.dcm")
    np.testing.assert_array_equal(img.pixels, stored - 1024.0)
    assert img.units == "HU"


def test_modality_lut_sequence_is_applied():
    stored = np.arange(16, dtype=np.uint16).reshape(4, 4)
    item = Dataset()
    item.LUTDescriptor = [16, 0, 16]
    item.add_new("LUTData", "US", [3 * v + 7 for v in range(16)])
    item.ModalityLUTType = "HU"
    data = make_dicom(stored, ModalityLUTSequence=Sequence([item]))
    (img,) = load_bytes(data, "lut.dcm")
    np.testing.assert_array_equal(img.pixels, 3 * stored.astype(np.float32) + 7)
    assert img.units == "HU"


def test_rt_dose_grid_scaling_and_frame_offsets():
    data = (TEST_FILES / "rtdose.dcm").read_bytes()
    ds = _read(data)
    (img,) = load_bytes(data, "rtdose.dcm")
    np.testing.assert_allclose(img.pixels, ds.pixel_array * float(ds.DoseGridScaling), rtol=1e-6)
    assert img.units == "relative dose" and img.stack == "frame" and img.slice_spacing == 5.0


# ---------------------------------------------------------------------------- photometric
def test_monochrome1_sets_invert_and_keeps_pixels():
    stored = np.arange(64, dtype=np.uint16).reshape(8, 8) * 10
    data = make_dicom(stored, PhotometricInterpretation="MONOCHROME1", Modality="CR")
    (img,) = load_bytes(data, "cr.dcm")
    assert img.invert is True
    np.testing.assert_array_equal(img.pixels, stored.astype(np.float32))  # not inverted
    (m2,) = load_bytes(make_dicom(stored, Modality="CR"), "cr2.dcm")
    assert m2.invert is False


def test_ybr_is_converted_to_rgb():
    (ybr,) = load_bytes((TEST_FILES / "SC_ybr_full_422_uncompressed.dcm").read_bytes(), "ybr.dcm")
    (ref,) = load_bytes((TEST_FILES / "SC_rgb_rle.dcm").read_bytes(), "rgb.dcm")
    assert ybr.pixels.shape == ref.pixels.shape == (100, 100, 3) and ybr.pixels.dtype == np.uint8
    diff = np.abs(ybr.pixels.astype(int) - ref.pixels.astype(int))
    assert diff.mean() < 2 and diff.max() <= 8  # YBR left unconverted would differ by ~100
    assert tuple(ref.pixels[0, 0]) == (255, 0, 0)
    assert ybr.units == "RGB" and ybr.metadata["photometric"] == "YBR_FULL_422"


def test_palette_colour_becomes_rgb():
    data = (TEST_FILES / "examples_palette.dcm").read_bytes()
    ds = _read(data)
    (img,) = load_bytes(data, "pal.dcm")
    expected = pydicom.pixels.apply_color_lut(ds.pixel_array, ds)
    assert img.pixels.shape == (350, 800, 3)
    np.testing.assert_array_equal(img.pixels, expected)


def test_voi_lut_sequence_is_kept_with_a_derived_window():
    stored = np.arange(64, dtype=np.uint16).reshape(8, 8)
    item = Dataset()
    item.LUTDescriptor = [32, 10, 8]
    item.add_new("LUTData", "US", [min(255, 8 * v) for v in range(32)])
    (img,) = load_bytes(make_dicom(stored, VOILUTSequence=Sequence([item])), "voi.dcm")
    assert img.voi_lut is not None and img.voi_lut.tolist() == item.LUTData
    assert img.voi_lut_first == 10.0
    assert img.window == (10 + 16.0, 32.0)


# ---------------------------------------------------------------------------- frames
def test_multiframe_is_a_frame_stack():
    stored = np.stack([np.full((6, 5), v, np.int16) for v in (1, 2, 3)])
    data = make_dicom(stored, RescaleIntercept="-10", RescaleSlope="2")
    (img,) = load_bytes(data, "mf.dcm")
    assert img.pixels.shape == (3, 6, 5) and img.stack == "frame" and img.n_planes == 3
    assert [float(img.pixels[i, 0, 0]) for i in range(3)] == [-8.0, -6.0, -4.0]
    assert img.metadata["frames"] == 3


def test_per_frame_functional_groups_rescale_and_spacing():
    stored = np.stack([np.full((4, 4), 10, np.int16)] * 3)
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = [0.7, 0.8]
    pm.SliceThickness = 1.5
    shared.PixelMeasuresSequence = Sequence([pm])
    frames = []
    for i in range(3):
        f = Dataset()
        pvt = Dataset()
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = i + 1, -100 * i, "HU"
        f.PixelValueTransformationSequence = Sequence([pvt])
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = 40, 350
        f.FrameVOILUTSequence = Sequence([voi])
        frames.append(f)
    data = make_dicom(stored, SOPClassUID=EnhancedCTImageStorage, SharedFunctionalGroupsSequence=Sequence([shared]),
                      PerFrameFunctionalGroupsSequence=Sequence(frames))
    (img,) = load_bytes(data, "enh.dcm")
    assert [float(img.pixels[i, 0, 0]) for i in range(3)] == [10.0, -80.0, -170.0]
    assert img.spacing == (0.7, 0.8) and img.units == "HU" and img.window == (40.0, 350.0)


def test_echo_cine_is_30_rgb_frames():
    (img,) = load_bytes((TEST_FILES / "examples_ybr_color.dcm").read_bytes(), "echo.dcm")
    assert img.pixels.shape == (30, 240, 320, 3) and img.stack == "frame" and img.is_rgb
    assert img.n_planes == 30 and img.plane(4).pixels.shape == (240, 320, 3)


# ---------------------------------------------------------------------------- detection
def test_missing_transfer_syntax_falls_back_to_the_read_encoding():
    stored = np.arange(64, dtype=np.int16).reshape(8, 8)
    body = make_dicom(stored, ts=ImplicitVRLittleEndian, meta=False)
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = CTImageStorage
    fm.MediaStorageSOPInstanceUID = generate_uid()
    meta_buf = io.BytesIO()
    pydicom.filewriter.write_file_meta_info(pydicom.filebase.DicomFileLike(meta_buf), fm, enforce_standard=False)
    data = b"\0" * 128 + b"DICM" + meta_buf.getvalue() + body
    assert "TransferSyntaxUID" not in _read(data).file_meta
    (img,) = load_bytes(data, "nots.dcm")
    np.testing.assert_array_equal(img.pixels, stored.astype(np.float32))
    assert any("no transfer syntax" in n for n in img.metadata["notes"])


@pytest.mark.parametrize("ts", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
def test_dicom_without_preamble_or_extension_is_detected(ts):
    stored = np.arange(64, dtype=np.int16).reshape(8, 8)
    data = make_dicom(stored, ts=ts, meta=False)
    assert data[128:132] != b"DICM"
    assert sniff_format(data, "IM0001") == "dicom"
    (img,) = load_bytes(data, "IM0001")
    np.testing.assert_array_equal(img.pixels, stored.astype(np.float32))
    assert img.name == "IM0001"


def test_content_decides_not_the_extension():
    data = make_dicom()
    assert sniff_format(data, "photo.png") == "dicom"
    (img,) = load_bytes(data, "photo.png")
    assert img.source_format == "dicom"
    gz = __import__("gzip").compress(data)
    assert sniff_format(gz, "x.gz") == "dicom"
    assert load_bytes(gz, "x.dcm.gz")[0].source_format == "dicom"


def test_pixel_spacing_falls_back_to_imager_pixel_spacing():
    (img,) = load_bytes(make_dicom(ImagerPixelSpacing=[0.15, 0.2], Modality="DX"), "dx.dcm")
    assert img.spacing == (0.15, 0.2)
    (none,) = load_bytes(make_dicom(), "nospacing.dcm")
    assert none.spacing is None


def test_read_metadata_is_header_only():
    data = make_dicom(np.zeros((4, 4), np.int16), Rows=40000, Columns=40000)  # pixels could never decode
    meta = read_metadata(data, "big.dcm")
    assert meta["rows"] == 40000 and meta["cols"] == 40000 and meta["format"] == "DICOM"
    assert meta["modality"] == "CT"


# ---------------------------------------------------------------------------- series
def _series(positions, *, iop=(1, 0, 0, 0, 1, 0), uid=None, instance_numbers=None, shape=(6, 7), **tags):
    uid = uid or generate_uid()
    files = []
    for k, pos in enumerate(positions):
        stored = np.full(shape, 100 + k, np.int16)
        extra = dict(tags)
        if pos is not None:
            extra["ImagePositionPatient"] = list(pos)
            extra["ImageOrientationPatient"] = list(iop)
        inst = instance_numbers[k] if instance_numbers else k + 1
        files.append(make_dicom(stored, SeriesInstanceUID=uid, InstanceNumber=inst, PixelSpacing=[0.5, 0.5],
                                RescaleIntercept="0", RescaleSlope="1", **extra))
    return files


def _zip(named: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, d in named:
            zf.writestr(n, d)
    return buf.getvalue()


@pytest.mark.parametrize("descending", [False, True])
def test_series_in_zip_is_one_volume_sorted_by_position(descending):
    z = [10.0, 12.5, 15.0, 17.5, 20.0]
    files = _series([(0, 0, v) for v in (z[::-1] if descending else z)])
    order = list(range(5))
    random.Random(3).shuffle(order)
    archive = _zip([(f"study/ct/f{k:02d}.dcm", files[k]) for k in order])
    (vol,) = load_bytes(archive, "archive.zip")
    assert vol.pixels.shape == (5, 6, 7) and vol.stack == "slice"
    got = [int(vol.pixels[i, 0, 0]) - 100 for i in range(5)]  # index of the file in `files`
    assert got == ([4, 3, 2, 1, 0] if descending else [0, 1, 2, 3, 4])  # ascending position
    assert vol.slice_spacing == pytest.approx(2.5)
    assert vol.name == "archive.zip/study/ct"
    assert vol.metadata["series_files"] == 5 and vol.metadata["slice_positions"] == "regular"
    assert vol.spacing == (0.5, 0.5) and vol.units == "HU"


def test_series_order_uses_the_slice_normal_for_coronal_slices():
    iop = (1, 0, 0, 0, 0, -1)  # rows along x, columns down z → normal along y
    ys = [-3.0, 0.0, 3.0, 6.0]
    files = _series([(5.0, y, 40.0 - 7 * k) for k, y in enumerate(ys)], iop=iop)
    shuffled = [files[i] for i in (2, 0, 3, 1)]
    images, errors = load_many([(f"c{i}.dcm", d) for i, d in enumerate(shuffled)])
    assert not errors and len(images) == 1
    vol = images[0]
    assert [int(vol.pixels[i, 0, 0]) - 100 for i in range(4)] == [0, 1, 2, 3]
    assert vol.slice_spacing == pytest.approx(3.0)


def test_series_in_a_folder_and_instance_number_fallback(tmp_path):
    files = _series([None] * 4, instance_numbers=[3, 1, 4, 2], SliceThickness="2.0")
    d = tmp_path / "scan"
    d.mkdir()
    for k, data in enumerate(files):
        (d / f"IM{k}").write_bytes(data)  # no extension
    (vol,) = load_path(d)
    # instance numbers 1..4 are files 1, 3, 0, 2
    assert [int(vol.pixels[i, 0, 0]) - 100 for i in range(4)] == [1, 3, 0, 2]
    assert vol.slice_spacing == 2.0 and vol.metadata["slice_positions"] == "instance"
    assert vol.name == "scan"


def test_series_with_inconsistent_shapes_is_not_stacked():
    uid = generate_uid()
    a = _series([(0, 0, 0), (0, 0, 1)], uid=uid)
    b = _series([(0, 0, 2)], uid=uid, shape=(9, 9))
    images, errors = load_many([("a0.dcm", a[0]), ("a1.dcm", a[1]), ("b.dcm", b[0])])
    assert not errors and len(images) == 3
    assert all(im.n_planes == 1 for im in images)
    assert all("inconsistent shapes" in " ".join(im.metadata["notes"]) for im in images)


def test_series_with_a_broken_slice_keeps_the_others():
    files = _series([(0, 0, z) for z in (0, 1, 2, 3)])
    broken = files[2][:-20]  # pixel data cut short
    images, errors = load_many([("s0.dcm", files[0]), ("s1.dcm", files[1]), ("s2.dcm", broken), ("s3.dcm", files[3])])
    assert len(images) == 1 and images[0].pixels.shape == (3, 6, 7)
    assert [e.filename for e in errors] == ["s2.dcm"] and errors[0].reason.startswith("truncated pixel data")
    assert any("missing" in n for n in images[0].metadata["notes"])


def test_irregular_positions_have_no_single_slice_spacing():
    files = _series([(0, 0, z) for z in (0.0, 1.0, 2.0, 6.0)])
    (vol,) = load_many([(f"s{i}.dcm", d) for i, d in enumerate(files)])[0]
    assert vol.pixels.shape[0] == 4 and vol.slice_spacing is None
    assert vol.metadata["slice_positions"] == "irregular"


def test_two_series_in_one_folder_get_distinct_names(tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    for s, sn in ((_series([(0, 0, z) for z in (0, 1)], SeriesNumber=3), 3), (_series([(0, 0, z) for z in (0, 2)], SeriesNumber=4), 4)):
        for k, data in enumerate(s):
            (d / f"s{sn}_{k}.dcm").write_bytes(data)
    images = load_path(d)
    assert sorted(im.name for im in images) == ["mixed [series 3]", "mixed [series 4]"]
    assert {im.slice_spacing for im in images} == {1.0, 2.0}
    assert len({im.digest for im in images}) == 2


def test_digest_is_content_based():
    a, b = make_dicom(), make_dicom()
    assert load_bytes(a, "a.dcm")[0].digest == load_bytes(a, "other-name.dcm")[0].digest
    assert load_bytes(a, "a.dcm")[0].digest != load_bytes(b, "b.dcm")[0].digest
    assert math.isfinite(float(load_bytes(a, "a.dcm")[0].pixels.sum()))


def test_float_pixel_data_with_nan_is_made_finite():
    values = np.arange(16, dtype=np.float32).reshape(4, 4) / 4 - 1
    values[1, 2], values[3, 3] = np.nan, np.inf
    data = make_dicom(np.zeros((4, 4), np.int16), PixelData=None, FloatPixelData=values.tobytes(), BitsAllocated=32,
                      BitsStored=None, HighBit=None, PixelRepresentation=None, Modality="MR")
    (img,) = load_bytes(data, "float.dcm")
    expected = values.copy()
    expected[~np.isfinite(values)] = -1.0  # the lowest finite value
    np.testing.assert_array_equal(img.pixels, expected)
    assert any("2 non-finite" in n for n in img.metadata["notes"])


def test_zip_given_as_a_path(tmp_path):
    files = _series([(0, 0, z) for z in (0.0, 2.0, 4.0)])
    p = tmp_path / "upload.zip"
    p.write_bytes(_zip([(f"x/{k}.dcm", d) for k, d in enumerate(files)] + [("x/readme.txt", b"hello")]))
    errors: list[LoadError] = []
    (vol,) = load_path(p, errors=errors)
    assert vol.name == "upload.zip/x" and vol.pixels.shape == (3, 6, 7) and vol.slice_spacing == 2.0
    assert [e.filename for e in errors] == ["upload.zip/x/readme.txt"]
