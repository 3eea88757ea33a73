"""``orion-kernel secrets``: set, get, list and delete secrets; make a master key.

``set``, ``get``, ``list`` and ``delete`` start a kernel from the same config and
call the admin operations as :data:`plugin_sdk.OPERATOR`.  A value is read from
standard input (a prompt without echo on a terminal) or from an environment
variable (``--from-env VAR``), never from the command line, where ``ps`` and the
shell history would show it.  ``keygen`` needs no kernel: it prints a new
master key, or writes it to a 0600 key file with ``--out``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import sys
from pathlib import Path

from plugin_sdk import CliCommand
from plugin_sdk import CliEnvironment
from plugin_sdk import OperatorCall
from plugin_sdk import run_as_operator

from ._store import KEY_SIZE
from ._store import encode_key
from ._store import write_key_file


def configure(parser: argparse.ArgumentParser) -> None:
    """The ``secrets`` command's sub-commands."""
    sub = parser.add_subparsers(dest="secrets_action", required=True, metavar="ACTION")
    set_ = sub.add_parser(
        "set",
        help="store or replace a secret; the value comes from stdin or --from-env, never the command line",
        description="Store or replace a secret. The value is read from standard input (one trailing newline is "
        "dropped; on a terminal you are prompted without echo) or from the environment variable named by "
        "--from-env. There is deliberately no --value: a value on the command line is visible in ps and "
        "in the shell history.",
    )
    set_.add_argument("name", help="the secret's name, e.g. db_password or app.api_token")
    set_.add_argument("--from-env", metavar="VAR", default=None, help="take the value from this environment variable")
    get = sub.add_parser("get", help="print a secret's value")
    get.add_argument("name")
    sub.add_parser("list", help="list the stored names (never values)")
    delete = sub.add_parser("delete", help="remove a secret")
    delete.add_argument("name")
    keygen = sub.add_parser(
        "keygen",
        help="make a new master key: print it, or write a 0600 key file with --out",
        description="Make a random 32-byte master key. Without --out it is printed (for ORION_SECRETS_KEY); "
        "with --out PATH it is written to a new key file of mode 0600 (an existing file is never overwritten), "
        "for plugins.secrets.settings.master_key_file.",
    )
    keygen.add_argument("--out", type=Path, default=None, metavar="PATH", help="write a key file here (mode 0600)")


def _read_value(args: argparse.Namespace, env: CliEnvironment) -> str | None:
    if args.from_env is not None:
        value = os.environ.get(args.from_env)
        if value is None:
            env.echo(f"error: the environment variable {args.from_env} is not set")
            return None
        return value
    if sys.stdin is None:
        env.echo("error: no standard input to read the value from (use --from-env VAR)")
        return None
    if sys.stdin.isatty():
        return getpass.getpass(f"value for {args.name}: ")
    value = sys.stdin.read()
    if value.endswith("\r\n"):
        value = value[:-2]
    elif value.endswith("\n"):
        value = value[:-1]
    return value


def _keygen(args: argparse.Namespace, env: CliEnvironment) -> int:
    out: Path | None = args.out
    if out is None:
        key = encode_key(secrets.token_bytes(KEY_SIZE)).strip()
        if env.json:
            env.emit({"key": key})
        else:
            env.echo(key)
        return 0
    try:
        write_key_file(out)
    except FileExistsError:
        env.echo(f"error: {out} exists; not overwriting a key file (remove it first if you mean to)")
        return 1
    except OSError as exc:
        env.echo(f"error: cannot write {out}: {exc.strerror or exc}")
        return 1
    if env.json:
        env.emit({"key_file": str(out)})
    else:
        env.echo(f'wrote a new master key to {out} (mode 0600); set plugins.secrets.settings.master_key_file = "{out}"')
    return 0


async def run(args: argparse.Namespace, env: CliEnvironment) -> int:
    """Run one ``secrets`` action; exit code 1 with a message on failure."""
    action: str = args.secrets_action
    if action == "keygen":
        return _keygen(args, env)
    value: str | None = None
    if action == "set":
        value = _read_value(args, env)
        if value is None:
            return 1
        if value == "":
            env.echo("error: refusing to store an empty value")
            return 1

    async def work(call: OperatorCall) -> None:
        if action == "set":
            await call("secrets.set", {"name": args.name, "value": value})
            env.emit({"name": args.name, "stored": True} if env.json else f"secret {args.name!r} stored")
        elif action == "get":
            result = await call("secrets.get", {"name": args.name})
            env.emit(result if env.json else result["value"])
        elif action == "list":
            names = await call("secrets.list")
            if env.json:
                env.emit(names)
            else:
                env.echo("\n".join(names) if names else "(no secrets)")
        else:
            await call("secrets.delete", {"name": args.name})
            env.emit({"name": args.name, "deleted": True} if env.json else f"secret {args.name!r} deleted")

    return await run_as_operator(env, "secrets", work, hint="e.g. no master key")


def secrets_command() -> CliCommand:
    """The ``orion-kernel secrets`` command."""
    return CliCommand(
        name="secrets",
        help="manage the encrypted secret store: set, get, list, delete; keygen makes a master key",
        configure=configure,
        run=run,
    )
