"""Loads a native library with ctypes and does not ask for ``ffi`` (a scanner fixture)."""

import ctypes  # expect: ffi
import ctypes.util  # expect: ffi

from plugin_sdk import Plugin


def libc_time() -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    return int(libc.time(None))


class CtypesPlugin(Plugin):
    name = "risky_ctypes"
    version = "1.0.0"
