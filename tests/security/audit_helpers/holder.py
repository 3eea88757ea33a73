"""Runs a Kernel from a config file (the audit log's writer) until told to quit.

Run: python holder.py CONFIG.toml [--die-before-delete]

Prints ``READY <pid>`` once the kernel has started (it then holds the audit
log's lock), and stops the kernel cleanly on ``quit`` (or EOF) on stdin.  With
``--die-before-delete`` the process exits at once (``os._exit(70)``, no
cleanup: a crash) when it is about to delete a pending file it has just
imported and fsync'd into the chain -- the window a re-import must not
duplicate.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import anyio
import anyio.to_thread

import builtin_plugins.security.audit._plugin as audit_plugin
from kernel import Kernel
from plugin_sdk import Invocation
from plugin_sdk import Plugin
from plugin_sdk import PluginContext


class Tools(Plugin):
    name = "tools"

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.register_operation("tools.echo", self.echo)

    async def echo(self, inv: Invocation) -> Any:
        return dict(inv.args)


def _die(*args: Any, **kwargs: Any) -> None:
    sys.stdout.write("DYING\n")
    sys.stdout.flush()
    os._exit(70)


async def main(config: str, die: bool) -> None:
    if die:
        setattr(audit_plugin, "finish", _die)  # noqa: B010 (a module attribute the plugin looks up per call)
    async with Kernel(config, plugins=[Tools()]):
        print(f"READY {os.getpid()}", flush=True)
        while True:
            line = await anyio.to_thread.run_sync(sys.stdin.readline)
            if not line or line.strip() == "quit":
                break


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], "--die-before-delete" in sys.argv[2:])
