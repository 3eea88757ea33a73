"""Tests for configuration: :func:`kernel.load_config` and plugin settings checked by the Kernel."""

from __future__ import annotations

import enum
import types
from pathlib import Path
from typing import Any
from typing import Literal

import attrs
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from kernel import DEFAULT_CONFIG_FILE
from kernel import Kernel
from kernel import KernelSettings
from kernel import OrionConfig
from kernel import PluginEntry
from kernel import load_config
from plugin_sdk import ConfigError
from plugin_sdk import ConfigIssue
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginState


def config_error(source: Any, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(source, environ={} if environ is None else environ)
    return info.value


def issues(error: ConfigError) -> dict[str, str]:
    return {issue.path: issue.message for issue in error.issues}


# -- defaults and valid input ------------------------------------------------------


def test_empty_dict_gives_the_defaults() -> None:
    config = load_config({}, environ={})
    assert config == OrionConfig()
    assert config.kernel == KernelSettings()
    assert config.kernel.data_dir == ".orion"
    assert config.kernel.start_timeout == 30.0
    assert config.kernel.stop_timeout == 30.0
    assert config.kernel.quarantine_after == 5
    assert config.kernel.hook_timeouts == {}
    assert config.kernel.strict is False
    assert config.kernel.log_level == "INFO"
    assert config.plugins == {}


def test_full_valid_config_is_structured() -> None:
    config = load_config(
        {
            "kernel": {
                "data_dir": "/var/lib/orion",
                "start_timeout": 2,
                "stop_timeout": 1.5,
                "quarantine_after": 0,
                "hook_timeouts": {"check_health": 2},
                "strict": True,
                "log_level": "DEBUG",
            },
            "plugins": {
                "cache": {
                    "enabled": True,
                    "source": "my_cache:Cache",
                    "priority": -2,
                    "before": ["audit"],
                    "after": [],
                    "start_timeout": 3,
                    "stop_timeout": 4.5,
                    "settings": {"max_entries": 5, "nested": {"a": [1, 2]}},
                }
            },
        },
        environ={},
    )
    assert config.kernel == KernelSettings(
        data_dir="/var/lib/orion",
        start_timeout=2.0,
        stop_timeout=1.5,
        quarantine_after=0,
        hook_timeouts={"check_health": 2.0},
        strict=True,
        log_level="DEBUG",
    )
    assert config.plugins == {
        "cache": PluginEntry(
            enabled=True,
            source="my_cache:Cache",
            priority=-2,
            before=("audit",),
            after=(),
            start_timeout=3.0,
            stop_timeout=4.5,
            settings={"max_entries": 5, "nested": {"a": [1, 2]}},
        )
    }


def test_ints_are_accepted_for_floats_and_become_floats() -> None:
    timeout = load_config({"kernel": {"start_timeout": 5}}, environ={}).kernel.start_timeout
    assert timeout == 5.0
    assert type(timeout) is float


def test_plugin_entry_defaults_are_all_unset() -> None:
    entry = load_config({"plugins": {"cache": {}}}, environ={}).plugins["cache"]
    assert entry == PluginEntry()
    assert entry.enabled is None
    assert entry.source is None
    assert entry.priority is None
    assert entry.before is None
    assert entry.after is None
    assert entry.settings == {}


def test_orion_config_passes_through_unchanged() -> None:
    config = OrionConfig(kernel=KernelSettings(strict=True))
    assert load_config(config, environ={}) is config


def test_any_mapping_is_accepted() -> None:
    source = types.MappingProxyType({"kernel": types.MappingProxyType({"strict": True})})
    assert load_config(source, environ={}).kernel.strict is True


def test_load_config_does_not_mutate_its_input() -> None:
    raw = {"kernel": {"start_timeout": 1}, "plugins": {"x": {"settings": {"a": 1}}}}
    load_config(raw, environ={"ORION__KERNEL__START_TIMEOUT": "2", "ORION__PLUGINS__X__SETTINGS__B": "3"})
    assert raw == {"kernel": {"start_timeout": 1}, "plugins": {"x": {"settings": {"a": 1}}}}


# -- wrong types, with paths -------------------------------------------------------


@pytest.mark.parametrize(
    ("kernel_table", "path", "message"),
    [
        ({"start_timeout": "many"}, "kernel.start_timeout", "expected float, got 'many'"),
        ({"stop_timeout": [1]}, "kernel.stop_timeout", "expected float, got a list"),
        ({"start_timeout": True}, "kernel.start_timeout", "expected float, got True"),
        ({"strict": 1}, "kernel.strict", "expected bool, got 1"),
        ({"strict": "true"}, "kernel.strict", "expected bool, got 'true'"),
        ({"quarantine_after": "5"}, "kernel.quarantine_after", "expected int, got '5'"),
        ({"quarantine_after": 5.0}, "kernel.quarantine_after", "expected int, got 5.0"),
        ({"quarantine_after": True}, "kernel.quarantine_after", "expected int, got True"),
        ({"data_dir": 5}, "kernel.data_dir", "expected str, got 5"),
        ({"hook_timeouts": ["check_health"]}, "kernel.hook_timeouts", "expected a table, got a list"),
        ({"hook_timeouts": {"check_health": "1s"}}, "kernel.hook_timeouts.check_health", "expected float, got '1s'"),
        ({"log_level": "TRACE"}, "kernel.log_level", "expected one of ['DEBUG', 'INFO', 'WARNING', 'ERROR']"),
        ({"log_level": "info"}, "kernel.log_level", "expected one of ['DEBUG', 'INFO', 'WARNING', 'ERROR']"),
    ],
)
def test_wrong_kernel_value_is_reported_at_its_path(kernel_table: dict[str, Any], path: str, message: str) -> None:
    error = config_error({"kernel": kernel_table})
    assert error.issues == (ConfigIssue(path, message),)
    assert error.paths == (path,)


@pytest.mark.parametrize(
    ("entry", "path", "message"),
    [
        ({"enabled": 1}, "plugins.cache.enabled", "expected bool, got 1"),
        ({"enabled": "yes"}, "plugins.cache.enabled", "expected bool, got 'yes'"),
        ({"source": 1}, "plugins.cache.source", "expected str, got 1"),
        ({"priority": "high"}, "plugins.cache.priority", "expected int, got 'high'"),
        ({"priority": True}, "plugins.cache.priority", "expected int, got True"),
        ({"priority": 1.5}, "plugins.cache.priority", "expected int, got 1.5"),
        ({"before": "audit"}, "plugins.cache.before", "expected a list, got 'audit'"),
        ({"after": "audit"}, "plugins.cache.after", "expected a list, got 'audit'"),
        ({"after": ["audit", 2]}, "plugins.cache.after[1]", "expected str, got 2"),
        ({"start_timeout": "1s"}, "plugins.cache.start_timeout", "expected float, got '1s'"),
        ({"settings": 5}, "plugins.cache.settings", "expected a table, got 5"),
        ({"settings": ["a"]}, "plugins.cache.settings", "expected a table, got a list"),
    ],
)
def test_wrong_plugin_entry_value_is_reported_at_its_path(entry: dict[str, Any], path: str, message: str) -> None:
    error = config_error({"plugins": {"cache": entry}})
    assert error.issues == (ConfigIssue(path, message),)


@pytest.mark.parametrize(
    ("raw", "path", "message"),
    [
        ({"kernel": []}, "kernel", "expected a table of KernelSettings settings, got a list"),
        ({"kernel": None}, "kernel", "expected a table of KernelSettings settings, got None"),
        ({"plugins": "cache"}, "plugins", "expected a table, got 'cache'"),
        ({"plugins": {"cache": True}}, "plugins.cache", "expected a table of PluginEntry settings, got True"),
    ],
)
def test_a_value_where_a_table_belongs_is_reported(raw: dict[str, Any], path: str, message: str) -> None:
    assert config_error(raw).issues == (ConfigIssue(path, message),)


@pytest.mark.parametrize("raw", [[1, 2], 5, 1.5, True])
def test_a_non_table_document_is_reported_at_the_root(raw: object) -> None:
    error = config_error(raw)
    assert error.paths == ("",)
    assert error.issues[0].message.startswith("expected a table, got ")


def test_long_values_are_shortened_in_messages() -> None:
    message = issues(config_error({"kernel": {"start_timeout": "x" * 200}}))["kernel.start_timeout"]
    assert message.startswith("expected float, got 'xxx")
    assert message.endswith("...")
    assert len(message) < 80


# -- range checks ------------------------------------------------------------------


@pytest.mark.parametrize("field", ["start_timeout", "stop_timeout"])
@pytest.mark.parametrize("value", [0, -1, -0.5, float("nan")])
def test_kernel_timeouts_must_be_positive(field: str, value: float) -> None:
    error = config_error({"kernel": {field: value}})
    assert error.paths == (f"kernel.{field}",)
    assert error.issues[0].message.startswith("must be > 0, got ")


def test_quarantine_after_must_not_be_negative() -> None:
    error = config_error({"kernel": {"quarantine_after": -1}})
    assert error.issues == (ConfigIssue("kernel.quarantine_after", "must be >= 0, got -1"),)


def test_hook_timeouts_must_be_positive_naming_the_hook() -> None:
    error = config_error({"kernel": {"hook_timeouts": {"check_health": 0, "kernel_started": 1}}})
    assert error.issues == (ConfigIssue("kernel.hook_timeouts.check_health", "must be > 0, got 0.0"),)


@pytest.mark.parametrize("field", ["start_timeout", "stop_timeout"])
def test_plugin_timeouts_must_be_positive(field: str) -> None:
    error = config_error({"plugins": {"cache": {field: 0}}})
    assert error.issues == (ConfigIssue(f"plugins.cache.{field}", "must be > 0, got 0.0"),)


# -- unknown keys ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "path", "message"),
    [
        (
            {"kernel": {"quarantin_after": 3}},
            "kernel.quarantin_after",
            "unknown key (did you mean 'quarantine_after'?)",
        ),
        ({"kernel": {"stritc": True}}, "kernel.stritc", "unknown key (did you mean 'strict'?)"),
        ({"kernl": {}}, "kernl", "unknown key (did you mean 'kernel'?)"),
        ({"plugin": {}}, "plugin", "unknown key (did you mean 'plugins'?)"),
        ({"plugins": {"cache": {"enable": True}}}, "plugins.cache.enable", "unknown key (did you mean 'enabled'?)"),
        ({"plugins": {"cache": {"setting": {}}}}, "plugins.cache.setting", "unknown key (did you mean 'settings'?)"),
    ],
)
def test_unknown_key_is_reported_with_did_you_mean(raw: dict[str, Any], path: str, message: str) -> None:
    assert config_error(raw).issues == (ConfigIssue(path, message),)


