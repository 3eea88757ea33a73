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

The app is plain ASGI 3 (no framework): one route, GET or HEAD, and gzip when
the scraper accepts it, as Prometheus does.
"""

from __future__ import annotations

from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import MutableMapping
from typing import Any
from typing import Final
from typing import TypeAlias

from ._registry import CounterMetric
from ._registry import GaugeMetric
from ._registry import HistogramMetric
from ._registry import _Metric
from ._registry import counter_base

TEXT_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE: Final = "application/openmetrics-text; version=1.0.0; charset=utf-8"

# ASGI 3 types, as plugin_sdk.ASGIApp spells them
Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]

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
    per request so the app always shows the live registry.
    """

    def __init__(self, collect: Callable[[], Iterable[_Metric]]) -> None:
        self._collect = collect

    def __repr__(self) -> str:
        return "<metrics exposition app>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind != "http":
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if path not in ("", "/"):
            await _respond(send, 404, b"not found: /metrics serves only its root path\n", "text/plain; charset=utf-8")
            return
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await _respond(
                send, 405, b"method not allowed: use GET\n", "text/plain; charset=utf-8", [(b"allow", b"GET, HEAD")]
            )
            return
        accept = accept_encoding = ""
        for key, val in scope.get("headers", ()):
            if key == b"accept":
                accept = val.decode("latin-1")
            elif key == b"accept-encoding":
                accept_encoding = val.decode("latin-1")
        openmetrics = wants_openmetrics(accept) if accept else False
        body = render(self._collect(), openmetrics=openmetrics)
        extra = [(b"vary", b"Accept, Accept-Encoding")]
        if len(body) >= _GZIP_MIN and _accepts_gzip(accept_encoding):
            import zlib  # here: a kernel whose scraper never asks for gzip never loads it

            # level 1: a third of level 6's time on the event loop for 10% more bytes;
            # wbits 31: the gzip format (header and trailer), without the gzip module's file layer
            body = zlib.compress(body, 1, wbits=31)
            extra.append((b"content-encoding", b"gzip"))
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
        await _respond(send, 200, body, content_type, extra, head=method == "HEAD")


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    extra: list[tuple[bytes, bytes]] | None = None,
    *,
    head: bool = False,
) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    headers.extend(extra or ())
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
