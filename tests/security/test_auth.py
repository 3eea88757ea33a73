"""The ``auth`` plugin end to end: API keys, anonymous calls, throttling, persistence, secrets, audit, CLI.

Every test runs a real kernel with the plugin and a ``tools`` plugin whose
operation returns the principal it sees.  Time is a fake clock (nothing
sleeps); the secret store and the audit log are small fakes provided by test
plugins (the real ones are other plugins' business).
"""

from __future__ import annotations

import io
import json
import logging
import os
import stat
from collections.abc import AsyncIterator
from collections.abc import Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from builtin_plugins.security.auth import Auth
from builtin_plugins.security.auth import AuthSettings
from kernel import Kernel
from plugin_sdk import OPERATOR
from plugin_sdk import AuthenticationThrottled
from plugin_sdk import Authenticator
from plugin_sdk import ConfigError
from plugin_sdk import Consumer
from plugin_sdk import Credentials
from plugin_sdk import InvalidArguments
from plugin_sdk import Invocation
from plugin_sdk import NotAuthenticated
from plugin_sdk import PerConsumer
from plugin_sdk import PermissionDenied
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginState
from plugin_sdk import Principal
from plugin_sdk import SecretNotFound
from plugin_sdk import hookimpl
from plugin_sdk import hookspecs

T0 = 1_800_000_000.0


# -- fakes ----------------------------------------------------------------------------------------


class FakeClock:
    """``now()`` moves only when told; ``sleep()`` waits until the clock has been advanced past its end."""

    def __init__(self, start: float = T0) -> None:
        self.t = start
        self._sleepers: list[tuple[float, anyio.Event]] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        event = anyio.Event()
        self._sleepers.append((self.t + seconds, event))
        await event.wait()

    def advance(self, seconds: float) -> None:
        self.t += seconds
        for entry in list(self._sleepers):
            if entry[0] <= self.t:
                self._sleepers.remove(entry)
                entry[1].set()


class Tools(Plugin):
    """An app's operations: ``tools.whoami`` answers the principal the handler sees."""

    name = "tools"

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.register_operation("tools.whoami", self.whoami)
        ctx.register_operation("health.ping", lambda inv: "pong")

    async def whoami(self, inv: Invocation) -> Principal | None:
        return inv.principal


class _SecretView:
    def __init__(self, values: dict[str, str], consumer: str) -> None:
        self._values = values
        self._namespace = consumer + "."

    def _check(self, name: str) -> None:
        if not name.startswith(self._namespace):
            raise PermissionDenied(f"no grant for secret {name!r}")

    async def get(self, name: str) -> str:
        self._check(name)
        try:
            return self._values[name]
        except KeyError:
            raise SecretNotFound(name) from None

    async def set(self, name: str, value: str) -> None:
        self._check(name)
        self._values[name] = value

    async def delete(self, name: str) -> None:
        self._check(name)
        if self._values.pop(name, None) is None:
            raise SecretNotFound(name)

    async def names(self) -> list[str]:
        return sorted(n for n in self._values if n.startswith(self._namespace))


class FakeSecrets(Plugin):
    """Provides ``secrets`` per consumer, each confined to its own namespace, values in a dict."""

    name = "fake_secrets"
    provides = ("secrets",)

    def __init__(self, values: dict[str, str] | None = None) -> None:
        self.values: dict[str, str] = {} if values is None else values

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.provide("secrets", PerConsumer(self.view))

    def view(self, consumer: Consumer) -> _SecretView:
        return _SecretView(self.values, consumer.name)


class FakeAudit(Plugin):
    name = "fake_audit"
    provides = ("audit",)

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.provide("audit", self)

    async def record(
        self, action: str, *, actor: str | None, outcome: str, details: Mapping[str, Any] | None = None
    ) -> int:
        self.entries.append({"action": action, "actor": actor, "outcome": outcome, "details": dict(details or {})})
        return len(self.entries)

    async def verify(self) -> Any:
        raise NotImplementedError


