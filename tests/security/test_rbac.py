"""The ``rbac`` plugin: policy grammar and checks, decisions, the middleware, the authorize hook,
reloads, the explain operation and ``orion-kernel rbac check``.

Every end-to-end test runs a real ``Kernel`` with small test plugins: ``Tools``
(operations, and a TRANSFORM middleware that sees ``inv.metadata["authz"]``),
``Gate`` (an AUTHENTICATE middleware turning an ``as`` argument into a
principal), ``FakeAudit`` (the ``audit`` service) and ``Vetoer`` (a third-party
``authorize`` implementer granted ``hook:authorize``).
"""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from collections.abc import Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from typing import ClassVar

import anyio
import anyio.lowlevel
import orjson
import pytest

from builtin_plugins.security.rbac import RELOADED
from builtin_plugins.security.rbac import PatternError
from builtin_plugins.security.rbac import Policy
from builtin_plugins.security.rbac import Rbac
from builtin_plugins.security.rbac import RbacSettings
from builtin_plugins.security.rbac import build_policy
from builtin_plugins.security.rbac import parse_pattern
from builtin_plugins.security.rbac._cli import render
from kernel import Kernel
from kernel import ReloadError
from kernel._cli import main
from kernel._config import structure_settings
from plugin_sdk import OPERATOR
from plugin_sdk import AuditVerification
from plugin_sdk import Authorizer
from plugin_sdk import CallNext
from plugin_sdk import ConfigError
from plugin_sdk import Credentials
from plugin_sdk import Decision
from plugin_sdk import InvalidArguments
from plugin_sdk import Invocation
from plugin_sdk import PermissionDenied
from plugin_sdk import Phase
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginState
from plugin_sdk import Principal
from plugin_sdk import hookimpl
from plugin_sdk.testing import PluginConformance

pytestmark = pytest.mark.anyio

CANARY = "s3cr3t-canary-9f2b1c"

POLICY: dict[str, Any] = {
    "roles": {
        "viewer": {"allow": ["invoke:tools.*"], "deny": ["tools.secret"]},
        "analyst": {"inherits": ["viewer"], "allow": ["reports.*"], "deny": ["invoke:tools.delete*"]},
        "admin": {"allow": ["*"]},
        "guest": {"allow": ["tools.search"]},
    },
    "principals": {"carol": ["admin"]},
    "anonymous_roles": ["guest"],
}


def policy(settings: Mapping[str, Any] | None = None) -> Policy:
    structured, issues = structure_settings("rbac", RbacSettings, dict(POLICY if settings is None else settings))
    assert not issues, issues
    return build_policy(structured)


def issues(settings: Mapping[str, Any]) -> list[str]:
    _, found = structure_settings("rbac", RbacSettings, dict(settings))
    return [str(issue) for issue in found]


BOB = Principal("bob", roles=("analyst",))
EVE = Principal("eve", roles=("viewer",), claims={"token": CANARY})


# -- test plugins --------------------------------------------------------------------------------


class Tools(Plugin):
    """Operations to authorize, and a middleware after AUTHORIZE that keeps what it saw."""

    name = "tools"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.seen: list[Decision] = []

    async def start(self, ctx: PluginContext[Any]) -> None:
        for op in ("tools.search", "tools.delete", "tools.secret", "reports.daily", "admin.drop"):
            ctx.register_operation(op, self.handle)
        ctx.register_middleware(self.after_authorize, phase=Phase.TRANSFORM)

    async def handle(self, inv: Invocation) -> str:
        self.calls.append(inv.operation)
        return f"{inv.operation} done"

    async def after_authorize(self, inv: Invocation, call_next: CallNext) -> Any:
        self.seen.append(inv.metadata["authz"])
        return await call_next(inv)


class Gate(Plugin):
    """An AUTHENTICATE-phase middleware: ``args["as"]`` names a principal of its table."""

    name = "gate"
    people: Mapping[str, Principal] = {"bob": BOB, "eve": EVE, "carol": Principal("carol")}

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.register_middleware(self.authenticate, phase=Phase.AUTHENTICATE)

    async def authenticate(self, inv: Invocation, call_next: CallNext) -> Any:
        name = inv.args.get("as")
        if name is not None:
            inv.principal = self.people[name]
        return await call_next(inv)


class FakeAudit(Plugin):
    """The ``audit`` service, keeping entries in a list."""

    name = "fake_audit"
    provides = ("audit",)

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.provide("audit", self)

    async def record(
        self, action: str, *, actor: str | None, outcome: str, details: Mapping[str, Any] | None = None
    ) -> int:
        self.entries.append({"action": action, "actor": actor, "outcome": outcome, "details": dict(details or {})})
        return len(self.entries)

    async def verify(self) -> AuditVerification:
        return AuditVerification(ok=True, entries=len(self.entries))


