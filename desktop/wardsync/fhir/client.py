"""The FHIR R4 REST client: one httpx.AsyncClient per process, typed errors, R4B validation.

Clinical data is always fetched fresh: requests carry `Cache-Control: no-store` and nothing is
kept between calls, except terminology resources (`TERMINOLOGY_TYPES`), which may be served
from an in-memory cache (the `force-cache` equivalent of the Fetch standard).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import certifi
import httpx

from wardsync.core.defaults import FHIR_TIMEOUT_S as DEFAULT_TIMEOUT_S
from wardsync.core.errors import SignInError
from wardsync.core.net import is_loopback_host
from wardsync.core.resources import version_id
from wardsync.fhir.errors import (
    AuthError,
    FhirError,
    InvalidResource,
    NotFound,
    ServerError,
    Unreachable,
    UntrustedCertificate,
    error_for_status,
)
from wardsync.fhir.http_body import json_or_none
from wardsync.fhir.validation import BULK_VALIDATION_THRESHOLD, validate_resource

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
MAX_SEARCH_PAGES = 50
# Terminology and protocol content may be cached; clinical resources never are.
TERMINOLOGY_TYPES = frozenset(
    {"CodeSystem", "ValueSet", "ConceptMap", "NamingSystem", "PlanDefinition",
     "ActivityDefinition", "Questionnaire"}
)


class TokenSource(Protocol):
    """Where the client gets bearer tokens (implemented by the auth layer)."""

    async def access_token(self) -> str:
        """A currently valid access token (refreshing ahead of expiry as needed)."""

    async def refresh_after_rejection(self, rejected: str) -> str:
        """The server said 401 to `rejected`: refresh (once, shared) or raise AuthError."""


class InsecureServer(ValueError):
    """A non-loopback server without TLS: clinical data must not cross a network in clear."""


def require_secure_url(url: str, *, require_tls: bool = True) -> str:
    """Return `url` if it may carry clinical data: https, or http on loopback only."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InsecureServer(f"not an http(s) URL: {url!r}")
    if require_tls and parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise InsecureServer(
            f"{parts.hostname} must be reached over https: clinical data is never sent "
            "unencrypted over a network"
        )
    return url


def tls_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    """Certificate verification for every HTTPS call: the public CAs (certifi) plus, when IT
    configures one (`fhir.ca_bundle`), the hospital's own CA. Verification is never off."""
    ctx = ssl.create_default_context(cafile=certifi.where())
    if ca_bundle:
        ctx.load_verify_locations(cafile=ca_bundle)
    return ctx


@dataclass(frozen=True, slots=True)
class InvalidEntry:
    """A search entry that failed validation: shown as an error row, never silently dropped."""

    ref: str | None
    error: InvalidResource


@dataclass(slots=True)
class SearchResult:
    """All pages of one search: matches, `_include`d resources and invalid entries."""

    matches: list[dict] = field(default_factory=list)
    included: list[dict] = field(default_factory=list)
    invalid: list[InvalidEntry] = field(default_factory=list)
    total: int | None = None
    pages: int = 0
    unchanged: list[dict] = field(default_factory=list)  # matches the caller already held

    @property
    def resources(self) -> list[dict]:
        return self.matches + self.included


@dataclass(slots=True)
class HistoryResult:
    """The raw entries of a history (R4 http.html#history), every page read or not."""

    entries: list[dict] = field(default_factory=list)
    pages: int = 0
    complete: bool = True  # False: `max_pages` stopped it before the last page


Known = Callable[[str, str], bool]


def _version_of(resource: object) -> tuple[str, str] | None:
    if not isinstance(resource, Mapping):
        return None
    vid = version_id(resource)
    rtype, rid = resource.get("resourceType"), resource.get("id")
    if isinstance(vid, str) and isinstance(rtype, str) and isinstance(rid, str):
        return f"{rtype}/{rid}", vid
    return None


def _validate_entries(
    entries: Sequence[Mapping], known: Known | None = None
) -> list[tuple[str, dict | InvalidEntry]]:
    out: list[tuple[str, dict | InvalidEntry]] = []
    for entry in entries:
        mode = (entry.get("search") or {}).get("mode", "match")
        resource = entry.get("resource")
        if mode == "outcome":
            continue
        if known is not None and mode == "match" and isinstance(resource, Mapping):
            version = _version_of(resource)
            if version is not None and known(*version):
                # The caller already holds exactly this version (validated when it arrived):
                # re-checking it would only burn event-loop time.
                out.append(("known", dict(resource)))
                continue
        try:
            out.append((mode, validate_resource(resource)))
        except InvalidResource as exc:
            ref = None
            if isinstance(resource, Mapping):
                ref = f"{resource.get('resourceType')}/{resource.get('id')}"
            out.append((mode, InvalidEntry(ref, exc)))
    return out


