"""The Segmentation page: method + post-processing chain, overlay / contour / label views,
click-to-seed, region table in mm, ground-truth comparison, threshold grid, sweep grid,
dataset-wide run and exports (mask PNG, DICOM SEG, region CSV).

Built from the building blocks of :mod:`ui.technique` (``run_steps``, ``sweep_grid``,
``dataset_wide``, ``preview_image``); everything numerical lives in
:mod:`analysis.segmentation`, :mod:`analysis.seg_metrics` and :mod:`analysis.seg_export`.

Coordinates: every view is drawn in the *full-resolution* pixel grid (rows, cols). A slow
method on a large image may run on a preview copy (factor ``f``); its seeds are divided by
``f`` on the way in and its masks are enlarged (nearest) by ``f`` on the way out, so
overlays, clicks, measurements and ground-truth comparisons stay on the full grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from scipy import ndimage as ndi

from analysis import display, registry
from analysis import seg_export, seg_metrics
from analysis import segmentation as seg
from analysis.image import Image, content_digest
from analysis.metrics import METRIC_INFO
from analysis.registry import Operation, Result
from ui import data, state
from ui.privacy import burned_in_gate, removal_preview
from ui.common import header, safe_text
from ui.technique import PREVIEW_SIDE, RunContext, dataset_wide, preview_image, run_steps, sweep_grid
from ui.viewer import image_figure
from ui.widgets import param_form, widget_key

T = "segmentation"
FAMILIES = {
    "Thresholds": ("manual", "otsu", "multi_otsu", "li", "yen", "triangle", "isodata", "mean", "minimum", "local", "hysteresis"),
    "Edges": ("sobel", "scharr", "prewitt", "roberts", "canny", "log", "dog"),
    "Regions": ("watershed", "region_growing", "slic", "felzenszwalb", "chan_vese", "morph_chan_vese", "morph_gac", "random_walker"),
}
GRID_METHODS = ("otsu", "li", "yen", "triangle", "isodata", "mean", "minimum")
PALETTE = ("#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c", "#fabebe")
ERROR_COLOURS = {1: "#2ca02c", 2: "#d62728", 3: "#1f77b4"}  # TP green, FP red, FN blue
CLICK_GRID = 96  # seed-picking grid: at most CLICK_GRID × CLICK_GRID invisible click targets

#: segmentation metrics for ranking in dataset-wide views (higher is better?, description)
SEG_METRIC_INFO = {
    "dice": (True, "Dice overlap with the ground-truth mask"),
    "iou": (True, "intersection over union with the ground truth"),
    "hausdorff_mm": (False, "Hausdorff distance to the ground truth (mm)"),
    "asd_mm": (False, "average surface distance to the ground truth (mm)"),
    "hausdorff_px": (False, "Hausdorff distance to the ground truth (px)"),
    "asd_px": (False, "average surface distance to the ground truth (px)"),
    "false_positive_mm2": (False, "area segmented but not in the ground truth (mm²)"),
    "false_negative_mm2": (False, "ground-truth area missed (mm²)"),
    "count_error_pct": (False, "object count error vs the true count (%)"),
}
for _k, _v in SEG_METRIC_INFO.items():
    METRIC_INFO.setdefault(_k, _v)


# ----------------------------------------------------------------------------- state
@dataclass
class SegRun:
    """The current segmentation on the full-resolution grid."""

    image: Image  # full-size working plane
    run_image: Image  # what the method ran on (preview copy or the image)
    factor: int
    steps: list[tuple[str, dict[str, Any]]]  # as run (seeds scaled to the run image)
    full_steps: list[tuple[str, dict[str, Any]]]  # the same at full resolution (exports, dataset runs)
    result: Result
    mask: np.ndarray | None = None  # full grid
    labels: np.ndarray | None = None  # full grid
    response: Image | None = None  # edge response image (full grid), if any
    truth: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def _remember(name: str, key: Any, fn: Any, size: int = 8) -> Any:
    """Per-session LRU (see ``ui.state.memo``)."""
    return state.memo(f"{T}.{name}", key, fn, size)


def _enlarge(a: np.ndarray | None, f: int, shape: tuple[int, int]) -> np.ndarray | None:
    """Nearest-neighbour enlargement of a preview-grid array back to the full grid."""
    if a is None or f <= 1:
        return a
    big = np.repeat(np.repeat(np.asarray(a), f, axis=0), f, axis=1)[: shape[0], : shape[1]]
    if big.shape != tuple(shape):
        big = np.pad(big, ((0, shape[0] - big.shape[0]), (0, shape[1] - big.shape[1])), mode="edge")
    return big


def _seed_params(op: Operation) -> bool:
    names = {p.name for p in op.params}
    return {"row", "col"} <= names


def _scaled(op: Operation, params: dict[str, Any], f: int) -> dict[str, Any]:
    if f <= 1 or not _seed_params(op):
        return params
    out = dict(params)
    for k in ("row", "col"):
        if int(out[k]) >= 0:
            out[k] = int(out[k]) // f
    return out


# ----------------------------------------------------------------------------- controls
def _post_defaults() -> dict[str, Any]:
    return {"closing": 0.0, "opening": 0.0, "fill_holes": False, "min_area": 0.0, "keep_largest": False}


def _apply_preset(name: str) -> None:
    """Callback: put a preset chain into the method and post-processing widgets."""
    preset = seg.PRESETS[name]
    steps = preset["steps"]
    first_key, first_params = steps[0]
    method = first_key.split(".", 1)[1]
    fam = next(f for f, ms in FAMILIES.items() if method in ms)
    st.session_state[f"{T}.family"] = fam
    st.session_state[f"{T}.op.{fam}"] = first_key
    op = registry.get(first_key)
    for p in op.params:
        st.session_state[widget_key(first_key, p.name, T)] = first_params.get(p.name, p.default)
    post = _post_defaults()
    for key, params in steps[1:]:
        name_ = key.split(".", 1)[1]
        if name_ in ("closing", "opening"):
            post[name_] = float(params.get("radius", 1.0))
        elif name_ == "remove_small":
            post["min_area"] = float(params.get("min_area", 10.0))
        elif name_ in ("fill_holes", "keep_largest"):
            post[name_] = True
    for k, v in post.items():
        st.session_state[f"{T}.post.{k}"] = v


def post_steps(post: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The post-processing chain in its fixed order: closing → opening → fill holes →
    remove small → keep largest (each only when switched on)."""
    steps: list[tuple[str, dict[str, Any]]] = []
    if post.get("closing", 0) > 0:
        steps.append(("segmentation.closing", {"radius": float(post["closing"])}))
    if post.get("opening", 0) > 0:
        steps.append(("segmentation.opening", {"radius": float(post["opening"])}))
    if post.get("fill_holes"):
        steps.append(("segmentation.fill_holes", {}))
    if post.get("min_area", 0) > 0:
        steps.append(("segmentation.remove_small", {"min_area": float(post["min_area"])}))
    if post.get("keep_largest"):
        steps.append(("segmentation.keep_largest", {}))
    return steps


