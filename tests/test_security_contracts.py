"""The kernel side of the security contracts: credentials on invoke, per-consumer services, vetting."""

from __future__ import annotations

import hmac
import stat
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel import Kernel
from plugin_sdk import OPERATOR
from plugin_sdk import SERVICE_PROTOCOLS
from plugin_sdk import AuditLog
from plugin_sdk import Authenticator
from plugin_sdk import Consumer
from plugin_sdk import Credentials
from plugin_sdk import Encryptor
from plugin_sdk import HmacSha256
from plugin_sdk import InvalidArguments
from plugin_sdk import Invocation
from plugin_sdk import Manifest
from plugin_sdk import NotAuthenticated
from plugin_sdk import PerConsumer
from plugin_sdk import PermissionDenied
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginState
from plugin_sdk import Principal
from plugin_sdk import SecretNotFound
from plugin_sdk import SecretStore
from plugin_sdk import VetVerdict
from plugin_sdk import hookimpl
from plugin_sdk import record_audit
from plugin_sdk import require_kind
from plugin_sdk import write_file_atomic

pytestmark = pytest.mark.anyio

CANARY = "s3cr3t-canary-value"


# -- credentials --------------------------------------------------------------------------


def test_credentials_never_show_their_secret() -> None:
    for creds in (Credentials.api_key(CANARY), Credentials.bearer(CANARY), Credentials.from_header(f"Bearer {CANARY}")):
        assert CANARY not in repr(creds)
        assert CANARY not in str(creds)
        assert CANARY not in repr(Invocation("op", {}, credentials=creds))
        assert creds.secret == CANARY


@pytest.mark.parametrize(
    ("header", "scheme"),
    [("Bearer abc", "bearer"), ("bearer abc", "bearer"), ("ApiKey abc", "api-key"), ("Api-Key abc", "api-key")],
)
def test_credentials_from_an_authorization_header(header: str, scheme: str) -> None:
    creds = Credentials.from_header(header)
    assert (creds.scheme, creds.secret) == (scheme, "abc")


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer   ", f"Basic {CANARY}", CANARY])
def test_malformed_headers_are_refused_without_echoing_the_secret(header: str) -> None:
    with pytest.raises(NotAuthenticated) as caught:
        Credentials.from_header(header)
    assert CANARY not in str(caught.value)


def test_secret_not_found_reads_plainly() -> None:
    error = SecretNotFound("db")
    assert str(error) == "no secret named 'db'"
    assert isinstance(error, KeyError)


def test_the_security_services_have_protocols() -> None:
    assert SERVICE_PROTOCOLS["authenticator"] is Authenticator
    assert SERVICE_PROTOCOLS["audit"] is AuditLog
    assert SERVICE_PROTOCOLS["encryptor"] is Encryptor
    assert SERVICE_PROTOCOLS["secrets"] is SecretStore
    assert OPERATOR.kind == "operator"


class Tools(Plugin):
    name = "tools"

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.register_operation("tools.seen", self.seen)

    async def seen(self, inv: Invocation) -> dict[str, Any]:
        creds = inv.credentials
        return {"scheme": None if creds is None else creds.scheme, "principal": inv.principal}


async def test_invoke_carries_credentials_to_the_pipeline() -> None:
    async with Kernel(plugins=[Tools()]) as kernel:
        result = await kernel.invoke("tools.seen", credentials=Credentials.api_key(CANARY))
        assert result == {"scheme": "api-key", "principal": None}
        assert (await kernel.invoke("tools.seen"))["scheme"] is None


async def test_a_bare_string_as_credentials_is_refused_without_echoing_it() -> None:
    async with Kernel(plugins=[Tools()]) as kernel:
        with pytest.raises(InvalidArguments) as caught:
            await kernel.invoke("tools.seen", credentials=CANARY)  # type: ignore[arg-type]
    assert CANARY not in str(caught.value)
    assert "plugin_sdk.Credentials" in str(caught.value)


def test_the_blocking_kernel_passes_credentials() -> None:
    with Kernel.start_blocking(plugins=[Tools()]) as kernel:
        assert kernel.invoke("tools.seen", credentials=Credentials.bearer("t"))["scheme"] == "bearer"


