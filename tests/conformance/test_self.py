"""The suite tests itself: every check has a broken plugin, and each fails exactly its check."""

from __future__ import annotations

import pytest

from conformance.broken import BROKEN
from conformance.broken import Good
from conformance.needs_uvicorn import EagerImport
from plugin_sdk.testing import CHECKS
from plugin_sdk.testing import Status
from plugin_sdk.testing import run_conformance

ALL_BROKEN = [*BROKEN, EagerImport]


def test_every_check_has_a_broken_plugin() -> None:
    covered = {cls.breaks for cls in ALL_BROKEN}
    assert sorted(set(CHECKS) - covered) == [], "add a plugin to tests/conformance/broken.py for each new check"
    assert covered <= set(CHECKS)


def test_the_plugin_they_are_broken_from_passes_every_check() -> None:
    report = run_conformance(Good)
    assert report.ok, report.failures()
    skipped = {r.id for r in report.results if r.status is Status.SKIP}
    assert skipped == {"hooks.known", "hooks.kind", "imports.optional", "services.protocols"}


@pytest.mark.parametrize("plugin", ALL_BROKEN, ids=[cls.__name__ for cls in ALL_BROKEN])
def test_each_broken_plugin_fails_exactly_its_check(plugin: type[Good]) -> None:
    report = run_conformance(plugin)
    failed = [r.id for r in report.failures()]
    assert failed == [plugin.breaks], [(r.id, r.reason) for r in report.failures()]
    assert report.by_id()[plugin.breaks].reason  # and says why
