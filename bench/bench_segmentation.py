"""Segmentation speed: the page's code path vs the bare scikit-image call at 512².

Run: ``python bench/bench_segmentation.py`` (``--quick``: fewer repetitions, no slow methods).

For a 512×512 CT-like head slice (HU, with a lesion), each operation is timed through the
page's code path — ``ui.technique.compute`` (context handling, registry validation,
dispatch, explicit domain conversion, Result building; what ``run_cached`` does on a cache
miss, without Streamlit) — and as the bare scikit-image (or SciPy) calls doing the same job
with the same parameters, interleaved in the same run. Prints medians and the ratio
page/bare (target ≤ 1.2×; < 1 where MedLens uses a faster kernel, e.g. OpenCV's Canny).
Methods that need [0, 1] data get the same percentile rescale in both paths.

Also timed: the region table (regionprops in mm + perimeters) for many small objects, which
the page computes once per segmentation.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis import phantoms as ph  # noqa: E402
from bench._common import interleaved_ms, once_ms  # noqa: E402
from analysis.image import Image  # noqa: E402
from analysis.segmentation import unit_range  # noqa: E402

SPACING = (0.45, 0.45)


def _image() -> Image:
    params = ph.subject_params(3)
    base = ph.head_slice(params, 0.1, shape=(512, 512), spacing=SPACING, noise_sigma=0.0, seed=1)
    lesion = ph.sample_lesion(base.labels, SPACING, np.random.default_rng(7))
    hs = ph.head_slice(params, 0.1, shape=(512, 512), spacing=SPACING, lesion=lesion, noise_sigma=5.0, seed=1)
    return Image(hs.hu.astype(np.float32), name="bench", spacing=SPACING, units="HU", modality="CT")


def _cases(a: np.ndarray, quick: bool) -> dict[str, tuple[str, dict, Callable[[], object]]]:
    from skimage import feature, filters, morphology, segmentation

    seed = tuple(int(v) for v in np.argwhere(a > 60).mean(axis=0))
    mask = a > filters.threshold_otsu(a)

    def thr(name: str) -> Callable[[], object]:
        fn = getattr(filters, f"threshold_{name}")
        return lambda: a > fn(a)

    def watershed_dt() -> object:
        g = ndi.gaussian_filter(a, 1.0, mode="nearest")
        fg = ndi.binary_fill_holes(g > filters.threshold_otsu(g))
        dist = ndi.distance_transform_edt(fg, sampling=SPACING)
        comp, _ = ndi.label(fg)
        r = 5.0 / SPACING[0]
        n = int(r)
        yy, xx = np.mgrid[-n : n + 1, -n : n + 1]
        peaks = feature.peak_local_max(dist, footprint=(yy**2 + xx**2) <= r * r, labels=comp, exclude_border=False,
                                       min_distance=int(round(r)))
        mk = np.zeros(a.shape, np.int32)
        mk[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        return segmentation.watershed(-dist, mk, mask=fg)

    cases: dict[str, tuple[str, dict, Callable[[], object]]] = {
        "manual band σ=1": ("segmentation.manual", {"low": 55.0, "high": 200.0, "smooth_sigma": 1.0},
                            lambda: (lambda g: (g >= 55) & (g <= 200))(ndi.gaussian_filter(a, 1.0, mode="nearest"))),
        "Otsu": ("segmentation.otsu", {}, thr("otsu")),
        "Li": ("segmentation.li", {}, thr("li")),
        "Yen": ("segmentation.yen", {}, thr("yen")),
        "triangle": ("segmentation.triangle", {}, thr("triangle")),
        "isodata": ("segmentation.isodata", {}, thr("isodata")),
        "mean": ("segmentation.mean", {}, thr("mean")),
        "minimum": ("segmentation.minimum", {}, thr("minimum")),
        "multi-Otsu k=3": ("segmentation.multi_otsu", {"classes": 3},
                           lambda: np.digitize(a, filters.threshold_multiotsu(a, classes=3))),
        "local 51": ("segmentation.local", {"block_size": 51}, lambda: a > filters.threshold_local(a, 51, method="gaussian")),
        "hysteresis": ("segmentation.hysteresis", {"low": 40.0, "high": 80.0},
                       lambda: filters.apply_hysteresis_threshold(a, 40.0, 80.0)),
        "Sobel": ("segmentation.sobel", {}, lambda: filters.sobel(a)),
        "Scharr": ("segmentation.scharr", {}, lambda: filters.scharr(a)),
        "Canny σ=2": ("segmentation.canny", {"sigma": 2.0}, lambda: feature.canny(a, sigma=2.0)),
        "DoG": ("segmentation.dog", {"sigma": 1.5, "ratio": 1.6}, lambda: filters.difference_of_gaussians(a, 1.5, 2.4)),
        "watershed (distance)": ("segmentation.watershed", {"min_distance": 5.0}, watershed_dt),
        "region growing": ("segmentation.region_growing", {"row": seed[0], "col": seed[1], "tolerance": 20.0},
                           lambda: segmentation.flood(ndi.gaussian_filter(a, 1.0, mode="nearest"), seed, tolerance=20.0)),
        "SLIC 200": ("segmentation.slic", {"n_segments": 200},
                     lambda: segmentation.slic(unit_range(a), n_segments=200, compactness=0.1, sigma=1.0, channel_axis=None,
                                               start_label=1, spacing=np.asarray(SPACING))),
        "Felzenszwalb": ("segmentation.felzenszwalb", {},
                         lambda: segmentation.felzenszwalb(unit_range(a) * 255.0, scale=100.0, sigma=0.8, min_size=20,
                                                           channel_axis=None)),
        "fill holes": ("segmentation.fill_holes", {}, lambda: ndi.binary_fill_holes(mask)),
        "opening r=1 mm": ("segmentation.opening", {"radius": 1.0},
                           lambda: ndi.binary_opening(np.pad(mask, 5), structure=morphology.disk(2))[5:-5, 5:-5]),
        "remove small 10 mm²": ("segmentation.remove_small", {"min_area": 10.0},
                                lambda: morphology.remove_small_objects(mask, max_size=int(10.0 / (SPACING[0] * SPACING[1])))),
    }
    if not quick:
        cases.update({
            "Chan–Vese 100 it": ("segmentation.chan_vese", {"max_num_iter": 100},
                                 lambda: segmentation.chan_vese(unit_range(a), mu=0.25, max_num_iter=100, tol=1e-3)),
            "morph. ACWE 40 it": ("segmentation.morph_chan_vese", {"num_iter": 40},
                                  lambda: segmentation.morphological_chan_vese(unit_range(a), 40, init_level_set="checkerboard",
                                                                               smoothing=1)),
        })
    return cases


def speed(quick: bool = False) -> list[dict]:
    import logging

    logging.getLogger("streamlit").setLevel(logging.ERROR)  # "no runtime" notes of cached helpers
    from ui.technique import compute

    img = _image()
    a = img.grey()
    rows = []
    print(f"512×512 CT slice · {'operation':<22} {'bare ms':>9} {'page ms':>9} {'ratio':>7}")
    for name, (key, params, bare) in _cases(a, quick).items():
        inp = img
        if key in ("segmentation.fill_holes", "segmentation.opening", "segmentation.remove_small"):
            from skimage.filters import threshold_otsu

            inp = img.with_pixels((a > threshold_otsu(a)).view(np.uint8), units="mask", tag="otsu-mask")
        page = (lambda k=key, p=params, i=inp: compute(i, k, p))
        page()
        bare()  # warm both
        probe = once_ms(bare)
        reps = 3 if probe > 300 else (5 if probe > 50 else (7 if quick else 21))
        b, p = interleaved_ms(bare, page, reps)
        rows.append({"operation": name, "bare_ms": b, "page_ms": p, "ratio": p / b})
        print(f"{'':16}{name:<22} {b:9.2f} {p:9.2f} {p / b:7.2f}")
    ratios = [r["ratio"] for r in rows]
    print(f"median ratio {statistics.median(ratios):.2f}, max {max(ratios):.2f} "
          f"({rows[int(np.argmax(ratios))]['operation']}) — target ≤ 1.2")
    return rows


def region_table_speed() -> None:
    from analysis.seg_metrics import region_table

    rng = np.random.default_rng(0)
    lab = np.zeros((512, 512), np.int32)
    rr, cc = np.mgrid[:512, :512]
    for k in range(1, 126):
        r, c, rad = rng.uniform(15, 497), rng.uniform(15, 497), rng.uniform(5, 10)
        lab[(rr - r) ** 2 + (cc - c) ** 2 <= rad**2] = k
    inten = rng.normal(100, 10, lab.shape).astype(np.float32)
    region_table(lab, inten, SPACING)
    t = statistics.median(once_ms(lambda: region_table(lab, inten, SPACING)) for _ in range(5))
    print(f"region table, {len(np.unique(lab)) - 1} objects at 512² (areas, perimeters in mm, intensities): {t:.1f} ms")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    speed(args.quick)
    region_table_speed()
