"""The third-party road, end to end: examples/orion-notes built, installed and run in a fresh venv.

One virtual environment gets orion-kernel (non-editable, as from an index) and
the example plugin's wheel with its ``test`` extra; then, as an operator and as
the plugin's author would: the plugin is discovered through its entry point and
enabled by the example ``orion.toml``, its operation is invoked from the command
line, ``orion-kernel conformance`` passes, and the package's own tests pass
against the installed wheel.  Builds run on copies, so nothing is written into
the repository (setuptools builds in the source tree).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fresh_venv import REPO
from fresh_venv import Venv

pytestmark = pytest.mark.slow

EXAMPLE = REPO / "examples" / "orion-notes"
#: what setuptools, pytest and the kernel leave in a source tree
_LITTER = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", ".pytest_cache", ".orion")


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    root = tmp_path_factory.mktemp("example-plugin")
    kernel_source = root / "orion-kernel"
    kernel_source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, kernel_source / name)
    for package in ("kernel", "plugin_sdk", "builtin_plugins"):
        shutil.copytree(REPO / package, kernel_source / package, ignore=_LITTER)
    notes_source = root / "orion-notes"
    shutil.copytree(EXAMPLE, notes_source, ignore=_LITTER)

    env = Venv.create(root / "venv")
    env.install(kernel_source)  # not editable: the SDK comes from site-packages, as for any plugin author
    wheels = root / "wheels"
    env.run("python", "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", wheels, notes_source)
    [wheel] = wheels.glob("orion_notes-1.0.0-*.whl")
    env.install(f"{wheel}[test]")
    return env


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An operator's directory holding a verbatim copy of the example orion.toml.

    The copy keeps its data under /var/lib/orion; the operator relocates it into
    the test's directory the documented way, with ORION__ overrides of
    ``kernel.data_dir`` and of the grant that goes with it.
    """
    shutil.copy2(EXAMPLE / "orion.toml", tmp_path / "orion.toml")
    state = tmp_path / "state"
    monkeypatch.setenv("ORION__KERNEL__DATA_DIR", str(state))
    monkeypatch.setenv("ORION__PLUGINS__NOTES__PERMISSIONS", json.dumps([f"fs:write:{state}/notes/*"]))
    return tmp_path


def orion(venv: Venv, project: Path, *args: str, check: bool = True) -> Any:
    done = venv.run("orion-kernel", *args, "--json", cwd=project, check=check)
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None, done


def test_the_example_config_is_valid_as_shipped(venv: Venv, tmp_path: Path) -> None:
    shutil.copy2(EXAMPLE / "orion.toml", tmp_path / "orion.toml")
    done = venv.run("orion-kernel", "config", "check", cwd=tmp_path)
    assert "ok (1 plugin(s) enabled: notes)" in done.stdout


def test_discovered_through_its_entry_point_and_enabled(venv: Venv, project: Path) -> None:
    _, rows, _ = orion(venv, project, "plugins", "list")
    [notes] = [row for row in rows if row["name"] == "notes"]
    assert notes["enabled"] is True and notes["version"] == "1.0.0"
    assert notes["source"].startswith("entry point orion-notes 1.0.0"), notes["source"]
    assert "orion_notes:Notes" in notes["source"]
    _, info, _ = orion(venv, project, "plugins", "info", "notes")
    grant = f"fs:write:{project / 'state'}/notes/*"
    assert info["asked"] == [grant] and info["granted"] == [grant]
    assert info["provides"] == ["notes"] and info["hooks"] == ["check_health"]
    assert set(info["settings"]) == {"max_notes", "max_text_length", "file_name"}
    located = venv.run("python", "-c", "import orion_notes; print(orion_notes.__file__)", cwd=project)
    assert Path(located.stdout.strip()).is_relative_to(venv.path), "the wheel, not the source tree, is imported"


def test_its_operations_from_the_command_line(venv: Venv, project: Path) -> None:
    _, added, _ = orion(venv, project, "invoke", "notes.add", "--args", '{"text": "hi"}')
    assert added["ok"] is True and added["result"]["text"] == "hi" and added["result"]["id"] == 1
    _, found, _ = orion(venv, project, "invoke", "notes.search", "--args", '{"query": "HI"}')  # a new kernel process
    assert [note["text"] for note in found["result"]] == ["hi"]
    stored = json.loads((project / "state" / "notes" / "notes.json").read_text())
    assert [note["text"] for note in stored["notes"]] == ["hi"]
    code, refused, _ = orion(venv, project, "invoke", "notes.add", "--args", '{"text": 5}', check=False)
    assert code == 1 and refused["error"] == "InvalidArguments"
    assert "args.text: expected a string, got int" in refused["message"]


def test_the_conformance_command_passes(venv: Venv, project: Path) -> None:
    done = venv.run("orion-kernel", "conformance", "notes", cwd=project, check=False)
    assert done.returncode == 0, f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"


def test_the_package_tests_pass_against_the_installed_wheel(venv: Venv, tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    shutil.copytree(EXAMPLE / "tests", tests, ignore=_LITTER)
    done = venv.run("python", "-m", "pytest", "-v", "-rs", "-p", "no:cacheprovider", cwd=tests, check=False)
    assert done.returncode == 0, f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    # the conformance class got one test per check from the pytest11 plugin installed with orion-kernel
    for check in ("manifest.valid", "lifecycle.no_leaks", "operations.callable"):
        assert f"test_conformance.py::TestNotesConformance::test_conformance[{check}] PASSED" in done.stdout
    assert "test_notes.py::test_add_then_search PASSED" in done.stdout
