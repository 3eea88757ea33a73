"""Prometheus text 0.0.4 and OpenMetrics 1.0.0 exposition, and the ASGI app serving it.

Why it is written by hand rather than with ``prometheus_client``: the
registry is our own (the SDK's ``MetricsRegistry`` protocol), its series carry
their label sets pre-rendered and escaped, so rendering is string joining
only: an order of magnitude faster than ``generate_latest`` on the same
series (see ``benchmarks/bench_metrics.py``), and a kernel that enables
``metrics`` does not import ``prometheus_client`` at all.  The tests check every byte we write
with prometheus_client's reference parsers for both formats.

The two formats differ in little: OpenMetrics names a counter family without
``_total`` (its samples keep it), escapes ``"`` in HELP, omits ``_sum`` (and so ``_count``)
of a histogram whose buckets go below zero, and ends with ``# EOF``.  The format is
chosen from the request's ``Accept`` header, as Prometheus negotiates it
(OpenMetrics when the scraper asks for it at least as much as for text).

The app is one route of the SDK's plain-ASGI :class:`plugin_sdk.HttpRoutes`
(no framework): GET or HEAD, and gzip when the scraper accepts it, as
Prometheus does.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from typing import Final

from plugin_sdk import HttpRequest
from plugin_sdk import HttpResponse
from plugin_sdk import HttpRoutes
from plugin_sdk._http import Receive
from plugin_sdk._http import Scope
from plugin_sdk._http import Send

from ._registry import CounterMetric
from ._registry import GaugeMetric
from ._registry import HistogramMetric
from ._registry import _Metric
from ._registry import counter_base

TEXT_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE: Final = "application/openmetrics-text; version=1.0.0; charset=utf-8"


_SPECIAL: Final = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}
#: bodies smaller than this are not worth compressing
_GZIP_MIN: Final = 1024


def _value(value: float) -> str:
    text = repr(value)
    return _SPECIAL.get(text, text)


def escape_help(text: str, *, openmetrics: bool) -> str:
    """HELP text escaped: backslash and line feed (0.0.4), and double quote too (OpenMetrics)."""
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if openmetrics else text


def render(metrics: Iterable[_Metric], *, openmetrics: bool = False) -> bytes:
    """The exposition of ``metrics`` in Prometheus text 0.0.4 or OpenMetrics 1.0.0."""
    out: list[str] = []
    append, extend = out.append, out.extend
    value = _value
    for metric in metrics:
        help_text = escape_help(metric.help, openmetrics=openmetrics)
        if isinstance(metric, CounterMetric):
            name = metric.sample_name
            family = counter_base(metric.name) if openmetrics else name
            append(f"# HELP {family} {help_text}")
            append(f"# TYPE {family} counter")
            extend([f"{name}{s.text} {value(s.value)}" for s in metric.all_series()])
        elif isinstance(metric, GaugeMetric):
            name = metric.name
            append(f"# HELP {name} {help_text}")
            append(f"# TYPE {name} gauge")
            extend([f"{name}{s.text} {value(s.value)}" for s in metric.all_series()])
        elif isinstance(metric, HistogramMetric):
            name = metric.name
            append(f"# HELP {name} {help_text}")
            append(f"# TYPE {name} histogram")
            bucket, total, count = f"{name}_bucket", f"{name}_sum", f"{name}_count"
            les = metric.le_texts
            with_sum = not openmetrics or metric.bounds[0] >= 0
            for s in metric.all_series():
                prefix = bucket + s.text
                cumulative = 0
                for le, n in zip(les, s.counts, strict=True):
                    cumulative += n
                    append(f"{prefix}{le} {cumulative}")
                labels = s.text[:-1] + "}" if len(s.text) > 1 else ""
                if with_sum:
                    append(f"{total}{labels} {value(s.sum)}")
                    append(f"{count}{labels} {cumulative}")
    if openmetrics:
        append("# EOF")
    append("")
    return "\n".join(out).encode()


def wants_openmetrics(accept: str) -> bool:
    """Whether an ``Accept`` header prefers OpenMetrics text to Prometheus text 0.0.4.

    OpenMetrics is chosen when it is acceptable (``application/openmetrics-text``,
    version 1.0.0 or 0.0.1 or none) with a quality at least that of any
    acceptable text format (``text/plain`` 0.0.4, ``text/*``, ``*/*``).
    """
    best_om = best_text = 0.0
    for part in accept.split(","):
        media, _, params = part.partition(";")
        media = media.strip().lower()
        quality, version = 1.0, None
        for param in params.split(";"):
            key, _, val = param.partition("=")
            key, val = key.strip().lower(), val.strip().strip('"')
            if key == "q":
                try:
                    quality = float(val)
                except ValueError:
                    quality = 0.0
            elif key == "version":
                version = val
        if media == "application/openmetrics-text" and version in (None, "1.0.0", "0.0.1"):
            best_om = max(best_om, quality)
        elif media in ("text/plain", "text/*", "*/*") and version in (None, "0.0.4"):
            best_text = max(best_text, quality)
    return best_om > 0 and best_om >= best_text


def _accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.split(","):
        coding, _, params = part.partition(";")
        if coding.strip().lower() == "gzip":
            _, _, q = params.partition("q=")
            try:
                return not q or float(q) > 0
            except ValueError:
                return False
    return False


class MetricsApp:
    """The ASGI app behind ``/metrics``: GET (or HEAD) ``/`` renders the registry.

    ``collect`` returns the metrics to render (sorted by name); it is called
    per request so the app always shows the live registry.  Routing (404 for
    other paths, 405 with ``allow``, HEAD, lifespan) is the SDK's
    :class:`plugin_sdk.HttpRoutes`.
    """

    def __init__(self, collect: Callable[[], Iterable[_Metric]]) -> None:
        self._collect = collect
        self._routes = HttpRoutes({("GET", "/"): self._render})

    def __repr__(self) -> str:
        return "<metrics exposition app>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._routes(scope, receive, send)

    async def _render(self, request: HttpRequest) -> HttpResponse:
        accept = request.header("accept", "")
        openmetrics = wants_openmetrics(accept) if accept else False
        body = render(self._collect(), openmetrics=openmetrics)
        headers = {"vary": "Accept, Accept-Encoding"}
        if len(body) >= _GZIP_MIN and _accepts_gzip(request.header("accept-encoding", "")):
            import zlib  # here: a kernel whose scraper never asks for gzip never loads it

            # level 1: a third of level 6's time on the event loop for 10% more bytes;
            # wbits 31: the gzip format (header and trailer), without the gzip module's file layer
            body = zlib.compress(body, 1, wbits=31)
            headers["content-encoding"] = "gzip"
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
        return HttpResponse(200, body, content_type, headers)
