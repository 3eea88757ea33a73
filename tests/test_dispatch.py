"""Hook dispatch: specs, impl validation, ordering, policies, deadlines, quarantine, observers.

Every test goes through a real :class:`kernel.Kernel`: hooks are declared with
``@hookspec`` in the namespaces below, implemented by small plugins built with
:func:`make_plugin`, and called with ``kernel.hooks.call``.
"""

import asyncio
import contextlib
import functools
import time
import types
from collections.abc import AsyncIterator
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from kernel import HookRelay
from kernel import Kernel
from plugin_sdk import AsyncFirstResultHookSpec
from plugin_sdk import AsyncHookSpec
from plugin_sdk import CliCommand
from plugin_sdk import ConfigError
from plugin_sdk import FirstResultHookSpec
from plugin_sdk import HealthStatus
from plugin_sdk import HookFailed
from plugin_sdk import HookSampling
from plugin_sdk import HookSpec
from plugin_sdk import HookTimeout
from plugin_sdk import PermissionDenied
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginError
from plugin_sdk import PluginState
from plugin_sdk import SyncHookSpec
from plugin_sdk import hookimpl
from plugin_sdk import hookspec
from plugin_sdk import hookspecs

pytestmark = pytest.mark.anyio

# -- hooks the tests call ---------------------------------------------------------------


class Specs:
    """One hook per combination of kind, policy and deadline that the tests need."""

    # sync
    @hookspec()
    def ping(x: int) -> int:
        """Sync, isolate (the default), no deadline."""

    @hookspec(policy="fail_fast")
    def ping_fail_fast(x: int) -> int:
        """Sync, fail_fast."""

    @hookspec(policy="collect")
    def ping_collect(x: int) -> int:
        """Sync, collect."""

    @hookspec(firstresult=True)
    def pick(x: int) -> int | None:
        """Sync, first result."""

    @hookspec()
    def pair(x: int, y: int) -> int:
        """Sync, two arguments."""

    @hookspec(timeout=0.05)
    def slow_ping(x: int) -> int:
        """Sync, isolate, 50 ms deadline."""

    @hookspec(policy="fail_fast", timeout=0.05)
    def slow_ping_fail_fast(x: int) -> int:
        """Sync, fail_fast, 50 ms deadline."""

    @hookspec(participants="loaded")
    def roll_call() -> str:
        """Sync, called on every loaded plugin, started or not."""

    # async, awaited in hook order
    @hookspec()
    async def aping(x: int) -> int:
        """Async, isolate, no deadline."""

    @hookspec(policy="fail_fast")
    async def aping_fail_fast(x: int) -> int:
        """Async, fail_fast."""

    @hookspec(policy="collect")
    async def aping_collect(x: int) -> int:
        """Async, collect."""

    @hookspec(firstresult=True)
    async def apick(x: int) -> int | None:
        """Async, first result."""

    @hookspec(timeout=0.1)
    async def timed(x: int) -> int:
        """Async, isolate, 100 ms deadline."""

    @hookspec(policy="fail_fast", timeout=0.1)
    async def timed_fail_fast(x: int) -> int:
        """Async, fail_fast, 100 ms deadline."""

    @hookspec(policy="collect", timeout=0.1)
    async def timed_collect(x: int) -> int:
        """Async, collect, 100 ms deadline."""

    @hookspec(policy="fail_fast", timeout=5.0)
    async def patient(x: int) -> int:
        """Async, fail_fast, a deadline far away."""

    @hookspec(policy="fail_fast", timeout=0.1, participants="loaded")
    async def loaded_timed_fail_fast(x: int) -> int:
        """Async, fail_fast, 100 ms deadline, callable before the kernel starts."""

    # async, concurrent
    @hookspec(concurrent=True, timeout=0.2)
    async def gather(x: int) -> int:
        """Concurrent, isolate, 200 ms deadline."""

    @hookspec(concurrent=True, policy="fail_fast", timeout=2.0)
    async def gather_fail_fast(x: int) -> int:
        """Concurrent, fail_fast."""

    @hookspec(concurrent=True, policy="collect", timeout=0.2)
    async def gather_collect(x: int) -> int:
        """Concurrent, collect, 200 ms deadline."""


class PluginSpecs:
    """Hooks a plugin declares through its manifest."""

    @hookspec()
    def announce(text: str) -> str:
        """Declared by a plugin, not by the kernel."""


class ClashingSpecs:
    """A second, different declaration of ``ping``."""

    @hookspec(policy="collect")
    def ping(x: int) -> int:
        """Same name as Specs.ping, another spec."""


class NeverAdded:
    """Specs no kernel in these tests is given."""

    @hookspec()
    def orphan() -> int:
        """Nobody adds this."""


# -- helpers ----------------------------------------------------------------------------


def make_plugin(
    name: str,
    /,
    *,
    priority: int = 0,
    before: Iterable[str] = (),
    after: Iterable[str] = (),
    provides: Iterable[str] = (),
    requires: Iterable[str] = (),
    hookspecs: Iterable[object] = (),
    start: Callable[[PluginContext[Any]], None] | None = None,
    **impls: Callable[..., Any],
) -> Plugin:
    """A plugin named ``name`` whose hook impls are ``impls`` (functions taking ``self`` first)."""
    namespace: dict[str, Any] = {
        "name": name,
        "priority": priority,
        "before": tuple(before),
        "after": tuple(after),
        "provides": tuple(provides),
        "requires": tuple(requires),
        "hookspecs": tuple(hookspecs),
    }
    for hook, function in impls.items():
        namespace[hook] = function if hasattr(function, "orion_impl") else hookimpl(function)
    if start is not None or provides:

        async def started(self: Plugin, ctx: PluginContext[Any]) -> None:
            for service in self.provides:
                ctx.provide(service, self)
            if start is not None:
                start(ctx)

        namespace["start"] = started
    return type(f"Plugin_{name}", (Plugin,), namespace)()


def make_kernel(*plugins: object, config: Mapping[str, Any] | None = None) -> Kernel:
    return Kernel(dict(config or {}), plugins=plugins, hookspecs=[Specs], environ={})


def impl_for(spec: HookSpec[Any, Any], body: Callable[[int], Any]) -> Callable[..., Any]:
    """An impl of ``spec`` (sync or async to match) that takes ``x`` and returns ``body(x)``."""
    if spec.options.is_async:

        async def async_impl(self: object, x: int) -> Any:
            return body(x)

        return async_impl

    def sync_impl(self: object, x: int) -> Any:
        return body(x)

    return sync_impl


def raising(exc: BaseException, calls: list[str] | None = None, tag: str = "") -> Callable[[int], Any]:
    def body(x: int) -> Any:
        if calls is not None:
            calls.append(tag)
        raise exc

    return body


def returning(value: Any, calls: list[str] | None = None, tag: str = "") -> Callable[[int], Any]:
    def body(x: int) -> Any:
        if calls is not None:
            calls.append(tag)
        return value

    return body


async def call_hook(kernel: Kernel, spec: HookSpec[Any, Any], **kwargs: Any) -> Any:
    """Call ``spec`` and await the result when the spec is async."""
    result = kernel.hooks.call(spec, **kwargs)
    if spec.options.is_async:
        return await result
    return result


def block(seconds: float) -> None:
    """Hold the thread (and the event loop) like a misbehaving impl would."""
    time.sleep(seconds)


class Watch:
    """A dispatch observer that records everything it is told."""

    def __init__(self) -> None:
        self.hooks: list[tuple[str, str, str]] = []
        self.durations: list[float] = []
        self.invokes: list[tuple[str, str]] = []

    def on_hook(self, hook: str, plugin: str, duration: float, outcome: str) -> None:
        self.hooks.append((hook, plugin, outcome))
        self.durations.append(duration)

    def on_invoke(self, operation: str, duration: float, outcome: str) -> None:
        self.invokes.append((operation, outcome))


class RaisingWatch(Watch):
    """An observer that records, then raises, on every hook event."""

    def on_hook(self, hook: str, plugin: str, duration: float, outcome: str) -> None:
        super().on_hook(hook, plugin, duration, outcome)
        raise RuntimeError("observer bug")


def watcher(observer: object, name: str = "watcher") -> Plugin:
    return make_plugin(name, start=lambda ctx: ctx.add_dispatch_observer(observer))  # type: ignore[arg-type]


class StateLog(Plugin):
    """Records every plugin_state_changed call; others require its service to start after it."""

    name = "state_log"
    provides = ("state_log",)

    def __init__(self) -> None:
        self.changes: list[tuple[str, PluginState, PluginState]] = []

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.provide("state_log", self)

    @hookimpl
    def plugin_state_changed(self, plugin: str, old: PluginState, new: PluginState) -> None:
        self.changes.append((plugin, old, new))

    def of(self, plugin: str) -> list[tuple[PluginState, PluginState]]:
        return [(old, new) for name, old, new in self.changes if name == plugin]


# -- hookspec markers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        (Specs.ping, SyncHookSpec),
        (Specs.pick, FirstResultHookSpec),
        (Specs.aping, AsyncHookSpec),
        (Specs.apick, AsyncFirstResultHookSpec),
        (Specs.gather, AsyncHookSpec),
    ],
)
def test_hookspec_makes_a_handle_of_the_kind_its_function_declares(spec: HookSpec[Any, Any], kind: type) -> None:
    assert type(spec) is kind


def test_hookspec_records_its_options() -> None:
    options = Specs.gather_collect.options

    assert options.name == "gather_collect"
    assert options.is_async is True
    assert options.firstresult is False
    assert options.policy == "collect"
    assert options.timeout == 0.2
    assert options.concurrent is True
    assert options.participants == "running"
    assert options.argnames == ("x",)


def test_hookspec_defaults_to_isolate_without_deadline_for_running_plugins() -> None:
    options = Specs.ping.options

    assert (options.policy, options.timeout, options.concurrent, options.participants) == (
        "isolate",
        None,
        False,
        "running",
    )


def test_hookspec_keeps_argument_names_in_order() -> None:
    assert Specs.pair.options.argnames == ("x", "y")


def test_hookspec_timeout_is_stored_as_float() -> None:
    @hookspec(timeout=2)
    def integral() -> None:
        """An int deadline."""

    assert integral.options.timeout == 2.0
    assert isinstance(integral.options.timeout, float)


