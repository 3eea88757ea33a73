"""The conformance suite: one catalogue of checks that any plugin must pass.

Run it on a plugin class (or instance) with :func:`run_conformance`; it
returns a :class:`ConformanceReport` with one :class:`CheckResult` per check
(``pass``, ``fail`` with the reason, or ``skip`` with the reason).  Checks
are registered in :data:`CHECKS` by :func:`check`, so a check added in a
later SDK release reaches every plugin without the author editing anything.

A plugin may declare, as class attributes:

* ``conformance_settings`` — a mapping of example settings to start it with;
* ``conformance_opt_out`` — ``{check_id: reason}``; each opt-out must name a
  known check and carry a written reason, and ``strict=True`` forbids
  opting out of core checks.

Operations are called with the ``example_args`` they were registered with
(``ctx.register_operation(..., example_args={...})``); one without is
reported as skipped.

This is the first part of the suite: the pytest plugin, the
``orion-kernel conformance`` command and the remaining checks build on it.
"""

from __future__ import annotations

import enum
import gc
import os
import threading
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import Final

import anyio
import attrs

from plugin_sdk import Manifest
from plugin_sdk import ManifestError
from plugin_sdk import Plugin
from plugin_sdk import PluginState

__all__ = [
    "CHECKS",
    "Check",
    "CheckFailed",
    "CheckResult",
    "CheckSkipped",
    "ConformanceReport",
    "Status",
    "UnknownCheck",
    "check",
    "run_conformance",
    "run_conformance_async",
]


