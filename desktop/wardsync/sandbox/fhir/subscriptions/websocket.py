"""The websocket channel (Backport IG STU 1.1 "Channels": websocket).

A client gets a short-lived token from `$get-ws-binding-token`, opens the socket at the
`websocket-url` that operation returns and sends `bind-with-token: <token>` as a text frame.
The server answers with a `handshake` notification Bundle per bound subscription, then sends
event notifications and heartbeats as text frames, each a notification Bundle with event
numbers, exactly as on rest-hook. Tokens are single use and expire after
`WS_TOKEN_TTL_S`; an unknown, used or expired token gets a close with code 1008 (policy
violation, RFC 6455 §7.4.1) and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from wardsync.core.timer import Timer
from wardsync.sandbox.fhir.subscriptions.classic import HookRequest
from wardsync.sandbox.fhir.subscriptions.delivery import DeliveryFailed
from wardsync.sandbox.fhir.subscriptions.model import SubscriptionSpec

log = logging.getLogger(__name__)

WS_TOKEN_TTL_S = 60.0
BIND_TIMEOUT_S = 30.0
BIND_PREFIX = "bind-with-token"
MAX_TOKENS = 1000

OnBound = Callable[[str, web.WebSocketResponse], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class BindingToken:
    """What a binding token allows, until when (epoch seconds)."""

    subscriptions: tuple[str, ...]
    expires_at: float


class WebSocketChannel:
    """Binding tokens and the sockets bound to each subscription."""

    def __init__(self, timer: Timer, *, on_bound: OnBound, ttl_s: float = WS_TOKEN_TTL_S
                 ) -> None:
        self._timer = timer
        self._on_bound = on_bound
        self.ttl_s = ttl_s
        self._tokens: dict[str, BindingToken] = {}
        self._sockets: dict[str, set[web.WebSocketResponse]] = {}

    def issue_token(self, subscriptions: tuple[str, ...]) -> tuple[str, float]:
        """A new token for `subscriptions` and its expiry (epoch seconds)."""
        now = self._timer.wall()
        self._tokens = {t: b for t, b in self._tokens.items() if b.expires_at > now}
        if len(self._tokens) >= MAX_TOKENS:
            raise OverflowError("too many outstanding websocket binding tokens")
        token = secrets.token_urlsafe(32)
        expires = now + self.ttl_s
        self._tokens[token] = BindingToken(subscriptions, expires)
        return token, expires

    def bound(self, sub_id: str) -> bool:
        return bool(self._sockets.get(sub_id))

    async def send(self, spec: SubscriptionSpec, request: HookRequest) -> None:
        """Send a notification to every socket bound to `spec`; DeliveryFailed if none took it."""
        sockets = tuple(self._sockets.get(spec.id, ()))
        if not sockets or request.body is None:
            raise DeliveryFailed("no websocket is bound to the subscription")
        text = request.body.decode("utf-8")
        delivered = 0
        for ws in sockets:
            try:
                await ws.send_str(text)
                delivered += 1
            except (ConnectionError, RuntimeError) as exc:
                log.info("subscription %s: websocket send failed: %s", spec.id,
                         type(exc).__name__)
                self._sockets.get(spec.id, set()).discard(ws)
        if not delivered:
            raise DeliveryFailed("every bound websocket was closed")

    async def close_all(self) -> None:
        for sockets in list(self._sockets.values()):
            for ws in list(sockets):
                await ws.close()
        self._sockets.clear()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The websocket endpoint: bind with a token, then receive notifications."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        bound: tuple[str, ...] = ()
        try:
            try:
                first = await asyncio.wait_for(ws.receive(), BIND_TIMEOUT_S)
            except TimeoutError:
                await ws.close(code=1008, message=b"bind-with-token expected")
                return ws
            token = _token_of(first.data) if first.type == WSMsgType.TEXT else None
            binding = self._tokens.pop(token, None) if token else None
            if binding is None or binding.expires_at <= self._timer.wall():
                await ws.close(code=1008, message=b"invalid or expired binding token")
                return ws
            bound = binding.subscriptions
            for sub_id in bound:
                self._sockets.setdefault(sub_id, set()).add(ws)
                await self._on_bound(sub_id, ws)
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
            return ws
        finally:
            for sub_id in bound:
                self._sockets.get(sub_id, set()).discard(ws)


def _token_of(text: object) -> str | None:
    """`bind-with-token: T` (or `bind-with-token T`) -> T."""
    if not isinstance(text, str) or not text.startswith(BIND_PREFIX):
        return None
    token = text[len(BIND_PREFIX):].lstrip(":").strip()
    return token or None
