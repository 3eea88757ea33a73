"""Hook dispatch: pluggy registers and validates, the kernel calls.

pluggy holds the specs and impls and checks every impl against its spec
(argument names) when a plugin registers.  The call loop is the kernel's own,
because what it adds cannot be layered on pluggy's ``_multicall`` without
paying for it on every call: per-spec error policies (pluggy#419), per-plugin
ordering (pluggy#705), one deadline per call, native async impls
(pluggy#320), and a per-impl observer.

Everything a call needs is resolved when the set of plugins changes: each
spec gets a *caller*, a closure over a tuple of ``(plugin, function,
argnames)`` already in order.  Whether an observer is attached is decided by
which closure is built (the observed or the plain loop), never by a flag
tested per call.

Deadlines on async hooks arm nothing per call: a call writes ``task ->
deadline`` into a dict and awaits its impls directly, and one
:class:`Watchdog` task cancels the tasks whose deadline has passed; the call
turns that cancellation into :class:`~plugin_sdk.HookTimeout`, the way
``asyncio.timeout`` does.  A cancel scope per call would cost 8x the whole
dispatch (see benchmarks/bench_dispatch.py); it is used only where no
watchdog runs (trio, or hooks called outside a started kernel).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import types
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from operator import itemgetter
from time import perf_counter
from typing import Any
from typing import Final
from typing import TypeVar

import anyio
import pluggy

from plugin_sdk import AsyncHookSpec
from plugin_sdk import DispatchObserver
from plugin_sdk import HookFailed
from plugin_sdk import HookOutcome
from plugin_sdk import HookSampling
from plugin_sdk import HookSpec
from plugin_sdk import HookTimeout
from plugin_sdk import OrionError
from plugin_sdk import Outcome
from plugin_sdk import Plugin
from plugin_sdk import PluginError
from plugin_sdk import SyncHookSpec
from plugin_sdk import hookspecs as sdk_hookspecs
from plugin_sdk._markers import PROJECT
from plugin_sdk._markers import P
from plugin_sdk._markers import spec_handles

R = TypeVar("R")
T = TypeVar("T")
log: Final = logging.getLogger("orion.kernel.dispatch")

#: (plugin name, function, takes exactly the spec's arguments in order, its argument names),
#: resolved at registration so a call does no lookups
ImplEntry = tuple[str, Callable[..., Any], bool, tuple[str, ...]]
Caller = Callable[[Mapping[str, Any]], Any]


class _Observers:
    """Fans one event out to every observer; an observer that raises is dropped."""

    __slots__ = ("_observers", "_on_drop")

    def __init__(self, observers: Iterable[DispatchObserver], on_drop: Callable[[DispatchObserver], None]) -> None:
        self._observers = tuple(observers)
        self._on_drop = on_drop

    def on_hook(self, hook: str, plugin: str, duration: float, outcome: Any) -> None:
        for observer in self._observers:
            try:
                observer.on_hook(hook, plugin, duration, outcome)
            except Exception:
                log.exception("dispatch observer %r raised; removing it", observer)
                self._on_drop(observer)

    def on_invoke(self, operation: str, duration: float, outcome: Any) -> None:
        for observer in self._observers:
            try:
                observer.on_invoke(operation, duration, outcome)
            except Exception:
                log.exception("dispatch observer %r raised; removing it", observer)
                self._on_drop(observer)


def _bad_arguments(hook: str, expected: frozenset[str], given: Mapping[str, Any]) -> TypeError:
    missing = sorted(expected - given.keys())
    extra = sorted(given.keys() - expected)
    parts = []
    if missing:
        parts.append(f"missing {missing}")
    if extra:
        parts.append(f"unexpected {extra}")
    return TypeError(f"hook {hook!r} called with wrong arguments: {', '.join(parts)}")


def _exception_group(hook: str, errors: list[Exception]) -> ExceptionGroup[Exception]:
    return ExceptionGroup(f"hook {hook!r}: {len(errors)} impl(s) failed", errors)


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager, told which names can never be hook impls.

    pluggy inspects every attribute of a registered object statically
    (``inspect.getattr_static``), about 0.7 ms per plugin with the ~40
    attributes a :class:`plugin_sdk.Plugin` inherits.  The manifest fields,
    ``start``/``stop`` and dunders are skipped here, through the documented
    ``parse_hookimpl_opts`` override point.
    """

    _never_hooks: Final = frozenset(dir(Plugin))

    def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        if name in self._never_hooks:
            return None
        return super().parse_hookimpl_opts(plugin, name)