def test_hookspec_handle_shows_name_and_arguments_and_keeps_the_docstring() -> None:
    assert repr(Specs.pair) == "<SyncHookSpec pair(x, y)>"
    assert Specs.pair.__doc__ == "Sync, two arguments."
    assert Specs.pair.name == "pair"


def test_hookspec_rejects_concurrent_on_a_sync_spec() -> None:
    with pytest.raises(TypeError, match="async def"):

        @hookspec(concurrent=True)
        def sync_concurrent() -> None:
            """Cannot be concurrent."""


def test_hookspec_rejects_concurrent_together_with_firstresult() -> None:
    with pytest.raises(TypeError, match="exclude each other"):

        @hookspec(firstresult=True, concurrent=True)
        async def both() -> None:
            """Cannot be both."""


def test_hookspec_rejects_an_unknown_policy() -> None:
    with pytest.raises(ValueError, match="policy"):

        @hookspec(policy="retry")  # type: ignore[call-overload]
        def bad_policy() -> None:
            """Unknown policy."""


@pytest.mark.parametrize("timeout", [0, -1.5])
def test_hookspec_rejects_a_deadline_that_is_not_positive(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):

        @hookspec(timeout=timeout)
        def bad_timeout() -> None:
            """Deadline must be > 0."""


@pytest.mark.parametrize(
    ("spec", "is_async", "policy", "timeout", "concurrent", "participants"),
    [
        (hookspecs.cli_commands, False, "isolate", None, False, "loaded"),
        (hookspecs.plugin_state_changed, False, "isolate", None, False, "running"),
        (hookspecs.kernel_started, True, "isolate", 30.0, False, "running"),
        (hookspecs.kernel_stopping, True, "isolate", 30.0, False, "running"),
        (hookspecs.check_health, True, "isolate", 5.0, True, "running"),
    ],
)
def test_builtin_hookspecs_declare_the_documented_options(
    spec: HookSpec[Any, Any], is_async: bool, policy: str, timeout: float | None, concurrent: bool, participants: str
) -> None:
    options = spec.options

    assert (options.is_async, options.policy, options.timeout, options.concurrent, options.participants) == (
        is_async,
        policy,
        timeout,
        concurrent,
        participants,
    )


def test_builtin_plugin_state_changed_takes_plugin_old_and_new() -> None:
    assert hookspecs.plugin_state_changed.options.argnames == ("plugin", "old", "new")


def test_kernel_knows_the_builtin_hooks_and_the_ones_passed_in_code() -> None:
    kernel = make_kernel()

    assert {"cli_commands", "plugin_state_changed", "kernel_started", "kernel_stopping", "check_health"} <= set(
        kernel.hooks.specs
    )
    assert kernel.hooks.specs["gather"] is Specs.gather


def test_a_second_different_spec_of_the_same_name_is_refused() -> None:
    with pytest.raises(PluginError, match="'ping'"):
        Kernel({}, hookspecs=[Specs, ClashingSpecs], environ={})


def test_the_same_spec_namespace_may_be_added_twice() -> None:
    kernel = Kernel({}, hookspecs=[Specs, Specs], environ={})

    assert kernel.hooks.specs["ping"] is Specs.ping


async def test_hookspecs_may_live_in_a_module() -> None:
    module = types.ModuleType("weather_specs")

    @hookspec(firstresult=True)
    def forecast(city: str) -> str | None:
        """The first plugin that knows the city answers."""

    module.forecast = forecast  # type: ignore[attr-defined]
    oracle = make_plugin("oracle", forecast=lambda self, city: f"sun in {city}")

    async with Kernel({}, plugins=[oracle], hookspecs=[module], environ={}) as kernel:
        assert kernel.hooks.call(forecast, city="Oslo") == "sun in Oslo"


# -- impl validation at load -------------------------------------------------------------


async def test_impl_of_an_unknown_hook_fails_its_plugin_to_load() -> None:
    stray = make_plugin("stray", no_such_hook=lambda self: 1)
    fine = make_plugin("fine", ping=lambda self, x: x)

    async with make_kernel(stray, fine) as kernel:
        info = kernel.plugins["stray"]
        assert info.state is PluginState.FAILED
        assert "no_such_hook" in (info.last_error or "")
        assert kernel.plugins["fine"].state is PluginState.RUNNING
        assert kernel.hooks.call(Specs.ping, x=3) == [3]


async def test_optional_impl_of_an_unknown_hook_is_accepted() -> None:
    maybe = make_plugin("maybe", other_plugins_hook=hookimpl(optional=True)(lambda self: 1))

    async with make_kernel(maybe) as kernel:
        assert kernel.plugins["maybe"].state is PluginState.RUNNING
        assert kernel.plugins["maybe"].hooks == ()


async def test_impl_taking_an_argument_its_spec_lacks_fails_its_plugin() -> None:
    greedy = make_plugin("greedy", ping=lambda self, x, extra: x)

    async with make_kernel(greedy) as kernel:
        info = kernel.plugins["greedy"]
        assert info.state is PluginState.FAILED
        assert "extra" in (info.last_error or "")
        assert kernel.hooks.call(Specs.ping, x=1) == []


async def test_async_impl_of_a_sync_spec_fails_its_plugin() -> None:
    async def ping(self: object, x: int) -> int:
        return x

    wrong = make_plugin("wrong", ping=ping)

    async with make_kernel(wrong) as kernel:
        info = kernel.plugins["wrong"]
        assert info.state is PluginState.FAILED
        assert "ping" in (info.last_error or "")
        assert "plain def" in (info.last_error or "")


async def test_sync_impl_of_an_async_spec_fails_its_plugin() -> None:
    wrong = make_plugin("wrong", aping=lambda self, x: x)

    async with make_kernel(wrong) as kernel:
        info = kernel.plugins["wrong"]
        assert info.state is PluginState.FAILED
        assert "aping" in (info.last_error or "")
        assert "async def" in (info.last_error or "")


async def test_plugin_failing_impl_validation_leaves_no_impl_registered() -> None:
    half = make_plugin("half", ping=lambda self, x: x, aping=lambda self, x: x)

    async with make_kernel(half) as kernel:
        assert kernel.plugins["half"].state is PluginState.FAILED
        assert kernel.hooks.implementations("half") == []
        assert kernel.hooks.impl_plugins(Specs.ping) == []


async def test_impl_may_take_any_subset_of_the_spec_arguments() -> None:
    only_y = make_plugin("only_y", pair=lambda self, y: y * 10)
    none = make_plugin("none", pair=lambda self: 7)
    both = make_plugin("both", pair=lambda self, y, x: x - y)

    async with make_kernel(only_y, none, both) as kernel:
        assert kernel.hooks.call(Specs.pair, x=5, y=2) == [3, 7, 20]


async def test_impl_with_specname_implements_the_named_hook() -> None:
    renamed = make_plugin("renamed", whatever=hookimpl(specname="ping")(lambda self, x: x + 100))

    async with make_kernel(renamed) as kernel:
        assert kernel.hooks.call(Specs.ping, x=1) == [101]
        assert kernel.plugins["renamed"].hooks == ("ping",)


async def test_plugin_can_declare_hookspecs_in_its_manifest() -> None:
    owner = make_plugin("owner", hookspecs=[PluginSpecs], announce=lambda self, text: f"owner: {text}")
    user = make_plugin("user", announce=lambda self, text: f"user: {text}")

    async with make_kernel(owner, user) as kernel:
        assert kernel.plugins["user"].state is PluginState.RUNNING
        assert kernel.hooks.call(PluginSpecs.announce, text="hi") == ["owner: hi", "user: hi"]


async def test_plugin_whose_manifest_spec_clashes_with_a_known_one_fails() -> None:
    clasher = make_plugin("clasher", hookspecs=[ClashingSpecs])

    async with make_kernel(clasher) as kernel:
        info = kernel.plugins["clasher"]
        assert info.state is PluginState.FAILED
        assert "ping" in (info.last_error or "")


async def test_plugin_info_and_relay_list_the_hooks_a_plugin_implements() -> None:
    async def aping(self: object, x: int) -> int:
        return x

    busy = make_plugin("busy", ping=lambda self, x: x, aping=aping)

    async with make_kernel(busy) as kernel:
        assert kernel.plugins["busy"].hooks == ("aping", "ping")
        assert kernel.hooks.implementations("busy") == ["aping", "ping"]
        assert kernel.hooks.implementations("nobody") == []


# -- calling -----------------------------------------------------------------------------


async def test_sync_hook_returns_the_non_none_results_in_hook_order() -> None:
    a = make_plugin("a", ping=lambda self, x: x + 1)
    b = make_plugin("b", ping=lambda self, x: None)
    c = make_plugin("c", ping=lambda self, x: x + 3)

    async with make_kernel(a, b, c) as kernel:
        assert kernel.hooks.call(Specs.ping, x=1) == [2, 4]


async def test_sync_hook_without_impls_returns_an_empty_list() -> None:
    async with make_kernel() as kernel:
        assert kernel.hooks.call(Specs.ping, x=1) == []


async def test_sync_firstresult_hook_returns_the_first_non_none_result_and_stops() -> None:
    calls: list[str] = []
    a = make_plugin("a", pick=impl_for(Specs.pick, returning(None, calls, "a")))
    b = make_plugin("b", pick=impl_for(Specs.pick, returning(2, calls, "b")))
    c = make_plugin("c", pick=impl_for(Specs.pick, returning(3, calls, "c")))

    async with make_kernel(a, b, c) as kernel:
        assert kernel.hooks.call(Specs.pick, x=0) == 2
        assert calls == ["a", "b"]


async def test_sync_firstresult_hook_returns_none_when_every_impl_does() -> None:
    a = make_plugin("a", pick=lambda self, x: None)

    async with make_kernel(a) as kernel:
        assert kernel.hooks.call(Specs.pick, x=0) is None


async def test_async_hook_call_is_an_awaitable_of_the_results() -> None:
    async def first(self: object, x: int) -> int:
        await anyio.lowlevel.checkpoint()
        return x

    async def second(self: object, x: int) -> None:
        return None

    async with make_kernel(make_plugin("a", aping=first), make_plugin("b", aping=second)) as kernel:
        pending = kernel.hooks.call(Specs.aping, x=5)
        assert await pending == [5]


async def test_async_firstresult_hook_returns_the_first_non_none_result() -> None:
    calls: list[str] = []
    a = make_plugin("a", apick=impl_for(Specs.apick, returning(None, calls, "a")))
    b = make_plugin("b", apick=impl_for(Specs.apick, returning("b", calls, "b")))
    c = make_plugin("c", apick=impl_for(Specs.apick, returning("c", calls, "c")))

    async with make_kernel(a, b, c) as kernel:
        assert await kernel.hooks.call(Specs.apick, x=0) == "b"
        assert calls == ["a", "b"]


