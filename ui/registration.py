"""Registration page: manual alignment with live metrics and a cost landscape, automatic
methods run on demand, QA views, a known-transform test bench, dataset-wide accuracy and
exports. Pure work lives in :mod:`analysis.registration`; this is Streamlit glue.

Convention shown to the user (same as the sample dataset): ``T`` maps FIXED (row, col) px to
MOVING px, ``fixed(p) ≈ moving(T p)``. ``ty`` is the row (vertical) component, ``tx`` the
column one; angles are physical degrees.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any, Callable

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from analysis import display, registry
from analysis import registration as R
from analysis.batch import CallTask
from analysis.image import Image
from analysis.registry import Result
from ui import data, state
from ui.privacy import burned_in_gate
from ui.common import header, plain_name, safe_text
from ui.widgets import param_form

P = "reg"  # widget-key prefix
VIEW_SIDE = 512  # longest side of QA images sent to the browser
#: methods that return a matrix (usable in known-transform mode)
MATRIX_METHODS = {k: v for k, v in R.METHODS.items() if v not in R.DEFORMABLE}


# ----------------------------------------------------------------------------- caching
def memo(key: tuple, make: Callable[[], Any], size: int = 24) -> Any:
    """Per-session LRU (see ``ui.state.memo``)."""
    return state.memo("registration", key, make, size)


def moving_on_grid(fixed: Image, moving: Image) -> np.ndarray:
    """The moving plane resampled onto the fixed grid (spacing-aware, centred fields of view)."""

    def make() -> np.ndarray:
        m = moving.grey().astype(np.float64)
        G = R.grid_transform(fixed.shape2d, fixed.spacing, m.shape, moving.spacing)
        if m.shape == fixed.shape2d and np.allclose(G, np.eye(3)):
            return m
        return R.resample_to(m, moving.spacing, fixed.shape2d, fixed.spacing, cval=float(np.nanmin(m)))

    return memo(("grid", fixed.digest, moving.digest), make)


def run_method(fixed: Image, moving_grid: np.ndarray, moving_digest: str, key: str, params: dict[str, Any]) -> tuple[Result, float]:
    """Run registration operation ``key`` (cached per session); returns (result, seconds)."""

    def make() -> tuple[Result, float]:
        t0 = time.perf_counter()
        res = registry.run(key, fixed.grey(), params, moving=moving_grid, spacing=fixed.spacing)
        return res, time.perf_counter() - t0

    return memo(("run", fixed.digest, moving_digest, key, json.dumps(params, sort_keys=True, default=str)), make)


def manual_metrics(fixed: np.ndarray, moving_grid: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, dict[str, float], np.ndarray]:
    """Registered image, MSE/NCC/NMI over the overlap, and the overlap mask, for a manual transform."""
    reg = R.warp(moving_grid, T, output_shape=fixed.shape, cval=float(np.nanmin(moving_grid)))
    inside = R.overlap_mask(fixed.shape, moving_grid.shape, T)
    return reg, R.similarity(fixed, reg, inside), inside


# ----------------------------------------------------------------------------- formatting
def _fmt(v: Any, digits: int = 4) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not np.isfinite(f):
        return "–"
    return f"{f:.{digits}g}"


def transform_table(T: np.ndarray, shape: tuple[int, int], spacing: R.Spacing) -> pd.DataFrame:
    p = R.decompose(T, center=R.center_of(shape), spacing=spacing)
    rows = [
        ("ty (rows)", f"{p['ty_px']:.3f} px", f"{p['ty_mm']:.3f} mm" if spacing else "spacing unknown"),
        ("tx (columns)", f"{p['tx_px']:.3f} px", f"{p['tx_mm']:.3f} mm" if spacing else "spacing unknown"),
        ("θ", f"{p['theta_deg']:.3f}°", "physical angle" if spacing else "pixel-grid angle"),
        ("scale", f"{p['scale']:.4f}", f"rows {p['scale_row']:.4f} · cols {p['scale_col']:.4f} · shear {p['shear']:.4f}"),
        ("reflection", "yes" if p["flip"] else "no", f"det {p['det']:.4f}"),
    ]
    return pd.DataFrame(rows, columns=["parameter", "value", "detail"])


def _matrix_text(T: np.ndarray) -> str:
    return "\n".join("  ".join(f"{v:10.4f}" for v in row) for row in np.asarray(T))


def metric_cards(before: dict[str, float], after: dict[str, float], prefix: str = "") -> None:
    """MSE / NCC / NMI after, with the change from before as the delta."""
    cols = st.columns(3)
    for col, (k, label, better_high) in zip(cols, (("mse", "MSE", False), ("ncc", "NCC", True), ("nmi", "NMI", True))):
        a, b = after.get(k, np.nan), before.get(k, np.nan)
        delta = a - b if np.isfinite(a) and np.isfinite(b) else None
        col.metric(f"{prefix}{label}", _fmt(a), None if delta is None else f"{delta:+.4g} vs before",
                   delta_color="normal" if better_high else "inverse",
                   help=f"{label} over the overlap; before = moving as loaded: {_fmt(b)}")


# ----------------------------------------------------------------------------- QA views
def _u8(a: np.ndarray, window: tuple[float, float], invert: bool) -> np.ndarray:
    return display.downsample(display.window_to_uint8(np.asarray(a, np.float32), *window, invert=invert), VIEW_SIDE)


def qa_images(fixed: Image, registered: np.ndarray, moving: Image, tile: int, alpha: float,
              overlap: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The four QA renderings (uint8, ≤ VIEW_SIDE px), each image in its own display window;
    the difference is zero (white) where the moving image does not reach (``overlap``)."""
    wf = display.default_window(fixed)
    wm = display.default_window(moving) if moving.window is not None else display.auto_window(registered)
    f8 = _u8(fixed.grey(), wf, fixed.invert)
    m8 = _u8(registered, wm, moving.invert)
    scale = max(fixed.shape2d) / max(f8.shape)
    diff = R.difference(fixed.grey(), registered)
    if overlap is not None:
        diff[~np.asarray(overlap, bool)] = 0.0
    return {
        "checkerboard": R.checkerboard(f8, m8, max(1, int(round(tile / scale)))),
        "overlay": R.magenta_green(f8, m8),
        "difference": display.downsample(R.difference_rgb(diff), VIEW_SIDE),
        "fade": R.fade(f8, m8, alpha),
    }


