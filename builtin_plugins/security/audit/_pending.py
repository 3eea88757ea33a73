"""Pending files: how a kernel that does not hold the log's lock still records, durably.

One process writes a chain (it holds ``flock`` on ``PATH.lock``).  Another
process on the same log (``orion-kernel auth keys create`` while ``orion-kernel
run`` serves) writes its entries to a *pending file* instead:
``PATH.pending/<pid>-<16 hex>.jsonl`` (directory 0700, files 0600), one file
per run, one MAC'd line per entry (:func:`._format.encode_pending`), fsync'd
before ``record()`` returns.  The writer of the chain imports them.

Files in ``PATH.pending/``:

``<stem>.jsonl``
    being written (or left) by a non-writer; nothing of it is in the chain yet.
``<stem>.jsonl.importing-<S>``
    the importer renamed it (and fsync'd the directory) before appending any
    of it, when the chain's last seq was ``S``.  Its entries are in the chain
    as far as entries after seq ``S`` carry ``"imported": {"file": "<stem>.jsonl",
    "line": N}``: after a crash between appending and deleting, a new writer
    scans only those entries and appends the lines after the last one found.
``<stem>.jsonl.rejected``
    a file with a line that did not verify (bad MAC, malformed, torn, out of
    place): its good lines were imported and an ``audit.pending.rejected``
    entry names the bad ones; the file is kept as evidence, never deleted.

Locking: the pending writer holds ``flock`` on its file while it writes and
fsyncs a line; the importer holds it from the moment it claims the file until
it has deleted (or moved aside) the file.  A pending writer that finds its file
renamed or deleted when it gets the lock starts a new file under a new name, so
a line is never written to a file the importer has already read, and no two
files ever share a name (the ``imported`` markers name the file).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import Final

import attrs
import orjson

from plugin_sdk import fsync_dir

from ._format import Mac
from ._format import encode_pending
from ._format import pending_mac_ok

#: the action of the entry that reports a pending file's bad lines
REJECTED_ACTION: Final = "audit.pending.rejected"
SUFFIX: Final = ".jsonl"
IMPORTING: Final = ".importing-"
REJECTED: Final = ".rejected"
#: problems listed in one ``audit.pending.rejected`` entry (the count is always complete)
MAX_PROBLEMS: Final = 20
#: seconds an empty pending file is left alone (its writer created it and is about to write)
FRESH_EMPTY: Final = 60.0

_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_IMPORTING_NAME: Final = re.compile(r"^(?P<stem>.+\.jsonl)\.importing-(?P<seq>\d+)$")


def pending_dir(path: Path) -> Path:
    """The pending directory of the chain whose current file is ``path``."""
    return path.with_name(path.name + ".pending")


# -- the writing side (a process that does not hold the lock) ------------------------------------------------


class Spool:
    """The pending file of this process's run, written one fsync'd line per entry.

    Thread-safe; :meth:`write` blocks (lock, write, fsync): call it from a worker thread.
    """

    def __init__(self, directory: Path, mac: Mac) -> None:
        self.directory = directory
        self._mac = mac
        self._lock = threading.Lock()
        self._fd = -1
        #: the current file's name, and the number of its last line
        self.name = ""
        self._line = 0
        #: entries written by this spool (over every file it used)
        self.written = 0

    def __repr__(self) -> str:
        return f"<Spool {str(self.directory)!r} file={self.name!r} written={self.written}>"

    def write(
        self, action: str, actor: str | None, outcome: str, details: Mapping[str, Any] | None, ts: float | None = None
    ) -> str:
        """Append one entry and fsync it; the name of the file it is in.

        :raises OSError: it could not be written (nothing of it is left in the file).
        """
        with self._lock:
            for _ in range(16):
                if self._fd < 0:
                    self._create()
                fd = self._fd
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    if self._current(fd):
                        line = encode_pending(
                            self._mac,
                            self.name,
                            self._line + 1,
                            os.getpid(),
                            time.time() if ts is None else ts,
                            action,
                            actor,
                            outcome,
                            details,
                        )
                        _write_all(fd, line + b"\n")
                        os.fsync(fd)
                        self._line += 1
                        self.written += 1
                        return self.name
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                # the writer imported (renamed or deleted) the file: a new one, under a new name
                self._drop()
            raise OSError(errno.EAGAIN, f"audit: cannot keep a pending file in {self.directory}")

    def _create(self) -> None:
        created = False
        try:
            os.mkdir(self.directory, 0o700)
            created = True
        except FileExistsError:
            pass
        if created:
            fsync_dir(self.directory.parent)
        name = f"{os.getpid()}-{secrets.token_hex(8)}{SUFFIX}"
        self._fd = os.open(self.directory / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o600)
        self.name = name
        self._line = 0
        fsync_dir(self.directory)

    def _current(self, fd: int) -> bool:
        """Whether ``fd`` is still the file under its name (the importer renames it first)."""
        mine = os.fstat(fd)
        if mine.st_nlink == 0:
            return False
        try:
            there = os.stat(self.directory / self.name)
        except FileNotFoundError:
            return False
        return (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino)

    def _drop(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        with self._lock:
            self._drop()


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` at the end of ``fd``, or leave none of it there."""
    size = os.fstat(fd).st_size
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise


