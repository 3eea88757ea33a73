"""``orion-kernel keys``: list, rotate and retire the crypto plugin's keys.

Each action starts a kernel from the same config and calls the admin
operation as :data:`plugin_sdk.OPERATOR`.  A kernel that is already running
picks a rotation up within ``refresh_interval`` seconds (it re-reads the
stored keyring).  Key material is never printed.
"""

from __future__ import annotations

import argparse

from plugin_sdk import CliCommand
from plugin_sdk import CliEnvironment
from plugin_sdk import OperatorCall
from plugin_sdk import run_as_operator


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

    async def work(call: OperatorCall) -> None:
        if action == "list":
            env.emit(await call("crypto.keys.list"), columns=["id", "created", "current"])
            return
        if action == "rotate":
            done = await call("crypto.keys.rotate")
            text = f"new current key {done['key_id']} ({len(done['key_ids'])} key(s) held)"
        else:
            done = await call("crypto.keys.retire", {"key_id": args.key_id})
            text = f"retired key {done['retired']} ({len(done['key_ids'])} key(s) held)"
        env.emit(done) if env.json else env.echo(text)

    return await run_as_operator(env, "crypto", work)


def keys_command() -> CliCommand:
    """The ``orion-kernel keys`` command."""
    return CliCommand(
        name="keys",
        help="the crypto plugin's keys: list, rotate, retire",
        configure=configure,
        run=run,
    )
