"""The notes file: a JSON document, read whole and replaced whole.

The file looks like ``{"format": 1, "notes": [{"id": 1, "text": "...", "created": "..."}]}``.
It is written to a temporary file in the same directory, flushed to disk, and
moved over the old one with :func:`os.replace`, so a crash at any point leaves
either the old file or the new one, never a torn one.

Everything here is synchronous and small (the store is bounded by the plugin's
``max_notes`` setting), so the plugin calls it inline: no worker thread that
could outlive the plugin's ``stop()``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any
from typing import Final

#: the version of the file layout written by this package
FORMAT: Final = 1


class StoreError(Exception):
    """The notes file exists but cannot be read or understood; the message says why."""


def _note(item: object, index: int) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise StoreError(f"notes[{index}] is not an object")
    note_id, text, created = item.get("id"), item.get("text"), item.get("created")
    if type(note_id) is not int or not isinstance(text, str) or not isinstance(created, str):
        raise StoreError(f"notes[{index}] needs an integer 'id', a string 'text' and a string 'created'")
    return {"id": note_id, "text": text, "created": created}


def load(path: Path) -> list[dict[str, Any]]:
    """The notes in ``path``, oldest first; no file means no notes.

    :raises StoreError: the file cannot be read, is not JSON, or is not a notes file.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("notes"), list):
        raise StoreError(f'{path} is not a notes file (expected {{"format": {FORMAT}, "notes": [...]}})')
    if document.get("format") != FORMAT:
        raise StoreError(f"{path} has format {document.get('format')!r}; this version reads format {FORMAT}")
    return [_note(item, index) for index, item in enumerate(document["notes"])]


def save(path: Path, notes: list[dict[str, Any]]) -> None:
    """Replace ``path`` with ``notes``, atomically.

    :raises OSError: the directory is not writable, the disk is full, ...
        (the old file is then left as it was, and no temporary file is left behind).
    """
    data = json.dumps({"format": FORMAT, "notes": notes}, ensure_ascii=False, indent=1).encode()
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    # Make the rename itself durable; not every platform or file system can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
