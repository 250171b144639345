"""Recognition page: radiomics-style features over the working dataset, a classifier with
subject-grouped validation, and prediction + annotation maps on the working image.

Everything computational lives in :mod:`analysis.features` and :mod:`analysis.classify`; this
module is widgets, caching and Plotly views. Session keys start with ``rec.``.
"""

from __future__ import annotations

import html
import json
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from analysis import classify as C
from analysis import display
from analysis import features as F
from analysis.batch import CallTask
from analysis.dataset import Dataset
from analysis.image import Image
from ui import data, picker, state
from ui.common import header, plain_name, safe_text, show_errors
from ui.viewer import image_figure
from ui.widgets import param_widget

K_FEATS = "rec.features"  # {"key": task_key, "df": DataFrame, "settings": dict}
K_RUN = "rec.run_features"  # task_key requested by the button
K_CV = "rec.cv"  # {"key", "cv", "model", "table", "labels", "features"}
K_MODEL = "rec.model"  # {"model": TrainedModel, "source": str}
K_PATCH = "rec.patch_model"  # {"key", "model", "n"}
K_IMP = "rec.importance"  # {"key", "df"}
K_SENS = "rec.sensitivity"  # {"key", "df"}
K_PICKED = "rec.picked"

CLASS_COLOURS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d"]


# ----------------------------------------------------------------------------- helpers
def _colour(i: int) -> str:
    return CLASS_COLOURS[i % len(CLASS_COLOURS)]


def _dataset_modality(dataset: Dataset) -> str:
    mods = dataset.entries.get("modality", pd.Series(dtype=str)).astype(str)
    mods = mods[mods != ""]
    return str(mods.mode().iloc[0]) if len(mods) else ""


def _subset(dataset: Dataset) -> tuple[list[dict[str, Any]], str]:
    """Records of the images to learn from (a role of the dataset, or all)."""
    e = dataset.entries
    roles = [r for r in e.get("role", pd.Series(dtype=str)).astype(str).unique().tolist() if r]
    options = ["all images"] + roles if len(roles) > 1 else ["all images"]
    default = options.index("cohort") if "cohort" in options else 0
    choice = st.selectbox("Images to learn from", options, index=default, key="rec.subset",
                          help="The sample dataset's labelled lesion cohort is the role 'cohort'.")
    recs = dataset.records()
    if choice != "all images":
        recs = [r for r in recs if str(r.get("role", "")) == choice]
    return recs, choice


# ----------------------------------------------------------------------------- feature settings
def settings_form(modality: str) -> F.FeatureSettings:
    """Feature-settings widgets; defaults from :func:`analysis.features.default_settings`."""
    d = F.default_settings(modality)
    presets = list(F.RANGE_PRESETS)
    default_preset = next((k for k, v in F.RANGE_PRESETS.items() if v == (d.range_min, d.range_max)), "none")
    c1, c2, c3 = st.columns(3)
    with c1:
        groups = st.multiselect("Feature groups", list(F.GROUPS), default=list(d.groups), key="rec.groups",
                                help="Shape needs a mask; with ground-truth masks present for one class only it would reveal the label.")
        roi = st.selectbox("Region", list(F.ROI_MODES), index=list(F.ROI_MODES).index(d.roi), key="rec.roi",
                           format_func=lambda k: f"{k} — {F.ROI_MODES[k]}")
        preset = st.selectbox("Resegmentation range", presets + ["custom"], index=presets.index(default_preset),
                              key="rec.range", help="Only pixels inside this intensity range count (physical units).")
        if preset == "custom":
            lo = st.number_input("range min", value=-20.0, key="rec.range_min")
            hi = st.number_input("range max", value=150.0, key="rec.range_max")
            rng: tuple[float | None, float | None] = (float(lo), float(hi))
        else:
            rng = F.RANGE_PRESETS[preset]
    with c2:
        fo_bw = st.number_input("First-order bin width (image units)", min_value=0.001, value=float(d.fo_bin_width),
                                key="rec.fo_bw", help="Entropy/uniformity histogram bin width (pyradiomics default 25 for HU).")
        mode = st.radio("GLCM binning", ["count", "width"], horizontal=True, key="rec.glcm_mode",
                        help="Fixed bin count over each region's range, or fixed bin width in image units.")
        if mode == "count":
            bc = st.slider("GLCM grey levels", 8, 256, int(d.glcm_bin_count), step=8, key="rec.glcm_count",
                           help="32–64 levels: ~10× cheaper than 256 and less noisy on small regions.")
            bw = float(d.glcm_bin_width)
        else:
            bw = st.number_input("GLCM bin width (image units)", min_value=0.001, value=float(d.glcm_bin_width), key="rec.glcm_bw")
            bc = int(d.glcm_bin_count)
    with c3:
        dist = st.selectbox("GLCM distances (px)", list(F.DISTANCE_SETS), key="rec.glcm_dist")
        ang = st.selectbox("GLCM angles (°)", list(F.ANGLE_SETS), key="rec.glcm_ang")
        lp = st.slider("LBP neighbours P", 4, 24, int(d.lbp_P), step=4, key="rec.lbp_p")
        lr = st.slider("LBP radius R (px)", 1.0, 5.0, float(d.lbp_R), step=0.5, key="rec.lbp_r")
        hc = st.slider("HOG cell (px)", 4, 64, int(d.hog_cell), step=4, key="rec.hog_cell")
    return F.FeatureSettings(groups=tuple(groups) or ("first_order",), roi=roi, range_min=rng[0], range_max=rng[1],
                             fo_bin_width=float(fo_bw), glcm_bin_mode=mode, glcm_bin_count=int(bc), glcm_bin_width=float(bw),
                             glcm_distances=dist, glcm_angles=ang, lbp_P=int(lp), lbp_R=float(lr), hog_cell=int(hc))


