"""The security contracts: credentials, decisions, and the security services' Protocols.

The builtin ``auth``, ``rbac``, ``audit``, ``crypto`` and ``secrets`` plugins
provide these services; a third party replaces one by providing the same
service name with an object satisfying the same Protocol.  Nothing here holds
key material in a form that can leak: :class:`Credentials` never shows its
secret in ``repr`` or ``str``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any
from typing import Final
from typing import Literal
from typing import Protocol
from typing import runtime_checkable

import attrs

if TYPE_CHECKING:
    from ._context import PluginContext

from ._errors import NotAuthenticated
from ._errors import OrionError
from ._errors import PermissionDenied
from ._errors import ServiceUnavailable
from ._invocation import Invocation
from ._invocation import Principal

CredentialScheme = Literal["api-key", "bearer"]
_SCHEME_WORD: Final = re.compile(r"[A-Za-z][A-Za-z-]{0,15}")
_SCHEMES: Final[dict[str, CredentialScheme]] = {
    "bearer": "bearer",
    "api-key": "api-key",
    "apikey": "api-key",
}


@attrs.frozen(repr=False)
class Credentials:
    """What a caller presents to prove who it is: an API key or a bearer token.

    ``repr`` and ``str`` never show the secret.  Build one with
    :meth:`api_key`, :meth:`bearer` or :meth:`from_header` (an HTTP
    ``Authorization`` value).
    """

    scheme: CredentialScheme
    secret: str = attrs.field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(scheme={self.scheme!r}, secret=<redacted>)"

    __str__ = __repr__

    @classmethod
    def api_key(cls, key: str) -> Credentials:
        """An API key as issued by ``orion-kernel auth keys create``."""
        return cls("api-key", key)

    @classmethod
    def bearer(cls, token: str) -> Credentials:
        """A bearer token (a JWT)."""
        return cls("bearer", token)

    @classmethod
    def from_header(cls, value: str) -> Credentials:
        """``Bearer <token>`` or ``ApiKey <key>`` (also ``Api-Key``), as in an ``Authorization`` header.

        :raises NotAuthenticated: the value is not ``<scheme> <secret>`` with a known scheme
            (the message never contains the secret).
        """
        scheme, space, secret = value.strip().partition(" ")
        known = _SCHEMES.get(scheme.lower())
        if known is None or not secret.strip():
            # Name the scheme only when it is plainly one (a word before a space): a bare
            # token in the header would otherwise be echoed into the error.
            named = known is None and space and _SCHEME_WORD.fullmatch(scheme)
            raise NotAuthenticated(
                "malformed credentials: expected 'Bearer <token>' or 'ApiKey <key>'"
                + (f", got scheme {scheme!r}" if named else "")
            )
        return cls(known, secret.strip())


class AuthenticationThrottled(NotAuthenticated):
    """Too many failed attempts for one principal or key id; try again after ``retry_after`` seconds."""

    def __init__(self, subject: str, retry_after: float) -> None:
        super().__init__(f"too many failed authentication attempts for {subject!r}; retry after {retry_after:.0f} s")
        self.subject = subject
        self.retry_after = retry_after


@attrs.frozen
class Decision:
    """An authorization decision and why it was made (what ``orion-kernel rbac check`` prints)."""

    allowed: bool
    #: the action decided on, e.g. ``invoke:tools.search``
    action: str
    #: the rule that decided, e.g. ``roles.analyst.deny[0] = 'invoke:tools.delete*'``;
    #: ``""`` when no rule matched (then ``allowed`` is False)
    rule: str = ""
    #: a one-line explanation for people
    reason: str = ""


class CryptoError(OrionError):
    """Base class of encryption errors; messages never contain key material or plaintext."""


class DecryptionFailed(CryptoError):
    """A ciphertext could not be decrypted: wrong key, tampered or truncated input, wrong associated data."""


class KeyNotFound(CryptoError):
    """A ciphertext names a key id the keyring does not hold."""


class SecretNotFound(OrionError, KeyError):
    """No secret is stored under this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no secret named {name!r}")
        self.name = name

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


@attrs.frozen
class AuditVerification:
    """The result of verifying an audit log (``orion-kernel audit verify``)."""

    ok: bool
    #: complete entries that verified, across every file of the chain
    entries: int
    #: the file and 1-based line of the first bad entry (``None`` when ok)
    first_bad: tuple[str, int] | None = None
    #: what was wrong with it: ``edited``, ``reordered``, ``deleted``, ``truncated``, ...
    reason: str = ""


