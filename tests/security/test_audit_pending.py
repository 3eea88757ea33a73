"""A second process on the audit log records into PATH.pending/, and the writer imports it.

* a kernel that does not hold ``PATH.lock`` records ``record()`` calls and invokes
  (nothing is refused) into one fsync'd, MAC'd pending file per run;
* the writer imports pending files at start and on each flusher tick: each entry
  once, with its original ts/action/actor/outcome/details and an ``imported`` marker;
* a crash between appending and deleting the pending file does not duplicate
  entries (a real subprocess that dies there, and an in-process simulation);
* forged, edited, copied and torn lines are rejected, reported in an
  ``audit.pending.rejected`` entry (no content), and the file is kept aside;
* end to end: ``orion-kernel auth keys create`` while another process serves.

The other process is either a real one (tests/security/audit_helpers/holder.py, or
a bare ``flock`` holder) or, in-process, the test holding ``flock`` on PATH.lock
through its own descriptor (flock locks belong to the open file, so a kernel in
this process then finds the log held).
"""

# ruff: noqa: ASYNC110, ASYNC220

from __future__ import annotations

import fcntl
import io
import logging
import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from collections.abc import Iterator
from contextlib import asynccontextmanager
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

import builtin_plugins.security.audit._plugin as audit_plugin
from builtin_plugins.security.audit import Audit
from builtin_plugins.security.audit import Mac
from builtin_plugins.security.audit import chain_files
from builtin_plugins.security.audit import encode_entry
from builtin_plugins.security.audit import encode_pending
from builtin_plugins.security.audit import key_from_text
from builtin_plugins.security.audit import pending_dir
from builtin_plugins.security.audit import verify_path
from builtin_plugins.security.audit._pending import parse
from kernel import Kernel
from kernel._cli import main as cli_main
from plugin_sdk import OPERATOR
from plugin_sdk import Credentials
from plugin_sdk import Invocation
from plugin_sdk import OperationFailed
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import Principal

pytestmark = pytest.mark.anyio

HELPER = Path(__file__).parent / "audit_helpers" / "holder.py"
CANARY = "canary-S3cret-41d2e8"


class Tools(Plugin):
    name = "tools"
    optional = ("audit",)

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.register_operation("tools.echo", self.echo)
        ctx.register_operation("tools.fail", self.fail)

    async def echo(self, inv: Invocation) -> Any:
        return dict(inv.args)

    async def fail(self, inv: Invocation) -> Any:
        raise RuntimeError("tool broke")


def log_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "audit" / "audit.log"


def config(tmp_path: Path, **settings: Any) -> dict[str, Any]:
    return {"kernel": {"data_dir": str(tmp_path / "data")}, "plugins": {"audit": {"settings": settings}}}


@asynccontextmanager
async def running(tmp_path: Path, *plugins: Plugin, **settings: Any) -> AsyncIterator[tuple[Kernel, Audit]]:
    audit = Audit()
    kernel = Kernel(config(tmp_path, **settings), plugins=[audit, *plugins], environ={}, entry_points=False)
    async with kernel:
        yield kernel, audit


