"""The encrypted file behind the ``secrets`` service, and where its master key comes from.

File format (``secrets.enc``, all integers unsigned)::

    offset  size  field
    0       4     magic b"OKSS" (Orion Kernel Secret Store)
    4       1     format version, 1
    5       1     key derivation: 0 = HKDF-SHA256 of a 32-byte master key, 1 = scrypt of a passphrase
    6       1     scrypt log2(N)   (0 for HKDF)
    7       1     scrypt r         (0 for HKDF)
    8       1     scrypt p         (0 for HKDF)
    9       16    salt, random per store (kept across writes)
    25      12    nonce, random per write
    37      ...   AES-256-GCM ciphertext || 16-byte tag

The whole file is one AEAD message: the 25 header bytes are its associated
data and the plaintext is the JSON object ``{"secrets": {name: value}}``, so
changing any byte of the file (a value, a name, the header, the nonce, the
length) fails authentication and is reported as
:class:`~plugin_sdk.DecryptionFailed`, never decrypted into garbage.

Everything here is synchronous and blocking (file I/O, fsync, scrypt); the
plugin runs it in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import os
import re
import secrets
import stat
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from typing import Final
from typing import Literal
from typing import TypeVar

import attrs
import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from plugin_sdk import DecryptionFailed
from plugin_sdk import OrionError
from plugin_sdk import PluginError
from plugin_sdk import fsync_dir
from plugin_sdk import write_file_atomic as write_atomic

T = TypeVar("T")

MAGIC: Final = b"OKSS"
FORMAT: Final = 1
KDF_HKDF: Final = 0
KDF_SCRYPT: Final = 1
SALT_SIZE: Final = 16
NONCE_SIZE: Final = 12
HEADER_SIZE: Final = 4 + 1 + 1 + 3 + SALT_SIZE  # 25
TAG_SIZE: Final = 16
KEY_SIZE: Final = 32
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
MIN_PASSPHRASE: Final = 16
_HKDF_INFO: Final = b"orion-kernel secret store v1"
STORE_FILE: Final = "secrets.enc"

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

KEYGEN_HINT: Final = "orion-kernel secrets keygen --out PATH"


class InvalidSecretName(OrionError, ValueError):
    """A secret name that is not ``[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`` (or holds ``..``)."""

    def __init__(self, name: object, reason: str) -> None:
        shown = repr(name) if isinstance(name, str) and len(name) <= 64 else f"a {type(name).__name__}"
        super().__init__(f"invalid secret name {shown}: {reason}")
        self.reason = reason


class MasterKeyError(PluginError):
    """No usable master key: missing, malformed, or a key file others can read."""

    def __init__(self, message: str) -> None:
        super().__init__(f"secrets: {message}", plugin="secrets")


def check_name(name: object) -> str:
    """``name`` if it is a valid secret name.

    :raises InvalidSecretName: not a string; empty or longer than 128; a character
        outside ``A-Z a-z 0-9 _ . -``; not starting with a letter or digit; ``..``.
    """
    if not isinstance(name, str):
        raise InvalidSecretName(name, f"expected a string, got {type(name).__name__}")
    if not _NAME.fullmatch(name):
        raise InvalidSecretName(
            name,
            "use 1 to 128 of the characters A-Z a-z 0-9 _ . -, starting with a letter or digit "
            "(no '/', '\\', spaces or other characters)",
        )
    if ".." in name:
        raise InvalidSecretName(name, "'..' is not allowed")
    return name


# -- the master key --------------------------------------------------------------------------------


@attrs.frozen(repr=False)
class MasterKey:
    """Key material and where it came from; ``repr`` shows only the source."""

    kind: Literal["key", "passphrase"]
    material: bytes = attrs.field(repr=False)
    #: e.g. ``environment variable ORION_SECRETS_KEY`` or ``key file /etc/orion/secrets.key``
    source: str

    def __repr__(self) -> str:
        return f"MasterKey(kind={self.kind!r}, source={self.source!r}, material=<redacted>)"

    __str__ = __repr__


def decode_key(text: str) -> bytes | None:
    """The 32 bytes a base64 (standard or URL-safe, padding optional) text encodes, else None."""
    text = text.strip()
    padded = text + "=" * (-len(text) % 4)
    for altchars in (None, b"-_"):
        try:
            raw = base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(raw) == KEY_SIZE:
            return raw
    return None


def encode_key(raw: bytes) -> str:
    """A key file's text: URL-safe base64 of the key and a newline."""
    return base64.urlsafe_b64encode(raw).decode("ascii") + "\n"


def parse_key_text(text: str, source: str) -> MasterKey:
    """A master key from an environment variable's value: a base64 32-byte key, else a passphrase.

    :raises MasterKeyError: a passphrase shorter than 16 characters.
    """
    raw = decode_key(text)
    if raw is not None:
        return MasterKey("key", raw, source)
    if len(text) < MIN_PASSPHRASE:
        raise MasterKeyError(
            f"the master key in {source} is neither a base64-encoded 32-byte key nor a passphrase of at least "
            f"{MIN_PASSPHRASE} characters (make a key with `orion-kernel secrets keygen`)"
        )
    return MasterKey("passphrase", text.encode("utf-8"), source)


def key_file_path(setting: str, data_dir: Path) -> Path:
    """The key file a ``master_key_file`` setting names: ``~`` expanded, relative to ``data_dir``."""
    path = Path(os.path.expanduser(setting))
    return path if path.is_absolute() else data_dir / path


def read_key_file(path: Path) -> MasterKey:
    """The key in a key file, refusing one that group or others may read.

    :raises MasterKeyError: missing, not a regular file, readable by others, or not a key.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise MasterKeyError(
            f"the master key file {path} does not exist; create one with `orion-kernel secrets keygen --out {path}`"
        ) from None
    except OSError as exc:
        raise MasterKeyError(f"cannot read the master key file {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise MasterKeyError(f"the master key file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise MasterKeyError(
            f"the master key file {path} is accessible by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"make it private: chmod 600 {path}"
        )
    try:
        with open(path, "rb") as handle:
            content = handle.read(4096)
    except OSError as exc:
        raise MasterKeyError(f"cannot read the master key file {path}: {exc.strerror or exc}") from None
    raw: bytes | None = None
    with contextlib.suppress(UnicodeDecodeError):
        raw = decode_key(content.decode("ascii"))
    if raw is None and len(content) == KEY_SIZE:
        raw = content  # 32 raw bytes
    if raw is None:
        raise MasterKeyError(
            f"the master key file {path} does not hold a key (expected base64 of 32 bytes, as written by "
            f"`orion-kernel secrets keygen`)"
        )
    return MasterKey("key", raw, f"key file {path}")


def write_key_file(path: Path) -> None:
    """Create ``path`` (mode 0600, never overwriting) holding a new random key.

    :raises FileExistsError: ``path`` exists.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(encode_key(secrets.token_bytes(KEY_SIZE)))
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    fsync_dir(path.parent)


def no_key_message(env_name: str) -> str:
    return (
        f"no master key: set the environment variable {env_name} to a key made by `orion-kernel secrets keygen` "
        f"(or a passphrase of at least {MIN_PASSPHRASE} characters), or point "
        f"plugins.secrets.settings.master_key_file at a key file made by `{KEYGEN_HINT}`"
    )


def resolve_master_key(
    *, key_file: str, env_name: str, create_key_file: bool, data_dir: Path, environ: Mapping[str, str]
) -> tuple[MasterKey, bool]:
    """The master key from ``key_file`` when set, else from the environment variable ``env_name``.

    :returns: the key and whether a key file was created for it.
    :raises MasterKeyError: no key, or an unusable one (the message says how to provide one).
    """
    if key_file:
        path = key_file_path(key_file, data_dir)
        created = False
        if create_key_file and not path.exists():
            with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
                write_key_file(path)
                created = True
        return read_key_file(path), created
    value = environ.get(env_name)
    if value is None or not value.strip():
        raise MasterKeyError(no_key_message(env_name))
    return parse_key_text(value, f"environment variable {env_name}"), False


# -- files -----------------------------------------------------------------------------------------


Fingerprint = tuple[int, int, int, int]


def fingerprint(path: Path) -> Fingerprint | None:
    """What changes whenever the file is replaced or written: device, inode, mtime, size."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)


def _wrong_key(path: Path, detail: str = "") -> DecryptionFailed:
    return DecryptionFailed(
        f"cannot decrypt the secret store {path}: wrong master key or tampered file"
        + (f" ({detail})" if detail else "")
    )


class SecretFile:
    """The store's file and its decrypted contents, kept in step with the disk.

    Every method blocks; the plugin calls them from a worker thread and never
    two at once (an ``anyio.Lock``).  Writers in other processes (``orion-kernel
    secrets set`` while a kernel runs) are serialised with an ``flock`` on
    ``secrets.enc.lock``, and each side reloads when the file's fingerprint changed.
    """

    def __init__(self, path: Path, master: MasterKey, *, scrypt_log_n: int = 15) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self._master = master
        self._scrypt_log_n = scrypt_log_n
        self._header: bytes | None = None
        self._aead: AESGCM | None = None
        self._loaded: Fingerprint | None = None
        #: name -> value, as last read or written
        self.secrets: dict[str, str] = {}
        #: whether the file had permissive mode bits when it was last read
        self.loose_mode = False

    def __repr__(self) -> str:
        return f"<SecretFile {str(self.path)!r}: {len(self.secrets)} secret(s)>"

    # -- keys --

    def _new_header(self) -> bytes:
        salt = os.urandom(SALT_SIZE)
        if self._master.kind == "key":
            return MAGIC + bytes([FORMAT, KDF_HKDF, 0, 0, 0]) + salt
        return MAGIC + bytes([FORMAT, KDF_SCRYPT, self._scrypt_log_n, SCRYPT_R, SCRYPT_P]) + salt

    def _aead_for(self, header: bytes) -> AESGCM:
        if self._aead is not None and header == self._header:
            return self._aead
        kdf, log_n, r, p = header[5], header[6], header[7], header[8]
        salt = header[9:HEADER_SIZE]
        if kdf == KDF_HKDF:
            if self._master.kind != "key":
                raise _wrong_key(
                    self.path, "the store was made with a 32-byte key, the master key given is a passphrase"
                )
            key = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=_HKDF_INFO).derive(
                self._master.material
            )
        elif kdf == KDF_SCRYPT:
            if self._master.kind != "passphrase":
                raise _wrong_key(
                    self.path, "the store was made with a passphrase, the master key given is a 32-byte key"
                )
            if not (10 <= log_n <= 24 and 1 <= r <= 32 and 1 <= p <= 16):
                raise _wrong_key(self.path, "implausible scrypt parameters in the header")
            key = Scrypt(salt=salt, length=KEY_SIZE, n=2**log_n, r=r, p=p).derive(self._master.material)
        else:
            raise _wrong_key(self.path, f"unknown key derivation {kdf}")
        self._header, self._aead = header, AESGCM(key)
        return self._aead

    # -- reading --

    def changed(self) -> bool:
        """Whether the file on disk is not the one last read or written (a cheap ``stat``)."""
        return fingerprint(self.path) != self._loaded

    def load(self) -> None:
        """Read and decrypt the file (an empty store when there is none).

        :raises DecryptionFailed: wrong master key, or any byte of the file changed.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._loaded = None
            self.secrets = {}
            if self._header is None:
                self._aead_for(self._new_header())
            return
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            blob = handle.read()
        self.loose_mode = bool(info.st_mode & 0o077)
        self.secrets = self._decrypt(blob)
        self._loaded = (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)

    def reload_if_changed(self) -> bool:
        """:meth:`load` when :meth:`changed`; whether it did."""
        if not self.changed():
            return False
        self.load()
        return True

    def _decrypt(self, blob: bytes) -> dict[str, str]:
        if len(blob) < HEADER_SIZE + NONCE_SIZE + TAG_SIZE:
            raise _wrong_key(self.path, f"{len(blob)} bytes is too short for a secret store")
        header = blob[:HEADER_SIZE]
        if header[:4] != MAGIC:
            raise _wrong_key(self.path, "not an Orion Kernel secret store")
        if header[4] != FORMAT:
            raise _wrong_key(self.path, f"unknown format version {header[4]}")
        aead = self._aead_for(header)
        nonce = blob[HEADER_SIZE : HEADER_SIZE + NONCE_SIZE]
        try:
            plain = aead.decrypt(nonce, blob[HEADER_SIZE + NONCE_SIZE :], header)
        except InvalidTag:
            raise _wrong_key(self.path) from None
        try:
            data = orjson.loads(plain)
        except orjson.JSONDecodeError:
            data = None
        found = data.get("secrets") if isinstance(data, dict) else None
        if not isinstance(found, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in found.items()):
            raise DecryptionFailed(f"the secret store {self.path} decrypted, but does not hold a store")
        return found

    # -- writing --

    def mutate(self, change: Callable[[dict[str, str]], tuple[bool, T]]) -> T:
        """Apply ``change`` to a copy of the latest contents and write it back, durably.

        ``change`` returns ``(write, result)``; nothing is written when ``write`` is
        false.  Holds the cross-process lock throughout and reloads first if another
        process wrote the file.
        """
        lock = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.reload_if_changed()
            draft = dict(self.secrets)
            write, result = change(draft)
            if write:
                self._write(draft)
            return result
        finally:
            os.close(lock)  # releases the flock

    def _write(self, contents: dict[str, str]) -> None:
        header = self._header
        if header is None:  # load() always sets one; be safe
            header = self._new_header()
        aead = self._aead_for(header)
        nonce = os.urandom(NONCE_SIZE)
        plain = orjson.dumps({"secrets": contents}, option=orjson.OPT_SORT_KEYS)
        write_atomic(self.path, header + nonce + aead.encrypt(nonce, plain, header))
        self.secrets = contents
        self._loaded = fingerprint(self.path)
        self.loose_mode = False
