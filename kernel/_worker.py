"""The worker process of an isolated plugin (``isolation = "process"``): confine, import, serve.

Started by the kernel as ``python -I -m kernel._worker --fd N --sync-fd M``
with a scrubbed environment, the plugin's data directory as working
directory, and two sockets: the asynchronous channel (everything but sync
hooks) and a blocking one for sync hook calls.  Nothing secret travels on the
command line: the first frame on the channel (``hello``) carries what to
load, the confinement and the settings.

The bootstrap is trusted code and runs in this order, while the process has
one thread: read ``hello``; set ``sys.path``; apply rlimits, no-new-privs,
Landlock and seccomp (:mod:`kernel._confine`); only then import the plugin.
A plugin's import-time code therefore already runs confined.

Modes: ``describe`` (prepare time) answers the plugin's manifest, the hooks it
implements and the issues of its settings, then exits; ``serve`` starts the
plugin and answers calls until told to stop or the channel closes.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import inspect
import logging
import os
import selectors
import socket
import sys
import threading
import traceback
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path
from time import perf_counter
from typing import Any

from ._channel import AsyncChannel
from ._channel import ChannelError
from ._channel import SyncChannel

log = logging.getLogger("orion.worker")


def _error_frame(exc: BaseException, request: int | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"t": "error", "kind": type(exc).__name__, "message": str(exc)}
    if request is not None:
        frame["id"] = request
    frame["trace"] = "".join(traceback.format_exception(exc))[-4000:]
    return frame


def _load(target: str) -> Any:
    from ._discovery import import_source
    from ._discovery import instantiate

    return instantiate(import_source(target), target)


def _confine(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Apply the confinement the kernel asked for; report what was really applied."""
    try:
        from . import _confine
    except ImportError:  # pragma: no cover - the module ships with the kernel
        return {"warnings": ["no confinement module: running with process separation only"]}
    # The shared libraries this process maps, the loader cache, time zones (and, for a
    # plugin that may connect, resolver files and CA certificates): read from this process.
    runtime = _confine.runtime_read_paths(network=bool(spec.get("connect_ports")))
    confinement = _confine.Confinement(
        read_paths=(*spec.get("read_paths", ()), *runtime),
        write_paths=tuple(spec.get("write_paths", ())),
        connect_ports=_ranges(spec.get("connect_ports")),
        bind_ports=_ranges(spec.get("bind_ports")),
        allow_subprocess=bool(spec.get("allow_subprocess", False)),
        memory_bytes=spec.get("memory_bytes"),
        cpu_seconds=spec.get("cpu_seconds"),
        open_files=spec.get("open_files"),
        file_size_bytes=spec.get("file_size_bytes"),
    )
    import attrs

    applied = _confine.confine(confinement)
    report: dict[str, Any] = attrs.asdict(applied)
    report["rlimits"] = dict(report.get("rlimits", {}))
    report["warnings"] = list(report.get("warnings", ()))
    return report


def _ranges(value: Any) -> tuple[tuple[int, int], ...] | None:
    if value is None:
        return None
    return tuple((int(low), int(high)) for low, high in value)


def _hooks_of(plugin: object) -> dict[str, bool]:
    """The hooks the plugin implements: name -> whether the impl is async."""
    from plugin_sdk._markers import PROJECT

    found: dict[str, bool] = {}
    for attr in dir(type(plugin)):
        value = getattr(plugin, attr, None)
        opts = getattr(value, f"{PROJECT}_impl", None)
        if opts is None:
            continue
        name = opts.get("specname") or attr
        found[name] = inspect.iscoroutinefunction(value)
    return found


