"""Window statistics over snapshots of the kernel's metrics: rates, error ratios, quantiles.

Pure functions, so the numbers can be checked against hand computations.  A
*snapshot* keeps the few series analytics reads (hook and invoke call
counters and latency histograms); the summary of a window is computed from
the increase of each series between the window's first and last snapshot,
the way PromQL's ``increase()`` and ``histogram_quantile()`` do it:

* counters only go up, so a value lower than the previous one is a restart
  from zero (a reset), and a series missing from an older snapshot had not
  been created yet (it started at zero);
* quantiles interpolate linearly inside the bucket where the rank falls, the
  lowest bucket starts at 0, and a rank in the ``+Inf`` bucket answers the
  highest finite bound (Prometheus' ``bucketQuantile``).

Only the sample names are relied on, not the family names, so a registry
that names counter families ``x`` or ``x_total`` works the same.

The plugin keeps one snapshot per ``interval`` over the ``window`` (61 with
the defaults) of every hook, plugin and operation series, each histogram
bucket a series of its own: a kernel has thousands.  As dicts, every snapshot
held its own key tuples and boxed floats, about 350 KiB per thousand series
and tens of MiB for the ring; so the ring's snapshots are packed
(:class:`SeriesIndex`): one shared table of keys and 8 bytes per series per
snapshot.  :func:`summarize` reads any mapping, packed or a plain dict.
"""

from __future__ import annotations

import itertools
import math
from array import array
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import Final
from typing import TypeAlias
from typing import TypeVar
from typing import overload

from plugin_sdk import MetricFamily

HOOK_CALLS: Final = "orion_hook_calls_total"
HOOK_BUCKETS: Final = "orion_hook_duration_seconds_bucket"
HOOK_SUM: Final = "orion_hook_duration_seconds_sum"
HOOK_COUNT: Final = "orion_hook_duration_seconds_count"
INVOKE_CALLS: Final = "orion_invoke_calls_total"
INVOKE_BUCKETS: Final = "orion_invoke_duration_seconds_bucket"
INVOKE_SUM: Final = "orion_invoke_duration_seconds_sum"
INVOKE_COUNT: Final = "orion_invoke_duration_seconds_count"
#: the sample names a snapshot keeps
SAMPLES: Final = frozenset(
    {HOOK_CALLS, HOOK_BUCKETS, HOOK_SUM, HOOK_COUNT, INVOKE_CALLS, INVOKE_BUCKETS, INVOKE_SUM, INVOKE_COUNT}
)
#: a window shorter than this (seconds) reports no rate: a few calls over a few
#: milliseconds (a kernel that just started) would read as thousands per second
MIN_RATE_SPAN: Final = 1.0
#: the quantiles every row reports
QUANTILES: Final = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))

_T = TypeVar("_T")

#: a series: its sample name and its labels, sorted
SeriesKey: TypeAlias = tuple[str, tuple[tuple[str, str], ...]]
#: the values of the series analytics reads, at one moment (a dict, or packed by a SeriesIndex)
Snapshot: TypeAlias = Mapping[SeriesKey, float]


def snapshot(families: Iterable[MetricFamily]) -> dict[SeriesKey, float]:
    """The series of ``families`` that analytics reads."""
    found: dict[SeriesKey, float] = {}
    for family in families:
        for sample in family.samples:
            if sample.name in SAMPLES:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return found


class SeriesIndex:
    """Series keys shared by the snapshots it packs, each with its position in their value arrays.

    Keys are only added (a series that disappears is absent from later
    snapshots, not forgotten), so the index holds every series seen since
    it was made; the plugin makes a new one when it starts.
    """

    __slots__ = ("_pairs", "keys", "positions")

    def __init__(self) -> None:
        self.positions: dict[SeriesKey, int] = {}
        self.keys: list[SeriesKey] = []
        #: one tuple per distinct (label, value): the keys of a series' buckets share theirs
        self._pairs: dict[tuple[str, str], tuple[str, str]] = {}

    def pack(self, families: Iterable[MetricFamily]) -> PackedSnapshot:
        """The same series as :func:`snapshot`, packed against this index."""
        positions, keys = self.positions, self.keys
        values = array("d", _ABSENT) * len(keys)
        for family in families:
            for sample in family.samples:
                if sample.name in SAMPLES:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    position = positions.get(key)
                    if position is None:
                        pairs = self._pairs
                        key = (key[0], tuple([pairs.setdefault(pair, pair) for pair in key[1]]))
                        position = positions[key] = len(keys)
                        keys.append(key)
                        values.append(math.nan)
                    values[position] = float(sample.value)
        return PackedSnapshot(self, values)


