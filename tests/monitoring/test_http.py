"""The ``http`` plugin against real kernels and a real socket on 127.0.0.1.

Tests that depend on the server run against both (``server`` setting); the
protocol-level behaviour of the servers is in ``test_http_server.py``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import AsyncIterator
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import MutableMapping
from collections.abc import Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import httpx
import orjson
import pytest

from builtin_plugins.http import HttpServer
from kernel import Kernel
from plugin_sdk import ASGIApp
from plugin_sdk import HealthStatus
from plugin_sdk import HttpMount
from plugin_sdk import HttpService
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginState
from plugin_sdk import ServiceUnavailable
from plugin_sdk import hookimpl

pytestmark = pytest.mark.anyio

SERVERS = ("builtin", "uvicorn")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def state(k: Kernel, name: str) -> PluginState:
    return k.plugins[name].state


def echo(label: str) -> ASGIApp:
    """A raw ASGI app answering what it was given: its label, path, root_path, raw_path."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = orjson.dumps(
            {
                "label": label,
                "path": scope["path"],
                "root_path": scope["root_path"],
                "raw_path": scope["raw_path"].decode(),
            }
        )
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    return app


async def broken(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("app exploded")


def mounter(name: str, mounts: Sequence[HttpMount], *, requires: Sequence[str] = ()) -> Plugin:
    """A plugin named ``name`` contributing ``mounts``."""

    class Mounter(Plugin):
        version = "1.0.0"

        @hookimpl
        def http_mounts(self) -> list[HttpMount]:
            return list(mounts)

    Mounter.name = name
    Mounter.requires = tuple(requires)
    return Mounter()


class Linker(Plugin):
    """Requires the http service (so it starts after the server) and reads it."""

    name = "linker"
    version = "1.0.0"
    requires = ("http",)

    def __init__(self) -> None:
        self.base_url = ""
        self.service: HttpService | None = None

    async def start(self, ctx: PluginContext[Any]) -> None:
        self.service = ctx.service("http")
        self.base_url = self.service.base_url

    @hookimpl
    def http_mounts(self) -> list[HttpMount]:
        return [HttpMount(echo("linker"), title="Linker")]


@pytest.fixture(params=SERVERS)
def server_kind(request: pytest.FixtureRequest) -> str:
    """The ``server`` setting a test runs with, once per server."""
    kind: str = request.param
    return kind


def config(port: int = 0, server: str = "builtin", **plugins: dict[str, Any]) -> dict[str, Any]:
    return {"plugins": {"http": {"permissions": ["net:listen:*:*"], "settings": {"port": port, "server": server}}, **plugins}}


@asynccontextmanager
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=5.0, trust_env=False) as http:
        yield http


async def refused(port: int) -> bool:
    try:
        with anyio.fail_after(2):
            stream = await anyio.connect_tcp("127.0.0.1", port)
    except OSError:
        return True
    await stream.aclose()
    return False


async def test_serves_and_stops_cleanly(server_kind: str) -> None:
    http = HttpServer()
    others = set(asyncio.all_tasks())
    with anyio.fail_after(10):
        plugins = [http, mounter("echo", [HttpMount(echo("e"))])]
        async with Kernel(config(server=server_kind), plugins=plugins, environ={}) as k:
            assert state(k, "http") is PluginState.RUNNING
            port = int(http.base_url.rsplit(":", 1)[1])
            async with client(http.base_url) as web:
                response = await web.get("/echo/x")
                assert response.status_code == 200
                assert response.json()["label"] == "e"
    assert state(k, "http") is PluginState.STOPPED
    assert await refused(port), "the port still accepts connections after the kernel stopped"
    await anyio.lowlevel.checkpoint()  # let finished tasks be reaped
    assert {t for t in asyncio.all_tasks() if not t.done()} <= others | {asyncio.current_task()}
    with pytest.raises(ServiceUnavailable, match="not running"):
        _ = http.base_url
    assert http.mounts() == {}


