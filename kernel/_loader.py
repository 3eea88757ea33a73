"""From configuration and candidates to loaded, configured plugin records."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Final

from plugin_sdk import ConfigIssue
from plugin_sdk import Manifest
from plugin_sdk import ManifestError
from plugin_sdk import PluginError
from plugin_sdk import PluginState

from ._config import OrionConfig
from ._config import PluginEntry
from ._config import structure_settings
from ._discovery import Candidate
from ._discovery import from_config_source
from ._discovery import from_entry_points
from ._discovery import merge_candidates
from ._dispatch import HookRelay
from ._lifecycle import PluginRecord
from ._lifecycle import plugin_ranks

log: Final = logging.getLogger("orion.kernel")


def candidates_for(
    config: OrionConfig,
    code: Mapping[str, Candidate],
    *,
    entry_points: bool | Mapping[str, Candidate] = True,
    scan_all: bool = False,
) -> dict[str, Candidate]:
    """Every candidate the config can refer to.  Entry points are only read when
    some enabled plugin is not found in code or ``source`` (or ``scan_all``)."""
    sources = {
        name: from_config_source(name, entry.source)
        for name, entry in config.plugins.items()
        if entry.source is not None
    }
    layers: list[Mapping[str, Candidate]] = [code, sources]
    if isinstance(entry_points, Mapping):
        layers.append(entry_points)
    elif entry_points:
        # Any entry (enabled or not) not found in code or source must be an entry point.
        wanted = [n for n in config.plugins if n not in code and n not in sources]
        if wanted or scan_all:
            layers.append(from_entry_points())
    return merge_candidates(*layers)


def build_records(
    config: OrionConfig, candidates: Mapping[str, Candidate]
) -> tuple[dict[str, PluginRecord], list[ConfigIssue]]:
    """One record per candidate (enabled or not), and an issue per config entry naming no plugin."""
    issues: list[ConfigIssue] = []
    for name in config.plugins:
        if name not in candidates:
            close = difflib.get_close_matches(name, list(candidates), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            issues.append(
                ConfigIssue(
                    f"plugins.{name}",
                    f"no plugin named {name!r} (not passed in code, no 'source', no installed "
                    f"entry point in orion_kernel.plugins){hint}",
                )
            )
    records = {}
    for name, candidate in candidates.items():
        entry = config.plugins.get(name, PluginEntry())
        enabled = entry.enabled if entry.enabled is not None else candidate.kind == "code"
        records[name] = PluginRecord(name=name, candidate=candidate, entry=entry, enabled=enabled)
    return records, issues


def load_record(record: PluginRecord, isolate: Callable[[PluginRecord], object] | None = None) -> None:
    """Import and validate one enabled plugin; a failure marks the record failed (soft).

    :param isolate: builds the stand-in of a plugin under ``isolation = "process"``
        (its worker describes it; the kernel never imports it).
    """
    try:
        if record.entry.isolation == "process":
            if isolate is None:
                raise PluginError(f"plugin {record.name!r}: process isolation is not available here")
            plugin = isolate(record)
        else:
            plugin = record.candidate.load()  # may run arbitrary import-time code
        manifest = Manifest.of(plugin)
        if manifest.name != record.name:
            raise ManifestError(
                record.name,
                "name",
                f"the plugin found as {record.name!r} ({record.candidate.source}) calls itself "
                f"{manifest.name!r}; the entry point name and the plugin name must match",
            )
    except (Exception, SystemExit) as exc:  # a plugin's sys.exit() at import must not end the kernel
        record.fail(exc, with_traceback=True)
        record.last_error = f"cannot load from {record.candidate.source}: {record.last_error}"
        log.error("plugin %s: %s", record.name, record.last_error)
        record.state = PluginState.FAILED
        return
    record.plugin = plugin
    record.manifest = manifest
    record.state = PluginState.LOADED


def configure_record(record: PluginRecord) -> list[ConfigIssue]:
    """Structure a loaded plugin's settings into its ``Config`` (an isolated plugin's
    worker has done it already: its settings, defaults filled in, arrive as plain data)."""
    assert record.manifest is not None
    description = getattr(record.plugin, "description", None)
    if getattr(record.plugin, "isolated", False) and isinstance(description, dict):
        issues = [ConfigIssue(i["path"], i["message"]) for i in description.get("issues", ())]
        if not issues:
            record.settings = dict(description.get("settings", {}))
            record.state = PluginState.CONFIGURED
        return issues
    settings, issues = structure_settings(record.name, record.manifest.Config, record.entry.settings)
    if not issues:
        record.settings = settings
        record.state = PluginState.CONFIGURED
    return issues


def register_hooks(relay: HookRelay, records: Iterable[PluginRecord]) -> None:
    """Add the plugins' own hookspecs, then register their impls; failures are soft.

    Hookspecs come from every loaded plugin, even one whose settings are
    invalid, so that config checks of hook names see them.
    """
    records = list(records)
    for record in records:
        if record.manifest is None or record.state is PluginState.FAILED:
            continue
        assert record.manifest is not None
        try:
            for namespace in record.manifest.hookspecs:
                relay.add_specs(namespace)
        except PluginError as exc:
            record.fail(PluginError(f"plugin {record.name!r}: {exc}", plugin=record.name))
            record.state = PluginState.FAILED
    for record in records:
        if record.state is not PluginState.CONFIGURED:
            continue
        try:
            record.hooks = relay.register(record.name, record.plugin)
        except PluginError as exc:
            record.fail(exc)
            log.error("plugin %s: %s", record.name, exc)
            record.state = PluginState.FAILED


def order_issues(records: Iterable[PluginRecord]) -> tuple[dict[str, int], list[ConfigIssue]]:
    """Plugin ranks, and an issue per before/after cycle."""
    ranks, cycles = plugin_ranks(records)
    issues = [
        ConfigIssue(
            f"plugins.{cycle[0]}",
            f"ordering cycle through before/after: {' -> '.join(cycle + cycle[:1])}",
        )
        for cycle in cycles
    ]
    return ranks, issues


def timeout_issues(relay: HookRelay, config: OrionConfig) -> list[ConfigIssue]:
    """An issue per ``kernel.hook_timeouts`` key that names no known hook."""
    issues = []
    for hook in config.kernel.hook_timeouts:
        if hook not in relay.specs:
            close = difflib.get_close_matches(hook, list(relay.specs), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            issues.append(ConfigIssue(f"kernel.hook_timeouts.{hook}", f"no hook named {hook!r}{hint}"))
    return issues
