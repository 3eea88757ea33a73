"""Evaluates and compiles strings (a scanner fixture)."""

from plugin_sdk import Plugin


def calculate(expression: str) -> object:
    return eval(expression, {"__builtins__": {}})  # expect: eval


def run_snippet(source: str) -> None:
    code = compile(source, "<snippet>", "exec")  # expect: compile
    exec(code, {})  # expect: eval


class EvalPlugin(Plugin):
    name = "risky_eval"
    version = "1.0.0"
    permissions = ("subprocess",)  # asking for anything does not make eval acceptable
