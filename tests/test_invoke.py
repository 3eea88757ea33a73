"""The invoke pipeline: operations by name, middleware in phases, errors, observers, sync apps.

Plugins register operations and middleware in ``start`` through their
context; the tests call ``kernel.invoke`` (or ``BlockingKernel.invoke`` from
plain sync code) and check what reaches handlers and what comes back.
"""

import functools
import time
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import anyio
import attrs
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from kernel import Kernel
from plugin_sdk import CallNext
from plugin_sdk import ConfigIssue
from plugin_sdk import InvalidArguments
from plugin_sdk import Invocation
from plugin_sdk import InvokeError
from plugin_sdk import NotAuthenticated
from plugin_sdk import OperationFailed
from plugin_sdk import OperationNotFound
from plugin_sdk import OrionError
from plugin_sdk import PermissionDenied
from plugin_sdk import Phase
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginState
from plugin_sdk import Principal

pytestmark = pytest.mark.anyio

# -- argument types --------------------------------------------------------------------------


@attrs.frozen
class Filters:
    lang: str


@attrs.frozen
class SearchArgs:
    q: str
    limit: int = 10
    tags: list[str] = attrs.field(factory=list)
    filters: Filters | None = None


# -- helpers ---------------------------------------------------------------------------------

Setup = Callable[[PluginContext[Any]], None]


def make_plugin(
    name: str,
    setup: Setup | None = None,
    /,
    *,
    priority: int = 0,
    before: Iterable[str] = (),
    after: Iterable[str] = (),
    provides: Iterable[str] = (),
    requires: Iterable[str] = (),
) -> Plugin:
    """A plugin named ``name`` whose ``start`` provides its services and then runs ``setup(ctx)``."""

    async def start(self: Plugin, ctx: PluginContext[Any]) -> None:
        for service in self.provides:
            ctx.provide(service, self)
        if setup is not None:
            setup(ctx)

    namespace = {
        "name": name,
        "priority": priority,
        "before": tuple(before),
        "after": tuple(after),
        "provides": tuple(provides),
        "requires": tuple(requires),
        "start": start,
    }
    return type(f"Plugin_{name}", (Plugin,), namespace)()


def make_kernel(*plugins: object, config: Mapping[str, Any] | None = None) -> Kernel:
    return Kernel(dict(config or {}), plugins=plugins, environ={})


def operation(name: str, handler: Callable[[Invocation], Any], **options: Any) -> Setup:
    """A setup that registers one operation."""
    return lambda ctx: ctx.register_operation(name, handler, **options)


def middleware(mw: Callable[[Invocation, CallNext], Awaitable[Any]], phase: Phase = Phase.TRANSFORM) -> Setup:
    """A setup that registers one middleware."""
    return lambda ctx: ctx.register_middleware(mw, phase=phase)


def both(*setups: Setup) -> Setup:
    def setup(ctx: PluginContext[Any]) -> None:
        for step in setups:
            step(ctx)

    return setup


def tracing(label: str, trail: list[str]) -> Callable[[Invocation, CallNext], Awaitable[Any]]:
    """A middleware that notes ``label`` on the way in and passes the call on."""

    async def mw(inv: Invocation, call_next: CallNext) -> Any:
        trail.append(label)
        return await call_next(inv)

    return mw


async def echo(inv: Invocation) -> dict[str, Any]:
    return dict(inv.args)


def trailing_handler(trail: list[str]) -> Callable[[Invocation], Awaitable[str]]:
    async def handler(inv: Invocation) -> str:
        trail.append("handler")
        return "done"

    return handler


class Watch:
    """A dispatch observer that records every invoke."""

    def __init__(self) -> None:
        self.invokes: list[tuple[str, str]] = []
        self.durations: list[float] = []

    def on_hook(self, hook: str, plugin: str, duration: float, outcome: str) -> None:
        pass

    def on_invoke(self, operation: str, duration: float, outcome: str) -> None:
        self.invokes.append((operation, outcome))
        self.durations.append(duration)


class RaisingWatch(Watch):
    def on_invoke(self, operation: str, duration: float, outcome: str) -> None:
        super().on_invoke(operation, duration, outcome)
        raise RuntimeError("observer bug")


def watcher(observer: object, name: str = "watcher") -> Plugin:
    return make_plugin(name, lambda ctx: ctx.add_dispatch_observer(observer))  # type: ignore[arg-type]


# -- registering and invoking -----------------------------------------------------------------


async def test_invoke_runs_the_handler_with_the_arguments() -> None:
    async with make_kernel(make_plugin("tools", operation("tools.echo", echo))) as kernel:
        assert await kernel.invoke("tools.echo", {"who": "Ada"}) == {"who": "Ada"}


async def test_sync_handler_works_too() -> None:
    def shout(inv: Invocation) -> str:
        return str(inv.args["text"]).upper()

    async with make_kernel(make_plugin("tools", operation("tools.shout", shout))) as kernel:
        assert await kernel.invoke("tools.shout", {"text": "hi"}) == "HI"


async def test_handler_may_be_a_bound_async_method() -> None:
    class Greeter(Plugin):
        name = "greeter"
        greeting = "hello"

        async def start(self, ctx: PluginContext[Any]) -> None:
            ctx.register_operation("greet", self.greet)

        async def greet(self, inv: Invocation) -> str:
            return f"{self.greeting}, {inv.args['who']}"

    async with make_kernel(Greeter()) as kernel:
        assert await kernel.invoke("greet", {"who": "Ada"}) == "hello, Ada"


async def test_handler_may_be_an_object_with_an_async_call() -> None:
    class Handler:
        async def __call__(self, inv: Invocation) -> str:
            return "awaited"

    async with make_kernel(make_plugin("tools", operation("tools.obj", Handler()))) as kernel:
        assert await kernel.invoke("tools.obj") == "awaited"


