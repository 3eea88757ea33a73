"""Durable, private file writes: what a plugin keeping keys or state in its data directory needs."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new entry in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``, atomically and durably.

    The data goes to a temporary file in the same directory, created with
    ``mode`` (0600 by default: never chmod-ed afterwards, so it is never
    readable by others, not even for a moment), is fsynced, replaces ``path``
    with ``os.replace``, and the directory is fsynced: after a crash the file
    holds the old content or the new, never a mix.  On any error the
    temporary file is removed and ``path`` is untouched.
    """
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")  # no `secrets`: it loads OpenSSL
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