@attrs.define
class Harness:
    kernel: Kernel
    auth: Auth
    clock: FakeClock

    async def whoami(self, credentials: Credentials | None = None, **kwargs: Any) -> Principal | None:
        result: Principal | None = await self.kernel.invoke("tools.whoami", credentials=credentials, **kwargs)
        return result

    async def create(self, principal: str = "svc", **args: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.kernel.invoke(
            "auth.keys.create", {"principal": principal, **args}, principal=OPERATOR
        )
        return result


@asynccontextmanager
async def running(
    tmp_path: Path,
    settings: Mapping[str, Any] | None = None,
    *,
    extra: list[Plugin] | None = None,
    clock: FakeClock | None = None,
    plugins_config: Mapping[str, Any] | None = None,
) -> AsyncIterator[Harness]:
    clock = clock or FakeClock()
    auth = Auth(clock=clock)
    config = {
        "kernel": {"data_dir": str(tmp_path / "data"), "strict": True},
        "plugins": {"auth": {"settings": dict(settings or {})}, **(plugins_config or {})},
    }
    plugins: list[Plugin] = [auth, Tools(), *(extra or [])]
    async with Kernel(config, plugins=plugins, environ={}, entry_points=False) as kernel:
        yield Harness(kernel, auth, clock)


def key_file(tmp_path: Path) -> Path:
    return tmp_path / "data" / "auth" / "api_keys.json"


# -- API keys -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_valid_api_key_sets_the_principal_the_handler_sees(tmp_path: Path) -> None:
    async with running(tmp_path) as h:
        created = await h.create("svc-search", roles=["reader", "writer"])
        key = created["key"]
        prefix, key_id, secret = key.split("_", 2)
        assert (prefix, key_id) == ("ork", created["id"])
        assert len(key_id) == 12 and len(secret) >= 43  # 32 random bytes, base64url
        principal = await h.whoami(Credentials.api_key(key))
        assert principal == Principal(
            id="svc-search", kind="service", roles=("reader", "writer"), claims={"auth": "api-key", "key_id": key_id}
        )
        assert await h.whoami(Credentials.from_header(f"ApiKey {key}")) == principal
        # the service gives the same answer
        service = h.kernel._lifecycle.records["auth"].provided["authenticator"]
        assert isinstance(service, Authenticator)
        assert await service.authenticate(Credentials.api_key(key)) == principal


@pytest.mark.anyio
async def test_bad_revoked_and_expired_keys_are_refused(tmp_path: Path) -> None:
    async with running(tmp_path) as h:
        key = (await h.create())["key"]
        prefix, key_id, secret = key.split("_", 2)
        cases = {
            f"{prefix}_{key_id}_{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}": f"invalid API key '{key_id}'",
            f"{prefix}_000000000000_{secret}": "unknown API key",
            f"{prefix}_{key_id}": "malformed API key",
            f"{prefix}_{key_id}_": "malformed API key",
            f"other_{key_id}_{secret}": "API key not recognised",
            "not-a-key": "API key not recognised",
        }
        for bad, reason in cases.items():
            with pytest.raises(NotAuthenticated) as caught:
                await h.whoami(Credentials.api_key(bad))
            assert str(caught.value) == reason
            assert secret not in str(caught.value)

        expiring = await h.create("temp", expires_in=30)
        assert expiring["expires"] == T0 + 30
        assert (await h.whoami(Credentials.api_key(expiring["key"]))).id == "temp"  # type: ignore[union-attr]
        h.clock.advance(30)
        with pytest.raises(NotAuthenticated, match=f"API key '{expiring['id']}' has expired"):
            await h.whoami(Credentials.api_key(expiring["key"]))

        revoked = await h.kernel.invoke("auth.keys.revoke", {"id": key_id}, principal=OPERATOR)
        assert (revoked["revoked"], revoked["revoked_at"], revoked["state"]) == (True, T0 + 30, "revoked")
        with pytest.raises(NotAuthenticated, match=f"API key '{key_id}' has been revoked"):
            await h.whoami(Credentials.api_key(key))
        again = await h.kernel.invoke("auth.keys.revoke", {"id": key_id}, principal=OPERATOR)
        assert again["revoked_at"] == T0 + 30  # revoking twice changes nothing
        with pytest.raises(InvalidArguments, match="no API key with id 'nope'"):
            await h.kernel.invoke("auth.keys.revoke", {"id": "nope"}, principal=OPERATOR)


@pytest.mark.anyio
async def test_list_shows_every_key_but_never_a_secret_or_hash(tmp_path: Path) -> None:
    async with running(tmp_path) as h:
        first = await h.create("a", roles=["x"])
        h.clock.advance(1)
        second = await h.create("b", expires_in=10, kind="robot")
        await h.whoami(Credentials.api_key(first["key"]))
        listed = await h.kernel.invoke("auth.keys.list", principal=OPERATOR)
        assert [row["id"] for row in listed] == [first["id"], second["id"]]
        assert listed[0] == {
            "id": first["id"],
            "principal": "a",
            "kind": "service",
            "roles": ["x"],
            "created": T0,
            "expires": None,
            "revoked": False,
            "revoked_at": None,
            "last_used": T0 + 1,
            "state": "active",
        }
        assert listed[1]["kind"] == "robot" and listed[1]["expires"] == T0 + 11
        text = json.dumps(listed)
        for created in (first, second):
            assert created["key"].split("_", 2)[2] not in text
        assert "hash" not in text


@pytest.mark.anyio
async def test_admin_operations_need_an_admin_kind(tmp_path: Path) -> None:
    audit = FakeAudit()
    async with running(tmp_path, {"admin_kinds": ["operator", "admin"]}, extra=[audit]) as h:
        user = Principal(id="mallory", kind="user")
        for operation, args in (
            ("auth.keys.create", {"principal": "x"}),
            ("auth.keys.list", {}),
            ("auth.keys.revoke", {"id": "x"}),
            ("auth.token.issue", {"subject": "x"}),
        ):
            with pytest.raises(PermissionDenied, match=f"{operation} is an admin operation"):
                await h.kernel.invoke(operation, args, principal=user)
        with pytest.raises(NotAuthenticated):  # no principal at all: refused before the operation
            await h.kernel.invoke("auth.keys.list")
        admin = Principal(id="root", kind="admin")
        assert await h.kernel.invoke("auth.keys.list", principal=admin) == []
        denied = [e for e in audit.entries if e["outcome"] == "denied"]
        assert [e["action"] for e in denied] == [
            "auth.key.create",
            "auth.key.list",
            "auth.key.revoke",
            "auth.token.issue",
        ]
        assert {e["actor"] for e in denied} == {"mallory"}
        # an API key of an admin kind can administer
        key = (await h.create("ops-bot", kind="admin"))["key"]
        listed = await h.kernel.invoke("auth.keys.list", credentials=Credentials.api_key(key))
        assert [row["principal"] for row in listed] == ["ops-bot"]


@pytest.mark.anyio
async def test_operation_arguments_are_checked(tmp_path: Path) -> None:
    async with running(tmp_path) as h:
        with pytest.raises(InvalidArguments, match="expires_in"):
            await h.create(expires_in=-1)
        with pytest.raises(InvalidArguments, match="principal"):
            await h.create("")


# -- calls without credentials ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_no_credentials_is_refused_by_default(tmp_path: Path) -> None:
    async with running(tmp_path) as h:
        with pytest.raises(NotAuthenticated) as caught:
            await h.whoami()
        assert str(caught.value) == "no credentials presented for operation 'tools.whoami'"
        assert not isinstance(caught.value, AuthenticationThrottled)


@pytest.mark.anyio
async def test_anonymous_allow_gives_the_anonymous_principal(tmp_path: Path) -> None:
    async with running(tmp_path, {"anonymous": "allow"}) as h:
        assert await h.whoami() == Principal(id="anonymous", kind="anonymous")
        with pytest.raises(NotAuthenticated):  # credentials presented are still checked
            await h.whoami(Credentials.api_key("ork_abc_def"))
        with pytest.raises(PermissionDenied):  # anonymous is never an administrator
            await h.kernel.invoke("auth.keys.list")


@pytest.mark.anyio
async def test_public_operations_skip_authentication(tmp_path: Path) -> None:
    async with running(tmp_path, {"public_operations": ["health.*"]}) as h:
        assert await h.kernel.invoke("health.ping") == "pong"
        assert await h.kernel.invoke("health.ping", credentials=Credentials.api_key("garbage")) == "pong"
        with pytest.raises(NotAuthenticated):
            await h.whoami()


@pytest.mark.anyio
async def test_a_principal_the_app_passed_is_trusted(tmp_path: Path) -> None:
    async with running(tmp_path) as h:
        app_user = Principal(id="ada", kind="user", roles=("admin",))
        assert await h.whoami(principal=app_user) is app_user
        # even beside credentials that would be refused: the app already authenticated the call
        assert await h.whoami(Credentials.api_key("ork_bad_bad"), principal=app_user) is app_user
        assert len(h.auth._throttle) == 0


# -- throttling --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_too_many_failures_lock_a_key_out_even_with_the_right_secret(tmp_path: Path, caplog: Any) -> None:
    settings = {"max_failures": 3, "failure_window": 60, "lockout": 120}
    async with running(tmp_path, settings) as h:
        key = (await h.create())["key"]
        other = (await h.create("other"))["key"]
        wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
        key_id = key.split("_")[1]
        for _ in range(2):
            with pytest.raises(NotAuthenticated):
                await h.whoami(Credentials.api_key(wrong))
        assert (await h.whoami(Credentials.api_key(key))).id == "svc"  # type: ignore[union-attr]
        for _ in range(3):  # the success forgot the first two
            with pytest.raises(NotAuthenticated) as caught:
                await h.whoami(Credentials.api_key(wrong))
            assert not isinstance(caught.value, AuthenticationThrottled)
        assert f"authentication for 'api-key:{key_id}' locked out for 120 s" in caplog.text
        h.clock.advance(60)
        with pytest.raises(AuthenticationThrottled) as throttled:
            await h.whoami(Credentials.api_key(key))  # the right key, still refused
        assert throttled.value.subject == f"api-key:{key_id}"
        assert throttled.value.retry_after == pytest.approx(60)
        assert (await h.whoami(Credentials.api_key(other))).id == "other"  # type: ignore[union-attr]
        h.clock.advance(60)
        assert (await h.whoami(Credentials.api_key(key))).id == "svc"  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_failures_outside_the_window_do_not_add_up(tmp_path: Path) -> None:
    async with running(tmp_path, {"max_failures": 3, "failure_window": 10}) as h:
        key = (await h.create())["key"]
        wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
        for _ in range(10):
            with pytest.raises(NotAuthenticated) as caught:
                await h.whoami(Credentials.api_key(wrong))
            assert not isinstance(caught.value, AuthenticationThrottled)
            h.clock.advance(6)  # never three within 10 s
        assert (await h.whoami(Credentials.api_key(key))).id == "svc"  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_unknown_key_ids_count_per_source_and_never_lock_real_keys(tmp_path: Path) -> None:
    async with running(tmp_path, {"max_failures": 2}) as h:
        key = (await h.create())["key"]
        for attempt in range(2):
            with pytest.raises(NotAuthenticated):
                await h.kernel.invoke(
                    "tools.whoami",
                    credentials=Credentials.api_key(f"ork_{attempt:012d}_guess"),
                )
        with pytest.raises(AuthenticationThrottled) as caught:
            await h.whoami(Credentials.api_key("ork_999999999999_guess"))
        assert caught.value.subject == "source:unknown"
        assert (await h.whoami(Credentials.api_key(key))).id == "svc"  # type: ignore[union-attr]


def test_the_throttle_keeps_a_bounded_number_of_subjects() -> None:
    from builtin_plugins.security.auth._throttle import Throttle

    throttle = Throttle(max_failures=2, window=60, lockout=60, max_tracked=3)
    assert throttle.failed("a", T0) is False
    for subject in ("b", "c", "d"):
        throttle.failed(subject, T0 + 1)
    assert len(throttle) == 3
    assert throttle.failed("a", T0 + 2) is False  # 'a' was the oldest: forgotten, counting starts again
    assert throttle.failed("a", T0 + 3) is True
    assert throttle.locked(T0 + 3) == ["a"]
    with pytest.raises(AuthenticationThrottled):
        throttle.check("a", T0 + 62)
    throttle.check("a", T0 + 63)  # the lockout is over
    for index in range(10_000):
        throttle.failed(f"s{index}", T0 + 4)
    assert len(throttle) == 3


# -- persistence and files ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_keys_survive_a_restart_and_files_are_0600(tmp_path: Path) -> None:
    clock = FakeClock()
    async with running(tmp_path, clock=clock) as h:
        kept = await h.create("kept")
        gone = await h.create("gone")
        await h.kernel.invoke("auth.keys.revoke", {"id": gone["id"]}, principal=OPERATOR)
        clock.advance(5)
        await h.whoami(Credentials.api_key(kept["key"]))
    data = tmp_path / "data" / "auth"
    assert sorted(p.name for p in data.iterdir()) == ["api_keys.json", "local_secrets.json"]  # no temp file left
    for path in data.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    stored = json.loads(key_file(tmp_path).read_text())
    assert stored["keys"][kept["id"]]["last_used"] == T0 + 5  # written at stop
    assert kept["key"].split("_", 2)[2] not in key_file(tmp_path).read_text()

    async with running(tmp_path, clock=clock) as h:  # a new plugin instance, the same data directory
        assert (await h.whoami(Credentials.api_key(kept["key"]))).id == "kept"  # type: ignore[union-attr]
        with pytest.raises(NotAuthenticated, match="revoked"):
            await h.whoami(Credentials.api_key(gone["key"]))
        listed = await h.kernel.invoke("auth.keys.list", principal=OPERATOR)
        assert {row["id"]: row["state"] for row in listed} == {kept["id"]: "active", gone["id"]: "revoked"}


@pytest.mark.anyio
async def test_last_used_times_are_flushed_in_the_background(tmp_path: Path) -> None:
    async with running(tmp_path) as h:
        key = await h.create()
        h.clock.advance(1)
        await h.whoami(Credentials.api_key(key["key"]))
        assert json.loads(key_file(tmp_path).read_text())["keys"][key["id"]]["last_used"] is None
        h.clock.advance(60)  # wakes the flusher
        with anyio.fail_after(5):
            while json.loads(key_file(tmp_path).read_text())["keys"][key["id"]]["last_used"] is None:  # noqa: ASYNC110
                await anyio.sleep(0.01)  # the flusher writes from a worker thread: poll the file
        assert json.loads(key_file(tmp_path).read_text())["keys"][key["id"]]["last_used"] == T0 + 1


@pytest.mark.anyio
async def test_a_replaced_hash_key_is_refused_rather_than_silently_breaking_every_key(tmp_path: Path) -> None:
    async with running(tmp_path) as h:
        await h.create()
    (tmp_path / "data" / "auth" / "local_secrets.json").unlink()  # the hash key is lost
    auth = Auth(clock=FakeClock())
    config = {"kernel": {"data_dir": str(tmp_path / "data")}, "plugins": {}}
    async with Kernel(config, plugins=[auth], environ={}, entry_points=False) as kernel:
        info = kernel.plugins["auth"]
        assert info.state is PluginState.FAILED
        assert "is not the one the API keys" in str(info.last_error)


@pytest.mark.anyio
async def test_a_corrupt_key_file_is_a_clear_start_error(tmp_path: Path) -> None:
    path = tmp_path / "data" / "auth" / "api_keys.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    config = {"kernel": {"data_dir": str(tmp_path / "data")}, "plugins": {}}
    async with Kernel(config, plugins=[Auth(clock=FakeClock())], environ={}, entry_points=False) as kernel:
        assert "api_keys.json is not valid JSON" in str(kernel.plugins["auth"].last_error)


# -- the secret store and the audit log -------------------------------------------------------------------


@pytest.mark.anyio
async def test_with_a_secret_store_the_hash_key_lives_there(tmp_path: Path, caplog: Any) -> None:
    store = FakeSecrets()
    jwt = {"jwt_keys": [{"kid": "k1", "alg": "HS256", "secret": "auth.jwt.k1"}]}
    async with running(tmp_path, jwt, extra=[store]) as h:
        key = (await h.create())["key"]
        assert sorted(store.values) == ["auth.hash_key", "auth.jwt.k1"]
        assert not (tmp_path / "data" / "auth" / "local_secrets.json").exists()
        assert "unencrypted at rest" not in caplog.text
    async with running(tmp_path, jwt, extra=[FakeSecrets(store.values)]) as h:
        assert (await h.whoami(Credentials.api_key(key))).id == "svc"  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_without_a_secret_store_it_warns_and_uses_a_0600_file(tmp_path: Path, caplog: Any) -> None:
    async with running(tmp_path):
        pass
    local = tmp_path / "data" / "auth" / "local_secrets.json"
    assert stat.S_IMODE(local.stat().st_mode) == 0o600
    assert "auth.hash_key" in json.loads(local.read_text())
    assert "unencrypted at rest" in caplog.text


@pytest.mark.anyio
async def test_enabling_a_secret_store_later_moves_the_keys_into_it(tmp_path: Path) -> None:
    jwt = {"jwt_keys": [{"kid": "k1", "alg": "HS256", "secret": "auth.jwt.k1"}]}
    async with running(tmp_path, jwt) as h:
        key = (await h.create())["key"]
        token = h.auth.issue_token("alice")
    local = tmp_path / "data" / "auth" / "local_secrets.json"
    before = json.loads(local.read_text())
    store = FakeSecrets()
    async with running(tmp_path, jwt, extra=[store]) as h:
        assert store.values == before  # moved as they were
        assert not local.exists()  # and no longer in plain text on disk
        assert (await h.whoami(Credentials.api_key(key))).id == "svc"  # type: ignore[union-attr]
        assert (await h.whoami(Credentials.bearer(token))).id == "alice"  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_a_missing_jwt_secret_without_generate_missing_fails_the_start(tmp_path: Path) -> None:
    settings = {"jwt_keys": [{"kid": "k1", "alg": "HS256", "secret": "auth.jwt.k1"}], "generate_missing": False}
    config = {"kernel": {"data_dir": str(tmp_path / "data")}, "plugins": {"auth": {"settings": settings}}}
    async with Kernel(config, plugins=[Auth(clock=FakeClock()), FakeSecrets()], environ={}, entry_points=False) as k:
        error = str(k.plugins["auth"].last_error)
        assert "no secret 'auth.jwt.k1' in the secret store" in error


@pytest.mark.anyio
async def test_admin_actions_are_audited_without_secrets(tmp_path: Path) -> None:
    audit = FakeAudit()
    jwt = {"jwt_keys": [{"kid": "k1", "alg": "HS256", "secret": "auth.jwt.k1"}]}
    async with running(tmp_path, jwt, extra=[audit]) as h:
        created = await h.create("svc", roles=["r"])
        await h.kernel.invoke("auth.keys.revoke", {"id": created["id"]}, principal=OPERATOR)
        issued = await h.kernel.invoke("auth.token.issue", {"subject": "alice"}, principal=OPERATOR)
    assert [(e["action"], e["actor"], e["outcome"]) for e in audit.entries] == [
        ("auth.key.created", "cli", "ok"),
        ("auth.key.revoked", "cli", "ok"),
        ("auth.token.issued", "cli", "ok"),
    ]
    assert audit.entries[0]["details"] == {
        "key_id": created["id"],
        "principal": "svc",
        "kind": "service",
        "roles": ["r"],
        "expires": None,
    }
    assert audit.entries[2]["details"]["jti"] == issued["jti"]
    text = json.dumps(audit.entries)
    assert created["key"] not in text and created["key"].split("_", 2)[2] not in text
    assert issued["token"] not in text and issued["token"].split(".")[2] not in text


# -- secrets never leak ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_secrets_never_appear_in_logs_reprs_or_errors(tmp_path: Path, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    canary_env = "ORION_TEST_JWT_CANARY"
    canary = "canary-" + "s3cr3t" * 8
    os.environ[canary_env] = canary
    try:
        settings = {
            "jwt_keys": [
                {"kid": "k1", "alg": "HS256", "secret": "auth.jwt.k1"},
                {"kid": "k2", "alg": "HS256", "env": canary_env},
            ],
            "max_failures": 2,
        }
        async with running(tmp_path, settings) as h:
            created = await h.create("svc")
            key = created["key"]
            secret = key.split("_", 2)[2]
            token = h.auth.issue_token("alice")
            errors: list[BaseException] = []
            attempts = [
                Credentials.api_key(key[:-1] + ("A" if key[-1] != "A" else "B")),
                Credentials.api_key(key[:-1] + ("C" if key[-1] != "C" else "D")),
                Credentials.api_key(key),  # throttled now
                Credentials.bearer(token[:-2] + "xx"),
                Credentials.bearer(token + "x" * 9000),
                Credentials.bearer("a.b.c"),
            ]
            for credentials in attempts:
                with pytest.raises(NotAuthenticated) as caught:
                    await h.whoami(credentials)
                errors.append(caught.value)
            local = json.loads((tmp_path / "data" / "auth" / "local_secrets.json").read_text())
            secrets_seen = [secret, key, token.split(".")[2], canary, local["auth.hash_key"], local["auth.jwt.k1"]]
            listed = await h.kernel.invoke("auth.keys.list", principal=OPERATOR)
            texts = [
                caplog.text,
                repr(h.auth),
                repr(h.auth._records),
                repr(list(h.auth._verifier.keys.values())),  # type: ignore[union-attr]
                repr(attempts),
                json.dumps(listed),
                *(str(e) for e in errors),
                *(repr(e) for e in errors),
            ]
            for text in texts:
                for value in secrets_seen:
                    assert value not in text, (value[:8], text[:200])
    finally:
        del os.environ[canary_env]


# -- other schemes through the authenticate hook ----------------------------------------------------------------


class OpaqueTokens(Plugin):
    """A third-party scheme: opaque bearer tokens and API keys of another issuer."""

    name = "opaque_tokens"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    @hookimpl
    async def authenticate(self, credentials: Credentials, operation: str) -> Principal | None:
        self.calls.append((credentials.scheme, operation))
        if credentials.secret == "opaque-good":
            return Principal(id="opaque-user", kind="user")
        if credentials.secret.startswith("acme_"):
            return Principal(id="acme-service", kind="service")
        if credentials.secret == "opaque-revoked":
            raise NotAuthenticated("opaque token revoked")
        return None


@pytest.mark.anyio
async def test_credentials_that_are_not_ours_go_to_the_authenticate_hook(tmp_path: Path) -> None:
    opaque = OpaqueTokens()
    jwt = {"jwt_keys": [{"kid": "k1", "alg": "HS256", "secret": "auth.jwt.k1"}]}
    async with running(tmp_path, jwt, extra=[opaque]) as h:
        assert (await h.whoami(Credentials.bearer("opaque-good"))).id == "opaque-user"  # type: ignore[union-attr]
        assert (await h.whoami(Credentials.api_key("acme_123_x"))).id == "acme-service"  # type: ignore[union-attr]
        assert opaque.calls == [("bearer", "tools.whoami"), ("api-key", "tools.whoami")]
        opaque.calls.clear()
        # an impl raising NotAuthenticated ("mine, and invalid") is refused with its own reason
        with pytest.raises(NotAuthenticated, match="opaque token revoked"):
            await h.whoami(Credentials.bearer("opaque-revoked"))
        with pytest.raises(NotAuthenticated, match="not a JWT"):
            await h.whoami(Credentials.bearer("nobody-knows-this"))
        assert opaque.calls == [("bearer", "tools.whoami")] * 2
        # our own keys are never offered to the hook
        key = (await h.create())["key"]
        opaque.calls.clear()
        with pytest.raises(NotAuthenticated, match="invalid API key"):
            await h.whoami(Credentials.api_key(key[:-1] + ("A" if key[-1] != "A" else "B")))
        token = h.auth.issue_token("alice")
        with pytest.raises(NotAuthenticated, match="invalid token signature"):
            await h.whoami(Credentials.bearer(token[:-1] + ("A" if token[-1] != "A" else "Q")))
        assert opaque.calls == []
        # the service asks the hook too (no operation)
        service = h.kernel._lifecycle.records["auth"].provided["authenticator"]
        assert (await service.authenticate(Credentials.bearer("opaque-good"))).id == "opaque-user"
        assert opaque.calls == [("bearer", "")]


class Consumer_(Plugin):
    """Another plugin using the authenticator service (e.g. a transport checking a header)."""

    name = "consumer"
    requires = ("authenticator",)

    async def start(self, ctx: PluginContext[Any]) -> None:
        self.ctx = ctx

    async def check(self, header: str) -> Principal:
        authenticator: Authenticator = self.ctx.service("authenticator")
        return await authenticator.authenticate(Credentials.from_header(header))


@pytest.mark.anyio
async def test_other_plugins_use_the_authenticator_service(tmp_path: Path) -> None:
    consumer = Consumer_()
    async with running(tmp_path, extra=[consumer]) as h:
        key = (await h.create("svc"))["key"]
        assert (await consumer.check(f"ApiKey {key}")).id == "svc"
        with pytest.raises(NotAuthenticated):
            await consumer.check("ApiKey ork_000000000000_nope")


# -- settings -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "path", "message"),
    [
        ({"anonymous": "maybe"}, "plugins.auth.settings.anonymous", "expected one of"),
        ({"key_prefix": "o_k"}, "plugins.auth.settings.key_prefix", "no '_'"),
        ({"max_failures": 0}, "plugins.auth.settings.max_failures", "must be >= 1"),
        ({"lockout": -1}, "plugins.auth.settings.lockout", "must be a finite number > 0"),
        ({"admin_kinds": ["anonymous"]}, "plugins.auth.settings.admin_kinds", "must not contain 'anonymous'"),
        ({"issuer_kid": "k9"}, "plugins.auth.settings.issuer_kid", "not in 'jwt_keys'"),
        ({"roles_claim": "sub"}, "plugins.auth.settings.roles_claim", "registered claim"),
        ({"max_token_bytes": 10}, "plugins.auth.settings.max_token_bytes", "must be >= 256"),
        (
            {"jwt_keys": [{"kid": "k1", "alg": "RS256", "secret": "auth.k"}]},
            "plugins.auth.settings.jwt_keys[0].alg",
            "expected one of",
        ),
        ({"jwt_keys": [{"kid": "k1", "alg": "HS256"}]}, "plugins.auth.settings.jwt_keys[0]", "exactly one of"),
        (
            {"jwt_keys": [{"kid": "k1", "alg": "HS256", "secret": "auth.k", "env": "X"}]},
            "plugins.auth.settings.jwt_keys[0]",
            "exactly one of",
        ),
        (
            {"jwt_keys": [{"kid": "k1", "alg": "HS256", "secret": "db.password"}]},
            "plugins.auth.settings.jwt_keys[0].secret",
            "namespace 'auth.'",
        ),
        (
            {"jwt_keys": [{"kid": "k 1", "alg": "HS256", "secret": "auth.k"}]},
            "plugins.auth.settings.jwt_keys[0].kid",
            "must be 1-64",
        ),
        (
            {
                "jwt_keys": [
                    {"kid": "k1", "alg": "HS256", "secret": "auth.a"},
                    {"kid": "k1", "alg": "HS256", "secret": "auth.b"},
                ]
            },
            "plugins.auth.settings.jwt_keys",
            "duplicate kids",
        ),
    ],
)
def test_bad_settings_are_config_errors_at_their_path(settings: dict[str, Any], path: str, message: str) -> None:
    kernel = Kernel({"plugins": {"auth": {"settings": settings}}}, plugins=[Auth()], environ={}, entry_points=False)
    with pytest.raises(ConfigError) as caught:
        kernel.prepare()
    [issue] = caught.value.issues
    assert issue.path.startswith(path), issue
    assert message in issue.message, issue


