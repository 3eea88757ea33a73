"""Reports from an analytics summary: JSON, Markdown and a self-contained HTML page.

Each renderer is a pure function of the summary dict (what the
``analytics.summary`` operation and ``GET /analytics/summary`` return), so a
report can be made from a running kernel, from a saved JSON file, or in a
test, the same way.  The HTML page has its charts as inline SVG and its style
inline: it opens from a file, offline, in a mail attachment or a CI artifact,
and fetches nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from datetime import UTC
from datetime import datetime
from typing import Any
from typing import Final

import orjson

#: the most bars one chart shows (the largest values)
MAX_BARS: Final = 20
_SECTIONS: Final = (
    ("hooks", "Hooks", "hook"),
    ("plugins", "Plugins", "plugin"),
    ("operations", "Operations", "operation"),
)


def seconds(value: float | None) -> str:
    """A latency for people: ``850 µs``, ``12.5 ms``, ``1.2 s``; ``-`` when unknown."""
    if value is None:
        return "-"
    if value < 0.001:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1e3:.3g} ms"
    return f"{value:.3g} s"


def percent(value: float) -> str:
    """A ratio as a percentage: ``12.5%``."""
    return f"{value * 100:.1f}%"


def per_second(value: float | None) -> str:
    """A rate: ``3.2/s``; ``-`` when the window was too short to tell."""
    return "-" if value is None else f"{value:.3g}/s"


def _when(epoch: Any) -> str:
    try:
        return datetime.fromtimestamp(float(epoch), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError):
        return "unknown time"


def _heading(summary: Mapping[str, Any]) -> str:
    window = summary.get("window", {})
    return (
        f"Generated {_when(summary.get('generated_at'))}, covering the last {float(window.get('covered', 0)):.0f} s "
        f"(window {float(window.get('seconds', 0)):.0f} s, {window.get('snapshots', 0)} snapshots)."
    )


def _table_rows(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [
        [
            str(row["name"]),
            str(row["calls"]),
            per_second(row["rate"]),
            str(row["errors"]),
            percent(row["error_ratio"]),
            seconds(row.get("p50")),
            seconds(row.get("p95")),
            seconds(row.get("p99")),
            seconds(row.get("mean")),
        ]
        for row in rows
    ]


_COLUMNS: Final = ("calls", "rate", "errors", "error ratio", "p50", "p95", "p99", "mean")
_TOP_COLUMNS: Final = ("p95", "p99", "p50", "calls")


def _top_rows(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [
        [str(row["name"]), seconds(row.get("p95")), seconds(row.get("p99")), seconds(row.get("p50")), str(row["calls"])]
        for row in rows
    ]


# -- JSON --------------------------------------------------------------------------------


def render_json(summary: Mapping[str, Any]) -> str:
    """The summary as indented JSON with sorted keys (``orjson``), ending with a newline."""
    return orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"


# -- Markdown ----------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [
        "| " + " | ".join(_md_cell(cell) for cell in header) + " |",
        "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(summary: Mapping[str, Any]) -> str:
    """A Markdown report: totals, the slowest hooks/plugins/operations, then every row."""
    totals = summary.get("totals", {})
    top = summary.get("top", {})
    parts = [
        "# Orion Kernel analytics",
        _heading(summary),
        _md_table(
            ("", "calls", "errors"),
            [
                ("hook calls", str(totals.get("hook_calls", 0)), str(totals.get("hook_errors", 0))),
                ("invokes", str(totals.get("invokes", 0)), str(totals.get("invoke_errors", 0))),
            ],
        ),
    ]
    for key, title, noun in _SECTIONS:
        slow = top.get(key, [])
        parts.append(f"## Slowest {title.lower()} (top {top.get('n', len(slow))} by p95)")
        parts.append(
            _md_table((noun, *_TOP_COLUMNS), _top_rows(slow)) if slow else f"_No {noun} latencies in the window._"
        )
    for key, title, noun in _SECTIONS:
        rows = summary.get(key, [])
        parts.append(f"## {title}")
        parts.append(_md_table((noun, *_COLUMNS), _table_rows(rows)) if rows else f"_No {noun} calls in the window._")
    return "\n\n".join(parts) + "\n"


# -- HTML --------------------------------------------------------------------------------

_STYLE: Final = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1rem; color: #1d2330; background: #fff; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
.meta { color: #5b6475; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(30rem, 1fr)); gap: 1.5rem; }
figure { margin: 0; } figcaption { font-weight: 600; margin-bottom: .4rem; }
svg text { font: 12px system-ui, sans-serif; fill: #1d2330; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; }
th, td { padding: .3rem .6rem; border-bottom: 1px solid #e3e6ec; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; white-space: normal; word-break: break-all; }
th { background: #f4f6f9; } .empty { color: #5b6475; font-style: italic; }
"""


