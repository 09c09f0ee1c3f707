"""The subscription service: matches committed changes to Subscriptions and delivers them.

Off the request path (docs/subscriptions.md "How it works"): the store's post-commit
listener only sets an event; the matcher task reads the store's version table after its
durable cursor, in commit order, numbers each matching change per subscription and moves
the cursor in one ledger transaction, then wakes the subscriptions' delivery workers. A
FHIR write therefore costs the same with or without subscribers, and a dead endpoint holds
up nobody but its own subscriber.

The set of Subscriptions is itself read from the version feed (a Subscription is a FHIR
resource like any other), so a subscription sees exactly the changes committed after it,
and after a restart the set is rebuilt as it stood at the cursor.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

import httpx
from aiohttp import web

from wardsync.core.tasks import TaskOwner
from wardsync.core.timer import SYSTEM_TIMER, Timer
from wardsync.sandbox.fhir.errors import ResourceNotFound, VersionConflict
from wardsync.sandbox.fhir.fhir_dates import format_instant, parse_date_range
from wardsync.sandbox.fhir.store import FhirStore, ResourceChange
from wardsync.sandbox.fhir.subscriptions.classic import HookRequest
from wardsync.sandbox.fhir.subscriptions.delivery import (
    DeliveryWorker,
    RetryPolicy,
    bundle_request,
    http_transport,
)
from wardsync.sandbox.fhir.subscriptions.ledger import SubscriptionEvent, SubscriptionLedger
from wardsync.sandbox.fhir.subscriptions.model import (
    SubscriptionRefused,
    SubscriptionSpec,
    parse_subscription,
)
from wardsync.sandbox.fhir.subscriptions.notifications import (
    notification_bundle,
    status_bundle,
    status_parameters,
)
from wardsync.sandbox.fhir.subscriptions.websocket import WebSocketChannel

log = logging.getLogger(__name__)

MATCH_BATCH = 500  # versions read per matcher pass
MATCH_RETRY_S = 1.0  # after a database error while matching
MAX_SUBSCRIPTIONS = 500
MAX_EVENTS_PER_QUERY = 1000  # $events answers at most this many events per call
WEBSOCKET_PATH = "/fhir-subscriptions/websocket"


class UnknownSubscription(LookupError):
    """No live Subscription has this id."""


class SubscriptionService:
    """Matching, numbering and delivery for every Subscription in `store`.

    `fhir_base()` is the server's public FHIR base (for references in notifications).
    `timer` drives retries and heartbeats (a FakeTimer in tests). `http` is the client used
    for rest-hook deliveries (one is created and owned here when None).
    """

    def __init__(self, store: FhirStore, ledger: SubscriptionLedger, *,
                 fhir_base: Callable[[], str], timer: Timer = SYSTEM_TIMER,
                 policy: RetryPolicy | None = None, http: httpx.AsyncClient | None = None,
                 websocket_url: Callable[[], str] | None = None) -> None:
        self.store = store
        self.ledger = ledger
        self.timer = timer
        self.policy = policy or RetryPolicy()
        self._fhir_base = fhir_base
        self._websocket_url = websocket_url
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(limits=httpx.Limits(max_connections=200))
        self._http_send = http_transport(self._http)
        self.websockets = WebSocketChannel(timer, on_bound=self._on_socket_bound)
        self._specs: dict[str, SubscriptionSpec] = {}
        self._workers: dict[str, DeliveryWorker] = {}
        self._tasks = TaskOwner("subscriptions", logger=log)
        self._changed = asyncio.Event()
        self._remove_listener: Callable[[], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.matched_through = 0

    # ------------------------------------------------------------------ lifetime

    async def start(self) -> None:
        """Rebuild the Subscription set as of the cursor and start matching and delivery."""
        self._loop = asyncio.get_running_loop()
        cursor = self.ledger.cursor()
        if cursor > self.store.last_seq():
            raise RuntimeError("the subscription ledger is ahead of the FHIR store: they "
                               "belong to different data directories")
        page = self.store.search("Subscription", [("_snapshot", str(cursor)),
                                                  ("_count", str(MAX_SUBSCRIPTIONS))])
        if cursor == 0 and not self.store.search("Subscription", [("_summary", "count")]).total:
            # A new ledger and no live Subscription: nothing before now can match anything,
            # so skip the seeded history instead of reading it all.
            cursor = self.store.last_seq()
            self.ledger.record(cursor, [])
        self.matched_through = cursor
        for resource in page.matches:
            self._apply(resource)
        self._remove_listener = self.store.add_listener(self._on_commit)
        self._tasks.spawn(self._match_loop(), name="subscription-matcher")

    async def stop(self) -> None:
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        await self._tasks.aclose()
        await self.websockets.close_all()
        if self._own_http:
            await self._http.aclose()

    def _on_commit(self, change: ResourceChange) -> None:
        # Runs in the writer's thread right after commit: only a wake-up, never work.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._changed.set)

    # ------------------------------------------------------------------ matching

    async def _match_loop(self) -> None:
        while True:
            self._changed.clear()
            try:
                batch = self.store.changes_after(self.matched_through, MATCH_BATCH)
                if batch:
                    self.match_batch(batch)
            except sqlite3.Error:
                # Nothing was numbered (the ledger transaction rolled back): try the same
                # changes again shortly rather than stop announcing changes.
                log.exception("subscription matching failed; retrying in %s s",
                              MATCH_RETRY_S)
                await self.timer.sleep(MATCH_RETRY_S)
                continue
            if not batch:
                await self._changed.wait()
                continue
            await asyncio.sleep(0)  # let requests run between big batches

    def match_batch(self, batch: list[ResourceChange]) -> None:
        """Number the changes of `batch` (commit order) for the subscriptions they match."""
        matches: list[tuple[str, ResourceChange]] = []
        touched: set[str] = set()
        for change in batch:
            if change.resource_type == "Subscription":
                self._apply_change(change)
                touched.add(change.id)
                continue
            committed = parse_date_range(change.last_updated)
            at_us = committed.low if committed is not None else 0
            for spec in self._specs.values():
                if (spec.status != "off" and not spec.ended(at_us)
                        and spec.matches(change.resource)):
                    matches.append((spec.id, change))
        numbered = self.ledger.record(batch[-1].seq, matches)
        self.matched_through = batch[-1].seq
        for sub_id in touched | set(numbered):
            live = self._specs.get(sub_id)
            if live is not None:
                self._ensure_worker(live)  # wakes it, or restarts one that died

    def _apply_change(self, change: ResourceChange) -> None:
        if change.deleted:
            self._specs.pop(change.id, None)
            worker = self._workers.pop(change.id, None)
            if worker is not None:
                worker.wake()  # it finds no spec and ends
            self.ledger.forget(change.id)
            return
        self._apply(change.resource)

    def _apply(self, resource: dict[str, Any]) -> None:
        try:
            spec = parse_subscription(resource)
        except SubscriptionRefused as exc:
            # Validation refuses these on write; one stored before a rule changed is skipped.
            log.warning("Subscription/%s is not usable and is ignored: %s",
                        resource.get("id"), exc)
            return
        known = self._specs.get(spec.id)
        if known is not None and int(known.version_id) > int(spec.version_id):
            return  # set_status already cached a newer version
        self._specs[spec.id] = spec
        self._ensure_worker(spec)

    def _ensure_worker(self, spec: SubscriptionSpec) -> None:
        worker = self._workers.get(spec.id)
        if spec.status == "off":
            return
        if worker is None or worker.finished:
            worker = DeliveryWorker(spec.id, self, self._transport, self.policy)
            self._workers[spec.id] = worker
            worker.task = self._tasks.spawn(worker.run(), name=f"subscription-{spec.id}")
        worker.wake()

    async def _transport(self, spec: SubscriptionSpec, request: HookRequest) -> None:
        if spec.channel_type == "websocket":
            await self.websockets.send(spec, request)
        else:
            await self._http_send(spec, request)

    def stats(self) -> dict[str, Any]:
        """Counters for the sandbox's control endpoint: ids and numbers only."""
        subs = {}
        for sub_id, spec in self._specs.items():
            counters = self.ledger.counters(sub_id)
            subs[sub_id] = {"status": spec.status, "channel": spec.channel_type,
                            "events": counters.events, "delivered": counters.delivered}
        return {"matched_through": self.matched_through, "subscriptions": subs}

    # ------------------------------------------------------------------ SubscriptionHost

    def spec(self, sub_id: str) -> SubscriptionSpec | None:
        return self._specs.get(sub_id)

    def base_url(self) -> str:
        return self._fhir_base()

    def channel_ready(self, spec: SubscriptionSpec) -> bool:
        return spec.channel_type != "websocket" or self.websockets.bound(spec.id)

    def set_status(self, spec: SubscriptionSpec, status: str, error: str | None) -> None:
        """Record a server-side status change as a new version of the Subscription."""
        try:
            current = self.store.read("Subscription", spec.id)
        except ResourceNotFound:
            return
        if str(current["meta"]["versionId"]) != spec.version_id:
            return  # the client changed it meanwhile; the matcher brings the new version
        updated = {k: v for k, v in current.items() if k not in ("meta", "error")}
        updated["status"] = status
        if error:
            updated["error"] = error
        try:
            stored = self.store.update("Subscription", spec.id, updated,
                                       if_match=spec.version_id)
        except VersionConflict:
            return
        self._apply(stored)

    def focus_resources(self, events: list[SubscriptionEvent]) -> dict[int, dict[str, Any]]:
        found: dict[int, dict[str, Any]] = {}
        for event in events:
            if event.interaction == "delete":
                continue
            try:
                found[event.number] = self.store.vread(event.resource_type, event.id,
                                                       event.version_id)
            except ResourceNotFound:
                continue
        return found

    # ------------------------------------------------------------------ operations

    def _live(self, sub_id: str) -> SubscriptionSpec:
        spec = self._specs.get(sub_id)
        if spec is None:
            # Created but not matched yet: read it straight from the store.
            try:
                spec = parse_subscription(self.store.read("Subscription", sub_id))
            except (ResourceNotFound, SubscriptionRefused):
                raise UnknownSubscription(sub_id) from None
        return spec

    def status(self, sub_ids: list[str], base: str) -> dict[str, Any]:
        """`$status` (IG OperationDefinition backport-subscription-status): a searchset of
        `query-status` Parameters."""
        entries = []
        for sub_id in sub_ids:
            spec = self._live(sub_id)
            counters = self.ledger.counters(sub_id)
            entries.append(status_parameters(spec, base, "query-status", spec.status,
                                             counters.events, [], spec.content,
                                             self._error_text(sub_id)))
        return status_bundle(entries, base)

    def _error_text(self, sub_id: str) -> str | None:
        try:
            error = self.store.read("Subscription", sub_id).get("error")
        except ResourceNotFound:
            return None
        return error if isinstance(error, str) else None

    def events(self, sub_id: str, since: int | None, until: int | None, content: str | None,
               base: str) -> dict[str, Any]:
        """`$events` (IG OperationDefinition backport-subscription-events): the retained
        events numbered `since`..`until` as a `query-event` notification Bundle."""
        spec = self._live(sub_id)
        counters = self.ledger.counters(sub_id)
        low = max(1, since if since is not None else 1)
        high = min(counters.events, until if until is not None else counters.events)
        high = min(high, low + MAX_EVENTS_PER_QUERY - 1)
        events = self.ledger.events(sub_id, low, high) if high >= low else []
        # A client may ask for less than it subscribed to, never for more.
        order = ("empty", "id-only", "full-resource")
        use = spec.content
        if content in order and order.index(content) < order.index(spec.content):
            use = content
        resources = self.focus_resources(events) if use == "full-resource" else {}
        return notification_bundle(spec, base, "query-event", spec.status, counters.events,
                                   events, use, self._now(), resources)

    def ws_binding_token(self, sub_ids: list[str], base: str) -> dict[str, Any]:
        """`$get-ws-binding-token` (IG OperationDefinition backport-subscription-get-ws-
        binding-token): token, expiration, subscription, websocket-url."""
        for sub_id in sub_ids:
            if self._live(sub_id).channel_type != "websocket":
                raise ValueError(f"Subscription/{sub_id} does not use the websocket channel")
        token, expires = self.websockets.issue_token(tuple(sub_ids))
        url = self._websocket_url() if self._websocket_url else ""
        params: list[dict[str, Any]] = [
            {"name": "token", "valueString": token},
            {"name": "expiration", "valueDateTime": format_instant(int(expires * 1_000_000))},
        ]
        params += [{"name": "subscription", "valueString": f"{base}/Subscription/{s}"}
                   for s in sub_ids]
        params.append({"name": "websocket-url", "valueUrl": url})
        return {"resourceType": "Parameters", "parameter": params}

    async def _on_socket_bound(self, sub_id: str, ws: web.WebSocketResponse) -> None:
        spec = self._specs.get(sub_id)
        if spec is None:
            return
        counters = self.ledger.counters(sub_id)
        bundle = notification_bundle(spec, self.base_url(), "handshake", spec.status,
                                     counters.events, [], spec.content, self._now())
        request = bundle_request(spec, bundle)
        assert request.body is not None
        await ws.send_str(request.body.decode("utf-8"))
        worker = self._workers.get(sub_id)
        if worker is not None:
            worker.wake()

    def install_websocket(self, app: web.Application, path: str = WEBSOCKET_PATH) -> None:
        """Serve the websocket channel at `path` of `app` (outside the bearer-protected
        FHIR routes: the binding token is the credential)."""
        app.router.add_get(path, self.websockets.handle)

    def _now(self) -> str:
        return format_instant(int(self.timer.wall() * 1_000_000))
