"""docs/plugins.md stays true: its hook reference is generated, its examples run.

The hook reference between ``<!-- hooks:begin -->`` and ``<!-- hooks:end -->``
is produced by :func:`render_hook_reference` from :mod:`plugin_sdk.hookspecs`
(signatures, options and docstrings).  After changing a hookspec, rewrite it::

    python tests/test_plugin_guide.py --write
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from typing import Final

import plugin_sdk
from plugin_sdk import HookSpec
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import hookspecs
from plugin_sdk._markers import PROJECT

ROOT: Final = Path(__file__).resolve().parent.parent
GUIDE: Final = ROOT / "docs" / "plugins.md"
BEGIN: Final = "<!-- hooks:begin -->"
END: Final = "<!-- hooks:end -->"
WRITE_COMMAND: Final = "python tests/test_plugin_guide.py --write"


# -- the generated hook reference ------------------------------------------------------------------


def spec_functions() -> list[tuple[object, Callable[..., Any]]]:
    """Every hookspec of :mod:`plugin_sdk.hookspecs`, in source order: ``(handle, function)``.

    ``@hookspec`` marks the function the way pluggy does, with an attribute
    named ``<project>_spec`` (``orion_spec``), and binds the module name to a
    typed handle whose ``__wrapped__`` is that function.
    """
    marker = f"{PROJECT}_spec"
    found: dict[int, tuple[object, Callable[..., Any]]] = {}
    for value in vars(hookspecs).values():
        function = inspect.unwrap(value) if hasattr(value, "__wrapped__") else value
        if inspect.isfunction(function) and hasattr(function, marker):
            found.setdefault(id(function), (value, function))
    return sorted(found.values(), key=lambda pair: pair[1].__code__.co_firstlineno)


class _Source(str):
    """An annotation kept as written in the source (``from __future__ import annotations``)."""

    def __repr__(self) -> str:
        return str(self)


def _as_written(annotation: object) -> object:
    return _Source(annotation) if isinstance(annotation, str) else annotation


def signature_of(function: Callable[..., Any]) -> str:
    """``async def name(arg: Type) -> Result``, annotations as the source spells them."""
    signature = inspect.signature(function)
    parameters = [p.replace(annotation=_as_written(p.annotation)) for p in signature.parameters.values()]
    shown = signature.replace(parameters=parameters, return_annotation=_as_written(signature.return_annotation))
    prefix = "async def" if inspect.iscoroutinefunction(function) else "def"
    return f"{prefix} {function.__name__}{shown}"


def options_line(spec: HookSpec[Any, Any]) -> str:
    """How the hook is called, from its :class:`plugin_sdk.SpecOptions`."""
    options = spec.options
    if options.is_async:
        kind = "async, impls run concurrently" if options.concurrent else "async, impls awaited in plugin order"
    else:
        kind = "sync, impls called in plugin order"
    result = "the first non-`None` result" if options.firstresult else "the list of non-`None` results"
    override = f"`kernel.hook_timeouts.{options.name}`"
    if options.timeout is None:
        deadline = f"no default deadline ({override} sets one)"
    else:
        deadline = f"deadline {options.timeout:g} s for the whole call ({override} overrides it)"
    who = "every loaded plugin" if options.participants == "loaded" else "running plugins"
    parts = [kind, f"the call returns {result}", f"policy `{options.policy}`", deadline, f"called on {who}"]
    if options.sensitive:
        parts.append(f"sensitive: implementing it needs `hook:{options.name}`")
    return "**Call:** " + "; ".join(parts) + "."


_ROLE: Final = re.compile(r":[a-z]+:`(~?)([^`]+)`")
_LITERAL: Final = re.compile(r"``([^`]+)``")
_FIELD: Final = re.compile(r"^:(param|returns?|raises)\s*([^:]*):\s*(.*)$")


def _inline(text: str) -> str:
    text = _ROLE.sub(lambda m: f"`{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}`", text)
    return _LITERAL.sub(r"`\1`", text)


def docstring_markdown(doc: str) -> str:
    """A Sphinx-style docstring as Markdown: roles and literals become code spans,
    ``:param x:`` / ``:returns:`` / ``:raises E:`` fields become a list."""
    lines: list[str] = []
    for line in doc.splitlines():
        match = _FIELD.match(line)
        if match:
            kind, name, text = match.groups()
            if kind == "param":
                head = f"- `{name.strip()}`:"
            elif kind == "raises":
                head = f"- raises `{name.strip()}`:"
            else:
                head = "- returns:"
            lines.append(f"{head} {text.strip()}".rstrip())
        elif line[:1] == " " and line.strip() and lines and lines[-1].startswith("- "):
            lines[-1] += " " + line.strip()  # a field's continuation line
        else:
            lines.append(line)
    text = "\n".join(lines)
    text = re.sub(r"(?m)^(- .*)\n\n(?=- )", r"\1\n", text)  # fields apart: still one list
    text = re.sub(r"(?m)^(?!- )(.+)\n(?=- )", r"\1\n\n", text)  # a blank line before the list
    return _inline(text).strip()


def render_hook_reference() -> str:
    """The Markdown between the hook reference markers of docs/plugins.md."""
    sections = []
    for handle, function in spec_functions():
        lines = [f"### `{function.__name__}`", "", "```python", signature_of(function), "```", ""]
        if isinstance(handle, HookSpec):
            lines += [options_line(handle), ""]
        doc = inspect.getdoc(function)
        lines.append(docstring_markdown(doc) if doc else "(no docstring)")
        sections.append("\n".join(lines))
    return "\n" + "\n\n".join(sections) + "\n"


def guide_block(text: str) -> str:
    """What stands between the markers in ``text``."""
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise ValueError(f"{GUIDE.name} must hold {BEGIN} and {END} exactly once each")
    return text.split(BEGIN, 1)[1].split(END, 1)[0]


def rewrite_guide(path: Path = GUIDE) -> bool:
    """Put the fresh reference between the markers; return whether the file changed."""
    text = path.read_text()
    block = guide_block(text)
    fresh = render_hook_reference()
    if block == fresh:
        return False
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    path.write_text(f"{head}{BEGIN}{fresh}{END}{tail}")
    return True


def test_hook_reference_matches_the_hookspecs() -> None:
    block = guide_block(GUIDE.read_text())
    assert block == render_hook_reference(), (
        "the hook reference in docs/plugins.md is out of date with plugin_sdk/hookspecs.py; "
        f"run `{WRITE_COMMAND}` to rewrite it"
    )


def test_the_reference_covers_every_hookspec() -> None:
    names = {function.__name__ for _, function in spec_functions()}
    handles = {value.name for value in vars(hookspecs).values() if isinstance(value, HookSpec)}
    assert names == handles
    assert "check_health" in names


def test_every_type_in_a_hook_signature_is_exported_by_the_sdk() -> None:
    # The guide tells authors to import these names from plugin_sdk.
    builtins = {"None", "list", "dict", "str", "int", "float", "bool", "tuple", "Mapping", "Sequence", "Literal"}
    for _, function in spec_functions():
        words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", signature_of(function).partition("(")[2]))
        for name in words - builtins:
            if name in inspect.signature(function).parameters:
                continue
            assert name in plugin_sdk.__all__, f"{function.__name__}: {name} is not exported by plugin_sdk"


def test_docstring_fields_become_a_list() -> None:
    doc = "Do it.\n\nMore text, ``code``.\n\n:param x: the x,\n    continued.\n:returns: :class:`~a.B`."
    assert docstring_markdown(doc) == "Do it.\n\nMore text, `code`.\n\n- `x`: the x, continued.\n- returns: `B`."


# -- the rest of the guide ---------------------------------------------------------------------------


def test_the_checks_list_has_its_markers() -> None:
    text = GUIDE.read_text()
    assert text.count("<!-- checks:begin -->") == 1
    assert text.count("<!-- checks:end -->") == 1


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", GUIDE.read_text(), flags=re.S | re.M)


def _files() -> dict[str, str]:
    """Python blocks whose first line names a file: ``# orion_glossary/__init__.py``."""
    found = {}
    for block in _blocks("python"):
        first, _, _ = block.partition("\n")
        match = re.fullmatch(r"# ([\w/]+\.py)", first.strip())
        if match:
            found[match.group(1)] = block
    return found


