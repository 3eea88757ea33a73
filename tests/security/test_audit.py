"""The ``audit`` plugin: entry format, hash chain and MACs, every tamper verify must catch,
rotation, the anchor, fsync policies, recovery of a torn tail, invoke decisions, state
changes, the secret store, the CLI, and no secrets in entries.

The kill -9 test is in test_audit_crash.py; a second process on the log (pending files and their
import) in test_audit_pending.py.
"""

# ruff: noqa: ASYNC110, ASYNC230

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from builtin_plugins.security.audit import GENESIS
from builtin_plugins.security.audit import Audit
from builtin_plugins.security.audit import AuditSettings
from builtin_plugins.security.audit import Chain
from builtin_plugins.security.audit import Mac
from builtin_plugins.security.audit import anchor_path
from builtin_plugins.security.audit import chain_files
from builtin_plugins.security.audit import encode_entry
from builtin_plugins.security.audit import key_from_text
from builtin_plugins.security.audit import redact
from builtin_plugins.security.audit import verify_path
from builtin_plugins.security.audit._format import decode_anchor
from kernel import Kernel
from kernel._cli import main as cli_main
from plugin_sdk import OPERATOR
from plugin_sdk import AuditLog
from plugin_sdk import AuditVerification
from plugin_sdk import CallNext
from plugin_sdk import ConfigError
from plugin_sdk import Credentials
from plugin_sdk import Decision
from plugin_sdk import Invocation
from plugin_sdk import NotAuthenticated
from plugin_sdk import OperationFailed
from plugin_sdk import PermissionDenied
from plugin_sdk import Phase
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginState
from plugin_sdk import Principal
from plugin_sdk import SecretNotFound

pytestmark = pytest.mark.anyio

CANARY = "canary-S3cret-7f3a9c"


# -- helpers ------------------------------------------------------------------------------------------


class Tools(Plugin):
    """Operations that succeed, fail, and are denied or unauthenticated by a fake security layer."""

    name = "tools"
    optional = ("audit",)  # so it starts after audit, and its state changes are recorded

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.register_operation("tools.echo", self.echo)
        ctx.register_operation("tools.noisy", self.echo)
        ctx.register_operation("tools.fail", self.fail)
        ctx.register_operation("tools.delete", self.echo)
        ctx.register_operation("tools.secret", self.echo)
        ctx.register_middleware(self.fake_security, phase=Phase.AUTHORIZE)

    async def echo(self, inv: Invocation) -> Any:
        return dict(inv.args)

    async def fail(self, inv: Invocation) -> Any:
        raise RuntimeError("tool broke")

    async def fake_security(self, inv: Invocation, call_next: CallNext) -> Any:
        if inv.operation == "tools.secret" and inv.credentials is None:
            raise NotAuthenticated("tools.secret needs credentials")
        if inv.operation == "tools.delete":
            inv.metadata["authz"] = Decision(False, "invoke:tools.delete", "roles.user.deny[0]", "deny wins")
            raise PermissionDenied("invoke:tools.delete denied by roles.user.deny[0]")
        inv.metadata["authz"] = Decision(True, f"invoke:{inv.operation}", "roles.user.allow[0]", "")
        return await call_next(inv)


class Broken(Plugin):
    name = "broken"
    optional = ("audit",)

    async def start(self, ctx: PluginContext[Any]) -> None:
        raise RuntimeError("cannot start")


class FakeSecrets(Plugin):
    """An in-memory ``secrets`` service."""

    name = "fake_secrets"
    provides = ("secrets",)

    def __init__(self, values: dict[str, str] | None = None) -> None:
        self.values = values if values is not None else {}

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.provide("secrets", self)

    async def get(self, name: str) -> str:
        try:
            return self.values[name]
        except KeyError:
            raise SecretNotFound(name) from None

    async def set(self, name: str, value: str) -> None:
        self.values[name] = value

    async def delete(self, name: str) -> None:
        self.values.pop(name)

    async def names(self) -> list[str]:
        return sorted(self.values)


def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def log_path(tmp_path: Path) -> Path:
    return data_dir(tmp_path) / "audit" / "audit.log"


def config(tmp_path: Path, **settings: Any) -> dict[str, Any]:
    # the grant covers a log kept anywhere under tmp_path (outside the data dir, audit asks for its directory)
    entry = {"settings": settings, "permissions": [f"fs:write:{tmp_path}"]}
    return {"kernel": {"data_dir": str(data_dir(tmp_path))}, "plugins": {"audit": entry}}


@asynccontextmanager
async def running(tmp_path: Path, *plugins: Plugin, **settings: Any) -> AsyncIterator[tuple[Kernel, Audit]]:
    audit = Audit()
    kernel = Kernel(config(tmp_path, **settings), plugins=[audit, *plugins], environ={}, entry_points=False)
    async with kernel:
        yield kernel, audit


def mac_of(tmp_path: Path) -> Mac:
    return Mac(key_from_text((data_dir(tmp_path) / "audit" / "audit.key").read_text()))


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def entries_of(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in lines_of(path)]


def all_entries(tmp_path: Path) -> list[dict[str, Any]]:
    return [entry for file in chain_files(log_path(tmp_path)) for entry in entries_of(file)]


def invokes(tmp_path: Path) -> list[dict[str, Any]]:
    return [e for e in all_entries(tmp_path) if e["action"] == "invoke"]


async def write_log(tmp_path: Path, count: int = 10, **settings: Any) -> Path:
    async with running(tmp_path, Tools(), **settings) as (_, audit):
        for n in range(count):
            await audit.record("test.entry", actor="tester", outcome="ok", details={"n": n})
    return log_path(tmp_path)


