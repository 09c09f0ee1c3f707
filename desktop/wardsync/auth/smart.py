"""SMART App Launch 2.0 standalone launch for a native app: discovery, PKCE, code exchange.

References: SMART App Launch 2.0 (`.well-known/smart-configuration`, scopes, `fhirUser`),
RFC 7636 (PKCE, S256 only), RFC 8252 (native apps: system browser, loopback redirect on an
ephemeral port, §7.3), RFC 6749 §4.1 (authorization code) and §6 (refresh).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from wardsync.core.errors import SignInError
from wardsync.core.strict_url import UnsafeUrl, parse_strict_url
from wardsync.fhir.smart_configuration import fetch_smart_configuration


@dataclass(frozen=True, slots=True)
class SmartConfiguration:
    """The parts of `.well-known/smart-configuration` the app uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    revocation_endpoint: str | None = None
    scopes_supported: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()

    @classmethod
    def from_json(
        cls, doc: Mapping[str, Any], *, fhir_base: str | None = None,
    ) -> SmartConfiguration:
        """Read the discovery document. Every endpoint the app sends a code, a verifier or a
        token to must be a URL that Python and the browser read alike (`checked_endpoint`)."""
        try:
            methods = doc.get("code_challenge_methods_supported") or []
            if "S256" not in methods:
                raise SignInError("the sign-in server does not support PKCE S256")
            revocation = doc.get("revocation_endpoint")
            return cls(
                issuer=str(doc.get("issuer", "")),
                authorization_endpoint=checked_endpoint(
                    "authorization_endpoint", doc["authorization_endpoint"], fhir_base),
                token_endpoint=checked_endpoint("token_endpoint", doc["token_endpoint"], fhir_base),
                revocation_endpoint=(
                    None if revocation is None
                    else checked_endpoint("revocation_endpoint", revocation, fhir_base)
                ),
                scopes_supported=tuple(doc.get("scopes_supported") or ()),
                capabilities=tuple(doc.get("capabilities") or ()),
            )
        except KeyError as exc:
            raise SignInError(f"sign-in configuration lacks {exc.args[0]}") from None


def checked_endpoint(name: str, value: object, fhir_base: str | None) -> str:
    """`value` if it is an endpoint the app may send secrets to, else SignInError.

    It must be in the subset of URLs Python and a browser read alike (core/strict_url.py): a
    discovery document saying `https://idp.example\\@evil.example/authorize` would otherwise
    send the browser (and the user's password) to a host the app never checked. No fragment
    (RFC 6749 §3.1), and TLS (RFC 6749 §3.1, §3.2) unless the endpoint is a loopback IP
    literal or on the very host the FHIR base names (a site's own choice, e.g. a demo on a
    ward network).
    """
    if not isinstance(value, str):
        raise SignInError(f"sign-in configuration: {name} is not a URL")
    try:
        url = parse_strict_url(value)
        base_host = parse_strict_url(fhir_base).host if fhir_base is not None else None
    except UnsafeUrl as exc:
        raise SignInError(
            f"sign-in configuration: {name} is not a safe URL ({exc.reason})"
        ) from None
    if url.fragment is not None:
        raise SignInError(f"sign-in configuration: {name} has a fragment")
    if url.scheme != "https" and not url.is_loopback_literal and url.host != base_host:
        raise SignInError(f"sign-in configuration: {name} does not use https")
    return value


async def discover(http: httpx.AsyncClient, fhir_base: str) -> SmartConfiguration:
    """GET {fhir_base}/.well-known/smart-configuration (SMART 2.0 §2.2)."""
    try:
        parse_strict_url(fhir_base)
    except UnsafeUrl as exc:
        raise SignInError(f"the FHIR base URL is not a safe URL ({exc.reason})") from None
    return SmartConfiguration.from_json(
        await fetch_smart_configuration(http, fhir_base, SignInError), fhir_base=fhir_base)


@dataclass(frozen=True, slots=True)
class Pkce:
    """A PKCE verifier and its S256 challenge (RFC 7636 §4.1-4.2)."""

    verifier: str
    challenge: str

    @classmethod
    def new(cls) -> Pkce:
        verifier = secrets.token_urlsafe(64)[:96]  # 43..128 unreserved characters
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
        return cls(verifier, challenge)


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """One authorization attempt: the URL to open and what the callback must match."""

    url: str
    state: str
    redirect_uri: str
    pkce: Pkce


