"""Catalog ingest speed and memory, as ratios measured in one run.

1. Throughput per core: ``medlens`` ingest (metadata + statistics + thumbnail + hashes + DuckDB
   writes) through a one-worker Dask cluster, against a bare loop of
   ``pydicom.dcmread(f).pixel_array`` over the same files (target ≥ 0.8×), for uncompressed,
   RLE Lossless and JPEG 2000 Lossless files. "Per core" compares CPU seconds of the whole
   process tree (robust on a shared machine); wall-clock ratios are printed too.
   The bare loop runs in a fresh process of its own, as a user's script would: its speed
   depends on the process' heap (glibc's allocator page-faults every new 512 KiB array in
   again after a trim — measured 1.1 vs 0.57 ms a file), so it is not run in this long-lived
   process. MedLens' workers set the allocator themselves (``catalog._tune_malloc``); the
   bare loop with those same settings is printed too, as the stricter comparison.
2. Scale-out: two workers against one (target ≥ 1.7×).
3. Memory: peak RSS of the whole process tree (CLI, scheduler, workers) ingesting 10× more
   files (2 000 → 20 000 files; ``--quick``: 1 000 → 5 000) (target ≤ 1.2×).

Runs are interleaved (bare, 1 worker, 2 workers, …) and medians reported, because these
machines are shared and noisy; the in-process ingest is measured after them (see ``throughput``).
The ceiling for scale-out on the machine itself is printed too: the bare pydicom loop in
2 processes against 1. Generated files go to a temporary folder (``--dir`` to choose).

    python bench/bench_ingest.py [--quick] [--dir /tmp/medlens-bench] [--skip-rss]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import parser  # noqa: E402
from bench.gen_large import generate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _cpu_tree() -> float:
    """CPU seconds (user + system) used so far by this process and all its live descendants
    (Dask scheduler threads, nannies, workers)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for p in [me] + me.children(recursive=True):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _measure(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(wall seconds, CPU seconds of the process tree) of ``fn()``."""
    c0, t0 = _cpu_tree(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, _cpu_tree() - c0


def _bare(files: list[Path]) -> None:
    import pydicom

    for f in files:
        pydicom.dcmread(f).pixel_array


def _bare_chunk(files: list[str]) -> int:
    _bare([Path(f) for f in files])
    return len(files)


def _tuned_init() -> None:
    """Pool initializer: the allocator settings MedLens' ingest workers use."""
    from analysis.catalog import _tune_malloc

    _tune_malloc()


def _bare_pool(pool, files: list[Path], procs: int) -> None:  # type: ignore[no-untyped-def]
    """The bare loop split over ``procs`` processes: the machine's own scale-out ceiling."""
    chunks = [[str(f) for f in files[i::4 * procs]] for i in range(4 * procs)]
    assert sum(pool.map(_bare_chunk, chunks)) == len(files)


def _ours(folder: Path, engine, work: Path) -> None:  # type: ignore[no-untyped-def]
    from analysis import catalog as cat

    db = work / f"t{time.perf_counter_ns()}.duckdb"
    rep = cat.ingest(folder, catalog=db, engine=engine, batch_size=64)
    assert rep.added > 0 and rep.failed == 0, rep.errors[:3]
    for p in work.glob(db.name + "*"):
        p.unlink()


def throughput(work: Path, n: int, repeats: int, syntax: str = "native") -> dict[str, float]:
    from analysis.batch import SerialEngine
    from analysis.engine import DaskEngine

    shutil.rmtree(work / f"tp_{syntax}", ignore_errors=True)  # exactly n files, also in a reused --dir
    folder = generate(work / f"tp_{syntax}", n, size=512, seed=1, progress=False, syntax=syntax)
    files = sorted(folder.rglob("*.dcm"))
    for f in files:  # warm the page cache for everybody
        f.read_bytes()
    one, two = DaskEngine(workers=1), DaskEngine(workers=2)
    for eng in (one, two):  # start the clusters and import everything in the workers
        _ours(folder, eng, work)
    from multiprocessing import get_context

    ctx = get_context("forkserver")  # fresh interpreters, not forks of this process' heap
    pools = {1: ctx.Pool(1), 2: ctx.Pool(2), "t1": ctx.Pool(1, initializer=_tuned_init)}
    for k, pool in pools.items():
        _bare_pool(pool, files[:50], 1 if k == "t1" else k)  # start and import
    jobs = {"bare_p1": lambda: _bare_pool(pools[1], files, 1), "dask1": lambda: _ours(folder, one, work),
            "dask2": lambda: _ours(folder, two, work), "bare_p2": lambda: _bare_pool(pools[2], files, 2),
            "bare_t1": lambda: _bare_pool(pools["t1"], files, 1)}
    wall: dict[str, list[float]] = {k: [] for k in jobs}
    cpu: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(repeats):
        for k, fn in jobs.items():
            w, c = _measure(fn)
            wall[k].append(w)
            cpu[k].append(c)
    # In-process ingest last, on its own: it leaves this process' heap and GC state larger, which
    # measurably slowed the Dask runs' client side (~10 % on the 2-worker wall time) when interleaved.
    from analysis.kernels import enable_compiled

    enable_compiled()  # as `medlens ingest --engine serial` does (the web server's process does not)
    jobs["serial"] = lambda: _ours(folder, SerialEngine(), work)
    wall["serial"], cpu["serial"] = [], []
    for _ in range(repeats):
        w, c = _measure(jobs["serial"])
        wall["serial"].append(w)
        cpu["serial"].append(c)
    for pool in pools.values():
        pool.close()
    nf = len(files)
    one_file = work / f"one_{syntax}"
    one_file.mkdir(exist_ok=True)
    if not any(one_file.iterdir()):
        os.link(files[0], one_file / files[0].name)
    fixed = statistics.median(_measure(lambda: _ours(one_file, one, work))[0] for _ in range(5))
    mw = {k: statistics.median(v) for k, v in wall.items()}
    mc = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"\nthroughput, {nf} CT files 512² int16 ({syntax}), median of {repeats} interleaved runs "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores):")
    print(f"  {'':<8} {'wall ms/file':>13} {'CPU ms/file':>12}   (CPU = this process + scheduler + workers)")
    for k in jobs:
        print(f"  {k:<8} {1000 * mw[k] / nf:13.2f} {1000 * mc[k] / nf:12.2f}")
    per_core = mc["bare_p1"] / mc["dask1"]
    per_core_tuned = mc["bare_t1"] / mc["dask1"]
    per_core_serial = mc["bare_p1"] / mc["serial"]
    scale = mw["dask1"] / mw["dask2"]
    print("  bare_p1 / bare_p2: the bare loop in 1 / 2 fresh processes; bare_t1: 1 process with MedLens' allocator settings")
    print(f"  ingest (1 Dask worker) / bare pydicom, per core (CPU)   {per_core:5.2f}×  (target ≥ 0.8)")
    print(f"  ingest (in-process)    / bare pydicom, per core (CPU)   {per_core_serial:5.2f}×")
    print(f"  ingest (1 Dask worker) / bare pydicom with the same allocator settings (CPU)   {per_core_tuned:5.2f}×")
    print(f"  ingest wall time, 1 worker / bare pydicom               {mw['bare_p1'] / mw['dask1']:5.2f}×")
    print(f"  2 workers / 1 worker (wall)                             {scale:5.2f}×  (target ≥ 1.7)")
    ceiling = mw["bare_p1"] / mw["bare_p2"]
    print(f"  machine ceiling: bare pydicom, 2 processes / 1 (wall)   {ceiling:5.2f}×")
    print(f"  (each run also pays a fixed {1000 * fixed:.0f} ms — creating and closing the catalog, first dispatch — "
          f"measured on a 1-file folder; {100 * fixed / mw['dask2']:.0f} % of a 2-worker run here)")
    return {"per_core": per_core, "per_core_tuned": per_core_tuned, "scale2": scale, "serial": per_core_serial,
            "ceiling": ceiling}


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p] + p.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def peak_rss(folder: Path, work: Path) -> tuple[int, float]:
    db = work / "rss.duckdb"
    for p in work.glob("rss.duckdb*"):
        p.unlink()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "analysis.cli", "ingest", str(folder), "--db", str(db), "--engine", "dask",
           "--workers", "2", "--quiet"]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.05)

    th = threading.Thread(target=sample)
    th.start()
    out, err = proc.communicate()
    stop.set()
    th.join()
    if proc.returncode != 0:
        raise RuntimeError(err[-2000:])
    return peak, time.perf_counter() - t