def line_number(path: Path, action: str, n: int | None = None) -> int:
    for number, entry in enumerate(entries_of(path), start=1):
        if entry["action"] == action and (n is None or entry["details"].get("n") == n):
            return number
    raise AssertionError(f"no {action} {n} in {path}")


# -- the format ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [b"k", b"0" * 32, b"x" * 64, b"long key " * 20])
def test_mac_is_hmac_sha256(key: bytes) -> None:
    mac = Mac(key)
    for message in (b"", b"abc", b"x" * 1000):
        assert mac.hex(message) == hmac.new(key, message, "sha256").hexdigest().encode()
        assert mac.hex2(message[:3], message[3:]) == hmac.new(key, message, "sha256").hexdigest().encode()
    assert "redacted" in repr(mac)


def test_key_from_text() -> None:
    assert key_from_text("ab" * 32) == bytes.fromhex("ab" * 32)
    assert key_from_text("  a passphrase ") == b"a passphrase"
    with pytest.raises(ValueError):
        key_from_text("  ")


async def test_entries_are_chained_and_maced(tmp_path: Path) -> None:
    async with running(tmp_path) as (_, audit):
        assert isinstance(audit, AuditLog)
        first = await audit.record("auth.key.revoked", actor="cli", outcome="ok", details={"key_id": "k1"})
        second = await audit.record("rbac.policy.reloaded", actor=None, outcome="ok")
        assert second == first + 1
    path = log_path(tmp_path)
    raw = lines_of(path)
    entries = entries_of(path)
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert entries[0]["prev"] == GENESIS
    for before, entry in zip(raw, entries[1:], strict=False):
        assert entry["prev"] == hashlib.sha256(before).hexdigest()
    for line, entry in zip(raw, entries, strict=True):
        assert list(entry) == ["seq", "prev", "ts", "action", "actor", "outcome", "details", "mac"]
        canonical = orjson.dumps({k: v for k, v in entry.items() if k != "mac"})
        assert canonical == line[: -(8 + 64 + 2)] + b"}"
        assert entry["mac"] == hmac.new(mac_key_bytes(tmp_path), canonical, "sha256").hexdigest()
    revoked = next(e for e in entries if e["action"] == "auth.key.revoked")
    assert (revoked["seq"], revoked["actor"], revoked["details"]) == (first, "cli", {"key_id": "k1"})
    assert next(e for e in entries if e["action"] == "rbac.policy.reloaded")["details"] == {}
    # files are private
    for file in (path, anchor_path(path), path.parent / "audit.key"):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file


def mac_key_bytes(tmp_path: Path) -> bytes:
    return key_from_text((data_dir(tmp_path) / "audit" / "audit.key").read_text())


async def test_encoder_matches_the_writer(tmp_path: Path) -> None:
    path = await write_log(tmp_path, 3)
    mac = mac_of(tmp_path)
    line = lines_of(path)[2]
    entry = orjson.loads(line)
    again = encode_entry(
        mac,
        entry["seq"],
        entry["prev"],
        entry["ts"],
        entry["action"],
        entry["actor"],
        entry["outcome"],
        entry["details"],
    )
    assert again == line


async def test_record_refuses_bad_arguments(tmp_path: Path) -> None:
    async with running(tmp_path) as (_, audit):
        with pytest.raises(ValueError):
            await audit.record("", actor=None, outcome="ok")
        with pytest.raises(ValueError):
            await audit.record("x", actor=None, outcome="")
        with pytest.raises(TypeError):
            await audit.record("x", actor=5, outcome="ok")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await audit.record("x", actor=None, outcome="ok", details=["no"])  # type: ignore[arg-type]
        # values orjson cannot encode are recorded as text
        await audit.record("x", actor=None, outcome="ok", details={"path": Path("/srv/a")})
    assert next(e for e in all_entries(tmp_path) if e["action"] == "x")["details"] == {"path": "/srv/a"}


# -- verify: a clean chain, and every kind of tampering -----------------------------------------------------


async def test_verify_a_clean_chain(tmp_path: Path) -> None:
    async with running(tmp_path, Tools()) as (kernel, audit):
        for n in range(5):
            await audit.record("test.entry", actor="t", outcome="ok", details={"n": n})
        result = await audit.verify()
        assert isinstance(result, AuditVerification)
        assert result.ok and result.first_bad is None and result.reason == ""
        assert result.entries == audit._chain.seq  # type: ignore[union-attr]
        report = await kernel.invoke("audit.verify", {}, principal=OPERATOR)
        assert report["ok"] and report["files"] == [str(log_path(tmp_path))]
    report = verify_path(log_path(tmp_path), mac_of(tmp_path))
    assert report.ok and report.entries == len(all_entries(tmp_path))


def _rewrite(path: Path, lines: list[bytes], *, newline: bool = True) -> None:
    path.write_bytes(b"\n".join(lines) + (b"\n" if newline else b""))


async def test_edited_field(tmp_path: Path) -> None:
    path = await write_log(tmp_path)
    lines = lines_of(path)
    at = line_number(path, "test.entry", 4)
    lines[at - 1] = lines[at - 1].replace(b'"actor":"tester"', b'"actor":"mallory"')
    _rewrite(path, lines)
    report = verify_path(path, mac_of(tmp_path))
    assert (report.ok, report.file, report.line, report.reason) == (False, str(path), at, "edited")
    assert report.entries == at - 1


async def test_deleted_line(tmp_path: Path) -> None:
    path = await write_log(tmp_path)
    lines = lines_of(path)
    at = line_number(path, "test.entry", 4)
    del lines[at - 1]
    _rewrite(path, lines)
    report = verify_path(path, mac_of(tmp_path))
    assert (report.ok, report.line, report.reason) == (False, at, "deleted")
    assert f"entry {at} missing" in report.detail


