"""The realtime connection's timers on fake time: the silence check and the channel grace.

A silent link is reported at an exact instant:

The real SDK connects to the real hub through a fault proxy that the test blackholes: no
error, no close, just no more frames. The SDK stamps each frame it receives in epoch
milliseconds (`transport.last_activity`); the connection's silence check runs every
SILENCE_CHECK_S on the workstation's timer and reports the link dropped once the timer's wall
clock is past that stamp by maxIdleInterval + the request timeout (Ably RTN23a) + the margin.
The timer's wall clock starts at the real time, so the SDK's stamps and the fake clock agree;
the SDK's own idle timer (real time, seconds away) never fires during the test.

A released channel is detached exactly CHANNEL_RELEASE_GRACE_S after its last lease closed,
unless it is leased again meanwhile (a panel closed and reopened does not churn attach/detach).
"""

from __future__ import annotations

import asyncio
import math
import time

import httpx

from tests.faults.proxy import FaultProxy
from tests.waiting import wait_for as eventually
from wardsync.auth.session import Session
from wardsync.core.connection_status import ConnectionState
from wardsync.core.metrics import MemoryMetrics
from wardsync.core.timer import FakeTimer
from wardsync.sandbox.server import Sandbox
from wardsync.sync.realtime import CHANNEL_RELEASE_GRACE_S, SILENCE_CHECK_S, SILENCE_MARGIN_MS
from wardsync.sync.workstation import Workstation, WorkstationConfig


async def test_a_silent_link_is_reported_at_the_first_check_past_the_idle_limit(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    info = sandbox.ready_info()
    timer = FakeTimer(wall=float(math.floor(time.time())))
    async with FaultProxy("127.0.0.1", sandbox.hub.port) as proxy:
        cfg = WorkstationConfig(
            fhir_base=info["fhir_base"], ward=info["ward"], realtime_endpoint=proxy.endpoint,
            realtime_token_url=info["ably_token_url"])
        ws = Workstation(cfg, clinician, metrics=MemoryMetrics(), http=http, timer=timer,
                         schedule=asyncio.get_running_loop().call_soon)
        await ws.start()
        try:
            await eventually(lambda: ws.status.state is ConnectionState.LIVE, what="live")
            assert ws.realtime is not None
            proxy.blackhole()
            transport = ws.realtime.client.connection.connection_manager.transport
            last_ms, limit_ms = transport.last_activity, transport.max_idle_interval
            assert last_ms and limit_ms, "the SDK stamps activity and knows its idle limit"
            # The first check (every SILENCE_CHECK_S since fake 0) past the limit.
            check = 0.0
            while (timer.wall() - timer.monotonic() + check) * 1000 - last_ms \
                    <= limit_ms + SILENCE_MARGIN_MS:
                check += SILENCE_CHECK_S
            assert check > timer.monotonic()

            await timer.advance(check - SILENCE_CHECK_S - timer.monotonic())
            assert transport.last_activity == last_ms, "silence: no frame arrived"
            assert ws.status.state is ConnectionState.LIVE
            await timer.advance(SILENCE_CHECK_S)
            assert timer.monotonic() == check
            assert ws.status.state is ConnectionState.RECONNECTING
            assert ws.status.realtime_down_since == check
            assert ws.status.detail == "80003 no activity from realtime"
            assert ws.realtime.state == "disconnected"
        finally:
            await proxy.heal()
            await ws.aclose()


async def test_a_released_channel_is_detached_exactly_after_the_grace(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    info = sandbox.ready_info()
    timer = FakeTimer()
    cfg = WorkstationConfig(
        fhir_base=info["fhir_base"], ward=info["ward"], realtime_endpoint=info["ably_endpoint"],
        realtime_token_url=info["ably_token_url"])
    ws = Workstation(cfg, clinician, metrics=MemoryMetrics(), http=http, timer=timer,
                     schedule=asyncio.get_running_loop().call_soon)
    await ws.start()
    try:
        await eventually(lambda: ws.status.state is ConnectionState.LIVE, what="live")
        rt = ws.realtime
        assert rt is not None
        name = "record:Task:task-03-1"
        first = await rt.acquire(name)
        await timer.advance(1.0)
        first.close()  # at 1.0
        await timer.advance(CHANNEL_RELEASE_GRACE_S - 0.5)
        again = await rt.acquire(name)  # leased again within the grace: kept attached
        await timer.advance(10 * CHANNEL_RELEASE_GRACE_S)
        assert name in rt.channel_names
        again.close()
        closed_at = timer.monotonic()
        await timer.advance(CHANNEL_RELEASE_GRACE_S - 0.001)
        assert name in rt.channel_names
        await timer.advance(0.001)
        assert timer.monotonic() == closed_at + CHANNEL_RELEASE_GRACE_S
        assert name not in rt.channel_names
        assert f"ward:{info['ward']}" in rt.channel_names
    finally:
        await ws.aclose()
