"""Hostile uploads end to end: through ``analysis.dataset.ingest_uploads`` (decoding in the
sandbox worker) and through the Home page's upload box (AppTest).

For every input of the issue's list (see ``hostile.py``): a message naming the file and a
reason, the rest of the batch loads, no exception on screen, nothing written outside the
app's folder, bombs refused quickly and cheaply. The loader-level checks of each input
(exact reasons, tracemalloc in-process) live in tests/analysis/test_io_bad_input.py.
"""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

import pytest

from analysis import dataset, sandbox
from analysis.store import SUFFIX
from tests.security.hostile import (HTML_NAME, MARKDOWN_NAME, SHORT_MARKDOWN_NAME, catalogue, expected_errors,
                                    expected_images)

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", "__pycache__", ".pytest_cache", ".hypothesis", "test-artifacts", "node_modules", ".venv",
             "bash_jobs"}
#: Issue: "bombs refused within 2 s and with under 100 MB of extra memory". Refusal is
#: from headers (milliseconds); 2 s is the issue's ceiling, not an expected duration.
BOMB_SECONDS_CEILING = 2.0
BOMB_EXTRA_MB_CEILING = 100.0


def _files_under(root: Path) -> set[str]:
    out: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: None):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(("bash_jobs", "pytest-of-"))]
        out.update(os.path.join(dirpath, f) for f in filenames)
    return out


def _markers(cases) -> set[str]:
    """File names an escape would create: upload names, ZIP entry targets, shell payloads."""
    names = {"pwned", "evil.png", "abs.png", "win.png", "drive.png", "link.png", "secret.png", "bomb.zip"}
    for c in cases:
        names.add(os.path.basename(c.name.replace("\\", "/")) or c.name)
    return {n for n in names if n}


def _new_escaped_files(before: set[str], after: set[str], start: float, markers: set[str],
                       allowed: list[Path]) -> list[str]:
    """New files (since ``start``) outside the ``allowed`` folders that an escape would have
    made. Other processes may create unrelated files meanwhile, so only names an escape of
    *this* batch would produce count (upload names, ZIP entry targets, payload names, core
    dumps, image stores)."""
    bad = []
    for p in sorted(after - before):
        if any(Path(p).is_relative_to(a) for a in allowed):
            continue
        try:
            if os.path.getmtime(p) < start:
                continue
        except OSError:
            continue
        base = os.path.basename(p)
        if base in markers or base.startswith("core") or base.endswith(SUFFIX) or "pwned" in base:
            bad.append(p)
    return bad


@pytest.fixture(scope="module")
def cases():
    return catalogue()


def test_every_hostile_file_is_reported_by_name_and_the_batch_goes_on(cases, tmp_path):
    home = Path(os.environ["MEDLENS_HOME"])
    roots = [ROOT, Path("/tmp")]
    before = set().union(*(_files_under(r) for r in roots))
    start = time.time() - 1
    store = home / "sessions" / "hostile-test" / "uploads"

    ds = dataset.ingest_uploads([(c.name, c.data) for c in cases], store)

    got_errors = [e["file"] for e in ds.errors]
    assert sorted(got_errors) == sorted(expected_errors(cases))
    for e in ds.errors:
        assert e["reason"] and "Traceback" not in e["reason"] and "\n" not in e["reason"]
    assert list(ds.entries["name"]) == expected_images(cases)
    # the app writes only digest-named image stores into the session folder: no user-chosen name reaches the disk
    written = sorted(p.name for p in store.iterdir())
    assert len(written) == len(expected_images(cases))
    assert all(n.startswith("u") and n.endswith(SUFFIX) and n[1:-len(SUFFIX)].isalnum() for n in written)
    # nothing new outside the app's folder and the test's temporary folders
    after = set().union(*(_files_under(r) for r in roots))
    allowed = [home, tmp_path.parent.parent]  # the app's folder; pytest's own temporary folders
    assert _new_escaped_files(before, after, start, _markers(cases) | set(written), allowed) == []


