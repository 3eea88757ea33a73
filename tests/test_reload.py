"""Reload: apply a config diff transactionally, beside the running plugins.

Plugins here are *classes* (the kernel instantiates them), so a changed plugin
without ``reconfigure()`` can be restarted as a new instance.  Each class is
bound to a :class:`Journal` that records every start, stop and reconfigure with
the instance and a ``time.perf_counter()`` timestamp.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import ClassVar

import anyio
import attrs
import pytest

from kernel import Kernel
from kernel import ReloadError
from kernel import ReloadReport
from plugin_sdk import ConfigError
from plugin_sdk import Invocation
from plugin_sdk import OperationNotFound
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginError
from plugin_sdk import PluginState
from plugin_sdk import hookimpl
from plugin_sdk import hookspec


@attrs.frozen
class Settings:
    greeting: str = "hello"
    fail_start: bool = False
    start_delay: float = 0.0
    fail_reconfigure: bool = False


class Journal:
    """What happened to which plugin instance, and when."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, object, float]] = []

    def record(self, plugin: str, what: str, instance: object) -> None:
        self.events.append((plugin, what, instance, time.perf_counter()))

    def instances(self, plugin: str, what: str) -> list[object]:
        return [i for p, w, i, _ in self.events if p == plugin and w == what]

    def at(self, plugin: str, what: str, instance: object) -> float:
        found = [t for p, w, i, t in self.events if p == plugin and w == what and i is instance]
        assert len(found) == 1, f"expected one {what!r} of {plugin!r} {instance!r}: {self.events}"
        return found[0]

    def whats(self, plugin: str) -> list[str]:
        return [w for p, w, _, _ in self.events if p == plugin]

    def mark(self) -> int:
        return len(self.events)

    def since(self, mark: int) -> list[tuple[str, str]]:
        return [(p, w) for p, w, _, _ in self.events[mark:]]


class OrderSpecs:
    """A hook of the tests' own, to see the order plugins are called in."""

    @hookspec()
    def who_am_i() -> str:  # type: ignore[misc]
        """Each plugin answers its name."""
        raise NotImplementedError


class Restartable(Plugin):
    """No ``reconfigure()``: a changed config restarts it as a new instance."""

    journal: ClassVar[Journal]
    Config = Settings

    async def start(self, ctx: PluginContext[Settings]) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.journal.record(self.name, "start", self)
        if self.settings.start_delay:
            await anyio.sleep(self.settings.start_delay)
        if self.settings.fail_start:
            raise RuntimeError(f"{self.name} refuses to start")
        for service in self.provides:
            ctx.provide(service, self)
        ctx.register_operation(f"{self.name}.greet", self.greet)
        self.journal.record(self.name, "started", self)

    async def stop(self) -> None:
        self.journal.record(self.name, "stop", self)

    async def greet(self, inv: Invocation) -> str:
        return f"{self.settings.greeting} from {self.name}"

    @hookimpl(optional=True)
    def who_am_i(self) -> str:
        return self.name


class Reconfigurable(Restartable):
    """Takes new settings in place through a sync ``reconfigure()``."""

    def reconfigure(self, settings: Settings) -> None:
        self.journal.record(self.name, f"reconfigure:{settings.greeting}", self)
        if settings.fail_reconfigure:
            raise ValueError(f"{self.name} cannot take {settings.greeting!r}")
        self.settings = settings


class AsyncReconfigurable(Restartable):
    """Takes new settings in place through an async ``reconfigure()``."""

    async def reconfigure(self, settings: Settings) -> None:
        await anyio.sleep(0.01)
        self.journal.record(self.name, f"reconfigure:{settings.greeting}", self)
        self.settings = settings


def plugin_class(
    name: str,
    journal: Journal,
    base: type[Restartable] = Restartable,
    *,
    provides: Sequence[str] = (),
    requires: Sequence[str] = (),
    optional: Sequence[str] = (),
    priority: int = 0,
) -> type[Restartable]:
    """A fresh plugin class named ``name`` recording into ``journal``."""
    attributes = {
        "name": name,
        "journal": journal,
        "provides": tuple(provides),
        "requires": tuple(requires),
        "optional": tuple(optional),
        "priority": priority,
    }
    cls: type[Restartable] = type(f"{base.__name__}_{name}", (base,), attributes)
    return cls


def only(instances: list[object]) -> object:
    assert len(instances) == 1, instances
    return instances[0]


def state_of(kernel: Kernel) -> dict[str, PluginState]:
    return {name: info.state for name, info in kernel.plugins.items()}


EMPTY_REPORT = ReloadReport(started=(), stopped=(), restarted=(), reconfigured=(), unchanged=())


# -- what stays, what starts, what stops -------------------------------------------------


@pytest.mark.anyio
async def test_reload_with_the_same_config_leaves_every_plugin_untouched() -> None:
    journal = Journal()
    config = {"plugins": {"a": {"settings": {"greeting": "hi"}}}}
    plugins = [plugin_class("a", journal), plugin_class("b", journal, Reconfigurable)]
    async with Kernel(config, plugins=plugins, environ={}) as kernel:
        mark = journal.mark()
        report = await kernel.reload(config)
        assert report == ReloadReport(started=(), stopped=(), restarted=(), reconfigured=(), unchanged=("a", "b"))
        assert journal.since(mark) == []
        assert state_of(kernel) == {"a": PluginState.RUNNING, "b": PluginState.RUNNING}
        assert await kernel.invoke("a.greet") == "hi from a"


