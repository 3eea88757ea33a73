"""The ``http`` plugin's own HTTP/1.1 server: ASGI 3 over h11 and anyio streams, in the kernel's loop.

One task per connection, in one task group per server; the app runs in that
task, one request at a time (HTTP/1.1 without pipelining in parallel, as
every ASGI server does).  The connection task reads the socket only between
requests and when the app asks: ``receive()`` pulls the request body through
h11 on demand, so a slow app is back-pressure on its client, never a growing
buffer; once the body is read, ``receive()`` waits for the client to go away
and answers ``http.disconnect`` then, or as soon as the response is complete.

Limits and timeouts (all from ``[plugins.http.settings]``):

* ``keep_alive_timeout``: how long a connection may sit between requests; it
  also bounds the time a client may take to send a request's head, so a
  slow-loris client cannot hold a connection open.
* ``max_header_size``: h11's ``max_incomplete_event_size``; a request line
  plus headers beyond it is answered 431.
* ``max_body_size``: a ``Content-Length`` above it is answered 413 before the
  app is called; a chunked body that grows beyond it is answered 413 if the
  app has not responded yet, and the app's ``receive()`` says
  ``http.disconnect``.  Either way the connection is closed.
* A request h11 cannot parse is answered 400 (505 for an HTTP version other
  than 1.x) and the connection closed.

Failures stay inside their connection: an app that raises or returns before
starting its response gets a 500 sent for it; one that fails after starting
has its connection closed (the client sees a truncated response); anything
unexpected in a connection task is logged and ends that connection only.

Not served: ``lifespan`` (the kernel owns the lifecycle: a mounted app lives
as long as its plugin) and ``websocket`` scopes.  A request asking for
``Upgrade: websocket`` is handed to the app as a plain ``http`` request, so
the client gets whatever HTTP response the app gives (the router's 404 or the
mounted app's answer) and no upgrade; use ``server = "uvicorn"`` with a
websocket library for that.

Graceful stop (:meth:`H11Server.begin_shutdown`): the listening socket is
closed at once, idle keep-alive connections are closed at once, requests in
flight get ``shutdown_timeout`` seconds to finish (their responses carry
``Connection: close``), then whatever remains is cancelled and closed.

Writes wait until the kernel took the bytes (anyio streams keep no write
buffer), so closing never loses the end of a response.  When the client may
still be sending (a body refused with 413, a request answered 400), the close
lingers: FIN first, then what the client still sends is read and discarded
for up to two seconds, so it reads the answer instead of a connection reset.
"""

from __future__ import annotations

import http
import logging
import socket
import time
from collections.abc import Callable
from typing import Any
from typing import Final
from urllib.parse import unquote_to_bytes

import anyio
import anyio.abc
import h11

from plugin_sdk import ASGIApp

from ._listen import ACCESS_LOGGER
from ._listen import format_client
from ._listen import log_access
from ._router import Message

__all__ = ["H11Server"]

#: Bytes read from a socket at once.
_READ_SIZE: Final = 65536
#: A lingering close waits this long for the client to close its side...
_LINGER_SECONDS: Final = 2.0
#: ...and discards at most this many bytes meanwhile.
_LINGER_BYTES: Final = 1 << 20
#: An unread request body up to this size is read and discarded to keep the connection; a longer one closes it.
_DRAIN_BYTES: Final = 65536
#: The bytes after the request body the server buffers while waiting for a disconnect (pipelined requests).
_PIPELINE_BYTES: Final = 65536
#: After an accept() error (e.g. EMFILE) the server waits this long before accepting again.
_ACCEPT_BACKOFF: Final = 0.1

_START: Final = "http.response.start"
_BODY: Final = "http.response.body"
_PHRASES: Final = {status.value: status.phrase.encode("ascii") for status in http.HTTPStatus}
_VERSIONS: Final = {b"1.1": "1.1", b"1.0": "1.0"}
_DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_STREAM_ERRORS: Final = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)

