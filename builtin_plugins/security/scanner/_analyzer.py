"""One source file, read with :mod:`ast` alone: what it imports, calls and touches.

Nothing here imports or runs the code it reads.  The analysis of one module
is a list of *sites* -- calls and references, each resolved to the dotted
names it may stand for (``sp.run`` with ``import subprocess as sp`` is
``subprocess.run``) -- plus its imports (to follow the plugin's own modules)
and its *aliases* (module-level names and what they are bound to), with
which the scan resolves names across the plugin's modules
(``from .helpers import run`` where ``helpers`` did ``from subprocess
import run``).  Resolution is flow-insensitive: a name bound to several
things anywhere in the module may stand for any of them.

Which names are risky is decided later, by the rule tables
(:mod:`._rules`); the analyzer itself decides only what needs the local
picture: attribute stores and ``setattr`` on imported modules, writes to
``sys.modules`` and ``os.environ``, computed ``getattr`` on sensitive modules,
frame attributes.
"""

from __future__ import annotations

import ast
import builtins
import threading
from collections.abc import Iterable
from collections.abc import Iterator
from typing import Final
from typing import Literal

import attrs

from ._rules import ATTRIBUTES
from ._rules import CALLS
from ._rules import METHODS
from ._rules import OPENERS
from ._rules import PATH_CLASSES
from ._rules import SENSITIVE_MODULES

#: CPython 3.11 keeps the AST constructor's recursion depth in shared state: two threads parsing at
#: once can fail with "SystemError: AST constructor recursion depth mismatch" (cpython gh-106905).
#: Every parse of the scanner (and bandit's run) holds this lock; parsing is CPU-bound under the GIL anyway.
#: The lock cannot cover parses made elsewhere in the process (3.11's traceback module parses each
#: line it draws carets under, in whatever thread formats an exception), so :func:`parse` also retries.
PARSE_LOCK: Final = threading.Lock()
_DEPTH_MISMATCH: Final = "AST constructor recursion depth mismatch"
#: parses of one source before a depth mismatch is let through
_PARSE_ATTEMPTS: Final = 3
#: an unresolved receiver: ``?.create_connection`` is "create_connection on something"
UNKNOWN: Final = "?"
_BUILTINS: Final = frozenset(dir(builtins))
_IMPORTERS: Final = frozenset({"importlib.import_module", "builtins.__import__", "importlib.__import__"})
_NO_REF_CALLS: Final = frozenset(
    {"builtins.isinstance", "builtins.issubclass", "typing.cast", "builtins.type", "builtins.hasattr"}
)
_MODULE_STORES: Final = {
    "sys.modules": "module-tamper",
    "sys.meta_path": "module-tamper",
    "sys.path_hooks": "module-tamper",
    "sys.path_importer_cache": "module-tamper",
    "os.environ": "environ-write",
    "os.environb": "environ-write",
}


class NonConstant:
    """An argument the analyzer cannot read as a constant."""

    _instance: NonConstant | None = None

    def __new__(cls) -> NonConstant:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<non-constant>"


NONCONST: Final = NonConstant()


@attrs.frozen
class Dotted:
    """An argument that is a plain dotted name, resolved (``os.O_RDONLY``)."""

    names: frozenset[str]


Scalar = str | bytes | int | float | bool | None
#: what an argument is: a constant (or a tuple of them), a dotted name, or neither
Fact = Scalar | tuple[Scalar, ...] | Dotted | NonConstant


@attrs.frozen
class Site:
    """A call or reference in the code, or a finding the analyzer decided itself."""

    kind: Literal["call", "ref", "finding"]
    #: the dotted names it may stand for (maybe internal to the plugin: resolved further by the scan)
    names: frozenset[str]
    line: int
    #: 1-based column
    col: int
    #: the source text (``sp.run``), for messages
    text: str = ""
    #: the first positional arguments as facts
    args: tuple[Fact, ...] = ()
    kwargs: tuple[tuple[str, Fact], ...] = ()
    #: decided findings: the rule and the message
    rule: str | None = None
    message: str = ""


@attrs.frozen
class ImportRef:
    """An import (or a constant ``importlib.import_module``), absolute."""

    module: str
    #: from-import names (submodules perhaps); ``*`` for a star import
    names: tuple[str, ...]
    line: int
    col: int


