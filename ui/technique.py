"""The generic technique page: operation + parameters from the registry, linked before/after
views, metrics, A/B comparison, sweep grid, pipelines, dataset-wide run and exports.
Enhancement, Segmentation, Fusion, Registration and Recognition pages are built from
:func:`technique_page` (plus their own extra views via ``result_view``).

Stable API used by the pages (keep backward compatible):

* ``TechniqueSpec(technique, title, intro, measure=None, tile_metrics=None, result_view=None, …)``
* ``technique_page(spec)``
* ``run_cached(image, op_key, params, **context) -> Result`` (per-session LRU)
* ``run_steps(image, steps, **context) -> Result`` (a pipeline, every prefix cached)
* ``sweep_grid(image, op, base_params, tile_metrics, key, window, context=None)``
* ``dataset_wide(steps, measure, key, group_cols)``

Everything that is not Streamlit glue lives in ``analysis`` (registry, pipeline, metrics,
export); :func:`compute` is the uncached code path, used by ``bench/``.

Responsiveness: operations marked ``slow`` (or any operation on an image above
:data:`LARGE_PIXELS`) get their parameters inside a form (nothing runs until *Apply*) and
run on a preview-sized copy (≤ :data:`PREVIEW_SIDE` px) until the user switches the
preview off; exports always compute at full size.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from analysis import display, export, registry
from analysis.batch import PipelineTask
from analysis.image import Image, content_digest
from analysis.metrics import METRIC_INFO, basic_measure, default_boxes, entropy
from analysis.pipeline import Pipeline, decode_state, encode_state
from analysis.registry import Operation, Result
from ui import compare, data, picker
from ui.privacy import burned_in_gate, removal_preview
from ui.common import header, plain_name, safe_text
from ui.viewer import image_figure
from ui.widgets import param_form, widget_key

TileMetrics = Callable[..., dict]

PREVIEW_SIDE = 384
LARGE_PIXELS = 1_500_000
URL_KEYS = ("op", "params", "pipeline", "show")
TILE_SIDE = 256


@dataclass
class TechniqueSpec:
    technique: str
    title: str
    intro: str = ""
    measure: Callable[..., dict] | None = None  # module-level (picklable) for dataset-wide runs
    tile_metrics: TileMetrics | None = None  # numbers under every result/tile; may accept clean=, roi=, background=
    result_view: Callable[[dict[str, Any]], None] | None = None  # extra views for the current result
    group_cols: tuple[str, ...] = ("label", "modality", "role")
    cnr_boxes: bool = False  # offer ROI/background boxes (passed to tile_metrics as roi=, background=)
    exports: bool = True
    extra_tabs: dict[str, Callable[[dict[str, Any]], None]] = field(default_factory=dict)


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


def call_metrics(fn: TileMetrics, before: np.ndarray, result: Result, image: Image, **extra: Any) -> dict[str, float]:
    """Call a tile-metrics function with the extra keywords it accepts (clean, roi, background)."""
    params = inspect.signature(fn).parameters
    accepts_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kw = {k: v for k, v in extra.items() if v is not None and (accepts_all or k in params)}
    return fn(before, result, image, **kw)


# ----------------------------------------------------------------------------- running
_RESULTS = "medlens.results_lru"
_LRU_MAX = 48


def _context_key(context: dict[str, Any]) -> str:
    sig = {}
    for k, v in context.items():
        if isinstance(v, Image):
            sig[k] = v.digest
        elif isinstance(v, np.ndarray):
            sig[k] = content_digest(v)[:16]
        elif isinstance(v, tuple):
            sig[k] = list(v)
        else:
            sig[k] = v
    return json.dumps(sig, sort_keys=True, default=str)


def compute(image: Image, op_key: str, params: dict[str, Any], **context: Any) -> Result:
    """The page's uncached code path: context Images → arrays, spacing/units from the image,
    then :func:`analysis.registry.run` on the 2-D float plane."""
    ctx = {k: (v.grey() if isinstance(v, Image) else v) for k, v in context.items()}
    ctx.setdefault("spacing", image.spacing)
    ctx.setdefault("units", image.units)
    return registry.run(op_key, image.grey(), params, **ctx)


def run_cached(image: Image, op_key: str, params: dict[str, Any], **context: Any) -> Result:
    """Run an operation on a 2-D image, cached per session on (image digest, key, params,
    context). Per-session so no user ever receives a result computed from another user's upload."""
    key = (image.digest, op_key, json.dumps(params, sort_keys=True, default=str), _context_key(context))
    lru: OrderedDict = st.session_state.setdefault(_RESULTS, OrderedDict())
    if key in lru:
        lru.move_to_end(key)
        return lru[key]
    res = compute(image, op_key, params, **context)
    lru[key] = res
    while len(lru) > _LRU_MAX:
        lru.popitem(last=False)
    return res


def run_steps(image: Image, steps: Sequence[tuple[str, dict[str, Any]]], **context: Any) -> Result:
    """Apply a pipeline; each prefix is cached, so editing step k recomputes only k and later."""
    if not steps:
        return Result(image=image.grey())
    cur = image
    res = Result(image=image.grey())
    for i, (key, params) in enumerate(steps):
        res = run_cached(cur, key, params, **context)
        if i < len(steps) - 1:
            if res.image is None:
                raise ValueError(f"step {i + 1} ({key}) produces a {registry.get(key).output}, so it must be the last step")
            cur = cur.with_pixels(res.image, units=res.units or cur.units,
                                  tag=f"{key}|{json.dumps(params, sort_keys=True, default=str)}")
    if res.image is not None and res.units is None and cur.units != image.units:
        res = dataclasses.replace(res, units=cur.units)  # e.g. "HU (remapped)" carried through later steps
    return res


