"""Finding plugins: in code, as ``source = "module:Class"`` in config, and by entry point.

Discovery never imports plugin code: it lists *candidates*, each with a
``load()`` that imports and instantiates the plugin.  The kernel calls
``load()`` only for enabled plugins (llm#732: eager plugin imports are what
make plugin hosts slow to start).

Entry points are read with :mod:`importlib.metadata` rather than stevedore:
pluggy already imports ``importlib.metadata``, so reading the group costs one
scan (about 1.5 ms here), while ``import stevedore`` alone costs about 41 ms
and its cache only pays off with hundreds of installed distributions.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any
from typing import Final
from typing import Literal

import attrs

from plugin_sdk import PluginError

#: The entry-point group plugins are published under.
ENTRY_POINT_GROUP: Final = "orion_kernel.plugins"

SourceKind = Literal["code", "config", "entry_point"]


@attrs.frozen
class Candidate:
    """A plugin the kernel could load, and how."""

    name: str
    kind: SourceKind
    #: human description: ``code``, ``module:Class`` or ``entry point pkg 1.0 (module:Class)``
    source: str
    load: Callable[[], object] = attrs.field(repr=False, eq=False)
    #: distribution version for entry points (known without importing the plugin)
    dist_version: str | None = None
    #: ``load()`` makes a new instance each time (false for instances passed in code)
    fresh_instances: bool = True
    #: ``module:Qualname`` a fresh process can import it from (process isolation), if any
    target: str | None = None


def instantiate(obj: object, source: str) -> object:
    """A plugin instance from what a source points at: a class (called) or an instance."""
    if isinstance(obj, type):
        try:
            return obj()
        except TypeError as exc:
            raise PluginError(f"cannot instantiate {source}: {exc} (plugin classes take no arguments)") from exc
    return obj


def import_source(spec: str) -> object:
    """Import ``module:attribute`` (attribute may be dotted)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise PluginError(f"source {spec!r} must look like 'package.module:Class'")
    module = importlib.import_module(module_name)
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise PluginError(f"source {spec!r}: module {module_name!r} has no attribute {attr!r}") from None
    return target


def from_code(plugins: Iterable[object]) -> dict[str, Candidate]:
    """Candidates for plugins passed in code (instances or classes)."""
    found: dict[str, Candidate] = {}
    for plugin in plugins:
        name = getattr(plugin, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin passed in code has no name: {plugin!r}")
        if name in found:
            raise PluginError(f"two plugins passed in code are named {name!r}")
        cls = plugin if isinstance(plugin, type) else type(plugin)
        importable = "<locals>" not in cls.__qualname__ and cls.__module__ != "__main__"
        target = f"{cls.__module__}:{cls.__qualname__}" if importable else None
        found[name] = Candidate(
            name, "code", "code", _loader(plugin, "code"), fresh_instances=isinstance(plugin, type), target=target
        )
    return found


def _loader(obj: object, source: str) -> Callable[[], object]:
    return lambda: instantiate(obj, source)


def from_config_source(name: str, spec: str) -> Candidate:
    """A candidate for ``[plugins.NAME] source = "module:Class"``."""
    return Candidate(name, "config", spec, lambda: instantiate(import_source(spec), spec), target=spec)


def from_entry_points(group: str = ENTRY_POINT_GROUP) -> dict[str, Candidate]:
    """Candidates for every entry point in ``group``; nothing is imported."""
    from importlib.metadata import entry_points

    found: dict[str, Candidate] = {}
    for ep in entry_points(group=group):
        if ep.name in found:
            continue  # the first distribution on sys.path wins, as for imports
        dist = getattr(ep, "dist", None)
        version = getattr(dist, "version", None)
        dist_name = getattr(dist, "name", None) or "?"
        source = f"entry point {dist_name} {version or ''} ({ep.value})".replace("  ", " ")
        found[ep.name] = Candidate(ep.name, "entry_point", source, _ep_loader(ep, source), version, target=ep.value)
    return found


def _ep_loader(ep: Any, source: str) -> Callable[[], object]:
    return lambda: instantiate(ep.load(), source)


def merge_candidates(*layers: Mapping[str, Candidate]) -> dict[str, Candidate]:
    """Combine candidate maps; earlier layers win (code, then config, then entry points)."""
    merged: dict[str, Candidate] = {}
    for layer in layers:
        for name, candidate in layer.items():
            merged.setdefault(name, candidate)
    return merged
