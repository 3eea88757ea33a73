"""``orion-kernel conformance``: targets, the table and --json, exit codes, --against."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from conformance.evolving import PREVIOUS_SOURCE

from kernel._cli import main
from plugin_sdk.testing import CHECKS


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_an_entry_point_that_conforms_prints_its_table_and_exits_0() -> None:
    code, text = run("conformance", "metrics")
    assert code == 0, text
    assert text.splitlines()[0] == "metrics: conforms"
    for check_id in CHECKS:
        assert check_id in text
    assert "opted out: it is the kernel's dispatch observer" in text  # each skip says why


def test_a_failure_is_named_with_its_reason_and_exits_1_in_json_too() -> None:
    code, text = run("conformance", "conformance.broken:FailingOperation", "--json")
    assert code == 1
    [report] = json.loads(text)
    assert report["plugin"] == "failing_operation" and report["ok"] is False
    failed = [c for c in report["checks"] if c["status"] == "fail"]
    assert [c["id"] for c in failed] == ["operations.callable"]
    assert "no greeting today" in failed[0]["reason"]


def test_a_distribution_means_every_plugin_it_ships() -> None:
    # One cheap check each: the whole suite on every builtin runs in tests/test_conformance.py.
    code, text = run("conformance", "orion-kernel", "--json", "--only", "manifest.valid")
    assert code == 0, text
    reports = json.loads(text)
    monitoring = ["alerts", "analytics", "dashboard", "health", "http", "metrics"]
    security = ["audit", "auth", "crypto", "rbac", "scanner", "secrets"]
    assert sorted(r["plugin"] for r in reports) == sorted(monitoring + security)
    assert {c["id"] for r in reports for c in r["checks"]} == {"manifest.valid"}


def test_only_names_a_known_check() -> None:
    code, text = run("conformance", "conformance.broken:Good", "--only", "no.such.check")
    assert code == 2
    assert "unknown check(s) 'no.such.check'" in text


@pytest.mark.parametrize("target", ["nope", "no.such.module:Thing", "conformance.broken:missing"])
def test_a_target_that_names_nothing_is_a_usage_error(target: str) -> None:
    code, text = run("conformance", target)
    assert code == 2
    assert text.startswith("error: ") and target.split(":")[-1] in text


def test_strict_refuses_an_opt_out_of_a_core_check() -> None:
    code, text = run("conformance", "conformance.broken:Good", "--strict")
    assert code == 0, text
    code, text = run("conformance", "builtin_plugins.monitoring.metrics:Metrics", "--strict")
    assert code == 0, text  # isolation.process is not a core check


def previous_release(root: Path) -> Path:
    """An unpacked 1.0 of the ``evolving`` plugin: its module and its dist-info."""
    root.mkdir()
    (root / "evolving_v1.py").write_text(PREVIOUS_SOURCE)
    info = root / "evolving-1.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: evolving\nVersion: 1.0.0\n")
    (info / "entry_points.txt").write_text("[orion_kernel.plugins]\nevolving = evolving_v1:Evolving\n")
    return root


def test_against_a_previous_release_passes_a_compatible_one(tmp_path: Path) -> None:
    previous = previous_release(tmp_path / "v1")
    code, text = run("conformance", "conformance.evolving:Evolving", "--against", str(previous), "--json")
    assert code == 0, text
    [report] = json.loads(text)
    compat = report["checks"][-1]
    assert compat == {
        "id": "compat.previous",
        "title": "backward compatible with 1.0.0",
        "status": "pass",
        "reason": "",
    }


def test_against_a_previous_wheel_names_every_break(tmp_path: Path) -> None:
    previous = previous_release(tmp_path / "v1")
    wheel = tmp_path / "evolving-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path in previous.rglob("*"):
            if path.is_file():
                archive.write(path, path.relative_to(previous))
    code, text = run("conformance", "conformance.evolving:Broken", "--against", str(wheel), "--json")
    assert code == 1
    [report] = json.loads(text)
    compat = report["checks"][-1]
    assert compat["status"] == "fail"
    assert compat["reason"] == (
        "settings removed: ['retries']; settings now required without a default: ['token']; "
        "operations removed: ['evolving.count']; provided services removed: ['evolving']"
    )
    code, text = run("conformance", "metrics", "--against", str(tmp_path / "nothing.whl"))
    assert code == 2 and "expected a wheel file" in text
