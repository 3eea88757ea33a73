"""What plugins contribute to the ``orion-kernel`` command line."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any
from typing import Final
from typing import Protocol

import attrs

from ._errors import OperationNotFound
from ._errors import OrionError
from ._invocation import Principal
from ._security import Credentials

#: Who plugin CLI commands act as: the person at the console, who already holds the
#: config and the data files.  Authorization plugins may trust ``kind == "operator"``.
OPERATOR: Final = Principal(id="cli", kind="operator", roles=("operator",))


class Invoker(Protocol):
    """A started kernel, as far as a CLI command may use it."""

    def invoke(
        self,
        name: str,
        args: Mapping[str, Any] | None = None,
        *,
        principal: Principal | None = None,
        credentials: Credentials | None = None,
    ) -> Awaitable[Any]:
        """Run one operation through the pipeline (see ``Kernel.invoke``)."""


class CliEnvironment(Protocol):
    """What a plugin's CLI command gets besides its parsed arguments."""

    #: ``--json`` was given: print machine output
    json: bool

    def echo(self, text: str) -> None:
        """Print one line for humans."""

    def emit(self, data: Any, *, columns: Sequence[str] | None = None) -> None:
        """Print ``data`` as JSON with ``--json``, else as a table (rows of dicts) or text."""

    def started(self) -> AbstractAsyncContextManager[Invoker]:
        """Start the kernel from the same config for the duration of a block."""

    async def fetch(
        self, url: str, *, socket_timeout: float = 10.0, headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        """GET ``url`` (http or https) for the command: ``(status, body)``, also for error statuses.

        The CLI process makes the request at the operator's command, so a plugin's CLI
        code needs no network permission of its own (e.g. ``report --from URL``).

        :raises ValueError: not an http(s) URL.
        :param socket_timeout: seconds each connect and read may wait.
        :raises OSError: the server cannot be reached (or timed out).
        """


@attrs.frozen
class CliCommand:
    """One ``orion-kernel NAME ...`` sub-command contributed by a plugin."""

    #: the sub-command's name; must not clash with the kernel's own commands
    name: str
    #: one line for ``orion-kernel --help``
    help: str
    #: runs with the parsed arguments; returns the exit code (may be async)
    run: Callable[[argparse.Namespace, CliEnvironment], int | Awaitable[int]]
    #: adds the command's own arguments (and sub-parsers) to its parser
    configure: Callable[[argparse.ArgumentParser], None] | None = None


#: ``await call("audit.verify", {...})``: one operation invoked as :data:`OPERATOR`
OperatorCall = Callable[..., Awaitable[Any]]


async def run_as_operator(
    env: CliEnvironment,
    plugin: str,
    work: Callable[[OperatorCall], Awaitable[int | None]],
    *,
    failure: int = 1,
    hint: str = "",
) -> int:
    """Start the kernel, run ``work`` with a caller that invokes as :data:`OPERATOR`, and
    turn what goes wrong into one line and an exit code -- the shape of an admin command.

    ``work`` returns the exit code (``None``: 0).  When ``plugin``'s operations are
    not there (the plugin is not enabled, or did not start) the line says so and
    how to enable it (``hint`` adds why it may not have started); any other SDK
    error is printed as ``error: ...``; both exit with ``failure``.
    """

    async def call(operation: str, args: Mapping[str, Any] | None = None) -> Any:
        return await kernel.invoke(operation, args or {}, principal=OPERATOR)

    try:
        async with env.started() as kernel:
            code = await work(call)
    except OperationNotFound as exc:
        if not str(exc.operation or "").startswith(f"{plugin}."):
            env.echo(f"error: {exc}")
            return failure
        env.echo(
            f"error: the {plugin} plugin is not running: enable it ([plugins.{plugin}] enabled = true) "
            f"and see the log above for why it did not start{f' ({hint})' if hint else ''}"
        )
        return failure
    except OrionError as exc:
        env.echo(f"error: {exc}")
        return failure
    return 0 if code is None else code


# Resolve string annotations before the public package renames __module__.
attrs.resolve_types(CliCommand)
