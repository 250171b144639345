"""Decode untrusted files in a worker process, so a native decoder cannot take the server down.

Compressed pixel data goes through native code (libjpeg, OpenJPEG, CharLS, zlib, libtiff,
Pillow's C decoders). A crafted file could make one of them crash (segfault, abort) or spin
forever; in the Streamlit process that would end or stall *every* user's session.
:func:`load_bytes_isolated` runs :func:`analysis.io.load_bytes` in a small, long-lived
``concurrent.futures.ProcessPoolExecutor`` (``forkserver`` start method: workers are forked
from a clean, single-threaded server process that has already imported the loaders, so a
worker starts in milliseconds and never inherits the web server's threads or sockets):

* a worker that **dies** (signal, ``os._exit``, out-of-memory kill) breaks the pool: the pool
  is rebuilt and the file is tried once more (it may have been another file's crash that
  broke the pool); dying again → ``LoadError("<file>", "the decoder crashed …")``;
* a file that takes longer than ``timeout`` seconds → the pool's workers are killed, the pool
  rebuilt, ``LoadError("<file>", "the decoder timed out …")``;
* every other failure is the loader's own :class:`~analysis.io.LoadError` (picklable), as
  in-process.

Workers run with core dumps off (a crash writes nothing to disk) and an address-space
ceiling (``MEDLENS_WORKER_MEMORY``, default 6 GiB: the largest image the default limits allow
(1 GiB decoded) plus its decode and transfer copies) so a memory bomb that slips past the
header checks fails with ``MemoryError`` → LoadError, not an OOM kill of the machine.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import multiprocessing.context  # noqa: F401 - mp.context.ForkServerProcess
import multiprocessing.spawn  # noqa: F401 - mp.spawn.get_preparation_data
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

from analysis.image import Image
from analysis.io import LoadError
from analysis.limits import Limits

__all__ = ["load_bytes_isolated", "run_isolated", "shutdown", "timeout_for", "DEFAULT_TIMEOUT", "DEFAULT_WORKER_MEMORY",
           "worker_pids"]

DEFAULT_TIMEOUT = 30.0
DEFAULT_WORKER_MEMORY = 6 << 30
_WORKERS = max(1, min(2, os.cpu_count() or 1))
_MAX_TASKS_PER_CHILD = 200
_PRELOAD = ["analysis.io", "analysis.sandbox", "numpy", "pydicom", "PIL.Image", "tifffile", "nibabel"]

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


def timeout_for(nbytes: int, *, base: float = DEFAULT_TIMEOUT, bytes_per_s: float = 4 << 20) -> float:
    """A timeout that grows with the input: ``base`` + 1 s per 4 MiB (a 512 MB upload gets
    ~2.5 min; a legitimate decode runs at tens of MB/s even on a small machine)."""
    return float(base) + max(int(nbytes), 0) / float(bytes_per_s)


def _memory_ceiling() -> int:
    raw = os.environ.get("MEDLENS_WORKER_MEMORY", "")
    try:
        from analysis.limits import _parse_int

        return _parse_int(raw) if raw.strip() else DEFAULT_WORKER_MEMORY
    except ValueError:
        return DEFAULT_WORKER_MEMORY


def _init_worker(mem_bytes: int) -> None:
    """Runs once in each worker: no core files, bounded address space, quiet threads."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if mem_bytes > 0:
            soft, hard = resource.getrlimit(resource.RLIMIT_AS)
            limit = mem_bytes if hard == resource.RLIM_INFINITY else min(mem_bytes, hard)
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):  # not POSIX / not permitted: keep defaults
        pass


_PROCESS_NAME = "medlens-decoder"


class _DecoderProcess(mp.context.ForkServerProcess):
    """A forkserver process marked by name, so its start-up skips re-running ``__main__``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = f"{_PROCESS_NAME}-{self.name}"


class _DecoderContext(mp.context.ForkServerContext):
    Process = _DecoderProcess


def _preparation_data(name: str, _orig=mp.spawn.get_preparation_data) -> dict:  # type: ignore[no-untyped-def]
    """multiprocessing re-imports the parent's ``__main__`` in every new worker. Under
    Streamlit, ``__main__`` is the running *app script* (Streamlit swaps it in), so a worker
    would execute the whole app. Decoder workers need only importable modules: drop it."""
    data = _orig(name)
    if str(name).startswith(_PROCESS_NAME):
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
    return data


mp.spawn.get_preparation_data = _preparation_data


def _make_pool() -> ProcessPoolExecutor:
    ctx = _DecoderContext()
    try:
        ctx.set_forkserver_preload(_PRELOAD)
    except Exception:  # noqa: BLE001 - preload is an optimisation only
        pass
    return ProcessPoolExecutor(max_workers=_WORKERS, mp_context=ctx, initializer=_init_worker,
                               initargs=(_memory_ceiling(),), max_tasks_per_child=_MAX_TASKS_PER_CHILD)


def _get_pool() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = _make_pool()
        return _pool


def _discard(pool: ProcessPoolExecutor, *, kill: bool) -> None:
    """Drop ``pool`` (if still current); kill its workers when one hangs."""
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    if kill:
        for p in list((getattr(pool, "_processes", None) or {}).values()):
            try:
                p.kill()
            except Exception:  # noqa: BLE001
                pass
    try:
        pool.shutdown(wait=False, cancel_futures=True)
    except Exception:  # noqa: BLE001
        pass


def shutdown() -> None:
    """Stop the worker pool (tests, interpreter exit). A new one starts on demand."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        for p in list((getattr(pool, "_processes", None) or {}).values()):
            try:
                p.kill()
            except Exception:  # noqa: BLE001
                pass
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown)


