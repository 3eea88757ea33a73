"""What monitoring plugins get from the SDK: ctx.hooks (with per-plugin outcomes),
ctx.introspect(), and the CLI's default profile."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

from kernel import Kernel
from kernel._cli import config_source
from plugin_sdk import HealthStatus
from plugin_sdk import HookOutcome
from plugin_sdk import Hooks
from plugin_sdk import HookTimeout
from plugin_sdk import KernelSnapshot
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginState
from plugin_sdk import hookimpl
from plugin_sdk import hookspec
from plugin_sdk import hookspecs


class Specs:
    @hookspec()
    def describe(topic: str) -> str:  # type: ignore[misc]
        """A sync hook for these tests.  :param topic: what to describe."""
        raise NotImplementedError


class Healthy(Plugin):
    name = "healthy"
    version = "1.0.0"

    @hookimpl
    async def check_health(self) -> HealthStatus:
        return HealthStatus(ok=True, reason="fine")

    @hookimpl
    def describe(self, topic: str) -> str:
        return f"healthy knows {topic}"


class Hanging(Plugin):
    name = "hanging"
    version = "2.0.0"

    @hookimpl
    async def check_health(self) -> HealthStatus:
        await anyio.sleep(30)
        return HealthStatus(ok=True)


class Broken(Plugin):
    name = "broken"
    version = "3.0.0"

    @hookimpl
    async def check_health(self) -> HealthStatus:
        raise RuntimeError("disk on fire")

    @hookimpl
    def describe(self, topic: str) -> str:
        raise ValueError(f"no idea about {topic}")


class Caller(Plugin):
    """Keeps its context so tests can call ctx.hooks / ctx.introspect() as a plugin would."""

    name = "caller"
    version = "1.0.0"

    async def start(self, ctx: PluginContext[Any]) -> None:
        self.ctx = ctx
        ctx.register_operation("caller.ping", self.ping)

    async def ping(self, inv: Any) -> str:
        return "pong"


def kernel_with(*plugins: Plugin, **kernel_settings: Any) -> Kernel:
    return Kernel({"kernel": kernel_settings}, plugins=list(plugins), hookspecs=[Specs], environ={})


@pytest.mark.anyio
async def test_call_each_returns_every_plugins_outcome_in_order() -> None:
    caller = Caller()
    async with kernel_with(caller, Healthy(), Broken()):
        hooks: Hooks = caller.ctx.hooks
        outcomes = hooks.call_each(Specs.describe, topic="tea")
    assert [(o.plugin, o.value, o.ok) for o in outcomes] == [
        ("broken", None, False),
        ("healthy", "healthy knows tea", True),
    ]
    assert isinstance(outcomes[0].error, ValueError)


@pytest.mark.anyio
async def test_acall_each_reports_a_hanging_impl_as_timed_out_within_the_deadline() -> None:
    caller = Caller()
    async with kernel_with(caller, Healthy(), Hanging(), Broken(), hook_timeouts={"check_health": 0.2}) as kernel:
        began = anyio.current_time()
        outcomes = await caller.ctx.hooks.acall_each(hookspecs.check_health)
        elapsed = anyio.current_time() - began
        failures = kernel.hooks.consecutive_failures("hanging")
    by_plugin = {o.plugin: o for o in outcomes}
    assert elapsed < 2
    assert by_plugin["healthy"] == HookOutcome("healthy", HealthStatus(ok=True, reason="fine"))
    assert isinstance(by_plugin["hanging"].error, HookTimeout)
    assert isinstance(by_plugin["broken"].error, RuntimeError)
    assert failures == 1


@pytest.mark.anyio
async def test_call_each_checks_argument_names() -> None:
    caller = Caller()
    async with kernel_with(caller):
        with pytest.raises(TypeError, match="missing"):
            caller.ctx.hooks.call_each(Specs.describe)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="keyword arguments only"):
            caller.ctx.hooks.call_each(Specs.describe, "tea")  # type: ignore[call-arg]


@pytest.mark.anyio
async def test_introspect_shows_plugins_hooks_and_operations() -> None:
    caller = Caller()
    async with kernel_with(caller, Healthy(), Broken()):
        snapshot = caller.ctx.introspect()
    assert isinstance(snapshot, KernelSnapshot)
    plugins = {p.name: p for p in snapshot.plugins}
    assert set(plugins) == {"caller", "healthy", "broken"}
    assert plugins["healthy"].state is PluginState.RUNNING
    assert plugins["healthy"].version == "1.0.0"
    assert plugins["caller"].operations == ("caller.ping",)
    assert snapshot.operations == ("caller.ping",)
    assert snapshot.hooks["check_health"] == ("broken", "healthy")
    assert snapshot.hooks["describe"] == ("broken", "healthy")
    assert "plugin_state_changed" in snapshot.hooks


def test_cli_uses_the_default_profile_only_without_a_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    (site / "profiled-1.0.dist-info").mkdir(parents=True)
    (site / "profiled-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: profiled\nVersion: 1.0\n")
    (site / "profiled-1.0.dist-info" / "entry_points.txt").write_text(
        "[orion_kernel.profiles]\ndefault = profiled_profile:DEFAULT\n"
    )
    (site / "profiled_profile.py").write_text(
        textwrap.dedent(
            """
            DEFAULT = {"kernel": {"start_timeout": 7.0}}
            """
        )
    )
    monkeypatch.syspath_prepend(str(site))
    import importlib

    importlib.invalidate_caches()
    assert config_source(None) == {"kernel": {"start_timeout": 7.0}}
    (tmp_path / "orion.toml").write_text("[kernel]\n")
    assert config_source(None) == "orion.toml"
    assert config_source(Path("other.toml")) == "other.toml"
    sys.modules.pop("profiled_profile", None)
