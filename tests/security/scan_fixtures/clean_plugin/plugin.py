"""Greets: pure computation over its settings."""

import json
import math

import attrs

from plugin_sdk import Invocation
from plugin_sdk import Plugin
from plugin_sdk import PluginContext


@attrs.frozen
class CleanSettings:
    greeting: str = "hello"


class CleanPlugin(Plugin):
    name = "clean"
    version = "1.0.0"
    Config = CleanSettings

    async def start(self, ctx: PluginContext[CleanSettings]) -> None:
        self.greeting = ctx.settings.greeting
        ctx.register_operation("clean.greet", self.greet, example_args={"who": "Ada"})

    async def greet(self, inv: Invocation) -> str:
        digits = math.floor(math.log10(len(inv.args["who"]) + 1)) + 1
        return json.dumps({"text": f"{self.greeting}, {inv.args['who']}", "digits": digits})