@attrs.frozen
class ModuleAnalysis:
    """What one module's source says."""

    module: str
    #: module-level (flow-insensitive) bindings: name -> dotted names; a local def maps to itself
    aliases: dict[str, frozenset[str]]
    sites: tuple[Site, ...]
    imports: tuple[ImportRef, ...]
    #: why it could not be parsed, if so
    error: str | None = None


def analyze_source(source: bytes | str, module: str, *, is_package: bool, filename: str = "<plugin>") -> ModuleAnalysis:
    """Analyze one module's source (never executed)."""
    try:
        tree = parse(source, filename)
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None) or 1
        return ModuleAnalysis(module, {}, (), (), error=f"line {line}: {type(exc).__name__}: {exc}")
    return _Analyzer(module, is_package).run(tree)


def parse(source: bytes | str, filename: str) -> ast.Module:
    """``ast.parse`` under :data:`PARSE_LOCK`, again when a parse elsewhere in the process broke it.

    The depth mismatch (gh-106905) says nothing about the source: the tree of the
    failed parse is discarded and the source parsed again, up to three times.
    """
    for attempt in range(1, _PARSE_ATTEMPTS + 1):
        try:
            with PARSE_LOCK:
                return ast.parse(source, filename=filename)
        except SystemError as exc:
            if _DEPTH_MISMATCH not in str(exc) or attempt == _PARSE_ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def package_of(module: str, is_package: bool) -> str:
    """The package relative imports in ``module`` start from."""
    return module if is_package else module.rpartition(".")[0]


def resolve_relative(module: str | None, level: int, package: str) -> str | None:
    """``from ..x import y`` in ``package``: the absolute module, or ``None`` beyond the top."""
    if level == 0:
        return module
    parts = package.split(".") if package else []
    if level - 1 > len(parts) or (level - 1 == len(parts) and not module):
        return None
    base = parts[: len(parts) - (level - 1)]
    if module:
        base.append(module)
    return ".".join(base) or None


