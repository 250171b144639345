"""Dataset page in a real browser: ingest the sample dataset from the page, filter it, and see
the counts and the charts update (plotly traces read from the page)."""

from __future__ import annotations

import re

from tests.browser.conftest import assert_no_exception, open_page, shot, wait_ready


HIST_JS = """(part) => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  const el = plots.find(p => p.layout && p.layout.title && String(p.layout.title.text || '').includes(part));
  if (!el) return null;
  return el._fullData.map(t => ({name: t.name, total: Array.from(t.y || []).reduce((a, b) => a + Number(b), 0)}));
}"""


def _matching(page) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    text = page.get_by_text(re.compile(r"of [\d,]+ images match the filters")).first.inner_text()
    a, b = re.findall(r"[\d,]+", text)[:2]
    return int(a.replace(",", "")), int(b.replace(",", ""))


def test_filter_the_sample_dataset_and_charts_update(page, app_url, console_errors):
    open_page(page, app_url, "Dataset")
    ingest = page.get_by_role("button", name="Ingest / update the catalog")
    ingest.wait_for(timeout=60_000)
    if page.get_by_text(re.compile("images match the filters")).count() == 0:
        ingest.click()
        page.wait_for_selector('[data-testid="stProgress"]', timeout=60_000)
    page.get_by_text(re.compile("images match the filters")).first.wait_for(timeout=240_000)
    wait_ready(page)
    page.wait_for_selector('[data-testid="stPlotlyChart"] .js-plotly-plot', timeout=60_000)
    page.wait_for_function(f"() => ({HIST_JS})('mean by modality') !== null", timeout=60_000)
    n, total = _matching(page)
    assert n == total and total >= 300
    before = page.evaluate(HIST_JS, "mean by modality")
    assert sum(t["total"] for t in before) == total and len(before) > 1
    shot(page, "dataset_all")

    box = page.locator('[data-testid="stMultiSelect"]', has_text="Modality").first
    box.click()
    page.get_by_role("option", name=re.compile(r"^CT \(\d+\)$")).first.click()
    page.keyboard.press("Escape")
    page.wait_for_function("() => [...document.querySelectorAll('p')].some(p => { "
                           "const m = p.innerText.match(/^([\\d,]+) of ([\\d,]+) images match/); return m && m[1] !== m[2]; })",
                           timeout=60_000)
    wait_ready(page)
    page.wait_for_function(f"() => {{ const h = ({HIST_JS})('mean by modality'); return h && h.length === 1 && h[0].name === 'CT'; }}",
                           timeout=60_000)
    n_ct, total2 = _matching(page)
    assert total2 == total and 0 < n_ct < total
    after = page.evaluate(HIST_JS, "mean by modality")
    assert after == [{"name": "CT", "total": n_ct}]
    bars = page.evaluate(HIST_JS.replace("t.y", "t.x"), "Images by modality")
    assert len(bars) == 1 and bars[0]["total"] == n_ct
    assert_no_exception(page)
    shot(page, "dataset_ct")

    page.get_by_text("Quality", exact=True).click()
    # the quality summary table and its Severity filter (get_by_text("severity") would also match the
    # data grid's hidden accessibility header, which never becomes visible)
    page.locator('[data-testid="stMultiSelect"]', has_text="Severity").first.wait_for(timeout=60_000)
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=60_000)
    wait_ready(page)
    assert_no_exception(page)
    shot(page, "dataset_quality")
    assert not console_errors, console_errors
