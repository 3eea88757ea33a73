"""The ``dashboard`` plugin: gathers what the page shows and contributes the app.

Every service it reads is optional and looked up on each poll, not at start:
the metrics, alerts or http plugin may start, stop or be reloaded while the
dashboard runs, and the page should say so (a note) rather than go blank or
fail.  A provider that raises is logged once per distinct error, with the
service's name, and reported on the page.

It attaches no dispatch observer of its own: the metrics plugin already
measures every hook and invoke, and a second observer would put the cost of
the dashboard on every call, watched or not.
"""

from __future__ import annotations

import re
import time
from typing import Any
from typing import Final

import attrs

from plugin_sdk import AlertEvent
from plugin_sdk import AlertStatus
from plugin_sdk import ASGIApp
from plugin_sdk import HttpMount
from plugin_sdk import HttpService
from plugin_sdk import MetricFamily
from plugin_sdk import MetricsRegistry
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import ServiceUnavailable
from plugin_sdk import hookimpl

from ._state import InvokeRates
from ._state import State
from ._state import build_state

#: where the http plugin mounts the dashboard
PREFIX: Final = "/dashboard"
#: what the page says when an optional service is missing
_MISSING: Final = {
    "metrics": "enable the metrics plugin for latencies, error ratios and invoke rates",
    "alerts": "enable the alerts plugin to see firing alerts",
    "http": "enable the http plugin for links to the other pages",
}


_NAMESPACE: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def _check_namespace(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    # A one-argument ValueError starting with the field's name, which the kernel reports at the
    # field's path (attrs' own matches_re raises a four-argument one, reported at the table).
    if value and not _NAMESPACE.fullmatch(value):
        raise ValueError(
            f"'{attribute.name}' must be empty or a Prometheus name prefix ([a-zA-Z_:][a-zA-Z0-9_:]*): {value!r}"
        )


@attrs.frozen
class DashboardSettings:
    """``[plugins.dashboard.settings]``."""

    #: seconds between two polls of ``api/state`` by the page
    poll_interval: float = attrs.field(
        default=1.0,
        validator=[attrs.validators.gt(0), attrs.validators.le(60)],
        metadata={"doc": "seconds between two polls of api/state by the page (0 < s <= 60)"},
    )
    #: seconds over which the invoke rate is averaged
    rate_window: float = attrs.field(
        default=5.0,
        validator=[attrs.validators.gt(0), attrs.validators.le(3600)],
        metadata={"doc": "seconds over which invoke rates are averaged (0 < s <= 3600)"},
    )
    #: the metrics plugin's ``namespace``: where the kernel's own series are
    metrics_namespace: str = attrs.field(
        default="orion",
        validator=_check_namespace,
        metadata={
            "doc": "the metrics plugin's namespace setting, whose <ns>_hook_calls_total, ... the page reads "
            "(empty for none)"
        },
    )


class Dashboard(Plugin):
    """A live web page of the running kernel, served by the ``http`` plugin under ``/dashboard``.

    Shows every plugin and its state, hook and operation latencies and error
    ratios (from the ``metrics`` service), the invoke rate, firing alerts
    (from ``alerts``) and links to the other HTTP mounts (from ``http``).
    """

    name = "dashboard"
    version = "1.0.0"
    optional = ("metrics", "alerts", "http")
    Config = DashboardSettings

    def __init__(self) -> None:
        self._ctx: PluginContext[DashboardSettings] | None = None
        self._app: ASGIApp | None = None
        self._rates = InvokeRates(window=DashboardSettings().rate_window)
        #: service name -> the last error text logged for it (to log each error once)
        self._failing: dict[str, str] = {}

    async def start(self, ctx: PluginContext[DashboardSettings]) -> None:
        from ._app import create_app
        from ._app import load_assets

        self._ctx = ctx
        self._rates = InvokeRates(window=ctx.settings.rate_window)
        self._failing.clear()
        self._app = create_app(self.state, load_assets())
        http: HttpService | None = self._service(ctx, "http")
        if http is not None:
            try:
                base_url = str(http.base_url).rstrip("/")
            except ServiceUnavailable:  # the server is between a stop and a start: no URL to give yet
                return
            ctx.log.info("dashboard: %s%s/", base_url, PREFIX)

    async def stop(self) -> None:
        self._app = None

    @hookimpl
    def http_mounts(self) -> list[HttpMount]:
        if self._app is None:
            return []
        return [HttpMount(self._app, prefix=PREFIX, title="Dashboard")]

    # -- the state -------------------------------------------------------------------

    def state(self) -> State:
        """What ``GET /dashboard/api/state`` answers (see ``_state.State``)."""
        ctx = self._ctx
        if ctx is None:
            raise ServiceUnavailable("the dashboard has not been started")
        notes: list[str] = []
        families = self._metrics(ctx, notes)
        alerts = self._alerts(ctx, notes)
        mounts, base_url = self._links(ctx, notes)
        return build_state(
            ctx.introspect(),
            families=families,
            alerts=alerts,
            mounts=mounts,
            base_url=base_url,
            own_prefix=PREFIX,
            rates=self._rates,
            now=time.monotonic(),
            wall_time=time.time(),
            poll_interval=ctx.settings.poll_interval,
            namespace=ctx.settings.metrics_namespace,
            notes=notes,
        )

    def _service(self, ctx: PluginContext[DashboardSettings], name: str, notes: list[str] | None = None) -> Any:
        """The optional service ``name``, or ``None`` (with a note for the page) when nobody provides it."""
        try:
            return ctx.service(name)
        except ServiceUnavailable:
            if notes is not None:
                notes.append(f"{name}: no running plugin provides this service; {_MISSING[name]}")
            return None

    def _failed(self, ctx: PluginContext[DashboardSettings], name: str, error: Exception, notes: list[str]) -> None:
        text = f"{type(error).__name__}: {error}"
        if self._failing.get(name) != text:
            self._failing[name] = text
            ctx.log.warning("dashboard: the %s service failed: %s", name, text, exc_info=error)
        notes.append(f"{name}: the service failed ({text})")

    def _metrics(self, ctx: PluginContext[DashboardSettings], notes: list[str]) -> list[MetricFamily] | None:
        metrics: MetricsRegistry | None = self._service(ctx, "metrics", notes)
        if metrics is None:
            return None
        try:
            families = list(metrics.collect())
        except Exception as exc:  # a broken provider must not take the page down
            self._failed(ctx, "metrics", exc, notes)
            return None
        self._failing.pop("metrics", None)
        return families

    def _alerts(self, ctx: PluginContext[DashboardSettings], notes: list[str]) -> list[AlertEvent] | None:
        alerts: AlertStatus | None = self._service(ctx, "alerts", notes)
        if alerts is None:
            return None
        try:
            active = list(alerts.active())
        except Exception as exc:
            self._failed(ctx, "alerts", exc, notes)
            return None
        self._failing.pop("alerts", None)
        return active

    def _links(
        self, ctx: PluginContext[DashboardSettings], notes: list[str]
    ) -> tuple[dict[str, str] | None, str | None]:
        # Without the http plugin (tests, an app serving the dashboard itself) there is
        # simply nothing to link to: no note.
        http: HttpService | None = self._service(ctx, "http")
        if http is None:
            return None, None
        try:
            return dict(http.mounts()), str(http.base_url)
        except Exception as exc:
            self._failed(ctx, "http", exc, notes)
            return None, None
