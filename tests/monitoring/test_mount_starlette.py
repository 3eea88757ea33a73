"""A third-party plugin can still mount a real Starlette app through the ``http_mounts`` hook.

The builtin plugins serve plain ASGI apps (``plugin_sdk.HttpRoutes``) and the
kernel's own code no longer imports Starlette, but a plugin author may bring
any ASGI framework: this pins that a Starlette app works under the ``http``
plugin as it would at the root of its own server (path parameters,
``url_for`` and slash redirects built from ``root_path``, request bodies).
Starlette is a test dependency for this.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from builtin_plugins.http import HttpServer
from kernel import Kernel
from plugin_sdk import HttpMount
from plugin_sdk import Plugin
from plugin_sdk import hookimpl
from plugin_sdk import hookspecs

pytestmark = pytest.mark.anyio


def make_app() -> Starlette:
    async def item(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "id": request.path_params["item_id"],
                "self": str(request.url_for("item", item_id=request.path_params["item_id"])),
                "root_path": request.scope["root_path"],
            }
        )

    async def create(request: Request) -> JSONResponse:
        return JSONResponse({"created": await request.json()}, status_code=201)

    async def listing(request: Request) -> PlainTextResponse:
        return PlainTextResponse("items\n")

    return Starlette(
        routes=[
            Route("/items/", listing, methods=["GET"]),
            Route("/items/{item_id:int}", item, methods=["GET"], name="item"),
            Route("/items", create, methods=["POST"]),
        ]
    )


class ThirdParty(Plugin):
    """Serves a Starlette app, as a plugin published on PyPI might."""

    name = "thirdparty"
    version = "1.0.0"

    def __init__(self) -> None:
        self.app = make_app()

    @hookimpl
    def http_mounts(self) -> list[HttpMount]:
        return [HttpMount(self.app, title="Third party")]


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[Kernel, httpx.AsyncClient]]:
    http = HttpServer()
    config: dict[str, Any] = {"plugins": {"http": {"permissions": ["net:listen:127.0.0.1:*"], "settings": {"port": 0}}}}
    async with (
        Kernel(config, plugins=[http, ThirdParty()], environ={}) as kernel,
        httpx.AsyncClient(base_url=http.base_url, timeout=5.0, trust_env=False) as web,
    ):
        yield kernel, web


async def test_the_mount_is_contributed_through_the_hook() -> None:
    async with Kernel({}, plugins=[ThirdParty()], environ={}) as kernel:
        mounts = [m for batch in kernel.hooks.call(hookspecs.http_mounts) for m in batch]
    assert [(m.prefix, m.title, type(m.app)) for m in mounts] == [(None, "Third party", Starlette)]


async def test_a_starlette_app_served_by_the_http_plugin() -> None:
    with anyio.fail_after(10):
        async with serving() as (_, web):
            assert (await web.get("/")).json()["/thirdparty"] == {"plugin": "thirdparty", "title": "Third party"}

            got = await web.get("/thirdparty/items/7")
            assert got.status_code == 200
            assert got.json() == {
                "id": 7,
                "self": f"{web.base_url}".rstrip("/") + "/thirdparty/items/7",
                "root_path": "/thirdparty",
            }
            created = await web.post("/thirdparty/items", json={"name": "widget"})
            assert (created.status_code, created.json()) == (201, {"created": {"name": "widget"}})

            listing = await web.get("/thirdparty/items/")
            assert (listing.status_code, listing.text) == (200, "items\n")
            # Starlette's slash redirect is built from the full path: it stays under the mount.
            redirected = await web.get("/thirdparty/items/7/", follow_redirects=False)
            assert redirected.status_code == 307
            assert httpx.URL(redirected.headers["location"]).path == "/thirdparty/items/7"

            assert (await web.get("/thirdparty/items/x")).status_code == 404  # {item_id:int}
            assert (await web.delete("/thirdparty/items/7")).status_code == 405
