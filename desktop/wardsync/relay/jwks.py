"""Verifying JWT access tokens locally with the authorization server's published keys.

Hospitals' authorization servers (Keycloak, Entra ID, ADFS) issue access tokens as signed JWTs
(RFC 9068) and publish their signing keys as a JWK Set (RFC 7517) at the `jwks_uri` of their
OpenID configuration (OpenID Connect Discovery 1.0 §3). A token is accepted when its signature
verifies with a published key of an asymmetric algorithm, its `iss` is the configured issuer,
its `aud` names this resource server and it has not expired (RFC 9068 §4, RFC 7519 §4.1).
Unknown `kid`s trigger one refetch of the key set (key rotation), at most every
`MIN_REFRESH_INTERVAL_S`. Nothing here logs a token or a claim.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from wardsync.core.timer import SYSTEM_TIMER, Timer
from wardsync.fhir.smart_configuration import DiscoveryError, fetch_json_document

log = logging.getLogger(__name__)

# Asymmetric algorithms only: an HMAC "key" from a public JWK set would let anyone sign.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
MIN_REFRESH_INTERVAL_S = 30.0
LEEWAY_S = 5.0  # clock skew between the authorization server and us


class InvalidToken(Exception):
    """The token is not one this resource server accepts (the message names the check)."""


class DiscoveryFailed(DiscoveryError):
    """The issuer's OpenID configuration or key set could not be read."""


async def openid_configuration(http: httpx.AsyncClient, issuer: str) -> dict[str, Any]:
    """GET `<issuer>/.well-known/openid-configuration` (OpenID Connect Discovery 1.0 §4),
    checking that it names the same issuer (§4.3)."""
    url = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
    doc = await fetch_json_document(http, url, "OpenID configuration", DiscoveryFailed)
    if doc.get("issuer") != issuer:
        raise DiscoveryFailed(f"{url}: issuer does not match {issuer!r}")
    if not isinstance(doc.get("jwks_uri"), str):
        raise DiscoveryFailed(f"{url}: no jwks_uri")
    return doc


@dataclass
class JwksVerifier:
    """Signature, `iss`, `aud` and `exp` checks of JWT access tokens (sync `verify`), with the
    key set fetched by `refresh` (async)."""

    issuer: str
    audience: str
    jwks_uri: str
    http: httpx.AsyncClient
    timer: Timer = SYSTEM_TIMER
    _keys: dict[str, jwt.PyJWK] = field(default_factory=dict)
    _refreshed_at: float | None = None

    @classmethod
    async def discover(cls, http: httpx.AsyncClient, issuer: str, audience: str,
                       timer: Timer = SYSTEM_TIMER) -> JwksVerifier:
        """The verifier for `issuer`'s tokens meant for `audience`, keys loaded."""
        doc = await openid_configuration(http, issuer)
        verifier = cls(issuer, audience, str(doc["jwks_uri"]), http, timer)
        await verifier.refresh()
        return verifier

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    async def refresh(self) -> None:
        """Fetch the key set (RFC 7517 §5); signing keys of supported algorithms are kept."""
        try:
            resp = await self.http.get(self.jwks_uri, headers={"Accept": "application/json"})
            doc = resp.json() if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            raise DiscoveryFailed(f"{self.jwks_uri}: {type(exc).__name__}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise DiscoveryFailed(f"{self.jwks_uri}: not a JWK Set")
        keys: dict[str, jwt.PyJWK] = {}
        for item in doc["keys"]:
            if not isinstance(item, dict) or item.get("use", "sig") != "sig":
                continue
            if not isinstance(item.get("kid"), str) or item.get("alg", "RS256") not in ALGORITHMS:
                continue
            try:
                keys[item["kid"]] = jwt.PyJWK(item)
            except jwt.PyJWTError as exc:
                log.warning("skipping an unusable key in %s (%s)", self.jwks_uri,
                            type(exc).__name__)
        self._keys = keys
        self._refreshed_at = self.timer.monotonic()

    def needs_refresh(self, token: str) -> bool:
        """True when `token` names a key we do not hold and a refetch is allowed now."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            return False
        recent = (self._refreshed_at is not None
                  and self.timer.monotonic() - self._refreshed_at < MIN_REFRESH_INTERVAL_S)
        return isinstance(kid, str) and kid not in self._keys and not recent

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or InvalidToken saying which check failed."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("not a JWT") from exc
        kid, alg = header.get("kid"), header.get("alg")
        if alg not in ALGORITHMS:
            raise InvalidToken("unsupported signing algorithm")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("signed with an unknown key")
        try:
            claims = jwt.decode(
                token, key.key, algorithms=[str(alg)], audience=self.audience,
                issuer=self.issuer, leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud"], "verify_iat": False},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidToken("not meant for this server (aud)") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidToken("issued by another server (iss)") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"rejected ({type(exc).__name__})") from exc
        if not isinstance(claims, dict):
            raise InvalidToken("claims are not an object")
        return claims


class JwtIntrospector:
    """An `introspect(token)` for the relay's token exchange that verifies JWT access tokens
    locally instead of asking the authorization server (RFC 7662's response shape: `active`
    plus the token's claims), for servers without introspection or to spare the round trip.
    A revoked but unexpired JWT stays valid until it expires: keep access tokens short."""

    def __init__(self, verifier: JwksVerifier) -> None:
        self.verifier = verifier

    async def introspect(self, token: str) -> Mapping[str, Any]:
        if self.verifier.needs_refresh(token):
            await self.verifier.refresh()  # key rotation (RFC 7517 §4.5 kid)
        try:
            claims = self.verifier.verify(token)
        except InvalidToken as exc:
            log.info("access token refused: %s", exc)
            return {"active": False}
        return {**claims, "active": True}