async def test_async_firstresult_hook_returns_none_without_impls() -> None:
    async with make_kernel() as kernel:
        assert await kernel.hooks.call(Specs.apick, x=0) is None


async def test_impls_receive_the_arguments_by_name() -> None:
    seen: list[tuple[int, int]] = []
    a = make_plugin("a", pair=lambda self, y, x: seen.append((x, y)))

    async with make_kernel(a) as kernel:
        kernel.hooks.call(Specs.pair, y=2, x=1)

    assert seen == [(1, 2)]


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"x": 1, "z": 2}, "missing ['y']"),
        ({"x": 1}, "missing ['y']"),
        ({"x": 1, "y": 2, "z": 3}, "unexpected ['z']"),
        ({}, "missing ['x', 'y']"),
    ],
)
async def test_sync_call_with_wrong_argument_names_raises_type_error(kwargs: dict[str, int], complaint: str) -> None:
    async with make_kernel(make_plugin("a", pair=lambda self: 1)) as kernel:
        with pytest.raises(TypeError) as caught:
            kernel.hooks.call(Specs.pair, **kwargs)

    assert complaint in str(caught.value)
    assert "'pair'" in str(caught.value)


async def test_call_with_positional_arguments_raises_type_error() -> None:
    async with make_kernel(make_plugin("a", ping=lambda self, x: x)) as kernel:
        with pytest.raises(TypeError, match="keyword arguments only"):
            kernel.hooks.call(Specs.ping, 1)  # type: ignore[call-overload]


@pytest.mark.parametrize("spec", [Specs.aping, Specs.gather], ids=["in_order", "concurrent"])
async def test_async_call_with_wrong_argument_names_raises_type_error(spec: HookSpec[Any, Any]) -> None:
    async with make_kernel() as kernel:
        with pytest.raises(TypeError, match="unexpected"):
            await kernel.hooks.call(spec, x=1, y=2)


async def test_call_with_wrong_arguments_calls_no_impl() -> None:
    calls: list[str] = []
    a = make_plugin("a", ping=impl_for(Specs.ping, returning(1, calls, "a")))

    async with make_kernel(a) as kernel:
        with pytest.raises(TypeError):
            kernel.hooks.call(Specs.ping, y=1)

    assert calls == []


async def test_call_of_a_spec_the_kernel_was_never_given_raises_key_error() -> None:
    async with make_kernel() as kernel:
        with pytest.raises(KeyError):
            kernel.hooks.call(NeverAdded.orphan)


async def test_only_running_plugins_take_part_in_hooks() -> None:
    def fail(ctx: PluginContext[Any]) -> None:
        raise RuntimeError("cannot start")

    broken = make_plugin("broken", start=fail, ping=lambda self, x: "broken")
    fine = make_plugin("fine", ping=lambda self, x: "fine")

    async with make_kernel(broken, fine) as kernel:
        assert kernel.plugins["broken"].state is PluginState.FAILED
        assert kernel.hooks.call(Specs.ping, x=0) == ["fine"]
        assert kernel.hooks.impl_plugins(Specs.ping) == ["fine"]


async def test_disabled_plugins_take_no_part_in_hooks() -> None:
    off = make_plugin("off", ping=lambda self, x: "off")
    on = make_plugin("on", ping=lambda self, x: "on")

    async with make_kernel(off, on, config={"plugins": {"off": {"enabled": False}}}) as kernel:
        assert kernel.hooks.call(Specs.ping, x=0) == ["on"]


async def test_no_impl_is_called_once_the_kernel_has_stopped() -> None:
    kernel = make_kernel(make_plugin("a", ping=lambda self, x: x))
    async with kernel:
        pass

    assert kernel.hooks.call(Specs.ping, x=1) == []


def test_loaded_participants_hook_reaches_plugins_that_have_not_started() -> None:
    kernel = make_kernel(
        make_plugin("a", roll_call=lambda self: "a"),
        make_plugin("b", roll_call=lambda self: "b"),
    )
    kernel.prepare()

    assert kernel.hooks.call(Specs.roll_call) == ["a", "b"]


def test_builtin_cli_commands_hook_collects_commands_from_loaded_plugins() -> None:
    command = CliCommand(name="greet", help="Say hello.", run=lambda args, env: 0)
    kernel = make_kernel(make_plugin("greeter", cli_commands=lambda self: [command]))
    kernel.prepare()

    assert kernel.hooks.call(hookspecs.cli_commands) == [[command]]


def test_running_participants_hook_reaches_no_plugin_before_start() -> None:
    kernel = make_kernel(make_plugin("a", ping=lambda self, x: x))
    kernel.prepare()

    assert kernel.hooks.call(Specs.ping, x=1) == []


def test_builtin_hook_can_be_called_before_the_kernel_is_prepared() -> None:
    kernel = make_kernel()

    result = kernel.hooks.call(
        hookspecs.plugin_state_changed, plugin="x", old=PluginState.RUNNING, new=PluginState.STOPPED
    )

    assert result == []


def test_standalone_relay_calls_specs_it_was_given() -> None:
    relay = HookRelay()
    relay.add_specs(Specs)

    assert relay.call(Specs.roll_call) == []


async def test_async_hook_call_can_run_as_a_task() -> None:
    done: list[int] = []

    async def aping(self: object, x: int) -> int:
        done.append(x)
        return x

    async with make_kernel(make_plugin("a", aping=aping)) as kernel:
        async with anyio.create_task_group() as group:
            group.start_soon(functools.partial(kernel.hooks.call, Specs.aping, x=1))
        assert done == [1]


async def test_concurrent_hook_call_can_run_as_a_task() -> None:
    done: list[int] = []

    async def gather(self: object, x: int) -> int:
        done.append(x)
        return x

    async with make_kernel(make_plugin("a", gather=gather)) as kernel:
        async with anyio.create_task_group() as group:
            group.start_soon(functools.partial(kernel.hooks.call, Specs.gather, x=1))
        assert done == [1]


# -- ordering ------------------------------------------------------------------------------


async def test_higher_priority_impl_runs_first() -> None:
    low = make_plugin("a_low", priority=-1, ping=lambda self, x: "a_low")
    mid = make_plugin("b_mid", ping=lambda self, x: "b_mid")
    high = make_plugin("c_high", priority=5, ping=lambda self, x: "c_high")

    async with make_kernel(low, mid, high) as kernel:
        assert kernel.hooks.call(Specs.ping, x=0) == ["c_high", "b_mid", "a_low"]


async def test_impls_of_equal_priority_run_in_name_order() -> None:
    plugins = [make_plugin(name, ping=lambda self, x, name=name: name) for name in ("delta", "alpha", "charlie")]

    async with make_kernel(*plugins) as kernel:
        assert kernel.hooks.call(Specs.ping, x=0) == ["alpha", "charlie", "delta"]


async def test_config_priority_overrides_the_plugin_priority() -> None:
    a = make_plugin("a", priority=10, ping=lambda self, x: "a")
    b = make_plugin("b", ping=lambda self, x: "b")

    async with make_kernel(a, b, config={"plugins": {"b": {"priority": 20}}}) as kernel:
        assert kernel.hooks.call(Specs.ping, x=0) == ["b", "a"]


async def test_manifest_before_wins_over_priority() -> None:
    early = make_plugin("z_early", before=["a_late"], ping=lambda self, x: "z_early")
    late = make_plugin("a_late", priority=100, ping=lambda self, x: "a_late")

    async with make_kernel(early, late) as kernel:
        assert kernel.hooks.call(Specs.ping, x=0) == ["z_early", "a_late"]


async def test_manifest_after_wins_over_name_order() -> None:
    first = make_plugin("a", after=["b"], ping=lambda self, x: "a")
    second = make_plugin("b", ping=lambda self, x: "b")

    async with make_kernel(first, second) as kernel:
        assert kernel.hooks.call(Specs.ping, x=0) == ["b", "a"]


async def test_config_before_replaces_the_manifest_lists() -> None:
    a = make_plugin("a", after=["b"], ping=lambda self, x: "a")
    b = make_plugin("b", ping=lambda self, x: "b")
    config = {"plugins": {"a": {"after": []}, "b": {"after": ["a"]}}}

    async with make_kernel(a, b, config=config) as kernel:
        assert kernel.hooks.call(Specs.ping, x=0) == ["a", "b"]


async def test_before_of_a_plugin_that_is_not_there_is_ignored() -> None:
    a = make_plugin("a", before=["ghost"], ping=lambda self, x: "a")

    async with make_kernel(a) as kernel:
        assert kernel.hooks.call(Specs.ping, x=0) == ["a"]


def test_before_after_cycle_is_a_config_error() -> None:
    a = make_plugin("a", before=["b"])
    b = make_plugin("b", before=["a"])

    with pytest.raises(ConfigError, match="ordering cycle"):
        make_kernel(a, b).prepare()


async def test_order_applies_to_async_hooks_too() -> None:
    async def named(self: Plugin, x: int) -> str:
        await anyio.lowlevel.checkpoint()
        return self.name

    plugins = [
        make_plugin("a", aping=named),
        make_plugin("b", priority=3, aping=named),
        make_plugin("c", before=["a"], aping=named),
    ]

    async with make_kernel(*plugins) as kernel:
        assert await kernel.hooks.call(Specs.aping, x=0) == ["b", "c", "a"]


async def test_higher_priority_still_wins_over_an_unrelated_plugin_when_before_applies() -> None:
    low = make_plugin("a_low", ping=lambda self, x: "a_low")
    high = make_plugin("b_high", priority=3, ping=lambda self, x: "b_high")
    opener = make_plugin("c_opener", before=["b_high"], ping=lambda self, x: "c_opener")

    async with make_kernel(low, high, opener) as kernel:
        assert kernel.hooks.call(Specs.ping, x=0) == ["c_opener", "b_high", "a_low"]


async def test_impl_plugins_reports_the_call_order() -> None:
    a = make_plugin("a", ping=lambda self, x: 1)
    b = make_plugin("b", priority=1, ping=lambda self, x: 1)

    async with make_kernel(a, b) as kernel:
        assert kernel.hooks.impl_plugins(Specs.ping) == ["b", "a"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["ann", "bob", "cy", "dee", "eve"]), st.integers(-3, 3), min_size=1))
