"""``orion-kernel`` (and ``python -m kernel``) driven as a user would: in a subprocess.

Each test runs in its own empty directory (``tmp_path``, see conftest).  The
``project`` fixture adds a plugin module ``mymod.py`` there and an
``orion.toml`` enabling it through ``source = "mymod:MyPlugin"``; the
subprocess finds the module through ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel import load_config

pytestmark = pytest.mark.slow

PLUGIN_MODULE = """
import attrs

from plugin_sdk import CliCommand
from plugin_sdk import HealthStatus
from plugin_sdk import Plugin
from plugin_sdk import hookimpl


@attrs.frozen
class Settings:
    greeting: str = attrs.field(default="hello", metadata={"doc": "What the greeter says."})
    times: int = 1
    tags: tuple[str, ...] = ("a", "b")


class MyPlugin(Plugin):
    name = "myplugin"
    version = "1.2.3"
    provides = ("greeter",)
    permissions = ("net:connect:example.com:443", "fs:read:/etc/ssl")
    Config = Settings

    async def start(self, ctx):
        self.ctx = ctx
        self.data_dir = ctx.data_dir
        (self.data_dir / "started").write_text("yes")
        ctx.provide("greeter", self)
        ctx.register_operation("greet", self.greet)
        ctx.register_operation("data.echo", lambda inv: dict(inv.args))
        ctx.register_operation("fail.now", self.fail_now)

    async def stop(self):
        (self.data_dir / "stopped").write_text("yes")

    async def greet(self, inv):
        return f"{self.ctx.settings.greeting}, {inv.args['who']}"

    async def fail_now(self, inv):
        raise RuntimeError("boom")

    @hookimpl
    async def check_health(self):
        return HealthStatus(ok=True)

    @hookimpl
    def cli_commands(self):
        def configure(parser):
            parser.add_argument("--who", default="world")

        def hello(args, env):
            env.echo(f"hello from myplugin, {args.who}")
            return 0

        async def greet_async(args, env):
            async with env.started() as kernel:
                env.echo(await kernel.invoke("greet", {"who": args.who}))
            return 0

        def configure_exit(parser):
            parser.add_argument("code", type=int)

        def exit_with(args, env):
            env.emit({"code": args.code})
            return args.code

        return [
            CliCommand(name="hello", help="say hello from myplugin", run=hello, configure=configure),
            CliCommand(name="greet-async", help="greet through a started kernel", run=greet_async, configure=configure),
            CliCommand(name="exit-with", help="exit with the given code", run=exit_with, configure=configure_exit),
            CliCommand(name="run", help="clashes with the kernel's own run", run=hello),
        ]
"""

ENABLED = """\
[plugins.myplugin]
enabled = true
source = "mymod:MyPlugin"
permissions = ["net:connect:*:443", "fs:read:/etc/ssl"]
"""

#: leaves the signal window open: the line is printed, no SIGTERM handler is installed yet
SIGNAL_ON_RUNNING_DRIVER = """\
import os
import signal
import socket
import sys

from kernel._cli import main


class SignalOnRunning:
    def write(self, text):
        sys.stdout.write(text)
        if "running" in text:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGTERM)
        return len(text)

    def flush(self):
        sys.stdout.flush()


