"""The auth plugin's JWT verify against PyJWT's ``jwt.decode``, and its API-key check against a bare HMAC.

Same process, same tokens: an HS256 token and an EdDSA (Ed25519) token issued
by the plugin, verified by ``Verifier.verify`` (signature, exp/nbf/iat, aud,
iss, required claims) and by ``jwt.decode`` with the same checks and a
prepared key object (its fastest use).  Goal: ours <= 1.0x.  Then the whole
bearer step (verify + the Principal, throttling bookkeeping) for reference.

The API-key step (parse, look up, HMAC-SHA256, compare_digest, expiry,
throttling) is compared with ``hmac.new(key, secret, sha256).digest()`` alone.

Run: python benchmarks/bench_jwt.py
"""

from __future__ import annotations

import hashlib
import hmac
import tempfile
from typing import Any

import anyio
import jwt
from _common import per_call_ns
from _common import report
from cryptography.hazmat.primitives import serialization

from builtin_plugins.security.auth import Auth
from kernel import Kernel
from plugin_sdk import OPERATOR
from plugin_sdk import Credentials

AUDIENCE = "orion-bench"
ISSUER = "https://issuer.example"


def _settings() -> dict[str, Any]:
    return {
        "jwt_keys": [
            {"kid": "hs", "alg": "HS256", "secret": "auth.jwt.hs"},
            {"kid": "ed", "alg": "EdDSA", "secret": "auth.jwt.ed"},
        ],
        "issuer_kid": "hs",
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "leeway": 5,
    }


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-jwt-") as data_dir:
        await run(data_dir)


async def run(data_dir: str) -> None:
    config = {"kernel": {"data_dir": data_dir}, "plugins": {"auth": {"settings": _settings()}}}
    auth = Auth()
    async with Kernel(config, plugins=[auth], environ={}, entry_points=False) as kernel:
        verifier = auth._verifier
        assert verifier is not None
        hs_key, ed_key = verifier.keys["hs"], verifier.keys["ed"]
        hs_token = auth.issue_token("alice", roles=["analyst"], ttl=3600)
        auth._issuer = ed_key
        ed_token = auth.issue_token("alice", roles=["analyst"], ttl=3600)
        auth._issuer = hs_key

        hs_secret = hs_key._secret
        ed_public = serialization.load_pem_public_key(ed_key.public_pem() or b"")
        now = auth.clock.now

        def ours(token: str) -> Any:
            return lambda: verifier.verify(token, now())

        def pyjwt(token: str, key: Any, alg: str) -> Any:
            return lambda: jwt.decode(
                token, key, algorithms=[alg], audience=AUDIENCE, issuer=ISSUER, leeway=5, options={"require": ["exp"]}
            )

        assert verifier.verify(hs_token, now()) == pyjwt(hs_token, hs_secret, "HS256")()
        assert verifier.verify(ed_token, now()) == pyjwt(ed_token, ed_public, "EdDSA")()
        rows: list[tuple[str, float, float, float | None]] = []
        base_hs = per_call_ns(pyjwt(hs_token, hs_secret, "HS256"), 20_000)
        rows.append(("verify HS256 token vs jwt.decode", per_call_ns(ours(hs_token), 20_000), base_hs, 1.0))
        base_ed = per_call_ns(pyjwt(ed_token, ed_public, "EdDSA"), 3_000)
        rows.append(("verify EdDSA token vs jwt.decode", per_call_ns(ours(ed_token), 3_000), base_ed, 1.0))
        rows.append(
            (
                "bearer step HS256 (verify + Principal) vs jwt.decode",
                per_call_ns(lambda: auth.verify_token(hs_token), 20_000),
                base_hs,
                None,
            )
        )
        rows.append(
            (
                "bearer step EdDSA (verify + Principal) vs jwt.decode",
                per_call_ns(lambda: auth.verify_token(ed_token), 3_000),
                base_ed,
                None,
            )
        )

        created = await kernel.invoke("auth.keys.create", {"principal": "svc"}, principal=OPERATOR)
        credentials = Credentials.api_key(created["key"])
        secret = created["key"].rsplit("_", 1)[1].encode()
        hash_key = auth._hash_key
        base_hmac = per_call_ns(lambda: hmac.new(hash_key, secret, hashlib.sha256).digest(), 200_000)
        step = auth._authenticate_sync
        rows.append(
            (
                "API-key authenticate step vs bare hmac.new().digest()",
                per_call_ns(lambda: step(credentials, None), 200_000),
                base_hmac,
                None,
            )
        )

        async def awaited() -> None:
            for _ in range(50_000):
                await auth.authenticate(credentials)

        started = anyio.current_time()
        await awaited()
        per_await = (anyio.current_time() - started) / 50_000 * 1e9
        rows.append(("API-key await authenticator.authenticate() vs bare hmac", per_await, base_hmac, None))
    report("auth: JWT verify vs PyJWT, API-key check vs bare HMAC (same process)", rows)


if __name__ == "__main__":
    anyio.run(main)
