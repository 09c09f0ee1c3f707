"""The relay's own FHIR Subscriptions: created, kept alive, watched, and recovered.

On start the relay reads the CapabilityStatement: the topics the server publishes
(`capabilitystatement-subscriptiontopic-canonical` extensions on the Subscription resource
entry, Subscriptions R5 Backport IG STU 1.1 "Topics" for R4) and whether it offers `$events`.
`subscriptions.mode` = `auto` uses topic-based subscriptions when topics are advertised, else
classic R4 criteria subscriptions (one per polled type, HAPI-style rest-hook PUTs).

Each Subscription is rest-hook to the relay's `notify_url`, `id-only`, with a `reason` naming
the relay (the audit trail: "WardSync relay <public_url>: pokes for ward workstations") and
a random per-subscription secret in `channel.header` (`Authorization: Bearer <secret>`) that
the notify endpoint requires. With `subscriptions.channel = "websocket"` (topic-based only)
the channel is `websocket` instead: no header, the `notify_url` kept as `endpoint` only to
recognise the relay's own, and the relay binds a socket to each (relay/websocket_channel.py);
notifications are then handled exactly as on rest-hook. Secrets and event marks are kept in
the relay's state db, so a restarted relay reuses its Subscriptions; one of ours it cannot use
(no secret on record, in `error`/`off`, gone, another channel) is deleted and replaced, never
left to pile up.

Topic-based: every event number is handled once in order. A gap (an event number beyond the
next expected, or a heartbeat whose `events-since-subscription-start` is ahead) is filled
with `$events` (IG OperationDefinition backport-subscription-events) when the server has it,
else by an immediate reconciliation round. Silence longer than twice the heartbeat period
plus a margin (measured on the relay's Timer) triggers a `$status` check: a Subscription in
`error`/`off` is replaced, missed events are recovered. Whatever slips through all of that,
the reconciliation poll still finds (docs/relay.md "Subscriptions").
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from wardsync.core.timer import SYSTEM_TIMER, Timer
from wardsync.fhir.client import FhirClient
from wardsync.fhir.errors import FhirError, NotFound
from wardsync.relay.config import SubscriptionsSection
from wardsync.relay.metrics import RelayMetrics
from wardsync.relay.notifications import (
    MalformedNotification,
    Notification,
    NotificationEvent,
    parse_notification,
)
from wardsync.relay.reconcile import Reconciler
from wardsync.relay.state import RelayStore
from wardsync.relay.websocket_channel import WebSocketBinder

log = logging.getLogger(__name__)

_IG = "http://hl7.org/fhir/uv/subscriptions-backport/"
TOPIC_CANONICAL_EXTENSION = (
    f"{_IG}StructureDefinition/capabilitystatement-subscriptiontopic-canonical")
SUBSCRIPTION_PROFILE = f"{_IG}StructureDefinition/backport-subscription"
HEARTBEAT_PERIOD_URL = f"{_IG}StructureDefinition/backport-heartbeat-period"
TIMEOUT_URL = f"{_IG}StructureDefinition/backport-timeout"
MAX_COUNT_URL = f"{_IG}StructureDefinition/backport-max-count"
PAYLOAD_CONTENT_URL = f"{_IG}StructureDefinition/backport-payload-content"
FHIR_JSON = "application/fhir+json"
TOPIC, CLASSIC = "topic", "classic"
REST_HOOK, WEBSOCKET = "rest-hook", "websocket"
NOTIFY_TIMEOUT_S = 10  # backport-timeout we ask for
MAX_EVENTS_PER_NOTIFICATION = 50
EVENTS_PER_QUERY = 1000  # $events range asked for at once
SETUP_RETRY_S = 5.0
ANNOUNCE_CONCURRENCY = 8  # focus reads in flight for one notification
DEAD_STATUSES = ("error", "off")

Announce = Callable[[str, "str | None", str], Awaitable[object]]


def reason_for(public_url: str) -> str:
    """`Subscription.reason` of the relay's Subscriptions (what an auditor reads)."""
    return f"WardSync relay {public_url}: pokes for ward workstations"


