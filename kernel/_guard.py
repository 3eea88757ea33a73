"""Sandbox layer 2: the in-process guard, a ``sys.addaudithook`` observer.

CPython raises an *audit event* for each file open, directory change,
socket connect or bind, name lookup, process start and native-library load
(PEP 578).  The guard maps each such event to the permission it needs
(``fs:read:/etc/passwd``, ``net:connect:10.0.0.5:5432``, ``subprocess``, ...),
attributes it to the plugin whose code is running, records it, and in
``enforce`` mode raises :class:`~plugin_sdk.PermissionDenied` for what that
plugin does not hold.  Kernel code and the application are never affected:
an event no plugin caused passes untouched.

**Not a security boundary.**  The CPython docs say audit hooks "are not
suitable for implementing a sandbox", and they are right: code can reach
around the guard with ``ctypes`` or a C extension (no event for what native
code does), with handles opened before the guard saw them, through
introspection (``gc``, frames, this module's globals), or by making kernel
code do the work.  The guard stops mistakes and produces evidence; process
isolation (``isolation = "process"``) is the boundary.

Attribution costs nothing on the hot path: hook dispatch is untouched.  At an
event the guard walks the Python stack from the top and takes the first frame
that belongs to a plugin — a method of a plugin's class (``self`` tells
instances of one class apart), or code of a module that only that plugin
lives in.  Kernel, stdlib and library frames are transparent, so a plugin
calling a library that opens a socket is still the one attributed.  Where no
plugin frame is on the stack (a spawned task running a library coroutine,
a plugin's ``start``/``stop`` awaiting library code), a context variable set
by the kernel at those entry points answers instead.

Name resolution: connections are made to addresses, not names, so a grant
by host name is checked when the name is resolved (``socket.getaddrinfo``),
and a connect to an IP address passes when the plugin holds a grant for
that address, or a grant by name for that port.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import os
import sys
import threading
import types
from collections.abc import Callable
from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING
from typing import Any
from typing import Final

import attrs

from plugin_sdk import Permission
from plugin_sdk import PermissionDenied
from plugin_sdk import Permissions
from plugin_sdk import Plugin
from plugin_sdk import Ports

from ._config import GuardMode

if TYPE_CHECKING:
    from ._lifecycle import PluginRecord

log: Final = logging.getLogger("orion.kernel.sandbox")

#: the plugin on whose behalf the kernel runs code (start, stop, spawned tasks), when no plugin frame shows it
CURRENT_PLUGIN: Final[ContextVar[str | None]] = ContextVar("orion_current_plugin", default=None)
#: distinct permissions recorded per plugin (each with a count); later ones are counted, not listed
MAX_DISTINCT: Final = 1000
#: recent events kept per plugin
MAX_RECENT: Final = 200


@attrs.frozen
class GuardEvent:
    """One audited action of a plugin."""

    plugin: str
    #: the CPython audit event (``open``, ``socket.connect``, ``subprocess.Popen``, ...)
    event: str
    #: the permission it needed, written as in a grant
    permission: str
    #: whether the plugin holds it (in ``enforce`` mode a refused event raised)
    allowed: bool


@attrs.define
class _Seen:
    event: GuardEvent
    count: int = 0


# -- events -> the permissions they need ---------------------------------------------------------

_WRITE_FLAGS: Final = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _path(value: object) -> str | None:
    if isinstance(value, int) or value is None:
        return None  # a file descriptor: opened earlier, not a new access
    try:
        text = os.fsdecode(value)  # type: ignore[arg-type]
    except TypeError:
        return None
    return os.path.abspath(text)


def _fs(action: str, *paths: object) -> list[Permission]:
    found = []
    for value in paths:
        path = _path(value)
        if path is not None:
            found.append(Permission("fs", action, path))
    return found


def _open(args: tuple[Any, ...]) -> list[Permission]:
    path, mode, flags = (*args, None, None, None)[:3]
    write = bool(isinstance(mode, str) and any(c in mode for c in "wax+")) or bool(
        isinstance(flags, int) and flags & _WRITE_FLAGS
    )
    return _fs("write" if write else "read", path)


def _address(address: object, action: str) -> list[Permission]:
    if isinstance(address, str | bytes):  # AF_UNIX: a path, which connecting writes to
        return _fs("write", address)
    if isinstance(address, tuple) and len(address) >= 2 and isinstance(address[1], int):
        host = str(address[0]).lower() or ("0.0.0.0" if action == "listen" else "127.0.0.1")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return [Permission("net", action, host, Ports(address[1], address[1]))]
    return []


def _getaddrinfo(args: tuple[Any, ...]) -> list[Permission]:
    host, port = (*args, None, None)[:2]
    if not isinstance(host, str | bytes) or not host:
        return []
    name = os.fsdecode(host).lower()
    if _is_ip(name):
        return []  # checked at connect
    number = port if isinstance(port, int) else int(port) if isinstance(port, str | bytes) and port.isdigit() else None
    ports = Ports(number, number) if number is not None else None
    return [Permission("net", "resolve", name, ports)]


_SUBPROCESS: Final = [Permission("subprocess")]
_FFI: Final = [Permission("ffi")]

#: audit event -> the permissions it needs (args -> list)
EVENTS: Final[dict[str, Callable[[tuple[Any, ...]], list[Permission]]]] = {
    "open": _open,
    "os.listdir": lambda a: _fs("read", a[0] if a and a[0] is not None else "."),
    "os.scandir": lambda a: _fs("read", a[0] if a and a[0] is not None else "."),
    "os.chdir": lambda a: _fs("read", a[0]),
    "os.mkdir": lambda a: _fs("write", a[0]),
    "os.rmdir": lambda a: _fs("write", a[0]),
    "os.remove": lambda a: _fs("write", a[0]),
    "os.rename": lambda a: _fs("write", a[0], a[1]),
    "os.link": lambda a: _fs("write", a[1]),
    "os.symlink": lambda a: _fs("write", a[1]),
    "os.truncate": lambda a: _fs("write", a[0]),
    "os.chmod": lambda a: _fs("write", a[0]),
    "os.chown": lambda a: _fs("write", a[0]),
    "os.utime": lambda a: _fs("write", a[0]),
    "shutil.rmtree": lambda a: _fs("write", a[0]),
    "socket.connect": lambda a: _address(a[1], "connect"),
    "socket.sendto": lambda a: _address(a[1], "connect"),
    "socket.bind": lambda a: _address(a[1], "listen"),
    "socket.getaddrinfo": _getaddrinfo,
    "subprocess.Popen": lambda a: _SUBPROCESS,
    "os.system": lambda a: _SUBPROCESS,
    "os.exec": lambda a: _SUBPROCESS,
    "os.posix_spawn": lambda a: _SUBPROCESS,
    "os.spawn": lambda a: _SUBPROCESS,
    "os.fork": lambda a: _SUBPROCESS,
    "os.forkpty": lambda a: _SUBPROCESS,
    "os.kill": lambda a: _SUBPROCESS,
    "ctypes.dlopen": lambda a: _FFI,
    "ctypes.cdata": lambda a: _FFI,
}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


# -- the process-wide hook ---------------------------------------------------------------------

_guards: list[Guard] = []
_installed = False
_local = threading.local()


class trusted:
    """``with trusted():`` — the kernel acting on its own authority (creating a plugin's
    data directory, say): no guard sees the events of this thread meanwhile."""

    def __enter__(self) -> None:
        self._was = getattr(_local, "busy", False)
        _local.busy = True

    def __exit__(self, *exc: object) -> None:
        _local.busy = self._was


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _guards:
        return
    needs = EVENTS.get(event)
    if needs is None or getattr(_local, "busy", False):
        return
    _local.busy = True
    try:
        frame = sys._getframe(1)
        for guard in tuple(_guards):
            guard.on_event(event, needs, args, frame)
    finally:
        _local.busy = False


def _install() -> None:
    global _installed
    if not _installed:
        sys.addaudithook(_audit)  # cannot be removed: it stays inert while no guard is active
        _installed = True


# -- one kernel's guard ------------------------------------------------------------------------


class Guard:
    """The guard of one kernel: who owns which code, who holds what, what happened.

    :param mode: ``record`` or ``enforce``.
    :param records: the kernel's plugin records, read again after :meth:`refresh`.
    """

    def __init__(self, mode: GuardMode, records: Callable[[], Mapping[str, PluginRecord]]) -> None:
        if mode == "off":
            raise ValueError("a guard in mode 'off' is not created")
        self.mode: Final = mode
        self._records = records
        self._dirty = True
        #: plugin class -> plugin names whose class is it or derives from it
        self._classes: dict[str, list[tuple[type, str]]] = {}
        #: module name -> the only plugin living in it
        self._modules: dict[str, str] = {}
        #: id(plugin instance) -> name
        self._instances: dict[int, str] = {}
        self._held: dict[str, Permissions] = {}
        self._code_owner: dict[int, tuple[types.CodeType, str | None]] = {}
        self._readable = _import_roots()
        self._seen: dict[str, dict[str, _Seen]] = {}
        self._recent: dict[str, collections.deque[GuardEvent]] = {}
        self._warned: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Guard {self.mode}: {len(self._held)} plugin(s)>"

    def activate(self) -> None:
        _install()
        if self not in _guards:
            _guards.append(self)

    def deactivate(self) -> None:
        if self in _guards:
            _guards.remove(self)

    def refresh(self) -> None:
        """Plugins changed state: read ownership and holdings again at the next event."""
        self._dirty = True

    # -- what happened -------------------------------------------------------------------

    def events(self, plugin: str | None = None) -> list[GuardEvent]:
        """Recent events (of one plugin, or all), oldest first."""
        with self._lock:
            if plugin is not None:
                return list(self._recent.get(plugin, ()))
            return [event for recent in self._recent.values() for event in recent]

    def observed(self, plugin: str) -> dict[str, tuple[bool, int]]:
        """Each distinct permission ``plugin`` exercised -> (allowed, how many times)."""
        with self._lock:
            return {text: (seen.event.allowed, seen.count) for text, seen in self._seen.get(plugin, {}).items()}

    def denied(self, plugin: str | None = None) -> list[GuardEvent]:
        """Distinct refused permissions (of one plugin, or all)."""
        with self._lock:
            plugins = [plugin] if plugin is not None else list(self._seen)
            return [s.event for p in plugins for s in self._seen.get(p, {}).values() if not s.event.allowed]

    # -- the audit hook's side -----------------------------------------------------------

    def on_event(
        self,
        event: str,
        needs: Callable[[tuple[Any, ...]], list[Permission]],
        args: tuple[Any, ...],
        frame: types.FrameType | None,
    ) -> None:
        if self._dirty:
            self._rebuild()
        if not self._held:
            return
        plugin = self._attribute(frame)
        if plugin is None:
            return
        held = self._held.get(plugin)
        if held is None:
            return  # a plugin of another kernel, or one that is not running
        try:
            asks = needs(args)
        except Exception:  # an argument shape this CPython version does not have
            log.debug("guard: cannot read audit event %s%r", event, args, exc_info=True)
            return
        for ask in asks:
            allowed = self._allows(held, ask)
            record = GuardEvent(plugin, event, _text(ask), allowed)
            self._record(record)
            if not allowed and self.mode == "enforce":
                # What a plugin holds is what it asks for and is granted (under "deny" it does not
                # start without its grants), so a refusal is always of something it did not ask for.
                raise PermissionDenied(
                    f"plugin {plugin!r} may not {_verb(event)} ({event}): it does not hold {_text(ask)}, "
                    "and its manifest does not ask for it, so no grant can give it: the plugin must "
                    "declare it in its permissions"
                )

    def _record(self, event: GuardEvent) -> None:
        with self._lock:
            seen = self._seen.setdefault(event.plugin, {})
            entry = seen.get(event.permission)
            if entry is None and len(seen) < MAX_DISTINCT:
                entry = seen[event.permission] = _Seen(event)
            if entry is not None:
                entry.count += 1
            self._recent.setdefault(event.plugin, collections.deque(maxlen=MAX_RECENT)).append(event)
            first_refusal = not event.allowed and (event.plugin, event.permission) not in self._warned
            if first_refusal:
                self._warned.add((event.plugin, event.permission))
        if first_refusal:
            verdict = "refused" if self.mode == "enforce" else "not granted (recorded)"
            log.warning("guard: plugin %s: %s %s: %s", event.plugin, event.event, event.permission, verdict)

    def _allows(self, held: Permissions, ask: Permission) -> bool:
        if ask.kind == "fs":
            if ask.action == "read" and (
                any(_under(ask.target, root) for root in self._readable) or _in_loaded_code(ask.target)
            ):
                return True  # the interpreter, sys.path, loaded code and its package data
            if ask.target in _DEVICES:
                return True
            return held.covers(ask)
        if ask.kind == "net" and ask.action == "resolve":
            return any(
                p.kind == "net"
                and p.action == "connect"
                and _host_matches(p.target, ask.target)
                and (ask.ports is None or (p.ports is not None and p.ports.covers(ask.ports)))
                for p in held
            )
        if ask.kind == "net" and ask.action == "connect" and _is_ip(ask.target):
            if held.covers(ask):
                return True
            assert ask.ports is not None
            return any(
                p.kind == "net"
                and p.action == "connect"
                and not _is_ip(p.target)
                and p.ports is not None
                and p.ports.covers(ask.ports)
                for p in held
            )
        return held.covers(ask)

    # -- attribution ---------------------------------------------------------------------

    def _attribute(self, frame: types.FrameType | None) -> str | None:
        # Hot for every audited event of the process (the application's too): one dict
        # lookup per frame, keyed by the code object's id (hashing a code object hashes
        # its bytecode; the entry keeps the code alive, so the id is not reused).
        cache = self._code_owner
        depth = 0
        while frame is not None and depth < 200:
            code = frame.f_code
            entry = cache.get(id(code))
            if entry is None:
                owner = self._classify(code, frame.f_globals.get("__name__"))
                cache[id(code)] = (code, owner)
            else:
                owner = entry[1]
            if owner is not None:
                if owner.startswith(_CLASS):
                    owner = self._by_instance(frame, code, owner)
                if owner is _FOREIGN:
                    return None  # a plugin of another kernel: its own guard judges it
                if owner is not None:
                    return owner
            frame = frame.f_back
            depth += 1
        return CURRENT_PLUGIN.get()

    def _by_instance(self, frame: types.FrameType, code: types.CodeType, owner: str) -> str | None:
        """Code of a plugin class: a method's ``self`` says which instance (and so which kernel)."""
        instance = frame.f_locals.get(code.co_varnames[0]) if code.co_argcount else None
        if isinstance(instance, Plugin):
            return self._instances.get(id(instance), _FOREIGN)
        candidates = owner[len(_CLASS) :].split(",")
        return candidates[0] if len(candidates) == 1 else None

    def _classify(self, code: types.CodeType, module: object) -> str | None:
        qualname = code.co_qualname
        for prefix, owners in self._classes.items():
            if qualname.startswith(prefix) and module == owners[0][0].__module__:
                return _CLASS + ",".join(sorted({name for _, name in owners}))
        if isinstance(module, str):
            for name, plugin in self._modules.items():
                if module == name or module.startswith(name + "."):
                    return plugin
        return None

    def _rebuild(self) -> None:
        from plugin_sdk import PluginState

        self._dirty = False
        records = self._records()
        live = {PluginState.STARTING, PluginState.RUNNING, PluginState.QUARANTINED, PluginState.STOPPING}
        running = {n: r for n, r in records.items() if r.plugin is not None and r.state in live}
        self._held = {n: r.grants.effective for n, r in running.items()}
        self._instances = {id(r.plugin): n for n, r in running.items()}
        classes: dict[str, list[tuple[type, str]]] = {}
        per_module: dict[str, set[str]] = collections.defaultdict(set)
        for name, record in running.items():
            for cls in type(record.plugin).__mro__:
                if cls is Plugin or not issubclass(cls, Plugin):
                    continue
                classes.setdefault(cls.__qualname__ + ".", []).append((cls, name))
            if record.candidate.kind != "code":
                # Loaded from an entry point or `source`: its module (package) is the plugin's.
                # A plugin passed in code lives in the application's modules: matched by class only.
                per_module[_home_module(type(record.plugin))].add(name)
        self._classes = classes
        self._modules = {module: next(iter(names)) for module, names in per_module.items() if len(names) == 1}
        self._code_owner = {}


