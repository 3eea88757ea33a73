import snippet_specs

from kernel import Kernel


async def wrong_custom_argument(kernel: Kernel) -> None:
    await kernel.hooks.call(snippet_specs.fetch, key="k", limit="ten")  # E: arg-type call-overload
