"""Every hook of the kernel, as reference documentation.

Each spec says when it is called, what its arguments are, what a return value
means, whether it is sync or async, and how results combine (collected into
a list or first result).  Call a hook from kernel code with
``kernel.hooks.call(spec, **kwargs)``; mypy checks the arguments against the
spec below.  Implement one in a plugin with a method of the same name marked
``@hookimpl``; an impl may take any subset of the spec's arguments.

Plugins may add hooks of their own: put ``@hookspec`` functions in a module and
list it in the plugin's ``hookspecs`` manifest field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs

from ._cli import CliCommand
from ._http import HttpMount
from ._invocation import Principal
from ._markers import hookspec
from ._plugin import Manifest
from ._plugin import PluginState
from ._security import Credentials
from ._security import Decision


@attrs.frozen
class HealthStatus:
    """One plugin's answer to :func:`check_health`."""

    #: the plugin can do its job
    ok: bool
    #: why not (or a short note when ok)
    reason: str = ""


@attrs.frozen
class AlertEvent:
    """An alert changed state; what :func:`alert_notify` receives."""

    #: the rule's name from config
    rule: str
    #: ``firing`` when the condition has held for the rule's ``for`` duration,
    #: ``resolved`` when it stops holding
    state: Literal["firing", "resolved"]
    #: the labels of the series that triggered it (plus the rule's own labels)
    labels: Mapping[str, str]
    #: the value the rule compared, at the time of the change
    value: float
    #: a one-line human summary, e.g. ``error ratio 0.31 > 0.1 for 60s``
    summary: str
    #: when the alert started firing (seconds since the epoch)
    since: float
    #: the rule's severity label (``warning`` by default)
    severity: str = "warning"


# --------------------------------------------------------------------------
# Command line: called on every loaded plugin before anything starts
# --------------------------------------------------------------------------


@hookspec(participants="loaded", policy="isolate")
def cli_commands() -> list[CliCommand]:
    """Contribute sub-commands to ``orion-kernel``.

    Called once per CLI run on every *enabled and loaded* plugin, before any
    plugin starts, so a command can run with or without a started kernel
    (``env.started()``).  Sync; results collected.

    :returns: the plugin's commands (names must not clash with the kernel's
        own commands or another plugin's; a clash is reported and skipped).
    """
    raise NotImplementedError


# --------------------------------------------------------------------------
# Lifecycle: called on running plugins
# --------------------------------------------------------------------------


@hookspec(policy="isolate")
def plugin_state_changed(plugin: str, old: PluginState, new: PluginState) -> None:
    """A plugin moved from state ``old`` to state ``new``.

    Called synchronously, right after the change, on every running plugin
    (monitoring keeps a state gauge with it).  Sync; return values are ignored.

    :param plugin: the name of the plugin whose state changed.
    :param old: its previous state.
    :param new: its new state.
    """


@hookspec(policy="isolate", timeout=30.0)
async def kernel_started() -> None:
    """Every enabled plugin has been started (some may have failed).

    Async, awaited in hook order, one deadline for the whole call (30 s by
    default, ``kernel.hook_timeouts.kernel_started`` to change it).  Return
    values are ignored; an impl that fails is recorded and skipped.
    """


@hookspec(policy="isolate", timeout=30.0)
async def kernel_stopping() -> None:
    """The kernel is about to stop its plugins.

    Async, awaited in hook order before the first plugin stops, bounded like
    :func:`kernel_started`.  Return values are ignored.
    """


# --------------------------------------------------------------------------
# HTTP: what running plugins serve through the http plugin
# --------------------------------------------------------------------------


@hookspec(policy="isolate")
def http_mounts() -> list[HttpMount]:
    """Contribute ASGI apps to the kernel's HTTP server.

    Called by the ``http`` plugin when it starts and again whenever a plugin
    starts or stops, on every running plugin.  Sync; results collected per
    plugin (the server mounts each app under its ``prefix``, by default
    ``/<plugin name>``; a prefix already taken is logged and skipped).

    :returns: the plugin's mounts (usually one).
    """
    raise NotImplementedError


