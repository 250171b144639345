"""The working dataset and cached image access for every page.

Caching rules (Streamlit caches are shared by every user of a server):

* every cached function takes a *digest* argument (content hash of the file bytes, or of an
  upload) plus parameters; arrays and entries travel as ``_``-prefixed arguments that
  Streamlit does not hash;
* anything derived from an upload is cached with ``scope="session"``, so another session
  can never receive it even with the same key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import streamlit as st

from analysis import batch as _batch
from analysis import dataset as ds
from analysis import engine as _engine
from analysis.display import downsample, to_display
from analysis.image import Image
from ui import state
from ui.common import safe_text, show_errors

THUMB = 96
_log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- digests
def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (a folder: of its members' names, sizes and mtimes)."""
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                st_ = p.stat()
                h.update(f"{p.relative_to(path)}|{st_.st_size}|{st_.st_mtime_ns}".encode())
        return "dir:" + h.hexdigest()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@st.cache_data(show_spinner=False, max_entries=20000, ttl=3600)
def _stat_digest(path: str, size: int, mtime_ns: int) -> str:
    # keyed on path+size+mtime so unchanged files are hashed once; the *returned* digest is
    # the content hash that all other caches key on.
    return file_digest(Path(path))


def entry_digest(entry: dict[str, Any]) -> str:
    p = ds.entry_path(entry)
    if entry.get("role") == "upload":
        return f"upload:{entry['id']}"
    try:
        s = p.stat()
    except OSError:
        return f"missing:{p}"
    return _stat_digest(str(p), s.st_size, s.st_mtime_ns)


# ----------------------------------------------------------------------------- datasets
@st.cache_resource(show_spinner="Reading the sample dataset…", max_entries=4)
def _sample(manifest_digest: str) -> ds.Dataset:
    # one shared, read-only object (server-side files, no user data): its entry index and
    # pair list are computed once, not on every rerun
    return ds.load_sample()


def sample_dataset() -> ds.Dataset | None:
    path = ds.sample_manifest_path()
    if not path.exists():
        return None
    return _sample(file_digest(path))


@st.cache_data(show_spinner="Indexing folder…", max_entries=8, ttl=600, scope="session")
def _folder(folder: str, _stamp: float) -> ds.Dataset:
    return ds.scan_folder(folder)


def working_dataset() -> ds.Dataset | None:
    """The dataset every page works on (sample, this session's uploads, or a folder)."""
    src = state.get(state.K_SOURCE, "sample")
    if src == "upload":
        up = state.get(state.K_UPLOADS)
        return up if up is not None and len(up) else None
    if src == "folder":
        folder = state.get(state.K_FOLDER)
        if not folder:
            return None
        try:
            return _folder(folder, os.stat(folder).st_mtime)
        except (OSError, FileNotFoundError) as exc:
            st.error(f"Cannot read that folder: {type(exc).__name__}")
            return None
    return sample_dataset()


def add_uploads(files: list[tuple[str, bytes]]) -> ds.Dataset:
    current = state.get(state.K_UPLOADS)
    new = ds.ingest_uploads(files, state.session_dir() / "uploads", existing=current)
    state.set(state.K_UPLOADS, new)
    state.set(state.K_UPLOAD_ERRORS, new.errors)
    return new


# ----------------------------------------------------------------------------- images
@st.cache_data(show_spinner=False, max_entries=64, ttl=3600)
def _load_shared(digest: str, _entry: dict[str, Any]) -> Image:
    return ds.load_entry(_entry)


@st.cache_data(show_spinner=False, max_entries=64, ttl=3600, scope="session")
def _load_session(digest: str, _entry: dict[str, Any]) -> Image:
    return ds.load_entry(_entry)


def load(entry: dict[str, Any]) -> Image:
    """Load an entry (cached on its content digest; session-scoped for uploads).
    Raises ``analysis.io.LoadError`` for unreadable files."""
    dig = entry_digest(entry)
    if entry.get("role") == "upload":
        return _load_session(dig, entry)
    return _load_shared(dig, entry)


def load_aux(entry: dict[str, Any], column: str) -> Any:
    """Auxiliary ground truth of an entry (mask, clean reference, label map), cached."""
    if not str(entry.get(column, "") or ""):
        return None
    p = ds.entry_path(entry, column)
    return _aux(file_digest(p), column, entry)


