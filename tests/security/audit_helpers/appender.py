"""Appends audit entries in a loop until killed; prints each acknowledged one.

Run: python appender.py DATA_DIR FSYNC

A kernel with the ``audit`` plugin enabled through config (its entry point)
and two plugins passed in code: ``tools`` (an operation to invoke) and
``appender`` (which requires the ``audit`` service, so its test can call
``record()``).  Each loop iteration records one entry and makes one invoke;
after ``record()`` returns it prints ``R <seq>``, after the invoke returns
``I <n>``, and flushes: what is printed is acknowledged.  Every tenth entry
carries a 200 KB detail, so that a SIGKILL can land inside a write.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio

from kernel import Kernel
from plugin_sdk import Invocation
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import Principal


class Tools(Plugin):
    name = "tools"

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.register_operation("tools.echo", self.echo)

    async def echo(self, inv: Invocation) -> Any:
        return inv.args["n"]


class Appender(Plugin):
    name = "appender"
    requires = ("audit",)

    async def start(self, ctx: PluginContext[Any]) -> None:
        self.audit = ctx.service("audit")


async def main(data_dir: str, fsync: str) -> None:
    config = {
        "kernel": {"data_dir": data_dir},
        "plugins": {"audit": {"enabled": True, "settings": {"fsync": fsync, "record_args": True}}},
    }
    appender = Appender()
    async with Kernel(config, plugins=[Tools(), appender], environ={}) as kernel:
        audit = appender.audit
        print("READY", flush=True)
        big = "x" * 200_000
        n = 0
        while True:
            n += 1
            details = {"n": n, "blob": big} if n % 10 == 0 else {"n": n}
            seq = await audit.record("test.tick", actor="appender", outcome="ok", details=details)
            sys.stdout.write(f"R {seq}\n")
            sys.stdout.flush()
            await kernel.invoke("tools.echo", {"n": n}, principal=Principal("looper"))
            sys.stdout.write(f"I {n}\n")
            sys.stdout.flush()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
