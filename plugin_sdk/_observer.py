"""The dispatch observer: how monitoring sees every hook call and every invoke."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import Literal
from typing import Protocol
from typing import TypeAlias

import attrs

#: how one impl call or one invoke ended
Outcome: TypeAlias = Literal["ok", "error", "timeout"]


@attrs.frozen
class HookSampling:
    """How an observer wants the calls of one sync hook measured: latency sampled, counts exact.

    Timing an impl call costs as much as a trivial impl itself (a clock read
    and a record each), so an observer on a hot path may ask the kernel to
    time at most one call of the hook per ``interval`` seconds, through its
    per-impl recorders as usual, and to report every other call once, with
    no clock read per impl, as ``count(ran, failures)``:

    * ``ran``: how many of the hook's impls, in call order, were called (all
      of them, or fewer when a ``firstresult`` impl answered, an impl ran
      past the deadline or a ``fail_fast`` impl raised);
    * ``failures``: ``(index, outcome)`` of each impl among them that raised
      (``"error"``) or ran past the deadline (``"timeout"``); usually empty.

    A hook called less often than once per ``interval`` is timed on every
    call; ``interval = 0`` times every call.
    """

    #: seconds: at most one timed call of this hook per interval
    interval: float
    #: ``count(ran, failures)``, called once per untimed call
    count: Callable[[int, Sequence[tuple[int, Outcome]]], None]


class DispatchObserver(Protocol):
    """Receives one event per hook impl call and one per invoke.

    Called synchronously on the hot path: keep both methods cheap and never
    raise (an observer that raises is removed and the error logged).  When no
    observer is attached the kernel runs code without any observer call at all.

    Two optional methods make an observer cheaper still; the kernel looks
    them up whenever the set of running plugins changes:

    * ``hook_recorder(hook, plugin)`` returning a
      ``Callable[[float, Outcome], None]`` (or ``None``): the kernel calls it
      with ``(duration, outcome)`` instead of ``on_hook`` for sync hooks,
      saving the observer a lookup per call;
    * ``hook_sampling(hook, plugins)`` returning a :class:`HookSampling` (or
      ``None``), ``plugins`` being the hook's impls in call order: the kernel
      then times a sync hook's calls at most once per ``interval`` and
      reports the others as counts only (see :class:`HookSampling`).
    """

    def on_hook(self, hook: str, plugin: str, duration: float, outcome: Outcome) -> None:
        """One hook impl of ``plugin`` ran for ``duration`` seconds and ended with ``outcome``."""

    def on_invoke(self, operation: str, duration: float, outcome: Outcome) -> None:
        """One ``kernel.invoke(operation)`` took ``duration`` seconds and ended with ``outcome``."""