def preview_image(image: Image, max_side: int = PREVIEW_SIDE) -> tuple[Image, int]:
    """A block-mean downsampled copy (spacing scaled) and the factor used (1 = unchanged)."""
    m, n = image.shape2d
    f = int(np.ceil(max(m, n) / max_side))
    if f <= 1 or image.is_rgb:
        return image, 1
    small = display.downsample(image.grey(), max_side)
    img = dataclasses.replace(image.with_pixels(small, tag=f"preview{max_side}"),
                              spacing=(image.spacing[0] * f, image.spacing[1] * f) if image.spacing else None)
    return img, f


def _shrink(a: np.ndarray | None, f: int, max_side: int = PREVIEW_SIDE) -> np.ndarray | None:
    if a is None or f <= 1:
        return a
    return display.downsample(np.asarray(a, dtype=np.float32), max_side)


def _scale_box(box: Sequence[int] | None, f: int) -> tuple[int, ...] | None:
    if box is None or f <= 1:
        return tuple(box) if box is not None else None
    return tuple(int(v) // f for v in box)


def result_to_display(result: Result, image: Image, window: tuple[float, float]) -> tuple[Image, np.ndarray | None]:
    """What to show for a result: (image to draw, optional overlay). Segmentation outputs
    (units mask / label / class) are drawn as an overlay on the input, not as a 0/1 image."""
    if result.units in ("mask", "label", "class"):
        if result.labels is not None and result.units != "mask":
            return image, np.asarray(result.labels)
        if result.mask is not None:
            return image, np.asarray(result.mask, bool)
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


def _md(s: str) -> str:
    """Our own (trusted) text for Markdown: only escape characters that would format."""
    return "".join("\\" + ch if ch in "\\*_$`#[]<>|~" else ch for ch in str(s))


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, (float, np.floating)):
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if math.isnan(v):
            return "–"
        return f"{v:.{digits}g}"
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


def _tile_png(res: Result, image: Image, window: tuple[float, float]) -> np.ndarray:
    shown, overlay = result_to_display(res, image, window)
    disp = display.to_display(shown, output_window(res, image, window))
    if overlay is not None:
        disp = _overlay_rgb(disp, overlay)
    return display.downsample(disp, TILE_SIDE)


# ----------------------------------------------------------------------------- shared bits
@dataclass
class RunContext:
    """Everything a view needs to (re)run and measure operations on the working image."""

    image: Image  # the image operations run on (a preview copy when previewing)
    full: Image  # the full-size working image
    window: tuple[float, float]
    factor: int = 1  # preview downsampling factor
    context: dict[str, Any] = field(default_factory=dict)  # registry context (reference, …)
    clean: np.ndarray | None = None  # clean reference at the run image's size
    roi: tuple[int, ...] | None = None
    background: tuple[int, ...] | None = None
    _clean_sig: str | None = None

    def metrics(self, fn: TileMetrics, result: Result) -> dict[str, float]:
        """Metrics of a result, memoised on the (cached) Result object itself."""
        if self._clean_sig is None:
            self._clean_sig = content_digest(self.clean)[:16] if self.clean is not None else "-"
        sig = (f"{fn.__module__}.{fn.__qualname__}", self.image.digest, self._clean_sig, self.roi, self.background)
        memo = result.extras.setdefault("_tile_metrics", {})
        if sig not in memo:
            memo[sig] = call_metrics(fn, self.image.grey(), result, self.image, clean=self.clean, roi=self.roi,
                                     background=self.background)
        return dict(memo[sig])


def _set_params(prefix: str, op_key: str, params: dict[str, Any]) -> None:
    """Callback: put parameter values into an operation's widgets."""
    for name, v in params.items():
        st.session_state[widget_key(op_key, name, prefix)] = v


