"""Two releases of one plugin for ``--against``: the current one breaks the previous one's users.

The previous release's source is written by the test into a directory with
its own ``*.dist-info`` (see ``previous_release``).
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from plugin_sdk import Invocation
from plugin_sdk import Plugin
from plugin_sdk import PluginContext

PREVIOUS_SOURCE = """
import attrs
from plugin_sdk import Plugin

@attrs.frozen
class Settings:
    greeting: str = "hi"
    retries: int = 3

class Evolving(Plugin):
    name = "evolving"
    version = "1.0.0"
    sdk = ">=0.1"
    provides = ("evolving",)
    Config = Settings

    async def start(self, ctx):
        ctx.provide("evolving", self)
        ctx.register_operation("evolving.greet", self.greet, example_args={})
        ctx.register_operation("evolving.count", self.greet, example_args={})

    async def greet(self, inv):
        return "hi"
"""


@attrs.frozen
class Compatible:
    greeting: str = "hi"
    retries: int = 3
    extra: bool = False  # new, with a default: fine


class Evolving(Plugin):
    """2.0: compatible with 1.0 (one more setting, with a default; one more operation)."""

    name = "evolving"
    version = "2.0.0"
    sdk = ">=0.1"
    provides = ("evolving",)
    Config = Compatible

    async def start(self, ctx: PluginContext[Compatible]) -> None:
        ctx.provide("evolving", self)
        for op in ("evolving.greet", "evolving.count", "evolving.more"):
            ctx.register_operation(op, self.greet, example_args={})

    async def greet(self, inv: Invocation) -> str:
        return "hi"


@attrs.frozen
class Breaking:
    token: str  # new and required: every old config breaks
    greeting: str = "hi"


class Broken(Plugin):
    """2.0 done wrong: a setting removed, a required one added, an operation and a service gone."""

    name = "evolving"
    version = "2.0.0"
    sdk = ">=0.1"
    Config = Breaking
    conformance_settings: ClassVar[dict[str, object]] = {"token": "t"}

    async def start(self, ctx: PluginContext[Breaking]) -> None:
        ctx.register_operation("evolving.greet", self.greet, example_args={})

    async def greet(self, inv: Invocation) -> str:
        return "hi"