def authorization_request(
    config: SmartConfiguration, *, client_id: str, redirect_uri: str, scopes: Sequence[str],
    aud: str,
) -> AuthorizationRequest:
    pkce = Pkce.new()
    state = secrets.token_urlsafe(24)
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(scopes),
        "state": state,
        "aud": aud,
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
    }
    # Appended to the endpoint's own query, if any, from the strictly parsed URL: a naive
    # `endpoint + "?" + query` would put a second "?" into an endpoint that has one.
    try:
        endpoint = parse_strict_url(config.authorization_endpoint)
    except UnsafeUrl as exc:
        raise SignInError(f"authorization endpoint is not a safe URL ({exc.reason})") from None
    url = endpoint.with_query_params(list(query.items()))
    return AuthorizationRequest(url, state, redirect_uri, pkce)


def _jwt_claims(token: str | None) -> dict[str, Any]:
    """Read (not verify) the claims of the id_token: the app only displays them; the token
    endpoint was reached over a verified connection (OIDC Core §3.1.3.7 allows this)."""
    if not token or token.count(".") != 2:
        return {}
    payload = token.split(".")[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(raw)
    except (ValueError, json.JSONDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


@dataclass(slots=True)
class TokenSet:
    """Tokens of one signed-in session. The access token lives in memory only."""

    access_token: str
    expires_at: float
    refresh_token: str | None = None
    scope: tuple[str, ...] = ()
    fhir_user: str | None = None
    display_name: str = ""
    ward: str | None = None
    lifetime_s: float = 0.0  # expires_in as issued (0: unknown)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_response(
        cls, body: Mapping[str, Any], *, now: float | None = None, previous: TokenSet | None = None
    ) -> TokenSet:
        if not isinstance(body.get("access_token"), str):
            raise SignInError("the sign-in server returned no access token")
        now = time.time() if now is None else now
        claims = _jwt_claims(body.get("id_token"))
        ward = None
        for ctx in body.get("fhirContext") or ():
            ref = ctx.get("reference", "") if isinstance(ctx, Mapping) else ""
            if ref.startswith("Location/"):
                ward = ref.split("/", 1)[1]
        fhir_user = body.get("fhirUser") or claims.get("fhirUser")
        lifetime = float(body.get("expires_in", 300))
        return cls(
            access_token=body["access_token"],
            expires_at=now + lifetime,
            lifetime_s=lifetime,
            # RFC 6749 §6: the server MAY issue a new refresh token; keep the old one if not.
            refresh_token=(body.get("refresh_token")
                           or (previous.refresh_token if previous else None)),
            scope=tuple(str(body.get("scope", "")).split()),
            fhir_user=fhir_user or (previous.fhir_user if previous else None),
            display_name=str(claims.get("name") or (previous and previous.display_name) or ""),
            ward=ward or (previous.ward if previous else None),
        )

    @property
    def practitioner_id(self) -> str | None:
        if self.fhir_user and "Practitioner/" in self.fhir_user:
            return self.fhir_user.rsplit("Practitioner/", 1)[1]
        return None


async def _token_request(
    http: httpx.AsyncClient, config: SmartConfiguration, form: Mapping[str, str],
    previous: TokenSet | None = None,
) -> TokenSet:
    try:
        resp = await http.post(
            config.token_endpoint, data=dict(form), headers={"Accept": "application/json"}
        )
    except httpx.HTTPError as exc:
        raise SignInError(f"sign-in server not reachable ({type(exc).__name__})") from exc
    try:
        body = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = {}
    if resp.status_code != 200:
        code = body.get("error", f"HTTP {resp.status_code}") if isinstance(body, dict) else ""
        raise SignInError(f"sign-in refused: {code}", oauth_error=str(code))
    return TokenSet.from_response(body, previous=previous)


async def exchange_code(
    http: httpx.AsyncClient, config: SmartConfiguration, request: AuthorizationRequest,
    *, client_id: str, code: str,
) -> TokenSet:
    """RFC 6749 §4.1.3 with the PKCE verifier (RFC 7636 §4.5)."""
    return await _token_request(http, config, {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": request.redirect_uri,
        "client_id": client_id,
        "code_verifier": request.pkce.verifier,
    })


async def refresh(
    http: httpx.AsyncClient, config: SmartConfiguration, *, client_id: str, tokens: TokenSet,
) -> TokenSet:
    """RFC 6749 §6. The server rotates the refresh token; the caller must store the new one."""
    if not tokens.refresh_token:
        raise SignInError("no refresh token: sign in again", oauth_error="invalid_grant")
    return await _token_request(http, config, {
        "grant_type": "refresh_token",
        "refresh_token": tokens.refresh_token,
        "client_id": client_id,
    }, previous=tokens)
