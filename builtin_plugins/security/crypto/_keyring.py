"""The keyring and the two ciphers built on it: AES-256-GCM envelopes and Fernet tokens.

Envelope layout (what :meth:`KeyringCipher.encrypt` returns)::

    offset  size  field
    0       1     version, 0x01
    1       4     key id (the 8 hex digits key_ids() shows, as 4 bytes)
    5       12    nonce, random per message
    17      n     AES-256-GCM ciphertext (as long as the plaintext)
    17+n    16    GCM tag

The first 5 bytes (version and key id) followed by the caller's
``associated_data`` are the GCM associated data, so the version, the key id
and the context are all authenticated.  33 bytes of overhead per message.

Fernet tokens (:meth:`KeyringCipher.encrypt_token`) are standard Fernet
(AES-128-CBC + HMAC-SHA256, a timestamp, URL-safe base64): each keyring entry
holds a Fernet key beside its AES key, so one rotation moves both.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from typing import Any
from typing import Final

import anyio
import attrs
import orjson
from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet
from cryptography.fernet import InvalidToken
from cryptography.fernet import MultiFernet
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from plugin_sdk import Clock
from plugin_sdk import CryptoError
from plugin_sdk import DecryptionFailed
from plugin_sdk import KeyNotFound
from plugin_sdk import SystemClock

VERSION: Final = 0x01
KEY_ID_SIZE: Final = 4
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
HEADER_SIZE: Final = 1 + KEY_ID_SIZE
OVERHEAD: Final = HEADER_SIZE + NONCE_SIZE + TAG_SIZE  # 33
KEY_SIZE: Final = 32
KEYRING_FORMAT: Final = 1
_KEY_ID: Final = re.compile(r"[0-9a-f]{8}")
#: a Fernet token is URL-safe base64 with its padding, nothing else (the spec's invalid.json refuses
#: trailing data and stray characters, which a lenient base64 decoder would skip)
_TOKEN: Final = re.compile(rb"(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}==|[A-Za-z0-9_-]{3}=)?")


def _token(token: object) -> bytes:
    if isinstance(token, str):
        try:
            token = token.encode("ascii")
        except UnicodeEncodeError:
            raise DecryptionFailed("invalid Fernet token: not URL-safe base64") from None
    if not isinstance(token, bytes):
        raise TypeError(f"token must be bytes or str, got {type(token).__name__}")
    if not _TOKEN.fullmatch(token):
        raise DecryptionFailed("invalid Fernet token: not URL-safe base64 (stray characters or trailing data)")
    return token


def _bytes(value: object, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"{what} must be bytes, got {type(value).__name__}")


@attrs.frozen(repr=False)
class KeyEntry:
    """One generation of keys: an AES-256-GCM key and a Fernet key, under one id."""

    #: 8 lowercase hex digits, unique in its keyring
    id: str
    #: when it was made, seconds since the epoch
    created: float
    aes: bytes = attrs.field(repr=False)
    #: a Fernet key as :class:`cryptography.fernet.Fernet` takes it (URL-safe base64 of 32 bytes)
    fernet: bytes = attrs.field(repr=False)

    def __repr__(self) -> str:
        return f"KeyEntry(id={self.id!r}, created={self.created!r}, material=<redacted>)"

    __str__ = __repr__

    @classmethod
    def generate(cls, created: float, taken: Iterable[str] = ()) -> KeyEntry:
        """Fresh random keys under an id not in ``taken``."""
        used = set(taken)
        while True:
            key_id = os.urandom(KEY_ID_SIZE).hex()
            if key_id not in used:
                return cls(key_id, created, os.urandom(KEY_SIZE), Fernet.generate_key())


class KeyringFormatError(CryptoError):
    """Stored keyring data that cannot be read (never shows the data)."""


@attrs.frozen(repr=False)
class Keyring:
    """Every key held, the current one first.  Immutable: rotation makes a new keyring.

    ``retired`` remembers the ids of keys dropped on purpose, so that merging two
    versions of a keyring (:meth:`merged`) tells a retired key from one another
    process's write happened to lose.
    """

    keys: tuple[KeyEntry, ...]
    retired: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        if not self.keys:
            raise KeyringFormatError("a keyring needs at least one key")
        ids = [key.id for key in self.keys]
        if len(set(ids)) != len(ids):
            raise KeyringFormatError("duplicate key ids in the keyring")

    def __repr__(self) -> str:
        return f"Keyring(ids={self.ids()!r})"

    __str__ = __repr__

    @classmethod
    def generate(cls, created: float) -> Keyring:
        return cls((KeyEntry.generate(created),))

    @property
    def current(self) -> KeyEntry:
        return self.keys[0]

    def ids(self) -> list[str]:
        return [key.id for key in self.keys]

    def rotated(self, created: float) -> Keyring:
        """A new current key in front of every key held now."""
        return Keyring((KeyEntry.generate(created, [*self.ids(), *self.retired]), *self.keys), self.retired)

    def merged(self, held: Keyring) -> Keyring:
        """This (stored) keyring plus the keys ``held`` has that it neither holds nor retired.

        The stored keyring's order and current key win; a key that only ``held``
        knows (a rotation another writer overwrote) is kept after them, so nothing
        encrypted under it becomes unreadable.
        """
        retired = tuple(dict.fromkeys([*self.retired, *held.retired]))
        known = set(self.ids()) | set(retired)
        extra = tuple(key for key in held.keys if key.id not in known)
        keys = tuple(key for key in self.keys if key.id not in retired or key.id == self.current.id)
        return Keyring((*keys, *extra), retired)

    def without(self, key_id: str) -> Keyring:
        """Every key but ``key_id``.

        :raises KeyNotFound: no such key.
        :raises CryptoError: ``key_id`` is the current key (rotate first).
        """
        if key_id not in self.ids():
            raise KeyNotFound(f"no key {key_id!r} in the keyring (held: {', '.join(self.ids())})")
        if key_id == self.current.id:
            raise CryptoError(f"key {key_id!r} is the current key: rotate first, then retire it")
        return Keyring(tuple(key for key in self.keys if key.id != key_id), (*self.retired, key_id))

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "format": KEYRING_FORMAT,
                "keys": [
                    {
                        "id": key.id,
                        "created": key.created,
                        "aes": base64.b64encode(key.aes).decode("ascii"),
                        "fernet": key.fernet.decode("ascii"),
                    }
                    for key in self.keys
                ],
                "retired": list(self.retired),
            }
        )

    @classmethod
    def from_json(cls, data: bytes | str, *, where: str) -> Keyring:
        """:raises KeyringFormatError: not a keyring (the message names ``where``, never the data)."""
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise KeyringFormatError(f"the keyring in {where} is not JSON") from None
        if not isinstance(parsed, dict) or parsed.get("format") != KEYRING_FORMAT:
            raise KeyringFormatError(f"the keyring in {where} is not a format-{KEYRING_FORMAT} keyring")
        raw = parsed.get("keys")
        if not isinstance(raw, list) or not raw:
            raise KeyringFormatError(f"the keyring in {where} holds no keys")
        keys = []
        for index, item in enumerate(raw):
            try:
                key_id, created = item["id"], item["created"]
                aes = base64.b64decode(item["aes"], validate=True)
                fernet = item["fernet"].encode("ascii")
                Fernet(fernet)  # checks it
            except (KeyError, TypeError, AttributeError, ValueError, binascii.Error):
                raise KeyringFormatError(f"the keyring in {where}: key #{index} is malformed") from None
            if not (isinstance(key_id, str) and _KEY_ID.fullmatch(key_id)) or len(aes) != KEY_SIZE:
                raise KeyringFormatError(f"the keyring in {where}: key #{index} is malformed")
            if not isinstance(created, int | float):
                raise KeyringFormatError(f"the keyring in {where}: key #{index} is malformed")
            keys.append(KeyEntry(key_id, float(created), aes, fernet))
        retired = parsed.get("retired", [])
        if not isinstance(retired, list) or not all(isinstance(i, str) and _KEY_ID.fullmatch(i) for i in retired):
            raise KeyringFormatError(f"the keyring in {where}: 'retired' is malformed")
        return cls(tuple(keys), tuple(retired))


_DECRYPT_FAILED: Final = (
    "the ciphertext did not authenticate: it was tampered with or truncated, made under another key, "
    "or the associated data differs"
)
_TOKEN_FAILED: Final = (
    "invalid Fernet token: tampered with, truncated, malformed, or made under a key this keyring does not hold"
)


class _Ciphers:
    """What one keyring compiles to: an AESGCM per key id, the current id, a MultiFernet."""

    __slots__ = ("aead", "current", "current_raw", "fernet", "keyring")

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self.aead = {bytes.fromhex(key.id): AESGCM(key.aes) for key in keyring.keys}
        self.current_raw = bytes.fromhex(keyring.current.id)
        self.current = self.aead[self.current_raw]
        self.fernet = MultiFernet([Fernet(key.fernet) for key in keyring.keys])


#: persists a keyring (to the secret store or the file); awaited before the keyring is used
Persist = Callable[[Keyring], Awaitable[None]]
#: reads the stored keyring (None when nothing is stored)
Load = Callable[[], Awaitable["Keyring | None"]]
#: told of each rotation and retirement: (action, actor, details)
Notify = Callable[[str, "str | None", dict[str, Any]], Awaitable[None]]


class KeyringCipher:
    """The ``encryptor`` service: AES-256-GCM envelopes and Fernet tokens under a rotating keyring.

    Satisfies :class:`plugin_sdk.Encryptor` (``encrypt``, ``decrypt``, ``reencrypt``,
    ``key_ids``: sync), plus ``encrypt_token`` / ``decrypt_token`` /
    ``reencrypt_token`` (Fernet), ``key_info()`` (ids and creation times, never
    material), and the async ``rotate()``, ``retire(key_id)`` and ``refresh()``.
    """

    def __init__(
        self,
        keyring: Keyring,
        *,
        clock: Clock | None = None,
        persist: Persist | None = None,
        load: Load | None = None,
        notify: Notify | None = None,
    ) -> None:
        self._ciphers = _Ciphers(keyring)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._persist = persist
        self._load = load
        self._notify = notify
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"<KeyringCipher keys={self.key_ids()!r}>"

    @property
    def keyring(self) -> Keyring:
        return self._ciphers.keyring

    def install(self, keyring: Keyring) -> None:
        """Use ``keyring`` from now on (already persisted)."""
        self._ciphers = _Ciphers(keyring)

    # -- Encryptor ---------------------------------------------------------------------------

    def encrypt(self, plaintext: bytes, *, associated_data: bytes = b"") -> bytes:
        """An envelope of ``plaintext`` under the current key (see the module docstring for the layout)."""
        plaintext = _bytes(plaintext, "plaintext")
        associated_data = _bytes(associated_data, "associated_data")
        ciphers = self._ciphers
        header = bytes([VERSION]) + ciphers.current_raw
        nonce = os.urandom(NONCE_SIZE)
        return header + nonce + ciphers.current.encrypt(nonce, plaintext, header + associated_data)

    def decrypt(self, ciphertext: bytes, *, associated_data: bytes = b"") -> bytes:
        """The plaintext of an envelope, under whichever key id it names.

        :raises DecryptionFailed: truncated, unknown version, tampered, wrong key or wrong associated data.
        :raises KeyNotFound: the key id is not (or no longer) in the keyring.
        """
        ciphertext = _bytes(ciphertext, "ciphertext")
        associated_data = _bytes(associated_data, "associated_data")
        if len(ciphertext) < OVERHEAD:
            raise DecryptionFailed(
                f"truncated ciphertext: {len(ciphertext)} byte(s), an envelope has at least {OVERHEAD}"
            )
        if ciphertext[0] != VERSION:
            raise DecryptionFailed(
                f"unknown envelope version 0x{ciphertext[0]:02x} (this keyring reads 0x{VERSION:02x})"
            )
        key_id = ciphertext[1:HEADER_SIZE]
        aead = self._ciphers.aead.get(key_id)
        if aead is None:
            raise KeyNotFound(
                f"the ciphertext names key {key_id.hex()!r}, which the keyring does not hold "
                f"(held: {', '.join(self.key_ids())}); was it retired?"
            )
        nonce = ciphertext[HEADER_SIZE : HEADER_SIZE + NONCE_SIZE]
        try:
            return aead.decrypt(
                nonce, ciphertext[HEADER_SIZE + NONCE_SIZE :], ciphertext[:HEADER_SIZE] + associated_data
            )
        except InvalidTag:
            raise DecryptionFailed(_DECRYPT_FAILED) from None

    def reencrypt(self, ciphertext: bytes, *, associated_data: bytes = b"") -> bytes:
        """Decrypt (under any held key) and encrypt again under the current key, with a fresh nonce."""
        return self.encrypt(self.decrypt(ciphertext, associated_data=associated_data), associated_data=associated_data)

    def key_ids(self) -> Sequence[str]:
        """Every key id held, the current one first."""
        return self._ciphers.keyring.ids()

    def key_id_of(self, ciphertext: bytes) -> str:
        """The key id an envelope names (without decrypting it).  :raises DecryptionFailed: not an envelope."""
        ciphertext = _bytes(ciphertext, "ciphertext")
        if len(ciphertext) < OVERHEAD or ciphertext[0] != VERSION:
            raise DecryptionFailed("not an envelope of this keyring's version, or truncated")
        return ciphertext[1:HEADER_SIZE].hex()

    def key_info(self) -> list[dict[str, Any]]:
        """``[{"id", "created", "current"}]``, current first; never key material."""
        current = self._ciphers.keyring.current.id
        return [{"id": k.id, "created": k.created, "current": k.id == current} for k in self._ciphers.keyring.keys]

    # -- Fernet ------------------------------------------------------------------------------

    def encrypt_token(self, data: bytes) -> bytes:
        """A Fernet token of ``data`` under the current key, stamped with the clock's time."""
        data = _bytes(data, "data")
        return self._ciphers.fernet.encrypt_at_time(data, int(self.clock.now()))

    def decrypt_token(self, token: bytes | str, ttl: float | None = None) -> bytes:
        """The data in a Fernet token made under any held key.

        :param ttl: refuse tokens older than this many seconds (and, as Fernet does,
            tokens stamped more than 60 s in the future).
        :raises DecryptionFailed: invalid, tampered, unknown key, or expired.
        """
        token = _token(token)
        fernet = self._ciphers.fernet
        try:
            if ttl is None:
                return fernet.decrypt(token)
            return fernet.decrypt_at_time(token, ttl, int(self.clock.now()))  # type: ignore[arg-type]
        except InvalidToken:
            pass
        if ttl is not None:
            with contextlib.suppress(InvalidToken):
                stamped = fernet.extract_timestamp(token)  # authentic: only its time is wrong
                age = int(self.clock.now()) - stamped
                if age < 0:
                    raise DecryptionFailed(f"Fernet token stamped {-age} s in the future") from None
                raise DecryptionFailed(f"Fernet token expired: {age} s old, ttl {ttl:g} s") from None
        raise DecryptionFailed(_TOKEN_FAILED) from None

    def reencrypt_token(self, token: bytes | str) -> bytes:
        """The same data and timestamp as a token under the current key.  :raises DecryptionFailed:"""
        token = _token(token)
        try:
            return self._ciphers.fernet.rotate(token)
        except InvalidToken:
            raise DecryptionFailed(_TOKEN_FAILED) from None

    # -- rotation ----------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Re-read the stored keyring and use it if it changed (a rotation by another process)."""
        if self._load is None:
            return False
        async with self._lock:
            stored = await self._load()
            if stored is None:
                return False
            merged = stored.merged(self.keyring)
            if merged != stored and self._persist is not None:
                await self._persist(merged)  # heal: a key only this process still holds goes back
            if merged == self.keyring:
                return False
            self.install(merged)
            return True

    async def _latest(self) -> Keyring:
        if self._load is not None:
            stored = await self._load()
            if stored is not None:
                return stored.merged(self.keyring)
        return self.keyring

    async def rotate(self, *, actor: str | None = None) -> str:
        """Make a new current key (older keys stay, so old ciphertexts still decrypt); its id.

        The new keyring is persisted before it is used: a ciphertext is never made
        under a key that a restart would not have.  ``actor`` is who asked, for the audit log.
        """
        async with self._lock:
            latest = await self._latest()
            rotated = latest.rotated(self.clock.now())
            if self._persist is not None:
                await self._persist(rotated)
            self.install(rotated)
        if self._notify is not None:
            details = {"key_id": rotated.current.id, "previous": latest.current.id, "keys": len(rotated.keys)}
            await self._notify("crypto.key.rotated", actor, details)
        return rotated.current.id

    async def retire(self, key_id: str, *, actor: str | None = None) -> None:
        """Drop an old key for good: ciphertexts and tokens under it no longer decrypt.

        :raises KeyNotFound: no such key.  :raises CryptoError: it is the current key.
        """
        async with self._lock:
            latest = await self._latest()
            smaller = latest.without(key_id)
            if self._persist is not None:
                await self._persist(smaller)
            self.install(smaller)
        if self._notify is not None:
            await self._notify("crypto.key.retired", actor, {"key_id": key_id, "keys": len(smaller.keys)})
