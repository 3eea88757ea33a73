"""Verifying a chain: every file in order, one SHA-256 and one HMAC per line.

The files are read in large blocks and split into lines; each line's shape
is checked by its fixed prefix and suffix, its MAC over its bytes, then its
``seq`` and ``prev`` (read at fixed places: once the MAC verifies, the bytes
are exactly what a key holder wrote, so no JSON parse is needed).  The first
bad line is named (file and 1-based line) with the reason:

``malformed``   not an entry line (garbage, a line cut in the middle of the file)
``edited``      the MAC does not verify: changed bytes, or another HMAC key
``deleted``     a ``seq`` is missing (a line, or a whole rotated file)
``reordered``   entries out of order (the missing ``seq`` comes later)
``chain``       ``seq`` follows but ``prev`` is not the previous line's hash
``truncated``   the last line is incomplete, or entries the anchor (or the
                running writer) recorded are missing from the end
``anchor``      the anchor file is missing, malformed, MAC'd under another key,
                or disagrees with the entry it names
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Iterator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from ._format import ENTRY_PREFIX
from ._format import GENESIS_BYTES
from ._format import MAC_SUFFIX
from ._format import MAC_TAG
from ._format import MIN_LINE
from ._format import Anchor
from ._format import AnchorError
from ._format import Mac
from ._format import decode_anchor
from ._format import seq_of

BLOCK = 8 << 20
#: an empty SHA-256 state: copying it is cheaper than constructing one
_SHA256 = hashlib.sha256()


def anchor_path(path: Path) -> Path:
    """Where the anchor of the chain whose current file is ``path`` lives."""
    return path.with_name(path.name + ".anchor")


def rotated_files(path: Path) -> list[tuple[int, Path]]:
    """The rotated files of ``path`` (``PATH.1``, ``PATH.2``, ...), oldest first."""
    pattern = re.compile(re.escape(path.name) + r"\.([0-9]+)$")
    found = []
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    for name in names:
        match = pattern.match(name)
        if match:
            found.append((int(match.group(1)), path.parent / name))
    found.sort()
    return found


def chain_files(path: Path) -> list[Path]:
    """Every file of the chain, in order: the rotated files, oldest first, then ``path`` if it exists."""
    files = [p for _, p in rotated_files(path)]
    if path.exists():
        files.append(path)
    return files


@attrs.frozen
class Source:
    """One file to verify: its name, and optionally an open descriptor and how much of it to read."""

    name: str
    fd: int | None = None
    size: int | None = None


@attrs.frozen
class Report:
    """The outcome of a verification, with more detail than :class:`plugin_sdk.AuditVerification`."""

    ok: bool
    #: complete entries that verified before the first bad one (all of them when ok)
    entries: int
    #: the first bad line: file and 1-based line (None when ok)
    file: str | None = None
    line: int | None = None
    #: one word: malformed, edited, deleted, reordered, chain, truncated, anchor ("" when ok)
    reason: str = ""
    #: a sentence for people
    detail: str = ""
    #: the seq of the last entry that verified (0: none)
    last_seq: int = 0
    #: the files walked, in order
    files: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "file": self.file,
            "line": self.line,
            "reason": self.reason,
            "detail": self.detail,
            "last_seq": self.last_seq,
            "files": list(self.files),
        }


class _Bad(Exception):
    def __init__(self, line: int, reason: str, detail: str) -> None:
        self.line = line
        self.reason = reason
        self.detail = detail


def _blocks(source: Source) -> Iterator[bytes]:
    if source.fd is not None:
        offset = 0
        end = source.size
        while end is None or offset < end:
            want = BLOCK if end is None else min(BLOCK, end - offset)
            block = os.pread(source.fd, want, offset)
            if not block:
                return
            offset += len(block)
            yield block
        return
    with open(source.name, "rb", buffering=0) as handle:
        while block := handle.read(BLOCK):
            yield block


class _Walker:
    """The state of one walk along the chain."""

    def __init__(self, mac: Mac, anchor: Anchor | None) -> None:
        self.mac = mac
        self.anchor = anchor
        self.expected: int | None = None  # the next seq; None before the first line
        self.prev = GENESIS_BYTES
        self.entries = 0
        #: (file index, line) of the entry the anchor names, and that line's hash
        self.anchored: tuple[int, int, bytes] | None = None

    def first(self, line: bytes, lineno: int) -> None:
        """Set the walk's start from the first line (already checked for shape and MAC)."""
        comma = line.index(b",", 7)
        seq = int(line[7:comma])
        prev = line[comma + 9 : comma + 73]
        if self.anchor is not None:
            start, start_prev = self.anchor.first_seq, self.anchor.first_prev.encode()
            if seq > start:
                missing = f"entry {start}" if seq == start + 1 else f"entries {start} to {seq - 1}"
                raise _Bad(lineno, "deleted", f"the chain starts at entry {seq}: {missing} missing")
            if seq == start and prev != start_prev:
                raise _Bad(lineno, "chain", f"entry {seq} is not the entry the anchor says the chain starts with")
            # seq < start: files that retention was about to delete are still there; walk them too
        elif seq == 1 and prev != GENESIS_BYTES:
            raise _Bad(lineno, "chain", "the first entry does not start from the genesis hash")
        self.expected = seq
        self.prev = prev

    def lines(self, index: int, lines: list[bytes], lineno: int) -> int:
        """Check ``lines`` (the next lines of file ``index``; the line before the first is ``lineno``).

        :returns: the number of the last line checked.
        :raises _Bad: at the first bad line.
        """
        mac_inner = self.mac.inner()
        mac_outer = self.mac.outer()
        compare = hmac.compare_digest
        hexlify = binascii.hexlify
        sha256 = _SHA256
        anchored = self.anchor.seq if self.anchor is not None else -1
        expected = self.expected
        prev = self.prev
        try:
            for line in lines:
                lineno += 1
                # The MAC covers everything but the tag before it and the closing '"}': check those here.
                if line[-MAC_SUFFIX : -MAC_SUFFIX + 8] != MAC_TAG or not line.endswith(b'"}'):
                    raise _Bad(lineno, "malformed", "not an audit entry line")
                inner = mac_inner.copy()
                inner.update(memoryview(line)[:-MAC_SUFFIX])
                inner.update(b"}")
                outer = mac_outer.copy()
                outer.update(inner.digest())
                if not compare(hexlify(outer.digest()), line[-66:-2]):
                    if len(line) < MIN_LINE or not line.startswith(ENTRY_PREFIX):
                        raise _Bad(lineno, "malformed", "not an audit entry line")
                    if expected is None:
                        raise _Bad(
                            lineno,
                            "edited",
                            "the MAC of the first entry does not verify: the entry was changed, "
                            "or the log was written under another HMAC key",
                        )
                    raise _Bad(lineno, "edited", "the MAC does not verify: the entry was changed")
                if expected is None:
                    self.first(line, lineno)
                    expected = self.expected
                    prev = self.prev
                    assert expected is not None
                # seq and prev where the encoder puts them, checked as one prefix
                if not line.startswith(b'{"seq":%d,"prev":"%b"' % (expected, prev)):
                    comma = line.index(b",", 7)
                    seq = int(line[7:comma])
                    if seq != expected:
                        raise _Bad(lineno, "seq", str(seq))  # classified by the caller (it can look ahead)
                    raise _Bad(lineno, "chain", f"entry {seq}'s prev is not the hash of the entry before it")
                digest = sha256.copy()
                digest.update(line)
                prev = hexlify(digest.digest())
                if expected == anchored:
                    self.anchored = (index, lineno, prev)
                expected += 1
                self.entries += 1
        finally:
            self.expected = expected
            self.prev = prev
        return lineno


