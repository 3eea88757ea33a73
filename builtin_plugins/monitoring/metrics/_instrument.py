"""Automatic instrumentation of the kernel: every hook impl call and every invoke.

No plugin has to do anything to be measured: the ``metrics`` plugin attaches
a :class:`plugin_sdk.DispatchObserver` and keeps, from the kernel's own
dispatch events,

* ``<ns>_hook_calls_total{hook,plugin,outcome}`` and
  ``<ns>_hook_duration_seconds{hook,plugin}``,
* ``<ns>_invoke_calls_total{operation,outcome}`` and
  ``<ns>_invoke_duration_seconds{operation}``,
* ``<ns>_plugin_state{plugin,state}`` (1 for the state a plugin is in, 0 for the others),
* ``<ns>_hook_implementations{hook}`` (how many loaded plugins implement each
  hook, so that every hook of the kernel has a series, even one nobody implements).

The observer runs on the hot path of every hook call, so each ``(hook,
plugin)`` pair and each operation gets a small record, created once, holding
direct references to its histogram series and failure counters: a successful
call costs one dict lookup, one list increment (the bucket, found by bisect
only when the call took longer than the first bound, 50 µs by default) and
one float add, with no label handling at all.  The ``outcome="ok"`` count is
not kept: it is derived when read, as the histogram's count minus errors and
timeouts.

Timing itself costs as much as a trivial impl (a clock read and a record per
impl), so sync hooks are timed at most once per ``hook_latency_interval``
(1 ms by default) through :class:`plugin_sdk.HookSampling`: the kernel runs
the other calls untimed and reports each once, as how many impls ran and
which failed, which costs one list increment here (``reached[ran] += 1``);
each impl's ``ok`` count adds its share of those tallies when read.  Counts
stay exact; the duration histograms hold the timed calls.
``benchmarks/bench_metrics.py`` measures what is left.

Coverage does not wait for traffic: the zero series of every ``(hook,
plugin)`` pair the kernel knows (``ctx.introspect().hooks``), of every
operation and of every plugin's state exist from the start, and are brought
up to date after plugins change state (lazily, at the next collection or
unknown name, so a burst of state changes costs one introspection).

Operation names reach the observer before the kernel has checked them: an
``invoke`` of a name that does not exist is counted under the operation
``<unknown>``, never as a series of its own, so callers cannot grow the
registry by inventing names.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable
from collections.abc import Sequence

from plugin_sdk import HookSampling
from plugin_sdk import KernelSnapshot
from plugin_sdk import MetricsError
from plugin_sdk import Outcome
from plugin_sdk import PluginState

from ._registry import CounterMetric
from ._registry import DerivedSeries
from ._registry import HistogramMetric
from ._registry import HistogramSeries
from ._registry import Registry
from ._registry import Series

#: the ``operation`` label of invokes of a name no plugin registered
UNKNOWN_OPERATION = "<unknown>"
_OUTCOMES = ("ok", "error", "timeout")
_STATES = tuple(state.value for state in PluginState)


class _Record:
    """The series one ``(hook, plugin)`` pair or one operation updates, resolved once.

    Only failures have a counter cell here: the ``ok`` count is the
    histogram's count minus them (a :class:`DerivedSeries`), so a successful
    call updates the histogram and nothing else.
    """

    __slots__ = ("counts", "error", "hist", "ok", "timeout")

    def __init__(self, error: Series, timeout: Series, hist: HistogramSeries, ok: DerivedSeries) -> None:
        self.error = error
        self.timeout = timeout
        self.hist = hist
        self.counts = hist.counts
        self.ok = ok


def _new_record(calls: CounterMetric, durations: HistogramMetric, labels: tuple[str, ...]) -> _Record:
    """The series of one hook impl or operation: ``ok`` derived, ``error``/``timeout`` counted."""
    hist: HistogramSeries = durations.series_of(labels)
    ok: DerivedSeries = calls.series_of((*labels, "ok"), lambda values, text: DerivedSeries(values, text, hist))
    error: Series = calls.series_of((*labels, "error"))
    timeout: Series = calls.series_of((*labels, "timeout"))
    ok.minus = (error, timeout)
    return _Record(error, timeout, hist, ok)


class Instrumentation:
    """The dispatch observer of the ``metrics`` plugin, and the kernel-level series it keeps.

    :param registry: where the series live.
    :param namespace: prefix of the metric names (``orion`` -> ``orion_hook_calls_total``).
    :param buckets: bucket bounds of the two duration histograms, in seconds.
    """

    __slots__ = (
        "_bounds",
        "_dirty",
        "_first",
        "_hooks",
        "_interval",
        "_introspect",
        "_invokes",
        "_known_operations",
        "_states",
        "_tallies",
        "_warned",
        "hook_calls",
        "hook_duration",
        "hook_implementations",
        "invoke_calls",
        "invoke_duration",
        "log",
        "plugin_state",
    )

    def __init__(
        self,
        registry: Registry,
        namespace: str,
        buckets: tuple[float, ...],
        log: logging.Logger | None = None,
        sample_interval: float = 0.0,
    ) -> None:
        prefix = f"{namespace}_" if namespace else ""
        self.log = log or logging.getLogger("orion.plugin.metrics")
        self.hook_calls = registry.counter(
            f"{prefix}hook_calls_total",
            "Hook implementation calls, by hook, plugin and outcome (ok, error, timeout).",
            ("hook", "plugin", "outcome"),
        )
        self.hook_duration = registry.histogram(
            f"{prefix}hook_duration_seconds",
            "Time spent in each plugin's implementation of each hook, in seconds.",
            ("hook", "plugin"),
            buckets,
        )
        self.invoke_calls = registry.counter(
            f"{prefix}invoke_calls_total",
            "Operation invocations through kernel.invoke, by operation and outcome (ok, error, timeout).",
            ("operation", "outcome"),
        )
        self.invoke_duration = registry.histogram(
            f"{prefix}invoke_duration_seconds",
            "Time each kernel.invoke took, middleware included, in seconds.",
            ("operation",),
            buckets,
        )
        self.plugin_state = registry.gauge(
            f"{prefix}plugin_state",
            "1 for the state each plugin is in, 0 for the other states.",
            ("plugin", "state"),
        )
        self.hook_implementations = registry.gauge(
            f"{prefix}hook_implementations",
            "How many loaded plugins implement each hook (0: declared, implemented by none).",
            ("hook",),
        )
        # The ok counts are derived from the histograms: a write from elsewhere
        # could make them go down, so nobody else may declare these.
        for metric in (self.hook_calls, self.hook_duration, self.invoke_calls, self.invoke_duration):
            registry.seal(metric.name, "the metrics plugin's kernel instrumentation")
        self._bounds = self.hook_duration.bounds
        self._first = self._bounds[0]
        self._hooks: dict[tuple[str, str], _Record] = {}
        self._interval = sample_interval
        #: (hook, impls in call order) -> the tally of its untimed calls, kept across rebuilds
        self._tallies: dict[tuple[str, tuple[str, ...]], HookSampling] = {}
        self._invokes: dict[str, _Record] = {}
        self._states: dict[str, dict[str, Series]] = {}
        self._known_operations: frozenset[str] = frozenset()
        self._introspect: Callable[[], KernelSnapshot] | None = None
        self._dirty = False
        self._warned: set[str] = set()
        registry.before_collect(self.refresh_if_stale)

    def __repr__(self) -> str:
        return f"<metrics instrumentation: {len(self._hooks)} hook impls, {len(self._invokes)} operations>"

    # -- the dispatch observer (hot path) ------------------------------------------------

    def on_hook(self, hook: str, plugin: str, duration: float, outcome: Outcome) -> None:
        """One hook impl ran: count it by outcome and add its duration to the histogram."""
        try:
            record = self._hooks[hook, plugin]
        except KeyError:
            found = self._hook_record(hook, plugin)
            if found is None:
                return
            record = found
        if outcome != "ok":
            if outcome == "error":
                record.error.value += 1.0
            elif outcome == "timeout":
                record.timeout.value += 1.0
        record.counts[0 if duration <= self._first else bisect_left(self._bounds, duration)] += 1
        record.hist.sum += duration

    def hook_recorder(self, hook: str, plugin: str) -> Callable[[float, Outcome], None] | None:
        """A recorder bound to one (hook, plugin) record, asked for by the kernel when it
        rebuilds its callers: the per-call work is one bucket increment and one add."""
        record = self._hook_record(hook, plugin)
        if record is None:
            return None
        counts, hist, first, bounds = record.counts, record.hist, self._first, self._bounds
        error, timeout = record.error, record.timeout

        def record_call(duration: float, outcome: Outcome) -> None:
            if outcome != "ok":
                if outcome == "error":
                    error.value += 1.0
                elif outcome == "timeout":
                    timeout.value += 1.0
            counts[0 if duration <= first else bisect_left(bounds, duration)] += 1
            hist.sum += duration

        return record_call

    def hook_sampling(self, hook: str, plugins: tuple[str, ...]) -> HookSampling | None:
        """Latency sampled, counts exact (``sample_interval`` > 0): untimed calls of ``hook``
        are tallied by how many impls ran, one list increment per call; each impl's
        ``ok`` count adds its share of the tally when read."""
        if self._interval <= 0:
            return None
        key = (hook, plugins)
        found = self._tallies.get(key)
        if found is not None:
            return found
        records = [self._hook_record(hook, plugin) for plugin in plugins]
        reached = [0] * (len(plugins) + 1)
        for position, record in enumerate(records):
            if record is not None:
                record.ok.untimed.append((reached, position))

        def count(ran: int, failures: Sequence[tuple[int, Outcome]]) -> None:
            reached[ran] += 1
            for index, outcome in failures:
                record = records[index]
                if record is not None:
                    if outcome == "error":
                        record.error.value += 1.0
                    elif outcome == "timeout":
                        record.timeout.value += 1.0

        sampling = self._tallies[key] = HookSampling(self._interval, count)
        return sampling

    def on_invoke(self, operation: str, duration: float, outcome: Outcome) -> None:
        """One ``kernel.invoke`` ended: count it by outcome and add its duration to the histogram."""
        try:
            record = self._invokes[operation]
        except KeyError:
            found = self._invoke_record(operation)
            if found is None:
                return
            record = found
        if outcome != "ok":
            if outcome == "error":
                record.error.value += 1.0
            elif outcome == "timeout":
                record.timeout.value += 1.0
        record.counts[0 if duration <= self._first else bisect_left(self._bounds, duration)] += 1
        record.hist.sum += duration

    # -- records (cold path) -------------------------------------------------------------

    def _hook_record(self, hook: str, plugin: str) -> _Record | None:
        found = self._hooks.get((hook, plugin))
        if found is not None:
            return found
        try:
            record = _new_record(self.hook_calls, self.hook_duration, (hook, plugin))
        except MetricsError as exc:
            self._warn_once(exc)
            return None
        self._hooks[hook, plugin] = record
        return record

    def _invoke_record(self, operation: str) -> _Record | None:
        found = self._invokes.get(operation)
        if found is not None:
            return found
        if operation not in self._known_operations and operation != UNKNOWN_OPERATION:
            self.refresh_if_stale()
            if operation not in self._known_operations:
                return self._invoke_record(UNKNOWN_OPERATION)
        try:
            record = _new_record(self.invoke_calls, self.invoke_duration, (operation,))
        except MetricsError as exc:
            self._warn_once(exc)
            return None
        self._invokes[operation] = record
        return record

    def _warn_once(self, exc: MetricsError) -> None:
        text = str(exc).split(" exceeded", 1)[0]
        if text not in self._warned:
            self._warned.add(text)
            self.log.warning("kernel instrumentation: %s (further values of it are dropped silently)", exc)

    # -- plugins and structure -----------------------------------------------------------

    def attach(self, introspect: Callable[[], KernelSnapshot] | None) -> None:
        """Read the kernel's structure through ``introspect`` (``None``: stop reading it)."""
        self._introspect = introspect
        self._dirty = introspect is not None

    def state_changed(self, plugin: str, new: PluginState) -> None:
        """``plugin_state_changed``: set the state gauge now, refresh the rest lazily."""
        self._set_state(plugin, new.value)
        self._dirty = self._introspect is not None

    def _set_state(self, plugin: str, state: str) -> None:
        cells = self._states.get(plugin)
        if cells is None:
            try:
                cells = {s: self.plugin_state.series_of((plugin, s)) for s in _STATES}
            except MetricsError as exc:
                self._warn_once(exc)
                return
            self._states[plugin] = cells
        for name, cell in cells.items():
            cell.value = 1.0 if name == state else 0.0

    def refresh_if_stale(self) -> None:
        """Bring the zero series up to date if plugins changed state since the last refresh."""
        if self._dirty:
            self.refresh()

    def refresh(self) -> None:
        """Create the series of every plugin, hook impl and operation the kernel has now."""
        if self._introspect is None:
            return
        self._dirty = False
        snapshot = self._introspect()
        for plugin in snapshot.plugins:
            self._set_state(plugin.name, plugin.state.value)
        for hook, plugins in snapshot.hooks.items():
            try:
                self.hook_implementations.series_of((hook,)).value = float(len(plugins))
            except MetricsError as exc:
                self._warn_once(exc)
            for plugin_name in plugins:
                self._hook_record(hook, plugin_name)
        self._known_operations = frozenset(snapshot.operations)
        for operation in snapshot.operations:
            self._invoke_record(operation)
