"""Building a :class:`Policy` from the settings and the optional ``policy_file``."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from plugin_sdk import ConfigError
from plugin_sdk import ConfigIssue

from ._config import RbacSettings
from ._policy import Binding
from ._policy import Issue
from ._policy import Policy
from ._policy import RoleDef
from ._policy import did_you_mean
from ._policy import join
from ._policy import policy_issues

SETTINGS_PATH = "plugins.rbac.settings"
_FILE_KEYS = ("roles", "principals")
_ROLE_KEYS = ("allow", "deny", "inherits")


def policy_path(settings: RbacSettings, data_dir: Path) -> Path | None:
    """Where ``policy_file`` points: relative paths are under the plugin's data directory."""
    if settings.policy_file is None:
        return None
    path = Path(os.path.expanduser(settings.policy_file))
    return path if path.is_absolute() else data_dir / path


def _strings(value: object, path: str, issues: list[Issue]) -> tuple[str, ...]:
    if not isinstance(value, list):
        issues.append(Issue(path, f"expected a list of strings, got {type(value).__name__}"))
        return ()
    bad = [i for i, item in enumerate(value) if not isinstance(item, str)]
    for index in bad:
        issues.append(Issue(join(path, index), f"expected a string, got {type(value[index]).__name__}"))
    return tuple(item for item in value if isinstance(item, str))


def parse_policy_file(data: Mapping[str, Any], where: str, label: str) -> tuple[dict[str, RoleDef], dict[str, Binding]]:
    """The roles and principals of a policy file's TOML document.

    :param where: how issue paths start (``/etc/orion/rbac.toml:``).
    :param label: how rule names start (``rbac.toml:``).
    :raises ConfigError: unknown keys (with a did-you-mean) or values of the wrong type.
    """

    def at(prefix: str, *keys: object) -> str:
        rel = ""
        for key in keys:
            rel = join(rel, key)
        return f"{prefix} {rel}"

    issues: list[Issue] = []
    for key in data:
        if key not in _FILE_KEYS:
            issues.append(Issue(at(where, key), f"unknown key{did_you_mean(key, _FILE_KEYS)}"))
    roles: dict[str, RoleDef] = {}
    raw_roles = data.get("roles", {})
    if not isinstance(raw_roles, dict):
        issues.append(Issue(at(where, "roles"), f"expected a table of roles, got {type(raw_roles).__name__}"))
        raw_roles = {}
    for name, table in raw_roles.items():
        path = at(where, "roles", name)
        if not isinstance(table, dict):
            issues.append(Issue(path, f"expected a table with allow, deny, inherits; got {type(table).__name__}"))
            continue
        for key in table:
            if key not in _ROLE_KEYS:
                issues.append(Issue(join(path, key), f"unknown key{did_you_mean(key, _ROLE_KEYS)}"))
        roles[name] = RoleDef(
            name,
            allow=_strings(table.get("allow", []), join(path, "allow"), issues),
            deny=_strings(table.get("deny", []), join(path, "deny"), issues),
            inherits=_strings(table.get("inherits", []), join(path, "inherits"), issues),
            path=path,
            label=at(label, "roles", name),
        )
    principals: dict[str, Binding] = {}
    raw_principals = data.get("principals", {})
    if not isinstance(raw_principals, dict):
        issues.append(
            Issue(at(where, "principals"), f"expected a table of principal ids, got {type(raw_principals).__name__}")
        )
        raw_principals = {}
    for principal, value in raw_principals.items():
        path = at(where, "principals", principal)
        principals[principal] = Binding(principal, _strings(value, path, issues), path)
    if issues:
        raise ConfigError([ConfigIssue(i.path, i.message) for i in issues])
    return roles, principals


def read_policy_file(path: Path) -> tuple[dict[str, RoleDef], dict[str, Binding]]:
    """Read and parse a policy file.

    :raises ConfigError: it cannot be read, is not TOML, or has unknown keys or wrong types.
    """
    where = f"{path}:"
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError([ConfigIssue(f"{SETTINGS_PATH}.policy_file", f"cannot read {str(path)!r}: {why}")]) from None
    except Exception as exc:  # the in-process guard refusing the read (PermissionDenied)
        raise ConfigError(
            [
                ConfigIssue(
                    f"{SETTINGS_PATH}.policy_file",
                    f"cannot read {str(path)!r}: {type(exc).__name__}: {exc} (the rbac plugin always may read "
                    "its data directory: put the file there, with a relative policy_file)",
                )
            ]
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigIssue(where.rstrip(":"), f"not valid TOML: {exc}")]) from None
    return parse_policy_file(data, where, f"{path.name}:")


def build_policy(settings: RbacSettings, path: Path | None = None) -> Policy:
    """Compile the settings (and the policy file at ``path`` over them) into a :class:`Policy`.

    :param path: where ``policy_file`` points (see :func:`policy_path`), ``None`` for none.

    :raises ConfigError: every problem of the merged policy, each at its path (in the
        settings or in the file).
    """
    roles: dict[str, RoleDef] = {
        name: RoleDef(
            name,
            allow=role.allow,
            deny=role.deny,
            inherits=role.inherits,
            path=join(join(SETTINGS_PATH, "roles"), name),
            label=join("roles", name),
        )
        for name, role in settings.roles.items()
    }
    principals: dict[str, Binding] = {
        pid: Binding(pid, tuple(bound), join(join(SETTINGS_PATH, "principals"), pid))
        for pid, bound in settings.principals.items()
    }
    sources = ["settings"]
    if path is not None:
        file_roles, file_principals = read_policy_file(path)
        roles.update(file_roles)
        principals.update(file_principals)
        sources.append(str(path))
    issues = policy_issues(
        roles,
        principals,
        settings.default_roles,
        settings.anonymous_roles,
        default_path=f"{SETTINGS_PATH}.default_roles",
        anonymous_path=f"{SETTINGS_PATH}.anonymous_roles",
    )
    if issues:
        raise ConfigError([ConfigIssue(i.path, i.message) for i in issues])
    return Policy(
        roles,
        principals=principals,
        default_roles=settings.default_roles,
        anonymous_roles=settings.anonymous_roles,
        trust_operator=settings.trust_operator,
        cache_size=settings.cache_size,
        sources=sources,
    )
