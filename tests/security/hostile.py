"""The hostile upload catalogue shared by the end-to-end security tests (generated, never committed).

``catalogue()`` → list of :class:`Case`: a file name, its bytes, and what must happen to it
("error": a message naming it; "image": it loads; ``entry_errors``: per-entry errors of a ZIP
whose other entries load). Generators of the loader tests are reused, not copied.
"""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass, field

import numpy as np
import tifffile
from PIL import Image as PILImage

from tests.analysis.test_io_bad_input import deflate_bomb_zip, good_png, png_chunk, png_with_header, zip_of
from tests.analysis.test_io_dicom import TEST_FILES, make_dicom

HTML_NAME = '<img src=x onerror="alert(1)">.png'
SHELL_NAME = "$(touch pwned); `id` | rm -rf ~ x.png"
RTL_NAME = "scan\u202egnp.dcm"
UNICODE_NAME = "скан ü 🩻 脑.png"
MARKDOWN_NAME = "![t](http://127.0.0.1:9/track.png) [click](javascript:alert(1)).png"
SHORT_MARKDOWN_NAME = "![](//e.x/t.png)"  # short enough to survive an 18-character label


@dataclass
class Case:
    name: str
    data: bytes
    expect: str  # "error" | "image" | "zip"
    entry_errors: list[str] = field(default_factory=list)  # for "zip": names of failing entries
    images: list[str] = field(default_factory=list)  # for "zip": names of the entries that load
    bomb: bool = False


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def tiff(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kw)
    return buf.getvalue()


def tiff_bomb_header(width: int = 100_000, height: int = 100_000) -> bytes:
    """A little-endian TIFF whose only IFD declares width×height 8-bit grey pixels in one
    deflate strip of 16 bytes."""
    strip = b"x\x9c" + bytes(14)
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 8), (262, 3, 1, 1),
               (273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, len(strip))]
    ifd_off = 8
    data_off = ifd_off + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        if tag == 273:
            value = data_off
        ifd += struct.pack("<HHI", tag, typ, count) + (struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value))
    return b"II*\x00" + struct.pack("<I", ifd_off) + ifd + b"\0\0\0\0" + strip


def nested_sequences(depth: int = 5000) -> bytes:
    base = make_dicom(np.zeros((4, 4), np.int16))
    pos = base.rfind(b"\xe0\x7f\x10\x00")
    opening = (struct.pack("<HH", 0x0040, 0x0275) + b"SQ\0\0" + b"\xff" * 4 + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF))
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return base[:pos] + opening * depth + closing * depth + base[pos:]


def float_dicom_with_nan_inf() -> bytes:
    a = np.array([[1.0, np.nan, 3.0], [np.inf, -np.inf, 2.0]], np.float32)
    return make_dicom(np.zeros(a.shape, np.int16), PixelData=None, FloatPixelData=a.tobytes(), BitsAllocated=32,
                      BitsStored=None, HighBit=None, PixelRepresentation=None)


def unsafe_zip() -> bytes:
    link = zipfile.ZipInfo("link.png")
    link.create_system = 3
    link.external_attr = 0o120777 << 16
    return zip_of([("good/ok.png", png(np.full((3, 3), 101, np.uint8))), ("../evil.png", good_png()), ("/abs.png", good_png()),
                   ("..\\win.png", good_png()), ("C:/drive.png", good_png()), (link, b"/etc/passwd")])


def encrypted_zip() -> bytes:
    archive = bytearray(zip_of([("secret.png", good_png()), ("open.png", png(np.full((3, 3), 102, np.uint8)))],
                               method=zipfile.ZIP_STORED))
    struct.pack_into("<H", archive, 6, struct.unpack_from("<H", archive, 6)[0] | 1)
    cd = archive.find(b"PK\x01\x02")
    struct.pack_into("<H", archive, cd + 8, struct.unpack_from("<H", archive, cd + 8)[0] | 1)
    return bytes(archive)


def text_chunk_bomb() -> bytes:
    import zlib

    c = zlib.compressobj(9)
    z = b"".join(c.compress(bytes(1 << 20)) for _ in range(64)) + c.flush()
    return png_with_header(8, 8, png_chunk(b"zTXt", b"Comment\0\0" + z))


