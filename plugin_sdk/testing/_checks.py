"""The checks of the conformance suite, in the order they run.

Each check starts the plugin in a real kernel (with the example settings, a
temporary data directory, and plugins providing the services it requires)
and looks at one promise a plugin makes.  A check fails with the reason a
plugin author needs to fix it, or skips with the reason it cannot apply.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import inspect
import os
import shutil
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import Final

import anyio
import anyio.lowlevel
import attrs
from packaging.specifiers import InvalidSpecifier
from packaging.specifiers import SpecifierSet

from plugin_sdk import SERVICE_PROTOCOLS
from plugin_sdk import Consumer
from plugin_sdk import Manifest
from plugin_sdk import ManifestError
from plugin_sdk import PerConsumer
from plugin_sdk import Permissions
from plugin_sdk import Plugin
from plugin_sdk import PluginState
from plugin_sdk import Principal
from plugin_sdk import __version__ as SDK_VERSION
from plugin_sdk._markers import PROJECT

from ._suite import CheckFailed
from ._suite import CheckSkipped
from ._suite import Subject
from ._suite import check

# -- running the plugin ----------------------------------------------------------------------------


def _config(subject: Subject, entry: Mapping[str, Any] | None = None, *, guard: str = "off") -> dict[str, Any]:
    """A kernel config for the plugin and its providers, with a fresh data directory.  The sandbox
    grants what each manifest asks (and a plugin holds no more than it asked)."""
    data_dir = tempfile.mkdtemp(prefix="orion-conformance-")
    name = subject.manifest.name
    plugins: dict[str, Any] = {name: {"settings": dict(subject.settings), **(entry or {})}}
    for factory in subject.providers:
        provider = factory()
        plugins[Manifest.of(provider).name] = {"settings": dict(getattr(provider, "conformance_settings", {}) or {})}
    return {
        "kernel": {
            "sandbox": {"default": "allow", "guard": guard},
            "start_timeout": 20.0,
            "stop_timeout": 20.0,
            "data_dir": data_dir,
        },
        "plugins": plugins,
    }


def _kernel(subject: Subject, plugin: Plugin, config: Mapping[str, Any] | None = None) -> Any:
    from kernel import Kernel

    providers = [factory() for factory in subject.providers]
    specs = [*subject.manifest.hookspecs, *(s for p in providers for s in Manifest.of(p).hookspecs)]
    config = dict(config or _config(subject))
    kernel = Kernel(config, plugins=[plugin, *providers], hookspecs=specs, environ={}, entry_points=False)
    weakref.finalize(kernel, shutil.rmtree, config["kernel"]["data_dir"], ignore_errors=True)
    return kernel


def _state(kernel: Any, name: str) -> Any:
    return kernel.plugins[name]


def _must_run(kernel: Any, name: str, when: str = "start") -> None:
    info = _state(kernel, name)
    if info.state is not PluginState.RUNNING:
        raise CheckFailed(f"{when}: it did not reach running ({info.state.value}): {info.last_error}")


def _record(kernel: Any, name: str) -> Any:
    return kernel._lifecycle.records[name]


def _impls(plugin: object) -> dict[str, tuple[str, Callable[..., Any]]]:
    """Hook name -> (attribute, bound method) of each ``@hookimpl`` of ``plugin``."""
    found: dict[str, tuple[str, Callable[..., Any]]] = {}
    for attr in dir(type(plugin)):
        value = getattr(type(plugin), attr, None)
        opts = getattr(value, f"{PROJECT}_impl", None)
        if opts is not None and callable(value):
            found[opts.get("specname") or attr] = (attr, getattr(plugin, attr))
    return found


def _params(function: Callable[..., Any]) -> list[str]:
    return [
        p.name
        for p in inspect.signature(function).parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


def _callable_hooks(subject: Subject, plugin: Plugin) -> list[tuple[str, Callable[..., Any], dict[str, Any]]]:
    """The plugin's hook impls the suite can call: those whose spec takes no arguments, and those
    the plugin gives ``conformance_hook_args`` for."""
    specs = subject.known_specs
    calls = []
    for hook, (_, method) in sorted(_impls(plugin).items()):
        spec = specs.get(hook)
        if hook in subject.hook_args:
            calls.append((hook, method, dict(subject.hook_args[hook])))
        elif spec is not None and not _params(spec):
            calls.append((hook, method, {}))
    return calls


async def _call(method: Callable[..., Any], kwargs: Mapping[str, Any]) -> Any:
    result = method(**kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _exercise(kernel: Any, subject: Subject, plugin: Plugin) -> list[str]:
    """Call every operation with its example args and every callable hook; the errors, described."""
    errors = []
    for op in _operations(kernel, subject):
        try:
            await kernel.invoke(op.name, dict(op.example_args), principal=subject.principal)
        except Exception as exc:
            errors.append(f"{op.name}: {type(exc).__name__}: {exc}")
    for hook, method, kwargs in _callable_hooks(subject, plugin):
        try:
            await _call(method, kwargs)
        except Exception as exc:
            errors.append(f"hook {hook}: {type(exc).__name__}: {exc}")
    return errors


def _operations(kernel: Any, subject: Subject) -> list[Any]:
    return [
        op for op in kernel.operations.values() if op.plugin == subject.manifest.name and op.example_args is not None
    ]


# -- leaks -------------------------------------------------------------------------------------------


def _open_fds() -> set[int]:
    try:
        return {int(name) for name in os.listdir("/proc/self/fd")}
    except OSError:
        return set()


def _pool_worker(thread: threading.Thread) -> bool:
    """One of anyio's shared worker threads (``anyio.to_thread``): the pool keeps an idle
    one for 10 s whoever started it, so it is nobody's leak -- and counting it would make
    the verdict depend on which check happened to start the pool first."""
    kind = type(thread)
    return kind.__name__ == "WorkerThread" and kind.__module__.startswith("anyio.")


@attrs.frozen
class _Snapshot:
    tasks: frozenset[Any]
    threads: frozenset[threading.Thread]
    fds: frozenset[int]

    @classmethod
    def take(cls) -> _Snapshot:
        import asyncio

        gc.collect()
        return cls(frozenset(asyncio.all_tasks()), frozenset(threading.enumerate()), frozenset(_open_fds()))

    async def left_since(self) -> str | None:
        """What exists now that did not then (after letting the loop settle), or None."""
        import asyncio

        left: list[str] = []
        deadline = time.monotonic() + 1.0
        while True:
            await anyio.sleep(0.02)
            gc.collect()
            tasks = {t for t in asyncio.all_tasks() - self.tasks if not t.done() and t is not asyncio.current_task()}
            threads = {
                t
                for t in set(threading.enumerate()) - self.threads
                if t.is_alive() and not t.daemon and not _pool_worker(t)
            }
            fds = _open_fds() - self.fds
            if not (tasks or threads or fds) or time.monotonic() > deadline:
                break
        if tasks:
            left.append(f"tasks {sorted(t.get_name() for t in tasks)}")
        if threads:
            left.append(f"threads {sorted(t.name for t in threads)}")
        if fds:
            left.append(f"file descriptors {sorted(fds)}")
        return ", ".join(left) or None


# -- the checks ----------------------------------------------------------------------------------------


@check("manifest.sdk_range", "the sdk range is satisfied by the running SDK", needs_manifest=False)
async def _sdk_range(subject: Subject) -> None:
    sdk = getattr(subject.factory(), "sdk", None)
    try:
        spec = SpecifierSet(sdk) if isinstance(sdk, str) and sdk.strip() else None
    except InvalidSpecifier:
        spec = None
    if spec is None:
        raise CheckSkipped(f"sdk = {sdk!r} is not a version specifier (see manifest.valid)")
    if not spec.contains(SDK_VERSION, prereleases=True):
        raise CheckFailed(f"sdk = {sdk!r} excludes the running plugin_sdk {SDK_VERSION}")


@check("manifest.valid", "the manifest is valid", needs_manifest=False)
async def _manifest_valid(subject: Subject) -> None:
    try:
        Manifest.of(subject.factory())
    except ManifestError as exc:
        if exc.field == "sdk" and "the running SDK is" in str(exc):
            raise CheckSkipped("only its sdk range is at fault (see manifest.sdk_range)") from None
        raise CheckFailed(str(exc)) from None


@check("config.defaults", "settings structure and unstructure round-trip")
async def _config_defaults(subject: Subject) -> None:
    from kernel._config import structure_settings
    from kernel._config import unstructure

    settings, issues = structure_settings(subject.manifest.name, subject.manifest.Config, dict(subject.settings))
    if issues:
        raise CheckFailed(f"the example settings are refused: {'; '.join(map(str, issues))}")
    again, issues = structure_settings(subject.manifest.name, subject.manifest.Config, unstructure(settings))
    if issues or again != settings:
        raise CheckFailed(f"unstructure then structure does not give the settings back: {issues or again!r}")


_WRONG: Final[dict[type, object]] = {str: 12345, int: "not a number", float: "not a number", bool: "yes"}


@check("config.rejects_bad", "bad settings are a ConfigError naming the setting")
async def _config_rejects_bad(subject: Subject) -> None:
    from kernel._config import structure_settings

    name = subject.manifest.name
    config = subject.manifest.Config
    with contextlib.suppress(Exception):  # annotations it cannot resolve: only real types are used below
        attrs.resolve_types(config)
    cases: list[tuple[str, dict[str, Any], str | None]] = []  # (what, settings, the path it must name)
    typed = [f for f in attrs.fields(config) if isinstance(f.type, type) and f.type in _WRONG]
    if typed:
        field, wrong = typed[0], _WRONG[typed[0].type]
        cases.append((f"{field.name} = {wrong!r}", {field.name: wrong}, f"plugins.{name}.settings.{field.name}"))
    for bad in subject.bad_settings:  # the plugin's own examples: any field's path will do
        cases.append((", ".join(f"{k} = {v!r}" for k, v in bad.items()), dict(bad), None))
    if not cases:
        raise CheckSkipped("no str, int, float or bool setting, and no conformance_bad_settings")
    for what, bad, path in cases:
        _, issues = structure_settings(name, config, {**subject.settings, **bad})
        if not issues:
            raise CheckFailed(f"{what} was accepted")
        prefix = f"plugins.{name}.settings."
        if not any(issue.path == path if path else issue.path.startswith(prefix) for issue in issues):
            paths = [issue.path for issue in issues]
            raise CheckFailed(
                f"{what} was refused, but not at {path or 'the setting at fault'} (issues at {paths}): "
                "validate in the field (attrs validator), not in __attrs_post_init__"
            )


@check("hooks.known", "every @hookimpl names a known hookspec and only its arguments")
async def _hooks_known(subject: Subject) -> None:
    impls = _impls(subject.factory())
    if not impls:
        raise CheckSkipped("implements no hook")
    specs = subject.known_specs
    problems = []
    for hook, (attr, method) in sorted(impls.items()):
        spec = specs.get(hook)
        if spec is None:
            problems.append(f"{attr}: no hookspec named {hook!r} (declare it in hookspecs, or fix the name)")
            continue
        extra = [name for name in _params(method) if name not in _params(spec)]
        if extra:
            problems.append(f"{attr}: arguments {extra} are not in the spec {hook}{inspect.signature(spec)}")
    if problems:
        raise CheckFailed("; ".join(problems))


@check("hooks.kind", "each hook impl is async exactly when its spec is")
async def _hooks_kind(subject: Subject) -> None:
    impls = _impls(subject.factory())
    specs = subject.known_specs
    pairs = [(hook, attr, method, specs[hook]) for hook, (attr, method) in sorted(impls.items()) if hook in specs]
    if not pairs:
        raise CheckSkipped("implements no known hook")
    wrong = [
        f"{attr} is {'async' if inspect.iscoroutinefunction(method) else 'sync'} but {hook} is "
        f"{'async' if inspect.iscoroutinefunction(spec) else 'sync'}"
        for hook, attr, method, spec in pairs
        if inspect.iscoroutinefunction(method) != inspect.iscoroutinefunction(spec)
    ]
    if wrong:
        raise CheckFailed("; ".join(wrong))


_BLOCK_IMPORTS: Final = """
import importlib.abc, sys
class _Missing(importlib.abc.MetaPathFinder):
    def __init__(self, names):
        self.names = names
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (hidden by the conformance suite)")
        return None
