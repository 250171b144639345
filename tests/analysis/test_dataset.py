"""Working-dataset model: manifest, folder scan (series → one volume entry), uploads stored
privately with per-file errors, and loading entries."""

from __future__ import annotations

import io as _io
import zipfile

import numpy as np
import pytest
from PIL import Image as PILImage

from analysis import dataset as ds
from analysis.io import LoadError
from tests.helpers.dicom import CANARIES, ct_dicom


def _series(folder, n=5):
    import pydicom
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    for k in range(n):
        hu = np.full((16, 16), float(k * 100), np.float32)
        data = ct_dicom(hu=hu, canaries=False)
        d = pydicom.dcmread(_io.BytesIO(data))
        d.SeriesInstanceUID = series_uid
        d.ImagePositionPatient = [0, 0, float(k * 2.5)]
        d.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        d.InstanceNumber = n - k
        d.save_as(folder / f"IM{(k * 7) % n:03d}.dcm", enforce_file_format=True)


def test_scan_folder_labels_from_subfolders_and_groups_series(tmp_path):
    for label in ("normal", "lesion"):
        (tmp_path / label).mkdir()
        for i in range(2):
            PILImage.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / label / f"img{i}.png")
    _series(tmp_path / "ct_series")
    (tmp_path / ".hidden.png").write_bytes(b"x")
    d = ds.scan_folder(tmp_path)
    e = d.entries
    assert sorted(e[e["role"] == "folder"]["label"]) == ["lesion", "lesion", "normal", "normal"]
    series = e[e["role"] == "series"]
    assert len(series) == 1 and "5 slices" in series.iloc[0]["name"]
    vol = ds.load_entry(d.entry(series.iloc[0]["id"]))
    assert vol.pixels.shape == (5, 16, 16) and vol.stack == "slice"
    # sorted by position, not by file name or instance number
    assert [float(vol.pixels[k].mean()) for k in range(5)] == [0.0, 100.0, 200.0, 300.0, 400.0]
    assert vol.slice_spacing == pytest.approx(2.5)
    assert ".hidden.png" not in set(e["name"])


def test_ingest_uploads_stores_images_lists_errors_and_keeps_existing(tmp_path):
    good = ct_dicom()
    png = _io.BytesIO()
    PILImage.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(png, format="PNG")
    zbuf = _io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("study/a.png", png.getvalue())
        z.writestr("../evil.png", png.getvalue())
    first = ds.ingest_uploads([("scan.dcm", good), ("empty.dcm", b""), ("folder.zip", zbuf.getvalue())], tmp_path / "s1")
    names = set(first.entries["name"])
    assert "scan.dcm" in names and any("a.png" in n for n in names)
    files = {e["file"] for e in first.errors}
    assert "empty.dcm" in files and any("evil" in f for f in files)
    assert all(e["reason"] for e in first.errors)
    # nothing written outside the session folder; stored files are the private format
    assert all(p.name.endswith(".mlimg.npz") for p in (tmp_path / "s1").iterdir())
    assert not (tmp_path / "evil.png").exists()
    # the stored image keeps HU, spacing, window — and no identifiers
    entry = first.entry(first.entries[first.entries["name"] == "scan.dcm"]["id"].iloc[0])
    img = ds.load_entry(entry)
    assert img.units == "HU" and img.spacing == pytest.approx((0.5, 0.75))
    assert img.pixels.max() == pytest.approx(60.0) and img.pixels.min() == pytest.approx(-1000.0)
    blob = b"".join(p.read_bytes() for p in (tmp_path / "s1").iterdir())
    for v in CANARIES.values():
        assert v.encode() not in blob
    # a second upload keeps what is stored; re-uploading the same image adds nothing
    second = ds.ingest_uploads([("scan_again.dcm", good), ("bad.png", b"not a png")], tmp_path / "s1", existing=first)
    assert len(second) == len(first)
    assert [e["file"] for e in second.errors] == ["bad.png"]


def test_sample_manifest_has_series_volume_and_pairs():
    d = ds.from_manifest(ds.sample_manifest_path())
    vols = d.entries[d.entries["role"] == "series volume"]
    assert len(vols) == 1
    vol = ds.load_entry(d.entry(vols.iloc[0]["id"]))
    assert vol.n_planes == 12 and vol.units == "HU"
    assert d.pairs(("fixed", "moving"))
    assert (d.entries["name"].astype(str) != "").all()


def test_load_entry_missing_file_raises_load_error(tmp_path):
    with pytest.raises(LoadError):
        ds.load_entry({"path": "nope.dcm", "root": str(tmp_path)})
