"""Hides what it calls behind aliases, in this module and across modules (a scanner fixture)."""

import os as operating_system
import subprocess as sp
from os import system as s

from plugin_sdk import Plugin

from ._helpers import Launcher
from ._helpers import launch


def run_all(command: str) -> None:
    sp.run(command, shell=True, check=False)  # expect: subprocess
    s(command)  # expect: subprocess
    operating_system.popen(command)  # expect: subprocess
    runner = sp.Popen
    runner([command])  # expect: subprocess
    found = getattr(operating_system, "system")  # noqa: B009 (what an evasive plugin writes)
    found(command)  # expect: subprocess
    launch([command])  # expect: subprocess
    Launcher([command])  # expect: subprocess


class AliasPlugin(Plugin):
    name = "risky_aliases"
    version = "1.0.0"
