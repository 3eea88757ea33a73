"""The ``http`` plugin: one HTTP server inside the kernel's event loop, serving what plugins mount.

Plugins contribute ASGI apps through the ``http_mounts`` hook
(:class:`plugin_sdk.HttpMount`); this plugin serves each under its prefix
(``/<plugin name>`` by default) and re-collects the mounts whenever a plugin
starts or stops, so metrics, health, the dashboard and any third-party plugin
share one port without knowing about each other.  Other plugins that need to
link to the server ask for the ``http`` service (:class:`plugin_sdk.HttpService`).

Why uvicorn rather than hypercorn: both are asyncio ASGI servers, but uvicorn
is the smaller dependency (h11 only, no HTTP/2 or QUIC stack we do not use),
its ``Server`` is a plain object whose ``serve(sockets=...)`` coroutine runs
as a guest in an existing loop, and it accepts sockets we have already bound.
Binding first is what turns "port in use" into a failed ``start()`` with a
clear message, and port ``0`` into a real port known before ``start()``
returns.  Its one habit that clashes with a kernel — installing SIGINT/SIGTERM
handlers while serving — is a single overridable method
(``capture_signals``), neutralised in :mod:`._server`.  Hypercorn would bring
trio support, but the plugin declares asyncio only, like the kernel's default.

Nothing is left behind at stop: the server is asked to exit (requests in
flight get a few seconds), and whatever remains — listeners, connections, the
serving task — is closed or cancelled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Final

import anyio
import attrs

from plugin_sdk import HealthStatus
from plugin_sdk import HttpMount
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginError
from plugin_sdk import PluginState
from plugin_sdk import ServiceUnavailable
from plugin_sdk import hookimpl
from plugin_sdk import hookspecs

from ._router import Route
from ._router import Router
from ._router import normalize_prefix

if TYPE_CHECKING:
    import socket

    from ._server import EmbeddedServer

__all__ = ["HttpEndpoint", "HttpServer", "HttpSettings"]

#: Seconds ``stop()`` waits beyond uvicorn's own graceful period before forcing.
_STOP_MARGIN: Final = 1.0
#: Bind addresses that mean "every interface": clients reach them through the loopback.
_WILDCARDS: Final = {"0.0.0.0": "127.0.0.1", "::": "::1"}


@attrs.frozen
class HttpSettings:
    """``[plugins.http.settings]``."""

    host: str = attrs.field(
        default="127.0.0.1",
        validator=attrs.validators.min_len(1),
        metadata={"doc": "Address to listen on: 127.0.0.1 keeps it local, 0.0.0.0 or :: opens it to the network."},
    )
    port: int = attrs.field(
        default=8470,
        validator=[attrs.validators.ge(0), attrs.validators.le(65535)],
        metadata={"doc": "TCP port to listen on; 0 picks a free port (the http service's base_url tells which)."},
    )
    access_log: bool = attrs.field(
        default=False,
        metadata={"doc": "Log one line per request on the 'uvicorn.access' logger."},
    )


def _url_host(address: str) -> str:
    host = _WILDCARDS.get(address, address)
    return f"[{host}]" if ":" in host else host


class HttpEndpoint:
    """The ``http`` service (:class:`plugin_sdk.HttpService`) of one run of the server.

    A separate object from the plugin, made at each start, so its ``base_url``
    is a plain value that is always valid for that run (and ``isinstance``
    checks against the Protocol never touch a stopped server).
    """

    __slots__ = ("_base_url", "_router")

    def __init__(self, base_url: str, router: Router) -> None:
        self._base_url = base_url
        self._router = router

    def __repr__(self) -> str:
        return f"<http service at {self._base_url}>"

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the server, with the real port when configured as 0."""
        return self._base_url

    def mounts(self) -> dict[str, str]:
        """Mounted prefix -> the plugin serving it, sorted by prefix (empty once the server stopped)."""
        return {prefix: entry["plugin"] for prefix, entry in self._router.index().items()}