async def test_handler_may_be_a_partial_of_an_async_function() -> None:
    async def scaled(factor: int, inv: Invocation) -> int:
        return factor * int(inv.args["n"])

    setup = operation("tools.triple", functools.partial(scaled, 3))
    async with make_kernel(make_plugin("tools", setup)) as kernel:
        assert await kernel.invoke("tools.triple", {"n": 4}) == 12


async def test_args_default_to_an_empty_mapping() -> None:
    async with make_kernel(make_plugin("tools", operation("tools.echo", echo))) as kernel:
        assert await kernel.invoke("tools.echo") == {}


async def test_any_mapping_is_accepted_as_args() -> None:
    async with make_kernel(make_plugin("tools", operation("tools.echo", echo))) as kernel:
        assert await kernel.invoke("tools.echo", MappingProxyType({"a": 1})) == {"a": 1}


async def test_handler_receives_the_principal_and_the_operation_name() -> None:
    seen: list[Invocation] = []

    async def handler(inv: Invocation) -> None:
        seen.append(inv)

    caller = Principal("u-1", kind="service", roles=["reader"], claims={"scope": "tools"})
    async with make_kernel(make_plugin("tools", operation("tools.look", handler))) as kernel:
        await kernel.invoke("tools.look", principal=caller)

    (inv,) = seen
    assert inv.principal is caller
    assert inv.operation == "tools.look"
    assert inv.metadata == {}
    assert inv.params is None


async def test_principal_defaults_to_none() -> None:
    seen: list[Principal | None] = []

    async def handler(inv: Invocation) -> None:
        seen.append(inv.principal)

    async with make_kernel(make_plugin("tools", operation("tools.look", handler))) as kernel:
        await kernel.invoke("tools.look")

    assert seen == [None]


def test_principal_turns_roles_into_a_tuple() -> None:
    assert Principal("u-1", roles=["a", "b"]).roles == ("a", "b")
    assert Principal("u-1").kind == "user"


async def test_handler_reads_structured_params_from_args_type() -> None:
    seen: list[Any] = []

    async def search(inv: Invocation) -> None:
        seen.append(inv.params)

    setup = operation("tools.search", search, args_type=SearchArgs)
    async with make_kernel(make_plugin("tools", setup)) as kernel:
        await kernel.invoke("tools.search", {"q": "otters", "tags": ["a"], "filters": {"lang": "en"}})

    assert seen == [SearchArgs(q="otters", limit=10, tags=["a"], filters=Filters(lang="en"))]


async def test_structured_params_leave_the_raw_args_in_place() -> None:
    seen: list[Mapping[str, Any]] = []

    async def search(inv: Invocation) -> None:
        seen.append(inv.args)

    setup = operation("tools.search", search, args_type=SearchArgs)
    async with make_kernel(make_plugin("tools", setup)) as kernel:
        await kernel.invoke("tools.search", {"q": "otters"})

    assert seen == [{"q": "otters"}]


async def test_each_invocation_gets_its_own_metadata() -> None:
    seen: list[dict[str, Any]] = []

    async def handler(inv: Invocation) -> None:
        inv.metadata["touched"] = True
        seen.append(inv.metadata)

    async with make_kernel(make_plugin("tools", operation("tools.touch", handler))) as kernel:
        await kernel.invoke("tools.touch")
        await kernel.invoke("tools.touch")

    assert seen[0] is not seen[1]


async def test_operations_lists_what_was_registered() -> None:
    async def search(inv: Invocation) -> None:
        """Search the web.

        More words that are not the summary.
        """

    def count(inv: Invocation) -> int:
        return 0

    setup = both(
        operation("tools.search", search, args_type=SearchArgs, example_args={"q": "otters"}),
        operation("tools.count", count, doc="Count things."),
        operation("tools.echo", echo),
    )
    async with make_kernel(make_plugin("tools", setup)) as kernel:
        ops = kernel.operations

    assert sorted(ops) == ["tools.count", "tools.echo", "tools.search"]
    assert ops["tools.search"].plugin == "tools"
    assert ops["tools.search"].doc == "Search the web."
    assert ops["tools.search"].args_type is SearchArgs
    assert ops["tools.search"].example_args == {"q": "otters"}
    assert ops["tools.search"].is_async is True
    assert ops["tools.count"].doc == "Count things."
    assert ops["tools.count"].is_async is False
    assert ops["tools.echo"].doc == ""


@pytest.mark.parametrize("name", ["search", "tools.search", "tools.web_search", "a1.b2.c3", "x" * 64])
async def test_valid_operation_names_are_accepted(name: str) -> None:
    async with make_kernel(make_plugin("tools", operation(name, echo))) as kernel:
        assert kernel.plugins["tools"].state is PluginState.RUNNING
        assert await kernel.invoke(name, {"ok": True}) == {"ok": True}


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Tools.search",
        "tools.Search",
        "tools-search",
        "tools..search",
        ".search",
        "search.",
        "1tools",
        "tools. search",
        "tools/search",
        "tools.__search",
        "x" * 65,
    ],
)
async def test_invalid_operation_name_fails_the_plugin_to_start(name: str) -> None:
    async with make_kernel(make_plugin("tools", operation(name, echo))) as kernel:
        info = kernel.plugins["tools"]
        assert info.state is PluginState.FAILED
        assert "invalid operation name" in (info.last_error or "")
        assert kernel.operations == {}


async def test_second_plugin_registering_a_taken_name_fails_to_start() -> None:
    async def second(inv: Invocation) -> str:
        return "second"

    async def first(inv: Invocation) -> str:
        return "first"

    owner = make_plugin("owner", operation("tools.search", first), provides=["owner_svc"])
    late = make_plugin("late", operation("tools.search", second), requires=["owner_svc"])
    async with make_kernel(owner, late) as kernel:
        info = kernel.plugins["late"]
        assert info.state is PluginState.FAILED
        assert "'tools.search'" in (info.last_error or "")
        assert "owner" in (info.last_error or "")
        assert kernel.plugins["owner"].state is PluginState.RUNNING
        assert await kernel.invoke("tools.search") == "first"


