"""The scan: a plugin's files, their findings, and the comparison with its manifest.

``Engine`` is what the plugin, its operation and ``orion-kernel scan`` share.
Given a module name it collects the plugin's files without importing
anything: the module, its parent packages' ``__init__`` files (they run when
it is imported) and every module of the same top-level package it imports,
transitively, statically (``import``, ``from``, constant
``importlib.import_module``).  Other top-level packages are dependencies: not
scanned, but what the plugin calls in them is (``httpx.AsyncClient()``).

Each file is analyzed once per content (path, mtime, size) for the life of
the process; a scan whose files have not changed returns its cached raw
findings.  Comparing with the manifest is cheap and done on every call.
"""

from __future__ import annotations

import collections
import os
import re
import threading
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import Final
from typing import Literal

import attrs

from plugin_sdk import Permission
from plugin_sdk import PermissionSyntaxError
from plugin_sdk import parse_permission

from ._analyzer import NONCONST
from ._analyzer import UNKNOWN
from ._analyzer import Dotted
from ._analyzer import Fact
from ._analyzer import ModuleAnalysis
from ._analyzer import Site
from ._analyzer import analyze_source
from ._locate import MAX_SOURCE_BYTES
from ._locate import Locator
from ._locate import NotFound
from ._locate import SourceFile
from ._locate import files_under
from ._manifest import ManifestReader
from ._manifest import StaticManifest as StaticManifest
from ._rules import ANY_PATH
from ._rules import CALLS
from ._rules import IMPORTS
from ._rules import METHODS
from ._rules import OPENERS
from ._rules import PATH_CLASSES
from ._rules import PATH_METHODS
from ._rules import PREFIXES
from ._rules import RULES
from ._rules import SEVERITIES
from ._rules import VERBS
from ._rules import Severity
from ._rules import rank

#: the entry-point group plugins are published under (read, never loaded)
ENTRY_POINT_GROUP: Final = "orion_kernel.plugins"
_PLACEHOLDER: Final = re.compile(r"\{[^{}]*\}")
_HTTP_VERBS: Final = ("get", "post", "put", "patch", "delete", "head", "options")
#: how ``fs:ACTION:/**`` parses (plugin_sdk 1.0.0 makes its target "./**")
_ANY_PATH_TARGETS: Final = frozenset({ANY_PATH, parse_permission(f"fs:read:{ANY_PATH}").target})
_IDENTIFIER: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")
_RESULT_CACHE_SIZE: Final = 256
BanditState = Literal["off", "ran", "unavailable"]


class ScanError(Exception):
    """The target names nothing that can be scanned; the message says why."""


@attrs.frozen
class RawFinding:
    """A finding before the comparison with the manifest."""

    rule: str
    severity: Severity
    file: str
    line: int
    col: int
    message: str
    permission: str | None
    alternatives: tuple[str, ...] = ()
    source: Literal["scanner", "bandit"] = "scanner"
    #: absolute path of the file
    path: str = attrs.field(default="", eq=False)


@attrs.frozen
class Finding:
    """What the scan found, compared with what the plugin asks for."""

    rule: str
    #: after the comparison: ``info`` when a permission the plugin asks for covers it
    severity: Severity
    file: str
    line: int
    col: int
    message: str
    #: the permission it would need (wildcards where the scan cannot tell), or None
    permission: str | None
    declared: bool = False
    #: the asked permission that covers it
    declared_by: str | None = None
    #: the rule's severity before the comparison
    original_severity: Severity = "info"
    source: Literal["scanner", "bandit"] = "scanner"

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "original_severity": self.original_severity,
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "location": self.location,
            "message": self.message,
            "permission": self.permission,
            "declared": self.declared,
            "declared_by": self.declared_by,
            "source": self.source,
        }