def describe(hello: Mapping[str, Any]) -> dict[str, Any]:
    """The ``described`` frame: manifest, hooks and settings issues of the plugin."""
    import attrs

    from plugin_sdk import Manifest

    from ._config import structure_settings
    from ._config import unstructure
    from ._schema import class_schema

    plugin = _load(hello["target"])
    manifest = Manifest.of(plugin)
    settings, issues = structure_settings(manifest.name, manifest.Config, hello.get("settings", {}))
    hookspecs = [f"{getattr(ns, '__module__', '')}:{getattr(ns, '__qualname__', '')}" for ns in manifest.hookspecs]
    return {
        "t": "described",
        "manifest": {
            "name": manifest.name,
            "version": manifest.version,
            "sdk": manifest.sdk,
            "requires": manifest.requires,
            "optional": manifest.optional,
            "provides": manifest.provides,
            "permissions": manifest.permissions,
            "priority": manifest.priority,
            "before": manifest.before,
            "after": manifest.after,
            "backends": manifest.backends,
            "has_reconfigure": manifest.has_reconfigure,
            "config": f"{manifest.Config.__module__}:{manifest.Config.__qualname__}",
            "hookspecs": hookspecs,
        },
        "hooks": _hooks_of(plugin),
        "issues": [{"path": issue.path, "message": issue.message} for issue in issues],
        "settings": unstructure(settings) if not issues else {},
        "settings_fields": [field.name for field in attrs.fields(manifest.Config)],
        "settings_schema": class_schema(manifest.Config),
    }


class _ForwardLogs(logging.Handler):
    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send({"t": "log", "level": record.levelno, "message": self.format(record)})
        except Exception:
            self.handleError(record)


