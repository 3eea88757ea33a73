"""The ``scanner`` plugin's static analysis: rules, aliases, manifests, declared permissions, caching, bandit.

The risky plugins are packages in ``scan_fixtures/``; a line that must be
flagged ends with ``# expect: RULE``, and each fixture's findings must be
exactly its markers (no more: the clean fixture has none at or above low).
Nothing here imports a fixture: the scanner reads their files.
"""

from __future__ import annotations

import importlib.machinery
import os
import re
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from builtin_plugins.security.scanner import ENGINE
from builtin_plugins.security.scanner import RULES
from builtin_plugins.security.scanner import Engine
from builtin_plugins.security.scanner import Finding
from builtin_plugins.security.scanner import ScanError
from builtin_plugins.security.scanner import ScanReport
from builtin_plugins.security.scanner._analyzer import analyze_source
from builtin_plugins.security.scanner._rules import rank
from builtin_plugins.security.scanner._scan import compare

#: bandit's plugin loader (stevedore) warns about an argument it still passes
pytestmark = pytest.mark.filterwarnings("ignore:The verify_requirements argument:DeprecationWarning")

FIXTURES = Path(__file__).resolve().parent / "scan_fixtures"
PACKAGES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
MARKER = re.compile(r"#\s*expect:\s*(?P<rules>[a-z, -]+)$")
BUILTIN = sorted(ep.name for ep in entry_points(group="orion_kernel.plugins") if ep.value.startswith("builtin_plugins"))
#: builtins known to fail a default scan, with the reason (none: analytics' ``report --from URL`` now
#: fetches through the CLI's ``env.fetch``, so the plugin itself makes no HTTP request)
REPORTED: dict[str, str] = {}


@pytest.fixture
def fixtures(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(FIXTURES))
    before = set(sys.modules)
    yield FIXTURES
    imported = {name for name in set(sys.modules) - before if name.partition(".")[0] in PACKAGES}
    assert not imported, f"the scan imported {sorted(imported)}"


