"""The generic technique page: operation + parameters from the registry, before/after,
sweep grid, dataset-wide run. Enhancement, Segmentation, Fusion, Registration and
Recognition pages are built from :func:`technique_page` (plus their own extra views).

Stable API used by the pages (keep backward compatible):

* ``TechniqueSpec(technique, title, intro, measure=None, tile_metrics=None, result_view=None)``
* ``technique_page(spec)``
* ``run_cached(image, op_key, params, **context) -> Result`` (per-session LRU)
* ``sweep_grid(image, op_key, base_params, tile_metrics, key)``
* ``dataset_wide(dataset, steps, measure, key, group_cols)``
"""

from __future__ import annotations

import itertools
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from analysis import display, registry
from analysis.batch import PipelineTask
from analysis.image import Image
from analysis.metrics import basic_measure, entropy
from analysis.registry import Operation, Result
from ui import data, picker
from ui.common import header, plain_name, safe_text
from ui.viewer import image_figure
from ui.widgets import param_form

TileMetrics = Callable[[np.ndarray, Result, Image], dict]


@dataclass
class TechniqueSpec:
    technique: str
    title: str
    intro: str = ""
    measure: Callable[..., dict] | None = None  # module-level (picklable) for dataset-wide runs
    tile_metrics: TileMetrics | None = None  # numbers under every tile
    result_view: Callable[[dict[str, Any]], None] | None = None  # extra views for the current result


def default_tile_metrics(before: np.ndarray, result: Result, image: Image) -> dict[str, float]:
    out: dict[str, float] = {}
    if result.image is not None:
        a = np.asarray(result.image, dtype=np.float64)
        out["std"] = float(np.nanstd(a))
        out["entropy"] = entropy(a)
    elif result.mask is not None:
        m = np.asarray(result.mask, bool)
        out["area_px"] = float(m.sum())
        if image.pixel_area_mm2:
            out["area_mm2"] = float(m.sum() * image.pixel_area_mm2)
    elif result.labels is not None:
        out["regions"] = float(len(np.unique(result.labels)) - (1 if (result.labels == 0).any() else 0))
    out.update({k: float(v) for k, v in result.metrics.items() if np.isscalar(v)})
    return out


# ----------------------------------------------------------------------------- running
_RESULTS = "medlens.results_lru"
_LRU_MAX = 48


def run_cached(image: Image, op_key: str, params: dict[str, Any], **context: Any) -> Result:
    """Run an operation on a 2-D image, cached per session on (image digest, key, params).
    Per-session so no user ever receives a result computed from another user's upload."""
    ctx_sig = {k: (v.digest if isinstance(v, Image) else (list(v) if isinstance(v, tuple) else v)) for k, v in context.items()
               if not isinstance(v, np.ndarray)}
    arr_sig = {k: _arr_digest(v) for k, v in context.items() if isinstance(v, np.ndarray)}
    key = (image.digest, op_key, json.dumps(params, sort_keys=True, default=str), json.dumps(ctx_sig, sort_keys=True, default=str),
           json.dumps(arr_sig, sort_keys=True))
    lru: OrderedDict = st.session_state.setdefault(_RESULTS, OrderedDict())
    if key in lru:
        lru.move_to_end(key)
        return lru[key]
    ctx = {k: (v.grey() if isinstance(v, Image) else v) for k, v in context.items()}
    ctx.setdefault("spacing", image.spacing)
    ctx.setdefault("units", image.units)
    res = registry.run(op_key, image.grey() if not image.is_rgb else image.grey(), params, **ctx)
    lru[key] = res
    while len(lru) > _LRU_MAX:
        lru.popitem(last=False)
    return res


def _arr_digest(a: np.ndarray) -> str:
    from analysis.image import content_digest

    return content_digest(a)[:16]


def result_to_display(result: Result, image: Image, window: tuple[float, float]) -> tuple[Image, np.ndarray | None]:
    """What to show for a result: (image to draw, optional overlay)."""
    if result.image is not None:
        a = np.asarray(result.image)
        units = result.units or image.units
        return image.with_pixels(a.astype(np.float32) if a.dtype != np.uint8 or a.ndim == 2 else a, units=units, tag="result"), None
    if result.labels is not None:
        return image, np.asarray(result.labels)
    if result.mask is not None:
        return image, np.asarray(result.mask, bool)
    return image, None


