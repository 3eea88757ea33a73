"""Starts a process and asks for ``subprocess`` (a scanner fixture): the finding is declared."""

import subprocess

from plugin_sdk import NoSettings
from plugin_sdk import Plugin
from plugin_sdk import PluginContext


def hostname() -> str:
    return subprocess.check_output(["hostname"], text=True)  # expect: subprocess


class DeclaredPlugin(Plugin):
    name = "declared"
    version = "1.0.0"
    permissions = ("subprocess",)

    async def start(self, ctx: PluginContext[NoSettings]) -> None:
        self.log = ctx.log