@attrs.frozen
class ScanReport:
    """The result of one scan."""

    target: str
    #: the plugin's name, when known
    plugin: str | None
    #: the permissions the findings were compared with
    permissions: tuple[str, ...]
    files: tuple[str, ...]
    findings: tuple[Finding, ...]
    bandit: BanditState = "off"
    notes: tuple[str, ...] = ()
    #: findings left out by ``ignore_rules``
    ignored: int = 0

    def at_or_above(self, severity: str, *, undeclared_only: bool = True) -> list[Finding]:
        """Findings at or above ``severity`` (undeclared ones only, by default)."""
        floor = rank(severity)
        return [f for f in self.findings if rank(f.severity) >= floor and not (undeclared_only and f.declared)]

    def counts(self) -> dict[str, int]:
        found = collections.Counter(f.severity for f in self.findings)
        return {severity: found.get(severity, 0) for severity in reversed(SEVERITIES)}

    def highest(self) -> Severity | None:
        return max((f.severity for f in self.findings), key=rank, default=None)

    def summary(self) -> str:
        counts = ", ".join(f"{n} {severity}" for severity, n in self.counts().items() if n)
        declared = sum(f.declared for f in self.findings)
        text = f"{len(self.findings)} finding(s)" + (f" ({counts})" if counts else "")
        text += f"; {declared} declared" if declared else ""
        text += f"; {len(self.files)} file(s) scanned; bandit: {self.bandit}"
        if self.ignored:
            text += f"; {self.ignored} ignored by rule"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "plugin": self.plugin,
            "permissions": list(self.permissions),
            "files": list(self.files),
            "findings": [f.to_json() for f in self.findings],
            "summary": {
                "total": len(self.findings),
                "by_severity": self.counts(),
                "declared": sum(f.declared for f in self.findings),
                "undeclared": sum(not f.declared for f in self.findings),
                "highest": self.highest(),
                "ignored": self.ignored,
            },
            "bandit": self.bandit,
            "notes": list(self.notes),
        }


# -- the manifest's asks against the findings' needs -----------------------------------------------


@attrs.frozen
class _Ask:
    text: str
    kind: str
    action: str
    #: the parsed permission; None when it has placeholders (filled in from settings at start)
    exact: Permission | None


def _asks(texts: Iterable[str]) -> tuple[list[_Ask], list[str]]:
    asks, notes = [], []
    for text in texts:
        kind, _, rest = text.partition(":")
        if _PLACEHOLDER.search(text):
            action = rest.partition(":")[0] if kind in ("fs", "net") else ""
            asks.append(_Ask(text, kind, action, None))
            continue
        try:
            permission = parse_permission(text)
        except PermissionSyntaxError as exc:
            notes.append(f"ignored an invalid asked permission: {exc}")
            continue
        asks.append(_Ask(text, permission.kind, permission.action, permission))
    return asks, notes


def _is_wildcard(need: Permission) -> bool:
    """A need the scan could not narrow: any path, any host, any port."""
    if need.kind == "fs":
        return need.target in _ANY_PATH_TARGETS
    if need.kind == "net":
        return need.target == "*"
    return need.kind in ("subprocess", "ffi")


def _declared_by(needs: Sequence[str], asks: Sequence[_Ask]) -> str | None:
    """The asked permission that covers one of ``needs``, if any.

    An ask covers a need when ``Permission.covers`` says so; a need the scan
    could not narrow (``net:connect:*:*``) is also covered by any ask of the
    same kind and action (the plugin does ask for network connections; the
    guard and the grants decide which ones).  An ask with placeholders
    covers only such wildcard needs.
    """
    for text in needs:
        try:
            need = parse_permission(text)
        except PermissionSyntaxError:
            continue
        for ask in asks:
            if ask.exact is not None and ask.exact.covers(need):
                return ask.text
            same_action = ask.action == need.action or (ask.kind == "fs" and ask.action == "write")
            if _is_wildcard(need) and ask.kind == need.kind and same_action:
                return ask.text
    return None


def compare(
    raw: Iterable[RawFinding], permissions: Sequence[str], *, ignore_rules: Iterable[str] = ()
) -> tuple[list[Finding], int, list[str]]:
    """Findings with declared ones downgraded to ``info``; (findings, how many ignored, notes)."""
    asks, notes = _asks(permissions)
    ignored_rules = set(ignore_rules)
    findings: list[Finding] = []
    ignored = 0
    for item in raw:
        if item.rule in ignored_rules or item.rule.removeprefix("bandit.") in ignored_rules:
            ignored += 1
            continue
        needs = [item.permission, *item.alternatives] if item.permission else []
        covering = _declared_by(needs, asks) if needs else None
        findings.append(
            Finding(
                rule=item.rule,
                severity="info" if covering else item.severity,
                file=item.file,
                line=item.line,
                col=item.col,
                message=item.message,
                permission=item.permission,
                declared=covering is not None,
                declared_by=covering,
                original_severity=item.severity,
                source=item.source,
            )
        )
    findings.sort(key=lambda f: (-rank(f.severity), -rank(f.original_severity), f.file, f.line, f.col, f.rule))
    return findings, ignored, notes


