"""The ``alerts`` plugin: rule functions, states, dedupe, silences, notifiers and config errors.

Time is a fake clock: tests set metric values, advance the clock and call
``evaluate()``; nothing sleeps.  The metrics service is a small fake registry
that satisfies :class:`plugin_sdk.MetricsRegistry`, provided by a test plugin.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from collections.abc import Mapping
from collections.abc import Sequence
from contextlib import asynccontextmanager
from datetime import UTC
from datetime import datetime
from typing import Any

import anyio
import attrs
import pytest
from anyio import wait_all_tasks_blocked

from builtin_plugins.monitoring.alerts import Alerts
from builtin_plugins.monitoring.alerts import AlertsSettings
from builtin_plugins.monitoring.alerts import Engine
from builtin_plugins.monitoring.alerts import Rule
from builtin_plugins.monitoring.alerts._engine import increase
from builtin_plugins.monitoring.alerts._engine import window_value
from kernel import Kernel
from plugin_sdk import AlertEvent
from plugin_sdk import AlertStatus
from plugin_sdk import ConfigError
from plugin_sdk import HealthStatus
from plugin_sdk import InvalidArguments
from plugin_sdk import Invocation
from plugin_sdk import MetricFamily
from plugin_sdk import MetricKind
from plugin_sdk import MetricsRegistry
from plugin_sdk import OperationFailed
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginState
from plugin_sdk import Sample
from plugin_sdk import hookimpl
from plugin_sdk import hookspecs

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


# -- fakes ------------------------------------------------------------------------------


class FakeClock:
    """``now()`` moves only when told; ``sleep()`` returns once the clock has been advanced past its end."""

    def __init__(self, start: float = T0) -> None:
        self.t = start
        self._sleepers: list[tuple[float, anyio.Event]] = []
        self._asleep: anyio.Event | None = None  # set while someone sleeps on this clock

    def now(self) -> float:
        return self.t

    def _asleep_event(self) -> anyio.Event:
        if self._asleep is None:
            self._asleep = anyio.Event()
        return self._asleep

    async def sleep(self, seconds: float) -> None:
        event = anyio.Event()
        self._sleepers.append((self.t + seconds, event))
        self._asleep_event().set()
        await event.wait()

    def advance(self, seconds: float) -> None:
        self.t += seconds
        for entry in list(self._sleepers):
            if entry[0] <= self.t:
                self._sleepers.remove(entry)
                entry[1].set()
                self._asleep = None

    async def until_asleep(self) -> None:
        """Let the plugin's loop run until it waits on this clock again (its work for now is done)."""
        with anyio.fail_after(5):
            await self._asleep_event().wait()


def _key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


class _Series:
    def __init__(self, name: str, kind: MetricKind, labels: Sequence[str]) -> None:
        self.name = name
        self.kind = kind
        self.labels = tuple(labels)
        self.values: dict[tuple[tuple[str, str], ...], float] = {}

    def _check(self, labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        assert set(labels) == set(self.labels), f"{self.name}: labels {sorted(labels)} != {sorted(self.labels)}"
        return _key(labels)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._check(labels)
        self.values[key] = self.values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)

    def set(self, value: float, **labels: str) -> None:
        self.values[self._check(labels)] = value

    def family(self) -> MetricFamily:
        samples = tuple(Sample(self.name, dict(key), value) for key, value in sorted(self.values.items()))
        return MetricFamily(self.name, self.kind, "", samples)


class FakeRegistry:
    """Counters and gauges only (the alert tests need no histograms); ``fail`` makes ``collect()`` raise."""

    def __init__(self) -> None:
        self.metrics: dict[str, _Series] = {}
        self.fail = False

    def _get(self, name: str, kind: MetricKind, labels: Sequence[str]) -> _Series:
        metric = self.metrics.setdefault(name, _Series(name, kind, labels))
        assert metric.kind == kind
        return metric

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> _Series:
        return self._get(name, "counter", labels)

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> _Series:
        return self._get(name, "gauge", labels)

    def histogram(
        self, name: str, help: str, labels: Sequence[str] = (), buckets: Sequence[float] | None = None
    ) -> _Series:
        raise NotImplementedError("not needed by these tests")

    def collect(self) -> list[MetricFamily]:
        if self.fail:
            raise RuntimeError("registry unavailable")
        return [metric.family() for _, metric in sorted(self.metrics.items())]


