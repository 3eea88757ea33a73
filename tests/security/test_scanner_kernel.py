"""The ``scanner`` plugin in a kernel: refusing risky plugins, the operation, the CLI, conformance.

The risky plugins are the packages in ``scan_fixtures/`` (put on sys.path
per test); the kernel loads them through ``source = "module:Class"``.
"""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from builtin_plugins.security.scanner import Scanner
from kernel import Kernel
from kernel._cli import main
from plugin_sdk import ConfigError
from plugin_sdk import InvalidArguments
from plugin_sdk import Manifest
from plugin_sdk import Plugin
from plugin_sdk import PluginState
from plugin_sdk import VetVerdict
from plugin_sdk import hookimpl
from plugin_sdk.testing import PluginConformance

FIXTURES = Path(__file__).resolve().parent / "scan_fixtures"
SCANNER: dict[str, Any] = {"enabled": True, "permissions": ["hook:vet_plugin"]}
RISKY: dict[str, Any] = {"enabled": True, "source": "risky_subprocess:RiskyPlugin"}
CLEAN: dict[str, Any] = {"enabled": True, "source": "clean_plugin:CleanPlugin"}
SUBPROCESS_LINE = next(
    n
    for n, text in enumerate((FIXTURES / "risky_subprocess/plugin.py").read_text().splitlines(), 1)
    if "subprocess.run" in text
)

pytestmark = [
    pytest.mark.anyio,
    # bandit's plugin loader (stevedore) warns about an argument it still passes
    pytest.mark.filterwarnings("ignore:The verify_requirements argument:DeprecationWarning"),
]


@pytest.fixture(autouse=True)
def fixtures(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(FIXTURES))
    return FIXTURES


def states(kernel: Kernel) -> dict[str, str]:
    return {name: info.state.value for name, info in kernel.plugins.items() if info.enabled}


# -- refusing at start ------------------------------------------------------------------------------------------


async def test_a_risky_plugin_is_refused_and_a_clean_one_runs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    config = {"plugins": {"scanner": SCANNER, "risky": RISKY, "clean": CLEAN}}
    async with Kernel(config, environ={}) as kernel:
        assert states(kernel) == {"scanner": "running", "risky": "failed", "clean": "running"}
        error = kernel.plugins["risky"].last_error
        assert error == (
            "refused by plugin 'scanner': scan found 1 finding(s) at or above high: "
            f"subprocess at risky_subprocess/plugin.py:{SUBPROCESS_LINE}"
        )
        assert await kernel.invoke("clean.greet", {"who": "Ada"})
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("orion.plugin.scanner")]
    assert any(
        "risky: high subprocess at risky_subprocess/plugin.py" in m and "(needs subprocess)" in m for m in logged
    )
    assert any(m.startswith("scanner: clean (clean_plugin): 0 finding(s)") for m in logged)


async def test_a_declared_and_granted_capability_runs() -> None:
    declared = {"enabled": True, "source": "declared_subprocess:DeclaredPlugin", "permissions": ["subprocess"]}
    async with Kernel({"plugins": {"scanner": SCANNER, "declared": declared}}, environ={}) as kernel:
        assert states(kernel) == {"scanner": "running", "declared": "running"}