async def test_port_in_use_fails_the_plugin_with_a_clear_message_others_run(server_kind: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with anyio.fail_after(10):
            async with Kernel(
                config(port, server_kind),
                plugins=[HttpServer(), mounter("bystander", [])],
                environ={},
                entry_points=False,
            ) as k:
                info = k.plugins["http"]
                assert info.state is PluginState.FAILED
                assert info.last_error is not None
                assert f"http: cannot listen on 127.0.0.1:{port}: address already in use" in info.last_error
                assert "plugins.http.settings.port" in info.last_error
                assert state(k, "bystander") is PluginState.RUNNING


async def test_port_zero_picks_a_free_port_given_by_the_service(server_kind: str) -> None:
    http, linker = HttpServer(), Linker()
    with anyio.fail_after(10):
        async with Kernel(config(0, server_kind), plugins=[http, linker], environ={}) as k:
            assert state(k, "linker") is PluginState.RUNNING
            host, port = http.base_url.removeprefix("http://").rsplit(":", 1)
            assert host == "127.0.0.1"
            assert int(port) > 0
            assert linker.base_url == http.base_url
            assert isinstance(linker.service, HttpService)
            assert linker.service.mounts() == http.mounts() == {"/linker": "linker"}
            async with client(linker.base_url) as web:
                assert (await web.get("/linker/")).json()["label"] == "linker"


async def test_the_server_installs_no_signal_handlers(server_kind: str) -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    http = HttpServer()
    with anyio.fail_after(10):
        async with Kernel(config(server=server_kind), plugins=[http], environ={}):
            assert {sig: signal.getsignal(sig) for sig in before} == before
            async with client(http.base_url) as web:
                assert (await web.get("/")).status_code == 200
            assert {sig: signal.getsignal(sig) for sig in before} == before
    assert {sig: signal.getsignal(sig) for sig in before} == before


async def test_routing_index_404_scope_and_default_prefix(server_kind: str) -> None:
    http = HttpServer()
    plugins = [
        http,
        mounter("echo", [HttpMount(echo("echo"), title="Echo")]),  # default prefix: /echo
        mounter("deep", [HttpMount(echo("deep"), prefix="/echo/deep/")]),  # nested, trailing slash trimmed
        mounter("boom", [HttpMount(broken)]),
    ]
    with anyio.fail_after(10):
        async with Kernel(config(server=server_kind), plugins=plugins, environ={}), client(http.base_url) as web:
            assert http.mounts() == {"/boom": "boom", "/echo": "echo", "/echo/deep": "deep"}

            index = await web.get("/")
            assert index.status_code == 200
            assert index.headers["content-type"] == "application/json"
            assert index.json() == {
                "/boom": {"plugin": "boom", "title": ""},
                "/echo": {"plugin": "echo", "title": "Echo"},
                "/echo/deep": {"plugin": "deep", "title": ""},
            }

            got = (await web.get("/echo/a/b", params={"q": "1"})).json()
            # ASGI as Starlette reads it: the full path, the mount in root_path.
            assert got == {"label": "echo", "path": "/echo/a/b", "root_path": "/echo", "raw_path": "/echo/a/b"}
            assert (await web.get("/echo")).json()["path"] == "/echo"
            assert (await web.get("/echo/")).json()["path"] == "/echo/"
            assert (await web.get("/echo/a%20b")).json() == {
                "label": "echo",
                "path": "/echo/a b",
                "root_path": "/echo",
                "raw_path": "/echo/a%20b",
            }

            deep = (await web.get("/echo/deep/x")).json()  # the longest prefix wins
            assert (deep["label"], deep["root_path"], deep["path"]) == ("deep", "/echo/deep", "/echo/deep/x")
            assert (await web.get("/echo/deeper")).json()["label"] == "echo"  # only at a segment boundary

            missing = await web.get("/echoes")
            assert missing.status_code == 404
            assert missing.json()["error"] == "not found"
            assert missing.json()["path"] == "/echoes"
            assert (await web.post("/")).status_code == 405

            failed = await web.get("/boom/x")
            assert failed.status_code == 500
            assert failed.json() == {"error": "internal server error", "plugin": "boom"}


async def test_mounts_follow_plugins_that_start_and_stop(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="orion.plugin.http")
    http = HttpServer()
    late = mounter("late", [HttpMount(echo("late"), prefix="/late")])
    plugins = [http, Linker(), late]
    with anyio.fail_after(15):
        async with (
            Kernel(config(late={"enabled": False}), plugins=plugins, environ={}) as k,
            client(http.base_url) as web,
        ):
            # linker requires http, so it started after the server: its mount arrived by plugin_state_changed
            assert (await web.get("/linker/x")).json()["label"] == "linker"
            assert (await web.get("/late/x")).status_code == 404

            await k.reload(config(late={"enabled": True}))
            assert state(k, "late") is PluginState.RUNNING
            assert (await web.get("/late/x")).json()["label"] == "late"
            assert http.mounts() == {"/late": "late", "/linker": "linker"}

            await k.reload(config(late={"enabled": False}))
            assert state(k, "late") is PluginState.STOPPED
            assert (await web.get("/late/x")).status_code == 404
            assert http.mounts() == {"/linker": "linker"}
    messages = [r.getMessage() for r in caplog.records if r.name == "orion.plugin.http"]
    assert any(m.startswith("http: serving on http://127.0.0.1:") and m.endswith("(builtin server)") for m in messages)
    assert any(m.startswith("http: unmounted /late (plugin late)") for m in messages)


async def test_prefix_clash_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="orion.plugin.http")
    http = HttpServer()
    plugins = [
        http,
        mounter("first", [HttpMount(echo("first"), prefix="/shared")]),
        mounter("second", [HttpMount(echo("second"), prefix="/shared"), HttpMount(echo("own"), prefix="/own")]),
        # starts after http (requires it) and comes first in hook order by name: it must not take /shared
        mounter("aaa", [HttpMount(echo("aaa"), prefix="/shared")], requires=["http"]),
        mounter("bad", [HttpMount(echo("bad"), prefix="no-slash"), HttpMount(echo("good"), prefix="/good")]),
    ]
    with anyio.fail_after(10):
        async with Kernel(config(), plugins=plugins, environ={}), client(http.base_url) as web:
            assert (await web.get("/shared/")).json()["label"] == "first"
            assert (await web.get("/own/")).json()["label"] == "own"  # the plugin's other mount still serves
            assert (await web.get("/good/")).json()["label"] == "good"
            assert http.mounts()["/shared"] == "first"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    clashes = [w for w in warnings if "already mounted" in w]
    assert "http: prefix /shared of plugin second is already mounted by plugin first; skipped" in clashes
    assert "http: prefix /shared of plugin aaa is already mounted by plugin first; skipped" in clashes
    assert len(clashes) == len(set(clashes)), "a clash is logged once, not at every rebuild"
    assert any("plugin bad" in w and "'no-slash'" in w for w in warnings)