class _Analyzer(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool) -> None:
        self.module = module
        self.package = package_of(module, is_package)
        self.bindings: dict[str, set[str]] = {}
        #: modules imported by ``import x.y`` (and constant ``import_module``): dotted names
        self.imported_modules: set[str] = set()
        self.stars: list[str] = []
        self.imports: list[ImportRef] = []
        self.sites: list[Site] = []
        self.assignments: list[tuple[str, ast.expr]] = []
        self._no_ref = 0

    # -- pass 1: bindings -------------------------------------------------------------

    def run(self, tree: ast.Module) -> ModuleAnalysis:
        self._collect(tree.body, in_class=False)
        for _ in range(4):  # aliases of aliases settle in a few rounds
            changed = False
            for name, value in self.assignments:
                found = {q for q in self._qual(value) if not q.startswith(UNKNOWN)}
                current = self.bindings.setdefault(name, set())
                if not found <= current:
                    current |= found
                    changed = True
            if not changed:
                break
        self.visit(tree)
        aliases = {name: frozenset(values) for name, values in self.bindings.items() if values}
        return ModuleAnalysis(self.module, aliases, tuple(self.sites), tuple(self.imports))

    def _bind(self, name: str, value: str) -> None:
        self.bindings.setdefault(name, set()).add(value)

    def _collect(self, body: Iterable[ast.AST], *, in_class: bool) -> None:
        # Class bodies bind no module-level names: only their imports and nested scopes count.
        for node in body:
            for child in _walk_scope(node):
                if isinstance(child, ast.Import):
                    self._collect_import(child)
                elif isinstance(child, ast.ImportFrom):
                    self._collect_from(child)
                elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    if not (in_class and child is node):
                        self._bind(child.name, f"{self.module}.{child.name}")
                    self._collect(child.body, in_class=isinstance(child, ast.ClassDef))
                elif in_class:
                    continue
                elif isinstance(child, ast.Assign):
                    for target in child.targets:
                        if isinstance(target, ast.Name):
                            self.assignments.append((target.id, child.value))
                elif isinstance(child, ast.AnnAssign | ast.NamedExpr):
                    if isinstance(child.target, ast.Name) and child.value is not None:
                        self.assignments.append((child.target.id, child.value))
                elif isinstance(child, ast.withitem) and isinstance(child.optional_vars, ast.Name):
                    self.assignments.append((child.optional_vars.id, child.context_expr))

    def _collect_import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self._bind(alias.asname, alias.name)
            else:
                top = alias.name.partition(".")[0]
                self._bind(top, top)
            parts = alias.name.split(".")
            self.imported_modules.update(".".join(parts[: i + 1]) for i in range(len(parts)))
            self.imports.append(ImportRef(alias.name, (), node.lineno, node.col_offset + 1))

    def _collect_from(self, node: ast.ImportFrom) -> None:
        source = resolve_relative(node.module, node.level, self.package)
        if source is None:
            return
        names = tuple(alias.name for alias in node.names)
        self.imports.append(ImportRef(source, names, node.lineno, node.col_offset + 1))
        for alias in node.names:
            if alias.name == "*":
                self.stars.append(source)
            else:
                self._bind(alias.asname or alias.name, f"{source}.{alias.name}")

    # -- resolution ----------------------------------------------------------------------

    def _qual(self, node: ast.AST) -> set[str]:
        """The dotted names ``node`` may stand for (``?.attr`` when the receiver is unknown)."""
        if isinstance(node, ast.Name):
            bound = self.bindings.get(node.id)
            if bound:
                return set(bound)
            if node.id in _BUILTINS:
                return {f"builtins.{node.id}"}
            if self.stars:
                return {f"{star}.{node.id}" for star in self.stars}
            return {UNKNOWN}
        if isinstance(node, ast.Attribute):
            found = set()
            for base in self._qual(node.value):
                found.add(f"{UNKNOWN}.{node.attr}" if base.startswith(UNKNOWN) else f"{base}.{node.attr}")
            return found
        if isinstance(node, ast.Call):
            special = self._special_call(node)
            if special is not None:
                return special
            found = set()
            for func in self._qual(node.func):
                found.add(UNKNOWN if func.startswith(UNKNOWN) else f"{func}()")
            return found
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):  # Path(x) / "name" is a path
            left = self._qual(node.left)
            if any(q.endswith("()") and q[:-2] in PATH_CLASSES for q in left):
                return left
        if isinstance(node, ast.Await):
            return self._qual(node.value)
        return {UNKNOWN}

    def _special_call(self, node: ast.Call) -> set[str] | None:
        """``getattr(mod, "name")`` is ``mod.name``; ``importlib.import_module("x")`` is module ``x``."""
        funcs = self._qual(node.func)
        if "builtins.getattr" in funcs and len(node.args) >= 2:
            name = _constant(node.args[1])
            if isinstance(name, str):
                return {f"{base}.{name}" for base in self._qual(node.args[0]) if not base.startswith(UNKNOWN)} or {
                    UNKNOWN
                }
        if funcs & _IMPORTERS and node.args:
            target = self._imported_name(node)
            if target is not None:
                if "builtins.__import__" in funcs and not _has_fromlist(node):
                    return {target.partition(".")[0]}
                return {target}
        return None

    def _imported_name(self, node: ast.Call) -> str | None:
        """The absolute module a constant ``import_module(name, package)`` names."""
        name = _constant(node.args[0])
        if not isinstance(name, str) or not name:
            return None
        if not name.startswith("."):
            return name
        package: Fact = _constant(node.args[1]) if len(node.args) > 1 else None
        for keyword in node.keywords:
            if keyword.arg == "package":
                package = _constant(keyword.value)
                if isinstance(keyword.value, ast.Name) and keyword.value.id in ("__package__", "__name__"):
                    package = self.package
        if len(node.args) > 1 and isinstance(node.args[1], ast.Name) and node.args[1].id in ("__package__", "__name__"):
            package = self.package
        if not isinstance(package, str):
            return None
        level = len(name) - len(name.lstrip("."))
        return resolve_relative(name[level:] or None, level, package)

    def _fact(self, node: ast.expr) -> Fact:
        value = _constant(node)
        if value is not NONCONST:
            return value
        if _is_chain(node):
            names = frozenset(q for q in self._qual(node) if not q.startswith(UNKNOWN))
            if names:
                return Dotted(names)
        return NONCONST

    # -- pass 2: sites ---------------------------------------------------------------------

    def _site(
        self,
        kind: Literal["call", "ref"],
        node: ast.expr,
        names: set[str],
        text: str,
        args: tuple[Fact, ...] = (),
        kwargs: tuple[tuple[str, Fact], ...] = (),
    ) -> None:
        useful = frozenset(q for q in names if _worth_keeping(q))
        if useful:
            self.sites.append(Site(kind, useful, node.lineno, node.col_offset + 1, text, args, kwargs))

    def _finding(self, node: ast.AST, rule: str, message: str) -> None:
        self.sites.append(
            Site(
                "finding",
                frozenset(),
                getattr(node, "lineno", 1),
                getattr(node, "col_offset", 0) + 1,
                rule=rule,
                message=message,
            )
        )

    def visit_Import(self, node: ast.Import) -> None:
        pass  # collected in pass 1

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        pass

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        if not isinstance(node, ast.Lambda):
            for decorator in node.decorator_list:
                self.visit(decorator)
        for default in [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]:
            self.visit(default)
        body = node.body if isinstance(node.body, list) else [node.body]
        for statement in body:
            self.visit(statement)

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function
    visit_Lambda = _visit_function

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for decorator in node.decorator_list:
            self.visit(decorator)
        for base in node.bases:
            self.visit(base)
        for keyword in node.keywords:
            self.visit(keyword.value)
        for statement in node.body:
            # A class attribute is no module-level alias (pass 1 did not bind it): ``runner =
            # subprocess.run`` in a class body is a use, reported here (``self.runner()`` is opaque).
            if isinstance(statement, ast.Assign):
                for target in statement.targets:
                    self.visit(target)
                self.visit(statement.value)
            elif isinstance(statement, ast.AnnAssign):
                self.visit(statement.target)
                if statement.value is not None:
                    self.visit(statement.value)
            else:
                self.visit(statement)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self.visit(node.target)  # the annotation is not code that runs
        if node.value is not None:
            self._visit_value(node.value, alias=isinstance(node.target, ast.Name))

    def visit_arg(self, node: ast.arg) -> None:
        pass  # annotations only

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self._no_ref += 1
            self.visit(node.type)
            self._no_ref -= 1
        for statement in node.body:
            self.visit(statement)

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            self.visit(target)
        self._visit_value(node.value, alias=all(isinstance(t, ast.Name) for t in node.targets))

    def _visit_value(self, value: ast.expr, *, alias: bool) -> None:
        # ``run = subprocess.run`` binds an alias (its uses are the findings); anything else is visited.
        if alias and _is_chain(value):
            self._inner(value)
            return
        if alias and isinstance(value, ast.Call) and self._special_call(value) is not None:
            self._record_import_call(value)
            for arg in value.args[1:]:
                self.visit(arg)
            return
        self.visit(value)

    def visit_Call(self, node: ast.Call) -> None:
        funcs = self._qual(node.func)
        if funcs & _IMPORTERS and node.args and self._imported_name(node) is not None:
            self._record_import_call(node)
        else:
            self._call_checks(node, funcs)
            text = _text(node.func)
            self._site(
                "call",
                node,
                funcs,
                text=text,
                args=tuple(self._fact(arg) for arg in node.args[:3]),
                kwargs=tuple((kw.arg, self._fact(kw.value)) for kw in node.keywords if kw.arg is not None),
            )
        self._inner(node.func)
        no_ref = bool(funcs & _NO_REF_CALLS)
        self._no_ref += no_ref
        for arg in node.args:
            self.visit(arg)
        self._no_ref -= no_ref
        for keyword in node.keywords:
            self.visit(keyword.value)

    def _record_import_call(self, node: ast.Call) -> None:
        target = self._imported_name(node)
        if target is not None:
            self.imports.append(ImportRef(target, (), node.lineno, node.col_offset + 1))
            self.imported_modules.add(target)

    def _call_checks(self, node: ast.Call, funcs: set[str]) -> None:
        if funcs & {"builtins.setattr", "builtins.delattr"} and node.args:
            target = self._imported_module(node.args[0])
            if target is not None:
                verb = "setattr" if "builtins.setattr" in funcs else "delattr"
                self._finding(node, "module-tamper", f"{verb}() on module {target}: changes other code at run time")
        if "builtins.getattr" in funcs and len(node.args) >= 2 and _constant(node.args[1]) is NONCONST:
            for base in self._qual(node.args[0]):
                if base.partition(".")[0] in SENSITIVE_MODULES and base in self.imported_modules:
                    self._finding(
                        node, "dynamic-access", f"getattr({base}, <computed name>): reaches {base} by a computed name"
                    )
                    break

    def _imported_module(self, node: ast.expr) -> str | None:
        """The imported module ``node`` names (``os``, ``os.path``), if it plainly names one."""
        if not _is_chain(node):
            return None
        names = sorted(q for q in self._qual(node) if q in self.imported_modules)
        return names[0] if names else None

    def _inner(self, node: ast.expr) -> None:
        """Visit the receiver of a call or attribute without reporting the chain itself."""
        while isinstance(node, ast.Attribute):
            self._attribute_checks(node)
            node = node.value
        if isinstance(node, ast.Name):
            self._name_checks(node)
        else:
            self.visit(node)

    def _attribute_checks(self, node: ast.Attribute) -> None:
        rule = ATTRIBUTES.get(node.attr)
        if rule is not None:
            self._finding(node, rule, f"uses .{node.attr}: reaches other code's frames or objects")

    def _name_checks(self, node: ast.Name) -> None:
        if node.id == "__builtins__":
            self._finding(node, "dynamic-access", "uses __builtins__: reaches builtins around name resolution")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, ast.Store | ast.Del):
            self._store_checks(node)
        elif not self._no_ref:
            self._site("ref", node, self._qual(node), text=_text(node))
        self._inner(node)

    def _store_checks(self, node: ast.Attribute) -> None:
        whole = {q for q in self._qual(node) if not q.startswith(UNKNOWN)}
        for name, rule in _MODULE_STORES.items():
            if name in whole:
                self._finding(
                    node,
                    rule,
                    f"assigns {name}: {'changes the environment' if 'environ' in name else 'changes other code at run time'}",
                )
                return
        target = self._imported_module(node.value)
        if target is not None:
            verb = "assigns" if isinstance(node.ctx, ast.Store) else "deletes"
            self._finding(node, "module-tamper", f"{verb} {target}.{node.attr}: changes an imported module at run time")

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, ast.Store | ast.Del):
            whole = {q for q in self._qual(node.value) if not q.startswith(UNKNOWN)}
            for name, rule in _MODULE_STORES.items():
                if name in whole:
                    verb = "assigns" if isinstance(node.ctx, ast.Store) else "deletes"
                    self._finding(
                        node,
                        rule,
                        f"{verb} {name}[...]: "
                        + ("changes the environment" if "environ" in name else "changes other code at run time"),
                    )
                    break
            self._inner(node.value)
        else:
            self.visit(node.value)
        self.visit(node.slice)

    def visit_Name(self, node: ast.Name) -> None:
        self._name_checks(node)
        if isinstance(node.ctx, ast.Load) and not self._no_ref:
            self._site("ref", node, self._qual(node), text=node.id)


