"""What ``orion-kernel conformance TARGET`` runs on: a plugin entry point, ``module:Class``, or a
distribution (every plugin it ships), and the compatibility surface ``--against`` compares."""

from __future__ import annotations

import configparser
import importlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from importlib.metadata import distributions
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from typing import Final

import attrs

from plugin_sdk import Manifest
from plugin_sdk import OrionError
from plugin_sdk import Plugin

#: the kernel's plugin entry-point group
GROUP: Final = "orion_kernel.plugins"


class TargetError(OrionError):
    """A conformance target (or ``--against`` release) that names nothing loadable."""


def _import(spec: str) -> type[Plugin]:
    module_name, _, qualname = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise TargetError(f"cannot load {spec!r}: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, type):
        raise TargetError(f"{spec!r} is not a class")
    return obj


def resolve(target: str) -> list[type[Plugin]]:
    """The plugin classes ``target`` names.

    :raises TargetError: it is neither ``module:Class``, nor a plugin entry point, nor an
        installed distribution shipping plugin entry points.
    """
    if ":" in target:
        return [_import(target)]
    found = [ep for ep in entry_points(group=GROUP) if ep.name == target]
    if found:
        return [_import(ep.value) for ep in found]
    wanted = target.lower().replace("_", "-")
    for dist in distributions():
        if (dist.metadata["Name"] or "").lower().replace("_", "-") == wanted:
            eps = [ep for ep in dist.entry_points if ep.group == GROUP]
            if not eps:
                raise TargetError(f"distribution {target!r} ships no {GROUP} entry point")
            return [_import(ep.value) for ep in sorted(eps, key=lambda ep: ep.name)]
    known = sorted({ep.name for ep in entry_points(group=GROUP)})
    raise TargetError(
        f"{target!r} is not module:Class, a plugin entry point ({', '.join(known) or 'none installed'}) "
        "or an installed distribution"
    )


# -- the compatibility surface ----------------------------------------------------------------------


@attrs.frozen
class Surface:
    """What a release promises its users: settings (and whether each is required), operations,
    provided services."""

    plugin: str
    version: str
    settings: Mapping[str, bool]  # name -> required (no default)
    operations: tuple[str, ...]
    provides: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


async def surface_of(cls: type[Plugin]) -> Surface:
    """Read ``cls``'s surface; its operations by starting it once (with its example settings)."""
    from ._checks import _kernel
    from ._suite import Subject
    from ._suite import _providers

    probe = cls()
    manifest = Manifest.of(probe)
    settings = {f.name: f.default is attrs.NOTHING for f in attrs.fields(manifest.Config)}
    subject = Subject(cls, dict(probe.conformance_settings or {}), _providers(probe, None))
    operations: tuple[str, ...] = ()
    async with _kernel(subject, cls()) as kernel:
        operations = tuple(sorted(op.name for op in kernel.operations.values() if op.plugin == manifest.name))
    return Surface(manifest.name, manifest.version, settings, operations, tuple(sorted(manifest.provides)))


def compare(previous: Surface, current: Surface) -> list[str]:
    """How ``current`` breaks users of ``previous``: each problem, described."""
    problems = []
    removed = sorted(set(previous.settings) - set(current.settings))
    if removed:
        problems.append(f"settings removed: {removed}")
    newly_required = sorted(
        name for name, required in current.settings.items() if required and not previous.settings.get(name, False)
    )
    if newly_required:
        problems.append(f"settings now required without a default: {newly_required}")
    gone = sorted(set(previous.operations) - set(current.operations))
    if gone:
        problems.append(f"operations removed: {gone}")
    dropped = sorted(set(previous.provides) - set(current.provides))
    if dropped:
        problems.append(f"provided services removed: {dropped}")
    return problems


_SURFACE_OF: Final = """
import json, sys
sys.path.insert(0, sys.argv[1])
import anyio
from plugin_sdk.testing._targets import _import, surface_of
print(json.dumps(anyio.run(surface_of, _import(sys.argv[2])).to_json()))
"""


def previous_surfaces(release: str) -> dict[str, Surface]:
    """The surfaces of the plugins in a previous release: a wheel file, or a directory holding
    the unpacked release (its ``*.dist-info``).  Read in a fresh process, so the two versions
    never share one interpreter.

    :raises TargetError: not a wheel or directory, or no plugin entry point in it.
    """
    path = Path(release)
    with tempfile.TemporaryDirectory(prefix="orion-previous-") as scratch:
        if path.is_file() and path.suffix == ".whl":
            with zipfile.ZipFile(path) as wheel:
                wheel.extractall(scratch)
            root = Path(scratch)
        elif path.is_dir():
            root = path
        else:
            raise TargetError(f"--against {release!r}: expected a wheel file or an unpacked release directory")
        targets: dict[str, str] = {}
        for entry_file in root.glob("*.dist-info/entry_points.txt"):
            parser = configparser.ConfigParser(delimiters=("=",))
            parser.optionxform = str  # type: ignore[assignment,method-assign]
            parser.read(entry_file)
            if parser.has_section(GROUP):
                targets.update(dict(parser.items(GROUP)))
        if not targets:
            raise TargetError(f"--against {release!r}: no {GROUP} entry point in its *.dist-info")
        surfaces = {}
        for name, value in sorted(targets.items()):
            done = subprocess.run(
                [sys.executable, "-c", _SURFACE_OF, str(root), value.strip()],
                capture_output=True,
                text=True,
                timeout=120,
                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
                check=False,
            )
            if done.returncode != 0:
                tail = " ".join(done.stderr.strip().splitlines()[-1:])
                raise TargetError(f"--against {release!r}: cannot read plugin {name!r} of it: {tail}")
            data = json.loads(done.stdout.strip().splitlines()[-1])
            surfaces[data["plugin"]] = Surface(
                data["plugin"],
                data["version"],
                data["settings"],
                tuple(data["operations"]),
                tuple(data["provides"]),
            )
        return surfaces
