"""Shared helpers: timing loops and the machine line every benchmark prints."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import timeit
from collections.abc import Awaitable
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any


def machine() -> str:
    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{platform.python_implementation()} {platform.python_version()} on {os.cpu_count()} x {cpu} ({sys.platform})"
    )


def per_call_ns(func: Callable[[], Any], number: int, repeat: int = 7) -> float:
    """Median ns per call of ``func`` over ``repeat`` runs of ``number`` calls."""
    runs = timeit.Timer(func).repeat(repeat=repeat, number=number)
    return statistics.median(runs) / number * 1e9


async def per_await_ns(make: Callable[[], Awaitable[Any]], number: int, repeat: int = 7) -> float:
    """Median ns per ``await make()`` inside the running event loop."""
    samples = []
    for _ in range(repeat):
        start = perf_counter_ns()
        for _ in range(number):
            await make()
        samples.append((perf_counter_ns() - start) / number)
    return statistics.median(samples)


def report(title: str, rows: list[tuple[str, float, float, float | None]]) -> None:
    """Print rows of (label, ours ns, baseline ns, goal ratio)."""
    print(f"# {title}")
    print(f"# machine: {machine()}")
    for label, ours, base, goal in rows:
        ratio = ours / base
        verdict = "" if goal is None else ("  (goal <= %.1fx: %s)" % (goal, "met" if ratio <= goal else "MISSED"))
        print(f"{label:<58} {ours / 1000:8.2f} us vs {base / 1000:8.2f} us = {ratio:5.2f}x{verdict}")
