"""The built-in sample dataset: content, ground truth and determinism.

Builds the dataset once per module into a temp folder (about 10 s) and checks it against
its own stored ground truth with independent code (pydicom, Pillow, tifffile, scipy).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image as PILImage
from scipy import ndimage as ndi

from data import build_sample as bs

ROLES = {"cohort", "multimodal", "registration", "reference", "real", "series"}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "sample"
    return bs.build(out)


@pytest.fixture(scope="module")
def rows(built) -> list[dict[str, str]]:
    return bs.read_manifest(built)


@pytest.fixture(scope="module")
def root(built) -> Path:
    return built.parent


def _by(rows, **kw):
    return [r for r in rows if all(r[k] == v for k, v in kw.items())]


def _dicom_hu(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def _load(root: Path, rel: str) -> np.ndarray:
    p = root / rel
    if p.suffix == ".dcm":
        return _dicom_hu(p)
    if p.suffix == ".png":
        return np.asarray(PILImage.open(p)).astype(np.float64)
    if p.suffix == ".tif":
        return tifffile.imread(p).astype(np.float64)
    if p.suffix == ".npy":
        return np.load(p)
    raise AssertionError(f"unexpected file type {p}")


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / math.sqrt((a * a).sum() * (b * b).sum()))


def _inside(shape_fixed, shape_moving, T, margin=1.0) -> np.ndarray:
    rr, cc = np.meshgrid(np.arange(shape_fixed[0]), np.arange(shape_fixed[1]), indexing="ij")
    q = np.tensordot(T[:2, :2], np.stack([rr, cc]).astype(float), axes=1) + T[:2, 2, None, None]
    return ((q[0] >= margin) & (q[0] <= shape_moving[0] - 1 - margin)
            & (q[1] >= margin) & (q[1] <= shape_moving[1] - 1 - margin))


def _file_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- structure
def test_manifest_columns_counts_and_files(rows, root):
    header = (root / "manifest.csv").read_text().splitlines()[0].split(",")
    assert header == bs.COLUMNS
    assert len(rows) >= 200
    assert {r["role"] for r in rows} == ROLES
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        for col in ("path", "mask_path", "labelmap_path", "clean_path", "field_path"):
            if r[col]:
                assert (root / r[col]).is_file(), (r["id"], col)
        assert r["source"] and r["licence"], r["id"]
    cohort = _by(rows, role="cohort")
    assert len(cohort) >= 150
    assert len({r["subject"] for r in cohort}) >= 6
    labels = Counter(r["label"] for r in cohort)
    assert set(labels) == {"normal", "lesion"}
    assert 0.4 <= labels["lesion"] / len(cohort) <= 0.6
    mm = _by(rows, role="multimodal")
    assert len({r["pair_id"] for r in mm}) >= 12
    assert {"t1", "t2", "pet", "t2_moving", "pet_moving"} <= {r["pair_role"] for r in mm}
    reg = _by(rows, role="registration")
    assert len({r["pair_id"] for r in reg}) >= 16
    assert {r["label"] for r in reg} == {"rigid", "similarity", "flip", "deformable"}
    assert len(_by(rows, role="reference")) >= 12
    assert {r["format"] for r in rows} >= {"dicom", "png", "tiff", "nifti"}


def test_build_returns_early_when_complete_and_repairs_when_not(tmp_path, built):
    out = tmp_path / "copy"
    shutil.copytree(built.parent, out)
    man = out / "manifest.csv"
    before = man.stat().st_mtime_ns
    assert bs.is_complete(out)
    assert bs.build(out) == man and man.stat().st_mtime_ns == before  # no rebuild
    victim = out / bs.read_manifest(man)[0]["mask_path"]
    victim.unlink()
    assert not bs.is_complete(out)
    info = json.loads((out / "build_info.json").read_text())
    (out / "build_info.json").write_text(json.dumps({**info, "version": "stale"}))
    assert not bs.is_complete(out)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    with pytest.raises(ValueError, match="out_dir"):
        bs.build(precious, force=True)
    assert (precious / "thesis.txt").read_text() == "do not delete"


def test_build_is_deterministic(built, tmp_path):
    again = bs.build(tmp_path / "again", force=True)
    assert again.read_bytes() == built.read_bytes()
    a, b = _file_digests(built.parent), _file_digests(again.parent)
    assert a.keys() == b.keys()
    assert a == b
    # pixel digests of a few files, decoded
    from analysis.image import content_digest

    for rel in [r["path"] for r in bs.read_manifest(again)[::40]]:
        if rel.endswith(".dcm"):
            x = pydicom.dcmread(built.parent / rel).pixel_array
            y = pydicom.dcmread(again.parent / rel).pixel_array
            assert content_digest(x) == content_digest(y)


# ----------------------------------------------------------------------------- cohort
def test_cohort_dicoms_need_the_modality_lut_and_have_expected_hu(rows, root):
    kvps, makers = set(), set()
    for i, r in enumerate(_by(rows, role="cohort")):
        ds = pydicom.dcmread(root / r["path"])
        kvps.add(float(ds.KVP))
        makers.add(str(ds.Manufacturer))
        assert ds.Modality == "CT" and ds.BodyPartExamined == "HEAD"
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
        assert float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == -1024.0
        assert float(ds.WindowCenter) == 40.0 and float(ds.WindowWidth) == 80.0
        assert ds.pixel_array.dtype == np.int16
        sp = [float(v) for v in ds.PixelSpacing]
        assert sp == [float(r["spacing_row_mm"]), float(r["spacing_col_mm"])]
        assert 0.7 <= sp[0] <= 0.9 and float(ds.SliceThickness) > 0
        mask = np.asarray(PILImage.open(root / r["mask_path"]))
        labels = np.asarray(PILImage.open(root / r["labelmap_path"]))
        assert set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(mask == 255, labels == 6)
        assert (r["label"] == "lesion") == bool(mask.any())
        if i % 3:  # the pixel checks below on a third of the slices keep the test quick
            continue
        hu = ds.pixel_array.astype(np.float64) + float(ds.RescaleIntercept)
        assert abs(np.median(hu[labels == 0]) + 1000) < 15
        assert 700 <= np.median(hu[labels == 2]) <= 1500
        assert 25 <= np.median(hu[labels == 4]) <= 48 and 20 <= np.median(hu[labels == 5]) <= 40
        csf = ndi.binary_erosion(labels == 3, iterations=2)  # away from partial volume with bone
        if csf.sum() > 30:
            assert 0 <= np.median(hu[csf]) <= 20
        if mask.any():
            assert 60 <= hu[mask > 0].mean() <= 90
            assert np.all(labels[mask > 0] == 6)
    assert len(kvps) >= 2 and len(makers) >= 2  # a scanner effect to find
    assert len({r["spacing_row_mm"] for r in _by(rows, role="cohort")}) >= 4


def test_lesion_mean_hu_in_range_on_every_lesion_slice(rows, root):
    for r in _by(rows, role="cohort", label="lesion"):
        hu = _dicom_hu(root / r["path"])
        m = np.asarray(PILImage.open(root / r["mask_path"])) > 0
        d = 2 * math.sqrt(m.sum() * float(r["spacing_row_mm"]) * float(r["spacing_col_mm"]) / math.pi)
        assert 6.0 <= d <= 25.0, (r["id"], d)
        assert 60.0 <= hu[m].mean() <= 90.0, r["id"]


def test_band_threshold_preset_segments_lesions(rows, root):
    """Smoothing + band 55..100 HU + opening + largest component: median Dice ≥ 0.85."""
    dices = []
    for r in _by(rows, role="cohort", label="lesion"):
        s = ndi.gaussian_filter(_dicom_hu(root / r["path"]), 1.0)
        seg = ndi.binary_opening((s >= 55) & (s <= 100))
        lab, n = ndi.label(seg)
        if n:
            seg = lab == 1 + int(np.argmax(ndi.sum(seg, lab, range(1, n + 1))))
        m = np.asarray(PILImage.open(root / r["mask_path"])) > 0
        dices.append(2 * (seg & m).sum() / (seg.sum() + m.sum()))
    assert np.median(dices) >= 0.85


def test_histogram_features_separate_classes_across_subjects(rows, root):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import GroupKFold, cross_val_predict

    X, y, g = [], [], []
    for r in _by(rows, role="cohort"):
        hu = _dicom_hu(root / r["path"])
        v = hu[(hu > -50) & (hu < 150)]
        h, _ = np.histogram(v, bins=np.arange(-20, 121, 10))
        X.append(np.r_[h / v.size, np.percentile(v, [50, 90, 99, 99.9]), (v > 60).mean()])
        y.append(r["label"] == "lesion")
        g.append(r["subject"])
    pred = cross_val_predict(RandomForestClassifier(100, random_state=0), np.array(X), np.array(y),
                             groups=g, cv=GroupKFold(4))
    assert balanced_accuracy_score(y, pred) >= 0.9


# ----------------------------------------------------------------------------- registration
def test_affine_pairs_reproduce_fixed_with_stored_transform(rows, root):
    n = 0
    for r in _by(rows, role="registration", pair_role="moving"):
        if not r["transform"]:
            continue
        T = np.array(json.loads(r["transform"]))
        assert T.shape == (3, 3) and np.allclose(T[2], [0, 0, 1])
        fixed_row = _by(rows, pair_id=r["pair_id"], pair_role="fixed")[0]
        mov, fix = _load(root, r["path"]), _load(root, fixed_row["path"])
        warped = ndi.affine_transform(mov, T[:2, :2], offset=T[:2, 2], order=1)
        ov = _inside(fix.shape, mov.shape, T)
        assert ov.mean() > 0.6, r["id"]
        assert _ncc(warped[ov], fix[ov]) > 0.98, r["id"]
        rng = np.ptp(fix[ov])
        assert np.abs(warped[ov] - fix[ov]).mean() < 0.01 * rng, r["id"]
        # and the identity is clearly worse: the transform matters
        assert _ncc(mov[ov], fix[ov]) < 0.97, r["id"]
        n += 1
    assert n >= 12


def test_transform_kinds_are_what_they_say(rows):
    for r in _by(rows, role="registration", pair_role="moving"):
        if not r["transform"]:
            assert r["label"] == "deformable" and r["field_path"]
            continue
        L = np.array(json.loads(r["transform"]))[:2, :2]
        s = math.sqrt(abs(np.linalg.det(L)))
        if r["label"] == "rigid":
            assert np.allclose(L @ L.T, np.eye(2)) and np.linalg.det(L) > 0
        elif r["label"] == "similarity":
            assert np.allclose(L @ L.T, s * s * np.eye(2)) and abs(s - 1) > 0.05
        elif r["label"] == "flip":
            assert np.linalg.det(L) == pytest.approx(-1.0)


def test_deformable_pairs_reproduce_fixed_with_stored_field(rows, root):
    pairs = [r for r in _by(rows, role="registration", pair_role="moving") if r["field_path"]]
    assert len(pairs) >= 3
    for r in pairs:
        d = np.load(root / r["field_path"])
        mov = _load(root, r["path"])
        fix = _load(root, _by(rows, pair_id=r["pair_id"], pair_role="fixed")[0]["path"])
        assert d.shape == (2,) + fix.shape
        assert np.abs(d).max() >= 3.0
        rr, cc = np.meshgrid(np.arange(fix.shape[0]), np.arange(fix.shape[1]), indexing="ij")
        q0, q1 = rr + d[0], cc + d[1]
        warped = ndi.map_coordinates(mov, [q0, q1], order=1)
        ov = (q0 >= 1) & (q0 <= fix.shape[0] - 2) & (q1 >= 1) & (q1 <= fix.shape[1] - 2)
        assert ov.mean() > 0.9
        assert _ncc(warped[ov], fix[ov]) > 0.98, r["id"]
        assert np.abs(warped[ov] - fix[ov]).mean() < 0.01 * np.ptp(fix[ov]), r["id"]
        assert _ncc(warped[ov], fix[ov]) > _ncc(mov[ov], fix[ov]) + 0.005, r["id"]


def test_multimodal_moving_images_realign_with_stored_transform(rows, root):
    moving = [r for r in _by(rows, role="multimodal") if r["pair_role"].endswith("_moving")]
    assert len(moving) >= 8
    for r in moving:
        T = np.array(json.loads(r["transform"]))
        t1 = _by(rows, pair_id=r["pair_id"], pair_role="t1")[0]
        ref_role = r["pair_role"].replace("_moving", "")
        ref = _by(rows, pair_id=r["pair_id"], pair_role=ref_role)[0]
        shape = _load(root, t1["path"]).shape
        mov = _load(root, r["path"])
        warped = ndi.affine_transform(mov, T[:2, :2], offset=T[:2, 2], output_shape=shape, order=1)
        if ref["transform"]:  # PET: bring the aligned low-res image to the t1 grid the same way
            R = np.array(json.loads(ref["transform"]))
            target = ndi.affine_transform(_load(root, ref["path"]), R[:2, :2], offset=R[:2, 2], output_shape=shape, order=1)
        else:
            target = _load(root, ref["path"])
        ov = _inside(shape, mov.shape, T, margin=1.0)
        assert _ncc(warped[ov], target[ov]) > 0.95, r["id"]
        assert _ncc(warped[ov], target[ov]) > _ncc(ndi.affine_transform(mov, T[:2, :2], output_shape=shape,
                                                                        order=1)[ov], target[ov]) + 0.05
        ang = math.degrees(math.atan2(T[1, 0], T[0, 0]))
        assert abs(ang) <= 20.0 + 1e-6


def test_multimodal_contrasts_follow_the_label_map(rows, root):
    for pid in sorted({r["pair_id"] for r in _by(rows, role="multimodal")}):
        t1 = _by(rows, pair_id=pid, pair_role="t1")[0]
        labels = np.asarray(PILImage.open(root / t1["labelmap_path"]))
        a1 = _load(root, t1["path"])
        a2 = _load(root, _by(rows, pair_id=pid, pair_role="t2")[0]["path"])
        wm, csf = labels == 5, labels == 3
        assert wm.sum() > 100 and csf.sum() > 20, pid
        assert np.median(a1[wm]) > np.median(a1[csf]) + 100, pid  # T1: WM bright
        assert np.median(a2[wm]) + 100 < np.median(a2[csf]), pid  # T2: inverted
        pet = _by(rows, pair_id=pid, pair_role="pet")[0]
        p = _load(root, pet["path"])
        assert p.shape == (a1.shape[0] // 4, a1.shape[1] // 4)
        assert float(pet["spacing_row_mm"]) == pytest.approx(4 * float(t1["spacing_row_mm"]))


# ----------------------------------------------------------------------------- references
def test_reference_degradations_match_stored_parameters(rows, root):
    checked = Counter()
    for r in _by(rows, role="reference", pair_role="degraded"):
        clean = _load(root, r["clean_path"])
        deg = _load(root, r["path"])
        kind = r["label"]
        if kind == "gaussian":
            s = float(r["noise_sigma"])
            resid = deg - clean
            if r["modality"] == "CR":  # clipped at 0/4095 by the 12-bit store
                resid = resid[(clean > 4 * s) & (clean < 4095 - 4 * s)]
            assert abs(resid.std() - s) < 0.05 * s, r["id"]
            assert abs(resid.mean()) < 0.05 * s, r["id"]
        elif kind == "rician":
            s = float(r["noise_sigma"])
            hi = clean > 10 * s
            assert hi.sum() > 1000
            assert abs((deg - clean)[hi].std() - s) < 0.08 * s, r["id"]
            bg = clean == 0
            assert abs(deg[bg].mean() - s * math.sqrt(math.pi / 2)) < 0.08 * s, r["id"]
        elif kind == "blur":
            b = float(r["blur_sigma"])
            expect = ndi.gaussian_filter(clean, b)
            # both files are rounded to integers in DICOM: ≤ 0.5 from each rounding
            tol = 1.01 if r["path"].endswith(".dcm") else 1e-4 * np.ptp(clean)
            assert np.abs(deg - expect).max() <= tol, r["id"]
            assert np.abs(deg - clean).max() > 100 * tol, r["id"]
        elif kind == "bias":
            f = np.load(root / r["field_path"])
            amp = float(r["bias"])
            assert np.abs(f - 1).max() == pytest.approx(amp, rel=1e-4)
            np.testing.assert_allclose(deg, clean * f, rtol=1e-5, atol=1e-3 * np.abs(clean).max())
        else:
            continue
        checked[kind] += 1
    assert checked["gaussian"] >= 4 and checked["rician"] >= 2 and checked["blur"] >= 3 and checked["bias"] >= 2


# ----------------------------------------------------------------------------- real, series, formats
def test_pydicom_files_are_copied_byte_for_byte(rows, root):
    src = Path(pydicom.__file__).resolve().parent / "data" / "test_files"
    copies = [r for r in _by(rows, role="real") if r["source"].startswith("pydicom test file")]
    assert {"CT_small.dcm", "MR_small.dcm", "693_J2KI.dcm", "examples_overlay.dcm"} <= {Path(r["path"]).name for r in copies}
    for r in copies:
        assert (root / r["path"]).read_bytes() == (src / Path(r["path"]).name).read_bytes()


def test_series_is_a_shuffled_volume_with_canary_identity(rows, root):
    series = _by(rows, role="series")
    assert len(series) >= 10
    folder = {(root / r["path"]).parent for r in series}
    assert len(folder) == 1 and {p.suffix for p in next(iter(folder)).iterdir()} == {".dcm"}
    dss = [pydicom.dcmread(root / r["path"]) for r in series]
    assert len({ds.SeriesInstanceUID for ds in dss}) == 1
    assert all(str(ds.PatientName) == "CANARY^PATIENT" and ds.InstitutionName.startswith("CANARY") for ds in dss)
    by_name = sorted(zip([Path(r["path"]).name for r in series], dss), key=lambda t: t[0])
    inst_in_name_order = [int(ds.InstanceNumber) for _, ds in by_name]
    assert inst_in_name_order != sorted(inst_in_name_order)  # file names do not follow the slice order
    z = sorted(float(ds.ImagePositionPatient[2]) for ds in dss)
    assert np.allclose(np.diff(z), float(dss[0].SliceThickness))
    labels = [r["label"] for r in sorted(series, key=lambda r: int(r["slice_index"]))]
    first, last = labels.index("lesion"), len(labels) - 1 - labels[::-1].index("lesion")
    assert 3 <= last - first + 1 <= 8 and all(lab == "lesion" for lab in labels[first:last + 1])  # one 3-D lesion


def test_monochrome1_and_other_formats(rows, root):
    import nibabel as nib

    cr = [r for r in rows if r["modality"] == "CR"]
    assert cr
    ds = pydicom.dcmread(root / cr[0]["path"])
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    png16 = [r for r in _by(rows, format="png") if "16-bit" in r["note"]]
    assert png16 and all(np.asarray(PILImage.open(root / r["path"])).dtype == np.uint16 for r in png16)
    nii = _by(rows, format="nifti")
    assert len(nii) >= 2
    vol = [r for r in nii if nib.load(root / r["path"]).ndim == 3]
    assert vol
    for r in _by(rows, role="real", format="tiff"):
        assert tifffile.imread(root / r["path"]).dtype in (np.uint16, np.int16)


# ----------------------------------------------------------------------------- the DICOM writer
def test_write_dicom_round_trip_and_validation(tmp_path):
    from analysis.dicomwrite import dicom_bytes, read_physical, write_dicom

    hu = np.array([[-1000.0, 0.0, 40.0], [80.0, 1500.0, -5.0]])
    p = write_dicom(tmp_path / "a" / "x.dcm", hu, modality="CT", spacing=(0.7, 0.8), rescale_intercept=-1024.0,
                    window=(40.0, 80.0), dtype=np.int16, uid_seed="x", instance_number=3, position=(1.0, 2.0, 3.0))
    ds = pydicom.dcmread(p)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    np.testing.assert_array_equal(ds.pixel_array, (hu + 1024).astype(np.int16))
    np.testing.assert_array_equal(read_physical(p), hu)
    assert [float(v) for v in ds.PixelSpacing] == [0.7, 0.8] and int(ds.InstanceNumber) == 3
    # deterministic bytes and UIDs from the seed; a different seed gives a different instance UID
    kw = dict(modality="MR", spacing=(1.0, 1.0), uid_seed="s")
    assert dicom_bytes(hu + 1000, **kw) == dicom_bytes(hu + 1000, **kw)
    other = pydicom.dcmread(io.BytesIO(dicom_bytes(hu + 1000, modality="MR", spacing=(1.0, 1.0), uid_seed="t")))
    assert other.SOPInstanceUID != pydicom.dcmread(io.BytesIO(dicom_bytes(hu + 1000, **kw))).SOPInstanceUID
    assert other.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    sc = pydicom.dcmread(io.BytesIO(dicom_bytes(hu + 1000, modality="OT", spacing=None)))
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    # slope: physical values survive up to rounding of stored values
    pet = np.array([[0.0, 1.2345], [15.9999, 3.0]])
    b = dicom_bytes(pet, modality="PT", spacing=(4.0, 4.0), rescale_slope=0.001, dtype=np.uint16)
    ds = pydicom.dcmread(io.BytesIO(b))
    np.testing.assert_allclose(ds.pixel_array * float(ds.RescaleSlope), pet, atol=0.0005)
    cr = pydicom.dcmread(io.BytesIO(dicom_bytes(np.full((4, 4), 4000.0), modality="CR", spacing=(0.5, 0.5),
                                                photometric="MONOCHROME1", bits_stored=12)))
    assert cr.PhotometricInterpretation == "MONOCHROME1" and cr.BitsStored == 12 and cr.HighBit == 11
    with pytest.raises(ValueError, match="bits_stored"):
        dicom_bytes(np.full((4, 4), 5000.0), modality="CR", spacing=None, bits_stored=12)
    with pytest.raises(ValueError, match="fit"):
        dicom_bytes(np.array([[-1.0, 70000.0]]), modality="CT", spacing=None, dtype=np.uint16)
    with pytest.raises(ValueError, match="photometric"):
        dicom_bytes(hu, modality="CT", spacing=None, photometric="RGB")
    with pytest.raises(ValueError, match="2-D"):
        dicom_bytes(np.zeros((2, 2, 2)), modality="CT", spacing=None)
