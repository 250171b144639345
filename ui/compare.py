"""Comparison views: linked before/after (and difference) panels, overlaid histograms,
line profiles. Generic: any two 2-D images of the same shape (an operation's input and
output, or two settings A and B).

* :func:`linked_figure` — one Plotly figure, one subplot per panel, x and y axes
  *matched*, so panning or zooming one panel moves all of them (and ``uirevision``
  keeps the zoom while parameters change). Values stay in physical units (hover shows
  them); only a block-mean downsampled copy (≤ ``max_side`` px) is sent to the browser.
* :func:`histogram_figure` — histograms of both images (numpy-binned on a common range,
  a few kB instead of every pixel), overlaid.
* :func:`profile_figure` — values along one row or column of both images.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from analysis import display
from analysis.image import Image

__all__ = ["Panel", "linked_figure", "difference", "histogram_figure", "profile_figure", "profile_controls", "profile_shape",
           "box_shape"]

COLOURS = ("#4c78a8", "#f58518", "#54a24b")


class Panel:
    """One panel of a linked figure: an image, its display window, a title, an optional overlay."""

    def __init__(self, image: Image, window: tuple[float, float], title: str, overlay: np.ndarray | None = None,
                 colorscale: str | list | None = None, zmid: float | None = None) -> None:
        self.image, self.window, self.title, self.overlay = image, window, title, overlay
        self.colorscale, self.zmid = colorscale, zmid


def difference(before: Image, after: Image) -> Panel | None:
    """``after − before`` in physical units (diverging colours centred on 0), or None when
    the two are not comparable (different shape or units)."""
    if before.shape2d != after.shape2d or before.is_rgb or after.is_rgb or before.units != after.units:
        return None
    d = after.grey().astype(np.float32) - before.grey().astype(np.float32)
    f = np.abs(d[np.isfinite(d)])
    lim = float(np.percentile(f, 99.5)) if f.size else 1.0
    lim = lim if lim > 0 else 1.0
    img = before.with_pixels(d, name="difference", tag="difference", window=(0.0, 2 * lim))
    return Panel(img, (0.0, 2 * lim), f"Difference (after − before, {before.units})", colorscale="RdBu_r", zmid=0.0)


def box_shape(box: Sequence[int], colour: str, name: str) -> dict[str, Any]:
    """A rectangle (r0, c0, r1, c1) in pixel coordinates for ``fig.add_shape``."""
    r0, c0, r1, c1 = box
    return dict(type="rect", x0=c0 - 0.5, x1=c1 - 0.5, y0=r0 - 0.5, y1=r1 - 0.5, line=dict(color=colour, width=2),
                name=name)


def linked_figure(panels: Sequence[Panel], *, height: int = 420, max_side: int | None = None,
                  uirevision: str | None = None, shapes: Sequence[dict] = (), selectable: bool = False) -> go.Figure:
    """Side-by-side panels with matched x/y axes (linked pan and zoom). ``selectable`` adds
    invisible corner markers so Plotly offers its box-select tool (heatmaps alone get none)."""
    n = len(panels)
    if max_side is None:
        max_side = 512 if n <= 2 else 384
    fig = make_subplots(rows=1, cols=n, shared_yaxes=True, horizontal_spacing=0.015,
                        subplot_titles=[p.title for p in panels])
    ref = panels[0].image
    sp = ref.spacing or (1.0, 1.0)
    for i, p in enumerate(panels, start=1):
        img = p.image
        m, nn = img.shape2d
        f = max(1, int(np.ceil(max(m, nn) / max_side)))
        if img.is_rgb:
            small = display.downsample(display.to_display(img), max_side)
            fig.add_trace(go.Image(z=small, dx=f, dy=f, hovertemplate="row %{y:.0f}, col %{x:.0f}<extra></extra>"), 1, i)
        else:
            small = display.downsample(np.asarray(img.grey(), dtype=np.float32), max_side)
            c, w = p.window
            kw: dict[str, Any] = dict(zmin=c - w / 2, zmax=c + w / 2)
            if p.zmid is not None:
                kw = dict(zmin=p.zmid - w / 2, zmax=p.zmid + w / 2)
            fig.add_trace(go.Heatmap(
                z=np.nan_to_num(small).astype(np.float32), dx=f, dy=f, x0=(f - 1) / 2, y0=(f - 1) / 2,
                colorscale=p.colorscale or "gray", reversescale=bool(img.invert) and p.colorscale is None,
                showscale=False, name=p.title,
                hovertemplate="row %{y:.0f}, col %{x:.0f}<br>%{z:.4g} " + img.units + "<extra>" + p.title.split(" (")[0] + "</extra>",
                **kw), 1, i)
            if p.overlay is not None and np.shape(p.overlay)[:2] == (m, nn):
                ov = np.asarray(p.overlay)
                ovs = display.downsample(ov.astype(np.float32), max_side)
                binary = ov.dtype == bool or ov.max() <= 1
                z = np.where(ovs > (0.5 if binary else 0), ovs if not binary else 1.0, np.nan)
                fig.add_trace(go.Heatmap(z=z, dx=f, dy=f, x0=(f - 1) / 2, y0=(f - 1) / 2, showscale=False, opacity=0.4,
                                         colorscale=[[0, "#ff3b30"], [1, "#ff3b30"]] if binary else "Turbo",
                                         hoverinfo="skip"), 1, i)
        for s in shapes:
            fig.add_shape(**{k: v for k, v in s.items() if k != "name"}, row=1, col=i)
        if selectable and not img.is_rgb:
            fig.add_trace(go.Scatter(x=[0, nn - 1], y=[0, m - 1], mode="markers", marker=dict(opacity=0, size=1),
                                     hoverinfo="skip", showlegend=False, name="select"), 1, i)
    ratio = sp[0] / sp[1] if ref.spacing else 1.0
    fig.update_yaxes(autorange="reversed", showgrid=False, zeroline=False, constrain="domain", matches="y")
    fig.update_yaxes(scaleanchor="x", scaleratio=ratio, row=1, col=1)
    fig.update_xaxes(showgrid=False, zeroline=False, constrain="domain", matches="x")
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=28, b=0), uirevision=uirevision, dragmode="pan",
                      showlegend=False)
    fig.update_annotations(font_size=12)
    return fig


def histogram_figure(images: Sequence[tuple[str, Image]], *, bins: int = 128, log_y: bool = True, height: int = 260) -> go.Figure:
    """Overlaid step histograms of several images on one common value range."""
    arrays = [(name, img.grey()) for name, img in images]
    finite = [a[np.isfinite(a)] for _, a in arrays]
    lo = min(float(a.min()) for a in finite if a.size) if any(a.size for a in finite) else 0.0
    hi = max(float(a.max()) for a in finite if a.size) if any(a.size for a in finite) else 1.0
    hi = hi if hi > lo else lo + 1.0
    fig = go.Figure()
    for k, (name, a) in enumerate(arrays):
        counts, edges = display.histogram(a, bins=bins, value_range=(lo, hi))
        centers = (edges[:-1] + edges[1:]) / 2
        fig.add_trace(go.Scatter(x=centers, y=counts, mode="lines", line=dict(shape="hvh", color=COLOURS[k % 3], width=1.5),
                                 fill="tozeroy", opacity=0.5, name=name,
                                 hovertemplate="%{x:.4g}: %{y}<extra>" + name + "</extra>"))
    units = images[0][1].units if images else ""
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=10, b=0), yaxis_type="log" if log_y else "linear",
                      xaxis_title=units, yaxis_title="pixels", legend=dict(orientation="h", y=1.12))
    return fig


def profile_figure(images: Sequence[tuple[str, Image]], axis: str, index: int, *, height: int = 260) -> go.Figure:
    """Values along row ``index`` (axis "row") or column ``index`` (axis "col")."""
    fig = go.Figure()
    for k, (name, img) in enumerate(images):
        a = img.grey()
        i = int(np.clip(index, 0, (a.shape[0] if axis == "row" else a.shape[1]) - 1))
        line = a[i, :] if axis == "row" else a[:, i]
        fig.add_trace(go.Scatter(y=line, mode="lines", name=name, line=dict(color=COLOURS[k % 3], width=1.5)))
    first = images[0][1] if images else None
    along = "col" if axis == "row" else "row"
    sp = first.spacing if first is not None else None
    xtitle = f"{along} (px" + (f", {sp[1 if axis == 'row' else 0]:.3g} mm/px)" if sp else ")")
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=10, b=0), xaxis_title=xtitle,
                      yaxis_title=first.units if first is not None else "", legend=dict(orientation="h", y=1.12))
    return fig


def profile_controls(shape: tuple[int, int], key: str) -> tuple[str, int]:
    """Row/column choice and index slider; returns (axis, index)."""
    a, b = st.columns([1, 3])
    axis = a.radio("Profile along", ["row", "col"], horizontal=True, key=f"{key}.axis")
    limit = shape[0] if axis == "row" else shape[1]
    index = b.slider(f"{axis} index", 0, int(limit) - 1, int(limit) // 2, key=f"{key}.{axis}.index")
    return axis, int(index)


def profile_shape(shape: tuple[int, int], axis: str, index: int) -> dict[str, Any]:
    m, n = shape
    if axis == "row":
        return dict(type="line", x0=-0.5, x1=n - 0.5, y0=index, y1=index, line=dict(color="#54a24b", width=1, dash="dot"))
    return dict(type="line", y0=-0.5, y1=m - 0.5, x0=index, x1=index, line=dict(color="#54a24b", width=1, dash="dot"))