async def test_plugins_registering_one_name_at_the_same_time_leave_exactly_one_owner() -> None:
    def claim(name: str) -> Plugin:
        async def handler(inv: Invocation) -> str:
            return name

        class Claimer(Plugin):
            async def start(self, ctx: PluginContext[Any]) -> None:
                await anyio.sleep(0.01)  # both register before either is live
                ctx.register_operation("tools.search", handler)

        Claimer.name = name
        return Claimer()

    async with make_kernel(claim("one"), claim("two")) as kernel:
        states = {name: kernel.plugins[name].state for name in ("one", "two")}
        winner = await kernel.invoke("tools.search")

    assert sorted(states.values(), key=lambda state: state.value) == [PluginState.FAILED, PluginState.RUNNING]
    assert states[winner] is PluginState.RUNNING


async def test_registering_the_same_name_twice_fails_the_plugin() -> None:
    setup = both(operation("tools.echo", echo), operation("tools.echo", echo))

    async with make_kernel(make_plugin("tools", setup)) as kernel:
        info = kernel.plugins["tools"]
        assert info.state is PluginState.FAILED
        assert "twice" in (info.last_error or "")


async def test_args_type_that_is_not_an_attrs_class_fails_the_plugin() -> None:
    class Plain:
        q: str

    async with make_kernel(make_plugin("tools", operation("tools.search", echo, args_type=Plain))) as kernel:
        info = kernel.plugins["tools"]
        assert info.state is PluginState.FAILED
        assert "attrs" in (info.last_error or "")


async def test_handler_that_is_not_callable_fails_the_plugin() -> None:
    setup = operation("tools.search", "not a function")  # type: ignore[arg-type]

    async with make_kernel(make_plugin("tools", setup)) as kernel:
        info = kernel.plugins["tools"]
        assert info.state is PluginState.FAILED
        assert "not callable" in (info.last_error or "")


async def test_operations_of_a_plugin_that_fails_to_start_are_not_registered() -> None:
    def setup(ctx: PluginContext[Any]) -> None:
        ctx.register_operation("tools.echo", echo)
        raise RuntimeError("start failed after registering")

    async with make_kernel(make_plugin("tools", setup)) as kernel:
        with pytest.raises(OperationNotFound):
            await kernel.invoke("tools.echo")


async def test_operations_are_withdrawn_when_the_kernel_stops() -> None:
    kernel = make_kernel(make_plugin("tools", operation("tools.echo", echo)))
    async with kernel:
        pass

    assert kernel.operations == {}
    with pytest.raises(OperationNotFound):
        await kernel.invoke("tools.echo")


async def test_operations_of_disabled_plugins_are_not_registered() -> None:
    plugins = [make_plugin("tools", operation("tools.echo", echo))]

    async with make_kernel(*plugins, config={"plugins": {"tools": {"enabled": False}}}) as kernel:
        assert kernel.operations == {}


# -- call errors ------------------------------------------------------------------------------


async def test_unknown_operation_raises_operation_not_found_with_did_you_mean() -> None:
    setup = both(operation("tools.search", echo), operation("tools.fetch", echo))

    async with make_kernel(make_plugin("tools", setup)) as kernel:
        with pytest.raises(OperationNotFound) as caught:
            await kernel.invoke("tools.serch")

    assert caught.value.operation == "tools.serch"
    assert "did you mean 'tools.search'" in str(caught.value)
    assert isinstance(caught.value, InvokeError)


async def test_unknown_operation_without_a_close_match_lists_the_known_ones() -> None:
    setup = both(operation("tools.search", echo), operation("tools.fetch", echo))

    async with make_kernel(make_plugin("tools", setup)) as kernel:
        with pytest.raises(OperationNotFound) as caught:
            await kernel.invoke("zzz")

    assert "known operations: tools.fetch, tools.search" in str(caught.value)


async def test_invoke_before_any_plugin_registered_says_none_are_known() -> None:
    async with make_kernel() as kernel:
        with pytest.raises(OperationNotFound, match="known operations: none"):
            await kernel.invoke("tools.search")


@pytest.mark.parametrize("args", [["q", "otters"], "q=otters", 42, ("q",)], ids=["list", "str", "int", "tuple"])
async def test_args_that_are_not_a_mapping_raise_invalid_arguments(args: Any) -> None:
    called: list[bool] = []

    async def handler(inv: Invocation) -> None:
        called.append(True)

    async with make_kernel(make_plugin("tools", operation("tools.search", handler))) as kernel:
        with pytest.raises(InvalidArguments) as caught:
            await kernel.invoke("tools.search", args)

    assert caught.value.operation == "tools.search"
    assert caught.value.issues[0].path == "args"
    assert type(args).__name__ in caught.value.issues[0].message
    assert called == []


@pytest.mark.parametrize(
    ("args", "path", "message"),
    [
        ({"q": 1}, "args.q", "expected str, got 1"),
        ({"q": "x", "limit": "ten"}, "args.limit", "expected int, got 'ten'"),
        ({"q": "x", "limit": True}, "args.limit", "expected int"),
        ({}, "args.q", "required"),
        ({"q": "x", "extra": 1}, "args.extra", "unknown key"),
        ({"q": "x", "tags": ["a", 2]}, "args.tags[1]", "expected str, got 2"),
        ({"q": "x", "filters": {"lang": 3}}, "args.filters.lang", "expected str, got 3"),
        ({"q": "x", "filters": {}}, "args.filters.lang", "required"),
    ],
    ids=[
        "wrong_type",
        "string_for_int",
        "bool_for_int",
        "missing",
        "unknown_key",
        "list_item",
        "nested",
        "nested_missing",
    ],
)
async def test_args_not_fitting_args_type_raise_invalid_arguments_with_paths(
    args: dict[str, Any], path: str, message: str
) -> None:
    setup = operation("tools.search", echo, args_type=SearchArgs)

    async with make_kernel(make_plugin("tools", setup)) as kernel:
        with pytest.raises(InvalidArguments) as caught:
            await kernel.invoke("tools.search", args)

    (issue,) = caught.value.issues
    assert issue.path == path
    assert message in issue.message


