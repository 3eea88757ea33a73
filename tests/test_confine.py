"""kernel._confine: a worker process confining itself (rlimits, no-new-privs, Landlock, seccomp).

Every test that confines runs a fresh child interpreter (confinement cannot be
undone, so never in the pytest process): the child loads ``kernel/_confine.py``,
calls ``confine(...)``, tries the forbidden thing and prints its results as JSON.
The child keeps the Python installation, site-packages and the repository
readable (``read_paths``) so that it can keep importing after confinement.
Network tests only ever use 127.0.0.1, with listeners owned by the test process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import site
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFINE_PATH = REPO / "kernel" / "_confine.py"


def _load_confine() -> Any:
    # By path, not ``import kernel``: probing the host must not depend on the rest of the package.
    spec = importlib.util.spec_from_file_location("orion_confine_probe", CONFINE_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_confine = _load_confine()
HOST = _confine.host_support()
ABI: int | None = HOST["landlock_abi"]

needs_landlock = pytest.mark.skipif(ABI is None, reason=f"Landlock unavailable on this host: {HOST['landlock_reason']}")
needs_landlock_net = pytest.mark.skipif(
    ABI is None or ABI < 4, reason=f"Landlock TCP rules need ABI >= 4, this host has {ABI}"
)
needs_landlock_scopes = pytest.mark.skipif(
    ABI is None or ABI < 6, reason=f"Landlock scopes need ABI >= 6, this host has {ABI}"
)
needs_seccomp = pytest.mark.skipif(not HOST["seccomp"], reason=f"no seccomp filter here: {HOST['seccomp_reason']}")

#: syscall numbers for the child's raw probes, independent of the module's own tables
SYSCALLS = {
    "x86_64": {"ptrace": 101, "unshare": 272, "process_vm_readv": 310, "clone3": 435, "getpid": 39},
    "aarch64": {"ptrace": 117, "unshare": 97, "process_vm_readv": 270, "clone3": 435, "getpid": 172},
}


def python_read_paths() -> list[str]:
    """What a child interpreter needs to read to keep importing after confinement."""
    paths = {sys.prefix, sys.base_prefix, str(REPO), *site.getsitepackages()}
    user_site = site.getusersitepackages()
    if os.path.isdir(user_site):
        paths.add(user_site)
    return sorted(paths)


PRELUDE = """
import ctypes, errno, importlib.util, json, os, socket, sys, threading
import attrs

_spec = importlib.util.spec_from_file_location("orion_confine_under_test", CONFINE_PATH)
confine_mod = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = confine_mod
_spec.loader.exec_module(confine_mod)
SPEC = json.loads(sys.argv[1])
results = {}
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def attempt(name, fn):
    try:
        value = fn()
    except BaseException as exc:
        results[name] = {"ok": False, "error": type(exc).__name__, "errno": getattr(exc, "errno", None),
                         "message": str(exc)}
    else:
        if not isinstance(value, (int, str, bool, float, list, type(None))):
            value = repr(value)
        results[name] = {"ok": True, "value": value}


def raw(nr, *args):
    # a raw syscall: its result, or -errno
    result = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return -ctypes.get_errno() if result == -1 else result


def build(kwargs):
    kw = dict(kwargs)
    runtime = kw.pop("runtime", None)  # None, "local" or "network": add runtime_read_paths()
    if runtime is not None:
        kw["read_paths"] = [*kw.get("read_paths", ()), *confine_mod.runtime_read_paths(network=runtime == "network")]
    for key in ("read_paths", "write_paths"):
        if key in kw:
            kw[key] = tuple(kw[key])
    for key in ("connect_ports", "bind_ports"):
        if kw.get(key) is not None:
            kw[key] = tuple(tuple(r) for r in kw[key])
    return confine_mod.Confinement(**kw)


def do_confine(**overrides):
    protections = confine_mod.confine(build({**SPEC["confinement"], **overrides}))
    results["protections"] = attrs.asdict(protections)
    return protections


def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
"""


def child(confinement: dict[str, Any], body: str, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``body`` in a fresh ``python -I`` after the prelude; ``confinement`` is ``SPEC["confinement"]``."""
    script = f"CONFINE_PATH = {str(CONFINE_PATH)!r}\nSYSCALLS = {SYSCALLS.get(HOST['arch'], {})!r}\n{PRELUDE}\n{body}\n"
    spec = json.dumps({"confinement": confinement})
    return subprocess.run(
        [sys.executable, "-I", "-c", script, spec],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(REPO),
        check=False,
    )


