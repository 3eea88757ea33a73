"""The ``auth`` plugin: who is calling.

Its middleware, at :attr:`~plugin_sdk.Phase.AUTHENTICATE`, turns the
credentials an invoke carries into ``inv.principal``:

- a principal the app passed is trusted and kept;
- an operation matching ``public_operations`` skips authentication;
- an API key (``<prefix>_<key id>_<secret>``) is checked against its keyed
  hash; a bearer JWT against the configured keys; credentials that are not
  ours go to the ``authenticate`` hook, so other plugins can add schemes;
- no credentials: refused, or the anonymous principal (``anonymous``).

Failures are counted per subject and throttled.  The hot path is sync: one
HMAC for an API key, no I/O, no task; only the hook fallback awaits.
"""

from __future__ import annotations

import base64
import fnmatch
import hmac
import math
import os
import secrets
import stat
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from typing import ClassVar
from typing import Final
from typing import NoReturn

import anyio
import anyio.to_thread

from plugin_sdk import OPERATOR
from plugin_sdk import CallNext
from plugin_sdk import CliCommand
from plugin_sdk import Clock
from plugin_sdk import ConfigIssue
from plugin_sdk import Credentials
from plugin_sdk import HmacSha256
from plugin_sdk import InvalidArguments
from plugin_sdk import Invocation
from plugin_sdk import NotAuthenticated
from plugin_sdk import PermissionDenied
from plugin_sdk import Phase
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginError
from plugin_sdk import Principal
from plugin_sdk import SecretNotFound
from plugin_sdk import ServiceUnavailable
from plugin_sdk import SystemClock
from plugin_sdk import hookimpl
from plugin_sdk import hookspecs
from plugin_sdk import record_audit
from plugin_sdk import require_kind

from ._apikeys import KeyFile
from ._apikeys import KeyRecord
from ._apikeys import hash_key_check
from ._apikeys import new_key_id
from ._apikeys import new_secret
from ._cli import auth_command
from ._config import AuthSettings
from ._config import CreateKeyArgs
from ._config import IssueTokenArgs
from ._config import JwtKeySettings
from ._config import RevokeKeyArgs
from ._files import LocalSecrets
from ._jwt import JwtKey
from ._jwt import NotOurs
from ._jwt import TokenInvalid
from ._jwt import Verifier
from ._jwt import generate_ed25519_pem
from ._jwt import issue
from ._jwt import new_jti
from ._throttle import Throttle

#: the secret the API keys' hashes are keyed with
HASH_KEY_NAME: Final = "auth.hash_key"
#: files in the plugin's data directory
KEYS_FILE: Final = "api_keys.json"
LOCAL_SECRETS_FILE: Final = "local_secrets.json"
#: seconds between writes of the keys' ``last_used`` times
LAST_USED_FLUSH: Final = 60.0
#: the claim with the principal's kind in tokens
KIND_CLAIM: Final = "kind"
ANONYMOUS: Final = Principal(id="anonymous", kind="anonymous")
_PUBLIC_CACHE: Final = 4096


