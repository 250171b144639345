"""Fusion speed at 512²: the page path vs the bare numpy / OpenCV / PyWavelets / scikit-image
call, medians of repeated runs measured in this run, ratios printed.

* methods: ``registry.run`` with both inputs normalised inside the operation (what the page
  calls, plus the uint8 view it sends) vs the bare core on the same inputs
  (percentile normalisation by hand + the one-line fusion rule / library call);
* metrics: :func:`analysis.fusion.fusion_metrics` (OpenCV box-filter SSIM, bincount MI,
  Q^AB/F) vs the same quantities through scikit-image SSIM and ``np.histogram2d`` MI;
* resampling: :func:`analysis.fusion.resample_to` (128² PET-like → 512²) vs
  ``skimage.transform.resize``;
* the whole page: an AppTest rerun after a parameter change (absolute, when the sample
  dataset is built).

Run: ``python bench/bench_fusion.py``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import median_time  # noqa: E402

from analysis import fusion as F  # noqa: E402
from analysis import phantoms as P  # noqa: E402
from analysis import registry  # noqa: E402
from ui.fusion import fused_display  # noqa: E402


def median_ms(fn, repeat: int = 15) -> float:
    return median_time(fn, repeats=repeat, warmup=2) * 1000.0


def pair_512() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    hs = P.head_slice(P.subject_params(11), 0.1, shape=(512, 512), spacing=(0.45, 0.45), noise_sigma=0)
    fr = P.one_hot(hs.labels)
    rng = np.random.default_rng(0)
    t1 = P.render_contrast(fr, P.T1_VALUES, blur_px=0.7, noise_sigma=8.0, rng=rng)
    pet_lo = P.downsample_block(P.render_contrast(fr, P.PET_VALUES, blur_px=3.0), 4).astype(np.float32)
    pet = F.resample_to(pet_lo, (1.8, 1.8), (512, 512), (0.45, 0.45))
    return t1, pet, pet_lo


def _norm(x: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(x, (0.5, 99.5))
    return np.clip((x - lo) / (hi - lo), 0, 1).astype(np.float32)


def _bare_laplacian(a: np.ndarray, b: np.ndarray, levels: int = 4) -> np.ndarray:
    def pyr(x):
        g = [x]
        for _ in range(levels):
            g.append(cv2.pyrDown(g[-1]))
        return [g[i] - cv2.pyrUp(g[i + 1], dstsize=g[i].shape[::-1]) for i in range(levels)] + [g[-1]]

    pa, pb = pyr(a), pyr(b)
    fused = [np.where(np.abs(x) >= np.abs(y), x, y) for x, y in zip(pa[:-1], pb[:-1])] + [0.5 * (pa[-1] + pb[-1])]
    x = fused[-1]
    for band in reversed(fused[:-1]):
        x = cv2.pyrUp(x, dstsize=band.shape[::-1]) + band
    return np.clip(x, 0, 1)


def _bare_wavelet(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import pywt

    ca, cb = pywt.wavedec2(a, "db2", level=3), pywt.wavedec2(b, "db2", level=3)
    fused = [0.5 * (ca[0] + cb[0])] + [tuple(np.where(np.abs(x) >= np.abs(y), x, y) for x, y in zip(da, db)) for da, db in zip(ca[1:], cb[1:])]
    return np.clip(pywt.waverec2(fused, "db2")[: a.shape[0], : a.shape[1]], 0, 1)


def _bare_alpha(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lut = F.colormap_lut("hot")
    m = (b >= 0.1)[..., None] * 0.5
    return np.clip(np.rint(((1 - m) * a[..., None] + m * lut[np.rint(b * 255).astype(int)]) * 255), 0, 255).astype(np.uint8)


BARE = {
    "fusion.weighted_average": lambda a, b: 0.5 * a + 0.5 * b,
    "fusion.alpha_blend": _bare_alpha,
    "fusion.maximum": np.maximum,
    "fusion.minimum": np.minimum,
    "fusion.pca": lambda a, b: (lambda v: (v[0] * a + v[1] * b) / v.sum())(np.abs(np.linalg.eigh(np.cov(np.stack([a.ravel(), b.ravel()])))[1][:, -1])),
    "fusion.laplacian_pyramid": _bare_laplacian,
    "fusion.wavelet": _bare_wavelet,
    "fusion.checkerboard": lambda a, b: np.where(((np.arange(512)[:, None] // 32 + np.arange(512)[None, :] // 32) % 2) == 0, a, b),
}


def _bare_metrics(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> dict:
    from scipy import ndimage as ndi
    from skimage.metrics import structural_similarity

    def mi(x, y):
        h, _, _ = np.histogram2d(x.ravel(), y.ravel(), bins=256)
        p = h / h.sum()
        px, py = p.sum(1), p.sum(0)
        nz = p > 0
        return float((p[nz] * np.log2(p[nz] / np.outer(px, py)[nz])).sum())

    def grad(x):
        gx, gy = ndi.sobel(x, 1), ndi.sobel(x, 0)
        return np.hypot(gx, gy), np.arctan2(gy, gx)

    out = {"mi_a": mi(f, a), "mi_b": mi(f, b),
           "ssim_a": structural_similarity(f.astype(float), a.astype(float), data_range=1.0),
           "ssim_b": structural_similarity(f.astype(float), b.astype(float), data_range=1.0)}
    (ga, _), (gb, _), (gf, _) = grad(a.astype(float)), grad(b.astype(float)), grad(f.astype(float))
    out["std"] = float(f.std())
    h, _ = np.histogram(f, 256)
    p = h[h > 0] / f.size
    out["entropy"] = float(-(p * np.log2(p)).sum())
    return out


def main() -> None:
    t1, pet, pet_lo = pair_512()
    an, bn = _norm(t1), _norm(pet)
    print(f"fusion at 512² (2 cores), medians in ms; ratio = page path / bare call\n")
    print(f"{'method':<28}{'bare':>9}{'page path':>11}{'ratio':>8}")
    for key in F.METHODS:
        bare = median_ms(lambda: BARE[key](_norm(t1), _norm(pet)))
        page = median_ms(lambda: fused_display(registry.run(key, t1, {}, moving=pet).image))
        print(f"{key:<28}{bare:9.1f}{page:11.1f}{page / bare:8.2f}")
    f = registry.run("fusion.laplacian_pyramid", t1, {}, moving=pet).image
    bare = median_ms(lambda: _bare_metrics(an, bn, f), repeat=7)
    page = median_ms(lambda: F.fusion_metrics(an, bn, f), repeat=7)
    print(f"\n{'metrics (all 8)':<28}{bare:9.1f}{page:11.1f}{page / bare:8.2f}   (bare: skimage SSIM, np.histogram2d MI, no Q^AB/F)")
    from skimage.transform import resize

    bare = median_ms(lambda: resize(pet_lo, (512, 512), order=1, anti_aliasing=False, preserve_range=True))
    page = median_ms(lambda: F.resample_to(pet_lo, (1.8, 1.8), (512, 512), (0.45, 0.45)))
    print(f"{'resample 128² → 512²':<28}{bare:9.1f}{page:11.1f}{page / bare:8.2f}   (bare: skimage.transform.resize)")
    def bare_cmp():
        a, b = _norm(t1), _norm(pet)
        for k in F.METHODS:
            out = BARE[k](a, b)
            _bare_metrics(a, b, out if out.ndim == 2 else out.mean(-1) / 255)

    bare = median_ms(bare_cmp, repeat=5)
    page = median_ms(lambda: F.compare_methods(t1, pet), repeat=5)
    print(f"{'comparator (8 × fuse+score)':<28}{bare:9.1f}{page:11.1f}{page / bare:8.2f}   (bare: 8 bare fusions + bare metrics)")
    _page_rerun()


def _page_rerun() -> None:
    from analysis.dataset import sample_manifest_path

    if not sample_manifest_path().exists():
        print("\n(page rerun skipped: sample dataset not built)")
        return
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.switch_page("pages/fusion.py").run()
    sl = at.slider(key="fusion.fusion.weighted_average.weight")
    ts = []
    for i, w in enumerate((0.3, 0.6, 0.4, 0.7, 0.2, 0.8, 0.35)):
        t0 = time.perf_counter()
        sl.set_value(w).run()
        ts.append(time.perf_counter() - t0)
    noop = []
    for _ in range(5):
        t0 = time.perf_counter()
        at.run()
        noop.append(time.perf_counter() - t0)
    med, base = statistics.median(ts) * 1000, statistics.median(noop) * 1000
    print(f"\nwhole page (AppTest, sample pair {at.selectbox(key='fusion.known').value}): weight-slider rerun {med:.0f} ms, "
          f"cached rerun {base:.0f} ms, ratio {med / base:.2f}")


if __name__ == "__main__":
    main()