async def test_invalid_arguments_lists_every_issue() -> None:
    setup = operation("tools.search", echo, args_type=SearchArgs)

    async with make_kernel(make_plugin("tools", setup)) as kernel:
        with pytest.raises(InvalidArguments) as caught:
            await kernel.invoke("tools.search", {"q": 1, "limit": "x", "nope": 0})

    assert sorted(issue.path for issue in caught.value.issues) == ["args.limit", "args.nope", "args.q"]
    assert all(isinstance(issue, ConfigIssue) for issue in caught.value.issues)
    assert "args.limit" in str(caught.value)


async def test_handler_is_not_called_when_arguments_do_not_fit() -> None:
    called: list[bool] = []

    async def search(inv: Invocation) -> None:
        called.append(True)

    async with make_kernel(make_plugin("tools", operation("tools.search", search, args_type=SearchArgs))) as kernel:
        with pytest.raises(InvalidArguments):
            await kernel.invoke("tools.search", {"limit": 1})

    assert called == []


@pytest.mark.parametrize("is_async", [True, False], ids=["async", "sync"])
async def test_handler_error_becomes_operation_failed_naming_its_plugin(is_async: bool) -> None:
    cause = ValueError("bad value")

    async def async_handler(inv: Invocation) -> None:
        raise cause

    def sync_handler(inv: Invocation) -> None:
        raise cause

    handler = async_handler if is_async else sync_handler
    async with make_kernel(make_plugin("tools", operation("tools.search", handler))) as kernel:
        with pytest.raises(OperationFailed) as caught:
            await kernel.invoke("tools.search")

    assert caught.value.plugin == "tools"
    assert caught.value.operation == "tools.search"
    assert caught.value.__cause__ is cause
    assert str(caught.value) == "operation 'tools.search' failed in plugin 'tools': ValueError: bad value"


@pytest.mark.parametrize(
    "error",
    [
        PermissionDenied("no"),
        NotAuthenticated("who?"),
        InvalidArguments("tools.search", [ConfigIssue("args.q", "bad")]),
    ],
    ids=["permission_denied", "not_authenticated", "invalid_arguments"],
)
async def test_handler_sdk_error_passes_through_unchanged(error: OrionError) -> None:
    async def handler(inv: Invocation) -> None:
        raise error

    async with make_kernel(make_plugin("tools", operation("tools.search", handler))) as kernel:
        with pytest.raises(OrionError) as caught:
            await kernel.invoke("tools.search")

    assert caught.value is error


async def test_sync_handler_sdk_error_passes_through_unchanged() -> None:
    denial = PermissionDenied("no")

    def handler(inv: Invocation) -> None:
        raise denial

    async with make_kernel(make_plugin("tools", operation("tools.search", handler))) as kernel:
        with pytest.raises(PermissionDenied) as caught:
            await kernel.invoke("tools.search")

    assert caught.value is denial


# -- middleware errors ---------------------------------------------------------------------------


async def test_middleware_error_becomes_operation_failed_naming_the_middleware_plugin() -> None:
    cause = RuntimeError("middleware bug")

    async def broken(inv: Invocation, call_next: CallNext) -> Any:
        raise cause

    plugins = [make_plugin("tools", operation("tools.echo", echo)), make_plugin("guard", middleware(broken))]
    async with make_kernel(*plugins) as kernel:
        with pytest.raises(OperationFailed) as caught:
            await kernel.invoke("tools.echo")

    assert caught.value.plugin == "guard"
    assert caught.value.operation == "tools.echo"
    assert caught.value.__cause__ is cause


async def test_middleware_error_after_call_next_names_the_middleware_plugin() -> None:
    async def broken_after(inv: Invocation, call_next: CallNext) -> Any:
        result = await call_next(inv)
        raise KeyError(result)

    plugins = [make_plugin("tools", operation("tools.echo", echo)), make_plugin("post", middleware(broken_after))]
    async with make_kernel(*plugins) as kernel:
        with pytest.raises(OperationFailed) as caught:
            await kernel.invoke("tools.echo")

    assert caught.value.plugin == "post"


async def test_inner_middleware_error_names_the_inner_plugin_not_the_outer_one() -> None:
    trail: list[str] = []

    async def broken(inv: Invocation, call_next: CallNext) -> Any:
        raise RuntimeError("inner bug")

    plugins = [
        make_plugin("tools", operation("tools.echo", echo)),
        make_plugin("outer", middleware(tracing("outer", trail), Phase.AUTHENTICATE)),
        make_plugin("inner", middleware(broken, Phase.CACHE)),
    ]
    async with make_kernel(*plugins) as kernel:
        with pytest.raises(OperationFailed) as caught:
            await kernel.invoke("tools.echo")

    assert trail == ["outer"]
    assert caught.value.plugin == "inner"


async def test_middleware_error_from_a_bound_method_names_its_plugin() -> None:
    class Guard(Plugin):
        name = "guard"

        async def start(self, ctx: PluginContext[Any]) -> None:
            ctx.register_middleware(self.check, phase=Phase.AUTHORIZE)

        async def check(self, inv: Invocation, call_next: CallNext) -> Any:
            raise RuntimeError("bug in guard")

    async with make_kernel(make_plugin("tools", operation("tools.echo", echo)), Guard()) as kernel:
        with pytest.raises(OperationFailed) as caught:
            await kernel.invoke("tools.echo")

    assert caught.value.plugin == "guard"


async def test_middleware_error_from_a_callable_object_names_its_plugin() -> None:
    class Broken:
        async def __call__(self, inv: Invocation, call_next: CallNext) -> Any:
            raise RuntimeError("bug")

    plugins = [make_plugin("tools", operation("tools.echo", echo)), make_plugin("guard", middleware(Broken()))]
    async with make_kernel(*plugins) as kernel:
        with pytest.raises(OperationFailed) as caught:
            await kernel.invoke("tools.echo")

    assert caught.value.plugin == "guard"


