"""The ``metrics`` plugin: registry, exposition (checked with prometheus_client's
reference parsers), the /metrics ASGI app, and the kernel measured automatically."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client import parser as text_parser
from prometheus_client.openmetrics import parser as openmetrics_parser

from builtin_plugins.monitoring.metrics import OPENMETRICS_CONTENT_TYPE
from builtin_plugins.monitoring.metrics import TEXT_CONTENT_TYPE
from builtin_plugins.monitoring.metrics import UNKNOWN_OPERATION
from builtin_plugins.monitoring.metrics import Metrics
from builtin_plugins.monitoring.metrics import MetricsApp
from builtin_plugins.monitoring.metrics import Registry
from builtin_plugins.monitoring.metrics import render
from builtin_plugins.monitoring.metrics import wants_openmetrics
from kernel import Kernel
from plugin_sdk import ConfigError
from plugin_sdk import Counter
from plugin_sdk import Gauge
from plugin_sdk import Histogram
from plugin_sdk import HookFailed
from plugin_sdk import HttpMount
from plugin_sdk import Invocation
from plugin_sdk import MetricFamily
from plugin_sdk import MetricsError
from plugin_sdk import MetricsRegistry
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginState
from plugin_sdk import Sample
from plugin_sdk import hookimpl
from plugin_sdk import hookspec

#: (sample name, sorted label items) -> value
Values = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_text(text: str) -> list[Any]:
    """prometheus_client's reference parser for the 0.0.4 text format."""
    return list(text_parser.text_string_to_metric_families(text))


def parse_openmetrics(text: str) -> list[Any]:
    """prometheus_client's reference parser for OpenMetrics 1.0.0."""
    return list(openmetrics_parser.text_string_to_metric_families(text))  # type: ignore[no-untyped-call]


def values_of(families: Iterable[Any]) -> Values:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, tuple(sorted(labels.items())))


def exposed(registry: Registry, *, openmetrics: bool = False) -> str:
    return render(registry.metrics(), openmetrics=openmetrics).decode()


# -- the registry -------------------------------------------------------------------------


def test_registry_and_its_metrics_satisfy_the_sdk_protocols() -> None:
    registry = Registry()
    assert isinstance(registry, MetricsRegistry)
    assert isinstance(registry.counter("c_total", "c"), Counter)
    assert isinstance(registry.gauge("g", "g"), Gauge)
    assert isinstance(registry.histogram("h", "h"), Histogram)


def test_counter_counts_each_label_set_separately() -> None:
    registry = Registry()
    requests = registry.counter("requests_total", "Requests.", ["method", "code"])
    requests.inc(method="GET", code="200")
    requests.inc(2.5, method="GET", code="200")
    requests.inc(code="500", method="POST")
    assert values_of(registry.collect()) == {
        key("requests_total", method="GET", code="200"): 3.5,
        key("requests_total", method="POST", code="500"): 1.0,
    }


def test_metrics_without_labels_exist_at_zero_from_their_declaration() -> None:
    registry = Registry()
    registry.counter("starts", "Starts.")
    registry.gauge("depth", "Depth.")
    registry.histogram("wait_seconds", "Wait.", buckets=[1.0])
    assert values_of(registry.collect()) == {
        key("starts_total"): 0.0,
        key("depth"): 0.0,
        key("wait_seconds_bucket", le="1.0"): 0.0,
        key("wait_seconds_bucket", le="+Inf"): 0.0,
        key("wait_seconds_sum"): 0.0,
        key("wait_seconds_count"): 0.0,
    }


@pytest.mark.parametrize("amount", [-1.0, math.nan])
def test_counter_only_goes_up(amount: float) -> None:
    counter = Registry().counter("c_total", "c")
    with pytest.raises(MetricsError, match=r"counter 'c_total' can only go up"):
        counter.inc(amount)


def test_gauge_sets_and_moves() -> None:
    registry = Registry()
    queue = registry.gauge("queue_depth", "Depth.", ["queue"])
    queue.set(10, queue="a")
    queue.inc(queue="a")
    queue.dec(4, queue="a")
    queue.dec(queue="b")
    assert values_of(registry.collect()) == {key("queue_depth", queue="a"): 7.0, key("queue_depth", queue="b"): -1.0}


def test_histogram_counts_into_cumulative_buckets_with_sum_and_count() -> None:
    registry = Registry()
    sizes = registry.histogram("size_bytes", "Sizes.", ["kind"], buckets=[1, 5, 10])
    for value in (0.5, 1, 3, 10, 11):  # a bound belongs to its own bucket (le is "<=")
        sizes.observe(value, kind="x")
    [family] = registry.collect()
    assert family == MetricFamily(
        "size_bytes",
        "histogram",
        "Sizes.",
        (
            Sample("size_bytes_bucket", {"kind": "x", "le": "1.0"}, 2.0),
            Sample("size_bytes_bucket", {"kind": "x", "le": "5.0"}, 3.0),
            Sample("size_bytes_bucket", {"kind": "x", "le": "10.0"}, 4.0),
            Sample("size_bytes_bucket", {"kind": "x", "le": "+Inf"}, 5.0),
            Sample("size_bytes_sum", {"kind": "x"}, 25.5),
            Sample("size_bytes_count", {"kind": "x"}, 5.0),
        ),
    )


