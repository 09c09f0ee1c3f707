"""The sandbox FHIR server trusting an external authorization server (a site's Keycloak, Entra
ID or ADFS), as a hospital's training ward does: `wardsync sandbox --auth-issuer URL
--auth-audience AUD`.

Clinicians' bearer tokens are JWTs from that issuer, verified with its published keys
(`relay.jwks`: `jwks_uri` from `<issuer>/.well-known/openid-configuration`, signature, `iss`,
`aud`, `exp`; RFC 9068 §4). Their SMART scopes become the FHIR server's grant
(`sandbox.grants`), `fhirUser` (SMART App Launch 2.0 §2.4) names the user and a `ward` claim,
when the issuer adds one, their ward. The FHIR base's `.well-known/smart-configuration` then
advertises the issuer's endpoints, so the desktop signs in there.

The sandbox's own system clients (laboratory, bedside devices, relay: client_credentials) keep
their tokens from the sandbox's OAuth server, since the synthetic ward must go on writing; a
person's token from the sandbox's own sign-in page is no longer accepted. Keys are read at
start: restart the sandbox after the issuer rotates its signing keys.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import jwt
from aiohttp import web

from wardsync.relay.jwks import InvalidToken, JwksVerifier, openid_configuration
from wardsync.sandbox.fhir.api import VerifyBearer
from wardsync.sandbox.grants import Grant

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# SMART App Launch 2.0 §2.1: discovery lives at {fhir base}/.well-known/smart-configuration.
SMART_CONFIGURATION_PATHS = frozenset({"/.well-known/smart-configuration",
                                       "/fhir/.well-known/smart-configuration"})
SMART_CAPABILITIES = ("launch-standalone", "client-public", "client-confidential-symmetric",
                      "sso-openid-connect", "permission-user", "permission-v2")
DISCOVERY_TIMEOUT_S = 10.0
_PASSED_ON = ("authorization_endpoint", "token_endpoint", "revocation_endpoint",
              "introspection_endpoint", "jwks_uri", "grant_types_supported",
              "token_endpoint_auth_methods_supported", "scopes_supported")


def _relative_fhir_user(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    parts = value.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] in ("Practitioner", "PractitionerRole", "Patient",
                                         "RelatedPerson", "Person"):
        return f"{parts[-2]}/{parts[-1]}"
    return None


class ExternalIssuer:
    """Bearer-token verification and SMART discovery for an external issuer."""

    def __init__(self, verifier: JwksVerifier, openid: dict[str, Any]) -> None:
        self.verifier = verifier
        self.issuer = verifier.issuer
        self.audience = verifier.audience
        self._openid = openid

    @classmethod
    async def discover(cls, issuer: str, audience: str | None) -> ExternalIssuer:
        """Read the issuer's OpenID configuration and keys (raises DiscoveryError)."""
        if not audience:
            # RFC 9068 §4: a resource server must check that it is the token's audience.
            raise ValueError("an external issuer needs the audience its tokens name for "
                             "this FHIR server (--auth-audience)")
        async with httpx.AsyncClient(timeout=DISCOVERY_TIMEOUT_S) as http:
            openid = await openid_configuration(http, issuer)
            verifier = JwksVerifier(issuer, audience, str(openid["jwks_uri"]), http)
            await verifier.refresh()
        log.info("trusting access tokens from %s for audience %s (%d keys)", issuer, audience,
                 len(verifier.key_ids))
        return cls(verifier, openid)

    # ------------------------------------------------------------------ tokens
    def grant_for(self, token: str) -> Grant | None:
        """The grant of a valid token from the issuer, or None."""
        try:
            claims = self.verifier.verify(token)
        except InvalidToken as exc:
            log.info("bearer token refused: %s", exc)
            return None
        client_id = str(claims.get("azp") or claims.get("client_id") or "")
        subject = _relative_fhir_user(claims.get("fhirUser")) or client_id
        ward = claims.get("ward")
        name = claims.get("name") or claims.get("preferred_username") or ""
        return Grant(
            client_id=client_id, subject=subject,
            scopes=frozenset(str(claims.get("scope") or "").split()),
            expires_at=float(claims["exp"]), display_name=str(name),
            ward=ward if isinstance(ward, str) else None,
        )

    def _from_issuer(self, token: str) -> bool:
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return False
        return isinstance(claims, dict) and claims.get("iss") == self.issuer

    def verify_bearer_or(self, own: VerifyBearer) -> VerifyBearer:
        """Tokens from the issuer are verified here; the sandbox's own tokens (`own`) are
        accepted for its system clients only (see the module docstring)."""

        def verify(token: str | None) -> Grant | None:
            if not token:
                return None
            if self._from_issuer(token):
                return self.grant_for(token)
            grant = own(token)
            if grant is not None and "/" in grant.subject:
                return None  # a person signed in at the sandbox, not at the site's issuer
            return grant

        return verify

    # ------------------------------------------------------------------ discovery
    def smart_configuration(self) -> dict[str, Any]:
        """SMART App Launch 2.0 §2.1 metadata pointing at the external issuer."""
        doc: dict[str, Any] = {"issuer": self.issuer}
        doc.update({k: self._openid[k] for k in _PASSED_ON if k in self._openid})
        doc["response_types_supported"] = ["code"]
        # SMART 2.0 requires S256 (RFC 7636); advertised only when the issuer supports it.
        methods = self._openid.get("code_challenge_methods_supported") or []
        doc["code_challenge_methods_supported"] = [m for m in methods if m == "S256"]
        doc["capabilities"] = list(SMART_CAPABILITIES)
        return doc

    @web.middleware
    async def smart_configuration_middleware(self, request: web.Request,
                                             handler: Handler) -> web.StreamResponse:
        """Answers the SMART discovery paths before the sandbox's own OAuth routes do."""
        if request.method == "GET" and request.path in SMART_CONFIGURATION_PATHS:
            return web.json_response(self.smart_configuration())
        return await handler(request)
