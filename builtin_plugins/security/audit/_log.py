"""The writer of one chain: append, rotate, anchor, recover.

Appending is one ``os.write`` of the whole line on an ``O_APPEND`` descriptor,
from the calling task: once it returns the line is in the page cache, which a
crash of the process (``kill -9``) does not lose.  Durability against power
loss is the fsync policy's business (:meth:`Chain.sync`).

One process writes a chain: it holds an exclusive ``flock`` on ``PATH.lock``
while the chain is open.  A second kernel on the same log (a CLI command while
the server runs) opens it read-only: it verifies and tails the chain, and
records into a pending file (:attr:`Chain.spool`, see ``_pending.py``) that the
writer imports.

Methods are synchronous; the plugin calls the slow ones (open, sync, close)
from a worker thread and :meth:`Chain.append` from the event loop.
"""

from __future__ import annotations

import binascii
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import Final

import attrs
import orjson

from plugin_sdk import PluginError
from plugin_sdk import fsync_dir

from ._format import _SHA256
from ._format import ANCHOR_SIZE
from ._format import GENESIS
from ._format import MAC_TAG
from ._format import Anchor
from ._format import AnchorError
from ._format import Mac
from ._format import _default
from ._format import decode
from ._format import decode_anchor
from ._format import looks_like_entry
from ._format import mac_ok
from ._format import prev_of
from ._format import seq_of
from ._pending import Spool
from ._pending import pending_dir
from ._verify import Source
from ._verify import anchor_path
from ._verify import chain_files
from ._verify import rotated_files

_APPEND: Final = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
_READ: Final = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
_TAIL_CHUNK: Final = 64 * 1024


class ReadOnlyLog(PluginError):
    """The log is written by another process; this one can only read it."""


class LogClosed(PluginError):
    """The log is not open (the audit plugin is not running)."""


@attrs.frozen
class Recovery:
    """What :meth:`Chain.open` found and repaired (recorded as an ``audit.recovered`` entry)."""

    #: the file the torn bytes were moved to, and how many
    torn_file: str | None = None
    torn_bytes: int = 0
    torn_sha256: str | None = None
    #: entries the anchor recorded that are not in the log: (first, last)
    lost: tuple[int, int] | None = None
    #: what was wrong with the anchor (moved aside to ``moved_anchor``)
    anchor: str | None = None
    moved_anchor: str | None = None

    @property
    def needed(self) -> bool:
        return self.torn_file is not None or self.lost is not None or self.anchor is not None

    def details(self) -> dict[str, Any]:
        details: dict[str, Any] = {}
        if self.torn_file is not None:
            details.update(torn_file=self.torn_file, torn_bytes=self.torn_bytes, torn_sha256=self.torn_sha256)
        if self.lost is not None:
            details["lost"] = {"first": self.lost[0], "last": self.lost[1]}
        if self.anchor is not None:
            details["anchor"] = self.anchor
            if self.moved_anchor is not None:
                details["anchor_moved_to"] = self.moved_anchor
        return details


def _read_at(fd: int, offset: int, size: int) -> bytes:
    return os.pread(fd, size, offset)


def _last_line(fd: int, end: int) -> tuple[int, bytes] | None:
    """The line that ends just before offset ``end`` (``end - 1`` is its newline): (start, bytes without newline)."""
    if end <= 0:
        return None
    stop = end - 1  # the newline
    position = stop
    collected = b""
    while position > 0:
        step = min(_TAIL_CHUNK, position)
        chunk = _read_at(fd, position - step, step)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            start = position - step + newline + 1
            return start, chunk[newline + 1 :] + collected
        collected = chunk + collected
        position -= step
    return 0, collected


def _first_line(path: Path) -> bytes | None:
    with open(path, "rb") as handle:
        line = handle.readline()
    return line.rstrip(b"\n") if line.endswith(b"\n") else None


def _entry_ok(line: bytes) -> bool:
    if not looks_like_entry(line):
        return False
    try:
        decode(line)
    except ValueError:
        return False
    return True