# -- reading and checking a pending file ---------------------------------------------------------------------


@attrs.frozen
class PendingEntry:
    """One verified line of a pending file."""

    line: int
    pid: int
    ts: float
    action: str
    actor: str | None
    outcome: str
    details: dict[str, Any]


@attrs.frozen
class Problem:
    """A line that is not imported (or a gap before one that is): where, and why."""

    line: int
    reason: str


@attrs.frozen
class Parsed:
    entries: tuple[PendingEntry, ...]
    problems: tuple[Problem, ...]


def _fields(raw: Any) -> PendingEntry | None:
    if not isinstance(raw, dict):
        return None
    line, pid, ts = raw.get("line"), raw.get("pid"), raw.get("ts")
    action, actor, outcome, details = raw.get("action"), raw.get("actor"), raw.get("outcome"), raw.get("details")
    if not (isinstance(line, int) and not isinstance(line, bool) and line > 0):
        return None
    if not (isinstance(pid, int) and not isinstance(pid, bool)):
        return None
    if not (isinstance(ts, (int, float)) and not isinstance(ts, bool) and math.isfinite(ts)):
        return None
    if not (isinstance(action, str) and action and isinstance(outcome, str) and outcome):
        return None
    if not (actor is None or isinstance(actor, str)) or not isinstance(details, dict):
        return None
    return PendingEntry(line, pid, float(ts), action, actor, outcome, details)


def _problem(mac: Mac, line: bytes, stem: str, last: int) -> PendingEntry | str:
    """The entry of one line, or what is wrong with it."""
    ok = pending_mac_ok(mac, line)
    if ok is None:
        return "malformed"
    if not ok:
        return "mac"
    try:
        raw = orjson.loads(line)
    except orjson.JSONDecodeError:
        return "malformed"
    entry = _fields(raw)
    if entry is None:
        return "malformed"
    if raw.get("file") != stem:
        return "misplaced"
    if entry.line <= last:
        return "repeated"
    return entry


def parse(mac: Mac, data: bytes, stem: str) -> Parsed:
    """The verified entries of pending file ``stem`` and every problem with it, by physical line number.

    Reasons: ``torn`` (the last line has no newline: its writer crashed mid-write),
    ``malformed`` (not a pending line), ``mac`` (the MAC does not verify: edited,
    forged, or another key), ``misplaced`` (a good line of another file),
    ``repeated`` (its line number does not grow: copied or reordered), ``gap``
    (lines before it are missing and no bad line there explains it; it is imported).
    """
    lines = data.split(b"\n")
    torn = lines.pop()
    entries: list[PendingEntry] = []
    problems: list[Problem] = []
    last = 0
    reported = False  # a problem since the last good line (it explains a gap in the numbers)
    for number, line in enumerate(lines, start=1):
        reason = _problem(mac, line, stem, last)
        if isinstance(reason, str):
            problems.append(Problem(number, reason))
            reported = True
            continue
        if reason.line != last + 1 and not reported:
            problems.append(Problem(number, "gap"))
        last = reason.line
        reported = False
        entries.append(reason)
    if torn:
        problems.append(Problem(len(lines) + 1, "torn"))
    return Parsed(tuple(entries), tuple(problems))


# -- the importing side (the writer of the chain) ------------------------------------------------------------