def _post_panel(enabled: bool, unit: str) -> dict[str, Any]:
    out = _post_defaults()
    with st.expander("Post-processing (chain)", expanded=True):
        if not enabled:
            st.caption("This method outputs a filter response, not a mask: post-processing applies to masks and labels.")
            return out
        st.caption(f"Applied in this order; lengths in {unit}. Closing → opening → fill holes → remove small → keep largest.")
        for k, v in _post_defaults().items():
            st.session_state.setdefault(f"{T}.post.{k}", v)
        c1, c2 = st.columns(2)
        out["closing"] = c1.number_input(f"closing radius ({unit})", 0.0, 50.0, step=0.5, key=f"{T}.post.closing",
                                         help="0 = off. Bridges gaps narrower than about twice the radius.")
        out["opening"] = c2.number_input(f"opening radius ({unit})", 0.0, 50.0, step=0.5, key=f"{T}.post.opening",
                                         help="0 = off. Removes parts thinner than about twice the radius.")
        out["min_area"] = st.number_input(f"remove objects smaller than ({unit}²)", 0.0, 1e6, step=1.0, key=f"{T}.post.min_area",
                                          help="0 = off.")
        c3, c4 = st.columns(2)
        out["fill_holes"] = c3.checkbox("fill holes", key=f"{T}.post.fill_holes")
        out["keep_largest"] = c4.checkbox("keep largest", key=f"{T}.post.keep_largest")
    return out


