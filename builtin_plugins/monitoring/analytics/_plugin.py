"""The ``analytics`` plugin: rolling-window statistics over the ``metrics`` service.

The metrics registry only holds totals since start; questions like "which
hook got slow in the last five minutes" need differences over time.  The
plugin keeps a ring of snapshots (every ``interval`` seconds, covering
``window``) and answers with the increase between the window's oldest
snapshot and the present: call rates, error ratios, p50/p95/p99 latencies
and the slowest hooks, plugins and operations.

The summary is served three ways: the ``analytics.summary`` operation, ``GET
/analytics/summary`` through the ``http`` plugin (plus an HTML report at
``/analytics/``), and ``orion-kernel report``.  Time comes from an injectable
clock so tests never sleep.
"""

from __future__ import annotations

import collections
import logging
from typing import Any
from typing import ClassVar

from plugin_sdk import ASGIApp
from plugin_sdk import CliCommand
from plugin_sdk import Clock
from plugin_sdk import HealthStatus
from plugin_sdk import HttpMount
from plugin_sdk import HttpRequest
from plugin_sdk import HttpResponse
from plugin_sdk import HttpRoutes
from plugin_sdk import Invocation
from plugin_sdk import MetricsRegistry
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginError
from plugin_sdk import SystemClock
from plugin_sdk import hookimpl

from ._cli import report_command
from ._config import AnalyticsSettings
from ._render import RENDERERS
from ._stats import SeriesIndex
from ._stats import Snapshot
from ._stats import snapshot
from ._stats import summarize

_MEDIA_TYPES = {
    "json": "application/json",
    "markdown": "text/markdown; charset=utf-8",
    "html": "text/html; charset=utf-8",
}


