"""Fusion page: a pair of images (anatomical A + functional/second modality B) on one grid,
one fusion method with its parameters and metrics, a comparator of every method scored
side by side, and the metric distributions over every pair of the working dataset.

Pure work lives in :mod:`analysis.fusion`; this module is Streamlit glue (widgets, caching
per session, views, exports).
"""

from __future__ import annotations

import io
import json
from typing import Any, Callable

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from analysis import fusion as F
from analysis import registry
from analysis.batch import CallTask
from analysis.dataset import Dataset
from analysis.display import downsample
from analysis.image import Image, content_digest
from ui import data, picker, state
from ui.privacy import burned_in_gate
from ui.common import header, plain_name, safe_text
from ui.technique import run_cached
from ui.viewer import image_figure
from ui.widgets import param_widget, widget_key

P = "fusion"  # widget-key prefix
SIDEBAR = "(the sidebar's working pair)"
GRIDS = {"A": "A's grid (B resampled onto it)", "finest": "finest spacing of the two, A's field of view",
         "B": "B's grid (A resampled onto it)"}
#: pair roles in the order "anatomical first, functional last" (A is the first of a known pair)
ROLE_ORDER = ("t1", "ct", "fixed", "reference", "t2", "flair", "moving", "t2_moving", "pet", "pet_moving", "pt", "spect")


# ----------------------------------------------------------------------------- small cache
def _memo(key: tuple, make: Callable[[], Any], size: int = 24) -> Any:
    """Per-session LRU (see ``ui.state.memo``)."""
    return state.memo("fusion", key, make, size)


# ----------------------------------------------------------------------------- pairs
def entry_name(entry: dict) -> str:
    """Display name of an entry: its name, else its file name, else its id."""
    for k in ("name", "path", "id"):
        v = entry.get(k)
        if isinstance(v, str) and v.strip():
            return v.rsplit("/", 1)[-1] if k == "path" else v
    return "?"


def _rank(role: str) -> tuple[int, str]:
    r = str(role).lower()
    return (ROLE_ORDER.index(r) if r in ROLE_ORDER else len(ROLE_ORDER), r)


def known_pairs(dataset: Dataset | None) -> list[tuple[str, dict, dict]]:
    """Every ordered (A, B) combination inside each ``pair_id`` group, anatomical role first:
    ``[(label, entry_a, entry_b), ...]`` (e.g. ``mm_ph01: t1 + pet``). Memoised per dataset."""
    if dataset is None or not len(dataset) or "pair_id" not in dataset.entries.columns:
        return []
    e = dataset.entries
    sig = content_digest(dataset.kind, str(dataset.root), "|".join(e["id"].astype(str)), "|".join(e["pair_id"].astype(str)),
                         "|".join(e["pair_role"].astype(str)) if "pair_role" in e.columns else "")
    return _memo(("pairs", sig), lambda: _known_pairs(dataset))


def _known_pairs(dataset: Dataset) -> list[tuple[str, dict, dict]]:
    e = dataset.entries
    sel = e[e["pair_id"].fillna("").astype(str) != ""]
    groups: dict[str, list[dict]] = {}
    for r in sel.to_dict("records"):
        r["root"] = str(dataset.root)
        groups.setdefault(str(r["pair_id"]), []).append(r)
    out = []
    for pid, recs in groups.items():
        recs.sort(key=lambda r: _rank(r.get("pair_role", "")))
        for i in range(len(recs)):
            for j in range(i + 1, len(recs)):
                a, b = recs[i], recs[j]
                ra, rb = str(a.get("pair_role", "") or "?"), str(b.get("pair_role", "") or "?")
                out.append((plain_name(f"{pid}: {ra} + {rb}", 90), a, b))
    return out


def role_combos(pairs: list[tuple[str, dict, dict]]) -> list[str]:
    """Distinct "roleA + roleB" combinations, most frequent first."""
    counts: dict[str, int] = {}
    for _, a, b in pairs:
        k = f"{a.get('pair_role', '')} + {b.get('pair_role', '')}"
        counts[k] = counts.get(k, 0) + 1
    return sorted(counts, key=lambda k: (-counts[k], _rank(k.split(" + ")[0]), _rank(k.split(" + ")[1])))