@contextmanager
def lock_held(tmp_path: Path) -> Iterator[None]:
    """Hold PATH.lock through a descriptor of the test's own: kernels started meanwhile find the log held."""
    lock = log_path(tmp_path).with_name("audit.log.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"99999\n", 0)
        yield
    finally:
        os.close(fd)


def mac_of(tmp_path: Path) -> Mac:
    return Mac(key_from_text((log_path(tmp_path).parent / "audit.key").read_text()))


async def make_key(tmp_path: Path) -> None:
    """Start and stop a writer once: the key file and a short chain exist."""
    async with running(tmp_path):
        pass


def entries(tmp_path: Path) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for file in chain_files(log_path(tmp_path)):
        found.extend(orjson.loads(line) for line in file.read_bytes().splitlines())
    return found


def imported(tmp_path: Path) -> list[dict[str, Any]]:
    return [e for e in entries(tmp_path) if "imported" in e]


def pending_files(tmp_path: Path) -> list[str]:
    directory = pending_dir(log_path(tmp_path))
    return sorted(os.listdir(directory)) if directory.exists() else []


def assert_no_duplicates(tmp_path: Path) -> None:
    markers = [(e["imported"]["file"], e["imported"]["line"]) for e in imported(tmp_path)]
    assert len(markers) == len(set(markers)), f"imported twice: {markers}"


# -- a second kernel records into a pending file ----------------------------------------------------------------


async def test_second_kernel_records_and_invokes_into_a_pending_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await make_key(tmp_path)
    chain_before = log_path(tmp_path).read_bytes()
    with lock_held(tmp_path), caplog.at_level(logging.WARNING):
        async with running(tmp_path, Tools()) as (kernel, audit):
            assert audit._chain is not None and audit._chain.read_only
            assert "records into a pending file" in caplog.text
            before = time.time()
            assert await audit.record("auth.key.created", actor="cli", outcome="ok", details={"key_id": "k1"}) == 0
            # invokes are no longer refused: they run and are recorded
            assert await kernel.invoke("tools.echo", {"q": 1}, principal=Principal("ada")) == {"q": 1}
            with pytest.raises(OperationFailed):
                await kernel.invoke("tools.fail", {})
            # verify and tail still read the main chain (pending entries are not in it yet)
            report = await kernel.invoke("audit.verify", {}, principal=OPERATOR)
            assert report["ok"]
            tail = await kernel.invoke("audit.tail", {"n": 1000}, principal=OPERATOR)
            assert "auth.key.created" not in [e["action"] for e in tail]
            health = await audit.check_health()
            assert health.ok and "read-only" in health.reason and "pending file" in health.reason
            # durable before record() returned: the lines are in the file, each with a valid MAC
            [name] = pending_files(tmp_path)
            file = pending_dir(log_path(tmp_path)) / name
            assert name.startswith(f"{os.getpid()}-") and name.endswith(".jsonl")
            assert stat.S_IMODE(file.stat().st_mode) == 0o600
            assert stat.S_IMODE(file.parent.stat().st_mode) == 0o700
            parsed = parse(mac_of(tmp_path), file.read_bytes(), name)
            assert not parsed.problems
            actions = [(e.action, e.outcome) for e in parsed.entries]
            assert ("auth.key.created", "ok") in actions
            assert ("invoke", "ok") in actions and ("invoke", "error") in actions
            assert [e.line for e in parsed.entries] == list(range(1, len(parsed.entries) + 1))
    assert log_path(tmp_path).read_bytes() == chain_before  # the reader never touched the chain
    key_hex = (log_path(tmp_path).parent / "audit.key").read_text().strip()
    assert key_hex not in (pending_dir(log_path(tmp_path)) / name).read_text()

    # the lock is free: the next writer imports what is left, at start
    async with running(tmp_path) as (_, audit):
        assert pending_files(tmp_path) == []
        assert (await audit.verify()).ok
    assert verify_path(log_path(tmp_path), mac_of(tmp_path)).ok
    got = imported(tmp_path)
    created = next(e for e in got if e["action"] == "auth.key.created")
    assert (created["actor"], created["outcome"], created["details"]) == ("cli", "ok", {"key_id": "k1"})
    assert created["imported"]["file"] == name and created["imported"]["pid"] == os.getpid()
    assert before <= created["ts"] <= created["imported"]["at"]  # the original ts is kept
    calls = [(e["actor"], e["details"]["operation"], e["outcome"]) for e in got if e["action"] == "invoke"]
    assert ("ada", "tools.echo", "ok") in calls and (None, "tools.fail", "error") in calls
    assert (OPERATOR.id, "audit.verify", "ok") in calls
    assert [e["action"] for e in got].count("kernel.started") == 1
    assert_no_duplicates(tmp_path)


async def test_a_real_second_process_and_a_live_writer(tmp_path: Path) -> None:
    """A bare flock holder in another process: the second kernel still records (the old code refused)."""
    await make_key(tmp_path)
    lock = log_path(tmp_path).with_name("audit.log.lock")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(lock)!r}, os.O_RDWR)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.ftruncate(fd, 0); os.pwrite(fd, f'{os.getpid()}\\n'.encode(), 0)\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        async with running(tmp_path, Tools()) as (kernel, audit):
            assert audit._chain is not None and audit._chain.holder == str(holder.pid)
            await audit.record("y", actor=None, outcome="ok")
            await kernel.invoke("tools.echo", {})
            assert f"pid {holder.pid}" in (await audit.check_health()).reason
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    async with running(tmp_path):
        pass
    assert {"y", "invoke"} <= {e["action"] for e in imported(tmp_path)}
    assert pending_files(tmp_path) == []
    assert verify_path(log_path(tmp_path), mac_of(tmp_path)).ok


