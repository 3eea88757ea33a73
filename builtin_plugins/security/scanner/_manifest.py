"""A plugin class's manifest, read from its source: ``name = ...`` and ``permissions = (...)``.

The kernel never imports a process-isolated plugin, and ``orion-kernel scan``
vets code before anyone runs it, so the manifest comes from the AST of the
class definition: class attributes that are literals (or module-level
constants holding literals), inherited from the plugin's own base classes
when not set on the class, following re-exports (``from ._plugin import
Analytics``).  What is not a literal (``permissions = compute()``) is not
guessed: the report says so and nothing counts as declared.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any
from typing import Final

import attrs

from ._analyzer import NONCONST
from ._analyzer import ModuleAnalysis
from ._analyzer import parse
from ._locate import MAX_SOURCE_BYTES
from ._locate import SourceFile

if TYPE_CHECKING:
    from ._scan import Engine

_PLUGIN_BASES: Final = frozenset({"plugin_sdk.Plugin", "plugin_sdk._plugin.Plugin"})
_MAX_DEPTH: Final = 6


@attrs.frozen
class StaticManifest:
    """A plugin class's manifest as its source writes it (read from the AST, never imported)."""

    #: ``module:Qualname`` (several, comma-separated, for a module with several plugin classes)
    cls: str
    name: str | None
    #: ``None``: not statically readable (then nothing counts as declared)
    permissions: tuple[str, ...] | None
    notes: tuple[str, ...] = ()


