"""FHIR REST writes as a backend system: OAuth client credentials and typed errors.

`ClientCredentialsToken` gets and caches a bearer token with the client_credentials grant
(RFC 6749 §4.4), authenticating with HTTP Basic (client_secret_basic, RFC 6749 §2.3.1).
`FhirRestWriter` creates, reads and updates resources on one FHIR base (FHIR R4 http.html),
retries exactly once with a fresh token on 401, and raises the FHIR client's typed errors
(`wardsync.fhir.errors`): `Unreachable` / `ServerError` (transient), `AuthError` /
`Forbidden`, `Conflict` (412), `NotFound`, `InvalidResource`. `FhirError.transient` says
whether retrying later may help. Error messages name the interaction, the status and the
OperationOutcome issue codes only: never a resource's content.
`BackendSystem` is the base of the sandbox's writing systems (the laboratory, the bedside
devices): one writer per system, built the same way.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Required, TypedDict, Unpack
from urllib.parse import quote_plus

import httpx

from wardsync.core.resources import parse_reference, version_id
from wardsync.fhir.errors import (
    AuthError,
    FhirError,
    ServerError,
    Unreachable,
    error_class_for_status,
    issues_from_outcome,
)

FHIR_JSON = "application/fhir+json"
TOKEN_REFRESH_MARGIN_S = 30.0  # renew this long before expiry (never more than 10 % of life)
DEFAULT_TOKEN_LIFETIME_S = 300.0  # when the token response has no expires_in (RFC 6749 §5.1)
HTTP_TIMEOUT_S = 10.0
MAX_UNFINISHED_BATCHES = 64  # partially written batches remembered for a retry
# Statuses that ask to come back later (RFC 9110 §15.5.9 Request Timeout, RFC 6585 §4).
RETRY_LATER_STATUSES = frozenset({408, 429})


def _basic_auth(client_id: str, client_secret: str) -> str:
    # RFC 6749 §2.3.1: id and secret are form-urlencoded before the Basic encoding.
    raw = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(raw.encode()).decode("ascii")


def _json_body(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


class ClientCredentialsToken:
    """A cached client-credentials bearer token; one token request at a time."""

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        http: httpx.AsyncClient,
        scope: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._token_url = token_url
        self._authorization = _basic_auth(client_id, client_secret)
        self._http = http
        self._scope = scope
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._renew_at = 0.0

    async def get(self) -> str:
        """A bearer token valid for a while yet; fetched only when the cached one is stale."""
        async with self._lock:
            if self._token is None or self._clock() >= self._renew_at:
                await self._fetch()
            assert self._token is not None
            return self._token

    def invalidate(self, token: str) -> None:
        """Forget `token` (the server refused it) unless it was already replaced."""
        if self._token == token:
            self._token = None

    async def _fetch(self) -> None:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        try:
            response = await self._http.post(
                self._token_url,
                data=form,
                headers={"Authorization": self._authorization, "Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise Unreachable(f"token request failed: {type(exc).__name__}") from exc
        if response.status_code >= 500 or response.status_code in RETRY_LATER_STATUSES:
            raise ServerError(
                f"token endpoint -> {response.status_code}", status=response.status_code
            )
        if response.status_code != 200:
            # RFC 6749 §5.2: the error code is safe to show; the description is left out.
            error = ""
            try:
                error = str(response.json().get("error", ""))
            except (ValueError, AttributeError):
                pass
            raise AuthError(
                f"token endpoint -> {response.status_code} {error}".rstrip(),
                status=response.status_code,
            )
        try:
            body = response.json()
            token = body["access_token"]
            lifetime = float(body.get("expires_in", DEFAULT_TOKEN_LIFETIME_S))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise AuthError("token endpoint returned no usable access_token") from exc
        if not isinstance(token, str) or not token:
            raise AuthError("token endpoint returned no usable access_token")
        margin = min(TOKEN_REFRESH_MARGIN_S, lifetime * 0.1)
        self._token = token
        self._renew_at = self._clock() + lifetime - margin


class FhirRestWriter:
    """Create, read and update resources on one FHIR server with a client-credentials token.

    Owns its `httpx.AsyncClient` unless one is passed in (then the caller closes it).
    """

    def __init__(
        self,
        *,
        fhir_base: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        http: httpx.AsyncClient | None = None,
        scope: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base = fhir_base.rstrip("/")
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=HTTP_TIMEOUT_S)
        self._token = ClientCredentialsToken(
            token_url=token_url,
            client_id=client_id,
            client_secret=client_secret,
            http=self._http,
            scope=scope,
            clock=clock,
        )
        # batch key -> slot -> created resource, for batches a failure interrupted.
        self._unfinished: OrderedDict[str, dict[str, dict]] = OrderedDict()

    async def aclose(self) -> None:
        """Close the HTTP client if this writer created it."""
        if self._owns_http:
            await self._http.aclose()

    async def create(self, resource: dict) -> dict:
        """POST a new resource (http.html#create) and return it as the server stored it."""
        rtype = resource["resourceType"]
        response = await self._send(
            "POST", f"{self._base}/{rtype}", resource, {"Prefer": "return=representation"}
        )
        if response.status_code not in (200, 201):
            raise _error_for("POST", rtype, response)
        return await self._stored(response, rtype)

    async def read(self, resource_type: str, logical_id: str) -> dict:
        """GET the current version of a resource (http.html#read)."""
        response = await self._send("GET", f"{self._base}/{resource_type}/{logical_id}")
        if response.status_code != 200:
            raise _error_for("GET", resource_type, response)
        return _json_resource(response, resource_type)

    async def update(self, resource: dict) -> dict:
        """PUT a changed resource guarded by If-Match on the version it was read at.

        FHIR R4 http.html#concurrency: a 412 means someone else changed it first; that is
        raised as `Conflict`, never retried as an overwrite.
        """
        rtype, rid = resource["resourceType"], resource["id"]
        version = version_id(resource)
        if not version:
            raise ValueError("an update needs the meta.versionId it was read at")
        response = await self._send(
            "PUT",
            f"{self._base}/{rtype}/{rid}",
            resource,
            {"If-Match": f'W/"{version}"', "Prefer": "return=representation"},
        )
        if response.status_code not in (200, 201):
            raise _error_for("PUT", rtype, response)
        return await self._stored(response, rtype)

    async def create_batch(self, batch_key: str, items: list[tuple[str, dict]]) -> list[dict]:
        """Create several resources; after a failure, a retry with the same key resumes.

        `items` are (slot, resource) pairs; a slot already created under `batch_key` by an
        interrupted earlier call is not created again, so retrying a half-written batch does
        not leave duplicates behind.
        """
        done = self._unfinished.pop(batch_key, {})
        try:
            for slot, resource in items:
                if slot not in done:
                    done[slot] = await self.create(resource)
        except BaseException:
            if done:
                self._unfinished[batch_key] = done
                while len(self._unfinished) > MAX_UNFINISHED_BATCHES:
                    self._unfinished.popitem(last=False)
            raise
        return [done[slot] for slot, _ in items]

    async def _stored(self, response: httpx.Response, rtype: str) -> dict:
        if response.content:
            return _json_resource(response, rtype)
        # return=minimal servers answer with an empty body and a Location (http.html#create).
        location = response.headers.get("Location") or response.headers.get("Content-Location")
        if not location:
            raise ServerError(f"{rtype} write returned neither body nor Location")
        literal = parse_reference(location)
        if literal is None or literal.type != rtype:
            raise ServerError(f"{rtype} write returned a Location that names no {rtype}")
        return await self.read(rtype, literal.id)

    async def _send(
        self,
        method: str,
        url: str,
        body: dict | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        all_headers = {"Accept": FHIR_JSON, **(headers or {})}
        if body is not None:
            all_headers["Content-Type"] = FHIR_JSON
        for attempt in (1, 2):
            token = await self._token.get()
            all_headers["Authorization"] = f"Bearer {token}"
            try:
                response = await self._http.request(method, url, json=body, headers=all_headers)
            except httpx.HTTPError as exc:
                raise Unreachable(f"{method} failed: {type(exc).__name__}") from exc
            if response.status_code != 401 or attempt == 2:
                return response
            # The token was revoked or expired early: fetch a new one and retry once.
            self._token.invalidate(token)
        raise AssertionError("unreachable")  # pragma: no cover


def _json_resource(response: httpx.Response, rtype: str) -> dict:
    try:
        body = response.json()
    except ValueError as exc:
        raise ServerError(f"{rtype}: response is not JSON") from exc
    if not isinstance(body, dict) or body.get("resourceType") != rtype:
        raise ServerError(f"{rtype}: response is not a {rtype}")
    return body


def _error_for(method: str, rtype: str, response: httpx.Response) -> FhirError:
    status = response.status_code
    issues = issues_from_outcome(_json_body(response))
    codes = ",".join(i.code for i in issues if i.code)
    message = f"{method} {rtype} -> {status}" + (f" ({codes})" if codes else "")
    cls = ServerError if status in RETRY_LATER_STATUSES else error_class_for_status(status)
    return cls(message, status=status, issues=issues)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class WriterConnection(TypedDict, total=False):
    """Where and as whom a `BackendSystem` writes: `FhirRestWriter`'s arguments."""

    fhir_base: Required[str]
    token_url: Required[str]
    client_id: Required[str]
    client_secret: Required[str]
    http: httpx.AsyncClient | None
    scope: str | None


class BackendSystem:
    """A system that writes over FHIR REST as a confidential client_credentials client.

    Owns one `FhirRestWriter` (and its HTTP client unless `http` is passed in); `now` is the
    wall clock stamped on what it writes, `monotonic` times its token's renewal.
    """

    def __init__(
        self,
        *,
        now: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        **connection: Unpack[WriterConnection],
    ) -> None:
        self._writer = FhirRestWriter(clock=monotonic, **connection)
        self._now = now

    async def aclose(self) -> None:
        """Close the HTTP client if this system created it."""
        await self._writer.aclose()
