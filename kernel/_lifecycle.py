"""Plugin records, the service graph, and starting and stopping in its order.

Start order comes from the services plugins declare (``requires``,
``optional``, ``provides``): a plugin starts once the providers of what it
uses are settled, so plugins that do not depend on each other start
concurrently.  Stop runs the same graph backwards.  A plugin that fails takes
down only the plugins that require it.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from time import perf_counter
from typing import Any
from typing import Final

import anyio
import anyio.abc
import attrs

from plugin_sdk import Consumer
from plugin_sdk import DependencyError
from plugin_sdk import DispatchObserver
from plugin_sdk import KernelSnapshot
from plugin_sdk import Manifest
from plugin_sdk import Middleware
from plugin_sdk import PerConsumer
from plugin_sdk import PluginError
from plugin_sdk import PluginSnapshot
from plugin_sdk import PluginState
from plugin_sdk import ServiceUnavailable
from plugin_sdk import hookspecs
from plugin_sdk._markers import PROJECT

from ._config import PluginEntry
from ._context import KernelContext
from ._discovery import Candidate
from ._dispatch import HookRelay
from ._grants import Grants
from ._guard import CURRENT_PLUGIN
from ._guard import Guard
from ._invoke import Operation
from ._invoke import Pipeline

#: the hook through which plugins (the scanner) may refuse others before they start
VET_HOOK: Final = hookspecs.vet_plugin.name
log: Final = logging.getLogger("orion.kernel")

#: states in which a plugin's registrations are live
LIVE: Final = frozenset({PluginState.RUNNING, PluginState.QUARANTINED})


@attrs.define(eq=False)
class PluginRecord:
    """Everything the kernel knows about one plugin."""

    name: str
    candidate: Candidate
    entry: PluginEntry
    enabled: bool
    state: PluginState = PluginState.DISCOVERED
    plugin: Any = None
    manifest: Manifest | None = None
    settings: Any = None
    context: KernelContext | None = None
    last_error: str | None = None
    error_traceback: str | None = None
    hooks: list[str] = attrs.field(factory=list)
    # registrations made through the context; live while the plugin runs
    provided: dict[str, object] = attrs.field(factory=dict)
    operations: list[Operation] = attrs.field(factory=list)
    middleware: list[tuple[Middleware, int]] = attrs.field(factory=list)
    observers: list[DispatchObserver] = attrs.field(factory=list)
    tasks: set[anyio.CancelScope] = attrs.field(factory=set)
    tasks_idle: anyio.Event | None = None
    start_seconds: float | None = None
    #: started by a reload that has not committed yet
    staged: bool = False
    #: asked, granted and effective permissions (resolved when the plugin is configured)
    grants: Grants = attrs.field(factory=Grants)
    #: the asks that were not granted, when that is why it failed (its CLI commands stay offered)
    not_granted: tuple[str, ...] = ()
    #: services it asked for without declaring them (refused; kept for the conformance suite)
    refused_services: list[str] = attrs.field(factory=list)
    #: services provided PerConsumer: name -> (the provider's PerConsumer, this plugin's object)
    service_views: dict[str, tuple[object, object]] = attrs.field(factory=dict)

    def fail(self, error: BaseException | str, *, with_traceback: bool = False) -> None:
        self.last_error = error if isinstance(error, str) else _describe(error)
        if with_traceback and isinstance(error, BaseException):
            self.error_traceback = "".join(traceback.format_exception(error))

    def clear_registrations(self) -> None:
        self.provided.clear()
        self.operations.clear()
        self.middleware.clear()
        self.observers.clear()
        self.service_views.clear()


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError) and not str(error):
        return "timed out"
    text = str(error)
    return text if isinstance(error, PluginError) else f"{type(error).__name__}: {text}"


def _is_vetter(record: PluginRecord) -> bool:
    """Implements vet_plugin: registered as such, or marked so on its class (a plugin refused
    before its hooks were registered, e.g. for a missing grant, still counts)."""
    if VET_HOOK in record.hooks:
        return True
    function = getattr(type(record.plugin), VET_HOOK, None)
    return function is not None and hasattr(function, f"{PROJECT}_impl")


def plugin_ranks(records: Iterable[PluginRecord]) -> tuple[dict[str, int], list[list[str]]]:
    """Order plugins for hooks and middleware: ``before``/``after`` first, then priority, then name.

    Returns the rank of each plugin and the cycles found among ``before``/``after``
    (their members are ordered by priority and name, as if unconstrained).
    """
    recs = {r.name: r for r in records if r.manifest is not None}

    def prio(name: str) -> int:
        rec = recs[name]
        assert rec.manifest is not None
        return rec.entry.priority if rec.entry.priority is not None else rec.manifest.priority

    after: dict[str, set[str]] = {name: set() for name in recs}  # name -> must come after these
    for name, rec in recs.items():
        assert rec.manifest is not None
        before_list = rec.entry.before if rec.entry.before is not None else rec.manifest.before
        after_list = rec.entry.after if rec.entry.after is not None else rec.manifest.after
        for other in before_list:
            if other in recs:
                after[other].add(name)
        for other in after_list:
            if other in recs:
                after[name].add(other)
    # A plugin that must run before another takes on that one's priority when
    # higher, so "c before b" with b urgent moves c up rather than b down.
    successors: dict[str, set[str]] = {name: set() for name in recs}
    for name, deps in after.items():
        for dep in deps:
            successors[dep].add(name)
    effective: dict[str, int] = {}

    def urgency(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name not in effective:
            inherited = [urgency(nxt, seen | {name}) for nxt in successors[name] if nxt not in seen | {name}]
            effective[name] = max([prio(name), *inherited])
        return effective[name]

    key = {name: (-urgency(name), -prio(name), name) for name in recs}
    order: list[str] = []
    placed: set[str] = set()
    pending = dict(after)
    while pending:
        ready = [n for n, deps in pending.items() if deps <= placed]
        if not ready:
            break
        chosen = min(ready, key=key.__getitem__)
        order.append(chosen)
        placed.add(chosen)
        del pending[chosen]
    cycles = find_cycles({n: deps - placed for n, deps in pending.items()})
    order.extend(sorted(pending, key=key.__getitem__))
    return {name: rank for rank, name in enumerate(order)}, cycles


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (or a self-loop), via Tarjan."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                members.append(top)
                if top == node:
                    break
            if len(members) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(members))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


@attrs.frozen
class StartPlan:
    """Who each plugin waits for, and who failed before starting."""

    #: plugin -> providers it waits for (required and optional)
    waits_for: dict[str, set[str]]
    #: plugin -> the service names it requires, each with its provider
    required: dict[str, dict[str, str]]
    #: plugin -> why it cannot start at all
    failures: dict[str, str]


def plan_start(records: Iterable[PluginRecord], external: Mapping[str, str] | None = None) -> StartPlan:
    """Resolve the service graph of ``records``.

    :param external: services already provided by running plugins outside
        ``records`` (used by reload), service name -> provider.
    """
    recs = {r.name: r for r in records if r.manifest is not None}
    failures: dict[str, str] = {}
    providers: dict[str, list[str]] = {}
    for name, rec in recs.items():
        assert rec.manifest is not None
        for service in rec.manifest.provides:
            providers.setdefault(service, []).append(name)
    provider_of: dict[str, str] = dict(external or {})
    for service, names in providers.items():
        if len(names) > 1:
            for name in names:
                failures[name] = (
                    f"service {service!r} is provided by several enabled plugins: {sorted(names)}; disable all but one"
                )
        else:
            provider_of[service] = names[0]
    waits_for: dict[str, set[str]] = {}
    required: dict[str, dict[str, str]] = {}
    for name, rec in recs.items():
        assert rec.manifest is not None
        waits_for[name] = set()
        required[name] = {}
        for service in rec.manifest.requires:
            provider = provider_of.get(service)
            if provider is None:
                failures.setdefault(name, f"requires service {service!r}, which no enabled plugin provides")
            elif provider != name:
                required[name][service] = provider
                if provider in recs:
                    waits_for[name].add(provider)
        for service in rec.manifest.optional:
            provider = provider_of.get(service)
            if provider is not None and provider != name and provider in recs:
                waits_for[name].add(provider)
    # Vetters (implementers of vet_plugin) start first: every other plugin waits for them.
    vetters = {name for name, rec in recs.items() if VET_HOOK in rec.hooks and name not in failures}
    for name in recs:
        if name not in vetters:
            waits_for[name] |= vetters
    for cycle in find_cycles(waits_for):
        for name in cycle:
            failures[name] = f"dependency cycle between plugins {' -> '.join(cycle + cycle[:1])}"
    # A plugin that fails before starting takes its dependents down with it.
    changed = True
    while changed:
        changed = False
        for name, needs in required.items():
            if name in failures:
                continue
            for service, provider in needs.items():
                if provider in failures:
                    failures[name] = f"requires service {service!r} from plugin {provider!r}, which failed"
                    changed = True
                    break
    return StartPlan(waits_for, required, failures)


class Lifecycle:
    """Starts, stops, activates and quarantines plugins; holds the live services."""

    def __init__(
        self,
        relay: HookRelay,
        pipeline: Pipeline,
        *,
        data_root: str,
        start_timeout: float,
        stop_timeout: float,
    ) -> None:
        self.relay = relay
        self.pipeline = pipeline
        self.data_root = data_root
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.records: dict[str, PluginRecord] = {}
        #: live services: name -> (provider record, object)
        self.services: dict[str, tuple[PluginRecord, object]] = {}
        #: services of plugins started by a reload that has not committed yet
        self.staged_services: dict[str, tuple[PluginRecord, object]] = {}
        self.task_group: anyio.abc.TaskGroup | None = None
        self.ranks: dict[str, int] = {}
        #: the in-process guard (``kernel.sandbox.guard``), told when plugins change state
        self.guard: Guard | None = None

    # -- state -------------------------------------------------------------------------

    def set_state(self, record: PluginRecord, state: PluginState) -> None:
        old = record.state
        if old is state:
            return
        record.state = state
        if self.guard is not None:
            self.guard.refresh()
        if state is PluginState.RUNNING or old is PluginState.RUNNING:
            self.sync_dispatch()
        if old in (PluginState.STARTING, PluginState.RUNNING, PluginState.STOPPING) or state in (
            PluginState.RUNNING,
            PluginState.FAILED,
            PluginState.STOPPED,
            PluginState.QUARANTINED,
        ):
            log.debug("plugin %s: %s -> %s", record.name, old.value, state.value)
        self.relay.call(hookspecs.plugin_state_changed, plugin=record.name, old=old, new=state)

    def sync_dispatch(self) -> None:
        """Tell dispatch who runs (only RUNNING plugins' impls are called)."""
        running = [name for name, rec in self.records.items() if rec.state is PluginState.RUNNING]
        self.relay.configure(running=running, ranks=self.ranks)

    def quarantine(self, name: str, error: Exception) -> None:
        record = self.records.get(name)
        if record is None or record.state is not PluginState.RUNNING:
            return
        record.fail(f"quarantined after {self.relay.quarantine_after} consecutive failures; last: {error}")
        log.error("plugin %s quarantined: %s", name, record.last_error)
        self.set_state(record, PluginState.QUARANTINED)

    def snapshot(self) -> KernelSnapshot:
        """What ``ctx.introspect()`` returns."""
        live: dict[str, list[str]] = {}
        for op in self.pipeline.operations.values():
            live.setdefault(op.plugin, []).append(op.name)
        plugins = tuple(
            PluginSnapshot(
                name=rec.name,
                version=rec.manifest.version if rec.manifest else rec.candidate.dist_version,
                state=rec.state,
                enabled=rec.enabled,
                last_error=rec.last_error,
                hooks=tuple(rec.hooks),
                operations=tuple(sorted(live.get(rec.name, ()))),
            )
            for rec in sorted(self.records.values(), key=lambda r: r.name)
        )
        return KernelSnapshot(
            plugins=plugins, hooks=self.relay.impl_map(), operations=tuple(sorted(self.pipeline.operations))
        )

    # -- services --------------------------------------------------------------------

    def lookup_service(self, consumer: PluginRecord, name: str) -> object:
        found = self.staged_services.get(name) or self.services.get(name)
        if found is None:
            assert consumer.manifest is not None
            kind = "required" if name in consumer.manifest.requires else "optional"
            raise ServiceUnavailable(f"{kind} service {name!r} of plugin {consumer.name!r} is not available")
        provided = found[1]
        if not isinstance(provided, PerConsumer):
            return provided
        cached = consumer.service_views.get(name)
        if cached is not None and cached[0] is provided:
            return cached[1]
        acting = CURRENT_PLUGIN.set(found[0].name)  # the factory runs as the provider
        try:
            view = provided.factory(Consumer(consumer.name, consumer.grants.effective))
        finally:
            CURRENT_PLUGIN.reset(acting)
        consumer.service_views[name] = (provided, view)
        return view

    def activate(self, record: PluginRecord) -> None:
        """Make a started plugin's registrations live (services, operations, middleware, observers)."""
        self.pipeline.install(record.name, list(record.operations), list(record.middleware))
        for service, obj in record.provided.items():
            self.services[service] = (record, obj)
        for observer in record.observers:
            self.relay.add_observer(observer)

    def deactivate(self, record: PluginRecord) -> None:
        """Withdraw everything ``record`` registered (idempotent).

        Operations and middleware are keyed by plugin name, so they are only
        withdrawn while ``record`` is the current record of that name (after a
        reload's commit the name belongs to the new instance)."""
        if self.records.get(record.name, record) is record:
            self.pipeline.remove_plugin(record.name)
        for service in [s for s, (rec, _) in self.services.items() if rec is record]:
            del self.services[service]
        for observer in record.observers:
            self.relay.remove_observer(observer)

    # -- tasks -----------------------------------------------------------------------

    def spawn(
        self, record: PluginRecord, func: Callable[..., Awaitable[Any]], args: tuple[Any, ...], name: str | None
    ) -> None:
        if self.task_group is None:
            raise PluginError(f"plugin {record.name!r}: spawn() needs a started kernel", plugin=record.name)
        if record.state not in (PluginState.STARTING, PluginState.RUNNING, PluginState.QUARANTINED):
            raise PluginError(
                f"plugin {record.name!r}: cannot spawn tasks while {record.state.value}", plugin=record.name
            )
        scope = anyio.CancelScope()
        record.tasks.add(scope)
        if record.tasks_idle is None or record.tasks_idle.is_set():
            record.tasks_idle = anyio.Event()
        label: str = name or str(getattr(func, "__qualname__", repr(func)))
        self.task_group.start_soon(self._run_task, record, scope, func, args, label, name=f"{record.name}:{label}")

    async def _run_task(
        self,
        record: PluginRecord,
        scope: anyio.CancelScope,
        func: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        label: str,
    ) -> None:
        CURRENT_PLUGIN.set(record.name)  # this task's own context: the guard attributes it to the plugin
        try:
            with scope:
                await func(*args)
        except Exception as exc:
            log.error("plugin %s: background task %s failed", record.name, label, exc_info=exc)
            record.fail(f"background task {label} failed: {_describe(exc)}", with_traceback=False)
        finally:
            record.tasks.discard(scope)
            if not record.tasks and record.tasks_idle is not None:
                record.tasks_idle.set()

    async def cancel_tasks(self, record: PluginRecord, grace: float) -> bool:
        """Cancel a plugin's background tasks and wait for them; False if they outlive ``grace`` seconds."""
        for scope in list(record.tasks):
            scope.cancel()
        if not record.tasks or record.tasks_idle is None:
            return True
        with anyio.move_on_after(grace):
            await record.tasks_idle.wait()
            return True
        return False

    # -- start and stop ------------------------------------------------------------------

    async def start_all(self, records: list[PluginRecord], plan: StartPlan, *, stage: bool = False) -> None:
        """Start ``records`` concurrently, each once the providers it waits for are settled.

        With ``stage`` (reload), started plugins are not activated: the caller
        commits or rolls back.
        """
        settled = {rec.name: anyio.Event() for rec in records}
        by_name = {rec.name: rec for rec in records}
        async with anyio.create_task_group() as group:
            for rec in records:
                group.start_soon(self._start_when_ready, rec, plan, settled, by_name, stage, name=f"start:{rec.name}")

    async def _start_when_ready(
        self,
        record: PluginRecord,
        plan: StartPlan,
        settled: dict[str, anyio.Event],
        by_name: dict[str, PluginRecord],
        stage: bool,
    ) -> None:
        try:
            reason = plan.failures.get(record.name)
            if reason is None:
                for provider in sorted(plan.waits_for.get(record.name, ())):
                    await settled[provider].wait()
                for service, provider in plan.required.get(record.name, {}).items():
                    rec = by_name.get(provider) or self.records.get(provider)
                    if rec is None or not (rec.state in LIVE or rec.staged):
                        why = f" ({rec.last_error})" if rec is not None and rec.last_error else ""
                        reason = f"requires service {service!r} from plugin {provider!r}, which is not running{why}"
                        break
            if reason is None and VET_HOOK not in record.hooks:
                reason = await self.vet(record)
            if reason is not None:
                record.fail(DependencyError(reason, plugin=record.name))
                log.error("plugin %s not started: %s", record.name, reason)
                self.set_state(record, PluginState.FAILED)
                return
            await self.start_one(record, stage=stage)
        finally:
            settled[record.name].set()

    async def vet(self, record: PluginRecord) -> str | None:
        """Ask the running vetters whether ``record`` may start; the reason if not (fail closed)."""
        # Fail closed: a vetter that is enabled but not running (failed, not granted
        # hook:vet_plugin, quarantined) refuses everything it would have vetted.
        absent = [
            f"{rec.name} ({rec.state.value})"
            for rec in self.records.values()
            if rec.enabled and rec is not record and rec.state is not PluginState.RUNNING and _is_vetter(rec)
        ]
        if absent:
            return f"not vetted: enabled vetter plugin(s) {', '.join(absent)} are not running"
        if not self.relay.has_impls(hookspecs.vet_plugin):
            return None
        assert record.manifest is not None
        target = record.candidate.target  # an isolated plugin's class is never imported here
        module = target.partition(":")[0] if target else type(record.plugin).__module__
        outcomes = await self.relay.acall_each(
            hookspecs.vet_plugin, plugin=record.name, manifest=record.manifest, module=module
        )
        refusals: list[str] = []
        for outcome in outcomes:
            if outcome.error is not None:
                refusals.append(f"vetting by plugin {outcome.plugin!r} failed: {_describe(outcome.error)}")
            elif outcome.value is not None and outcome.value.refuse:
                refusals.append(f"refused by plugin {outcome.plugin!r}: {outcome.value.reason}")
        return "; ".join(refusals) if refusals else None

    async def start_one(self, record: PluginRecord, *, stage: bool = False) -> bool:
        """Start one plugin under its timeout; on failure clean up and mark it failed."""
        timeout = record.entry.start_timeout or self.start_timeout
        record.clear_registrations()
        record.context = KernelContext._create(record, self)
        record.last_error = record.error_traceback = None
        self.set_state(record, PluginState.STARTING)
        began = perf_counter()
        acting = CURRENT_PLUGIN.set(record.name)
        try:
            with anyio.fail_after(timeout):
                await record.plugin.start(record.context)
            assert record.manifest is not None
            missing = [s for s in record.manifest.provides if s not in record.provided]
            if missing:
                raise PluginError(
                    f"declares provides {missing!r} but did not call ctx.provide() for them in start()",
                    plugin=record.name,
                )
            if stage:
                record.staged = True
                for service, obj in record.provided.items():
                    self.staged_services[service] = (record, obj)
            else:
                self.activate(record)
        except Exception as exc:
            if isinstance(exc, TimeoutError):
                exc = PluginError(f"start() did not finish within {timeout:g}s", plugin=record.name)
            record.fail(exc, with_traceback=True)
            log.error("plugin %s failed to start: %s", record.name, record.last_error)
            await self.cancel_tasks(record, self.stop_timeout)
            self.deactivate(record)
            self.set_state(record, PluginState.FAILED)
            return False
        except BaseException:
            # Cancelled while starting (the kernel is shutting down): leave no residue.
            with anyio.CancelScope(shield=True):
                await self.cancel_tasks(record, self.stop_timeout)
                self.deactivate(record)
                record.fail("cancelled while starting")
                self.set_state(record, PluginState.FAILED)
            raise
        finally:
            CURRENT_PLUGIN.reset(acting)
        record.start_seconds = perf_counter() - began
        if not stage:
            self.set_state(record, PluginState.RUNNING)
            log.info(
                "plugin %s %s running (started in %.1f ms)",
                record.name,
                record.manifest.version,
                record.start_seconds * 1000,
            )
        return True

    async def stop_all(self, records: list[PluginRecord]) -> None:
        """Stop ``records`` in reverse dependency order (dependents first), concurrently where possible."""
        live = [rec for rec in records if rec.state in LIVE]
        names = {rec.name for rec in live}
        dependents: dict[str, set[str]] = {rec.name: set() for rec in live}
        for rec in live:
            assert rec.manifest is not None
            for service in rec.manifest.requires + rec.manifest.optional:
                found = self.services.get(service)
                if found is not None and found[0].name in names and found[0].name != rec.name:
                    dependents[found[0].name].add(rec.name)
        cycles = {name for cycle in find_cycles(dependents) for name in cycle}
        done = {rec.name: anyio.Event() for rec in live}

        async def stop_when_free(rec: PluginRecord) -> None:
            try:
                if rec.name not in cycles:
                    for other in sorted(dependents[rec.name]):
                        await done[other].wait()
                await self.stop_one(rec)
            finally:
                done[rec.name].set()

        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as group:
                for rec in live:
                    group.start_soon(stop_when_free, rec, name=f"stop:{rec.name}")

    async def stop_one(self, record: PluginRecord) -> None:
        """Stop one plugin under its timeout, then cancel its tasks and withdraw its registrations."""
        if record.state not in LIVE:
            return
        timeout = record.entry.stop_timeout or self.stop_timeout
        self.set_state(record, PluginState.STOPPING)
        failed: BaseException | None = None
        acting = CURRENT_PLUGIN.set(record.name)
        try:
            with anyio.fail_after(timeout):
                await record.plugin.stop()
        except Exception as exc:
            failed = exc
            if isinstance(exc, TimeoutError):
                failed = PluginError(f"stop() did not finish within {timeout:g}s", plugin=record.name)
        finally:
            CURRENT_PLUGIN.reset(acting)
        if not await self.cancel_tasks(record, timeout):
            failed = failed or PluginError(
                f"background tasks did not finish within {timeout:g}s of being cancelled", plugin=record.name
            )
        self.deactivate(record)
        if failed is not None:
            record.fail(failed, with_traceback=True)
            log.error("plugin %s failed to stop cleanly: %s", record.name, record.last_error)
            self.set_state(record, PluginState.FAILED)
        else:
            self.set_state(record, PluginState.STOPPED)
            log.info("plugin %s stopped", record.name)
