"""Typed hook calls (pluggy#191): mypy checks ``kernel.hooks.call`` against the spec.

The snippets in ``tests/typing_snippets`` are checked by one ``mypy --strict``
run (with an empty config, so the project's own mypy settings do not
interfere).  ``ok_*`` snippets must pass; every ``bad_*`` snippet marks the
line mypy must reject with ``# E: code ...`` (the error codes accepted there).
"""

import importlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import pytest

from kernel import Kernel
from plugin_sdk import hookspecs

REPO = Path(__file__).resolve().parent.parent
SNIPPETS = Path(__file__).resolve().parent / "typing_snippets"
MARKER = re.compile(r"#\s*E:\s*(?P<codes>[a-z\- ]+)$")
LINE = re.compile(
    r"^(?P<path>[^:]+\.py):(?P<line>\d+): (?P<severity>error|note): (?P<message>.*?)(?:  \[(?P<code>[a-z\-]+)\])?$"
)


class Diagnostic(NamedTuple):
    line: int
    code: str | None
    message: str


class MypyRun(NamedTuple):
    returncode: int
    output: str
    errors: dict[str, list[Diagnostic]]


def expected_errors(name: str) -> dict[int, set[str]]:
    """Line number -> error codes accepted there, from the ``# E:`` markers of a snippet."""
    marked = {}
    for number, text in enumerate((SNIPPETS / name).read_text().splitlines(), start=1):
        found = MARKER.search(text)
        if found:
            marked[number] = set(found["codes"].split())
    return marked


def snippets(prefix: str) -> list[str]:
    return sorted(path.name for path in SNIPPETS.glob(f"{prefix}*.py"))


@pytest.fixture(scope="module")
def mypy(tmp_path_factory: pytest.TempPathFactory) -> MypyRun:
    """One strict mypy run over every snippet, from the repository root."""
    workdir = tmp_path_factory.mktemp("mypy")
    config = workdir / "empty.ini"
    config.write_text("[mypy]\n")
    command = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(config),
        "--strict",
        "--no-incremental",
        "--cache-dir",
        str(workdir / "cache"),
        "--python-version",
        "3.11",
        "--show-error-codes",
        "--no-error-summary",
        "--no-pretty",
        "--no-color-output",
        "--hide-error-context",
        *(str(path.relative_to(REPO)) for path in sorted(SNIPPETS.glob("*.py"))),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    errors: dict[str, list[Diagnostic]] = {}
    for text in done.stdout.splitlines():
        found = LINE.match(text)
        if found and found["severity"] == "error":
            errors.setdefault(Path(found["path"]).name, []).append(
                Diagnostic(int(found["line"]), found["code"], found["message"])
            )
    return MypyRun(done.returncode, done.stdout + done.stderr, errors)


@pytest.fixture
def snippet_modules(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make the snippets importable at run time."""
    monkeypatch.syspath_prepend(str(SNIPPETS))
    yield
    for name in [*snippets("ok_"), *snippets("bad_"), "snippet_specs.py"]:
        sys.modules.pop(name.removesuffix(".py"), None)


def load(name: str) -> ModuleType:
    return importlib.import_module(name)


# -- what mypy says ---------------------------------------------------------------------


@pytest.mark.slow
def test_mypy_runs_over_every_snippet(mypy: MypyRun) -> None:
    assert mypy.returncode == 1, mypy.output
    assert "INTERNAL ERROR" not in mypy.output
    assert set(mypy.errors) <= {*snippets("bad_")}, mypy.output


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ok_calls.py", "snippet_specs.py"])
def test_well_typed_hook_calls_pass_mypy_strict(mypy: MypyRun, name: str) -> None:
    assert mypy.errors.get(name, []) == [], mypy.output


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name in snippets("bad_") if name != "bad_positional.py"])
def test_mypy_rejects_the_marked_line_of_each_bad_snippet(mypy: MypyRun, name: str) -> None:
    expected = expected_errors(name)
    found = mypy.errors.get(name, [])

    assert expected, f"{name} marks no line with '# E:'"
    assert {error.line for error in found} == set(expected), mypy.output
    for error in found:
        assert error.code in expected[error.line], f"{name}:{error.line}: [{error.code}] {error.message}"


@pytest.mark.slow
def test_mypy_names_the_wrong_result_type_of_an_awaited_async_hook(mypy: MypyRun) -> None:
    # mypy infers the call's result type from the assignment, so it reports the
    # spec handle as the wrong argument, naming the hook's real result type.
    (error,) = mypy.errors["bad_async_assign.py"]

    assert error.code == "arg-type"
    assert '"AsyncHookSpec[[], HealthStatus | None]"' in error.message
    assert 'expected "HookSpec[[], Awaitable[int]]"' in error.message


@pytest.mark.slow
def test_mypy_says_a_firstresult_hook_may_return_none(mypy: MypyRun) -> None:
    (error,) = mypy.errors["bad_firstresult_assign.py"]

    assert error.code == "assignment"
    assert '"int | None"' in error.message


@pytest.mark.slow
def test_mypy_refuses_to_await_a_sync_hook_call(mypy: MypyRun) -> None:
    (error,) = mypy.errors["bad_await_sync.py"]

    assert 'Incompatible types in "await"' in error.message


@pytest.mark.slow
def test_positional_hook_arguments_pass_mypy_but_fail_at_run_time(mypy: MypyRun) -> None:
    # A ParamSpec cannot forbid positional arguments (and pluggy ignores
    # keyword-only spec parameters), so this one is caught at run time only;
    # test_dispatch.py::test_call_with_positional_arguments_raises_type_error covers the TypeError.
    assert mypy.errors.get("bad_positional.py", []) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("bad_name.py", "call-arg"),
        ("bad_missing.py", "call-arg"),
        ("bad_type.py", "arg-type"),
        ("bad_custom_type.py", "arg-type"),
        ("bad_sync_assign.py", "arg-type"),
    ],
)
def test_mypy_reports_a_hook_call_mismatch_with_the_precise_code(mypy: MypyRun, name: str, code: str) -> None:
    assert [error.code for error in mypy.errors.get(name, [])] == [code]


# -- what the same calls do at run time --------------------------------------------------


@pytest.mark.anyio
@pytest.mark.usefixtures("snippet_modules")
async def test_well_typed_calls_return_at_run_time_what_their_types_say() -> None:
    await load("ok_calls").exercise()


@pytest.mark.anyio
@pytest.mark.usefixtures("snippet_modules")
async def test_positional_hook_arguments_fail_at_run_time() -> None:
    async with Kernel({}, environ={}) as kernel:
        with pytest.raises(TypeError, match="keyword arguments only"):
            load("bad_positional").positional(kernel)


@pytest.mark.anyio
@pytest.mark.usefixtures("snippet_modules")
async def test_wrong_argument_name_fails_at_run_time_too() -> None:
    async with Kernel({}, environ={}) as kernel:
        with pytest.raises(TypeError, match="missing \\['plugin'\\], unexpected \\['name'\\]"):
            load("bad_name").wrong_name(kernel)


def test_builtin_specs_are_typed_handles() -> None:
    assert repr(hookspecs.plugin_state_changed) == "<SyncHookSpec plugin_state_changed(plugin, old, new)>"
    assert repr(hookspecs.check_health) == "<AsyncHookSpec check_health()>"
