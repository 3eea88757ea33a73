"""The alert engine: sample history, rule evaluation, alert states and silences.

Kept free of I/O and of the kernel so its semantics can be tested (and read)
on their own: :meth:`Engine.evaluate` takes what the metrics registry
returned and the current time, advances every alert's state, and returns the
notifications to deliver.  The plugin only samples, delivers and schedules.

Deduplication is a reconciliation, not a flag per transition: each alert
remembers what receivers were last *told* (``firing``, ``resolved`` or
nothing), and a notification goes out only when the alert's state differs
from it and no silence mutes it.  So a firing alert is announced once however
often it is evaluated; an alert that fires and resolves entirely inside a
silence is never announced; and when a silence expires, receivers learn the
current truth (a late ``firing``, or the ``resolved`` of an alert they saw
fire) -- the way Alertmanager behaves.
"""

from __future__ import annotations

import collections
import itertools
import operator
import uuid
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from datetime import UTC
from datetime import datetime
from typing import Any
from typing import Final
from typing import Literal
from typing import TypeAlias

import attrs

from plugin_sdk import AlertEvent
from plugin_sdk import MetricFamily

from ._config import AlertsSettings
from ._config import Rule

#: a series: its sample name and its labels, sorted
SeriesKey: TypeAlias = tuple[str, tuple[tuple[str, str], ...]]
#: one alert: its rule's name and the series it watches
AlertKey: TypeAlias = tuple[str, SeriesKey]
State = Literal["pending", "firing", "resolved"]
Told = Literal["firing", "resolved"]

#: resolved alerts stay listed this long (seconds) once receivers know, like Prometheus' resolved retention
RESOLVED_RETENTION: Final = 900.0

