"""Transactional reload: check, start the new beside the old, then swap or roll back."""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING
from typing import Any
from typing import Final

import anyio
import attrs

from plugin_sdk import ConfigError
from plugin_sdk import ConfigIssue
from plugin_sdk import ManifestError
from plugin_sdk import PermissionsNotGranted
from plugin_sdk import PluginError
from plugin_sdk import PluginState

from ._config import OrionConfig
from ._config import structure_settings
from ._grants import Grants
from ._grants import check_sensitive_hooks
from ._grants import resolve
from ._lifecycle import LIVE
from ._lifecycle import PluginRecord
from ._lifecycle import plan_start
from ._loader import build_records
from ._loader import candidates_for
from ._loader import configure_record
from ._loader import load_record
from ._loader import order_issues
from ._loader import timeout_issues

if TYPE_CHECKING:
    from ._kernel import Kernel
    from ._kernel import ReloadReport

log: Final = logging.getLogger("orion.kernel")


def _same_entry(old: PluginRecord, new: PluginRecord) -> bool:
    # Both are enabled here, so an explicit `enabled = true` is no change.
    return attrs.evolve(old.entry, enabled=None) == attrs.evolve(new.entry, enabled=None)


def _only_settings_changed(old: PluginRecord, new: PluginRecord) -> bool:
    return attrs.evolve(old.entry, settings={}, enabled=None) == attrs.evolve(new.entry, settings={}, enabled=None)


@attrs.define
class _Plan:
    """What a reload will do, by plugin."""

    start: list[PluginRecord] = attrs.field(factory=list)  # new records to start
    restart: list[str] = attrs.field(factory=list)  # names among start replacing a running instance
    retry: set[str] = attrs.field(factory=set)  # names among start that had failed before: they never block
    reconfigure: list[tuple[PluginRecord, Any]] = attrs.field(factory=list)  # (running record, new settings)
    stop: list[PluginRecord] = attrs.field(factory=list)  # running records to stop
    unchanged: list[str] = attrs.field(factory=list)


def _diff(current: dict[str, PluginRecord], fresh: dict[str, PluginRecord], issues: list[ConfigIssue]) -> _Plan:
    plan = _Plan()
    for name in sorted(set(current) | set(fresh)):
        old, new = current.get(name), fresh.get(name)
        was = old is not None and old.state in LIVE
        now = new is not None and new.enabled
        if was and not now:
            assert old is not None
            plan.stop.append(old)
        elif now and not was:
            assert new is not None
            plan.start.append(new)
            if old is not None and old.enabled:
                plan.retry.add(name)
        elif was and now:
            assert old is not None
            assert new is not None
            assert old.manifest is not None
            if _same_entry(old, new) and old.candidate.source == new.candidate.source:
                plan.unchanged.append(name)
            elif old.manifest.has_reconfigure and _only_settings_changed(old, new):
                settings, found = structure_settings(name, old.manifest.Config, new.entry.settings)
                issues.extend(found)
                plan.reconfigure.append((old, settings))
            elif not old.candidate.fresh_instances:
                issues.append(
                    ConfigIssue(
                        f"plugins.{name}",
                        "this plugin was passed in code as an instance and has no reconfigure(): "
                        "its configuration cannot change while the kernel runs; restart the kernel",
                    )
                )
            else:
                plan.start.append(new)
                plan.restart.append(name)
                plan.stop.append(old)
    return plan


