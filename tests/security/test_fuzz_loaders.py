"""Property-based fuzzing of every loader with mutated real files (hypothesis).

Seeds: pydicom's own test files (uncompressed, RLE, JPEG, JPEG-LS, JPEG 2000, deflate,
big endian, multi-frame, RT dose), and generated PNG (8/16-bit grey, RGB), TIFF (uint16,
deflate, multi-page, float), NIfTI (.nii, .nii.gz), ZIP and gzip. Each example applies 1–6
mutations (byte flips, "interesting" integers written over header fields, insertions,
deletions, truncation, duplicated chunks) and calls the loaders. The property: the only
exception that ever leaves a loader is ``LoadError``, naming the file.

Runs ``sum(EXAMPLES.values())`` ≥ 1000 cases per run, ``derandomize=True`` (the same cases
on every CI run), ``deadline=None``, no example database written.
"""

from __future__ import annotations

import gzip
import io
import struct
import zipfile

import nibabel as nib
import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from analysis import io as mio
from analysis.limits import Limits
from tests.analysis.test_io_dicom import TEST_FILES

# Smaller limits keep every mutated "huge" header cheap; behaviour is the same as the defaults.
LIMITS = Limits(max_pixels_per_frame=4_000_000, max_decoded_bytes=64 << 20, max_file_bytes=32 << 20,
                max_frames=512, zip_max_total_bytes=64 << 20)
EXAMPLES = {"dicom": 450, "raster": 300, "nifti_zip": 200, "metadata": 150}
assert sum(EXAMPLES.values()) >= 1000

DICOM_SEEDS = ["CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "JPEG-lossy.dcm", "MR_small_jpeg_ls_lossless.dcm",
               "MR_small_jp2klossless.dcm", "image_dfl.dcm", "MR_small_bigendian.dcm", "rtdose.dcm",
               "SC_rgb_rle_2frame.dcm", "examples_palette.dcm", "SC_ybr_full_422_uncompressed.dcm", "ExplVR_LitEndNoMeta.dcm"]

INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _tiff(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kw)
    return buf.getvalue()


