"""The HTTP servers of the ``http`` plugin at the protocol level, over raw sockets on 127.0.0.1.

Each behaviour both servers share runs against both (``server = "builtin"``,
the h11 server of ``builtin_plugins.http._h11server``, and ``server =
"uvicorn"``); what only the built-in server does is tested on it alone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
import orjson
import pytest

from builtin_plugins.http import HttpServer
from builtin_plugins.http._h11server import H11Server
from builtin_plugins.http._listen import bind_socket
from kernel import Kernel
from plugin_sdk import ASGIApp
from plugin_sdk import ConfigError
from plugin_sdk import HttpMount
from plugin_sdk import Plugin
from plugin_sdk import PluginState
from plugin_sdk import hookimpl

#: the grant the http plugin needs (it asks for net:listen:{host}:{port})
LISTEN = ["net:listen:127.0.0.1:*"]

pytestmark = pytest.mark.anyio

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SERVERS = ("builtin", "uvicorn")


@pytest.fixture(params=SERVERS)
def server_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


# -- a raw HTTP/1.1 client ---------------------------------------------------------------


class Truncated(Exception):
    """The connection ended in the middle of a response."""


@attrs.frozen
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    #: the chunks of a chunked body, as framed by the server
    chunks: tuple[bytes, ...] = ()


class Raw:
    """One TCP connection speaking bytes, with just enough of a parser to read responses."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def _more(self) -> bool:
        try:
            chunk = await self.stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
            return False
        self.buffer += chunk
        return True

    async def _until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            if not await self._more():
                raise Truncated(self.buffer)
        line, self.buffer = self.buffer.split(marker, 1)
        return line

    async def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not await self._more():
                raise Truncated(self.buffer)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    async def head(self) -> tuple[int, dict[str, str]]:
        """The next status line and headers (an interim 1xx response counts)."""
        lines = (await self._until(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        return status, headers

    async def response(self, *, head: bool = False) -> Reply:
        """The next complete response (``head``: to a HEAD request, so no body whatever the headers say)."""
        status, headers = await self.head()
        if head or status in (204, 304):
            return Reply(status, headers, b"")
        if "chunked" in headers.get("transfer-encoding", ""):
            chunks: list[bytes] = []
            while chunk := await self.chunk():
                chunks.append(chunk)
            return Reply(status, headers, b"".join(chunks), tuple(chunks))
        if "content-length" in headers:
            return Reply(status, headers, await self._exactly(int(headers["content-length"])))
        while await self._more():  # delimited by the end of the connection
            pass
        body, self.buffer = self.buffer, b""
        return Reply(status, headers, body)

    async def chunk(self) -> bytes:
        """The next chunk of a chunked body; ``b""`` for the last one (its trailer read too)."""
        size = int((await self._until(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await self._until(b"\r\n")
            return b""
        data = await self._exactly(size)
        await self._exactly(2)
        return data

    async def closed(self, within: float = 3.0) -> bool:
        """The server closed the connection within ``within`` seconds (anything unread is dropped)."""
        with anyio.move_on_after(within):
            while await self._more():
                pass
            return True
        return False

    async def request(self, method: str, path: str, *, headers: str = "", body: bytes = b"") -> Reply:
        length = f"Content-Length: {len(body)}\r\n" if body else ""
        await self.send(f"{method} {path} HTTP/1.1\r\nHost: test\r\n{length}{headers}\r\n".encode() + body)
        return await self.response(head=method == "HEAD")


@asynccontextmanager
async def connect(port: int) -> AsyncIterator[Raw]:
    with anyio.fail_after(5):
        stream = await anyio.connect_tcp("127.0.0.1", port)
    try:
        yield Raw(stream)
    finally:
        await stream.aclose()


# -- serving apps ----------------------------------------------------------------------------


class Mounter(Plugin):
    name = "t"
    version = "1.0.0"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @hookimpl
    def http_mounts(self) -> list[HttpMount]:
        return [HttpMount(self.app, prefix="/t")]


@attrs.define
class Served:
    kernel: Kernel
    http: HttpServer
    port: int


@asynccontextmanager
async def serving(kind: str, app: ASGIApp, **settings: Any) -> AsyncIterator[Served]:
    """A kernel whose http plugin (``server = kind``) serves ``app`` at ``/t``."""
    http = HttpServer()
    config = {"plugins": {"http": {"permissions": LISTEN, "settings": {"port": 0, "server": kind, **settings}}}}
    async with Kernel(config, plugins=[http, Mounter(app)], environ={}) as kernel:
        assert kernel.plugins["http"].state is PluginState.RUNNING, kernel.plugins["http"].last_error
        yield Served(kernel, http, int(http.base_url.rsplit(":", 1)[1]))


async def respond(send: Send, status: int = 200, body: bytes = b"hello", headers: list[Any] | None = None) -> None:
    given = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": given + (headers or [])})
    await send({"type": "http.response.body", "body": body})


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    await respond(send, body=b"hello")


async def read_body(receive: Receive) -> list[Message]:
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages


def body_echo(seen: list[list[Message]]) -> ASGIApp:
    """Answers what it received: the body's length and how many non-empty chunks it came in."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        messages = await read_body(receive)
        seen.append(messages)
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        chunks = sum(1 for m in messages if m.get("body"))
        await respond(send, body=orjson.dumps({"length": len(body), "chunks": chunks, "last": messages[-1]["type"]}))

    return app


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- keep-alive, streaming, bodies ---------------------------------------------------------


async def test_keep_alive_serves_requests_one_after_another_on_one_connection(server_kind: str) -> None:
    with anyio.fail_after(10):
        async with serving(server_kind, hello) as served, connect(served.port) as raw:
            for _ in range(3):
                reply = await raw.request("GET", "/t/x")
                assert (reply.status, reply.body) == (200, b"hello")
                assert "close" not in reply.headers.get("connection", "")
            # pipelined: two requests in one write, answered in order
            await raw.send(b"GET /t/a HTTP/1.1\r\nHost: t\r\n\r\nGET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n")
            assert (await raw.response()).status == 200
            assert (await raw.response()).status == 404


async def test_a_response_without_length_is_streamed_chunked_as_the_app_sends_it(server_kind: str) -> None:
    gate = anyio.Event()

    async def stream(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first,", "more_body": True})
        with anyio.fail_after(5):
            await gate.wait()  # the client must have the first chunk before the second is made
        await send({"type": "http.response.body", "body": b"second", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    with anyio.fail_after(10):
        async with serving(server_kind, stream) as served, connect(served.port) as raw:
            await raw.send(b"GET /t/ HTTP/1.1\r\nHost: t\r\n\r\n")
            status, headers = await raw.head()
            assert status == 200
            assert headers["transfer-encoding"] == "chunked"
            assert "content-length" not in headers
            assert await raw.chunk() == b"first,"
            gate.set()
            assert await raw.chunk() == b"second"
            assert await raw.chunk() == b""  # the last chunk
            assert (await raw.request("GET", "/t/again")).status == 200  # the connection is still usable


async def test_a_request_body_reaches_the_app_in_chunks_as_it_arrives(server_kind: str) -> None:
    seen: list[list[Message]] = []
    with anyio.fail_after(10):
        async with serving(server_kind, body_echo(seen)) as served, connect(served.port) as raw:
            await raw.send(b"POST /t/ HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
            for part in (b"a" * 100, b"b" * 200, b"c" * 300):
                await raw.send(b"%x\r\n%s\r\n" % (len(part), part))
                await anyio.sleep(0.05)  # arrives in pieces
            await raw.send(b"0\r\n\r\n")
            reply = await raw.response()
            assert reply.status == 200
            got = orjson.loads(reply.body)
            assert got["length"] == 600
            assert got["chunks"] >= 2, "the body was buffered whole instead of delivered as it came"
            messages = seen[0]
            assert all(m["type"] == "http.request" for m in messages)
            assert [m.get("more_body", False) for m in messages][-1] is False
            assert all(m["more_body"] for m in messages[:-1])
            # a Content-Length body on the same connection
            reply = await raw.request("POST", "/t/", body=b"x" * 1000)
            assert orjson.loads(reply.body)["length"] == 1000


async def test_a_declared_body_over_the_limit_is_413_before_the_app_runs(server_kind: str) -> None:
    seen: list[list[Message]] = []
    with anyio.fail_after(10):
        async with serving(server_kind, body_echo(seen), max_body_size=1024) as served:
            async with connect(served.port) as raw:
                await raw.send(b"POST /t/ HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n")  # body not sent
                reply = await raw.response()
                assert reply.status == 413
                assert reply.headers["connection"] == "close"
                assert await raw.closed()
            assert seen == []
            async with connect(served.port) as raw:  # at the limit is fine
                assert orjson.loads((await raw.request("POST", "/t/", body=b"x" * 1024)).body)["length"] == 1024


async def test_a_chunked_body_growing_over_the_limit_is_413(server_kind: str) -> None:
    seen: list[list[Message]] = []
    with anyio.fail_after(10):
        async with serving(server_kind, body_echo(seen), max_body_size=1024) as served:
            async with connect(served.port) as raw:
                await raw.send(b"POST /t/ HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
                for _ in range(2):
                    await raw.send(b"258\r\n" + b"z" * 600 + b"\r\n")
                reply = await raw.response()
                assert reply.status == 413
                assert await raw.closed()
            assert seen[0][-1]["type"] == "http.disconnect"  # the app was told, and its answer dropped
            async with connect(served.port) as raw:
                assert (await raw.request("GET", "/t/")).status == 200


async def test_headers_over_the_limit_are_refused_and_the_connection_closed(server_kind: str) -> None:
    with anyio.fail_after(10):
        async with serving(server_kind, hello, max_header_size=1024) as served:
            async with connect(served.port) as raw:
                await raw.send(b"GET /t/ HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * 3000)
                await anyio.sleep(0.05)  # the server has an incomplete head over the limit
                await raw.send(b"b" * 1000 + b"\r\n\r\n")
                reply = await raw.response()
                assert reply.status == (431 if server_kind == "builtin" else 400)
                assert await raw.closed()
            if server_kind == "builtin":  # a head over the limit that arrives whole in one read
                async with connect(served.port) as raw:
                    await raw.send(b"GET /t/ HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * 4000 + b"\r\n\r\n")
                    assert (await raw.response()).status == 431
                    assert await raw.closed()
            async with connect(served.port) as raw:
                assert (await raw.request("GET", "/t/", headers="X-Small: " + "s" * 500 + "\r\n")).status == 200


async def test_a_malformed_request_is_400_and_closes_only_its_connection(server_kind: str) -> None:
    entered, release = anyio.Event(), anyio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        entered.set()
        with anyio.fail_after(5):
            await release.wait()
        await respond(send, body=b"done")

    with anyio.fail_after(10):
        async with serving(server_kind, slow) as served, connect(served.port) as busy:
            await busy.send(b"GET /t/ HTTP/1.1\r\nHost: t\r\n\r\n")
            await entered.wait()
            for garbage in (
                b"NOT HTTP AT ALL\r\n\r\n",
                b"GET / HTTP/1.1\r\n\r\n",
                b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
            ):
                async with connect(served.port) as raw:
                    await raw.send(garbage)
                    reply = await raw.response()
                    assert reply.status == 400, garbage
                    assert await raw.closed()
            release.set()
            assert (await busy.response()).body == b"done"  # the other connection never noticed


async def test_app_failures_are_answered_or_close_their_connection_and_serving_goes_on(
    server_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        what = scope["path"].rsplit("/", 1)[1]
        if what == "before":
            raise RuntimeError("failed before responding")
        if what == "after":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
            raise RuntimeError("failed halfway")
        if what == "silent":
            return  # no response at all
        if what == "wrong":
            await send({"type": "http.response.body", "body": b"no start"})
        await respond(send)

    caplog.set_level(logging.ERROR)
    with anyio.fail_after(10):
        async with serving(server_kind, app) as served:
            async with connect(served.port) as raw:
                reply = await raw.request("GET", "/t/before")
                assert reply.status == 500
                assert orjson.loads(reply.body) == {"error": "internal server error", "plugin": "t"}  # the router's
                assert (await raw.request("GET", "/t/fine")).status == 200
            async with connect(served.port) as raw:
                assert (await raw.request("GET", "/t/silent")).status == 500
            async with connect(served.port) as raw:
                assert (await raw.request("GET", "/t/wrong")).status == 500
            async with connect(served.port) as raw:
                with pytest.raises(Truncated):
                    await raw.request("GET", "/t/after")
                assert await raw.closed()
            async with connect(served.port) as raw:
                assert (await raw.request("GET", "/t/fine")).status == 200
    assert any(
        r.getMessage() == "http: the app of plugin t mounted at /t failed on GET /t/before" for r in caplog.records
    )


async def test_head_gets_the_headers_and_no_body(server_kind: str) -> None:
    async def big(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, body=b"x" * 5000)

    with anyio.fail_after(10):
        async with serving(server_kind, big) as served, connect(served.port) as raw:
            reply = await raw.request("HEAD", "/t/")
            assert reply.status == 200
            assert reply.headers["content-length"] == "5000"
            # had any body bytes been sent, they would be read as the next response's status line
            reply = await raw.request("GET", "/t/")
            assert (reply.status, len(reply.body)) == (200, 5000)
            assert (await raw.request("HEAD", "/")).status == 200  # the router's index, HEAD too
            assert (await raw.request("GET", "/t/")).status == 200


async def test_expect_100_continue_is_answered_when_the_app_reads_the_body(server_kind: str) -> None:
    seen: list[list[Message]] = []
    with anyio.fail_after(10):
        async with serving(server_kind, body_echo(seen)) as served, connect(served.port) as raw:
            await raw.send(b"POST /t/ HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            status, _ = await raw.head()
            assert status == 100
            await raw.send(b"12345")
            reply = await raw.response()
            assert orjson.loads(reply.body)["length"] == 5


async def test_http_1_0_gets_a_response_and_the_connection_closes(server_kind: str) -> None:
    with anyio.fail_after(10):
        async with serving(server_kind, hello) as served, connect(served.port) as raw:
            await raw.send(b"GET /t/ HTTP/1.0\r\n\r\n")
            reply = await raw.response()
            assert (reply.status, reply.body) == (200, b"hello")
            assert await raw.closed()


async def test_the_scope_is_an_asgi_http_scope(server_kind: str) -> None:
    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(dict(scope))
        await respond(send)

    with anyio.fail_after(10):
        async with serving(server_kind, app) as served, connect(served.port) as raw:
            await raw.request("GET", "/t/a%20b/c?x=1&y=%20", headers="X-Mixed-Case: Value\r\n")
            local = raw.stream.extra(anyio.abc.SocketAttribute.local_address)
    scope = scopes[0]
    assert scope["type"] == "http"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["asgi"]["spec_version"].startswith("2.")
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/t/a b/c"
    assert scope["raw_path"] == b"/t/a%20b/c"
    assert scope["query_string"] == b"x=1&y=%20"
    assert scope["root_path"] == "/t"  # set by the router
    headers = [(bytes(k), bytes(v)) for k, v in scope["headers"]]
    assert (b"x-mixed-case", b"Value") in headers
    assert (b"host", b"test") in headers
    assert tuple(scope["client"]) == (local[0], local[1])
    assert tuple(scope["server"]) == ("127.0.0.1", served.port)


async def test_receive_says_disconnect_when_the_client_leaves(server_kind: str) -> None:
    told: list[str] = []
    left, entered = anyio.Event(), anyio.Event()

    async def waits(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        entered.set()
        told.append((await receive())["type"])  # blocks until the client goes away
        left.set()

    with anyio.fail_after(10):
        async with serving(server_kind, waits) as served:
            async with connect(served.port) as raw:
                await raw.send(b"GET /t/ HTTP/1.1\r\nHost: t\r\n\r\n")
                await entered.wait()
            await left.wait()
    assert told == ["http.disconnect"]


async def test_receive_says_disconnect_once_the_response_is_complete(server_kind: str) -> None:
    told: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await read_body(receive)
        await respond(send)
        with anyio.fail_after(2):
            told.append((await receive())["type"])

    with anyio.fail_after(10):
        async with serving(server_kind, app) as served, connect(served.port) as raw:
            assert (await raw.request("GET", "/t/")).status == 200
            assert (await raw.request("GET", "/t/")).status == 200
    assert told == ["http.disconnect", "http.disconnect"]


async def test_a_websocket_upgrade_gets_a_plain_http_response() -> None:
    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(scope)
        await respond(send, status=404, body=b"no websockets here")

    upgrade = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    with anyio.fail_after(10):
        async with serving("builtin", app) as served, connect(served.port) as raw:
            reply = await raw.request("GET", "/t/ws", headers=upgrade + "Sec-WebSocket-Version: 13\r\n")
            assert (reply.status, reply.body) == (404, b"no websockets here")
            assert (await raw.request("GET", "/t/")).status == 404  # and the connection serves on
    assert [s["type"] for s in scopes] == ["http", "http"]


# -- timeouts, stop ----------------------------------------------------------------------------


async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(server_kind: str) -> None:
    with anyio.fail_after(10):
        async with serving(server_kind, hello, keep_alive_timeout=0.3) as served:
            async with connect(served.port) as raw:
                assert (await raw.request("GET", "/t/")).status == 200
                began = time.monotonic()
                assert await raw.closed(within=3)
                assert time.monotonic() - began < 2.5
            if server_kind == "builtin":  # a head that never ends is bounded too (slow loris); uvicorn waits
                async with connect(served.port) as raw:
                    await raw.send(b"GET /t/ HTTP/1.1\r\nHost: t\r\n")
                    assert await raw.closed(within=3)


async def test_stop_lets_a_request_in_flight_finish_within_the_grace_period(server_kind: str) -> None:
    entered = anyio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        entered.set()
        await anyio.sleep(0.5)
        await respond(send, body=b"finished")

    with anyio.fail_after(15):
        async with serving(server_kind, slow, shutdown_timeout=5) as served, connect(served.port) as raw:
            await raw.send(b"GET /t/ HTTP/1.1\r\nHost: t\r\n\r\n")
            await entered.wait()
            began = time.monotonic()
            await served.kernel.__aexit__(None, None, None)  # stop the kernel with the request in flight
            took = time.monotonic() - began
            reply = await raw.response()
            assert (reply.status, reply.body) == (200, b"finished")
            if server_kind == "builtin":
                assert reply.headers["connection"] == "close"
            assert await raw.closed()
            assert 0.3 < took < 4, took


async def test_stop_cancels_a_request_that_overstays_the_grace_period(server_kind: str) -> None:
    entered, cancelled = anyio.Event(), anyio.Event()

    async def stuck(scope: Scope, receive: Receive, send: Send) -> None:
        entered.set()
        try:
            await anyio.sleep(60)
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise

    with anyio.fail_after(15):
        async with serving(server_kind, stuck, shutdown_timeout=0.3) as served, connect(served.port) as raw:
            await raw.send(b"GET /t/ HTTP/1.1\r\nHost: t\r\n\r\n")
            await entered.wait()
            began = time.monotonic()
            await served.kernel.__aexit__(None, None, None)
            took = time.monotonic() - began
            assert cancelled.is_set()
            assert await raw.closed()
            assert raw.buffer == b"" or raw.buffer.startswith(b"HTTP/1.1 500")  # no half response
            assert took < 3, took
            assert served.kernel.plugins["http"].state is PluginState.STOPPED


async def test_idle_keep_alive_connections_are_closed_at_once_at_stop(server_kind: str) -> None:
    with anyio.fail_after(15):
        async with (
            serving(server_kind, hello, shutdown_timeout=5) as served,
            connect(served.port) as first,
            connect(served.port) as second,
        ):
            assert (await first.request("GET", "/t/")).status == 200
            assert (await second.request("GET", "/t/")).status == 200
            began = time.monotonic()
            await served.kernel.__aexit__(None, None, None)
            took = time.monotonic() - began
            assert await first.closed(within=1)
            assert await second.closed(within=1)
            assert took < 2, f"stop waited {took:.1f}s for idle connections"


async def test_nothing_is_left_running_or_open_after_stop(server_kind: str) -> None:
    entered = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/t/stuck":
            entered.set()
            await anyio.sleep(60)
        await respond(send)

    async with serving(server_kind, hello):  # warm up: imports, lazy loggers, the loop's own fds
        pass
    await anyio.lowlevel.checkpoint()
    tasks_before = {t for t in asyncio.all_tasks() if not t.done()}
    fds_before = fds()
    with anyio.fail_after(15):
        async with (
            serving(server_kind, app, shutdown_timeout=0.2) as served,
            connect(served.port) as idle,
            connect(served.port) as stuck,
            connect(served.port) as half,
        ):
            assert (await idle.request("GET", "/t/")).status == 200
            await stuck.send(b"GET /t/stuck HTTP/1.1\r\nHost: t\r\n\r\n")
            await half.send(b"POST /t/ HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nonly part")
            await entered.wait()
            await served.kernel.__aexit__(None, None, None)
            for raw in (idle, stuck, half):
                assert await raw.closed()
    await anyio.lowlevel.checkpoint()
    assert {t for t in asyncio.all_tasks() if not t.done()} <= tasks_before | {asyncio.current_task()}
    assert fds() <= fds_before, "a socket of the server is still open"


# -- access log, settings, imports ---------------------------------------------------------


async def test_the_access_log_has_one_line_per_request(server_kind: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="orion.http.access")
    with anyio.fail_after(10):
        async with serving(server_kind, hello, access_log=True) as served, connect(served.port) as raw:
            await raw.request("GET", "/t/x?q=1")
            await raw.request("GET", "/missing")
    lines = [r.getMessage() for r in caplog.records if r.name == "orion.http.access"]
    assert len(lines) == 2, lines
    assert '"GET /t/x?q=1 HTTP/1.1" 200 ' in lines[0]
    assert lines[0].startswith("127.0.0.1:")
    assert lines[0].endswith("ms")
    assert '"GET /missing HTTP/1.1" 404 ' in lines[1]


async def test_no_access_log_unless_asked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="orion.http.access")
    with anyio.fail_after(10):
        async with serving("builtin", hello) as served, connect(served.port) as raw:
            await raw.request("GET", "/t/")
    assert not [r for r in caplog.records if r.name == "orion.http.access"]


async def test_an_unknown_server_is_a_config_error_with_its_path() -> None:
    with pytest.raises(ConfigError, match=r"plugins\.http\.settings\.server.*'builtin', 'uvicorn'"):
        async with Kernel({"plugins": {"http": {"settings": {"server": "nginx"}}}}, plugins=[HttpServer()], environ={}):
            pass


async def test_uvicorn_chosen_but_not_installed_fails_the_start_naming_pip_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now raises ImportError
    monkeypatch.delitem(sys.modules, "builtin_plugins.http._server", raising=False)
    with anyio.fail_after(10):
        config = {"plugins": {"http": {"permissions": LISTEN, "settings": {"port": 0, "server": "uvicorn"}}}}
        async with Kernel(config, plugins=[HttpServer()], environ={}) as k:
            info = k.plugins["http"]
            assert info.state is PluginState.FAILED
            assert info.last_error is not None
            assert "server = 'uvicorn' needs uvicorn" in info.last_error
            assert "pip install uvicorn" in info.last_error


@pytest.mark.slow
def test_the_builtin_server_imports_neither_uvicorn_nor_starlette(tmp_path: Any) -> None:
    script = textwrap.dedent(
        """
        import sys
        import anyio
        from builtin_plugins.http import HttpServer
        from kernel import Kernel

        async def get(port: int, path: str) -> bytes:
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(f"GET {path} HTTP/1.1\\r\\nHost: t\\r\\nConnection: close\\r\\n\\r\\n".encode())
                reply = b""
                try:
                    while True:
                        reply += await stream.receive()
                except anyio.EndOfStream:
                    return reply

        async def main() -> None:
            http = HttpServer()
            config = {"plugins": {"http": {"permissions": ["net:listen:127.0.0.1:*"], "settings": {"port": 0}}}}
            async with Kernel(config, plugins=[http], environ={}) as k:
                assert k.plugins["http"].state.value == "running", k.plugins["http"].last_error
                port = int(http.base_url.rsplit(":", 1)[1])
                assert (await get(port, "/")).startswith(b"HTTP/1.1 200 ")
                assert (await get(port, "/nowhere")).startswith(b"HTTP/1.1 404 ")
            # click: what uvicorn imports first
            loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("uvicorn", "starlette", "click"))
            print("loaded:", loaded)
            assert not loaded, loaded

        anyio.run(main)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "loaded: []" in done.stdout


# -- the built-in server alone, without the plugin and its router -----------------------------


@asynccontextmanager
async def bare(app: ASGIApp, **settings: Any) -> AsyncIterator[tuple[H11Server, int]]:
    """An :class:`H11Server` serving ``app`` directly (no router in front)."""
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    options: dict[str, Any] = {
        "keep_alive_timeout": 5.0,
        "max_header_size": 16384,
        "max_body_size": 1 << 20,
        "shutdown_timeout": 1.0,
        "access_log": False,
    }
    options.update(settings)
    started = anyio.Event()
    server = H11Server(app, log=logging.getLogger("test.h11"), on_started=started.set, **options)
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve_socket, sock)
        await started.wait()
        try:
            yield server, port
        finally:
            server.begin_shutdown()
    assert sock.fileno() == -1, "the listening socket is still open"


async def test_the_server_answers_500_for_an_app_that_raises_or_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/raise":
            raise ValueError("boom")
        if scope["path"] == "/nothing":
            return
        if scope["path"] == "/bad-status":
            await send({"type": "http.response.start", "status": 99, "headers": []})
        if scope["path"] == "/bad-length":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
            await send({"type": "http.response.body", "body": b"too short"})
        await respond(send)

    caplog.set_level(logging.ERROR, logger="test.h11")
    with anyio.fail_after(10):
        async with bare(app) as (server, port):
            async with connect(port) as raw:
                for path in ("/raise", "/nothing", "/bad-status"):
                    reply = await raw.request("GET", path)
                    assert (reply.status, reply.body) == (500, b"Internal Server Error"), path
                assert (await raw.request("GET", "/fine")).status == 200  # same connection, still serving
            async with connect(port) as raw:
                with pytest.raises(Truncated):
                    await raw.request("GET", "/bad-length")
            assert server.connections <= 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("the ASGI app failed on GET /raise" in m for m in messages)
    assert any("returned without a response to GET /nothing" in m for m in messages)


async def test_the_server_serves_many_connections_at_once() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep(0.2)
        await respond(send, body=scope["path"].encode())

    got: list[bytes] = []

    async def one(port: int, index: int) -> None:
        async with connect(port) as raw:
            got.append((await raw.request("GET", f"/{index}")).body)

    with anyio.fail_after(10):
        async with bare(app) as (_, port):
            began = time.monotonic()
            async with anyio.create_task_group() as group:
                for index in range(50):
                    group.start_soon(one, port, index)
            assert time.monotonic() - began < 3  # concurrent, not one after another (50 x 0.2 s)
    assert sorted(got) == sorted(f"/{i}".encode() for i in range(50))


async def test_the_server_refuses_an_http_version_it_does_not_speak() -> None:
    with anyio.fail_after(10):
        async with bare(hello) as (_, port), connect(port) as raw:
            await raw.send(b"GET / HTTP/2.0\r\nHost: t\r\n\r\n")
            assert (await raw.response()).status == 505
            assert await raw.closed()
