"""The ``metrics`` plugin: a metrics registry, ``/metrics``, and the kernel measured automatically.

What it gives a deployment, with no code in any other plugin:

* the ``metrics`` service (:class:`plugin_sdk.MetricsRegistry`): counters,
  gauges and histograms with labels, a per-metric cardinality limit, and
  ``collect()`` for the plugins that read metrics (alerts, analytics, the
  dashboard);
* ``/metrics`` on the kernel's HTTP server (through the ``http_mounts`` hook of
  the ``http`` plugin): Prometheus text 0.0.4 or OpenMetrics 1.0.0, chosen by
  the scraper's ``Accept`` header;
* every hook impl call and every invoke counted and timed, and every plugin's
  state as a gauge, through a dispatch observer (see ``_instrument.py``);
* the operation ``metrics.snapshot``: every metric as plain data, for the CLI
  (``orion-kernel invoke metrics.snapshot``) and scripts.

It is written against :mod:`plugin_sdk` only, like any third-party plugin; a
third party can replace it by providing the ``metrics`` service itself.
"""

from __future__ import annotations

from typing import Any
from typing import ClassVar

from plugin_sdk import HttpMount
from plugin_sdk import Invocation
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginState
from plugin_sdk import hookimpl

from ._exposition import OPENMETRICS_CONTENT_TYPE
from ._exposition import TEXT_CONTENT_TYPE
from ._exposition import MetricsApp
from ._exposition import render
from ._exposition import wants_openmetrics
from ._instrument import UNKNOWN_OPERATION
from ._instrument import Instrumentation
from ._registry import DEFAULT_BUCKETS
from ._registry import CounterMetric
from ._registry import GaugeMetric
from ._registry import HistogramMetric
from ._registry import Registry
from ._registry import _Metric
from ._settings import MetricsSettings

__all__ = [
    "DEFAULT_BUCKETS",
    "OPENMETRICS_CONTENT_TYPE",
    "TEXT_CONTENT_TYPE",
    "UNKNOWN_OPERATION",
    "CounterMetric",
    "GaugeMetric",
    "HistogramMetric",
    "Instrumentation",
    "Metrics",
    "MetricsApp",
    "MetricsSettings",
    "Registry",
    "render",
    "wants_openmetrics",
]


class Metrics(Plugin):
    """Metrics registry, Prometheus/OpenMetrics exposition, automatic kernel instrumentation.

    The registry (and what the kernel instrumentation has counted) survives a
    restart of the plugin with the same settings, so plugins holding the
    ``metrics`` service keep a live object; new settings start a new registry.
    """

    name = "metrics"
    version = "1.0.0"
    provides = ("metrics",)
    Config = MetricsSettings
    conformance_opt_out: ClassVar[dict[str, str]] = {
        "isolation.process": "it is the kernel's dispatch observer, and observers do not cross the process boundary"
    }

    def __init__(self) -> None:
        self._registry: Registry | None = None
        self._settings: MetricsSettings | None = None
        self._instrumentation: Instrumentation | None = None
        self._app = MetricsApp(self._families)

    @property
    def registry(self) -> Registry:
        """The registry served as the ``metrics`` service (once the plugin has started)."""
        if self._registry is None:
            raise RuntimeError("the metrics plugin has not started yet")
        return self._registry

    @property
    def app(self) -> MetricsApp:
        """The ASGI app mounted at ``/metrics``."""
        return self._app

    async def start(self, ctx: PluginContext[MetricsSettings]) -> None:
        settings = ctx.settings
        if self._registry is None or settings != self._settings:
            self._registry = Registry(
                max_series_per_metric=settings.max_series_per_metric, default_buckets=settings.latency_buckets
            )
            self._instrumentation = (
                Instrumentation(
                    self._registry,
                    settings.namespace,
                    settings.latency_buckets,
                    ctx.log,
                    sample_interval=settings.hook_latency_interval,
                )
                if settings.instrument_kernel
                else None
            )
            self._settings = settings
        ctx.provide("metrics", self._registry)
        ctx.register_operation(
            "metrics.snapshot",
            self._snapshot,
            doc="Every metric with its series, as plain data (name, kind, help, samples).",
            example_args={},
        )
        if self._instrumentation is not None:
            self._instrumentation.attach(ctx.introspect)
            self._instrumentation.refresh()
            ctx.add_dispatch_observer(self._instrumentation)

    async def stop(self) -> None:
        if self._instrumentation is not None:
            self._instrumentation.attach(None)

    def _families(self) -> list[_Metric]:
        return self._registry.metrics() if self._registry is not None else []

    async def _snapshot(self, inv: Invocation) -> list[dict[str, Any]]:
        """Every metric with its series, as plain data."""
        return self.registry.snapshot()

    @hookimpl
    def http_mounts(self) -> list[HttpMount]:
        return [HttpMount(self._app, prefix="/metrics", title="Metrics")]

    @hookimpl
    def plugin_state_changed(self, plugin: str, old: PluginState, new: PluginState) -> None:
        if self._instrumentation is not None:
            self._instrumentation.state_changed(plugin, new)
