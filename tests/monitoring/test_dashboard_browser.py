"""The dashboard in a real headless Chromium, served by the real http plugin.

What only a browser proves: the page's script runs under its own
Content-Security-Policy, fetches ``api/state`` relative to wherever it is
mounted, renders every plugin of the running kernel, and follows invokes
live.  It also proves the page loads nothing from outside the server: every
request the browser makes is recorded and checked.

Debian's ``/usr/bin/chromium`` is driven through Playwright; no browser is
ever downloaded.  Without it the test is skipped, unless
``ORION_REQUIRE_SERVICES=1`` (CI), where a missing browser is a failure.  A
screenshot is left in ``test-artifacts/dashboard.png`` for humans.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from playwright.async_api import Browser
from playwright.async_api import ConsoleMessage
from playwright.async_api import Page
from playwright.async_api import Request
from playwright.async_api import async_playwright

from builtin_plugins.http import HttpServer
from builtin_plugins.monitoring.dashboard import Dashboard
from builtin_plugins.monitoring.health import Health
from builtin_plugins.monitoring.metrics import Metrics
from kernel import Kernel
from plugin_sdk import AlertEvent
from plugin_sdk import Invocation
from plugin_sdk import OperationFailed
from plugin_sdk import Plugin
from plugin_sdk import PluginContext

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    # Nothing but the loopback resolves: an external URL would fail loudly, not leak.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
#: seconds any single wait in the browser may take (the page polls every second)
WAIT_MS = 10_000


class Demo(Plugin):
    """An app's operations: one that answers, one that fails."""

    name = "demo"
    version = "0.4.2"

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.register_operation("demo.echo", self.echo)
        ctx.register_operation("demo.fail", self.fail)

    async def echo(self, inv: Invocation) -> Any:
        await anyio.sleep(0.002)
        return inv.args.get("text")

    async def fail(self, inv: Invocation) -> Any:
        raise RuntimeError("demo failure")


class FiringAlerts(Plugin):
    """Stands in for the alerts plugin with one alert firing, so the page's alert list is exercised."""

    name = "firing_alerts"
    version = "1.0.0"
    provides = ("alerts",)

    async def start(self, ctx: PluginContext[Any]) -> None:
        self.since = time.time() - 90
        ctx.provide("alerts", self)

    def active(self) -> list[AlertEvent]:
        return [
            AlertEvent(
                rule="demo_error_ratio",
                state="firing",
                labels={"operation": "demo.fail"},
                value=1.0,
                summary="error ratio 1 > 0.1 for 60s",
                since=self.since,
                severity="critical",
            )
        ]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Playwright's async API runs on asyncio only


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (apt-get install chromium); Playwright must not download a browser"
        if os.environ.get("ORION_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{message} (ORION_REQUIRE_SERVICES=1 turns this skip into a failure)")
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield browser
        finally:
            await browser.close()


async def _int(page: Page, selector: str) -> int:
    value = await page.get_attribute(selector, "data-value", timeout=WAIT_MS)
    return int(value or 0)


async def _wait_for_value(page: Page, selector: str, expected: str) -> None:
    """Wait until ``selector``'s data-value is ``expected`` (the raw number behind the text)."""
    await page.wait_for_function(
        "([selector, expected]) => document.querySelector(selector)?.dataset.value === expected",
        arg=[selector, expected],
        timeout=WAIT_MS,
    )


