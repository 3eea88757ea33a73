"""Test set-up for orion-notes: anyio on asyncio, each test in its own empty directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No ORION__ variable reaches the kernels started here, and their .orion/ lands in tmp_path."""
    for name in list(os.environ):
        if name.startswith("ORION__"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path
