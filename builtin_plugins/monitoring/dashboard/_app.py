"""The dashboard's ASGI app: the page, its assets, and ``api/state``.

The assets are read once from the package (``importlib.resources``, so a
zipped install works too) and served from memory with fixed content types:
``mimetypes`` depends on the host's ``/etc/mime.types`` and would make the
JavaScript's type differ between machines.  The page is self-contained, and
its Content-Security-Policy says so to the browser: nothing is loaded from
anywhere but this server, and no inline script or style runs, so a plugin
name or error text cannot turn into markup.

The page's ``<base href>`` is the mount's ``root_path`` plus ``/``: the
``http`` plugin hands ``/dashboard`` and ``/dashboard/`` to the app as the
same ``/``, and relative asset URLs would resolve against the server root
for the first one.  With the base set from ``root_path`` both work, and so
does a reverse proxy that adds its own prefix.

Imported only when the plugin starts, so loading the plugin (``orion-kernel
plugins list``, ``config check``) does not import Starlette.
"""

from __future__ import annotations

import functools
import hashlib
import html
from collections.abc import Callable
from collections.abc import Mapping
from importlib import resources
from typing import Final

import attrs
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

#: content type of each asset suffix; files with another suffix are not served
MEDIA_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
PAGE: Final = "index.html"
#: what the page's <base> reads in the package; replaced by the mount's root_path
BASE_PLACEHOLDER: Final = b'<base href="./">'
#: the page may load only what this server serves; "data:" is the empty favicon
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'self'; form-action 'none'; frame-ancestors 'none'"
)
_COMMON: Final = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


@attrs.frozen
class Asset:
    """One static file, held in memory."""

    body: bytes = attrs.field(repr=False)
    media_type: str
    etag: str


def _asset(body: bytes, media_type: str) -> Asset:
    return Asset(body=body, media_type=media_type, etag='"' + hashlib.sha256(body).hexdigest()[:20] + '"')


def load_assets(package: str = __package__ or __name__) -> dict[str, Asset]:
    """Every servable file of ``<package>/static``, by file name."""
    found: dict[str, Asset] = {}
    for entry in (resources.files(package) / "static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in MEDIA_TYPES:
            found[entry.name] = _asset(entry.read_bytes(), MEDIA_TYPES[suffix])
    if PAGE not in found:
        raise FileNotFoundError(f"{package}: static/{PAGE} is missing (is the package data installed?)")
    if BASE_PLACEHOLDER not in found[PAGE].body:
        raise ValueError(f"{package}: static/{PAGE} lacks {BASE_PLACEHOLDER.decode()}")
    return found


def _asset_response(request: Request, asset: Asset) -> Response:
    # "no-cache" = revalidate every time: cheap with the ETag, and an upgraded
    # kernel never serves yesterday's script to today's page.
    headers = {**_COMMON, "ETag": asset.etag, "Cache-Control": "no-cache"}
    if asset.media_type.startswith("text/html"):
        headers["Content-Security-Policy"] = CSP
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def create_app(state: Callable[[], Mapping[str, object]], assets: Mapping[str, Asset]) -> Starlette:
    """The dashboard app, written as if mounted at ``/``.

    :param state: what ``GET /api/state`` serializes; called once per request,
        on the event loop (it must not block).
    :param assets: from :func:`load_assets`; ``index.html`` is the page.
    """

    @functools.lru_cache(maxsize=8)  # one per root_path the server uses: one in practice
    def page_for(root_path: str) -> Asset:
        base = b'<base href="' + html.escape(root_path.rstrip("/") + "/").encode() + b'">'
        template = assets[PAGE]
        return _asset(template.body.replace(BASE_PLACEHOLDER, base, 1), template.media_type)

    async def page(request: Request) -> Response:
        return _asset_response(request, page_for(str(request.scope.get("root_path", ""))))

    async def static(request: Request) -> Response:
        asset = assets.get(request.path_params["name"])
        if asset is None:
            return Response("not found\n", status_code=404, media_type="text/plain", headers=_COMMON)
        return _asset_response(request, asset)

    async def api_state(request: Request) -> Response:
        return Response(
            orjson.dumps(state()), media_type="application/json", headers={**_COMMON, "Cache-Control": "no-store"}
        )

    return Starlette(
        routes=[
            Route("/", page, methods=["GET"]),
            Route("/static/{name}", static, methods=["GET"]),
            Route("/api/state", api_state, methods=["GET"]),
        ]
    )