@dataclass(frozen=True, slots=True)
class ServerOffer:
    """What the FHIR server says it can do for subscribers."""

    topics: tuple[str, ...]
    has_events: bool
    has_status: bool
    has_ws_binding: bool = False  # $get-ws-binding-token: the websocket channel


def read_offer(capabilities: dict[str, Any]) -> ServerOffer:
    """Topics and operations from a CapabilityStatement (R4 capabilitystatement.html)."""
    topics: list[str] = []
    ops: set[str] = set()
    for rest in capabilities.get("rest") or ():
        if not isinstance(rest, dict):
            continue
        for resource in rest.get("resource") or ():
            if not isinstance(resource, dict) or resource.get("type") != "Subscription":
                continue
            for ext in resource.get("extension") or ():
                if (isinstance(ext, dict) and ext.get("url") == TOPIC_CANONICAL_EXTENSION
                        and isinstance(ext.get("valueCanonical"), str)):
                    topics.append(ext["valueCanonical"])
            ops |= {str(op.get("name")) for op in resource.get("operation") or ()
                    if isinstance(op, dict)}
        ops |= {str(op.get("name")) for op in rest.get("operation") or ()
                if isinstance(op, dict)}
    return ServerOffer(tuple(dict.fromkeys(topics)), "events" in ops, "status" in ops,
                       "get-ws-binding-token" in ops)


@dataclass(eq=False)
class LiveSubscription:
    """One of the relay's Subscriptions, as the notify endpoint and the watchdog see it."""

    secret: str
    kind: str
    criteria: str
    sub_id: str | None = None
    last_event: int = 0
    last_heard: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class WrongSubscription(Exception):
    """A notification for one Subscription came with another one's secret."""