class FakeMetrics(Plugin):
    name = "fake_metrics"
    provides = ("metrics",)

    def __init__(self, registry: FakeRegistry) -> None:
        self.registry = registry

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.provide("metrics", self.registry)


class Recorder(Plugin):
    """A notifier that keeps every event."""

    name = "recorder"

    def __init__(self) -> None:
        self.events: list[AlertEvent] = []

    @hookimpl
    async def alert_notify(self, event: AlertEvent) -> None:
        self.events.append(event)

    def states(self) -> list[tuple[str, str]]:
        return [(event.rule, event.state) for event in self.events]


class Broken(Plugin):
    """A notifier that always raises, and runs before the others."""

    name = "broken"
    priority = 10

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    async def alert_notify(self, event: AlertEvent) -> None:
        self.calls += 1
        raise ConnectionError("pager unreachable")


class Consumer(Plugin):
    """Uses the alerts service the way a dashboard would."""

    name = "consumer"
    requires = ("alerts",)

    async def start(self, ctx: PluginContext[Any]) -> None:
        self.status: AlertStatus = ctx.service("alerts")


@attrs.frozen
class Harness:
    kernel: Kernel
    alerts: Alerts
    registry: FakeRegistry
    recorder: Recorder
    clock: FakeClock


@asynccontextmanager
async def running(
    settings: Mapping[str, Any], *extra: Plugin, registry: FakeRegistry | None = None
) -> AsyncIterator[Harness]:
    """A kernel with the fake metrics, the alerts plugin on a fake clock and a recording notifier.

    Tests use a long ``interval`` unless they test the loop, so that only
    their own ``evaluate()`` calls advance the alerts.
    """
    registry = registry or FakeRegistry()
    clock = FakeClock()
    alerts = Alerts(clock=clock)
    recorder = Recorder()
    config = {"plugins": {"alerts": {"settings": {"interval": 3600, **settings}}}}
    async with Kernel(config, plugins=[FakeMetrics(registry), alerts, recorder, *extra], environ={}) as kernel:
        await clock.until_asleep()  # the loop's first evaluation, at T0, is done
        yield Harness(kernel, alerts, registry, recorder, clock)


def rule(**fields: Any) -> dict[str, Any]:
    return {"name": "r", "metric": "load", "op": ">", "threshold": 5, **fields}


# -- the functions a rule computes ----------------------------------------------------------


def test_window_value_functions() -> None:
    points = [(0.0, 0.0), (15.0, 10.0), (30.0, 20.0), (45.0, 30.0), (60.0, 100.0)]
    assert window_value("last", points, 60.0, 60.0) == 100.0
    assert window_value("avg", points, 60.0, 60.0) == pytest.approx(32.0)  # both ends included
    assert window_value("avg", points, 60.0, 30.0) == pytest.approx(50.0)
    assert window_value("rate", points, 60.0, 60.0) == pytest.approx(100.0 / 60)
    assert window_value("rate", points, 60.0, 30.0) == pytest.approx(80.0 / 30)  # from t=30
    # the baseline is the newest point at or before the window's start
    assert window_value("rate", points, 60.0, 40.0) == pytest.approx(90.0 / 45)  # from t=15
    # while history is shorter than the window, the oldest point is the baseline
    assert window_value("rate", points[2:], 60.0, 600.0) == pytest.approx(80.0 / 30)
    assert window_value("rate", points[:1], 0.0, 60.0) is None  # one point: no rate
    assert window_value("last", [], 0.0, 60.0) is None


def test_increase_counts_resets_as_restarts() -> None:
    assert increase([5.0, 8.0, 2.0, 4.0]) == 3.0 + 2.0 + 2.0
    assert increase([5.0]) == 0.0


@pytest.mark.parametrize(
    ("op", "value", "fires"),
    [
        (">", 6.0, True),
        (">", 5.0, False),
        (">=", 5.0, True),
        (">=", 4.9, False),
        ("<", 4.0, True),
        ("<", 5.0, False),
        ("<=", 5.0, True),
        ("<=", 5.1, False),
        ("==", 5.0, True),
        ("==", 5.5, False),
        ("!=", 5.5, True),
        ("!=", 5.0, False),
    ],
)
def test_each_comparison_op(op: str, value: float, fires: bool) -> None:
    registry = FakeRegistry()
    registry.gauge("load", "").set(value)
    engine = Engine(AlertsSettings(rules=(Rule(name="r", metric="load", op=op, threshold=5.0),)))  # type: ignore[arg-type]
    events = engine.evaluate(registry.collect(), T0)
    assert [(e.rule, e.state, e.value) for e in events] == ([("r", "firing", value)] if fires else [])


