"""Finding a plugin's source files without importing anything.

``importlib.util.find_spec("a.b")`` imports package ``a`` (running its
``__init__``): the scanner must never do that, since the kernel never imports
a process-isolated plugin and a vetter must look before the code runs.  So
the top-level name is located with ``PathFinder.find_spec(top, sys.path)``
(and, for editable installs whose top-level lives behind a meta-path finder,
with that finder's ``find_spec(top, None)``, which only locates), and each
submodule with ``PathFinder.find_spec(name, parent_locations)``, which reads
directories and nothing else.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from importlib.machinery import ExtensionFileLoader
from importlib.machinery import ModuleSpec
from importlib.machinery import PathFinder
from importlib.machinery import SourceFileLoader
from typing import Final
from typing import Literal

import attrs

#: larger source files are not read (reported as unscannable)
MAX_SOURCE_BYTES: Final = 4 * 1024 * 1024
_SKIP_DIRS: Final = frozenset({"__pycache__", ".git", ".hg", ".svn", ".tox", ".venv", "node_modules"})

FileKind = Literal["source", "native", "other"]


@attrs.frozen
class SourceFile:
    """One file of a plugin."""

    #: absolute path
    path: str
    #: path for people: relative to the directory that holds the top-level package
    display: str
    #: the module's dotted name
    module: str
    kind: FileKind
    is_package: bool = False


@attrs.frozen
class Located:
    """A module found on disk: its file (none for a namespace package) and, for a package, its directories."""

    name: str
    file: SourceFile | None
    locations: tuple[str, ...] = ()


class NotFound(LookupError):
    """The module (or path) names nothing on disk."""


def _kind(spec: ModuleSpec) -> FileKind:
    if isinstance(spec.loader, SourceFileLoader) or (spec.origin or "").endswith(".py"):
        return "source"
    if isinstance(spec.loader, ExtensionFileLoader) or (spec.origin or "").endswith(tuple(EXTENSION_SUFFIXES)):
        return "native"
    return "other"


def find_top(top: str) -> ModuleSpec | None:
    """Locate a top-level module or package without running any of it."""
    spec = PathFinder.find_spec(top, sys.path)
    if spec is not None:
        return spec
    for finder in sys.meta_path:
        if finder is PathFinder:
            continue
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        try:
            found = find(top, None)
        except Exception:  # a third-party finder that cannot answer: try the next
            continue
        if isinstance(found, ModuleSpec):
            return found
    module = sys.modules.get(top)  # already imported (a plugin passed in code): reading its spec imports nothing
    imported = getattr(module, "__spec__", None)
    return imported if isinstance(imported, ModuleSpec) else None


class Locator:
    """Finds the modules of one top-level package (or a single top-level module) on disk."""

    def __init__(self, top: str) -> None:
        spec = find_top(top)
        if spec is None:
            raise NotFound(f"no module named {top!r} on sys.path")
        self.top = top
        self._spec = spec
        self._cache: dict[str, Located | None] = {}
        locations = tuple(spec.submodule_search_locations or ())
        if spec.origin and os.path.isabs(spec.origin):
            self.base = os.path.dirname(os.path.dirname(spec.origin)) if locations else os.path.dirname(spec.origin)
        elif locations:
            self.base = os.path.dirname(locations[0])
        else:
            self.base = ""
        self._cache[top] = self._located(top, spec)

    def _located(self, name: str, spec: ModuleSpec) -> Located:
        locations = tuple(spec.submodule_search_locations or ())
        origin = spec.origin if spec.origin and os.path.isabs(spec.origin) else None
        file = None
        if origin is not None:
            file = SourceFile(
                os.path.abspath(origin), self.display(origin), name, _kind(spec), is_package=bool(locations)
            )
        return Located(name, file, locations)

    def display(self, path: str) -> str:
        """``path`` relative to the directory that holds the top-level package."""
        if self.base:
            relative = os.path.relpath(path, self.base)
            if not relative.startswith(".."):
                return relative.replace(os.sep, "/")
        return path

    def find(self, name: str) -> Located | None:
        """The module ``name`` (``top`` or below it), or ``None``."""
        if name in self._cache:
            return self._cache[name]
        parent_name, _, _ = name.rpartition(".")
        found: Located | None = None
        if parent_name and (name == self.top or name.startswith(self.top + ".")):
            parent = self.find(parent_name)
            if parent is not None and parent.locations:
                spec = PathFinder.find_spec(name, list(parent.locations))
                if spec is not None:
                    found = self._located(name, spec)
        self._cache[name] = found
        return found

    def chain(self, name: str) -> list[Located]:
        """``name`` and its parent packages (whose ``__init__`` runs when it is imported), top first.

        :raises NotFound: ``name`` or a parent is not there.
        """
        parts = name.split(".")
        found = []
        for index in range(1, len(parts) + 1):
            current = ".".join(parts[:index])
            located = self.find(current)
            if located is None:
                raise NotFound(f"no module named {current!r}" + (f" (looking for {name!r})" if current != name else ""))
            found.append(located)
        return found


def module_name_for(path: str) -> tuple[str, bool, str]:
    """The dotted module name of a source file from the packages around it (``__init__.py`` upwards).

    Returns (name, is_package, the directory holding its top-level package).
    """
    path = os.path.abspath(path)
    directory, filename = os.path.split(path)
    stem = filename.rpartition(".")[0] or filename
    is_package = stem == "__init__"
    parts = [] if is_package else [stem]
    while os.path.isfile(os.path.join(directory, "__init__.py")):
        parts.insert(0, os.path.basename(directory))
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return ".".join(parts) or stem, is_package, directory


def files_under(root: str) -> list[SourceFile]:
    """Every module file under a directory (or the one file), sorted, for a path target.

    :raises NotFound: nothing there.
    """
    root = os.path.abspath(root)
    if os.path.isfile(root):
        name, is_package, _ = module_name_for(root)
        return [SourceFile(root, _relative(root, os.path.dirname(root)), name, _file_kind(root), is_package)]
    if not os.path.isdir(root):
        raise NotFound(f"no file or directory {root!r}")
    found = []
    for directory, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for filename in sorted(names):
            kind = _file_kind(filename)
            if kind == "other":
                continue
            path = os.path.join(directory, filename)
            name, is_package, _ = module_name_for(path)
            found.append(SourceFile(path, _relative(path, os.path.dirname(root)), name, kind, is_package))
    return found


def _file_kind(path: str) -> FileKind:
    if path.endswith((".py", ".pyw")):
        return "source"
    if path.endswith(tuple(EXTENSION_SUFFIXES)):
        return "native"
    return "other"


def _relative(path: str, base: str) -> str:
    relative = os.path.relpath(path, base)
    return path if relative.startswith("..") else relative.replace(os.sep, "/")
