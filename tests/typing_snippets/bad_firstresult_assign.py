import snippet_specs

from kernel import Kernel


def ignores_none(kernel: Kernel) -> None:
    number: int = kernel.hooks.call(snippet_specs.pick, name="x")  # E: assignment
    print(number)
