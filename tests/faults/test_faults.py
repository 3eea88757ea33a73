"""Fault injection (issue 4): a misbehaving plugin next to a healthy one, in-process and isolated.

Every test runs ``Faulty`` (in the mode under test) and ``Healthy`` (in-process)
while a background task invokes ``healthy.ping`` every 20 ms, and asserts both
what the kernel did about the fault and that every healthy invoke succeeded.
"""

from __future__ import annotations

import gc
import os
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import alive
from conftest import make_kernel
from conftest import pinging
from conftest import worker_pid
from fault_plugins import FaultSpecs
from fault_plugins import Healthy
from fault_plugins import Placeholders

from kernel import Kernel
from plugin_sdk import HookTimeout
from plugin_sdk import OperationFailed
from plugin_sdk import PermissionDenied
from plugin_sdk import PluginCrashed
from plugin_sdk import PluginError
from plugin_sdk import PluginState
from plugin_sdk import WorkerError

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

#: no single test may take longer than this
BOUND = 20.0


async def eventually(check: Any, seconds: float = 10.0) -> Any:
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


async def gone(pid: int, seconds: float = 5.0) -> bool:
    with anyio.move_on_after(seconds):
        while alive(pid):  # noqa: ASYNC110
            await anyio.sleep(0.05)
    return not alive(pid)


def isolated_only(mode: str, why: str) -> None:
    if mode != "process":
        pytest.skip(f"isolated only, not run in-process: {why}")


async def restarted(k: Kernel, first: int) -> None:
    """The isolated plugin serves again from a new worker."""
    second = await eventually(lambda: k.invoke("faulty.pid", {}))
    assert second != first
    assert k.plugins["faulty"].state is PluginState.RUNNING


# -- 1. raises ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "how", "reason"),
    [
        ("start", "raise", "faulty start"),
        ("start", "hang", "start() did not finish within 1s"),
        ("stop", "raise", "faulty stop"),
        ("stop", "hang", "stop() did not finish within 1s"),
    ],
)
async def test_raises_or_hangs_in_start_or_stop(
    mode: str, tmp_path: Path, request: pytest.FixtureRequest, where: str, how: str, reason: str
) -> None:
    """1-2. start()/stop() raise or hang: FAILED with the reason, bounded; the worker (isolated) is gone."""
    data = tmp_path / "data"
    with anyio.fail_after(BOUND):
        k = make_kernel(mode, data, settings={f"on_{where}": how})
        began = anyio.current_time()
        async with k:
            started = anyio.current_time() - began
            state_after_start = k.plugins["faulty"].state
            async with pinging(k) as pings:
                if where == "stop":
                    assert await k.invoke("faulty.pid", {})
                else:
                    assert "faulty.pid" not in k.operations
                    await anyio.sleep(0.1)
            began = anyio.current_time()
        stopped = anyio.current_time() - began
        info = k.plugins["faulty"]
        pid = worker_pid(data)
        leaked = mode == "process" and pid is not None and not await gone(pid, 3.0)
        if leaked:
            assert pid is not None
            os.killpg(pid, signal.SIGKILL)
        del k  # a failed assertion keeps this frame: let the worker's transport go while the loop runs
        gc.collect()
    pings.assert_unharmed()
    assert started < 5 and stopped < 5
    assert state_after_start is (PluginState.FAILED if where == "start" else PluginState.RUNNING)
    assert info.state is PluginState.FAILED
    assert info.last_error is not None
    assert reason in info.last_error
    assert not leaked, f"the worker {pid} of a plugin whose {where}() failed is still running"