def _task_key(settings: F.FeatureSettings, subset: str) -> str:
    return json.dumps({"op": "features.extract_entry/1", "settings": settings.as_kwargs(), "subset": subset},
                      sort_keys=True, default=str)


def extract(dataset: Dataset, settings: F.FeatureSettings, recs: list[dict], subset: str) -> pd.DataFrame:
    """Feature table of ``recs`` through the batch map (progress bar; cached on content + settings)."""
    task = CallTask(F.extract_entry, tuple(sorted(settings.as_kwargs().items())))
    df = data.run_over_dataset(task, dataset, task_key=_task_key(settings, subset), label="Extracting features",
                               records=recs)
    return df


def features_section(dataset: Dataset) -> pd.DataFrame | None:
    recs, subset = _subset(dataset)
    with st.expander("Feature settings", expanded=False, key="rec.exp_settings"):
        settings = settings_form(_dataset_modality(dataset))
    key = _task_key(settings, subset)
    if st.button(f"Extract features for {len(recs)} images", key="rec.extract", type="primary"):
        st.session_state[K_RUN] = key
    if st.session_state.get(K_RUN) != key:
        cur = st.session_state.get(K_FEATS)
        if cur is not None and cur["key"] == key:
            return cur["df"]
        st.caption("Extracts first-order, texture and (optionally) shape features of every image in parallel; "
                   "cached by file content and settings.")
        return None
    df = extract(dataset, settings, recs, subset)
    st.session_state[K_FEATS] = {"key": key, "df": df, "settings": settings.as_kwargs(), "subset": subset}
    return df


def show_feature_table(df: pd.DataFrame) -> None:
    errs = df[df["error"].astype(str) != ""]
    ok = df[df["error"].astype(str) == ""]
    feats = F.feature_columns(ok)
    st.caption(f"{len(ok)} images × {len(feats)} features; {len(errs)} failed.")
    if len(errs):
        show_errors([{"file": r.get("name", r.get("id")), "reason": r["error"]} for _, r in errs.iterrows()],
                    title="Images whose features could not be computed")
    shown = ok[[c for c in ("id", "name", "label", "subject") if c in ok.columns] + feats]
    st.dataframe(shown.head(500), hide_index=True, width="stretch", height=260)
    export = df.drop(columns=[c for c in df.columns if c in ("_signature",)], errors="ignore")
    st.download_button("Download features (CSV)", export.to_csv(index=False).encode(), file_name="medlens_features.csv",
                       mime="text/csv", key="rec.features_csv")