def test_histograms_default_to_the_configured_latency_buckets() -> None:
    registry = Registry(default_buckets=(0.1, 1.0))
    registry.histogram("latency_seconds", "Latency.").observe(0.5)
    assert values_of(registry.collect())[key("latency_seconds_bucket", le="1.0")] == 1.0
    assert Registry().histogram("x", "x").bounds[0] == 0.00005
    assert Registry().histogram("x", "x").bounds[-1] == 10.0


def test_declaring_the_same_metric_twice_returns_the_same_metric() -> None:
    registry = Registry()
    assert registry.counter("c_total", "c", ["a"]) is registry.counter("c_total", "other help", ("a",))
    assert registry.gauge("g", "g") is registry.gauge("g", "g")
    assert registry.histogram("h", "h", buckets=[1, 2]) is registry.histogram("h", "h", buckets=(1.0, 2.0))


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        (("counter", ["a"]), ("gauge", ["a"]), r"metric 'm' is already declared as a counter with labels \['a'\]"),
        (("counter", ["a"]), ("counter", ["b"]), r"cannot redeclare it as a counter with labels \['b'\]"),
        (("gauge", []), ("histogram", []), r"metric 'm' is already declared as a gauge"),
        (("histogram", ["a"]), ("counter", ["a"]), r"already declared as a histogram"),
    ],
)
def test_a_clashing_redeclaration_raises_naming_the_metric(
    first: tuple[str, list[str]], second: tuple[str, list[str]], message: str
) -> None:
    registry = Registry()
    getattr(registry, first[0])("m", "help", first[1])
    with pytest.raises(MetricsError, match=message):
        getattr(registry, second[0])("m", "help", second[1])


def test_a_histogram_redeclared_with_other_buckets_raises() -> None:
    registry = Registry()
    registry.histogram("h", "h", buckets=[1, 2])
    with pytest.raises(MetricsError, match=r"metric 'h' .* buckets \[1.0, 2.0\]; .* buckets \[1.0, 3.0\]"):
        registry.histogram("h", "h", buckets=[1, 3])


@pytest.mark.parametrize(
    ("kind", "name"), [("counter", "x"), ("counter", "x_total"), ("gauge", "h_sum"), ("gauge", "h_bucket")]
)
def test_metrics_that_would_share_an_exposed_name_clash(kind: str, name: str) -> None:
    registry = Registry()
    registry.counter("x_total" if name == "x" else "x", "x")
    registry.histogram("h", "h")
    with pytest.raises(MetricsError, match=rf"metric '{name}' clashes with .*both would be exposed as"):
        getattr(registry, kind)(name, "clash")


@pytest.mark.parametrize("name", ["", "1st", "with-dash", "with space", "é", "a.b"])
def test_invalid_metric_names_raise_naming_the_metric(name: str) -> None:
    with pytest.raises(MetricsError, match=rf"metric name {name!r} is invalid"):
        Registry().counter(name, "help")


@pytest.mark.parametrize(
    ("kind", "labels", "message"),
    [
        ("counter", ["1x"], r"metric 'm': label name '1x' is invalid"),
        ("counter", ["a-b"], r"label name 'a-b' is invalid"),
        ("gauge", ["__name__"], r"label name '__name__' is reserved"),
        ("gauge", ["a", "a"], r"duplicate label names"),
        ("histogram", ["le"], r"label name 'le' is reserved for histogram buckets"),
        ("counter", "path", r"labels must be a sequence of label names, got 'path'"),
    ],
)
def test_invalid_label_names_raise_naming_the_metric(kind: str, labels: Any, message: str) -> None:
    with pytest.raises(MetricsError, match=message):
        getattr(Registry(), kind)("m", "help", labels)


@pytest.mark.parametrize(
    ("buckets", "message"),
    [
        ([], "at least one finite bucket bound"),
        ([2, 1], "strictly increasing"),
        ([1, 1], "strictly increasing"),
        ([1, math.nan], "finite"),
        (["a"], "must be numbers"),
    ],
)
def test_bad_buckets_raise(buckets: list[Any], message: str) -> None:
    with pytest.raises(MetricsError, match=rf"histogram 'h': .*{message}"):
        Registry().histogram("h", "h", buckets=buckets)


def test_an_explicit_inf_bucket_is_accepted_as_implied() -> None:
    assert Registry().histogram("h", "h", buckets=[1, math.inf]).bounds == (1.0,)


@pytest.mark.parametrize(
    ("labels", "given"),
    [({"method": "GET"}, "['method']"), ({"method": "GET", "code": "1", "x": "y"}, "['code', 'method', 'x']")],
)
def test_using_the_wrong_label_set_raises_naming_expected_and_given(labels: dict[str, str], given: str) -> None:
    registry = Registry()
    counter = registry.counter("requests_total", "r", ["method", "code"])
    gauge = registry.gauge("g", "g", ["method", "code"])
    histogram = registry.histogram("h", "h", ["method", "code"])

    def expected(metric: str) -> str:
        return re.escape(f"metric {metric!r} expects labels ['code', 'method'], given {given}")

    with pytest.raises(MetricsError, match=expected("requests_total")):
        counter.inc(1.0, **labels)
    with pytest.raises(MetricsError, match=expected("g")):
        gauge.set(1, **labels)
    with pytest.raises(MetricsError, match=expected("h")):
        histogram.observe(1, **labels)