class Analytics(Plugin):
    """Call rates, error ratios, latency percentiles and the slowest hooks over a rolling window.

    Operation ``analytics.summary``; HTTP mount ``/analytics`` (``/summary``
    JSON, ``/`` or ``/report?format=html|markdown|json``); CLI ``report``.
    """

    name = "analytics"
    version = "1.0.0"
    requires = ("metrics",)
    Config = AnalyticsSettings
    conformance_opt_out: ClassVar[dict[str, str]] = {
        "isolation.process": "it reads the metrics registry synchronously (collect()); "
        "across the process boundary every service call is async"
    }

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._ctx: PluginContext[AnalyticsSettings] | None = None
        self._registry: MetricsRegistry | None = None
        self._settings = AnalyticsSettings()
        self._ring: collections.deque[tuple[float, Snapshot]] = collections.deque()
        self._index = SeriesIndex()  # the ring's snapshots are packed against it
        self._last_error: str | None = None
        self._app: ASGIApp | None = None

    async def start(self, ctx: PluginContext[AnalyticsSettings]) -> None:
        self._ctx = ctx
        self._settings = ctx.settings
        # Annotated rather than ctx.service("metrics", MetricsRegistry): mypy refuses a
        # Protocol where type[T] is expected ([type-abstract]).
        registry: MetricsRegistry = ctx.service("metrics")
        self._registry = registry
        self._ring = collections.deque()
        self._index = SeriesIndex()
        self._last_error = None
        self._sample_logged()  # the baseline of the first window
        ctx.register_operation(
            "analytics.summary",
            self._summary,
            doc="Rates, error ratios, p50/p95/p99 latencies and the slowest hooks over the window.",
            example_args={},
        )
        ctx.spawn(self._run, name="analytics sampling loop")

    async def stop(self) -> None:
        self._ctx = None

    def reconfigure(self, settings: AnalyticsSettings) -> None:
        """A new interval, window or top-N applies at once; the history collected so far is kept."""
        self._settings = settings

    # -- sampling ----------------------------------------------------------------------

    def sample(self) -> None:
        """Take one snapshot now and drop those the window no longer needs.

        The sampling loop calls this every ``interval`` seconds; tests call it
        directly after moving their clock.
        """
        now = self.clock.now()
        current = self._index.pack(self._registry_or_raise().collect())
        ring = self._ring
        if ring and ring[-1][0] >= now:  # sampled twice at one instant: keep the newer one
            ring.pop()
        ring.append((now, current))
        # Keep the newest snapshot at or before the window's start: it is the window's baseline.
        start = now - self._settings.window
        while len(ring) >= 2 and ring[1][0] <= start:
            ring.popleft()

    def summary(self) -> dict[str, Any]:
        """The summary of the last ``window`` seconds, up to this moment (plain JSON-able data)."""
        now = self.clock.now()
        current = snapshot(self._registry_or_raise().collect())
        start = now - self._settings.window
        points = [point for point in self._ring if point[0] < now]
        base = 0
        for index, (when, _) in enumerate(points):
            if when <= start:
                base = index
        chosen = [*points[base:], (now, current)]
        summary = summarize(chosen, window=self._settings.window, top_n=self._settings.top_n)
        summary["interval"] = self._settings.interval
        return summary

    def _sample_logged(self) -> None:
        try:
            self.sample()
        except Exception as exc:
            # A registry that fails once must not end analytics for good: log, report in health, go on.
            if self._last_error is None:
                log = self._ctx.log if self._ctx is not None else logging.getLogger("orion.plugin.analytics")
                log.warning("analytics sampling failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
            self._last_error = f"{type(exc).__name__}: {exc}"
        else:
            self._last_error = None

    async def _run(self) -> None:
        while True:
            await self.clock.sleep(self._settings.interval)
            self._sample_logged()

    def _registry_or_raise(self) -> MetricsRegistry:
        if self._registry is None:
            raise PluginError("analytics: the plugin has not been started", plugin=self.name)
        return self._registry

    async def _summary(self, inv: Invocation) -> dict[str, Any]:
        """The summary of the window (see :meth:`summary`)."""
        return self.summary()

    # -- hooks -------------------------------------------------------------------------

    @hookimpl
    def http_mounts(self) -> list[HttpMount]:
        """``/analytics/summary`` (JSON) and ``/analytics/`` (the HTML report)."""
        if self._app is None:
            self._app = self._make_app()
        return [HttpMount(self._app, prefix="/analytics", title="Analytics")]

    @hookimpl
    def cli_commands(self) -> list[CliCommand]:
        """``orion-kernel report``."""
        return [report_command()]

    @hookimpl
    async def check_health(self) -> HealthStatus:
        """Unhealthy while sampling fails (e.g. the metrics registry raises)."""
        if self._last_error is not None:
            return HealthStatus(ok=False, reason=f"analytics sampling failing: {self._last_error}")
        return HealthStatus(ok=True, reason=f"{len(self._ring)} snapshot(s) in the window")

    # -- HTTP --------------------------------------------------------------------------

    def _make_app(self) -> ASGIApp:
        def answer(fmt: str) -> HttpResponse:
            try:
                summary = self.summary()
            except Exception as exc:
                return HttpResponse.json({"error": f"no summary: {type(exc).__name__}: {exc}"}, status=503)
            return HttpResponse(body=RENDERERS[fmt](summary).encode(), media_type=_MEDIA_TYPES[fmt])

        async def summary_route(request: HttpRequest) -> HttpResponse:
            return answer("json")

        async def report_route(request: HttpRequest) -> HttpResponse:
            fmt = request.query_param("format", "html")
            if fmt not in RENDERERS:
                return HttpResponse.json(
                    {"error": f"unknown format {fmt!r}; use one of {sorted(RENDERERS)}"}, status=400
                )
            return answer(fmt)

        return HttpRoutes(
            {
                ("GET", "/summary"): summary_route,
                ("GET", "/"): report_route,
                ("GET", "/report"): report_route,
            },
            log=logging.getLogger("orion.plugin.analytics"),
        )