async def test_swapped_lines(tmp_path: Path) -> None:
    path = await write_log(tmp_path)
    lines = lines_of(path)
    at = line_number(path, "test.entry", 4)
    lines[at - 1], lines[at] = lines[at], lines[at - 1]
    _rewrite(path, lines)
    report = verify_path(path, mac_of(tmp_path))
    assert (report.ok, report.line, report.reason) == (False, at, "reordered")


async def test_line_moved_back(tmp_path: Path) -> None:
    path = await write_log(tmp_path)
    lines = lines_of(path)
    moved = lines.pop(2)
    lines.insert(6, moved)
    _rewrite(path, lines)
    report = verify_path(path, mac_of(tmp_path))
    assert (report.line, report.reason) == (3, "reordered")


async def test_truncated_tail(tmp_path: Path) -> None:
    path = await write_log(tmp_path)
    lines = lines_of(path)
    _rewrite(path, lines[:-2])
    report = verify_path(path, mac_of(tmp_path))
    assert (report.ok, report.file, report.line, report.reason) == (False, str(path), len(lines) - 1, "truncated")
    assert report.entries == len(lines) - 2
    assert "anchor" in report.detail


async def test_every_entry_deleted(tmp_path: Path) -> None:
    path = await write_log(tmp_path)
    path.write_bytes(b"")
    report = verify_path(path, mac_of(tmp_path))
    assert (report.ok, report.line, report.reason) == (False, 1, "truncated")


