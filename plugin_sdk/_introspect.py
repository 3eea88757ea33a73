"""A read-only view of the running kernel, for monitoring plugins."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from ._plugin import PluginState


@attrs.frozen
class PluginSnapshot:
    """One plugin as the kernel sees it right now."""

    name: str
    version: str | None
    state: PluginState
    enabled: bool
    last_error: str | None
    #: the hooks it implements
    hooks: tuple[str, ...]
    #: the operations it has registered (live ones only)
    operations: tuple[str, ...]


@attrs.frozen
class KernelSnapshot:
    """Every plugin, every hook and who implements it, every operation."""

    plugins: tuple[PluginSnapshot, ...]
    #: hook name -> the plugins implementing it (loaded ones, in call order)
    hooks: Mapping[str, tuple[str, ...]]
    operations: tuple[str, ...]


attrs.resolve_types(PluginSnapshot)
attrs.resolve_types(KernelSnapshot)
