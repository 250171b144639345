"""Registration page in a real browser: manual mode shows live metrics and the QA views; an
automatic registration of the sample's rigid pair (12°, shift 8, −5 px) runs on demand and
shows the checkerboard, the estimated transform and a small TRE."""

from __future__ import annotations

import re

from tests.browser.conftest import assert_no_exception, open_page, shot, wait_ready


def _metric(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]:visible', has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def test_automatic_registration_shows_checkerboard_and_numbers(page, app_url, console_errors):
    open_page(page, app_url, "Registration")
    page.wait_for_selector('[data-testid="stMetric"]:visible', timeout=60_000)
    # manual tab: live metrics, cost landscape and the four QA images
    assert _metric(page, "NCC")
    page.wait_for_selector('[data-testid="stPlotlyChart"] .js-plotly-plot', timeout=30_000)
    page.wait_for_selector('[data-testid="stImage"]:visible >> nth=3', timeout=30_000)
    assert page.get_by_text(re.compile(r"Checkerboard \(\d+ px tiles\)")).first.is_visible()
    shot(page, "registration_manual")

    page.get_by_role("tab", name="Automatic").click()
    page.get_by_role("button", name="Register").first.wait_for(state="visible")
    page.get_by_role("button", name="Register").first.click()
    page.wait_for_selector('[data-testid="stMetric"]:visible:has-text("TRE median (px)")', timeout=120_000)
    wait_ready(page, timeout=120_000)
    tre = float(_metric(page, "TRE median (px)"))
    assert tre < 0.5, tre
    ncc_after = float(_metric(page, "NCC"))
    assert ncc_after > 0.99
    # the estimated matrix (text): cos 12° = 0.9781 on the diagonal; and the checkerboard of the result
    panel = page.locator('[role="tabpanel"]:visible')
    assert panel.locator('[data-testid="stDataFrame"]').count() >= 1
    matrix = panel.locator('[data-testid="stCode"]').first.inner_text()
    assert len(re.findall(r"0\.978[0-9]", matrix)) == 2, matrix
    assert panel.get_by_text(re.compile(r"Checkerboard \(\d+ px tiles\)")).first.is_visible()
    assert panel.locator('[data-testid="stImage"]').count() >= 4
    assert_no_exception(page)
    shot(page, "registration_automatic")
    assert not console_errors, console_errors
