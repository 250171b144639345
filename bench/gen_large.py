"""Generate a large synthetic DICOM dataset (for ingest benchmarks) into a folder you name.

    python bench/gen_large.py OUT_DIR --n 20000 [--size 256] [--seed 0]

Files are valid CT DICOM (explicit VR little endian, int16, RescaleIntercept −1024) of a head
phantom with noise, spread over ``site*/subject*/`` folders, two simulated scanners
(Manufacturer / KVP / noise level differ) and series of 40 slices. Writing reuses one header
and swaps the pixel data, so 20 000 files of 256² take well under a minute. Nothing is written
inside the repository unless you ask for it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.dicomwrite import deterministic_uid, dicom_bytes  # noqa: E402


def _phantom(size: int) -> np.ndarray:
    rr, cc = np.mgrid[:size, :size].astype(np.float32)
    c = size / 2
    head = ((rr - c) / (0.42 * size)) ** 2 + ((cc - c) / (0.35 * size)) ** 2 < 1
    skull = head & (((rr - c) / (0.39 * size)) ** 2 + ((cc - c) / (0.32 * size)) ** 2 >= 1)
    hu = np.full((size, size), -1000.0, np.float32)
    hu[head] = 35.0
    hu[skull] = 900.0
    return hu


SYNTAXES = {"native": None, "rle": "1.2.840.10008.1.2.5", "j2k": "1.2.840.10008.1.2.4.90"}


def generate(out: str | Path, n: int, *, size: int = 256, seed: int = 0, series_len: int = 40,
             progress: bool = True, syntax: str = "native") -> Path:
    """Write ``n`` files under ``out``; returns ``out``. ``syntax``: ``native`` (explicit VR
    little endian), ``rle`` (RLE Lossless) or ``j2k`` (JPEG 2000 Lossless; slow to encode)."""
    import copy

    import pydicom

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = _phantom(size)
    rng = np.random.default_rng(seed)
    template = pydicom.dcmread(__import__("io").BytesIO(dicom_bytes(
        base, modality="CT", spacing=(0.7, 0.7), rescale_intercept=-1024.0, window=(40.0, 80.0),
        dtype=np.int16, uid_seed="template", slice_thickness=5.0, patient_name="Synthetic^Bench",
        patient_id="BENCH", extra={"BodyPartExamined": "HEAD", "SeriesDescription": "Synthetic head"})))
    noise_bank = [rng.normal(0, 1, (size, size)).astype(np.float32) for _ in range(8)]
    t0 = time.perf_counter()
    for k in range(n):
        series, inst = divmod(k, series_len)
        vendor_b = series % 3 == 2
        sigma = 12.0 if vendor_b else 6.0
        hu = base + sigma * noise_bank[k % 8] * (1 + 0.1 * (k % 5)) + (k % 7)
        template.PixelData = np.clip(np.round(hu + 1024), -32768, 32767).astype("<i2").tobytes()
        template.Manufacturer = "SimVendor B" if vendor_b else "SimVendor A"
        template.KVP = 100 if vendor_b else 120
        template.PatientID = f"BENCH{series // 4:05d}"
        template.SeriesInstanceUID = deterministic_uid("bench-series", seed, series)
        template.StudyInstanceUID = deterministic_uid("bench-study", seed, series // 2)
        template.SOPInstanceUID = deterministic_uid("bench-inst", seed, k)
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        template.InstanceNumber = inst + 1
        template.ImagePositionPatient = [0.0, 0.0, 5.0 * inst]
        d = out / f"site{series % 4}" / f"subject{series // 4:05d}"
        d.mkdir(parents=True, exist_ok=True)
        if SYNTAXES[syntax] is None:
            template.save_as(d / f"IM{inst:04d}.dcm", enforce_file_format=True)
        else:
            ds = copy.deepcopy(template)
            ds.compress(SYNTAXES[syntax])
            ds.save_as(d / f"IM{inst:04d}.dcm", enforce_file_format=True)
        if progress and (k + 1) % 2000 == 0:
            print(f"  {k + 1} files ({time.perf_counter() - t0:.1f} s)", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="output folder (created)")
    ap.add_argument("--n", type=int, default=2000, help="number of files (default 2000)")
    ap.add_argument("--size", type=int, default=256, help="rows = columns (default 256)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--syntax", choices=list(SYNTAXES), default="native", help="transfer syntax of the files")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    generate(args.out, args.n, size=args.size, seed=args.seed, syntax=args.syntax)
    print(f"wrote {args.n} files of {args.size}² to {args.out} in {time.perf_counter() - t:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