def test_unknown_key_without_a_close_match_lists_the_known_keys() -> None:
    message = issues(config_error({"kernel": {"zzz": 1}}))["kernel.zzz"]
    assert message.startswith("unknown key (known keys: ")
    for key in ("data_dir", "start_timeout", "quarantine_after", "hook_timeouts", "strict", "log_level"):
        assert key in message


# -- every issue at once -----------------------------------------------------------


def test_several_errors_are_reported_in_one_config_error() -> None:
    error = config_error(
        {
            "kernel": {"start_timeout": "many", "quarantin_after": 1, "strict": 1},
            "plugins": {"cache": {"enabled": "yes", "sourc": "a:b"}, "db": {"priority": "x"}},
        }
    )
    assert issues(error) == {
        "kernel.start_timeout": "expected float, got 'many'",
        "kernel.quarantin_after": "unknown key (did you mean 'quarantine_after'?)",
        "kernel.strict": "expected bool, got 1",
        "plugins.cache.enabled": "expected bool, got 'yes'",
        "plugins.cache.sourc": "unknown key (did you mean 'source'?)",
        "plugins.db.priority": "expected int, got 'x'",
    }


def test_config_error_message_lists_every_issue_with_its_path() -> None:
    error = config_error({"kernel": {"start_timeout": "many", "strict": 1}})
    text = str(error)
    assert "(2 issue(s))" in text
    assert "  kernel.start_timeout: expected float, got 'many'" in text
    assert "  kernel.strict: expected bool, got 1" in text
    assert "in <dict>" in text


