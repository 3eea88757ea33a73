"""The conformance suite's machinery: the check registry, what a check is given, the runner."""

from __future__ import annotations

import enum
import functools
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any
from typing import ClassVar
from typing import Final

import anyio
import attrs

from plugin_sdk import Manifest
from plugin_sdk import ManifestError
from plugin_sdk import Plugin
from plugin_sdk import Principal


class Status(enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"


class CheckFailed(AssertionError):
    """Raised by a check: the plugin does not conform; the message says why."""


class CheckSkipped(Exception):
    """Raised by a check that cannot apply to this plugin; the message says why."""


class UnknownCheck(ValueError):
    """An opt-out (or ``only``) names a check the suite does not have."""


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

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``--json``: the plugin, ``ok`` and each check's id, status and reason."""
        return {
            "plugin": self.plugin,
            "ok": self.ok,
            "checks": [
                {"id": r.id, "title": r.title, "status": r.status.value, "reason": r.reason} for r in self.results
            ],
        }


def _principal(value: object) -> Principal | None:
    if value is None or isinstance(value, Principal):
        return value
    raise TypeError(f"conformance_principal must be a plugin_sdk.Principal or None, got {type(value).__name__}")


@attrs.frozen
class Subject:
    """What a check is given: how to make the plugin, its manifest, and what to run it with."""

    factory: Callable[[], Plugin]
    #: example settings (the plugin's ``conformance_settings`` unless given)
    settings: Mapping[str, Any]
    #: plugins started beside it to provide the services it requires (and theirs)
    providers: tuple[Callable[[], Plugin], ...] = ()
    #: ``{hook: kwargs}`` to call its hooks with (the plugin's ``conformance_hook_args``)
    hook_args: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    #: the longest the event loop may be blocked, in seconds
    loop_bound: float = 0.1
    #: settings the plugin says it refuses (its ``conformance_bad_settings``)
    bad_settings: tuple[Mapping[str, Any], ...] = ()
    #: who operations are invoked as (the plugin's ``conformance_principal``)
    principal: Principal | None = None

    @functools.cached_property
    def manifest(self) -> Manifest:
        """:raises ManifestError: the plugin's manifest is invalid."""
        return Manifest.of(self.factory())

    @functools.cached_property
    def known_specs(self) -> dict[str, Callable[..., Any]]:
        """Hook name -> spec function of every hookspec it may implement: the SDK's, its own,
        its providers' and every installed plugin's (read once per run)."""
        from plugin_sdk import hookspecs
        from plugin_sdk._markers import spec_handles

        namespaces: list[object] = [hookspecs, *self.manifest.hookspecs]
        namespaces += [s for factory in self.providers for s in Manifest.of(factory()).hookspecs]
        namespaces += [s for _, manifest in _installed() for s in manifest.hookspecs]
        return {spec.name: spec.function for namespace in namespaces for spec in spec_handles(namespace)}


CheckFunction = Callable[[Subject], Awaitable[None]]


@attrs.frozen
class Check:
    id: str
    title: str
    function: CheckFunction = attrs.field(repr=False)
    #: a core check may not be opted out of under ``strict``
    core: bool = True
    #: runs on an invalid manifest too (the manifest checks themselves)
    needs_manifest: bool = True
    #: checks that must pass first (else this one is skipped: its failure would only repeat theirs)
    needs: tuple[str, ...] = ()


#: every check, by id, in the order they run
CHECKS: Final[dict[str, Check]] = {}


def check(
    id: str, title: str, *, core: bool = True, needs_manifest: bool = True, needs: tuple[str, ...] = ()
) -> Callable[[CheckFunction], CheckFunction]:
    """Register a check: ``async def fn(subject) -> None`` raising :class:`CheckFailed` or
    :class:`CheckSkipped`; any other exception is a failure too.  ``needs``: checks (registered
    earlier) that must not fail for this one to run."""

    def register(function: CheckFunction) -> CheckFunction:
        if id in CHECKS:
            raise ValueError(f"check {id!r} is registered twice")
        unknown = [n for n in needs if n not in CHECKS]
        if unknown:
            raise ValueError(f"check {id!r} needs unregistered checks {unknown}")
        CHECKS[id] = Check(id, title, function, core, needs_manifest, needs)
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


def _installed() -> list[tuple[type[Plugin], Manifest]]:
    """Every installed plugin (the kernel's entry-point group) whose manifest loads."""
    from importlib.metadata import entry_points

    found = []
    for ep in entry_points(group="orion_kernel.plugins"):
        try:
            cls = ep.load()
            found.append((cls, Manifest.of(cls())))
        except Exception:  # an installed plugin that does not load offers nothing
            continue
    return found


def _providers(probe: Plugin, given: Iterable[type[Plugin] | Plugin] | None) -> tuple[Callable[[], Plugin], ...]:
    """Factories of plugins that provide what ``probe`` requires: the ones given, else the
    plugin's ``conformance_providers``, else installed plugins found by what they provide."""
    listed = given if given is not None else getattr(probe, "conformance_providers", None)
    if listed is not None:
        return tuple(_factory(p) for p in listed)
    try:
        needed = list(Manifest.of(probe).requires)
    except ManifestError:
        return ()
    if not needed:
        return ()
    offers: dict[str, Callable[[], Plugin]] = {}
    requires: dict[Callable[[], Plugin], tuple[str, ...]] = {}
    for cls, manifest in _installed():
        if manifest.name == probe.name:
            continue
        for service in manifest.provides:
            offers.setdefault(service, cls)
        requires[cls] = manifest.requires
    chosen: list[Callable[[], Plugin]] = []
    while needed:
        service = needed.pop(0)
        provider = offers.get(service)
        if provider is not None and provider not in chosen:
            chosen.append(provider)
            needed.extend(requires.get(provider, ()))
    return tuple(chosen)


def _skipped_all(name: str, reason: str, results: list[CheckResult], wanted: Iterable[str]) -> ConformanceReport:
    done = {r.id for r in results}
    results += [CheckResult(c, CHECKS[c].title, Status.SKIP, reason) for c in wanted if c not in done]
    return ConformanceReport(name, tuple(results))


async def run_conformance_async(
    target: type[Plugin] | Plugin,
    *,
    settings: Mapping[str, Any] | None = None,
    opt_out: Mapping[str, str] | None = None,
    strict: bool = False,
    only: Iterable[str] | None = None,
    providers: Iterable[type[Plugin] | Plugin] | None = None,
    loop_bound: float = 0.1,
) -> ConformanceReport:
    """Run the checks on ``target``; see :func:`run_conformance`."""
    factory = _factory(target)
    probe = factory()
    opted = _opt_outs(probe, opt_out, strict)
    wanted = list(CHECKS) if only is None else list(only)
    for check_id in wanted:
        if check_id not in CHECKS:
            raise UnknownCheck(f"no check {check_id!r} (known: {', '.join(CHECKS)})")
    examples = settings if settings is not None else getattr(probe, "conformance_settings", {}) or {}
    subject = Subject(
        factory,
        dict(examples),
        _providers(probe, providers),
        dict(getattr(probe, "conformance_hook_args", {}) or {}),
        loop_bound,
        tuple(getattr(probe, "conformance_bad_settings", ()) or ()),
        _principal(getattr(probe, "conformance_principal", None)),
    )
    label = getattr(probe, "name", None) or type(probe).__name__
    results: list[CheckResult] = []
    outcome: dict[str, Status] = {}  # of every check run, reported or only needed by one that is

    async def status_of(check_id: str) -> Status:
        if check_id not in outcome:
            outcome[check_id] = (await _run_one(CHECKS[check_id], subject)).status
        return outcome[check_id]

    for check_id in wanted:
        item = CHECKS[check_id]
        if item.needs_manifest:
            try:
                subject.manifest  # noqa: B018 - validated once, cached
            except ManifestError:
                return _skipped_all(str(label), "the manifest is invalid", results, wanted)
        if item.id in opted:
            results.append(CheckResult(item.id, item.title, Status.SKIP, f"opted out: {opted[item.id]}"))
            continue
        failed = [need for need in item.needs if need not in opted and await status_of(need) is Status.FAIL]
        if failed:
            reason = f"the kernel would refuse it for what {', '.join(failed)} found"
            results.append(CheckResult(item.id, item.title, Status.SKIP, reason))
            outcome[item.id] = Status.SKIP
            continue
        result = await _run_one(item, subject)
        outcome[item.id] = result.status
        results.append(result)
    return ConformanceReport(str(label), tuple(results))


def _single(group: BaseExceptionGroup[Any]) -> BaseException:
    """The one error a task group wrapped (a check's own CheckFailed), or the group."""
    while isinstance(group, BaseExceptionGroup) and len(group.exceptions) == 1:
        group = group.exceptions[0]
    return group


async def _run_one(item: Check, subject: Subject) -> CheckResult:
    try:
        try:
            with anyio.fail_after(120):
                await item.function(subject)
        except BaseExceptionGroup as group:
            raise _single(group) from None
    except CheckFailed as exc:
        return CheckResult(item.id, item.title, Status.FAIL, str(exc))
    except CheckSkipped as exc:
        return CheckResult(item.id, item.title, Status.SKIP, str(exc))
    except TimeoutError:
        return CheckResult(item.id, item.title, Status.FAIL, "the check did not finish within 120 s")
    except Exception as exc:
        return CheckResult(item.id, item.title, Status.FAIL, f"{type(exc).__name__}: {exc}")
    return CheckResult(item.id, item.title, Status.PASS)


def run_conformance(
    target: type[Plugin] | Plugin,
    *,
    settings: Mapping[str, Any] | None = None,
    opt_out: Mapping[str, str] | None = None,
    strict: bool = False,
    only: Iterable[str] | None = None,
    providers: Iterable[type[Plugin] | Plugin] | None = None,
    loop_bound: float = 0.1,
) -> ConformanceReport:
    """Run the catalogue (or the checks in ``only``) on a plugin class or instance.

    :param settings: example settings (default: the plugin's ``conformance_settings``).
    :param opt_out: more ``{check_id: reason}`` opt-outs.
    :param strict: refuse opt-outs of core checks.
    :param only: run just these check ids, in this order.
    :param providers: plugins to start beside it for the services it requires
        (default: its ``conformance_providers``, else installed plugins that provide them).
    :param loop_bound: the longest, in seconds, the plugin may block the event loop.
    :raises UnknownCheck: an opt-out or ``only`` names no check.
    :raises ValueError: an opt-out without a reason, or of a core check under ``strict``.
    """
    return anyio.run(
        functools.partial(
            run_conformance_async,
            target,
            settings=settings,
            opt_out=opt_out,
            strict=strict,
            only=only,
            providers=providers,
            loop_bound=loop_bound,
        )
    )


class PluginConformance:
    """Inherit it in a test module to run the whole suite on a plugin, one test per check::

        class TestMyPlugin(PluginConformance):
            plugin = MyPlugin

    The ``conformance_check`` parameter is generated by the pytest plugin
    this distribution registers (``pytest11``), from :data:`CHECKS`: a check
    added in a later SDK release becomes a new test with no edit.  Optional
    class attributes: ``settings``, ``opt_out`` (``{check_id: reason}``),
    ``strict``, ``providers``, ``loop_bound``.
    """

    plugin: ClassVar[type[Plugin] | Plugin]
    settings: ClassVar[Mapping[str, Any] | None] = None
    opt_out: ClassVar[Mapping[str, str] | None] = None
    strict: ClassVar[bool] = False
    providers: ClassVar[Iterable[type[Plugin] | Plugin] | None] = None
    loop_bound: ClassVar[float] = 0.1

    def test_conformance(self, conformance_check: str) -> None:
        import pytest

        report = run_conformance(
            self.plugin,
            settings=self.settings,
            opt_out=self.opt_out,
            strict=self.strict,
            only=[conformance_check],
            providers=self.providers,
            loop_bound=self.loop_bound,
        )
        result = report.by_id()[conformance_check]
        if result.status is Status.FAIL:
            pytest.fail(f"{report.plugin}: {result.id} ({result.title}): {result.reason}", pytrace=False)
        if result.status is Status.SKIP:
            pytest.skip(f"{result.id}: {result.reason}")