def _default_label(pairs: list[tuple[str, dict, dict]]) -> str | None:
    for label, a, b in pairs:
        if "pet" in str(b.get("pair_role", "")) and str(a.get("pair_role", "")) in ("t1", "ct", "fixed"):
            return label
    return pairs[0][0] if pairs else None


def _choose_known() -> None:
    label = st.session_state.get(f"{P}.known")
    st.session_state[f"{P}.choice"] = label
    for lab, a_id, b_id in st.session_state.get(f"{P}.known_ids", []):
        if lab == label:
            picker.choose_pair(a_id, b_id)
            return


def pick_pair(dataset: Dataset | None) -> tuple[tuple[dict, Image], tuple[dict, Image]] | None:
    """Known-pair chooser (it also sets the sidebar's working pair) and the two loaded planes.

    The first visit opens a functional-on-anatomical pair (t1 + pet) when the dataset has
    one; afterwards the page follows the sidebar's working pair."""
    from analysis.io import LoadError

    pairs = known_pairs(dataset)
    if not pairs:
        return data.working_pair(("t1", "pet"))
    key, choice_key = f"{P}.known", f"{P}.choice"  # widget key; persistent choice (survives page switches)
    labels = [lab for lab, _, _ in pairs]
    st.session_state[f"{P}.known_ids"] = [(lab, str(a["id"]), str(b["id"])) for lab, a, b in pairs]
    by_ids = {(str(a["id"]), str(b["id"])): lab for lab, a, b in pairs}
    cur = tuple(state.get(state.K_PAIR) or ()) or None
    seen = st.session_state.get(f"{P}.seen_pair")
    if st.session_state.get(choice_key) not in labels + [SIDEBAR]:  # first visit
        st.session_state[choice_key] = _default_label(pairs)
    elif cur != seen:  # the pair was changed elsewhere (sidebar, another page): follow it
        st.session_state[choice_key] = by_ids.get(cur, SIDEBAR)
    st.session_state[f"{P}.seen_pair"] = cur
    st.session_state[key] = st.session_state[choice_key]
    choice = st.selectbox("Pair (A + B)", labels + [SIDEBAR], key=key, on_change=_choose_known,
                          help="Known pairs of the working dataset (entries sharing a pair_id; the anatomical role is A). "
                               "Choosing one also sets the sidebar's working pair.")
    if choice == SIDEBAR:
        return data.working_pair(("t1", "pet"))
    _, ea, eb = pairs[labels.index(choice)]
    out = []
    for entry in (ea, eb):
        try:
            img = data.load(entry)
        except LoadError as exc:
            st.error(f"**{safe_text(exc.filename)}** — {safe_text(exc.reason, 300)}")
            return None
        out.append((entry, img.middle_plane()))
    return out[0], out[1]


# ----------------------------------------------------------------------------- preparing the pair
def _registrar() -> tuple[Callable, Callable] | None:
    """(intensity_register, warp) from analysis.registration when that module offers them."""
    try:
        from analysis import registration as R
    except Exception:  # noqa: BLE001 - registration is optional for this page
        return None
    f, w = getattr(R, "intensity_register", None), getattr(R, "warp", None)
    return (f, w) if callable(f) and callable(w) else None


