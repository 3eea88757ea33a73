"""The dashboard plugin through its ASGI app, inside a real kernel (no server, no browser).

The metrics, alerts and http services are stand-ins written here against the
SDK Protocols, so these tests pin the dashboard's side of each contract: the
series names and labels it reads, what it shows when a service is missing or
broken, and the numbers it derives (quantiles, error ratios, rates).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import AsyncIterator
from collections.abc import Mapping
from collections.abc import Sequence
from importlib import resources
from typing import Any

import anyio
import httpx
import pytest
from starlette.routing import Mount
from starlette.routing import Router

from builtin_plugins.monitoring.dashboard import Dashboard
from builtin_plugins.monitoring.dashboard._state import InvokeRates
from builtin_plugins.monitoring.dashboard._state import histogram_quantile
from kernel import Kernel
from plugin_sdk import AlertEvent
from plugin_sdk import ASGIApp
from plugin_sdk import ConfigError
from plugin_sdk import Invocation
from plugin_sdk import MetricFamily
from plugin_sdk import OperationFailed
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginState
from plugin_sdk import Sample
from plugin_sdk import hookimpl
from plugin_sdk import hookspecs

pytestmark = pytest.mark.anyio

STATIC = resources.files("builtin_plugins.monitoring.dashboard") / "static"
BUCKETS = (0.001, 0.01, 0.1, 1.0, math.inf)


# -- test plugins -----------------------------------------------------------------------


class Tools(Plugin):
    """An app's operations, one of which fails, and a hook impl to be measured."""

    name = "tools"
    version = "2.3.4"

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.register_operation("tools.echo", self.echo)
        ctx.register_operation("tools.fail", self.fail)

    async def echo(self, inv: Invocation) -> Any:
        return inv.args.get("text")

    async def fail(self, inv: Invocation) -> Any:
        raise RuntimeError("tool broke")

    @hookimpl
    async def kernel_started(self) -> None:
        pass


class Broken(Plugin):
    """Fails to start: the dashboard must show it, with its error."""

    name = "broken"
    version = "0.1.0"

    async def start(self, ctx: PluginContext[Any]) -> None:
        raise RuntimeError("no disk for broken")


def _histogram_samples(name: str, labels: Mapping[str, str], values: Sequence[float]) -> list[Sample]:
    samples = [
        Sample(f"{name}_bucket", {**labels, "le": "+Inf" if math.isinf(b) else repr(b)}, sum(v <= b for v in values))
        for b in BUCKETS
    ]
    samples.append(Sample(f"{name}_count", dict(labels), len(values)))
    samples.append(Sample(f"{name}_sum", dict(labels), sum(values)))
    return samples


class ObservingMetrics(Plugin):
    """A stand-in for the metrics plugin: the documented series, fed by a dispatch observer."""

    name = "fake_metrics"
    version = "1.0.0"
    provides = ("metrics",)

    async def start(self, ctx: PluginContext[Any]) -> None:
        self.hooks: dict[tuple[str, str], list[tuple[float, str]]] = {}
        self.invokes: dict[str, list[tuple[float, str]]] = {}
        ctx.add_dispatch_observer(self)
        ctx.provide("metrics", self)

    def on_hook(self, hook: str, plugin: str, duration: float, outcome: str) -> None:
        self.hooks.setdefault((hook, plugin), []).append((duration, outcome))

    def on_invoke(self, operation: str, duration: float, outcome: str) -> None:
        self.invokes.setdefault(operation, []).append((duration, outcome))

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Any:
        raise NotImplementedError

    gauge = histogram = counter

    def collect(self) -> list[MetricFamily]:
        def count(calls: Sequence[tuple[float, str]], labels: dict[str, str]) -> list[Sample]:
            outcomes = sorted({o for _, o in calls})
            return [
                Sample("x_total", {**labels, "outcome": o}, sum(1 for _, out in calls if out == o)) for o in outcomes
            ]

        hook_calls = [s for (h, p), calls in self.hooks.items() for s in count(calls, {"hook": h, "plugin": p})]
        hook_hist = [
            s
            for (h, p), calls in self.hooks.items()
            for s in _histogram_samples("orion_hook_duration_seconds", {"hook": h, "plugin": p}, [d for d, _ in calls])
        ]
        op_calls = [s for op, calls in self.invokes.items() for s in count(calls, {"operation": op})]
        op_hist = [
            s
            for op, calls in self.invokes.items()
            for s in _histogram_samples("orion_invoke_duration_seconds", {"operation": op}, [d for d, _ in calls])
        ]
        return [
            MetricFamily("orion_hook_calls_total", "counter", "", tuple(hook_calls)),
            MetricFamily("orion_hook_duration_seconds", "histogram", "", tuple(hook_hist)),
            MetricFamily("orion_invoke_calls_total", "counter", "", tuple(op_calls)),
            MetricFamily("orion_invoke_duration_seconds", "histogram", "", tuple(op_hist)),
        ]


