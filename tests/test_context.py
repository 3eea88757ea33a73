"""The plugin context: a plugin's only door to the kernel, and what it does not open."""

from __future__ import annotations

import logging
import types
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from kernel import Kernel
from kernel._context import KernelContext
from plugin_sdk import Invocation
from plugin_sdk import NoSettings
from plugin_sdk import PermissionDenied
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginError
from plugin_sdk import PluginState
from plugin_sdk import ServiceUnavailable

#: every public attribute a context has (the SDK's documented surface)
PUBLIC_SURFACE = {
    "add_dispatch_observer",
    "data_dir",
    "hooks",
    "introspect",
    "log",
    "name",
    "permissions",
    "provide",
    "register_middleware",
    "register_operation",
    "service",
    "settings",
    "spawn",
}


class Probe(Plugin):
    """Runs ``probe(ctx)`` in start and keeps the context and what the probe returned or raised."""

    name = "probe"

    def __init__(self, probe: Any = None) -> None:
        self.probe = probe
        self.ctx: PluginContext[Any] | None = None
        self.result: Any = None
        self.error: Exception | None = None

    async def start(self, ctx: PluginContext[Any]) -> None:
        self.ctx = ctx
        for service in self.provides:
            ctx.provide(service, f"{service} from {self.name}")
        if self.probe is not None:
            try:
                self.result = self.probe(ctx)
            except Exception as exc:
                self.error = exc


def probe_plugin(name: str = "probe", probe: Any = None, **manifest: Any) -> Probe:
    cls = type(f"Probe_{name}", (Probe,), {"name": name, **manifest})
    plugin: Probe = cls(probe)
    return plugin


def same_directory(found: Path, expected: Path) -> bool:
    """Both name one existing directory (``found`` may be relative to the working directory)."""
    return found.is_dir() and found.resolve() == expected.resolve()


class Provider(Plugin):
    name = "provider"
    provides = ("shared",)

    def __init__(self) -> None:
        self.service = object()

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.provide("shared", self.service)


@attrs.frozen
class GreeterSettings:
    greeting: str = "hello"
    times: int = 1


class Greeter(Plugin):
    name = "greeter"
    Config = GreeterSettings

    async def start(self, ctx: PluginContext[GreeterSettings]) -> None:
        self.settings = ctx.settings


# -- provide and service ---------------------------------------------------------------


@pytest.mark.anyio
async def test_provide_of_undeclared_service_is_denied_naming_plugin_and_service() -> None:
    plugin = probe_plugin("sneaky", lambda ctx: ctx.provide("stolen", object()))
    async with Kernel(None, plugins=[plugin], environ={}):
        pass
    assert isinstance(plugin.error, PermissionDenied)
    assert "'sneaky'" in str(plugin.error)
    assert "'stolen'" in str(plugin.error)


@pytest.mark.anyio
async def test_undeclared_provide_that_escapes_start_fails_the_plugin() -> None:
    class Sneaky(Plugin):
        name = "sneaky"

        async def start(self, ctx: PluginContext[Any]) -> None:
            ctx.provide("stolen", object())

    async with Kernel(None, plugins=[Sneaky()], environ={}) as kernel:
        info = kernel.plugins["sneaky"]
        assert info.state is PluginState.FAILED
        assert "'stolen'" in (info.last_error or "")


@pytest.mark.anyio
async def test_service_not_declared_is_denied_naming_plugin_and_service() -> None:
    plugin = probe_plugin("nosy", lambda ctx: ctx.service("shared"))
    async with Kernel(None, plugins=[Provider(), plugin], environ={}):
        pass
    assert isinstance(plugin.error, PermissionDenied)
    assert "'nosy'" in str(plugin.error)
    assert "'shared'" in str(plugin.error)


@pytest.mark.anyio
async def test_own_provided_service_is_not_reachable_without_declaring_it() -> None:
    plugin = probe_plugin("selfish", lambda ctx: ctx.service("mine"), provides=("mine",))
    async with Kernel(None, plugins=[plugin], environ={}):
        pass
    assert isinstance(plugin.error, PermissionDenied)