class Worker:
    """The serving side: one plugin instance, its context, its calls."""

    def __init__(self, hello: Mapping[str, Any], channel: AsyncChannel, sync: SyncChannel) -> None:
        self.hello = hello
        self.channel = channel
        self.sync = sync
        self.plugin: Any = None
        self.operations: dict[str, Callable[..., Awaitable[Any]]] = {}
        self.services: dict[str, object] = {}
        self.pending: dict[int, Any] = {}
        self.next_id = 0
        self.stopping: Any = None
        self.group: Any = None
        self.token: Any = None
        self._impls: dict[str, Callable[..., Any]] | None = None
        #: requests being handled (asyncio tasks: cheaper than a task group's start_soon per call)
        self._handling: set[Any] = set()

    async def run(self) -> None:
        import anyio
        import anyio.lowlevel

        from plugin_sdk import Manifest

        from ._config import structure_settings
        from ._worker_context import WorkerContext

        self.token = anyio.lowlevel.current_token()
        self.plugin = _load(self.hello["target"])
        manifest = Manifest.of(self.plugin)
        settings, issues = structure_settings(manifest.name, manifest.Config, self.hello.get("settings", {}))
        if issues:
            await self.channel.send({"t": "error", "kind": "ConfigError", "message": "; ".join(map(str, issues))})
            return
        self.stopping = anyio.Event()
        async with anyio.create_task_group() as group:
            self.group = group
            self.ctx = WorkerContext(self, manifest, settings, Path(os.getcwd()), self.hello.get("grants", ()))
            self._install_logging()
            threading.Thread(target=self._serve_sync, name="orion-sync-calls", daemon=True).start()
            group.start_soon(self._read_loop)
            await self.stopping.wait()
            for task in list(self._handling):
                task.cancel()
            group.cancel_scope.cancel()

    def _install_logging(self) -> None:
        handler = _ForwardLogs(lambda frame: self.group.start_soon(self._send_quietly, frame))
        handler.setFormatter(logging.Formatter("%(message)s"))
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)

    async def _send_quietly(self, frame: dict[str, Any]) -> None:
        try:
            await self.channel.send(frame)
        except ChannelError:
            pass

    async def _read_loop(self) -> None:
        try:
            await self.channel.serve(self._on_message)
        except ChannelError:
            pass  # the kernel went away: nothing to serve
        self.stopping.set()

    def _on_message(self, message: dict[str, Any]) -> None:
        """A frame from the kernel, as it arrives: a reply wakes its waiter, a request gets a task."""
        if message["t"] == "reply":
            waiter = self.pending.pop(message.get("id", -1), None)
            if waiter is not None:
                waiter.set(message)
            return
        # The task leaves the set itself: a done callback would cost the loop one more
        # iteration (and epoll call) per request.
        self._handling.add(self.channel.loop.create_task(self._handle(message)))

    async def _handle(self, message: dict[str, Any]) -> None:
        request = message.get("id")
        try:
            try:
                value = await self._dispatch(message)
            except Exception as exc:
                await self._send_quietly(_error_frame(exc, request))
                return
            if message["t"] == "stop":
                await self._send_quietly({"t": "stopped", "id": request})
                self.stopping.set()
                return
            try:
                await self.channel.send({"t": "result", "id": request, "value": value})
            except ChannelError as exc:
                await self._send_quietly(_error_frame(exc, request))
        finally:
            # current_task(loop) with the loop given: asyncio's own lookup of the running
            # loop costs a getpid() syscall per call (CPython 3.11)
            self._handling.discard(asyncio.current_task(self.channel.loop))

    async def _dispatch(self, message: dict[str, Any]) -> Any:
        kind = message["t"]
        if kind == "start":
            await self.plugin.start(self.ctx)
            return {
                "provides": sorted(self.services),
                "operations": [
                    {"name": name, "doc": doc, "example_args": example}
                    for name, (doc, example) in self.ctx.operation_docs.items()
                ],
            }
        if kind == "stop":
            await self.plugin.stop()
            self.ctx.cancel_tasks()
            return None
        if kind == "hook":
            function = self._impl(message["hook"])
            result = function(**message.get("kwargs", {}))
            return await result if inspect.isawaitable(result) else result
        if kind == "invoke":
            from plugin_sdk import Invocation
            from plugin_sdk import Principal

            handler = self.operations[message["operation"]]
            raw = message.get("principal")
            principal = Principal(**raw) if isinstance(raw, dict) else None
            inv = Invocation(operation=message["operation"], args=message.get("args", {}), principal=principal)
            result = handler(inv)
            return await result if inspect.isawaitable(result) else result
        if kind == "service":
            target = self.services[message["service"]]
            method = message["method"]
            if method.startswith("_"):
                raise AttributeError(f"service {message['service']!r} has no public method {method!r}")
            result = getattr(target, method)(*message.get("args", ()), **message.get("kwargs", {}))
            if inspect.isawaitable(result):
                result = await result
            return result
        if kind == "ping":
            return "pong"
        raise ChannelError(f"unknown request {kind!r}")

    def _impl(self, hook: str) -> Callable[..., Any]:
        if self._impls is None:
            from plugin_sdk._markers import PROJECT

            found: dict[str, Callable[..., Any]] = {}
            for attr in dir(type(self.plugin)):
                value = getattr(self.plugin, attr, None)
                opts = getattr(value, f"{PROJECT}_impl", None)
                if opts is not None and callable(value):
                    found[opts.get("specname") or attr] = value
            self._impls = found
        try:
            return self._impls[hook]
        except KeyError:
            raise AttributeError(f"the plugin does not implement hook {hook!r}") from None

    def _serve_sync(self) -> None:
        """Sync hook calls: read a request, run the impl in the worker's event loop thread, answer."""
        import anyio.from_thread

        while True:
            try:
                message = self.sync.receive()
            except (ChannelError, OSError):
                return
            request = message.get("id")
            try:
                call = functools.partial(self._impl(message["hook"]), **message.get("kwargs", {}))
                value = anyio.from_thread.run_sync(call, token=self.token)
                reply: dict[str, Any] = {"t": "result", "id": request, "value": value}
            except Exception as exc:
                reply = _error_frame(exc, request)
            try:
                self.sync.send(reply)
            except ChannelError as exc:
                try:
                    self.sync.send(_error_frame(exc, request))
                except ChannelError:
                    return

    async def request(self, message: dict[str, Any]) -> Any:
        """Ask the kernel something (a service it provides) and wait for the reply."""
        import anyio

        self.next_id += 1
        request = self.next_id
        event = _Reply(anyio.Event())
        self.pending[request] = event
        await self.channel.send({**message, "id": request})
        await event.event.wait()
        reply = event.message
        if reply.get("error"):
            from ._worker_context import rebuild_error

            raise rebuild_error(reply["error"], reply.get("message", ""))
        return reply.get("value")


