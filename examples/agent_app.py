"""An agent app that embeds Orion Kernel and routes its tool calls through it.

Run:  python examples/agent_app.py

The app registers its tools as operations of a plugin it passes in code;
every call goes through ``kernel.invoke`` and so through whatever middleware
the enabled plugins contribute (here, a tiny audit middleware of its own).
"""

from __future__ import annotations

import anyio
import attrs

from kernel import Kernel
from plugin_sdk import CallNext
from plugin_sdk import Invocation
from plugin_sdk import Phase
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import Principal


@attrs.frozen
class SearchArgs:
    query: str
    limit: int = 3


@attrs.frozen
class ToolSettings:
    corpus: tuple[str, ...] = ("orion kernel", "plugin sdk", "hook dispatch", "invoke pipeline")


class AgentTools(Plugin):
    """The app's own tools, exposed as operations."""

    name = "agent_tools"
    version = "1.0.0"
    Config = ToolSettings

    async def start(self, ctx: PluginContext[ToolSettings]) -> None:
        self.corpus = ctx.settings.corpus
        ctx.register_operation("tools.search", self.search, args_type=SearchArgs, example_args={"query": "hook"})
        ctx.register_middleware(self.audit, phase=Phase.OBSERVE)
        self.log = ctx.log

    async def search(self, inv: Invocation) -> list[str]:
        """Find corpus entries containing the query."""
        args: SearchArgs = inv.params
        return [doc for doc in self.corpus if args.query in doc][: args.limit]

    async def audit(self, inv: Invocation, call_next: CallNext) -> object:
        who = inv.principal.id if inv.principal else "anonymous"
        result = await call_next(inv)
        print(f"audit: {who} called {inv.operation}({dict(inv.args)}) -> {result!r}")
        return result


async def main() -> None:
    config = {"plugins": {"agent_tools": {"settings": {"corpus": ["hook dispatch", "hook specs", "invoke"]}}}}
    async with Kernel.from_config(config, plugins=[AgentTools()]) as kernel:
        hits = await kernel.invoke("tools.search", {"query": "hook"}, principal=Principal("ada"))
        print("search results:", hits)
        for info in kernel.plugins.values():
            print(f"plugin {info.name} {info.version}: {info.state.value}")


if __name__ == "__main__":
    anyio.run(main)
