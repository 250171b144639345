"""Tiny helpers for benchmarks: medians of repeats, and a printed ratio to a baseline measured
in the same run (these machines are noisy: never compare to numbers from another run)."""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable


def median_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def report(name: str, ours: float, baseline: float, *, unit: str = "s", target: str = "") -> float:
    ratio = ours / baseline if baseline > 0 else float("inf")
    tgt = f"  (target {target})" if target else ""
    print(f"{name:<48} ours {ours * 1000:9.2f} ms  baseline {baseline * 1000:9.2f} ms  ratio {ratio:5.2f}×{tgt}")
    return ratio


def parser(desc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=desc)
    p.add_argument("--quick", action="store_true", help="fewer files / repeats")
    return p


def once_ms(fn: Callable[[], object]) -> float:
    """Wall time of one call, in ms."""
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000.0


def interleaved_ms(bare: Callable[[], object], page: Callable[[], object], reps: int) -> tuple[float, float]:
    """Median ms of ``bare`` and ``page``, alternated call by call so machine noise hits both alike."""
    b, p = [], []
    for _ in range(reps):
        b.append(once_ms(bare))
        p.append(once_ms(page))
    return statistics.median(b), statistics.median(p)