@pytest.mark.anyio
async def test_unchanged_plugin_keeps_its_instance_while_another_is_restarted() -> None:
    journal = Journal()
    plugins = [plugin_class("a", journal), plugin_class("b", journal)]
    async with Kernel(None, plugins=plugins, environ={}) as kernel:
        first_a = only(journal.instances("a", "start"))
        report = await kernel.reload({"plugins": {"b": {"settings": {"greeting": "yo"}}}})
        assert report.unchanged == ("a",)
        assert report.restarted == ("b",)
        assert journal.instances("a", "start") == [first_a]
        assert journal.instances("a", "stop") == []
        assert kernel.plugins["a"].state is PluginState.RUNNING


@pytest.mark.anyio
async def test_reload_starts_a_newly_enabled_plugin() -> None:
    journal = Journal()
    plugins = [plugin_class("a", journal), plugin_class("b", journal)]
    async with Kernel({"plugins": {"b": {"enabled": False}}}, plugins=plugins, environ={}) as kernel:
        with pytest.raises(OperationNotFound):
            await kernel.invoke("b.greet")
        report = await kernel.reload({"plugins": {"b": {"enabled": True}}})
        assert report == ReloadReport(started=("b",), stopped=(), restarted=(), reconfigured=(), unchanged=("a",))
        assert kernel.plugins["b"].state is PluginState.RUNNING
        assert kernel.plugins["b"].enabled is True
        assert await kernel.invoke("b.greet") == "hello from b"
        assert len(journal.instances("b", "start")) == 1


@pytest.mark.anyio
async def test_reload_stops_a_disabled_plugin_and_withdraws_its_operations() -> None:
    journal = Journal()
    plugins = [plugin_class("a", journal), plugin_class("b", journal)]
    async with Kernel(None, plugins=plugins, environ={}) as kernel:
        b = only(journal.instances("b", "start"))
        report = await kernel.reload({"plugins": {"b": {"enabled": False}}})
        assert report == ReloadReport(started=(), stopped=("b",), restarted=(), reconfigured=(), unchanged=("a",))
        assert journal.instances("b", "stop") == [b]
        assert kernel.plugins["b"].enabled is False
        assert kernel.plugins["b"].state is not PluginState.RUNNING
        assert "b.greet" not in kernel.operations
        with pytest.raises(OperationNotFound):
            await kernel.invoke("b.greet")
        assert await kernel.invoke("a.greet") == "hello from a"


@pytest.mark.anyio
async def test_plugin_disabled_by_reload_is_reported_stopped() -> None:
    journal = Journal()
    async with Kernel(None, plugins=[plugin_class("b", journal)], environ={}) as kernel:
        await kernel.reload({"plugins": {"b": {"enabled": False}}})
        assert kernel.plugins["b"].state is PluginState.STOPPED
        assert kernel.plugins["b"].version == "0.0.0"


@pytest.mark.anyio
async def test_reload_stops_a_disabled_plugin_s_background_tasks() -> None:
    cancelled: list[str] = []

    class Worker(Plugin):
        name = "worker"

        async def start(self, ctx: PluginContext[Any]) -> None:
            async def forever() -> None:
                try:
                    await anyio.sleep_forever()
                finally:
                    cancelled.append("worker")

            ctx.spawn(forever)

    async with Kernel(None, plugins=[Worker], environ={}) as kernel:
        await anyio.sleep(0.01)
        await kernel.reload({"plugins": {"worker": {"enabled": False}}})
        assert cancelled == ["worker"]


@pytest.mark.anyio
async def test_reload_retries_a_plugin_class_that_failed_to_start() -> None:
    journal = Journal()
    config = {"plugins": {"a": {"settings": {"fail_start": True}}}}
    async with Kernel(config, plugins=[plugin_class("a", journal)], environ={}) as kernel:
        assert kernel.plugins["a"].state is PluginState.FAILED
        report = await kernel.reload({"plugins": {"a": {"settings": {"fail_start": False}}}})
        assert report.started == ("a",)
        assert kernel.plugins["a"].state is PluginState.RUNNING
        assert kernel.plugins["a"].last_error is None
        assert await kernel.invoke("a.greet") == "hello from a"


@pytest.mark.anyio
async def test_reload_retries_a_plugin_instance_that_failed_to_start() -> None:
    attempts: list[str] = []

    class Flaky(Plugin):
        name = "flaky"
        Config = Settings

        async def start(self, ctx: PluginContext[Settings]) -> None:
            attempts.append(ctx.settings.greeting)
            if ctx.settings.fail_start:
                raise RuntimeError("not yet")

        def reconfigure(self, settings: Settings) -> None:
            pass

    config = {"plugins": {"flaky": {"settings": {"fail_start": True}}}}
    async with Kernel(config, plugins=[Flaky()], environ={}) as kernel:
        report = await kernel.reload({"plugins": {"flaky": {"settings": {"greeting": "now"}}}})
        assert report.started == ("flaky",)
        assert kernel.plugins["flaky"].state is PluginState.RUNNING
    assert attempts == ["hello", "now"]


@pytest.mark.anyio
async def test_failed_plugin_does_not_block_an_unrelated_reload() -> None:
    journal = Journal()
    plugins = [plugin_class("a", journal), plugin_class("b", journal, requires=["missing"])]
    async with Kernel(None, plugins=plugins, environ={}) as kernel:
        assert kernel.plugins["b"].state is PluginState.FAILED
        report = await kernel.reload({"plugins": {"a": {"settings": {"greeting": "changed"}}}})
        assert report.restarted == ("a",)
        assert await kernel.invoke("a.greet") == "changed from a"
        assert kernel.plugins["b"].state is PluginState.FAILED


