"""Tests for plugin discovery and loading: code, ``source = "module:Class"`` and entry points."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from kernel import ENTRY_POINT_GROUP
from kernel import Kernel
from plugin_sdk import ConfigError
from plugin_sdk import Invocation
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginError
from plugin_sdk import PluginStartError
from plugin_sdk import PluginState


@attrs.define
class Site:
    """A directory on ``sys.path`` to put plugin modules and distributions in."""

    root: Path
    modules: list[str] = attrs.Factory(list)

    def module(self, name: str, source: str) -> None:
        (self.root / f"{name}.py").write_text(textwrap.dedent(source))
        self.modules.append(name)
        importlib.invalidate_caches()

    def distribution(self, name: str, version: str, entry_points: dict[str, str], *, root: Path | None = None) -> None:
        info = (root or self.root) / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = "".join(f"{ep} = {target}\n" for ep, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
        importlib.invalidate_caches()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    found = Site(root)
    yield found
    for name in found.modules:
        sys.modules.pop(name, None)
    importlib.invalidate_caches()


#: records, in ``witness.IMPORTED``, that a plugin module was imported
WITNESS = "IMPORTED: list[str] = []\n"

MYPLUG = """
    import plugin_sdk
    import witness

    witness.IMPORTED.append(__name__)


    class MyPlug(plugin_sdk.Plugin):
        name = "myplug"
        version = "1.2.0"
        provides = ("greeting",)

        async def start(self, ctx):
            ctx.provide("greeting", "hello")
            ctx.register_operation("myplug.greet", self.greet)

        async def stop(self):
            pass

        async def greet(self, inv):
            return f"hello, {inv.args['who']}"

        @plugin_sdk.hookimpl
        async def check_health(self):
            return plugin_sdk.HealthStatus(ok=True)
"""

BROKEN = """
    import witness

    witness.IMPORTED.append(__name__)
    raise RuntimeError("boom at import")
