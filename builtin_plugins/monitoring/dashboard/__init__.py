"""The dashboard: a live web page of the running kernel.

``builtin_plugins.monitoring.dashboard:Dashboard`` contributes an ASGI app
that the ``http`` plugin serves under ``/dashboard/``: plugins and their
states, hook and operation latencies, invoke rate, error ratios, firing
alerts.  It reads the ``metrics``, ``alerts`` and ``http`` services when they
run and says on the page what is missing when they do not.  The page is plain
HTML, CSS and JavaScript shipped in ``static/``: no build step, no CDN.
"""

from ._plugin import Dashboard as Dashboard
from ._plugin import DashboardSettings as DashboardSettings

__all__ = ["Dashboard", "DashboardSettings"]
