"""Catalog: ingest (rows, statistics in HU, failures), incremental / changed files,
pseudonymous keys and no identifier in the database bytes, read-only readers during a
write, quality rules, mining (scanner effect, outliers, duplicates), exports."""

from __future__ import annotations

import csv
import os
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from analysis.dataset import sample_manifest_path

from analysis import catalog as cat
from analysis.batch import SerialEngine
from analysis.dicomwrite import deterministic_uid, read_physical, write_dicom
from analysis.metrics import entropy
from analysis.privacy import pseudonym

ROOT = Path(__file__).resolve().parents[2]
CANARY = {"PatientName": "CANARY^QUOKKA", "PatientID": "CANARY-PID-4242", "InstitutionName": "CANARY INSTITUTE",
          "AccessionNumber": "CANARYACC77", "ReferringPhysicianName": "CANARY^REFERRER"}


def _head(rng: np.random.Generator, size: int = 64, noise: float = 5.0, tissue: float = 40.0) -> np.ndarray:
    rr, cc = np.mgrid[:size, :size]
    body = (rr - size / 2) ** 2 / (0.42 * size) ** 2 + (cc - size / 2) ** 2 / (0.36 * size) ** 2 < 1
    hu = np.where(body, tissue, -1000.0)
    return hu + rng.normal(0, noise, hu.shape)


def _ct(path: Path, hu: np.ndarray, *, series: str, k: int = 0, manufacturer: str = "Vendor A", kvp: int = 120,
        spacing=(0.8, 0.8), subject: str = "1", **kw) -> Path:
    extra = {"Manufacturer": manufacturer, "KVP": kvp, "InstitutionName": CANARY["InstitutionName"],
             "AccessionNumber": CANARY["AccessionNumber"], "ReferringPhysicianName": CANARY["ReferringPhysicianName"],
             "SeriesDescription": f"Head for {CANARY['PatientName']}{subject}"}  # a name in free text is scrubbed
    extra.update(kw.pop("extra", {}))
    return write_dicom(path, hu, modality="CT", spacing=spacing, rescale_intercept=-1024.0, window=(40.0, 400.0),
                       dtype=np.int16, series_uid=deterministic_uid("series", series),
                       study_uid=deterministic_uid("study", series), instance_number=k + 1,
                       position=(0.0, 0.0, 5.0 * k), slice_thickness=5.0, uid_seed=f"{series}-{k}",
                       patient_name=CANARY["PatientName"] + subject, patient_id=CANARY["PatientID"] + subject,
                       extra=extra, **kw)