_date_cache: list[Any] = [0, b""]


def _date() -> bytes:
    """The ``Date`` header value (RFC 9110 IMF-fixdate), formatted once per second."""
    now = int(time.time())
    if _date_cache[0] != now:
        t = time.gmtime(now)
        text = (
            f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
        )
        _date_cache[:] = [now, text.encode("ascii")]
    value: bytes = _date_cache[1]
    return value


def _address(sock_address: Any) -> tuple[str, int] | None:
    """``(host, port)`` of a socket address (IPv6 addresses come as 4-tuples), ``None`` if not an IP address."""
    if isinstance(sock_address, tuple) and len(sock_address) >= 2:
        return str(sock_address[0]), int(sock_address[1])
    return None


def _split_target(target: bytes) -> tuple[bytes, bytes]:
    """``raw_path`` and ``query_string`` of a request target (origin form, absolute form or ``*``)."""
    raw_path, _, query = target.partition(b"?")
    if not raw_path.startswith(b"/") and b"://" in raw_path:  # absolute form (RFC 9112 3.2.2): drop scheme://authority
        slash = raw_path.find(b"/", raw_path.index(b"://") + 3)
        raw_path = raw_path[slash:] if slash >= 0 else b"/"
    return raw_path, query


def _plain(status: int, text: str, *, close: bool) -> tuple[h11.Response, bytes]:
    body = text.encode("utf-8")
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"date", _date()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    return h11.Response(status_code=status, headers=headers, reason=_PHRASES.get(status, b"")), body