def test_call_order_is_priority_then_name(priorities: dict[str, int]) -> None:
    plugins = [
        make_plugin(name, priority=prio, roll_call=lambda self, name=name: name) for name, prio in priorities.items()
    ]
    kernel = make_kernel(*plugins)
    kernel.prepare()

    expected = sorted(priorities, key=lambda name: (-priorities[name], name))
    assert kernel.hooks.call(Specs.roll_call) == expected


# -- failure policies ------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [Specs.ping_fail_fast, Specs.aping_fail_fast], ids=["sync", "async"])
async def test_fail_fast_wraps_an_error_in_hook_failed_naming_plugin_and_hook(spec: HookSpec[Any, Any]) -> None:
    cause = ValueError("bad input")
    a = make_plugin("a", **{spec.name: impl_for(spec, raising(cause))})

    async with make_kernel(a) as kernel:
        with pytest.raises(HookFailed) as caught:
            await call_hook(kernel, spec, x=1)

    assert caught.value.plugin == "a"
    assert caught.value.hook == spec.name
    assert caught.value.__cause__ is cause
    assert str(caught.value) == f"hook {spec.name!r} failed in plugin 'a': ValueError: bad input"


@pytest.mark.parametrize("spec", [Specs.ping_fail_fast, Specs.aping_fail_fast], ids=["sync", "async"])
async def test_fail_fast_stops_at_the_first_failing_impl(spec: HookSpec[Any, Any]) -> None:
    calls: list[str] = []
    a = make_plugin("a", **{spec.name: impl_for(spec, returning(1, calls, "a"))})
    b = make_plugin("b", **{spec.name: impl_for(spec, raising(RuntimeError("x"), calls, "b"))})
    c = make_plugin("c", **{spec.name: impl_for(spec, returning(3, calls, "c"))})

    async with make_kernel(a, b, c) as kernel:
        with pytest.raises(HookFailed):
            await call_hook(kernel, spec, x=1)

    assert calls == ["a", "b"]


@pytest.mark.parametrize(
    "spec", [Specs.ping_fail_fast, Specs.aping_fail_fast, Specs.gather_fail_fast], ids=["sync", "async", "concurrent"]
)
async def test_fail_fast_lets_an_sdk_error_through_unchanged(spec: HookSpec[Any, Any]) -> None:
    denial = PermissionDenied("not for you")
    a = make_plugin("a", **{spec.name: impl_for(spec, raising(denial))})

    async with make_kernel(a) as kernel:
        with pytest.raises(PermissionDenied) as caught:
            await call_hook(kernel, spec, x=1)

        assert caught.value is denial
        assert kernel.hooks.consecutive_failures("a") == 0


@pytest.mark.parametrize("spec", [Specs.ping, Specs.aping, Specs.gather], ids=["sync", "async", "concurrent"])
async def test_isolate_skips_the_failing_impl_and_returns_the_others(spec: HookSpec[Any, Any]) -> None:
    calls: list[str] = []
    a = make_plugin("a", **{spec.name: impl_for(spec, returning(1, calls, "a"))})
    b = make_plugin("b", **{spec.name: impl_for(spec, raising(RuntimeError("x"), calls, "b"))})
    c = make_plugin("c", **{spec.name: impl_for(spec, returning(3, calls, "c"))})

    async with make_kernel(a, b, c) as kernel:
        assert await call_hook(kernel, spec, x=1) == [1, 3]
        assert sorted(calls) == ["a", "b", "c"]
        assert kernel.hooks.consecutive_failures("b") == 1
        assert kernel.hooks.consecutive_failures("a") == 0


@pytest.mark.parametrize("spec", [Specs.ping, Specs.aping], ids=["sync", "async"])
async def test_isolate_skips_an_sdk_error_without_counting_it(spec: HookSpec[Any, Any]) -> None:
    a = make_plugin("a", **{spec.name: impl_for(spec, raising(PermissionDenied("no")))})
    b = make_plugin("b", **{spec.name: impl_for(spec, returning(2))})

    async with make_kernel(a, b) as kernel:
        assert await call_hook(kernel, spec, x=1) == [2]
        assert kernel.hooks.consecutive_failures("a") == 0


async def test_isolate_firstresult_moves_on_past_a_failing_impl() -> None:
    a = make_plugin("a", pick=impl_for(Specs.pick, raising(RuntimeError("x"))))
    b = make_plugin("b", pick=impl_for(Specs.pick, returning(2)))

    async with make_kernel(a, b) as kernel:
        assert kernel.hooks.call(Specs.pick, x=0) == 2


@pytest.mark.parametrize(
    "spec", [Specs.ping_collect, Specs.aping_collect, Specs.gather_collect], ids=["sync", "async", "concurrent"]
)
async def test_collect_runs_every_impl_then_raises_a_group_of_hook_failed(spec: HookSpec[Any, Any]) -> None:
    calls: list[str] = []
    first, second = ValueError("one"), KeyError("two")
    a = make_plugin("a", **{spec.name: impl_for(spec, raising(first, calls, "a"))})
    b = make_plugin("b", **{spec.name: impl_for(spec, returning(2, calls, "b"))})
    c = make_plugin("c", **{spec.name: impl_for(spec, raising(second, calls, "c"))})

    async with make_kernel(a, b, c) as kernel:
        with pytest.raises(ExceptionGroup) as caught:
            await call_hook(kernel, spec, x=1)

    assert sorted(calls) == ["a", "b", "c"]
    errors = caught.value.exceptions
    assert all(isinstance(error, HookFailed) for error in errors)
    assert {(error.plugin, error.hook) for error in errors} == {("a", spec.name), ("c", spec.name)}  # type: ignore[attr-defined]
    assert {id(error.__cause__) for error in errors} == {id(first), id(second)}


@pytest.mark.parametrize(
    "spec", [Specs.ping_collect, Specs.aping_collect, Specs.gather_collect], ids=["sync", "async", "concurrent"]
)
async def test_collect_without_failures_returns_the_results(spec: HookSpec[Any, Any]) -> None:
    a = make_plugin("a", **{spec.name: impl_for(spec, returning(1))})
    b = make_plugin("b", **{spec.name: impl_for(spec, returning(2))})

    async with make_kernel(a, b) as kernel:
        assert await call_hook(kernel, spec, x=1) == [1, 2]


async def test_collect_keeps_an_sdk_error_as_it_is_in_the_group() -> None:
    denial = PermissionDenied("no")
    a = make_plugin("a", ping_collect=impl_for(Specs.ping_collect, raising(denial)))

    async with make_kernel(a) as kernel:
        with pytest.raises(ExceptionGroup) as caught:
            kernel.hooks.call(Specs.ping_collect, x=1)

    assert caught.value.exceptions == (denial,)


# -- deadlines: async hooks awaited in order ------------------------------------------------


async def test_async_impl_past_the_deadline_raises_hook_timeout_under_fail_fast() -> None:
    async def hang(self: object, x: int) -> int:
        await anyio.sleep(10)
        return x

    async with make_kernel(make_plugin("sleepy", timed_fail_fast=hang)) as kernel:
        began = time.perf_counter()
        with pytest.raises(HookTimeout) as caught:
            await kernel.hooks.call(Specs.timed_fail_fast, x=1)
        elapsed = time.perf_counter() - began

    assert caught.value.plugin == "sleepy"
    assert caught.value.hook == "timed_fail_fast"
    assert caught.value.timeout == 0.1
    assert 0.09 <= elapsed < 1.0


async def test_isolate_deadline_returns_results_so_far_and_calls_no_further_impl() -> None:
    calls: list[str] = []

    async def quick(self: object, x: int) -> str:
        calls.append("a")
        return "a"

    async def hang(self: object, x: int) -> str:
        calls.append("b")
        await anyio.sleep(10)
        return "b"

    async def later(self: object, x: int) -> str:
        calls.append("c")
        return "c"

    plugins = [make_plugin("a", timed=quick), make_plugin("b", timed=hang), make_plugin("c", timed=later)]
    async with make_kernel(*plugins) as kernel:
        assert await kernel.hooks.call(Specs.timed, x=0) == ["a"]
        assert kernel.hooks.consecutive_failures("b") == 1

    assert calls == ["a", "b"]


async def test_collect_deadline_raises_a_group_holding_the_hook_timeout() -> None:
    async def hang(self: object, x: int) -> int:
        await anyio.sleep(10)
        return x

    async with make_kernel(make_plugin("sleepy", timed_collect=hang)) as kernel:
        with pytest.raises(ExceptionGroup) as caught:
            await kernel.hooks.call(Specs.timed_collect, x=0)

    (error,) = caught.value.exceptions
    assert isinstance(error, HookTimeout)
    assert error.plugin == "sleepy"


async def test_one_deadline_covers_the_whole_call() -> None:
    async def nap(self: Plugin, x: int) -> str:
        await anyio.sleep(0.06)
        return self.name

    async with make_kernel(make_plugin("a", timed=nap), make_plugin("b", timed=nap)) as kernel:
        assert await kernel.hooks.call(Specs.timed, x=0) == ["a"]
        assert kernel.hooks.consecutive_failures("b") == 1


async def test_config_hook_timeouts_add_a_deadline_to_a_spec_without_one() -> None:
    async def hang(self: object, x: int) -> int:
        await anyio.sleep(10)
        return x

    config = {"kernel": {"hook_timeouts": {"aping_fail_fast": 0.05}}}
    async with make_kernel(make_plugin("sleepy", aping_fail_fast=hang), config=config) as kernel:
        assert kernel.hooks.timeout_of(Specs.aping_fail_fast) == 0.05
        with pytest.raises(HookTimeout):
            await kernel.hooks.call(Specs.aping_fail_fast, x=0)


async def test_config_hook_timeouts_can_relax_the_spec_deadline() -> None:
    async def nap(self: object, x: int) -> int:
        await anyio.sleep(0.15)
        return x

    config = {"kernel": {"hook_timeouts": {"timed_fail_fast": 2.0}}}
    async with make_kernel(make_plugin("a", timed_fail_fast=nap), config=config) as kernel:
        assert await kernel.hooks.call(Specs.timed_fail_fast, x=4) == [4]


def test_timeout_of_is_the_spec_default_without_config() -> None:
    kernel = make_kernel()
    kernel.prepare()

    assert kernel.hooks.timeout_of(Specs.timed) == 0.1
    assert kernel.hooks.timeout_of(Specs.ping) is None


