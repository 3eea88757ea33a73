"""An authenticated, authorized, audited invoke against a bare one, in one process.

Baseline: ``kernel.invoke`` of the same trivial operation with no middleware.
Ours: the same call with an API key through auth + rbac + audit (fsync off),
the real plugins configured as an operator would.  Where the time goes is
printed by adding one plugin at a time.  Goal: <= 3x.

Run: python benchmarks/bench_security_invoke.py
"""

from __future__ import annotations

import base64
import contextlib
import functools
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from _common import per_await_ns
from _common import report

from kernel import Kernel
from plugin_sdk import OPERATOR
from plugin_sdk import Credentials
from plugin_sdk import Invocation
from plugin_sdk import Plugin
from plugin_sdk import PluginContext


class Tools(Plugin):
    name = "tools"
    version = "1.0.0"

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.register_operation("tools.echo", self.echo)

    async def echo(self, inv: Invocation) -> object:
        return inv.args


def config(data: Path, layers: tuple[str, ...]) -> dict[str, Any]:
    plugins: dict[str, Any] = {"secrets": {"enabled": True}}
    if "auth" in layers:
        plugins["auth"] = {"enabled": True}
    if "rbac" in layers:
        plugins["rbac"] = {"enabled": True, "settings": {"roles": {"agent": {"allow": ["tools.*"]}}}}
    if "audit" in layers:
        plugins["audit"] = {"enabled": True, "settings": {"fsync": "never"}}
    return {"kernel": {"data_dir": str(data)}, "plugins": plugins}


async def burst(call: Any, count: int) -> tuple[int, int, float]:
    """``count`` calls at once (each in its own task); (succeeded, failed, seconds)."""
    outcome = {"ok": 0, "errors": 0}

    async def one() -> None:
        try:
            await call()
        except Exception:
            outcome["errors"] += 1
        else:
            outcome["ok"] += 1

    began = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(count):
            group.start_soon(one)
    return outcome["ok"], outcome["errors"], time.perf_counter() - began


async def main() -> None:
    os.environ.setdefault("ORION_SECRETS_KEY", base64.b64encode(os.urandom(32)).decode())
    number, rounds = 5_000, 9
    args = {"q": 1}
    steps: list[tuple[str, ...]] = [(), ("auth",), ("auth", "rbac"), ("auth", "rbac", "audit")]
    samples: dict[tuple[str, ...], list[float]] = {layers: [] for layers in steps}
    with tempfile.TemporaryDirectory() as tmp:
        async with contextlib.AsyncExitStack() as stack:
            calls = {}
            for index, layers in enumerate(steps):
                if not layers:
                    kernel = Kernel({}, plugins=[Tools()], environ={}, entry_points=False)
                    await stack.enter_async_context(kernel)
                    calls[layers] = functools.partial(kernel.invoke, "tools.echo", args)
                    continue
                kernel = Kernel(config(Path(tmp) / str(index), layers), plugins=[Tools()])
                await stack.enter_async_context(kernel)
                created = await kernel.invoke(
                    "auth.keys.create", {"principal": "bench", "roles": ["agent"]}, principal=OPERATOR
                )
                creds = Credentials.api_key(created["key"])
                calls[layers] = functools.partial(kernel.invoke, "tools.echo", args, credentials=creds)
            # Interleaved rounds, median per configuration: the VM's speed drifts between runs.
            for _ in range(rounds):
                for layers in steps:
                    samples[layers].append(await per_await_ns(calls[layers], number, repeat=1))
            concurrent = await burst(calls[("auth", "rbac", "audit")], 1000)
    figures = {layers: statistics.median(values) for layers, values in samples.items()}
    base, full = figures[()], figures[("auth", "rbac", "audit")]
    report(
        "authenticated invoke (API key + rbac + audit, fsync off) vs bare kernel.invoke, same process",
        [
            ("invoke with auth (API key)", figures[("auth",)], base, None),
            ("invoke with auth + rbac", figures[("auth", "rbac")], base, None),
            ("invoke with auth + rbac + audit", full, base, 3.0),
        ],
    )
    print("# where the time goes (added per call):")
    for previous, layers in itertools.pairwise(steps):
        print(f"#   {layers[-1]:<6} +{(figures[layers] - figures[previous]) / 1000:6.2f} us")
    print(f"# throughput: {1e9 / full:,.0f} invokes/s secured vs {1e9 / base:,.0f} bare (one task)")
    ok, errors, seconds = concurrent
    print(
        f"# 1,000 concurrent authenticated invokes: {ok} ok, {errors} errors, "
        f"{seconds * 1000:.1f} ms ({ok / seconds:,.0f} invokes/s)"
    )


if __name__ == "__main__":
    anyio.run(main)
