"""Plugins for the fault-injection suite: one that misbehaves on demand, one that stays healthy.

Both are defined at module level so that a fresh worker process can import them
(``isolation = "process"``).  The misbehaving code blocks, spins, leaks and
crashes on purpose: that is what is being tested.
"""
# ruff: noqa: ASYNC110, ASYNC221, ASYNC230, ASYNC251

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from typing import Any

import anyio
import attrs

from plugin_sdk import Invocation
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import hookimpl
from plugin_sdk import hookspec


class FaultSpecs:
    @hookspec()
    def poke(how: str) -> str:
        """Sync.  :param how: ``ok``, ``raise`` or ``hang``."""
        raise NotImplementedError

    @hookspec(timeout=0.5)
    async def apoke(how: str) -> str:
        """Async, with a deadline.  :param how: ``ok``, ``raise`` or ``hang``."""
        raise NotImplementedError


@attrs.frozen
class FaultySettings:
    #: ``raise`` or ``hang`` in start() / stop(); empty: behave
    on_start: str = ""
    on_stop: str = ""
    #: what it asks to read and to connect to (its permissions are filled in from these)
    allowed_dir: str = "/nonexistent/orion-faults-allowed"
    allowed_port: int = 9


class Faulty(Plugin):
    """Does one bad thing per operation (or in start/stop, per its settings)."""

    name = "faulty"
    version = "1.0.0"
    permissions = ("fs:read:{allowed_dir}", "net:connect:127.0.0.1:{allowed_port}")
    Config = FaultySettings

    OPERATIONS = (
        "pid",
        "fail",
        "block",
        "leak",
        "leak_stubborn",
        "exit",
        "segfault",
        "allocate",
        "spin",
        "read",
        "connect",
        "subprocess",
        "thread_read",
        "thread_connect",
        "undeclared",
        "garbage",
        "oversized",
    )

    async def start(self, ctx: PluginContext[FaultySettings]) -> None:
        self.ctx = ctx
        (ctx.data_dir / "pid").write_text(str(os.getpid()))
        if ctx.settings.on_start == "raise":
            raise RuntimeError("faulty start")
        if ctx.settings.on_start == "hang":
            await anyio.sleep(3600)
        for name in self.OPERATIONS:
            ctx.register_operation(f"faulty.{name}", getattr(self, name))

    async def stop(self) -> None:
        if self.ctx.settings.on_stop == "raise":
            raise RuntimeError("faulty stop")
        if self.ctx.settings.on_stop == "hang":
            await anyio.sleep(3600)

    # -- hooks -------------------------------------------------------------------------

    @hookimpl
    def poke(self, how: str) -> str:
        if how == "raise":
            raise RuntimeError("faulty sync hook")
        if how == "hang":
            time.sleep(3600)
        return "poked"

    @hookimpl
    async def apoke(self, how: str) -> str:
        if how == "raise":
            raise RuntimeError("faulty async hook")
        if how == "hang":
            await anyio.sleep(3600)
        return "apoked"

    # -- operations ----------------------------------------------------------------------

    async def pid(self, inv: Invocation) -> int:
        return os.getpid()

    async def fail(self, inv: Invocation) -> None:
        raise ValueError("faulty operation")

    async def block(self, inv: Invocation) -> float:
        seconds = float(inv.args.get("seconds", 0.5))
        time.sleep(seconds)  # blocks the event loop it runs on
        return seconds

    async def leak(self, inv: Invocation) -> None:
        async def forever() -> None:
            while True:
                await anyio.sleep(0.01)

        self.ctx.spawn(forever, name="forever")

    async def leak_stubborn(self, inv: Invocation) -> None:
        """A task that, cancelled, keeps going for ``linger`` seconds (shielded) before it ends."""
        linger = float(inv.args.get("linger", 0.3))

        async def stubborn() -> None:
            try:
                await anyio.sleep(3600)
            finally:
                with anyio.CancelScope(shield=True):
                    await anyio.sleep(linger)

        self.ctx.spawn(stubborn, name="stubborn")

    async def exit(self, inv: Invocation) -> None:
        os._exit(7)

    async def segfault(self, inv: Invocation) -> None:
        import ctypes

        ctypes.string_at(0)

    async def allocate(self, inv: Invocation) -> int:
        hoard = []
        while True:
            hoard.append(bytearray(64 * 1024 * 1024))

    async def spin(self, inv: Invocation) -> None:
        while True:
            pass

    async def read(self, inv: Invocation) -> str:
        with open(inv.args["path"]) as handle:
            return handle.read()

    async def connect(self, inv: Invocation) -> str:
        with socket.create_connection(("127.0.0.1", int(inv.args["port"])), timeout=2) as sock:
            return sock.recv(16).decode()

    async def subprocess(self, inv: Invocation) -> int:
        import subprocess

        return subprocess.run([sys.executable, "-c", "pass"], check=False).returncode

    def _in_thread(self, work: Any) -> str:
        found: list[str] = []

        def run() -> None:
            try:
                found.append(str(work()))
            except Exception as exc:
                found.append(f"{type(exc).__name__}: {exc}")

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(5)
        return found[0] if found else "no answer"

    async def thread_read(self, inv: Invocation) -> str:
        def work() -> str:
            with open(inv.args["path"]) as handle:
                return handle.read()

        return self._in_thread(work)

    async def thread_connect(self, inv: Invocation) -> str:
        def work() -> str:
            with socket.create_connection(("127.0.0.1", int(inv.args["port"])), timeout=2) as sock:
                return sock.recv(16).decode()

        return self._in_thread(work)

    async def undeclared(self, inv: Invocation) -> Any:
        return self.ctx.service("undeclared")

    def _channel_fd(self) -> int:
        return int(sys.argv[sys.argv.index("--fd") + 1])

    async def garbage(self, inv: Invocation) -> None:
        os.write(self._channel_fd(), b"\x00\x00\x00\x05hello")  # a frame that is not JSON

    async def oversized(self, inv: Invocation) -> None:
        os.write(self._channel_fd(), b"\x7f\xff\xff\xff")  # announces a 2 GiB frame


@attrs.frozen
class ListenSettings:
    host: str = "127.0.0.1"
    port: int = 47392


class Placeholders(Plugin):
    """Asks for permissions with placeholders filled in from its settings (as the docs' ``http`` plugin does)."""

    name = "placeholders"
    version = "1.0.0"
    permissions = ("net:listen:{host}:{port}",)
    Config = ListenSettings

    async def start(self, ctx: PluginContext[ListenSettings]) -> None:
        ctx.register_operation("placeholders.port", self.port)
        self.ctx = ctx

    async def port(self, inv: Invocation) -> int:
        return self.ctx.settings.port


class Healthy(Plugin):
    """The bystander: its operation must keep answering whatever the faulty plugin does."""

    name = "healthy"
    version = "1.0.0"

    async def start(self, ctx: PluginContext[Any]) -> None:
        self.pings = 0
        ctx.register_operation("healthy.ping", self.ping)

    async def ping(self, inv: Invocation) -> str:
        self.pings += 1
        return "pong"