def test_hook_timeouts_naming_an_unknown_hook_is_a_config_error() -> None:
    kernel = make_kernel(config={"kernel": {"hook_timeouts": {"timedd": 1.0}}})

    with pytest.raises(ConfigError) as caught:
        kernel.prepare()

    assert caught.value.paths == ("kernel.hook_timeouts.timedd",)
    assert "did you mean 'timed'" in str(caught.value)


def test_hook_timeouts_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="hook_timeouts"):
        make_kernel(config={"kernel": {"hook_timeouts": {"timed": 0}}})


# -- deadlines: the three ways a deadline is enforced ---------------------------------------
#
# In a started kernel on asyncio one watchdog task enforces every deadline; on
# trio (and on asyncio whenever no watchdog runs, e.g. before the kernel
# starts) a deadline is armed lazily per impl: an asyncio timer, or an anyio
# cancel scope on trio, and only once the impl really suspends.

DEADLINE_PATHS = pytest.mark.parametrize(
    ("anyio_backend", "started"),
    [("asyncio", True), ("asyncio", False), ("trio", True)],
    ids=["asyncio-watchdog", "asyncio-lazy-timer", "trio-cancel-scope"],
)
ASYNCIO_DEADLINE_PATHS = pytest.mark.parametrize(
    ("anyio_backend", "started"),
    [("asyncio", True), ("asyncio", False)],
    ids=["asyncio-watchdog", "asyncio-lazy-timer"],
)


@contextlib.asynccontextmanager
async def deadline_call(
    started: bool, impl: Callable[..., Any], name: str = "slowpoke"
) -> AsyncIterator[tuple[Kernel, Callable[[], Awaitable[Any]]]]:
    """A kernel whose ``name`` plugin implements a fail_fast hook with a 100 ms deadline,
    and a function calling that hook: in a started kernel (watchdog on asyncio, cancel
    scope on trio), or in a kernel that was only prepared (the lazy timer)."""
    if started:
        kernel = make_kernel(make_plugin(name, timed_fail_fast=impl))
        async with kernel:
            yield kernel, lambda: kernel.hooks.call(Specs.timed_fail_fast, x=1)
    else:
        kernel = make_kernel(make_plugin(name, loaded_timed_fail_fast=impl))
        kernel.prepare()
        yield kernel, lambda: kernel.hooks.call(Specs.loaded_timed_fail_fast, x=1)


async def never_returns(self: object, x: int) -> int:
    await anyio.Event().wait()
    return x


@DEADLINE_PATHS
async def test_impl_that_suspends_within_the_deadline_returns_its_value(anyio_backend: str, started: bool) -> None:
    async def yields(self: object, x: int) -> int:
        await anyio.sleep(0)  # noqa: ASYNC115 - a real suspension, which arms the lazy deadline
        return x * 2

    async with deadline_call(started, yields) as (_, call):
        assert await call() == [2]


@DEADLINE_PATHS
async def test_impl_that_never_suspends_returns_its_value(anyio_backend: str, started: bool) -> None:
    async def instant(self: object, x: int) -> int:
        return x * 3

    async with deadline_call(started, instant) as (_, call):
        assert await call() == [3]


@DEADLINE_PATHS
async def test_impl_waiting_past_the_deadline_raises_hook_timeout(anyio_backend: str, started: bool) -> None:
    async with deadline_call(started, never_returns, "waiter") as (_, call):
        began = time.perf_counter()
        with pytest.raises(HookTimeout) as caught:
            await call()
        elapsed = time.perf_counter() - began

    assert caught.value.plugin == "waiter"
    assert caught.value.timeout == 0.1
    assert 0.09 <= elapsed < 1.0


@DEADLINE_PATHS
async def test_next_await_in_the_task_works_after_a_hook_timeout(anyio_backend: str, started: bool) -> None:
    async with deadline_call(started, never_returns) as (_, call):
        with pytest.raises(HookTimeout):
            await call()
        await anyio.sleep(0)  # noqa: ASYNC115 - would raise if a cancellation were left pending
        await anyio.sleep(0.02)
        with pytest.raises(HookTimeout):
            await call()


@ASYNCIO_DEADLINE_PATHS
async def test_task_is_not_left_cancelled_after_a_hook_timeout(anyio_backend: str, started: bool) -> None:
    task = asyncio.current_task()
    assert task is not None
    before = task.cancelling()

    async with deadline_call(started, never_returns) as (_, call):
        with pytest.raises(HookTimeout):
            await call()

        assert task.cancelling() == before
        await anyio.sleep(0.02)


@DEADLINE_PATHS
async def test_outer_cancellation_during_a_hook_call_propagates_as_cancellation(
    anyio_backend: str, started: bool
) -> None:
    async with deadline_call(started, never_returns, "waiter") as (kernel, call):
        with anyio.move_on_after(0.03) as scope:
            await call()

        assert scope.cancelled_caught
        assert kernel.hooks.consecutive_failures("waiter") == 0
        await anyio.sleep(0.02)


@ASYNCIO_DEADLINE_PATHS
async def test_outer_deadline_that_passes_first_is_not_turned_into_hook_timeout(
    anyio_backend: str, started: bool
) -> None:
    async def oversleeps(self: object, x: int) -> int:
        await anyio.sleep(10)
        return x

    async with deadline_call(started, oversleeps) as (_, call):
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0.03):
                await call()


@ASYNCIO_DEADLINE_PATHS
async def test_hook_timeout_does_not_cancel_an_enclosing_scope(anyio_backend: str, started: bool) -> None:
    async with deadline_call(started, never_returns) as (_, call):
        with anyio.fail_after(5) as scope:
            with pytest.raises(HookTimeout):
                await call()
            await anyio.sleep(0.02)

        assert not scope.cancel_called


@ASYNCIO_DEADLINE_PATHS
async def test_deadline_is_disarmed_when_the_impl_finishes_in_time(anyio_backend: str, started: bool) -> None:
    async def quick(self: object, x: int) -> int:
        await anyio.sleep(0.01)
        return x

    task = asyncio.current_task()
    assert task is not None
    before = task.cancelling()
    async with deadline_call(started, quick) as (_, call):
        assert await call() == [1]
        await anyio.sleep(0.15)  # past the call's deadline: a deadline still armed would cancel us here

    assert task.cancelling() == before


@ASYNCIO_DEADLINE_PATHS
async def test_impl_that_opens_its_own_cancel_scope_still_times_out(anyio_backend: str, started: bool) -> None:
    async def scoped(self: object, x: int) -> int:
        with anyio.move_on_after(10):
            await anyio.sleep(10)
        return x

    async with deadline_call(started, scoped) as (_, call):
        with pytest.raises(HookTimeout):
            await call()


@ASYNCIO_DEADLINE_PATHS
async def test_impl_with_an_inner_task_group_times_out(anyio_backend: str, started: bool) -> None:
    async def grouped(self: object, x: int) -> int:
        async with anyio.create_task_group() as group:
            group.start_soon(anyio.sleep, 10)
        return x

    async with deadline_call(started, grouped) as (_, call):
        with pytest.raises(HookTimeout):
            await call()


SLEEPING_DEADLINE_PATHS = pytest.mark.parametrize(
    ("anyio_backend", "started"),
    [("asyncio", True), ("asyncio", False), ("trio", True)],
    ids=["asyncio-watchdog", "asyncio-cancel-scope", "trio-cancel-scope"],
)


@SLEEPING_DEADLINE_PATHS
async def test_impl_that_sleeps_within_the_deadline_returns_its_value(anyio_backend: str, started: bool) -> None:
    async def naps(self: object, x: int) -> int:
        await anyio.sleep(0.01)
        return x * 7

    async with deadline_call(started, naps) as (_, call):
        assert await call() == [7]


@SLEEPING_DEADLINE_PATHS
async def test_impl_that_sleeps_past_the_deadline_raises_hook_timeout(anyio_backend: str, started: bool) -> None:
    async def oversleeps(self: object, x: int) -> int:
        await anyio.sleep(10)
        return x

    async with deadline_call(started, oversleeps) as (_, call):
        with pytest.raises(HookTimeout):
            await call()


async def test_nested_hook_call_timing_out_leaves_the_outer_call_running() -> None:
    async def outer(self: object, x: int) -> str:
        try:
            await kernel.hooks.call(Specs.timed_fail_fast, x=x)
        except HookTimeout as exc:
            return f"inner timed out in {exc.plugin}"
        return "inner finished"

    kernel = make_kernel(make_plugin("outer", patient=outer), make_plugin("inner", timed_fail_fast=never_returns))
    async with kernel:
        assert await kernel.hooks.call(Specs.patient, x=1) == ["inner timed out in inner"]
        await anyio.sleep(0.02)
        assert kernel.hooks.consecutive_failures("outer") == 0


async def test_outer_deadline_passing_inside_a_nested_call_is_the_outer_calls_timeout() -> None:
    async def outer(self: object, x: int) -> list[int]:
        return await kernel.hooks.call(Specs.patient, x=x)

    kernel = make_kernel(make_plugin("outer", timed_fail_fast=outer), make_plugin("inner", patient=never_returns))
    async with kernel:
        with pytest.raises(HookTimeout) as caught:
            await kernel.hooks.call(Specs.timed_fail_fast, x=1)

        assert caught.value.plugin == "outer"
        assert kernel.hooks.consecutive_failures("inner") == 0


# -- deadlines: sync impls (detected after they return) ---------------------------------------


async def test_sync_impl_that_overruns_raises_hook_timeout_after_it_returns_under_fail_fast() -> None:
    finished: list[str] = []

    def slow(self: object, x: int) -> int:
        block(0.07)
        finished.append("slow")
        return x

    async with make_kernel(make_plugin("slow", slow_ping_fail_fast=slow)) as kernel:
        with pytest.raises(HookTimeout) as caught:
            kernel.hooks.call(Specs.slow_ping_fail_fast, x=1)

    assert finished == ["slow"]
    assert caught.value.plugin == "slow"
    assert caught.value.timeout == 0.05


async def test_sync_overrun_under_isolate_returns_results_so_far_and_calls_no_further_impl() -> None:
    calls: list[str] = []

    def quick(self: object, x: int) -> str:
        calls.append("a")
        return "a"

    def slow(self: object, x: int) -> str:
        calls.append("b")
        block(0.07)
        return "b"

    def later(self: object, x: int) -> str:
        calls.append("c")
        return "c"

    plugins = [make_plugin("a", slow_ping=quick), make_plugin("b", slow_ping=slow), make_plugin("c", slow_ping=later)]
    async with make_kernel(*plugins) as kernel:
        assert kernel.hooks.call(Specs.slow_ping, x=0) == ["a"]
        assert kernel.hooks.consecutive_failures("b") == 1

    assert calls == ["a", "b"]


