"""The ``secrets`` plugin: named secrets in one encrypted file, handed out per consumer.

Each consuming plugin gets its own view of the ``secrets`` service
(``PerConsumer``): it may read, write and delete names in its own namespace
``<plugin>.<rest>``, and read other names only under a ``secrets:NAME`` grant.
Operators manage the store through the admin operations ``secrets.set``,
``secrets.get``, ``secrets.list`` and ``secrets.delete`` (``orion-kernel secrets
...``), which refuse callers whose principal kind is not in ``admin_kinds``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from typing import ClassVar
from typing import Final

import anyio
import anyio.to_thread

from plugin_sdk import OPERATOR
from plugin_sdk import CliCommand
from plugin_sdk import ConfigIssue
from plugin_sdk import Consumer
from plugin_sdk import HealthStatus
from plugin_sdk import InvalidArguments
from plugin_sdk import Invocation
from plugin_sdk import PerConsumer
from plugin_sdk import PermissionDenied
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginError
from plugin_sdk import Principal
from plugin_sdk import SecretNotFound
from plugin_sdk import hookimpl
from plugin_sdk import require_kind

from ._cli import secrets_command
from ._config import SecretsSettings
from ._store import STORE_FILE
from ._store import InvalidSecretName
from ._store import MasterKey
from ._store import SecretFile
from ._store import check_name
from ._store import resolve_master_key

_NO_VALUE: Final = object()


class SecretsBackend:
    """The store as the plugin's coroutines use it: reads from memory, writes through a worker thread.

    Writers are serialised by an ``anyio.Lock`` (so concurrent ``set()`` calls all
    persist, none lost) and, across processes, by the file's ``flock``.  A read first
    ``stat``s the file and reloads it when another process changed it.
    """

    def __init__(self, file: SecretFile) -> None:
        self.file = file
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"<SecretsBackend {str(self.file.path)!r}>"

    async def load(self) -> None:
        async with self._lock:
            await anyio.to_thread.run_sync(self.file.load)

    async def refresh(self) -> None:
        if self.file.changed():
            async with self._lock:
                await anyio.to_thread.run_sync(self.file.reload_if_changed)

    async def get(self, name: str) -> str:
        await self.refresh()
        value = self.file.secrets.get(name)
        if value is None:
            raise SecretNotFound(name)
        return value

    async def names(self) -> list[str]:
        await self.refresh()
        return sorted(self.file.secrets)

    async def set(self, name: str, value: str) -> None:
        def change(draft: dict[str, str]) -> tuple[bool, None]:
            if draft.get(name) == value:
                return False, None
            draft[name] = value
            return True, None

        async with self._lock:
            await anyio.to_thread.run_sync(self.file.mutate, change)

    async def delete(self, name: str) -> None:
        def change(draft: dict[str, str]) -> tuple[bool, bool]:
            found = draft.pop(name, _NO_VALUE) is not _NO_VALUE
            return found, found

        async with self._lock:
            found = await anyio.to_thread.run_sync(self.file.mutate, change)
        if not found:
            raise SecretNotFound(name)


def _check_value(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"a secret's value must be a str, got {type(value).__name__}")  # never the value
    return value


class SecretsView:
    """One consuming plugin's view of the store (what ``ctx.service("secrets")`` returns to it).

    Satisfies :class:`plugin_sdk.SecretStore`.  Names in the plugin's own namespace
    (``<plugin>.<rest>``) are its to read, write and delete; any other name it may only
    read, and only when its effective permissions hold ``secrets:NAME``.
    """

    def __init__(self, backend: SecretsBackend, consumer: Consumer) -> None:
        self._backend = backend
        self._consumer = consumer
        self._prefix = consumer.name + "."

    def __repr__(self) -> str:
        return f"<secrets view for plugin {self._consumer.name!r}>"

    @property
    def consumer(self) -> str:
        """The consuming plugin's name."""
        return self._consumer.name

    def _own(self, name: str) -> bool:
        return name.startswith(self._prefix) and len(name) > len(self._prefix)

    def may_read(self, name: str) -> bool:
        """Whether this consumer may read ``name`` (a valid name)."""
        return self._own(name) or self._consumer.permissions.allows(f"secrets:{name}")

    def _check_read(self, name: str) -> None:
        if not self.may_read(name):
            who = self._consumer.name
            raise PermissionDenied(
                f"plugin {who!r} may not read secret {name!r}: it reads freely only names in its own namespace "
                f"'{who}.*'; for any other name its manifest must ask for \"secrets:{name}\" and orion.toml must "
                f'grant it under [plugins.{who}]: permissions = ["secrets:{name}"]'
            )

    def _check_write(self, name: str, verb: str) -> None:
        if not self._own(name):
            who = self._consumer.name
            raise PermissionDenied(
                f"plugin {who!r} may not {verb} secret {name!r}: a plugin writes and deletes only names in its own "
                f"namespace '{who}.*' (a secrets:NAME grant allows reading only); operators set other names with "
                f"`orion-kernel secrets set {name}`"
            )

    async def get(self, name: str) -> str:
        """The secret's value.  :raises SecretNotFound: nothing under ``name``.  :raises PermissionDenied:"""
        check_name(name)
        self._check_read(name)
        return await self._backend.get(name)

    async def set(self, name: str, value: str) -> None:
        """Store or replace a secret in this plugin's namespace; durable when this returns."""
        check_name(name)
        self._check_write(name, "write")
        await self._backend.set(name, _check_value(value))

    async def delete(self, name: str) -> None:
        """Remove a secret of this plugin's namespace.  :raises SecretNotFound: nothing under ``name``."""
        check_name(name)
        self._check_write(name, "delete")
        await self._backend.delete(name)

    async def names(self) -> list[str]:
        """The stored names this plugin may read, sorted."""
        return [name for name in await self._backend.names() if self.may_read(name)]