sys.meta_path.insert(0, _Missing(set(sys.argv[1].split(","))))
for name in list(sys.modules):
    if name.split(".")[0] in _Missing(set(sys.argv[1].split(","))).names:
        del sys.modules[name]
import importlib
from plugin_sdk import Manifest
module = importlib.import_module(sys.argv[2])
cls = module
for part in sys.argv[3].split("."):
    cls = getattr(cls, part)
Manifest.of(cls())
"""


@check("imports.optional", "it imports cleanly with its optional imports missing", core=False)
async def _optional_imports(subject: Subject) -> None:
    missing = subject.manifest.optional_imports
    if not missing:
        raise CheckSkipped("declares no optional_imports")
    cls = type(subject.factory())
    if "<locals>" in cls.__qualname__ or cls.__module__ == "__main__":
        raise CheckSkipped("its class is not importable by a fresh process")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = await anyio.run_process(
        [sys.executable, "-c", _BLOCK_IMPORTS, ",".join(missing), cls.__module__, cls.__qualname__],
        env=env,
        check=False,
    )
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise CheckFailed(f"with {list(missing)} missing, importing {cls.__module__} failed: {' '.join(tail)}")


#: the kernel refuses a plugin whose hooks fail these, so checks that start it need them
_HOOKS: Final = ("hooks.known", "hooks.kind")


@check("lifecycle.start_stop", "start, stop, start again and a second stop are clean", needs=_HOOKS)
async def _start_stop(subject: Subject) -> None:
    plugin = subject.factory()
    name = subject.manifest.name
    for round_ in (1, 2):
        async with _kernel(subject, plugin) as kernel:
            _must_run(kernel, name, f"start #{round_}")
        info = _state(kernel, name)
        if info.state is not PluginState.STOPPED:
            raise CheckFailed(f"stop #{round_} did not reach stopped: {info.last_error}")
    try:
        await plugin.stop()
    except Exception as exc:
        raise CheckFailed(f"stop() called on a stopped plugin raised {type(exc).__name__}: {exc}") from None


@check("lifecycle.no_leaks", "no tasks, threads or file descriptors are left after stop", needs=_HOOKS)
async def _no_leaks(subject: Subject) -> None:
    before = _Snapshot.take()
    plugin = subject.factory()
    async with _kernel(subject, plugin) as kernel:
        _must_run(kernel, subject.manifest.name)
        await _exercise(kernel, subject, plugin)
    left = await before.left_since()
    if left:
        raise CheckFailed(f"left after stop: {left}")


@check("services.declared", "it asks only for services it declares", needs=_HOOKS)
async def _services_declared(subject: Subject) -> None:
    plugin = subject.factory()
    async with _kernel(subject, plugin) as kernel:
        record = _record(kernel, subject.manifest.name)
        if _state(kernel, subject.manifest.name).state is PluginState.RUNNING:
            await _exercise(kernel, subject, plugin)
        refused = list(record.refused_services)
    if refused:
        raise CheckFailed(
            f"asked for services {sorted(set(refused))} that are not in requires or optional "
            f"{list(subject.manifest.requires + subject.manifest.optional)}"
        )


def _protocol_members(protocol: type) -> dict[str, object]:
    members: dict[str, object] = {}
    for klass in reversed(protocol.__mro__):
        if klass is object or klass.__module__ == "typing":
            continue
        for name in getattr(klass, "__annotations__", {}):
            if not name.startswith("_"):
                members[name] = None
        for name, value in vars(klass).items():
            if not name.startswith("_"):
                members[name] = value
    return members


def _accepts(implementation: Callable[..., Any], declared: Callable[..., Any]) -> str | None:
    """Why ``implementation`` cannot be called the way ``declared`` may be, or None."""
    try:
        ours = inspect.signature(implementation).parameters
        theirs = inspect.signature(declared).parameters
    except (TypeError, ValueError):
        return None
    var_kw = any(p.kind is p.VAR_KEYWORD for p in ours.values())
    var_pos = any(p.kind is p.VAR_POSITIONAL for p in ours.values())
    for param in theirs.values():
        if param.name == "self":
            continue
        if param.kind is param.VAR_KEYWORD and not var_kw:
            return "does not take **kwargs"
        if param.kind is param.VAR_POSITIONAL and not var_pos:
            return "does not take *args"
        if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY) and param.name not in ours and not var_kw:
            return f"has no parameter {param.name!r}"
    required = [
        p.name
        for p in ours.values()
        if p.default is p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in theirs
    ]
    if required:
        return f"requires parameters {required} the Protocol does not pass"
    return None


@check("services.protocols", "the services it provides satisfy their SDK Protocols", needs=_HOOKS)
async def _services_protocols(subject: Subject) -> None:
    typed = [name for name in subject.manifest.provides if name in SERVICE_PROTOCOLS]
    if not typed:
        raise CheckSkipped(
            "provides no service with an SDK Protocol"
            + (f" ({list(subject.manifest.provides)} are its own)" if subject.manifest.provides else "")
        )
    problems = []
    async with _kernel(subject, subject.factory()) as kernel:
        _must_run(kernel, subject.manifest.name)
        provided = _record(kernel, subject.manifest.name).provided
        for name in typed:
            protocol = SERVICE_PROTOCOLS[name]
            service = provided.get(name)
            if service is None:
                problems.append(f"{name}: declared in provides but not provided during start")
                continue
            if isinstance(service, PerConsumer):
                # What consumers get is the factory's product: check a view made for a stranger.
                try:
                    service = service.factory(Consumer("conformance.consumer", Permissions()))
                except Exception as exc:
                    problems.append(f"{name}: its PerConsumer factory raised {type(exc).__name__}: {exc}")
                    continue
            for member, declared in _protocol_members(protocol).items():
                if not hasattr(service, member):
                    problems.append(f"{name}: no {member!r} ({protocol.__name__})")
                    continue
                if not callable(declared) or isinstance(declared, property):
                    continue
                actual = getattr(service, member)
                if inspect.iscoroutinefunction(declared) != inspect.iscoroutinefunction(actual):
                    problems.append(
                        f"{name}.{member} must be {'async' if inspect.iscoroutinefunction(declared) else 'sync'}"
                    )
                    continue
                why = _accepts(actual, declared)
                if why:
                    problems.append(
                        f"{name}.{member} {why} ({protocol.__name__}.{member}{inspect.signature(declared)})"
                    )
    if problems:
        raise CheckFailed("; ".join(problems))


@check("operations.callable", "every operation answers its example args through kernel.invoke", needs=_HOOKS)
async def _operations_callable(subject: Subject) -> None:
    async with _kernel(subject, subject.factory()) as kernel:
        _must_run(kernel, subject.manifest.name)
        mine = [op for op in kernel.operations.values() if op.plugin == subject.manifest.name]
        if not mine:
            raise CheckSkipped("registers no operation")
        untested = [op.name for op in mine if op.example_args is None]
        for op in mine:
            if op.example_args is not None:
                try:
                    await kernel.invoke(op.name, dict(op.example_args), principal=subject.principal)
                except Exception as exc:
                    raise CheckFailed(
                        f"{op.name}({dict(op.example_args)}) raised {type(exc).__name__}: {exc}"
                    ) from None
    if len(untested) == len(mine):
        raise CheckSkipped(f"no operation has example_args: {untested}")


@check("permissions.used", "with the guard recording, it uses only the permissions it asks for", needs=_HOOKS)
async def _permissions_used(subject: Subject) -> None:
    plugin = subject.factory()
    name = subject.manifest.name
    async with _kernel(subject, plugin, _config(subject, guard="record")) as kernel:
        _must_run(kernel, name, "started with exactly the permissions it asks for")
        await _exercise(kernel, subject, plugin)
    denied = kernel.guard.denied(name)
    if denied:
        used = sorted({f"{event.permission} ({event.event})" for event in denied})
        raise CheckFailed(
            f"used permissions it does not ask for: {used}; add them to its permissions "
            f"(asked: {list(subject.manifest.permissions)})"
        )


@check("cancellation.start", "cancelled anywhere in start, it leaves nothing behind and starts again", needs=_HOOKS)
async def _cancel_start(subject: Subject) -> None:
    name = subject.manifest.name
    for checkpoints in range(500):
        before = _Snapshot.take()
        kernel = _kernel(subject, subject.factory())
        started = anyio.Event()

        async def run(kernel: Any = kernel, started: anyio.Event = started) -> None:
            async with kernel:
                started.set()
                await anyio.sleep_forever()

        async with anyio.create_task_group() as group:
            group.start_soon(run)
            for _ in range(checkpoints):
                await anyio.lowlevel.checkpoint()
                if started.is_set():
                    break
            group.cancel_scope.cancel()
        reached = _state(kernel, name).state
        left = await before.left_since()
        if left:
            raise CheckFailed(
                f"cancelled after {checkpoints} scheduling points of start ({reached.value}): left {left}"
            )
        if started.is_set():
            break
    else:
        raise CheckFailed("start did not finish within 500 scheduling points")
    async with _kernel(subject, subject.factory()) as kernel:
        _must_run(kernel, name, "start after the cancelled ones")


async def _cancel_each(label: str, call: Callable[[], Any], problems: list[str], limit: int = 200) -> None:
    """Run ``call`` again and again, cancelling it after 0, 1, 2, ... scheduling points until it completes."""
    for checkpoints in range(limit):
        done = False

        async def run() -> None:
            nonlocal done
            with contextlib.suppress(Exception):
                await call()
            done = True

        async with anyio.create_task_group() as group:
            group.start_soon(run)
            for _ in range(checkpoints):
                await anyio.lowlevel.checkpoint()
                if done:
                    break
            group.cancel_scope.cancel()
        if done:
            return
    problems.append(f"{label} did not finish within {limit} scheduling points")


@check(
    "cancellation.calls",
    "cancelled during an operation or a hook, it leaves nothing behind and keeps serving",
    needs=_HOOKS,
)
async def _cancel_calls(subject: Subject) -> None:
    plugin = subject.factory()
    name = subject.manifest.name
    problems: list[str] = []
    async with _kernel(subject, plugin) as kernel:
        _must_run(kernel, name)
        ops = _operations(kernel, subject)
        hooks = [(h, m, a) for h, m, a in _callable_hooks(subject, plugin) if inspect.iscoroutinefunction(m)]
        if not ops and not hooks:
            raise CheckSkipped("no operation with example_args and no async hook the suite can call")
        failing = set(await _exercise(kernel, subject, plugin))  # warm: lazy set-up is not residue
        before = _Snapshot.take()
        for op in ops:
            await _cancel_each(op.name, functools.partial(kernel.invoke, op.name, dict(op.example_args)), problems)
        for hook, method, kwargs in hooks:
            await _cancel_each(f"hook {hook}", functools.partial(_call, method, kwargs), problems)
        left = await before.left_since()
        if left:
            problems.append(f"left after cancelled calls: {left}")
        errors = [e for e in await _exercise(kernel, subject, plugin) if e not in failing]
        if errors:
            problems.append(f"after cancelled calls: {'; '.join(errors)}")
        _must_run(kernel, name, "after cancelled calls")
    if problems:
        raise CheckFailed("; ".join(problems))


class _LoopWatch:
    """Measures the longest the event loop went without running a ticking task."""

    TICK: Final = 0.005

    def __init__(self) -> None:
        self.phase = "start"
        self.worst: tuple[float, str] = (0.0, "")

    async def tick(self) -> None:
        last = time.perf_counter()
        while True:
            await anyio.sleep(self.TICK)
            now = time.perf_counter()
            late = now - last - self.TICK
            if late > self.worst[0]:
                self.worst = (late, self.phase)
            last = now

    @contextlib.asynccontextmanager
    async def during(self, phase: str) -> AsyncIterator[None]:
        self.phase = phase
        try:
            yield
        finally:
            await anyio.sleep(self.TICK * 3)  # let the ticker see the end of this phase


@check(
    "loop.not_blocked",
    "start, calls and stop never block the event loop longer than the bound",
    core=False,
    needs=_HOOKS,
)
async def _loop_not_blocked(subject: Subject) -> None:
    watch = _LoopWatch()
    plugin = subject.factory()
    async with anyio.create_task_group() as group:
        group.start_soon(watch.tick)
        await anyio.sleep(watch.TICK * 2)
        kernel = _kernel(subject, plugin)
        async with contextlib.AsyncExitStack() as stack:
            async with watch.during("start"):
                await stack.enter_async_context(kernel)
            _must_run(kernel, subject.manifest.name)
            async with watch.during("operations and hooks"):
                await _exercise(kernel, subject, plugin)
            watch.phase = "stop"
        async with watch.during("stop"):
            pass
        group.cancel_scope.cancel()
    worst, phase = watch.worst
    if worst > subject.loop_bound:
        raise CheckFailed(
            f"the event loop was blocked for {worst * 1000:.0f} ms during {phase} "
            f"(bound {subject.loop_bound * 1000:.0f} ms): move blocking work to anyio.to_thread.run_sync"
        )


async def _outcome(kernel: Any, op: Any, principal: Principal | None) -> str | None:
    """How calling ``op`` with its example args went: None, or the error."""
    try:
        await kernel.invoke(op.name, dict(op.example_args), principal=principal)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@check("isolation.process", 'it works unchanged under isolation = "process"', core=False, needs=_HOOKS)
async def _isolation(subject: Subject) -> None:
    import sniffio

    if sniffio.current_async_library() != "asyncio":
        raise CheckSkipped("process isolation runs on asyncio only")
    if not sys.platform.startswith("linux"):
        raise CheckSkipped("process isolation is built for Linux")
    cls = type(subject.factory())
    if "<locals>" in cls.__qualname__ or cls.__module__ == "__main__":
        raise CheckSkipped("its class is not importable by a fresh process (defined in __main__ or a function)")
    name = subject.manifest.name
    async with _kernel(subject, cls()) as kernel:
        in_process = {op.name: await _outcome(kernel, op, subject.principal) for op in _operations(kernel, subject)}
    async with _kernel(subject, cls(), _config(subject, {"isolation": "process"})) as kernel:
        _must_run(kernel, name, "isolated start")
        for op in _operations(kernel, subject):
            isolated = await _outcome(kernel, op, subject.principal)
            if in_process.get(op.name) is None and isolated is not None:
                raise CheckFailed(f"isolated, {op.name} raised {isolated} (in-process it answers)")
    if _state(kernel, name).state is not PluginState.STOPPED:
        raise CheckFailed(f"isolated stop did not reach stopped: {_state(kernel, name).last_error}")
