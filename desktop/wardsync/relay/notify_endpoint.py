"""The relay's notify endpoint (`notify_url`): where the FHIR server delivers notifications.

    POST /notify              topic-based notification Bundle (handshake, heartbeat, events),
                              or an empty body (a classic subscription without payload)
    PUT  /notify/[type]/[id]  classic rest-hook with payload (HAPI FHIR)
    DELETE /notify/[type]/[id]

Every request must carry one of the relay's Subscription secrets as
`Authorization: Bearer <secret>` (the server sends it from `channel.header`), else 401; the
body is at most `MAX_NOTIFICATION_BYTES` (413) and, when present, JSON (`application/fhir+json`
or `application/json`, else 415). Anything unreadable gets 400 with a reason code, is counted,
and makes the relay run a reconciliation round at once, so nothing it might have said is
lost. A change is numbered durably before the 2xx answer: a notification whose handling
failed (FHIR server unreachable) gets 503 and the server delivers it again.
"""

from __future__ import annotations

import logging

from aiohttp import web

from wardsync.fhir.errors import FhirError
from wardsync.relay.classic import MalformedDelivery, parse_delete, parse_put
from wardsync.relay.metrics import RelayMetrics
from wardsync.relay.notifications import MalformedNotification, parse_notification_bytes
from wardsync.relay.reconcile import Reconciler
from wardsync.relay.subscriptions import (
    CLASSIC,
    TOPIC,
    Announce,
    SubscriptionManager,
    WrongSubscription,
)

log = logging.getLogger(__name__)

MAX_NOTIFICATION_BYTES = 256 * 1024
JSON_TYPES = ("application/fhir+json", "application/json")
MAX_AUTHORIZATION_CHARS = 1024


class NotifyEndpoint:
    """aiohttp handlers for `notify_url`."""

    def __init__(self, *, manager: SubscriptionManager, reconciler: Reconciler,
                 announce: Announce, metrics: RelayMetrics) -> None:
        self._manager = manager
        self._reconciler = reconciler
        self._announce = announce
        self._metrics = metrics

    def install(self, app: web.Application, path: str = "/notify") -> None:
        app.router.add_route("POST", path, self.handle)
        app.router.add_route("*", f"{path}/{{tail:.*}}", self.handle)

    def _count(self, source: str, outcome: str) -> None:
        self._metrics.notifications.labels(source, outcome).inc()

    async def handle(self, request: web.Request) -> web.Response:
        tail = request.match_info.get("tail", "")
        source = CLASSIC if tail else TOPIC
        auth = request.headers.get("Authorization", "")
        secret = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        live = (self._manager.by_secret(secret)
                if secret and len(auth) <= MAX_AUTHORIZATION_CHARS else None)
        if live is None:
            self._count(source, "unauthorized")
            log.warning("notify: refused a %s request without a valid secret", request.method)
            return web.json_response({"error": "unauthorized"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        if request.content_length is not None and request.content_length > MAX_NOTIFICATION_BYTES:
            self._count(source, "too_large")
            return web.json_response({"error": "too_large"}, status=413)
        body = await request.content.read(MAX_NOTIFICATION_BYTES + 1)
        if len(body) > MAX_NOTIFICATION_BYTES:
            self._count(source, "too_large")
            return web.json_response({"error": "too_large"}, status=413)
        if body and request.content_type not in JSON_TYPES:
            self._count(source, "bad_content_type")
            return web.json_response({"error": "unsupported_media_type"}, status=415)
        try:
            if request.method == "POST" and not tail:
                if not body:
                    # A classic subscription without payload: "something changed".
                    self._count(CLASSIC, "poll_requested")
                    self._reconciler.request_round()
                    return web.Response(status=200)
                await self._manager.on_notification(live, parse_notification_bytes(body))
            elif request.method == "PUT" and tail:
                change = parse_put(tail, body)
                await self._announce(change.ref, change.version_id, CLASSIC)
            elif request.method == "DELETE" and tail:
                change = parse_delete(tail)
                # The read answers 410: announced as the delete version its history names.
                await self._announce(change.ref, None, CLASSIC)
                self._count(source, "delete")
                return web.Response(status=200)
            else:
                self._count(source, "bad_method")
                return web.json_response({"error": "method_not_allowed"}, status=405)
        except (MalformedNotification, MalformedDelivery) as exc:
            self._count(source, "malformed")
            log.warning("notify: unreadable %s notification (%s); reconciling now", source, exc)
            self._reconciler.request_round()
            return web.json_response({"error": "malformed", "reason": str(exc)}, status=400)
        except WrongSubscription:
            self._count(source, "wrong_subscription")
            log.warning("notify: a notification named another Subscription than its secret's")
            return web.json_response({"error": "forbidden"}, status=403)
        except FhirError as exc:
            self._count(source, "failed")
            log.warning("notify: could not handle a %s notification (%s); the server will "
                        "retry", source, type(exc).__name__)
            return web.json_response({"error": "unavailable"}, status=503)
        self._count(source, "ok")
        return web.Response(status=200)
