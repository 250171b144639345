"""Private on-disk format for already-loaded images (uploads, derived images).

An ``.mlimg.npz`` holds the pixel array and a JSON header (spacing, units, window, safe
metadata). It is written with ``allow_pickle=False`` semantics and read back with
``allow_pickle=False``: no code can hide in it. Only the app writes these, inside its own
folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from analysis.image import Image

SUFFIX = ".mlimg.npz"


def _jsonable(v):  # type: ignore[no-untyped-def]
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def save_image(image: Image, path: str | Path) -> Path:
    path = Path(path)
    if not path.name.endswith(SUFFIX):
        path = path.with_name(path.name + SUFFIX)
    header = {
        "name": image.name,
        "spacing": list(image.spacing) if image.spacing else None,
        "slice_spacing": image.slice_spacing,
        "units": image.units,
        "modality": image.modality,
        "window": list(image.window) if image.window else None,
        "invert": image.invert,
        "stack": image.stack,
        "source_format": image.source_format,
        "metadata": _jsonable(image.metadata),
        "digest": image.digest,
        "voi_lut_first": image.voi_lut_first,
    }
    arrays = {"pixels": np.asarray(image.pixels), "header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
    if image.voi_lut is not None:
        arrays["voi_lut"] = np.asarray(image.voi_lut)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    tmp.replace(path)
    return path


def load_stored(path: str | Path) -> Image:
    with np.load(Path(path), allow_pickle=False) as z:
        header = json.loads(bytes(z["header"]).decode())
        pixels = z["pixels"]
        lut = z["voi_lut"] if "voi_lut" in z.files else None
    return Image(
        pixels=pixels,
        name=header["name"],
        spacing=tuple(header["spacing"]) if header["spacing"] else None,
        slice_spacing=header["slice_spacing"],
        units=header["units"],
        modality=header["modality"],
        window=tuple(header["window"]) if header["window"] else None,
        invert=bool(header["invert"]),
        stack=header["stack"],
        source_format=header["source_format"],
        metadata=header["metadata"],
        digest=header["digest"],
        voi_lut=lut,
        voi_lut_first=header.get("voi_lut_first", 0.0),
    )
