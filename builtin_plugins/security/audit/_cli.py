"""``orion-kernel audit verify|tail``: check the chain, or show its last entries.

Both start the kernel from the same config (``env.started()``) and call the
admin operations ``audit.verify`` / ``audit.tail`` as :data:`plugin_sdk.OPERATOR`.
Exit codes of ``verify``: 0 the chain verifies, 1 it does not (the first bad
line and why are printed), 2 it could not be checked.
"""

from __future__ import annotations

import argparse
import datetime
import os
from pathlib import Path
from typing import Any

from plugin_sdk import CliCommand
from plugin_sdk import CliEnvironment
from plugin_sdk import OperatorCall
from plugin_sdk import run_as_operator


def _common(parser: argparse.ArgumentParser) -> None:
    # accepted after the action too (`audit verify --json`), like the kernel's own options
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable JSON output")
    parser.add_argument("-c", "--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def configure(parser: argparse.ArgumentParser) -> None:
    """The ``audit`` command's actions and their arguments."""
    actions = parser.add_subparsers(dest="audit_action", metavar="ACTION", required=True)
    verify = actions.add_parser(
        "verify", help="verify the hash chain, MACs and anchor of every file (exit 1 when tampered)"
    )
    verify.add_argument(
        "--path",
        type=Path,
        default=None,
        metavar="PATH",
        help="verify the chain whose current file is PATH (default: the configured log)",
    )
    _common(verify)
    tail = actions.add_parser("tail", help="the last entries of the log, oldest first")
    tail.add_argument("-n", type=int, default=20, help="how many entries (default 20, at most 1000)")
    _common(tail)


def _absolute(path: Path) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _when(ts: Any) -> str:
    try:
        return datetime.datetime.fromtimestamp(float(ts), tz=datetime.UTC).isoformat(timespec="milliseconds")
    except (TypeError, ValueError, OverflowError):
        return str(ts)


def _summary(entry: dict[str, Any]) -> str:
    details = entry.get("details") or {}
    what = details.get("operation") or details.get("plugin") or ""
    return (
        f"{entry.get('seq'):>8}  {_when(entry.get('ts'))}  {entry.get('action')}"
        f"{' ' + what if what else ''}  actor={entry.get('actor')}  {entry.get('outcome')}"
    )


async def run(args: argparse.Namespace, env: CliEnvironment) -> int:
    """Run ``audit verify`` or ``audit tail``."""

    async def work(call: OperatorCall) -> int:
        if args.audit_action == "tail":
            entries = await call("audit.tail", {"n": args.n})
            if env.json:
                env.emit(entries)
            else:
                for entry in entries:
                    env.echo(_summary(entry))
            return 0
        request: dict[str, Any] = {} if args.path is None else {"path": _absolute(args.path)}
        result = await call("audit.verify", request)
        if env.json:
            env.emit(result)
        elif result["ok"]:
            files = len(result["files"])
            env.echo(f"audit log ok: {result['entries']} entries in {files} file(s), last seq {result['last_seq']}")
        else:
            env.echo(f"{result['file']}:{result['line']}: {result['reason']}: {result['detail']}")
            env.echo(f"audit log NOT ok: {result['entries']} entries verified before the first bad line")
        return 0 if result["ok"] else 1

    return await run_as_operator(env, "audit", work, failure=2)


def audit_command() -> CliCommand:
    """The ``orion-kernel audit`` command."""
    return CliCommand(
        name="audit",
        help="verify the audit log's hash chain (exit 1 when tampered) or show its tail",
        configure=configure,
        run=run,
    )