def _args(inv: Invocation, allowed: tuple[str, ...]) -> dict[str, Any]:
    args = dict(inv.args)
    issues = [
        ConfigIssue(f"args.{key}", f"unexpected argument (allowed: {', '.join(allowed) or 'none'})")
        for key in args
        if key not in allowed
    ]
    if issues:
        raise InvalidArguments(inv.operation, issues)
    return args


def _name_arg(inv: Invocation, args: Mapping[str, Any]) -> str:
    if "name" not in args:
        raise InvalidArguments(inv.operation, [ConfigIssue("args.name", "missing: the secret's name")])
    try:
        return check_name(args["name"])
    except InvalidSecretName as exc:
        raise InvalidArguments(inv.operation, [ConfigIssue("args.name", str(exc))]) from None


class Secrets(Plugin):
    """Named secrets, encrypted at rest with AES-256-GCM, one namespace per consuming plugin.

    Service ``secrets`` (a :class:`plugin_sdk.SecretStore` per consumer); admin
    operations ``secrets.set``, ``secrets.get``, ``secrets.list``, ``secrets.delete``;
    CLI ``orion-kernel secrets set|get|list|delete|keygen``.
    """

    name = "secrets"
    version = "1.0.0"
    provides = ("secrets",)
    #: the master key file, when one is configured (a relative one is in the data directory)
    permissions = ("fs:read:{master_key_file}",)
    Config = SecretsSettings
    priority = 0

    conformance_settings: ClassVar[Mapping[str, Any]] = {"master_key_file": "master.key", "create_key_file": True}
    conformance_principal: ClassVar[Principal | None] = OPERATOR  # its operations are admin-only
    conformance_bad_settings: ClassVar[tuple[Mapping[str, Any], ...]] = (
        {"master_key_env": "NOT A NAME"},
        {"scrypt_log_n": 4},
        {"admin_kinds": ["has space"]},
    )
    conformance_opt_out: ClassVar[Mapping[str, str]] = {
        "services.protocols": "the service is provided PerConsumer: the suite inspects the PerConsumer wrapper, not "
        "a consumer's view; tests/security/test_secrets.py holds each view to SecretStore",
    }

    def __init__(self, *, environ: Mapping[str, str] | None = None) -> None:
        #: where the master key's environment variable is looked up (default: os.environ, at start)
        self._environ = environ
        self._ctx: PluginContext[SecretsSettings] | None = None
        self._backend: SecretsBackend | None = None
        self._master: MasterKey | None = None

    def __repr__(self) -> str:
        return f"<Secrets plugin {self.name!r} {self.version}>"

    async def start(self, ctx: PluginContext[SecretsSettings]) -> None:
        settings = ctx.settings
        data_dir = ctx.data_dir
        environ = self._environ if self._environ is not None else os.environ
        master, created = await anyio.to_thread.run_sync(
            lambda: resolve_master_key(
                key_file=settings.master_key_file,
                env_name=settings.master_key_env,
                create_key_file=settings.create_key_file,
                data_dir=data_dir,
                environ=environ,
            )
        )
        if created:
            ctx.log.warning(
                "secrets: created the master key file %s (create_key_file = true); keep it away from copies "
                "of the store, or use a key file elsewhere or the %s environment variable",
                master.source.removeprefix("key file "),
                settings.master_key_env,
            )
        backend = SecretsBackend(SecretFile(Path(data_dir) / STORE_FILE, master, scrypt_log_n=settings.scrypt_log_n))
        await backend.load()  # DecryptionFailed: wrong key or tampered file -- the plugin does not start
        if backend.file.loose_mode:
            ctx.log.warning(
                "secrets: %s is readable by group or others; it is rewritten 0600 at the next change",
                backend.file.path,
            )
        self._ctx, self._backend, self._master = ctx, backend, master
        ctx.provide("secrets", PerConsumer(self.view_for))
        ctx.register_operation("secrets.set", self._op_set, doc="Store or replace a secret (admin).")
        ctx.register_operation("secrets.get", self._op_get, doc="A secret's value (admin).")
        ctx.register_operation(
            "secrets.list", self._op_list, doc="The names of every stored secret (admin).", example_args={}
        )
        ctx.register_operation("secrets.delete", self._op_delete, doc="Remove a secret (admin).")
        ctx.log.info(
            "secrets: %d secret(s) in %s, master key from %s",
            len(backend.file.secrets),
            backend.file.path,
            master.source,
        )

    async def stop(self) -> None:
        self._ctx = None
        self._backend = None
        self._master = None

    def view_for(self, consumer: Consumer) -> SecretsView:
        """The ``secrets`` service as ``consumer`` sees it."""
        return SecretsView(self._backend_or_raise(), consumer)

    def _backend_or_raise(self) -> SecretsBackend:
        if self._backend is None:
            raise PluginError("secrets: the plugin is not running", plugin=self.name)
        return self._backend

    # -- admin operations ----------------------------------------------------------------

    def _admin(self, inv: Invocation) -> str:
        if self._ctx is None:
            raise PluginError("secrets: the plugin is not running", plugin=self.name)
        return require_kind(inv, self._ctx.settings.admin_kinds, setting="plugins.secrets.settings.admin_kinds").id

    async def _op_set(self, inv: Invocation) -> dict[str, Any]:
        """Store or replace a secret: ``{"name": ..., "value": ...}``."""
        actor = self._admin(inv)
        args = _args(inv, ("name", "value"))
        name = _name_arg(inv, args)
        value = args.get("value")
        if not isinstance(value, str):
            problem = (
                "missing: the secret's value"
                if "value" not in args
                else f"expected a string, got {type(value).__name__}"
            )
            raise InvalidArguments(inv.operation, [ConfigIssue("args.value", problem)])
        await self._backend_or_raise().set(name, value)
        self._log_admin("set", name, actor)
        return {"name": name, "stored": True}

    async def _op_get(self, inv: Invocation) -> dict[str, Any]:
        """A secret's value: ``{"name": ...}`` -> ``{"name": ..., "value": ...}``."""
        actor = self._admin(inv)
        name = _name_arg(inv, _args(inv, ("name",)))
        value = await self._backend_or_raise().get(name)
        self._log_admin("read", name, actor)
        return {"name": name, "value": value}

    async def _op_list(self, inv: Invocation) -> list[str]:
        """Every stored name, sorted (never values)."""
        self._admin(inv)
        _args(inv, ())
        return await self._backend_or_raise().names()

    async def _op_delete(self, inv: Invocation) -> dict[str, Any]:
        """Remove a secret: ``{"name": ...}``."""
        actor = self._admin(inv)
        name = _name_arg(inv, _args(inv, ("name",)))
        await self._backend_or_raise().delete(name)
        self._log_admin("deleted", name, actor)
        return {"name": name, "deleted": True}

    def _log_admin(self, verb: str, name: str, actor: str) -> None:
        if self._ctx is not None:
            self._ctx.log.info("secrets: secret %r %s by %s", name, verb, actor)  # names only, never values

    # -- hooks -------------------------------------------------------------------------------

    @hookimpl
    def cli_commands(self) -> list[CliCommand]:
        """``orion-kernel secrets set|get|list|delete|keygen``."""
        return [secrets_command()]

    @hookimpl
    async def check_health(self) -> HealthStatus:
        """Unhealthy when the store's file changed on disk and no longer decrypts."""
        backend = self._backend
        if backend is None:
            return HealthStatus(ok=False, reason="not running")
        try:
            await backend.refresh()
        except Exception as exc:
            return HealthStatus(ok=False, reason=f"{type(exc).__name__}: {exc}")
        return HealthStatus(ok=True, reason=f"{len(backend.file.secrets)} secret(s)")