async def apply_reload(kernel: Kernel, config: OrionConfig) -> ReloadReport:
    from ._kernel import ReloadError
    from ._kernel import ReloadReport

    lc = kernel._lifecycle
    relay = kernel._relay
    candidates = candidates_for(config, kernel._code, entry_points=kernel._entry_points)
    fresh, issues = build_records(config, candidates)
    current = lc.records
    plan = _diff(current, fresh, issues)
    for record in plan.start:
        load_record(record, isolate=kernel._stand_in)
        if record.state is PluginState.FAILED:
            issues.append(ConfigIssue(f"plugins.{record.name}", record.last_error or "cannot load"))
        else:
            issues.extend(configure_record(record))
    # Permissions: new instances and new settings (placeholders) are checked against the new grants.
    policy, data_root = config.kernel.sandbox.default, config.kernel.data_dir
    regrants: dict[str, Grants] = {}
    for record in plan.start:
        if record.state is PluginState.CONFIGURED:
            try:
                record.grants = resolve(record, policy, data_root)
            except (ManifestError, PermissionsNotGranted) as exc:
                issues.append(ConfigIssue(f"plugins.{record.name}.permissions", str(exc)))
    for old, settings in plan.reconfigure:
        try:
            regrants[old.name] = resolve(attrs.evolve(old, settings=settings), policy, data_root)
        except (ManifestError, PermissionsNotGranted) as exc:
            issues.append(ConfigIssue(f"plugins.{old.name}.permissions", str(exc)))
    if issues:
        raise ConfigError(issues)

    # Hooks of the new instances must be valid before anything starts.
    for record in plan.start:
        assert record.manifest is not None
        if relay.is_registered(record.plugin):
            continue  # the same instance, validated when it was first loaded
        try:
            for namespace in record.manifest.hookspecs:
                relay.add_specs(namespace)
            record.hooks = relay.register(f"{record.name}.staged", record.plugin)
            check_sensitive_hooks(relay, [record], staged=True)
            if record.state is PluginState.FAILED:
                raise PluginError(record.last_error or "sensitive hook not granted", plugin=record.name)
        except PluginError as exc:
            raise ReloadError(f"plugin {record.name!r}: {exc}", plugin=record.name) from None
        finally:
            relay.unregister(f"{record.name}.staged")

    stopping = {r.name for r in plan.stop}
    survivors = [r for r in current.values() if r.state in LIVE and r.name not in stopping]
    after = survivors + plan.start
    ranks, more = order_issues(after)
    more.extend(timeout_issues(relay, config))
    if more:
        raise ConfigError(more)
    graph = plan_start(after)
    broken = {n: why for n, why in graph.failures.items() if n not in plan.retry}
    if broken:
        lines = "; ".join(f"{n}: {why}" for n, why in sorted(broken.items()))
        raise ReloadError(f"the new configuration cannot run: {lines}")

    # Stage: start new instances beside the old ones, under the new kernel settings.
    previous = (lc.start_timeout, lc.stop_timeout, lc.data_root)
    lc.start_timeout = config.kernel.start_timeout
    lc.stop_timeout = config.kernel.stop_timeout
    lc.data_root = config.kernel.data_dir
    external = {s: r.name for s, (r, _) in lc.services.items() if r.name not in stopping}
    await lc.start_all(plan.start, plan_start(plan.start, external=external), stage=True)
    failed = [r for r in plan.start if not r.staged and r.name not in plan.retry]
    done: list[tuple[PluginRecord, Any]] = []
    if not failed:
        for old, settings in plan.reconfigure:
            try:
                outcome = old.plugin.reconfigure(settings)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception as exc:
                error = PluginError(f"reconfigure() failed: {type(exc).__name__}: {exc}", plugin=old.name)
                failed.append(attrs.evolve(old, last_error=str(error)))
                break
            done.append((old, settings))
    if failed:
        lc.start_timeout, lc.stop_timeout, lc.data_root = previous
        await _roll_back(kernel, plan.start, done)
        lines = "; ".join(f"{r.name}: {r.last_error}" for r in failed)
        raise ReloadError(f"reload rolled back, the previous plugins keep running: {lines}")

    # Commit: swap registrations at once, then stop what was replaced or removed.
    for old in plan.stop:
        lc.deactivate(old)
        relay.unregister(old.name)
    started = [r for r in plan.start if r.staged]
    for record in plan.start:
        relay.unregister(record.name)  # a failed earlier attempt may still be registered
        lc.records[record.name] = record
    starting = {r.name for r in plan.start}
    for name, record in fresh.items():
        known = current.get(name)
        if known is None:
            lc.records[name] = record
        elif name not in starting:
            known.entry, known.enabled = record.entry, record.enabled  # stopped or disabled: keep its history
    for old, settings in done:
        old.settings = settings
        old.grants = regrants.get(old.name, old.grants)
        old.entry = fresh[old.name].entry
    for record in started:
        record.hooks = relay.register(record.name, record.plugin)
        record.staged = False
        lc.activate(record)
    lc.staged_services.clear()
    for record in started:
        lc.set_state(record, PluginState.RUNNING)
    kernel._config = config
    relay.quarantine_after = config.kernel.quarantine_after
    lc.ranks = ranks
    kernel._pipeline.set_order(ranks)
    relay.configure(ranks=ranks, timeouts=config.kernel.hook_timeouts)
    lc.sync_dispatch()
    await lc.stop_all(plan.stop)
    report = ReloadReport(
        started=tuple(r.name for r in started if r.name not in plan.restart),
        stopped=tuple(r.name for r in plan.stop if r.name not in plan.restart),
        restarted=tuple(plan.restart),
        reconfigured=tuple(old.name for old, _ in done),
        unchanged=tuple(plan.unchanged),
    )
    log.info("reload applied: %s", report)
    return report


async def _roll_back(kernel: Kernel, staged: list[PluginRecord], reconfigured: list[tuple[PluginRecord, Any]]) -> None:
    lc = kernel._lifecycle
    with anyio.CancelScope(shield=True):
        for old, _ in reversed(reconfigured):
            try:
                outcome = old.plugin.reconfigure(old.settings)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                log.exception("plugin %s: reconfigure() back to the old settings failed", old.name)
        for record in staged:
            if not record.staged:
                continue
            try:
                with anyio.fail_after(record.entry.stop_timeout or lc.stop_timeout):
                    await record.plugin.stop()
            except Exception:
                log.exception("plugin %s: stop() of a rolled-back instance failed", record.name)
            await lc.cancel_tasks(record, lc.stop_timeout)
            record.staged = False
            record.state = PluginState.STOPPED
        lc.staged_services.clear()
