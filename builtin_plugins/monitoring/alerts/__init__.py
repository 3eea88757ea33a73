"""Alerts: rules over the ``metrics`` service, notified through the ``alert_notify`` hook.

Enable with ``[plugins.alerts] enabled = true`` (the ``metrics`` plugin must be
enabled too) and describe rules in ``[[plugins.alerts.settings.rules]]``; see
:class:`AlertsSettings` for every field.
"""

from ._config import AlertsSettings as AlertsSettings
from ._config import Rule as Rule
from ._config import Silence as Silence
from ._engine import Engine as Engine
from ._plugin import Alerts as Alerts

__all__ = ["Alerts", "AlertsSettings", "Engine", "Rule", "Silence"]
