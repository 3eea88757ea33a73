"""``orion-kernel new-plugin NAME``: write a complete plugin project, ready to install, test and publish.

The project written has a plugin class registered through the
``orion_kernel.plugins`` entry point, its settings class, one operation with
example arguments, tests through a real :class:`kernel.Kernel`, the
conformance suite, a README and a ``pyproject.toml``.  Installed into a
fresh environment it passes its own tests and ``orion-kernel conformance
NAME`` as written.

:func:`write_project` does the work and raises :class:`ScaffoldError`;
:func:`add_arguments` and :func:`run` are the command-line face of it.
"""

from __future__ import annotations

import argparse
import keyword
import shlex
import shutil
from importlib import metadata
from pathlib import Path
from string import Template
from typing import Final
from typing import TextIO

from packaging.version import InvalidVersion
from packaging.version import Version

from plugin_sdk import OrionError
from plugin_sdk import __version__ as SDK_VERSION
from plugin_sdk._plugin import MAX_NAME_LENGTH
from plugin_sdk._plugin import is_valid_name

#: the distribution that ships the kernel and the SDK, which every generated project depends on
KERNEL_DISTRIBUTION: Final = "orion-kernel"
#: the longest line the generated code may have (the kernel's own ruff setting)
LINE_LENGTH: Final = 120
#: names the generated modules use themselves: a plugin class may not be called that
_TAKEN_CLASS_NAMES: Final = frozenset(
    {
        "Any",
        "ConfigIssue",
        "InvalidArguments",
        "Invocation",
        "Kernel",
        "Plugin",
        "PluginConformance",
        "PluginContext",
        "Settings",
    }
)
#: plugin names whose distribution or package would shadow the kernel's own
_RESERVED_NAMES: Final = {"kernel": f"its distribution would be {KERNEL_DISTRIBUTION}, the kernel itself"}
NAME_RULE: Final = (
    f"a plugin name is lowercase letters and digits, starting with a letter, in words joined by single '_', "
    f"at most {MAX_NAME_LENGTH} characters (e.g. 'web_search')"
)


class ScaffoldError(OrionError):
    """The project cannot be written: a bad plugin name or a target directory that is in use."""


# -- names and version ranges ------------------------------------------------------------------


def suggest_name(name: str) -> str | None:
    """A valid plugin name close to ``name`` (``My-Plugin`` -> ``my_plugin``), or ``None``."""
    words = "".join(c if c.isascii() and c.isalnum() else "_" for c in name.strip().lower()).split("_")
    candidate = "_".join(word for word in words if word)
    return candidate if candidate != name and is_valid_name(candidate) else None


def check_name(name: str) -> None:
    """Raise :class:`ScaffoldError` naming ``name`` and the rule it breaks."""
    if not is_valid_name(name):
        hint = suggest_name(name)
        did_you_mean = f"; did you mean {hint!r}?" if hint else ""
        raise ScaffoldError(f"{name!r} is not a valid plugin name: {NAME_RULE}{did_you_mean}")
    if name in _RESERVED_NAMES:
        raise ScaffoldError(f"{name!r} cannot be used as a plugin name: {_RESERVED_NAMES[name]}")


def distribution_name(name: str) -> str:
    """``web_search`` -> ``orion-web-search``."""
    return "orion-" + name.replace("_", "-")


def package_name(name: str) -> str:
    """``web_search`` -> ``orion_web_search``."""
    return f"orion_{name}"


def class_name(name: str) -> str:
    """``web_search`` -> ``WebSearch`` (``WebSearchPlugin`` when the generated code already uses the name)."""
    camel = "".join(word[:1].upper() + word[1:] for word in name.split("_"))
    if camel in _TAKEN_CLASS_NAMES or keyword.iskeyword(camel):
        camel += "Plugin"
    return camel


def compatible_range(version: str) -> str:
    """The PEP 440 range of releases compatible with ``version``: same major, this minor or later.

    ``1.0.0`` -> ``>=1.0,<2``; ``0.1.3`` -> ``>=0.1,<1``; a pre-release is
    its own lower bound (``1.1.0rc1`` -> ``>=1.1.0rc1,<2``) so that the range
    contains it.
    """
    parsed = Version(version)
    major = parsed.release[0]
    minor = parsed.release[1] if len(parsed.release) > 1 else 0
    floor = f"{major}.{minor}"
    if parsed < Version(floor):
        floor = str(parsed)
    return f">={floor},<{major + 1}"