_COMPARE: Final[dict[str, Callable[[float, float], bool]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


def increase(values: Sequence[float]) -> float:
    """How much a counter grew across ``values`` (oldest first), counting resets as restarts from 0."""
    total = 0.0
    for previous, current in itertools.pairwise(values):
        total += current - previous if current >= previous else current
    return total


def window_value(function: str, points: Sequence[tuple[float, float]], now: float, window: float) -> float | None:
    """The value a rule compares, from one series' ``(time, value)`` points (oldest first).

    ``last`` is the newest value; ``avg`` the mean of the values sampled in
    ``[now - window, now]``; ``rate`` the increase from the newest point at or
    before ``now - window`` (or the oldest one, while history is shorter) to
    the newest, per second.  ``None`` when there is not enough data (``rate``
    needs two points).
    """
    if not points:
        return None
    if function == "last":
        return points[-1][1]
    start = now - window
    if function == "avg":
        inside = [value for when, value in points if when >= start]
        return sum(inside) / len(inside) if inside else None
    base = 0
    for index, (when, _) in enumerate(points):
        if when <= start:
            base = index
        else:
            break
    chosen = list(itertools.islice(points, base, None))  # points may be a deque
    elapsed = chosen[-1][0] - chosen[0][0] if len(chosen) >= 2 else 0.0
    if elapsed <= 0:
        return None
    return increase([value for _, value in chosen]) / elapsed


def select(rule: Rule, families: Iterable[MetricFamily]) -> Iterator[tuple[SeriesKey, dict[str, str], float]]:
    """The series of ``families`` that ``rule`` watches: ``(key, labels, value)``.

    ``rule.metric`` names a sample: a counter's (``x_total``, which ``x``
    also selects), a gauge's, or a histogram's parts (``x_bucket``,
    ``x_count``, ``x_sum``).  The rule's labels must all be present with
    equal values.
    """
    total = rule.metric + "_total"
    for family in families:
        counter = family.kind == "counter"
        for sample in family.samples:
            if sample.name != rule.metric and not (counter and sample.name == total):
                continue
            if all(sample.labels.get(key) == value for key, value in rule.labels.items()):
                labels = dict(sample.labels)
                yield (sample.name, tuple(sorted(labels.items()))), labels, float(sample.value)


class _Labels(dict[str, str]):
    """Labels in a summary template: ``{labels}`` reads ``a=1, b=2``; a missing ``{labels[x]}`` is empty."""

    def __missing__(self, key: str) -> str:
        return ""

    def __str__(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in sorted(self.items()))


def _selector(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{value}"' for key, value in sorted(labels.items())) + "}"


def default_summary(rule: Rule, labels: Mapping[str, str], value: float, state: str) -> str:
    """``rate(x{a="b"}[60s]) = 0.31 > 0.1 for 30s``, or ``... = 0.02, no longer > 0.1`` when resolved."""
    series = f"{rule.metric}{_selector(labels)}"
    if rule.function == "rate":
        expression = f"rate({series}[{rule.window:g}s])"
    elif rule.function == "avg":
        expression = f"avg_over_time({series}[{rule.window:g}s])"
    else:
        expression = series
    if state == "resolved":
        return f"{expression} = {value:.4g}, no longer {rule.op} {rule.threshold:g}"
    held = f" for {rule.for_seconds:g}s" if rule.for_seconds > 0 else ""
    return f"{expression} = {value:.4g} {rule.op} {rule.threshold:g}{held}"


def render_summary(rule: Rule, labels: Mapping[str, str], value: float, state: str) -> str:
    """The rule's ``summary`` template filled in, or the default summary."""
    if not rule.summary:
        return default_summary(rule, labels, value, state)
    fields: dict[str, Any] = {
        "rule": rule.name,
        "metric": rule.metric,
        "function": rule.function,
        "window": rule.window,
        "op": rule.op,
        "threshold": rule.threshold,
        "for_seconds": rule.for_seconds,
        "severity": rule.severity,
        "value": value,
        "state": state,
        "labels": _Labels(labels),
    }
    try:
        return rule.summary.format_map(fields)
    except (KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:
        # A format spec that does not fit its value ({rule:.2f}) is only found out here.
        return f"{default_summary(rule, labels, value, state)} (summary template failed: {exc})"


@attrs.define
class Alert:
    """One rule applied to one series, while it is pending, firing or recently resolved."""

    rule: Rule
    labels: dict[str, str]
    state: State
    #: the value compared at the last evaluation that had one
    value: float
    #: when the condition started to hold (the start of ``pending``)
    active_since: float
    firing_since: float | None = None
    resolved_at: float | None = None
    #: what receivers were last told about this alert
    told: Told | None = None
    #: a silence mutes it now
    silenced: bool = False

    def event(self, state: Told) -> AlertEvent:
        """The notification of this alert in ``state``."""
        return AlertEvent(
            rule=self.rule.name,
            state=state,
            labels=dict(self.labels),
            value=self.value,
            summary=render_summary(self.rule, self.labels, self.value, state),
            since=self.firing_since if self.firing_since is not None else self.active_since,
            severity=self.rule.severity,
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the ``alerts.list`` operation."""
        return {
            "rule": self.rule.name,
            "labels": dict(self.labels),
            "state": self.state,
            "value": self.value,
            "severity": self.rule.severity,
            "summary": render_summary(self.rule, self.labels, self.value, self.state),
            "active_since": self.active_since,
            "firing_since": self.firing_since,
            "resolved_at": self.resolved_at,
            "silenced": self.silenced,
            "notified": self.told,
        }


@attrs.frozen
class SilenceEntry:
    """A silence in force: from config or added with ``alerts.silence``."""

    id: str
    rule: str
    labels: Mapping[str, str]
    #: expiry, seconds since the epoch
    until: float
    comment: str
    source: Literal["config", "runtime"]

    def matches(self, alert: Alert, now: float) -> bool:
        """Whether this silence mutes ``alert`` at ``now``."""
        return (
            now < self.until
            and self.rule == alert.rule.name
            and all(alert.labels.get(key) == value for key, value in self.labels.items())
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the ``alerts.list`` and ``alerts.silence`` operations."""
        return {
            "id": self.id,
            "rule": self.rule,
            "labels": dict(self.labels),
            "until": self.until,
            "until_iso": datetime.fromtimestamp(self.until, UTC).isoformat(),
            "comment": self.comment,
            "source": self.source,
        }


def _config_silences(settings: AlertsSettings) -> list[SilenceEntry]:
    return [
        SilenceEntry(
            id=f"config-{index}",
            rule=silence.rule,
            labels=dict(silence.labels),
            until=silence.until_epoch,
            comment=silence.comment,
            source="config",
        )
        for index, silence in enumerate(settings.silences)
    ]


class Engine:
    """Rules, the history they need, alert states and silences; see the module docstring."""

    def __init__(self, settings: AlertsSettings) -> None:
        self.settings = settings
        self.history: dict[SeriesKey, collections.deque[tuple[float, float]]] = {}
        self.alerts: dict[AlertKey, Alert] = {}
        self.silences: list[SilenceEntry] = _config_silences(settings)

    def reconfigure(self, settings: AlertsSettings) -> None:
        """Apply new settings; alerts of rules that keep their name keep their state.

        Alerts of removed rules resolve at the next evaluation (receivers that
        saw them fire are told).  Config silences are replaced; runtime ones stay.
        """
        self.settings = settings
        rules = {rule.name: rule for rule in settings.rules}
        for alert in self.alerts.values():
            alert.rule = rules.get(alert.rule.name, alert.rule)
        runtime = [entry for entry in self.silences if entry.source == "runtime"]
        self.silences = _config_silences(settings) + runtime

    @property
    def longest_window(self) -> float:
        """The history every series keeps, in seconds."""
        return max((rule.window for rule in self.settings.rules), default=0.0)

    def evaluate(self, families: Sequence[MetricFamily], now: float) -> list[AlertEvent]:
        """Take one sample of every watched series at ``now``, advance every alert,
        and return the notifications due (already counted as told)."""
        selected: dict[str, list[tuple[SeriesKey, dict[str, str]]]] = {}
        current: dict[SeriesKey, float] = {}
        for rule in self.settings.rules:
            found = selected[rule.name] = []
            for key, labels, sampled in select(rule, families):
                found.append((key, labels))
                current[key] = sampled
        self._record(current, now)
        seen: set[AlertKey] = set()
        for rule in self.settings.rules:
            for key, labels in selected[rule.name]:
                value = window_value(rule.function, self.history[key], now, rule.window)
                holds = value is not None and _COMPARE[rule.op](value, rule.threshold)
                seen.add((rule.name, key))
                self._step((rule.name, key), rule, labels, value, holds, now)
        for alert_key, alert in list(self.alerts.items()):
            if alert_key not in seen:  # the series is gone, or the rule is
                self._step(alert_key, alert.rule, alert.labels, None, False, now)
        return self._reconcile(now)

    def _record(self, current: Mapping[SeriesKey, float], now: float) -> None:
        for key in list(self.history):
            if key not in current:
                del self.history[key]
        cutoff = now - self.longest_window
        for key, value in current.items():
            points = self.history.setdefault(key, collections.deque())
            if points and points[-1][0] >= now:  # evaluated twice at one instant: keep the newer sample
                points.pop()
            points.append((now, value))
            # Keep the newest point at or before the cutoff: it is the baseline of the longest rate.
            while len(points) >= 2 and points[1][0] <= cutoff:
                points.popleft()

    def _step(
        self, key: AlertKey, rule: Rule, labels: dict[str, str], value: float | None, holds: bool, now: float
    ) -> None:
        alert = self.alerts.get(key)
        if holds:
            assert value is not None
            if alert is None:
                alert = self.alerts[key] = Alert(
                    rule=rule, labels=labels, state="pending", value=value, active_since=now
                )
            elif alert.state == "resolved":
                alert.state, alert.active_since, alert.resolved_at = "pending", now, None
            alert.value = value
            if alert.state == "pending" and now - alert.active_since >= rule.for_seconds:
                alert.state, alert.firing_since = "firing", now
            return
        if alert is None:
            return
        if value is not None:
            alert.value = value
        if alert.state == "firing" or (alert.state == "pending" and alert.told == "firing"):
            alert.state, alert.resolved_at = "resolved", now
        elif alert.state == "pending":
            del self.alerts[key]

    def _reconcile(self, now: float) -> list[AlertEvent]:
        self.silences = [entry for entry in self.silences if now < entry.until]
        due: list[AlertEvent] = []
        for key, alert in sorted(self.alerts.items(), key=lambda item: (item[1].active_since, item[0])):
            alert.silenced = any(entry.matches(alert, now) for entry in self.silences)
            if alert.state == "firing" and alert.told != "firing" and not alert.silenced:
                alert.told = "firing"
                due.append(alert.event("firing"))
            elif alert.state == "resolved" and alert.told == "firing" and not alert.silenced:
                alert.told = "resolved"
                due.append(alert.event("resolved"))
            if (
                alert.state == "resolved"
                and alert.told != "firing"
                and alert.resolved_at is not None
                and now - alert.resolved_at >= RESOLVED_RETENTION
            ):
                del self.alerts[key]
        return due

    # -- what the plugin exposes --------------------------------------------------------

    def active(self) -> list[AlertEvent]:
        """Alerts firing now (silenced ones included), oldest first."""
        firing = [alert for alert in self.alerts.values() if alert.state == "firing"]
        firing.sort(key=lambda alert: (alert.firing_since or 0.0, alert.rule.name, sorted(alert.labels.items())))
        return [alert.event("firing") for alert in firing]

    def list_alerts(self) -> list[dict[str, Any]]:
        """Every pending, firing and recently resolved alert, oldest first."""
        alerts = sorted(self.alerts.values(), key=lambda alert: (alert.active_since, alert.rule.name))
        return [alert.as_dict() for alert in alerts]

    def list_silences(self, now: float) -> list[dict[str, Any]]:
        """Silences not yet expired at ``now``."""
        return [entry.as_dict() for entry in self.silences if now < entry.until]

    def add_silence(self, rule: str, labels: Mapping[str, str], until: float, comment: str) -> SilenceEntry:
        """Mute ``rule``'s alerts whose labels include ``labels`` until ``until`` (epoch seconds).

        Takes effect at the next evaluation.
        """
        entry = SilenceEntry(
            id=uuid.uuid4().hex[:12], rule=rule, labels=dict(labels), until=until, comment=comment, source="runtime"
        )
        self.silences.append(entry)
        return entry

    def remove_silence(self, silence_id: str) -> bool:
        """End the silence ``silence_id`` now; ``False`` when there is none by that id."""
        kept = [entry for entry in self.silences if entry.id != silence_id]
        removed = len(kept) != len(self.silences)
        self.silences = kept
        return removed
