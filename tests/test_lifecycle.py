"""Lifecycle: start order from the service graph, concurrency, failures, timeouts, tasks, stop order.

Every plugin here records what happens to it in a shared :class:`Journal` with
``time.perf_counter()`` timestamps, so ordering and concurrency are proven by
the clock rather than assumed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from kernel import Kernel
from plugin_sdk import DispatchObserver
from plugin_sdk import Invocation
from plugin_sdk import OperationNotFound
from plugin_sdk import Phase
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginStartError
from plugin_sdk import PluginState
from plugin_sdk import ServiceUnavailable
from plugin_sdk import hookimpl

Hook = Callable[[PluginContext[Any]], Awaitable[None]]


class Journal:
    """What happened to which plugin, and when."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, float]] = []

    def record(self, plugin: str, what: str) -> None:
        self.events.append((plugin, what, time.perf_counter()))

    def at(self, plugin: str, what: str) -> float:
        found = [t for p, w, t in self.events if p == plugin and w == what]
        assert len(found) == 1, f"expected one {what!r} of {plugin!r}, got {len(found)}: {self.events}"
        return found[0]

    def count(self, plugin: str, what: str) -> int:
        return sum(1 for p, w, _ in self.events if p == plugin and w == what)

    def order(self, what: str) -> list[str]:
        return [p for p, w, _ in self.events if w == what]


class Recorder(Plugin):
    """A plugin that journals its start and stop and can be told to misbehave."""

    def __init__(
        self,
        journal: Journal,
        *,
        start_delay: float = 0.0,
        stop_delay: float = 0.0,
        start_error: Exception | None = None,
        stop_error: Exception | None = None,
        on_start: Hook | None = None,
    ) -> None:
        self.journal = journal
        self.start_delay = start_delay
        self.stop_delay = stop_delay
        self.start_error = start_error
        self.stop_error = stop_error
        self.on_start = on_start
        self.ctx: PluginContext[Any] | None = None

    async def start(self, ctx: PluginContext[Any]) -> None:
        self.ctx = ctx
        self.journal.record(self.name, "start")
        if self.start_delay:
            await anyio.sleep(self.start_delay)
        if self.on_start is not None:
            await self.on_start(ctx)
        if self.start_error is not None:
            raise self.start_error
        for service in self.provides:
            ctx.provide(service, f"{service} from {self.name}")
        self.journal.record(self.name, "started")

    async def stop(self) -> None:
        self.journal.record(self.name, "stop")
        if self.stop_delay:
            await anyio.sleep(self.stop_delay)
        if self.stop_error is not None:
            raise self.stop_error
        self.journal.record(self.name, "stopped")


def make(
    name: str,
    journal: Journal,
    *,
    provides: Sequence[str] = (),
    requires: Sequence[str] = (),
    optional: Sequence[str] = (),
    backends: Sequence[str] = ("asyncio", "trio"),
    **behaviour: Any,
) -> Recorder:
    """An instance of a fresh :class:`Recorder` subclass with this manifest."""
    manifest = {
        "name": name,
        "provides": tuple(provides),
        "requires": tuple(requires),
        "optional": tuple(optional),
        "backends": tuple(backends),
    }
    cls = type(f"Recorder_{name}", (Recorder,), manifest)
    plugin: Recorder = cls(journal, **behaviour)
    return plugin


def states(kernel: Kernel) -> dict[str, PluginState]:
    return {name: info.state for name, info in kernel.plugins.items()}


async def enter_and_exit(kernel: Kernel) -> None:
    async with kernel:
        pass


# -- ordering and concurrency ----------------------------------------------------------


@pytest.mark.anyio
async def test_independent_plugins_start_concurrently() -> None:
    journal = Journal()
    plugins = [make("a", journal, start_delay=0.2), make("b", journal, start_delay=0.2)]
    began = time.perf_counter()
    async with Kernel(None, plugins=plugins, environ={}) as kernel:
        elapsed = time.perf_counter() - began
        assert states(kernel) == {"a": PluginState.RUNNING, "b": PluginState.RUNNING}
    assert abs(journal.at("a", "start") - journal.at("b", "start")) < 0.1
    assert elapsed < 0.35