async def test_async_impl_that_blocks_without_suspending_is_detected_after_it_returns() -> None:
    async def busy(self: object, x: int) -> int:
        block(0.12)
        return x

    async with make_kernel(make_plugin("busy", timed_fail_fast=busy)) as kernel:
        with pytest.raises(HookTimeout) as caught:
            await kernel.hooks.call(Specs.timed_fail_fast, x=1)

    assert caught.value.plugin == "busy"


BLOCKING_PATHS = pytest.mark.parametrize(
    "anyio_backend",
    ["asyncio", "trio"],
)


@BLOCKING_PATHS
async def test_async_impl_blocking_past_the_deadline_is_blamed_not_the_next_one(anyio_backend: str) -> None:
    async def busy(self: object, x: int) -> str:
        block(0.12)
        return "busy"

    async def quick(self: object, x: int) -> str:
        return "quick"

    async with make_kernel(make_plugin("a_busy", timed=busy), make_plugin("b_quick", timed=quick)) as kernel:
        await kernel.hooks.call(Specs.timed, x=0)

        assert kernel.hooks.consecutive_failures("a_busy") == 1
        assert kernel.hooks.consecutive_failures("b_quick") == 0


@BLOCKING_PATHS
async def test_no_impl_is_called_after_one_blocked_past_the_deadline(anyio_backend: str) -> None:
    calls: list[str] = []

    async def busy(self: object, x: int) -> str:
        calls.append("a_busy")
        block(0.12)
        return "busy"

    async def quick(self: object, x: int) -> str:
        calls.append("b_quick")
        return "quick"

    async with make_kernel(make_plugin("a_busy", timed=busy), make_plugin("b_quick", timed=quick)) as kernel:
        assert await kernel.hooks.call(Specs.timed, x=0) == []

    assert calls == ["a_busy"]


# -- concurrent hooks -----------------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_concurrent_impls_run_at_the_same_time(anyio_backend: str) -> None:
    async def nap(self: Plugin, x: int) -> str:
        await anyio.sleep(0.1)
        return self.name

    config = {"kernel": {"hook_timeouts": {"gather": 5.0}}}
    async with make_kernel(make_plugin("a", gather=nap), make_plugin("b", gather=nap), config=config) as kernel:
        began = time.perf_counter()
        results = await kernel.hooks.call(Specs.gather, x=0)
        elapsed = time.perf_counter() - began

    assert results == ["a", "b"]
    assert elapsed < 0.19  # one after the other would take 0.2 s


async def test_two_impls_sleeping_200ms_finish_together_in_under_350ms() -> None:
    async def nap(self: Plugin) -> str:
        await anyio.sleep(0.2)
        return self.name

    config = {"kernel": {"hook_timeouts": {"gather": 1.0}}}
    async with make_kernel(make_plugin("a", gather=nap), make_plugin("b", gather=nap), config=config) as kernel:
        began = time.perf_counter()
        assert await kernel.hooks.call(Specs.gather, x=0) == ["a", "b"]
        assert time.perf_counter() - began < 0.35


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_concurrent_hanging_impl_is_reported_as_timeout_while_the_others_return(anyio_backend: str) -> None:
    watch = Watch()

    async def hang(self: object) -> str:
        await anyio.sleep_forever()
        return "never"

    async def quick(self: object) -> str:
        await anyio.sleep(0.01)
        return "quick"

    plugins = [watcher(watch), make_plugin("a_hang", gather=hang), make_plugin("b_quick", gather=quick)]
    async with make_kernel(*plugins) as kernel:
        began = time.perf_counter()
        assert await kernel.hooks.call(Specs.gather, x=0) == ["quick"]
        elapsed = time.perf_counter() - began
        assert kernel.hooks.consecutive_failures("a_hang") == 1

    assert 0.19 <= elapsed < 0.6
    assert ("gather", "a_hang", "timeout") in watch.hooks
    assert ("gather", "b_quick", "ok") in watch.hooks


async def test_concurrent_results_keep_hook_order_whatever_the_finishing_order() -> None:
    async def slow(self: object) -> str:
        await anyio.sleep(0.05)
        return "first_in_order"

    async def fast(self: object) -> str:
        return "second_in_order"

    async with make_kernel(make_plugin("a", gather=slow), make_plugin("b", gather=fast)) as kernel:
        assert await kernel.hooks.call(Specs.gather, x=0) == ["first_in_order", "second_in_order"]


async def test_concurrent_fail_fast_raises_the_error_and_cancels_the_others() -> None:
    cancelled: list[str] = []

    async def boom(self: object) -> int:
        await anyio.sleep(0.01)
        raise ValueError("boom")

    async def slow(self: object) -> int:
        try:
            await anyio.sleep(5)
        except anyio.get_cancelled_exc_class():
            cancelled.append("slow")
            raise
        return 1

    plugins = [make_plugin("a_boom", gather_fail_fast=boom), make_plugin("b_slow", gather_fail_fast=slow)]
    async with make_kernel(*plugins) as kernel:
        began = time.perf_counter()
        with pytest.raises(HookFailed) as caught:
            await kernel.hooks.call(Specs.gather_fail_fast, x=0)
        assert time.perf_counter() - began < 1.0

    assert caught.value.plugin == "a_boom"
    assert cancelled == ["slow"]


async def test_concurrent_collect_holds_timeouts_and_failures_in_one_group() -> None:
    async def hang(self: object) -> int:
        await anyio.sleep_forever()
        return 0

    async def boom(self: object) -> int:
        raise ValueError("boom")

    plugins = [make_plugin("a_hang", gather_collect=hang), make_plugin("b_boom", gather_collect=boom)]
    async with make_kernel(*plugins) as kernel:
        with pytest.raises(ExceptionGroup) as caught:
            await kernel.hooks.call(Specs.gather_collect, x=0)

    kinds = {(type(error), error.plugin) for error in caught.value.exceptions}  # type: ignore[attr-defined]
    assert kinds == {(HookTimeout, "a_hang"), (HookFailed, "b_boom")}


async def test_concurrent_success_resets_the_failure_count() -> None:
    outcomes = iter([ValueError("once"), None])

    async def flaky(self: object) -> int:
        error = next(outcomes)
        if error is not None:
            raise error
        return 1

    async with make_kernel(make_plugin("flaky", gather=flaky)) as kernel:
        assert await kernel.hooks.call(Specs.gather, x=0) == []
        assert kernel.hooks.consecutive_failures("flaky") == 1
        assert await kernel.hooks.call(Specs.gather, x=0) == [1]
        assert kernel.hooks.consecutive_failures("flaky") == 0


async def test_check_health_collects_every_running_plugins_status() -> None:
    async def healthy(self: object) -> HealthStatus:
        return HealthStatus(ok=True)

    async def sick(self: object) -> HealthStatus:
        return HealthStatus(ok=False, reason="disk full")

    async def silent(self: object) -> None:
        return None

    plugins = [make_plugin("a", check_health=healthy), make_plugin("b", check_health=sick)]
    async with make_kernel(*plugins, make_plugin("c", check_health=silent)) as kernel:
        statuses = await kernel.hooks.call(hookspecs.check_health)

    assert statuses == [HealthStatus(ok=True), HealthStatus(ok=False, reason="disk full")]


async def test_check_health_hanging_check_is_cut_by_the_configured_deadline() -> None:
    async def hang(self: object) -> HealthStatus:
        await anyio.sleep_forever()
        return HealthStatus(ok=True)

    async def healthy(self: object) -> HealthStatus:
        return HealthStatus(ok=True)

    config = {"kernel": {"hook_timeouts": {"check_health": 0.1}}}
    plugins = [make_plugin("hung", check_health=hang), make_plugin("fine", check_health=healthy)]
    async with make_kernel(*plugins, config=config) as kernel:
        assert kernel.hooks.timeout_of(hookspecs.check_health) == 0.1
        with anyio.fail_after(2):
            assert await kernel.hooks.call(hookspecs.check_health) == [HealthStatus(ok=True)]
        assert kernel.hooks.consecutive_failures("hung") == 1


# -- quarantine ----------------------------------------------------------------------------


async def test_plugin_is_quarantined_after_consecutive_failures() -> None:
    calls: list[str] = []
    flaky = make_plugin("flaky", ping=impl_for(Specs.ping, raising(RuntimeError("x"), calls, "flaky")))
    fine = make_plugin("fine", ping=lambda self, x: "fine")

    async with make_kernel(flaky, fine, config={"kernel": {"quarantine_after": 3}}) as kernel:
        for _ in range(3):
            assert kernel.hooks.call(Specs.ping, x=0) == ["fine"]
        info = kernel.plugins["flaky"]
        assert info.state is PluginState.QUARANTINED
        assert "quarantined after 3 consecutive failures" in (info.last_error or "")

        assert kernel.hooks.call(Specs.ping, x=0) == ["fine"]
        assert kernel.hooks.impl_plugins(Specs.ping) == ["fine"]

    assert calls == ["flaky"] * 3


async def test_plugin_is_not_quarantined_before_reaching_the_threshold() -> None:
    flaky = make_plugin("flaky", ping=impl_for(Specs.ping, raising(RuntimeError("x"))))

    async with make_kernel(flaky, config={"kernel": {"quarantine_after": 3}}) as kernel:
        kernel.hooks.call(Specs.ping, x=0)
        kernel.hooks.call(Specs.ping, x=0)

        assert kernel.hooks.consecutive_failures("flaky") == 2
        assert kernel.plugins["flaky"].state is PluginState.RUNNING


async def test_default_quarantine_threshold_is_five() -> None:
    flaky = make_plugin("flaky", ping=impl_for(Specs.ping, raising(RuntimeError("x"))))

    async with make_kernel(flaky) as kernel:
        assert kernel.hooks.quarantine_after == 5
        for _ in range(4):
            kernel.hooks.call(Specs.ping, x=0)
        assert kernel.plugins["flaky"].state is PluginState.RUNNING
        kernel.hooks.call(Specs.ping, x=0)
        assert kernel.plugins["flaky"].state is PluginState.QUARANTINED


