"""uvicorn, embedded (``server = "uvicorn"``): serve a bound socket, never touch signals, report when it is up.

Imported only when the ``http`` plugin starts with ``server = "uvicorn"``, so
the default server, listing or checking plugins never pays for importing
uvicorn (about 4.3 MiB of RSS and 70 ms).

The settings both servers share mean the same here: the keep-alive timeout,
the header size limit (uvicorn's h11 protocol; httptools, when installed and
picked by uvicorn, has its own limits), the graceful shutdown period, and the
body size limit and access log, which uvicorn lacks and small ASGI wrappers
below add, so that the access log has one format whichever server runs.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable
from collections.abc import Generator
from typing import Any

import uvicorn

from plugin_sdk import ASGIApp

from ._listen import ACCESS_LOGGER
from ._listen import BACKLOG
from ._listen import log_access
from ._router import Message
from ._router import Receive
from ._router import Scope
from ._router import Send


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that runs inside the kernel's event loop as a guest.

    ``uvicorn.Server.serve()`` wraps itself in ``capture_signals()``, which
    replaces the process's SIGINT/SIGTERM handlers with its own for as long as
    it serves; the kernel owns those signals (``Kernel.serve``), so that is
    neutralised here.  ``startup()`` is extended to tell the plugin the
    sockets accept connections.  ``serve_socket``, ``begin_shutdown``,
    ``abort`` and ``exiting`` are what the plugin asks of either server.
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

    async def serve_socket(self, sock: socket.socket) -> None:
        await self.serve(sockets=[sock])

    @property
    def exiting(self) -> bool:
        return self.should_exit

    def begin_shutdown(self) -> None:
        """Stop accepting; requests in flight get ``timeout_graceful_shutdown`` seconds."""
        self.should_exit = True

    def abort(self) -> None:
        self.should_exit = self.force_exit = True

    def close_everything(self) -> None:
        """Close listeners and connections left open (after a cancelled or failed serve); idempotent."""
        for server in getattr(self, "servers", ()):
            server.close()
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.close()


def _too_large() -> list[Message]:
    body = b"Request body too large"
    return [
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        },
        {"type": "http.response.body", "body": body},
    ]


def limit_body(app: ASGIApp, max_body_size: int) -> ASGIApp:
    """``app`` behind the ``max_body_size`` limit, as the built-in server applies it.

    A declared ``Content-Length`` over the limit is answered 413 without
    calling ``app``; a chunked body that grows beyond it is answered 413 if
    ``app`` has not responded yet (its later messages are dropped), and
    ``app`` reads ``http.disconnect`` from then on.
    """
    if not max_body_size:
        return app

    async def limited(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > max_body_size:
                for message in _too_large():
                    await send(message)
                return
        received = 0
        exceeded = answered = started = False

        async def guarded_receive() -> Message:
            nonlocal received, exceeded, answered
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body_size:
                    exceeded = True
                    if not started:
                        answered = True
                        for response in _too_large():
                            await send(response)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await app(scope, guarded_receive, guarded_send)

    return limited


def log_requests(app: ASGIApp, logger: logging.Logger) -> ASGIApp:
    """``app`` logging one line per request on ``logger``, in the built-in server's format."""

    async def logged(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 0

        async def tracked_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, tracked_send)
        finally:
            client: Any = scope.get("client")
            log_access(
                logger,
                client,
                scope["method"],
                scope["path"],
                scope["query_string"],
                scope["http_version"],
                status or 500,  # uvicorn answers 500 for an app that raised or sent nothing
                time.perf_counter() - began,
            )

    return logged


def make_server(
    app: ASGIApp,
    *,
    host: str,
    port: int,
    keep_alive_timeout: float,
    max_header_size: int,
    max_body_size: int,
    shutdown_timeout: float,
    access_log: bool,
    on_started: Callable[[], None],
) -> EmbeddedServer:
    """A uvicorn server for ``app`` that leaves logging config, signals and lifespan alone."""
    app = limit_body(app, max_body_size)
    if access_log:
        app = log_requests(app, logging.getLogger(ACCESS_LOGGER))
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        interface="asgi3",
        lifespan="off",  # a mounted app lives as long as its plugin, not the server
        log_config=None,  # the application configures logging, not uvicorn
        access_log=False,  # logged by log_requests, in one format for both servers
        proxy_headers=False,  # the peer address is the client's unless a gateway says otherwise
        timeout_keep_alive=keep_alive_timeout,  # type: ignore[arg-type]  # typed int, used as a number of seconds
        timeout_graceful_shutdown=shutdown_timeout,  # type: ignore[arg-type]  # likewise
        h11_max_incomplete_event_size=max_header_size,
        backlog=BACKLOG,
    )
    return EmbeddedServer(config, on_started)
