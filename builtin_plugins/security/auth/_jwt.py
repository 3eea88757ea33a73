"""JSON Web Tokens (RFC 7519) signed with HS256 (HMAC-SHA256) or EdDSA (Ed25519), issued and verified.

Written against ``cryptography`` and the standard library rather than PyJWT,
so the verify path does only what a token needs: one strict base64url decode
per segment, orjson for the JSON, HMAC keys and Ed25519 public-key objects
prepared once, the parsed header of each issuer cached.

What is refused, each with a :class:`~plugin_sdk.NotAuthenticated` whose
message never contains the token: ``alg: none`` and any algorithm other than
the one configured for the key (so an HS256 token cannot be checked against an
Ed25519 key's public bytes used as an HMAC secret, nor the reverse), an
unknown ``kid``, a ``crit`` header, segments that are not canonical unpadded
base64url or not JSON objects, tokens longer than the cap, a bad signature,
and ``exp`` / ``nbf`` / ``iat`` / ``aud`` / ``iss`` / required claims that do
not hold (with a configurable leeway).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any
from typing import Final

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from plugin_sdk import NotAuthenticated

#: shortest HS256 secret accepted, in bytes (RFC 7518 3.2: at least the hash output)
MIN_HMAC_KEY: Final = 32
#: most parsed headers kept (one per key and header layout in practice)
_HEADER_CACHE: Final = 256

# base64url -> standard alphabet; '+', '/' and '=' are not base64url (unpadded): poison them
_TO_STANDARD: Final = bytes.maketrans(b"-_+/=", b"+/!!!")
_PADDING: Final = (b"", b"", b"==", b"=")
#: value of each base64url character (255: not one)
_VALUE: Final = bytes(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".find(chr(c)) % 256 for c in range(256)
)
#: bits of the last character that must be zero, by segment length mod 4 (canonical encoding)
_SPARE_BITS: Final = (0, 0, 0x0F, 0x03)


class TokenInvalid(NotAuthenticated):
    """The token was refused; ``kid`` and ``subject`` are what it claimed (for throttling), when known."""

    def __init__(self, reason: str, *, kid: str | None = None, subject: str | None = None) -> None:
        super().__init__(reason)
        self.kid = kid
        self.subject = subject


class NotOurs(Exception):
    """The token is not one of ours (not a JWT, or a key id we do not hold): other schemes may take it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def b64url_encode(data: bytes) -> bytes:
    """Unpadded base64url (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def b64url_decode(segment: bytes) -> bytes:
    """Strict unpadded base64url: only the alphabet, no padding, canonical trailing bits.

    :raises ValueError: anything else (``binascii.Error`` is a ValueError).
    """
    rem = len(segment) & 3
    if rem:
        if rem == 1 or _VALUE[segment[-1]] & _SPARE_BITS[rem]:  # 255 (not base64url) has every bit set
            raise ValueError("not canonical base64url")
        return binascii.a2b_base64(segment.translate(_TO_STANDARD) + _PADDING[rem], strict_mode=True)
    return binascii.a2b_base64(segment.translate(_TO_STANDARD), strict_mode=True)


class JwtKey:
    """One key: its id, its algorithm and its material (never shown in ``repr``)."""

    __slots__ = ("_private", "_public", "_secret", "alg", "header_segment", "kid")

    def __init__(
        self,
        kid: str,
        alg: str,
        *,
        secret: bytes | None = None,
        private: Ed25519PrivateKey | None = None,
        public: Ed25519PublicKey | None = None,
    ) -> None:
        self.kid = kid
        self.alg = alg
        self._secret = secret
        self._private = private
        self._public = public if public is not None or private is None else private.public_key()
        header = {"alg": alg, "kid": kid, "typ": "JWT"}
        self.header_segment = b64url_encode(orjson.dumps(header))

    @classmethod
    def hs256(cls, kid: str, secret: bytes) -> JwtKey:
        """An HS256 key; ``secret`` must be at least 32 bytes and not a PEM key.

        :raises ValueError: too short, or a PEM/SSH key (an asymmetric key is no HMAC secret).
        """
        stripped = secret.strip()
        if stripped.startswith((b"-----BEGIN", b"ssh-", b"ecdsa-")):
            raise ValueError(f"jwt key {kid!r}: an HS256 secret must be random bytes, not a PEM or SSH key")
        if len(secret) < MIN_HMAC_KEY:
            raise ValueError(f"jwt key {kid!r}: an HS256 secret must be at least {MIN_HMAC_KEY} bytes")
        return cls(kid, "HS256", secret=secret)

    @classmethod
    def eddsa(cls, kid: str, pem: bytes) -> JwtKey:
        """An EdDSA key from a PEM Ed25519 private key (signs and verifies) or public key (verifies).

        :raises ValueError: not a PEM Ed25519 key (the message does not quote the data).
        """
        try:
            private = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            private = None
        except Exception:  # cryptography's UnsupportedAlgorithm and friends
            private = None
        if private is not None:
            if not isinstance(private, Ed25519PrivateKey):
                raise ValueError(f"jwt key {kid!r}: an EdDSA key must be Ed25519, got {type(private).__name__}")
            return cls(kid, "EdDSA", private=private)
        try:
            public = serialization.load_pem_public_key(pem)
        except Exception:
            raise ValueError(f"jwt key {kid!r}: not a PEM Ed25519 private or public key") from None
        if not isinstance(public, Ed25519PublicKey):
            raise ValueError(f"jwt key {kid!r}: an EdDSA key must be Ed25519, got {type(public).__name__}")
        return cls(kid, "EdDSA", public=public)

    @property
    def can_sign(self) -> bool:
        return self._secret is not None or self._private is not None

    def sign(self, data: bytes) -> bytes:
        if self._secret is not None:
            return hmac.digest(self._secret, data, "sha256")
        if self._private is None:
            raise ValueError(f"jwt key {self.kid!r} is a public key: it verifies, it cannot sign")
        return self._private.sign(data)

    def verify(self, data: bytes, signature: bytes) -> bool:
        secret = self._secret
        if secret is not None:
            return hmac.compare_digest(hmac.digest(secret, data, "sha256"), signature)
        assert self._public is not None
        try:
            self._public.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def public_pem(self) -> bytes | None:
        """The public key as PEM (EdDSA), for sharing with verifiers; ``None`` for HS256."""
        if self._public is None:
            return None
        return self._public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def __repr__(self) -> str:
        return f"<JwtKey {self.kid!r} {self.alg}{'' if self.can_sign else ' (verify only)'}>"


def generate_ed25519_pem() -> str:
    """A new Ed25519 private key as unencrypted PKCS#8 PEM (for the secret store)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem.decode("ascii")