def _worth_keeping(name: str) -> bool:
    """Whether a resolved name could match a rule (most loads are local variables: ``?``)."""
    if name.startswith(UNKNOWN):
        return name.startswith(UNKNOWN + ".") and name[2:] in METHODS
    if name.startswith("builtins."):
        return name in CALLS or name in OPENERS
    return True


def _walk_scope(node: ast.AST) -> Iterator[ast.AST]:
    """``node`` and its descendants, stopping at (but yielding) nested function and class definitions."""
    yield node
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return
    stack = list(ast.iter_child_nodes(node))
    while stack:
        child = stack.pop()
        yield child
        if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            stack.extend(ast.iter_child_nodes(child))


def _scalar(node: ast.expr) -> Scalar | NonConstant:
    if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes | int | float | bool | type(None)):
        return node.value
    return NONCONST


def _constant(node: ast.expr) -> Fact:
    if isinstance(node, ast.Tuple):  # socket.create_connection(("host", 443))
        items = [_scalar(item) for item in node.elts]
        if all(not isinstance(item, NonConstant) for item in items):
            return tuple(item for item in items if not isinstance(item, NonConstant))
        return NONCONST
    return _scalar(node)


def _is_chain(node: ast.expr) -> bool:
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name)


def _has_fromlist(node: ast.Call) -> bool:
    if len(node.args) >= 4:
        return True
    return any(keyword.arg == "fromlist" for keyword in node.keywords)


def _text(node: ast.AST) -> str:
    try:
        text = ast.unparse(node)
    except Exception:  # an AST unparse cannot render: the message goes without
        return ""
    return text if len(text) <= 60 else text[:57] + "..."