async def test_a_success_resets_the_consecutive_failures() -> None:
    outcomes = iter([True, True, False, True, True])

    def flaky(self: object, x: int) -> int:
        if next(outcomes):
            raise RuntimeError("x")
        return x

    async with make_kernel(make_plugin("flaky", ping=flaky), config={"kernel": {"quarantine_after": 3}}) as kernel:
        for _ in range(2):
            kernel.hooks.call(Specs.ping, x=0)
        assert kernel.hooks.consecutive_failures("flaky") == 2
        kernel.hooks.call(Specs.ping, x=0)
        assert kernel.hooks.consecutive_failures("flaky") == 0
        for _ in range(2):
            kernel.hooks.call(Specs.ping, x=0)

        assert kernel.hooks.consecutive_failures("flaky") == 2
        assert kernel.plugins["flaky"].state is PluginState.RUNNING


async def test_failures_in_different_hooks_count_together() -> None:
    async def aboom(self: object, x: int) -> int:
        raise RuntimeError("x")

    flaky = make_plugin("flaky", ping=impl_for(Specs.ping, raising(RuntimeError("x"))), aping=aboom)

    async with make_kernel(flaky, config={"kernel": {"quarantine_after": 2}}) as kernel:
        kernel.hooks.call(Specs.ping, x=0)
        await kernel.hooks.call(Specs.aping, x=0)

        assert kernel.plugins["flaky"].state is PluginState.QUARANTINED


async def test_sdk_errors_do_not_count_towards_quarantine() -> None:
    denier = make_plugin("denier", ping=impl_for(Specs.ping, raising(PermissionDenied("no"))))

    async with make_kernel(denier, config={"kernel": {"quarantine_after": 2}}) as kernel:
        for _ in range(5):
            kernel.hooks.call(Specs.ping, x=0)

        assert kernel.hooks.consecutive_failures("denier") == 0
        assert kernel.plugins["denier"].state is PluginState.RUNNING


async def test_fail_fast_failures_count_towards_quarantine() -> None:
    flaky = make_plugin("flaky", ping_fail_fast=impl_for(Specs.ping_fail_fast, raising(RuntimeError("x"))))

    async with make_kernel(flaky, config={"kernel": {"quarantine_after": 2}}) as kernel:
        for _ in range(2):
            with pytest.raises(HookFailed):
                kernel.hooks.call(Specs.ping_fail_fast, x=0)

        assert kernel.plugins["flaky"].state is PluginState.QUARANTINED
        assert kernel.hooks.call(Specs.ping_fail_fast, x=0) == []


async def test_async_timeouts_count_towards_quarantine() -> None:
    async def hang(self: object, x: int) -> int:
        await anyio.Event().wait()
        return x

    async with make_kernel(make_plugin("hung", timed=hang), config={"kernel": {"quarantine_after": 2}}) as kernel:
        await kernel.hooks.call(Specs.timed, x=0)
        assert kernel.hooks.consecutive_failures("hung") == 1
        await kernel.hooks.call(Specs.timed, x=0)

        assert kernel.plugins["hung"].state is PluginState.QUARANTINED


@pytest.mark.parametrize("observed", [False, True], ids=["plain", "observed"])
async def test_sync_impl_that_always_overruns_is_quarantined(observed: bool) -> None:
    def slow(self: object, x: int) -> int:
        block(0.06)
        return x

    plugins = [make_plugin("slow", slow_ping=slow)] + ([watcher(Watch())] if observed else [])
    async with make_kernel(*plugins, config={"kernel": {"quarantine_after": 2}}) as kernel:
        kernel.hooks.call(Specs.slow_ping, x=0)
        kernel.hooks.call(Specs.slow_ping, x=0)

        assert kernel.hooks.consecutive_failures("slow") == 2
        assert kernel.plugins["slow"].state is PluginState.QUARANTINED


@pytest.mark.parametrize(
    ("anyio_backend", "observed"),
    [
        ("asyncio", False),
        ("asyncio", True),
        ("trio", False),
        ("trio", True),
    ],
    ids=["asyncio-plain", "asyncio-observed", "trio-plain", "trio-observed"],
)
async def test_async_impl_that_always_blocks_past_the_deadline_is_quarantined(
    anyio_backend: str, observed: bool
) -> None:
    async def busy(self: object, x: int) -> int:
        block(0.11)
        return x

    plugins = [make_plugin("busy", timed=busy)] + ([watcher(Watch())] if observed else [])
    async with make_kernel(*plugins, config={"kernel": {"quarantine_after": 2}}) as kernel:
        await kernel.hooks.call(Specs.timed, x=0)
        await kernel.hooks.call(Specs.timed, x=0)

        assert kernel.hooks.consecutive_failures("busy") == 2
        assert kernel.plugins["busy"].state is PluginState.QUARANTINED


async def test_quarantine_after_zero_never_quarantines() -> None:
    flaky = make_plugin("flaky", ping=impl_for(Specs.ping, raising(RuntimeError("x"))))

    async with make_kernel(flaky, config={"kernel": {"quarantine_after": 0}}) as kernel:
        for _ in range(10):
            kernel.hooks.call(Specs.ping, x=0)

        assert kernel.hooks.consecutive_failures("flaky") == 10
        assert kernel.plugins["flaky"].state is PluginState.RUNNING


async def test_quarantine_is_announced_through_plugin_state_changed() -> None:
    log = StateLog()
    flaky = make_plugin("flaky", requires=["state_log"], ping=impl_for(Specs.ping, raising(RuntimeError("x"))))

    async with make_kernel(log, flaky, config={"kernel": {"quarantine_after": 1}}) as kernel:
        kernel.hooks.call(Specs.ping, x=0)

        assert log.of("flaky")[-1] == (PluginState.RUNNING, PluginState.QUARANTINED)


async def test_quarantined_plugin_is_still_stopped_at_exit() -> None:
    stopped: list[str] = []

    class Flaky(Plugin):
        name = "flaky"

        async def stop(self) -> None:
            stopped.append(self.name)

        @hookimpl
        def ping(self, x: int) -> int:
            raise RuntimeError("x")

    kernel = make_kernel(Flaky(), config={"kernel": {"quarantine_after": 1}})
    async with kernel:
        kernel.hooks.call(Specs.ping, x=0)

    assert stopped == ["flaky"]
    assert kernel.plugins["flaky"].state is PluginState.STOPPED


# -- lifecycle hooks -----------------------------------------------------------------------


async def test_plugin_state_changed_reports_each_transition_of_another_plugin() -> None:
    log = StateLog()
    worker = make_plugin("worker", requires=["state_log"])

    async with make_kernel(log, worker):
        assert log.of("worker") == [
            (PluginState.CONFIGURED, PluginState.STARTING),
            (PluginState.STARTING, PluginState.RUNNING),
        ]

    assert log.of("worker")[2:] == [
        (PluginState.RUNNING, PluginState.STOPPING),
        (PluginState.STOPPING, PluginState.STOPPED),
    ]


async def test_plugin_state_changed_reports_a_failed_start() -> None:
    log = StateLog()

    def fail(ctx: PluginContext[Any]) -> None:
        raise RuntimeError("no")

    broken = make_plugin("broken", requires=["state_log"], start=fail)

    async with make_kernel(log, broken):
        assert log.of("broken") == [
            (PluginState.CONFIGURED, PluginState.STARTING),
            (PluginState.STARTING, PluginState.FAILED),
        ]


async def test_plugin_state_changed_impl_that_raises_does_not_disturb_the_lifecycle() -> None:
    def explode(self: object, plugin: str) -> None:
        raise RuntimeError("listener bug")

    listener = make_plugin("listener", provides=["listener"], plugin_state_changed=explode)
    worker = make_plugin("worker", requires=["listener"])

    async with make_kernel(listener, worker, config={"kernel": {"quarantine_after": 0}}) as kernel:
        assert kernel.plugins["worker"].state is PluginState.RUNNING
        assert kernel.hooks.consecutive_failures("listener") >= 1


async def test_kernel_started_is_called_once_after_every_plugin_started() -> None:
    seen: list[dict[str, bool]] = []
    started: dict[str, bool] = {}

    class Early(Plugin):
        name = "early"

        @hookimpl
        async def kernel_started(self) -> None:
            seen.append(dict(started))

    class Late(Plugin):
        name = "late"

        async def start(self, ctx: PluginContext[Any]) -> None:
            await anyio.sleep(0.01)
            started["late"] = True

    async with make_kernel(Early(), Late()):
        assert seen == [{"late": True}]

    assert len(seen) == 1


async def test_kernel_stopping_is_called_once_before_plugins_stop() -> None:
    events: list[str] = []

    class Recorder(Plugin):
        name = "recorder"

        async def stop(self) -> None:
            events.append("stop")

        @hookimpl
        async def kernel_stopping(self) -> None:
            events.append("kernel_stopping")

    async with make_kernel(Recorder()):
        assert events == []

    assert events == ["kernel_stopping", "stop"]


# -- observers --------------------------------------------------------------------------------


def test_relay_has_no_observer_until_one_is_added() -> None:
    kernel = make_kernel()
    kernel.prepare()

    assert kernel.hooks.observer is None


async def test_observer_sees_each_impl_call_with_its_outcome() -> None:
    watch = Watch()
    ok = make_plugin("a_ok", ping=lambda self, x: x)
    bad = make_plugin("b_bad", ping=impl_for(Specs.ping, raising(RuntimeError("x"))))

    async with make_kernel(watcher(watch), ok, bad) as kernel:
        kernel.hooks.call(Specs.ping, x=1)

    assert [event for event in watch.hooks if event[0] == "ping"] == [
        ("ping", "a_ok", "ok"),
        ("ping", "b_bad", "error"),
    ]
    assert all(isinstance(duration, float) and duration >= 0 for duration in watch.durations)


async def test_observer_sees_async_impl_calls_and_timeouts() -> None:
    watch = Watch()

    async def quick(self: object, x: int) -> int:
        await anyio.sleep(0)  # noqa: ASYNC115 - suspend once
        return x

    async def hang(self: object, x: int) -> int:
        await anyio.sleep(10)
        return x

    plugins = [watcher(watch), make_plugin("a_quick", timed=quick), make_plugin("b_hang", timed=hang)]
    async with make_kernel(*plugins) as kernel:
        assert await kernel.hooks.call(Specs.timed, x=1) == [1]

    assert [event for event in watch.hooks if event[0] == "timed"] == [
        ("timed", "a_quick", "ok"),
        ("timed", "b_hang", "timeout"),
    ]


