"""``orion-kernel keys``: list, rotate and retire the crypto plugin's keys.

Each action starts a kernel from the same config and calls the admin
operation as :data:`plugin_sdk.OPERATOR`.  A kernel that is already running
picks a rotation up within ``refresh_interval`` seconds (it re-reads the
stored keyring).  Key material is never printed.
"""

from __future__ import annotations

import argparse

from plugin_sdk import OPERATOR
from plugin_sdk import CliCommand
from plugin_sdk import CliEnvironment
from plugin_sdk import OperationNotFound
from plugin_sdk import OrionError


def configure(parser: argparse.ArgumentParser) -> None:
    """The ``keys`` command's sub-commands."""
    sub = parser.add_subparsers(dest="keys_action", required=True, metavar="ACTION")
    sub.add_parser("list", help="key ids and creation times, the current key first (never key material)")
    sub.add_parser("rotate", help="make a new current key; old keys stay, so old ciphertexts still decrypt")
    retire = sub.add_parser(
        "retire",
        help="drop an old key for good: what it encrypted no longer decrypts (re-encrypt first)",
    )
    retire.add_argument("key_id")
    retire.add_argument("--yes", action="store_true", help="confirm: data under this key becomes undecryptable")


async def run(args: argparse.Namespace, env: CliEnvironment) -> int:
    """Run one ``keys`` action; exit code 1 with a message on failure."""
    action: str = args.keys_action
    if action == "retire" and not args.yes:
        env.echo(
            f"error: retiring {args.key_id} makes every ciphertext and token under it undecryptable; "
            "re-encrypt them first (crypto.reencrypt), then run again with --yes"
        )
        return 1
    try:
        async with env.started() as kernel:
            if action == "list":
                keys = await kernel.invoke("crypto.keys.list", {}, principal=OPERATOR)
                env.emit(keys, columns=["id", "created", "current"])
            elif action == "rotate":
                done = await kernel.invoke("crypto.keys.rotate", {}, principal=OPERATOR)
                if env.json:
                    env.emit(done)
                else:
                    env.echo(f"new current key {done['key_id']} ({len(done['key_ids'])} key(s) held)")
            else:
                done = await kernel.invoke("crypto.keys.retire", {"key_id": args.key_id}, principal=OPERATOR)
                if env.json:
                    env.emit(done)
                else:
                    env.echo(f"retired key {done['retired']} ({len(done['key_ids'])} key(s) held)")
    except OperationNotFound:
        env.echo(
            "error: the crypto plugin is not running: enable it ([plugins.crypto] enabled = true) and see the "
            "log above for why it did not start"
        )
        return 1
    except OrionError as exc:
        env.echo(f"error: {exc}")
        return 1
    return 0


def keys_command() -> CliCommand:
    """The ``orion-kernel keys`` command."""
    return CliCommand(
        name="keys",
        help="the crypto plugin's keys: list, rotate, retire",
        configure=configure,
        run=run,
    )