def prepare_pair(ia: Image, ib: Image, grid: str, register: bool) -> dict[str, Any]:
    """A and B as greyscale planes on one grid (and B rigidly registered to A on request)."""

    def make() -> dict[str, Any]:
        a, b, sp, notes = F.common_grid(ia.grey(), ia.spacing, ib.grey(), ib.spacing, grid=grid)
        reg: dict[str, Any] = {}
        if register:
            got = _registrar()
            if got is None:
                notes.append("registration is not available in this build: shown unregistered")
            else:
                f, warp = got
                an = F.normalise(a)
                mi_before = F.mutual_information(an, F.normalise(b), bins=64)
                est = f(a, b, transform="rigid", metric="mattes", spacing=sp, moving_spacing=sp)
                b = warp(b, est.T, output_shape=a.shape, cval=float(np.min(b))).astype(np.float32)
                reg = {"T": np.asarray(est.T).tolist(), **{k: float(v) for k, v in est.info.items()},
                       "mi_before": mi_before, "mi_after": F.mutual_information(an, F.normalise(b), bins=64)}
                try:
                    from analysis.registration import decompose

                    c = ((a.shape[0] - 1) / 2.0, (a.shape[1] - 1) / 2.0)
                    reg.update({k: v for k, v in decompose(est.T, center=c, spacing=sp).items()
                                if k in ("theta_deg", "ty_mm", "tx_mm", "ty_px", "tx_px")})
                except Exception:  # noqa: BLE001 - the readable decomposition is a bonus
                    pass
                notes.append("B rigidly registered to A (SimpleITK, Mattes mutual information) and resampled")
        tag = content_digest(ia.digest, ib.digest, grid, str(register))
        img_a = Image(a, name="A", spacing=sp, units=ia.units, modality=ia.modality, window=None if a.shape != ia.shape2d else ia.window,
                      invert=ia.invert, digest=content_digest(tag, "A"))
        img_b = Image(b, name="B", spacing=sp, units=ib.units, modality=ib.modality, window=None if (b.shape != ib.shape2d or register) else ib.window,
                      invert=ib.invert, digest=content_digest(tag, "B"))
        return {"a": img_a, "b": img_b, "spacing": sp, "notes": notes, "reg": reg}

    return _memo(("pair", ia.digest, ib.digest, grid, bool(register)), make)


def fused_display(fused: np.ndarray) -> np.ndarray:
    """uint8 view of a fused result ([0, 1] grey → 0..255; RGB unchanged)."""
    f = np.asarray(fused)
    if f.dtype == np.uint8:
        return f
    return np.clip(np.rint(f * 255), 0, 255).astype(np.uint8)


def png_bytes(a: np.ndarray) -> bytes:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _metrics(pair: dict[str, Any], key: str, params: dict[str, Any], result: Any, norm: str) -> dict[str, float]:
    def make() -> dict[str, float]:
        an, bn = F.normalise_pair(pair["a"].pixels, pair["b"].pixels, norm)
        return F.fusion_metrics(an, bn, result.image)

    return _memo(("metrics", pair["a"].digest, pair["b"].digest, key, json.dumps(params, sort_keys=True, default=str)), make, size=64)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (float, np.floating)) else str(v)


def metric_row(m: dict[str, float]) -> None:
    keys = list(F.METRIC_INFO)
    for chunk in (keys[:4], keys[4:]):
        cols = st.columns(len(chunk))
        for c, k in zip(cols, chunk):
            c.metric(k, _fmt(m.get(k, float("nan"))), help=F.METRIC_INFO[k])


def _fused_image(res: Any, pair: dict[str, Any], title: str) -> Image:
    a = np.asarray(res.image)
    return Image(a if a.dtype == np.uint8 else a.astype(np.float32), name=title, spacing=pair["spacing"],
                 units=res.units or F.FUSED_UNITS, window=None if a.dtype == np.uint8 else (0.5, 1.0))


