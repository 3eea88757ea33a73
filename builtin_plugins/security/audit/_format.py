"""The on-disk format: entry lines, their MAC and hash chain, and the anchor record.

One entry is one line of JSON (orjson), fields in this order::

    {"seq":7,"prev":"<64 hex>","ts":1712345678.123,"action":"invoke","actor":"ada",
     "outcome":"ok","details":{...},"mac":"<64 hex>"}

* ``seq`` counts up by one across every file of the chain, from 1;
* ``prev`` is the SHA-256 (hex) of the previous entry's line -- its exact bytes,
  without the terminating newline -- and :data:`GENESIS` for the first entry;
* ``mac`` is HMAC-SHA256 (hex) over the entry's *canonical bytes*: the same line
  without the ``mac`` field, i.e. ``line[:-74] + b"}"``.  The MAC is always the
  last field, so a verifier checks it without parsing the JSON.

An entry imported from a pending file (below) has one more field before the
MAC, ``"imported":{"file":...,"line":N,"pid":P,"at":TS}``, and keeps the ``ts``
of the pending line (when it happened, not when it was imported).

A *pending line* is what a kernel that does not hold the log's lock writes
(``PATH.pending/<pid>-<random>.jsonl``, one file per run)::

    {"pending":1,"file":"4242-0c1d....jsonl","line":3,"pid":4242,"ts":1712345678.5,
     "action":"auth.key.created","actor":"cli","outcome":"ok","details":{...},"mac":"<64 hex>"}

Its ``mac`` is HMAC-SHA256 over :data:`PENDING_DOMAIN` followed by the same
canonical bytes (the line without the ``mac`` field), so a pending line can
never pass for a chain entry, nor an entry for a pending line; ``file`` and
``line`` bind it to its place (copied or moved lines are caught).

The anchor (``PATH.anchor``) is one fixed-size record rewritten in place: the
last anchored ``seq`` and the hash of its line, plus where the retained chain
starts (``first_seq``, ``first_prev``: they move when ``keep`` deletes old
files), MAC'd under the same key with a domain prefix so that no entry can pass
for an anchor or the reverse.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from typing import Final

import attrs
import orjson

from plugin_sdk import HmacSha256

#: ``prev`` of the first entry of a chain
GENESIS: Final = "0" * 64
GENESIS_BYTES: Final = GENESIS.encode()
#: what every entry line starts with
ENTRY_PREFIX: Final = b'{"seq":'
#: the bytes before the MAC at the end of a line
MAC_TAG: Final = b',"mac":"'
#: ``len(',"mac":"' + 64 hex + '"}')``: the canonical bytes are ``line[:-MAC_SUFFIX] + b"}"``
MAC_SUFFIX: Final = len(MAC_TAG) + 64 + 2
#: the shortest line that can be an entry
MIN_LINE: Final = len(ENTRY_PREFIX) + 1 + len(',"prev":""') + 64 + MAC_SUFFIX
#: bytes of the anchor file (one padded JSON record and a newline)
ANCHOR_SIZE: Final = 512
ANCHOR_DOMAIN: Final = b"orion-audit-anchor\n"
#: what the MAC of a pending line covers before its canonical bytes
PENDING_DOMAIN: Final = b"orion-audit-pending\n"
#: what every pending line starts with
PENDING_PREFIX: Final = b'{"pending":1,'
ANCHOR_VERSION: Final = 1


#: HMAC-SHA256 with the key prepared once (the SDK's); the name the audit code uses
Mac = HmacSha256


#: an empty SHA-256 state: copying it is cheaper than constructing one (OpenSSL 3 fetches per constructor)
_SHA256: Final = hashlib.sha256()


def key_from_text(value: str) -> bytes:
    """The key bytes of a stored key: 64 hex digits decode to 32 bytes, anything else is UTF-8."""
    text = value.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    if not text:
        raise ValueError("the HMAC key is empty")
    return text.encode()


def _default(value: object) -> str:
    # Values orjson cannot encode (a Path, a set, an exception) are recorded as text.
    return str(value)


def encode(
    mac: Mac,
    seq: int,
    prev: str,
    ts: float,
    action: str,
    actor: str | None,
    outcome: str,
    details: Mapping[str, Any] | None,
    *,
    imported: Mapping[str, Any] | None = None,
) -> bytes:
    """The line of one entry, without its newline."""
    entry: dict[str, Any] = {
        "seq": seq,
        "prev": prev,
        "ts": ts,
        "action": action,
        "actor": actor,
        "outcome": outcome,
        "details": {} if details is None else details,
    }
    if imported is not None:
        entry["imported"] = imported
    canonical = orjson.dumps(entry, default=_default)
    return canonical[:-1] + MAC_TAG + mac.hex(canonical) + b'"}'


def encode_pending(
    mac: Mac,
    file: str,
    line: int,
    pid: int,
    ts: float,
    action: str,
    actor: str | None,
    outcome: str,
    details: Mapping[str, Any] | None,
) -> bytes:
    """One pending line (no newline): MAC'd under :data:`PENDING_DOMAIN`, bound to ``file`` and ``line``."""
    canonical = orjson.dumps(
        {
            "pending": 1,
            "file": file,
            "line": line,
            "pid": pid,
            "ts": ts,
            "action": action,
            "actor": actor,
            "outcome": outcome,
            "details": {} if details is None else details,
        },
        default=_default,
    )
    return canonical[:-1] + MAC_TAG + mac.hex2(PENDING_DOMAIN, canonical) + b'"}'


