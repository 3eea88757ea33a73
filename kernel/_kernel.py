"""The :class:`Kernel` facade: config in, plugins running, hooks and invoke out."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from typing import Final
from typing import final

import anyio
import attrs
import sniffio

from plugin_sdk import ConfigError
from plugin_sdk import Credentials
from plugin_sdk import PluginError
from plugin_sdk import PluginStartError
from plugin_sdk import PluginState
from plugin_sdk import Principal
from plugin_sdk import hookspecs

from ._config import OrionConfig
from ._config import load_config
from ._discovery import Candidate
from ._discovery import from_code
from ._dispatch import HookRelay
from ._dispatch import Watchdog
from ._grants import check_sensitive_hooks
from ._grants import grant_records
from ._guard import Guard
from ._guard import guard_for
from ._invoke import Operation
from ._invoke import Pipeline
from ._lifecycle import Lifecycle
from ._lifecycle import PluginRecord
from ._lifecycle import plan_start
from ._loader import build_records
from ._loader import candidates_for
from ._loader import configure_record
from ._loader import load_record
from ._loader import order_issues
from ._loader import register_hooks
from ._loader import timeout_issues

log: Final = logging.getLogger("orion.kernel")

ConfigSource = str | os.PathLike[str] | Mapping[str, Any] | OrionConfig | None


@final
@attrs.frozen
class PluginInfo:
    """What ``kernel.plugins`` reports about one plugin."""

    name: str
    #: the plugin's version, or its distribution's when it was never imported
    version: str | None
    #: where it comes from: ``code``, ``module:Class`` or the entry point
    source: str
    enabled: bool
    state: PluginState
    last_error: str | None
    #: the last error's traceback, when there was one
    error_traceback: str | None = attrs.field(repr=False)
    hooks: tuple[str, ...]
    requires: tuple[str, ...]
    optional: tuple[str, ...]
    provides: tuple[str, ...]
    #: the manifest's permissions as written (placeholders unfilled)
    permissions: tuple[str, ...]
    operations: tuple[str, ...]
    #: the manifest's permissions with placeholders filled in (once configured)
    asked: tuple[str, ...] = ()
    #: what ``plugins.NAME.permissions`` grants
    granted: tuple[str, ...] = ()
    #: what the plugin holds: its covered asks plus its data directory and declared services
    effective: tuple[str, ...] = ()
    #: ``inprocess`` or ``process``
    isolation: str = "inprocess"
    #: under process isolation, what its worker's confinement really applied (rlimits,
    #: no_new_privs, landlock_fs, landlock_net, seccomp, warnings)
    protections: Mapping[str, Any] = attrs.field(factory=dict)


def _info(record: PluginRecord, operations: tuple[str, ...]) -> PluginInfo:
    manifest = record.manifest
    return PluginInfo(
        name=record.name,
        version=manifest.version if manifest else record.candidate.dist_version,
        source=record.candidate.source,
        enabled=record.enabled,
        state=record.state,
        last_error=record.last_error,
        error_traceback=record.error_traceback,
        hooks=tuple(record.hooks),
        requires=manifest.requires if manifest else (),
        optional=manifest.optional if manifest else (),
        provides=manifest.provides if manifest else (),
        permissions=manifest.permissions if manifest else (),
        operations=operations,
        asked=tuple(str(p) for p in record.grants.asked),
        granted=record.entry.permissions,
        effective=tuple(str(p) for p in record.grants.effective),
        isolation=record.entry.isolation,
        protections=dict(getattr(record.plugin, "protections", None) or {}),
    )


@attrs.frozen
class ReloadReport:
    """What :meth:`Kernel.reload` changed."""

    started: tuple[str, ...]
    stopped: tuple[str, ...]
    restarted: tuple[str, ...]
    reconfigured: tuple[str, ...]
    unchanged: tuple[str, ...]


class ReloadError(PluginError):
    """A reload failed; the plugins that were running before still run unchanged."""


@final
class Kernel:
    """A plugin kernel: lifecycle, hook dispatch, and the invoke pipeline.

    Use it as an async context manager::

        async with Kernel.from_config("orion.toml", plugins=[Greeter()]) as kernel:
            print(await kernel.invoke("greet", {"who": "Ada"}))

    Creating a kernel reads and checks the config but imports no plugin;
    entering it loads the enabled plugins, starts them in dependency order
    and, on exit, stops them in reverse.
    """

    def __init__(
        self,
        config: ConfigSource = None,
        *,
        plugins: Iterable[object] = (),
        hookspecs: Iterable[object] = (),
        environ: Mapping[str, str] | None = None,
        entry_points: bool | Mapping[str, Candidate] = True,
    ) -> None:
        """
        :param config: a path to ``orion.toml``, a dict of the same shape, an
            :class:`OrionConfig`, or ``None`` for ``./orion.toml`` if present.
        :param plugins: plugin instances (or classes) from code, enabled unless
            config disables them; an app can pass itself as a plugin.
        :param hookspecs: modules or classes with extra ``@hookspec`` declarations.
        :param environ: where ``ORION__...`` overrides come from (default
            ``os.environ``; ``{}`` ignores the environment).
        :param entry_points: read the ``orion_kernel.plugins`` entry points
            (or use these candidates instead, for tests).
        :raises ConfigError: the config is invalid (every issue, with paths).
        """
        self._environ = environ
        self._config = load_config(config, environ=environ)
        self._code = from_code(plugins)
        self._entry_points = entry_points
        self._relay = HookRelay(quarantine_after=self._config.kernel.quarantine_after, on_quarantine=self._quarantine)
        for namespace in hookspecs:
            self._relay.add_specs(namespace)
        self._pipeline = Pipeline()
        self._pipeline._observer_failed = self._relay.observer_failed
        self._relay.on_observer_change(self._pipeline.set_observer)
        self._lifecycle = Lifecycle(
            self._relay,
            self._pipeline,
            data_root=self._config.kernel.data_dir,
            start_timeout=self._config.kernel.start_timeout,
            stop_timeout=self._config.kernel.stop_timeout,
        )
        self._prepared = False
        self._entered = False
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._reload_lock = anyio.Lock()

    @classmethod
    def from_config(
        cls,
        source: ConfigSource = None,
        *,
        plugins: Iterable[object] = (),
        hookspecs: Iterable[object] = (),
        environ: Mapping[str, str] | None = None,
    ) -> Kernel:
        """A kernel for the config at ``source`` (path, dict or ``None``); see :class:`Kernel`."""
        return cls(source, plugins=plugins, hookspecs=hookspecs, environ=environ)

    # -- what it holds ------------------------------------------------------------------

    @property
    def config(self) -> OrionConfig:
        """The configuration in force."""
        return self._config

    @property
    def guard(self) -> Guard | None:
        """The in-process guard and what it recorded (``None`` unless ``kernel.sandbox.guard``
        is ``record`` or ``enforce`` and the kernel has been entered)."""
        return self._lifecycle.guard

    @property
    def hooks(self) -> HookRelay:
        """Call hooks: ``kernel.hooks.call(spec, **kwargs)``, checked by mypy against the spec."""
        return self._relay

    @property
    def plugins(self) -> Mapping[str, PluginInfo]:
        """Every known plugin (enabled or not) with its state, version, source and last error."""
        live: dict[str, list[str]] = {}
        for op in self._pipeline.operations.values():
            live.setdefault(op.plugin, []).append(op.name)
        return {
            name: _info(rec, tuple(sorted(live.get(name, ())))) for name, rec in sorted(self._lifecycle.records.items())
        }

    @property
    def operations(self) -> Mapping[str, Operation]:
        """The operations of running plugins, by name."""
        return self._pipeline.operations

    def middleware_order(self) -> list[tuple[str, int]]:
        """``(plugin, phase)`` of each middleware, in the order an invoke meets them."""
        return self._pipeline.middleware_order()

    # -- loading -----------------------------------------------------------------------

    def prepare(self, *, scan_all: bool = False) -> None:
        """Discover plugins, import the enabled ones, check their manifests and settings.

        Runs once; :meth:`__aenter__` calls it.  Call it directly to check a
        configuration without starting anything (``orion-kernel config check``).

        :raises ConfigError: settings that do not fit a plugin's ``Config``, a
            config entry naming no plugin, ordering cycles, unknown hooks in
            ``kernel.hook_timeouts``; all at once.  A plugin that fails to
            import or has a bad manifest does not raise: it is marked failed.
        """
        if self._prepared:
            return
        candidates = candidates_for(self._config, self._code, entry_points=self._entry_points, scan_all=scan_all)
        records, issues = build_records(self._config, candidates)
        for record in records.values():
            if record.enabled:
                load_record(record, isolate=self._stand_in)
                if record.manifest is not None:
                    issues.extend(configure_record(record))
        grant_records(records.values(), self._config.kernel.sandbox.default, self._lifecycle.data_root)
        register_hooks(self._relay, records.values())
        check_sensitive_hooks(self._relay, records.values())
        ranks, more = order_issues(r for r in records.values() if r.state is PluginState.CONFIGURED)
        issues.extend(more)
        issues.extend(timeout_issues(self._relay, self._config))
        if issues:
            raise ConfigError(issues)
        self._lifecycle.records = records
        self._lifecycle.ranks = ranks
        self._pipeline.set_order(ranks)
        self._relay.configure(ranks=ranks, timeouts=self._config.kernel.hook_timeouts)
        self._prepared = True

    # -- running -----------------------------------------------------------------------

    async def __aenter__(self) -> Kernel:
        if self._entered:
            raise RuntimeError("this kernel has already been started; create a new Kernel")
        self._entered = True
        self.prepare()
        guard = guard_for(self._config.kernel.sandbox.guard, lambda: self._lifecycle.records)
        self._lifecycle.guard = guard
        if guard is not None:
            guard.activate()
        stack = contextlib.AsyncExitStack()
        group = await stack.enter_async_context(anyio.create_task_group())
        self._exit_stack = stack
        self._lifecycle.task_group = group
        if sniffio.current_async_library() == "asyncio":
            watchdog = Watchdog()
            group.start_soon(watchdog.run, name="orion hook deadline watchdog")
            self._relay.start_watchdog(watchdog)
        try:
            await self._start()
        except BaseException:
            await self._stop()  # shields its own stopping; leaves nothing running
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop()

    async def _start(self) -> None:
        backend = sniffio.current_async_library()
        records = [r for r in self._lifecycle.records.values() if r.state is PluginState.CONFIGURED]
        for record in records:
            assert record.manifest is not None
            if backend not in record.manifest.backends:
                record.fail(f"does not support the {backend} event loop (supports {list(record.manifest.backends)})")
                record.state = PluginState.FAILED
        records = [r for r in records if r.state is PluginState.CONFIGURED]
        failed_to_load = sorted(
            n for n, r in self._lifecycle.records.items() if r.enabled and r.state is PluginState.FAILED
        )
        plan = plan_start(records)
        if failed_to_load:
            for name, reason in plan.failures.items():
                if "no enabled plugin provides" in reason:
                    plan.failures[name] = f"{reason} (plugins that failed to load: {', '.join(failed_to_load)})"
        log.info("starting %d plugin(s)", len(records))
        await self._lifecycle.start_all(records, plan)
        await self._relay.call(hookspecs.kernel_started)
        failures = [
            (r.name, r.last_error or "failed")
            for r in self._lifecycle.records.values()
            if r.enabled and r.state is PluginState.FAILED
        ]
        if failures and self._config.kernel.strict:
            raise PluginStartError(failures)

    async def _stop(self) -> None:
        stack, self._exit_stack = self._exit_stack, None
        if stack is None:
            return
        try:
            with anyio.CancelScope(shield=True):
                try:
                    await self._relay.call(hookspecs.kernel_stopping)
                finally:
                    await self._lifecycle.stop_all(list(self._lifecycle.records.values()))
        finally:
            if self._lifecycle.guard is not None:
                self._lifecycle.guard.deactivate()
            self._relay.start_watchdog(None)
            group = self._lifecycle.task_group
            if group is not None:
                group.cancel_scope.cancel()
            self._lifecycle.task_group = None
            await stack.aclose()

    def invoke(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        principal: Principal | None = None,
        credentials: Credentials | None = None,
    ) -> Awaitable[Any]:
        """Run operation ``name`` through the middleware to its handler; await the result.

        :param args: the operation's arguments (a mapping; ``None`` for none).
        :param principal: who is calling, if the app already knows (the
            authenticate step trusts it: the app is the one that authenticated).
        :param credentials: what the caller presented (an API key, a bearer
            token) for the authenticate step to check.
        :raises OperationNotFound: no running plugin registered ``name``
            (with a did-you-mean).
        :raises InvalidArguments: ``args`` is not a mapping or does not fit the
            operation's ``args_type``; each issue has its path.
        :raises OperationFailed: the handler or a middleware raised an error
            that is not an SDK error; ``__cause__`` is the original.
        """
        return self._pipeline.invoke(name, args, principal=principal, credentials=credentials)

    def _stand_in(self, record: PluginRecord) -> object:
        """The kernel-side stand-in of a plugin under ``isolation = "process"``."""
        from ._isolation import describe
        from ._isolation import stand_in

        timeout = record.entry.start_timeout or self._config.kernel.start_timeout
        description = describe(record, self._lifecycle.data_root, timeout)
        return stand_in(record, description, self._relay, self._quarantine)

    def _quarantine(self, name: str, error: Exception) -> None:
        self._lifecycle.quarantine(name, error)

    async def serve(self, *, ready: Callable[[], None] | None = None) -> None:
        """Run until SIGINT or SIGTERM (or cancellation), then return; the caller exits the kernel.

        :param ready: called once the signal handlers are installed.
        """
        import signal

        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            if ready is not None:
                ready()
            async for signum in signals:
                log.info("received %s, stopping", signal.Signals(signum).name)
                return

    # -- reload ------------------------------------------------------------------------

    async def reload(self, config: ConfigSource) -> ReloadReport:
        """Apply a new configuration without touching unchanged plugins.

        Transactional, like Caddy's reload: the new config is checked, new and
        changed plugins are started (changed ones as new instances, or through
        ``reconfigure(settings)`` when they define it) *before* the old ones
        stop; if anything fails, the started ones are stopped again and the
        previous set keeps running as it was.

        :raises ConfigError: the new config is invalid (nothing changed).
        :raises ReloadError: a plugin failed to start or reconfigure (nothing changed).
        """
        from ._reload import apply_reload

        if self._exit_stack is None:
            raise RuntimeError("reload() needs a running kernel (inside 'async with kernel')")
        async with self._reload_lock:
            new_config = load_config(config, environ=self._environ)
            return await apply_reload(self, new_config)

    # -- sync apps -----------------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def start_blocking(
        cls,
        source: ConfigSource = None,
        *,
        plugins: Iterable[object] = (),
        hookspecs: Iterable[object] = (),
        environ: Mapping[str, str] | None = None,
        backend: str = "asyncio",
    ) -> Iterator[BlockingKernel]:
        """Run a kernel in a background event-loop thread for sync code::

            with Kernel.start_blocking("orion.toml", plugins=[Greeter()]) as kernel:
                print(kernel.invoke("greet", {"who": "Ada"}))

        Every method of the returned :class:`BlockingKernel` blocks until done.
        """
        from anyio.from_thread import start_blocking_portal

        kernel = cls(source, plugins=plugins, hookspecs=hookspecs, environ=environ)
        with start_blocking_portal(backend) as portal, portal.wrap_async_context_manager(kernel):
            yield BlockingKernel(kernel, portal)


@final
class BlockingKernel:
    """A started kernel seen from sync code (see :meth:`Kernel.start_blocking`)."""

    def __init__(self, kernel: Kernel, portal: Any) -> None:
        self._kernel = kernel
        self._portal = portal

    @property
    def kernel(self) -> Kernel:
        """The underlying async kernel (for read-only properties)."""
        return self._kernel

    @property
    def plugins(self) -> Mapping[str, PluginInfo]:
        """See :attr:`Kernel.plugins`."""
        return self._kernel.plugins

    def invoke(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        principal: Principal | None = None,
        credentials: Credentials | None = None,
    ) -> Any:
        """See :meth:`Kernel.invoke`; blocks until the result is ready."""
        return self._portal.call(self._invoke, name, args, principal, credentials)

    async def _invoke(
        self,
        name: str,
        args: Mapping[str, Any] | None,
        principal: Principal | None,
        credentials: Credentials | None,
    ) -> Any:
        return await self._kernel.invoke(name, args, principal=principal, credentials=credentials)

    def reload(self, config: ConfigSource) -> ReloadReport:
        """See :meth:`Kernel.reload`."""
        result: ReloadReport = self._portal.call(self._kernel.reload, config)
        return result
