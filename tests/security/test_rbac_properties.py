"""Property tests of the rbac policy engine (hypothesis).

Random policies -- roles with allow and deny globs over a small alphabet,
inheritance DAGs, bindings by id, default and anonymous roles -- and random
principals and actions, checked against an independent oracle (``fnmatch`` and a
plain recursive closure) and against the properties an authorizer must keep:
deny always wins, nothing is allowed without a rule granting it, adding allows
or roles is monotone in the right direction, the order of roles does not
matter, and the cached decision is the uncached one.
"""

from __future__ import annotations

import fnmatch
import itertools
from collections.abc import Mapping
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from builtin_plugins.security.rbac import Policy
from builtin_plugins.security.rbac import RbacSettings
from builtin_plugins.security.rbac import RoleSettings
from builtin_plugins.security.rbac import build_policy
from plugin_sdk import Principal

ROLES = ("r0", "r1", "r2", "r3", "r4")
SEGMENTS = ("a", "b", "c")
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies ---------------------------------------------------------------------------------

operation = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3).map(".".join)
action = st.one_of(
    operation.map(lambda op: f"invoke:{op}"),
    st.tuples(st.sampled_from(("other", "secrets")), operation).map(lambda t: f"{t[0]}:{t[1]}"),
    operation,  # bare: means invoke:<op>
)
glob_segment = st.sampled_from((*SEGMENTS, "*", "?", "a*", "*b"))
glob = st.lists(glob_segment, min_size=1, max_size=3).map(".".join)
pattern = st.one_of(
    st.just("*"),
    glob,  # bare glob: invoke:<glob>
    glob.map(lambda g: f"invoke:{g}"),
    st.tuples(st.sampled_from(("other", "*")), glob).map(lambda t: f"{t[0]}:{t[1]}"),
)
patterns = st.lists(pattern, max_size=3).map(tuple)


@st.composite
def policies(draw: st.DrawFn) -> RbacSettings:
    roles: dict[str, RoleSettings] = {}
    names = list(ROLES[: draw(st.integers(1, len(ROLES)))])
    for index, name in enumerate(names):
        # Inherit only from later roles: always a DAG.
        parents = (
            draw(st.lists(st.sampled_from(names[index + 1 :]), unique=True).map(tuple)) if names[index + 1 :] else ()
        )
        roles[name] = RoleSettings(allow=draw(patterns), deny=draw(patterns), inherits=parents)
    subset = st.lists(st.sampled_from(names), unique=True, max_size=2).map(tuple)
    return RbacSettings(
        roles=roles,
        principals=draw(st.dictionaries(st.sampled_from(("p1", "p2")), subset, max_size=2)),
        default_roles=draw(subset),
        anonymous_roles=draw(subset),
        trust_operator=draw(st.booleans()),
        cache_size=draw(st.sampled_from((0, 1, 4096))),
    )


principals = st.builds(
    Principal,
    id=st.sampled_from(("p1", "p2", "p3")),
    kind=st.sampled_from(("user", "user", "service", "anonymous", "operator")),
    roles=st.lists(st.sampled_from((*ROLES, "ghost")), unique=True, max_size=3).map(tuple),
)
maybe_principal = st.one_of(st.none(), principals)


# -- the oracle ---------------------------------------------------------------------------------


def normalize(action_: str) -> str:
    return action_ if ":" in action_ else f"invoke:{action_}"


def matches(pat: str, action_: str) -> bool:
    if pat == "*":
        return True
    verb, colon, target = pat.partition(":")
    if not colon:
        verb, target = "invoke", pat
    act_verb, _, act_target = normalize(action_).partition(":")
    return (verb == "*" or verb == act_verb) and fnmatch.fnmatchcase(act_target, target)


def effective(config: RbacSettings, principal: Principal | None) -> set[str]:
    if principal is None or principal.kind == "anonymous":
        base = list(config.anonymous_roles)
    else:
        base = [*principal.roles, *config.principals.get(principal.id, ()), *config.default_roles]
    found: set[str] = set()

    def visit(role: str) -> None:
        if role in found or role not in config.roles:
            return
        found.add(role)
        for parent in config.roles[role].inherits:
            visit(parent)

    for role in base:
        visit(role)
    return found


def trusted(config: RbacSettings, principal: Principal | None) -> bool:
    return config.trust_operator and principal is not None and principal.kind == "operator"


def oracle(config: RbacSettings, principal: Principal | None, action_: str) -> bool:
    if trusted(config, principal):
        return True
    held = effective(config, principal)
    if any(matches(p, action_) for r in held for p in config.roles[r].deny):
        return False
    return any(matches(p, action_) for r in held for p in config.roles[r].allow)


def compiled(config: RbacSettings) -> Policy:
    return build_policy(config)


# -- properties ---------------------------------------------------------------------------------


@PROPERTY
@given(policies(), maybe_principal, action)
def test_decisions_agree_with_the_oracle(config: RbacSettings, principal: Principal | None, act: str) -> None:
    decision = compiled(config).decide(principal, act)
    assert decision.allowed is oracle(config, principal, act)
    assert decision.action == normalize(act)


@PROPERTY
@given(policies(), maybe_principal, action)
def test_deny_always_wins(config: RbacSettings, principal: Principal | None, act: str) -> None:
    held = effective(config, principal)
    denied_somewhere = any(matches(p, act) for r in held for p in config.roles[r].deny)
    decision = compiled(config).decide(principal, act)
    if denied_somewhere and not trusted(config, principal):
        assert not decision.allowed
        assert ".deny[" in decision.rule