async def test_dashboard_in_a_real_browser(browser: Browser) -> None:
    http = HttpServer()
    plugins = [http, Metrics(), Health(), Dashboard(), Demo(), FiringAlerts()]
    config = {"plugins": {"http": {"permissions": ["net:listen:127.0.0.1:*"], "settings": {"host": "127.0.0.1", "port": 0}}}}
    with anyio.fail_after(90):
        async with Kernel(config, plugins=plugins, environ={}) as kernel:
            base_url = http.base_url
            assert base_url.startswith("http://127.0.0.1:")
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            requests: list[str] = []
            problems: list[str] = []
            page.on("request", lambda request: requests.append(request.url))
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))

            def on_console(message: ConsoleMessage) -> None:
                if message.type == "error":
                    problems.append(f"console error: {message.text}")

            def on_failed(request: Request) -> None:
                problems.append(f"request failed: {request.url} ({request.failure})")

            page.on("console", on_console)
            page.on("requestfailed", on_failed)

            response = await page.goto(f"{base_url}/dashboard/", wait_until="load", timeout=WAIT_MS)
            assert response is not None and response.ok
            await page.wait_for_function("() => Number(document.body.dataset.updates) >= 1", timeout=WAIT_MS)

            # Every plugin of the running kernel, with its state.
            rows = await page.eval_on_selector_all(
                "#plugins tbody tr", "rows => rows.map(r => [r.dataset.plugin, r.dataset.state])"
            )
            assert sorted(map(tuple, rows)) == sorted((name, info.state.value) for name, info in kernel.plugins.items())
            assert {name for name, _ in rows} == {"http", "metrics", "health", "dashboard", "demo", "firing_alerts"}
            assert await page.text_content("#plugins tr[data-plugin='demo'] td.version") == "0.4.2"
            assert await page.get_attribute("#status", "class") == "status status-live"

            # The firing alert, written as text.
            alert = "#alerts li[data-rule='demo_error_ratio']"
            assert await page.is_visible(alert)
            assert await page.text_content(f"{alert} .severity") == "critical"
            assert await page.text_content(f"{alert} .labels") == "operation=demo.fail"
            await _wait_for_value(page, "#alert-count", "1")

            # Links to the other mounts, resolved by the browser from the relative hrefs.
            hrefs = await page.eval_on_selector_all(
                "#links li", "items => items.map(li => [li.dataset.prefix, li.querySelector('a').href])"
            )
            assert dict(hrefs) == {"/health": f"{base_url}/health/", "/metrics": f"{base_url}/metrics/"}

            # Invokes show up live: the counter, the operation rows, the error ratio, the rate.
            total = await _int(page, "#invoke-total")
            for i in range(5):
                assert await kernel.invoke("demo.echo", {"text": str(i)}) == str(i)
            with pytest.raises(OperationFailed):
                await kernel.invoke("demo.fail")
            await _wait_for_value(page, "#invoke-total", str(total + 6))
            await _wait_for_value(page, "#operations tr[data-operation='demo.echo'] td.calls", "5")
            await _wait_for_value(page, "#operations tr[data-operation='demo.fail'] td.ratio", "1")
            assert await page.text_content("#operations tr[data-operation='demo.fail'] td.ratio") == "100.0%"
            assert await page.text_content("#operations tr[data-operation='demo.echo'] td.plugin") == "demo"
            await page.wait_for_function(
                "() => Number(document.querySelector('#invoke-rate').dataset.value) > 0", timeout=WAIT_MS
            )
            p95 = await page.text_content("#operations tr[data-operation='demo.echo'] td.p95")
            assert p95 is not None and p95.endswith(("µs", "ms", " s")), p95

            # A little traffic over a few polls, so the sparkline and the screenshot have something to show.
            for burst in (3, 8, 5, 12):
                for _ in range(burst):
                    await kernel.invoke("demo.echo", {"text": "x"})
                await anyio.sleep(0.6)
            await page.wait_for_function(
                "() => document.querySelector('#sparkline-line').getAttribute('points').split(' ').length >= 2",
                timeout=WAIT_MS,
            )
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            await page.emulate_media(color_scheme="dark")  # the page follows the system's scheme
            await page.screenshot(path=str(ARTIFACTS / "dashboard-dark.png"), full_page=True)

            # The same page without the trailing slash (the http plugin hands both to the app as "/").
            await page.goto(f"{base_url}/dashboard", wait_until="load", timeout=WAIT_MS)
            await page.wait_for_function("() => Number(document.body.dataset.updates) >= 1", timeout=WAIT_MS)
            await _wait_for_value(page, "#plugin-count", str(len(kernel.plugins)))
            await page.close()

    assert problems == []
    outside = [url for url in requests if not url.startswith(base_url + "/") and not url.startswith("data:")]
    assert outside == [], "the page loaded something from outside the kernel's server"
    assert f"{base_url}/dashboard/api/state" in requests
