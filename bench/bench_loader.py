"""Loader throughput: MedLens' load_image (modality LUT → HU, safe metadata, spacing, window)
vs bare `pydicom.dcmread(f).pixel_array` on the same generated 512² CT DICOMs, one core.

    python bench/bench_loader.py [--quick] [--files N]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import median_time, parser, report  # noqa: E402


def make_files(folder: Path, n: int) -> list[Path]:
    from tests.helpers.dicom import ct_dicom

    rng = np.random.default_rng(0)
    rr, cc = np.mgrid[:512, :512]
    base = np.where((rr - 256) ** 2 + (cc - 256) ** 2 < 200 ** 2, 40.0, -1000.0)
    paths = []
    for i in range(n):
        p = folder / f"ct_{i:04d}.dcm"
        ct_dicom(p, hu=base + rng.normal(0, 10, base.shape), canaries=False)
        paths.append(p)
    return paths


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--files", type=int, default=None)
    args = ap.parse_args()
    n = args.files or (100 if args.quick else 300)
    repeats = 3 if args.quick else 5
    from analysis.io import load_image

    with tempfile.TemporaryDirectory() as d:
        paths = make_files(Path(d), n)
        bare = median_time(lambda: [pydicom.dcmread(p).pixel_array for p in paths], repeats)
        ours = median_time(lambda: [load_image(p) for p in paths], repeats)
        print(f"{n} files of 512² int16 CT, median of {repeats} runs")
        r = report("load_image vs dcmread().pixel_array (time)", ours, bare)
        print(f"throughput: ours {n / ours:.0f} files/s, bare {n / bare:.0f} files/s → {1 / r:.2f}× of bare pydicom")


if __name__ == "__main__":
    main()
