"""The ``health`` plugin: liveness and readiness of the kernel, from every plugin.

Two questions, two endpoints, as load balancers and orchestrators ask them:

* ``GET /health/live`` — is the process worth keeping?  It answers 200 as long
  as the event loop answers at all; it asks no plugin anything, so a slow or
  broken plugin never gets the process killed.
* ``GET /health/ready`` — should traffic come here?  200 when every *enabled*
  plugin is running and every ``check_health`` answer is ok, 503 otherwise,
  with a per-plugin breakdown saying why.

Readiness combines two sources: the kernel's own view of each plugin
(``ctx.introspect()``: state and last error — a plugin that failed to start
has no hook to ask) and the ``check_health`` hook of the running ones.  That
hook is async and concurrent under one deadline (5 s, or
``kernel.hook_timeouts.check_health``), so a hanging check is reported as
timed out against its plugin and never hangs the endpoint.  The same report
is the ``health.ready`` operation, for callers without HTTP.

The endpoints reach the network through the ``http_mounts`` hook (served by
the ``http`` plugin when it runs); this plugin does not need the ``http``
service itself.  The app is the SDK's plain-ASGI :class:`~plugin_sdk.HttpRoutes`:
no web framework is imported for two JSON endpoints.
"""

from __future__ import annotations

from typing import Any
from typing import ClassVar
from typing import Final
from typing import TypedDict

from plugin_sdk import ASGIApp
from plugin_sdk import HealthStatus
from plugin_sdk import HookOutcome
from plugin_sdk import HookTimeout
from plugin_sdk import HttpMount
from plugin_sdk import HttpRequest
from plugin_sdk import HttpResponse
from plugin_sdk import HttpRoutes
from plugin_sdk import Invocation
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginState
from plugin_sdk import ServiceUnavailable
from plugin_sdk import hookimpl
from plugin_sdk import hookspecs

__all__ = ["Health", "PluginHealth", "Readiness"]

#: Where the endpoints are mounted.
PREFIX: Final = "/health"


class PluginHealth(TypedDict):
    """One plugin's line in the readiness report."""

    state: str
    ok: bool
    reason: str


class Readiness(TypedDict):
    """The readiness report: ``GET /health/ready`` and the ``health.ready`` operation."""

    status: str  # "ready" | "not_ready"
    plugins: dict[str, PluginHealth]


def _from_outcome(outcome: HookOutcome[HealthStatus | None]) -> tuple[bool, str]:
    error = outcome.error
    if isinstance(error, HookTimeout):
        return False, f"health check timed out after {error.timeout:g}s"
    if error is not None:
        return False, f"health check failed: {type(error).__name__}: {error}"
    value: object = outcome.value  # a plugin may return anything, whatever its annotation says
    if value is None:
        return True, ""
    if isinstance(value, HealthStatus):
        return bool(value.ok), str(value.reason)
    return False, f"health check returned {type(value).__name__}, expected HealthStatus or None"


class Health(Plugin):
    """Liveness and readiness at ``/health/live`` and ``/health/ready``; operation ``health.ready``."""

    name = "health"
    version = "1.0.0"
    conformance_opt_out: ClassVar[dict[str, str]] = {
        "isolation.process": "it calls every plugin's check_health through ctx.hooks, "
        "which an isolated plugin does not have"
    }

    def __init__(self) -> None:
        self._ctx: PluginContext[Any] | None = None
        self._app: ASGIApp | None = None

    async def start(self, ctx: PluginContext[Any]) -> None:
        self._ctx = ctx
        self._app = self._build_app()
        ctx.register_operation(
            "health.ready",
            self._ready_operation,
            doc="Readiness of the kernel: every enabled plugin running and every health check ok.",
            example_args={},
        )

    async def stop(self) -> None:
        self._app = None
        self._ctx = None

    @hookimpl
    def http_mounts(self) -> list[HttpMount]:
        """Serve the endpoints under ``/health``."""
        if self._app is None:
            return []
        return [HttpMount(self._app, prefix=PREFIX, title="Health")]

    async def readiness(self) -> Readiness:
        """Ask every running plugin's ``check_health`` (bounded by the hook's deadline) and combine
        the answers with each enabled plugin's state.

        :raises ServiceUnavailable: the plugin is not running.
        """
        ctx = self._ctx
        if ctx is None:
            raise ServiceUnavailable("health: the plugin is not running")
        outcomes = await ctx.hooks.acall_each(hookspecs.check_health)
        checks = {outcome.plugin: _from_outcome(outcome) for outcome in outcomes}
        report: dict[str, PluginHealth] = {}
        for plugin in ctx.introspect().plugins:  # the states after the checks, not before
            if not plugin.enabled:
                continue
            if plugin.state is not PluginState.RUNNING:
                reason = plugin.last_error or f"plugin is {plugin.state.value}, not running"
                report[plugin.name] = {"state": plugin.state.value, "ok": False, "reason": reason}
                continue
            ok, reason = checks.get(plugin.name, (True, ""))
            report[plugin.name] = {"state": plugin.state.value, "ok": ok, "reason": reason}
        ready = all(entry["ok"] for entry in report.values())
        return {"status": "ready" if ready else "not_ready", "plugins": report}

    async def _ready_operation(self, inv: Invocation) -> Readiness:
        """Readiness of the kernel (the same report as ``GET /health/ready``)."""
        return await self.readiness()

    def _build_app(self) -> ASGIApp:
        def json(status: int, body: object) -> HttpResponse:
            # no-store: probes must see the state now
            return HttpResponse.json(body, status=status, headers={"cache-control": "no-store"})

        async def live(request: HttpRequest) -> HttpResponse:
            return json(200, {"status": "ok"})

        async def ready(request: HttpRequest) -> HttpResponse:
            report = await self.readiness()
            return json(200 if report["status"] == "ready" else 503, report)

        # Exact paths, no slash redirects: "/health/live/" is a 404.
        log = self._ctx.log if self._ctx is not None else None
        return HttpRoutes({("GET", "/live"): live, ("GET", "/ready"): ready}, log=log)
