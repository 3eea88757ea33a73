"""The conformance suite (plugin_sdk.testing): builtin plugins pass; each broken plugin fails its check."""

from __future__ import annotations

import threading
from importlib.metadata import entry_points
from typing import Any

import anyio
import attrs
import pytest

from plugin_sdk import Invocation
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk.testing import CHECKS
from plugin_sdk.testing import Status
from plugin_sdk.testing import UnknownCheck
from plugin_sdk.testing import run_conformance

BUILTIN = sorted(ep.name for ep in entry_points(group="orion_kernel.plugins") if ep.value.startswith("builtin_plugins"))


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_plugin_passes(name: str) -> None:
    [ep] = [ep for ep in entry_points(group="orion_kernel.plugins") if ep.name == name]
    settings = {"port": 0} if name == "http" else None
    report = run_conformance(ep.load(), settings=settings)
    assert report.ok, [(r.id, r.reason) for r in report.failures()]
    assert {r.id for r in report.results} == set(CHECKS)


@attrs.frozen
class Settings:
    greeting: str = "hello"


class Good(Plugin):
    name = "good"
    version = "1.0.0"
    Config = Settings

    async def start(self, ctx: PluginContext[Settings]) -> None:
        self.ctx = ctx
        ctx.register_operation("good.greet", self.greet, example_args={"who": "Ada"})

    async def greet(self, inv: Invocation) -> str:
        return f"{self.ctx.settings.greeting}, {inv.args['who']}"


def statuses(target: Any, **kwargs: Any) -> dict[str, Status]:
    return {r.id: r.status for r in run_conformance(target, **kwargs).results}


def test_a_good_plugin_passes_every_check() -> None:
    assert set(statuses(Good).values()) == {Status.PASS}


class BadManifest(Good):
    name = "Not Valid"


class Unstoppable(Good):
    name = "unstoppable"
    stopped = 0

    async def stop(self) -> None:
        type(self).stopped += 1
        if type(self).stopped > 2:
            raise RuntimeError("stopped twice")


class ThreadLeaker(Good):
    name = "thread_leaker"

    async def start(self, ctx: PluginContext[Settings]) -> None:
        await super().start(ctx)
        self.stop_event = threading.Event()
        threading.Thread(target=self.stop_event.wait, args=(5,), name="leaked").start()


class FailingOperation(Good):
    name = "failing_operation"

    async def greet(self, inv: Invocation) -> str:
        raise ValueError("no greeting today")


class NoStart(Good):
    name = "no_start"

    async def start(self, ctx: PluginContext[Settings]) -> None:
        raise RuntimeError("cannot start")


@pytest.mark.parametrize(
    ("plugin", "failed"),
    [
        (BadManifest, "manifest.valid"),
        (Unstoppable, "lifecycle.start_stop"),
        (ThreadLeaker, "lifecycle.no_leaks"),
        (FailingOperation, "operations.callable"),
    ],
)
def test_each_broken_plugin_fails_exactly_its_check(plugin: type[Plugin], failed: str) -> None:
    found = statuses(plugin)
    assert [check for check, status in found.items() if status is Status.FAIL] == [failed]
    for leaked in threading.enumerate():
        if leaked.name == "leaked":
            leaked.join(6)


def test_a_plugin_that_cannot_start_fails_start_stop() -> None:
    found = statuses(NoStart)
    assert found["lifecycle.start_stop"] is Status.FAIL
    assert found["manifest.valid"] is Status.PASS


def test_bad_example_settings_fail_the_defaults_check() -> None:
    report = run_conformance(Good, settings={"greeting": 5})
    assert report.by_id()["config.defaults"].status is Status.FAIL
    assert "plugins.good.settings.greeting" in report.by_id()["config.defaults"].reason


def test_opt_outs_need_a_known_check_and_a_reason() -> None:
    report = run_conformance(ThreadLeaker, opt_out={"lifecycle.no_leaks": "the thread ends on its own within 5 s"})
    assert report.ok
    assert report.by_id()["lifecycle.no_leaks"].reason.startswith("opted out: ")
    with pytest.raises(UnknownCheck, match=r"lifecycle\.no_leak"):
        run_conformance(Good, opt_out={"lifecycle.no_leak": "typo"})
    with pytest.raises(ValueError, match="needs a written reason"):
        run_conformance(Good, opt_out={"lifecycle.no_leaks": " "})
    with pytest.raises(ValueError, match="strict"):
        run_conformance(Good, opt_out={"lifecycle.no_leaks": "because"}, strict=True)
    for leaked in threading.enumerate():
        if leaked.name == "leaked":
            leaked.join(6)


def test_a_plugin_declares_its_own_example_settings_and_opt_outs() -> None:
    class Declared(Good):
        name = "declared"
        conformance_settings = {"greeting": "hi"}  # noqa: RUF012
        conformance_opt_out = {"operations.callable": "calls a paid API"}  # noqa: RUF012

    report = run_conformance(Declared)
    assert report.ok
    assert report.by_id()["operations.callable"].status is Status.SKIP


def test_it_runs_inside_a_running_loop_too() -> None:
    from plugin_sdk.testing import run_conformance_async

    report = anyio.run(run_conformance_async, Good)
    assert report.ok
