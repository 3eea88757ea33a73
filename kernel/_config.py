"""Configuration: ``orion.toml``, ``ORION__...`` environment overrides and dicts in code.

Loading happens in two stages because a plugin's settings can only be checked
once its ``Config`` class is known: :func:`load_config` parses and checks the
file's own shape (the ``kernel`` table and each ``[plugins.NAME]`` entry);
:func:`structure_settings` then structures each enabled plugin's
``settings`` table.  Both report every issue they find, each with its path.
"""

from __future__ import annotations

import copy
import difflib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from typing import Final
from typing import Literal
from typing import cast

import attrs

from plugin_sdk import ConfigError
from plugin_sdk import ConfigIssue
from plugin_sdk._permissions import PermissionSyntaxError
from plugin_sdk._permissions import parse_permission
from plugin_sdk._plugin import is_valid_name

from ._structure import NonNegativeInt
from ._structure import PositiveFloat
from ._structure import PositiveInt
from ._structure import describe
from ._structure import issues_of
from ._structure import shared_converter

#: The file every command reads when it exists and no other is named.
DEFAULT_CONFIG_FILE: Final = "orion.toml"
#: Environment overrides look like ``ORION__KERNEL__START_TIMEOUT=5``.
ENV_PREFIX: Final = "ORION__"

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


SandboxDefault = Literal["deny", "allow"]
GuardMode = Literal["off", "record", "enforce"]


@attrs.frozen
class SandboxSettings:
    """The ``[kernel.sandbox]`` table: how permissions are granted and watched."""

    default: SandboxDefault = attrs.field(
        default="deny",
        metadata=_doc(
            "What a plugin gets of the permissions its manifest asks for: 'deny' only what "
            "plugins.NAME.permissions grants (a plugin asking for more does not start); 'allow' all of them."
        ),
    )
    guard: GuardMode = attrs.field(
        default="off",
        metadata=_doc(
            "The in-process audit-hook guard: 'off'; 'record' attributes file, socket and process "
            "events to the plugin running them; 'enforce' also raises PermissionDenied for what it was not granted."
        ),
    )


@attrs.frozen
class KernelSettings:
    """The ``[kernel]`` table."""

    data_dir: str = attrs.field(
        default=".orion", metadata=_doc("Directory under which each plugin gets its own data directory.")
    )
    start_timeout: PositiveFloat = attrs.field(
        default=PositiveFloat(30.0),
        metadata=_doc("Seconds a plugin's start() may take (per plugin: plugins.NAME.start_timeout)."),
    )
    stop_timeout: PositiveFloat = attrs.field(
        default=PositiveFloat(30.0),
        metadata=_doc("Seconds a plugin's stop() and the cancelling of its tasks may take."),
    )
    quarantine_after: NonNegativeInt = attrs.field(
        default=NonNegativeInt(5),
        metadata=_doc("Consecutive hook failures after which a plugin is quarantined (0: never)."),
    )
    hook_timeouts: dict[str, PositiveFloat] = attrs.field(
        factory=dict,
        metadata=_doc("Per-hook deadline in seconds for one whole call, overriding the spec's default."),
    )
    strict: bool = attrs.field(
        default=False, metadata=_doc("Fail Kernel start when any enabled plugin fails to load or start.")
    )
    log_level: LogLevel = attrs.field(
        default="INFO", metadata=_doc("Level of the 'orion' loggers when the CLI configures logging.")
    )
    sandbox: SandboxSettings = attrs.field(
        factory=SandboxSettings, metadata=_doc("Permission grants and the in-process guard.")
    )


Isolation = Literal["inprocess", "process"]


@attrs.frozen
class ProcessSettings:
    """The ``[plugins.NAME.process]`` table: limits and supervision of an isolated plugin."""

    memory_mb: NonNegativeInt = attrs.field(
        default=NonNegativeInt(2048), metadata=_doc("Address-space limit of the worker (RLIMIT_AS) in MiB; 0: none.")
    )
    cpu_seconds: NonNegativeInt = attrs.field(
        default=NonNegativeInt(0), metadata=_doc("CPU seconds the worker may use in all (RLIMIT_CPU); 0: no limit.")
    )
    open_files: NonNegativeInt = attrs.field(
        default=NonNegativeInt(256),
        metadata=_doc("Open file descriptors the worker may hold (RLIMIT_NOFILE); 0: no limit."),
    )
    call_timeout: PositiveFloat = attrs.field(
        default=PositiveFloat(30.0),
        metadata=_doc("Seconds one call into the worker may take; past it the worker is killed and restarted."),
    )
    env: dict[str, str] = attrs.field(
        factory=dict, metadata=_doc("Environment variables the worker gets (its environment is otherwise scrubbed).")
    )
    pass_env: tuple[str, ...] = attrs.field(
        default=(), metadata=_doc("Names of the kernel's environment variables passed through to the worker.")
    )
    wrapper: tuple[str, ...] = attrs.field(
        default=(),
        metadata=_doc("A command the worker is started under, e.g. ['bwrap', ...] (it must pass file descriptors on)."),
    )
    max_restarts: NonNegativeInt = attrs.field(
        default=NonNegativeInt(5),
        metadata=_doc("Crashes within restart_window after which the plugin is quarantined instead of restarted."),
    )
    restart_window: PositiveFloat = attrs.field(
        default=PositiveFloat(60.0), metadata=_doc("Seconds over which crashes are counted.")
    )
    backoff: PositiveFloat = attrs.field(
        default=PositiveFloat(0.1),
        metadata=_doc("Seconds before the first restart; doubled for each crash in the window."),
    )
    max_backoff: PositiveFloat = attrs.field(
        default=PositiveFloat(10.0), metadata=_doc("The longest wait before a restart, in seconds.")
    )
    max_frame: PositiveInt = attrs.field(
        default=PositiveInt(16 * 1024 * 1024),
        metadata=_doc("Largest message, in bytes, either side may send; a worker sending more is killed."),
    )
    spin_us: NonNegativeInt = attrs.field(
        default=NonNegativeInt(200),
        metadata=_doc(
            "Microseconds an idle worker keeps polling its channel before it sleeps, while calls come that often "
            "(waking a sleeping CPU costs more than the call on a VM); 0: sleep at once."
        ),
    )


