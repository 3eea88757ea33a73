"""The SDK's error hierarchy.

Every error the kernel raises on purpose is an :class:`OrionError`.  Errors
that a plugin raises on purpose (a denial, a bad argument) are passed through
dispatch and invoke unchanged; anything else a plugin raises is wrapped in
:class:`HookFailed` or :class:`OperationFailed`, naming the plugin, with the
original exception as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence

import attrs


class OrionError(Exception):
    """Base class of every error raised by the kernel or the SDK on purpose."""


class PluginError(OrionError):
    """Something went wrong in or with one plugin.

    :param plugin: the plugin's name (or ``None`` when no plugin is involved).
    """

    def __init__(self, message: str, *, plugin: str | None = None) -> None:
        super().__init__(message)
        self.plugin = plugin


class ManifestError(PluginError):
    """A plugin's manifest (its class attributes) is invalid.

    :param field: the manifest field at fault, e.g. ``"version"``.
    """

    def __init__(self, plugin: str, field: str, message: str) -> None:
        super().__init__(f"plugin {plugin!r}: manifest field {field!r}: {message}", plugin=plugin)
        self.field = field


class PermissionsNotGranted(PluginError):
    """A plugin asks for permissions the operator has not granted, so it does not start.

    :param missing: the permissions not covered by any grant, as written.
    :param config_line: the ``permissions = [...]`` line of ``[plugins.NAME]`` that would grant them.
    """

    def __init__(self, plugin: str, missing: list[str], config_line: str) -> None:
        super().__init__(
            f"plugin {plugin!r} asks for permissions it was not granted: {', '.join(missing)}; "
            f"to grant them, put in orion.toml under [plugins.{plugin}]: {config_line}",
            plugin=plugin,
        )
        self.missing = tuple(missing)
        self.config_line = config_line


class DependencyError(PluginError):
    """A plugin cannot start because of the service graph.

    Raised for a required service that no enabled plugin provides, a required
    provider that failed, a cycle, or two plugins providing one service.
    """


class PluginStartError(PluginError):
    """Raised by strict kernels when plugins fail to start; lists every failure."""

    def __init__(self, failures: Sequence[tuple[str, str]]) -> None:
        lines = "\n".join(f"  {name}: {reason}" for name, reason in failures)
        super().__init__(f"{len(failures)} plugin(s) failed to start:\n{lines}")
        self.failures = tuple(failures)


class HookFailed(PluginError):
    """A hook implementation raised an exception that is not an SDK error.

    :param hook: the hook's name.  The original exception is ``__cause__``.
    """

    def __init__(self, hook: str, plugin: str, error: BaseException) -> None:
        super().__init__(
            f"hook {hook!r} failed in plugin {plugin!r}: {type(error).__name__}: {error}",
            plugin=plugin,
        )
        self.hook = hook


class HookTimeout(PluginError):
    """A hook call ran past its deadline; ``plugin`` is the impl that was running."""

    def __init__(self, hook: str, plugin: str, timeout: float) -> None:
        super().__init__(
            f"hook {hook!r} exceeded its deadline of {timeout:g}s in plugin {plugin!r}",
            plugin=plugin,
        )
        self.hook = hook
        self.timeout = timeout


class WorkerError(Exception):
    """An exception raised inside an isolated plugin's worker process, re-raised in the kernel.

    Deliberately not an :class:`OrionError`: it is the plugin failing (a bug,
    a ``PermissionError`` from its confinement, a ``MemoryError`` from its
    limit), and it counts toward the plugin's quarantine like any exception of
    an in-process plugin.  SDK errors raised on purpose in the worker
    (``PermissionDenied``, ``InvalidArguments``, ...) cross as themselves.

    :param kind: the exception's type name in the worker, e.g. ``"ValueError"``.
    """

    def __init__(self, kind: str, message: str, *, plugin: str | None = None) -> None:
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind
        self.message = message
        self.plugin = plugin


class PluginCrashed(PluginError):
    """An isolated plugin's worker process died (or was killed: a limit breach, a hung
    call, a protocol violation) while a call was in flight, or is restarting after it."""


@attrs.frozen
class ConfigIssue:
    """One problem in a configuration, with the dotted path where it is."""

    #: where the problem is, e.g. ``plugins.cache.settings.max_entries``
    path: str
    #: what is wrong, e.g. ``expected int, got 'many'``
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(OrionError):
    """A configuration is invalid.  Carries *every* issue found, not just the first.

    ``issues`` is a tuple of :class:`ConfigIssue`; ``str()`` lists them one per line.
    """

    def __init__(self, issues: Iterable[ConfigIssue], *, source: str | None = None) -> None:
        self.issues = tuple(issues)
        self.source = source
        head = f"invalid configuration{f' in {source}' if source else ''}"
        body = "\n".join(f"  {issue}" for issue in self.issues)
        super().__init__(f"{head} ({len(self.issues)} issue(s)):\n{body}")

    @property
    def paths(self) -> tuple[str, ...]:
        """The path of each issue, in order."""
        return tuple(issue.path for issue in self.issues)


class PermissionDenied(OrionError):
    """A plugin or principal asked for something it was not granted or did not declare."""


class NotAuthenticated(OrionError):
    """The caller of an operation could not be authenticated."""


class ServiceUnavailable(OrionError):
    """A service or operation exists in principle but is not available now."""


class InvokeError(OrionError):
    """Base class of errors from :meth:`kernel.Kernel.invoke` about the call itself.

    :param operation: the operation's name.
    """

    def __init__(self, message: str, *, operation: str) -> None:
        super().__init__(message)
        self.operation = operation


class OperationNotFound(InvokeError):
    """No running plugin registered an operation with this name."""


class InvalidArguments(InvokeError):
    """The arguments do not fit the operation; ``issues`` says where."""

    def __init__(self, operation: str, issues: Iterable[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        body = "; ".join(str(issue) for issue in self.issues)
        super().__init__(f"invalid arguments for {operation!r}: {body}", operation=operation)


class OperationFailed(InvokeError):
    """An operation's handler (or a middleware) raised an exception that is not an SDK error.

    The original exception is ``__cause__``; ``plugin`` names who raised it.
    """

    def __init__(self, operation: str, plugin: str, error: BaseException) -> None:
        super().__init__(
            f"operation {operation!r} failed in plugin {plugin!r}: {type(error).__name__}: {error}",
            operation=operation,
        )
        self.plugin = plugin


# Resolve string annotations before the public package renames __module__.
attrs.resolve_types(ConfigIssue)
