"""The conformance suite's API (plugin_sdk.testing): builtin plugins pass, opt-outs, the pytest face.

The broken plugins, one per check, are in tests/conformance/.
"""

from __future__ import annotations

import os
import tempfile
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import anyio
import pytest
from conformance.broken import FdLeaker
from conformance.broken import Good
from conformance.broken import WrongArguments

from plugin_sdk import OPERATOR
from plugin_sdk import Invocation
from plugin_sdk import PermissionDenied
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk.testing import CHECKS
from plugin_sdk.testing import Status
from plugin_sdk.testing import UnknownCheck
from plugin_sdk.testing import run_conformance
from plugin_sdk.testing import run_conformance_async

pytest_plugins = ["pytester"]

#: every plugin this distribution ships, found the way the kernel finds them
BUILTIN = sorted(ep.name for ep in entry_points(group="orion_kernel.plugins") if ep.value.startswith("builtin_plugins"))


#: a RAM-backed directory for the suite's data directories, where there is one: the security
#: plugins fsync their files at every start and stop, which cancellation.start repeats dozens of
#: times, and on a busy CI disk that alone took audit past the suite's 120 s bound per check
#: (durability itself is proven by their own tests, on disk)
RAM_DIR = Path("/dev/shm")


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_plugin_passes(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if RAM_DIR.is_dir() and os.access(RAM_DIR, os.W_OK):
        monkeypatch.setattr(tempfile, "tempdir", str(RAM_DIR))
    [ep] = [ep for ep in entry_points(group="orion_kernel.plugins") if ep.name == name]
    report = run_conformance(ep.load())
    assert report.ok, [(r.id, r.reason) for r in report.failures()]
    assert [r.id for r in report.results] == list(CHECKS)
    for result in report.results:  # a skip is never silent
        assert result.status is Status.PASS or result.reason


def test_bad_example_settings_fail_the_defaults_check() -> None:
    report = run_conformance(Good, settings={"greeting": 5}, only=["config.defaults"])
    assert report.by_id()["config.defaults"].status is Status.FAIL
    assert "plugins.good.settings.greeting" in report.by_id()["config.defaults"].reason


def test_opt_outs_need_a_known_check_and_a_reason() -> None:
    report = run_conformance(FdLeaker, opt_out={"lifecycle.no_leaks": "the pipe is the test's"})
    assert report.ok
    assert report.by_id()["lifecycle.no_leaks"].reason == "opted out: the pipe is the test's"
    with pytest.raises(UnknownCheck, match=r"lifecycle\.no_leak"):
        run_conformance(Good, opt_out={"lifecycle.no_leak": "typo"})
    with pytest.raises(ValueError, match="needs a written reason"):
        run_conformance(Good, opt_out={"lifecycle.no_leaks": " "})
    with pytest.raises(ValueError, match="strict"):
        run_conformance(Good, opt_out={"lifecycle.no_leaks": "because"}, strict=True)
    run_conformance(Good, opt_out={"isolation.process": "not a core check"}, strict=True)
    with pytest.raises(UnknownCheck, match="no check 'nope'"):
        run_conformance(Good, only=["nope"])


def test_a_plugin_declares_its_own_example_settings_and_opt_outs() -> None:
    class Declared(Good):
        name = "declared"
        conformance_settings = {"greeting": "hi"}  # noqa: RUF012
        conformance_opt_out = {"operations.callable": "calls a paid API"}  # noqa: RUF012

    report = run_conformance(Declared)
    assert report.ok
    assert report.by_id()["operations.callable"].status is Status.SKIP
    assert report.by_id()["isolation.process"].reason.startswith("its class is not importable")


def test_a_check_that_only_repeats_a_failure_is_skipped_with_the_reason() -> None:
    report = run_conformance(WrongArguments, only=["lifecycle.start_stop"])
    [result] = report.results
    assert result.status is Status.SKIP
    assert "hooks.known" in result.reason


def test_it_runs_inside_a_running_loop_and_reports_as_json() -> None:
    report = anyio.run(run_conformance_async, Good)
    assert report.ok
    data = report.to_json()
    assert data["plugin"] == "good" and data["ok"] is True
    assert [c["id"] for c in data["checks"]] == list(CHECKS)
    assert {c["status"] for c in data["checks"]} <= {"pass", "skip"}


def test_the_pytest_face_is_one_test_per_check(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mine="""
        from plugin_sdk.testing import PluginConformance
        from conformance.broken import FailingOperation, Good

        class TestGood(PluginConformance):
            plugin = Good

        class TestFailing(PluginConformance):
            plugin = FailingOperation

        def test_function_style(plugin_conformance):
            assert plugin_conformance(Good).ok
        """
    )
    pytester.syspathinsert(str(Path(__file__).resolve().parent))
    result = pytester.runpytest("-q", "-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    n = len(CHECKS)
    skips_good = 4  # hooks.known, hooks.kind, imports.optional, services.protocols
    assert outcomes.get("failed") == 1, result.stdout.str()
    assert outcomes.get("passed") == (n - skips_good) + (n - skips_good - 1) + 1
    result.stdout.fnmatch_lines(["*TestFailing::test_conformance[[]operations.callable[]]*"])


def render_check_list() -> str:
    from plugin_sdk.testing import CHECKS

    return "\n".join(f"- `{c.id}` — {c.title}{'' if c.core else ' (not core)'}" for c in CHECKS.values())


def test_the_plugin_guide_lists_every_check() -> None:
    guide = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text()
    block = guide.split("<!-- checks:begin -->\n", 1)[1].split("\n<!-- checks:end -->", 1)[0]
    assert block == render_check_list(), "update the checks block of docs/plugins.md:\n" + render_check_list()


def test_the_pytest_plugin_is_cheap_and_inert_until_used() -> None:
    import subprocess
    import sys

    probe = (
        "import sys; import plugin_sdk.pytest_plugin; "
        "print(sorted(m for m in ('kernel', 'plugin_sdk.testing') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"  # it loads neither the kernel nor the suite until a test asks
    [ep] = [ep for ep in entry_points(group="pytest11") if ep.name == "orion_kernel_conformance"]
    assert ep.value == "plugin_sdk.pytest_plugin"


class AdminOnly(Plugin):
    """An operation that refuses anyone but an operator, as the security plugins' admin operations do."""

    name = "admin_only"

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.register_operation("admin_only.list", self.list_, example_args={})

    async def list_(self, inv: Invocation) -> list[str]:
        if inv.principal is None or inv.principal.kind != "operator":
            raise PermissionDenied("admin_only.list is for operators")
        return []


def test_operations_are_invoked_as_the_conformance_principal() -> None:
    refused = run_conformance(AdminOnly, only=["operations.callable"])
    assert not refused.ok and "PermissionDenied" in refused.failures()[0].reason
    as_operator = type("AsOperator", (AdminOnly,), {"conformance_principal": OPERATOR})
    assert run_conformance(as_operator, only=["operations.callable"]).ok


def test_a_conformance_principal_must_be_a_principal() -> None:
    wrong = type("Wrong", (AdminOnly,), {"conformance_principal": "operator"})
    with pytest.raises(TypeError, match=r"conformance_principal must be a plugin_sdk\.Principal"):
        run_conformance(wrong, only=["manifest.valid"])
