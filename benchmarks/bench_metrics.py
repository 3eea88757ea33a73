"""The metrics plugin: what instrumentation costs dispatch, how fast /metrics renders, what monitoring weighs.

1. Sync hook dispatch with 1 and 10 impls, the ``metrics`` plugin enabled
   (every impl call counted and timed) vs the same kernel without it
   (goal <= 1.3x).  The kernel's own cost of observing (a no-op observer) is
   printed too, to tell it apart from the plugin's.
2. Rendering /metrics with 10,000 series: absolute time (goal < 100 ms) and
   the ratio to prometheus_client's ``generate_latest`` on a
   ``CollectorRegistry`` holding the same 10,000 series.
3. Memory: RSS of a fresh process running a kernel with 20 trivial plugins
   and some traffic, with the monitoring plugins that exist vs without them
   (goal <= 1.10x), each measured in its own subprocess.

Run: python benchmarks/bench_metrics.py
"""

from __future__ import annotations

import gc
import importlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from _common import machine
from _common import per_await_ns
from _common import per_call_ns

from builtin_plugins.monitoring.metrics._registry import DEFAULT_BUCKETS
from kernel import Kernel
from plugin_sdk import Invocation
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import hookimpl
from plugin_sdk import hookspec

SERIES = 10_000
#: the monitoring plugins, by module; included in the memory benchmark when they import
MONITORING_MODULES = (
    "builtin_plugins.monitoring.metrics",
    "builtin_plugins.http",
    "builtin_plugins.monitoring.health",
    "builtin_plugins.monitoring.alerts",
    "builtin_plugins.monitoring.analytics",
    "builtin_plugins.monitoring.dashboard",
)


class Specs:
    @hookspec(policy="isolate")
    def compute(x: int) -> int:
        """Sync benchmark hook.  :param x: a number."""
        raise NotImplementedError


def make_plugin(index: int) -> Plugin:
    class Impl(Plugin):
        name = f"impl{index}"
        version = "1.0.0"

        async def start(self, ctx: PluginContext[Any]) -> None:
            ctx.register_operation(f"impl{index}.echo", self.echo)

        async def echo(self, inv: Invocation) -> Any:
            return inv.args

        @hookimpl
        def compute(self, x: int) -> int:
            return x

    return Impl()


class NullObserver:
    def on_hook(self, hook: str, plugin: str, duration: float, outcome: str) -> None:
        pass

    def on_invoke(self, operation: str, duration: float, outcome: str) -> None:
        pass


class Observing(Plugin):
    name = "observing"
    version = "1.0.0"

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.add_dispatch_observer(NullObserver())


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


# -- 1. dispatch ------------------------------------------------------------------------------


async def bench_dispatch() -> None:
    from builtin_plugins.monitoring.metrics import Metrics

    print("## 1. sync hook dispatch: metrics plugin enabled vs not (same process)")
    for n in (1, 10):

        def kernel(*extra: Plugin) -> Kernel:
            plugins = [make_plugin(i) for i in range(n)] + list(extra)
            return Kernel({}, plugins=plugins, hookspecs=[Specs], environ={}, entry_points=False)

        off, null, on = kernel(), kernel(Observing()), kernel(Metrics())
        async with off, null, on:
            number = 100_000 if n == 1 else 30_000
            spec = Specs.compute
            base = per_call_ns(lambda: off.hooks.call(spec, x=1), number)
            nulled = per_call_ns(lambda: null.hooks.call(spec, x=1), number)
            ours = per_call_ns(lambda: on.hooks.call(spec, x=1), number)
            ratio = ours / base
            print(
                f"{n:>2} impl(s): no observer {base / 1000:6.2f} us | no-op observer {nulled / 1000:6.2f} us "
                f"({nulled / base:4.2f}x) | metrics {ours / 1000:6.2f} us = {ratio:4.2f}x "
                f"(goal <= 1.3x: {verdict(ratio <= 1.3)}); "
                f"metrics' own share {(ours - nulled) / n:5.0f} ns per impl call"
            )
    async with (
        Kernel({}, plugins=[make_plugin(0)], hookspecs=[Specs], environ={}, entry_points=False) as off,
        Kernel({}, plugins=[make_plugin(0), Metrics()], hookspecs=[Specs], environ={}, entry_points=False) as on,
    ):
        args = {"a": 1}
        base = await per_await_ns(lambda: off.invoke("impl0.echo", args), 50_000)
        ours = await per_await_ns(lambda: on.invoke("impl0.echo", args), 50_000)
        print(
            f"for reference, kernel.invoke: {base / 1000:.2f} us without, {ours / 1000:.2f} us with metrics "
            f"= {ours / base:.2f}x (no goal)"
        )