class Vetoer(Plugin):
    """A third-party plugin taking part in decisions through the sensitive ``authorize`` hook."""

    name = "vetoer"
    permissions: ClassVar[tuple[str, ...]] = ("hook:authorize",)

    def __init__(
        self, *, deny: frozenset[str] = frozenset(), allow: frozenset[str] = frozenset(), mode: str = "decide"
    ) -> None:
        self.deny, self.allow, self.mode = set(deny), set(allow), mode
        self.asked: list[tuple[str | None, str]] = []
        self.gate: anyio.Event | None = None
        self.waiting = anyio.Event()

    @hookimpl
    async def authorize(self, principal: Principal | None, action: str) -> Decision | None:
        self.asked.append((principal.id if principal else None, action))
        if self.gate is not None and action == "invoke:tools.search":
            self.waiting.set()
            await self.gate.wait()
        if self.mode == "fail" and not action.startswith("invoke:rbac."):
            raise RuntimeError(f"authorize broke {CANARY}")
        if self.mode == "hang":
            await anyio.sleep(10)
        if self.mode == "garbage":
            return "yes"  # type: ignore[return-value]
        if action in self.deny:
            return Decision(False, action, "business-hours", "outside business hours")
        if action in self.allow:
            return Decision(True, action, "on-call")
        return None


class Unasked(Vetoer):
    """Implements authorize without asking for hook:authorize."""

    name = "unasked"
    permissions: ClassVar[tuple[str, ...]] = ()


def rbac_entry(settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"settings": dict(POLICY if settings is None else settings)}


@asynccontextmanager
async def running(
    settings: Mapping[str, Any] | None = None,
    *extra: object,
    plugins: Mapping[str, Any] | None = None,
    kernel: Mapping[str, Any] | None = None,
) -> AsyncIterator[Kernel]:
    config: dict[str, Any] = {"plugins": {"rbac": rbac_entry(settings), **(plugins or {})}}
    if kernel:
        config["kernel"] = dict(kernel)
    async with Kernel(config, plugins=[Rbac, Tools(), Gate(), *extra], environ={}, entry_points=False) as k:
        assert k.plugins["rbac"].state is PluginState.RUNNING, k.plugins["rbac"].last_error
        yield k


def tools_of(kernel: Kernel) -> Tools:
    plugin = kernel._lifecycle.records["tools"].plugin
    assert isinstance(plugin, Tools)
    return plugin


def rbac_of(kernel: Kernel) -> Rbac:
    plugin = kernel._lifecycle.records["rbac"].plugin
    assert isinstance(plugin, Rbac)
    return plugin


# -- the pattern grammar -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "action", "exact"),
    [
        ("invoke:tools.search", "invoke:tools.search", True),
        ("tools.search", "invoke:tools.search", True),
        ("tools.*", "invoke:tools.*", False),
        ("invoke:tools.?earch", "invoke:tools.?earch", False),
        ("*", "*", False),
        ("*:*", "*:*", False),
        ("secrets:db/password", "secrets:db/password", True),
    ],
)
def test_patterns_parse(text: str, action: str, exact: bool) -> None:
    pattern = parse_pattern(text)
    assert (pattern.text, pattern.action, pattern.exact) == (text, action, exact)


def test_glob_semantics() -> None:
    def matches(text: str, action: str) -> bool:
        pattern = parse_pattern(text)
        if pattern.exact:
            return pattern.action == action
        assert pattern.match is not None
        return pattern.match(action) is not None

    assert matches("tools.*", "invoke:tools.search")
    assert matches("tools.*", "invoke:tools.a.b")  # '*' crosses dots
    assert not matches("tools.*", "invoke:toolsx")
    assert not matches("tools.*", "other:tools.search")  # a bare glob is invoke only
    assert matches("*:tools.*", "other:tools.search")
    assert matches("*", "anything:at.all")
    assert matches("tools.?", "invoke:tools.a") and not matches("tools.?", "invoke:tools.ab")
    assert not matches("tools.search", "invoke:tools.searchx")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty pattern"),
        (" tools.*", "white space"),
        ("invoke:", "nothing after 'invoke:'"),
        ("Tools.Search", "not a glob of operation names"),
        ("invok:tools.*", "did you mean 'invoke'?"),
        ("Invoke:tools.*", "is not a lowercase word"),
        ("tools.[ab]", "not a glob of operation names"),
        ("secrets:a b", "white space"),
        ("secrets:a{b}", "characters an action cannot have"),
    ],
)
def test_bad_patterns_are_refused_with_a_reason(text: str, why: str) -> None:
    with pytest.raises(PatternError) as caught:
        parse_pattern(text)
    assert why in str(caught.value)


# -- config checks ------------------------------------------------------------------------------


def test_a_bad_pattern_is_a_config_error_at_its_index() -> None:
    found = issues({"roles": {"analyst": {"allow": ["tools.*", "invoke:", "Tools.X"]}}})
    assert found == [
        "plugins.rbac.settings.roles.analyst.allow: [1] 'invoke:': nothing after 'invoke:' "
        "(e.g. 'invoke:tools.*', or 'invoke:*')",
        "plugins.rbac.settings.roles.analyst.allow: [2] 'Tools.X': 'Tools.X' is not a glob of operation names "
        "(lowercase letters, digits, '_' and '.', with '*' and '?' as wildcards)",
    ]