"""


@pytest.fixture
def myplug(site: Site) -> Site:
    """A distribution ``myplug 1.2.0`` with entry point ``myplug = myplug:MyPlug``."""
    site.module("witness", WITNESS)
    site.module("myplug", MYPLUG)
    site.distribution("myplug", "1.2.0", {"myplug": "myplug:MyPlug"})
    return site


def imported() -> list[str]:
    import witness  # type: ignore[import-not-found]

    result: list[str] = witness.IMPORTED
    return result


class Echo(Plugin):
    name = "echo"
    version = "0.3.0"

    instances = 0

    def __init__(self) -> None:
        type(self).instances += 1

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.register_operation("echo", self.echo)

    async def echo(self, inv: Invocation) -> Any:
        return dict(inv.args)


class Needy(Plugin):
    name = "needy"
    requires = ("greeting",)

    async def start(self, ctx: PluginContext[Any]) -> None:
        self.greeting = ctx.service("greeting")


@pytest.fixture(autouse=True)
def _reset_echo_count() -> None:
    Echo.instances = 0


# -- plugins passed in code --------------------------------------------------------


@pytest.mark.anyio
async def test_plugin_instance_passed_in_code_is_enabled_and_runs() -> None:
    async with Kernel({}, plugins=[Echo()], environ={}) as kernel:
        info = kernel.plugins["echo"]
        assert info.enabled is True
        assert info.state is PluginState.RUNNING
        assert info.source == "code"
        assert info.version == "0.3.0"
        assert info.operations == ("echo",)
        assert await kernel.invoke("echo", {"a": 1}) == {"a": 1}


@pytest.mark.anyio
async def test_plugin_class_passed_in_code_is_instantiated() -> None:
    async with Kernel({}, plugins=[Echo], environ={}) as kernel:
        assert kernel.plugins["echo"].state is PluginState.RUNNING
        assert await kernel.invoke("echo", {"b": 2}) == {"b": 2}
    assert Echo.instances == 1


@pytest.mark.anyio
async def test_plugin_passed_in_code_can_be_disabled_by_config() -> None:
    async with Kernel({"plugins": {"echo": {"enabled": False}}}, plugins=[Echo], environ={}) as kernel:
        info = kernel.plugins["echo"]
        assert info.enabled is False
        assert info.state is PluginState.DISCOVERED
        assert "echo" not in kernel.operations
    assert Echo.instances == 0


@pytest.mark.anyio
async def test_plugin_passed_in_code_can_be_disabled_by_env() -> None:
    async with Kernel({}, plugins=[Echo], environ={"ORION__PLUGINS__ECHO__ENABLED": "false"}) as kernel:
        assert kernel.plugins["echo"].enabled is False
        assert kernel.plugins["echo"].state is PluginState.DISCOVERED


def test_two_plugins_in_code_with_one_name_are_refused() -> None:
    with pytest.raises(PluginError, match="two plugins passed in code are named 'echo'"):
        Kernel({}, plugins=[Echo(), Echo], environ={})


@pytest.mark.parametrize("name", ["", None, 5])
def test_plugin_in_code_without_a_name_is_refused(name: object) -> None:
    nameless = type("Nameless", (Plugin,), {"name": name})()
    with pytest.raises(PluginError, match="plugin passed in code has no name"):
        Kernel({}, plugins=[nameless], environ={})


@pytest.mark.anyio
async def test_plugin_class_that_needs_arguments_fails_alone() -> None:
    class NeedsArgs(Plugin):
        name = "needs_args"

        def __init__(self, setting: int) -> None:
            self.setting = setting

    async with Kernel({}, plugins=[NeedsArgs, Echo()], environ={}) as kernel:
        info = kernel.plugins["needs_args"]
        assert info.state is PluginState.FAILED
        assert info.last_error is not None
        assert "cannot instantiate" in info.last_error
        assert "plugin classes take no arguments" in info.last_error
        assert kernel.plugins["echo"].state is PluginState.RUNNING


@pytest.mark.anyio
async def test_plugin_in_code_with_a_bad_manifest_fails_alone() -> None:
    bad = type("Bad", (Plugin,), {"name": "bad", "version": "not a version"})()
    async with Kernel({}, plugins=[bad, Echo()], environ={}) as kernel:
        info = kernel.plugins["bad"]
        assert info.state is PluginState.FAILED
        assert info.last_error is not None
        assert "manifest field 'version'" in info.last_error
        assert "'not a version' is not a PEP 440 version" in info.last_error
        assert kernel.plugins["echo"].state is PluginState.RUNNING


# -- plugins from config: source = "module:Class" ----------------------------------


GREETER = """
    import plugin_sdk
    import witness

    witness.IMPORTED.append(__name__)


    class Greeter(plugin_sdk.Plugin):
        name = "greeter"
        version = "2.0"

        async def start(self, ctx):
            ctx.register_operation("greet", self.greet)

        async def greet(self, inv):
            return "hi " + inv.args["who"]


    class Holder:
        Inner = Greeter
