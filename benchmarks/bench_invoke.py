"""The invoke pipeline against a raw pluggy 1-impl call, in one process.

kernel.invoke with no middleware (goal <= 2x) and with 5 no-op middleware
(goal <= 4x), each against ``pm.hook.x(x=1)`` with one impl.

Run: python benchmarks/bench_invoke.py
"""

from __future__ import annotations

import anyio
from _common import per_await_ns
from _common import per_call_ns
from _common import report
from bench_dispatch import raw_pluggy

from kernel import Kernel
from plugin_sdk import Invocation
from plugin_sdk import Phase
from plugin_sdk import Plugin


class Tools(Plugin):
    name = "tools"
    version = "1.0.0"

    async def start(self, ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.register_operation("tools.echo", self.echo)

    async def echo(self, inv: Invocation) -> object:
        return inv.args


def middleware_plugin(index: int) -> Plugin:
    class NoOp(Plugin):
        name = f"mw{index}"
        version = "1.0.0"

        async def start(self, ctx) -> None:  # type: ignore[no-untyped-def]
            async def passthrough(inv: Invocation, call_next):  # type: ignore[no-untyped-def]
                return await call_next(inv)

            ctx.register_middleware(passthrough, phase=Phase.TRANSFORM)

    return NoOp()


async def main() -> None:
    hook = raw_pluggy(1)
    base = per_call_ns(lambda: hook(x=1), 100_000)
    args = {"q": 1}
    rows = []
    bare = Kernel({}, plugins=[Tools()], environ={}, entry_points=False)
    five = Kernel({}, plugins=[Tools()] + [middleware_plugin(i) for i in range(5)], environ={}, entry_points=False)
    async with bare, five:
        assert len(five.middleware_order()) == 5
        ours = await per_await_ns(lambda: bare.invoke("tools.echo", args), 100_000)
        rows.append(("kernel.invoke, no middleware vs raw pluggy 1 impl", ours, base, 2.0))
        ours5 = await per_await_ns(lambda: five.invoke("tools.echo", args), 50_000)
        rows.append(("kernel.invoke, 5 no-op middleware vs raw pluggy 1 impl", ours5, base, 4.0))
    report("invoke pipeline (kernel.invoke vs raw pluggy, same process)", rows)


if __name__ == "__main__":
    anyio.run(main)
