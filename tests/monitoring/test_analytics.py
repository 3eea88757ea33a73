"""The ``analytics`` plugin: quantiles, window rates and error ratios, top-N, renderers, HTTP and CLI.

Time is a fake clock: tests record metric updates, advance the clock and call
``sample()``; nothing sleeps.  The metrics service is a small fake registry
(counters and histograms shaped like the ``metrics`` plugin's) provided by a
test plugin.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tracemalloc
from collections.abc import AsyncIterator
from collections.abc import Mapping
from collections.abc import Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs
import httpx
import orjson
import pytest

from builtin_plugins.monitoring.analytics import Analytics
from builtin_plugins.monitoring.analytics import histogram_quantile
from builtin_plugins.monitoring.analytics import render_html
from builtin_plugins.monitoring.analytics import render_json
from builtin_plugins.monitoring.analytics import render_markdown
from builtin_plugins.monitoring.analytics import summarize
from builtin_plugins.monitoring.analytics._cli import configure
from builtin_plugins.monitoring.analytics._cli import run
from builtin_plugins.monitoring.analytics._stats import SeriesIndex
from builtin_plugins.monitoring.analytics._stats import increase
from builtin_plugins.monitoring.analytics._stats import snapshot
from kernel import Kernel
from kernel._cli import Environment
from plugin_sdk import CliCommand
from plugin_sdk import CliEnvironment
from plugin_sdk import ConfigError
from plugin_sdk import HealthStatus
from plugin_sdk import Invocation
from plugin_sdk import Invoker
from plugin_sdk import MetricFamily
from plugin_sdk import MetricKind
from plugin_sdk import MetricsRegistry
from plugin_sdk import OperationFailed
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import Sample
from plugin_sdk import hookspecs

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
BUCKETS = (0.01, 0.1, 1.0)


# -- fakes ------------------------------------------------------------------------------


class FakeClock:
    """``now()`` moves only when told; ``sleep()`` returns once the clock has been advanced past its end."""

    def __init__(self, start: float = T0) -> None:
        self.t = start
        self._sleepers: list[tuple[float, anyio.Event]] = []
        self._asleep: anyio.Event | None = None  # set while someone sleeps on this clock

    def now(self) -> float:
        return self.t

    def _asleep_event(self) -> anyio.Event:
        if self._asleep is None:
            self._asleep = anyio.Event()
        return self._asleep

    async def sleep(self, seconds: float) -> None:
        event = anyio.Event()
        self._sleepers.append((self.t + seconds, event))
        self._asleep_event().set()
        await event.wait()

    def advance(self, seconds: float) -> None:
        self.t += seconds
        for entry in list(self._sleepers):
            if entry[0] <= self.t:
                self._sleepers.remove(entry)
                entry[1].set()
                self._asleep = None

    async def until_asleep(self) -> None:
        """Let the plugin's loop run until it waits on this clock again (its work for now is done)."""
        with anyio.fail_after(5):
            await self._asleep_event().wait()


Key = tuple[tuple[str, str], ...]


class _Metric:
    def __init__(self, name: str, kind: MetricKind, labels: Sequence[str], buckets: Sequence[float] = ()) -> None:
        self.name, self.kind, self.labels, self.buckets = name, kind, tuple(labels), tuple(buckets)
        self.values: dict[Key, float] = {}
        self.observed: dict[Key, list[float]] = {}

    def _key(self, labels: Mapping[str, str]) -> Key:
        assert set(labels) == set(self.labels), f"{self.name}: {sorted(labels)} != {sorted(self.labels)}"
        return tuple(sorted(labels.items()))

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        self.values[key] = self.values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)

    def set(self, value: float, **labels: str) -> None:
        self.values[self._key(labels)] = value

    def observe(self, value: float, **labels: str) -> None:
        self.observed.setdefault(self._key(labels), []).append(value)

    def family(self) -> MetricFamily:
        if self.kind != "histogram":
            samples = [Sample(self.name, dict(key), value) for key, value in sorted(self.values.items())]
            return MetricFamily(self.name, self.kind, "", tuple(samples))
        samples = []
        for key, values in sorted(self.observed.items()):
            for bound in (*self.buckets, float("inf")):
                le = "+Inf" if bound == float("inf") else repr(bound)
                count = sum(1 for value in values if value <= bound)
                samples.append(Sample(f"{self.name}_bucket", {**dict(key), "le": le}, float(count)))
            samples.append(Sample(f"{self.name}_sum", dict(key), sum(values)))
            samples.append(Sample(f"{self.name}_count", dict(key), float(len(values))))
        return MetricFamily(self.name, "histogram", "", tuple(samples))


