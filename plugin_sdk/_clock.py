"""Time for plugins that run on a schedule, replaceable in tests by a fake clock."""

from __future__ import annotations

import time
from typing import Protocol
from typing import final

import anyio


class Clock(Protocol):
    """Where a plugin gets the time and how it waits."""

    def now(self) -> float:
        """Seconds since the epoch."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""


@final
class SystemClock:
    """The real clock: :func:`time.time` and :func:`anyio.sleep`."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)