async def test_observer_sees_a_sync_overrun_as_timeout() -> None:
    watch = Watch()

    def slow(self: object, x: int) -> int:
        block(0.06)
        return x

    async with make_kernel(watcher(watch), make_plugin("slow", slow_ping=slow)) as kernel:
        kernel.hooks.call(Specs.slow_ping, x=1)

    assert ("slow_ping", "slow", "timeout") in watch.hooks
    assert max(watch.durations) >= 0.05


async def test_observed_calls_return_the_same_results_as_plain_ones() -> None:
    def impls() -> list[Plugin]:
        return [
            make_plugin("a", ping=lambda self, x: x + 1, pick=lambda self, x: None),
            make_plugin("b", ping=lambda self, x: None, pick=lambda self, x: x * 2),
            make_plugin("c", ping=lambda self, x: x + 3, pick=lambda self, x: 99),
        ]

    async with make_kernel(*impls()) as plain, make_kernel(*impls(), watcher(Watch(), name="zz_watch")) as observed:
        assert observed.hooks.observer is not None
        assert plain.hooks.observer is None
        for kernel in (plain, observed):
            assert kernel.hooks.call(Specs.ping, x=1) == [2, 4]
            assert kernel.hooks.call(Specs.pick, x=5) == 10


async def test_every_observer_is_told() -> None:
    first, second = Watch(), Watch()
    plugins = [watcher(first, "w_one"), watcher(second, "w_two"), make_plugin("a", ping=lambda self, x: x)]

    async with make_kernel(*plugins) as kernel:
        kernel.hooks.call(Specs.ping, x=1)

    assert ("ping", "a", "ok") in first.hooks
    assert ("ping", "a", "ok") in second.hooks


async def test_observer_that_raises_is_removed_and_the_others_still_told() -> None:
    broken, fine = RaisingWatch(), Watch()
    plugins = [watcher(broken, "w_broken"), watcher(fine, "w_fine"), make_plugin("a", ping=lambda self, x: x)]

    async with make_kernel(*plugins) as kernel:
        assert kernel.hooks.call(Specs.ping, x=1) == [1]
        assert kernel.hooks.call(Specs.ping, x=2) == [2]

    assert broken.hooks == [("ping", "a", "ok")]
    assert fine.hooks.count(("ping", "a", "ok")) == 2


async def test_relay_observer_is_none_once_the_only_observer_raised() -> None:
    broken = RaisingWatch()

    async with make_kernel(watcher(broken), make_plugin("a", ping=lambda self, x: x)) as kernel:
        kernel.hooks.call(Specs.ping, x=1)

        assert kernel.hooks.observer is None


@pytest.mark.parametrize("spec", [Specs.ping, Specs.aping, Specs.timed], ids=["sync", "async", "async-timed"])
async def test_lone_observer_that_raises_is_removed_without_disturbing_the_call(spec: HookSpec[Any, Any]) -> None:
    broken = RaisingWatch()
    a = make_plugin("a", **{spec.name: impl_for(spec, returning(1))})

    async with make_kernel(watcher(broken), a) as kernel:
        assert await call_hook(kernel, spec, x=0) == [1]
        assert kernel.hooks.observer is None
        assert await call_hook(kernel, spec, x=0) == [1]

    assert len(broken.hooks) == 1


async def test_observer_that_raises_during_a_concurrent_hook_is_removed_when_others_observe() -> None:
    broken, fine = RaisingWatch(), Watch()

    async def healthy(self: object) -> HealthStatus:
        return HealthStatus(ok=True)

    plugins = [watcher(broken, "w_broken"), watcher(fine, "w_fine"), make_plugin("a", check_health=healthy)]
    async with make_kernel(*plugins) as kernel:
        assert await kernel.hooks.call(hookspecs.check_health) == [HealthStatus(ok=True)]
        assert await kernel.hooks.call(hookspecs.check_health) == [HealthStatus(ok=True)]

    assert len(broken.hooks) == 1
    assert fine.hooks.count(("check_health", "a", "ok")) == 2


async def test_lone_observer_that_raises_during_a_concurrent_hook_does_not_break_the_call() -> None:
    async def healthy(self: object) -> HealthStatus:
        return HealthStatus(ok=True)

    async with make_kernel(watcher(RaisingWatch()), make_plugin("a", check_health=healthy)) as kernel:
        assert await kernel.hooks.call(hookspecs.check_health) == [HealthStatus(ok=True)]
        assert kernel.hooks.observer is None


async def test_observer_that_raises_is_not_told_again_within_the_same_call() -> None:
    broken = RaisingWatch()
    plugins = [watcher(broken), make_plugin("a", ping=lambda self, x: x), make_plugin("b", ping=lambda self, x: x)]

    async with make_kernel(*plugins) as kernel:
        kernel.hooks.call(Specs.ping, x=1)

    assert broken.hooks == [("ping", "a", "ok")]


async def test_observers_of_a_plugin_are_detached_when_the_kernel_stops() -> None:
    watch = Watch()
    kernel = make_kernel(watcher(watch))
    async with kernel:
        assert kernel.hooks.observer is not None

    assert kernel.hooks.observer is None


async def test_observer_lacking_a_method_fails_the_plugin_that_adds_it() -> None:
    class HalfObserver:
        def on_hook(self, hook: str, plugin: str, duration: float, outcome: str) -> None: ...

    async with make_kernel(watcher(HalfObserver(), "half")) as kernel:
        info = kernel.plugins["half"]
        assert info.state is PluginState.FAILED
        assert "on_invoke" in (info.last_error or "")


# -- sampled timing (HookSampling) ------------------------------------------------------------


class SamplingWatch(Watch):
    """Asks for sampled timing of every sync hook and records what it is told."""

    def __init__(self, interval: float, result: object = None) -> None:
        super().__init__()
        self.interval = interval
        self.result = result
        self.counts: list[tuple[str, int, tuple[tuple[int, str], ...]]] = []
        self.asked: list[tuple[str, tuple[str, ...]]] = []

    def hook_sampling(self, hook: str, plugins: tuple[str, ...]) -> object:
        self.asked.append((hook, plugins))
        if self.result is not None:
            return self.result

        def count(ran: int, failures: Any) -> None:
            self.counts.append((hook, ran, tuple(failures)))

        return HookSampling(self.interval, count)


async def test_sampling_times_the_first_call_and_counts_the_others() -> None:
    watch = SamplingWatch(interval=60)
    plugins = [
        watcher(watch),
        make_plugin("a", ping=lambda self, x: x, pick=lambda self, x: x if x else None),
        make_plugin("b", ping=impl_for(Specs.ping, raising(RuntimeError("x"))), pick=lambda self, x: -1),
    ]
    async with make_kernel(*plugins) as kernel:
        for _ in range(3):
            assert kernel.hooks.call(Specs.ping, x=1) == [1]
        assert kernel.hooks.call(Specs.pick, x=0) == -1  # timed: the first call of pick
        assert kernel.hooks.call(Specs.pick, x=5) == 5  # a answers: b never runs
        assert kernel.hooks.call(Specs.pick, x=0) == -1

    assert ("ping", ("a", "b")) in watch.asked
    assert [e for e in watch.hooks if e[0] == "ping"] == [("ping", "a", "ok"), ("ping", "b", "error")]
    assert [c for c in watch.counts if c[0] == "ping"] == [("ping", 2, ((1, "error"),))] * 2
    assert [c for c in watch.counts if c[0] == "pick"] == [("pick", 1, ()), ("pick", 2, ())]


async def test_sampling_counts_what_ran_before_a_fail_fast_error() -> None:
    watch = SamplingWatch(interval=60)
    boom = impl_for(Specs.ping_fail_fast, raising(RuntimeError("x")))
    plugins = [watcher(watch), make_plugin("a", ping_fail_fast=boom), make_plugin("b", ping_fail_fast=lambda s, x: x)]
    async with make_kernel(*plugins) as kernel:
        for _ in range(2):
            with pytest.raises(HookFailed):
                kernel.hooks.call(Specs.ping_fail_fast, x=1)

    assert [c for c in watch.counts if c[0] == "ping_fail_fast"] == [("ping_fail_fast", 1, ((0, "error"),))]


async def test_sampling_counts_a_sync_overrun_as_a_timeout() -> None:
    watch = SamplingWatch(interval=60)

    def slow(self: object, x: int) -> int:
        block(0.06)
        return x

    async with make_kernel(watcher(watch), make_plugin("slow", slow_ping=slow)) as kernel:
        kernel.hooks.call(Specs.slow_ping, x=1)
        kernel.hooks.call(Specs.slow_ping, x=1)

    assert ("slow_ping", "slow", "timeout") in watch.hooks  # the timed call
    assert ("slow_ping", 1, ((0, "timeout"),)) in watch.counts  # the untimed one


async def test_sampling_interval_zero_times_every_call() -> None:
    watch = SamplingWatch(interval=0)
    async with make_kernel(watcher(watch), make_plugin("a", ping=lambda self, x: x)) as kernel:
        for _ in range(3):
            kernel.hooks.call(Specs.ping, x=1)

    assert [e for e in watch.hooks if e[0] == "ping"] == [("ping", "a", "ok")] * 3
    assert watch.counts == []


async def test_sampling_that_is_not_a_hook_sampling_is_ignored_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    watch = SamplingWatch(interval=60, result="every call please")
    async with make_kernel(watcher(watch), make_plugin("a", ping=lambda self, x: x)) as kernel:
        for _ in range(2):
            kernel.hooks.call(Specs.ping, x=1)

    assert [e for e in watch.hooks if e[0] == "ping"] == [("ping", "a", "ok")] * 2  # timed, every call
    assert "not a HookSampling" in caplog.text


async def test_sampling_counter_that_raises_detaches_the_observer() -> None:
    def explode(ran: int, failures: Any) -> None:
        raise RuntimeError("counter bug")

    watch = SamplingWatch(interval=60, result=HookSampling(60, explode))
    async with make_kernel(watcher(watch), make_plugin("a", ping=lambda self, x: x)) as kernel:
        assert kernel.hooks.call(Specs.ping, x=1) == [1]  # timed
        assert kernel.hooks.call(Specs.ping, x=1) == [1]  # untimed: the counter raises, the call still answers
        assert kernel.hooks.observer is None
        assert kernel.hooks.call(Specs.ping, x=1) == [1]