@pytest.mark.anyio
async def test_plugin_starts_only_after_provider_of_required_service_finished_starting() -> None:
    journal = Journal()
    plugins = [
        make("c", journal, requires=["x"]),
        make("a", journal, provides=["x"], start_delay=0.2),
        make("b", journal, start_delay=0.2),
    ]
    began = time.perf_counter()
    async with Kernel(None, plugins=plugins, environ={}) as kernel:
        elapsed = time.perf_counter() - began
        assert kernel.plugins["c"].state is PluginState.RUNNING
    assert journal.at("c", "start") >= journal.at("a", "started")
    assert abs(journal.at("a", "start") - journal.at("b", "start")) < 0.1
    assert elapsed < 0.35


@pytest.mark.anyio
async def test_required_service_is_reachable_from_the_dependent() -> None:
    journal = Journal()
    seen: list[object] = []

    async def use(ctx: PluginContext[Any]) -> None:
        seen.append(ctx.service("x"))

    plugins = [make("a", journal, provides=["x"]), make("c", journal, requires=["x"], on_start=use)]
    async with Kernel(None, plugins=plugins, environ={}):
        pass
    assert seen == ["x from a"]


@pytest.mark.anyio
async def test_plugin_starts_after_enabled_provider_of_optional_service() -> None:
    journal = Journal()
    seen: list[object] = []

    async def use(ctx: PluginContext[Any]) -> None:
        seen.append(ctx.service("x"))

    plugins = [
        make("c", journal, optional=["x"], on_start=use),
        make("a", journal, provides=["x"], start_delay=0.15),
    ]
    async with Kernel(None, plugins=plugins, environ={}):
        pass
    assert journal.at("c", "start") >= journal.at("a", "started")
    assert seen == ["x from a"]


@pytest.mark.anyio
async def test_chain_of_required_services_starts_in_dependency_order() -> None:
    journal = Journal()
    plugins = [
        make("c", journal, requires=["y"]),
        make("b", journal, requires=["x"], provides=["y"], start_delay=0.05),
        make("a", journal, provides=["x"], start_delay=0.05),
    ]
    async with Kernel(None, plugins=plugins, environ={}):
        pass
    assert journal.order("start") == ["a", "b", "c"]
    assert journal.at("b", "start") >= journal.at("a", "started")
    assert journal.at("c", "start") >= journal.at("b", "started")


@pytest.mark.anyio
async def test_stop_runs_in_reverse_dependency_order() -> None:
    journal = Journal()
    plugins = [
        make("a", journal, provides=["x"]),
        make("b", journal, requires=["x"], provides=["y"], stop_delay=0.05),
        make("c", journal, requires=["y"], stop_delay=0.05),
    ]
    async with Kernel(None, plugins=plugins, environ={}):
        pass
    assert journal.order("stop") == ["c", "b", "a"]
    assert journal.at("b", "stop") >= journal.at("c", "stopped")
    assert journal.at("a", "stop") >= journal.at("b", "stopped")


@pytest.mark.anyio
async def test_provider_of_optional_service_stops_after_its_user() -> None:
    journal = Journal()
    plugins = [make("a", journal, provides=["x"]), make("c", journal, optional=["x"], stop_delay=0.05)]
    async with Kernel(None, plugins=plugins, environ={}):
        pass
    assert journal.at("a", "stop") >= journal.at("c", "stopped")


@pytest.mark.anyio
async def test_independent_plugins_stop_concurrently() -> None:
    journal = Journal()
    plugins = [make("a", journal, stop_delay=0.2), make("b", journal, stop_delay=0.2)]
    async with Kernel(None, plugins=plugins, environ={}):
        began = time.perf_counter()
    assert time.perf_counter() - began < 0.35
    assert abs(journal.at("a", "stop") - journal.at("b", "stop")) < 0.1


@pytest.mark.anyio
async def test_plugins_are_running_inside_and_stopped_after_the_block() -> None:
    journal = Journal()
    kernel = Kernel(None, plugins=[make("a", journal), make("b", journal)], environ={})
    async with kernel:
        assert states(kernel) == {"a": PluginState.RUNNING, "b": PluginState.RUNNING}
        assert journal.order("stop") == []
    assert states(kernel) == {"a": PluginState.STOPPED, "b": PluginState.STOPPED}
    assert sorted(journal.order("stopped")) == ["a", "b"]


@pytest.mark.anyio
async def test_plugin_disabled_in_config_is_never_started() -> None:
    journal = Journal()
    plugins = [make("a", journal), make("off", journal)]
    async with Kernel({"plugins": {"off": {"enabled": False}}}, plugins=plugins, environ={}) as kernel:
        assert kernel.plugins["off"].enabled is False
        assert kernel.plugins["off"].state is PluginState.DISCOVERED
        assert kernel.plugins["a"].state is PluginState.RUNNING
    assert journal.count("off", "start") == 0
    assert journal.count("off", "stop") == 0