# -- matching names against the rules ---------------------------------------------------------------


def expand(name: str, modules: Mapping[str, ModuleAnalysis], depth: int = 0) -> set[str]:
    """Resolve a name through the plugin's own modules' aliases (``pkg.helpers.run`` -> ``subprocess.run``)."""
    if depth > 8 or name.startswith(UNKNOWN):
        return {name}
    parts = name.split(".")
    for index in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:index])
        analysis = modules.get(module)
        if analysis is None:
            continue
        head = parts[index]
        called = head.endswith("()")
        key = head[:-2] if called else head
        targets = analysis.aliases.get(key)
        if not targets:
            return {name}
        rest = parts[index + 1 :]
        found: set[str] = set()
        for target in targets:
            if target == f"{module}.{key}":  # defined there: the plugin's own code, scanned as such
                found.add(name)
                continue
            rebuilt = target + ("()" if called else "") + ("." + ".".join(rest) if rest else "")
            found |= expand(rebuilt, modules, depth + 1)
        return found
    return {name}


def _fact(site: Site, index: int | None, keyword: str | None = None) -> Fact | None:
    """Argument ``index`` (or keyword ``keyword``) of a call site; ``None`` when absent."""
    if keyword is not None:
        for name, value in site.kwargs:
            if name == keyword:
                return value
    if index is not None and index < len(site.args):
        return site.args[index]
    return None


def _path_permission(action: str, fact: Fact | None) -> str:
    if isinstance(fact, str) and os.path.isabs(fact) and "\x00" not in fact:
        candidate = f"fs:{action}:{os.path.normpath(fact)}"
        try:
            parse_permission(candidate)
        except PermissionSyntaxError:
            pass
        else:
            return candidate
    return f"fs:{action}:{ANY_PATH}"


def _opener(name: str, site: Site) -> tuple[str, str, str] | None:
    """(rule, permission, detail) of a call that opens a file."""
    if name not in OPENERS:  # a path object's open(mode)
        path_index: int | None = None
        mode_index, default = 0, "r"
    else:
        path_index, mode_index, default = OPENERS[name]
    if site.kind == "ref":
        return "file-write", f"fs:write:{ANY_PATH}", ""
    path = _fact(site, path_index, "file")
    if path is None and path_index is not None:
        path = next((value for key, value in site.kwargs if key in ("name", "path", "database", "filename")), None)
    if name in ("sqlite3.connect", "aiosqlite.connect") and path == ":memory:":
        return None
    if default == "flags":  # os.open(path, flags)
        flags = _fact(site, mode_index, "flags")
        write = not (isinstance(flags, Dotted) and flags.names <= {"os.O_RDONLY"})
        detail = " with flags that may write" if write else " read-only"
    else:
        mode = _fact(site, mode_index, "mode")
        if mode is None:
            mode = default
        write = (
            mode is NONCONST or isinstance(mode, Dotted) or (isinstance(mode, str) and any(c in mode for c in "wax+"))
        )
        detail = f" with mode {mode!r}" if isinstance(mode, str) else " with a computed mode"
    action = "write" if write else "read"
    return ("file-write" if write else "file-read"), _path_permission(action, path), detail


#: calls whose constant arguments name the peer: name -> (how, index of the host or URL argument)
_PEERS: Final[dict[str, tuple[Literal["address", "host_port", "url"], int]]] = {
    "socket.create_connection": ("address", 0),
    "asyncio.open_connection": ("host_port", 0),
    "anyio.connect_tcp": ("host_port", 0),
    "trio.open_tcp_stream": ("host_port", 0),
    "smtplib.SMTP": ("host_port", 0),
    "smtplib.SMTP_SSL": ("host_port", 0),
    "ftplib.FTP": ("host_port", 0),
    "http.client.HTTPConnection": ("host_port", 0),
    "http.client.HTTPSConnection": ("host_port", 0),
    "urllib.request.urlopen": ("url", 0),
    "urllib.request.urlretrieve": ("url", 0),
    **{f"{lib}.{verb}": ("url", 0) for lib in ("httpx", "requests") for verb in _HTTP_VERBS},
    "httpx.request": ("url", 1),
    "httpx.stream": ("url", 1),
    "requests.request": ("url", 1),
    "aiohttp.request": ("url", 1),
}
_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21, "smtp": 25}