class HttpServer(Plugin):
    """Serves every plugin's :class:`~plugin_sdk.HttpMount` on one port; provides the ``http`` service.

    For embedders and tests, the plugin also answers ``base_url`` and
    ``mounts()`` of its current run.
    """

    name = "http"
    version = "1.0.0"
    provides = ("http",)
    backends = ("asyncio",)  # uvicorn is asyncio-only
    Config = HttpSettings

    def __init__(self) -> None:
        self._ctx: PluginContext[HttpSettings] | None = None
        self._router: Router | None = None
        self._server: EmbeddedServer | None = None
        self._socket: socket.socket | None = None
        self._done: anyio.Event | None = None
        self._failure: BaseException | None = None
        self._endpoint: HttpEndpoint | None = None
        #: problems already logged, so a rebuild does not repeat them (re-logged if they go and come back)
        self._warned: set[tuple[str, ...]] = set()

    # -- what it serves ----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server, with the real port when configured as 0.

        :raises ServiceUnavailable: the server is not running.
        """
        if self._endpoint is None:
            raise ServiceUnavailable("http: the server is not running")
        return self._endpoint.base_url

    def mounts(self) -> dict[str, str]:
        """Mounted prefix -> the plugin serving it, sorted by prefix (empty when not running)."""
        return self._endpoint.mounts() if self._endpoint is not None else {}

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, ctx: PluginContext[HttpSettings]) -> None:
        from ._server import bind_socket
        from ._server import make_server

        settings = ctx.settings
        self._ctx = ctx
        self._failure = None
        self._warned = set()
        sock = bind_socket(settings.host, settings.port)  # raises PluginError naming the address
        self._socket = sock
        try:
            address, port = sock.getsockname()[:2]
            router = Router(ctx.log)
            settled = anyio.Event()
            done = anyio.Event()
            server = make_server(
                router, host=settings.host, port=port, access_log=settings.access_log, on_started=settled.set
            )
            self._server, self._done = server, done
            ctx.spawn(self._serve, server, sock, settled, done, name="uvicorn")
            await settled.wait()  # set once the socket accepts, or when serve() ends early
            if not server.started:
                failure = self._failure
                reason = f"{type(failure).__name__}: {failure}" if failure is not None else "serve() returned early"
                raise PluginError(f"http: the server did not start: {reason}", plugin=self.name)
        except BaseException:
            self._reset()
            raise
        self._router = router
        self._endpoint = HttpEndpoint(f"http://{_url_host(address)}:{port}", router)
        ctx.provide("http", self._endpoint)
        everywhere = " (all interfaces)" if address in _WILDCARDS else ""
        ctx.log.info("http: serving on %s%s", self._endpoint.base_url, everywhere)
        # Plugins already running mount now; later ones arrive through plugin_state_changed.
        self._collect()

    async def _serve(
        self, server: EmbeddedServer, sock: socket.socket, settled: anyio.Event, done: anyio.Event
    ) -> None:
        try:
            await server.serve(sockets=[sock])
        except (Exception, SystemExit) as exc:  # uvicorn calls sys.exit() on some startup failures
            if not server.started:
                self._failure = exc  # start() reports it
                return
            raise PluginError(
                f"http: the server failed while serving: {type(exc).__name__}: {exc}", plugin=self.name
            ) from exc
        finally:
            server.close_everything()
            sock.close()
            done.set()
            settled.set()
        if not server.should_exit and self._ctx is not None:
            self._ctx.log.warning("http: the server stopped on its own; nothing is served until a restart")

    async def stop(self) -> None:
        server, done, ctx = self._server, self._done, self._ctx
        if server is not None and done is not None:
            from ._server import GRACEFUL_SHUTDOWN

            server.should_exit = True
            with anyio.move_on_after(GRACEFUL_SHUTDOWN + _STOP_MARGIN):
                await done.wait()
            if not done.is_set():
                server.force_exit = True
                with anyio.move_on_after(_STOP_MARGIN):
                    await done.wait()
            if not done.is_set() and ctx is not None:
                ctx.log.warning("http: the server did not stop in time; closing its sockets and cancelling it")
        self._reset()

    def _reset(self) -> None:
        """Close what is still open and forget the server (idempotent)."""
        if self._server is not None:
            self._server.close_everything()
        if self._socket is not None:
            self._socket.close()
        if self._router is not None:
            self._router.set_routes(())
        self._server = self._socket = self._done = self._router = None
        self._endpoint = None

    @hookimpl
    async def check_health(self) -> HealthStatus:
        """Not ok once the server stopped serving on its own (the plugin itself stays running)."""
        done, endpoint = self._done, self._endpoint
        if endpoint is None or done is None or done.is_set():
            return HealthStatus(ok=False, reason="the HTTP server is not serving (see the log for why)")
        return HealthStatus(ok=True, reason=f"serving on {endpoint.base_url}")

    # -- mounts ------------------------------------------------------------------------

    @hookimpl
    def plugin_state_changed(self, plugin: str, old: PluginState, new: PluginState) -> None:
        """Re-collect the mounts when a plugin starts or stops running (only such changes move mounts)."""
        if PluginState.RUNNING in (old, new) and self._router is not None:
            self._collect()

    def _warn_once(self, seen: set[tuple[str, ...]], key: tuple[str, ...], message: str, *args: object) -> None:
        seen.add(key)
        if key not in self._warned and self._ctx is not None:
            self._ctx.log.warning(message, *args)

    def _collect(self) -> None:
        """Ask every running plugin for its mounts and swap the routing table at once.

        Mounts already served keep their prefix when another plugin claims it,
        so a plugin starting later never takes a prefix away; otherwise hook
        order decides.  Clashes and bad mounts are logged once and skipped.
        """
        router, ctx = self._router, self._ctx
        if router is None or ctx is None:
            return
        seen: set[tuple[str, ...]] = set()
        candidates: list[Route] = []
        for outcome in ctx.hooks.call_each(hookspecs.http_mounts):
            if outcome.error is not None:
                continue  # logged by the kernel and counted toward the plugin's quarantine
            mounts = outcome.value
            if not isinstance(mounts, list | tuple) or not all(isinstance(m, HttpMount) for m in mounts):
                self._warn_once(
                    seen,
                    ("type", outcome.plugin),
                    "http: plugin %s: http_mounts() must return a list of HttpMount, got %r; nothing mounted",
                    outcome.plugin,
                    mounts,
                )
                continue
            for mount in mounts:
                raw = mount.prefix if mount.prefix is not None else f"/{outcome.plugin}"
                try:
                    prefix = normalize_prefix(raw)
                    if not callable(mount.app):
                        raise ValueError(f"the app mounted at {prefix} is not callable: {mount.app!r}")
                except ValueError as exc:
                    self._warn_once(
                        seen, ("bad", outcome.plugin, str(raw)), "http: plugin %s: %s; not mounted", outcome.plugin, exc
                    )
                    continue
                candidates.append(Route(prefix=prefix, plugin=outcome.plugin, app=mount.app, title=mount.title))
        incumbents = {(r.prefix, r.plugin) for r in router.routes}
        candidates.sort(key=lambda r: (r.prefix, r.plugin) not in incumbents)  # stable: hook order otherwise
        table: dict[str, Route] = {}
        for route in candidates:
            owner = table.get(route.prefix)
            if owner is None:
                table[route.prefix] = route
                continue
            self._warn_once(
                seen,
                ("clash", route.prefix, route.plugin, owner.plugin),
                "http: prefix %s of plugin %s is already mounted by plugin %s; skipped",
                route.prefix,
                route.plugin,
                owner.plugin,
            )
        self._warned = seen
        before = {(r.prefix, r.plugin) for r in router.routes}
        router.set_routes(table.values())
        for route in sorted(table.values(), key=lambda r: r.prefix):
            if (route.prefix, route.plugin) not in before:
                ctx.log.info("http: mounted %s (plugin %s)", route.prefix, route.plugin)
        for prefix, plugin in sorted(before - {(r.prefix, r.plugin) for r in table.values()}):
            ctx.log.info("http: unmounted %s (plugin %s)", prefix, plugin)
