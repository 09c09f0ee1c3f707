"""Realtime credentials: exchange the user's FHIR access token for a short-lived Ably token.

The hospital's relay (the sandbox's `ably_token_url`) checks the FHIR token and returns Ably
TokenDetails whose capability is limited to what this user may do: subscribe to the ward's
poke channel and presence on record channels. The Ably API key never reaches a workstation.
"""

from __future__ import annotations

from typing import Any

import httpx

from wardsync.fhir.client import TokenSource, require_secure_url
from wardsync.fhir.errors import Unreachable, error_for_status


class RealtimeTokenExchange:
    """`await exchange()` → TokenDetails JSON for the ably SDK's auth_callback."""

    def __init__(self, http: httpx.AsyncClient, url: str, tokens: TokenSource) -> None:
        self._http = http
        self.url = require_secure_url(url)
        self._tokens = tokens

    async def __call__(self) -> dict[str, Any]:
        token = await self._tokens.access_token()
        for attempt in (1, 2):
            try:
                resp = await self._http.post(
                    self.url, headers={"Authorization": f"Bearer {token}",
                                       "Accept": "application/json"},
                )
            except httpx.HTTPError as exc:
                raise Unreachable(f"realtime token: {type(exc).__name__}") from exc
            if resp.status_code == 401 and attempt == 1:
                token = await self._tokens.refresh_after_rejection(token)
                continue
            break
        if resp.status_code != 200:
            raise error_for_status(resp.status_code, None, "realtime token")
        details: dict[str, Any] = resp.json()
        return details
