"""Shared AppTest fixtures."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from analysis import dataset as ds


@pytest.fixture(scope="module")
def sample_dataset():  # type: ignore[no-untyped-def]
    """The built sample dataset (built into a temp folder when the repo has none yet)."""
    if ds.sample_manifest_path().exists():
        yield ds.load_sample()
        return
    from data.build_sample import build

    out = Path(tempfile.mkdtemp(prefix="medlens-sample-")) / "sample"
    build(out)
    old = os.environ.get("MEDLENS_SAMPLE")
    os.environ["MEDLENS_SAMPLE"] = str(out)
    yield ds.load_sample()
    if old is None:
        os.environ.pop("MEDLENS_SAMPLE", None)
    else:
        os.environ["MEDLENS_SAMPLE"] = old
