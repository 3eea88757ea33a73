"""Start-up: 50 trivial plugins from nothing to running, vs importing the kernel alone.

Both run in fresh interpreter processes, interleaved, so drift hits both
alike (goal: start-to-running of 50 plugins <= 1.5x ``import kernel``).
Also checks that ``import kernel`` imports no plugin and no optional
dependency.

Run: python benchmarks/bench_startup.py [rounds]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _common import machine

PLUGINS = 50

MODULE = textwrap.dedent(
    """
    from plugin_sdk import Plugin

    def _make(i):
        class Trivial(Plugin):
            name = f"p{i}"
            version = "1.0.0"
            provides = (f"s{i}",)
            requires = (f"s{i - 1}",) if i % 5 else ()

            async def start(self, ctx):
                ctx.provide(f"s{i}", self)

        return Trivial

    PLUGINS = [_make(i)() for i in range(COUNT)]
    """
).replace("COUNT", str(PLUGINS))

IMPORT_ONLY = "import kernel"
START = textwrap.dedent(
    """
    import anyio
    import kernel
    import trivial_plugins

    async def main():
        async with kernel.Kernel({}, plugins=trivial_plugins.PLUGINS, environ={}) as k:
            states = {i.state.value for i in k.plugins.values()}
            assert states == {"running"}, states

    anyio.run(main)
    """
)
CHECK_IMPORTS = textwrap.dedent(
    """
    import sys
    import kernel
    bad = sorted(m for m in sys.modules if m.split(".")[0] in {"builtin_plugins", "trio", "trivial_plugins"})
    print(",".join(bad))
    """
)


def timed(code: str, cwd: str) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=cwd, check=True)
    return time.perf_counter() - began


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "trivial_plugins.py").write_text(MODULE)
        leaked = subprocess.run(
            [sys.executable, "-c", CHECK_IMPORTS], cwd=tmp, check=True, capture_output=True, text=True
        )
        timed(IMPORT_ONLY, tmp), timed(START, tmp)  # warm-up
        imports, starts = [], []
        for _ in range(rounds):
            imports.append(timed(IMPORT_ONLY, tmp))
            starts.append(timed(START, tmp))
    base, ours = statistics.median(imports), statistics.median(starts)
    print("# start-up (fresh processes, median of %d interleaved rounds)" % rounds)
    print(f"# machine: {machine()}")
    print(f"{'import kernel (baseline)':<58} {base * 1000:8.1f} ms")
    ratio = ours / base
    print(
        f"{f'start {PLUGINS} trivial plugins to running, then stop':<58} {ours * 1000:8.1f} ms"
        f" = {ratio:4.2f}x  (goal <= 1.5x: {'met' if ratio <= 1.5 else 'MISSED'})"
    )
    print(f"modules from plugins or optional deps imported by 'import kernel': {leaked.stdout.strip() or 'none'}")


if __name__ == "__main__":
    main()
