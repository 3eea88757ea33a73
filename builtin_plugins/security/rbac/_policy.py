"""The policy engine: permission patterns, role inheritance, and decisions.

A policy is compiled once (at start, at a reload) into a :class:`Policy`:
each role's allow and deny patterns are split into an exact-action dict and
a short list of compiled globs, and each role's inheritance closure is
worked out with the chain that reaches every inherited role.  Deciding is
then a walk over the principal's effective roles, and decisions are cached
in a bounded LRU keyed by what a decision depends on (the principal's kind,
its roles, its id when the id has bindings, and the action), so the common
case is one dict lookup.  A reload builds a new :class:`Policy` with a fresh
cache and swaps it in as one reference: nothing is ever mutated in place.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import Final
from typing import Literal

import attrs

from plugin_sdk import Decision
from plugin_sdk import Principal

Effect = Literal["allow", "deny"]

#: the rule named by a Decision when an operator principal is trusted
OPERATOR_RULE: Final = "trust_operator"
ANONYMOUS: Final = "anonymous"
OPERATOR_KIND: Final = "operator"

_VERB: Final = re.compile(r"[a-z][a-z0-9_-]*\Z")
#: operation names are dot-separated lowercase words: a glob over them uses the same characters
_INVOKE_TARGET: Final = re.compile(r"[a-z0-9_.*?]+\Z")
_TARGET: Final = re.compile(r"[A-Za-z0-9_.:/@*?-]+\Z")
_ROLE_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@/-]{0,127}\Z")
_IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


class PatternError(ValueError):
    """A permission pattern does not follow the grammar; the message says why and what would."""


def join(path: str, key: object) -> str:
    """``path.key``, ``path[3]`` or ``path['odd key']`` (the kernel's config path style)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    text = str(key)
    if _IDENT.match(text):
        return f"{path}.{text}" if path else text
    return f"{path}[{text!r}]"


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` or `` (known: a, b)`` or `` (none is defined)``."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if not known:
        return " (no role is defined)"
    shown = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
    return f" (known: {shown})"


# -- patterns -----------------------------------------------------------------------------


def normalize_action(action: str) -> str:
    """An action as decided on: ``verb:target``; a bare operation name means ``invoke:<name>``."""
    return action if ":" in action else f"invoke:{action}"


def _glob_regex(glob: str) -> str:
    out = []
    for char in glob:
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        else:
            out.append(re.escape(char))
    return "".join(out)


@attrs.frozen
class Pattern:
    """One parsed permission pattern."""

    #: as written in the policy
    text: str
    #: normalized ``verb:glob`` (``*`` stays ``*``)
    action: str
    #: no wildcard: it matches exactly the action ``action``
    exact: bool
    #: matches a normalized action (``None`` for exact patterns)
    match: Callable[[str], Any] | None = attrs.field(eq=False, repr=False)


def parse_pattern(text: object) -> Pattern:
    """Parse ``verb:glob``, a bare glob (``invoke:<glob>``) or ``*`` (every action).

    :raises PatternError: empty, white space, a bad verb, or characters an action cannot have.
    """
    if not isinstance(text, str):
        raise PatternError(f"expected a string, got {type(text).__name__}")
    if not text:
        raise PatternError("empty pattern (write 'invoke:<glob>', e.g. 'invoke:tools.*', or '*')")
    if text != text.strip() or any(c.isspace() for c in text):
        raise PatternError(f"{text!r} contains white space")
    if text == "*":
        return Pattern("*", "*", False, re.compile(r"[^:]+:.*").fullmatch)
    verb, colon, target = text.partition(":")
    if not colon:
        verb, target = "invoke", text
    if verb != "*" and not _VERB.match(verb):
        raise PatternError(
            f"{text!r}: the verb {verb!r} is not a lowercase word or '*' (e.g. 'invoke:tools.*'; "
            "a bare glob like 'tools.*' means 'invoke:tools.*')"
        )
    if verb not in ("*", "invoke") and difflib.get_close_matches(verb, ["invoke"], n=1, cutoff=0.75):
        raise PatternError(f"{text!r}: unknown verb {verb!r} (did you mean 'invoke'?)")
    if not target:
        raise PatternError(f"{text!r}: nothing after {verb + ':'!r} (e.g. '{verb}:tools.*', or '{verb}:*')")
    if verb == "invoke" and not _INVOKE_TARGET.match(target):
        raise PatternError(
            f"{text!r}: {target!r} is not a glob of operation names "
            "(lowercase letters, digits, '_' and '.', with '*' and '?' as wildcards)"
        )
    if verb != "invoke" and not _TARGET.match(target):
        raise PatternError(
            f"{text!r}: {target!r} has characters an action cannot have "
            "(letters, digits and _ . : / @ -, with '*' and '?' as wildcards)"
        )
    action = f"{verb}:{target}"
    if verb != "*" and "*" not in target and "?" not in target:
        return Pattern(text, action, True, None)
    verb_regex = "[^:]+" if verb == "*" else re.escape(verb)
    return Pattern(text, action, False, re.compile(f"{verb_regex}:{_glob_regex(target)}", re.S).fullmatch)


def check_role_name(name: object) -> str | None:
    """Why ``name`` cannot be a role name, or ``None``."""
    if not isinstance(name, str):
        return f"expected a role name, got {type(name).__name__}"
    if not _ROLE_NAME.match(name):
        return (
            f"{name!r} is not a role name (letters, digits and _ . : @ / -, not starting with a "
            "punctuation mark, at most 128 characters)"
        )
    return None


# -- the policy as written -----------------------------------------------------------------


@attrs.frozen
class RoleDef:
    """One role as written, and where (for error paths and rule texts)."""

    name: str
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    inherits: tuple[str, ...] = ()
    #: the config path of the role: ``plugins.rbac.settings.roles.analyst`` or ``FILE: roles.analyst``
    path: str = ""
    #: how rules of this role are named in decisions: ``roles.analyst`` or ``rbac.toml: roles.analyst``
    label: str = ""


@attrs.frozen
class Binding:
    """Extra roles bound to one principal id (``principals = { "<id>" = [...] }``)."""

    principal: str
    roles: tuple[str, ...]
    path: str = ""


@attrs.frozen
class Issue:
    """One problem in a policy: where, and what is wrong."""

    path: str
    message: str


def pattern_issues(patterns: Sequence[object], path: str) -> list[Issue]:
    """One issue per bad pattern, at ``path[i]``."""
    found = []
    for index, text in enumerate(patterns):
        try:
            parse_pattern(text)
        except PatternError as exc:
            found.append(Issue(join(path, index), str(exc)))
    return found


def reference_issues(names: Sequence[str], path: str, known: Iterable[str]) -> list[Issue]:
    """One issue per name that is not a valid role name or not a defined role."""
    known = set(known)
    found = []
    for index, name in enumerate(names):
        why = check_role_name(name)
        if why is not None:
            found.append(Issue(join(path, index), why))
        elif name not in known:
            found.append(Issue(join(path, index), f"unknown role {name!r}{did_you_mean(name, known)}"))
    return found


def find_cycles(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Every elementary cycle found by a depth-first walk (each reported once, from its smallest name)."""
    cycles: list[list[str]] = []
    seen_cycles: set[tuple[str, ...]] = set()
    done: set[str] = set()

    def visit(node: str, stack: list[str], on_stack: set[str]) -> None:
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if nxt in on_stack:
                cycle = stack[stack.index(nxt) :]
                start = cycle.index(min(cycle))
                key = tuple(cycle[start:] + cycle[:start])
                if key not in seen_cycles:
                    seen_cycles.add(key)
                    cycles.append(list(key))
            elif nxt not in done:
                stack.append(nxt)
                on_stack.add(nxt)
                visit(nxt, stack, on_stack)
                on_stack.discard(nxt)
                stack.pop()
        done.add(node)

    for root in sorted(graph):
        if root not in done:
            visit(root, [root], {root})
    return cycles


def role_issues(roles: Mapping[str, RoleDef]) -> list[Issue]:
    """Bad role names, bad patterns, unknown inherited roles and inheritance cycles."""
    found: list[Issue] = []
    for name, role in roles.items():
        why = check_role_name(name)
        if why is not None:
            found.append(Issue(role.path, why))
        found += pattern_issues(role.allow, join(role.path, "allow"))
        found += pattern_issues(role.deny, join(role.path, "deny"))
        found += reference_issues(role.inherits, join(role.path, "inherits"), roles)
    for cycle in find_cycles({name: role.inherits for name, role in roles.items()}):
        first = roles[cycle[0]]
        found.append(Issue(join(first.path, "inherits"), f"inheritance cycle: {' -> '.join([*cycle, cycle[0]])}"))
    return found


# -- the compiled policy -------------------------------------------------------------------


@attrs.frozen
class Rule:
    """One allow or deny pattern of one role."""

    role: str
    effect: Effect
    index: int
    pattern: Pattern
    label: str

    def __str__(self) -> str:
        return f"{self.label}.{self.effect}[{self.index}] = {self.pattern.text!r}"


class _Rules:
    """One role's allow (or deny) patterns: exact actions in a dict, globs in order."""

    __slots__ = ("exact", "globs")

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.exact: dict[str, Rule] = {}
        globs: list[tuple[Callable[[str], Any], Rule]] = []
        for rule in rules:
            match = rule.pattern.match
            if match is None:  # exact
                self.exact.setdefault(rule.pattern.action, rule)
            else:
                globs.append((match, rule))
        self.globs = tuple(globs)

    def first(self, action: str) -> Rule | None:
        """The first rule (in written order) matching ``action``."""
        best = self.exact.get(action)
        for match, rule in self.globs:
            if best is not None and rule.index > best.index:
                break
            if match(action) is not None:
                return rule
        return best

    def every(self, action: str) -> list[Rule]:
        """Every rule matching ``action``, in written order."""
        found = [rule for match, rule in self.globs if match(action) is not None]
        exact = self.exact.get(action)
        if exact is not None:
            found.append(exact)
        return sorted(found, key=lambda rule: rule.index)


@attrs.frozen
class Reach:
    """How a principal holds a role: where the first role came from and the inheritance chain."""

    #: ``principal`` (its own roles), ``principals.<id>``, ``default_roles`` or ``anonymous_roles``
    origin: str
    #: from the role the principal holds to the role reached, e.g. ``("analyst", "viewer")``
    chain: tuple[str, ...]

    @property
    def role(self) -> str:
        return self.chain[-1]

    def text(self) -> str:
        """``analyst <- inherits viewer``."""
        return " <- inherits ".join(self.chain)


@attrs.frozen
class Match:
    """A rule that matched the action, and how the principal holds its role."""

    rule: Rule
    reach: Reach

    def trail(self) -> str:
        """``analyst <- inherits viewer: allow invoke:tools.*``."""
        return f"{self.reach.text()}: {self.rule.effect} {self.rule.pattern.action}"

    def to_json(self) -> dict[str, Any]:
        return {
            "effect": self.rule.effect,
            "rule": str(self.rule),
            "pattern": self.rule.pattern.action,
            "role": self.rule.role,
            "chain": list(self.reach.chain),
            "origin": self.reach.origin,
            "trail": self.trail(),
        }


@attrs.frozen
class Explanation:
    """A policy decision with everything that led to it (what ``rbac check`` prints)."""

    decision: Decision
    effective: tuple[Reach, ...]
    #: roles the principal holds that the policy does not define (they grant nothing)
    unknown: tuple[str, ...]
    #: every matching rule, denies first; the deciding one is the first of its effect
    matches: tuple[Match, ...]
    #: the deciding rule's trail (``""`` when no rule decided or the operator rule did)
    trail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "allowed": self.decision.allowed,
            "action": self.decision.action,
            "rule": self.decision.rule,
            "reason": self.decision.reason,
            "trail": self.trail,
            "effective_roles": [
                {"role": r.role, "chain": list(r.chain), "origin": r.origin, "text": r.text()} for r in self.effective
            ],
            "unknown_roles": list(self.unknown),
            "matches": [m.to_json() for m in self.matches],
        }


class Policy:
    """A compiled, immutable policy with its own decision cache."""

    def __init__(
        self,
        roles: Mapping[str, RoleDef],
        *,
        principals: Mapping[str, Binding] | None = None,
        default_roles: Sequence[str] = (),
        anonymous_roles: Sequence[str] = (),
        trust_operator: bool = True,
        cache_size: int = 4096,
        sources: Sequence[str] = (),
    ) -> None:
        """Compile; the caller has checked the policy (see :func:`policy_issues`).

        :raises ValueError: a pattern, reference or cycle the checks would have reported.
        """
        issues = policy_issues(roles, principals or {}, default_roles, anonymous_roles)
        if issues:
            raise ValueError("; ".join(f"{i.path}: {i.message}" for i in issues))
        self.roles: Mapping[str, RoleDef] = dict(roles)
        self.bindings: dict[str, tuple[str, ...]] = {b.principal: b.roles for b in (principals or {}).values()}
        self.default_roles = tuple(default_roles)
        self.anonymous_roles = tuple(anonymous_roles)
        self.trust_operator = trust_operator
        self.cache_size = cache_size
        self.sources = tuple(sources)
        self._allow: dict[str, _Rules] = {}
        self._deny: dict[str, _Rules] = {}
        for name, role in roles.items():
            label = role.label or join("roles", name)
            self._allow[name] = _Rules(
                [Rule(name, "allow", i, parse_pattern(t), label) for i, t in enumerate(role.allow)]
            )
            self._deny[name] = _Rules([Rule(name, "deny", i, parse_pattern(t), label) for i, t in enumerate(role.deny)])
        self._closure = {name: self._chains(name) for name in roles}
        self._cached: Callable[[str, str, tuple[str, ...], str], Decision] = functools.lru_cache(maxsize=cache_size)(
            self._decide_key
        )

    def __repr__(self) -> str:
        return f"<rbac Policy: {len(self.roles)} role(s), {len(self.bindings)} binding(s)>"

    def _chains(self, start: str) -> tuple[tuple[str, ...], ...]:
        # Breadth first: every role reachable from `start`, each with its shortest chain.
        chains: list[tuple[str, ...]] = [(start,)]
        seen = {start}
        index = 0
        while index < len(chains):
            chain = chains[index]
            index += 1
            for parent in self.roles[chain[-1]].inherits:
                if parent not in seen:
                    seen.add(parent)
                    chains.append((*chain, parent))
        return tuple(chains)

    # -- deciding ----------------------------------------------------------------------

    def decide(self, principal: Principal | None, action: str) -> Decision:
        """The policy's decision (cached)."""
        if principal is None:
            return self._cached(ANONYMOUS, "", (), action)
        pid = principal.id
        return self._cached(principal.kind, pid if pid in self.bindings else "", principal.roles, action)

    def decide_uncached(self, principal: Principal | None, action: str) -> Decision:
        """The same decision, computed afresh (what the cache must agree with)."""
        return self.explain(principal, action, every=False).decision

    def cache_info(self) -> Any:
        """``functools`` cache statistics (hits, misses, maxsize, currsize)."""
        return self._cached.cache_info()  # type: ignore[attr-defined]

    def _decide_key(self, kind: str, pid: str, roles: tuple[str, ...], action: str) -> Decision:
        principal = Principal(id=pid, kind=kind, roles=roles)
        return self.explain(principal, action, every=False).decision

    def effective_roles(self, principal: Principal | None) -> tuple[tuple[Reach, ...], tuple[str, ...]]:
        """The roles a principal holds (directly, by binding, by default, by inheritance), and unknown ones."""
        base: list[tuple[str, str]]
        if principal is None or principal.kind == ANONYMOUS:
            base = [(role, "anonymous_roles") for role in self.anonymous_roles]
        else:
            base = [(role, "principal") for role in principal.roles]
            bound = self.bindings.get(principal.id)
            if bound:
                base += [(role, join("principals", principal.id)) for role in bound]
            base += [(role, "default_roles") for role in self.default_roles]
        reached: list[Reach] = []
        seen: set[str] = set()
        unknown: list[str] = []
        for role, origin in base:
            closure = self._closure.get(role)
            if closure is None:
                if role not in unknown:
                    unknown.append(role)
                continue
            for chain in closure:
                if chain[-1] not in seen:
                    seen.add(chain[-1])
                    reached.append(Reach(origin, chain))
        return tuple(reached), tuple(unknown)

    def explain(self, principal: Principal | None, action: str, *, every: bool = True) -> Explanation:
        """Decide without the cache and say why: effective roles, matching rules, the deciding trail.

        :param every: collect every matching rule (``False``: stop at the deciding one).
        """
        action = normalize_action(action)
        if self.trust_operator and principal is not None and principal.kind == OPERATOR_KIND:
            decision = Decision(
                True,
                action,
                OPERATOR_RULE,
                "principals of kind 'operator' (the CLI) are trusted with every action (trust_operator = true)",
            )
            if not every:
                return Explanation(decision, (), (), (), "")
            effective, unknown = self.effective_roles(principal)
            return Explanation(decision, effective, unknown, self._matches(effective, action), "")
        effective, unknown = self.effective_roles(principal)
        if every:
            matches = self._matches(effective, action)
            denies = [m for m in matches if m.rule.effect == "deny"]
            allows = [m for m in matches if m.rule.effect == "allow"]
            decider = denies[0] if denies else allows[0] if allows else None
        else:
            matches = ()
            decider = self._first(self._deny, effective, action) or self._first(self._allow, effective, action)
        if decider is None:
            held = ", ".join(r.role for r in effective) or "none"
            decision = Decision(False, action, "", f"no rule grants {action} (effective roles: {held})")
            return Explanation(decision, effective, unknown, tuple(matches), "")
        trail = decider.trail()
        decision = Decision(decider.rule.effect == "allow", action, str(decider.rule), trail)
        return Explanation(decision, effective, unknown, tuple(matches), trail)

    @staticmethod
    def _first(table: Mapping[str, _Rules], effective: Sequence[Reach], action: str) -> Match | None:
        for reach in effective:
            rule = table[reach.role].first(action)
            if rule is not None:
                return Match(rule, reach)
        return None

    def _matches(self, effective: Sequence[Reach], action: str) -> tuple[Match, ...]:
        denies = [Match(rule, reach) for reach in effective for rule in self._deny[reach.role].every(action)]
        allows = [Match(rule, reach) for reach in effective for rule in self._allow[reach.role].every(action)]
        return (*denies, *allows)

    def summary(self) -> dict[str, Any]:
        """What a reload reports: sizes and sources, no rules."""
        return {
            "roles": len(self.roles),
            "principals": len(self.bindings),
            "default_roles": list(self.default_roles),
            "anonymous_roles": list(self.anonymous_roles),
            "trust_operator": self.trust_operator,
            "sources": list(self.sources),
        }


def policy_issues(
    roles: Mapping[str, RoleDef],
    principals: Mapping[str, Binding],
    default_roles: Sequence[str],
    anonymous_roles: Sequence[str],
    *,
    default_path: str = "default_roles",
    anonymous_path: str = "anonymous_roles",
) -> list[Issue]:
    """Every problem of a whole policy, each at its path."""
    found = role_issues(roles)
    for binding in principals.values():
        if not binding.principal:
            found.append(Issue(binding.path, "empty principal id"))
        found += reference_issues(binding.roles, binding.path, roles)
    found += reference_issues(default_roles, default_path, roles)
    found += reference_issues(anonymous_roles, anonymous_path, roles)
    return found
