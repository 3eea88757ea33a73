from kernel import Kernel
from plugin_sdk import hookspecs


async def wrong_result_type(kernel: Kernel) -> None:
    x: int = await kernel.hooks.call(hookspecs.check_health)  # E: arg-type
    print(x)
