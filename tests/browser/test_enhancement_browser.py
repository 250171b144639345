"""Enhancement page in a real browser: a slider changes the after-image, the dataset-wide run
draws its chart, and nothing errors in the console."""

from __future__ import annotations

from urllib.parse import unquote

from tests.browser.conftest import choose_option, assert_no_exception, open_page

# A cheap content signature of the "after" heatmap of the linked compare figure (trace 1).
_AFTER_SIG = """() => {
  const plots = [...document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')];
  const heat = p => (p.data || []).filter(t => t.type === 'heatmap');
  const el = plots.find(p => heat(p).length >= 2);
  if (!el) return null;
  const z = heat(el)[1].z;
  const s = (z && z.bdata) ? z.bdata : JSON.stringify(z);
  let h = 0;
  for (let i = 0; i < s.length; i++) { h = (h * 31 + s.charCodeAt(i)) | 0; }
  return `${s.length}:${h}`;
}"""


def _choose(page, label: str, option: str, wait_ready) -> None:  # type: ignore[no-untyped-def]
    choose_option(page, label, option)


def _after_sig(page) -> str | None:  # type: ignore[no-untyped-def]
    return page.evaluate(_AFTER_SIG)


def test_slider_changes_the_after_image(page, app_url, console_errors, wait_ready, shot):
    open_page(page, app_url, "Enhancement")
    page.wait_for_function(f"() => ({_AFTER_SIG})() !== null", timeout=60_000)
    _choose(page, "Operation", "Gaussian smoothing", wait_ready)
    page.wait_for_selector('[data-testid="stSlider"]:has-text("sigma")', timeout=30_000)
    wait_ready(page)
    page.wait_for_function(f"() => ({_AFTER_SIG})() !== null", timeout=60_000)
    before = _after_sig(page)
    shot(page, "enhancement_before_slider")
    slider = page.locator('[data-testid="stSlider"]', has_text="sigma").first.get_by_role("slider")
    slider.focus()
    for _ in range(15):  # σ 1.0 → 2.5 px
        slider.press("ArrowRight")
    page.wait_for_function(f"(b) => {{ const s = ({_AFTER_SIG})(); return s !== null && s !== b; }}", arg=before, timeout=60_000)
    # every key press reruns the page; wait for the last one to land in the link
    page.wait_for_function("() => decodeURIComponent(location.href).includes('sigma=2.5')", timeout=60_000)
    wait_ready(page)
    after = _after_sig(page)
    assert after != before
    url = unquote(page.url)
    assert "op=enhancement.gaussian" in url and "sigma=2.5" in url, url  # the state is in the shareable link
    assert_no_exception(page)
    shot(page, "enhancement_after_slider")
    assert not console_errors, console_errors


def test_dataset_wide_run_draws_the_chart(page, app_url, console_errors, wait_ready, shot):
    open_page(page, app_url, "Enhancement")
    page.get_by_role("tab", name="Dataset-wide").click()
    run = page.get_by_role("button", name="Run on all")
    run.wait_for(timeout=30_000)
    run.click()
    page.wait_for_function(
        """() => [...document.querySelectorAll('.js-plotly-plot')].some(
               p => p.data && p.data.some(t => t.type === 'box' || t.type === 'violin'))""",
        timeout=240_000,
    )
    wait_ready(page, timeout=120_000)
    page.wait_for_selector('text=images processed', timeout=30_000)
    assert page.get_by_text("Worst:").count() >= 1 and page.get_by_text("Best:").count() >= 1
    stages = page.evaluate(
        """() => { const p = [...document.querySelectorAll('.js-plotly-plot')].find(
                     p => p.data && p.data.some(t => t.type === 'box'));
                   return p.data.map(t => t.name); }""")
    assert "before" in stages and "after" in stages, stages
    assert_no_exception(page)
    shot(page, "enhancement_dataset_wide")
    assert not console_errors, console_errors


def test_export_downloads_deidentified_dicom_and_png(page, app_url, console_errors, wait_ready, tmp_path):
    import io

    import numpy as np
    import pydicom

    from analysis.export import read_png16

    open_page(page, app_url, "Enhancement")
    page.get_by_role("tab", name="Export").click()
    button = page.get_by_role("button", name="Image — de-identified DICOM")
    button.wait_for(timeout=30_000)
    with page.expect_download(timeout=60_000) as dl:
        button.click()
    ds = pydicom.dcmread(io.BytesIO(open(dl.value.path(), "rb").read()))
    assert ds.PatientIdentityRemoved == "YES" and list(ds.ImageType) == ["DERIVED", "SECONDARY"]
    assert str(ds.PatientName) == "" and ds.PatientID == ""
    phys = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert phys.shape[0] >= 64 and np.isfinite(phys).all()
    with page.expect_download(timeout=60_000) as dl:
        page.get_by_role("button", name="Image — 16-bit PNG").click()
    values, text = read_png16(open(dl.value.path(), "rb").read())
    assert values.shape == phys.shape and "medlens:units" in text
    np.testing.assert_allclose(values.min(), phys.min(), atol=float(ds.RescaleSlope) + 1e-3)
    assert dl.value.suggested_filename == "medlens_enhancement.png"  # never the source file's name
    assert not console_errors, console_errors


def test_box_select_sets_the_cnr_roi(page, app_url, console_errors, wait_ready, shot):
    open_page(page, app_url, "Enhancement")
    page.wait_for_selector('.js-plotly-plot', timeout=60_000)
    page.get_by_text("CNR region (ROI and background boxes, px)").click()
    page.wait_for_timeout(300)
    roi = page.locator('[data-testid="stNumberInput"]', has_text="r0").first.locator("input")
    before_r0 = roi.input_value()
    cnr_before = page.locator('[data-testid="stMetric"]', has_text="cnr").first.inner_text()
    plot = page.locator('.js-plotly-plot').first
    plot.hover()
    plot.locator('.modebar-btn[data-title="Box Select"]').first.click()
    box = plot.locator('.nsewdrag').first.bounding_box()
    x0, y0 = box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.2
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + 60, y0 + 40, steps=8)
    page.mouse.up()
    page.wait_for_function("(v) => { const i = [...document.querySelectorAll('[data-testid=\"stNumberInput\"]')]"
                           ".find(e => e.innerText.includes('r0')); return i && i.querySelector('input').value !== v; }",
                           arg=before_r0, timeout=60_000)
    wait_ready(page)
    r0, c0, r1, c1 = (int(page.locator('[data-testid="stNumberInput"]', has_text=k).first.locator("input").input_value())
                      for k in ("r0", "c0", "r1", "c1"))
    assert 0 <= r0 < r1 and 0 <= c0 < c1 and (c1 - c0) > (r1 - r0)  # the dragged box is wider than tall
    assert page.locator('[data-testid="stMetric"]', has_text="cnr").first.inner_text() != cnr_before
    shot(page, "enhancement_box_select")
    assert not console_errors, console_errors
