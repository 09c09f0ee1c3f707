"""relay/jwks.py against a real OpenID issuer on loopback (aiohttp) serving a JWK Set of real
RSA keys: each check (signature, algorithm, iss, aud, exp) refuses what it should, and an
unknown key id refetches the key set (key rotation), at most every MIN_REFRESH_INTERVAL_S."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from wardsync.core.timer import FakeTimer
from wardsync.relay.jwks import (
    MIN_REFRESH_INTERVAL_S,
    DiscoveryFailed,
    InvalidToken,
    JwksVerifier,
    JwtIntrospector,
)

AUDIENCE = "wardsync-fhir"


@dataclass
class Issuer:
    """A minimal OpenID provider: discovery document and JWKS; signs tokens in-process."""

    base: str = ""
    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)
    jwks_requests: int = 0

    def add_key(self, kid: str) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def token(self, kid: str, **claims: Any) -> str:
        body = {"iss": self.base, "aud": AUDIENCE, "exp": time.time() + 300,
                "fhirUser": "Practitioner/p1", "scope": "openid user/*.rs", **claims}
        return jwt.encode(body, self.keys[kid], algorithm="RS256", headers={"kid": kid})

    async def openid(self, request: web.Request) -> web.Response:
        return web.json_response({"issuer": self.base, "jwks_uri": f"{self.base}/jwks"})

    async def jwks(self, request: web.Request) -> web.Response:
        self.jwks_requests += 1
        keys = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return web.json_response({"keys": keys})


@pytest.fixture
async def issuer() -> AsyncIterator[Issuer]:
    state = Issuer()
    state.add_key("k1")
    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", state.openid)
    app.router.add_get("/jwks", state.jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    await runner.cleanup()


async def test_each_check_refuses_what_it_should(issuer: Issuer) -> None:
    async with httpx.AsyncClient() as http:
        verifier = await JwksVerifier.discover(http, issuer.base, AUDIENCE)
        claims = verifier.verify(issuer.token("k1"))
        assert claims["fhirUser"] == "Practitioner/p1"
        refusals = {
            "expired": issuer.token("k1", exp=time.time() - 60),
            "(aud)": issuer.token("k1", aud="another-server"),
            "(iss)": issuer.token("k1", iss="https://elsewhere.example"),
        }
        for reason, token in refusals.items():
            with pytest.raises(InvalidToken, match=reason.replace("(", r"\(").replace(")", r"\)")):
                verifier.verify(token)
        # A symmetric token "signed" with anything: the algorithm is refused outright.
        hs = jwt.encode({"iss": issuer.base, "aud": AUDIENCE, "exp": time.time() + 60},
                        "shared-secret", algorithm="HS256", headers={"kid": "k1"})
        with pytest.raises(InvalidToken, match="algorithm"):
            verifier.verify(hs)
        head, body, _ = issuer.token("k1").split(".")
        other = issuer.token("k1", scope="system/*.cruds").split(".")[2]
        with pytest.raises(InvalidToken, match="rejected"):
            verifier.verify(f"{head}.{body}.{other}")  # signature of another token
        with pytest.raises(InvalidToken, match="not a JWT"):
            verifier.verify("opaque-token")


async def test_an_unknown_key_id_refetches_the_key_set_at_most_every_30_s(
    issuer: Issuer
) -> None:
    timer = FakeTimer()
    async with httpx.AsyncClient() as http:
        verifier = await JwksVerifier.discover(http, issuer.base, AUDIENCE, timer)
        introspector = JwtIntrospector(verifier)
        assert issuer.jwks_requests == 1
        issuer.add_key("k2")  # the issuer rotates its signing key
        rotated = issuer.token("k2")
        await timer.advance(MIN_REFRESH_INTERVAL_S - 1)
        assert (await introspector.introspect(rotated)) == {"active": False}
        assert issuer.jwks_requests == 1  # too soon after the last fetch
        await timer.advance(1)
        answer = await introspector.introspect(rotated)
        assert answer["active"] is True and answer["fhirUser"] == "Practitioner/p1"
        assert issuer.jwks_requests == 2
        # Made-up key ids do not make every request refetch the key set.
        made_up = jwt.encode({"iss": issuer.base, "aud": AUDIENCE, "exp": time.time() + 60},
                             issuer.keys["k1"], algorithm="RS256", headers={"kid": "k9"})
        for _ in range(3):
            assert (await introspector.introspect(made_up)) == {"active": False}
        assert issuer.jwks_requests == 2


async def test_an_issuer_that_names_another_issuer_is_not_trusted(issuer: Issuer) -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(DiscoveryFailed, match="issuer does not match"):
            await JwksVerifier.discover(http, issuer.base + "/", AUDIENCE)