class FakeRegistry:
    """Enough of a metrics registry, plus helpers that record what the kernel's instrumentation would."""

    def __init__(self) -> None:
        self.metrics: dict[str, _Metric] = {}
        self.fail = False

    def _get(self, name: str, kind: MetricKind, labels: Sequence[str], buckets: Sequence[float] = ()) -> _Metric:
        return self.metrics.setdefault(name, _Metric(name, kind, labels, buckets))

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> _Metric:
        return self._get(name, "counter", labels)

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> _Metric:
        return self._get(name, "gauge", labels)

    def histogram(
        self, name: str, help: str, labels: Sequence[str] = (), buckets: Sequence[float] | None = None
    ) -> _Metric:
        return self._get(name, "histogram", labels, buckets or BUCKETS)

    def collect(self) -> list[MetricFamily]:
        if self.fail:
            raise RuntimeError("registry unavailable")
        return [metric.family() for _, metric in sorted(self.metrics.items())]

    def hook(self, hook: str, plugin: str, seconds: float, outcome: str = "ok", times: int = 1) -> None:
        for _ in range(times):
            self.counter("orion_hook_calls_total", "", ("hook", "plugin", "outcome")).inc(
                hook=hook, plugin=plugin, outcome=outcome
            )
            self.histogram("orion_hook_duration_seconds", "", ("hook", "plugin")).observe(
                seconds, hook=hook, plugin=plugin
            )

    def invoke(self, operation: str, seconds: float, outcome: str = "ok", times: int = 1) -> None:
        for _ in range(times):
            self.counter("orion_invoke_calls_total", "", ("operation", "outcome")).inc(
                operation=operation, outcome=outcome
            )
            self.histogram("orion_invoke_duration_seconds", "", ("operation",)).observe(seconds, operation=operation)


class FakeMetrics(Plugin):
    name = "fake_metrics"
    provides = ("metrics",)

    def __init__(self, registry: FakeRegistry) -> None:
        self.registry = registry

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.provide("metrics", self.registry)


@attrs.frozen
class Harness:
    kernel: Kernel
    analytics: Analytics
    registry: FakeRegistry
    clock: FakeClock


@asynccontextmanager
async def running(settings: Mapping[str, Any], registry: FakeRegistry | None = None) -> AsyncIterator[Harness]:
    registry = registry if registry is not None else FakeRegistry()
    clock = FakeClock()
    analytics = Analytics(clock=clock)
    config = {"plugins": {"analytics": {"settings": dict(settings)}}}
    async with Kernel(config, plugins=[FakeMetrics(registry), analytics], environ={}) as kernel:
        yield Harness(kernel, analytics, registry, clock)


def row(summary: Mapping[str, Any], kind: str, name: str) -> dict[str, Any]:
    [found] = [r for r in summary[kind] if r["name"] == name]
    return dict(found)


# -- quantiles ----------------------------------------------------------------------------------

#: cumulative counts: 10 at <= 0.1, 60 at <= 0.5, 90 at <= 1, 100 in all
HAND = [(0.1, 10.0), (0.5, 60.0), (1.0, 90.0), (float("inf"), 100.0)]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.05, 0.0 + 0.1 * (5 / 10)),  # rank 5 in the first bucket, which starts at 0
        (0.5, 0.1 + 0.4 * (40 / 50)),  # rank 50: 40 into the (0.1, 0.5] bucket of 50
        (0.75, 0.5 + 0.5 * (15 / 30)),  # rank 75: 15 into the (0.5, 1] bucket of 30
        (0.9, 1.0),  # rank 90: the top of (0.5, 1]
        (0.95, 1.0),  # rank 95 is in +Inf: the highest finite bound
        (0.99, 1.0),
    ],
)
def test_histogram_quantile_matches_a_hand_computation(q: float, expected: float) -> None:
    assert histogram_quantile(q, HAND) == pytest.approx(expected)
    assert histogram_quantile(q, list(reversed(HAND))) == pytest.approx(expected)  # order does not matter


