"""A proxy between the FHIR server and a relay's notify endpoint: the network the server's
notifications cross. It forwards everything, and on command loses, keeps or re-sends them.

- `drop` (+ `drop_heartbeats`): topic event notifications (and heartbeats) are answered 200 by
  the proxy itself and never reach the relay (lost for good);
- `hold`: every notification is answered 200 by the proxy and kept in `held`; `release()`
  forwards the kept ones later, in whatever order the test gives (late, out of order);
- every notification forwarded is recorded in `seen`, and `resend()` forwards a recorded one
  again (a server re-delivering what it already delivered).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import httpx
from aiohttp import web


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notification as the server sent it."""

    method: str
    path_qs: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def is_event(self) -> bool:
        return b'"event-notification"' in self.body

    @property
    def is_heartbeat(self) -> bool:
        return b'"heartbeat"' in self.body


class NotifyProxy:
    """`await proxy.start()`; point the relay's public URL at `proxy.url` and `proxy.target`
    at the relay."""

    def __init__(self, target: str = "") -> None:
        self.target = target
        self.drop = False
        self.drop_heartbeats = False
        self.dropped = 0
        self.hold = False
        self.held: list[Delivery] = []
        self.seen: list[Delivery] = []
        self._runner: web.AppRunner | None = None
        self._http: httpx.AsyncClient | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._on_request)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self._http = httpx.AsyncClient(timeout=15)

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _on_request(self, request: web.Request) -> web.Response:
        headers = tuple((k, v) for k, v in request.headers.items()
                        if k.lower() not in ("host", "content-length", "transfer-encoding"))
        delivery = Delivery(request.method, request.path_qs, headers, await request.read())
        lost = delivery.is_event or (self.drop_heartbeats and delivery.is_heartbeat)
        if self.drop and lost:
            self.dropped += 1
            return web.Response(status=200)
        if self.hold:
            self.held.append(delivery)
            return web.Response(status=200)
        resp = await self.forward(delivery)
        return web.Response(status=resp.status_code, body=resp.content,
                            content_type=resp.headers.get("content-type", "text/plain")
                            .split(";")[0])

    async def forward(self, delivery: Delivery) -> httpx.Response:
        """Send `delivery` to the relay now (recorded in `seen`)."""
        assert self._http is not None
        self.seen.append(delivery)
        return await self._http.request(delivery.method, f"{self.target}{delivery.path_qs}",
                                        content=delivery.body, headers=list(delivery.headers))

    async def release(self, order: Iterable[Delivery]) -> list[int]:
        """Forward held deliveries in `order` (and stop holding); the relay's statuses."""
        self.hold = False
        statuses = []
        for delivery in order:
            self.held.remove(delivery)
            statuses.append((await self.forward(delivery)).status_code)
        return statuses

    async def resend(self, delivery: Delivery) -> int:
        """Deliver a recorded notification again; the relay's status."""
        return (await self.forward(delivery)).status_code