def bar_chart(title: str, items: Sequence[tuple[str, float]], fmt: Callable[[float], str], *, color: str) -> str:
    """A horizontal bar chart as an inline ``<svg>`` in a ``<figure>`` (largest values first)."""
    import html  # here, as in the other HTML functions: only an HTML report loads html's entity tables

    caption = f"<figcaption>{html.escape(title)}</figcaption>"
    shown = sorted(items, key=lambda item: (-item[1], item[0]))[:MAX_BARS]
    if not shown or max(value for _, value in shown) <= 0:
        return f'<figure>{caption}<p class="empty">No data in the window.</p></figure>'
    label_width, bar_width, value_width, row = 210, 330, 90, 22
    width, height = label_width + bar_width + value_width, row * len(shown) + 8
    top = max(value for _, value in shown)
    parts = [
        f'<svg role="img" aria-label="{html.escape(title, quote=True)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">'
    ]
    for index, (label, value) in enumerate(shown):
        y = 4 + index * row
        length = max(bar_width * value / top, 1.0) if value > 0 else 0.0
        short = label if len(label) <= 30 else label[:29] + "…"
        text = html.escape(fmt(value))
        parts.append(
            f'<text x="{label_width - 8}" y="{y + 15}" text-anchor="end">{html.escape(short)}</text>'
            f'<rect x="{label_width}" y="{y + 3}" width="{length:.1f}" height="{row - 6}" rx="2" fill="{color}">'
            f"<title>{html.escape(label)}: {text}</title></rect>"
            f'<text x="{label_width + length + 6:.1f}" y="{y + 15}">{text}</text>'
        )
    parts.append("</svg>")
    return f"<figure>{caption}{''.join(parts)}</figure>"


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    import html

    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(summary: Mapping[str, Any]) -> str:
    """A self-contained HTML page: SVG bar charts (p95 latency, error ratios) and the tables.

    No scripts, no external style sheets, fonts or images: nothing is fetched.
    """
    import html

    totals = summary.get("totals", {})
    top = summary.get("top", {})

    def items(key: str, field: str) -> list[tuple[str, float]]:
        return [(str(row["name"]), float(row[field])) for row in summary.get(key, []) if row.get(field) is not None]

    charts = [
        bar_chart("p95 latency by hook", items("hooks", "p95"), seconds, color="#3b6fd8"),
        bar_chart("p95 latency by operation", items("operations", "p95"), seconds, color="#3b6fd8"),
        bar_chart("p95 latency by plugin", items("plugins", "p95"), seconds, color="#6a4fc9"),
        bar_chart("Error ratio by hook", items("hooks", "error_ratio"), percent, color="#d8553b"),
        bar_chart("Error ratio by operation", items("operations", "error_ratio"), percent, color="#d8553b"),
        bar_chart("Error ratio by plugin", items("plugins", "error_ratio"), percent, color="#d8553b"),
    ]
    body = [
        "<h1>Orion Kernel analytics</h1>",
        f'<p class="meta">{html.escape(_heading(summary))}</p>',
        _html_table(
            ("", "calls", "errors"),
            [
                ("hook calls", str(totals.get("hook_calls", 0)), str(totals.get("hook_errors", 0))),
                ("invokes", str(totals.get("invokes", 0)), str(totals.get("invoke_errors", 0))),
            ],
        ),
        f'<div class="charts">{"".join(charts)}</div>',
    ]
    for key, title, noun in _SECTIONS:
        slow = top.get(key, [])
        body.append(
            f"<h2>Slowest {html.escape(title.lower())} (top {html.escape(str(top.get('n', len(slow))))} by p95)</h2>"
        )
        body.append(
            _html_table((noun, *_TOP_COLUMNS), _top_rows(slow))
            if slow
            else f'<p class="empty">No {noun} latencies.</p>'
        )
    for key, title, noun in _SECTIONS:
        rows = summary.get(key, [])
        body.append(f"<h2>{html.escape(title)}</h2>")
        body.append(
            _html_table((noun, *_COLUMNS), _table_rows(rows)) if rows else f'<p class="empty">No {noun} calls.</p>'
        )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Orion Kernel analytics</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


#: format name -> renderer, for the CLI and the HTTP routes
RENDERERS: Final[dict[str, Callable[[Mapping[str, Any]], str]]] = {
    "json": render_json,
    "markdown": render_markdown,
    "html": render_html,
}