#: a code owner that is a plugin class: ``_CLASS + "name,name"`` (resolved per frame by ``self``)
_CLASS: Final = "\x00class:"
#: a frame of a plugin that this guard's kernel does not run
_FOREIGN: Final = "\x00foreign"
_DEVICES: Final = frozenset({"/dev/null", "/dev/urandom", "/dev/random", "/dev/zero"})


def _home_module(cls: type) -> str:
    """The module a plugin class lives in, widened to its package for ``pkg._private``
    modules; a module hosting several plugins is resolved by class instead
    (see :meth:`Guard._classify`)."""
    module = cls.__module__
    parent, _, last = module.rpartition(".")
    if last.startswith("_") and parent:
        return parent
    return module


def _import_roots() -> tuple[str, ...]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    roots.update(os.path.abspath(p) for p in sys.path if p)
    return tuple(sorted(r.rstrip("/") or "/" for r in roots if os.path.isabs(r) and r not in ("/",)))


_code_cache: tuple[int, frozenset[str], frozenset[str]] = (-1, frozenset(), frozenset())


def _loaded_code() -> tuple[frozenset[str], frozenset[str]]:
    """The source files of every loaded module (read by tracebacks through linecache) and the
    directories of every loaded package (its data files: templates, static assets), recomputed
    when the number of loaded modules changes."""
    global _code_cache
    count = len(sys.modules)
    if _code_cache[0] != count:
        files, packages = set(), set()
        for module in list(sys.modules.values()):
            path = getattr(module, "__file__", None)
            if isinstance(path, str):
                files.add(os.path.abspath(path))
                if path.endswith(".pyc"):
                    files.add(os.path.abspath(path[:-1]))
            for directory in getattr(module, "__path__", None) or ():
                if isinstance(directory, str) and os.path.isabs(directory):
                    packages.add(directory.rstrip("/"))
        _code_cache = (count, frozenset(files), frozenset(packages))
    return _code_cache[1], _code_cache[2]