def test_same_number_of_labels_with_other_names_is_refused_too() -> None:
    counter = Registry().counter("c_total", "c", ["a"])
    with pytest.raises(MetricsError, match=r"expects labels \['a'\], given \['b'\]"):
        counter.inc(b="x")


def test_label_values_are_kept_as_strings() -> None:
    registry = Registry()
    counter = registry.counter("c_total", "c", ["code"])
    counter.inc(code=200)  # type: ignore[arg-type]
    counter.inc(code="200")
    assert values_of(registry.collect()) == {key("c_total", code="200"): 2.0}


def test_a_metric_past_its_series_limit_raises_and_does_not_record() -> None:
    registry = Registry(max_series_per_metric=3)
    users = registry.counter("logins_total", "Logins.", ["user"])
    for user in ("ada", "bob", "cy"):
        users.inc(user=user)
    with pytest.raises(MetricsError) as caught:
        users.inc(user="dan")
    assert str(caught.value).startswith(
        "metric 'logins_total' exceeded its limit of 3 series (labels {'user': 'dan'}); the value was not recorded"
    )
    users.inc(user="ada")  # existing series still count
    assert values_of(registry.collect()) == {
        key("logins_total", user="ada"): 2.0,
        key("logins_total", user="bob"): 1.0,
        key("logins_total", user="cy"): 1.0,
    }
    histogram = Registry(max_series_per_metric=1).histogram("h", "h", ["user"])
    histogram.observe(1, user="a")
    with pytest.raises(MetricsError, match="metric 'h' exceeded its limit of 1 series"):
        histogram.observe(1, user="b")


def test_collect_is_sorted_by_name_and_names_counter_samples_total() -> None:
    registry = Registry()
    registry.gauge("zeta", "z")
    registry.counter("alpha", "a").inc()
    registry.counter("beta_total", "b").inc()
    families = registry.collect()
    assert [f.name for f in families] == ["alpha", "beta_total", "zeta"]
    assert [s.name for f in families for s in f.samples] == ["alpha_total", "beta_total", "zeta"]
    assert registry.snapshot()[0] == {
        "name": "alpha",
        "kind": "counter",
        "help": "a",
        "samples": [{"name": "alpha_total", "labels": {}, "value": 1.0}],
    }


# -- exposition -----------------------------------------------------------------------------


def sample_registry() -> Registry:
    registry = Registry()
    requests = registry.counter("http_requests_total", "HTTP requests.", ["method", "code"])
    requests.inc(3, method="GET", code="200")
    requests.inc(method="POST", code="500")
    registry.gauge("temperature_celsius", "Temperature.").set(-3.5)
    latency = registry.histogram("latency_seconds", "Latency.", ["route"], buckets=[0.1, 1.0])
    for value in (0.05, 0.5, 0.7, 3.0):
        latency.observe(value, route="/a")
    return registry


EXPECTED = {
    key("http_requests_total", method="GET", code="200"): 3.0,
    key("http_requests_total", method="POST", code="500"): 1.0,
    key("temperature_celsius"): -3.5,
    key("latency_seconds_bucket", route="/a", le="0.1"): 1.0,
    key("latency_seconds_bucket", route="/a", le="1.0"): 3.0,
    key("latency_seconds_bucket", route="/a", le="+Inf"): 4.0,
    key("latency_seconds_sum", route="/a"): 4.25,
    key("latency_seconds_count", route="/a"): 4.0,
}


def test_text_format_parses_with_the_reference_parser() -> None:
    text = exposed(sample_registry())
    families = {f.name: f for f in parse_text(text)}
    assert values_of(families.values()) == EXPECTED
    assert (families["http_requests"].type, families["http_requests"].documentation) == ("counter", "HTTP requests.")
    assert families["latency_seconds"].type == "histogram"
    assert families["temperature_celsius"].type == "gauge"
    assert "# TYPE http_requests_total counter\n" in text
    assert text.endswith("\n") and "# EOF" not in text


def test_openmetrics_parses_with_the_reference_parser() -> None:
    text = exposed(sample_registry(), openmetrics=True)
    families = {f.name: f for f in parse_openmetrics(text)}
    assert values_of(families.values()) == EXPECTED
    assert families["http_requests"].type == "counter"
    assert "# TYPE http_requests counter\n" in text  # the family without _total, its samples with it
    assert text.endswith("# EOF\n")


def test_openmetrics_omits_sum_and_count_of_a_histogram_with_negative_buckets() -> None:
    registry = Registry()
    registry.histogram("offset", "Offset.", buckets=[-1, 0, 1]).observe(-2)
    om = values_of(parse_openmetrics(exposed(registry, openmetrics=True)))
    assert key("offset_sum") not in om and key("offset_count") not in om
    assert om[key("offset_bucket", le="-1.0")] == 1.0
    assert values_of(parse_text(exposed(registry)))[key("offset_sum")] == -2.0


