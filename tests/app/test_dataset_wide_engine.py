"""Dataset-wide runs of the technique pages go through the Dask engine (issue #7): the same
per-image rows (and error rows) as in process, ``run_over_dataset`` picks Dask for ≥ 8 items
(technique items are costly), and falls back to the process pool, with a note naming the
reason, when Dask cannot start — remembering the failure instead of waiting for it again."""

from __future__ import annotations

import os
import uuid

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from analysis import batch as B
from analysis import engine as E
from analysis import registry
from analysis.batch import PipelineTask, SerialEngine, batch_map
from analysis.engine import DaskEngine
from analysis.metrics import enhancement_measure
from tests.helpers.server import free_port


def _default_enhancement_task() -> PipelineTask:
    """What the Enhancement page's Dataset-wide tab runs when nothing was changed."""
    op = registry.operations("enhancement", inputs="image")[0]
    return PipelineTask.make([(op.key, op.defaults())], enhancement_measure)


def test_dask_engine_gives_the_same_rows_and_errors_as_serial(sample_dataset, tmp_path):
    (tmp_path / "garbage.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    recs = sample_dataset.records() + [
        {"id": "bad-missing", "path": "missing.dcm", "root": str(tmp_path)},
        {"id": "bad-garbage", "path": "garbage.dcm", "root": str(tmp_path)},
    ]
    task = _default_enhancement_task()
    serial = batch_map(task, recs, engine=SerialEngine())
    eng = DaskEngine(workers=2)
    seen: list[tuple[int, int]] = []
    dask = batch_map(task, recs, engine=eng, progress=lambda d, t: seen.append((d, t)))
    # the work ran in two worker processes, not here
    pids = eng.client.run(os.getpid)
    assert len(pids) == 2 and os.getpid() not in pids.values()
    assert seen[0] == (0, len(recs)) and seen[-1] == (len(recs), len(recs))
    assert len(dask) == len(recs) >= 300 and dask["item"].tolist() == [r["id"] for r in recs]
    pd.testing.assert_frame_equal(serial, dask, check_exact=True)
    errs = dask[dask["error"] != ""]
    assert errs["item"].tolist() == ["bad-missing", "bad-garbage"]
    assert (serial.loc[errs.index, "error"] == errs["error"]).all() and errs["error"].str.len().gt(0).all()
    assert dask["rms_contrast_after"].iloc[: len(recs) - 2].notna().all()


# A page calling ``run_over_dataset`` on the first ``n`` sample images (from session state).
# Guarded like app.py: process-pool and Dask workers re-import the main script as "__mp_main__".
_SCRIPT = """
import streamlit as st

from analysis import dataset as ds
from analysis.batch import PipelineTask
from ui import data


def page():
    d = ds.load_sample()
    n = int(st.session_state["n"])
    df = data.run_over_dataset(PipelineTask.make([]), d, task_key=st.session_state["key"], records=d.records()[:n])
    st.session_state["rows"] = len(df)
    st.session_state["failed"] = int((df["error"] != "").sum())


if __name__ != "__mp_main__":
    page()
"""


@pytest.fixture
def spy(monkeypatch):  # type: ignore[no-untyped-def]
    """Records the item counts ``analysis.engine.default_engine`` is asked for and the engines
    ``batch_map`` receives (both still do their real work)."""
    monkeypatch.delenv("MEDLENS_SERIAL", raising=False)
    monkeypatch.delenv(E.ENV_SCHEDULER, raising=False)
    monkeypatch.setattr(E, "_cpu_count", lambda: 2)  # the decision must not depend on this machine
    from ui import data as ui_data

    ui_data._DASK_FAILED.clear()  # no failure remembered from another test
    calls: dict[str, list] = {"default_engine": [], "engine": []}
    real_default, real_map = E.default_engine, B.batch_map

    def default_engine(n_items, *a, **kw):  # type: ignore[no-untyped-def]
        calls["default_engine"].append(n_items)
        return real_default(n_items, *a, **kw)

    def recording_map(func, items, **kw):  # type: ignore[no-untyped-def]
        calls["engine"].append(kw.get("engine"))
        return real_map(func, items, **kw)

    monkeypatch.setattr(E, "default_engine", default_engine)
    monkeypatch.setattr(B, "batch_map", recording_map)
    return calls