def test_unknown_roles_are_errors_with_did_you_mean() -> None:
    base = {"viewer": {"allow": ["tools.*"]}}
    assert issues({"roles": {**base, "analyst": {"inherits": ["viwer"]}}}) == [
        "plugins.rbac.settings.roles: analyst.inherits[0]: unknown role 'viwer' (did you mean 'viewer'?)"
    ]
    assert issues({"roles": base, "principals": {"bob@example.org": ["viewr"]}}) == [
        "plugins.rbac.settings.principals: ['bob@example.org'][0]: unknown role 'viewr' (did you mean 'viewer'?)"
    ]
    assert issues({"roles": base, "default_roles": ["viewers"], "anonymous_roles": ["zzz"]}) == [
        "plugins.rbac.settings.default_roles: [0] unknown role 'viewers' (did you mean 'viewer'?)",
    ]  # attrs stops at the first field whose validator fails; the next check reports the next one
    assert issues({"roles": base, "anonymous_roles": ["zzz"]}) == [
        "plugins.rbac.settings.anonymous_roles: [0] unknown role 'zzz' (known: viewer)"
    ]


def test_an_inheritance_cycle_is_an_error_naming_it() -> None:
    found = issues(
        {
            "roles": {
                "a": {"inherits": ["b"]},
                "b": {"inherits": ["c"]},
                "c": {"inherits": ["a"]},
                "d": {"inherits": ["d"]},
            }
        }
    )
    assert found == [
        "plugins.rbac.settings.roles: a.inherits: inheritance cycle: a -> b -> c -> a",
        "plugins.rbac.settings.roles: d.inherits: inheritance cycle: d -> d",
    ]


def test_other_setting_errors_name_their_path() -> None:
    assert issues({"roles": {"a": {"allows": ["x"]}}}) == [
        "plugins.rbac.settings.roles.a.allows: unknown key (did you mean 'allow'?)"
    ]
    assert issues({"roles": {"a": {"allow": "tools.*"}}}) == [
        "plugins.rbac.settings.roles.a.allow: expected a list, got 'tools.*'"
    ]
    assert issues({"cache_size": -1}) == [
        "plugins.rbac.settings.cache_size: 'cache_size' must be >= 0 (0 turns the decision cache off), got -1"
    ]
    assert issues({"roles": {"bad name": {}}}) == [
        "plugins.rbac.settings.roles: ['bad name']: 'bad name' is not a role name (letters, digits and _ . : @ / -, "
        "not starting with a punctuation mark, at most 128 characters)"
    ]


async def test_a_bad_policy_does_not_start_the_kernel() -> None:
    config = {"plugins": {"rbac": rbac_entry({"roles": {"x": {"deny": ["invoke:"]}}})}}
    with pytest.raises(ConfigError) as caught:
        async with Kernel(config, plugins=[Rbac, Tools()], environ={}, entry_points=False):
            pass
    assert "plugins.rbac.settings.roles.x.deny: [0] 'invoke:'" in str(caught.value)


# -- decisions ---------------------------------------------------------------------------------


def test_deny_overrides_allow_through_inheritance() -> None:
    p = policy()
    allowed = p.decide(BOB, "invoke:tools.search")
    assert allowed == Decision(
        True,
        "invoke:tools.search",
        "roles.viewer.allow[0] = 'invoke:tools.*'",
        "analyst <- inherits viewer: allow invoke:tools.*",
    )
    denied = p.decide(BOB, "invoke:tools.delete")
    assert (denied.allowed, denied.rule) == (False, "roles.analyst.deny[0] = 'invoke:tools.delete*'")
    inherited_deny = p.decide(BOB, "invoke:tools.secret")  # viewer's deny reaches analyst
    assert (inherited_deny.allowed, inherited_deny.rule) == (False, "roles.viewer.deny[0] = 'tools.secret'")
    assert inherited_deny.reason == "analyst <- inherits viewer: deny invoke:tools.secret"
    # A deny anywhere wins, even over an admin's '*'.
    both = Principal("x", roles=("admin", "viewer"))
    assert p.decide(both, "invoke:tools.secret").allowed is False
    assert p.decide(both, "invoke:admin.drop").rule == "roles.admin.allow[0] = '*'"


def test_no_rule_is_a_deny_with_an_empty_rule() -> None:
    decision = policy().decide(Principal("nobody"), "invoke:tools.search")
    assert decision == Decision(
        False, "invoke:tools.search", "", "no rule grants invoke:tools.search (effective roles: none)"
    )


def test_bare_actions_mean_invoke() -> None:
    assert policy().decide(BOB, "tools.search").action == "invoke:tools.search"
    assert policy().decide(BOB, "tools.search").allowed


def test_anonymous_default_and_bound_roles() -> None:
    p = policy({**POLICY, "default_roles": ["viewer"]})
    assert p.decide(None, "invoke:tools.search").allowed  # anonymous_roles = guest
    assert not p.decide(None, "invoke:tools.delete").allowed
    anonymous = Principal("anon-1", kind="anonymous", roles=("admin",))
    assert not p.decide(anonymous, "invoke:admin.drop").allowed  # anonymous: anonymous_roles only
    assert p.decide(Principal("dave"), "invoke:tools.delete").allowed  # default viewer
    assert p.decide(Principal("carol"), "invoke:admin.drop").rule == "roles.admin.allow[0] = '*'"  # bound by id
    reach = p.explain(Principal("carol"), "invoke:admin.drop").effective
    assert [(r.role, r.origin) for r in reach] == [("admin", "principals.carol"), ("viewer", "default_roles")]


def test_roles_the_policy_does_not_define_grant_nothing() -> None:
    explanation = policy().explain(Principal("x", roles=("ghost", "guest")), "invoke:tools.search")
    assert explanation.decision.allowed
    assert explanation.unknown == ("ghost",)