def sdk_range() -> str:
    """The ``sdk`` specifier a generated plugin declares: the running SDK's major version."""
    return compatible_range(SDK_VERSION)


def kernel_requirement() -> str:
    """The ``orion-kernel`` requirement of a generated project, from the installed distribution's version.

    The SDK is versioned apart from the distribution that ships it (the
    plugin's ``sdk`` field states the SDK range); this is the pip side.
    """
    try:
        return KERNEL_DISTRIBUTION + compatible_range(metadata.version(KERNEL_DISTRIBUTION))
    except (metadata.PackageNotFoundError, InvalidVersion):  # run from a source tree that is not installed
        return KERNEL_DISTRIBUTION


def _from_import(module: str, name: str) -> str:
    """``from module import name``, wrapped as ``ruff format`` wraps it when it is too long."""
    line = f"from {module} import {name}"
    return line if len(line) <= LINE_LENGTH else f"from {module} import (\n    {name},\n)"


# -- the templates -----------------------------------------------------------------------------------

_PYPROJECT: Final = Template("""\
[build-system]
requires = ["setuptools>=69", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "${distribution}"
version = "0.1.0"
description = "The ${name} plugin for Orion Kernel."
readme = "README.md"
requires-python = ">=3.11"
classifiers = [
    "Framework :: AnyIO",
    "Programming Language :: Python :: 3",
    "Typing :: Typed",
]
dependencies = ["${kernel_requirement}"]

[project.optional-dependencies]
test = ["pytest>=8"]

# How the kernel finds the plugin: [plugins.${name}] in orion.toml refers to this name.
[project.entry-points."orion_kernel.plugins"]
${name} = "${package}:${cls}"

[tool.setuptools.packages.find]
where = ["src"]

[tool.setuptools.package-data]
${package} = ["py.typed"]

[tool.pytest.ini_options]
testpaths = ["tests"]
addopts = "-ra --strict-markers"

# The style of Orion Kernel itself.
[tool.ruff]
line-length = ${line_length}
target-version = "py311"

[tool.ruff.lint]
select = ["E", "F", "W", "I", "B", "UP", "RUF", "SIM", "ASYNC", "PT"]
ignore = ["RUF022", "SIM105", "B904", "PT011", "PT018", "UP040", "UP046", "UP047", "E501"]

[tool.ruff.lint.isort]
force-single-line = true
known-first-party = ["${package}"]
""")

_MODULE: Final = Template('''\
"""The ${name} plugin for Orion Kernel.

Enable it in ``orion.toml``::

    [plugins.${name}]
    enabled = true
    settings = { greeting = "hello" }
"""

import attrs
from plugin_sdk import ConfigIssue
from plugin_sdk import InvalidArguments
from plugin_sdk import Invocation
from plugin_sdk import Plugin
from plugin_sdk import PluginContext

__version__ = "0.1.0"


@attrs.frozen
class Settings:
    """The plugin's settings, set in its ``orion.toml`` table (see the module docstring)."""

    greeting: str = attrs.field(default="hello", metadata={"doc": "The word the hello operation greets with."})


class ${cls}(Plugin):
    """Greets whoever asks, with the configured greeting."""

    name = "${name}"
    version = __version__
    #: the plugin_sdk releases this plugin works with; the kernel refuses to load it with others
    sdk = "${sdk}"
    Config = Settings

    def __init__(self) -> None:
        self.greeting: str | None = None

    async def start(self, ctx: PluginContext[Settings]) -> None:
        self.greeting = ctx.settings.greeting
        ctx.register_operation(
            "${name}.hello",
            self.hello,
            doc="Greet someone with the configured greeting.",
            example_args={"who": "world"},
        )

    async def stop(self) -> None:
        # The kernel withdraws what start() registered through ctx; release the plugin's own
        # resources here, in a way that is safe to run twice.
        self.greeting = None

    async def hello(self, inv: Invocation) -> str:
        """Greet ``who`` (default: world) with the configured greeting."""
        # Arguments arrive as JSON-like data (they cross a process boundary under
        # isolation = "process"): check them here and answer mistakes with InvalidArguments.
        who = inv.args.get("who", "world")
        if not isinstance(who, str):
            raise InvalidArguments(inv.operation, [ConfigIssue("args.who", f"expected str, got {who!r}")])
        return f"{self.greeting}, {who}!"
''')