@pytest.mark.anyio
async def test_reload_never_starts_a_plugin_whose_required_service_is_still_missing() -> None:
    journal = Journal()
    plugins = [plugin_class("a", journal), plugin_class("b", journal, requires=["missing"])]
    async with Kernel(None, plugins=plugins, environ={}) as kernel:
        with contextlib.suppress(ReloadError):
            await kernel.reload({"plugins": {"a": {"settings": {"greeting": "changed"}}}})
        assert kernel.plugins["a"].state is PluginState.RUNNING
        assert kernel.plugins["b"].state is PluginState.FAILED
        assert journal.instances("b", "start") == []


# -- changed plugins: reconfigure or restart ----------------------------------------------


@pytest.mark.anyio
async def test_changed_plugin_with_reconfigure_gets_the_new_settings_in_place() -> None:
    journal = Journal()
    async with Kernel(None, plugins=[plugin_class("r", journal, Reconfigurable)], environ={}) as kernel:
        instance = only(journal.instances("r", "start"))
        report = await kernel.reload({"plugins": {"r": {"settings": {"greeting": "howdy"}}}})
        assert report == ReloadReport(started=(), stopped=(), restarted=(), reconfigured=("r",), unchanged=())
        assert journal.instances("r", "reconfigure:howdy") == [instance]
        assert journal.instances("r", "start") == [instance]
        assert journal.instances("r", "stop") == []
        assert await kernel.invoke("r.greet") == "howdy from r"
        assert kernel.plugins["r"].state is PluginState.RUNNING


@pytest.mark.anyio
async def test_reconfigure_receives_an_instance_of_the_config_class() -> None:
    received: list[object] = []

    class Keeper(Plugin):
        name = "keeper"
        Config = Settings

        def reconfigure(self, settings: Settings) -> None:
            received.append(settings)

    async with Kernel(None, plugins=[Keeper()], environ={}) as kernel:
        await kernel.reload({"plugins": {"keeper": {"settings": {"greeting": "hey", "start_delay": 1}}}})
    assert received == [Settings(greeting="hey", start_delay=1.0)]


@pytest.mark.anyio
async def test_async_reconfigure_is_awaited() -> None:
    journal = Journal()
    async with Kernel(None, plugins=[plugin_class("r", journal, AsyncReconfigurable)], environ={}) as kernel:
        report = await kernel.reload({"plugins": {"r": {"settings": {"greeting": "later"}}}})
        assert report.reconfigured == ("r",)
        assert len(journal.instances("r", "reconfigure:later")) == 1
        assert await kernel.invoke("r.greet") == "later from r"


@pytest.mark.anyio
async def test_context_settings_show_the_reconfigured_settings() -> None:
    journal = Journal()
    async with Kernel(None, plugins=[plugin_class("r", journal, Reconfigurable)], environ={}) as kernel:
        instance = only(journal.instances("r", "start"))
        assert isinstance(instance, Restartable)
        await kernel.reload({"plugins": {"r": {"settings": {"greeting": "new"}}}})
        assert instance.ctx.settings == Settings(greeting="new")


@pytest.mark.anyio
async def test_changed_plugin_without_reconfigure_is_restarted_as_a_new_instance() -> None:
    journal = Journal()
    async with Kernel(None, plugins=[plugin_class("a", journal)], environ={}) as kernel:
        old = only(journal.instances("a", "start"))
        report = await kernel.reload({"plugins": {"a": {"settings": {"greeting": "fresh"}}}})
        assert report == ReloadReport(started=(), stopped=(), restarted=("a",), reconfigured=(), unchanged=())
        starts = journal.instances("a", "start")
        assert len(starts) == 2
        new = starts[1]
        assert new is not old
        assert journal.instances("a", "stop") == [old]
        assert isinstance(new, Restartable)
        assert new.settings == Settings(greeting="fresh")
        assert await kernel.invoke("a.greet") == "fresh from a"
        assert kernel.plugins["a"].state is PluginState.RUNNING


@pytest.mark.anyio
async def test_new_instance_of_a_restarted_plugin_starts_before_the_old_one_stops() -> None:
    journal = Journal()
    async with Kernel(None, plugins=[plugin_class("a", journal)], environ={}) as kernel:
        old = only(journal.instances("a", "start"))
        await kernel.reload({"plugins": {"a": {"settings": {"greeting": "next", "start_delay": 0.1}}}})
        new = journal.instances("a", "start")[1]
        assert journal.at("a", "started", new) <= journal.at("a", "stop", old)


@pytest.mark.anyio
async def test_old_instance_keeps_serving_while_the_new_one_starts() -> None:
    journal = Journal()
    answers: list[str] = []
    async with Kernel(None, plugins=[plugin_class("a", journal)], environ={}) as kernel:
        async with anyio.create_task_group() as group:
            group.start_soon(kernel.reload, {"plugins": {"a": {"settings": {"greeting": "next", "start_delay": 0.3}}}})
            await anyio.sleep(0.1)
            answers.append(await kernel.invoke("a.greet"))
        answers.append(await kernel.invoke("a.greet"))
    assert answers == ["hello from a", "next from a"]