"""


@pytest.fixture
def greeter(site: Site) -> Site:
    site.module("witness", WITNESS)
    site.module("greeter_mod", GREETER)
    return site


@pytest.mark.anyio
async def test_plugin_from_a_config_source_runs(greeter: Site) -> None:
    config = {"plugins": {"greeter": {"source": "greeter_mod:Greeter", "enabled": True}}}
    async with Kernel(config, environ={}) as kernel:
        info = kernel.plugins["greeter"]
        assert info.state is PluginState.RUNNING
        assert info.source == "greeter_mod:Greeter"
        assert info.version == "2.0"
        assert await kernel.invoke("greet", {"who": "Ada"}) == "hi Ada"


@pytest.mark.anyio
async def test_config_source_may_name_a_dotted_attribute(greeter: Site) -> None:
    config = {"plugins": {"greeter": {"source": "greeter_mod:Holder.Inner", "enabled": True}}}
    async with Kernel(config, environ={}) as kernel:
        assert kernel.plugins["greeter"].state is PluginState.RUNNING


def test_config_source_without_enabled_is_listed_but_not_imported(greeter: Site) -> None:
    kernel = Kernel({"plugins": {"greeter": {"source": "greeter_mod:Greeter"}}}, environ={}, entry_points=False)
    kernel.prepare()
    info = kernel.plugins["greeter"]
    assert info.enabled is False
    assert info.state is PluginState.DISCOVERED
    assert info.version is None
    assert "greeter_mod" not in sys.modules
    assert imported() == []


@pytest.mark.anyio
async def test_disabled_config_source_is_never_imported_while_the_kernel_runs(greeter: Site) -> None:
    config = {"plugins": {"greeter": {"source": "greeter_mod:Greeter", "enabled": False}}}
    async with Kernel(config, plugins=[Echo()], environ={}) as kernel:
        assert kernel.plugins["echo"].state is PluginState.RUNNING
        assert kernel.plugins["greeter"].state is PluginState.DISCOVERED
    assert "greeter_mod" not in sys.modules
    assert imported() == []


@pytest.mark.parametrize("source", ["greeter_mod", "greeter_mod:", ":Greeter"])
def test_malformed_config_source_fails_the_plugin(greeter: Site, source: str) -> None:
    kernel = Kernel({"plugins": {"greeter": {"source": source, "enabled": True}}}, environ={})
    kernel.prepare()
    info = kernel.plugins["greeter"]
    assert info.state is PluginState.FAILED
    assert info.last_error is not None
    assert f"source {source!r} must look like 'package.module:Class'" in info.last_error


def test_config_source_naming_a_missing_module_fails_the_plugin(site: Site) -> None:
    kernel = Kernel({"plugins": {"ghost": {"source": "no_such_module_xyz:Ghost", "enabled": True}}}, environ={})
    kernel.prepare()
    info = kernel.plugins["ghost"]
    assert info.state is PluginState.FAILED
    assert info.last_error is not None
    assert "no_such_module_xyz:Ghost" in info.last_error
    assert "ModuleNotFoundError" in info.last_error


def test_config_source_naming_a_missing_attribute_fails_the_plugin(greeter: Site) -> None:
    kernel = Kernel({"plugins": {"greeter": {"source": "greeter_mod:Nope", "enabled": True}}}, environ={})
    kernel.prepare()
    info = kernel.plugins["greeter"]
    assert info.state is PluginState.FAILED
    assert info.last_error is not None
    assert "module 'greeter_mod' has no attribute 'Nope'" in info.last_error


@pytest.mark.anyio
async def test_config_source_that_raises_at_import_fails_alone(site: Site) -> None:
    site.module("witness", WITNESS)
    site.module("broken_mod", BROKEN)
    config = {"plugins": {"broken": {"source": "broken_mod:Broken", "enabled": True}}}
    async with Kernel(config, plugins=[Echo()], environ={}) as kernel:
        info = kernel.plugins["broken"]
        assert info.state is PluginState.FAILED
        assert info.last_error == "cannot load from broken_mod:Broken: RuntimeError: boom at import"
        assert info.error_traceback is not None
        assert "RuntimeError: boom at import" in info.error_traceback
        assert str(site.root / "broken_mod.py") in info.error_traceback
        assert kernel.plugins["echo"].state is PluginState.RUNNING


def test_config_source_whose_plugin_has_another_name_fails(greeter: Site) -> None:
    kernel = Kernel({"plugins": {"hello": {"source": "greeter_mod:Greeter", "enabled": True}}}, environ={})
    kernel.prepare()
    info = kernel.plugins["hello"]
    assert info.state is PluginState.FAILED
    assert info.last_error is not None
    assert "calls itself 'greeter'" in info.last_error


@pytest.mark.anyio
async def test_plugin_in_code_wins_over_a_config_source_of_the_same_name(greeter: Site) -> None:
    config = {"plugins": {"echo": {"source": "greeter_mod:Greeter"}}}
    async with Kernel(config, plugins=[Echo()], environ={}) as kernel:
        assert kernel.plugins["echo"].source == "code"
        assert kernel.plugins["echo"].state is PluginState.RUNNING
    assert "greeter_mod" not in sys.modules


# -- plugins from entry points -----------------------------------------------------


def test_entry_point_plugin_is_listed_but_not_imported(myplug: Site) -> None:
    kernel = Kernel({}, environ={})
    kernel.prepare(scan_all=True)
    info = kernel.plugins["myplug"]
    assert info.enabled is False
    assert info.state is PluginState.DISCOVERED
    assert info.version == "1.2.0"
    assert "myplug:MyPlug" in info.source
    assert info.source.startswith("entry point myplug 1.2.0")
    assert info.last_error is None
    assert "myplug" not in sys.modules
    assert imported() == []


@pytest.mark.anyio
async def test_entry_point_plugin_enabled_by_config_runs(myplug: Site) -> None:
    async with Kernel({"plugins": {"myplug": {"enabled": True}}}, environ={}) as kernel:
        info = kernel.plugins["myplug"]
        assert info.enabled is True
        assert info.state is PluginState.RUNNING
        assert info.version == "1.2.0"
        assert info.provides == ("greeting",)
        assert info.hooks == ("check_health",)
        assert info.operations == ("myplug.greet",)
        assert await kernel.invoke("myplug.greet", {"who": "Ada"}) == "hello, Ada"
    assert imported() == ["myplug"]


@pytest.mark.anyio
async def test_entry_point_plugin_enabled_by_env_runs(myplug: Site) -> None:
    async with Kernel({}, environ={"ORION__PLUGINS__MYPLUG__ENABLED": "true"}) as kernel:
        assert kernel.plugins["myplug"].state is PluginState.RUNNING


@pytest.mark.anyio
async def test_entry_point_plugin_enabled_by_a_toml_file_runs(myplug: Site, tmp_path: Path) -> None:
    (tmp_path / "orion.toml").write_text("[plugins.myplug]\nenabled = true\n")
    async with Kernel(environ={}) as kernel:
        assert kernel.plugins["myplug"].state is PluginState.RUNNING


SIDEPLUG = """
    import plugin_sdk
    import witness

    witness.IMPORTED.append(__name__)


    class SidePlug(plugin_sdk.Plugin):
        name = "sideplug"
