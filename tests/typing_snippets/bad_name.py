from kernel import Kernel
from plugin_sdk import PluginState
from plugin_sdk import hookspecs


def wrong_name(kernel: Kernel) -> None:
    kernel.hooks.call(hookspecs.plugin_state_changed, name="x", old=PluginState.RUNNING, new=PluginState.STOPPED)  # E: call-arg call-overload
