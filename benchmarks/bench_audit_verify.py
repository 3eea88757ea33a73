"""Verifying an audit chain against hashing the same bytes with hashlib.sha256 alone.

Writes N entries (default 1,000,000) with the audit plugin's own entry encoder
(no invokes: the point is the verifier), plus their anchor, then times:

* ``verify``: the plugin's verifier over the whole chain (one SHA-256 and one
  HMAC-SHA256 per line, seq and prev read at fixed places);
* baseline ``sha256 of the bytes``: one hashlib.sha256 over the file, read in
  the same blocks (what "just hashing the log" costs);
* baseline ``sha256 per line``: hashlib.sha256 of each line after the same split
  (the chain hash alone, no MAC, no checks).

Reports entries/s and the ratios, best of 3 runs each, in one process.

Run: python benchmarks/bench_audit_verify.py [N]
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import machine

from builtin_plugins.security.audit import GENESIS
from builtin_plugins.security.audit import Anchor
from builtin_plugins.security.audit import Mac
from builtin_plugins.security.audit import anchor_path
from builtin_plugins.security.audit import encode_entry
from builtin_plugins.security.audit import verify_path
from builtin_plugins.security.audit._verify import BLOCK


def write_chain(path: Path, mac: Mac, count: int) -> int:
    """``count`` entries shaped like invoke records; returns the bytes written."""
    prev = GENESIS
    ts = 1_800_000_000.0
    written = 0
    batch: list[bytes] = []
    with open(path, "wb") as handle:
        for seq in range(1, count + 1):
            details = {"operation": "tools.search", "kind": "user", "rule": "roles.analyst.allow[0]"}
            line = encode_entry(mac, seq, prev, ts + seq / 1000, "invoke", f"user-{seq % 97}", "ok", details)
            prev = hashlib.sha256(line).hexdigest()
            batch.append(line)
            if len(batch) == 10_000:
                data = b"\n".join(batch) + b"\n"
                handle.write(data)
                written += len(data)
                batch = []
        if batch:
            data = b"\n".join(batch) + b"\n"
            handle.write(data)
            written += len(data)
    anchor_path(path).write_bytes(Anchor(count, prev).encode(mac))
    return written


def sha256_of_bytes(path: Path) -> float:
    start = time.perf_counter()
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        while block := handle.read(BLOCK):
            digest.update(block)
    digest.hexdigest()
    return time.perf_counter() - start


def sha256_per_line(path: Path) -> float:
    start = time.perf_counter()
    sha256 = hashlib.sha256
    rest = b""
    with open(path, "rb", buffering=0) as handle:
        while block := handle.read(BLOCK):
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            for line in lines:
                sha256(line).digest()
    return time.perf_counter() - start


def best(func, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    return min(func() for _ in range(repeat))


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    workdir = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    try:
        path = workdir / "audit.log"
        mac = Mac(os.urandom(32))
        start = time.perf_counter()
        size = write_chain(path, mac, count)
        wrote = time.perf_counter() - start

        def run_verify() -> float:
            begin = time.perf_counter()
            report = verify_path(path, mac)
            elapsed = time.perf_counter() - begin
            assert report.ok and report.entries == count, report
            return elapsed

        verify = best(run_verify)
        whole = best(lambda: sha256_of_bytes(path))
        lines = best(lambda: sha256_per_line(path))
        print("# audit verify vs hashlib.sha256 over the same bytes (same process, best of 3)")
        print(f"# machine: {machine()}")
        print(f"# {count:,} entries, {size / 1e6:.1f} MB ({size / count:.0f} B/entry), written in {wrote:.2f} s")
        print(
            f"{'verify (sha256 + hmac-sha256 + checks per line)':<52} {verify:7.3f} s  {count / verify:12,.0f} entries/s"
        )
        print(
            f"{'baseline: sha256 of the bytes, one stream':<52} {whole:7.3f} s  {count / whole:12,.0f} entries/s"
            f"  -> verify = {verify / whole:5.1f}x"
        )
        print(
            f"{'baseline: sha256 per line (the chain hash alone)':<52} {lines:7.3f} s  {count / lines:12,.0f} entries/s"
            f"  -> verify = {verify / lines:5.1f}x"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
