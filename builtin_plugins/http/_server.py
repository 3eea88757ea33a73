"""uvicorn, embedded: bind first, never touch signals, report when it is up.

Imported only when the ``http`` plugin starts, so listing or checking plugins
never pays for importing uvicorn (about 70 ms).
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Callable
from collections.abc import Generator
from typing import Final

import uvicorn

from plugin_sdk import PluginError

from ._router import Router

#: Seconds uvicorn lets requests in flight finish at stop before cancelling them.
GRACEFUL_SHUTDOWN: Final = 5
#: Pending connections the listening socket queues (uvicorn's default).
BACKLOG: Final = 2048


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that runs inside the kernel's event loop as a guest.

    ``uvicorn.Server.serve()`` wraps itself in ``capture_signals()``, which
    replaces the process's SIGINT/SIGTERM handlers with its own for as long as
    it serves; the kernel owns those signals (``Kernel.serve``), so that is
    neutralised here.  ``startup()`` is extended to tell the plugin the
    sockets accept connections.
    """

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the kernel owns SIGINT/SIGTERM: install nothing, restore nothing, re-raise nothing

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()

    def close_everything(self) -> None:
        """Close listeners and connections left open (after a cancelled or failed serve); idempotent."""
        for server in getattr(self, "servers", ()):
            server.close()
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.close()


def make_server(
    router: Router, *, host: str, port: int, access_log: bool, on_started: Callable[[], None]
) -> EmbeddedServer:
    """A server for ``router`` that leaves logging config, signals and lifespan alone."""
    config = uvicorn.Config(
        router,
        host=host,
        port=port,
        interface="asgi3",
        lifespan="off",  # a mounted app lives as long as its plugin, not the server
        log_config=None,  # the application configures logging, not uvicorn
        access_log=access_log,
        proxy_headers=False,  # the peer address is the client's unless a gateway says otherwise
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        backlog=BACKLOG,
    )
    return EmbeddedServer(config, on_started)


def _explain(error: OSError) -> str:
    code = error.errno
    if code == errno.EADDRINUSE:
        return "address already in use (set plugins.http.settings.port, or 0 for any free port)"
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied (ports below 1024 need privileges; set plugins.http.settings.port)"
    if code == errno.EADDRNOTAVAIL:
        return "address not available on this machine (set plugins.http.settings.host)"
    return error.strerror or str(error)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: any free port).

    Bound and listening before uvicorn sees it, so a port in use fails the
    plugin's start with a clear message instead of a log line from a
    background task, and port 0 resolves to a real port we can report.

    :raises PluginError: the host does not resolve or the address cannot be bound.
    """
    where = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PluginError(
            f"http: cannot listen on {where}: cannot resolve host {host!r} ({exc.strerror}; "
            "set plugins.http.settings.host)",
            plugin="http",
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # Lets a restart bind while old connections sit in TIME_WAIT; on Linux
        # it does not let two sockets listen on one port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)  # hold the port now: a bound but idle socket does not stop another listener
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise PluginError(f"http: cannot listen on {where}: {_explain(exc)}", plugin="http") from None
    return sock