@pytest.mark.anyio
async def test_required_service_returns_the_provided_object() -> None:
    provider = Provider()
    plugin = probe_plugin("user", lambda ctx: ctx.service("shared"), requires=("shared",))
    async with Kernel(None, plugins=[provider, plugin], environ={}):
        pass
    assert plugin.error is None
    assert plugin.result is provider.service


@pytest.mark.anyio
async def test_service_with_kind_returns_the_same_object() -> None:
    provider = Provider()
    plugin = probe_plugin("user", lambda ctx: ctx.service("shared", object), optional=("shared",))
    async with Kernel(None, plugins=[provider, plugin], environ={}):
        pass
    assert plugin.result is provider.service


@pytest.mark.anyio
async def test_optional_service_nobody_provides_raises_service_unavailable() -> None:
    plugin = probe_plugin("user", lambda ctx: ctx.service("shared"), optional=("shared",))
    async with Kernel(None, plugins=[plugin], environ={}):
        pass
    assert isinstance(plugin.error, ServiceUnavailable)
    assert "'shared'" in str(plugin.error)
    assert "'user'" in str(plugin.error)


@pytest.mark.anyio
async def test_optional_service_of_a_disabled_provider_raises_service_unavailable() -> None:
    plugin = probe_plugin("user", lambda ctx: ctx.service("shared"), optional=("shared",))
    config = {"plugins": {"provider": {"enabled": False}}}
    async with Kernel(config, plugins=[Provider(), plugin], environ={}):
        pass
    assert isinstance(plugin.error, ServiceUnavailable)


@pytest.mark.anyio
async def test_provided_service_is_withdrawn_when_its_provider_stops() -> None:
    user = probe_plugin("user", optional=("shared",))
    async with Kernel(None, plugins=[Provider(), user], environ={}):
        assert user.ctx is not None
        ctx = user.ctx
        assert ctx.service("shared") is not None
    with pytest.raises(ServiceUnavailable):
        ctx.service("shared")


# -- what the context carries ----------------------------------------------------------


@pytest.mark.anyio
async def test_name_is_the_plugin_name() -> None:
    plugin = probe_plugin("named", lambda ctx: ctx.name)
    async with Kernel(None, plugins=[plugin], environ={}):
        pass
    assert plugin.result == "named"


@pytest.mark.anyio
async def test_log_is_a_logger_named_after_the_plugin() -> None:
    plugin = probe_plugin("chatty", lambda ctx: ctx.log)
    async with Kernel(None, plugins=[plugin], environ={}):
        pass
    assert isinstance(plugin.result, logging.Logger)
    assert plugin.result.name == "orion.plugin.chatty"


@pytest.mark.anyio
async def test_log_records_carry_the_plugin_logger_name(caplog: pytest.LogCaptureFixture) -> None:
    plugin = probe_plugin("chatty", lambda ctx: ctx.log.warning("hello from %s", ctx.name))
    with caplog.at_level(logging.WARNING, logger="orion.plugin.chatty"):
        async with Kernel(None, plugins=[plugin], environ={}):
            pass
    assert [(r.name, r.getMessage()) for r in caplog.records if r.name == "orion.plugin.chatty"] == [
        ("orion.plugin.chatty", "hello from chatty")
    ]


@pytest.mark.anyio
async def test_settings_are_an_instance_of_the_plugin_config_class() -> None:
    plugin = Greeter()
    config = {"plugins": {"greeter": {"settings": {"greeting": "hi"}}}}
    async with Kernel(config, plugins=[plugin], environ={}):
        pass
    assert isinstance(plugin.settings, GreeterSettings)
    assert plugin.settings == GreeterSettings(greeting="hi", times=1)


