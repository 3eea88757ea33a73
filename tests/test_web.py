"""The SDK's plain-ASGI helpers: HttpRequest, HttpResponse, HttpRoutes, mount_path.

Most tests drive the app directly with a fake ``receive``/``send`` so that
every ASGI message is visible; one goes through httpx's ASGI transport and
one through Starlette's ``Mount``, as other servers would call it.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any

import attrs
import httpx
import orjson
import pytest

import plugin_sdk
from plugin_sdk import ASGIApp
from plugin_sdk import HttpError
from plugin_sdk import HttpRequest
from plugin_sdk import HttpResponse
from plugin_sdk import HttpRoutes
from plugin_sdk import Message
from plugin_sdk import mount_path

pytestmark = pytest.mark.anyio


# -- a fake ASGI server ---------------------------------------------------------------------


@attrs.frozen
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    messages: list[Message]

    def header(self, name: str) -> str | None:
        found = [v.decode("latin-1") for k, v in self.headers if k == name.encode()]
        assert len(found) <= 1, f"{name} sent {len(found)} times"
        return found[0] if found else None

    @property
    def names(self) -> list[bytes]:
        return [k for k, _ in self.headers]


def scope_for(
    method: str = "GET",
    path: str = "/",
    *,
    root_path: str = "",
    query: bytes = b"",
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": root_path,
        "query_string": query,
        "headers": list(headers),
        "server": ("127.0.0.1", 8470),
        "client": ("127.0.0.1", 50000),
    }


def receiver(chunks: Sequence[bytes] = (b"",), *, disconnect: bool = False) -> Any:
    messages: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1} for i, chunk in enumerate(chunks)
    ]
    if disconnect:
        messages[-1]["more_body"] = True
        messages.append({"type": "http.disconnect"})

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return receive


async def call(
    app: ASGIApp, method: str = "GET", path: str = "/", *, chunks: Sequence[bytes] = (b"",), **scope: Any
) -> Answer:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope_for(method, path, **scope), receiver(chunks), send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"], sent
    start, body = sent
    return Answer(start["status"], list(start["headers"]), body["body"], sent)


async def ok(request: HttpRequest) -> HttpResponse:
    return HttpResponse.text("ok\n")


# -- mount_path --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "root_path", "expected"),
    [
        ("/health/live", "/health", "/live"),  # the SDK's contract: the full path, the mount in root_path
        ("/live", "/health", "/live"),  # a server that passes the path already relative
        ("/health", "/health", "/"),  # the mount itself, with or without its slash
        ("/health/", "/health", "/"),
        ("/healthz", "/health", "/healthz"),  # not under the mount: a prefix of the name is not a mount
        ("/x", "", "/x"),
        ("", "", "/"),
    ],
)
def test_mount_path(path: str, root_path: str, expected: str) -> None:
    assert mount_path({"path": path, "root_path": root_path}) == expected


# -- HttpRequest --------------------------------------------------------------------------------


async def test_request_method_path_and_root_path() -> None:
    request = HttpRequest(scope_for("POST", "/api/things", root_path="/api"), receiver())
    assert (request.method, request.path, request.root_path) == ("POST", "/things", "/api")
    assert repr(request) == "<HttpRequest POST /api/things>"
    assert request.scope["server"] == ("127.0.0.1", 8470)


async def test_request_query_parameters() -> None:
    query = b"format=html&format=json&empty=&name=a%20b+c&caf%C3%A9=%C3%A9t%C3%A9"
    request = HttpRequest(scope_for(query=query), receiver())
    assert request.query == {
        "format": ["html", "json"],
        "empty": [""],
        "name": ["a b c"],
        "café": ["été"],
    }
    assert request.query_param("format") == "html"  # the first value
    assert request.query_param("empty") == ""
    assert request.query_param("missing") is None
    assert request.query_param("missing", "dflt") == "dflt"
    assert HttpRequest(scope_for(), receiver()).query == {}


async def test_request_headers_by_lower_case_name() -> None:
    raw = [(b"accept", b"text/html"), (b"x-forwarded-for", b"10.0.0.1"), (b"x-forwarded-for", b"10.0.0.2")]
    request = HttpRequest(scope_for(headers=raw), receiver())
    assert request.header("Accept") == "text/html"
    assert request.header("accept") == "text/html"
    assert request.header("X-Forwarded-For") == "10.0.0.1, 10.0.0.2"  # repeated: joined, in order
    assert request.header("if-none-match") is None
    assert request.header("if-none-match", "*") == "*"
    assert request.headers == {"accept": "text/html", "x-forwarded-for": "10.0.0.1, 10.0.0.2"}


async def test_request_body_is_read_in_chunks_and_cached() -> None:
    request = HttpRequest(scope_for("POST"), receiver([b"hello ", b"", b"world"]))
    assert await request.body() == b"hello world"
    assert await request.body() == b"hello world"  # the receive queue is empty now: cached
    assert await HttpRequest(scope_for("POST"), receiver()).body() == b""


async def test_request_body_over_the_limit_is_413() -> None:
    declared = HttpRequest(scope_for("POST", headers=[(b"content-length", b"11")]), receiver([b"hello world"]))
    with pytest.raises(HttpError) as caught:
        await declared.body(limit=10)
    assert caught.value.status == 413
    assert "11 bytes" in caught.value.detail

    streamed = HttpRequest(scope_for("POST"), receiver([b"hello", b" ", b"world"]))
    with pytest.raises(HttpError) as caught:
        await streamed.body(limit=10)
    assert caught.value.status == 413
    assert await HttpRequest(scope_for("POST"), receiver([b"0123456789"])).body(limit=10) == b"0123456789"


async def test_request_body_when_the_client_disconnects_is_400() -> None:
    request = HttpRequest(scope_for("POST"), receiver([b"partial"], disconnect=True))
    with pytest.raises(HttpError) as caught:
        await request.body()
    assert caught.value.status == 400
    assert isinstance(caught.value, plugin_sdk.OrionError)


# -- HttpResponse -------------------------------------------------------------------------------


def test_response_helpers() -> None:
    data = {"status": "ok", "n": [1, 2.5, None], "name": "café"}
    json = HttpResponse.json(data, status=503, headers={"Cache-Control": "no-store"})
    assert (json.status, json.media_type, orjson.loads(json.body)) == (503, "application/json", data)
    assert json.raw_headers() == [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(json.body)).encode()),
        (b"cache-control", b"no-store"),  # names are sent in lower case
    ]
    text = HttpResponse.text("héllo\n")
    assert (text.status, text.body, text.media_type) == (200, "héllo\n".encode(), "text/plain; charset=utf-8")
    markdown = HttpResponse.text("# hi", media_type="text/markdown; charset=utf-8")
    assert markdown.media_type == "text/markdown; charset=utf-8"
    page = HttpResponse.html("<p>hi</p>", status=201)
    assert (page.status, page.body, page.media_type) == (201, b"<p>hi</p>", "text/html; charset=utf-8")
    assert HttpResponse().raw_headers() == [(b"content-length", b"0")]  # no media type: no content-type


@pytest.mark.parametrize("status", [101, 204, 304])
def test_responses_without_a_body_have_no_content_length(status: int) -> None:
    assert HttpResponse(status, headers={"ETag": '"x"'}).raw_headers() == [(b"etag", b'"x"')]


@pytest.mark.parametrize("name", ["Content-Type", "content-length"])
def test_response_refuses_the_headers_it_computes(name: str) -> None:
    with pytest.raises(ValueError, match="computes"):
        HttpResponse(headers={name: "x"})


async def test_a_response_is_an_asgi_app() -> None:
    response = HttpResponse.text("hi\n", headers={"x-one": "1"})
    got = await call(response)
    assert (got.status, got.body, got.header("x-one"), got.header("content-length")) == (200, b"hi\n", "1", "3")
    head = await call(response, "HEAD")
    assert (head.body, head.header("content-length")) == (b"", "3")


# -- HttpRoutes ---------------------------------------------------------------------------------


async def test_routes_dispatch_on_the_path_relative_to_the_mount() -> None:
    async def hello(request: HttpRequest) -> HttpResponse:
        return HttpResponse.json({"path": request.path, "who": request.query_param("who", "world")})

    app = HttpRoutes({("GET", "/"): ok, ("GET", "/hello"): hello})
    assert orjson.loads((await call(app, "GET", "/hello", query=b"who=ada")).body) == {"path": "/hello", "who": "ada"}
    full = await call(app, "GET", "/greeter/hello", root_path="/greeter")  # the full path, the mount in root_path
    assert orjson.loads(full.body) == {"path": "/hello", "who": "world"}
    for path in ("/greeter", "/greeter/"):  # the mount itself is "/", with or without the slash
        assert (await call(app, "GET", path, root_path="/greeter")).body == b"ok\n"


async def test_unknown_path_is_404_and_there_are_no_slash_redirects() -> None:
    app = HttpRoutes({("GET", "/live"): ok})
    for path in ("/nope", "/live/", "/liv", "/live/x"):
        got = await call(app, "GET", path)
        assert got.status == 404, path
        assert got.header("content-type") == "text/plain; charset=utf-8"
        assert got.header("location") is None
        assert got.body == b"not found\n"
    assert (await call(app, "POST", "/nope")).status == 404


async def test_wrong_method_is_405_with_allow() -> None:
    async def create(request: HttpRequest) -> HttpResponse:
        return HttpResponse.json({"got": (await request.body()).decode()}, status=201)

    app = HttpRoutes({("GET", "/live"): ok, ("GET", "/things"): ok, ("POST", "/things"): create})
    got = await call(app, "POST", "/live")
    assert (got.status, got.header("allow")) == (405, "GET, HEAD")
    assert got.body == b"method not allowed: use GET, HEAD\n"
    got = await call(app, "DELETE", "/things")
    assert (got.status, got.header("allow")) == (405, "GET, POST, HEAD")
    created = await call(app, "POST", "/things", chunks=[b"a", b"b"])
    assert (created.status, orjson.loads(created.body)) == (201, {"got": "ab"})


async def test_head_is_answered_by_the_get_route_without_a_body() -> None:
    calls: list[str] = []

    async def data(request: HttpRequest) -> HttpResponse:
        calls.append(request.method)
        return HttpResponse.json({"big": "x" * 100}, headers={"cache-control": "no-store"})

    app = HttpRoutes({("GET", "/data"): data})
    get, head = await call(app, "GET", "/data"), await call(app, "HEAD", "/data")
    assert calls == ["GET", "HEAD"]  # the handler sees the real method
    assert head.status == 200 and head.body == b""
    assert head.headers == get.headers  # content-length of the GET body included
    assert int(get.header("content-length") or 0) == len(get.body) > 100


async def test_an_explicit_head_route_wins() -> None:
    async def head(request: HttpRequest) -> HttpResponse:
        return HttpResponse(headers={"x-head": "1"})

    app = HttpRoutes({("GET", "/x"): ok, ("HEAD", "/x"): head})
    assert (await call(app, "HEAD", "/x")).header("x-head") == "1"
    assert (await call(app, "GET", "/x")).body == b"ok\n"


async def test_a_raising_handler_is_500_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def boom(request: HttpRequest) -> HttpResponse:
        raise RuntimeError("handler exploded")

    with caplog.at_level(logging.ERROR):
        got = await call(HttpRoutes({("GET", "/boom"): boom}), "GET", "/api/boom", root_path="/api")
        custom = logging.getLogger("orion.plugin.thing")
        assert (await call(HttpRoutes({("GET", "/boom"): boom}, log=custom), "GET", "/boom")).status == 500
    assert (got.status, got.body) == (500, b"internal server error\n")
    assert b"exploded" not in got.body  # the client is told nothing of the internals
    first, second = (r for r in caplog.records if "the handler failed" in r.getMessage())
    assert first.name == "orion.web" and first.getMessage() == "GET /api/boom: the handler failed"
    assert first.exc_info is not None and isinstance(first.exc_info[1], RuntimeError)
    assert second.name == "orion.plugin.thing"


async def test_a_handler_returning_something_else_is_500_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def wrong(request: HttpRequest) -> Any:
        return {"not": "a response"}

    with caplog.at_level(logging.ERROR, logger="orion.web"):
        got = await call(HttpRoutes({("GET", "/"): wrong}))
    assert got.status == 500
    assert "returned dict, expected an HttpResponse" in caplog.text


async def test_http_error_answers_its_status_and_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def limited(request: HttpRequest) -> HttpResponse:
        raise HttpError(429, "slow down", headers={"Retry-After": "5"})

    async def bare(request: HttpRequest) -> HttpResponse:
        raise HttpError(409)

    async def upload(request: HttpRequest) -> HttpResponse:
        return HttpResponse.text(f"{len(await request.body(limit=4))}\n")

    app = HttpRoutes({("GET", "/limited"): limited, ("GET", "/bare"): bare, ("POST", "/upload"): upload})
    with caplog.at_level(logging.DEBUG):
        got = await call(app, "GET", "/limited")
        assert (got.status, got.body, got.header("retry-after")) == (429, b"slow down\n", "5")
        assert (await call(app, "GET", "/bare")).body == b"HTTP 409\n"
        assert (await call(app, "POST", "/upload", chunks=[b"1234"])).body == b"4\n"
        assert (await call(app, "POST", "/upload", chunks=[b"12", b"345"])).status == 413
    assert not [r for r in caplog.records if r.name == "orion.web"]


async def test_default_headers_go_on_every_response() -> None:
    async def own(request: HttpRequest) -> HttpResponse:
        return HttpResponse.text("own\n", headers={"Referrer-Policy": "same-origin", "ETag": '"1"'})

    async def boom(request: HttpRequest) -> HttpResponse:
        raise RuntimeError("x")

    common = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
    app = HttpRoutes({("GET", "/"): ok, ("GET", "/own"): own, ("GET", "/boom"): boom}, headers=common)
    for method, path in [("GET", "/"), ("GET", "/nope"), ("POST", "/"), ("GET", "/boom"), ("HEAD", "/")]:
        got = await call(app, method, path)
        assert got.header("x-content-type-options") == "nosniff", (method, path)
        assert got.header("referrer-policy") == "no-referrer", (method, path)
    mine = await call(app, "GET", "/own")  # the handler's own value wins, whatever the case of its name
    assert (mine.header("referrer-policy"), mine.header("etag"), mine.header("x-content-type-options")) == (
        "same-origin",
        '"1"',
        "nosniff",
    )


async def test_lifespan_is_acknowledged_and_websockets_refused() -> None:
    app = HttpRoutes({("GET", "/"): ok})
    incoming: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    sent.clear()
    await app({**scope_for(), "type": "websocket"}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1000}]
    sent.clear()
    await app({"type": "something.else"}, receive, send)
    assert sent == []


@pytest.mark.parametrize(("method", "path"), [("get", "/x"), ("", "/x"), ("GET /x", "/x"), ("GET", "x"), ("GET", "")])
def test_malformed_routes_are_refused(method: str, path: str) -> None:
    with pytest.raises(ValueError, match="route"):
        HttpRoutes({(method, path): ok})


def test_default_headers_may_not_name_the_computed_ones() -> None:
    with pytest.raises(ValueError, match="computes"):
        HttpRoutes({("GET", "/"): ok}, headers={"Content-Type": "text/html"})


def test_repr_lists_the_routes() -> None:
    assert repr(HttpRoutes({("GET", "/a"): ok, ("POST", "/b"): ok})) == "<HttpRoutes GET /a, POST /b>"


# -- through real clients and servers -------------------------------------------------------------


async def test_through_httpx_asgi_transport() -> None:
    async def echo(request: HttpRequest) -> HttpResponse:
        payload = orjson.loads(await request.body()) if request.method == "POST" else None
        return HttpResponse.json(
            {
                "method": request.method,
                "path": request.path,
                "root_path": request.root_path,
                "query": dict(request.query),
                "agent": request.header("user-agent"),
                "payload": payload,
            },
            headers={"cache-control": "no-store"},
        )

    app = HttpRoutes({("GET", "/echo"): echo, ("POST", "/echo"): echo})
    transport = httpx.ASGITransport(app=app, root_path="/svc")
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=5.0) as client:
        got = await client.get("/echo", params={"a": ["1", "2"]}, headers={"User-Agent": "probe/1"})
        assert got.status_code == 200
        assert got.headers["content-type"] == "application/json"
        assert got.headers["cache-control"] == "no-store"
        assert got.json() == {
            "method": "GET",
            "path": "/echo",
            "root_path": "/svc",
            "query": {"a": ["1", "2"]},
            "agent": "probe/1",
            "payload": None,
        }
        posted = await client.post("/echo", json={"x": [1, "é"]})
        assert posted.json()["payload"] == {"x": [1, "é"]}
        head = await client.head("/echo")
        assert head.status_code == 200 and head.content == b""
        assert (await client.get("/echo/")).status_code == 404
        refused = await client.put("/echo")
        assert (refused.status_code, refused.headers["allow"]) == (405, "GET, POST, HEAD")


async def test_under_starlettes_mount() -> None:
    # Starlette stays a test dependency: an HttpRoutes app must work where a Starlette app would.
    from starlette.routing import Mount
    from starlette.routing import Router

    async def where(request: HttpRequest) -> HttpResponse:
        return HttpResponse.json({"path": request.path, "root_path": request.root_path})

    server = Router(routes=[Mount("/svc", app=HttpRoutes({("GET", "/where"): where}))])
    transport = httpx.ASGITransport(app=server)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=5.0) as client:
        assert (await client.get("/svc/where")).json() == {"path": "/where", "root_path": "/svc"}
        assert (await client.get("/svc/nope")).status_code == 404


def test_the_public_names() -> None:
    for name in ("HttpError", "HttpHandler", "HttpRequest", "HttpResponse", "HttpRoutes", "mount_path"):
        assert name in plugin_sdk.__all__
    assert HttpRoutes.__module__ == "plugin_sdk"
    assert HttpResponse.__module__ == "plugin_sdk"


def test_the_helpers_and_the_monitoring_apps_import_no_framework() -> None:
    # The memory goal of the monitoring plugins: building their apps loads no web framework, no
    # OpenSSL (hashlib), no email/http.client (urllib.request) and, until a JSON answer, no orjson.
    code = """
import sys
import plugin_sdk
assert "orjson" not in sys.modules, "import plugin_sdk loaded orjson"
from builtin_plugins.monitoring.analytics import Analytics
from builtin_plugins.monitoring.dashboard._app import create_app, load_assets
from builtin_plugins.monitoring.health import Health
import builtin_plugins.monitoring.alerts, builtin_plugins.monitoring.metrics
Health()._build_app(); Analytics()._make_app(); create_app(dict, load_assets())
heavy = sorted(m for m in sys.modules if m.split(".")[0] in
    {"starlette", "hashlib", "_hashlib", "email", "http", "zipfile", "gzip", "mimetypes", "urllib.request"}
    or m == "urllib.request")
print(heavy)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
