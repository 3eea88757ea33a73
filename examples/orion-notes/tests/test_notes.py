"""The notes plugin in a real kernel: operations, the service, persistence, settings, health, stop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from orion_notes import Notes
from orion_notes import NotesFull
from orion_notes import NotesService

from kernel import Kernel
from plugin_sdk import ConfigError
from plugin_sdk import HealthStatus
from plugin_sdk import InvalidArguments
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginState
from plugin_sdk import ServiceUnavailable
from plugin_sdk import hookspecs

pytestmark = pytest.mark.anyio


def kernel(data: Path, *plugins: Plugin, settings: dict[str, Any] | None = None, **kernel_settings: Any) -> Kernel:
    """A strict kernel running the notes plugin (and ``plugins``), with ``data`` as its data root."""
    config = {
        "kernel": {"data_dir": str(data), "strict": True, **kernel_settings},
        "plugins": {"notes": {"settings": settings or {}}},
    }
    return Kernel(config, plugins=[Notes(), *plugins], environ={}, entry_points=False)


async def health(k: Kernel) -> HealthStatus | None:
    outcomes = {o.plugin: o for o in await k.hooks.acall_each(hookspecs.check_health)}
    assert outcomes["notes"].ok, outcomes["notes"].error
    return outcomes["notes"].value


async def test_add_then_search(tmp_path: Path) -> None:
    async with kernel(tmp_path) as k:
        first = await k.invoke("notes.add", {"text": "Buy milk"})
        await k.invoke("notes.add", {"text": "call Ada"})
        third = await k.invoke("notes.add", {"text": "milkshake recipe"})
        found = await k.invoke("notes.search", {"query": "MILK"})
    assert first["id"] == 1 and first["text"] == "Buy milk" and first["created"]
    assert [note["id"] for note in found] == [1, third["id"]]
    assert third["id"] == 3


async def test_notes_persist_across_restarts_as_json(tmp_path: Path) -> None:
    async with kernel(tmp_path) as k:
        await k.invoke("notes.add", {"text": "survives a restart"})
    document = json.loads((tmp_path / "notes" / "notes.json").read_text())
    assert document["format"] == 1 and [n["text"] for n in document["notes"]] == ["survives a restart"]
    async with kernel(tmp_path) as k:
        assert [n["text"] for n in await k.invoke("notes.search", {"query": "restart"})] == ["survives a restart"]
        assert (await k.invoke("notes.add", {"text": "second"}))["id"] == 2


async def test_the_file_name_setting_picks_the_file(tmp_path: Path) -> None:
    async with kernel(tmp_path, settings={"file_name": "agent-notes.json"}) as k:
        await k.invoke("notes.add", {"text": "x"})
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["agent-notes.json"]  # no temporary file left


async def test_other_plugins_use_the_notes_service(tmp_path: Path) -> None:
    seen: list[Any] = []

    class Agent(Plugin):
        name = "agent"
        version = "1.0.0"
        requires = ("notes",)

        async def start(self, ctx: PluginContext[Any]) -> None:
            notes: NotesService = ctx.service("notes")
            await notes.add("from the agent")
            seen.append((await notes.count(), await notes.search("AGENT")))

    async with kernel(tmp_path, Agent()) as k:
        assert k.plugins["agent"].state is PluginState.RUNNING
    [(count, found)] = seen
    assert count == 1 and [n["text"] for n in found] == ["from the agent"]


@pytest.mark.parametrize(
    ("operation", "args", "message"),
    [
        ("notes.add", {}, "args.text: required argument is missing"),
        ("notes.add", {"text": 12}, "args.text: expected a string, got int"),
        ("notes.add", {"text": "  "}, "args.text: must not be empty"),
        ("notes.add", {"text": "x" * 11}, "args.text: is 11 characters long; at most 10 are allowed"),
        ("notes.add", {"text": "x", "tags": []}, "args.tags: unknown argument"),
        ("notes.search", {"q": "x"}, "args.query: required argument is missing"),
        ("notes.search", {"query": None}, "args.query: expected a string, got NoneType"),
    ],
)
async def test_bad_arguments_name_the_argument(
    tmp_path: Path, operation: str, args: dict[str, Any], message: str
) -> None:
    async with kernel(tmp_path, settings={"max_text_length": 10}) as k:
        with pytest.raises(InvalidArguments) as caught:
            await k.invoke(operation, args)
        assert await k.invoke("notes.search", {"query": "x"}) == []  # nothing was stored
    assert message in str(caught.value)
    assert caught.value.operation == operation


async def test_a_full_store_refuses_one_more(tmp_path: Path) -> None:
    async with kernel(tmp_path, settings={"max_notes": 2}) as k:
        await k.invoke("notes.add", {"text": "one"})
        await k.invoke("notes.add", {"text": "two"})
        with pytest.raises(NotesFull, match="max_notes"):
            await k.invoke("notes.add", {"text": "three"})
        assert await health(k) == HealthStatus(ok=True, reason="2 of 2 notes")


@pytest.mark.parametrize(
    ("settings", "path", "message"),
    [
        ({"max_notes": 0}, "max_notes", "must be at least 1"),
        ({"max_notes": "many"}, "max_notes", "int"),
        ({"max_text_length": -5}, "max_text_length", "must be at least 1"),
        ({"file_name": "../elsewhere.json"}, "file_name", "plain file name"),
        ({"max_note": 10}, "max_note", "did you mean 'max_notes'"),
    ],
)
async def test_bad_settings_are_refused_with_their_path(
    tmp_path: Path, settings: dict[str, Any], path: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        async with kernel(tmp_path, settings=settings):
            pass
    [issue] = caught.value.issues
    assert issue.path == f"plugins.notes.settings.{path}"
    assert message in issue.message


async def test_healthy_until_the_store_is_over_max_notes(tmp_path: Path) -> None:
    async with kernel(tmp_path) as k:
        assert await health(k) == HealthStatus(ok=True, reason="0 of 1000 notes")
        for text in ("a", "b", "c"):
            await k.invoke("notes.add", {"text": text})
    async with kernel(tmp_path, settings={"max_notes": 2}) as k:  # the operator lowered the limit
        status = await health(k)
        with pytest.raises(NotesFull):
            await k.invoke("notes.add", {"text": "d"})
        assert len(await k.invoke("notes.search", {"query": "a"})) == 1
    assert status == HealthStatus(ok=False, reason="3 notes stored, over max_notes = 2")


@pytest.mark.parametrize("content", [b"{not json", b'{"format": 1, "notes": [{"id": "one"}]}', b"[]", b"\xff\xfe"])
async def test_an_unreadable_file_is_unhealthy_and_left_untouched(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.json").write_bytes(content)
    async with kernel(tmp_path) as k:
        assert k.plugins["notes"].state is PluginState.RUNNING
        status = await health(k)
        with pytest.raises(ServiceUnavailable, match="unusable"):
            await k.invoke("notes.add", {"text": "would overwrite the file"})
    assert status is not None and not status.ok and status.reason.startswith("store unreadable: ")
    assert (tmp_path / "notes" / "notes.json").read_bytes() == content


async def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with kernel(tmp_path) as k:
        await k.invoke("notes.add", {"text": "kept"})
        before = (tmp_path / "notes" / "notes.json").read_bytes()

        def crash(src: object, dst: object) -> None:
            raise OSError(28, "No space left on device")

        with monkeypatch.context() as patch:
            patch.setattr("orion_notes.store.os.replace", crash)
            with pytest.raises(ServiceUnavailable, match="No space left on device"):
                await k.invoke("notes.add", {"text": "lost"})
            broken = await health(k)
        assert [n["text"] for n in await k.invoke("notes.search", {"query": "l"})] == []  # "lost" was not stored
        await k.invoke("notes.add", {"text": "later"})  # the next write succeeds and heals it
        healed = await health(k)
    assert broken is not None and not broken.ok and "No space left on device" in broken.reason
    assert healed is not None and healed.ok
    assert json.loads(before)["notes"][0]["text"] == "kept"
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["notes.json"]


async def test_stop_is_idempotent_and_the_service_refuses_calls_after_it(tmp_path: Path) -> None:
    plugin = Notes()
    await plugin.stop()  # before any start
    kept: list[NotesService] = []

    class Keeper(Plugin):
        name = "keeper"
        version = "1.0.0"
        requires = ("notes",)

        async def start(self, ctx: PluginContext[Any]) -> None:
            kept.append(ctx.service("notes"))

    k = Kernel(
        {"kernel": {"data_dir": str(tmp_path), "strict": True}},
        plugins=[plugin, Keeper()],
        environ={},
        entry_points=False,
    )
    async with k:
        await k.invoke("notes.add", {"text": "x"})
    await plugin.stop()
    await plugin.stop()
    assert await plugin.check_health() is None
    with pytest.raises(ServiceUnavailable, match="not running"):
        await kept[0].count()


async def test_it_needs_nothing_beyond_its_grant_under_the_enforcing_guard(tmp_path: Path) -> None:
    data = tmp_path
    k = Kernel(
        {
            "kernel": {"data_dir": str(data), "strict": True, "sandbox": {"default": "deny", "guard": "enforce"}},
            "plugins": {"notes": {"permissions": [f"fs:write:{data}/notes/*"]}},
        },
        plugins=[Notes()],
        environ={},
        entry_points=False,
    )
    async with k:
        await k.invoke("notes.add", {"text": "guarded"})
        assert [n["text"] for n in await k.invoke("notes.search", {"query": "guard"})] == ["guarded"]
        info = k.plugins["notes"]
        assert info.asked == (f"fs:write:{data}/notes/*",)
        assert info.granted == (f"fs:write:{data}/notes/*",)
    async with kernel(data) as k:  # and it reads back what it wrote
        assert len(await k.invoke("notes.search", {"query": "guarded"})) == 1