def _method_panel(image: Image) -> tuple[Operation, dict[str, Any], bool]:
    names = list(seg.PRESETS)
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    preset = c1.selectbox("Preset", names, key=f"{T}.preset", help="Tested chains; see their accuracy in the README.")
    c2.button("Load", key=f"{T}.preset.load", on_click=_apply_preset, args=(preset,), width="stretch")
    st.caption(_md(seg.PRESETS[preset]["description"]))
    fam = st.radio("Family", list(FAMILIES), key=f"{T}.family", horizontal=True)
    keys = [f"segmentation.{m}" for m in FAMILIES[fam]]
    titles = {k: registry.get(k).title.split("— ", 1)[-1] for k in keys}
    op_key = st.selectbox("Method", keys, format_func=titles.get, key=f"{T}.op.{fam}")
    op = registry.get(op_key)
    st.caption(f"Intensity domain: {_md(op.domain)}")
    if _seed_params(op):
        st.caption("Seed: click the image (or type row / column; −1 = centre).")
    heavy = op.slow or image.grey().size > 1_500_000
    if heavy:
        with st.form(f"{T}.form.{op_key}"):
            params = param_form(op, prefix=T)
            st.form_submit_button("Apply", type="primary")
    else:
        params = param_form(op, prefix=T)
    preview = False
    if heavy and max(image.shape2d) > PREVIEW_SIDE:
        preview = st.toggle(f"Fast preview (≤ {PREVIEW_SIDE} px)", value=True, key=f"{T}.preview.{op_key}",
                            help="Slow methods run on a downsampled copy; switch off to compute at full size.")
    return op, params, preview


def _truth_panel(entry: dict[str, Any], image: Image) -> np.ndarray | None:
    """Ground truth: the entry's ``mask_path`` or a mask the user uploads (same size)."""
    truth = None
    own = data.load_aux(entry, "mask_path") if str(entry.get("mask_path", "") or "") else None
    if own is not None and np.shape(own) == image.shape2d:
        truth = np.asarray(own) > 0
    with st.expander("Ground truth", expanded=False):
        if truth is not None:
            st.caption("This image has a reference mask in the dataset.")
        up = st.file_uploader("Upload a reference mask (PNG, TIFF, DICOM…, same size; > 0 = object)",
                              key=f"{T}.truth.upload")
        if up is not None:
            from analysis.io import LoadError, load_bytes

            store = st.session_state.setdefault(f"{T}.truth.store", {})
            k = (image.digest, content_digest(up.getvalue())[:16])
            if k not in store:
                try:
                    img = load_bytes(up.getvalue(), up.name)[0]
                    arr = img.grey() > 0
                    if arr.shape != image.shape2d:
                        raise ValueError(f"the mask is {arr.shape[0]}×{arr.shape[1]} px, the image {image.shape2d[0]}×{image.shape2d[1]}")
                    store[k] = arr
                except (LoadError, ValueError) as exc:
                    reason = exc.reason if isinstance(exc, LoadError) else str(exc)
                    st.error(f"**{safe_text(up.name)}** — {safe_text(reason, 300)}")
                    store[k] = None
            if store.get(k) is not None:
                truth = store[k]
                st.caption("Using the uploaded mask.")
    return truth


# ----------------------------------------------------------------------------- running
def run_segmentation(image: Image, op: Operation, params: dict[str, Any], post: dict[str, Any], preview: bool,
                     truth: np.ndarray | None) -> SegRun:
    """Run method + post chain (cached per step) and bring the outputs to the full grid."""
    run_img, f = preview_image(image) if preview else (image, 1)
    chain_ok = op.output != "edges" or op.key == "segmentation.canny"
    post_chain = post_steps(post) if chain_ok else []
    full_steps = [(op.key, dict(params))] + post_chain
    steps = [(op.key, _scaled(op, params, f))] + post_chain
    res = run_steps(run_img, steps)
    shape = image.shape2d
    mask = labels = None
    response = None
    if res.labels is not None:
        labels = _enlarge(np.asarray(res.labels), f, shape)
        mask = labels > 0
    elif res.mask is not None:
        mask = _enlarge(np.asarray(res.mask, bool), f, shape)
        labels = _remember("cc", content_digest(mask), lambda: ndi.label(mask)[0])
    if res.image is not None and res.units not in ("mask", "label", "class"):
        resp = _enlarge(np.asarray(res.image, np.float32), f, shape)
        response = image.with_pixels(resp, units=res.units or image.units, window=display.auto_window(resp, 0.5, 99.5),
                                     tag=f"response{op.key}")
    notes = list(res.notes)
    if f > 1:
        notes.append(f"Computed on a {run_img.shape2d[0]}×{run_img.shape2d[1]} px preview (factor {f}); "
                     "switch the preview off for full resolution.")
    return SegRun(image=image, run_image=run_img, factor=f, steps=steps, full_steps=full_steps, result=res, mask=mask,
                  labels=labels, response=response, truth=truth, notes=notes)


