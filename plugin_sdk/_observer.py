"""The dispatch observer: how monitoring sees every hook call and every invoke."""

from __future__ import annotations

from typing import Literal
from typing import Protocol
from typing import TypeAlias

#: how one impl call or one invoke ended
Outcome: TypeAlias = Literal["ok", "error", "timeout"]


class DispatchObserver(Protocol):
    """Receives one event per hook impl call and one per invoke.

    Called synchronously on the hot path: keep both methods cheap and never
    raise (an observer that raises is removed and the error logged).  When no
    observer is attached the kernel runs code without any observer call at all.

    An observer may also define ``hook_recorder(hook, plugin)`` returning a
    ``Callable[[float, Outcome], None]`` (or ``None``): the kernel then asks
    for one recorder per hook impl whenever the set of running plugins
    changes, and calls it with ``(duration, outcome)`` instead of
    ``on_hook`` (sync hooks), saving the observer a lookup per call.
    """

    def on_hook(self, hook: str, plugin: str, duration: float, outcome: Outcome) -> None:
        """One hook impl of ``plugin`` ran for ``duration`` seconds and ended with ``outcome``."""

    def on_invoke(self, operation: str, duration: float, outcome: Outcome) -> None:
        """One ``kernel.invoke(operation)`` took ``duration`` seconds and ended with ``outcome``."""