@pytest.mark.parametrize(
    "settings",
    [{"refuse_at": "off"}, {"allow": ["risky"]}, {"ignore_rules": ["subprocess"]}, {"refuse_at": "critical"}],
)
async def test_settings_that_let_the_risky_plugin_run(
    settings: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    config = {"plugins": {"scanner": {**SCANNER, "settings": settings}, "risky": RISKY}}
    async with Kernel(config, environ={}) as kernel:
        assert states(kernel) == {"scanner": "running", "risky": "running"}
    warned = [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "subprocess at" in r.getMessage()
    ]
    # "off" and a higher threshold still scan and warn about what they let through
    assert bool(warned) == ("refuse_at" in settings)


async def test_refuse_at_medium_catches_dynamic_imports() -> None:
    dynamic = {"enabled": True, "source": "risky_dynamic:DynamicPlugin"}
    for refuse_at, state in (("high", "running"), ("medium", "failed")):
        config = {"plugins": {"scanner": {**SCANNER, "settings": {"refuse_at": refuse_at}}, "risky_dynamic": dynamic}}
        async with Kernel(config, environ={}) as kernel:
            assert kernel.plugins["risky_dynamic"].state.value == state
    assert "dynamic-import at risky_dynamic/__init__.py:12" in (kernel.plugins["risky_dynamic"].last_error or "")


async def test_the_default_profile_passes_with_the_scanner() -> None:
    from builtin_plugins.profiles import DEFAULT

    plugins = {**DEFAULT["plugins"], "scanner": SCANNER}
    plugins["http"] = {**plugins["http"], "settings": {"host": "127.0.0.1", "port": 0}}
    async with Kernel({"plugins": plugins}, environ={}) as kernel:
        assert set(states(kernel).values()) == {"running"}, {n: i.last_error for n, i in kernel.plugins.items()}


async def test_bad_settings_are_config_errors_at_their_path() -> None:
    for settings, path in (
        ({"refuse_at": "severe"}, "plugins.scanner.settings.refuse_at"),
        ({"ignore_rules": ["nope"]}, "plugins.scanner.settings.ignore_rules"),
        ({"allow": ["Not A Name"]}, "plugins.scanner.settings.allow"),
    ):
        kernel = Kernel({"plugins": {"scanner": {**SCANNER, "settings": settings}}}, environ={})
        with pytest.raises(ConfigError) as caught:
            kernel.prepare()
        assert [issue.path for issue in caught.value.issues] == [path], caught.value


async def test_the_scanner_needs_its_grant() -> None:
    async with Kernel({"plugins": {"scanner": {"enabled": True}}}, environ={}) as kernel:
        info = kernel.plugins["scanner"]
        assert info.state is PluginState.FAILED and "hook:vet_plugin" in (info.last_error or "")


# -- fail closed: the kernel's side ---------------------------------------------------------------------------


class Exploding(Plugin):
    """A vetter whose every verdict raises."""

    name = "exploding"
    version = "1.0.0"
    permissions = ("hook:vet_plugin",)

    @hookimpl
    async def vet_plugin(self, plugin: str, manifest: Manifest, module: str) -> VetVerdict | None:
        raise RuntimeError("vetter exploded")


async def test_a_vetter_that_raises_refuses_the_plugin() -> None:
    config = {"plugins": {"exploding": {"permissions": ["hook:vet_plugin"]}, "clean": CLEAN}}
    async with Kernel(config, plugins=[Exploding], environ={}, entry_points=False) as kernel:
        assert states(kernel) == {"exploding": "running", "clean": "failed"}
        assert (
            kernel.plugins["clean"].last_error == "vetting by plugin 'exploding' failed: RuntimeError: vetter exploded"
        )


def _chain(count: int) -> list[type[Plugin]]:
    """Plugins that start one after another (each uses the previous one's service)."""
    made: list[type[Plugin]] = []
    for index in range(count):

        async def start(self: Plugin, ctx: Any, index: int = index) -> None:
            ctx.provide(f"link{index}", object())

        namespace: dict[str, Any] = {"name": f"link{index}", "version": "1.0.0", "provides": (f"link{index}",)}
        namespace.update(start=start, optional=(f"link{index - 1}",) if index else ())
        made.append(type(f"Link{index}", (Plugin,), namespace))
    return made


async def test_a_quarantined_vetter_still_refuses() -> None:
    config = {"plugins": {"exploding": {"permissions": ["hook:vet_plugin"]}}}
    async with Kernel(config, plugins=[Exploding, *_chain(7)], environ={}, entry_points=False) as kernel:
        started = [name for name, state in states(kernel).items() if name.startswith("link") and state == "running"]
        assert started == []


# -- the operation ------------------------------------------------------------------------------------------------


async def test_the_scan_operation() -> None:
    async with Kernel({"plugins": {"scanner": SCANNER}}, environ={}) as kernel:
        report = await kernel.invoke("scanner.scan", {"target": "risky_subprocess"})
        assert orjson.loads(orjson.dumps(report)) == report  # JSON-able
        assert report["plugin"] == "risky" and report["summary"]["highest"] == "high"
        [finding] = report["findings"]
        assert finding["location"] == f"risky_subprocess/plugin.py:{SUBPROCESS_LINE}"
        assert (finding["rule"], finding["permission"], finding["declared"]) == ("subprocess", "subprocess", False)
        with_bandit = await kernel.invoke("scanner.scan", {"target": "risky_subprocess", "bandit": True})
        assert with_bandit["bandit"] == "ran"
        with pytest.raises(InvalidArguments, match="no_such_thing"):
            await kernel.invoke("scanner.scan", {"target": "no_such_thing"})


# -- the command line ---------------------------------------------------------------------------------------------


def cli(*argv: str, enable: bool = True) -> tuple[int, str]:
    if enable:
        Path("orion.toml").write_text('[plugins.scanner]\nenabled = true\npermissions = ["hook:vet_plugin"]\n')
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


async def test_cli_exit_codes_and_table() -> None:
    code, text = cli("scan", "risky_subprocess")
    assert code == 1
    assert f"risky_subprocess/plugin.py:{SUBPROCESS_LINE}:12" in text
    assert text.splitlines()[0] == "risky_subprocess: plugin risky, asks for nothing"
    assert "SEVERITY  RULE" in text and "FAIL: 1 undeclared finding(s) at or above high" in text
    assert cli("scan", "risky_subprocess", "--fail-on", "critical")[0] == 0
    assert cli("scan", "risky_subprocess", "--ignore", "subprocess")[0] == 0
    code, text = cli("scan", "clean_plugin:CleanPlugin")
    assert code == 0 and "no findings" in text and "ok: nothing undeclared at or above high" in text
    code, text = cli("scan", "declared_subprocess:DeclaredPlugin")
    assert code == 0 and "yes (subprocess)" in text and "info (high)" in text
    assert cli("scan", "risky_misc", "--fail-on", "low")[0] == 1
    assert cli("scan", "health")[0] == 0  # an entry-point name: read, never loaded
    assert cli("scan", str(FIXTURES / "risky_sockets"))[0] == 1  # a directory


async def test_cli_bad_targets_exit_2() -> None:
    code, text = cli("scan", "no.such.module")
    assert code == 2 and text.startswith("error: cannot scan no.such.module")
    assert cli("scan", "what is this?")[0] == 2
    assert cli("scan", "risky_subprocess", "--ignore", "not-a-rule")[0] == 2
    code, text = cli("scan", "--json", "nothing_here_at_all")
    assert code == 2 and orjson.loads(text)["ok"] is False


async def test_cli_json() -> None:
    code, text = cli("scan", "risky_sockets", "--json")
    data = orjson.loads(text)
    assert code == 1 and data["ok"] is False and data["fail_on"] == "high"
    assert data["plugin"] == "risky_sockets" and data["permissions"] == ["net:connect:api.example.com:443"]
    assert {f["rule"] for f in data["findings"] if not f["declared"]} == {"net-connect", "net-listen"}
    code, text = cli("--json", "scan", "risky_subprocess", "--bandit")
    data = orjson.loads(text)
    assert code == 1 and data["bandit"] == "ran" and "bandit.B404" in {f["rule"] for f in data["findings"]}


async def test_the_command_is_there_only_when_the_scanner_is_enabled() -> None:
    with pytest.raises(SystemExit) as caught:
        cli("scan", "risky_subprocess", enable=False)
    assert caught.value.code == 2


# -- conformance --------------------------------------------------------------------------------------------------


class TestScannerConformance(PluginConformance):
    plugin = Scanner


@pytest.mark.slow
async def test_an_isolated_plugin_is_vetted_without_being_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel never imports a process-isolated plugin; the scanner reads its files instead."""
    for name in [n for n in sys.modules if n.partition(".")[0] == "risky_subprocess"]:
        monkeypatch.delitem(sys.modules, name)  # imported in-process by earlier tests
    config = {
        "plugins": {
            "scanner": SCANNER,
            "risky": {**RISKY, "isolation": "process"},
            "clean": {**CLEAN, "isolation": "process"},
        }
    }
    async with Kernel(config, environ={}) as kernel:
        assert states(kernel) == {"scanner": "running", "risky": "failed", "clean": "running"}
        assert "subprocess at risky_subprocess/plugin.py" in (kernel.plugins["risky"].last_error or "")
        assert await kernel.invoke("clean.greet", {"who": "Ada"})
    assert "risky_subprocess" not in sys.modules