# -- per-consumer services ------------------------------------------------------------------


class Vault(Plugin):
    name = "vault"
    provides = ("vault",)

    def __init__(self) -> None:
        self.asked: list[Consumer] = []

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.provide("vault", PerConsumer(self.view_for))

    def view_for(self, consumer: Consumer) -> dict[str, Any]:
        self.asked.append(consumer)
        return {"for": consumer.name, "may_read_db": consumer.permissions.allows("secrets:db")}


def consumer(name: str, permissions: tuple[str, ...] = ()) -> Plugin:
    class User(Plugin):
        requires = ("vault",)

        async def start(self, ctx: PluginContext[Any]) -> None:
            self.first = ctx.service("vault")
            self.second = ctx.service("vault")

    User.name = name
    User.permissions = permissions
    return User()


async def test_each_consumer_gets_its_own_view_made_from_its_grants() -> None:
    vault, alice, bob = Vault(), consumer("alice", ("secrets:db",)), consumer("bob", ("secrets:db",))
    config = {"plugins": {"alice": {"permissions": ["secrets:db"]}, "bob": {"permissions": []}}}
    async with Kernel(config, plugins=[vault, alice, bob]) as kernel:
        assert kernel.plugins["bob"].state is PluginState.FAILED  # asked for secrets:db, not granted
        assert alice.first == {"for": "alice", "may_read_db": True}  # type: ignore[attr-defined]
        assert alice.second is alice.first  # type: ignore[attr-defined]
        assert [c.name for c in vault.asked] == ["alice"]  # made once per consumer


async def test_a_view_reflects_what_was_granted() -> None:
    vault, carol = Vault(), consumer("carol")
    async with Kernel(plugins=[vault, carol]):
        assert carol.first == {"for": "carol", "may_read_db": False}  # type: ignore[attr-defined]


# -- vetting --------------------------------------------------------------------------------


class Vetter(Plugin):
    name = "vetter"
    permissions = ("hook:vet_plugin",)

    def __init__(self, refuse: set[str] | None = None, *, explode: bool = False) -> None:
        self.refuse = refuse or set()
        self.explode = explode
        self.seen: list[tuple[str, str, str]] = []
        self.running = False

    async def start(self, ctx: PluginContext[Any]) -> None:
        await anyio.sleep(0.01)  # others must still wait for it
        self.running = True

    @hookimpl
    async def vet_plugin(self, plugin: str, manifest: Manifest, module: str) -> VetVerdict | None:
        self.seen.append((plugin, manifest.name, module))
        if self.explode:
            raise RuntimeError("scanner crashed")
        if plugin in self.refuse:
            return VetVerdict(refuse=True, reason="found subprocess at risky.py:3")
        return None


class Early(Plugin):
    """Records whether the vetter was running when it started."""

    def __init__(self, name: str, vetter: Vetter) -> None:
        self.name = name
        self.vetter = vetter
        self.vetter_was_running: bool | None = None

    async def start(self, ctx: PluginContext[Any]) -> None:
        self.vetter_was_running = self.vetter.running


GRANT = {"plugins": {"vetter": {"permissions": ["hook:vet_plugin"]}}}


async def test_vetters_start_first_and_are_asked_about_every_other_plugin() -> None:
    vetter = Vetter()
    one, two = Early("one", vetter), Early("two", vetter)
    async with Kernel(GRANT, plugins=[one, two, vetter]) as kernel:
        assert one.vetter_was_running and two.vetter_was_running
        assert sorted(p for p, _, _ in vetter.seen) == ["one", "two"]
        assert {m for _, _, m in vetter.seen} == {__name__}
        assert kernel.plugins["one"].state is PluginState.RUNNING


async def test_a_refusal_keeps_a_plugin_from_starting_with_the_reason() -> None:
    vetter = Vetter(refuse={"risky"})
    risky, fine = Early("risky", vetter), Early("fine", vetter)
    async with Kernel(GRANT, plugins=[vetter, risky, fine]) as kernel:
        info = kernel.plugins["risky"]
        assert info.state is PluginState.FAILED
        assert "refused by plugin 'vetter': found subprocess at risky.py:3" in (info.last_error or "")
        assert risky.vetter_was_running is None  # start() never ran
        assert kernel.plugins["fine"].state is PluginState.RUNNING


