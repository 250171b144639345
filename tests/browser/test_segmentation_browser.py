"""Segmentation page in a real browser: a typed seed and a clicked seed both re-run region
growing and update the region table and the area; no exception, no console error."""

from __future__ import annotations

import numpy as np

from analysis.dataset import load_aux, load_entry, load_sample
from tests.browser.conftest import assert_no_exception, open_page

_AREA = """() => {
  const m = [...document.querySelectorAll('[data-testid="stMetric"]')].find(e => e.innerText.startsWith('area_mm2'));
  return m ? m.innerText.split('\\n').pop().trim() : null;
}"""
_REGIONS = """() => {
  const c = [...document.querySelectorAll('[data-testid="stCaptionContainer"]')].find(e => /regions · areas/.test(e.innerText));
  return c ? c.innerText : null;
}"""
_SEED = """() => Object.fromEntries([...document.querySelectorAll('[data-testid="stNumberInput"] input')]
  .filter(i => /^(row|col) \\(px\\)$/.test(i.getAttribute('aria-label') || '')).map(i => [i.getAttribute('aria-label'), i.value]))"""


def _lesion():
    ds = load_sample()
    e = ds.entries
    entry = ds.entry(e[(e["role"] == "cohort") & (e["label"] == "lesion")].iloc[0]["id"])
    truth = load_aux(entry, "mask_path")
    img = load_entry(entry)
    r, c = (int(v) for v in np.argwhere(truth).mean(axis=0).round())
    return entry, (r, c), float(truth.sum() * img.spacing[0] * img.spacing[1])


def _area(page) -> float | None:  # type: ignore[no-untyped-def]
    v = page.evaluate(_AREA)
    return float(v.replace(",", "")) if v else None


def _type_number(page, label: str, value: int, wait_ready) -> None:  # type: ignore[no-untyped-def]
    box = page.locator('[data-testid="stNumberInput"]', has_text=label).first.locator("input")
    box.fill(str(value))
    box.press("Enter")
    page.wait_for_timeout(500)
    wait_ready(page)


def test_seed_typed_and_clicked_updates_region_table(page, app_url, console_errors, wait_ready, shot):
    entry, (r, c), true_area = _lesion()
    open_page(page, app_url, "Segmentation")
    picker = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first
    picker.click()
    page.keyboard.type(entry["name"])
    page.keyboard.press("Enter")
    page.wait_for_timeout(800)
    wait_ready(page)
    page.locator('[data-testid="stRadio"] label', has_text="Regions").first.click()
    page.wait_for_timeout(800)
    wait_ready(page)
    page.locator('[data-testid="stSelectbox"]', has_text="Method").first.click()
    page.get_by_role("option", name="seeded region growing").first.click()
    page.wait_for_selector('[data-testid="stNumberInput"]:has-text("row (px)")', timeout=60_000)
    wait_ready(page)
    _type_number(page, "tolerance", 15, wait_ready)

    # 1. typed seed inside the lesion: one region of about the lesion's area
    _type_number(page, "row (px)", r, wait_ready)
    _type_number(page, "col (px)", c, wait_ready)
    page.wait_for_function(f"() => {{ const s = ({_SEED})(); return s['row (px)'] == '{r}' && s['col (px)'] == '{c}'; }}",
                           timeout=30_000)
    page.wait_for_function(f"() => ({_REGIONS})() !== null", timeout=60_000)
    typed_area = _area(page)
    assert typed_area is not None and abs(typed_area - true_area) < 0.3 * true_area, (typed_area, true_area)
    assert page.evaluate(_REGIONS).startswith("1 regions")
    shot(page, "segmentation_seed_typed")

    # 2. clicked seed in the air at the top-left of the image: the region becomes the background
    # pixel position of image (row 4, col 4) from the figure's own axes
    xy = page.evaluate("""() => {
      const el = [...document.querySelectorAll('.js-plotly-plot')].find(p => p.data && p.data.some(t => t.name === 'click to seed'));
      const L = el._fullLayout, box = el.getBoundingClientRect();
      return [box.x + L.xaxis._offset + L.xaxis.l2p(4), box.y + L.yaxis._offset + L.yaxis.l2p(4)]; }""")
    page.mouse.click(xy[0], xy[1])
    page.wait_for_function(f"() => {{ const s = ({_SEED})(); return s['row (px)'] != '{r}'; }}", timeout=60_000)
    wait_ready(page)
    page.wait_for_function(f"(a) => {{ const v = ({_AREA})(); return v !== null && parseFloat(v.replace(/,/g, '')) > 10 * a; }}",
                           arg=typed_area, timeout=60_000)
    seed = page.evaluate(_SEED)
    assert int(seed["row (px)"]) <= 8 and int(seed["col (px)"]) <= 8, seed  # the nearest click target to (4, 4)
    assert _area(page) > 10 * typed_area
    assert_no_exception(page)
    shot(page, "segmentation_seed_clicked")
    assert not console_errors, console_errors
