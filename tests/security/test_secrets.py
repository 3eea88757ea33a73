"""The ``secrets`` plugin end to end: per-consumer access, the encrypted file, master keys, admin ops, CLI.

Kernels are built from config the way an operator writes it (the plugin is
enabled from its entry point; consumers are test plugins passed in code), with
the kernel's default sandbox policy (``deny``): a consumer's ``secrets:NAME``
ask must be granted under ``plugins.<consumer>.permissions``.
"""

from __future__ import annotations

import base64
import inspect
import io
import logging
import os
import re
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from builtin_plugins.security.secrets import InvalidSecretName
from builtin_plugins.security.secrets import Secrets
from builtin_plugins.security.secrets import SecretsView
from builtin_plugins.security.secrets import check_name
from builtin_plugins.security.secrets._store import HEADER_SIZE
from builtin_plugins.security.secrets._store import MasterKey
from builtin_plugins.security.secrets._store import SecretFile
from builtin_plugins.security.secrets._store import encode_key
from builtin_plugins.security.secrets._store import parse_key_text
from kernel import Kernel
from kernel._cli import main
from plugin_sdk import OPERATOR
from plugin_sdk import DecryptionFailed
from plugin_sdk import InvalidArguments
from plugin_sdk import PermissionDenied
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginStartError
from plugin_sdk import PluginState
from plugin_sdk import Principal
from plugin_sdk import SecretNotFound
from plugin_sdk import SecretStore

CANARY = "canary-s3cr3t-VALUE-7f1e2d"
KEY_A = encode_key(b"A" * 32).strip()
KEY_B = encode_key(b"B" * 32).strip()
GRANT = {"app": ["secrets:db_password"]}


# -- helpers -------------------------------------------------------------------------------------


class App(Plugin):
    """A consumer asking to read ``db_password`` (its grant decides whether it starts)."""

    name = "app"
    version = "1.0.0"
    optional = ("secrets",)
    permissions = ("secrets:db_password",)

    async def start(self, ctx: PluginContext[Any]) -> None:
        self.ctx = ctx

    @property
    def store(self) -> SecretsView:
        store: SecretsView = self.ctx.service("secrets")
        return store


class Other(Plugin):
    """A consumer asking for no secret at all."""

    name = "other"
    version = "1.0.0"
    optional = ("secrets",)

    async def start(self, ctx: PluginContext[Any]) -> None:
        self.ctx = ctx

    @property
    def store(self) -> SecretsView:
        store: SecretsView = self.ctx.service("secrets")
        return store


class GlobApp(App):
    name = "globapp"
    permissions = ("secrets:db_*",)


def config(
    data: Path,
    *,
    settings: Mapping[str, Any] | None = None,
    grants: Mapping[str, list[str]] | None = None,
    strict: bool = False,
) -> dict[str, Any]:
    plugins: dict[str, Any] = {"secrets": {"enabled": True, "settings": dict(settings or {})}}
    key_file = (settings or {}).get("master_key_file")
    if key_file and os.path.isabs(key_file):  # a key file outside the data dir is asked for: grant it
        plugins["secrets"]["permissions"] = [f"fs:read:{os.path.dirname(key_file)}"]
    for name, granted in (grants or {}).items():
        plugins.setdefault(name, {})["permissions"] = granted
    return {"kernel": {"data_dir": str(data), "strict": strict}, "plugins": plugins}


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ORION_SECRETS_KEY", KEY_A)
    return tmp_path / "data"


def store_file(data: Path) -> Path:
    return data / "secrets" / "secrets.enc"


async def set_as_operator(kernel: Kernel, name: str, value: str) -> None:
    await kernel.invoke("secrets.set", {"name": name, "value": value}, principal=OPERATOR)


# -- access rules ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_each_view_satisfies_the_secret_store_protocol(data: Path) -> None:
    app = App()
    async with Kernel(config(data, grants=GRANT), plugins=[app], environ={}) as kernel:
        assert kernel.plugins["secrets"].state is PluginState.RUNNING
        view = app.store
        assert isinstance(view, SecretStore)
        for member in ("get", "set", "delete", "names"):
            ours, theirs = getattr(view, member), getattr(SecretStore, member)
            assert inspect.iscoroutinefunction(ours)
            assert list(inspect.signature(ours).parameters) == [
                p for p in inspect.signature(theirs).parameters if p != "self"
            ]
        assert repr(view) == "<secrets view for plugin 'app'>"
        assert app.store is view  # one view per consumer, kept


