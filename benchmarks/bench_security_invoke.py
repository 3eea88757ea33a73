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
import hashlib
import hmac
import itertools
import mmap
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import orjson
from _common import per_await_ns
from _common import report

from kernel import Kernel
from plugin_sdk import OPERATOR
from plugin_sdk import Credentials
from plugin_sdk import HmacSha256
from plugin_sdk import Invocation
from plugin_sdk import NotAuthenticated
from plugin_sdk import PermissionDenied
from plugin_sdk import Phase
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import Principal

_SHA256 = hashlib.sha256()


class Tools(Plugin):
    name = "tools"
    version = "1.0.0"

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.register_operation("tools.echo", self.echo)

    async def echo(self, inv: Invocation) -> object:
        return inv.args


class Floor(Plugin):
    """The least the issue's constructions cost per call, with nothing else: three
    middlewares (auth, rbac and audit are three plugins) doing only the mandatory work --
    one HMAC-SHA256 of the presented key and a constant-time compare; one dict lookup
    of a decision; one entry serialized with orjson, its HMAC-SHA256, one ``write(2)``
    and the SHA-256 that chains the next entry.  No throttling, expiry, revocation,
    rotation, recovery or error handling: a floor, not an implementation."""

    name = "floor"
    version = "1.0.0"

    def __init__(self, key: str, path: Path, *, mapped: bool = False) -> None:
        self.hasher = HmacSha256(b"k" * 32)
        self.secret = key
        self.stored = self.hasher.digest(key.encode())
        self.principal = Principal(id="bench", kind="user", roles=("agent",))
        self.decisions = {("bench", "tools.echo"): True}
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        # mapped: the line is copied into a shared mapping of the file instead of write(2)
        # (as durable against kill -9: the page cache holds it), the cheapest way there is
        self.map: mmap.mmap | None = None
        self.offset = 0
        if mapped:
            os.ftruncate(self.fd, 1 << 28)
            self.map = mmap.mmap(self.fd, 1 << 28)
        self.prev = "0" * 64
        self.seq = 0

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.register_middleware(self.authenticate, phase=Phase.AUTHENTICATE)
        ctx.register_middleware(self.authorize, phase=Phase.AUTHORIZE)
        ctx.register_middleware(self.audit, phase=Phase.OBSERVE)

    async def stop(self) -> None:
        if self.map is not None:
            self.map.close()
        os.close(self.fd)

    async def authenticate(self, inv: Invocation, call_next: Any) -> Any:
        assert inv.credentials is not None
        if not hmac.compare_digest(self.hasher.digest(inv.credentials.secret.encode()), self.stored):
            raise NotAuthenticated("invalid API key")
        inv.principal = self.principal
        return await call_next(inv)

    async def authorize(self, inv: Invocation, call_next: Any) -> Any:
        assert inv.principal is not None
        if not self.decisions[(inv.principal.id, inv.operation)]:
            raise PermissionDenied("denied")
        return await call_next(inv)

    async def audit(self, inv: Invocation, call_next: Any) -> Any:
        result = await call_next(inv)
        self.seq += 1
        entry = {
            "seq": self.seq,
            "prev": self.prev,
            "ts": time.time(),
            "actor": "bench",
            "outcome": "ok",
            "details": {"operation": inv.operation},
        }
        canonical = orjson.dumps(entry)
        line = canonical[:-1] + b',"mac":"' + self.hasher.hex(canonical) + b'"}\n'
        if self.map is None:
            os.write(self.fd, line)
        else:
            end = self.offset + len(line)
            self.map[self.offset : end] = line
            self.offset = end
        digest = _SHA256.copy()
        digest.update(line)
        self.prev = digest.hexdigest()
        return result


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
    steps: list[tuple[str, ...]] = [
        (),
        ("auth",),
        ("auth", "rbac"),
        ("auth", "rbac", "audit"),
        ("floor",),
        ("floor", "mmap"),
    ]
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
                if layers[0] == "floor":
                    key = "ork_floor_" + "s" * 43
                    floor = Floor(key, Path(tmp) / f"floor{index}.jsonl", mapped="mmap" in layers)
                    kernel = Kernel({}, plugins=[Tools(), floor], environ={}, entry_points=False)
                    await stack.enter_async_context(kernel)
                    creds = Credentials.api_key(key)
                    calls[layers] = functools.partial(kernel.invoke, "tools.echo", args, credentials=creds)
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
    floor, mapped = figures[("floor",)], figures[("floor", "mmap")]
    print(
        f"# the floor (three middlewares doing only the mandatory crypto, one orjson entry and one write(2)): "
        f"{floor / 1000:.2f} us = {floor / base:.2f}x bare; ours is {full / floor:.2f}x the floor"
    )
    print(
        f"# the floor with the write(2) replaced by a copy into a shared mapping: {mapped / 1000:.2f} us = "
        f"{mapped / base:.2f}x bare"
    )
    print("# where the time goes (added per call):")
    for previous, layers in itertools.pairwise(steps[:-2]):
        print(f"#   {layers[-1]:<6} +{(figures[layers] - figures[previous]) / 1000:6.2f} us")
    print(f"# throughput: {1e9 / full:,.0f} invokes/s secured vs {1e9 / base:,.0f} bare (one task)")
    ok, errors, seconds = concurrent
    print(
        f"# 1,000 concurrent authenticated invokes: {ok} ok, {errors} errors, "
        f"{seconds * 1000:.1f} ms ({ok / seconds:,.0f} invokes/s)"
    )


if __name__ == "__main__":
    anyio.run(main)