@PROPERTY
@given(policies(), maybe_principal, action)
def test_no_permission_without_a_rule_granting_it(config: RbacSettings, principal: Principal | None, act: str) -> None:
    decision = compiled(config).decide(principal, act)
    held = effective(config, principal)
    if decision.allowed:
        if decision.rule == "trust_operator":
            assert trusted(config, principal)
        else:
            # roles.<role>.allow[<i>] = '<pattern>': that role is effective and that pattern matches.
            head, _, text = decision.rule.partition(" = ")
            role, _, index = head.removeprefix("roles.").rpartition(".allow[")
            assert role in held
            pat = config.roles[role].allow[int(index.rstrip("]"))]
            assert repr(pat) == text and matches(pat, act)
    elif decision.rule == "":
        assert not any(matches(p, act) for r in held for p in config.roles[r].allow)
        assert decision.reason.startswith("no rule grants")


@PROPERTY
@given(policies(), principals, action, st.sampled_from(ROLES), pattern)
def test_adding_an_allow_never_turns_an_allow_into_a_deny(
    config: RbacSettings, principal: Principal, act: str, role: str, extra: str
) -> None:
    if role not in config.roles:
        return
    before = compiled(config).decide(principal, act)
    grown = dict(config.roles)
    grown[role] = attrs.evolve(grown[role], allow=(*grown[role].allow, extra))
    after = compiled(attrs.evolve(config, roles=grown)).decide(principal, act)
    if before.allowed:
        assert after.allowed


@PROPERTY
@given(policies(), principals, action, st.sampled_from(ROLES), pattern)
def test_adding_a_deny_never_turns_a_deny_into_an_allow(
    config: RbacSettings, principal: Principal, act: str, role: str, extra: str
) -> None:
    if role not in config.roles:
        return
    before = compiled(config).decide(principal, act)
    grown = dict(config.roles)
    grown[role] = attrs.evolve(grown[role], deny=(*grown[role].deny, extra))
    after = compiled(attrs.evolve(config, roles=grown)).decide(principal, act)
    if not before.allowed:
        assert not after.allowed


@PROPERTY
@given(policies(), principals, action, st.sampled_from(ROLES), st.data())
def test_more_roles_or_inheritance_never_lift_a_deny_rule(
    config: RbacSettings, principal: Principal, act: str, role: str, data: st.DataObject
) -> None:
    policy = compiled(config)
    before = policy.decide(principal, act)
    if before.allowed or before.rule == "" or role not in config.roles:
        return  # only an explicit deny must survive
    # The principal holds one more role ...
    more = attrs.evolve(principal, roles=(*principal.roles, role))
    assert not policy.decide(more, act).allowed
    # ... or some role inherits one more (a later one, so it stays a DAG).
    names = list(config.roles)
    child = data.draw(st.sampled_from(names))
    later = names[names.index(child) + 1 :]
    if later:
        parent = data.draw(st.sampled_from(later))
        grown = dict(config.roles)
        grown[child] = attrs.evolve(grown[child], inherits=tuple(dict.fromkeys((*grown[child].inherits, parent))))
        assert not compiled(attrs.evolve(config, roles=grown)).decide(principal, act).allowed


@PROPERTY
@given(policies(), principals, action, st.randoms(use_true_random=False))
def test_the_order_of_roles_does_not_matter(config: RbacSettings, principal: Principal, act: str, rnd: Any) -> None:
    policy = compiled(config)
    shuffled = list(principal.roles)
    rnd.shuffle(shuffled)
    assert (
        policy.decide(principal, act).allowed
        is policy.decide(attrs.evolve(principal, roles=tuple(shuffled)), act).allowed
    )


@PROPERTY
@given(policies(), st.lists(st.tuples(maybe_principal, action), min_size=1, max_size=12))
def test_the_cached_decision_is_the_uncached_one(
    config: RbacSettings, calls: list[tuple[Principal | None, str]]
) -> None:
    policy = compiled(config)
    for principal, act in calls * 2:  # twice: the second round hits the cache (when it has room)
        assert policy.decide(principal, act) == policy.decide_uncached(principal, act)
        assert policy.decide(principal, act) == policy.explain(principal, act).decision


# -- inheritance graphs with cycles ----------------------------------------------------------------


def has_cycle(graph: Mapping[str, tuple[str, ...]]) -> bool:
    state: dict[str, int] = {}

    def visit(node: str) -> bool:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1 or (state.get(nxt) is None and visit(nxt)):
                return True
        state[node] = 2
        return False

    return any(state.get(n) is None and visit(n) for n in graph)


graphs = st.dictionaries(
    st.sampled_from(ROLES), st.lists(st.sampled_from(ROLES), unique=True, max_size=3).map(tuple), min_size=1
).map(lambda g: {name: tuple(p for p in parents if p in g) for name, parents in g.items()})


@PROPERTY
@given(graphs)
def test_cycles_are_refused_and_named(graph: dict[str, tuple[str, ...]]) -> None:
    roles = {name: RoleSettings(inherits=parents) for name, parents in graph.items()}
    if not has_cycle(graph):
        RbacSettings(roles=roles)
        return
    with pytest.raises(ExceptionGroup) as caught:
        RbacSettings(roles=roles)
    named = [str(e) for e in caught.value.exceptions if "inheritance cycle" in str(e)]
    assert named
    for text in named:
        cycle = text.split("inheritance cycle: ", 1)[1].split(" -> ")
        assert cycle[0] == cycle[-1]
        for child, parent in itertools.pairwise(cycle):
            assert parent in graph[child]  # every step of the named cycle is a real inherits edge
