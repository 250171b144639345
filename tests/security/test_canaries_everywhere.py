"""Canary identifiers through the whole app: upload a DICOM whose identifying tags hold
canary values (plus a PNG and a TIFF whose text chunks / descriptions hold them), use two
pages, export, then search for every canary in the page HTML, the server log, everything
under MEDLENS_HOME (session folder, stored uploads, caches, catalog) and every exported file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image as PILImage
from PIL import PngImagePlugin

from tests.browser.conftest import (  # noqa: F401 - fixtures used by this module
    app_server, app_url, assert_images_loaded, assert_no_exception, browser_context_args, browser_type_launch_args, console_errors,
    open_page, shot, wait_ready)
from tests.helpers.dicom import CANARIES, ct_dicom

pytestmark = pytest.mark.browser

TEXT_CANARY = "CANARY-TEXT-CHUNK-4471"


def _canary_files(tmp_path: Path) -> tuple[list[Path], list[bytes]]:
    dcm = tmp_path / "scan.dcm"
    ct_dicom(dcm)
    ds = pydicom.dcmread(dcm)
    uids = [str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
    png = tmp_path / "photo.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", f"Patient {CANARIES['PatientName']} {TEXT_CANARY}")
    info.add_itxt("Description", f"{CANARIES['PatientID']} {TEXT_CANARY}")
    PILImage.fromarray(np.arange(48 * 40, dtype=np.uint16).reshape(48, 40).astype(np.uint8)).save(png, pnginfo=info)
    tif = tmp_path / "slide.tif"
    tifffile.imwrite(tif, np.arange(30 * 20, dtype=np.uint16).reshape(30, 20),
                     description=f"{CANARIES['InstitutionName']} {TEXT_CANARY}")
    needles = [v.encode() for v in CANARIES.values()] + [v.replace("^", " ").encode() for v in CANARIES.values()]
    needles += [u.encode() for u in uids] + [TEXT_CANARY.encode()]
    return [png, tif, dcm], needles


def _hits(data: bytes, needles: list[bytes]) -> list[str]:
    low = data.lower()
    return [n.decode() for n in needles if n.lower() in low]


def _download(page, label: str, dest: Path) -> Path:
    with page.expect_download(timeout=60_000) as info:
        page.get_by_role("button", name=label).first.click()
    path = dest / info.value.suggested_filename
    info.value.save_as(str(path))
    return path


def test_canaries_appear_nowhere(page, app_server, console_errors, tmp_path):  # noqa: F811
    url, log_path, home = app_server
    files, needles = _canary_files(tmp_path)
    htmls: dict[str, str] = {}
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)

    open_page(page, url, "Home")
    page.get_by_text("Upload files", exact=True).click()
    page.wait_for_selector('[data-testid="stFileUploaderDropzoneInput"]', state="attached")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([str(p) for p in files])
    page.wait_for_selector('[data-testid="stDataFrame"]', timeout=60_000)
    page.wait_for_selector('[data-testid="stPlotlyChart"] .js-plotly-plot', timeout=60_000)
    wait_ready(page)
    assert_no_exception(page)
    htmls["home"] = page.content()
    shot(page, "canaries_home")

    # a technique page on the canary DICOM (the last upload is the working image), then its exports
    page.locator('[data-testid="stSidebarNav"] a', has_text="Enhancement").first.click()
    page.wait_for_selector('[data-testid="stPlotlyChart"] .js-plotly-plot', timeout=90_000)
    wait_ready(page)
    htmls["enhancement"] = page.content()
    page.get_by_role("tab", name="Export").click()
    page.wait_for_timeout(500)
    wait_ready(page)
    exports = tmp_path / "exports"
    exports.mkdir()
    got = [_download(page, "Image — 16-bit PNG", exports), _download(page, "Image — de-identified DICOM", exports),
           _download(page, "Metrics — CSV", exports)]
    htmls["enhancement_export"] = page.content()
    shot(page, "canaries_export")
    assert_no_exception(page)

    page.locator('[data-testid="stSidebarNav"] a', has_text="Dataset").first.click()
    page.wait_for_timeout(1000)
    wait_ready(page, timeout=120_000)
    htmls["dataset"] = page.content()
    assert_no_exception(page)
    assert_images_loaded(page)

    leaks = {}
    for name, html in htmls.items():
        if hit := _hits(html.encode(), needles):
            leaks[f"page {name}"] = hit
    if hit := _hits(Path(log_path).read_bytes(), needles):
        leaks["server log"] = hit
    stored = [p for p in Path(home).rglob("*") if p.is_file()]
    assert any(p.name.endswith(".mlimg.npz") for p in stored), "the uploads were stored in the app's folder"
    for p in stored:
        if hit := _hits(p.read_bytes(), needles):
            leaks[str(p.relative_to(home))] = hit
    for p in got:
        assert p.stat().st_size > 0
        if hit := _hits(p.read_bytes(), needles):
            leaks[f"export {p.name}"] = hit
    assert leaks == {}
    dcm = pydicom.dcmread(next(p for p in got if p.suffix == ".dcm"))
    assert dcm.PatientIdentityRemoved == "YES"
    assert not console_errors, (console_errors, missing)


def test_picture_exports_drop_text_chunks_and_descriptions(tmp_path):
    """PNG text chunks, EXIF and TIFF descriptions never reach an export (pure functions)."""
    from analysis import export
    from analysis import io as mio

    files, needles = _canary_files(tmp_path)
    for p in files[:2]:
        img = mio.load_path(p)[0]
        assert not _hits(repr(img.metadata).encode(), needles)
        for data in (export.png16_bytes(img.grey(), units=img.units),
                     export.deidentified_dicom_bytes(img.grey(), modality=img.modality, units=img.units)):
            assert _hits(data, needles) == []
    assert _hits(files[0].read_bytes(), needles) and _hits(files[1].read_bytes(), needles)  # the sources do carry them
    assert os.path.getsize(files[2]) > 0
