"""Capabilities: the permission grammar plugins ask with and operators grant with.

A permission is a string of colon-separated parts, the kind first:

=========================  ==================================================================
``service:NAME``           use service ``NAME`` (implied by ``requires`` / ``optional``)
``fs:read:PATH``           read files at ``PATH`` (a directory covers everything below it)
``fs:write:PATH``          create, write and delete at ``PATH`` (and read it)
``net:connect:HOST:PORT``  open TCP connections to ``HOST`` port ``PORT``
``net:listen:HOST:PORT``   bind and listen on ``HOST`` port ``PORT``
``subprocess``             start processes (``subprocess``, ``os.system``, ``os.exec*``...)
``secrets:NAME``           read secret ``NAME`` from the secret store
``hook:NAME``              implement the sensitive hook ``NAME`` (e.g. ``authorize``)
``ffi``                    load native code at run time (``ctypes``, ``cffi``)
=========================  ==================================================================

``NAME``, ``PATH`` and ``HOST`` may use shell globs (``*``, ``?``, ``[...]``;
in paths ``**`` crosses directories, ``*`` does not); ``PORT`` is a number, a
range ``8000-8099`` or ``*``; an IPv6 host is written in brackets
(``net:connect:[::1]:5432``).  Paths are absolute (``~`` is expanded).  A
plugin's manifest may use placeholders that the kernel fills in from its
settings before checking: ``net:listen:{host}:{port}``, and ``{data_dir}``
for the plugin's own data directory (always readable and writable anyway).
A permission whose placeholder names an unset setting (``None`` or an empty
string) is not asked for at all: ``fs:read:{policy_file}`` asks only when a
policy file is configured.  In an ``fs:`` permission whose path starts with a
placeholder, a relative value is relative to the plugin's data directory, and
``{NAME:dir}`` is the directory of the path ``NAME`` holds
(``fs:write:{log:dir}``: the directory the log is kept in).  A dotted
placeholder walks into nested settings, and a list on the way asks once per
element: ``fs:read:{jwt_keys.key_file}`` asks to read the key file of every
configured JWT key that has one.

A grant *covers* an ask when it is of the same kind and action and every
access the ask could mean is one the grant allows: ``fs:read:/srv/**``
covers ``fs:read:/srv/app/config.toml``; ``net:connect:*:443`` covers
``net:connect:api.example.com:443``; the reverse is not true.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any
from typing import Final
from typing import Literal
from typing import TypeAlias
from typing import cast

import attrs

Kind: TypeAlias = Literal["service", "fs", "net", "subprocess", "secrets", "hook", "ffi"]
KINDS: Final[tuple[str, ...]] = ("service", "fs", "net", "subprocess", "secrets", "hook", "ffi")
#: kinds that take no argument
_BARE: Final = frozenset({"subprocess", "ffi"})
_ACTIONS: Final[dict[str, tuple[str, ...]]] = {"fs": ("read", "write"), "net": ("connect", "listen")}
_GLOB_NAME: Final = re.compile(r"^[A-Za-z0-9_.*?\[\]!-]+$")
_HOST: Final = re.compile(r"^(?:\[[0-9A-Fa-f:.*?]+\]|[A-Za-z0-9_.*?\[\]!-]+)$")
_PLACEHOLDER: Final = re.compile(r"\{([^{}]*)\}")
#: what may follow a placeholder's name: ``{path:dir}``
MODIFIERS: Final = ("dir",)
_GLOB_CHARS: Final = frozenset("*?[")

EXAMPLES: Final = (
    "service:metrics",
    "fs:read:/etc/ssl/**",
    "fs:write:/var/lib/app",
    "net:connect:api.example.com:443",
    "net:listen:127.0.0.1:8000-8099",
    "subprocess",
    "secrets:db_*",
    "hook:authorize",
    "ffi",
)


class PermissionSyntaxError(ValueError):
    """A permission string that does not follow the grammar; the message says which part and why."""

    def __init__(self, text: object, reason: str) -> None:
        super().__init__(f"invalid permission {text!r}: {reason}")
        self.text = text
        self.reason = reason


@attrs.frozen(order=True)
class Ports:
    """A TCP port range, both ends included; ``Ports(0, 65535)`` is ``*``."""

    low: int
    high: int

    def __str__(self) -> str:
        if (self.low, self.high) == (0, 65535):
            return "*"
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"

    def covers(self, other: Ports) -> bool:
        return self.low <= other.low and other.high <= self.high

    def __contains__(self, port: int) -> bool:
        return self.low <= port <= self.high


ANY_PORT: Final = Ports(0, 65535)


@attrs.frozen
class Permission:
    """One parsed permission.  Build it with :func:`parse_permission`; ``str()`` gives it back."""

    kind: Kind
    #: ``read``/``write`` for ``fs``, ``connect``/``listen`` for ``net``, else ``""``
    action: str = ""
    #: the name, path or host pattern (``""`` for ``subprocess`` and ``ffi``)
    target: str = ""
    #: ``net`` only
    ports: Ports | None = None

    def __str__(self) -> str:
        if self.kind in _BARE:
            return self.kind
        if self.kind == "net":
            return f"net:{self.action}:{self.target}:{self.ports}"
        if self.kind == "fs":
            return f"fs:{self.action}:{self.target}"
        return f"{self.kind}:{self.target}"

    def covers(self, ask: Permission) -> bool:
        """Whether this (granted) permission allows everything ``ask`` could mean."""
        if self.kind != ask.kind:
            return False
        if self.kind in _BARE:
            return True
        if self.kind == "fs":
            if self.action != ask.action and not (self.action == "write" and ask.action == "read"):
                return False
            return path_covers(self.target, ask.target)
        if self.kind == "net":
            assert self.ports is not None and ask.ports is not None
            return (
                self.action == ask.action
                and fnmatchcase(ask.target.lower(), self.target.lower())
                and self.ports.covers(ask.ports)
            )
        return fnmatchcase(ask.target, self.target)


def path_covers(grant: str, path: str) -> bool:
    """Whether the path pattern ``grant`` allows ``path`` (itself maybe a pattern).

    A grant without glob characters covers itself and everything below it;
    ``/a/**`` covers ``/a`` and everything below; ``*`` matches within one
    path segment.
    """
    grant = grant.rstrip("/") or "/"
    path = path.rstrip("/") or "/"
    if not (_GLOB_CHARS & set(grant)):
        return path == grant or path.startswith(grant if grant == "/" else grant + "/")
    if grant.endswith("/**") and not (_GLOB_CHARS & set(grant[:-3])):
        base = grant[:-3] or "/"
        return path == base or path.startswith(base if base == "/" else base + "/")
    return _glob_regex(grant).fullmatch(path) is not None


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**", index):
            out.append(".*")
            index += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", index + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[index + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                index = end
        else:
            out.append(re.escape(char))
        index += 1
    return re.compile("".join(out))


def _ports(text: str, whole: str) -> Ports:
    if text == "*":
        return ANY_PORT
    low_text, _, high_text = text.partition("-")
    try:
        low = int(low_text)
        high = int(high_text) if high_text else low
    except ValueError:
        raise PermissionSyntaxError(whole, f"port {text!r} is not a number, a range like 8000-8099, or '*'") from None
    if not (0 <= low <= high <= 65535):
        raise PermissionSyntaxError(whole, f"port {text!r} is outside 0-65535 or reversed")
    return Ports(low, high)


def parse_permission(text: object) -> Permission:
    """Parse one permission string.

    :raises PermissionSyntaxError: it does not follow the grammar (the
        message names the part at fault and shows a valid example).
    """
    if not isinstance(text, str):
        raise PermissionSyntaxError(text, f"expected a string, got {type(text).__name__}")
    if not text or text != text.strip() or any(c.isspace() for c in text):
        raise PermissionSyntaxError(text, "empty or contains white space")
    kind, _, rest = text.partition(":")
    if kind not in KINDS:
        raise PermissionSyntaxError(text, f"unknown kind {kind!r} (known: {', '.join(KINDS)})")
    if kind in _BARE:
        if rest:
            raise PermissionSyntaxError(text, f"{kind!r} takes no argument")
        return Permission(kind)  # type: ignore[arg-type]
    if kind in _ACTIONS:
        action, _, target = rest.partition(":")
        if action not in _ACTIONS[kind]:
            example = next(e for e in EXAMPLES if e.startswith(kind))
            raise PermissionSyntaxError(
                text, f"{kind} needs an action, one of {', '.join(_ACTIONS[kind])} (e.g. {example!r})"
            )
        if kind == "fs":
            return Permission("fs", action, _path(target, text))
        host, sep, port = target.rpartition(":")
        if not sep or not host:
            raise PermissionSyntaxError(text, f"net:{action} needs HOST:PORT (e.g. 'net:{action}:127.0.0.1:8080')")
        if not _HOST.match(host):
            raise PermissionSyntaxError(text, f"host {host!r} is not a host name, an address or a glob")
        return Permission("net", action, host.lower(), _ports(port, text))
    if not rest:
        raise PermissionSyntaxError(
            text, f"{kind} needs a name (e.g. {next(e for e in EXAMPLES if e.startswith(kind))!r})"
        )
    if not _GLOB_NAME.match(rest):
        raise PermissionSyntaxError(text, f"{rest!r} is not a name or a glob of names")
    return Permission(kind, "", rest)  # type: ignore[arg-type]


def _path(target: str, whole: str) -> str:
    if not target:
        raise PermissionSyntaxError(whole, "fs permissions need a path (e.g. 'fs:read:/etc/ssl/**')")
    if "\x00" in target:
        raise PermissionSyntaxError(whole, "the path contains a NUL byte")
    expanded = os.path.expanduser(target)
    if not os.path.isabs(expanded):
        raise PermissionSyntaxError(whole, f"path {target!r} is not absolute")
    parts = expanded.split("/")
    if ".." in parts or "." in parts:
        raise PermissionSyntaxError(whole, f"path {target!r} has '.' or '..' segments")
    if not expanded.endswith("/**"):
        return os.path.normpath(expanded)
    # "/**" is everything: its base is the root, not normpath("") == "."
    return os.path.normpath(expanded[:-3] or "/").rstrip("/") + "/**"


def _path_start(template: str) -> int:
    """Where the path of an ``fs:`` permission starts in ``template`` (-1 for other kinds)."""
    kind, _, rest = template.partition(":")
    action = rest.partition(":")[0]
    return len(kind) + len(action) + 2 if kind == "fs" else -1


def placeholder_issue(template: str) -> str | None:
    """What is wrong with the placeholders' modifiers of ``template``, if anything."""
    for match in _PLACEHOLDER.finditer(template):
        modifier = match.group(1).partition(":")[2]
        if not modifier:
            continue
        if modifier not in MODIFIERS:
            return f"unknown placeholder modifier {{{match.group(1)}}} (known: :dir)"
        if match.start() != _path_start(template):
            return f"{{{match.group(1)}}}: ':dir' needs an fs: path that starts with it"
    return None


#: a value a placeholder takes, with the sequence elements chosen on the way to it (by dotted prefix)
_Choice: TypeAlias = tuple[object, Mapping[str, object]]


def _is_sequence(value: object) -> bool:
    return isinstance(value, (list, tuple))


def _lookup(value: object, segment: str, name: str) -> object:
    """``segment`` of a settings value: a field of an attrs instance or a key of a mapping."""
    if isinstance(value, Mapping):
        if segment in value:
            return value[segment]
    elif attrs.has(type(value)) and segment in attrs.fields_dict(cast("Any", type(value))):
        return getattr(value, segment)
    raise KeyError(name)


def _resolve(name: str, values: Mapping[str, Any], bound: Mapping[str, object]) -> Iterator[_Choice]:
    """Every value the dotted placeholder ``name`` takes, each with the sequence elements it chose.

    A sequence met on the way fans out to one value per element; ``bound``
    holds the element already chosen for a sequence (by its dotted prefix), so
    ``{upstreams.host}`` and ``{upstreams.port}`` in one permission walk the
    same upstream together.
    """
    segments = name.split(".")

    def walk(value: object, depth: int, bound: Mapping[str, object]) -> Iterator[_Choice]:
        prefix = ".".join(segments[:depth])
        if _is_sequence(value):
            if prefix in bound:
                value = bound[prefix]
            else:
                for element in cast("Sequence[object]", value):
                    yield from walk_element(element, depth, {**bound, prefix: element})
                return
        yield from walk_element(value, depth, bound)

    def walk_element(value: object, depth: int, bound: Mapping[str, object]) -> Iterator[_Choice]:
        if depth == len(segments) or value is None:
            yield value, bound  # None on the way: an unset optional part, so nothing is asked
            return
        yield from walk(_lookup(value, segments[depth], name), depth + 1, bound)

    yield from walk(values[segments[0]], 1, bound)


def expand(template: str, values: Mapping[str, Any], data_dir: str | None = None) -> list[str]:
    """Fill a manifest permission's ``{placeholders}`` from ``values`` (settings, ``data_dir``).

    One permission per value the placeholders take: a dotted placeholder
    (``{jwt_keys.key_file}``) walks into nested settings, and a sequence on the
    way (or at the end) asks once per element; placeholders that walk the same
    sequence take the same element, different sequences multiply.  A value
    that is unset (``None`` or ``""``) asks nothing, so an unset setting or an
    empty sequence gives ``[]``.  With ``data_dir``, an ``fs:`` path that
    starts with a placeholder is resolved against it when relative, and
    ``{NAME:dir}`` fills in the directory of that path.

    :raises KeyError: a placeholder names nothing in ``values`` (the key is the placeholder).
    :raises PermissionSyntaxError: a misused ``{NAME:modifier}`` (:func:`placeholder_issue`),
        or a placeholder that holds a structure rather than a value.
    """
    issue = placeholder_issue(template)
    if issue is not None:
        raise PermissionSyntaxError(template, issue)
    for root in placeholders(template):
        if root not in values:
            raise KeyError(root)
    # each placeholder: where it is, its (dotted) name, its modifier
    parts = [(match, *match.group(1).partition(":")[::2]) for match in _PLACEHOLDER.finditer(template)]
    path_start = _path_start(template)
    found: list[str] = []

    def render(match: re.Match[str], name: str, modifier: str, value: object) -> str:
        if isinstance(value, Mapping) or attrs.has(type(value)):
            raise PermissionSyntaxError(template, f"{{{name}}} holds a {type(value).__name__}, not a value")
        text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
        if match.start() == path_start:
            if data_dir is not None:
                text = os.path.join(data_dir, os.path.expanduser(text))  # an absolute value stays as it is
            if modifier == "dir":
                text = os.path.dirname(os.path.normpath(text))
        return text

    def fill(index: int, text: str, bound: Mapping[str, object]) -> None:
        done = parts[index - 1][0].end() if index else 0
        if index == len(parts):
            text += template[done:]
            if text not in found:
                found.append(text)
            return
        match, name, modifier = parts[index]
        for value, chosen in _resolve(name, values, bound):
            if value is not None and value != "":
                fill(index + 1, text + template[done : match.start()] + render(match, name, modifier, value), chosen)

    fill(0, "", {})
    return found


def placeholders(template: str) -> list[str]:
    """The setting names the ``{placeholders}`` of a manifest permission refer to.

    Modifiers are dropped, and a dotted placeholder gives the setting it starts
    from: ``fs:read:{jwt_keys.key_file}`` refers to ``jwt_keys``.
    """
    return [name.partition(":")[0].split(".")[0] for name in _PLACEHOLDER.findall(template)]


@attrs.frozen
class Permissions:
    """A set of permissions with the questions the kernel and plugins ask of it."""

    items: tuple[Permission, ...] = ()

    @classmethod
    def parse(cls, texts: Iterable[str]) -> Permissions:
        """Parse several; :raises PermissionSyntaxError: at the first bad one."""
        return cls(tuple(parse_permission(text) for text in texts))

    def __iter__(self) -> Any:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __str__(self) -> str:
        return ", ".join(str(p) for p in self.items) or "(none)"

    def covers(self, ask: Permission) -> bool:
        """Some permission here covers ``ask``."""
        return any(grant.covers(ask) for grant in self.items)

    def missing(self, asks: Iterable[Permission]) -> list[Permission]:
        """The asks no permission here covers, in order."""
        return [ask for ask in asks if not self.covers(ask)]

    def allows(self, text: str) -> bool:
        """Whether the permission written as ``text`` is covered (``ctx.permissions.allows("subprocess")``).

        :raises PermissionSyntaxError: ``text`` is not a permission.
        """
        return self.covers(parse_permission(text))

    def allows_path(self, path: str, *, write: bool = False) -> bool:
        """Whether an access to the absolute ``path`` is allowed (``write`` for any change)."""
        ask = Permission("fs", "write" if write else "read", path)
        return self.covers(ask)

    def allows_connect(self, host: str, port: int, *, listen: bool = False) -> bool:
        """Whether connecting to (or listening on, ``listen``) ``host``:``port`` is allowed."""
        ask = Permission("net", "listen" if listen else "connect", host.lower(), Ports(port, port))
        return self.covers(ask)