@pytest.mark.anyio
async def test_rate_avg_and_last_over_windows() -> None:
    rules = [
        rule(name="rate_high", metric="requests_total", function="rate", window=60, threshold=1.5),
        rule(name="avg_60", metric="temperature", function="avg", window=60, threshold=40),
        rule(name="avg_30", metric="temperature", function="avg", window=30, threshold=40),
        rule(name="last", metric="temperature", function="last", threshold=90),
    ]
    async with running({"rules": rules}) as h:
        requests = h.registry.counter("requests_total", "")
        temperature = h.registry.gauge("temperature", "")
        # the loop sampled nothing at T0 (no series yet): sample T0 now
        requests.inc(0.0)
        temperature.set(0.0)
        await h.alerts.evaluate()
        for step, temp in enumerate((10.0, 20.0, 30.0, 100.0), start=1):
            h.clock.advance(15)
            requests.inc(30.0)  # 2 per second
            temperature.set(temp)
            await h.alerts.evaluate()
            if step == 3:  # t=45: rate is 2/s but avg and last are low
                assert h.recorder.states() == [("rate_high", "firing")]
        listed = {a["rule"]: a["value"] for a in (await h.kernel.invoke("alerts.list"))["alerts"]}
        assert listed == {"rate_high": pytest.approx(2.0), "avg_30": pytest.approx(50.0), "last": 100.0}
        assert sorted(h.recorder.states()) == [("avg_30", "firing"), ("last", "firing"), ("rate_high", "firing")]

        # a counter reset (process restart) is an increase from zero, not a negative rate
        requests.set(10.0)
        h.clock.advance(15)
        await h.alerts.evaluate()
        listed = {a["rule"]: a for a in (await h.kernel.invoke("alerts.list"))["alerts"]}
        assert listed["rate_high"]["value"] == pytest.approx((30 + 30 + 30 + 10) / 60)
        assert listed["rate_high"]["state"] == "firing"


# -- states -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_pending_then_firing_only_after_for() -> None:
    async with running({"rules": [rule(for_seconds=30)]}) as h:
        h.registry.gauge("load", "").set(9.0)
        await h.alerts.evaluate()
        [pending] = (await h.kernel.invoke("alerts.list"))["alerts"]
        assert (pending["state"], pending["active_since"], pending["firing_since"]) == ("pending", T0, None)
        h.clock.advance(15)
        await h.alerts.evaluate()
        assert h.recorder.events == []
        assert h.alerts.active() == []
        h.clock.advance(15)
        await h.alerts.evaluate()
        [event] = h.recorder.events
        assert (event.rule, event.state, event.value, event.since) == ("r", "firing", 9.0, T0 + 30)
        assert event.severity == "warning"
        assert event.summary == "load = 9 > 5 for 30s"
        assert h.alerts.active() == [event]


@pytest.mark.anyio
async def test_pending_that_clears_is_never_notified() -> None:
    async with running({"rules": [rule(for_seconds=60)]}) as h:
        load = h.registry.gauge("load", "")
        load.set(9.0)
        await h.alerts.evaluate()
        h.clock.advance(30)
        load.set(1.0)
        await h.alerts.evaluate()
        assert (await h.kernel.invoke("alerts.list"))["alerts"] == []
        # the hold starts over: 59 s of a new episode are not enough
        load.set(9.0)
        h.clock.advance(30)
        await h.alerts.evaluate()
        h.clock.advance(59)
        await h.alerts.evaluate()
        assert h.recorder.events == []
        h.clock.advance(1)
        await h.alerts.evaluate()
        assert h.recorder.states() == [("r", "firing")]


@pytest.mark.anyio
async def test_resolved_and_dedupe() -> None:
    async with running({"rules": [rule()]}) as h:
        load = h.registry.gauge("load", "")
        load.set(9.0)
        for _ in range(20):
            await h.alerts.evaluate()
            h.clock.advance(15)
        assert h.recorder.states() == [("r", "firing")]
        load.set(2.0)
        for _ in range(20):
            await h.alerts.evaluate()
            h.clock.advance(15)
        assert h.recorder.states() == [("r", "firing"), ("r", "resolved")]
        resolved = h.recorder.events[1]
        assert resolved.since == T0  # when it started firing
        assert resolved.value == 2.0
        assert resolved.summary == "load = 2, no longer > 5"
        assert h.alerts.active() == []
        [listed] = (await h.kernel.invoke("alerts.list"))["alerts"]
        assert (listed["state"], listed["notified"]) == ("resolved", "resolved")
        # a new episode is a new notification
        load.set(7.0)
        await h.alerts.evaluate()
        assert h.recorder.states()[-1] == ("r", "firing")
        assert len(h.recorder.events) == 3