# ----------------------------------------------------------------------------- views
def comparator(pair: dict[str, Any], norm: str) -> pd.DataFrame:
    """Every method on the pair with its default parameters (so moving a slider above does
    not re-run the grid), scored by every metric."""
    ia, ib = pair["a"], pair["b"]

    def run(key: str, x: np.ndarray, p: dict[str, Any], **ctx: Any) -> Any:
        return run_cached(ia, key, p, moving=ib)

    def make() -> tuple[list[dict], dict]:
        return F.compare_methods(ia.pixels, ib.pixels, normalise=norm, run=run)

    st.caption(f"Every method with its default parameters and {norm} normalisation; ★ marks the best tile for the chosen metric.")
    cmp_key = ("cmp", ia.digest, ib.digest, norm)
    with st.spinner("Running every fusion method…"):
        rows, results = _memo(cmp_key, make, size=8)
    table = pd.DataFrame(rows)
    metric_cols = [k for k in F.METRIC_INFO if k in table.columns]
    c1, c2 = st.columns([2, 1])
    metric = c1.selectbox("Rank tiles by", metric_cols, index=metric_cols.index("qabf") if "qabf" in metric_cols else 0,
                          key=f"{P}.cmp.metric", format_func=lambda k: f"{k} — {F.METRIC_INFO[k].split(' — ')[0]}")
    higher = c2.toggle("higher is better", value=True, key=f"{P}.cmp.higher")
    best = None
    if metric in table.columns and table[metric].notna().any():
        best = int(table[metric].idxmax() if higher else table[metric].idxmin())
    ncol = 4
    cols = st.columns(ncol)
    for i, row in table.iterrows():
        key = F.METHODS[i] if i < len(F.METHODS) else None
        with cols[i % ncol]:
            if isinstance(row.get("error"), str) and row.get("error"):
                st.error(f"{safe_text(row['title'])}: {safe_text(row['error'], 300)}")
                continue
            st.image(_memo(("tile", *cmp_key, key), lambda: downsample(fused_display(results[key].image), 256), size=64),
                     width="stretch")
            star = "★ " if i == best else ""
            nums = " · ".join(f"{k} {_fmt(row[k])}" for k in metric_cols)
            st.caption(f"{star}**{safe_text(row['title'])}**  \n{nums}")
    if metric in table.columns:
        ordered = table.sort_values(metric, ascending=not higher)
        fig = px.bar(ordered, x="title", y=metric, color="title", text_auto=".3g")
        fig.update_layout(height=320, margin=dict(l=0, r=0, t=10, b=0), showlegend=False, xaxis_title=None)
        st.plotly_chart(fig, width="stretch", key=f"{P}.cmp.bar")
    st.dataframe(table.drop(columns=["method"]).set_index("title"), width="stretch")
    st.download_button("Comparator metrics (CSV)", table.to_csv(index=False).encode(), file_name="fusion_comparator.csv",
                       mime="text/csv", key=f"{P}.cmp.csv")
    return table