# ----------------------------------------------------------------------------- bin-width advisor
def bin_advisor(dataset: Dataset, df: pd.DataFrame) -> None:
    ok = df[df["error"].astype(str) == ""]
    if "_range_min" not in ok.columns or ok.empty:
        return
    settings = F.FeatureSettings.from_kwargs(**st.session_state[K_FEATS]["settings"])
    lo, hi = ok["_range_min"].to_numpy(float), ok["_range_max"].to_numpy(float)
    suggested = F.suggest_bin_width(lo, hi)
    st.caption(f"Intensity range inside each image's region: median {np.nanmedian(lo):.4g} … {np.nanmedian(hi):.4g}. "
               f"A bin width of about **{suggested:g}** gives ~64 grey levels on the median image "
               "(pyradiomics advises roughly 30–130 bins).")
    txt = st.text_input("Candidate bin widths (image units)", value=", ".join(f"{w:g}" for w in
                        sorted({suggested / 4, suggested / 2, suggested, suggested * 2, suggested * 4})), key="rec.bw_list")
    try:
        widths = sorted({float(x) for x in txt.replace(";", ",").split(",") if x.strip()})
        widths = [w for w in widths if w > 0]
    except ValueError:
        st.error("Bin widths must be numbers separated by commas.")
        return
    if not widths:
        return
    adv = F.bin_advice(lo, hi, widths)
    st.dataframe(adv, hide_index=True, width="stretch")
    w = st.select_slider("Show bins per image for width", options=widths, value=widths[len(widths) // 2], key="rec.bw_show")
    b = F.bins_per_image(lo[np.isfinite(lo)], hi[np.isfinite(hi)], w)
    counts, edges = np.histogram(b, bins=min(40, max(5, len(np.unique(b)))))
    fig = go.Figure(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, marker_color="#4c78a8",
                           hovertemplate="%{x:.0f} bins: %{y} images<extra></extra>"))
    fig.add_vrect(x0=30, x1=130, fillcolor="#54a24b", opacity=0.12, line_width=0, annotation_text="30–130 bins")
    fig.update_layout(height=240, margin=dict(l=0, r=0, t=24, b=0), xaxis_title="grey levels per image", yaxis_title="images",
                      title=dict(text=f"Bin width {w:g}", font=dict(size=12)))
    st.plotly_chart(fig, width="stretch", key="rec.bw_hist")
    n = min(24, len(ok))
    if st.button(f"Measure how GLCM features move (on {n} images)", key="rec.sens_go"):
        idx = np.linspace(0, len(ok) - 1, n).round().astype(int)
        sub = ok.iloc[idx]
        images, masks = [], []
        by_id = {str(r["id"]): r for r in dataset.records()}
        for eid in sub["id"].astype(str):
            entry = by_id[eid]
            try:
                img = data.load(entry)
            except Exception:  # noqa: BLE001 - skipped images are simply left out of the check
                continue
            plane = img.middle_plane()
            a = plane.grey()
            given = data.load_aux(entry, "mask_path") if settings.roi == "mask" else None
            images.append(a)
            masks.append(F.roi_mask(a, settings, mask=given, spacing=plane.spacing))
        with st.spinner("Computing GLCM at every candidate width…"):
            sens = F.glcm_bin_sensitivity(images, widths, masks=masks, range_min=settings.range_min,
                                          range_max=settings.range_max)
        st.session_state[K_SENS] = {"key": (st.session_state[K_FEATS]["key"], tuple(widths)), "df": sens}
    got = st.session_state.get(K_SENS)
    if got and got["key"] == (st.session_state[K_FEATS]["key"], tuple(widths)):
        sens = got["df"]
        fig = go.Figure()
        for i, feat in enumerate(F.GLCM_PROPS):
            part = sens[sens.feature == feat]
            fig.add_trace(go.Scatter(x=part.bin_width, y=part.rank_corr_vs_finest, mode="lines+markers", name=feat,
                                     line=dict(color=_colour(i))))
        fig.update_layout(height=280, margin=dict(l=0, r=0, t=24, b=0), xaxis_type="log", xaxis_title="bin width",
                          yaxis_title="rank correlation with finest width",
                          title=dict(text="Do coarser bins reorder the images? (1 = no)", font=dict(size=12)))
        st.plotly_chart(fig, width="stretch", key="rec.sens_fig")
        st.dataframe(sens.pivot(index="bin_width", columns="feature", values="median_rel_change").round(3),
                     width="stretch")
        st.caption("Table: median relative change of each GLCM feature versus the finest width.")


# ----------------------------------------------------------------------------- labels
@st.cache_data(show_spinner="Reading labels from DICOM headers…", max_entries=8, ttl=3600)
def _metadata(digest: str, _paths: list[str]) -> list[dict]:
    from analysis.io import read_metadata

    out = []
    for p in _paths:
        try:
            out.append(read_metadata(p))
        except Exception:  # noqa: BLE001 - unreadable header: no label
            out.append({})
    return out


def label_source(dataset: Dataset, df: pd.DataFrame) -> tuple[pd.Series, str]:
    """Labels aligned with ``df`` rows, from the manifest, folder names, a CSV or a safe DICOM tag."""
    from analysis.dataset import entry_path
    from analysis.privacy import SAFE_DICOM_TAGS

    sources = ["dataset label column", "folder names", "CSV (file → label)", "DICOM tag"]
    src = st.radio("Labels from", sources, horizontal=True, key="rec.label_src")
    by_id = {str(r["id"]): r for r in dataset.records()}
    recs = [by_id.get(str(i), {}) for i in df["id"].astype(str)]
    if src == sources[0]:
        labels = [str(r.get("label", "") or "") for r in recs]
    elif src == sources[1]:
        level = st.radio("Folder level", ["top", "parent"], horizontal=True, key="rec.label_level")
        labels = C.labels_from_folders([str(r.get("path", "")) for r in recs], level=level)
    elif src == sources[2]:
        up = st.file_uploader("CSV with a file column and a label column", type=["csv"], key="rec.label_csv")
        if up is None:
            return pd.Series([""] * len(df)), src
        try:
            labels, n = C.labels_from_csv([[str(r.get("name", "")), str(r.get("path", "")), str(r.get("id", ""))] for r in recs],
                                          up.getvalue())
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            st.error(f"Cannot read that CSV: {safe_text(exc)}")
            return pd.Series([""] * len(df)), src
        st.caption(f"{n} of {len(recs)} images matched a row of the CSV.")
    else:
        key = st.selectbox("Tag (non-identifying tags only)", sorted(SAFE_DICOM_TAGS), key="rec.label_tag",
                           index=sorted(SAFE_DICOM_TAGS).index("body_part"))
        paths = [str(entry_path(r)) if r else "" for r in recs]
        metas = _metadata(data.dataset_digest(dataset), paths)
        labels = C.labels_from_metadata(metas, key)
    return pd.Series(labels, index=df.index, dtype=str), src


# ----------------------------------------------------------------------------- training
def model_form() -> tuple[str, dict[str, Any], int, int, bool]:
    c1, c2 = st.columns([1, 2])
    with c1:
        model = st.selectbox("Classifier", list(C.MODELS), index=list(C.MODELS).index(C.DEFAULT_MODEL),
                             format_func=lambda k: C.MODELS[k].title, key="rec.model_key")
        folds = st.slider("Folds", 2, 10, 5, key="rec.folds")
        seed = int(st.number_input("Seed", 0, 10_000, 0, key="rec.seed"))
        ignore_groups = st.checkbox("Ignore subjects (not recommended)", value=False, key="rec.ungrouped",
                                    help="Lets slices of one subject sit in training and test: the warning shows by how much.")
    with c2:
        spec = C.MODELS[model]
        params = {p.name: param_widget(p, f"rec.{model}.{p.name}") for p in spec.params}
        if spec.note:
            st.caption(spec.note)
    return model, params, folds, seed, ignore_groups


def train_section(dataset: Dataset, df: pd.DataFrame) -> None:
    ok = df[df["error"].astype(str) == ""].reset_index(drop=True)
    feats = F.feature_columns(ok)
    if not feats or len(ok) < 4:
        st.info("Extract features for at least four images first.")
        return
    labels, src = label_source(dataset, ok)
    has = labels != ""
    counts = labels[has].value_counts()
    if len(counts) < 2:
        st.warning("At least two classes with labels are needed to train a classifier.")
        return
    st.caption("Classes: " + ", ".join(f"{safe_text(k)} ({v})" for k, v in counts.items())
               + (f" · {int((~has).sum())} unlabelled images left out" if (~has).any() else ""))
    groups = ok["subject"].astype(str) if "subject" in ok.columns else pd.Series([""] * len(ok))
    model, params, folds, seed, ignore_groups = model_form()
    try:
        params = C.MODELS[model].validate(params)
    except ValueError as exc:
        st.error(safe_text(exc))
        return
    sub = ok[has].reset_index(drop=True)
    y = labels[has].to_numpy()
    g = groups[has].to_numpy()
    key = json.dumps([st.session_state[K_FEATS]["key"], src, list(y), model, params, folds, seed, ignore_groups], default=str)
    if st.button("Train and cross-validate", key="rec.train", type="primary"):
        bar = st.progress(0.0, text="Cross-validating…")
        cv = C.cross_validate(sub[feats].to_numpy(float), y, g, model=model, params=params, n_splits=folds, seed=seed,
                              grouped=not ignore_groups, signatures=sub["_signature"].tolist() if "_signature" in sub else None,
                              progress=lambda d, t: bar.progress(d / max(t, 1), text=f"Cross-validating: fold {d} / {t}"))
        bar.progress(1.0, text="Fitting the final model on all images…")
        tm = C.train(sub.assign(_y=y), "_y", feats, model=model, params=params, seed=seed,
                     settings=st.session_state[K_FEATS]["settings"], cv=cv)
        bar.empty()
        st.session_state[K_CV] = {"key": key, "cv": cv, "model": tm, "table": sub, "labels": y, "features": feats}
        st.session_state[K_MODEL] = {"model": tm, "source": f"trained here ({C.MODELS[model].title})"}
    got = st.session_state.get(K_CV)
    if not got:
        return
    if got["key"] != key:
        st.caption("Settings changed since the last training — results below are for the previous settings.")
    cv_results(got)


def cv_results(got: dict[str, Any]) -> None:
    cv: C.CVResult = got["cv"]
    y = got["labels"]
    st.markdown(f"**Validation:** {safe_text(cv.splitter)} — {len(y)} images, {cv.seconds:.1f} s")
    cols = st.columns(4)
    for c, m in zip(cols, C.METRICS):
        mean, sd = cv.summary[m]
        c.metric(m.replace("_", " ").replace("roc auc ovr", "ROC AUC (OvR)"), f"{mean:.3f} ± {sd:.3f}",
                 help="mean ± standard deviation across folds")
    for w in cv.warnings:
        st.warning(safe_text(w, 600), icon="⚠️")
    for i in cv.leaks.infos:
        st.info(safe_text(i, 600))
    with st.expander("Per-fold results", key="rec.exp_folds"):
        st.dataframe(cv.folds.round(3), hide_index=True, width="stretch")
    a, b = st.columns(2)
    with a:
        st.plotly_chart(confusion_figure(cv), width="stretch", key="rec.confusion")
    with b:
        roc, pr = curve_figures(y, cv)
        t1, t2 = st.tabs(["ROC", "Precision–recall"], key="rec.curve_tabs")
        t1.plotly_chart(roc, width="stretch", key="rec.roc")
        t2.plotly_chart(pr, width="stretch", key="rec.pr")
    projection_view(got)
    importance_view(got)
    exports(got)


def confusion_figure(cv: C.CVResult) -> go.Figure:
    cm = cv.confusion
    tot = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, tot, out=np.zeros_like(cm, dtype=float), where=tot > 0)
    text = [[f"{cm[i, j]}<br>{frac[i, j]:.0%}" for j in range(cm.shape[1])] for i in range(cm.shape[0])]
    fig = go.Figure(go.Heatmap(z=frac, x=[f"pred {c}" for c in cv.classes], y=[f"true {c}" for c in cv.classes],
                               text=text, texttemplate="%{text}", colorscale="Blues", zmin=0, zmax=1, showscale=False,
                               hovertemplate="%{y} → %{x}: %{text}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=320, margin=dict(l=0, r=0, t=30, b=0),
                      title=dict(text="Confusion matrix (out-of-fold)", font=dict(size=13)))
    return fig


def curve_figures(y: np.ndarray, cv: C.CVResult) -> tuple[go.Figure, go.Figure]:
    curves = C.roc_pr_curves(y, cv.proba, cv.classes)
    roc, pr = go.Figure(), go.Figure()
    roc.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="#999"), showlegend=False))
    items = list(curves.items())
    if len(cv.classes) == 2 and len(items) == 2:  # both one-vs-rest curves of a binary problem carry the same information:
        bg = C.guess_background(cv.classes)  # show the positive (non-background) class
        items = [it for it in items if it[0] != bg] or items[-1:]
    for i, (c, d) in enumerate(items):
        col = _colour(cv.classes.index(c))
        roc.add_trace(go.Scatter(x=d["fpr"], y=d["tpr"], mode="lines", name=f"{c} (AUC {d['auc']:.3f})", line=dict(color=col)))
        pr.add_trace(go.Scatter(x=d["recall"], y=d["precision"], mode="lines", name=f"{c} (AP {d['ap']:.3f})",
                                line=dict(color=col)))
        pr.add_hline(y=d["prevalence"], line=dict(dash="dot", color=col, width=1))
    roc.update_layout(height=300, margin=dict(l=0, r=0, t=10, b=0), xaxis_title="false positive rate",
                      yaxis_title="true positive rate", legend=dict(x=0.45, y=0.05))
    pr.update_layout(height=300, margin=dict(l=0, r=0, t=10, b=0), xaxis_title="recall", yaxis_title="precision",
                     yaxis_range=[0, 1.02], legend=dict(x=0.02, y=0.05))
    return roc, pr


