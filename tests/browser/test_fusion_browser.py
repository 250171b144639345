"""Fusion page in a real browser: A, B and the fused result side by side with their metrics,
the comparator grid scored, a method change redraws the fused view."""

from __future__ import annotations

import re

from tests.browser.conftest import assert_no_exception, open_page, shot, wait_ready


def _plot_titles(page) -> list[str]:  # type: ignore[no-untyped-def]
    return page.evaluate(
        "() => [...document.querySelectorAll('.js-plotly-plot')].map(p => (p.layout.title && p.layout.title.text) || '')"
    )


def test_fusion_page_views_metrics_and_comparator(page, app_url, console_errors):  # type: ignore[no-untyped-def]
    open_page(page, app_url, "Fusion")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.js-plotly-plot')].some(p => p.layout.title && String(p.layout.title.text).includes('Fused —'))",
        timeout=60_000,
    )
    wait_ready(page)
    titles = _plot_titles(page)
    assert any("A (a.u.)" in t for t in titles) and any("B (" in t for t in titles), titles  # Streamlit wraps titles in <b>
    main = page.locator('[data-testid="stMain"]').inner_text()
    assert re.search(r"A: \S+_t1\S* .* B: \S+_pet\.\S+", main), "the page does not open on a t1 + pet pair"
    assert "resampled onto" in main  # the 4× coarser PET went onto the T1 grid, and the page says so
    labels = page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
    for k in ("entropy", "mi_a", "mi_b", "ssim_a", "ssim_b", "qabf", "std"):
        assert any(k in lab for lab in labels), (k, labels)
    # the comparator: one tile per method, the best one starred, a bar chart of the ranking metric
    assert page.locator('[data-testid="stImage"]').count() >= 8
    assert page.get_by_text("★", exact=False).count() >= 1
    assert page.evaluate("() => [...document.querySelectorAll('.js-plotly-plot')].some(p => p.data[0].type === 'bar')")
    assert_no_exception(page)
    shot(page, "fusion")

    box = page.locator('[data-testid="stSelectbox"]', has_text="Method").first
    box.click()
    page.get_by_role("option", name="Laplacian pyramid", exact=True).first.click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.js-plotly-plot')].some(p => p.layout.title && String(p.layout.title.text).includes('Fused — Laplacian pyramid'))",
        timeout=60_000,
    )
    wait_ready(page)
    assert page.locator('[data-testid="stSelectbox"]', has_text="rule").count() >= 1  # its rule widget appeared
    assert_no_exception(page)
    shot(page, "fusion_laplacian")
    assert not console_errors, console_errors
