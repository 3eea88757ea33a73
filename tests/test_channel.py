"""The framed channel to isolated workers: framing, limits and how reading ends."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from kernel._channel import AsyncChannel
from kernel._channel import ChannelError
from kernel._channel import SyncChannel
from kernel._channel import encode

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the channel runs on the asyncio loop's reader callbacks


async def _collect(channel: AsyncChannel, into: list[dict[str, Any]]) -> str:
    try:
        await channel.serve(into.append)
    except ChannelError as exc:
        return str(exc)
    raise AssertionError("serve() returned without an error")


async def test_frames_split_anyhow_arrive_whole_and_in_order() -> None:
    ours, theirs = socket.socketpair()
    channel = AsyncChannel(ours)
    got: list[dict[str, Any]] = []
    reader = asyncio.ensure_future(_collect(channel, got))
    stream = b"".join(encode({"t": "m", "i": i}) for i in range(50))
    for i in range(0, len(stream), 7):  # frames cut across reads
        theirs.sendall(stream[i : i + 7])
        await asyncio.sleep(0)
    theirs.close()
    assert await reader == "the peer closed the channel"
    assert [m["i"] for m in got] == list(range(50))


async def test_whole_frames_and_a_partial_one_in_one_read_are_all_delivered() -> None:
    ours, theirs = socket.socketpair()
    channel = AsyncChannel(ours)
    got: list[dict[str, Any]] = []
    two = asyncio.Event()

    def collect(message: dict[str, Any]) -> None:
        got.append(message)
        if len(got) == 2:
            two.set()

    async def serve() -> str:
        try:
            await channel.serve(collect)
        except ChannelError as exc:
            return str(exc)
        raise AssertionError("serve() returned without an error")

    reader = asyncio.ensure_future(serve())
    frames = [encode({"t": "m", "i": i, "pad": "x" * (i * 1000)}) for i in range(4)]
    theirs.sendall(frames[0] + frames[1] + frames[2][:10])  # two whole frames, the third begun
    await asyncio.wait_for(two.wait(), 10)
    assert len(got) == 2
    theirs.sendall(frames[2][10:] + frames[3])
    theirs.close()
    assert await reader == "the peer closed the channel"
    assert [(m["i"], len(m["pad"])) for m in got] == [(i, i * 1000) for i in range(4)]


async def test_a_frame_cut_short_by_the_peer_is_a_truncated_frame() -> None:
    ours, theirs = socket.socketpair()
    channel = AsyncChannel(ours)
    got: list[dict[str, Any]] = []
    reader = asyncio.ensure_future(_collect(channel, got))
    theirs.sendall(encode({"t": "m"})[:-2])
    theirs.close()
    assert await reader == "truncated frame"
    assert got == []


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ((100).to_bytes(4, "big"), "over the 64-byte limit"),
        ((5).to_bytes(4, "big") + b"nope!", "frame is not JSON"),
        ((2).to_bytes(4, "big") + b"[]", "not an object with a string 't'"),
    ],
)
async def test_an_oversized_or_malformed_frame_ends_reading(raw: bytes, error: str) -> None:
    ours, theirs = socket.socketpair()
    channel = AsyncChannel(ours, max_frame=64)
    got: list[dict[str, Any]] = []
    reader = asyncio.ensure_future(_collect(channel, got))
    theirs.sendall(encode({"t": "before"}) + raw)
    assert error in await reader
    assert got == [{"t": "before"}]  # what came before the bad frame was delivered
    theirs.close()


async def test_closing_ends_serve_and_a_handler_error_is_raised_there() -> None:
    ours, theirs = socket.socketpair()
    channel = AsyncChannel(ours)
    reader = asyncio.ensure_future(_collect(channel, []))
    await asyncio.sleep(0)
    await channel.aclose()
    assert await reader == "the channel is closed"
    with pytest.raises(ChannelError, match="closed"):
        await channel.send({"t": "late"})
    theirs.close()

    ours, theirs = socket.socketpair()
    channel = AsyncChannel(ours)

    def explode(message: dict[str, Any]) -> None:
        raise ValueError(f"cannot handle {message['t']}")

    theirs.sendall(encode({"t": "boom"}))
    with pytest.raises(ValueError, match="cannot handle boom"):
        await channel.serve(explode)
    serving = asyncio.ensure_future(channel.serve(lambda m: None))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="already being served"):  # one reader at a time
        await channel.serve(lambda m: None)
    serving.cancel()
    await channel.aclose()
    theirs.close()


async def test_large_frames_from_concurrent_writers_never_interleave() -> None:
    ours, theirs = socket.socketpair()
    channel = AsyncChannel(ours)
    peer = SyncChannel(theirs)
    big = "x" * (3 * 1024 * 1024)  # far over the socket buffer: sent in many pieces

    async def write(i: int) -> None:
        await channel.send({"t": "big", "i": i, "body": big})

    reading = asyncio.get_running_loop().run_in_executor(None, lambda: [peer.receive(10) for _ in range(4)])
    await asyncio.gather(*(write(i) for i in range(4)))
    messages = await reading
    assert sorted(m["i"] for m in messages) == [0, 1, 2, 3]
    assert all(m["body"] == big for m in messages)
    with pytest.raises(ChannelError, match="exceeds the 1024-byte frame limit"):
        encode({"t": "big", "body": big}, max_frame=1024)
    await channel.aclose()
    peer.close()