def test_histogram_quantile_edge_cases() -> None:
    assert histogram_quantile(0.5, [(float("inf"), 10.0)]) is None  # one bucket
    assert histogram_quantile(0.5, [(0.1, 5.0), (1.0, 10.0)]) is None  # no +Inf bucket
    assert histogram_quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None  # no observations
    # a non-monotonic scrape is repaired upwards: (0.5 -> 55) becomes 60
    assert histogram_quantile(0.5, [(0.1, 60.0), (0.5, 55.0), (float("inf"), 100.0)]) == pytest.approx(0.1 * 50 / 60)
    # buckets with one bound (from different series) are merged
    inf = float("inf")
    merged = [(0.1, 5.0), (0.1, 5.0), (0.5, 30.0), (0.5, 30.0), (1.0, 45.0), (1.0, 45.0), (inf, 50.0), (inf, 50.0)]
    assert histogram_quantile(0.5, merged) == histogram_quantile(0.5, HAND)
    assert histogram_quantile(0.5, [(-1.0, 10.0), (float("inf"), 10.0)]) == -1.0
    with pytest.raises(ValueError, match="between 0 and 1"):
        histogram_quantile(1.5, HAND)


def test_increase_handles_resets_and_new_series() -> None:
    assert increase([10.0, 15.0, 3.0, 5.0]) == 5.0 + 3.0 + 2.0
    assert increase([None, None, 4.0, 6.0]) == 6.0  # created inside the window: from 0
    assert increase([7.0]) == 0.0


# -- windows ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_rates_error_ratios_and_percentiles_over_the_window() -> None:
    registry = FakeRegistry()
    # before analytics starts: slow and failing, and not part of any window
    registry.hook("check_health", "db", 0.5, outcome="error", times=50)
    registry.invoke("tools.search", 0.5, outcome="error", times=50)
    async with running({"interval": 5, "window": 60}, registry) as h:
        for step in range(12):
            h.clock.advance(5)
            registry.hook("check_health", "db", 0.005, times=10)
            registry.hook("check_health", "cache", 0.05, times=2)
            registry.invoke("tools.search", 0.05, times=4)
            if step % 3 == 0:
                registry.hook("check_health", "db", 0.005, outcome="error", times=2)
                registry.invoke("tools.search", 0.05, outcome="timeout")
            h.analytics.sample()
        summary = await h.kernel.invoke("analytics.summary")
        assert summary["window"] == {"seconds": 60.0, "covered": 60.0, "snapshots": 13}
        assert summary["generated_at"] == T0 + 60

        hook = row(summary, "hooks", "check_health")
        assert (hook["calls"], hook["errors"]) == (12 * 12 + 4 * 2, 4 * 2)
        assert hook["rate"] == pytest.approx(152 / 60)
        assert hook["error_ratio"] == pytest.approx(8 / 152)
        # 128 observations at 5 ms (the 10 ms bucket), 24 at 50 ms (the 100 ms bucket)
        assert hook["p50"] == pytest.approx(0.01 * 76 / 128)
        assert hook["p95"] == pytest.approx(0.01 + 0.09 * (0.95 * 152 - 128) / 24)
        assert hook["mean"] == pytest.approx((128 * 0.005 + 24 * 0.05) / 152)

        db = row(summary, "plugins", "db")
        assert (db["calls"], db["errors"], db["p99"]) == (128, 8, pytest.approx(0.01 * 0.99))
        cache = row(summary, "plugins", "cache")
        assert (cache["calls"], cache["error_ratio"], cache["p50"]) == (24, 0.0, pytest.approx(0.01 + 0.09 * 0.5))

        operation = row(summary, "operations", "tools.search")
        assert (operation["calls"], operation["errors"]) == (52, 4)  # a timeout is an error
        assert operation["rate"] == pytest.approx(52 / 60)
        assert summary["totals"] == {"hook_calls": 152, "hook_errors": 8, "invokes": 52, "invoke_errors": 4}

        # the window slides: a quiet minute later only the new calls count
        for _ in range(12):
            h.clock.advance(5)
            registry.hook("kernel_started", "db", 0.5)
            h.analytics.sample()
        summary = h.analytics.summary()
        assert [r["name"] for r in summary["hooks"]] == ["kernel_started"]
        assert row(summary, "hooks", "kernel_started")["rate"] == pytest.approx(12 / 60)
        assert summary["operations"] == []
        assert len(h.analytics._ring) == 13  # the baseline and one snapshot per interval


