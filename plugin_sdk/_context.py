"""What a plugin receives from the kernel: its :class:`PluginContext`."""

from __future__ import annotations

import abc
import logging
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from typing import Generic
from typing import TypeVar
from typing import overload

from ._hooks_api import Hooks
from ._introspect import KernelSnapshot
from ._invocation import Handler
from ._invocation import Middleware
from ._invocation import Phase
from ._observer import DispatchObserver
from ._permissions import Permissions

SettingsT = TypeVar("SettingsT")
T = TypeVar("T")


class PluginContext(abc.ABC, Generic[SettingsT]):
    """A plugin's only door to the kernel, handed to :meth:`Plugin.start`.

    It exposes the plugin's own settings, the services it declared, its
    logger, its data directory and its background tasks; nothing in it
    reaches the kernel object or other plugins' contexts.  Plugins receive a
    context and never build one: the constructor is the kernel's business.
    """

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The plugin's name."""

    @property
    @abc.abstractmethod
    def settings(self) -> SettingsT:
        """The plugin's settings: an instance of its ``Config`` class."""

    @property
    @abc.abstractmethod
    def log(self) -> logging.Logger:
        """A logger named ``orion.plugin.<name>``."""

    @property
    @abc.abstractmethod
    def data_dir(self) -> Path:
        """A directory of the plugin's own, created on first access."""

    @property
    @abc.abstractmethod
    def permissions(self) -> Permissions:
        """What the plugin holds: its manifest's permissions that the operator granted
        (placeholders filled in), its data directory and the services it declared.
        Ask before an optional action: ``ctx.permissions.allows("subprocess")``."""

    @abc.abstractmethod
    def provide(self, name: str, service: object) -> None:
        """Register ``service`` under ``name``, which must be in the manifest's ``provides``.

        :raises PermissionDenied: the manifest does not declare ``name``.
        """

    @overload
    def service(self, name: str) -> Any: ...
    @overload
    def service(self, name: str, kind: Callable[..., T]) -> T: ...
    @abc.abstractmethod
    def service(self, name: str, kind: Callable[..., T] | None = None) -> Any:
        """The service registered under ``name``.

        :param kind: the SDK Protocol the service satisfies (``ctx.service("metrics",
            MetricsRegistry)``); only used for typing.
        :raises PermissionDenied: ``name`` is in neither ``requires`` nor ``optional``.
        :raises ServiceUnavailable: an optional service that no running plugin provides.
        """

    @abc.abstractmethod
    def register_operation(
        self,
        name: str,
        handler: Handler,
        *,
        args_type: type | None = None,
        doc: str | None = None,
        example_args: Mapping[str, Any] | None = None,
    ) -> None:
        """Make ``handler`` callable as ``kernel.invoke(name, args)``.

        :param args_type: an attrs class; the kernel structures ``args`` into it
            (``inv.params``) and answers bad arguments with ``InvalidArguments``.
        :param doc: one line shown by ``orion-kernel`` listings (defaults to the
            handler's docstring).
        :param example_args: arguments that make a valid call, for docs and
            the conformance suite.
        :raises PluginError: the name is taken or invalid.
        """

    @abc.abstractmethod
    def register_middleware(self, middleware: Middleware, *, phase: Phase = Phase.TRANSFORM) -> None:
        """Put ``middleware`` into the invoke pipeline at ``phase``.

        Middleware is ``async def mw(inv, call_next)``; return without calling
        ``call_next(inv)`` to short-circuit.  Removed when the plugin stops.
        """

    @abc.abstractmethod
    def add_dispatch_observer(self, observer: DispatchObserver) -> None:
        """Be told of every hook impl call and every invoke; removed when the plugin stops."""

    @property
    @abc.abstractmethod
    def hooks(self) -> Hooks:
        """Call hooks (``ctx.hooks.call(spec, **kwargs)``), e.g. a plugin's own extension points."""

    @abc.abstractmethod
    def introspect(self) -> KernelSnapshot:
        """A read-only snapshot of the kernel: plugins and their states, hooks and who implements them, operations."""

    @abc.abstractmethod
    def spawn(self, func: Callable[..., Awaitable[Any]], *args: Any, name: str | None = None) -> None:
        """Run ``func(*args)`` in the background until it returns or the plugin stops.

        An exception in the task is logged and recorded against the plugin; it
        does not stop the kernel.
        """