# ----------------------------------------------------------------------------- sweep grid
def sweep_grid(image: Image, op: Operation, base: dict[str, Any], tile_metrics: TileMetrics, key: str,
               window: tuple[float, float], context: dict[str, Any] | None = None, *, run: RunContext | None = None,
               apply_prefix: str | None = None) -> pd.DataFrame | None:
    """One- or two-parameter grid of result tiles with numbers under each, a metric-versus-
    parameter chart (heatmap for 2-D) and the best tile marked. A failing tile shows its
    error; the rest render. ``apply_prefix``: widget prefix whose parameters a tile's
    "Use" button sets."""
    sweepable = [p for p in op.params if p.kind in ("int", "float", "choice", "bool")]
    if not sweepable:
        st.info("This operation has no parameter to sweep.")
        return None
    run = run or RunContext(image=image, full=image, window=window, context=dict(context or {}))
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
        fmt = "%d" if p.kind == "int" else "%.4g"
        cast = int if p.kind == "int" else float
        lo = a.number_input(f"{p.name} from", value=cast(lo_default), key=f"{k}.{p.name}.lo", format=fmt)
        hi = b.number_input(f"{p.name} to", value=cast(hi_default), key=f"{k}.{p.name}.hi", format=fmt)
        n = c.number_input("steps", 2, 12, 5 if p2 is None else 3, key=f"{k}.{p.name}.n")
        try:
            return p.sweep_values(lo, hi, int(n))
        except ValueError as exc:
            col.error(safe_text(str(exc)))
            return []

    v1 = _range(p1, c1, f"{key}.r1")
    v2 = _range(p2, c2, f"{key}.r2") if p2 is not None else [None]
    combos = list(itertools.product(v1, v2))
    if not combos:
        return None
    if len(combos) > 36:
        st.warning(f"{len(combos)} tiles is too many; showing the first 36.")
        combos = combos[:36]
    if op.slow and not st.session_state.get(f"{key}.armed") == (op.key, json.dumps(combos, default=str)):
        st.caption(f"{op.title} is slow (> 0.3 s per run at full size): press the button to run the grid"
                   + (f" on the {run.image.shape2d[1]}×{run.image.shape2d[0]} px preview." if run.factor > 1 else "."))
        if st.button(f"Run sweep ({len(combos)} runs)", key=f"{key}.go", type="primary"):
            st.session_state[f"{key}.armed"] = (op.key, json.dumps(combos, default=str))
            st.rerun()
        return None
    rows, tiles = [], []
    bar = st.progress(0.0, text="Sweeping…") if len(combos) > 4 else None
    for i, (a, b) in enumerate(combos):
        params = dict(base)
        params[p1.name] = a
        if p2 is not None:
            params[p2.name] = b
        row: dict[str, Any] = {p1.name: a}
        if p2 is not None:
            row[p2.name] = b
        try:
            res = run_cached(run.image, op.key, params, **run.context)
            row.update(run.metrics(tile_metrics, res))
            tiles.append((params, res, None))
            row["error"] = ""
        except Exception as exc:  # noqa: BLE001 - a failing tile shows its error, the rest render
            tiles.append((params, None, f"{type(exc).__name__}: {exc}"))
            row["error"] = str(exc)
        rows.append(row)
        if bar:
            bar.progress((i + 1) / len(combos), text=f"Sweeping… {i + 1}/{len(combos)}")
    if bar:
        bar.empty()
    table = pd.DataFrame(rows)
    pnames = [p1.name] + ([p2.name] if p2 is not None else [])
    metric_cols = [c for c in table.columns if c not in pnames + ["error"] and pd.api.types.is_numeric_dtype(table[c])]
    best_idx, metric = None, None
    if metric_cols:
        m1, m2 = st.columns([2, 1])
        preferred = [m for m in ("psnr_clean", "ssim_clean", "cnr") if m in metric_cols]
        ordered = preferred[:1] + [m for m in metric_cols if m not in preferred[:1]]
        metric = m1.selectbox("Metric to rank tiles", ordered, key=f"{key}.metric",
                              help="; ".join(f"{k}: {v[1]}" for k, v in METRIC_INFO.items() if k in metric_cols) or None)
        higher_default = METRIC_INFO.get(metric, (True, ""))[0]
        higher = m2.toggle("higher is better", value=higher_default, key=f"{key}.higher.{metric}")
        valid = table[metric].replace([np.inf, -np.inf], np.nan).dropna()
        if len(valid):
            best_idx = int(valid.idxmax() if higher else valid.idxmin())
    ncol = len(v2) if p2 is not None else min(len(combos), 6)
    cols = st.columns(ncol)
    for i, (params, res, err) in enumerate(tiles):
        with cols[i % ncol]:
            label = ", ".join(f"{n}={_fmt(params[n])}" for n in pnames)
            if err:
                st.error(f"{safe_text(label)}: {safe_text(err, 300)}")
                continue
            with st.container(border=(i == best_idx)):
                st.image(_tile_png(res, run.image, window), width="stretch")
                star = "★ best · " if i == best_idx else ""
                nums = " · ".join(f"{k} {_fmt(v)}" for k, v in rows[i].items() if k not in pnames + ["error"])
                st.caption(f"{star}{safe_text(label)}  \n{nums}")
                if apply_prefix is not None:
                    st.button("Use these settings", key=f"{key}.use.{i}", on_click=_set_params,
                              args=(apply_prefix, op.key, {n: params[n] for n in pnames}))
    if metric is not None and len(table) > 1:
        chart = table.replace([np.inf, -np.inf], np.nan)
        if p2 is not None and p1.kind in ("int", "float") and p2.kind in ("int", "float"):
            piv = chart.pivot_table(index=p2.name, columns=p1.name, values=metric)
            fig = go.Figure(go.Heatmap(z=piv.values, x=[_fmt(v) for v in piv.columns], y=[_fmt(v) for v in piv.index],
                                       colorscale="Viridis", colorbar=dict(title=metric),
                                       hovertemplate=f"{p1.name} %{{x}}<br>{p2.name} %{{y}}<br>{metric} %{{z:.4g}}<extra></extra>"))
            if best_idx is not None:
                fig.add_trace(go.Scatter(x=[_fmt(table[p1.name].iloc[best_idx])], y=[_fmt(table[p2.name].iloc[best_idx])],
                                         mode="markers", marker=dict(size=18, symbol="star", color="#f58518"), name="best"))
            fig.update_layout(xaxis_title=p1.name, yaxis_title=p2.name)
        else:
            fig = px.line(chart, x=p1.name, y=metric, color=(chart[p2.name].astype(str) if p2 is not None else None), markers=True)
            if best_idx is not None:
                fig.add_trace(go.Scatter(x=[table[p1.name].iloc[best_idx]], y=[chart[metric].iloc[best_idx]], mode="markers",
                                         marker=dict(size=16, symbol="star", color="#f58518"), name="best"))
            if p1.log and p1.kind == "float" and (table[p1.name] > 0).all():
                fig.update_xaxes(type="log")
        fig.update_layout(height=300, margin=dict(l=0, r=0, t=10, b=0))
        st.plotly_chart(fig, width="stretch", key=f"{key}.chart")
    st.dataframe(table, hide_index=True, width="stretch")
    return table


