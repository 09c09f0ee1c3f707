"""The websocket channel of the relay's topic-based Subscriptions (`subscriptions.channel =
"websocket"`; Subscriptions R5 Backport IG STU 1.1 "Channels": websocket, docs/subscriptions.md).

For a hospital whose FHIR server cannot open connections to the relay: the relay connects out.
For each of its Subscriptions it asks `GET Subscription/[id]/$get-ws-binding-token` (IG
OperationDefinition backport-subscription-get-ws-binding-token: `token`, `expiration`,
`websocket-url`), opens the socket and sends `bind-with-token: <token>`. The server answers
with a `handshake` Bundle, then sends event notifications and heartbeats as text frames: the
same Bundles as on rest-hook, handed to `SubscriptionManager.on_notification` (event numbers,
gaps filled with `$events`). Frames that are not a notification are counted and make the relay
run a reconciliation round, as the notify endpoint does.

A socket that closes, fails or is dropped by the manager (silence past twice the heartbeat
period plus the margin) is bound again after a capped exponential backoff (0.25 s doubling to
30 s, full jitter; back to 0.25 s once a socket was bound), with a new token (tokens are single
use); each drop asks for a reconciliation round, which covers whatever changed while unbound.
The server keeps the events of an unbound websocket Subscription and sends them after the next
handshake; an event sent on a socket that was dying shows as a gap and is fetched with
`$events`. Tokens, URLs with tokens and frame contents are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from wardsync.core.backoff import Backoff
from wardsync.core.net import is_loopback_host
from wardsync.core.tasks import TaskOwner
from wardsync.core.timer import SYSTEM_TIMER, Timer, wait_for
from wardsync.fhir.client import FhirClient
from wardsync.fhir.errors import FhirError
from wardsync.relay.metrics import RelayMetrics
from wardsync.relay.notifications import (
    MalformedNotification,
    Notification,
    parse_notification_bytes,
)

log = logging.getLogger(__name__)

SOURCE = "websocket"
BIND_PREFIX = "bind-with-token: "
MAX_FRAME_BYTES = 256 * 1024  # as the notify endpoint's body limit
CONNECT_TIMEOUT_S = 10.0
BIND_RETRY_INITIAL_S = 0.25
BIND_RETRY_CAP_S = 30.0
MAX_TOKEN_CHARS = 4096

OnNotification = Callable[[str, Notification], Awaitable[None]]


class BindingRefused(Exception):
    """The server's binding answer cannot be used; the message is a reason code."""


class WrongSubscriptionFrame(Exception):
    """A frame named another Subscription than the one the socket was bound for."""


@dataclass(frozen=True, slots=True)
class Binding:
    """What `$get-ws-binding-token` answered."""

    token: str
    url: str


def read_binding(params: Any) -> Binding:
    """`token` and `websocket-url` from the operation's Parameters; the URL must be `wss:`,
    or `ws:` on a loopback host (what the relay requires of `fhir.base` too)."""
    if not isinstance(params, dict) or params.get("resourceType") != "Parameters":
        raise BindingRefused("not_parameters")
    values: dict[str, Any] = {}
    for item in params.get("parameter") or ():
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            values.setdefault(item["name"], next(
                (v for k, v in item.items() if k.startswith("value")), None))
    token, url = values.get("token"), values.get("websocket-url")
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS \
            or any(c.isspace() for c in token):
        raise BindingRefused("bad_token")
    if not isinstance(url, str):
        raise BindingRefused("no_websocket_url")
    parts = urlsplit(url)
    if parts.scheme == "ws" and parts.hostname and is_loopback_host(parts.hostname):
        return Binding(token, url)
    if parts.scheme != "wss" or not parts.hostname:
        raise BindingRefused("insecure_websocket_url")
    return Binding(token, url)


