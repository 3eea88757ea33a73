"""The ``notes`` plugin: a small persistent notes store for agents.

It is written against ``plugin_sdk`` only, as any third-party plugin is:

* settings in an attrs ``Config`` (:class:`NotesSettings`), checked by the kernel;
* one permission asked for: writing files in its own data directory;
* the ``notes`` service (:class:`NotesService`) for other plugins;
* the ``notes.add`` and ``notes.search`` operations for callers of ``kernel.invoke``;
* the ``check_health`` hook.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs

from plugin_sdk import ConfigIssue
from plugin_sdk import HealthStatus
from plugin_sdk import InvalidArguments
from plugin_sdk import Invocation
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import ServiceUnavailable
from plugin_sdk import hookimpl

from . import store

__all__ = ["Notes", "NotesFull", "NotesService", "NotesSettings"]


def _at_least_one(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"'{attribute.name}' must be at least 1, got {value!r}")


def _plain_file_name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value or value in (".", "..") or "/" in value or "\\" in value or "\x00" in value:
        raise ValueError(f"'{attribute.name}' must be a plain file name (no directories), got {value!r}")


@attrs.frozen
class NotesSettings:
    """``[plugins.notes.settings]`` in ``orion.toml``."""

    #: how many notes the store holds; ``notes.add`` refuses one more
    max_notes: int = attrs.field(default=1000, validator=_at_least_one)
    #: the longest note, in characters
    max_text_length: int = attrs.field(default=4000, validator=_at_least_one)
    #: the JSON file in the plugin's data directory
    file_name: str = attrs.field(default="notes.json", validator=_plain_file_name)


class NotesFull(ServiceUnavailable):
    """The store holds ``max_notes`` notes already."""


def _text_argument(operation: str, args: Mapping[str, Any], name: str, limit: int | None = None) -> str:
    """The non-empty string argument ``name``; any other argument is refused too."""
    issues = [ConfigIssue(f"args.{key}", f"unknown argument (expected only {name!r})") for key in args if key != name]
    value = args.get(name)
    if name not in args:
        issues.append(ConfigIssue(f"args.{name}", "required argument is missing"))
    elif not isinstance(value, str):
        issues.append(ConfigIssue(f"args.{name}", f"expected a string, got {type(value).__name__}"))
    elif not value.strip():
        issues.append(ConfigIssue(f"args.{name}", "must not be empty"))
    elif limit is not None and len(value) > limit:
        issues.append(ConfigIssue(f"args.{name}", f"is {len(value)} characters long; at most {limit} are allowed"))
    if issues:
        raise InvalidArguments(operation, issues)
    assert isinstance(value, str)
    return value


class NotesService:
    """The ``notes`` service: what other plugins get from ``ctx.service("notes")``.

    Every method raises :class:`plugin_sdk.ServiceUnavailable` once the plugin
    has stopped, or while its file could not be read at start (the file is
    then left untouched for the operator to fix).
    """

    def __init__(self, path: Path, settings: NotesSettings, notes: list[dict[str, Any]], error: str | None) -> None:
        self.path = path
        self.settings = settings
        self._notes = notes
        #: why the store is unusable (a bad file at start), or None
        self.load_error = error
        #: why the last write failed, or None once a write succeeds again
        self.write_error: str | None = None
        self._closed = False

    def _usable(self) -> list[dict[str, Any]]:
        if self._closed:
            raise ServiceUnavailable("notes: the plugin is not running")
        if self.load_error is not None:
            raise ServiceUnavailable(f"notes: the store is unusable: {self.load_error}")
        return self._notes

    def close(self) -> None:
        self._closed = True

    async def add(self, text: str) -> dict[str, Any]:
        """Store ``text`` as a new note and return it (``id``, ``text``, ``created``).

        :raises ValueError: ``text`` is empty or longer than ``max_text_length``.
        :raises NotesFull: the store holds ``max_notes`` notes already.
        :raises ServiceUnavailable: the note could not be written (nothing is stored).
        """
        notes = self._usable()
        if not isinstance(text, str) or not text.strip():
            raise ValueError("a note needs some text")
        if len(text) > self.settings.max_text_length:
            raise ValueError(f"a note may be at most {self.settings.max_text_length} characters long")
        if len(notes) >= self.settings.max_notes:
            raise NotesFull(f"notes: the store is full ({self.settings.max_notes} notes, the max_notes setting)")
        note = {
            "id": max((n["id"] for n in notes), default=0) + 1,
            "text": text,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        # No await between the change and the write: concurrent adds cannot interleave.
        try:
            store.save(self.path, [*notes, note])
        except OSError as exc:
            self.write_error = f"cannot write {self.path}: {exc.strerror or exc}"
            raise ServiceUnavailable(f"notes: {self.write_error}") from exc
        notes.append(note)
        self.write_error = None
        return dict(note)

    async def search(self, query: str) -> list[dict[str, Any]]:
        """The notes whose text contains ``query`` (case-insensitive), oldest first."""
        notes = self._usable()
        needle = query.casefold()
        return [dict(note) for note in notes if needle in note["text"].casefold()]

    async def count(self) -> int:
        """How many notes are stored."""
        return len(self._usable())

    def health(self) -> HealthStatus:
        if self.load_error is not None:
            return HealthStatus(ok=False, reason=f"store unreadable: {self.load_error}")
        if self.write_error is not None:
            return HealthStatus(ok=False, reason=f"last write failed: {self.write_error}")
        count, limit = len(self._notes), self.settings.max_notes
        if count > limit:
            return HealthStatus(ok=False, reason=f"{count} notes stored, over max_notes = {limit}")
        return HealthStatus(ok=True, reason=f"{count} of {limit} notes")


class Notes(Plugin):
    """A persistent notes store: the ``notes`` service and the ``notes.add`` / ``notes.search`` operations."""

    name = "notes"
    version = "1.0.0"
    sdk = ">=1.0,<2"
    provides = ("notes",)
    #: files directly in its own data directory (the notes file and its temporary sibling)
    permissions = ("fs:write:{data_dir}/*",)
    Config = NotesSettings

    def __init__(self) -> None:
        self._service: NotesService | None = None

    async def start(self, ctx: PluginContext[NotesSettings]) -> None:
        settings = ctx.settings
        path = ctx.data_dir / settings.file_name
        error = None
        try:
            notes = store.load(path)
        except store.StoreError as exc:
            notes, error = [], str(exc)
            ctx.log.error("%s; the store refuses calls until the file is fixed or removed", error)
        service = NotesService(path, settings, notes, error)
        self._service = service
        ctx.provide("notes", service)
        ctx.register_operation(
            "notes.add",
            self._add,
            doc="Store a note; returns it with its id and creation time.",
            example_args={"text": "remember the milk"},
        )
        ctx.register_operation(
            "notes.search",
            self._search,
            doc="The notes containing a text (case-insensitive), oldest first.",
            example_args={"query": "milk"},
        )
        ctx.log.info("%d note(s) in %s", len(notes), path)

    async def stop(self) -> None:
        # Every write is complete when add() returns, so there is nothing to flush;
        # stopping twice (or before a start) is a no-op.
        service, self._service = self._service, None
        if service is not None:
            service.close()

    def _running(self) -> NotesService:
        if self._service is None:
            raise ServiceUnavailable("notes: the plugin is not running")
        return self._service

    async def _add(self, inv: Invocation) -> dict[str, Any]:
        service = self._running()
        text = _text_argument(inv.operation, inv.args, "text", service.settings.max_text_length)
        return await service.add(text)

    async def _search(self, inv: Invocation) -> list[dict[str, Any]]:
        service = self._running()
        return await service.search(_text_argument(inv.operation, inv.args, "query"))

    @hookimpl
    async def check_health(self) -> HealthStatus | None:
        """Unhealthy when the file could not be read, the last write failed, or the store is over ``max_notes``."""
        if self._service is None:
            return None
        return self._service.health()