def pending_mac_ok(mac: Mac, line: bytes) -> bool | None:
    """Whether the MAC of a pending line (no newline) is right; None if it has no pending line's shape."""
    if (
        len(line) < len(PENDING_PREFIX) + MAC_SUFFIX
        or not line.startswith(PENDING_PREFIX)
        or line[-MAC_SUFFIX : -MAC_SUFFIX + len(MAC_TAG)] != MAC_TAG
        or not line.endswith(b'"}')
    ):
        return None
    expected = mac.hex2(PENDING_DOMAIN, line[:-MAC_SUFFIX] + b"}")
    return hmac.compare_digest(expected, line[-66:-2])


def line_hash(line: bytes | memoryview) -> str:
    """The hash the next entry's ``prev`` carries: SHA-256 of the line without its newline."""
    digest = _SHA256.copy()
    digest.update(line)
    return digest.hexdigest()


def looks_like_entry(line: bytes) -> bool:
    """Whether ``line`` (no newline) has an entry's shape: prefix, MAC tag and closing brace."""
    return (
        len(line) >= MIN_LINE
        and line.startswith(ENTRY_PREFIX)
        and line[-MAC_SUFFIX : -MAC_SUFFIX + len(MAC_TAG)] == MAC_TAG
        and line.endswith(b'"}')
    )


def mac_ok(mac: Mac, line: bytes) -> bool:
    """Whether the MAC at the end of ``line`` (an entry's shape, no newline) is right."""
    expected = mac.hex2(memoryview(line)[:-MAC_SUFFIX], b"}")
    return hmac.compare_digest(expected, line[-66:-2])


def seq_of(line: bytes) -> int | None:
    """The ``seq`` of an entry-shaped line, read without a JSON parse (None if unreadable)."""
    comma = line.find(b",", len(ENTRY_PREFIX))
    if comma < 0:
        return None
    try:
        return int(line[len(ENTRY_PREFIX) : comma])
    except ValueError:
        return None


def prev_of(line: bytes) -> bytes | None:
    """The ``prev`` hash (ASCII hex) of an entry-shaped line, without a JSON parse."""
    comma = line.find(b",", len(ENTRY_PREFIX))
    if comma < 0 or line[comma : comma + 9] != b',"prev":"':
        return None
    return line[comma + 9 : comma + 73]


def decode(line: bytes) -> dict[str, Any]:
    """An entry as a dict (the ``mac`` field included)."""
    entry = orjson.loads(line)
    if not isinstance(entry, dict):
        raise ValueError("not an entry")
    return entry


@attrs.frozen
class Anchor:
    """What the anchor file says: the last anchored entry and where the retained chain starts."""

    seq: int
    hash: str
    first_seq: int = 1
    first_prev: str = GENESIS

    def encode(self, mac: Mac) -> bytes:
        """The fixed-size record (``ANCHOR_SIZE`` bytes)."""
        body = orjson.dumps(
            {
                "v": ANCHOR_VERSION,
                "seq": self.seq,
                "hash": self.hash,
                "first_seq": self.first_seq,
                "first_prev": self.first_prev,
            }
        )
        record = body[:-1] + MAC_TAG + mac.hex2(ANCHOR_DOMAIN, body) + b'"}'
        return record.ljust(ANCHOR_SIZE - 1) + b"\n"


class AnchorError(ValueError):
    """The anchor file is unreadable, malformed or its MAC is wrong."""


def decode_anchor(mac: Mac, data: bytes) -> Anchor:
    """Parse and authenticate an anchor record.

    :raises AnchorError: malformed, or the MAC does not verify under ``mac``'s key.
    """
    record = data.rstrip(b" \n\x00")
    if not record.endswith(b'"}') or record[-MAC_SUFFIX : -MAC_SUFFIX + len(MAC_TAG)] != MAC_TAG:
        raise AnchorError("the anchor is malformed")
    body = record[:-MAC_SUFFIX] + b"}"
    if not hmac.compare_digest(mac.hex2(ANCHOR_DOMAIN, body), record[-66:-2]):
        raise AnchorError("the anchor's MAC does not verify (edited, or another HMAC key)")
    try:
        fields = orjson.loads(body)
        anchor = Anchor(
            seq=int(fields["seq"]),
            hash=str(fields["hash"]),
            first_seq=int(fields["first_seq"]),
            first_prev=str(fields["first_prev"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise AnchorError("the anchor is malformed") from None
    if fields.get("v") != ANCHOR_VERSION:
        raise AnchorError(f"unknown anchor version {fields.get('v')!r}")
    return anchor