def _number(value: Any) -> bool:
    return (type(value) is int or type(value) is float) and value == value  # not bool, not NaN


class Verifier:
    """Checks tokens against a set of keys and the claim rules.  Sync, no I/O."""

    def __init__(
        self,
        keys: Iterable[JwtKey],
        *,
        default_kid: str | None = None,
        issuer: str = "",
        audiences: Iterable[str] = (),
        leeway: float = 0.0,
        required: Iterable[str] = ("exp",),
        max_bytes: int = 8192,
    ) -> None:
        self.keys: dict[str, JwtKey] = {key.kid: key for key in keys}
        self.default_kid = default_kid
        self.issuer = issuer
        self.audiences = frozenset(audiences)
        self.leeway = float(leeway)
        self.required = tuple(dict.fromkeys((*required, "sub")))
        self.max_bytes = max_bytes
        # header segment -> (key, kid) of headers already parsed and found to name one of our keys
        self._headers: dict[bytes, JwtKey] = {}

    def _header(self, segment: bytes) -> JwtKey:
        try:
            header = orjson.loads(b64url_decode(segment))
        except ValueError:  # orjson.JSONDecodeError and binascii.Error are ValueErrors
            raise NotOurs("malformed token: the header is not base64url JSON") from None
        if type(header) is not dict:
            raise NotOurs("malformed token: the header is not a JSON object")
        kid = header.get("kid", self.default_kid)
        if kid is None:
            raise NotOurs("the token names no key id and there is no issuer key")
        if type(kid) is not str:
            raise TokenInvalid("malformed token: 'kid' is not a string")
        key = self.keys.get(kid)
        if key is None:
            raise NotOurs(f"unknown key id {kid[:64]!r}")
        alg = header.get("alg")
        if alg != key.alg:
            shown = repr(alg)[:24] if isinstance(alg, str) else type(alg).__name__
            raise TokenInvalid(f"algorithm {shown} is not allowed for key {kid!r} (expects {key.alg})", kid=kid)
        if "crit" in header:
            raise TokenInvalid("the token has a 'crit' header, which is not supported", kid=kid)
        typ = header.get("typ", "JWT")
        if type(typ) is not str or typ.upper() not in ("JWT", "APPLICATION/JWT"):
            raise TokenInvalid("the token's 'typ' is not JWT", kid=kid)
        if len(self._headers) >= _HEADER_CACHE:
            self._headers.clear()
        self._headers[segment] = key
        return key

    def decode(self, token: str) -> tuple[JwtKey, bytes, bytes, dict[str, Any]]:
        """Split and decode a token without checking it: (key, signing input, signature, payload).

        :raises NotOurs: not a JWT, or not under one of our key ids.
        :raises TokenInvalid: one of ours, but malformed.
        """
        if len(token) > self.max_bytes:
            raise TokenInvalid(f"token longer than {self.max_bytes} bytes")
        try:
            raw = token.encode("ascii")
        except UnicodeEncodeError:
            raise NotOurs("malformed token: not ASCII") from None
        first = raw.find(b".")
        second = raw.find(b".", first + 1)
        if first < 0 or second < 0 or raw.find(b".", second + 1) >= 0:
            raise NotOurs("not a JWT: expected three '.'-separated segments")
        head = raw[:first]
        key = self._headers.get(head) or self._header(head)
        try:
            payload = orjson.loads(b64url_decode(raw[first + 1 : second]))
            signature = b64url_decode(raw[second + 1 :])
        except ValueError:
            raise TokenInvalid("malformed token: a segment is not base64url JSON", kid=key.kid) from None
        if type(payload) is not dict:
            raise TokenInvalid("malformed token: the payload is not a JSON object", kid=key.kid)
        return key, raw[:second], signature, payload

    def check(self, key: JwtKey, signed: bytes, signature: bytes, payload: dict[str, Any], now: float) -> None:
        """Check the signature and the claims of a decoded token.

        :raises TokenInvalid: with the reason.
        """
        sub = payload.get("sub")
        subject = sub if type(sub) is str else None
        if not key.verify(signed, signature):
            raise TokenInvalid("invalid token signature", kid=key.kid, subject=subject)
        for claim in self.required:
            if claim not in payload:
                raise TokenInvalid(f"the token has no {claim!r} claim", kid=key.kid, subject=subject)
        if subject is None or not subject:
            raise TokenInvalid("the token's 'sub' is not a non-empty string", kid=key.kid)
        leeway = self.leeway
        if "exp" in payload:
            exp = payload["exp"]
            if not _number(exp):
                raise TokenInvalid("the token's 'exp' is not a number", kid=key.kid, subject=subject)
            if exp <= now - leeway:
                raise TokenInvalid("the token has expired", kid=key.kid, subject=subject)
        if "nbf" in payload:
            nbf = payload["nbf"]
            if not _number(nbf):
                raise TokenInvalid("the token's 'nbf' is not a number", kid=key.kid, subject=subject)
            if nbf > now + leeway:
                raise TokenInvalid("the token is not valid yet (nbf)", kid=key.kid, subject=subject)
        if "iat" in payload:
            iat = payload["iat"]
            if not _number(iat):
                raise TokenInvalid("the token's 'iat' is not a number", kid=key.kid, subject=subject)
            if iat > now + leeway:
                raise TokenInvalid("the token was issued in the future (iat)", kid=key.kid, subject=subject)
        if self.issuer and payload.get("iss") != self.issuer:
            raise TokenInvalid("the token's issuer is not accepted", kid=key.kid, subject=subject)
        aud = payload.get("aud")
        if self.audiences:
            if type(aud) is str:
                ok = aud in self.audiences
            elif type(aud) is list:
                ok = any(type(item) is str and item in self.audiences for item in aud)
            else:
                ok = False
            if not ok:
                raise TokenInvalid("the token's audience is not accepted", kid=key.kid, subject=subject)
        elif aud:
            raise TokenInvalid("the token has an audience and none is configured", kid=key.kid, subject=subject)

    def verify(self, token: str, now: float) -> dict[str, Any]:
        """The claims of a valid token.

        :raises NotOurs: not a JWT, or not under one of our key ids.
        :raises TokenInvalid: refused, with the reason.
        """
        key, signed, signature, payload = self.decode(token)
        self.check(key, signed, signature, payload, now)
        return payload


def issue(key: JwtKey, claims: Mapping[str, Any]) -> str:
    """A signed compact JWT with ``claims`` under ``key`` (header ``alg``, ``kid``, ``typ``)."""
    signed = key.header_segment + b"." + b64url_encode(orjson.dumps(dict(claims)))
    return (signed + b"." + b64url_encode(key.sign(signed))).decode("ascii")


def new_jti() -> str:
    """A random token id."""
    return secrets.token_urlsafe(16)
