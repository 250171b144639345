"""PNG / JPEG / TIFF / NIfTI / ZIP / folders: values as stored, layouts, spacing, sniffing, limits."""

from __future__ import annotations

import gzip
import io
import pathlib
import struct
import zipfile

import cv2
import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage
from PIL import PngImagePlugin

from analysis.io import LoadError, load_bytes, load_image, load_many, load_path, read_metadata, sniff_format
from analysis.limits import ENV_NAMES, Limits
from analysis.privacy import SAFE_METADATA_KEYS
from tests.analysis.test_io_dicom import make_dicom

RNG = np.random.default_rng(7)


def png(arr: np.ndarray, mode: str | None = None, **save) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(arr, mode=mode).save(buf, format="PNG", **save) if mode else \
        PILImage.fromarray(arr).save(buf, format="PNG", **save)
    return buf.getvalue()


def tiff(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kw)
    return buf.getvalue()


def nifti(data: np.ndarray, affine: np.ndarray, *, oriented: bool = True, slope=None, inter=None) -> bytes:
    img = nib.Nifti1Image(data, affine if oriented else None)
    if not oriented:  # no qform/sform: only voxel sizes
        img.header.set_zooms(tuple(np.abs(np.diag(affine))[:3])[: data.ndim] + (1.0,) * max(0, data.ndim - 3))
    data_bytes = bytearray(img.to_bytes())
    if slope is not None:  # nibabel rescales on write; patch scl_slope / scl_inter (offsets 112, 116)
        struct.pack_into("<ff", data_bytes, 112, slope, inter)
    return bytes(data_bytes)


# ---------------------------------------------------------------------------- PNG
def test_png_8_and_16_bit_grey_keep_stored_values():
    a8 = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    a16 = RNG.integers(0, 65536, (20, 30), dtype=np.uint16)
    (i8,) = load_bytes(png(a8), "g8.png")
    (i16,) = load_bytes(png(a16), "g16.png")
    assert i8.pixels.dtype == np.uint8 and np.array_equal(i8.pixels, a8)
    assert i16.pixels.dtype == np.uint16 and np.array_equal(i16.pixels, a16)
    for img in (i8, i16):
        assert img.units == "grey level" and img.spacing is None and img.source_format == "png"
        assert img.modality == "OT" and img.window is None


def test_png_rgb_rgba_and_palette():
    rgb = RNG.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, np.full((12, 10), 7, np.uint8)])
    (i_rgb,) = load_bytes(png(rgb), "rgb.png")
    (i_rgba,) = load_bytes(png(rgba), "rgba.png")
    assert np.array_equal(i_rgb.pixels, rgb) and i_rgb.is_rgb and i_rgb.units == "RGB"
    assert np.array_equal(i_rgba.pixels, rgb)  # alpha dropped, colour untouched
    idx = RNG.integers(0, 4, (9, 11), dtype=np.uint8)
    pal = PILImage.fromarray(idx, mode="P")
    colours = [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]
    pal.putpalette(colours + [0] * (768 - len(colours)))
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    (i_pal,) = load_bytes(buf.getvalue(), "pal.png")
    lut = np.asarray(colours, np.uint8).reshape(4, 3)
    assert np.array_equal(i_pal.pixels, lut[idx])


def test_png_16_bit_rgb_keeps_16_bits():
    rgb16 = RNG.integers(0, 65536, (8, 9, 3), dtype=np.uint16)
    ok, enc = cv2.imencode(".png", rgb16[..., ::-1])  # OpenCV writes BGR
    assert ok
    (img,) = load_bytes(enc.tobytes(), "rgb16.png")
    assert img.pixels.dtype == np.uint16 and np.array_equal(img.pixels, rgb16)


def test_png_bilevel_becomes_0_1():
    bits = RNG.integers(0, 2, (16, 16)).astype(bool)
    (img,) = load_bytes(png(bits), "mask.png")
    assert img.pixels.dtype == np.uint8 and np.array_equal(img.pixels, bits.astype(np.uint8))


def test_png_text_chunks_never_enter_metadata():
    info = PngImagePlugin.PngInfo()
    info.add_text("PatientName", "CANARY^PNGTEXT")
    info.add_text("Comment", "CANARY-COMMENT", zip=True)
    data = png(np.zeros((4, 4), np.uint8), pnginfo=info)
    (img,) = load_bytes(data, "t.png")
    assert "CANARY" not in repr(img.metadata) and "CANARY" not in repr(read_metadata(data, "t.png"))
    assert set(img.metadata) <= SAFE_METADATA_KEYS