def _on_pick() -> None:
    ev = st.session_state.get("rec.proj")
    try:
        pts = ev["selection"]["points"] if ev else []
    except (KeyError, TypeError):
        pts = []
    if not pts:
        return
    cd = pts[0].get("customdata")
    eid = cd[0] if isinstance(cd, (list, tuple)) else cd
    if eid:
        picker.choose_image(str(eid))
        st.session_state[K_PICKED] = str(eid)


def projection_view(got: dict[str, Any]) -> None:
    cv: C.CVResult = got["cv"]
    sub: pd.DataFrame = got["table"]
    y = np.asarray(got["labels"])
    method = st.radio("Feature-space projection", ["pca", "tsne"], horizontal=True, key="rec.proj_method",
                      format_func=lambda m: {"pca": "PCA", "tsne": "t-SNE (slower)"}[m])
    P, info = _projection(got["key"], method, sub[got["features"]].to_numpy(float))
    wrong = cv.pred != y
    fig = go.Figure()
    names = sub["name"].astype(str).map(lambda s: plain_name(s, 60)) if "name" in sub else sub["id"].astype(str)
    for i, c in enumerate(cv.classes):
        for miss in (False, True):
            sel = (y == c) & (wrong == miss)
            if not sel.any():
                continue
            fig.add_trace(go.Scatter(
                x=P[sel, 0], y=P[sel, 1], mode="markers",
                name=f"{c}" + (" — misclassified" if miss else ""),
                marker=dict(color=_colour(i), size=12 if miss else 8, symbol="x" if miss else "circle",
                            line=dict(width=2 if miss else 0, color="#000")),
                customdata=np.stack([sub["id"].astype(str)[sel], names[sel], cv.pred[sel]], axis=1),
                hovertemplate="%{customdata[1]}<br>true " + c + ", predicted %{customdata[2]}<extra></extra>",
            ))
    ev = info.get("explained_variance_ratio")
    axis = (lambda k: f"PC{k + 1} ({ev[k]:.0%} of variance)") if ev else (lambda k: f"t-SNE {k + 1}")
    fig.update_layout(height=420, margin=dict(l=0, r=0, t=30, b=0), xaxis_title=axis(0), yaxis_title=axis(1),
                      title=dict(text=f"Feature space ({int(wrong.sum())} misclassified marked ×) — click a point to open it",
                                 font=dict(size=13)), clickmode="event+select")
    st.plotly_chart(fig, width="stretch", key="rec.proj", on_select=_on_pick, selection_mode="points")
    picked = st.session_state.get(K_PICKED)
    if picked:
        st.caption(f"Working image set to **{safe_text(picked)}** (see the Prediction tab).")


