"""Settings of the ``analytics`` plugin (``[plugins.analytics.settings]``).

Checked by attrs validators while the kernel structures them, so a bad value
is reported at its path (``plugins.analytics.settings.window``) before start.
"""

from __future__ import annotations

import math

import attrs


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0 or math.isinf(value):  # also refuses NaN
        raise ValueError(f"'{attribute.name}' must be a finite number > 0, got {value!r}")


def _window(instance: AnalyticsSettings, attribute: attrs.Attribute[float], value: float) -> None:
    _positive(instance, attribute, value)
    if value < instance.interval:
        raise ValueError(f"'{attribute.name}' must be at least 'interval' ({instance.interval:g}), got {value!r}")


def _at_least_one(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"'{attribute.name}' must be >= 1, got {value!r}")


@attrs.frozen
class AnalyticsSettings:
    """The ``[plugins.analytics.settings]`` table."""

    interval: float = attrs.field(
        default=5.0, validator=_positive, metadata=_doc("Seconds between two snapshots of the metrics.")
    )
    window: float = attrs.field(
        default=300.0,
        validator=_window,
        metadata=_doc("Seconds the summary covers (rates, error ratios, percentiles); at least 'interval'."),
    )
    top_n: int = attrs.field(
        default=5, validator=_at_least_one, metadata=_doc("How many rows each 'slowest' list keeps.")
    )


attrs.resolve_types(AnalyticsSettings)
