"""``medlens`` command line: build and inspect the dataset catalog.

::

    medlens ingest PATH [--db FILE] [--scheduler ADDRESS] [--workers N] [--engine dask|process|serial]
    medlens export OUT.parquet|OUT.csv [--db FILE]
    medlens quality [--db FILE]
    medlens summary [--db FILE]

``ingest`` shows a progress bar (tqdm, on stderr) and prints one ``file: reason`` line per
file that could not be catalogued; re-running it on an unchanged folder adds nothing; a
killed run keeps every committed batch and the next run continues. The Dask scheduler can
also come from ``$MEDLENS_DASK_SCHEDULER``. Also runnable as ``python -m analysis.cli``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # `python analysis/cli.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _engine(args: argparse.Namespace, n_items: int):  # type: ignore[no-untyped-def]
    from analysis.batch import ProcessEngine, SerialEngine
    from analysis.engine import DaskEngine, default_engine

    if args.scheduler:
        return DaskEngine(scheduler=args.scheduler)
    if args.engine == "serial":
        return SerialEngine()
    if args.engine == "process":
        return ProcessEngine(args.workers)
    if args.engine == "dask":
        return DaskEngine(args.workers)
    return default_engine(n_items, args.workers)


def _plain(s: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in str(s))


def cmd_ingest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from analysis import catalog as cat
    from analysis.kernels import enable_compiled

    enable_compiled()  # a batch job: also when it runs in this process (--engine serial)

    root = Path(args.path).expanduser()
    if not root.is_dir():
        print(f"medlens: not a folder: {_plain(args.path)}", file=sys.stderr)
        return 2
    catalog = cat.Catalog(args.db) if args.db else cat.Catalog()
    bar = tqdm(total=0, unit="file", desc="ingest", file=sys.stderr, dynamic_ncols=True,
               disable=args.quiet or None)
    state = {"engine": None}

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done - bar.n)

    def on_error(path: str, reason: str) -> None:
        bar.write(f"{_plain(path)}: {_plain(reason)}", file=sys.stdout)

    class _LazyEngine:
        """Chooses the engine once the number of files to process is known."""

        workers = max(1, args.workers or len(os.sched_getaffinity(0)))

        def map_chunks(self, func, chunks, on_chunk):  # type: ignore[no-untyped-def]
            chunks = list(chunks)
            eng = _engine(args, sum(len(c) for c in chunks))
            state["engine"] = eng
            eng.map_chunks(func, chunks, on_chunk)

    try:
        report = cat.ingest(root, catalog=catalog, engine=_LazyEngine(), batch_size=args.batch,
                            progress=progress, on_error=on_error, kind="folder")
    except cat.CatalogBusy as exc:
        bar.close()
        print(f"medlens: {exc}", file=sys.stderr)
        return 3
    except ValueError as exc:
        bar.close()
        print(f"medlens: {exc}", file=sys.stderr)
        return 2
    bar.close()
    eng = state["engine"]
    name = type(eng).__name__ if eng is not None else "none"
    rate = report.total / report.seconds if report.seconds else 0.0
    print(f"catalog {catalog.path}: {report.added} added, {report.updated} updated, {report.touched} touched, "
          f"{report.unchanged} unchanged, {report.failed} failed, {report.removed} removed "
          f"({report.total} files processed in {report.seconds:.1f} s, {rate:.0f} files/s, engine {name})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from analysis import catalog as cat

    c = cat.Catalog(args.db) if args.db else cat.Catalog()
    out = Path(args.out)
    if out.suffix.lower() not in (".parquet", ".csv"):
        print("medlens: export to a .parquet or .csv file", file=sys.stderr)
        return 2
    c.export(out)
    print(f"wrote {out}")
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    from analysis import catalog as cat

    c = cat.Catalog(args.db) if args.db else cat.Catalog()
    with c.reader() as con:
        rep = cat.quality_report(con)
    if rep.empty:
        print("no quality findings")
        return 0
    for (rule, sev), grp in rep.groupby(["rule", "severity"], sort=False):
        print(f"[{sev}] {rule}: {len(grp)} image(s) — {grp['detail'].iloc[0]}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from analysis import catalog as cat

    c = cat.Catalog(args.db) if args.db else cat.Catalog()
    with c.reader() as con:
        df = con.execute("SELECT status, coalesce(modality, '?') AS modality, count(*) AS n FROM images "
                         "GROUP BY ALL ORDER BY n DESC").df()
    print(df.to_string(index=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="medlens", description="MedLens dataset catalog")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ingest", help="catalogue every image under PATH (incremental, resumable)")
    p.add_argument("path")
    p.add_argument("--db", help="catalog file (default: the app folder's catalog.duckdb)")
    p.add_argument("--scheduler", default=os.environ.get("MEDLENS_DASK_SCHEDULER") or None,
                   help="address of an existing Dask scheduler, e.g. tcp://host:8786 (default: $MEDLENS_DASK_SCHEDULER)")
    p.add_argument("--workers", type=int, default=None, help="local worker processes (default: available cores)")
    p.add_argument("--engine", choices=["auto", "dask", "process", "serial"], default="auto",
                   help="auto: serial for small folders, else a local Dask cluster")
    p.add_argument("--batch", type=int, default=None, help="files per task and per commit (default 64)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_ingest)
    p = sub.add_parser("export", help="write the catalog (without thumbnails) to Parquet or CSV")
    p.add_argument("out")
    p.add_argument("--db")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("quality", help="medical-aware quality report")
    p.add_argument("--db")
    p.set_defaults(func=cmd_quality)
    p = sub.add_parser("summary", help="counts by status and modality")
    p.add_argument("--db")
    p.set_defaults(func=cmd_summary)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    import logging

    args = build_parser().parse_args(list(argv) if argv is not None else None)
    logging.getLogger("distributed").setLevel(logging.WARNING)  # the progress bar says what matters
    try:
        return int(args.func(args))
    except FileNotFoundError as exc:
        print(f"medlens: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medlens: interrupted — committed batches are kept; run the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
