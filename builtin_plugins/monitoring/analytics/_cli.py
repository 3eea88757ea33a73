"""``orion-kernel report``: an analytics report as JSON, Markdown or HTML.

With ``--from URL`` the summary comes from a kernel that is already running
(its HTTP server, ``GET /analytics/summary``): that is the kernel with
history worth reporting.  Without it the command starts a kernel from the
same config and asks it, which reports only what happened since that kernel
started -- useful to check the set-up, not to study production.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import orjson

from plugin_sdk import CliCommand
from plugin_sdk import CliEnvironment
from plugin_sdk import OrionError

from ._render import RENDERERS

#: where the analytics plugin's HTTP mount answers the summary
SUMMARY_PATH = "/analytics/summary"


class ReportError(Exception):
    """The report could not be made; the message says why, for the command line."""


def summary_url(url: str) -> str:
    """The summary's URL from a server's base URL (``http://127.0.0.1:8470``) or the full URL.

    :raises ReportError: not an ``http://`` or ``https://`` URL.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ReportError(f"--from needs an http:// or https:// URL, got {url!r}")
    if parts.path.rstrip("/").endswith("/summary"):
        return url
    return url.rstrip("/") + SUMMARY_PATH


def _check(data: Any, url: str) -> dict[str, Any]:
    if not isinstance(data, dict) or not {"hooks", "plugins", "operations"} <= data.keys():
        raise ReportError(f"{url} did not answer an analytics summary")
    return data


async def fetch_summary(url: str, env: CliEnvironment, *, request_timeout: float = 10.0) -> dict[str, Any]:
    """GET the summary from a running kernel, through the CLI's ``env.fetch``.

    The CLI process makes the request: the plugin does no network I/O of its own.

    :param request_timeout: seconds to wait to connect and for the answer.
    :raises ReportError: the server cannot be reached, answers an error, or not a summary.
    """
    target = summary_url(url)
    try:
        status, body = await env.fetch(target, socket_timeout=request_timeout, headers={"accept": "application/json"})
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot fetch {target}: {exc}") from None
    if status != 200:
        raise ReportError(f"{target} answered HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ReportError(f"{target} did not answer JSON") from None
    return _check(data, target)


def configure(parser: argparse.ArgumentParser) -> None:
    """The ``report`` command's arguments."""
    parser.add_argument(
        "--format",
        choices=sorted(RENDERERS),
        default=None,
        help="report format (default: markdown, or json with --json)",
    )
    parser.add_argument("-o", "--output", type=Path, default=None, metavar="FILE", help="write here instead of stdout")
    parser.add_argument(
        "--from",
        dest="source_url",
        default=None,
        metavar="URL",
        help="read the summary from a running kernel's HTTP server (e.g. http://127.0.0.1:8470) "
        "instead of starting one",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for --from (default 10)")


async def run(args: argparse.Namespace, env: CliEnvironment) -> int:
    """Get the summary, render it, write it; exit code 1 with a message on failure."""
    fmt: str = args.format or ("json" if env.json else "markdown")
    try:
        if args.source_url:
            summary = await fetch_summary(args.source_url, env, request_timeout=args.timeout)
        else:
            async with env.started() as kernel:
                summary = await kernel.invoke("analytics.summary")
    except (ReportError, OrionError) as exc:
        env.echo(f"error: {exc}")
        return 1
    text = RENDERERS[fmt](summary)
    output: Path | None = args.output
    if output is None:
        env.echo(text.rstrip("\n"))
        return 0
    try:
        await anyio.Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        env.echo(f"error: cannot write {output}: {exc.strerror or exc}")
        return 1
    if env.json:
        env.emit({"output": str(output), "format": fmt, "bytes": len(text.encode())})
    else:
        env.echo(f"wrote the {fmt} report to {output}")
    return 0


def report_command() -> CliCommand:
    """The ``orion-kernel report`` command."""
    return CliCommand(
        name="report",
        help="analytics report (latency percentiles, error ratios, slowest hooks) as JSON, Markdown or HTML",
        configure=configure,
        run=run,
    )
