"""Settings of the ``rbac`` plugin (``[plugins.rbac.settings]``).

Checked by attrs validators while the kernel structures them, so a bad
pattern, an unknown role or an inheritance cycle is a ``ConfigError`` at its
path (``plugins.rbac.settings.roles.analyst.allow: [1] 'invoke:': ...``)
before anything starts, and ``orion-kernel config check`` finds it.  With a
``policy_file`` the references between roles are checked when the file is
read (at start and at each reload), since the file may define the roles the
settings refer to.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import attrs

from ._policy import Issue
from ._policy import check_role_name
from ._policy import find_cycles
from ._policy import join
from ._policy import pattern_issues
from ._policy import reference_issues

_INDEX = re.compile(r"\[\d+\]\Z")


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


def _raise(attribute: attrs.Attribute[Any], issues: Sequence[Issue], prefix: str = "") -> None:
    """Report ``issues`` at ``attribute``'s path, one config issue each (message: the sub-path, then why)."""
    if not issues:
        return
    errors = []
    for issue in issues:
        where = issue.path[len(prefix) :].lstrip(".") if prefix and issue.path.startswith(prefix) else issue.path
        if not where:
            errors.append(ValueError(issue.message))
        else:
            errors.append(
                ValueError(f"{where} {issue.message}" if _INDEX.match(where) else f"{where}: {issue.message}")
            )
    # The kernel puts a validator's error at the field its message starts with ('name' ...);
    # each grouped error becomes one issue there.
    raise ExceptionGroup(f"'{attribute.name}' is invalid", errors)


def _patterns(instance: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
    _raise(attribute, pattern_issues(value, ""))


def _role_names(instance: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
    issues = []
    for index, name in enumerate(value):
        why = check_role_name(name)
        if why is not None:
            issues.append(Issue(join("", index), why))
    _raise(attribute, issues)


@attrs.frozen
class RoleSettings:
    """One role: ``roles.NAME = { allow = [...], deny = [...], inherits = [...] }``."""

    allow: tuple[str, ...] = attrs.field(
        default=(),
        validator=_patterns,
        metadata=_doc(
            "Permission patterns this role grants: 'verb:glob' ('invoke:tools.*'), a bare glob meaning "
            "'invoke:<glob>' ('tools.search'), or '*' for every action."
        ),
    )
    deny: tuple[str, ...] = attrs.field(
        default=(),
        validator=_patterns,
        metadata=_doc("Permission patterns this role denies; a deny in any effective role wins over every allow."),
    )
    inherits: tuple[str, ...] = attrs.field(
        default=(),
        validator=_role_names,
        metadata=_doc("Roles whose allow and deny rules this role also has (transitively; cycles are an error)."),
    )


def _roles(instance: RbacSettings, attribute: attrs.Attribute[dict[str, RoleSettings]], value: dict[str, Any]) -> None:
    issues: list[Issue] = []
    for name in value:
        why = check_role_name(name)
        if why is not None:
            issues.append(Issue(join("roles", name), why))
    if instance.policy_file is None:  # with a file, references are checked once it is read
        for name, role in value.items():
            issues += reference_issues(role.inherits, join(join("roles", name), "inherits"), value)
        for cycle in find_cycles({name: role.inherits for name, role in value.items()}):
            issues.append(
                Issue(
                    join(join("roles", cycle[0]), "inherits"), f"inheritance cycle: {' -> '.join([*cycle, cycle[0]])}"
                )
            )
    _raise(attribute, issues, "roles")


def _principals(
    instance: RbacSettings, attribute: attrs.Attribute[dict[str, tuple[str, ...]]], value: dict[str, Any]
) -> None:
    issues: list[Issue] = []
    for principal, roles in value.items():
        where = join("principals", principal)
        if not principal:
            issues.append(Issue(where, "empty principal id"))
        if instance.policy_file is None:
            issues += reference_issues(roles, where, instance.roles)
        else:
            issues += [Issue(join(where, i), why) for i, r in enumerate(roles) if (why := check_role_name(r))]
    _raise(attribute, issues, "principals")


def _role_refs(instance: RbacSettings, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
    if instance.policy_file is None:
        issues = reference_issues(value, "", instance.roles)
    else:
        issues = [Issue(join("", i), why) for i, r in enumerate(value) if (why := check_role_name(r))]
    _raise(attribute, issues)


def _kinds(instance: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
    bad = [Issue(join("", i), f"{k!r} is not a principal kind") for i, k in enumerate(value) if not k.strip()]
    _raise(attribute, bad)


def _non_negative(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"'{attribute.name}' must be >= 0 (0 turns the decision cache off), got {value!r}")


def _policy_file(instance: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and (not value.strip() or "\x00" in value):
        raise ValueError(f"'{attribute.name}' must be a file path (or left out), got {value!r}")


@attrs.frozen
class RbacSettings:
    """The ``[plugins.rbac.settings]`` table."""

    roles: dict[str, RoleSettings] = attrs.field(
        factory=dict,
        validator=_roles,
        metadata=_doc("Role name -> { allow = [...], deny = [...], inherits = [...] }."),
    )
    principals: dict[str, tuple[str, ...]] = attrs.field(
        factory=dict,
        validator=_principals,
        metadata=_doc("Principal id -> extra roles it has, added to the roles its Principal carries."),
    )
    default_roles: tuple[str, ...] = attrs.field(
        default=(),
        validator=_role_refs,
        metadata=_doc("Roles every authenticated principal (any kind but 'anonymous') has."),
    )
    anonymous_roles: tuple[str, ...] = attrs.field(
        default=(),
        validator=_role_refs,
        metadata=_doc("The only roles of a call without a principal, or with a principal of kind 'anonymous'."),
    )
    trust_operator: bool = attrs.field(
        default=True,
        metadata=_doc("Principals of kind 'operator' (what CLI commands act as) may do everything."),
    )
    policy_file: str | None = attrs.field(
        default=None,
        validator=_policy_file,
        metadata=_doc(
            "A TOML file with more [roles.NAME] and [principals] tables, merged over these (a role or "
            "principal it defines replaces the one here); re-read at every reload. Relative to the "
            "plugin's data directory."
        ),
    )
    admin_kinds: tuple[str, ...] = attrs.field(
        default=("operator",),
        validator=_kinds,
        metadata=_doc(
            "Principal kinds that may call rbac.reload and explain other principals with rbac.explain "
            "(the policy must also allow the call)."
        ),
    )
    cache_size: int = attrs.field(
        default=4096,
        validator=_non_negative,
        metadata=_doc("Most decisions the LRU cache keeps (per policy; a reload starts a fresh one); 0: no cache."),
    )


attrs.resolve_types(RoleSettings)
attrs.resolve_types(RbacSettings)
