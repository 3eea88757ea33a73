"""The isolated worker's event-loop selector: skipped empty polls and an adaptive spin."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from kernel._worker import _Selector


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    yield ours, theirs
    ours.close()
    theirs.close()


def test_one_zero_timeout_poll_in_two_is_skipped_so_io_is_never_starved(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    selector = _Selector()
    selector.register(ours, selectors.EVENT_READ)
    theirs.send(b"x")
    seen = [bool(selector.select(0)) for _ in range(6)]
    assert seen == [False, True, False, True, False, True]
    # a blocking poll is never skipped, and resets the alternation
    assert selector.select(1.0)
    assert not selector.select(0)


def test_it_spins_while_calls_come_fast_and_stops_after_an_empty_spin(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    selector = _Selector(spin=0.05)
    selector.register(ours, selectors.EVENT_READ)
    assert selector.spinning

    # data arriving during the spin is returned at once, and spinning goes on
    timer = threading.Timer(0.005, theirs.send, (b"x",))
    timer.start()
    began = time.perf_counter()
    assert selector.select(None)
    assert time.perf_counter() - began < 1.0
    assert selector.spinning
    ours.recv(16)
    timer.join()

    # nothing within the window: the spin gives up, the rest of the timeout is slept
    began = time.perf_counter()
    assert selector.select(0.2) == []
    assert time.perf_counter() - began >= 0.19
    assert not selector.spinning

    # a sleep that ends within the window turns spinning back on
    theirs.send(b"y")
    assert selector.select(None)
    assert selector.spinning


def test_without_a_spin_it_sleeps_at_once(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, _ = pair
    selector = _Selector(spin=0.0)
    selector.register(ours, selectors.EVENT_READ)
    assert not selector.spinning
    began = time.perf_counter()
    assert selector.select(0.05) == []
    assert time.perf_counter() - began >= 0.045
    assert not selector.spinning
