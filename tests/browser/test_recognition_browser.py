"""Recognition page in a real browser: extract features of the sample cohort, train with
subject-grouped CV and see the confusion matrix, click a point of the feature-space projection to
open that image, then predict it and see the annotation overlay."""

from __future__ import annotations

from tests.browser.conftest import assert_no_exception, open_page, shot, wait_ready

TRACE_NAMES = """(name) => [...document.querySelectorAll('.js-plotly-plot')]
    .some(el => (el.data || []).some(t => t.name === name))"""


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    page.wait_for_timeout(300)
    wait_ready(page)


def _click_projection_point(page) -> dict | None:
    """Click a 'lesion' marker of the projection chart; returns its entry id (customdata[0])."""
    page.evaluate("""() => { for (const el of document.querySelectorAll('.js-plotly-plot'))
        if ((el._fullData || []).some(t => t.name === 'lesion')) el.scrollIntoView({block: 'center'}); }""")
    page.wait_for_timeout(500)
    info = page.evaluate(
        """() => {
        for (const el of document.querySelectorAll('.js-plotly-plot')) {
          const tr = (el._fullData || []).findIndex(t => t.name === 'lesion');
          if (tr < 0 || !el._fullLayout || !el._fullLayout.xaxis) continue;
          const t = el._fullData[tr];
          const xa = el._fullLayout.xaxis, ya = el._fullLayout.yaxis;
          const box = el.getBoundingClientRect();
          const i = 0;
          const px = box.left + xa._offset + xa.l2p(t.x[i]);
          const py = box.top + ya._offset + ya.l2p(t.y[i]);
          if (!isFinite(px) || !isFinite(py)) return null;
          return {x: px, y: py, id: String(t.customdata[i][0]), name: String(t.customdata[i][1])};
        }
        return null; }"""
    )
    if not info:
        return None
    page.mouse.move(info["x"], info["y"])
    page.wait_for_timeout(300)
    page.mouse.click(info["x"], info["y"])
    return info


def test_recognition_trains_and_annotates(page, app_url, console_errors):
    page.set_default_timeout(120_000)
    open_page(page, app_url, "Recognition")
    page.get_by_role("button", name="Extract features for 168 images").click()
    page.wait_for_selector("text=168 images × 42 features", timeout=180_000)
    wait_ready(page)
    assert_no_exception(page)
    shot(page, "recognition_features")

    _tab(page, "Train & validate")
    page.get_by_role("button", name="Train and cross-validate").click()
    page.wait_for_selector('[data-testid="stMetric"]:has-text("balanced accuracy")', timeout=120_000)
    page.wait_for_selector("text=Confusion matrix (out-of-fold)", timeout=60_000)
    wait_ready(page)
    metric = page.locator('[data-testid="stMetric"]:has-text("balanced accuracy")').first.inner_text()
    value = float(metric.split("\n")[-1].split("±")[0])
    assert value >= 0.9, metric
    assert page.locator("text=StratifiedGroupKFold").count() >= 1
    assert_no_exception(page)
    shot(page, "recognition_cv")

    picked = _click_projection_point(page)
    assert picked, "no lesion point found in the projection chart"
    page.wait_for_selector("text=Working image set to", timeout=30_000)
    wait_ready(page)
    # the clicked image is now the working image (the sidebar picker shows it)
    shown = page.evaluate("""() => { const sb = document.querySelector('[data-testid="stSidebar"]');
        return sb.innerText + ' ' + [...sb.querySelectorAll('input')].map(i => i.value).join(' '); }""")
    assert picked["name"] in shown, shown

    _tab(page, "Prediction")
    page.wait_for_selector('[data-testid="stMetric"]:has-text("Predicted")', timeout=60_000)
    btn = page.get_by_role("button", name="Train patch classifier for the annotation map")
    if not btn.is_visible():
        page.get_by_text("Annotation map settings").click()
    btn.click()
    page.wait_for_function(TRACE_NAMES, arg="annotation map", timeout=240_000)
    wait_ready(page)
    page.wait_for_selector("text=Annotation map L(x, y)", timeout=60_000)
    # the working image is a lesion slice: its ground-truth mask is outlined with the predicted label
    assert page.evaluate(TRACE_NAMES, "structure")
    # opacity slider changes the overlay
    before = page.evaluate("""() => { for (const el of document.querySelectorAll('.js-plotly-plot'))
        for (const t of el.data || []) if (t.name === 'annotation map') return t.opacity; return null; }""")
    slider = page.locator('[data-testid="stSlider"]', has_text="Annotation opacity").locator('input[type="range"], [role="slider"]').first
    slider.focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    page.wait_for_function(
        """(b) => { for (const el of document.querySelectorAll('.js-plotly-plot'))
             for (const t of el.data || []) if (t.name === 'annotation map') return t.opacity !== b; return false; }""",
        arg=before, timeout=30_000)
    wait_ready(page)
    assert_no_exception(page)
    shot(page, "recognition_prediction")
    assert not console_errors, console_errors