async def test_writer_imports_on_its_tick_while_the_second_kernel_keeps_recording(tmp_path: Path) -> None:
    """In one process: a read-only kernel (started while the lock was held) beside a live writer."""
    await make_key(tmp_path)
    with lock_held(tmp_path):
        second = running(tmp_path, Tools())
        kernel, reader = await second.__aenter__()
    try:
        assert reader._chain is not None and reader._chain.read_only
        async with running(tmp_path, fsync="never", fsync_interval=0.05) as (_, writer):
            assert writer._chain is not None and not writer._chain.read_only
            for n in range(3):
                await reader.record("batch.one", actor="cli", outcome="ok", details={"n": n})
            with anyio.fail_after(10):  # the flusher's tick imports them (and deletes the file)
                while len([e for e in imported(tmp_path) if e["action"] == "batch.one"]) < 3 or pending_files(tmp_path):
                    await anyio.sleep(0.02)
            first = reader._chain.spool.name
            # the reader's next entry cannot go into the imported file: a new file, a new name
            await reader.record("batch.two", actor="cli", outcome="ok")
            await kernel.invoke("tools.echo", {"after": True})
            assert reader._chain.spool.name != first
            with anyio.fail_after(10):
                while "batch.two" not in [e["action"] for e in imported(tmp_path)] or pending_files(tmp_path):
                    await anyio.sleep(0.02)
            assert (await writer.verify()).ok
    finally:
        await second.__aexit__(None, None, None)
    async with running(tmp_path):
        pass  # the reader's last entries (kernel.stopping) are imported here
    got = imported(tmp_path)
    assert [e["details"]["n"] for e in got if e["action"] == "batch.one"] == [0, 1, 2]
    assert [e["action"] for e in got].count("batch.two") == 1
    assert [e["action"] for e in got].count("kernel.stopping") == 1
    assert_no_duplicates(tmp_path)
    assert pending_files(tmp_path) == []
    assert verify_path(log_path(tmp_path), mac_of(tmp_path)).ok


async def test_spooled_calls_follow_the_same_rules(tmp_path: Path) -> None:
    """Cancelled calls are recorded, credentials never are, concurrent records each get their own line."""

    class Slow(Plugin):
        name = "slow"

        async def start(self, ctx: PluginContext[Any]) -> None:
            ctx.register_operation("slow.wait", self.wait)

        async def wait(self, inv: Invocation) -> None:
            await anyio.sleep(30)

    async def one(audit: Audit, n: int) -> None:
        assert await audit.record("many", actor=None, outcome="ok", details={"n": n}) == 0

    await make_key(tmp_path)
    with lock_held(tmp_path):
        async with running(tmp_path, Tools(), Slow()) as (kernel, audit):
            with anyio.move_on_after(0.05):
                await kernel.invoke("slow.wait", {})
            await kernel.invoke("tools.echo", {"q": CANARY}, credentials=Credentials.api_key(CANARY))
            async with anyio.create_task_group() as group:
                for n in range(20):
                    group.start_soon(one, audit, n)
            assert audit._chain is not None
            name = audit._chain.spool.name
            data = (pending_dir(log_path(tmp_path)) / name).read_bytes()
    assert CANARY not in data.decode()
    parsed = parse(mac_of(tmp_path), data, name)
    assert not parsed.problems
    assert sorted(e.details["n"] for e in parsed.entries if e.action == "many") == list(range(20))
    calls = [(e.details["operation"], e.outcome) for e in parsed.entries if e.action == "invoke"]
    assert ("slow.wait", "cancelled") in calls and ("tools.echo", "ok") in calls


