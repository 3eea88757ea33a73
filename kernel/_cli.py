"""``orion-kernel``: run a kernel, inspect plugins and config, invoke operations.

Every command reads ``./orion.toml`` when it exists (``-c FILE`` to choose
another) and works with no config file at all.  Plugins add sub-commands
through the ``cli_commands`` hook: the CLI loads the enabled plugins (without
starting them) before it parses the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import logging
import os
import sys
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import Final
from typing import TextIO
from typing import cast

import anyio
import anyio.to_thread
import orjson

from plugin_sdk import CliCommand
from plugin_sdk import ConfigError
from plugin_sdk import Credentials
from plugin_sdk import Invoker
from plugin_sdk import OrionError
from plugin_sdk import Principal
from plugin_sdk import __version__ as SDK_VERSION
from plugin_sdk import hookspecs
from plugin_sdk._markers import PROJECT

from ._config import DEFAULT_CONFIG_FILE
from ._config import KernelSettings
from ._config import check_config
from ._config import unstructure
from ._kernel import Kernel
from ._kernel import PluginInfo

BUILTIN_COMMANDS: Final = frozenset({"run", "plugins", "config", "invoke", "conformance", "new-plugin"})
log: Final = logging.getLogger("orion.kernel.cli")


def _json_default(value: Any) -> Any:
    if hasattr(value, "value") and hasattr(value, "name"):  # enums
        return value.value
    return str(value)


def dumps(data: Any) -> str:
    """JSON for ``--json`` output (sorted keys, indented)."""
    return orjson.dumps(data, default=_json_default, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain text table with a header row."""
    cells = [[str(col).upper() for col in columns]]
    cells += [["" if row.get(col) is None else str(row.get(col)) for col in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in cells)


class Environment:
    """What commands (the kernel's and plugins') get: output helpers and a startable kernel."""

    def __init__(self, kernel_factory: Callable[[], Kernel], *, json: bool, out: TextIO) -> None:
        self.json = json
        self._factory = kernel_factory
        self._out = out

    def echo(self, text: str) -> None:
        print(text, file=self._out)

    def emit(self, data: Any, *, columns: Sequence[str] | None = None) -> None:
        if self.json:
            self.echo(dumps(data))
        elif columns is not None and isinstance(data, list):
            self.echo(table(data, columns))
        elif isinstance(data, str):
            self.echo(data)
        else:
            self.echo(dumps(data))

    @contextlib.asynccontextmanager
    async def started(self) -> AsyncIterator[Invoker]:
        async with self._factory() as kernel:
            yield kernel

    async def fetch(
        self, url: str, *, socket_timeout: float = 10.0, headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        return await anyio.to_thread.run_sync(http_get, url, socket_timeout, dict(headers or {}))


def http_get(url: str, timeout: float, headers: Mapping[str, str]) -> tuple[int, bytes]:
    """A blocking GET with urllib (imported here: it pulls in http.client, email, hashlib ...)."""
    import urllib.error
    import urllib.parse
    import urllib.request

    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"only http:// and https:// URLs can be fetched, got {url!r}")
    request = urllib.request.Request(url, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # the scheme is checked above
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read() or b"")
    except urllib.error.URLError as exc:
        reason = exc.reason
        raise reason if isinstance(reason, OSError) else OSError(str(reason)) from None


# -- the kernel's own commands ---------------------------------------------------------


#: Entry-point group of named config profiles; "default" is used when no config file exists.
PROFILE_GROUP: Final = "orion_kernel.profiles"


def default_profile() -> dict[str, Any] | None:
    """The ``default`` profile from the ``orion_kernel.profiles`` entry points, if one is installed.

    This is how ``orion-kernel run`` works "on embedded defaults" without the
    kernel naming any plugin: the distribution that ships the plugins ships
    the profile that enables them.
    """
    from importlib.metadata import entry_points

    for ep in entry_points(group=PROFILE_GROUP, name="default"):
        profile = ep.load()
        if isinstance(profile, Mapping):
            return dict(profile)
        log.warning("ignoring profile %s: not a mapping", ep.value)
    return None


def config_source(path: Path | None) -> str | dict[str, Any] | None:
    """What the CLI configures the kernel from: ``-c FILE``, else ``./orion.toml``, else the default profile."""
    if path is not None:
        return str(path)
    if Path(DEFAULT_CONFIG_FILE).is_file():
        return DEFAULT_CONFIG_FILE
    return default_profile()


def _config_path(args: argparse.Namespace) -> str | None:
    if args.config is not None:
        return str(args.config)
    return DEFAULT_CONFIG_FILE if Path(DEFAULT_CONFIG_FILE).is_file() else None


def _info_row(info: PluginInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "version": info.version,
        "source": info.source,
        "enabled": info.enabled,
        "state": info.state.value,
        "last_error": info.last_error,
    }


async def cmd_run(args: argparse.Namespace, env: Environment, kernel: Kernel) -> int:
    async with kernel:
        running = [i for i in kernel.plugins.values() if i.state.value == "running"]
        failed = [i for i in kernel.plugins.values() if i.enabled and i.state.value == "failed"]
        for info in failed:
            env.echo(f"plugin {info.name} failed: {info.last_error}")
        # Announced only once the signal handlers are in place (serve's ready callback).
        announce = (
            f"orion-kernel running: {len(running)} plugin(s) "
            f"[{', '.join(i.name for i in running) or 'none enabled'}]; press Ctrl-C to stop"
        )

        def ready() -> None:
            env.echo(announce)
            sys.stdout.flush()

        await kernel.serve(ready=ready)
    env.echo("orion-kernel stopped")
    return 0


def cmd_plugins_list(args: argparse.Namespace, env: Environment, kernel: Kernel) -> int:
    rows = [_info_row(info) for info in kernel.plugins.values()]
    env.emit(rows, columns=["name", "version", "source", "enabled", "state"])
    return 0


def cmd_plugins_info(args: argparse.Namespace, env: Environment, kernel: Kernel) -> int:
    from ._schema import class_schema

    info = kernel.plugins.get(args.name)
    if info is None:
        env.echo(f"no plugin named {args.name!r}; known: {', '.join(kernel.plugins) or 'none'}")
        return 1
    record = kernel._lifecycle.records[args.name]
    fields = {}
    description = getattr(record.plugin, "description", None)
    if getattr(record.plugin, "isolated", False) and isinstance(description, dict):
        fields = dict(description.get("settings_schema", {}).get("properties", {}))  # the worker's, from its Config
    elif record.manifest is not None:
        fields = class_schema(record.manifest.Config)["properties"]
    data = {
        **_info_row(info),
        "sdk": record.manifest.sdk if record.manifest else None,
        "requires": list(info.requires),
        "optional": list(info.optional),
        "provides": list(info.provides),
        "permissions": list(info.permissions),
        "asked": list(info.asked),
        "granted": list(info.granted),
        "effective": list(info.effective),
        "isolation": info.isolation,
        "protections": dict(info.protections),
        "hooks": list(info.hooks),
        "settings": fields,
    }
    if env.json:
        env.emit(data)
        return 0
    for key in ("name", "version", "source", "enabled", "state", "sdk", "last_error"):
        env.echo(f"{key + ':':<13}{'' if data[key] is None else data[key]}")
    for key in ("requires", "optional", "provides", "permissions", "asked", "granted", "effective", "hooks"):
        env.echo(f"{key + ':':<13}{', '.join(data[key]) or '-'}")
    env.echo(f"{'isolation:':<13}{info.isolation}")
    if info.protections:
        env.echo(f"{'protections:':<13}{_protections_line(info.protections)}")
    env.echo("settings:" + ("" if fields else "    (none)"))
    rows = [
        {
            "field": name,
            "type": _type_label(prop),
            "default": orjson.dumps(prop["default"]).decode() if "default" in prop else "(required)",
            "doc": prop.get("description", ""),
        }
        for name, prop in fields.items()
    ]
    if rows:
        env.echo(table(rows, ["field", "type", "default", "doc"]))
    return 0


def _protections_line(protections: Mapping[str, Any]) -> str:
    """What an isolated plugin's worker really got, on one line (warnings after it)."""
    parts = [f"{name}={value}" for name, value in dict(protections.get("rlimits", {})).items()]
    for key in ("no_new_privs", "landlock_fs", "landlock_net", "seccomp"):
        parts.append(f"{key}={'yes' if protections.get(key) else 'NO'}")
    if protections.get("landlock_abi"):
        parts.append(f"landlock_abi={protections['landlock_abi']}")
    warnings = list(protections.get("warnings", ()))
    return ", ".join(parts) + "".join(f"\n{'':<13}warning: {w}" for w in warnings)


def _type_label(prop: dict[str, Any]) -> str:
    if "type" in prop:
        return str(prop["type"])
    if "enum" in prop:
        return "|".join(map(str, prop["enum"]))
    if "anyOf" in prop:
        return "|".join(_type_label(p) for p in prop["anyOf"])
    return "any"


def cmd_config_check(args: argparse.Namespace, env: Environment) -> int:
    """Every issue of the file: its shape and, for valid entries, each plugin's settings."""
    given = args.file or _config_path(args)
    source = given or "(defaults)"
    config, issues = check_config(given if given is not None else default_profile())
    kernel = Kernel(config, environ={})  # the environment is already applied
    try:
        kernel.prepare(scan_all=True)
    except ConfigError as exc:
        issues = [*issues, *exc.issues]
    if issues:
        if env.json:
            env.emit({"ok": False, "file": source, "issues": [{"path": i.path, "message": i.message} for i in issues]})
        else:
            env.echo(f"{source}: {len(issues)} issue(s)")
            for issue in issues:
                env.echo(f"  {issue}")
        return 1
    failed = {n: i.last_error for n, i in kernel.plugins.items() if i.enabled and i.state.value == "failed"}
    if env.json:
        env.emit({"ok": not failed, "file": source, "issues": [], "failed_plugins": failed})
    else:
        enabled = [n for n, i in kernel.plugins.items() if i.enabled]
        env.echo(f"{source}: ok ({len(enabled)} plugin(s) enabled: {', '.join(enabled) or 'none'})")
        for name, why in failed.items():
            env.echo(f"  plugin {name} cannot load: {why}")
    return 1 if failed else 0


def cmd_config_show(args: argparse.Namespace, env: Environment, kernel: Kernel) -> int:
    data = unstructure(kernel.config)
    for name, record in kernel._lifecycle.records.items():
        if record.settings is not None:
            data["plugins"].setdefault(name, unstructure(record.entry))["settings"] = unstructure(record.settings)
    if env.json:
        env.emit(data)
    else:
        env.echo(_to_toml(data))
    return 0


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return orjson.dumps(str(value)).decode()


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else orjson.dumps(key).decode()


def _to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Render nested dicts as TOML tables (``None`` values are left out: TOML has no null)."""
    lines: list[str] = []
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) and v is not None}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    if prefix and (scalars or not tables):
        lines.append(f"[{prefix}]")
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in scalars.items()]
    for key, value in tables.items():
        sub = _to_toml(value, f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key))
        if sub:
            lines += ["", sub] if lines else [sub]
    return "\n".join(lines)


def cmd_config_schema(args: argparse.Namespace, env: Environment, kernel: Kernel) -> int:
    from ._schema import config_schema

    configs = {}
    for name, record in kernel._lifecycle.records.items():
        if record.manifest is None and record.state.value == "discovered":
            from ._loader import load_record

            load_record(record)
        if record.manifest is not None:
            configs[name] = record.manifest.Config
    env.echo(dumps(config_schema(configs)))
    return 0


async def cmd_invoke(args: argparse.Namespace, env: Environment, kernel: Kernel) -> int:
    try:
        call_args = orjson.loads(args.args)
    except orjson.JSONDecodeError as exc:
        env.echo(f"--args is not valid JSON: {exc}")
        return 2
    principal = Principal(args.principal) if args.principal else None
    credentials = None
    if args.credentials_env:
        # From the environment, never argv: a secret on the command line is in ps and shell history.
        header = os.environ.get(args.credentials_env)
        if not header:
            env.echo(f"--credentials-env: the environment variable {args.credentials_env!r} is not set")
            return 2
        try:
            credentials = Credentials.from_header(header)
        except OrionError as exc:
            env.echo(f"--credentials-env {args.credentials_env}: {exc}")
            return 2
    async with kernel:
        try:
            result = await kernel.invoke(args.operation, call_args, principal=principal, credentials=credentials)
        except OrionError as exc:
            if env.json:
                env.emit({"ok": False, "error": type(exc).__name__, "message": str(exc)})
            else:
                env.echo(f"{type(exc).__name__}: {exc}")
            return 1
    if env.json:
        env.emit({"ok": True, "result": result})
    else:
        env.emit(result)
    return 0


# -- parsing ---------------------------------------------------------------------------


def _base_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orion-kernel",
        description="Run and inspect an Orion kernel. Reads ./orion.toml when present.",
    )
    parser.add_argument(
        "-c", "--config", type=Path, default=None, help="config file (default: ./orion.toml if it exists)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable JSON output")
    parser.add_argument("--version", action="version", version=f"orion-kernel (plugin_sdk {SDK_VERSION})")
    return parser


def _common_options() -> argparse.ArgumentParser:
    # The global options, accepted after the sub-command too (`plugins list --json`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable JSON output")
    return common


def build_parser(plugin_commands: Sequence[CliCommand] = ()) -> argparse.ArgumentParser:
    parser = _base_parser()
    common = [_common_options()]
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser("run", parents=common, help="start every enabled plugin and serve until SIGINT/SIGTERM")
    plugins = sub.add_parser("plugins", help="list plugins or show one").add_subparsers(dest="action", required=True)
    plugins.add_parser("list", parents=common, help="every known plugin: name, version, source, enabled, state")
    info = plugins.add_parser("info", parents=common, help="manifest, hooks, permissions and settings of one plugin")
    info.add_argument("name")
    config = sub.add_parser("config", help="check, show or describe the configuration").add_subparsers(
        dest="action", required=True
    )
    check = config.add_parser(
        "check", parents=common, help="validate a config file without starting anything (exit 1 on errors)"
    )
    check.add_argument("file", nargs="?", default=None, help="the file to check (default: -c or ./orion.toml)")
    config.add_parser(
        "show", parents=common, help="the effective config: defaults, file and ORION__ environment overrides"
    )
    config.add_parser("schema", parents=common, help="JSON Schema of the whole config file, for editors")
    invoke = sub.add_parser("invoke", parents=common, help="start the kernel, run one operation, print its result")
    invoke.add_argument("operation")
    invoke.add_argument("--args", default="{}", help="the arguments as a JSON object (default {})")
    invoke.add_argument("--principal", default=None, help="the caller's principal id (trusted, as an app's)")
    invoke.add_argument(
        "--credentials-env",
        metavar="VAR",
        default=None,
        help="authenticate with the credentials in environment variable VAR ('Bearer <jwt>' or 'ApiKey <key>')",
    )
    conformance = sub.add_parser(
        "conformance", parents=common, help="run the conformance suite on a plugin (exit 1 on any failure)"
    )
    conformance.add_argument("target", help="a plugin entry-point name, module:Class, or an installed distribution")
    conformance.add_argument("--strict", action="store_true", help="refuse opt-outs of core checks")
    conformance.add_argument(
        "--only",
        metavar="CHECK",
        action="append",
        default=[],
        help="run only this check (and the checks it needs); repeatable, e.g. --only lifecycle.start_stop",
    )
    conformance.add_argument(
        "--against",
        metavar="PREVIOUS",
        default=None,
        help="a wheel (or unpacked directory) of the previous release: fail on removed settings, "
        "new required settings, removed operations or services",
    )
    from . import _scaffold

    _scaffold.add_arguments(
        sub.add_parser("new-plugin", parents=common, help="write a new plugin project, ready to test and publish")
    )
    for command in plugin_commands:
        child = sub.add_parser(command.name, parents=common, help=command.help)
        if command.configure is not None:
            command.configure(child)
        child.set_defaults(plugin_command=command)
    return parser


def _plugin_commands(kernel: Kernel) -> list[CliCommand]:
    commands: dict[str, CliCommand] = {}
    for batch in [*kernel.hooks.call(hookspecs.cli_commands), *_commands_of_ungranted(kernel)]:
        for command in cast(list[object], batch):
            if not isinstance(command, CliCommand):
                log.warning("ignoring CLI command %r: not a plugin_sdk.CliCommand", command)
            elif command.name in BUILTIN_COMMANDS or command.name in commands:
                log.warning("ignoring CLI command %r: the name is taken", command.name)
            else:
                commands[command.name] = command
    return list(commands.values())


def _commands_of_ungranted(kernel: Kernel) -> list[object]:
    """The CLI commands of plugins that did not start only for want of a grant.

    Their hooks are not registered (they do not run), yet their commands are
    what an operator reaches for next (``secrets keygen``, or ``rbac check``
    saying the plugin is not running), so they stay offered.
    """
    batches: list[object] = []
    for record in kernel._lifecycle.records.values():
        method = getattr(record.plugin, hookspecs.cli_commands.name, None) if record.not_granted else None
        if method is None or getattr(method, f"{PROJECT}_impl", None) is None:
            continue
        try:
            batches.append(method())
        except Exception:
            log.exception("plugin %s: cli_commands() raised", record.name)
    return batches


def _configure_logging(settings: KernelSettings) -> None:
    logging.basicConfig(
        level=getattr(logging, settings.log_level),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _prepared(source: str | dict[str, Any] | None) -> tuple[Kernel | None, ConfigError | None]:
    try:
        kernel = Kernel(source)
        kernel.prepare(scan_all=True)
    except ConfigError as exc:
        return None, exc
    return kernel, None


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Entry point of ``orion-kernel`` and ``python -m kernel``; returns the exit code."""
    out = out or sys.stdout
    argv = list(sys.argv[1:] if argv is None else argv)
    early, _ = _base_parser().parse_known_args([a for a in argv if a not in ("-h", "--help", "--version")])
    source = config_source(early.config)
    kernel, error = _prepared(source)
    plugin_commands = _plugin_commands(kernel) if kernel is not None else []
    args = build_parser(plugin_commands).parse_args(argv)
    env = Environment(lambda: Kernel(source), json=args.json, out=out)
    if args.command == "conformance":
        return cmd_conformance(args, env)
    if args.command == "new-plugin":
        from . import _scaffold

        return _scaffold.run(args, out)
    if args.command == "config" and args.action == "check":
        return cmd_config_check(args, env)
    if error is not None:
        env.echo(str(error))
        return 1
    assert kernel is not None
    _configure_logging(kernel.config.kernel)
    try:
        return _dispatch(args, env, kernel)
    except OrionError as exc:  # e.g. PluginStartError from a strict kernel
        env.echo(f"error: {type(exc).__name__}: {exc}")
        return 1


def cmd_conformance(args: argparse.Namespace, env: Environment) -> int:
    """Run the suite on every plugin TARGET names; with ``--against``, the compatibility checks too."""
    from plugin_sdk.testing import CHECKS
    from plugin_sdk.testing import CheckResult
    from plugin_sdk.testing import ConformanceReport
    from plugin_sdk.testing import Status
    from plugin_sdk.testing import run_conformance_async
    from plugin_sdk.testing._targets import TargetError
    from plugin_sdk.testing._targets import compare
    from plugin_sdk.testing._targets import previous_surfaces
    from plugin_sdk.testing._targets import resolve
    from plugin_sdk.testing._targets import surface_of

    unknown = [name for name in args.only if name not in CHECKS]
    if unknown:
        env.echo(f"error: unknown check(s) {', '.join(map(repr, unknown))}; known: {', '.join(CHECKS)}")
        return 2
    try:
        classes = resolve(args.target)
        previous = previous_surfaces(args.against) if args.against else None
    except TargetError as exc:
        env.echo(f"error: {exc}")
        return 2

    async def run_all() -> list[ConformanceReport]:
        reports = []
        for cls in classes:
            report = await run_conformance_async(cls, strict=args.strict, only=args.only or None)
            if previous is not None:
                current = await surface_of(cls)
                before = previous.get(current.plugin)
                title = f"backward compatible with {args.against}"
                if before is None:
                    extra = CheckResult(
                        "compat.previous", title, Status.SKIP, "the previous release has no such plugin"
                    )
                else:
                    problems = compare(before, current)
                    extra = CheckResult(
                        "compat.previous",
                        f"backward compatible with {before.version}",
                        Status.FAIL if problems else Status.PASS,
                        "; ".join(problems),
                    )
                report = ConformanceReport(report.plugin, (*report.results, extra))
            reports.append(report)
        return reports

    try:
        reports = anyio.run(run_all)
    except (ValueError, OrionError) as exc:  # a bad opt-out, a manifest the suite cannot read
        env.echo(f"error: {type(exc).__name__}: {exc}")
        return 2
    if env.json:
        env.echo(dumps([report.to_json() for report in reports]))
    else:
        for report in reports:
            verdict = "conforms" if report.ok else f"{len(report.failures())} check(s) failed"
            env.echo(f"{report.plugin}: {verdict}")
            rows = [{"check": r.id, "status": r.status.value, "reason": r.reason} for r in report.results]
            env.echo(table(rows, ["check", "status", "reason"]))
    return 0 if all(report.ok for report in reports) else 1


def _dispatch(args: argparse.Namespace, env: Environment, kernel: Kernel) -> int:
    handlers: dict[tuple[str, str | None], Callable[..., Any]] = {
        ("run", None): cmd_run,
        ("plugins", "list"): cmd_plugins_list,
        ("plugins", "info"): cmd_plugins_info,
        ("config", "show"): cmd_config_show,
        ("config", "schema"): cmd_config_schema,
        ("invoke", None): cmd_invoke,
    }
    command = getattr(args, "plugin_command", None)
    if command is not None:
        result = command.run(args, env)
        if inspect.isawaitable(result):
            return int(anyio.run(_await, result))
        return int(result)
    handler = handlers[(args.command, getattr(args, "action", None))]
    if inspect.iscoroutinefunction(handler):
        return int(anyio.run(handler, args, env, kernel))
    return int(handler(args, env, kernel))


async def _await(awaitable: Any) -> Any:
    return await awaitable