@pytest.mark.anyio
async def test_settings_default_to_the_config_class_defaults() -> None:
    plugin = Greeter()
    async with Kernel(None, plugins=[plugin], environ={}):
        pass
    assert plugin.settings == GreeterSettings()


@pytest.mark.anyio
async def test_settings_of_a_plugin_without_config_are_no_settings() -> None:
    plugin = probe_plugin("plain", lambda ctx: ctx.settings)
    async with Kernel(None, plugins=[plugin], environ={}):
        pass
    assert isinstance(plugin.result, NoSettings)


@pytest.mark.anyio
async def test_settings_come_from_environment_overrides() -> None:
    plugin = Greeter()
    environ = {"ORION__PLUGINS__GREETER__SETTINGS__TIMES": "3"}
    async with Kernel(None, plugins=[plugin], environ=environ):
        pass
    assert plugin.settings == GreeterSettings(times=3)


@pytest.mark.anyio
async def test_data_dir_is_created_under_kernel_data_dir_on_access(tmp_path: Path) -> None:
    root = tmp_path / "state"
    existed: list[bool] = []

    def probe(ctx: PluginContext[Any]) -> Path:
        existed.append((root / "keeper").exists())
        return ctx.data_dir

    plugin = probe_plugin("keeper", probe)
    async with Kernel({"kernel": {"data_dir": str(root)}}, plugins=[plugin], environ={}):
        pass
    assert existed == [False]
    assert plugin.result == root / "keeper"
    assert plugin.result.is_dir()


@pytest.mark.anyio
async def test_data_dir_defaults_to_dot_orion_in_the_working_directory(tmp_path: Path) -> None:
    plugin = probe_plugin("keeper", lambda ctx: ctx.data_dir)
    async with Kernel(None, plugins=[plugin], environ={}):
        pass
    assert same_directory(plugin.result, tmp_path / ".orion" / "keeper")


@pytest.mark.anyio
async def test_data_dirs_of_two_plugins_are_distinct(tmp_path: Path) -> None:
    first = probe_plugin("first", lambda ctx: ctx.data_dir)
    second = probe_plugin("second", lambda ctx: ctx.data_dir)
    async with Kernel({"kernel": {"data_dir": str(tmp_path)}}, plugins=[first, second], environ={}):
        pass
    assert first.result != second.result
    assert first.result.parent == second.result.parent == tmp_path


@pytest.mark.anyio
async def test_data_dir_is_not_created_when_never_accessed(tmp_path: Path) -> None:
    root = tmp_path / "state"
    async with Kernel({"kernel": {"data_dir": str(root)}}, plugins=[probe_plugin("idle")], environ={}):
        pass
    assert not root.exists()


@pytest.mark.anyio
async def test_repr_names_the_plugin() -> None:
    plugin = probe_plugin("shown", repr)
    async with Kernel(None, plugins=[plugin], environ={}):
        pass
    assert "shown" in plugin.result


# -- registrations -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_registered_operation_is_invokable_once_the_plugin_runs() -> None:
    def register(ctx: PluginContext[Any]) -> None:
        ctx.register_operation("probe.echo", lambda inv: dict(inv.args))

    async with Kernel(None, plugins=[probe_plugin("probe", register)], environ={}) as kernel:
        assert await kernel.invoke("probe.echo", {"a": 1}) == {"a": 1}
        assert kernel.plugins["probe"].operations == ("probe.echo",)


@pytest.mark.anyio
async def test_registering_the_same_operation_twice_is_a_plugin_error() -> None:
    def register(ctx: PluginContext[Any]) -> None:
        ctx.register_operation("probe.echo", lambda inv: 1)
        ctx.register_operation("probe.echo", lambda inv: 2)

    plugin = probe_plugin("probe", register)
    async with Kernel(None, plugins=[plugin], environ={}):
        pass
    assert isinstance(plugin.error, PluginError)
    assert "probe.echo" in str(plugin.error)