def test_every_python_block_compiles() -> None:
    blocks = _blocks("python")
    assert blocks
    for index, block in enumerate(blocks):
        if re.fullmatch(r"(async )?def \w+\(.*\) -> .+\n", block):
            block = block.rstrip() + ": ...\n"  # a signature from the hook reference
        compile(block, f"docs/plugins.md python block {index}", "exec")


def test_every_toml_block_parses() -> None:
    for block in _blocks("toml"):
        tomllib.loads(block)


def _project(tmp_path: Path) -> Path:
    files = _files()
    for name, code in files.items():
        if name.startswith("tests/"):
            continue  # needs plugin_sdk.testing.PluginConformance
        target = tmp_path / "src" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code)
    return tmp_path / "src"


def _run(tmp_path: Path, script: str) -> str:
    src = _project(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORION__")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_first_plugin_runs(tmp_path: Path) -> None:
    out = _run(tmp_path, _files()["app.py"])
    assert out.splitlines() == ["['hook', 'hookspec']"]


def test_the_hook_example_runs(tmp_path: Path) -> None:
    out = _run(
        tmp_path,
        """
        import anyio
        from kernel import Kernel
        from dictionary import Dictionary
        from wordlist import Wordlist

        async def main():
            async with Kernel({}, plugins=[Dictionary, Wordlist], environ={}) as kernel:
                print(await kernel.invoke("dictionary.define", {"term": "hook"}))
                print(await kernel.invoke("dictionary.define", {"term": "zebra"}))
            async with Kernel({}, plugins=[Wordlist], environ={}) as kernel:  # optional=True: no spec, no error
                print(kernel.plugins["wordlist"].state.value)

        anyio.run(main)
        """,
    )
    assert out.splitlines() == ["a named extension point", "None", "running"]


def test_the_service_and_state_examples_run(tmp_path: Path) -> None:
    out = _run(
        tmp_path,
        """
        import anyio
        from kernel import Kernel
        from glossary_user import GlossaryUser
        from orion_glossary import Glossary
        from state_logger import StateLogger

        async def main():
            config = {"plugins": {"glossary": {"settings": {"terms": {"hook": "h"}}}}}
            async with Kernel(config, plugins=[Glossary, GlossaryUser, StateLogger], environ={}) as kernel:
                print(kernel.plugins["glossary_user"].state.value, kernel.plugins["state_logger"].hooks)
            async with Kernel({}, plugins=[GlossaryUser], environ={}) as kernel:
                print(kernel.plugins["glossary_user"].last_error)

        anyio.run(main)
        """,
    )
    lines = [line for line in out.splitlines() if " is now " not in line]  # state_logger's, in no fixed order
    assert lines == [
        "running ('plugin_state_changed',)",
        "requires service 'glossary', which no enabled plugin provides",
    ]


def test_the_middleware_example_runs(tmp_path: Path) -> None:
    out = _run(
        tmp_path,
        """
        import anyio
        from kernel import Kernel
        from orion_glossary import Glossary
        from require_caller import RequireCaller
        from plugin_sdk import PermissionDenied, Principal

        async def main():
            config = {"plugins": {"glossary": {"settings": {"terms": {"hook": "h"}}}}}
            async with Kernel(config, plugins=[Glossary, RequireCaller], environ={}) as kernel:
                try:
                    await kernel.invoke("glossary.search", {"prefix": "h"})
                except PermissionDenied as exc:
                    print("denied:", exc)
                print(await kernel.invoke("glossary.search", {"prefix": "h"}, principal=Principal("ada")))

        anyio.run(main)
        """,
    )
    assert out.splitlines() == ["denied: glossary.search needs a caller", "['hook']"]


def test_the_manifest_table_names_real_attributes() -> None:
    text = GUIDE.read_text()
    section = text.split("## The manifest", 1)[1].split("\n## ", 1)[0]
    names = re.findall(r"^\| `(\w+)` \|", section, flags=re.M)
    assert names, "no manifest table found"
    for name in names:
        assert name == "reconfigure" or hasattr(Plugin, name), f"Plugin has no attribute {name!r}"
    for name in ("name", "version", "sdk", "requires", "optional", "provides", "permissions", "Config"):
        assert name in names


def test_every_ctx_member_the_guide_names_exists() -> None:
    text = GUIDE.read_text()
    absent = {"invoke"}  # "There is no `ctx.invoke`": if one is added, the guide must say so
    for name in sorted(set(re.findall(r"`ctx\.(\w+)", text)) - absent):
        assert hasattr(PluginContext, name), f"PluginContext has no {name!r}"
    for name in absent:
        assert not hasattr(PluginContext, name), f"PluginContext has {name!r} now: update docs/plugins.md"
    for name in ("call", "call_each", "acall_each"):
        assert f"ctx.hooks.{name}" in text


def test_every_plugin_sdk_name_the_guide_imports_exists() -> None:
    for block in _blocks("python"):
        for names in re.findall(r"^from plugin_sdk import (.+)$", block, flags=re.M):
            for name in (n.strip() for n in names.split(",")):
                assert name in plugin_sdk.__all__, f"plugin_sdk does not export {name!r}"


# -- python tests/test_plugin_guide.py --write -------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check or rewrite the hook reference of docs/plugins.md.")
    parser.add_argument("--write", action="store_true", help="rewrite the block between the markers")
    args = parser.parse_args(argv)
    if args.write:
        changed = rewrite_guide()
        print(f"{GUIDE.relative_to(ROOT)}: {'hook reference rewritten' if changed else 'already up to date'}")
        return 0
    if guide_block(GUIDE.read_text()) != render_hook_reference():
        print(f"{GUIDE.relative_to(ROOT)}: the hook reference is out of date; run `{WRITE_COMMAND}`")
        return 1
    print(f"{GUIDE.relative_to(ROOT)}: the hook reference is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