sys.exit(main(["run"], out=SignalOnRunning()))
"""


def console_script() -> str:
    beside = Path(sys.executable).parent / "orion-kernel"
    if beside.exists():
        return str(beside)
    found = shutil.which("orion-kernel")
    assert found is not None, "the orion-kernel console script is not installed"
    return found


def environment(cwd: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ORION__")}
    paths = [str(cwd)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra or {})
    return env


def cli(
    cwd: Path, *args: str, env: dict[str, str] | None = None, script: bool = False
) -> subprocess.CompletedProcess[str]:
    command = [console_script()] if script else [sys.executable, "-m", "kernel"]
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=environment(cwd, env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


#: The plugins this distribution registers itself (entry points); listings show them too.
BUILTINS = frozenset(
    {"http", "metrics", "health", "alerts", "analytics", "dashboard", "auth", "rbac", "audit", "crypto", "secrets", "scanner"}
)
#: The ones the default profile enables when there is no config file.
DEFAULT_PROFILE = frozenset({"http", "metrics", "health", "dashboard"})


def table_rows(stdout: str) -> list[list[str]]:
    """The table's lines split into cells, builtin plugins' rows left out."""
    rows = [line.split() for line in stdout.strip().splitlines()]
    return [row for row in rows if not row or row[0] not in BUILTINS]


def json_rows(stdout: str) -> list[dict[str, object]]:
    """``plugins list --json`` without the builtin plugins."""
    return [row for row in json.loads(stdout) if row["name"] not in BUILTINS]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """``mymod.py`` with ``MyPlugin``, and an ``orion.toml`` that enables it."""
    (tmp_path / "mymod.py").write_text(PLUGIN_MODULE)
    (tmp_path / "orion.toml").write_text(ENABLED)
    return tmp_path


class Running:
    """A ``run`` subprocess whose stdout is read line by line in a thread."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=environment(cwd, env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, needle: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                raise AssertionError(f"no line containing {needle!r} within {timeout}s; saw {self.seen}") from None
            if line is None:
                raise AssertionError(f"exited before printing {needle!r}; saw {self.seen}; stderr: {self.stderr()}")
            self.seen.append(line)
            if needle in line:
                return line

    def finish(self, timeout: float = 20.0) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.seen.append(line)
        return code

    def stderr(self) -> str:
        assert self.process.stderr is not None
        return self.process.stderr.read() if self.process.poll() is not None else ""

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def running() -> Iterator[list[Running]]:
    """Collects started ``run`` processes and kills any left over."""
    started: list[Running] = []
    yield started
    for proc in started:
        proc.kill()


def start_run(
    started: list[Running], cwd: Path, *args: str, script: bool = False, env: dict[str, str] | None = None
) -> Running:
    command = [console_script()] if script else [sys.executable, "-m", "kernel"]
    proc = Running([*command, *args, "run"], cwd, env)
    started.append(proc)
    return proc


# -- plugins list / info -----------------------------------------------------------------


def test_plugins_list_without_config_prints_only_the_header(tmp_path: Path) -> None:
    result = cli(tmp_path, "plugins", "list")
    assert result.returncode == 0, result.stderr
    assert table_rows(result.stdout) == [["NAME", "VERSION", "SOURCE", "ENABLED", "STATE"]]