async def test_middleware_error_from_an_inherited_method_names_the_right_plugin() -> None:
    class BaseGuard(Plugin):
        deny = False

        async def start(self, ctx: PluginContext[Any]) -> None:
            ctx.register_middleware(self.check, phase=Phase.AUTHORIZE)

        async def check(self, inv: Invocation, call_next: CallNext) -> Any:
            if self.deny:
                raise RuntimeError(f"bug in {self.name}")
            return await call_next(inv)

    class GuardA(BaseGuard):
        name = "guard_a"
        deny = True

    class GuardB(BaseGuard):
        name = "guard_b"

    async with make_kernel(make_plugin("tools", operation("tools.echo", echo)), GuardA(), GuardB()) as kernel:
        with pytest.raises(OperationFailed) as caught:
            await kernel.invoke("tools.echo")

    assert caught.value.plugin == "guard_a"


@pytest.mark.parametrize(
    "error", [PermissionDenied("denied"), NotAuthenticated("no token")], ids=["permission_denied", "not_authenticated"]
)
async def test_middleware_sdk_error_passes_through_unchanged(error: OrionError) -> None:
    async def deny(inv: Invocation, call_next: CallNext) -> Any:
        raise error

    plugins = [make_plugin("tools", operation("tools.echo", echo)), make_plugin("guard", middleware(deny))]
    async with make_kernel(*plugins) as kernel:
        with pytest.raises(OrionError) as caught:
            await kernel.invoke("tools.echo")

    assert caught.value is error


async def test_middleware_sees_a_handler_failure_as_operation_failed() -> None:
    seen: list[BaseException] = []

    async def handler(inv: Invocation) -> None:
        raise ValueError("bad")

    async def watch(inv: Invocation, call_next: CallNext) -> Any:
        try:
            return await call_next(inv)
        except OperationFailed as exc:
            seen.append(exc)
            raise

    plugins = [make_plugin("tools", operation("tools.bad", handler)), make_plugin("audit", middleware(watch))]
    async with make_kernel(*plugins) as kernel:
        with pytest.raises(OperationFailed) as caught:
            await kernel.invoke("tools.bad")

    assert seen == [caught.value]
    assert caught.value.plugin == "tools"


async def test_middleware_runs_before_the_unknown_operation_check_is_repeated_at_the_handler() -> None:
    trail: list[str] = []
    plugins = [make_plugin("tools", operation("tools.echo", echo)), make_plugin("mw", middleware(tracing("mw", trail)))]

    async with make_kernel(*plugins) as kernel:
        with pytest.raises(OperationNotFound):
            await kernel.invoke("tools.nope")

    assert trail == []


# -- middleware order and behaviour --------------------------------------------------------------


def test_phases_run_from_the_highest_value_down() -> None:
    assert sorted(Phase, reverse=True) == [
        Phase.OBSERVE,
        Phase.AUTHENTICATE,
        Phase.AUTHORIZE,
        Phase.LIMIT,
        Phase.CACHE,
        Phase.BALANCE,
        Phase.TRANSFORM,
    ]


async def test_middleware_runs_in_phase_order_then_the_handler() -> None:
    trail: list[str] = []
    shuffled = [Phase.CACHE, Phase.TRANSFORM, Phase.AUTHENTICATE, Phase.OBSERVE, Phase.BALANCE, Phase.LIMIT]
    shuffled.append(Phase.AUTHORIZE)
    setup = both(
        operation("tools.run", trailing_handler(trail)),
        *(middleware(tracing(phase.name, trail), phase) for phase in shuffled),
    )

    async with make_kernel(make_plugin("app", setup)) as kernel:
        assert await kernel.invoke("tools.run") == "done"
        order = kernel.middleware_order()

    expected = ["OBSERVE", "AUTHENTICATE", "AUTHORIZE", "LIMIT", "CACHE", "BALANCE", "TRANSFORM"]
    assert trail == [*expected, "handler"]
    assert order == [("app", Phase[name]) for name in expected]


async def test_default_phase_is_transform() -> None:
    async def mw(inv: Invocation, call_next: CallNext) -> Any:
        return await call_next(inv)

    async with make_kernel(make_plugin("app", lambda ctx: ctx.register_middleware(mw))) as kernel:
        assert kernel.middleware_order() == [("app", Phase.TRANSFORM)]


async def test_middleware_of_one_phase_follows_plugin_priority() -> None:
    trail: list[str] = []
    plugins = [
        make_plugin("tools", operation("tools.run", trailing_handler(trail))),
        make_plugin("a_low", middleware(tracing("a_low", trail), Phase.LIMIT), priority=-1),
        make_plugin("b_mid", middleware(tracing("b_mid", trail), Phase.LIMIT)),
        make_plugin("c_high", middleware(tracing("c_high", trail), Phase.LIMIT), priority=5),
    ]

    async with make_kernel(*plugins) as kernel:
        await kernel.invoke("tools.run")

    assert trail == ["c_high", "b_mid", "a_low", "handler"]


async def test_middleware_of_one_phase_and_priority_follows_plugin_name() -> None:
    trail: list[str] = []
    plugins = [make_plugin("tools", operation("tools.run", trailing_handler(trail)))]
    plugins += [make_plugin(name, middleware(tracing(name, trail))) for name in ("zed", "amy", "max")]

    async with make_kernel(*plugins) as kernel:
        await kernel.invoke("tools.run")

    assert trail == ["amy", "max", "zed", "handler"]


async def test_phase_wins_over_plugin_priority() -> None:
    trail: list[str] = []
    plugins = [
        make_plugin("tools", operation("tools.run", trailing_handler(trail))),
        make_plugin("urgent", middleware(tracing("urgent", trail), Phase.TRANSFORM), priority=100),
        make_plugin("auth", middleware(tracing("auth", trail), Phase.AUTHENTICATE)),
    ]

    async with make_kernel(*plugins) as kernel:
        await kernel.invoke("tools.run")

    assert trail == ["auth", "urgent", "handler"]


