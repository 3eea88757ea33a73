"""The ``metrics`` service: counters, gauges and histograms with labels.

Why it is shaped like this:

* **One dict per metric, keyed by the label values.**  A series is found with
  one dict lookup on the tuple of label values (the bare value for a metric
  with one label), built by a precomputed ``itemgetter``; keyword arguments
  are checked only when that lookup misses, so a correct call pays for no
  validation beyond one length comparison.
* **Series are small ``__slots__`` cells** that also carry their label set
  already rendered as exposition text (``{hook="x",plugin="y"}``), escaped
  once when the series is created.  Rendering ``/metrics`` is then string
  joining, not escaping, and the kernel's dispatch observer can hold direct
  references to the cells it updates (see ``_instrument.py``).
* **Histograms keep per-bucket counts** (not cumulative) in a list indexed by
  ``bisect``; the cumulative ``_bucket`` values, ``_count`` and the ``+Inf``
  bucket are derived when collecting, so ``observe`` is one bisect, one list
  increment and one float add.
* **Cardinality is bounded per metric** (``max_series_per_metric``): a value
  that would create one series too many raises :class:`MetricsError` and is
  not recorded, instead of letting an unbounded label (a user id, a path)
  eat the process's memory.

Updates are not locked: the kernel, its hooks and its invokes run on one
event-loop thread, where a read-modify-write of a float cannot interleave.
Code updating metrics from worker threads may lose an increment under
contention; declarations and series creation stay consistent.
"""

from __future__ import annotations

import abc
import math
import re
from bisect import bisect_left
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from itertools import accumulate
from itertools import pairwise
from operator import itemgetter
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar
from typing import Final
from typing import TypeVar

from plugin_sdk import MetricFamily
from plugin_sdk import MetricKind
from plugin_sdk import MetricsError
from plugin_sdk import MetricsRegistry
from plugin_sdk import Sample

METRIC_NAME: Final = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

#: Latency buckets in seconds, 50 µs to 10 s: hook impls and invokes span that range.
DEFAULT_BUCKETS: Final[tuple[float, ...]] = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def format_bound(bound: float) -> str:
    """A bucket bound as the ``le`` label value (Go's float formatting, as Prometheus writes it)."""
    if math.isinf(bound):
        return "+Inf" if bound > 0 else "-Inf"
    text = repr(float(bound))
    dot = text.find(".")
    if bound > 0 and dot > 6:  # Go switches to an exponent sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return text


