"""plugin_sdk.run_as_operator: the shape every admin CLI command shares."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from collections.abc import Mapping
from typing import Any

import pytest

from plugin_sdk import OPERATOR
from plugin_sdk import OperationNotFound
from plugin_sdk import OperatorCall
from plugin_sdk import PermissionDenied
from plugin_sdk import Principal
from plugin_sdk import run_as_operator

pytestmark = pytest.mark.anyio


class FakeKernel:
    def __init__(self, operations: Mapping[str, Any]) -> None:
        self.operations = operations
        self.calls: list[tuple[str, dict[str, Any], Principal | None]] = []

    async def invoke(self, name: str, args: Mapping[str, Any] | None = None, **kw: Any) -> Any:
        self.calls.append((name, dict(args or {}), kw.get("principal")))
        if name not in self.operations:
            raise OperationNotFound(f"unknown operation {name!r}", operation=name)
        answer = self.operations[name]
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakeEnv:
    json = False

    def __init__(self, kernel: FakeKernel) -> None:
        self.kernel = kernel
        self.lines: list[str] = []
        self.started_count = 0

    def echo(self, text: str) -> None:
        self.lines.append(text)

    def emit(self, data: Any, *, columns: Any = None) -> None:
        self.lines.append(repr(data))

    @contextlib.asynccontextmanager
    async def started(self) -> AsyncIterator[FakeKernel]:
        self.started_count += 1
        yield self.kernel

    async def fetch(self, url: str, **kw: Any) -> tuple[int, bytes]:
        raise AssertionError("not used")


async def test_calls_are_made_as_the_operator_and_the_code_is_returned() -> None:
    env = FakeEnv(FakeKernel({"vault.list": ["a"], "vault.check": {"ok": False}}))

    async def work(call: OperatorCall) -> int:
        env.echo(str(await call("vault.list")))
        return 0 if (await call("vault.check", {"deep": True}))["ok"] else 1

    assert await run_as_operator(env, "vault", work) == 1
    assert env.kernel.calls == [("vault.list", {}, OPERATOR), ("vault.check", {"deep": True}, OPERATOR)]
    assert env.lines == ["['a']"] and env.started_count == 1

    async def silent(call: OperatorCall) -> None:
        await call("vault.list")

    assert await run_as_operator(env, "vault", silent) == 0


async def test_a_plugin_that_is_not_running_is_named_with_how_to_enable_it() -> None:
    env = FakeEnv(FakeKernel({}))

    async def work(call: OperatorCall) -> None:
        await call("vault.list")

    assert await run_as_operator(env, "vault", work, failure=2, hint="e.g. no master key") == 2
    assert env.lines == [
        "error: the vault plugin is not running: enable it ([plugins.vault] enabled = true) and see the log "
        "above for why it did not start (e.g. no master key)"
    ]


async def test_other_errors_are_one_line_and_the_failure_code() -> None:
    env = FakeEnv(FakeKernel({"vault.get": PermissionDenied("no such grant")}))

    async def denied(call: OperatorCall) -> None:
        await call("vault.get", {"name": "x"})

    assert await run_as_operator(env, "vault", denied) == 1
    assert env.lines == ["error: no such grant"]

    async def elsewhere(call: OperatorCall) -> None:
        await call("other.thing")  # another plugin's operation: not "vault is not running"

    env.lines.clear()
    assert await run_as_operator(env, "vault", elsewhere) == 1
    assert env.lines == ["error: unknown operation 'other.thing'"]
