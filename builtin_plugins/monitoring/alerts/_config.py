"""Settings of the ``alerts`` plugin: rules over metrics and silences.

The kernel structures ``[plugins.alerts.settings]`` into :class:`AlertsSettings`
with its strict cattrs converter, so every check lives here as an attrs
validator: a bad value is reported at its path
(``plugins.alerts.settings.rules[0].window``) before anything starts, instead
of surfacing as a wrong alert at three in the morning.

A rule's hold duration is ``for_seconds``, not ``for``: ``for`` is a Python
keyword, so it cannot be an attrs alias (the generated ``__init__`` would not
compile), and the kernel's converter reads attribute names, not aliases.
"""

from __future__ import annotations

import collections
import math
import re
import string
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from typing import Final
from typing import Literal

import attrs

Op = Literal[">", ">=", "<", "<=", "==", "!="]
Function = Literal["rate", "avg", "last"]

_METRIC_NAME: Final = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

#: names a ``summary`` template may use, besides ``labels[NAME]``
TEMPLATE_FIELDS: Final = frozenset(
    {"rule", "metric", "function", "window", "op", "threshold", "for_seconds", "severity", "value", "state", "labels"}
)


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0 or math.isinf(value):  # also refuses NaN
        raise ValueError(f"'{attribute.name}' must be a finite number > 0, got {value!r}")


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"'{attribute.name}' must be a finite number >= 0, got {value!r}")