def _in_loaded_code(path: str) -> bool:
    files, packages = _loaded_code()
    if path in files:
        return True
    parent = os.path.dirname(path)
    while parent not in ("", "/"):
        if parent in packages:
            return True
        parent = os.path.dirname(parent)
    return False


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def _host_matches(pattern: str, host: str) -> bool:
    from fnmatch import fnmatchcase

    return fnmatchcase(host, pattern)


def _text(ask: Permission) -> str:
    if ask.kind == "net" and ask.action == "resolve":
        return f"net:connect:{ask.target}:{ask.ports if ask.ports is not None else '*'}"
    return str(ask)


def _verb(event: str) -> str:
    return {
        "open": "open a file",
        "socket.connect": "connect",
        "socket.sendto": "send to an address",
        "socket.bind": "bind a socket",
        "socket.getaddrinfo": "resolve a host name",
        "ctypes.dlopen": "load a native library",
        "ctypes.cdata": "read native memory",
    }.get(event, "start a process" if event.startswith(("subprocess", "os.exec", "os.spawn", "os.posix")) else event)


def guard_for(mode: GuardMode, records: Callable[[], Mapping[str, PluginRecord]]) -> Guard | None:
    """A guard for ``mode``, or ``None`` when it is ``off``."""
    return None if mode == "off" else Guard(mode, records)