def worker_pids() -> list[int]:
    """PIDs of the live workers (for tests and the load benchmark)."""
    pool = _pool
    return [p.pid for p in (getattr(pool, "_processes", None) or {}).values() if p.is_alive()] if pool else []


def run_isolated(func: Callable[..., Any], *args: Any, name: str, timeout: float = DEFAULT_TIMEOUT,
                 **kwargs: Any) -> Any:
    """``func(*args, **kwargs)`` in a worker process (``func`` must be a module-level,
    importable function). A crash or hang becomes :class:`LoadError` naming ``name``; a
    :class:`LoadError` raised by ``func`` passes through; any other exception becomes a
    LoadError with its type name only (its message may quote file content)."""
    for attempt in (1, 2):
        pool = _get_pool()
        try:
            fut = pool.submit(func, *args, **kwargs)
        except (BrokenProcessPool, RuntimeError):
            _discard(pool, kill=False)
            continue
        try:
            return fut.result(timeout=timeout)
        except FutureTimeout:
            _discard(pool, kill=True)
            raise LoadError(name, f"the decoder timed out after {timeout:g} s and was stopped; "
                                  "the file may be damaged or crafted to stall a decoder") from None
        except BrokenProcessPool:
            _discard(pool, kill=False)
            if attempt == 2:
                raise LoadError(name, "the decoder crashed while reading this file (it was isolated from "
                                      "the server); the file may be damaged or crafted") from None
        except LoadError:
            raise
        except MemoryError:
            raise LoadError(name, "not enough memory to load this image") from None
        except Exception as exc:  # noqa: BLE001 - the boundary: nothing but LoadError leaves
            raise LoadError(name, f"could not read this file ({type(exc).__name__})") from None
    raise LoadError(name, "the decoder could not be started")  # pragma: no cover - pool failed twice to accept work


def _load_worker(data: bytes, name: str, limits: Limits | None, want_errors: bool,
                 want_preview: bool = False) -> tuple[list[Image], list[LoadError], list[dict] | None]:
    from analysis import io

    errors: list[LoadError] = []
    images = io.load_bytes(data, name, limits=limits, errors=errors if want_errors else None)
    return images, errors, (_removal_preview(data) if want_preview and images else None)


def _removal_preview(data: bytes) -> list[dict] | None:
    """Rows of :func:`analysis.deid.preview_removal` (tags and actions, never values) for a
    single DICOM file; ``None`` for anything else or an unreadable header."""
    import io as _io
    import warnings

    from analysis import deid, io

    if io.sniff_format(data) != "dicom" or data[:2] == b"\x1f\x8b":
        return None
    try:
        import pydicom

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = bytes(128) + data if data[:4] == b"DICM" else data
            ds = pydicom.dcmread(_io.BytesIO(raw), force=True, stop_before_pixels=True)
            return deid.preview_removal(ds).to_dict("records")
    except Exception:  # noqa: BLE001 - the preview is optional; the image loaded already
        return None


#: What :func:`load_bytes_isolated` runs in the worker (a module attribute so tests can
#: point it at a crashing or hanging stand-in that is importable in the worker).
_TARGET: Callable[..., tuple[list[Image], list[LoadError]]] = _load_worker


def load_bytes_isolated(data: bytes, name: str, *, timeout: float = DEFAULT_TIMEOUT, limits: Limits | None = None,
                        errors: list[LoadError] | None = None, removal_preview: list | None = None) -> list[Image]:
    """:func:`analysis.io.load_bytes` in a worker process (same result, same errors, plus
    ``LoadError(name, "…the decoder crashed…" / "…timed out…")``). ``errors``: as in
    ``load_bytes`` (per-entry failures of a ZIP are appended instead of skipped).
    ``removal_preview``: when a list is given and ``data`` is one DICOM file, the rows of
    :func:`analysis.deid.preview_removal` (no values) are appended to it — the header is
    parsed in the worker too, so the original bytes need not be kept for the preview."""
    images, errs, preview = run_isolated(_TARGET, bytes(data), str(name), limits, errors is not None,
                                         removal_preview is not None, name=str(name), timeout=timeout)
    if errors is not None:
        errors.extend(errs)
    if removal_preview is not None and preview:
        removal_preview.extend(preview)
    return images


# ----------------------------------------------------------------------------- test stand-ins
def _selftest_crash_on(data: bytes, name: str, limits: Limits | None, want_errors: bool,  # type: ignore[no-untyped-def]
                       want_preview: bool = False):
    """Test stand-in for ``_TARGET``: a file whose name starts with ``crash`` kills the
    worker with SIGSEGV (as a native decoder bug would), ``hang`` sleeps forever, anything
    else loads normally. Only reachable by assigning ``_TARGET`` (tests do)."""
    import signal
    import time

    if name.startswith("crash"):
        os.kill(os.getpid(), signal.SIGSEGV)
    if name.startswith("hang"):
        while True:
            time.sleep(1)
    return _load_worker(data, name, limits, want_errors, want_preview)