def test_operators_are_trusted_unless_told_otherwise() -> None:
    decision = policy().decide(OPERATOR, "invoke:anything.at.all")
    assert (decision.allowed, decision.rule) == (True, "trust_operator")
    strict = policy({**POLICY, "trust_operator": False})
    assert strict.decide(OPERATOR, "invoke:anything.at.all").allowed is False
    assert (
        policy({**POLICY, "trust_operator": False, "principals": {"cli": ["admin"]}})
        .decide(OPERATOR, "invoke:x")
        .allowed
    )


def test_explain_gives_the_trail_and_every_matching_rule() -> None:
    explanation = policy().explain(Principal("x", roles=("analyst", "admin")), "invoke:tools.delete")
    assert explanation.decision.rule == "roles.analyst.deny[0] = 'invoke:tools.delete*'"
    assert explanation.trail == "analyst: deny invoke:tools.delete*"
    assert [m.trail() for m in explanation.matches] == [
        "analyst: deny invoke:tools.delete*",
        "analyst <- inherits viewer: allow invoke:tools.*",
        "admin: allow *",
    ]


def test_decisions_are_cached_and_agree_with_uncached_ones() -> None:
    p = policy()
    for _ in range(3):
        assert p.decide(BOB, "invoke:tools.search") == p.decide_uncached(BOB, "invoke:tools.search")
    info = p.cache_info()
    assert (info.hits, info.misses) == (2, 1)
    # The principal's id is only part of the key when it has bindings: one entry serves all.
    p.decide(Principal("other", roles=("analyst",)), "invoke:tools.search")
    assert p.cache_info().hits == 3
    assert policy({**POLICY, "cache_size": 2}).cache_info().maxsize == 2
    uncached = policy({**POLICY, "cache_size": 0})
    uncached.decide(BOB, "invoke:tools.search")
    assert uncached.cache_info().currsize == 0


def test_the_authorizer_service_satisfies_the_protocol() -> None:
    rbac = Rbac()
    assert isinstance(rbac._authorizer, Authorizer)
    assert "secret" not in repr(rbac._authorizer) and repr(rbac.policy).startswith("<rbac Policy")


# -- the middleware, end to end -----------------------------------------------------------------


async def test_allowed_calls_pass_and_denied_ones_name_the_rule() -> None:
    async with running() as kernel:
        tools = tools_of(kernel)
        assert await kernel.invoke("tools.search", principal=BOB) == "tools.search done"
        assert tools.seen[-1].rule == "roles.viewer.allow[0] = 'invoke:tools.*'"  # inv.metadata["authz"]
        with pytest.raises(PermissionDenied) as caught:
            await kernel.invoke("tools.delete", principal=BOB)
        assert str(caught.value) == (
            "principal 'bob' may not invoke:tools.delete: denied by roles.analyst.deny[0] = 'invoke:tools.delete*' "
            "(analyst: deny invoke:tools.delete*)"
        )
        with pytest.raises(
            PermissionDenied, match=r"^an anonymous caller may not invoke:reports.daily: no rule grants"
        ):
            await kernel.invoke("reports.daily")
        assert tools.calls == ["tools.search"]  # the denied handlers never ran


async def test_principals_from_an_authenticate_middleware() -> None:
    async with running() as kernel:
        assert await kernel.invoke("reports.daily", {"as": "bob"}) == "reports.daily done"
        assert await kernel.invoke("admin.drop", {"as": "carol"}) == "admin.drop done"  # bound to admin by id
        with pytest.raises(PermissionDenied, match=r"principal 'eve' may not invoke:reports\.daily"):
            await kernel.invoke("reports.daily", {"as": "eve"})


async def test_a_denial_leaves_the_decision_for_audit() -> None:
    seen: list[Decision] = []

    class Observer(Plugin):
        name = "observer"

        async def start(self, ctx: PluginContext[Any]) -> None:
            ctx.register_middleware(self.outer, phase=Phase.OBSERVE)

        async def outer(self, inv: Invocation, call_next: CallNext) -> Any:
            try:
                return await call_next(inv)
            finally:
                seen.append(inv.metadata["authz"])

    async with running(None, Observer()) as kernel:
        with pytest.raises(PermissionDenied):
            await kernel.invoke("tools.delete", principal=BOB)
    assert seen[0].allowed is False and seen[0].rule.startswith("roles.analyst.deny[0]")


async def test_enabled_from_config_alone_through_the_entry_point() -> None:
    config = {"plugins": {"rbac": {"enabled": True, **rbac_entry()}}}
    async with Kernel(config, plugins=[Tools()], environ={}) as kernel:
        assert kernel.plugins["rbac"].state is PluginState.RUNNING
        assert await kernel.invoke("tools.search", principal=BOB) == "tools.search done"
        with pytest.raises(PermissionDenied):
            await kernel.invoke("tools.delete", principal=BOB)


async def test_other_plugins_decide_through_the_authorizer_service() -> None:
    answers: list[Decision] = []

    class Consumer(Plugin):
        name = "consumer"
        requires = ("authorizer",)

        async def start(self, ctx: PluginContext[Any]) -> None:
            authorizer: Authorizer = ctx.service("authorizer")
            answers.append(authorizer.decide(BOB, "invoke:reports.daily"))
            answers.append(authorizer.decide(BOB, "secrets:read"))

    async with running(None, Consumer()):
        pass
    assert [a.allowed for a in answers] == [True, False]