@runtime_checkable
class Authenticator(Protocol):
    """The ``authenticator`` service: turn credentials into a :class:`Principal`."""

    async def authenticate(self, credentials: Credentials) -> Principal:
        """The principal the credentials prove.

        :raises NotAuthenticated: unknown, revoked, expired or malformed credentials
            (:class:`AuthenticationThrottled` after too many failures).
        """


@runtime_checkable
class Authorizer(Protocol):
    """The ``authorizer`` service: may this principal do this action?"""

    def decide(self, principal: Principal | None, action: str) -> Decision:
        """Decide from the policy alone (no hooks); deny when no rule grants the action."""


@runtime_checkable
class AuditLog(Protocol):
    """The ``audit`` service: an append-only, verifiable record of what happened."""

    async def record(
        self, action: str, *, actor: str | None, outcome: str, details: Mapping[str, Any] | None = None
    ) -> int:
        """Append one entry; returns its sequence number once it is written (and synced, per policy)."""

    async def verify(self) -> AuditVerification:
        """Check the whole chain, every file of it, against its hashes and MACs."""


@runtime_checkable
class Encryptor(Protocol):
    """The ``encryptor`` service: authenticated encryption under rotating keys."""

    def encrypt(self, plaintext: bytes, *, associated_data: bytes = b"") -> bytes:
        """AES-256-GCM envelope under the current key; the key id travels in the output."""

    def decrypt(self, ciphertext: bytes, *, associated_data: bytes = b"") -> bytes:
        """The plaintext, under whichever key id the ciphertext names.

        :raises DecryptionFailed: tampered, truncated, wrong key or wrong associated data.
        :raises KeyNotFound: the key id is not in the keyring.
        """

    def reencrypt(self, ciphertext: bytes, *, associated_data: bytes = b"") -> bytes:
        """Decrypt and encrypt again under the current key (after a rotation)."""

    def key_ids(self) -> Sequence[str]:
        """Every key id held, the current one first."""


@runtime_checkable
class SecretStore(Protocol):
    """The ``secrets`` service: named secrets, encrypted at rest.

    A plugin reads only the names its ``secrets:NAME`` grants cover; asking for
    another raises :class:`~plugin_sdk.PermissionDenied`.
    """

    async def get(self, name: str) -> str:
        """The secret's value.  :raises SecretNotFound: nothing under ``name``."""

    async def set(self, name: str, value: str) -> None:
        """Store (or replace) a secret; durable when this returns."""

    async def delete(self, name: str) -> None:
        """Remove a secret.  :raises SecretNotFound: nothing under ``name``."""

    async def names(self) -> list[str]:
        """The stored names this caller may read, sorted."""


attrs.resolve_types(Credentials)
attrs.resolve_types(Decision)
attrs.resolve_types(AuditVerification)
# Invocation refers to Credentials (imported there only for type checking): resolve it here.
attrs.resolve_types(Invocation, localns={"Credentials": Credentials})


def require_kind(inv: Invocation, kinds: Collection[str], *, setting: str) -> Principal:
    """The caller of an admin operation, when its principal's kind is one of ``kinds``.

    :param setting: where an operator lists the kinds (``plugins.NAME.settings.admin_kinds``),
        named in the error.
    :raises PermissionDenied: no principal, or one of another kind; the message names the
        operation, the caller, the allowed kinds and ``setting``.
    """
    principal = inv.principal
    if principal is not None and principal.kind in kinds:
        return principal
    who = "an anonymous caller" if principal is None else f"principal {principal.id!r} (kind {principal.kind!r})"
    raise PermissionDenied(
        f"{inv.operation} is an admin operation: {who} may not call it "
        f"(allowed kinds: {', '.join(kinds) or 'none'}; see {setting})"
    )


async def record_audit(
    ctx: PluginContext[Any],
    action: str,
    *,
    actor: str | None,
    outcome: str,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Record an admin action in the ``audit`` service when one runs; never raises.

    The plugin declares ``optional = ("audit",)``.  A failing audit log is logged on
    the plugin's logger (the action is not undone); never put secrets in ``details``.
    """
    try:
        audit = ctx.service("audit")
    except ServiceUnavailable:
        return
    try:
        await audit.record(action, actor=actor, outcome=outcome, details=dict(details or {}))
    except Exception as exc:
        ctx.log.error("could not record %s in the audit log: %s: %s", action, type(exc).__name__, exc)