@pytest.mark.anyio
async def test_one_alert_per_matching_series() -> None:
    rules = [rule(metric="errors_total", labels={"service": "api"}, threshold=0)]
    async with running({"rules": rules}) as h:
        errors = h.registry.counter("errors_total", "", labels=("service", "code"))
        errors.inc(1, service="api", code="500")
        errors.inc(1, service="api", code="502")
        errors.inc(1, service="web", code="500")  # not selected
        await h.alerts.evaluate()
        assert sorted(dict(e.labels)["code"] for e in h.recorder.events) == ["500", "502"]
        assert all(dict(e.labels)["service"] == "api" for e in h.recorder.events)
        assert [dict(e.labels) for e in h.alerts.active()] == [
            {"code": "500", "service": "api"},
            {"code": "502", "service": "api"},
        ]
        # a series that disappears resolves its alert
        del errors.values[(("code", "502"), ("service", "api"))]
        h.clock.advance(15)
        await h.alerts.evaluate()
        assert [(dict(e.labels)["code"], e.state) for e in h.recorder.events[2:]] == [("502", "resolved")]


@pytest.mark.anyio
async def test_summary_template_and_severity() -> None:
    template = "{labels[service]} load {value:.1f} {op} {threshold:g} ({state}; {labels})"
    rules = [rule(severity="critical", summary=template, labels={"service": "api"})]
    async with running({"rules": rules}) as h:
        load = h.registry.gauge("load", "", labels=("service",))
        load.set(9.25, service="api")
        await h.alerts.evaluate()
        load.set(1.0, service="api")
        h.clock.advance(15)
        await h.alerts.evaluate()
        assert [(e.severity, e.summary) for e in h.recorder.events] == [
            ("critical", "api load 9.2 > 5 (firing; service=api)"),
            ("critical", "api load 1.0 > 5 (resolved; service=api)"),
        ]


# -- silences -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_config_silence_suppresses_until_it_expires() -> None:
    silence = {"rule": "r", "until": iso(T0 + 100), "comment": "maintenance"}
    async with running({"rules": [rule()], "silences": [silence]}) as h:
        load = h.registry.gauge("load", "")
        load.set(9.0)
        await h.alerts.evaluate()
        # the state changes, the notification does not go out
        assert [e.rule for e in h.alerts.active()] == ["r"]
        listed = await h.kernel.invoke("alerts.list")
        assert listed["alerts"][0]["state"] == "firing"
        assert listed["alerts"][0]["silenced"] is True
        assert listed["silences"] == [
            {
                "id": "config-0",
                "rule": "r",
                "labels": {},
                "until": T0 + 100,
                "until_iso": "2027-01-15T08:01:40+00:00",
                "comment": "maintenance",
                "source": "config",
            }
        ]
        # fired and resolved inside the silence: receivers never hear of it
        h.clock.advance(30)
        load.set(1.0)
        await h.alerts.evaluate()
        assert h.recorder.events == []
        # after expiry a new transition is delivered
        h.clock.advance(100)
        load.set(9.0)
        await h.alerts.evaluate()
        assert h.recorder.states() == [("r", "firing")]
        assert (await h.kernel.invoke("alerts.list"))["silences"] == []


@pytest.mark.anyio
async def test_expired_silence_delivers_what_receivers_missed() -> None:
    silence = {"rule": "r", "until": iso(T0 + 60)}
    async with running({"rules": [rule()], "silences": [silence]}) as h:
        load = h.registry.gauge("load", "")
        load.set(9.0)
        await h.alerts.evaluate()
        h.clock.advance(59)
        await h.alerts.evaluate()
        assert h.recorder.events == []
        h.clock.advance(1)  # the silence has expired and the alert still fires: announce it, once
        await h.alerts.evaluate()
        h.clock.advance(15)
        await h.alerts.evaluate()
        [event] = h.recorder.events
        assert (event.state, event.since) == ("firing", T0)