# ----------------------------------------------------------------------------- dataset-wide
def _paired_metrics(df: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(base names having both ``_before`` and ``_after`` columns, other numeric columns)."""
    num = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and df[c].notna().any() and c != "slice_index"]
    pairs = sorted({c[: -len("_before")] for c in num if c.endswith("_before") and f"{c[:-len('_before')]}_after" in num})
    singles = [c for c in num if not any(c in (f"{p}_before", f"{p}_after") for p in pairs)]
    return pairs, singles


def dataset_wide(steps: list[tuple[str, dict]], measure: Callable[..., dict] | None, key: str,
                 group_cols: tuple[str, ...] = ("label", "modality", "role"),
                 default_metric: str | None = None, reference: dict[str, Any] | None = None) -> pd.DataFrame | None:
    """Run ``steps`` over the working dataset (batch map, progress, cached), chart every
    metric before vs after (box or violin) grouped by a chosen column, list errors and the
    images where the pipeline did worst / best (click to make them the working image).
    ``reference``: the dataset entry every image is matched to (operations taking a reference)."""
    dataset = data.working_dataset()
    if dataset is None or not len(dataset):
        st.info("No working dataset.")
        return None
    needs_ref = any("reference" in registry.get(k).context for k, _ in steps)
    if needs_ref and reference is None:
        st.info("This pipeline needs a reference image: choose one in the panel on the left first.")
        return None
    reference = reference if needs_ref else None
    measure = measure or basic_measure
    task = PipelineTask.make(steps, measure, reference=reference)
    ref_key = [str(reference.get("id")), data.entry_digest(reference)] if reference else None
    task_key = json.dumps([steps, f"{measure.__module__}.{measure.__qualname__}", ref_key], sort_keys=True, default=str)
    run_key = f"{key}.ran"
    desc = Pipeline.of(steps).describe() if steps else "(no steps)"
    if reference is not None:
        desc += f", every image matched to reference {plain_name(str(reference.get('name', '')), 60)}"
    st.caption(f"Runs **{safe_text(desc, 300)}** on every image of the working dataset (in parallel, cached by "
               "content + parameters; volumes use their middle slice).")
    if st.button(f"Run on all {len(dataset)} images", key=f"{key}.go", type="primary"):
        st.session_state[run_key] = task_key
    if st.session_state.get(run_key) != task_key:
        return None
    df = data.run_over_dataset(task, dataset, task_key=task_key)
    errs = df[df["error"].astype(str) != ""]
    ok = df[df["error"].astype(str) == ""].replace([np.inf, -np.inf], np.nan)
    st.caption(f"{len(ok)} images processed, {len(errs)} failed.")
    pairs, singles = _paired_metrics(ok)
    choices = pairs + singles
    if choices:
        gcols = [c for c in group_cols if c in ok.columns and ok[c].astype(str).nunique() > 1] or [None]
        a, b, c = st.columns([2, 2, 1])
        if default_metric in choices and f"{key}.metric" not in st.session_state:
            st.session_state[f"{key}.metric"] = default_metric
        metric = a.selectbox("Metric", choices, key=f"{key}.metric",
                             format_func=lambda m: f"{m} (before vs after)" if m in pairs else m)
        group = b.selectbox("Group by", gcols, key=f"{key}.group", format_func=lambda g: g or "(all)")
        kind = c.radio("Chart", ["box", "violin"], horizontal=True, key=f"{key}.kind")
        hover = [h for h in ("name", "id") if h in ok.columns]
        if metric in pairs:
            long = pd.concat([
                ok.assign(stage="before", value=ok[f"{metric}_before"]),
                ok.assign(stage="after", value=ok[f"{metric}_after"]),
            ], ignore_index=True)
            plot = px.box if kind == "box" else px.violin
            extra = dict(points="all") if kind == "box" else dict(box=True, points="all")
            fig = plot(long, x=group, y="value", color="stage", hover_data=hover, category_orders={"stage": ["before", "after"]},
                       color_discrete_map={"before": "#9aa5b1", "after": "#f58518"}, **extra)
            fig.update_layout(yaxis_title=metric, boxmode="group", violinmode="group")
            score = ok[f"{metric}_after"] - ok[f"{metric}_before"]
            score_name = f"Δ {metric} (after − before)"
        else:
            plot = px.box if kind == "box" else px.violin
            fig = plot(ok, x=group, y=metric, points="all", hover_data=hover, color=group)
            score = ok[metric]
            score_name = metric
        fig.update_layout(height=400, margin=dict(l=0, r=0, t=10, b=0))
        st.plotly_chart(fig, width="stretch", key=f"{key}.box")
        higher = METRIC_INFO.get(metric, (True, ""))[0]
        ranked = ok.assign(_score=score).dropna(subset=["_score"]).sort_values("_score", ascending=not higher)
        best_col, worst_col = st.columns(2)
        for col, title, part in ((worst_col, "Worst", ranked.tail(5).iloc[::-1]), (best_col, "Best", ranked.head(5))):
            with col:
                st.markdown(f"**{title}: {safe_text(score_name)}**")
                for _, r in part.iterrows():
                    st.button(f"{plain_name(r.get('name', r['id']), 40)} — {_fmt(r['_score'])}",
                              key=f"{key}.open.{title}.{r['id']}", on_click=picker.choose_image, args=(str(r["id"]),),
                              help="Make this the working image (shown above)")
    if len(errs):
        with st.expander(f"{len(errs)} images failed"):
            st.dataframe(pd.DataFrame({"file": [plain_name(n) for n in errs.get("name", errs["id"])], "reason": errs["error"]}),
                         hide_index=True, width="stretch")
    st.download_button("Download results (CSV)", df.to_csv(index=False).encode(), file_name=f"{key}_dataset.csv", mime="text/csv",
                       key=f"{key}.csv", on_click="ignore")
    return df


# ----------------------------------------------------------------------------- URL state
def _restore_from_url(t: str, op_keys: list[str]) -> None:
    """On the first run of this page in a session, put the link's settings into the widgets."""
    flag = f"{t}.url_restored"
    if st.session_state.get(flag):
        return
    st.session_state[flag] = True
    q = {k: st.query_params[k] for k in URL_KEYS if k in st.query_params}
    if not q or q.get("op") not in op_keys:
        return
    try:
        state = decode_state(q)
    except ValueError as exc:
        st.warning(f"Ignoring the settings in the link: {safe_text(str(exc), 300)}")
        return
    st.session_state[f"{t}.op"] = state["op"]
    _set_params(t, state["op"], state.get("params", {}))
    if "pipeline" in state:
        st.session_state[f"{t}.pipeline"] = state["pipeline"]
    if state.get("show") in ("operation", "pipeline"):
        st.session_state[f"{t}.show"] = state["show"]


def _write_url(op: Operation, params: dict[str, Any], pipeline: Pipeline, show: str) -> None:
    try:
        enc = encode_state({"op": op.key, "params": params, "pipeline": pipeline, "show": show})
    except ValueError:
        return
    for k in URL_KEYS:
        if k in enc:
            if st.query_params.get(k) != enc[k]:
                st.query_params[k] = enc[k]
        elif k in st.query_params:
            del st.query_params[k]


# ----------------------------------------------------------------------------- pipeline panel
def _pipe_key(t: str) -> str:
    return f"{t}.pipeline"


def _pipe_msg(t: str, msg: str) -> None:
    st.session_state[f"{t}.pipe.msg"] = msg


def _pipe_add(t: str, op_key: str, params: dict[str, Any]) -> None:
    try:
        st.session_state[_pipe_key(t)] = st.session_state.get(_pipe_key(t), Pipeline()).add(op_key, params)
    except ValueError as exc:
        _pipe_msg(t, str(exc))


def _pipe_edit(t: str, action: str, index: int) -> None:
    p: Pipeline = st.session_state.get(_pipe_key(t), Pipeline())
    try:
        p = p.remove(index) if action == "remove" else p.move(index, -1 if action == "up" else 1)
    except ValueError as exc:
        _pipe_msg(t, str(exc))
        return
    st.session_state[_pipe_key(t)] = p
    if not len(p):
        st.session_state[f"{t}.show"] = "operation"


def _pipe_clear(t: str) -> None:
    st.session_state[_pipe_key(t)] = Pipeline()
    st.session_state[f"{t}.show"] = "operation"


def _pipe_load(t: str) -> None:
    up = st.session_state.get(f"{t}.pipe.upload")
    if up is None:
        return
    try:
        p = Pipeline.from_json(up.getvalue())
    except ValueError as exc:
        _pipe_msg(t, f"Could not load that preset: {exc}")
        return
    st.session_state[_pipe_key(t)] = p
    st.session_state[f"{t}.show"] = "pipeline" if len(p) else "operation"
    _pipe_msg(t, f"Loaded a {len(p)}-step pipeline.")


def pipeline_panel(t: str, op: Operation, params: dict[str, Any]) -> tuple[Pipeline, str]:
    """Add / remove / reorder steps, load / save a JSON preset; returns (pipeline, what to show)."""
    pipe: Pipeline = st.session_state.setdefault(_pipe_key(t), Pipeline())
    st.button("+ Add this operation to the pipeline", key=f"{t}.pipe.add", on_click=_pipe_add, args=(t, op.key, dict(params)),
              width="stretch", help="Chain several operations; the pipeline is applied as one, saved as a JSON preset "
              "and kept in the page's link.")
    with st.expander(f"Pipeline ({len(pipe)} step{'s' if len(pipe) != 1 else ''})", expanded=bool(len(pipe))):
        for i, s in enumerate(pipe.steps):
            c0, c1, c2, c3 = st.columns([6, 1, 1, 1], vertical_alignment="center")
            c0.caption(f"{i + 1}. {safe_text(s.describe(), 200)}")
            c1.button("↑", key=f"{t}.pipe.up.{i}", on_click=_pipe_edit, args=(t, "up", i), disabled=i == 0, help="Move up")
            c2.button("↓", key=f"{t}.pipe.down.{i}", on_click=_pipe_edit, args=(t, "down", i), disabled=i == len(pipe) - 1,
                      help="Move down")
            c3.button("✕", key=f"{t}.pipe.remove.{i}", on_click=_pipe_edit, args=(t, "remove", i), help="Remove")
        if len(pipe):
            st.button("Clear pipeline", key=f"{t}.pipe.clear", on_click=_pipe_clear, args=(t,))
            st.download_button("Save preset (JSON)", export.pipeline_json_bytes(pipe), file_name=f"medlens_{t}_pipeline.json",
                               mime="application/json", key=f"{t}.pipe.save", on_click="ignore")
        st.file_uploader("Load preset (JSON)", type=["json"], key=f"{t}.pipe.upload", on_change=_pipe_load, args=(t,))
        msg = st.session_state.pop(f"{t}.pipe.msg", None)
        if msg:
            st.caption(safe_text(msg, 300))
    if not len(pipe):
        st.session_state[f"{t}.show"] = "operation"
        return pipe, "operation"
    show = st.radio("Show the result of", ["operation", "pipeline"], key=f"{t}.show", horizontal=True,
                    format_func=lambda s: "this operation" if s == "operation" else f"the pipeline ({len(pipe)} steps)")
    return pipe, show


# ----------------------------------------------------------------------------- A/B
def ab_view(t: str, ops: list[Operation], run: RunContext, tile_metrics: TileMetrics, current: tuple[str, dict]) -> None:
    """Two complete settings side by side: linked views, metric table with deltas."""
    st.caption("Two complete settings of any operation, side by side on the same image, with linked pan/zoom.")
    titles = {o.key: o.title for o in ops}
    sides: dict[str, tuple[str, dict[str, Any]]] = {}
    cols = st.columns(2)
    for side, col in zip("AB", cols):
        with col:
            k = f"{t}.ab{side}"
            if f"{k}.op" not in st.session_state:
                st.session_state[f"{k}.op"] = current[0]
            op_key = st.selectbox(f"Setting {side}: operation", list(titles), format_func=titles.get, key=f"{k}.op")
            op = registry.get(op_key)
            st.button("Copy the current settings here", key=f"{k}.copy", on_click=_copy_current, args=(k, current))
            with st.form(f"{k}.form", border=False):
                params = param_form(op, prefix=k)
                st.form_submit_button(f"Apply {side}")
            sides[side] = (op_key, params)
    results: dict[str, Result] = {}
    for side, (op_key, params) in sides.items():
        try:
            results[side] = run_cached(run.image, op_key, params, **run.context)
        except Exception as exc:  # noqa: BLE001
            st.error(f"Setting {side}: {safe_text(str(exc), 300)}")
    if len(results) < 2:
        return
    panels = []
    for side in "AB":
        shown, overlay = result_to_display(results[side], run.image, run.window)
        panels.append(compare.Panel(shown, output_window(results[side], run.image, run.window),
                                    f"{side}: {registry.get(sides[side][0]).title}", overlay))
    diff = compare.difference(panels[0].image, panels[1].image)
    if diff is not None:
        diff.title = "B − A"
        panels.append(diff)
    st.plotly_chart(compare.linked_figure(panels, height=380, uirevision=f"ab{run.image.digest[:8]}"), width="stretch",
                    key=f"{t}.ab.fig", config={"scrollZoom": True, "displaylogo": False})
    ma, mb = (run.metrics(tile_metrics, results[s]) for s in "AB")
    rows = []
    for name in list(dict.fromkeys(list(ma) + list(mb))):
        a, b = ma.get(name, np.nan), mb.get(name, np.nan)
        rows.append({"metric": name, "A": a, "B": b, "Δ (B − A)": (b - a) if np.isfinite(a) and np.isfinite(b) else np.nan})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.4g") for c in ("A", "B", "Δ (B − A)")})


def _copy_current(k: str, current: tuple[str, dict]) -> None:
    st.session_state[f"{k}.op"] = current[0]
    _set_params(k, current[0], current[1])


# ----------------------------------------------------------------------------- export
def export_panel(t: str, run: RunContext, steps: list[tuple[str, dict]], metrics: dict[str, float]) -> None:
    """Processed image (16-bit PNG, de-identified DICOM) at full size, metrics CSV, pipeline JSON.
    File names are generic: never derived from the source file name."""
    full = run.full
    ctx = {k: v for k, v in run.context.items()}

    def _full_result() -> Result:
        ctx2 = {k: (v.grey() if isinstance(v, Image) else v) for k, v in ctx.items()}
        return registry.run_chain(steps, full.grey(), spacing=full.spacing, units=full.units, **ctx2)

    def _array() -> tuple[np.ndarray, str]:
        res = _full_result()
        if res.image is not None:
            return np.asarray(res.image, dtype=np.float32), res.units or full.units
        prim = res.primary
        if prim is None:
            raise ValueError("this result has no image to export")
        return np.asarray(prim).astype(np.float32), "label"

    def png() -> bytes:
        a, units = _array()
        return export.png16_bytes(a, units=units)

    def dicom() -> bytes:
        a, units = _array()
        return export.deidentified_dicom_bytes(a, modality=full.modality, units=units, spacing=full.spacing,
                                               window=run.window if units == full.units else None, invert=full.invert,
                                               derivation=Pipeline.of(steps).describe())

    st.caption("Exports compute the current settings at full size. The DICOM is a new derived image (Secondary Capture): "
               "new UIDs, DERIVED\\SECONDARY, no patient, study or institution identifiers, PatientIdentityRemoved YES.")
    ok = burned_in_gate(full, key=f"{t}.exp")
    removal_preview(key=f"{t}.exp")
    a, b, c, d = st.columns(4)
    a.download_button("Image — 16-bit PNG", png, file_name=f"medlens_{t}.png", mime="image/png", key=f"{t}.exp.png",
                      on_click="ignore", help="Values mapped linearly from the image's min–max to 0–65535; the mapping is "
                      "stored in the PNG's text chunks (medlens:lo / medlens:hi).")
    b.download_button("Image — de-identified DICOM", dicom, file_name=f"medlens_{t}.dcm", mime="application/dicom",
                      key=f"{t}.exp.dcm", on_click="ignore", disabled=not ok)
    rows = [{"metric": k, "value": v, "description": METRIC_INFO.get(k, (True, ""))[1]} for k, v in metrics.items()]
    c.download_button("Metrics — CSV", export.metrics_csv_bytes(rows), file_name=f"medlens_{t}_metrics.csv", mime="text/csv",
                      key=f"{t}.exp.csv", on_click="ignore")
    try:
        pj = export.pipeline_json_bytes(steps)
        d.download_button("Pipeline — JSON", pj, file_name=f"medlens_{t}_pipeline.json", mime="application/json",
                          key=f"{t}.exp.json", on_click="ignore")
    except ValueError as exc:
        d.caption(safe_text(str(exc)))


# ----------------------------------------------------------------------------- panels of the page
def _operation_panel(spec: TechniqueSpec, ops: list[Operation], image: Image) -> tuple[Operation, dict[str, Any], bool]:
    t = spec.technique
    titles = {o.key: o.title for o in ops}
    op_key = st.selectbox("Operation", list(titles), format_func=titles.get, key=f"{t}.op")
    op = registry.get(op_key)
    st.caption(f"Intensity domain: {_md(op.domain)}")
    heavy = op.slow or image.grey().size > LARGE_PIXELS
    if heavy:
        with st.form(f"{t}.form"):
            params = param_form(op, prefix=t)
            st.form_submit_button("Apply", type="primary")
    else:
        params = param_form(op, prefix=t)
    big = max(image.shape2d) > PREVIEW_SIDE
    preview = False
    if heavy and big:
        preview = st.toggle(f"Fast preview (≤ {PREVIEW_SIDE} px)", value=True, key=f"{t}.preview.{op.key}",
                            help="Slow operations run on a downsampled copy; switch off to compute at full size.")
    return op, params, preview


def _reference_panel(t: str, entry: dict[str, Any]) -> tuple[dict[str, Any], Image] | None:
    dataset = data.working_dataset()
    if dataset is None:
        return None
    e = dataset.entries
    ids = [i for i in e["id"].astype(str) if i != str(entry["id"])]
    if not ids:
        st.caption("Needs a second image in the dataset as reference.")
        return None
    names = dict(zip(e["id"].astype(str), e["name"].astype(str)))
    same = [i for i in ids if str(e.loc[e["id"].astype(str) == i, "modality"].iloc[0]) == str(entry.get("modality", ""))]
    default = (same or ids)[0]
    if st.session_state.get(f"{t}.reference") not in ids:
        st.session_state[f"{t}.reference"] = default
    rid = st.selectbox("Reference image", ids, format_func=lambda i: plain_name(names.get(i, i), 60), key=f"{t}.reference")
    ref_entry = dataset.entry(rid)
    try:
        ref = data.load(ref_entry)
    except Exception as exc:  # noqa: BLE001
        st.error(f"Cannot load the reference: {safe_text(str(exc), 200)}")
        return None
    return ref_entry, ref.middle_plane()


def _box_inputs(t: str, image: Image) -> tuple[tuple[int, ...], tuple[int, ...]]:
    m, n = image.shape2d
    roi0, bg0 = default_boxes((m, n))
    out = []
    sub = image.digest[:10]
    with st.expander("CNR region (ROI and background boxes, px)"):
        st.caption("Rows r0–r1 and columns c0–c1 (end exclusive). Or draw a box on the images with the box-select tool.")
        for name, default in (("roi", roi0), ("background", bg0)):
            st.markdown(f"**{'ROI' if name == 'roi' else 'Background'}**")
            cols = st.columns(4)
            vals = []
            for j, (lab, lim) in enumerate((("r0", m), ("c0", n), ("r1", m), ("c1", n))):
                k = f"{t}.box.{name}.{lab}.{sub}"
                if k not in st.session_state:  # set once here: box-select writes the same key
                    st.session_state[k] = int(default[j])
                vals.append(int(cols[j].number_input(lab, 0, int(lim), key=k)))
            out.append(tuple(vals))
        st.radio("Box select sets", ["roi", "background"], key=f"{t}.box.target", horizontal=True,
                 format_func=lambda s: "ROI" if s == "roi" else "background")
    return out[0], out[1]


def _on_box_select(t: str, chart_key: str, shape: tuple[int, int], factor: int, digest: str) -> None:
    ev = st.session_state.get(chart_key)
    try:
        boxes = ev["selection"]["box"]
    except (KeyError, TypeError):
        return
    if not boxes:
        return
    bx = boxes[-1]
    xs, ys = bx.get("x", []), bx.get("y", [])
    if len(xs) < 2 or len(ys) < 2:
        return
    m, n = shape
    c0, c1 = sorted(float(v) for v in xs[:2])
    r0, r1 = sorted(float(v) for v in ys[:2])
    vals = {"r0": int(np.clip(round(r0 + 0.5), 0, m)), "r1": int(np.clip(round(r1 + 0.5), 0, m)),
            "c0": int(np.clip(round(c0 + 0.5), 0, n)), "c1": int(np.clip(round(c1 + 0.5), 0, n))}
    target = st.session_state.get(f"{t}.box.target", "roi")
    for lab, v in vals.items():
        st.session_state[f"{t}.box.{target}.{lab}.{digest[:10]}"] = int(v) * factor if factor > 1 else int(v)


def _show_metrics(nums: dict[str, float]) -> None:
    if not nums:
        return
    items = list(nums.items())
    per_row = 6
    for start in range(0, len(items), per_row):
        cols = st.columns(per_row)
        for col, (k, v) in zip(cols, items[start:start + per_row]):
            col.metric(k, _fmt(v, 3), help=METRIC_INFO.get(k, (True, None))[1])


# ----------------------------------------------------------------------------- the page
def technique_page(spec: TechniqueSpec) -> None:
    header(spec.title, spec.intro)
    t = spec.technique
    ops = registry.operations(t, inputs="image")
    if not ops:
        st.info(f"No {t} operations are registered yet.")
        return
    got = data.working_image()
    if got is None:
        return
    entry, image = got
    _restore_from_url(t, [o.key for o in ops])
    tile_metrics = spec.tile_metrics or default_tile_metrics
    window = display.default_window(image)
    left, right = st.columns([1, 3])
    with left:
        op, params, preview = _operation_panel(spec, ops, image)
        context: dict[str, Any] = {}
        ref_entry: dict[str, Any] | None = None
        if "reference" in op.context:
            got_ref = _reference_panel(t, entry)
            if got_ref is not None:
                ref_entry, context["reference"] = got_ref
        pipe, show = pipeline_panel(t, op, params)
        roi = bg = None
        if spec.cnr_boxes:
            roi, bg = _box_inputs(t, image)
    steps = pipe.as_list() if show == "pipeline" else [(op.key, params)]
    run_img, factor = preview_image(image) if preview else (image, 1)
    clean = data.load_aux(entry, "clean_path") if "clean_path" in entry else None
    if clean is not None and np.shape(clean) != image.shape2d:
        clean = None
    run = RunContext(image=run_img, full=image, window=window, factor=factor, context=context,
                     clean=_shrink(clean, factor), roi=_scale_box(roi, factor), background=_scale_box(bg, factor))
    result: Result | None = None
    nums: dict[str, float] = {}
    with right:
        st.caption(f"{safe_text(entry['name'])} · {image.shape2d[0]}×{image.shape2d[1]} px · {image.units}"
                   + (f" · **preview at {run_img.shape2d[0]}×{run_img.shape2d[1]} px**" if factor > 1 else "")
                   + (" · clean reference available" if clean is not None else ""))
        try:
            result = run_steps(run_img, steps, **context)
        except Exception as exc:  # noqa: BLE001 - shown to the user, the page stays usable
            st.error(safe_text(f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc), 400))
        if result is not None:
            shown, overlay = result_to_display(result, run_img, window)
            title = "After — " + (f"pipeline ({len(steps)} steps)" if show == "pipeline" else op.title)
            panels = [compare.Panel(run_img, window, "Before"),
                      compare.Panel(shown, output_window(result, run_img, window), title, overlay)]
            diff = compare.difference(run_img, shown) if result.image is not None else None
            show_diff = st.toggle("Difference panel", value=diff is not None, key=f"{t}.diffpanel", disabled=diff is None)
            if diff is not None and show_diff:
                panels.append(diff)
            shapes = []
            if run.roi is not None and run.background is not None:
                shapes = [compare.box_shape(run.roi, "#f58518", "ROI"), compare.box_shape(run.background, "#4c78a8", "background")]
            pa = st.session_state.get(f"{t}.profile.axis")
            pi = st.session_state.get(f"{t}.profile.{pa}.index") if pa else None
            if pa and pi is not None:
                shapes.append(compare.profile_shape(image.shape2d, pa, int(pi) // factor))
            chart_key = f"{t}.compare"
            fig = compare.linked_figure(panels, height=420, uirevision=f"{t}{image.digest[:12]}{factor}", shapes=shapes,
                                        selectable=spec.cnr_boxes)
            kw: dict[str, Any] = {}
            if spec.cnr_boxes:
                kw = dict(on_select=lambda: _on_box_select(t, chart_key, run_img.shape2d, factor, image.digest),
                          selection_mode=("box",))
            st.plotly_chart(fig, width="stretch", key=chart_key, config={"scrollZoom": True, "displaylogo": False}, **kw)
            try:
                nums = run.metrics(tile_metrics, result)
            except ValueError as exc:
                st.warning(safe_text(str(exc), 300))
            _show_metrics(nums)
            for note in result.notes:
                st.caption(safe_text(note, 400))
    page_state = {"entry": entry, "image": image, "op": op, "params": params, "result": result, "window": window,
                  "steps": steps, "run": run, "metrics": nums}

    def hist_profile(_: dict) -> None:
        if result is None or result.image is None:
            st.caption("Histograms and profiles need an image output.")
            return
        shown_img = result_to_display(result, run_img, window)[0]
        c1, c2 = st.columns(2)
        with c1:
            log_y = st.toggle("log counts", value=True, key=f"{t}.hist.log")
            st.plotly_chart(compare.histogram_figure([("before", run_img), ("after", shown_img)], log_y=log_y),
                            width="stretch", key=f"{t}.hist")
        with c2:
            axis, index = compare.profile_controls(image.shape2d, f"{t}.profile")
            st.plotly_chart(compare.profile_figure([("before", run_img), ("after", shown_img)], axis, index // factor),
                            width="stretch", key=f"{t}.prof")

    def sweep(_: dict) -> None:
        st.caption(f"Sweeps **{safe_text(op.title)}** around the current settings"
                   + (f" on the {run_img.shape2d[0]}×{run_img.shape2d[1]} px preview" if factor > 1 else "") + ".")
        sweep_grid(run_img, op, params, tile_metrics, key=f"{t}.sweep", window=window, context=context, run=run,
                   apply_prefix=t)

    views: dict[str, Callable[[dict], None]] = {
        "Histograms & profile": hist_profile,
        "A/B": lambda _: ab_view(t, ops, run, tile_metrics, (op.key, params)),
        "Sweep grid": sweep,
        "Dataset-wide": lambda _: dataset_wide(steps, spec.measure, key=f"{t}.ds", group_cols=spec.group_cols,
                                               reference=ref_entry),
    }
    if spec.exports:
        views["Export"] = lambda _: export_panel(t, run, steps, nums) if result is not None else None
    views.update(spec.extra_tabs)
    # lazy tabs: only the open tab's content runs (sweeps and dataset charts cost nothing until opened)
    tabs = st.tabs(list(views), key=f"{t}.tab", on_change="rerun")
    for tab, fn in zip(tabs, views.values()):
        if tab.open:
            with tab:
                fn(page_state)
    if spec.result_view:
        spec.result_view(page_state)
    _write_url(op, params, pipe, show)


# kept for pages that draw a single result with the plain viewer figure
__all__ = [
    "TechniqueSpec", "technique_page", "run_cached", "run_steps", "compute", "sweep_grid", "dataset_wide", "ab_view",
    "pipeline_panel", "export_panel", "default_tile_metrics", "call_metrics", "result_to_display", "output_window",
    "preview_image", "RunContext", "image_figure",
]
