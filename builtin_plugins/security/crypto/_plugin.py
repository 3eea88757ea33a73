"""The ``crypto`` plugin: the ``encryptor`` service over a rotating keyring.

The keyring is generated on first start and kept in the secret store as
``crypto.keyring`` (when the ``secrets`` service runs) or in a 0600 file
``keyring.json`` in the plugin's data directory.  When the keyring lives in
the secret store, ``keyring.json`` holds only a pointer saying so, so that a
kernel started later without the secrets plugin refuses to start instead of
silently generating a new keyring (which would strand every old ciphertext).
A keyring found in the file when the secret store is first used is moved
into the store.
"""

from __future__ import annotations

import base64
import binascii
import datetime
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from typing import ClassVar
from typing import Final

import anyio
import anyio.to_thread
import orjson

from plugin_sdk import OPERATOR
from plugin_sdk import CliCommand
from plugin_sdk import Clock
from plugin_sdk import ConfigIssue
from plugin_sdk import HealthStatus
from plugin_sdk import InvalidArguments
from plugin_sdk import Invocation
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginError
from plugin_sdk import Principal
from plugin_sdk import SecretNotFound
from plugin_sdk import SecretStore
from plugin_sdk import ServiceUnavailable
from plugin_sdk import SystemClock
from plugin_sdk import hookimpl
from plugin_sdk import record_audit
from plugin_sdk import require_kind
from plugin_sdk import write_file_atomic as write_atomic

from ._cli import keys_command
from ._config import CryptoSettings
from ._keyring import Keyring
from ._keyring import KeyringCipher
from ._keyring import KeyringFormatError

#: the keyring's name in the secret store (in the plugin's own namespace)
KEYRING_SECRET: Final = "crypto.keyring"
KEYRING_FILE: Final = "keyring.json"
_POINTER: Final = {"format": 1, "stored_in": "secrets", "name": KEYRING_SECRET}