@pytest.mark.anyio
async def test_runtime_silence_operation() -> None:
    rules = [rule(labels={"host": "a"}), rule(name="other", labels={"host": "a"})]
    async with running({"rules": rules}) as h:
        silenced = await h.kernel.invoke(
            "alerts.silence", {"rule": "r", "labels": {"host": "a"}, "duration": 120, "comment": "deploy"}
        )
        assert silenced["until"] == T0 + 120
        assert (silenced["rule"], silenced["labels"], silenced["source"]) == ("r", {"host": "a"}, "runtime")
        listed = await h.kernel.invoke("alerts.list")
        assert [s["id"] for s in listed["silences"]] == [silenced["id"]]

        h.registry.gauge("load", "", labels=("host",)).set(9.0, host="a")
        await h.alerts.evaluate()
        assert h.recorder.states() == [("other", "firing")]  # only rule "r" is silenced
        h.clock.advance(120)
        await h.alerts.evaluate()
        assert h.recorder.states() == [("other", "firing"), ("r", "firing")]

        # a silence can be ended early
        again = await h.kernel.invoke("alerts.silence", {"rule": "other", "duration": 3600})
        assert await h.kernel.invoke("alerts.unsilence", {"id": again["id"]}) == {"id": again["id"], "removed": True}
        assert await h.kernel.invoke("alerts.unsilence", {"id": again["id"]}) == {"id": again["id"], "removed": False}

        with pytest.raises(InvalidArguments, match="no rule named 'nope'") as bad_rule:
            await h.kernel.invoke("alerts.silence", {"rule": "nope", "duration": 60})
        assert [issue.path for issue in bad_rule.value.issues] == ["args.rule"]
        with pytest.raises(InvalidArguments) as bad_duration:
            await h.kernel.invoke("alerts.silence", {"rule": "r", "duration": -5})
        assert [issue.path for issue in bad_duration.value.issues] == ["args.duration"]


# -- notifiers -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_failing_notifier_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    broken = Broken()
    async with running({"rules": [rule()]}, broken) as h:
        caplog.set_level(logging.INFO, logger="orion")
        load = h.registry.gauge("load", "")
        load.set(9.0)
        await h.alerts.evaluate()
        load.set(1.0)
        h.clock.advance(15)
        await h.alerts.evaluate()
        assert broken.calls == 2
        assert h.recorder.states() == [("r", "firing"), ("r", "resolved")]
        logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "orion.plugin.alerts"]
        assert (logging.WARNING, "alert r FIRING [warning] {}: load = 9 > 5") in logged
        assert (logging.INFO, "alert r RESOLVED [warning] {}: load = 1, no longer > 5") in logged
        assert h.kernel.plugins["broken"].state is PluginState.RUNNING  # 2 failures, quarantine is at 5


class Hanging(Plugin):
    """A notifier that never returns, and runs before the others."""

    name = "hanging"
    priority = 10

    @hookimpl
    async def alert_notify(self, event: AlertEvent) -> None:
        await anyio.sleep_forever()


@pytest.mark.anyio
async def test_a_hanging_notifier_does_not_starve_the_others(caplog: pytest.LogCaptureFixture) -> None:
    registry = FakeRegistry()
    registry.gauge("load", "").set(9.0)
    clock = FakeClock()
    alerts = Alerts(clock=clock)
    recorder = Recorder()
    config = {
        "kernel": {"hook_timeouts": {"alert_notify": 0.05}},  # real seconds: the kernel's deadline
        "plugins": {"alerts": {"settings": {"interval": 3600, "rules": [rule()]}}},
    }
    async with Kernel(config, plugins=[FakeMetrics(registry), alerts, recorder, Hanging()], environ={}) as kernel:
        with anyio.fail_after(5):
            await alerts.evaluate()
        assert recorder.states() == [("r", "firing")]
        assert "alert r firing not delivered by hanging" in caplog.text
        assert kernel.plugins["hanging"].state is PluginState.RUNNING


@pytest.mark.anyio
async def test_log_notifications_can_be_turned_off(caplog: pytest.LogCaptureFixture) -> None:
    async with running({"rules": [rule()], "log_notifications": False}) as h:
        caplog.set_level(logging.INFO, logger="orion")
        h.registry.gauge("load", "").set(9.0)
        await h.alerts.evaluate()
        assert h.recorder.states() == [("r", "firing")]
        assert not [r for r in caplog.records if r.name == "orion.plugin.alerts" and "FIRING" in r.getMessage()]