def run_confined(confinement: dict[str, Any], body: str) -> dict[str, Any]:
    """Like :func:`child`, expecting a clean exit and the ``results`` JSON on the last stdout line."""
    proc = child(confinement, body + "\nprint(json.dumps(results), flush=True)\n")
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no output from the child:\n{proc.stderr}"
    results: dict[str, Any] = json.loads(lines[-1])
    return results


def ok(result: dict[str, Any]) -> Any:
    assert result["ok"], result
    return result.get("value")


def denied(result: dict[str, Any], error: str = "PermissionError", errno_: int | None = None) -> None:
    assert not result["ok"], result
    assert result["error"] == error, result
    if errno_ is not None:
        assert result["errno"] == errno_, result


# ------------------------------------------------------------------ host_support


def test_host_support_shape() -> None:
    support = _confine.host_support()
    expected = {
        "platform": str,
        "arch": str,
        "landlock_fs": bool,
        "landlock_net": bool,
        "landlock_scopes": bool,
        "seccomp": bool,
        "threads": int,
    }
    for key, kind in expected.items():
        assert isinstance(support[key], kind), (key, support[key])
    assert support["landlock_abi"] is None or isinstance(support["landlock_abi"], int)
    if support["landlock_abi"] is None:
        assert isinstance(support["landlock_reason"], str) and support["landlock_reason"]
        assert support["landlock_fs"] is False
    else:
        assert support["landlock_abi"] >= 1
        assert support["landlock_reason"] is None
        assert support["landlock_net"] is (support["landlock_abi"] >= 4)
        assert support["landlock_scopes"] is (support["landlock_abi"] >= 6)
    if sys.platform.startswith("linux") and support["arch"] in ("x86_64", "aarch64"):
        assert support["seccomp_arch"] == support["arch"]
    if not support["seccomp"]:
        assert isinstance(support["seccomp_reason"], str)
    # probing applies nothing: the pytest process is not confined by it
    assert support["seccomp_mode"] in (None, 0)
    assert json.dumps(support)  # serialisable as is, for `plugins info`


# ------------------------------------------------------------------ filesystem


@pytest.mark.slow
@needs_landlock
def test_read_inside_read_paths_and_nothing_else(tmp_path: Path) -> None:
    readable = tmp_path / "ro"
    readable.mkdir()
    (readable / "a.txt").write_text("inside")
    (tmp_path / "secret.txt").write_text("outside")
    single = tmp_path / "single.txt"
    single.write_text("one file")
    (tmp_path / "sibling.txt").write_text("next to the one file")
    paths = {"ro": str(readable), "secret": str(tmp_path / "secret.txt"), "single": str(single), "tmp": str(tmp_path)}
    body = f"""
P = {paths!r}
do_confine()
attempt("read_inside", lambda: open(os.path.join(P["ro"], "a.txt")).read())
attempt("list_inside", lambda: sorted(os.listdir(P["ro"])))
attempt("read_outside", lambda: open(P["secret"]).read())
attempt("list_outside", lambda: os.listdir(P["tmp"]))
attempt("write_inside_read_path", lambda: open(os.path.join(P["ro"], "a.txt"), "a").write("x"))
attempt("create_inside_read_path", lambda: open(os.path.join(P["ro"], "new.txt"), "w").close())
attempt("read_single_file", lambda: open(P["single"]).read())
attempt("read_sibling_of_single_file", lambda: open(os.path.join(P["tmp"], "sibling.txt")).read())
attempt("read_etc", lambda: open("/etc/passwd").read())
attempt("import_after_confine", lambda: __import__("fractions").Fraction(1, 3).denominator)
"""
    results = run_confined({"read_paths": [*python_read_paths(), str(readable), str(single)]}, body)
    assert ok(results["read_inside"]) == "inside"
    assert ok(results["list_inside"]) == ["a.txt"]
    denied(results["read_outside"], errno_=13)
    denied(results["list_outside"], errno_=13)
    denied(results["write_inside_read_path"], errno_=13)
    denied(results["create_inside_read_path"], errno_=13)
    assert ok(results["read_single_file"]) == "one file"
    denied(results["read_sibling_of_single_file"], errno_=13)
    denied(results["read_etc"])
    assert ok(results["import_after_confine"]) == 3
    protections = results["protections"]
    assert protections["landlock_fs"] is True
    assert protections["warnings"] == []
    assert (tmp_path / "ro" / "a.txt").read_text() == "inside"
    assert not (tmp_path / "ro" / "new.txt").exists()


