"""The ``crypto`` plugin: envelope layout and failure modes, Fernet interop and spec vectors,
rotation, the keyring's storage (secret store or file), admin operations, audit and the CLI.

The cipher is tested directly (``KeyringCipher`` over a ``Keyring``), then end to
end through ``Kernel`` with and without the real ``secrets`` plugin.
"""

from __future__ import annotations

import base64
import datetime
import io
import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from cryptography.fernet import Fernet
from cryptography.fernet import MultiFernet
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from builtin_plugins.security.crypto import OVERHEAD
from builtin_plugins.security.crypto import Crypto
from builtin_plugins.security.crypto import KeyEntry
from builtin_plugins.security.crypto import Keyring
from builtin_plugins.security.crypto import KeyringCipher
from builtin_plugins.security.crypto import KeyringFormatError
from kernel import Kernel
from kernel._cli import main
from plugin_sdk import OPERATOR
from plugin_sdk import AuditVerification
from plugin_sdk import ConfigError
from plugin_sdk import CryptoError
from plugin_sdk import DecryptionFailed
from plugin_sdk import Encryptor
from plugin_sdk import InvalidArguments
from plugin_sdk import KeyNotFound
from plugin_sdk import PermissionDenied
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginStartError
from plugin_sdk import PluginState
from plugin_sdk import Principal

CANARY = b"canary-plaintext-9c4b1a"
SECRETS_KEY = base64.urlsafe_b64encode(b"S" * 32).decode()


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


def cipher(clock: FakeClock | None = None) -> KeyringCipher:
    return KeyringCipher(Keyring.generate(1_700_000_000.0), clock=clock)


# -- the envelope ---------------------------------------------------------------------------------


def test_round_trip_and_the_documented_layout() -> None:
    enc = cipher()
    for plaintext in (b"", b"x", CANARY, os.urandom(70_000)):
        for aad in (b"", b"tenant=42"):
            sealed = enc.encrypt(plaintext, associated_data=aad)
            assert len(sealed) == len(plaintext) + OVERHEAD == len(plaintext) + 33
            assert enc.decrypt(sealed, associated_data=aad) == plaintext
    sealed = enc.encrypt(CANARY, associated_data=b"ctx")
    key = enc.keyring.current
    assert sealed[0] == 0x01 and sealed[1:5] == bytes.fromhex(key.id)
    nonce, body = sealed[5:17], sealed[17:]
    assert AESGCM(key.aes).decrypt(nonce, body, sealed[:5] + b"ctx") == CANARY  # raw AESGCM reads it
    assert enc.encrypt(CANARY) != enc.encrypt(CANARY)  # a random nonce per message
    assert enc.key_id_of(sealed) == key.id
    assert bytearray(CANARY) and enc.decrypt(enc.encrypt(bytearray(CANARY))) == CANARY  # bytes-like works


def test_an_encryptor_protocol_object() -> None:
    assert isinstance(cipher(), Encryptor)


SEALED_CIPHER = cipher()
SEALED = SEALED_CIPHER.encrypt(CANARY, associated_data=b"aad")


@settings(max_examples=300, deadline=None)
@given(index=st.integers(min_value=0, max_value=len(SEALED) - 1), flip=st.integers(min_value=1, max_value=255))
def test_flipping_any_byte_is_a_typed_error(index: int, flip: int) -> None:
    tampered = bytearray(SEALED)
    tampered[index] ^= flip
    expected: tuple[type[CryptoError], ...] = (
        (KeyNotFound, DecryptionFailed) if 1 <= index <= 4 else (DecryptionFailed,)
    )
    with pytest.raises(expected) as failed:
        SEALED_CIPHER.decrypt(bytes(tampered), associated_data=b"aad")
    if 1 <= index <= 4:  # the key id field: unknown id (or another key's id, which then fails to authenticate)
        assert isinstance(failed.value, KeyNotFound) or "did not authenticate" in str(failed.value)
    assert CANARY.decode() not in str(failed.value)


def test_every_truncation_is_decryption_failed() -> None:
    for length in range(len(SEALED)):
        with pytest.raises(DecryptionFailed):
            SEALED_CIPHER.decrypt(SEALED[:length], associated_data=b"aad")
    with pytest.raises(DecryptionFailed):
        SEALED_CIPHER.decrypt(SEALED + b"\x00", associated_data=b"aad")