def memory(work: Path, small: int, large: int) -> float:
    shutil.rmtree(work / "rss", ignore_errors=True)
    big = generate(work / "rss", large, size=256, seed=2, progress=True)
    files = sorted(big.rglob("*.dcm"))
    sub = work / "rss_small"
    shutil.rmtree(sub, ignore_errors=True)  # a --dir reused from a run of another size
    for f in files[:small]:
        dst = sub / f.relative_to(big)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.link(f, dst)
    p_small, t_small = peak_rss(sub, work)
    p_large, t_large = peak_rss(big, work)
    ratio = p_large / p_small
    print(f"\npeak RSS of the process tree (CLI + scheduler + 2 workers), 256² CT files:")
    print(f"  {small:>6} files: {p_small / 2**20:7.0f} MiB  ({t_small:.1f} s)")
    print(f"  {large:>6} files: {p_large / 2**20:7.0f} MiB  ({t_large:.1f} s)")
    print(f"  ratio {ratio:5.2f}×  (target ≤ 1.2)")
    return ratio


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__.split("\n\n")[0])
    ap.add_argument("--dir", help="work folder for generated files (default: a temporary folder)")
    ap.add_argument("--skip-rss", action="store_true", help="throughput only")
    ap.add_argument("--rss-only", action="store_true", help="memory only")
    args = ap.parse_args(argv)
    os.environ.setdefault("MEDLENS_HOME", tempfile.mkdtemp(prefix="medlens-bench-home-"))
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="medlens-bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        # enough files that a run lasts ≥ 1 s: the per-run costs (cluster dispatch, opening and
        # checkpointing the catalog, the last task's tail) are not what "throughput" measures
        n, repeats = (4000, 3) if args.quick else (8000, 5)
        if not args.rss_only:
            throughput(work, n, repeats, "native")
            throughput(work, n // 2, repeats, "rle")
            throughput(work, n // 20, repeats, "j2k")
        if not args.skip_rss:
            small, large = (1000, 5000) if args.quick else (2000, 20000)
            memory(work, small, large)
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
