"""The dashboard's ASGI app: the page, its assets, and ``api/state``.

The assets are read once from the package and served from memory with fixed
content types: ``mimetypes`` depends on the host's ``/etc/mime.types`` and
would make the JavaScript's type differ between machines.  They are read
straight from the package's folder when it has one, and through
``importlib.resources`` otherwise (a zipped install), which costs half a MiB
of imports (zipfile, bz2, lzma ...) a plain install does not need.  The page
is self-contained, and its Content-Security-Policy says so to the browser:
nothing is loaded from anywhere but this server, and no inline script or
style runs, so a plugin name or error text cannot turn into markup.

The page's ``<base href>`` is the mount's ``root_path`` plus ``/``: the
``http`` plugin hands ``/dashboard`` and ``/dashboard/`` to the app as the
same ``/``, and relative asset URLs would resolve against the server root
for the first one.  With the base set from ``root_path`` both work, and so
does a reverse proxy that adds its own prefix.

The app is the SDK's plain-ASGI :class:`~plugin_sdk.HttpRoutes`, one exact
route per asset (the set is fixed when the plugin starts), so no web
framework is imported.  Imported only when the plugin starts, so loading the
plugin (``orion-kernel plugins list``, ``config check``) reads no asset.
"""

from __future__ import annotations

import binascii
import functools
import importlib
import os
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from typing import Final

import attrs

from plugin_sdk import ASGIApp
from plugin_sdk import HttpHandler
from plugin_sdk import HttpRequest
from plugin_sdk import HttpResponse
from plugin_sdk import HttpRoutes

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


def _etag(body: bytes) -> str:
    # Length and CRC-32: enough to tell one version of a file from the next (an ETag is a cache
    # validator, not a signature), and binascii is loaded already where hashlib would load OpenSSL.
    return f'"{len(body):x}-{binascii.crc32(body):08x}"'


def _asset(body: bytes, media_type: str) -> Asset:
    return Asset(body=body, media_type=media_type, etag=_etag(body))


def _static_files(package: str) -> Iterator[tuple[str, bytes]]:
    """(name, content) of every regular file of ``<package>/static``."""
    origin = getattr(importlib.import_module(package), "__file__", None)
    folder = os.path.join(os.path.dirname(origin), "static") if origin else ""
    if folder and os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                with open(path, "rb") as handle:
                    yield name, handle.read()
        return
    from importlib import resources  # a zipped (or otherwise folder-less) install

    for entry in (resources.files(package) / "static").iterdir():
        if entry.is_file():
            yield entry.name, entry.read_bytes()


def load_assets(package: str = __package__ or __name__) -> dict[str, Asset]:
    """Every servable file of ``<package>/static``, by file name."""
    found: dict[str, Asset] = {}
    for name, body in _static_files(package):
        suffix = "." + name.rpartition(".")[2]
        if suffix in MEDIA_TYPES:
            found[name] = _asset(body, MEDIA_TYPES[suffix])
    if PAGE not in found:
        raise FileNotFoundError(f"{package}: static/{PAGE} is missing (is the package data installed?)")
    if BASE_PLACEHOLDER not in found[PAGE].body:
        raise ValueError(f"{package}: static/{PAGE} lacks {BASE_PLACEHOLDER.decode()}")
    return found


def _attribute(text: str) -> str:
    """``text`` escaped for a double-quoted HTML attribute (what ``html.escape`` does, without importing
    ``html`` and its entity tables)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _asset_response(request: HttpRequest, asset: Asset) -> HttpResponse:
    # "no-cache" = revalidate every time: cheap with the ETag, and an upgraded
    # kernel never serves yesterday's script to today's page.
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache"}
    if asset.media_type.startswith("text/html"):
        headers["Content-Security-Policy"] = CSP
    if request.header("if-none-match") == asset.etag:
        return HttpResponse(304, headers=headers)
    return HttpResponse(body=asset.body, media_type=asset.media_type, headers=headers)


def create_app(state: Callable[[], Mapping[str, object]], assets: Mapping[str, Asset]) -> ASGIApp:
    """The dashboard app, written as if mounted at ``/``.

    Every response, a 404 included, carries ``X-Content-Type-Options: nosniff``
    and ``Referrer-Policy: no-referrer``.

    :param state: what ``GET /api/state`` serializes; called once per request,
        on the event loop (it must not block).
    :param assets: from :func:`load_assets`; ``index.html`` is the page, every
        asset is also served at ``/static/<name>``.
    """

    @functools.lru_cache(maxsize=8)  # one per root_path the server uses: one in practice
    def page_for(root_path: str) -> Asset:
        base = b'<base href="' + _attribute(root_path.rstrip("/") + "/").encode() + b'">'
        template = assets[PAGE]
        return _asset(template.body.replace(BASE_PLACEHOLDER, base, 1), template.media_type)

    async def page(request: HttpRequest) -> HttpResponse:
        return _asset_response(request, page_for(request.root_path))

    def static(asset: Asset) -> HttpHandler:
        async def serve(request: HttpRequest) -> HttpResponse:
            return _asset_response(request, asset)

        return serve

    async def api_state(request: HttpRequest) -> HttpResponse:
        return HttpResponse.json(state(), headers={"Cache-Control": "no-store"})

    routes: dict[tuple[str, str], HttpHandler] = {("GET", "/"): page, ("GET", "/api/state"): api_state}
    routes.update({("GET", f"/static/{name}"): static(asset) for name, asset in assets.items()})
    return HttpRoutes(routes, headers=_COMMON)
