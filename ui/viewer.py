"""Image viewer: window/level in physical units, presets, histogram, slice/frame slider,
hover readout of the physical value, spacing-aware aspect ratio."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from analysis import display
from analysis.image import Image
from ui import state

VIEW_MAX = 512  # longest side sent to the browser (block-mean downsampled)


def image_figure(
    image: Image,
    window: tuple[float, float],
    *,
    title: str = "",
    height: int = 460,
    max_side: int = VIEW_MAX,
    overlay: np.ndarray | None = None,
    overlay_opacity: float = 0.4,
    uirevision: str | None = None,
) -> go.Figure:
    """Plotly heatmap of a 2-D image. Greyscale values stay in physical units (hover shows
    them); the window sets zmin/zmax; MONOCHROME1 uses a reversed grey scale."""
    a = image.pixels
    m, n = image.shape2d
    f = max(1, int(np.ceil(max(m, n) / max_side)))
    sp = image.spacing or (1.0, 1.0)
    fig = go.Figure()
    if image.is_rgb:
        rgb = display.to_display(image)
        small = display.downsample(rgb, max_side)
        fig.add_trace(go.Image(z=small, dx=f, dy=f, hovertemplate="row %{y:.0f}, col %{x:.0f}<br>RGB %{z}<extra></extra>"))
    else:
        small = display.downsample(np.asarray(a, dtype=np.float32), max_side)
        c, w = window
        unit = image.units
        fig.add_trace(
            go.Heatmap(
                z=small.astype(np.float32),
                dx=f,
                dy=f,
                x0=(f - 1) / 2,
                y0=(f - 1) / 2,
                zmin=c - w / 2,
                zmax=c + w / 2,
                colorscale="gray",
                reversescale=bool(image.invert),
                showscale=False,
                hovertemplate=(
                    "row %{y:.0f}, col %{x:.0f}<br>%{z:.4g} " + unit
                    + (f"<br>({sp[0]:.3g} × {sp[1]:.3g} mm px)" if image.spacing else "")
                    + "<extra></extra>"
                ),
            )
        )
    if overlay is not None:
        ov = np.asarray(overlay)
        if ov.shape[:2] == (m, n):
            ov_small = display.downsample(ov.astype(np.float32), max_side)
            if ov.dtype == bool or ov.max() <= 1:
                z = np.where(ov_small > 0.5, 1.0, np.nan)
                fig.add_trace(go.Heatmap(z=z, dx=f, dy=f, x0=(f - 1) / 2, y0=(f - 1) / 2, colorscale=[[0, "#ff3b30"], [1, "#ff3b30"]],
                                         showscale=False, opacity=overlay_opacity, hoverinfo="skip"))
            else:
                z = np.where(ov_small > 0, ov_small, np.nan)
                fig.add_trace(go.Heatmap(z=z, dx=f, dy=f, x0=(f - 1) / 2, y0=(f - 1) / 2, colorscale="Turbo",
                                         showscale=False, opacity=overlay_opacity, hoverinfo="skip"))
    ratio = sp[0] / sp[1] if image.spacing else 1.0
    fig.update_yaxes(autorange="reversed", scaleanchor="x", scaleratio=ratio, showgrid=False, zeroline=False, constrain="domain")
    fig.update_xaxes(showgrid=False, zeroline=False, constrain="domain")
    fig.update_layout(
        height=height,
        margin=dict(l=0, r=0, t=30 if title else 4, b=0),
        title=dict(text=title, font=dict(size=13)) if title else None,
        uirevision=uirevision,
        dragmode="pan",
    )
    return fig


def histogram_figure(image: Image, window: tuple[float, float] | None = None, *, height: int = 220, bins: int = 128) -> go.Figure:
    a = image.grey()
    counts, edges = display.histogram(a, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure(go.Bar(x=centers, y=counts, marker_color="#4c78a8", hovertemplate="%{x:.4g} " + image.units + ": %{y}<extra></extra>"))
    if window is not None:
        c, w = window
        fig.add_vrect(x0=c - w / 2, x1=c + w / 2, fillcolor="#f58518", opacity=0.18, line_width=0)
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=24, b=0), bargap=0, yaxis_type="log",
                      title=dict(text=f"Histogram ({image.units})", font=dict(size=12)), showlegend=False)
    return fig


def window_controls(image: Image, key: str) -> tuple[float, float]:
    """Preset selector + center/width sliders in physical units; returns (center, width)."""
    presets = display.preset_names(image)
    preset_key = f"{key}.preset"
    chosen = st.selectbox("Window preset", presets, key=preset_key,
                          help="CT presets in HU; auto windows use percentiles of this image.")
    c0, w0 = display.preset_window(image, chosen)
    a = image.grey()
    finite = a[np.isfinite(a)] if a.dtype.kind == "f" else a
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 1.0
    span = max(hi - lo, 1.0)
    cmin, cmax = min(lo - 0.25 * span, c0), max(hi + 0.25 * span, c0)
    wmax = max(2.0 * span, w0, 2.0)
    step = 1.0 if span > 50 else float(10 ** np.floor(np.log10(span / 100)))
    # Sliders re-seed when the preset (or image) changes: their keys include both.
    sub = f"{key}.{chosen}.{image.digest[:12]}"
    center = st.slider(f"Level / center ({image.units})", float(cmin), float(cmax), float(np.clip(c0, cmin, cmax)), step=step, key=f"{sub}.c")
    width = st.slider(f"Width ({image.units})", float(step), float(wmax), float(np.clip(w0, step, wmax)), step=step, key=f"{sub}.w")
    return float(center), float(width)


def plane_slider(image: Image, key: str = "viewer") -> Image:
    """Slice (volume) or frame (multi-frame) slider; the choice is shared with other pages."""
    if image.n_planes <= 1:
        return image
    what = "Slice" if image.stack == "slice" else "Frame"
    default = int(state.get(state.K_PLANE, image.n_planes // 2) or 0)
    idx = st.slider(what, 1, image.n_planes, min(default, image.n_planes - 1) + 1, key=f"{key}.plane.{image.digest[:12]}")
    state.set(state.K_PLANE, idx - 1)
    return image.plane(idx - 1)


def viewer(image: Image, key: str = "viewer", *, overlay: np.ndarray | None = None) -> dict[str, Any]:
    """Full viewer: controls on the left, image and histogram on the right."""
    plane = plane_slider(image, key)
    left, right = st.columns([1, 3])
    with left:
        window = window_controls(plane, key)
        st.plotly_chart(histogram_figure(plane, window), width="stretch", key=f"{key}.hist")
        meta = {
            "size": f"{plane.shape2d[0]} × {plane.shape2d[1]} px",
            "spacing": f"{plane.spacing[0]:.4g} × {plane.spacing[1]:.4g} mm" if plane.spacing else "unknown (lengths in px)",
            "units": plane.units,
            "modality": plane.modality,
        }
        if image.n_planes > 1:
            meta["planes"] = f"{image.n_planes} ({image.stack})"
        if plane.invert:
            meta["photometric"] = "MONOCHROME1 (inverted for display)"
        st.table({k: [v] for k, v in meta.items()})
    with right:
        fig = image_figure(plane, window, height=560, overlay=overlay, uirevision=plane.digest)
        st.plotly_chart(fig, width="stretch", key=f"{key}.img", config={"scrollZoom": True, "displaylogo": False})
    return {"window": window, "plane": plane}
