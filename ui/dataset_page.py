"""Dataset page: catalog the working dataset, then mine it — overview, filters that drive every
chart, distributions, relations, acquisition parameters, embeddings, clusters with the
scanner/site-effect ranking, outliers, duplicates, the medical quality report and exports.

Scale rules (100 000-row catalogs): every count, histogram and correlation is aggregated in
DuckDB; point charts and mining use a repeatable sample of at most :data:`SAMPLE` rows; no
chart ever ships one DOM point per image. Results are cached per session on the catalog's
stamp (file size/mtime) and the filter, so re-renders are cheap and a finished ingest
invalidates them.

The catalog for the sample dataset and server folders is the app's shared catalog; uploads
are catalogued in the session's private folder (never in the shared file).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from analysis import catalog as cat
from ui import data, state
from ui.common import header, plain_name, safe_text, show_errors

P = "ds"
SAMPLE = 3000
TSNE_SAMPLE = 1500
FILTER_COLUMNS = ["modality", "label", "manufacturer", "model", "body_part", "photometric", "format", "role"]
VIEWS = ["Distributions", "Relations", "Acquisition", "Embedding", "Clusters", "Outliers", "Duplicates", "Quality",
         "Export"]
LABELS = {"modality": "Modality", "label": "Class", "manufacturer": "Manufacturer", "model": "Model",
          "body_part": "Body part", "photometric": "Photometric", "format": "Format", "role": "Role"}


def _warm_imports() -> None:
    """Import scikit-learn in the background (≈ 1.5–2.5 s here) so the first mining view is quick."""
    try:
        import sklearn.cluster  # noqa: F401
        import sklearn.decomposition  # noqa: F401
        import sklearn.ensemble  # noqa: F401
        import sklearn.manifold  # noqa: F401
        import sklearn.metrics  # noqa: F401
        import sklearn.neighbors  # noqa: F401
    except Exception:  # noqa: BLE001 - an optimisation only
        pass


threading.Thread(target=_warm_imports, name="medlens-warm-sklearn", daemon=True).start()


# ============================================================================ background ingest
@dataclass
class IngestJob:
    """One ingest running in a background thread (shared by every session of the server)."""

    db: str
    root: str
    kind: str
    done: int = 0
    total: int = 0
    status: str = "running"  # running | done | failed | stopped
    report: Any = None
    error: str = ""
    started: float = field(default_factory=time.time)
    stop: threading.Event = field(default_factory=threading.Event)


_JOBS: dict[str, IngestJob] = {}
_JOBS_LOCK = threading.Lock()


def start_ingest(catalog: cat.Catalog, root: Path, kind: str, *, engine: Any = None) -> IngestJob:
    """Start (or join) the ingest of ``root`` into ``catalog`` in a background thread."""
    key = str(catalog.path)
    with _JOBS_LOCK:
        job = _JOBS.get(key)
        if job is not None and job.status == "running":
            return job
        job = IngestJob(db=key, root=str(root), kind=kind)
        _JOBS[key] = job

    def progress(done: int, total: int) -> None:
        job.done, job.total = done, total

    def run() -> None:
        try:
            job.report = cat.ingest(root, catalog=catalog, progress=progress, kind=kind, engine=engine,
                                    should_stop=job.stop.is_set)
            job.status = "stopped" if job.stop.is_set() else "done"
        except Exception as exc:  # noqa: BLE001 - shown on the page, never crashes the server
            job.error = f"{type(exc).__name__}: {exc}"
            job.status = "failed"

    threading.Thread(target=run, name=f"medlens-ingest-{Path(key).name}", daemon=True).start()
    return job


def job_for(catalog: cat.Catalog) -> IngestJob | None:
    return _JOBS.get(str(catalog.path))


# ============================================================================ which catalog
@dataclass
class Source:
    catalog: cat.Catalog
    root: Path | None
    kind: str
    title: str

    @property
    def root_id(self) -> str | None:
        return cat.root_id_for(self.root) if self.root is not None else None


def current_source() -> Source:
    src = state.get(state.K_SOURCE, "sample")
    if src == "upload":
        d = state.session_dir()
        return Source(cat.Catalog(d / "catalog.duckdb"), d / "uploads", "upload", "your uploads (private catalog)")
    dataset = data.working_dataset()
    root = Path(dataset.root) if dataset is not None else None
    if src == "folder":
        return Source(cat.Catalog(), root, "folder", f"server folder {root.name if root else ''}")
    return Source(cat.Catalog(), root, "sample", "the built-in sample dataset")


# ============================================================================ cached queries
class Q:
    """One read-only connection per rerun, opened on first use, closed at the end of the page."""

    def __init__(self, catalog: cat.Catalog) -> None:
        self.catalog = catalog
        self.stamp = catalog.stamp()
        self._cm = None
        self._con = None

    def con(self) -> Any:
        if self._con is None:
            self._cm = self.catalog.reader()
            self._con = self._cm.__enter__()
        return self._con

    def close(self) -> None:
        if self._cm is not None:
            self._cm.__exit__(None, None, None)
            self._cm = self._con = None


def _cached(name: str, q: Q, flt: cat.Filters | None, args: tuple, make: Callable[[], Any]) -> Any:
    return _cache(name, str(q.catalog.path), q.stamp, flt.key() if flt is not None else "", args, _make=make)


@st.cache_data(show_spinner=False, max_entries=256, ttl=900, scope="session")
def _cache(name: str, db: str, stamp: tuple, fkey: str, args: tuple, _make: Callable[[], Any]) -> Any:
    return _make()


# ============================================================================ page
def dataset_page() -> None:
    header("Dataset", "Catalog the working dataset (DuckDB, incremental), then explore it: filters drive every chart; "
                      "statistics are in physical units (HU for CT).")
    source = current_source()
    _ingest_panel(source)
    if not source.catalog.path.exists():
        st.info("No catalog yet: press **Ingest** above to catalog the working dataset.")
        return
    q = Q(source.catalog)
    try:
        _explore(q, source)
    except cat.CatalogBusy as exc:
        st.warning(f"{exc}. The page refreshes when the ingest finishes.")
    finally:
        q.close()


def _ingest_panel(source: Source) -> None:
    job = job_for(source.catalog)
    running = job is not None and job.status == "running"
    c1, c2 = st.columns([3, 2])
    with c1:
        if source.root is None:
            st.warning("No working dataset: choose one on the **Home** page (sample, uploads or a server folder).")
        else:
            st.caption(f"Working dataset: {safe_text(source.title)} → catalog {safe_text(source.catalog.path.name)}"
                       + (" (private to this session)" if source.kind == "upload" else ""))
    with c2:
        if source.root is not None and not running:
            if st.button("Ingest / update the catalog", key=f"{P}.ingest", type="primary",
                         help="Reads every image once (incremental: unchanged files are skipped; "
                              "a stopped ingest continues where it stopped)."):
                if source.kind == "upload" and not source.root.is_dir():
                    st.error("No uploads yet: upload files on the Home page first.")
                else:
                    start_ingest(source.catalog, source.root, source.kind)
                    running = True
    if running:
        _progress_fragment(str(source.catalog.path))
    elif job is not None and job.root == str(source.root):
        _last_report(job)


@st.fragment(run_every=1.0)
def _progress_fragment(db: str) -> None:
    job = _JOBS.get(db)
    if job is None:
        return
    if job.status == "running":
        frac = job.done / job.total if job.total else 0.0
        st.progress(frac, text=f"Ingesting: {job.done} / {job.total or '…'} files "
                               f"({time.time() - job.started:.0f} s) — the page stays usable")
        if st.button("Stop ingest", key=f"{P}.stop", help="Stops after the current batch; committed rows are kept."):
            job.stop.set()
    else:
        st.rerun(scope="app")


def _last_report(job: IngestJob) -> None:
    if job.status == "failed":
        st.error(f"Ingest failed: {safe_text(job.error, 400)}")
        return
    r = job.report
    if r is None:
        return
    msg = (f"Last ingest: {r.added} added, {r.updated} updated, {r.unchanged + r.touched} unchanged, "
           f"{r.failed} failed, {r.removed} removed in {r.seconds:.1f} s")
    (st.warning if job.status == "stopped" else st.success)(msg + (" (stopped)" if job.status == "stopped" else ""))


# ---------------------------------------------------------------------------- explore
def _explore(q: Q, source: Source) -> None:
    roots = _cached("roots", q, None, (), lambda: cat.roots(q.con()))
    mine = source.root_id
    scope_all = False
    if len(roots) > 1 or (mine is not None and mine not in set(roots["root_id"])):
        if mine is not None and mine not in set(roots["root_id"]):
            st.info("This working dataset is not in the catalog yet: press **Ingest**. Showing every dataset in the catalog.")
            scope_all = True
        else:
            scope_all = st.toggle("Show every dataset in this catalog", key=f"{P}.allroots",
                                  help=f"{len(roots)} datasets are catalogued here.")
    root_ids = [] if scope_all or mine is None else [mine]
    base = cat.Filters(roots=root_ids)
    flt = _filter_panel(q, base)
    _overview(q, base, flt)
    view = st.radio("View", VIEWS, horizontal=True, key=f"{P}.view", label_visibility="collapsed")
    {"Distributions": _distributions, "Relations": _relations, "Acquisition": _acquisition,
     "Embedding": _embedding, "Clusters": _clusters, "Outliers": _outliers, "Duplicates": _duplicates,
     "Quality": _quality, "Export": _export}[view](q, flt)


def _filter_panel(q: Q, base: cat.Filters) -> cat.Filters:
    values: dict[str, list[Any]] = {}
    ranges: dict[str, tuple[float, float]] = {}
    with st.expander("Filters — they drive every chart below", expanded=True):
        cols = st.columns(4)
        for k, col in enumerate(FILTER_COLUMNS):
            opts = _cached("opts", q, base, (col,), lambda col=col: cat.counts_by(q.con(), col, base))
            options = [str(v) for v in opts["value"]]
            if len(options) <= 1:
                continue
            key = f"{P}.f.{col}"
            if key in st.session_state:  # drop stale choices (another dataset)
                st.session_state[key] = [v for v in st.session_state[key] if v in options]
            with cols[k % 4]:
                chosen = st.multiselect(LABELS.get(col, col), options, key=key,
                                        format_func=lambda v, o=opts: f"{plain_name(v, 40)} ({int(o.loc[o.value == v, 'n'].iloc[0])})")
            if chosen:
                values[col] = chosen
        numeric = [c for c in cat.NUMERIC_COLUMNS if c not in ("size_bytes",)]
        picked = st.multiselect("Numeric range filters", numeric, key=f"{P}.f.ranges",
                                help="Pick columns to filter by value range (physical units).")
        if picked:
            rng = _cached("ranges", q, base, tuple(picked), lambda: cat.numeric_ranges(q.con(), picked, base))
            rcols = st.columns(min(3, len(picked)))
            for k, col in enumerate(picked):
                if col not in rng:
                    continue
                lo, hi = rng[col]
                if hi <= lo:
                    continue
                with rcols[k % len(rcols)]:
                    sel = st.slider(col, float(lo), float(hi), (float(lo), float(hi)), key=f"{P}.r.{col}")
                if sel[0] > lo or sel[1] < hi:
                    ranges[col] = (float(sel[0]), float(sel[1]))
    return cat.Filters(values=values, ranges=ranges, roots=base.roots, status="ok")


def _bar(df: pd.DataFrame, title: str, key: str, *, horizontal: bool = False) -> None:
    if df.empty:
        st.caption(f"{title}: nothing")
        return
    x, y = (df["n"], df["value"]) if horizontal else (df["value"], df["n"])
    fig = go.Figure(go.Bar(x=x, y=y, orientation="h" if horizontal else "v", marker_color="#4c78a8",
                           hovertemplate="%{" + ("y" if horizontal else "x") + "}: %{" + ("x" if horizontal else "y") + "}<extra></extra>"))
    fig.update_layout(title=title, height=260, margin=dict(l=10, r=10, t=40, b=10))
    if horizontal:
        fig.update_yaxes(type="category", autorange="reversed")
    else:
        fig.update_xaxes(type="category")
    st.plotly_chart(fig, key=key)


def _overview(q: Q, base: cat.Filters, flt: cat.Filters) -> None:
    stats = _cached("overview", q, flt, (), lambda: q.con().execute(
        "SELECT count(*), count(DISTINCT subject_key), count(DISTINCT series_key), count(DISTINCT modality) "
        "FROM images WHERE " + flt.where()[0], flt.where()[1]).fetchone())
    all_ok = _cached("total", q, base, (), lambda: cat.total(q.con(), base))
    fails = _cached("failures", q, base, (), lambda: cat.failures(q.con(), base.roots))
    m = st.columns(5)
    m[0].metric("Images", f"{stats[0]:,}", help="images matching the filters (catalogued without error)")
    m[1].metric("Of catalogued", f"{all_ok:,}")
    m[2].metric("Subjects", f"{stats[1]:,}", help="distinct pseudonymous subject keys")
    m[3].metric("Series", f"{stats[2]:,}")
    m[4].metric("Failed files", f"{len(fails):,}")
    st.caption(f"{stats[0]:,} of {all_ok:,} images match the filters")
    c = st.columns(3)
    for box, col in zip(c, ("modality", "label", "manufacturer")):
        with box:
            df = _cached("counts", q, flt, (col,), lambda col=col: cat.counts_by(q.con(), col, flt, limit=15))
            _bar(df, f"Images by {LABELS[col].lower()}", f"{P}.ov.{col}", horizontal=True)
    if len(fails):
        with st.expander(f"Failed files ({len(fails)}) and why"):
            show_errors([{"file": r.path, "reason": r.reason} for r in fails.itertuples()], title="Failed files")


# ---------------------------------------------------------------------------- views
def _num_cols() -> list[str]:
    return [c for c in cat.NUMERIC_COLUMNS if c not in ("size_bytes", "n_pixels", "instance_number")]


def _group_options() -> list[str]:
    return ["(none)"] + [c for c in cat.CATEGORICAL_COLUMNS if c != "status"] + ["kvp", "bits_stored"]


def _distributions(q: Q, flt: cat.Filters) -> None:
    c1, c2, c3 = st.columns([2, 2, 1])
    nums = _num_cols()
    col = c1.selectbox("Column", nums, index=nums.index("mean"), key=f"{P}.dist.col")
    grp = c2.selectbox("Group by", _group_options(), index=1, key=f"{P}.dist.group")
    kind = c3.radio("Chart", ["Histogram", "Violin", "Box"], key=f"{P}.dist.kind")
    group = None if grp == "(none)" else grp
    if kind == "Histogram":
        h = _cached("hist", q, flt, (col, group), lambda: cat.histogram(q.con(), col, flt, group=group, bins=40))
        if h.empty:
            st.info("No values for this column under the current filters.")
            return
        fig = go.Figure()
        for g, sub in h.groupby("grp", sort=False):
            fig.add_trace(go.Bar(x=(sub["lo"] + sub["hi"]) / 2, y=sub["n"], width=(sub["hi"] - sub["lo"]).tolist(),
                                 name=plain_name(g, 30), opacity=0.75))
        fig.update_layout(barmode="overlay", height=380, xaxis_title=col, yaxis_title="images",
                          margin=dict(l=10, r=10, t=30, b=10), title=f"{col} by {group or 'all'} (binned in the database)")
    else:
        s = _sample(q, flt, [col] + ([group] if group else []))
        s = s[s[col].notna()]
        if s.empty:
            st.info("No values for this column under the current filters.")
            return
        gser = s[group].astype(object).where(s[group].notna(), cat.MISSING).astype(str) if group else pd.Series("all", index=s.index)
        top = gser.value_counts().index[:10]
        fig = go.Figure()
        for g in top:
            v = s.loc[gser == g, col]
            tr = go.Violin(y=v, name=plain_name(g, 30), box_visible=True, points=False) if kind == "Violin" else \
                go.Box(y=v, name=plain_name(g, 30), boxpoints=False)
            fig.add_trace(tr)
        fig.update_layout(height=380, yaxis_title=col, margin=dict(l=10, r=10, t=30, b=10),
                          title=f"{col} by {group or 'all'} (sample of {len(s):,} images)")
    st.plotly_chart(fig, key=f"{P}.dist.fig")


def _sample(q: Q, flt: cat.Filters, cols: list[str], n: int = SAMPLE) -> pd.DataFrame:
    cols = list(dict.fromkeys(c for c in cols if c))
    return _cached("sample", q, flt, (tuple(cols), n), lambda: cat.sample_rows(q.con(), cols, flt, n=n))


def _relations(q: Q, flt: cat.Filters) -> None:
    nums = _num_cols()
    default = ["mean", "std", "noise_sigma", "sharpness"]
    cols = st.multiselect("Columns (2–5)", nums, default=default, max_selections=5, key=f"{P}.rel.cols")
    colour = st.selectbox("Colour by", _group_options(), index=1, key=f"{P}.rel.colour")
    if len(cols) >= 2:
        s = _sample(q, flt, cols + ([colour] if colour != "(none)" else []), n=2000)
        if s.empty:
            st.info("No images under the current filters.")
        else:
            fig = px.scatter_matrix(s, dimensions=cols, color=None if colour == "(none)" else s[colour].astype(str),
                                    height=560, title=f"Scatter matrix (sample of {len(s):,} images)")
            fig.update_traces(diagonal_visible=False, marker=dict(size=3, opacity=0.6))
            st.plotly_chart(fig, key=f"{P}.rel.matrix")
    heat_cols = st.multiselect("Correlation of", nums, default=[c for c in cat.STAT_COLUMNS if c in nums][:10],
                               key=f"{P}.rel.corr")
    if len(heat_cols) >= 2:
        corr = _cached("corr", q, flt, tuple(heat_cols), lambda: cat.correlation(q.con(), heat_cols, flt))
        fig = go.Figure(go.Heatmap(z=corr.values, x=heat_cols, y=heat_cols, zmin=-1, zmax=1, colorscale="RdBu",
                                   reversescale=True, text=np.round(corr.values, 2), texttemplate="%{text}"))
        fig.update_layout(height=460, title="Pearson correlation (all filtered images, computed in the database)",
                          margin=dict(l=10, r=10, t=40, b=10))
        st.plotly_chart(fig, key=f"{P}.rel.heat")


def _acquisition(q: Q, flt: cat.Filters) -> None:
    items = [("spacing_row_mm", "Pixel spacing (row, mm)"), ("slice_thickness_mm", "Slice thickness (mm)"),
             ("kvp", "Tube voltage (kVp)"), ("bits_stored", "Bits stored"), ("convolution_kernel", "Kernel"),
             ("transfer_syntax", "Transfer syntax")]
    cols = st.columns(2)
    with cols[0]:
        sizes = _cached("sizes", q, flt, (), lambda: cat.matrix_sizes(q.con(), flt))
        _bar(sizes, "Matrix size (rows×cols)", f"{P}.acq.size")
    for k, (col, title) in enumerate(items):
        with cols[(k + 1) % 2]:
            df = _cached("counts", q, flt, (col,), lambda col=col: cat.counts_by(q.con(), col, flt, limit=25))
            _bar(df, title, f"{P}.acq.{col}")


def _thumb_grid(q: Q, keys: list[tuple[str, str]], captions: list[str] | None = None, per_row: int = 8) -> None:
    if not keys:
        return
    thumbs = _cached("thumbs", q, None, tuple(keys), lambda: cat.thumbnails(q.con(), keys))
    cols = st.columns(per_row)
    for k, key in enumerate(keys):
        with cols[k % per_row]:
            png = thumbs.get(key)
            cap = plain_name(captions[k] if captions else Path(key[1]).name, 40)
            if png:
                st.image(png, caption=cap, width="stretch")
            else:
                st.caption(f"{cap} (no thumbnail)")


def _features_ui(prefix: str) -> list[str]:
    return st.multiselect("Features", cat.NUMERIC_COLUMNS, default=cat.FEATURE_COLUMNS, key=f"{P}.{prefix}.feat",
                          help="Statistics in physical units and geometry; standardised (z-scores) before use.")


def _mined(q: Q, flt: cat.Filters, name: str, feats: list[str], extra: list[str], args: tuple,
           fn: Callable[[pd.DataFrame, np.ndarray, list[str]], Any], n: int = SAMPLE) -> tuple[pd.DataFrame, Any]:
    def make() -> tuple[pd.DataFrame, Any]:
        s = cat.sample_rows(q.con(), list(dict.fromkeys(feats + extra)), flt, n=n)
        X, names = cat.feature_matrix(s, feats)
        return s, (fn(s, X, names) if len(s) else None)

    return _cached(name, q, flt, (tuple(feats), tuple(extra), args, n), make)


def _embedding(q: Q, flt: cat.Filters) -> None:
    c1, c2 = st.columns([1, 2])
    method = c1.radio("Method", ["PCA", "t-SNE"], horizontal=True, key=f"{P}.emb.method",
                      help="t-SNE uses a sample of at most 1 500 images (it is O(n log n) per iteration).")
    colour = c2.selectbox("Colour by", _group_options() + _num_cols(), index=_group_options().index("manufacturer"),
                          key=f"{P}.emb.colour")
    feats = _features_ui("emb")
    if len(feats) < 2:
        st.info("Choose at least two features.")
        return
    extra = [] if colour == "(none)" else [colour]
    n = TSNE_SAMPLE if method == "t-SNE" else SAMPLE
    with st.spinner("Embedding…"):
        s, Y = _mined(q, flt, "embed", feats, extra, (method,),
                      lambda s, X, names: cat.embed(X, "tsne" if method == "t-SNE" else "pca", seed=0), n=n)
    if Y is None:
        st.info("No images under the current filters.")
        return
    plot = pd.DataFrame({"x": Y[:, 0], "y": Y[:, 1], "name": s["path"].map(lambda p: plain_name(Path(p).name, 40)),
                         "row": np.arange(len(s))})
    color = None
    if colour != "(none)":
        v = s[colour]
        color = v.astype(str) if not pd.api.types.is_numeric_dtype(v) or colour in cat.CATEGORICAL_COLUMNS else v
    fig = px.scatter(plot, x="x", y="y", color=color, hover_name="name", custom_data=["row"], height=520,
                     title=f"{method} of {len(feats)} features ({len(s):,} images; select points to see them)")
    fig.update_traces(marker=dict(size=5, opacity=0.75))
    fig.update_layout(legend_title_text=colour, margin=dict(l=10, r=10, t=40, b=10))
    ev = st.plotly_chart(fig, key=f"{P}.emb.fig", on_select="rerun", selection_mode=("box", "lasso", "points"))
    picked = _selected_indices(ev, fig)
    if picked:
        rows = s.iloc[picked[:24]]
        st.caption(f"{len(picked)} selected — thumbnails of the first {len(rows)}")
        _thumb_grid(q, list(zip(rows["root_id"], rows["path"])))
    else:
        st.caption("Box- or lasso-select points to see their thumbnails.")


def _selected_indices(event: Any, fig: go.Figure) -> list[int]:
    """Row indices of the selected points (each trace carries its rows' indices as customdata)."""
    try:
        pts = event["selection"]["points"]
    except (KeyError, TypeError):
        return []
    out = []
    for p in pts:
        ci, pi = int(p.get("curve_number", 0)), int(p.get("point_index", p.get("point_number", 0)))
        if ci < len(fig.data) and fig.data[ci].customdata is not None and pi < len(fig.data[ci].customdata):
            out.append(int(fig.data[ci].customdata[pi][0]))
    return list(dict.fromkeys(out))


def _clusters(q: Q, flt: cat.Filters) -> None:
    c1, c2, c3 = st.columns(3)
    method = c1.radio("Method", ["k-means", "DBSCAN"], horizontal=True, key=f"{P}.cl.method")
    if method == "k-means":
        k = c2.slider("Clusters (k)", 2, 12, 3, key=f"{P}.cl.k")
        args: tuple = (method, k)
    else:
        eps = c2.slider("eps (z-score units)", 0.2, 5.0, 1.5, 0.1, key=f"{P}.cl.eps")
        ms = c3.slider("min samples", 2, 30, 5, key=f"{P}.cl.ms")
        args = (method, eps, ms)
    feats = _features_ui("cl")
    if len(feats) < 2:
        st.info("Choose at least two features.")
        return
    tags = [t for t in cat.TAG_COLUMNS]

    def run(s: pd.DataFrame, X: np.ndarray, names: list[str]) -> dict[str, Any]:
        labels = cat.cluster(X, "kmeans" if method == "k-means" else "dbscan", k=args[1],
                             eps=args[1], min_samples=args[-1])
        return {"labels": labels, "ranking": cat.explain_clusters(labels, s, tags)}

    with st.spinner("Clustering…"):
        s, res = _mined(q, flt, "cluster", feats, tags, args, run)
    if res is None:
        st.info("No images under the current filters.")
        return
    labels, ranking = res["labels"], res["ranking"]
    sizes = pd.Series(labels).value_counts().sort_index()
    st.caption(f"{len(s):,} images → " + ", ".join(f"cluster {'noise' if c == -1 else c}: {n}" for c, n in sizes.items()))
    st.markdown("**Which tags explain the clusters** (scanner / site effect detector): adjusted mutual information "
                "between cluster and tag; near 1 = the clusters *are* that tag.")
    if not ranking.empty:
        top = ranking.head(10)
        fig = go.Figure(go.Bar(x=top["adjusted_mi"], y=top["tag"], orientation="h", marker_color="#e45756",
                               customdata=np.c_[top["mutual_information_bits"], top["values"]],
                               hovertemplate="%{y}: AMI %{x:.2f}, MI %{customdata[0]:.2f} bits, %{customdata[1]} values<extra></extra>"))
        fig.update_layout(height=300, xaxis_title="adjusted mutual information", yaxis=dict(autorange="reversed"),
                          margin=dict(l=10, r=10, t=10, b=10))
        st.plotly_chart(fig, key=f"{P}.cl.mi")
        st.dataframe(ranking.round(3), hide_index=True, width="stretch", key=f"{P}.cl.table")
    for c in sizes.index[:8]:
        members = s[labels == c].head(8)
        st.markdown(f"**Cluster {'noise' if c == -1 else c}** — {int(sizes[c])} images")
        _thumb_grid(q, list(zip(members["root_id"], members["path"])))


def _outliers(q: Q, flt: cat.Filters) -> None:
    method = st.radio("Method", ["IsolationForest", "Local outlier factor"], horizontal=True, key=f"{P}.out.method")
    feats = _features_ui("out")
    if len(feats) < 2:
        st.info("Choose at least two features.")
        return
    m = "iforest" if method == "IsolationForest" else "lof"
    with st.spinner("Scoring…"):
        s, res = _mined(q, flt, "outliers", feats, ["modality", "label"], (m,),
                        lambda s, X, names: cat.outliers(X, names, m, seed=0))
    if res is None:
        st.info("No images under the current filters.")
        return
    ranked = pd.concat([s[["root_id", "path", "modality", "label"]].reset_index(drop=True), res], axis=1)
    ranked = ranked.sort_values("score", ascending=False).head(25)
    st.caption(f"Most unusual of {len(s):,} images; *drivers* are the features with the largest |z| for that image.")
    show = ranked.drop(columns=["root_id"]).copy()
    show["path"] = [plain_name(p) for p in show["path"]]
    st.dataframe(show.round(3), hide_index=True, width="stretch", key=f"{P}.out.table")
    top = ranked.head(8)
    _thumb_grid(q, list(zip(top["root_id"], top["path"])), [f"#{k + 1} {Path(p).name}" for k, p in enumerate(top["path"])])


def _duplicates(q: Q, flt: cat.Filters) -> None:
    dist = st.slider("Near-duplicate distance (bits of pHash and dHash)", 0, 8, 4, key=f"{P}.dup.d")

    def make() -> pd.DataFrame:
        where, params = flt.where()
        df = q.con().execute(f"SELECT root_id, path, content_hash, dhash, phash FROM images WHERE {where}", params).df()
        return cat.duplicate_groups(df, max_distance=dist)

    groups = _cached("dups", q, flt, (dist,), make)
    if groups.empty:
        st.success("No exact or near duplicates among the filtered images.")
        return
    n_ex = groups.loc[groups.kind == "exact", "group"].nunique()
    n_near = groups.loc[groups.kind == "near", "group"].nunique()
    st.caption(f"{n_ex} exact group(s) (same file content), {n_near} near group(s) (perceptual hash within {dist} bits)")
    for g, grp in list(groups.groupby("group", sort=True))[:12]:
        st.markdown(f"**Group {g}** — {grp['kind'].iloc[0]}, {len(grp)} images")
        _thumb_grid(q, list(zip(grp["root_id"], grp["path"]))[:8],
                    [f"{Path(p).name} (d={d})" for p, d in zip(grp["path"], grp["distance"])][:8])


def _quality(q: Q, flt: cat.Filters) -> None:
    rep = _cached("quality", q, flt, (), lambda: cat.quality_report(q.con(), flt))
    if rep.empty:
        st.success("No quality findings for the filtered images.")
        return
    summary = rep.groupby(["severity", "rule"]).size().rename("images").reset_index()
    summary["_o"] = summary["severity"].map({"error": 0, "warning": 1, "info": 2})
    summary = summary.sort_values(["_o", "images"], ascending=[True, False]).drop(columns="_o")
    st.dataframe(summary, hide_index=True, width="stretch", key=f"{P}.q.summary")
    sev = st.multiselect("Severity", ["error", "warning", "info"], default=["error", "warning"], key=f"{P}.q.sev")
    rules = st.multiselect("Rules", sorted(rep["rule"].unique()), key=f"{P}.q.rules")
    view = rep[rep["severity"].isin(sev)]
    if rules:
        view = view[view["rule"].isin(rules)]
    show = view.drop(columns=["root_id"]).copy()
    show["path"] = [plain_name(p) for p in show["path"]]
    st.dataframe(show.head(2000), hide_index=True, width="stretch", height=360, key=f"{P}.q.table")


def _export(q: Q, flt: cat.Filters) -> None:
    n = _cached("total", q, flt, (), lambda: cat.total(q.con(), flt))
    st.caption(f"Export the {n:,} filtered images (every column except the thumbnail; pseudonymous keys only).")
    where, params = flt.where()
    out_dir = state.session_dir() / "exports"
    out_dir.mkdir(parents=True, exist_ok=True)
    catalog = q.catalog

    def make(suffix: str) -> Callable[[], bytes]:
        def build() -> bytes:
            path = out_dir / f"catalog{suffix}"
            catalog.export(path, where=where, params=params)
            data_ = path.read_bytes()
            path.unlink(missing_ok=True)
            return data_
        return build

    c1, c2 = st.columns(2)
    c1.download_button("Download CSV", make(".csv"), file_name="medlens_catalog.csv", mime="text/csv",
                       key=f"{P}.exp.csv", on_click="ignore")
    c2.download_button("Download Parquet", make(".parquet"), file_name="medlens_catalog.parquet",
                       mime="application/vnd.apache.parquet", key=f"{P}.exp.pq", on_click="ignore")