def test_defaults() -> None:
    settings = AuthSettings()
    assert (settings.anonymous, settings.key_prefix, settings.admin_kinds) == ("deny", "ork", ("operator",))
    assert (settings.max_failures, settings.failure_window, settings.lockout) == (5, 60.0, 60.0)
    assert (settings.required_claims, settings.roles_claim, settings.leeway) == (("exp",), "roles", 0.0)


# -- the command line ------------------------------------------------------------------------------------------------


def _cli(config: Path, *argv: str) -> tuple[int, str]:
    from kernel._cli import main

    out = io.StringIO()
    code = main(["-c", str(config), *argv], out=out)
    return code, out.getvalue()


def _config_file(tmp_path: Path) -> Path:
    path = tmp_path / "orion.toml"
    path.write_text(
        f"""
[kernel]
data_dir = "{tmp_path / "cli-data"}"

[plugins.auth]
enabled = true

[[plugins.auth.settings.jwt_keys]]
kid = "k1"
alg = "HS256"
secret = "auth.jwt.k1"
"""
    )
    return path


def test_cli_keys_create_list_revoke_and_token_issue(tmp_path: Path) -> None:
    config = _config_file(tmp_path)
    code, out = _cli(config, "auth", "keys", "create", "--principal", "svc", "--role", "a", "--role", "b", "--json")
    assert code == 0, out
    created = json.loads(out)
    assert created["principal"] == "svc" and created["roles"] == ["a", "b"] and created["key"].startswith("ork_")

    code, out = _cli(config, "auth", "keys", "create", "--principal", "temp", "--expires-in", "60")
    assert code == 0, out
    assert "created API key" in out and "store it now" in out

    code, out = _cli(config, "auth", "keys", "list", "--json")
    assert code == 0, out
    listed = json.loads(out)
    assert [row["principal"] for row in listed] == ["svc", "temp"]
    assert created["key"].split("_", 2)[2] not in out

    code, out = _cli(config, "auth", "keys", "list")
    assert code == 0 and "svc" in out and "a,b" in out

    code, out = _cli(config, "auth", "keys", "revoke", created["id"])
    assert code == 0 and f"revoked API key {created['id']}" in out
    code, out = _cli(config, "auth", "keys", "revoke", "nope")
    assert code == 1 and "no API key with id 'nope'" in out

    code, out = _cli(config, "auth", "token", "issue", "--subject", "alice", "--role", "r", "--ttl", "120", "--json")
    assert code == 0, out
    issued = json.loads(out)
    assert (issued["kid"], issued["alg"], issued["subject"]) == ("k1", "HS256", "alice")
    code, out = _cli(config, "auth", "token", "issue", "--subject", "bob")
    assert code == 0 and out.strip().splitlines()[-1].count(".") == 2

    # what the CLI made works in a kernel started from the same config
    async def check() -> None:
        async with Kernel(str(config), plugins=[Tools()]) as kernel:
            with pytest.raises(NotAuthenticated, match="revoked"):
                await kernel.invoke("tools.whoami", credentials=Credentials.api_key(created["key"]))
            principal = await kernel.invoke("tools.whoami", credentials=Credentials.bearer(issued["token"]))
            assert (principal.id, principal.roles) == ("alice", ("r",))

    anyio.run(check)