async def test_last_line_cut_in_half(tmp_path: Path) -> None:
    path = await write_log(tmp_path)
    data = path.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[: last + (len(data) - last) // 2])
    report = verify_path(path, mac_of(tmp_path))
    assert (report.ok, report.line, report.reason) == (False, len(lines_of(path)) + 1, "truncated")


async def test_middle_line_cut_in_half(tmp_path: Path) -> None:
    path = await write_log(tmp_path)
    lines = lines_of(path)
    lines[4] = lines[4][: len(lines[4]) // 2]
    _rewrite(path, lines)
    report = verify_path(path, mac_of(tmp_path))
    assert (report.ok, report.line, report.reason) == (False, 5, "malformed")


async def test_wrong_hmac_key(tmp_path: Path) -> None:
    path = await write_log(tmp_path)
    report = verify_path(path, Mac(b"another key"))
    assert (report.ok, report.file, report.line, report.reason) == (False, str(path), 1, "edited")
    assert "another HMAC key" in report.detail


async def test_anchor_deleted_or_forged(tmp_path: Path) -> None:
    path = await write_log(tmp_path)
    anchor = anchor_path(path)
    good = anchor.read_bytes()
    anchor.write_bytes(good.replace(b'"seq":', b'"seq":1', 1))
    report = verify_path(path, mac_of(tmp_path))
    assert (report.ok, report.file, report.line, report.reason) == (False, str(anchor), 1, "anchor")
    anchor.unlink()
    report = verify_path(path, mac_of(tmp_path))
    assert (report.ok, report.reason, report.detail) == (False, "anchor", "the anchor file is missing")


async def test_live_verify_sees_truncation_at_once(tmp_path: Path) -> None:
    """The running writer knows its last entry: cutting it off is caught before any anchor update."""
    async with running(tmp_path, fsync="never", fsync_interval=3600) as (_, audit):
        for n in range(5):
            await audit.record("test.entry", actor="t", outcome="ok", details={"n": n})
        path = log_path(tmp_path)
        lines = lines_of(path)
        _rewrite(path, lines[:-1])
        result = await audit.verify()
        assert (result.ok, result.first_bad, result.reason) == (False, (str(path), len(lines)), "truncated")


async def test_verify_operation_and_other_paths(tmp_path: Path) -> None:
    other = tmp_path / "other"
    await write_log(other)
    # the same key: copy it over
    (data_dir(tmp_path) / "audit").mkdir(parents=True)
    (data_dir(tmp_path) / "audit" / "audit.key").write_bytes((data_dir(other) / "audit" / "audit.key").read_bytes())
    os.chmod(data_dir(tmp_path) / "audit" / "audit.key", 0o600)
    async with running(tmp_path) as (kernel, _):
        report = await kernel.invoke("audit.verify", {"path": str(log_path(other))}, principal=OPERATOR)
        assert report["ok"] and report["files"] == [str(log_path(other))]
        lines = lines_of(log_path(other))
        _rewrite(log_path(other), lines[:3] + lines[4:])
        report = await kernel.invoke("audit.verify", {"path": str(log_path(other))}, principal=OPERATOR)
        assert (report["ok"], report["line"], report["reason"]) == (False, 4, "deleted")


async def test_admin_operations_refuse_others(tmp_path: Path) -> None:
    async with running(tmp_path) as (kernel, _):
        for principal in (None, Principal("ada"), Principal("svc", kind="service")):
            with pytest.raises(PermissionDenied):
                await kernel.invoke("audit.verify", {}, principal=principal)
            with pytest.raises(PermissionDenied):
                await kernel.invoke("audit.tail", {}, principal=principal)
        with pytest.raises(PermissionDenied):
            await kernel.invoke("audit.tail", {"n": 5000}, principal=OPERATOR)
    async with running(tmp_path, admin_kinds=["service"]) as (kernel, _):
        assert (await kernel.invoke("audit.verify", {}, principal=Principal("svc", kind="service")))["ok"]
    denied = [e for e in invokes(tmp_path) if e["outcome"] == "denied"]
    assert {e["details"]["operation"] for e in denied} == {"audit.verify", "audit.tail"}


async def test_tail(tmp_path: Path) -> None:
    async with running(tmp_path, max_bytes=4096) as (kernel, audit):
        for n in range(60):
            await audit.record("test.entry", actor="t", outcome="ok", details={"n": n})
        tail = await kernel.invoke("audit.tail", {"n": 30}, principal=OPERATOR)
        assert len(chain_files(log_path(tmp_path))) > 2  # the tail crosses files
        assert [e["details"]["n"] for e in tail] == list(range(30, 60))
        assert [e["seq"] for e in tail] == list(range(tail[0]["seq"], tail[0]["seq"] + 30))
        assert len(await kernel.invoke("audit.tail", {}, principal=OPERATOR)) == 20


# -- rotation ---------------------------------------------------------------------------------------------


async def test_rotation_keeps_the_chain(tmp_path: Path) -> None:
    path = await write_log(tmp_path, 200, max_bytes=4096)
    files = chain_files(path)
    assert len(files) > 5
    assert [f.name for f in files[:-1]] == [f"audit.log.{i}" for i in range(1, len(files))]
    for before, after in itertools.pairwise(files):
        assert before.stat().st_size <= 4096
        assert orjson.loads(lines_of(after)[0])["prev"] == hashlib.sha256(lines_of(before)[-1]).hexdigest()
    seqs = [e["seq"] for e in all_entries(tmp_path)]
    assert seqs == list(range(1, len(seqs) + 1))
    report = verify_path(path, mac_of(tmp_path))
    assert report.ok and report.entries == len(seqs) and len(report.files) == len(files)


async def test_deleted_middle_rotated_file(tmp_path: Path) -> None:
    path = await write_log(tmp_path, 200, max_bytes=4096)
    files = chain_files(path)
    victim = files[2]
    first_missing = orjson.loads(lines_of(victim)[0])["seq"]
    victim.unlink()
    report = verify_path(path, mac_of(tmp_path))
    assert (report.ok, report.file, report.line, report.reason) == (False, str(files[3]), 1, "deleted")
    assert f"entries {first_missing} to" in report.detail


async def test_keep_deletes_old_files_and_the_anchor_knows(tmp_path: Path) -> None:
    path = await write_log(tmp_path, 200, max_bytes=4096, keep=2)
    rotated = [f for f in chain_files(path) if f != path]
    assert len(rotated) == 2
    assert int(rotated[0].name.rsplit(".", 1)[1]) > 1  # older ones were deleted
    anchor = decode_anchor(mac_of(tmp_path), anchor_path(path).read_bytes())
    assert anchor.first_seq == orjson.loads(lines_of(rotated[0])[0])["seq"] > 1
    assert verify_path(path, mac_of(tmp_path)).ok
    rotated[0].unlink()  # an attacker deleting the oldest kept file is caught
    report = verify_path(path, mac_of(tmp_path))
    assert (report.file, report.line, report.reason) == (str(rotated[1]), 1, "deleted")


async def test_rotation_then_restart_continues(tmp_path: Path) -> None:
    await write_log(tmp_path, 100, max_bytes=4096)
    log_path(tmp_path).unlink()  # as after a crash between the rename and the new file
    anchor = anchor_path(log_path(tmp_path))
    data = anchor.read_bytes()
    await write_log(tmp_path, 5, max_bytes=4096)
    report = verify_path(log_path(tmp_path), mac_of(tmp_path))
    # the entries of the deleted current file are lost and reported as such by the recovery entry
    recovered = [e for e in all_entries(tmp_path) if e["action"] == "audit.recovered"]
    assert report.ok and len(recovered) == 1 and "lost" in recovered[0]["details"]
    assert data != anchor.read_bytes()


def test_reopening_a_cleanly_closed_chain_syncs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start that finds the chain as the last stop left it rewrites no anchor and fsyncs nothing
    (the conformance suite starts and stops a plugin dozens of times: each fsync costs on a busy disk)."""
    mac = Mac(b"k" * 32)
    path = tmp_path / "audit.log"
    first = Chain(path, mac, fsync="always")
    first.open()
    first.append("test", "ada", "ok", {"n": 1})
    first.close()
    anchor = anchor_path(path).read_bytes()
    synced: list[int] = []
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda fd, real=real: (synced.append(fd), real(fd))[1])
    again = Chain(path, mac, fsync="always")
    assert not again.open().needed
    assert synced == [] and anchor_path(path).read_bytes() == anchor
    again.append("test", "ada", "ok", {"n": 2})
    again.close()  # the new entry is synced and anchored as before
    assert synced and anchor_path(path).read_bytes() != anchor
    assert verify_path(path, mac).ok and [e["details"]["n"] for e in entries_of(path)] == [1, 2]

    # an anchor that does not match what the log says is rewritten at open
    synced.clear()
    anchor_path(path).write_bytes(anchor)  # the older record: behind the log
    third = Chain(path, mac, fsync="always")
    third.open()
    assert synced and anchor_path(path).read_bytes() != anchor
    third.close()


# -- recovery of a torn tail ------------------------------------------------------------------------------


async def test_torn_last_line_is_moved_aside_and_recorded(tmp_path: Path) -> None:
    path = await write_log(tmp_path, 5)
    torn = b'{"seq":999,"prev":"abc'
    with open(path, "ab") as handle:
        handle.write(torn)
    report = verify_path(path, mac_of(tmp_path))
    assert (report.ok, report.line, report.reason) == (False, len(lines_of(path)) + 1, "truncated")
    async with running(tmp_path) as (_, audit):
        result = await audit.verify()
        assert result.ok, result
    moved = list(path.parent.glob("audit.log.torn-*"))
    assert len(moved) == 1 and moved[0].read_bytes() == torn
    assert stat.S_IMODE(moved[0].stat().st_mode) == 0o600
    [recovered] = [e for e in all_entries(tmp_path) if e["action"] == "audit.recovered"]
    assert recovered["details"]["torn_bytes"] == len(torn)
    assert recovered["details"]["torn_file"] == moved[0].name
    assert recovered["details"]["torn_sha256"] == hashlib.sha256(torn).hexdigest()
    assert "lost" not in recovered["details"]  # the torn entry was never acknowledged
    assert verify_path(path, mac_of(tmp_path)).ok


async def test_unparsable_last_line_is_moved_aside(tmp_path: Path) -> None:
    path = await write_log(tmp_path, 5)
    with open(path, "ab") as handle:
        handle.write(b"\x00" * 300 + b"\n")  # what a power loss can leave
    async with running(tmp_path) as (_, audit):
        assert (await audit.verify()).ok
    [recovered] = [e for e in all_entries(tmp_path) if e["action"] == "audit.recovered"]
    assert recovered["details"]["torn_bytes"] == 301


async def test_damage_recovery_cannot_repair_is_left_for_verify(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = await write_log(tmp_path, 100, max_bytes=4096)
    path.unlink()  # the current file is gone: the chain ends in the newest rotated file
    newest = chain_files(path)[-1]
    lines = lines_of(newest)
    lines[-1] = b"garbage, not an entry"
    _rewrite(newest, lines)
    with caplog.at_level(logging.ERROR):
        async with running(tmp_path) as (_, audit):
            result = await audit.verify()
            assert (result.ok, result.first_bad, result.reason) == (False, (str(newest), len(lines)), "malformed")
    assert "is not an entry" in caplog.text


async def test_lost_entries_are_recorded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = await write_log(tmp_path, 5)
    lines = lines_of(path)
    _rewrite(path, lines[:-3])
    with caplog.at_level(logging.ERROR):
        async with running(tmp_path) as (_, audit):
            assert (await audit.verify()).ok
    [recovered] = [e for e in all_entries(tmp_path) if e["action"] == "audit.recovered"]
    assert recovered["details"]["lost"] == {"first": len(lines) - 2, "last": len(lines)}
    assert "are lost" in caplog.text


async def test_invalid_anchor_is_moved_aside(tmp_path: Path) -> None:
    path = await write_log(tmp_path, 3)
    anchor = anchor_path(path)
    anchor.write_bytes(b"garbage")
    async with running(tmp_path):
        pass
    [moved] = anchor.parent.glob("audit.log.anchor.invalid-*")
    assert moved.read_bytes() == b"garbage"
    [recovered] = [e for e in all_entries(tmp_path) if e["action"] == "audit.recovered"]
    assert recovered["details"]["anchor"] == "the anchor is malformed"
    assert verify_path(path, mac_of(tmp_path)).ok


# -- fsync policies -----------------------------------------------------------------------------------------


class SyncSpy:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = Chain._sync_fd

        def spy(fd: int) -> None:
            self.calls += 1
            real(fd)

        monkeypatch.setattr(Chain, "_sync_fd", staticmethod(spy))


async def record_one(audit: Audit, n: int) -> None:
    await audit.record("test.many", actor="t", outcome="ok", details={"n": n})


async def test_fsync_always(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with running(tmp_path, Tools(), fsync="always") as (kernel, audit):
        spy = SyncSpy(monkeypatch)
        chain = audit._chain
        assert chain is not None
        seq = await audit.record("test.entry", actor="t", outcome="ok")
        assert chain.synced_seq >= seq and spy.calls >= 1
        await kernel.invoke("tools.echo", {})
        assert chain.synced_seq == chain.seq
        anchor = decode_anchor(mac_of(tmp_path), anchor_path(log_path(tmp_path)).read_bytes())
        assert anchor.seq == chain.seq  # anchored with every sync
        # concurrent records share fsyncs (group commit)
        spy.calls = 0
        async with anyio.create_task_group() as group:
            for n in range(20):
                group.start_soon(record_one, audit, n)
        assert chain.synced_seq == chain.seq
        assert spy.calls < 2 * 20


async def test_fsync_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with running(tmp_path, fsync="interval", fsync_interval=0.05) as (_, audit):
        spy = SyncSpy(monkeypatch)
        chain = audit._chain
        assert chain is not None
        seq = await audit.record("test.entry", actor="t", outcome="ok")
        assert chain.synced_seq < seq and spy.calls == 0  # record() did not wait for the disk
        with anyio.fail_after(5):
            while chain.synced_seq < seq:
                await anyio.sleep(0.01)
        assert spy.calls >= 1
        anchor = decode_anchor(mac_of(tmp_path), anchor_path(log_path(tmp_path)).read_bytes())
        assert anchor.seq >= seq


async def test_fsync_never(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = SyncSpy(monkeypatch)
    async with running(tmp_path, fsync="never", fsync_interval=0.05) as (_, audit):
        seq = await audit.record("test.entry", actor="t", outcome="ok")
        with anyio.fail_after(5):  # the anchor still moves, without fsync
            while decode_anchor(mac_of(tmp_path), anchor_path(log_path(tmp_path)).read_bytes()).seq < seq:
                await anyio.sleep(0.01)
    assert spy.calls == 0
    assert verify_path(log_path(tmp_path), mac_of(tmp_path)).ok


# -- what gets recorded --------------------------------------------------------------------------------------


async def test_invoke_decisions(tmp_path: Path) -> None:
    async with running(tmp_path, Tools()) as (kernel, _):
        await kernel.invoke("tools.echo", {"q": 1}, principal=Principal("ada", roles=("analyst",)))
        await kernel.invoke("tools.echo", {"q": 2})
        with pytest.raises(PermissionDenied):
            await kernel.invoke("tools.delete", {}, principal=Principal("bob"))
        with pytest.raises(NotAuthenticated):
            await kernel.invoke("tools.secret", {})
        with pytest.raises(OperationFailed):
            await kernel.invoke("tools.fail", {}, principal=Principal("ada"))
    found = [(e["actor"], e["details"]["operation"], e["outcome"]) for e in invokes(tmp_path)]
    assert found == [
        ("ada", "tools.echo", "ok"),
        (None, "tools.echo", "ok"),
        ("bob", "tools.delete", "denied"),
        (None, "tools.secret", "unauthenticated"),
        ("ada", "tools.fail", "error"),
    ]
    ok, anonymous, denied, unauthenticated, failed = invokes(tmp_path)
    assert ok["details"]["kind"] == "user"
    assert ok["details"] == {"operation": "tools.echo", "kind": "user", "rule": "roles.user.allow[0]"}
    assert "kind" not in anonymous["details"]
    assert denied["details"]["rule"] == "roles.user.deny[0]"
    assert denied["details"]["reason"] == "deny wins"
    assert denied["details"]["error"] == "PermissionDenied"
    assert unauthenticated["details"]["error"] == "NotAuthenticated"
    assert failed["details"]["error"] == "OperationFailed"
    assert "args" not in ok["details"]  # never argument values by default


async def test_cancelled_invoke_is_recorded(tmp_path: Path) -> None:
    class Slow(Plugin):
        name = "slow"

        async def start(self, ctx: PluginContext[Any]) -> None:
            ctx.register_operation("slow.wait", self.wait)

        async def wait(self, inv: Invocation) -> None:
            await anyio.sleep(30)

    async with running(tmp_path, Slow()) as (kernel, _):
        with anyio.move_on_after(0.05):
            await kernel.invoke("slow.wait", {})
    assert [(e["details"]["operation"], e["outcome"]) for e in invokes(tmp_path)] == [("slow.wait", "cancelled")]


async def test_operation_globs(tmp_path: Path) -> None:
    async with running(tmp_path, Tools(), operations=["tools.*", "!tools.noisy"]) as (kernel, _):
        await kernel.invoke("tools.echo", {})
        await kernel.invoke("tools.noisy", {})
        await kernel.invoke("audit.verify", {}, principal=OPERATOR)
    assert [e["details"]["operation"] for e in invokes(tmp_path)] == ["tools.echo"]


async def test_state_changes(tmp_path: Path) -> None:
    async with running(tmp_path, Tools(), Broken()):
        pass
    entries = all_entries(tmp_path)
    changes = [
        (e["action"], e["details"].get("plugin"), e["outcome"]) for e in entries if e["action"].startswith("plugin.")
    ]
    assert ("plugin.started", "audit", "ok") in changes
    assert ("plugin.started", "tools", "ok") in changes
    assert ("plugin.failed", "broken", "error") in changes
    assert ("plugin.stopped", "tools", "ok") in changes
    started = next(e for e in entries if e["action"] == "kernel.started")
    assert started["details"]["plugins"] == {"audit": "running", "tools": "running", "broken": "failed"}
    actions = [e["action"] for e in entries]
    assert actions.index("kernel.stopping") < actions.index("plugin.stopped")
    assert actions[-1] == "audit.stopped"
    assert all(e["actor"] == "kernel" for e in entries if e["action"].startswith(("plugin.", "kernel.")))


# -- secrets never reach the log -----------------------------------------------------------------------------


async def test_no_credentials_or_argument_values_by_default(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        async with running(tmp_path, Tools()) as (kernel, audit):
            await kernel.invoke(
                "tools.secret", {"password": CANARY, "q": CANARY}, credentials=Credentials.api_key(CANARY)
            )
            await kernel.invoke("tools.echo", {"q": CANARY}, credentials=Credentials.bearer(CANARY))
            chain_repr = repr(audit._chain)
    text = b"".join(f.read_bytes() for f in chain_files(log_path(tmp_path)))
    assert CANARY.encode() not in text
    assert len(invokes(tmp_path)) == 2
    assert CANARY not in caplog.text and CANARY not in chain_repr


async def test_record_args_redacts_secret_looking_keys(tmp_path: Path) -> None:
    async with running(tmp_path, Tools(), record_args=True) as (kernel, _):
        await kernel.invoke(
            "tools.echo",
            {
                "q": "visible",
                "password": CANARY,
                "api_key": CANARY,
                "nested": {"Authorization": CANARY, "items": [{"token": CANARY}, 1]},
                "obj": Credentials.api_key(CANARY),
            },
            credentials=Credentials.api_key(CANARY),
        )
    [entry] = invokes(tmp_path)
    assert entry["details"]["args"] == {
        "q": "visible",
        "password": "<redacted>",
        "api_key": "<redacted>",
        "nested": {"Authorization": "<redacted>", "items": [{"token": "<redacted>"}, 1]},
        "obj": "<Credentials>",
    }
    assert CANARY.encode() not in log_path(tmp_path).read_bytes()


def test_redact_depth() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(20):
        node["a"] = {}
        node = node["a"]
    assert "<nested too deep>" in orjson.dumps(redact(deep)).decode()


async def test_the_key_never_shows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secrets = FakeSecrets()
    with caplog.at_level(logging.DEBUG):
        async with running(tmp_path, secrets) as (kernel, audit):
            key = secrets.values["audit.hmac_key"]
            await audit.record("x", actor=None, outcome="ok")
            report = await kernel.invoke("audit.verify", {}, principal=OPERATOR)
            texts = [repr(audit), repr(audit._chain), repr(audit._mac), str(report)]
    log = b"".join(f.read_bytes() for f in log_path(tmp_path).parent.iterdir())
    assert key.encode() not in log and bytes.fromhex(key) not in log
    for text in (*texts, caplog.text):
        assert key not in text


# -- the key: secret store or key file ---------------------------------------------------------------------


async def test_key_from_the_secret_store(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secrets = FakeSecrets()
    with caplog.at_level(logging.WARNING):
        async with running(tmp_path, secrets) as (_, audit):
            await audit.record("x", actor=None, outcome="ok")
    key = secrets.values["audit.hmac_key"]
    assert len(bytes.fromhex(key)) == 32
    assert not (data_dir(tmp_path) / "audit" / "audit.key").exists()
    assert "no 'secrets' service" not in caplog.text
    assert verify_path(log_path(tmp_path), Mac(key_from_text(key))).ok
    async with running(tmp_path, FakeSecrets(dict(secrets.values))) as (_, audit):  # the same key again
        assert (await audit.verify()).ok


async def test_key_file_without_secrets_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        async with running(tmp_path):
            pass
    key_file = data_dir(tmp_path) / "audit" / "audit.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "no 'secrets' service" in caplog.text
    assert key_file.read_text().strip() not in caplog.text
    assert not list(key_file.parent.glob(".audit.key.*"))  # no temp file left


async def test_key_file_moves_into_the_secret_store(tmp_path: Path) -> None:
    async with running(tmp_path):
        pass
    key = (data_dir(tmp_path) / "audit" / "audit.key").read_text().strip()
    secrets = FakeSecrets()
    async with running(tmp_path, secrets) as (_, audit):
        assert (await audit.verify()).ok  # the chain goes on under the same key
    assert secrets.values["audit.hmac_key"] == key


# -- settings, paths, reconfigure, a second kernel ------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "where"),
    [
        ({"fsync": "sometimes"}, "fsync"),
        ({"fsync_interval": 0}, "fsync_interval"),
        ({"max_bytes": 100}, "max_bytes"),
        ({"keep": -1}, "keep"),
        ({"operations": ["tools.[a"]}, "operations"),
        ({"path": "logs/"}, "path"),
        ({"record_arg": True}, "record_arg"),
    ],
)
def test_bad_settings(tmp_path: Path, settings: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError) as info:
        Kernel(config(tmp_path, **settings), plugins=[Audit()], environ={}, entry_points=False).prepare()
    assert f"plugins.audit.settings.{where}" in str(info.value)


def test_settings_defaults() -> None:
    settings = AuditSettings()
    assert (settings.fsync, settings.record_args, settings.operations) == ("interval", False, ("*",))


async def test_custom_path(tmp_path: Path) -> None:
    target = tmp_path / "logs" / "orion-audit.jsonl"
    async with running(tmp_path, path=str(target)) as (_, audit):
        await audit.record("x", actor=None, outcome="ok")
    assert target.exists() and anchor_path(target).exists()
    assert verify_path(target, mac_of(tmp_path)).ok
    async with running(tmp_path, path="relative.log") as (_, audit):
        await audit.record("x", actor=None, outcome="ok")
    assert (data_dir(tmp_path) / "audit" / "relative.log").exists()
    # a log outside the data directory: audit asks for its directory, which must be granted
    ungranted = config(tmp_path, path=str(target))
    del ungranted["plugins"]["audit"]["permissions"]
    async with Kernel(ungranted, plugins=[Audit()], environ={}, entry_points=False) as kernel:
        error = kernel.plugins["audit"].last_error
    assert error is not None and f'permissions = ["fs:write:{target.parent}"]' in error


async def test_a_log_elsewhere_is_written_under_the_enforcing_guard(tmp_path: Path) -> None:
    target = tmp_path / "var" / "log" / "orion" / "audit.log"
    target.parent.parent.mkdir(parents=True)  # the granted directory itself audit may create
    settings = config(tmp_path, path=str(target), max_bytes=4096, keep=2)
    settings["kernel"]["sandbox"] = {"guard": "enforce"}
    settings["plugins"]["audit"]["permissions"] = [f"fs:write:{target.parent}"]
    async with Kernel(settings, plugins=[Audit(), Tools()], environ={}, entry_points=False) as kernel:
        assert kernel.plugins["audit"].state is PluginState.RUNNING, kernel.plugins["audit"].last_error
        for _ in range(60):  # past max_bytes: rotation and pruning happen in that directory too
            await kernel.invoke("tools.echo", {})
        assert (await kernel.invoke("audit.verify", {}, principal=OPERATOR))["ok"]
    assert len(chain_files(target)) > 1 and verify_path(target, mac_of(tmp_path)).ok


async def test_reconfigure(tmp_path: Path) -> None:
    audit = Audit()
    kernel = Kernel(config(tmp_path), plugins=[audit, Tools()], environ={}, entry_points=False)
    async with kernel:
        await kernel.invoke("tools.echo", {})
        await kernel.reload(config(tmp_path, operations=["!tools.*", "*"], fsync="always"))
        await kernel.invoke("tools.echo", {})
        assert audit._always
        moved = tmp_path / "moved.log"
        await kernel.reload(config(tmp_path, path=str(moved)))
        await audit.record("after.move", actor=None, outcome="ok")
        assert (await audit.verify()).ok
    assert [e["details"]["operation"] for e in invokes(tmp_path)] == ["tools.echo"]
    assert entries_of(log_path(tmp_path))[-1]["action"] == "audit.closed"
    assert "after.move" in [e["action"] for e in entries_of(moved)]
    assert verify_path(log_path(tmp_path), mac_of(tmp_path)).ok and verify_path(moved, mac_of(tmp_path)).ok


async def test_instances_in_one_process_share_the_chain(tmp_path: Path) -> None:
    """A reload that restarts the plugin starts the new instance beside the old: both write one chain."""
    kernel = Kernel(config(tmp_path), plugins=[Audit, Tools], environ={}, entry_points=False)
    async with kernel:
        await kernel.invoke("tools.echo", {})
        changed = config(tmp_path)
        changed["plugins"]["audit"]["priority"] = 5  # not a settings change: a new instance
        await kernel.reload(changed)
        await kernel.invoke("tools.echo", {})
        assert (await kernel.invoke("audit.verify", {}, principal=OPERATOR))["ok"]
    assert [e["details"]["operation"] for e in invokes(tmp_path)] == ["tools.echo", "tools.echo", "audit.verify"]
    assert verify_path(log_path(tmp_path), mac_of(tmp_path)).ok
    assert not list(log_path(tmp_path).parent.glob("*.invalid-*"))
    started = [
        e for e in all_entries(tmp_path) if e["action"] == "plugin.started" and e["details"]["plugin"] == "audit"
    ]
    assert len(started) == 2  # the old instance recorded the new one starting
    assert [e["action"] for e in all_entries(tmp_path)].count("audit.stopped") == 1


async def test_health(tmp_path: Path) -> None:
    async with running(tmp_path) as (_, audit):
        status = await audit.check_health()
        assert status.ok and "fsync=interval" in status.reason
        audit._last_error = "cannot append: OSError: [Errno 28] No space left on device"
        assert not (await audit.check_health()).ok


async def test_a_failed_write_leaves_no_partial_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    async with running(tmp_path, Tools()) as (kernel, audit):
        chain = audit._chain
        assert chain is not None
        before = log_path(tmp_path).read_bytes()
        real = os.write
        calls = {"n": 0}

        def disk_full(fd: int, data: Any) -> int:
            if fd != chain._fd:
                return real(fd, data)
            calls["n"] += 1
            if calls["n"] % 2:  # a short write, then the disk is full
                return real(fd, bytes(data[:10]))
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "write", disk_full)
        with pytest.raises(OSError, match="No space"):
            await audit.record("x", actor=None, outcome="ok")
        assert log_path(tmp_path).read_bytes() == before
        with pytest.raises(OperationFailed):
            await kernel.invoke("tools.echo", {})
        assert log_path(tmp_path).read_bytes() == before
        assert not (await audit.check_health()).ok
        monkeypatch.setattr(os, "write", real)
        await audit.record("x", actor=None, outcome="ok")
        assert (await audit.verify()).ok


async def test_stopped_service_refuses(tmp_path: Path) -> None:
    async with running(tmp_path) as (_, audit):
        pass
    with pytest.raises(Exception, match="closed"):
        await audit.record("x", actor=None, outcome="ok")


# -- the CLI ------------------------------------------------------------------------------------------------------


def _toml(tmp_path: Path, **settings: Any) -> Path:
    lines = [
        "[kernel]",
        f'data_dir = "{data_dir(tmp_path)}"',
        "[plugins.audit]",
        "enabled = true",
        "[plugins.audit.settings]",
        *(f"{k} = {orjson.dumps(v).decode()}" for k, v in settings.items()),
    ]
    path = tmp_path / "orion.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Out:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


def _cli(*argv: str) -> tuple[int, str]:
    out = Out()
    code = cli_main(list(argv), out=out)  # type: ignore[arg-type]
    return code, out.text


def test_cli_verify(tmp_path: Path) -> None:
    toml = _toml(tmp_path)
    code, text = _cli("-c", str(toml), "audit", "verify")
    assert code == 0, text
    assert "audit log ok" in text
    code, text = _cli("-c", str(toml), "audit", "verify", "--json")
    assert code == 0 and orjson.loads(text)["ok"] is True
    # tamper: edit one entry in the middle
    path = log_path(tmp_path)
    lines = lines_of(path)
    lines[2] = lines[2].replace(b'"outcome":"ok"', b'"outcome":"no"')
    _rewrite(path, lines)
    code, text = _cli("audit", "verify", "-c", str(toml))
    assert code == 1, text
    assert f"{path}:3: edited:" in text
    code, text = _cli("audit", "verify", "--json", "-c", str(toml))
    result = orjson.loads(text)
    assert code == 1 and (result["file"], result["line"], result["reason"]) == (str(path), 3, "edited")


def test_cli_verify_path(tmp_path: Path) -> None:
    toml = _toml(tmp_path)
    assert _cli("-c", str(toml), "audit", "verify")[0] == 0
    copy = tmp_path / "copy"
    copy.mkdir()
    for file in log_path(tmp_path).parent.glob("audit.log*"):
        if not file.name.endswith(".lock"):
            (copy / file.name).write_bytes(file.read_bytes())
    code, text = _cli("-c", str(toml), "audit", "verify", "--path", str(copy / "audit.log"))
    assert code == 0, text
    lines = lines_of(copy / "audit.log")
    _rewrite(copy / "audit.log", lines[:-1])
    code, text = _cli("-c", str(toml), "audit", "verify", "--path", str(copy / "audit.log"), "--json")
    assert code == 1 and orjson.loads(text)["reason"] == "truncated"


def test_cli_tail_and_errors(tmp_path: Path) -> None:
    toml = _toml(tmp_path)
    assert _cli("-c", str(toml), "audit", "verify")[0] == 0  # a first run writes a few entries
    code, text = _cli("-c", str(toml), "audit", "tail", "-n", "3")
    assert code == 0 and len(text.strip().splitlines()) == 3
    code, text = _cli("-c", str(toml), "audit", "tail", "-n", "2", "--json")
    assert code == 0 and len(orjson.loads(text)) == 2
    code, text = _cli("-c", str(toml), "audit", "tail", "-n", "0")
    assert code == 2 and "error:" in text