ODD_VALUES = ['quote " inside', "back\\slash", "new\nline", 'all \\ " \n together', "ünïcødé ✓", '{a="b"},', ""]


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_odd_label_values_and_help_are_escaped(openmetrics: bool) -> None:
    registry = Registry()
    counter = registry.counter("odd_total", 'Help with "quotes", a back\\slash\nand a second line.', ["v"])
    for index, value in enumerate(ODD_VALUES):
        counter.inc(index + 1, v=value)
    text = exposed(registry, openmetrics=openmetrics)
    parse = parse_openmetrics if openmetrics else parse_text
    [family] = list(parse(text))
    assert family.documentation == 'Help with "quotes", a back\\slash\nand a second line.'
    assert {s.labels["v"]: s.value for s in family.samples} == {v: float(i + 1) for i, v in enumerate(ODD_VALUES)}
    assert 'v="new\\nline"' in text and 'v="quote \\" inside"' in text and 'v="back\\\\slash"' in text
    help_line = next(line for line in text.splitlines() if line.startswith("# HELP"))
    assert ('\\"quotes\\"' in help_line) is openmetrics  # only OpenMetrics escapes quotes in HELP


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_special_float_values_are_spelled_out(openmetrics: bool) -> None:
    registry = Registry()
    gauge = registry.gauge("g", "g", ["v"])
    gauge.set(math.inf, v="inf")
    gauge.set(-math.inf, v="-inf")
    gauge.set(math.nan, v="nan")
    gauge.set(1e-7, v="tiny")
    gauge.set(12345678901234.0, v="big")
    text = exposed(registry, openmetrics=openmetrics)
    assert 'g{v="inf"} +Inf\n' in text and 'g{v="-inf"} -Inf\n' in text and 'g{v="nan"} NaN\n' in text
    parse = parse_openmetrics if openmetrics else parse_text
    parsed = {s.labels["v"]: s.value for f in parse(text) for s in f.samples}
    assert parsed["inf"] == math.inf and parsed["-inf"] == -math.inf and math.isnan(parsed["nan"])
    assert parsed["tiny"] == 1e-7 and parsed["big"] == 12345678901234.0


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        ("", False),
        ("*/*", False),
        ("text/plain", False),
        ("text/plain;version=0.0.4", False),
        ("application/openmetrics-text", True),
        ("application/openmetrics-text; version=1.0.0; charset=utf-8", True),
        # what Prometheus sends
        (
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
            "text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            True,
        ),
        ("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4", False),
        ("application/openmetrics-text;version=2.0.0", False),
        ("application/openmetrics-text;q=0", False),
        ("text/html", False),
        ("APPLICATION/OpenMetrics-Text; q=0.9, */*; q=0.8", True),
        ("application/openmetrics-text;q=oops", False),
    ],
)
def test_content_negotiation(accept: str, openmetrics: bool) -> None:
    assert wants_openmetrics(accept) is openmetrics


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kernel")


@pytest.mark.anyio
async def test_the_app_serves_both_formats_by_accept_header() -> None:
    registry = sample_registry()
    async with client_for(MetricsApp(registry.metrics)) as client:
        text = await client.get("/")
        om = await client.get("/", headers={"accept": "application/openmetrics-text; version=1.0.0"})
        bare = await client.get("")
    assert text.status_code == 200 and text.headers["content-type"] == TEXT_CONTENT_TYPE
    assert values_of(parse_text(text.text)) == EXPECTED
    assert om.status_code == 200 and om.headers["content-type"] == OPENMETRICS_CONTENT_TYPE
    assert values_of(parse_openmetrics(om.text)) == EXPECTED
    assert bare.status_code == 200
    assert "Accept" in text.headers["vary"]


@pytest.mark.anyio
async def test_the_app_shows_the_registry_live() -> None:
    registry = Registry()
    counter = registry.counter("hits_total", "Hits.")
    async with client_for(MetricsApp(registry.metrics)) as client:
        counter.inc()
        first = values_of(parse_text((await client.get("/")).text))
        counter.inc()
        second = values_of(parse_text((await client.get("/")).text))
    assert (first[key("hits_total")], second[key("hits_total")]) == (1.0, 2.0)


@pytest.mark.anyio
async def test_the_app_answers_head_other_methods_and_paths() -> None:
    registry = sample_registry()
    async with client_for(MetricsApp(registry.metrics)) as client:
        head = await client.head("/")
        post = await client.post("/", content=b"x")
        other = await client.get("/nope")
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
    assert other.status_code == 404


