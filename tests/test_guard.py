"""Sandbox layer 2: the in-process audit-hook guard, in record and enforce modes."""

from __future__ import annotations

import ctypes
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from kernel import Kernel
from kernel._guard import Guard
from plugin_sdk import Invocation
from plugin_sdk import PermissionDenied
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginState
from plugin_sdk import hookimpl
from plugin_sdk import hookspec

pytestmark = pytest.mark.anyio


class Specs:
    @hookspec()
    def touch(path: str) -> str:
        """Each impl reads ``path``.  :param path: a file."""
        raise NotImplementedError


class Toucher(Plugin):
    """Does, in start, whatever ``action`` says; records what came of it."""

    name = "toucher"
    version = "1.0.0"
    permissions: Any = ()

    def __init__(self, action: Any = None) -> None:
        self.action = action
        self.outcome: object = None
        self.error: BaseException | None = None

    async def start(self, ctx: PluginContext[Any]) -> None:
        self.ctx = ctx
        ctx.register_operation(f"{self.name}.read", self.read)
        if self.action is not None:
            try:
                self.outcome = self.action(self)
            except Exception as exc:
                self.error = exc

    async def read(self, inv: Invocation) -> str:
        return Path(inv.args["path"]).read_text()  # noqa: ASYNC240 - the blocking open is what the guard sees

    @hookimpl
    def touch(self, path: str) -> str:
        return Path(path).read_text()


class Reader(Toucher):
    name = "reader"


def kernel(mode: str, *plugins: Plugin, grants: dict[str, list[str]] | None = None, **kernel_extra: Any) -> Kernel:
    config: dict[str, Any] = {"kernel": {"sandbox": {"guard": mode}, **kernel_extra}, "plugins": {}}
    for name, permissions in (grants or {}).items():
        config["plugins"][name] = {"permissions": permissions}
    return Kernel(config, plugins=list(plugins), hookspecs=[Specs], environ={}, entry_points=False)


def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "secret.txt"
    path.parent.mkdir()
    path.write_text("s3cret")
    return path


async def test_off_creates_no_guard(tmp_path: Path) -> None:
    async with kernel("off", Toucher()) as k:
        assert k.guard is None


async def test_record_mode_attributes_and_records_but_never_refuses(tmp_path: Path) -> None:
    secret = secret_file(tmp_path)
    plugin = Toucher(lambda self: secret.read_text())
    async with kernel("record", plugin) as k:
        assert plugin.outcome == "s3cret" and plugin.error is None
        guard = k.guard
        assert isinstance(guard, Guard)
        denied = guard.denied("toucher")
    assert [(e.event, e.permission, e.allowed) for e in denied] == [("open", f"fs:read:{secret}", False)]


async def test_enforce_mode_refuses_what_the_plugin_does_not_hold(tmp_path: Path) -> None:
    secret = secret_file(tmp_path)
    plugin = Toucher(lambda self: secret.read_text())
    async with kernel("enforce", plugin):
        pass
    assert isinstance(plugin.error, PermissionDenied)
    message = str(plugin.error)
    assert "plugin 'toucher' may not open a file" in message
    # a grant alone cannot help (a plugin holds only what it asks for): the message says so
    assert f"fs:read:{secret}" in message and "its manifest does not ask for it" in message


async def test_enforce_mode_allows_grants_the_data_directory_and_imports(tmp_path: Path) -> None:
    secret = secret_file(tmp_path)

    def work(self: Toucher) -> tuple[str, str]:
        (self.ctx.data_dir / "note.txt").write_text("mine")
        import json.tool  # noqa: F401 - a lazy import reads the stdlib

        return secret.read_text(), (self.ctx.data_dir / "note.txt").read_text()

    class Granted(Toucher):
        name = "granted"
        permissions = (f"fs:read:{secret.parent}",)

    plugin = Granted(work)
    async with kernel("enforce", plugin, grants={"granted": [f"fs:read:{tmp_path}"]}) as k:
        assert k.plugins["granted"].state is PluginState.RUNNING
        assert k.guard is not None
        observed = k.guard.observed("granted")
    assert plugin.error is None, plugin.error
    assert plugin.outcome == ("s3cret", "mine")
    assert observed[f"fs:read:{secret}"] == (True, 1)


async def test_kernel_and_application_code_are_never_attributed(tmp_path: Path) -> None:
    secret = secret_file(tmp_path)
    async with kernel("enforce", Toucher()) as k:
        assert secret.read_text() == "s3cret"  # the app's own open, while a plugin is running
        assert k.guard is not None
        assert k.guard.events() == []


async def test_hook_impls_and_operation_handlers_are_attributed_to_their_plugin(tmp_path: Path) -> None:
    secret = secret_file(tmp_path)
    async with kernel("enforce", Toucher(), Reader(), grants={"reader": []}) as k:
        assert k.hooks.call(Specs.touch, path=str(secret)) == []  # both refused, isolated, skipped
        with pytest.raises(PermissionDenied, match="plugin 'toucher' may not open a file"):
            await k.invoke("toucher.read", {"path": str(secret)})
        assert k.guard is not None
        by_plugin = {e.plugin for e in k.guard.denied()}
    assert by_plugin == {"toucher", "reader"}  # one class hierarchy, two instances: told apart by self


