"""The ``rbac`` plugin: what the caller may do.

It provides the ``authorizer`` service (``decide(principal, action)``, the
policy alone) and sits in the invoke pipeline at ``Phase.AUTHORIZE``: every
call of an operation ``OP`` is the action ``invoke:OP``, decided by the
policy and then by the plugins granted ``hook:authorize``.  A denial raises
``PermissionDenied`` before the handler runs; the decision is left in
``inv.metadata["authz"]`` for the audit plugin.

The compiled policy is one immutable object held in one attribute: a
reload (``reconfigure()`` at ``kernel.reload``, or the ``rbac.reload``
operation re-reading ``policy_file``) builds a new one and swaps the
reference, so a call in flight finishes under the policy it started with
and a bad new policy never replaces a good one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from typing import ClassVar
from typing import Final

import attrs

from plugin_sdk import CallNext
from plugin_sdk import CliCommand
from plugin_sdk import ConfigError
from plugin_sdk import ConfigIssue
from plugin_sdk import Decision
from plugin_sdk import HookOutcome
from plugin_sdk import InvalidArguments
from plugin_sdk import Invocation
from plugin_sdk import PermissionDenied
from plugin_sdk import Phase
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginError
from plugin_sdk import PluginState
from plugin_sdk import Principal
from plugin_sdk import hookimpl
from plugin_sdk import hookspecs
from plugin_sdk import record_audit

from ._cli import rbac_command
from ._config import RbacSettings
from ._load import build_policy
from ._load import policy_path
from ._policy import ANONYMOUS
from ._policy import Policy

#: the audit action recorded after every reload (outcome ``ok`` or ``error``)
RELOADED: Final = "rbac.policy.reloaded"
_HOOK: Final = "authorize"


@attrs.frozen
class ExplainArgs:
    """Arguments of ``rbac.explain``."""

    #: the action, e.g. ``invoke:tools.search`` (a bare operation name means ``invoke:<name>``)
    action: str
    #: explain for this principal id (an admin question); ``None``: for the caller itself
    principal: str | None = None
    kind: str = "user"
    roles: tuple[str, ...] = ()


def who(principal: Principal | None) -> str:
    """How a denial names the caller (its id and kind, never its claims)."""
    if principal is None:
        return "an anonymous caller"
    if principal.kind == ANONYMOUS:
        return f"anonymous principal {principal.id!r}"
    return f"principal {principal.id!r}"


def denial_message(principal: Principal | None, decision: Decision) -> str:
    """``principal 'bob' may not invoke:tools.drop: denied by roles.analyst.deny[0] = 'tools.drop' (...)``."""
    if decision.rule:
        return f"{who(principal)} may not {decision.action}: denied by {decision.rule} ({decision.reason})"
    return f"{who(principal)} may not {decision.action}: {decision.reason}"


class _Malformed:
    """What an authorize impl returned that is neither a Decision nor None (a deny)."""

    __slots__ = ("kind",)

    def __init__(self, value: object) -> None:
        self.kind = type(value).__name__


class RbacAuthorizer:
    """The ``authorizer`` service: the current policy's decisions (no hooks)."""

    __slots__ = ("_plugin",)

    def __init__(self, plugin: Rbac) -> None:
        self._plugin = plugin

    def __repr__(self) -> str:
        return "<rbac authorizer>"

    def decide(self, principal: Principal | None, action: str) -> Decision:
        """Decide from the policy alone; deny when no rule grants the action."""
        return self._plugin.policy.decide(principal, action)

    def explain(self, principal: Principal | None, action: str) -> dict[str, Any]:
        """The policy's decision with its trail, effective roles and every matching rule (plain data)."""
        return self._plugin.policy.explain(principal, action).to_json()