def expected(package: str) -> set[tuple[str, int, str]]:
    """(file, line, rule) of every ``# expect:`` marker in a fixture package."""
    found = set()
    for path in sorted((FIXTURES / package).rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = MARKER.search(line)
            if match:
                for rule in match.group("rules").split(","):
                    found.add((path.relative_to(FIXTURES).as_posix(), number, rule.strip()))
    return found


def flagged(report: ScanReport, floor: str = "low") -> set[tuple[str, int, str]]:
    return {(f.file, f.line, f.rule) for f in report.findings if rank(f.original_severity) >= rank(floor)}


def by_rule(report: ScanReport, rule: str) -> list[Finding]:
    return [f for f in report.findings if f.rule == rule]


def test_fixtures_are_not_collected_and_cover_every_package() -> None:
    assert set(PACKAGES) >= {
        "risky_subprocess",
        "declared_subprocess",
        "risky_eval",
        "risky_ctypes",
        "risky_sockets",
        "risky_aliases",
        "risky_dynamic",
        "risky_misc",
        "clean_plugin",
    }
    assert not list(FIXTURES.rglob("test_*.py")) and not list(FIXTURES.rglob("*_test.py"))
    assert not (FIXTURES / "__init__.py").exists()


# -- every rule on its fixture, at the right place ---------------------------------------------------


@pytest.mark.parametrize("package", PACKAGES)
def test_findings_are_exactly_the_markers(fixtures: Path, package: str) -> None:
    report = Engine().scan_target(package)
    assert flagged(report) == expected(package), report.to_json()["findings"]


def test_every_rule_fires_somewhere() -> None:
    marked = {rule for package in PACKAGES for (_, _, rule) in expected(package)}
    # the three rules about files the scan cannot read are proven below, on files made for them
    assert marked | {"native-code", "unscannable", "not-found"} == set(RULES)


def test_the_subprocess_fixture_file_and_line(fixtures: Path) -> None:
    report = ENGINE.scan_target("risky_subprocess:RiskyPlugin")
    [finding] = report.findings
    line = next(
        n
        for n, text in enumerate((FIXTURES / "risky_subprocess/plugin.py").read_text().splitlines(), 1)
        if "subprocess.run" in text
    )
    assert (finding.rule, finding.severity, finding.location) == (
        "subprocess",
        "high",
        f"risky_subprocess/plugin.py:{line}",
    )
    assert finding.col == 12 and finding.permission == "subprocess" and not finding.declared
    assert finding.message == "calls subprocess.run: starts processes"
    assert report.plugin == "risky" and report.permissions == ()
    assert report.files == ("risky_subprocess/__init__.py", "risky_subprocess/plugin.py")


# -- declared permissions ---------------------------------------------------------------------------------


def test_a_declared_permission_downgrades_the_finding(fixtures: Path) -> None:
    report = ENGINE.scan_target("declared_subprocess:DeclaredPlugin")
    [finding] = report.findings
    assert (finding.rule, finding.severity, finding.original_severity) == ("subprocess", "info", "high")
    assert finding.declared and finding.declared_by == "subprocess"
    assert report.at_or_above("info") == [] and report.at_or_above("info", undeclared_only=False) == [finding]
    # the same code without the ask keeps its severity
    undeclared = ENGINE.scan_module("declared_subprocess", permissions=())
    assert [f.severity for f in undeclared.findings] == ["high"]


def test_eval_and_audit_hooks_stay_high_whatever_is_declared(fixtures: Path) -> None:
    everything = ("subprocess", "ffi", "net:connect:*:*", "net:listen:*:*", "fs:write:/**", "hook:vet_plugin")
    for package, rules in (("risky_eval", {"eval"}), ("risky_misc", {"audit-hook", "module-tamper"})):
        report = ENGINE.scan_module(package, permissions=everything)
        for finding in report.findings:
            if finding.rule in rules:
                assert rank(finding.severity) >= rank("high") and not finding.declared, finding
    assert not [
        f
        for f in ENGINE.scan_module("risky_misc", permissions=everything).findings
        if f.rule == "file-write" and not f.declared
    ]


def test_a_connection_to_a_constant_host_needs_that_host(fixtures: Path) -> None:
    report = ENGINE.scan_target("risky_sockets")
    assert report.permissions == ("net:connect:api.example.com:443",)
    connects = {f.permission: f for f in by_rule(report, "net-connect")}
    assert connects["net:connect:api.example.com:443"].declared
    evil = connects["net:connect:evil.example.net:443"]
    assert (evil.severity, evil.declared) == ("high", False)
    [listen] = by_rule(report, "net-listen")  # asking to connect does not cover listening
    assert (listen.severity, listen.permission) == ("high", "net:listen:*:*")
    # a raw socket or a URL the scan cannot read is covered by asking for some connection
    assert all(f.declared for f in by_rule(report, "socket") + by_rule(report, "http-client"))


def test_placeholders_and_fs_asks() -> None:
    from builtin_plugins.security.scanner._scan import RawFinding

    def raw(rule: str, permission: str) -> RawFinding:
        return RawFinding(rule, "medium", "p.py", 1, 1, "m", permission)

    found, _, notes = compare(
        [
            raw("file-write", "fs:write:/**"),
            raw("file-read", "fs:read:/etc/hostname"),
            raw("file-write", "fs:write:/etc/passwd"),
        ],
        ["fs:write:{data_dir}/cache", "fs:read:/etc/**", "not a permission"],
    )
    declared = {(f.permission, f.declared_by) for f in found if f.declared}
    assert declared == {("fs:write:/**", "fs:write:{data_dir}/cache"), ("fs:read:/etc/hostname", "fs:read:/etc/**")}
    assert [f.permission for f in found if not f.declared] == [
        "fs:write:/etc/passwd"
    ]  # a placeholder covers no constant path
    assert len(notes) == 1 and "not a permission" in notes[0]


# -- aliases ----------------------------------------------------------------------------------------------


def test_aliases_are_resolved(fixtures: Path) -> None:
    report = ENGINE.scan_target("risky_aliases")
    messages = {f.message for f in report.findings}
    assert {
        "calls subprocess.run (written sp.run): starts processes",
        "calls os.system (written s): starts processes",
        "calls os.popen (written operating_system.popen): starts processes",
        "calls subprocess.Popen (written runner): starts processes",
        "calls os.system (written found): starts processes",
        # across modules: _helpers re-exports subprocess.call and Popen under other names
        "calls subprocess.call (written launch): starts processes",
        "calls subprocess.Popen (written Launcher): starts processes",
    } == messages
    assert "risky_aliases/_helpers.py" in report.files
    assert not [f for f in report.findings if f.file.endswith("_helpers.py")]  # importing is not calling


@pytest.mark.parametrize(
    ("source", "rule"),
    [
        ("from os import *\nsystem('x')\n", "subprocess"),
        ("import importlib\nos = importlib.import_module('os')\nos.execv('a', [])\n", "subprocess"),
        ("import socket\ndef f(cb=socket.create_connection): ...\n", "net-connect"),
        ("import os\nimport concurrent.futures as cf\ncf.ThreadPoolExecutor().submit(os.system, 'x')\n", "subprocess"),
        (
            "import asyncio\nasync def f():\n    await asyncio.get_running_loop().subprocess_exec(None, 'ls')\n",
            "subprocess",
        ),
        ("from pathlib import Path\np = Path('/tmp') / 'x'\np.open('w')\n", "file-write"),
        ("import pathlib\npathlib.Path('~/x').expanduser().resolve().open('a')\n", "file-write"),
        ("import yaml\nyaml.load(open_thing)\n", "deserialize"),
        ("import ctypes as c\n", "ffi"),
        ("import sys\nsys.meta_path.insert(0, object())\n", "module-tamper"),
        ("import threading\nthreading.settrace(print)\n", "audit-hook"),
        ("import os\ndel os.environ['X']\n", "environ-write"),
        ("x = ().__class__.__subclasses__()\n", "dynamic-access"),
        ("import subprocess\nclass P:\n    runner = subprocess.run\n", "subprocess"),  # then self.runner()
    ],
)
def test_more_shapes(source: str, rule: str) -> None:
    from builtin_plugins.security.scanner._locate import SourceFile

    analysis = analyze_source(source, "snippet", is_package=False)
    engine = Engine()
    file = SourceFile("/nowhere/snippet.py", "snippet.py", "snippet", "source")
    found = engine._file_findings(file, analysis, {"snippet": analysis}, {"snippet"})
    assert rule in {f.rule for f in found}, found


@pytest.mark.parametrize(
    "source",
    [
        "import socket\ndef f(sock: socket.socket) -> socket.socket: ...\n",  # annotations run nothing
        "import socket\ndef f(x): return isinstance(x, socket.socket)\n",
        "import subprocess\ntry:\n    pass\nexcept subprocess.CalledProcessError:\n    pass\n",
        "import yaml\nyaml.load(data, Loader=yaml.SafeLoader)\n",
        "import sqlite3\nsqlite3.connect(':memory:')\n",
        "import os\nvalue = os.environ.get('X')\nprint(value.upper(), value)\n",  # a value read once is one finding
        "def open(path): ...\nopen('/etc/passwd', 'w')\n",  # its own open, not the builtin
        "import importlib\nimportlib.import_module('json')\n",
        "from pathlib import Path\nPath('x').name.replace('a', 'b')\n",  # a str method, not Path.replace
    ],
)
def test_shapes_that_are_not_findings(source: str) -> None:
    from builtin_plugins.security.scanner._locate import SourceFile

    analysis = analyze_source(source, "snippet", is_package=False)
    file = SourceFile("/nowhere/snippet.py", "snippet.py", "snippet", "source")
    found = Engine()._file_findings(file, analysis, {"snippet": analysis}, {"snippet"})
    assert [f.rule for f in found if f.rule != "environ"] == [] and len(
        [f for f in found if f.rule == "environ"]
    ) <= 1, found


# -- the manifest, read without importing -------------------------------------------------------------------


def _package(root: Path, name: str, files: dict[str, str]) -> Path:
    package = root / name
    package.mkdir(parents=True)
    for filename, text in files.items():
        (package / filename).write_text(text)
    return package


def test_manifest_from_the_class_ast(fixtures: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    _package(
        tmp_path,
        "inherit_pkg",
        {
            "__init__.py": "from ._base import Base\nfrom plugin_sdk import Plugin\nimport subprocess\n\n"
            "class Child(Base):\n    name = 'child'\n\n"
            "def work():\n    subprocess.run(['x'])\n\n"
            "class Computed(Plugin):\n    name = 'computed'\n    permissions = tuple(['subprocess'])\n",
            "_base.py": "from plugin_sdk import Plugin\n\nASKS = ('subprocess',)\n\n"
            "class Base(Plugin):\n    permissions: tuple[str, ...] = ASKS\n",
        },
    )
    child = ENGINE.scan_target("inherit_pkg:Child")
    assert (child.plugin, child.permissions) == ("child", ("subprocess",))
    assert [f.declared for f in child.findings] == [True]
    computed = ENGINE.scan_target("inherit_pkg:Computed")
    assert (computed.plugin, computed.permissions) == ("computed", ())
    assert any("not a literal" in note for note in computed.notes)
    assert [f.severity for f in computed.findings] == ["high"]  # unreadable asks declare nothing
    missing = ENGINE.scan_target("inherit_pkg:Nope")
    assert missing.plugin is None and any("class Nope not found" in note for note in missing.notes)
    # a module target finds its plugin classes (here several: the union of their asks)
    assert ENGINE.scan_target("inherit_pkg").permissions == ("subprocess",)
    assert ENGINE.scan_target("risky_sockets").plugin == "risky_sockets"
    assert "inherit_pkg" not in sys.modules


def test_the_scan_never_imports_the_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``importlib.util.find_spec("a.b")`` would run ``a/__init__.py``; the scanner must not."""
    monkeypatch.syspath_prepend(str(tmp_path))
    canary = tmp_path / "imported"
    _package(
        tmp_path,
        "trap_pkg",
        {
            "__init__.py": f"open({str(canary)!r}, 'w').close()\nraise SystemExit('imported!')\n",
            "sub.py": "import os\n\ndef go():\n    os.system('x')\n",
        },
    )
    report = ENGINE.scan_target("trap_pkg.sub")
    assert {f.rule for f in report.findings} == {"subprocess", "file-write"}  # the __init__ runs on import: scanned
    assert report.files == ("trap_pkg/__init__.py", "trap_pkg/sub.py")
    assert not canary.exists() and "trap_pkg" not in sys.modules


def test_builtin_plugins_are_found_behind_an_editable_finder() -> None:
    """In an editable install ``builtin_plugins`` may be reachable only through a meta-path finder
    (not ``PathFinder`` over sys.path); the tests run from an empty directory, so it is found either way."""
    report = ENGINE.scan_target("builtin_plugins.monitoring.health:Health")
    assert report.plugin == "health"
    assert "builtin_plugins/monitoring/health.py" in report.files
    assert "builtin_plugins/__init__.py" in report.files


# -- files the scan cannot read -------------------------------------------------------------------------------


def test_native_syntax_errors_and_missing_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    package = _package(
        tmp_path, "odd_pkg", {"__init__.py": "from . import fast\nfrom . import broken\n", "broken.py": "def (:\n"}
    )
    (package / f"fast{suffix}").write_bytes(b"\x7fELF not really")
    report = ENGINE.scan_target("odd_pkg")
    rules = {(f.rule, f.file) for f in report.findings}
    assert ("native-code", f"odd_pkg/fast{suffix}") in rules
    assert ("unscannable", "odd_pkg/broken.py") in rules
    [native] = by_rule(report, "native-code")
    assert (native.severity, native.permission) == ("medium", "ffi")
    # as a path too
    assert {f.rule for f in ENGINE.scan_target(str(package)).findings} == {"native-code", "unscannable"}
    with pytest.raises(ScanError, match="no_such_module_at_all"):
        ENGINE.scan_target("no_such_module_at_all")
    vetted = ENGINE.scan_module("no_such_module_at_all", missing_is_finding=True)
    [missing] = vetted.findings
    assert (missing.rule, missing.severity) == ("not-found", "high")
    with pytest.raises(ScanError):
        ENGINE.scan_target("not a target!")
    with pytest.raises(ScanError):
        ENGINE.scan_target("odd_pkg:Not-A-Class")


def test_a_path_target_scans_every_file(fixtures: Path) -> None:
    report = ENGINE.scan_target(str(FIXTURES / "risky_dynamic"))
    assert report.files == (
        "risky_dynamic/__init__.py",
        "risky_dynamic/_also_known.py",
        "risky_dynamic/_known.py",
    )
    assert report.plugin == "risky_dynamic"
    assert flagged(report) == expected("risky_dynamic")
    single = ENGINE.scan_target(str(FIXTURES / "risky_subprocess" / "plugin.py"))
    assert single.files == ("plugin.py",) and single.plugin == "risky"


# -- caching --------------------------------------------------------------------------------------------------


def test_results_are_cached_per_file_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    package = _package(tmp_path, "cached_pkg", {"__init__.py": "from . import work\n", "work.py": "X = 1\n"})
    engine = Engine()
    first = engine.scan_target("cached_pkg")
    assert (engine.parsed, first.findings) == (2, ())
    again = engine.scan_target("cached_pkg")
    assert engine.parsed == 2 and again == first
    work = package / "work.py"
    work.write_text("import os\nos.system('x')\n")
    os.utime(work, ns=(1, 1_000_000_000))  # a different mtime even on a coarse clock
    changed = engine.scan_target("cached_pkg")
    assert engine.parsed == 3
    assert [(f.rule, f.location) for f in changed.findings] == [("subprocess", "cached_pkg/work.py:2")]


# -- concurrency ------------------------------------------------------------------------------------------------


def test_concurrent_scans_in_threads(fixtures: Path) -> None:
    """The kernel vets plugins concurrently, each scan in a worker thread: parsing must not race
    (CPython 3.11's AST constructor fails under concurrent ast.parse, gh-106905)."""
    import concurrent.futures

    engine = Engine()
    targets = [*PACKAGES, *BUILTIN] * 3
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        reports = list(pool.map(lambda t: engine.scan_target(t, bandit=t == "risky_misc"), targets))
    assert all(f.rule != "unscannable" for r in reports for f in r.findings)
    assert flagged(reports[PACKAGES.index("risky_aliases")]) == expected("risky_aliases")


def test_a_parse_broken_by_another_threads_parse_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock cannot cover parses elsewhere in the process (3.11's traceback module parses the
    lines it draws carets under): a depth mismatch (gh-106905) is retried, any other error is not."""
    import ast

    from builtin_plugins.security.scanner import _analyzer

    real = ast.parse
    failures = {"left": 2}

    def flaky(source: object, *args: object, **kwargs: object) -> ast.Module:
        if failures["left"]:
            failures["left"] -= 1
            raise SystemError("AST constructor recursion depth mismatch (before=5, after=9)")
        return real(source, *args, **kwargs)  # type: ignore[call-overload,no-any-return]

    monkeypatch.setattr(ast, "parse", flaky)
    assert isinstance(_analyzer.parse("x = 1", "m.py").body[0], ast.Assign)

    failures["left"] = 3  # one more than the attempts: the error is not hidden forever
    with pytest.raises(SystemError, match="depth mismatch"):
        _analyzer.parse("x = 1", "m.py")

    def other(source: object, *args: object, **kwargs: object) -> ast.Module:
        raise SystemError("something else")

    monkeypatch.setattr(ast, "parse", other)
    with pytest.raises(SystemError, match="something else"):
        _analyzer.parse("x = 1", "m.py")


# -- bandit -----------------------------------------------------------------------------------------------------


def test_bandit_findings_are_merged_and_deduplicated(fixtures: Path) -> None:
    engine = Engine()
    report = engine.scan_target("risky_subprocess", bandit=True)
    assert report.bandit == "ran"
    imports = [f for f in report.findings if f.rule == "bandit.B404"]
    assert [(f.location, f.source, f.permission, f.severity) for f in imports] == [
        ("risky_subprocess/plugin.py:3", "bandit", "subprocess", "low")
    ]
    # bandit's B603 at the subprocess.run line is the scanner's own finding: reported once
    calls = by_rule(report, "subprocess")
    assert len(calls) == 1 and calls[0].source == "scanner"
    plain = engine.scan_target("risky_subprocess")
    assert plain.bandit == "off" and {f.rule for f in plain.findings} == {"subprocess"}
    # bandit's findings are compared with the manifest too
    declared = engine.scan_target("declared_subprocess:DeclaredPlugin", bandit=True)
    assert {(f.rule, f.severity, f.declared) for f in declared.findings} == {
        ("subprocess", "info", True),
        ("bandit.B404", "info", True),
    }
    ignored = engine.scan_target("risky_subprocess", bandit=True, ignore_rules=["B404"])
    assert ignored.ignored == 1 and not [f for f in ignored.findings if f.rule == "bandit.B404"]


def test_bandit_missing_is_a_note_not_an_error(fixtures: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("bandit.core", "bandit.core.config", "bandit.core.manager"):
        monkeypatch.setitem(sys.modules, name, None)
    report = Engine().scan_target("risky_subprocess", bandit=True)
    assert report.bandit == "unavailable"
    assert any("bandit is not installed" in note for note in report.notes)
    assert {f.rule for f in report.findings} == {"subprocess"}


# -- the builtin plugins ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=REPORTED[n])) if n in REPORTED else n
        for n in BUILTIN
    ],
)
def test_every_builtin_plugin_passes_a_default_scan(name: str) -> None:
    try:
        report = ENGINE.scan_target(name)
    except ScanError as exc:  # a family member not written yet
        pytest.skip(str(exc))
    assert report.plugin == name
    assert report.at_or_above("high") == [], [f.to_json() for f in report.at_or_above("high")]


# -- the docs stay true -------------------------------------------------------------------------------------------


def test_the_docs_list_every_setting_and_rule() -> None:
    import attrs

    from builtin_plugins.security.scanner import ScannerSettings

    docs = (Path(__file__).resolve().parents[2] / "docs" / "security" / "scanner.md").read_text()
    for field in attrs.fields(ScannerSettings):
        assert re.search(rf"^\| `{field.name}` \| [^|]+ \| [^|]+ \| [^|]+ \|$", docs, flags=re.M), field.name
    for rule in RULES.values():
        permission = (
            f"`{rule.permission}`" + "".join(f" or `{a}`" for a in rule.alternatives) if rule.permission else "—"
        )
        assert f"| `{rule.id}` | {rule.severity} | {rule.summary} | {permission} |" in docs, rule.id
