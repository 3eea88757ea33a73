"""JWTs in the ``auth`` plugin: the verifier's refusals, key sources and rotation, PyJWT interop, properties.

The verifier is tested on its own (pure functions of a token and a time) and
through a kernel (bearer credentials on an invoke).  PyJWT is the reference
implementation: tokens travel both ways, and both refuse the same bad ones.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from collections.abc import Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from builtin_plugins.security.auth import Auth
from builtin_plugins.security.auth._jwt import JwtKey
from builtin_plugins.security.auth._jwt import NotOurs
from builtin_plugins.security.auth._jwt import TokenInvalid
from builtin_plugins.security.auth._jwt import Verifier
from builtin_plugins.security.auth._jwt import b64url_decode
from builtin_plugins.security.auth._jwt import b64url_encode
from builtin_plugins.security.auth._jwt import issue
from kernel import Kernel
from plugin_sdk import OPERATOR
from plugin_sdk import AuthenticationThrottled
from plugin_sdk import Credentials
from plugin_sdk import Invocation
from plugin_sdk import NotAuthenticated
from plugin_sdk import Plugin
from plugin_sdk import PluginContext
from plugin_sdk import PluginState
from plugin_sdk import Principal
from plugin_sdk import ServiceUnavailable

T0 = 1_800_000_000.0
HS_SECRET = b"0123456789abcdef0123456789abcdef-test-secret"
ED_PRIVATE = Ed25519PrivateKey.generate()
ED_PEM = ED_PRIVATE.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
ED_PUBLIC_PEM = ED_PRIVATE.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
ED_RAW_PUBLIC = ED_PRIVATE.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
AUD = "orion-tests"
ISS = "https://issuer.example"

HS = JwtKey.hs256("hs", HS_SECRET)
ED = JwtKey.eddsa("ed", ED_PEM)


def verifier(**kwargs: Any) -> Verifier:
    options: dict[str, Any] = {"default_kid": "hs", "issuer": ISS, "audiences": [AUD], "leeway": 0.0}
    options.update(kwargs)
    return Verifier([HS, ED], **options)


def claims(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "alice", "iat": int(T0), "exp": int(T0) + 600, "aud": AUD, "iss": ISS}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def segments(*parts: bytes) -> str:
    return b".".join(parts).decode()


def unsigned(header: Mapping[str, Any], payload: Mapping[str, Any], signature: bytes = b"") -> str:
    import orjson

    return segments(b64url_encode(orjson.dumps(header)), b64url_encode(orjson.dumps(payload)), b64url_encode(signature))


def hs_signed(header: Mapping[str, Any], payload: Mapping[str, Any], secret: bytes) -> str:
    import hmac

    import orjson

    signed = b64url_encode(orjson.dumps(header)) + b"." + b64url_encode(orjson.dumps(payload))
    return (signed + b"." + b64url_encode(hmac.digest(secret, signed, "sha256"))).decode()


# -- base64url ------------------------------------------------------------------------------------------


def test_base64url_is_strict() -> None:
    assert b64url_decode(b"QUJD") == b"ABC"
    assert b64url_decode(b"QUI") == b"AB"
    assert b64url_decode(b"QQ") == b"A"
    assert b64url_decode(b"-_8") == bytes([0xFB, 0xFF])
    for bad in (b"QQ==", b"QUI=", b"+/8", b"Q", b"QUJD\n", b"QU JD", b"QU!D", b"QR", b"QUJ", "é".encode()):
        with pytest.raises(ValueError):
            b64url_decode(bad)  # padding, standard alphabet, bad length, whitespace, non-canonical bits


# -- the verifier -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [HS, ED], ids=["HS256", "EdDSA"])
def test_issue_and_verify(key: JwtKey) -> None:
    token = issue(key, claims(roles=["a"]))
    header = jwt.get_unverified_header(token)
    assert header == {"alg": key.alg, "kid": key.kid, "typ": "JWT"}
    assert verifier().verify(token, T0) == claims(roles=["a"])
    assert verifier().verify(token, T0) == claims(roles=["a"])  # the header, cached now


@pytest.mark.parametrize(
    ("payload", "now", "reason"),
    [
        (claims(), T0 + 600, "expired"),
        (claims(exp=int(T0) - 1), T0, "expired"),
        (claims(nbf=int(T0) + 10), T0, "not valid yet"),
        (claims(iat=int(T0) + 10), T0, "issued in the future"),
        (claims(aud="someone-else"), T0, "audience is not accepted"),
        (claims(aud=["x", "y"]), T0, "audience is not accepted"),
        (claims(aud=None), T0, "audience is not accepted"),
        (claims(iss="https://evil.example"), T0, "issuer is not accepted"),
        (claims(iss=None), T0, "issuer is not accepted"),
        (claims(exp=None), T0, "no 'exp' claim"),
        (claims(sub=None), T0, "no 'sub' claim"),
        (claims(sub=""), T0, "'sub' is not a non-empty string"),
        (claims(sub=42), T0, "'sub' is not a non-empty string"),
        (claims(exp="tomorrow"), T0, "'exp' is not a number"),
        (claims(exp=True), T0, "'exp' is not a number"),
        (claims(nbf="now"), T0, "'nbf' is not a number"),
        (claims(iat=[1]), T0, "'iat' is not a number"),
    ],
)
def test_claims_that_do_not_hold_are_refused(payload: dict[str, Any], now: float, reason: str) -> None:
    for key in (HS, ED):
        with pytest.raises(TokenInvalid, match=reason):
            verifier().verify(issue(key, payload), now)


def test_leeway_audience_lists_and_required_claims() -> None:
    lenient = verifier(leeway=30)
    assert lenient.verify(issue(HS, claims()), T0 + 629)["sub"] == "alice"
    with pytest.raises(TokenInvalid, match="expired"):
        lenient.verify(issue(HS, claims()), T0 + 630)
    assert lenient.verify(issue(HS, claims(nbf=int(T0) + 30)), T0)["sub"] == "alice"
    assert verifier().verify(issue(HS, claims(aud=["x", AUD])), T0)["aud"] == ["x", AUD]
    open_ = verifier(audiences=(), issuer="")
    assert open_.verify(issue(HS, claims(aud=None, iss=None)), T0)["sub"] == "alice"
    with pytest.raises(TokenInvalid, match="has an audience and none is configured"):
        open_.verify(issue(HS, claims()), T0)
    strict = verifier(required=("exp", "jti"))
    with pytest.raises(TokenInvalid, match="no 'jti' claim"):
        strict.verify(issue(HS, claims()), T0)
    assert strict.verify(issue(HS, claims(jti="j1")), T0)["jti"] == "j1"
    no_exp = verifier(required=())
    assert no_exp.verify(issue(HS, claims(exp=None)), T0)["sub"] == "alice"


def test_alg_none_and_other_algorithms_are_refused() -> None:
    for alg in ("none", "None", "NONE", "HS512", "RS256", "ES256", None, 5):
        token = unsigned({"alg": alg, "kid": "hs", "typ": "JWT"}, claims())
        with pytest.raises(TokenInvalid, match="is not allowed for key 'hs'"):
            verifier().verify(token, T0)
    token = jwt.encode(claims(), None, algorithm="none", headers={"kid": "hs"})  # PyJWT's own alg-none token
    with pytest.raises(TokenInvalid, match="algorithm 'none' is not allowed"):
        verifier().verify(token, T0)


def test_algorithm_confusion_is_refused() -> None:
    # An HS256 token "signed" with the Ed25519 key's public bytes as the HMAC secret, under the EdDSA kid:
    for public in (ED_PUBLIC_PEM, ED_RAW_PUBLIC):
        token = hs_signed({"alg": "HS256", "kid": "ed", "typ": "JWT"}, claims(), public)
        with pytest.raises(TokenInvalid, match="algorithm 'HS256' is not allowed for key 'ed' \\(expects EdDSA\\)"):
            verifier().verify(token, T0)
    # An EdDSA token under the HS256 kid, signed by some Ed25519 key:
    attacker = JwtKey("hs", "EdDSA", private=Ed25519PrivateKey.generate())
    with pytest.raises(TokenInvalid, match="algorithm 'EdDSA' is not allowed for key 'hs' \\(expects HS256\\)"):
        verifier().verify(issue(attacker, claims()), T0)
    # and an HS256 key can never be made from an asymmetric key
    with pytest.raises(ValueError, match="not a PEM or SSH key"):
        JwtKey.hs256("x", ED_PUBLIC_PEM + b"padding" * 8)
    with pytest.raises(ValueError, match="at least 32 bytes"):
        JwtKey.hs256("x", b"short")


def test_headers_that_are_not_ours_or_not_allowed() -> None:
    with pytest.raises(NotOurs, match="unknown key id 'k9'"):
        verifier().verify(hs_signed({"alg": "HS256", "kid": "k9"}, claims(), HS_SECRET), T0)
    with pytest.raises(NotOurs, match="names no key id"):
        verifier(default_kid=None).verify(hs_signed({"alg": "HS256"}, claims(), HS_SECRET), T0)
    # without a kid, the issuer's key (default_kid) is used
    assert verifier().verify(hs_signed({"alg": "HS256"}, claims(), HS_SECRET), T0)["sub"] == "alice"
    with pytest.raises(TokenInvalid, match="'crit' header"):
        verifier().verify(hs_signed({"alg": "HS256", "kid": "hs", "crit": ["exp"]}, claims(), HS_SECRET), T0)
    with pytest.raises(TokenInvalid, match="'kid' is not a string"):
        verifier().verify(hs_signed({"alg": "HS256", "kid": 1}, claims(), HS_SECRET), T0)
    with pytest.raises(TokenInvalid, match="'typ' is not JWT"):
        verifier().verify(hs_signed({"alg": "HS256", "kid": "hs", "typ": "JWE"}, claims(), HS_SECRET), T0)


def test_malformed_tokens_are_refused_without_quoting_them() -> None:
    good = issue(HS, claims())
    head, body, sig = good.split(".")
    cases: dict[str, type[Exception]] = {
        "": NotOurs,
        "abc": NotOurs,
        "a.b": NotOurs,
        f"{good}.extra": NotOurs,
        f"{head}.{body}": NotOurs,
        f"!!!.{body}.{sig}": NotOurs,
        f"{b64url_encode(b'not json').decode()}.{body}.{sig}": NotOurs,
        f"{b64url_encode(b'[1, 2]').decode()}.{body}.{sig}": NotOurs,
        f"{head}.{body}!.{sig}": TokenInvalid,
        f"{head}.{b64url_encode(b'{not json').decode()}.{sig}": TokenInvalid,
        f"{head}.{b64url_encode(b'[1]').decode()}.{sig}": TokenInvalid,
        f"{head}.{body}.{sig}==": TokenInvalid,
        f"{head}.{body}.": TokenInvalid,
        f"{head}.{body}.{sig[:-2]}": TokenInvalid,
        f"{head}.{body}.{sig}é": NotOurs,
        good + "A" * 9000: TokenInvalid,
    }
    for token, error in cases.items():
        with pytest.raises(error) as caught:
            verifier().verify(token, T0)
        message = str(caught.value)
        assert sig not in message and body not in message and (not token or token not in message), message
    with pytest.raises(TokenInvalid, match="longer than 8192 bytes"):
        verifier().verify(good + "A" * 9000, T0)
    assert verifier(max_bytes=len(good)).verify(good, T0)["sub"] == "alice"
    with pytest.raises(TokenInvalid, match="longer than"):
        verifier(max_bytes=len(good) - 1).verify(good, T0)


def test_keys_from_pem() -> None:
    public_only = JwtKey.eddsa("pub", ED_PUBLIC_PEM)
    assert not public_only.can_sign and ED.can_sign and HS.can_sign
    assert Verifier([public_only]).verify(
        issue(JwtKey("pub", "EdDSA", private=ED_PRIVATE), claims(aud=None, iss=None)), T0
    )
    with pytest.raises(ValueError, match="cannot sign"):
        public_only.sign(b"x")
    with pytest.raises(ValueError, match="not a PEM Ed25519"):
        JwtKey.eddsa("x", b"garbage")
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="must be Ed25519"):
        JwtKey.eddsa("x", other)
    assert "0123456789abcdef" not in repr(HS) and repr(HS) == "<JwtKey 'hs' HS256>"
    assert repr(public_only) == "<JwtKey 'pub' EdDSA (verify only)>"


# -- properties -------------------------------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
_claim_values = st.one_of(st.integers(-(2**53), 2**53), st.booleans(), _text, st.lists(_text, max_size=4))


@settings(max_examples=150, deadline=None)
@given(
    key=st.sampled_from([HS, ED]),
    subject=_text,
    roles=st.lists(_text, max_size=5),
    extra=st.dictionaries(st.text("abcdefghij", min_size=3, max_size=8), _claim_values, max_size=4),
)
def test_property_issue_then_verify_round_trips(
    key: JwtKey, subject: str, roles: list[str], extra: dict[str, Any]
) -> None:
    payload = {**extra, **claims(sub=subject, roles=roles)}
    assert verifier().verify(issue(key, payload), T0) == payload


_TOKENS = {"HS256": issue(HS, claims(roles=["r"])), "EdDSA": issue(ED, claims(roles=["r"]))}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(alg=st.sampled_from(sorted(_TOKENS)), data=st.data())
def test_property_any_single_byte_change_is_refused(alg: str, data: st.DataObject) -> None:
    token = _TOKENS[alg]
    index = data.draw(st.integers(0, len(token) - 1), label="index")
    replacement = data.draw(st.characters(min_codepoint=0x20, max_codepoint=0x7E).filter(lambda c: c != token[index]))
    tampered = token[:index] + replacement + token[index + 1 :]
    with pytest.raises((TokenInvalid, NotOurs)):
        verifier().verify(tampered, T0)


# -- PyJWT interop ------------------------------------------------------------------------------------------------


def pyjwt_decode(token: str, alg: str, **kwargs: Any) -> dict[str, Any]:
    key: Any = HS_SECRET if alg == "HS256" else ED_PRIVATE.public_key()
    options: dict[str, Any] = {"algorithms": [alg], "audience": AUD, "issuer": ISS, "leeway": 0}
    options.update(kwargs)
    result: dict[str, Any] = jwt.decode(token, key, **options)
    return result


def pyjwt_encode(payload: Mapping[str, Any], alg: str, kid: str) -> str:
    key: Any = HS_SECRET if alg == "HS256" else ED_PRIVATE
    return jwt.encode(dict(payload), key, algorithm=alg, headers={"kid": kid})


@pytest.mark.parametrize(("alg", "key"), [("HS256", HS), ("EdDSA", ED)])
def test_pyjwt_verifies_our_tokens_and_we_verify_its(alg: str, key: JwtKey) -> None:
    now = time.time()
    payload = claims(iat=int(now), exp=int(now) + 300, roles=["a", "b"], jti="j-1")
    ours = issue(key, payload)
    assert pyjwt_decode(ours, alg) == payload
    theirs = pyjwt_encode(payload, alg, key.kid)
    assert verifier().verify(theirs, now) == payload
    # leeway behaves the same on both sides
    late = now + 310
    assert pyjwt_decode(ours, alg, leeway=20)["sub"] == "alice"
    assert verifier(leeway=20).verify(theirs, time.time() + 10)["sub"] == "alice"
    with pytest.raises(TokenInvalid, match="expired"):
        verifier(leeway=5).verify(theirs, late)


@pytest.mark.parametrize(("alg", "key"), [("HS256", HS), ("EdDSA", ED)])
def test_pyjwt_and_we_refuse_the_same_bad_tokens(alg: str, key: JwtKey) -> None:
    now = time.time()
    good = claims(iat=int(now), exp=int(now) + 300)
    bad_payloads = {
        "expired": claims(iat=int(now) - 600, exp=int(now) - 300),
        "not yet valid": claims(iat=int(now), exp=int(now) + 300, nbf=int(now) + 120),
        "wrong audience": claims(iat=int(now), exp=int(now) + 300, aud="elsewhere"),
        "wrong issuer": claims(iat=int(now), exp=int(now) + 300, iss="https://evil.example"),
    }
    reasons = {
        "expired": "expired",
        "not yet valid": "not valid yet",
        "wrong audience": "audience",
        "wrong issuer": "issuer",
    }
    for label, payload in bad_payloads.items():
        for token in (issue(key, payload), pyjwt_encode(payload, alg, key.kid)):
            with pytest.raises(jwt.InvalidTokenError):
                pyjwt_decode(token, alg)
            with pytest.raises(TokenInvalid, match=reasons[label]):
                verifier().verify(token, now)
    for token in (issue(key, good), pyjwt_encode(good, alg, key.kid)):
        head, body, sig = token.split(".")
        forged_body = b64url_encode(
            b'{"sub":"mallory","exp":9999999999,"aud":"orion-tests","iss":"' + ISS.encode() + b'"}'
        )
        flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
        for tampered in (f"{head}.{forged_body.decode()}.{sig}", f"{head}.{body}.{flipped}"):
            with pytest.raises(jwt.InvalidTokenError):
                pyjwt_decode(tampered, alg)
            with pytest.raises(TokenInvalid, match="invalid token signature"):
                verifier().verify(tampered, now)


# -- through a kernel ---------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, start: float = T0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep_forever()


class Tools(Plugin):
    name = "tools"

    async def start(self, ctx: PluginContext[Any]) -> None:
        ctx.register_operation("tools.whoami", lambda inv: inv.principal)


@asynccontextmanager
async def running(tmp_path: Path, settings: Mapping[str, Any], clock: FakeClock | None = None) -> AsyncIterator[Any]:
    auth = Auth(clock=clock or FakeClock())
    # key files outside the data dir are asked for: grant them
    grants = [f"fs:read:{key['key_file']}" for key in settings.get("jwt_keys", ()) if key.get("key_file")]
    plugins = {"auth": {"settings": dict(settings), "permissions": grants}}
    config = {"kernel": {"data_dir": str(tmp_path / "data")}, "plugins": plugins}
    async with Kernel(config, plugins=[auth, Tools()], environ={}, entry_points=False) as kernel:
        kernel.auth = auth  # type: ignore[attr-defined]
        yield kernel


async def whoami(kernel: Kernel, token: str) -> Principal:
    result: Principal = await kernel.invoke("tools.whoami", credentials=Credentials.bearer(token))
    return result


@pytest.fixture
def key_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    private, public = tmp_path / "ed.pem", tmp_path / "ed.pub.pem"
    fd = os.open(private, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, ED_PEM)
    os.close(fd)
    public.write_bytes(ED_PUBLIC_PEM)
    monkeypatch.setenv("ORION_TEST_HS_SECRET", HS_SECRET.decode())
    return {"private": str(private), "public": str(public)}


@pytest.mark.anyio
async def test_bearer_tokens_of_both_algorithms_through_invoke(tmp_path: Path, key_files: dict[str, str]) -> None:
    settings = {
        "jwt_keys": [
            {"kid": "hs", "alg": "HS256", "env": "ORION_TEST_HS_SECRET"},
            {"kid": "ed", "alg": "EdDSA", "key_file": key_files["private"]},
        ],
        "issuer": ISS,
        "audiences": [AUD, "other"],
        "roles_claim": "groups",
    }
    clock = FakeClock(time.time())
    async with running(tmp_path, settings, clock) as kernel:
        issued = await kernel.invoke(
            "auth.token.issue", {"subject": "alice", "roles": ["analyst"], "ttl": 120}, principal=OPERATOR
        )
        assert (issued["kid"], issued["alg"], issued["audience"]) == ("hs", "HS256", AUD)
        principal = await whoami(kernel, issued["token"])
        assert (principal.id, principal.kind, principal.roles) == ("alice", "user", ("analyst",))
        assert principal.claims["jti"] == issued["jti"] and principal.claims["iss"] == ISS
        assert "groups" not in principal.claims and "sub" not in principal.claims
        decoded = pyjwt_decode(issued["token"], "HS256")  # PyJWT agrees
        assert decoded["groups"] == ["analyst"] and decoded["exp"] == issued["expires"]
        # a token from elsewhere, signed with the Ed25519 key, roles as a space-separated string
        theirs = pyjwt_encode(
            {"sub": "bot", "exp": int(clock.t) + 60, "aud": "other", "iss": ISS, "groups": "a b", "kind": "service"},
            "EdDSA",
            "ed",
        )
        principal = await whoami(kernel, theirs)
        assert (principal.id, principal.kind, principal.roles) == ("bot", "service", ("a", "b"))
        clock.t += 121
        with pytest.raises(NotAuthenticated, match="the token has expired"):
            await whoami(kernel, issued["token"])
        with pytest.raises(NotAuthenticated, match="unknown key id 'zz'"):
            await whoami(kernel, pyjwt_encode({"sub": "x", "exp": int(clock.t) + 60}, "HS256", "zz"))
        bad_roles = pyjwt_encode(
            {"sub": "x", "exp": int(clock.t) + 60, "aud": AUD, "iss": ISS, "groups": [1]}, "HS256", "hs"
        )
        with pytest.raises(NotAuthenticated, match="'groups' claim is not a list of strings"):
            await whoami(kernel, bad_roles)
        # the service methods
        auth: Auth = kernel.auth  # type: ignore[attr-defined]
        token = auth.issue_token("carol", roles=["r"], audience="other", claims={"tenant": "t1"})
        assert auth.verify_token(token).claims["tenant"] == "t1"
        with pytest.raises(NotAuthenticated, match="not a JWT"):
            auth.verify_token("opaque")


@pytest.mark.anyio
async def test_key_rotation_two_kids(tmp_path: Path) -> None:
    k1 = {"kid": "k1", "alg": "HS256", "secret": "auth.jwt.k1"}
    k2 = {"kid": "k2", "alg": "EdDSA", "secret": "auth.jwt.k2"}
    async with running(tmp_path, {"jwt_keys": [k1]}) as kernel:
        old = kernel.auth.issue_token("alice")
        assert jwt.get_unverified_header(old)["kid"] == "k1"
    # rotate: k2 signs now, k1 still verifies
    async with running(tmp_path, {"jwt_keys": [k2, k1], "issuer_kid": "k2"}) as kernel:
        new = kernel.auth.issue_token("bob")
        assert jwt.get_unverified_header(new) == {"alg": "EdDSA", "kid": "k2", "typ": "JWT"}
        assert (await whoami(kernel, old)).id == "alice"
        assert (await whoami(kernel, new)).id == "bob"
    # retire k1: its tokens are refused, k2's still work
    async with running(tmp_path, {"jwt_keys": [k2]}) as kernel:
        with pytest.raises(NotAuthenticated, match="unknown key id 'k1'"):
            await whoami(kernel, old)
        assert (await whoami(kernel, new)).id == "bob"


@pytest.mark.anyio
async def test_jwt_failures_are_throttled_per_kid_and_subject(tmp_path: Path) -> None:
    clock = FakeClock()
    settings = {"jwt_keys": [{"kid": "k1", "alg": "HS256", "secret": "auth.jwt.k1"}], "max_failures": 2, "lockout": 30}
    async with running(tmp_path, settings, clock) as kernel:
        good = kernel.auth.issue_token("alice")
        other = kernel.auth.issue_token("bob")
        forged = good[:-2] + ("AA" if not good.endswith("AA") else "BA")
        for _ in range(2):
            with pytest.raises(NotAuthenticated, match="invalid token signature"):
                await whoami(kernel, forged)
        with pytest.raises(AuthenticationThrottled) as caught:
            await whoami(kernel, good)  # a valid token, refused while locked out
        assert caught.value.subject == "jwt:k1:alice"
        assert (await whoami(kernel, other)).id == "bob"
        clock.t += 30
        assert (await whoami(kernel, good)).id == "alice"


@pytest.mark.anyio
async def test_verify_only_keys_and_start_errors(tmp_path: Path, key_files: dict[str, str]) -> None:
    public = {"kid": "pub", "alg": "EdDSA", "key_file": key_files["public"]}
    async with running(tmp_path, {"jwt_keys": [public]}) as kernel:
        assert kernel.plugins["auth"].state is PluginState.RUNNING
        theirs = pyjwt_encode({"sub": "svc", "exp": int(T0) + 60}, "EdDSA", "pub")
        assert (await whoami(kernel, theirs)).id == "svc"
        with pytest.raises(ServiceUnavailable, match="no JWT key that can sign"):
            await kernel.invoke("auth.token.issue", {"subject": "x"}, principal=OPERATOR)

    bad = {
        "issuer is public": ({"jwt_keys": [public], "issuer_kid": "pub"}, "is a public key"),
        "pem as hmac": (
            {"jwt_keys": [{"kid": "x", "alg": "HS256", "key_file": key_files["public"]}]},
            "not a PEM or SSH key",
        ),
        "missing file": (
            {"jwt_keys": [{"kid": "x", "alg": "EdDSA", "key_file": str(tmp_path / "nope.pem")}]},
            "cannot read key file",
        ),
        "unset env": ({"jwt_keys": [{"kid": "x", "alg": "HS256", "env": "ORION_TEST_UNSET_VAR"}]}, "is not set"),
        "garbage pem": (
            {"jwt_keys": [{"kid": "x", "alg": "EdDSA", "env": "ORION_TEST_HS_SECRET"}]},
            "not a PEM Ed25519",
        ),
    }
    for label, (bad_settings, message) in bad.items():
        async with running(tmp_path / label.replace(" ", "_"), bad_settings) as kernel:
            info = kernel.plugins["auth"]
            assert info.state is PluginState.FAILED, label
            assert message in str(info.last_error), (label, info.last_error)
            assert HS_SECRET.decode() not in str(info.last_error)


@pytest.mark.anyio
async def test_a_readable_private_key_file_is_warned_about(tmp_path: Path, caplog: Any) -> None:
    path = tmp_path / "loose.pem"
    path.write_bytes(ED_PEM)
    path.chmod(0o644)
    async with running(tmp_path, {"jwt_keys": [{"kid": "ed", "alg": "EdDSA", "key_file": str(path)}]}) as kernel:
        assert kernel.plugins["auth"].state is PluginState.RUNNING
    assert "readable by group or others (mode 644)" in caplog.text


@pytest.mark.anyio
async def test_generated_keys_are_stable_across_restarts(tmp_path: Path) -> None:
    settings = {
        "jwt_keys": [
            {"kid": "hs", "alg": "HS256", "secret": "auth.jwt.hs"},
            {"kid": "ed", "alg": "EdDSA", "secret": "auth.jwt.ed"},
        ]
    }
    async with running(tmp_path, settings) as kernel:
        hs_token = kernel.auth.issue_token("a")
        kernel.auth._issuer = kernel.auth._verifier.keys["ed"]
        ed_token = kernel.auth.issue_token("b")
    async with running(tmp_path, settings) as kernel:
        assert (await whoami(kernel, hs_token)).id == "a"
        assert (await whoami(kernel, ed_token)).id == "b"


def test_an_invocation_never_shows_the_token() -> None:
    token = issue(HS, claims())
    inv = Invocation("tools.whoami", {}, credentials=Credentials.bearer(token))
    assert token not in repr(inv) and token not in repr(inv.credentials)


@pytest.mark.anyio
async def test_key_files_outside_the_data_dir_are_asked_for_and_refused_until_granted(
    tmp_path: Path, key_files: dict[str, str]
) -> None:
    inside = tmp_path / "data" / "auth" / "keys" / "ed.pem"
    inside.parent.mkdir(parents=True)
    inside.write_bytes(ED_PEM)
    inside.chmod(0o600)
    jwt_keys = [
        {"kid": "hs", "alg": "HS256", "env": "ORION_TEST_HS_SECRET"},
        {"kid": "out", "alg": "EdDSA", "key_file": key_files["public"]},
        {"kid": "in", "alg": "EdDSA", "key_file": "keys/ed.pem"},  # relative: in the data dir
    ]

    def config(grants: list[str]) -> dict[str, Any]:
        kernel = {"data_dir": str(tmp_path / "data"), "sandbox": {"guard": "enforce"}}
        return {"kernel": kernel, "plugins": {"auth": {"settings": {"jwt_keys": jwt_keys}, "permissions": grants}}}

    environ = {"ORION_TEST_HS_SECRET": HS_SECRET.decode()}
    async with Kernel(config([]), plugins=[Auth(), Tools()], environ=environ, entry_points=False) as kernel:
        info = kernel.plugins["auth"]
        assert info.state is PluginState.FAILED
        # only the key file outside the data dir is missing, with the line that grants it
        assert f'permissions = ["fs:read:{key_files["public"]}"]' in str(info.last_error)
    grants = [f"fs:read:{tmp_path}/*.pem"]
    async with Kernel(config(grants), plugins=[Auth(), Tools()], environ=environ, entry_points=False) as kernel:
        info = kernel.plugins["auth"]
        assert info.state is PluginState.RUNNING, info.last_error
        assert set(info.asked) == {f"fs:read:{key_files['public']}", f"fs:read:{inside}"}
        # both key files were read under the enforcing guard: the relative one verifies a token
        token = issue(JwtKey.eddsa("in", ED_PEM), {"sub": "eve", "exp": int(time.time()) + 60})
        assert (await whoami(kernel, token)).id == "eve"