#: a packed value for a series absent from the snapshot
_ABSENT: Final = (math.nan,)


class PackedSnapshot(Mapping[SeriesKey, float]):
    """A snapshot as an array of floats aligned on a :class:`SeriesIndex` (NaN: the series is absent)."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: SeriesIndex, values: array[float]) -> None:
        self._index = index
        self._values = values

    def __getitem__(self, key: SeriesKey) -> float:
        position = self._index.positions.get(key)
        if position is not None and position < len(self._values):
            value = self._values[position]
            if value == value:  # not NaN
                return value
        raise KeyError(key)

    @overload
    def get(self, key: SeriesKey, /) -> float | None: ...
    @overload
    def get(self, key: SeriesKey, /, default: float | _T) -> float | _T: ...
    def get(self, key: SeriesKey, /, default: object = None) -> object:
        # Mapping.get goes through __getitem__ and KeyError: summarize() calls this per series per snapshot.
        position = self._index.positions.get(key)
        if position is not None and position < len(self._values):
            value = self._values[position]
            if value == value:
                return value
        return default

    def __iter__(self) -> Iterator[SeriesKey]:
        keys = self._index.keys
        return (keys[position] for position, value in enumerate(self._values) if value == value)

    def __len__(self) -> int:
        return sum(1 for value in self._values if value == value)


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The ``q``-quantile (0 <= q <= 1) of a histogram, as Prometheus' ``histogram_quantile``.

    :param buckets: ``(upper bound, cumulative count)`` pairs, in any order;
        one must be the ``+Inf`` bucket.
    :returns: ``None`` when it cannot be estimated: no ``+Inf`` bucket, fewer
        than two buckets, or no observations.
    """
    if math.isnan(q) or not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be between 0 and 1, got {q!r}")
    merged: dict[float, float] = {}
    for bound, count in buckets:
        merged[bound] = merged.get(bound, 0.0) + count
    ordered = sorted(merged.items())
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return None
    # Rounding or a scrape between two bucket updates can break monotonicity: repair it upwards.
    bounds = [bound for bound, _ in ordered]
    counts = list(itertools.accumulate((count for _, count in ordered), max))
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    index = next((i for i, count in enumerate(counts[:-1]) if count >= rank), len(counts) - 1)
    if index == len(counts) - 1:
        return bounds[-2]
    if index == 0 and bounds[0] <= 0:
        return bounds[0]
    start = bounds[index - 1] if index > 0 else 0.0
    below = counts[index - 1] if index > 0 else 0.0
    inside = counts[index] - below
    if inside <= 0:
        return start
    return start + (bounds[index] - start) * ((rank - below) / inside)


def increase(values: Sequence[float | None]) -> float:
    """How much one series grew across snapshots (oldest first; ``None`` where it was absent).

    Absent in the first snapshot means created since, i.e. counted from 0; a
    drop is a reset, after which the series counts from 0 again.
    """
    previous = values[0] if values and values[0] is not None else 0.0
    total = 0.0
    for value in values[1:]:
        if value is None:
            continue
        total += value - previous if value >= previous else value
        previous = value
    return total


