"""Hooks of a plugin's own, declared the way plugin authors do (used by the other snippets)."""

from plugin_sdk import hookspec


@hookspec(firstresult=True)
def pick(name: str) -> int | None:
    """The first plugin that knows ``name`` answers with its number."""
    raise NotImplementedError


@hookspec()
def names() -> str:
    """Every plugin contributes a name."""
    raise NotImplementedError


@hookspec(timeout=1.0)
async def fetch(key: str, limit: int) -> bytes:
    """Every plugin returns up to ``limit`` bytes for ``key``."""
    raise NotImplementedError


@hookspec(firstresult=True)
async def resolve(host: str) -> str | None:
    """The first plugin that can resolve ``host`` answers."""
    raise NotImplementedError
