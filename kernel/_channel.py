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

import asyncio
import socket
from collections.abc import Callable
from typing import Any
from typing import Final

import attrs
import orjson

#: the default largest frame, in bytes (both directions)
MAX_FRAME: Final = 16 * 1024 * 1024
_HEADER: Final = 4
#: bytes asked of the socket per read
_CHUNK: Final = 256 * 1024


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


def decode(body: bytes | memoryview) -> dict[str, Any]:
    """The message of one frame's body.  :raises ChannelError: not a JSON object with a string ``t``."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ChannelError(f"frame is not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise ChannelError(f"frame is not an object with a string 't': {bytes(body[:80])!r}")
    return message


def _length(header: bytes | bytearray | memoryview, max_frame: int) -> int:
    size = int.from_bytes(header, "big")
    if size > max_frame:
        raise ChannelError(f"peer announced a {size}-byte frame, over the {max_frame}-byte limit")
    return size


class AsyncChannel:
    """Frames over a connected non-blocking socket, on the running asyncio loop.

    Reading is a reader callback on the loop (:meth:`serve`): each frame is
    handed to a function as soon as its bytes arrive, with no task switch in
    between, so a reply wakes its caller in the same loop iteration that read
    it — as few hops as a raw ``sock_recv`` ping-pong.  Sending tries the
    socket at once and waits only for what it could not take.  Any number of
    writers; process isolation is asyncio-only, like the kernel's default
    backend (``benchmarks/bench_isolation.py`` measures the round trip).
    """

    def __init__(self, sock: socket.socket, *, max_frame: int = MAX_FRAME) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.max_frame = max_frame
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._send_lock = asyncio.Lock()
        self._closed = False
        self._reading: asyncio.Future[None] | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the channel runs on (asking asyncio for the running loop costs a getpid())."""
        return self._loop

    async def send(self, message: dict[str, Any]) -> None:
        frame = encode(message, self.max_frame)
        if self._closed:
            raise ChannelError("the channel is closed")
        sent = 0
        if not self._send_lock.locked():  # nobody is mid-frame: try the socket directly
            try:
                sent = self.sock.send(frame)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                raise ChannelError(f"the peer is gone: {type(exc).__name__}") from None
            if sent == len(frame):
                return
        async with self._send_lock:  # the rest of the frame, before anyone else's
            try:
                await self._loop.sock_sendall(self.sock, memoryview(frame)[sent:])
            except OSError as exc:
                raise ChannelError(f"the peer is gone: {type(exc).__name__}") from None

    async def serve(self, on_message: Callable[[dict[str, Any]], None]) -> None:
        """Hand every incoming message to ``on_message`` (called from the loop's reader
        callback, in arrival order) until the channel ends.

        :raises ChannelError: why it ended — the peer closed it, broke the
            protocol, or :meth:`aclose` was called.  An exception raised by
            ``on_message`` ends it too, and is raised here.
        """
        if self._reading is not None:
            raise RuntimeError("the channel is already being served")
        if self._closed:
            raise ChannelError("the channel is closed")
        done: asyncio.Future[None] = self._loop.create_future()
        self._reading = done
        sock = self.sock
        fd = sock.fileno()
        # One receive buffer for the channel's life: recv(n) would allocate n bytes per
        # read, and glibc serves that size with mmap + mremap + munmap (three syscalls
        # and a page fault per frame, measured with strace in bench_isolation.py).
        scratch = memoryview(bytearray(_CHUNK))

        def readable() -> None:
            try:
                while True:
                    try:
                        count = sock.recv_into(scratch)
                    except (BlockingIOError, InterruptedError):
                        return
                    except OSError:
                        count = 0
                    if not count:
                        raise ChannelError("truncated frame" if self._buffer else "the peer closed the channel")
                    if self._buffer:
                        self._buffer += scratch[:count]
                        self._deliver(on_message)
                    else:  # the usual case: whole frames, parsed where they landed
                        rest = self._deliver_from(scratch, count, on_message)
                        if rest < count:
                            self._buffer += scratch[rest:count]
                    if count < _CHUNK:
                        return  # drained: spare the syscall that would say so
            except Exception as exc:  # handed to serve()'s caller
                self._loop.remove_reader(fd)
                if not done.done():
                    done.set_exception(exc)

        self._loop.add_reader(fd, readable)
        try:
            await done
        finally:
            if not self._closed:  # else aclose() removed it (and the fd may be another's now)
                self._loop.remove_reader(fd)
            self._reading = None

    def _deliver_from(self, data: memoryview, count: int, on_message: Callable[[dict[str, Any]], None]) -> int:
        """Hand on every whole frame in ``data[:count]``; where the first incomplete one starts."""
        start = 0
        while count - start >= _HEADER:
            end = start + _HEADER + _length(data[start : start + _HEADER], self.max_frame)
            if end > count:
                break
            on_message(decode(data[start + _HEADER : end]))
            start = end
        return start

    def _deliver(self, on_message: Callable[[dict[str, Any]], None]) -> None:
        buffer = self._buffer
        while len(buffer) >= _HEADER:
            size = _length(buffer[:_HEADER], self.max_frame)
            end = _HEADER + size
            if len(buffer) < end:
                return
            body = bytes(buffer[_HEADER:end])
            del buffer[:end]
            on_message(decode(body))

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if self._reading is not None:
                self._loop.remove_reader(self.sock.fileno())
                if not self._reading.done():
                    self._reading.set_exception(ChannelError("the channel is closed"))
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
