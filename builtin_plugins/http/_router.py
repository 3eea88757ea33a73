"""The ASGI app the ``http`` plugin serves: a prefix router over the plugins' mounts.

Why a hand-written router rather than ``starlette.routing.Mount``: the mount
table changes whenever a plugin starts or stops, and the SDK contract
(:class:`plugin_sdk.HttpMount`) gives a mounted app paths *relative* to its
prefix with the prefix in ``root_path`` (WSGI's ``SCRIPT_NAME`` /
``PATH_INFO`` split), so each app is written as if mounted at ``/``.  The
table here is an immutable tuple swapped in one assignment, so a rebuild never
races a request, and dispatch is one linear scan over a handful of prefixes,
longest first.

Only ``http`` and ``websocket`` scopes are routed; the server runs with
lifespan off, because a mounted app's life is its plugin's life (``start`` /
``stop``), not the server's.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import MutableMapping
from typing import Any
from typing import Final
from typing import TypeAlias

import attrs
import orjson

from plugin_sdk import ASGIApp

#: A prefix: one or more ``/segment`` made of URL-safe characters (so its
#: percent-encoded form is itself, and ``raw_path`` can be cut like ``path``).
_PREFIX: Final = re.compile(r"^(?:/[A-Za-z0-9._~-]+)+$")

# The ASGI types, as plugin_sdk.ASGIApp spells them.
Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
Response: TypeAlias = tuple[int, list[tuple[bytes, bytes]], bytes]


def normalize_prefix(prefix: str) -> str:
    """``"/health/"`` -> ``"/health"``; raise :class:`ValueError` saying what is wrong otherwise."""
    if not isinstance(prefix, str):
        raise ValueError(f"prefix must be a string, got {prefix!r}")
    trimmed = prefix.rstrip("/") if prefix != "/" else prefix
    if trimmed in ("", "/"):
        raise ValueError("prefix '/' is reserved for the index of mounts")
    if not _PREFIX.match(trimmed) or any(part in (".", "..") for part in trimmed.split("/")[1:]):
        raise ValueError(
            f"prefix {prefix!r} is not a path of '/segment's made of letters, digits and '._~-' (e.g. '/metrics')"
        )
    return trimmed


@attrs.frozen
class Route:
    """One mounted app."""

    prefix: str
    plugin: str
    app: ASGIApp = attrs.field(repr=False, eq=False)
    title: str = ""


def _json(status: int, body: object, headers: Iterable[tuple[bytes, bytes]] = ()) -> Response:
    payload = orjson.dumps(body)
    return (
        status,
        [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            *headers,
        ],
        payload,
    )


async def _respond(send: Send, response: Response, *, head: bool = False) -> None:
    status, headers, body = response
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


def _child_scope(scope: Scope, prefix: str, path: str) -> dict[str, Any]:
    # ASGI as Starlette >= 0.35 and uvicorn >= 0.26 read it (asgiref#229):
    # ``path`` stays the full path and ``root_path`` says which part is the mount.
    child = dict(scope)
    child["root_path"] = scope.get("root_path", "") + prefix
    return child


class Router:
    """Dispatch each request to the app whose prefix matches its path, longest prefix first.

    ``path == prefix`` or ``path.startswith(prefix + "/")`` matches; the app
    gets a copy of the scope with ``root_path`` extended by the prefix;
    ``path`` stays the full path (ASGI as Starlette reads it).
    ``GET /`` answers a JSON index of the mounts; anything else unmatched is a
    JSON 404.  An app that raises is logged against its plugin and answered
    with a JSON 500 when it had not started its response yet (otherwise the
    server closes the connection).
    """

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._routes: tuple[Route, ...] = ()

    @property
    def routes(self) -> tuple[Route, ...]:
        """The mounted apps, longest prefix first."""
        return self._routes

    def set_routes(self, routes: Iterable[Route]) -> None:
        """Swap the whole table at once (requests in flight keep the app they matched)."""
        self._routes = tuple(sorted(routes, key=lambda r: (-len(r.prefix), r.prefix)))

    def index(self) -> dict[str, dict[str, str]]:
        """``{prefix: {"plugin": ..., "title": ...}}``, sorted by prefix."""
        return {r.prefix: {"plugin": r.plugin, "title": r.title} for r in sorted(self._routes, key=lambda r: r.prefix)}

    def match(self, path: str) -> Route | None:
        """The route serving ``path``, or ``None``."""
        for route in self._routes:
            prefix = route.prefix
            if path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/"):
                return route
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            return  # lifespan is off; nothing else is routed
        path: str = scope["path"]
        route = self.match(path)
        if route is None:
            await self._unmatched(scope, send, path)
            return
        child = _child_scope(scope, route.prefix, path)
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] in ("http.response.start", "websocket.accept", "websocket.close"):
                started = True
            await send(message)

        try:
            await route.app(child, receive, tracked_send)
        except Exception:
            self._log.exception(
                "http: the app of plugin %s mounted at %s failed on %s %s",
                route.plugin,
                route.prefix,
                scope.get("method", "WEBSOCKET"),
                path,
            )
            if started:
                return  # the response is half sent: the server closes the connection
            if kind == "http":
                await _respond(send, _json(500, {"error": "internal server error", "plugin": route.plugin}))
            else:
                await send({"type": "websocket.close", "code": 1011})

    async def _unmatched(self, scope: Scope, send: Send, path: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})
            return
        method = scope.get("method", "GET")
        if path == "/":
            if method in ("GET", "HEAD"):
                await _respond(send, _json(200, self.index()), head=method == "HEAD")
            else:
                await _respond(
                    send,
                    _json(405, {"error": f"method {method} not allowed on /"}, [(b"allow", b"GET, HEAD")]),
                )
            return
        await _respond(
            send,
            _json(404, {"error": "not found", "path": path, "mounts": sorted(r.prefix for r in self._routes)}),
            head=method == "HEAD",
        )
