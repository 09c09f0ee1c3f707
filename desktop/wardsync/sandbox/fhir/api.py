"""The FHIR R4 REST API over a `FhirStore` (R4 http.html), as an aiohttp sub-application.

JSON only. Every endpoint but `GET /metadata` needs a bearer token whose grant permits the
interaction (SMART scopes: r read/vread/history, s search, c create, u update, d delete).
Subscriptions need explicit system scopes (`subscriptions/access.py`) and, when a
`SubscriptionService` is given, get the Backport IG operations `$status`, `$events` and
`$get-ws-binding-token` (docs/subscriptions.md). Errors are OperationOutcome resources; no
input makes the server answer 5xx or stop serving.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import web

from wardsync.core.resources import is_fhir_id
from wardsync.sandbox.fhir.capability import capability_statement
from wardsync.sandbox.fhir.errors import (
    FhirStoreError,
    InvalidRequest,
    InvalidResource,
    InvalidSearch,
    Issue,
    ResourceNotFound,
    SearchTimedOut,
    SearchTooCostly,
    UnknownResourceType,
    VersionConflict,
)
from wardsync.sandbox.fhir.faults import FhirFaults
from wardsync.sandbox.fhir.fhir_dates import format_instant, http_date, parse_date_range
from wardsync.sandbox.fhir.outcome import operation_outcome
from wardsync.sandbox.fhir.search_params import SUPPORTED_TYPES
from wardsync.sandbox.fhir.search_query import MAX_PARAMETERS, TRANSPORT_PARAMETERS
from wardsync.sandbox.fhir.search_runner import SEARCH_TIME_LIMIT_S, SearchRunner
from wardsync.sandbox.fhir.store import FhirStore, HistoryEntry, ResourceGone, SearchPage
from wardsync.sandbox.fhir.subscriptions.access import SUBSCRIPTION, permits_subscription
from wardsync.sandbox.fhir.subscriptions.model import (
    CLIENT_STATUSES,
    SubscriptionRefused,
    parse_subscription,
)
from wardsync.sandbox.fhir.subscriptions.service import SubscriptionService, UnknownSubscription
from wardsync.sandbox.fhir.write_policy import (
    PolicyRefused,
    PreconditionRequired,
    check_if_match,
    check_write,
)
from wardsync.sandbox.grants import Grant

logger = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
CONTENT_TYPE = f"{FHIR_JSON}; charset=utf-8"
AUTH_REALM = "wardsync-fhir"
# R4 http.html#mime-type: what `_format` and `Accept` may ask for and get JSON.
JSON_FORMATS = frozenset({
    "json", "application/json", "application/fhir+json", "application/json+fhir", "text/json",
})
ACCEPT_RANGES = frozenset({
    "*/*", "application/*", "application/json", "application/fhir+json", "application/json+fhir",
})
_SAFE_HOST = re.compile(r"^[A-Za-z0-9.\-]+(?::\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::\d{1,5})?$")
MAX_FORM_FIELDS = 200
# After a search stopped at the time limit (HTTP 503, RFC 9110 §10.2.3).
SEARCH_RETRY_AFTER_S = 5
_IF_MATCH = re.compile(r'^(?:W/)?"(\d{1,12})"$')

# `GET [type]/_history` (R4 http.html#history): what it takes, and its page sizes.
HISTORY_PARAMETERS = frozenset({"_since", "_count", "_offset", "_snapshot"})
HISTORY_PAGE_SIZE = 50
MAX_HISTORY_PAGE_SIZE = 500

_GRANT = web.RequestKey("grant", Grant)
_PREFIX = web.AppKey("prefix", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
VerifyBearer = Callable[[str | None], Grant | None]


class _Problem(Exception):
    """An error response to send as an OperationOutcome."""

    def __init__(self, status: int, issues: tuple[Issue, ...] | Issue,
                 headers: dict[str, str] | None = None) -> None:
        self.issues = issues if isinstance(issues, tuple) else (issues,)
        super().__init__(self.issues[0].diagnostics)
        self.status = status
        self.headers = headers or {}


class FhirApi:
    """REST endpoints for a FhirStore.

    `verify_bearer` maps the bearer token (None when absent) to a Grant, or None when the
    token is not valid. `faults` makes the endpoints misbehave on demand (tests only).
    `wall_clock` (epoch seconds) decides grant expiry.
    """

    def __init__(
        self,
        store: FhirStore,
        verify_bearer: VerifyBearer,
        *,
        faults: FhirFaults | None = None,
        wall_clock: Callable[[], float] = time.time,
        subscriptions: SubscriptionService | None = None,
        fault_exempt_clients: frozenset[str] = frozenset(),
        search_time_limit_s: float = SEARCH_TIME_LIMIT_S,
    ) -> None:
        self._store = store
        self._searches = SearchRunner(store, time_limit_s=search_time_limit_s)
        # Clients the injected faults leave alone (the sandbox's own relay: the faults model
        # the server failing its workstations, docs/relay.md "The sandbox's relay").
        self._fault_exempt = fault_exempt_clients
        self._subscriptions = subscriptions
        self._verify_bearer = verify_bearer
        self._faults = faults
        self._wall_clock = wall_clock
        self._published = format_instant(int(wall_clock() * 1_000_000))

    def install(self, app: web.Application, prefix: str = "/fhir") -> None:
        """Mount the API on `app` under `prefix` (a sub-application with its own middleware,
        so nothing here touches the other routes of `app`)."""
        sub = web.Application(
            middlewares=[self._errors, self._fault_injection, self._format, self._auth]
        )
        sub[_PREFIX] = prefix.rstrip("/")
        router = sub.router
        router.add_get("/metadata", self._metadata, name="metadata")
        # Before the generic routes, which would take `$status` for an id.
        for path, handler in (("$status", self._op_status), ("$events", self._op_events),
                              ("$get-ws-binding-token", self._op_ws_token)):
            for route in (f"/Subscription/{{id}}/{path}", f"/Subscription/{path}"):
                router.add_get(route, handler)
                router.add_post(route, handler)
        router.add_get("/{type}", self._search)
        router.add_post("/{type}/_search", self._search)
        router.add_post("/{type}", self._create)
        router.add_get("/{type}/_history", self._type_history)  # before `{id}` takes it
        router.add_get("/{type}/{id}", self._read)
        router.add_put("/{type}/{id}", self._update)
        router.add_delete("/{type}/{id}", self._delete)
        router.add_get("/{type}/{id}/_history", self._history)
        router.add_get("/{type}/{id}/_history/{vid}", self._vread)
        sub.on_shutdown.append(self._release_held_requests)
        sub.on_cleanup.append(self._stop_searches)
        app.add_subapp(sub[_PREFIX], sub)

    async def _stop_searches(self, _app: web.Application) -> None:
        await self._searches.aclose()

    async def _release_held_requests(self, _app: web.Application) -> None:
        # A `hang` fault would otherwise hold shutdown for the rest of its period.
        if self._faults is not None:
            self._faults.clear()

    # ------------------------------------------------------------------ middleware

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Outermost: every failure becomes an OperationOutcome; nothing is cached."""
        try:
            response = await handler(request)
        except _Problem as problem:
            response = self._outcome(request, problem.status, problem.issues, problem.headers)
        except FhirStoreError as exc:
            response = self._store_error(request, exc)
        except web.HTTPException as exc:
            # Router 404/405 and aiohttp's own limits (413 body too large).
            headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
            code = "not-found" if exc.status == 404 else "invalid"
            response = self._outcome(
                request, exc.status, (Issue(code, exc.reason or "request refused"),), headers
            )
        except Exception:
            # Route template only: the concrete path may carry ids.
            logger.exception("unexpected error in %s %s", request.method,
                             request.match_info.route.resource)
            response = self._outcome(
                request, 500, (Issue("exception", "internal server error"),)
            )
        response.headers["Cache-Control"] = "no-store"
        return response

    @web.middleware
    async def _fault_injection(self, request: web.Request, handler: Handler
                               ) -> web.StreamResponse:
        if self._faults is None or request.match_info.route.name == "metadata":
            return await handler(request)
        if self._fault_exempt:
            auth = request.headers.get("Authorization", "")
            grant = self._verify_bearer(auth[7:].strip() if auth[:7].lower() == "bearer "
                                        else None)
            if grant is not None and grant.client_id in self._fault_exempt:
                return await handler(request)
        status = await self._faults.before_request()
        if status is None:
            return await handler(request)
        headers = {}
        retry = self._faults.retry_after_s()
        if status in (429, 503) and retry is not None:
            headers["Retry-After"] = str(retry)  # RFC 9110 §10.2.3
        raise _Problem(status, Issue("transient", "the server is unavailable (injected fault)"),
                       headers)

    @web.middleware
    async def _format(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """JSON only (R4 http.html#mime-type): another `_format` or Accept gets 406."""
        fmt = request.query.get("_format")
        if fmt is not None and fmt.split(";")[0].strip() not in JSON_FORMATS:
            raise _Problem(406, Issue("not-supported", f"_format {fmt!r}: this server "
                                      "speaks application/fhir+json only"))
        accept = request.headers.get("Accept", "").strip()
        if accept:
            ranges = {part.split(";")[0].strip().lower() for part in accept.split(",")}
            if not ranges & ACCEPT_RANGES:
                raise _Problem(406, Issue("not-supported", "this server answers "
                                          "application/fhir+json only"))
        return await handler(request)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Bearer token on everything but /metadata (RFC 6750 §2.1, SMART App Launch)."""
        if request.match_info.route.name == "metadata":
            return await handler(request)
        token = _bearer_token(request.headers.get("Authorization"))
        grant = None
        if token is not None:
            try:
                grant = self._verify_bearer(token)
            except Exception:
                logger.exception("token verification failed; treating the token as invalid")
        if grant is not None and grant.expires_at <= self._wall_clock():
            grant = None
        if grant is None:
            challenge = f'Bearer realm="{AUTH_REALM}"'
            if token is not None:
                challenge += ', error="invalid_token"'  # RFC 6750 §3.1
            message = "a bearer token is required" if token is None else "invalid bearer token"
            raise _Problem(401, Issue("login", message), {"WWW-Authenticate": challenge})
        request[_GRANT] = grant
        return await handler(request)

    # ------------------------------------------------------------------ interactions

    async def _metadata(self, request: web.Request) -> web.StreamResponse:
        return self._json(request, 200, capability_statement(
            self._base(request), self._published, subscriptions=self._subscriptions is not None))

    async def _read(self, request: web.Request) -> web.StreamResponse:
        rtype = self._type(request, "r")
        id = self._path_id(request, rtype)
        return self._resource(request, 200, self._store.read(rtype, id))

    async def _vread(self, request: web.Request) -> web.StreamResponse:
        rtype = self._type(request, "r")
        id = self._path_id(request, rtype)
        return self._resource(request, 200,
                              self._store.vread(rtype, id, request.match_info["vid"]))

    async def _history(self, request: web.Request) -> web.StreamResponse:
        rtype = self._type(request, "r")
        id = self._path_id(request, rtype)
        base = self._base(request)
        entries = [_history_entry(base, item) for item in self._store.history_entries(rtype, id)]
        bundle = self._bundle("history", len(entries),
                              [{"relation": "self", "url": f"{base}/{rtype}/{id}/_history"}],
                              entries)
        return self._json(request, 200, bundle)

    async def _type_history(self, request: web.Request) -> web.StreamResponse:
        """`GET [type]/_history` (R4 http.html#history): `_since`, `_count`, newest first;
        `next` pages over a fixed snapshot (`_offset`, `_snapshot`)."""
        rtype = self._type(request, "r")
        query = request.query
        unknown = sorted(set(query) - HISTORY_PARAMETERS - TRANSPORT_PARAMETERS)
        if unknown:
            raise InvalidSearch(f"history parameters not supported: {', '.join(unknown)}")
        since_us = None
        if "_since" in query:
            since = parse_date_range(query["_since"])
            if since is None or "T" not in query["_since"]:
                raise InvalidSearch("_since must be an instant")
            since_us = since.low
        count = _bounded_int(query, "_count", HISTORY_PAGE_SIZE, 1, MAX_HISTORY_PAGE_SIZE)
        offset = _bounded_int(query, "_offset", 0, 0, 2**31)
        snapshot = (_bounded_int(query, "_snapshot", 0, 0, 2**62)
                    if "_snapshot" in query else None)
        page = self._store.type_history(rtype, since_us=since_us, count=count, offset=offset,
                                        snapshot=snapshot)
        base = self._base(request)
        kept = {k: query[k] for k in ("_since",) if k in query}

        def link(relation: str, at: int) -> dict[str, str]:
            params = {**kept, "_count": str(count), "_offset": str(at),
                      "_snapshot": str(page.snapshot)}
            return {"relation": relation, "url": f"{base}/{rtype}/_history?{urlencode(params)}"}

        links = [link("self", offset)]
        if offset + count < page.total:
            links.append(link("next", offset + count))
        entries = [_history_entry(base, item) for item in page.entries]
        return self._json(request, 200, self._bundle("history", page.total, links, entries))

    async def _create(self, request: web.Request) -> web.StreamResponse:
        rtype = self._type(request, "c")
        body = await self._body(request, rtype)
        if rtype == SUBSCRIPTION:
            self._check_subscription(request, body)
        # What scopes cannot say (write_policy.py, docs/security.md §4).
        check_write(request[_GRANT], "create", rtype, body, None)
        stored = self._store.create(body)
        return self._resource(request, 201, stored, location=True)

    async def _update(self, request: web.Request) -> web.StreamResponse:
        rtype = self._type(request, "u")
        id = request.match_info["id"]
        if not is_fhir_id(id):
            raise InvalidRequest(f"{id!r} is not a valid FHIR id", "id")
        body = await self._body(request, rtype)
        if "id" not in body:
            # R4 http.html#update: the body SHALL carry the id of the URL.
            raise InvalidRequest("the resource must carry the id of the URL", f"{rtype}.id")
        stored = self._current_resource(rtype, id)
        current = None if stored is None else str(stored["meta"]["versionId"])
        if current is None and not self._permits(request[_GRANT], rtype, "c"):
            raise self._forbidden(rtype, "c")
        # docs/security.md §4: no blind overwrite (428), no write beyond the caller's role.
        check_if_match(request.headers.get("If-Match"), current)
        if_match = _if_match(request.headers.get("If-Match"), current)
        check_write(request[_GRANT], "create" if stored is None else "update", rtype, body,
                    stored)
        if rtype == SUBSCRIPTION:
            self._check_subscription(request, body)
        change = self._store.update_change(rtype, id, body, if_match=if_match)
        created = change.interaction == "create"
        return self._resource(request, 201 if created else 200, change.resource,
                              location=created)

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        """R4 http.html#delete: 204 whether or not there was anything to delete."""
        rtype = self._type(request, "d")
        id = self._path_id(request, rtype)
        check_write(request[_GRANT], "delete", rtype, None, self._current_resource(rtype, id))
        self._store.delete(rtype, id)
        return web.Response(status=204)

    def _check_subscription(self, request: web.Request, body: dict[str, Any]) -> None:
        """What a client may ask of a Subscription beyond its validity (docs/subscriptions.md):
        status `requested` or `off` only (the server sets `active` and `error`), and a
        `full-resource` payload only of types the client may read itself."""
        if self._subscriptions is None:
            raise _Problem(422, Issue("not-supported", "this server does not deliver "
                                      "subscriptions"))
        if body.get("status") not in CLIENT_STATUSES:
            raise _Problem(422, Issue(
                "business-rule", "a client sets Subscription.status to requested (or off); "
                "the server moves it to active or error", "Subscription.status"))
        try:
            spec = parse_subscription({**body, "id": body.get("id", "new")})
        except SubscriptionRefused as exc:
            raise InvalidResource(tuple(Issue("not-supported", f"{where}: {message}", where)
                                        for where, message in exc.problems)) from None
        grant = request[_GRANT]
        types = ([spec.topic.resource_type] if spec.topic else
                 [c.resource_type for c in spec.criteria])
        if spec.content == "full-resource":
            for rtype in types:
                if not grant.permits(rtype, "r"):
                    raise self._forbidden(rtype, "r")

    # ------------------------------------------------------------------ subscription operations

    def _service(self) -> SubscriptionService:
        if self._subscriptions is None:
            raise _Problem(404, Issue("not-supported", "this server has no subscriptions"))
        return self._subscriptions

    def _subscription_ids(self, request: web.Request, form: list[tuple[str, str]]) -> list[str]:
        if not self._permits(request[_GRANT], SUBSCRIPTION, "r"):
            raise self._forbidden(SUBSCRIPTION, "r")
        if "id" in request.match_info:
            ids = [request.match_info["id"]]
        else:
            ids = [v for k, v in [*request.query.items(), *form] if k == "id"]
        if not ids or len(ids) > 100:
            raise InvalidRequest("name one to 100 Subscriptions (id parameter)", "id")
        for sub_id in ids:
            if not is_fhir_id(sub_id):
                raise ResourceNotFound(SUBSCRIPTION, "?")
        return ids

    async def _op_params(self, request: web.Request) -> list[tuple[str, str]]:
        """Operation inputs from the query and a `Parameters` or form body (R4
        operations.html#request)."""
        if request.method != "POST" or not (await request.read()).strip():
            return []
        if request.content_type == "application/x-www-form-urlencoded":
            return await self._form(request)
        body = await self._body(request, "Parameters")
        pairs = []
        for param in body.get("parameter", []) if isinstance(body.get("parameter"), list) else []:
            if isinstance(param, dict) and isinstance(param.get("name"), str):
                value = next((v for k, v in param.items() if k.startswith("value")), None)
                if isinstance(value, str | int):
                    pairs.append((param["name"], str(value)))
        return pairs

    async def _op_status(self, request: web.Request) -> web.StreamResponse:
        service = self._service()
        form = await self._op_params(request)
        ids = self._subscription_ids(request, form)
        try:
            return self._json(request, 200, service.status(ids, self._base(request)))
        except UnknownSubscription as exc:
            raise ResourceNotFound(SUBSCRIPTION, str(exc)) from None

    async def _op_events(self, request: web.Request) -> web.StreamResponse:
        service = self._service()
        form = await self._op_params(request)
        ids = self._subscription_ids(request, form)
        args = dict([*request.query.items(), *form])

        def number(name: str) -> int | None:
            text = args.get(name)
            if text is None:
                return None
            if not text.isascii() or not text.isdigit() or len(text) > 18:
                raise InvalidRequest(f"{name} must be an event number", name)
            return int(text)

        since, until = number("eventsSinceNumber"), number("eventsUntilNumber")
        try:
            bundle = service.events(ids[0], since, until, args.get("content"),
                                    self._base(request))
        except UnknownSubscription as exc:
            raise ResourceNotFound(SUBSCRIPTION, str(exc)) from None
        return self._json(request, 200, bundle)

    async def _op_ws_token(self, request: web.Request) -> web.StreamResponse:
        service = self._service()
        form = await self._op_params(request)
        ids = self._subscription_ids(request, form)
        try:
            params = service.ws_binding_token(ids, self._base(request))
        except UnknownSubscription as exc:
            raise ResourceNotFound(SUBSCRIPTION, str(exc)) from None
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        except OverflowError as exc:
            raise _Problem(429, Issue("throttled", str(exc))) from None
        return self._json(request, 200, params)

    async def _search(self, request: web.Request) -> web.StreamResponse:
        rtype = self._type(request, "s")
        pairs = [(k, v) for k, v in request.query.items()]
        if request.method == "POST":
            pairs += await self._form(request)
        for key, value in pairs:
            if not _encodable(key) or not _encodable(value):
                raise InvalidSearch("search parameters must be valid UTF-8 text")
        strict = "handling=strict" in request.headers.get("Prefer", "").replace(" ", "")
        # Off the event loop with a time limit (search_runner.py, docs/security.md §3).
        page = await self._searches.search(
            rtype, [(k, v) for k, v in pairs if k not in TRANSPORT_PARAMETERS], strict=strict
        )
        bundle = self._searchset(request, rtype, page)
        return await self._searches.off_loop(lambda: self._json(request, 200, bundle))

    # ------------------------------------------------------------------ helpers

    def _type(self, request: web.Request, interaction: str) -> str:
        rtype = request.match_info["type"]
        if rtype not in SUPPORTED_TYPES:
            raise UnknownResourceType(rtype)
        if not self._permits(request[_GRANT], rtype, interaction):
            raise self._forbidden(rtype, interaction)
        return rtype

    @staticmethod
    def _permits(grant: Grant, rtype: str, interaction: str) -> bool:
        if rtype == SUBSCRIPTION:
            return permits_subscription(grant, interaction)
        return grant.permits(rtype, interaction)

    @staticmethod
    def _forbidden(rtype: str, interaction: str) -> _Problem:
        needed = f"{rtype}.{interaction}"
        context = "system" if rtype == SUBSCRIPTION else "user"
        return _Problem(
            403, Issue("forbidden", f"the token's scopes do not allow {needed}"),
            {"WWW-Authenticate":
             f'Bearer realm="{AUTH_REALM}", error="insufficient_scope", '
             f'scope="{context}/{needed}"'},
        )

    @staticmethod
    def _path_id(request: web.Request, rtype: str) -> str:
        id = request.match_info["id"]
        if not is_fhir_id(id):
            raise ResourceNotFound(rtype, "?")
        return id

    def _current_resource(self, rtype: str, id: str) -> dict[str, Any] | None:
        """The current version, or None if there is none (never written, or deleted)."""
        try:
            return self._store.read(rtype, id)
        except ResourceNotFound:
            return None

    @staticmethod
    async def _form(request: web.Request) -> list[tuple[str, str]]:
        """Parameters of `POST [type]/_search` (R4 http.html#search: form-encoded only)."""
        raw = await request.read()
        if not raw.strip():
            return []
        if request.content_type != "application/x-www-form-urlencoded":
            raise _Problem(415, Issue("not-supported", "POST _search takes "
                                      "application/x-www-form-urlencoded parameters"))
        if raw.count(b"&") >= MAX_PARAMETERS:
            raise SearchTooCostly(f"a search may have at most {MAX_PARAMETERS} parameters")
        try:
            return parse_qsl(raw.decode("ascii"), keep_blank_values=True, errors="strict",
                             max_num_fields=MAX_FORM_FIELDS)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidSearch(f"the form body cannot be read: {exc}") from None

    @staticmethod
    async def _body(request: web.Request, rtype: str) -> dict[str, Any]:
        """The request body as a JSON object naming `rtype` (R4 http.html#create)."""
        if "xml" in request.content_type:
            raise _Problem(415, Issue("not-supported", "send application/fhir+json"))
        raw = await request.read()
        if not raw.strip():
            raise InvalidRequest("the request has no body")
        try:
            data = json.loads(raw.decode("utf-8-sig"), parse_constant=_no_constant,
                              parse_float=_finite_float)
        except UnicodeDecodeError:
            raise InvalidRequest("the body is not UTF-8") from None
        except (ValueError, RecursionError) as exc:
            raise InvalidRequest(f"malformed JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidRequest("the body must be a JSON object (a FHIR resource)")
        given = data.get("resourceType")
        if given != rtype:
            raise InvalidRequest(
                f"resourceType {given!r} does not match {rtype!r} in the URL", "resourceType"
            )
        return data

    def _base(self, request: web.Request) -> str:
        """Absolute FHIR base from the request's host (falls back to the socket address)."""
        host = request.headers.get("Host", "")
        if not _SAFE_HOST.match(host):
            sock = request.transport.get_extra_info("sockname") if request.transport else None
            host = f"{sock[0]}:{sock[1]}" if isinstance(sock, tuple) else "localhost"
            if ":" in host.rsplit(":", 1)[0]:
                address, port = host.rsplit(":", 1)
                host = f"[{address}]:{port}"
        return f"{request.scheme}://{host}{request.app[_PREFIX]}"

    def _resource(self, request: web.Request, status: int, resource: dict[str, Any], *,
                  location: bool = False) -> web.StreamResponse:
        meta = resource["meta"]
        headers = {"ETag": f'W/"{meta["versionId"]}"'}
        modified = parse_date_range(meta["lastUpdated"])
        if modified is not None:
            headers["Last-Modified"] = http_date(modified.low)
        if location:
            headers["Location"] = (f"{self._base(request)}/{resource['resourceType']}/"
                                   f"{resource['id']}/_history/{meta['versionId']}")
        if status in (200, 201) and request.method in ("POST", "PUT"):
            prefer = request.headers.get("Prefer", "").replace(" ", "")
            if "return=minimal" in prefer:  # R4 http.html#ops
                response = web.Response(status=status, headers=headers)
                return response
        return self._json(request, status, resource, headers)

    def _searchset(self, request: web.Request, rtype: str, page: SearchPage) -> dict[str, Any]:
        base = self._base(request)
        query = page.query
        grant = request[_GRANT]
        entries: list[dict[str, Any]] = [
            {"fullUrl": f"{base}/{rtype}/{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in page.matches
        ]
        warnings = [
            Issue("not-supported", f"unknown search parameter {name!r} was ignored", name,
                  "warning")
            for name in query.ignored
        ]
        hidden: set[str] = set()
        for r in page.includes:
            if grant.permits(r["resourceType"], "r") or grant.permits(r["resourceType"], "s"):
                entries.append({"fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
                                "resource": r, "search": {"mode": "include"}})
            else:
                hidden.add(r["resourceType"])
        warnings += [
            Issue("suppressed", f"included {t} resources were left out: the token may not "
                  "read them", "_include", "warning")
            for t in sorted(hidden)
        ]
        if warnings:
            # R4 search.html#errors: report what was ignored in an outcome entry.
            entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}",
                            "resource": operation_outcome(warnings),
                            "search": {"mode": "outcome"}})

        def link(offset: int, paged: bool) -> str:
            params = [*query.echo, ("_count", str(query.count))]
            if paged:
                params += [("_snapshot", str(page.snapshot)), ("_offset", str(offset))]
            return f"{base}/{rtype}?{urlencode(params)}"

        explicit = query.snapshot is not None or query.offset > 0
        links = [{"relation": "self", "url": link(query.offset, explicit)}]
        if page.next_offset is not None:
            links.append({"relation": "next", "url": link(page.next_offset, True)})
        if query.offset > 0 and query.count > 0 and not query.summary_count:
            links.append({"relation": "previous",
                          "url": link(max(0, query.offset - query.count), True)})
        return self._bundle("searchset", page.total, links,
                            [] if query.summary_count else entries)

    def _bundle(self, kind: str, total: int, links: list[dict[str, str]],
                entries: list[dict[str, Any]]) -> dict[str, Any]:
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "id": str(uuid.uuid4()),
            "meta": {"lastUpdated": format_instant(int(self._wall_clock() * 1_000_000))},
            "type": kind,
            "total": total,
            "link": links,
        }
        if entries:
            bundle["entry"] = entries
        return bundle

    def _store_error(self, request: web.Request, exc: FhirStoreError) -> web.StreamResponse:
        if isinstance(exc, UnknownResourceType):
            return self._outcome(request, 404, (Issue("not-supported", str(exc)),))
        if isinstance(exc, ResourceGone):
            return self._outcome(request, 410, (Issue("deleted", str(exc)),))
        if isinstance(exc, ResourceNotFound):
            return self._outcome(request, 404, (Issue("not-found", str(exc)),))
        if isinstance(exc, VersionConflict):
            return self._outcome(request, 412, (Issue("conflict", str(exc)),))
        if isinstance(exc, InvalidResource):
            return self._outcome(request, 422, exc.issues)
        if isinstance(exc, InvalidRequest | InvalidSearch):
            return self._outcome(request, 400, exc.issues)
        if isinstance(exc, PolicyRefused):
            return self._outcome(request, 403, exc.issues)
        if isinstance(exc, PreconditionRequired):
            return self._outcome(request, 428, exc.issues)
        if isinstance(exc, SearchTimedOut):
            return self._outcome(request, 503, (Issue("too-costly", str(exc)),),
                                 {"Retry-After": str(SEARCH_RETRY_AFTER_S)})
        return self._outcome(request, 400, (Issue("invalid", str(exc)),))

    def _outcome(self, request: web.Request, status: int, issues: tuple[Issue, ...],
                 headers: dict[str, str] | None = None) -> web.StreamResponse:
        return self._json(request, status, operation_outcome(issues), headers)

    @staticmethod
    def _json(request: web.Request, status: int, body: dict[str, Any],
              headers: dict[str, str] | None = None) -> web.StreamResponse:
        pretty = request.query.get("_pretty") == "true"
        try:
            text = json.dumps(body, ensure_ascii=False, indent=2 if pretty else None,
                              separators=None if pretty else (",", ":"))
            payload = text.encode("utf-8")
        except UnicodeEncodeError:
            # A message echoing undecodable input: escape rather than fail.
            payload = json.dumps(body).encode("ascii")
        return web.Response(
            status=status,
            body=payload,
            headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store",
                     **(headers or {})},
        )


