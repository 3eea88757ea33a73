"""The invoke pipeline's data: who calls (:class:`Principal`), what (:class:`Invocation`)."""

from __future__ import annotations

import enum
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any
from typing import TypeAlias

import attrs

if TYPE_CHECKING:
    from ._security import Credentials


def _roles(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _names_only(args: Mapping[str, Any]) -> str:
    try:
        return "{" + ", ".join(f"{name!r}: ..." for name in args) + "}"
    except Exception:
        return f"<{type(args).__name__}>"


@attrs.frozen
class Principal:
    """Who is calling: produced by the authenticate step, read by authorize and audit."""

    #: stable identifier of the caller (user id, API key id, service name)
    id: str
    #: what kind of caller: ``user``, ``service``, ``anonymous``...
    kind: str = "user"
    #: role names, used by authorization plugins
    roles: tuple[str, ...] = attrs.field(default=(), converter=_roles)
    #: extra verified facts about the caller (token claims, key metadata)
    claims: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.define(slots=True, eq=False)
class Invocation:
    """One call of an operation as it travels through the middleware to its handler.

    Middleware may replace ``principal`` (authentication) and add to ``metadata``
    (a cache key, the chosen backend); handlers read ``args`` or, when the
    operation declared an ``args_type``, the structured ``params``.
    """

    #: the operation's name, e.g. ``tools.search``
    operation: str
    #: the arguments as the caller passed them (``repr`` shows their names only:
    #: values may be secrets, e.g. ``secrets.set``)
    args: Mapping[str, Any] = attrs.field(repr=_names_only)
    #: who is calling (``None`` until a plugin authenticates the call)
    principal: Principal | None = None
    #: free-form data shared by the middleware of this one call
    metadata: dict[str, Any] = attrs.field(factory=dict)
    #: ``args`` structured into the operation's ``args_type``, if it has one
    params: Any = None
    #: what the caller presented to authenticate (an API key, a bearer token);
    #: the authenticate step reads it and sets ``principal``
    credentials: Credentials | None = attrs.field(default=None, repr=False)


#: The next step of the pipeline: call it to continue, or don't to short-circuit.
CallNext: TypeAlias = Callable[[Invocation], Awaitable[Any]]
#: A middleware: ``async def mw(inv, call_next) -> result``.
Middleware: TypeAlias = Callable[[Invocation, CallNext], Awaitable[Any]]
#: An operation handler: ``async def handler(inv) -> result`` (a sync function works too).
Handler: TypeAlias = Callable[[Invocation], Any]


class Phase(enum.IntEnum):
    """Where a middleware sits in the pipeline; higher runs first (like Kong's PRIORITY).

    Within one phase, middleware runs in plugin order (``priority``, ``before``,
    ``after``, all overridable in config).
    """

    OBSERVE = 2000
    AUTHENTICATE = 1000
    AUTHORIZE = 900
    LIMIT = 800
    CACHE = 700
    BALANCE = 600
    TRANSFORM = 500


# Resolve string annotations before the public package renames __module__.
attrs.resolve_types(Principal)
