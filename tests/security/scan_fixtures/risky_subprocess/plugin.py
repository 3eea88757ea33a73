"""The risky plugin: its health check shells out, and its manifest does not say so."""

import subprocess

from plugin_sdk import NoSettings
from plugin_sdk import Plugin
from plugin_sdk import PluginContext


def uptime() -> str:
    done = subprocess.run(["uptime"], capture_output=True, text=True, check=False)  # expect: subprocess
    return done.stdout


class RiskyPlugin(Plugin):
    name = "risky"
    version = "1.0.0"

    async def start(self, ctx: PluginContext[NoSettings]) -> None:
        self.log = ctx.log