@st.cache_data(show_spinner=False, max_entries=64, ttl=3600)
def _aux(digest: str, column: str, _entry: dict[str, Any]) -> Any:
    return ds.load_aux(_entry, column)


@st.cache_data(show_spinner=False, max_entries=5000, ttl=3600)
def _thumb_shared(digest: str, _entry: dict[str, Any]) -> bytes | None:
    return _make_thumb(_entry)


@st.cache_data(show_spinner=False, max_entries=2000, ttl=3600, scope="session")
def _thumb_session(digest: str, _entry: dict[str, Any]) -> bytes | None:
    return _make_thumb(_entry)


def _make_thumb(entry: dict[str, Any]) -> bytes | None:
    """Thumbnail as PNG bytes, encoded once (reruns then send cached bytes, not re-encode)."""
    import io as _io

    from PIL import Image as PILImage

    try:
        img = ds.load_entry(entry)
    except Exception:  # noqa: BLE001 - a thumbnail failure is shown as a blank tile
        return None
    plane = img.middle_plane()
    buf = _io.BytesIO()
    PILImage.fromarray(downsample(to_display(plane), THUMB)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def thumbnail(entry: dict[str, Any]) -> bytes | None:
    dig = entry_digest(entry)
    if entry.get("role") == "upload":
        return _thumb_session(dig, entry)
    return _thumb_shared(dig, entry)


# ----------------------------------------------------------------------------- working image
def working_entry(dataset: ds.Dataset | None = None) -> dict[str, Any] | None:
    dataset = dataset if dataset is not None else working_dataset()
    if dataset is None or not len(dataset):
        return None
    eid = state.get(state.K_IMAGE)
    ids = dataset.entries["id"].astype(str).tolist()
    if eid not in ids:
        eid = ids[0]
        state.set(state.K_IMAGE, eid)
    return dataset.entry(eid)


def working_image() -> tuple[dict[str, Any], Image] | None:
    """(entry, 2-D plane Image) of the working image, or None with a message shown."""
    entry = working_entry()
    if entry is None:
        st.info("No working image yet: choose a dataset on the **Home** page (the sample dataset, an upload or a folder).")
        return None
    img = _load_plane(entry, state.get(state.K_PLANE))
    return None if img is None else (entry, img)


def _load_plane(entry: dict[str, Any], index: int | None = None) -> Image | None:
    """One 2-D plane of an entry (``index``, default the middle one), or None with the
    loader's message (file name + reason) shown."""
    from analysis.io import LoadError

    try:
        img = load(entry)
    except LoadError as exc:
        show_errors([{"file": exc.filename, "reason": exc.reason}])
        return None
    if img.n_planes > 1:
        idx = img.n_planes // 2 if index is None else int(index)
        img = img.plane(min(idx, img.n_planes - 1))
    return img


def working_pair(default_roles: tuple[str, str] = ("fixed", "moving")) -> tuple[tuple[dict, Image], tuple[dict, Image]] | None:
    """The working pair chosen on Home (or the first pair of the dataset with these roles)."""
    dataset = working_dataset()
    if dataset is None or not len(dataset):
        st.info("No working dataset: choose one on the **Home** page.")
        return None
    pair = state.get(state.K_PAIR)
    ids = set(dataset.entries["id"].astype(str))
    if not pair or pair[0] not in ids or pair[1] not in ids:
        pairs = dataset.pairs(default_roles) or dataset.pairs()
        if not pairs:
            st.info("This dataset has no image pairs. Pick two images as the working pair on the **Home** page.")
            return None
        pair = (str(pairs[0][0]["id"]), str(pairs[0][1]["id"]))
        state.set(state.K_PAIR, pair)
    out = []
    for eid in pair:
        entry = dataset.entry(eid)
        img = _load_plane(entry)
        if img is None:
            return None
        out.append((entry, img))
    return out[0], out[1]


# ----------------------------------------------------------------------------- batch runs
def dataset_digest(dataset: ds.Dataset) -> str:
    h = hashlib.sha256()
    h.update(dataset.kind.encode())
    h.update(state.session_id().encode() if dataset.kind == "upload" else b"shared")
    for rec in dataset.records():
        h.update(f"{rec['id']}|{entry_digest(rec)}".encode())
    return h.hexdigest()


def dataset_engine(n_items: int) -> _batch.Engine:
    """The engine for a dataset-wide run of ``n_items``: :func:`analysis.engine.default_engine`
    (serial for small runs, else Dask: the shared local cluster or ``$MEDLENS_DASK_SCHEDULER``).
    The cluster is started (or the scheduler reached) here, before any work: when that fails,
    the run falls back to the local process pool with a one-line note naming the reason."""
    failed = _DASK_FAILED.get("until", 0.0) > time.monotonic()
    try:
        if failed:
            raise RuntimeError(_DASK_FAILED.get("reason", "it did not start"))
        # technique items cost 10 ms – 1 s each: the cluster pays off from a few items on
        eng = _engine.default_engine(n_items, min_items=DASK_MIN_ITEMS)
        if isinstance(eng, _engine.DaskEngine):
            # start the local cluster / connect to the scheduler and ask for its workers now
            with st.spinner("Connecting to the Dask cluster…" if eng.scheduler else "Starting the Dask workers…"):
                _ = eng.client, eng.workers
        return eng
    except Exception as exc:  # noqa: BLE001 - any start-up failure means "no Dask for this run"
        _dask_fallback(str(exc) if failed else _reason(exc), "is unavailable", remember=not failed)
        return _batch.default_engine(n_items)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip().rstrip(":")


def _dask_fallback(reason: str, what: str, *, remember: bool = True) -> None:
    """Say (once, on the page and in the log) that this run uses the local process pool, and
    remember the failure for a minute: an unreachable scheduler costs its whole timeout."""
    if remember:
        _DASK_FAILED.update(until=time.monotonic() + DASK_RETRY_S, reason=reason)
        _log.warning("Dask cluster %s, using the local process pool: %s", what, reason)
    st.info(f"The Dask cluster {what} ({safe_text(reason, 200)}); running on this server's process pool instead.",
            icon=":material/info:")


DASK_MIN_ITEMS = 8
DASK_RETRY_S = 60.0
_DASK_FAILED: dict[str, object] = {}


def run_over_dataset(
    task: Callable[[dict], dict],
    dataset: ds.Dataset,
    *,
    task_key: str,
    label: str = "Running over the working dataset",
    records: list[dict] | None = None,
) -> pd.DataFrame:
    """Batch-map ``task`` over the dataset with a progress bar; cached on the dataset's
    content digest + ``task_key`` (which must encode every parameter)."""
    key = (dataset_digest(dataset), task_key)
    store = st.session_state.setdefault("medlens.batch_results", {})
    if key in store:
        return store[key]
    shared = dataset.kind != "upload"
    if shared and key in _BATCH_CACHE:
        store[key] = _BATCH_CACHE[key]
        return store[key]
    recs = records if records is not None else dataset.records()
    bar = st.progress(0.0, text=f"{label}: 0 / {len(recs)}")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"{label}: {done} / {total}")

    eng = dataset_engine(len(recs))
    try:
        df = _batch.batch_map(task, recs, engine=eng, progress=progress)
    except Exception as exc:  # noqa: BLE001 - the cluster went away mid-run (items' own errors are rows)
        if not isinstance(eng, _engine.DaskEngine):
            raise
        _dask_fallback(_reason(exc), "failed during the run")
        df = _batch.batch_map(task, recs, engine=_batch.default_engine(len(recs)), progress=progress)
    bar.empty()
    meta_cols = [c for c in ("id", "name", "label", "modality", "subject", "role") if c in dataset.entries.columns]
    meta = pd.DataFrame([{c: r.get(c, "") for c in meta_cols} for r in recs])
    df = pd.concat([meta.reset_index(drop=True), df.drop(columns=["item"], errors="ignore")], axis=1)
    store[key] = df
    if shared:
        _BATCH_CACHE[key] = df
        while len(_BATCH_CACHE) > 32:
            _BATCH_CACHE.pop(next(iter(_BATCH_CACHE)))
    return df


_BATCH_CACHE: dict[tuple[str, str], pd.DataFrame] = {}