class HookRelay:
    """``kernel.hooks``: the typed way to call hooks, and the registry behind it.

    Call a hook with :meth:`call`, passing the spec handle from
    :mod:`plugin_sdk.hookspecs` (or a plugin's own hookspecs module) and the
    spec's arguments by keyword; mypy checks them against the spec.
    """

    def __init__(
        self, *, quarantine_after: int = 5, on_quarantine: Callable[[str, Exception], None] | None = None
    ) -> None:
        self._pm = _PluginManager(PROJECT)
        self._specs: dict[str, HookSpec[Any, Any]] = {}
        self._callers: dict[HookSpec[Any, Any], Caller] = {}
        self._observers: list[DispatchObserver] = []
        self._observer: DispatchObserver | None = None
        self._timeouts: dict[str, float | None] = {}
        self._running: frozenset[str] = frozenset()
        self._ranks: dict[str, int] = {}
        #: consecutive failures of each plugin that has failed since its last success
        self._failing: dict[str, int] = {}
        self._watchdog: Watchdog | None = None
        self._listeners: list[Callable[[DispatchObserver | None], None]] = []
        self.quarantine_after = quarantine_after
        self._on_quarantine = on_quarantine
        self.add_specs(sdk_hookspecs)

    # -- registry ------------------------------------------------------------

    @property
    def specs(self) -> Mapping[str, HookSpec[Any, Any]]:
        """Every known hook spec, by name."""
        return types.MappingProxyType(self._specs)

    def add_specs(self, namespace: object) -> list[str]:
        """Add every ``@hookspec`` of a module or class; return their names.

        :raises PluginError: a different spec of the same name is already known.
        """
        handles = spec_handles(namespace)
        fresh = {}
        for spec in handles:
            known = self._specs.get(spec.name)
            if known is None:
                fresh[spec.name] = spec.function
            elif known is not spec:
                raise PluginError(
                    f"hookspec {spec.name!r} from {getattr(namespace, '__name__', namespace)!r} "
                    f"clashes with the one from {known.function.__module__!r}"
                )
        if fresh:
            carrier = types.ModuleType(f"orion_specs_{len(self._specs)}")
            carrier.__dict__.update(fresh)
            self._pm.add_hookspecs(carrier)
            for spec in handles:
                self._specs.setdefault(spec.name, spec)
            self._rebuild()
        return [spec.name for spec in handles]

    def register(self, name: str, plugin: object) -> list[str]:
        """Register ``plugin``'s hook impls under ``name``; return the hooks it implements.

        :raises PluginError: an impl names a hook no spec declares, takes an
            argument its spec lacks, or is async where the spec is sync (or
            the other way round).  Nothing stays registered on error.
        """
        try:
            self._pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name!r}: {exc}", plugin=name) from None
        implemented = []
        try:
            for caller in self._pm.get_hookcallers(plugin) or ():
                for impl in caller.get_hookimpls():
                    if impl.plugin_name != name:
                        continue
                    spec = self._specs.get(caller.name)
                    if spec is None:
                        if impl.optionalhook:
                            continue
                        known = ", ".join(sorted(self._specs))
                        raise PluginError(
                            f"plugin {name!r} implements unknown hook {caller.name!r} "
                            f"(known hooks: {known}; use @hookimpl(optional=True) for hooks "
                            "of plugins that may be absent)",
                            plugin=name,
                        )
                    if inspect.iscoroutinefunction(impl.function) != spec.options.is_async:
                        want = "an async def" if spec.options.is_async else "a plain def"
                        raise PluginError(
                            f"plugin {name!r}: impl of hook {caller.name!r} must be {want}",
                            plugin=name,
                        )
                    implemented.append(caller.name)
        except PluginError:
            self._pm.unregister(plugin, name=name)
            raise
        return sorted(implemented)

    def is_registered(self, plugin: object) -> bool:
        """Whether this plugin object is registered (under any name)."""
        return self._pm.is_registered(plugin)

    def unregister(self, name: str) -> None:
        """Remove a plugin's impls (no error when it was not registered)."""
        if self._pm.get_plugin(name) is not None:
            self._pm.unregister(name=name)
        self._failing.pop(name, None)

    def implementations(self, name: str) -> list[str]:
        """The hooks that plugin ``name`` implements."""
        plugin = self._pm.get_plugin(name)
        if plugin is None:
            return []
        return sorted(caller.name for caller in self._pm.get_hookcallers(plugin) or () if caller.name in self._specs)

    def impl_plugins(self, spec: HookSpec[Any, Any]) -> list[str]:
        """The plugins whose impls a call of ``spec`` runs now, in call order."""
        return [entry[0] for entry in self._impls(spec)]

    # -- configuration, applied by rebuilding the callers -----------------------

    def configure(
        self,
        *,
        running: Iterable[str] | None = None,
        ranks: Mapping[str, int] | None = None,
        timeouts: Mapping[str, float | None] | None = None,
    ) -> None:
        """Set who takes part, in what order, with which deadlines; rebuild the callers."""
        if running is not None:
            self._running = frozenset(running)
        if ranks is not None:
            self._ranks = dict(ranks)
        if timeouts is not None:
            self._timeouts = dict(timeouts)
        self._rebuild()

    def add_observer(self, observer: DispatchObserver) -> None:
        """Attach a dispatch observer (hook impl calls and invokes)."""
        self._observers.append(observer)
        self._rebuild()

    def remove_observer(self, observer: DispatchObserver) -> None:
        """Detach an observer; unknown observers are ignored."""
        if observer in self._observers:
            self._observers.remove(observer)
            self._rebuild()

    @property
    def observer(self) -> DispatchObserver | None:
        """The combined observer, or ``None`` when nobody observes."""
        return self._observer

    def timeout_of(self, spec: HookSpec[Any, Any]) -> float | None:
        """The deadline in force for ``spec`` (config override or the spec's default)."""
        return self._timeouts.get(spec.name, spec.options.timeout)

    def has_impls(self, spec: HookSpec[Any, Any]) -> bool:
        """Whether any plugin that takes part in ``spec`` (running, or loaded per the spec) implements it."""
        return bool(self._impls(spec))

    def _impls(self, spec: HookSpec[Any, Any]) -> tuple[ImplEntry, ...]:
        caller = getattr(self._pm.hook, spec.name, None)
        if caller is None:
            return ()
        everyone = spec.options.participants == "loaded"
        spec_args = spec.options.argnames
        entries = [
            (impl.plugin_name, impl.function, tuple(impl.argnames) == spec_args, tuple(impl.argnames))
            for impl in caller.get_hookimpls()
            if everyone or impl.plugin_name in self._running
        ]
        entries.sort(key=lambda entry: (self._ranks.get(entry[0], 1 << 30), entry[0]))
        return tuple(entries)

    def _rebuild(self) -> None:
        if not self._observers:
            self._observer = None
        elif len(self._observers) == 1:
            self._observer = self._observers[0]
        else:
            self._observer = _Observers(self._observers, self.remove_observer)
        self._callers = {spec: self._build(spec) for spec in self._specs.values()}
        for listener in self._listeners:
            listener(self._observer)

    def on_observer_change(self, listener: Callable[[DispatchObserver | None], None]) -> None:
        """Call ``listener(observer)`` now and whenever the combined observer changes (the invoke pipeline)."""
        self._listeners.append(listener)
        listener(self._observer)

    def observer_failed(self, observer: DispatchObserver) -> None:
        """An observer raised (the exception is being handled): log it and detach it."""
        log.exception("dispatch observer %r raised; removing it", observer)
        if isinstance(observer, _Observers):
            return  # it guards and drops its members itself
        self.remove_observer(observer)

    def start_watchdog(self, watchdog: Watchdog | None) -> None:
        """Use ``watchdog`` for async deadlines (asyncio), or one cancel scope per call (``None``)."""
        self._watchdog = watchdog
        self._rebuild()

    def _build(self, spec: HookSpec[Any, Any]) -> Caller:
        impls = self._impls(spec)
        timeout = self.timeout_of(spec)
        options = spec.options
        if options.is_async:
            if options.concurrent:
                return _concurrent_caller(self, spec, impls, timeout)
            return _async_caller(self, spec, impls, timeout)
        return _sync_caller(self, spec, impls, timeout)

    # -- failures ----------------------------------------------------------------

    def failed(self, hook: str, plugin: str, exc: Exception) -> Exception:
        """Turn an impl's exception into the error to raise or record, and count it.

        SDK errors raised on purpose (a denial) pass through and do not count;
        anything else becomes :class:`HookFailed`.  A plugin that fails
        ``quarantine_after`` times in a row is handed to ``on_quarantine``.
        """
        if isinstance(exc, OrionError) and not isinstance(exc, HookTimeout):
            return exc
        error: Exception = exc
        if not isinstance(exc, HookTimeout):
            error = HookFailed(hook, plugin, exc)
            error.__cause__ = exc
        log.warning("%s", error, exc_info=exc if error is not exc else None)
        count = self._failing.get(plugin, 0) + 1
        self._failing[plugin] = count
        if self.quarantine_after and count >= self.quarantine_after and self._on_quarantine:
            self._on_quarantine(plugin, error)
        return error

    def succeeded(self, plugin: str) -> None:
        """Reset a plugin's run of consecutive failures."""
        self._failing.pop(plugin, None)

    def consecutive_failures(self, plugin: str) -> int:
        """How many times in a row ``plugin``'s impls have failed."""
        return self._failing.get(plugin, 0)

    # -- calling -------------------------------------------------------------------

    def call(self, spec: HookSpec[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call hook ``spec`` with keyword arguments.

        Sync specs return the list of non-``None`` results (or the first one
        for ``firstresult`` specs); async specs return an awaitable of the same.
        Failures follow the spec's policy; see :class:`plugin_sdk.SpecOptions`.

        :raises TypeError: argument names that do not match the spec (mypy
            reports them as ``[call-arg]`` before the code runs), or positional
            arguments (refused at run time only: a ParamSpec cannot forbid them).
        :raises KeyError: ``spec`` was never added to this kernel.
        """
        if args:
            raise TypeError(f"hook {spec.name!r} takes keyword arguments only")
        return self._callers[spec](kwargs)  # type: ignore[no-any-return]

    def call_each(self, spec: SyncHookSpec[P, R], /, *args: P.args, **kwargs: P.kwargs) -> list[HookOutcome[R]]:
        """Call every impl of a sync hook; return each plugin's outcome in call order.

        Never raises for an impl: failures are recorded (and count toward
        quarantine) and returned as the outcome's ``error``.
        """
        impls = self._checked_impls(spec, args, kwargs)
        outcomes: list[HookOutcome[R]] = []
        observer = self._observer
        for plugin, function, _, argnames in impls:
            began = perf_counter()
            try:
                value = function(*[kwargs[n] for n in argnames])
            except Exception as exc:
                self._notify(observer, spec.name, plugin, perf_counter() - began, "error")
                self.failed(spec.name, plugin, exc)
                outcomes.append(HookOutcome(plugin, None, exc))
            else:
                self._notify(observer, spec.name, plugin, perf_counter() - began, "ok")
                self.succeeded(plugin)
                outcomes.append(HookOutcome(plugin, value))
        return outcomes

    async def acall_each(self, spec: AsyncHookSpec[P, R], /, *args: P.args, **kwargs: P.kwargs) -> list[HookOutcome[R]]:
        """Run every impl of an async hook concurrently under the spec's deadline;
        return each plugin's outcome in call order (``HookTimeout`` for one still
        running at the deadline).  Never raises for an impl."""
        impls = self._checked_impls(spec, args, kwargs)
        timeout = self.timeout_of(spec)
        observer = self._observer
        outcomes: list[HookOutcome[R] | None] = [None] * len(impls)

        async def run(index: int, plugin: str, function: Callable[..., Any], argnames: tuple[str, ...]) -> None:
            began = perf_counter()
            try:
                value = await function(*[kwargs[n] for n in argnames])
            except Exception as exc:
                self._notify(observer, spec.name, plugin, perf_counter() - began, "error")
                self.failed(spec.name, plugin, exc)
                outcomes[index] = HookOutcome(plugin, None, exc)
            else:
                self._notify(observer, spec.name, plugin, perf_counter() - began, "ok")
                self.succeeded(plugin)
                outcomes[index] = HookOutcome(plugin, value)

        with anyio.move_on_after(timeout if timeout is not None else float("inf")):
            async with anyio.create_task_group() as group:
                for index, (plugin, function, _, argnames) in enumerate(impls):
                    group.start_soon(run, index, plugin, function, argnames)
        final: list[HookOutcome[R]] = []
        for index, (plugin, *_) in enumerate(impls):
            outcome = outcomes[index]
            if outcome is None:
                assert timeout is not None
                error = HookTimeout(spec.name, plugin, timeout)
                self._notify(observer, spec.name, plugin, timeout, "timeout")
                self.failed(spec.name, plugin, error)
                outcome = HookOutcome(plugin, None, error)
            final.append(outcome)
        return final

    def _checked_impls(
        self, spec: HookSpec[Any, Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[ImplEntry, ...]:
        if args:
            raise TypeError(f"hook {spec.name!r} takes keyword arguments only")
        argset = frozenset(spec.options.argnames)
        if kwargs.keys() != argset:
            raise _bad_arguments(spec.name, argset, kwargs)
        if spec.name not in self._specs:
            raise KeyError(spec.name)
        return self._impls(spec)

    def _notify(
        self, observer: DispatchObserver | None, hook: str, plugin: str, duration: float, outcome: Outcome
    ) -> None:
        if observer is None:
            return
        try:
            observer.on_hook(hook, plugin, duration, outcome)
        except Exception:
            self.observer_failed(observer)

    def impl_map(self) -> dict[str, tuple[str, ...]]:
        """Every known hook -> the loaded plugins implementing it, in call order (running or not)."""
        found: dict[str, tuple[str, ...]] = {}
        for name in sorted(self._specs):
            caller = getattr(self._pm.hook, name, None)
            plugins = [impl.plugin_name for impl in caller.get_hookimpls()] if caller is not None else []
            plugins.sort(key=lambda plugin: (self._ranks.get(plugin, 1 << 30), plugin))
            found[name] = tuple(p for p in plugins if not p.endswith(".staged"))
        return found


# -- the call loops -------------------------------------------------------------
#
# One builder per kind of spec.  Each returns the plain loop when nobody
# observes and the observed loop otherwise; what they share on their cold
# paths (failures, deadlines, the result) lives in _Kit.


class _Kit:
    """What every call loop of one spec shares outside its hot path."""

    __slots__ = ("first", "hook", "policy", "relay", "timeout")

    def __init__(self, relay: HookRelay, spec: HookSpec[Any, Any], timeout: float | None) -> None:
        self.relay = relay
        self.hook = spec.name
        self.first = spec.options.firstresult
        self.policy = spec.options.policy
        self.timeout = timeout

    def error(self, plugin: str, exc: Exception, errors: list[Exception]) -> None:
        error = self.relay.failed(self.hook, plugin, exc)
        if self.policy == "fail_fast":
            raise error
        if self.policy == "collect":
            errors.append(error)

    def timed_out(self, plugin: str, errors: list[Exception]) -> None:
        assert self.timeout is not None
        self.error(plugin, HookTimeout(self.hook, plugin, self.timeout), errors)

    def finish(self, results: list[Any], errors: list[Exception]) -> Any:
        if errors:
            raise _exception_group(self.hook, errors)
        return None if self.first else results

    def observer_failed(self) -> Callable[..., None]:
        """Detach the observer that just raised; returns what to call instead for the rest of the call."""
        observer = self.relay.observer
        if observer is not None:
            self.relay.observer_failed(observer)
        return _ignore


def _ignore(*args: Any) -> None:
    return None


def _packer(argnames: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """Builds the positional arguments of impls that take exactly the spec's arguments."""
    if not argnames:
        return lambda kwargs: ()
    if len(argnames) == 1:
        only = argnames[0]
        return lambda kwargs: (kwargs[only],)
    return itemgetter(*argnames)


def _with_recorders(relay: HookRelay, hook: str, impls: tuple[ImplEntry, ...]) -> tuple[Any, ...]:
    """Each impl entry plus the callable that records one of its calls: the
    observer's own ``hook_recorder(hook, plugin)`` when it offers one (no
    lookup per call), else ``on_hook`` bound to the hook and plugin."""
    observer = relay.observer
    assert observer is not None
    make = getattr(observer, "hook_recorder", None)
    entries = []
    for entry in impls:
        record: Callable[[float, Outcome], None] | None = None
        if make is not None:
            try:
                record = make(hook, entry[0])
            except Exception:
                log.exception("dispatch observer %r: hook_recorder(%r, %r) raised", observer, hook, entry[0])
        entries.append((*entry, record or functools.partial(observer.on_hook, hook, entry[0])))
    return tuple(entries)


def _sync_caller(
    relay: HookRelay, spec: HookSpec[Any, Any], impls: tuple[ImplEntry, ...], timeout: float | None
) -> Caller:
    kit = _Kit(relay, spec, timeout)
    hook = spec.name
    argset = frozenset(spec.options.argnames)
    pack = _packer(spec.options.argnames)
    first = spec.options.firstresult
    failing = relay._failing
    observer = relay.observer

    if observer is None:

        def call(kwargs: Mapping[str, Any]) -> Any:
            if kwargs.keys() != argset:
                raise _bad_arguments(hook, argset, kwargs)
            args = pack(kwargs)
            results: list[Any] = []
            errors: list[Exception] = []
            start = perf_counter()
            for plugin, function, same, argnames in impls:
                try:
                    result = function(*args) if same else function(*[kwargs[n] for n in argnames])
                except Exception as exc:
                    kit.error(plugin, exc, errors)
                    continue
                if timeout is not None and perf_counter() - start > timeout:
                    kit.timed_out(plugin, errors)
                    break
                if failing:
                    failing.pop(plugin, None)
                if result is not None:
                    if first:
                        return result
                    results.append(result)
            return kit.finish(results, errors)

        return call

    observed = _with_recorders(relay, hook, impls)

    def observed_call(kwargs: Mapping[str, Any]) -> Any:
        if kwargs.keys() != argset:
            raise _bad_arguments(hook, argset, kwargs)
        args = pack(kwargs)
        results: list[Any] = []
        errors: list[Exception] = []
        live = True  # false once the observer raised: not told again in this call
        start = began = perf_counter()
        for plugin, function, same, argnames, record in observed:
            try:
                result = function(*args) if same else function(*[kwargs[n] for n in argnames])
            except Exception as exc:
                ended = perf_counter()
                if live:
                    try:
                        record(ended - began, "error")
                    except Exception:
                        live = False
                        kit.observer_failed()
                began = ended
                kit.error(plugin, exc, errors)
                continue
            ended = perf_counter()
            late = timeout is not None and ended - start > timeout
            if live:
                try:
                    record(ended - began, "timeout" if late else "ok")
                except Exception:
                    live = False
                    kit.observer_failed()
            began = ended
            if late:
                kit.timed_out(plugin, errors)
                break
            if failing:
                failing.pop(plugin, None)
            if result is not None:
                if first:
                    return result
                results.append(result)
        return kit.finish(results, errors)

    sampling = _sampling_of(relay, hook, impls)
    if sampling is None:
        return observed_call
    interval, count = sampling.interval, sampling.count
    size = len(impls)
    index_of = {entry[0]: i for i, entry in enumerate(impls)}
    last_timed = -float("inf")

    def sampled_call(kwargs: Mapping[str, Any]) -> Any:
        # One clock read per call decides; an untimed call is the plain loop
        # plus one count(ran, failures) at the end, on every way out.
        nonlocal last_timed
        start = perf_counter()
        if start - last_timed >= interval:
            last_timed = start
            return observed_call(kwargs)
        if kwargs.keys() != argset:
            raise _bad_arguments(hook, argset, kwargs)
        args = pack(kwargs)
        results: list[Any] = []
        errors: list[Exception] = []
        failures: list[tuple[int, Outcome]] | None = None
        ran = size
        try:
            for plugin, function, same, argnames in impls:
                try:
                    result = function(*args) if same else function(*[kwargs[n] for n in argnames])
                except Exception as exc:
                    if failures is None:
                        failures = []
                    failures.append((index_of[plugin], "error"))
                    ran = index_of[plugin] + 1  # what ran if the policy raises now
                    kit.error(plugin, exc, errors)
                    ran = size
                    continue
                if timeout is not None and perf_counter() - start > timeout:
                    if failures is None:
                        failures = []
                    failures.append((index_of[plugin], "timeout"))
                    ran = index_of[plugin] + 1
                    kit.timed_out(plugin, errors)
                    break
                if failing:
                    failing.pop(plugin, None)
                if result is not None:
                    if first:
                        ran = index_of[plugin] + 1
                        return result
                    results.append(result)
            return kit.finish(results, errors)
        finally:
            try:
                count(ran, failures or ())
            except Exception:
                kit.observer_failed()

    return sampled_call


def _sampling_of(relay: HookRelay, hook: str, impls: tuple[ImplEntry, ...]) -> HookSampling | None:
    """The observer's :class:`~plugin_sdk.HookSampling` for this hook, if it offers one."""
    observer = relay.observer
    make = getattr(observer, "hook_sampling", None)
    if make is None or not impls:
        return None
    try:
        sampling = make(hook, tuple(entry[0] for entry in impls))
    except Exception:
        log.exception("dispatch observer %r: hook_sampling(%r) raised", observer, hook)
        return None
    if sampling is not None and not isinstance(sampling, HookSampling):
        log.error("dispatch observer %r: hook_sampling(%r) returned %r, not a HookSampling", observer, hook, sampling)
        return None
    return sampling


class Watchdog:
    """One task that enforces the deadlines of every async hook call on an asyncio loop.

    A call registers ``task -> deadline`` (two dict operations) and awaits its
    impls directly; nothing is armed per call.  Every ``tick`` the watchdog
    cancels the tasks whose deadline passed and marks them expired; the call
    turns that cancellation into :class:`~plugin_sdk.HookTimeout`.  Calls that
    finish without waiting are never seen by the watchdog at all.
    """

    __slots__ = ("deadlines", "expired", "loop", "tick")

    def __init__(self, tick: float = 0.01) -> None:
        #: the loop it watches (made on it): ``current_task(loop)`` spares asyncio's
        #: running-loop lookup, a getpid() syscall per call on CPython 3.11
        self.loop = asyncio.get_running_loop()
        #: task -> the earliest deadline of the hook calls it is inside
        self.deadlines: dict[asyncio.Task[Any], float] = {}
        #: tasks cancelled by the watchdog, until their hook call has seen it
        self.expired: set[asyncio.Task[Any]] = set()
        self.tick = tick

    async def run(self) -> None:
        deadlines, expired = self.deadlines, self.expired
        while True:
            await anyio.sleep(self.tick)
            if deadlines:
                now = perf_counter()
                for task, end in list(deadlines.items()):
                    if now >= end and task not in expired:
                        expired.add(task)
                        task.cancel()


def _async_caller(
    relay: HookRelay, spec: HookSpec[Any, Any], impls: tuple[ImplEntry, ...], timeout: float | None
) -> Caller:
    """Sequential async dispatch.  The deadline, when there is one, is enforced
    by the watchdog (asyncio, kernel started) or else by one anyio cancel scope
    around the whole call (trio, or hooks called outside a started kernel)."""
    kit = _Kit(relay, spec, timeout)
    hook = spec.name
    argset = frozenset(spec.options.argnames)
    pack = _packer(spec.options.argnames)
    first = spec.options.firstresult
    failing = relay._failing
    observer = relay.observer
    on_hook = observer.on_hook if observer is not None else None
    watchdog = relay._watchdog

    async def loop(
        kwargs: Mapping[str, Any], start: float, results: list[Any], errors: list[Exception], state: list[str]
    ) -> Any:
        # results, errors and state[0] (the plugin whose impl is running) are
        # the caller's, so what was gathered survives a cancellation
        nonlocal on_hook
        args = pack(kwargs)
        began = start
        for plugin, function, same, argnames in impls:
            state[0] = plugin
            try:
                result = await (function(*args) if same else function(*[kwargs[n] for n in argnames]))
            except Exception as exc:
                if on_hook is not None:
                    ended = perf_counter()
                    try:
                        on_hook(hook, plugin, ended - began, "error")
                    except Exception:
                        on_hook = kit.observer_failed()
                    began = ended
                kit.error(plugin, exc, errors)
                continue
            late = timeout is not None and perf_counter() - start > timeout  # an impl that never waited
            if on_hook is not None:
                ended = perf_counter()
                try:
                    on_hook(hook, plugin, ended - began, "timeout" if late else "ok")
                except Exception:
                    on_hook = kit.observer_failed()
                began = ended
            if late:
                kit.timed_out(plugin, errors)
                break
            if failing:
                failing.pop(plugin, None)
            if result is not None:
                if first:
                    return result
                results.append(result)
        return kit.finish(results, errors)

    def cancelled(plugin: str, began: float, results: list[Any], errors: list[Exception]) -> Any:
        if on_hook is not None:
            try:
                on_hook(hook, plugin, perf_counter() - began, "timeout")
            except Exception:
                kit.observer_failed()
        kit.timed_out(plugin, errors)
        return kit.finish(results, errors)

    if timeout is None:

        async def call(kwargs: Mapping[str, Any]) -> Any:
            if kwargs.keys() != argset:
                raise _bad_arguments(hook, argset, kwargs)
            return await loop(kwargs, perf_counter(), [], [], [""])

        return call

    if watchdog is None:

        async def scoped_call(kwargs: Mapping[str, Any]) -> Any:
            if kwargs.keys() != argset:
                raise _bad_arguments(hook, argset, kwargs)
            results: list[Any] = []
            errors: list[Exception] = []
            state = [""]
            start = perf_counter()
            with anyio.move_on_after(timeout) as scope:
                return await loop(kwargs, start, results, errors, state)
            assert scope.cancelled_caught
            return cancelled(state[0], start, results, errors)

        return scoped_call

    deadlines, expired, watched_loop = watchdog.deadlines, watchdog.expired, watchdog.loop
    current_task = asyncio.current_task

    async def watched_call(kwargs: Mapping[str, Any]) -> Any:
        if kwargs.keys() != argset:
            raise _bad_arguments(hook, argset, kwargs)
        task = current_task(watched_loop)
        if task is None:
            raise RuntimeError(f"hook {hook!r}: async hooks must be called from a task")
        results: list[Any] = []
        errors: list[Exception] = []
        state = [""]
        start = perf_counter()
        end = start + timeout
        outer = deadlines.get(task)
        deadlines[task] = end if outer is None or end < outer else outer
        cancelling = task.cancelling()
        try:
            return await loop(kwargs, start, results, errors, state)
        except asyncio.CancelledError:
            # Ours only if the watchdog fired for *this* call's deadline and
            # nobody else cancelled the task meanwhile.
            if task not in expired or perf_counter() < end:
                raise
            expired.discard(task)
            if task.uncancel() > cancelling:
                raise
            return cancelled(state[0], start, results, errors)
        finally:
            if outer is None:
                deadlines.pop(task, None)
            else:
                deadlines[task] = outer
            if task in expired and perf_counter() >= end:
                # An impl swallowed our cancellation: take it back all the same.
                expired.discard(task)
                task.uncancel()

    return watched_call


def _concurrent_caller(
    relay: HookRelay, spec: HookSpec[Any, Any], impls: tuple[ImplEntry, ...], timeout: float | None
) -> Caller:
    """All impls at once in a task group, under one deadline (rare hooks: health checks)."""
    hook = spec.name
    argset = frozenset(spec.options.argnames)
    policy = spec.options.policy
    failed = relay.failed

    async def call(kwargs: Mapping[str, Any]) -> list[Any]:
        if kwargs.keys() != argset:
            raise _bad_arguments(hook, argset, kwargs)
        observer = relay.observer

        def notify(plugin: str, duration: float, outcome: Outcome) -> None:
            nonlocal observer
            if observer is None:
                return
            try:
                observer.on_hook(hook, plugin, duration, outcome)
            except Exception:
                relay.observer_failed(observer)
                observer = None

        outcomes: list[Any] = [None] * len(impls)
        done = [False] * len(impls)
        errors: list[Exception] = []

        async def run(
            index: int, plugin: str, function: Callable[..., Any], argnames: tuple[str, ...], group: anyio.abc.TaskGroup
        ) -> None:
            began = perf_counter()
            try:
                outcomes[index] = await function(*[kwargs[n] for n in argnames])
            except Exception as exc:
                done[index] = True
                notify(plugin, perf_counter() - began, "error")
                errors.append(failed(hook, plugin, exc))
                if policy == "fail_fast":
                    group.cancel_scope.cancel()
                return
            done[index] = True
            relay.succeeded(plugin)
            notify(plugin, perf_counter() - began, "ok")

        with anyio.move_on_after(timeout if timeout is not None else float("inf")) as scope:
            async with anyio.create_task_group() as group:
                for index, (plugin, function, _, argnames) in enumerate(impls):
                    group.start_soon(run, index, plugin, function, argnames, group)
        if scope.cancelled_caught:
            assert timeout is not None
            for index, (plugin, *_) in enumerate(impls):
                if not done[index]:
                    notify(plugin, timeout, "timeout")
                    errors.append(failed(hook, plugin, HookTimeout(hook, plugin, timeout)))
        if errors and policy == "fail_fast":
            raise errors[0]
        if errors and policy == "collect":
            raise _exception_group(hook, errors)
        return [outcome for index, outcome in enumerate(outcomes) if done[index] and outcome is not None]

    return call
