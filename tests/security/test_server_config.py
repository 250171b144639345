"""The server configuration the issue asks for, read the way Streamlit reads it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_config_file_values():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    server = cfg["server"]
    assert server["enableXsrfProtection"] is True
    assert server["enableCORS"] is True  # Streamlit turns XSRF off silently if CORS is off
    assert server["address"] in ("127.0.0.1", "localhost")
    assert isinstance(server["maxUploadSize"], int) and 1 <= server["maxUploadSize"] <= 2048
    assert server.get("enableStaticServing", False) is False
    assert cfg["client"]["showErrorDetails"] == "none"
    assert cfg["browser"]["gatherUsageStats"] is False


def test_streamlit_reads_the_same_values_from_the_project_folder():
    code = ("from streamlit import config\n"
            "config.get_config_options(force_reparse=True)\n"
            "print(config.get_option('server.enableXsrfProtection'), config.get_option('client.showErrorDetails'),"
            " config.get_option('browser.gatherUsageStats'), config.get_option('server.address'),"
            " config.get_option('server.maxUploadSize'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    xsrf, details, stats, address, upload = out.stdout.split()
    assert (xsrf, details, stats, address) == ("True", "none", "False", "127.0.0.1")
    assert int(upload) <= 2048