def _peer_permission(name: str, site: Site) -> str | None:
    """``net:connect:HOST:PORT`` when a connection's peer is a constant, else ``None``."""
    how, index = _PEERS[name]
    first = _fact(site, index)
    host: object = None
    port: object = None
    if how == "address" and isinstance(first, tuple) and len(first) >= 2:
        host, port = first[0], first[1]
    elif how == "host_port":
        host, port = first, _fact(site, index + 1, "port")
        if port is None and name in ("http.client.HTTPSConnection", "smtplib.SMTP_SSL"):
            port = {"http.client.HTTPSConnection": 443, "smtplib.SMTP_SSL": 465}[name]
        elif port is None and name == "http.client.HTTPConnection":
            port = 80
    elif how == "url" and isinstance(first, str):
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(first)
            host, port = parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme)
        except ValueError:
            return None
    if not (isinstance(host, str) and host and type(port) is int):
        return None
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    candidate = f"net:connect:{shown.lower()}:{port}"
    try:
        parse_permission(candidate)
    except PermissionSyntaxError:
        return None
    return candidate


def _yaml_safe(site: Site) -> bool:
    loader = _fact(site, 1, "Loader")
    return isinstance(loader, Dotted) and any("Safe" in n or "BaseLoader" in n for n in loader.names)


#: path methods and attributes that give another path (``Path(p).expanduser().open("w")``)
_PATH_STEPS: Final = frozenset(
    {"expanduser()", "resolve()", "absolute()", "with_name()", "with_suffix()", "with_stem()", "joinpath()", "parent"}
)


def _is_path(receiver: str) -> bool:
    """Whether a resolved receiver is a path object: ``pathlib.Path()`` and path-returning steps from it."""
    for cls in PATH_CLASSES:
        if receiver.startswith(cls + "()"):
            rest = receiver[len(cls) + 2 :]
            return all(step in _PATH_STEPS for step in rest.split(".")[1:]) if rest else True
    return False


def match(name: str, site: Site) -> tuple[str, str | None, str] | None:
    """(rule, permission, detail) for one resolved name at a site, or ``None``."""
    receiver, _, method = name.rpartition(".")
    if name in OPENERS or (method == "open" and _is_path(receiver)):
        return _opener(name, site)
    rule = CALLS.get(name)
    if rule is None and name in ("yaml.load", "yaml.load_all") and not (site.kind == "call" and _yaml_safe(site)):
        rule = "deserialize"
    if rule is None and "()" not in name:  # ``os.environ.get()`` is a value read from it, not the environ
        for prefix, prefixed in PREFIXES:
            if name == prefix or (name.startswith(prefix) and name[len(prefix)] in "._abcdefghijklmnopqrstuvwxyz"):
                rule = prefixed
                break
    if rule is None and method in PATH_METHODS and _is_path(receiver):
        rule = PATH_METHODS[method]
    if rule is None and method in METHODS and (receiver == UNKNOWN or receiver.endswith("()")):
        rule = METHODS[method]
    if rule is None:
        return None
    if rule == "dynamic-import" and site.kind == "call" and name.endswith("import_module"):
        first = _fact(site, 0)
        if isinstance(first, str):
            return None  # a constant name: followed as an import
    permission = RULES[rule].permission
    if name in _PEERS and site.kind == "call":
        permission = _peer_permission(name, site) or permission
    return rule, permission, ""


def _pretty(name: str) -> str:
    if name.startswith(UNKNOWN + "."):
        return f"<object>.{name[2:]}"
    return name.removeprefix("builtins.")


def site_findings(site: Site, names: Iterable[str], file: SourceFile) -> list[RawFinding]:
    """The findings of one call or reference, one per rule."""
    found: dict[str, RawFinding] = {}
    for name in sorted(names):
        matched = match(name, site)
        if matched is None or matched[0] in found:
            continue
        rule, permission, detail = matched
        verb = "calls" if site.kind == "call" else "refers to"
        if ("()" in name or name.startswith(UNKNOWN)) and site.text:
            shown, written = site.text, ""  # a method of some object: the source says it best
        else:
            shown = _pretty(name)
            written = f" (written {site.text})" if site.text and site.text != shown else ""
        message = f"{verb} {shown}{written}{detail}: {VERBS[rule]}"
        found[rule] = _raw(rule, file, site.line, site.col, message, permission)
    return list(found.values())


