"""Settings of the ``scanner`` plugin (``[plugins.scanner.settings]``).

Checked by attrs validators while the kernel structures them, so an unknown
rule id or a bad plugin name is a ``ConfigError`` at its path
(``plugins.scanner.settings.ignore_rules``) before anything starts.
"""

from __future__ import annotations

import re
from typing import Final
from typing import Literal

import attrs

from ._rules import RULES

RefuseAt = Literal["info", "low", "medium", "high", "critical", "off"]
_PLUGIN_NAME: Final = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
_BANDIT_ID: Final = re.compile(r"^(?:bandit\.)?B\d{3}$")


def known_rule(rule: str) -> bool:
    """A scanner rule id, or a bandit test id (``B101`` or ``bandit.B101``)."""
    return rule in RULES or bool(_BANDIT_ID.match(rule))


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


def _plugin_names(instance: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
    bad = [name for name in value if not _PLUGIN_NAME.match(name)]
    if bad:
        raise ValueError(f"'{attribute.name}' has names that are not plugin names: {bad}")


def _rule_ids(instance: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
    bad = [rule for rule in value if not known_rule(rule)]
    if bad:
        raise ValueError(
            f"'{attribute.name}' has unknown rule ids {bad} (known: {', '.join(sorted(RULES))}, or bandit.BNNN)"
        )


@attrs.frozen
class ScannerSettings:
    """The ``[plugins.scanner.settings]`` table."""

    refuse_at: RefuseAt = attrs.field(
        default="high",
        metadata=_doc(
            "Refuse to start a plugin with an undeclared finding at or above this severity "
            "(info, low, medium, high, critical); 'off' only logs the findings."
        ),
    )
    allow: tuple[str, ...] = attrs.field(
        default=(),
        validator=_plugin_names,
        metadata=_doc("Plugin names that are not scanned before they start."),
    )
    ignore_rules: tuple[str, ...] = attrs.field(
        default=(),
        validator=_rule_ids,
        metadata=_doc("Rule ids left out of every scan ('environ', 'bandit.B101', ...)."),
    )
    bandit: bool = attrs.field(
        default=False,
        metadata=_doc("Also run bandit (the orion-kernel[scan] extra) on the plugin's files and merge its findings."),
    )


@attrs.frozen
class ScanArgs:
    """Arguments of the ``scanner.scan`` operation."""

    #: an entry-point name, module:Class, a module name or a path
    target: str
    #: run bandit too (default: the ``bandit`` setting)
    bandit: bool | None = None


attrs.resolve_types(ScannerSettings)
attrs.resolve_types(ScanArgs)