def qa_views(fixed: Image, registered: np.ndarray, moving: Image, key: str, *, same_modality: bool = True,
             overlap: np.ndarray | None = None) -> None:
    """Checkerboard (adjustable tiles), magenta/green overlay, difference and fade."""
    c1, c2 = st.columns(2)
    tile = c1.slider("Checkerboard tile (px)", 4, 128, 32, step=4, key=f"{key}.tile")
    alpha = c2.slider("Fade: fixed → registered moving", 0.0, 1.0, 0.5, step=0.05, key=f"{key}.fade")
    views = qa_images(fixed, registered, moving, tile, alpha, overlap)
    a, b = st.columns(2)
    a.image(views["checkerboard"], caption=f"Checkerboard ({tile} px tiles)", width="stretch")
    b.image(views["overlay"], caption="Overlay: fixed magenta, moving green (aligned → grey)", width="stretch")
    c, d = st.columns(2)
    note = "" if same_modality else " — different modalities: read with care"
    c.image(views["difference"], caption=f"Difference fixed − moving ({fixed.units}; blue < 0 < red){note}", width="stretch")
    d.image(views["fade"], caption=f"Fade α = {alpha:.2f}", width="stretch")


# ----------------------------------------------------------------------------- figures
def landscape_figure(values: np.ndarray, costs: np.ndarray, current: float, truth: float | None, label: str, metric: str) -> go.Figure:
    fig = go.Figure(go.Scatter(x=values, y=costs, mode="lines+markers", name=metric.upper(),
                               hovertemplate=f"{label} %{{x:.3g}}: %{{y:.5g}}<extra></extra>"))
    fig.add_vline(x=current, line_dash="dot", line_color="#f58518", annotation_text="current", annotation_position="top")
    if truth is not None:
        fig.add_vline(x=truth, line_dash="dash", line_color="#54a24b", annotation_text="true", annotation_position="bottom")
    better = "lower" if not R.METRICS[metric][1] else "higher"
    fig.update_layout(height=280, margin=dict(l=0, r=0, t=30, b=0), xaxis_title=label, yaxis_title=f"{metric.upper()} ({better} is better)",
                      title=dict(text=f"Cost landscape: {metric.upper()} vs {label}", font=dict(size=13)))
    return fig