def _raw(rule: str, file: SourceFile, line: int, col: int, message: str, permission: str | None = None) -> RawFinding:
    spec = RULES[rule]
    if permission is None:
        permission = spec.permission
    return RawFinding(
        rule, spec.severity, file.display, line, col, message, permission, spec.alternatives, path=file.path
    )


# -- the engine ----------------------------------------------------------------------------------------

_Stat = tuple[int, int]  # mtime_ns, size


class Engine:
    """Scans plugins; caches analyses per file content for the life of the process (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._analyses: dict[tuple[str, str], tuple[_Stat, ModuleAnalysis]] = {}
        self._results: collections.OrderedDict[tuple[Any, ...], tuple[list[RawFinding], BanditState, list[str]]]
        self._results = collections.OrderedDict()
        self._bandit: dict[str, tuple[_Stat, list[RawFinding]]] = {}
        #: how many files were parsed (not served from the cache): for tests
        self.parsed = 0

    # -- files ------------------------------------------------------------------------

    @staticmethod
    def stat(path: str) -> _Stat | None:
        try:
            info = os.stat(path)
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size

    def analysis(self, file: SourceFile) -> tuple[_Stat | None, ModuleAnalysis]:
        """The analysis of one source file, from the cache while it is unchanged."""
        key = (file.path, file.module)
        stat = self.stat(file.path)
        with self._lock:
            cached = self._analyses.get(key)
        if cached is not None and stat is not None and cached[0] == stat:
            return stat, cached[1]
        try:
            with open(file.path, "rb") as handle:
                info = os.fstat(handle.fileno())
                if info.st_size > MAX_SOURCE_BYTES:
                    return stat, ModuleAnalysis(file.module, {}, (), (), error=f"larger than {MAX_SOURCE_BYTES} bytes")
                source = handle.read(MAX_SOURCE_BYTES + 1)
        except OSError as exc:
            return stat, ModuleAnalysis(file.module, {}, (), (), error=f"cannot read: {exc.strerror or exc}")
        stat = (info.st_mtime_ns, info.st_size)
        result = analyze_source(source, file.module, is_package=file.is_package, filename=file.path)
        with self._lock:
            self._analyses[key] = (stat, result)
            self.parsed += 1
        return stat, result

    def clear(self) -> None:
        """Forget every cached analysis and result."""
        with self._lock:
            self._analyses.clear()
            self._results.clear()
            self._bandit.clear()

    # -- collecting a module's files --------------------------------------------------------

    def collect(self, module: str) -> tuple[list[SourceFile], list[str]]:
        """The files of ``module`` and of every module of its package it imports; notes.

        :raises NotFound: the module is not there.
        """
        top = module.partition(".")[0]
        locator = Locator(top)
        chain = locator.chain(module)
        files: dict[str, SourceFile] = {}
        notes: list[str] = []
        queue: collections.deque[SourceFile] = collections.deque()
        seen: set[str] = set()

        def add(found: Iterable[Any]) -> None:
            for located in found:
                if located.name in seen:
                    continue
                seen.add(located.name)
                if located.file is not None:
                    files[located.file.path] = located.file
                    if located.file.kind == "source":
                        queue.append(located.file)

        add(chain)
        while queue:
            file = queue.popleft()
            _, result = self.analysis(file)
            for imported in result.imports:
                if imported.module != top and not imported.module.startswith(top + "."):
                    continue
                candidates = [imported.module]
                candidates += [f"{imported.module}.{name}" for name in imported.names if name != "*"]
                for candidate in candidates:
                    try:
                        add(locator.chain(candidate))
                    except NotFound:
                        if candidate == imported.module:
                            notes.append(
                                f"{file.display}:{imported.line}: imports {candidate}, which is not there (not scanned)"
                            )
        return sorted(files.values(), key=lambda f: f.display), notes

    # -- findings ---------------------------------------------------------------------------

    def raw_findings(
        self, files: Sequence[SourceFile], *, bandit: bool = False
    ) -> tuple[list[RawFinding], BanditState, list[str]]:
        """Every finding in ``files`` (before the comparison with a manifest)."""
        analyses: dict[str, tuple[SourceFile, ModuleAnalysis]] = {}
        stats: list[tuple[str, str, _Stat | None]] = []
        for file in files:
            if file.kind == "source":
                stat, result = self.analysis(file)
                analyses[file.module] = (file, result)
            else:
                stat = self.stat(file.path)
            stats.append((file.path, file.module, stat))
        key = (bool(bandit), tuple(stats))
        with self._lock:
            cached = self._results.get(key)
            if cached is not None:
                self._results.move_to_end(key)
        if cached is not None:
            return list(cached[0]), cached[1], list(cached[2])
        tops = {file.module.partition(".")[0] for file in files}
        modules = {name: result for name, (_, result) in analyses.items()}
        found: list[RawFinding] = []
        for file in files:
            if file.kind == "native":
                found.append(_raw("native-code", file, 1, 1, "a native extension module: its code cannot be scanned"))
            elif file.kind != "source":
                found.append(_raw("unscannable", file, 1, 1, "a module without source: its code cannot be scanned"))
        for file, result in analyses.values():
            found.extend(self._file_findings(file, result, modules, tops))
        notes: list[str] = []
        state: BanditState = "off"
        if bandit:
            from ._bandit import bandit_findings

            extra, state, bandit_notes = bandit_findings(self, [f for f in files if f.kind == "source"])
            notes.extend(bandit_notes)
            found = merge(found, extra)
        found = _dedupe(found)
        with self._lock:
            self._results[key] = (found, state, notes)
            while len(self._results) > _RESULT_CACHE_SIZE:
                self._results.popitem(last=False)
        return list(found), state, list(notes)

    def bandit_cache(self) -> dict[str, tuple[_Stat, list[RawFinding]]]:
        return self._bandit

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    @staticmethod
    def _file_findings(
        file: SourceFile, result: ModuleAnalysis, modules: Mapping[str, ModuleAnalysis], tops: set[str]
    ) -> list[RawFinding]:
        if result.error is not None:
            return [_raw("unscannable", file, 1, 1, f"cannot be parsed, so it was not scanned ({result.error})")]
        found: list[RawFinding] = []
        for site in result.sites:
            if site.kind == "finding":
                assert site.rule is not None
                found.append(_raw(site.rule, file, site.line, site.col, site.message))
                continue
            names: set[str] = set()
            for name in site.names:
                names |= expand(name, modules)
            found.extend(site_findings(site, names, file))
        for imported in result.imports:
            top = imported.module.partition(".")[0]
            rule = IMPORTS.get(top)
            if rule is not None and top not in tops:
                found.append(_raw(rule, file, imported.line, imported.col, f"imports {imported.module}: {VERBS[rule]}"))
        return found

    # -- targets ----------------------------------------------------------------------------

    def scan_module(
        self,
        module: str,
        *,
        permissions: Sequence[str] | None = None,
        plugin: str | None = None,
        bandit: bool = False,
        ignore_rules: Iterable[str] = (),
        target: str | None = None,
        missing_is_finding: bool = False,
        plugin_class: str | None = None,
    ) -> ScanReport:
        """Scan ``module`` and what it imports of its own package.

        :param permissions: what the plugin asks for; ``None`` reads the manifest of
            ``plugin_class`` (a qualname in ``module``) or of the plugin classes found.
        :param missing_is_finding: a module that is not there is a ``not-found`` finding
            (the vetter fails closed) instead of a :class:`ScanError`.
        :raises ScanError: the module is not there (unless ``missing_is_finding``).
        """
        target = target or (f"{module}:{plugin_class}" if plugin_class else module)
        if not _IDENTIFIER.match(module):
            raise ScanError(f"{module!r} is not a module name")
        try:
            files, notes = self.collect(module)
        except NotFound as exc:
            if not missing_is_finding:
                raise ScanError(f"cannot scan {target}: {exc}") from None
            missing = SourceFile(module, module, module, "other")
            raw = [
                _raw("not-found", missing, 0, 0, f"the source of {module} could not be located ({exc}): not scanned")
            ]
            findings, _, compare_notes = compare(raw, permissions or ())
            return ScanReport(target, plugin, tuple(permissions or ()), (), tuple(findings), notes=tuple(compare_notes))
        if permissions is None:
            manifest = ManifestReader(self, files).read(module, plugin_class)
            notes.extend(manifest.notes)
            permissions = manifest.permissions or ()
            plugin = plugin or manifest.name
        return self._report(target, plugin, permissions, files, notes, bandit=bandit, ignore_rules=ignore_rules)

    def scan_path(
        self,
        path: str,
        *,
        permissions: Sequence[str] | None = None,
        bandit: bool = False,
        ignore_rules: Iterable[str] = (),
    ) -> ScanReport:
        """Scan a file, or every module file under a directory.

        :raises ScanError: nothing there, or no Python file in it.
        """
        try:
            files = files_under(path)
        except NotFound as exc:
            raise ScanError(str(exc)) from None
        if not files:
            raise ScanError(f"no Python files under {path}")
        notes: list[str] = []
        plugin = None
        if permissions is None:
            manifest = ManifestReader(self, files).discover()
            notes.extend(manifest.notes)
            permissions = manifest.permissions or ()
            plugin = manifest.name
        return self._report(path, plugin, permissions, files, notes, bandit=bandit, ignore_rules=ignore_rules)

    def scan_target(
        self,
        target: str,
        *,
        permissions: Sequence[str] | None = None,
        bandit: bool = False,
        ignore_rules: Iterable[str] = (),
    ) -> ScanReport:
        """Scan what ``target`` names: ``module:Class``, an entry-point name of ``orion_kernel.plugins``,
        a path to a file or directory, or a module name (tried in that order).

        :raises ScanError: it names nothing that can be scanned.
        """
        target = target.strip()
        if not target:
            raise ScanError("an empty target")
        options: dict[str, Any] = {"permissions": permissions, "bandit": bandit, "ignore_rules": ignore_rules}
        if ":" in target and not os.path.exists(target):
            module, _, qualname = target.partition(":")
            if not _IDENTIFIER.match(module) or not _IDENTIFIER.match(qualname):
                raise ScanError(f"{target!r} does not look like 'package.module:Class'")
            return self.scan_module(module, plugin_class=qualname, target=target, **options)
        value = entry_point_value(target)
        if value is not None:
            module, _, qualname = value.partition(":")
            report = self.scan_module(module, plugin_class=qualname or None, target=target, **options)
            return attrs.evolve(report, notes=(f"entry point {target} = {value}", *report.notes))
        if os.path.exists(target):
            return self.scan_path(target, **options)
        if _IDENTIFIER.match(target):
            return self.scan_module(target, **options)
        raise ScanError(f"{target!r} is neither module:Class, an installed plugin's entry point, a path nor a module")

    def _report(
        self,
        target: str,
        plugin: str | None,
        permissions: Sequence[str],
        files: Sequence[SourceFile],
        notes: list[str],
        *,
        bandit: bool,
        ignore_rules: Iterable[str],
    ) -> ScanReport:
        raw, state, raw_notes = self.raw_findings(files, bandit=bandit)
        findings, ignored, compare_notes = compare(raw, permissions, ignore_rules=ignore_rules)
        return ScanReport(
            target=target,
            plugin=plugin,
            permissions=tuple(permissions),
            files=tuple(f.display for f in files),
            findings=tuple(findings),
            bandit=state,
            notes=tuple([*notes, *raw_notes, *compare_notes]),
            ignored=ignored,
        )


def merge(ours: list[RawFinding], theirs: Iterable[RawFinding]) -> list[RawFinding]:
    """Add bandit's findings to ours, dropping those at a file and line where a finding of the same rule is."""
    seen = {(f.file, f.line, f.rule) for f in ours}
    merged = list(ours)
    for finding in theirs:
        key = (finding.file, finding.line, finding.rule)
        if key not in seen:
            seen.add(key)
            merged.append(finding)
    return merged


def _dedupe(found: Iterable[RawFinding]) -> list[RawFinding]:
    seen: set[tuple[str, int, int, str]] = set()
    unique = []
    for finding in found:
        key = (finding.file, finding.line, finding.col, finding.rule)
        if key not in seen:
            seen.add(key)
            unique.append(finding)
    return unique


def entry_point_value(name: str) -> str | None:
    """``module:Class`` of the entry point ``name`` in ``orion_kernel.plugins`` (never loaded)."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return str(ep.value)
    return None


#: the process-wide engine (its caches are what make repeated vetting cheap)
ENGINE: Final = Engine()
