"""``orion-kernel auth``: manage API keys and issue tokens from the console.

Each sub-command starts the kernel from the same config (``env.started()``)
and calls the plugin's admin operation as :data:`plugin_sdk.OPERATOR`::

    orion-kernel auth keys create --principal P [--role R ...] [--expires-in SECONDS] [--kind K]
    orion-kernel auth keys list
    orion-kernel auth keys revoke ID
    orion-kernel auth token issue --subject S [--role R ...] [--ttl SECONDS] [--audience A] [--kind K]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC
from datetime import datetime
from pathlib import Path
from typing import Any

from plugin_sdk import CliCommand
from plugin_sdk import CliEnvironment
from plugin_sdk import OperatorCall
from plugin_sdk import run_as_operator

_LIST_COLUMNS = ["id", "principal", "kind", "roles", "state", "created", "expires", "last_used"]


def _common(parser: argparse.ArgumentParser) -> None:
    # The global options, accepted after the sub-sub-command too (`auth keys list --json`).
    parser.add_argument("-c", "--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable JSON output")


def configure(parser: argparse.ArgumentParser) -> None:
    """The ``auth`` command's sub-commands."""
    groups = parser.add_subparsers(dest="auth_group", metavar="{keys,token}", required=True)
    keys = groups.add_parser("keys", help="API keys: create, list, revoke").add_subparsers(
        dest="auth_action", metavar="{create,list,revoke}", required=True
    )
    create = keys.add_parser("create", help="create an API key (shown once)")
    create.add_argument("--principal", required=True, help="the principal id the key authenticates as")
    create.add_argument("--role", action="append", default=[], dest="roles", help="a role (repeatable)")
    create.add_argument("--expires-in", type=float, default=None, metavar="SECONDS", help="lifetime in seconds")
    create.add_argument("--kind", default="service", help="the principal's kind (default: service)")
    _common(create)
    listing = keys.add_parser("list", help="every API key, without secrets")
    _common(listing)
    revoke = keys.add_parser("revoke", help="revoke an API key")
    revoke.add_argument("id", help="the key id (the middle part of the key)")
    _common(revoke)
    token = groups.add_parser("token", help="JWTs: issue").add_subparsers(
        dest="auth_action", metavar="{issue}", required=True
    )
    issue = token.add_parser("issue", help="issue a signed JWT")
    issue.add_argument("--subject", required=True, help="the token's 'sub'")
    issue.add_argument("--role", action="append", default=[], dest="roles", help="a role (repeatable)")
    issue.add_argument("--ttl", type=float, default=None, metavar="SECONDS", help="lifetime (default: token_ttl)")
    issue.add_argument("--audience", default=None, help="the token's 'aud'")
    issue.add_argument("--kind", default="user", help="the principal's kind (default: user)")
    _common(issue)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def run(args: argparse.Namespace, env: CliEnvironment) -> int:
    """Run one sub-command; exit code 1 with a message when the operation fails."""
    action = (args.auth_group, args.auth_action)
    operations: dict[tuple[str, str], tuple[str, Callable[[], dict[str, Any]]]] = {
        ("keys", "create"): (
            "auth.keys.create",
            lambda: {
                "principal": args.principal,
                "roles": args.roles,
                "expires_in": args.expires_in,
                "kind": args.kind,
            },
        ),
        ("keys", "list"): ("auth.keys.list", dict),
        ("keys", "revoke"): ("auth.keys.revoke", lambda: {"id": args.id}),
        ("token", "issue"): (
            "auth.token.issue",
            lambda: {
                "subject": args.subject,
                "roles": args.roles,
                "ttl": args.ttl,
                "audience": args.audience,
                "kind": args.kind,
            },
        ),
    }
    operation, make_args = operations[action]
    call_args = make_args()

    async def work(call: OperatorCall) -> None:
        result = await call(operation, call_args)
        if env.json:
            env.emit(result)
        elif action == ("keys", "create"):
            env.echo(f"created API key {result['id']} for {result['principal']} (expires: {_when(result['expires'])})")
            env.echo(result["key"])
            env.echo("store it now: it is not shown again")
        elif action == ("keys", "list"):
            rows = [
                {
                    **row,
                    "roles": ",".join(row["roles"]) or "-",
                    "created": _when(row["created"]),
                    "expires": _when(row["expires"]),
                    "last_used": _when(row["last_used"]),
                }
                for row in result
            ]
            env.emit(rows, columns=_LIST_COLUMNS) if rows else env.echo("no API keys")
        elif action == ("keys", "revoke"):
            env.echo(f"revoked API key {result['id']} ({result['principal']})")
        else:
            env.echo(result["token"])

    return await run_as_operator(env, "auth", work)


def auth_command() -> CliCommand:
    """The ``orion-kernel auth`` command."""
    return CliCommand(
        name="auth",
        help="API keys (create, list, revoke) and JWTs (issue) of the auth plugin",
        configure=configure,
        run=run,
    )
