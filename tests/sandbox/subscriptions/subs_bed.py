"""A FHIR server with subscriptions on loopback, a plain HTTP endpoint that records what it
receives, and helpers to drive fake time while real sockets do their work."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiohttp import web

from wardsync.core.backoff import Jitter
from wardsync.core.timer import FakeTimer
from wardsync.sandbox.fhir import FhirApi, FhirStore
from wardsync.sandbox.fhir.subscriptions.delivery import RetryPolicy
from wardsync.sandbox.fhir.subscriptions.ledger import SubscriptionLedger
from wardsync.sandbox.fhir.subscriptions.model import (
    FILTER_CRITERIA_URL,
    HEARTBEAT_PERIOD_URL,
    PAYLOAD_CONTENT_URL,
    SUBSCRIPTION_PROFILE,
)
from wardsync.sandbox.fhir.subscriptions.service import SubscriptionService
from wardsync.sandbox.fhir.subscriptions.topics import TOPIC_BASE
from wardsync.sandbox.grants import Grant

OBSERVATION_TOPIC = f"{TOPIC_BASE}observation-changed"
# No jitter in tests, so retry timelines are exact.
TEST_POLICY = RetryPolicy(initial_s=1.0, factor=2.0, cap_s=30.0, attempts_before_error=6,
                          jitter=Jitter.NONE)
FAR_FUTURE = 4_000_000_000.0

GRANTS: dict[str, Grant] = {
    # The relay's client: reads clinical data, manages Subscriptions.
    "relay": Grant("wardsync-relay", "wardsync-relay",
                   frozenset({"system/*.rs", "system/Subscription.cruds"}), FAR_FUTURE),
    # A writer that may do everything but has no Subscription scope (wildcards never cover it).
    "writer": Grant("lab", "lab", frozenset({"system/*.cruds"}), FAR_FUTURE),
    # What a clinician's desktop token holds.
    "desktop": Grant("wardsync-desktop", "Practitioner/demo", frozenset({"user/*.cruds"}),
                     FAR_FUTURE),
    # May manage Subscriptions but not read Observations (full-resource is refused).
    "subs-only": Grant("subs", "subs", frozenset({"system/Subscription.cruds"}), FAR_FUTURE),
}


def verify_bearer(token: str | None) -> Grant | None:
    return GRANTS.get(token) if token is not None else None


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Received:
    """One request the endpoint received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Endpoint:
    """A plain aiohttp listener standing in for a subscriber's notification endpoint."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    status: int = 200  # what it answers; set 503 to play "down"
    runner: web.AppRunner | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    # Cleared: requests are held (a hung endpoint) until it is set again.
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    held: int = 0  # requests waiting for `flowing`

    async def start(self, port: int = 0) -> None:
        self.flowing.set()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        host, self.port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{self.port}/hook"

    async def stop(self) -> None:
        self.flowing.set()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        if not self.flowing.is_set():
            self.held += 1
            await self.flowing.wait()
            self.held -= 1
        body = await request.read()
        if self.status < 300:
            self.received.append(Received(request.method, request.path,
                                          dict(request.headers), body))
            self.arrived.set()
        return web.Response(status=self.status)

    def bundles(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Notification Bundles received (of one notification type when `kind` is given)."""
        found = []
        for r in self.received:
            if r.method != "POST" or not r.body:
                continue
            bundle = r.json()
            if kind is None or notification_type(bundle) == kind:
                found.append(bundle)
        return found

    def event_numbers(self) -> list[int]:
        return [n for b in self.bundles("event-notification") for n in event_numbers(b)]


def parameters_of(bundle: dict[str, Any]) -> dict[str, Any]:
    return bundle["entry"][0]["resource"]


