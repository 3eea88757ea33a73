"""Sandbox layer 3, inside the worker: a process confining itself before it imports plugin code.

The worker bootstrap (:mod:`kernel._worker`) calls :func:`confine` while the
process is still single-threaded and has not imported any plugin code yet.
Everything here is applied by the process to itself, cannot be undone by it
afterwards, and is inherited by every thread and child it creates later.
Pure stdlib + ``ctypes``: Landlock and seccomp are driven through raw
``syscall(2)``/``prctl(2)`` calls, no libseccomp, no third-party wrapper.

:func:`confine` never skips a protection silently: each one that was asked
for and could not be applied (old kernel, unknown architecture, a path that
does not exist, ...) becomes a line in :attr:`Protections.warnings`, and the
rest is still applied.  The kernel decides what a warning means (log it,
show it in ``plugins info``, or refuse to run the plugin).

What each protection stops, and what it does not
-----------------------------------------------

**Resource limits** (``setrlimit``; applied first, soft = hard except CPU):

- ``RLIMIT_AS`` (``memory_bytes``) bounds the *virtual* address space: an
  allocation beyond it fails (``MemoryError`` in Python).  It counts
  reservations, not resident memory: thread stacks (8 MiB each by default),
  glibc malloc arenas (64 MiB per thread that allocates) and runtimes that
  reserve large mappings hit it long before RAM is used, so leave headroom.
- ``RLIMIT_CPU`` (``cpu_seconds``) bounds CPU time *since the process
  started* (user + system, all threads): at the soft limit the kernel sends
  ``SIGXCPU`` (which terminates a Python process: returncode -24), at
  soft + 1 second ``SIGKILL``.  It does not bound wall-clock time: a plugin
  that sleeps or blocks forever is the supervisor's deadline's business.
- ``RLIMIT_NOFILE`` (``open_files``) bounds new descriptor numbers
  (``EMFILE``); descriptors already open above it stay open.
- ``RLIMIT_FSIZE`` (``file_size_bytes``) bounds the size of *each* file
  written (``EFBIG``; Python ignores ``SIGXFSZ``), not the disk space used
  by many files.
- ``RLIMIT_CORE`` is always 0: no core dumps carrying the plugin's memory.

rlimits are per process and inherited by children, but each child gets a
fresh budget: a plugin allowed to start subprocesses can use N times the
limits.  ``RLIMIT_NPROC`` is per *user*, hence not used: fork bombs are
stopped by the seccomp rules on ``fork``/``clone`` when ``allow_subprocess``
is false; with it true nothing here bounds the number of processes (a
per-plugin UID with ``RLIMIT_NPROC``, or cgroups, would).

**No new privileges** (``prctl(PR_SET_NO_NEW_PRIVS)``): ``execve`` can no
longer gain privileges (setuid/setgid bits, file capabilities are ignored).
It is also what allows an unprivileged process to install Landlock and
seccomp.  It does not take away privileges the process already has.

**Landlock** (unprivileged LSM, Linux >= 5.13; this module knows ABIs 1-7):

- Filesystem: the ruleset handles every file-system access right the
  running ABI knows, so anything not granted by a rule is denied
  (``PermissionError``): ``read_paths`` get read + list + execute,
  ``write_paths`` get every right (write, create, remove, rename, ...), for a
  file rule only the rights that apply to files.  Rules are by file
  hierarchy (an opened inode, symlinks resolved at :func:`confine` time),
  not by path string.  ABI differences: ABI 1 cannot handle ``REFER``, so
  moving or linking a file to another directory is always refused
  (``EXDEV``); before ABI 3 ``truncate(2)``/``O_TRUNC`` is not controlled;
  before ABI 5 ``ioctl`` on device files is not controlled.  Not covered at
  any ABI: ``stat``/``chdir``/reading metadata (a plugin can learn that a
  file exists, its size and owner), connecting to an existing *pathname*
  UNIX socket, descriptors opened before :func:`confine` (inherited fds
  keep working), and rights a newer kernel adds that this module does not
  know yet.
- Network (ABI >= 4): TCP ``connect`` and ``bind`` are allowed only to the
  listed *ports*.  Rules are by port only, never by host: allowing port 443
  allows 443 on every address.  Only TCP is controlled: UDP (DNS included),
  ICMP and other protocols are not.  ``None`` means "no rule": that
  direction is not restricted at all; ``()`` means nothing is allowed.
  Binding to an ephemeral port is a bind to port 0: list 0 to allow it.
- Scopes (ABI >= 6, ``scope_signals``/``scope_abstract_unix``): no signal
  to a process outside the sandbox (the kernel, the user's shell), no
  connection to an abstract UNIX socket created outside it.  Signals to
  itself and to its own children still work.

**seccomp** (a hand-written BPF filter, ``SECCOMP_MODE_FILTER``): the
syscalls listed in :data:`_DENIED` fail with ``EPERM`` (tracing other
processes or reading their memory, mounts and namespaces, kernel modules,
kexec, eBPF, perf, keyrings, io_uring, swap, reboot, ...).  Unless
``allow_subprocess`` is true, ``execve``/``execveat``/``fork``/``vfork``
and a ``clone`` without ``CLONE_THREAD`` fail with ``EPERM`` too: threads
keep working, new processes do not.  A ``clone`` asking for a new namespace
is always refused.  ``clone3`` passes its flags in memory the filter cannot
read, so it fails with ``ENOSYS`` and libc falls back to ``clone``.  On
x86_64 the x32 ABI (syscall number bit 0x40000000) and any syscall made in
another architecture's convention (``int 0x80``) fail with ``EPERM``.  This
is a **deny-list**, not an allow-list: every syscall not listed (including
ones a future kernel adds) is allowed, and a kernel bug reachable through an
allowed syscall is not stopped.  Architectures: x86_64 and aarch64
(little-endian, 64-bit interpreter); elsewhere no filter and a warning.

Choosing ``read_paths``
-----------------------

After :func:`confine` the process can only open what the rules allow, so
they must cover everything it will still read: the interpreter's prefixes,
site-packages and ``sys.path`` entries (imports), and the system's shared
libraries and loader cache: an extension module imported later
(``sqlite3``, ``ssl``, ...) or a subprocess's dynamic loader opens them then.
:func:`runtime_read_paths` lists those, and with ``network=True`` the
resolver files and CA certificates a client needs.  ``/dev/null`` belongs in
``write_paths`` when the plugin writes to it (``subprocess.DEVNULL``).

Per-thread caveat
-----------------

no-new-privs, Landlock and seccomp are attributes of a *thread*, inherited
only by threads and processes created afterwards.  A thread that already
exists when :func:`confine` runs stays unrestricted, and so would anything
that thread does for the plugin.  :func:`confine` therefore refuses to run
(``RuntimeError``) when the process has more than one thread, counting both
Python threads and OS threads (``/proc/self/task``), e.g. ones started by a
C extension.  rlimits are per process and have no such caveat.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import stat
import struct
import sys
import threading
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Final

import attrs

__all__ = ["Confinement", "Protections", "confine", "host_support", "runtime_read_paths"]

PortRanges = tuple[tuple[int, int], ...]


@attrs.frozen
class Confinement:
    """What the worker may still do after :func:`confine`; everything else is denied where the host allows."""

    #: read + list + execute (interpreter prefix, site-packages, sys.path entries, fs:read grants)
    read_paths: tuple[str, ...] = ()
    #: every right: read, write, create, remove, rename (plugin data dir, fs:write grants)
    write_paths: tuple[str, ...] = ()
    #: TCP connect allowed to these inclusive port ranges; None = no network rule; () = no TCP connect at all.
    #: One Landlock rule per port: a range of 60000 ports costs about 0.2 s at confine().
    connect_ports: PortRanges | None = None
    #: TCP bind, same meaning; port 0 is the ephemeral-port bind
    bind_ports: PortRanges | None = None
    #: execve/execveat/fork/vfork/clone-without-CLONE_THREAD allowed
    allow_subprocess: bool = False
    #: RLIMIT_AS (virtual address space, bytes)
    memory_bytes: int | None = None
    #: RLIMIT_CPU soft limit (seconds since process start); the hard limit is one second more
    cpu_seconds: int | None = None
    #: RLIMIT_NOFILE
    open_files: int | None = None
    #: RLIMIT_FSIZE (largest file the process may write, bytes)
    file_size_bytes: int | None = None
    #: Landlock filesystem rules at all (with no paths: no file access at all); False: filesystem not restricted
    restrict_fs: bool = True
    #: Landlock scope (ABI >= 6): no signals to processes outside the sandbox
    scope_signals: bool = True
    #: Landlock scope (ABI >= 6): no connect to abstract UNIX sockets created outside the sandbox
    scope_abstract_unix: bool = True


@attrs.frozen
class Protections:
    """What :func:`confine` really applied, for ``plugins info`` and logs."""

    #: rlimit name -> value applied (the soft limit; for RLIMIT_CPU the hard limit is one more)
    rlimits: Mapping[str, int]
    no_new_privs: bool
    #: the host's Landlock ABI; None: unavailable
    landlock_abi: int | None
    #: filesystem access is restricted to read_paths/write_paths
    landlock_fs: bool
    #: a TCP connect or bind port rule is enforced (ABI >= 4); False also when every port asked for is allowed
    landlock_net: bool
    #: the seccomp deny-list filter is installed
    seccomp: bool
    #: every protection asked for that could not be applied, and why
    warnings: tuple[str, ...]
    #: Landlock scopes applied ("signal", "abstract_unix_socket")
    landlock_scopes: tuple[str, ...] = ()
    #: what the seccomp filter refuses (syscall names, plus clone/clone3 notes)
    seccomp_denied: tuple[str, ...] = ()


# ---------------------------------------------------------------- libc access

_PR_GET_SECCOMP: Final = 21
_PR_SET_SECCOMP: Final = 22
_PR_SET_NO_NEW_PRIVS: Final = 38
_PR_GET_NO_NEW_PRIVS: Final = 39

_IS_LINUX: Final = sys.platform.startswith("linux")
_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        # The interpreter links libc: no find_library (it may spawn ldconfig).
        lib = ctypes.CDLL(None, use_errno=True)
        lib.syscall.restype = ctypes.c_long
        lib.prctl.restype = ctypes.c_int
        _libc = lib
    return _libc


def _check(result: int) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def _syscall(number: int, *args: object) -> int:
    return _check(int(_lib().syscall(ctypes.c_long(number), *args)))


def _prctl(option: int, arg2: object = 0, arg3: object = 0) -> int:
    def word(value: object) -> object:
        return ctypes.c_ulong(value) if isinstance(value, int) else value

    return _check(int(_lib().prctl(ctypes.c_int(option), word(arg2), word(arg3), ctypes.c_ulong(0), ctypes.c_ulong(0))))


def _errno_name(exc: OSError) -> str:
    code = exc.errno or 0
    return f"{errno.errorcode.get(code, str(code))}: {os.strerror(code)}"


def _status_field(name: str) -> str | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key == name:
                    return value.strip()
    except OSError:
        return None
    return None


# ------------------------------------------------------------------- Landlock

# Same numbers on x86_64 and aarch64 (and every architecture: they were added
# after the syscall tables were unified at 424).
_SYS_LANDLOCK_CREATE_RULESET: Final = 444
_SYS_LANDLOCK_ADD_RULE: Final = 445
_SYS_LANDLOCK_RESTRICT_SELF: Final = 446

_LANDLOCK_CREATE_RULESET_VERSION: Final = 1 << 0
_LANDLOCK_CREATE_RULESET_ERRATA: Final = 1 << 1
_LANDLOCK_RULE_PATH_BENEATH: Final = 1
_LANDLOCK_RULE_NET_PORT: Final = 2

_FS_EXECUTE: Final = 1 << 0
_FS_WRITE_FILE: Final = 1 << 1
_FS_READ_FILE: Final = 1 << 2
_FS_READ_DIR: Final = 1 << 3
_FS_REMOVE_DIR: Final = 1 << 4
_FS_REMOVE_FILE: Final = 1 << 5
_FS_MAKE_CHAR: Final = 1 << 6
_FS_MAKE_DIR: Final = 1 << 7
_FS_MAKE_REG: Final = 1 << 8
_FS_MAKE_SOCK: Final = 1 << 9
_FS_MAKE_FIFO: Final = 1 << 10
_FS_MAKE_BLOCK: Final = 1 << 11
_FS_MAKE_SYM: Final = 1 << 12
_FS_REFER: Final = 1 << 13  # ABI 2
_FS_TRUNCATE: Final = 1 << 14  # ABI 3
_FS_IOCTL_DEV: Final = 1 << 15  # ABI 5

_FS_ABI1: Final = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
_FS_READ: Final = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
#: the rights landlock_add_rule accepts on a rule whose parent is not a directory
_FS_FILE: Final = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV

_NET_BIND_TCP: Final = 1 << 0  # ABI 4
_NET_CONNECT_TCP: Final = 1 << 1  # ABI 4

_SCOPE_ABSTRACT_UNIX_SOCKET: Final = 1 << 0  # ABI 6
_SCOPE_SIGNAL: Final = 1 << 1  # ABI 6

_MAX_PORT: Final = 65535


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),  # ABI 4
        ("scoped", ctypes.c_uint64),  # ABI 6
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in <linux/landlock.h>
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


def _landlock_fs_rights(abi: int) -> int:
    rights = _FS_ABI1
    if abi >= 2:
        rights |= _FS_REFER
    if abi >= 3:
        rights |= _FS_TRUNCATE
    if abi >= 5:
        rights |= _FS_IOCTL_DEV
    return rights


def _landlock_probe(flag: int = _LANDLOCK_CREATE_RULESET_VERSION) -> tuple[int | None, str | None]:
    """(value, None) or (None, why Landlock is unavailable)."""
    if not _IS_LINUX:
        return None, f"Landlock is Linux-only (platform {sys.platform})"
    try:
        return _syscall(_SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(flag)), None
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            return None, "the kernel has no Landlock (ENOSYS: Linux < 5.13, built without it, or filtered)"
        if exc.errno == errno.EOPNOTSUPP:
            return None, "Landlock is built in but disabled (EOPNOTSUPP: add landlock to the lsm= boot parameter)"
        return None, f"Landlock probe failed ({_errno_name(exc)})"
    except (AttributeError, TypeError) as exc:  # no syscall() in this libc
        return None, f"cannot call syscall(2): {exc}"


def _merge_ports(ranges: PortRanges) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def _covers(ranges: list[tuple[int, int]], low: int, high: int) -> bool:
    return any(a <= low and high <= b for a, b in ranges)


def _apply_landlock(
    c: Confinement, abi: int | None, why: str | None, warnings: list[str]
) -> tuple[bool, bool, tuple[str, ...]]:
    """Apply the Landlock part; (fs applied, net applied, scopes applied)."""
    net_asked = c.connect_ports is not None or c.bind_ports is not None
    scopes_asked = c.scope_signals or c.scope_abstract_unix
    if not (c.restrict_fs or net_asked or scopes_asked):
        return False, False, ()
    if abi is None:
        asked = [
            name for name, on in (("filesystem", c.restrict_fs), ("TCP port", net_asked), ("scope", scopes_asked)) if on
        ]
        warnings.append(f"Landlock unavailable, no {'/'.join(asked)} rules applied: {why}")
        return False, False, ()

    fs_rights = _landlock_fs_rights(abi) if c.restrict_fs else 0
    net_rights = 0
    net_rules: list[tuple[int, int, int]] = []  # (right, low, high)
    if net_asked and abi < 4:
        warnings.append(
            f"Landlock ABI {abi} has no TCP rules (needs ABI 4, Linux 6.7): TCP connect/bind not restricted"
        )
    elif net_asked:
        for right, ranges, everything in (
            (_NET_CONNECT_TCP, c.connect_ports, (1, _MAX_PORT)),
            (_NET_BIND_TCP, c.bind_ports, (0, _MAX_PORT)),
        ):
            if ranges is None:
                continue
            merged = _merge_ports(ranges)
            if _covers(merged, *everything):
                continue  # every port allowed: the same as not handling the right
            net_rights |= right
            net_rules.extend((right, low, high) for low, high in merged)
    scoped = 0
    scope_names: list[str] = []
    if scopes_asked and abi < 6:
        warnings.append(
            f"Landlock ABI {abi} has no scopes (needs ABI 6, Linux 6.12): signals to and abstract UNIX sockets of "
            "processes outside the sandbox not restricted"
        )
    elif scopes_asked:
        if c.scope_abstract_unix:
            scoped |= _SCOPE_ABSTRACT_UNIX_SOCKET
            scope_names.append("abstract_unix_socket")
        if c.scope_signals:
            scoped |= _SCOPE_SIGNAL
            scope_names.append("signal")
    if not (fs_rights or net_rights or scoped):
        # e.g. only net rules asked for, every port allowed: nothing to enforce
        return False, False, ()

    attr = _RulesetAttr(handled_access_fs=fs_rights, handled_access_net=net_rights, scoped=scoped)
    size = ctypes.sizeof(ctypes.c_uint64) * (3 if abi >= 6 else 2 if abi >= 4 else 1)
    try:
        ruleset = _syscall(_SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    except OSError as exc:
        warnings.append(f"Landlock not applied: landlock_create_ruleset failed ({_errno_name(exc)})")
        return False, False, ()
    try:
        if fs_rights:
            _add_path_rules(ruleset, c.read_paths, _FS_READ & fs_rights, "read", warnings)
            _add_path_rules(ruleset, c.write_paths, fs_rights, "write", warnings)
        for right, low, high in net_rules:
            _add_port_rules(ruleset, right, low, high, warnings)
        try:
            _syscall(_SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0))
        except OSError as exc:
            warnings.append(f"Landlock not applied: landlock_restrict_self failed ({_errno_name(exc)})")
            return False, False, ()
    finally:
        os.close(ruleset)
    return bool(fs_rights), bool(net_rights), tuple(scope_names)


def _add_path_rules(ruleset: int, paths: Iterable[str], rights: int, kind: str, warnings: list[str]) -> None:
    for path in paths:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except FileNotFoundError:
            warnings.append(f"{kind} path {path!r} does not exist: no rule added")
            continue
        except OSError as exc:
            warnings.append(f"{kind} path {path!r} cannot be opened ({_errno_name(exc)}): no rule added")
            continue
        try:
            allowed = rights if stat.S_ISDIR(os.fstat(fd).st_mode) else rights & _FS_FILE
            rule = _PathBeneathAttr(allowed_access=allowed, parent_fd=fd)
            _syscall(
                _SYS_LANDLOCK_ADD_RULE,
                ctypes.c_int(ruleset),
                ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH),
                ctypes.byref(rule),
                ctypes.c_uint32(0),
            )
        except OSError as exc:
            warnings.append(f"{kind} path {path!r}: landlock_add_rule failed ({_errno_name(exc)}): no access granted")
        finally:
            os.close(fd)


def _add_port_rules(ruleset: int, right: int, low: int, high: int, warnings: list[str]) -> None:
    rule = _NetPortAttr(allowed_access=right, port=0)
    for port in range(low, high + 1):
        rule.port = port
        try:
            _syscall(
                _SYS_LANDLOCK_ADD_RULE,
                ctypes.c_int(ruleset),
                ctypes.c_int(_LANDLOCK_RULE_NET_PORT),
                ctypes.byref(rule),
                ctypes.c_uint32(0),
            )
        except OSError as exc:
            what = "connect" if right == _NET_CONNECT_TCP else "bind"
            warnings.append(
                f"TCP {what} port rule {port}: landlock_add_rule failed ({_errno_name(exc)}): ports {port}-{high} denied"
            )
            return


# -------------------------------------------------------------------- seccomp

_SECCOMP_MODE_FILTER: Final = 2
_SECCOMP_GET_ACTION_AVAIL: Final = 2
_SECCOMP_RET_ALLOW: Final = 0x7FFF0000
_SECCOMP_RET_ERRNO: Final = 0x00050000

_BPF_LD_W_ABS: Final = 0x20  # BPF_LD | BPF_W | BPF_ABS
_BPF_JEQ_K: Final = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_BPF_JSET_K: Final = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_BPF_RET_K: Final = 0x06  # BPF_RET | BPF_K

# struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
_DATA_NR: Final = 0
_DATA_ARCH: Final = 4
_DATA_ARG0_LOW: Final = 16  # low 32 bits of args[0] (little-endian only)

_AUDIT_ARCH_X86_64: Final = 0xC000003E  # EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
_AUDIT_ARCH_AARCH64: Final = 0xC00000B7  # EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
_X32_SYSCALL_BIT: Final = 0x40000000

_CLONE_THREAD: Final = 0x00010000
#: CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
#: (CLONE_NEWTIME, 0x80, exists only for clone3/unshare: in clone's flags that byte is the exit signal)
_CLONE_NEW_NAMESPACES: Final = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

#: refused with EPERM whatever the confinement says
_DENIED: Final = (
    # tracing other processes, reading or writing their memory, stealing their descriptors
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "process_madvise",
    # mounts (old and new mount API), root changes, namespaces
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "unshare",
    "setns",
    # the running kernel itself
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    # file handles bypass path resolution
    "open_by_handle_at",
    # kernel keyrings
    "keyctl",
    "add_key",
    "request_key",
    # host administration
    "reboot",
    "swapon",
    "swapoff",
    "acct",
)
#: refused with EPERM unless allow_subprocess (plus clone without CLONE_THREAD)
_DENIED_SUBPROCESS: Final = ("execve", "execveat", "fork", "vfork")

_SYSCALLS_X86_64: Final = {
    "ptrace": 101,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "pidfd_getfd": 438,
    "process_madvise": 440,
    "mount": 165,
    "umount2": 166,
    "pivot_root": 155,
    "chroot": 161,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
    "unshare": 272,
    "setns": 308,
    "kexec_load": 246,
    "kexec_file_load": 320,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "bpf": 321,
    "perf_event_open": 298,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_by_handle_at": 304,
    "keyctl": 250,
    "add_key": 248,
    "request_key": 249,
    "reboot": 169,
    "swapon": 167,
    "swapoff": 168,
    "acct": 163,
    "execve": 59,
    "execveat": 322,
    "fork": 57,
    "vfork": 58,
    "clone": 56,
    "clone3": 435,
    "seccomp": 317,
}
#: asm-generic table; aarch64 has no fork/vfork (libc uses clone)
_SYSCALLS_AARCH64: Final = {
    "ptrace": 117,
    "process_vm_readv": 270,
    "process_vm_writev": 271,
    "pidfd_getfd": 438,
    "process_madvise": 440,
    "mount": 40,
    "umount2": 39,
    "pivot_root": 41,
    "chroot": 51,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
    "unshare": 97,
    "setns": 268,
    "kexec_load": 104,
    "kexec_file_load": 294,
    "init_module": 105,
    "finit_module": 273,
    "delete_module": 106,
    "bpf": 280,
    "perf_event_open": 241,
    "userfaultfd": 282,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "open_by_handle_at": 265,
    "keyctl": 219,
    "add_key": 217,
    "request_key": 218,
    "reboot": 142,
    "swapon": 224,
    "swapoff": 225,
    "acct": 89,
    "execve": 221,
    "execveat": 281,
    "clone": 220,
    "clone3": 435,
    "seccomp": 277,
}


@attrs.frozen
class _Arch:
    name: str
    audit: int
    syscalls: Mapping[str, int]
    x32: bool  # the x32 ABI shares the audit arch: refuse by syscall-number bit


_ARCHES: Final = {
    "x86_64": _Arch("x86_64", _AUDIT_ARCH_X86_64, _SYSCALLS_X86_64, x32=True),
    "aarch64": _Arch("aarch64", _AUDIT_ARCH_AARCH64, _SYSCALLS_AARCH64, x32=False),
}
_MACHINE_ALIASES: Final = {"amd64": "x86_64", "arm64": "aarch64"}


def _machine() -> str:
    try:
        machine = os.uname().machine
    except AttributeError:  # pragma: no cover - not POSIX
        return "unknown"
    return _MACHINE_ALIASES.get(machine.lower(), machine.lower())


def _arch() -> tuple[_Arch | None, str | None]:
    """The seccomp table for this process, or why there is none."""
    if not _IS_LINUX:
        return None, f"seccomp is Linux-only (platform {sys.platform})"
    machine = _machine()
    arch = _ARCHES.get(machine)
    if arch is None:
        return None, f"no seccomp syscall table for architecture {machine!r} (known: x86_64, aarch64)"
    # A 32-bit interpreter on a 64-bit kernel makes 32-bit syscalls: the arch check would refuse them all.
    if struct.calcsize("P") != 8 or sys.byteorder != "little":
        return None, f"{machine} kernel but a {struct.calcsize('P') * 8}-bit {sys.byteorder}-endian interpreter"
    return arch, None


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


class _Assembler:
    """Classic BPF with forward jumps to labels (BPF jumps forward only, at most 255 instructions)."""

    def __init__(self) -> None:
        self._ops: list[tuple[int, int | str, int | str, int]] = []
        self._labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self._labels[name] = len(self._ops)

    def load(self, offset: int) -> None:
        self._ops.append((_BPF_LD_W_ABS, 0, 0, offset))

    def jump(self, code: int, k: int, jt: int | str = 0, jf: int | str = 0) -> None:
        self._ops.append((code, jt, jf, k))

    def ret(self, k: int) -> None:
        self._ops.append((_BPF_RET_K, 0, 0, k))

    def assemble(self) -> list[tuple[int, int, int, int]]:
        out: list[tuple[int, int, int, int]] = []
        for index, (code, jt, jf, k) in enumerate(self._ops):
            out.append((code, self._offset(index, jt), self._offset(index, jf), k))
        return out

    def _offset(self, index: int, target: int | str) -> int:
        if isinstance(target, int):
            return target
        offset = self._labels[target] - index - 1
        if not 0 <= offset <= 255:
            raise ValueError(f"BPF jump to {target!r} out of range ({offset})")
        return offset


def _seccomp_program(arch: _Arch, allow_subprocess: bool) -> tuple[list[tuple[int, int, int, int]], tuple[str, ...]]:
    """The filter for ``arch`` and what it refuses."""
    asm = _Assembler()
    denied = [name for name in _DENIED if name in arch.syscalls]
    if not allow_subprocess:
        denied += [name for name in _DENIED_SUBPROCESS if name in arch.syscalls]

    asm.load(_DATA_ARCH)
    asm.jump(_BPF_JEQ_K, arch.audit, jf="deny")  # another architecture's calling convention
    asm.load(_DATA_NR)
    if arch.x32:
        asm.jump(_BPF_JSET_K, _X32_SYSCALL_BIT, jt="deny")
    for name in denied:
        asm.jump(_BPF_JEQ_K, arch.syscalls[name], jt="deny")
    asm.jump(_BPF_JEQ_K, arch.syscalls["clone3"], jt="enosys")
    asm.jump(_BPF_JEQ_K, arch.syscalls["clone"], jf="allow")
    # clone: flags are args[0]; only its low 32 bits reach the kernel's clone flags
    asm.load(_DATA_ARG0_LOW)
    asm.jump(_BPF_JSET_K, _CLONE_NEW_NAMESPACES, jt="deny")
    if not allow_subprocess:
        asm.jump(_BPF_JSET_K, _CLONE_THREAD, jt="allow", jf="deny")
    asm.label("allow")
    asm.ret(_SECCOMP_RET_ALLOW)
    asm.label("deny")
    asm.ret(_SECCOMP_RET_ERRNO | errno.EPERM)
    asm.label("enosys")
    asm.ret(_SECCOMP_RET_ERRNO | errno.ENOSYS)

    notes = ["clone with CLONE_NEW* flags"]
    if not allow_subprocess:
        notes.append("clone without CLONE_THREAD")
    notes.append("clone3 (ENOSYS)")
    if arch.x32:
        notes.append("x32 syscalls")
    notes.append("non-native syscall ABIs")
    return asm.assemble(), (*denied, *notes)


def _seccomp_available(arch: _Arch | None) -> tuple[bool, str | None]:
    """Whether a filter returning SECCOMP_RET_ERRNO can be installed, or why not."""
    if arch is None:
        return False, None
    try:
        mode = _prctl(_PR_GET_SECCOMP)
    except OSError as exc:
        return False, f"no seccomp in this kernel (PR_GET_SECCOMP: {_errno_name(exc)})"
    if mode == 1:  # pragma: no cover - strict mode would have killed us at prctl already
        return False, "the process is in seccomp strict mode"
    action = ctypes.c_uint32(_SECCOMP_RET_ERRNO)
    try:
        _syscall(
            arch.syscalls["seccomp"], ctypes.c_uint(_SECCOMP_GET_ACTION_AVAIL), ctypes.c_uint(0), ctypes.byref(action)
        )
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            # Linux < 4.14 has no GET_ACTION_AVAIL, but filters with RET_ERRNO exist since 3.5
            return True, None
        return False, f"seccomp filters unavailable ({_errno_name(exc)})"
    return True, None


def _apply_seccomp(c: Confinement, warnings: list[str]) -> tuple[bool, tuple[str, ...]]:
    arch, why = _arch()
    if arch is None:
        warnings.append(f"seccomp filter not installed: {why}")
        return False, ()
    available, why = _seccomp_available(arch)
    if not available:
        warnings.append(f"seccomp filter not installed: {why}")
        return False, ()
    program, denied = _seccomp_program(arch, c.allow_subprocess)
    filters = (_SockFilter * len(program))(*(_SockFilter(code, jt, jf, k) for code, jt, jf, k in program))
    prog = _SockFprog(len=len(program), filter=ctypes.cast(filters, ctypes.POINTER(_SockFilter)))
    try:
        _prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog))
    except OSError as exc:
        warnings.append(f"seccomp filter not installed: prctl(PR_SET_SECCOMP) failed ({_errno_name(exc)})")
        return False, ()
    return True, denied


# -------------------------------------------------------------------- rlimits


def _apply_rlimits(c: Confinement, warnings: list[str]) -> dict[str, int]:
    asked: list[tuple[str, int, int, int]] = []  # (name, resource, soft, hard)
    if c.memory_bytes is not None:
        asked.append(("RLIMIT_AS", resource.RLIMIT_AS, c.memory_bytes, c.memory_bytes))
    if c.cpu_seconds is not None:
        asked.append(("RLIMIT_CPU", resource.RLIMIT_CPU, c.cpu_seconds, c.cpu_seconds + 1))
    if c.open_files is not None:
        asked.append(("RLIMIT_NOFILE", resource.RLIMIT_NOFILE, c.open_files, c.open_files))
    if c.file_size_bytes is not None:
        asked.append(("RLIMIT_FSIZE", resource.RLIMIT_FSIZE, c.file_size_bytes, c.file_size_bytes))
    asked.append(("RLIMIT_CORE", resource.RLIMIT_CORE, 0, 0))
    applied: dict[str, int] = {}
    for name, which, soft, hard in asked:
        try:
            _, current_hard = resource.getrlimit(which)
            if current_hard != resource.RLIM_INFINITY and current_hard < hard:
                # an existing hard limit is stricter already: keep it (it cannot be raised anyway)
                hard = current_hard
                soft = min(soft, hard)
            resource.setrlimit(which, (soft, hard))
        except (OSError, ValueError) as exc:
            warnings.append(f"{name} not applied: {exc}")
            continue
        applied[name] = soft
    return applied


# ----------------------------------------------------------------- public API


def _thread_count() -> int:
    count = threading.active_count()
    if _IS_LINUX:
        try:
            count = max(count, len(os.listdir("/proc/self/task")))
        except OSError:
            pass
    return count


def _validate(c: Confinement) -> None:
    for field in ("read_paths", "write_paths"):
        paths = getattr(c, field)
        if not isinstance(paths, tuple) or not all(isinstance(p, str) for p in paths):
            raise TypeError(f"Confinement.{field} must be a tuple of str, got {paths!r}")
    for field in ("connect_ports", "bind_ports"):
        ranges = getattr(c, field)
        if ranges is None:
            continue
        for item in ranges:
            ok = (
                isinstance(item, tuple)
                and len(item) == 2
                and all(isinstance(p, int) and not isinstance(p, bool) for p in item)
                and 0 <= item[0] <= item[1] <= _MAX_PORT
            )
            if not ok:
                raise ValueError(f"Confinement.{field}: {item!r} is not a (low, high) port range within 0..{_MAX_PORT}")
    for field in ("memory_bytes", "cpu_seconds", "open_files", "file_size_bytes"):
        value = getattr(c, field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"Confinement.{field} must be a positive int or None, got {value!r}")


def confine(c: Confinement) -> Protections:
    """Apply ``c`` to the calling process: rlimits, no-new-privs, Landlock, seccomp, in this order.

    Irreversible.  Call it from a fresh, single-threaded process before any
    untrusted code is imported.  Raises ``RuntimeError`` (before applying
    anything) when the process has more than one thread, ``ValueError`` or
    ``TypeError`` for a malformed ``c``.  Every protection asked for that
    cannot be applied is named in :attr:`Protections.warnings`.
    """
    _validate(c)
    threads = _thread_count()
    if threads > 1:
        raise RuntimeError(
            f"confine() needs a single-threaded process, this one has {threads} threads: Landlock, seccomp and "
            "no-new-privs apply per thread, and a thread started before confine() would stay unrestricted"
        )
    warnings: list[str] = []
    try:
        rlimits = _apply_rlimits(c, warnings)
    except Exception as exc:  # e.g. MemoryError: report, go on with the rest
        warnings.append(f"rlimits not applied: {exc!r}")
        rlimits = {}

    no_new_privs = False
    if not _IS_LINUX:
        warnings.append(f"no-new-privs not set: Linux-only (platform {sys.platform})")
    else:
        try:
            _prctl(_PR_SET_NO_NEW_PRIVS, 1)
            no_new_privs = _prctl(_PR_GET_NO_NEW_PRIVS) == 1
        except Exception as exc:
            warnings.append(f"no-new-privs not set: {exc!r}")

    abi, why = _landlock_probe()
    try:
        landlock_fs, landlock_net, scopes = _apply_landlock(c, abi, why, warnings)
    except Exception as exc:
        warnings.append(f"Landlock not applied: {exc!r}")
        landlock_fs, landlock_net, scopes = False, False, ()

    try:
        seccomp, denied = _apply_seccomp(c, warnings)
    except Exception as exc:
        warnings.append(f"seccomp filter not installed: {exc!r}")
        seccomp, denied = False, ()

    return Protections(
        rlimits=rlimits,
        no_new_privs=no_new_privs,
        landlock_abi=abi,
        landlock_fs=landlock_fs,
        landlock_net=landlock_net,
        seccomp=seccomp,
        warnings=tuple(warnings),
        landlock_scopes=scopes,
        seccomp_denied=denied,
    )


#: read-only system files a confined CPython commonly needs (those that exist are returned)
_RUNTIME_FILES: Final = (
    "/etc/ld.so.cache",  # the dynamic loader's index: without it dlopen() of an extension's libraries fails
    "/etc/localtime",
    "/usr/share/zoneinfo",
    "/dev/null",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
)
_RUNTIME_LIB_DIRS: Final = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib")
#: name resolution (getaddrinfo) and TLS trust anchors
_NETWORK_FILES: Final = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/ssl/certs",
    "/etc/ssl/cert.pem",
    "/etc/pki/tls/certs",
    "/usr/share/ca-certificates",
)


def runtime_read_paths(*, network: bool = False) -> tuple[str, ...]:
    """System paths a confined interpreter needs to keep working, for :attr:`Confinement.read_paths`.

    The directories of the shared libraries mapped into this process and the
    usual library directories (a later ``import sqlite3`` or a subprocess's
    dynamic loader must read them), the loader cache, time zone data and the
    harmless character devices (``/dev/null``, ``/dev/urandom``: read only; put
    ``/dev/null`` in ``write_paths`` for ``subprocess.DEVNULL``).  With
    ``network``: resolver configuration and CA certificates.  Only paths that
    exist are returned; none of them is secret on a normal host.  Call it
    before :func:`confine` (it reads ``/proc/self/maps``).
    """
    found: dict[str, None] = {}
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                parts = line.split(maxsplit=5)
                if len(parts) < 6:
                    continue
                path = parts[5].strip()
                name = os.path.basename(path)
                if path.startswith("/") and (name.endswith(".so") or ".so." in name) and os.path.exists(path):
                    found[os.path.dirname(path)] = None
    except OSError:
        pass
    candidates = [*_RUNTIME_LIB_DIRS, *_RUNTIME_FILES]
    if network:
        candidates += _NETWORK_FILES
    for path in candidates:
        if os.path.exists(path):
            found[path] = None
    return tuple(found)


def host_support() -> dict[str, object]:
    """What :func:`confine` could apply on this host, probed without applying anything."""
    abi, landlock_why = _landlock_probe()
    errata: int | None = None
    if abi is not None and abi >= 7:
        errata, _ = _landlock_probe(_LANDLOCK_CREATE_RULESET_ERRATA)
    arch, arch_why = _arch()
    seccomp, seccomp_why = _seccomp_available(arch)
    seccomp_mode = _status_field("Seccomp")
    no_new_privs = _status_field("NoNewPrivs")
    return {
        "platform": sys.platform,
        "arch": _machine(),
        "landlock_abi": abi,
        "landlock_errata": errata,
        "landlock_fs": abi is not None,
        "landlock_net": abi is not None and abi >= 4,
        "landlock_scopes": abi is not None and abi >= 6,
        "landlock_reason": landlock_why,
        "seccomp": seccomp,
        "seccomp_arch": arch.name if arch is not None else None,
        "seccomp_reason": arch_why if arch is None else seccomp_why,
        # the state of the calling process (already confined by its parent?)
        "no_new_privs": None if no_new_privs is None else no_new_privs == "1",
        "seccomp_mode": None if seccomp_mode is None else int(seccomp_mode),
        "threads": _thread_count(),
    }
