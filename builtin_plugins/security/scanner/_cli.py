"""``orion-kernel scan TARGET``: vet a plugin's code before enabling it.

Scanning is static, so no kernel is started: the target's files are read and
analyzed, never imported.  Exit codes: 0 nothing undeclared at or above
``--fail-on``, 1 something is, 2 the target names nothing scannable.
"""

from __future__ import annotations

import argparse
from typing import Any

from plugin_sdk import CliCommand
from plugin_sdk import CliEnvironment

from ._config import known_rule
from ._rules import RULES
from ._rules import SEVERITIES
from ._scan import ENGINE
from ._scan import Finding
from ._scan import ScanError
from ._scan import ScanReport

COLUMNS = ["severity", "rule", "location", "message", "needs", "declared"]


def configure(parser: argparse.ArgumentParser) -> None:
    """The ``scan`` command's arguments."""
    parser.add_argument(
        "target",
        help="an installed plugin's entry-point name, module:Class, a module name, or a path to a file or directory",
    )
    parser.add_argument(
        "--fail-on",
        choices=SEVERITIES,
        default="high",
        help="exit 1 when an undeclared finding is at or above this severity (default: high)",
    )
    parser.add_argument(
        "--bandit",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also run bandit (the orion-kernel[scan] extra) and merge its findings (default: no)",
    )
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="RULE",
        help="leave out a rule id (repeatable), e.g. --ignore environ --ignore bandit.B101",
    )


def row(finding: Finding) -> dict[str, Any]:
    """One table row."""
    if finding.permission is None:
        declared = "-"
    elif finding.declared:
        declared = f"yes ({finding.declared_by})"
    else:
        declared = "no"
    return {
        "severity": finding.severity if not finding.declared else f"info ({finding.original_severity})",
        "rule": finding.rule,
        "location": f"{finding.location}:{finding.col}",
        "message": finding.message,
        "needs": finding.permission or "-",
        "declared": declared,
    }


def render(report: ScanReport, fail_on: str, env: CliEnvironment) -> None:
    """The report for people."""
    asks = ", ".join(report.permissions) or "nothing"
    env.echo(f"{report.target}: plugin {report.plugin or '(unknown)'}, asks for {asks}")
    if report.findings:
        env.emit([row(f) for f in report.findings], columns=COLUMNS)
    else:
        env.echo("no findings")
    for note in report.notes:
        env.echo(f"note: {note}")
    env.echo(report.summary())
    failing = report.at_or_above(fail_on)
    if failing:
        env.echo(f"FAIL: {len(failing)} undeclared finding(s) at or above {fail_on}")
    else:
        env.echo(f"ok: nothing undeclared at or above {fail_on}")


def run(args: argparse.Namespace, env: CliEnvironment) -> int:
    """Scan, print, and exit 1 on findings at or above ``--fail-on`` (2 for a bad target)."""
    unknown = [rule for rule in args.ignore if not known_rule(rule)]
    try:
        if unknown:
            raise ScanError(f"unknown rule ids {unknown} for --ignore (known: {', '.join(sorted(RULES))})")
        report = ENGINE.scan_target(args.target, bandit=args.bandit, ignore_rules=args.ignore)
    except ScanError as exc:
        if env.json:
            env.emit({"ok": False, "error": str(exc)})
        else:
            env.echo(f"error: {exc}")
        return 2
    failing = report.at_or_above(args.fail_on)
    if env.json:
        env.emit({**report.to_json(), "fail_on": args.fail_on, "ok": not failing})
    else:
        render(report, args.fail_on, env)
    return 1 if failing else 0


def scan_command() -> CliCommand:
    """The ``orion-kernel scan`` command."""
    return CliCommand(
        name="scan",
        help="statically scan a plugin's code for what it could do, against the permissions it asks for",
        configure=configure,
        run=run,
    )