@settings(max_examples=100, deadline=None)
@given(plaintext=st.binary(max_size=300), aad=st.binary(max_size=40), other=st.binary(max_size=40))
def test_wrong_associated_data_fails(plaintext: bytes, aad: bytes, other: bytes) -> None:
    sealed = SEALED_CIPHER.encrypt(plaintext, associated_data=aad)
    assert SEALED_CIPHER.decrypt(sealed, associated_data=aad) == plaintext
    if other != aad:
        with pytest.raises(DecryptionFailed):
            SEALED_CIPHER.decrypt(sealed, associated_data=other)


def test_unknown_version_wrong_key_and_unknown_key_id() -> None:
    with pytest.raises(DecryptionFailed, match="unknown envelope version 0x02"):
        SEALED_CIPHER.decrypt(b"\x02" + SEALED[1:], associated_data=b"aad")
    stranger = cipher()
    with pytest.raises(KeyNotFound, match=SEALED_CIPHER.key_ids()[0]):
        stranger.decrypt(SEALED, associated_data=b"aad")
    current = SEALED_CIPHER.keyring.current
    impostor = KeyringCipher(Keyring((KeyEntry(current.id, 0.0, os.urandom(32), Fernet.generate_key()),)))
    with pytest.raises(DecryptionFailed, match="did not authenticate") as failed:
        impostor.decrypt(SEALED, associated_data=b"aad")  # same key id, other material: a wrong key
    message = str(failed.value)
    for secret in (current.aes.hex(), base64.b64encode(current.aes).decode(), CANARY.decode()):
        assert secret not in message
    with pytest.raises(TypeError, match="must be bytes, got str"):
        SEALED_CIPHER.encrypt("text")  # type: ignore[arg-type]


# -- rotation ---------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_rotation_keeps_old_ciphertexts_readable_until_retired() -> None:
    clock = FakeClock()
    enc = cipher(clock)
    first = enc.key_ids()[0]
    old = enc.encrypt(CANARY, associated_data=b"a")
    old_token = enc.encrypt_token(CANARY)
    clock.t += 10
    second = await enc.rotate()
    assert list(enc.key_ids()) == [second, first]
    assert enc.key_info()[0] == {"id": second, "created": clock.t, "current": True}
    assert enc.decrypt(old, associated_data=b"a") == CANARY
    assert enc.decrypt_token(old_token) == CANARY
    moved = enc.reencrypt(old, associated_data=b"a")
    assert enc.key_id_of(moved) == second and enc.decrypt(moved, associated_data=b"a") == CANARY
    moved_token = enc.reencrypt_token(old_token)
    assert Fernet(enc.keyring.current.fernet).decrypt(moved_token) == CANARY
    assert Fernet(enc.keyring.current.fernet).extract_timestamp(moved_token) == int(clock.t - 10)  # time kept
    with pytest.raises(CryptoError, match="current key"):
        await enc.retire(second)
    with pytest.raises(KeyNotFound):
        await enc.retire("00000000")
    await enc.retire(first)
    assert list(enc.key_ids()) == [second]
    with pytest.raises(KeyNotFound, match="retired"):
        enc.decrypt(old, associated_data=b"a")
    with pytest.raises(DecryptionFailed):
        enc.decrypt_token(old_token)
    assert enc.decrypt(moved, associated_data=b"a") == CANARY


@pytest.mark.anyio
async def test_a_rotation_lost_to_a_concurrent_writer_is_healed_and_retirements_propagate() -> None:
    stored: dict[str, Keyring] = {}

    async def load() -> Keyring | None:
        return stored.get("ring")

    async def persist(ring: Keyring) -> None:
        stored["ring"] = ring

    ring = Keyring.generate(1.0)
    stored["ring"] = ring
    a = KeyringCipher(ring, load=load, persist=persist)
    b = KeyringCipher(ring, load=load, persist=persist)
    x = await a.rotate()
    sealed = a.encrypt(CANARY)  # under x
    await persist(ring.rotated(2.0))  # b's stale write: the store forgets x
    assert x not in stored["ring"].ids()
    await a.refresh()  # a still holds x: it goes back into the store
    assert x in stored["ring"].ids()
    await b.refresh()
    assert b.decrypt(sealed) == CANARY
    await b.rotate()
    await b.retire(x)
    assert await a.refresh() and x not in a.key_ids()  # a deliberate retirement is not healed away
    assert x not in stored["ring"].ids() and x in stored["ring"].retired
    with pytest.raises(KeyNotFound):
        a.decrypt(sealed)