async def test_a_failing_vetter_refuses_fail_closed() -> None:
    vetter = Vetter(explode=True)
    other = Early("other", vetter)
    async with Kernel(GRANT, plugins=[vetter, other]) as kernel:
        info = kernel.plugins["other"]
        assert info.state is PluginState.FAILED
        assert "vetting by plugin 'vetter' failed: RuntimeError: scanner crashed" in (info.last_error or "")


async def test_a_vetter_that_cannot_run_refuses_everything_fail_closed() -> None:
    vetter = Vetter()
    other = Early("other", vetter)
    async with Kernel(plugins=[vetter, other]) as kernel:  # hook:vet_plugin not granted
        assert kernel.plugins["vetter"].state is PluginState.FAILED
        info = kernel.plugins["other"]
        assert info.state is PluginState.FAILED
        assert "not vetted: enabled vetter plugin(s) vetter (failed) are not running" in (info.last_error or "")



def test_write_file_atomic_makes_a_private_file_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "keys.json"
    write_file_atomic(target, b"one")
    write_file_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with pytest.raises(TypeError):
        write_file_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json"]


@given(key=st.binary(min_size=1, max_size=200), message=st.binary(max_size=500))
def test_hmac_sha256_is_rfc_2104_hmac(key: bytes, message: bytes) -> None:
    mac = HmacSha256(key)
    assert mac.digest(message) == hmac.digest(key, message, "sha256")
    assert mac.hex2(message[:7], message[7:]) == hmac.new(key, message, "sha256").hexdigest().encode()
    assert repr(mac) == "<HmacSha256 key=<redacted>>"


def test_an_empty_hmac_key_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        HmacSha256(b"")


@pytest.mark.parametrize(
    ("principal", "who"),
    [(None, "an anonymous caller"), (Principal("bob", kind="user"), "principal 'bob' (kind 'user')")],
)
def test_require_kind_refuses_others_naming_the_setting(principal: Principal | None, who: str) -> None:
    inv = Invocation("keys.rotate", {}, principal)
    with pytest.raises(PermissionDenied) as refused:
        require_kind(inv, ("operator",), setting="plugins.crypto.settings.admin_kinds")
    assert str(refused.value) == (
        f"keys.rotate is an admin operation: {who} may not call it "
        "(allowed kinds: operator; see plugins.crypto.settings.admin_kinds)"
    )
    assert require_kind(Invocation("keys.rotate", {}, OPERATOR), ("operator",), setting="x") is OPERATOR


class Recorder(Plugin):
    name = "recorder"
    optional = ("audit",)

    async def start(self, ctx: PluginContext[Any]) -> None:
        self.ctx = ctx


class FakeAudit(Plugin):
    name = "fake_audit"
    provides = ("audit",)

    def __init__(self, *, broken: bool = False) -> None:
        self.entries: list[tuple[str, str | None, str, dict[str, Any]]] = []
        self.broken = broken

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.provide("audit", self)

    async def record(self, action: str, *, actor: str | None, outcome: str, details: Any = None) -> int:
        if self.broken:
            raise OSError("disk full")
        self.entries.append((action, actor, outcome, details))
        return len(self.entries)


async def test_record_audit_records_when_an_audit_log_runs_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    async with Kernel(plugins=[recorder]):
        await record_audit(recorder.ctx, "x.done", actor="ada", outcome="ok")  # no audit service: nothing
    audit, recorder = FakeAudit(), Recorder()
    async with Kernel(plugins=[audit, recorder]):
        await record_audit(recorder.ctx, "x.done", actor="ada", outcome="ok", details={"id": 1})
    assert audit.entries == [("x.done", "ada", "ok", {"id": 1})]
    broken, recorder = FakeAudit(broken=True), Recorder()
    async with Kernel(plugins=[broken, recorder]):
        await record_audit(recorder.ctx, "x.done", actor="ada", outcome="ok")
    assert "could not record x.done in the audit log: OSError: disk full" in caplog.text