@pytest.mark.anyio
async def test_summary_between_snapshots_reaches_the_present() -> None:
    async with running({"interval": 5, "window": 60}) as h:
        h.registry.hook("check_health", "db", 0.005, times=5)
        h.clock.advance(0.5)  # too short a window to tell a rate
        summary = h.analytics.summary()
        assert row(summary, "hooks", "check_health")["calls"] == 5
        assert row(summary, "hooks", "check_health")["rate"] is None
        assert "| check_health | 5 | - |" in render_markdown(summary)
        h.clock.advance(2)
        summary = h.analytics.summary()
        assert summary["window"]["covered"] == 2.5
        assert row(summary, "hooks", "check_health")["rate"] == pytest.approx(2.0)


@pytest.mark.anyio
async def test_counter_reset_counts_from_zero() -> None:
    async with running({"interval": 5, "window": 60}) as h:
        h.registry.hook("check_health", "db", 0.005, times=10)
        h.clock.advance(5)
        h.analytics.sample()
        # the registry was restarted: fewer calls than before
        h.registry.metrics.clear()
        h.registry.hook("check_health", "db", 0.005, times=3)
        h.clock.advance(5)
        summary = h.analytics.summary()
        assert row(summary, "hooks", "check_health")["calls"] == 13


@pytest.mark.anyio
async def test_top_n_slowest() -> None:
    async with running({"top_n": 2}) as h:
        for hook, seconds in (("fast", 0.005), ("medium", 0.05), ("slow", 0.5), ("slowest", 5.0)):
            h.registry.hook(hook, f"p_{hook}", seconds, times=10)
        for operation, seconds in (("a.one", 0.5), ("a.two", 0.005)):
            h.registry.invoke(operation, seconds, times=3)
        h.clock.advance(5)
        summary = h.analytics.summary()
        top = summary["top"]
        assert top["n"] == 2
        assert [(r["name"], r["p95"]) for r in top["hooks"]] == [("slowest", 1.0), ("slow", pytest.approx(0.955))]
        assert [r["name"] for r in top["plugins"]] == ["p_slowest", "p_slow"]
        assert [r["name"] for r in top["operations"]] == ["a.one", "a.two"]


def test_packed_snapshots_read_like_the_dicts_they_replace() -> None:
    registry = FakeRegistry()
    registry.hook("check_health", "db", 0.005, times=4)
    registry.invoke("tools.search", 0.5, outcome="error")
    index = SeriesIndex()
    first, first_dict = index.pack(registry.collect()), snapshot(registry.collect())
    assert dict(first) == first_dict and len(first) == len(first_dict) > 0
    registry.metrics.clear()  # the registry was replaced: the old series are gone, new ones appear
    registry.hook("kernel_started", "db", 0.05, times=2)
    second, second_dict = index.pack(registry.collect()), snapshot(registry.collect())
    assert dict(second) == second_dict
    assert dict(first) == first_dict  # the older snapshot did not gain the new series
    gone = next(key for key in first_dict if key not in second_dict)
    assert gone not in second and second.get(gone) is None and second.get(gone, 1.5) == 1.5
    with pytest.raises(KeyError):
        second[gone]
    assert len(index.keys) == len(first_dict.keys() | second_dict.keys())
    packed = summarize([(T0, first), (T0 + 60, second)], window=300.0, top_n=3)
    assert packed == summarize([(T0, first_dict), (T0 + 60, second_dict)], window=300.0, top_n=3)