def _bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (RFC 6750 §2.1), or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _if_match(header: str | None, current: str | None) -> str | None:
    """The versionId an `If-Match` header requires (R4 http.html#concurrency), or None."""
    if header is None:
        return None
    header = header.strip()
    if header == "*":
        # RFC 9110 §13.1.1: any current representation; none yet is a failed precondition.
        return current if current is not None else "*"
    m = _IF_MATCH.match(header)
    if not m:
        raise InvalidRequest(f'If-Match must be W/"<versionId>", not {header!r}')
    return m.group(1)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _history_entry(base: str, item: HistoryEntry) -> dict[str, Any]:
    """One version as a history Bundle entry (R4 http.html#history)."""
    change = item.change
    rtype, id = change.resource_type, change.id
    created = change.interaction == "create"
    entry: dict[str, Any] = {
        "fullUrl": f"{base}/{rtype}/{id}",
        "resource": change.resource,
        "request": {"method": item.method,
                    "url": rtype if item.method == "POST" else f"{rtype}/{id}"},
        "response": {"status": "201 Created" if created else "200 OK",
                     "etag": f'W/"{change.version_id}"',
                     "lastModified": change.last_updated},
    }
    if change.deleted:
        # A delete is an entry with a request and no resource.
        del entry["resource"]
        entry["response"]["status"] = "204 No Content"
    return entry


def _bounded_int(query: Any, name: str, default: int, low: int, high: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise InvalidSearch(f"{name} must be a whole number")
    return max(low, min(high, int(text)))