def _seeds() -> dict[str, list[tuple[str, bytes]]]:
    ramp = np.arange(24 * 20, dtype=np.uint16).reshape(24, 20)
    dicoms = [(n, (TEST_FILES / n).read_bytes()) for n in DICOM_SEEDS if (TEST_FILES / n).exists()]
    assert len(dicoms) >= 10
    raster = [
        ("grey8.png", _png((ramp % 256).astype(np.uint8))),
        ("grey16.png", _png(ramp * 50)),
        ("rgb.png", _png(np.stack([ramp % 256] * 3, -1).astype(np.uint8))),
        ("u16.tif", _tiff(ramp)),
        ("deflate.tif", _tiff(ramp, compression="zlib")),
        ("pages.tif", _tiff(np.stack([ramp] * 4))),
        ("float.tif", _tiff(ramp.astype(np.float32) / 7)),
    ]
    vol = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
    nii = nib.Nifti1Image(vol, np.diag([0.8, 0.9, 2.0, 1.0])).to_bytes()
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in (raster[0], dicoms[0]):
            info = zipfile.ZipInfo(f"dir/{name}", date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    containers = [("vol.nii", nii), ("vol.nii.gz", gzip.compress(nii, mtime=0)), ("batch.zip", zbuf.getvalue()),
                  ("ct.dcm.gz", gzip.compress(dicoms[0][1], mtime=0))]
    return {"dicom": dicoms, "raster": raster, "nifti_zip": containers,
            "metadata": dicoms[:4] + raster[:4] + containers}


SEEDS = _seeds()

_mutation = st.one_of(
    st.tuples(st.just("set"), st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
    st.tuples(st.just("int"), st.floats(0, 1, exclude_max=True), st.sampled_from(INTERESTING)),
    st.tuples(st.just("insert"), st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.floats(0, 1, exclude_max=True), st.integers(1, 64)),
    st.tuples(st.just("dup"), st.floats(0, 1, exclude_max=True), st.integers(1, 256)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True), st.just(0)),
)


def _header_biased(frac: float, n: int) -> int:
    """Mutations land in the first 1 KiB (headers) half of the time."""
    if frac < 0.5:
        return int(frac * 2 * min(n, 1024))
    return int((frac - 0.5) * 2 * n)


def mutate(data: bytes, mutations: list[tuple]) -> bytes:
    b = bytearray(data)
    for op, frac, arg in mutations:
        if not b:
            break
        pos = min(_header_biased(frac, len(b)), len(b) - 1)
        if op == "set":
            b[pos] = arg
        elif op == "flip":
            b[pos] ^= 1 << arg
        elif op == "int":
            width = 2 if arg <= 0xFFFF else 4
            b[pos:pos + width] = struct.pack("<I" if width == 4 else "<H", arg)
        elif op == "insert":
            b[pos:pos] = arg
        elif op == "delete":
            del b[pos:pos + arg]
        elif op == "dup":
            b[pos:pos] = b[pos:pos + arg]
        elif op == "truncate":
            del b[pos:]
    return bytes(b)


def _case(group: str):
    seeds = SEEDS[group]
    return st.tuples(st.integers(0, len(seeds) - 1), st.lists(_mutation, min_size=1, max_size=6))


def _fuzz_settings(group: str):
    return settings(max_examples=EXAMPLES[group], deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


COUNT = {"cases": 0, "loaded": 0, "refused": 0}


def _check_load(name: str, data: bytes) -> None:
    COUNT["cases"] += 1
    errors: list[mio.LoadError] = []
    try:
        images = mio.load_bytes(data, name, limits=LIMITS, errors=errors)
    except mio.LoadError as e:
        pytest.fail(f"load_bytes with an errors list must not raise: {e}")
    for e in errors:
        assert isinstance(e, mio.LoadError) and e.reason and "\n" not in e.reason
        assert e.filename == name or e.filename.startswith(name + "/")
    for im in images:
        assert np.all(np.isfinite(im.pixels)) if im.pixels.dtype.kind == "f" else True
        assert set(im.metadata) <= set(mio.privacy.SAFE_METADATA_KEYS)
    COUNT["loaded" if images else "refused"] += 1
    try:  # the raising form too
        mio.load_bytes(data, name, limits=LIMITS)
    except mio.LoadError as e:
        assert e.filename == name or e.filename.startswith(name + "/")


@_fuzz_settings("dicom")
@given(_case("dicom"))
def test_fuzz_dicom(case):
    idx, muts = case
    name, seed = SEEDS["dicom"][idx]
    _check_load(name, mutate(seed, muts))


@_fuzz_settings("raster")
@given(_case("raster"))
def test_fuzz_png_tiff(case):
    idx, muts = case
    name, seed = SEEDS["raster"][idx]
    _check_load(name, mutate(seed, muts))


@_fuzz_settings("nifti_zip")
@given(_case("nifti_zip"))
def test_fuzz_nifti_zip_gzip(case):
    idx, muts = case
    name, seed = SEEDS["nifti_zip"][idx]
    _check_load(name, mutate(seed, muts))


@_fuzz_settings("metadata")
@given(_case("metadata"))
def test_fuzz_read_metadata_and_load_many(case):
    idx, muts = case
    name, seed = SEEDS["metadata"][idx]
    data = mutate(seed, muts)
    COUNT["cases"] += 1
    try:
        meta = mio.read_metadata(data, name, limits=LIMITS)
        assert set(meta) <= set(mio.privacy.SAFE_METADATA_KEYS)
    except mio.LoadError as e:
        assert e.filename == name
    images, errors = mio.load_many([(name, data), ("after.png", SEEDS["raster"][0][1])], limits=LIMITS)
    assert images and images[-1].name == "after.png"  # the batch goes on after a mutant
    assert all(isinstance(e, mio.LoadError) for e in errors)


def test_mutations_really_break_files():
    """Guard against a fuzzer that never changes anything: most mutants differ and some fail."""
    import random

    rng = random.Random(3)
    name, seed = SEEDS["dicom"][0]
    outcomes = set()
    for _ in range(40):
        muts = [("int", rng.random() / 4, rng.choice(INTERESTING)) for _ in range(3)]
        data = mutate(seed, muts)
        errs: list = []
        outcomes.add(bool(mio.load_bytes(data, name, limits=LIMITS, errors=errs)))
    assert outcomes == {True, False}


def test_zz_report_fuzz_counts():
    """Prints how many fuzz cases ran in this session (≥ 1000 when the whole file runs)."""
    print(f"\nfuzz cases: {COUNT['cases']} (loaded {COUNT['loaded']}, refused {COUNT['refused']})")
    if COUNT["cases"]:
        assert COUNT["cases"] >= sum(EXAMPLES.values())
