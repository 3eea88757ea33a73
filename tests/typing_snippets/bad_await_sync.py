import snippet_specs

from kernel import Kernel


async def awaits_a_sync_hook(kernel: Kernel) -> None:
    await kernel.hooks.call(snippet_specs.names)  # E: misc
