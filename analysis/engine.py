"""Dask distributed engine: the same ``map_chunks(func, chunks, on_chunk)`` interface as
:class:`analysis.batch.ProcessEngine`, on a local cluster or an existing Dask cluster.

* Default: a ``LocalCluster`` of one single-threaded worker process per available core,
  started once per process and shared (start-up ~1.2 s).
* ``DaskEngine(scheduler="tcp://host:8786")`` — or the environment variable
  ``MEDLENS_DASK_SCHEDULER`` — uses an existing cluster. Its workers must be able to import
  ``analysis`` (start them from the repository folder or with it on ``PYTHONPATH``).

Two traps measured on these machines (shared/guides/performance.md) are handled here:

* one task per file costs 5–9 ms of scheduler/worker CPU — chunks are merged into tasks of
  ``min_batch`` (default 128) items, or fewer when a run is too small to give every worker
  four tasks. Measured on 1 200 CT files with 2 workers: the client's IO-loop thread (client +
  in-process scheduler) spent 0.20 ms a file with 50-item tasks and 0.10 ms with 150-item
  tasks — CPU taken from the workers' two cores;
* Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_=65536`` in workers, which made array-heavy work
  58–80 % slower — it is removed from Dask's config and from this process' environment.

Tasks are submitted in a bounded window (``2 × workers + 2`` in flight), so memory does not
grow with the number of chunks; ``on_chunk`` runs in the caller's thread as tasks finish.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import math
from typing import Any, Callable, Iterable, Sized

__all__ = ["DaskEngine", "default_engine", "scheduler_from_env", "configure_dask", "ENV_SCHEDULER"]

ENV_SCHEDULER = "MEDLENS_DASK_SCHEDULER"


def configure_dask() -> None:
    """Unset Dask's MALLOC_TRIM_THRESHOLD_ for workers spawned from here (and in this process),
    and turn off the workers' statistical profiler (a stack sample every 10 ms, for a dashboard
    MedLens does not start; on a 1 200-file ingest the saving was within this machine's noise)."""
    import dask

    dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                     "distributed.worker.profile.enabled": False,
                     # host metrics (CPU, disk, network) feed Dask's dashboard only: sample them
                     # every 2 s, not 0.5 s, and skip the disk / network counters
                     "distributed.admin.system-monitor.interval": "2s",
                     "distributed.admin.system-monitor.disk": False,
                     "distributed.admin.system-monitor.host-cpu": False,
                     # an idle 2-worker local cluster used 4.4 % of a core in this process (scheduler,
                     # nannies, client) and 1.8 % in each worker, taken from the work on a 2-core
                     # machine: event-loop health checks every 0.2 s instead of 20 ms, memory
                     # checks every 0.5 s instead of 0.1 s (the nanny still stops a runaway worker)
                     "distributed.admin.tick.interval": "200ms",
                     "distributed.worker.memory.monitor-interval": "500ms"})
    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)


def scheduler_from_env() -> str | None:
    v = os.environ.get(ENV_SCHEDULER, "").strip()
    return v or None


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _one_thread_plugin():  # type: ignore[no-untyped-def]
    """A worker plugin (defined here: ``distributed`` is imported only when a cluster starts)."""
    from distributed import WorkerPlugin

    class OneThreadPerWorker(WorkerPlugin):
        """Every worker of the local cluster — also one the nanny restarts after a crash — runs
        :func:`analysis.batch._worker_init` (OpenCV / BLAS on one thread), as the process pool's
        initializer does: the cluster already has a worker per core."""

        def setup(self, worker) -> None:  # type: ignore[no-untyped-def]
            from analysis.batch import _worker_init

            _worker_init()

    return OneThreadPerWorker()


_LOCAL: dict[int, Any] = {}
_LOCAL_LOCK = threading.Lock()


def _local_client(workers: int):  # type: ignore[no-untyped-def]
    from distributed import Client, LocalCluster

    with _LOCAL_LOCK:
        client = _LOCAL.get(workers)
        if client is not None and client.status == "running":
            return client
        configure_dask()
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR,
                               # no dashboard; the scheduler's small HTTP server on a free loopback port
                               scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
        client = Client(cluster, set_as_default=False)
        os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)  # the nanny leaks it into this process
        client.register_plugin(_one_thread_plugin(), name="medlens-one-thread")
        _LOCAL[workers] = client
        return client


