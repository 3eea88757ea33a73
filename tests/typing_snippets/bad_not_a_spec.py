from kernel import Kernel


def plain_function() -> int:
    return 1


def calls_a_function(kernel: Kernel) -> None:
    kernel.hooks.call(plain_function)  # E: call-overload arg-type
