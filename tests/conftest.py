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