def test_the_ring_of_packed_snapshots_is_small() -> None:
    # The default window holds 61 snapshots; as dicts they took ~350 KiB per 1,000 series each.
    registry = FakeRegistry()
    for hook in range(150):
        registry.hook(f"hook_{hook}", "db", 0.005)  # 7 series each: calls, 4 buckets, sum, count
    families = registry.collect()
    index = SeriesIndex()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ring = [index.pack(families) for _ in range(61)]
        packed = tracemalloc.get_traced_memory()[0] - before
        dicts = [snapshot(families) for _ in range(61)]
        as_dicts = tracemalloc.get_traced_memory()[0] - before - packed
    finally:
        tracemalloc.stop()
    assert len(ring[0]) == len(dicts[0]) == 1050
    assert packed < 61 * 1050 * 8 + 1050 * 400  # 8 bytes a series a snapshot, plus the keys, once
    assert packed * 5 < as_dicts


def test_summarize_without_activity() -> None:
    summary = summarize([(T0, {})], window=300.0, top_n=5)
    assert summary["hooks"] == summary["plugins"] == summary["operations"] == []
    assert summary["top"] == {"n": 5, "hooks": [], "plugins": [], "operations": []}
    assert summary["window"] == {"seconds": 300.0, "covered": 0.0, "snapshots": 1}


@pytest.mark.anyio
async def test_the_loop_samples_every_interval_and_health_reports_failures() -> None:
    async with running({"interval": 5, "window": 20}) as h:
        await h.clock.until_asleep()
        for _ in range(10):
            h.clock.advance(5)
            await h.clock.until_asleep()
        assert [when - T0 for when, _ in h.analytics._ring] == [30.0, 35.0, 40.0, 45.0, 50.0]

        health = {o.plugin: o.value for o in await h.kernel.hooks.acall_each(hookspecs.check_health)}
        assert health["analytics"] == HealthStatus(ok=True, reason="5 snapshot(s) in the window")
        h.registry.fail = True
        h.clock.advance(5)
        await h.clock.until_asleep()
        health = {o.plugin: o.value for o in await h.kernel.hooks.acall_each(hookspecs.check_health)}
        assert health["analytics"] == HealthStatus(
            ok=False, reason="analytics sampling failing: RuntimeError: registry unavailable"
        )
        h.registry.fail = False
        h.clock.advance(5)
        await h.clock.until_asleep()
        health = {o.plugin: o.value for o in await h.kernel.hooks.acall_each(hookspecs.check_health)}
        assert health["analytics"] == HealthStatus(
            ok=True, reason="4 snapshot(s) in the window"
        )  # 40, 45, 50, 60: 55 failed


@pytest.mark.anyio
async def test_reload_changes_the_window_and_keeps_history() -> None:
    async with running({"interval": 5, "window": 60, "top_n": 5}) as h:
        h.registry.hook("check_health", "db", 0.005, times=6)
        h.clock.advance(5)
        h.analytics.sample()
        report = await h.kernel.reload({"plugins": {"analytics": {"settings": {"window": 120, "top_n": 1}}}})
        assert report.reconfigured == ("analytics",)
        summary = h.analytics.summary()
        assert summary["window"]["seconds"] == 120.0
        assert summary["top"]["n"] == 1
        assert row(summary, "hooks", "check_health")["calls"] == 6


