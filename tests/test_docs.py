"""The README stays true: its config reference, CLI reference and examples."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import anyio
import attrs
import pytest

from kernel import Kernel
from kernel import KernelSettings
from kernel import PluginEntry
from kernel import ProcessSettings
from kernel import SandboxSettings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _python_blocks(after_heading: str) -> list[str]:
    section = README.split(after_heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.parametrize("cls", [KernelSettings, SandboxSettings, PluginEntry, ProcessSettings])
def test_every_config_field_is_in_the_reference(cls: type) -> None:
    for field in attrs.fields(cls):
        assert f"| `{field.name}` |" in README, f"{cls.__name__}.{field.name} missing from README"


@pytest.mark.parametrize(
    "command", ["run", "plugins list", "plugins info NAME", "config check", "config show", "config schema", "invoke OP"]
)
def test_every_cli_command_is_in_the_reference(command: str) -> None:
    assert f"| `{command}" in README


def test_readme_plugin_example_runs() -> None:
    code = _python_blocks("## Writing a plugin")[0]
    namespace: dict[str, object] = {}
    exec(compile(code, "README-plugin", "exec"), namespace)

    async def main() -> str:
        config = {"plugins": {"greeter": {"settings": {"greeting": "hi"}}}}
        async with Kernel(config, plugins=[namespace["Greeter"]()], environ={}) as kernel:  # type: ignore[operator]
            return str(await kernel.invoke("greet", {"who": "Ada"}))

    assert anyio.run(main) == "hi, Ada"


def test_readme_embedding_example_runs(tmp_path: Path) -> None:
    blocks = _python_blocks("## Embedding")
    (tmp_path / "orion.toml").write_text("[kernel]\nstart_timeout = 5.0\n")
    script = tmp_path / "app.py"
    script.write_text(blocks[0] + "\n" + blocks[1])
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("result for hooks") == 2


def test_example_agent_app_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "agent_app.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "search results: ['hook dispatch', 'hook specs']" in done.stdout
    assert "audit: ada called tools.search" in done.stdout


BUILTIN_PLUGINS = {
    "http": "builtin_plugins.http:HttpServer",
    "metrics": "builtin_plugins.monitoring.metrics:Metrics",
    "alerts": "builtin_plugins.monitoring.alerts:Alerts",
    "analytics": "builtin_plugins.monitoring.analytics:Analytics",
    "dashboard": "builtin_plugins.monitoring.dashboard:Dashboard",
    "auth": "builtin_plugins.security.auth:Auth",
    "rbac": "builtin_plugins.security.rbac:Rbac",
    "audit": "builtin_plugins.security.audit:Audit",
    "crypto": "builtin_plugins.security.crypto:Crypto",
    "secrets": "builtin_plugins.security.secrets:Secrets",
    "scanner": "builtin_plugins.security.scanner:Scanner",
}


def test_every_builtin_plugin_is_listed_here() -> None:
    from importlib.metadata import entry_points

    ours = {ep.name: ep.value for ep in entry_points(group="orion_kernel.plugins") if ep.value.startswith("builtin_")}
    assert ours == {**BUILTIN_PLUGINS, "health": "builtin_plugins.monitoring.health:Health"}


@pytest.mark.parametrize("name", sorted(BUILTIN_PLUGINS))
def test_every_builtin_setting_is_in_the_reference(name: str) -> None:
    import importlib

    module, _, attr = BUILTIN_PLUGINS[name].partition(":")
    config = getattr(importlib.import_module(module), attr).Config
    section = README.split(f"`[plugins.{name}.settings]`", 1)[1].split("\n`", 1)[0]
    for field in attrs.fields(config):
        assert f"| `{field.alias or field.name}` |" in section, f"{name}.{field.name} missing from README"


def test_readme_monitoring_config_is_valid(tmp_path: Path) -> None:
    section = README.split("## Monitoring", 1)[1]
    toml = re.findall(r"```toml\n(.*?)```", section, flags=re.S)[0]
    (tmp_path / "orion.toml").write_text(toml)
    kernel = Kernel(tmp_path / "orion.toml", environ={})
    kernel.prepare()
    assert {n for n, i in kernel.plugins.items() if i.enabled} == {"http", "metrics", "alerts"}


def test_readme_security_config_is_valid_and_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import base64
    import os

    section = README.split("## Security (builtin plugins)", 1)[1]
    toml = re.findall(r"```toml\n(.*?)```", section, flags=re.S)[0]
    (tmp_path / "orion.toml").write_text(toml)
    monkeypatch.setenv("ORION_SECRETS_KEY", base64.b64encode(os.urandom(32)).decode())

    async def start() -> dict[str, str]:
        async with Kernel(tmp_path / "orion.toml", environ={}) as kernel:
            return {n: i.state.value for n, i in kernel.plugins.items() if i.enabled}

    states = anyio.run(start)
    assert states == dict.fromkeys(("secrets", "auth", "rbac", "audit", "scanner"), "running")