def region_table(run: SegRun) -> pd.DataFrame:
    if run.labels is None:
        return pd.DataFrame()
    key = (content_digest(run.labels), run.image.digest, str(run.image.spacing))
    return _remember("table", key, lambda: seg_metrics.region_table(run.labels, run.image.grey(), run.image.spacing))


def summary_metrics(run: SegRun) -> dict[str, float]:
    """Numbers under the image: area, objects, thresholds, and overlap with ground truth."""
    out: dict[str, float] = {}
    if run.mask is not None:
        sp = run.image.spacing
        area = float(run.mask.sum()) * (sp[0] * sp[1] if sp else 1.0)
        out["area_mm2" if sp else "area_px2"] = area
        out["objects"] = float(seg_metrics.count_objects(run.labels))
    for k, v in run.result.metrics.items():
        if k != "regions" and np.isscalar(v):
            out[k] = float(v)
    if run.truth is not None and run.mask is not None:
        key = (content_digest(run.mask), content_digest(run.truth), str(run.image.spacing))
        out.update(_remember("overlap", key, lambda: seg_metrics.overlap_metrics(run.mask, run.truth, run.image.spacing)))
    return out


def tile_metrics_for(truth: np.ndarray | None, factor: int):  # type: ignore[no-untyped-def]
    """Numbers under sweep / grid tiles: area (mm²), objects and — with ground truth — Dice."""

    def metrics(before: np.ndarray, result: Result, image: Image) -> dict[str, float]:
        out: dict[str, float] = {}
        fg = result.mask if result.mask is not None else (result.labels > 0 if result.labels is not None else None)
        if fg is None:
            return out
        sp = image.spacing
        out["area_mm2" if sp else "area_px2"] = float(np.count_nonzero(fg)) * (sp[0] * sp[1] if sp else 1.0)
        out["objects"] = float(seg_metrics.count_objects(result.labels if result.labels is not None else fg))
        if truth is not None:
            big = _enlarge(np.asarray(fg, bool), factor, truth.shape)
            out["dice"] = seg_metrics.dice(big, truth)
        return out

    return metrics