def test_config_errors_name_their_paths() -> None:
    def issues(settings: dict[str, Any]) -> dict[str, str]:
        kernel = Kernel(
            {"plugins": {"analytics": {"settings": settings}}},
            plugins=[FakeMetrics(FakeRegistry()), Analytics(clock=FakeClock())],
            environ={},
        )
        with pytest.raises(ConfigError) as caught:
            kernel.prepare()
        return {issue.path: issue.message for issue in caught.value.issues}

    prefix = "plugins.analytics.settings"
    assert issues({"interval": 10, "window": 5}) == {
        f"{prefix}.window": "'window' must be at least 'interval' (10), got 5.0"
    }
    assert issues({"top_n": 0}) == {f"{prefix}.top_n": "'top_n' must be >= 1, got 0"}
    assert issues({"interval": -1}) == {f"{prefix}.interval": "'interval' must be a finite number > 0, got -1.0"}
    assert issues({"window": "5m"}) == {f"{prefix}.window": "expected float, got '5m'"}
    assert list(issues({"windw": 60})) == [f"{prefix}.windw"]


# -- renderers -------------------------------------------------------------------------------------


def sample_summary() -> dict[str, Any]:
    registry = FakeRegistry()
    registry.hook("check_health", "db", 0.005, times=40)
    registry.hook("check_health", "db", 0.5, outcome="error", times=2)
    registry.hook("kernel_started", "a|b", 0.05, times=3)  # a pipe to escape in Markdown
    registry.hook("<script>alert(1)</script>", "evil", 0.05)  # markup to escape in HTML
    registry.invoke("tools.search", 0.05, times=9)
    registry.invoke("tools.search", 2.0, outcome="error")
    return summarize([(T0, {}), (T0 + 60, snapshot(registry.collect()))], window=300.0, top_n=3)


def test_render_json_round_trips() -> None:
    summary = sample_summary()
    text = render_json(summary)
    assert orjson.loads(text) == summary
    assert json.loads(text) == summary  # plain JSON: no NaN or Infinity


def test_render_markdown_has_the_tables() -> None:
    text = render_markdown(sample_summary())
    assert text.startswith("# Orion Kernel analytics\n")
    assert "Generated 2027-01-15 08:01:00 UTC, covering the last 60 s" in text
    for heading in ("## Hooks", "## Plugins", "## Operations", "## Slowest hooks (top 3 by p95)"):
        assert heading in text
    assert "| hook | calls | rate | errors | error ratio | p50 | p95 | p99 | mean |" in text
    assert "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" in text
    assert "| check_health | 42 | 0.7/s | 2 | 4.8% |" in text
    assert "| a\\|b |" in text  # the pipe does not break the table
    assert "| tools.search | 10 | 0.167/s | 1 | 10.0% |" in text