@pytest.mark.anyio
async def test_kernel_cannot_be_entered_twice() -> None:
    kernel = Kernel(None, plugins=[make("a", Journal())], environ={})
    async with kernel:
        pass
    with pytest.raises(RuntimeError, match="already been started"):
        await enter_and_exit(kernel)


@pytest.mark.anyio
async def test_fifty_trivial_plugins_start_and_stop() -> None:
    journal = Journal()
    plugins = [make(f"p{index:02d}", journal) for index in range(50)]
    began = time.perf_counter()
    kernel = Kernel(None, plugins=plugins, environ={})
    async with kernel:
        assert set(states(kernel).values()) == {PluginState.RUNNING}
        assert len(kernel.plugins) == 50
    assert set(states(kernel).values()) == {PluginState.STOPPED}
    assert sorted(journal.order("stopped")) == [f"p{index:02d}" for index in range(50)]
    assert time.perf_counter() - began < 5.0


# -- the service graph: what cannot start ----------------------------------------------


@pytest.mark.anyio
async def test_dependency_cycle_fails_every_member_and_names_the_cycle() -> None:
    journal = Journal()
    plugins = [
        make("alpha", journal, requires=["x"], provides=["y"]),
        make("beta", journal, requires=["y"], provides=["x"]),
        make("other", journal),
    ]
    async with Kernel(None, plugins=plugins, environ={}) as kernel:
        for name in ("alpha", "beta"):
            info = kernel.plugins[name]
            assert info.state is PluginState.FAILED
            assert info.last_error is not None
            assert "cycle" in info.last_error
            assert "alpha" in info.last_error
            assert "beta" in info.last_error
        assert kernel.plugins["other"].state is PluginState.RUNNING
    assert journal.count("alpha", "start") == 0
    assert journal.count("beta", "start") == 0


@pytest.mark.anyio
async def test_plugin_requiring_a_cycle_member_fails_too() -> None:
    journal = Journal()
    plugins = [
        make("alpha", journal, requires=["x"], provides=["y"]),
        make("beta", journal, requires=["y"], provides=["x"]),
        make("user", journal, requires=["y"]),
    ]
    async with Kernel(None, plugins=plugins, environ={}) as kernel:
        info = kernel.plugins["user"]
        assert info.state is PluginState.FAILED
        assert info.last_error is not None
        assert "'y'" in info.last_error
        assert "alpha" in info.last_error
    assert journal.count("user", "start") == 0


@pytest.mark.anyio
async def test_missing_required_service_fails_plugin_naming_the_service() -> None:
    journal = Journal()
    plugins = [make("needy", journal, requires=["nowhere"]), make("other", journal)]
    async with Kernel(None, plugins=plugins, environ={}) as kernel:
        info = kernel.plugins["needy"]
        assert info.state is PluginState.FAILED
        assert info.last_error is not None
        assert "'nowhere'" in info.last_error
        assert kernel.plugins["other"].state is PluginState.RUNNING
    assert journal.count("needy", "start") == 0


@pytest.mark.anyio
async def test_missing_service_error_names_the_enabled_plugins_that_failed_to_load() -> None:
    journal = Journal()
    config = {"plugins": {"ghost": {"enabled": True, "source": "no_such_module_anywhere:Ghost"}}}
    plugins = [make("needy", journal, requires=["haunting"])]
    async with Kernel(config, plugins=plugins, environ={}, entry_points=False) as kernel:
        ghost = kernel.plugins["ghost"]
        assert ghost.state is PluginState.FAILED
        assert "no_such_module_anywhere" in (ghost.last_error or "")
        needy = kernel.plugins["needy"].last_error or ""
        assert "'haunting'" in needy
        assert "ghost" in needy


@pytest.mark.anyio
async def test_two_plugins_providing_the_same_service_both_fail_with_clear_message() -> None:
    journal = Journal()
    plugins = [
        make("first", journal, provides=["cache"]),
        make("second", journal, provides=["cache"]),
        make("other", journal),
    ]
    async with Kernel(None, plugins=plugins, environ={}) as kernel:
        for name in ("first", "second"):
            info = kernel.plugins[name]
            assert info.state is PluginState.FAILED
            assert info.last_error is not None
            assert "'cache'" in info.last_error
            assert "first" in info.last_error
            assert "second" in info.last_error
        assert kernel.plugins["other"].state is PluginState.RUNNING
    assert journal.count("first", "start") == 0
    assert journal.count("second", "start") == 0


