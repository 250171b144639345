"""Dataset page at scale: a 100 000-row catalog, first render and re-filter times.

Measures the page's own query / aggregation / mining functions (``analysis.catalog``) on a
synthetic catalog, against a naive baseline measured in the same run (load the whole table
into pandas and aggregate there), and — with ``--apptest`` — the real page through Streamlit's
AppTest (first render of the Dataset page, then a filter change). Target: ≤ 2 s each.

    python bench/bench_dataset_page.py [--quick] [--rows 100000] [--apptest]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import parser  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def build_catalog(db: Path, n: int, root_id: str, seed: int = 0) -> None:
    """A synthetic catalog with realistic value distributions (and a 1 kB thumbnail per row)."""
    import cv2

    from analysis import catalog as cat

    rng = np.random.default_rng(seed)
    thumbs = []
    for k in range(16):
        g = (np.add.outer(np.arange(64), np.arange(64)) * (k + 1) % 256).astype(np.uint8)
        thumbs.append(cv2.imencode(".png", cv2.GaussianBlur(g, (5, 5), 2))[1].tobytes())
    modality = rng.choice(["CT", "MR", "CR", "PT", "US"], n, p=[0.55, 0.25, 0.1, 0.07, 0.03])
    vendor = rng.choice(["Vendor A", "Vendor B", "Vendor C", "Vendor D", "Vendor E"], n, p=[.35, .3, .2, .1, .05])
    noise = np.where(vendor == "Vendor B", 9.0, 5.0) * rng.lognormal(0, 0.2, n)
    mean = np.where(modality == "CT", -400, 300) + rng.normal(0, 120, n)
    std = np.abs(rng.normal(400, 80, n))
    rows = {
        "root_id": [root_id] * n, "path": [f"site{k % 7}/subj{k // 200:05d}/IM{k:07d}.dcm" for k in range(n)],
        "name": [f"IM{k:07d}.dcm" for k in range(n)], "content_hash": [f"{k:064x}" for k in range(n)],
        "size_bytes": rng.integers(100_000, 600_000, n), "mtime_ns": np.full(n, 1_700_000_000_000_000_000),
        "format": ["dicom"] * n, "status": np.where(rng.random(n) < 0.002, "failed", "ok"),
        "label": rng.choice([f"class{c}" for c in range(10)], n), "role": ["folder"] * n,
        "modality": modality, "manufacturer": vendor, "model": [f"{v} model {k % 3}" for k, v in enumerate(vendor)],
        "body_part": rng.choice(["HEAD", "CHEST", "ABDOMEN", "PELVIS"], n),
        "photometric": np.where(rng.random(n) < 0.03, "MONOCHROME1", "MONOCHROME2"),
        "rows": rng.choice([256, 512, 1024], n, p=[.2, .7, .1]), "cols": rng.choice([256, 512, 1024], n, p=[.2, .7, .1]),
        "frames": np.ones(n, int), "spacing_row_mm": rng.choice([0.5, 0.7, 0.78125, 0.9765625], n),
        "slice_thickness_mm": rng.choice([1.0, 2.5, 5.0], n), "bits_stored": rng.choice([12, 16], n, p=[.3, .7]),
        "kvp": np.where(vendor == "Vendor B", 100.0, 120.0), "window_center": np.full(n, 40.0),
        "window_width": np.full(n, 400.0), "rescale_slope": np.ones(n), "rescale_intercept": np.full(n, -1024.0),
        "subject_key": [f"anon-{k // 200:016x}" for k in range(n)], "study_key": [f"anon-{k // 100:016x}" for k in range(n)],
        "series_key": [f"anon-{k // 50:016x}" for k in range(n)], "n_pixels": np.full(n, 262144),
        "min_value": mean - 3 * std, "max_value": mean + 3 * std, "mean": mean, "std": std,
        "p01": mean - 2.3 * std, "p05": mean - 1.6 * std, "p25": mean - 0.67 * std, "p50": mean,
        "p75": mean + 0.67 * std, "p95": mean + 1.6 * std, "p99": mean + 2.3 * std,
        "entropy": rng.normal(6, 0.5, n), "sharpness": rng.lognormal(8, 0.5, n), "noise_sigma": noise,
        "snr": std / noise, "background_fraction": rng.uniform(0.2, 0.7, n), "subair_fraction": np.zeros(n),
        "dhash": rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64),
        "phash": rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64),
        "thumb": [thumbs[k % 16] for k in range(n)], "units": np.where(modality == "CT", "HU", "a.u."),
        "transfer_syntax": ["Explicit VR Little Endian"] * n, "ingested_at": np.full(n, time.time()),
    }
    c = cat.Catalog(db)
    with c.writer() as w:
        w.check_salt(cat.load_salt())
        w.register_root(root_id, "bench", "folder")
        step = 20000
        for k in range(0, n, step):
            batch = [{col: (v[i].item() if hasattr(v[i], "item") else v[i]) for col, v in rows.items()}
                     for i in range(k, min(n, k + step))]
            w.upsert(batch, replace=False)
        w.finish_root(root_id)


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def page_queries(db: Path, root_id: str, flt_values: dict, flt_ranges: dict, *, first: bool) -> dict[str, float]:
    """What the page computes on a render (default view), on a fresh read-only connection."""
    from analysis import catalog as cat

    times: dict[str, float] = {}
    c = cat.Catalog(db)
    t0 = time.perf_counter()
    with c.reader() as con:
        base = cat.Filters(roots=[root_id])
        flt = cat.Filters(values=flt_values, ranges=flt_ranges, roots=[root_id])
        if first:
            times["roots"] = _timed(lambda: cat.roots(con))
            times["filter options (8 columns)"] = _timed(
                lambda: [cat.counts_by(con, col, base) for col in
                         ("modality", "label", "manufacturer", "model", "body_part", "photometric", "format", "role")])
            times["totals + failures"] = _timed(lambda: (cat.total(con, base), cat.failures(con, [root_id])))
        w, p = flt.where()
        times["overview metrics"] = _timed(lambda: con.execute(
            "SELECT count(*), count(DISTINCT subject_key), count(DISTINCT series_key), count(DISTINCT modality) "
            "FROM images WHERE " + w, p).fetchone())
        times["3 count charts"] = _timed(lambda: [cat.counts_by(con, col, flt, limit=15)
                                                  for col in ("modality", "label", "manufacturer")])
        times["histogram (40 bins × modality)"] = _timed(lambda: cat.histogram(con, "mean", flt, group="modality"))
    times["total"] = time.perf_counter() - t0
    return times


def other_views(db: Path, root_id: str, flt_values: dict) -> dict[str, float]:
    from analysis import catalog as cat

    out: dict[str, float] = {}
    flt = cat.Filters(values=flt_values, roots=[root_id])
    with cat.Catalog(db).reader() as con:
        out["relations: sample 2000 + correlation 10×10"] = _timed(lambda: (
            cat.sample_rows(con, ["mean", "std", "noise_sigma", "sharpness", "modality"], flt, n=2000),
            cat.correlation(con, cat.STAT_COLUMNS[:10], flt)))
        out["acquisition: 7 count charts"] = _timed(lambda: [cat.counts_by(con, col, flt) for col in (
            "spacing_row_mm", "slice_thickness_mm", "kvp", "bits_stored", "convolution_kernel", "transfer_syntax")]
            + [cat.matrix_sizes(con, flt)])

        def mine(kind: str) -> None:
            s = cat.sample_rows(con, cat.FEATURE_COLUMNS + cat.TAG_COLUMNS, flt, n=3000)
            X, names = cat.feature_matrix(s, cat.FEATURE_COLUMNS)
            if kind == "pca":
                cat.embed(X, "pca")
            elif kind == "kmeans":
                labels = cat.cluster(X, "kmeans", k=4)
                cat.explain_clusters(labels, s)
            elif kind == "iforest":
                cat.outliers(X, names, "iforest")

        out["embedding: PCA of 3000 sampled"] = _timed(lambda: mine("pca"))
        out["clusters: k-means + tag MI ranking (3000)"] = _timed(lambda: mine("kmeans"))
        out["outliers: IsolationForest (3000)"] = _timed(lambda: mine("iforest"))

        def dups() -> None:
            w, p = flt.where()
            df = con.execute(f"SELECT root_id, path, content_hash, dhash, phash FROM images WHERE {w}", p).df()
            cat.duplicate_groups(df)

        out["duplicates: all filtered rows"] = _timed(dups)
        out["quality report: all filtered rows"] = _timed(lambda: cat.quality_report(con, flt))
    return out


def naive(db: Path) -> float:
    """Baseline: load the table (no thumbnails) into pandas and aggregate there."""
    import duckdb

    def run() -> None:
        con = duckdb.connect(str(db), read_only=True)
        df = con.execute("SELECT * EXCLUDE (thumb) FROM images").df()
        con.close()
        ok = df[df.status == "ok"]
        for col in ("modality", "label", "manufacturer"):
            ok[col].value_counts()
        ok.groupby("modality")["mean"].apply(lambda s: np.histogram(s.dropna(), 40))

    return _timed(run)


def apptest(home: Path, expect_rows: int) -> list[tuple[float, float]]:
    """(first render, re-filter) of the Dataset page for two sessions: the first on a cold
    server (imports included), the second a new session on the warm server."""
    os.environ["MEDLENS_HOME"] = str(home)
    from streamlit.testing.v1 import AppTest

    out = []
    for _ in range(2):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
        at.run()
        t = time.perf_counter()
        at.switch_page("pages/dataset.py").run()
        first = time.perf_counter() - t
        assert not at.exception, at.exception
        shown = next(m for m in at.metric if m.label == "Of catalogued").value
        assert int(str(shown).replace(",", "")) > 0.99 * expect_rows, shown  # the big catalog is on screen
        t = time.perf_counter()
        at.multiselect(key="ds.f.modality").select("CT").run()
        refilter = time.perf_counter() - t
        assert not at.exception, at.exception
        out.append((first, refilter))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--apptest", action="store_true", help="also time the real page through AppTest")
    args = ap.parse_args(argv)
    n = args.rows or (30_000 if args.quick else 100_000)
    home = Path(tempfile.mkdtemp(prefix="medlens-bench-page-"))
    os.environ["MEDLENS_HOME"] = str(home)
    from analysis import catalog as cat
    from analysis.dataset import sample_manifest_path

    root_id = cat.root_id_for(sample_manifest_path().parent)  # the page shows the sample's rows
    db = home / "catalog.duckdb"
    t = time.perf_counter()
    build_catalog(db, n, root_id)
    print(f"built a {n:,}-row catalog in {time.perf_counter() - t:.1f} s ({db.stat().st_size / 2**20:.0f} MiB)")
    filt = ({"modality": ["CT"], "manufacturer": ["Vendor A", "Vendor B"]}, {"noise_sigma": (0.0, 7.0)})
    reps = 3 if args.quick else 5
    firsts = [page_queries(db, root_id, {}, {}, first=True) for _ in range(reps)]
    refs = [page_queries(db, root_id, *filt, first=False) for _ in range(reps)]
    base = statistics.median(naive(db) for _ in range(max(2, reps // 2)))
    print(f"\npage queries on {n:,} rows (median of {reps}; fresh read-only connection each render):")
    for k in firsts[0]:
        print(f"  first render  {k:<40} {1000 * statistics.median(f[k] for f in firsts):8.1f} ms")
    for k in refs[0]:
        print(f"  re-filter     {k:<40} {1000 * statistics.median(f[k] for f in refs):8.1f} ms")
    fr = statistics.median(f["total"] for f in firsts)
    rf = statistics.median(f["total"] for f in refs)
    print(f"  first render {fr:.3f} s, re-filter {rf:.3f} s  (target ≤ 2 s each)")
    print(f"  naive pandas baseline (load table + aggregate): {base:.3f} s → page first render is "
          f"{fr / base:.2f}× of it, re-filter {rf / base:.2f}×")
    print("\nother views (computed only when opened):")
    for k, v in other_views(db, root_id, filt[0]).items():
        print(f"  {k:<48} {1000 * v:8.1f} ms")
    if args.apptest:
        (f1, r1), (f2, r2) = apptest(home, n)
        print(f"\nAppTest (real page, Streamlit included; target ≤ 2 s):\n"
              f"  cold server (imports included): first render {f1:.2f} s, re-filter {r1:.2f} s\n"
              f"  new session on a warm server:   first render {f2:.2f} s, re-filter {r2:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
