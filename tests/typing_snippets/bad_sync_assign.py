import snippet_specs

from kernel import Kernel


def wrong_result_type(kernel: Kernel) -> None:
    numbers: list[int] = kernel.hooks.call(snippet_specs.names)  # E: arg-type
    print(numbers)