def test_range_errors_of_several_plugins_are_reported_together() -> None:
    error = config_error({"plugins": {"a": {"start_timeout": 0}, "b": {"stop_timeout": -2}}})
    assert issues(error) == {
        "plugins.a.start_timeout": "must be > 0, got 0.0",
        "plugins.b.stop_timeout": "must be > 0, got -2.0",
    }


def test_two_range_errors_in_one_table_are_both_reported() -> None:
    error = config_error({"kernel": {"start_timeout": 0, "stop_timeout": -1}})
    assert set(error.paths) == {"kernel.start_timeout", "kernel.stop_timeout"}


def test_range_error_is_reported_next_to_a_type_error_in_the_same_table() -> None:
    error = config_error({"kernel": {"start_timeout": 0, "strict": 1}})
    assert set(error.paths) == {"kernel.start_timeout", "kernel.strict"}


# -- plugin names as keys ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("Cache", "plugins['Cache']"),
        ("my-cache", "plugins['my-cache']"),
        ("my.cache", "plugins['my.cache']"),
        ("a__b", "plugins['a__b']"),
        ("", "plugins['']"),
        ("x" * 65, f"plugins['{'x' * 65}']"),
    ],
)
def test_invalid_plugin_name_as_key_is_reported(name: str, path: str) -> None:
    error = config_error({"plugins": {name: {}}})
    assert error.paths == (path,)
    assert "is not a valid plugin name" in error.issues[0].message
    assert repr(name)[:20] in error.issues[0].message