def entries_after(sources: Sequence[Source], seq: int, mac: Mac) -> list[dict[str, Any]]:
    """The entries at the end of the chain whose seq is above ``seq``, newest first.

    Reads back from the end and stops at the first entry at or below ``seq``; lines
    that are not entries or whose MAC does not verify are skipped.
    """
    found: list[dict[str, Any]] = []
    for source in reversed(sources):
        fd = source.fd if source.fd is not None else os.open(source.name, _READ)
        try:
            end = source.size if source.size is not None else os.fstat(fd).st_size
            if end and _read_at(fd, end - 1, 1) != b"\n":
                got = _last_line(fd, end + 1)
                end = got[0] if got is not None else 0
            while end > 0:
                got = _last_line(fd, end)
                if got is None:
                    break
                start, line = got
                end = start
                if not looks_like_entry(line) or not mac_ok(mac, line):
                    continue
                number = seq_of(line)
                if number is not None and number <= seq:
                    return found
                try:
                    found.append(decode(line))
                except ValueError:
                    pass
        finally:
            if source.fd is None:
                os.close(fd)
    return found


def tail_sources(sources: Sequence[Source], count: int) -> list[dict[str, Any]]:
    """The last ``count`` complete entries of the chain, oldest first (unparsable lines skipped)."""
    found: list[dict[str, Any]] = []
    for source in reversed(sources):
        fd = source.fd if source.fd is not None else os.open(source.name, _READ)
        try:
            end = source.size if source.size is not None else os.fstat(fd).st_size
            if end and _read_at(fd, end - 1, 1) != b"\n":  # an incomplete last line: skip it
                got = _last_line(fd, end + 1)
                end = got[0] if got is not None else 0
            while end > 0 and len(found) < count:
                got = _last_line(fd, end)
                if got is None:
                    break
                start, line = got
                try:
                    found.append(decode(line))
                except ValueError:
                    pass
                end = start
        finally:
            if source.fd is None:
                os.close(fd)
        if len(found) >= count:
            break
    found.reverse()
    return found