def field_figure(field: np.ndarray, spacing: R.Spacing) -> go.Figure:
    """Displacement magnitude (px) with a sparse quiver of arrows."""
    mag = np.hypot(field[0], field[1])
    small = display.downsample(mag.astype(np.float32), 256)
    f = mag.shape[0] / small.shape[0]
    fig = go.Figure(go.Heatmap(z=small, dx=f, dy=f, x0=(f - 1) / 2, y0=(f - 1) / 2, colorscale="Viridis",
                               colorbar=dict(title="|d| px"), hovertemplate="row %{y:.0f}, col %{x:.0f}<br>|d| %{z:.3g} px<extra></extra>"))
    q = R.quiver_points(field, 20)
    k = 3.0  # arrows drawn 3× longer so small displacements stay visible
    xs, ys = [], []
    for r, c, dr, dc in zip(q["row"], q["col"], q["d_row"], q["d_col"]):
        xs += [c, c + k * dc, None]
        ys += [r, r + k * dr, None]
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="white", width=1.2), hoverinfo="skip", name="d (×3)"))
    fig.add_trace(go.Scatter(x=q["col"] + k * q["d_col"], y=q["row"] + k * q["d_row"], mode="markers",
                             marker=dict(color="white", size=3), hoverinfo="skip", showlegend=False))
    ratio = spacing[0] / spacing[1] if spacing else 1.0
    fig.update_yaxes(autorange="reversed", scaleanchor="x", scaleratio=ratio, showgrid=False, zeroline=False)
    fig.update_xaxes(showgrid=False, zeroline=False)
    fig.update_layout(height=420, margin=dict(l=0, r=0, t=30, b=0), showlegend=False,
                      title=dict(text="Displacement magnitude and field (arrows ×3)", font=dict(size=13)))
    return fig


# ----------------------------------------------------------------------------- exports
def exports(fixed: Image, registered: np.ndarray, T: np.ndarray, field: np.ndarray | None, moving: Image,
            method: str, params: dict[str, Any], key: str) -> None:
    """Registered image (.npy float32 and 16-bit PNG), transform (JSON, ITK .tfm), field (.npy)."""
    burned_in_gate(moving, key=f"{key}.exp")  # a warning only: picture exports carry pixels, never headers
    c = st.columns(5)
    buf = io.BytesIO()
    np.save(buf, registered.astype(np.float32), allow_pickle=False)
    c[0].download_button("Registered (.npy)", buf.getvalue(), file_name="registered.npy", mime="application/octet-stream",
                         key=f"{key}.npy", help=f"float32, physical units ({moving.units}), on the fixed grid")
    png, slope, intercept = R.to_png16(registered)
    c[1].download_button("Registered (16-bit PNG)", png, file_name="registered_16bit.png", mime="image/png", key=f"{key}.png",
                         help=f"value = png × {slope:.6g} + {intercept:.6g} ({moving.units}); also in the JSON")
    doc = json.loads(R.transform_to_json(T, fixed_shape=fixed.shape2d, fixed_spacing=fixed.spacing,
                                         moving_shape=moving.shape2d, moving_spacing=moving.spacing, method=method, params=params))
    doc["registered_png16"] = {"slope": slope, "intercept": intercept, "units": moving.units}
    doc["displacement_field"] = "exported separately (.npy, (2, M, N) px)" if field is not None else None
    c[2].download_button("Transform (JSON)", json.dumps(doc, indent=2), file_name="transform.json", mime="application/json",
                         key=f"{key}.json")
    c[3].download_button("Transform (ITK .tfm)", R.transform_to_itk(T, fixed.spacing, moving.spacing), file_name="transform.tfm",
                         mime="text/plain", key=f"{key}.tfm",
                         help="AffineTransform in the images' physical frame (x = columns, y = rows, mm, origin at pixel 0)")
    if field is not None:
        fb = io.BytesIO()
        np.save(fb, field.astype(np.float32), allow_pickle=False)
        c[4].download_button("Displacement field (.npy)", fb.getvalue(), file_name="displacement.npy",
                             mime="application/octet-stream", key=f"{key}.field")