def make_folder(root: Path) -> dict[str, object]:
    """A small mixed folder with known content. Returns what the tests expect."""
    rng = np.random.default_rng(7)
    for k in range(4):
        _ct(root / "headA" / f"a{k}.dcm", _head(rng), series="A", k=k)
    for k in range(3):
        _ct(root / "headB" / f"b{k}.dcm", _head(rng, noise=12.0), series="B", k=k, manufacturer="Vendor B",
            kvp=100, subject="2")
    # flat noisy field with known sigma: for the noise estimator
    write_dicom(root / "flat" / "flat.dcm", 100.0 + rng.normal(0, 10.0, (128, 128)), modality="MR", spacing=(1.0, 1.0),
                dtype=np.int16, uid_seed="flat", patient_name=CANARY["PatientName"], patient_id=CANARY["PatientID"])
    # MONOCHROME1 radiograph (12-bit) and a constant image
    cr = np.clip(2000 + rng.normal(0, 50, (96, 80)), 0, 4095)
    write_dicom(root / "xr" / "chest.dcm", cr, modality="CR", spacing=(0.2, 0.2), photometric="MONOCHROME1",
                window=(2000, 600), dtype=np.uint16, uid_seed="cr", extra={"BitsStored": 12, "HighBit": 11})
    write_dicom(root / "xr" / "blank.dcm", np.full((32, 32), 500.0), modality="CR", spacing=(0.2, 0.2), dtype=np.uint16,
                window=(500, 100), uid_seed="blank")
    # a PNG (no DICOM tags at all: must not be flagged by quality rules)
    (root / "photos").mkdir()
    cv2.imwrite(str(root / "photos" / "grey.png"), (rng.random((40, 50)) * 255).astype(np.uint8))
    # failures: truncated DICOM, a file that is no image, a ZIP
    good = (root / "headA" / "a0.dcm").read_bytes()
    (root / "broken").mkdir()
    (root / "broken" / "truncated.dcm").write_bytes(good[: len(good) - 3000])
    (root / "broken" / "notes.bin").write_bytes(b"this is not an image at all\n" * 20)
    (root / "broken" / "archive.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    (root / "README.txt").write_text("skipped: not an image")
    return {"ok": 4 + 3 + 1 + 2 + 1, "failed": 3}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("catalog_src")
    make_folder(root)
    return root


@pytest.fixture(scope="module")
def salt() -> bytes:
    return cat.load_salt()


@pytest.fixture(scope="module")
def built(folder, tmp_path_factory):
    db = tmp_path_factory.mktemp("catalog_db") / "c.duckdb"
    rep = cat.ingest(folder, catalog=db, engine=SerialEngine(), batch_size=4)
    return cat.Catalog(db), rep


def _rows(c: cat.Catalog) -> pd.DataFrame:
    with c.reader() as con:
        return con.execute("SELECT * EXCLUDE (thumb) FROM images ORDER BY path").df()


# ----------------------------------------------------------------------------- ingest
def test_ingest_row_count_and_failure_reasons(built):
    c, rep = built
    df = _rows(c)
    assert len(df) == 14 and rep.added == 14 and rep.failed == 3
    assert "README.txt" not in set(df["path"])
    reasons = dict(zip(df.loc[df.status == "failed", "path"], df.loc[df.status == "failed", "error"]))
    assert set(reasons) == {"broken/truncated.dcm", "broken/notes.bin", "broken/archive.zip"}
    assert "truncated" in reasons["broken/truncated.dcm"]
    assert "ZIP" in reasons["broken/archive.zip"]
    assert reasons["broken/notes.bin"]
    assert (df.loc[df.status == "ok", "error"].isna()).all()
    assert set(df.loc[df.path.str.startswith("headB"), "label"]) == {"headB"}  # class = first sub-folder


def test_statistics_exact_in_hu(built, folder):
    c, _ = built
    row = _rows(c).set_index("path").loc["headA/a1.dcm"]
    hu = read_physical(folder / "headA" / "a1.dcm")
    assert row["units"] == "HU" and row["modality"] == "CT"
    assert row["min_value"] == hu.min() and row["max_value"] == hu.max()
    assert row["mean"] == pytest.approx(hu.mean(), rel=1e-12)
    assert row["std"] == pytest.approx(hu.std(), rel=1e-9)
    for q in cat.PERCENTILES:
        assert row[f"p{q:02d}"] == pytest.approx(np.percentile(hu, q), abs=1e-9), q
    assert row["entropy"] == pytest.approx(entropy(hu), abs=1e-9)
    lap = cv2.Laplacian(hu.astype(np.float64), cv2.CV_64F, ksize=1)
    assert row["sharpness"] == pytest.approx(lap.var(), rel=1e-4)
    # background: air outside the ellipse (≤ −900 HU)
    assert row["background_fraction"] == pytest.approx((hu <= -900).mean(), abs=1e-12)
    assert row["rows"] == 64 and row["spacing_row_mm"] == pytest.approx(0.8) and row["kvp"] == 120
    assert row["window_center"] == 40 and row["rescale_intercept"] == -1024


def test_noise_estimate_and_snr_on_flat_field(built):
    c, _ = built
    row = _rows(c).set_index("path").loc["flat/flat.dcm"]
    assert row["noise_sigma"] == pytest.approx(10.0, rel=0.06)  # Immerkær on a flat field, σ = 10
    assert row["units"] == "a.u."


def test_monochrome1_thumbnail_is_inverted_and_hashes_present(built):
    c, _ = built
    with c.reader() as con:
        thumbs = cat.thumbnails(con, [(r, p) for r, p in con.execute(
            "SELECT root_id, path FROM images WHERE path IN ('xr/chest.dcm', 'headA/a0.dcm')").fetchall()])
        h = con.execute("SELECT dhash, phash FROM images WHERE status = 'ok'").fetchall()
    assert len(thumbs) == 2 and all(v[:8] == b"\x89PNG\r\n\x1a\n" for v in thumbs.values())
    assert all(a is not None and b is not None for a, b in h)
    head = cv2.imdecode(np.frombuffer(next(v for k, v in thumbs.items() if k[1] == "headA/a0.dcm"), np.uint8), 0)
    assert head.shape == (64, 64)
    assert head[0, 0] == 0 and head[32, 32] > 100  # CT window 40/400: air black, tissue grey-white


def test_second_ingest_adds_nothing_and_changed_file_is_updated(folder, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(folder, src)
    db = tmp_path / "c.duckdb"
    first = cat.ingest(src, catalog=db, engine=SerialEngine())
    c = cat.Catalog(db)
    before = _rows(c)
    again = cat.ingest(src, catalog=db, engine=SerialEngine())
    assert (again.added, again.updated, again.total, again.unchanged) == (0, 0, 0, first.added)
    assert c.count() == len(before)
    # same bytes, new mtime: re-hashed, not re-processed
    f = src / "headA" / "a2.dcm"
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    touched = cat.ingest(src, catalog=db, engine=SerialEngine())
    assert (touched.added, touched.updated, touched.touched) == (0, 0, 1)
    # new content: the row is replaced (same count), statistics follow the new pixels
    _ct(f, _head(np.random.default_rng(99), tissue=300.0), series="A", k=2)
    changed = cat.ingest(src, catalog=db, engine=SerialEngine())
    assert (changed.added, changed.updated) == (0, 1)
    after = _rows(c).set_index("path")
    assert len(after) == len(before)
    assert after.loc["headA/a2.dcm", "content_hash"] != before.set_index("path").loc["headA/a2.dcm", "content_hash"]
    assert after.loc["headA/a2.dcm", "p95"] == pytest.approx(np.percentile(read_physical(f), 95))
    # a deleted file leaves the catalog
    (src / "photos" / "grey.png").unlink()
    gone = cat.ingest(src, catalog=db, engine=SerialEngine())
    assert gone.removed == 1 and c.count() == len(before) - 1


def test_no_patient_identifier_in_database_bytes(built, folder, tmp_path):
    import pydicom

    c, _ = built
    ds = pydicom.dcmread(folder / "headA" / "a0.dcm")
    raw_ids = [str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
    blobs = b"".join(p.read_bytes() for p in c.path.parent.iterdir() if p.name.startswith(c.path.name))
    out_csv, out_pq = c.export(tmp_path / "x.csv"), c.export(tmp_path / "x.parquet")
    blobs += out_csv.read_bytes() + out_pq.read_bytes()
    for canary in list(CANARY.values()) + ["CANARY", "QUOKKA"] + raw_ids:
        for form in {canary, canary.replace("^", " "), canary.lower()}:
            assert form.encode() not in blobs, form
    df = _rows(c)
    desc = df.loc[df.path == "headA/a0.dcm", "series_description"].iloc[0]
    assert desc == "Head for [removed]"


def test_pseudonymous_keys_group_without_raw_ids(built, folder, salt):
    import pydicom

    c, _ = built
    df = _rows(c)
    a, b = df[df.path.str.startswith("headA")], df[df.path.str.startswith("headB")]
    assert a["series_key"].nunique() == 1 and b["series_key"].nunique() == 1
    assert a["series_key"].iloc[0] != b["series_key"].iloc[0]
    assert a["subject_key"].nunique() == 1 and a["subject_key"].iloc[0] != b["subject_key"].iloc[0]
    ds = pydicom.dcmread(folder / "headA" / "a0.dcm")
    assert a["series_key"].iloc[0] == pseudonym(str(ds.SeriesInstanceUID), salt)
    assert a["subject_key"].iloc[0] == pseudonym(CANARY["PatientID"] + "1", salt)


def test_salt_is_created_once_and_private(tmp_path):
    s1 = cat.load_salt(tmp_path)
    s2 = cat.load_salt(tmp_path)
    assert s1 == s2 and len(s1) == 32
    assert (tmp_path / "pseudonym_salt.key").stat().st_mode & 0o077 == 0
    assert cat.load_salt(tmp_path / "other") != s1


def test_catalog_refuses_another_salt(folder, tmp_path):
    db = tmp_path / "c.duckdb"
    cat.ingest(folder / "headA", catalog=db, engine=SerialEngine())
    with pytest.raises(ValueError, match="salt"):
        cat.ingest(folder / "headB", catalog=db, engine=SerialEngine(), salt=b"x" * 32)


def test_readers_work_while_an_ingest_writes(folder, tmp_path):
    """Two readers during a write: read-only connections or the writer's snapshot; counts
    only grow; the file is intact afterwards."""
    db = tmp_path / "c.duckdb"
    c = cat.Catalog(db)
    cat.ingest(folder / "headA", catalog=db, engine=SerialEngine())
    seen: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read_loop() -> None:
        while not stop.is_set():
            try:
                with c.reader(wait_s=20) as con:
                    seen.append(int(con.execute("SELECT count(*) FROM images").fetchone()[0]))
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
            time.sleep(0.01)

    readers = [threading.Thread(target=read_loop) for _ in range(2)]
    for t in readers:
        t.start()
    slow = [0]

    def progress(done: int, total: int) -> None:
        slow[0] += 1
        time.sleep(0.15)  # give the readers time to arrive during the write

    cat.ingest(folder, catalog=db, engine=SerialEngine(), batch_size=2, progress=progress)
    time.sleep(0.2)
    stop.set()
    for t in readers:
        t.join()
    assert not errors, errors
    # headA/ and the whole folder are two roots: 4 + 14 rows once both are in
    assert seen and min(seen) >= 4 and max(seen) == 18
    assert c.count() == 18 and not c.snapshot_path.exists()


# ----------------------------------------------------------------------------- sample dataset
def test_sample_dataset_ingest_matches_manifest(tmp_path):
    man = sample_manifest_path()
    with open(man, newline="") as fh:
        rows = list(csv.DictReader(fh))
    db = tmp_path / "s.duckdb"
    rep = cat.ingest(man.parent, catalog=db, engine=SerialEngine(), kind="sample")
    df = _rows(cat.Catalog(db))
    assert len(df) == len(rows) and rep.failed == 0, rep.errors
    by_path = df.set_index("path")
    for r in rows:
        got = by_path.loc[r["path"]]
        assert (got["label"] if isinstance(got["label"], str) else "") == r["label"], r["path"]
        if r["format"] == "dicom":
            assert got["modality"] == r["modality"], r["path"]
    # the sample's CT cohort is in HU: air near −1000, two simulated scanners
    cohort = df[df.path.str.startswith("cohort/")]
    assert cohort["p01"].between(-1100, -900).all()
    assert set(cohort["manufacturer"]) == {"MedLensSim A", "MedLensSim B"}


# ----------------------------------------------------------------------------- quality
def test_quality_rules_flag_medical_problems_only(built):
    c, _ = built
    with c.reader() as con:
        rep = cat.quality_report(con)
    flagged = {(r.rule, r.path) for r in rep.itertuples()}
    assert ("MONOCHROME1", "xr/chest.dcm") in flagged
    assert ("constant image", "xr/blank.dcm") in flagged
    assert ("mixed bit depth", "xr/chest.dcm") in flagged or ("mixed bit depth", "xr/blank.dcm") in flagged
    # ordinary images (CT with complete tags, a PNG, an MR) raise nothing
    for clean in ("headA/a0.dcm", "headB/b1.dcm", "photos/grey.png"):
        assert not any(p == clean for _, p in flagged), [f for f in flagged if f[1] == clean]


def _qrow(**kw):
    base = dict(root_id="r", path="p", modality="CT", format="dicom", photometric="MONOCHROME2", rows=64, cols=64,
                spacing_row_mm=0.8, spacing_col_mm=0.8, slice_thickness_mm=5.0, slice_position_mm=0.0, bits_stored=16,
                window_center=40.0, window_width=400.0, rescale_slope=1.0, rescale_intercept=-1024.0, rescale_type="HU",
                series_key="s1", min_value=-1024.0, max_value=1200.0, std=300.0, p50=-500.0, subair_fraction=0.0)
    base.update(kw)
    return base


def test_quality_rules_on_known_rows():
    rows = [_qrow(path=f"ok{k}", slice_position_mm=5.0 * k) for k in range(4)]
    rows += [
        _qrow(path="raw", series_key="s2", min_value=0.0, max_value=4095.0, p50=1000.0, rescale_slope=None,
              rescale_intercept=None),
        _qrow(path="badwin", series_key="s3", window_center=3000.0, window_width=100.0),
        _qrow(path="cold", series_key="s4", subair_fraction=0.2),
        _qrow(path="sp1", series_key="s5", spacing_row_mm=0.7, spacing_col_mm=0.7),
        _qrow(path="sp2", series_key="s5", spacing_row_mm=0.9, spacing_col_mm=0.9, slice_position_mm=5.0),
    ]
    rows += [_qrow(path=f"gap{k}", series_key="s6", slice_position_mm=z) for k, z in enumerate([0, 5, 10, 20, 25])]
    rep = cat.quality_rules(pd.DataFrame(rows))
    got = {(r.rule, r.path) for r in rep.itertuples()}
    assert {("rescale missing", "raw"), ("HU range not CT", "raw"), ("window implausible", "badwin"),
            ("HU range not CT", "cold"), ("spacing inconsistent in series", "sp1"),
            ("spacing inconsistent in series", "sp2")} <= got
    assert {("slice positions irregular", f"gap{k}") for k in range(5)} <= got
    assert not any(p.startswith("ok") for _, p in got)
    assert "10.00 mm" in rep.loc[rep.path == "gap0", "detail"].iloc[0]


# ----------------------------------------------------------------------------- mining
@pytest.fixture(scope="module")
def scanners(tmp_path_factory):
    """Two scanners (noise σ 4 vs 30, kVp 120 vs 80), random clinical label, one odd image,
    one exact and one near duplicate."""
    root = tmp_path_factory.mktemp("scanners")
    rng = np.random.default_rng(3)
    labels = rng.permutation(["lesion", "normal"] * 12)
    for k in range(24):
        vendor = "Vendor A" if k < 12 else "Vendor B"
        hu = _head(rng, noise=4.0 if k < 12 else 30.0, tissue=float(rng.uniform(30, 50)))
        _ct(root / labels[k] / f"img{k:02d}.dcm", hu, series=f"S{k}", manufacturer=vendor, kvp=120 if k < 12 else 80)
    odd = _head(rng, noise=4.0, tissue=900.0)  # bone-dense phantom: unlike everything else
    _ct(root / "normal" / "odd.dcm", odd, series="odd")
    shutil.copy(root / labels[0] / "img00.dcm", root / "normal" / "copy_of_img00.dcm")
    near = read_physical(root / labels[1] / "img01.dcm") + rng.normal(0, 0.6, (64, 64))
    _ct(root / "normal" / "near_img01.dcm", near, series="near")
    db = tmp_path_factory.mktemp("scan_db") / "c.duckdb"
    cat.ingest(root, catalog=db, engine=SerialEngine())
    with cat.Catalog(db).reader() as con:
        df = con.execute("SELECT * EXCLUDE (thumb) FROM images WHERE status = 'ok' ORDER BY path").df()
    return df, labels


def test_clusters_are_explained_by_the_scanner_not_the_label(scanners):
    df, _ = scanners
    X, names = cat.feature_matrix(df, ["noise_sigma", "std", "entropy", "sharpness", "snr"])
    labels = cat.cluster(X, "kmeans", k=2)
    ranking = cat.explain_clusters(labels, df, ["manufacturer", "kvp", "label"])
    assert ranking["tag"].iloc[0] in ("manufacturer", "kvp")
    top = ranking.set_index("tag")
    assert top.loc["manufacturer", "adjusted_mi"] > 0.8
    assert top.loc["label", "adjusted_mi"] < 0.2
    assert top.loc["manufacturer", "mutual_information_bits"] > 0.8  # ≈ 1 bit for two balanced scanners


def test_outlier_ranked_first_with_its_driving_feature(scanners):
    df, _ = scanners
    X, names = cat.feature_matrix(df, cat.FEATURE_COLUMNS)
    for method in ("iforest", "lof"):
        out = cat.outliers(X, names, method, seed=0)
        top = int(np.argmax(out["score"].to_numpy()))
        assert df["path"].iloc[top] == "normal/odd.dcm", method
    drivers = out["drivers"].iloc[top]
    # a bone-dense phantom: its intensity statistics drive the score
    assert drivers.split(" z=")[0] in ("mean", "std", "p75", "p95", "p99", "sharpness"), drivers


def test_exact_and_near_duplicates(scanners):
    df, labels = scanners
    groups = cat.duplicate_groups(df)
    exact = groups[groups.kind == "exact"]
    assert set(exact["path"]) == {f"{labels[0]}/img00.dcm", "normal/copy_of_img00.dcm"}
    near = groups[groups.kind == "near"]
    assert set(near["path"]) == {f"{labels[1]}/img01.dcm", "normal/near_img01.dcm"}


def test_embeddings_shapes_and_separation(scanners):
    df, _ = scanners
    X, _ = cat.feature_matrix(df, ["noise_sigma", "std", "entropy", "sharpness"])
    vendor = df["manufacturer"].eq("Vendor B").to_numpy()
    for method in ("pca", "tsne"):
        Y = cat.embed(X, method, seed=0)
        assert Y.shape == (len(df), 2)
        # the two scanners land apart along some direction of the embedding
        gap = np.abs(Y[vendor].mean(axis=0) - Y[~vendor].mean(axis=0)).max()
        assert gap > 2 * max(Y[vendor].std(axis=0).min(), Y[~vendor].std(axis=0).min()), method


# ----------------------------------------------------------------------------- queries / export
def test_filters_and_aggregates(built):
    c, _ = built
    with c.reader() as con:
        flt = cat.Filters(values={"manufacturer": ["Vendor B"]})
        assert cat.total(con, flt) == 3
        rows = con.execute("SELECT modality, noise_sigma FROM images WHERE status = 'ok'").df()
        thr = float(rows.loc[rows.modality == "CT", "noise_sigma"].median())
        flt2 = cat.Filters(values={"modality": ["CT"]}, ranges={"noise_sigma": (0.0, thr)})
        expect = int(((rows.modality == "CT") & rows.noise_sigma.between(0.0, thr)).sum())
        assert cat.total(con, flt2) == expect and 0 < expect < 7
        missing = cat.Filters(values={"manufacturer": [cat.MISSING]})
        assert cat.total(con, missing) == 1  # only the PNG has no Manufacturer
        h = cat.histogram(con, "mean", cat.Filters(), group="modality", bins=10)
        assert int(h["n"].sum()) == 11 and set(h["grp"]) >= {"CT", "CR"}
        counts = cat.counts_by(con, "manufacturer")
        assert dict(zip(counts.value, counts.n))["Vendor A"] == 4
        corr = cat.correlation(con, ["mean", "p50", "std"])
        assert corr.loc["mean", "p50"] > 0.5 and corr.loc["std", "std"] == 1
        s = cat.sample_rows(con, ["mean"], cat.Filters(), n=5)
        assert len(s) == 5 and {"root_id", "path", "mean"} <= set(s.columns)
        with pytest.raises(ValueError, match="unknown catalog column"):
            cat.counts_by(con, "mean; DROP TABLE images")
        assert len(cat.failures(con)) == 3


def test_export_parquet_and_csv_roundtrip(built, tmp_path):
    c, _ = built
    pq = pd.read_parquet(c.export(tmp_path / "all.parquet"))
    cs = pd.read_csv(c.export(tmp_path / "ct.csv", where="modality = ?", params=["CT"]))
    assert len(pq) == 14 and "thumb" not in pq.columns and "p99" in pq.columns
    assert len(cs) == 7 and set(cs["modality"]) == {"CT"}


def test_uploads_folder_of_stored_images_is_catalogued(tmp_path):
    """The page ingests a session's uploads folder: private .mlimg.npz files in physical units."""
    from analysis.image import Image
    from analysis.store import save_image

    hu = _head(np.random.default_rng(1)).astype(np.float32)
    save_image(Image(hu, name="upload.dcm", spacing=(0.8, 0.8), units="HU", modality="CT", window=(40.0, 400.0),
                     source_format="dicom"), tmp_path / "uploads" / "u1")
    db = tmp_path / "session.duckdb"
    rep = cat.ingest(tmp_path / "uploads", catalog=db, engine=SerialEngine(), kind="upload")
    row = _rows(cat.Catalog(db)).iloc[0]
    assert rep.added == 1 and row["status"] == "ok" and row["modality"] == "CT"
    assert row["mean"] == pytest.approx(float(hu.astype(np.float64).mean()), rel=1e-6)
    assert row["p50"] == pytest.approx(float(np.percentile(hu.astype(np.float64), 50)), abs=1e-3)
    assert row["spacing_row_mm"] == pytest.approx(0.8)
