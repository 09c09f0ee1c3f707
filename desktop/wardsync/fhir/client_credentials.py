"""Bearer tokens for a backend system: the OAuth 2.0 client_credentials grant (RFC 6749 §4.4,
SMART App Launch 2.0 "Backend Services" with a client secret).

`ClientCredentials` is a `TokenSource` (fhir/client.py): it caches one token and renews it
ahead of expiry, one token request at a time. The client authenticates with HTTP Basic, id and
secret each form-urlencoded first (client_secret_basic, RFC 6749 §2.3.1). Used by the relay
(relay/service.py) and by the sandbox's writing systems (sandbox/ward/fhir_writer.py).

Failures are the FHIR client's typed errors (fhir/errors.py): `Unreachable` (no answer),
`ServerError` (5xx, 408, 429: try again later), `AuthError` (refused, or no usable token).
Messages carry the status and the RFC 6749 §5.2 error code only: never a secret, a token or
the server's error description.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus

import httpx

from wardsync.core.timer import SYSTEM_TIMER
from wardsync.fhir.errors import AuthError, ServerError, Unreachable
from wardsync.fhir.http_body import json_or_none

# Renew this long before expiry, and never more than a tenth of the token's lifetime early.
TOKEN_RENEW_MARGIN_S = 60.0
TOKEN_RENEW_MAX_FRACTION = 0.1
# When the token response has no expires_in (it is RECOMMENDED, RFC 6749 §5.1).
DEFAULT_TOKEN_LIFETIME_S = 300.0
# Statuses that ask to come back later (RFC 9110 §15.5.9 Request Timeout, RFC 6585 §4).
RETRY_LATER_STATUSES = frozenset({408, 429})


def basic_client_auth(client_id: str, client_secret: str) -> httpx.BasicAuth:
    """HTTP Basic client authentication, id and secret form-urlencoded (RFC 6749 §2.3.1)."""
    return httpx.BasicAuth(quote_plus(client_id), quote_plus(client_secret))


class ClientCredentials:
    """A confidential client's cached bearer token (the `TokenSource` of `FhirClient`)."""

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        http: httpx.AsyncClient,
        scope: str | None = None,
        monotonic: Callable[[], float] = SYSTEM_TIMER.monotonic,
    ) -> None:
        self.client_id = client_id
        self._token_url = token_url
        self._auth = basic_client_auth(client_id, client_secret)
        self._http = http
        self._scope = scope
        self._monotonic = monotonic
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._renew_at = 0.0

    @property
    def auth(self) -> httpx.BasicAuth:
        """The client's credentials for other endpoints of the same server (introspection)."""
        return self._auth

    async def access_token(self) -> str:
        """A token valid for a while yet; requested only when the cached one is due."""
        async with self._lock:
            if self._token is None or self._monotonic() >= self._renew_at:
                self._token, lifetime = await self._request()
                margin = min(TOKEN_RENEW_MARGIN_S, lifetime * TOKEN_RENEW_MAX_FRACTION)
                self._renew_at = self._monotonic() + lifetime - margin
            return self._token

    def invalidate(self, token: str) -> None:
        """Forget `token` (a server refused it) unless it was already replaced."""
        if self._token == token:
            self._token = None

    async def refresh_after_rejection(self, rejected: str) -> str:
        async with self._lock:
            self.invalidate(rejected)
        return await self.access_token()

    async def _request(self) -> tuple[str, float]:
        """POST the grant to the token endpoint: (access token, lifetime in seconds)."""
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        try:
            resp = await self._http.post(self._token_url, data=form, auth=self._auth,
                                         headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise Unreachable(f"token endpoint unreachable: {type(exc).__name__}") from exc
        status = resp.status_code
        if status >= 500 or status in RETRY_LATER_STATUSES:
            raise ServerError(f"token endpoint -> {status}", status=status)
        parsed = json_or_none(resp)
        body: dict[str, Any] | None = parsed if isinstance(parsed, dict) else None
        if status != 200:
            # RFC 6749 §5.2: the error code is safe to show; the description is left out.
            error = body.get("error") if body is not None else None
            code = error if isinstance(error, str) else ""
            raise AuthError(f"token endpoint -> {status} {code}".rstrip(), status=status)
        token = body.get("access_token") if body is not None else None
        if body is None or not isinstance(token, str) or not token:
            raise AuthError("token endpoint returned no usable access_token", status=status)
        return token, _lifetime(body.get("expires_in"), status)


def _lifetime(expires_in: Any, status: int) -> float:
    """The token's lifetime from `expires_in` (RFC 6749 §5.1), which some servers send as a
    string of digits; absent: `DEFAULT_TOKEN_LIFETIME_S`."""
    if expires_in is None:
        return DEFAULT_TOKEN_LIFETIME_S
    try:
        lifetime = float(expires_in) if not isinstance(expires_in, bool) else math.nan
    except (TypeError, ValueError):
        lifetime = math.nan
    if not math.isfinite(lifetime) or lifetime <= 0:
        raise AuthError("token endpoint returned an unusable expires_in", status=status)
    return lifetime
