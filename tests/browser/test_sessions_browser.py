"""Isolation between users: ten concurrent browser sessions (tabs of one context are
separate Streamlit sessions) each upload a distinct image — distinct file name and pixel
content — and each sees only its own name, its own pixels and its own count."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from tests.browser.conftest import assert_no_exception, shot, wait_ready

N_SESSIONS = 10


def _upload_file(tmp_path: Path, i: int) -> tuple[Path, str, int]:
    tag = uuid.uuid4().hex[:8]
    name = f"user{i:02d}_{tag}.png"
    value = 20 + 20 * i  # each session's pixels: a distinct constant grey level with a gradient band
    arr = np.full((40, 50), value, np.uint8)
    arr[:, :5] = (np.arange(40, dtype=np.uint8) % 10)[:, None]  # below every session's level
    path = tmp_path / name
    buf = io.BytesIO()
    PILImage.fromarray(arr).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return path, name, value


def _heatmap_max(page) -> float:
    """Largest pixel value of the working image's Plotly heatmap (physical values, decoded
    by plotly.js from the figure's binary block)."""
    return page.evaluate(
        """() => { const p = [...document.querySelectorAll('.js-plotly-plot')]
                       .filter(el => el._fullData && el._fullData[0] && el._fullData[0].type === 'heatmap');
                   const z = p[p.length - 1]._fullData[0].z; let m = -Infinity;
                   for (const r of z) for (const v of r) if (v > m) m = v; return m; }""")


def test_ten_concurrent_sessions_see_only_their_own_upload(context, app_url, tmp_path):
    pages = [context.new_page() for _ in range(N_SESSIONS)]
    errors: list[str] = []
    for p in pages:
        p.on("pageerror", lambda exc: errors.append(str(exc)))
    files = [_upload_file(tmp_path, i) for i in range(N_SESSIONS)]
    for p in pages:
        p.goto(app_url)
    for p in pages:
        wait_ready(p, timeout=120_000)
        p.get_by_text("Upload files", exact=True).click()
    for p in pages:
        p.wait_for_selector('[data-testid="stFileUploaderDropzoneInput"]', state="attached", timeout=120_000)
    for p, (path, _, _) in zip(pages, files):  # fire every upload first, then wait on each
        p.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(path))
    for p, (_, name, _) in zip(pages, files):
        p.wait_for_selector(f'[data-testid="stHeading"]:has-text("{name}")', timeout=180_000)
        p.wait_for_selector('[data-testid="stPlotlyChart"] .js-plotly-plot', timeout=120_000)
        wait_ready(p, timeout=120_000)

    others_seen = {}
    for i, (p, (_, name, value)) in enumerate(zip(pages, files)):
        assert_no_exception(p)
        html = p.content()
        assert name in html
        seen = [n for j, (_, n, _) in enumerate(files) if j != i and n in html]
        if seen:
            others_seen[name] = seen
        metric = p.locator('[data-testid="stMetric"]', has_text="Images").first.inner_text()
        assert metric.split()[-1] == "1", metric
        assert _heatmap_max(p) == value, (name, _heatmap_max(p), value)  # its own pixels, not another user's
    shot(pages[0], "sessions_first")
    shot(pages[-1], "sessions_last")
    assert others_seen == {}
    assert errors == []
    for p in pages:
        p.close()