def _reset_worker_peaks() -> dict[int, int] | None:
    """Reset the workers' peak RSS (``/proc/<pid>/clear_refs``); their RSS now (kB)."""
    base = {}
    try:
        for pid in sandbox.worker_pids():
            with open(f"/proc/{pid}/clear_refs", "w") as fh:
                fh.write("5")
            base[pid] = _status_kb(pid, "VmHWM")
    except OSError:
        return None
    return base


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def test_bombs_are_refused_quickly_and_cheaply(cases, tmp_path):
    bombs = [c for c in cases if c.bomb]
    assert len(bombs) >= 7
    dataset.ingest_uploads([("warm.png", cases[-1].data)], tmp_path / "warm")  # start the worker pool
    report = []
    for c in bombs:
        base = _reset_worker_peaks()
        tracemalloc.start()
        t0 = time.perf_counter()
        ds = dataset.ingest_uploads([(c.name, c.data)], tmp_path / "store")
        took = time.perf_counter() - t0
        _, parent_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        if base:
            worker_extra = max((_status_kb(pid, "VmHWM") - kb) / 1024 for pid, kb in base.items())
        else:  # no /proc peak reset here: measure the same refusal in-process instead
            from analysis import io

            tracemalloc.start()
            io.load_bytes(c.data, c.name, errors=[])
            worker_extra = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        parent_extra = parent_peak / 2**20 - len(c.data) / 2**20  # the upload's own bytes are not "extra"
        report.append((c.name, took, worker_extra, parent_extra))
        assert c.name in {e["file"].split("/")[0] for e in ds.errors}, c.name
        assert took < BOMB_SECONDS_CEILING, (c.name, took)
        assert worker_extra < BOMB_EXTRA_MB_CEILING, (c.name, worker_extra)
        assert parent_extra < BOMB_EXTRA_MB_CEILING, (c.name, parent_extra)
    print("\nbomb refusal (name, seconds, worker extra MB, server extra MB):")
    for row in report:
        print(f"  {row[0]:22s} {row[1]:.3f} s  worker +{row[2]:.1f} MB  server +{row[3]:.1f} MB")


def _texts(at) -> list[str]:
    out = []
    for kind in ("markdown", "error", "warning", "info", "caption", "subheader", "title", "success"):
        for el in getattr(at, kind):
            out.append(str(getattr(el, "value", "") or getattr(el, "body", "")))
    return out


def test_hostile_batch_through_the_home_upload_box(cases):
    from streamlit.testing.v1 import AppTest

    from ui.common import plain_name

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    assert not at.exception
    at.radio(key="home.source").set_value("upload").run()
    at.file_uploader(key="home.upload").set_value([(c.name, c.data, "application/octet-stream") for c in cases]).run()
    assert not at.exception, [e.value for e in at.exception]

    errs = expected_errors(cases)
    assert any(f"{len(errs)} files could not be used" in e.value for e in at.error)
    tables = [df.value for df in at.dataframe]
    err_table = next(t for t in tables if list(t.columns) == ["file", "reason"])
    assert sorted(err_table["file"]) == sorted(plain_name(n) for n in errs)
    assert all(r for r in err_table["reason"])
    listing = next(t for t in tables if "name" in t.columns and "format" in t.columns)
    assert sorted(listing["name"]) == sorted(plain_name(n) for n in expected_images(cases))
    for shown in list(err_table["file"]) + list(listing["name"]):
        assert "\u202e" not in shown  # a right-to-left override never reaches the screen as a control character
    # names rendered as Markdown are escaped: no live HTML, link or image from a file name
    for text in _texts(at):
        assert "<img" not in text and "](javascript" not in text and "![t](" not in text, text
    assert HTML_NAME and MARKDOWN_NAME  # both are in the batch above


def test_file_names_in_gallery_buttons_are_not_live_markdown(cases):
    """Button labels and tooltips render Markdown (links, images). A file called
    ``![](//e.x/t.png)`` must not become an image fetched from another host."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.radio(key="home.source").set_value("upload").run()
    at.file_uploader(key="home.upload").set_value([(SHORT_MARKDOWN_NAME, cases[-2].data, "image/png")]).run()
    assert not at.exception
    labels = [(b.label, b.help or "") for b in at.button]
    assert labels, "the gallery shows a button for the upload"
    for label, help_text in labels:
        assert "![](" not in label and "![](" not in help_text, (label, help_text)