def test_render_html_is_self_contained() -> None:
    page = render_html(sample_summary())
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 6
    assert "p95 latency by hook" in page and "Error ratio by operation" in page
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?(?:[a-z]+:)?//""", page, re.IGNORECASE)
    assert "<script" not in page.lower().replace("&lt;script", "")  # the hook name is escaped, no scripts
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<link" not in page and "@import" not in page and "url(" not in page


def test_renderers_handle_an_empty_summary() -> None:
    summary = summarize([(T0, {})], window=300.0, top_n=5)
    assert "_No hook calls in the window._" in render_markdown(summary)
    page = render_html(summary)
    assert "No data in the window." in page and "<svg" not in page
    assert orjson.loads(render_json(summary)) == summary


# -- HTTP -----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_http_mount_serves_the_summary_and_the_report() -> None:
    async with running({"interval": 5, "window": 60}) as h:
        h.registry.hook("check_health", "db", 0.005, times=4)
        h.clock.advance(5)
        [mount] = h.analytics.http_mounts()
        assert (mount.prefix, mount.title) == ("/analytics", "Analytics")
        transport = httpx.ASGITransport(app=mount.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kernel.test") as client:
            response = await client.get("/summary")
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            assert response.json() == h.analytics.summary()
            page = await client.get("/")
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert "<svg" in page.text
            markdown = await client.get("/report", params={"format": "markdown"})
            assert markdown.text.startswith("# Orion Kernel analytics")
            assert (await client.get("/report", params={"format": "pdf"})).status_code == 400
            json_report = await client.get("/report", params={"format": "json"})
            assert json_report.headers["content-type"] == "application/json"
            assert (await client.get("/summary/")).status_code == 404
            assert (await client.post("/summary")).status_code == 405
            h.registry.fail = True
            failing = await client.get("/summary")
            assert failing.status_code == 503
            assert "registry unavailable" in failing.json()["error"]


# -- the CLI command ---------------------------------------------------------------------------------


class FakeEnv:
    """A :class:`plugin_sdk.CliEnvironment` that records what it prints and "starts" a given invoker."""

    def __init__(self, invoker: Invoker | None, *, json: bool = False) -> None:
        self.json = json
        self.invoker = invoker
        self.lines: list[str] = []
        self.emitted: list[Any] = []
        self.starts = 0
        self.fetched: list[str] = []
        #: an ASGI app that answers fetch(); None: the kernel CLI's real urllib fetch
        self.app: Any = None

    def echo(self, text: str) -> None:
        self.lines.append(text)

    def emit(self, data: Any, *, columns: Sequence[str] | None = None) -> None:
        self.emitted.append(data)

    @asynccontextmanager
    async def started(self) -> AsyncIterator[Invoker]:
        assert self.invoker is not None, "this test expected no kernel to be started"
        self.starts += 1
        yield self.invoker

    async def fetch(
        self, url: str, *, socket_timeout: float = 10.0, headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        self.fetched.append(url)
        if self.app is not None:  # answer from an ASGI app, as a server would
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, timeout=socket_timeout) as client:
                response = await client.get(url, headers=dict(headers or {}))
            return response.status_code, response.content
        return await cli_environment_fetch(url, socket_timeout, headers)


async def cli_environment_fetch(url: str, socket_timeout: float, headers: Mapping[str, str] | None) -> tuple[int, bytes]:
    """The kernel CLI's own ``fetch`` (urllib in a thread)."""
    env = Environment(lambda: Kernel(), json=False, out=sys.stdout)
    return await env.fetch(url, socket_timeout=socket_timeout, headers=headers)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="orion-kernel report")
    configure(parser)
    return parser.parse_args(argv)


@pytest.mark.anyio
async def test_report_command_from_a_started_kernel(tmp_path: Path) -> None:
    async with running({"interval": 5, "window": 60}) as h:
        h.registry.hook("check_health", "db", 0.005, times=4)
        h.clock.advance(5)
        env = FakeEnv(h.kernel)
        _: CliEnvironment = env  # mypy checks that the fake satisfies the protocol

        assert await run(parse(), env) == 0  # Markdown on stdout by default
        assert env.starts == 1
        assert env.lines[-1].startswith("# Orion Kernel analytics")
        assert "| check_health | 4 |" in env.lines[-1]

        env_json = FakeEnv(h.kernel, json=True)  # --json makes JSON the default format
        assert await run(parse(), env_json) == 0
        assert orjson.loads(env_json.lines[-1]) == h.analytics.summary()

        target = tmp_path / "report.html"
        assert await run(parse("--format", "html", "-o", str(target)), env) == 0
        assert env.lines[-1] == f"wrote the html report to {target}"
        assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")

        assert await run(parse("--format", "json", "-o", str(tmp_path / "missing" / "r.json")), env) == 1
        assert env.lines[-1].startswith("error: cannot write")


@pytest.mark.anyio
async def test_report_command_from_a_running_kernels_http_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    async with running({"interval": 5, "window": 60}) as h:
        h.registry.invoke("tools.search", 0.05, times=3)
        h.clock.advance(5)
        [mount] = h.analytics.http_mounts()
        server = Starlette(routes=[Mount("/analytics", app=mount.app)])  # as the http plugin mounts it
        env = FakeEnv(None)
        env.app = server
        assert await run(parse("--from", "http://127.0.0.1:8470", "--format", "json"), env) == 0
        assert orjson.loads(env.lines[-1]) == h.analytics.summary()
        assert await run(parse("--from", "http://127.0.0.1:8470/analytics/summary"), env) == 0
        assert "| tools.search | 3 |" in env.lines[-1]
        assert await run(parse("--from", "http://127.0.0.1:8470/elsewhere/"), env) == 1
        assert env.lines[-1] == "error: http://127.0.0.1:8470/elsewhere/analytics/summary answered HTTP 404: Not Found"
        assert env.starts == 0
        assert env.fetched[0] == "http://127.0.0.1:8470/analytics/summary"  # through the CLI, not the plugin


@pytest.mark.anyio
async def test_report_command_errors() -> None:
    env = FakeEnv(None)
    assert await run(parse("--from", "ftp://example.org"), env) == 1
    assert env.lines == ["error: --from needs an http:// or https:// URL, got 'ftp://example.org'"]
    assert env.fetched == []
    assert await run(parse("--from", "http://127.0.0.1:9", "--timeout", "2"), env) == 1
    assert env.lines[-1].startswith("error: cannot fetch http://127.0.0.1:9/analytics/summary")


@pytest.mark.anyio
async def test_report_command_is_contributed_through_the_cli_hook() -> None:
    kernel = Kernel({"plugins": {}}, plugins=[FakeMetrics(FakeRegistry()), Analytics(clock=FakeClock())], environ={})
    kernel.prepare()
    commands = [command for batch in kernel.hooks.call(hookspecs.cli_commands) for command in batch]
    assert [c.name for c in commands] == ["report"]
    assert isinstance(commands[0], CliCommand)
    assert isinstance(FakeRegistry(), MetricsRegistry)


# -- with the real metrics (and http) plugins ------------------------------------------------------------


class Tools(Plugin):
    name = "tools"

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.register_operation("tools.ok", self.ok)
        ctx.register_operation("tools.fail", self.fail)

    async def ok(self, inv: Invocation) -> str:
        return "ok"

    async def fail(self, inv: Invocation) -> str:
        raise RuntimeError("tool broke")


async def _traffic(kernel: Kernel) -> None:
    for _ in range(8):
        await kernel.invoke("tools.ok")
    for _ in range(2):
        with pytest.raises(OperationFailed):
            await kernel.invoke("tools.fail")
    await kernel.hooks.acall_each(hookspecs.check_health)


@pytest.mark.anyio
async def test_summary_over_the_real_metrics_plugin() -> None:
    from builtin_plugins.monitoring.metrics import Metrics

    clock = FakeClock()
    analytics = Analytics(clock=clock)
    async with Kernel({}, plugins=[Metrics(), analytics, Tools()], environ={}) as kernel:
        await _traffic(kernel)
        clock.advance(10)
        summary = await kernel.invoke("analytics.summary")
    ok, fail = row(summary, "operations", "tools.ok"), row(summary, "operations", "tools.fail")
    assert (ok["calls"], ok["errors"], ok["rate"]) == (8, 0, pytest.approx(0.8))
    assert (fail["calls"], fail["errors"], fail["error_ratio"]) == (2, 2, 1.0)
    assert 0 < ok["p50"] <= ok["p95"] <= ok["p99"]
    health = row(summary, "hooks", "check_health")
    assert health["calls"] >= 1 and health["p95"] is not None
    assert row(summary, "plugins", "analytics")["calls"] >= 1  # its own check_health impl
    assert {r["name"] for r in summary["top"]["operations"]} == {"tools.ok", "tools.fail"}


@pytest.mark.anyio
async def test_report_from_a_real_http_server() -> None:
    from builtin_plugins.http import HttpServer
    from builtin_plugins.monitoring.metrics import Metrics

    clock = FakeClock()
    http = HttpServer()
    config = {"plugins": {"http": {"permissions": ["net:listen:127.0.0.1:*"], "settings": {"host": "127.0.0.1", "port": 0}}}}
    async with Kernel(config, plugins=[Metrics(), http, Analytics(clock=clock), Tools()], environ={}) as kernel:
        await _traffic(kernel)
        clock.advance(10)
        env = FakeEnv(None)
        assert await run(parse("--from", http.base_url, "--format", "json"), env) == 0, env.lines
        assert await run(parse("--from", http.base_url + "/elsewhere/"), FakeEnv(None)) == 1  # a real 404
    summary = orjson.loads(env.lines[-1])
    assert row(summary, "operations", "tools.fail")["errors"] == 2
