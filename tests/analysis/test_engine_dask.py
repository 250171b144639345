"""Dask engine: a real `dask scheduler` + `dask worker` on loopback (subprocesses) ingest the
same rows as the serial engine; the local cluster path; batching; MALLOC_TRIM_THRESHOLD_."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import catalog as cat
from analysis.batch import SerialEngine, batch_map
from analysis.engine import DaskEngine, default_engine
from tests.helpers.dicom import ct_dicom
from tests.helpers.server import free_port

ROOT = Path(__file__).resolve().parents[2]
DASK = Path(sys.executable).with_name("dask")


def _folder(root: Path, n: int) -> Path:
    rng = np.random.default_rng(11)
    rr, cc = np.mgrid[:48, :48]
    disk = (rr - 24) ** 2 + (cc - 24) ** 2 < 18 ** 2
    for g in range(3):
        (root / f"g{g}").mkdir(parents=True, exist_ok=True)
    for k in range(n):
        hu = np.where(disk, 20.0 + k, -1000.0) + rng.normal(0, 5, disk.shape)
        ct_dicom(root / f"g{k % 3}" / f"im{k:03d}.dcm", hu=hu)
    (root / "g0" / "bad.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    return root


def _table(db: Path) -> pd.DataFrame:
    with cat.Catalog(db).reader() as con:
        return con.execute("SELECT * EXCLUDE (thumb, ingested_at, root_id) FROM images ORDER BY path").df()


@pytest.fixture
def loopback_cluster(tmp_path):
    """A scheduler and one 2-process worker on 127.0.0.1, as separate OS processes."""
    assert DASK.exists(), "the `dask` CLI comes with dask[distributed], a dependency"
    port = free_port()
    # unset Dask's malloc trim threshold in the workers (see the performance guide): a config file,
    # as an operator of an existing cluster would do (environment keys are lower-cased by Dask)
    conf = tmp_path / "dask.yaml"
    conf.write_text("distributed:\n  nanny:\n    pre-spawn-environ:\n      MALLOC_TRIM_THRESHOLD_: null\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "DASK_CONFIG": str(conf)}
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    log = open(tmp_path / "dask.log", "w")
    sched = subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                             cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    addr = f"tcp://127.0.0.1:{port}"
    worker = subprocess.Popen([str(DASK), "worker", addr, "--nworkers", "2", "--nthreads", "1", "--no-dashboard",
                               "--host", "127.0.0.1", "--memory-limit", "0"],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        from distributed import Client

        deadline = time.time() + 60
        client = None
        while time.time() < deadline:
            try:
                client = Client(addr, timeout=5)
                client.wait_for_workers(2, timeout=30)
                break
            except Exception:  # noqa: BLE001 - scheduler still starting
                time.sleep(0.5)
        if client is None:
            raise RuntimeError(f"dask scheduler did not come up; see {tmp_path / 'dask.log'}")
        client.close()
        yield addr
    finally:
        for p in (worker, sched):
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=20)
            except Exception:  # noqa: BLE001
                os.killpg(p.pid, signal.SIGKILL)
        log.close()


def test_loopback_scheduler_and_worker_ingest_same_rows_as_serial(tmp_path, loopback_cluster):
    src = _folder(tmp_path / "src", 130)
    ref_db, dask_db = tmp_path / "ref.duckdb", tmp_path / "dask.duckdb"
    cat.ingest(src, catalog=ref_db, engine=SerialEngine())
    eng = DaskEngine(scheduler=loopback_cluster)
    assert eng.workers == 2
    seen: list[tuple[int, int]] = []
    rep = cat.ingest(src, catalog=dask_db, engine=eng, batch_size=16, progress=lambda d, t: seen.append((d, t)))
    # the work ran on the external workers, not in this process
    pids = eng.client.run(os.getpid)
    assert len(pids) == 2 and os.getpid() not in pids.values()
    env = eng.client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert set(env.values()) == {None}
    # the workers ran the compiled statistics kernels (batch processes turn them on)
    compiled = eng.client.run(lambda: __import__("analysis.kernels", fromlist=["_compiled"])._compiled() is not None)
    assert set(compiled.values()) == {True}
    eng.close()
    assert rep.added == 131 and rep.failed == 1
    # 131 files on 2 workers: tasks of ceil(131 / 8) = 17 files (4 tasks per worker), not 16-file
    # chunks; the last ones shrink (guided) so that both workers finish together
    steps = np.diff([0] + [d for d, _ in seen[1:]])
    assert seen[-1] == (131, 131) and steps.sum() == 131 and steps.max() == 17
    assert (np.sort(steps)[::-1][:4] == 17).all() and np.sort(steps)[:3].max() <= 4
    a, b = _table(ref_db), _table(dask_db)
    pd.testing.assert_frame_equal(a, b)


def test_environment_variable_selects_the_scheduler(monkeypatch, loopback_cluster):
    monkeypatch.setenv("MEDLENS_DASK_SCHEDULER", loopback_cluster)
    eng = default_engine(10)
    assert isinstance(eng, DaskEngine) and eng.scheduler == loopback_cluster
    out = batch_map(_square, [{"id": str(k), "v": k} for k in range(120)], engine=eng, chunk_size=7)
    eng.close()
    assert out["sq"].tolist() == [k * k for k in range(120)]
    assert (out["error"] == "").all()


def _square(item: dict) -> dict:
    if item["v"] == -1:
        raise ValueError("negative one is refused")
    return {"sq": item["v"] ** 2}


def test_local_cluster_default_and_per_item_errors():
    eng = DaskEngine(workers=2)
    items = [{"id": str(k), "v": (-1 if k == 5 else k)} for k in range(60)]
    out = batch_map(_square, items, engine=eng, chunk_size=10)
    assert out.loc[5, "error"] == "negative one is refused"
    assert out.drop(index=5)["sq"].tolist() == [k * k for k in range(60) if k != 5]
    assert "MALLOC_TRIM_THRESHOLD_" not in os.environ
    env = eng.client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert set(env.values()) == {None}


def test_small_chunks_are_merged_into_tasks_of_min_batch_items():
    assert [len(b) for b in DaskEngine(workers=2)._batches([[(i, i) for i in range(5000)]])][:2] == [128, 128]
    eng = DaskEngine(workers=2, min_batch=50)  # no cluster is started for planning
    chunks = [[(i, i) for i in range(k, min(k + 7, 1000))] for k in range(0, 1000, 7)]
    batches = list(eng._batches(chunks))
    sizes = [len(b) for b in batches]
    assert [x for b in batches for x in b] == [x for c in chunks for x in c]  # every item once, in order
    assert max(sizes) == 50 and sizes[:17] == [50] * 17
    # guided tail: the tasks shrink, never below a quarter of the task size (except the rest)
    tail = sizes[sizes.index(min(sizes[:-1])) - 5:]
    assert all(a >= b for a, b in zip(tail, tail[1:])) and min(sizes[:-1]) == 12
    # the last tasks are small, so the two workers finish within ~ one small task of each other
    assert sum(sizes[-3:]) <= 50
    lazy = (c for c in chunks)  # an iterator of unknown length: always min_batch
    assert [len(b) for b in eng._batches(lazy)][:3] == [50, 50, 50]
    small = [[(i, i) for i in range(30)]]
    sizes = [len(b) for b in eng._batches(small)]
    assert sum(sizes) == 30 and sizes[0] == 4 and len(sizes) >= 8  # 30 files: ≤ 4 per task, ≥ 4 tasks a worker