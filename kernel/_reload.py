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
from plugin_sdk import PluginError
from plugin_sdk import PluginState

from ._config import OrionConfig
from ._config import structure_settings
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


def _only_settings_changed(old: PluginRecord, new: PluginRecord) -> bool:
    return attrs.evolve(old.entry, settings={}) == attrs.evolve(new.entry, settings={})


async def apply_reload(kernel: Kernel, config: OrionConfig) -> ReloadReport:
    from ._kernel import ReloadError
    from ._kernel import ReloadReport

    lc = kernel._lifecycle
    relay = kernel._relay
    candidates = candidates_for(config, kernel._code, entry_points=kernel._entry_points)
    fresh, issues = build_records(config, candidates)
    current = lc.records

    start: list[PluginRecord] = []  # new records to start (added or restarted)
    restart: list[str] = []
    reconfigure: list[tuple[PluginRecord, Any]] = []  # (old record, new settings)
    stop: list[PluginRecord] = []  # old records to stop (removed or restarted)
    unchanged: list[str] = []
    for name in sorted(set(current) | set(fresh)):
        old, new = current.get(name), fresh.get(name)
        was = old is not None and old.state in LIVE
        now = new is not None and new.enabled
        if was and not now:
            assert old is not None
            stop.append(old)
        elif now and not was:
            assert new is not None
            start.append(new)
        elif was and now:
            assert old is not None and new is not None and old.manifest is not None
            if old.entry == new.entry and old.candidate.source == new.candidate.source:
                unchanged.append(name)
            elif old.manifest.has_reconfigure and _only_settings_changed(old, new):
                settings, found = structure_settings(name, old.manifest.Config, new.entry.settings)
                issues.extend(found)
                reconfigure.append((old, settings))
            elif not old.candidate.fresh_instances:
                issues.append(
                    ConfigIssue(
                        f"plugins.{name}",
                        "this plugin was passed in code as an instance and has no reconfigure(): "
                        "its configuration cannot change while the kernel runs; restart the kernel",
                    )
                )
            else:
                start.append(new)
                restart.append(name)
                stop.append(old)
    for record in start:
        load_record(record)
        if record.state is PluginState.FAILED:
            issues.append(ConfigIssue(f"plugins.{record.name}", record.last_error or "cannot load"))
        else:
            issues.extend(configure_record(record))
    if issues:
        raise ConfigError(issues)

    # Hooks of the new instances must be valid before anything starts.
    for record in start:
        assert record.manifest is not None
        try:
            for namespace in record.manifest.hookspecs:
                relay.add_specs(namespace)
            record.hooks = relay.register(f"{record.name}.staged", record.plugin)
        except PluginError as exc:
            raise ReloadError(f"plugin {record.name!r}: {exc}", plugin=record.name) from None
        finally:
            relay.unregister(f"{record.name}.staged")

    stopping = {r.name for r in stop}
    survivors = [r for r in current.values() if r.state in LIVE and r.name not in stopping]
    after = survivors + start
    ranks, more = order_issues(after)
    more.extend(timeout_issues(relay, config))
    if more:
        raise ConfigError(more)
    plan = plan_start(after)
    broken = {n: why for n, why in plan.failures.items() if n in {r.name for r in after}}
    if broken:
        lines = "; ".join(f"{n}: {why}" for n, why in sorted(broken.items()))
        raise ReloadError(f"the new configuration cannot run: {lines}")

    # Stage: start new instances beside the old ones.
    staged_plan = plan_start(start, external={s: r.name for s, (r, _) in lc.services.items() if r.name not in stopping})
    await lc.start_all(start, staged_plan, stage=True)
    failed = [r for r in start if not r.staged]
    done: list[tuple[PluginRecord, Any]] = []
    if not failed:
        for old, settings in reconfigure:
            try:
                outcome = old.plugin.reconfigure(settings)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception as exc:
                old_error = PluginError(f"reconfigure() failed: {type(exc).__name__}: {exc}", plugin=old.name)
                failed.append(attrs.evolve(old, last_error=str(old_error)))
                break
            done.append((old, settings))
    if failed:
        await _roll_back(kernel, start, done)
        lines = "; ".join(f"{r.name}: {r.last_error}" for r in failed)
        raise ReloadError(f"reload rolled back, the previous plugins keep running: {lines}")

    # Commit: swap registrations at once, then stop what was replaced or removed.
    for old in stop:
        lc.deactivate(old)
        relay.unregister(old.name)
    for name, record in fresh.items():
        if name not in current or current[name] in stop or current[name].state not in LIVE:
            lc.records[name] = record
    for old, settings in done:
        old.settings = settings
        old.entry = fresh[old.name].entry
    for record in start:
        record.hooks = relay.register(record.name, record.plugin)
        record.staged = False
        lc.activate(record)
    lc.staged_services.clear()
    for record in start:
        lc.set_state(record, PluginState.RUNNING)
    kernel._config = config
    relay.quarantine_after = config.kernel.quarantine_after
    lc.start_timeout = config.kernel.start_timeout
    lc.stop_timeout = config.kernel.stop_timeout
    lc.ranks = ranks
    kernel._pipeline.set_order(ranks)
    relay.configure(ranks=ranks, timeouts=config.kernel.hook_timeouts)
    lc.sync_dispatch()
    await lc.stop_all(stop)
    report = ReloadReport(
        started=tuple(r.name for r in start if r.name not in restart),
        stopped=tuple(r.name for r in stop if r.name not in restart),
        restarted=tuple(restart),
        reconfigured=tuple(old.name for old, _ in done),
        unchanged=tuple(unchanged),
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