async def test_config_priority_reorders_middleware_within_a_phase() -> None:
    trail: list[str] = []
    plugins = [
        make_plugin("tools", operation("tools.run", trailing_handler(trail))),
        make_plugin("a", middleware(tracing("a", trail)), priority=10),
        make_plugin("b", middleware(tracing("b", trail))),
    ]

    async with make_kernel(*plugins, config={"plugins": {"b": {"priority": 50}}}) as kernel:
        await kernel.invoke("tools.run")
        assert kernel.middleware_order() == [("b", Phase.TRANSFORM), ("a", Phase.TRANSFORM)]

    assert trail == ["b", "a", "handler"]


async def test_manifest_before_orders_middleware_within_a_phase() -> None:
    trail: list[str] = []
    plugins = [
        make_plugin("tools", operation("tools.run", trailing_handler(trail))),
        make_plugin("a", middleware(tracing("a", trail))),
        make_plugin("z", middleware(tracing("z", trail)), before=["a"]),
    ]

    async with make_kernel(*plugins) as kernel:
        await kernel.invoke("tools.run")

    assert trail == ["z", "a", "handler"]


async def test_config_after_orders_middleware_within_a_phase() -> None:
    trail: list[str] = []
    plugins = [
        make_plugin("tools", operation("tools.run", trailing_handler(trail))),
        make_plugin("a", middleware(tracing("a", trail))),
        make_plugin("b", middleware(tracing("b", trail))),
    ]

    async with make_kernel(*plugins, config={"plugins": {"a": {"after": ["b"]}}}) as kernel:
        await kernel.invoke("tools.run")

    assert trail == ["b", "a", "handler"]


async def test_middleware_of_one_plugin_and_phase_keeps_registration_order() -> None:
    trail: list[str] = []
    setup = both(
        operation("tools.run", trailing_handler(trail)),
        middleware(tracing("second_name_first", trail)),
        middleware(tracing("first_name_second", trail)),
    )

    async with make_kernel(make_plugin("app", setup)) as kernel:
        await kernel.invoke("tools.run")

    assert trail == ["second_name_first", "first_name_second", "handler"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.dictionaries(
        st.sampled_from(["ann", "bob", "cy", "dee"]),
        st.tuples(st.sampled_from(list(Phase)), st.integers(-2, 2)),
        min_size=1,
    )
)
def test_middleware_order_is_phase_then_priority_then_name(plan: dict[str, tuple[Phase, int]]) -> None:
    plugins = [
        make_plugin(name, middleware(echo_through, phase), priority=prio) for name, (phase, prio) in plan.items()
    ]

    async def order() -> list[tuple[str, int]]:
        async with make_kernel(*plugins) as kernel:
            return kernel.middleware_order()

    expected = sorted(plan, key=lambda name: (-plan[name][0], -plan[name][1], name))
    assert anyio.run(order) == [(name, plan[name][0]) for name in expected]


async def echo_through(inv: Invocation, call_next: CallNext) -> Any:
    return await call_next(inv)


async def test_middleware_can_short_circuit_the_call() -> None:
    trail: list[str] = []

    async def cache_hit(inv: Invocation, call_next: CallNext) -> Any:
        trail.append("cache")
        return "cached"

    plugins = [
        make_plugin("tools", operation("tools.run", trailing_handler(trail))),
        make_plugin("cache", middleware(cache_hit, Phase.CACHE)),
        make_plugin("later", middleware(tracing("later", trail), Phase.BALANCE)),
    ]
    async with make_kernel(*plugins) as kernel:
        assert await kernel.invoke("tools.run") == "cached"

    assert trail == ["cache"]


async def test_short_circuit_still_skips_argument_checks() -> None:
    async def deny(inv: Invocation, call_next: CallNext) -> Any:
        raise PermissionDenied("nope")

    setup = operation("tools.search", echo, args_type=SearchArgs)
    plugins = [make_plugin("tools", setup), make_plugin("authz", middleware(deny, Phase.AUTHORIZE))]
    async with make_kernel(*plugins) as kernel:
        with pytest.raises(PermissionDenied):
            await kernel.invoke("tools.search", {"q": 1})


async def test_authenticate_middleware_sets_the_principal_the_handler_sees() -> None:
    seen: list[Principal | None] = []

    async def handler(inv: Invocation) -> None:
        seen.append(inv.principal)

    async def authenticate(inv: Invocation, call_next: CallNext) -> Any:
        if inv.metadata.get("token") is None and inv.args.get("token") != "secret":
            raise NotAuthenticated("bad token")
        inv.principal = Principal("ada", roles=("admin",))
        return await call_next(inv)

    plugins = [
        make_plugin("tools", operation("tools.look", handler)),
        make_plugin("auth", middleware(authenticate, Phase.AUTHENTICATE)),
    ]
    async with make_kernel(*plugins) as kernel:
        await kernel.invoke("tools.look", {"token": "secret"})
        with pytest.raises(NotAuthenticated):
            await kernel.invoke("tools.look", {"token": "guess"})

    assert seen == [Principal("ada", roles=("admin",))]


async def test_metadata_set_by_one_middleware_reaches_the_next_and_the_handler() -> None:
    seen: list[dict[str, Any]] = []

    async def choose(inv: Invocation, call_next: CallNext) -> Any:
        inv.metadata["backend"] = "b-2"
        return await call_next(inv)

    async def check(inv: Invocation, call_next: CallNext) -> Any:
        seen.append(dict(inv.metadata))
        return await call_next(inv)

    async def handler(inv: Invocation) -> str:
        return str(inv.metadata["backend"])

    plugins = [
        make_plugin("tools", operation("tools.run", handler)),
        make_plugin("balance", middleware(choose, Phase.BALANCE)),
        make_plugin("transform", middleware(check, Phase.TRANSFORM)),
    ]
    async with make_kernel(*plugins) as kernel:
        assert await kernel.invoke("tools.run") == "b-2"

    assert seen == [{"backend": "b-2"}]


