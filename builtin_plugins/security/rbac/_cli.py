"""``orion-kernel rbac check PRINCIPAL ACTION [--role R ...] [--kind K]``: which rule decides.

The command starts the kernel from the same config (``env.started()``) and
asks the ``rbac.explain`` operation as the operator, so the answer is the
running policy's, policy file and ``authorize`` hook included.  Exit codes:
0 allowed, 1 denied, 2 the check could not be made (rbac not enabled or not
running, a kernel error).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from plugin_sdk import CliCommand
from plugin_sdk import CliEnvironment
from plugin_sdk import OperatorCall
from plugin_sdk import run_as_operator

#: exit codes of ``rbac check``
ALLOWED, DENIED, FAILED = 0, 1, 2


def configure(parser: argparse.ArgumentParser) -> None:
    """The ``rbac`` command's sub-commands and arguments."""
    sub = parser.add_subparsers(dest="rbac_command", metavar="ACTION", required=True)
    check = sub.add_parser(
        "check",
        help="explain whether PRINCIPAL may do ACTION: allowed or denied, the deciding rule, the role chain "
        "(exit 0 allowed, 1 denied, 2 error)",
    )
    check.add_argument("principal", metavar="PRINCIPAL", help="the principal id")
    check.add_argument("action", metavar="ACTION", help="e.g. invoke:tools.search (a bare name means invoke:NAME)")
    check.add_argument(
        "--role",
        "-r",
        dest="roles",
        action="append",
        default=[],
        metavar="R",
        help="a role the principal carries (repeat for more); bindings and default_roles are added",
    )
    check.add_argument(
        "--kind", default="user", help="the principal's kind (default user; 'anonymous' gets anonymous_roles)"
    )
    # The global options, accepted after the sub-command too (`rbac check bob tools.x --json`).
    check.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable JSON output")
    check.add_argument("-c", "--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def render(result: dict[str, Any]) -> list[str]:
    """The human-readable explanation."""
    principal = result.get("principal") or {}
    head = "allowed" if result["allowed"] else "denied"
    lines = [f"{head}: {result['action']} for principal {principal.get('id')!r} (kind {principal.get('kind')!r})"]
    lines.append(f"rule: {result['rule'] or '(none)'}")
    lines.append(f"why: {result['trail'] or result['reason']}")
    roles = [
        f"{r['role']} ({r['origin']})" if len(r["chain"]) == 1 else f"{r['role']} ({r['origin']}: {r['text']})"
        for r in result["effective_roles"]
    ]
    lines.append(f"effective roles: {', '.join(roles) or 'none'}")
    if result["unknown_roles"]:
        lines.append(f"roles the policy does not define (they grant nothing): {', '.join(result['unknown_roles'])}")
    if result["matches"]:
        lines.append("matching rules (a deny wins over every allow):")
        lines += [f"  {m['effect']:<5} {m['rule']}  [{m['trail']}]" for m in result["matches"]]
    policy = result.get("policy")
    if policy is not None and policy["rule"] != result["rule"]:
        verdict = "allowed" if policy["allowed"] else "denied"
        lines.append(f"policy alone: {verdict} ({policy['rule'] or policy['reason']})")
    for hook in result.get("hooks", []):
        detail = f" {hook['rule']}: {hook['reason']}" if hook["verdict"] != "abstain" else ""
        lines.append(f"hook authorize, plugin {hook['plugin']}: {hook['verdict']}{detail}")
    return lines


async def run(args: argparse.Namespace, env: CliEnvironment) -> int:
    """Ask the started kernel's ``rbac.explain``; print the answer; exit 0 allowed, 1 denied, 2 error."""
    request = {"action": args.action, "principal": args.principal, "kind": args.kind, "roles": list(args.roles)}

    async def work(call: OperatorCall) -> int:
        result = await call("rbac.explain", request)
        if env.json:
            env.emit(result)
        else:
            for line in render(result):
                env.echo(line)
        return ALLOWED if result["allowed"] else DENIED

    return await run_as_operator(env, "rbac", work, failure=FAILED)


def rbac_command() -> CliCommand:
    """The ``orion-kernel rbac`` command."""
    return CliCommand(
        name="rbac",
        help="role-based access control: 'rbac check PRINCIPAL ACTION' explains a decision",
        configure=configure,
        run=run,
    )
