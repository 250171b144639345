"""The working dataset: a table of entries (one per image) plus where the files are.

Three sources give the same shape:

* the built-in sample dataset (``data/sample/manifest.csv``, built by ``data/build_sample.py``);
* a server-side folder (scanned recursively; a folder holding one multi-file DICOM series
  becomes one volume entry; labels default to the parent folder's name);
* uploads (loaded once, stored as private ``.mlimg.npz`` files in the user's session folder).

Entry columns (missing ones are empty): ``id, path, name, format, modality, subject,
label, role, pair_id, pair_role, mask_path, clean_path, labelmap_path, transform,
field_path`` and anything else the manifest carries. ``path`` is relative to
``Dataset.root`` (or absolute).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from analysis.image import Image

ROOT = Path(__file__).resolve().parent.parent

ENTRY_COLUMNS = [
    "id", "path", "name", "format", "modality", "subject", "label", "role", "pair_id",
    "pair_role", "mask_path", "clean_path", "labelmap_path", "transform", "field_path",
]

IMAGE_SUFFIXES = {
    ".dcm", ".dicom", ".ima", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".nii", ".gz", ".zip", ".npz", "",
}


def app_home() -> Path:
    """The app's own writable folder (uploads, caches, catalog). ``MEDLENS_HOME`` overrides."""
    home = Path(os.environ.get("MEDLENS_HOME", ROOT / "var"))
    home.mkdir(parents=True, exist_ok=True)
    return home


def sample_manifest_path() -> Path:
    return Path(os.environ.get("MEDLENS_SAMPLE", ROOT / "data" / "sample")) / "manifest.csv"


@dataclass
class Dataset:
    name: str
    root: Path
    entries: pd.DataFrame
    kind: str = "sample"  # sample | folder | upload
    errors: list[dict[str, str]] = field(default_factory=list)
    _index: dict[str, int] | None = field(default=None, init=False, repr=False, compare=False)
    _pairs: dict[Any, list] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.entries)

    def records(self) -> list[dict[str, Any]]:
        """Entries as dicts with ``root`` added (what batch tasks receive)."""
        recs = self.entries.to_dict("records")
        for r in recs:
            r["root"] = str(self.root)
        return recs

    def entry(self, entry_id: str) -> dict[str, Any]:
        if self._index is None or len(self._index) != len(self.entries):
            self._index = {str(i): k for k, i in enumerate(self.entries["id"])}
        k = self._index.get(str(entry_id))
        if k is None:
            raise KeyError(entry_id)
        rec = self.entries.iloc[k].to_dict()
        rec["root"] = str(self.root)
        return rec

    def pairs(self, roles: tuple[str, str] | None = None) -> list[tuple[dict, dict]]:
        """(a, b) entry pairs sharing a ``pair_id`` (fixed/moving, t1/t2, t1/pet ...)."""
        key = (roles, len(self.entries))
        if key not in self._pairs:
            self._pairs[key] = self._find_pairs(roles)
        return self._pairs[key]

    def _find_pairs(self, roles: tuple[str, str] | None) -> list[tuple[dict, dict]]:
        e = self.entries
        if "pair_id" not in e.columns:
            return []
        out = []
        for pid, grp in e[e["pair_id"].fillna("").astype(str) != ""].groupby("pair_id", sort=False):
            recs = grp.to_dict("records")
            for r in recs:
                r["root"] = str(self.root)
            by_role = {str(r.get("pair_role", "")): r for r in recs}
            if roles is not None:
                if roles[0] in by_role and roles[1] in by_role:
                    out.append((by_role[roles[0]], by_role[roles[1]]))
            elif len(recs) >= 2:
                out.append((recs[0], recs[1]))
        return out


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for c in ENTRY_COLUMNS:
        if c not in df.columns:
            df[c] = ""
    if (df["id"].astype(str) == "").any():
        df["id"] = [str(i) if str(i) else f"img{k:05d}" for k, i in enumerate(df["id"])]
    obj = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    df[obj] = df[obj].fillna("")
    df["name"] = [str(n) if str(n) else Path(str(p)).name for n, p in zip(df["name"], df["path"])]
    df["id"] = df["id"].astype(str)
    return df


