"""The ``http`` plugin: one HTTP server inside the kernel's event loop, serving what plugins mount.

Plugins contribute ASGI apps through the ``http_mounts`` hook
(:class:`plugin_sdk.HttpMount`); this plugin serves each under its prefix
(``/<plugin name>`` by default) and re-collects the mounts whenever a plugin
starts or stops, so metrics, health, the dashboard and any third-party plugin
share one port without knowing about each other.  Other plugins that need to
link to the server ask for the ``http`` service (:class:`plugin_sdk.HttpService`).

Which server (``server`` setting): by default a small HTTP/1.1 ASGI server of
our own on h11 (:mod:`._h11server`); ``server = "uvicorn"`` embeds uvicorn
instead (:mod:`._server`).  The reason is memory: the monitoring plugins are
meant to cost at most 10 % of a bare kernel's RSS, and uvicorn alone nearly
uses that up.  Imported into a process that already runs the kernel, uvicorn
adds 4.3 MiB of RSS (4.7 MiB with the modules it loads to serve: click,
multiprocessing, email, logging.config...), h11 0.3 MiB; a kernel serving
the http plugin takes 28.5 MiB with the built-in server and 32.3 MiB with
uvicorn, against 26.7 MiB without the plugin (VmRSS of ``/proc/self/status``,
median of 5 fresh processes, bytecode cached as in an installed package;
CPython 3.11.7, uvicorn 0.55, h11 0.16).  What a monitoring port needs —
HTTP/1.1 with keep-alive, streaming, limits and a graceful stop — is a few
hundred lines over h11, which uvicorn itself uses for HTTP/1.1 when
httptools is absent; measured in one process with its client, it serves
about 93 % of uvicorn's requests per second.  uvicorn remains the choice for
heavier use: httptools and uvloop when installed, websockets, years of
production hardening.  Neither uvicorn nor starlette is imported unless
chosen (or used by a mounted plugin's app).  Hypercorn would bring trio and
HTTP/2, which nothing here needs; the plugin declares asyncio only, like the
kernel's default, because uvicorn is asyncio-only.

Both servers get a socket the plugin has already bound and put to listen:
that is what turns "port in use" into a failed ``start()`` with a clear
message, and port ``0`` into a real port known before ``start()`` returns.
Neither installs signal handlers (the kernel owns SIGINT/SIGTERM).

Nothing is left behind at stop: the server stops accepting, idle keep-alive
connections close at once, requests in flight get ``shutdown_timeout``
seconds, and whatever remains — listeners, connections, the serving task —
is closed or cancelled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import ClassVar
from typing import Final
from typing import Literal
from typing import Protocol

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
    import logging
    import socket
    from collections.abc import Callable

    from plugin_sdk import ASGIApp

__all__ = ["HttpEndpoint", "HttpServer", "HttpSettings"]

#: Seconds ``stop()`` waits beyond the server's own graceful period before forcing it.
_STOP_MARGIN: Final = 1.0
#: Bind addresses that mean "every interface": clients reach them through the loopback.
_WILDCARDS: Final = {"0.0.0.0": "127.0.0.1", "::": "::1"}


#: The ``server`` setting.
ServerKind = Literal["builtin", "uvicorn"]


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
    server: ServerKind = attrs.field(
        default="builtin",
        metadata={
            "doc": "Which HTTP server serves: 'builtin' (a small HTTP/1.1 server on h11) or 'uvicorn' "
            "(pip install uvicorn; for heavier use)."
        },
    )
    access_log: bool = attrs.field(
        default=False,
        metadata={
            "doc": "Log one line per request (client, method, path, status, duration) on the 'orion.http.access' "
            "logger, at INFO."
        },
    )
    keep_alive_timeout: float = attrs.field(
        default=5.0,
        validator=[attrs.validators.gt(0), attrs.validators.le(3600)],
        metadata={
            "doc": "Seconds an idle connection stays open for its next request; also the longest a client may "
            "take to send a request's headers (0 < s <= 3600)."
        },
    )
    max_header_size: int = attrs.field(
        default=16384,
        validator=[attrs.validators.ge(1024), attrs.validators.le(1048576)],
        metadata={
            "doc": "Bytes a request line plus its headers may take (h11's max_incomplete_event_size); "
            "more is answered 431."
        },
    )
    max_body_size: int = attrs.field(
        default=1048576,
        validator=attrs.validators.ge(0),
        metadata={
            "doc": "Bytes a request body may take; more is answered 413 and the connection closed (0: no limit)."
        },
    )
    shutdown_timeout: float = attrs.field(
        default=5.0,
        validator=[attrs.validators.ge(0), attrs.validators.le(300)],
        metadata={
            "doc": "Seconds requests in flight get to finish at stop before they are cancelled; keep it below "
            "the kernel's stop_timeout (0 <= s <= 300)."
        },
    )


class _Serving(Protocol):
    """What the plugin asks of either server (:class:`._h11server.H11Server`, :class:`._server.EmbeddedServer`)."""

    started: bool

    @property
    def exiting(self) -> bool: ...

    async def serve_socket(self, sock: socket.socket) -> None: ...

    def begin_shutdown(self) -> None: ...

    def abort(self) -> None: ...

    def close_everything(self) -> None: ...


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
    #: exactly where it is configured to listen; grant e.g. "net:listen:127.0.0.1:*"
    permissions = ("net:listen:{host}:{port}",)
    backends = ("asyncio",)  # uvicorn (server = "uvicorn") is asyncio-only
    optional_imports = ("uvicorn",)  # only for server = "uvicorn" (the orion-kernel[uvicorn] extra)
    Config = HttpSettings
    #: port 0: the suite starts it many times over, never on a fixed port
    conformance_settings: ClassVar[dict[str, object]] = {"port": 0}
    conformance_opt_out: ClassVar[dict[str, str]] = {
        "isolation.process": "it serves the ASGI apps other plugins mount, which live in their process"
    }

    def __init__(self) -> None:
        self._ctx: PluginContext[HttpSettings] | None = None
        self._router: Router | None = None
        self._server: _Serving | None = None
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
        from ._listen import bind_socket

        settings = ctx.settings
        self._ctx = ctx
        self._failure = None
        self._warned = set()
        make = self._server_factory(settings, ctx.log)  # before binding: a missing uvicorn holds no port
        sock = bind_socket(settings.host, settings.port)  # raises PluginError naming the address
        self._socket = sock
        try:
            address, port = sock.getsockname()[:2]
            router = Router(ctx.log)
            settled = anyio.Event()
            done = anyio.Event()
            server = make(router, port, settled.set)
            self._server, self._done = server, done
            ctx.spawn(self._serve, server, sock, settled, done, name=f"{settings.server} server")
            await settled.wait()  # set once the socket accepts, or when serving ends early
            if not server.started:
                failure = self._failure
                reason = f"{type(failure).__name__}: {failure}" if failure is not None else "it returned early"
                raise PluginError(f"http: the server did not start: {reason}", plugin=self.name)
        except BaseException:
            self._reset()
            raise
        self._router = router
        self._endpoint = HttpEndpoint(f"http://{_url_host(address)}:{port}", router)
        ctx.provide("http", self._endpoint)
        everywhere = " (all interfaces)" if address in _WILDCARDS else ""
        ctx.log.info("http: serving on %s%s (%s server)", self._endpoint.base_url, everywhere, settings.server)
        # Plugins already running mount now; later ones arrive through plugin_state_changed.
        self._collect()

    def _server_factory(
        self, settings: HttpSettings, log: logging.Logger
    ) -> Callable[[ASGIApp, int, Callable[[], None]], _Serving]:
        """``(app, port, on_started) -> server`` for the ``server`` setting; uvicorn is imported only if chosen."""
        if settings.server == "uvicorn":
            try:
                from ._server import make_server
            except ImportError as exc:
                raise PluginError(
                    f"http: server = 'uvicorn' needs uvicorn, which cannot be imported ({exc}): "
                    "pip install uvicorn, or set plugins.http.settings.server = 'builtin'",
                    plugin=self.name,
                ) from None

            def uvicorn_server(app: ASGIApp, port: int, on_started: Callable[[], None]) -> _Serving:
                return make_server(
                    app,
                    host=settings.host,
                    port=port,
                    keep_alive_timeout=settings.keep_alive_timeout,
                    max_header_size=settings.max_header_size,
                    max_body_size=settings.max_body_size,
                    shutdown_timeout=settings.shutdown_timeout,
                    access_log=settings.access_log,
                    on_started=on_started,
                )

            return uvicorn_server

        from ._h11server import H11Server

        def builtin_server(app: ASGIApp, port: int, on_started: Callable[[], None]) -> _Serving:
            return H11Server(
                app,
                log=log,
                keep_alive_timeout=settings.keep_alive_timeout,
                max_header_size=settings.max_header_size,
                max_body_size=settings.max_body_size,
                shutdown_timeout=settings.shutdown_timeout,
                access_log=settings.access_log,
                on_started=on_started,
            )

        return builtin_server

    async def _serve(self, server: _Serving, sock: socket.socket, settled: anyio.Event, done: anyio.Event) -> None:
        try:
            await server.serve_socket(sock)
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
        if not server.exiting and self._ctx is not None:
            self._ctx.log.warning("http: the server stopped on its own; nothing is served until a restart")

    async def stop(self) -> None:
        server, done, ctx = self._server, self._done, self._ctx
        if server is not None and done is not None:
            grace = ctx.settings.shutdown_timeout if ctx is not None else 0.0
            server.begin_shutdown()
            with anyio.move_on_after(grace + _STOP_MARGIN):
                await done.wait()
            if not done.is_set():
                server.abort()
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