def dataset_wide(dataset: Dataset | None, norm: str, grid: str) -> pd.DataFrame | None:
    """Fuse every known pair of the chosen role combination; metric distributions per method."""
    pairs = known_pairs(dataset)
    if dataset is None or not pairs:
        st.info("The working dataset has no image pairs (entries sharing a pair_id).")
        return None
    combos = role_combos(pairs)
    pref = next((c for c in combos if c == "t1 + pet"), combos[0])
    combo = st.selectbox("Pairs to fuse (A role + B role)", combos, index=combos.index(pref), key=f"{P}.ds.combo")
    chosen = [(lab, a, b) for lab, a, b in pairs if f"{a.get('pair_role', '')} + {b.get('pair_role', '')}" == combo]
    items = [{"id": lab.split(":")[0], "name": lab, "subject": str(a.get("subject", "")), "a": a, "b": b} for lab, a, b in chosen]
    task = CallTask(F.fuse_pair_entry, (("grid", grid), ("methods", tuple(F.METHODS)), ("normalise", norm)))
    task_key = json.dumps(["fusion.fuse_pair_entry", combo, norm, grid, list(F.METHODS)])
    run_key = f"{P}.ds.ran"
    if st.button(f"Fuse all {len(items)} pairs with every method", key=f"{P}.ds.go", type="primary"):
        st.session_state[run_key] = task_key
    if st.session_state.get(run_key) != task_key:
        st.caption(f"Runs the {len(F.METHODS)} methods (default parameters, {norm} normalisation, common grid: {GRIDS[grid]}) "
                   "on every pair, in parallel, cached by content.")
        return None
    df = data.run_over_dataset(task, dataset, task_key=task_key, label="Fusing pairs", records=items)
    errs = df[df["error"].astype(str) != ""]
    ok = df[df["error"].astype(str) == ""]
    st.caption(f"{len(ok)} pairs fused, {len(errs)} failed.")
    value_cols = [c for c in ok.columns if "." in c and c.split(".", 1)[1] in F.METRIC_INFO]
    if value_cols:
        long = ok.melt(id_vars=["id"], value_vars=value_cols, var_name="key", value_name="value")
        long[["method", "metric"]] = long["key"].str.split(".", n=1, expand=True)
        metric = st.selectbox("Metric", list(F.METRIC_INFO), index=list(F.METRIC_INFO).index("qabf"), key=f"{P}.ds.metric",
                              help="; ".join(f"{k}: {v}" for k, v in F.METRIC_INFO.items()))
        sub = long[long["metric"] == metric]
        fig = px.box(sub, x="method", y="value", points="all", color="method", hover_data=["id"],
                     category_orders={"method": [k.split(".")[1] for k in F.METHODS]})
        fig.update_layout(height=380, margin=dict(l=0, r=0, t=10, b=0), showlegend=False, yaxis_title=metric)
        st.plotly_chart(fig, width="stretch", key=f"{P}.ds.box")
        med = long.pivot_table(index="method", columns="metric", values="value", aggfunc="median")
        st.markdown("**Median per method**")
        st.dataframe(med[[k for k in F.METRIC_INFO if k in med.columns]], width="stretch")
    if len(errs):
        with st.expander(f"{len(errs)} pairs failed"):
            st.dataframe(pd.DataFrame({"pair": [plain_name(n) for n in errs["id"]], "reason": errs["error"]}),
                         hide_index=True, width="stretch")
    st.download_button("Dataset-wide metrics (CSV)", df.drop(columns=[c for c in ("name",) if c in df.columns]).to_csv(index=False).encode(),
                       file_name="fusion_dataset.csv", mime="text/csv", key=f"{P}.ds.csv")
    return df


