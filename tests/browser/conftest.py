"""Browser-test fixtures (Playwright driving Debian's Chromium; see shared/guides/browser-tests.md).

Fixtures: ``app_url`` (a Streamlit server on 127.0.0.1, one per test session), ``page``
(pytest-playwright, launched with /usr/bin/chromium), ``console_errors`` (console errors and
page errors collected on ``page``), ``wait_ready(page)``, ``shot(page, name)`` (screenshot into
test-artifacts/). Under CI=true a missing Chromium fails the run instead of skipping.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest

from tests.helpers.server import start_server, stop_server

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
READY = '[data-testid="stApp"][data-test-script-state="notRunning"][data-test-connection-state="CONNECTED"]'
# Known, harmless 404s (both open Streamlit issues):
# - deep links to a sub-page log two 404s for /_stcore/health and /_stcore/host-config;
# - Streamlit keeps st.image media only for the latest script run, so when a rerun replaces
#   an image while the browser is still fetching the previous one, that stale /media/ URL 404s
#   (the new image is shown; nothing is missing on screen). Streamlit's image list reports the
#   same event a second way, as "Client Error: Image source error - <stale /media/ URL>".
#   ``assert_images_loaded`` checks that every image left on screen did load, so these filters
#   cannot hide an image that is really missing.
KNOWN_404 = re.compile(r"/_stcore/(health|host-config)|/media/[0-9a-f]+\.(jpg|jpeg|png)")
STALE_MEDIA = re.compile(r"^Client Error: Image source error - \S*/media/[0-9a-f]+\.(jpg|jpeg|png)$")


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    for item in items:
        if "tests/browser" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


def _require_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        msg = "Debian chromium not installed (run `make browser-deps` as root)"
        if os.environ.get("CI"):
            pytest.fail(msg + " — browser tests never skip on CI")
        pytest.skip(msg)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):  # type: ignore[no-untyped-def]
    _require_chromium()
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "headless": True,
        "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):  # type: ignore[no-untyped-def]
    return {**browser_context_args, "viewport": {"width": 1500, "height": 1000}}


@pytest.fixture(scope="session")
def app_server():  # type: ignore[no-untyped-def]
    """(url, log path, home dir) of a Streamlit server for the whole browser session."""
    _require_chromium()
    home = tempfile.mkdtemp(prefix="medlens-browser-home-")
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / "server.log"
    fh = open(log, "w")
    proc, url = start_server(home, fh)
    yield url, log, Path(home)
    stop_server(proc)
    fh.close()


@pytest.fixture(scope="session")
def app_url(app_server):  # type: ignore[no-untyped-def]
    return app_server[0]


@pytest.fixture
def console_errors(page):  # type: ignore[no-untyped-def]
    errors: list[str] = []

    def on_console(msg):  # type: ignore[no-untyped-def]
        if msg.type == "error":
            text = msg.text
            loc = (msg.location or {}).get("url", "")
            if "404" in text and KNOWN_404.search(loc + " " + text):
                return
            if STALE_MEDIA.match(text.strip()):
                return
            errors.append(text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    return errors


def wait_ready(page, timeout: float = 60_000) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_selector(READY, timeout=timeout)


@pytest.fixture(name="wait_ready")
def wait_ready_fixture():  # type: ignore[no-untyped-def]
    return wait_ready


def shot(page, name: str) -> Path:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    # Streamlit scrolls inside its own container, so full_page=True sees one viewport only:
    # grow the viewport to the content's height for the shot, then restore it.
    size = page.viewport_size or {"width": 1500, "height": 1000}
    height = page.evaluate(
        "() => { const m = document.querySelector('[data-testid=\"stMain\"]') || document.body;"
        " return Math.max(m.scrollHeight, document.body.scrollHeight); }"
    )
    page.set_viewport_size({"width": size["width"], "height": int(min(max(height, size["height"]), 6000))})
    page.wait_for_timeout(300)
    page.screenshot(path=str(path))
    page.set_viewport_size(size)
    return path


@pytest.fixture(name="shot")
def shot_fixture():  # type: ignore[no-untyped-def]
    return shot


def assert_no_exception(page) -> None:  # type: ignore[no-untyped-def]
    assert page.locator('[data-testid="stException"]').count() == 0, "an exception box is on the page"


_BROKEN_IMAGES = """() => Array.from(document.querySelectorAll('[data-testid="stApp"] img'))
    .filter(i => !i.complete || i.naturalWidth === 0).map(i => i.currentSrc || i.src)"""


def assert_images_loaded(page, timeout: float = 15_000) -> None:  # type: ignore[no-untyped-def]
    """Every image on screen finished loading with real pixels (none broken, none stale)."""
    wait_ready(page)
    try:
        page.wait_for_function(f"() => ({_BROKEN_IMAGES})().length === 0", timeout=timeout)
    except Exception:  # noqa: BLE001 - report which images are broken
        raise AssertionError(f"images on screen that did not load: {page.evaluate(_BROKEN_IMAGES)}") from None


def choose_option(page, label: str, option: str) -> None:  # type: ignore[no-untyped-def]
    """Pick ``option`` in the selectbox labelled ``label`` (re-opens the dropdown if a rerun closed it)."""
    wait_ready(page)
    box = page.locator('[data-testid="stSelectbox"]', has_text=label).first
    opt = page.get_by_role("option", name=option, exact=True).first
    for _ in range(3):
        box.click()
        try:
            opt.wait_for(state="visible", timeout=5_000)
            break
        except Exception:  # noqa: BLE001 - the dropdown closed during a rerun; open it again
            page.keyboard.press("Escape")
    opt.click()


def open_page(page, app_url: str, title: str) -> None:  # type: ignore[no-untyped-def]
    """Open the app and click a sidebar link (keeps one session, avoids deep-link 404s)."""
    page.goto(app_url)
    wait_ready(page)
    if title != "Home":
        page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
        page.wait_for_timeout(500)
        wait_ready(page)