def test_valid_and_invalid_plugin_names_are_reported_together_with_other_issues() -> None:
    error = config_error({"plugins": {"Bad": {}, "good": {"enabled": 1}}})
    assert set(error.paths) == {"plugins['Bad']", "plugins.good.enabled"}


# -- TOML files --------------------------------------------------------------------


def test_toml_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "orion.toml"
    path.parent.mkdir()
    path.write_text(
        "[kernel]\nstart_timeout = 5\n\n[plugins.cache]\nenabled = true\n[plugins.cache.settings]\nsize = 3\n"
    )
    config = load_config(path, environ={})
    assert config.kernel.start_timeout == 5.0
    assert config.plugins["cache"].enabled is True
    assert config.plugins["cache"].settings == {"size": 3}


def test_toml_file_path_may_be_a_string(tmp_path: Path) -> None:
    path = tmp_path / "other.toml"
    path.write_text("[kernel]\nstrict = true\n")
    assert load_config(str(path), environ={}).kernel.strict is True


def test_bad_toml_is_a_config_error_with_the_line_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[kernel]\nstart_timeout = 5\n\nstrict = = true\n")
    error = config_error(path)
    assert error.source == str(path)
    assert len(error.issues) == 1
    assert error.issues[0].message.startswith("not valid TOML: ")
    assert "line 4" in error.issues[0].message
    assert str(path) in str(error)


def test_issues_in_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "orion.toml"
    path.write_text('[kernel]\nstart_timeout = "many"\n')
    error = config_error(path)
    assert error.source == str(path)
    assert error.issues == (ConfigIssue("kernel.start_timeout", "expected float, got 'many'"),)
    assert f"invalid configuration in {path}" in str(error)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    error = config_error(path)
    assert error.source == str(path)
    assert error.issues == (ConfigIssue("", f"no such file: {path}"),)


def test_directory_instead_of_a_file_is_a_config_error(tmp_path: Path) -> None:
    error = config_error(tmp_path)
    assert error.issues[0].message.startswith("cannot read: ")


def test_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[kernel]\ndata_dir = "caf\u00e9"\n'.encode("latin-1"))
    error = config_error(path)
    assert error.source == str(path)


def test_path_with_a_nul_byte_is_a_config_error() -> None:
    config_error("orion\x00.toml")


def test_orion_toml_in_cwd_is_read_when_no_source_is_given(tmp_path: Path) -> None:
    (tmp_path / DEFAULT_CONFIG_FILE).write_text("[kernel]\nquarantine_after = 2\n")
    assert DEFAULT_CONFIG_FILE == "orion.toml"
    assert load_config(None, environ={}).kernel.quarantine_after == 2


def test_kernel_reads_orion_toml_in_cwd_by_default(tmp_path: Path) -> None:
    (tmp_path / "orion.toml").write_text("[kernel]\nquarantine_after = 2\n")
    assert Kernel(environ={}).config.kernel.quarantine_after == 2


def test_no_source_and_no_orion_toml_gives_the_defaults() -> None:
    assert load_config(None, environ={}) == OrionConfig()


def test_bad_orion_toml_in_cwd_is_reported_against_it(tmp_path: Path) -> None:
    (tmp_path / "orion.toml").write_text("[kernel]\nstrict = 1\n")
    error = config_error(None)
    assert error.source == "orion.toml"
    assert error.issues == (ConfigIssue("kernel.strict", "expected bool, got 1"),)


# -- environment overrides ---------------------------------------------------------


def test_env_override_of_a_kernel_float() -> None:
    config = load_config({}, environ={"ORION__KERNEL__START_TIMEOUT": "5"})
    assert config.kernel.start_timeout == 5.0
    assert type(config.kernel.start_timeout) is float


def test_env_override_plain_text_is_a_string() -> None:
    config = load_config({}, environ={"ORION__PLUGINS__X__SETTINGS__NAME": "abc"})
    assert config.plugins["x"].settings == {"name": "abc"}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("false", False),
        ("[1,2]", [1, 2]),
        ('["a", "b"]', ["a", "b"]),
        ("1.5", 1.5),
        ("42", 42),
        ('"42"', "42"),
        ("{ a = 1 }", {"a": 1}),
        ("hello world", "hello world"),
        ("", ""),
    ],
)
def test_env_values_are_read_as_toml_values(text: str, value: object) -> None:
    config = load_config({}, environ={"ORION__PLUGINS__X__SETTINGS__V": text})
    assert config.plugins["x"].settings == {"v": value}
    assert type(config.plugins["x"].settings["v"]) is type(value)