# -- the plugin in the kernel -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_alerts_service_satisfies_alert_status() -> None:
    consumer = Consumer()
    async with running({"rules": [rule(), rule(name="later", threshold=8)]}, consumer) as h:
        assert isinstance(h.alerts, AlertStatus)
        load = h.registry.gauge("load", "")
        load.set(6.0)
        await h.alerts.evaluate()
        h.clock.advance(15)
        load.set(9.0)
        await h.alerts.evaluate()
        assert [(e.rule, e.since) for e in consumer.status.active()] == [("r", T0), ("later", T0 + 15)]


@pytest.mark.anyio
async def test_the_loop_evaluates_every_interval() -> None:
    registry = FakeRegistry()
    load = registry.gauge("load", "")
    load.set(9.0)
    async with running({"rules": [rule()], "interval": 15}, registry=registry) as h:
        assert h.recorder.states() == [("r", "firing")]  # the first evaluation runs at start
        load.set(1.0)
        h.clock.advance(14)
        await wait_all_tasks_blocked()
        assert h.recorder.states() == [("r", "firing")]
        h.clock.advance(1)
        await h.clock.until_asleep()
        assert h.recorder.states() == [("r", "firing"), ("r", "resolved")]


@pytest.mark.anyio
async def test_a_failing_registry_is_reported_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    registry = FakeRegistry()
    registry.gauge("load", "").set(9.0)
    registry.fail = True
    async with running({"rules": [rule()], "interval": 15}, registry=registry) as h:
        health = {o.plugin: o.value for o in await h.kernel.hooks.acall_each(hookspecs.check_health)}
        assert health["alerts"] == HealthStatus(
            ok=False, reason="alert evaluation failing: RuntimeError: registry unavailable"
        )
        assert "alert evaluation failed: RuntimeError: registry unavailable" in caplog.text
        h.registry.fail = False
        h.clock.advance(15)
        await h.clock.until_asleep()
        assert h.recorder.states() == [("r", "firing")]
        health = {o.plugin: o.value for o in await h.kernel.hooks.acall_each(hookspecs.check_health)}
        assert health["alerts"] == HealthStatus(ok=True, reason="1 rule(s), 1 firing")
        assert h.kernel.plugins["alerts"].state is PluginState.RUNNING


@pytest.mark.anyio
async def test_reload_keeps_state_of_kept_rules_and_resolves_removed_ones() -> None:
    async with running({"rules": [rule(), rule(name="gone")]}) as h:
        h.registry.gauge("load", "").set(9.0)
        await h.alerts.evaluate()
        assert sorted(h.recorder.states()) == [("gone", "firing"), ("r", "firing")]
        report = await h.kernel.reload(
            {"plugins": {"alerts": {"settings": {"interval": 3600, "rules": [rule(threshold=8)]}}}}
        )
        assert report.reconfigured == ("alerts",)
        h.clock.advance(15)
        await h.alerts.evaluate()
        # "r" still holds under its new threshold (no new notification); "gone" resolves
        assert sorted(h.recorder.states()) == [("gone", "firing"), ("gone", "resolved"), ("r", "firing")]


# -- config errors ----------------------------------------------------------------------------------


def test_config_errors_name_their_paths() -> None:
    settings = {
        "rules": [
            rule(op="=>"),
            rule(name="b", window=-5),
            rule(name="c", function="p99", for_seconds=-1),
            rule(name="d", metric="not a metric", summary="{nope}"),
            rule(name="d"),
        ],
        "silences": [{"rule": "r", "until": "tomorrow"}, {"rule": "r", "until": "2027-01-01T00:00:00"}],
    }
    kernel = Kernel(
        {"plugins": {"alerts": {"settings": settings}}},
        plugins=[FakeMetrics(FakeRegistry()), Alerts(clock=FakeClock())],
        environ={},
    )
    with pytest.raises(ConfigError) as caught:
        kernel.prepare()
    issues = {issue.path: issue.message for issue in caught.value.issues}
    prefix = "plugins.alerts.settings"
    assert issues[f"{prefix}.rules[0].op"] == "expected one of ['>', '>=', '<', '<=', '==', '!=']"
    assert issues[f"{prefix}.rules[1].window"] == "'window' must be a finite number > 0, got -5.0"
    assert issues[f"{prefix}.rules[2].function"] == "expected one of ['rate', 'avg', 'last']"
    assert f"{prefix}.rules[3].metric" in issues
    assert f"{prefix}.silences[0].until" in issues
    assert "no time zone" in issues[f"{prefix}.silences[1].until"]
    # validators of the whole table run once its fields are valid: see the next test


