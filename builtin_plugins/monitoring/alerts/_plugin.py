"""The ``alerts`` plugin: evaluates rules over the ``metrics`` service and notifies.

Notifications leave through the ``alert_notify`` hook, so a webhook, chat or
pager plugin delivers them without this plugin knowing it exists.  Each
notification goes to every notifier concurrently under the hook's deadline
(``ctx.hooks.acall_each``): a notifier that raises or hangs is recorded
against its plugin (and quarantined if it keeps failing) while the others
still deliver.  The plugin is a notifier itself (it logs), so alerts are visible
with nothing else enabled.

Time comes from a :class:`Clock` passed to the constructor, so tests drive
evaluation with a fake clock instead of sleeping.
"""

from __future__ import annotations

import logging
from typing import Any
from typing import ClassVar

import anyio

from plugin_sdk import AlertEvent
from plugin_sdk import Clock
from plugin_sdk import ConfigIssue
from plugin_sdk import HealthStatus
from plugin_sdk import InvalidArguments
from plugin_sdk import Invocation
from plugin_sdk import MetricsRegistry
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginError
from plugin_sdk import SystemClock
from plugin_sdk import hookimpl
from plugin_sdk import hookspecs

from ._config import AlertsSettings
from ._config import SilenceArgs
from ._config import UnsilenceArgs
from ._engine import Engine


