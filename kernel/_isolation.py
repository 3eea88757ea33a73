"""Sandbox layer 3, the kernel's side: an isolated plugin's stand-in, its worker and its supervisor.

Under ``isolation = "process"`` the kernel never imports the plugin.  At
prepare time a short-lived, strictly confined worker *describes* it (its
manifest, the hooks it implements, the issues of its settings); the kernel
builds a stand-in :class:`~plugin_sdk.Plugin` from that description and
treats it like any other plugin: it has the same manifest, is granted the
same way, and implements the same hooks, each of which forwards the call to
the worker over the framed channel (:mod:`kernel._channel`).  The worker's
operations become kernel operations, its services kernel services (proxies
whose methods are awaited), and the services it requires are served back by
the kernel, checked against its manifest.

The supervisor: a worker that exits, is killed by a limit (memory, CPU),
sends garbage or an oversized frame, or overruns a call's deadline is
killed; every call in flight gets :class:`~plugin_sdk.PluginCrashed` (or
:class:`~plugin_sdk.HookTimeout` for the one that overran), calls made while
it is down get ``PluginCrashed`` at once — nothing waits forever and nothing
is silently dropped — and it is restarted after an exponential backoff.
After ``max_restarts`` crashes within ``restart_window`` the plugin is
quarantined.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any
from typing import Final

import anyio
import anyio.abc
import attrs

from plugin_sdk import HookTimeout
from plugin_sdk import NoSettings
from plugin_sdk import PermissionDenied
from plugin_sdk import Permissions
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginCrashed
from plugin_sdk import PluginError
from plugin_sdk import hookimpl

from ._channel import AsyncChannel
from ._channel import ChannelError
from ._channel import SyncChannel
from ._config import ProcessSettings
from ._worker_context import rebuild_error

if TYPE_CHECKING:
    from ._dispatch import HookRelay
    from ._lifecycle import PluginRecord

log: Final = logging.getLogger("orion.kernel.sandbox")

_SCRUBBED_ENV: Final = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
_DEVICES: Final = ("/dev/null", "/dev/urandom", "/dev/zero")


# -- what the worker may touch ----------------------------------------------------------------


def import_roots(target: str | None = None) -> list[str]:
    """What the worker must be able to read to import: the interpreter's directories,
    ``sys.path``, the kernel's and the SDK's packages, and the plugin's own package
    (an editable install reaches them through an import hook, not ``sys.path``).
    The plugin's package is found without importing it."""
    import importlib.util

    import plugin_sdk

    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    roots.update(os.path.abspath(p) for p in sys.path if p)
    roots.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # kernel/ and its siblings
    roots.add(os.path.dirname(os.path.abspath(plugin_sdk.__file__)))
    if target is not None:
        top = target.partition(":")[0].split(".")[0]
        try:
            spec = importlib.util.find_spec(top)  # a top-level name: finds, imports nothing
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            roots.update(os.path.abspath(p) for p in spec.submodule_search_locations or ())
            if spec.origin and os.path.isabs(spec.origin):
                roots.add(os.path.dirname(os.path.abspath(spec.origin)))
    return sorted(r for r in roots if os.path.exists(r))


def _static_prefix(pattern: str) -> str:
    """The directory part of a path pattern before its first glob character."""
    for index, char in enumerate(pattern):
        if char in "*?[":
            return os.path.dirname(pattern[:index]) or "/"
    return pattern


def confinement_for(
    effective: Permissions, data_dir: str, limits: ProcessSettings, target: str | None = None
) -> dict[str, Any]:
    """The ``confine`` section of a worker's hello, from what the plugin holds.

    Landlock rules are by path and by TCP port: ``fs:`` grants become path
    rules (a glob widens to the directory before it), ``net:`` grants port
    rules whatever their host (the in-process guard and the grant check keep
    the host part).
    """
    reads = set(import_roots(target)) | set(_DEVICES)
    writes = {data_dir, "/dev/null"}
    connect: list[tuple[int, int]] = []
    bind: list[tuple[int, int]] = []
    subprocess_allowed = False
    for permission in effective:
        if permission.kind == "fs":
            (writes if permission.action == "write" else reads).add(_static_prefix(permission.target))
        elif permission.kind == "net" and permission.ports is not None:
            (connect if permission.action == "connect" else bind).append((permission.ports.low, permission.ports.high))
        elif permission.kind == "subprocess":
            subprocess_allowed = True
    return {
        "read_paths": sorted(reads),
        "write_paths": sorted(writes),
        "connect_ports": connect,
        "bind_ports": bind,
        "allow_subprocess": subprocess_allowed,
        "memory_bytes": limits.memory_mb * 1024 * 1024 if limits.memory_mb else None,
        "cpu_seconds": limits.cpu_seconds or None,
        "open_files": limits.open_files or None,
    }


