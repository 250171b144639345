"""ui.privacy: the burned-in text gate and the removal preview, in AppTest."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]


def _gate_app(modality: str, burned: str) -> None:
    import io

    import pydicom
    import streamlit as st

    from analysis import io as mio
    from tests.helpers.dicom import ct_dicom
    from ui.privacy import burned_in_gate

    ds = pydicom.dcmread(io.BytesIO(ct_dicom()))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"  # same bytes on every rerun
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.5", "1.2.3.6"
    ds.Modality = modality
    if burned:
        ds.BurnedInAnnotation = burned
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    image = mio.load_bytes(buf.getvalue(), "x.dcm")[0]
    ok = burned_in_gate(image, key="t")
    st.button("Export DICOM", disabled=not ok, key="export")


def _run(modality: str, burned: str) -> AppTest:
    at = AppTest.from_function(_gate_app, args=(modality, burned), default_timeout=60)
    at.run()
    assert not at.exception
    return at


def test_ct_without_burned_in_text_needs_no_confirmation():
    at = _run("CT", "")
    assert not at.warning and not at.checkbox
    assert at.button(key="export").disabled is False


def test_us_without_the_attribute_warns_and_blocks_until_confirmed():
    at = _run("US", "")
    assert "Burned-in text" in at.warning[0].value and "US" in at.warning[0].value
    assert at.button(key="export").disabled is True
    at.checkbox[0].check().run()
    assert at.button(key="export").disabled is False


def test_burned_in_yes_warns_even_for_ct_and_no_clears_us():
    at = _run("CT", "YES")
    assert "YES" in at.warning[0].value and at.button(key="export").disabled is True
    at = _run("US", "NO")
    assert not at.warning and at.button(key="export").disabled is False


def _preview_app() -> None:
    import io
    import json

    import pydicom

    from analysis import deid
    from tests.helpers.dicom import ct_dicom
    from ui.privacy import removal_preview

    ds = pydicom.dcmread(io.BytesIO(ct_dicom()))
    rows = deid.preview_removal(ds).to_dict("records")
    removal_preview("p", entry={"id": "u1", "role": "upload", "deid_preview": json.dumps(rows)})
    removal_preview("q", entry={"id": "u2", "role": "upload", "deid_preview": ""})


def test_removal_preview_shows_actions_and_no_values():
    from tests.helpers.dicom import CANARIES

    at = AppTest.from_function(_preview_app, default_timeout=60)
    at.run()
    assert not at.exception
    df = at.dataframe[0].value
    assert list(df.columns) == ["tag", "keyword", "action", "effect"]
    assert {"PatientName", "PatientID", "InstitutionName", "StudyInstanceUID"} <= set(df["keyword"])
    shown = df.to_csv() + " ".join(c.value for c in at.caption)
    assert not any(v.lower() in shown.lower() for v in CANARIES.values())
    assert any("not a single DICOM file" in c.value for c in at.caption)


def test_uploaded_dicom_carries_its_preview_into_the_entry(tmp_path):
    import json

    from analysis import dataset
    from tests.helpers.dicom import CANARIES, ct_dicom

    ds = dataset.ingest_uploads([("ct.dcm", ct_dicom())], tmp_path)
    rows = json.loads(ds.entries["deid_preview"].iloc[0])
    assert {r["keyword"] for r in rows} >= {"PatientName", "AccessionNumber", "InstitutionName"}
    text = json.dumps(rows)
    assert not any(v.lower() in text.lower() for v in CANARIES.values())