def test_env_names_are_lowercased_into_paths() -> None:
    config = load_config({}, environ={"ORION__PLUGINS__MY_CACHE__ENABLED": "true"})
    assert config.plugins["my_cache"].enabled is True


def test_env_overrides_file_values_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "orion.toml"
    path.write_text("[kernel]\nstart_timeout = 7\nstop_timeout = 8\n[plugins.x.settings]\na = 1\nb = 2\n")
    config = load_config(
        path,
        environ={"ORION__KERNEL__START_TIMEOUT": "9", "ORION__PLUGINS__X__SETTINGS__B": "3"},
    )
    assert config.kernel.start_timeout == 9.0
    assert config.kernel.stop_timeout == 8.0
    assert config.plugins["x"].settings == {"a": 1, "b": 3}


def test_env_overrides_dict_source() -> None:
    config = load_config({"kernel": {"strict": False}}, environ={"ORION__KERNEL__STRICT": "true"})
    assert config.kernel.strict is True


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORION__KERNEL__QUARANTINE_AFTER", "9")
    assert load_config({}).kernel.quarantine_after == 9


def test_empty_environ_ignores_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORION__KERNEL__QUARANTINE_AFTER", "9")
    assert load_config({}, environ={}).kernel.quarantine_after == 5


def test_other_env_variables_are_ignored() -> None:
    config = load_config({}, environ={"ORION_KERNEL__STRICT": "true", "HOME": "/root", "orion__kernel__strict": "x"})
    assert config == OrionConfig()


def test_bad_env_value_is_reported_at_the_config_path() -> None:
    error = config_error({}, {"ORION__KERNEL__STRICT": "yes"})
    assert error.issues == (ConfigIssue("kernel.strict", "expected bool, got 'yes'"),)


def test_unknown_env_key_gets_did_you_mean() -> None:
    error = config_error({}, {"ORION__KERNEL__STRCT": "true"})
    assert error.issues == (ConfigIssue("kernel.strct", "unknown key (did you mean 'strict'?)"),)


def test_env_variable_with_an_empty_segment_is_reported_by_name() -> None:
    error = config_error({}, {"ORION__KERNEL____STRICT": "true"})
    assert error.paths == ("env:ORION__KERNEL____STRICT",)
    assert "empty path segment" in error.issues[0].message


def test_env_variables_that_clash_are_reported() -> None:
    error = config_error({}, {"ORION__KERNEL": "5", "ORION__KERNEL__STRICT": "true"})
    assert "env:ORION__KERNEL__STRICT" in error.paths
    assert "'kernel' is set as a value by another variable" in issues(error)["env:ORION__KERNEL__STRICT"]


def test_env_issues_and_file_issues_are_reported_together() -> None:
    error = config_error({"kernel": {"strict": 1}}, {"ORION__PLUGINS____X": "1"})
    assert set(error.paths) == {"env:ORION__PLUGINS____X", "kernel.strict"}


# -- plugin settings, structured by the Kernel --------------------------------------


@attrs.frozen
class Backend:
    host: str = "localhost"
    port: int = 6379


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@attrs.frozen
class CacheSettings:
    max_entries: int = 10
    mode: Literal["a", "b"] = "a"
    backend: Backend = attrs.Factory(Backend)
    ratio: float = 0.5
    tags: tuple[str, ...] = ()
    limits: dict[str, int] = attrs.Factory(dict)
    color: Color = Color.RED
    ttl: int | None = None
    verbose: bool = False


class Cache(Plugin):
    name = "cache"
    version = "1.0.0"
    Config = CacheSettings

    def __init__(self) -> None:
        self.seen: object = None

    async def start(self, ctx: PluginContext[Any]) -> None:
        self.seen = ctx.settings


@attrs.frozen
class StoreSettings:
    path: str = "store.db"


class Store(Plugin):
    name = "store"
    Config = StoreSettings


@attrs.frozen
class RequiredSettings:
    token: str


class NeedsToken(Plugin):
    name = "needs_token"
    Config = RequiredSettings


class Plain(Plugin):
    name = "plain"


def prepare_error(config: dict[str, Any], *plugins: Plugin) -> ConfigError:
    kernel = Kernel(config, plugins=list(plugins) or [Cache()], environ={})
    with pytest.raises(ConfigError) as info:
        kernel.prepare()
    return info.value