class StaticMetrics(Plugin):
    """A metrics provider whose families the test sets (or whose collect() fails)."""

    name = "static_metrics"
    version = "1.0.0"
    provides = ("metrics",)

    def __init__(self, families: Sequence[MetricFamily] = (), error: Exception | None = None) -> None:
        self.families = list(families)
        self.error = error

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.provide("metrics", self)

    def collect(self) -> list[MetricFamily]:
        if self.error is not None:
            raise self.error
        return self.families


class FakeAlerts(Plugin):
    name = "fake_alerts"
    version = "1.0.0"
    provides = ("alerts",)

    def __init__(self, events: Sequence[AlertEvent]) -> None:
        self.events = list(events)

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.provide("alerts", self)

    def active(self) -> list[AlertEvent]:
        return self.events


class FakeHttp(Plugin):
    """Provides the http service without serving anything (the browser test uses the real one)."""

    name = "fake_http"
    version = "1.0.0"
    provides = ("http",)

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.provide("http", self)

    @property
    def base_url(self) -> str:
        return "http://127.0.0.1:8470"

    def mounts(self) -> dict[str, str]:
        return {"/dashboard": "dashboard", "/health": "health", "/metrics": "metrics"}


# -- helpers ----------------------------------------------------------------------------


def _app(kernel: Kernel) -> ASGIApp:
    """The dashboard's app, as the http plugin gets it: through the http_mounts hook."""
    found = [m for mounts in kernel.hooks.call(hookspecs.http_mounts) for m in mounts if m.prefix == "/dashboard"]
    assert len(found) == 1, found
    assert found[0].title == "Dashboard"
    return found[0].app


def _client(app: ASGIApp, root_path: str = "") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=5.0)


async def _state(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/api/state")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    state: dict[str, Any] = response.json()
    return state


@pytest.fixture
async def kernel_and_client(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Kernel, httpx.AsyncClient]]:
    plugins = getattr(request, "param", None) or [Dashboard(), Tools()]
    with anyio.fail_after(20):
        async with Kernel({}, plugins=plugins, environ={}) as kernel, _client(_app(kernel)) as client:
            yield kernel, client


# -- the page and its assets --------------------------------------------------------------