class H11Server:
    """Serves one ASGI app on an already bound, listening socket until shut down or cancelled.

    Made inside the running loop and served by :meth:`serve_socket` in a task
    of the plugin; :meth:`begin_shutdown` (graceful) and :meth:`abort` (now)
    end it from another task.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        log: logging.Logger,
        keep_alive_timeout: float,
        max_header_size: int,
        max_body_size: int,
        shutdown_timeout: float,
        access_log: bool,
        on_started: Callable[[], None],
    ) -> None:
        self.app = app
        self.log = log
        self.keep_alive_timeout = keep_alive_timeout
        self.max_header_size = max_header_size
        #: 0: no limit
        self.max_body_size = max_body_size
        self.shutdown_timeout = shutdown_timeout
        self.access_log: logging.Logger | None = logging.getLogger(ACCESS_LOGGER) if access_log else None
        self._on_started = on_started
        #: the socket accepts connections (set before ``on_started`` is called)
        self.started = False
        self._exiting = False
        self._connections: set[_Connection] = set()
        self._accept_scope: anyio.CancelScope | None = None
        self._group_scope: anyio.CancelScope | None = None
        self._drained: anyio.Event | None = None
        self._sock: socket.socket | None = None

    @property
    def exiting(self) -> bool:
        """:meth:`begin_shutdown` or :meth:`abort` was called."""
        return self._exiting

    @property
    def connections(self) -> int:
        """Open connections (idle ones included)."""
        return len(self._connections)

    async def serve_socket(self, sock: socket.socket) -> None:
        """Accept and serve connections on ``sock`` (which it then owns) until shut down; close everything at the end."""
        self._sock = sock
        self._drained = anyio.Event()
        listener = await anyio.abc.SocketListener.from_socket(sock)
        try:
            async with anyio.create_task_group() as group:
                self._group_scope = group.cancel_scope
                self.started = True
                self._on_started()
                if not self._exiting:
                    await self._accept(listener, group)
                with anyio.CancelScope(shield=True):
                    await listener.aclose()  # refuse new connections while the ones in flight finish
                await self._wait_in_flight()
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await listener.aclose()
            self._group_scope = self._accept_scope = None

    async def _accept(self, listener: anyio.abc.SocketListener, group: anyio.abc.TaskGroup) -> None:
        failing = False
        with anyio.CancelScope() as self._accept_scope:
            while True:
                try:
                    stream = await listener.accept()
                except anyio.ClosedResourceError:
                    return
                except OSError as exc:  # EMFILE, ENOBUFS, ECONNABORTED...: keep serving the connections we have
                    level = logging.DEBUG if failing else logging.WARNING  # once per streak of failures
                    self.log.log(level, "http: accept() failed: %s; retrying every %gs", exc, _ACCEPT_BACKOFF)
                    failing = True
                    await anyio.sleep(_ACCEPT_BACKOFF)
                    continue
                failing = False
                connection = _Connection(self, stream)
                self._connections.add(connection)
                group.start_soon(self._run_connection, connection, name="http connection")

    async def _wait_in_flight(self) -> None:
        drained = self._drained
        if not self._connections or drained is None:
            return
        with anyio.move_on_after(self.shutdown_timeout):
            await drained.wait()
        if self._connections:
            busy = sum(1 for c in self._connections if not c.idle)
            self.log.warning(
                "http: %d request(s) still in flight after the %gs shutdown_timeout; cancelled",
                busy,
                self.shutdown_timeout,
            )

    async def _run_connection(self, connection: _Connection) -> None:
        try:
            await connection.run()
        except Exception:  # a bug here must end this connection only, never the server
            self.log.exception("http: connection from %s failed", format_client(connection.client))
        finally:
            self._connections.discard(connection)
            if self._exiting and not self._connections and self._drained is not None:
                self._drained.set()

    def begin_shutdown(self) -> None:
        """Stop accepting, close idle connections now, let requests in flight finish (``shutdown_timeout``)."""
        self._exiting = True
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        for connection in list(self._connections):
            connection.close_if_idle()
        if not self._connections and self._drained is not None:
            self._drained.set()

    def abort(self) -> None:
        """Cancel every connection and the accept loop now."""
        self._exiting = True
        if self._group_scope is not None:
            self._group_scope.cancel()

    def close_everything(self) -> None:
        """Close the listening socket if :meth:`serve_socket` never got to (idempotent; connections close in their tasks)."""
        if self._sock is not None and not self.started:
            self._sock.close()


class _Connection:
    """One client connection: reads requests with h11, runs the app for each, keeps it alive or closes it."""

    __slots__ = ("_idle_scope", "client", "h11", "idle", "server", "server_address", "stream")

    def __init__(self, server: H11Server, stream: anyio.abc.SocketStream) -> None:
        self.server = server
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=server.max_header_size)
        self.client = _address(stream.extra(anyio.abc.SocketAttribute.remote_address, None))
        self.server_address = _address(stream.extra(anyio.abc.SocketAttribute.local_address, None))
        #: waiting for a request with nothing of it received: may be closed at shutdown
        self.idle = False
        self._idle_scope: anyio.CancelScope | None = None

    def close_if_idle(self) -> None:
        if self._idle_scope is not None:
            self._idle_scope.cancel()

    async def read(self) -> bytes:
        """Up to 64 KiB from the client; ``b""`` once it closed or the connection broke."""
        try:
            return await self.stream.receive(_READ_SIZE)
        except _STREAM_ERRORS:
            return b""

    async def write(self, data: bytes) -> bool:
        """Send ``data``; ``False`` if the client is gone."""
        try:
            await self.stream.send(data)
        except _STREAM_ERRORS:
            return False
        return True

    async def run(self) -> None:
        try:
            while True:
                request = await self._next_request()
                if request is None:
                    return
                cycle = _Cycle(self, request)
                if not await cycle.run():
                    return
                self.h11.start_next_cycle()
        finally:
            # The client may still be sending (a body we refused, a request we could not parse): linger so
            # that it reads our answer instead of a reset.  Otherwise nothing is unread and closing is enough.
            await self._close(self.h11.their_state in (h11.SEND_BODY, h11.ERROR))

    async def _next_request(self) -> h11.Request | None:
        """The next request's head; ``None`` when the connection is to close (an error was answered already)."""
        conn, server = self.h11, self.server
        deadline = anyio.current_time() + server.keep_alive_timeout
        received = False
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                await self._answer(exc.error_status_hint, f"Invalid HTTP request: {exc}")
                return None
            if isinstance(event, h11.Request):
                if event.http_version not in _VERSIONS:
                    await self._answer(505, "Only HTTP/1.0 and HTTP/1.1 are served")
                    return None
                # h11 bounds only a head still incomplete; one that arrived whole in a read is measured here
                size = len(event.method) + len(event.target) + 12
                for name, value in event.headers:
                    size += len(name) + len(value) + 4
                if size > server.max_header_size:
                    await self._answer(431, "Request header fields too large")
                    return None
                return event
            if event is not h11.NEED_DATA:
                return None  # ConnectionClosed (or PAUSED, which cannot happen between requests)
            idle = not received and not conn.trailing_data[0]
            if idle and server.exiting:
                return None
            with anyio.CancelScope(deadline=deadline) as scope:
                if idle:
                    self.idle, self._idle_scope = True, scope
                try:
                    data = await self.read()
                finally:
                    self.idle, self._idle_scope = False, None
            if scope.cancelled_caught:
                return None  # keep-alive timeout, head too slow, or shutdown of an idle connection: just close
            received = True
            conn.receive_data(data)  # b"": the client closed

    async def _answer(self, status: int, text: str) -> None:
        """Send a complete plain-text error response that closes the connection, if h11 still lets us."""
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        response, body = _plain(status, text, close=True)
        try:
            data = self.h11.send(response) + self.h11.send(h11.Data(data=body)) + self.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return
        await self.write(data)

    async def _close(self, linger: bool) -> None:
        """Close the socket; with ``linger``, half-close first and discard what the client still sends."""
        stream = self.stream
        try:
            if linger:
                with anyio.move_on_after(_LINGER_SECONDS):
                    await stream.send_eof()
                    discarded = 0
                    while discarded < _LINGER_BYTES:
                        chunk = await self.read()
                        if not chunk:
                            break
                        discarded += len(chunk)
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()


