"""The in-process guard (kernel.sandbox.guard): what it costs dispatch and a file open.

1. Sync and async hook dispatch, 1 and 10 impls, guard ``enforce`` vs ``off``
   (goal <= 1.3x).  Attribution walks the stack only when an audited event
   happens, so dispatch itself should not change.
2. A file open + read + close from a plugin's hook impl (in its data
   directory: allowed), guard ``enforce`` vs ``off``: the cost of one audited
   event attributed to a plugin and checked (no goal).
3. The same open from application code while the guard is active (the event
   is attributed to nobody), vs no guard (no goal).

Run: python benchmarks/bench_guard.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from _common import per_await_ns
from _common import per_call_ns
from _common import report

from kernel import Kernel
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import hookimpl
from plugin_sdk import hookspec


class Specs:
    @hookspec(policy="isolate")
    def compute(x: int) -> int:
        """Sync benchmark hook.  :param x: a number."""
        raise NotImplementedError

    @hookspec(policy="isolate", timeout=5.0)
    async def acompute(x: int) -> int:
        """Async benchmark hook with a deadline.  :param x: a number."""
        raise NotImplementedError

    @hookspec(firstresult=True)
    def read_note() -> bytes:
        """Read a file of the plugin's data directory."""
        raise NotImplementedError


def make_plugin(index: int) -> Plugin:
    class Impl(Plugin):
        name = f"impl{index}"
        version = "1.0.0"

        async def start(self, ctx: PluginContext[Any]) -> None:
            self.note = ctx.data_dir / "note.txt"
            self.note.write_bytes(b"x" * 64)

        @hookimpl
        def compute(self, x: int) -> int:
            return x

        @hookimpl
        async def acompute(self, x: int) -> int:
            return x

        @hookimpl
        def read_note(self) -> bytes:
            with open(self.note, "rb") as handle:
                return handle.read()

    return Impl()


def kernel(n: int, guard: str, data_dir: str) -> Kernel:
    config = {"kernel": {"data_dir": data_dir, "sandbox": {"guard": guard}}}
    return Kernel(config, plugins=[make_plugin(i) for i in range(n)], hookspecs=[Specs], environ={}, entry_points=False)


async def main(tmp: str) -> None:
    rows = []
    for n in (1, 10):
        off, on = kernel(n, "off", f"{tmp}/off{n}"), kernel(n, "enforce", f"{tmp}/on{n}")
        async with off, on:
            number = 100_000 if n == 1 else 30_000
            base = per_call_ns(lambda: off.hooks.call(Specs.compute, x=1), number)
            ours = per_call_ns(lambda: on.hooks.call(Specs.compute, x=1), number)
            rows.append((f"sync dispatch, {n} impl(s), guard enforce vs off", ours, base, 1.3))
            abase = await per_await_ns(lambda: off.hooks.call(Specs.acompute, x=1), number)
            aours = await per_await_ns(lambda: on.hooks.call(Specs.acompute, x=1), number)
            rows.append((f"async dispatch, {n} impl(s), guard enforce vs off", aours, abase, 1.3))
    off, on = kernel(1, "off", f"{tmp}/off_open"), kernel(1, "enforce", f"{tmp}/on_open")
    async with off, on:
        base = per_call_ns(lambda: off.hooks.call(Specs.read_note), 20_000)
        ours = per_call_ns(lambda: on.hooks.call(Specs.read_note), 20_000)
        rows.append(("plugin opens + reads a 64 B file, guard enforce vs off", ours, base, None))
        assert on.guard is not None and not on.guard.denied()
        path = Path(tmp) / "app.txt"
        path.write_bytes(b"x" * 64)

        def app_read() -> bytes:
            with open(path, "rb") as handle:
                return handle.read()

        guarded = per_call_ns(app_read, 20_000)
    alone = per_call_ns(app_read, 20_000)
    rows.append(("application opens the same file, guard active vs none", guarded, alone, None))
    report("in-process guard (same process)", rows)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(main, tmp)