def output_window(result: Result, image: Image, input_window: tuple[float, float]) -> tuple[float, float]:
    """Outputs in the input's units keep the input window; others get an auto-window."""
    if result.image is not None and (result.units is None or result.units == image.units):
        return input_window
    if result.image is not None:
        return display.auto_window(result.image, 0.5, 99.5)
    return input_window


# ----------------------------------------------------------------------------- sweep grid
def sweep_grid(image: Image, op: Operation, base: dict[str, Any], tile_metrics: TileMetrics, key: str,
               window: tuple[float, float], context: dict[str, Any] | None = None) -> None:
    """One- or two-parameter grid of result tiles with numbers under each, a metric-versus-
    parameter chart and the best tile marked. A failing tile shows its error; the rest render."""
    sweepable = [p for p in op.params if p.kind in ("int", "float", "choice", "bool")]
    if not sweepable:
        st.info("This operation has no parameter to sweep.")
        return
    names = [p.name for p in sweepable]
    c1, c2 = st.columns(2)
    p1 = op.param(c1.selectbox("Parameter", names, key=f"{key}.p1"))
    p2name = c2.selectbox("Second parameter (2-D grid)", ["—"] + [n for n in names if n != p1.name], key=f"{key}.p2")
    p2 = op.param(p2name) if p2name != "—" else None

    def _range(p, col, k):  # type: ignore[no-untyped-def]
        if p.kind in ("choice", "bool"):
            return p.sweep_values()
        lo_default = p.min if p.min is not None else float(p.default) / 2
        hi_default = p.max if p.max is not None else float(p.default) * 2
        if p.max is not None and p.min is not None and (p.max - p.min) > 20 * max(abs(float(p.default)), 1e-9):
            hi_default = min(p.max, float(p.default) * 4 if p.default else p.max)
        a, b, c = col.columns(3)
        lo = a.number_input(f"{p.name} from", value=float(lo_default), key=f"{k}.lo", format="%.4g")
        hi = b.number_input(f"{p.name} to", value=float(hi_default), key=f"{k}.hi", format="%.4g")
        n = c.number_input("steps", 2, 12, 5 if p2 is None else 3, key=f"{k}.n")
        return p.sweep_values(lo, hi, int(n))

    v1 = _range(p1, c1, f"{key}.r1")
    v2 = _range(p2, c2, f"{key}.r2") if p2 is not None else [None]
    combos = list(itertools.product(v1, v2))
    if len(combos) > 36:
        st.warning(f"{len(combos)} tiles is too many; showing the first 36.")
        combos = combos[:36]
    if op.slow and not st.button(f"Run sweep ({len(combos)} runs)", key=f"{key}.go", type="primary"):
        st.caption(f"{op.title} is slow (> 0.3 s per run at full size): press the button to run the grid.")
        return
    rows = []
    bar = st.progress(0.0, text="Sweeping…") if len(combos) > 4 else None
    tiles = []
    for i, (a, b) in enumerate(combos):
        params = dict(base)
        params[p1.name] = a
        if p2 is not None:
            params[p2.name] = b
        row = {p1.name: a}
        if p2 is not None:
            row[p2.name] = b
        try:
            res = run_cached(image, op.key, params, **(context or {}))
            row.update(tile_metrics(image.grey(), res, image))
            tiles.append((params, res, None))
        except Exception as exc:  # noqa: BLE001 - a failing tile shows its error, the rest render
            tiles.append((params, None, f"{type(exc).__name__}: {exc}"))
            row["error"] = str(exc)
        rows.append(row)
        if bar:
            bar.progress((i + 1) / len(combos), text=f"Sweeping… {i + 1}/{len(combos)}")
    if bar:
        bar.empty()
    table = pd.DataFrame(rows)
    metric_cols = [c for c in table.columns if c not in (p1.name, p2.name if p2 else None, "error") and pd.api.types.is_numeric_dtype(table[c])]
    best_idx = None
    if metric_cols:
        m1, m2 = st.columns([2, 1])
        metric = m1.selectbox("Metric to rank tiles", metric_cols, key=f"{key}.metric")
        higher = m2.toggle("higher is better", value=True, key=f"{key}.higher")
        valid = table[metric].dropna()
        if len(valid):
            best_idx = int(valid.idxmax() if higher else valid.idxmin())
    ncol = len(v2) if p2 is not None else min(len(combos), 6)
    cols = st.columns(ncol)
    for i, (params, res, err) in enumerate(tiles):
        with cols[i % ncol]:
            label = f"{p1.name}={_fmt(params[p1.name])}" + (f", {p2.name}={_fmt(params[p2.name])}" if p2 else "")
            if err:
                st.error(f"{safe_text(label)}: {safe_text(err, 300)}")
                continue
            shown, overlay = result_to_display(res, image, window)
            disp = display.to_display(shown, output_window(res, image, window))
            if overlay is not None:
                disp = _overlay_rgb(disp, overlay)
            st.image(display.downsample(disp, 256), width="stretch")
            star = "★ best · " if i == best_idx else ""
            nums = " · ".join(f"{k} {_fmt(v)}" for k, v in rows[i].items() if k not in (p1.name, p2.name if p2 else None, "error"))
            st.caption(f"{star}{label}  \n{nums}")
    if metric_cols and len(table) > 1 and p1.kind in ("int", "float"):
        metric = st.session_state.get(f"{key}.metric", metric_cols[0])
        fig = px.line(table, x=p1.name, y=metric, color=(table[p2.name].astype(str) if p2 is not None else None), markers=True)
        if best_idx is not None:
            fig.add_trace(go.Scatter(x=[table[p1.name].iloc[best_idx]], y=[table[metric].iloc[best_idx]], mode="markers",
                                     marker=dict(size=16, symbol="star", color="#f58518"), name="best"))
        fig.update_layout(height=300, margin=dict(l=0, r=0, t=10, b=0))
        st.plotly_chart(fig, width="stretch", key=f"{key}.chart")
    st.dataframe(table, hide_index=True, width="stretch")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _overlay_rgb(disp: np.ndarray, overlay: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    rgb = np.stack([disp] * 3, -1).astype(np.float32) if disp.ndim == 2 else disp.astype(np.float32)
    ov = np.asarray(overlay)
    if ov.dtype == bool or ov.max() <= 1:
        m = ov.astype(bool)
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.array([255, 59, 48], np.float32)
    else:
        from skimage.color import label2rgb

        col = label2rgb(ov, bg_label=0) * 255
        m = ov > 0
        rgb[m] = (1 - alpha) * rgb[m] + alpha * col[m]
    return np.clip(rgb, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- dataset-wide
def dataset_wide(steps: list[tuple[str, dict]], measure: Callable[..., dict] | None, key: str,
                 group_cols: tuple[str, ...] = ("label", "modality", "role")) -> pd.DataFrame | None:
    """Run ``steps`` over the working dataset (batch map, progress, cached), chart the
    distribution of every numeric result grouped by a chosen column, list errors and the
    worst / best images (click to open them as the working image)."""
    dataset = data.working_dataset()
    if dataset is None or not len(dataset):
        st.info("No working dataset.")
        return None
    measure = measure or basic_measure
    task = PipelineTask.make(steps, measure)
    task_key = json.dumps([steps, f"{measure.__module__}.{measure.__qualname__}"], sort_keys=True, default=str)
    run_key = f"{key}.ran"
    if st.button(f"Run on all {len(dataset)} images", key=f"{key}.go", type="primary"):
        st.session_state[run_key] = task_key
    if st.session_state.get(run_key) != task_key:
        st.caption("Runs the current settings on every image of the working dataset (in parallel, cached by content + parameters).")
        return None
    df = data.run_over_dataset(task, dataset, task_key=task_key)
    errs = df[df["error"].astype(str) != ""]
    ok = df[df["error"].astype(str) == ""]
    st.caption(f"{len(ok)} images processed, {len(errs)} failed.")
    num_cols = [c for c in ok.columns if pd.api.types.is_numeric_dtype(ok[c]) and ok[c].notna().any() and c not in ("slice_index",)]
    if num_cols:
        gcols = [c for c in group_cols if c in ok.columns and ok[c].astype(str).nunique() > 1] or [None]
        a, b = st.columns(2)
        metric = a.selectbox("Metric", num_cols, key=f"{key}.metric")
        group = b.selectbox("Group by", gcols, key=f"{key}.group", format_func=lambda g: g or "(all)")
        fig = px.box(ok, x=group, y=metric, points="all", hover_data=["name"] if "name" in ok.columns else None, color=group)
        fig.update_layout(height=380, margin=dict(l=0, r=0, t=10, b=0), showlegend=False)
        st.plotly_chart(fig, width="stretch", key=f"{key}.box")
        ranked = ok.sort_values(metric)
        w, bst = st.columns(2)
        for col, title, part in ((w, "Lowest", ranked.head(5)), (bst, "Highest", ranked.tail(5).iloc[::-1])):
            with col:
                st.markdown(f"**{title} {safe_text(metric)}**")
                for _, r in part.iterrows():
                    st.button(f"{plain_name(r.get('name', r['id']), 40)} — {_fmt(r[metric])}", key=f"{key}.open.{title}.{r['id']}",
                              on_click=picker.choose_image, args=(str(r["id"]),), help="Make this the working image")
    if len(errs):
        with st.expander(f"{len(errs)} images failed"):
            st.dataframe(pd.DataFrame({"file": [plain_name(n) for n in errs.get("name", errs["id"])], "reason": errs["error"]}),
                         hide_index=True, width="stretch")
    st.download_button("Download results (CSV)", df.to_csv(index=False).encode(), file_name=f"{key}_dataset.csv", mime="text/csv",
                       key=f"{key}.csv")
    return df


# ----------------------------------------------------------------------------- the page
def technique_page(spec: TechniqueSpec) -> None:
    header(spec.title, spec.intro)
    ops = registry.operations(spec.technique, inputs="image")
    if not ops:
        st.info(f"No {spec.technique} operations are registered yet.")
        return
    got = data.working_image()
    if got is None:
        return
    entry, image = got
    tile_metrics = spec.tile_metrics or default_tile_metrics
    left, right = st.columns([1, 3])
    with left:
        titles = {o.key: o.title for o in ops}
        op_key = st.selectbox("Operation", list(titles), format_func=titles.get, key=f"{spec.technique}.op")
        op = registry.get(op_key)
        st.caption(f"Intensity domain: {op.domain}")
        if op.slow:
            with st.form(f"{spec.technique}.form"):
                params = param_form(op, prefix=spec.technique)
                st.form_submit_button("Apply", type="primary")
        else:
            params = param_form(op, prefix=spec.technique)
    window = display.default_window(image)
    with right:
        st.caption(f"{safe_text(entry['name'])} · {image.shape2d[0]}×{image.shape2d[1]} px · {image.units}")
        try:
            result = run_cached(image, op.key, params)
        except ValueError as exc:
            st.error(safe_text(str(exc), 400))
            return
        shown, overlay = result_to_display(result, image, window)
        a, b = st.columns(2)
        a.plotly_chart(image_figure(image, window, title="Before", height=380, uirevision="before"), width="stretch", key=f"{spec.technique}.before")
        b.plotly_chart(image_figure(shown, output_window(result, image, window), title=f"After — {op.title}", height=380, overlay=overlay,
                                    uirevision="after"), width="stretch", key=f"{spec.technique}.after")
        nums = tile_metrics(image.grey(), result, image)
        if nums:
            cols = st.columns(min(len(nums), 6))
            for i, (k, v) in enumerate(list(nums.items())[:6]):
                cols[i].metric(k, _fmt(v))
        for note in result.notes:
            st.caption(safe_text(note, 400))
    tabs = st.tabs(["Sweep grid", "Dataset-wide"])
    with tabs[0]:
        sweep_grid(image, op, params, tile_metrics, key=f"{spec.technique}.sweep", window=window)
    with tabs[1]:
        dataset_wide([(op.key, params)], spec.measure, key=f"{spec.technique}.ds")
    if spec.result_view:
        spec.result_view({"entry": entry, "image": image, "op": op, "params": params, "result": result, "window": window})
