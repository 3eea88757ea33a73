"""10,000 concurrent invokes: errors, latency percentiles, and throughput against
running the same handlers in a bare anyio task group (goal >= 0.5 of it).

Run: python benchmarks/bench_concurrency.py
"""

from __future__ import annotations

import gc
import statistics
from time import perf_counter

import anyio
import anyio.lowlevel
from _common import machine

from kernel import Kernel
from plugin_sdk import Invocation
from plugin_sdk import Plugin

CALLS = 10_000


async def handler(inv: Invocation) -> int:
    await anyio.lowlevel.checkpoint()  # a real suspension, as a tool call would have
    return 1


class Tools(Plugin):
    name = "tools"
    version = "1.0.0"

    async def start(self, ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.register_operation("tools.work", handler)


async def bare() -> float:
    inv = Invocation("tools.work", {})

    async def one() -> None:
        await handler(inv)

    began = perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(CALLS):
            group.start_soon(one)
    return perf_counter() - began


async def through_kernel(kernel: Kernel) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = 0

    async def one() -> None:
        nonlocal errors
        began = perf_counter()
        try:
            await kernel.invoke("tools.work", {"n": 1})
        except Exception:
            errors += 1
        latencies.append(perf_counter() - began)

    began = perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(CALLS):
            group.start_soon(one)
    return perf_counter() - began, latencies, errors


async def main() -> None:
    async with Kernel({}, plugins=[Tools()], environ={}, entry_points=False) as kernel:
        bare_times, kernel_times = [], []
        latencies: list[float] = []
        errors = 0
        for _ in range(5):
            gc.collect()
            bare_times.append(await bare())
            gc.collect()
            elapsed, lat, err = await through_kernel(kernel)
            kernel_times.append(elapsed)
            latencies, errors = lat, errors + err
    base, ours = statistics.median(bare_times), statistics.median(kernel_times)
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[int(len(latencies) * 0.99)]
    fraction = base / ours
    print(f"# {CALLS} concurrent invokes (median of 5 rounds)")
    print(f"# machine: {machine()}")
    print(f"errors: {errors}")
    print(f"bare task group (baseline): {CALLS / base:9.0f} calls/s  ({base * 1000:.1f} ms)")
    print(f"through kernel.invoke:      {CALLS / ours:9.0f} calls/s  ({ours * 1000:.1f} ms)")
    print(f"latency p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms (each call queued behind {CALLS} tasks)")
    print(f"throughput fraction {fraction:.2f} of bare  (goal >= 0.5: {'met' if fraction >= 0.5 else 'MISSED'})")


if __name__ == "__main__":
    anyio.run(main)
