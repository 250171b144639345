"""Batch map: apply a function to every item of the working dataset, in parallel.

``batch_map(func, items)`` runs ``func(item) -> dict`` for each item on the available
cores (chunks of items per task, so scheduling overhead stays far below the work), calls
``progress(done, total)`` as chunks finish, **collects per-item errors instead of
aborting**, and returns a :class:`pandas.DataFrame` with one row per item in input order
and an ``error`` column (empty string when the item succeeded).

Engines share one small interface (:class:`Engine`). The default is a process pool
(``forkserver`` start method: safe inside a threaded server); ``SerialEngine`` runs in
process (tests, tiny batches). A Dask engine plugs in through the same interface.

``func`` must be picklable: a module-level function or a ``functools.partial`` of one.
For the common case — load an entry, run an operation chain, measure — use
:class:`PipelineTask`.
"""

from __future__ import annotations

import functools
import math
import multiprocessing as mp
import os
import threading
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "batch_map",
    "Engine",
    "SerialEngine",
    "ProcessEngine",
    "PipelineTask",
    "default_engine",
    "error_reason",
]

Progress = Callable[[int, int], None]


def error_reason(exc: BaseException) -> str:
    """Plain-language reason for a per-item failure (no traceback, no paths beyond the name)."""
    if type(exc).__name__ == "LoadError" and hasattr(exc, "reason"):  # analysis.io.LoadError
        return str(exc.reason)
    if isinstance(exc, ValueError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory while processing this image"
    return f"{type(exc).__name__}: {exc}"[:300]


def _run_chunk(func: Callable[[Any], dict], chunk: Sequence[tuple[int, Any]]) -> list[tuple[int, dict]]:
    out: list[tuple[int, dict]] = []
    for idx, item in chunk:
        try:
            row = func(item)
            if not isinstance(row, dict):
                row = {"value": row}
            row.setdefault("error", "")
        except Exception as exc:  # noqa: BLE001 - per-item errors are data, not crashes
            row = {"error": error_reason(exc)}
        out.append((idx, row))
    return out


def _worker_init() -> None:
    """One thread per worker process: the pool already uses every core, and nested thread
    pools (OpenCV, BLAS) in each worker only compete with each other."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # noqa: BLE001 - OpenCV is optional here
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # noqa: BLE001
        pass
    from analysis.kernels import enable_compiled

    enable_compiled()  # batch processes: Numba's memory and start-up pay off here


class Engine(Protocol):
    workers: int

    def map_chunks(
        self,
        func: Callable[[Any], dict],
        chunks: list[list[tuple[int, Any]]],
        on_chunk: Callable[[list[tuple[int, dict]]], None],
    ) -> None:
        """Run ``_run_chunk(func, chunk)`` for every chunk; call ``on_chunk`` with each result."""


class SerialEngine:
    workers = 1

    def map_chunks(self, func, chunks, on_chunk) -> None:  # type: ignore[no-untyped-def]
        for chunk in chunks:
            on_chunk(_run_chunk(func, chunk))


class ProcessEngine:
    """Process pool on the local cores. A crash of a native decoder in one worker marks
    that chunk's items as failed and the pool is rebuilt; the batch goes on."""

    _lock = threading.Lock()
    _shared: dict[int, ProcessPoolExecutor] = {}

    def __init__(self, workers: int | None = None, *, max_tasks_per_child: int | None = None) -> None:
        self.workers = max(1, int(workers or os.cpu_count() or 1))

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            pool = self._shared.get(self.workers)
            if pool is None:
                ctx = mp.get_context("forkserver")
                try:
                    ctx.set_forkserver_preload(["analysis.batch", "analysis.io", "analysis.registry"])
                except Exception:  # noqa: BLE001 - preload is an optimisation only
                    pass
                pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_worker_init)
                self._shared[self.workers] = pool
            return pool

    def _reset(self) -> None:
        with self._lock:
            pool = self._shared.pop(self.workers, None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def map_chunks(self, func, chunks, on_chunk) -> None:  # type: ignore[no-untyped-def]
        suspects: list[tuple[int, Any]] = []
        futs = {}
        try:
            pool = self._pool()
            for c in chunks:
                futs[pool.submit(_run_chunk, func, c)] = c
        except BrokenProcessPool:
            done_chunks = set(map(id, futs.values()))
            suspects.extend(it for c in chunks if id(c) not in done_chunks for it in c)
        for f in as_completed(futs):
            try:
                on_chunk(f.result())
            except BrokenProcessPool:
                suspects.extend(futs[f])
        if not suspects:
            return
        # A worker died (e.g. a native codec crashed). Re-run the affected items one at a
        # time in a fresh pool, so only the culprit is marked failed.
        self._reset()
        for item in sorted(suspects, key=lambda it: it[0]):
            try:
                on_chunk(self._pool().submit(_run_chunk, func, [item]).result())
            except BrokenProcessPool:
                self._reset()
                on_chunk([(item[0], {"error": "the decoder crashed on this file (worker process died)"})])


def default_engine(n_items: int, workers: int | None = None) -> Engine:
    """Serial for tiny batches (process start-up would dominate), else the process pool."""
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or n_items < 8 or os.environ.get("MEDLENS_SERIAL") == "1":
        return SerialEngine()
    return ProcessEngine(workers)


def batch_map(
    func: Callable[[Any], dict],
    items: Iterable[Any],
    *,
    engine: Engine | None = None,
    workers: int | None = None,
    chunk_size: int | None = None,
    progress: Progress | None = None,
    keys: Sequence[Any] | None = None,
) -> pd.DataFrame:
    """Apply ``func`` to every item; one result row per item (input order), errors collected.

    Parameters
    ----------
    func : callable
        ``func(item) -> dict`` of scalar results; must be picklable for process engines.
    items : iterable
        Work items (typically dataset entries: dicts with ``id`` and ``path``).
    engine : Engine, optional
        Defaults to :func:`default_engine`.
    chunk_size : int, optional
        Items per task; default makes ≥ 4 chunks per worker and ≤ 64 items per chunk.
    progress : callable, optional
        ``progress(done, total)`` after each finished chunk (and once at 0).
    keys : sequence, optional
        Values for an ``item`` column (default: ``item["id"]`` when items are dicts).
    """
    items = list(items)
    n = len(items)
    engine = engine or default_engine(n, workers)
    if chunk_size is None:
        per = max(1, engine.workers * 4)
        chunk_size = int(min(64, max(1, math.ceil(n / per))))
    indexed = list(enumerate(items))
    chunks = [indexed[i : i + chunk_size] for i in range(0, n, chunk_size)]
    rows: list[dict | None] = [None] * n
    done = 0
    if progress:
        progress(0, n)

    def on_chunk(res: list[tuple[int, dict]]) -> None:
        nonlocal done
        for idx, row in res:
            rows[idx] = row
        done += len(res)
        if progress:
            progress(done, n)

    engine.map_chunks(func, chunks, on_chunk)
    out = pd.DataFrame([r if r is not None else {"error": "not run"} for r in rows])
    if "error" not in out.columns:
        out["error"] = ""
    out["error"] = out["error"].fillna("")
    if keys is None and items and isinstance(items[0], dict) and "id" in items[0]:
        keys = [it.get("id") for it in items]
    if keys is not None:
        out.insert(0, "item", list(keys))
    return out


# ----------------------------------------------------------------------------- tasks
def _freeze(v: Any) -> Any:
    return tuple(_freeze(x) for x in v) if isinstance(v, (list, tuple)) else v


@functools.lru_cache(maxsize=4)
def _reference_plane(frozen_entry: tuple[tuple[str, Any], ...]) -> np.ndarray:
    """Middle plane (greyscale, physical units) of a reference entry, loaded once per worker."""
    from analysis.dataset import load_entry

    entry = {k: (list(v) if isinstance(v, tuple) else v) for k, v in frozen_entry}
    return load_entry(entry).grey()  # grey() is the middle plane's


@dataclass(frozen=True)
class PipelineTask:
    """Load a dataset entry, run an operation chain on one plane, measure.

    ``steps``: ``((operation_key, params), ...)``; ``measure``: a module-level function
    ``measure(before: ndarray, result: Result, entry: dict, image: Image) -> dict`` (or
    None: basic statistics of the output). Entries are dicts with at least ``path`` (and
    ``id``); an entry's ``root`` key, if any, is joined to relative paths.
    """

    steps: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    measure: Callable[..., dict] | None = None
    plane: str = "middle"  # which plane of volumes / multi-frame
    #: a dataset entry (frozen) whose middle plane is the ``reference`` context of every image
    #: (e.g. histogram matching of the whole dataset to one chosen image)
    reference: tuple[tuple[str, Any], ...] | None = None

    @staticmethod
    def make(steps: Sequence[tuple[str, dict]], measure: Callable[..., dict] | None = None,
             reference: dict | None = None) -> "PipelineTask":
        frozen = tuple((k, tuple(sorted((p or {}).items()))) for k, p in steps)
        ref = (tuple(sorted((k, _freeze(v)) for k, v in reference.items() if not isinstance(v, dict)))
               if reference else None)
        return PipelineTask(steps=frozen, measure=measure, reference=ref)

    def __call__(self, entry: dict) -> dict:
        from analysis.dataset import load_entry
        from analysis.registry import run_chain

        image = load_entry(entry)
        plane = image.middle_plane()
        before = plane.grey()
        steps = [(k, dict(p)) for k, p in self.steps]
        context: dict[str, Any] = {}
        if self.reference is not None:
            context["reference"] = _reference_plane(self.reference)
        result = run_chain(steps, before, spacing=plane.spacing, units=plane.units, **context)
        if self.measure is not None:
            return dict(self.measure(before, result, entry, plane))
        out = result.primary if result.primary is not None else before
        a = np.asarray(out, dtype=np.float32)
        return {"mean": float(np.nanmean(a)), "std": float(np.nanstd(a)), "min": float(np.nanmin(a)), "max": float(np.nanmax(a))}


@dataclass(frozen=True)
class CallTask:
    """Picklable ``func(entry, **kwargs)`` wrapper for arbitrary module-level functions."""

    func: Callable[..., dict]
    kwargs: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    def __call__(self, entry: Any) -> dict:
        return self.func(entry, **dict(self.kwargs))
