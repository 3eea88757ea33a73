"""Tests for :meth:`plugin_sdk.Manifest.of`, the SDK's public surface, and the hookspec docs."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import attrs
import pytest

import kernel
import plugin_sdk
import plugin_sdk.hookspecs
from plugin_sdk import Manifest
from plugin_sdk import ManifestError
from plugin_sdk import NoSettings
from plugin_sdk import Plugin
from plugin_sdk._markers import spec_handles


@attrs.frozen
class GoodSettings:
    size: int = 1


def make_plugin(**manifest: Any) -> Plugin:
    """An instance of a fresh Plugin subclass named ``good`` with ``manifest`` overriding fields."""
    namespace: dict[str, Any] = {"name": "good", "version": "1.0.0", "sdk": ">=1,<2"}
    namespace.update(manifest)
    cls = type("GoodPlugin", (Plugin,), namespace)
    return cls()


def manifest_error(**manifest: Any) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        Manifest.of(make_plugin(**manifest))
    return info.value


# -- valid manifests ---------------------------------------------------------------


def test_valid_plugin_gives_a_manifest_with_its_declarations() -> None:
    plugin = make_plugin(
        requires=("db",),
        optional=("metrics",),
        provides=("cache", "cache.admin"),
        permissions=("net:connect:db.local:5432", "fs:read:/etc/ssl", "net:listen:127.0.0.1:{size}"),
        Config=GoodSettings,
        priority=-3,
        before=("other",),
        after=("first_one",),
        backends=("asyncio",),
    )
    manifest = Manifest.of(plugin)
    assert manifest.name == "good"
    assert manifest.version == "1.0.0"
    assert manifest.sdk == ">=1,<2"
    assert manifest.requires == ("db",)
    assert manifest.optional == ("metrics",)
    assert manifest.provides == ("cache", "cache.admin")
    assert manifest.permissions == ("net:connect:db.local:5432", "fs:read:/etc/ssl", "net:listen:127.0.0.1:{size}")
    assert manifest.Config is GoodSettings
    assert manifest.priority == -3
    assert manifest.before == ("other",)
    assert manifest.after == ("first_one",)
    assert manifest.backends == ("asyncio",)
    assert manifest.has_reconfigure is False


def test_manifest_defaults_of_a_bare_plugin() -> None:
    manifest = Manifest.of(make_plugin())
    assert manifest.requires == manifest.optional == manifest.provides == manifest.permissions == ()
    assert manifest.Config is NoSettings
    assert manifest.priority == 0
    assert set(manifest.backends) == {"asyncio", "trio"}


def test_manifest_turns_lists_into_tuples() -> None:
    manifest = Manifest.of(make_plugin(requires=["db"], provides=["cache"]))
    assert manifest.requires == ("db",)
    assert manifest.provides == ("cache",)


def test_manifest_notices_reconfigure() -> None:
    def reconfigure(self: Plugin, settings: object) -> None:
        pass

    assert Manifest.of(make_plugin(reconfigure=reconfigure)).has_reconfigure is True


@pytest.mark.parametrize("name", ["a", "cache", "rate_limit", "a1_b2", "x" * 64])
def test_valid_plugin_names_are_accepted(name: str) -> None:
    assert Manifest.of(make_plugin(name=name)).name == name


@pytest.mark.parametrize("version", ["0", "1.0.0rc1", "2024.1.post3", "1.0.dev0"])
def test_pep440_versions_are_accepted(version: str) -> None:
    assert Manifest.of(make_plugin(version=version)).version == version


@pytest.mark.parametrize("sdk", [">=1", "==1.0.0", ">=1,<2", "~=1.0", ">0.9,!=1.0.1"])
def test_sdk_ranges_containing_the_running_sdk_are_accepted(sdk: str) -> None:
    assert Manifest.of(make_plugin(sdk=sdk)).sdk == sdk


def test_sdk_version_is_1_0_0() -> None:
    assert plugin_sdk.__version__ == "1.0.0"


# -- the name ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["Cache", "rate-limit", "rate__limit", "_cache", "cache_", "1cache", "cache.x", "cach\u00e9", "x" * 65],
)
def test_bad_plugin_name_is_a_manifest_error_on_name(name: str) -> None:
    error = manifest_error(name=name)
    assert error.field == "name"
    assert error.plugin == name
    assert repr(name) in str(error)
    assert "not a valid plugin name" in str(error)


@pytest.mark.parametrize("name", ["", None, 5, b"cache", ("cache",)])
def test_empty_or_non_string_name_is_reported_under_the_class_name(name: object) -> None:
    error = manifest_error(name=name)
    assert error.field == "name"
    assert error.plugin == "GoodPlugin"
    assert f"{name!r} is not a valid plugin name" in str(error)


def test_name_error_message_states_the_rules() -> None:
    message = str(manifest_error(name="Bad"))
    assert "lowercase" in message
    assert "single '_'" in message
    assert "64" in message


def test_manifest_error_is_a_plugin_error_naming_plugin_and_field() -> None:
    error = manifest_error(version="nope")
    assert isinstance(error, plugin_sdk.PluginError)
    assert isinstance(error, plugin_sdk.OrionError)
    assert str(error).startswith("plugin 'good': manifest field 'version': ")


# -- version and sdk ---------------------------------------------------------------


@pytest.mark.parametrize("version", ["not a version", "", "1.0.0-final-final", 1, None, 1.0])
def test_bad_version_is_a_manifest_error_on_version(version: object) -> None:
    error = manifest_error(version=version)
    assert error.field == "version"
    assert error.plugin == "good"
    assert f"{version!r} is not a PEP 440 version" in str(error)


@pytest.mark.parametrize("sdk", ["~~1", "1.0", ">=1 <2", "=>1", "latest", None, 1])
def test_bad_sdk_specifier_is_a_manifest_error_on_sdk(sdk: object) -> None:
    error = manifest_error(sdk=sdk)
    assert error.field == "sdk"
    assert error.plugin == "good"
    assert f"{sdk!r} is not a PEP 440 version specifier" in str(error)


@pytest.mark.parametrize("sdk", [">=2", "<1", ">=1.1,<2", "==0.9", "!=1.0.0"])
def test_sdk_range_the_running_sdk_misses_is_refused_naming_both(sdk: str) -> None:
    error = manifest_error(sdk=sdk)
    assert error.field == "sdk"
    assert error.plugin == "good"
    assert f"needs plugin_sdk {sdk}" in str(error)
    assert "the running SDK is 1.0.0" in str(error)


# -- Config and priority -----------------------------------------------------------


class NotAttrs:
    size: int = 1


@pytest.mark.parametrize("config", [dict, NotAttrs, GoodSettings(), 5, None, "GoodSettings"])
def test_config_that_is_not_an_attrs_class_is_refused(config: object) -> None:
    error = manifest_error(Config=config)
    assert error.field == "Config"
    assert error.plugin == "good"
    assert f"{config!r} is not an attrs class" in str(error)


def test_attrs_define_class_is_a_valid_config() -> None:
    @attrs.define
    class Mutable:
        level: int = 0

    assert Manifest.of(make_plugin(Config=Mutable)).Config is Mutable


@pytest.mark.parametrize("priority", ["1", 1.0, True, False, None, [1]])
def test_priority_must_be_a_real_int(priority: object) -> None:
    error = manifest_error(priority=priority)
    assert error.field == "priority"
    assert f"expected int, got {priority!r}" in str(error)


# -- service, permission and ordering lists ----------------------------------------


@pytest.mark.parametrize("field", ["requires", "optional", "provides", "permissions", "before", "after"])
def test_a_string_instead_of_a_tuple_is_refused(field: str) -> None:
    error = manifest_error(**{field: "cache"})
    assert error.field == field
    assert "expected a sequence of strings, got 'cache'" in str(error)


@pytest.mark.parametrize("field", ["requires", "optional", "provides", "before", "after"])
def test_a_set_is_not_an_ordered_sequence(field: str) -> None:
    error = manifest_error(**{field: {"cache"}})
    assert error.field == field
    assert "expected a sequence of strings" in str(error)


@pytest.mark.parametrize("field", ["requires", "optional", "provides", "before", "after"])
def test_duplicate_entries_are_refused(field: str) -> None:
    error = manifest_error(**{field: ("cache", "db", "cache")})
    assert error.field == field
    assert "duplicate entries in ['cache', 'db', 'cache']" in str(error)


def test_duplicate_permissions_are_refused() -> None:
    error = manifest_error(permissions=("subprocess", "secrets:db", "subprocess"))
    assert error.field == "permissions"
    assert "duplicate entries in ['subprocess', 'secrets:db', 'subprocess']" in str(error)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("Net:connect", "unknown kind 'Net'"),
        ("net:connect", "net:connect needs HOST:PORT"),
        ("net:dial:h:1", "net needs an action, one of connect, listen"),
        ("net:connect:h:http", "port 'http' is not a number"),
        ("net:connect:h:70000", "outside 0-65535"),
        ("fs:read:relative/path", "is not absolute"),
        ("fs:write:/a/../etc", "'..' segments"),
        ("fs:read", "fs permissions need a path"),
        ("fs:rd:/x", "fs needs an action, one of read, write"),
        ("subprocess:ls", "'subprocess' takes no argument"),
        ("secrets:", "secrets needs a name"),
        ("hook:a b", "white space"),
        ("{kind}:x", "unknown kind '{kind}'"),
        ("net:listen:{host}:1", "placeholder {host} is neither a field of GoodSettings nor data_dir"),
        ("fs:read:{data_dir:parent}", "unknown placeholder modifier {data_dir:parent}"),
        ("fs:read:/x/{data_dir:dir}", "':dir' needs an fs: path that starts with it"),
        (5, "expected a string"),
    ],
)
def test_malformed_permissions_are_refused_with_the_reason(entry: object, message: str) -> None:
    error = manifest_error(permissions=(entry,), Config=GoodSettings)
    assert error.field == "permissions"
    assert message in str(error)


@pytest.mark.parametrize(
    ("field", "entry"),
    [
        ("requires", "Cache"),
        ("requires", 1),
        ("optional", "db service"),
        ("provides", ""),
        ("before", "other-plugin"),
        ("after", "a__b"),
    ],
)
def test_malformed_entries_are_refused(field: str, entry: object) -> None:
    error = manifest_error(**{field: (entry,)})
    assert error.field == field
    assert f"invalid entry {entry!r}" in str(error)


def test_same_service_in_requires_and_optional_is_refused() -> None:
    error = manifest_error(requires=("db", "cache"), optional=("cache", "metrics"))
    assert error.field == "optional"
    assert "['cache'] also listed in requires" in str(error)


def test_service_names_may_be_dotted_or_dashed() -> None:
    manifest = Manifest.of(make_plugin(provides=("cache.admin", "rate-limit", "a_b")))
    assert manifest.provides == ("cache.admin", "rate-limit", "a_b")


@pytest.mark.parametrize("backends", [("curio",), ("asyncio", "twisted"), ()])
def test_unknown_or_no_backends_are_refused(backends: tuple[str, ...]) -> None:
    error = manifest_error(backends=backends)
    assert error.field == "backends"
    assert "expected some of ['asyncio', 'trio']" in str(error)


def test_backends_as_a_string_is_refused() -> None:
    error = manifest_error(backends="asyncio")
    assert error.field == "backends"
    assert "expected a sequence of strings, got 'asyncio'" in str(error)


def test_duplicate_backends_are_refused() -> None:
    error = manifest_error(backends=("trio", "trio"))
    assert error.field == "backends"
    assert "duplicate entries" in str(error)


@pytest.mark.parametrize("hookspecs", ["plugin_sdk.hookspecs", 5])
def test_hookspecs_must_be_a_sequence(hookspecs: object) -> None:
    error = manifest_error(hookspecs=hookspecs)
    assert error.field == "hookspecs"
    assert "expected a sequence of modules or classes" in str(error)


@pytest.mark.parametrize("method", ["start", "stop"])
def test_start_and_stop_must_be_callable(method: str) -> None:
    error = manifest_error(**{method: None})
    assert error.field == method
    assert f"a plugin needs an async def {method}() method" in str(error)


def test_duck_typed_plugin_without_backends_gets_the_default_backends() -> None:
    class Duck:
        name = "duck"
        version = "1.0"
        sdk = ">=1"

        async def start(self, ctx: object) -> None:
            pass

        async def stop(self) -> None:
            pass

    manifest = Manifest.of(Duck())
    assert set(manifest.backends) == {"asyncio", "trio"}


# -- the public surface (anyio: tests/test_all_attributes.py) ---------------------


PUBLIC_PACKAGES = [plugin_sdk, kernel]


@pytest.mark.parametrize("package", PUBLIC_PACKAGES, ids=lambda p: p.__name__)
def test_every_name_in_all_exists(package: types.ModuleType) -> None:
    missing = [name for name in package.__all__ if not hasattr(package, name)]
    assert missing == []


@pytest.mark.parametrize("package", PUBLIC_PACKAGES, ids=lambda p: p.__name__)
def test_all_has_no_duplicates(package: types.ModuleType) -> None:
    assert len(package.__all__) == len(set(package.__all__))


@pytest.mark.parametrize("package", PUBLIC_PACKAGES, ids=lambda p: p.__name__)
def test_public_classes_report_a_public_module(package: types.ModuleType) -> None:
    wrong = {}
    for name in package.__all__:
        obj = getattr(package, name)
        if not isinstance(obj, type):
            continue
        module = obj.__module__
        private = any(part.startswith("_") for part in module.split("."))
        if private or not module.startswith(package.__name__):
            wrong[name] = module
            continue
        # The public path must lead back to the object (repr and pickling rely on it).
        if getattr(importlib.import_module(module), obj.__qualname__, None) is not obj:
            wrong[name] = module
    assert wrong == {}


@pytest.mark.parametrize(
    ("package", "name"),
    [(plugin_sdk, "Plugin"), (plugin_sdk, "PluginContext"), (plugin_sdk, "ConfigError"), (kernel, "Kernel")],
)
def test_key_classes_live_in_the_package_itself(package: types.ModuleType, name: str) -> None:
    assert getattr(package, name).__module__ == package.__name__


@pytest.mark.parametrize(
    "package",
    [
        pytest.param(plugin_sdk, id="plugin_sdk"),
        pytest.param(kernel, id="kernel"),
    ],
)
def test_all_lists_every_public_name_the_package_defines(package: types.ModuleType) -> None:
    defined = {
        name
        for name, value in vars(package).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert defined - set(package.__all__) == set()


def test_error_types_named_by_the_design_are_public() -> None:
    names = [
        "PluginError",
        "ConfigError",
        "PermissionDenied",
        "NotAuthenticated",
        "ServiceUnavailable",
        "HookTimeout",
    ]
    for name in names:
        assert name in plugin_sdk.__all__
        assert issubclass(getattr(plugin_sdk, name), plugin_sdk.OrionError)


def _run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ORION__")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.slow
def test_plugin_sdk_imports_nothing_from_kernel(tmp_path: Path) -> None:
    code = "import plugin_sdk, sys; assert not any(m == 'kernel' or m.startswith('kernel.') for m in sys.modules)"
    result = _run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def fresh_kernel_import(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[str]]:
    """``import kernel`` in a fresh interpreter: (modules then loaded, files then in cwd)."""
    cwd = tmp_path_factory.mktemp("fresh-import")
    code = "import json, sys\nimport kernel\nprint(json.dumps(sorted(sys.modules)))"
    result = _run_python(code, cwd)
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stdout)
    return modules, sorted(os.listdir(cwd))


@pytest.mark.slow
def test_import_kernel_imports_no_builtin_plugin(fresh_kernel_import: tuple[list[str], list[str]]) -> None:
    modules, _ = fresh_kernel_import
    assert "kernel" in modules
    assert [m for m in modules if m == "builtin_plugins" or m.startswith("builtin_plugins.")] == []


@pytest.mark.slow
def test_import_kernel_does_not_import_trio(fresh_kernel_import: tuple[list[str], list[str]]) -> None:
    modules, _ = fresh_kernel_import
    assert [m for m in modules if m == "trio" or m.startswith("trio.")] == []


@pytest.mark.slow
def test_import_kernel_creates_no_files(fresh_kernel_import: tuple[list[str], list[str]]) -> None:
    _, files = fresh_kernel_import
    assert files == []


# -- hookspecs are documented (datasette: test_plugin_hooks_are_documented) --------


SPECS = spec_handles(plugin_sdk.hookspecs)


def test_sdk_declares_hookspecs() -> None:
    assert {"check_health", "kernel_started", "kernel_stopping", "plugin_state_changed"} <= {s.name for s in SPECS}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_hookspec_has_a_docstring(spec: plugin_sdk.HookSpec[Any, Any]) -> None:
    doc = inspect.getdoc(spec.function)
    assert doc
    assert len(doc.splitlines()[0]) > 10


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_hookspec_docstring_documents_every_argument(spec: plugin_sdk.HookSpec[Any, Any]) -> None:
    doc = inspect.getdoc(spec.function) or ""
    undocumented = [arg for arg in spec.options.argnames if f":param {arg}:" not in doc]
    assert undocumented == []


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_hookspec_argnames_match_its_signature(spec: plugin_sdk.HookSpec[Any, Any]) -> None:
    assert spec.options.argnames == tuple(inspect.signature(spec.function).parameters)


def test_hookspec_handle_doc_is_the_spec_docstring() -> None:
    spec = plugin_sdk.hookspecs.plugin_state_changed
    assert spec.__doc__ == spec.function.__doc__