class Alerts(Plugin):
    """Alert rules over metrics, with pending/firing/resolved states, dedupe and silences.

    Provides the ``alerts`` service (:class:`plugin_sdk.AlertStatus`) and the
    operations ``alerts.list``, ``alerts.silence`` and ``alerts.unsilence``.
    """

    name = "alerts"
    version = "1.0.0"
    requires = ("metrics",)
    provides = ("alerts",)
    Config = AlertsSettings
    conformance_opt_out: ClassVar[dict[str, str]] = {
        "isolation.process": "its operations structure their arguments with args_type, "
        "which process isolation does not support yet"
    }

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._ctx: PluginContext[AlertsSettings] | None = None
        self._registry: MetricsRegistry | None = None
        self._engine: Engine | None = None
        self._lock: anyio.Lock | None = None
        self._last_error: str | None = None

    async def start(self, ctx: PluginContext[AlertsSettings]) -> None:
        self._ctx = ctx
        # Annotated rather than ctx.service("metrics", MetricsRegistry): mypy refuses a
        # Protocol where type[T] is expected ([type-abstract]).
        registry: MetricsRegistry = ctx.service("metrics")
        self._registry = registry
        self._engine = Engine(ctx.settings)
        self._lock = anyio.Lock()
        self._last_error = None
        ctx.provide("alerts", self)
        ctx.register_operation(
            "alerts.list", self._list, doc="Pending, firing and resolved alerts, and silences.", example_args={}
        )
        ctx.register_operation(
            "alerts.silence",
            self._silence,
            args_type=SilenceArgs,
            doc="Mute a rule's notifications (optionally only alerts with some labels) for 'duration' seconds.",
        )
        ctx.register_operation(
            "alerts.unsilence", self._unsilence, args_type=UnsilenceArgs, doc="End a silence now, by its id."
        )
        ctx.spawn(self._run, name="alerts evaluation loop")

    async def stop(self) -> None:
        self._ctx = None

    def reconfigure(self, settings: AlertsSettings) -> None:
        """New rules and silences without a restart: alerts of rules that keep their name keep their state."""
        self._engine_or_raise().reconfigure(settings)

    # -- evaluation ---------------------------------------------------------------------

    async def evaluate(self) -> list[AlertEvent]:
        """Sample the registry now, advance every alert and deliver the notifications due.

        The evaluation loop calls this every ``interval`` seconds; tests call it
        directly.  Returns what was delivered (to every notifier).
        """
        engine = self._engine_or_raise()
        ctx, registry, lock = self._ctx, self._registry, self._lock
        if ctx is None or registry is None or lock is None:
            raise PluginError("alerts: evaluate() needs a started plugin", plugin=self.name)
        async with lock:
            now = self.clock.now()
            families = registry.collect()
            due = engine.evaluate(families, now)
            for event in due:
                # Every notifier at once under the hook's deadline (acall_each), not in turn
                # (call): with one deadline for the whole call, a pager that hangs would
                # otherwise use it up and starve the notifiers after it.
                outcomes = await ctx.hooks.acall_each(hookspecs.alert_notify, event=event)
                failed = [outcome.plugin for outcome in outcomes if not outcome.ok]
                if failed:
                    ctx.log.warning("alert %s %s not delivered by %s", event.rule, event.state, ", ".join(failed))
            return due

    async def _run(self) -> None:
        engine = self._engine_or_raise()
        log = self._ctx.log if self._ctx is not None else logging.getLogger("orion.plugin.alerts")
        while True:
            try:
                await self.evaluate()
            except Exception as exc:
                # A registry that fails once must not end alerting for good: log, report in health, go on.
                if self._last_error is None:
                    log.warning("alert evaluation failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
                self._last_error = f"{type(exc).__name__}: {exc}"
            else:
                self._last_error = None
            await self.clock.sleep(engine.settings.interval)

    def _engine_or_raise(self) -> Engine:
        if self._engine is None:
            raise PluginError("alerts: the plugin has not been started", plugin=self.name)
        return self._engine

    # -- the alerts service (plugin_sdk.AlertStatus) ----------------------------------

    def active(self) -> list[AlertEvent]:
        """Alerts firing now (silenced ones included), oldest first."""
        return self._engine.active() if self._engine is not None else []

    # -- operations --------------------------------------------------------------------

    async def _list(self, inv: Invocation) -> dict[str, Any]:
        """Pending, firing and resolved alerts, and the silences in force."""
        engine = self._engine_or_raise()
        return {"alerts": engine.list_alerts(), "silences": engine.list_silences(self.clock.now())}

    async def _silence(self, inv: Invocation) -> dict[str, Any]:
        """Add a silence; returns it with its id and expiry (seconds since the epoch)."""
        engine = self._engine_or_raise()
        args: SilenceArgs = inv.params
        rules = sorted(rule.name for rule in engine.settings.rules)
        if args.rule not in rules:
            known = ", ".join(rules) or "none"
            raise InvalidArguments(
                inv.operation, [ConfigIssue("args.rule", f"no rule named {args.rule!r} (rules: {known})")]
            )
        entry = engine.add_silence(args.rule, args.labels, self.clock.now() + args.duration, args.comment)
        if self._ctx is not None:
            self._ctx.log.info(
                "silenced rule %s %s until %.0f: %s", args.rule, args.labels or "", entry.until, args.comment
            )
        return entry.as_dict()

    async def _unsilence(self, inv: Invocation) -> dict[str, Any]:
        """End a silence now; ``removed`` is false when no silence has that id."""
        args: UnsilenceArgs = inv.params
        return {"id": args.id, "removed": self._engine_or_raise().remove_silence(args.id)}

    # -- hooks -------------------------------------------------------------------------

    @hookimpl
    async def alert_notify(self, event: AlertEvent) -> None:
        """The built-in notifier: log each notification (WARNING firing, INFO resolved)."""
        ctx, engine = self._ctx, self._engine
        if ctx is None or engine is None or not engine.settings.log_notifications:
            return
        labels = ", ".join(f"{key}={value}" for key, value in sorted(event.labels.items()))
        level = logging.WARNING if event.state == "firing" else logging.INFO
        ctx.log.log(
            level, "alert %s %s [%s] {%s}: %s", event.rule, event.state.upper(), event.severity, labels, event.summary
        )

    @hookimpl
    async def check_health(self) -> HealthStatus:
        """Unhealthy while evaluations fail (e.g. the metrics registry raises)."""
        if self._last_error is not None:
            return HealthStatus(ok=False, reason=f"alert evaluation failing: {self._last_error}")
        engine = self._engine
        rules = len(engine.settings.rules) if engine is not None else 0
        return HealthStatus(ok=True, reason=f"{rules} rule(s), {len(self.active())} firing")
