"""Registration speed at 512²: the page path vs the bare call, medians of interleaved repeats
measured in this run, ratios printed.

* phase correlation: what the page runs for one result (``ui.registration.run_method`` with
  an empty cache — registry validation, the operation with its before/after metrics) vs the
  bare operation call; the four QA renderings are reported on top; and our two-stage
  sub-pixel phase correlation vs scikit-image's ``phase_cross_correlation`` (same DFT points,
  same answer);
* manual mode, one slider tick: ``ui.registration.manual_metrics`` vs the bare warp +
  metrics, QA renderings on top; the cost landscape (41 points on a ≤128 px level) apart;
* SimpleITK rigid registration (Mattes MI, rotation search) at 512², absolute.

Run: ``python bench/bench_registration.py [--quick]``.
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import parser  # noqa: E402

from analysis import phantoms as P  # noqa: E402
from analysis import registration as R  # noqa: E402
from analysis.image import Image  # noqa: E402

logging.getLogger("streamlit").setLevel(logging.ERROR)


def interleaved(fns: dict[str, callable], repeats: int) -> dict[str, float]:
    """Median seconds of each function, run round-robin so load changes hit all alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def line(name: str, ours: float, base: float, target: str = "") -> None:
    r = ours / base
    tgt = f"  (target {target})" if target else ""
    print(f"{name:<58} {ours * 1e3:8.1f} ms vs {base * 1e3:8.1f} ms   ratio {r:5.2f}×{tgt}")


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    reps = 5 if args.quick else 15
    import streamlit as st

    from ui import registration as U

    hs = P.head_slice(P.subject_params(11), 0.1, shape=(512, 512), spacing=(0.45, 0.45), noise_sigma=5.0)
    f = hs.hu.astype(np.float64)
    shift = (7.31, -4.62)
    from scipy import ndimage as ndi

    m = np.real(np.fft.ifft2(ndi.fourier_shift(np.fft.fft2(f), shift)))
    fixed = Image(f.astype(np.float32), spacing=(0.45, 0.45), units="HU", modality="CT", window=(40.0, 400.0))
    moving = Image(m.astype(np.float32), spacing=(0.45, 0.45), units="HU", modality="CT", window=(40.0, 400.0))
    mg = m.astype(np.float32).astype(np.float64)
    print(f"512² CT phantom, exact sub-pixel shift {shift}: recovered {R.phase_shift(f, m)[0].round(3)}")

    pc_params = {"upsample_factor": 100, "window": False}

    def page_pc() -> None:
        st.session_state.pop("medlens.memo.registration", None)  # a new result: nothing cached (ui.state.memo)
        U.run_method(fixed, mg, moving.digest, "registration.phase_correlation", pc_params)

    def bare_pc() -> None:
        R.phase_correlation(fixed.grey(), upsample_factor=100, window=False, moving=mg, spacing=fixed.spacing)

    res = R.phase_correlation(fixed.grey(), upsample_factor=100, window=False, moving=mg, spacing=fixed.spacing)
    registered = np.asarray(res.image, np.float64)

    from skimage.registration import phase_cross_correlation

    t = interleaved({
        "page": page_pc,
        "bare": bare_pc,
        "qa": lambda: U.qa_images(fixed, registered, moving, 32, 0.5),
        "ours": lambda: R.phase_shift(f, m, upsample_factor=100),
        "skimage": lambda: phase_cross_correlation(f, m, upsample_factor=100),
    }, reps)
    line("phase correlation + metrics: page path vs bare operation", t["page"], t["bare"], "≤ 1.2×")
    line("  + the four QA renderings (512²) vs bare operation", t["page"] + t["qa"], t["bare"])
    line("phase correlation core: ours vs skimage (both 1/100 px)", t["ours"], t["skimage"])

    T = R.manual_transform(f.shape, fixed.spacing, ty=-7.0, tx=4.5, theta_deg=1.5, scale=1.0)
    params = {"ty": -7.0, "tx": 4.5, "theta_deg": 1.5, "scale": 1.0, "flip_rows": False, "flip_cols": False}
    reg, _, _ = U.manual_metrics(fixed.grey(), mg, T)
    vals = np.linspace(-20, 20, 41)
    t = interleaved({
        "page": lambda: U.manual_metrics(fixed.grey(), mg, T),
        "bare": lambda: R.aligned_similarity(f, mg, T),
        "qa": lambda: U.qa_images(fixed, reg, moving, 32, 0.5),
        "landscape": lambda: R.cost_landscape(f, mg, params, "tx", vals, metric="ncc", spacing=fixed.spacing, max_side=128),
    }, reps)
    line("manual tick (warp + MSE/NCC/NMI): page path vs bare", t["page"], t["bare"], "≤ 1.2×")
    line("  + the four QA renderings (512²) vs bare", t["page"] + t["qa"], t["bare"])
    line("cost landscape (41 points, ≤128 px level) vs bare tick", t["landscape"], t["bare"])

    T_true = R.make_transform(theta_deg=12.0, ty=8.0, tx=-6.0, center=R.center_of(f.shape))
    mv = R.simulate_moving(f, T_true)
    t0 = time.perf_counter()
    est = R.intensity_register(f, mv, metric="mattes", spacing=fixed.spacing)
    dt = time.perf_counter() - t0
    err = R.transform_error(est.T, T_true, f.shape)
    print(f"{'SimpleITK rigid Mattes MI + rotation search, 512²':<58} {dt * 1e3:8.1f} ms   TRE median {err['tre_median_px']:.3f} px")


if __name__ == "__main__":
    main()
