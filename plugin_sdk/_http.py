"""What plugins contribute to the HTTP server (the ``http`` plugin serves it)."""

from __future__ import annotations

from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import MutableMapping
from typing import Any
from typing import TypeAlias

import attrs

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
#: An ASGI 3 application, as Starlette's ``starlette.types.ASGIApp``.
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]


@attrs.frozen
class HttpMount:
    """An ASGI app a plugin serves, under ``prefix`` (default ``/<plugin name>``).

    The app gets the full request path in ``scope["path"]`` and the prefix in
    ``scope["root_path"]`` (ASGI as Starlette >= 0.35 reads it), so a Starlette
    app is written as if mounted at ``/``; plain ASGI apps strip ``root_path``
    from ``path`` themselves.
    """

    app: ASGIApp = attrs.field(repr=False)
    #: where to mount it, e.g. ``"/metrics"``; ``None`` means ``/<plugin name>``
    prefix: str | None = None
    #: shown in listings (the dashboard's link list, the http plugin's log)
    title: str = ""
