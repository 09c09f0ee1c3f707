"""The relay's own identity towards the FHIR and authorization servers: SMART Backend
Services style client credentials (RFC 6749 §4.4; SMART App Launch 2.0 "Backend Services"),
with the endpoints discovered from `{fhir base}/.well-known/smart-configuration`.

`ClientCredentials` is the `TokenSource` the shared `FhirClient` uses; it caches one token and
renews it ahead of expiry, one request at a time. Secrets never reach a log or an error.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx

from wardsync.core.errors import SignInError
from wardsync.core.timer import SYSTEM_TIMER, Timer

TOKEN_RENEW_MARGIN_S = 60.0
DEFAULT_TOKEN_LIFETIME_S = 300.0


class DiscoveryError(RuntimeError):
    """The SMART configuration could not be fetched or lacks a required endpoint."""


@dataclass(frozen=True, slots=True)
class SmartEndpoints:
    """The endpoints the relay needs from the SMART configuration (SMART 2.0 §2.1)."""

    issuer: str | None
    token_endpoint: str
    introspection_endpoint: str | None


async def fetch_json_document(http: httpx.AsyncClient, url: str, what: str,
                              error: type[DiscoveryError] = DiscoveryError) -> dict[str, Any]:
    """GET a well-known JSON document (`what` names it in errors); raises `error` when it is
    unreachable, not 200 or not a JSON object."""
    try:
        resp = await http.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise error(f"{what} unreachable ({url}): {type(exc).__name__}") from exc
    if resp.status_code != 200:
        raise error(f"{what} ({url}) -> HTTP {resp.status_code}")
    try:
        body: Any = resp.json()
    except ValueError as exc:
        raise error(f"{what} ({url}) is not JSON") from exc
    if not isinstance(body, dict):
        raise error(f"{what} ({url}) is not a JSON object")
    return body


async def discover(http: httpx.AsyncClient, fhir_base: str) -> SmartEndpoints:
    """GET `{fhir_base}/.well-known/smart-configuration` (SMART App Launch 2.0 §2.1)."""
    url = f"{fhir_base.rstrip('/')}/.well-known/smart-configuration"
    body = await fetch_json_document(http, url, "SMART configuration")
    if not isinstance(body.get("token_endpoint"), str):
        raise DiscoveryError("SMART configuration has no token_endpoint")
    introspection = body.get("introspection_endpoint")
    issuer = body.get("issuer")
    return SmartEndpoints(
        issuer=issuer if isinstance(issuer, str) else None,
        token_endpoint=body["token_endpoint"],
        introspection_endpoint=introspection if isinstance(introspection, str) else None,
    )


class ClientCredentials:
    """Bearer tokens for the relay's confidential client (client_secret_basic, RFC 6749 §2.3.1)."""

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        http: httpx.AsyncClient,
        scope: str | None = None,
        timer: Timer = SYSTEM_TIMER,
    ) -> None:
        self.client_id = client_id
        self._token_url = token_url
        self._auth = httpx.BasicAuth(client_id, client_secret)
        self._http = http
        self._scope = scope
        self._timer = timer
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._renew_at = 0.0

    @property
    def auth(self) -> httpx.BasicAuth:
        """The client's credentials for other endpoints of the same server (introspection)."""
        return self._auth

    async def access_token(self) -> str:
        async with self._lock:
            if self._token is None or self._timer.monotonic() >= self._renew_at:
                await self._fetch()
            assert self._token is not None
            return self._token

    async def refresh_after_rejection(self, rejected: str) -> str:
        async with self._lock:
            if self._token == rejected:
                self._token = None
        return await self.access_token()

    async def _fetch(self) -> None:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        try:
            resp = await self._http.post(self._token_url, data=form, auth=self._auth,
                                         headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise SignInError(f"token endpoint unreachable: {type(exc).__name__}") from exc
        body: Any = None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code != 200 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else None
            # RFC 6749 §5.2: the error code is safe to show; the description is left out.
            raise SignInError(f"token endpoint -> HTTP {resp.status_code} {error or ''}".strip(),
                              oauth_error=error if isinstance(error, str) else "")
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise SignInError("token endpoint returned no access_token")
        try:
            lifetime = float(body.get("expires_in", DEFAULT_TOKEN_LIFETIME_S))
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_LIFETIME_S
        self._token = token
        self._renew_at = self._timer.monotonic() + lifetime - min(TOKEN_RENEW_MARGIN_S,
                                                                  lifetime * 0.1)
