"""Shared test setup: isolation from the caller's cwd and environment, service markers."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

#: marker -> (host, port) of the local service it needs
SERVICES = {
    "redis": ("127.0.0.1", 6379),
    "postgres": ("127.0.0.1", 5432),
    "nats": ("127.0.0.1", 4222),
    "mqtt": ("127.0.0.1", 1883),
    "amqp": ("127.0.0.1", 5672),
}
#: set by .ci/run: a test whose service is unreachable fails instead of skipping
REQUIRE_SERVICES = os.environ.get("ORION_REQUIRE_SERVICES") == "1"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker, (host, port) in SERVICES.items():
        if item.get_closest_marker(marker) is None or _reachable(host, port):
            continue
        message = f"{marker} is not reachable on {host}:{port}"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message} (ORION_REQUIRE_SERVICES=1 turns this skip into a failure)")
        pytest.skip(message)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs in its own empty directory with no ORION__ variables."""
    for name in list(os.environ):
        if name.startswith("ORION__"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path