def escape_label_value(value: str) -> str:
    """Escape a label value for both text formats: backslash, double quote, line feed."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def render_labels(names: Sequence[str], values: Sequence[str]) -> str:
    """``name="value",...`` (without braces), escaped."""
    return ",".join(f'{name}="{escape_label_value(value)}"' for name, value in zip(names, values, strict=True))


# -- series ------------------------------------------------------------------------------


class Series:
    """One series of a counter or a gauge: its value and its rendered label set."""

    __slots__ = ("labels", "text", "value")

    def __init__(self, labels: tuple[str, ...], text: str) -> None:
        #: the label values, in the metric's label order
        self.labels = labels
        #: ``{a="x",b="y"}`` (empty for a metric without labels)
        self.text = text
        self.value = 0.0


class DerivedSeries:
    """A counter series computed when read: a histogram's count, plus untimed calls, minus some other series.

    The kernel instrumentation counts a successful hook call only in its
    duration histogram (a timed call) or in a tally of untimed calls (see
    :class:`plugin_sdk.HookSampling`); its ``outcome="ok"`` count is derived
    from both, which saves an add on the hot path.  It cannot be written.
    """

    __slots__ = ("_hist", "labels", "minus", "text", "untimed")

    def __init__(
        self, labels: tuple[str, ...], text: str, hist: HistogramSeries, minus: tuple[Series, ...] = ()
    ) -> None:
        self.labels = labels
        self.text = text
        self._hist = hist
        #: the series subtracted from the histogram's count
        self.minus = minus
        #: ``(reached, position)`` tallies of untimed calls: ``sum(reached[position + 1:])`` calls each
        self.untimed: list[tuple[list[int], int]] = []

    @property
    def value(self) -> float:
        calls = sum(self._hist.counts) + sum(sum(reached[position + 1 :]) for reached, position in self.untimed)
        return float(calls) - sum(series.value for series in self.minus)

    @value.setter
    def value(self, value: float) -> None:
        raise MetricsError(
            f"series {list(self.labels)!r} is derived from the kernel instrumentation's durations and cannot be "
            "updated; declare a metric of your own"
        )


class HistogramSeries:
    """One series of a histogram: per-bucket counts (the last one is ``+Inf``) and the sum."""

    __slots__ = ("counts", "labels", "sum", "text")

    def __init__(self, labels: tuple[str, ...], text: str, buckets: int) -> None:
        self.labels = labels
        #: ``{a="x",b="y",`` or ``{``: the ``le`` label closes it
        self.text = text
        #: observations per bucket, not cumulative; ``counts[-1]`` is the ``+Inf`` bucket
        self.counts = [0] * (buckets + 1)
        self.sum = 0.0

    @property
    def count(self) -> int:
        """How many observations."""
        return sum(self.counts)


# -- metrics -----------------------------------------------------------------------------


class _Metric(abc.ABC):
    """What counters, gauges and histograms share: declaration, label checking, series."""

    __slots__ = ("_key", "_limit", "_n", "_series", "help", "labelnames", "name")

    kind: ClassVar[MetricKind]

    def __init__(self, name: str, help: str, labelnames: tuple[str, ...], limit: int) -> None:
        self.name = name
        self.help = help
        self.labelnames = labelnames
        self._n = len(labelnames)
        self._limit = limit
        #: label values (a tuple; the bare value for one label; () for none) -> series
        self._series: dict[Any, Any] = {}
        self._key: Callable[[Mapping[str, str]], Any]
        if not labelnames:
            self._key = _no_labels
        else:
            self._key = itemgetter(*labelnames)

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name!r} labels={list(self.labelnames)!r} series={len(self._series)}>"

    @abc.abstractmethod
    def _new_series(self, values: tuple[str, ...]) -> Any:
        """A new, zeroed series for these label values (each kind has its own)."""

    def _labels_text(self, values: tuple[str, ...]) -> str:
        return "{" + render_labels(self.labelnames, values) + "}" if values else ""

    def series(self, labels: Mapping[str, object]) -> Any:
        """The series of ``labels`` (created on first use); the slow path of every update.

        :raises MetricsError: the label names are not the declared ones, or the
            series would exceed the metric's limit.
        """
        if labels.keys() != set(self.labelnames):
            raise MetricsError(
                f"metric {self.name!r} expects labels {sorted(self.labelnames)!r}, given {sorted(labels)!r}"
            )
        values = tuple(str(labels[name]) for name in self.labelnames)
        return self.series_of(values)

    def series_of(self, values: tuple[str, ...], make: Callable[[tuple[str, ...], str], Any] | None = None) -> Any:
        """The series of these label values, in declaration order (created on first use).

        :param make: builds the series from the label values and their
            rendered text, instead of the metric's own kind of series (the
            kernel instrumentation's derived counts).
        :raises MetricsError: the series would exceed the metric's limit.
        """
        key = values[0] if len(values) == 1 else values
        found = self._series.get(key)
        if found is not None:
            return found
        if len(self._series) >= self._limit:
            shown = dict(zip(self.labelnames, values, strict=True))
            raise MetricsError(
                f"metric {self.name!r} exceeded its limit of {self._limit} series (labels {shown!r}); "
                "the value was not recorded (use fewer distinct label values, or raise "
                "plugins.metrics.settings.max_series_per_metric)"
            )
        created = self._new_series(values) if make is None else make(values, self._labels_text(values))
        self._series[key] = created
        return created

    def all_series(self) -> list[Any]:
        """Every series, in creation order (a copy: safe against concurrent creation)."""
        return list(self._series.values())

    @abc.abstractmethod
    def samples(self) -> Iterable[Sample]:
        """Every sample of every series, as collect() reports them."""


def _no_labels(labels: Mapping[str, str]) -> tuple[()]:
    return ()


class CounterMetric(_Metric):
    """A counter (:class:`plugin_sdk.Counter`); exposed as ``<name>_total``."""

    __slots__ = ("sample_name",)
    kind: ClassVar[MetricKind] = "counter"

    def __init__(self, name: str, help: str, labelnames: tuple[str, ...], limit: int) -> None:
        super().__init__(name, help, labelnames, limit)
        #: the name of its samples: the declared name, ending in ``_total``
        self.sample_name = counter_base(name) + "_total"
        if not labelnames:
            self.series_of(())

    def _new_series(self, values: tuple[str, ...]) -> Series:
        return Series(values, self._labels_text(values))

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` (>= 0) to the series of ``labels``.

        :raises MetricsError: a negative (or NaN) amount, wrong label names, too many series.
        """
        if not amount >= 0:
            raise MetricsError(f"counter {self.name!r} can only go up: inc({amount!r}) refused")
        if len(labels) == self._n:
            try:
                series = self._series[self._key(labels)]
            except (KeyError, TypeError):
                series = self.series(labels)
        else:
            series = self.series(labels)
        series.value += amount

    def samples(self) -> Iterable[Sample]:
        names, sample_name = self.labelnames, self.sample_name
        for series in self.all_series():
            yield Sample(sample_name, dict(zip(names, series.labels, strict=True)), series.value)