@atexit.register
def _close_local() -> None:
    with _LOCAL_LOCK:
        for client in _LOCAL.values():
            try:
                cluster = client.cluster
                client.close()
                if cluster is not None:
                    cluster.close()
            except Exception:  # noqa: BLE001 - best effort at interpreter exit
                pass
        _LOCAL.clear()


class _Batch:
    """A task's work items, opaque to Dask: its graph parser walks every nested list and dict of
    a task's arguments (measured: 0.19 ms per 64-file batch item list, on the client's core)."""

    __slots__ = ("items",)

    def __init__(self, items: list[tuple[int, Any]]) -> None:
        self.items = items

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_Batch, (self.items,))


def _run_task(func: Callable[[Any], dict], batch: _Batch) -> bytes:
    """One task: the batch's results pickled into one ``bytes`` object. Dask then moves a single
    buffer instead of walking (``sizeof``) and serialising a list of row dicts on the worker's
    event loop — measured 0.04 ms a file of worker CPU for catalog rows."""
    import pickle

    from analysis.batch import _run_chunk
    from analysis.kernels import enable_compiled

    enable_compiled()  # a Dask worker (local or an external cluster's) is a batch process
    return pickle.dumps(_run_chunk(func, batch.items), protocol=pickle.HIGHEST_PROTOCOL)


