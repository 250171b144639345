"""Hostile and broken inputs: each one is a LoadError naming the file, the batch goes on,
bombs are refused from headers without spending memory. All inputs are generated here."""

from __future__ import annotations

import io
import pickle
import struct
import tracemalloc
import zipfile
import zlib

import numpy as np
import pydicom
import pytest
from PIL import Image as PILImage

from analysis.io import LoadError, load_bytes, load_many, read_metadata
from analysis.limits import Limits
from tests.analysis.test_io_dicom import TEST_FILES, make_dicom

GOOD_PNG_ARRAY = np.arange(16, dtype=np.uint8).reshape(4, 4)


def good_png() -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(GOOD_PNG_ARRAY).save(buf, format="PNG")
    return buf.getvalue()


def fail(data: bytes, name: str = "bad.bin", **kw) -> LoadError:
    with pytest.raises(LoadError) as info:
        load_bytes(data, name, **kw)
    err = info.value
    assert err.filename == name and str(err) == f"{name}: {err.reason}"
    assert "Traceback" not in err.reason and "\n" not in err.reason
    return err


def peak_mb(fn) -> float:
    tracemalloc.start()
    try:
        fn()
    except LoadError:
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


# ---------------------------------------------------------------------------- crafted containers
def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_with_header(width: int, height: int, extra_chunks: bytes = b"") -> bytes:
    """A PNG that declares width×height but carries a few bytes of image data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra_chunks
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b""))


def deflate_bomb_zip(size: int = 1 << 30, name: str = "zeros.dcm") -> bytes:
    """A real ZIP whose single entry inflates to ``size`` zero bytes, built in ~1 MB of memory:
    after a full flush deflate restarts, so every MiB of zeros compresses to the same block."""
    chunk = 1 << 20
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)
    payload = block * (size // chunk) + b"\x03\x00"  # empty final block
    crc, zeros = 0, bytes(chunk)
    for _ in range(size // chunk):
        crc = zlib.crc32(zeros, crc)
    fn = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(payload), size, len(fn), 0) + fn
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(payload), size,
                          len(fn), 0, 0, 0, 0, 0, 0) + fn
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(payload), 0)
    return local + payload + central + eocd


def zip_of(entries: list[tuple[zipfile.ZipInfo | str, bytes]], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return buf.getvalue()


# ---------------------------------------------------------------------------- DICOM
def test_truncated_dicom_header_and_pixel_data():
    data = make_dicom(np.zeros((8, 8), np.int16))
    assert fail(data[:300], "cut.dcm").reason.startswith("truncated DICOM")
    for cut in range(140, len(data) - 1, 23):  # wherever it is cut: a LoadError, never a crash
        fail(data[:cut], "cut.dcm")
    assert fail(data[:-20], "cut.dcm").reason == "truncated pixel data: expected 128 bytes, found 108"


@pytest.mark.parametrize("fname, kind", [("rtplan.dcm", "RT Plan"), ("test-SR.dcm", "Comprehensive SR"),
                                         ("rtstruct.dcm", "RT Structure Set")])
def test_dicom_without_pixels_names_its_kind(fname, kind):
    assert fail((TEST_FILES / fname).read_bytes(), fname).reason == f"no image in this DICOM ({kind})"


def test_rows_zero_and_bits_allocated_12():
    assert fail(make_dicom(Rows=0), "r0.dcm").reason == "image has no pixels (Rows=0, Columns=8)"
    assert fail(make_dicom(BitsAllocated=12), "b12.dcm").reason == "BitsAllocated 12 is not supported"


def test_huge_declared_dimensions_are_refused_before_decoding():
    tiny = np.zeros((2, 2), np.int16)
    big = make_dicom(tiny, Rows=65535, Columns=65535)
    assert fail(big, "big.dcm").reason == "image too large: 65535×65535 px exceeds the 50 Mpx limit"
    frames = make_dicom(tiny, Rows=7000, Columns=7000, NumberOfFrames=1000)
    reason = fail(frames, "frames.dcm").reason
    assert reason.startswith("image too large: 1000 frame(s) of 7000×7000 px would need") and "limit 1.0 GiB" in reason
    short = make_dicom(tiny, Rows=4000, Columns=4000)
    assert fail(short, "short.dcm").reason == "truncated pixel data: expected 32000000 bytes, found 8"
    for data in (big, frames, short):
        assert peak_mb(lambda d=data: load_bytes(d, "x.dcm")) < 20


def test_window_width_zero_loads_without_a_window():
    (img,) = load_bytes(make_dicom(WindowCenter="40", WindowWidth="0"), "w0.dcm")
    assert img.window is None and any("window" in n for n in img.metadata["notes"])
    (neg,) = load_bytes(make_dicom(WindowCenter="40", WindowWidth="-5"), "wneg.dcm")
    assert neg.window is None


def test_nan_or_zero_rescale_slope_is_refused():
    assert fail(make_dicom(RescaleSlope="NaN", RescaleIntercept="0"), "nan.dcm").reason == "invalid Rescale Slope (nan)"
    assert fail(make_dicom(RescaleSlope="0", RescaleIntercept="0"), "zero.dcm").reason == "invalid Rescale Slope (0.0)"


def test_thousands_of_nested_sequences_do_not_escape_as_recursion_error():
    def nested(depth: int) -> bytes:
        sq = struct.pack("<HH", 0x0040, 0x0275) + b"SQ\0\0" + b"\xff\xff\xff\xff"
        item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
        ends = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
        return (sq + item) * depth + ends * depth

    base = make_dicom(np.zeros((4, 4), np.int16))
    pos = base.rfind(b"\xe0\x7f\x10\x00")  # insert before Pixel Data, keeping tag order
    shallow = base[:pos] + nested(3) + base[pos:]
    assert load_bytes(shallow, "ok.dcm")[0].pixels.shape == (4, 4)
    deep = base[:pos] + nested(5000) + base[pos:]
    assert fail(deep, "deep.dcm").reason == "DICOM sequences nested too deeply to read safely"
    with pytest.raises(LoadError):
        read_metadata(deep, "deep.dcm")


# ---------------------------------------------------------------------------- images
@pytest.mark.parametrize("side", [30000, 100000])
def test_png_bomb_header_is_refused_from_the_header(side):
    data = png_with_header(side, side)
    assert len(data) < 200
    assert fail(data, "bomb.png").reason == f"image too large: {side}×{side} px exceeds the 50 Mpx limit"
    assert peak_mb(lambda: load_bytes(data, "bomb.png")) < 5


def test_png_text_chunk_bomb_is_refused_without_inflating_it():
    c = zlib.compressobj(9)
    z = b"".join(c.compress(bytes(1 << 20)) for _ in range(64)) + c.flush()  # 64 MiB of zeros
    ztxt = png_chunk(b"zTXt", b"Comment\0\0" + z)
    data = png_with_header(8, 8, ztxt)
    assert len(data) < 2 << 20
    assert fail(data, "text.png").reason == "PNG text chunks too large (possible decompression bomb)"
    assert peak_mb(lambda: load_bytes(data, "text.png")) < 100


@pytest.mark.parametrize("name", ["noise.png", "noise.dcm", "noise"])
def test_random_bytes_and_text_are_not_images(name):
    noise = np.random.default_rng(11).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    assert fail(noise, name).reason == "not an image: unrecognised content (unrecognised binary data)"
    assert fail(b"Patient notes, nothing else\n" * 20, name).reason == \
        "not an image: unrecognised content (looks like text)"
    assert fail(b"<!DOCTYPE html><html><body>hi</body></html>", name).reason == \
        "not an image: unrecognised content (looks like HTML)"


def test_zero_byte_file():
    assert fail(b"", "empty.dcm").reason == "empty file (0 bytes)"


def test_damaged_png_and_tiff():
    buf = io.BytesIO()
    PILImage.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)).save(buf, format="PNG")
    data = buf.getvalue()
    assert fail(data[: len(data) // 2], "cut.png").reason == "truncated PNG image data"
    buf = io.BytesIO()
    PILImage.fromarray(np.zeros((64, 64), np.uint8)).save(buf, format="TIFF")
    fail(buf.getvalue()[:100], "cut.tif")


def test_random_mutations_only_ever_raise_loaderror():
    rng = np.random.default_rng(5)
    import tifffile
    import nibabel as nib

    t = io.BytesIO()
    tifffile.imwrite(t, np.arange(64, dtype=np.uint16).reshape(8, 8))
    ct = (TEST_FILES / "CT_small.dcm").read_bytes()
    fixed = [zipfile.ZipInfo(n, date_time=(2020, 1, 1, 0, 0, 0)) for n in ("a.png", "b.dcm")]
    for info in fixed:
        info.compress_type = zipfile.ZIP_DEFLATED
    seeds = [ct, (TEST_FILES / "MR_small_RLE.dcm").read_bytes(), good_png(), t.getvalue(),
             nib.Nifti1Image(np.zeros((4, 4, 2), np.float32), np.eye(4)).to_bytes(),
             zip_of([(fixed[0], good_png()), (fixed[1], ct)])]  # all inputs fixed: mutations are reproducible
    outcomes = {"loaded": 0, "error": 0}
    for seed in seeds:
        for _ in range(25):
            b = bytearray(seed)
            for pos in rng.integers(0, len(b), size=int(rng.integers(1, 8))):
                b[pos] = int(rng.integers(0, 256))
            if rng.random() < 0.3:
                b = b[: int(rng.integers(1, len(b)))]
            try:
                load_bytes(bytes(b), "mutant")
                outcomes["loaded"] += 1
            except LoadError as e:  # a ZIP with one failing entry reports that entry
                assert (e.filename == "mutant" or e.filename.startswith("mutant/")) and e.reason
                outcomes["error"] += 1
    assert outcomes["loaded"] > 0 and outcomes["error"] > 0


# ---------------------------------------------------------------------------- ZIP
def test_zip_unsafe_entries_are_per_entry_errors_and_the_rest_loads():
    link = zipfile.ZipInfo("link.png")
    link.create_system = 3
    link.external_attr = 0o120777 << 16
    archive = zip_of([("good/ok.png", good_png()), ("../evil.png", good_png()), ("/abs.png", good_png()),
                      ("..\\win.png", good_png()), ("C:/drive.png", good_png()), (link, b"/etc/passwd")])
    images, errors = load_many([("upload.zip", archive)])
    assert [im.name for im in images] == ["upload.zip/good/ok.png"]
    assert np.array_equal(images[0].pixels, GOOD_PNG_ARRAY)
    got = {e.filename: e.reason for e in errors}
    assert got == {
        "upload.zip/../evil.png": "unsafe path in ZIP: ../evil.png",
        "upload.zip//abs.png": "unsafe path in ZIP: /abs.png",
        "upload.zip/..\\win.png": "unsafe path in ZIP: ..\\win.png",
        "upload.zip/C:/drive.png": "unsafe path in ZIP: C:/drive.png",
        "upload.zip/link.png": "symbolic link in ZIP: not followed",
    }


def test_zip_bomb_is_refused_from_the_central_directory():
    bomb = deflate_bomb_zip()
    assert len(bomb) < 2 << 20
    with zipfile.ZipFile(io.BytesIO(bomb)) as zf:  # it really is a ZIP of 1 GiB of zeros
        assert zf.infolist()[0].file_size == 1 << 30
        with zf.open("zeros.dcm") as f:
            assert f.read(3 << 20) == bytes(3 << 20)
    reason = fail(bomb, "bomb.zip").reason
    assert reason.startswith("ZIP bomb: entries would inflate to 1.0 GiB") and "limit 200×" in reason
    assert peak_mb(lambda: load_bytes(bomb, "bomb.zip")) < 100
    images, errors = load_many([("bomb.zip", bomb), ("ok.png", good_png())])
    assert [im.name for im in images] == ["ok.png"] and errors[0].filename == "bomb.zip"
    # a total beyond the limit is a bomb too, whatever the ratio
    assert fail(bomb, "b.zip", limits=Limits(zip_max_total_bytes=1 << 29)).reason.startswith(
        "ZIP bomb: entries would inflate to 1.0 GiB (limit 512.0 MiB)")


def test_nested_zip_bomb_is_not_expanded():
    outer = zip_of([("inner/bomb.zip", deflate_bomb_zip()), ("ok.png", good_png())], method=zipfile.ZIP_STORED)
    images, errors = load_many([("outer.zip", outer)])
    assert [im.name for im in images] == ["outer.zip/ok.png"]
    assert [(e.filename, e.reason) for e in errors] == [
        ("outer.zip/inner/bomb.zip", "ZIP inside a ZIP is not opened (nesting limit 1)")]
    assert peak_mb(lambda: load_many([("outer.zip", outer)])) < 100
    # allowed one level deeper, the inner archive's own central directory is checked
    images, errors = load_many([("outer.zip", outer)], limits=Limits(zip_max_depth=2))
    assert errors[0].filename == "outer.zip/inner/bomb.zip" and errors[0].reason.startswith("ZIP bomb")


def test_zip_with_20000_entries_is_refused():
    archive = zip_of([(f"f{i}.txt", b"") for i in range(20_000)], method=zipfile.ZIP_STORED)
    assert fail(archive, "many.zip").reason == "ZIP has 20000 entries (limit 10000)"


def test_encrypted_entry_is_a_per_entry_error():
    archive = bytearray(zip_of([("secret.png", good_png()), ("open.png", good_png())], method=zipfile.ZIP_STORED))
    struct.pack_into("<H", archive, 6, struct.unpack_from("<H", archive, 6)[0] | 1)  # local header flag
    cd = archive.find(b"PK\x01\x02")
    struct.pack_into("<H", archive, cd + 8, struct.unpack_from("<H", archive, cd + 8)[0] | 1)
    images, errors = load_many([("enc.zip", bytes(archive))])
    assert [im.name for im in images] == ["enc.zip/open.png"]
    assert [(e.filename, e.reason) for e in errors] == [
        ("enc.zip/secret.png", "encrypted ZIP entry (password-protected): not supported")]


def test_declared_sizes_are_not_trusted():
    archive = bytearray(zip_of([("zeros.dcm", bytes(4 << 20))]))
    struct.pack_into("<I", archive, 22, 1000)  # local header: uncompressed size
    cd = archive.find(b"PK\x01\x02")
    struct.pack_into("<I", archive, cd + 24, 1000)  # central directory: uncompressed size
    data = bytes(archive)
    images, errors = load_many([("liar.zip", data)])
    assert not images and errors[0].filename == "liar.zip/zeros.dcm"
    assert errors[0].reason == "damaged ZIP entry (CRC check failed or data truncated)"
    assert peak_mb(lambda: load_many([("liar.zip", data)])) < 20


def test_damaged_zip():
    archive = zip_of([("a.png", good_png())])
    assert fail(archive[: len(archive) // 2], "half.zip").reason == "damaged ZIP archive (central directory unreadable)"


# ---------------------------------------------------------------------------- names, batches
NAMES = ["скан ü 🩻.dcm", "evil\u202egnp.dcm", "<script>alert(1)</script>.png", "$(rm -rf ~); `id` | x.png",
         "a\\b/../c.dcm", "name with\nnewline.png"]


@pytest.mark.parametrize("name", NAMES)
def test_odd_names_are_preserved_in_errors_and_images(name):
    err = fail(b"just text, not an image", name)
    assert err.filename == name and str(err).startswith(name + ": ")
    (img,) = load_bytes(good_png(), name)
    assert img.name == name


def test_load_many_goes_on_after_every_kind_of_bad_input():
    bad = [("empty.dcm", b""), ("r0.dcm", make_dicom(Rows=0)), ("plan.dcm", (TEST_FILES / "rtplan.dcm").read_bytes()),
           ("bomb.png", png_with_header(30000, 30000)), ("bomb.zip", deflate_bomb_zip(256 << 20)),
           ("noise.png", bytes(range(256)) * 8), ("cut.dcm", make_dicom()[:-5])]
    sources = bad[:3] + [("good.png", good_png())] + bad[3:] + [("good.dcm", make_dicom())]
    images, errors = load_many(sources)
    assert [im.name for im in images] == ["good.png", "good.dcm"]
    assert [e.filename for e in errors] == [n for n, _ in bad]
    assert all(isinstance(e, LoadError) and e.reason for e in errors)


def test_loaderror_pickles_and_compares_by_fields():
    e = LoadError("a.zip/b.dcm", "truncated pixel data: expected 8 bytes, found 2")
    back = pickle.loads(pickle.dumps(e))
    assert (back.filename, back.reason, str(back)) == (e.filename, e.reason, str(e))


def test_pydicom_bad_files_are_loaderrors():
    for fname in ("MR_truncated.dcm", "JPEG-lossy.dcm", "nested_priv_SQ.dcm", "meta_missing_tsyntax.dcm",
                  "rtplan_truncated.dcm"):
        fail((TEST_FILES / fname).read_bytes(), fname)
    assert pydicom.__version__.startswith("3.")