async def test_page_and_assets_are_served_with_their_types(kernel_and_client: tuple[Kernel, httpx.AsyncClient]) -> None:
    _, client = kernel_and_client
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<base href="/">' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"

    referenced = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assets = [ref for ref in referenced if ref.startswith("static/")]
    assert sorted(assets) == ["static/dashboard.css", "static/dashboard.js"]
    types = {"static/dashboard.css": "text/css; charset=utf-8", "static/dashboard.js": "text/javascript; charset=utf-8"}
    for asset in assets:
        response = await client.get("/" + asset)
        assert response.status_code == 200, asset
        assert response.headers["content-type"] == types[asset]
        assert response.content == (STATIC / asset.removeprefix("static/")).read_bytes()
        again = await client.get("/" + asset, headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304

    for missing in ("/static/nope.js", "/static/..%2f_plugin.py", "/static/", "/nope", "/api/state/"):
        response = await client.get(missing)
        assert response.status_code == 404, missing
        assert response.headers["x-content-type-options"] == "nosniff", missing
    refused = await client.post("/api/state")
    assert (refused.status_code, refused.headers["allow"]) == (405, "GET, HEAD")
    head = await client.head("/static/dashboard.js")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == str(len((STATIC / "dashboard.js").read_bytes()))


async def test_page_works_under_the_mount_prefix_with_or_without_slash(
    kernel_and_client: tuple[Kernel, httpx.AsyncClient],
) -> None:
    kernel, _ = kernel_and_client
    app = _app(kernel)
    # The http plugin's convention: path relative to the prefix, prefix in root_path.
    async with _client(app, root_path="/dashboard") as client:
        page = await client.get("/")
        assert '<base href="/dashboard/">' in page.text
        assert (await client.get("/static/dashboard.js")).status_code == 200
    # Starlette's own Mount: the full path, prefix in root_path.
    async with _client(Router(routes=[Mount("/dashboard", app=app)])) as client:
        page = await client.get("/dashboard/")
        assert page.status_code == 200
        assert '<base href="/dashboard/">' in page.text
        assert (await client.get("/dashboard/api/state")).json()["schema"] == 1


def test_assets_load_through_importlib_resources_without_a_package_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    # A zipped install has no folder to read: the same assets come through importlib.resources.
    from builtin_plugins.monitoring.dashboard import _app

    direct = _app.load_assets()
    assert set(direct) >= {"index.html", "dashboard.js", "dashboard.css"}
    monkeypatch.setattr(_app.os.path, "isdir", lambda path: False)
    assert _app.load_assets() == direct


def test_no_asset_refers_to_anything_outside_the_server() -> None:
    files = [entry for entry in STATIC.iterdir() if entry.is_file()]
    assert {f.name for f in files} >= {"index.html", "dashboard.js", "dashboard.css"}
    for entry in files:
        text = entry.read_text(encoding="utf-8")
        assert not re.search(r"https?:", text, re.IGNORECASE), f"{entry.name} names an external URL"
        assert not re.search(r"""(?:src|href|url)\s*[=(]\s*["']?//""", text), (
            f"{entry.name} has a protocol-relative URL"
        )
        assert "@import" not in text, entry.name
        for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, f"{entry.name}: kernel data must be written as text, not markup ({sink})"


# -- /api/state ---------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_and_client", [[Dashboard(), Tools(), Broken()]], indirect=True)
async def test_state_lists_every_plugin_of_the_kernel(kernel_and_client: tuple[Kernel, httpx.AsyncClient]) -> None:
    kernel, client = kernel_and_client
    state = await _state(client)
    rows = {p["name"]: p for p in state["plugins"]}
    assert set(rows) == set(kernel.plugins)
    for name, info in kernel.plugins.items():
        assert rows[name]["version"] == info.version
        assert rows[name]["state"] == info.state.value
        assert rows[name]["enabled"] == info.enabled
        assert rows[name]["last_error"] == info.last_error
        assert rows[name]["operations"] == list(info.operations)
    assert rows["broken"]["state"] == "failed"
    assert "no disk for broken" in rows["broken"]["last_error"]
    assert rows["tools"] == {
        "name": "tools",
        "version": "2.3.4",
        "state": "running",
        "enabled": True,
        "last_error": None,
        "hooks": ["kernel_started"],
        "operations": ["tools.echo", "tools.fail"],
    }
    assert "http_mounts" in rows["dashboard"]["hooks"]


async def test_state_degrades_without_metrics_and_alerts(kernel_and_client: tuple[Kernel, httpx.AsyncClient]) -> None:
    _, client = kernel_and_client
    state = await _state(client)
    assert state["metrics_available"] is False
    assert state["alerts"] == {"available": False, "firing": []}
    assert state["links"] == {"available": False, "base_url": None, "mounts": []}
    notes = " ".join(state["notes"])
    assert "metrics: no running plugin provides this service" in notes
    assert "alerts: no running plugin provides this service" in notes
    assert "http" not in notes  # no server is not a problem worth a note
    assert state["invokes"]["total"] is None and state["invokes"]["rate"] is None
    # Operations and hook impls are still listed, from the kernel itself, without numbers.
    ops = {o["operation"]: o for o in state["operations"]}
    assert set(ops) == {"tools.echo", "tools.fail"}
    assert ops["tools.echo"]["plugin"] == "tools"
    assert ops["tools.echo"]["calls"] is None and ops["tools.echo"]["p95"] is None
    assert {(h["hook"], h["plugin"]) for h in state["hooks"]} >= {("kernel_started", "tools")}
    assert (await client.get("/")).status_code == 200


@pytest.mark.parametrize("kernel_and_client", [[Dashboard(), Tools(), ObservingMetrics()]], indirect=True)
async def test_state_reflects_invokes(kernel_and_client: tuple[Kernel, httpx.AsyncClient]) -> None:
    kernel, client = kernel_and_client
    before = await _state(client)
    assert before["metrics_available"] is True
    assert not any(n.startswith("metrics") for n in before["notes"])
    assert before["invokes"]["total"] == 0
    ops = {o["operation"]: o for o in before["operations"]}
    assert ops["tools.echo"]["calls"] == 0 and ops["tools.echo"]["error_ratio"] is None

    for i in range(6):
        assert await kernel.invoke("tools.echo", {"text": str(i)}) == str(i)
    for _ in range(2):
        with pytest.raises(OperationFailed):
            await kernel.invoke("tools.fail")
    await anyio.sleep(0.05)

    after = await _state(client)
    invokes = after["invokes"]
    assert invokes["total"] == 8 and invokes["errors"] == 2
    assert invokes["error_ratio"] == pytest.approx(0.25)
    assert invokes["rate"] is not None and invokes["rate"] > 0
    ops = {o["operation"]: o for o in after["operations"]}
    assert ops["tools.echo"]["calls"] == 6 and ops["tools.echo"]["errors"] == 0
    assert ops["tools.fail"]["calls"] == 2 and ops["tools.fail"]["error_ratio"] == 1.0
    assert ops["tools.echo"]["rate"] > 0
    assert ops["tools.echo"]["p50"] is not None and ops["tools.echo"]["p50"] <= ops["tools.echo"]["p95"]
    hooks = {(h["hook"], h["plugin"]): h for h in after["hooks"]}
    assert hooks[("kernel_started", "tools")]["calls"] == 1
    assert hooks[("kernel_started", "tools")]["errors"] == 0


async def test_quantiles_and_error_ratios_come_from_the_series() -> None:
    families = [
        # OpenMetrics spelling: the counter family without "_total".
        MetricFamily(
            "orion_invoke_calls",
            "counter",
            "",
            (
                Sample("orion_invoke_calls_total", {"operation": "search", "outcome": "ok"}, 90),
                Sample("orion_invoke_calls_total", {"operation": "search", "outcome": "error"}, 6),
                Sample("orion_invoke_calls_total", {"operation": "search", "outcome": "timeout"}, 4),
                Sample("orion_invoke_calls_created", {"operation": "search", "outcome": "ok"}, 1.7e9),
            ),
        ),
        MetricFamily(
            "orion_invoke_duration_seconds",
            "histogram",
            "",
            tuple(
                Sample(f"orion_invoke_duration_seconds_{kind}", {"operation": "search", **extra}, value)
                for kind, extra, value in [
                    ("bucket", {"le": "0.1"}, 50),
                    ("bucket", {"le": "0.2"}, 90),
                    ("bucket", {"le": "0.4"}, 100),
                    ("bucket", {"le": "+Inf"}, 100),
                    ("count", {}, 100),
                    ("sum", {}, 12.5),
                ]
            ),
        ),
        MetricFamily(
            "orion_hook_calls_total",
            "counter",
            "",
            (Sample("orion_hook_calls_total", {"hook": "check_health", "plugin": "gone", "outcome": "timeout"}, 2),),
        ),
    ]
    plugins = [Dashboard(), StaticMetrics(families)]
    async with Kernel({}, plugins=plugins, environ={}) as kernel, _client(_app(kernel)) as client:
        state = await _state(client)
    (search,) = [o for o in state["operations"] if o["operation"] == "search"]
    assert search["plugin"] is None  # measured, but no running plugin registers it any more
    assert (search["calls"], search["errors"], search["timeouts"]) == (100, 10, 4)
    assert search["error_ratio"] == pytest.approx(0.1)
    assert search["p50"] == pytest.approx(0.1)
    assert search["p95"] == pytest.approx(0.3)
    assert search["mean"] == pytest.approx(0.125)
    (gone,) = [h for h in state["hooks"] if h["plugin"] == "gone"]
    assert (gone["hook"], gone["calls"], gone["errors"], gone["error_ratio"]) == ("check_health", 2, 2, 1.0)
    assert gone["p50"] is None  # no histogram series for it


async def test_series_are_read_under_the_metrics_namespace() -> None:
    calls = MetricFamily(
        "myapp_invoke_calls_total",
        "counter",
        "",
        (Sample("myapp_invoke_calls_total", {"operation": "tools.echo", "outcome": "ok"}, 7),),
    )
    config = {"plugins": {"dashboard": {"settings": {"metrics_namespace": "myapp"}}}}
    plugins = [Dashboard(), Tools(), StaticMetrics([calls])]
    async with Kernel(config, plugins=plugins, environ={}) as kernel, _client(_app(kernel)) as client:
        state = await _state(client)
    assert state["invokes"]["total"] == 7
    assert {o["operation"]: o["calls"] for o in state["operations"]} == {"tools.echo": 7, "tools.fail": 0}


def test_histogram_quantile_edges() -> None:
    assert histogram_quantile(0.5, []) is None
    assert histogram_quantile(0.5, [(0.1, 0), (math.inf, 0)]) is None
    assert histogram_quantile(0.5, [(math.inf, 3)]) is None  # nothing finite to interpolate against
    assert histogram_quantile(0.99, [(0.1, 1), (math.inf, 10)]) == 0.1  # rank in +Inf: highest finite bound
    assert histogram_quantile(0.5, [(math.inf, 4), (1.0, 4)]) == pytest.approx(0.5)  # order does not matter


def test_invoke_rates_over_a_window() -> None:
    rates = InvokeRates(window=5.0)
    assert rates.update(100.0, 0, {}) == (None, {}, [])
    rate, per_op, history = rates.update(102.0, 10, {"a": 10})
    assert rate == pytest.approx(5.0) and per_op == {"a": pytest.approx(5.0)}
    assert history == [{"age": 0.0, "rate": pytest.approx(5.0)}]
    rates.update(102.1, 11, {"a": 11})  # too close to the previous sample to be kept
    rate, _, history = rates.update(110.0, 30, {"a": 30})
    # The window's oldest sample is at 102 (100 is older than 5 s).
    assert rate == pytest.approx(20 / 8)
    assert [p["age"] for p in history] == [-8.0, 0.0]
    # The counter went down (metrics restarted): start afresh instead of a negative rate.
    assert rates.update(111.0, 2, {"a": 2})[0] is None


async def test_a_failing_metrics_provider_is_reported_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    plugins = [Dashboard(), Tools(), StaticMetrics(error=RuntimeError("registry on fire"))]
    with caplog.at_level(logging.WARNING, logger="orion.plugin.dashboard"):
        async with Kernel({}, plugins=plugins, environ={}) as kernel, _client(_app(kernel)) as client:
            first = await _state(client)
            await _state(client)
    assert first["metrics_available"] is False
    assert "metrics: the service failed (RuntimeError: registry on fire)" in first["notes"]
    logged = [r for r in caplog.records if "registry on fire" in r.getMessage()]
    assert len(logged) == 1


async def test_alerts_links_and_the_logged_url(caplog: pytest.LogCaptureFixture) -> None:
    firing = AlertEvent(
        rule="high_error_ratio",
        state="firing",
        labels={"operation": "tools.fail"},
        value=0.31,
        summary="error ratio 0.31 > 0.1 for 60s",
        since=1_700_000_000.0,
        severity="critical",
    )
    plugins = [Dashboard(), FakeAlerts([firing]), FakeHttp()]
    with caplog.at_level(logging.INFO, logger="orion.plugin.dashboard"):
        async with Kernel({}, plugins=plugins, environ={}) as kernel, _client(_app(kernel)) as client:
            state = await _state(client)
    assert "dashboard: http://127.0.0.1:8470/dashboard/" in caplog.messages
    assert state["alerts"] == {
        "available": True,
        "firing": [
            {
                "rule": "high_error_ratio",
                "state": "firing",
                "severity": "critical",
                "summary": "error ratio 0.31 > 0.1 for 60s",
                "labels": {"operation": "tools.fail"},
                "value": 0.31,
                "since": 1_700_000_000.0,
            }
        ],
    }
    assert state["links"] == {
        "available": True,
        "base_url": "http://127.0.0.1:8470",
        "mounts": [
            {"prefix": "/health", "plugin": "health", "href": "../health/"},
            {"prefix": "/metrics", "plugin": "metrics", "href": "../metrics/"},
        ],
    }
    assert not any(n.startswith(("alerts", "http")) for n in state["notes"])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"poll_interval": 0}, "must be > 0"),
        ({"poll_interval": 120}, "must be <= 60"),
        ({"rate_window": "soon"}, "expected float, got 'soon'"),
        ({"refresh": 1}, "unknown key"),
        ({"metrics_namespace": "my-app"}, "must be empty or a Prometheus name prefix"),
    ],
)
def test_settings_are_validated_with_their_path(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Kernel({"plugins": {"dashboard": {"settings": settings}}}, plugins=[Dashboard()], environ={}).prepare()
    (issue,) = caught.value.issues
    assert issue.path == f"plugins.dashboard.settings.{next(iter(settings))}"
    assert message in issue.message


async def test_stopped_dashboard_mounts_nothing() -> None:
    dashboard = Dashboard()
    async with Kernel({}, plugins=[dashboard], environ={}) as kernel:
        assert kernel.plugins["dashboard"].state is PluginState.RUNNING
        assert len(dashboard.http_mounts()) == 1
    assert dashboard.http_mounts() == []


async def test_with_the_real_metrics_plugin() -> None:
    try:
        from builtin_plugins.monitoring.metrics import Metrics
    except ImportError as exc:  # written concurrently with the dashboard
        pytest.skip(f"the metrics plugin is not available: {exc}")
    plugins = [Dashboard(), Tools(), Metrics()]
    async with Kernel({}, plugins=plugins, environ={}) as kernel, _client(_app(kernel)) as client:
        await _state(client)
        for _ in range(3):
            await kernel.invoke("tools.echo", {"text": "x"})
        state = await _state(client)
    assert state["metrics_available"] is True
    assert state["invokes"]["total"] == 3
    (echo,) = [o for o in state["operations"] if o["operation"] == "tools.echo"]
    assert echo["calls"] == 3 and echo["errors"] == 0 and echo["p95"] is not None