# ---------------------------------------------------------------------------- JPEG
def test_jpeg_grey_and_rgb_decode_close_to_source_and_drop_exif():
    yy, xx = np.mgrid[:64, :64]
    grey = (2 * xx + yy).astype(np.uint8)
    buf = io.BytesIO()
    exif = PILImage.Exif()
    exif[0x010E] = "CANARY-EXIF-DESCRIPTION"  # ImageDescription
    exif[0x013B] = "CANARY-ARTIST"
    PILImage.fromarray(grey).save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    (g,) = load_bytes(buf.getvalue(), "g.jpg")
    assert g.pixels.dtype == np.uint8 and g.pixels.shape == (64, 64)
    assert np.abs(g.pixels.astype(int) - grey).max() <= 4  # lossy
    assert "CANARY" not in repr(g.metadata) and g.source_format == "jpeg"
    rgb = np.dstack([grey, 255 - grey, np.full_like(grey, 128)])
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="JPEG", quality=95)
    (c,) = load_bytes(buf.getvalue(), "c.jpeg")
    assert c.pixels.shape == (64, 64, 3) and np.abs(c.pixels.astype(int) - rgb).mean() < 3


def test_jpeg_exif_orientation_is_applied():
    a = np.zeros((10, 20), np.uint8)
    a[0, 0] = 255
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buf = io.BytesIO()
    PILImage.fromarray(a).save(buf, format="JPEG", quality=100, exif=exif.tobytes())
    (img,) = load_bytes(buf.getvalue(), "rot.jpg")
    assert img.pixels.shape == (20, 10)
    assert img.pixels[0, -1] > 128  # the bright corner is now top-right
    assert any("EXIF orientation" in n for n in img.metadata["notes"])


# ---------------------------------------------------------------------------- TIFF
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.uint32])
def test_tiff_integer_grey_as_stored(dtype):
    info = np.iinfo(dtype)
    a = RNG.integers(info.min, info.max, (15, 17), dtype=dtype, endpoint=True)
    (img,) = load_bytes(tiff(a), "g.tif")
    assert img.pixels.dtype == dtype and np.array_equal(img.pixels, a)
    assert img.units == "grey level" and img.source_format == "tiff" and img.spacing is None


def test_tiff_float_with_nan_and_inf_is_made_finite_with_a_note():
    a = RNG.normal(0, 1, (10, 10)).astype(np.float32)
    a[0, 0], a[1, 1], a[2, 2] = np.nan, np.inf, -np.inf
    (img,) = load_bytes(tiff(a), "f.tif")
    finite_min = float(np.min(a[np.isfinite(a)]))
    assert np.isfinite(img.pixels).all()
    assert img.pixels[0, 0] == img.pixels[1, 1] == img.pixels[2, 2] == np.float32(finite_min)
    mask = np.isfinite(a)
    assert np.array_equal(img.pixels[mask], a[mask])
    assert any("3 non-finite" in n for n in img.metadata["notes"])
    with pytest.raises(LoadError, match="no finite pixel values"):
        load_bytes(tiff(np.full((4, 4), np.nan, np.float32)), "nan.tif")


def test_multipage_tiff_is_a_frame_stack_and_20_pages_load():
    pages = RNG.integers(0, 4096, (20, 12, 14), dtype=np.uint16)
    (img,) = load_bytes(tiff(pages), "stack.tif")
    assert img.pixels.shape == (20, 12, 14) and img.stack == "frame" and np.array_equal(img.pixels, pages)
    assert img.metadata["frames"] == 20