@pytest.mark.anyio
async def test_registering_an_operation_with_an_invalid_name_is_a_plugin_error() -> None:
    plugin = probe_plugin("probe", lambda ctx: ctx.register_operation("Not Valid", lambda inv: 1))
    async with Kernel(None, plugins=[plugin], environ={}):
        pass
    assert isinstance(plugin.error, PluginError)


@pytest.mark.anyio
async def test_registering_a_non_callable_middleware_is_a_plugin_error() -> None:
    plugin = probe_plugin("probe", lambda ctx: ctx.register_middleware("not callable"))
    async with Kernel(None, plugins=[plugin], environ={}):
        pass
    assert isinstance(plugin.error, PluginError)
    assert "'probe'" in str(plugin.error)


@pytest.mark.anyio
async def test_registered_middleware_wraps_invokes() -> None:
    async def shout(inv: Invocation, call_next: Any) -> Any:
        return str(await call_next(inv)).upper()

    def register(ctx: PluginContext[Any]) -> None:
        ctx.register_middleware(shout)
        ctx.register_operation("probe.say", lambda inv: "quiet")

    async with Kernel(None, plugins=[probe_plugin("probe", register)], environ={}) as kernel:
        assert await kernel.invoke("probe.say") == "QUIET"


@pytest.mark.anyio
async def test_dispatch_observer_without_the_observer_methods_is_a_plugin_error() -> None:
    plugin = probe_plugin("probe", lambda ctx: ctx.add_dispatch_observer(object()))
    async with Kernel(None, plugins=[plugin], environ={}):
        pass
    assert isinstance(plugin.error, PluginError)
    assert "observer" in str(plugin.error)


# -- spawn -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_spawn_runs_the_function_with_its_arguments() -> None:
    received: list[tuple[int, str]] = []

    async def task(number: int, word: str) -> None:
        received.append((number, word))

    async with Kernel(None, plugins=[probe_plugin("probe", lambda ctx: ctx.spawn(task, 7, "seven"))], environ={}):
        await anyio.sleep(0.05)
    assert received == [(7, "seven")]


@pytest.mark.anyio
async def test_spawn_after_the_kernel_stopped_is_refused() -> None:
    async def task() -> None:
        pass

    plugin = probe_plugin("probe")
    async with Kernel(None, plugins=[plugin], environ={}):
        pass
    assert plugin.ctx is not None
    with pytest.raises(PluginError, match="'probe'"):
        plugin.ctx.spawn(task)


@pytest.mark.anyio
async def test_spawn_during_stop_is_refused() -> None:
    errors: list[Exception] = []

    async def task() -> None:
        pass

    class LateSpawner(Plugin):
        name = "late"

        async def start(self, ctx: PluginContext[Any]) -> None:
            self.ctx = ctx

        async def stop(self) -> None:
            try:
                self.ctx.spawn(task)
            except PluginError as exc:
                errors.append(exc)

    async with Kernel(None, plugins=[LateSpawner()], environ={}):
        pass
    assert len(errors) == 1
    assert "stopping" in str(errors[0])


# -- what plugins cannot do ----------------------------------------------------------------


def test_plugin_context_is_abstract() -> None:
    with pytest.raises(TypeError):
        PluginContext()  # type: ignore[abstract]


def test_kernel_context_refuses_construction_without_the_kernel_token() -> None:
    with pytest.raises(TypeError, match="created by the kernel"):
        KernelContext(object(), object())  # type: ignore[arg-type]


def test_kernel_context_refuses_a_guessed_token() -> None:
    with pytest.raises(TypeError, match="created by the kernel"):
        KernelContext(object(), object(), _token=object())  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_context_is_a_plugin_context() -> None:
    plugin = probe_plugin("probe")
    async with Kernel(None, plugins=[plugin], environ={}):
        assert isinstance(plugin.ctx, PluginContext)


@pytest.mark.anyio
async def test_context_has_every_documented_attribute() -> None:
    plugin = probe_plugin("probe")
    async with Kernel(None, plugins=[plugin], environ={}):
        public = {name for name in dir(plugin.ctx) if not name.startswith("_")}
    assert public >= PUBLIC_SURFACE


