"""The pytest plugin of the conformance suite (registered through the ``pytest11`` entry point).

Cheap and inert: importing it imports neither the kernel nor the suite, and it
acts only on tests that take a ``conformance_check`` argument (the one test
method of :class:`plugin_sdk.testing.PluginConformance`), parametrizing them
over every check the installed SDK has.  ``plugin_conformance`` is a fixture
returning :func:`plugin_sdk.testing.run_conformance` for function-style tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "conformance_check" not in metafunc.fixturenames:
        return
    from plugin_sdk.testing import CHECKS

    metafunc.parametrize("conformance_check", list(CHECKS), ids=list(CHECKS))


@pytest.fixture
def plugin_conformance() -> Callable[..., Any]:
    """:func:`plugin_sdk.testing.run_conformance`: ``plugin_conformance(MyPlugin).ok``."""
    from plugin_sdk.testing import run_conformance

    return run_conformance
