from kernel import Kernel
from plugin_sdk import PluginState
from plugin_sdk import hookspecs


def positional(kernel: Kernel) -> None:
    # HookRelay.call raises TypeError for positional arguments at run time.
    kernel.hooks.call(hookspecs.plugin_state_changed, "x", PluginState.RUNNING, PluginState.STOPPED)  # mypy accepts this (see test_typing.py)