def test_tiff_rgb_and_rgba_and_palette():
    rgb = RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    (i,) = load_bytes(tiff(rgb, photometric="rgb"), "rgb.tif")
    assert np.array_equal(i.pixels, rgb) and i.is_rgb
    rgba = np.dstack([rgb, np.zeros((6, 7), np.uint8)])
    (j,) = load_bytes(tiff(rgba, photometric="rgb"), "rgba.tif")
    assert np.array_equal(j.pixels, rgb)
    idx = RNG.integers(0, 3, (5, 5), dtype=np.uint8)
    cmap = np.zeros((3, 256), np.uint16)
    cmap[:, :3] = np.array([[65535, 0, 0], [0, 65535, 0], [0, 0, 65535]]).T
    (k,) = load_bytes(tiff(idx, photometric="palette", colormap=cmap), "pal.tif")
    assert k.pixels.dtype == np.uint8 and np.array_equal(k.pixels, (cmap.T[idx] // 257).astype(np.uint8))


def test_tiff_resolution_in_cm_gives_spacing_inch_does_not():
    a = np.zeros((4, 6), np.uint8)
    (cm,) = load_bytes(tiff(a, resolution=(50.0, 20.0), resolutionunit="CENTIMETER"), "cm.tif")
    assert cm.spacing == pytest.approx((0.5, 0.2))  # (row = 10/yres, col = 10/xres) mm
    (inch,) = load_bytes(tiff(a, resolution=(300.0, 300.0), resolutionunit="INCH"), "in.tif")
    assert inch.spacing is None
    (ij,) = load_bytes(tiff(np.zeros((3, 4, 6), np.uint8), imagej=True, resolution=(4.0, 2.0),
                            metadata={"unit": "um", "spacing": 3.0, "axes": "ZYX"}), "ij.tif")
    assert ij.spacing == pytest.approx((0.0005, 0.00025)) and ij.slice_spacing == pytest.approx(0.003)
    assert ij.stack == "slice"


def test_tiff_compressed_with_lzw_uses_the_pillow_fallback():
    a = RNG.integers(0, 65536, (9, 13), dtype=np.uint16)
    buf = io.BytesIO()
    PILImage.fromarray(a).save(buf, format="TIFF", compression="tiff_lzw")
    (img,) = load_bytes(buf.getvalue(), "lzw.tif")
    assert np.array_equal(img.pixels, a)


def test_tiff_miniswhite_sets_invert():
    a = RNG.integers(0, 256, (4, 4), dtype=np.uint8)
    (img,) = load_bytes(tiff(a, photometric="miniswhite"), "mw.tif")
    assert img.invert and np.array_equal(img.pixels, a)


# ---------------------------------------------------------------------------- NIfTI
VOX = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3)


def test_nifti_oriented_volume_uses_zooms_and_radiological_layout():
    data = nifti(VOX, np.diag([0.8, 0.9, 2.5, 1.0]))
    assert sniff_format(data, "x.nii") == "nifti"
    (img,) = load_bytes(data, "x.nii")
    assert img.pixels.shape == (3, 5, 4) and img.stack == "slice" and img.pixels.dtype == np.float32
    for k in range(3):  # RAS: rows anterior→posterior, cols right→left
        np.testing.assert_array_equal(img.pixels[k], VOX[::-1, ::-1, k].T)
    assert img.spacing == pytest.approx((0.9, 0.8)) and img.slice_spacing == pytest.approx(2.5)
    assert img.units == "a.u." and img.source_format == "nifti"


def test_nifti_flipped_axis_is_reoriented():
    (img,) = load_bytes(nifti(VOX, np.diag([-0.8, 0.9, 2.5, 1.0])), "lps.nii")
    for k in range(3):
        np.testing.assert_array_equal(img.pixels[k], VOX[:, ::-1, k].T)


def test_nifti_without_orientation_keeps_voxel_order():
    (img,) = load_bytes(nifti(VOX, np.diag([0.8, 0.9, 2.5, 1.0]), oriented=False), "raw.nii")
    assert img.pixels.shape == (3, 4, 5)
    for k in range(3):
        np.testing.assert_array_equal(img.pixels[k], VOX[:, :, k])
    assert img.spacing == pytest.approx((0.8, 0.9))


def test_nifti_scaling_gzip_4d_and_2d():
    (img,) = load_bytes(gzip.compress(nifti(VOX, np.eye(4), oriented=False, slope=2.0, inter=-5.0)), "s.nii.gz")
    np.testing.assert_array_equal(img.pixels[1], VOX[:, :, 1] * 2.0 - 5.0)
    four = np.stack([VOX, VOX + 1000], axis=-1)
    (v4,) = load_bytes(nifti(four, np.eye(4), oriented=False), "4d.nii")
    np.testing.assert_array_equal(v4.pixels[2], VOX[:, :, 2])
    assert any("first of 2 volumes" in n for n in v4.metadata["notes"])
    flat = np.arange(12, dtype=np.float32).reshape(3, 4)
    (v2,) = load_bytes(nifti(flat, np.eye(4), oriented=False), "2d.nii")
    assert v2.pixels.shape == (3, 4) and v2.stack is None and np.array_equal(v2.pixels, flat)


def test_nifti_from_nibabel_test_data():
    path = pathlib.Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"
    ref = nib.load(str(path))
    (img,) = load_path(path)
    x, y, z = ref.shape[:3]
    assert img.pixels.shape == (z, y, x)
    assert sorted(img.spacing) == pytest.approx(sorted(float(v) for v in ref.header.get_zooms()[:2]))


# ---------------------------------------------------------------------------- ZIP, folders, batch
def _zip(named: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, d in named.items():
            zf.writestr(n, d)
    return buf.getvalue()


def test_zip_with_nested_folders_and_mixed_formats():
    a = RNG.integers(0, 256, (5, 5), dtype=np.uint8)
    archive = _zip({"top.png": png(a), "a/b/c/deep.tif": tiff(a), "a/x.dcm": make_dicom(),
                    "__MACOSX/a/._x.dcm": b"junk", "a/b/": b""})
    images = load_bytes(archive, "archive.zip")
    assert [im.name for im in images] == ["archive.zip/top.png", "archive.zip/a/b/c/deep.tif", "archive.zip/a/x.dcm"]
    assert [im.source_format for im in images] == ["png", "tiff", "dicom"]
    assert np.array_equal(images[1].pixels, a)
    meta = read_metadata(archive, "archive.zip")
    assert meta["format"] == "ZIP" and meta["entries"] == 5
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        assert meta["uncompressed_bytes"] == sum(i.file_size for i in zf.infolist())


def test_folder_recursive_and_load_image(tmp_path):
    root = tmp_path / "study"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "sub" / "deeper" / "img.png").write_bytes(png(np.full((3, 3), 9, np.uint8)))
    (root / "scan").write_bytes(make_dicom())
    (root / ".hidden.png").write_bytes(b"not even an image")
    (root / "notes.txt").write_text("hello")
    errors: list[LoadError] = []
    images = load_path(root, errors=errors)
    assert sorted(im.name for im in images) == ["study/scan", "study/sub/deeper/img.png"]
    assert [e.filename for e in errors] == ["study/notes.txt"]
    first = load_image(root / "sub" / "deeper" / "img.png")
    assert first.name == "img.png" and int(first.pixels[0, 0]) == 9
    assert load_image(png(np.zeros((2, 2), np.uint8)), "mem.png").name == "mem.png"


def test_load_many_mixes_paths_bytes_and_upload_objects(tmp_path):
    p = tmp_path / "a.png"
    p.write_bytes(png(np.zeros((2, 2), np.uint8)))

    class Upload:  # duck-typed like Streamlit's UploadedFile
        name = "up.tif"

        def getvalue(self):
            return tiff(np.ones((2, 3), np.uint8))

    images, errors = load_many([p, ("b.dcm", make_dicom()), Upload(), tmp_path / "missing.png", ("bad.png", b"xyz")])
    assert [im.name for im in images] == ["a.png", "b.dcm", "up.tif"]
    assert [(e.filename, e.reason) for e in errors] == [
        ("missing.png", "file not found"),
        ("bad.png", "not an image: unrecognised content (looks like text)")]


def test_mislabelled_png_named_dcm_is_loaded_as_png():
    data = png(np.full((3, 3), 5, np.uint8))
    assert sniff_format(data, "scan.dcm") == "png"
    (img,) = load_bytes(data, "scan.dcm")
    assert img.source_format == "png" and img.name == "scan.dcm"


@pytest.mark.parametrize("maker, fmt", [
    (lambda: png(np.zeros((2, 2), np.uint8)), "png"),
    (lambda: tiff(np.zeros((2, 2), np.uint8)), "tiff"),
    (lambda: nifti(VOX, np.eye(4)), "nifti"),
    (lambda: gzip.compress(nifti(VOX, np.eye(4))), "nifti"),
    (lambda: _zip({"a.txt": b"x"}), "zip"),
    (lambda: make_dicom(), "dicom"),
    (lambda: b"hello world, plain text", "unknown"),
    (lambda: b"", "unknown"),
])
def test_sniff_format(maker, fmt):
    assert sniff_format(maker(), "whatever.bin") == fmt


def test_read_metadata_for_each_format_uses_safe_keys_only():
    for data, name, fmt in ((png(np.zeros((3, 5), np.uint16)), "a.png", "PNG"),
                            (tiff(np.zeros((2, 3, 5), np.uint8)), "a.tif", "TIFF"),
                            (nifti(VOX, np.eye(4)), "a.nii", "NIfTI-1")):
        meta = read_metadata(data, name)
        assert meta["format"] == fmt and set(meta) <= SAFE_METADATA_KEYS
    assert read_metadata(png(np.zeros((3, 5), np.uint16)), "a.png")["bit_depth"] == 16
    assert read_metadata(tiff(np.zeros((2, 3, 5), np.uint8)), "a.tif")["frames"] == 2


# ---------------------------------------------------------------------------- limits
def test_limits_from_env_and_overrides():
    env = {ENV_NAMES["max_pixels_per_frame"]: "1_000", "MEDLENS_ZIP_MAX_RATIO": "50", "MEDLENS_MAX_FILE_BYTES": "2G"}
    lim = Limits.from_env(env)
    assert lim.max_pixels_per_frame == 1000 and lim.zip_max_ratio == 50 and lim.max_file_bytes == 2 << 30
    assert Limits.from_env({}, zip_max_depth=2).zip_max_depth == 2
    with pytest.raises(ValueError, match="MEDLENS_MAX_PIXELS"):
        Limits.from_env({"MEDLENS_MAX_PIXELS": "lots"})
    with pytest.raises(ValueError):
        Limits(max_pixels_per_frame=0)
    with pytest.raises(LoadError, match=r"image too large: 40×30 px exceeds the 1000 px limit"):
        load_bytes(png(np.zeros((30, 40), np.uint8)), "p.png", limits=Limits(max_pixels_per_frame=1000))