def _not_nan(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if math.isnan(value):
        raise ValueError(f"'{attribute.name}' must be a number, got nan")


def _non_empty(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.strip():
        raise ValueError(f"'{attribute.name}' must not be empty")


def _metric_name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not _METRIC_NAME.match(value):
        raise ValueError(f"'{attribute.name}' is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*): {value!r}")


def _label_names(instance: object, attribute: attrs.Attribute[Mapping[str, str]], value: Mapping[str, str]) -> None:
    bad = sorted(key for key in value if not _LABEL_NAME.match(key))
    if bad:
        raise ValueError(f"'{attribute.name}' has invalid label names {bad} (expected [a-zA-Z_][a-zA-Z0-9_]*)")


def template_problem(template: str) -> str | None:
    """Why ``template`` is not a usable ``summary`` template, or ``None`` when it is."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return str(exc)
    for _, field, _, _ in parsed:
        if field is None:
            continue
        root = re.split(r"[.\[]", field, maxsplit=1)[0]
        if root not in TEMPLATE_FIELDS:
            return f"unknown field {{{field}}} (known: {', '.join(sorted(TEMPLATE_FIELDS))}, labels[NAME])"
    return None


def _template(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    problem = template_problem(value)
    if problem is not None:
        raise ValueError(f"'{attribute.name}' is not a valid template: {problem}")


def parse_until(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 date-time that carries a time zone.

    :raises ValueError: not ISO 8601, or no time zone (which would make the
        expiry depend on the host's local time).
    """
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 date-time: {text!r} (e.g. '2026-12-01T18:00:00Z')") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone; add one, e.g. 'Z' or '+02:00'")
    return moment.timestamp()


def _until(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        parse_until(value)
    except ValueError as exc:
        raise ValueError(f"'{attribute.name}' {exc}") from None


@attrs.frozen
class Rule:
    """One alert rule: a condition over the series of one metric."""

    name: str = attrs.field(validator=_non_empty, metadata=_doc("The rule's name, unique among the rules."))
    metric: str = attrs.field(
        validator=_metric_name,
        metadata=_doc(
            "The series to watch, by sample name: a counter ('orion_hook_calls_total'; the name without "
            "'_total' works too), a gauge, or a histogram's parts ('orion_hook_duration_seconds_count')."
        ),
    )
    op: Op = attrs.field(metadata=_doc("How the value compares to the threshold: >, >=, <, <=, == or !=."))
    threshold: float = attrs.field(validator=_not_nan, metadata=_doc("The value compared against."))
    labels: dict[str, str] = attrs.field(
        factory=dict,
        validator=_label_names,
        metadata=_doc("Label selector: a series matches when it carries all of these labels with these values."),
    )
    function: Function = attrs.field(
        default="last",
        metadata=_doc(
            "'rate': per-second increase of a counter over the window (counter resets handled); "
            "'avg': mean of the sampled values over the window; 'last': the current value."
        ),
    )
    window: float = attrs.field(
        default=60.0, validator=_positive, metadata=_doc("Seconds of history that 'rate' and 'avg' look at.")
    )
    for_seconds: float = attrs.field(
        default=0.0,
        validator=_non_negative,
        metadata=_doc(
            "Seconds the condition must hold before the alert fires (Prometheus' 'for'; "
            "'for' itself is a Python keyword). 0 fires at the first evaluation that holds."
        ),
    )
    severity: str = attrs.field(
        default="warning", validator=_non_empty, metadata=_doc("Severity label passed to notifiers.")
    )
    summary: str = attrs.field(
        default="",
        validator=_template,
        metadata=_doc(
            "One-line summary template (str.format fields: rule, metric, function, window, op, threshold, "
            "for_seconds, severity, value, state, labels, labels[NAME]); empty for the built-in one."
        ),
    )


@attrs.frozen
class Silence:
    """Mute the notifications of one rule's alerts until a moment in time."""

    rule: str = attrs.field(validator=_non_empty, metadata=_doc("The name of the rule to silence."))
    until: str = attrs.field(
        validator=_until,
        metadata=_doc("When the silence expires: ISO 8601 with a time zone, e.g. '2026-12-01T18:00:00Z'."),
    )
    labels: dict[str, str] = attrs.field(
        factory=dict,
        validator=_label_names,
        metadata=_doc("Silence only the alerts whose labels include all of these (empty: every alert of the rule)."),
    )
    comment: str = attrs.field(default="", metadata=_doc("Why, for whoever lists the silences."))

    @property
    def until_epoch(self) -> float:
        """``until`` in seconds since the epoch."""
        return parse_until(self.until)


def _unique_rules(instance: object, attribute: attrs.Attribute[tuple[Rule, ...]], rules: tuple[Rule, ...]) -> None:
    counts = collections.Counter(rule.name for rule in rules)
    twice = sorted(name for name, count in counts.items() if count > 1)
    if twice:
        raise ValueError(f"'{attribute.name}' has duplicate rule names: {twice}")


def _known_rules(instance: Any, attribute: attrs.Attribute[tuple[Silence, ...]], silences: tuple[Silence, ...]) -> None:
    names = {rule.name for rule in instance.rules}
    for index, silence in enumerate(silences):
        if silence.rule not in names:
            known = ", ".join(sorted(names)) or "none"
            raise ValueError(
                f"'{attribute.name}' [{index}] names rule {silence.rule!r}, which is not defined (rules: {known})"
            )


@attrs.frozen
class AlertsSettings:
    """The ``[plugins.alerts.settings]`` table."""

    interval: float = attrs.field(
        default=15.0, validator=_positive, metadata=_doc("Seconds between two evaluations of every rule.")
    )
    rules: tuple[Rule, ...] = attrs.field(
        default=(), validator=_unique_rules, metadata=_doc("The alert rules ([[plugins.alerts.settings.rules]]).")
    )
    silences: tuple[Silence, ...] = attrs.field(
        default=(),
        validator=_known_rules,
        metadata=_doc("Silences from config; more can be added at runtime with the 'alerts.silence' operation."),
    )
    log_notifications: bool = attrs.field(
        default=True,
        metadata=_doc("Log each notification through the plugin's logger (WARNING firing, INFO resolved)."),
    )


@attrs.frozen
class SilenceArgs:
    """Arguments of the ``alerts.silence`` operation."""

    rule: str = attrs.field(validator=_non_empty)
    duration: float = attrs.field(validator=_positive)
    labels: dict[str, str] = attrs.field(factory=dict, validator=_label_names)
    comment: str = ""


@attrs.frozen
class UnsilenceArgs:
    """Arguments of the ``alerts.unsilence`` operation."""

    id: str


for _cls in (Rule, Silence, AlertsSettings, SilenceArgs, UnsilenceArgs):
    attrs.resolve_types(_cls)
del _cls