async def test_raises_in_a_sync_hook(mode: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with anyio.fail_after(BOUND):
        async with make_kernel(mode, tmp_path / "data") as k:
            async with pinging(k) as pings:
                assert [o.value for o in k.hooks.call_each(FaultSpecs.poke, how="ok")] == ["poked"]
                (outcome,) = k.hooks.call_each(FaultSpecs.poke, how="raise")
                assert outcome.plugin == "faulty"
                assert "faulty sync hook" in str(outcome.error)
                assert k.hooks.consecutive_failures("faulty") == 1, "an isolated hook's failure did not count"
                assert [o.value for o in k.hooks.call_each(FaultSpecs.poke, how="ok")] == ["poked"]
            pings.assert_unharmed()
            assert k.plugins["faulty"].state is PluginState.RUNNING


async def test_raises_in_an_async_hook(mode: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with anyio.fail_after(BOUND):
        async with make_kernel(mode, tmp_path / "data") as k:
            async with pinging(k) as pings:
                (outcome,) = await k.hooks.acall_each(FaultSpecs.apoke, how="raise")
                assert "faulty async hook" in str(outcome.error)
                assert k.hooks.consecutive_failures("faulty") == 1, "an isolated hook's failure did not count"
                assert await k.hooks.call(FaultSpecs.apoke, how="ok") == ["apoked"]
            pings.assert_unharmed()
            assert k.plugins["faulty"].state is PluginState.RUNNING


async def test_raises_in_an_operation(mode: str, tmp_path: Path) -> None:
    with anyio.fail_after(BOUND):
        async with make_kernel(mode, tmp_path / "data") as k:
            async with pinging(k) as pings:
                first = await k.invoke("faulty.pid", {})
                with pytest.raises(Exception, match="faulty operation") as raised:
                    await k.invoke("faulty.fail", {})
                if mode == "process":  # the same type as in-process; the worker's exception is its cause
                    assert isinstance(raised.value, OperationFailed) and "ValueError" in str(raised.value)
                    assert isinstance(raised.value.__cause__, WorkerError)
                assert await k.invoke("faulty.pid", {}) == first  # same worker: an error is not a crash
            pings.assert_unharmed()


# -- 2. hangs -----------------------------------------------------------------------------------


async def test_hangs_in_an_async_hook_with_a_deadline(mode: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with anyio.fail_after(BOUND):
        async with make_kernel(mode, data) as k:
            first = await k.invoke("faulty.pid", {})
            async with pinging(k) as pings:
                began = anyio.current_time()
                (outcome,) = await k.hooks.acall_each(FaultSpecs.apoke, how="hang")
                assert anyio.current_time() - began < 2
                assert isinstance(outcome.error, HookTimeout)
                assert k.hooks.consecutive_failures("faulty") == 1
                assert await k.hooks.call(FaultSpecs.apoke, how="ok") == ["apoked"]
            pings.assert_unharmed()
            if mode == "process":
                # the spec's 0.5 s deadline is shorter than call_timeout: the worker is not killed
                assert await k.invoke("faulty.pid", {}) == first


async def test_hangs_in_a_sync_hook(mode: str, tmp_path: Path) -> None:
    isolated_only(mode, "a sync hook that sleeps blocks the caller's thread; nothing can interrupt it")
    with anyio.fail_after(BOUND):
        async with make_kernel(mode, tmp_path / "data") as k:
            first = await k.invoke("faulty.pid", {})
            async with pinging(k) as pings:
                # called from a thread: called from the event loop, the blocking round trip
                # would stall every task (healthy pings included) for call_timeout
                began = anyio.current_time()
                (outcome,) = await anyio.to_thread.run_sync(lambda: k.hooks.call_each(FaultSpecs.poke, how="hang"))
                assert anyio.current_time() - began < 3
                assert isinstance(outcome.error, HookTimeout)
                await restarted(k, first)
                assert [o.value for o in k.hooks.call_each(FaultSpecs.poke, how="ok")] == ["poked"]
            pings.assert_unharmed()


# -- 3. blocks the event loop ---------------------------------------------------------------------


async def test_blocks_the_event_loop(mode: str, tmp_path: Path) -> None:
    with anyio.fail_after(BOUND):
        async with make_kernel(mode, tmp_path / "data") as k:
            first = await k.invoke("faulty.pid", {})
            async with pinging(k) as pings:
                if mode == "inprocess":
                    assert await k.invoke("faulty.block", {"seconds": 0.5}) == 0.5
                else:
                    with pytest.raises(PluginCrashed, match="did not answer within 1s"):
                        await k.invoke("faulty.block", {"seconds": 30})
                    await restarted(k, first)
            pings.assert_unharmed()
            if mode == "inprocess":
                # the whole loop stalled: no ping ran for the sleep, but none failed
                assert pings.max_gap >= 0.45
            else:
                assert pings.max_gap < 0.4


# -- 4. leaks background tasks -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "linger"), [("leak", 0.0), ("leak_stubborn", 0.3), ("leak_stubborn", 1.5)], ids=str
)
async def test_leaks_background_tasks(mode: str, tmp_path: Path, operation: str, linger: float) -> None:
    data = tmp_path / "data"
    with anyio.fail_after(BOUND):
        k = make_kernel(mode, data)
        async with k:
            async with pinging(k) as pings:
                await k.invoke(f"faulty.{operation}", {"linger": linger})
                await k.invoke(f"faulty.{operation}", {"linger": linger})
            pings.assert_unharmed()
            pid = worker_pid(data)
            began = anyio.current_time()
        assert anyio.current_time() - began < 6
        info = k.plugins["faulty"]
        if linger > 1.0:  # outlives stop_timeout after being cancelled: FAILED, with the reason
            assert info.state is PluginState.FAILED
            assert info.last_error is not None
            if mode == "inprocess":
                assert "background tasks did not finish within 1s" in info.last_error
            else:  # the worker's stop waits for its tasks; the kernel sees stop() overrun
                assert "did not exit within the stop timeout" in info.last_error
        else:
            assert info.state is PluginState.STOPPED, info.last_error
        if mode == "inprocess":
            assert pid == os.getpid()
        else:
            assert pid is not None and await gone(pid), f"the worker {pid} is still running after stop"


# -- 5-8. crashes and limits (isolated only) -------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "signal"),
    [("exit", "exited with code 7"), ("segfault", "signal 11")],
)
async def test_the_worker_dies(mode: str, tmp_path: Path, operation: str, signal: str) -> None:
    isolated_only(mode, f"{operation} would end the test process")
    with anyio.fail_after(BOUND):
        async with make_kernel(mode, tmp_path / "data") as k:
            first = await k.invoke("faulty.pid", {})
            async with pinging(k) as pings:
                with pytest.raises(PluginCrashed, match="crashed"):
                    await k.invoke(f"faulty.{operation}", {})
                await restarted(k, first)
            pings.assert_unharmed()
            assert k.plugins["faulty"].state is PluginState.RUNNING


async def test_allocates_without_bound(mode: str, tmp_path: Path) -> None:
    isolated_only(mode, "unbounded allocation would exhaust the test process (no memory limit in-process)")
    with anyio.fail_after(BOUND):
        async with make_kernel(mode, tmp_path / "data", process={"memory_mb": 512, "call_timeout": 5.0}) as k:
            first = await k.invoke("faulty.pid", {})
            async with pinging(k) as pings:
                with pytest.raises((OperationFailed, PluginCrashed)) as raised:
                    await k.invoke("faulty.allocate", {})
                if isinstance(raised.value, PluginCrashed):
                    await restarted(k, first)
                else:
                    assert "MemoryError" in str(raised.value)
                    assert await k.invoke("faulty.pid", {}) == first  # still serving
            pings.assert_unharmed()


async def test_spins_the_cpu(mode: str, tmp_path: Path) -> None:
    isolated_only(mode, "a spinning handler would hold the test's event loop forever (no CPU limit in-process)")
    # call_timeout above cpu_seconds, so that the CPU limit is what ends it
    with anyio.fail_after(BOUND):
        async with make_kernel(mode, tmp_path / "data", process={"cpu_seconds": 1, "call_timeout": 5.0}) as k:
            first = await k.invoke("faulty.pid", {})
            async with pinging(k) as pings:
                with pytest.raises(PluginCrashed, match=r"signal 24|CPU"):
                    await k.invoke("faulty.spin", {})
                await restarted(k, first)
            pings.assert_unharmed()


# -- 9-11. what it was not granted ---------------------------------------------------------------


def secret(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "secret.txt"
    path.parent.mkdir(exist_ok=True)
    path.write_text("s3cret")
    return path


def needs(k: Kernel, *protections: str) -> None:
    got = k.plugins["faulty"].protections
    missing = [p for p in protections if not got.get(p)]
    if missing:
        pytest.skip(f"this host's kernel lacks {missing}: {got.get('warnings')}")


async def test_ungranted_file_socket_and_subprocess(mode: str, tmp_path: Path, listeners: Any) -> None:
    _, other = listeners
    path = secret(tmp_path)
    guard = "enforce" if mode == "inprocess" else "off"
    with anyio.fail_after(BOUND):
        async with make_kernel(mode, tmp_path / "data", guard=guard) as k:
            if mode == "process":
                needs(k, "landlock_fs", "landlock_net", "seccomp")
            first = await k.invoke("faulty.pid", {})
            attempts = [
                ("faulty.read", {"path": str(path)}),
                ("faulty.connect", {"port": other.port}),
                ("faulty.subprocess", {}),
            ]
            async with pinging(k) as pings:
                for operation, args in attempts:
                    if mode == "inprocess":
                        with pytest.raises(PermissionDenied, match="plugin 'faulty' may not"):
                            await k.invoke(operation, args)
                    else:
                        with pytest.raises(OperationFailed, match="PermissionError"):
                            await k.invoke(operation, args)
                if mode == "process":
                    assert await k.invoke("faulty.pid", {}) == first  # refused, not crashed
            pings.assert_unharmed()
            assert other.accepted == 0
            if mode == "inprocess":
                assert k.guard is not None
                denied = {e.permission.split(":")[0] for e in k.guard.denied("faulty")}
                assert denied == {"fs", "net", "subprocess"}
                assert k.guard.denied("healthy") == []


async def test_grants_are_kept_to_their_letter(mode: str, tmp_path: Path, listeners: Any) -> None:
    isolated_only(mode, "the in-process guard case is test_ungranted_file_socket_and_subprocess")
    granted, other = listeners
    path = secret(tmp_path)
    allowed = tmp_path / "allowed" / "ok.txt"
    allowed.parent.mkdir(exist_ok=True)
    allowed.write_text("fine")
    with anyio.fail_after(BOUND):
        async with make_kernel(mode, tmp_path / "data", allowed_dir=allowed.parent, allowed_port=granted.port) as k:
            needs(k, "landlock_fs", "landlock_net")
            async with pinging(k) as pings:
                for prefix in ("", "thread_"):
                    assert await k.invoke(f"faulty.{prefix}read", {"path": str(allowed)}) == "fine"
                    assert await k.invoke(f"faulty.{prefix}connect", {"port": granted.port}) == "hi"
                with pytest.raises(OperationFailed, match="PermissionError"):
                    await k.invoke("faulty.read", {"path": str(path)})
                with pytest.raises(OperationFailed, match="PermissionError"):
                    await k.invoke("faulty.connect", {"port": other.port})
                # 11. a thread the plugin starts is confined as well
                assert "PermissionError" in await k.invoke("faulty.thread_read", {"path": str(path)})
                assert "PermissionError" in await k.invoke("faulty.thread_connect", {"port": other.port})
            pings.assert_unharmed()
            assert granted.accepted == 2
            assert other.accepted == 0


# -- 12. an undeclared service --------------------------------------------------------------------


async def test_asks_for_an_undeclared_service(mode: str, tmp_path: Path) -> None:
    with anyio.fail_after(BOUND):
        async with make_kernel(mode, tmp_path / "data") as k:
            async with pinging(k) as pings:
                with pytest.raises(PermissionDenied, match="undeclared"):
                    await k.invoke("faulty.undeclared", {})
            pings.assert_unharmed()
            assert k.plugins["faulty"].state is PluginState.RUNNING


# -- 13. bad frames ------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["garbage", "oversized"])
async def test_sends_a_bad_frame(mode: str, tmp_path: Path, operation: str) -> None:
    isolated_only(mode, "there is no channel in-process")
    with anyio.fail_after(BOUND):
        async with make_kernel(mode, tmp_path / "data") as k:
            first = await k.invoke("faulty.pid", {})
            async with pinging(k) as pings:
                with pytest.raises(PluginCrashed):
                    await k.invoke(f"faulty.{operation}", {})
                await restarted(k, first)
            pings.assert_unharmed()


# -- after it all ---------------------------------------------------------------------------------


async def test_the_kernel_exits_cleanly_after_every_fault(mode: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with anyio.fail_after(BOUND):
        k = make_kernel(mode, data, settings={"on_stop": "raise"})
        async with k:
            async with pinging(k) as pings:
                with pytest.raises(Exception, match="faulty operation"):
                    await k.invoke("faulty.fail", {})
                await k.hooks.acall_each(FaultSpecs.apoke, how="hang")
                k.hooks.call_each(FaultSpecs.poke, how="raise")
                await k.invoke("faulty.leak", {})
                await k.invoke("faulty.leak_stubborn", {"linger": 0.2})
                with pytest.raises(PermissionDenied):
                    await k.invoke("faulty.undeclared", {})
                if mode == "process":
                    for operation in ("exit", "garbage", "block"):
                        first = await eventually(lambda: k.invoke("faulty.pid", {}))
                        with pytest.raises(PluginCrashed):
                            await k.invoke(f"faulty.{operation}", {"seconds": 30})
                        await restarted(k, first)
                    await k.invoke("faulty.leak", {})
            pings.assert_unharmed()
            pid = worker_pid(data)
            began = anyio.current_time()
        assert anyio.current_time() - began < 5
        assert k.plugins["healthy"].state is PluginState.STOPPED
        assert k.plugins["faulty"].state in (PluginState.STOPPED, PluginState.FAILED)
        if mode == "process":
            assert pid is not None and await gone(pid)


# -- kernel bugs found ----------------------------------------------------------------------------


async def test_an_isolated_plugin_may_use_settings_placeholders_in_its_permissions(tmp_path: Path) -> None:
    config = {
        "kernel": {"data_dir": str(tmp_path / "data")},
        "plugins": {"placeholders": {"isolation": "process", "permissions": ["net:listen:127.0.0.1:47392"]}},
    }
    with anyio.fail_after(BOUND):
        async with Kernel(config, plugins=[Placeholders(), Healthy()], environ={}, entry_points=False) as k:
            assert k.plugins["placeholders"].state is PluginState.RUNNING, k.plugins["placeholders"].last_error
            assert await k.invoke("placeholders.port", {}) == 47392