async def test_a_bad_port_setting_is_a_config_error_with_its_path() -> None:
    from plugin_sdk import ConfigError

    with pytest.raises(ConfigError, match=r"plugins\.http\.settings\.port"):
        async with Kernel(config(70000), plugins=[HttpServer()], environ={}):
            pass


async def test_a_server_that_cannot_start_fails_the_plugin_and_frees_the_port(
    server_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if server_kind == "uvicorn":
        import uvicorn

        async def cannot_start(self: uvicorn.Server, sockets: list[socket.socket] | None = None) -> None:
            raise OSError("no more file descriptors")

        monkeypatch.setattr(uvicorn.Server, "startup", cannot_start)
    else:

        async def cannot_listen(cls: type[anyio.abc.SocketListener], sock: socket.socket) -> anyio.abc.SocketListener:
            raise OSError("no more file descriptors")

        monkeypatch.setattr(anyio.abc.SocketListener, "from_socket", classmethod(cannot_listen))
    with socket.socket() as probe:  # a port that is free now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with anyio.fail_after(10):
        async with Kernel(config(port, server_kind), plugins=[HttpServer()], environ={}) as k:
            info = k.plugins["http"]
            assert info.state is PluginState.FAILED
            assert info.last_error == "http: the server did not start: OSError: no more file descriptors"
            with socket.socket() as again:
                again.bind(("127.0.0.1", port))  # the plugin let go of it


async def test_health_check_says_whether_the_server_still_serves(server_kind: str) -> None:
    http = HttpServer()
    with anyio.fail_after(10):
        async with Kernel(config(server=server_kind), plugins=[http], environ={}):
            assert await http.check_health() == HealthStatus(ok=True, reason=f"serving on {http.base_url}")
            server, done = http._server, http._done  # white box: make the server leave as if on its own
            assert server is not None
            assert done is not None
            server.begin_shutdown()
            with anyio.fail_after(5):
                await done.wait()
            assert (await http.check_health()).reason.startswith("the HTTP server is not serving")