# ----------------------------------------------------------------------------- tabs
def _same_modality(fe: dict, me: dict) -> bool:
    return R.suggest_metric(fe, me) == "correlation"


def manual_tab(fixed: Image, moving: Image, mov: np.ndarray, truth: np.ndarray | None, same: bool) -> None:
    m, n = fixed.shape2d
    left, right = st.columns([1, 2])
    with left:
        ty = st.slider("ty (rows, px)", -float(m // 3), float(m // 3), 0.0, step=0.5, key=f"{P}.man.ty")
        tx = st.slider("tx (columns, px)", -float(n // 3), float(n // 3), 0.0, step=0.5, key=f"{P}.man.tx")
        th = st.slider("θ (degrees)", -180.0, 180.0, 0.0, step=0.5, key=f"{P}.man.th")
        sc = st.slider("scale", 0.5, 2.0, 1.0, step=0.01, key=f"{P}.man.sc")
        f1, f2 = st.columns(2)
        flip_r = f1.checkbox("flip rows", key=f"{P}.man.fr")
        flip_c = f2.checkbox("flip columns", key=f"{P}.man.fc")
        if fixed.spacing:
            st.caption(f"Shift = {ty * fixed.spacing[0]:.2f} mm (rows), {tx * fixed.spacing[1]:.2f} mm (columns); θ is a physical angle.")
    params = {"ty": ty, "tx": tx, "theta_deg": th, "scale": sc, "flip_rows": flip_r, "flip_cols": flip_c}
    T = R.manual_transform(fixed.shape2d, fixed.spacing, **params)
    reg, now, inside = manual_metrics(fixed.grey(), mov, T)
    before = memo(("sim0", fixed.digest, moving.digest), lambda: R.similarity(fixed.grey(), mov))
    with right:
        metric_cards(before, now)
        c1, c2, c3 = st.columns(3)
        vary = c1.selectbox("Landscape over", list(R.MANUAL_PARAMS), format_func=lambda k: R.MANUAL_PARAMS[k][0], key=f"{P}.man.vary")
        metric = c2.selectbox("Metric", list(R.METRICS), index=1 if same else 2, format_func=str.upper, key=f"{P}.man.metric")
        half = {"ty": 20.0, "tx": 20.0, "theta_deg": 30.0, "scale": 0.2}[vary]
        span = c3.number_input("± range", min_value=half / 20, max_value=half * 5, value=half, key=f"{P}.man.span.{vary}")
        cur = params[vary]
        vals = np.linspace(cur - span, cur + span, 41)
        if vary == "scale":
            vals = vals[vals > 0.05]
        base = {k: params[k] for k in ("ty", "tx", "theta_deg", "scale", "flip_rows", "flip_cols")}
        costs = memo(("land", fixed.digest, moving.digest, json.dumps(base), vary, metric, float(span)),
                     lambda: R.cost_landscape(fixed.grey(), mov, base, vary, vals, metric=metric, spacing=fixed.spacing, max_side=128))
        true_val = None
        if truth is not None and not (flip_r or flip_c):
            tp = R.decompose(truth, center=R.center_of(fixed.shape2d), spacing=fixed.spacing)
            true_val = {"ty": tp["ty_px"], "tx": tp["tx_px"], "theta_deg": tp["theta_deg"], "scale": tp["scale"]}[vary]
        st.plotly_chart(landscape_figure(vals, costs, cur, true_val, R.MANUAL_PARAMS[vary][0], metric), width="stretch", key=f"{P}.man.land")
        st.caption("Computed on a ≤128 px pyramid level around the current point; a sharp single minimum means the "
                   "metric pins this parameter down, a flat or multi-modal curve means it is ambiguous.")
    qa_views(fixed, reg, moving, f"{P}.man.qa", same_modality=same, overlap=inside)
    with st.expander("Transform and exports"):
        st.code(_matrix_text(T), language=None)
        st.dataframe(transform_table(T, fixed.shape2d, fixed.spacing), hide_index=True, width="stretch")
        G = R.grid_transform(fixed.shape2d, fixed.spacing, moving.shape2d, moving.spacing)
        exports(fixed, reg, G @ T, None, moving, "manual", params, f"{P}.man.exp")


def automatic_tab(fixed: Image, moving: Image, mov: np.ndarray, truth: np.ndarray | None, truth_field: np.ndarray | None,
                  fe: dict, me: dict, same: bool) -> None:
    left, right = st.columns([1, 2])
    with left:
        name = st.selectbox("Method", list(R.METHODS), index=list(R.METHODS).index("Intensity (SimpleITK)"), key=f"{P}.auto.method")
        op = registry.get(R.METHODS[name])
        st.caption(f"Intensity domain: {op.domain}")
        prefix = f"{P}.auto"
        suggested = R.suggest_metric(fe, me)
        defaults: dict[str, Any] = {}
        for p in op.params:  # same-modality pairs start with correlation, multimodal pairs with mutual information
            if p.name == "metric":
                defaults["metric"] = suggested if suggested in (p.options or ()) else ("nmi" if suggested == "mattes" else "ncc")
        if op.slow:
            with st.form(f"{P}.auto.form.{op.key}"):
                params = param_form(op, prefix=prefix, values=defaults)
                go_ = st.form_submit_button("Register", type="primary")
        else:
            params = param_form(op, prefix=prefix, values=defaults)
            go_ = True
        st.caption(f"Suggested metric for this pair: **{suggested}** ({'same modality' if same else 'multimodal'}).")
    run_key = f"{P}.auto.ran"
    sig = (fixed.digest, moving.digest, op.key, json.dumps(params, sort_keys=True, default=str))
    if go_:
        st.session_state[run_key] = sig
    with right:
        if st.session_state.get(run_key) != sig:
            st.info("Press **Register** to run this method (optimisation-based and deformable methods run on demand).")
            return
        try:
            with st.spinner(f"Registering with {name}…"):
                res, secs = run_method(fixed, mov, moving.digest, op.key, params)
        except ValueError as exc:
            st.error(safe_text(str(exc), 400))
            return
        before = {k[:-7]: v for k, v in res.metrics.items() if k.endswith("_before")}
        after = {k[:-6]: v for k, v in res.metrics.items() if k.endswith("_after")}
        st.markdown(f"**{name}** · {secs * 1000:.0f} ms")
        metric_cards(before, after)
        T = res.extras["T"]
        field = res.extras.get("field")
        if field is None:
            st.dataframe(transform_table(T, fixed.shape2d, fixed.spacing), hide_index=True, width="stretch", key=f"{P}.auto.tt")
            st.code(_matrix_text(T), language=None)
        else:
            mag = np.hypot(field[0], field[1])
            st.caption(f"Displacement: max {mag.max():.2f} px, mean {mag.mean():.2f} px")
        if truth is not None or truth_field is not None:
            t = R.tre(T, truth if truth is not None else np.eye(3), R.grid_points(fixed.shape2d), moving_spacing=fixed.spacing,
                      fixed_spacing=fixed.spacing, field_est=field, field_true=truth_field)
            cols = st.columns(3)
            cols[0].metric("TRE median (px)", _fmt(t["median_px"]), help="target registration error on a grid of points, "
                           "against the transform stored with this pair")
            cols[1].metric("TRE max (px)", _fmt(t["max_px"]))
            if "median_mm" in t:
                cols[2].metric("TRE median (mm)", _fmt(t["median_mm"]))
        for note in res.notes:
            st.caption(safe_text(note, 400))
    registered = np.asarray(res.image, np.float64)
    if "matches" in res.extras and len(res.extras["matches"]["fixed_rc"]):
        f8, m8 = R._to_uint8(fixed.grey()), R._to_uint8(mov)
        canvas = R.draw_matches(f8, m8, res.extras["matches"])
        st.image(display.downsample(canvas, 1024), caption="Matches: fixed | moving — RANSAC inliers green, outliers red", width="stretch")
    if field is not None:
        st.plotly_chart(field_figure(field, fixed.spacing), width="stretch", key=f"{P}.auto.field")
    if "flip_scores" in res.extras:
        st.dataframe(pd.DataFrame(res.extras["flip_scores"]), hide_index=True, key=f"{P}.auto.flips")
    trace = res.extras.get("metric_trace")
    if trace:
        st.plotly_chart(px.line(y=trace, labels={"x": "iteration", "y": "metric (lower is better)"}, height=220,
                                title="Optimiser trace (all pyramid levels)"), width="stretch", key=f"{P}.auto.trace")
    qa_views(fixed, registered, moving, f"{P}.auto.qa", same_modality=same, overlap=res.extras.get("overlap"))
    with st.expander("Exports"):
        exports(fixed, registered, R.grid_transform(fixed.shape2d, fixed.spacing, moving.shape2d, moving.spacing) @ T, field,
                moving, op.key, params, f"{P}.auto.exp")


def known_tab() -> None:
    got = data.working_image()
    if got is None:
        return
    entry, img = got
    if img.is_rgb:
        img = img.with_pixels(img.grey(), tag="grey")
    st.caption(f"Applies a known transform to the working image **{safe_text(entry.get('name', entry.get('id', '')))}**, "
               "registers the result back and reports the error.")
    m, n = img.shape2d
    left, right = st.columns([1, 2])
    with left:
        if st.button("Random transform", key=f"{P}.kt.rand"):
            seed = int(st.session_state.get(f"{P}.kt.seed", 0)) + 1
            st.session_state[f"{P}.kt.seed"] = seed
            _, p = R.random_transform(seed, (m, n), max_shift_px=min(m, n) / 20, max_angle_deg=20.0, spacing=img.spacing)
            st.session_state[f"{P}.kt.ty"] = round(p["ty"] * 2) / 2
            st.session_state[f"{P}.kt.tx"] = round(p["tx"] * 2) / 2
            st.session_state[f"{P}.kt.th"] = round(p["theta_deg"] * 2) / 2
        with st.form(f"{P}.kt.form"):
            ty = st.slider("true ty (rows, px)", -float(m // 4), float(m // 4), 6.0, step=0.5, key=f"{P}.kt.ty")
            tx = st.slider("true tx (columns, px)", -float(n // 4), float(n // 4), -4.0, step=0.5, key=f"{P}.kt.tx")
            th = st.slider("true θ (degrees)", -45.0, 45.0, 10.0, step=0.5, key=f"{P}.kt.th")
            sc = st.slider("true scale", 0.7, 1.4, 1.0, step=0.01, key=f"{P}.kt.sc")
            fl = st.checkbox("mirror columns", key=f"{P}.kt.flip")
            noise = st.slider("noise σ (% of the image's range)", 0.0, 10.0, 0.0, step=0.5, key=f"{P}.kt.noise")
            method = st.selectbox("Method", list(MATRIX_METHODS), index=list(MATRIX_METHODS).index("Intensity (SimpleITK)"), key=f"{P}.kt.method")
            go_ = st.form_submit_button("Apply and register back", type="primary")
    true_p = {"ty": ty, "tx": tx, "theta_deg": th, "scale": sc, "flip_cols": fl}
    sig = (img.digest, json.dumps(true_p), noise, method)
    if go_:
        st.session_state[f"{P}.kt.ran"] = sig
    with right:
        if st.session_state.get(f"{P}.kt.ran") != sig:
            st.info("Choose a transform (or **Random transform**) and press **Apply and register back**.")
            return
        T_true = R.manual_transform((m, n), img.spacing, **true_p)

        def make() -> tuple[np.ndarray, Result, float]:
            moving = R.simulate_moving(img.grey(), T_true)
            if noise > 0:
                a = img.grey()
                span = float(np.nanpercentile(a, 99.5) - np.nanpercentile(a, 0.5))
                moving = moving + np.random.default_rng(0).normal(0, noise / 100 * span, moving.shape)
            key = MATRIX_METHODS[method]
            params = {"metric": "correlation"} if key == "registration.intensity" else {}
            if key == "registration.intensity" and (sc != 1.0):
                params["transform"] = "similarity"
            if key == "registration.intensity" and fl:
                params["transform"] = "affine"
            t0 = time.perf_counter()
            res = registry.run(key, img.grey(), params, moving=moving, spacing=img.spacing)
            return moving, res, time.perf_counter() - t0

        with st.spinner("Registering back…"):
            moving, res, secs = memo(("known",) + sig, make)
        err = R.transform_error(res.extras["T"], T_true, (m, n), spacing=img.spacing)
        cols = st.columns(4)
        cols[0].metric("TRE median", f"{err['tre_median_px']:.3f} px")
        cols[1].metric("TRE median (mm)", f"{err['tre_median_mm']:.3f} mm" if "tre_median_mm" in err else "spacing unknown")
        cols[2].metric("Angle error", f"{err['angle_error_deg']:.3f}°")
        cols[3].metric("Scale error", f"{err['scale_error']:.4f}")
        st.caption(f"{method}: {secs * 1000:.0f} ms · shift error at the centre {err['shift_error_px']:.3f} px"
                   + (f" ({err['shift_error_mm']:.3f} mm)" if "shift_error_mm" in err else "")
                   + f" · reflection {'correct' if err['flip_correct'] else 'WRONG'}")
        c = R.center_of((m, n))
        a, b = R.decompose(T_true, center=c, spacing=img.spacing), R.decompose(res.extras["T"], center=c, spacing=img.spacing)
        st.dataframe(pd.DataFrame({"parameter": ["ty px", "tx px", "θ °", "scale", "reflection"],
                                   "true": [a["ty_px"], a["tx_px"], a["theta_deg"], a["scale"], a["flip"]],
                                   "estimated": [b["ty_px"], b["tx_px"], b["theta_deg"], b["scale"], b["flip"]]}).round(4),
                     hide_index=True, key=f"{P}.kt.table")
    mv_img = img.with_pixels(moving.astype(np.float32), tag="known-moving")
    qa_views(img, np.asarray(res.image, np.float64), mv_img, f"{P}.kt.qa", overlap=res.extras.get("overlap"))


def dataset_tab() -> None:
    dataset = data.working_dataset()
    if dataset is None or not len(dataset):
        st.info("No working dataset: choose one on the **Home** page.")
        return
    items = R.pair_items(dataset)
    if not items:
        st.info("This dataset has no image pairs (entries sharing a pair_id).")
        return
    kinds = pd.Series([it["label"] or it["role"] or "pair" for it in items]).value_counts()
    st.caption(f"{len(items)} pairs: " + ", ".join(f"{plain_name(k)} {v}" for k, v in kinds.items())
               + ". TRE is computed wherever the pair carries its exact transform or displacement field.")
    with st.form(f"{P}.ds.form"):
        c1, c2 = st.columns([2, 1])
        methods = c1.multiselect("Methods", list(R.METHODS), default=["Intensity (SimpleITK)", "Phase correlation"], key=f"{P}.ds.methods")
        only = c2.multiselect("Pair kinds", list(kinds.index), default=list(kinds.index), key=f"{P}.ds.kinds")
        go_ = st.form_submit_button("Register every pair", type="primary")
    sel = [it for it in items if (it["label"] or it["role"] or "pair") in only]
    sig = (tuple(methods), tuple(sorted(only)))
    if go_:
        st.session_state[f"{P}.ds.ran"] = sig
    if st.session_state.get(f"{P}.ds.ran") != sig or not methods or not sel:
        st.info("Pick methods and press **Register every pair** (intensity methods take about a second per pair).")
        return
    frames = []
    for name in methods:
        key = R.METHODS[name]
        task = CallTask(R.register_pair_task, (("key", key), ("params_json", "{}"), ("metric", "auto")))
        df = data.run_over_dataset(task, dataset, task_key=f"registration|{key}|auto|{'/'.join(sorted(only))}",
                                   label=f"{name}", records=sel)
        df.insert(0, "method_name", name)
        df["kind"] = [it["label"] or it["role"] for it in sel]
        frames.append(df)
    res = pd.concat(frames, ignore_index=True)
    ok = res[res["error"] == ""]
    if "tre_median_px" in ok.columns and ok["tre_median_px"].notna().any():
        summ = ok.groupby("method_name").agg(pairs=("tre_median_px", "count"), tre_median_px=("tre_median_px", "median"),
                                             converged=("converged", lambda s: float(pd.Series(s, dtype=float).mean())),
                                             runtime_s=("runtime_s", "median")).reset_index()
        st.dataframe(summ.round(4), hide_index=True, key=f"{P}.ds.summary",
                     column_config={"converged": st.column_config.NumberColumn("converged (TRE < 2 px)", format="%.2f")})
        fig = px.strip(ok, x="kind", y="tre_median_px", color="method_name", log_y=True, height=340,
                       hover_data=["name"], title="TRE (median over a grid of points, px) per pair")
        fig.add_hline(y=0.5, line_dash="dot", annotation_text="0.5 px")
        st.plotly_chart(fig, width="stretch", key=f"{P}.ds.tre")
    c1, c2 = st.columns(2)
    if "nmi_gain" in ok.columns:
        c1.plotly_chart(px.box(ok, x="method_name", y="nmi_gain", points="all", height=320, hover_data=["name"],
                               title="Metric improvement: NMI after − before"), width="stretch", key=f"{P}.ds.gain")
    c2.plotly_chart(px.box(ok, x="method_name", y="runtime_s", points="all", height=320, log_y=True, hover_data=["name"],
                           title="Runtime per pair (s)"), width="stretch", key=f"{P}.ds.time")
    errs = res[res["error"] != ""]
    if len(errs):
        with st.expander(f"{len(errs)} pairs failed"):
            st.dataframe(pd.DataFrame({"pair": [plain_name(n) for n in errs["name"]], "method": errs["method_name"],
                                       "reason": [plain_name(e, 300) for e in errs["error"]]}), hide_index=True)
    st.dataframe(res, hide_index=True, key=f"{P}.ds.table")
    st.download_button("Download results (CSV)", res.to_csv(index=False).encode(), file_name="registration_dataset.csv",
                       mime="text/csv", key=f"{P}.ds.csv")


# ----------------------------------------------------------------------------- the page
def _truth(fe: dict, me: dict, fixed: Image, moving: Image) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Known transform of the working pair, expressed on the fixed grid (after resampling)."""
    try:
        T, fld = memo(("truth", fe.get("id"), me.get("id"), fixed.digest, moving.digest), lambda: R.true_transform(fe, me))
    except Exception:  # noqa: BLE001 - a malformed ground-truth column just means "unknown"
        return None, None
    if T is None:
        return None, None
    G = R.grid_transform(fixed.shape2d, fixed.spacing, moving.shape2d, moving.spacing)
    return np.linalg.inv(G) @ T, fld


def registration_page() -> None:
    header("Registration", "Align a moving image to a fixed one: manual sliders with live metrics and a cost landscape, "
           "automatic methods, QA views, a known-transform test bench and dataset-wide accuracy.")
    tabs = st.tabs(["Manual", "Automatic", "Known transform", "Dataset-wide"])
    with tabs[2]:
        known_tab()
    with tabs[3]:
        dataset_tab()
    got = data.working_pair()
    if got is None:
        for t in tabs[:2]:
            with t:
                st.info("Pick a working pair in the sidebar (fixed A, moving B).")
        return
    (fe, fixed), (me, moving) = got
    if fixed.is_rgb:
        fixed = fixed.with_pixels(fixed.grey(), tag="grey")
    if moving.is_rgb:
        moving = moving.with_pixels(moving.grey(), tag="grey")
    mov = moving_on_grid(fixed, moving)
    same = _same_modality(fe, me)
    truth, truth_field = _truth(fe, me, fixed, moving)
    desc = (f"Fixed **{safe_text(fe.get('name', fe.get('id', '')))}** ({fixed.shape2d[0]}×{fixed.shape2d[1]} px"
            + (f", {fixed.spacing[0]:.3g}×{fixed.spacing[1]:.3g} mm" if fixed.spacing else "") + f", {fixed.modality}) ← moving "
            f"**{safe_text(me.get('name', me.get('id', '')))}** ({moving.shape2d[0]}×{moving.shape2d[1]} px"
            + (f", {moving.spacing[0]:.3g}×{moving.spacing[1]:.3g} mm" if moving.spacing else "") + f", {moving.modality})"
            + ("" if mov.shape == moving.shape2d and fixed.spacing == moving.spacing else " — moving resampled onto the fixed grid")
            + (" · exact transform known" if truth is not None else ""))
    for t in tabs[:2]:
        with t:
            st.caption(desc)
    with tabs[0]:
        manual_tab(fixed, moving, mov, truth, same)
    with tabs[1]:
        automatic_tab(fixed, moving, mov, truth, truth_field, fe, me, same)


__all__ = ["registration_page", "manual_metrics", "run_method", "moving_on_grid", "qa_views", "memo"]