@pytest.mark.anyio
async def test_the_app_compresses_when_the_scraper_accepts_gzip() -> None:
    registry = Registry()
    counter = registry.counter("c_total", "c", ["n"])
    for n in range(100):
        counter.inc(n=str(n))
    async with client_for(MetricsApp(registry.metrics)) as client:
        zipped = await client.get("/", headers={"accept-encoding": "gzip"})
        plain = await client.get("/", headers={"accept-encoding": "identity"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain.headers
    assert zipped.text == plain.text  # httpx decompressed it


@pytest.mark.anyio
async def test_the_app_sees_paths_relative_to_its_mount() -> None:
    app = MetricsApp(sample_registry().metrics)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    for path in ("/metrics", "/metrics/", "/"):
        sent.clear()
        scope: dict[str, Any] = {"type": "http", "method": "GET", "path": path, "root_path": "/metrics", "headers": []}
        await app(scope, receive, send)
        assert sent[0]["status"] == 200, path


# -- the plugin in a kernel -------------------------------------------------------------------


class Specs:
    @hookspec()
    def describe(topic: str) -> str:
        """Sync, isolate.  :param topic: what to describe."""
        raise NotImplementedError

    @hookspec(timeout=0.05)
    def crunch(n: int) -> int:
        """Sync, 50 ms deadline.  :param n: a number."""
        raise NotImplementedError

    @hookspec(timeout=0.05)
    async def fetch(url: str) -> str:
        """Async, 50 ms deadline.  :param url: where."""
        raise NotImplementedError

    @hookspec()
    def never_implemented() -> None:
        """A hook no plugin implements."""


class Librarian(Plugin):
    """A third-party-style plugin: hooks and operations, no idea that metrics exist."""

    name = "librarian"
    version = "1.0.0"

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.register_operation("library.lookup", self.lookup)
        ctx.register_operation("library.burn", self.burn)

    async def lookup(self, inv: Invocation) -> str:
        return f"found {inv.args.get('title')}"

    async def burn(self, inv: Invocation) -> str:
        raise RuntimeError("no")

    @hookimpl
    def describe(self, topic: str) -> str:
        return f"a book about {topic}"

    @hookimpl
    async def fetch(self, url: str) -> str:
        return url


class Grump(Plugin):
    name = "grump"
    version = "0.1.0"
    priority = -1  # after the others: a deadline missed skips the impls after it

    @hookimpl
    def describe(self, topic: str) -> str:
        raise ValueError(f"won't describe {topic}")

    @hookimpl
    def crunch(self, n: int) -> int:
        time.sleep(0.07)  # past the 50 ms deadline, and nothing can interrupt it
        return n

    @hookimpl
    async def fetch(self, url: str) -> str:
        await anyio.sleep(5)  # the watchdog cancels it at the deadline
        return url


class Quiet(Plugin):
    """Implements nothing, registers nothing: still has a state series."""

    name = "quiet"
    version = "2.0.0"


class Broken(Plugin):
    name = "broken"
    version = "1.0.0"

    async def start(self, ctx: PluginContext[Any]) -> None:
        raise RuntimeError("cannot start")

    @hookimpl
    def describe(self, topic: str) -> str:
        return "never called"


class Scraper(Plugin):
    """Reads /metrics the way the http plugin would, through the mount it is given."""

    name = "scraper"
    version = "1.0.0"
    requires = ("metrics",)

    async def start(self, ctx: PluginContext[Any]) -> None:
        self.ctx = ctx
        self.registry: MetricsRegistry = ctx.service("metrics")
        self.jobs = self.registry.counter("scraper_jobs_total", "Jobs the scraper ran.", ["kind"])
        self.jobs.inc(kind="warmup")


def kernel_with(*plugins: Plugin, config: dict[str, Any] | None = None) -> Kernel:
    return Kernel(config or {}, plugins=list(plugins), hookspecs=[Specs], environ={})


async def scrape(metrics: Metrics, *, openmetrics: bool = False) -> Values:
    headers = {"accept": "application/openmetrics-text"} if openmetrics else {}
    [mount] = metrics.http_mounts()
    assert isinstance(mount, HttpMount) and mount.prefix == "/metrics" and mount.title == "Metrics"
    async with client_for(mount.app) as client:
        response = await client.get("/", headers=headers)
    assert response.status_code == 200
    return values_of((parse_openmetrics if openmetrics else parse_text)(response.text))


def calls(values: Values, hook: str, plugin: str, outcome: str) -> float:
    return values[key("orion_hook_calls_total", hook=hook, plugin=plugin, outcome=outcome)]


def hook_count(values: Values, hook: str, plugin: str) -> float:
    return values[key("orion_hook_duration_seconds_count", hook=hook, plugin=plugin)]


def sampled(interval: float) -> dict[str, Any]:
    return {"plugins": {"metrics": {"settings": {"hook_latency_interval": interval}}}}


@pytest.mark.anyio
async def test_hook_calls_are_counted_by_outcome_and_timed() -> None:
    metrics = Metrics()
    async with kernel_with(metrics, Librarian(), Grump(), config=sampled(0)) as kernel:
        for _ in range(3):
            assert kernel.hooks.call(Specs.describe, topic="tea") == ["a book about tea"]
        values = await scrape(metrics)
    assert (calls(values, "describe", "librarian", "ok"), calls(values, "describe", "librarian", "error")) == (3, 0)
    assert (calls(values, "describe", "grump", "ok"), calls(values, "describe", "grump", "error")) == (0, 3)
    assert hook_count(values, "describe", "librarian") == 3
    assert hook_count(values, "describe", "grump") == 3
    assert values[key("orion_hook_duration_seconds_sum", hook="describe", plugin="librarian")] > 0
    assert values[key("orion_hook_duration_seconds_bucket", hook="describe", plugin="librarian", le="+Inf")] == 3


class Sampled:
    @hookspec(firstresult=True)
    def pick(n: int) -> int:
        """First result.  :param n: a number."""
        raise NotImplementedError

    @hookspec(policy="fail_fast")
    def strict(n: int) -> int:
        """Fail fast.  :param n: a number."""
        raise NotImplementedError


class Picky(Plugin):
    name = "picky"
    version = "1.0.0"
    priority = 2  # before fallback

    @hookimpl
    def pick(self, n: int) -> int | None:
        return n if n % 2 else None  # answers odd numbers only

    @hookimpl
    def strict(self, n: int) -> int:
        if n % 2:
            raise ValueError("odd")
        return n


class Fallback(Plugin):
    name = "fallback"
    version = "1.0.0"
    priority = 1

    @hookimpl
    def pick(self, n: int) -> int:
        return -n

    @hookimpl
    def strict(self, n: int) -> int:
        return n


@pytest.mark.anyio
@pytest.mark.parametrize("interval", [0, 60])
async def test_sampled_latency_keeps_counts_exact(interval: float) -> None:
    """With a long sampling interval only the first call of each hook is timed; every
    call is still counted, by outcome, whichever way it ended (firstresult, fail_fast,
    an error, a deadline)."""
    metrics = Metrics()
    async with Kernel(
        sampled(interval), plugins=[metrics, Librarian(), Grump(), Picky(), Fallback()], hookspecs=[Specs, Sampled]
    ) as kernel:
        for _ in range(3):  # grump fails: 3 + 1 below stays under the 5 that quarantine it
            assert kernel.hooks.call(Specs.describe, topic="tea") == ["a book about tea"]
        for n in range(6):  # odd: picky answers and fallback never runs; even: both run
            assert kernel.hooks.call(Sampled.pick, n=n) == (n if n % 2 else -n)
        for n in range(4):  # odd: picky raises and fallback never runs
            if n % 2:
                with pytest.raises(HookFailed):
                    kernel.hooks.call(Sampled.strict, n=n)
            else:
                assert kernel.hooks.call(Sampled.strict, n=n) == [n, n]
        kernel.hooks.call(Specs.crunch, n=1)  # grump overruns the deadline
        values = await scrape(metrics)
    outcomes = ("ok", "error", "timeout")
    assert [calls(values, "describe", "librarian", o) for o in outcomes] == [3, 0, 0]
    assert [calls(values, "describe", "grump", o) for o in outcomes] == [0, 3, 0]
    assert [calls(values, "pick", "picky", o) for o in outcomes] == [6, 0, 0]
    assert [calls(values, "pick", "fallback", o) for o in outcomes] == [3, 0, 0]
    assert [calls(values, "strict", "picky", o) for o in outcomes] == [2, 2, 0]
    assert [calls(values, "strict", "fallback", o) for o in outcomes] == [2, 0, 0]
    assert [calls(values, "crunch", "grump", o) for o in outcomes] == [0, 0, 1]
    timed = 3 if interval == 0 else 1
    assert hook_count(values, "describe", "librarian") == timed
    assert hook_count(values, "describe", "grump") == timed
    assert hook_count(values, "pick", "picky") == (6 if interval == 0 else 1)
    assert hook_count(values, "strict", "fallback") == (2 if interval == 0 else 1)


@pytest.mark.anyio
async def test_hook_timeouts_are_counted_as_timeouts() -> None:
    metrics = Metrics()
    async with kernel_with(metrics, Librarian(), Grump()) as kernel:
        kernel.hooks.call(Specs.crunch, n=1)  # a sync impl that overruns
        assert await kernel.hooks.call(Specs.fetch, url="u") == ["u"]  # grump's await is cancelled
        values = await scrape(metrics)
    assert calls(values, "crunch", "grump", "timeout") == 1
    assert calls(values, "fetch", "grump", "timeout") == 1
    assert calls(values, "fetch", "librarian", "ok") == 1
    assert values[key("orion_hook_duration_seconds_sum", hook="crunch", plugin="grump")] >= 0.05
    assert values[key("orion_hook_duration_seconds_bucket", hook="crunch", plugin="grump", le="0.05")] == 0


@pytest.mark.anyio
async def test_invokes_are_counted_by_outcome_and_timed() -> None:
    metrics = Metrics()
    async with kernel_with(metrics, Librarian()) as kernel:
        await kernel.invoke("library.lookup", {"title": "Dune"})
        await kernel.invoke("library.lookup", {"title": "Emma"})
        with pytest.raises(Exception, match="no"):
            await kernel.invoke("library.burn")
        for name in ("library.nope", "made.up"):
            with pytest.raises(Exception, match="unknown operation"):
                await kernel.invoke(name)
        values = await scrape(metrics, openmetrics=True)

    def invoked(operation: str, outcome: str) -> float:
        return values[key("orion_invoke_calls_total", operation=operation, outcome=outcome)]

    assert (invoked("library.lookup", "ok"), invoked("library.lookup", "error")) == (2, 0)
    assert (invoked("library.burn", "ok"), invoked("library.burn", "error")) == (0, 1)
    assert invoked(UNKNOWN_OPERATION, "error") == 2  # invented names never become series of their own
    assert not any(labels and ("operation", "made.up") in labels for _, labels in values)
    assert values[key("orion_invoke_duration_seconds_count", operation="library.lookup")] == 2


def states_of(values: Values, plugin: str) -> dict[str, float]:
    return {
        dict(labels)["state"]: value
        for (name, labels), value in values.items()
        if name == "orion_plugin_state" and ("plugin", plugin) in labels
    }


@pytest.mark.anyio
async def test_plugin_state_gauge_follows_each_plugin() -> None:
    metrics = Metrics()
    config = {"kernel": {"quarantine_after": 2}}
    async with kernel_with(metrics, Librarian(), Grump(), Broken(), config=config) as kernel:
        before = await scrape(metrics)
        kernel.hooks.call(Specs.describe, topic="a")
        kernel.hooks.call(Specs.describe, topic="b")  # grump's second failure in a row: quarantined
        after = await scrape(metrics)
    for plugin in ("metrics", "librarian", "grump"):
        assert states_of(before, plugin) == {s.value: float(s is PluginState.RUNNING) for s in PluginState}
    assert states_of(before, "broken")["failed"] == 1 and sum(states_of(before, "broken").values()) == 1
    assert states_of(after, "grump")["quarantined"] == 1 and sum(states_of(after, "grump").values()) == 1
    assert states_of(after, "librarian")["running"] == 1


@pytest.mark.anyio
async def test_every_hook_plugin_and_operation_of_the_kernel_is_covered_without_traffic() -> None:
    metrics = Metrics()
    config = {"plugins": {"quiet": {"enabled": False}}}
    async with kernel_with(Librarian(), Grump(), Broken(), Quiet(), Scraper(), metrics, config=config) as kernel:
        snapshot = await kernel.invoke("metrics.snapshot")
        values = await scrape(metrics)
        om_values = await scrape(metrics, openmetrics=True)
        hooks = dict(kernel.hooks.impl_map())
        specs = set(kernel.hooks.specs)
        plugins = set(kernel.plugins)
        operations = set(kernel.operations)
    assert values == om_values
    assert {"librarian", "grump", "broken", "quiet", "scraper", "metrics"} <= plugins
    assert {"library.lookup", "library.burn", "metrics.snapshot"} <= operations
    for hook in specs:
        implementers = values.get(key("orion_hook_implementations", hook=hook))
        assert implementers == len(hooks[hook]), hook
    assert values[key("orion_hook_implementations", hook="never_implemented")] == 0
    pairs = [(hook, plugin) for hook, names in hooks.items() for plugin in names]
    assert ("describe", "broken") in pairs and ("http_mounts", "metrics") in pairs
    for hook, plugin in pairs:
        for outcome in ("ok", "error", "timeout"):
            assert key("orion_hook_calls_total", hook=hook, plugin=plugin, outcome=outcome) in values, (hook, plugin)
        assert key("orion_hook_duration_seconds_count", hook=hook, plugin=plugin) in values, (hook, plugin)
    for plugin in plugins:
        states = states_of(values, plugin)
        assert set(states) == {s.value for s in PluginState}, plugin
        assert sum(states.values()) == 1, plugin
    assert states_of(values, "quiet")["discovered"] == 1  # disabled in config: known, never loaded
    for operation in operations:
        for outcome in ("ok", "error", "timeout"):
            assert key("orion_invoke_calls_total", operation=operation, outcome=outcome) in values, operation
    assert values[key("scraper_jobs_total", kind="warmup")] == 1  # metrics declared by another plugin
    assert isinstance(snapshot, list)
    names = {family["name"] for family in snapshot}
    assert {"orion_hook_calls_total", "orion_plugin_state", "scraper_jobs_total"} <= names


class Latecomer(Plugin):
    name = "latecomer"
    version = "1.0.0"

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.register_operation("late.hello", self.hello)

    async def hello(self, inv: Invocation) -> str:
        return "hi"

    @hookimpl
    def describe(self, topic: str) -> str:
        return "late"


@pytest.mark.anyio
async def test_series_follow_plugins_started_and_stopped_later() -> None:
    metrics = Metrics()
    kernel = kernel_with(metrics, Librarian(), Latecomer(), config={"plugins": {"latecomer": {"enabled": False}}})
    async with kernel:
        before = await scrape(metrics)
        await kernel.reload({"plugins": {"latecomer": {"enabled": True}}})
        started = await scrape(metrics)
        await kernel.reload({"plugins": {"latecomer": {"enabled": False}}})
        stopped = await scrape(metrics)
    assert key("orion_hook_duration_seconds_count", hook="describe", plugin="latecomer") not in before
    assert key("orion_invoke_calls_total", operation="late.hello", outcome="ok") not in before
    assert calls(started, "describe", "latecomer", "ok") == 0
    assert key("orion_invoke_calls_total", operation="late.hello", outcome="ok") in started
    assert states_of(started, "latecomer")["running"] == 1
    assert states_of(stopped, "latecomer")["stopped"] == 1 and sum(states_of(stopped, "latecomer").values()) == 1
    assert key("orion_hook_calls_total", hook="describe", plugin="latecomer", outcome="ok") in stopped  # kept


@pytest.mark.anyio
async def test_the_instrumentation_drops_what_exceeds_the_limit_and_the_kernel_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    config = {"plugins": {"metrics": {"settings": {"max_series_per_metric": 12}}}}
    async with kernel_with(metrics, Librarian(), Grump(), config=config) as kernel:
        for _ in range(2):
            kernel.hooks.call(Specs.describe, topic="x")
            await kernel.invoke("library.lookup")
        values = await scrape(metrics)
    assert sum(1 for name, _ in values if name == "orion_hook_calls_total") <= 12
    assert "exceeded its limit of 12 series" in caplog.text
    assert caplog.text.count("kernel instrumentation: metric 'orion_hook_calls_total'") == 1


@pytest.mark.anyio
async def test_the_instrumentation_metrics_cannot_be_declared_by_others() -> None:
    metrics = Metrics()
    async with kernel_with(metrics, Librarian()):
        registry = metrics.registry
        for name in ("orion_hook_calls_total", "orion_invoke_duration_seconds"):
            with pytest.raises(MetricsError, match=rf"metric '{name}' is kept by the metrics plugin's kernel"):
                registry.counter(name, "mine", ["hook", "plugin", "outcome"])
        registry.gauge("orion_custom_things", "Other orion_ names are free.").set(1)


@pytest.mark.anyio
async def test_namespace_and_instrumentation_switch() -> None:
    renamed, bare = Metrics(), Metrics()
    async with kernel_with(renamed, config={"plugins": {"metrics": {"settings": {"namespace": "acme"}}}}):
        values = await scrape(renamed)
    async with kernel_with(bare, config={"plugins": {"metrics": {"settings": {"instrument_kernel": False}}}}):
        nothing = await scrape(bare)
    assert key("acme_plugin_state", plugin="metrics", state="running") in values
    assert not any(name.startswith("orion_") for name, _ in values)
    assert nothing == {}


@pytest.mark.parametrize(
    ("settings", "path", "message"),
    [
        ({"max_series_per_metric": 0}, "max_series_per_metric", "must be > 0"),
        ({"latency_buckets": [1, 0.5]}, "latency_buckets", "strictly increasing"),
        ({"latency_buckets": []}, "latency_buckets", "at least one"),
        ({"namespace": "bad-name"}, "namespace", "Prometheus name prefix"),
        ({"max_series": 5}, "max_series", "did you mean 'max_series_per_metric'"),
    ],
)
def test_bad_settings_are_config_errors_naming_their_path(settings: dict[str, Any], path: str, message: str) -> None:
    kernel = Kernel({"plugins": {"metrics": {"settings": settings}}}, plugins=[Metrics()], environ={})
    with pytest.raises(ConfigError) as caught:
        kernel.prepare()
    text = str(caught.value)
    assert f"plugins.metrics.settings.{path}" in text and message in text


@pytest.mark.anyio
async def test_a_restart_with_the_same_settings_keeps_the_registry() -> None:
    metrics = Metrics()
    async with kernel_with(metrics, Scraper()):
        first = metrics.registry
    async with kernel_with(metrics, Scraper()):
        assert metrics.registry is first
        values = await scrape(metrics)
    assert values[key("scraper_jobs_total", kind="warmup")] == 2


# -- end to end through the http plugin ---------------------------------------------------


class Client(Plugin):
    name = "client"
    version = "1.0.0"
    requires = ("http",)

    async def start(self, ctx: PluginContext[Any]) -> None:
        self.ctx = ctx

    @property
    def base_url(self) -> str:
        return str(self.ctx.service("http").base_url)


@pytest.mark.anyio
async def test_metrics_served_by_the_http_plugin() -> None:
    http = pytest.importorskip("builtin_plugins.http")
    client_plugin = Client()
    config = {"plugins": {"http": {"permissions": ["net:listen:127.0.0.1:*"], "settings": {"port": 0}}}}
    plugins = [http.HttpServer(), Metrics(), Librarian(), client_plugin]
    async with Kernel(config, plugins=plugins, hookspecs=[Specs], environ={}) as kernel:
        await kernel.invoke("library.lookup")
        async with httpx.AsyncClient(base_url=client_plugin.base_url) as client:
            text = await client.get("/metrics")
            om = await client.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert text.status_code == 200 and text.headers["content-type"] == TEXT_CONTENT_TYPE
    assert om.headers["content-type"] == OPENMETRICS_CONTENT_TYPE
    values = values_of(parse_text(text.text))
    assert values[key("orion_invoke_calls_total", operation="library.lookup", outcome="ok")] == 1
    assert values[key("orion_plugin_state", plugin="http", state="running")] == 1
    assert values_of(parse_openmetrics(om.text))[key("orion_plugin_state", plugin="metrics", state="running")] == 1