@attrs.frozen
class PluginEntry:
    """One ``[plugins.NAME]`` table."""

    enabled: bool | None = attrs.field(
        default=None, metadata=_doc("Run the plugin. Plugins passed in code default to true, others to false.")
    )
    source: str | None = attrs.field(
        default=None, metadata=_doc("Where to import the plugin from, as 'module:Class', instead of an entry point.")
    )
    priority: int | None = attrs.field(
        default=None, metadata=_doc("Order in hooks and middleware (higher first), overriding the plugin's own.")
    )
    before: tuple[str, ...] | None = attrs.field(
        default=None, metadata=_doc("Plugins this one must run before, replacing the plugin's own list.")
    )
    after: tuple[str, ...] | None = attrs.field(
        default=None, metadata=_doc("Plugins this one must run after, replacing the plugin's own list.")
    )
    start_timeout: PositiveFloat | None = attrs.field(
        default=None, metadata=_doc("Seconds this plugin's start() may take.")
    )
    stop_timeout: PositiveFloat | None = attrs.field(
        default=None, metadata=_doc("Seconds this plugin's stop() may take.")
    )
    isolation: Isolation = attrs.field(
        default="inprocess",
        metadata=_doc(
            "'inprocess', or 'process': run the plugin in a confined worker process of its own "
            "(resource limits, Landlock, seccomp), the boundary for code you do not trust."
        ),
    )
    process: ProcessSettings = attrs.field(
        factory=ProcessSettings, metadata=_doc("Limits and supervision under isolation = 'process'.")
    )
    permissions: tuple[str, ...] = attrs.field(
        default=(),
        metadata=_doc(
            "Permissions granted to the plugin (fs:read:PATH, net:connect:HOST:PORT, subprocess, ...); "
            "see docs/sandbox.md for the grammar."
        ),
    )
    settings: dict[str, Any] = attrs.field(
        factory=dict, metadata=_doc("The plugin's own settings, checked against its Config class.")
    )


@attrs.frozen
class OrionConfig:
    """The whole configuration file."""

    kernel: KernelSettings = attrs.field(factory=KernelSettings)
    plugins: dict[str, PluginEntry] = attrs.field(factory=dict)


# Resolve the string annotations now: the public package renames __module__
# (kernel.OrionConfig), after which they could no longer be looked up.
for _cls in (SandboxSettings, KernelSettings, ProcessSettings, PluginEntry, OrionConfig):
    attrs.resolve_types(_cls)

_converter: Final = shared_converter


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a TOML file; a syntax error becomes a :class:`ConfigError` with line and column."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError([ConfigIssue("", f"no such file: {os.fspath(path)}")], source=os.fspath(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigIssue("", f"not valid TOML: {exc}")], source=os.fspath(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [ConfigIssue("", f"not valid UTF-8 (TOML files are UTF-8): {exc.reason} at byte {exc.start}")],
            source=os.fspath(path),
        ) from None
    except ValueError as exc:  # e.g. an embedded NUL in the path
        raise ConfigError([ConfigIssue("", f"cannot open {os.fspath(path)!r}: {exc}")], source=repr(path)) from None
    except OSError as exc:
        raise ConfigError([ConfigIssue("", f"cannot read: {exc.strerror}")], source=os.fspath(path)) from None


