"""The :class:`Plugin` base class and its validated :class:`Manifest`."""

from __future__ import annotations

import enum
import inspect
import re
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar
from typing import Final

import attrs

from ._errors import ManifestError
from ._permissions import KINDS
from ._permissions import PermissionSyntaxError
from ._permissions import parse_permission
from ._permissions import placeholder_issue
from ._permissions import placeholders
from ._version import __version__ as SDK_VERSION

if TYPE_CHECKING:
    from ._context import PluginContext
    from ._invocation import Principal

_NAME: Final = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
_SERVICE: Final = re.compile(r"^[a-z][a-z0-9_]*(?:[.-][a-z0-9_]+)*$")
_MODULE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BACKENDS: Final = frozenset({"asyncio", "trio"})
MAX_NAME_LENGTH: Final = 64


def is_valid_name(name: object) -> bool:
    """Whether ``name`` is a valid plugin name: lowercase words joined by single ``_``."""
    return isinstance(name, str) and len(name) <= MAX_NAME_LENGTH and bool(_NAME.match(name))


@attrs.frozen
class NoSettings:
    """The ``Config`` of a plugin that takes no settings."""


class PluginState(enum.Enum):
    """Where a plugin is in its life.  See DESIGN.md, "Lifecycle"."""

    DISCOVERED = "discovered"
    LOADED = "loaded"
    CONFIGURED = "configured"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    QUARANTINED = "quarantined"