@pytest.mark.anyio
async def test_newly_enabled_plugin_starts_before_the_disabled_one_stops() -> None:
    journal = Journal()
    plugins = [plugin_class("old", journal), plugin_class("new", journal)]
    async with Kernel({"plugins": {"new": {"enabled": False}}}, plugins=plugins, environ={}) as kernel:
        old = only(journal.instances("old", "start"))
        new_config = {"plugins": {"old": {"enabled": False}, "new": {"settings": {"start_delay": 0.1}}}}
        report = await kernel.reload(new_config)
        assert report.started == ("new",)
        assert report.stopped == ("old",)
        new = only(journal.instances("new", "start"))
        assert journal.at("new", "started", new) <= journal.at("old", "stop", old)


@pytest.mark.anyio
async def test_plugin_loaded_from_source_is_restarted_when_its_settings_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"reload_source_{uuid.uuid4().hex}"
    (tmp_path / f"{module}.py").write_text(
        "import attrs\n"
        "from plugin_sdk import Plugin\n"
        "EVENTS = []\n"
        "@attrs.frozen\n"
        "class Settings:\n"
        "    greeting: str = 'hello'\n"
        "class Sourced(Plugin):\n"
        "    name = 'sourced'\n"
        "    Config = Settings\n"
        "    async def start(self, ctx):\n"
        "        EVENTS.append(('start', id(self), ctx.settings.greeting))\n"
        "        ctx.register_operation('sourced.greet', lambda inv: ctx.settings.greeting)\n"
        "    async def stop(self):\n"
        "        EVENTS.append(('stop', id(self), None))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    source = f"{module}:Sourced"
    try:
        config = {"plugins": {"sourced": {"enabled": True, "source": source}}}
        async with Kernel(config, environ={}, entry_points=False) as kernel:
            assert await kernel.invoke("sourced.greet") == "hello"
            changed = {"plugins": {"sourced": {"enabled": True, "source": source, "settings": {"greeting": "hi"}}}}
            report = await kernel.reload(changed)
            assert report.restarted == ("sourced",)
            assert await kernel.invoke("sourced.greet") == "hi"
        events = importlib.import_module(module).EVENTS
    finally:
        sys.modules.pop(module, None)
    (first, old, _), (second, new, greeting), (third, stopped, _), *_ = events
    assert (first, second, third) == ("start", "start", "stop")
    assert old != new
    assert greeting == "hi"
    assert stopped == old


@pytest.mark.anyio
async def test_stating_the_default_enabled_explicitly_leaves_a_plugin_unchanged() -> None:
    journal = Journal()
    async with Kernel(None, plugins=[plugin_class("a", journal)], environ={}) as kernel:
        report = await kernel.reload({"plugins": {"a": {"enabled": True}}})
        assert report.unchanged == ("a",)
        assert journal.instances("a", "stop") == []


@pytest.mark.anyio
async def test_stating_the_default_enabled_explicitly_is_accepted_for_an_instance() -> None:
    class Fixed(Plugin):
        name = "fixed"

    async with Kernel(None, plugins=[Fixed()], environ={}) as kernel:
        report = await kernel.reload({"plugins": {"fixed": {"enabled": True}}})
        assert report.unchanged == ("fixed",)


@pytest.mark.anyio
async def test_changed_instance_without_reconfigure_is_a_config_error() -> None:
    class Fixed(Plugin):
        name = "fixed"
        Config = Settings

        async def start(self, ctx: PluginContext[Settings]) -> None:
            ctx.register_operation("fixed.greet", lambda inv: ctx.settings.greeting)

    async with Kernel(None, plugins=[Fixed()], environ={}) as kernel:
        with pytest.raises(ConfigError, match="cannot change") as caught:
            await kernel.reload({"plugins": {"fixed": {"settings": {"greeting": "other"}}}})
        assert caught.value.paths == ("plugins.fixed",)
        assert await kernel.invoke("fixed.greet") == "hello"
        assert kernel.plugins["fixed"].state is PluginState.RUNNING


@pytest.mark.anyio
async def test_changed_instance_with_reconfigure_is_reconfigured() -> None:
    received: list[Settings] = []

    class Flexible(Plugin):
        name = "flexible"
        Config = Settings

        def reconfigure(self, settings: Settings) -> None:
            received.append(settings)

    async with Kernel(None, plugins=[Flexible()], environ={}) as kernel:
        report = await kernel.reload({"plugins": {"flexible": {"settings": {"greeting": "other"}}}})
    assert report.reconfigured == ("flexible",)
    assert received == [Settings(greeting="other")]


@pytest.mark.anyio
async def test_restarted_plugin_hooks_are_called_on_the_new_instance() -> None:
    seen: list[object] = []

    class Tracker(Restartable):
        name = "tracker"
        journal = Journal()

        @hookimpl
        def who_am_i(self) -> str:
            seen.append(self)
            return self.name

    async with Kernel(None, plugins=[Tracker], hookspecs=[OrderSpecs], environ={}) as kernel:
        kernel.hooks.call(OrderSpecs.who_am_i)
        await kernel.reload({"plugins": {"tracker": {"settings": {"greeting": "again"}}}})
        kernel.hooks.call(OrderSpecs.who_am_i)
    assert len(seen) == 2
    assert seen[0] is not seen[1]
    assert Tracker.journal.instances("tracker", "start") == seen


@pytest.mark.anyio
async def test_restarted_provider_is_what_an_unchanged_consumer_sees() -> None:
    journal = Journal()

    class Consumer(Plugin):
        name = "consumer"
        requires = ("greeter",)

        async def start(self, ctx: PluginContext[Any]) -> None:
            async def ask(inv: Invocation) -> str:
                provider = ctx.service("greeter")
                return str(await provider.greet(inv))

            ctx.register_operation("consumer.ask", ask)

    provider = plugin_class("provider", journal, provides=["greeter"])
    async with Kernel(None, plugins=[provider, Consumer], environ={}) as kernel:
        assert await kernel.invoke("consumer.ask") == "hello from provider"
        report = await kernel.reload({"plugins": {"provider": {"settings": {"greeting": "bonjour"}}}})
        assert report.restarted == ("provider",)
        assert report.unchanged == ("consumer",)
        assert await kernel.invoke("consumer.ask") == "bonjour from provider"


# -- ordering --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_reload_changing_priority_reorders_hooks() -> None:
    journal = Journal()
    plugins = [plugin_class("low", journal, priority=0), plugin_class("high", journal, priority=10)]
    async with Kernel(None, plugins=plugins, hookspecs=[OrderSpecs], environ={}) as kernel:
        assert kernel.hooks.call(OrderSpecs.who_am_i) == ["high", "low"]
        report = await kernel.reload({"plugins": {"low": {"priority": 20}}})
        assert report.restarted == ("low",)
        assert kernel.hooks.call(OrderSpecs.who_am_i) == ["low", "high"]


@pytest.mark.anyio
async def test_reload_changing_priority_reorders_middleware() -> None:
    journal = Journal()

    class Wrapping(Restartable):
        async def start(self, ctx: PluginContext[Settings]) -> None:
            await super().start(ctx)
            name = self.name

            async def tag(inv: Invocation, call_next: Any) -> Any:
                return f"{name}({await call_next(inv)})"

            ctx.register_middleware(tag)

    first = plugin_class("first", journal, Wrapping, priority=10)
    second = plugin_class("second", journal, Wrapping, priority=0)
    async with Kernel(None, plugins=[first, second], environ={}) as kernel:
        assert await kernel.invoke("first.greet") == "first(second(hello from first))"
        await kernel.reload({"plugins": {"second": {"priority": 20}}})
        assert [plugin for plugin, _ in kernel.middleware_order()] == ["second", "first"]
        assert await kernel.invoke("first.greet") == "second(first(hello from first))"


@pytest.mark.anyio
async def test_reload_changing_before_in_config_reorders_hooks() -> None:
    journal = Journal()
    plugins = [plugin_class("a", journal), plugin_class("b", journal)]
    async with Kernel(None, plugins=plugins, hookspecs=[OrderSpecs], environ={}) as kernel:
        assert kernel.hooks.call(OrderSpecs.who_am_i) == ["a", "b"]
        await kernel.reload({"plugins": {"b": {"before": ["a"]}}})
        assert kernel.hooks.call(OrderSpecs.who_am_i) == ["b", "a"]


@pytest.mark.anyio
async def test_disabled_plugin_hooks_are_no_longer_called() -> None:
    journal = Journal()
    plugins = [plugin_class("a", journal), plugin_class("b", journal)]
    async with Kernel(None, plugins=plugins, hookspecs=[OrderSpecs], environ={}) as kernel:
        await kernel.reload({"plugins": {"b": {"enabled": False}}})
        assert kernel.hooks.call(OrderSpecs.who_am_i) == ["a"]


# -- failures: nothing changes ----------------------------------------------------------------


@pytest.mark.anyio
async def test_new_plugin_failing_to_start_raises_reload_error_and_keeps_the_old_set() -> None:
    journal = Journal()
    plugins = [plugin_class("a", journal), plugin_class("good", journal), plugin_class("bad", journal)]
    initial = {"plugins": {"good": {"enabled": False}, "bad": {"enabled": False}}}
    async with Kernel(initial, plugins=plugins, environ={}) as kernel:
        a = only(journal.instances("a", "start"))
        new_config = {
            "plugins": {"good": {"enabled": True}, "bad": {"enabled": True, "settings": {"fail_start": True}}}
        }
        with pytest.raises(ReloadError) as caught:
            await kernel.reload(new_config)
        assert "bad" in str(caught.value)
        assert "refuses to start" in str(caught.value)
        assert journal.instances("a", "start") == [a]
        assert journal.instances("a", "stop") == []
        assert state_of(kernel) == {
            "a": PluginState.RUNNING,
            "bad": PluginState.DISCOVERED,
            "good": PluginState.DISCOVERED,
        }
        assert await kernel.invoke("a.greet") == "hello from a"
        assert kernel.config.plugins["good"].enabled is False


@pytest.mark.anyio
async def test_rolled_back_reload_stops_the_new_plugins_that_did_start() -> None:
    journal = Journal()
    plugins = [plugin_class("good", journal), plugin_class("bad", journal)]
    initial = {"plugins": {"good": {"enabled": False}, "bad": {"enabled": False}}}
    async with Kernel(initial, plugins=plugins, environ={}) as kernel:
        new_config = {
            "plugins": {"good": {"enabled": True}, "bad": {"enabled": True, "settings": {"fail_start": True}}}
        }
        with pytest.raises(ReloadError):
            await kernel.reload(new_config)
        good = only(journal.instances("good", "started"))
        assert journal.instances("good", "stop") == [good]
        assert "good.greet" not in kernel.operations
        with pytest.raises(OperationNotFound):
            await kernel.invoke("good.greet")


@pytest.mark.anyio
async def test_rolled_back_reload_stops_the_new_instance_of_a_restarted_plugin() -> None:
    journal = Journal()
    plugins = [plugin_class("a", journal), plugin_class("bad", journal)]
    async with Kernel({"plugins": {"bad": {"enabled": False}}}, plugins=plugins, environ={}) as kernel:
        old = only(journal.instances("a", "start"))
        new_config = {
            "plugins": {
                "a": {"settings": {"greeting": "new"}},
                "bad": {"enabled": True, "settings": {"fail_start": True}},
            }
        }
        with pytest.raises(ReloadError):
            await kernel.reload(new_config)
        old_again, new = journal.instances("a", "started")
        assert old_again is old
        assert journal.instances("a", "stop") == [new]
        assert await kernel.invoke("a.greet") == "hello from a"
        assert kernel.plugins["a"].state is PluginState.RUNNING


@pytest.mark.anyio
async def test_restart_whose_new_instance_fails_keeps_the_old_instance_running() -> None:
    journal = Journal()
    async with Kernel(None, plugins=[plugin_class("a", journal)], environ={}) as kernel:
        old = only(journal.instances("a", "start"))
        with pytest.raises(ReloadError, match="refuses to start"):
            await kernel.reload({"plugins": {"a": {"settings": {"greeting": "x", "fail_start": True}}}})
        assert journal.instances("a", "stop") == []
        assert kernel.plugins["a"].state is PluginState.RUNNING
        assert kernel.plugins["a"].last_error is None
        assert await kernel.invoke("a.greet") == "hello from a"
        assert len(journal.instances("a", "start")) == 2
        assert journal.instances("a", "start")[0] is old


@pytest.mark.anyio
async def test_reload_can_succeed_after_a_rolled_back_one() -> None:
    journal = Journal()
    async with Kernel(None, plugins=[plugin_class("a", journal)], environ={}) as kernel:
        with pytest.raises(ReloadError):
            await kernel.reload({"plugins": {"a": {"settings": {"fail_start": True}}}})
        report = await kernel.reload({"plugins": {"a": {"settings": {"greeting": "second try"}}}})
        assert report.restarted == ("a",)
        assert await kernel.invoke("a.greet") == "second try from a"


@pytest.mark.anyio
async def test_reconfigure_raising_raises_reload_error_and_keeps_the_old_settings() -> None:
    journal = Journal()
    async with Kernel(None, plugins=[plugin_class("r", journal, Reconfigurable)], environ={}) as kernel:
        instance = only(journal.instances("r", "start"))
        with pytest.raises(ReloadError) as caught:
            await kernel.reload({"plugins": {"r": {"settings": {"greeting": "bad", "fail_reconfigure": True}}}})
        assert "'r'" in str(caught.value) or "r:" in str(caught.value)
        assert "cannot take 'bad'" in str(caught.value)
        assert await kernel.invoke("r.greet") == "hello from r"
        assert isinstance(instance, Restartable)
        assert instance.ctx.settings == Settings()
        assert kernel.plugins["r"].state is PluginState.RUNNING


@pytest.mark.anyio
async def test_reconfigure_failure_reverts_plugins_already_reconfigured() -> None:
    journal = Journal()
    plugins = [plugin_class("aa", journal, Reconfigurable), plugin_class("zz", journal, Reconfigurable)]
    async with Kernel(None, plugins=plugins, environ={}) as kernel:
        aa = only(journal.instances("aa", "start"))
        new_config = {
            "plugins": {
                "aa": {"settings": {"greeting": "changed"}},
                "zz": {"settings": {"greeting": "bad", "fail_reconfigure": True}},
            }
        }
        with pytest.raises(ReloadError):
            await kernel.reload(new_config)
        assert journal.whats("aa") == ["start", "started", "reconfigure:changed", "reconfigure:hello"]
        assert journal.instances("aa", "reconfigure:hello") == [aa]
        assert await kernel.invoke("aa.greet") == "hello from aa"


@pytest.mark.anyio
async def test_reconfigure_failure_stops_new_plugins_started_by_the_same_reload() -> None:
    journal = Journal()
    plugins = [plugin_class("r", journal, Reconfigurable), plugin_class("extra", journal)]
    async with Kernel({"plugins": {"extra": {"enabled": False}}}, plugins=plugins, environ={}) as kernel:
        new_config = {
            "plugins": {"extra": {"enabled": True}, "r": {"settings": {"greeting": "bad", "fail_reconfigure": True}}}
        }
        with pytest.raises(ReloadError):
            await kernel.reload(new_config)
        extra = only(journal.instances("extra", "started"))
        assert journal.instances("extra", "stop") == [extra]
        assert "extra.greet" not in kernel.operations
        assert kernel.plugins["extra"].state is not PluginState.RUNNING


@pytest.mark.anyio
async def test_invalid_kernel_settings_raise_config_error_and_change_nothing() -> None:
    journal = Journal()
    plugins = [plugin_class("a", journal), plugin_class("b", journal)]
    async with Kernel(None, plugins=plugins, environ={}) as kernel:
        before = kernel.config
        mark = journal.mark()
        bad = {"kernel": {"start_timeout": "soon"}, "plugins": {"b": {"enabled": False}}}
        with pytest.raises(ConfigError) as caught:
            await kernel.reload(bad)
        assert "kernel.start_timeout" in caught.value.paths
        assert journal.since(mark) == []
        assert kernel.config is before
        assert state_of(kernel) == {"a": PluginState.RUNNING, "b": PluginState.RUNNING}


@pytest.mark.anyio
async def test_invalid_plugin_settings_raise_config_error_and_change_nothing() -> None:
    journal = Journal()
    plugins = [plugin_class("a", journal), plugin_class("r", journal, Reconfigurable)]
    async with Kernel(None, plugins=plugins, environ={}) as kernel:
        mark = journal.mark()
        bad = {"plugins": {"a": {"settings": {"greeting": 5}}, "r": {"settings": {"greting": "typo"}}}}
        with pytest.raises(ConfigError) as caught:
            await kernel.reload(bad)
        assert set(caught.value.paths) == {"plugins.a.settings.greeting", "plugins.r.settings.greting"}
        assert journal.since(mark) == []
        assert await kernel.invoke("a.greet") == "hello from a"


@pytest.mark.anyio
async def test_reload_naming_an_unknown_plugin_is_a_config_error() -> None:
    journal = Journal()
    async with Kernel(None, plugins=[plugin_class("a", journal)], environ={}) as kernel:
        mark = journal.mark()
        with pytest.raises(ConfigError, match="no plugin named 'ghost'"):
            await kernel.reload({"plugins": {"ghost": {"enabled": True}}})
        assert journal.since(mark) == []


@pytest.mark.anyio
async def test_disabling_a_required_provider_raises_reload_error_and_changes_nothing() -> None:
    journal = Journal()
    plugins = [
        plugin_class("provider", journal, provides=["greeter"]),
        plugin_class("consumer", journal, requires=["greeter"]),
    ]
    async with Kernel(None, plugins=plugins, environ={}) as kernel:
        mark = journal.mark()
        with pytest.raises(ReloadError, match="greeter"):
            await kernel.reload({"plugins": {"provider": {"enabled": False}}})
        assert journal.since(mark) == []
        assert state_of(kernel) == {"consumer": PluginState.RUNNING, "provider": PluginState.RUNNING}


@pytest.mark.anyio
async def test_replacing_a_provider_with_another_keeps_the_consumer_running() -> None:
    journal = Journal()
    plugins = [
        plugin_class("old_provider", journal, provides=["greeter"]),
        plugin_class("new_provider", journal, provides=["greeter"]),
        plugin_class("consumer", journal, requires=["greeter"]),
    ]
    config = {"plugins": {"new_provider": {"enabled": False}}}
    async with Kernel(config, plugins=plugins, environ={}) as kernel:
        report = await kernel.reload({"plugins": {"old_provider": {"enabled": False}}})
        assert report.started == ("new_provider",)
        assert report.stopped == ("old_provider",)
        assert report.unchanged == ("consumer",)
        consumer = only(journal.instances("consumer", "start"))
        assert isinstance(consumer, Restartable)
        provider = consumer.ctx.service("greeter")
        assert isinstance(provider, Restartable)
        assert provider.name == "new_provider"


@pytest.mark.anyio
async def test_new_plugin_timing_out_under_its_reloaded_start_timeout_rolls_back() -> None:
    journal = Journal()
    plugins = [plugin_class("a", journal), plugin_class("slow", journal)]
    async with Kernel({"plugins": {"slow": {"enabled": False}}}, plugins=plugins, environ={}) as kernel:
        began = time.perf_counter()
        new_config = {"plugins": {"slow": {"enabled": True, "start_timeout": 0.2, "settings": {"start_delay": 10}}}}
        with pytest.raises(ReloadError, match=r"0\.2s"):
            await kernel.reload(new_config)
        assert time.perf_counter() - began < 2.0
        assert kernel.plugins["a"].state is PluginState.RUNNING
        assert kernel.plugins["slow"].state is not PluginState.RUNNING


@pytest.mark.anyio
async def test_new_plugin_timing_out_under_the_reloaded_kernel_start_timeout_rolls_back() -> None:
    journal = Journal()
    plugins = [plugin_class("a", journal), plugin_class("slow", journal)]
    initial = {"kernel": {"start_timeout": 1.0}, "plugins": {"slow": {"enabled": False}}}
    async with Kernel(initial, plugins=plugins, environ={}) as kernel:
        new_config = {
            "kernel": {"start_timeout": 0.2},
            "plugins": {"slow": {"enabled": True, "settings": {"start_delay": 2}}},
        }
        with pytest.raises(ReloadError, match=r"0\.2s"):
            await kernel.reload(new_config)


@pytest.mark.anyio
async def test_reload_outside_async_with_is_a_runtime_error() -> None:
    kernel = Kernel(None, plugins=[plugin_class("a", Journal())], environ={})
    with pytest.raises(RuntimeError, match="running kernel"):
        await kernel.reload({})


@pytest.mark.anyio
async def test_reload_after_the_kernel_exited_is_a_runtime_error() -> None:
    kernel = Kernel(None, plugins=[plugin_class("a", Journal())], environ={})
    async with kernel:
        pass
    with pytest.raises(RuntimeError, match="running kernel"):
        await kernel.reload({})


# -- the kernel config and the report ----------------------------------------------------------


@pytest.mark.anyio
async def test_reloaded_kernel_settings_are_in_force() -> None:
    async with Kernel(None, plugins=[plugin_class("a", Journal())], environ={}) as kernel:
        await kernel.reload({"kernel": {"stop_timeout": 3.5, "start_timeout": 4}})
        assert kernel.config.kernel.stop_timeout == 3.5
        assert kernel.config.kernel.start_timeout == 4.0


@pytest.mark.anyio
async def test_plugin_started_by_reload_gets_its_data_dir_under_the_new_kernel_data_dir(tmp_path: Path) -> None:
    class Keeper(Plugin):
        name = "keeper"

        async def start(self, ctx: PluginContext[Any]) -> None:
            self.data_dir = ctx.data_dir

    keeper = Keeper()
    config = {"kernel": {"data_dir": str(tmp_path / "old")}, "plugins": {"keeper": {"enabled": False}}}
    async with Kernel(config, plugins=[keeper], environ={}) as kernel:
        await kernel.reload({"kernel": {"data_dir": str(tmp_path / "new")}})
        assert kernel.config.kernel.data_dir == str(tmp_path / "new")
        assert keeper.data_dir == tmp_path / "new" / "keeper"


@pytest.mark.anyio
async def test_reload_report_lists_every_kind_of_change() -> None:
    journal = Journal()
    plugins = [
        plugin_class("same", journal),
        plugin_class("added", journal),
        plugin_class("removed", journal),
        plugin_class("restarted", journal),
        plugin_class("retuned", journal, Reconfigurable),
        plugin_class("still_off", journal),
    ]
    initial = {"plugins": {"added": {"enabled": False}, "still_off": {"enabled": False}}}
    async with Kernel(initial, plugins=plugins, environ={}) as kernel:
        report = await kernel.reload(
            {
                "plugins": {
                    "removed": {"enabled": False},
                    "still_off": {"enabled": False},
                    "restarted": {"settings": {"greeting": "again"}},
                    "retuned": {"settings": {"greeting": "tuned"}},
                }
            }
        )
        assert report == ReloadReport(
            started=("added",),
            stopped=("removed",),
            restarted=("restarted",),
            reconfigured=("retuned",),
            unchanged=("same",),
        )
        final = state_of(kernel)
        assert final.pop("removed") is not PluginState.RUNNING
        assert final == {
            "added": PluginState.RUNNING,
            "restarted": PluginState.RUNNING,
            "retuned": PluginState.RUNNING,
            "same": PluginState.RUNNING,
            "still_off": PluginState.DISCOVERED,
        }


@pytest.mark.anyio
async def test_reload_report_is_empty_with_no_plugins() -> None:
    async with Kernel(None, environ={}, entry_points=False) as kernel:
        assert await kernel.reload({}) == EMPTY_REPORT


@pytest.mark.anyio
async def test_reload_accepts_a_config_file_path(tmp_path: Path) -> None:
    journal = Journal()
    path = tmp_path / "next.toml"
    path.write_text('[plugins.a.settings]\ngreeting = "from file"\n')
    async with Kernel(None, plugins=[plugin_class("a", journal)], environ={}) as kernel:
        report = await kernel.reload(path)
        assert report.restarted == ("a",)
        assert await kernel.invoke("a.greet") == "from file from a"


@pytest.mark.anyio
async def test_reload_reads_environment_overrides_like_the_kernel_did() -> None:
    journal = Journal()
    environ = {"ORION__PLUGINS__A__SETTINGS__GREETING": "from env"}
    async with Kernel(None, plugins=[plugin_class("a", journal)], environ=environ) as kernel:
        assert await kernel.invoke("a.greet") == "from env from a"
        report = await kernel.reload({})
        assert report.unchanged == ("a",)


@pytest.mark.anyio
async def test_disabled_plugin_context_can_no_longer_spawn() -> None:
    journal = Journal()

    async def task() -> None:
        pass

    async with Kernel(None, plugins=[plugin_class("a", journal)], environ={}) as kernel:
        instance = only(journal.instances("a", "start"))
        assert isinstance(instance, Restartable)
        await kernel.reload({"plugins": {"a": {"enabled": False}}})
        with pytest.raises(PluginError, match="stopped"):
            instance.ctx.spawn(task)


# -- sync apps -------------------------------------------------------------------------------


def test_blocking_kernel_invokes_and_reloads() -> None:
    journal = Journal()
    plugins = [plugin_class("a", journal), plugin_class("b", journal)]
    with Kernel.start_blocking({"plugins": {"b": {"enabled": False}}}, plugins=plugins, environ={}) as kernel:
        assert kernel.invoke("a.greet") == "hello from a"
        report = kernel.reload({"plugins": {"a": {"settings": {"greeting": "sync"}}}})
        assert report == ReloadReport(started=("b",), stopped=(), restarted=("a",), reconfigured=(), unchanged=())
        assert kernel.invoke("a.greet") == "sync from a"
        assert kernel.invoke("b.greet") == "hello from b"
        assert kernel.plugins["b"].state is PluginState.RUNNING
    assert len(journal.instances("a", "stop")) == 2
    assert len(journal.instances("b", "stop")) == 1


def test_blocking_kernel_reload_errors_reach_the_caller() -> None:
    journal = Journal()
    with Kernel.start_blocking(None, plugins=[plugin_class("a", journal)], environ={}) as kernel:
        with pytest.raises(ReloadError):
            kernel.reload({"plugins": {"a": {"settings": {"fail_start": True}}}})
        with pytest.raises(ConfigError):
            kernel.reload({"kernel": {"strict": "yes"}})
        assert kernel.invoke("a.greet") == "hello from a"
