"""The ``scanner`` plugin: vet every other plugin's code before it starts.

It implements the sensitive ``vet_plugin`` hook (the operator grants
``hook:vet_plugin``), so the kernel starts it before every other plugin and
asks it, right before each one starts, whether that plugin may.  The scan is
static (``ast``; nothing of the plugin is imported by the scanner) and runs
in a worker thread, off the event loop.  A plugin with an undeclared finding
at or above ``refuse_at`` is refused with the findings as its error.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any
from typing import ClassVar

import anyio.to_thread

from plugin_sdk import CliCommand
from plugin_sdk import ConfigIssue
from plugin_sdk import InvalidArguments
from plugin_sdk import Invocation
from plugin_sdk import Manifest
from plugin_sdk import NoSettings
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import VetVerdict
from plugin_sdk import hookimpl

from ._cli import scan_command
from ._config import ScanArgs
from ._config import ScannerSettings
from ._rules import rank
from ._scan import ENGINE
from ._scan import Finding
from ._scan import ScanError
from ._scan import ScanReport

#: findings named in a refusal's reason (the log has them all)
REASON_FINDINGS = 5

#: what the conformance suite calls vet_plugin with: a clean manifest, the scanner's own package
_EXAMPLE_MANIFEST = Manifest(
    name="example",
    version="1.0.0",
    sdk=">=1,<2",
    requires=(),
    optional=(),
    provides=(),
    permissions=(),
    Config=NoSettings,
    priority=0,
    before=(),
    after=(),
    hookspecs=(),
    backends=("asyncio", "trio"),
    has_reconfigure=False,
)


def refusal_reason(findings: Sequence[Finding], threshold: str) -> str:
    """``scan found 2 finding(s) at or above high: subprocess at risky/plugin.py:12, ...``."""
    shown = ", ".join(f"{f.rule} at {f.location}" for f in findings[:REASON_FINDINGS])
    more = f", and {len(findings) - REASON_FINDINGS} more" if len(findings) > REASON_FINDINGS else ""
    return f"scan found {len(findings)} finding(s) at or above {threshold}: {shown}{more}"


class Scanner(Plugin):
    """Static checks of a plugin's code against the permissions it asks for, before it starts.

    Hook ``vet_plugin`` (needs the grant ``hook:vet_plugin``); operation
    ``scanner.scan``; CLI ``orion-kernel scan``.
    """

    name = "scanner"
    version = "1.0.0"
    permissions = ("hook:vet_plugin",)
    Config = ScannerSettings

    conformance_bad_settings: ClassVar[list[dict[str, Any]]] = [
        {"refuse_at": "severe"},
        {"ignore_rules": ["no-such-rule"]},
        {"allow": ["Not A Name"]},
    ]
    conformance_hook_args: ClassVar[dict[str, dict[str, Any]]] = {
        "vet_plugin": {"plugin": "example", "manifest": _EXAMPLE_MANIFEST, "module": "builtin_plugins.security.scanner"}
    }
    conformance_opt_out: ClassVar[dict[str, str]] = {
        "isolation.process": "vet_plugin receives a Manifest (it holds the plugin's Config class), "
        "which does not cross the process boundary as JSON",
        "lifecycle.no_leaks": "the thread left is anyio's worker-thread pool (anyio.to_thread.run_sync, "
        "shared by every plugin; idle threads exit after 10 s), not one the scanner starts or owns",
    }

    def __init__(self) -> None:
        self._settings = ScannerSettings()
        self._log = logging.getLogger("orion.plugin.scanner")

    async def start(self, ctx: PluginContext[ScannerSettings]) -> None:
        self._settings = ctx.settings
        self._log = ctx.log
        ctx.register_operation(
            "scanner.scan",
            self._scan_operation,
            args_type=ScanArgs,
            doc="Statically scan a plugin (entry-point name, module:Class, module or path): findings as JSON.",
            example_args={"target": "builtin_plugins.security.scanner"},
        )

    def reconfigure(self, settings: ScannerSettings) -> None:
        """New thresholds, exemptions and ignored rules apply to the next plugin vetted."""
        self._settings = settings

    # -- vetting ---------------------------------------------------------------------------

    @hookimpl
    async def vet_plugin(self, plugin: str, manifest: Manifest, module: str) -> VetVerdict | None:
        """Scan ``module`` (and its package's modules it imports); refuse on undeclared findings at ``refuse_at``."""
        settings = self._settings
        if plugin in settings.allow:
            self._log.info("scanner: %s is in allow: not scanned", plugin)
            return None
        report = await anyio.to_thread.run_sync(
            functools.partial(
                ENGINE.scan_module,
                module,
                permissions=tuple(manifest.permissions),
                plugin=plugin,
                bandit=settings.bandit,
                ignore_rules=settings.ignore_rules,
                missing_is_finding=True,
            )
        )
        self._log_report(plugin, report)
        if settings.refuse_at == "off":
            return None
        offending = report.at_or_above(settings.refuse_at)
        if not offending:
            return None
        return VetVerdict(refuse=True, reason=refusal_reason(offending, settings.refuse_at))

    def _log_report(self, plugin: str, report: ScanReport) -> None:
        """The summary at INFO; undeclared findings at WARNING from ``refuse_at`` (or ``high``, whichever is
        lower: what a looser threshold lets through is still worth a warning), INFO from medium, else DEBUG."""
        threshold = self._settings.refuse_at
        warn_from = rank("high") if threshold == "off" else min(rank(threshold), rank("high"))
        self._log.info("scanner: %s (%s): %s", plugin, report.target, report.summary())
        for finding in report.findings:
            severity = -1 if finding.declared else rank(finding.severity)
            if severity >= warn_from:
                level = logging.WARNING
            elif severity >= rank("medium"):
                level = logging.INFO
            else:
                level = logging.DEBUG
            self._log.log(
                level,
                "scanner: %s: %s %s at %s:%d: %s (needs %s%s)",
                plugin,
                finding.severity,
                finding.rule,
                finding.location,
                finding.col,
                finding.message,
                finding.permission or "no permission",
                f"; declared by {finding.declared_by}" if finding.declared else "",
            )
        for note in report.notes:
            self._log.info("scanner: %s: note: %s", plugin, note)

    # -- the operation and the CLI ------------------------------------------------------------

    async def _scan_operation(self, inv: Invocation) -> dict[str, Any]:
        """Scan a target; the report as JSON-able data."""
        args: ScanArgs = inv.params
        bandit = self._settings.bandit if args.bandit is None else args.bandit
        try:
            report = await anyio.to_thread.run_sync(
                functools.partial(
                    ENGINE.scan_target, args.target, bandit=bandit, ignore_rules=self._settings.ignore_rules
                )
            )
        except ScanError as exc:
            raise InvalidArguments(inv.operation, [ConfigIssue("args.target", str(exc))]) from None
        return report.to_json()

    @hookimpl
    def cli_commands(self) -> list[CliCommand]:
        """``orion-kernel scan``."""
        return [scan_command()]