def _surrogate_safe(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _read_key_file(data_dir: Path, setting: str) -> tuple[bytes, int]:
    path = data_dir / os.path.expanduser(setting)  # relative to the data directory; an absolute path stays
    return path.read_bytes(), path.stat().st_mode


class Auth(Plugin):
    """API keys (stored hashed) and JWTs (HS256, EdDSA) turned into principals; the ``authenticator`` service.

    Operations ``auth.keys.create``, ``auth.keys.list``, ``auth.keys.revoke``,
    ``auth.token.issue`` (for ``admin_kinds`` principals); CLI ``orion-kernel auth``.
    """

    name = "auth"
    version = "1.0.0"
    provides = ("authenticator",)
    optional = ("secrets", "audit")
    #: a JWT key file outside the data directory is read only when granted
    permissions = ("fs:read:{jwt_keys.key_file}",)
    Config = AuthSettings
    conformance_principal: ClassVar[Principal | None] = OPERATOR  # its operations are admin-only
    conformance_settings: ClassVar[Mapping[str, Any]] = {
        "jwt_keys": [
            {"kid": "k1", "alg": "HS256", "secret": "auth.jwt.k1"},
            {"kid": "k2", "alg": "EdDSA", "secret": "auth.jwt.k2"},
        ],
        "issuer_kid": "k2",
    }
    conformance_bad_settings: ClassVar[list[Mapping[str, Any]]] = [
        {"anonymous": "maybe"},
        {"key_prefix": "o_k"},
        {"max_failures": 0},
        {"admin_kinds": ["anonymous"]},
        {"jwt_keys": [{"kid": "k1", "alg": "none", "secret": "auth.jwt.k1"}]},
        {"jwt_keys": [{"kid": "k1", "alg": "HS256"}]},
        {"jwt_keys": [{"kid": "k1", "alg": "HS256", "secret": "other.k1"}]},
        {"issuer_kid": "k9"},
    ]
    conformance_opt_out: ClassVar[Mapping[str, str]] = {
        "isolation.process": "it is the authenticate middleware of the invoke pipeline; "
        "middleware cannot cross the process boundary",
    }

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._ctx: PluginContext[AuthSettings] | None = None
        self._settings = AuthSettings()
        self._hash_key = b""
        self._check = ""
        self._records: dict[str, KeyRecord] = {}
        self._keyfile: KeyFile | None = None
        self._lock = anyio.Lock()
        self._dirty = False
        self._throttle = Throttle(max_failures=5, window=60.0, lockout=60.0, max_tracked=10_000)
        self._verifier: Verifier | None = None
        self._issuer: JwtKey | None = None
        self._public: dict[str, bool] = {}
        self._prefix = "ork"
        self._local: LocalSecrets | None = None
        self._store: Any = None
        self._warned_local = False

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, ctx: PluginContext[AuthSettings]) -> None:
        settings = ctx.settings
        self._settings = settings
        self._prefix = settings.key_prefix
        self._throttle = Throttle(
            max_failures=settings.max_failures,
            window=settings.failure_window,
            lockout=settings.lockout,
            max_tracked=settings.max_tracked,
        )
        self._public = {}
        self._dirty = False
        self._warned_local = False
        self._lock = anyio.Lock()
        data_dir = ctx.data_dir
        self._local = LocalSecrets(data_dir / LOCAL_SECRETS_FILE)
        try:
            self._store = ctx.service("secrets")
        except ServiceUnavailable:
            self._store = self._local
        self._ctx = ctx

        raw = await self._secret(ctx, HASH_KEY_NAME, lambda: secrets.token_urlsafe(32))
        try:
            self._hash_key = base64.urlsafe_b64decode(raw.encode("ascii") + b"=" * (-len(raw) % 4))
        except ValueError:
            raise PluginError(f"auth: the secret {HASH_KEY_NAME!r} is not base64url", plugin=self.name) from None
        if len(self._hash_key) < 32:
            raise PluginError(f"auth: the secret {HASH_KEY_NAME!r} is shorter than 32 bytes", plugin=self.name)
        self._check = hash_key_check(self._hash_key)
        self._hasher = HmacSha256(self._hash_key)  # keyed once: 0.75 µs per check instead of 2.1
        self._keyfile = KeyFile(data_dir / KEYS_FILE)
        try:
            check, records = self._keyfile.load()
        except ValueError as exc:
            raise PluginError(f"auth: {exc}", plugin=self.name) from None
        if check is not None and not hmac.compare_digest(check, self._check):
            raise PluginError(
                f"auth: the hash key {HASH_KEY_NAME!r} is not the one the API keys in {self._keyfile.path} were "
                f"made with (was the secret store or {LOCAL_SECRETS_FILE} replaced?); restore it, or move "
                f"{KEYS_FILE} away to start without API keys",
                plugin=self.name,
            )
        self._records = records

        keys = [await self._jwt_key(ctx, spec) for spec in settings.jwt_keys]
        self._local.commit()  # what was generated or moved, in one write
        self._issuer = None
        self._verifier = None
        if keys:
            chosen = settings.issuer_kid or next((key.kid for key in keys if key.can_sign), keys[0].kid)
            issuer = next(key for key in keys if key.kid == chosen)
            if settings.issuer_kid and not issuer.can_sign:
                raise PluginError(
                    f"auth: issuer_kid {chosen!r} is a public key: it can verify tokens but not sign them",
                    plugin=self.name,
                )
            self._issuer = issuer if issuer.can_sign else None
            self._verifier = Verifier(
                keys,
                default_kid=chosen,
                issuer=settings.issuer,
                audiences=settings.audiences,
                leeway=settings.leeway,
                required=settings.required_claims,
                max_bytes=settings.max_token_bytes,
            )
        if self._store is self._local and not self._warned_local:
            self._warn_local(ctx)

        ctx.provide("authenticator", self)
        ctx.register_middleware(self._middleware, phase=Phase.AUTHENTICATE)
        ctx.register_operation(
            "auth.keys.create",
            self._op_create,
            args_type=CreateKeyArgs,
            doc="Create an API key for a principal; the key is shown once (admin only).",
        )
        ctx.register_operation(
            "auth.keys.list", self._op_list, doc="Every API key, without secrets (admin only).", example_args={}
        )
        ctx.register_operation(
            "auth.keys.revoke", self._op_revoke, args_type=RevokeKeyArgs, doc="Revoke an API key by id (admin only)."
        )
        ctx.register_operation(
            "auth.token.issue",
            self._op_issue,
            args_type=IssueTokenArgs,
            doc="Issue a signed JWT for a subject (admin only).",
        )
        ctx.spawn(self._flush_loop, name="auth last-used flusher")

    async def stop(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._flush()
        self._ctx = None

    # -- secrets and keys ----------------------------------------------------------------------

    def _warn_local(self, ctx: PluginContext[AuthSettings]) -> None:
        self._warned_local = True
        assert self._local is not None
        ctx.log.warning(
            "no 'secrets' service: auth keeps %s and its JWT secrets in %s (mode 0600), unencrypted at rest; "
            "enable the secrets plugin to encrypt them",
            HASH_KEY_NAME,
            self._local.path,
        )

    async def _secret(self, ctx: PluginContext[AuthSettings], name: str, generate: Callable[[], str] | None) -> str:
        """The secret ``name`` from the store; moved there from the local file, or generated, when missing."""
        store, local = self._store, self._local
        assert local is not None
        try:
            value: str = await store.get(name)
            return value
        except SecretNotFound:
            pass
        except PermissionDenied as exc:
            raise PluginError(f"auth: the secret store refused {name!r}: {exc}", plugin=self.name) from None
        if store is not local and local.exists() and local.has(name):
            value = await local.get(name)
            await store.set(name, value)
            local.stage(name, None)  # written (or the file removed) at the end of start
            ctx.log.info("moved %s from %s into the secret store", name, local.path)
            return value
        if generate is None:
            raise PluginError(
                f"auth: no secret {name!r} in the secret store (set it, or set generate_missing = true)",
                plugin=self.name,
            )
        value = generate()
        if store is local:
            local.stage(name, value)
        else:
            await store.set(name, value)
        ctx.log.info("created %s in %s", name, "the local key file" if store is local else "the secret store")
        return value

    async def _jwt_key(self, ctx: PluginContext[AuthSettings], spec: JwtKeySettings) -> JwtKey:
        where: str
        if spec.secret:
            generate: Callable[[], str] | None = None
            if self._settings.generate_missing:
                generate = (lambda: secrets.token_urlsafe(32)) if spec.alg == "HS256" else generate_ed25519_pem
            material = _surrogate_safe(await self._secret(ctx, spec.secret, generate))
            where = f"secret {spec.secret!r}"
        elif spec.key_file:
            where = f"key file {spec.key_file!r}"
            try:
                material, mode = await anyio.to_thread.run_sync(_read_key_file, ctx.data_dir, spec.key_file)
            except OSError as exc:
                raise PluginError(
                    f"auth: jwt key {spec.kid!r}: cannot read {where}: {exc.strerror}", plugin=self.name
                ) from None
            private = spec.alg == "HS256" or b"PRIVATE KEY" in material
            if private and mode & (stat.S_IRWXG | stat.S_IRWXO):
                ctx.log.warning(
                    "jwt key %r: %s holds secret key material and is readable by group or others (mode %o)",
                    spec.kid,
                    where,
                    stat.S_IMODE(mode),
                )
        else:
            where = f"environment variable {spec.env!r}"
            value = os.environ.get(spec.env)
            if not value:
                raise PluginError(f"auth: jwt key {spec.kid!r}: {where} is not set", plugin=self.name)
            material = _surrogate_safe(value)
        material = material.rstrip(b"\r\n")
        try:
            if spec.alg == "HS256":
                return JwtKey.hs256(spec.kid, material)
            return JwtKey.eddsa(spec.kid, material)
        except ValueError as exc:
            raise PluginError(f"auth: {exc} (from {where})", plugin=self.name) from None

    # -- the authenticate step -----------------------------------------------------------------

    async def _middleware(self, inv: Invocation, call_next: CallNext) -> Any:
        if inv.principal is None:
            operation = inv.operation
            public = self._public.get(operation) if self._settings.public_operations else False
            if public is None:
                public = self._is_public(operation)
            if not public:
                credentials = inv.credentials
                if credentials is not None:
                    source = inv.metadata.get("source")
                    found = self._authenticate_sync(credentials, source)
                    if type(found) is str:
                        found = await self._by_hook(credentials, operation, found, source)
                    inv.principal = found  # type: ignore[assignment]
                elif self._settings.anonymous == "allow":
                    inv.principal = ANONYMOUS
                else:
                    raise NotAuthenticated(f"no credentials presented for operation {operation!r}")
        return await call_next(inv)

    def _is_public(self, operation: str) -> bool:
        public = any(fnmatch.fnmatchcase(operation, pattern) for pattern in self._settings.public_operations)
        if len(self._public) >= _PUBLIC_CACHE:
            self._public.clear()
        self._public[operation] = public
        return public

    async def authenticate(self, credentials: Credentials) -> Principal:
        """The principal ``credentials`` prove (the ``authenticator`` service).

        :raises NotAuthenticated: unknown, revoked, expired or malformed credentials;
            :class:`~plugin_sdk.AuthenticationThrottled` after too many failures.
        """
        found = self._authenticate_sync(credentials, None)
        if type(found) is str:
            return await self._by_hook(credentials, "", found, None)
        assert isinstance(found, Principal)
        return found

    def _authenticate_sync(self, credentials: Credentials, source: object) -> Principal | str:
        """The principal, or why the credentials are not ours (a ``str``: try the hook)."""
        if credentials.scheme == "api-key":
            return self._api_key(credentials.secret, source)
        return self._bearer(credentials.secret, source)

    def _fail(self, subject: str, now: float, reason: str) -> NoReturn:
        if self._throttle.failed(subject, now) and self._ctx is not None:
            self._ctx.log.warning(
                "authentication for %r locked out for %g s after %d failed attempts",
                subject,
                self._settings.lockout,
                self._settings.max_failures,
            )
        raise NotAuthenticated(reason)

    @staticmethod
    def _source(source: object) -> str:
        return f"source:{source}" if isinstance(source, str) and source else "source:unknown"

    def _api_key(self, key: str, source: object) -> Principal | str:
        prefix, _, rest = key.partition("_")
        if prefix != self._prefix:
            return "API key not recognised"
        key_id, sep, secret = rest.partition("_")
        now = self.clock.now()
        throttle = self._throttle
        record = self._records.get(key_id) if sep and secret else None
        if record is None:
            subject = self._source(source)
            throttle.check(subject, now)
            self._fail(subject, now, "unknown API key" if sep and secret else "malformed API key")
        subject = record.subject
        if throttle._entries:
            throttle.check(subject, now)
        if not hmac.compare_digest(self._hasher.digest(_surrogate_safe(secret)), record.hash):
            self._fail(subject, now, f"invalid API key {key_id!r}")
        if record.revoked:
            self._fail(subject, now, f"API key {key_id!r} has been revoked")
        if record.expires is not None and now >= record.expires:
            self._fail(subject, now, f"API key {key_id!r} has expired")
        if throttle._entries:
            throttle.succeeded(subject)
        record.last_used = now
        self._dirty = True
        return record.identity

    def _bearer(self, token: str, source: object) -> Principal | str:
        verifier = self._verifier
        if verifier is None:
            return "bearer token not recognised (no JWT keys are configured)"
        now = self.clock.now()
        throttle = self._throttle
        try:
            key, signed, signature, payload = verifier.decode(token)
        except NotOurs as exc:
            return exc.reason
        except TokenInvalid as exc:
            subject = self._source(source)
            throttle.check(subject, now)
            self._fail(subject, now, str(exc))
        tracked = bool(throttle._entries)
        sub = payload.get("sub")
        subject = f"jwt:{key.kid}:{sub}" if type(sub) is str else self._source(source)
        if tracked:
            throttle.check(subject, now)
        try:
            verifier.check(key, signed, signature, payload, now)
            principal = self._principal(payload, key.kid)
        except TokenInvalid as exc:
            self._fail(subject, now, str(exc))
        if tracked:
            throttle.succeeded(subject)
        return principal

    def _principal(self, claims: dict[str, Any], kid: str) -> Principal:
        roles: Any = claims.pop(self._settings.roles_claim, None)
        if roles is None:
            roles = ()
        elif type(roles) is str:
            roles = roles.split()
        elif type(roles) is not list or not all(type(role) is str for role in roles):
            raise TokenInvalid(f"the token's {self._settings.roles_claim!r} claim is not a list of strings", kid=kid)
        kind = claims.pop(KIND_CLAIM, "user")
        if type(kind) is not str or not kind:
            raise TokenInvalid(f"the token's {KIND_CLAIM!r} claim is not a string", kid=kid)
        return Principal(id=claims.pop("sub"), kind=kind, roles=roles, claims=claims)

    async def _by_hook(self, credentials: Credentials, operation: str, reason: str, source: object) -> Principal:
        assert self._ctx is not None
        found = await self._ctx.hooks.call(hookspecs.authenticate, credentials=credentials, operation=operation)
        if isinstance(found, Principal):
            return found
        if found is not None:  # a misbehaving third-party impl
            self._ctx.log.warning(  # type: ignore[unreachable]
                "an 'authenticate' hook impl returned %s, not a Principal", type(found).__name__
            )
        now = self.clock.now()
        subject = self._source(source)
        self._throttle.check(subject, now)
        self._fail(subject, now, reason)

    # -- tokens --------------------------------------------------------------------------------

    def verify_token(self, token: str) -> Principal:
        """The principal a bearer JWT proves (one of ours only; the hook is not asked).

        :raises NotAuthenticated: refused, with the reason (never the token).
        """
        found = self._bearer(token, None)
        if type(found) is str:
            raise NotAuthenticated(found)
        assert isinstance(found, Principal)
        return found

    def issue_token(
        self,
        subject: str,
        *,
        roles: Iterable[str] = (),
        ttl: float | None = None,
        audience: str | None = None,
        kind: str = "user",
        claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A JWT for ``subject`` signed with the ``issuer_kid`` key.

        :param ttl: seconds it is valid (default: ``token_ttl``).
        :param audience: its ``aud`` (default: the first of ``audiences``, if any).
        :param claims: extra claims (registered ones cannot be overridden).
        :raises ServiceUnavailable: no JWT key that can sign is configured.
        """
        return self._issue(subject, roles=roles, ttl=ttl, audience=audience, kind=kind, claims=claims)[0]

    def _issue(
        self,
        subject: str,
        *,
        roles: Iterable[str],
        ttl: float | None,
        audience: str | None,
        kind: str,
        claims: Mapping[str, Any] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        key = self._issuer
        if key is None:
            raise ServiceUnavailable("auth: no JWT key that can sign is configured (see jwt_keys and issuer_kid)")
        settings = self._settings
        now = self.clock.now()
        lifetime = settings.token_ttl if ttl is None else ttl
        body: dict[str, Any] = dict(claims or {})
        body.update(sub=subject, iat=int(now), nbf=int(now), exp=math.ceil(now + lifetime), jti=new_jti())
        body[KIND_CLAIM] = kind
        if settings.issuer:
            body["iss"] = settings.issuer
        aud = audience if audience is not None else (settings.audiences[0] if settings.audiences else None)
        if aud is not None:
            body["aud"] = aud
        roles = list(roles)
        if roles:
            body[settings.roles_claim] = roles
        token = issue(key, body)
        if len(token) > settings.max_token_bytes:
            raise ValueError(f"the token would be longer than max_token_bytes ({settings.max_token_bytes})")
        return token, body

    # -- operations ----------------------------------------------------------------------------

    async def _admin(self, inv: Invocation, action: str) -> str:
        try:
            return require_kind(inv, self._settings.admin_kinds, setting="plugins.auth.settings.admin_kinds").id
        except PermissionDenied:
            principal = inv.principal
            await self._audit(action, principal.id if principal else None, "denied", {"operation": inv.operation})
            raise

    async def _audit(self, action: str, actor: str | None, outcome: str, details: Mapping[str, Any]) -> None:
        if self._ctx is not None:
            await record_audit(self._ctx, action, actor=actor, outcome=outcome, details=details)

    async def _update(self, change: Callable[[dict[str, KeyRecord]], None] | None = None) -> None:
        """Apply ``change`` to the key file (with this instance's last-used times) and reload the records."""
        keyfile = self._keyfile
        assert keyfile is not None
        used = {key_id: r.last_used for key_id, r in self._records.items() if r.last_used is not None}
        self._dirty = False
        try:
            with anyio.CancelScope(shield=True):  # the file and memory agree even if the caller gives up
                async with self._lock:
                    self._records = await anyio.to_thread.run_sync(keyfile.update, self._check, used, change)
        except BaseException:
            self._dirty = True
            raise

    async def _op_create(self, inv: Invocation) -> dict[str, Any]:
        """Create an API key; the result holds the key, shown this once."""
        actor = await self._admin(inv, "auth.key.create")
        args: CreateKeyArgs = inv.params
        now = self.clock.now()
        key_id = new_key_id()
        while key_id in self._records:
            key_id = new_key_id()
        secret = new_secret()
        record = KeyRecord(
            id=key_id,
            principal=args.principal,
            kind=args.kind,
            roles=tuple(args.roles),
            created=now,
            hash=hmac.digest(self._hash_key, secret.encode("ascii"), "sha256"),
            expires=None if args.expires_in is None else now + args.expires_in,
        )

        def add(records: dict[str, KeyRecord]) -> None:
            records[key_id] = record

        await self._update(add)
        with anyio.CancelScope(shield=True):
            await self._audit(
                "auth.key.created",
                actor,
                "ok",
                {
                    "key_id": key_id,
                    "principal": args.principal,
                    "kind": args.kind,
                    "roles": list(args.roles),
                    "expires": record.expires,
                },
            )
        return {"key": f"{self._prefix}_{key_id}_{secret}", **record.public(now)}

    async def _op_list(self, inv: Invocation) -> list[dict[str, Any]]:
        """Every API key (never a secret or a hash), oldest first."""
        await self._admin(inv, "auth.key.list")
        now = self.clock.now()
        return [record.public(now) for record in sorted(self._records.values(), key=lambda r: (r.created, r.id))]

    async def _op_revoke(self, inv: Invocation) -> dict[str, Any]:
        """Revoke an API key: it is refused from now on."""
        actor = await self._admin(inv, "auth.key.revoke")
        args: RevokeKeyArgs = inv.params
        now = self.clock.now()
        if args.id not in self._records:
            raise InvalidArguments(inv.operation, [ConfigIssue("id", f"no API key with id {args.id[:64]!r}")])
        changed = False

        def revoke(records: dict[str, KeyRecord]) -> None:
            nonlocal changed
            record = records.get(args.id)
            if record is not None and not record.revoked:
                record.revoked, record.revoked_at, changed = True, now, True

        await self._update(revoke)
        record = self._records[args.id]
        if changed:
            with anyio.CancelScope(shield=True):
                await self._audit("auth.key.revoked", actor, "ok", {"key_id": record.id, "principal": record.principal})
        return record.public(now)

    async def _op_issue(self, inv: Invocation) -> dict[str, Any]:
        """Issue a signed JWT; the result holds the token."""
        actor = await self._admin(inv, "auth.token.issue")
        args: IssueTokenArgs = inv.params
        token, claims = self._issue(
            args.subject, roles=args.roles, ttl=args.ttl, audience=args.audience, kind=args.kind
        )
        assert self._issuer is not None
        details = {
            "kid": self._issuer.kid,
            "subject": args.subject,
            "jti": claims["jti"],
            "expires": claims["exp"],
            "audience": claims.get("aud"),
        }
        await self._audit("auth.token.issued", actor, "ok", details)
        return {"token": token, "alg": self._issuer.alg, **details}

    # -- last-used times -----------------------------------------------------------------------

    async def _flush(self) -> None:
        if not self._dirty or self._keyfile is None:
            return
        try:
            await self._update()
        except (OSError, ValueError) as exc:
            if self._ctx is not None:
                self._ctx.log.warning("could not save API key last-used times: %s", exc)

    async def _flush_loop(self) -> None:
        while True:
            await self.clock.sleep(LAST_USED_FLUSH)
            await self._flush()

    # -- hooks ---------------------------------------------------------------------------------

    @hookimpl
    def cli_commands(self) -> list[CliCommand]:
        """``orion-kernel auth keys create|list|revoke`` and ``orion-kernel auth token issue``."""
        return [auth_command()]
