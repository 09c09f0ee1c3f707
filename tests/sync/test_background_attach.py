"""An attach the SDK starts in the background and that times out is counted, not left as
"Task exception was never retrieved" (sync/realtime.py `_guard_background_attach`).

The hub here is a minimal stand-in that speaks just enough of the protocol
(docs/realtime-protocol.md §3, §4): CONNECTED, ATTACHED for `ward:` channels, and silence for
every other ATTACH. The real hub always answers an ATTACH, and an unanswered one is exactly
what a stalled network or an overloaded hub produces; this cannot be made with the real hub.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from ably.util.exceptions import AblyException
from aiohttp import WSMsgType, web

from tests.waiting import wait_for as eventually
from wardsync.sync.realtime import SyncConnection

ATTACH, ATTACHED, CONNECTED = 10, 11, 4
REQUEST_TIMEOUT_MS = 400


class SilentAttachHub:
    """Answers ATTACH only for `ward:` channels; `drop()` closes every socket."""

    def __init__(self) -> None:
        self.sockets: list[web.WebSocketResponse] = []
        self.connects = 0
        self.unanswered: list[str] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._ws)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        await self.drop()
        if self._runner is not None:
            await self._runner.cleanup()

    async def drop(self) -> None:
        for ws in list(self.sockets):
            await ws.close()

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        self.connects += 1
        await ws.send_str(json.dumps({
            "action": CONNECTED, "connectionId": f"conn{self.connects}",
            "connectionDetails": {"connectionKey": f"conn{self.connects}!k",
                                  "maxIdleInterval": 15000, "connectionStateTtl": 120000,
                                  "clientId": "demo-clinician"}}))
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                break
            frame = json.loads(msg.data)
            if frame.get("action") == ATTACH:
                name = frame["channel"]
                if name.startswith("ward:"):
                    await ws.send_str(json.dumps({"action": ATTACHED, "channel": name,
                                                  "flags": 1 << 18, "channelSerial": "s-0"}))
                else:
                    self.unanswered.append(name)
        self.sockets.remove(ws)
        return ws


@pytest.fixture
async def silent_hub() -> AsyncIterator[SilentAttachHub]:
    hub = SilentAttachHub()
    await hub.start()
    yield hub
    await hub.stop()


async def _token() -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {"token": "stand-in", "issued": now, "expires": now + 3_600_000,
            "capability": '{"*":["*"]}', "clientId": "demo-clinician"}


async def test_a_background_attach_that_times_out_is_counted_not_lost(
    silent_hub: SilentAttachHub,
) -> None:
    loop = asyncio.get_running_loop()
    unhandled: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: unhandled.append(str(ctx.get("message"))))
    conn = SyncConnection(endpoint=f"127.0.0.1:{silent_hub.port}", token_provider=_token,
                          use_binary_protocol=False, request_timeout_ms=REQUEST_TIMEOUT_MS,
                          disconnected_retry_ms=100)
    try:
        await conn.acquire("ward:1")
        # An attach the caller awaits still raises to the caller (90007: attach timed out).
        with pytest.raises(AblyException) as err:
            await conn.acquire("record:Patient:pat-01")
        assert err.value.code == 90007
        assert conn.sdk_errors == {}

        # Reconnecting makes the SDK re-attach the suspended channel in a task of its own
        # (RTN15c6/RTL13: `asyncio.create_task(channel.attach())`), which times out too.
        await silent_hub.drop()
        await eventually(lambda: silent_hub.connects == 2 and conn.state == "connected",
                         what="reconnected")
        await eventually(lambda: conn.sdk_errors["background_attach:90007"] == 1,
                         timeout_s=5, what="the background attach failure counted")
        assert silent_hub.unanswered == ["record:Patient:pat-01"] * 2
        gc.collect()
        await asyncio.sleep(0)
        assert [m for m in unhandled if "never retrieved" in m] == []
    finally:
        await conn.aclose()
        loop.set_exception_handler(previous)