# -- 2. rendering ----------------------------------------------------------------------------------

BUCKETS = DEFAULT_BUCKETS  # the metrics plugin's own latency buckets
COUNTERS, GAUGES, HISTOGRAMS = 4_000, 4_000, 100  # 4,000 + 4,000 + 100 x (17 + 1 + 2) lines = 10,000 series


def fill_ours() -> Any:
    from builtin_plugins.monitoring.metrics import Registry

    registry = Registry(max_series_per_metric=SERIES)
    requests = registry.counter("bench_requests_total", "Requests by route and code.", ["route", "code"])
    depth = registry.gauge("bench_queue_depth", "Queue depth by queue.", ["queue"])
    latency = registry.histogram("bench_latency_seconds", "Latency by route.", ["route"], BUCKETS)
    for i in range(COUNTERS):
        requests.inc(i, route=f"/api/v1/items/{i}", code=str(200 + i % 5))
    for i in range(GAUGES):
        depth.set(i * 0.5, queue=f"queue-{i}")
    for i in range(HISTOGRAMS):
        for j in range(20):
            latency.observe(j * 0.013, route=f"/api/v1/items/{i}")
    return registry


def fill_prometheus_client() -> Any:
    import prometheus_client
    from prometheus_client import CollectorRegistry

    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # same samples as ours: no _created series
    registry = CollectorRegistry()
    requests = prometheus_client.Counter(
        "bench_requests", "Requests by route and code.", ["route", "code"], registry=registry
    )
    depth = prometheus_client.Gauge("bench_queue_depth", "Queue depth by queue.", ["queue"], registry=registry)
    latency = prometheus_client.Histogram(
        "bench_latency_seconds", "Latency by route.", ["route"], registry=registry, buckets=BUCKETS
    )
    for i in range(COUNTERS):
        requests.labels(route=f"/api/v1/items/{i}", code=str(200 + i % 5)).inc(i)
    for i in range(GAUGES):
        depth.labels(queue=f"queue-{i}").set(i * 0.5)
    for i in range(HISTOGRAMS):
        for j in range(20):
            latency.labels(route=f"/api/v1/items/{i}").observe(j * 0.013)
    return registry


def median_ms(func: Callable[[], Any], repeat: int = 15) -> float:
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        func()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


def bench_render() -> None:
    from prometheus_client import generate_latest

    from builtin_plugins.monitoring.metrics import render

    print(f"## 2. rendering /metrics with {SERIES:,} series")
    ours = fill_ours()
    theirs = fill_prometheus_client()
    text = render(ours.metrics()).decode()
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    reference = generate_latest(theirs).decode()
    reference_lines = [line for line in reference.splitlines() if not line.startswith("#")]
    assert len(lines) == len(reference_lines) == SERIES, (len(lines), len(reference_lines))
    text_ms = median_ms(lambda: render(ours.metrics()))
    om_ms = median_ms(lambda: render(ours.metrics(), openmetrics=True))
    base_ms = median_ms(lambda: generate_latest(theirs))
    print(f"text 0.0.4:  {text_ms:6.1f} ms (goal < 100 ms: {verdict(text_ms < 100)}), {len(text) / 1e6:.2f} MB")
    print(f"OpenMetrics: {om_ms:6.1f} ms (goal < 100 ms: {verdict(om_ms < 100)})")
    print(
        f"prometheus_client generate_latest, same {SERIES:,} series: {base_ms:6.1f} ms; "
        f"ours = {text_ms / base_ms:.2f}x of it"
    )


# -- 3. memory ---------------------------------------------------------------------------------------