@pytest.mark.slow
@needs_landlock
def test_write_inside_write_paths_and_nothing_else(tmp_path: Path) -> None:
    data = tmp_path / "data"
    other = tmp_path / "other"
    readable = tmp_path / "ro"
    for d in (data, other, readable):
        d.mkdir()
    writable_file = tmp_path / "log.txt"
    writable_file.write_text("")
    paths = {
        "data": str(data),
        "other": str(other),
        "ro": str(readable),
        "tmp": str(tmp_path),
        "log": str(writable_file),
    }
    body = f"""
P = {paths!r}
do_confine()
d = P["data"]
def create():
    with open(os.path.join(d, "f.txt"), "w") as f:
        f.write("hello")
    return open(os.path.join(d, "f.txt")).read()
attempt("create", create)
attempt("append", lambda: open(os.path.join(d, "f.txt"), "a").write("!"))
attempt("truncate", lambda: os.truncate(os.path.join(d, "f.txt"), 2))
attempt("rename_within", lambda: os.rename(os.path.join(d, "f.txt"), os.path.join(d, "g.txt")))
attempt("mkdir", lambda: os.makedirs(os.path.join(d, "sub", "deeper")))
attempt("move_to_subdir", lambda: os.rename(os.path.join(d, "g.txt"), os.path.join(d, "sub", "g.txt")))
attempt("move_to_other_write_path", lambda: os.rename(os.path.join(d, "sub", "g.txt"), os.path.join(P["other"], "g.txt")))
attempt("symlink", lambda: os.symlink("g.txt", os.path.join(P["other"], "link")))
attempt("remove", lambda: os.unlink(os.path.join(P["other"], "g.txt")))
attempt("rmdir", lambda: os.rmdir(os.path.join(d, "sub", "deeper")))
attempt("write_outside", lambda: open(os.path.join(P["tmp"], "out.txt"), "w").close())
attempt("write_in_read_path", lambda: open(os.path.join(P["ro"], "x.txt"), "w").close())
attempt("move_out_of_write_path", lambda: os.rename(os.path.join(P["other"], "link"), os.path.join(P["tmp"], "link")))
attempt("write_single_file", lambda: open(P["log"], "a").write("logged"))
attempt("create_next_to_single_file", lambda: open(os.path.join(P["tmp"], "log2.txt"), "w").close())
"""
    results = run_confined(
        {
            "read_paths": [*python_read_paths(), str(readable)],
            "write_paths": [str(data), str(other), str(writable_file)],
        },
        body,
    )
    assert ok(results["create"]) == "hello"
    for name in ("append", "truncate", "rename_within", "mkdir", "move_to_subdir", "symlink", "remove", "rmdir"):
        ok(results[name])
    assert ABI is not None
    if ABI >= 2:  # REFER is handled: moving between two write paths is allowed
        ok(results["move_to_other_write_path"])
    else:  # ABI 1: any cross-directory move is refused
        denied(results["move_to_other_write_path"], "OSError", 18)
    denied(results["write_outside"], errno_=13)
    denied(results["write_in_read_path"], errno_=13)
    assert not results["move_out_of_write_path"]["ok"]
    ok(results["write_single_file"])
    denied(results["create_next_to_single_file"], errno_=13)
    assert writable_file.read_text() == "logged"
    assert not (tmp_path / "out.txt").exists()
    assert not (tmp_path / "log2.txt").exists()
    assert sorted(p.name for p in data.iterdir()) == ["sub"]
    assert results["protections"]["warnings"] == []


@pytest.mark.slow
@needs_landlock
def test_missing_paths_become_warnings(tmp_path: Path) -> None:
    missing_read = tmp_path / "no-such-dir"
    missing_write = tmp_path / "no-such-data"
    body = """
do_confine()
attempt("read_tmp", lambda: os.listdir(os.path.dirname(SPEC["confinement"]["write_paths"][0])))
"""
    results = run_confined(
        {"read_paths": [*python_read_paths(), str(missing_read)], "write_paths": [str(missing_write)]}, body
    )
    protections = results["protections"]
    warnings = protections["warnings"]
    assert any(str(missing_read) in w and "does not exist" in w for w in warnings), warnings
    assert any(str(missing_write) in w and "does not exist" in w for w in warnings), warnings
    assert protections["landlock_fs"] is True  # still applied, with less access, never more
    denied(results["read_tmp"], errno_=13)


@pytest.mark.slow
@needs_landlock
def test_runtime_read_paths_keep_extension_imports_working() -> None:
    body = """
do_confine()
attempt("sqlite3", lambda: __import__("sqlite3").connect(":memory:").execute("select 6 * 7").fetchone()[0])
attempt("devnull", lambda: open(os.devnull, "rb").read())
attempt("passwd", lambda: open("/etc/passwd").read())
"""
    results = run_confined({"read_paths": python_read_paths(), "runtime": "network"}, body)
    assert ok(results["sqlite3"]) == 42
    assert ok(results["devnull"]) == "b''"
    denied(results["passwd"], errno_=13)  # runtime paths are libraries and public config, not /etc
    assert all("does not exist" not in w for w in results["protections"]["warnings"])


