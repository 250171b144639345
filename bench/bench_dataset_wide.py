"""Dataset-wide run speed: the Dask engine against the process pool it replaced (issue #7).

One dataset-wide run of the Enhancement page's default pipeline (its first operation with
default parameters, measured by ``enhancement_measure``) over the sample dataset, through
``batch_map`` as ``ui.data.run_over_dataset`` calls it, with

* ``ProcessEngine`` — the ``forkserver`` process pool (``analysis.batch``), the baseline;
* ``DaskEngine`` as the page gets it (``ui.data.dataset_engine``): a ``LocalCluster`` of
  single-threaded worker processes (``analysis.engine``) with OpenCV/BLAS limited to one thread
  per worker (a worker plugin), like the process pool's workers,

all with one worker per available core. *Cold* is a server's first run (pool / cluster
start-up included: each repeat is a fresh Python process), *warm* the second run in that
process. Repeats alternate the engines; medians are printed with the ratio Dask / process pool.

    python bench/bench_dataset_wide.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import parser, report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("process", "dask")


def _workers() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def child(engine: str) -> dict[str, float]:
    """Cold and warm wall seconds of one dataset-wide run in this (fresh) process."""
    from analysis import dataset as ds
    from analysis import registry
    from analysis.batch import PipelineTask, ProcessEngine, batch_map
    from analysis.engine import DaskEngine
    from analysis.metrics import enhancement_measure

    from ui.data import dataset_engine  # imported here, as in the server (bare mode: no spinner shown)

    op = registry.operations("enhancement", inputs="image")[0]
    task = PipelineTask.make([(op.key, op.defaults())], enhancement_measure)
    recs = ds.load_sample().records()
    out: dict[str, float] = {"n": len(recs), "op": op.key}  # type: ignore[dict-item]
    t = time.perf_counter()
    if engine == "dask":
        eng = dataset_engine(len(recs))  # starts the cluster: part of the cold time
        assert isinstance(eng, DaskEngine) and eng.workers == _workers(), eng
    else:
        eng = ProcessEngine(_workers())
    for run in ("cold", "warm"):
        df = batch_map(task, recs, engine=eng)
        out[run] = time.perf_counter() - t
        if (df["error"] != "").any():
            raise RuntimeError(f"{engine}: {int((df['error'] != '').sum())} images failed")
        t = time.perf_counter()
    out["workers"] = eng.workers
    return out


def _spawn(engine: str) -> dict[str, float]:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", engine], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} run failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=None, help="fresh processes per engine (default 3; --quick 1)")
    ap.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)  # one measurement
    args = ap.parse_args(argv)
    os.environ.setdefault("MEDLENS_HOME", tempfile.mkdtemp(prefix="medlens-bench-home-"))
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    reps = args.repeats or (1 if args.quick else 3)
    runs: dict[str, list[dict[str, float]]] = {e: [] for e in ENGINES}
    for _ in range(reps):
        for e in ENGINES:  # alternated, so machine noise hits both alike
            runs[e].append(_spawn(e))
    first = runs["process"][0]
    print(f"dataset-wide run: {first['op']} + enhancement_measure over {first['n']} sample images, "
          f"{first['workers']} workers (median of {reps}; baseline = process pool)")
    for name, label in (("dask", "Dask (page)"),):
        for kind, what in (("cold", "cold: first run + start-up"), ("warm", "warm: second run")):
            ours = statistics.median(r[kind] for r in runs[name])
            pool = statistics.median(r[kind] for r in runs["process"])
            report(f"{label}, {what}", ours, pool)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