_TEST_PLUGIN: Final = Template('''\
"""The ${name} plugin, run by a real kernel."""

from typing import Any

import anyio
import pytest
from kernel import Kernel
from plugin_sdk import InvalidArguments

${import_plugin}

OPERATION = "${name}.hello"


def make_kernel(**settings: Any) -> Kernel:
    """A kernel running only this plugin, with ``settings`` as its settings."""
    plugin = ${cls}()
    config = {"plugins": {plugin.name: {"settings": settings}}}
    return Kernel(config, plugins=[plugin], environ={}, entry_points=False)


def invoke(kernel: Kernel, args: dict[str, Any]) -> Any:
    """Start ``kernel``, call the operation with ``args``, stop it; return the result."""

    async def call() -> Any:
        async with kernel:
            return await kernel.invoke(OPERATION, args)

    return anyio.run(call)


def test_hello_uses_the_default_greeting() -> None:
    assert invoke(make_kernel(), {"who": "world"}) == "hello, world!"


def test_hello_uses_the_configured_greeting() -> None:
    assert invoke(make_kernel(greeting="bonjour"), {"who": "Ada"}) == "bonjour, Ada!"


def test_hello_refuses_bad_arguments() -> None:
    with pytest.raises(InvalidArguments):
        invoke(make_kernel(), {"who": 42})
''')

_TEST_CONFORMANCE: Final = Template('''\
"""The SDK's conformance suite: one test per check, new checks arriving with new SDK releases."""

from plugin_sdk.testing import PluginConformance

${import_plugin}


class Test${cls}Conformance(PluginConformance):
    plugin = ${cls}
''')

_README: Final = Template("""\
# ${distribution}

The `${name}` plugin for [Orion Kernel](https://pypi.org/project/orion-kernel/):
it registers the operation `${name}.hello`, which greets whoever asks with the
configured greeting.

## Install

```bash
python -m pip install ${distribution}        # from an index, once published
python -m pip install -e '.[test]'            # from this directory, for development
```

## Enable it

The kernel finds the plugin through its `orion_kernel.plugins` entry point;
enable it in `orion.toml`:

```toml
[plugins.${name}]
enabled = true

[plugins.${name}.settings]
greeting = "hello"   # the word ${name}.hello greets with
```

Then call it:

```bash
orion-kernel invoke ${name}.hello --args '{"who": "world"}'
```

## Test

```bash
python -m pytest                      # tests/test_plugin.py and the conformance suite
orion-kernel conformance ${name}      # the same conformance checks, on the installed plugin
```

`tests/test_conformance.py` runs the SDK's conformance suite (manifest,
settings, start/stop, leaks, every operation answering its `example_args`)
as one test per check. Checks added by later SDK releases run without any
edit here.

## Publish

Bump `version` in `pyproject.toml` and `__version__` in
`src/${package}/__init__.py` together, then:

```bash
python -m pip install build twine
python -m build                       # dist/*.whl and dist/*.tar.gz
python -m twine check dist/*
python -m twine upload dist/*
```

## Compatibility

The plugin declares `sdk = "${sdk}"`: it is written against `plugin_sdk`
${sdk_major}.x, and the kernel refuses to load it (with a clear error naming the
plugin and its `sdk` field) under any other SDK. The SDK follows semantic
versioning: nothing a plugin uses breaks within a major version, so the range
stays valid for every ${sdk_major}.x release; a new major version means a new
range, after checking the plugin against it. For pip, the package depends on
`${kernel_requirement}`, the orion-kernel releases of the line it was
generated with (the distribution that ships `plugin_sdk`).
""")

_GITIGNORE: Final = """\
__pycache__/
*.egg-info/
build/
dist/
.orion/
"""