# ------------------------------------------------------------------ network (127.0.0.1 only)


def _listener() -> socket.socket:
    server = socket.create_server(("127.0.0.1", 0), backlog=8)
    server.settimeout(10)
    return server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


CONNECT_BODY = """
def connect(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        return s.getpeername()[1]
"""


@pytest.mark.slow
@needs_landlock_net
def test_tcp_connect_only_to_allowed_ports() -> None:
    allowed, other = _listener(), _listener()
    with allowed, other:
        a, b = allowed.getsockname()[1], other.getsockname()[1]
        body = f"""{CONNECT_BODY}
do_confine()
attempt("allowed", lambda: connect({a}))
attempt("other", lambda: connect({b}))
"""
        results = run_confined({"read_paths": python_read_paths(), "connect_ports": [[a, a]]}, body)
        conn, _ = allowed.accept()
        conn.close()
    assert ok(results["allowed"]) == a
    denied(results["other"], errno_=13)
    assert results["protections"]["landlock_net"] is True


@pytest.mark.slow
@needs_landlock_net
def test_no_tcp_connect_at_all_and_none_means_unrestricted() -> None:
    server = _listener()
    with server:
        port = server.getsockname()[1]
        body = f"""{CONNECT_BODY}
do_confine()
attempt("connect", lambda: connect({port}))
"""
        nothing = run_confined({"read_paths": python_read_paths(), "connect_ports": []}, body)
        unrestricted = run_confined({"read_paths": python_read_paths(), "connect_ports": None}, body)
    denied(nothing["connect"], errno_=13)
    assert nothing["protections"]["landlock_net"] is True
    assert ok(unrestricted["connect"]) == port
    assert unrestricted["protections"]["landlock_net"] is False
    assert unrestricted["protections"]["warnings"] == []


@pytest.mark.slow
@needs_landlock_net
def test_tcp_bind_refused_unless_allowed() -> None:
    port, other = _free_port(), _free_port()
    body = f"""
def bind(port):
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        return s.getsockname()[1]
do_confine()
attempt("ephemeral", lambda: bind(0))
attempt("allowed", lambda: bind({port}))
attempt("other", lambda: bind({other}))
"""
    none_allowed = run_confined({"read_paths": python_read_paths(), "bind_ports": []}, body)
    one_allowed = run_confined({"read_paths": python_read_paths(), "bind_ports": [[port, port]]}, body)
    for name in ("ephemeral", "allowed", "other"):
        denied(none_allowed[name], errno_=13)
    assert ok(one_allowed["allowed"]) == port
    denied(one_allowed["other"], errno_=13)
    denied(one_allowed["ephemeral"], errno_=13)  # an ephemeral bind is a bind to port 0


# ------------------------------------------------------------------ seccomp


@pytest.mark.slow
@needs_seccomp
def test_subprocess_refused_but_threads_work(tmp_path: Path) -> None:
    body = f"""
import concurrent.futures, subprocess
do_confine()
attempt("subprocess", lambda: subprocess.run([sys.executable, "-c", "pass"]).returncode)
attempt("fork", lambda: os.fork())
attempt("posix_spawn", lambda: os.posix_spawn(sys.executable, [sys.executable, "-c", "pass"], {{}}))
attempt("execv", lambda: os.execv(sys.executable, [sys.executable, "-c", "pass"]))
seen = []
t = threading.Thread(target=lambda: seen.append(threading.get_ident()))
t.start(); t.join()
results["thread_ran"] = len(seen) == 1
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    results["pool"] = sorted(pool.map(lambda x: x * x, range(8)))
def in_thread():
    attempt("thread_reads_outside", lambda: open({str(tmp_path / "secret")!r}).read())
    attempt("thread_forks", lambda: os.fork())
t = threading.Thread(target=in_thread); t.start(); t.join()
"""
    (tmp_path / "secret").write_text("s")
    results = run_confined({"read_paths": python_read_paths(), "allow_subprocess": False}, body)
    for name in ("subprocess", "fork", "posix_spawn", "execv", "thread_forks"):
        denied(results[name], errno_=1)
    assert results["thread_ran"] is True
    assert results["pool"] == [x * x for x in range(8)]
    if ABI is not None:  # a thread started after confine() inherits the Landlock domain
        denied(results["thread_reads_outside"], errno_=13)
    protections = results["protections"]
    assert protections["seccomp"] is True
    assert {"execve", "execveat", "clone without CLONE_THREAD", "clone3 (ENOSYS)"} <= set(protections["seccomp_denied"])


