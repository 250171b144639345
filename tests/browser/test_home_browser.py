"""Home page in a real browser: gallery, DICOM upload, window preset, truncated upload
message, and no identifying text on the page."""

from __future__ import annotations

from pathlib import Path

from tests.browser.conftest import assert_images_loaded, assert_no_exception, choose_option, open_page, shot, wait_ready
from tests.helpers.dicom import CANARIES, ct_dicom


def _plot_state(page, index: int = -1) -> dict:
    return page.evaluate(
        """(i) => { const p = [...document.querySelectorAll('.js-plotly-plot')];
                    const el = p[i < 0 ? p.length + i : i];
                    return {zmin: el.data[0].zmin, zmax: el.data[0].zmax}; }""",
        index,
    )


def _choose(page, label: str, option: str) -> None:
    choose_option(page, label, option)


def test_home_renders_gallery_and_viewer(page, app_url, console_errors):
    open_page(page, app_url, "Home")
    page.wait_for_selector('[data-testid="stMetric"]')
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"stImage\"]').length >= 8", timeout=60_000)
    wait_ready(page)
    assert page.locator('[data-testid="stImage"]').count() >= 8  # thumbnails
    page.wait_for_selector('[data-testid="stPlotlyChart"] .js-plotly-plot', timeout=30_000)
    assert_no_exception(page)
    shot(page, "home")
    assert not console_errors, console_errors


def test_upload_dicom_preset_truncated_and_no_identifiers(page, app_url, console_errors, tmp_path: Path):
    good = tmp_path / "canary_ct.dcm"
    ct_dicom(good)
    bad = tmp_path / "broken_scan.dcm"
    bad.write_bytes(good.read_bytes()[:900])  # truncated in the pixel data
    open_page(page, app_url, "Home")
    page.get_by_text("Upload files", exact=True).click()
    page.wait_for_selector('[data-testid="stFileUploaderDropzoneInput"]', state="attached")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([str(good), str(bad)])
    page.wait_for_selector('text=canary_ct.dcm', timeout=60_000)
    page.wait_for_selector('[data-testid="stAlertContentError"]:has-text("broken_scan.dcm")', timeout=60_000)
    wait_ready(page)
    err = page.locator('[data-testid="stAlertContentError"]:has-text("broken_scan.dcm")').first.inner_text()
    assert "trunc" in err.lower() or "pixel" in err.lower(), err
    page.wait_for_selector('[data-testid="stPlotlyChart"] .js-plotly-plot', timeout=30_000)
    shot(page, "home_upload")
    before = _plot_state(page)
    assert (before["zmin"], before["zmax"]) == (40 - 200, 40 + 200)  # the file's own window, in HU
    _choose(page, "Window preset", "lung")
    page.wait_for_function(
        "() => { const p=[...document.querySelectorAll('.js-plotly-plot')]; return p.length && p[p.length-1].data[0].zmin === -1350; }",
        timeout=30_000,
    )
    wait_ready(page)
    after = _plot_state(page)
    assert (after["zmin"], after["zmax"]) == (-600 - 750, -600 + 750)
    shot(page, "home_lung_preset")
    html = page.content()
    for value in CANARIES.values():
        assert value not in html and value.replace("^", " ") not in html, f"identifier {value!r} leaked to the page"
    assert_no_exception(page)
    assert_images_loaded(page)
    assert not console_errors, console_errors
