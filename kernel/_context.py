"""The kernel's implementation of :class:`plugin_sdk.PluginContext`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any
from typing import Final
from typing import TypeVar

from plugin_sdk import AsyncHookSpec
from plugin_sdk import DispatchObserver
from plugin_sdk import Handler
from plugin_sdk import HookOutcome
from plugin_sdk import Hooks
from plugin_sdk import HookSpec
from plugin_sdk import KernelSnapshot
from plugin_sdk import Manifest
from plugin_sdk import Middleware
from plugin_sdk import PermissionDenied
from plugin_sdk import Permissions
from plugin_sdk import Phase
from plugin_sdk import PluginContext
from plugin_sdk import PluginError
from plugin_sdk import PluginState
from plugin_sdk import SyncHookSpec
from plugin_sdk._markers import P

from ._guard import trusted

if TYPE_CHECKING:
    from ._dispatch import HookRelay
    from ._lifecycle import Lifecycle
    from ._lifecycle import PluginRecord

T = TypeVar("T")
R = TypeVar("R")
_TOKEN: Final = object()


def check_provide(manifest: Manifest, name: str) -> None:
    """:raises PermissionDenied: ``name`` is not in the manifest's ``provides``."""
    if name not in manifest.provides:
        raise PermissionDenied(
            f"plugin {manifest.name!r} may not provide service {name!r}: it is not in the "
            f"manifest's provides {list(manifest.provides)!r}"
        )


def check_service(manifest: Manifest, name: str) -> None:
    """:raises PermissionDenied: ``name`` is in neither ``requires`` nor ``optional``."""
    if name not in manifest.requires and name not in manifest.optional:
        raise PermissionDenied(
            f"plugin {manifest.name!r} did not declare service {name!r}: add it to the "
            "manifest's requires or optional to use it"
        )


class HookCaller:
    """``ctx.hooks``: calling hooks, and nothing else of the kernel's hook registry.

    The relay itself can register plugins, attach observers and change
    deadlines; a plugin gets only the three ways to call.
    """

    __slots__ = ("_relay",)

    def __init__(self, relay: HookRelay) -> None:
        self._relay = relay

    def __repr__(self) -> str:
        return "<hooks: call, call_each, acall_each>"

    def call(self, spec: HookSpec[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._relay.call(spec, *args, **kwargs)

    def call_each(self, spec: SyncHookSpec[P, R], /, *args: P.args, **kwargs: P.kwargs) -> list[HookOutcome[R]]:
        return self._relay.call_each(spec, *args, **kwargs)

    def acall_each(
        self, spec: AsyncHookSpec[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> Awaitable[list[HookOutcome[R]]]:
        return self._relay.acall_each(spec, *args, **kwargs)


class KernelContext(PluginContext[Any]):
    """A plugin's context.  Registrations are kept on its record and go live
    when the kernel activates the plugin (right after ``start`` succeeds, or
    at the commit of a reload)."""

    __slots__ = ("_data_dir", "_hooks_view", "_host", "_log", "_record")

    def __init__(self, record: PluginRecord, host: Lifecycle, *, _token: object = None) -> None:
        if _token is not _TOKEN:
            raise TypeError("PluginContext is created by the kernel; plugins receive one in start()")
        self._record = record
        self._host = host
        self._log = logging.getLogger(f"orion.plugin.{record.name}")
        self._data_dir: Path | None = None
        self._hooks_view = HookCaller(host.relay)

    @classmethod
    def _create(cls, record: PluginRecord, host: Lifecycle) -> KernelContext:
        return cls(record, host, _token=_TOKEN)

    def __repr__(self) -> str:
        return f"<PluginContext of {self._record.name!r}>"

    @property
    def name(self) -> str:
        return self._record.name

    @property
    def settings(self) -> Any:
        return self._record.settings

    @property
    def log(self) -> logging.Logger:
        return self._log

    @property
    def permissions(self) -> Permissions:
        return self._record.grants.effective

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            path = Path(self._host.data_root) / self._record.name
            with trusted():  # the kernel makes it, whatever the plugin may write
                path.mkdir(parents=True, exist_ok=True)
            self._data_dir = path
        return self._data_dir

    def _while_starting(self, what: str) -> None:
        # After start() the registrations are live and kept on the record: a late one
        # (from a spawned task, say) would be silently lost, so it is refused instead.
        if self._record.state is not PluginState.STARTING or self._record.context is not self:
            raise PluginError(
                f"plugin {self.name!r}: {what} outside start() (state {self._record.state.value}); "
                "register everything in start()",
                plugin=self.name,
            )

    def provide(self, name: str, service: object) -> None:
        self._while_starting(f"provide({name!r})")
        assert self._record.manifest is not None
        check_provide(self._record.manifest, name)
        self._record.provided[name] = service

    def service(self, name: str, kind: Callable[..., T] | None = None) -> Any:
        assert self._record.manifest is not None
        try:
            check_service(self._record.manifest, name)
        except PermissionDenied:
            if len(self._record.refused_services) < 100:
                self._record.refused_services.append(name)
            raise
        return self._host.lookup_service(self._record, name)

    def register_operation(
        self,
        name: str,
        handler: Handler,
        *,
        args_type: type | None = None,
        doc: str | None = None,
        example_args: Mapping[str, Any] | None = None,
    ) -> None:
        self._while_starting(f"register_operation({name!r})")
        operation = self._host.pipeline.make_operation(
            self.name, name, handler, args_type=args_type, doc=doc, example_args=example_args
        )
        if any(op.name == name for op in self._record.operations):
            raise PluginError(f"plugin {self.name!r} registered operation {name!r} twice", plugin=self.name)
        self._record.operations.append(operation)

    def register_middleware(self, middleware: Middleware, *, phase: Phase = Phase.TRANSFORM) -> None:
        self._while_starting("register_middleware()")
        if not callable(middleware):
            raise PluginError(f"plugin {self.name!r}: middleware {middleware!r} is not callable", plugin=self.name)
        self._record.middleware.append((middleware, int(phase)))

    def add_dispatch_observer(self, observer: DispatchObserver) -> None:
        self._while_starting("add_dispatch_observer()")
        for method in ("on_hook", "on_invoke"):
            if not callable(getattr(observer, method, None)):
                raise PluginError(f"plugin {self.name!r}: observer lacks {method}()", plugin=self.name)
        self._record.observers.append(observer)

    @property
    def hooks(self) -> Hooks:
        return self._hooks_view

    def introspect(self) -> KernelSnapshot:
        return self._host.snapshot()

    def spawn(self, func: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None) -> None:
        self._host.spawn(self._record, func, args, name)