async def test_transform_middleware_can_rewrite_args_before_they_are_checked() -> None:
    seen: list[Any] = []

    async def search(inv: Invocation) -> None:
        seen.append(inv.params)

    async def defaults(inv: Invocation, call_next: CallNext) -> Any:
        inv.args = {"q": "default", **inv.args}
        return await call_next(inv)

    plugins = [
        make_plugin("tools", operation("tools.search", search, args_type=SearchArgs)),
        make_plugin("fill", middleware(defaults, Phase.TRANSFORM)),
    ]
    async with make_kernel(*plugins) as kernel:
        await kernel.invoke("tools.search", {"limit": 3})

    assert seen == [SearchArgs(q="default", limit=3)]


async def test_middleware_can_rewrite_the_result() -> None:
    async def wrap(inv: Invocation, call_next: CallNext) -> Any:
        return {"result": await call_next(inv), "operation": inv.operation}

    plugins = [
        make_plugin("tools", operation("tools.echo", echo)),
        make_plugin("wrap", middleware(wrap, Phase.OBSERVE)),
    ]
    async with make_kernel(*plugins) as kernel:
        assert await kernel.invoke("tools.echo", {"a": 1}) == {"result": {"a": 1}, "operation": "tools.echo"}


async def test_middleware_may_call_the_rest_of_the_chain_again() -> None:
    attempts: list[int] = []

    async def flaky(inv: Invocation) -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("first try fails")
        return "second try"

    async def retry(inv: Invocation, call_next: CallNext) -> Any:
        try:
            return await call_next(inv)
        except OperationFailed:
            return await call_next(inv)

    plugins = [
        make_plugin("tools", operation("tools.flaky", flaky)),
        make_plugin("retry", middleware(retry, Phase.BALANCE)),
    ]
    async with make_kernel(*plugins) as kernel:
        assert await kernel.invoke("tools.flaky") == "second try"

    assert len(attempts) == 2


async def test_middleware_applies_to_every_operation() -> None:
    trail: list[str] = []

    async def audit(inv: Invocation, call_next: CallNext) -> Any:
        trail.append(inv.operation)
        return await call_next(inv)

    setup = both(operation("tools.one", echo), operation("tools.two", echo))
    plugins = [make_plugin("tools", setup), make_plugin("audit", middleware(audit, Phase.OBSERVE))]
    async with make_kernel(*plugins) as kernel:
        await kernel.invoke("tools.one")
        await kernel.invoke("tools.two")

    assert trail == ["tools.one", "tools.two"]


async def test_middleware_of_a_plugin_that_fails_to_start_is_not_installed() -> None:
    trail: list[str] = []

    def setup(ctx: PluginContext[Any]) -> None:
        ctx.register_middleware(tracing("broken", trail))
        raise RuntimeError("start failed")

    plugins = [make_plugin("tools", operation("tools.echo", echo)), make_plugin("broken", setup)]
    async with make_kernel(*plugins) as kernel:
        assert kernel.middleware_order() == []
        await kernel.invoke("tools.echo")

    assert trail == []


async def test_middleware_is_withdrawn_when_the_kernel_stops() -> None:
    kernel = make_kernel(make_plugin("mw", middleware(echo_through)))
    async with kernel:
        assert kernel.middleware_order() == [("mw", Phase.TRANSFORM)]

    assert kernel.middleware_order() == []


async def test_middleware_that_is_not_callable_fails_the_plugin() -> None:
    async with make_kernel(make_plugin("mw", middleware("nope"))) as kernel:  # type: ignore[arg-type]
        info = kernel.plugins["mw"]
        assert info.state is PluginState.FAILED
        assert "not callable" in (info.last_error or "")


# -- observers of invokes ----------------------------------------------------------------------


async def test_observer_is_told_of_each_invoke_and_its_outcome() -> None:
    watch = Watch()

    async def broken(inv: Invocation) -> None:
        raise ValueError("x")

    setup = both(operation("tools.echo", echo), operation("tools.broken", broken))
    async with make_kernel(make_plugin("tools", setup), watcher(watch)) as kernel:
        await kernel.invoke("tools.echo")
        with pytest.raises(OperationFailed):
            await kernel.invoke("tools.broken")
        with pytest.raises(OperationNotFound):
            await kernel.invoke("tools.nope")
        with pytest.raises(InvalidArguments):
            await kernel.invoke("tools.echo", ["not", "a", "mapping"])  # type: ignore[arg-type]

    assert watch.invokes == [
        ("tools.echo", "ok"),
        ("tools.broken", "error"),
        ("tools.nope", "error"),
        ("tools.echo", "error"),
    ]
    assert all(isinstance(duration, float) and duration >= 0 for duration in watch.durations)


async def test_observer_sees_a_short_circuited_invoke_as_ok() -> None:
    watch = Watch()

    async def cached(inv: Invocation, call_next: CallNext) -> Any:
        return "hit"

    plugins = [
        make_plugin("tools", operation("tools.echo", echo)),
        make_plugin("cache", middleware(cached)),
        watcher(watch),
    ]
    async with make_kernel(*plugins) as kernel:
        await kernel.invoke("tools.echo")

    assert watch.invokes == [("tools.echo", "ok")]


async def test_observer_measures_the_whole_invoke() -> None:
    watch = Watch()

    async def slow(inv: Invocation) -> None:
        await anyio.sleep(0.05)

    async with make_kernel(make_plugin("tools", operation("tools.slow", slow)), watcher(watch)) as kernel:
        await kernel.invoke("tools.slow")

    assert watch.durations[0] >= 0.04


async def test_lone_observer_that_raises_does_not_break_invoke() -> None:
    async with make_kernel(make_plugin("tools", operation("tools.echo", echo)), watcher(RaisingWatch())) as kernel:
        assert await kernel.invoke("tools.echo", {"a": 1}) == {"a": 1}