def _env_value(text: str) -> Any:
    # A TOML value when it parses as one (5, 1.5, true, ["a"]), else the raw string.
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[ConfigIssue]]:
    """Turn ``ORION__A__B=v`` variables into a nested dict ``{"a": {"b": v}}``."""
    tree: dict[str, Any] = {}
    issues: list[ConfigIssue] = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(parts):
            issues.append(ConfigIssue(f"env:{name}", "empty path segment (use single '_' inside names)"))
            continue
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                issues.append(ConfigIssue(f"env:{name}", f"{part!r} is set as a value by another variable"))
                break
            node = child
        else:
            node[parts[-1]] = _env_value(environ[name])
    return tree, issues


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (tables merge, values replace)."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = merge(current, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | OrionConfig | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> OrionConfig:
    """Read, merge and check a configuration.

    :param source: a path to a TOML file, a dict in the file's shape, an
        :class:`OrionConfig`, or ``None`` for ``./orion.toml`` when it exists
        (else the defaults).
    :param environ: where ``ORION__...`` overrides come from (default
        ``os.environ``; pass ``{}`` to ignore the environment).
    :raises ConfigError: with every issue found, each with its path.
    """
    if isinstance(source, OrionConfig):
        return source
    raw, origin = _read(source)
    overrides, issues = env_overrides(os.environ if environ is None else environ)
    if overrides:
        raw = merge(raw, overrides) if isinstance(raw, Mapping) else raw
    return structure_config(raw, origin=origin, issues=issues)


def _read(source: str | os.PathLike[str] | Mapping[str, Any] | None) -> tuple[Any, str | None]:
    """The raw config data of ``source`` and a description of where it came from."""
    origin: str | None = None
    if source is None:
        raw: Mapping[str, Any] = {}
        if Path(DEFAULT_CONFIG_FILE).is_file():
            origin = DEFAULT_CONFIG_FILE
            raw = read_toml(DEFAULT_CONFIG_FILE)
    elif isinstance(source, Mapping):
        raw, origin = source, "<dict>"
    elif not isinstance(cast(object, source), str | os.PathLike):
        raw, origin = cast(Mapping[str, Any], source), "<config>"
    else:
        origin = os.fspath(source)
        raw = read_toml(source)
    return raw, origin


def structure_config(raw: object, *, origin: str | None = None, issues: list[ConfigIssue] | None = None) -> OrionConfig:
    """Check a config dict's shape; see :func:`load_config`."""
    config, found = structure_partial(raw)
    found = list(issues or ()) + found
    if found:
        raise ConfigError(_dedupe(found), source=origin)
    return config


def structure_partial(raw: object) -> tuple[OrionConfig, list[ConfigIssue]]:
    """Structure what is valid and list what is not: the ``kernel`` table and each
    plugin entry separately, so a check can go on to the plugins' own settings."""
    if not isinstance(raw, Mapping):
        return OrionConfig(), [ConfigIssue("", f"expected a table, got {describe(raw)}")]
    found: list[ConfigIssue] = []
    known = [field.name for field in attrs.fields(OrionConfig)]
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
            found.append(ConfigIssue(str(key), f"unknown key ({hint})"))
    kernel = KernelSettings()
    try:
        kernel = _converter().structure(raw.get("kernel", {}), KernelSettings)
    except Exception as exc:
        found.extend(issues_of(exc, "kernel"))
    plugins: dict[str, PluginEntry] = {}
    plugins_raw = raw.get("plugins", {})
    if not isinstance(plugins_raw, Mapping):
        found.append(ConfigIssue("plugins", f"expected a table, got {describe(plugins_raw)}"))
        plugins_raw = {}
    for name, entry in plugins_raw.items():
        if not is_valid_name(name):
            found.append(
                ConfigIssue(
                    f"plugins[{name!r}]",
                    f"{describe(name)} is not a valid plugin name "
                    "(lowercase letters and digits, words joined by single '_')",
                )
            )
            continue
        try:
            plugins[name] = _converter().structure(entry, PluginEntry)
        except Exception as exc:
            found.extend(issues_of(exc, f"plugins.{name}"))
            continue
        for index, text in enumerate(plugins[name].permissions):
            try:
                parse_permission(text)
            except PermissionSyntaxError as exc:
                found.append(ConfigIssue(f"plugins.{name}.permissions[{index}]", exc.reason))
    return OrionConfig(kernel=kernel, plugins=plugins), found


def check_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> tuple[OrionConfig, list[ConfigIssue]]:
    """Like :func:`load_config`, but returns the valid part and the issues instead of raising."""
    try:
        raw, _ = _read(source)
    except ConfigError as exc:
        return OrionConfig(), list(exc.issues)
    overrides, issues = env_overrides(os.environ if environ is None else environ)
    if overrides:
        raw = merge(raw, overrides) if isinstance(raw, Mapping) else raw
    config, found = structure_partial(raw)
    return config, _dedupe(issues + found)


def _dedupe(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    seen: dict[ConfigIssue, None] = {}
    for issue in issues:
        seen.setdefault(issue, None)
    return list(seen)


def structure_settings(name: str, config_class: type, raw: Mapping[str, Any]) -> tuple[Any, list[ConfigIssue]]:
    """Structure one plugin's settings into its ``Config``; return the instance or the issues."""
    try:
        return _converter().structure(dict(raw), config_class), []
    except Exception as exc:
        return None, issues_of(exc, f"plugins.{name}.settings")


def unstructure(value: Any) -> Any:
    """Turn a settings object (or any config value) back into plain data."""
    return _converter().unstructure(value)
