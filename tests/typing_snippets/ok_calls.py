"""Hook calls that must pass ``mypy --strict``; test_typing.py also runs ``exercise()``.

No reveal_type: ``assert_type`` and annotated assignments state what the call
returns, so mypy fails this file if a result type is wrong.
"""

from typing import assert_type

import snippet_specs

from kernel import Kernel
from plugin_sdk import HealthStatus
from plugin_sdk import Plugin
from plugin_sdk import PluginState
from plugin_sdk import hookimpl
from plugin_sdk import hookspecs


def state_changed(kernel: Kernel) -> list[None]:
    results = kernel.hooks.call(
        hookspecs.plugin_state_changed, plugin="x", old=PluginState.RUNNING, new=PluginState.STOPPED
    )
    assert_type(results, list[None])
    return results


async def health(kernel: Kernel) -> list[HealthStatus | None]:
    statuses: list[HealthStatus | None] = await kernel.hooks.call(hookspecs.check_health)
    oks = [status.ok for status in statuses if status is not None]
    assert_type(oks, list[bool])
    return statuses


def custom_sync(kernel: Kernel) -> tuple[int | None, list[str]]:
    number = kernel.hooks.call(snippet_specs.pick, name="seven")
    assert_type(number, int | None)
    every = kernel.hooks.call(snippet_specs.names)
    assert_type(every, list[str])
    return number, every


async def custom_async(kernel: Kernel) -> tuple[list[bytes], str | None]:
    chunks = await kernel.hooks.call(snippet_specs.fetch, key="k", limit=2)
    assert_type(chunks, list[bytes])
    total: int = sum(len(chunk) for chunk in chunks)
    assert total >= 0
    address = await kernel.hooks.call(snippet_specs.resolve, host="example.org")
    assert_type(address, str | None)
    return chunks, address


class Answers(Plugin):
    """Implements every hook above, so exercise() sees real results."""

    name = "answers"

    @hookimpl
    def pick(self, name: str) -> int | None:
        return len(name)

    @hookimpl
    def names(self) -> str:
        return self.name

    @hookimpl
    async def fetch(self, key: str, limit: int) -> bytes:
        return key.encode()[:limit]

    @hookimpl
    async def resolve(self, host: str) -> str | None:
        return "192.0.2.1" if host == "example.org" else None

    @hookimpl
    async def check_health(self) -> HealthStatus:
        return HealthStatus(ok=True)


async def exercise() -> None:
    async with Kernel({}, plugins=[Answers()], hookspecs=[snippet_specs], environ={}) as kernel:
        assert state_changed(kernel) == []
        assert await health(kernel) == [HealthStatus(ok=True)]
        assert custom_sync(kernel) == (5, ["answers"])
        assert await custom_async(kernel) == ([b"k"], "192.0.2.1")