class FileKeyring:
    """``keyring.json``: a keyring, or a pointer to the secret store, or nothing yet."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> tuple[str, Keyring | None]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return "none", None
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise KeyringFormatError(f"the keyring file {self.path} is not JSON") from None
        if isinstance(parsed, dict) and parsed.get("stored_in") == "secrets":
            return "pointer", None
        return "keyring", Keyring.from_json(data, where=str(self.path))

    async def read(self) -> tuple[str, Keyring | None]:
        """``("none", None)``, ``("pointer", None)`` or ``("keyring", keyring)``."""
        return await anyio.to_thread.run_sync(self._read)

    async def load(self) -> Keyring | None:
        return (await self.read())[1]

    async def save(self, keyring: Keyring) -> None:
        await anyio.to_thread.run_sync(write_atomic, self.path, keyring.to_json())

    async def save_pointer(self) -> None:
        await anyio.to_thread.run_sync(write_atomic, self.path, orjson.dumps(_POINTER))


class SecretsKeyring:
    """The keyring as the secret ``crypto.keyring``, through the ``secrets`` service."""

    def __init__(self, ctx: PluginContext[Any]) -> None:
        self._ctx = ctx

    def _store(self) -> SecretStore:
        store: SecretStore = self._ctx.service("secrets")  # looked up each time: survives a secrets reload
        return store

    async def load(self) -> Keyring | None:
        try:
            text = await self._store().get(KEYRING_SECRET)
        except SecretNotFound:
            return None
        return Keyring.from_json(text, where=f"the secret store ({KEYRING_SECRET})")

    async def save(self, keyring: Keyring) -> None:
        await self._store().set(KEYRING_SECRET, keyring.to_json().decode("ascii"))


def _iso(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, tz=datetime.UTC).isoformat().replace("+00:00", "Z")


def _b64_arg(inv: Invocation, args: Mapping[str, Any], key: str, *, required: bool) -> bytes:
    if key not in args:
        if required:
            raise InvalidArguments(inv.operation, [ConfigIssue(f"args.{key}", "missing (base64 text)")])
        return b""
    value = args[key]
    if not isinstance(value, str):
        raise InvalidArguments(
            inv.operation, [ConfigIssue(f"args.{key}", f"expected base64 text, got {type(value).__name__}")]
        )
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArguments(inv.operation, [ConfigIssue(f"args.{key}", "not valid base64")]) from None


def _only(inv: Invocation, allowed: tuple[str, ...]) -> dict[str, Any]:
    args = dict(inv.args)
    extra = [key for key in args if key not in allowed]
    if extra:
        raise InvalidArguments(
            inv.operation,
            [
                ConfigIssue(f"args.{key}", f"unexpected argument (allowed: {', '.join(allowed) or 'none'})")
                for key in extra
            ],
        )
    return args


class Crypto(Plugin):
    """AES-256-GCM envelope encryption and Fernet tokens with key rotation: the ``encryptor`` service.

    Admin operations ``crypto.keys.rotate``, ``crypto.keys.list``, ``crypto.keys.retire``,
    ``crypto.reencrypt``; CLI ``orion-kernel keys list|rotate|retire``.
    """

    name = "crypto"
    version = "1.0.0"
    optional = ("secrets", "audit")
    provides = ("encryptor",)
    Config = CryptoSettings

    conformance_settings: ClassVar[Mapping[str, Any]] = {"keyring": "file"}
    conformance_principal: ClassVar[Principal | None] = OPERATOR  # its operations are admin-only
    conformance_bad_settings: ClassVar[tuple[Mapping[str, Any], ...]] = (
        {"keyring": "vault"},
        {"refresh_interval": -1.0},
        {"admin_kinds": ["has space"]},
    )

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._ctx: PluginContext[CryptoSettings] | None = None
        self._cipher: KeyringCipher | None = None
        self._where = ""

    def __repr__(self) -> str:
        return f"<Crypto plugin {self.name!r} {self.version}>"

    async def start(self, ctx: PluginContext[CryptoSettings]) -> None:
        settings = ctx.settings
        file = FileKeyring(Path(ctx.data_dir) / KEYRING_FILE)
        use_secrets = False
        if settings.keyring != "file":
            try:
                ctx.service("secrets")
                use_secrets = True
            except ServiceUnavailable:
                if settings.keyring == "secrets":
                    raise PluginError(
                        "crypto: keyring = 'secrets', but the secrets service is not available (the secrets plugin "
                        "is disabled or failed to start): enable it ([plugins.secrets] enabled = true, with a "
                        "master key)",
                        plugin=self.name,
                    ) from None
        state, from_file = await file.read()
        if use_secrets:
            store = SecretsKeyring(ctx)
            keyring = await store.load()
            if keyring is None and from_file is not None:
                keyring = from_file
                await store.save(keyring)
                ctx.log.warning(
                    "crypto: moved the keyring from %s into the secret store (%s)", file.path, KEYRING_SECRET
                )
            elif keyring is None:
                keyring = Keyring.generate(self.clock.now())
                await store.save(keyring)
                ctx.log.info("crypto: generated a new keyring (key %s) in the secret store", keyring.current.id)
            if state != "pointer":
                await file.save_pointer()  # replaces a plaintext keyring once it is in the store
            load, persist, where = store.load, store.save, f"the secret store ({KEYRING_SECRET})"
        else:
            if state == "pointer":
                raise PluginError(
                    f"crypto: the keyring is kept in the secret store ({file.path} says so), but the secrets service "
                    "is not available (the secrets plugin is disabled or failed to start); starting without it would "
                    "make a new keyring and leave every existing ciphertext undecryptable",
                    plugin=self.name,
                )
            keyring = from_file
            if keyring is None:
                keyring = Keyring.generate(self.clock.now())
                await file.save(keyring)
                ctx.log.info("crypto: generated a new keyring (key %s) in %s", keyring.current.id, file.path)
            level = "info" if settings.keyring == "file" else "warning"
            getattr(ctx.log, level)(
                "crypto: the keyring is stored unencrypted in %s (mode 0600); enable the secrets plugin to keep it "
                "encrypted at rest",
                file.path,
            )
            load, persist, where = file.load, file.save, str(file.path)
        self._cipher = KeyringCipher(keyring, clock=self.clock, persist=persist, load=load, notify=self._audit)
        self._ctx, self._where = ctx, where
        ctx.provide("encryptor", self._cipher)
        ctx.register_operation(
            "crypto.keys.rotate", self._op_rotate, doc="Make a new current key; old keys stay (admin)."
        )
        ctx.register_operation(
            "crypto.keys.list", self._op_list, doc="Key ids and creation times, current first (admin).", example_args={}
        )
        ctx.register_operation("crypto.keys.retire", self._op_retire, doc="Drop an old key for good (admin).")
        ctx.register_operation(
            "crypto.reencrypt", self._op_reencrypt, doc="Re-encrypt a base64 ciphertext under the current key (admin)."
        )
        if settings.refresh_interval > 0:
            ctx.spawn(self._refresh_loop, settings.refresh_interval, name="crypto keyring refresh")

    async def stop(self) -> None:
        self._ctx = None
        self._cipher = None

    def _running(self) -> KeyringCipher:
        """The service object (while running)."""
        if self._cipher is None:
            raise PluginError("crypto: the plugin is not running", plugin=self.name)
        return self._cipher

    async def _refresh_loop(self, interval: float) -> None:
        failing: str | None = None
        while True:
            await self.clock.sleep(interval)
            cipher, ctx = self._cipher, self._ctx
            if cipher is None or ctx is None:
                return
            try:
                if await cipher.refresh():
                    ctx.log.info("crypto: picked up a changed keyring: %s", ", ".join(cipher.key_ids()))
            except Exception as exc:  # keep serving with the keyring held; say why once per kind of failure
                why = f"{type(exc).__name__}: {exc}"
                if why != failing:
                    ctx.log.warning("crypto: cannot re-read the keyring from %s: %s", self._where, why)
                failing = why
            else:
                failing = None

    async def _audit(self, action: str, actor: str | None, details: dict[str, Any]) -> None:
        ctx = self._ctx
        if ctx is None:
            return
        ctx.log.info("crypto: %s by %s: %s", action, actor or "a plugin", details)  # ids only, never material
        await record_audit(ctx, action, actor=actor, outcome="ok", details=details)

    # -- admin operations ------------------------------------------------------------------

    def _admin(self, inv: Invocation) -> str:
        if self._ctx is None:
            raise PluginError("crypto: the plugin is not running", plugin=self.name)
        return require_kind(inv, self._ctx.settings.admin_kinds, setting="plugins.crypto.settings.admin_kinds").id

    async def _op_rotate(self, inv: Invocation) -> dict[str, Any]:
        """Make a new current key: ``{}`` -> ``{"key_id", "key_ids"}``."""
        actor = self._admin(inv)
        _only(inv, ())
        key_id = await self._running().rotate(actor=actor)
        return {"key_id": key_id, "key_ids": list(self._running().key_ids())}

    async def _op_list(self, inv: Invocation) -> list[dict[str, Any]]:
        """``[{"id", "created" (ISO 8601, UTC), "current"}]``, current first; never key material."""
        self._admin(inv)
        _only(inv, ())
        return [{**key, "created": _iso(key["created"])} for key in self._running().key_info()]

    async def _op_retire(self, inv: Invocation) -> dict[str, Any]:
        """Drop an old key: ``{"key_id"}``; what it encrypted no longer decrypts."""
        actor = self._admin(inv)
        args = _only(inv, ("key_id",))
        key_id = args.get("key_id")
        if not isinstance(key_id, str):
            raise InvalidArguments(inv.operation, [ConfigIssue("args.key_id", "missing or not a string")])
        await self._running().retire(key_id, actor=actor)
        return {"retired": key_id, "key_ids": list(self._running().key_ids())}

    async def _op_reencrypt(self, inv: Invocation) -> dict[str, Any]:
        """``{"ciphertext": b64, "associated_data"?: b64}`` -> ``{"ciphertext": b64, "key_id"}`` under the current key."""
        self._admin(inv)
        args = _only(inv, ("ciphertext", "associated_data"))
        ciphertext = _b64_arg(inv, args, "ciphertext", required=True)
        associated = _b64_arg(inv, args, "associated_data", required=False)
        fresh = self._running().reencrypt(ciphertext, associated_data=associated)
        return {"ciphertext": base64.b64encode(fresh).decode("ascii"), "key_id": self._running().key_id_of(fresh)}

    # -- hooks -------------------------------------------------------------------------------

    @hookimpl
    def cli_commands(self) -> list[CliCommand]:
        """``orion-kernel keys list|rotate|retire``."""
        return [keys_command()]

    @hookimpl
    async def check_health(self) -> HealthStatus:
        cipher = self._cipher
        if cipher is None:
            return HealthStatus(ok=False, reason="not running")
        ids = cipher.key_ids()
        return HealthStatus(ok=True, reason=f"{len(ids)} key(s), current {ids[0]}, keyring in {self._where}")