@pytest.mark.anyio
async def test_failed_provider_takes_down_only_its_transitive_dependents() -> None:
    journal = Journal()
    plugins = [
        make("base", journal, provides=["x"], start_error=RuntimeError("base is broken")),
        make("middle", journal, requires=["x"], provides=["y"]),
        make("top", journal, requires=["y"]),
        make("soft", journal, optional=["x"]),
        make("unrelated", journal),
    ]
    async with Kernel(None, plugins=plugins, environ={}) as kernel:
        assert states(kernel) == {
            "base": PluginState.FAILED,
            "middle": PluginState.FAILED,
            "top": PluginState.FAILED,
            "soft": PluginState.RUNNING,
            "unrelated": PluginState.RUNNING,
        }
        middle_error = kernel.plugins["middle"].last_error
        top_error = kernel.plugins["top"].last_error
    assert middle_error is not None
    assert "'x'" in middle_error
    assert "'base'" in middle_error
    assert top_error is not None
    assert "'y'" in top_error
    assert "'middle'" in top_error
    assert journal.count("middle", "start") == 0
    assert journal.count("top", "start") == 0


@pytest.mark.anyio
async def test_optional_service_nobody_provides_leaves_plugin_running_and_service_unavailable() -> None:
    journal = Journal()
    errors: list[Exception] = []

    async def try_service(ctx: PluginContext[Any]) -> None:
        try:
            ctx.service("maybe")
        except ServiceUnavailable as exc:
            errors.append(exc)

    plugins = [make("user", journal, optional=["maybe"], on_start=try_service)]
    async with Kernel(None, plugins=plugins, environ={}) as kernel:
        assert kernel.plugins["user"].state is PluginState.RUNNING
    assert len(errors) == 1
    assert "'maybe'" in str(errors[0])
    assert "'user'" in str(errors[0])


@pytest.mark.anyio
async def test_plugin_that_does_not_provide_a_declared_service_fails() -> None:
    journal = Journal()

    class Forgetful(Plugin):
        name = "forgetful"
        provides = ("promised",)

        async def start(self, ctx: PluginContext[Any]) -> None:
            pass

    plugins = [Forgetful(), make("user", journal, requires=["promised"])]
    async with Kernel(None, plugins=plugins, environ={}) as kernel:
        info = kernel.plugins["forgetful"]
        assert info.state is PluginState.FAILED
        assert info.last_error is not None
        assert "promised" in info.last_error
        assert "provide" in info.last_error
        assert kernel.plugins["user"].state is PluginState.FAILED
    assert journal.count("user", "start") == 0


# -- failures in start and stop --------------------------------------------------------


@pytest.mark.anyio
async def test_plugin_raising_in_start_is_failed_with_error_and_traceback() -> None:
    journal = Journal()
    plugins = [make("broken", journal, start_error=ValueError("bad wiring")), make("fine", journal)]
    async with Kernel(None, plugins=plugins, environ={}) as kernel:
        info = kernel.plugins["broken"]
        assert info.state is PluginState.FAILED
        assert info.last_error == "ValueError: bad wiring"
        assert info.error_traceback is not None
        assert "Traceback" in info.error_traceback
        assert "ValueError: bad wiring" in info.error_traceback
        assert kernel.plugins["fine"].state is PluginState.RUNNING
    assert journal.count("broken", "stop") == 0


@pytest.mark.anyio
async def test_failed_start_withdraws_registrations_and_cancels_spawned_tasks() -> None:
    journal = Journal()

    async def handler(inv: Invocation) -> str:
        return "should not be reachable"

    async def middleware(inv: Invocation, call_next: Any) -> Any:
        return await call_next(inv)

    async def background() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            journal.record("broken", "task cancelled")

    async def register_everything(ctx: PluginContext[Any]) -> None:
        ctx.provide("x", "half-made")
        ctx.register_operation("broken.op", handler)
        ctx.register_middleware(middleware, phase=Phase.OBSERVE)
        ctx.spawn(background)
        await anyio.sleep(0.01)
        raise RuntimeError("gave up halfway")

    seen: list[Exception] = []

    async def look_for_x(ctx: PluginContext[Any]) -> None:
        try:
            ctx.service("x")
        except ServiceUnavailable as exc:
            seen.append(exc)

    plugins = [
        make("broken", journal, provides=["x"], on_start=register_everything),
        make("watcher", journal, optional=["x"], on_start=look_for_x),
    ]
    async with Kernel(None, plugins=plugins, environ={}) as kernel:
        assert kernel.plugins["broken"].state is PluginState.FAILED
        assert "gave up halfway" in (kernel.plugins["broken"].last_error or "")
        assert "broken.op" not in kernel.operations
        assert kernel.middleware_order() == []
        with pytest.raises(OperationNotFound):
            await kernel.invoke("broken.op")
        assert journal.count("broken", "task cancelled") == 1
        assert len(seen) == 1
        assert kernel.plugins["watcher"].state is PluginState.RUNNING