def param(parameters: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [p for p in parameters["parameter"] if p["name"] == name]


def notification_type(bundle: dict[str, Any]) -> str:
    return str(param(parameters_of(bundle), "type")[0]["valueCode"])


def event_numbers(bundle: dict[str, Any]) -> list[int]:
    numbers = []
    for event in param(parameters_of(bundle), "notification-event"):
        part = next(p for p in event["part"] if p["name"] == "event-number")
        numbers.append(int(part["valueString"]))
    return numbers


def subscription(endpoint: str, *, topic: str = OBSERVATION_TOPIC, content: str = "id-only",
                 filters: tuple[str, ...] = (), heartbeat_s: int | None = None,
                 headers: tuple[str, ...] = (), channel_type: str = "rest-hook",
                 status: str = "requested") -> dict[str, Any]:
    """A topic-based Subscription as the Backport IG profiles it."""
    channel: dict[str, Any] = {"type": channel_type, "payload": "application/fhir+json",
                               "_payload": {"extension": [{"url": PAYLOAD_CONTENT_URL,
                                                           "valueCode": content}]}}
    if channel_type == "rest-hook":
        channel["endpoint"] = endpoint
    if heartbeat_s is not None:
        channel["extension"] = [{"url": HEARTBEAT_PERIOD_URL, "valueUnsignedInt": heartbeat_s}]
    if headers:
        channel["header"] = list(headers)
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "meta": {"profile": [SUBSCRIPTION_PROFILE]},
        "status": status,
        "reason": "WardSync relay: changes become pokes",
        "criteria": topic,
        "channel": channel,
    }
    if filters:
        resource["_criteria"] = {"extension": [{"url": FILTER_CRITERIA_URL, "valueString": f}
                                               for f in filters]}
    return resource


def observation(patient: str = "p1", value: float = 4.2) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "valueQuantity": {"value": value, "unit": "mmol/L"},
    }


async def until(predicate: Callable[[], bool], timer: FakeTimer | None = None, *,
                step_s: float = 0.5, limit_s: float = 120.0, real_limit_s: float = 20.0
                ) -> None:
    """Wait until `predicate()`: moves fake time by `step_s` (when a FakeTimer is given)
    between short real pauses in which sockets do their work."""
    loop = asyncio.get_running_loop()
    real_deadline = loop.time() + real_limit_s
    fake_start = timer.monotonic() if timer else 0.0
    while not predicate():
        if loop.time() > real_deadline or (timer and timer.monotonic() - fake_start > limit_s):
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)
        if timer is not None:
            await timer.advance(step_s)


@dataclass
class SubsBed:
    """A FHIR server with subscriptions, its base URL and clients for each token."""

    store: FhirStore
    ledger: SubscriptionLedger
    service: SubscriptionService
    timer: FakeTimer
    base: str
    runner: web.AppRunner
    clients: dict[str, httpx.AsyncClient]

    @property
    def relay(self) -> httpx.AsyncClient:
        return self.clients["relay"]

    @property
    def writer(self) -> httpx.AsyncClient:
        return self.clients["writer"]

    async def subscribe(self, resource: dict[str, Any]) -> str:
        r = await self.relay.post("/Subscription", json=resource)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def status_of(self, sub_id: str) -> str:
        r = await self.relay.get(f"/Subscription/{sub_id}")
        assert r.status_code == 200, r.text
        return str(r.json()["status"])

    async def write_observation(self, patient: str = "p1") -> str:
        r = await self.writer.post("/Observation", json=observation(patient))
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


async def start_bed(store: FhirStore, ledger: SubscriptionLedger, timer: FakeTimer,
                    **service_args: Any) -> SubsBed:
    holder: dict[str, str] = {}
    service = SubscriptionService(store, ledger, fhir_base=lambda: holder["base"], timer=timer,
                                  websocket_url=lambda: holder["ws"], **service_args)
    app = web.Application()
    FhirApi(store, verify_bearer, subscriptions=service).install(app, "/fhir")
    service.install_websocket(app, "/ws")
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    holder["base"] = f"http://{host}:{port}/fhir"
    holder["ws"] = f"ws://{host}:{port}/ws"
    await service.start()
    clients = {name: httpx.AsyncClient(base_url=holder["base"], headers=bearer(name),
                                       timeout=10.0) for name in GRANTS}
    return SubsBed(store, ledger, service, timer, holder["base"], runner, clients)


async def stop_bed(bed: SubsBed) -> None:
    for client in bed.clients.values():
        await client.aclose()
    await bed.service.stop()
    await bed.runner.cleanup()
