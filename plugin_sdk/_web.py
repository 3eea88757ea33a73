"""A tiny plain-ASGI toolkit for the apps plugins mount: request, response, route table.

A plugin that serves a few JSON or HTML endpoints through the ``http_mounts``
hook writes handlers ``async def handler(request: HttpRequest) -> HttpResponse``
and turns a table of them into an ASGI app with :class:`HttpRoutes`::

    app = HttpRoutes({("GET", "/live"): live, ("GET", "/ready"): ready})
    return [HttpMount(app, prefix="/health")]

Why not a framework: importing Starlette's routing and applications costs a
process about 2.6 MiB of RSS (it pulls in hashlib and OpenSSL, email, json,
random, mimetypes, ...), more than the builtin apps that served through it.  This
module imports nothing the kernel has not loaded already (``orjson`` only when
a JSON response is made).  It is not a framework either: exact paths only, no
path parameters, middleware, forms, cookies or streaming.  Anything richer is a
plugin's own choice: any ASGI 3 app can be an :class:`HttpMount`, a Starlette
app included, and these apps follow the same ASGI conventions (the mount in
``root_path``, the path full or relative to it), so they mount under Starlette
too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Mapping
from typing import Final
from typing import TypeAlias
from typing import overload
from urllib.parse import parse_qs

import attrs

from ._errors import OrionError
from ._http import Message
from ._http import Receive
from ._http import Scope
from ._http import Send

#: the default limit of :meth:`HttpRequest.body`, in bytes (1 MiB)
DEFAULT_BODY_LIMIT: Final = 1 << 20
_TEXT: Final = "text/plain; charset=utf-8"
_HTML: Final = "text/html; charset=utf-8"
_JSON: Final = "application/json"
#: headers HttpResponse computes itself, from ``body`` and ``media_type``
_COMPUTED: Final = frozenset({"content-length", "content-type"})


class HttpError(OrionError):
    """Raised in a handler (or by :meth:`HttpRequest.body`) to answer ``status`` with a text body.

    :class:`HttpRoutes` turns it into a ``text/plain`` response whose body is
    ``detail`` (``HTTP <status>`` when empty); it is not logged.

    :param status: the HTTP status, e.g. ``400`` or ``413``.
    :param detail: what the client is told, one line.
    :param headers: extra response headers, e.g. ``{"retry-after": "5"}``.
    """

    def __init__(self, status: int, detail: str = "", *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail or f"HTTP {status}")
        self.status = status
        self.detail = detail
        self.headers: Mapping[str, str] = dict(headers or {})


class HttpRequest:
    """One HTTP request, as an :class:`HttpRoutes` handler gets it.

    :param scope: the ASGI ``http`` scope.
    :param receive: the ASGI ``receive`` callable, read by :meth:`body`.
    """

    __slots__ = ("_body", "_headers", "_query", "_receive", "method", "path", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        #: the ASGI scope, for anything this class does not wrap
        self.scope = scope
        #: ``"GET"``, ``"POST"``, ... (upper case, as ASGI gives it)
        self.method: str = scope.get("method", "GET")
        #: the path relative to the mount (see :func:`mount_path`): ``"/live"`` under ``/health``
        self.path = mount_path(scope)
        self._receive = receive
        self._query: dict[str, list[str]] | None = None
        self._headers: dict[str, str] | None = None
        self._body: bytes | None = None

    def __repr__(self) -> str:
        return f"<HttpRequest {self.method} {self.root_path}{self.path}>"

    @property
    def root_path(self) -> str:
        """Where the app is mounted (``scope["root_path"]``), e.g. ``"/health"``; ``""`` at the root."""
        root: str = self.scope.get("root_path", "")
        return root

    @property
    def query(self) -> Mapping[str, list[str]]:
        """The query string's parameters: name -> every value, in order (``urllib.parse.parse_qs``,
        blank values kept, so ``?a=&a=2`` is ``{"a": ["", "2"]}``)."""
        if self._query is None:
            raw: bytes = self.scope.get("query_string", b"")
            self._query = parse_qs(raw.decode("latin-1"), keep_blank_values=True) if raw else {}
        return self._query

    @overload
    def query_param(self, name: str) -> str | None: ...
    @overload
    def query_param(self, name: str, default: str) -> str: ...
    def query_param(self, name: str, default: str | None = None) -> str | None:
        """The first value of query parameter ``name``, or ``default`` when it is absent."""
        values = self.query.get(name)
        return values[0] if values else default

    @property
    def headers(self) -> Mapping[str, str]:
        """The request headers by lower-case name (latin-1 decoded); repeated ones joined with ``", "``."""
        if self._headers is None:
            found: dict[str, str] = {}
            for raw_name, raw_value in self.scope.get("headers", ()):
                key, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
                found[key] = f"{found[key]}, {value}" if key in found else value
            self._headers = found
        return self._headers

    @overload
    def header(self, name: str) -> str | None: ...
    @overload
    def header(self, name: str, default: str) -> str: ...
    def header(self, name: str, default: str | None = None) -> str | None:
        """The value of header ``name`` (any case), or ``default`` when the request has none."""
        return self.headers.get(name.lower(), default)

    async def body(self, *, limit: int = DEFAULT_BODY_LIMIT) -> bytes:
        """The whole request body (read once, then cached).

        :param limit: the most bytes accepted.
        :raises HttpError: 413 when the body (or its ``content-length``) exceeds
            ``limit``; 400 when the client disconnects before the end.
        """
        if self._body is not None:
            return self._body
        declared = self.header("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HttpError(413, f"request body too large: {declared} bytes, at most {limit} accepted")
        chunks: list[bytes] = []
        size = 0
        while True:
            message: Message = await self._receive()
            kind = message["type"]
            if kind == "http.disconnect":
                raise HttpError(400, "the client disconnected before the end of the request body")
            if kind != "http.request":
                continue
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HttpError(413, f"request body too large: more than {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        self._body = b"".join(chunks)
        return self._body


def mount_path(scope: Scope) -> str:
    """The request path relative to the app's mount: ``scope["path"]`` minus ``scope["root_path"]``.

    Under the SDK's mount contract (:class:`HttpMount`) ``path`` is the full
    path; a server that passes it already relative (``root_path`` not a prefix
    of it) is taken as is.  The mount itself (``/health`` under ``/health``) is
    ``"/"``, like ``/health/``.
    """
    path: str = scope.get("path", "") or "/"
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        rest = path[len(root) :]
        if not rest:
            return "/"
        if rest[0] == "/":
            return rest
    return path


def _check_headers(
    instance: HttpResponse, attribute: attrs.Attribute[Mapping[str, str]], value: Mapping[str, str]
) -> None:
    computed = sorted(name for name in value if name.lower() in _COMPUTED)
    if computed:
        raise ValueError(f"HttpResponse computes {', '.join(computed)} itself: set media_type (and body) instead")


@attrs.frozen
class HttpResponse:
    """What a handler answers: status, body, content type and extra headers.

    ``content-type`` comes from ``media_type`` (none when it is ``None``) and
    ``content-length`` from ``body`` (none for 1xx, 204 and 304); ``headers``
    adds the rest (names in any case).  A response is an ASGI app too:
    ``await response(scope, receive, send)`` sends it (without the body for
    ``HEAD``).
    """

    status: int = 200
    body: bytes = attrs.field(default=b"", repr=False)
    media_type: str | None = None
    #: extra headers, e.g. ``{"cache-control": "no-store"}``; not content-type or content-length
    headers: Mapping[str, str] = attrs.field(factory=dict, validator=_check_headers)

    @classmethod
    def json(cls, data: object, *, status: int = 200, headers: Mapping[str, str] | None = None) -> HttpResponse:
        """``data`` serialized with orjson, as ``application/json``."""
        import orjson  # here: a kernel that never answers JSON over HTTP never loads it

        return cls(status, orjson.dumps(data), _JSON, dict(headers or {}))

    @classmethod
    def text(
        cls, text: str, *, status: int = 200, media_type: str = _TEXT, headers: Mapping[str, str] | None = None
    ) -> HttpResponse:
        """``text`` encoded as UTF-8, as ``text/plain; charset=utf-8`` (or ``media_type``)."""
        return cls(status, text.encode(), media_type, dict(headers or {}))

    @classmethod
    def html(cls, text: str, *, status: int = 200, headers: Mapping[str, str] | None = None) -> HttpResponse:
        """``text`` encoded as UTF-8, as ``text/html; charset=utf-8``."""
        return cls(status, text.encode(), _HTML, dict(headers or {}))

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The ASGI ``headers`` of the response start: content type and length, then :attr:`headers`."""
        raw: list[tuple[bytes, bytes]] = []
        if self.media_type is not None:
            raw.append((b"content-type", self.media_type.encode("latin-1")))
        if self.status >= 200 and self.status not in (204, 304):
            raw.append((b"content-length", str(len(self.body)).encode("latin-1")))
        raw.extend((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in self.headers.items())
        return raw

    async def send(self, send: Send, *, head: bool = False) -> None:
        """Send the response through ASGI ``send``; ``head``: the headers only (a ``HEAD`` request)."""
        await send({"type": "http.response.start", "status": self.status, "headers": self.raw_headers()})
        await send({"type": "http.response.body", "body": b"" if head else self.body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.send(send, head=scope.get("method") == "HEAD")


#: An :class:`HttpRoutes` handler.
HttpHandler: TypeAlias = Callable[[HttpRequest], Awaitable[HttpResponse]]


class HttpRoutes:
    """An ASGI app from a table of ``(method, path) -> handler``.

    ``path`` is exact and relative to the mount (``"/"`` is the mount itself,
    ``/health`` and ``/health/`` alike); there are no path parameters and no
    slash redirects (``/live/`` is not ``/live``).  An unknown path answers
    404, a known path with another method 405 with an ``allow`` header, and a
    ``GET`` route answers ``HEAD`` too (same headers, no body).  A handler
    that raises :class:`HttpError` answers its status; one that raises
    anything else is logged on ``log`` and answered 500.  ``lifespan`` is
    acknowledged and a websocket refused.

    :param routes: ``{("GET", "/live"): live, ...}``; methods upper case, paths starting with ``/``.
    :param headers: added to every response, the 404/405/500 ones included
        (a handler's own headers win), e.g. ``{"x-content-type-options": "nosniff"}``.
    :param log: where a failing handler is logged; default ``orion.web``.
    :raises ValueError: a method or path is malformed, or ``headers`` names content-type or content-length.
    """

    def __init__(
        self,
        routes: Mapping[tuple[str, str], HttpHandler],
        *,
        headers: Mapping[str, str] | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        table: dict[str, dict[str, HttpHandler]] = {}
        for (method, path), handler in routes.items():
            if not method or not method.isalpha() or not method.isupper():
                raise ValueError(f"route {method!r} {path!r}: the method must be an upper-case token like 'GET'")
            if not path.startswith("/"):
                raise ValueError(f"route {method} {path!r}: the path must start with '/'")
            table.setdefault(path, {})[method] = handler
        for methods in table.values():
            if "GET" in methods:
                methods.setdefault("HEAD", methods["GET"])
        self._table = table
        self._allow = {path: ", ".join(methods) for path, methods in table.items()}
        self._headers = {name.lower(): value for name, value in (headers or {}).items()}
        HttpResponse(headers=self._headers)  # the same check as on a response: not content-type or -length
        self._log = log if log is not None else logging.getLogger("orion.web")

    def __repr__(self) -> str:
        listed = ", ".join(f"{m} {p}" for p, methods in self._table.items() for m in methods if m != "HEAD")
        return f"<HttpRoutes {listed}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind != "http":
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        request = HttpRequest(scope, receive)
        response = await self._answer(request)
        if self._headers:
            own = {name.lower(): value for name, value in response.headers.items()}
            response = attrs.evolve(response, headers={**self._headers, **own})
        await response.send(send, head=request.method == "HEAD")

    async def _answer(self, request: HttpRequest) -> HttpResponse:
        methods = self._table.get(request.path)
        if methods is None:
            return HttpResponse.text("not found\n", status=404)
        handler = methods.get(request.method)
        if handler is None:
            allow = self._allow[request.path]
            return HttpResponse.text(f"method not allowed: use {allow}\n", status=405, headers={"allow": allow})
        try:
            response: object = await handler(request)  # checked below: plugins are not always typed
        except HttpError as exc:
            detail = exc.detail or f"HTTP {exc.status}"
            return HttpResponse.text(detail + "\n", status=exc.status, headers=exc.headers)
        except Exception:
            self._log.exception("%s %s%s: the handler failed", request.method, request.root_path, request.path)
            return HttpResponse.text("internal server error\n", status=500)
        if not isinstance(response, HttpResponse):
            self._log.error(
                "%s %s%s: the handler returned %s, expected an HttpResponse",
                request.method,
                request.root_path,
                request.path,
                type(response).__name__,
            )
            return HttpResponse.text("internal server error\n", status=500)
        return response


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