@pytest.mark.anyio
async def test_plugin_raising_in_stop_is_failed_and_others_still_stop() -> None:
    journal = Journal()
    plugins = [
        make("a", journal, provides=["x"]),
        make("clumsy", journal, requires=["x"], stop_error=RuntimeError("cannot let go")),
        make("b", journal),
    ]
    kernel = Kernel(None, plugins=plugins, environ={})
    async with kernel:
        pass
    info = kernel.plugins["clumsy"]
    assert info.state is PluginState.FAILED
    assert info.last_error == "RuntimeError: cannot let go"
    assert info.error_traceback is not None
    assert kernel.plugins["a"].state is PluginState.STOPPED
    assert kernel.plugins["b"].state is PluginState.STOPPED
    assert journal.at("a", "stop") >= journal.at("clumsy", "stop")


@pytest.mark.anyio
async def test_raising_in_stop_still_withdraws_operations() -> None:
    journal = Journal()

    async def register(ctx: PluginContext[Any]) -> None:
        ctx.register_operation("clumsy.op", lambda inv: 1)

    kernel = Kernel(
        None,
        plugins=[make("clumsy", journal, on_start=register, stop_error=RuntimeError("no"))],
        environ={},
    )
    async with kernel:
        assert await kernel.invoke("clumsy.op") == 1
    assert "clumsy.op" not in kernel.operations


# -- timeouts --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_start_timeout_from_kernel_config_fails_the_slow_plugin() -> None:
    journal = Journal()
    plugins = [make("slow", journal, start_delay=10), make("quick", journal)]
    began = time.perf_counter()
    async with Kernel({"kernel": {"start_timeout": 0.2}}, plugins=plugins, environ={}) as kernel:
        elapsed = time.perf_counter() - began
        info = kernel.plugins["slow"]
        assert info.state is PluginState.FAILED
        assert info.last_error is not None
        assert "start()" in info.last_error
        assert "0.2s" in info.last_error
        assert kernel.plugins["quick"].state is PluginState.RUNNING
    assert elapsed < 2.0


@pytest.mark.anyio
async def test_per_plugin_start_timeout_overrides_the_kernel_default() -> None:
    journal = Journal()
    config = {"kernel": {"start_timeout": 30}, "plugins": {"slow": {"start_timeout": 0.2}}}
    began = time.perf_counter()
    async with Kernel(config, plugins=[make("slow", journal, start_delay=10)], environ={}) as kernel:
        elapsed = time.perf_counter() - began
        info = kernel.plugins["slow"]
        assert info.state is PluginState.FAILED
        assert "0.2s" in (info.last_error or "")
    assert elapsed < 2.0


@pytest.mark.anyio
async def test_per_plugin_start_timeout_can_grant_more_time_than_the_kernel_default() -> None:
    journal = Journal()
    config = {"kernel": {"start_timeout": 0.1}, "plugins": {"patient": {"start_timeout": 5}}}
    async with Kernel(config, plugins=[make("patient", journal, start_delay=0.3)], environ={}) as kernel:
        assert kernel.plugins["patient"].state is PluginState.RUNNING


@pytest.mark.anyio
async def test_start_timeout_dependents_of_the_slow_plugin_fail() -> None:
    journal = Journal()
    plugins = [make("slow", journal, provides=["x"], start_delay=10), make("user", journal, requires=["x"])]
    async with Kernel({"kernel": {"start_timeout": 0.2}}, plugins=plugins, environ={}) as kernel:
        assert kernel.plugins["user"].state is PluginState.FAILED
        assert "'slow'" in (kernel.plugins["user"].last_error or "")
    assert journal.count("user", "start") == 0