class Chain:
    """One open chain: its current file, rotated files and anchor."""

    def __init__(
        self,
        path: Path,
        mac: Mac,
        *,
        fsync: str = "interval",
        max_bytes: int = 0,
        keep: int = 0,
        log: logging.Logger | None = None,
        key_id: str = "",
    ) -> None:
        self.path = path
        #: a fingerprint of the HMAC key (two instances share the chain only under the same key)
        self.key_id = key_id
        self.anchor_file = anchor_path(path)
        self.lock_file = path.with_name(path.name + ".lock")
        self._mac = mac
        self.fsync = fsync
        self.max_bytes = max_bytes
        self.keep = keep
        self._log = log or logging.getLogger("orion.plugin.audit")
        self._anchor_lock = threading.Lock()  # anchor writes
        self._fd = -1
        self._anchor_fd = -1
        self._lock_fd = -1
        self.read_only = False
        self.holder = ""  # the pid holding the log, when read-only
        self._seq = 0
        self._prev = GENESIS
        self._size = 0
        self._next_index = 1
        self._first_seq = 1
        self._first_prev = GENESIS
        self._anchor_seq = -1
        self._synced_seq = 0
        self._spool: Spool | None = None
        #: the anchor as :meth:`open` found it (None: missing or invalid)
        self._found_anchor: Anchor | None = None

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else ("open" if self._fd >= 0 else "closed")
        return f"<Chain {str(self.path)!r} {mode} seq={self._seq}>"

    # -- state ------------------------------------------------------------------------

    @property
    def seq(self) -> int:
        """The seq of the last entry written."""
        return self._seq

    @property
    def last_hash(self) -> str:
        return self._prev

    @property
    def is_open(self) -> bool:
        return self._fd >= 0

    @property
    def synced_seq(self) -> int:
        """The last seq known to be on disk (fsync'd)."""
        return self._synced_seq

    @property
    def pending_dir(self) -> Path:
        """Where processes that do not hold the lock record (``PATH.pending``)."""
        return pending_dir(self.path)

    @property
    def spool(self) -> Spool:
        """This process's pending file (read-only chains: where ``record()`` writes), made on first use."""
        spool = self._spool
        if spool is None:
            spool = self._spool = Spool(self.pending_dir, self._mac)
        return spool

    @property
    def spooled(self) -> Spool | None:
        """The spool, if this chain used one."""
        return self._spool

    # -- open and recover ----------------------------------------------------------------

    def open(self) -> Recovery:
        """Take the lock, recover a torn tail, open the current file and write the anchor.

        Read-only (``self.read_only``) when another process holds the lock.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                self.read_only = True
                self.holder = os.pread(self._lock_fd, 32, 0).decode(errors="replace").strip()
                os.close(self._lock_fd)
                self._lock_fd = -1
                return Recovery()
            os.ftruncate(self._lock_fd, 0)
            os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)
            existed = self.path.exists() and self.anchor_file.exists()
            recovery = self._recover()
            self._fd = os.open(self.path, _APPEND, 0o600)
            self._size = os.fstat(self._fd).st_size
            self._anchor_fd = os.open(self.anchor_file, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
            pruned = self._prune()
            self._synced_seq = self._seq
            if recovery.needed:
                self.append("audit.recovered", None, "ok", recovery.details())
                self._sync_fd(self._fd)
                self._synced_seq = self._seq
            elif self._found_anchor == Anchor(self._seq, self._prev, self._first_seq, self._first_prev):
                # The anchor on disk already says all this (a clean stop wrote it): rewriting and
                # fsyncing it, and the directory, on every start is what made a start cost fsyncs.
                self._anchor_seq = self._seq
            self._write_anchor(self._seq, self._prev, sync=self.fsync != "never")
            if self.fsync != "never" and (not existed or recovery.needed or pruned):
                fsync_dir(self.path.parent)  # a file was created, moved or deleted here
            return recovery
        except BaseException:
            self._close_fds()
            raise

    def _recover(self) -> Recovery:
        """Find the last complete entry; move a torn tail aside; compare with the anchor."""
        torn_file: str | None = None
        torn_bytes = 0
        torn_sha: str | None = None
        files = chain_files(self.path)
        rotated = rotated_files(self.path)
        self._next_index = (rotated[-1][0] + 1) if rotated else 1
        last: bytes | None = None
        seq_hint = 0
        for position in range(len(files) - 1, -1, -1):
            file = files[position]
            fd = os.open(file, _READ)
            try:
                size = os.fstat(fd).st_size
                good_end = size
                if position == len(files) - 1 and file == self.path and size:
                    # the current file: a last line without its newline, or unparsable, is torn
                    if _read_at(fd, size - 1, 1) != b"\n":
                        got = _last_line(fd, size + 1)  # "size" stands for the missing newline
                        good_end = got[0] if got is not None else 0
                    if good_end:
                        got = _last_line(fd, good_end)
                        if got is not None and not _entry_ok(got[1]):
                            good_end = got[0]
                    if good_end < size:
                        torn = _read_at(fd, good_end, size - good_end)
                        torn_bytes = len(torn)
                        torn_sha = hashlib.sha256(torn).hexdigest()
                got = _last_line(fd, good_end)
                if got is not None:
                    last = got[1]
                    if not looks_like_entry(last):
                        seq_hint = self._seq_before(fd, got[0])
            finally:
                os.close(fd)
            if torn_bytes and torn_file is None:
                torn_file = self._move_torn(good_end, torn_bytes, last)
            if last is not None:
                break
        if last is not None:
            seq = seq_of(last) if looks_like_entry(last) else None
            if seq is None:
                # damaged where no recovery can tell a torn write from an edit: link to its bytes anyway
                seq = seq_hint
                self._log.error(
                    "audit: the last complete line of the chain at %s is not an entry; new entries "
                    "continue after it (from seq %d) and 'orion-kernel audit verify' will report it",
                    self.path,
                    seq + 1,
                )
            elif not mac_ok(self._mac, last):
                self._log.error(
                    "audit: the last entry of %s (seq %d) does not verify under the current HMAC key "
                    "(edited, or the key changed); new entries continue the chain from it, "
                    "and 'orion-kernel audit verify' will report it",
                    self.path,
                    seq,
                )
            self._seq = seq
            self._prev = hashlib.sha256(last).hexdigest()
        # the start of the retained chain, and the anchor
        lost: tuple[int, int] | None = None
        problem: str | None = None
        moved: str | None = None
        try:
            data: bytes | None = self.anchor_file.read_bytes()
        except FileNotFoundError:
            data = None
        anchor: Anchor | None = None
        if data is not None:
            try:
                anchor = decode_anchor(self._mac, data)
            except AnchorError as exc:
                problem = str(exc)
                moved = self._move_aside(self.anchor_file, f"invalid-{self._seq}")
        elif self._seq:
            problem = "the anchor file was missing"
        self._found_anchor = anchor
        if anchor is not None:
            self._first_seq, self._first_prev = anchor.first_seq, anchor.first_prev
            if anchor.seq > self._seq:
                lost = (self._seq + 1, anchor.seq)
        else:
            self._first_seq, self._first_prev = self._chain_start(files)
        if lost is not None:
            self._log.error(
                "audit: the anchor of %s records entry %d but the log ends at entry %d: "
                "entries %d-%d are lost (power loss under fsync=%r, or the log was truncated)",
                self.path,
                lost[1],
                self._seq,
                lost[0],
                lost[1],
                self.fsync,
            )
        if problem is not None and self._seq:
            self._log.error("audit: %s: %s; writing a new one", self.anchor_file, problem)
        elif problem is not None:
            problem = None  # a fresh log with a leftover anchor: nothing to report
        return Recovery(
            torn_file=torn_file,
            torn_bytes=torn_bytes,
            torn_sha256=torn_sha,
            lost=lost,
            anchor=problem,
            moved_anchor=moved,
        )

    @staticmethod
    def _seq_before(fd: int, end: int, limit: int = 10_000) -> int:
        """The seq of the last entry-shaped line that ends before offset ``end`` (0 if none in ``limit`` lines)."""
        for _ in range(limit):
            got = _last_line(fd, end)
            if got is None:
                return 0
            start, line = got
            seq = seq_of(line) if looks_like_entry(line) else None
            if seq is not None:
                return seq
            end = start
        return 0

    def _chain_start(self, files: Sequence[Path]) -> tuple[int, str]:
        for file in files:
            line = _first_line(file)
            if line is not None and looks_like_entry(line):
                seq, prev = seq_of(line), prev_of(line)
                if seq is not None and prev is not None:
                    return seq, prev.decode()
        return 1, GENESIS

    def _move_torn(self, good_end: int, size: int, last: bytes | None) -> str:
        """Copy the torn tail of the current file aside (fsync'd), then cut it off."""
        seq = seq_of(last) if last is not None else 0
        fd = os.open(self.path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        try:
            torn = _read_at(fd, good_end, size)
            base = f"{self.path.name}.torn-{seq or 0}"
            target = self.path.with_name(base)
            number = 1
            while True:
                try:
                    out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
                except FileExistsError:
                    if target.read_bytes() == torn:  # a recovery that crashed after saving it
                        break
                    number += 1
                    target = self.path.with_name(f"{base}-{number}")
                    continue
                try:
                    view = memoryview(torn)
                    while view:
                        view = view[os.write(out, view) :]
                    os.fsync(out)
                finally:
                    os.close(out)
                break
            fsync_dir(self.path.parent)
            os.ftruncate(fd, good_end)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._log.warning(
            "audit: %s ended with %d byte(s) of a torn entry (a crash mid-write); moved to %s",
            self.path,
            size,
            target.name,
        )
        return target.name

    def _move_aside(self, file: Path, suffix: str) -> str:
        target = file.with_name(f"{file.name}.{suffix}")
        number = 1
        while target.exists():
            number += 1
            target = file.with_name(f"{file.name}.{suffix}-{number}")
        os.replace(file, target)
        return target.name

    # -- appending ------------------------------------------------------------------------

    def append(
        self,
        action: str,
        actor: str | None,
        outcome: str,
        details: Mapping[str, Any] | None,
        *,
        ts: float | None = None,
        imported: Mapping[str, Any] | None = None,
    ) -> int:
        """Write one entry; its seq once the line is in the file (not yet fsync'd).

        ``ts`` (default: now) and ``imported`` (the marker of an entry imported from
        a pending file) are for the importer.

        Called on the event loop's thread only (so is everything that changes the
        descriptors: :meth:`open` before the chain is used, rotation, :meth:`close`).

        :raises ReadOnlyLog: another process writes this log.
        :raises LogClosed: the log is not open.
        :raises OSError: the write failed (nothing of the entry is left in the file).
        """
        fd = self._fd
        if fd < 0:
            self._refuse()
        seq = self._seq + 1
        # _format.encode() inlined (the hot path of every audited invoke): canonical JSON, its MAC
        entry = {
            "seq": seq,
            "prev": self._prev,
            "ts": time.time() if ts is None else ts,
            "action": action,
            "actor": actor,
            "outcome": outcome,
            "details": {} if details is None else details,
        }
        if imported is not None:
            entry["imported"] = imported
        canonical = orjson.dumps(entry, default=_default)
        mac = self._mac
        inner = mac.inner()
        inner.update(canonical)
        outer = mac.outer()
        outer.update(inner.digest())
        line = canonical[:-1] + MAC_TAG + binascii.hexlify(outer.digest()) + b'"}\n'
        size = len(line)
        if self.max_bytes and self._size and self._size + size > self.max_bytes:
            self._rotate()
            fd = self._fd
        written = os.write(fd, line)
        if written != size:
            self._finish(line, written)
        digest = _SHA256.copy()
        digest.update(memoryview(line)[:-1])  # the chain hashes the line without its newline
        self._seq = seq
        self._prev = digest.hexdigest()
        self._size += size
        return seq

    def _refuse(self) -> None:
        if self.read_only:
            raise ReadOnlyLog(
                f"audit: {self.path} is written by another process (pid {self.holder or '?'}); "
                "this kernel cannot append to it (it records into the pending directory instead)",
                plugin="audit",
            )
        raise LogClosed("audit: the log is closed", plugin="audit")

    def _finish(self, line: bytes, written: int) -> None:
        # A short write (a full disk, a signal): write the rest, or leave no partial line behind.
        try:
            view = memoryview(line)[written:]
            while view:
                view = view[os.write(self._fd, view) :]
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise

    def _rotate(self) -> None:
        """Move the current file to the next number and start a new one; the chain goes on."""
        durable = self.fsync != "never"
        if durable:
            os.fsync(self._fd)
        target = self.path.with_name(f"{self.path.name}.{self._next_index}")
        os.rename(self.path, target)
        fd = os.open(self.path, _APPEND, 0o600)
        os.close(self._fd)
        self._fd = fd
        self._size = 0
        self._next_index += 1
        if durable:
            fsync_dir(self.path.parent)
            self._synced_seq = self._seq
        self._prune()
        self._write_anchor(self._seq, self._prev, sync=durable)

    def _prune(self) -> bool:
        """Delete rotated files beyond ``keep``, oldest first, after the anchor records the new start;
        whether it deleted any."""
        if not self.keep:
            return False
        rotated = rotated_files(self.path)
        if len(rotated) <= self.keep:
            return False
        drop, kept = rotated[: -self.keep], rotated[-self.keep :]
        line = _first_line(kept[0][1])
        seq = seq_of(line) if line is not None else None
        prev = prev_of(line) if line is not None else None
        if seq is None or prev is None:
            self._log.error("audit: not deleting old rotated files: %s does not start with an entry", kept[0][1])
            return False
        with self._anchor_lock:
            self._first_seq, self._first_prev = seq, prev.decode()
        self._write_anchor(self._seq, self._prev, sync=self.fsync != "never", force=True)
        for _, file in drop:
            with contextlib.suppress(FileNotFoundError):
                os.remove(file)
        self._log.info("audit: deleted %d rotated file(s) beyond keep=%d", len(drop), self.keep)
        return True

    # -- durability and the anchor --------------------------------------------------------

    def pending(self, *, always: bool = False) -> tuple[int, str, int] | None:
        """What a sync would cover: ``(seq, hash, dup'd fd)``, or None when everything is anchored.

        ``always``: whenever the chain is open (an fsync whatever the anchor says).
        Called on the writer's thread; pass the result to :meth:`sync` (any thread).
        """
        if self._fd < 0 or (self._seq <= self._anchor_seq and not always):
            return None
        return self._seq, self._prev, os.dup(self._fd)

    def sync(self, seq: int, digest: str, fd: int, *, fsync: bool) -> None:
        """fsync the log (through ``fd``, which it closes), then anchor ``seq`` (and fsync the anchor)."""
        try:
            if fsync:
                self._sync_fd(fd)
        finally:
            os.close(fd)
        if fsync:
            self._synced_seq = max(self._synced_seq, seq)
        self._write_anchor(seq, digest, sync=fsync)

    @staticmethod
    def _sync_fd(fd: int) -> None:
        (getattr(os, "fdatasync", None) or os.fsync)(fd)

    def _write_anchor(self, seq: int, digest: str, *, sync: bool, force: bool = False) -> None:
        with self._anchor_lock:
            if self._anchor_fd < 0 or (seq <= self._anchor_seq and not force):
                return
            data = Anchor(seq, digest, self._first_seq, self._first_prev).encode(self._mac)
            os.pwrite(self._anchor_fd, data, 0)
            self._anchor_seq = seq
            fd = os.dup(self._anchor_fd) if sync else -1
        if fd >= 0:  # fsync outside the lock, on a descriptor that a close cannot pull away
            try:
                self._sync_fd(fd)
            finally:
                os.close(fd)

    # -- reading ----------------------------------------------------------------------------

    def snapshot(self) -> tuple[list[Source], bytes | None, tuple[int, str] | None]:
        """The files as they are now, opened (the caller closes the fds), the anchor, and the writer's state.

        Called on the writer's thread, so no entry is half in the snapshot.  A reader
        (another process writes) reads the anchor first: the writer anchors an entry
        only after writing it, so the files then hold at least what the anchor names.
        """
        early: bytes | None = None
        if self._fd < 0:
            early = self._read_anchor()
        sources: list[Source] = []
        try:
            for file in chain_files(self.path):
                fd = os.open(file, _READ)
                live = file == self.path and self._fd >= 0
                sources.append(Source(str(file), fd, self._size if live else os.fstat(fd).st_size))
        except BaseException:
            for source in sources:
                if source.fd is not None:
                    os.close(source.fd)
            raise
        anchor = early if self._fd < 0 else self._read_anchor()
        expect = (self._seq, self._prev) if self._fd >= 0 else None
        return sources, anchor, expect

    def _read_anchor(self) -> bytes | None:
        with self._anchor_lock:
            if self._anchor_fd >= 0:
                return os.pread(self._anchor_fd, ANCHOR_SIZE, 0)
            try:
                return self.anchor_file.read_bytes()
            except FileNotFoundError:
                return None

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Sync what is not yet (per policy), write the final anchor, close everything, release the lock.

        On the writer's thread: call :meth:`pending` / :meth:`sync` first from a worker
        thread so that little or nothing is left to fsync here.
        """
        fd = self._fd
        try:
            if fd >= 0:
                durable = self.fsync != "never"
                if durable and self._synced_seq < self._seq:
                    self._sync_fd(fd)
                    self._synced_seq = self._seq
                self._write_anchor(self._seq, self._prev, sync=durable)
        finally:
            self._close_fds()

    def _close_fds(self) -> None:
        spool, self._spool = self._spool, None
        if spool is not None:
            spool.close()
        with self._anchor_lock:
            for name in ("_fd", "_anchor_fd", "_lock_fd"):
                fd = getattr(self, name)
                if fd >= 0:
                    setattr(self, name, -1)
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._anchor_seq = -1


# -- one chain per path per process ------------------------------------------------------------------------

_registry_lock = threading.Lock()
#: absolute path -> [the open chain, how many plugin instances use it]
_registry: dict[str, list[Any]] = {}


def acquire(path: Path, mac: Mac, *, key_id: str, **options: Any) -> tuple[Chain, Recovery]:
    """Open the chain at ``path``, or share the one this process already has open there.

    A reload may start a new instance of the plugin beside the old one: both then
    write the same chain (the ``flock`` would otherwise make the new one read-only).
    Blocking: call from a worker thread.

    :raises PluginError: the chain is open in this process under another HMAC key.
    """
    key = os.path.abspath(path)
    with _registry_lock:
        entry = _registry.get(key)
        if entry is not None:
            chain: Chain = entry[0]
            if chain.key_id != key_id:
                raise PluginError(
                    f"audit: {path} is already open in this process under another HMAC key", plugin="audit"
                )
            entry[1] += 1
            return chain, Recovery()
        chain = Chain(path, mac, key_id=key_id, **options)
        recovery = chain.open()
        if not chain.read_only:
            _registry[key] = [chain, 1]
        return chain, recovery


def release(chain: Chain) -> bool:
    """One user fewer; whether it was the last (then the caller closes the chain)."""
    with _registry_lock:
        key = os.path.abspath(chain.path)
        entry = _registry.get(key)
        if entry is None or entry[0] is not chain:
            return True
        entry[1] -= 1
        if entry[1] > 0:
            return False
        del _registry[key]
        return True