def _projection(key: str, method: str, X: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    def make() -> tuple[np.ndarray, dict[str, Any]]:
        with st.spinner("Projecting…"):
            return C.projection(X, method=method)

    return state.memo("rec.proj", (key, method), make, size=2)


def importance_view(got: dict[str, Any]) -> None:
    cv: C.CVResult = got["cv"]
    tm: C.TrainedModel = got["model"]
    with st.expander("Permutation importance (on held-out folds)", key="rec.exp_imp"):
        reps = st.slider("Repeats", 1, 10, 3, key="rec.imp_reps")
        key = (got["key"], reps)
        if st.button("Compute permutation importance", key="rec.imp_go"):
            bar = st.progress(0.0, text="Permuting features on held-out folds…")
            imp = C.permutation_importance_cv(got["table"][got["features"]].to_numpy(float), got["labels"], cv.splits,
                                              got["features"], model=tm.model, params=tm.params, n_repeats=reps,
                                              progress=lambda d, t: bar.progress(d / t, text=f"fold {d} / {t}"))
            bar.empty()
            st.session_state[K_IMP] = {"key": key, "df": imp}
        got_imp = st.session_state.get(K_IMP)
        if got_imp and got_imp["key"] == key:
            top = got_imp["df"].head(20).iloc[::-1]
            fig = go.Figure(go.Bar(x=top.importance_mean, y=top.feature, orientation="h",
                                   error_x=dict(type="data", array=top.importance_std), marker_color="#4c78a8"))
            fig.update_layout(height=max(260, 22 * len(top)), margin=dict(l=0, r=0, t=10, b=0),
                              xaxis_title="drop in balanced accuracy when shuffled")
            st.plotly_chart(fig, width="stretch", key="rec.imp_fig")


def exports(got: dict[str, Any]) -> None:
    cv: C.CVResult = got["cv"]
    tm: C.TrainedModel = got["model"]
    sub: pd.DataFrame = got["table"]
    pred = pd.DataFrame({c: sub[c].to_numpy() for c in ("id", "name", "subject") if c in sub.columns})
    pred["label"] = got["labels"]
    pred["predicted_out_of_fold"] = cv.pred
    pred["fold"] = cv.fold_of + 1
    for j, c in enumerate(cv.classes):
        pred[f"p_{c}"] = cv.proba[:, j]
    a, b = st.columns(2)
    a.download_button("Download out-of-fold predictions (CSV)", pred.to_csv(index=False).encode(),
                      file_name="medlens_predictions_cv.csv", mime="text/csv", key="rec.pred_csv")
    b.download_button("Save model (.skops)", _model_bytes(got["key"], tm), file_name=f"medlens_{tm.model}.skops",
                      mime="application/octet-stream", key="rec.save_model",
                      help="skops format (no pickle), with the feature list, classes, feature settings and CV scores.")


def _model_bytes(key: str, tm: C.TrainedModel) -> bytes:
    return state.memo("rec.model_bytes", (key,), lambda: C.save_model(tm), size=1)


# ----------------------------------------------------------------------------- prediction
def model_picker() -> C.TrainedModel | None:
    up = st.file_uploader("…or load a saved model (.skops)", type=["skops"], key="rec.model_upload",
                          help="Checked for untrusted types before loading; never unpickled.")
    if up is not None:
        sig = (up.name, up.size)
        if st.session_state.get("rec.model_upload_sig") != sig:
            st.session_state["rec.model_upload_sig"] = sig
            try:
                tm = C.load_model(up.getvalue())
            except C.ModelFileError as exc:
                st.session_state["rec.model_upload_error"] = str(exc)
            else:
                st.session_state.pop("rec.model_upload_error", None)
                st.session_state[K_MODEL] = {"model": tm, "source": f"loaded from {plain_name(up.name, 60)}"}
        err = st.session_state.get("rec.model_upload_error")
        if err:
            st.error(f"Model file refused — {safe_text(err, 400)}", icon="🛑")
    cur = st.session_state.get(K_MODEL)
    if not cur:
        st.info("Train a classifier in the **Train & validate** tab, or load a saved model.")
        return None
    tm: C.TrainedModel = cur["model"]
    cvs = tm.cv.get("summary", {}).get("balanced_accuracy")
    st.caption(f"Model: {safe_text(cur['source'])} — classes {', '.join(safe_text(c) for c in tm.classes)}; "
               f"{len(tm.features)} features"
               + (f"; CV balanced accuracy {cvs[0]:.3f} ± {cvs[1]:.3f}" if cvs else ""))
    return tm


def _image_features(entry: dict[str, Any], image: Image, settings: F.FeatureSettings) -> dict[str, Any]:
    def make() -> dict[str, Any]:
        given = None
        if settings.roi == "mask" or "shape" in settings.groups:
            given = data.load_aux(entry, "mask_path")
        return F.features_for_image(image.grey(), settings, spacing=image.spacing, given_mask=given)

    key = (image.digest, json.dumps(settings.as_kwargs(), sort_keys=True, default=str))
    return state.memo("rec.image_feats", key, make, size=8)


def probabilities_figure(classes: list[str], p: np.ndarray, title: str) -> go.Figure:
    fig = go.Figure(go.Bar(x=list(classes), y=p, marker_color=[_colour(i) for i in range(len(classes))],
                           text=[f"{v:.2f}" for v in p], textposition="outside"))
    fig.update_layout(height=260, margin=dict(l=0, r=0, t=30, b=0), yaxis_range=[0, 1.1], yaxis_title="probability",
                      title=dict(text=title, font=dict(size=13)))
    return fig


def structure_mask(entry: dict[str, Any], image: Image, source: str, band: tuple[float, float]) -> np.ndarray | None:
    """The structure to outline: the entry's mask, or the largest region inside an intensity band."""
    from scipy import ndimage as ndi

    if source == "entry mask":
        m = data.load_aux(entry, "mask_path")
        return m if m is not None and m.shape == image.shape2d and m.any() else None
    if source == "intensity band":
        a = ndi.gaussian_filter(image.grey().astype(np.float32), 1.0)
        lab, n = ndi.label((a >= band[0]) & (a <= band[1]))
        if n == 0:
            return None
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        return lab == int(sizes.argmax())
    return None


def annotation_figure(image: Image, window: tuple[float, float], amap: dict[str, Any] | None, opacity: float,
                      structure: np.ndarray | None, structure_label: str) -> go.Figure:
    fig = image_figure(image, window, height=520, uirevision=f"rec.{image.digest[:12]}")
    m, n = image.shape2d
    f = max(1, int(np.ceil(max(m, n) / 512)))
    if amap is not None:
        L = amap["L"]
        small = display.downsample(np.nan_to_num(L, nan=-1.0).astype(np.float32), 512)
        z = np.where(small >= 0, small, np.nan)
        hi = max(amap["label_values"].values()) or 1.0
        fig.add_trace(go.Heatmap(z=z, dx=f, dy=f, x0=(f - 1) / 2, y0=(f - 1) / 2, zmin=0, zmax=hi, colorscale="Turbo",
                                 opacity=opacity, showscale=True, name="annotation map",
                                 colorbar=dict(title="L", thickness=10, len=0.6),
                                 hovertemplate="L = %{z:.2f}<extra>annotation map</extra>"))
    if structure is not None and structure.any():
        from skimage.measure import find_contours

        top = None
        for c in find_contours(np.pad(structure.astype(np.float32), 1), 0.5):
            c = c - 1
            fig.add_trace(go.Scatter(x=c[:, 1], y=c[:, 0], mode="lines", line=dict(color="#00e5ff", width=2),
                                     hoverinfo="skip", showlegend=False, name="structure"))
            k = int(np.argmin(c[:, 0]))
            if top is None or c[k, 0] < top[0]:
                top = (c[k, 0], c[k, 1])
        if top is not None:
            fig.add_annotation(x=top[1], y=top[0], text=html.escape(plain_name(structure_label, 80)), showarrow=True, arrowcolor="#00e5ff",
                               ax=0, ay=-30, font=dict(color="#00e5ff", size=13), bgcolor="rgba(0,0,0,0.6)")
    return fig


def patch_model_section(dataset: Dataset, tm_image: C.TrainedModel) -> C.TrainedModel | None:
    """Train (or reuse) the patch classifier behind the annotation map."""
    got = st.session_state.get(K_CV)
    cur = st.session_state.get(K_PATCH)
    if got is None:
        if cur:
            return cur["model"]
        st.caption("The annotation map needs a patch classifier trained on the labelled images of this session "
                   "(train an image classifier first).")
        return None
    classes = sorted(set(map(str, got["labels"])))
    c1, c2, c3 = st.columns(3)
    patch = c1.slider("Window (px)", 12, 64, 24, step=4, key="rec.patch")
    stride = c2.slider("Map stride (px)", 2, 32, 8, step=2, key="rec.stride")
    bg = c3.selectbox("Background class (l = 0)", classes, index=classes.index(C.guess_background(classes)),
                      key="rec.background",
                      help="Windows outside an image's mask belong to this class; its annotation value is 0.")
    settings = dict(got["model"].settings)
    ps = F.FeatureSettings.from_kwargs(**{**settings, "groups": tuple(g for g in settings.get("groups", ()) if g in ("first_order", "glcm"))
                                          or ("first_order",)})
    key = json.dumps([got["key"], patch, bg, ps.as_kwargs()], default=str)
    if st.button("Train patch classifier for the annotation map", key="rec.patch_go"):
        by_id = {str(r["id"]): r for r in dataset.records()}
        recs = []
        for eid, lab in zip(got["table"]["id"].astype(str), got["labels"]):
            r = dict(by_id[eid])
            r["_label"] = str(lab)
            recs.append(r)
        task = CallTask(C.entry_patches, tuple(sorted({"background": bg, "settings": ps.as_kwargs(), "patch": int(patch),
                                                       "stride": max(4, int(patch) // 2), "max_patches": 16}.items())))
        res = data.run_over_dataset(task, dataset, task_key=key, label="Sampling labelled windows", records=recs)
        frames = []
        for _, row in res.iterrows():
            p = row.get("patches")
            if isinstance(p, pd.DataFrame) and len(p):
                frames.append(p.assign(subject=str(row.get("subject", "") or row.get("id"))))
        if not frames:
            st.error("No labelled windows could be sampled (check the resegmentation range).")
            return None
        table = pd.concat(frames, ignore_index=True)
        with st.spinner(f"Fitting the patch classifier on {len(table)} windows…"):
            ptm = C.train(table, "patch_label", F.feature_columns(table), model=tm_image.model if tm_image.model in C.MODELS else C.DEFAULT_MODEL,
                          params=tm_image.params if tm_image.model in C.MODELS else None, settings=ps.as_kwargs(),
                          kind="patch", extra={"patch": int(patch), "stride": int(stride), "background": bg})
        st.session_state[K_PATCH] = {"key": key, "model": ptm, "n": len(table),
                                     "counts": table["patch_label"].value_counts().to_dict()}
    cur = st.session_state.get(K_PATCH)
    if not cur:
        st.caption("Train the patch classifier to draw the annotation map.")
        return None
    st.caption(f"Patch classifier: {cur['n']} windows ({', '.join(f'{safe_text(k)} {v}' for k, v in cur['counts'].items())})"
               + ("" if cur["key"] == key else " — trained with earlier settings"))
    ptm = cur["model"]
    ptm.extra["stride"] = int(stride)
    return ptm


def predict_section(dataset: Dataset | None) -> None:
    tm = model_picker()
    if tm is None:
        return
    got = data.working_image()
    if got is None:
        return
    entry, image = got
    if image.is_rgb:
        st.caption("Colour image: features use its luminance.")
    settings = F.FeatureSettings.from_kwargs(**tm.settings) if tm.settings else F.FeatureSettings()
    try:
        row = _image_features(entry, image, settings)
        p = tm.proba(pd.DataFrame([row]))[0]
    except ValueError as exc:
        st.error(f"Cannot classify this image: {safe_text(exc)}")
        return
    pred = tm.classes[int(np.argmax(p))]
    left, right = st.columns([1, 2])
    with left:
        st.markdown(f"**{safe_text(entry.get('name', entry.get('id')), 80)}**")
        truth = str(entry.get("label", "") or "")
        st.metric("Predicted", pred, help="Image-level prediction of the model" + (f"; dataset label: {truth}" if truth else ""))
        if truth:
            st.caption(f"Dataset label: {safe_text(truth)}")
        st.plotly_chart(probabilities_figure(tm.classes, p, "Class probabilities"), width="stretch", key="rec.proba")
        a = image.grey()
        window = image.window or display.auto_window(a)
        opacity = st.slider("Annotation opacity", 0.0, 1.0, 0.45, 0.05, key="rec.opacity")
        has_mask = bool(str(entry.get("mask_path", "") or ""))
        sources = (["entry mask"] if has_mask else []) + ["intensity band", "none"]
        src = st.selectbox("Structure to outline", sources, key="rec.structure_src",
                           help="The entry's mask (e.g. a lesion) or the largest region inside an intensity band.")
        band = (60.0, 120.0) if image.units == "HU" else tuple(np.nanpercentile(a, [99.0, 100.0]).tolist())
        if src == "intensity band":
            b1, b2 = st.columns(2)
            band = (b1.number_input("from", value=float(band[0]), key="rec.band_lo"),
                    b2.number_input("to", value=float(band[1]), key="rec.band_hi"))
    ptm = None
    if dataset is not None:
        with right:
            with st.expander("Annotation map settings", expanded=st.session_state.get(K_PATCH) is None, key="rec.exp_map"):
                ptm = patch_model_section(dataset, tm)
    amap = None
    if ptm is not None:
        def make_map() -> dict[str, Any]:
            with st.spinner("Sliding the patch classifier over the image…"):
                return C.annotation_map(image.grey(), ptm, spacing=image.spacing)

        amap = state.memo("rec.amap", (image.digest, id(ptm), ptm.extra.get("stride")), make_map, size=4)
    structure = structure_mask(entry, image, src, band)
    label = pred
    if structure is not None and amap is not None:
        inside = np.nanmean(amap["proba"][:, structure], axis=1)
        if np.isfinite(inside).any():
            j = int(np.nanargmax(inside))
            label = f"{amap['classes'][j]} ({inside[j]:.2f})"
    elif structure is not None:
        label = f"{pred} (image-level {p.max():.2f})"
    with right:
        fig = annotation_figure(image, window, amap, opacity, structure, label)
        st.plotly_chart(fig, width="stretch", key="rec.annot", config={"scrollZoom": True, "displaylogo": False})
        if amap is not None:
            lv = ", ".join(f"{safe_text(c)} = {v:g}" for c, v in amap["label_values"].items())
            st.caption(f"Annotation map L(x, y) = Σ P(c | x, y) · l_c with {lv}; {amap['n_windows']} windows "
                       f"of {ptm.extra.get('patch')} px every {ptm.extra.get('stride')} px (averaged where they overlap; "
                       "blank where a window has < 50 % of its pixels in the resegmentation range).")
    dataset_predictions(dataset, tm)


def dataset_predictions(dataset: Dataset | None, tm: C.TrainedModel) -> None:
    """Predict every image of the current feature table with the active model (CSV)."""
    feats = st.session_state.get(K_FEATS)
    if dataset is None or not feats:
        return
    with st.expander("Predict the whole extracted table", key="rec.exp_predict"):
        if json.dumps(feats["settings"], sort_keys=True, default=str) != json.dumps(tm.settings, sort_keys=True, default=str):
            st.caption("The extracted table used other feature settings than this model; re-extract with the model's settings "
                       "to predict it.")
            return
        df = feats["df"]
        ok = df[df["error"].astype(str) == ""]
        try:
            out = C.predict(tm, ok, id_cols=[c for c in ("id", "name", "subject", "label") if c in ok.columns])
        except ValueError as exc:
            st.error(safe_text(exc))
            return
        st.dataframe(out.head(300), hide_index=True, width="stretch", height=220)
        st.download_button("Download predictions (CSV)", out.to_csv(index=False).encode(), file_name="medlens_predictions.csv",
                           mime="text/csv", key="rec.all_pred_csv")
        st.caption("Images the model was trained on are predicted in-sample here; the honest numbers are the "
                   "out-of-fold predictions of the Train & validate tab.")


# ----------------------------------------------------------------------------- page
def recognition_page() -> None:
    header("Recognition", "Radiomics-style features over the working dataset, a classifier validated by subject, "
                          "and predictions with an annotation map on the working image.")
    dataset = data.working_dataset()
    tabs = st.tabs(["Features", "Train & validate", "Prediction"], key="rec.tabs")
    with tabs[0]:
        if dataset is None or not len(dataset):
            st.info("No working dataset: choose one on the **Home** page.")
            df = None
        else:
            df = features_section(dataset)
            if df is not None:
                show_feature_table(df)
                with st.expander("Bin-width advisor", key="rec.exp_advisor"):
                    bin_advisor(dataset, df)
    with tabs[1]:
        cur = st.session_state.get(K_FEATS)
        if dataset is None or cur is None:
            st.info("Extract features in the **Features** tab first.")
        else:
            train_section(dataset, cur["df"])
    with tabs[2]:
        predict_section(dataset)
