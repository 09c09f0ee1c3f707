"""Delivery of one subscription's notifications: one worker task per subscription.

A worker sends the handshake when its subscription is `requested` (IG "Handshake": on
success the subscription becomes `active`), then the pending events oldest first (up to
`max_count` per Bundle for topic subscriptions, one HTTP request per event for classic
ones), and a heartbeat when nothing was sent for `heartbeatPeriod` seconds (IG
"Heartbeats"). Each worker waits on its own, so a slow or dead endpoint only ever delays its
own subscription, never a FHIR write (matching happens elsewhere) nor another subscriber.

Retry policy (docs/subscriptions.md "Retries"): a failed request (connection error, timeout,
or a status outside 2xx) is retried after a capped exponential backoff
(`wardsync.core.backoff.Backoff`); after `attempts_before_error` consecutive failures the
subscription's status becomes `error` (with `Subscription.error` saying why), and the
worker keeps probing every `cap_s` seconds — with the oldest pending notification, or a
handshake when nothing is pending. The first success makes it `active` again and the
backlog follows in order. Event numbers are never skipped: an undelivered event stays
pending (and replayable with `$events`) until it is delivered.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from wardsync.core.backoff import Backoff, Jitter
from wardsync.core.timer import Timer, wait_until_set
from wardsync.sandbox.fhir.fhir_dates import format_instant
from wardsync.sandbox.fhir.subscriptions.classic import FHIR_JSON, HookRequest, classic_request
from wardsync.sandbox.fhir.subscriptions.ledger import SubscriptionEvent, SubscriptionLedger
from wardsync.sandbox.fhir.subscriptions.model import SubscriptionSpec
from wardsync.sandbox.fhir.subscriptions.notifications import notification_bundle

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard a worker tries before it marks its subscription `error`."""

    initial_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 30.0
    attempts_before_error: int = 6  # about a minute of retries (at most 1+2+4+8+16+30 s)
    # Equal jitter: spreads retries yet never retries sooner than half the base delay.
    jitter: Jitter = Jitter.EQUAL

    def backoff(self) -> Backoff:
        return Backoff(self.initial_s, self.factor, self.cap_s, self.jitter)


class DeliveryFailed(Exception):
    """The endpoint did not accept a notification; the message is safe to log and store."""


class SubscriptionHost(Protocol):
    """What a worker needs from the service that owns it."""

    timer: Timer
    ledger: SubscriptionLedger

    def spec(self, sub_id: str) -> SubscriptionSpec | None: ...

    def set_status(self, spec: SubscriptionSpec, status: str, error: str | None) -> None: ...

    def base_url(self) -> str: ...

    def focus_resources(self, events: list[SubscriptionEvent]) -> dict[int, dict[str, Any]]: ...

    def channel_ready(self, spec: SubscriptionSpec) -> bool: ...


Transport = Callable[[SubscriptionSpec, HookRequest], Awaitable[None]]


def bundle_request(spec: SubscriptionSpec, bundle: dict[str, Any]) -> HookRequest:
    """A topic notification: `POST [endpoint]` with the Bundle (IG "rest-hook")."""
    body = json.dumps(bundle, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return HookRequest("POST", spec.endpoint,
                       (*spec.headers, ("Content-Type", f"{FHIR_JSON}; charset=utf-8")), body)


def http_transport(client: httpx.AsyncClient) -> Transport:
    """Send a HookRequest over HTTP; any non-2xx answer or I/O error is DeliveryFailed."""

    async def send(spec: SubscriptionSpec, request: HookRequest) -> None:
        try:
            response = await client.request(
                request.method, request.url, content=request.body,
                headers=list(request.headers), timeout=spec.timeout_s)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{request.method} to the endpoint failed: "
                                 f"{type(exc).__name__}") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryFailed(f"the endpoint answered {response.status_code} to "
                                 f"{request.method}")

    return send


