"""HMAC-SHA256 with the key prepared once: for MACs computed on a hot path."""

from __future__ import annotations

import binascii
from typing import Any


class HmacSha256:
    """HMAC-SHA256 (RFC 2104) with the key's inner and outer pads hashed once.

    Exactly ``hmac.digest(key, msg, "sha256")``, computed from two prepared
    ``hashlib`` states: copying them costs a third of keying a new HMAC per
    message under OpenSSL 3 (0.75 µs vs 2.1 µs here).  Holds no copy of the key
    itself; ``repr`` shows nothing of it.  Compare MACs with
    ``hmac.compare_digest``.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        import hashlib  # here, not at import: `import plugin_sdk` loads no OpenSSL

        if not key:
            raise ValueError("the HMAC key is empty")
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        padded = key.ljust(64, b"\x00")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def __repr__(self) -> str:
        return "<HmacSha256 key=<redacted>>"

    def inner(self) -> Any:
        """A fresh inner state (keyed): ``update()`` it with the message, then feed its digest to :meth:`outer`."""
        return self._inner.copy()

    def outer(self) -> Any:
        """A fresh outer state (keyed): ``update()`` it with the inner digest; its digest is the MAC."""
        return self._outer.copy()

    def digest(self, data: bytes | memoryview) -> bytes:
        """The 32-byte MAC of ``data``."""
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def hex(self, data: bytes | memoryview) -> bytes:
        """The MAC of ``data`` as 64 lowercase hex digits (ASCII bytes)."""
        return binascii.hexlify(self.digest(data))

    def hex2(self, head: bytes | memoryview, tail: bytes) -> bytes:
        """The MAC of ``head + tail`` as hex, without joining them."""
        inner = self._inner.copy()
        inner.update(head)
        inner.update(tail)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return binascii.hexlify(outer.digest())