class _Cycle:
    """One request and its response: the ASGI ``scope``, ``receive`` and ``send`` of one app call."""

    __slots__ = (
        "_began",
        "_wake",
        "answered",
        "body_done",
        "complete",
        "conn",
        "head",
        "keep",
        "lost",
        "received",
        "request",
        "scope",
        "started",
        "status",
    )

    def __init__(self, conn: _Connection, request: h11.Request) -> None:
        self.conn = conn
        self.request = request
        self._began = time.perf_counter()
        raw_path, query = _split_target(request.target)
        path = unquote_to_bytes(raw_path).decode("utf-8", "replace") if b"%" in raw_path else raw_path.decode("ascii")
        method = request.method.decode("ascii")
        self.head = method == "HEAD"
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": _VERSIONS[request.http_version],
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": list(request.headers),  # h11 gives (lower-cased name, value) pairs of bytes
            "client": conn.client,
            "server": conn.server_address,
        }
        self.started = False  # the response head was sent (by the app or for it)
        self.complete = False  # the whole response was sent
        self.answered = False  # the server answered for the app (413, 400): the app's messages are dropped
        self.lost = False  # the client went away
        self.body_done = False  # the whole request body was handed to the app
        self.keep = True  # the connection may serve another request afterwards
        self.received = 0
        self.status = 0
        self._wake: anyio.CancelScope | None = None

    # -- the app call --------------------------------------------------------------------

    async def run(self) -> bool:
        """Run the app for this request; ``True`` if the connection can serve another one."""
        server = self.conn.server
        try:
            if self._declares_too_much():
                await self._answer(413, "Request body too large")
            else:
                await self._call_app()
        finally:
            if server.access_log is not None and self.status:
                scope = self.scope
                log_access(
                    server.access_log,
                    scope["client"],
                    scope["method"],
                    scope["path"],
                    scope["query_string"],
                    scope["http_version"],
                    self.status,
                    time.perf_counter() - self._began,
                )
        if not self.keep or self.lost or not self.complete or server.exiting:
            return False
        conn = self.conn.h11
        if conn.our_state is h11.MUST_CLOSE:
            return False
        if conn.their_state is h11.SEND_BODY:
            return await self._drain()
        return conn.their_state is h11.DONE

    def _declares_too_much(self) -> bool:
        """A declared ``Content-Length`` over the limit is refused before the app sees the request."""
        limit = self.conn.server.max_body_size
        if not limit:
            return False
        for name, value in self.request.headers:
            if name == b"content-length":
                return int(value) > limit  # h11 checked it is a number
        return False

    async def _call_app(self) -> None:
        server, scope = self.conn.server, self.scope
        if server.log.isEnabledFor(logging.DEBUG) and any(name == b"upgrade" for name, _ in self.request.headers):
            server.log.debug("http: %s %s asks for an upgrade, served as plain HTTP", scope["method"], scope["path"])
        try:
            await server.app(scope, self.receive, self.send)
        except Exception:
            server.log.exception("http: the ASGI app failed on %s %s", scope["method"], scope["path"])
            if not self.started:
                await self._answer(500, "Internal Server Error")
            self.keep = self.keep and self.complete
            return
        if self.answered or self.lost:
            return
        if not self.started:
            server.log.error(
                "http: the ASGI app returned without a response to %s %s; answered 500", scope["method"], scope["path"]
            )
            await self._answer(500, "Internal Server Error")
        elif not self.complete:
            server.log.error(
                "http: the ASGI app returned without completing its response to %s %s; connection closed",
                scope["method"],
                scope["path"],
            )
            self.keep = False

    async def _answer(self, status: int, text: str) -> None:
        """Respond for the app with a plain-text ``status``, closing the connection after it (unless a 500)."""
        conn = self.conn.h11
        if self.started or conn.our_state is not h11.SEND_RESPONSE:
            self.keep = False
            return
        close = status != 500 or self.conn.server.exiting
        response, body = _plain(status, text, close=close)
        self.started = self.complete = True
        self.status = status
        self.keep = self.keep and not close
        self._wake_receiver()
        try:
            data = conn.send(response)
            if not self.head:
                data += conn.send(h11.Data(data=body))
            data += conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            self.keep = False
            return
        if not await self.conn.write(data):
            self.lost = True

    def _wake_receiver(self) -> None:
        if self._wake is not None:
            self._wake.cancel()

    # -- ASGI receive --------------------------------------------------------------------

    async def receive(self) -> Message:
        """The next ``http.request`` chunk; ``http.disconnect`` once the client left or the response is complete."""
        if self.lost or self.complete or self.answered:
            return {"type": "http.disconnect"}
        if self.body_done:
            await self._wait_for_disconnect()
            return {"type": "http.disconnect"}
        conn = self.conn.h11
        if conn.they_are_waiting_for_100_continue and not self.started:
            response = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
            if not await self.conn.write(conn.send(response)):
                self.lost = True
                return {"type": "http.disconnect"}
        chunks: list[bytes] = []
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                return await self._refuse(exc.error_status_hint, f"Invalid request body: {exc}")
            if isinstance(event, h11.Data):
                self.received += len(event.data)
                limit = self.conn.server.max_body_size
                if limit and self.received > limit:
                    return await self._refuse(413, "Request body too large")
                chunks.append(bytes(event.data))
                continue
            if isinstance(event, h11.EndOfMessage):
                self.body_done = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            if event is h11.NEED_DATA:
                if chunks:  # hand over what arrived; read more at the next receive()
                    return {"type": "http.request", "body": b"".join(chunks), "more_body": True}
                data = await self.conn.read()
                if not data:
                    self.lost = True
                    return {"type": "http.disconnect"}
                conn.receive_data(data)
                continue
            self.lost = True  # ConnectionClosed
            return {"type": "http.disconnect"}

    async def _refuse(self, status: int, text: str) -> Message:
        """The body broke a limit or the protocol: answer for the app if it can, close the connection."""
        self.keep = False
        if not self.started:
            await self._answer(status, text)
            self.answered = True
        return {"type": "http.disconnect"}

    async def _wait_for_disconnect(self) -> None:
        """Block until the client closes (``self.lost``) or the response completes (cancelled by ``send``)."""
        conn = self.conn.h11
        with anyio.CancelScope() as self._wake:
            try:
                while len(conn.trailing_data[0]) < _PIPELINE_BYTES:
                    data = await self.conn.read()
                    if not data:
                        self.lost = True
                        return
                    conn.receive_data(data)  # a pipelined request: kept for the next cycle
                await anyio.sleep_forever()  # enough buffered: stop reading (back-pressure) until the response is done
            finally:
                self._wake = None

    # -- ASGI send -----------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Write the app's ``http.response.start`` / ``http.response.body`` messages."""
        kind = message["type"]
        if self.answered or self.lost:
            if kind not in (_START, _BODY):
                raise RuntimeError(f"unexpected ASGI message {kind!r} on an HTTP connection")
            return  # the client is gone or was answered for the app: dropped, as uvicorn does
        if not self.started:
            if kind != _START:
                raise RuntimeError(f"expected ASGI message 'http.response.start', got {kind!r}")
            await self._start(message)
        elif self.complete:
            raise RuntimeError(f"unexpected ASGI message {kind!r}: the response is already complete")
        elif kind != _BODY:
            raise RuntimeError(f"expected ASGI message 'http.response.body', got {kind!r}")
        else:
            await self._body(message)

    async def _start(self, message: Message) -> None:
        status = message.get("status")
        if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
            raise RuntimeError(f"http.response.start: status must be an int from 200 to 599, got {status!r}")
        headers: list[tuple[bytes, bytes]] = [(b"date", _date())]
        headers.extend(message.get("headers", ()))
        if self.conn.server.exiting:
            headers.append((b"connection", b"close"))
        try:
            response = h11.Response(status_code=status, headers=headers, reason=_PHRASES.get(status, b""))
        except (h11.LocalProtocolError, TypeError, ValueError) as exc:  # checked before the connection's state moves
            raise RuntimeError(f"http.response.start: invalid headers: {exc}") from None
        try:
            data = self.conn.h11.send(response)
        except h11.LocalProtocolError as exc:
            self.keep = False
            raise RuntimeError(f"http.response.start: {exc}") from None
        self.started = True
        self.status = status
        if not await self.conn.write(data):
            self.lost = True

    async def _body(self, message: Message) -> None:
        body = message.get("body", b"")
        more = bool(message.get("more_body", False))
        if not isinstance(body, bytes):
            if not isinstance(body, bytearray | memoryview):
                raise RuntimeError(f"http.response.body: body must be bytes, got {type(body).__name__}")
            body = bytes(body)
        conn = self.conn.h11
        try:
            data = conn.send(h11.Data(data=body)) if body and not self.head else b""
            if not more:
                data += conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:  # e.g. more or fewer bytes than the Content-Length it declared
            self.keep = False
            raise RuntimeError(f"http.response.body: {exc}") from None
        if not more:
            self.complete = True
            self._wake_receiver()
        if data and not await self.conn.write(data):
            self.lost = True

    # -- after the response --------------------------------------------------------------

    async def _drain(self) -> bool:
        """Read and discard a short request body the app did not read, so the connection can be reused."""
        conn, budget = self.conn.h11, _DRAIN_BYTES
        with anyio.move_on_after(self.conn.server.keep_alive_timeout):
            while True:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError:
                    return False
                if isinstance(event, h11.EndOfMessage):
                    return True
                if isinstance(event, h11.Data):
                    budget -= len(event.data)
                    if budget < 0:
                        return False
                    continue
                if event is not h11.NEED_DATA:
                    return False
                data = await self.conn.read()
                if not data:
                    self.lost = True
                    return False
                conn.receive_data(data)
        return False
