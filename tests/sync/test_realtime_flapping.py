"""An unstable realtime link gets a bounded reaction (docs/security/realtime-and-local.md §3).

The real SDK connects to a real hub through a fault proxy that resets the link each time it
is up: what a frame the SDK refuses did (a 1.2 MB SYNC: close 1009, reconnect at once, the
same SYNC again), 1188 flaps in 14 s. After `flap_limit` drops within the window the
connection pauses instead, reports "disconnected" (the workstation polls meanwhile), then
reconnects and re-attaches its channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from ably.types.connectionstate import ConnectionState

from tests.faults.proxy import FaultProxy
from tests.waiting import wait_for as eventually
from wardsync.sandbox.hub import Hub, HubConfig
from wardsync.sync.realtime import SyncConnection

KEY_NAME, KEY_SECRET = "sandbox.root", "test-only-secret-flapping-0123"


async def test_a_link_that_drops_as_soon_as_it_is_up_is_paused_not_stormed() -> None:
    hub = Hub({KEY_NAME: KEY_SECRET}, HubConfig(heartbeat_interval_s=1.0,
                                                 max_idle_interval_ms=5000))
    port = await hub.start("127.0.0.1", 0)

    async def tokens() -> dict[str, Any]:
        return hub.mint_token(key_name=KEY_NAME, client_id="desk-1",
                              capability={"*": ["*"]}, ttl_s=600)

    states: list[tuple[str, str]] = []
    try:
        async with FaultProxy("127.0.0.1", port) as proxy:
            conn = SyncConnection(endpoint=proxy.endpoint, token_provider=tokens,
                                  on_state=lambda s, r: states.append((s, r)),
                                  disconnected_retry_ms=200, request_timeout_ms=2000,
                                  flap_limit=3, flap_window_s=30.0, flap_pause_s=3.0)
            try:
                lease = await conn.acquire("record:Task:t1")
                await eventually(lambda: conn.state == "connected", what="connected")

                async def cut_whenever_up() -> None:
                    while True:
                        if conn.client.connection.state == "connected" \
                                and proxy.open_connections:
                            await asyncio.sleep(0.05)
                            proxy.drop_all()
                        await asyncio.sleep(0.01)

                cutter = asyncio.ensure_future(cut_whenever_up())
                started, accepted = time.monotonic(), proxy.stats.accepted
                await eventually(lambda: conn.pauses == 1, timeout_s=10.0, what="a pause")
                paused_at = time.monotonic()
                assert states[-1][0] == "disconnected" and "unstable link" in states[-1][1]
                # Nothing reconnects during the pause, once the connection is closed (a
                # reconnect the SDK had already started may complete just before).
                await eventually(lambda: conn.client.connection.state == ConnectionState.CLOSED,
                                 timeout_s=5.0, what="the unstable link closed")
                during = proxy.stats.accepted
                await asyncio.sleep(2.0)
                assert proxy.stats.accepted == during
                assert paused_at - started < 5.0
                assert during - accepted <= 3 + 1  # the drops that tripped it (+1 in flight)
                cutter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await cutter
                # After the pause: connected again, the leased channel attached again.
                await eventually(lambda: conn.state == "connected", timeout_s=10.0,
                                 what="connected after the pause")
                await eventually(lambda: str(lease.channel.state) in ("attached",
                                                                      "ChannelState.ATTACHED"),
                                 timeout_s=5.0, what="the channel re-attached")
                assert conn.pauses == 1
                assert not [s for s, _ in states if s in ("closing", "closed")]
                lease.close()
            finally:
                await conn.aclose()
    finally:
        await hub.stop()