async def test_no_secret_reaches_messages_decisions_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(None, Vetoer(mode="fail"), plugins={"vetoer": {"permissions": ["hook:authorize"]}}) as kernel:
        texts: list[str] = []
        for op in ("tools.search", "tools.secret"):
            with pytest.raises(PermissionDenied) as caught:
                await kernel.invoke(op, principal=EVE, credentials=Credentials.api_key(CANARY))
            texts += [str(caught.value), repr(caught.value)]
        explained = await kernel.invoke(
            "rbac.explain", {"action": "tools.search", "principal": "eve", "roles": ["viewer"]}, principal=OPERATOR
        )
        texts += [orjson.dumps(explained).decode(), repr(tools_of(kernel).seen), repr(rbac_of(kernel).policy)]
    texts.append(caplog.text.replace(f"authorize broke {CANARY}", ""))  # the impl's own message, logged by the kernel
    assert not any(CANARY in text for text in texts)


# -- the authorize hook ------------------------------------------------------------------------


GRANTED = {"vetoer": {"permissions": ["hook:authorize"]}}


async def test_an_impl_denies_what_the_policy_allows_and_allows_what_no_rule_covers() -> None:
    vetoer = Vetoer(
        deny=frozenset({"invoke:tools.search"}), allow=frozenset({"invoke:reports.daily", "invoke:tools.delete"})
    )
    async with running(None, vetoer, plugins=GRANTED) as kernel:
        with pytest.raises(PermissionDenied) as caught:
            await kernel.invoke("tools.search", principal=EVE)  # the policy allows it
        assert str(caught.value) == (
            "principal 'eve' may not invoke:tools.search: denied by hook:authorize[vetoer] business-hours "
            "(outside business hours)"
        )
        assert await kernel.invoke("reports.daily", principal=EVE) == "reports.daily done"  # no rule: the impl grants
        assert tools_of(kernel).seen[-1] == Decision(
            True, "invoke:reports.daily", "hook:authorize[vetoer] on-call", "plugin 'vetoer' allowed it"
        )
        with pytest.raises(PermissionDenied, match=r"denied by roles.analyst.deny\[0\]"):
            await kernel.invoke("tools.delete", principal=BOB)  # a policy deny wins over the impl's allow
        assert ("bob", "invoke:tools.delete") not in vetoer.asked  # ... and the hook is not even asked
        assert ("eve", "invoke:tools.search") in vetoer.asked


@pytest.mark.parametrize(
    ("mode", "rule", "why"),
    [
        ("fail", "hook:authorize[vetoer] failed", "raised RuntimeError"),
        ("hang", "hook:authorize[vetoer] failed", "raised HookTimeout"),
        ("garbage", "hook:authorize[vetoer] invalid", "returned a str"),
    ],
)
async def test_a_failing_impl_counts_as_a_deny(mode: str, rule: str, why: str) -> None:
    kernel_settings = {"hook_timeouts": {"authorize": 0.05}, "quarantine_after": 0}
    async with running(None, Vetoer(mode=mode), plugins=GRANTED, kernel=kernel_settings) as kernel:
        with pytest.raises(PermissionDenied) as caught:
            await kernel.invoke("tools.search", principal=EVE)
    assert f"denied by {rule}" in str(caught.value) and why in str(caught.value)


async def test_a_quarantined_implementer_keeps_denying() -> None:
    async with running(None, Vetoer(mode="fail"), plugins=GRANTED, kernel={"quarantine_after": 2}) as kernel:
        for _ in range(2):
            with pytest.raises(PermissionDenied, match="failed"):
                await kernel.invoke("tools.search", principal=EVE)
        assert kernel.plugins["vetoer"].state is PluginState.QUARANTINED
        with pytest.raises(PermissionDenied, match=r"hook:authorize\[vetoer\] quarantined"):
            await kernel.invoke("tools.search", principal=EVE)


async def test_implementing_authorize_needs_the_grant() -> None:
    async with running(
        None, Vetoer(deny=frozenset({"invoke:tools.search"})), Unasked(deny=frozenset({"invoke:tools.search"}))
    ) as kernel:
        assert kernel.plugins["vetoer"].state is PluginState.FAILED
        assert 'permissions = ["hook:authorize"]' in (kernel.plugins["vetoer"].last_error or "")
        assert kernel.plugins["unasked"].state is PluginState.FAILED
        assert "does not ask for hook:authorize" in (kernel.plugins["unasked"].last_error or "")
        assert await kernel.invoke("tools.search", principal=EVE) == "tools.search done"  # neither takes part


