"""Failed-attempt throttling: after too many failures a subject is refused for a while, valid or not.

A subject is what an attempt claimed to be (an API key id, a JWT's kid and
sub, or the caller's source when neither is known).  Memory is bounded: at
most ``max_tracked`` subjects are kept, the one whose last failure is oldest
is forgotten first.  A success forgets the subject's failures.
"""

from __future__ import annotations

from plugin_sdk import AuthenticationThrottled


class _Entry:
    __slots__ = ("failures", "locked_until")

    def __init__(self) -> None:
        self.failures: list[float] = []
        self.locked_until = 0.0


class Throttle:
    """Counts failures per subject; :meth:`check` raises while a subject is locked out."""

    def __init__(self, *, max_failures: int, window: float, lockout: float, max_tracked: int) -> None:
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self.max_tracked = max_tracked
        self._entries: dict[str, _Entry] = {}  # insertion order = order of the last failure

    def __len__(self) -> int:
        return len(self._entries)

    def check(self, subject: str, now: float) -> None:
        """:raises AuthenticationThrottled: ``subject`` is locked out at ``now``."""
        entry = self._entries.get(subject)
        if entry is not None and entry.locked_until > now:
            raise AuthenticationThrottled(subject, entry.locked_until - now)

    def failed(self, subject: str, now: float) -> bool:
        """Count one failure; ``True`` when it locks the subject out."""
        entries = self._entries
        entry = entries.pop(subject, None)
        if entry is None:
            entry = _Entry()
            while len(entries) >= self.max_tracked:
                del entries[next(iter(entries))]
        entries[subject] = entry  # now the newest
        horizon = now - self.window
        failures = [t for t in entry.failures if t > horizon]
        failures.append(now)
        if len(failures) >= self.max_failures:
            entry.locked_until = now + self.lockout
            entry.failures = []
            return True
        entry.failures = failures
        return False

    def succeeded(self, subject: str) -> None:
        if self._entries:
            self._entries.pop(subject, None)

    def locked(self, now: float) -> list[str]:
        """The subjects locked out at ``now``."""
        return [subject for subject, entry in self._entries.items() if entry.locked_until > now]