@pytest.mark.anyio
async def test_per_plugin_stop_timeout_fails_the_slow_plugin_and_the_kernel_exits() -> None:
    journal = Journal()
    plugins = [make("lingering", journal, stop_delay=10), make("quick", journal)]
    kernel = Kernel({"plugins": {"lingering": {"stop_timeout": 0.2}}}, plugins=plugins, environ={})
    async with kernel:
        began = time.perf_counter()
    assert time.perf_counter() - began < 2.0
    info = kernel.plugins["lingering"]
    assert info.state is PluginState.FAILED
    assert info.last_error is not None
    assert "stop()" in info.last_error
    assert "0.2s" in info.last_error
    assert kernel.plugins["quick"].state is PluginState.STOPPED


@pytest.mark.anyio
async def test_kernel_stop_timeout_bounds_every_stop() -> None:
    journal = Journal()
    kernel = Kernel({"kernel": {"stop_timeout": 0.2}}, plugins=[make("lingering", journal, stop_delay=10)], environ={})
    async with kernel:
        began = time.perf_counter()
    assert time.perf_counter() - began < 2.0
    assert kernel.plugins["lingering"].state is PluginState.FAILED
    assert "0.2s" in (kernel.plugins["lingering"].last_error or "")


# -- background tasks ------------------------------------------------------------------


@pytest.mark.anyio
async def test_spawned_tasks_are_cancelled_at_stop_after_stop_returns() -> None:
    journal = Journal()

    async def forever(label: str) -> None:
        journal.record("worker", f"{label} running")
        try:
            await anyio.sleep_forever()
        finally:
            journal.record("worker", f"{label} cancelled")

    async def spawn_two(ctx: PluginContext[Any]) -> None:
        ctx.spawn(forever, "one", name="one")
        ctx.spawn(forever, "two", name="two")

    kernel = Kernel(None, plugins=[make("worker", journal, on_start=spawn_two)], environ={})
    async with kernel:
        await anyio.sleep(0.05)
        assert journal.count("worker", "one running") == 1
        assert journal.count("worker", "two running") == 1
        assert journal.count("worker", "one cancelled") == 0
    assert journal.at("worker", "one cancelled") >= journal.at("worker", "stopped")
    assert journal.at("worker", "two cancelled") >= journal.at("worker", "stopped")
    assert kernel.plugins["worker"].state is PluginState.STOPPED


@pytest.mark.anyio
async def test_spawned_task_that_raises_sets_last_error_and_the_kernel_keeps_running() -> None:
    journal = Journal()

    async def explode() -> None:
        await anyio.sleep(0.01)
        raise ValueError("task blew up")

    async def spawn(ctx: PluginContext[Any]) -> None:
        ctx.spawn(explode, name="exploder")

    async def register(ctx: PluginContext[Any]) -> None:
        ctx.register_operation("other.ping", lambda inv: "pong")

    kernel = Kernel(
        None,
        plugins=[make("faulty", journal, on_start=spawn), make("other", journal, on_start=register)],
        environ={},
    )
    async with kernel:
        await anyio.sleep(0.1)
        info = kernel.plugins["faulty"]
        assert info.state is PluginState.RUNNING
        assert info.last_error is not None
        assert "exploder" in info.last_error
        assert "ValueError: task blew up" in info.last_error
        assert await kernel.invoke("other.ping") == "pong"
        assert kernel.plugins["other"].state is PluginState.RUNNING
    assert kernel.plugins["faulty"].state is PluginState.STOPPED
    assert journal.count("faulty", "stopped") == 1


@pytest.mark.anyio
async def test_spawned_task_that_finishes_early_does_not_disturb_stop() -> None:
    journal = Journal()

    async def short() -> None:
        journal.record("worker", "task done")

    async def spawn(ctx: PluginContext[Any]) -> None:
        ctx.spawn(short)

    kernel = Kernel(None, plugins=[make("worker", journal, on_start=spawn)], environ={})
    async with kernel:
        await anyio.sleep(0.05)
    assert journal.count("worker", "task done") == 1
    assert kernel.plugins["worker"].state is PluginState.STOPPED
    assert kernel.plugins["worker"].last_error is None


# -- hooks and strictness --------------------------------------------------------------


class Watcher(Plugin):
    """Provides ``watch`` so that watched plugins start after it and stop before it."""

    name = "watcher"
    provides = ("watch",)

    def __init__(self) -> None:
        self.seen: list[tuple[str, PluginState, PluginState]] = []

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.provide("watch", self)

    @hookimpl
    def plugin_state_changed(self, plugin: str, old: PluginState, new: PluginState) -> None:
        self.seen.append((plugin, old, new))


