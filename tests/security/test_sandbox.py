"""Decoder isolation (analysis.sandbox): a crashing or hanging decoder costs one file, not the server."""

from __future__ import annotations

import io as _io
import os
import resource
import time

import numpy as np
import psutil
import pytest
from PIL import Image as PILImage

from analysis import dataset, io, sandbox
from tests.helpers.dicom import ct_dicom


def _png(value: int = 7) -> bytes:
    buf = _io.BytesIO()
    PILImage.fromarray(np.full((8, 9), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _alive(pid: int) -> bool:
    """Running and not a zombie (a process reaped between two checks counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def crashing_decoder(monkeypatch):
    """Point the worker at the stand-in that segfaults on ``crash*`` and hangs on ``hang*``."""
    monkeypatch.setattr(sandbox, "_TARGET", sandbox._selftest_crash_on)
    yield
    sandbox.shutdown()


def test_isolated_load_gives_the_same_image_as_in_process():
    data = ct_dicom()
    a = sandbox.load_bytes_isolated(data, "ct.dcm")[0]
    b = io.load_bytes(data, "ct.dcm")[0]
    np.testing.assert_array_equal(a.pixels, b.pixels)
    assert (a.spacing, a.units, a.window, a.digest, a.name) == (b.spacing, b.units, b.window, b.digest, b.name)
    assert sandbox.worker_pids() and os.getpid() not in sandbox.worker_pids()


def test_loader_errors_pass_through_with_the_file_name():
    with pytest.raises(io.LoadError) as e:
        sandbox.load_bytes_isolated(b"just some text\n" * 10, "notes.png")
    assert e.value.filename == "notes.png" and "text" in e.value.reason


def test_a_segfaulting_decoder_becomes_a_message_and_the_batch_goes_on(crashing_decoder, tmp_path):
    me = os.getpid()
    sandbox.load_bytes_isolated(_png(1), "warm.png")
    before = set(sandbox.worker_pids())
    ds = dataset.ingest_uploads([("good.dcm", ct_dicom()), ("crash.dcm", ct_dicom(hu=np.zeros((4, 4)))),
                                 ("after.png", _png(3))], tmp_path)
    assert os.getpid() == me  # still the same (server) process
    assert [e["file"] for e in ds.errors] == ["crash.dcm"]
    assert "decoder crashed" in ds.errors[0]["reason"]
    assert sorted(ds.entries["name"]) == ["after.png", "good.dcm"]
    assert set(sandbox.worker_pids()).isdisjoint(before)  # the broken pool was replaced
    # and the next upload loads normally
    assert sandbox.load_bytes_isolated(_png(5), "next.png")[0].pixels.max() == 5
    assert not list(tmp_path.glob("core*")) and not any(p.name.startswith("core") for p in tmp_path.parent.iterdir())


def test_a_hanging_decoder_is_killed_after_the_timeout(crashing_decoder):
    sandbox.load_bytes_isolated(_png(1), "warm.png")
    pids = sandbox.worker_pids()
    t0 = time.monotonic()
    with pytest.raises(io.LoadError) as e:
        sandbox.load_bytes_isolated(_png(2), "hang.png", timeout=1.5)
    took = time.monotonic() - t0
    assert e.value.filename == "hang.png" and "timed out" in e.value.reason
    assert took < 30, "generous ceiling: the timeout is 1.5 s"
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids):
        assert time.monotonic() < deadline, "the hung worker was not killed"
        time.sleep(0.1)
    assert sandbox.load_bytes_isolated(_png(6), "next.png")[0].pixels.max() == 6


def test_ingest_reports_entry_errors_of_a_zip_and_keeps_the_good_entries(tmp_path):
    import zipfile

    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok.png", _png(9))
        zf.writestr("../evil.png", _png(8))
        zf.writestr("notes.dcm", b"hello")
    ds = dataset.ingest_uploads([("batch.zip", buf.getvalue())], tmp_path)
    assert list(ds.entries["name"]) == ["batch.zip/ok.png"]
    files = sorted(e["file"] for e in ds.errors)
    assert files == ["batch.zip/../evil.png", "batch.zip/notes.dcm"]


def test_workers_run_without_core_dumps_and_with_a_memory_ceiling():
    assert sandbox.run_isolated(resource.getrlimit, resource.RLIMIT_CORE, name="probe") == (0, 0)
    soft, _ = sandbox.run_isolated(resource.getrlimit, resource.RLIMIT_AS, name="probe")
    assert 0 < soft <= sandbox.DEFAULT_WORKER_MEMORY


def test_an_unexpected_exception_in_the_worker_becomes_a_loaderror():
    with pytest.raises(io.LoadError) as e:
        sandbox.run_isolated(int, "not a number", name="weird.bin")
    assert e.value.filename == "weird.bin" and "ValueError" in e.value.reason
    assert "not a number" not in str(e.value)  # the message (it may quote file content) is not passed on


def test_timeout_grows_with_the_upload_size():
    assert sandbox.timeout_for(0) == sandbox.DEFAULT_TIMEOUT
    assert sandbox.timeout_for(512 << 20) == pytest.approx(sandbox.DEFAULT_TIMEOUT + 128)