def _later(sources: Sequence[Source], index: int, lineno: int, seq: int) -> bool:
    """Whether an entry ``seq`` appears after line ``lineno`` of file ``index`` (the slow path)."""
    for position in range(index, len(sources)):
        number = 0
        rest = b""
        for block in _blocks(sources[position]):
            parts = (rest + block).split(b"\n")
            rest = parts.pop()
            for line in parts:
                number += 1
                if (position > index or number > lineno) and line.startswith(ENTRY_PREFIX) and seq_of(line) == seq:
                    return True
    return False


def verify_sources(
    sources: Sequence[Source],
    mac: Mac,
    *,
    anchor: bytes | None,
    anchor_name: str,
    current: str,
    expect: tuple[int, str] | None = None,
) -> Report:
    """Verify the chain made of ``sources`` (oldest first).

    :param anchor: the anchor file's bytes (None: there is none).
    :param current: the name of the chain's current file (where a line after the last one is).
    :param expect: the running writer's last ``(seq, line hash)``: entries it wrote must all be there.
    """
    names = tuple(s.name for s in sources)
    problem: tuple[str, int, str, str] | None = None  # file, line, reason, detail
    parsed: Anchor | None = None
    if anchor is not None:
        try:
            parsed = decode_anchor(mac, anchor)
        except AnchorError as exc:
            problem = (anchor_name, 1, "anchor", str(exc))
    walker = _Walker(mac, parsed)
    last_file, last_line = current, 0
    for index, source in enumerate(sources):
        lineno = 0
        rest = b""
        try:
            for block in _blocks(source):
                parts = (rest + block).split(b"\n") if rest else block.split(b"\n")
                rest = parts.pop()
                lineno = walker.lines(index, parts, lineno)
            if rest:
                raise _Bad(
                    lineno + 1, "truncated", "the line is incomplete (no newline): a write was cut short, or a cut"
                )
        except _Bad as bad:
            reason, detail = bad.reason, bad.detail
            if reason == "seq":
                seq, expected = int(detail), walker.expected or 0
                if seq < expected:
                    reason, detail = "reordered", f"entry {seq} comes after entry {expected - 1}"
                elif _later(sources, index, bad.line, expected):
                    reason, detail = "reordered", f"entry {seq} comes where entry {expected} should be"
                else:
                    missing = f"entry {expected}" if seq == expected + 1 else f"entries {expected} to {seq - 1}"
                    reason, detail = "deleted", f"{missing} missing before entry {seq}"
            return Report(
                ok=False,
                entries=walker.entries,
                file=source.name,
                line=bad.line,
                reason=reason,
                detail=detail,
                last_seq=(walker.expected or 1) - 1,
                files=names,
            )
        if lineno:
            last_file, last_line = source.name, lineno
    last_seq = (walker.expected or 1) - 1
    after = (last_file, last_line + 1)
    if problem is None and parsed is not None:
        if parsed.seq > last_seq:
            missing = f"entry {parsed.seq}" if parsed.seq == last_seq + 1 else f"entries {last_seq + 1}-{parsed.seq}"
            problem = (*after, "truncated", f"the anchor records entry {parsed.seq}; {missing} missing from the end")
        elif parsed.seq > 0 and walker.anchored is not None and walker.anchored[2] != parsed.hash.encode():
            problem = (
                sources[walker.anchored[0]].name,
                walker.anchored[1],
                "anchor",
                f"entry {parsed.seq} is not the entry the anchor records",
            )
    elif problem is None and walker.entries:
        problem = (anchor_name, 1, "anchor", "the anchor file is missing")
    if problem is None and expect is not None:
        seq, digest = expect
        if seq > last_seq:
            missing = f"entry {seq}" if seq == last_seq + 1 else f"entries {last_seq + 1}-{seq}"
            problem = (*after, "truncated", f"the writer wrote entry {seq}; {missing} missing from the end")
        elif seq == last_seq and seq > 0 and walker.prev != digest.encode():
            problem = (*(after[0], after[1] - 1), "edited", "the last entry is not the one the writer wrote")
    if problem is not None:
        file, line, reason, detail = problem
        return Report(
            ok=False,
            entries=walker.entries,
            file=file,
            line=line,
            reason=reason,
            detail=detail,
            last_seq=last_seq,
            files=names,
        )
    return Report(ok=True, entries=walker.entries, last_seq=last_seq, files=names)


def verify_path(path: str | os.PathLike[str], mac: Mac) -> Report:
    """Verify the chain whose current file is ``path`` (its rotated files and anchor beside it)."""
    current = Path(path)
    anchor_file = anchor_path(current)
    try:
        anchor: bytes | None = anchor_file.read_bytes()
    except FileNotFoundError:
        anchor = None
    sources = [Source(str(p)) for p in chain_files(current)]
    return verify_sources(sources, mac, anchor=anchor, anchor_name=str(anchor_file), current=str(current))