"""


@pytest.mark.anyio
async def test_entry_point_plugin_not_enabled_is_never_imported_while_the_kernel_runs(myplug: Site) -> None:
    myplug.module("sideplug", SIDEPLUG)
    myplug.distribution("sidedist", "0.5", {"sideplug": "sideplug:SidePlug"})
    async with Kernel({"plugins": {"myplug": {"enabled": True}}}, environ={}) as kernel:
        assert kernel.plugins["myplug"].state is PluginState.RUNNING
        assert kernel.plugins["sideplug"].enabled is False
        assert kernel.plugins["sideplug"].state is PluginState.DISCOVERED
        assert kernel.plugins["sideplug"].version == "0.5"
    assert "sideplug" not in sys.modules
    assert imported() == ["myplug"]


@pytest.mark.parametrize("entry", [{"enabled": False}, {"settings": {}}], ids=["disabled", "settings-only"])
def test_config_entry_for_an_installed_entry_point_that_is_not_enabled_is_accepted(
    myplug: Site, entry: dict[str, Any]
) -> None:
    kernel = Kernel({"plugins": {"myplug": entry}}, environ={})
    kernel.prepare()
    assert kernel.plugins["myplug"].enabled is False
    assert "myplug" not in sys.modules


def test_misspelt_entry_point_name_in_config_gets_did_you_mean(myplug: Site) -> None:
    kernel = Kernel({"plugins": {"myplg": {"enabled": True}}}, environ={})
    with pytest.raises(ConfigError) as info:
        kernel.prepare()
    assert info.value.paths == ("plugins.myplg",)
    assert "did you mean 'myplug'?" in info.value.issues[0].message


@pytest.mark.anyio
async def test_entry_point_that_raises_at_import_fails_alone(myplug: Site) -> None:
    myplug.module("broken_mod", BROKEN)
    myplug.distribution("brokendist", "0.1", {"broken": "broken_mod:Broken"})
    config = {"plugins": {"myplug": {"enabled": True}, "broken": {"enabled": True}}}
    async with Kernel(config, environ={}) as kernel:
        info = kernel.plugins["broken"]
        assert info.enabled is True
        assert info.state is PluginState.FAILED
        assert info.version == "0.1"
        assert info.last_error is not None
        assert info.last_error.startswith("cannot load from entry point brokendist 0.1 (broken_mod:Broken)")
        assert info.last_error.endswith("RuntimeError: boom at import")
        assert info.error_traceback is not None
        assert "Traceback (most recent call last)" in info.error_traceback
        assert 'raise RuntimeError("boom at import")' in info.error_traceback
        assert kernel.plugins["myplug"].state is PluginState.RUNNING
        assert await kernel.invoke("myplug.greet", {"who": "Bo"}) == "hello, Bo"


@pytest.mark.anyio
async def test_plugin_requiring_a_service_of_a_plugin_that_failed_to_import_fails(site: Site) -> None:
    site.module("witness", WITNESS)
    site.module("broken_mod", BROKEN)
    site.distribution("brokendist", "0.1", {"broken": "broken_mod:Broken"})
    config = {"plugins": {"broken": {"enabled": True}}}
    async with Kernel(config, plugins=[Needy(), Echo()], environ={}) as kernel:
        info = kernel.plugins["needy"]
        assert info.state is PluginState.FAILED
        assert info.last_error is not None
        assert "'greeting'" in info.last_error
        assert "broken" in info.last_error
        assert kernel.plugins["echo"].state is PluginState.RUNNING


@pytest.mark.anyio
async def test_plugin_requiring_a_service_of_a_working_entry_point_runs(myplug: Site) -> None:
    needy = Needy()
    async with Kernel({"plugins": {"myplug": {"enabled": True}}}, plugins=[needy], environ={}) as kernel:
        assert kernel.plugins["needy"].state is PluginState.RUNNING
    assert needy.greeting == "hello"


@pytest.mark.anyio
async def test_strict_kernel_refuses_to_start_when_an_entry_point_fails_to_import(site: Site) -> None:
    site.module("witness", WITNESS)
    site.module("broken_mod", BROKEN)
    site.distribution("brokendist", "0.1", {"broken": "broken_mod:Broken"})
    config = {"kernel": {"strict": True}, "plugins": {"broken": {"enabled": True}}}
    with pytest.raises(PluginStartError) as info:
        async with Kernel(config, plugins=[Echo()], environ={}):
            pytest.fail("a strict kernel must not start with a failed plugin")
    assert [name for name, _ in info.value.failures] == ["broken"]
    assert "boom at import" in str(info.value)


@pytest.mark.anyio
async def test_entry_point_name_differing_from_the_plugin_name_fails(myplug: Site) -> None:
    myplug.distribution("aliasdist", "3.0", {"alias": "myplug:MyPlug"})
    async with Kernel({"plugins": {"alias": {"enabled": True}}}, plugins=[Echo()], environ={}) as kernel:
        info = kernel.plugins["alias"]
        assert info.state is PluginState.FAILED
        assert info.last_error is not None
        assert "calls itself 'myplug'" in info.last_error
        assert "the entry point name and the plugin name must match" in info.last_error
        assert kernel.plugins["echo"].state is PluginState.RUNNING


def test_entry_point_to_something_that_is_not_a_plugin_fails(site: Site) -> None:
    site.module("not_a_plugin", "def helper():\n    return 1\n")
    site.distribution("oddball", "1.0", {"oddball": "not_a_plugin:helper"})
    kernel = Kernel({"plugins": {"oddball": {"enabled": True}}}, environ={})
    kernel.prepare()
    info = kernel.plugins["oddball"]
    assert info.state is PluginState.FAILED
    assert info.last_error is not None
    assert "manifest field 'name'" in info.last_error


def test_first_distribution_on_sys_path_wins_for_one_entry_point_name(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    later = tmp_path / "later"
    later.mkdir()
    monkeypatch.setattr(sys, "path", [*sys.path, str(later)])  # site.root comes first
    site.distribution("first", "1.0", {"dup": "first_mod:Dup"})
    site.distribution("second", "2.0", {"dup": "second_mod:Dup"}, root=later)
    kernel = Kernel({}, environ={})
    kernel.prepare(scan_all=True)
    assert kernel.plugins["dup"].source == "entry point first 1.0 (first_mod:Dup)"
    assert kernel.plugins["dup"].version == "1.0"


@pytest.mark.anyio
async def test_plugin_in_code_wins_over_an_entry_point_of_the_same_name(myplug: Site) -> None:
    class MyPlugFromCode(Plugin):
        name = "myplug"
        version = "9.9"

    kernel = Kernel({}, plugins=[MyPlugFromCode()], environ={})
    kernel.prepare(scan_all=True)  # read the entry points too
    async with kernel:
        info = kernel.plugins["myplug"]
        assert info.source == "code"
        assert info.version == "9.9"
        assert info.state is PluginState.RUNNING
    assert "myplug" not in sys.modules


@pytest.mark.anyio
async def test_config_source_wins_over_an_entry_point_of_the_same_name(myplug: Site) -> None:
    myplug.module("greeter_mod", GREETER)
    myplug.distribution("greeterdist", "5.0", {"greeter": "myplug:MyPlug"})
    config = {"plugins": {"greeter": {"source": "greeter_mod:Greeter", "enabled": True}}}
    kernel = Kernel(config, environ={})
    kernel.prepare(scan_all=True)  # read the entry points too
    async with kernel:
        info = kernel.plugins["greeter"]
        assert info.source == "greeter_mod:Greeter"
        assert info.state is PluginState.RUNNING
    assert "myplug" not in sys.modules