async def test_without_implementers_the_hook_is_not_called(monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"plugins": {"rbac": rbac_entry(), "vetoer": {"enabled": False, "permissions": ["hook:authorize"]}}}
    vetoer = Vetoer(deny=frozenset({"invoke:tools.search"}))
    async with Kernel(config, plugins=[Rbac, Tools(), vetoer], environ={}, entry_points=False) as kernel:
        calls: list[str] = []
        real = kernel.hooks.acall_each

        async def spy(spec: Any, **kwargs: Any) -> Any:
            calls.append(spec.name)
            return await real(spec, **kwargs)

        monkeypatch.setattr(kernel.hooks, "acall_each", spy)
        for _ in range(3):
            await kernel.invoke("tools.search", principal=EVE)
        assert calls == []
        # A plugin implementing the hook starts: rbac hears of it and asks it from the next call on.
        config["plugins"]["vetoer"]["enabled"] = True
        report = await kernel.reload(config)
        assert report.started == ("vetoer",)
        with pytest.raises(PermissionDenied, match="hook:authorize"):
            await kernel.invoke("tools.search", principal=EVE)
        assert calls == ["authorize"]
        config["plugins"]["vetoer"]["enabled"] = False
        await kernel.reload(config)
        assert await kernel.invoke("tools.search", principal=EVE) == "tools.search done"
        assert calls == ["authorize"]


# -- reload ------------------------------------------------------------------------------------


def reload_config(settings: Mapping[str, Any], **plugins: Any) -> dict[str, Any]:
    return {"plugins": {"rbac": rbac_entry(settings), **plugins}}


async def test_reload_changes_decisions_live_and_is_audited() -> None:
    audit = FakeAudit()
    async with running(None, audit) as kernel:
        assert await kernel.invoke("tools.search", principal=BOB)
        old = rbac_of(kernel).policy
        tighter = {**POLICY, "roles": {**POLICY["roles"], "analyst": {"inherits": ["viewer"], "deny": ["tools.*"]}}}
        report = await kernel.reload(reload_config(tighter))
        assert report.reconfigured == ("rbac",)
        assert rbac_of(kernel).policy is not old  # a new policy, with a fresh cache
        with pytest.raises(PermissionDenied, match=r"roles.analyst.deny\[0\] = 'tools.\*'"):
            await kernel.invoke("tools.search", principal=BOB)
        # A bad new policy is refused before anything changes; the old one stays.
        with pytest.raises(ConfigError, match=r"unknown role 'viewr'"):
            await kernel.reload(reload_config({**POLICY, "default_roles": ["viewr"]}))
        with pytest.raises(PermissionDenied):
            await kernel.invoke("tools.search", principal=BOB)
    assert [(e["action"], e["outcome"], e["details"]["trigger"]) for e in audit.entries] == [
        (RELOADED, "ok", "reconfigure")
    ]
    assert audit.entries[0]["details"]["roles"] == 4


async def test_policy_file_is_merged_and_reread(tmp_path: Path) -> None:
    data = tmp_path / "data"
    file = data / "rbac" / "policy.toml"
    file.parent.mkdir(parents=True)
    file.write_text('[roles.auditor]\nallow = ["reports.*"]\n\n[principals]\neve = ["auditor"]\n')
    audit = FakeAudit()
    settings = {**POLICY, "policy_file": "policy.toml"}  # relative: in the plugin's data directory
    async with running(settings, audit, kernel={"data_dir": str(data)}) as kernel:
        assert await kernel.invoke("reports.daily", principal=EVE) == "reports.daily done"
        explained = await kernel.invoke(
            "rbac.explain", {"action": "reports.daily", "principal": "eve", "roles": ["viewer"]}, principal=OPERATOR
        )
        assert explained["rule"] == "policy.toml: roles.auditor.allow[0] = 'reports.*'"
        assert explained["trail"] == "auditor: allow invoke:reports.*"

        file.write_text('[roles.auditor]\ndeny = ["reports.*"]\n\n[principals]\neve = ["auditor"]\n')
        summary = await kernel.invoke("rbac.reload", principal=OPERATOR)
        assert summary["reloaded"] is True and summary["sources"] == ["settings", str(file)]
        with pytest.raises(PermissionDenied, match=r"policy.toml: roles.auditor.deny\[0\]"):
            await kernel.invoke("reports.daily", principal=EVE)

        # A broken file: the reload is refused with the file's path, the policy in force stays.
        file.write_text('[roles.auditor]\ndeny = ["reports.*"]\ninherit = ["viewr"]\n[principals]\neve = "auditor"\n')
        with pytest.raises(ConfigError) as caught:
            await kernel.invoke("rbac.reload", principal=OPERATOR)
        assert f"{file}: roles.auditor.inherit: unknown key (did you mean 'inherits'?)" in str(caught.value)
        assert f"{file}: principals.eve: expected a list of strings, got str" in str(caught.value)
        with pytest.raises(PermissionDenied):
            await kernel.invoke("reports.daily", principal=EVE)

        file.write_text('[roles.auditor]\ninherits = ["viewr"]\n')
        with pytest.raises(
            ConfigError, match=r"roles.auditor.inherits\[0\]: unknown role 'viewr' \(did you mean 'viewer'\?\)"
        ):
            await kernel.invoke("rbac.reload", principal=OPERATOR)
        file.write_text("not = [toml")
        with pytest.raises(ConfigError, match="not valid TOML"):
            await kernel.invoke("rbac.reload", principal=OPERATOR)

        # kernel.reload with the file broken: reconfigure() refuses, the reload rolls back.
        with pytest.raises(ReloadError, match="not valid TOML"):
            await kernel.reload(reload_config({**settings, "default_roles": ["viewer"]}))
        with pytest.raises(PermissionDenied):
            await kernel.invoke("reports.daily", principal=EVE)
    outcomes = [(e["outcome"], e["actor"], e["details"]["trigger"]) for e in audit.entries]
    assert outcomes[:4] == [
        ("ok", "cli", "rbac.reload"),
        ("error", "cli", "rbac.reload"),
        ("error", "cli", "rbac.reload"),
        ("error", "cli", "rbac.reload"),
    ]
    assert outcomes[4][0] == "error" and outcomes[4][2] == "reconfigure"


