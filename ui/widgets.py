"""Widgets rendered from the registry's parameter specs (one table drives every form)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from analysis.registry import Operation, Param


def widget_key(op_key: str, name: str, prefix: str = "") -> str:
    """``"<prefix>.<operation key>.<parameter>"`` (the naming rule of the architecture guide)."""
    return f"{prefix}.{op_key}.{name}" if prefix else f"{op_key}.{name}"


def param_widget(p: Param, key: str, value: Any = None, *, container: Any = None) -> Any:
    """One widget for one parameter; returns its current value."""
    c = container or st
    v = p.default if value is None else value
    label = p.title
    if p.kind == "choice":
        opts = list(p.options or ())
        return c.selectbox(label, opts, index=opts.index(v) if v in opts else 0, key=key, help=p.help or None)
    if p.kind == "bool":
        return c.checkbox(label, value=bool(v), key=key, help=p.help or None)
    if v is None:  # optional number ("auto" when left empty)
        return c.number_input(label, min_value=p.min, max_value=p.max, value=None, step=p.step or None, key=key,
                              help=(p.help or "") + " Leave empty for automatic.", placeholder="auto")
    if p.kind == "int":
        if p.min is not None and p.max is not None and p.max - p.min <= 1000:
            return c.slider(label, int(p.min), int(p.max), int(v), step=int(p.step or 1), key=key, help=p.help or None)
        return c.number_input(label, min_value=None if p.min is None else int(p.min), max_value=None if p.max is None else int(p.max),
                              value=int(v), step=int(p.step or 1), key=key, help=p.help or None)
    if p.min is not None and p.max is not None and not p.log and (p.max - p.min) / float(p.step or (p.max - p.min) / 100) <= 2000:
        step = float(p.step or (p.max - p.min) / 100)
        return c.slider(label, float(p.min), float(p.max), float(v), step=step, key=key, help=p.help or None)
    return c.number_input(label, min_value=None if p.min is None else float(p.min), max_value=None if p.max is None else float(p.max),
                          value=float(v), step=float(p.step or 0.1), key=key, help=p.help or None, format="%.4g")


def param_form(op: Operation, *, prefix: str = "", values: dict[str, Any] | None = None, container: Any = None) -> dict[str, Any]:
    """All parameters of ``op`` as widgets; returns ``{name: value}`` (validated by the caller)."""
    values = values or {}
    out = {}
    for p in op.params:
        out[p.name] = param_widget(p, widget_key(op.key, p.name, prefix), values.get(p.name), container=container)
    return out