async def started_settings(config: Any, environ: dict[str, str] | None = None) -> object:
    """The settings a ``Cache`` plugin receives in ``start()`` under ``config``."""
    plugin = Cache()
    async with Kernel(config, plugins=[plugin], environ=environ or {}) as kernel:
        assert kernel.plugins["cache"].state is PluginState.RUNNING, kernel.plugins["cache"].last_error
    return plugin.seen


@pytest.mark.anyio
async def test_defaults_fill_a_plugins_config() -> None:
    assert await started_settings({}) == CacheSettings()


@pytest.mark.anyio
async def test_settings_are_structured_into_the_config_class() -> None:
    settings = await started_settings(
        {
            "plugins": {
                "cache": {
                    "settings": {
                        "max_entries": 99,
                        "mode": "b",
                        "backend": {"port": 1},
                        "ratio": 1,
                        "tags": ["x", "y"],
                        "limits": {"a": 1},
                        "color": "blue",
                        "ttl": 5,
                    }
                }
            }
        }
    )
    assert settings == CacheSettings(
        max_entries=99,
        mode="b",
        backend=Backend(port=1),
        ratio=1.0,
        tags=("x", "y"),
        limits={"a": 1},
        color=Color.BLUE,
        ttl=5,
    )


@pytest.mark.anyio
async def test_settings_come_from_env_overrides() -> None:
    settings = await started_settings({}, {"ORION__PLUGINS__CACHE__SETTINGS__MAX_ENTRIES": "7"})
    assert settings == CacheSettings(max_entries=7)


@pytest.mark.anyio
async def test_env_settings_merge_into_file_settings(tmp_path: Path) -> None:
    path = tmp_path / "orion.toml"
    path.write_text('[plugins.cache.settings]\nmode = "b"\n[plugins.cache.settings.backend]\nport = 2\n')
    settings = await started_settings(path, {"ORION__PLUGINS__CACHE__SETTINGS__BACKEND__HOST": "redis"})
    assert settings == CacheSettings(mode="b", backend=Backend(host="redis", port=2))


def test_wrong_setting_type_is_reported_at_its_full_path() -> None:
    error = prepare_error({"plugins": {"cache": {"settings": {"max_entries": "many"}}}})
    assert error.issues == (ConfigIssue("plugins.cache.settings.max_entries", "expected int, got 'many'"),)
    assert "plugins.cache.settings.max_entries: expected int, got 'many'" in str(error)


@pytest.mark.parametrize(
    ("settings", "path", "message"),
    [
        ({"mode": "c"}, "plugins.cache.settings.mode", "expected one of ['a', 'b']"),
        ({"color": "green"}, "plugins.cache.settings.color", "expected one of ['red', 'blue']"),
        ({"ratio": "half"}, "plugins.cache.settings.ratio", "expected float, got 'half'"),
        ({"verbose": 1}, "plugins.cache.settings.verbose", "expected bool, got 1"),
        ({"max_entries": "5"}, "plugins.cache.settings.max_entries", "expected int, got '5'"),
        ({"max_entries": 5.0}, "plugins.cache.settings.max_entries", "expected int, got 5.0"),
        ({"tags": "abc"}, "plugins.cache.settings.tags", "expected a list, got 'abc'"),
        ({"tags": ["a", 2]}, "plugins.cache.settings.tags[1]", "expected str, got 2"),
        ({"limits": {"a": "x"}}, "plugins.cache.settings.limits.a", "expected int, got 'x'"),
        ({"backend": 5}, "plugins.cache.settings.backend", "expected a table of Backend settings, got 5"),
        ({"backend": {"port": "x"}}, "plugins.cache.settings.backend.port", "expected int, got 'x'"),
    ],
)
def test_bad_setting_is_reported_at_its_path(settings: dict[str, Any], path: str, message: str) -> None:
    error = prepare_error({"plugins": {"cache": {"settings": settings}}})
    assert error.issues == (ConfigIssue(path, message),)


def test_unknown_setting_gets_did_you_mean() -> None:
    error = prepare_error({"plugins": {"cache": {"settings": {"max_entrie": 5}}}})
    assert error.issues == (
        ConfigIssue("plugins.cache.settings.max_entrie", "unknown key (did you mean 'max_entries'?)"),
    )


def test_unknown_nested_setting_gets_did_you_mean() -> None:
    error = prepare_error({"plugins": {"cache": {"settings": {"backend": {"prot": 1}}}}})
    assert error.issues == (ConfigIssue("plugins.cache.settings.backend.prot", "unknown key (did you mean 'port'?)"),)


def test_missing_required_setting_is_reported() -> None:
    error = prepare_error({}, NeedsToken())
    assert error.issues == (ConfigIssue("plugins.needs_token.settings.token", "required key is missing"),)


