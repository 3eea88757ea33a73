"""Analytics and reports: rolling-window statistics over the ``metrics`` service.

Enable with ``[plugins.analytics] enabled = true`` (with the ``metrics``
plugin).  The summary is the ``analytics.summary`` operation, ``GET
/analytics/summary`` when the ``http`` plugin runs, and ``orion-kernel report``
renders it as JSON, Markdown or a self-contained HTML page.
"""

from ._cli import fetch_summary as fetch_summary
from ._cli import report_command as report_command
from ._config import AnalyticsSettings as AnalyticsSettings
from ._plugin import Analytics as Analytics
from ._render import render_html as render_html
from ._render import render_json as render_json
from ._render import render_markdown as render_markdown
from ._stats import histogram_quantile as histogram_quantile
from ._stats import summarize as summarize

__all__ = [
    "Analytics",
    "AnalyticsSettings",
    "fetch_summary",
    "histogram_quantile",
    "render_html",
    "render_json",
    "render_markdown",
    "report_command",
    "summarize",
]