def test_keyring_json_round_trip_and_typed_format_errors() -> None:
    ring = Keyring.generate(1.0).rotated(2.0).rotated(3.0)
    ring = ring.without(ring.keys[1].id)
    again = Keyring.from_json(ring.to_json(), where="test")
    assert again == ring and again.ids() == ring.ids() and len(again.retired) == 1
    assert "material=<redacted>" in repr(ring.current) and ring.current.aes.hex() not in repr(ring.current)
    assert repr(ring) == f"Keyring(ids={ring.ids()!r})"
    data = orjson.loads(ring.to_json())
    for broken in (
        b"not json",
        b"[]",
        orjson.dumps({**data, "format": 9}),
        orjson.dumps({**data, "keys": []}),
        orjson.dumps({**data, "keys": [{**data["keys"][0], "aes": "AAAA"}]}),
        orjson.dumps({**data, "keys": [{**data["keys"][0], "id": "../x"}]}),
        orjson.dumps({**data, "keys": [{**data["keys"][0], "fernet": "short"}]}),
        orjson.dumps({**data, "keys": [data["keys"][0], data["keys"][0]]}),
        orjson.dumps({**data, "retired": ["nope"]}),
    ):
        with pytest.raises(KeyringFormatError) as failed:
            Keyring.from_json(broken, where="test")
        assert data["keys"][0]["aes"] not in str(failed.value)


# -- Fernet ------------------------------------------------------------------------------------------------

SPEC_SECRET = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4="
SPEC_TOKEN = "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA=="
#: github.com/fernet/spec invalid.json (version 0x80): (desc, token, now)
SPEC_INVALID = [
    (
        "incorrect mac",
        "gAAAAAAdwJ6xAAECAwQFBgcICQoLDA0OD3HkMATM5lFqGaerZ-fWPAl1-szkFVzXTuGb4hR8AKtwcaX1YdykQUFBQUFBQUFBQQ==",
        "1985-10-26T01:20:01-07:00",
    ),
    ("too short", "gAAAAAAdwJ6xAAECAwQFBgcICQoLDA0OD3HkMATM5lFqGaerZ-fWPA==", "1985-10-26T01:20:01-07:00"),
    (
        "invalid base64",
        "%%%%%%%%%%%%%AECAwQFBgcICQoLDA0OD3HkMATM5lFqGaerZ-fWPAl1-szkFVzXTuGb4hR8AKtwcaX1YdykRtfsH-p1YsUD2Q==",
        "1985-10-26T01:20:01-07:00",
    ),
    (
        "payload size not multiple of block size",
        "gAAAAAAdwJ6xAAECAwQFBgcICQoLDA0OD3HkMATM5lFqGaerZ-fWPOm73QeoCk9uGib28Xe5vz6oxq5nmxbx_v7mrfyudzUm",
        "1985-10-26T01:20:01-07:00",
    ),
    (
        "payload padding error",
        "gAAAAAAdwJ6xAAECAwQFBgcICQoLDA0ODz4LEpdELGQAad7aNEHbf-JkLPIpuiYRLQ3RtXatOYREu2FWke6CnJNYIbkuKNqOhw==",
        "1985-10-26T01:20:01-07:00",
    ),
    (
        "far-future TS (unacceptable clock skew)",
        "gAAAAAAdwStRAAECAwQFBgcICQoLDA0OD3HkMATM5lFqGaerZ-fWPAnja1xKYyhd-Y6mSkTOyTGJmw2Xc2a6kBd-iX9b_qXQcw==",
        "1985-10-26T01:20:01-07:00",
    ),
    (
        "expired TTL",
        "gAAAAAAdwJ6xAAECAwQFBgcICQoLDA0OD3HkMATM5lFqGaerZ-fWPAl1-szkFVzXTuGb4hR8AKtwcaX1YdykRtfsH-p1YsUD2Q==",
        "1985-10-26T01:21:31-07:00",
    ),
    (
        "incorrect IV (causes padding error)",
        "gAAAAAAdwJ6xBQECAwQFBgcICQoLDA0OD3HkMATM5lFqGaerZ-fWPAkLhFLHpGtDBRLRTZeUfWgHSv49TF2AUEZ1TIvcZjK1zQ==",
        "1985-10-26T01:20:01-07:00",
    ),
    ("trailing characters after b64 padding", SPEC_TOKEN + "trailingdata", "1985-10-26T01:20:01-07:00"),
    (
        "invalid characters in b64",
        "*gAAAAAAdwJ6wAAECAwQFBgcI!CQoLDA0ODy021?cpGVWKZ_eEwC@GM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==",
        "1985-10-26T01:20:01-07:00",
    ),
    (
        "invalid non-urlsafe characters in b64",
        "gAAAAAAdwJ6wAAEC/AwQFBgcICQoLDA0ODy+021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==",
        "1985-10-26T01:20:01-07:00",
    ),
]