def from_manifest(manifest: str | Path, *, name: str = "sample", kind: str = "sample") -> Dataset:
    manifest = Path(manifest)
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    num = [c for c in df.columns if c.endswith("_mm") or c in ("noise_sigma", "blur_sigma", "slice_index")]
    for c in num:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    df = _add_series_volumes(df)
    return Dataset(name=name, root=manifest.parent, entries=_normalise(df), kind=kind)


def _add_series_volumes(df: pd.DataFrame) -> pd.DataFrame:
    """For slices listed with role ``series``, add one volume entry per folder (loaded by
    the series loader: sorted by ImagePositionPatient into a (P, M, N) volume)."""
    if "role" not in df.columns or not (df["role"] == "series").any():
        return df
    rows = []
    for folder, grp in df[df["role"] == "series"].groupby(df["path"].map(lambda p: str(Path(p).parent))):
        first = grp.iloc[0].to_dict()
        rows.append({**{k: "" for k in df.columns}, "id": f"volume_{Path(folder).name}", "path": folder,
                     "name": f"{Path(folder).name}/ ({len(grp)} slices, volume)", "format": "dicom series",
                     "modality": first.get("modality", ""), "subject": first.get("subject", ""), "role": "series volume"})
    return pd.concat([df, pd.DataFrame(rows)], ignore_index=True)


def load_sample() -> Dataset:
    path = sample_manifest_path()
    if not path.exists():
        raise FileNotFoundError(
            f"sample dataset not built yet: run `make sample` (or `python data/build_sample.py`) to create {path}"
        )
    return from_manifest(path)


def entry_path(entry: dict[str, Any], column: str = "path") -> Path:
    p = Path(str(entry[column]))
    if not p.is_absolute() and entry.get("root"):
        p = Path(str(entry["root"])) / p
    return p


def load_entry(entry: dict[str, Any]) -> Image:
    """Load one entry as an Image (stored upload, folder series, or file)."""
    from analysis.store import SUFFIX, load_stored

    p = entry_path(entry)
    if p.name.endswith(SUFFIX):
        return load_stored(p)
    from analysis import io

    if p.is_dir():
        images = io.load_path(p)
        if not images:
            raise io.LoadError(p.name, "no image in this folder")
        return images[0]
    return io.load_image(p)


def load_aux(entry: dict[str, Any], column: str) -> Any:
    """Load an auxiliary file of an entry (mask PNG, clean reference, label map, field .npy)."""
    import numpy as np

    val = str(entry.get(column, "") or "")
    if not val:
        return None
    p = entry_path(entry, column)
    if p.suffix == ".npy":
        return np.load(p, allow_pickle=False)
    img = load_entry({**entry, "path": str(p), "root": ""})
    arr = img.grey() if not img.is_rgb else img.grey()
    if column == "mask_path":
        return arr > 0
    return arr