class DeliveryWorker:
    """Delivers one subscription's notifications until cancelled or the subscription ends."""

    def __init__(self, sub_id: str, host: SubscriptionHost, transport: Transport,
                 policy: RetryPolicy) -> None:
        self.sub_id = sub_id
        self._host = host
        self._transport = transport
        self._policy = policy
        self._backoff = policy.backoff()
        self._wake = asyncio.Event()
        self._failures = 0
        self._last_sent = host.timer.monotonic()
        self.sent_requests = 0
        self.task: asyncio.Task[None] | None = None

    @property
    def finished(self) -> bool:
        return self.task is not None and self.task.done()

    def wake(self) -> None:
        """New events or a changed Subscription: look again now."""
        self._wake.set()

    async def run(self) -> None:
        timer = self._host.timer
        while True:
            spec = self._host.spec(self.sub_id)
            if spec is None or spec.status == "off":
                return
            if spec.ended(int(timer.wall() * 1_000_000)) and not self._host.ledger.pending(
                    self.sub_id, 1):
                # Past `Subscription.end` and everything before it delivered: turn it off.
                self._host.set_status(spec, "off", None)
                return
            self._wake.clear()
            try:
                acted = await self._step(spec)
            except DeliveryFailed as exc:
                self._failures += 1
                log.info("subscription %s: delivery failed (%d in a row): %s",
                         self.sub_id, self._failures, exc)
                if (self._failures >= self._policy.attempts_before_error
                        and spec.status != "error"):
                    self._host.set_status(spec, "error", str(exc))
                await timer.sleep(self._backoff.delay(min(self._failures - 1, 64)))
                continue
            if acted:
                if self._failures or spec.status == "error":
                    current = self._host.spec(self.sub_id)
                    if current is not None and current.status == "error":
                        self._host.set_status(current, "active", None)
                self._failures = 0
                self._last_sent = timer.monotonic()
                continue
            due = [d for d in (self._heartbeat_due_in(spec), self._end_in(spec)) if d is not None]
            await wait_until_set(self._host.timer, self._wake, min(due) if due else None)

    def _end_in(self, spec: SubscriptionSpec) -> float | None:
        left = None if spec.end_us is None else spec.end_us / 1_000_000 - self._host.timer.wall()
        return left if left is not None and left > 0 else None

    def _heartbeat_due_in(self, spec: SubscriptionSpec) -> float | None:
        if (spec.heartbeat_s is None or spec.status != "active"
                or not self._host.channel_ready(spec)):
            return None  # (an unbound websocket waits for a bind, not for the clock)
        return max(0.0, self._last_sent + spec.heartbeat_s - self._host.timer.monotonic())

    async def _step(self, spec: SubscriptionSpec) -> bool:
        """Do the next piece of work; False when there is none. Raises DeliveryFailed."""
        host = self._host
        if spec.classic:
            if spec.status in ("requested", "error") and self._failures == 0:
                # R4 subscription.html: no handshake for classic subscriptions.
                host.set_status(spec, "active", None)
                return True
            pending = host.ledger.pending(self.sub_id, 1)
            if not pending:
                return False
            event = pending[0]
            resources = host.focus_resources(pending) if spec.payload_mime else {}
            await self._send(spec, classic_request(spec, event, resources.get(event.number)))
            host.ledger.mark_delivered(self.sub_id, event.number)
            return True
        if spec.channel_type == "websocket":
            if spec.status == "requested":
                # The handshake goes to each socket as it binds (websocket.py).
                host.set_status(spec, "active", None)
                return True
            if not host.channel_ready(spec):
                return False
        elif spec.status == "requested":
            await self._send_bundle(spec, "handshake", [])
            host.set_status(spec, "active", None)
            return True
        pending = host.ledger.pending(self.sub_id, spec.max_count)
        if pending:
            await self._send_bundle(spec, "event-notification", pending)
            host.ledger.mark_delivered(self.sub_id, pending[-1].number)
            return True
        if spec.status == "error":
            # Probe: a handshake tells whether the endpoint is back (IG "Handshake").
            await self._send_bundle(spec, "handshake", [])
            return True
        due = self._heartbeat_due_in(spec)
        if due is not None and due <= 0:
            await self._send_bundle(spec, "heartbeat", [])
            return True
        return False

    async def _send_bundle(self, spec: SubscriptionSpec, kind: str,
                           events: list[SubscriptionEvent]) -> None:
        host = self._host
        counters = host.ledger.counters(self.sub_id)
        resources = host.focus_resources(events) if spec.content == "full-resource" else {}
        status = spec.status
        bundle = notification_bundle(
            spec, host.base_url(), kind, status, counters.events, events, spec.content,
            format_instant(int(host.timer.wall() * 1_000_000)), resources)
        await self._send(spec, bundle_request(spec, bundle))

    async def _send(self, spec: SubscriptionSpec, request: HookRequest) -> None:
        self.sent_requests += 1
        await self._transport(spec, request)