@pytest.mark.slow
@needs_seccomp
def test_subprocess_allowed_and_confined_too(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s")
    grandchild = f"""
import sys
print(6 * 7)
try:
    open({str(secret)!r}).read()
    print("read")
except PermissionError:
    print("denied")
"""
    body = f"""
import subprocess
do_confine()
attempt("subprocess", lambda: subprocess.run([sys.executable, "-I", "-c", {grandchild!r}],
                                             capture_output=True, text=True, check=True).stdout.split())
attempt("unshare_user_ns", lambda: raw(SYSCALLS["unshare"], 0x10000000))
"""
    # the new interpreter's dynamic loader and libc must be readable: runtime_read_paths()
    results = run_confined({"read_paths": python_read_paths(), "runtime": "local", "allow_subprocess": True}, body)
    out = ok(results["subprocess"])
    assert out[0] == "42"
    if ABI is not None:
        assert out[1] == "denied"  # the grandchild runs under the same Landlock domain
    assert ok(results["unshare_user_ns"]) == -1  # namespaces stay refused (EPERM)
    assert "execve" not in results["protections"]["seccomp_denied"]


@pytest.mark.slow
@needs_seccomp
@pytest.mark.skipif(HOST["arch"] not in SYSCALLS, reason=f"no probe syscall numbers for {HOST['arch']}")
def test_dangerous_syscalls_refused() -> None:
    body = """
if SPEC.get("confine"):
    do_confine()
results["ptrace"] = raw(SYSCALLS["ptrace"], 3, os.getppid(), 0, 0)  # PTRACE_PEEKUSER on a process not traced
results["unshare"] = raw(SYSCALLS["unshare"], 0x10000000)  # CLONE_NEWUSER
results["process_vm_readv"] = raw(SYSCALLS["process_vm_readv"], os.getpid(), 0, 0, 0, 0, 0)
results["clone3"] = raw(SYSCALLS["clone3"], 0, 0)
if hasattr(os, "unshare"):
    attempt("os_unshare", lambda: os.unshare(os.CLONE_NEWUSER))
if SYSCALLS["getpid"] == 39:  # x86_64: the same syscall through the x32 ABI
    results["x32_getpid"] = raw(0x40000000 | 39)
"""
    script_spec: dict[str, Any] = {"read_paths": python_read_paths()}
    baseline = _run_spec(body, script_spec, confine=False)
    confined = _run_spec(body, script_spec, confine=True)
    eperm, enosys = -1, -38
    if HOST["seccomp_mode"] == 0:  # not already filtered by an outer sandbox: the calls reach the kernel
        assert baseline["ptrace"] == -3, baseline  # ESRCH: not traced
        assert baseline["process_vm_readv"] == 0, baseline
        assert baseline["clone3"] == -22, baseline  # EINVAL: size 0
    for name in ("ptrace", "unshare", "process_vm_readv"):
        assert confined[name] == eperm, (name, confined)
    assert confined["clone3"] == enosys
    if "os_unshare" in confined:
        denied(confined["os_unshare"], errno_=1)
    if "x32_getpid" in confined:
        assert confined["x32_getpid"] == eperm
        assert baseline["x32_getpid"] != eperm


def _run_spec(body: str, confinement: dict[str, Any], *, confine: bool) -> dict[str, Any]:
    # SPEC["confine"] rides along in the JSON: the same body, with and without confine()
    script = f"CONFINE_PATH = {str(CONFINE_PATH)!r}\nSYSCALLS = {SYSCALLS.get(HOST['arch'], {})!r}\n{PRELUDE}\n{body}\n"
    script += "print(json.dumps(results), flush=True)\n"
    proc = subprocess.run(
        [sys.executable, "-I", "-c", script, json.dumps({"confinement": confinement, "confine": confine})],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    results: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


@pytest.mark.slow
@needs_landlock_scopes
def test_landlock_scopes_signals_and_abstract_sockets() -> None:
    name = f"orion-confine-test-{uuid.uuid4().hex}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with server:
        server.bind("\0" + name)
        server.listen()
        body = f"""
do_confine()
def abstract():
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect("\\0" + {name!r})
        return True
attempt("abstract_connect", abstract)
attempt("signal_parent", lambda: os.kill(os.getppid(), 0))
attempt("signal_self", lambda: os.kill(os.getpid(), 0))
"""
        scoped = run_confined({"read_paths": python_read_paths()}, body)
        unscoped = run_confined(
            {"read_paths": python_read_paths(), "scope_signals": False, "scope_abstract_unix": False}, body
        )
    denied(scoped["abstract_connect"], errno_=1)
    denied(scoped["signal_parent"], errno_=1)
    ok(scoped["signal_self"])
    assert sorted(scoped["protections"]["landlock_scopes"]) == ["abstract_unix_socket", "signal"]
    ok(unscoped["abstract_connect"])
    ok(unscoped["signal_parent"])
    assert unscoped["protections"]["landlock_scopes"] == []


# ------------------------------------------------------------------ rlimits


@pytest.mark.slow
def test_memory_limit_gives_memory_error() -> None:
    limit = 512 << 20
    body = """
import resource
do_confine()
attempt("big", lambda: len(bytearray(1 << 30)))
attempt("small", lambda: len(bytearray(1 << 20)))
results["rlimit"] = list(resource.getrlimit(resource.RLIMIT_AS))
"""
    results = run_confined({"read_paths": python_read_paths(), "memory_bytes": limit}, body)
    denied(results["big"], "MemoryError")
    assert ok(results["small"]) == 1 << 20
    assert results["rlimit"] == [limit, limit]
    assert results["protections"]["rlimits"]["RLIMIT_AS"] == limit


@pytest.mark.slow
def test_open_files_limit_gives_emfile() -> None:
    body = """
do_confine()
opened = []
def open_many():
    while len(opened) < 1000:
        opened.append(open(sys.executable, "rb"))
attempt("open_many", open_many)
results["opened"] = len(opened)
"""
    results = run_confined({"read_paths": python_read_paths(), "open_files": 32}, body)
    denied(results["open_many"], "OSError", 24)
    assert 0 < results["opened"] < 32
    assert results["protections"]["rlimits"]["RLIMIT_NOFILE"] == 32


@pytest.mark.slow
def test_file_size_limit_gives_efbig(tmp_path: Path) -> None:
    target = tmp_path / "big.bin"
    body = f"""
do_confine()
def write_a_lot():
    with open({str(target)!r}, "wb", buffering=0) as f:
        for _ in range(16):
            f.write(b"x" * 1024)
attempt("write", write_a_lot)
"""
    results = run_confined(
        {"read_paths": python_read_paths(), "write_paths": [str(tmp_path)], "file_size_bytes": 4096}, body
    )
    denied(results["write"], "OSError", 27)
    assert target.stat().st_size == 4096


@pytest.mark.slow
def test_cpu_limit_kills_with_sigxcpu() -> None:
    body = """
import resource
do_confine()
print(json.dumps({"rlimit": list(resource.getrlimit(resource.RLIMIT_CPU)), **results}), flush=True)
while True:
    pass
"""
    proc = child({"read_paths": python_read_paths(), "cpu_seconds": 1}, body, timeout=60)
    assert proc.returncode == -signal.SIGXCPU, (proc.returncode, proc.stderr)
    report = json.loads(proc.stdout.strip().splitlines()[0])
    assert report["rlimit"] == [1, 2]  # hard = soft + 1: SIGXCPU first, SIGKILL a second later
    assert report["protections"]["rlimits"]["RLIMIT_CPU"] == 1
    assert report["protections"]["rlimits"]["RLIMIT_CORE"] == 0


# ------------------------------------------------------------------ refusals and reports


@pytest.mark.slow
@pytest.mark.parametrize("starter", ["threading", "_thread"])
def test_refuses_a_second_thread(starter: str, tmp_path: Path) -> None:
    # threading.active_count() does not see _thread threads; /proc/self/task does
    start = {
        "threading": "threading.Thread(target=stop.wait, daemon=True).start()",
        "_thread": "import _thread; _thread.start_new_thread(stop.wait, ())",
    }[starter]
    body = f"""
import time
stop = threading.Event()
{start}
time.sleep(0.05)
attempt("confine", do_confine)
stop.set()
results["no_new_privs"] = status("NoNewPrivs")
results["seccomp"] = status("Seccomp")
attempt("read_after", lambda: open({str(tmp_path / "f")!r}).read())
"""
    (tmp_path / "f").write_text("still readable")
    results = run_confined({"read_paths": [], "memory_bytes": 1 << 30}, body)
    denied(results["confine"], "RuntimeError")
    assert "thread" in results["confine"]["message"]
    # refused before applying anything
    assert results["no_new_privs"] == "0"
    assert results["seccomp"] == "0"
    assert ok(results["read_after"]) == "still readable"


@pytest.mark.slow
def test_invalid_confinement_refused_before_applying() -> None:
    body = """
attempt("bad_ports", lambda: do_confine(connect_ports=((10, 5),)))
attempt("bad_memory", lambda: do_confine(memory_bytes=0))
attempt("bad_paths", lambda: do_confine(read_paths=("/usr", b"/etc")))
results["no_new_privs"] = status("NoNewPrivs")
"""
    results = run_confined({}, body)
    denied(results["bad_ports"], "ValueError")
    denied(results["bad_memory"], "ValueError")
    denied(results["bad_paths"], "TypeError")
    assert results["no_new_privs"] == "0"


@pytest.mark.slow
@needs_landlock
@needs_seccomp
def test_protections_report_what_was_applied(tmp_path: Path) -> None:
    body = """
import resource
p = do_confine()
results["status"] = {f: status(f) for f in ("NoNewPrivs", "Seccomp", "Seccomp_filters")}
results["limits"] = {name: list(resource.getrlimit(getattr(resource, name)))
                     for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_CORE")}
"""
    confinement = {
        "read_paths": [*python_read_paths(), "/proc/self/status"],
        "write_paths": [str(tmp_path)],
        "connect_ports": [[443, 443], [8000, 8010]],
        "bind_ports": [],
        "memory_bytes": 1 << 30,
        "cpu_seconds": 30,
        "open_files": 64,
        "file_size_bytes": 1 << 20,
    }
    results = run_confined(confinement, body)
    p = results["protections"]
    assert p["rlimits"] == {
        "RLIMIT_AS": 1 << 30,
        "RLIMIT_CPU": 30,
        "RLIMIT_NOFILE": 64,
        "RLIMIT_FSIZE": 1 << 20,
        "RLIMIT_CORE": 0,
    }
    assert results["limits"] == {
        "RLIMIT_AS": [1 << 30, 1 << 30],
        "RLIMIT_CPU": [30, 31],
        "RLIMIT_NOFILE": [64, 64],
        "RLIMIT_FSIZE": [1 << 20, 1 << 20],
        "RLIMIT_CORE": [0, 0],
    }
    assert p["no_new_privs"] is True
    assert p["landlock_abi"] == ABI
    assert p["landlock_fs"] is True
    assert p["landlock_net"] is (ABI is not None and ABI >= 4)
    assert p["seccomp"] is True
    assert "ptrace" in p["seccomp_denied"]
    assert results["status"]["NoNewPrivs"] == "1"
    assert results["status"]["Seccomp"] == "2"  # SECCOMP_MODE_FILTER
    assert int(results["status"]["Seccomp_filters"]) >= 1
    if ABI is not None and ABI >= 6:
        assert p["warnings"] == []


@pytest.mark.slow
def test_every_missing_protection_becomes_a_warning(tmp_path: Path) -> None:
    # Simulate hosts without Landlock / with an old ABI / an unknown architecture inside the child.
    body = """
import sys
case = SPEC["case"]
if case == "no_landlock":
    confine_mod._landlock_probe = lambda flag=1: (None, "simulated: no Landlock")
elif case == "abi1":
    real = confine_mod._landlock_probe
    confine_mod._landlock_probe = lambda flag=1: (1, None)
elif case == "unknown_arch":
    confine_mod._arch = lambda: (None, "simulated: unknown architecture")
do_confine()
results["status"] = {f: status(f) for f in ("NoNewPrivs", "Seccomp")}
if case == "abi1":
    d = SPEC["confinement"]["write_paths"][0]
    os.mkdir(os.path.join(d, "a")); os.mkdir(os.path.join(d, "b"))
    open(os.path.join(d, "a", "f"), "w").close()
    attempt("cross_dir_rename", lambda: os.rename(os.path.join(d, "a", "f"), os.path.join(d, "b", "f")))
"""

    def run(case: str) -> dict[str, Any]:
        confinement = {
            "read_paths": [*python_read_paths(), "/proc/self/status"],
            "write_paths": [str(tmp_path / case)],
            "connect_ports": [[443, 443]],
        }
        (tmp_path / case).mkdir()
        script = f"CONFINE_PATH = {str(CONFINE_PATH)!r}\nSYSCALLS = {{}}\n{PRELUDE}\n{body}\n"
        script += "print(json.dumps(results), flush=True)\n"
        proc = subprocess.run(
            [sys.executable, "-I", "-c", script, json.dumps({"confinement": confinement, "case": case})],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        results: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        return results

    no_landlock = run("no_landlock")
    p = no_landlock["protections"]
    assert p["landlock_abi"] is None and p["landlock_fs"] is False and p["landlock_net"] is False
    assert any("Landlock unavailable" in w and "simulated: no Landlock" in w for w in p["warnings"]), p["warnings"]
    if HOST["seccomp"]:
        assert p["seccomp"] is True  # the other protections still apply
        assert no_landlock["status"] == {"NoNewPrivs": "1", "Seccomp": "2"}

    if ABI is not None:
        abi1 = run("abi1")
        p = abi1["protections"]
        assert p["landlock_abi"] == 1 and p["landlock_fs"] is True and p["landlock_net"] is False
        assert any("no TCP rules" in w for w in p["warnings"]), p["warnings"]
        assert any("no scopes" in w for w in p["warnings"]), p["warnings"]
        denied(abi1["cross_dir_rename"], "OSError", 18)  # EXDEV: ABI 1 cannot allow REFER

    unknown = run("unknown_arch")
    p = unknown["protections"]
    assert p["seccomp"] is False and p["seccomp_denied"] == []
    assert any("seccomp filter not installed" in w and "simulated" in w for w in p["warnings"]), p["warnings"]
    assert unknown["status"]["Seccomp"] == "0"


# ------------------------------------------------------------------ the BPF program itself (no child)


def _run_bpf(program: list[tuple[int, int, int, int]], data: bytes) -> int:
    """A tiny classic-BPF interpreter for the four instructions the filter uses."""
    pc, acc = 0, 0
    for _ in range(len(program) + 1):
        code, jt, jf, k = program[pc]
        if code == 0x20:  # ld [k]
            acc = int.from_bytes(data[k : k + 4], "little")
            pc += 1
        elif code == 0x15:  # jeq #k
            pc += 1 + (jt if acc == k else jf)
        elif code == 0x45:  # jset #k
            pc += 1 + (jt if acc & k else jf)
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError(f"unexpected BPF opcode {code:#x}")
    raise AssertionError("BPF program did not return")


def _seccomp_data(nr: int, arch: int, arg0: int = 0) -> bytes:
    return nr.to_bytes(4, "little", signed=True) + arch.to_bytes(4, "little") + bytes(8) + arg0.to_bytes(8, "little")


ALLOW, EPERM, ENOSYS = 0x7FFF0000, 0x00050001, 0x00050026
CLONE_THREAD_FLAGS = 0x3D0F00  # what glibc's pthread_create passes (CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|...)
FORK_FLAGS = 0x01200011  # CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD
TABLES = {
    # arch: (audit arch, {name: nr}) -- written out here, independent of the module's tables
    "x86_64": (
        0xC000003E,
        {"getpid": 39, "read": 0, "ptrace": 101, "execve": 59, "fork": 57, "vfork": 58, "clone": 56, "clone3": 435},
    ),
    "aarch64": (0xC00000B7, {"getpid": 172, "read": 63, "ptrace": 117, "execve": 221, "clone": 220, "clone3": 435}),
}


@pytest.mark.parametrize("arch", sorted(TABLES))
@pytest.mark.parametrize("allow_subprocess", [False, True])
def test_seccomp_program_decisions(arch: str, allow_subprocess: bool) -> None:
    audit, nr = TABLES[arch]
    program, denied_names = _confine._seccomp_program(_confine._ARCHES[arch], allow_subprocess)
    assert len(program) < 256

    def decide(name: str, arg0: int = 0, audit_arch: int = audit) -> int:
        return int(_run_bpf(program, _seccomp_data(nr[name], audit_arch, arg0)))

    assert decide("getpid") == ALLOW
    assert decide("read") == ALLOW
    assert decide("ptrace") == EPERM
    assert decide("clone3") == ENOSYS
    assert decide("clone", CLONE_THREAD_FLAGS) == ALLOW  # threads always
    assert decide("clone", CLONE_THREAD_FLAGS | 0x10000000) == EPERM  # ... but never a new user namespace
    assert decide("clone", FORK_FLAGS | 0x40000000) == EPERM  # nor a new net namespace
    expected = ALLOW if allow_subprocess else EPERM
    assert decide("clone", FORK_FLAGS) == expected
    assert decide("clone", FORK_FLAGS | (1 << 40)) == expected  # the upper half of args[0] is ignored
    assert decide("execve") == expected
    if "fork" in nr:
        assert decide("fork") == expected
        assert decide("vfork") == expected
    assert decide("getpid", audit_arch=0x40000003) == EPERM  # i386 convention (int 0x80)
    if arch == "x86_64":
        assert int(_run_bpf(program, _seccomp_data(0x40000000 | 39, audit))) == EPERM  # x32
    assert ("execve" in denied_names) is not allow_subprocess
    for name in ("ptrace", "process_vm_readv", "mount", "bpf", "unshare", "setns", "keyctl", "userfaultfd"):
        assert name in denied_names
    if arch == "aarch64":
        assert "fork" not in denied_names  # no such syscall there