async def test_the_encoder_matches_an_imported_entry(tmp_path: Path) -> None:
    await make_key(tmp_path)
    await spool_some(tmp_path, 1)
    async with running(tmp_path):
        pass
    line = next(line for line in log_path(tmp_path).read_bytes().splitlines() if b'"imported":' in line)
    entry = orjson.loads(line)
    assert list(entry) == ["seq", "prev", "ts", "action", "actor", "outcome", "details", "imported", "mac"]
    again = encode_entry(
        mac_of(tmp_path),
        entry["seq"],
        entry["prev"],
        entry["ts"],
        entry["action"],
        entry["actor"],
        entry["outcome"],
        entry["details"],
        imported=entry["imported"],
    )
    assert again == line


# -- crash safety -------------------------------------------------------------------------------------------------


async def spool_some(tmp_path: Path, count: int) -> str:
    """A read-only kernel writes ``count`` record() entries (plus kernel.started/stopping); its file's name."""
    with lock_held(tmp_path):
        async with running(tmp_path) as (_, audit):
            for n in range(count):
                await audit.record("spooled", actor="cli", outcome="ok", details={"n": n})
            assert audit._chain is not None
            return audit._chain.spool.name


async def test_crash_between_append_and_delete_is_not_imported_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await make_key(tmp_path)
    name = await spool_some(tmp_path, 4)

    def crash(*args: Any, **kwargs: Any) -> None:
        raise OSError("simulated crash before the delete")

    monkeypatch.setattr(audit_plugin, "finish", crash)
    async with running(tmp_path) as (_, audit):
        health = await audit.check_health()
        assert not health.ok and "simulated crash" in health.reason
    monkeypatch.undo()
    # appended and fsync'd, but the file is still there, renamed: an import was under way
    [left] = pending_files(tmp_path)
    assert left.startswith(f"{name}.importing-")
    assert len([e for e in imported(tmp_path) if e["action"] == "spooled"]) == 4
    # the next writer finds the markers of what was appended: nothing twice
    async with running(tmp_path) as (_, audit):
        assert (await audit.verify()).ok
    assert pending_files(tmp_path) == []
    assert [e["details"]["n"] for e in imported(tmp_path) if e["action"] == "spooled"] == [0, 1, 2, 3]
    assert_no_duplicates(tmp_path)
    assert verify_path(log_path(tmp_path), mac_of(tmp_path)).ok


async def test_crash_after_the_rename_before_any_append(tmp_path: Path) -> None:
    """An ``.importing-S`` file whose entries are not in the chain (or were lost to a power cut): all imported."""
    await make_key(tmp_path)
    name = await spool_some(tmp_path, 2)
    directory = pending_dir(log_path(tmp_path))
    seq = entries(tmp_path)[-1]["seq"]
    os.rename(directory / name, directory / f"{name}.importing-{seq}")
    async with running(tmp_path):
        pass
    assert [e["details"]["n"] for e in imported(tmp_path) if e["action"] == "spooled"] == [0, 1]
    assert pending_files(tmp_path) == []
    assert verify_path(log_path(tmp_path), mac_of(tmp_path)).ok


async def test_partial_import_resumes_after_the_last_imported_line(tmp_path: Path) -> None:
    """The chain holds the first lines of an interrupted import: only the rest is appended."""
    await make_key(tmp_path)
    name = await spool_some(tmp_path, 5)
    directory = pending_dir(log_path(tmp_path))
    data = (directory / name).read_bytes()
    lines = data.splitlines(keepends=True)
    seq = entries(tmp_path)[-1]["seq"]
    # import the first three lines (as a writer would), then "crash": the rest left in .importing-S
    (directory / name).write_bytes(b"".join(lines[:3]))
    os.rename(directory / name, directory / f"{name}.importing-{seq}")
    async with running(tmp_path):
        pass
    assert pending_files(tmp_path) == []
    (directory / f"{name}.importing-{seq}").write_bytes(data)  # the full file comes back, as after a crash
    async with running(tmp_path):
        pass
    lines_imported = [e["imported"]["line"] for e in imported(tmp_path) if e["imported"]["file"] == name]
    assert lines_imported == list(range(1, len(lines) + 1))
    assert_no_duplicates(tmp_path)
    assert verify_path(log_path(tmp_path), mac_of(tmp_path)).ok