@pytest.mark.anyio
async def test_context_public_attributes_are_only_the_documented_ones() -> None:
    plugin = probe_plugin("probe")
    async with Kernel(None, plugins=[plugin], environ={}):
        public = {name for name in dir(plugin.ctx) if not name.startswith("_")}
    assert public == PUBLIC_SURFACE


@pytest.mark.anyio
async def test_plugin_cannot_build_a_context_from_the_one_it_received() -> None:
    def build(ctx: PluginContext[Any]) -> object:
        fake_record = types.SimpleNamespace(name="forged", manifest=None, settings=None)
        return type(ctx).create(fake_record, object())  # type: ignore[attr-defined]

    plugin = probe_plugin("probe", build)
    async with Kernel(None, plugins=[plugin], environ={}):
        pass
    assert plugin.result is None
    assert isinstance(plugin.error, TypeError | AttributeError)


@pytest.mark.anyio
async def test_context_attributes_do_not_reference_the_kernel(tmp_path: Path) -> None:
    plugin = probe_plugin("probe")
    kernel = Kernel({"kernel": {"data_dir": str(tmp_path)}}, plugins=[plugin], environ={})
    async with kernel:
        ctx = plugin.ctx
        assert ctx is not None
        values = [getattr(ctx, name) for name in dir(ctx)]
        values += list(getattr(ctx, "__dict__", {}).values())
        values += [getattr(ctx, slot) for cls in type(ctx).__mro__ for slot in getattr(cls, "__slots__", ())]
    assert values
    for value in values:
        assert value is not kernel
        assert not isinstance(value, Kernel)
        assert getattr(value, "__self__", None) is not kernel


@pytest.mark.anyio
async def test_context_bound_methods_are_bound_to_the_context_not_the_kernel() -> None:
    plugin = probe_plugin("probe")
    async with Kernel(None, plugins=[plugin], environ={}):
        ctx = plugin.ctx
        for name in (
            "provide",
            "service",
            "register_operation",
            "register_middleware",
            "add_dispatch_observer",
            "spawn",
        ):
            assert getattr(ctx, name).__self__ is ctx


@pytest.mark.anyio
async def test_each_plugin_gets_its_own_context() -> None:
    first = probe_plugin("first")
    second = probe_plugin("second")
    async with Kernel(None, plugins=[first, second], environ={}):
        assert first.ctx is not second.ctx
        assert first.ctx is not None
        assert second.ctx is not None
        assert first.ctx.name == "first"
        assert second.ctx.name == "second"


class LateRegistrar(Plugin):
    """Registers from a background task after start() returned."""

    name = "late"
    provides = ("early",)

    def __init__(self) -> None:
        self.errors: list[Exception] = []
        self.done = anyio.Event()

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.provide("early", object())
        ctx.spawn(self._later, ctx)

    async def _later(self, ctx: PluginContext[Any]) -> None:
        await anyio.sleep(0.001)
        attempts = (
            lambda: ctx.register_operation("late.op", lambda inv: None),
            lambda: ctx.register_middleware(lambda inv, call_next: call_next(inv)),
            lambda: ctx.provide("early", object()),
            lambda: ctx.add_dispatch_observer(object()),  # type: ignore[arg-type]
        )
        for attempt in attempts:
            try:
                attempt()
            except PluginError as exc:
                self.errors.append(exc)
        self.done.set()


@pytest.mark.anyio
async def test_registrations_after_start_are_refused_not_lost() -> None:
    plugin = LateRegistrar()
    async with Kernel(plugins=[plugin]) as kernel:
        with anyio.fail_after(5):
            await plugin.done.wait()
        assert "late.op" not in kernel.operations
    assert len(plugin.errors) == 4
    assert all("outside start()" in str(e) and "register everything in start()" in str(e) for e in plugin.errors)