def listing(directory: Path) -> list[str]:
    """The files to import: interrupted imports first, then pending files, oldest first."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    resumed = sorted(name for name in names if _IMPORTING_NAME.match(name))
    fresh: list[tuple[float, str]] = []
    for name in names:
        if name.endswith(SUFFIX) and not name.startswith("."):
            try:
                fresh.append((os.stat(directory / name).st_mtime, name))
            except FileNotFoundError:
                continue
    return resumed + [name for _, name in sorted(fresh)]


def count(directory: Path) -> int:
    """How many pending files await import."""
    return len(listing(directory))


@attrs.define
class Claim:
    """A pending file the importer holds (its ``flock``), renamed to ``.importing-S``."""

    #: the open file (holding its lock); -1 once released
    fd: int
    directory: Path
    #: the name its writer gave it (what the lines and the markers say)
    stem: str
    #: its name now
    name: str
    #: the chain's last seq when its import began: markers are only in entries after it
    after: int
    #: whether an earlier import of it may have appended some of it (a crash before the delete)
    resumed: bool
    parsed: Parsed
    #: where it goes if it has problems
    rejected_name: str

    def release(self) -> None:
        """Close the file (and so unlock it); idempotent (a second close could hit a reused fd number)."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


def claim(directory: Path, name: str, seq: int, mac: Mac) -> Claim | None:
    """Take pending file ``name`` for import (None: gone, or its writer is writing it).

    A fresh file is renamed to ``<name>.importing-<seq>`` and the directory fsync'd
    before anything of it is appended, ``seq`` being the chain's last seq now.
    """
    path = directory / name
    try:
        fd = os.open(path, os.O_RDONLY | _CLOEXEC)
    except (FileNotFoundError, IsADirectoryError):
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)
                return None  # its writer holds it for a moment: the next tick
            raise
        mine = os.fstat(fd)
        try:
            there = os.stat(path)
        except FileNotFoundError:
            os.close(fd)
            return None
        if (there.st_dev, there.st_ino) != (mine.st_dev, mine.st_ino) or mine.st_nlink == 0:
            os.close(fd)
            return None  # imported meanwhile (another instance in this process)
        resumed = _IMPORTING_NAME.match(name)
        if resumed is None and mine.st_size == 0 and time.time() - mine.st_mtime < FRESH_EMPTY:
            os.close(fd)
            return None  # just created: its writer is about to lock it and write its first line
        if resumed is not None:
            stem, after = resumed["stem"], int(resumed["seq"])
        else:
            stem, after = name, seq
            name = f"{stem}{IMPORTING}{seq}"
            os.rename(path, directory / name)
            fsync_dir(directory)
        data = _read_all(fd)
        rejected = f"{stem}{REJECTED}"
        number = 1
        while (directory / rejected).exists():
            number += 1
            rejected = f"{stem}{REJECTED}-{number}"
        return Claim(fd, directory, stem, name, after, resumed is not None, parse(mac, data, stem), rejected)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def finish(claim: Claim, *, rejected: bool) -> None:
    """After the chain is fsync'd: delete the file (or move it to ``.rejected``), fsync the directory, unlock."""
    try:
        source = claim.directory / claim.name
        if rejected:
            os.rename(source, claim.directory / claim.rejected_name)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(source)
        fsync_dir(claim.directory)
    finally:
        claim.release()


def already_imported(entries: Sequence[Mapping[str, Any]], stem: str) -> tuple[int, bool]:
    """From chain entries (those after the claim's ``after``): the last line of ``stem`` imported, and
    whether its ``audit.pending.rejected`` entry is there."""
    last = 0
    reported = False
    for entry in entries:
        marker = entry.get("imported")
        if isinstance(marker, dict) and marker.get("file") == stem:
            line = marker.get("line")
            if isinstance(line, int) and line > last:
                last = line
        details = entry.get("details")
        if entry.get("action") == REJECTED_ACTION and isinstance(details, dict) and details.get("file") == stem:
            reported = True
    return last, reported


def rejected_details(claim: Claim, imported: int) -> dict[str, Any]:
    """The details of the ``audit.pending.rejected`` entry: where and why, never a bad line's content."""
    problems = claim.parsed.problems
    first = problems[0]
    return {
        "file": claim.stem,
        "moved_to": claim.rejected_name,
        "line": first.line,
        "reason": first.reason,
        "problems": [{"line": p.line, "reason": p.reason} for p in problems[:MAX_PROBLEMS]],
        "count": len(problems),
        "imported": imported,
    }
