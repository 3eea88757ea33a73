"""Plugins that the isolation tests run in worker processes (importable by a fresh process).

Their handlers block, spin and open files on purpose: that is what is being tested.
"""
# ruff: noqa: ASYNC221, ASYNC230, ASYNC251

from __future__ import annotations

import os
import time
from typing import Any

import attrs

from plugin_sdk import Invocation
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import hookimpl
from plugin_sdk import hookspec


class Specs:
    @hookspec()
    def shout(text: str) -> str:
        """Sync.  :param text: what to shout."""
        raise NotImplementedError

    @hookspec(timeout=10)
    async def fetch(key: str) -> str:
        """Async.  :param key: what to fetch."""
        raise NotImplementedError


@attrs.frozen
class EchoSettings:
    greeting: str = "hello"


class Echo(Plugin):
    """Provides a service, registers operations, implements a sync and an async hook."""

    name = "echo"
    version = "1.0.0"
    provides = ("echo",)
    Config = EchoSettings

    async def start(self, ctx: PluginContext[EchoSettings]) -> None:
        self.ctx = ctx
        self.calls = 0
        ctx.provide("echo", self)
        ctx.register_operation("echo.say", self.say, doc="Say something.", example_args={"who": "Ada"})
        ctx.register_operation("echo.pid", self.pid)
        ctx.register_operation("echo.crash", self.crash)
        ctx.register_operation("echo.hang", self.hang)
        ctx.register_operation("echo.fail", self.fail)
        ctx.log.info("echo started in %s", ctx.data_dir)

    async def say(self, inv: Invocation) -> str:
        self.calls += 1
        return f"{self.ctx.settings.greeting}, {inv.args['who']}"

    async def pid(self, inv: Invocation) -> int:
        return os.getpid()

    async def crash(self, inv: Invocation) -> None:
        os._exit(3)

    async def hang(self, inv: Invocation) -> None:
        time.sleep(60)

    async def fail(self, inv: Invocation) -> None:
        raise ValueError("no such thing")

    async def count(self) -> int:
        return self.calls

    @hookimpl
    def shout(self, text: str) -> str:
        if text == "slow":
            time.sleep(30)
        return text.upper()

    @hookimpl
    async def fetch(self, key: str) -> str:
        return f"{self.ctx.settings.greeting}:{key}"


class Consumer(Plugin):
    """Uses the echo service across the boundary."""

    name = "consumer"
    version = "1.0.0"
    requires = ("echo",)

    async def start(self, ctx: PluginContext[Any]) -> None:
        self.ctx = ctx
        ctx.register_operation("consumer.count", self.count)

    async def count(self, inv: Invocation) -> Any:
        return await self.ctx.service("echo").count()


class Misbehaving(Plugin):
    """Does one bad thing per operation, to prove what the kernel does about it."""

    name = "misbehaving"
    version = "1.0.0"
    permissions = ("fs:read:{data_dir}",)

    async def start(self, ctx: PluginContext[Any]) -> None:
        self.ctx = ctx
        for name in ("pid", "env", "read", "garbage", "oversized", "allocate", "spin", "subprocess", "thread_read"):
            ctx.register_operation(f"misbehaving.{name}", getattr(self, name))

    async def pid(self, inv: Invocation) -> int:
        return os.getpid()

    async def env(self, inv: Invocation) -> dict[str, str]:
        return dict(os.environ)

    async def read(self, inv: Invocation) -> str:
        with open(inv.args["path"]) as handle:
            return handle.read()

    def _channel_fd(self) -> int:
        import sys

        return int(sys.argv[sys.argv.index("--fd") + 1])

    async def garbage(self, inv: Invocation) -> None:
        os.write(self._channel_fd(), b"\x00\x00\x00\x05hello")  # a frame that is not JSON

    async def oversized(self, inv: Invocation) -> None:
        os.write(self._channel_fd(), b"\x7f\xff\xff\xff")  # announces a 2 GiB frame

    async def allocate(self, inv: Invocation) -> int:
        hoard = []
        while True:
            hoard.append(bytearray(64 * 1024 * 1024))

    async def spin(self, inv: Invocation) -> None:
        while True:
            pass

    async def subprocess(self, inv: Invocation) -> int:
        import subprocess

        return subprocess.run(["true"], check=False).returncode

    async def thread_read(self, inv: Invocation) -> str:
        import threading

        found: list[object] = []

        def work() -> None:
            try:
                with open(inv.args["path"]) as handle:
                    found.append(handle.read())
            except OSError as exc:
                found.append(f"{type(exc).__name__}: {exc.errno}")

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        return str(found[0])