class DaskEngine:
    """Run chunks of work items on Dask workers (local cluster or ``scheduler`` address).

    Parameters
    ----------
    workers : int, optional
        Local cluster size (default: the available cores). Ignored with ``scheduler``.
    scheduler : str, optional
        Address of an existing scheduler (``tcp://host:8786``); default
        ``$MEDLENS_DASK_SCHEDULER``, else a local cluster.
    min_batch : int
        Items per Dask task at least (small chunks are merged; default 128).
    """

    def __init__(self, workers: int | None = None, *, scheduler: str | None = None, min_batch: int = 128,
                 connect_timeout: float = 20.0) -> None:
        self.scheduler = scheduler if scheduler is not None else scheduler_from_env()
        self._local_workers = max(1, int(workers or _cpu_count()))
        self.min_batch = max(1, int(min_batch))
        self.connect_timeout = connect_timeout
        self._client = None

    # ---------------------------------------------------------------- cluster
    @property
    def client(self):  # type: ignore[no-untyped-def]
        if self._client is None:
            if self.scheduler:
                from distributed import Client

                configure_dask()
                self._client = Client(self.scheduler, timeout=self.connect_timeout, set_as_default=False)
                _warn_malloc_trim(self._client)
            else:
                self._client = _local_client(self._local_workers)
        return self._client

    @property
    def workers(self) -> int:
        if not self.scheduler:
            return self._local_workers
        info = self.client.scheduler_info(n_workers=-1) if _takes_n_workers() else self.client.scheduler_info()
        return max(1, sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values()))

    def close(self) -> None:
        """Disconnect from an external scheduler (the shared local cluster stays up)."""
        if self.scheduler and self._client is not None:
            self._client.close()
            self._client = None

    # ---------------------------------------------------------------- work
    def _batches(self, chunks: Iterable[list[tuple[int, Any]]]) -> Iterable[list[tuple[int, Any]]]:
        """Merge chunks into tasks of ``min_batch`` items — fewer when the whole run is small,
        so that every worker still gets ≥ 4 tasks (slow files, e.g. JPEG 2000, stay parallel).

        When the run's length is known, the last tasks shrink (guided scheduling: at most
        1/(2·workers) of what is left, down to a quarter of the task size), so the workers
        finish together instead of one idling while the other runs a whole last task
        (measured: up to 5 % of a 2 000-file, 2-worker ingest).
        """
        target = self.min_batch
        remaining: int | None = None
        if isinstance(chunks, Sized):
            remaining = sum(len(c) for c in chunks)  # type: ignore[union-attr]
            target = max(1, min(self.min_batch, math.ceil(remaining / (4 * self.workers))))
        floor = max(1, target // 4)

        def size() -> int:
            if remaining is None:
                return target
            return max(floor, min(target, math.ceil(remaining / (2 * self.workers))))

        buf: list[tuple[int, Any]] = []
        for c in chunks:
            buf.extend(c)
            while buf and len(buf) >= size():
                k = size()
                yield buf[:k]
                buf = buf[k:]
                if remaining is not None:
                    remaining -= k
        if buf:
            yield buf

    def map_chunks(self, func: Callable[[Any], dict], chunks: Iterable[list[tuple[int, Any]]],
                   on_chunk: Callable[[list[tuple[int, dict]]], None]) -> None:
        """Run ``batch._run_chunk(func, chunk)`` on the cluster for every (merged) chunk.

        A task lost with its worker (a decoder crash killing the process) is retried item by
        item; an item that fails again is reported as failed, and the run goes on.
        """
        import pickle

        from distributed import as_completed

        client = self.client
        window = 2 * self.workers + 2
        it = iter(self._batches(chunks))
        ac = as_completed(loop=client.loop)
        items_of: dict[Any, list[tuple[int, Any]]] = {}

        def submit(batch: list[tuple[int, Any]], retries: int = 0) -> None:
            f = client.submit(_run_task, func, _Batch(batch), pure=False, retries=retries)
            items_of[f] = batch
            ac.add(f)

        for _ in range(window):
            b = next(it, None)
            if b is None:
                break
            submit(b)
        try:
            for fut in ac:
                batch = items_of.pop(fut)
                try:
                    res = pickle.loads(fut.result())
                except Exception as exc:  # noqa: BLE001 - a lost task is retried per item
                    if len(batch) > 1:
                        for one in batch:
                            submit([one])
                        continue
                    res = [(batch[0][0], {"error": _lost_reason(exc)})]
                finally:
                    fut.release()
                on_chunk(res)
                nxt = next(it, None)
                if nxt is not None:
                    submit(nxt)
        except BaseException:
            for f in list(items_of):
                f.cancel()
            raise


def _warn_malloc_trim(client) -> None:  # type: ignore[no-untyped-def]
    """An existing cluster is configured by its operator: say so if its workers still run with
    MALLOC_TRIM_THRESHOLD_ (array work is 58–80 % slower there)."""
    try:
        values = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    except Exception:  # noqa: BLE001 - diagnostics only
        return
    if any(v is not None for v in values.values()):
        logging.getLogger(__name__).warning(
            "Dask workers run with MALLOC_TRIM_THRESHOLD_ set (slows array work); start them with "
            "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_: null in their Dask config")


def _lost_reason(exc: BaseException) -> str:
    name = type(exc).__name__
    if name == "KilledWorker":
        return "the decoder crashed on this file (worker process died)"
    return f"the worker failed on this file ({name})"


def _takes_n_workers() -> bool:
    import inspect

    from distributed import Client

    return "n_workers" in inspect.signature(Client.scheduler_info).parameters


def default_engine(n_items: int, workers: int | None = None, *, scheduler: str | None = None,
                   min_items: int = 64) -> Any:
    """Serial for small batches (cluster start-up would dominate); else Dask.

    ``min_items``: the smallest run worth the cluster — 64 for cheap items such as catalog
    files (~1 ms each); callers with costly items (a registration, ~0.5 s) pass fewer.
    ``scheduler`` (or ``$MEDLENS_DASK_SCHEDULER``) selects an existing cluster.
    ``MEDLENS_SERIAL=1`` forces in-process work.
    """
    from analysis.batch import SerialEngine

    scheduler = scheduler if scheduler is not None else scheduler_from_env()
    if scheduler:
        return DaskEngine(scheduler=scheduler)
    workers = workers or _cpu_count()
    if os.environ.get("MEDLENS_SERIAL") == "1" or workers <= 1 and n_items < 200 or n_items < min_items:
        return SerialEngine()
    return DaskEngine(workers)