class FhirClient:
    """Authenticated FHIR REST calls on ONE httpx.AsyncClient (docs/style.md §3: one owner)."""

    def __init__(
        self,
        base_url: str,
        tokens: TokenSource,
        *,
        http: httpx.AsyncClient | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        verify: Any = True,
        require_tls: bool = True,
    ) -> None:
        self.base_url = require_secure_url(base_url.rstrip("/"), require_tls=require_tls)
        self._origin = urlsplit(self.base_url)[:2]
        self._tokens = tokens
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout_s, verify=verify)
        self._terminology: dict[str, dict] = {}
        self.requests_sent = 0

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    # ------------------------------------------------------------------ transport
    async def _request(
        self, method: str, url: str, *, what: str, json_body: object = None,
        headers: Mapping[str, str] | None = None, params: Mapping[str, Any] | None = None,
        auth: bool = True,
    ) -> httpx.Response:
        # A next link or Location pointing at another origin must not receive our token.
        if urlsplit(url)[:2] != self._origin:
            raise ServerError(f"{what}: server pointed to another origin")
        hdrs = {"Accept": FHIR_JSON, "Cache-Control": "no-store"}
        if json_body is not None:
            hdrs["Content-Type"] = FHIR_JSON
        hdrs.update(headers or {})
        content = None if json_body is None else json.dumps(json_body).encode()
        token = await self._token(None) if auth else None
        for attempt in (1, 2):
            if token:
                hdrs["Authorization"] = f"Bearer {token}"
            self.requests_sent += 1
            try:
                resp = await self._http.request(
                    method, url, content=content, headers=hdrs, params=params
                )
            except httpx.TimeoutException as exc:
                raise Unreachable(f"{what}: timed out") from exc
            except httpx.TransportError as exc:
                if _is_certificate_error(exc):
                    raise UntrustedCertificate(f"{what}: certificate not trusted") from exc
                raise Unreachable(f"{what}: {type(exc).__name__}") from exc
            if resp.status_code == 401 and auth and attempt == 1:
                # Refresh exactly once, then retry (the ably SDK's reauth_if_expired pattern).
                token = await self._token(token or "")
                continue
            break
        if resp.status_code >= 400:
            raise error_for_status(resp.status_code, json_or_none(resp), what)
        return resp

    async def _token(self, rejected: str | None) -> str:
        try:
            if rejected is None:
                return await self._tokens.access_token()
            return await self._tokens.refresh_after_rejection(rejected)
        except SignInError as exc:
            raise AuthError(str(exc), status=401) from exc

    @staticmethod
    def _body(resp: httpx.Response, what: str) -> Any:
        body = json_or_none(resp)
        if body is None:
            raise ServerError(f"{what}: response is not JSON")
        return body

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    # ------------------------------------------------------------------ interactions
    async def capabilities(self) -> dict:
        """GET /metadata (no token needed; R4 http.html#capabilities)."""
        resp = await self._request("GET", self.url("metadata"), what="metadata", auth=False)
        return self._body(resp, "metadata")

    async def read(self, resource_type: str, id: str) -> dict:
        """GET [type]/[id], validated. Terminology types may come from the cache."""
        key = f"{resource_type}/{id}"
        if resource_type in TERMINOLOGY_TYPES and key in self._terminology:
            return self._terminology[key]
        resp = await self._request("GET", self.url(key), what=f"read {resource_type}")
        resource = validate_resource(self._body(resp, key))
        if resource_type in TERMINOLOGY_TYPES:
            self._terminology[key] = resource
        return resource

    async def search(
        self, resource_type: str, params: Mapping[str, Any] | None = None, *,
        max_pages: int = MAX_SEARCH_PAGES, known: Known | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> SearchResult:
        """GET [type]?params, following `next` links; each entry validated on its own.

        `known(ref, versionId)` says which matches the caller already holds: those are not
        validated again and are returned in `unchanged` (they still move a caller's cursor).
        `headers` are added to every page's request (e.g. `Cache-Control: no-cache`).
        """
        result = SearchResult()
        url: str | None = self.url(resource_type)
        query: Mapping[str, Any] | None = params or {}
        while url and result.pages < max_pages:
            resp = await self._request("GET", url, params=query, headers=headers,
                                       what=f"search {resource_type}")
            bundle = self._body(resp, resource_type)
            if not isinstance(bundle, Mapping) or bundle.get("resourceType") != "Bundle":
                raise ServerError(f"search {resource_type}: response is not a Bundle")
            result.pages += 1
            if result.total is None and isinstance(bundle.get("total"), int):
                result.total = bundle["total"]
            entries = [e for e in bundle.get("entry") or () if isinstance(e, Mapping)]
            if len(entries) > BULK_VALIDATION_THRESHOLD:
                checked = await asyncio.to_thread(_validate_entries, entries, known)
            else:
                checked = _validate_entries(entries, known)
            for mode, item in checked:
                if mode == "known" and isinstance(item, dict):
                    result.unchanged.append(item)
                elif isinstance(item, InvalidEntry):
                    log.warning("invalid %s in search result: %s", item.ref, item.error)
                    result.invalid.append(item)
                elif mode == "include":
                    result.included.append(item)
                else:
                    result.matches.append(item)
            url = next(
                (link.get("url") for link in bundle.get("link") or ()
                 if isinstance(link, Mapping) and link.get("relation") == "next"),
                None,
            )
            query = None  # the next link carries the whole query
        return result

    async def history(
        self, path: str, params: Mapping[str, Any] | None = None, *,
        max_pages: int = MAX_SEARCH_PAGES, headers: Mapping[str, str] | None = None,
    ) -> HistoryResult:
        """GET [type]/_history or [type]/[id]/_history (`path`), following `next` links.

        The entries come back as the server sent them (a delete has a `request` and no
        `resource`, R4 http.html#history): the caller validates what it uses."""
        result = HistoryResult()
        url: str | None = self.url(f"{path.strip('/')}/_history")
        query: Mapping[str, Any] | None = params or {}
        while url:
            if result.pages >= max_pages:
                result.complete = False
                break
            resp = await self._request("GET", url, params=query, headers=headers,
                                       what=f"history {path.split('/')[0]}")
            bundle = self._body(resp, path)
            if not isinstance(bundle, Mapping) or bundle.get("resourceType") != "Bundle":
                raise ServerError(f"history {path.split('/')[0]}: response is not a Bundle")
            result.pages += 1
            result.entries += [dict(e) for e in bundle.get("entry") or ()
                               if isinstance(e, Mapping)]
            url = next(
                (link.get("url") for link in bundle.get("link") or ()
                 if isinstance(link, Mapping) and link.get("relation") == "next"),
                None,
            )
            query = None  # the next link carries the whole query
        return result

    async def create(self, resource: Mapping) -> dict:
        """POST [type] (R4 http.html#create); returns the stored resource."""
        rtype = str(resource.get("resourceType"))
        validate_resource(resource)
        resp = await self._request(
            "POST", self.url(rtype), json_body=resource, what=f"create {rtype}",
            headers={"Prefer": "return=representation"},
        )
        return validate_resource(self._body(resp, rtype))

    async def delete(self, resource_type: str, id: str) -> None:
        """DELETE [type]/[id] (R4 http.html#delete); a resource already gone is not an error."""
        try:
            await self._request("DELETE", self.url(f"{resource_type}/{id}"),
                                what=f"delete {resource_type}")
        except NotFound:
            return

    async def operation(self, path: str, params: Mapping[str, str] | None = None) -> dict:
        """GET [base]/[path] for an operation without side effects (R4 operations.html#
        request: `$name` by GET with its inputs as query parameters); returns the JSON."""
        resp = await self._request("GET", self.url(path), params=params, what=f"GET {path}")
        body = self._body(resp, path)
        if not isinstance(body, dict):
            raise ServerError(f"GET {path}: response is not a JSON object")
        return body

    async def update(self, resource: Mapping, *, if_match_version: str | None) -> dict:
        """PUT [type]/[id] with `If-Match: W/"n"` (R4 http.html#concurrency).

        A 412 raises Conflict and nothing is overwritten: the caller shows both versions.
        """
        rtype, rid = str(resource.get("resourceType")), str(resource.get("id"))
        validate_resource(resource)
        headers = {"Prefer": "return=representation"}
        if if_match_version is not None:
            headers["If-Match"] = f'W/"{if_match_version}"'
        resp = await self._request(
            "PUT", self.url(f"{rtype}/{rid}"), json_body=resource, headers=headers,
            what=f"update {rtype}",
        )
        return validate_resource(self._body(resp, rtype))


def _is_certificate_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


__all__ = [
    "AuthError", "FhirClient", "FhirError", "InsecureServer", "InvalidEntry", "SearchResult",
    "TokenSource", "require_secure_url",
]
