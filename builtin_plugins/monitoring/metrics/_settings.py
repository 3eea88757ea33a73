"""The ``[plugins.metrics.settings]`` table.

Validated when the config is structured (``orion-kernel config check``
reports a bad value with its path), so the registry never starts with a
limit or buckets it cannot use.
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any

import attrs

from ._registry import DEFAULT_BUCKETS
from ._registry import METRIC_NAME


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


def _check_buckets(instance: object, attribute: attrs.Attribute[Any], value: tuple[float, ...]) -> None:
    if not value:
        raise ValueError(f"'{attribute.name}' needs at least one bucket bound")
    if not all(math.isfinite(b) and b > 0 for b in value):
        raise ValueError(f"'{attribute.name}' must be finite numbers of seconds > 0 (+Inf is implied): {list(value)!r}")
    if any(a >= b for a, b in pairwise(value)):
        raise ValueError(f"'{attribute.name}' must be strictly increasing: {list(value)!r}")


def _check_namespace(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if value and not METRIC_NAME.match(value):
        raise ValueError(
            f"'{attribute.name}' must be empty or a Prometheus name prefix matching [a-zA-Z_:][a-zA-Z0-9_:]*: {value!r}"
        )


@attrs.frozen
class MetricsSettings:
    """Settings of the ``metrics`` plugin."""

    max_series_per_metric: int = attrs.field(
        default=10_000,
        validator=attrs.validators.gt(0),
        metadata=_doc(
            "Label-cardinality limit: the most series (label-value combinations) one metric may hold; "
            "a value that would create one more raises MetricsError and is not recorded."
        ),
    )
    latency_buckets: tuple[float, ...] = attrs.field(
        default=DEFAULT_BUCKETS,
        converter=tuple,
        validator=_check_buckets,
        metadata=_doc(
            "Histogram bucket upper bounds in seconds (+Inf implied), for hook and invoke durations "
            "and for histograms declared without buckets. Default: 50 us to 10 s."
        ),
    )
    namespace: str = attrs.field(
        default="orion",
        validator=_check_namespace,
        metadata=_doc(
            "Prefix of the metrics recorded about the kernel itself (orion_hook_calls_total, ...); "
            "empty for none. Metrics declared by plugins are named as they declare them."
        ),
    )
    hook_latency_interval: float = attrs.field(
        default=0.001,
        validator=[attrs.validators.ge(0.0), attrs.validators.le(60.0)],
        metadata=_doc(
            "Seconds: the kernel instrumentation times at most one call of each sync hook per interval "
            "(every call of a hook called less often); the other calls are counted exactly, untimed. "
            "0 times every call. Hook call counts are exact either way; the duration histogram holds the timed calls."
        ),
    )
    instrument_kernel: bool = attrs.field(
        default=True,
        metadata=_doc(
            "Measure every hook impl call, every invoke and every plugin's state automatically "
            "(a dispatch observer); false leaves only the metrics plugins declare."
        ),
    )


attrs.resolve_types(MetricsSettings)