def test_settings_for_a_plugin_without_config_are_unknown_keys() -> None:
    error = prepare_error({"plugins": {"plain": {"settings": {"x": 1}}}}, Plain())
    assert error.paths == ("plugins.plain.settings.x",)
    assert error.issues[0].message == "unknown key (known keys: none)"


def test_all_setting_errors_of_one_plugin_are_reported_together() -> None:
    error = prepare_error(
        {"plugins": {"cache": {"settings": {"max_entries": "x", "mode": "z", "backend": {"port": "p"}, "bogus": 1}}}}
    )
    assert set(error.paths) == {
        "plugins.cache.settings.max_entries",
        "plugins.cache.settings.mode",
        "plugins.cache.settings.backend.port",
        "plugins.cache.settings.bogus",
    }


def test_settings_errors_of_two_plugins_are_reported_together() -> None:
    error = prepare_error(
        {"plugins": {"cache": {"settings": {"max_entries": "x"}}, "store": {"settings": {"path": 1}}}},
        Cache(),
        Store(),
    )
    assert issues(error) == {
        "plugins.cache.settings.max_entries": "expected int, got 'x'",
        "plugins.store.settings.path": "expected str, got 1",
    }


def test_settings_of_a_disabled_plugin_are_not_checked() -> None:
    kernel = Kernel(
        {"plugins": {"cache": {"enabled": False, "settings": {"max_entries": "x"}}}}, plugins=[Cache()], environ={}
    )
    kernel.prepare()
    assert kernel.plugins["cache"].enabled is False
    assert kernel.plugins["cache"].state is PluginState.DISCOVERED


@attrs.frozen
class ValidatedSettings:
    max_entries: int = attrs.field(default=10, validator=attrs.validators.gt(0))


class Validated(Plugin):
    name = "validated"
    Config = ValidatedSettings


def test_attrs_validator_failure_in_settings_is_a_config_error() -> None:
    error = prepare_error({"plugins": {"validated": {"settings": {"max_entries": -1}}}}, Validated())
    assert len(error.issues) == 1
    assert error.issues[0].path.startswith("plugins.validated.settings")
    assert "max_entries" in str(error)


def test_attrs_validator_failure_in_settings_names_the_field_path() -> None:
    error = prepare_error({"plugins": {"validated": {"settings": {"max_entries": -1}}}}, Validated())
    assert error.paths == ("plugins.validated.settings.max_entries",)


def test_config_entry_for_an_unknown_plugin_gets_did_you_mean() -> None:
    error = prepare_error({"plugins": {"cach": {"settings": {}}}})
    assert error.paths == ("plugins.cach",)
    message = error.issues[0].message
    assert "no plugin named 'cach'" in message
    assert "did you mean 'cache'?" in message


def test_config_entry_for_an_unknown_plugin_without_close_match() -> None:
    error = prepare_error({"plugins": {"zzzzzz": {}}})
    assert error.paths == ("plugins.zzzzzz",)
    assert "no plugin named 'zzzzzz'" in error.issues[0].message
    assert "did you mean" not in error.issues[0].message


def test_unknown_plugin_and_bad_settings_are_reported_together() -> None:
    error = prepare_error({"plugins": {"ghost": {}, "cache": {"settings": {"max_entries": "x"}}}})
    assert set(error.paths) == {"plugins.ghost", "plugins.cache.settings.max_entries"}


def test_hook_timeout_for_an_unknown_hook_is_reported() -> None:
    error = prepare_error({"kernel": {"hook_timeouts": {"check_healt": 1}}})
    assert error.issues == (
        ConfigIssue("kernel.hook_timeouts.check_healt", "no hook named 'check_healt' (did you mean 'check_health'?)"),
    )


def test_hook_timeout_for_a_known_hook_is_accepted() -> None:
    kernel = Kernel(
        {"kernel": {"hook_timeouts": {"check_health": 1, "kernel_started": 2}}}, plugins=[Cache()], environ={}
    )
    kernel.prepare()
    assert kernel.config.kernel.hook_timeouts == {"check_health": 1.0, "kernel_started": 2.0}


def test_unknown_hook_timeout_and_bad_settings_are_reported_together() -> None:
    error = prepare_error(
        {"kernel": {"hook_timeouts": {"nope": 1}}, "plugins": {"cache": {"settings": {"max_entries": "x"}}}}
    )
    assert set(error.paths) == {"kernel.hook_timeouts.nope", "plugins.cache.settings.max_entries"}


