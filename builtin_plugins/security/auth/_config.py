"""Settings of the ``auth`` plugin (``[plugins.auth.settings]``) and its operations' arguments.

Checked by attrs validators while the kernel structures them, so a bad value
is reported at its path (``plugins.auth.settings.jwt_keys``) before anything
starts.  No setting holds key material: a JWT key names a secret in the
secret store, an environment variable or a key file.
"""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Sequence
from typing import Any
from typing import Final
from typing import Literal

import attrs

Anonymous = Literal["deny", "allow"]
Algorithm = Literal["HS256", "EdDSA"]

#: the plugin's own namespace in the secret store
NAMESPACE: Final = "auth."
_PREFIX: Final = re.compile(r"^[a-z][a-z0-9]{0,15}$")
_KID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ENV: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_NAME: Final = re.compile(r"^auth\.[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_CLAIM: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0 or math.isinf(value):  # also refuses NaN
        raise ValueError(f"'{attribute.name}' must be a finite number > 0, got {value!r}")


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"'{attribute.name}' must be a finite number >= 0, got {value!r}")


def _at_least(minimum: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
        if value < minimum:
            raise ValueError(f"'{attribute.name}' must be >= {minimum}, got {value!r}")

    return check


def _non_empty_strings(instance: object, attribute: attrs.Attribute[Any], value: Sequence[str]) -> None:
    for index, item in enumerate(value):
        if not item.strip():
            raise ValueError(f"'{attribute.name}' [{index}] must not be empty")


def _prefix(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not _PREFIX.match(value):
        raise ValueError(
            f"'{attribute.name}' must be 1-16 lowercase letters and digits, starting with a letter "
            f"(no '_': it separates the parts of a key), got {value!r}"
        )


def _admin_kinds(instance: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
    _non_empty_strings(instance, attribute, value)
    if "anonymous" in value:
        raise ValueError(f"'{attribute.name}' must not contain 'anonymous': anyone at all would be an administrator")


def _claims(instance: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]) -> None:
    for item in value:
        if not _CLAIM.match(item):
            raise ValueError(f"'{attribute.name}' has an invalid claim name {item!r}")


def _claim(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not _CLAIM.match(value):
        raise ValueError(f"'{attribute.name}' is not a valid claim name: {value!r}")
    if value in ("sub", "exp", "nbf", "iat", "iss", "aud", "jti", "kind"):
        raise ValueError(f"'{attribute.name}' must not be a registered claim name, got {value!r}")


def _kid(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not _KID.match(value):
        raise ValueError(
            f"'{attribute.name}' must be 1-64 of [A-Za-z0-9._-], starting with a letter or digit, got {value!r}"
        )


def _secret_name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value and not _SECRET_NAME.match(value):
        raise ValueError(
            f"'{attribute.name}' must name a secret in the plugin's own namespace 'auth.' "
            f"(e.g. 'auth.jwt.k1'), got {value!r}"
        )


def _env_name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value and not _ENV.match(value):
        raise ValueError(f"'{attribute.name}' is not an environment variable name: {value!r}")


def _one_source(instance: JwtKeySettings, attribute: attrs.Attribute[str], value: str) -> None:
    given = [name for name in ("secret", "key_file", "env") if getattr(instance, name)]
    if len(given) != 1:
        raise ValueError(
            f"key {instance.kid!r}: give exactly one of 'secret', 'key_file', 'env'"
            + (f" (got {', '.join(given)})" if given else "")
        )


@attrs.frozen
class JwtKeySettings:
    """One ``[[plugins.auth.settings.jwt_keys]]`` entry: a key id, its algorithm, where its material is."""

    kid: str = attrs.field(validator=_kid, metadata=_doc("The key id, sent in each token's 'kid' header."))
    alg: Algorithm = attrs.field(
        metadata=_doc("'HS256' (HMAC-SHA256, a shared secret) or 'EdDSA' (Ed25519, a key pair).")
    )
    secret: str = attrs.field(
        default="",
        validator=_secret_name,
        metadata=_doc(
            "Name of a secret in the secret store, in the 'auth.' namespace (HS256: the secret; "
            "EdDSA: a PEM key); generated when missing if 'generate_missing' is true."
        ),
    )
    key_file: str = attrs.field(
        default="",
        metadata=_doc(
            "Path of a file with the key (HS256: the secret; EdDSA: a PEM private or public key); relative "
            "paths are relative to the plugin's data directory; one outside it is asked for "
            "(`fs:read:{jwt_keys.key_file}`: grant it)."
        ),
    )
    env: str = attrs.field(
        default="",
        validator=[_env_name, _one_source],
        metadata=_doc("Environment variable with the key (HS256: the secret; EdDSA: a PEM key)."),
    )


def _unique_kids(
    instance: object, attribute: attrs.Attribute[tuple[JwtKeySettings, ...]], value: tuple[JwtKeySettings, ...]
) -> None:
    dupes = sorted(kid for kid, count in collections.Counter(key.kid for key in value).items() if count > 1)
    if dupes:
        raise ValueError(f"'{attribute.name}' has duplicate kids: {dupes}")


def _issuer_kid(instance: AuthSettings, attribute: attrs.Attribute[str], value: str) -> None:
    if value and value not in {key.kid for key in instance.jwt_keys}:
        known = ", ".join(key.kid for key in instance.jwt_keys) or "none"
        raise ValueError(f"'{attribute.name}' names {value!r}, which is not in 'jwt_keys' (kids: {known})")


@attrs.frozen
class AuthSettings:
    """The ``[plugins.auth.settings]`` table."""

    anonymous: Anonymous = attrs.field(
        default="deny",
        metadata=_doc(
            "Calls without credentials: 'deny' (NotAuthenticated) or 'allow' (principal id 'anonymous', "
            "kind 'anonymous')."
        ),
    )
    public_operations: tuple[str, ...] = attrs.field(
        default=(),
        validator=_non_empty_strings,
        metadata=_doc("Operation globs (fnmatch, e.g. 'health.*') that skip authentication."),
    )
    admin_kinds: tuple[str, ...] = attrs.field(
        default=("operator",),
        validator=_admin_kinds,
        metadata=_doc("Principal kinds allowed to call the auth.keys.* and auth.token.issue operations."),
    )
    key_prefix: str = attrs.field(
        default="ork", validator=_prefix, metadata=_doc("First part of every API key: <prefix>_<key id>_<secret>.")
    )
    max_failures: int = attrs.field(
        default=5,
        validator=_at_least(1),
        metadata=_doc("Failed attempts for one subject within 'failure_window' that lock it out."),
    )
    failure_window: float = attrs.field(
        default=60.0, validator=_positive, metadata=_doc("Seconds over which failed attempts are counted.")
    )
    lockout: float = attrs.field(
        default=60.0,
        validator=_positive,
        metadata=_doc("Seconds a locked-out subject is refused, even with valid credentials."),
    )
    max_tracked: int = attrs.field(
        default=10_000,
        validator=_at_least(1),
        metadata=_doc("Most subjects with failed attempts kept in memory (the oldest are forgotten first)."),
    )
    jwt_keys: tuple[JwtKeySettings, ...] = attrs.field(
        default=(),
        validator=_unique_kids,
        metadata=_doc(
            "JWT signing and verification keys ([[plugins.auth.settings.jwt_keys]]); old kids keep verifying."
        ),
    )
    issuer_kid: str = attrs.field(
        default="",
        validator=_issuer_kid,
        metadata=_doc("The kid that signs issued tokens, also used for tokens without 'kid' (default: the first key)."),
    )
    issuer: str = attrs.field(
        default="", metadata=_doc("'iss' of issued tokens; when set, verified tokens must carry it.")
    )
    audiences: tuple[str, ...] = attrs.field(
        default=(),
        validator=_non_empty_strings,
        metadata=_doc(
            "Audiences accepted in 'aud' (a token with 'aud' is refused when empty); "
            "the first is the default 'aud' of issued tokens."
        ),
    )
    leeway: float = attrs.field(
        default=0.0, validator=_non_negative, metadata=_doc("Seconds of clock skew allowed for exp, nbf and iat.")
    )
    required_claims: tuple[str, ...] = attrs.field(
        default=("exp",), validator=_claims, metadata=_doc("Claims every verified token must carry ('sub' always).")
    )
    roles_claim: str = attrs.field(
        default="roles",
        validator=_claim,
        metadata=_doc("Claim with the principal's roles (a list of strings, or one space-separated string)."),
    )
    token_ttl: float = attrs.field(
        default=3600.0, validator=_positive, metadata=_doc("Seconds an issued token is valid unless 'ttl' is given.")
    )
    max_token_bytes: int = attrs.field(
        default=8192, validator=_at_least(256), metadata=_doc("Longest bearer token accepted, in bytes.")
    )
    generate_missing: bool = attrs.field(
        default=True,
        metadata=_doc(
            "Create a JWT key's secret in the secret store on first start when it is missing "
            "(HS256: 32 random bytes; EdDSA: a new key pair)."
        ),
    )


def _non_empty(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.strip():
        raise ValueError(f"'{attribute.name}' must not be empty")


def _optional_positive(instance: object, attribute: attrs.Attribute[float | None], value: float | None) -> None:
    if value is not None:
        _positive(instance, attribute, value)


@attrs.frozen
class CreateKeyArgs:
    """Arguments of ``auth.keys.create``."""

    principal: str = attrs.field(validator=_non_empty)
    roles: tuple[str, ...] = attrs.field(default=(), validator=_non_empty_strings)
    expires_in: float | None = attrs.field(default=None, validator=_optional_positive)
    kind: str = attrs.field(default="service", validator=_non_empty)


@attrs.frozen
class RevokeKeyArgs:
    """Arguments of ``auth.keys.revoke``."""

    id: str = attrs.field(validator=_non_empty)


@attrs.frozen
class IssueTokenArgs:
    """Arguments of ``auth.token.issue``."""

    subject: str = attrs.field(validator=_non_empty)
    roles: tuple[str, ...] = attrs.field(default=(), validator=_non_empty_strings)
    ttl: float | None = attrs.field(default=None, validator=_optional_positive)
    audience: str | None = None
    kind: str = attrs.field(default="user", validator=_non_empty)


for _cls in (JwtKeySettings, AuthSettings, CreateKeyArgs, RevokeKeyArgs, IssueTokenArgs):
    attrs.resolve_types(_cls)
del _cls
