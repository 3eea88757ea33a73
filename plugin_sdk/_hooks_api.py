"""How a plugin calls hooks: ``ctx.hooks``."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Generic
from typing import Protocol
from typing import TypeVar

import attrs

from ._markers import AsyncHookSpec
from ._markers import HookSpec
from ._markers import P
from ._markers import SyncHookSpec

R = TypeVar("R")
T = TypeVar("T")


@attrs.frozen
class HookOutcome(Generic[R]):
    """What one plugin's impl did in a :meth:`Hooks.call_each` call."""

    plugin: str
    #: the impl's return value (``None`` on error)
    value: R | None
    #: the exception it raised or ``HookTimeout``; ``None`` on success
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """The impl returned normally."""
        return self.error is None


class Hooks(Protocol):
    """Calling hooks, as the kernel and plugins do."""

    def call(self, spec: HookSpec[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call every impl per the spec's semantics; see ``kernel.HookRelay.call``."""

    def call_each(self, spec: SyncHookSpec[P, R], /, *args: P.args, **kwargs: P.kwargs) -> list[HookOutcome[R]]:
        """Call every impl of a sync hook and return each plugin's outcome (never raises for impls)."""

    def acall_each(
        self, spec: AsyncHookSpec[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> Awaitable[list[HookOutcome[R]]]:
        """Like :meth:`call_each` for async hooks: impls run concurrently under the
        spec's deadline; an impl still running at the deadline gets ``HookTimeout``."""