@pytest.mark.anyio
async def test_a_plugin_owns_its_namespace(data: Path) -> None:
    app = App()
    async with Kernel(config(data, grants=GRANT), plugins=[app], environ={}):
        store = app.store
        await store.set("app.token", CANARY)
        assert await store.get("app.token") == CANARY
        await store.set("app.token", "replaced")
        assert await store.get("app.token") == "replaced"
        assert await store.names() == ["app.token"]
        await store.delete("app.token")
        with pytest.raises(SecretNotFound, match=r"no secret named 'app\.token'"):
            await store.get("app.token")
        with pytest.raises(SecretNotFound):
            await store.delete("app.token")
        with pytest.raises(PermissionDenied, match="own namespace"):
            await store.set("appx.token", "no")  # a prefix of the name is not the namespace
        with pytest.raises(PermissionDenied):
            await store.set("app.", "no")


@pytest.mark.anyio
async def test_a_granted_plugin_reads_an_operator_secret_but_cannot_change_it(data: Path) -> None:
    app = App()
    async with Kernel(config(data, grants=GRANT), plugins=[app], environ={}) as kernel:
        await set_as_operator(kernel, "db_password", CANARY)
        await set_as_operator(kernel, "api_token", "other")
        assert await app.store.get("db_password") == CANARY
        assert await app.store.names() == ["db_password"]  # not api_token
        with pytest.raises(PermissionDenied) as denied:
            await app.store.set("db_password", "mine now")
        assert "'app'" in str(denied.value) and "db_password" in str(denied.value)
        assert "orion-kernel secrets set db_password" in str(denied.value)
        with pytest.raises(PermissionDenied):
            await app.store.delete("db_password")
        with pytest.raises(PermissionDenied, match="api_token"):
            await app.store.get("api_token")
        assert await app.store.get("db_password") == CANARY


@pytest.mark.anyio
async def test_an_ungranted_plugin_is_denied_with_the_grant_that_would_allow_it(data: Path) -> None:
    other = Other()
    async with Kernel(config(data, grants={}), plugins=[other], environ={}) as kernel:
        await set_as_operator(kernel, "db_password", CANARY)
        with pytest.raises(PermissionDenied) as denied:
            await other.store.get("db_password")
        message = str(denied.value)
        assert "'other'" in message and "'db_password'" in message
        assert '[plugins.other]: permissions = ["secrets:db_password"]' in message
        assert CANARY not in message
        assert await other.store.names() == []
        with pytest.raises(PermissionDenied):  # even when the name does not exist: no probing
            await other.store.get("nothing_here")


@pytest.mark.anyio
async def test_a_plugin_asking_for_a_secret_it_was_not_granted_does_not_start(data: Path) -> None:
    app = App()
    async with Kernel(config(data, grants={}), plugins=[app], environ={}) as kernel:
        info = kernel.plugins["app"]
        assert info.state is PluginState.FAILED
        assert "secrets:db_password" in str(info.last_error)
        assert kernel.plugins["secrets"].state is PluginState.RUNNING


@pytest.mark.anyio
async def test_a_glob_grant_covers_the_names_it_matches(data: Path) -> None:
    app = GlobApp()
    async with Kernel(config(data, grants={"globapp": ["secrets:db_*"]}), plugins=[app], environ={}) as kernel:
        await set_as_operator(kernel, "db_password", "p")
        await set_as_operator(kernel, "db_user", "u")
        await set_as_operator(kernel, "dbx", "x")
        assert await app.store.names() == ["db_password", "db_user"]
        assert await app.store.get("db_user") == "u"
        with pytest.raises(PermissionDenied):
            await app.store.get("dbx")


# -- names ---------------------------------------------------------------------------------------------

BAD_NAMES = [
    "",
    "../etc/passwd",
    "..",
    "a..b",
    "a/b",
    "/abs",
    "a\\b",
    ".hidden",
    "-dash",
    "_under",
    "name\n",
    "na me",
    "x" * 129,
    "naïve",
    "a\x00b",
    "a*",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidSecretName) as refused:
        check_name(name)
    assert isinstance(refused.value, ValueError)