def test_the_auth_command_is_contributed_through_the_cli_hook() -> None:
    kernel = Kernel({"plugins": {}}, plugins=[Auth()], environ={}, entry_points=False)
    kernel.prepare()
    commands = [command for batch in kernel.hooks.call(hookspecs.cli_commands) for command in batch]
    assert [c.name for c in commands] == ["auth"]


# -- two instances on one data directory (a reload starts the new one beside the old) --------------------------------


@pytest.mark.anyio
async def test_a_stale_instance_never_undoes_another_ones_changes(tmp_path: Path) -> None:
    async with running(tmp_path) as old:
        key = await old.create("svc")
        async with running(tmp_path) as new:
            await old.whoami(Credentials.api_key(key["key"]))  # the old one has a last-used time to save
            await new.kernel.invoke("auth.keys.revoke", {"id": key["id"]}, principal=OPERATOR)
            later = await old.create("later")  # made by the old one after the new one loaded the file
            other = await new.create("other")
        # the new one stopped first; now the old one stops and saves its last-used times
    async with running(tmp_path) as h:
        with pytest.raises(NotAuthenticated, match="revoked"):
            await h.whoami(Credentials.api_key(key["key"]))
        for created in (later, other):
            assert (await h.whoami(Credentials.api_key(created["key"]))).id == created["principal"]  # type: ignore[union-attr]
        listed = await h.kernel.invoke("auth.keys.list", principal=OPERATOR)
        assert [row["last_used"] for row in listed if row["id"] == key["id"]] == [T0]