class _Group:
    """What the rows of one group (a hook, a plugin, an operation) accumulate."""

    __slots__ = ("buckets", "calls", "count", "errors", "sum")

    def __init__(self) -> None:
        self.calls = 0.0
        self.errors = 0.0
        self.sum = 0.0
        self.count = 0.0
        self.buckets: dict[float, float] = {}

    @property
    def active(self) -> bool:
        """Anything was called in the window."""
        return self.calls > 0 or self.count > 0

    def row(self, name: str, elapsed: float) -> dict[str, Any]:
        calls = self.calls if self.calls > 0 else self.count
        row: dict[str, Any] = {
            "name": name,
            "calls": round(calls),
            "rate": calls / elapsed if elapsed >= MIN_RATE_SPAN else None,
            "errors": round(self.errors),
            "error_ratio": self.errors / calls if calls > 0 else 0.0,
        }
        for label, q in QUANTILES:
            row[label] = histogram_quantile(q, self.buckets.items())
        row["mean"] = self.sum / self.count if self.count > 0 else None
        return row


def _bound(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)  # "+Inf" parses too
    except ValueError:
        return None


def summarize(points: Sequence[tuple[float, Snapshot]], *, window: float, top_n: int) -> dict[str, Any]:
    """The analytics summary of a window, as plain JSON-able data.

    :param points: ``(time, snapshot)`` pairs, oldest first: the window's
        baseline, the snapshots inside it, and the present last.
    :param window: the configured window (seconds), reported as is.
    :param top_n: how many rows each top list keeps.
    """
    if not points:
        raise ValueError("summarize() needs at least one snapshot")
    elapsed = points[-1][0] - points[0][0]
    keys = sorted({key for _, snap in points for key in snap})
    groups: dict[str, dict[str, _Group]] = {"hooks": {}, "plugins": {}, "operations": {}}

    def group(kind: str, name: str | None) -> _Group | None:
        if name is None:
            return None
        table = groups[kind]
        found = table.get(name)
        if found is None:
            found = table[name] = _Group()
        return found

    for key in keys:
        grew = increase([snap.get(key) for _, snap in points])
        sample, label_pairs = key
        if grew <= 0 and sample not in (HOOK_BUCKETS, INVOKE_BUCKETS):
            continue  # (an empty bucket still matters: its bound is where the next one starts)
        labels = dict(label_pairs)
        if sample.startswith("orion_hook_"):
            targets = [group("hooks", labels.get("hook")), group("plugins", labels.get("plugin"))]
        else:
            targets = [group("operations", labels.get("operation"))]
        bound = _bound(labels.get("le"))
        for target in targets:
            if target is None:
                continue
            if sample in (HOOK_CALLS, INVOKE_CALLS):
                target.calls += grew
                if labels.get("outcome", "ok") != "ok":
                    target.errors += grew
            elif sample in (HOOK_BUCKETS, INVOKE_BUCKETS):
                if bound is not None:
                    target.buckets[bound] = target.buckets.get(bound, 0.0) + grew
            elif sample in (HOOK_SUM, INVOKE_SUM):
                target.sum += grew
            else:
                target.count += grew

    summary: dict[str, Any] = {
        "generated_at": points[-1][0],
        "window": {"seconds": window, "covered": elapsed, "snapshots": len(points)},
    }
    for kind, table in groups.items():
        summary[kind] = [table[name].row(name, elapsed) for name in sorted(table) if table[name].active]
    summary["totals"] = {
        "hook_calls": sum(row["calls"] for row in summary["hooks"]),
        "hook_errors": sum(row["errors"] for row in summary["hooks"]),
        "invokes": sum(row["calls"] for row in summary["operations"]),
        "invoke_errors": sum(row["errors"] for row in summary["operations"]),
    }
    summary["top"] = {"n": top_n, **{kind: slowest(summary[kind], top_n) for kind in groups}}
    return summary


def slowest(rows: Iterable[Mapping[str, Any]], n: int) -> list[dict[str, Any]]:
    """The ``n`` rows with the highest p95 latency (then p99, then name); rows without latency left out."""
    timed = [dict(row) for row in rows if row.get("p95") is not None]
    timed.sort(key=lambda row: (-row["p95"], -(row.get("p99") or 0.0), row["name"]))
    return timed[:n]
