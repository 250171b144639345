"""Load: N concurrent sessions × R reruns against one MedLens server.

Two drivers (both by default):

* ``ws`` — N Streamlit websocket clients (the protocol the browser speaks: protobuf
  ``BackMsg``/``ForwardMsg`` on ``/_stcore/stream``). Each opens the Home page, finds the
  viewer's "Level / center" slider in the deltas, and R times sends a rerun with a new
  slider value, all N at once; a rerun's time runs from sending to ``script_finished``.
  This is the *server's* rerun time, with no browser rendering in the way.
* ``browser`` — the same in real Chromium tabs (end to end, including rendering; on a
  2-core machine the browser uses most of the CPU, so this is an upper bound).

Browser driver: starts ``streamlit run app.py`` on 127.0.0.1 (sample dataset), opens N tabs of one headless
Chromium context (each tab is its own Streamlit session), and R times fires a rerun on
*every* tab (one step of the Home viewer's "Level / center" slider) before waiting for any,
so N reruns are in flight at once. A rerun's time is measured in the page, from the key
press to the app's script state returning to ``notRunning`` (a MutationObserver on the
``stApp`` element). The server's RSS (process + children) is sampled throughout.

Baseline, measured in the same run: the same rerun in a single session with nothing else
running. Targets (issue 8): 0 errors, p95 rerun ≤ 3 s, server RSS ≤ 2 GB.

    python bench/bench_load.py [--quick] [--sessions 20] [--reruns 5] [--driver ws|browser|both]

Needs Debian's Chromium (/usr/bin/chromium) and the sample dataset (``make sample``).
On a 2-core machine the browser, not the server, uses most of the CPU: the numbers are
an upper bound of what the server needs.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._common import parser  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
READY = '[data-testid="stApp"][data-test-script-state="notRunning"][data-test-connection-state="CONNECTED"]'
SLIDER = '[data-testid="stSlider"]'

OBSERVER_JS = """() => {
  if (window.__ml) return;
  const app = document.querySelector('[data-testid="stApp"]');
  window.__ml = {fired: null, done: [], running: false};
  new MutationObserver(() => {
    const s = app.getAttribute('data-test-script-state');
    if (s === 'running') window.__ml.running = true;
    if (s === 'notRunning' && window.__ml.running && window.__ml.fired !== null) {
      window.__ml.done.push(performance.now() - window.__ml.fired);
      window.__ml.fired = null; window.__ml.running = false;
    }
  }).observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}"""

from tests.helpers.server import start_server, stop_server  # noqa: E402


class RssSampler(threading.Thread):
    """Peak RSS of the server process and its children, sampled every 0.2 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stop_flag.is_set():
            try:
                procs = [self.proc] + self.proc.children(recursive=True)
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.2)


def _slider(page):  # type: ignore[no-untyped-def]
    return page.locator(SLIDER, has_text="Level").first.locator('input[type="range"], [role="slider"]').first


def _open(context, url: str):  # type: ignore[no-untyped-def]
    page = context.new_page()
    page.goto(url)
    return page


def _ready(page, timeout: float = 180_000) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_selector(READY, timeout=timeout)
    page.wait_for_selector(SLIDER, timeout=timeout)
    page.evaluate(OBSERVER_JS)


def _fire(page) -> None:  # type: ignore[no-untyped-def]
    page.evaluate("() => { window.__ml.fired = performance.now(); window.__ml.running = false; }")
    s = _slider(page)
    s.focus()
    s.press("ArrowRight")


