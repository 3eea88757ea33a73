from kernel import Kernel
from plugin_sdk import PluginState
from plugin_sdk import hookspecs


def wrong_type(kernel: Kernel) -> None:
    kernel.hooks.call(hookspecs.plugin_state_changed, plugin=1, old=PluginState.RUNNING, new=PluginState.STOPPED)  # E: arg-type call-overload