def _epoch(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


def _spec_cipher(now: str) -> KeyringCipher:
    entry = KeyEntry("0000abcd", 0.0, os.urandom(32), SPEC_SECRET.encode())
    return KeyringCipher(Keyring((entry,)), clock=FakeClock(_epoch(now)))


def test_fernet_spec_generate_and_verify_vectors() -> None:
    # generate.json: made at 1985-10-26T01:20:00-07:00; verify.json: read 1 s later with ttl 60
    assert _spec_cipher("1985-10-26T01:20:01-07:00").decrypt_token(SPEC_TOKEN, ttl=60) == b"hello"
    assert _spec_cipher("2030-01-01T00:00:00+00:00").decrypt_token(SPEC_TOKEN.encode()) == b"hello"  # no ttl
    assert Fernet(SPEC_SECRET).extract_timestamp(SPEC_TOKEN) == _epoch("1985-10-26T01:20:00-07:00")


@pytest.mark.parametrize(("desc", "token", "now"), SPEC_INVALID, ids=[case[0] for case in SPEC_INVALID])
def test_fernet_spec_invalid_vectors(desc: str, token: str, now: str) -> None:
    with pytest.raises(DecryptionFailed):
        _spec_cipher(now).decrypt_token(token, ttl=60)


def test_fernet_interop_with_cryptography_and_ttl() -> None:
    clock = FakeClock()
    enc = cipher(clock)
    theirs = Fernet(enc.keyring.current.fernet)
    ours = enc.encrypt_token(CANARY)
    assert theirs.decrypt(ours) == CANARY
    assert theirs.extract_timestamp(ours) == int(clock.t)
    assert enc.decrypt_token(theirs.encrypt_at_time(b"from them", int(clock.t))) == b"from them"
    clock.t += 100
    assert enc.decrypt_token(ours, ttl=120) == CANARY
    with pytest.raises(DecryptionFailed, match="expired: 100 s old, ttl 60 s"):
        enc.decrypt_token(ours, ttl=60)
    future = theirs.encrypt_at_time(b"later", int(clock.t) + 3600)
    with pytest.raises(DecryptionFailed, match="in the future"):
        enc.decrypt_token(future, ttl=60)
    with pytest.raises(DecryptionFailed, match="invalid Fernet token"):
        enc.decrypt_token(Fernet(Fernet.generate_key()).encrypt(b"x"))
    with pytest.raises(DecryptionFailed):
        enc.decrypt_token(b"garbage")


@pytest.mark.anyio
async def test_fernet_rotation_matches_multifernet() -> None:
    enc = cipher()
    old_key = enc.keyring.current.fernet
    old_token = Fernet(old_key).encrypt(CANARY)
    await enc.rotate()
    multi = MultiFernet([Fernet(entry.fernet) for entry in enc.keyring.keys])
    assert multi.decrypt(enc.encrypt_token(b"new")) == b"new"
    assert Fernet(old_key).decrypt(old_token) == enc.decrypt_token(old_token) == CANARY
    with pytest.raises(Exception):  # noqa: B017 - cryptography's InvalidToken: the new token is not under the old key
        Fernet(old_key).decrypt(enc.encrypt_token(b"new"))
    assert multi.decrypt(enc.reencrypt_token(old_token)) == CANARY


# -- end to end --------------------------------------------------------------------------------------------


class User(Plugin):
    """A consumer of the encryptor."""

    name = "user"
    version = "1.0.0"
    requires = ("encryptor",)

    async def start(self, ctx: PluginContext[Any]) -> None:
        self.ctx = ctx

    @property
    def encryptor(self) -> KeyringCipher:
        service: KeyringCipher = self.ctx.service("encryptor")
        return service


class FakeAudit(Plugin):
    name = "fake_audit"
    version = "1.0.0"
    provides = ("audit",)

    def __init__(self) -> None:
        self.records: list[tuple[str, str | None, str, dict[str, Any]]] = []

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.provide("audit", self)

    async def record(
        self, action: str, *, actor: str | None, outcome: str, details: Mapping[str, Any] | None = None
    ) -> int:
        self.records.append((action, actor, outcome, dict(details or {})))
        return len(self.records)

    async def verify(self) -> AuditVerification:
        return AuditVerification(ok=True, entries=len(self.records))


def config(
    data: Path, *, with_secrets: bool, settings: Mapping[str, Any] | None = None, strict: bool = True
) -> dict[str, Any]:
    plugins: dict[str, Any] = {"crypto": {"enabled": True, "settings": dict(settings or {})}}
    if with_secrets:
        plugins["secrets"] = {"enabled": True}
    return {"kernel": {"data_dir": str(data), "strict": strict}, "plugins": plugins}


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ORION_SECRETS_KEY", SECRETS_KEY)
    return tmp_path / "data"


def keyring_file(data: Path) -> Path:
    return data / "crypto" / "keyring.json"


@pytest.mark.anyio
async def test_without_secrets_the_keyring_is_a_private_file_and_survives_restarts(
    data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    user = User()
    async with Kernel(config(data, with_secrets=False), plugins=[user], environ={}):
        assert isinstance(user.encryptor, Encryptor)
        sealed = user.encryptor.encrypt(CANARY, associated_data=b"row-1")
        token = user.encryptor.encrypt_token(CANARY)
        first = list(user.encryptor.key_ids())
    assert "stored unencrypted" in caplog.text
    path = keyring_file(data)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Keyring.from_json(path.read_bytes(), where="test").ids() == first
    user = User()
    async with Kernel(config(data, with_secrets=False), plugins=[user], environ={}):
        assert list(user.encryptor.key_ids()) == first
        assert user.encryptor.decrypt(sealed, associated_data=b"row-1") == CANARY
        assert user.encryptor.decrypt_token(token) == CANARY


@pytest.mark.anyio
async def test_with_secrets_the_keyring_is_encrypted_in_the_store_and_survives_restarts(data: Path) -> None:
    user = User()
    async with Kernel(config(data, with_secrets=True), plugins=[user], environ={}) as kernel:
        assert kernel.plugins["crypto"].state is PluginState.RUNNING
        sealed = user.encryptor.encrypt(CANARY)
        await kernel.invoke("crypto.keys.rotate", {}, principal=OPERATOR)
        after = user.encryptor.encrypt(CANARY)
        ids = list(user.encryptor.key_ids())
        names = await kernel.invoke("secrets.list", {}, principal=OPERATOR)
        assert names == ["crypto.keyring"]
        stored = (await kernel.invoke("secrets.get", {"name": "crypto.keyring"}, principal=OPERATOR))["value"]
    assert Keyring.from_json(stored, where="test").ids() == ids
    pointer = orjson.loads(keyring_file(data).read_bytes())
    assert pointer == {"format": 1, "stored_in": "secrets", "name": "crypto.keyring"}  # no key material on disk
    aes_b64 = orjson.loads(stored)["keys"][0]["aes"]
    for path in (data / "secrets").iterdir():
        assert aes_b64.encode() not in path.read_bytes()
    user = User()
    async with Kernel(config(data, with_secrets=True), plugins=[user], environ={}):
        assert list(user.encryptor.key_ids()) == ids
        assert user.encryptor.decrypt(sealed) == CANARY
        assert user.encryptor.decrypt(after) == CANARY
    # started later without the secrets plugin: refuses instead of making a new keyring
    with pytest.raises(PluginStartError, match="kept in the secret store"):
        async with Kernel(config(data, with_secrets=False), environ={}):
            pass


@pytest.mark.anyio
async def test_a_file_keyring_moves_into_the_secret_store_when_it_is_enabled(data: Path) -> None:
    user = User()
    async with Kernel(config(data, with_secrets=False), plugins=[user], environ={}):
        sealed = user.encryptor.encrypt(CANARY)
        ids = list(user.encryptor.key_ids())
    user = User()
    async with Kernel(config(data, with_secrets=True), plugins=[user], environ={}) as kernel:
        assert list(user.encryptor.key_ids()) == ids
        assert user.encryptor.decrypt(sealed) == CANARY
        assert await kernel.invoke("secrets.list", {}, principal=OPERATOR) == ["crypto.keyring"]
    assert "stored_in" in orjson.loads(keyring_file(data).read_bytes())


@pytest.mark.anyio
async def test_keyring_secrets_without_the_secrets_plugin_is_a_start_error(data: Path) -> None:
    with pytest.raises(PluginStartError, match="secrets service is not available"):
        async with Kernel(config(data, with_secrets=False, settings={"keyring": "secrets"}), environ={}):
            pass


@pytest.mark.anyio
async def test_keyring_file_ignores_the_secret_store(data: Path) -> None:
    async with Kernel(config(data, with_secrets=True, settings={"keyring": "file"}), environ={}) as kernel:
        assert await kernel.invoke("secrets.list", {}, principal=OPERATOR) == []
    assert "keys" in orjson.loads(keyring_file(data).read_bytes())


@pytest.mark.anyio
async def test_admin_operations_rotate_list_reencrypt_retire_and_audit(data: Path) -> None:
    user, audit = User(), FakeAudit()
    async with Kernel(config(data, with_secrets=True), plugins=[user, audit], environ={}) as kernel:
        old = user.encryptor.encrypt(CANARY, associated_data=b"ctx")
        first = user.encryptor.key_ids()[0]
        [listed] = await kernel.invoke("crypto.keys.list", {}, principal=OPERATOR)
        assert listed["id"] == first and listed["current"] is True and listed["created"].endswith("Z")
        assert set(listed) == {"id", "created", "current"}
        done = await kernel.invoke("crypto.keys.rotate", {}, principal=OPERATOR)
        assert done["key_ids"] == [done["key_id"], first]
        moved = await kernel.invoke(
            "crypto.reencrypt",
            {"ciphertext": base64.b64encode(old).decode(), "associated_data": base64.b64encode(b"ctx").decode()},
            principal=OPERATOR,
        )
        assert moved["key_id"] == done["key_id"]
        assert user.encryptor.decrypt(base64.b64decode(moved["ciphertext"]), associated_data=b"ctx") == CANARY
        with pytest.raises(DecryptionFailed):
            await kernel.invoke(
                "crypto.reencrypt", {"ciphertext": base64.b64encode(old).decode()}, principal=OPERATOR
            )  # wrong associated data
        with pytest.raises(InvalidArguments, match=r"args\.ciphertext"):
            await kernel.invoke("crypto.reencrypt", {"ciphertext": "%%%"}, principal=OPERATOR)
        with pytest.raises(InvalidArguments, match=r"args\.bogus"):
            await kernel.invoke("crypto.keys.list", {"bogus": 1}, principal=OPERATOR)
        retired = await kernel.invoke("crypto.keys.retire", {"key_id": first}, principal=OPERATOR)
        assert retired == {"retired": first, "key_ids": [done["key_id"]]}
        with pytest.raises(KeyNotFound):
            user.encryptor.decrypt(old, associated_data=b"ctx")
        for principal in (None, Principal("eve", kind="user")):
            for op in ("crypto.keys.rotate", "crypto.keys.list"):
                with pytest.raises(PermissionDenied, match="admin operation"):
                    await kernel.invoke(op, {}, principal=principal)
    assert [(a, actor, outcome) for a, actor, outcome, _ in audit.records] == [
        ("crypto.key.rotated", "cli", "ok"),
        ("crypto.key.retired", "cli", "ok"),
    ]
    assert audit.records[0][3] == {"key_id": done["key_id"], "previous": first, "keys": 2}


@pytest.mark.anyio
async def test_a_running_kernel_picks_up_a_rotation_made_elsewhere(data: Path) -> None:
    user = User()
    settings = {"refresh_interval": 0.05}
    async with Kernel(config(data, with_secrets=True, settings=settings), plugins=[user], environ={}):
        before = list(user.encryptor.key_ids())
        async with Kernel(config(data, with_secrets=True), environ={}) as cli:  # `orion-kernel keys rotate`
            done = await cli.invoke("crypto.keys.rotate", {}, principal=OPERATOR)
        with anyio.fail_after(5):
            while list(user.encryptor.key_ids()) == before:  # noqa: ASYNC110 - polling the refresh loop's effect
                await anyio.sleep(0.02)
        assert list(user.encryptor.key_ids()) == [done["key_id"], *before]
        await user.encryptor.rotate()  # builds on the stored keyring, keeping the other process's key
        assert user.encryptor.key_ids()[1:] == [done["key_id"], *before]


@pytest.mark.anyio
async def test_plaintext_and_key_material_never_reach_logs_or_errors(
    data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    user, audit = User(), FakeAudit()
    errors: list[str] = []
    async with Kernel(config(data, with_secrets=True), plugins=[user, audit], environ={}) as kernel:
        enc = user.encryptor
        sealed = enc.encrypt(CANARY)
        for attempt in (
            lambda: enc.decrypt(sealed[:-1]),
            lambda: enc.decrypt(sealed, associated_data=CANARY),
            lambda: enc.decrypt_token(enc.encrypt_token(CANARY)[:-3]),
        ):
            try:
                attempt()
            except CryptoError as exc:
                errors.append(f"{exc!s} {exc!r}")
        await kernel.invoke("crypto.keys.rotate", {}, principal=OPERATOR)
        material = [
            text
            for key in enc.keyring.keys
            for text in (base64.b64encode(key.aes).decode(), key.fernet.decode(), key.aes.hex())
        ]
        reprs = [repr(enc), repr(enc.keyring), *map(repr, enc.keyring.keys)]
    assert len(errors) == 3
    text = caplog.text + "\n".join(errors) + "\n".join(reprs) + repr(audit.records)
    assert CANARY.decode() not in text
    for secret in material:
        assert secret not in text


@pytest.mark.anyio
async def test_bad_settings_are_config_errors_at_their_path(data: Path) -> None:
    for bad, path in [
        ({"keyring": "vault"}, "plugins.crypto.settings.keyring"),
        ({"refresh_interval": -1.0}, "plugins.crypto.settings.refresh_interval"),
        ({"key": "inline material"}, "plugins.crypto.settings.key"),
    ]:
        with pytest.raises(ConfigError) as refused:
            Kernel(config(data, with_secrets=False, settings=bad), environ={}).prepare()
        assert path in refused.value.paths


# -- CLI --------------------------------------------------------------------------------------------------


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_keys_cli_list_rotate_retire(tmp_path: Path, data: Path) -> None:
    cfg = tmp_path / "orion.toml"
    cfg.write_text(
        f'[kernel]\ndata_dir = "{data}"\n\n[plugins.secrets]\nenabled = true\n\n[plugins.crypto]\nenabled = true\n'
    )
    code, text = cli("-c", str(cfg), "--json", "keys", "list")
    assert code == 0, text
    [first] = orjson.loads(text)
    code, text = cli("-c", str(cfg), "keys", "rotate")
    assert code == 0 and "new current key" in text and "2 key(s)" in text
    code, text = cli("-c", str(cfg), "keys", "list")
    lines = text.splitlines()
    assert lines[0].split() == ["ID", "CREATED", "CURRENT"] and len(lines) == 3
    assert lines[2].split()[0] == first["id"] and lines[2].split()[-1] == "False"
    code, text = cli("-c", str(cfg), "keys", "retire", first["id"])
    assert code == 1 and "--yes" in text
    code, text = cli("-c", str(cfg), "keys", "retire", first["id"], "--yes")
    assert code == 0 and f"retired key {first['id']}" in text
    code, text = cli("-c", str(cfg), "keys", "retire", "00000000", "--yes")
    assert code == 1 and "no key '00000000'" in text
    code, text = cli("-c", str(cfg), "--json", "keys", "list")
    assert [k["id"] for k in orjson.loads(text)] != [first["id"]] and len(orjson.loads(text)) == 1


def test_crypto_plugin_defaults() -> None:
    assert Crypto.name == "crypto" and "encryptor" in Crypto.provides and set(Crypto.optional) == {"secrets", "audit"}
