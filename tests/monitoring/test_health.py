"""The ``health`` plugin: liveness, readiness from plugin states and check_health, bounded by the deadline."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from builtin_plugins.http import HttpServer
from builtin_plugins.monitoring.health import Health
from kernel import Kernel
from plugin_sdk import HealthStatus
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginState
from plugin_sdk import hookimpl

pytestmark = pytest.mark.anyio


class Fine(Plugin):
    name = "fine"
    version = "1.0.0"

    @hookimpl
    async def check_health(self) -> HealthStatus:
        return HealthStatus(ok=True, reason="all good")


class Quiet(Plugin):
    """Answers None: nothing to report counts as ok."""

    name = "quiet"
    version = "1.0.0"

    @hookimpl
    async def check_health(self) -> None:
        return None


class Degraded(Plugin):
    name = "degraded"
    version = "1.0.0"

    @hookimpl
    async def check_health(self) -> HealthStatus:
        return HealthStatus(ok=False, reason="database unreachable")


class Hanging(Plugin):
    name = "hanging"
    version = "1.0.0"

    @hookimpl
    async def check_health(self) -> HealthStatus:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")


class Raising(Plugin):
    name = "raising"
    version = "1.0.0"

    @hookimpl
    async def check_health(self) -> HealthStatus:
        raise RuntimeError("probe exploded")


class Broken(Plugin):
    name = "broken"
    version = "1.0.0"

    async def start(self, ctx: PluginContext[Any]) -> None:
        raise RuntimeError("cannot reach the backend")


def config(**kernel: Any) -> dict[str, Any]:
    return {"kernel": kernel, "plugins": {"http": {"permissions": ["net:listen:127.0.0.1:*"], "settings": {"port": 0}}}}


@asynccontextmanager
async def serving(*plugins: Plugin, **kernel: Any) -> AsyncIterator[tuple[Kernel, httpx.AsyncClient]]:
    http = HttpServer()
    async with (
        Kernel(config(**kernel), plugins=[http, Health(), *plugins], environ={}) as k,
        httpx.AsyncClient(base_url=http.base_url, timeout=5.0, trust_env=False) as web,
    ):
        yield k, web


async def test_live_and_ready_when_everything_runs() -> None:
    with anyio.fail_after(10):
        async with serving(Fine(), Quiet()) as (_, web):
            live = await web.get("/health/live")
            assert live.status_code == 200
            assert live.json() == {"status": "ok"}
            assert live.headers["cache-control"] == "no-store"

            ready = await web.get("/health/ready")
            assert ready.status_code == 200
            assert ready.json() == {
                "status": "ready",
                "plugins": {
                    "fine": {"state": "running", "ok": True, "reason": "all good"},
                    "health": {"state": "running", "ok": True, "reason": ""},
                    "http": {"state": "running", "ok": True, "reason": f"serving on {web.base_url}".rstrip("/")},
                    "quiet": {"state": "running", "ok": True, "reason": ""},
                },
            }
            assert (await web.get("/")).json()["/health"] == {"plugin": "health", "title": "Health"}
            assert (await web.get("/health/nope")).status_code == 404
            assert (await web.get("/health/live/", follow_redirects=False)).status_code == 404  # no redirect
            refused = await web.post("/health/live")
            assert (refused.status_code, refused.headers["allow"]) == (405, "GET, HEAD")
            head = await web.head("/health/ready")
            assert (head.status_code, head.content, head.headers["cache-control"]) == (200, b"", "no-store")


async def test_not_ready_when_an_enabled_plugin_failed_to_start() -> None:
    with anyio.fail_after(10):
        async with serving(Fine(), Broken()) as (k, web):
            assert k.plugins["broken"].state is PluginState.FAILED
            ready = await web.get("/health/ready")
            assert ready.status_code == 503
            body = ready.json()
            assert body["status"] == "not_ready"
            assert body["plugins"]["broken"]["state"] == "failed"
            assert body["plugins"]["broken"]["ok"] is False
            assert "cannot reach the backend" in body["plugins"]["broken"]["reason"]
            assert body["plugins"]["fine"]["ok"] is True
            assert (await web.get("/health/live")).status_code == 200  # liveness asks no plugin


async def test_a_hanging_check_is_reported_as_timed_out_within_the_configured_bound() -> None:
    with anyio.fail_after(10):
        async with serving(Hanging(), Fine(), hook_timeouts={"check_health": 0.2}) as (_, web):
            began = time.perf_counter()
            ready = await web.get("/health/ready")
            elapsed = time.perf_counter() - began
            assert elapsed < 2.0
            assert ready.status_code == 503
            plugins = ready.json()["plugins"]
            assert plugins["hanging"] == {
                "state": "running",
                "ok": False,
                "reason": "health check timed out after 0.2s",
            }
            assert plugins["fine"]["ok"] is True  # the others were asked concurrently and answered


async def test_a_failing_or_unhealthy_check_makes_the_kernel_not_ready() -> None:
    with anyio.fail_after(10):
        async with serving(Raising(), Degraded()) as (_, web):
            ready = await web.get("/health/ready")
            assert ready.status_code == 503
            plugins = ready.json()["plugins"]
            assert plugins["raising"]["ok"] is False
            assert plugins["raising"]["reason"] == "health check failed: RuntimeError: probe exploded"
            assert plugins["degraded"] == {"state": "running", "ok": False, "reason": "database unreachable"}


async def test_the_operation_works_without_http_and_skips_disabled_plugins() -> None:
    plugins = [Health(), Fine(), Degraded()]
    with anyio.fail_after(10):
        async with Kernel({"plugins": {"degraded": {"enabled": False}}}, plugins=plugins, environ={}) as k:
            report = await k.invoke("health.ready")
            assert report == {
                "status": "ready",
                "plugins": {
                    "fine": {"state": "running", "ok": True, "reason": "all good"},
                    "health": {"state": "running", "ok": True, "reason": ""},
                },
            }


async def test_the_operation_reports_a_timeout_too() -> None:
    plugins = [Health(), Hanging()]
    with anyio.fail_after(10):
        async with Kernel({"kernel": {"hook_timeouts": {"check_health": 0.2}}}, plugins=plugins, environ={}) as k:
            began = time.perf_counter()
            report = await k.invoke("health.ready")
            assert time.perf_counter() - began < 2.0
            assert report["status"] == "not_ready"
            assert report["plugins"]["hanging"]["reason"] == "health check timed out after 0.2s"