class Rbac(Plugin):
    """Roles, wildcard permissions, deny wins; the ``authorizer`` service and the AUTHORIZE middleware.

    Operations ``rbac.explain`` and ``rbac.reload``; CLI ``orion-kernel rbac check``.
    """

    name = "rbac"
    version = "1.0.0"
    provides = ("authorizer",)
    optional = ("audit",)
    #: the policy file, when one is configured (a relative one is in the data directory)
    permissions = ("fs:read:{policy_file}",)
    Config = RbacSettings

    conformance_settings: ClassVar[dict[str, Any]] = {
        "anonymous_roles": ["guest"],
        "roles": {"guest": {"allow": ["rbac.explain"]}},
    }
    conformance_bad_settings: ClassVar[list[dict[str, Any]]] = [
        {"roles": {"analyst": {"allow": ["tools.*", "Tools.Search"]}}},
        {"roles": {"a": {"inherits": ["b"]}, "b": {"inherits": ["a"]}}, "anonymous_roles": []},
        {"default_roles": ["nobody"]},
    ]
    conformance_opt_out: ClassVar[dict[str, str]] = {
        "isolation.process": "rbac is invoke-pipeline middleware and reads ctx.introspect() to find "
        "authorize implementers; an isolated plugin can use neither"
    }

    def __init__(self) -> None:
        self._ctx: PluginContext[RbacSettings] | None = None
        self._settings = RbacSettings()
        self._policy: Policy = build_policy(self._settings)
        self._authorizer = RbacAuthorizer(self)
        #: whether any plugin takes part in the authorize hook; None: look again (a plugin changed state)
        self._hooked: bool | None = None
        self._implementers: tuple[str, ...] = ()
        self._quarantined: tuple[str, ...] = ()

    @property
    def policy(self) -> Policy:
        """The policy in force (replaced whole at a reload)."""
        return self._policy

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, ctx: PluginContext[RbacSettings]) -> None:
        self._ctx = ctx
        self._settings = ctx.settings
        self._policy = self._build(ctx.settings)
        self._hooked = None
        ctx.provide("authorizer", self._authorizer)
        ctx.register_middleware(self._authorize, phase=Phase.AUTHORIZE)
        ctx.register_operation(
            "rbac.explain",
            self._explain,
            args_type=ExplainArgs,
            doc="Whether a principal may do an action, which rule decided and the role chain that led to it.",
            example_args={"action": "invoke:tools.search"},
        )
        ctx.register_operation(
            "rbac.reload",
            self._reload,
            doc="Re-read policy_file and swap the policy in (admin).",
        )

    async def stop(self) -> None:
        self._ctx = None

    async def reconfigure(self, settings: RbacSettings) -> None:
        """New settings at ``kernel.reload``: compile them (and re-read ``policy_file``), then swap.

        :raises ConfigError: the new policy is bad; the old one stays in force.
        """
        try:
            policy = self._build(settings)
        except ConfigError as exc:
            await self._record(None, "error", {"trigger": "reconfigure", "issues": len(exc.issues)})
            raise
        self._settings = settings
        self._policy = policy
        await self._record(None, "ok", {"trigger": "reconfigure", **policy.summary()})

    def _build(self, settings: RbacSettings) -> Policy:
        path: Path | None = None
        if settings.policy_file is not None:
            path = policy_path(settings, self._context().data_dir)
        return build_policy(settings, path)

    def _context(self) -> PluginContext[RbacSettings]:
        if self._ctx is None:
            raise PluginError("rbac: the plugin has not been started", plugin=self.name)
        return self._ctx

    # -- the middleware ----------------------------------------------------------------

    async def _authorize(self, inv: Invocation, call_next: CallNext) -> Any:
        principal = inv.principal
        action = "invoke:" + inv.operation
        decision = self._policy.decide(principal, action)
        hooked = self._hooked
        if hooked is None:
            hooked = self._find_implementers()
        if hooked:
            decision, _ = await self._consult(decision, principal)
        inv.metadata["authz"] = decision
        if not decision.allowed:
            raise PermissionDenied(denial_message(principal, decision))
        return await call_next(inv)

    def _find_implementers(self) -> bool:
        snapshot = self._context().introspect()
        names = snapshot.hooks.get(_HOOK, ())
        states = {p.name: p.state for p in snapshot.plugins}
        self._implementers = tuple(n for n in names if states.get(n) is PluginState.RUNNING)
        self._quarantined = tuple(n for n in names if states.get(n) is PluginState.QUARANTINED)
        self._hooked = bool(self._implementers or self._quarantined)
        return self._hooked

    async def _consult(self, policy: Decision, principal: Principal | None) -> tuple[Decision, list[dict[str, Any]]]:
        """Combine the policy's decision with the authorize hook's verdicts.

        A deny from the policy or from any impl wins; an impl's allow grants an
        action no policy rule covered; an impl that failed, timed out or answered
        something other than a Decision (and a quarantined implementer) denies.
        """
        action = policy.action
        if not policy.allowed and policy.rule:
            return policy, []  # a deny rule decided: nothing can overturn it
        reports: list[dict[str, Any]] = []
        denied: Decision | None = None
        granted: Decision | None = None
        for plugin in self._quarantined:
            verdict = Decision(
                False,
                action,
                f"hook:authorize[{plugin}] quarantined",
                f"plugin {plugin!r} implements authorize but is quarantined; it counts as a deny (fail closed)",
            )
            denied = denied or verdict
            reports.append({"plugin": plugin, "verdict": "deny", "rule": verdict.rule, "reason": verdict.reason})
        outcomes: list[HookOutcome[Any]] = []
        if self._implementers:
            outcomes = await self._context().hooks.acall_each(hookspecs.authorize, principal=principal, action=action)
        for outcome in outcomes:
            plugin, value = outcome.plugin, outcome.value
            value = value if isinstance(value, Decision | None) else _Malformed(value)
            if outcome.error is not None:
                kind = type(outcome.error).__name__
                verdict = Decision(
                    False,
                    action,
                    f"hook:authorize[{plugin}] failed",
                    f"the authorize impl of plugin {plugin!r} raised {kind}; it counts as a deny (fail closed)",
                )
            elif value is None:
                reports.append({"plugin": plugin, "verdict": "abstain", "rule": "", "reason": ""})
                continue
            elif isinstance(value, _Malformed):
                verdict = Decision(
                    False,
                    action,
                    f"hook:authorize[{plugin}] invalid",
                    f"the authorize impl of plugin {plugin!r} returned a {value.kind}, not a "
                    "Decision; it counts as a deny (fail closed)",
                )
            else:
                rule = f"hook:authorize[{plugin}]" + (f" {value.rule}" if value.rule else "")
                effect = "allowed" if value.allowed else "denied"
                verdict = Decision(value.allowed, action, rule, value.reason or f"plugin {plugin!r} {effect} it")
            if verdict.allowed:
                granted = granted or verdict
            else:
                denied = denied or verdict
            reports.append(
                {
                    "plugin": plugin,
                    "verdict": "allow" if verdict.allowed else "deny",
                    "rule": verdict.rule,
                    "reason": verdict.reason,
                }
            )
        if denied is not None:
            return denied, reports
        if policy.allowed or granted is None:
            return policy, reports
        return granted, reports

    # -- operations --------------------------------------------------------------------

    def _require_admin(self, inv: Invocation, what: str) -> Principal:
        principal = inv.principal
        kinds = self._settings.admin_kinds
        if principal is None or principal.kind not in kinds:
            caller = who(principal) + (f" of kind {principal.kind!r}" if principal is not None else "")
            raise PermissionDenied(
                f"{caller} may not {what}: it needs a principal of kind {' or '.join(kinds) or '(none)'}"
            )
        return principal

    async def _explain(self, inv: Invocation) -> dict[str, Any]:
        """Whether a principal may do an action, which rule decided, and the role chain that led to it."""
        args: ExplainArgs = inv.params
        target: Principal | None
        if args.principal is None:
            if args.roles or args.kind != "user":
                raise InvalidArguments(
                    inv.operation, [ConfigIssue("args.principal", "kind and roles need a principal id")]
                )
            target = inv.principal
        else:
            self._require_admin(inv, "explain another principal's decisions")
            target = Principal(id=args.principal, kind=args.kind, roles=args.roles)
        policy = self._policy
        explanation = policy.explain(target, args.action)
        result = explanation.to_json()
        result["policy"] = {
            "allowed": explanation.decision.allowed,
            "rule": explanation.decision.rule,
            "reason": explanation.decision.reason,
        }
        final, reports = explanation.decision, list[dict[str, Any]]()
        if self._hooked is None:
            self._find_implementers()
        if self._hooked:
            final, reports = await self._consult(explanation.decision, target)
        result.update(allowed=final.allowed, rule=final.rule, reason=final.reason, hooks=reports)
        if final is not explanation.decision:
            result["trail"] = final.reason
        result["principal"] = (
            None if target is None else {"id": target.id, "kind": target.kind, "roles": list(target.roles)}
        )
        return result

    async def _reload(self, inv: Invocation) -> dict[str, Any]:
        """Re-read policy_file and swap the policy in (admin)."""
        actor = self._require_admin(inv, "reload the rbac policy").id
        try:
            policy = self._build(self._settings)
        except ConfigError as exc:
            await self._record(actor, "error", {"trigger": "rbac.reload", "issues": len(exc.issues)})
            raise
        self._policy = policy
        summary = policy.summary()
        await self._record(actor, "ok", {"trigger": "rbac.reload", **summary})
        return {"reloaded": True, **summary}

    async def _record(self, actor: str | None, outcome: str, details: dict[str, Any]) -> None:
        if self._ctx is not None:
            await record_audit(self._ctx, RELOADED, actor=actor, outcome=outcome, details=details)

    # -- hooks -------------------------------------------------------------------------

    @hookimpl
    def plugin_state_changed(self) -> None:
        """Some plugin started, stopped or was quarantined: find the authorize implementers again."""
        self._hooked = None

    @hookimpl
    def cli_commands(self) -> list[CliCommand]:
        """``orion-kernel rbac check``."""
        return [rbac_command()]
