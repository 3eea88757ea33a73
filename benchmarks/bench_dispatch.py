"""Hook dispatch: the kernel against raw pluggy on the same hook, in one process.

Sync: kernel dispatch with a dispatch observer attached vs raw pluggy (goal <= 1.2x).
Async: kernel async dispatch with the deadline enforced vs raw pluggy *sync*
dispatch of the same number of impls (goal <= 2x).

Run: python benchmarks/bench_dispatch.py
"""

from __future__ import annotations

import anyio
import pluggy
from _common import per_await_ns
from _common import per_call_ns
from _common import report

from kernel import Kernel
from plugin_sdk import Plugin
from plugin_sdk import hookimpl
from plugin_sdk import hookspec


class Specs:
    @hookspec(policy="isolate")
    def compute(x: int) -> int:  # type: ignore[misc]
        """Sync benchmark hook.  :param x: a number."""
        raise NotImplementedError

    @hookspec(policy="isolate", timeout=5.0)
    async def acompute(x: int) -> int:  # type: ignore[misc]
        """Async benchmark hook with a deadline.  :param x: a number."""
        raise NotImplementedError


def make_plugin(index: int) -> Plugin:
    class Impl(Plugin):
        name = f"impl{index}"
        version = "1.0.0"

        @hookimpl
        def compute(self, x: int) -> int:
            return x

        @hookimpl
        async def acompute(self, x: int) -> int:
            return x

    return Impl()


class NullObserver:
    def on_hook(self, hook: str, plugin: str, duration: float, outcome: str) -> None:
        pass

    def on_invoke(self, operation: str, duration: float, outcome: str) -> None:
        pass


class Observing(Plugin):
    name = "observing"
    version = "1.0.0"

    async def start(self, ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.add_dispatch_observer(NullObserver())


def raw_pluggy(n: int) -> pluggy.HookCaller:
    spec_marker = pluggy.HookspecMarker("raw")
    impl_marker = pluggy.HookimplMarker("raw")

    class RawSpecs:
        @spec_marker
        def compute(self, x: int) -> int:  # type: ignore[empty-body]
            ...

    pm = pluggy.PluginManager("raw")
    pm.add_hookspecs(RawSpecs)
    for index in range(n):

        class RawImpl:
            @impl_marker
            def compute(self, x: int) -> int:
                return x

        pm.register(RawImpl(), name=f"raw{index}")
    return pm.hook.compute


async def main() -> None:
    rows = []
    for n in (1, 10):
        plain = Kernel(
            {}, plugins=[make_plugin(i) for i in range(n)], hookspecs=[Specs], environ={}, entry_points=False
        )
        observed = Kernel(
            {},
            plugins=[make_plugin(i) for i in range(n)] + [Observing()],
            hookspecs=[Specs],
            environ={},
            entry_points=False,
        )
        hook = raw_pluggy(n)
        async with plain, observed:
            number = 100_000 if n == 1 else 30_000
            spec = Specs.compute
            base = per_call_ns(lambda: hook(x=1), number)
            ours_plain = per_call_ns(lambda: plain.hooks.call(spec, x=1), number)
            ours_observed = per_call_ns(lambda: observed.hooks.call(spec, x=1), number)
            rows.append((f"sync dispatch, {n} impl(s), no observer vs raw pluggy", ours_plain, base, None))
            rows.append((f"sync dispatch, {n} impl(s), observer attached vs raw pluggy", ours_observed, base, 1.2))
            aspec = Specs.acompute
            ours_async = await per_await_ns(lambda: plain.hooks.call(aspec, x=1), number)
            ours_async_obs = await per_await_ns(lambda: observed.hooks.call(aspec, x=1), number)
            rows.append((f"async dispatch + deadline, {n} impl(s) vs raw pluggy sync", ours_async, base, 2.0))
            rows.append((f"async dispatch + deadline + observer, {n} impl(s) vs pluggy", ours_async_obs, base, None))

    async def one_await() -> int:
        return 1

    async def with_fail_after() -> int:
        with anyio.fail_after(5):
            return await one_await()

    base = per_call_ns(lambda: raw_pluggy_1(x=1), 100_000)
    scoped = await per_await_ns(with_fail_after, 50_000)
    rows.append(("for reference: anyio.fail_after around one await vs pluggy", scoped, base, None))
    report("hook dispatch (kernel vs raw pluggy, same process)", rows)


raw_pluggy_1 = raw_pluggy(1)

if __name__ == "__main__":
    anyio.run(main)
