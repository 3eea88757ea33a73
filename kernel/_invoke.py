"""The invoke pipeline: operations by name, behind middleware in a fixed order.

The chain of middleware is composed once, whenever an operation or a
middleware is added or removed, so a call walks pre-built links: one small
object per middleware and no list to iterate.  As with hooks, whether an
observer is attached is decided by which entry point is installed, not by a
flag tested per call.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Mapping
from time import perf_counter
from typing import Any
from typing import Final

import attrs

from plugin_sdk import CallNext
from plugin_sdk import ConfigIssue
from plugin_sdk import Credentials
from plugin_sdk import DispatchObserver
from plugin_sdk import Handler
from plugin_sdk import InvalidArguments
from plugin_sdk import Invocation
from plugin_sdk import Middleware
from plugin_sdk import OperationFailed
from plugin_sdk import OperationNotFound
from plugin_sdk import OrionError
from plugin_sdk import Outcome
from plugin_sdk import PluginError
from plugin_sdk import Principal
from plugin_sdk._plugin import is_valid_name

from ._structure import issues_of
from ._structure import shared_converter

_EMPTY: Final[Mapping[str, Any]] = {}


@attrs.frozen
class Operation:
    """An operation as registered: who owns it and how it is called."""

    name: str
    plugin: str
    handler: Handler = attrs.field(repr=False)
    is_async: bool
    args_type: type | None
    doc: str
    example_args: Mapping[str, Any] | None


@attrs.frozen
class _MiddlewareEntry:
    plugin: str
    phase: int
    function: Middleware = attrs.field(repr=False)


class _Link:
    """One middleware bound to the rest of the chain; names its plugin when it fails."""

    __slots__ = ("_function", "_next", "_plugin")

    def __init__(self, function: Middleware, next_: CallNext, plugin: str) -> None:
        self._function = function
        self._next = next_
        self._plugin = plugin

    async def __call__(self, inv: Invocation) -> Any:
        try:
            return await self._function(inv, self._next)
        except OrionError:
            raise  # an SDK error on purpose, or an inner link's OperationFailed
        except Exception as exc:
            raise OperationFailed(inv.operation, self._plugin, exc) from exc


def _is_async(handler: object) -> bool:
    # A coroutine function, or an object whose __call__ is one.
    call = vars(type(handler)).get("__call__")
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


def _is_operation_name(name: object) -> bool:
    return isinstance(name, str) and all(is_valid_name(part) for part in name.split("."))


class Pipeline:
    """Operations, middleware, and :meth:`invoke`."""

    def __init__(self) -> None:
        self._operations: dict[str, Operation] = {}
        self._middleware: list[_MiddlewareEntry] = []
        self._ranks: dict[str, int] = {}
        self._converter = shared_converter
        self._chain: CallNext = self._endpoint
        self._observer: Any = None
        #: told about an observer that raised (the kernel detaches it)
        self._observer_failed: Callable[[Any], None] = lambda observer: None
        self.invoke: Callable[..., Awaitable[Any]] = self._invoke_plain

    @property
    def operations(self) -> Mapping[str, Operation]:
        """Registered operations by name."""
        return dict(self._operations)

    def make_operation(
        self,
        plugin: str,
        name: str,
        handler: Handler,
        *,
        args_type: type | None = None,
        doc: str | None = None,
        example_args: Mapping[str, Any] | None = None,
    ) -> Operation:
        """Check a registration and build its :class:`Operation` (not installed yet).

        :raises PluginError: bad name, handler or ``args_type``, or a name owned
            by another plugin.
        """
        if not _is_operation_name(name):
            raise PluginError(
                f"plugin {plugin!r}: invalid operation name {name!r} "
                "(dot-separated lowercase words, e.g. 'tools.search')",
                plugin=plugin,
            )
        if not callable(handler):
            raise PluginError(f"plugin {plugin!r}: handler of {name!r} is not callable", plugin=plugin)
        if args_type is not None and not attrs.has(args_type):
            raise PluginError(f"plugin {plugin!r}: args_type of {name!r} is not an attrs class", plugin=plugin)
        owner = self._operations.get(name)
        if owner is not None and owner.plugin != plugin:
            raise PluginError(
                f"plugin {plugin!r}: operation {name!r} is already registered by plugin {owner.plugin!r}",
                plugin=plugin,
            )
        summary = doc if doc is not None else (inspect.getdoc(handler) or "").split("\n", 1)[0]
        return Operation(
            name=name,
            plugin=plugin,
            handler=handler,
            is_async=_is_async(handler),
            args_type=args_type,
            doc=summary,
            example_args=example_args,
        )

    def install(self, plugin: str, operations: list[Operation], middleware: list[tuple[Middleware, int]]) -> None:
        """Replace everything ``plugin`` had registered by ``operations`` and ``middleware``.

        Checked as a whole first, so a clash leaves the pipeline as it was.
        """
        names = [op.name for op in operations]
        for op in operations:
            owner = self._operations.get(op.name)
            if (owner is not None and owner.plugin != plugin) or names.count(op.name) > 1:
                raise PluginError(
                    f"plugin {plugin!r}: operation {op.name!r} is already registered"
                    f"{f' by plugin {owner.plugin!r}' if owner is not None else ''}",
                    plugin=plugin,
                )
        self._operations = {k: v for k, v in self._operations.items() if v.plugin != plugin}
        self._operations.update((op.name, op) for op in operations)
        self._middleware = [m for m in self._middleware if m.plugin != plugin]
        self._middleware.extend(_MiddlewareEntry(plugin, int(phase), fn) for fn, phase in middleware)
        self._rebuild()

    def remove_plugin(self, plugin: str) -> None:
        """Withdraw every operation and middleware of ``plugin``."""
        self._operations = {k: v for k, v in self._operations.items() if v.plugin != plugin}
        before = len(self._middleware)
        self._middleware = [m for m in self._middleware if m.plugin != plugin]
        if len(self._middleware) != before:
            self._rebuild()

    def set_order(self, ranks: Mapping[str, int]) -> None:
        """Plugin order (lower rank first) within a phase."""
        self._ranks = dict(ranks)
        self._rebuild()

    def set_observer(self, observer: DispatchObserver | None) -> None:
        """Install the plain or the observed entry point."""
        self._observer = observer
        self.invoke = self._invoke_plain if observer is None else self._invoke_observed

    def middleware_order(self) -> list[tuple[str, int]]:
        """``(plugin, phase)`` of each middleware, in the order a call meets them."""
        return [(m.plugin, m.phase) for m in self._sorted_middleware()]

    def _sorted_middleware(self) -> list[_MiddlewareEntry]:
        far = 1 << 30
        return sorted(self._middleware, key=lambda m: (-m.phase, self._ranks.get(m.plugin, far), m.plugin))

    def _rebuild(self) -> None:
        chain: CallNext = self._endpoint
        for entry in reversed(self._sorted_middleware()):
            chain = _Link(entry.function, chain, entry.plugin)
        self._chain = chain
        # code object -> plugin, to name the middleware an exception came from
        self._owners = {
            code: m.plugin for m in self._middleware if (code := getattr(m.function, "__code__", None)) is not None
        }

    # -- the call --------------------------------------------------------------------

    def _lookup(self, name: str) -> Operation:
        operation = self._operations.get(name)
        if operation is None:
            close = difflib.get_close_matches(str(name), list(self._operations), n=3)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            known = "" if close else f"; known operations: {', '.join(sorted(self._operations)) or 'none'}"
            raise OperationNotFound(f"unknown operation {name!r}{hint}{known}", operation=str(name))
        return operation

    async def _endpoint(self, inv: Invocation) -> Any:
        operation = self._lookup(inv.operation)
        if operation.args_type is not None:
            try:
                inv.params = self._converter().structure(dict(inv.args), operation.args_type)
            except Exception as exc:
                raise InvalidArguments(operation.name, issues_of(exc, "args")) from None
        try:
            if operation.is_async:
                return await operation.handler(inv)
            return operation.handler(inv)
        except OrionError:
            raise
        except Exception as exc:
            raise OperationFailed(operation.name, operation.plugin, exc) from exc

    def _prepare(
        self, name: str, args: Mapping[str, Any] | None, principal: Principal | None, credentials: Credentials | None
    ) -> Invocation:
        if args is None:
            args = _EMPTY
        elif not isinstance(args, Mapping):
            raise InvalidArguments(
                str(name), [ConfigIssue("args", f"expected a mapping of argument names, got {type(args).__name__}")]
            )
        if name not in self._operations:
            self._lookup(name)
        if credentials is not None and not isinstance(credentials, Credentials):
            # A bare string would be a secret in the wrong place: say so without echoing it.
            raise InvalidArguments(
                str(name),
                [ConfigIssue("credentials", f"expected plugin_sdk.Credentials, got {type(credentials).__name__}")],
            )
        return Invocation(name, args, principal, credentials=credentials)

    async def _invoke_plain(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        principal: Principal | None = None,
        credentials: Credentials | None = None,
    ) -> Any:
        # Every error arrives typed: the endpoint wraps the handler's, each
        # link wraps its middleware's.
        return await self._chain(self._prepare(name, args, principal, credentials))

    async def _invoke_observed(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        principal: Principal | None = None,
        credentials: Credentials | None = None,
    ) -> Any:
        began = perf_counter()
        outcome: Outcome = "error"
        try:
            result = await self._chain(self._prepare(name, args, principal, credentials))
            outcome = "ok"
            return result
        finally:
            observer = self._observer
            try:
                observer.on_invoke(name, perf_counter() - began, outcome)
            except Exception:
                self._observer_failed(observer)
