"""``orion-kernel new-plugin``: the plugin project it writes, checked file by file and then run.

The fast tests check what is written, that bad names and used directories
are refused with nothing written, that the generated code is ruff-clean and
that the generated project's own tests pass against the kernel of this
checkout.  The slow test installs orion-kernel and the generated project
into a fresh virtual environment and runs the project's tests and
``orion-kernel conformance`` there, as a plugin author would.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import tomllib
import uuid
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest
from fresh_venv import REPO
from fresh_venv import Venv
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from kernel import _scaffold
from kernel._scaffold import ScaffoldError
from kernel._scaffold import write_project
from plugin_sdk import Manifest
from plugin_sdk import OrionError
from plugin_sdk import __version__ as SDK_VERSION

NAME = "web_search"
FILES = {
    "pyproject.toml",
    "README.md",
    ".gitignore",
    "src/orion_web_search/__init__.py",
    "src/orion_web_search/py.typed",
    "tests/test_plugin.py",
    "tests/test_conformance.py",
}
#: the longest valid name, for line-length trouble
LONGEST = "a" * 64


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="orion-kernel new-plugin")
    _scaffold.add_arguments(parser)
    return parser.parse_args(list(argv))


def new_plugin(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = _scaffold.run(parse(*argv), out)
    return code, out.getvalue()


def tree(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}


def load_module(project: Path, name: str = NAME) -> ModuleType:
    """Import the generated package under a unique module name (no sys.path or sys.modules left behind)."""
    path = project / "src" / f"orion_{name}" / "__init__.py"
    spec = importlib.util.spec_from_file_location(f"scaffolded_{uuid.uuid4().hex}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def project(tmp_path: Path) -> Path:
    directory = tmp_path / "project"
    write_project(NAME, directory)
    return directory


# -- what is written ------------------------------------------------------------------------------------


def test_writes_the_whole_project_and_returns_the_files(tmp_path: Path) -> None:
    written = write_project(NAME, tmp_path / "p")
    assert {p.relative_to(tmp_path / "p").as_posix() for p in written} == FILES
    assert tree(tmp_path / "p") == FILES
    assert all(p.is_file() for p in written)


def test_pyproject_names_the_distribution_entry_point_and_layout(project: Path) -> None:
    data = tomllib.loads((project / "pyproject.toml").read_text())
    assert data["build-system"]["build-backend"] == "setuptools.build_meta"
    meta = data["project"]
    assert meta["name"] == "orion-web-search"
    assert meta["version"] == "0.1.0"
    assert meta["optional-dependencies"]["test"] == ["pytest>=8"]
    assert meta["entry-points"]["orion_kernel.plugins"] == {NAME: "orion_web_search:WebSearch"}
    assert data["tool"]["setuptools"]["packages"]["find"]["where"] == ["src"]
    assert data["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]
    [requirement] = [Requirement(r) for r in meta["dependencies"]]
    assert requirement.name == "orion-kernel"
    assert requirement.specifier.contains(metadata.version("orion-kernel"), prereleases=True)


def test_generated_ruff_settings_are_the_kernels(project: Path) -> None:
    mine = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["ruff"]
    theirs = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["ruff"]
    assert theirs["line-length"] == mine["line-length"] == _scaffold.LINE_LENGTH
    assert theirs["lint"]["select"] == mine["lint"]["select"]
    assert theirs["lint"]["ignore"] == mine["lint"]["ignore"]
    assert theirs["lint"]["isort"]["force-single-line"] is True


def test_the_plugin_imports_and_its_manifest_is_valid(project: Path) -> None:
    module = load_module(project)
    cls = module.WebSearch
    manifest = Manifest.of(cls())
    assert manifest.name == NAME
    assert manifest.version == module.__version__ == "0.1.0"
    assert SpecifierSet(manifest.sdk).contains(SDK_VERSION, prereleases=True)
    assert manifest.sdk == _scaffold.sdk_range()
    assert manifest.Config().greeting == "hello"
    assert (project / "src" / "orion_web_search" / "py.typed").is_file()


def test_tests_use_the_kernel_and_the_conformance_suite(project: Path) -> None:
    tests = (project / "tests" / "test_plugin.py").read_text()
    assert "from kernel import Kernel" in tests
    assert "entry_points=False" in tests
    assert "anyio.run(" in tests
    conformance = (project / "tests" / "test_conformance.py").read_text()
    assert "from plugin_sdk.testing import PluginConformance" in conformance
    assert "class TestWebSearchConformance(PluginConformance):\n    plugin = WebSearch\n" in conformance


def test_readme_tells_how_to_enable_test_and_publish(project: Path) -> None:
    readme = (project / "README.md").read_text()
    for text in (
        "pip install -e '.[test]'",
        "[plugins.web_search]\nenabled = true",
        "python -m pytest",
        "orion-kernel conformance web_search",
        "python -m build",
        "twine upload",
        f'sdk = "{_scaffold.sdk_range()}"',
    ):
        assert text in readme


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("1.0.0", ">=1.0,<2"),
        ("0.1.0", ">=0.1,<1"),
        ("0.1.7", ">=0.1,<1"),
        ("2.3.1", ">=2.3,<3"),
        ("3", ">=3.0,<4"),
        ("1.1.0rc1", ">=1.1.0rc1,<2"),
        ("1.2.0.dev3", ">=1.2.0.dev3,<2"),
    ],
)
def test_compatible_range(version: str, expected: str) -> None:
    assert _scaffold.compatible_range(version) == expected
    assert SpecifierSet(expected).contains(version, prereleases=True)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("web_search", "WebSearch"), ("a1_b2", "A1B2"), ("plugin", "PluginPlugin"), ("none", "NonePlugin")],
)
def test_class_names(name: str, expected: str) -> None:
    assert _scaffold.class_name(name) == expected


def test_a_name_the_generated_code_uses_gets_a_class_of_its_own(tmp_path: Path) -> None:
    write_project("plugin_context", tmp_path / "p")
    module = load_module(tmp_path / "p", "plugin_context")
    assert Manifest.of(module.PluginContextPlugin()).name == "plugin_context"


# -- what is refused ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["Web-Search", "web-search", "1abc", "", "a__b", "_a", "a_", "a b", "a" * 65, "web.search", "é"]
)
def test_bad_names_are_refused_naming_the_name_and_the_rule(tmp_path: Path, name: str) -> None:
    with pytest.raises(ScaffoldError) as caught:
        write_project(name, tmp_path / "p")
    assert isinstance(caught.value, OrionError)
    assert repr(name) in str(caught.value)
    assert "lowercase letters and digits" in str(caught.value)
    assert not (tmp_path / "p").exists()

    code, output = new_plugin(name, "--dir", str(tmp_path / "q"))
    assert code == 2
    assert output.startswith("error: ") and repr(name) in output
    assert not (tmp_path / "q").exists()


def test_a_near_miss_gets_a_suggestion() -> None:
    with pytest.raises(ScaffoldError, match=r"did you mean 'web_search'\?"):
        write_project("Web-Search", Path("p"))
    assert not Path("p").exists()


def test_the_kernels_own_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match="orion-kernel"):
        write_project("kernel", tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_a_non_empty_directory_is_refused_and_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(ScaffoldError, match="not empty"):
        write_project(NAME, target)
    code, output = new_plugin(NAME, "--dir", str(target))
    assert code == 2
    assert "not empty" in output and str(target) in output
    assert tree(target) == {"notes.txt"}
    assert (target / "notes.txt").read_text() == "mine"


def test_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    code, output = new_plugin(NAME, "--dir", str(tmp_path / "file"))
    assert code == 2
    assert "not a directory" in output
    assert (tmp_path / "file").read_text() == "x"


def test_an_empty_directory_is_used(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    write_project(NAME, tmp_path / "empty")
    assert tree(tmp_path / "empty") == FILES


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Path.write_text
    calls = []

    def failing(self: Path, *args: object, **kwargs: object) -> int:
        calls.append(self)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "write_text", failing)
    with pytest.raises(OSError, match="No space"):
        write_project(NAME, tmp_path / "new" / "p")
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    calls.clear()
    with pytest.raises(OSError, match="No space"):
        write_project(NAME, tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []


# -- the command ----------------------------------------------------------------------------------------


def test_default_directory_is_orion_name_with_dashes(tmp_path: Path) -> None:
    code, output = new_plugin(NAME)  # the autouse fixture runs each test in tmp_path
    assert code == 0, output
    assert tree(tmp_path / "orion-web-search") == FILES
    assert "orion-web-search" in output
    assert "src/orion_web_search/__init__.py" in output
    assert "orion-kernel conformance web_search" in output


def test_dir_option_creates_missing_parents(tmp_path: Path) -> None:
    code, output = new_plugin("notes", "--dir", str(tmp_path / "a" / "b"))
    assert code == 0, output
    assert "src/orion_notes/__init__.py" in tree(tmp_path / "a" / "b")


def test_a_file_system_error_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Path, *args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "write_text", refuse)
    code, output = new_plugin(NAME, "--dir", str(tmp_path / "p"))
    assert code == 1
    assert output.startswith("error: cannot write the project: [Errno 13] Permission denied")
    assert not (tmp_path / "p").exists()


def test_json_output_when_the_cli_asks_for_it(tmp_path: Path) -> None:
    args = parse(NAME, "--dir", str(tmp_path / "p"))
    args.json = True
    out = io.StringIO()
    assert _scaffold.run(args, out) == 0
    data = json.loads(out.getvalue())
    assert data["ok"] is True and set(data["files"]) == FILES
    out = io.StringIO()
    assert _scaffold.run(args, out) == 2
    assert json.loads(out.getvalue())["error"] == "ScaffoldError"


# -- the generated project, run -------------------------------------------------------------------------

ruff_missing = importlib.util.find_spec("ruff") is None


@pytest.mark.parametrize("name", [NAME, "plugin", "x1_y2", LONGEST, "ab_" * 21 + "a"])
def test_generated_code_is_ruff_clean(tmp_path: Path, name: str) -> None:
    project = tmp_path / "p"
    write_project(name, project)
    assert all(len(line) <= _scaffold.LINE_LENGTH for p in project.rglob("*.py") for line in p.read_text().splitlines())
    if ruff_missing:
        pytest.skip("ruff is not installed")
    ruff = [sys.executable, "-m", "ruff"]
    # The kernel's ruff config, told what a separate project's imports are (the checkout's src
    # would otherwise make kernel and plugin_sdk first-party); then the project's own config.
    kernel_config = [
        "--config",
        str(REPO / "pyproject.toml"),
        "--config",
        f"lint.isort.known-first-party = ['orion_{name}']",
        "--config",
        "lint.isort.known-third-party = ['kernel', 'plugin_sdk']",
    ]
    for argv, cwd in (
        ([*ruff, "check", "--no-cache", *kernel_config, str(project)], tmp_path),
        ([*ruff, "format", "--check", "--no-cache", "--config", str(REPO / "pyproject.toml"), str(project)], tmp_path),
        ([*ruff, "check", "--no-cache", "."], project),
        ([*ruff, "format", "--check", "--no-cache", "."], project),
    ):
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{' '.join(argv)}\n{done.stdout}\n{done.stderr}"


def test_generated_tests_pass_against_this_checkout(project: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(project / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(project / "tests")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    passed = re.search(r"(\d+) passed", done.stdout)
    assert passed and int(passed.group(1)) >= 3 + 1, done.stdout  # test_plugin.py, then a test per check
    assert "failed" not in done.stdout


@pytest.mark.slow
def test_a_fresh_venv_installs_the_project_and_it_passes_tests_and_conformance(tmp_path: Path) -> None:
    project = tmp_path / "orion-web-search"
    write_project(NAME, project)
    venv = Venv.create(tmp_path / "venv")
    venv.install(str(REPO))
    venv.install(f"{project}[test]")

    venv.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=project, timeout=300)

    # The README's orion.toml snippet enables the installed plugin through its entry point.
    app = tmp_path / "app"
    app.mkdir()
    readme = (project / "README.md").read_text()
    snippet = re.search(r"```toml\n(.*?)```", readme, re.DOTALL)
    assert snippet is not None
    (app / "orion.toml").write_text(snippet.group(1).replace('"hello"', '"hi"'))
    done = venv.run("orion-kernel", "invoke", f"{NAME}.hello", "--args", '{"who": "Ada"}', cwd=app)
    assert "hi, Ada!" in done.stdout

    empty = tmp_path / "elsewhere"
    empty.mkdir()
    venv.run("orion-kernel", "conformance", NAME, cwd=empty, timeout=300)
