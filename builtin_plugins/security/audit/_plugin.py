"""The ``audit`` plugin: an append-only, hash-chained, HMAC'd record of what happened.

It records every invoke decision (a middleware at ``Phase.OBSERVE``, the
outermost), every plugin state change (the ``plugin_state_changed`` hook), and
what other plugins report through the ``audit`` service (``record()``: a key
revoked, a policy reloaded).  ``verify()`` walks the whole chain.

A kernel that does not hold the log's lock (a CLI command while the server
runs) records into a pending file instead (fsync'd per entry); the writer
imports pending files at start and on every flusher tick (``_pending.py``).
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import os
import re
import secrets as _random
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from typing import ClassVar
from typing import Final

import anyio
import anyio.to_thread
import attrs

from plugin_sdk import OPERATOR
from plugin_sdk import AuditVerification
from plugin_sdk import CallNext
from plugin_sdk import CliCommand
from plugin_sdk import Decision
from plugin_sdk import HealthStatus
from plugin_sdk import Invocation
from plugin_sdk import NotAuthenticated
from plugin_sdk import PermissionDenied
from plugin_sdk import Phase
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginError
from plugin_sdk import PluginState
from plugin_sdk import Principal
from plugin_sdk import SecretNotFound
from plugin_sdk import SecretStore
from plugin_sdk import ServiceUnavailable
from plugin_sdk import hookimpl
from plugin_sdk import require_kind

from ._cli import audit_command
from ._config import AuditSettings
from ._format import Mac
from ._format import key_from_text
from ._log import Chain
from ._log import LogClosed
from ._log import ReadOnlyLog
from ._log import Recovery
from ._log import acquire
from ._log import entries_after
from ._log import release
from ._log import tail_sources
from ._pending import REJECTED_ACTION
from ._pending import Claim
from ._pending import already_imported
from ._pending import claim
from ._pending import count
from ._pending import finish
from ._pending import listing
from ._pending import rejected_details
from ._verify import Report
from ._verify import verify_path
from ._verify import verify_sources

#: the name of the HMAC key in the secret store
SECRET_NAME: Final = "audit.hmac_key"
#: the key file used without a secret store, in the data directory
KEY_FILE: Final = "audit.key"
MAX_TAIL: Final = 1000

_STATE_ACTIONS: Final = {
    PluginState.RUNNING: ("plugin.started", "ok"),
    PluginState.STOPPED: ("plugin.stopped", "ok"),
    PluginState.FAILED: ("plugin.failed", "error"),
    PluginState.QUARANTINED: ("plugin.quarantined", "error"),
}
_SECRET_KEY: Final = re.compile(r"pass|secret|token|key|credential|auth|cookie|session|private|signature", re.I)


@attrs.frozen
class VerifyArgs:
    #: another chain to verify (its current file); default: this plugin's own log
    path: str | None = None


@attrs.frozen
class TailArgs:
    #: how many entries, newest last
    n: int = 20


def redact(value: Any, depth: int = 0) -> Any:
    """``value`` with every mapping entry whose key looks like a secret replaced by ``"<redacted>"``."""
    if depth > 8:
        return "<nested too deep>"
    if isinstance(value, Mapping):
        return {str(k): "<redacted>" if _SECRET_KEY.search(str(k)) else redact(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, depth + 1) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return f"<{type(value).__name__}>"  # never str() an object: it might carry a secret


def _same_path(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, PermissionDenied):
        return "denied"
    if isinstance(exc, NotAuthenticated):
        return "unauthenticated"
    if isinstance(exc, Exception):
        return "error"
    return "cancelled"


def _wanted(patterns: tuple[str, ...], operation: str) -> bool:
    included = any(fnmatch.fnmatchcase(operation, p) for p in patterns if not p.startswith("!"))
    return included and not any(fnmatch.fnmatchcase(operation, p[1:]) for p in patterns if p.startswith("!"))


class Audit(Plugin):
    """The ``audit`` service: append-only JSON lines, SHA-256 chained, HMAC-SHA256 per entry.

    Operations ``audit.verify`` and ``audit.tail`` (admins only); CLI
    ``orion-kernel audit verify|tail``.
    """

    name = "audit"
    version = "1.0.0"
    provides = ("audit",)
    optional = ("secrets",)
    #: the directory of the log when it is kept elsewhere than the data directory: its files,
    #: rotations, anchor, lock and pending directory live there
    permissions = ("fs:write:{path:dir}",)
    Config = AuditSettings
    #: first among the OBSERVE middleware, so it sees every call's final outcome
    priority = 1000
    conformance_settings: ClassVar[Mapping[str, Any]] = {"fsync": "interval", "fsync_interval": 0.05}
    conformance_principal: ClassVar[Principal | None] = OPERATOR  # its operations are admin-only
    conformance_bad_settings: ClassVar[list[Mapping[str, Any]]] = [
        {"fsync": "sometimes"},
        {"fsync_interval": 0},
        {"max_bytes": 100},
        {"keep": -1},
        {"operations": ["tools.[a"]},
        {"admin_kinds": ["bad kind"]},
        {"path": "logs/"},
    ]
    conformance_hook_args: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "plugin_state_changed": {"plugin": "example", "old": PluginState.STARTING, "new": PluginState.RUNNING}
    }
    conformance_opt_out: ClassVar[Mapping[str, str]] = {
        "isolation.process": "it records every call through an invoke middleware and the sync "
        "plugin_state_changed hook, neither of which an isolated plugin has"
    }

    def __init__(self) -> None:
        self._ctx: PluginContext[AuditSettings] | None = None
        self._settings = AuditSettings()
        self._chain: Chain | None = None
        self._mac: Mac | None = None
        self._key_id = ""
        self._wanted: dict[str, bool] = {}
        self._always = False
        self._syncing: anyio.Event | None = None
        self._last_error: str | None = None
        #: held while importing pending files (stop and a path change wait for it)
        self._importing = anyio.Lock()
        #: why the last import of pending files failed (cleared by one that succeeds)
        self._import_error: str | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self, ctx: PluginContext[AuditSettings]) -> None:
        self._ctx = ctx
        self._apply(ctx.settings)
        key = await self._load_key(ctx)
        self._mac = Mac(key)
        self._key_id = hashlib.sha256(b"orion-audit-key-id\n" + key).hexdigest()
        chain, recovery = await self._acquire(ctx.settings)
        try:
            self._chain = chain
            if chain.read_only:
                ctx.log.warning(
                    "audit: %s is written by another process (pid %s): this kernel records into a pending "
                    "file in %s (fsync'd per entry), which that process imports into the chain",
                    chain.path,
                    chain.holder or "?",
                    chain.pending_dir,
                )
            elif recovery.needed:
                ctx.log.warning("audit: recovered %s: %s", chain.path, recovery.details())
            ctx.provide("audit", self)
            ctx.register_middleware(self._observe, phase=Phase.OBSERVE)
            ctx.register_operation(
                "audit.verify",
                self._verify_operation,
                args_type=VerifyArgs,
                doc="Verify the audit chain (admins): every file, hash chain, MACs and anchor.",
                example_args={},
            )
            ctx.register_operation(
                "audit.tail",
                self._tail_operation,
                args_type=TailArgs,
                doc="The last n audit entries, oldest first (admins).",
                example_args={"n": 5},
            )
            ctx.spawn(self._flusher, name="audit fsync, anchor and import")
            if not chain.read_only:
                await self._import_pending(chain)  # what other processes recorded while no one held the lock
        except BaseException:
            self._chain = None
            if release(chain):
                chain.close()
            raise

    async def stop(self) -> None:
        chain = self._chain
        try:
            if chain is not None and chain.is_open:
                await self._import_pending(chain)  # what came in since the last tick
        finally:
            with anyio.CancelScope(shield=True):  # a running import finishes first (it is shielded too)
                async with self._importing:
                    chain, self._chain = self._chain, None
            self._wanted = {}
            if chain is not None and release(chain):
                await self._close(chain, "audit.stopped")

    async def reconfigure(self, settings: AuditSettings) -> None:
        """Everything applies at once; a new ``path`` closes this chain and opens (or continues) that one."""
        chain, ctx = self._chain, self._ctx
        if chain is None or ctx is None:
            self._apply(settings)
            return
        if self._resolve(settings) != chain.path:
            fresh, _ = await self._acquire(settings)
            async with self._importing:
                self._chain = fresh
            if release(chain):
                await self._close(
                    chain, "audit.closed", {"reason": "the path changed", "continues_in": str(fresh.path)}
                )
            chain = fresh
        chain.fsync, chain.max_bytes, chain.keep = settings.fsync, settings.max_bytes, settings.keep
        self._apply(settings)

    async def _close(self, chain: Chain, action: str, details: Mapping[str, Any] | None = None) -> None:
        """Record ``action``, fsync in a worker thread, then close on the loop's thread."""
        if chain.is_open:
            try:
                chain.append(action, None, "ok", details)
            except OSError as exc:
                self._log_error(f"cannot record {action}", exc)
        try:
            pending = chain.pending() if chain.is_open else None
            if pending is not None:
                try:
                    await _sync(chain, pending, fsync=chain.fsync != "never")
                except OSError as exc:
                    self._log_error(f"cannot sync {chain.path}", exc)
        finally:
            chain.close()

    def _apply(self, settings: AuditSettings) -> None:
        self._settings = settings
        self._always = settings.fsync == "always"
        self._wanted = {}

    def _resolve(self, settings: AuditSettings) -> Path:
        assert self._ctx is not None
        if not settings.path:
            return self._ctx.data_dir / "audit.log"
        path = Path(settings.path).expanduser()
        return path if path.is_absolute() else self._ctx.data_dir / path

    async def _acquire(self, settings: AuditSettings) -> tuple[Chain, Recovery]:
        """Open (or share) the chain of ``settings.path`` in a worker thread; cancellation-safe."""
        assert self._ctx is not None and self._mac is not None
        got: list[Chain] = []
        options = {"fsync": settings.fsync, "max_bytes": settings.max_bytes, "keep": settings.keep}

        def work() -> tuple[Chain, Recovery]:
            assert self._ctx is not None and self._mac is not None
            chain, recovery = acquire(
                self._resolve(settings), self._mac, key_id=self._key_id, log=self._ctx.log, **options
            )
            got.append(chain)
            return chain, recovery

        try:
            return await anyio.to_thread.run_sync(work)
        except BaseException:
            for chain in got:  # opened, but the caller was cancelled before it could see it
                if release(chain):
                    chain.close()
            raise

    # -- the key ---------------------------------------------------------------------------

    async def _load_key(self, ctx: PluginContext[AuditSettings]) -> bytes:
        """From the secret store (``audit.hmac_key``, created if missing), else a 0600 key file."""
        key_file = ctx.data_dir / KEY_FILE
        try:
            store: SecretStore | None = ctx.service("secrets")
        except ServiceUnavailable:
            store = None
        if store is not None:
            try:
                return key_from_text(await store.get(SECRET_NAME))
            except (SecretNotFound, KeyError):
                pass
            if await anyio.to_thread.run_sync(key_file.exists):
                value = await anyio.to_thread.run_sync(_read_key_file, key_file, ctx)
                ctx.log.warning(
                    "audit: moved the HMAC key from %s into the secret store as %r; delete the file",
                    key_file,
                    SECRET_NAME,
                )
            else:
                value = _random.token_hex(32)
            await store.set(SECRET_NAME, value)
            return key_from_text(value)
        ctx.log.warning(
            "audit: no 'secrets' service: the HMAC key is kept in %s (mode 0600) next to the log; "
            "anyone who can read it can rewrite the log undetected -- enable the secrets plugin",
            key_file,
        )
        return key_from_text(await anyio.to_thread.run_sync(_key_file, key_file, ctx))

    # -- the service -------------------------------------------------------------------------

    async def record(
        self, action: str, *, actor: str | None, outcome: str, details: Mapping[str, Any] | None = None
    ) -> int:
        """Append one entry; its seq once written (and fsync'd under ``fsync = "always"``).

        When another process writes the log, the entry goes to this process's
        pending file, fsync'd before this returns, and the result is 0 (the writer
        gives it a seq when it imports it).

        :raises LogClosed: the plugin is not running.
        :raises OSError: the entry could not be written.
        """
        if not isinstance(action, str) or not action:
            raise ValueError("audit: action must be a non-empty string")
        if not isinstance(outcome, str) or not outcome:
            raise ValueError("audit: outcome must be a non-empty string")
        if actor is not None and not isinstance(actor, str):
            raise TypeError("audit: actor must be a string or None")
        if details is not None and not isinstance(details, Mapping):
            raise TypeError("audit: details must be a mapping or None")
        chain = self._chain
        if chain is None:
            raise LogClosed("audit: the log is closed", plugin="audit")
        if chain.read_only:
            await self._spool(chain, action, actor, outcome, details)
            return 0
        seq = self._append(chain, action, actor, outcome, details)
        if self._always:
            await self._sync_to(chain, seq)
        return seq

    async def verify(self) -> AuditVerification:
        """Check the whole chain, every file of it, against its hashes, MACs and anchor."""
        report = await self.verify_report()
        return AuditVerification(
            ok=report.ok,
            entries=report.entries,
            first_bad=None if report.ok else (report.file or "", report.line or 0),
            reason=report.reason,
        )

    async def verify_report(self, path: str | os.PathLike[str] | None = None) -> Report:
        """The full report, for this chain (live: entries the writer wrote must all be there) or another."""
        chain = self._chain
        if chain is None:
            raise LogClosed("audit: the log is closed", plugin="audit")
        assert self._mac is not None
        if path is not None and not _same_path(path, chain.path):
            return await anyio.to_thread.run_sync(verify_path, Path(path), self._mac)
        sources, anchor, expect = chain.snapshot()
        try:
            return await anyio.to_thread.run_sync(
                functools.partial(
                    verify_sources,
                    sources,
                    self._mac,
                    anchor=anchor,
                    anchor_name=str(chain.anchor_file),
                    current=str(chain.path),
                    expect=expect,
                )
            )
        finally:
            for source in sources:
                if source.fd is not None:
                    os.close(source.fd)

    async def tail(self, count: int = 20) -> list[dict[str, Any]]:
        """The last ``count`` entries of the chain, oldest first (not pending entries: they are not in it yet)."""
        chain = self._chain
        if chain is None:
            raise LogClosed("audit: the log is closed", plugin="audit")
        sources, _, _ = chain.snapshot()
        try:
            return await anyio.to_thread.run_sync(tail_sources, sources, count)
        finally:
            for source in sources:
                if source.fd is not None:
                    os.close(source.fd)

    # -- writing ------------------------------------------------------------------------------

    def _append(
        self,
        chain: Chain,
        action: str,
        actor: str | None,
        outcome: str,
        details: Mapping[str, Any] | None,
        **imported: Any,
    ) -> int:
        try:
            seq = chain.append(action, actor, outcome, details, **imported)
        except OSError as exc:
            self._log_error(f"cannot append to {chain.path}", exc)
            raise
        if self._last_error is not None:
            self._last_error = None
        return seq

    async def _spool(
        self, chain: Chain, action: str, actor: str | None, outcome: str, details: Mapping[str, Any] | None
    ) -> None:
        """Write one entry to this process's pending file and fsync it (shielded: a cancelled call is recorded too)."""
        spool = chain.spool
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(spool.write, action, actor, outcome, details)
            except OSError as exc:
                self._log_error(f"cannot write a pending entry in {spool.directory}", exc)
                raise
        if self._last_error is not None:
            self._last_error = None

    async def _import_pending(self, chain: Chain) -> int:
        """Import every pending file that is not being written this moment; how many entries.

        Errors are logged (and make the plugin unhealthy until an import succeeds); the
        files stay for the next try.
        """
        imported = 0
        try:
            async with self._importing:
                if self._chain is not chain or not chain.is_open:
                    return 0
                names = await anyio.to_thread.run_sync(listing, chain.pending_dir)
                for name in names:
                    if self._chain is not chain or not chain.is_open:
                        break
                    imported += await self._import_file(chain, name)
        except (OSError, PluginError) as exc:
            self._import_error = f"cannot import pending entries from {chain.pending_dir}: {type(exc).__name__}: {exc}"
            if self._ctx is not None:
                self._ctx.log.error("audit: %s", self._import_error)
        else:
            self._import_error = None
        return imported

    async def _import_file(self, chain: Chain, name: str) -> int:
        """Claim one pending file, append its verified lines (those not imported before), fsync, delete it.

        Shielded: a cancellation must not strand a claimed file (and its lock, which
        the pending file's writer waits for) between two steps.
        """
        imported = 0
        with anyio.CancelScope(shield=True):
            imported = await self._import_claimed(chain, name)
        return imported

    async def _import_claimed(self, chain: Chain, name: str) -> int:
        assert self._mac is not None
        held: Claim | None = await anyio.to_thread.run_sync(claim, chain.pending_dir, name, chain.seq, self._mac)
        if held is None:
            return 0
        done = False
        try:
            skip, reported = 0, False
            if held.resumed:  # an import that crashed before its delete: find what it appended
                sources, _, _ = chain.snapshot()
                try:
                    after = await anyio.to_thread.run_sync(entries_after, sources, held.after, self._mac)
                finally:
                    for source in sources:
                        if source.fd is not None:
                            os.close(source.fd)
                skip, reported = already_imported(after, held.stem)
            if self._chain is not chain or not chain.is_open:
                return 0
            parsed = held.parsed
            now = time.time()
            imported = 0
            for entry in parsed.entries:  # on the loop's thread, no await between: one run of lines
                if entry.line <= skip:
                    continue
                marker = {"file": held.stem, "line": entry.line, "pid": entry.pid, "at": now}
                self._append(
                    chain, entry.action, entry.actor, entry.outcome, entry.details, ts=entry.ts, imported=marker
                )
                imported += 1
            if parsed.problems and not reported:
                details = rejected_details(held, len(parsed.entries))
                self._append(chain, REJECTED_ACTION, None, "error", details)
                if self._ctx is not None:
                    self._ctx.log.error(
                        "audit: pending file %s has %d bad line(s) (first: line %d, %s); its good lines are "
                        "imported and it is kept as %s",
                        held.stem,
                        details["count"],
                        details["line"],
                        details["reason"],
                        held.rejected_name,
                    )
            pending = chain.pending(always=True)
            if pending is None:
                return imported  # closed meanwhile: the file stays; a new writer resumes it
            await _sync(chain, pending, fsync=True)  # whatever the policy: the pending file goes next
            await anyio.to_thread.run_sync(functools.partial(finish, held, rejected=bool(parsed.problems)))
            done = True
            if imported and self._ctx is not None:
                self._ctx.log.info("audit: imported %d pending entr(ies) from %s", imported, held.stem)
            return imported
        finally:
            if not done:
                held.release()

    async def _sync_to(self, chain: Chain, seq: int) -> None:
        """fsync (group commit: one fsync covers every entry written before it started) through ``seq``."""
        while chain.synced_seq < seq:
            running = self._syncing
            if running is not None:
                await running.wait()
                continue
            done = self._syncing = anyio.Event()
            try:
                pending = chain.pending()
                if pending is None:
                    return
                await _sync(chain, pending, fsync=True)
            finally:
                self._syncing = None
                done.set()

    async def _flusher(self) -> None:
        """Every ``fsync_interval``: import pending files, fsync (policy ``interval``) and update the
        anchor (``interval``, ``never``)."""
        while True:
            await anyio.sleep(self._settings.fsync_interval)
            chain = self._chain
            if chain is None or not chain.is_open:
                continue
            await self._import_pending(chain)
            if self._always:
                continue
            pending = chain.pending()
            if pending is None:
                continue
            try:
                await _sync(chain, pending, fsync=self._settings.fsync == "interval")
            except OSError as exc:
                self._log_error(f"cannot sync {chain.path}", exc)
            else:
                self._last_error = None

    def _log_error(self, what: str, exc: BaseException) -> None:
        self._last_error = f"{what}: {type(exc).__name__}: {exc}"
        if self._ctx is not None:
            self._ctx.log.error("audit: %s", self._last_error)

    # -- the invoke middleware ------------------------------------------------------------------

    async def _observe(self, inv: Invocation, call_next: CallNext) -> Any:
        operation = inv.operation
        wanted = self._wanted.get(operation)
        if wanted is None:
            wanted = self._want(operation)
        chain = self._chain
        if not wanted or chain is None:
            return await call_next(inv)
        if chain.read_only:
            return await self._observe_spooled(chain, inv, call_next)
        try:
            result = await call_next(inv)
        except BaseException as exc:
            seq = self._invoke_entry(chain, inv, _outcome(exc), exc)
            if self._always and isinstance(exc, Exception):
                await self._sync_to(chain, seq)
            raise
        # the success path inlined (every audited call takes it): the entry, then the write
        principal = inv.principal
        try:
            seq = chain.append(
                "invoke", None if principal is None else principal.id, "ok", self._invoke_details(inv, None)
            )
        except OSError as exc:
            self._log_error(f"cannot append to {chain.path}", exc)
            raise
        if self._last_error is not None:
            self._last_error = None
        if self._always:
            await self._sync_to(chain, seq)
        return result

    async def _observe_spooled(self, chain: Chain, inv: Invocation, call_next: CallNext) -> Any:
        """Another process writes the log: the call's entry goes to the pending file (fsync'd)."""
        principal = inv.principal
        actor = None if principal is None else principal.id
        try:
            result = await call_next(inv)
        except BaseException as exc:
            await self._spool(chain, "invoke", actor, _outcome(exc), self._invoke_details(inv, exc))
            raise
        await self._spool(chain, "invoke", actor, "ok", self._invoke_details(inv, None))
        return result

    def _want(self, operation: str) -> bool:
        wanted = self._wanted
        if len(wanted) > 4096:
            wanted.clear()
        found = wanted[operation] = _wanted(self._settings.operations, operation)
        return found

    def _invoke_entry(self, chain: Chain, inv: Invocation, outcome: str, exc: BaseException | None) -> int:
        principal = inv.principal
        details = self._invoke_details(inv, exc)
        return self._append(chain, "invoke", None if principal is None else principal.id, outcome, details)

    def _invoke_details(self, inv: Invocation, exc: BaseException | None) -> dict[str, Any]:
        details: dict[str, Any] = {"operation": inv.operation}
        principal = inv.principal
        if principal is not None:
            details["kind"] = principal.kind
        decision = inv.metadata.get("authz")
        if isinstance(decision, Decision):
            details["rule"] = decision.rule
            if not decision.allowed and decision.reason:
                details["reason"] = decision.reason
        if exc is not None:
            details["error"] = type(exc).__name__
        if self._settings.record_args:
            details["args"] = redact(inv.args)
        return details

    # -- operations -------------------------------------------------------------------------------

    def _admin(self, inv: Invocation) -> None:
        require_kind(inv, self._settings.admin_kinds, setting="plugins.audit.settings.admin_kinds")

    async def _verify_operation(self, inv: Invocation) -> dict[str, Any]:
        """Verify the chain (admins): every file, hash chain, MACs and anchor."""
        self._admin(inv)
        args: VerifyArgs = inv.params
        report = await self.verify_report(args.path)
        return report.to_json()

    async def _tail_operation(self, inv: Invocation) -> list[dict[str, Any]]:
        """The last n entries, oldest first (admins)."""
        self._admin(inv)
        args: TailArgs = inv.params
        if not 1 <= args.n <= MAX_TAIL:
            raise PermissionDenied(f"audit.tail: n must be between 1 and {MAX_TAIL}, got {args.n}")
        return await self.tail(args.n)

    # -- hooks ---------------------------------------------------------------------------------------

    @hookimpl
    def plugin_state_changed(self, plugin: str, old: PluginState, new: PluginState) -> None:
        """Record plugins starting (running), stopping, failing and being quarantined."""
        what = _STATE_ACTIONS.get(new)
        chain = self._chain
        if what is None or chain is None or not chain.is_open:
            return
        action, outcome = what
        try:
            chain.append(action, "kernel", outcome, {"plugin": plugin, "old": old.value, "new": new.value})
            if self._always:  # a sync hook: fsync here (state changes are rare)
                pending = chain.pending()
                if pending is not None:
                    chain.sync(*pending, fsync=True)
        except (ReadOnlyLog, LogClosed):
            pass
        except OSError as exc:
            self._log_error(f"cannot record {action} of {plugin}", exc)

    @hookimpl
    async def kernel_started(self) -> None:
        """Record every plugin's state once all have started (some start before audit does)."""
        await self._record_kernel("kernel.started")

    @hookimpl
    async def kernel_stopping(self) -> None:
        """Record that the kernel is about to stop its plugins."""
        await self._record_kernel("kernel.stopping")

    async def _record_kernel(self, action: str) -> None:
        chain, ctx = self._chain, self._ctx
        if chain is None or ctx is None or not (chain.is_open or chain.read_only):
            return
        states = {plugin.name: plugin.state.value for plugin in ctx.introspect().plugins if plugin.enabled}
        try:
            if chain.read_only:
                await self._spool(chain, action, "kernel", "ok", {"plugins": states, "pid": os.getpid()})
                return
            seq = chain.append(action, "kernel", "ok", {"plugins": states})
            if self._always:
                await self._sync_to(chain, seq)
        except (ReadOnlyLog, LogClosed):
            pass
        except OSError as exc:
            self._log_error(f"cannot record {action}", exc)

    @hookimpl
    def cli_commands(self) -> list[CliCommand]:
        """``orion-kernel audit verify|tail``."""
        return [audit_command()]

    @hookimpl
    async def check_health(self) -> HealthStatus:
        """Unhealthy while writing or syncing fails."""
        chain = self._chain
        if self._last_error is not None:
            return HealthStatus(ok=False, reason=self._last_error)
        if chain is None:
            return HealthStatus(ok=False, reason="the log is closed")
        if self._import_error is not None:
            return HealthStatus(ok=False, reason=self._import_error)
        waiting = await anyio.to_thread.run_sync(count, chain.pending_dir)
        if chain.read_only:
            spool = chain.spooled
            mine = f"{spool.written} entr(ies) of this kernel in {spool.name}; " if spool is not None else ""
            return HealthStatus(
                ok=True,
                reason=f"read-only: pid {chain.holder or '?'} writes {chain.path}; {mine}"
                f"{waiting} pending file(s) await its import",
            )
        return HealthStatus(
            ok=True,
            reason=f"{chain.path}: {chain.seq} entries, fsync={self._settings.fsync}, "
            f"{waiting} pending file(s) to import",
        )


async def _sync(chain: Chain, pending: tuple[int, str, int], *, fsync: bool) -> None:
    """``chain.sync(*pending)`` in a worker thread; the dup'd descriptor is closed even if it never runs."""
    began = False

    def work() -> None:
        nonlocal began
        began = True
        chain.sync(*pending, fsync=fsync)

    try:
        await anyio.to_thread.run_sync(work)
    finally:
        if not began:
            os.close(pending[2])


# -- the key file ---------------------------------------------------------------------------------------


def _read_key_file(path: Path, ctx: PluginContext[AuditSettings]) -> str:
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        ctx.log.warning("audit: %s is readable by others (mode %o): chmod 600 it", path, stat.S_IMODE(mode))
    value = path.read_text(encoding="utf-8").strip()
    if not value:
        raise PluginError(f"audit: the key file {path} is empty", plugin="audit")
    return value


def _key_file(path: Path, ctx: PluginContext[AuditSettings]) -> str:
    """Read the key file, or create it: 0600 from the start, written atomically."""
    try:
        return _read_key_file(path, ctx)
    except FileNotFoundError:
        pass
    value = _random.token_hex(32)
    temp = path.with_name(f".{path.name}.{_random.token_hex(6)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, value.encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return value
