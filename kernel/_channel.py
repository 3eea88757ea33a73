"""The framed orjson channel between the kernel and an isolated plugin's worker process.

A frame is a 4-byte big-endian length and that many bytes of one orjson
object, which must be a JSON object with a string ``"t"`` (its type).
Frames are size-limited: a peer announcing more than ``max_frame`` bytes, or
sending bytes that are not such an object, is a :class:`ChannelError`, and
the kernel kills a worker that does it — the worker is never trusted to be
well-behaved.  The same framing serves the asynchronous stream (anyio) and
the blocking socket used for sync hook calls.
"""

from __future__ import annotations

import socket
from typing import Any
from typing import Final

import attrs
import orjson

#: the default largest frame, in bytes (both directions)
MAX_FRAME: Final = 16 * 1024 * 1024
_HEADER: Final = 4


class ChannelError(Exception):
    """The peer broke the protocol (oversized, malformed or truncated frame) or went away."""


def _default(value: object) -> Any:
    if attrs.has(type(value)):
        return attrs.asdict(value, recurse=True)  # type: ignore[arg-type]
    if isinstance(value, frozenset | set | tuple):
        return list(value)
    raise TypeError(f"cannot send a {type(value).__name__} to an isolated plugin (JSON values only)")


def encode(message: dict[str, Any], max_frame: int = MAX_FRAME) -> bytes:
    """One frame.  :raises ChannelError: not serializable, or larger than ``max_frame``."""
    try:
        body = orjson.dumps(message, default=_default, option=orjson.OPT_NON_STR_KEYS)
    except TypeError as exc:
        raise ChannelError(f"cannot encode the message: {exc}") from None
    if len(body) > max_frame:
        raise ChannelError(f"message of {len(body)} bytes exceeds the {max_frame}-byte frame limit")
    return len(body).to_bytes(_HEADER, "big") + body


def decode(body: bytes) -> dict[str, Any]:
    """The message of one frame's body.  :raises ChannelError: not a JSON object with a string ``t``."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ChannelError(f"frame is not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise ChannelError(f"frame is not an object with a string 't': {body[:80]!r}")
    return message


def _length(header: bytes, max_frame: int) -> int:
    size = int.from_bytes(header, "big")
    if size > max_frame:
        raise ChannelError(f"peer announced a {size}-byte frame, over the {max_frame}-byte limit")
    return size


class AsyncChannel:
    """Frames over a connected non-blocking socket, on the running asyncio loop.

    One reader, any number of writers.  The loop's own socket methods are
    used rather than an anyio stream: they try the socket first and wait only
    when it is not ready, where a stream takes a scheduling round trip per
    send and per receive (5 loop iterations per call became 2-3, measured in
    ``benchmarks/bench_isolation.py``).  Process isolation is asyncio-only,
    like the kernel's default backend.
    """

    def __init__(self, sock: socket.socket, *, max_frame: int = MAX_FRAME) -> None:
        import asyncio

        sock.setblocking(False)
        self.sock = sock
        self.max_frame = max_frame
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._send_lock = asyncio.Lock()
        self._closed = False

    async def send(self, message: dict[str, Any]) -> None:
        frame = encode(message, self.max_frame)
        if self._closed:
            raise ChannelError("the channel is closed")
        async with self._send_lock:  # asyncio's lock does not yield when it is free
            try:
                await self._loop.sock_sendall(self.sock, frame)
            except OSError as exc:
                raise ChannelError(f"the peer is gone: {type(exc).__name__}") from None

    async def _read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if self._closed:
                raise ChannelError("the channel is closed")
            try:
                chunk = await self._loop.sock_recv(self.sock, max(65536, size - len(self._buffer)))
            except OSError:
                chunk = b""
            if not chunk:
                raise ChannelError("truncated frame" if self._buffer else "the peer closed the channel")
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def receive(self) -> dict[str, Any]:
        size = _length(await self._read(_HEADER), self.max_frame)
        return decode(await self._read(size))

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self.sock.close()


class SyncChannel:
    """Frames over a blocking socket, for calls that must answer synchronously (sync hooks)."""

    def __init__(self, sock: socket.socket, *, max_frame: int = MAX_FRAME) -> None:
        self.sock = sock
        self.max_frame = max_frame

    def send(self, message: dict[str, Any]) -> None:
        frame = encode(message, self.max_frame)
        try:
            self.sock.sendall(frame)
        except OSError as exc:
            raise ChannelError(f"the peer is gone: {exc}") from None

    def _read(self, size: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            try:
                chunk = self.sock.recv(size - len(chunks))
            except TimeoutError:
                raise  # an OSError too, but the caller's to handle: the peer may only be slow
            except OSError as exc:
                raise ChannelError(f"the peer is gone: {exc}") from None
            if not chunk:
                raise ChannelError("truncated frame" if chunks else "the peer closed the channel")
            chunks += chunk
        return bytes(chunks)

    def receive(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message; :raises TimeoutError: none within ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        size = _length(self._read(_HEADER), self.max_frame)
        return decode(self._read(size))

    def close(self) -> None:
        self.sock.close()
