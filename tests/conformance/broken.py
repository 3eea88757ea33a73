"""Deliberately broken plugins: each breaks exactly one promise, named by its ``breaks``.

They live in an importable module (not in a test function) so that the checks
that need a fresh process — process isolation, optional imports — can load them.
"""
# ruff: noqa: ASYNC230, ASYNC251, RUF012

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import anyio
import anyio.lowlevel
import attrs

from plugin_sdk import CallNext
from plugin_sdk import CliCommand
from plugin_sdk import Invocation
from plugin_sdk import PermissionDenied
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import hookimpl


@attrs.frozen
class Settings:
    greeting: str = "hello"


class Good(Plugin):
    """Keeps every promise: the base the broken ones change one thing of."""

    name = "good"
    version = "1.0.0"
    sdk = ">=0.1"
    Config = Settings
    breaks: str | None = None

    async def start(self, ctx: PluginContext[Settings]) -> None:
        self.ctx = ctx
        ctx.register_operation("good.greet", self.greet, example_args={"who": "Ada"})

    async def greet(self, inv: Invocation) -> str:
        return f"{self.ctx.settings.greeting}, {inv.args['who']}"


class SdkOutOfRange(Good):
    name = "sdk_out_of_range"
    breaks = "manifest.sdk_range"
    sdk = ">=99"


class BadManifest(Good):
    name = "Not Valid"
    breaks = "manifest.valid"


def _exclaim(value: str) -> str:
    return value + "!"


@attrs.frozen
class DriftingSettings:
    #: each structuring adds a "!": what is written back is not what was read
    greeting: str = attrs.field(default="hello", converter=_exclaim)


class NoRoundTrip(Good):
    name = "no_round_trip"
    breaks = "config.defaults"
    Config = DriftingSettings


class UncheckedSettings(Good):
    name = "unchecked_settings"
    breaks = "config.rejects_bad"
    Config = attrs.make_class(
        "UncheckedSettingsConfig",
        {"greeting": attrs.field(default="hello")},
        frozen=True,
    )
    #: it says it refuses an empty greeting, but it does not check at all
    conformance_bad_settings = [{"greeting": ""}]


class UnknownHook(Good):
    name = "unknown_hook"
    breaks = "hooks.known"

    @hookimpl
    def cli_comands(self) -> list[CliCommand]:  # a typo: no such hookspec
        return []


class WrongArguments(Good):
    name = "wrong_arguments"
    breaks = "hooks.known"

    @hookimpl
    def plugin_state_changed(self, plugin: str, old: Any, new: Any, when: float) -> None:
        pass


class AsyncForSync(Good):
    name = "async_for_sync"
    breaks = "hooks.kind"

    @hookimpl
    async def cli_commands(self) -> list[CliCommand]:  # the spec is sync
        return []


class Unstoppable(Good):
    name = "unstoppable"
    breaks = "lifecycle.start_stop"

    async def start(self, ctx: PluginContext[Settings]) -> None:
        await super().start(ctx)
        self.stopped = False

    async def stop(self) -> None:
        if self.stopped:
            raise RuntimeError("already stopped")
        self.stopped = True


class FdLeaker(Good):
    name = "fd_leaker"
    breaks = "lifecycle.no_leaks"

    async def greet(self, inv: Invocation) -> str:
        if not hasattr(self, "pipe"):
            self.pipe = os.pipe()  # opened on the first call, never closed
        return await super().greet(inv)


class UndeclaredService(Good):
    name = "undeclared_service"
    breaks = "services.declared"

    async def start(self, ctx: PluginContext[Settings]) -> None:
        await super().start(ctx)
        try:
            ctx.service("metrics")  # not in requires or optional
        except PermissionDenied:
            pass


class NotAnHttpService:
    def mounts(self, verbose: bool) -> dict[str, str]:  # needs an argument the Protocol does not pass
        return {}


class BadProvider(Good):
    name = "bad_provider"
    breaks = "services.protocols"
    provides = ("http",)

    async def start(self, ctx: PluginContext[Settings]) -> None:
        await super().start(ctx)
        ctx.provide("http", NotAnHttpService())


class FailingOperation(Good):
    name = "failing_operation"
    breaks = "operations.callable"

    async def greet(self, inv: Invocation) -> str:
        raise ValueError("no greeting today")


class Snoop(Good):
    name = "snoop"
    breaks = "permissions.used"

    async def start(self, ctx: PluginContext[Settings]) -> None:
        await super().start(ctx)
        try:
            with open("/etc/hostname", "rb") as file:  # it asks for no fs permission
                file.read()
        except OSError:
            pass  # refused outright when isolated


class OrphanOnCancelledStart(Good):
    name = "orphan_on_cancelled_start"
    breaks = "cancellation.start"

    async def start(self, ctx: PluginContext[Settings]) -> None:
        self.task = asyncio.get_running_loop().create_task(asyncio.sleep(3600), name="orphan")
        await anyio.lowlevel.checkpoint()  # cancelled here, start never cleans up the task
        await super().start(ctx)

    async def stop(self) -> None:
        self.task.cancel()


class OrphanOnCancelledCall(Good):
    name = "orphan_on_cancelled_call"
    breaks = "cancellation.calls"

    async def greet(self, inv: Invocation) -> str:
        task = asyncio.get_running_loop().create_task(asyncio.sleep(3600), name="orphan")
        await anyio.sleep(0.001)  # cancelled here, the task is never cancelled
        task.cancel()
        return await super().greet(inv)


class LoopBlocker(Good):
    name = "loop_blocker"
    breaks = "loop.not_blocked"

    async def greet(self, inv: Invocation) -> str:
        time.sleep(0.25)  # blocks the event loop
        return await super().greet(inv)


class InProcessOnly(Good):
    name = "in_process_only"
    breaks = "isolation.process"

    async def start(self, ctx: PluginContext[Settings]) -> None:
        await super().start(ctx)
        ctx.register_middleware(self.middleware)  # middleware cannot cross a process boundary

    async def middleware(self, inv: Invocation, call_next: CallNext) -> Any:
        return await call_next(inv)


#: every broken plugin of this module and of its siblings
BROKEN: list[type[Good]] = [
    cls for cls in list(globals().values()) if isinstance(cls, type) and issubclass(cls, Good) and cls.breaks
]
