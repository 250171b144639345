"""Enhancement speed and accuracy (run: ``python bench/bench_enhancement.py``).

Speed — for a 512×512 CT-like image (HU), each operation is timed through the page's code
path (``ui.technique.compute``: context handling + registry validation + dispatch +
explicit domain conversion, i.e. what ``run_cached`` does on a cache miss, without
Streamlit) and as the bare scikit-image call doing the same job, measured interleaved in
the same run. Prints medians and the ratio page/bare (target ≤ 1.2×; < 1 where MedLens
uses a faster kernel, e.g. OpenCV's bilateral/median). For scikit-image functions that need
[0, 1] floats (CLAHE, gamma, log, TV) the bare call includes the rescale from HU and the
map back, which any correct caller must do.

Accuracy — PSNR against the clean reference before and after each denoiser on phantom
CT slices with known Gaussian noise σ, and on the sample dataset's reference entries
(``clean_path``) when the sample set is built.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis import phantoms as ph  # noqa: E402
from bench._common import interleaved_ms, once_ms  # noqa: E402
from analysis.image import Image  # noqa: E402
from analysis.metrics import psnr  # noqa: E402


def _image() -> Image:
    hs = ph.head_slice(ph.subject_params(3), 0.1, shape=(512, 512), spacing=(0.45, 0.45), noise_sigma=20.0, seed=1)
    return Image(hs.hu.astype(np.float32), name="bench", spacing=(0.45, 0.45), units="HU", modality="CT")


def _bare_cases(a: np.ndarray) -> dict[str, tuple[str, dict, Callable[[], object]]]:
    from skimage import exposure, filters, morphology, restoration

    def in_hu(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[], np.ndarray]:
        # scikit-image's [0, 1] functions on HU data need this range, rescale and map-back anyway
        def call() -> np.ndarray:
            lo_, hi_ = float(a.min()), float(a.max())
            return lo_ + (hi_ - lo_) * fn((a - lo_) / (hi_ - lo_))

        return call

    sigma = float(restoration.estimate_sigma(a))
    ref = np.flipud(a).copy()
    return {
        "gaussian σ=2": ("enhancement.gaussian", {"sigma": 2.0},
                         lambda: filters.gaussian(a, sigma=2.0, preserve_range=True, mode="reflect")),
        "unsharp r=2": ("enhancement.unsharp", {"radius": 2.0, "amount": 1.0},
                        lambda: filters.unsharp_mask(a, radius=2.0, amount=1.0, preserve_range=True)),
        "equalize": ("enhancement.equalize", {}, lambda: exposure.equalize_hist(a, nbins=256)),
        "CLAHE": ("enhancement.clahe", {"kernel_size": 64, "clip_limit": 0.01},
                  in_hu(lambda u: exposure.equalize_adapthist(u, kernel_size=64, clip_limit=0.01))),
        "gamma 0.7": ("enhancement.gamma", {"gamma": 0.7}, in_hu(lambda u: exposure.adjust_gamma(u, 0.7))),
        "log": ("enhancement.log", {"gain": 10.0}, in_hu(lambda u: exposure.adjust_log(u))),
        "stretch 1–99 %": ("enhancement.stretch", {}, lambda: exposure.rescale_intensity(
            a, in_range=tuple(np.percentile(a, [1, 99])), out_range=(float(a.min()), float(a.max())))),
        "Laplacian": ("enhancement.laplacian", {"strength": 0.5}, lambda: a - 0.5 * filters.laplace(a, ksize=3)),
        "median 3": ("enhancement.median", {"size": 3}, lambda: filters.median(a, footprint=np.ones((3, 3), bool))),
        "bilateral": ("enhancement.bilateral", {"sigma_spatial": 3.0, "sigma_range": 0.1},
                      lambda: restoration.denoise_bilateral(a, sigma_color=0.1 * float(np.ptp(np.percentile(a, [1, 99]))),
                                                            sigma_spatial=3.0, win_size=9)),
        "NLM": ("enhancement.nlm", {"patch_size": 5, "patch_distance": 6, "h_factor": 0.8},
                lambda: restoration.denoise_nl_means(a, patch_size=5, patch_distance=6, h=0.8 * sigma, sigma=sigma,
                                                     fast_mode=True, preserve_range=True)),
        "TV Chambolle": ("enhancement.tv", {"weight": 0.05},
                         in_hu(lambda u: restoration.denoise_tv_chambolle(u, weight=0.05, max_num_iter=200))),
        "top-hat r=25": ("enhancement.background", {"method": "top-hat", "radius": 25},
                         lambda: morphology.white_tophat(a, morphology.footprint_rectangle((51, 51)))),
        "match histogram": ("enhancement.match_histogram", {}, lambda: exposure.match_histograms(a, ref)),
    }


def speed(reps_fast: int = 15, reps_slow: int = 5) -> list[dict]:
    from ui.technique import compute

    img = _image()
    a = img.grey()
    cases = _bare_cases(a)
    ref = img.with_pixels(np.flipud(a).copy(), tag="ref")
    rows = []
    print(f"{'operation':<18} {'bare ms':>9} {'page ms':>9} {'ratio':>7}")
    for name, (key, params, bare) in cases.items():
        ctx = {"reference": ref} if key == "enhancement.match_histogram" else {}
        page = (lambda k=key, p=params, c=ctx: compute(img, k, p, **c))
        page()
        bare()  # warm both (imports, caches)
        reps = reps_slow if once_ms(bare) > 100 else reps_fast
        b, p = interleaved_ms(bare, page, reps)
        rows.append({"operation": name, "bare_ms": b, "page_ms": p, "ratio": p / b})
        print(f"{name:<18} {b:9.2f} {p:9.2f} {p / b:7.2f}")
    ratios = [r["ratio"] for r in rows]
    print(f"median ratio {statistics.median(ratios):.2f}, max {max(ratios):.2f} (target ≤ 1.2)")
    return rows


def accuracy() -> None:
    from analysis import registry

    denoisers = [("gaussian σ=1", "enhancement.gaussian", {"sigma": 1.0}), ("median 3", "enhancement.median", {"size": 3}),
                 ("bilateral", "enhancement.bilateral", {"sigma_spatial": 2.0, "sigma_range": 0.05}),
                 ("NLM", "enhancement.nlm", {}), ("TV", "enhancement.tv", {"weight": 0.02})]
    print("\nPSNR vs clean (dB), phantom CT head slices 256², mean over 3 subjects")
    print(f"{'noise σ (HU)':<14}{'noisy':>8}" + "".join(f"{n:>14}" for n, _, _ in denoisers))
    for s in (20.0, 50.0, 100.0):
        vals = np.zeros(len(denoisers) + 1)
        for subj in (1, 2, 3):
            clean = ph.head_slice(ph.subject_params(subj), 0.1, noise_sigma=0.0, seed=subj).hu.astype(np.float32)
            noisy = ph.add_gaussian_noise(clean, s, seed=subj).astype(np.float32)
            vals[0] += psnr(clean, noisy) / 3
            for j, (_, key, params) in enumerate(denoisers, start=1):
                vals[j] += psnr(clean, registry.run(key, noisy, params).image) / 3
        print(f"{s:<14.0f}{vals[0]:8.2f}" + "".join(f"{v:8.2f} ({v - vals[0]:+.1f})" for v in vals[1:]))
    _sample_accuracy(denoisers)


def _sample_accuracy(denoisers) -> None:  # type: ignore[no-untyped-def]
    from analysis import dataset, registry

    try:
        ds = dataset.load_sample()
    except FileNotFoundError:
        print("\n(sample dataset not built: skipping the sample-reference table)")
        return
    e = ds.entries
    import pandas as pd

    sig = pd.to_numeric(e["noise_sigma"], errors="coerce").fillna(0)
    noisy = e[(e["clean_path"].astype(str) != "") & (sig > 0)]
    if noisy.empty:
        print("\n(no sample entry with clean_path and noise_sigma)")
        return
    print(f"\nSample dataset: {len(noisy)} entries with a clean reference and known noise σ — PSNR gain (dB) vs clean")
    print(f"{'entry':<34}{'σ':>7}{'noisy':>8}" + "".join(f"{n:>14}" for n, _, _ in denoisers))
    for rec in ds.records():
        if rec["id"] not in set(noisy["id"]):
            continue
        img = dataset.load_entry(rec)
        a = (img.plane(img.n_planes // 2) if img.n_planes > 1 else img).grey()
        clean = dataset.load_aux(rec, "clean_path")
        if clean is None or clean.shape != a.shape:
            continue
        base = psnr(clean, a)
        gains = [psnr(clean, registry.run(k, a, p).image) - base for _, k, p in denoisers]
        print(f"{str(rec['id'])[:33]:<34}{float(rec['noise_sigma']):7.3g}{base:8.2f}" + "".join(f"{g:+14.2f}" for g in gains))


if __name__ == "__main__":
    speed()
    accuracy()
