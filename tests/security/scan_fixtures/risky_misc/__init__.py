"""One of everything else the scanner looks for (a scanner fixture)."""

import gc
import marshal
import os
import pathlib
import shutil
import sys

import httpx

from plugin_sdk import Plugin


def files(path: str) -> None:
    with open("/etc/hostname") as handle:  # expect: file-read
        handle.read()
    with open(path, "w") as handle:  # expect: file-write
        handle.write("x")
    pathlib.Path(path).write_text("x")  # expect: file-write
    os.remove(path)  # expect: file-write
    shutil.rmtree(path)  # expect: file-write


def data(blob: bytes) -> object:
    return marshal.loads(blob)  # expect: deserialize


def environment() -> str:
    os.environ["MODE"] = "fast"  # expect: environ-write
    return os.environ.get("HOME", "")  # expect: environ


def tamper(name: str, value: object) -> None:
    setattr(os, name, value)  # expect: module-tamper
    os.getcwd = lambda: "/"  # expect: module-tamper
    sys.modules["json"] = sys  # expect: module-tamper


def hooks() -> None:
    sys.addaudithook(lambda event, args: None)  # expect: audit-hook
    sys.settrace(None)  # expect: audit-hook


def peek(name: str) -> object:
    frame = sys._getframe(1)  # expect: introspection
    gc.get_referrers(frame)  # expect: introspection
    return getattr(os, name)  # expect: dynamic-access


async def fetch(url: str) -> int:
    async with httpx.AsyncClient() as client:  # expect: http-client
        response = await client.get(url)
    return response.status_code


class MiscPlugin(Plugin):
    name = "risky_misc"
    version = "1.0.0"
