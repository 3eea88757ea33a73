"""kill -9 never loses an acknowledged audit entry.

A subprocess (tests/security/audit_helpers/appender.py: a Kernel with the audit
plugin enabled through config) records entries and makes invokes in a loop,
printing each one once record() / invoke() has returned.  The test kills it
with SIGKILL mid-stream, then checks that the log verifies up to its last
complete entry (a torn final line may be reported as truncated), that every
acknowledged seq and invoke is in it, and that after a restart of the plugin
the log verifies completely, with an ``audit.recovered`` entry when a line was torn.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from builtin_plugins.security.audit import Audit
from builtin_plugins.security.audit import Mac
from builtin_plugins.security.audit import chain_files
from builtin_plugins.security.audit import key_from_text
from builtin_plugins.security.audit import verify_path
from kernel import Kernel

HELPER = Path(__file__).parent / "audit_helpers" / "appender.py"


def _run_and_kill(data_dir: Path, fsync: str, at_least: int) -> tuple[set[int], set[int]]:
    """Start the appender, let it acknowledge ``at_least`` entries, SIGKILL it; what it acknowledged."""
    process = subprocess.Popen(
        [sys.executable, str(HELPER), str(data_dir), fsync],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert process.stdout is not None
    records: set[int] = set()
    invokes: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        assert process.stdout.readline().strip() == b"READY"
        while len(records) < at_least and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            kind, _, number = line.decode().partition(" ")
            (records if kind == "R" else invokes).add(int(number))
        os.kill(process.pid, signal.SIGKILL)  # mid-stream: it is still writing
        process.wait(timeout=30)
        for line in process.stdout.read().splitlines():  # acknowledged before the kill landed
            kind, _, number = line.decode().partition(" ")
            if number.strip().isdigit():
                (records if kind == "R" else invokes).add(int(number))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    assert len(records) >= at_least, "the appender did not get going"
    return records, invokes


def _entries(path: Path) -> list[dict[str, Any]]:
    found = []
    for file in chain_files(path):
        for line in file.read_bytes().split(b"\n"):
            try:
                found.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                pass  # a torn last line
    return found


@pytest.mark.slow
@pytest.mark.parametrize("fsync", ["never", "interval", "always"])
def test_kill_9_loses_no_acknowledged_entry(tmp_path: Path, fsync: str) -> None:
    data_dir = tmp_path / "data"
    records, invokes = _run_and_kill(data_dir, fsync, at_least=300 if fsync != "always" else 60)
    log = data_dir / "audit" / "audit.log"
    mac = Mac(key_from_text((data_dir / "audit" / "audit.key").read_text()))

    # before recovery: the chain verifies up to its last complete entry
    report = verify_path(log, mac)
    torn = not log.read_bytes().endswith(b"\n")
    if not report.ok:
        assert torn and report.reason == "truncated", report
        assert (report.file, report.line) == (str(log), len(log.read_bytes().split(b"\n")))
    entries = _entries(log)
    assert report.entries == len(entries)
    seqs = {e["seq"] for e in entries}
    assert records <= seqs, f"acknowledged but missing: {sorted(records - seqs)[:10]}"
    invoked = {e["details"]["args"]["n"] for e in entries if e["action"] == "invoke"}
    assert invokes <= invoked, f"acknowledged invokes missing: {sorted(invokes - invoked)[:10]}"

    # after restarting the plugin: everything verifies, with the recovery recorded
    async def restart() -> bool:
        audit = Audit()
        config = {"kernel": {"data_dir": str(data_dir)}, "plugins": {"audit": {"settings": {"fsync": fsync}}}}
        async with Kernel(config, plugins=[audit], environ={}, entry_points=False):
            result = await audit.verify()
            assert result.ok, result
        return True

    assert anyio.run(restart)
    after = verify_path(log, mac)
    assert after.ok, after
    recovered = [e for e in _entries(log) if e["action"] == "audit.recovered"]
    if torn:
        [entry] = recovered
        assert entry["details"]["torn_bytes"] > 0
        assert (log.parent / entry["details"]["torn_file"]).exists()
    assert records <= {e["seq"] for e in _entries(log)}