def render(name: str) -> dict[str, str]:
    """The files of the project for plugin ``name``, by path relative to the project directory."""
    check_name(name)
    package, cls, sdk = package_name(name), class_name(name), sdk_range()
    values = {
        "name": name,
        "distribution": distribution_name(name),
        "package": package,
        "cls": cls,
        "sdk": sdk,
        "sdk_major": str(Version(SDK_VERSION).major),
        "kernel_requirement": kernel_requirement(),
        "line_length": str(LINE_LENGTH),
        "import_plugin": _from_import(package, cls),
    }
    return {
        "pyproject.toml": _PYPROJECT.substitute(values),
        "README.md": _README.substitute(values),
        ".gitignore": _GITIGNORE,
        f"src/{package}/__init__.py": _MODULE.substitute(values),
        f"src/{package}/py.typed": "",
        "tests/test_plugin.py": _TEST_PLUGIN.substitute(values),
        "tests/test_conformance.py": _TEST_CONFORMANCE.substitute(values),
    }


# -- writing -----------------------------------------------------------------------------------------


def default_directory(name: str) -> Path:
    """Where ``new-plugin NAME`` writes without ``--dir``: ``./orion-NAME-with-dashes``."""
    return Path(distribution_name(name))


def _check_target(directory: Path) -> None:
    if directory.is_dir():
        if any(directory.iterdir()):
            raise ScaffoldError(f"{directory} already exists and is not empty; choose another --dir")
    elif directory.exists() or directory.is_symlink():
        raise ScaffoldError(f"{directory} already exists and is not a directory; choose another --dir")


def write_project(name: str, directory: Path) -> list[Path]:
    """Write the project for plugin ``name`` into ``directory`` (created, with its parents, if missing).

    :returns: the files written, in order.
    :raises ScaffoldError: ``name`` breaks the plugin name rules, or
        ``directory`` exists and is not an empty directory; nothing is
        written then.  When writing fails half-way (``OSError``) what was
        written is removed before the error propagates.
    """
    files = render(name)
    directory = Path(directory)
    _check_target(directory)
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    written: list[Path] = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for relative, text in files.items():
            path = directory / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    except OSError:
        if missing:  # remove what was created, up to the first directory that existed
            shutil.rmtree(missing[-1], ignore_errors=True)
        else:  # it was empty: empty it again
            for child in directory.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        raise
    return written


# -- the command -------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``new-plugin``: ``NAME`` and ``--dir PATH``."""
    parser.add_argument("name", metavar="NAME", help="the plugin's name: lowercase words joined by '_' (web_search)")
    parser.add_argument(
        "--dir",
        dest="dir",
        metavar="PATH",
        type=Path,
        default=None,
        help="where to write the project (default: ./orion-NAME, '_' as '-'); it must not exist or be empty",
    )


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Write the project and say what was written; the exit code.

    0: written; 2: a bad name or a directory in use (nothing written);
    1: the file system refused (what was written is removed).
    """
    name: str = args.name
    as_json = bool(getattr(args, "json", False))
    try:
        check_name(name)
        directory = Path(args.dir) if args.dir is not None else default_directory(name)
        written = write_project(name, directory)
    except (ScaffoldError, OSError) as exc:
        message = str(exc) if isinstance(exc, ScaffoldError) else f"cannot write the project: {exc}"
        if as_json:
            print(_json({"ok": False, "error": type(exc).__name__, "message": message}), file=out)
        else:
            print(f"error: {message}", file=out)
        return 2 if isinstance(exc, ScaffoldError) else 1
    relative = [path.relative_to(directory).as_posix() for path in written]
    if as_json:
        data = {"ok": True, "name": name, "directory": str(directory), "files": relative}
        print(_json(data), file=out)
        return 0
    print(f"wrote the {name} plugin project ({distribution_name(name)}) in {directory}:", file=out)
    for path in relative:
        print(f"  {path}", file=out)
    print(
        "next:\n"
        f"  cd {shlex.quote(str(directory))}\n"
        "  python -m pip install -e '.[test]'\n"
        "  python -m pytest\n"
        f"  orion-kernel conformance {name}",
        file=out,
    )
    return 0


def _json(data: object) -> str:
    import orjson

    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