def worker_command(limits: ProcessSettings, fds: list[int]) -> list[str]:
    command = [sys.executable, "-I", "-m", "kernel._worker", "--fd", str(fds[0])]
    if len(fds) > 1:
        command += ["--sync-fd", str(fds[1])]
    return [*limits.wrapper, *command]


def worker_env(limits: ProcessSettings, data_dir: str) -> dict[str, str]:
    env = dict(_SCRUBBED_ENV)
    env["HOME"] = data_dir
    for name in limits.pass_env:
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(limits.env)
    return env


# -- describe (prepare time, synchronous) --------------------------------------------------------


def describe(record: PluginRecord, data_root: str, timeout: float) -> dict[str, Any]:
    """Run a strictly confined worker that imports the plugin and describes it.

    :raises PluginError: the plugin cannot be imported there, or the worker fails.
    """
    target = record.candidate.target
    if target is None:
        raise PluginError(
            f"plugin {record.name!r} cannot run under isolation = 'process': its class is not importable "
            "by a fresh process (defined in __main__ or inside a function); move it to a module",
            plugin=record.name,
        )
    data_dir = os.path.abspath(os.path.join(data_root, record.name))
    os.makedirs(data_dir, exist_ok=True)
    limits = record.entry.process
    strict = confinement_for(Permissions(), data_dir, limits, target)
    ours, theirs = socket.socketpair()
    try:
        process = subprocess.Popen(
            worker_command(limits, [theirs.fileno()]),
            pass_fds=(theirs.fileno(),),
            cwd=data_dir,
            env=worker_env(limits, data_dir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        ours.close()
        theirs.close()
        raise PluginError(f"plugin {record.name!r}: cannot start its worker: {exc}", plugin=record.name) from None
    theirs.close()
    channel = SyncChannel(ours, max_frame=limits.max_frame)
    try:
        channel.send(_hello(record, target, "describe", strict, limits))
        deadline = time.monotonic() + timeout
        ready = channel.receive(timeout=timeout)
        if ready["t"] == "error":
            raise PluginError(f"plugin {record.name!r}: its worker failed: {ready.get('message')}", plugin=record.name)
        answer = channel.receive(timeout=max(0.1, deadline - time.monotonic()))
    except (ChannelError, TimeoutError) as exc:
        process.kill()
        stderr = _stderr_tail(process)
        raise PluginError(
            f"plugin {record.name!r}: its worker did not describe it: {exc or 'timed out'}{stderr}", plugin=record.name
        ) from None
    finally:
        channel.close()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
    if process.stderr is not None:
        process.stderr.close()
    if answer["t"] == "error":
        raise PluginError(
            f"cannot load {record.candidate.source} in its worker: {answer.get('kind')}: {answer.get('message')}",
            plugin=record.name,
        )
    answer["protections"] = ready.get("protections", {})
    return answer


def _stderr_tail(process: subprocess.Popen[bytes]) -> str:
    try:
        _, err = process.communicate(timeout=2)
    except Exception:
        return ""
    text = (err or b"").decode(errors="replace").strip()
    return f" (worker stderr: {text[-500:]})" if text else ""


def _hello(
    record: PluginRecord, target: str, mode: str, confine: Mapping[str, Any], limits: ProcessSettings
) -> dict[str, Any]:
    return {
        "t": "hello",
        "mode": mode,
        "name": record.name,
        "target": target,
        "sys_path": [os.path.abspath(p) if p else os.getcwd() for p in sys.path],
        "confine": dict(confine),
        "settings": dict(record.entry.settings),
        "max_frame": limits.max_frame,
        "spin_us": limits.spin_us,
    }


# -- the stand-in plugin ------------------------------------------------------------------------


class IsolatedPlugin(Plugin):
    """The kernel-side stand-in of a plugin running in a worker process.

    Subclassed per plugin by :func:`stand_in` (manifest attributes and one
    forwarding method per hook the plugin implements).
    """

    #: set on each generated subclass
    description: dict[str, Any] = {}  # noqa: RUF012 - replaced per subclass
    isolated = True

    def __init__(self, record: PluginRecord, quarantine: Callable[[str, Exception], None]) -> None:
        self._record = record
        self._quarantine = quarantine
        self._runner: Runner | None = None

    @property
    def runner(self) -> Runner:
        if self._runner is None:
            raise PluginCrashed(f"plugin {self.name!r} is not running", plugin=self.name)
        return self._runner

    @property
    def protections(self) -> Mapping[str, Any]:
        """What the worker's confinement really applied (the last start's, or describe's)."""
        if self._runner is not None and self._runner.protections:
            return self._runner.protections
        found: Mapping[str, Any] = self.description.get("protections", {})
        return found

    async def start(self, ctx: PluginContext[Any]) -> None:
        runner = self._runner = Runner(self, self._record, ctx, self._quarantine)
        try:
            await runner.start()
        except BaseException:
            # A start that failed, timed out or was cancelled leaves no worker behind.
            with anyio.CancelScope(shield=True):
                await runner.abort()
            raise

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.stop()

    def _call_sync(self, hook: str, kwargs: dict[str, Any]) -> Any:
        return self.runner.call_sync(hook, kwargs)

    async def _call_async(self, hook: str, kwargs: dict[str, Any]) -> Any:
        return await self.runner.call(hook, kwargs)


def stand_in(
    record: PluginRecord,
    description: Mapping[str, Any],
    relay: HookRelay,
    quarantine: Callable[[str, Exception], None],
) -> IsolatedPlugin:
    """A stand-in instance for the described plugin.  Hooks this kernel has no spec
    for are left out (an isolated plugin cannot bring its own hookspecs) and logged."""
    manifest = description["manifest"]
    namespace: dict[str, Any] = {
        "name": manifest["name"],
        "version": manifest["version"],
        "sdk": manifest["sdk"],
        "requires": tuple(manifest["requires"]),
        "optional": tuple(manifest["optional"]),
        "provides": tuple(manifest["provides"]),
        "permissions": tuple(manifest["permissions"]),
        "priority": manifest["priority"],
        "before": tuple(manifest["before"]),
        "after": tuple(manifest["after"]),
        # the kernel's side of the channel runs on asyncio (its default backend)
        "backends": ("asyncio",) if "asyncio" in manifest["backends"] else (),
        "Config": _settings_class(manifest["name"], description.get("settings_fields", ())),
        "description": dict(description),
        "__module__": __name__,
        "__qualname__": f"IsolatedPlugin[{manifest['name']}]",
    }
    for hook, is_async in description.get("hooks", {}).items():
        spec = relay.specs.get(hook)
        if spec is None:
            log.warning("plugin %s: hook %r has no spec in this kernel; not forwarded to its worker", record.name, hook)
            continue
        if spec.options.is_async != is_async:
            raise PluginError(
                f"plugin {record.name!r}: impl of hook {hook!r} must be {'an async' if spec.options.is_async else 'a plain'} def",
                plugin=record.name,
            )
        namespace[hook] = _forwarder(hook, spec.options.argnames, is_async)
    cls = type(f"IsolatedPlugin_{manifest['name']}", (IsolatedPlugin,), namespace)
    return cls(record, quarantine)  # type: ignore[no-any-return]


def _settings_class(name: str, fields: Any) -> type:
    """An attrs class with the field names of the plugin's real ``Config`` (which the kernel
    never imports): enough for the manifest's ``{placeholder}`` check.  The worker structures
    the settings; the kernel holds them as plain data."""
    names = [str(field) for field in fields if str(field).isidentifier()]
    if not names:
        return NoSettings
    return attrs.make_class(f"{name}_settings", {field: attrs.field(default=None) for field in names}, frozen=True)


def _forwarder(hook: str, argnames: tuple[str, ...], is_async: bool) -> Callable[..., Any]:
    """A hookimpl with exactly the spec's argument names (pluggy passes arguments by name)."""
    if not all(name.isidentifier() for name in argnames):
        raise PluginError(f"hook {hook!r} has argument names that are not identifiers: {argnames!r}")
    params = ", ".join(("self", *argnames))
    packed = ", ".join(f"{name!r}: {name}" for name in argnames)
    if is_async:
        source = f"async def {hook}({params}):\n    return await self._call_async({hook!r}, {{{packed}}})\n"
    else:
        source = f"def {hook}({params}):\n    return self._call_sync({hook!r}, {{{packed}}})\n"
    scope: dict[str, Any] = {}
    exec(compile(source, f"<isolated hook {hook}>", "exec"), scope)  # names checked above
    function: Callable[..., Any] = scope[hook]
    return hookimpl(function)


class RemoteService:
    """A service an isolated plugin provides, as other plugins see it: every method is awaited."""

    def __init__(self, runner: Runner, name: str) -> None:
        self._runner = runner
        self._name = name

    def __repr__(self) -> str:
        return f"<service {self._name!r} of isolated plugin {self._runner.name!r}>"

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        if method.startswith("_"):
            raise AttributeError(method)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._runner.request(
                {"t": "service", "service": self._name, "method": method, "args": list(args), "kwargs": kwargs}
            )

        call.__name__ = method
        return call


# -- the worker and its supervisor ----------------------------------------------------------------


#: what an expired call's future holds
_EXPIRED: Final[dict[str, Any]] = {"t": "expired"}


class Runner:
    """One isolated plugin's worker process: started, called, supervised, stopped."""

    def __init__(
        self,
        plugin: IsolatedPlugin,
        record: PluginRecord,
        ctx: PluginContext[Any],
        quarantine: Callable[[str, Exception], None],
    ) -> None:
        self.plugin = plugin
        self.record = record
        self.name = record.name
        self.ctx = ctx
        self.limits = record.entry.process
        self._quarantine = quarantine
        self.process: anyio.abc.Process | None = None
        self.channel: AsyncChannel | None = None
        self.sync: SyncChannel | None = None
        self._sync_lock = threading.Lock()
        self._calls: dict[int, asyncio.Future[dict[str, Any]]] = {}
        #: request id -> its deadline (loop time); one timer, armed for the earliest
        self._deadlines: dict[int, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._next = 0
        self._down: str | None = "not started"
        self._stopping = False
        self._crashes: list[float] = []
        self._registered = False
        self.protections: dict[str, Any] = {}
        self._exited: anyio.Event | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self._launch()
        self.ctx.spawn(self._watch_until_stopped, name="supervisor")

    async def _launch(self) -> None:
        target = self.record.candidate.target
        assert target is not None
        data_dir = str(self.ctx.data_dir.resolve())
        ours, theirs = socket.socketpair()
        sync_ours, sync_theirs = socket.socketpair()
        try:
            self.process = await anyio.open_process(
                worker_command(self.limits, [theirs.fileno(), sync_theirs.fileno()]),
                pass_fds=(theirs.fileno(), sync_theirs.fileno()),
                cwd=data_dir,
                env=worker_env(self.limits, data_dir),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            for sock in (ours, theirs, sync_ours, sync_theirs):
                sock.close()
            raise PluginError(f"plugin {self.name!r}: cannot start its worker: {exc}", plugin=self.name) from None
        theirs.close()
        sync_theirs.close()
        confine = confinement_for(self.record.grants.effective, data_dir, self.limits, target)
        hello = _hello(self.record, target, "serve", confine, self.limits)
        hello["grants"] = [str(p) for p in self.record.grants.effective]
        hello_channel = SyncChannel(ours, max_frame=self.limits.max_frame)
        try:
            await anyio.to_thread.run_sync(hello_channel.send, hello)
            ready = await anyio.to_thread.run_sync(hello_channel.receive, self.limits.call_timeout)
        except (ChannelError, TimeoutError) as exc:
            await self._kill()
            ours.close()
            sync_ours.close()
            raise PluginCrashed(f"plugin {self.name!r}: its worker did not come up: {exc}", plugin=self.name) from None
        if ready["t"] != "ready":
            await self._kill()
            ours.close()
            sync_ours.close()
            raise PluginCrashed(
                f"plugin {self.name!r}: its worker failed to confine itself: {ready.get('message')}", plugin=self.name
            )
        self.protections = dict(ready.get("protections", {}))
        for warning in self.protections.get("warnings", ()):
            log.warning("plugin %s: isolation: %s", self.name, warning)
        self.channel = AsyncChannel(ours, max_frame=self.limits.max_frame)
        self.sync = SyncChannel(sync_ours, max_frame=self.limits.max_frame)
        self._exited = anyio.Event()
        self._down = None
        self.ctx.spawn(self._read_loop, self.channel, self.process, name="channel")
        self.ctx.spawn(self._forward_output, self.process, name="output")
        started = await self.request({"t": "start"}, within=self.record.entry.start_timeout or 30.0)
        if not self._registered:
            self._register(started or {})
            self._registered = True

    def _register(self, started: Mapping[str, Any]) -> None:
        for operation in started.get("operations", ()):
            name = operation["name"]
            self.ctx.register_operation(
                name,
                self._operation_handler(name),
                doc=operation.get("doc"),
                example_args=operation.get("example_args"),
            )
        for service in started.get("provides", ()):
            self.ctx.provide(service, RemoteService(self, service))

    def _operation_handler(self, operation: str) -> Callable[[Any], Awaitable[Any]]:
        async def handler(inv: Any) -> Any:
            principal = attrs.asdict(inv.principal) if inv.principal is not None else None
            return await self.request(
                {"t": "invoke", "operation": operation, "args": dict(inv.args), "principal": principal}
            )

        handler.__name__ = operation
        return handler

    async def stop(self) -> None:
        """Ask the worker to stop the plugin; whatever happens (an error, the kernel's stop
        timeout cancelling this), the worker is gone afterwards.

        :raises Exception: what the plugin's ``stop()`` raised in the worker.
        """
        self._stopping = True
        failure: Exception | None = None
        try:
            if self._down is None and self.channel is not None:
                await self.request({"t": "stop"})
        except PluginCrashed:
            pass  # already gone
        except Exception as exc:
            failure = exc
        finally:
            # The worker exits once its tasks are done; it gets what is left of the kernel's
            # stop bound for that, then it is killed (shielded: a cancelled stop kills too).
            remaining = anyio.current_effective_deadline() - anyio.current_time()
            grace = 0.0 if failure is not None else max(0.0, min(remaining, 30.0))
            with anyio.CancelScope(shield=True):
                lingered = await self._kill(grace=grace)
                self._fail_calls(PluginCrashed(f"plugin {self.name!r} stopped", plugin=self.name))
        if failure is not None:
            raise failure
        if lingered:
            raise PluginError(
                f"plugin {self.name!r}: its worker did not exit within the stop timeout "
                "(background tasks still running); it was killed",
                plugin=self.name,
            )

    async def abort(self) -> None:
        """Kill the worker at once (a failed or cancelled start)."""
        self._stopping = True
        await self._kill()
        self._fail_calls(PluginCrashed(f"plugin {self.name!r} did not start", plugin=self.name))

    async def _kill(self, grace: float = 0.0) -> bool:
        """Kill the worker (after ``grace`` seconds to exit by itself); True if it had to be killed
        after a grace period."""
        process = self.process
        if process is None:
            return False
        if process.returncode is None and grace:
            with anyio.move_on_after(grace):
                await process.wait()
        lingered = bool(grace) and process.returncode is None
        if process.returncode is None:
            try:
                os.killpg(process.pid, 9)  # its session: nothing it started survives it
            except ProcessLookupError:
                pass
            except PermissionError:
                process.kill()
            with anyio.move_on_after(5):
                await process.wait()
        with anyio.move_on_after(5):
            await process.aclose()  # its pipes too, so nothing is left to the loop's finalizers
        for channel in (self.sync,):
            if channel is not None:
                channel.close()
        if self.channel is not None:
            await self.channel.aclose()
        return lingered

    # -- calls ------------------------------------------------------------------------------

    async def request(self, message: dict[str, Any], *, within: float | None = None) -> Any:
        """Send a request to the worker and wait for its answer (an error is raised).

        The wait is a bare future: a cancel scope and an anyio event per call
        cost a third of a round trip (``bench_isolation.py``), and so did a timer
        per call (a heap push, and a pop when its cancelled handle reached the
        head).  Deadlines sit in a dict; one timer, armed for the earliest,
        expires what is due and re-arms for the next.
        """
        channel = self.channel
        if self._down is not None or channel is None:
            raise PluginCrashed(f"plugin {self.name!r} is not available: {self._down}", plugin=self.name)
        self._next += 1
        request = self._next
        loop = channel.loop
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._calls[request] = future
        bound = within if within is not None else self.limits.call_timeout
        deadline = loop.time() + bound
        self._deadlines[request] = deadline
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._expire_due)
        try:
            await channel.send({**message, "id": request})
            reply = await future
        except ChannelError as exc:
            await self._crashed(f"the channel broke: {exc}")
            raise PluginCrashed(f"plugin {self.name!r} crashed: {exc}", plugin=self.name) from None
        finally:
            self._deadlines.pop(request, None)
            self._calls.pop(request, None)
        if reply is _EXPIRED:
            await self._crashed(f"a {message['t']} call ran past {bound:g}s")
            if message["t"] == "hook":
                raise HookTimeout(message["hook"], self.name, bound)
            raise PluginCrashed(
                f"plugin {self.name!r}: {message['t']} did not answer within {bound:g}s; its worker was killed",
                plugin=self.name,
            )
        if reply.get("t") == "error":
            raise rebuild_error(str(reply.get("kind", "PluginError")), str(reply.get("message", "")), self.name)
        return reply.get("value")

    def _expire_due(self) -> None:
        """The timer: answer every request past its deadline with ``_EXPIRED``; re-arm for the next."""
        self._timer = None
        if not self._deadlines:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for request, deadline in list(self._deadlines.items()):
            if deadline <= now:
                del self._deadlines[request]
                future = self._calls.get(request)
                if future is not None and not future.done():
                    future.set_result(_EXPIRED)
        if self._deadlines:
            self._timer = loop.call_at(min(self._deadlines.values()), self._expire_due)

    async def call(self, hook: str, kwargs: dict[str, Any]) -> Any:
        return await self.request({"t": "hook", "hook": hook, "kwargs": kwargs})

    def call_sync(self, hook: str, kwargs: dict[str, Any]) -> Any:
        """A sync hook: a blocking round trip on the sync socket, bounded by ``call_timeout``."""
        if self._down is not None or self.sync is None:
            raise PluginCrashed(f"plugin {self.name!r} is not available: {self._down}", plugin=self.name)
        with self._sync_lock:
            self._next += 1
            request = self._next
            try:
                self.sync.send({"t": "hook", "id": request, "hook": hook, "kwargs": kwargs})
                reply = self.sync.receive(timeout=self.limits.call_timeout)
            except TimeoutError:
                self._kill_now(f"sync hook {hook!r} ran past {self.limits.call_timeout:g}s")
                raise HookTimeout(hook, self.name, self.limits.call_timeout) from None
            except ChannelError as exc:
                self._kill_now(f"the sync channel broke: {exc}")
                raise PluginCrashed(f"plugin {self.name!r} crashed: {exc}", plugin=self.name) from None
        if reply.get("t") == "error":
            raise rebuild_error(str(reply.get("kind", "PluginError")), str(reply.get("message", "")), self.name)
        return reply.get("value")

    def _kill_now(self, reason: str) -> None:
        """From sync code: kill the worker; the supervisor notices the exit and restarts it."""
        self._down = reason
        if self.process is not None and self.process.returncode is None:
            try:
                os.killpg(self.process.pid, 9)
            except (ProcessLookupError, PermissionError):
                self.process.kill()

    # -- the worker's side of the conversation ---------------------------------------------

    async def _read_loop(self, channel: AsyncChannel, process: anyio.abc.Process) -> None:
        reason = "its worker exited"
        try:
            await channel.serve(self._on_message)
        except ChannelError as exc:
            reason = str(exc)
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(1):
                await process.wait()
            code = process.returncode
            if code is not None and code < 0:
                reason = f"its worker was killed by signal {-code}" + (
                    " (CPU limit)" if -code == 24 else " (out of memory)" if -code == 9 else ""
                )
            elif code is not None:
                reason = f"its worker exited with code {code}" if reason == "the peer closed the channel" else reason
            if self.process is process:
                await self._crashed(reason)

    def _on_message(self, message: dict[str, Any]) -> None:
        """A frame from the worker, as it arrives (the channel's reader callback: no task hop)."""
        kind = message["t"]
        if kind in ("result", "error", "stopped"):
            future = self._calls.get(message.get("id", -1))
            if future is not None and not future.done():
                future.set_result(message)
        elif kind == "log":
            level = message.get("level", logging.INFO)
            self.ctx.log.log(level if isinstance(level, int) else logging.INFO, "%s", message.get("message"))
        elif kind == "service":
            self.ctx.spawn(self._serve_service, message, name="service call")
        else:
            raise ChannelError(f"unexpected message {kind!r} from the worker")

    async def _serve_service(self, message: dict[str, Any]) -> None:
        request = message.get("id")
        name, method = str(message.get("service")), str(message.get("method"))
        try:
            if method.startswith("_"):
                raise PermissionDenied(f"plugin {self.name!r} may not call private method {method!r} of {name!r}")
            service = self.ctx.service(name)  # PermissionDenied unless declared
            result = getattr(service, method)(*message.get("args", ()), **message.get("kwargs", {}))
            if hasattr(result, "__await__"):
                result = await result
            reply: dict[str, Any] = {"t": "reply", "id": request, "value": result}
        except Exception as exc:
            reply = {"t": "reply", "id": request, "error": type(exc).__name__, "message": str(exc)}
        if self.channel is not None:
            try:
                await self.channel.send(reply)
            except ChannelError as exc:
                try:
                    await self.channel.send(
                        {
                            "t": "reply",
                            "id": request,
                            "error": "PluginError",
                            "message": f"cannot send the result: {exc}",
                        }
                    )
                except ChannelError:
                    pass

    async def _forward_output(self, process: anyio.abc.Process) -> None:
        async def pump(stream: anyio.abc.ByteReceiveStream | None, level: int) -> None:
            if stream is None:
                return
            buffer = b""
            try:
                async for chunk in stream:
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        self.ctx.log.log(level, "worker: %s", line.decode(errors="replace")[:2000])
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return  # the worker was killed and its pipes closed

        async with anyio.create_task_group() as group:
            group.start_soon(pump, process.stdout, logging.INFO)
            group.start_soon(pump, process.stderr, logging.WARNING)

    # -- supervision ---------------------------------------------------------------------------

    def _fail_calls(self, error: Exception) -> None:
        for future in list(self._calls.values()):
            if not future.done():
                future.set_result({"t": "error", "kind": type(error).__name__, "message": str(error)})
        self._calls.clear()
        self._deadlines.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _crashed(self, reason: str) -> None:
        if self._down is not None and self._down.startswith("crashed"):
            return
        self._down = f"crashed: {reason}"
        self._fail_calls(PluginCrashed(f"plugin {self.name!r} crashed: {reason}", plugin=self.name))
        await self._kill()
        if self._stopping:
            return
        log.error("plugin %s: %s", self.name, reason)
        if self._exited is not None:
            self._exited.set()

    def _stop_requested(self) -> bool:
        return self._stopping

    async def _watch_until_stopped(self) -> None:
        while not self._stop_requested():
            if self._exited is None:
                return
            await self._exited.wait()
            if self._stop_requested():
                return
            now = time.monotonic()
            self._crashes = [t for t in self._crashes if now - t < self.limits.restart_window] + [now]
            if len(self._crashes) > self.limits.max_restarts:
                error = PluginCrashed(
                    f"plugin {self.name!r} crashed {len(self._crashes)} times within "
                    f"{self.limits.restart_window:g}s; quarantined (last: {self._down})",
                    plugin=self.name,
                )
                self._down = f"quarantined: {error}"
                self._quarantine(self.name, error)
                return
            delay = min(self.limits.backoff * 2 ** (len(self._crashes) - 1), self.limits.max_backoff)
            await anyio.sleep(delay)
            if self._stop_requested():
                return
            try:
                await self._launch()
                log.warning("plugin %s: worker restarted (%d in the window)", self.name, len(self._crashes))
            except Exception as exc:
                self._down = f"crashed: restart failed: {exc}"
                log.error("plugin %s: restart failed: %s", self.name, exc)
                assert self._exited is not None
                if not self._exited.is_set():
                    self._exited.set()