def _run(n: int) -> AppTest:
    at = AppTest.from_string(_SCRIPT, default_timeout=180)
    at.session_state["n"] = n
    at.session_state["key"] = f"engine-test-{uuid.uuid4()}"  # never a cached result of another test
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.session_state["rows"] == n and at.session_state["failed"] == 0
    return at


@pytest.mark.parametrize("n, kind", [(8, DaskEngine), (7, SerialEngine)])
def test_run_over_dataset_uses_dask_from_8_items(spy, sample_dataset, n, kind):
    at = _run(n)
    assert spy["default_engine"] == [n]
    eng = spy["engine"][0]
    assert len(spy["engine"]) == 1 and type(eng) is kind
    assert not at.info and not at.warning
    if kind is DaskEngine:
        # its local workers run OpenCV single-threaded, like the process pool's (no oversubscription)
        assert set(eng.client.run(_cv2_threads).values()) == {1}


def _cv2_threads() -> int:
    import cv2

    return cv2.getNumThreads()


class _NoCluster(DaskEngine):
    @property
    def client(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("LocalCluster failed to start")


@pytest.mark.parametrize("broken, reason", [
    (lambda n, **kw: _NoCluster(2), "RuntimeError: LocalCluster failed to start"),
    (lambda n, **kw: DaskEngine(scheduler=f"tcp://127.0.0.1:{free_port()}", connect_timeout=1), "OSError: Timed out"),
], ids=["local-cluster-fails", "scheduler-unreachable"])
def test_run_over_dataset_falls_back_to_the_process_pool_with_a_note(spy, monkeypatch, sample_dataset, broken, reason):
    monkeypatch.setattr(E, "default_engine", broken)
    at = _run(64)
    assert len(spy["engine"]) == 1 and type(spy["engine"][0]) is type(B.default_engine(64))
    assert not isinstance(spy["engine"][0], DaskEngine)
    notes = [e.value.replace("\\", "") for e in [*at.info, *at.warning]]  # Markdown escapes removed
    assert len(notes) == 1 and "Dask cluster is unavailable" in notes[0] and reason in notes[0], notes
    assert "Traceback" not in notes[0] and "File \"" not in notes[0]
    # the next run within a minute does not try (and wait for) the broken cluster again
    tried = []
    monkeypatch.setattr(E, "default_engine", lambda n, **kw: tried.append(n) or broken(n))
    at = _run(64)
    assert tried == [] and not isinstance(spy["engine"][-1], DaskEngine)
    assert reason in [e.value.replace("\\", "") for e in at.info][0]


class _DiesMidRun(DaskEngine):
    """A cluster that starts, then loses its scheduler during the run."""

    @property
    def client(self):  # type: ignore[no-untyped-def]
        return object()

    @property
    def workers(self) -> int:
        return 2

    def map_chunks(self, func, chunks, on_chunk):  # type: ignore[no-untyped-def]
        raise OSError("scheduler connection lost")


def test_a_cluster_failing_mid_run_is_redone_on_the_process_pool(spy, monkeypatch, sample_dataset):
    monkeypatch.setattr(E, "default_engine", lambda n, **kw: _DiesMidRun(2))
    at = _run(16)  # all 16 rows, none failed: the run was redone
    assert [type(e) for e in spy["engine"]][0] is _DiesMidRun and len(spy["engine"]) == 2
    assert not isinstance(spy["engine"][1], DaskEngine)
    notes = [e.value.replace("\\", "") for e in at.info]
    assert len(notes) == 1 and "failed during the run" in notes[0] and "scheduler connection lost" in notes[0]