def _wait_done(page, n_done: int, timeout: float = 120_000) -> float:  # type: ignore[no-untyped-def]
    page.wait_for_function(f"() => window.__ml.done.length >= {n_done}", timeout=timeout)
    page.wait_for_selector(READY, timeout=timeout)
    return float(page.evaluate(f"() => window.__ml.done[{n_done - 1}]")) / 1000.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the server process and its children."""
    import psutil

    total = 0.0
    try:
        p = psutil.Process(pid)
        for q in [p] + p.children(recursive=True):
            t = q.cpu_times()
            total += t.user + t.system
    except psutil.Error:
        pass
    return total


def _errors(page) -> int:  # type: ignore[no-untyped-def]
    return page.locator('[data-testid="stException"]').count()


# ----------------------------------------------------------------------------- websocket driver
class _WsSession:
    """One Streamlit session over the websocket, as the browser drives it."""

    def __init__(self, url: str) -> None:
        self.url = url.replace("http://", "ws://") + "/_stcore/stream"
        self.ws = None
        self.slider_id: str | None = None
        self.value = 0.0
        self.page_hash = ""
        self.exceptions = 0

    async def open(self) -> float:
        import websockets

        self.ws = await websockets.connect(self.url, subprotocols=["streamlit"], max_size=None, open_timeout=60)
        return await self.rerun(initial=True)

    async def rerun(self, initial: bool = False) -> float:
        from streamlit.proto.BackMsg_pb2 import BackMsg

        msg = BackMsg()
        msg.rerun_script.query_string = ""
        msg.rerun_script.page_script_hash = self.page_hash
        if not initial and self.slider_id:
            self.value += 1.0
            w = msg.rerun_script.widget_states.widgets.add()
            w.id = self.slider_id
            w.double_array_value.data.append(self.value)
        t0 = time.perf_counter()
        await self.ws.send(msg.SerializeToString())
        return await self._until_finished(t0)

    async def _until_finished(self, t0: float) -> float:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        while True:
            raw = await self.ws.recv()
            fm = ForwardMsg()
            fm.ParseFromString(raw)
            kind = fm.WhichOneof("type")
            if kind == "new_session":
                self.page_hash = fm.new_session.page_script_hash or self.page_hash
            elif kind == "delta" and fm.delta.WhichOneof("type") == "new_element":
                el = fm.delta.new_element
                if el.WhichOneof("type") == "exception":
                    self.exceptions += 1
                if el.WhichOneof("type") == "slider" and el.slider.label.startswith("Level") and self.slider_id is None:
                    self.slider_id = el.slider.id
                    self.value = float(el.slider.default[0]) if el.slider.default else 0.0
            elif kind == "script_finished":
                if fm.script_finished in (0, 3):  # finished successfully (whole script / fragment)
                    return time.perf_counter() - t0
                if fm.script_finished == 1:
                    raise RuntimeError("the app failed to compile")

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


async def _ws_load(url: str, sessions: int, reruns: int) -> tuple[list[float], list[float], int]:
    import asyncio

    solo = _WsSession(url)
    await solo.open()
    base = [await solo.rerun() for _ in range(reruns + 1)][1:]
    await solo.close()
    clients = [_WsSession(url) for _ in range(sessions)]
    await asyncio.gather(*(c.open() for c in clients))
    missing = sum(c.slider_id is None for c in clients)  # counted as errors: the page did not render its viewer
    times: list[float] = []
    for _ in range(reruns):
        times += await asyncio.gather(*(c.rerun() for c in clients))
    await asyncio.gather(*(c.close() for c in clients))
    return times, base, missing + solo.exceptions + sum(c.exceptions for c in clients)


@contextlib.contextmanager
def _served():  # type: ignore[no-untyped-def]
    """A fresh server (own MEDLENS_HOME, log) with its RSS sampler; stopped on exit."""
    home = tempfile.mkdtemp(prefix="medlens-bench-home-")
    log = open(Path(home) / "server.log", "w")
    proc, url = start_server(home, log)
    sampler = RssSampler(proc.pid)
    sampler.start()
    try:
        yield proc, url, sampler, Path(home) / "server.log"
    finally:
        sampler.stop_flag.set()
        stop_server(proc)
        log.close()


def run_ws(sessions: int, reruns: int) -> dict:
    import asyncio

    with _served() as (proc, url, sampler, log_path):
        cpu0 = _cpu_seconds(proc.pid)
        t0 = time.perf_counter()
        times, base, missing = asyncio.run(_ws_load(url, sessions, reruns))
        wall = time.perf_counter() - t0
        server_cpu = _cpu_seconds(proc.pid) - cpu0
        errors = missing + sum(line.count("Traceback") for line in open(log_path, errors="replace"))
    return _summary(times, base, sessions, reruns, wall, errors, sampler.peak, server_cpu)


def _summary(times: list[float], base: list[float], sessions: int, reruns: int, wall: float, errors: int,
             rss_peak: int, server_cpu: float) -> dict:
    times = sorted(times)
    return {"sessions": sessions, "reruns": reruns, "n": len(times), "wall_s": wall,
            "p50": statistics.median(times), "p95": times[min(len(times) - 1, int(round(0.95 * len(times))) - 1)],
            "max": times[-1], "baseline_median": statistics.median(base), "errors": errors,
            "rss_peak_mb": rss_peak / 2**20, "server_cpu_s": server_cpu}


# ----------------------------------------------------------------------------- browser driver
def run(sessions: int, reruns: int) -> dict:
    from playwright.sync_api import sync_playwright

    with _served() as (proc, url, sampler, _):
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page_errors: list[str] = []
            # baseline: one session alone
            solo = _open(context, url)
            solo.on("pageerror", lambda e: page_errors.append(str(e)))
            _ready(solo)
            base = []
            for k in range(1, reruns + 2):
                _fire(solo)
                base.append(_wait_done(solo, k))
            base = base[1:]  # the first rerun warms caches
            solo.close()
            # load: N sessions, every rerun fired on all of them before waiting
            pages = [_open(context, url) for _ in range(sessions)]
            for p in pages:
                p.on("pageerror", lambda e: page_errors.append(str(e)))
            for p in pages:
                _ready(p)
            times: list[float] = []
            cpu0 = _cpu_seconds(proc.pid)
            t0 = time.perf_counter()
            for k in range(1, reruns + 1):
                for p in pages:
                    _fire(p)
                for p in pages:
                    times.append(_wait_done(p, k))
            wall = time.perf_counter() - t0
            server_cpu = _cpu_seconds(proc.pid) - cpu0
            exceptions = sum(_errors(p) for p in pages)
            browser.close()
        out = _summary(times, base, sessions, reruns, wall, exceptions + len(page_errors), sampler.peak, server_cpu)
    return out


def _print(driver: str, r: dict) -> bool:
    print(f"[{driver}] {r['sessions']} sessions × {r['reruns']} reruns = {r['n']} reruns in {r['wall_s']:.1f} s")
    print(f"[{driver}] rerun time  p50 {r['p50']:.2f} s  p95 {r['p95']:.2f} s  max {r['max']:.2f} s   (target p95 ≤ 3 s)")
    print(f"[{driver}] single-session baseline median {r['baseline_median']:.2f} s   "
          f"p95 / baseline = {r['p95'] / r['baseline_median']:.1f}×")
    print(f"[{driver}] server CPU {r['server_cpu_s']:.1f} s over {r['wall_s']:.1f} s wall = "
          f"{r['server_cpu_s'] / r['wall_s']:.2f} cores busy ({r['server_cpu_s'] / r['n']:.2f} s CPU per rerun)")
    print(f"[{driver}] server RSS peak {r['rss_peak_mb']:.0f} MiB (target ≤ 2048 MiB)   errors {r['errors']} (target 0)")
    ok = r["errors"] == 0 and r["p95"] <= 3.0 and r["rss_peak_mb"] <= 2048
    print(f"[{driver}] " + ("targets met" if ok else "TARGETS MISSED"))
    return ok


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--sessions", type=int, default=None)
    ap.add_argument("--reruns", type=int, default=None)
    ap.add_argument("--driver", choices=("ws", "browser", "both"), default="both")
    args = ap.parse_args()
    sessions = args.sessions or (10 if args.quick else 20)
    reruns = args.reruns or (3 if args.quick else 5)
    if os.getloadavg()[0] > 2 * (os.cpu_count() or 1):
        print(f"note: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores — other work is running; "
              "timings are inflated")
    if args.driver in ("ws", "both"):
        _print("ws", run_ws(sessions, reruns))
    if args.driver in ("browser", "both"):
        if not os.path.exists(CHROMIUM):
            print("[browser] Debian chromium is not installed (make browser-deps); skipped")
        else:
            _print("browser", run(sessions, reruns))


if __name__ == "__main__":
    main()