# ----------------------------------------------------------------------------- folders
def _series_uid(path: Path) -> str | None:
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID", "NumberOfFrames"])
        uid = getattr(ds, "SeriesInstanceUID", None)
        return str(uid) if uid else None
    except Exception:  # noqa: BLE001 - not DICOM or unreadable: handled later by the loader
        return None


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def scan_folder(
    folder: str | Path,
    *,
    max_files: int = 200_000,
    progress: Callable[[int, int], None] | None = None,
) -> Dataset:
    """Index a server-side folder (no pixel decoding). Hidden files are skipped."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder.name or folder}")
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if fn.startswith("."):
                continue
            p = Path(dirpath) / fn
            if p.is_symlink() or not p.is_file():
                continue
            if p.suffix.lower() in IMAGE_SUFFIXES or p.name.endswith(".nii.gz"):
                files.append(p)
            if len(files) >= max_files:
                break
    # group single-series folders of 2-D DICOM slices
    by_dir: dict[Path, list[Path]] = {}
    for p in files:
        by_dir.setdefault(p.parent, []).append(p)
    rows: list[dict[str, Any]] = []
    total = len(files)
    done = 0
    for d, members in by_dir.items():
        dicoms = [p for p in members if _is_dicom_file(p)]
        series = {_series_uid(p) for p in dicoms} if len(dicoms) >= 3 else set()
        grouped = len(dicoms) >= 3 and len(series) == 1 and None not in series and len(dicoms) == len(members)
        rel_dir = d.relative_to(folder)
        label = rel_dir.parts[0] if rel_dir.parts else ""
        if grouped:
            rows.append({"path": str(rel_dir) if str(rel_dir) != "." else ".", "name": f"{d.name}/ ({len(dicoms)} slices)",
                         "format": "dicom series", "label": label, "role": "series"})
        else:
            for p in members:
                rows.append({"path": str(p.relative_to(folder)), "name": p.name, "format": p.suffix.lower().lstrip(".") or "dicom?",
                             "label": label, "role": "folder"})
        done += len(members)
        if progress:
            progress(done, total)
    df = pd.DataFrame(rows, columns=["path", "name", "format", "label", "role"])
    df.insert(0, "id", [f"f{k:06d}" for k in range(len(df))])
    return Dataset(name=f"folder {folder.name}", root=folder, entries=_normalise(df), kind="folder")


# ----------------------------------------------------------------------------- uploads
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def ingest_uploads(
    files: Iterable[tuple[str, bytes]],
    store_dir: str | Path,
    *,
    limits: Any = None,
    existing: Dataset | None = None,
) -> Dataset:
    """Load uploaded files (any supported format, ZIPs included) into a session folder.

    Every loaded image is stored as a private ``.mlimg.npz`` named by its digest;
    unreadable files (and unreadable entries of a ZIP) become ``errors`` rows
    ``{"file", "reason"}`` and the rest goes on. Images already in ``existing`` are kept
    (nothing stored is lost). Decoding runs in a worker process
    (:func:`analysis.sandbox.load_bytes_isolated`): a decoder crash or hang becomes an error
    row, never a crash of the server.
    """
    import json

    from analysis import io, sandbox
    from analysis.store import save_image

    store_dir = Path(store_dir)
    store_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    if existing is not None and len(existing):
        rows = existing.entries.to_dict("records")
    seen = {r["id"] for r in rows}
    for name, data in files:
        entry_errors: list[io.LoadError] = []
        preview: list[dict] = []
        try:
            images = sandbox.load_bytes_isolated(data, name, limits=limits, errors=entry_errors, removal_preview=preview,
                                                 timeout=sandbox.timeout_for(len(data)))
        except io.LoadError as exc:
            errors.append({"file": exc.filename, "reason": exc.reason})
            continue
        except Exception as exc:  # noqa: BLE001 - never let one upload take the page down
            errors.append({"file": name, "reason": f"could not be read ({type(exc).__name__})"})
            continue
        errors.extend({"file": e.filename, "reason": e.reason} for e in entry_errors)
        if not images and not entry_errors:
            errors.append({"file": name, "reason": "no images found in this file"})
        for img in images:
            eid = "u" + hashlib.sha256(img.digest.encode()).hexdigest()[:12]
            if eid in seen:
                continue
            seen.add(eid)
            stored = save_image(img, store_dir / (_SAFE.sub("_", eid)))
            rows.append({
                "id": eid, "path": stored.name, "name": img.name, "format": img.source_format,
                "modality": img.modality, "label": "", "role": "upload",
                # what a DICOM export would remove (tags and actions only, never values): ui.privacy
                "deid_preview": json.dumps(preview) if preview and len(images) == 1 else "",
            })
    df = pd.DataFrame(rows) if rows else pd.DataFrame(columns=ENTRY_COLUMNS)
    return Dataset(name="uploads", root=store_dir, entries=_normalise(df), kind="upload", errors=errors)