async def test_code_reached_through_a_library_is_attributed_to_the_calling_plugin(tmp_path: Path) -> None:
    secret = secret_file(tmp_path)

    def through_libraries(self: Toucher) -> object:
        import shutil

        return shutil.copyfile(secret, tmp_path / "copy.txt")

    plugin = Toucher(through_libraries)
    async with kernel("record", plugin) as k:
        assert k.guard is not None
        permissions = {e.permission for e in k.guard.denied("toucher")}
    assert f"fs:read:{secret}" in permissions
    assert f"fs:write:{tmp_path / 'copy.txt'}" in permissions


async def test_threads_and_spawned_tasks_of_a_plugin_are_attributed(tmp_path: Path) -> None:
    secret = secret_file(tmp_path)
    seen: list[object] = []

    class Busy(Plugin):
        name = "busy"
        version = "1.0.0"

        def work(self) -> None:
            try:
                seen.append(secret.read_text())
            except PermissionDenied as exc:
                seen.append(exc)

        async def start(self, ctx: PluginContext[Any]) -> None:
            thread = threading.Thread(target=self.work)
            thread.start()
            thread.join()
            # a library coroutine in a spawned task: no plugin frame, the task's context says who
            ctx.spawn(anyio.to_thread.run_sync, secret.read_text)

    async with kernel("enforce", Busy()) as k:
        assert k.guard is not None
        with anyio.fail_after(10):
            while len(events := [e for e in k.guard.events("busy") if not e.allowed]) < 2:  # noqa: ASYNC110
                await anyio.sleep(0.01)  # the spawned task's thread records its event when it gets to run
    assert isinstance(seen[0], PermissionDenied)
    assert len(events) == 2


async def test_subprocess_needs_its_permission() -> None:
    def run(self: Toucher) -> int:
        return subprocess.run([sys.executable, "-c", "pass"], check=True).returncode

    refused = Toucher(run)
    async with kernel("enforce", refused):
        pass
    assert isinstance(refused.error, PermissionDenied) and "subprocess" in str(refused.error)

    class Spawner(Toucher):
        name = "spawner"
        permissions = ("subprocess",)

    allowed = Spawner(run)
    async with kernel("enforce", allowed, grants={"spawner": ["subprocess"]}):
        pass
    assert allowed.error is None and allowed.outcome == 0


async def test_ctypes_loading_needs_ffi() -> None:
    plugin = Toucher(lambda self: ctypes.CDLL(None))
    async with kernel("enforce", plugin):
        pass
    assert isinstance(plugin.error, PermissionDenied) and "ffi" in str(plugin.error)


async def test_sockets_need_net_permissions() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def connect(host: str) -> Any:
        def action(self: Toucher) -> str:
            with socket.create_connection((host, port), timeout=2):
                return "connected"

        return action

    try:
        refused = Toucher(connect("127.0.0.1"))
        async with kernel("enforce", refused):
            pass
        assert isinstance(refused.error, PermissionDenied)
        assert f"net:connect:127.0.0.1:{port}" in str(refused.error)

        class Client(Toucher):
            name = "client"
            permissions = (f"net:connect:localhost:{port}",)

        by_name = Client(connect("localhost"))  # resolved by name: the name is checked, then the port
        async with kernel("enforce", by_name, grants={"client": [f"net:connect:localhost:{port}"]}):
            pass
        assert by_name.error is None and by_name.outcome == "connected"

        def listen(self: Toucher) -> None:
            socket.create_server(("127.0.0.1", 0)).close()

        no_listen = Toucher(listen)
        async with kernel("enforce", no_listen):
            pass
        assert isinstance(no_listen.error, PermissionDenied) and "net:listen:127.0.0.1:0" in str(no_listen.error)
    finally:
        listener.close()


async def test_the_guard_goes_quiet_when_its_kernel_stops(tmp_path: Path) -> None:
    secret = secret_file(tmp_path)
    plugin = Toucher()
    async with kernel("enforce", plugin) as k:
        guard = k.guard
    assert guard is not None
    assert plugin.touch(str(secret)) == "s3cret"  # the kernel stopped: nobody is refused
    assert guard.events() == []


def test_the_source_of_loaded_modules_stays_readable_for_tracebacks() -> None:
    # linecache reads it when a traceback is formatted, whoever's context that happens in;
    # an editable install does not put the project on sys.path, so this is its own rule
    import kernel._guard as guard_module

    assert guard_module._in_loaded_code(str(Path(guard_module.__file__).resolve()))


def test_the_data_files_of_loaded_packages_stay_readable() -> None:
    # templates and static assets shipped inside a package are part of its code
    import builtin_plugins.monitoring.dashboard as dashboard
    import kernel._guard as guard_module

    static = Path(dashboard.__file__).resolve().parent / "static" / "index.html"
    assert guard_module._in_loaded_code(str(static))
    assert not guard_module._in_loaded_code("/etc/passwd")
    assert not guard_module._in_loaded_code(str(static.parent.parent.parent.parent.parent / "orion.toml"))