def catalogue() -> list[Case]:
    rng = np.random.default_rng(2024)
    good = make_dicom(np.arange(64, dtype=np.int16).reshape(8, 8))
    return [
        Case("good-first.dcm", good, "image"),
        Case("cut-header.dcm", good[:300], "error"),
        Case("cut-pixels.dcm", good[:-20], "error"),
        Case("rtplan.dcm", (TEST_FILES / "rtplan.dcm").read_bytes(), "error"),
        Case("report-SR.dcm", (TEST_FILES / "test-SR.dcm").read_bytes(), "error"),
        Case("length-mismatch.dcm", make_dicom(np.zeros((8, 8), np.int16), Rows=16), "error"),
        Case("bits12.dcm", make_dicom(BitsAllocated=12), "error"),
        Case("nan-inf.dcm", float_dicom_with_nan_inf(), "image"),
        Case("nan-inf.tif", tiff(np.array([[np.nan, 1.0], [np.inf, 2.0]], np.float32)), "image"),
        Case("one-pixel.png", png(np.array([[200]], np.uint8)), "image"),
        Case("one-row.dcm", make_dicom(np.arange(50, dtype=np.int16).reshape(1, 50)), "image"),
        Case("rows0.dcm", make_dicom(Rows=0), "error"),
        Case("huge-dims.dcm", make_dicom(np.zeros((2, 2), np.int16), Rows=65535, Columns=65535), "error", bomb=True),
        Case("ww0.dcm", make_dicom(WindowCenter="40", WindowWidth="0"), "image"),
        Case("nan-slope.dcm", make_dicom(RescaleSlope="NaN", RescaleIntercept="0"), "error"),
        Case("no-transfer-syntax.dcm", make_dicom(meta=False), "image"),
        Case("nested-sequences.dcm", nested_sequences(), "error"),
        Case("bomb-30k.png", png_with_header(30_000, 30_000), "error", bomb=True),
        Case("bomb-100k.png", png_with_header(100_000, 100_000), "error", bomb=True),
        Case("bomb-100k.tif", tiff_bomb_header(), "error", bomb=True),
        Case("text-bomb.png", text_chunk_bomb(), "error", bomb=True),
        Case("pages20.tif", tiff(np.arange(20 * 16, dtype=np.uint8).reshape(20, 4, 4)), "image"),
        Case("uint32.tif", tiff(np.arange(16, dtype=np.uint32).reshape(4, 4) * 100_000), "image"),
        Case("noise.dcm", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "error"),
        Case("notes.png", b"Patient notes, nothing else\n" * 20, "error"),
        Case("empty.dcm", b"", "error"),
        Case("unsafe.zip", unsafe_zip(), "zip", images=["unsafe.zip/good/ok.png"], entry_errors=[
            "unsafe.zip/../evil.png", "unsafe.zip//abs.png", "unsafe.zip/..\\win.png", "unsafe.zip/C:/drive.png",
            "unsafe.zip/link.png"]),
        Case("bomb.zip", deflate_bomb_zip(), "error", bomb=True),
        Case("nested-bomb.zip", zip_of([("inner/bomb.zip", deflate_bomb_zip()), ("ok.png", png(np.full((3, 3), 103, np.uint8)))],
                                       method=zipfile.ZIP_STORED), "zip", images=["nested-bomb.zip/ok.png"],
             entry_errors=["nested-bomb.zip/inner/bomb.zip"], bomb=True),
        Case("many.zip", zip_of([(f"f{i}.txt", b"") for i in range(20_000)], method=zipfile.ZIP_STORED), "error", bomb=True),
        Case("encrypted.zip", encrypted_zip(), "zip", images=["encrypted.zip/open.png"], entry_errors=["encrypted.zip/secret.png"]),
        Case(UNICODE_NAME, png(np.full((5, 6), 17, np.uint8)), "image"),
        Case(RTL_NAME, b"not an image at all\n" * 10, "error"),
        Case(HTML_NAME, b"<html><body>hi</body></html>", "error"),
        Case(SHELL_NAME, png(np.full((5, 7), 33, np.uint8)), "image"),
        Case(MARKDOWN_NAME, png(np.full((6, 5), 44, np.uint8)), "image"),
        Case(SHORT_MARKDOWN_NAME, png(np.full((6, 5), 45, np.uint8)), "image"),
        Case("good-last.png", png(np.full((4, 4), 99, np.uint8)), "image"),
    ]


def expected_errors(cases: list[Case]) -> list[str]:
    out: list[str] = []
    for c in cases:
        if c.expect == "error":
            out.append(c.name)
        out.extend(c.entry_errors)
    return out


def expected_images(cases: list[Case]) -> list[str]:
    """Names of the images that load, in input order (every one has distinct content)."""
    return [n for c in cases for n in ([c.name] if c.expect == "image" else c.images)]