class Status(enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"


class CheckFailed(AssertionError):
    """Raised by a check: the plugin does not conform; the message says why."""


class CheckSkipped(Exception):
    """Raised by a check that cannot apply to this plugin; the message says why."""


class UnknownCheck(ValueError):
    """An opt-out names a check the suite does not have."""


@attrs.frozen
class CheckResult:
    id: str
    title: str
    status: Status
    reason: str = ""


@attrs.frozen
class ConformanceReport:
    plugin: str
    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        """No check failed."""
        return all(result.status is not Status.FAIL for result in self.results)

    def failures(self) -> list[CheckResult]:
        return [result for result in self.results if result.status is Status.FAIL]

    def by_id(self) -> dict[str, CheckResult]:
        return {result.id: result for result in self.results}


@attrs.frozen
class Subject:
    """What a check gets: how to make the plugin, its manifest and example settings."""

    factory: Callable[[], Plugin]
    manifest: Manifest
    settings: Mapping[str, Any]


CheckFunction = Callable[[Subject], Awaitable[None]]


@attrs.frozen
class Check:
    id: str
    title: str
    function: CheckFunction = attrs.field(repr=False)
    #: a core check may not be opted out of under ``strict``
    core: bool = True


#: every check, by id, in the order they run
CHECKS: Final[dict[str, Check]] = {}


def check(id: str, title: str, *, core: bool = True) -> Callable[[CheckFunction], CheckFunction]:
    """Register a check (``async def fn(subject) -> None``, raising CheckFailed/CheckSkipped)."""

    def register(function: CheckFunction) -> CheckFunction:
        if id in CHECKS:
            raise ValueError(f"check {id!r} is registered twice")
        CHECKS[id] = Check(id, title, function, core)
        return function

    return register


# -- running -------------------------------------------------------------------------------------


def _factory(target: type[Plugin] | Plugin) -> Callable[[], Plugin]:
    if isinstance(target, type):
        return target
    cls = type(target)
    try:
        cls()
    except TypeError:
        return lambda: target  # an instance whose class takes arguments: reuse it
    return cls


def _opt_outs(plugin: object, extra: Mapping[str, str] | None, strict: bool) -> dict[str, str]:
    declared = dict(getattr(plugin, "conformance_opt_out", {}) or {})
    declared.update(extra or {})
    for check_id, reason in declared.items():
        if check_id not in CHECKS:
            raise UnknownCheck(f"opt-out names no check {check_id!r} (known: {', '.join(CHECKS)})")
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError(f"opt-out of {check_id!r} needs a written reason")
        if strict and CHECKS[check_id].core:
            raise ValueError(f"strict: core check {check_id!r} cannot be opted out of ({reason})")
    return declared


async def run_conformance_async(
    target: type[Plugin] | Plugin,
    *,
    settings: Mapping[str, Any] | None = None,
    opt_out: Mapping[str, str] | None = None,
    strict: bool = False,
) -> ConformanceReport:
    """Run every check on ``target``; see :func:`run_conformance`."""
    factory = _factory(target)
    probe = factory()
    opted = _opt_outs(probe, opt_out, strict)
    try:
        manifest = Manifest.of(probe)
    except ManifestError as exc:
        results = [CheckResult("manifest.valid", CHECKS["manifest.valid"].title, Status.FAIL, str(exc))]
        results += [CheckResult(c.id, c.title, Status.SKIP, "the manifest is invalid") for c in CHECKS.values()][1:]
        return ConformanceReport(getattr(probe, "name", type(probe).__name__), tuple(results))
    examples = settings if settings is not None else getattr(probe, "conformance_settings", {}) or {}
    subject = Subject(factory, manifest, dict(examples))
    results = []
    for item in CHECKS.values():
        if item.id in opted:
            results.append(CheckResult(item.id, item.title, Status.SKIP, f"opted out: {opted[item.id]}"))
            continue
        try:
            with anyio.fail_after(60):
                await item.function(subject)
        except CheckFailed as exc:
            results.append(CheckResult(item.id, item.title, Status.FAIL, str(exc)))
        except CheckSkipped as exc:
            results.append(CheckResult(item.id, item.title, Status.SKIP, str(exc)))
        except Exception as exc:
            results.append(CheckResult(item.id, item.title, Status.FAIL, f"{type(exc).__name__}: {exc}"))
        else:
            results.append(CheckResult(item.id, item.title, Status.PASS))
    return ConformanceReport(manifest.name, tuple(results))


def run_conformance(
    target: type[Plugin] | Plugin,
    *,
    settings: Mapping[str, Any] | None = None,
    opt_out: Mapping[str, str] | None = None,
    strict: bool = False,
) -> ConformanceReport:
    """Run the whole catalogue on a plugin class (or instance) and report each check.

    :param settings: example settings (default: the plugin's ``conformance_settings``).
    :param opt_out: more ``{check_id: reason}`` opt-outs.
    :param strict: refuse opt-outs of core checks.
    :raises UnknownCheck: an opt-out names no check.
    :raises ValueError: an opt-out without a reason, or of a core check under ``strict``.
    """
    return anyio.run(lambda: run_conformance_async(target, settings=settings, opt_out=opt_out, strict=strict))


# -- the checks ------------------------------------------------------------------------------------


def _kernel(subject: Subject, plugin: Plugin, **entry: Any) -> Any:
    from kernel import Kernel

    config = {
        "kernel": {"sandbox": {"default": "allow"}, "start_timeout": 10.0, "stop_timeout": 10.0},
        "plugins": {subject.manifest.name: {"settings": dict(subject.settings), **entry}},
    }
    return Kernel(config, plugins=[plugin], hookspecs=list(subject.manifest.hookspecs), environ={}, entry_points=False)


def _needs_no_services(subject: Subject) -> None:
    if subject.manifest.requires:
        raise CheckSkipped(f"requires services {list(subject.manifest.requires)} that the suite does not provide")


@check("manifest.valid", "the manifest is valid")
async def _manifest_valid(subject: Subject) -> None:
    Manifest.of(subject.factory())


@check("config.defaults", "settings defaults structure and unstructure round-trip")
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


@check("config.rejects_bad", "a bad setting is a ConfigError naming its path")
async def _config_rejects_bad(subject: Subject) -> None:
    from kernel._config import structure_settings

    config = subject.manifest.Config
    try:
        attrs.resolve_types(config)
    except Exception:  # annotations this module cannot resolve: only real types are used below
        pass
    fields = [f for f in attrs.fields(config) if isinstance(f.type, type) and f.type in _WRONG]
    if not fields:
        raise CheckSkipped("no str, int, float or bool setting to give a wrong value to")
    field = fields[0]
    kind: type = field.type
    raw = {**subject.settings, field.name: _WRONG[kind]}
    _, issues = structure_settings(subject.manifest.name, subject.manifest.Config, raw)
    path = f"plugins.{subject.manifest.name}.settings.{field.name}"
    if not any(issue.path == path for issue in issues):
        raise CheckFailed(f"{field.name} = {_WRONG[kind]!r} was not refused with the path {path} (issues: {issues})")


@check("lifecycle.start_stop", "start, stop, start again and a second stop are clean")
async def _start_stop(subject: Subject) -> None:
    _needs_no_services(subject)
    plugin = subject.factory()
    for round_ in (1, 2):
        async with _kernel(subject, plugin) as kernel:
            info = kernel.plugins[subject.manifest.name]
            if info.state is not PluginState.RUNNING:
                raise CheckFailed(f"start #{round_} did not reach running: {info.last_error}")
        info = kernel.plugins[subject.manifest.name]
        if info.state is not PluginState.STOPPED:
            raise CheckFailed(f"stop #{round_} did not reach stopped: {info.last_error}")
    try:
        await plugin.stop()
    except Exception as exc:
        raise CheckFailed(f"stop() called on a stopped plugin raised {type(exc).__name__}: {exc}") from None


def _open_fds() -> set[int]:
    try:
        return {int(name) for name in os.listdir("/proc/self/fd")}
    except OSError:
        return set()


@check("lifecycle.no_leaks", "no tasks, threads or file descriptors are left after stop")
async def _no_leaks(subject: Subject) -> None:
    import asyncio

    _needs_no_services(subject)
    gc.collect()
    threads, fds = set(threading.enumerate()), _open_fds()
    tasks = set(asyncio.all_tasks())
    async with _kernel(subject, subject.factory()) as kernel:
        if kernel.plugins[subject.manifest.name].state is not PluginState.RUNNING:
            raise CheckSkipped(f"it did not start: {kernel.plugins[subject.manifest.name].last_error}")
    await anyio.sleep(0.05)
    gc.collect()
    left_tasks = {t for t in asyncio.all_tasks() - tasks if not t.done()}
    left_threads = {t for t in set(threading.enumerate()) - threads if t.is_alive() and not t.daemon}
    left_fds = _open_fds() - fds
    problems = []
    if left_tasks:
        problems.append(f"tasks {[t.get_name() for t in left_tasks]}")
    if left_threads:
        problems.append(f"threads {[t.name for t in left_threads]}")
    if left_fds:
        problems.append(f"file descriptors {sorted(left_fds)}")
    if problems:
        raise CheckFailed("left after stop: " + ", ".join(problems))


@check("operations.callable", "every operation answers its example args through kernel.invoke")
async def _operations(subject: Subject) -> None:
    _needs_no_services(subject)
    async with _kernel(subject, subject.factory()) as kernel:
        mine = [op for op in kernel.operations.values() if op.plugin == subject.manifest.name]
        if not mine:
            raise CheckSkipped("registers no operation")
        untested = [op.name for op in mine if op.example_args is None]
        for op in mine:
            if op.example_args is not None:
                try:
                    await kernel.invoke(op.name, dict(op.example_args))
                except Exception as exc:
                    raise CheckFailed(
                        f"{op.name}({dict(op.example_args)}) raised {type(exc).__name__}: {exc}"
                    ) from None
    if untested and len(untested) == len(mine):
        raise CheckSkipped(f"no operation has example_args: {untested}")
