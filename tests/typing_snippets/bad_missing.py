from kernel import Kernel
from plugin_sdk import PluginState
from plugin_sdk import hookspecs


def missing_argument(kernel: Kernel) -> None:
    kernel.hooks.call(hookspecs.plugin_state_changed, plugin="x", old=PluginState.RUNNING)  # E: call-arg call-overload
