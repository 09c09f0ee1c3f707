"""`POST /realtime/token`: a workstation's SMART access token in, an Ably token out.

The access token is verified by the authorization server itself, by RFC 7662 introspection
with the relay's own client credentials (the endpoint is discovered from the SMART
configuration), so a revoked token stops working at once. The Ably token is minted with the
hub key through the ably SDK (`auth.request_token`), bound to a clientId derived from the
user's `fhirUser`, with exactly the capability a workstation needs (docs/architecture.md
§3.3): subscribe on its ward's channel, presence on record channels, nothing else, and a
lifetime no longer than the access token's remaining life, so signing out ends realtime
access too.

Outcomes: 200 TokenDetails; 401 no/forged/expired/revoked token; 403 a token without the
user scopes the desktop needs, or no ward; 400 malformed request; 413 oversized; 503 the
authorization server or the hub could not be reached.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from ably import AblyRest
from ably.util.exceptions import AblyException
from aiohttp import web

from wardsync.core.timer import SYSTEM_TIMER, Timer
from wardsync.relay.metrics import RelayMetrics

log = logging.getLogger(__name__)

MAX_AUTHORIZATION_BYTES = 8192
MAX_BODY_BYTES = 1024
MAX_REALTIME_TOKEN_TTL_S = 3600.0
MIN_REALTIME_TOKEN_TTL_S = 1.0
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# SMART 2.0 §3.3 user-level resource scopes (v2 `.rs`, v1 `.read`/`.*`) that let the desktop
# read the ward: a token needs at least one of them for a realtime token.
_USER_READ_SCOPE = re.compile(r"user/(\*|[A-Z][A-Za-z]+)\.(read|\*|c?r[uds]*)")
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


class _Refused(Exception):
    def __init__(self, status: int, error: str, outcome: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.outcome = outcome


class TokenIntrospection(Protocol):
    """RFC 7662 §2.2 answers for access tokens: `Introspector` asks the authorization
    server; `jwks.JwtIntrospector` verifies JWT access tokens locally with its keys."""

    async def introspect(self, token: str) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Introspector:
    """RFC 7662 §2.1 requests with the relay's client credentials."""

    endpoint: str
    http: httpx.AsyncClient
    auth: httpx.BasicAuth

    async def introspect(self, token: str) -> Mapping[str, Any]:
        resp = await self.http.post(self.endpoint, data={"token": token,
                                                         "token_type_hint": "access_token"},
                                    auth=self.auth, headers={"Accept": "application/json"})
        if resp.status_code != 200:
            raise _Refused(503, "temporarily_unavailable", "introspection_failed")
        try:
            body = resp.json()
        except ValueError as exc:
            raise _Refused(503, "temporarily_unavailable", "introspection_failed") from exc
        if not isinstance(body, dict):
            raise _Refused(503, "temporarily_unavailable", "introspection_failed")
        return body


def client_id_for(fhir_user: object) -> str | None:
    """The Ably clientId for a `fhirUser` (relative `Practitioner/x` or an absolute URL):
    the user's logical id, as the desktop uses it for presence."""
    if not isinstance(fhir_user, str):
        return None
    parts = fhir_user.rstrip("/").split("/")
    if len(parts) < 2 or parts[-2] not in ("Practitioner", "PractitionerRole"):
        return None
    return parts[-1] if _ID.fullmatch(parts[-1]) else None


def permits_realtime(scopes: Iterable[str]) -> bool:
    """True if the access token's scopes let the desktop read the ward: `openid` and
    `fhirUser` alone say who the user is, not that they may see the ward's pokes."""
    return any(_USER_READ_SCOPE.fullmatch(s) for s in scopes)


def capability_for(ward: str) -> dict[str, list[str]]:
    """Least privilege (docs/architecture.md §3.3): a ward's pokes, presence on records."""
    return {f"ward:{ward}": ["subscribe"], "record:*": ["presence", "subscribe"]}


class TokenExchangeEndpoint:
    """The aiohttp handler for `POST /realtime/token`."""

    def __init__(
        self,
        *,
        introspector: TokenIntrospection,
        ably: AblyRest,
        metrics: RelayMetrics,
        default_ward: str | None = None,
        max_ttl_s: float = MAX_REALTIME_TOKEN_TTL_S,
        timer: Timer = SYSTEM_TIMER,
        on_ward: Callable[[str], None] | None = None,
    ) -> None:
        self._introspector = introspector
        self._ably = ably
        self._metrics = metrics
        self._default_ward = default_ward
        self._max_ttl_s = max_ttl_s
        self._timer = timer
        self._on_ward = on_ward  # told each ward a token is issued for (relay heartbeats)

    async def handle(self, request: web.Request) -> web.Response:
        try:
            details = await self._exchange(request)
        except _Refused as refused:
            self._metrics.token_exchanges.labels(refused.outcome).inc()
            headers = dict(NO_STORE)
            if refused.status == 401:
                # RFC 6750 §3: tell the client what was wrong with its bearer token.
                headers["WWW-Authenticate"] = f'Bearer error="{refused.error}"'
            return web.json_response({"error": refused.error}, status=refused.status,
                                     headers=headers)
        self._metrics.token_exchanges.labels("issued").inc()
        return web.json_response(details, headers=NO_STORE)

    async def _exchange(self, request: web.Request) -> dict[str, Any]:
        header = request.headers.get("Authorization", "")
        if len(header) > MAX_AUTHORIZATION_BYTES:
            raise _Refused(400, "invalid_request", "malformed")
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise _Refused(413, "invalid_request", "malformed")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            raise _Refused(401, "invalid_token", "no_token")
        try:
            info = await self._introspector.introspect(token)
        except httpx.HTTPError as exc:
            log.warning("introspection unreachable (%s)", type(exc).__name__)
            raise _Refused(503, "temporarily_unavailable", "introspection_failed") from exc
        if info.get("active") is not True:
            raise _Refused(401, "invalid_token", "inactive")
        scopes = str(info.get("scope") or "").split()
        client_id = client_id_for(info.get("fhirUser"))
        if client_id is None or not permits_realtime(scopes):
            raise _Refused(403, "insufficient_scope", "insufficient_scope")
        ward = info.get("ward") if isinstance(info.get("ward"), str) else self._default_ward
        if not ward or not _ID.fullmatch(ward):
            raise _Refused(403, "insufficient_scope", "no_ward")
        remaining_s = self._remaining_s(info.get("exp"))
        if remaining_s < MIN_REALTIME_TOKEN_TTL_S:
            raise _Refused(401, "invalid_token", "inactive")
        ttl_s = min(self._max_ttl_s, remaining_s)
        try:
            details = await self._ably.auth.request_token(token_params={
                "client_id": client_id,
                "capability": capability_for(ward),
                "ttl": int(ttl_s * 1000),  # the SDK takes milliseconds (TK2a)
            })
        except (AblyException, httpx.HTTPError, OSError) as exc:
            log.warning("could not mint a realtime token (%s)", type(exc).__name__)
            raise _Refused(503, "temporarily_unavailable", "hub_failed") from exc
        if self._on_ward is not None:
            self._on_ward(ward)
        # TokenDetails as Ably's REST API sends it (TD1): capability as JSON text.
        return {
            "token": details.token, "expires": details.expires, "issued": details.issued,
            "capability": json.dumps(details.capability.to_dict(), sort_keys=True,
                                     separators=(",", ":")),
            "clientId": details.client_id,
        }

    def _remaining_s(self, exp: object) -> float:
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            # RFC 7662 §2.2: exp is optional; without it, the relay's own cap applies.
            return self._max_ttl_s
        return float(exp) - self._timer.wall()
