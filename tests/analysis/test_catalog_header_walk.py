"""The catalog's own header walk (``catalog._walk_header``) against pydicom: for every DICOM
file in pydicom's bundled test set and the sample dataset, a row built from the walk equals
the row built from ``pydicom.dcmread`` (same tags, same statistics, same failure reason),
the walk is really used for the ordinary files, and damaged files only ever fall back."""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pydicom
import pytest

from analysis import catalog as cat
from analysis.dataset import sample_manifest_path

TEST_FILES = pathlib.Path(pydicom.__file__).parent / "data" / "test_files"
SALT = b"walk-test-salt-0123"


def _dicom_files() -> list[pathlib.Path]:
    files = [p for p in sorted(TEST_FILES.rglob("*")) if p.is_file()]
    files += sorted(sample_manifest_path().parent.rglob("*.dcm"))
    return [p for p in files if cat._looks_dicom(p.read_bytes()[:200] + b"\0" * 16, p.name)]


def _row(data: bytes, monkeypatch, walk: bool):  # type: ignore[no-untyped-def]
    real = cat._walk_header
    with monkeypatch.context() as m:
        if not walk:
            m.setattr(cat, "_walk_header", lambda d: None)
        else:
            m.setattr(cat, "_walk_header", real)
        try:
            return cat._dicom_image(data, "f.dcm", SALT)
        except Exception as exc:  # noqa: BLE001 - compared as outcomes
            return ("error", type(exc).__name__, getattr(exc, "reason", str(exc)))


def _same(a, b) -> bool:  # type: ignore[no-untyped-def]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def test_walk_gives_the_same_rows_as_pydicom(monkeypatch):  # type: ignore[no-untyped-def]
    files = _dicom_files()
    assert len(files) > 100
    walked = 0
    for p in files:
        data = p.read_bytes()
        walked += cat._walk_header(data) is not None
        a, b = _row(data, monkeypatch, True), _row(data, monkeypatch, False)
        if isinstance(a, dict) and isinstance(b, dict):
            bad = {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if not _same(a.get(k), b.get(k))}
            assert not bad, (p.name, bad)
        else:
            assert a == b, p.name
    assert walked >= 0.75 * len(files), (walked, len(files))  # the fast path is the usual path


def test_walk_reads_known_values_and_stops_at_pixel_data():  # type: ignore[no-untyped-def]
    data = (TEST_FILES / "CT_small.dcm").read_bytes()
    elems, pixel_pos, ts = cat._walk_header(data)
    assert ts == "1.2.840.10008.1.2.1"
    assert data[pixel_pos:pixel_pos + 4] == b"\xe0\x7f\x10\x00"
    h = cat._Header(raw=elems)
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    assert h.integer("Rows") == ds.Rows == 128
    assert h.numbers("PixelSpacing") == [float(v) for v in ds.PixelSpacing]
    assert h.number("RescaleIntercept") == float(ds.RescaleIntercept)
    assert h.text("Modality") == "CT"


def test_walk_skips_undefined_length_sequences():  # type: ignore[no-untyped-def]
    # a file with nested undefined-length sequences before the pixel data
    cands = [p for p in TEST_FILES.rglob("*.dcm") if p.is_file()]
    found = 0
    for p in cands:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:  # noqa: BLE001
            continue
        data = p.read_bytes()
        if b"\xfe\xff\xdd\xe0" not in data or "PixelData" not in pydicom.dcmread(p):
            continue
        w = cat._walk_header(data)
        if w is None:
            continue
        found += 1
        h = cat._Header(raw=w[0])
        assert h.integer("Rows") == ds.Rows, p.name
    assert found >= 3


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's own warnings about the damage
@pytest.mark.parametrize("seed", range(4))
def test_damaged_headers_fall_back_or_fail_with_a_reason(seed, tmp_path):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    base = bytearray((TEST_FILES / "CT_small.dcm").read_bytes())
    outcomes = set()
    for k in range(150):
        d = bytearray(base)
        for _ in range(int(rng.integers(1, 6))):
            i = int(rng.integers(132, 1200))
            d[i] = int(rng.integers(0, 256))
        if rng.random() < 0.3:
            d = d[: int(rng.integers(132, len(d)))]
        got = cat._walk_header(bytes(d))  # never raises
        assert got is None or isinstance(got[0], dict)
        f = tmp_path / f"m{k}.dcm"
        f.write_bytes(bytes(d))
        row = cat.ingest_file({"abs": str(f), "path": f.name, "size": len(d), "mtime_ns": 0}, salt=SALT)
        assert row["status"] in ("ok", "failed")
        assert row["status"] == "ok" or row["error"], row
        outcomes.add(row["status"])
    assert outcomes == {"ok", "failed"}  # the mutations both break files and leave some readable


def test_rle_fast_path_equals_pydicom_pixel_array():  # type: ignore[no-untyped-def]
    checked = 0
    for p in sorted(TEST_FILES.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        w = cat._walk_header(data)
        if w is None or w[2] != cat._RLE:
            continue
        got = cat._rle_pixels(data, w[1], cat._Header(raw=w[0]), w[2])
        ref = pydicom.dcmread(p).pixel_array
        if got is None:  # colour / other layouts go through pydicom's pipeline
            assert ref.ndim >= 3 and ref.shape[-1] == 3 or pydicom.dcmread(p).SamplesPerPixel != 1, p.name
            continue
        assert got.dtype == ref.dtype and np.array_equal(got, ref), p.name
        checked += 1
    assert checked >= 3, checked


@pytest.mark.parametrize("signed, frames", [(True, 1), (False, 3)])
def test_rle_fast_path_on_encoded_ct(tmp_path, signed, frames):  # type: ignore[no-untyped-def]
    from pydicom.uid import RLELossless

    from tests.helpers.dicom import ct_dicom

    rng = np.random.default_rng(3)
    shape = (frames, 40, 48) if frames > 1 else (40, 48)
    lo, hi = (-1024, 2047) if signed else (0, 4095)
    arr = rng.integers(lo, hi + 1, size=shape).astype(np.int16 if signed else np.uint16)
    ct_dicom(tmp_path / "ct.dcm")
    ds = pydicom.dcmread(tmp_path / "ct.dcm")
    ds.PixelRepresentation = int(signed)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.Rows, ds.Columns = shape[-2], shape[-1]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.compress(RLELossless, arr)
    f = tmp_path / "rle.dcm"
    ds.save_as(f)
    data = f.read_bytes()
    w = cat._walk_header(data)
    assert w is not None and w[2] == cat._RLE
    got = cat._rle_pixels(data, w[1], cat._Header(raw=w[0]), w[2])
    assert got is not None and np.array_equal(got, arr) and np.array_equal(got, pydicom.dcmread(f).pixel_array)
