"""Sandbox layer 1: what a plugin asks for, what the operator grants, what it holds."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import attrs
import pytest

from kernel import Kernel
from kernel._dispatch import HookRelay
from kernel._lifecycle import Lifecycle
from kernel._lifecycle import PluginRecord
from plugin_sdk import ConfigError
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginStartError
from plugin_sdk import PluginState
from plugin_sdk import hookimpl
from plugin_sdk import hookspec

pytestmark = pytest.mark.anyio


@attrs.frozen
class ListenSettings:
    host: str = "127.0.0.1"
    port: int = 8470


class Asker(Plugin):
    """Asks for what its class says; keeps what its context says it holds."""

    name = "asker"
    version = "1.0.0"
    permissions: Any = ("subprocess", "net:connect:db.local:5432")

    def __init__(self) -> None:
        self.held: list[str] | None = None
        self.allows_subprocess: bool | None = None

    async def start(self, ctx: PluginContext[Any]) -> None:
        self.held = [str(p) for p in ctx.permissions]
        self.allows_subprocess = ctx.permissions.allows("subprocess")


class Listener(Plugin):
    name = "listener"
    version = "1.0.0"
    permissions = ("net:listen:{host}:{port}",)
    Config = ListenSettings

    async def start(self, ctx: PluginContext[ListenSettings]) -> None:
        self.ctx = ctx

    def reconfigure(self, settings: ListenSettings) -> None:
        self.settings = settings


class Bystander(Plugin):
    name = "bystander"
    version = "1.0.0"


def kernel(config: dict[str, Any], *plugins: Plugin) -> Kernel:
    return Kernel(config, plugins=list(plugins), environ={}, entry_points=False)


def grant(name: str, *permissions: str, **extra: Any) -> dict[str, Any]:
    return {"plugins": {name: {"permissions": list(permissions), **extra}}}


async def test_under_deny_a_plugin_asking_for_more_than_granted_does_not_start() -> None:
    async with kernel(grant("asker", "subprocess"), Asker(), Bystander()) as k:
        info = k.plugins["asker"]
        assert info.state is PluginState.FAILED
        assert k.plugins["bystander"].state is PluginState.RUNNING
    assert info.last_error is not None
    assert "asks for permissions it was not granted: net:connect:db.local:5432" in info.last_error
    assert "subprocess," not in info.last_error.split("granted:")[1].split(";")[0]  # only what is missing
    assert 'permissions = ["subprocess", "net:connect:db.local:5432"]' in info.last_error
    assert "[plugins.asker]" in info.last_error


async def test_deny_is_the_default_and_nothing_granted_means_nothing_asked_is_held() -> None:
    async with kernel({}, Asker()) as k:
        error = k.plugins["asker"].last_error
    assert error is not None
    assert "subprocess, net:connect:db.local:5432" in error


async def test_strict_kernels_refuse_to_start_when_a_grant_is_missing() -> None:
    config = {"kernel": {"strict": True}}
    with pytest.raises(PluginStartError, match="not granted"):
        async with kernel(config, Asker()):
            pass


async def test_covered_asks_are_held_and_no_more_than_asked(tmp_path: Path) -> None:
    plugin = Asker()
    async with kernel(grant("asker", "subprocess", "net:connect:*:*", "fs:read:/etc"), plugin) as k:
        info = k.plugins["asker"]
        assert info.state is PluginState.RUNNING
    assert info.asked == ("subprocess", "net:connect:db.local:5432")
    assert info.granted == ("subprocess", "net:connect:*:*", "fs:read:/etc")
    data_dir = tmp_path / ".orion" / "asker"  # the test runs in tmp_path
    assert info.effective == ("subprocess", "net:connect:db.local:5432", f"fs:write:{data_dir}")
    assert plugin.held == list(info.effective)
    assert plugin.allows_subprocess is True


async def test_unused_grants_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "orion.kernel.sandbox")
    async with kernel(grant("asker", "subprocess", "net:connect:*:*", "secrets:x"), Asker()):
        pass
    assert "granted but not asked for (ignored): secrets:x" in caplog.text


async def test_allow_grants_every_ask() -> None:
    plugin = Asker()
    async with kernel({"kernel": {"sandbox": {"default": "allow"}}}, plugin) as k:
        assert k.plugins["asker"].state is PluginState.RUNNING
        assert k.plugins["asker"].granted == ()
    assert plugin.held is not None and "subprocess" in plugin.held


async def test_placeholders_are_filled_from_the_settings() -> None:
    plugin = Listener()
    config = grant("listener", "net:listen:127.0.0.1:*", settings={"port": 9000})
    async with kernel(config, plugin) as k:
        assert k.plugins["listener"].asked == ("net:listen:127.0.0.1:9000",)
        assert plugin.ctx.permissions.allows_connect("127.0.0.1", 9000, listen=True)
        assert not plugin.ctx.permissions.allows_connect("127.0.0.1", 9001, listen=True)


async def test_settings_that_ask_beyond_the_grant_stop_the_plugin_starting() -> None:
    config = grant("listener", "net:listen:127.0.0.1:*", settings={"host": "0.0.0.0"})
    async with kernel(config, Listener()) as k:
        error = k.plugins["listener"].last_error
    assert error is not None and "net:listen:0.0.0.0:8470" in error


async def test_a_placeholder_naming_no_setting_is_a_manifest_error() -> None:
    class Typo(Plugin):
        name = "typo"
        version = "1.0.0"
        permissions = ("net:listen:{hots}:1",)
        Config = ListenSettings

    async with kernel({}, Typo()) as k:
        error = k.plugins["typo"].last_error
    assert error is not None
    assert "manifest field 'permissions'" in error and "{hots}" in error and "host" in error


async def test_the_data_directory_placeholder_and_the_implicit_data_grant() -> None:
    class Reader(Plugin):
        name = "reader"
        version = "1.0.0"
        permissions = ("fs:read:{data_dir}/../shared",)

    async with kernel({}, Reader()) as k:
        error = k.plugins["reader"].last_error
    assert error is not None and "'..' segments" in error


@attrs.frozen
class KeySettings:
    key_file: str | None = None


class KeyReader(Plugin):
    """Reads a key file only when one is configured (an optional path setting)."""

    name = "keyreader"
    version = "1.0.0"
    permissions = ("fs:read:{key_file}",)
    Config = KeySettings


async def test_a_permission_of_an_unset_setting_is_not_asked_for() -> None:
    async with kernel({}, KeyReader()) as k:
        info = k.plugins["keyreader"]
        assert info.state is PluginState.RUNNING, info.last_error
        assert info.asked == ()


async def test_an_optional_path_outside_the_data_dir_needs_its_grant(tmp_path: Path) -> None:
    key = str(tmp_path / "keys" / "k")
    settings = {"key_file": key}
    async with kernel(grant("keyreader", settings=settings), KeyReader()) as k:
        info = k.plugins["keyreader"]
        assert info.state is PluginState.FAILED
        assert info.last_error is not None and f'permissions = ["fs:read:{key}"]' in info.last_error
    async with kernel(grant("keyreader", f"fs:read:{tmp_path}/keys", settings=settings), KeyReader()) as k:
        info = k.plugins["keyreader"]
        assert info.state is PluginState.RUNNING, info.last_error
        assert info.asked == (f"fs:read:{key}",)


async def test_a_relative_path_setting_is_inside_the_data_dir_and_needs_no_grant(tmp_path: Path) -> None:
    async with kernel({"plugins": {"keyreader": {"settings": {"key_file": "keys/k"}}}}, KeyReader()) as k:
        info = k.plugins["keyreader"]
        assert info.state is PluginState.RUNNING, info.last_error
        data_dir = tmp_path / ".orion" / "keyreader"  # the test runs in tmp_path
        assert info.asked == (f"fs:read:{data_dir}/keys/k",)


@attrs.frozen
class Mirror:
    host: str
    ca_file: str | None = None


@attrs.frozen
class MirrorSettings:
    mirrors: tuple[Mirror, ...] = ()


class MirrorClient(Plugin):
    """Connects to each configured mirror and reads its CA file, when it has one."""

    name = "mirrors"
    version = "1.0.0"
    permissions = ("net:connect:{mirrors.host}:443", "fs:read:{mirrors.ca_file}")
    Config = MirrorSettings


async def test_a_dotted_placeholder_asks_once_per_element_of_a_list(tmp_path: Path) -> None:
    settings = {"mirrors": [{"host": "a.example", "ca_file": "/etc/ca/a.pem"}, {"host": "b.example"}]}
    async with kernel(grant("mirrors", "net:connect:*.example:443", settings=settings), MirrorClient()) as k:
        info = k.plugins["mirrors"]
        assert info.state is PluginState.FAILED  # b has no CA file: only a's is asked for, and not granted
        assert info.last_error is not None
        assert "not granted: fs:read:/etc/ca/a.pem;" in info.last_error
    grants = ("net:connect:*.example:443", "fs:read:/etc/ca/**")
    async with kernel(grant("mirrors", *grants, settings=settings), MirrorClient()) as k:
        info = k.plugins["mirrors"]
        assert info.state is PluginState.RUNNING, info.last_error
        assert info.asked == ("net:connect:a.example:443", "net:connect:b.example:443", "fs:read:/etc/ca/a.pem")
    async with kernel({}, MirrorClient()) as k:  # no mirrors: nothing asked
        assert k.plugins["mirrors"].asked == ()


async def test_a_dotted_placeholder_that_leads_nowhere_is_a_manifest_error() -> None:
    class Typo(MirrorClient):
        name = "typo"
        permissions = ("fs:read:{mirrors.ca}",)

    async with kernel({"plugins": {"typo": {"settings": {"mirrors": [{"host": "a"}]}}}}, Typo()) as k:
        error = k.plugins["typo"].last_error
    assert error is not None and "{mirrors.ca} names no setting" in error

    class Root(MirrorClient):
        name = "root"
        permissions = ("fs:read:{mirror.ca_file}",)

    async with kernel({}, Root()) as k:  # the first name is checked when the manifest is read
        error = k.plugins["root"].last_error
    assert error is not None and "placeholder {mirror} is neither a field of MirrorSettings" in error


async def test_declared_services_are_held_implicitly() -> None:
    class Provider(Plugin):
        name = "provider"
        version = "1.0.0"
        provides = ("things",)

        async def start(self, ctx: PluginContext[Any]) -> None:
            ctx.provide("things", object())

    class User(Plugin):
        name = "user"
        version = "1.0.0"
        requires = ("things",)
        optional = ("extras",)

    async with kernel({}, Provider(), User()) as k:
        effective = k.plugins["user"].effective
    assert "service:things" in effective and "service:extras" in effective


async def test_a_malformed_grant_is_a_config_error_with_its_path() -> None:
    with pytest.raises(ConfigError) as caught:
        kernel(grant("asker", "subprocess", "net:connect:db.local")).prepare()
    assert "plugins.asker.permissions[1]: net:connect needs HOST:PORT" in str(caught.value)


# -- sensitive hooks ---------------------------------------------------------------------------


class Guarded:
    @hookspec(sensitive=True)
    def decide(action: str) -> bool:
        """A sensitive hook.  :param action: what is asked."""
        raise NotImplementedError


def decider(asks: tuple[str, ...]) -> Plugin:
    class Decider(Plugin):
        name = "decider"
        version = "1.0.0"
        permissions = asks
        hookspecs = (Guarded,)

        @hookimpl
        def decide(self, action: str) -> bool:
            return action == "read"

    return Decider()


async def test_a_sensitive_hook_needs_an_ask_and_a_grant() -> None:
    async with kernel({}, decider(())) as k:
        not_asked = k.plugins["decider"].last_error
        assert k.hooks.call(Guarded.decide, action="read") == []
    assert not_asked is not None and "does not ask for hook:decide" in not_asked

    async with kernel({}, decider(("hook:decide",))) as k:
        not_granted = k.plugins["decider"].last_error
        assert k.plugins["decider"].state is PluginState.FAILED
    assert not_granted is not None and 'permissions = ["hook:decide"]' in not_granted

    async with kernel(grant("decider", "hook:decide"), decider(("hook:decide",))) as k:
        assert k.plugins["decider"].state is PluginState.RUNNING
        assert k.hooks.call(Guarded.decide, action="read") == [True]


# -- reload ----------------------------------------------------------------------------------


async def test_reload_with_the_missing_grant_starts_the_plugin() -> None:
    async with kernel({}, Asker()) as k:
        assert k.plugins["asker"].state is PluginState.FAILED
        await k.reload(grant("asker", "subprocess", "net:connect:db.local:5432"))
        assert k.plugins["asker"].state is PluginState.RUNNING


async def test_reload_refuses_new_settings_that_ask_beyond_the_grant() -> None:
    plugin = Listener()
    config = grant("listener", "net:listen:127.0.0.1:*")
    async with kernel(config, plugin) as k:
        with pytest.raises(ConfigError, match=r"plugins\.listener\.permissions.*net:listen:0\.0\.0\.0:8470"):
            await k.reload(grant("listener", "net:listen:127.0.0.1:*", settings={"host": "0.0.0.0"}))
        assert k.plugins["listener"].state is PluginState.RUNNING
        await k.reload(grant("listener", "net:listen:127.0.0.1:*", settings={"port": 1234}))
        assert k.plugins["listener"].asked == ("net:listen:127.0.0.1:1234",)


# -- the context reaches nothing of the kernel --------------------------------------------------


FORBIDDEN = (Kernel, Lifecycle, HookRelay, PluginRecord)


def _public(value: object) -> list[tuple[str, object]]:
    found = []
    for name in dir(value):
        if name.startswith("_"):
            continue
        try:
            found.append((name, getattr(value, name)))
        except Exception:
            continue
    return found


async def test_nothing_public_in_a_context_leads_to_the_kernel_or_another_plugin(tmp_path: Path) -> None:
    first = Listener()
    other = type("Other", (Listener,), {"name": "other"})()
    config = {
        "kernel": {"data_dir": str(tmp_path)},
        **grant("listener", "net:listen:*:*"),
    }
    config["plugins"]["other"] = {"permissions": ["net:listen:*:*"], "settings": {"port": 1}}
    async with kernel(config, first, other) as k:
        ctx = first.ctx
        seen: list[tuple[str, object]] = []
        frontier: list[tuple[str, object]] = [("ctx", ctx)]
        for _ in range(3):  # three levels of public attributes and what their methods are bound to
            next_frontier = []
            for path, value in frontier:
                for name, child in _public(value):
                    if isinstance(child, type | int | str | float | bool | bytes) or child is None:
                        continue
                    seen.append((f"{path}.{name}", child))
                    next_frontier.append((f"{path}.{name}", child))
                    owner = getattr(child, "__self__", None)
                    if owner is not None:
                        seen.append((f"{path}.{name}.__self__", owner))
            frontier = next_frontier
        for path, value in seen:
            assert not isinstance(value, FORBIDDEN), f"{path} reaches {type(value).__name__}"
            assert value is not k
            assert value is not other.ctx, f"{path} reaches another plugin's context"
            assert value is not other.ctx.settings, f"{path} reaches another plugin's settings"
        assert {name for name, _ in _public(ctx.hooks)} == {"call", "call_each", "acall_each"}
