"""API keys: ``<prefix>_<key id>_<secret>``, stored only as HMAC-SHA256(hash key, secret).

The key id (12 hex digits) is visible and names the record; the secret (32
random bytes, base64url) is shown once, when the key is created, and never
stored: the record holds its keyed hash.  Checking a key is one HMAC and one
``hmac.compare_digest``: a few microseconds, no I/O.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import threading
import types
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from typing import Final

import attrs
import orjson

from plugin_sdk import Principal

from ._files import read_json
from ._files import write_atomic

FORMAT: Final = 1
#: bytes of randomness in a key's secret
SECRET_BYTES: Final = 32
#: what the hash key's check value is the HMAC of (it proves which hash key the records were made with)
_CHECK_MESSAGE: Final = b"orion-kernel auth: hash key check"


def new_key_id() -> str:
    return secrets.token_hex(6)


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def keyed_hash(hash_key: bytes, secret: str) -> bytes:
    return hmac.digest(hash_key, secret.encode("utf-8"), "sha256")


def hash_key_check(hash_key: bytes) -> str:
    """A value that identifies ``hash_key`` without revealing it (stored beside the records)."""
    return hmac.digest(hash_key, _CHECK_MESSAGE, "sha256")[:16].hex()


@attrs.define(slots=True, eq=False)
class KeyRecord:
    """One API key as stored: everything but its secret.  ``repr`` omits the hash."""

    id: str
    principal: str
    kind: str
    roles: tuple[str, ...]
    created: float
    hash: bytes = attrs.field(repr=False)
    expires: float | None = None
    revoked: bool = False
    revoked_at: float | None = None
    last_used: float | None = None
    #: what authenticating with the key yields (built once)
    identity: Principal = attrs.field(init=False, repr=False)
    #: the throttling subject of the key
    subject: str = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        claims = types.MappingProxyType({"auth": "api-key", "key_id": self.id})
        self.identity = Principal(id=self.principal, kind=self.kind, roles=self.roles, claims=claims)
        self.subject = f"api-key:{self.id}"

    def state(self, now: float) -> str:
        if self.revoked:
            return "revoked"
        if self.expires is not None and now >= self.expires:
            return "expired"
        return "active"

    def public(self, now: float) -> dict[str, Any]:
        """What ``auth.keys.list`` shows: never the secret nor its hash."""
        return {
            "id": self.id,
            "principal": self.principal,
            "kind": self.kind,
            "roles": list(self.roles),
            "created": self.created,
            "expires": self.expires,
            "revoked": self.revoked,
            "revoked_at": self.revoked_at,
            "last_used": self.last_used,
            "state": self.state(now),
        }

    def stored(self) -> dict[str, Any]:
        return {
            "principal": self.principal,
            "kind": self.kind,
            "roles": list(self.roles),
            "created": self.created,
            "expires": self.expires,
            "revoked": self.revoked,
            "revoked_at": self.revoked_at,
            "last_used": self.last_used,
            "hash": base64.b64encode(self.hash).decode("ascii"),
        }

    @classmethod
    def load(cls, key_id: str, data: Mapping[str, Any]) -> KeyRecord:
        return cls(
            id=key_id,
            principal=str(data["principal"]),
            kind=str(data["kind"]),
            roles=tuple(str(role) for role in data.get("roles", ())),
            created=float(data["created"]),
            hash=base64.b64decode(data["hash"], validate=True),
            expires=None if data.get("expires") is None else float(data["expires"]),
            revoked=bool(data.get("revoked", False)),
            revoked_at=None if data.get("revoked_at") is None else float(data["revoked_at"]),
            last_used=None if data.get("last_used") is None else float(data["last_used"]),
        )


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _lock_for(path: Path) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(str(path.absolute()), threading.Lock())


class KeyFile:
    """The records, in a 0600 JSON file written atomically.

    Every change is a read-modify-write of the file under a per-file lock
    (:meth:`update`, run in a worker thread), so two instances of the plugin
    sharing a data directory -- the old and the new one during a reload --
    never undo each other's changes: a revocation made by one cannot be
    overwritten by the other's stale copy.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> tuple[str | None, dict[str, KeyRecord]]:
        """(the hash key check, the records by id); ``(None, {})`` when there is no file yet.

        :raises ValueError: the file is corrupt (names the file, never its content).
        """
        data = read_json(self.path)
        if data is None:
            return None, {}
        try:
            if data.get("format") != FORMAT:
                raise ValueError(f"unknown format {data.get('format')!r}")
            records = {key_id: KeyRecord.load(key_id, entry) for key_id, entry in data["keys"].items()}
            check = data.get("hash_key_check")
            return (check if isinstance(check, str) else None), records
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{self.path} is not a valid API key file ({type(exc).__name__})") from None

    @staticmethod
    def dump(check: str, records: Mapping[str, KeyRecord]) -> bytes:
        data = {
            "format": FORMAT,
            "hash_key_check": check,
            "keys": {key_id: record.stored() for key_id, record in records.items()},
        }
        return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    def update(
        self,
        check: str,
        last_used: Mapping[str, float],
        change: Callable[[dict[str, KeyRecord]], None] | None = None,
    ) -> dict[str, KeyRecord]:
        """Read the file, merge newer ``last_used`` times, apply ``change``, write it back; the new records.

        :raises ValueError: the file is corrupt, or was made with another hash key.
        """
        with _lock_for(self.path):
            stored, records = self.load()
            if stored is not None and not hmac.compare_digest(stored, check):
                raise ValueError(f"{self.path} was written with another hash key")
            for key_id, used in last_used.items():
                record = records.get(key_id)
                if record is not None and (record.last_used is None or used > record.last_used):
                    record.last_used = used
            if change is not None:
                change(records)
            write_atomic(self.path, self.dump(check, records))
            return records