async def test_a_policy_file_elsewhere_is_asked_for_and_read_under_the_enforcing_guard(tmp_path: Path) -> None:
    """Outside the data directory the policy file is one of rbac's asks: granted, the guard lets it be
    read; not granted, rbac does not start and says which line grants it."""
    file = tmp_path / "etc" / "policy.toml"
    file.parent.mkdir()
    file.write_text('[roles.auditor]\nallow = ["reports.*"]\n\n[principals]\neve = ["auditor"]\n')
    entry = rbac_entry({**POLICY, "policy_file": str(file)})
    kernel_settings = {"data_dir": str(tmp_path / "data"), "sandbox": {"guard": "enforce"}}
    granted = {"kernel": kernel_settings, "plugins": {"rbac": {**entry, "permissions": [f"fs:read:{file.parent}"]}}}
    async with Kernel(granted, plugins=[Rbac, Tools()], environ={}, entry_points=False) as kernel:
        assert kernel.plugins["rbac"].state is PluginState.RUNNING, kernel.plugins["rbac"].last_error
        assert kernel.plugins["rbac"].effective[0] == f"fs:read:{file}"
        assert await kernel.invoke("reports.daily", principal=EVE) == "reports.daily done"
    ungranted = {"kernel": kernel_settings, "plugins": {"rbac": entry}}
    async with Kernel(ungranted, plugins=[Rbac], environ={}, entry_points=False) as kernel:
        error = kernel.plugins["rbac"].last_error
    assert error is not None and f'permissions = ["fs:read:{file}"]' in error


async def test_a_missing_policy_file_fails_the_start_with_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    entry = rbac_entry({**POLICY, "policy_file": str(missing)})
    config = {"plugins": {"rbac": {**entry, "permissions": [f"fs:read:{tmp_path}"]}}}
    async with Kernel(config, plugins=[Rbac], environ={}, entry_points=False) as kernel:
        assert kernel.plugins["rbac"].state is PluginState.FAILED
        assert f"plugins.rbac.settings.policy_file: cannot read '{missing}': No such file" in (
            kernel.plugins["rbac"].last_error or ""
        )


async def test_admin_operations_refuse_other_kinds() -> None:
    everyone = {**POLICY, "roles": {**POLICY["roles"], "guest": {"allow": ["rbac.*"]}}, "default_roles": ["guest"]}
    async with running(everyone) as kernel:
        with pytest.raises(PermissionDenied, match="an anonymous caller may not reload the rbac policy"):
            await kernel.invoke("rbac.reload")
        with pytest.raises(PermissionDenied, match="principal 'bob' of kind 'user' may not reload"):
            await kernel.invoke("rbac.reload", principal=BOB)
        with pytest.raises(PermissionDenied, match="may not explain another principal"):
            await kernel.invoke("rbac.explain", {"action": "x", "principal": "carol"}, principal=BOB)
        mine = await kernel.invoke("rbac.explain", {"action": "tools.search"}, principal=BOB)  # about itself: fine
        assert mine["allowed"] and mine["principal"] == {"id": "bob", "kind": "user", "roles": ["analyst"]}
        with pytest.raises(InvalidArguments):
            await kernel.invoke("rbac.explain", {"action": "x", "roles": ["admin"]}, principal=BOB)
        assert (await kernel.invoke("rbac.reload", principal=OPERATOR))["reloaded"]
    strict = {**POLICY, "trust_operator": False}
    async with running(strict) as kernel:
        with pytest.raises(PermissionDenied, match=r"principal 'cli' may not invoke:rbac\.reload: no rule grants"):
            await kernel.invoke("rbac.reload", principal=OPERATOR)  # the policy decides first


async def test_swapping_the_policy_is_safe_for_calls_in_flight() -> None:
    vetoer = Vetoer()
    vetoer.gate = anyio.Event()
    v1 = {**POLICY, "roles": {**POLICY["roles"], "viewer": {"allow": ["tools.search"]}}}
    v2 = {**POLICY, "roles": {**POLICY["roles"], "viewer": {"deny": ["tools.search"]}}}
    async with running(v1, vetoer, plugins=GRANTED) as kernel:
        results: list[Any] = []

        async def call() -> None:
            results.append(await kernel.invoke("tools.search", principal=EVE))

        async with anyio.create_task_group() as group:
            group.start_soon(call)
            await vetoer.waiting.wait()  # decided by v1, now waiting in the authorize hook
            await kernel.reload(reload_config(v2, **GRANTED))
            vetoer.gate.set()
        assert results == ["tools.search done"]  # it finished under the policy it started with
        assert tools_of(kernel).seen[-1].rule == "roles.viewer.allow[0] = 'tools.search'"
        with pytest.raises(PermissionDenied, match=r"roles.viewer.deny\[0\]"):
            await kernel.invoke("tools.search", principal=EVE)  # the next call: v2, no stale cache entry