@pytest.mark.slow
async def test_a_writer_killed_between_append_and_delete(tmp_path: Path) -> None:
    """A real writer process dies (os._exit) right after fsyncing the imported entries, before the delete."""
    toml = _toml(tmp_path, fsync_interval=0.5)
    await make_key(tmp_path)
    holder = _start_holder(toml, die=True)
    try:
        async with running(tmp_path, Tools()) as (kernel, audit):
            assert audit._chain is not None and audit._chain.read_only
            for n in range(3):
                await audit.record("admin.action", actor="cli", outcome="ok", details={"n": n})
            await kernel.invoke("tools.echo", {"n": 1}, principal=OPERATOR)
            with anyio.fail_after(20):  # it imports at its next tick, and dies before the delete
                while holder.poll() is None:
                    await anyio.sleep(0.02)
            assert holder.returncode == 70
            await audit.record("admin.after", actor="cli", outcome="ok")  # a new pending file
    finally:
        _stop_holder(holder)
    left = pending_files(tmp_path)
    assert any(".importing-" in name for name in left), left
    assert imported(tmp_path)  # the dead writer appended (and fsync'd) entries of the file it kept
    async with running(tmp_path) as (_, audit):
        assert (await audit.verify()).ok
    got = imported(tmp_path)
    assert [e["details"]["n"] for e in got if e["action"] == "admin.action"] == [0, 1, 2]
    assert [e["action"] for e in got].count("admin.after") == 1
    assert [(e["action"], e["details"].get("operation")) for e in got].count(("invoke", "tools.echo")) == 1
    assert_no_duplicates(tmp_path)
    assert pending_files(tmp_path) == []
    assert verify_path(log_path(tmp_path), mac_of(tmp_path)).ok


# -- forged and damaged pending files -----------------------------------------------------------------------------


async def test_forged_edited_copied_and_torn_lines_are_rejected_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await make_key(tmp_path)
    name = await spool_some(tmp_path, 3)
    other = await spool_some(tmp_path, 1)
    directory = pending_dir(log_path(tmp_path))
    good = (directory / name).read_bytes().splitlines()
    copied = (directory / other).read_bytes().splitlines()[1]  # a valid line of another file
    forged = encode_pending(Mac(b"not the key"), name, len(good) + 1, 1, 1.0, "forged.SECRET", "x", "ok", None)
    edited = good[1].replace(b'"spooled"', b'"sp00led"')
    lines = [good[0], edited, *good[2:], forged, copied, good[0]]
    (directory / name).write_bytes(b"\n".join(lines) + b'\n{"pending":1,"file":"torn')
    with caplog.at_level(logging.ERROR):
        async with running(tmp_path):
            pass
    assert f"pending file {name} has 5 bad line(s)" in caplog.text
    assert sorted(pending_files(tmp_path)) == [f"{name}.rejected"]  # kept aside, never dropped
    [report] = [e for e in entries(tmp_path) if e["action"] == "audit.pending.rejected"]
    details = report["details"]
    n = len(good)
    assert (details["file"], details["moved_to"], details["line"], details["reason"]) == (
        name,
        f"{name}.rejected",
        2,
        "mac",
    )
    assert details["problems"] == [
        {"line": 2, "reason": "mac"},
        {"line": n + 1, "reason": "mac"},
        {"line": n + 2, "reason": "misplaced"},
        {"line": n + 3, "reason": "repeated"},
        {"line": n + 4, "reason": "torn"},
    ]
    assert details["count"] == 5 and details["imported"] == n - 1
    assert report["outcome"] == "error" and "imported" not in report
    text = orjson.dumps(report).decode()
    assert "forged" not in text and "SECRET" not in text and "sp00led" not in text
    # the good lines of both files are imported, the edited one is not
    from_name = [e["imported"]["line"] for e in imported(tmp_path) if e["imported"]["file"] == name]
    assert from_name == [1, *range(3, n + 1)]
    assert [e["action"] for e in imported(tmp_path) if e["imported"]["file"] == other].count("spooled") == 1
    # a restart neither re-imports the rejected file nor reports it again
    async with running(tmp_path):
        pass
    assert [e["action"] for e in entries(tmp_path)].count("audit.pending.rejected") == 1
    assert_no_duplicates(tmp_path)
    assert verify_path(log_path(tmp_path), mac_of(tmp_path)).ok


