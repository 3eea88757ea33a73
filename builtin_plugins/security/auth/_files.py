"""Files with secrets: created 0600, written atomically, read back strictly.

A write goes to a temporary file in the same directory (created with mode
0600 by ``os.open``, never chmod-ed afterwards), is fsynced, replaces the
target with ``os.replace`` and the directory is fsynced, so a crash leaves
either the old or the new content, never a mix.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import orjson

from plugin_sdk import SecretNotFound
from plugin_sdk import write_file_atomic as write_atomic

FILE_MODE = 0o600


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or ``None`` when it does not exist.

    :raises ValueError: not JSON (the message names the file, not its content).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ValueError(f"{path} is not valid JSON (corrupted?)") from None


class LocalSecrets:
    """The fallback secret store when no ``secrets`` service runs: a 0600 JSON file, unencrypted at rest.

    Holds the same names the plugin would keep in the secret store
    (``auth.hash_key``, ``auth.jwt.*``).  Read with ``await get(name)`` like a
    :class:`~plugin_sdk.SecretStore`; changes are staged and written together
    by :meth:`commit`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._values: dict[str, str] | None = None
        self._pending = False

    def _load(self) -> dict[str, str]:
        if self._values is None:
            data = read_json(self.path)
            if data is None:
                data = {}
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                raise ValueError(f"{self.path} does not hold a JSON object of strings")
            self._values = data
        return self._values

    def exists(self) -> bool:
        return self.path.exists()

    def has(self, name: str) -> bool:
        return name in self._load()

    async def get(self, name: str) -> str:
        try:
            return self._load()[name]
        except KeyError:
            raise SecretNotFound(name) from None

    def stage(self, name: str, value: str | None) -> None:
        """Set (or, with ``None``, remove) a value in memory; :meth:`commit` writes what was staged."""
        values = dict(self._load())
        if value is None:
            values.pop(name, None)
        else:
            values[name] = value
        self._values = values
        self._pending = True

    def commit(self) -> None:
        """Write the staged values in one atomic write (or remove the file when none is left).

        Sync on purpose: it runs once, on the first start, and one small fsync'd write is
        cheaper than a worker-thread round trip per secret.
        """
        if not self._pending:
            return
        values = self._load()
        if values:
            write_atomic(self.path, orjson.dumps(values, option=orjson.OPT_SORT_KEYS))
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self._pending = False

    def __repr__(self) -> str:
        return f"<LocalSecrets {str(self.path)!r}>"