def monitoring_plugins(modules: tuple[str, ...]) -> tuple[list[Plugin], list[str], dict[str, str]]:
    """Instances of the plugins of ``modules`` that import; (plugins, included, skipped -> why)."""
    plugins: list[Plugin] = []
    included: list[str] = []
    skipped: dict[str, str] = {}
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            skipped[module_name] = f"{type(exc).__name__}: {exc}"
            continue
        classes = {
            obj
            for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, Plugin) and obj is not Plugin and obj.name
        }
        if not classes:
            skipped[module_name] = "no plugin class"
        for cls in sorted(classes, key=lambda c: c.name):
            try:
                plugins.append(cls())
                included.append(cls.name)
            except Exception as exc:
                skipped[f"{module_name}:{cls.__name__}"] = f"{type(exc).__name__}: {exc}"
    return plugins, included, skipped


def memory_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB: resident now, and its peak since exec.

    ``ru_maxrss`` is not used: on Linux it survives ``exec`` and would report
    the parent benchmark's own peak.
    """
    found = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(("VmRSS:", "VmHWM:")):
                found[line.split(":")[0]] = int(line.split()[1])
    return found.get("VmRSS", 0), found.get("VmHWM", 0)


async def memory_child(modules: tuple[str, ...], plugins_count: int) -> dict[str, Any]:
    """Runs in a fresh process: nothing of the monitoring plugins is imported unless in ``modules``."""
    plugins = [make_plugin(i) for i in range(plugins_count)]
    extra, included, skipped = monitoring_plugins(modules)
    plugins.extend(extra)
    config: dict[str, Any] = {"plugins": {"http": {"permissions": ["net:listen:127.0.0.1:*"], "settings": {"port": 0}}}} if "http" in included else {}
    async with Kernel(config, plugins=plugins, hookspecs=[Specs], environ={}, entry_points=False) as kernel:
        for _ in range(1_000):
            kernel.hooks.call(Specs.compute, x=1)
        for i in range(1_000):
            await kernel.invoke(f"impl{i % plugins_count}.echo", {"i": i})
        states = {name: info.state.value for name, info in kernel.plugins.items() if not name.startswith("impl")}
        gc.collect()
        rss, peak = memory_kib()
    return {"rss_kib": rss, "peak_kib": peak, "included": included, "skipped": skipped, "states": states}


def run_child(mode: str, plugins_count: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--memory-child", mode, str(plugins_count)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory child ({mode}) failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def bench_memory(plugins_count: int = 20, runs: int = 3) -> None:
    print(
        f"## 3. memory: fresh process, kernel with {plugins_count} trivial plugins + 1,000 hook calls + 1,000 invokes"
    )

    def median_of(mode: str) -> tuple[float, dict[str, Any]]:
        results = [run_child(mode, plugins_count) for _ in range(runs)]
        return statistics.median(r["rss_kib"] for r in results), results[-1]

    base, without = median_of("without")
    print(f"without monitoring: RSS {base / 1024:6.1f} MiB (peak {without['peak_kib'] / 1024:.1f} MiB)")
    for mode in ("metrics", "with"):
        rss, last = median_of(mode)
        ratio = rss / base
        print(
            f"with {', '.join(last['included']) or 'nothing'}: RSS {rss / 1024:6.1f} MiB "
            f"(peak {last['peak_kib'] / 1024:.1f} MiB) = {ratio:.3f}x (goal <= 1.10x: {verdict(ratio <= 1.10)})"
        )
        for what, why in last["skipped"].items():
            print(f"  skipped {what}: {why}")
        if mode == "with":
            print(f"  their states: {last['states']}")
    print("each module alone, added to the baseline kernel:")
    for module in MONITORING_MODULES:
        rss, last = median_of(module)
        print(f"  {module:<40} +{(rss - base) / 1024:5.1f} MiB  {', '.join(last['included']) or 'skipped'}")


async def main() -> None:
    print("# metrics plugin (ratios against baselines measured in the same process)")
    print(f"# machine: {machine()}")
    await bench_dispatch()
    bench_render()
    bench_memory()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--memory-child":
        mode, count = sys.argv[2], int(sys.argv[3])
        modules = {"without": (), "metrics": MONITORING_MODULES[:1], "with": MONITORING_MODULES}.get(mode, (mode,))
        print(json.dumps(anyio.run(memory_child, modules, count)))
    else:
        anyio.run(main)