def test_kernel_constructor_raises_the_config_shape_errors() -> None:
    with pytest.raises(ConfigError) as info:
        Kernel({"kernel": {"start_timeout": "many"}}, plugins=[Cache()], environ={})
    assert info.value.paths == ("kernel.start_timeout",)


# -- property tests: nothing but ConfigError ---------------------------------------


SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
ANY_VALUE = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)


def check_load(raw: Any, environ: dict[str, str] | None = None) -> None:
    """``load_config(raw)`` gives an OrionConfig or a ConfigError with issues, nothing else."""
    error: ConfigError | None = None
    try:
        config = load_config(raw, environ=environ or {})
    except ConfigError as exc:
        error = exc
    else:
        assert isinstance(config, OrionConfig)
    if error is not None:
        assert error.issues
        assert all(isinstance(issue, ConfigIssue) for issue in error.issues)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_VALUE.filter(lambda value: not isinstance(value, str)))
def test_arbitrary_data_gives_a_config_or_a_config_error(raw: object) -> None:
    check_load(raw)


KERNEL_TABLES = st.fixed_dictionaries(
    {},
    optional={
        "data_dir": st.text(max_size=8) | ANY_VALUE,
        "start_timeout": st.floats() | st.integers() | ANY_VALUE,
        "stop_timeout": st.floats() | ANY_VALUE,
        "quarantine_after": st.integers() | ANY_VALUE,
        "hook_timeouts": st.dictionaries(st.text(max_size=12), st.floats() | st.integers()) | ANY_VALUE,
        "strict": st.booleans() | ANY_VALUE,
        "log_level": st.sampled_from(["DEBUG", "INFO", "WARNING", "ERROR", "debug"]) | ANY_VALUE,
        "quarantin_after": ANY_VALUE,
    },
)
PLUGIN_ENTRIES = st.fixed_dictionaries(
    {},
    optional={
        "enabled": st.booleans() | ANY_VALUE,
        "source": st.text(max_size=12) | ANY_VALUE,
        "priority": st.integers() | ANY_VALUE,
        "before": st.lists(st.text(max_size=6), max_size=3) | ANY_VALUE,
        "after": st.lists(st.text(max_size=6), max_size=3) | ANY_VALUE,
        "start_timeout": st.floats() | ANY_VALUE,
        "stop_timeout": st.floats() | ANY_VALUE,
        "settings": st.dictionaries(st.text(max_size=6), ANY_VALUE, max_size=3) | ANY_VALUE,
    },
)
PLUGIN_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True) | st.text(max_size=6)
SHAPED = st.fixed_dictionaries(
    {},
    optional={
        "kernel": KERNEL_TABLES | ANY_VALUE,
        "plugins": st.dictionaries(PLUGIN_NAMES, PLUGIN_ENTRIES | ANY_VALUE, max_size=3) | ANY_VALUE,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SHAPED)
def test_config_shaped_data_gives_a_config_or_a_config_error(raw: dict[str, Any]) -> None:
    check_load(raw)


ENV_NAMES = st.sampled_from(
    [
        "ORION__",
        "ORION__KERNEL",
        "ORION__KERNEL__START_TIMEOUT",
        "ORION__KERNEL__HOOK_TIMEOUTS__CHECK_HEALTH",
        "ORION__PLUGINS",
        "ORION__PLUGINS__X",
        "ORION__PLUGINS__X__ENABLED",
        "ORION__PLUGINS__X__SETTINGS__A",
    ]
) | st.text(max_size=16).map(lambda text: "ORION__" + text)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(ENV_NAMES, st.text(max_size=10), max_size=4))
def test_arbitrary_env_overrides_give_a_config_or_a_config_error(environ: dict[str, str]) -> None:
    check_load({}, environ)


SETTING_KEYS = st.sampled_from(
    ["max_entries", "mode", "backend", "ratio", "tags", "limits", "color", "ttl", "verbose", "host", "port"]
) | st.text(max_size=6)
SETTING_VALUES = st.recursive(
    SCALARS | st.sampled_from(["a", "b", "red", "blue"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(SETTING_KEYS, children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(SETTING_KEYS, SETTING_VALUES, max_size=5))
def test_random_settings_give_a_config_instance_or_a_config_error(raw: dict[str, Any]) -> None:
    kernel = Kernel({"plugins": {"cache": {"settings": raw}}}, plugins=[Cache()], environ={})
    error: ConfigError | None = None
    try:
        kernel.prepare()
    except ConfigError as exc:
        error = exc
    else:
        assert kernel.plugins["cache"].state is PluginState.CONFIGURED
    if error is not None:
        assert error.issues
        assert all(issue.path.startswith("plugins.cache.settings") for issue in error.issues)