async def test_a_pending_file_under_another_key_is_rejected(tmp_path: Path) -> None:
    await make_key(tmp_path)
    directory = pending_dir(log_path(tmp_path))
    directory.mkdir(mode=0o700)
    line = encode_pending(Mac(b"k" * 32), "1-00.jsonl", 1, 1, 1.0, "x", None, "ok", None)
    (directory / "1-00.jsonl").write_bytes(line + b"\n")
    async with running(tmp_path):
        pass
    [report] = [e for e in entries(tmp_path) if e["action"] == "audit.pending.rejected"]
    assert (report["details"]["line"], report["details"]["reason"]) == (1, "mac")
    assert not [e for e in entries(tmp_path) if e["action"] == "x"]
    assert pending_files(tmp_path) == ["1-00.jsonl.rejected"]


async def test_a_pending_line_is_not_a_chain_entry(tmp_path: Path) -> None:
    """Pending lines are MAC'd under their own domain: one pasted into the chain does not verify."""
    await make_key(tmp_path)
    name = await spool_some(tmp_path, 1)
    line = (pending_dir(log_path(tmp_path)) / name).read_bytes().splitlines()[0]
    with log_path(tmp_path).open("ab") as handle:
        handle.write(line + b"\n")
    report = verify_path(log_path(tmp_path), mac_of(tmp_path))
    assert not report.ok and report.reason == "malformed"


# -- end to end: an admin CLI command while a server holds the log -----------------------------------------------


def _toml(tmp_path: Path, fsync_interval: float = 0.05) -> Path:
    path = tmp_path / "orion.toml"
    path.write_text(
        f"""
[kernel]
data_dir = "{tmp_path / "data"}"

[plugins.audit]
enabled = true

[plugins.audit.settings]
fsync_interval = {fsync_interval}

[plugins.auth]
enabled = true
"""
    )
    return path


def _start_holder(toml: Path, *, die: bool = False) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, str(HELPER), str(toml), *(["--die-before-delete"] if die else [])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert process.stdout is not None
    ready = process.stdout.readline().decode()
    assert ready.startswith("READY "), ready
    return process


def _stop_holder(process: subprocess.Popen[bytes]) -> int:
    try:
        if process.poll() is None and process.stdin is not None:
            process.stdin.write(b"quit\n")
            process.stdin.flush()
        return process.wait(timeout=30)
    except (subprocess.TimeoutExpired, BrokenPipeError):
        process.kill()
        return process.wait()
    finally:
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


def _wait_for(tmp_path: Path, action: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in entries(tmp_path) if e["action"] == action]
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"no {action} entry in the log after {timeout}s")


@pytest.mark.slow
def test_cli_auth_keys_create_while_a_server_holds_the_log(tmp_path: Path) -> None:
    toml = _toml(tmp_path)
    holder = _start_holder(toml)
    try:
        out = io.StringIO()
        code = cli_main(["-c", str(toml), "auth", "keys", "create", "--principal", "svc", "--json"], out=out)
        assert code == 0, out.getvalue()
        created = orjson.loads(out.getvalue())
        # the server imports the CLI's pending file at its next tick, while it keeps running
        entry = _wait_for(tmp_path, "auth.key.created")
        assert entry["details"]["key_id"] == created["id"] and entry["actor"] == "cli"
        assert entry["imported"]["pid"] == os.getpid()
        assert created["key"] not in log_path(tmp_path).read_text()
        code = cli_main(["-c", str(toml), "audit", "verify"], out=(out := io.StringIO()))
        assert code == 0 and "audit log ok" in out.getvalue()
        assert holder.poll() is None
    finally:
        assert _stop_holder(holder) == 0
    assert verify_path(log_path(tmp_path), mac_of(tmp_path)).ok
    assert_no_duplicates(tmp_path)
    operations = [e["details"].get("operation") for e in imported(tmp_path) if e["action"] == "invoke"]
    assert operations.count("auth.keys.create") == 1 and operations.count("audit.verify") == 1
    assert pending_files(tmp_path) == []
