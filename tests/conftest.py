"""Shared test settings: the app's writable folder goes to a temp dir for the whole run."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("MEDLENS_HOME", tempfile.mkdtemp(prefix="medlens-test-home-"))


def pytest_sessionstart(session):  # type: ignore[no-untyped-def]
    """Tests that read the sample dataset never skip: build it first when it is missing
    (`make test` has built it already; this covers a bare `pytest`). Deterministic, ~10 s."""
    from analysis.dataset import sample_manifest_path

    manifest = sample_manifest_path()
    if not manifest.exists():
        from data.build_sample import build

        build(manifest.parent)