async def test_many_calls_across_many_swaps_each_see_one_whole_policy() -> None:
    v1 = {**POLICY, "roles": {**POLICY["roles"], "viewer": {"allow": ["tools.search"]}}}
    v2 = {**POLICY, "roles": {**POLICY["roles"], "viewer": {"allow": ["tools.*"], "deny": ["tools.search"]}}}
    rules = {"roles.viewer.allow[0] = 'tools.search'": True, "roles.viewer.deny[0] = 'tools.search'": False}
    async with running(v1) as kernel:
        rbac = rbac_of(kernel)
        outcomes: list[tuple[bool, str]] = []

        async def caller() -> None:
            for _ in range(50):
                try:
                    await kernel.invoke("tools.search", principal=EVE)
                    outcomes.append((True, tools_of(kernel).seen[-1].rule))
                except PermissionDenied as exc:
                    outcomes.append((False, str(exc)))
                await anyio.lowlevel.checkpoint()

        async def swapper() -> None:
            for index in range(20):
                await rbac.reconfigure(structure_settings("rbac", RbacSettings, v2 if index % 2 == 0 else v1)[0])
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(caller)
            group.start_soon(swapper)
    assert len(outcomes) == 200
    for allowed, text in outcomes:
        if allowed:
            assert rules.get(text) is True
        else:
            assert "denied by roles.viewer.deny[0] = 'tools.search'" in text
    assert {allowed for allowed, _ in outcomes} == {True, False}


# -- explain and the CLI ----------------------------------------------------------------------


async def test_explain_with_hooks_reports_each_verdict() -> None:
    vetoer = Vetoer(allow=frozenset({"invoke:reports.daily"}))
    async with running(None, vetoer, plugins=GRANTED) as kernel:
        out = await kernel.invoke(
            "rbac.explain", {"action": "reports.daily", "principal": "eve", "roles": ["viewer"]}, principal=OPERATOR
        )
    assert out["allowed"] is True and out["rule"] == "hook:authorize[vetoer] on-call"
    assert out["policy"] == {
        "allowed": False,
        "rule": "",
        "reason": "no rule grants invoke:reports.daily (effective roles: viewer)",
    }
    assert out["hooks"] == [
        {
            "plugin": "vetoer",
            "verdict": "allow",
            "rule": "hook:authorize[vetoer] on-call",
            "reason": "plugin 'vetoer' allowed it",
        }
    ]
    lines = render(out)
    assert "policy alone: denied (no rule grants invoke:reports.daily (effective roles: viewer))" in lines
    assert "hook authorize, plugin vetoer: allow hook:authorize[vetoer] on-call: plugin 'vetoer' allowed it" in lines


ORION_TOML = """\
[plugins.rbac]
enabled = true

[plugins.rbac.settings]
anonymous_roles = ["guest"]

[plugins.rbac.settings.roles.viewer]
allow = ["invoke:tools.*"]
deny = ["tools.secret"]

[plugins.rbac.settings.roles.analyst]
inherits = ["viewer"]

[plugins.rbac.settings.roles.guest]
allow = ["tools.search"]
"""


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_rbac_check_explains_which_rule_decided(tmp_path: Path) -> None:
    (tmp_path / "orion.toml").write_text(ORION_TOML)
    code, text = cli("rbac", "check", "bob", "invoke:tools.search", "--role", "analyst")
    assert code == 0, text
    assert text.splitlines()[:4] == [
        "allowed: invoke:tools.search for principal 'bob' (kind 'user')",
        "rule: roles.viewer.allow[0] = 'invoke:tools.*'",
        "why: analyst <- inherits viewer: allow invoke:tools.*",
        "effective roles: analyst (principal), viewer (principal: analyst <- inherits viewer)",
    ]
    code, text = cli("rbac", "check", "bob", "tools.secret", "-r", "analyst")
    assert code == 1
    assert "rule: roles.viewer.deny[0] = 'tools.secret'" in text
    assert (
        "  deny  roles.viewer.deny[0] = 'tools.secret'  [analyst <- inherits viewer: deny invoke:tools.secret]" in text
    )
    code, text = cli("rbac", "check", "bob", "reports.daily", "--json")
    assert code == 1
    data = orjson.loads(text)
    assert (data["allowed"], data["rule"]) == (False, "")
    assert data["reason"] == "no rule grants invoke:reports.daily (effective roles: none)"
    code, text = cli("rbac", "check", "someone", "tools.search", "--kind", "anonymous")
    assert code == 0 and "guest (anonymous_roles)" in text
    code, text = cli("--json", "rbac", "check", "cli", "anything", "--kind", "operator")
    assert code == 0 and orjson.loads(text)["rule"] == "trust_operator"


def test_rbac_check_without_a_running_rbac_exits_2(tmp_path: Path) -> None:
    broken = ORION_TOML.replace(
        "[plugins.rbac.settings]\n", '[plugins.rbac.settings]\npolicy_file = "/nonexistent/rbac.toml"\n'
    )
    (tmp_path / "orion.toml").write_text(broken)
    code, text = cli("rbac", "check", "bob", "tools.search")
    assert code == 2
    assert text.startswith("error: the rbac plugin is not running")


# -- conformance ------------------------------------------------------------------------------


class TestRbacConformance(PluginConformance):
    plugin = Rbac