# ----------------------------------------------------------------------------- figures
def _stride(a: np.ndarray, f: int) -> np.ndarray:
    return a[f // 2 :: f, f // 2 :: f] if f > 1 else a


def _discrete(colours: dict[int, str] | tuple[str, ...]) -> list:
    cols = list(colours.values()) if isinstance(colours, dict) else list(colours)
    n = len(cols)
    scale = []
    for i, c in enumerate(cols):
        scale += [[i / n, c], [(i + 1) / n, c]]
    return scale


def overlay_traces(run: SegRun, mode: str, opacity: float, f: int, highlight: int | None) -> list[go.BaseTraceType]:
    """Overlay traces on the full grid, strided by ``f`` like the displayed image."""
    traces: list[go.BaseTraceType] = []
    pos = dict(dx=f, dy=f, x0=f // 2, y0=f // 2, showscale=False, hoverinfo="skip")
    if mode == "errors vs ground truth" and run.truth is not None and run.mask is not None:
        em = seg_metrics.error_map(run.mask, run.truth).astype(np.float32)
        z = np.where(em > 0, em - 1, np.nan)
        traces.append(go.Heatmap(z=_stride(z, f), colorscale=_discrete(ERROR_COLOURS), zmin=0, zmax=3, opacity=opacity,
                                 name="TP / FP / FN", **pos))
    elif run.labels is not None and mode == "labels":
        lab = run.labels
        z = np.where(lab > 0, (lab - 1) % len(PALETTE), np.nan).astype(np.float32)
        traces.append(go.Heatmap(z=_stride(z, f), colorscale=_discrete(PALETTE), zmin=0, zmax=len(PALETTE), opacity=opacity,
                                 name="labels", **pos))
    elif run.labels is not None and mode == "contours":
        from skimage.segmentation import find_boundaries

        b = find_boundaries(run.labels, mode="inner")
        if f > 1:
            b = ndi.maximum_filter(b, size=f)
        z = np.where(b, 1.0, np.nan)
        traces.append(go.Heatmap(z=_stride(z, f), colorscale=[[0, "#ffd60a"], [1, "#ffd60a"]], opacity=max(opacity, 0.8),
                                 name="contours", **pos))
    elif run.mask is not None and mode == "mask":
        z = np.where(run.mask, 1.0, np.nan)
        traces.append(go.Heatmap(z=_stride(z, f), colorscale=[[0, "#ff3b30"], [1, "#ff3b30"]], opacity=opacity,
                                 name="mask", **pos))
    if highlight is not None and run.labels is not None:
        sel = run.labels == highlight
        if sel.any():
            edge = sel ^ ndi.binary_erosion(sel, iterations=max(1, f))
            z = np.where(ndi.maximum_filter(edge, size=f) if f > 1 else edge, 1.0, np.nan)
            traces.append(go.Heatmap(z=_stride(z, f), colorscale=[[0, "#00e5ff"], [1, "#00e5ff"]], opacity=1.0,
                                     name=f"region {highlight}", **pos))
    return traces


def seg_figure(run: SegRun, window: tuple[float, float], *, mode: str, opacity: float, highlight: int | None,
               seed: tuple[int, int] | None, clickable: bool, show_response: bool, height: int = 560) -> go.Figure:
    base = run.response if (show_response and run.response is not None) else run.image
    win = base.window if base is run.response and base.window else window
    fig = image_figure(base, win, height=height, uirevision=f"seg{run.image.digest[:12]}")
    m, n = run.image.shape2d
    f = max(1, int(np.ceil(max(m, n) / 512)))
    if not (show_response and run.response is not None and run.mask is None):
        for tr in overlay_traces(run, mode, opacity, f, highlight):
            fig.add_trace(tr)
    if clickable:
        g = max(1, int(np.ceil(max(m, n) / CLICK_GRID)))
        rr, cc = np.mgrid[g // 2 : m : g, g // 2 : n : g]
        fig.add_trace(go.Scatter(x=cc.ravel(), y=rr.ravel(), mode="markers", name="click to seed",
                                 marker=dict(size=9, color="rgba(0,0,0,0)"), selected=dict(marker=dict(opacity=0)),
                                 unselected=dict(marker=dict(opacity=0)),
                                 hovertemplate="seed here: row %{y}, col %{x}<extra></extra>", showlegend=False))
    if seed is not None:
        fig.add_trace(go.Scatter(x=[seed[1]], y=[seed[0]], mode="markers", name="seed", hoverinfo="skip", showlegend=False,
                                 marker=dict(symbol="x", size=13, color="#00e5ff", line=dict(width=2, color="black"))))
    fig.update_layout(clickmode="event+select", dragmode="pan")
    return fig


def _on_seed_click(chart_key: str, op_key: str) -> None:
    """Callback of the image chart: a clicked grid point becomes the seed (full-grid px)."""
    ev = st.session_state.get(chart_key)
    try:
        pts = ev["selection"]["points"]
    except (KeyError, TypeError):
        return
    if not pts:
        return
    p = pts[-1]
    if "x" not in p or "y" not in p:
        return
    st.session_state[widget_key(op_key, "row", T)] = int(round(float(p["y"])))
    st.session_state[widget_key(op_key, "col", T)] = int(round(float(p["x"])))


def _md(s: str) -> str:
    """Our own (trusted) text for Markdown: only escape the characters that would format."""
    return "".join("\\" + ch if ch in "\\*_$`#[]<>|~" else ch for ch in str(s))


def _fmt(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "∞" if v > 0 else "–"
        return f"{v:.4g}"
    return str(v)


def _metrics_row(nums: dict[str, float]) -> None:
    items = list(nums.items())
    for start in range(0, len(items), 6):
        cols = st.columns(6)
        for col, (k, v) in zip(cols, items[start : start + 6]):
            col.metric(k, _fmt(v), help=METRIC_INFO.get(k, (True, None))[1])


# ----------------------------------------------------------------------------- tabs
def _display_table(table: pd.DataFrame, units: str) -> pd.DataFrame:
    ren = {
        "area_mm2": "area (mm²)", "area_px2": "area (px²)", "perimeter_mm": "perimeter (mm)", "perimeter_px": "perimeter (px)",
        "equivalent_diameter_mm": "equiv. diameter (mm)", "equivalent_diameter_px": "equiv. diameter (px)",
        "intensity_mean": f"mean ({units})", "intensity_min": f"min ({units})", "intensity_max": f"max ({units})",
        "centroid_row": "centroid row (px)", "centroid_col": "centroid col (px)",
    }
    return table.rename(columns=ren)


def regions_tab(run: SegRun) -> None:
    table = region_table(run)
    if table.empty:
        st.info("No regions: the current result has no mask or labels (or they are empty).")
        return
    unit = "mm" if run.image.spacing else "px"
    area_col = "area_mm2" if unit == "mm" else "area_px2"
    st.caption(f"{len(table)} regions · areas and lengths in {unit}{'²' if unit == 'mm' else ''} from the pixel spacing · "
               f"intensities in {safe_text(run.image.units)} · select a row to highlight the region on the image.")
    if table.attrs.get("note"):
        st.caption(safe_text(table.attrs["note"], 300))
    c1, c2 = st.columns([3, 2])
    with c1:
        st.dataframe(_display_table(table, run.image.units), hide_index=True, width="stretch", on_select="rerun",
                     selection_mode="single-row", key=f"{T}.regions.table", height=360,
                     column_config={c: st.column_config.NumberColumn(format="%.4g") for c in _display_table(table, run.image.units).columns
                                    if c != "label"})
    with c2:
        areas = table[area_col].to_numpy(float)
        counts, edges = np.histogram(areas, bins=min(40, max(5, len(areas) // 3)))
        centers = (edges[:-1] + edges[1:]) / 2
        fig = go.Figure(go.Bar(x=centers, y=counts, width=np.diff(edges), marker_color="#4c78a8",
                               hovertemplate=f"%{{x:.4g}} {unit}²: %{{y}} regions<extra></extra>"))
        fig.update_layout(height=340, margin=dict(l=0, r=0, t=30, b=0), bargap=0.02,
                          title=dict(text=f"Region areas ({unit}²)", font=dict(size=13)), xaxis_title=f"area ({unit}²)",
                          yaxis_title="regions")
        st.plotly_chart(fig, width="stretch", key=f"{T}.regions.hist")
    st.download_button("Region table (CSV)", seg_export.table_csv(table), file_name="medlens_regions.csv", mime="text/csv",
                       key=f"{T}.regions.csv", on_click="ignore")


def selected_label(run: SegRun) -> int | None:
    """The label of the row selected in the region table (from the previous interaction)."""
    ev = st.session_state.get(f"{T}.regions.table")
    try:
        rows = ev["selection"]["rows"]
    except (KeyError, TypeError):
        return None
    if not rows:
        return None
    table = region_table(run)
    r = int(rows[0])
    if r >= len(table):
        return None
    return int(table["label"].iloc[r])


def truth_tab(run: SegRun, nums: dict[str, float], window: tuple[float, float]) -> None:
    if run.truth is None:
        st.info("No ground truth for this image. Sample-dataset lesion slices carry one; or upload a mask under "
                "*Ground truth* on the left.")
        return
    if run.mask is None:
        st.info("The current method gives a filter response, not a mask: choose a threshold, region method or Canny.")
        return
    unit = "mm" if run.image.spacing else "px"
    keys = ["dice", "iou", f"hausdorff_{unit}", f"asd_{unit}"]
    _metrics_row({k: nums[k] for k in keys if k in nums})
    st.caption("Overlay: green = true positive, red = false positive, blue = false negative. Hausdorff and average "
               f"surface distance use the pixel spacing ({unit}).")
    fig = seg_figure(run, window, mode="errors vs ground truth", opacity=0.6, highlight=None, seed=None, clickable=False,
                     show_response=False, height=460)
    st.plotly_chart(fig, width="stretch", key=f"{T}.truth.fig", config={"scrollZoom": True, "displaylogo": False})


def _tile_rgb(image: Image, mask: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    disp = display.to_display(image, window)
    rgb = np.stack([disp] * 3, -1).astype(np.float32) if disp.ndim == 2 else disp.astype(np.float32)
    rgb[mask] = 0.55 * rgb[mask] + 0.45 * np.array([255, 59, 48], np.float32)
    edge = mask ^ ndi.binary_erosion(mask)
    rgb[edge] = (255, 214, 10)
    return display.downsample(np.clip(rgb, 0, 255).astype(np.uint8), 256)


def threshold_grid(image: Image, post: dict[str, Any], polarity: str, truth: np.ndarray | None,
                   window: tuple[float, float]) -> None:
    """Every automatic global threshold on the same image (plus the current post-processing)."""
    chain = post_steps(post)
    st.caption("Each automatic threshold (polarity **" + safe_text(polarity) + "**)"
               + (f" followed by the current post-processing ({len(chain)} steps)" if chain else "")
               + ". Area in mm² from the pixel spacing; Dice against the ground truth when there is one.")
    sp = image.spacing
    cols = st.columns(4)
    rows = []
    for i, m in enumerate(GRID_METHODS):
        key = f"segmentation.{m}"
        with cols[i % 4]:
            title = seg.THRESHOLD_METHODS[m][0]
            try:
                res = run_steps(image, [(key, {"polarity": polarity})] + chain)
            except ValueError as exc:
                st.error(f"{title}: {safe_text(str(exc), 300)}")
                rows.append({"method": title, "error": str(exc)})
                continue
            mask = np.asarray(res.mask if res.mask is not None else res.labels > 0, bool)
            t = run_steps(image, [(key, {"polarity": polarity})]).metrics.get("threshold", np.nan)
            area = float(mask.sum()) * (sp[0] * sp[1] if sp else 1.0)
            row = {"method": title, "threshold": t, "area_mm2" if sp else "area_px2": area}
            if truth is not None:
                row["dice"] = seg_metrics.dice(mask, truth)
            rows.append(row)
            st.image(_tile_rgb(image, mask, window), width="stretch")
            st.caption(f"**{title}** · t = {_fmt(t)} {safe_text(image.units)}  \narea {_fmt(area)} {'mm²' if sp else 'px²'}"
                       + (f" · Dice {row['dice']:.3f}" if "dice" in row else ""))
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def export_tab(run: SegRun, op: Operation) -> None:
    """Full-resolution mask PNG, DICOM SEG (+ its de-identified source), region CSV."""
    image = run.image

    def full_result() -> Result:
        return registry.run_chain(run.full_steps, image.grey(), spacing=image.spacing, units=image.units)

    def full_mask() -> np.ndarray:
        res = full_result()
        if res.labels is not None:
            return np.asarray(res.labels)
        if res.mask is None:
            raise ValueError("this result has no mask to export")
        return np.asarray(res.mask, bool)

    def png() -> bytes:
        return seg_export.mask_png(full_mask())

    def seg_zip() -> bytes:
        m = full_mask() > 0
        return seg_export.dicom_seg_zip(m, image, method=op.key, label=op.title.split("— ", 1)[-1])

    if run.mask is None:
        st.info("The current method gives a filter response, not a mask: nothing to export here.")
        return
    st.caption("Exports compute the current chain at full resolution. File names are generic. The DICOM SEG references a "
               "de-identified source image rebuilt from the pixels (no patient, study or institution identifiers; new UIDs); "
               "both are in the ZIP.")
    ok = burned_in_gate(image, key=f"{T}.exp")
    removal_preview(key=f"{T}.exp")
    a, b, c = st.columns(3)
    a.download_button("Mask — PNG", png, file_name="medlens_mask.png", mime="image/png", key=f"{T}.exp.png", on_click="ignore",
                      help="Binary masks as 8-bit 0/255; label images as 16-bit labels.")
    b.download_button("DICOM SEG + source (ZIP)", seg_zip, file_name="medlens_seg.zip", mime="application/zip",
                      key=f"{T}.exp.seg", on_click="ignore", disabled=not ok)
    table = region_table(run)
    c.download_button("Region table — CSV", seg_export.table_csv(table), file_name="medlens_regions.csv", mime="text/csv",
                      key=f"{T}.exp.csv", on_click="ignore", disabled=table.empty)


# ----------------------------------------------------------------------------- page
def page() -> None:
    header("Segmentation", "Thresholds, edges and region methods with post-processing; regions measured in mm, "
                           "accuracy against ground truth, dataset-wide runs and DICOM SEG export.")
    got = data.working_image()
    if got is None:
        return
    entry, image = got
    if image.is_rgb:
        st.caption("Colour image: methods run on its luminance (ITU-R BT.601).")
        image = image.with_pixels(image.grey(), units=image.units, window=None, tag="luma")
    window = display.default_window(image)
    unit = "mm" if image.spacing else "px"
    left, right = st.columns([1, 3])
    with left:
        op, params, preview = _method_panel(image)
        chain_ok = op.output != "edges" or op.key == "segmentation.canny"
        post = _post_panel(chain_ok, unit)
        truth = _truth_panel(entry, image)
    with right:
        st.caption(f"{safe_text(entry['name'])} · {image.shape2d[0]}×{image.shape2d[1]} px · {safe_text(image.units)}"
                   + (f" · {image.spacing[0]:.4g} × {image.spacing[1]:.4g} mm px" if image.spacing else " · spacing unknown (px)"))
        try:
            run = run_segmentation(image, op, params, post, preview, truth)
        except Exception as exc:  # noqa: BLE001 - shown, the page stays usable
            st.error(safe_text(str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}", 400))
            return
        v1, v2, v3 = st.columns([2, 2, 1])
        modes = ["mask", "contours", "labels"] + (["errors vs ground truth"] if run.truth is not None else [])
        mode = v1.radio("Overlay", modes, key=f"{T}.mode", horizontal=True)
        opacity = v2.slider("Opacity", 0.0, 1.0, 0.45, 0.05, key=f"{T}.opacity")
        show_resp = v3.toggle("Response", value=run.mask is None, key=f"{T}.response", disabled=run.response is None,
                              help="Show the filter response (edge magnitude, LoG/DoG) instead of the image.")
        seed = None
        if _seed_params(op):
            seed = seg.resolve_seed(int(params["row"]), int(params["col"]), image.shape2d) \
                if int(params["row"]) < image.shape2d[0] and int(params["col"]) < image.shape2d[1] else None
        chart_key = f"{T}.image.{op.key}"
        fig = seg_figure(run, window, mode=mode, opacity=opacity, highlight=selected_label(run), seed=seed,
                         clickable=_seed_params(op), show_response=show_resp)
        kw: dict[str, Any] = {}
        if _seed_params(op):
            kw = dict(on_select=lambda: _on_seed_click(chart_key, op.key), selection_mode=("points",))
        st.plotly_chart(fig, width="stretch", key=chart_key, config={"scrollZoom": True, "displaylogo": False}, **kw)
        nums = summary_metrics(run)
        _metrics_row(nums)
        for note in run.notes:
            st.caption(safe_text(note, 400))
    tabs = st.tabs(["Regions", "Ground truth", "Try every threshold", "Sweep grid", "Dataset-wide", "Export"])
    with tabs[0]:
        regions_tab(run)
    with tabs[1]:
        truth_tab(run, nums, window)
    with tabs[2]:
        polarity = params.get("polarity", "bright") if "polarity" in params else "bright"
        if st.toggle("Run the threshold grid", value=False, key=f"{T}.grid.on",
                     help="Seven automatic thresholds on this image (a few ms each at 512²)."):
            threshold_grid(image, post, polarity, truth, window)
    with tabs[3]:
        rc = RunContext(image=run.run_image, full=image, window=window, factor=run.factor)
        st.caption(f"Sweeps **{safe_text(op.title)}** (method only, without post-processing). Tiles show the mask as an image.")
        sweep_grid(run.run_image, op, _scaled(op, params, run.factor), tile_metrics_for(truth, run.factor), key=f"{T}.sweep",
                   window=window, run=rc, apply_prefix=T)
    with tabs[4]:
        st.caption("Dice / IoU / Hausdorff / ASD where the dataset has ground-truth masks; objects and total area "
                   "everywhere. Group by label to compare classes; click a worst case to open it.")
        dataset_wide(run.full_steps, seg_metrics.dataset_measure, key=f"{T}.ds", group_cols=("label", "modality", "role", "subject"),
                     default_metric="dice")
    with tabs[5]:
        export_tab(run, op)


__all__ = ["page", "post_steps", "run_segmentation", "summary_metrics", "region_table", "seg_figure", "SegRun",
           "SEG_METRIC_INFO"]