def test_plugins_list_without_config_shows_the_builtins_with_the_default_profile(tmp_path: Path) -> None:
    result = cli(tmp_path, "plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == BUILTINS
    assert {name for name, row in rows.items() if row["enabled"]} == DEFAULT_PROFILE
    assert all(row["state"] == "configured" for name, row in rows.items() if name in DEFAULT_PROFILE)
    assert all(row["last_error"] is None for row in rows.values())


def test_plugins_list_json_without_config_is_an_empty_list(tmp_path: Path) -> None:
    result = cli(tmp_path, "plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    assert json_rows(result.stdout) == []


def test_plugins_list_shows_a_plugin_from_a_config_source(project: Path) -> None:
    result = cli(project, "plugins", "list")
    assert result.returncode == 0, result.stderr
    header, *rows = table_rows(result.stdout)
    assert header == ["NAME", "VERSION", "SOURCE", "ENABLED", "STATE"]
    assert rows == [["myplugin", "1.2.3", "mymod:MyPlugin", "True", "configured"]]


def test_plugins_list_json_gives_one_object_per_plugin(project: Path) -> None:
    result = cli(project, "--json", "plugins", "list")
    assert result.returncode == 0, result.stderr
    [row] = json_rows(result.stdout)
    assert row["name"] == "myplugin"
    assert row["version"] == "1.2.3"
    assert row["source"] == "mymod:MyPlugin"
    assert row["enabled"] is True
    assert row["state"] == "configured"
    assert row["last_error"] is None


def test_plugins_list_shows_a_disabled_source_plugin_without_importing_it(tmp_path: Path) -> None:
    (tmp_path / "orion.toml").write_text('[plugins.ghost]\nsource = "not_a_module:Nothing"\n')
    result = cli(tmp_path, "plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    [row] = json_rows(result.stdout)
    assert row["name"] == "ghost"
    assert row["enabled"] is False
    assert row["state"] == "discovered"


def test_plugins_list_shows_a_plugin_that_cannot_be_imported_as_failed(tmp_path: Path) -> None:
    (tmp_path / "orion.toml").write_text('[plugins.ghost]\nenabled = true\nsource = "not_a_module:Nothing"\n')
    result = cli(tmp_path, "plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    [row] = json_rows(result.stdout)
    assert row["state"] == "failed"
    assert "not_a_module" in row["last_error"]


def test_plugins_info_shows_manifest_hooks_permissions_and_settings(project: Path) -> None:
    result = cli(project, "plugins", "info", "myplugin")
    assert result.returncode == 0, result.stderr
    lines = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in result.stdout.splitlines() if ":" in line}
    assert lines["name"] == "myplugin"
    assert lines["version"] == "1.2.3"
    assert lines["source"] == "mymod:MyPlugin"
    assert lines["sdk"] == ">=1,<2"
    assert lines["provides"] == "greeter"
    assert lines["permissions"] == "net:connect:example.com:443, fs:read:/etc/ssl"
    assert lines["asked"] == "net:connect:example.com:443, fs:read:/etc/ssl"
    assert lines["granted"] == "net:connect:*:443, fs:read:/etc/ssl"
    data_dir = project / ".orion" / "myplugin"
    assert lines["effective"] == f"net:connect:example.com:443, fs:read:/etc/ssl, fs:write:{data_dir}"
    assert lines["hooks"] == "check_health, cli_commands"
    settings = result.stdout.split("settings:", 1)[1]
    rows = {line.split()[0]: line.split() for line in settings.strip().splitlines()}
    assert rows["FIELD"][:3] == ["FIELD", "TYPE", "DEFAULT"]
    assert rows["greeting"][:3] == ["greeting", "string", '"hello"']
    assert "What the greeter says." in " ".join(rows["greeting"])
    assert rows["times"][:3] == ["times", "integer", "1"]
    assert rows["tags"][:3] == ["tags", "array", '["a","b"]']


def test_plugins_info_json_gives_manifest_and_settings_schema(project: Path) -> None:
    result = cli(project, "plugins", "info", "myplugin", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["name"] == "myplugin"
    assert data["version"] == "1.2.3"
    assert data["sdk"] == ">=1,<2"
    assert data["provides"] == ["greeter"]
    assert data["requires"] == []
    assert data["permissions"] == ["net:connect:example.com:443", "fs:read:/etc/ssl"]
    assert data["granted"] == ["net:connect:*:443", "fs:read:/etc/ssl"]
    assert data["hooks"] == ["check_health", "cli_commands"]
    assert data["settings"]["greeting"] == {
        "type": "string",
        "default": "hello",
        "description": "What the greeter says.",
    }
    assert data["settings"]["times"] == {"type": "integer", "default": 1}
    assert data["settings"]["tags"]["default"] == ["a", "b"]


def test_plugins_info_of_an_unknown_plugin_exits_1(project: Path) -> None:
    result = cli(project, "plugins", "info", "nobody")
    assert result.returncode == 1
    assert "nobody" in result.stdout
    assert "myplugin" in result.stdout


# -- config check ------------------------------------------------------------------------


def test_config_check_of_a_good_file_exits_0(project: Path) -> None:
    result = cli(project, "config", "check", "orion.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok" in result.stdout
    assert "myplugin" in result.stdout


def test_config_check_without_any_config_file_exits_0(tmp_path: Path) -> None:
    result = cli(tmp_path, "config", "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok" in result.stdout


def test_config_check_reports_a_wrong_type_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[kernel]\nstart_timeout = "soon"\n')
    result = cli(tmp_path, "config", "check", "bad.toml")
    assert result.returncode == 1
    assert "kernel.start_timeout: expected float, got 'soon'" in result.stdout


def test_config_check_reports_an_unknown_key_with_did_you_mean(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[kernel]\nstrictt = true\n")
    result = cli(tmp_path, "config", "check", "bad.toml")
    assert result.returncode == 1
    assert "kernel.strictt: unknown key (did you mean 'strict'?)" in result.stdout


def test_config_check_reports_every_issue_of_the_file_shape(project: Path) -> None:
    (project / "bad.toml").write_text(
        '[kernel]\nstart_timeout = "soon"\nstrictt = true\n\n'
        '[plugins.myplugin]\nenabld = true\nsource = "mymod:MyPlugin"\n'
    )
    result = cli(project, "config", "check", "bad.toml")
    assert result.returncode == 1
    assert "3 issue(s)" in result.stdout
    assert "kernel.start_timeout: expected float, got 'soon'" in result.stdout
    assert "kernel.strictt: unknown key (did you mean 'strict'?)" in result.stdout
    assert "plugins.myplugin.enabld: unknown key (did you mean 'enabled'?)" in result.stdout


def test_config_check_reports_plugin_settings_errors_with_paths(project: Path) -> None:
    (project / "bad.toml").write_text(ENABLED + "\n[plugins.myplugin.settings]\ngreeting = 5\ntims = 2\n")
    result = cli(project, "config", "check", "bad.toml")
    assert result.returncode == 1
    assert "plugins.myplugin.settings.greeting: expected str, got 5" in result.stdout
    assert "plugins.myplugin.settings.tims: unknown key (did you mean 'times'?)" in result.stdout


def test_config_check_reports_an_unknown_plugin_with_did_you_mean(project: Path) -> None:
    (project / "bad.toml").write_text(ENABLED + "\n[plugins.myplugn]\nenabled = true\n")
    result = cli(project, "config", "check", "bad.toml")
    assert result.returncode == 1
    assert "plugins.myplugn:" in result.stdout
    assert "did you mean 'myplugin'?" in result.stdout


def test_config_check_reports_bad_toml_with_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[kernel\nstrict = true\n")
    result = cli(tmp_path, "config", "check", "bad.toml")
    assert result.returncode == 1
    assert "not valid TOML" in result.stdout
    assert "line 1" in result.stdout


def test_config_check_of_a_missing_file_exits_1(tmp_path: Path) -> None:
    result = cli(tmp_path, "config", "check", "nowhere.toml")
    assert result.returncode == 1
    assert "no such file" in result.stdout


def test_config_check_fails_when_an_enabled_plugin_cannot_be_imported(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[plugins.ghost]\nenabled = true\nsource = "not_a_module:Nothing"\n')
    result = cli(tmp_path, "config", "check", "bad.toml")
    assert result.returncode == 1
    assert "ghost" in result.stdout
    assert "not_a_module" in result.stdout


def test_config_check_json_lists_issues_with_paths(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[kernel]\nstart_timeout = "soon"\nstrictt = true\n')
    result = cli(tmp_path, "config", "check", "bad.toml", "--json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert data["file"] == "bad.toml"
    assert {issue["path"] for issue in data["issues"]} == {"kernel.start_timeout", "kernel.strictt"}


def test_config_check_json_of_a_good_file(project: Path) -> None:
    result = cli(project, "--json", "config", "check")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] is True
    assert data["issues"] == []


def test_config_check_of_a_good_file_ignores_a_broken_default_file(tmp_path: Path) -> None:
    (tmp_path / "orion.toml").write_text("[kernel\n")
    (tmp_path / "good.toml").write_text("[kernel]\nstrict = true\n")
    result = cli(tmp_path, "config", "check", "good.toml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_config_check_reports_every_out_of_range_value(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[kernel]\nstart_timeout = 0\nstop_timeout = -1\n")
    result = cli(tmp_path, "config", "check", "bad.toml")
    assert result.returncode == 1
    assert "kernel.start_timeout" in result.stdout
    assert "kernel.stop_timeout" in result.stdout


def test_config_check_reports_a_range_error_beside_a_type_error(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[kernel]\nstart_timeout = "soon"\nstop_timeout = -1\n')
    result = cli(tmp_path, "config", "check", "bad.toml")
    assert result.returncode == 1
    assert "kernel.start_timeout" in result.stdout
    assert "kernel.stop_timeout" in result.stdout


def test_config_check_reports_kernel_and_plugin_settings_issues_together(project: Path) -> None:
    (project / "bad.toml").write_text(
        '[kernel]\nstart_timeout = "soon"\n\n' + ENABLED + "\n[plugins.myplugin.settings]\ngreeting = 5\n"
    )
    result = cli(project, "config", "check", "bad.toml")
    assert result.returncode == 1
    assert "kernel.start_timeout" in result.stdout
    assert "plugins.myplugin.settings.greeting" in result.stdout


# -- config show / schema ------------------------------------------------------------------


def test_config_show_without_config_prints_the_defaults_as_toml(tmp_path: Path) -> None:
    result = cli(tmp_path, "config", "show")
    assert result.returncode == 0, result.stderr
    data = tomllib.loads(result.stdout)
    assert data["kernel"]["start_timeout"] == 30.0
    assert data["kernel"]["data_dir"] == ".orion"
    assert data["kernel"]["strict"] is False


def test_config_show_includes_environment_overrides(tmp_path: Path) -> None:
    result = cli(tmp_path, "config", "show", env={"ORION__KERNEL__START_TIMEOUT": "7"})
    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)["kernel"]["start_timeout"] == 7.0


def test_config_show_environment_overrides_beat_the_file(tmp_path: Path) -> None:
    (tmp_path / "orion.toml").write_text("[kernel]\nstart_timeout = 3\nstop_timeout = 4\n")
    result = cli(tmp_path, "config", "show", env={"ORION__KERNEL__START_TIMEOUT": "7"})
    assert result.returncode == 0, result.stderr
    kernel = tomllib.loads(result.stdout)["kernel"]
    assert kernel["start_timeout"] == 7.0
    assert kernel["stop_timeout"] == 4.0


def test_config_show_includes_plugin_settings_defaults(project: Path) -> None:
    result = cli(project, "config", "show")
    assert result.returncode == 0, result.stderr
    plugin = tomllib.loads(result.stdout)["plugins"]["myplugin"]
    assert plugin["enabled"] is True
    assert plugin["source"] == "mymod:MyPlugin"
    assert plugin["settings"] == {"greeting": "hello", "times": 1, "tags": ["a", "b"]}


def test_config_show_merges_file_settings_with_defaults(project: Path) -> None:
    (project / "orion.toml").write_text(ENABLED + '\n[plugins.myplugin.settings]\ngreeting = "hi"\n')
    env = {"ORION__PLUGINS__MYPLUGIN__SETTINGS__TIMES": "4"}
    result = cli(project, "config", "show", env=env)
    assert result.returncode == 0, result.stderr
    settings = tomllib.loads(result.stdout)["plugins"]["myplugin"]["settings"]
    assert settings == {"greeting": "hi", "times": 4, "tags": ["a", "b"]}


def test_config_show_output_is_itself_a_valid_config(project: Path) -> None:
    result = cli(project, "config", "show", env={"ORION__KERNEL__STOP_TIMEOUT": "9"})
    assert result.returncode == 0, result.stderr
    config = load_config(tomllib.loads(result.stdout), environ={})
    assert config.kernel.stop_timeout == 9.0
    assert config.plugins["myplugin"].source == "mymod:MyPlugin"


def test_config_show_json(project: Path) -> None:
    result = cli(project, "config", "show", "--json", env={"ORION__KERNEL__START_TIMEOUT": "7"})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["kernel"]["start_timeout"] == 7.0
    assert data["plugins"]["myplugin"]["settings"]["greeting"] == "hello"


def test_config_show_with_an_invalid_environment_override_exits_1(tmp_path: Path) -> None:
    result = cli(tmp_path, "config", "show", env={"ORION__KERNEL__START_TIMEOUT": "soon"})
    assert result.returncode == 1
    assert "kernel.start_timeout" in result.stdout


def test_config_schema_without_config_is_json_with_kernel_and_plugins(tmp_path: Path) -> None:
    result = cli(tmp_path, "config", "schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["type"] == "object"
    assert {"kernel", "plugins"} <= set(schema["properties"])
    kernel = schema["properties"]["kernel"]["properties"]
    assert kernel["start_timeout"]["type"] == "number"
    assert kernel["start_timeout"]["default"] == 30.0


def test_config_schema_includes_the_settings_schema_of_a_source_plugin(project: Path) -> None:
    result = cli(project, "config", "schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    plugin = schema["properties"]["plugins"]["properties"]["myplugin"]
    settings = plugin["properties"]["settings"]
    assert settings["properties"]["greeting"]["type"] == "string"
    assert settings["properties"]["greeting"]["default"] == "hello"
    assert settings["properties"]["times"] == {"type": "integer", "default": 1}
    assert settings["additionalProperties"] is False


def test_config_schema_includes_a_disabled_source_plugin(project: Path) -> None:
    (project / "orion.toml").write_text('[plugins.myplugin]\nsource = "mymod:MyPlugin"\n')
    result = cli(project, "config", "schema")
    assert result.returncode == 0, result.stderr
    plugins = json.loads(result.stdout)["properties"]["plugins"]["properties"]
    assert "greeting" in plugins["myplugin"]["properties"]["settings"]["properties"]


# -- invoke ----------------------------------------------------------------------------------


def test_invoke_prints_the_result(project: Path) -> None:
    result = cli(project, "invoke", "greet", "--args", '{"who": "Ada"}')
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello, Ada"


def test_invoke_json_wraps_the_result(project: Path) -> None:
    result = cli(project, "invoke", "greet", "--args", '{"who": "Ada"}', "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"ok": True, "result": "hello, Ada"}


def test_invoke_prints_a_structured_result_as_json(project: Path) -> None:
    result = cli(project, "invoke", "data.echo", "--args", '{"n": [1, 2]}')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"n": [1, 2]}


def test_invoke_starts_and_stops_the_plugins(project: Path) -> None:
    result = cli(project, "invoke", "greet", "--args", '{"who": "Ada"}')
    assert result.returncode == 0, result.stderr
    assert (project / ".orion" / "myplugin" / "started").exists()
    assert (project / ".orion" / "myplugin" / "stopped").exists()


def test_invoke_of_an_unknown_operation_exits_1_with_operation_not_found(project: Path) -> None:
    result = cli(project, "invoke", "gret")
    assert result.returncode == 1
    assert "OperationNotFound" in result.stdout
    assert "did you mean 'greet'" in result.stdout


def test_invoke_of_an_unknown_operation_json(project: Path) -> None:
    result = cli(project, "--json", "invoke", "gret")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert data["error"] == "OperationNotFound"


def test_invoke_without_any_config_exits_1_with_operation_not_found(tmp_path: Path) -> None:
    result = cli(tmp_path, "invoke", "anything")
    assert result.returncode == 1
    assert "OperationNotFound" in result.stdout


def test_invoke_with_arguments_that_are_not_an_object_exits_1_with_invalid_arguments(project: Path) -> None:
    result = cli(project, "invoke", "data.echo", "--args", "[1, 2]")
    assert result.returncode == 1
    assert "InvalidArguments" in result.stdout


def test_invoke_of_an_operation_that_raises_exits_1_with_operation_failed(project: Path) -> None:
    result = cli(project, "invoke", "fail.now", "--json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert data["error"] == "OperationFailed"
    assert "boom" in data["message"]


def test_invoke_with_arguments_that_are_not_json_exits_2(project: Path) -> None:
    result = cli(project, "invoke", "greet", "--args", "{who: Ada}")
    assert result.returncode == 2
    assert "not valid JSON" in result.stdout


# -- choosing the config file --------------------------------------------------------------


def test_dash_c_chooses_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "mymod.py").write_text(PLUGIN_MODULE)
    (tmp_path / "custom.toml").write_text(ENABLED)
    chosen = cli(tmp_path, "-c", "custom.toml", "plugins", "list", "--json")
    default = cli(tmp_path, "plugins", "list", "--json")
    assert chosen.returncode == 0, chosen.stderr
    assert [row["name"] for row in json_rows(chosen.stdout)] == ["myplugin"]
    assert json_rows(default.stdout) == []


def test_dash_c_after_the_sub_command_chooses_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "mymod.py").write_text(PLUGIN_MODULE)
    (tmp_path / "custom.toml").write_text(ENABLED)
    result = cli(tmp_path, "invoke", "greet", "--args", '{"who": "Bo"}', "-c", "custom.toml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello, Bo"


def test_dash_c_overrides_the_default_file(project: Path) -> None:
    (project / "other.toml").write_text("[kernel]\nstart_timeout = 5\n")
    result = cli(project, "-c", "other.toml", "config", "show", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["kernel"]["start_timeout"] == 5.0
    assert data["plugins"] == {}


def test_dash_c_is_the_file_config_check_checks_by_default(tmp_path: Path) -> None:
    (tmp_path / "orion.toml").write_text("[kernel]\nstrict = true\n")
    (tmp_path / "custom.toml").write_text("[kernel]\nstrictt = true\n")
    result = cli(tmp_path, "-c", "custom.toml", "config", "check")
    assert result.returncode == 1
    assert "custom.toml" in result.stdout
    assert "kernel.strictt" in result.stdout


def test_dash_c_with_a_missing_file_exits_1(tmp_path: Path) -> None:
    result = cli(tmp_path, "-c", "missing.toml", "plugins", "list")
    assert result.returncode == 1
    assert "no such file" in result.stdout


def test_broken_default_file_makes_commands_exit_1_with_the_issue(tmp_path: Path) -> None:
    (tmp_path / "orion.toml").write_text("[kernel]\nstrictt = true\n")
    result = cli(tmp_path, "plugins", "list")
    assert result.returncode == 1
    assert "kernel.strictt" in result.stdout


# -- the console script ----------------------------------------------------------------------


def test_console_script_lists_plugins(project: Path) -> None:
    result = cli(project, "plugins", "list", script=True)
    assert result.returncode == 0, result.stderr
    assert table_rows(result.stdout)[1][:2] == ["myplugin", "1.2.3"]


def test_console_script_prints_its_version(tmp_path: Path) -> None:
    result = cli(tmp_path, "--version", script=True)
    assert result.returncode == 0
    assert "orion-kernel" in result.stdout


def test_help_lists_the_builtin_commands_without_config(tmp_path: Path) -> None:
    result = cli(tmp_path, "--help")
    assert result.returncode == 0
    for command in ("run", "plugins", "config", "invoke"):
        assert command in result.stdout


# -- plugin sub-commands ---------------------------------------------------------------------


def test_plugin_command_appears_in_help(project: Path) -> None:
    result = cli(project, "--help")
    assert result.returncode == 0, result.stderr
    assert "hello" in result.stdout
    assert "say hello from myplugin" in result.stdout
    assert "greet-async" in result.stdout


def test_plugin_command_has_its_own_help_with_its_arguments(project: Path) -> None:
    result = cli(project, "hello", "--help")
    assert result.returncode == 0, result.stderr
    assert "--who" in result.stdout


def test_plugin_command_runs_with_its_arguments(project: Path) -> None:
    result = cli(project, "hello", "--who", "Grace")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello from myplugin, Grace"


def test_async_plugin_command_invokes_through_a_started_kernel(project: Path) -> None:
    result = cli(project, "greet-async", "--who", "Linus")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello, Linus"
    assert (project / ".orion" / "myplugin" / "stopped").exists()


def test_plugin_command_exit_code_is_the_process_exit_code(project: Path) -> None:
    result = cli(project, "exit-with", "3")
    assert result.returncode == 3
    assert json.loads(cli(project, "--json", "exit-with", "0").stdout) == {"code": 0}


def test_plugin_command_runs_through_the_console_script(project: Path) -> None:
    result = cli(project, "hello", script=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello from myplugin, world"


def test_plugin_command_clashing_with_a_builtin_is_ignored(project: Path) -> None:
    result = cli(project, "--help")
    assert result.returncode == 0
    assert "clashes with the kernel's own run" not in result.stdout


def test_plugin_commands_are_absent_when_the_plugin_is_disabled(project: Path) -> None:
    (project / "orion.toml").write_text('[plugins.myplugin]\nsource = "mymod:MyPlugin"\n')
    result = cli(project, "hello")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


# -- run ---------------------------------------------------------------------------------------

#: pause between seeing the "running" line and signalling; see the race test below
SETTLE = 0.5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_run_without_config_serves_the_default_profile_and_stops_on_sigint(
    tmp_path: Path, running: list[Running]
) -> None:
    # The README's main job: no config file, embedded defaults (port moved off 8470 for the test).
    port = free_port()
    proc = start_run(running, tmp_path, env={"ORION__PLUGINS__HTTP__SETTINGS__PORT": str(port)})
    line = proc.wait_for("running")
    for name in DEFAULT_PROFILE:
        assert name in line
    base = f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(f"{base}/health/live", timeout=10) as response:
        assert json.loads(response.read()) == {"status": "ok"}
    with urllib.request.urlopen(f"{base}/dashboard/", timeout=10) as response:
        assert b"<html" in response.read().lower()
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        assert b"orion_plugin_state" in response.read()
    time.sleep(SETTLE)
    proc.process.send_signal(signal.SIGINT)
    assert proc.finish() == 0
    assert any("stopped" in line for line in proc.seen)


def test_run_stops_cleanly_on_sigint_and_stops_the_plugins(project: Path, running: list[Running]) -> None:
    proc = start_run(running, project)
    line = proc.wait_for("running")
    assert "myplugin" in line
    assert (project / ".orion" / "myplugin" / "started").exists()
    assert not (project / ".orion" / "myplugin" / "stopped").exists()
    time.sleep(SETTLE)
    proc.process.send_signal(signal.SIGINT)
    assert proc.finish() == 0
    assert (project / ".orion" / "myplugin" / "stopped").exists()
    assert "orion-kernel stopped" in "".join(proc.seen)


def test_run_stops_cleanly_on_sigterm_and_stops_the_plugins(project: Path, running: list[Running]) -> None:
    proc = start_run(running, project, script=True)
    proc.wait_for("running")
    time.sleep(SETTLE)
    proc.process.send_signal(signal.SIGTERM)
    assert proc.finish() == 0
    assert (project / ".orion" / "myplugin" / "stopped").exists()


def test_run_reports_a_plugin_that_failed_to_start(tmp_path: Path, running: list[Running]) -> None:
    (tmp_path / "orion.toml").write_text('[plugins.ghost]\nenabled = true\nsource = "not_a_module:Nothing"\n')
    proc = start_run(running, tmp_path)
    proc.wait_for("running")
    time.sleep(SETTLE)
    proc.process.send_signal(signal.SIGTERM)
    assert proc.finish() == 0


def test_run_in_strict_mode_with_a_failing_plugin_exits_1_listing_it(project: Path) -> None:
    (project / "orion.toml").write_text(
        "[kernel]\nstrict = true\n\n" + ENABLED + '\n[plugins.ghost]\nenabled = true\nsource = "not_a_module:X"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "kernel", "run"],
        cwd=project,
        env=environment(project),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "ghost" in result.stdout + result.stderr
    assert "not_a_module" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert (project / ".orion" / "myplugin" / "stopped").exists()


def test_run_stops_cleanly_on_sigterm_sent_as_soon_as_running_is_printed(project: Path) -> None:
    (project / "driver.py").write_text(SIGNAL_ON_RUNNING_DRIVER)
    result = subprocess.run(
        [sys.executable, "driver.py"],
        cwd=project,
        env=environment(project),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert "running" in result.stdout
    assert result.returncode == 0
    assert (project / ".orion" / "myplugin" / "stopped").exists()


def test_plugins_info_shows_the_isolation_and_what_the_worker_really_got(project: Path) -> None:
    (project / "orion.toml").write_text(ENABLED + 'isolation = "process"\n')
    result = cli(project, "plugins", "info", "myplugin")
    assert result.returncode == 0, result.stderr
    lines = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in result.stdout.splitlines() if ":" in line}
    assert lines["isolation"] == "process"
    assert "RLIMIT_AS=" in lines["protections"]
    assert "no_new_privs=yes" in lines["protections"]
    data = json.loads(cli(project, "plugins", "info", "myplugin", "--json").stdout)
    assert data["isolation"] == "process"
    assert data["protections"]["no_new_privs"] is True
    assert "landlock_fs" in data["protections"] and "seccomp" in data["protections"]


def test_the_cli_environment_fetches_for_plugin_commands() -> None:
    from kernel._cli import http_get

    with pytest.raises(ValueError, match="only http:// and https://"):
        http_get("file:///etc/passwd", 1.0, {})
    with pytest.raises(OSError):
        http_get("http://127.0.0.1:9/", 2.0, {})  # the discard port: nothing listens
