"""Layer 1 of the sandbox: what each plugin asks for, what the operator granted, what it gets.

The manifest's ``permissions`` are the *asks* (placeholders filled in from
the plugin's settings), ``plugins.NAME.permissions`` in config the *grants*,
and ``kernel.sandbox.default`` the policy: under ``deny`` every ask must be
covered by a grant or the plugin does not start, with an error that lists
what is missing and the config line that would grant it; under ``allow``
every ask is granted.  What the plugin then holds, its *effective*
permissions, is its asks (never more than it asked, even under a broader
grant), plus what every plugin has implicitly: its own data directory and
the services it declared.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING
from typing import Any
from typing import Final

import attrs

from plugin_sdk import ManifestError
from plugin_sdk import Permission
from plugin_sdk import Permissions
from plugin_sdk import PermissionsNotGranted
from plugin_sdk import PermissionSyntaxError
from plugin_sdk import PluginState
from plugin_sdk import parse_permission
from plugin_sdk._permissions import expand

from ._config import SandboxDefault

if TYPE_CHECKING:
    from ._dispatch import HookRelay
    from ._lifecycle import PluginRecord

log: Final = logging.getLogger("orion.kernel.sandbox")


@attrs.frozen
class Grants:
    """One plugin's permissions, as ``plugins info`` shows them."""

    #: what the manifest asks for, placeholders filled in
    asked: Permissions = attrs.field(factory=Permissions)
    #: what the operator granted in config
    granted: Permissions = attrs.field(factory=Permissions)
    #: what the plugin holds: its asks that are covered, plus the implicit ones
    effective: Permissions = attrs.field(factory=Permissions)
    #: grants that cover none of its asks (reported, not an error)
    unused: tuple[str, ...] = ()


def data_dir_of(data_root: str | os.PathLike[str], name: str) -> str:
    """A plugin's data directory, absolute (it need not exist yet)."""
    return os.path.abspath(os.path.join(os.fspath(data_root), name))


def _placeholder_values(record: PluginRecord, data_dir: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    settings = record.settings
    if settings is not None and attrs.has(type(settings)):
        values.update({field.name: getattr(settings, field.name) for field in attrs.fields(type(settings))})
    elif isinstance(settings, dict):  # an isolated plugin's settings, as its worker structured them
        values.update(settings)
    values["data_dir"] = data_dir
    return values


def asked_permissions(record: PluginRecord, data_dir: str) -> Permissions:
    """The manifest's permissions with their placeholders filled in.

    :raises ManifestError: a placeholder names no setting, or the filled-in
        permission does not follow the grammar.
    """
    assert record.manifest is not None
    values = _placeholder_values(record, data_dir)
    asks = []
    for template in record.manifest.permissions:
        try:
            texts = expand(template, values, data_dir)
        except KeyError as exc:
            known = ", ".join(sorted(values))
            raise ManifestError(
                record.name,
                "permissions",
                f"{template!r}: placeholder {{{exc.args[0]}}} names no setting (known: {known})",
            ) from None
        except PermissionSyntaxError as exc:
            raise ManifestError(record.name, "permissions", str(exc)) from None
        for text in texts:  # none when a placeholder names an unset setting: nothing to ask for
            try:
                asks.append(parse_permission(text))
            except PermissionSyntaxError as exc:
                detail = f" (from {template!r})" if text != template else ""
                raise ManifestError(record.name, "permissions", f"{exc}{detail}") from None
    return Permissions(tuple(asks))


def implicit_permissions(record: PluginRecord, data_dir: str) -> list[Permission]:
    """What every plugin holds without asking: its data directory and its declared services."""
    assert record.manifest is not None
    found = [Permission("fs", "write", data_dir)]
    for service in (*record.manifest.requires, *record.manifest.optional):
        found.append(Permission("service", "", service))
    return found


def config_line(granted: Iterable[str], missing: Iterable[str]) -> str:
    """The ``permissions = [...]`` line granting what is granted now plus ``missing``."""
    merged = list(dict.fromkeys([*granted, *missing]))
    return "permissions = [" + ", ".join(f'"{text}"' for text in merged) + "]"


def resolve(record: PluginRecord, policy: SandboxDefault, data_root: str | os.PathLike[str]) -> Grants:
    """Work out one configured plugin's grants.

    :raises ManifestError: its manifest's permissions cannot be filled in.
    :raises PermissionsNotGranted: under ``deny``, an ask no grant covers.
    """
    data_dir = data_dir_of(data_root, record.name)
    asked = asked_permissions(record, data_dir)
    granted = Permissions.parse(record.entry.permissions)  # checked when the config was read
    implicit = implicit_permissions(record, data_dir)
    if policy == "deny":
        missing = Permissions((*granted, *implicit)).missing(asked)  # asking for what it holds anyway is fine
        if missing:
            texts = [str(p) for p in missing]
            raise PermissionsNotGranted(record.name, texts, config_line(record.entry.permissions, texts))
    covered = list(asked)  # all of them: under deny each is covered, under allow each is granted
    unused = tuple(str(grant) for grant in granted if not any(grant.covers(ask) for ask in asked))
    effective = Permissions(tuple(dict.fromkeys([*covered, *implicit])))
    return Grants(asked=asked, granted=granted, effective=effective, unused=unused)


def grant_records(records: Iterable[PluginRecord], policy: SandboxDefault, data_root: str | os.PathLike[str]) -> None:
    """Resolve the grants of every configured record; one that fails does not start."""
    for record in records:
        if record.state is not PluginState.CONFIGURED:
            continue
        try:
            record.grants = resolve(record, policy, data_root)
        except (ManifestError, PermissionsNotGranted) as exc:
            if isinstance(exc, PermissionsNotGranted):
                record.not_granted = tuple(exc.missing)
            record.fail(exc)
            record.state = PluginState.FAILED
            log.error("plugin %s: %s", record.name, exc)
            continue
        if record.grants.unused:
            log.info("plugin %s: granted but not asked for (ignored): %s", record.name, ", ".join(record.grants.unused))


def check_sensitive_hooks(relay: HookRelay, records: Iterable[PluginRecord], *, staged: bool = False) -> None:
    """A plugin implementing a ``sensitive`` hook needs ``hook:NAME`` in its effective permissions.

    One that lacks it is unregistered and failed (``staged``: a reload's new
    instance, registered under ``NAME.staged``, which the reload removes itself).
    """
    for record in records:
        if record.state is not PluginState.CONFIGURED:
            continue
        effective = record.grants.effective
        denied = [
            hook
            for hook in record.hooks
            if (spec := relay.specs.get(hook)) is not None
            and spec.options.sensitive
            and not effective.covers(Permission("hook", "", hook))
        ]
        if not denied:
            continue
        asked = {str(p) for p in record.grants.asked}
        not_asked = [hook for hook in denied if f"hook:{hook}" not in asked]
        texts = [f"hook:{hook}" for hook in denied]
        if not_asked:
            error: Exception = ManifestError(
                record.name,
                "permissions",
                f"implements the sensitive hook(s) {', '.join(not_asked)} but does not ask for "
                f"{', '.join('hook:' + h for h in not_asked)}",
            )
        else:
            error = PermissionsNotGranted(record.name, texts, config_line(record.entry.permissions, texts))
        if not staged:
            relay.unregister(record.name)
        record.hooks = []
        record.fail(error)
        record.state = PluginState.FAILED
        log.error("plugin %s: %s", record.name, error)
