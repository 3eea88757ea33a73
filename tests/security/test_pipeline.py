"""The security family together, from config: auth -> rbac -> handler, audited, with secrets and crypto.

One kernel configured the way an operator would (``orion.toml`` as a dict),
the real plugins only: an API key created through the admin operation,
authenticated calls allowed and denied by the policy, calls without
credentials refused, every decision in the audit log, and the log verifying.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from kernel import Kernel
from plugin_sdk import OPERATOR
from plugin_sdk import Credentials
from plugin_sdk import Invocation
from plugin_sdk import NotAuthenticated
from plugin_sdk import PermissionDenied
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginState

pytestmark = pytest.mark.anyio


class Tools(Plugin):
    """The app's operations."""

    name = "tools"

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.register_operation("tools.search", self.search)
        ctx.register_operation("tools.delete", self.delete)

    async def search(self, inv: Invocation) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()
        assert inv.principal is not None
        return {"who": inv.principal.id, "q": inv.args.get("q")}

    async def delete(self, inv: Invocation) -> str:
        return "deleted"


def security_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "kernel": {"data_dir": str(tmp_path / "data")},
        "plugins": {
            "secrets": {"enabled": True},
            "crypto": {"enabled": True},
            "audit": {"enabled": True, "settings": {"fsync": "never"}},
            "auth": {"enabled": True},
            "rbac": {
                "enabled": True,
                "settings": {
                    "roles": {
                        "viewer": {"allow": ["tools.search"]},
                        "analyst": {"inherits": ["viewer"], "deny": ["tools.delete"]},
                    }
                },
            },
        },
    }


@pytest.fixture(autouse=True)
def _master_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORION_SECRETS_KEY", base64.b64encode(os.urandom(32)).decode())


@asynccontextmanager
async def secured(tmp_path: Path) -> AsyncIterator[tuple[Kernel, str]]:
    async with Kernel(security_config(tmp_path), plugins=[Tools()]) as kernel:
        states = {name: info.state for name, info in kernel.plugins.items() if info.enabled}
        assert all(state is PluginState.RUNNING for state in states.values()), {
            name: kernel.plugins[name].last_error for name, state in states.items() if state is not PluginState.RUNNING
        }
        created = await kernel.invoke(
            "auth.keys.create", {"principal": "ada", "roles": ["analyst"]}, principal=OPERATOR
        )
        yield kernel, created["key"]


async def test_an_authenticated_call_goes_through_and_a_denied_one_names_the_rule(tmp_path: Path) -> None:
    async with secured(tmp_path) as (kernel, key):
        creds = Credentials.api_key(key)
        assert await kernel.invoke("tools.search", {"q": "x"}, credentials=creds) == {"who": "ada", "q": "x"}
        with pytest.raises(PermissionDenied, match=r"tools\.delete") as denied:
            await kernel.invoke("tools.delete", credentials=creds)
        assert "analyst" in str(denied.value)
        with pytest.raises(NotAuthenticated):
            await kernel.invoke("tools.search")
        with pytest.raises(NotAuthenticated):
            await kernel.invoke("tools.search", credentials=Credentials.api_key(key[:-2] + "zz"))
        assert key not in str(denied.value)


async def test_every_decision_is_in_the_audit_log_and_it_verifies(tmp_path: Path) -> None:
    async with secured(tmp_path) as (kernel, key):
        creds = Credentials.api_key(key)
        await kernel.invoke("tools.search", credentials=creds)
        with pytest.raises(PermissionDenied):
            await kernel.invoke("tools.delete", credentials=creds)
        with pytest.raises(NotAuthenticated):
            await kernel.invoke("tools.search")
        verification = await kernel.invoke("audit.verify", principal=OPERATOR)
        assert verification["ok"] is True, verification
    log = (tmp_path / "data" / "audit" / "audit.log").read_bytes()
    entries = [orjson.loads(line) for line in log.splitlines()]
    invokes = [(e["actor"], e["details"].get("operation"), e["outcome"]) for e in entries if e["action"] == "invoke"]
    assert ("ada", "tools.search", "ok") in invokes
    assert ("ada", "tools.delete", "denied") in invokes
    assert (None, "tools.search", "unauthenticated") in invokes
    assert any(e["action"] == "auth.key.created" for e in entries)
    assert key.encode() not in log  # the key itself never reaches the log
    assert key.rsplit("_", 1)[1].encode() not in log


async def test_a_thousand_concurrent_authenticated_invokes_have_no_errors(tmp_path: Path) -> None:
    async with secured(tmp_path) as (kernel, key):
        creds = Credentials.api_key(key)
        results: list[Any] = []

        async def one(i: int) -> None:
            results.append(await kernel.invoke("tools.search", {"q": i}, credentials=creds))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for i in range(1000):
                    group.start_soon(one, i)
        assert sorted(r["q"] for r in results) == list(range(1000))
        assert {r["who"] for r in results} == {"ada"}
        verification = await kernel.invoke("audit.verify", principal=OPERATOR)
        assert verification["ok"] is True and verification["entries"] >= 1000


async def test_the_middleware_runs_in_the_documented_order(tmp_path: Path) -> None:
    async with secured(tmp_path) as (kernel, _):
        order = [plugin for plugin, _ in kernel.middleware_order()]
        assert order.index("audit") < order.index("auth") < order.index("rbac")


async def test_encrypted_data_and_secrets_survive_a_restart(tmp_path: Path) -> None:
    config = security_config(tmp_path)
    async with Kernel(config, plugins=[Tools()]) as kernel:
        encryptor = kernel._lifecycle.records["crypto"].provided["encryptor"]
        sealed = encryptor.encrypt(b"ledger", associated_data=b"row-1")
        await kernel.invoke("secrets.set", {"name": "db_password", "value": "hunter2"}, principal=OPERATOR)
    async with Kernel(config, plugins=[Tools()]) as kernel:
        encryptor = kernel._lifecycle.records["crypto"].provided["encryptor"]
        assert encryptor.decrypt(sealed, associated_data=b"row-1") == b"ledger"
        got = await kernel.invoke("secrets.get", {"name": "db_password"}, principal=OPERATOR)
        assert "hunter2" in str(got)
    store = next((tmp_path / "data" / "secrets").glob("*.enc")).read_bytes()
    assert b"hunter2" not in store and b"db_password" not in store