def test_config_errors_found_once_the_fields_are_valid() -> None:
    def issues(settings: dict[str, Any]) -> dict[str, str]:
        kernel = Kernel(
            {"plugins": {"alerts": {"settings": settings}}},
            plugins=[FakeMetrics(FakeRegistry()), Alerts(clock=FakeClock())],
            environ={},
        )
        with pytest.raises(ConfigError) as caught:
            kernel.prepare()
        return {issue.path: issue.message for issue in caught.value.issues}

    prefix = "plugins.alerts.settings"
    assert issues({"interval": 0}) == {f"{prefix}.interval": "'interval' must be a finite number > 0, got 0.0"}
    assert issues({"rules": [rule(for_seconds=-1)]}) == {
        f"{prefix}.rules[0].for_seconds": "'for_seconds' must be a finite number >= 0, got -1.0"
    }
    assert issues({"rules": [rule(summary="{nope}")]})[f"{prefix}.rules[0].summary"].startswith(
        "'summary' is not a valid template: unknown field {nope}"
    )
    assert issues({"rules": [rule(), rule()]}) == {f"{prefix}.rules": "'rules' has duplicate rule names: ['r']"}
    assert issues({"rules": [rule()], "silences": [{"rule": "x", "until": "2027-01-01T00:00:00Z"}]}) == {
        f"{prefix}.silences": "'silences' [0] names rule 'x', which is not defined (rules: r)"
    }
    found = issues({"rules": [{**rule(), "for": 30}]})
    assert list(found) == [f"{prefix}.rules[0].for"]
    assert found[f"{prefix}.rules[0].for"].startswith("unknown key")


def test_valid_config_structures() -> None:
    settings = {
        "rules": [rule(function="rate", window=300, for_seconds=60, labels={"hook": "check_health"})],
        "silences": [{"rule": "r", "until": "2027-01-01T00:00:00+01:00"}],
    }
    kernel = Kernel(
        {"plugins": {"alerts": {"settings": settings}}},
        plugins=[FakeMetrics(FakeRegistry()), Alerts(clock=FakeClock())],
        environ={},
    )
    kernel.prepare()
    assert kernel.plugins["alerts"].state is PluginState.CONFIGURED
    assert isinstance(FakeRegistry(), MetricsRegistry)


# -- with the real metrics plugin ----------------------------------------------------------------------


class Tools(Plugin):
    name = "tools"

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.register_operation("tools.ok", self.ok)
        ctx.register_operation("tools.fail", self.fail)

    async def ok(self, inv: Invocation) -> str:
        return "ok"

    async def fail(self, inv: Invocation) -> str:
        raise RuntimeError("tool broke")


@pytest.mark.anyio
async def test_a_rule_over_the_real_metrics_plugin() -> None:
    from builtin_plugins.monitoring.metrics import Metrics

    clock = FakeClock()
    alerts = Alerts(clock=clock)
    recorder = Recorder()
    # "orion_invoke_calls" selects the counter's "orion_invoke_calls_total" samples
    rules = [
        rule(
            name="invoke_errors", metric="orion_invoke_calls", labels={"outcome": "error"}, function="rate", threshold=0
        )
    ]
    config = {"plugins": {"alerts": {"settings": {"interval": 3600, "rules": rules}}}}
    async with Kernel(config, plugins=[Metrics(), alerts, recorder, Tools()], environ={}) as kernel:
        await clock.until_asleep()
        await kernel.invoke("tools.ok")
        clock.advance(15)
        await alerts.evaluate()
        assert recorder.events == []
        for _ in range(3):
            with pytest.raises(OperationFailed):
                await kernel.invoke("tools.fail")
        clock.advance(15)
        await alerts.evaluate()
        [event] = recorder.events
        assert (event.rule, event.state, dict(event.labels)) == (
            "invoke_errors",
            "firing",
            {"operation": "tools.fail", "outcome": "error"},
        )
        assert event.value == pytest.approx(3 / 30)
        assert event.summary == 'rate(orion_invoke_calls{operation="tools.fail",outcome="error"}[60s]) = 0.1 > 0'
