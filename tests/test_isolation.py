"""Sandbox layer 3: plugins in worker processes (isolation = "process"), confined and supervised."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from isolated_plugins import Consumer
from isolated_plugins import Echo
from isolated_plugins import Misbehaving
from isolated_plugins import Specs

from kernel import Kernel
from plugin_sdk import Invocation
from plugin_sdk import OperationFailed
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginCrashed
from plugin_sdk import PluginError
from plugin_sdk import PluginState

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def isolated(name: str, **process: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"isolation": "process"}
    if process:
        entry["process"] = process
    return {name: entry}


def kernel(plugins_config: dict[str, Any], *plugins: Plugin, **kernel_settings: Any) -> Kernel:
    config = {"kernel": kernel_settings, "plugins": plugins_config}
    return Kernel(config, plugins=list(plugins), hookspecs=[Specs], environ={}, entry_points=False)


async def eventually(check: Any, seconds: float = 15.0) -> Any:
    """Poll ``check()`` until it returns something truthy (a restart takes a fresh process)."""
    with anyio.fail_after(seconds):
        while True:
            try:
                value = await check()
            except (PluginCrashed, PluginError):
                value = None
            if value:
                return value
            await anyio.sleep(0.05)


async def test_an_isolated_plugin_serves_operations_hooks_and_settings() -> None:
    config = isolated("echo")
    config["echo"]["settings"] = {"greeting": "hi"}
    async with kernel(config, Echo()) as k:
        info = k.plugins["echo"]
        assert info.state is PluginState.RUNNING, info.last_error
        assert await k.invoke("echo.say", {"who": "Ada"}) == "hi, Ada"
        assert await k.invoke("echo.pid", {}) != os.getpid()
        assert k.hooks.call(Specs.shout, text="abc") == ["ABC"]
        assert await k.hooks.call(Specs.fetch, key="k") == ["hi:k"]
        assert k.operations["echo.say"].doc == "Say something."
    assert k.plugins["echo"].state is PluginState.STOPPED


@pytest.mark.parametrize("spin_us", [0, 200, 100_000])
async def test_a_worker_serves_the_same_with_any_spin_before_sleeping(spin_us: int) -> None:
    async with kernel(isolated("echo", spin_us=spin_us), Echo()) as k:
        for round_ in range(3):
            assert await k.hooks.call(Specs.fetch, key=str(round_)) == [f"hello:{round_}"]
            assert k.hooks.call(Specs.shout, text="abc") == ["ABC"]
            await anyio.sleep(0.01 * round_)  # gaps shorter and longer than the window


async def test_an_error_in_the_worker_reaches_the_caller_typed() -> None:
    async with kernel(isolated("echo"), Echo()) as k:
        with pytest.raises(OperationFailed, match="ValueError: no such thing"):
            await k.invoke("echo.fail", {})
        assert await k.invoke("echo.say", {"who": "again"}) == "hello, again"


async def test_bad_settings_are_reported_by_the_worker_with_their_path() -> None:
    config = isolated("echo")
    config["echo"]["settings"] = {"greeting": 5}
    from plugin_sdk import ConfigError

    with pytest.raises(ConfigError, match=r"plugins\.echo\.settings\.greeting"):
        kernel(config, Echo()).prepare()


async def test_services_cross_the_boundary_both_ways() -> None:
    # an in-process consumer of the isolated plugin's service
    async with kernel(isolated("echo"), Echo(), Consumer()) as k:
        await k.invoke("echo.say", {"who": "a"})
        assert await k.invoke("consumer.count", {}) == 1
    # an isolated consumer of an in-process service
    async with kernel(isolated("consumer"), Echo(), Consumer()) as k:
        assert k.plugins["consumer"].state is PluginState.RUNNING, k.plugins["consumer"].last_error
        await k.invoke("echo.say", {"who": "a"})
        await k.invoke("echo.say", {"who": "b"})
        assert await k.invoke("consumer.count", {}) == 2


async def test_a_crash_fails_the_call_in_flight_and_the_worker_comes_back() -> None:
    async with kernel(isolated("echo", backoff=0.05), Echo(), Consumer()) as k:
        first = await k.invoke("echo.pid", {})
        with pytest.raises(PluginCrashed, match="crashed"):
            await k.invoke("echo.crash", {})
        second = await eventually(lambda: k.invoke("echo.pid", {}))
        assert second != first
        assert k.plugins["echo"].state is PluginState.RUNNING
        assert await k.invoke("echo.say", {"who": "back"}) == "hello, back"


async def test_a_hung_call_is_bounded_and_the_worker_replaced() -> None:
    async with kernel(isolated("echo", call_timeout=1.0, backoff=0.05), Echo()) as k:
        first = await k.invoke("echo.pid", {})
        began = anyio.current_time()
        with pytest.raises(PluginCrashed, match="did not answer within 1s"):
            await k.invoke("echo.hang", {})
        assert anyio.current_time() - began < 3
        assert await eventually(lambda: k.invoke("echo.pid", {})) != first


async def test_crashing_too_often_quarantines_the_plugin() -> None:
    async with kernel(isolated("echo", max_restarts=1, backoff=0.05), Echo()) as k:
        for _ in range(2):
            await eventually(lambda: k.invoke("echo.pid", {}))
            with pytest.raises(PluginCrashed):
                await k.invoke("echo.crash", {})
        with anyio.fail_after(10):
            while k.plugins["echo"].state is not PluginState.QUARANTINED:  # noqa: ASYNC110
                await anyio.sleep(0.05)
        with pytest.raises(PluginCrashed, match="quarantined"):
            await k.invoke("echo.pid", {})


async def test_the_worker_gets_a_scrubbed_environment_and_its_data_directory(tmp_path: Path) -> None:
    os.environ["ORION_TEST_SECRET"] = "do-not-leak"
    try:
        config = isolated("misbehaving", env={"GIVEN": "yes"})
        async with kernel(config, Misbehaving(), data_dir=str(tmp_path / "data")) as k:
            env = await k.invoke("misbehaving.env", {})
    finally:
        del os.environ["ORION_TEST_SECRET"]
    assert "ORION_TEST_SECRET" not in env
    assert env["GIVEN"] == "yes"
    assert env["HOME"] == str((tmp_path / "data" / "misbehaving").resolve())


async def test_landlock_keeps_the_worker_to_its_grants(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    async with kernel(isolated("misbehaving"), Misbehaving()) as k:
        protections = k.plugins["misbehaving"].protections
        if not protections.get("landlock_fs"):
            pytest.skip(f"Landlock is not available here: {protections.get('warnings')}")
        with pytest.raises(OperationFailed, match="PermissionError"):
            await k.invoke("misbehaving.read", {"path": str(secret)})
        # a thread started after the confinement is confined as well
        assert "PermissionError" in await k.invoke("misbehaving.thread_read", {"path": str(secret)})


async def test_seccomp_refuses_processes_without_the_grant() -> None:
    async with kernel(isolated("misbehaving"), Misbehaving()) as k:
        if not k.plugins["misbehaving"].protections.get("seccomp"):
            pytest.skip("seccomp is not available here")
        with pytest.raises(OperationFailed, match="PermissionError"):
            await k.invoke("misbehaving.subprocess", {})


async def test_a_worker_sending_garbage_or_an_oversized_frame_is_killed() -> None:
    async with kernel(isolated("misbehaving", backoff=0.05), Misbehaving()) as k:
        for bad in ("garbage", "oversized"):
            first = await eventually(lambda: k.invoke("misbehaving.pid", {}))
            with pytest.raises(PluginCrashed):
                await k.invoke(f"misbehaving.{bad}", {})
            assert await eventually(lambda: k.invoke("misbehaving.pid", {})) != first


async def test_memory_and_cpu_limits_cost_only_the_worker() -> None:
    # two kernels: allocating 512 MiB takes CPU time too, which a 1 s CPU limit could end first
    async with kernel(isolated("misbehaving", memory_mb=512, call_timeout=10.0), Misbehaving(), Echo()) as k:
        with pytest.raises(OperationFailed, match="MemoryError"):
            await k.invoke("misbehaving.allocate", {})
        assert await k.invoke("misbehaving.pid", {})  # the limit raised in the worker: it still serves
        assert await k.invoke("echo.say", {"who": "still here"}) == "hello, still here"  # in-process, unharmed
    config = isolated("misbehaving", cpu_seconds=1, backoff=0.05, call_timeout=10.0)
    async with kernel(config, Misbehaving(), Echo()) as k:
        with pytest.raises(PluginCrashed, match=r"signal 24|CPU"):
            await k.invoke("misbehaving.spin", {})
        assert await k.invoke("echo.say", {"who": "still here"}) == "hello, still here"


async def test_a_plugin_class_a_fresh_process_cannot_import_is_refused_clearly() -> None:
    class Local(Plugin):
        name = "local"
        version = "1.0.0"

        async def start(self, ctx: PluginContext[Any]) -> None:
            ctx.register_operation("local.x", self.x)

        async def x(self, inv: Invocation) -> None:
            return None

    async with kernel(isolated("local"), Local()) as k:
        error = k.plugins["local"].last_error
    assert error is not None and "not importable by a fresh process" in error


async def test_a_sync_hook_that_hangs_times_out_and_the_worker_is_replaced() -> None:
    async with kernel(isolated("echo", call_timeout=0.5, backoff=0.05), Echo()) as k:
        first = await k.invoke("echo.pid", {})
        assert k.hooks.call(Specs.shout, text="x") == ["X"]
        began = anyio.current_time()
        assert k.hooks.call(Specs.shout, text="slow") == []  # isolate policy: the timeout is recorded, skipped
        assert anyio.current_time() - began < 2
        assert k.hooks.consecutive_failures("echo") == 1
        assert await eventually(lambda: k.invoke("echo.pid", {})) != first
        assert k.hooks.call(Specs.shout, text="y") == ["Y"]


async def test_an_operator_wrapper_command_starts_the_worker() -> None:
    # a stand-in for bwrap or nsjail: any command that runs the rest of its arguments
    config = isolated("misbehaving", wrapper=["/usr/bin/env", "ORION_WRAPPED=1"])
    async with kernel(config, Misbehaving()) as k:
        assert k.plugins["misbehaving"].state is PluginState.RUNNING, k.plugins["misbehaving"].last_error
        env = await k.invoke("misbehaving.env", {})
    assert env["ORION_WRAPPED"] == "1"


def test_process_isolation_needs_the_asyncio_backend() -> None:
    async def main() -> str | None:
        async with kernel(isolated("echo"), Echo()) as k:
            return k.plugins["echo"].last_error

    error = anyio.run(main, backend="trio")
    assert error is not None and "does not support the trio event loop" in error