class Plugin:
    """Base class of every plugin.  Declare the manifest as class attributes.

    Subclasses override :meth:`start` and :meth:`stop`, may define
    ``reconfigure(settings)`` to accept new settings without a restart, and
    implement hooks with :func:`plugin_sdk.hookimpl`.
    """

    #: unique name: lowercase words joined by single underscores (``rate_limit``)
    name: ClassVar[str] = ""
    #: the plugin's own version (PEP 440)
    version: ClassVar[str] = "0.0.0"
    #: the SDK versions it works with, a PEP 440 specifier such as ``">=1,<2"``
    sdk: ClassVar[str] = ">=1,<2"
    #: services it needs: it does not start without them, and starts after their providers
    requires: ClassVar[Sequence[str]] = ()
    #: services it uses when present: it starts after their providers if enabled
    optional: ClassVar[Sequence[str]] = ()
    #: services it registers with ``ctx.provide()`` during ``start``
    provides: ClassVar[Sequence[str]] = ()
    #: capabilities it asks the operator for (see the sandboxing docs)
    permissions: ClassVar[Sequence[str]] = ()
    #: an attrs class for its settings; instances arrive as ``ctx.settings``
    Config: ClassVar[type] = NoSettings
    #: order among plugins in hooks and middleware: higher first (config can override)
    priority: ClassVar[int] = 0
    #: plugin names this one must run before / after in hooks and middleware
    before: ClassVar[Sequence[str]] = ()
    after: ClassVar[Sequence[str]] = ()
    #: modules or classes holding extra ``@hookspec`` declarations this plugin adds
    hookspecs: ClassVar[Sequence[object]] = ()
    #: event-loop backends it supports
    backends: ClassVar[Sequence[str]] = ("asyncio", "trio")
    #: top-level modules it imports only when its settings ask for them (an optional extra):
    #: it must import and load without them (the conformance suite checks)
    optional_imports: ClassVar[Sequence[str]] = ()

    # What the conformance suite (plugin_sdk.testing) runs it with; none is part of the manifest.
    #: example settings to start it with
    conformance_settings: ClassVar[Mapping[str, Any]] = {}
    #: settings it refuses (each must be a ConfigError at a setting's path)
    conformance_bad_settings: ClassVar[Sequence[Mapping[str, Any]]] = ()
    #: ``{hook: kwargs}`` to call its hooks with (hooks whose spec takes no argument need none)
    conformance_hook_args: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: plugin classes that provide the services it requires (default: installed ones that do)
    conformance_providers: ClassVar[Sequence[type] | None] = None
    #: ``{check_id: reason}``: checks it opts out of, each with a written reason
    conformance_opt_out: ClassVar[Mapping[str, str]] = {}
    #: who the suite invokes its operations as (``plugin_sdk.OPERATOR`` for admin operations)
    conformance_principal: ClassVar[Principal | None] = None

    async def start(self, ctx: PluginContext[Any]) -> None:
        """Called once when the plugin starts; register services, operations, tasks here.

        If it raises (or is cancelled, or times out), :meth:`stop` is not called: undo what
        it did itself (the conformance check ``cancellation.start`` holds it to that).
        """

    async def stop(self) -> None:
        """Called once when the plugin stops; spawned tasks are cancelled after it returns."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} plugin {self.name!r} {self.version}>"


def _names(plugin: str, field: str, value: object, pattern: re.Pattern[str]) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ManifestError(plugin, field, f"expected a sequence of strings, got {value!r}")
    for item in value:
        if not isinstance(item, str) or not pattern.match(item):
            raise ManifestError(plugin, field, f"invalid entry {item!r}")
    if len(set(value)) != len(value):
        raise ManifestError(plugin, field, f"duplicate entries in {list(value)!r}")
    return tuple(value)


def _permissions(plugin: str, value: object, config: type) -> tuple[str, ...]:
    """Check the manifest's permissions: each follows the grammar of
    :mod:`plugin_sdk._permissions`; one with ``{placeholders}`` is checked
    fully once the kernel has filled them in from the settings."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ManifestError(plugin, "permissions", f"expected a sequence of strings, got {value!r}")
    for item in value:
        if not isinstance(item, str):
            raise ManifestError(plugin, "permissions", f"invalid entry {item!r}: expected a string")
        try:
            names = placeholders(item)
            if names:
                kind = item.partition(":")[0]
                if kind not in KINDS:
                    raise PermissionSyntaxError(item, f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
                known = {field.name for field in attrs.fields(config)} | {"data_dir"}
                unknown = [n for n in names if n not in known]
                if unknown:
                    raise PermissionSyntaxError(
                        item,
                        f"placeholder {{{unknown[0]}}} is neither a field of {config.__name__} nor data_dir "
                        f"(known: {', '.join(sorted(known))})",
                    )
                issue = placeholder_issue(item)
                if issue is not None:
                    raise PermissionSyntaxError(item, issue)
            else:
                parse_permission(item)
        except PermissionSyntaxError as exc:
            raise ManifestError(plugin, "permissions", str(exc)) from None
    if len(set(value)) != len(value):
        raise ManifestError(plugin, "permissions", f"duplicate entries in {list(value)!r}")
    return tuple(value)


@attrs.frozen
class Manifest:
    """A plugin's declarations, validated.  Build one with :meth:`of`."""

    name: str
    version: str
    sdk: str
    requires: tuple[str, ...]
    optional: tuple[str, ...]
    provides: tuple[str, ...]
    permissions: tuple[str, ...]
    Config: type
    priority: int
    before: tuple[str, ...]
    after: tuple[str, ...]
    hookspecs: tuple[object, ...]
    backends: tuple[str, ...]
    has_reconfigure: bool
    optional_imports: tuple[str, ...] = ()

    @classmethod
    def of(cls, plugin: object) -> Manifest:
        """Validate ``plugin``'s declarations; raise :class:`ManifestError` naming the field.

        :raises ManifestError: for a bad name, version, ``sdk`` specifier, a
            ``Config`` that is not an attrs class, an SDK range that this SDK
            does not satisfy, or a malformed service/permission list.
        """
        from packaging.specifiers import InvalidSpecifier
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion
        from packaging.version import Version

        raw_name = getattr(plugin, "name", None)
        label = raw_name if isinstance(raw_name, str) and raw_name else type(plugin).__name__
        if not is_valid_name(raw_name):
            raise ManifestError(
                label,
                "name",
                f"{raw_name!r} is not a valid plugin name (lowercase letters and digits, "
                f"words joined by single '_', at most {MAX_NAME_LENGTH} characters)",
            )
        name: str = raw_name  # type: ignore[assignment]
        for method in ("start", "stop"):
            if not inspect.iscoroutinefunction(getattr(plugin, method, None)):
                raise ManifestError(name, method, f"a plugin needs an async def {method}() method")
        version = getattr(plugin, "version", None)
        try:
            Version(version)  # type: ignore[arg-type]
        except (InvalidVersion, TypeError):
            raise ManifestError(name, "version", f"{version!r} is not a PEP 440 version") from None
        sdk = getattr(plugin, "sdk", None)
        try:
            if not isinstance(sdk, str) or not sdk.strip():
                raise InvalidSpecifier(repr(sdk))
            spec = SpecifierSet(sdk)
        except InvalidSpecifier:
            raise ManifestError(name, "sdk", f"{sdk!r} is not a PEP 440 version specifier") from None
        if not spec.contains(SDK_VERSION, prereleases=True):
            raise ManifestError(name, "sdk", f"needs plugin_sdk {sdk}, but the running SDK is {SDK_VERSION}")
        config = getattr(plugin, "Config", NoSettings)
        if not (isinstance(config, type) and attrs.has(config)):
            raise ManifestError(name, "Config", f"{config!r} is not an attrs class")
        priority = getattr(plugin, "priority", 0)
        if type(priority) is not int:
            raise ManifestError(name, "priority", f"expected int, got {priority!r}")
        hookspecs = getattr(plugin, "hookspecs", ())
        if isinstance(hookspecs, str) or not isinstance(hookspecs, Sequence):
            raise ManifestError(name, "hookspecs", "expected a sequence of modules or classes")
        requires = _names(name, "requires", getattr(plugin, "requires", ()), _SERVICE)
        optional = _names(name, "optional", getattr(plugin, "optional", ()), _SERVICE)
        both = set(requires) & set(optional)
        if both:
            raise ManifestError(name, "optional", f"{sorted(both)} also listed in requires")
        backends = _names(name, "backends", getattr(plugin, "backends", ("asyncio", "trio")), _SERVICE)
        unknown = set(backends) - _BACKENDS
        if unknown or not backends:
            raise ManifestError(name, "backends", f"expected some of {sorted(_BACKENDS)}")
        return cls(
            name=name,
            version=str(version),
            sdk=str(sdk),
            requires=requires,
            optional=optional,
            provides=_names(name, "provides", getattr(plugin, "provides", ()), _SERVICE),
            permissions=_permissions(name, getattr(plugin, "permissions", ()), config),
            Config=config,
            priority=priority,
            before=_names(name, "before", getattr(plugin, "before", ()), _NAME),
            after=_names(name, "after", getattr(plugin, "after", ()), _NAME),
            hookspecs=tuple(hookspecs),
            backends=backends,
            has_reconfigure=callable(getattr(plugin, "reconfigure", None)),
            optional_imports=_names(name, "optional_imports", getattr(plugin, "optional_imports", ()), _MODULE),
        )
