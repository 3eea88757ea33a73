"""The :class:`plugin_sdk.PluginContext` a plugin gets inside its worker process.

The same plugin class runs in-process and isolated with no code change, so
this context has the SDK's whole surface; what cannot cross a process
boundary says so with a :class:`~plugin_sdk.PluginError` naming the method:
middleware and dispatch observers (they run inside the kernel's call path),
and calling the kernel's hooks from the worker.  Services the plugin
requires are proxies: every method is awaited and crosses as JSON
(``await ctx.service("kv").get("key")``); the kernel checks each call
against the plugin's manifest.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from typing import TypeVar

import plugin_sdk
from plugin_sdk import DispatchObserver
from plugin_sdk import Handler
from plugin_sdk import Hooks
from plugin_sdk import KernelSnapshot
from plugin_sdk import Manifest
from plugin_sdk import Middleware
from plugin_sdk import Permissions
from plugin_sdk import Phase
from plugin_sdk import PluginContext
from plugin_sdk import PluginError

from ._context import check_provide
from ._context import check_service

if TYPE_CHECKING:
    from ._worker import Worker

T = TypeVar("T")


def rebuild_error(kind: str, message: str, plugin: str | None = None) -> Exception:
    """The exception to raise on this side for one raised on the other: an SDK error of
    the same type when it is one (``PermissionDenied``, ...), else :class:`~plugin_sdk.WorkerError`
    (which, not being an SDK error, counts as the plugin failing)."""
    cls = getattr(plugin_sdk, kind, None)
    if isinstance(cls, type) and issubclass(cls, plugin_sdk.OrionError):
        try:
            return cls(message)
        except TypeError:  # an error type whose constructor takes more than a message
            pass
    return plugin_sdk.WorkerError(kind, message, plugin=plugin)


class ServiceProxy:
    """A service of the kernel side, seen from the worker: each method call is a round trip."""

    def __init__(self, worker: Worker, name: str) -> None:
        self._worker = worker
        self._name = name

    def __repr__(self) -> str:
        return f"<service {self._name!r} across the process boundary>"

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        if method.startswith("_"):
            raise AttributeError(method)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._worker.request(
                {"t": "service", "service": self._name, "method": method, "args": list(args), "kwargs": kwargs}
            )

        call.__name__ = method
        return call


class _NoHooks:
    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise PluginError("ctx.hooks is not available under process isolation (hooks are called by the kernel)")

    call = call_each = acall_each = _refuse


class WorkerContext(PluginContext[Any]):
    """A plugin's context in its worker process."""

    def __init__(
        self, worker: Worker, manifest: Manifest, settings: Any, data_dir: Path, grants: Iterable[str]
    ) -> None:
        self._worker = worker
        self._manifest = manifest
        self._settings = settings
        self._data_dir = data_dir
        self._log = logging.getLogger(f"orion.plugin.{manifest.name}")
        self._permissions = Permissions.parse(grants)
        self._tasks: list[Any] = []
        #: operation name -> (doc, example args), reported to the kernel after start
        self.operation_docs: dict[str, tuple[str | None, Mapping[str, Any] | None]] = {}

    def __repr__(self) -> str:
        return f"<PluginContext of {self._manifest.name!r} (isolated)>"

    @property
    def name(self) -> str:
        return self._manifest.name

    @property
    def settings(self) -> Any:
        return self._settings

    @property
    def log(self) -> logging.Logger:
        return self._log

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def permissions(self) -> Permissions:
        return self._permissions

    def provide(self, name: str, service: object) -> None:
        check_provide(self._manifest, name)
        self._worker.services[name] = service

    def service(self, name: str, kind: Callable[..., T] | None = None) -> Any:
        check_service(self._manifest, name)
        return ServiceProxy(self._worker, name)

    def register_operation(
        self,
        name: str,
        handler: Handler,
        *,
        args_type: type | None = None,
        doc: str | None = None,
        example_args: Mapping[str, Any] | None = None,
    ) -> None:
        if name in self._worker.operations:
            raise PluginError(f"plugin {self.name!r} registered operation {name!r} twice", plugin=self.name)
        if args_type is not None:
            raise PluginError(
                f"plugin {self.name!r}: operation {name!r}: args_type is not supported under process isolation "
                "(arguments cross as JSON; structure them in the handler)",
                plugin=self.name,
            )
        self._worker.operations[name] = handler
        self.operation_docs[name] = (doc or (handler.__doc__ or "").strip().split("\n")[0] or None, example_args)

    def register_middleware(self, middleware: Middleware, *, phase: Phase = Phase.TRANSFORM) -> None:
        raise PluginError(
            f"plugin {self.name!r}: middleware cannot run under process isolation (it sits in the kernel's "
            "invoke path); run this plugin in-process",
            plugin=self.name,
        )

    def add_dispatch_observer(self, observer: DispatchObserver) -> None:
        raise PluginError(
            f"plugin {self.name!r}: dispatch observers cannot run under process isolation; run this plugin in-process",
            plugin=self.name,
        )

    @property
    def hooks(self) -> Hooks:
        return _NoHooks()

    def introspect(self) -> KernelSnapshot:
        raise PluginError(f"plugin {self.name!r}: introspect() is not available under process isolation")

    def spawn(self, func: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None) -> None:
        import anyio

        scope = anyio.CancelScope()
        self._tasks.append(scope)

        async def run() -> None:
            with scope:
                try:
                    await func(*args)
                except Exception:
                    self._log.exception("background task %s failed", name or getattr(func, "__qualname__", func))

        self._worker.group.start_soon(run)

    def cancel_tasks(self) -> None:
        for scope in self._tasks:
            scope.cancel()
        self._tasks.clear()