@pytest.mark.anyio
async def test_plugin_state_changed_hook_sees_every_transition() -> None:
    watcher = Watcher()
    async with Kernel(None, plugins=[watcher, make("subject", Journal(), requires=["watch"])], environ={}):
        pass
    assert [(old, new) for plugin, old, new in watcher.seen if plugin == "subject"] == [
        (PluginState.CONFIGURED, PluginState.STARTING),
        (PluginState.STARTING, PluginState.RUNNING),
        (PluginState.RUNNING, PluginState.STOPPING),
        (PluginState.STOPPING, PluginState.STOPPED),
    ]


@pytest.mark.anyio
async def test_plugin_state_changed_hook_sees_a_failed_start() -> None:
    watcher = Watcher()
    failing = make("subject", Journal(), requires=["watch"], start_error=RuntimeError("no"))
    async with Kernel(None, plugins=[watcher, failing], environ={}):
        pass
    assert [(old, new) for plugin, old, new in watcher.seen if plugin == "subject"] == [
        (PluginState.CONFIGURED, PluginState.STARTING),
        (PluginState.STARTING, PluginState.FAILED),
    ]


@pytest.mark.anyio
async def test_non_strict_kernel_starts_despite_failures() -> None:
    journal = Journal()
    plugins = [make("broken", journal, start_error=RuntimeError("no")), make("fine", journal)]
    async with Kernel(None, plugins=plugins, environ={}) as kernel:
        assert kernel.plugins["fine"].state is PluginState.RUNNING
        assert kernel.plugins["broken"].state is PluginState.FAILED


@pytest.mark.anyio
async def test_strict_kernel_with_every_plugin_running_starts_normally() -> None:
    journal = Journal()
    async with Kernel({"kernel": {"strict": True}}, plugins=[make("fine", journal)], environ={}) as kernel:
        assert kernel.plugins["fine"].state is PluginState.RUNNING


def strict_kernel(journal: Journal) -> Kernel:
    plugins = [
        make("broken", journal, start_error=RuntimeError("no luck")),
        make("missing", journal, requires=["nowhere"]),
        make("fine", journal),
    ]
    return Kernel({"kernel": {"strict": True}}, plugins=plugins, environ={})


@pytest.mark.anyio
async def test_strict_kernel_raises_plugin_start_error_listing_every_failure() -> None:
    with pytest.raises(PluginStartError) as caught:
        await enter_and_exit(strict_kernel(Journal()))
    failed = dict(caught.value.failures)
    assert set(failed) == {"broken", "missing"}
    assert "no luck" in failed["broken"]
    assert "nowhere" in failed["missing"]
    assert "broken" in str(caught.value)
    assert "missing" in str(caught.value)


@pytest.mark.anyio
async def test_strict_kernel_failure_still_stops_the_plugins_that_started() -> None:
    journal = Journal()
    kernel = strict_kernel(journal)
    with pytest.raises(PluginStartError):
        await enter_and_exit(kernel)
    assert states(kernel)["fine"] is PluginState.STOPPED
    assert journal.count("fine", "stopped") == 1


@pytest.mark.anyio
async def test_strict_kernel_fails_for_a_plugin_that_cannot_be_imported() -> None:
    config = {"kernel": {"strict": True}, "plugins": {"ghost": {"enabled": True, "source": "no_such_module:Ghost"}}}
    kernel = Kernel(config, plugins=[make("fine", Journal())], environ={}, entry_points=False)
    with pytest.raises(PluginStartError) as caught:
        await enter_and_exit(kernel)
    assert [name for name, _ in caught.value.failures] == ["ghost"]


@pytest.mark.anyio
async def test_plugin_supporting_only_trio_fails_under_asyncio_naming_the_event_loop() -> None:
    journal = Journal()
    plugins = [
        make("trio_only", journal, provides=["t"], backends=["trio"]),
        make("user", journal, requires=["t"]),
        make("fine", journal),
    ]
    async with Kernel(None, plugins=plugins, environ={}) as kernel:
        info = kernel.plugins["trio_only"]
        assert info.state is PluginState.FAILED
        assert info.last_error is not None
        assert "event loop" in info.last_error
        assert "asyncio" in info.last_error
        assert "trio" in info.last_error
        assert kernel.plugins["user"].state is PluginState.FAILED
        assert kernel.plugins["fine"].state is PluginState.RUNNING
    assert journal.count("trio_only", "start") == 0


