"""The conformance suite: one catalogue of checks that every plugin must pass.

Three ways in, one implementation:

* in a test module, inherit :class:`PluginConformance` and set ``plugin``:
  the pytest plugin this distribution registers (``pytest11``) turns it into
  one test per check;
* ``orion-kernel conformance TARGET`` (an entry-point name, ``module:Class``
  or an installed distribution) prints a table, or ``--json``;
* :func:`run_conformance` returns a :class:`ConformanceReport`.

Checks are registered in :data:`CHECKS` by :func:`check`, so a check added in
a later SDK release reaches every plugin without the author editing anything.

What a plugin may declare for the suite, as class attributes:

* ``conformance_settings`` — example settings to start it with;
* ``conformance_hook_args`` — ``{hook: kwargs}`` to call its hooks with
  (hooks whose spec takes no argument are called without);
* ``conformance_providers`` — plugin classes providing the services it
  requires (default: installed plugins that provide them);
* ``conformance_opt_out`` — ``{check_id: reason}``; each must name a known
  check and carry a written reason; ``strict`` forbids opting out of core
  checks;
* ``optional_imports`` (a manifest field) — modules it must load without.

Operations are called with the ``example_args`` they were registered with.
"""

from __future__ import annotations

from . import _checks as _checks  # registers the checks
from ._suite import CHECKS as CHECKS
from ._suite import Check as Check
from ._suite import CheckFailed as CheckFailed
from ._suite import CheckResult as CheckResult
from ._suite import CheckSkipped as CheckSkipped
from ._suite import ConformanceReport as ConformanceReport
from ._suite import PluginConformance as PluginConformance
from ._suite import Status as Status
from ._suite import Subject as Subject
from ._suite import UnknownCheck as UnknownCheck
from ._suite import check as check
from ._suite import run_conformance as run_conformance
from ._suite import run_conformance_async as run_conformance_async

__all__ = [
    "CHECKS",
    "Check",
    "CheckFailed",
    "CheckResult",
    "CheckSkipped",
    "ConformanceReport",
    "PluginConformance",
    "Status",
    "Subject",
    "UnknownCheck",
    "check",
    "run_conformance",
    "run_conformance_async",
]
