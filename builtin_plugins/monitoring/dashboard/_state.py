"""What ``GET /dashboard/api/state`` answers, computed from plain data.

Nothing here touches the kernel, a service or the clock: the plugin gathers a
:class:`~plugin_sdk.KernelSnapshot`, the metric families, the firing alerts
and the HTTP mounts, and :func:`build_state` turns them into JSON-ready
dicts.  Keeping it pure is what lets the tests check the numbers the page
shows (quantiles, error ratios, rates) without a browser or a clock.

Quantiles follow Prometheus' ``histogram_quantile``: linear interpolation
inside the cumulative bucket that holds the rank, and the highest finite
bound when the rank falls into ``+Inf``.  They are computed over the
histograms' whole life (since the metrics plugin started), which is what the
buckets hold; rates are computed from samples the plugin keeps between polls
(:class:`InvokeRates`), since a counter alone has no notion of "now".
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Final
from typing import TypedDict

import attrs

from plugin_sdk import AlertEvent
from plugin_sdk import KernelSnapshot
from plugin_sdk import MetricFamily

#: version of the JSON shape below; bump it when a field changes meaning or goes away
SCHEMA: Final = 1
#: the series the metrics plugin keeps for every hook impl call and every invoke,
#: after its ``namespace`` (``orion_hook_calls_total``, ...)
HOOK_CALLS: Final = "hook_calls_total"
HOOK_DURATION: Final = "hook_duration_seconds"
INVOKE_CALLS: Final = "invoke_calls_total"
INVOKE_DURATION: Final = "invoke_duration_seconds"
#: outcomes counted as errors in error ratios (see plugin_sdk.Outcome)
FAILED: Final = frozenset({"error", "timeout"})
#: seconds of invoke-rate history the sparkline shows
HISTORY: Final = 60.0

Key = tuple[str, ...]


# -- the JSON shape -----------------------------------------------------------------


class PluginRow(TypedDict):
    name: str
    version: str | None
    #: a plugin_sdk.PluginState value: running, failed, quarantined, ...
    state: str
    enabled: bool
    last_error: str | None
    hooks: list[str]
    operations: list[str]


class Latency(TypedDict):
    """Calls and latency of one hook impl or one operation; ``None`` where metrics are missing."""

    calls: int | None
    #: calls that ended in ``error`` or ``timeout``
    errors: int | None
    timeouts: int | None
    error_ratio: float | None
    #: seconds, from the histogram's buckets
    p50: float | None
    p95: float | None
    mean: float | None


class HookRow(Latency):
    hook: str
    plugin: str


class OperationRow(Latency):
    operation: str
    #: the plugin that registered it (``None`` once it is gone)
    plugin: str | None
    #: calls per second over the rate window
    rate: float | None


class RatePoint(TypedDict):
    #: seconds before ``generated_at`` (<= 0)
    age: float
    rate: float


class Invokes(TypedDict):
    total: int | None
    errors: int | None
    error_ratio: float | None
    #: calls per second over ``window`` seconds (``None`` until two polls have been seen)
    rate: float | None
    window: float
    history: list[RatePoint]


class AlertRow(TypedDict):
    rule: str
    state: str
    severity: str
    summary: str
    labels: dict[str, str]
    value: float | None
    since: float


class Alerts(TypedDict):
    available: bool
    firing: list[AlertRow]


class LinkRow(TypedDict):
    prefix: str
    plugin: str
    #: relative to the dashboard page, so it survives a proxy that adds a prefix
    href: str


class Links(TypedDict):
    available: bool
    base_url: str | None
    mounts: list[LinkRow]


class State(TypedDict):
    schema: int
    #: seconds since the epoch
    generated_at: float
    #: seconds the page waits between polls
    poll_interval: float
    metrics_available: bool
    plugins: list[PluginRow]
    hooks: list[HookRow]
    operations: list[OperationRow]
    invokes: Invokes
    alerts: Alerts
    links: Links
    #: why a part of the page is empty (a service not running, a provider failing)
    notes: list[str]


# -- quantiles and series ---------------------------------------------------------------


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The ``q``-quantile (0..1) of cumulative ``(upper bound, count)`` buckets.

    :returns: ``None`` when there is no observation, or when every
        observation is in ``+Inf`` (nothing to interpolate against).
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, raw_count in ordered:
        count = max(raw_count, lower_count)  # cumulative counts never go down
        if count >= rank and count > 0:
            if math.isinf(bound):
                return lower_bound if lower_count > 0 else None
            if bound <= 0:
                return bound
            inside = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / inside if inside else 1.0)
        lower_bound, lower_count = bound, count
    return lower_bound


@attrs.define
class _Histogram:
    buckets: dict[float, float] = attrs.field(factory=dict)
    sum: float = 0.0
    count: float = 0.0


def _family(families: Mapping[str, MetricFamily], name: str) -> MetricFamily | None:
    # Accept the OpenMetrics spelling too, where a counter's family drops "_total".
    return families.get(name) or families.get(name.removesuffix("_total"))


def _outcomes(family: MetricFamily | None, keys: Sequence[str]) -> dict[Key, dict[str, float]]:
    found: dict[Key, dict[str, float]] = {}
    for sample in family.samples if family else ():
        if sample.name.endswith("_created"):
            continue
        per = found.setdefault(tuple(sample.labels.get(k, "") for k in keys), {})
        outcome = sample.labels.get("outcome", "ok")
        per[outcome] = per.get(outcome, 0.0) + sample.value
    return found


def _histograms(family: MetricFamily | None, keys: Sequence[str]) -> dict[Key, _Histogram]:
    found: dict[Key, _Histogram] = {}
    for sample in family.samples if family else ():
        hist = found.setdefault(tuple(sample.labels.get(k, "") for k in keys), _Histogram())
        if sample.name.endswith("_bucket") and "le" in sample.labels:
            try:
                bound = float(sample.labels["le"])
            except ValueError:
                continue
            hist.buckets[bound] = hist.buckets.get(bound, 0.0) + sample.value
        elif sample.name.endswith("_sum"):
            hist.sum += sample.value
        elif sample.name.endswith("_count"):
            hist.count += sample.value
    return found


def _latency(outcomes: Mapping[str, float] | None, hist: _Histogram | None, *, known: bool) -> Latency:
    if not known:
        return Latency(calls=None, errors=None, timeouts=None, error_ratio=None, p50=None, p95=None, mean=None)
    calls = sum(outcomes.values()) if outcomes else (hist.count if hist else 0.0)
    errors = sum(v for k, v in outcomes.items() if k in FAILED) if outcomes else 0.0
    buckets = list(hist.buckets.items()) if hist else []
    return Latency(
        calls=round(calls),
        errors=round(errors),
        timeouts=round(outcomes.get("timeout", 0.0)) if outcomes else 0,
        error_ratio=errors / calls if calls else None,
        p50=histogram_quantile(0.5, buckets),
        p95=histogram_quantile(0.95, buckets),
        mean=hist.sum / hist.count if hist and hist.count else None,
    )


# -- rates -------------------------------------------------------------------------------


@attrs.frozen
class _Point:
    at: float
    total: float
    per_operation: Mapping[str, float]


@attrs.define
class InvokeRates:
    """Invoke counters sampled at each poll, turned into calls per second.

    Rates come from the oldest sample inside the last ``window`` seconds (or
    the newest one before it when polls are sparse), so several pages polling
    at once see the same rate instead of splitting the calls between them.
    A counter that goes down (the metrics plugin restarted) starts afresh.
    """

    #: seconds the rate is averaged over
    window: float
    #: samples closer than this to the previous one are not kept (many pages polling)
    min_spacing: float = 0.5
    _points: deque[_Point] = attrs.field(factory=deque, init=False)

    def update(
        self, now: float, total: float, per_operation: Mapping[str, float]
    ) -> tuple[float | None, dict[str, float], list[RatePoint]]:
        """Record the counters at monotonic time ``now``.

        :returns: the total rate, each operation's rate, and the sparkline's points.
        """
        points = self._points
        if points and (total < points[-1].total or now < points[-1].at):
            points.clear()
        base = next((p for p in points if now - p.at <= self.window), points[-1] if points else None)
        rate: float | None = None
        per_rate: dict[str, float] = {}
        if base is not None and now > base.at:
            elapsed = now - base.at
            rate = max(total - base.total, 0.0) / elapsed
            per_rate = {
                op: max(calls - base.per_operation.get(op, 0.0), 0.0) / elapsed for op, calls in per_operation.items()
            }
        if not points or now - points[-1].at >= self.min_spacing:
            points.append(_Point(now, total, dict(per_operation)))
        horizon = now - max(HISTORY, self.window)
        while len(points) > 1 and points[1].at <= horizon:
            points.popleft()
        history = [
            RatePoint(age=round(b.at - now, 3), rate=max(b.total - a.total, 0.0) / (b.at - a.at))
            for a, b in zip(points, list(points)[1:], strict=False)
            if b.at > a.at
        ]
        return rate, per_rate, history


# -- the whole state ---------------------------------------------------------------------


def _alert_row(event: AlertEvent) -> AlertRow:
    value = event.value if math.isfinite(event.value) else None
    return AlertRow(
        rule=event.rule,
        state=event.state,
        severity=event.severity,
        summary=event.summary,
        labels=dict(event.labels),
        value=value,
        since=event.since,
    )


def build_state(
    snapshot: KernelSnapshot,
    *,
    families: Sequence[MetricFamily] | None,
    alerts: Sequence[AlertEvent] | None,
    mounts: Mapping[str, str] | None,
    base_url: str | None,
    own_prefix: str,
    rates: InvokeRates,
    now: float,
    wall_time: float,
    poll_interval: float,
    namespace: str = "orion",
    notes: Sequence[str] = (),
) -> State:
    """Everything the page shows, from what the plugin gathered.

    :param families: ``metrics.collect()``, or ``None`` without a metrics service.
    :param alerts: ``alerts.active()``, or ``None`` without an alerts service.
    :param mounts: ``http.mounts()`` (prefix -> plugin), or ``None`` without HTTP.
    :param own_prefix: the dashboard's own prefix, left out of the links.
    :param now: monotonic seconds, for rates; ``wall_time``: epoch seconds.
    :param namespace: the metrics plugin's ``namespace`` (``""`` for none).
    """
    known = families is not None
    by_name = {f.name: f for f in families or ()}
    prefix = f"{namespace}_" if namespace else ""
    hook_calls = _outcomes(_family(by_name, prefix + HOOK_CALLS), ("hook", "plugin"))
    hook_hists = _histograms(_family(by_name, prefix + HOOK_DURATION), ("hook", "plugin"))
    op_calls = _outcomes(_family(by_name, prefix + INVOKE_CALLS), ("operation",))
    op_hists = _histograms(_family(by_name, prefix + INVOKE_DURATION), ("operation",))

    plugins = [
        PluginRow(
            name=p.name,
            version=p.version,
            state=p.state.value,
            enabled=p.enabled,
            last_error=p.last_error,
            hooks=list(p.hooks),
            operations=list(p.operations),
        )
        for p in snapshot.plugins
    ]

    hook_keys: set[Key] = {(hook, plugin) for hook, impls in snapshot.hooks.items() for plugin in impls}
    hook_keys.update(key for key in (*hook_calls, *hook_hists))
    hooks = [
        HookRow(hook=key[0], plugin=key[1], **_latency(hook_calls.get(key), hook_hists.get(key), known=known))
        for key in sorted(hook_keys)
    ]

    owner = {op: p.name for p in snapshot.plugins for op in p.operations}
    per_op_calls = {key[0]: sum(outcomes.values()) for key, outcomes in op_calls.items()}
    if known:
        rate, per_op_rate, history = rates.update(now, sum(per_op_calls.values()), per_op_calls)
    else:
        rate, per_op_rate, history = None, {}, []
    op_names = sorted({*snapshot.operations, *(key[0] for key in (*op_calls, *op_hists))})
    operations = [
        OperationRow(
            operation=op,
            plugin=owner.get(op),
            rate=per_op_rate.get(op, 0.0) if rate is not None else None,
            **_latency(op_calls.get((op,)), op_hists.get((op,)), known=known),
        )
        for op in op_names
    ]

    total = sum(per_op_calls.values())
    errors = sum(v for outcomes in op_calls.values() for k, v in outcomes.items() if k in FAILED)
    invokes = Invokes(
        total=round(total) if known else None,
        errors=round(errors) if known else None,
        error_ratio=errors / total if known and total else None,
        rate=rate,
        window=rates.window,
        history=history,
    )

    up = "../" * own_prefix.rstrip("/").count("/")  # from the page (<own_prefix>/) to the server root
    links = [
        LinkRow(prefix=prefix, plugin=plugin, href=up + prefix.strip("/") + "/")
        for prefix, plugin in sorted((mounts or {}).items())
        if prefix.rstrip("/") != own_prefix.rstrip("/")
    ]
    return State(
        schema=SCHEMA,
        generated_at=wall_time,
        poll_interval=poll_interval,
        metrics_available=known,
        plugins=plugins,
        hooks=hooks,
        operations=operations,
        invokes=invokes,
        alerts=Alerts(available=alerts is not None, firing=[_alert_row(a) for a in alerts or ()]),
        links=Links(available=mounts is not None, base_url=base_url, mounts=links),
        notes=list(notes),
    )