def test_plugin_supporting_only_asyncio_fails_under_trio() -> None:
    journal = Journal()
    kernel = Kernel(
        None, plugins=[make("asyncio_only", journal, backends=["asyncio"]), make("fine", journal)], environ={}
    )
    seen: dict[str, PluginState] = {}

    async def main() -> None:
        async with kernel:
            seen.update(states(kernel))

    anyio.run(main, backend="trio")
    assert seen == {"asyncio_only": PluginState.FAILED, "fine": PluginState.RUNNING}
    assert "trio event loop" in (kernel.plugins["asyncio_only"].last_error or "")
    assert journal.count("asyncio_only", "start") == 0


# -- cancellation ----------------------------------------------------------------------


def hanging_kernel(journal: Journal) -> Kernel:
    """``slow`` registers, spawns a task and then hangs in start(); ``quick`` starts at once."""

    async def background() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            journal.record("slow", "task cancelled")

    async def spawn_then_hang(ctx: PluginContext[Any]) -> None:
        ctx.register_operation("slow.op", lambda inv: 1)
        ctx.spawn(background)
        await anyio.sleep(30)

    plugins = [make("slow", journal, on_start=spawn_then_hang), make("quick", journal)]
    return Kernel(None, plugins=plugins, environ={})


@pytest.mark.anyio
async def test_cancelling_async_with_during_start_is_a_clean_cancellation() -> None:
    journal = Journal()
    kernel = hanging_kernel(journal)
    with anyio.move_on_after(0.2) as scope:
        async with kernel:
            journal.record("body", "entered")
    assert scope.cancelled_caught
    assert journal.count("body", "entered") == 0


@pytest.mark.anyio
async def test_cancelling_async_with_during_start_leaves_nothing_running() -> None:
    journal = Journal()
    kernel = hanging_kernel(journal)
    with anyio.move_on_after(0.2):
        async with kernel:
            pass
    final = states(kernel)
    assert final["quick"] is PluginState.STOPPED
    assert final["slow"] is PluginState.FAILED
    assert "cancelled" in (kernel.plugins["slow"].last_error or "")
    assert journal.count("quick", "stopped") == 1
    assert journal.count("slow", "task cancelled") == 1
    assert kernel.operations == {}


@pytest.mark.anyio
async def test_kernel_is_usable_after_a_cancelled_start_of_another_kernel() -> None:
    journal = Journal()
    with anyio.move_on_after(0.2):
        async with hanging_kernel(journal):
            pass
    async with Kernel(None, plugins=[make("later", journal)], environ={}) as kernel:
        assert kernel.plugins["later"].state is PluginState.RUNNING


# -- observers are withdrawn with their plugin ------------------------------------------


class CountingObserver:
    def __init__(self) -> None:
        self.invokes: list[str] = []

    def on_hook(self, hook: str, plugin: str, duration: float, outcome: Any) -> None:
        pass

    def on_invoke(self, operation: str, duration: float, outcome: Any) -> None:
        self.invokes.append(operation)


@pytest.mark.anyio
async def test_failed_start_withdraws_dispatch_observers() -> None:
    journal = Journal()
    observer = CountingObserver()

    async def observe_then_fail(ctx: PluginContext[Any]) -> None:
        ctx.add_dispatch_observer(observer)
        raise RuntimeError("no")

    async def register(ctx: PluginContext[Any]) -> None:
        ctx.register_operation("other.ping", lambda inv: "pong")

    plugins = [make("spy", journal, on_start=observe_then_fail), make("other", journal, on_start=register)]
    async with Kernel(None, plugins=plugins, environ={}) as kernel:
        assert await kernel.invoke("other.ping") == "pong"
    assert observer.invokes == []


@pytest.mark.anyio
async def test_observer_of_running_plugin_sees_invokes_until_it_stops() -> None:
    journal = Journal()
    observer: DispatchObserver = CountingObserver()

    async def observe(ctx: PluginContext[Any]) -> None:
        ctx.add_dispatch_observer(observer)
        ctx.register_operation("spy.ping", lambda inv: "pong")

    async with Kernel(None, plugins=[make("spy", journal, on_start=observe)], environ={}) as kernel:
        await kernel.invoke("spy.ping")
    assert isinstance(observer, CountingObserver)
    assert observer.invokes == ["spy.ping"]