class ManifestReader:
    """Reads plugin classes among one scan's files (each file parsed at most once per reader)."""

    def __init__(self, engine: Engine, files: Sequence[SourceFile]) -> None:
        from ._scan import expand

        self._expand = expand
        self._by_module = {f.module: f for f in files if f.kind == "source"}
        self._analyses: dict[str, ModuleAnalysis] = {m: engine.analysis(f)[1] for m, f in self._by_module.items()}
        self._trees: dict[str, ast.Module | None] = {}

    def read(self, module: str, qualname: str | None) -> StaticManifest:
        """The manifest of ``module:qualname``, or of the plugin classes in the files when no class is named."""
        if qualname is None:
            return self.discover()
        found = self._manifest(module, qualname, depth=0)
        if found is None:
            return StaticManifest(
                f"{module}:{qualname}",
                None,
                None,
                (f"class {qualname} not found in the source of {module}: no permission counts as declared",),
            )
        return found

    def discover(self) -> StaticManifest:
        """The manifest of the plugin classes (subclasses of ``plugin_sdk.Plugin``) defined in the files."""
        manifests = []
        for module in self._by_module:
            tree = self._tree(module)
            for node in tree.body if tree is not None else ():
                if isinstance(node, ast.ClassDef) and self._is_plugin(module, node, 0):
                    found = self._manifest(module, node.name, depth=0)
                    if found is not None:
                        manifests.append(found)
        if not manifests:
            return StaticManifest("", None, None, ("no plugin class found: no permission counts as declared",))
        if len(manifests) == 1:
            return manifests[0]
        permissions = tuple(dict.fromkeys(p for m in manifests for p in (m.permissions or ())))
        names = ", ".join(m.cls for m in manifests)
        note = f"several plugin classes ({names}): compared with the union of their permissions"
        return StaticManifest(names, None, permissions, (note,))

    # -- classes ---------------------------------------------------------------------------------

    def _tree(self, module: str) -> ast.Module | None:
        if module not in self._trees:
            file = self._by_module.get(module)
            self._trees[module] = _parse_file(file.path) if file is not None else None
        return self._trees[module]

    def _class(self, module: str, qualname: str) -> ast.ClassDef | None:
        tree = self._tree(module)
        if tree is None:
            return None
        body: list[ast.stmt] = tree.body
        node: ast.ClassDef | None = None
        for part in qualname.split("."):
            node = next((n for n in body if isinstance(n, ast.ClassDef) and n.name == part), None)
            if node is None:
                return None
            body = node.body
        return node

    def _bases(self, module: str, node: ast.ClassDef) -> set[str]:
        """The dotted names a class's bases resolve to (through the plugin's own modules)."""
        analysis = self._analyses.get(module)
        if analysis is None:
            return set()
        names: set[str] = set()
        for base in node.bases:
            dotted = _dotted(base)
            if dotted is None:
                continue
            head, _, rest = dotted.partition(".")
            for target in analysis.aliases.get(head, frozenset({f"{module}.{head}"})):
                names |= self._expand(target + (f".{rest}" if rest else ""), self._analyses)
        return names

    def _is_plugin(self, module: str, node: ast.ClassDef, depth: int) -> bool:
        if depth > _MAX_DEPTH:
            return False
        for base in self._bases(module, node):
            if base in _PLUGIN_BASES:
                return True
            owner, _, name = base.rpartition(".")
            found = self._class(owner, name) if owner in self._by_module else None
            if found is not None and self._is_plugin(owner, found, depth + 1):
                return True
        return False

    def _manifest(self, module: str, qualname: str, *, depth: int) -> StaticManifest | None:
        if depth > _MAX_DEPTH or module not in self._by_module:
            return None
        node = self._class(module, qualname)
        if node is None:
            # Re-exported (``from ._plugin import Analytics``): follow the alias to the defining module.
            if "." in qualname:
                return None
            for target in sorted(self._analyses[module].aliases.get(qualname, ())):
                owner, _, name = target.rpartition(".")
                if owner != module:
                    found = self._manifest(owner, name, depth=depth + 1)
                    if found is not None:
                        return found
            return None
        values, notes = self._values(module, node, depth)
        cls = f"{module}:{qualname}"
        plugin_name = values.get("name")
        permissions = values.get("permissions", ())
        if permissions is not None and not (
            isinstance(permissions, list | tuple) and all(isinstance(p, str) for p in permissions)
        ):
            notes.append(f"{cls}.permissions is not a sequence of strings: no permission counts as declared")
            permissions = None
        return StaticManifest(
            cls,
            plugin_name if isinstance(plugin_name, str) else None,
            tuple(permissions) if permissions is not None else None,
            tuple(notes),
        )

    def _values(self, module: str, node: ast.ClassDef, depth: int) -> tuple[dict[str, Any], list[str]]:
        """``name`` and ``permissions`` as literals; ``permissions`` inherited from base classes of the plugin."""
        values: dict[str, Any] = {}
        notes: list[str] = []
        for base in sorted(self._bases(module, node)):
            owner, _, name = base.rpartition(".")
            inherited = self._manifest(owner, name, depth=depth + 1) if owner in self._by_module else None
            if inherited is not None:
                if inherited.permissions is not None:
                    values.setdefault("permissions", inherited.permissions)
                notes.extend(inherited.notes)
        tree = self._tree(module)
        constants = _module_constants(tree) if tree is not None else {}
        for statement in node.body:
            target, value = _assignment(statement)
            if target not in ("name", "permissions") or value is None:
                continue
            literal = _literal(value, constants)
            if literal is NONCONST:
                notes.append(
                    f"{module}:{node.name}.{target} is not a literal the scan can read"
                    + (": no permission counts as declared" if target == "permissions" else "")
                )
                values[target] = None
            else:
                values[target] = literal
        return values, notes


def _parse_file(path: str) -> ast.Module | None:
    try:
        with open(path, "rb") as handle:
            source = handle.read(MAX_SOURCE_BYTES + 1)
        if len(source) > MAX_SOURCE_BYTES:
            return None
        return parse(source, path)
    except (OSError, SyntaxError, ValueError):
        return None


def _dotted(node: ast.expr) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _assignment(statement: ast.stmt) -> tuple[str | None, ast.expr | None]:
    if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(statement.targets[0], ast.Name):
        return statement.targets[0].id, statement.value
    if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
        return statement.target.id, statement.value
    return None, None


def _module_constants(tree: ast.Module) -> dict[str, ast.expr]:
    found = {}
    for statement in tree.body:
        target, value = _assignment(statement)
        if target is not None and value is not None:
            found[target] = value
    return found


def _literal(node: ast.expr, constants: Mapping[str, ast.expr], depth: int = 0) -> Any:
    if isinstance(node, ast.Name) and node.id in constants and depth < 3:
        return _literal(constants[node.id], constants, depth + 1)
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return NONCONST
