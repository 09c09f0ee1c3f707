"""FHIR REST writes as a backend system: OAuth client credentials and typed errors.

The bearer token comes from the FHIR layer's `ClientCredentials` (client_credentials grant,
RFC 6749 §4.4; fhir/client_credentials.py), shared with the relay.
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

import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Required, TypedDict, Unpack

import httpx

from wardsync.core.resources import parse_reference, version_id
from wardsync.fhir.client_credentials import RETRY_LATER_STATUSES, ClientCredentials
from wardsync.fhir.errors import (
    FhirError,
    ServerError,
    Unreachable,
    error_class_for_status,
    issues_from_outcome,
)
from wardsync.fhir.http_body import json_or_none

FHIR_JSON = "application/fhir+json"
HTTP_TIMEOUT_S = 10.0
MAX_UNFINISHED_BATCHES = 64  # partially written batches remembered for a retry


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
        self._token = ClientCredentials(
            token_url=token_url,
            client_id=client_id,
            client_secret=client_secret,
            http=self._http,
            scope=scope,
            monotonic=clock,
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
            token = await self._token.access_token()
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
    issues = issues_from_outcome(json_or_none(response))
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