@pytest.mark.anyio
async def test_a_reload_with_a_new_jwt_key_keeps_keys_and_tokens(tmp_path: Path) -> None:
    k1 = {"kid": "k1", "alg": "HS256", "secret": "auth.jwt.k1"}
    k2 = {"kid": "k2", "alg": "EdDSA", "secret": "auth.jwt.k2"}

    def config(settings: dict[str, Any]) -> dict[str, Any]:
        return {"kernel": {"data_dir": str(tmp_path / "data")}, "plugins": {"auth": {"settings": settings}}}

    async with Kernel(config({"jwt_keys": [k1]}), plugins=[Auth, Tools], environ={}, entry_points=False) as kernel:
        key = await kernel.invoke("auth.keys.create", {"principal": "svc"}, principal=OPERATOR)
        old = await kernel.invoke("auth.token.issue", {"subject": "alice"}, principal=OPERATOR)
        await kernel.reload(config({"jwt_keys": [k1, k2], "issuer_kid": "k2"}))
        new = await kernel.invoke("auth.token.issue", {"subject": "bob"}, principal=OPERATOR)
        assert new["kid"] == "k2"
        for token, who in ((old["token"], "alice"), (new["token"], "bob")):
            principal = await kernel.invoke("tools.whoami", credentials=Credentials.bearer(token))
            assert principal.id == who
        principal = await kernel.invoke("tools.whoami", credentials=Credentials.api_key(key["key"]))
        assert principal.id == "svc"


def test_every_setting_has_a_row_in_the_docs() -> None:
    from builtin_plugins.security.auth import JwtKeySettings

    text = (Path(__file__).resolve().parents[2] / "docs" / "security" / "auth.md").read_text()
    for cls in (AuthSettings, JwtKeySettings):
        for field in attrs.fields(cls):
            assert f"| `{field.name}` |" in text, f"{cls.__name__}.{field.name} missing from docs/security/auth.md"