class _Reply:
    def __init__(self, event: Any) -> None:
        self.event = event
        self.message: dict[str, Any] = {}

    def set(self, message: dict[str, Any]) -> None:
        self.message = message
        self.event.set()


class _Selector(selectors.DefaultSelector):
    """The worker loop's selector: no empty polls, and a short spin before sleeping.

    * asyncio polls with a zero timeout whenever callbacks are ready, so each
      request -- read in one iteration, handled by its task in the next -- costs
      a second ``epoll_wait`` that can only come back empty.  One such poll in
      two is skipped; I/O is still polled at least every other iteration, so a
      loop kept busy by ready callbacks never starves it.
    * Before it would sleep, it keeps polling (no timeout) for up to ``spin``
      seconds -- but only while calls come back that fast: waking a sleeping
      (halted) CPU costs 20-40 us on a VM, more than a whole call, and a worker
      that is still polling needs no wake-up.  A spin that finds nothing turns
      spinning off until a sleep again ends within the window, so an idle worker
      spends at most one window of CPU per burst of calls
      (``benchmarks/bench_isolation.py`` measures both ways).
    """

    def __init__(self, spin: float = 0.0) -> None:
        super().__init__()
        self._spin = spin
        self._spinning = spin > 0
        self._skipped = False

    @property
    def spinning(self) -> bool:
        """Whether the next wait starts with a spin."""
        return self._spinning

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout <= 0:
            if not self._skipped:
                self._skipped = True
                return []
            self._skipped = False
            return super().select(0)
        self._skipped = False
        spin = self._spin
        if not spin:
            return super().select(timeout)
        began = perf_counter()
        if self._spinning:
            until = began + (spin if timeout is None else min(spin, timeout))
            while True:
                ready = super().select(0)
                if ready:
                    return ready
                if perf_counter() >= until:
                    break
            self._spinning = False
            if timeout is not None:
                timeout = max(0.0, timeout - (perf_counter() - began))
        ready = super().select(timeout)
        if perf_counter() - began < spin:
            self._spinning = True  # work came back within the window: worth staying awake for
        return ready


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernel._worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--sync-fd", type=int, default=None)
    args = parser.parse_args(argv)
    sock = socket.socket(fileno=args.fd)
    hello_channel = SyncChannel(sock)
    try:
        hello = hello_channel.receive(timeout=30)
    except (ChannelError, TimeoutError) as exc:
        print(f"orion worker: no hello from the kernel: {exc}", file=sys.stderr)
        return 2
    if hello.get("t") != "hello" or not isinstance(hello.get("target"), str):
        print("orion worker: the first frame is not a hello", file=sys.stderr)
        return 2
    sys.path[:] = [str(p) for p in hello.get("sys_path", sys.path)]
    try:
        report = _confine(hello.get("confine", {}))
    except Exception as exc:
        hello_channel.send(_error_frame(exc))
        return 3
    hello_channel.send({"t": "ready", "protections": report, "pid": os.getpid()})
    if hello.get("mode") == "describe":
        try:
            hello_channel.send(describe(hello))
        except Exception as exc:
            hello_channel.send(_error_frame(exc))
            return 1
        return 0
    if args.sync_fd is None:
        hello_channel.send(_error_frame(ValueError("serve mode needs --sync-fd")))
        return 2
    sync = SyncChannel(socket.socket(fileno=args.sync_fd), max_frame=int(hello.get("max_frame", 16 << 20)))
    import anyio

    async def serve() -> None:
        channel = AsyncChannel(sock, max_frame=int(hello.get("max_frame", 16 << 20)))
        await Worker(hello, channel, sync).run()

    try:
        spin = int(hello.get("spin_us", 0)) / 1e6
        anyio.run(serve, backend_options={"loop_factory": lambda: asyncio.SelectorEventLoop(_Selector(spin))})
    except Exception as exc:
        print(f"orion worker: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