class GaugeMetric(_Metric):
    """A gauge (:class:`plugin_sdk.Gauge`)."""

    __slots__ = ()
    kind: ClassVar[MetricKind] = "gauge"

    def __init__(self, name: str, help: str, labelnames: tuple[str, ...], limit: int) -> None:
        super().__init__(name, help, labelnames, limit)
        if not labelnames:
            self.series_of(())

    def _new_series(self, values: tuple[str, ...]) -> Series:
        return Series(values, self._labels_text(values))

    def _get(self, labels: Mapping[str, str]) -> Series:
        if len(labels) == self._n:
            try:
                return self._series[self._key(labels)]  # type: ignore[no-any-return]
            except (KeyError, TypeError):
                pass
        return self.series(labels)  # type: ignore[no-any-return]

    def set(self, value: float, **labels: str) -> None:
        """Set the series of ``labels`` to ``value``."""
        if len(labels) == self._n:
            try:
                series = self._series[self._key(labels)]
            except (KeyError, TypeError):
                series = self.series(labels)
        else:
            series = self.series(labels)
        series.value = float(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` to the series of ``labels``."""
        self._get(labels).value += amount

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        """Subtract ``amount`` from the series of ``labels``."""
        self._get(labels).value -= amount

    def samples(self) -> Iterable[Sample]:
        names, name = self.labelnames, self.name
        for series in self.all_series():
            yield Sample(name, dict(zip(names, series.labels, strict=True)), series.value)


class HistogramMetric(_Metric):
    """A histogram (:class:`plugin_sdk.Histogram`) with fixed bucket bounds."""

    __slots__ = ("bounds", "le_texts")
    kind: ClassVar[MetricKind] = "histogram"

    def __init__(
        self, name: str, help: str, labelnames: tuple[str, ...], limit: int, bounds: tuple[float, ...]
    ) -> None:
        super().__init__(name, help, labelnames, limit)
        #: the finite upper bounds, increasing (``+Inf`` is implied)
        self.bounds = bounds
        #: ``le="0.005"}`` for each bound and ``+Inf``: what closes a bucket's label set
        self.le_texts = tuple(f'le="{format_bound(b)}"}}' for b in (*bounds, math.inf))
        if not labelnames:
            self.series_of(())

    def _new_series(self, values: tuple[str, ...]) -> HistogramSeries:
        text = "{" + render_labels(self.labelnames, values) + "," if values else "{"
        return HistogramSeries(values, text, len(self.bounds))

    def observe(self, value: float, **labels: str) -> None:
        """Record one observation in the series of ``labels``."""
        if len(labels) == self._n:
            try:
                series = self._series[self._key(labels)]
            except (KeyError, TypeError):
                series = self.series(labels)
        else:
            series = self.series(labels)
        series.counts[bisect_left(self.bounds, value)] += 1
        series.sum += value

    def samples(self) -> Iterable[Sample]:
        names, name = self.labelnames, self.name
        bucket, total, count = f"{name}_bucket", f"{name}_sum", f"{name}_count"
        les = [format_bound(b) for b in (*self.bounds, math.inf)]
        for series in self.all_series():
            labels = dict(zip(names, series.labels, strict=True))
            cumulative = list(accumulate(series.counts))
            for le, value in zip(les, cumulative, strict=True):
                yield Sample(bucket, {**labels, "le": le}, float(value))
            yield Sample(total, labels, series.sum)
            yield Sample(count, labels, float(cumulative[-1]))


M = TypeVar("M", bound=_Metric)


def counter_base(name: str) -> str:
    """A counter's family name in exposition: its declared name without ``_total``."""
    return name[: -len("_total")] if name.endswith("_total") else name


def exposed_names(kind: str, name: str) -> tuple[str, ...]:
    """Every name a metric occupies in exposition (two metrics may not share one)."""
    if kind == "counter":
        base = counter_base(name)
        return (base, base + "_total")
    if kind == "histogram":
        return (name, name + "_bucket", name + "_sum", name + "_count")
    return (name,)


# -- the registry ------------------------------------------------------------------------


class Registry:
    """The ``metrics`` service (:class:`plugin_sdk.MetricsRegistry`).

    :param max_series_per_metric: label-cardinality limit of each metric.
    :param default_buckets: bucket bounds of histograms declared without any.
    """

    def __init__(
        self, *, max_series_per_metric: int = 10_000, default_buckets: Sequence[float] = DEFAULT_BUCKETS
    ) -> None:
        if max_series_per_metric < 1:
            raise ValueError(f"max_series_per_metric must be >= 1, got {max_series_per_metric!r}")
        self.max_series_per_metric = max_series_per_metric
        self.default_buckets = _check_buckets("the default buckets", default_buckets)
        self._metrics: dict[str, _Metric] = {}
        #: exposed name -> the declared name occupying it
        self._exposed: dict[str, str] = {}
        self._sorted: list[_Metric] | None = []
        self._before_collect: list[Callable[[], None]] = []
        #: declared name -> who keeps it; declaring it again is refused
        self._sealed: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<metrics Registry: {len(self._metrics)} metrics>"

    # -- declaring -----------------------------------------------------------------------

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> CounterMetric:
        """Declare (or get) a counter; it is exposed as ``<name without _total>_total``.

        :raises MetricsError: an invalid metric or label name, or a clash with
            a metric of that name declared with another kind or other labels.
        """
        labelnames, known = self._lookup(CounterMetric, name, help, labels)
        return known or self._add(CounterMetric(name, help, labelnames, self.max_series_per_metric))

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> GaugeMetric:
        """Declare (or get) a gauge.  Raises like :meth:`counter`."""
        labelnames, known = self._lookup(GaugeMetric, name, help, labels)
        return known or self._add(GaugeMetric(name, help, labelnames, self.max_series_per_metric))

    def histogram(
        self, name: str, help: str, labels: Sequence[str] = (), buckets: Sequence[float] | None = None
    ) -> HistogramMetric:
        """Declare (or get) a histogram.

        :param buckets: finite upper bounds, strictly increasing (``+Inf`` is
            implied); ``None`` for the configured latency buckets (seconds).
        :raises MetricsError: like :meth:`counter`, for bad buckets, for the
            reserved label ``le``, and for a redeclaration with other buckets.
        """
        bounds = _check_buckets(f"histogram {name!r}", buckets) if buckets is not None else self.default_buckets
        labelnames, known = self._lookup(HistogramMetric, name, help, labels, bounds)
        return known or self._add(HistogramMetric(name, help, labelnames, self.max_series_per_metric, bounds))

    def _lookup(
        self, cls: type[M], name: str, help: str, labels: Sequence[str], bounds: tuple[float, ...] | None = None
    ) -> tuple[tuple[str, ...], M | None]:
        """Check a declaration: its label names, and the metric already declared under ``name`` if any."""
        keeper = self._sealed.get(name)
        if keeper is not None:
            raise MetricsError(
                f"metric {name!r} is kept by {keeper}; read it with collect(), declare metrics of your own to record"
            )
        labelnames = _check_labels(cls.kind, name, labels)
        known = self._metrics.get(name)
        if known is None:
            if not isinstance(name, str) or not METRIC_NAME.match(name):
                raise MetricsError(
                    f"metric name {name!r} is invalid: Prometheus names match [a-zA-Z_:][a-zA-Z0-9_:]* "
                    "(e.g. 'cache_hits_total')"
                )
            if not isinstance(help, str):
                raise MetricsError(f"metric {name!r}: help must be a string, got {type(help).__name__}")
            return labelnames, None
        same_buckets = not isinstance(known, HistogramMetric) or bounds is None or known.bounds == bounds
        if isinstance(known, cls) and known.labelnames == labelnames and same_buckets:
            return labelnames, known
        what = f"{known.kind} with labels {list(known.labelnames)!r}"
        wanted = f"{cls.kind} with labels {list(labelnames)!r}"
        if isinstance(known, HistogramMetric) and cls is HistogramMetric and bounds is not None:
            what += f" and buckets {list(known.bounds)!r}"
            wanted += f" and buckets {list(bounds)!r}"
        raise MetricsError(f"metric {name!r} is already declared as a {what}; cannot redeclare it as a {wanted}")

    def _add(self, metric: M) -> M:
        """Register a new metric, unless a name it would expose is taken."""
        names = exposed_names(metric.kind, metric.name)
        for exposed in names:
            owner = self._exposed.get(exposed)
            if owner is not None:
                raise MetricsError(
                    f"metric {metric.name!r} clashes with {self._metrics[owner].kind} {owner!r}: "
                    f"both would be exposed as {exposed!r}"
                )
        self._metrics[metric.name] = metric
        for exposed in names:
            self._exposed[exposed] = metric.name
        self._sorted = None
        return metric

    def seal(self, name: str, keeper: str) -> None:
        """Refuse any further declaration of ``name``: only ``keeper`` records it (the kernel instrumentation)."""
        if name not in self._metrics:
            raise MetricsError(f"metric {name!r} is not declared")
        self._sealed[name] = keeper

    # -- reading -------------------------------------------------------------------------

    def before_collect(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` before each collection (to bring lazily kept series up to date)."""
        self._before_collect.append(callback)

    def metrics(self) -> list[_Metric]:
        """Every metric, sorted by name (after the ``before_collect`` callbacks ran)."""
        for callback in self._before_collect:
            callback()
        if self._sorted is None:
            self._sorted = sorted(self._metrics.values(), key=lambda m: m.name)
        return self._sorted

    def get(self, name: str) -> _Metric | None:
        """The metric declared as ``name``, if any."""
        return self._metrics.get(name)

    def collect(self) -> list[MetricFamily]:
        """Every metric with its current series, sorted by name.

        A family is named as declared; counter samples are named
        ``<name without _total>_total``; histograms yield cumulative
        ``_bucket`` samples (with ``le``, ending with ``+Inf``), ``_sum`` and ``_count``.
        """
        return [MetricFamily(m.name, m.kind, m.help, tuple(m.samples())) for m in self.metrics()]

    def snapshot(self) -> list[dict[str, Any]]:
        """:meth:`collect` as plain data (dicts, lists, strings and floats), e.g. for JSON."""
        return [
            {
                "name": family.name,
                "kind": family.kind,
                "help": family.help,
                "samples": [
                    {"name": sample.name, "labels": dict(sample.labels), "value": sample.value}
                    for sample in family.samples
                ],
            }
            for family in self.collect()
        ]


def _check_labels(kind: str, name: str, labels: Sequence[str]) -> tuple[str, ...]:
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise MetricsError(f"metric {name!r}: labels must be a sequence of label names, got {labels!r}")
    names = tuple(labels)
    for label in names:
        if not isinstance(label, str) or not LABEL_NAME.match(label):
            raise MetricsError(
                f"metric {name!r}: label name {label!r} is invalid (Prometheus label names match [a-zA-Z_][a-zA-Z0-9_]*)"
            )
        if label.startswith("__"):
            raise MetricsError(f"metric {name!r}: label name {label!r} is reserved (names starting with '__')")
        if kind == "histogram" and label == "le":
            raise MetricsError(f"metric {name!r}: label name 'le' is reserved for histogram buckets")
    if len(set(names)) != len(names):
        raise MetricsError(f"metric {name!r}: duplicate label names in {list(names)!r}")
    return names


def _check_buckets(what: str, buckets: object) -> tuple[float, ...]:
    if isinstance(buckets, str) or not isinstance(buckets, Sequence):
        raise MetricsError(f"{what}: buckets must be a sequence of numbers, got {buckets!r}")
    try:
        bounds = [float(b) for b in buckets]
    except (TypeError, ValueError):
        raise MetricsError(f"{what}: buckets must be numbers, got {list(buckets)!r}") from None
    if bounds and bounds[-1] == math.inf:
        bounds.pop()  # +Inf is implied
    if not bounds:
        raise MetricsError(f"{what}: needs at least one finite bucket bound")
    if not all(math.isfinite(b) for b in bounds):
        raise MetricsError(f"{what}: bucket bounds must be finite numbers (+Inf is implied), got {list(buckets)!r}")
    if any(a >= b for a, b in pairwise(bounds)):
        raise MetricsError(f"{what}: bucket bounds must be strictly increasing, got {list(buckets)!r}")
    return tuple(bounds)


if TYPE_CHECKING:

    def _conforms(registry: Registry) -> MetricsRegistry:
        return registry  # mypy proves that Registry satisfies the SDK's protocol