class WebSocketBinder:
    """One socket per websocket Subscription, bound and re-bound for as long as it is wanted
    (`sync`)."""

    def __init__(
        self,
        *,
        fhir: FhirClient,
        on_notification: OnNotification,
        reconcile: Callable[[], None],
        metrics: RelayMetrics,
        timer: Timer = SYSTEM_TIMER,
        ssl_context: ssl.SSLContext | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._fhir = fhir
        self._on_notification = on_notification
        self._reconcile = reconcile
        self._metrics = metrics
        self._timer = timer
        self._ssl = ssl_context
        self._backoff = backoff or Backoff(BIND_RETRY_INITIAL_S, cap_s=BIND_RETRY_CAP_S)
        self._tasks = TaskOwner("websocket subscriptions", logger=log)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._sockets: dict[str, aiohttp.ClientWebSocketResponse] = {}
        self._session: aiohttp.ClientSession | None = None
        self.binds = 0  # sockets bound so far (handshake received)

    @property
    def bound(self) -> frozenset[str]:
        """Subscriptions whose socket is bound now."""
        return frozenset(sub for sub, ws in self._sockets.items() if not ws.closed)

    def sync(self, sub_ids: Iterable[str]) -> None:
        """Keep a socket bound for each of `sub_ids` and for nothing else."""
        wanted = set(sub_ids)
        for sub_id, task in list(self._running.items()):
            if sub_id not in wanted:
                task.cancel()
                del self._running[sub_id]
        for sub_id in wanted - set(self._running):
            self._running[sub_id] = self._tasks.spawn(
                self._keep_bound(sub_id), name=f"websocket Subscription/{sub_id}")

    async def drop(self, sub_id: str) -> None:
        """Close `sub_id`'s socket (silent too long): it is bound again with a new token."""
        ws = self._sockets.get(sub_id)
        if ws is not None and not ws.closed:
            await ws.close()

    async def stop(self) -> None:
        """Close every socket (the relay stands by or stops); `sync` binds them again."""
        self._running.clear()
        await self._tasks.cancel_all()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ one Subscription
    async def _keep_bound(self, sub_id: str) -> None:
        attempt = 0
        while True:
            try:
                if await self._bind_once(sub_id):
                    attempt = 0
                outcome = "closed"
            except (FhirError, BindingRefused, aiohttp.ClientError, OSError,
                    TimeoutError) as exc:
                # Never the exception's text: a URL in it may carry the token.
                log.warning("subscriptions: websocket for Subscription/%s failed (%s)",
                            sub_id, exc if isinstance(exc, BindingRefused)
                            else type(exc).__name__)
                outcome = "failed"
            finally:
                self._sockets.pop(sub_id, None)
            self._metrics.websocket_binds.labels(outcome).inc()
            self._reconcile()  # covers what changed while no socket was bound
            delay = self._backoff.delay(attempt)
            attempt += 1
            log.info("subscriptions: binding Subscription/%s again in %.2f s", sub_id, delay)
            await self._timer.sleep(delay)

    async def _bind_once(self, sub_id: str) -> bool:
        """Bind a socket and read it until it closes; True if it was bound (handshake)."""
        binding = read_binding(
            await self._fhir.operation(f"Subscription/{sub_id}/$get-ws-binding-token"))
        if self._session is None:
            self._session = aiohttp.ClientSession()
        ws = await wait_for(self._timer, self._session.ws_connect(
            binding.url, max_msg_size=MAX_FRAME_BYTES, ssl=self._ssl if self._ssl else True,
            autoping=True), CONNECT_TIMEOUT_S)
        bound = False
        try:
            self._sockets[sub_id] = ws
            await ws.send_str(f"{BIND_PREFIX}{binding.token}")
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    note = await self._frame(sub_id, msg.data)
                    if note is not None and note.kind == "handshake" and not bound:
                        bound = True
                        self.binds += 1
                        self._metrics.websocket_binds.labels("bound").inc()
                        log.info("subscriptions: websocket bound for Subscription/%s", sub_id)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    self._count("malformed")
                else:
                    break  # ERROR (CLOSE and CLOSED end the iteration)
            if ws.close_code is not None and ws.close_code != 1000:
                log.warning("subscriptions: the server closed the websocket of "
                            "Subscription/%s (code %s)", sub_id, ws.close_code)
        finally:
            await ws.close()
        return bound

    async def _frame(self, sub_id: str, text: str) -> Notification | None:
        try:
            note = parse_notification_bytes(text.encode("utf-8"))
            if note.subscription_id != sub_id:
                raise WrongSubscriptionFrame(note.subscription_id)
            await self._on_notification(sub_id, note)
        except MalformedNotification as exc:
            self._count("malformed")
            log.warning("subscriptions: unreadable websocket frame (%s); reconciling now", exc)
            self._reconcile()
            return None
        except WrongSubscriptionFrame:
            self._count("wrong_subscription")
            log.warning("subscriptions: a websocket frame named another Subscription than "
                        "Subscription/%s", sub_id)
            return None
        except FhirError as exc:
            # Its events are not marked handled: the next event or heartbeat shows the gap,
            # filled with $events; the round covers the meantime.
            self._count("failed")
            log.warning("subscriptions: could not handle a websocket notification (%s); "
                        "reconciling now", type(exc).__name__)
            self._reconcile()
            return None
        self._count("ok")
        return note

    def _count(self, outcome: str) -> None:
        self._metrics.notifications.labels(SOURCE, outcome).inc()