# --------------------------------------------------------------------------
# Alerts: how firing and resolved alerts leave the kernel
# --------------------------------------------------------------------------


@hookspec(policy="isolate", timeout=10.0, concurrent=True)
async def alert_notify(event: AlertEvent) -> None:
    """Deliver an alert that started firing or was resolved.

    Called by the ``alerts`` plugin once per state change (duplicates are
    suppressed there, silenced alerts are not delivered).  Async and
    concurrent: every notifier runs at once under one deadline (10 s by
    default), so a notifier that fails or hangs is recorded and the others
    still deliver.

    :param event: the alert and its new state.
    """


# --------------------------------------------------------------------------
# Health: collected from every running plugin
# --------------------------------------------------------------------------


@hookspec(policy="isolate", timeout=5.0, concurrent=True)
async def check_health() -> HealthStatus | None:
    """Report whether the plugin is healthy.

    Async and concurrent: every impl runs at once, and the whole call is
    bounded by one deadline (5 s by default), so a hanging check is reported
    as a timeout against its plugin and never hangs the caller.

    :returns: a :class:`HealthStatus`, or ``None`` for "nothing to report".
    """


# --------------------------------------------------------------------------
# Security: who calls, what they may do, which plugins may start
# --------------------------------------------------------------------------


@attrs.frozen
class VetVerdict:
    """A vetting plugin's answer to :func:`vet_plugin`."""

    #: do not start the plugin
    refuse: bool
    #: why (shown in the plugin's error and in ``plugins info``)
    reason: str = ""


@hookspec(firstresult=True, policy="fail_fast", timeout=10.0)
async def authenticate(credentials: Credentials, operation: str) -> Principal | None:
    """Turn credentials presented with an invoke into a :class:`~plugin_sdk.Principal`.

    Called by the ``auth`` plugin's authenticate step for credentials its own
    schemes do not recognise (a third party adds e.g. mTLS or OIDC this way).
    Async, first result: the first impl that returns a principal wins; return
    ``None`` for "not mine", raise :class:`~plugin_sdk.NotAuthenticated` for
    "mine, and invalid": the error reaches the caller as raised (policy
    ``fail_fast``), and so does any other error (the call fails closed).

    :param credentials: what the caller presented (never log ``secret``).
    :param operation: the operation being invoked.
    """


@hookspec(policy="isolate", timeout=5.0, sensitive=True)
async def authorize(principal: Principal | None, action: str) -> Decision | None:
    """Take part in an authorization decision (sensitive: implementing it needs ``hook:authorize``).

    Called by the ``rbac`` plugin after its policy decided, on every running
    plugin granted ``hook:authorize``.  Async, in hook order, results
    collected.  An impl may deny (``Decision(allowed=False, ...)``) -- a deny
    from the policy or from any impl always wins -- or allow an action that no
    policy rule covers; ``None`` abstains.  An impl that fails or times out
    counts as a deny (fail closed).

    :param principal: the authenticated caller (``None``: anonymous).
    :param action: what is asked, e.g. ``invoke:tools.search``.
    """


@hookspec(policy="isolate", timeout=60.0, concurrent=True, sensitive=True)
async def vet_plugin(plugin: str, manifest: Manifest, module: str) -> VetVerdict | None:
    """Decide whether another plugin may start (sensitive: implementing it needs ``hook:vet_plugin``).

    Plugins that implement this hook start before every other plugin; then,
    right before each other plugin starts, the kernel calls it on the running
    vetters.  Async and concurrent under one deadline.  A verdict with
    ``refuse=True`` -- or an impl that fails or times out (fail closed) --
    keeps the plugin from starting, with the reason as its error.

    :param plugin: the name of the plugin about to start.
    :param manifest: its manifest (name, version, permissions, ...).
    :param module: the import name of the module that defines its class.
    """


# Resolve string annotations before the public package renames __module__.
attrs.resolve_types(HealthStatus)
attrs.resolve_types(AlertEvent)
attrs.resolve_types(VetVerdict)