@pytest.mark.parametrize("name", ["a", "db_password", "app.api-token.v2", "X" * 128, "0day"])
def test_good_names_pass(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.anyio
async def test_traversal_names_are_refused_by_views_and_operations(data: Path) -> None:
    app = App()
    async with Kernel(config(data, grants=GRANT), plugins=[app], environ={}) as kernel:
        for name in ["app/../../evil", "app.x/../y", "../app.x", "app..x"]:
            with pytest.raises(InvalidSecretName):
                await app.store.set(name, "v")
            with pytest.raises(InvalidArguments, match=r"args\.name"):
                await set_as_operator(kernel, name, "v")
        with pytest.raises(InvalidSecretName):
            await app.store.get(123)  # type: ignore[arg-type]
    written = sorted(p.name for p in (data / "secrets").iterdir())
    assert written == ["secrets.enc.lock"] or written == []  # nothing stored, no file outside
    assert not (data / "evil").exists() and not (data.parent / "evil").exists()


# -- the file ----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_store_is_one_private_encrypted_file_that_survives_a_restart(data: Path) -> None:
    async with Kernel(config(data), environ={}) as kernel:
        await set_as_operator(kernel, "db_password", CANARY)
    path = store_file(data)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    blob = path.read_bytes()
    assert blob[:4] == b"OKSS"
    assert CANARY.encode() not in blob and b"db_password" not in blob  # names are encrypted too
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    app = App()
    async with Kernel(config(data, grants=GRANT), plugins=[app], environ={}):
        assert await app.store.get("db_password") == CANARY


@pytest.mark.anyio
async def test_a_wrong_master_key_is_a_clear_start_error(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with Kernel(config(data), environ={}) as kernel:
        await set_as_operator(kernel, "db_password", CANARY)
    monkeypatch.setenv("ORION_SECRETS_KEY", KEY_B)
    with pytest.raises(PluginStartError) as failed:
        async with Kernel(config(data, strict=True), environ={}):
            pass
    message = str(failed.value)
    assert "cannot decrypt the secret store" in message and "wrong master key or tampered file" in message
    assert "Traceback" not in message and "b'" not in message and CANARY not in message and KEY_B not in message


def _file(tmp_path: Path, master: MasterKey, contents: dict[str, str]) -> Path:
    path = tmp_path / "secrets.enc"
    store = SecretFile(path, master)
    store.load()
    store.mutate(lambda draft: (True, draft.update(contents)))
    return path


def test_flipping_any_byte_of_the_file_is_a_typed_error(tmp_path: Path) -> None:
    master = parse_key_text(KEY_A, "test")
    path = _file(tmp_path, master, {"db_password": CANARY, "app.x": "y"})
    original = path.read_bytes()
    for index in range(len(original)):
        for flip in (0x01, 0x80):
            tampered = bytearray(original)
            tampered[index] ^= flip
            path.write_bytes(bytes(tampered))
            with pytest.raises(DecryptionFailed) as failed:
                SecretFile(path, master).load()
            assert CANARY not in str(failed.value)
    for cut in (0, 1, HEADER_SIZE, len(original) - 1):  # truncation, and extra bytes
        path.write_bytes(original[:cut])
        with pytest.raises(DecryptionFailed):
            SecretFile(path, master).load()
    path.write_bytes(original + b"\x00")
    with pytest.raises(DecryptionFailed):
        SecretFile(path, master).load()
    path.write_bytes(original)
    reread = SecretFile(path, master)
    reread.load()
    assert reread.secrets == {"db_password": CANARY, "app.x": "y"}


@pytest.mark.anyio
async def test_a_tampered_file_stops_the_plugin_from_starting_and_fails_reads_while_running(data: Path) -> None:
    async with Kernel(config(data), environ={}) as kernel:
        await set_as_operator(kernel, "db_password", CANARY)
        path = store_file(data)
        blob = bytearray(path.read_bytes())
        blob[-5] ^= 0x40
        path.write_bytes(bytes(blob))  # another hand changes the file under a running kernel
        with pytest.raises(DecryptionFailed, match="wrong master key or tampered file"):
            await kernel.invoke("secrets.get", {"name": "db_password"}, principal=OPERATOR)
        health = await kernel._lifecycle.records["secrets"].plugin.check_health()
        assert not health.ok and "tampered" in health.reason
    with pytest.raises(PluginStartError, match="tampered"):
        async with Kernel(config(data, strict=True), environ={}):
            pass


@pytest.mark.anyio
async def test_concurrent_sets_all_persist(data: Path) -> None:
    app = App()
    async with (
        Kernel(config(data, grants=GRANT), plugins=[app], environ={}) as kernel,
        anyio.create_task_group() as group,
    ):
        for i in range(40):
            group.start_soon(app.store.set, f"app.k{i}", f"v{i}")
            group.start_soon(set_as_operator, kernel, f"op{i}", f"w{i}")
    check = SecretFile(store_file(data), parse_key_text(KEY_A, "test"))
    check.load()
    assert check.secrets == {**{f"app.k{i}": f"v{i}" for i in range(40)}, **{f"op{i}": f"w{i}" for i in range(40)}}


@pytest.mark.anyio
async def test_a_change_by_another_process_is_seen_and_not_overwritten(data: Path) -> None:
    app = App()
    async with Kernel(config(data, grants=GRANT), plugins=[app], environ={}) as running:
        await set_as_operator(running, "db_password", "first")
        async with Kernel(config(data), environ={}) as cli:  # e.g. `orion-kernel secrets set` meanwhile
            await set_as_operator(cli, "db_password", "second")
            await set_as_operator(cli, "api_token", "t")
        assert await app.store.get("db_password") == "second"
        await app.store.set("app.mine", "m")  # must not drop api_token
        names = await running.invoke("secrets.list", {}, principal=OPERATOR)
        assert names == ["api_token", "app.mine", "db_password"]


# -- master keys -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_no_master_key_says_how_to_provide_one(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORION_SECRETS_KEY")
    with pytest.raises(PluginStartError) as failed:
        async with Kernel(config(data, strict=True), environ={}):
            pass
    message = str(failed.value)
    assert "no master key" in message and "ORION_SECRETS_KEY" in message
    assert "orion-kernel secrets keygen --out PATH" in message and "master_key_file" in message


@pytest.mark.anyio
async def test_a_key_file_works_and_one_others_can_read_is_refused(data: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, (encode_key(os.urandom(32))).encode())
    os.close(fd)
    settings = {"master_key_file": str(key_file), "master_key_env": "UNSET_ON_PURPOSE"}
    async with Kernel(config(data, settings=settings, strict=True), environ={}) as kernel:
        await set_as_operator(kernel, "db_password", CANARY)
    os.chmod(key_file, 0o640)
    with pytest.raises(PluginStartError) as failed:
        async with Kernel(config(data, settings=settings, strict=True), environ={}):
            pass
    assert "accessible by group or others (mode 0640)" in str(failed.value)
    assert f"chmod 600 {key_file}" in str(failed.value)
    os.chmod(key_file, 0o600)
    key_file.write_text("not a key\n")
    with pytest.raises(PluginStartError, match="does not hold a key"):
        async with Kernel(config(data, settings=settings, strict=True), environ={}):
            pass
    missing = {**settings, "master_key_file": str(tmp_path / "nope.key")}
    with pytest.raises(PluginStartError, match=r"does not exist; create one with `orion-kernel secrets keygen --out"):
        async with Kernel(config(data, settings=missing, strict=True), environ={}):
            pass
    # a key file outside the data directory is asked for: without the grant, the line that grants it
    ungranted = config(data, settings=settings, strict=True)
    del ungranted["plugins"]["secrets"]["permissions"]
    with pytest.raises(PluginStartError, match=re.escape(f'permissions = ["fs:read:{key_file}"]')):
        async with Kernel(ungranted, environ={}):
            pass


@pytest.mark.anyio
async def test_create_key_file_makes_a_private_key_in_the_data_dir(data: Path) -> None:
    settings = {"master_key_file": "master.key", "create_key_file": True}
    async with Kernel(config(data, settings=settings), environ={}) as kernel:
        await set_as_operator(kernel, "x", "1")
    key_file = data / "secrets" / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    before = key_file.read_bytes()
    async with Kernel(config(data, settings=settings), environ={}) as kernel:
        assert (await kernel.invoke("secrets.get", {"name": "x"}, principal=OPERATOR))["value"] == "1"
    assert key_file.read_bytes() == before  # never regenerated


@pytest.mark.anyio
async def test_a_passphrase_is_stretched_with_scrypt_and_a_wrong_one_refused(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORION_SECRETS_KEY", "correct horse battery staple")
    settings = {"scrypt_log_n": 14}
    async with Kernel(config(data, settings=settings), environ={}) as kernel:
        await set_as_operator(kernel, "db_password", CANARY)
    header = store_file(data).read_bytes()[:HEADER_SIZE]
    assert header[5:9] == bytes([1, 14, 8, 1])  # scrypt, log2(N) = 14, r = 8, p = 1
    async with Kernel(config(data, settings=settings), environ={}) as kernel:
        assert (await kernel.invoke("secrets.get", {"name": "db_password"}, principal=OPERATOR))["value"] == CANARY
    monkeypatch.setenv("ORION_SECRETS_KEY", "correct horse battery stapler")
    with pytest.raises(PluginStartError, match="wrong master key"):
        async with Kernel(config(data, settings=settings, strict=True), environ={}):
            pass
    monkeypatch.setenv("ORION_SECRETS_KEY", KEY_A)  # a 32-byte key where a passphrase made the store
    with pytest.raises(PluginStartError, match="made with a passphrase"):
        async with Kernel(config(data, settings=settings, strict=True), environ={}):
            pass
    monkeypatch.setenv("ORION_SECRETS_KEY", "short")
    with pytest.raises(PluginStartError, match="at least 16 characters"):
        async with Kernel(config(data, settings=settings, strict=True), environ={}):
            pass


def test_key_texts() -> None:
    raw = os.urandom(32)
    for text in (
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        " " + base64.b64encode(raw).decode() + "\n",
    ):
        key = parse_key_text(text, "test")
        assert key.kind == "key" and key.material == raw
    assert parse_key_text(base64.b64encode(os.urandom(31)).decode(), "t").kind == "passphrase"
    assert repr(parse_key_text(KEY_A, "environment variable X")) == (
        "MasterKey(kind='key', source='environment variable X', material=<redacted>)"
    )


# -- admin operations ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_admin_operations_refuse_other_callers_and_check_their_arguments(data: Path) -> None:
    async with Kernel(config(data), environ={}) as kernel:
        for principal in (None, Principal("ada", kind="user", roles=("admin",))):
            with pytest.raises(PermissionDenied, match="admin operation"):
                await kernel.invoke("secrets.list", {}, principal=principal)
            with pytest.raises(PermissionDenied):
                await kernel.invoke("secrets.set", {"name": "x", "value": "y"}, principal=principal)
        with pytest.raises(InvalidArguments, match=r"args\.value"):
            await kernel.invoke("secrets.set", {"name": "x"}, principal=OPERATOR)
        with pytest.raises(InvalidArguments) as bad:
            await kernel.invoke("secrets.set", {"name": "x", "value": 123456789}, principal=OPERATOR)
        assert "123456789" not in str(bad.value)  # the value is never echoed
        with pytest.raises(InvalidArguments, match=r"args\.name"):
            await kernel.invoke("secrets.get", {}, principal=OPERATOR)
        with pytest.raises(InvalidArguments, match=r"args\.extra"):
            await kernel.invoke("secrets.get", {"name": "x", "extra": 1}, principal=OPERATOR)
        with pytest.raises(SecretNotFound):
            await kernel.invoke("secrets.delete", {"name": "x"}, principal=OPERATOR)
        assert await kernel.invoke("secrets.set", {"name": "x", "value": "y"}, principal=OPERATOR) == {
            "name": "x",
            "stored": True,
        }
        assert await kernel.invoke("secrets.get", {"name": "x"}, principal=OPERATOR) == {"name": "x", "value": "y"}
        assert await kernel.invoke("secrets.delete", {"name": "x"}, principal=OPERATOR) == {
            "name": "x",
            "deleted": True,
        }


@pytest.mark.anyio
async def test_admin_kinds_is_configurable(data: Path) -> None:
    service = Principal("deployer", kind="service")
    async with Kernel(config(data, settings={"admin_kinds": ["service"]}), environ={}) as kernel:
        await kernel.invoke("secrets.set", {"name": "x", "value": "y"}, principal=service)
        with pytest.raises(PermissionDenied):
            await kernel.invoke("secrets.list", {}, principal=OPERATOR)


@pytest.mark.anyio
async def test_bad_settings_are_config_errors_at_their_path(data: Path) -> None:
    from plugin_sdk import ConfigError

    for bad, path in [
        ({"master_key_env": "NOT A NAME"}, "plugins.secrets.settings.master_key_env"),
        ({"scrypt_log_n": 40}, "plugins.secrets.settings.scrypt_log_n"),
        ({"admin_kinds": ["a b"]}, "plugins.secrets.settings.admin_kinds"),
        ({"master_key": "inline"}, "plugins.secrets.settings.master_key"),  # no such setting: key text stays out
    ]:
        kernel = Kernel(config(data, settings=bad), environ={})
        with pytest.raises(ConfigError) as refused:
            kernel.prepare()
        assert path in refused.value.paths


# -- canaries ----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_values_and_keys_never_reach_logs_reprs_or_errors(data: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    app, other = App(), Other()
    errors: list[str] = []
    async with Kernel(
        config(data, grants={"app": ["secrets:db_password"]}), plugins=[app, other], environ={}
    ) as kernel:
        await set_as_operator(kernel, "db_password", CANARY)
        await app.store.set("app.token", CANARY)
        assert (await kernel.invoke("secrets.get", {"name": "db_password"}, principal=OPERATOR))["value"] == CANARY
        for attempt in (
            other.store.get("db_password"),
            app.store.set("db_password", CANARY),
            app.store.set("../" + CANARY[:5], CANARY),
            kernel.invoke("secrets.set", {"name": "a/b", "value": CANARY}, principal=OPERATOR),
            kernel.invoke("secrets.set", {"name": "x", "value": CANARY}, principal=None),
        ):
            try:
                await attempt
            except Exception as exc:
                errors.append(f"{exc!s} {exc!r}")
        secrets_plugin = kernel._lifecycle.records["secrets"].plugin
        reprs = [repr(app.store), repr(secrets_plugin), repr(secrets_plugin._backend), repr(secrets_plugin._master)]
        reprs.append(repr(secrets_plugin._backend.file))
    assert len(errors) == 5
    text = caplog.text + "\n".join(errors) + "\n".join(reprs)
    assert "secret 'db_password' set by cli" in caplog.text  # names are logged, values never
    assert CANARY not in text
    assert KEY_A not in text and base64.b64encode(b"A" * 32).decode() not in text


# -- CLI -------------------------------------------------------------------------------------------------


def _toml(tmp_path: Path, key_file: Path) -> Path:
    path = tmp_path / "orion.toml"
    path.write_text(
        f"""\
[kernel]
data_dir = "{tmp_path / "data"}"

[plugins.secrets]
enabled = true
permissions = ["fs:read:{key_file}"]

[plugins.secrets.settings]
master_key_file = "{key_file}"
"""
    )
    return path


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_cli_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "keys" / "master.key"
    key_file.parent.mkdir()
    cfg = str(_toml(tmp_path, key_file))
    code, text = cli("-c", cfg, "secrets", "list")
    assert code == 1 and "not running" in text  # no key yet
    code, text = cli("-c", cfg, "secrets", "keygen", "--out", str(key_file))
    assert code == 0, text
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    code, text = cli("-c", cfg, "secrets", "keygen", "--out", str(key_file))
    assert code == 1 and "not overwriting" in text

    monkeypatch.setattr(sys, "stdin", io.StringIO(CANARY + "\n"))
    code, text = cli("-c", cfg, "secrets", "set", "db_password")
    assert code == 0, text
    assert CANARY not in text and "db_password" in text
    monkeypatch.setenv("API_TOKEN_FOR_TEST", "from-env")
    assert cli("-c", cfg, "secrets", "set", "api_token", "--from-env", "API_TOKEN_FOR_TEST")[0] == 0
    code, text = cli("-c", cfg, "secrets", "set", "x", "--from-env", "NOT_SET_ANYWHERE")
    assert code == 1 and "not set" in text

    code, text = cli("-c", cfg, "secrets", "get", "db_password")
    assert (code, text) == (0, CANARY + "\n")
    code, text = cli("-c", cfg, "--json", "secrets", "list")
    assert code == 0 and '"api_token"' in text and '"db_password"' in text and CANARY not in text
    code, text = cli("-c", cfg, "secrets", "delete", "api_token")
    assert code == 0, text
    code, text = cli("-c", cfg, "secrets", "get", "api_token")
    assert code == 1 and "no secret named 'api_token'" in text
    code, text = cli("-c", cfg, "secrets", "get", "../x")
    assert code == 1 and "invalid secret name" in text

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, text = cli("-c", cfg, "secrets", "set", "empty")
    assert code == 1 and "empty" in text


def test_cli_has_no_value_argument_and_keygen_prints_a_key(tmp_path: Path) -> None:
    cfg = str(_toml(tmp_path, tmp_path / "unused.key"))
    with pytest.raises(SystemExit):
        main(["-c", cfg, "secrets", "set", "x", "--value", "leak"], out=io.StringIO())
    code, text = cli("-c", cfg, "secrets", "keygen")
    assert code == 0
    assert parse_key_text(text.strip(), "t").kind == "key"


def test_secrets_inside_the_package_is_the_stdlib_module() -> None:
    import builtin_plugins.security.secrets._cli as cli_module
    import builtin_plugins.security.secrets._store as store_module

    assert store_module.secrets.__name__ == "secrets" and hasattr(store_module.secrets, "token_bytes")
    assert cli_module.secrets is store_module.secrets
    assert Secrets.name == "secrets"