async def test_observer_that_raises_in_on_invoke_is_removed() -> None:
    broken, fine = RaisingWatch(), Watch()
    plugins = [
        make_plugin("tools", operation("tools.echo", echo)),
        watcher(broken, "w_broken"),
        watcher(fine, "w_fine"),
    ]

    async with make_kernel(*plugins) as kernel:
        for _ in range(3):
            await kernel.invoke("tools.echo")

    assert len(fine.invokes) == 3
    assert len(broken.invokes) == 1


async def test_observer_that_raises_in_on_invoke_does_not_break_invoke_when_others_observe() -> None:
    broken, fine = RaisingWatch(), Watch()
    plugins = [
        make_plugin("tools", operation("tools.echo", echo)),
        watcher(broken, "w_broken"),
        watcher(fine, "w_fine"),
    ]

    async with make_kernel(*plugins) as kernel:
        assert await kernel.invoke("tools.echo", {"a": 1}) == {"a": 1}
        assert await kernel.invoke("tools.echo", {"a": 2}) == {"a": 2}

    assert fine.invokes == [("tools.echo", "ok"), ("tools.echo", "ok")]


async def test_invoke_is_not_observed_once_the_observing_plugin_stopped() -> None:
    watch = Watch()
    kernel = make_kernel(make_plugin("tools", operation("tools.echo", echo)), watcher(watch))

    async with kernel:
        await kernel.invoke("tools.echo")

    assert watch.invokes == [("tools.echo", "ok")]
    assert kernel.hooks.observer is None


# -- sync apps, apps as plugins, scale ----------------------------------------------------------


class AgentApp(Plugin):
    """An agent app that passes itself to the kernel as a plugin."""

    name = "agent_app"

    def __init__(self) -> None:
        self.searches: list[str] = []

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.register_operation("tools.search", self.search, args_type=SearchArgs, doc="Search the corpus.")
        ctx.register_operation("tools.count", self.count)

    async def search(self, inv: Invocation) -> list[str]:
        self.searches.append(inv.params.q)
        return [f"{inv.params.q}-{i}" for i in range(inv.params.limit)]

    def count(self, inv: Invocation) -> int:
        return len(self.searches)

    def run(self, queries: list[str]) -> list[list[str]]:
        with Kernel.start_blocking({}, plugins=[self], environ={}) as kernel:
            return [kernel.invoke("tools.search", {"q": q, "limit": 2}) for q in queries]


def test_sync_code_invokes_through_start_blocking() -> None:
    greeter = make_plugin("greeter", operation("greet", lambda inv: f"hello, {inv.args['who']}"))

    with Kernel.start_blocking({}, plugins=[greeter], environ={}) as kernel:
        assert kernel.invoke("greet", {"who": "Ada"}) == "hello, Ada"
        assert kernel.plugins["greeter"].state is PluginState.RUNNING


def test_start_blocking_passes_the_principal() -> None:
    seen: list[Principal | None] = []

    async def look(inv: Invocation) -> None:
        seen.append(inv.principal)

    with Kernel.start_blocking({}, plugins=[make_plugin("tools", operation("tools.look", look))], environ={}) as kernel:
        kernel.invoke("tools.look", principal=Principal("ada"))

    assert seen == [Principal("ada")]


def test_start_blocking_raises_sdk_errors_in_the_calling_thread() -> None:
    with Kernel.start_blocking({}, plugins=[make_plugin("tools", operation("tools.echo", echo))], environ={}) as kernel:
        with pytest.raises(OperationNotFound, match=r"did you mean 'tools\.echo'"):
            kernel.invoke("tools.ech")
        with pytest.raises(InvalidArguments):
            kernel.invoke("tools.echo", 5)  # type: ignore[arg-type]


def test_start_blocking_stops_the_plugins_on_exit() -> None:
    stopped: list[str] = []

    class Tool(Plugin):
        name = "tool"

        async def stop(self) -> None:
            stopped.append(self.name)

    with Kernel.start_blocking({}, plugins=[Tool()], environ={}) as kernel:
        assert stopped == []
        underlying = kernel.kernel

    assert stopped == ["tool"]
    assert underlying.plugins["tool"].state is PluginState.STOPPED


def test_app_passes_itself_as_a_plugin_from_sync_code() -> None:
    app = AgentApp()

    assert app.run(["otters", "seals"]) == [["otters-0", "otters-1"], ["seals-0", "seals-1"]]
    assert app.searches == ["otters", "seals"]


async def test_app_passes_itself_as_a_plugin_to_an_async_kernel() -> None:
    app = AgentApp()

    async with make_kernel(app) as kernel:
        assert await kernel.invoke("tools.search", {"q": "x", "limit": 1}) == ["x-0"]
        assert await kernel.invoke("tools.count") == 1
        assert kernel.operations["tools.search"].doc == "Search the corpus."
        assert sorted(kernel.plugins["agent_app"].operations) == ["tools.count", "tools.search"]


async def test_a_thousand_concurrent_invokes_all_succeed() -> None:
    async def handler(inv: Invocation) -> tuple[int, int]:
        await anyio.sleep(0)  # noqa: ASYNC115 - let the other calls interleave
        return inv.args["i"], inv.metadata["seen"]

    async def tag(inv: Invocation, call_next: CallNext) -> Any:
        inv.metadata["seen"] = inv.args["i"]
        await anyio.sleep(0)  # noqa: ASYNC115 - let the other calls interleave
        return await call_next(inv)

    results: dict[int, Any] = {}

    async def one(kernel: Kernel, i: int) -> None:
        results[i] = await kernel.invoke("tools.work", {"i": i})

    plugins = [make_plugin("tools", operation("tools.work", handler)), make_plugin("tag", middleware(tag))]
    async with make_kernel(*plugins) as kernel:
        began = time.perf_counter()
        async with anyio.create_task_group() as group:
            for i in range(1000):
                group.start_soon(one, kernel, i)
        elapsed = time.perf_counter() - began

    assert results == {i: (i, i) for i in range(1000)}
    assert elapsed < 5.0