class SubscriptionManager:
    """Creates and maintains the relay's Subscriptions and handles topic notifications."""

    def __init__(
        self,
        *,
        fhir: FhirClient,
        state: RelayStore,
        metrics: RelayMetrics,
        reconciler: Reconciler,
        announce: Announce,
        config: SubscriptionsSection,
        types: Sequence[str],
        timer: Timer = SYSTEM_TIMER,
        ws_ssl: ssl.SSLContext | None = None,
    ) -> None:
        self._fhir = fhir
        self._state = state
        self._metrics = metrics
        self._reconciler = reconciler
        self._announce = announce
        self._config = config
        self._types = tuple(types)
        self._timer = timer
        self._live: list[LiveSubscription] = []
        self.binder: WebSocketBinder | None = None
        if config.channel == WEBSOCKET:
            self.binder = WebSocketBinder(
                fhir=fhir, on_notification=self._on_socket_notification,
                reconcile=reconciler.request_round, metrics=metrics, timer=timer,
                ssl_context=ws_ssl)
        self.offer = ServerOffer((), False, False)
        self.mode = "none"
        self.notify_url = ""
        self.reason = ""
        self.ready = asyncio.Event()

    # ------------------------------------------------------------------ secrets
    def by_secret(self, presented: str) -> LiveSubscription | None:
        """The Subscription whose secret was presented (compared in constant time)."""
        found = None
        for live in self._live:
            if hmac.compare_digest(live.secret.encode(), presented.encode()):
                found = live
        return found

    @property
    def subscriptions(self) -> list[LiveSubscription]:
        return list(self._live)

    # ------------------------------------------------------------------ lifetime
    async def run(self, notify_url: str, public_url: str) -> None:
        """Set up (retrying while the server is unreachable), then watch for silence."""
        self.notify_url = notify_url
        self.reason = reason_for(public_url)
        try:
            while True:
                try:
                    await self.setup()
                    break
                except FhirError as exc:
                    log.warning("subscriptions: setup failed (%s); the poll covers meanwhile, "
                                "retrying in %.0f s", type(exc).__name__, SETUP_RETRY_S)
                    await self._timer.sleep(SETUP_RETRY_S)
            self.ready.set()
            if self.mode == "none":
                return
            while True:
                await self._timer.sleep(self._check_interval_s)
                await self.check_all()
        finally:
            if self.binder is not None:
                await self.binder.stop()

    @property
    def _check_interval_s(self) -> float:
        return max(0.5, self._config.heartbeat_s / 2)

    @property
    def silence_limit_s(self) -> float:
        return self._config.heartbeat_s * 2 + self._config.silence_margin_s

    async def setup(self) -> None:
        self.offer = read_offer(await self._fhir.capabilities())
        mode = self._config.mode
        if mode == "auto":
            mode = TOPIC if self.offer.topics else CLASSIC
        if mode == TOPIC and not self.offer.topics:
            log.warning("subscriptions.mode is topic but the server advertises no topics; "
                        "relying on the poll")
            mode = "none"
        if self.binder is not None and mode == CLASSIC:
            # `wardsync relay check` refuses mode classic with websocket; this is auto.
            log.warning("subscriptions.channel is websocket but the server offers no topics "
                        "(classic subscriptions have no websocket binding); relying on the poll")
            mode = "none"
        if self.binder is not None and mode == TOPIC and not self.offer.has_ws_binding:
            log.warning("subscriptions.channel is websocket but the server has no "
                        "$get-ws-binding-token; relying on the poll")
            mode = "none"
        self.mode = mode
        if mode == "none":
            return
        wanted = self._wanted(mode)
        kept = await self._adopt(mode, wanted)
        for criteria in wanted:
            if criteria not in kept:
                await self._create(mode, criteria, "new")
        self._metrics.subscriptions_active.set(len(self._live))
        self._sync_sockets()
        log.info("subscriptions: %d %s subscription(s) on %s", len(self._live), mode,
                 self._channel(mode))

    def _wanted(self, mode: str) -> list[str]:
        if mode == CLASSIC:
            return list(self._types)
        if self._config.topics:
            unknown = sorted(set(self._config.topics) - set(self.offer.topics))
            if unknown:
                log.warning("subscriptions.topics not offered by the server: %s", unknown)
            return [t for t in self._config.topics if t in self.offer.topics]
        return list(self.offer.topics)

    async def _adopt(self, mode: str, wanted: list[str]) -> set[str]:
        """Reuse what a previous run created; delete what cannot be used."""
        kept: dict[str, str] = {}
        for own in self._state.own_subscriptions():
            usable = (own.sub_id is not None and own.kind == mode and own.criteria in wanted
                      and own.criteria not in kept)
            if not usable or own.sub_id is None:
                if own.sub_id is not None:
                    await self._fhir.delete("Subscription", own.sub_id)
                self._state.forget_subscription(own.secret)
                continue
            try:
                resource: dict[str, Any] | None = await self._fhir.read("Subscription",
                                                                        own.sub_id)
            except NotFound:
                resource = None
            channel = (resource or {}).get("channel") or {}
            if (resource is None or resource.get("status") in DEAD_STATUSES
                    or channel.get("endpoint") != self.notify_url
                    or channel.get("type") != self._channel(mode)):
                if resource is not None:
                    await self._fhir.delete("Subscription", own.sub_id)
                self._state.forget_subscription(own.secret)
                replacement = await self._create(mode, own.criteria, "replaced")
                kept[own.criteria] = replacement.sub_id or ""
                continue
            assert own.sub_id is not None
            live = LiveSubscription(own.secret, own.kind, own.criteria, own.sub_id,
                                    own.last_event, self._timer.monotonic())
            self._live.append(live)
            kept[own.criteria] = own.sub_id
            if mode == TOPIC:
                await self._check(live)  # events missed while the relay was down
        await self._remove_orphans(set(kept.values()))
        return set(kept)

    async def _remove_orphans(self, keep: set[str]) -> None:
        """Delete Subscriptions to our endpoint, with our reason, we hold no secret for."""
        found = await self._fhir.search("Subscription", {"url": self.notify_url})
        for resource in found.matches:
            endpoint = (resource.get("channel") or {}).get("endpoint")
            if (resource.get("id") not in keep and endpoint == self.notify_url
                    and resource.get("reason") == self.reason):
                log.info("subscriptions: deleting Subscription/%s (ours, secret not on "
                         "record)", resource.get("id"))
                await self._fhir.delete("Subscription", str(resource["id"]))

    def _channel(self, mode: str) -> str:
        """The channel type of the Subscriptions of `mode`."""
        return WEBSOCKET if self.binder is not None and mode == TOPIC else REST_HOOK

    def _resource(self, mode: str, criteria: str, secret: str) -> dict[str, Any]:
        channel: dict[str, Any] = {
            "type": self._channel(mode),
            "endpoint": self.notify_url,
            "header": [f"Authorization: Bearer {secret}"],
            "payload": FHIR_JSON,
        }
        if channel["type"] == WEBSOCKET:
            # The server sends nothing over HTTP: no secret to give it. The endpoint only
            # marks the Subscription as this relay's (`_remove_orphans`).
            del channel["header"]
        resource: dict[str, Any] = {
            "resourceType": "Subscription", "status": "requested", "reason": self.reason,
            "criteria": criteria, "channel": channel,
        }
        if mode == TOPIC:
            resource["meta"] = {"profile": [SUBSCRIPTION_PROFILE]}
            channel["_payload"] = {"extension": [
                {"url": PAYLOAD_CONTENT_URL, "valueCode": "id-only"}]}
            channel["extension"] = [
                {"url": HEARTBEAT_PERIOD_URL,
                 "valueUnsignedInt": int(self._config.heartbeat_s)},
                {"url": TIMEOUT_URL, "valueUnsignedInt": NOTIFY_TIMEOUT_S},
                {"url": MAX_COUNT_URL, "valuePositiveInt": MAX_EVENTS_PER_NOTIFICATION},
            ]
        return resource

    async def _create(self, mode: str, criteria: str, why: str) -> LiveSubscription:
        secret = secrets.token_urlsafe(32)
        # On record (and accepted by the endpoint) before the server can handshake with it.
        self._state.add_subscription(secret, mode, criteria)
        live = LiveSubscription(secret, mode, criteria, None, 0, self._timer.monotonic())
        self._live.append(live)
        try:
            stored = await self._fhir.create(self._resource(mode, criteria, secret))
        except FhirError:
            self._live.remove(live)
            self._state.forget_subscription(secret)
            raise
        live.sub_id = str(stored["id"])
        self._state.set_subscription_id(secret, live.sub_id)
        self._metrics.subscriptions_created.labels(why).inc()
        log.info("subscriptions: created Subscription/%s (%s)", live.sub_id, why)
        return live

    async def _replace(self, live: LiveSubscription) -> None:
        if live.sub_id is not None:
            await self._fhir.delete("Subscription", live.sub_id)
        self._live.remove(live)
        self._state.forget_subscription(live.secret)
        await self._create(live.kind, live.criteria, "replaced")
        self._sync_sockets()
        # Whatever happened while it was not delivering: the poll finds it now.
        self._reconciler.request_round()

    def _sync_sockets(self) -> None:
        """With the websocket channel: a socket bound to each topic Subscription, no other."""
        if self.binder is not None:
            self.binder.sync(live.sub_id for live in self._live
                             if live.kind == TOPIC and live.sub_id is not None)

    async def _on_socket_notification(self, sub_id: str, note: Notification) -> None:
        live = next((s for s in self._live if s.sub_id == sub_id), None)
        if live is not None:  # else replaced meanwhile: its socket is being closed
            await self.on_notification(live, note)

    # ------------------------------------------------------------------ watching
    async def check_all(self) -> None:
        now = self._timer.monotonic()
        for live in list(self._live):
            if live.sub_id is None:
                continue
            if live.kind == TOPIC and now - live.last_heard <= self.silence_limit_s:
                continue
            if live.kind == TOPIC:
                self._metrics.heartbeats_missed.inc()
                log.warning("subscriptions: Subscription/%s silent for %.0f s; checking it",
                            live.sub_id, now - live.last_heard)
                if self.binder is not None:
                    await self.binder.drop(live.sub_id)  # a half-open socket: bind anew
            live.last_heard = now
            try:
                await self._check(live)
            except FhirError as exc:
                log.warning("subscriptions: checking Subscription/%s failed (%s); a "
                            "reconciliation round covers it", live.sub_id, type(exc).__name__)
                self._reconciler.request_round()

    async def _check(self, live: LiveSubscription) -> None:
        """Status and counter of one Subscription: replace it if dead, recover missed events."""
        assert live.sub_id is not None
        status: str | None
        counter: int | None = None
        try:
            if live.kind == TOPIC and self.offer.has_status:
                answer = parse_notification(
                    await self._fhir.operation(f"Subscription/{live.sub_id}/$status"))
                status, counter = answer.status, answer.events_since_start
            else:
                status = (await self._fhir.read("Subscription", live.sub_id)).get("status")
        except NotFound:
            status = "off"
        except MalformedNotification as exc:
            log.warning("subscriptions: unreadable $status for Subscription/%s (%s)",
                        live.sub_id, exc)
            self._reconciler.request_round()
            return
        if status in DEAD_STATUSES:
            log.warning("subscriptions: Subscription/%s is %s; replacing it", live.sub_id,
                        status)
            await self._replace(live)
            return
        if counter is not None:
            async with live.lock:
                if counter > live.last_event:
                    await self._recover(live, live.last_event + 1, counter)

    # ------------------------------------------------------------------ notifications
    async def on_notification(self, live: LiveSubscription, note: Notification) -> None:
        """A topic notification arrived with `live`'s secret: handle its events in order."""
        if live.sub_id is not None and note.subscription_id != live.sub_id:
            raise WrongSubscription(note.subscription_id)
        live.last_heard = self._timer.monotonic()
        if note.kind == "handshake":
            self._metrics.handshakes.inc()
        elif note.kind == "heartbeat":
            self._metrics.heartbeats.inc()
        async with live.lock:
            new = [e for e in note.events if e.number > live.last_event]
            if new and new[0].number > live.last_event + 1:
                await self._recover(live, live.last_event + 1, new[0].number - 1)
            new = [e for e in new if e.number > live.last_event]  # some recovered just now
            await self._announce_all(new)
            if new:
                self._handled(live, new[-1].number)
            if (note.kind == "heartbeat" and not note.events
                    and note.events_since_start > live.last_event):
                # Events were sent that never arrived (or never were): fetch them.
                await self._recover(live, live.last_event + 1, note.events_since_start)

    async def _announce_all(self, events: Sequence[NotificationEvent]) -> None:
        """Announce the focus of each event, reading up to `ANNOUNCE_CONCURRENCY` at once (a
        Bundle's events are independent changes; a version is numbered once whatever the
        order, `RelayState.number`). Raises if any failed: the server delivers again."""
        gate = asyncio.Semaphore(ANNOUNCE_CONCURRENCY)

        async def one(event: NotificationEvent) -> None:
            assert event.ref is not None
            async with gate:
                await self._announce(event.ref, event.version_id, TOPIC)

        await asyncio.gather(*(one(e) for e in events if e.ref is not None))

    def _handled(self, live: LiveSubscription, number: int) -> None:
        live.last_event = max(live.last_event, number)
        self._state.set_last_event(live.secret, live.last_event)

    async def _recover(self, live: LiveSubscription, low: int, high: int) -> None:
        """Events `low`..`high` were missed: replay them with `$events`, else re-query."""
        assert live.sub_id is not None
        log.warning("subscriptions: Subscription/%s missed events %d..%d", live.sub_id, low,
                    high)
        if not self.offer.has_events:
            self._metrics.gaps.labels("reconcile").inc(high - low + 1)
            self._reconciler.request_round()
            self._handled(live, high)
            return
        start = low
        while start <= high:
            until = min(high, start + EVENTS_PER_QUERY - 1)
            try:
                answer = parse_notification(await self._fhir.operation(
                    f"Subscription/{live.sub_id}/$events",
                    {"eventsSinceNumber": str(start), "eventsUntilNumber": str(until)}))
            except (FhirError, MalformedNotification) as exc:
                log.warning("subscriptions: $events failed (%s); a reconciliation round "
                            "covers %d..%d", type(exc).__name__, start, high)
                self._metrics.gaps.labels("reconcile").inc(high - start + 1)
                self._reconciler.request_round()
                self._handled(live, high)
                return
            got = {e.number: e for e in answer.events if start <= e.number <= until}
            await self._announce_all([got[n] for n in sorted(got)])
            self._metrics.gaps.labels("events").inc(len(got))
            missing = (until - start + 1) - len(got)
            if missing:
                # No longer retained on the server: only the poll can find them now.
                self._metrics.gaps.labels("reconcile").inc(missing)
                self._reconciler.request_round()
            self._handled(live, until)
            start = until + 1