# ----------------------------------------------------------------------------- the page
def fusion_page() -> None:
    header("Fusion", "Two modalities on one grid — functional on anatomical — fused by eight methods, each scored by entropy, "
                     "mutual information and SSIM with both sources, Q^AB/F edge preservation and contrast.")
    ops = {o.key: o for o in registry.operations("fusion", inputs="pair")}
    dataset = data.working_dataset()
    if dataset is None or not len(dataset):
        st.info("No working dataset: choose one on the **Home** page.")
        return
    got = pick_pair(dataset)
    if got is None:
        return
    (ea, ia), (eb, ib) = got
    differ = ia.shape2d != ib.shape2d or (ia.spacing != ib.spacing)
    left, right = st.columns([1, 3])
    with left:
        grid = st.radio("Common grid", list(GRIDS), format_func=GRIDS.get, key=f"{P}.grid", disabled=not differ,
                        help="Spacing-aware resampling with centres aligned (physical size kept). Only needed when the two "
                             "images differ in shape or pixel spacing.")
        can_register = _registrar() is not None
        register = st.checkbox("Register B to A first (rigid, mutual information)", key=f"{P}.register", disabled=not can_register,
                               help="SimpleITK rigid registration with Mattes mutual information (multimodal), run once per pair "
                                    "and cached." if can_register else "The registration module is not available.")
        norm = st.selectbox("Intensity normalisation", F.NORMALISATIONS, key=f"{P}.norm",
                            help=F._NORM_PARAM.help)
        keys = [k for k in F.METHODS if k in ops] + [k for k in ops if k not in F.METHODS]
        op_key = st.selectbox("Method", keys, format_func=lambda k: ops[k].title, key=f"{P}.op")
        op = ops[op_key]
        params: dict[str, Any] = {}
        for p in op.params:
            if p.name == "normalise":
                params[p.name] = norm
            else:
                params[p.name] = param_widget(p, widget_key(op.key, p.name, P))
        st.caption(f"Intensity domain: {safe_text(op.domain, 400)}")
    g = grid if differ else "A"
    try:
        with st.spinner("Registering B to A…" if register else "Preparing the pair…"):
            pair = prepare_pair(ia, ib, g, bool(register and can_register))
    except Exception as exc:  # noqa: BLE001 - a failing registration must not take the page down
        if not register:
            st.error(f"Could not prepare the pair: {safe_text(f'{type(exc).__name__}: {exc}', 300)}")
            return
        st.warning(f"Registration failed ({safe_text(f'{type(exc).__name__}: {exc}', 300)}); showing the pair unregistered.")
        pair = prepare_pair(ia, ib, g, False)
    with right:
        sp = pair["spacing"]
        st.caption(f"A: {safe_text(entry_name(ea))} · {ia.shape2d[0]}×{ia.shape2d[1]} px · {ia.units} — "
                   f"B: {safe_text(entry_name(eb))} · {ib.shape2d[0]}×{ib.shape2d[1]} px · {ib.units} — "
                   f"grid {pair['a'].shape2d[0]}×{pair['a'].shape2d[1]} px"
                   + (f" at {sp[0]:.3g}×{sp[1]:.3g} mm" if sp else " (spacing unknown)"))
        for n in pair["notes"]:
            st.caption(safe_text(n, 300))
        if pair["reg"]:
            r = pair["reg"]
            st.caption(f"Registration: θ {r.get('theta_deg', float('nan')):.2f}°, shift {r.get('ty_mm', float('nan')):.2f}, "
                       f"{r.get('tx_mm', float('nan')):.2f} mm (row, col); mutual information A↔B (64 bins) "
                       f"{r['mi_before']:.3f} → {r['mi_after']:.3f} bits")
        try:
            res = run_cached(pair["a"], op_key, params, moving=pair["b"])
        except ValueError as exc:
            st.error(safe_text(str(exc), 400))
            return
        from analysis.display import default_window

        fused = _fused_image(res, pair, op.title)
        c1, c2, c3 = st.columns(3)
        c1.plotly_chart(image_figure(pair["a"], default_window(pair["a"]), title=f"A ({pair['a'].units})", height=330, uirevision="A"),
                        width="stretch", key=f"{P}.A")
        c2.plotly_chart(image_figure(pair["b"], default_window(pair["b"]), title=f"B ({pair['b'].units})", height=330, uirevision="B"),
                        width="stretch", key=f"{P}.B")
        c3.plotly_chart(image_figure(fused, fused.window or (127.5, 256.0), title=f"Fused — {op.title}", height=330, uirevision="F"),
                        width="stretch", key=f"{P}.F")
        m = _metrics(pair, op_key, params, res, norm)
        metric_row(m)
        for note in res.notes:
            st.caption(safe_text(note, 400))
        burned_in_gate(pair["a"], key=f"{P}.exp")  # a warning only: picture exports carry pixels, never headers
        e1, e2 = st.columns(2)
        name = op_key.split(".", 1)[1]
        png = _memo(("png", pair["a"].digest, pair["b"].digest, op_key, json.dumps(params, sort_keys=True, default=str)),
                    lambda: png_bytes(fused_display(res.image)), size=64)
        e1.download_button("Fused image (PNG)", png, file_name=f"fusion_{name}.png", mime="image/png", key=f"{P}.png")
        row = {"A": str(ea.get("id", "")), "B": str(eb.get("id", "")), "method": name, "normalise": norm,
               "grid": grid if differ else "same", "registered": bool(pair["reg"]),
               **{f"param_{k}": v for k, v in params.items() if k != "normalise"}, **m}
        e2.download_button("Metrics (CSV)", pd.DataFrame([row]).to_csv(index=False).encode(), file_name=f"fusion_{name}_metrics.csv",
                           mime="text/csv", key=f"{P}.csv")
    tabs = st.tabs(["Fusion comparator", "Dataset-wide"])
    with tabs[0]:
        comparator(pair, norm)
    with tabs[1]:
        dataset_wide(dataset, norm, grid if differ else "A")
