"""The websocket channel (`subscriptions.channel = "websocket"`) against the sandbox's FHIR
Subscriptions, with the reconciliation poll held back so that only the sockets can explain a
poke: one poke per version within a second, a socket the server drops bound again with
nothing lost, and events lost on the way recovered with `$events`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import httpx
import pytest
from aiohttp import web

from tests.relay.relay_fixtures import clinician_session, poke_watcher, running_relay, scrape
from tests.relay.test_relay_subscriptions import (
    NO_POLL_S,
    own_subscriptions,
    post_lactate,
    ready_relay,
    subscribed_config,
)
from tests.waiting import wait_for
from wardsync.relay.config import RelayConfig
from wardsync.relay.service import Relay
from wardsync.sandbox.server import Sandbox

pytestmark = pytest.mark.slow  # real servers, seconds each


def websocket_config(ward: Sandbox, tmp_path: Path) -> RelayConfig:
    config = subscribed_config(ward, tmp_path, mode="topic", interval_s=NO_POLL_S)
    config.subscriptions.channel = "websocket"
    return config


def all_bound(relay: Relay) -> bool:
    subs = relay.subscriptions
    assert subs is not None and subs.binder is not None
    wanted = {live.sub_id for live in subs.subscriptions}
    return bool(wanted) and subs.binder.bound == wanted


async def bound_relay(relay: Relay) -> None:
    await ready_relay(relay)
    await wait_for(lambda: all_bound(relay), 10, "every Subscription's socket bound")


class SocketProxy:
    """Stands between the relay and the server's websocket endpoint: forwards frames both
    ways, except that while `drop` is set it swallows event notifications (sent by the server,
    never received by the relay), and `mute_open_sockets()` makes the sockets open now
    silent for good (a half-open connection: nothing arrives, nothing says it closed)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.drop = False
        self.dropped = 0
        self.connections = 0
        self._muted_below = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"ws://127.0.0.1:{self._runner.addresses[0][1]}/"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def mute_open_sockets(self) -> None:
        self._muted_below = self.connections

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        self.connections += 1
        number = self.connections
        client = web.WebSocketResponse()
        await client.prepare(request)
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(self.target) as upstream:

            async def downstream() -> None:
                async for msg in upstream:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    if number <= self._muted_below:
                        continue
                    if self.drop and '"event-notification"' in msg.data:
                        self.dropped += 1
                        continue
                    await client.send_str(msg.data)
                await client.close()

            task = asyncio.create_task(downstream())
            try:
                async for msg in client:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        await upstream.send_str(msg.data)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        return client


@contextlib.asynccontextmanager
async def socket_proxy(ward: Sandbox) -> AsyncIterator[SocketProxy]:
    service = ward.subscriptions
    assert service is not None
    real = service._websocket_url  # the sandbox's answer to $get-ws-binding-token
    assert real is not None
    proxy = SocketProxy(real())
    await proxy.start()
    service._websocket_url = lambda: proxy.url
    try:
        yield proxy
    finally:
        service._websocket_url = real
        await proxy.stop()


async def test_a_lab_result_reaches_a_workstation_through_the_websocket_within_a_second(
    ward: Sandbox, tmp_path: Path
):
    async with httpx.AsyncClient(timeout=10) as http, \
            running_relay(websocket_config(ward, tmp_path)) as relay:
        await bound_relay(relay)
        subs = await own_subscriptions(relay)
        assert subs and all(s["channel"]["type"] == "websocket" for s in subs)
        assert all("header" not in s["channel"] for s in subs)  # no secret given away
        session = await clinician_session(ward, http)
        try:
            async with poke_watcher(ward, session, http, relay.ready_info()["token_url"]) as w:
                await wait_for(lambda: w.client.connection.state == "connected", 10)
                started = time.monotonic()
                expected = await post_lactate(ward)
                await wait_for(lambda: expected <= set(w.per_version()), 5, "the pokes")
                assert time.monotonic() - started < 1.0
                assert relay.reconciler.rounds == 1  # the poll had no part in it
                await asyncio.sleep(0.5)
                assert all(n == 1 for n in w.per_version().values()), w.per_version()
        finally:
            await session.aclose()
        url = relay.ready_info()["metrics_url"]
        assert await scrape(http, url, "wardsync_relay_notifications_total",
                            source="websocket", outcome="ok") >= len(subs) + 1
        assert await scrape(http, url, "wardsync_relay_subscription_websocket_binds_total",
                            outcome="bound") == len(subs)
        assert await scrape(http, url, "wardsync_relay_subscription_handshakes_total") \
            == len(subs)


async def test_a_socket_the_server_drops_is_bound_again_and_nothing_is_lost(
    ward: Sandbox, tmp_path: Path
):
    async with httpx.AsyncClient(timeout=10) as http, \
            running_relay(websocket_config(ward, tmp_path)) as relay:
        await bound_relay(relay)
        binder = relay.subscriptions.binder
        assert binder is not None
        binds = binder.binds
        assert ward.subscriptions is not None
        await ward.subscriptions.websockets.close_all()
        written = await post_lactate(ward, "pat-03")  # while the sockets are down
        # Nothing lost: the socket bound again brings what the server kept for it, and the
        # round each drop asks for covers the gap anyway.
        await wait_for(lambda: all(relay.state.has_version(r, v) for r, v in written), 5,
                       "the versions written while the socket was down")
        await wait_for(lambda: all_bound(relay), 5, "bound again")
        assert binder.binds >= binds + len(relay.subscriptions.subscriptions)
        url = relay.ready_info()["metrics_url"]
        assert await scrape(http, url, "wardsync_relay_subscription_websocket_binds_total",
                            outcome="closed") >= len(relay.subscriptions.subscriptions)
        # Bound again, the sockets carry new changes within a second, without the poll.
        await asyncio.sleep(0.5)  # the rounds the drops asked for are over
        rounds = relay.reconciler.rounds
        started = time.monotonic()
        later = await post_lactate(ward, "pat-04")
        await wait_for(lambda: all(relay.state.has_version(r, v) for r, v in later), 2,
                       "a change after the re-bind")
        assert time.monotonic() - started < 1.0
        assert relay.reconciler.rounds == rounds


async def test_events_lost_on_the_socket_are_recovered_with_events(
    ward: Sandbox, tmp_path: Path
):
    async with httpx.AsyncClient(timeout=10) as http, socket_proxy(ward) as proxy, \
            running_relay(websocket_config(ward, tmp_path)) as relay:
        await bound_relay(relay)
        rounds = relay.reconciler.rounds
        proxy.drop = True
        lost = await post_lactate(ward, "pat-03")
        await wait_for(lambda: proxy.dropped >= 1, 5, "a notification lost")
        await asyncio.sleep(0.3)
        assert not any(relay.state.has_version(ref, v) for ref, v in lost)
        proxy.drop = False
        later = await post_lactate(ward, "pat-04")
        await wait_for(lambda: all(relay.state.has_version(r, v) for r, v in lost | later),
                       5, "the lost versions recovered")
        assert relay.reconciler.rounds == rounds  # recovered by $events, not by the poll
        assert await scrape(http, relay.ready_info()["metrics_url"],
                            "wardsync_relay_subscription_gaps_recovered_total",
                            via="events") >= 1


async def test_a_silent_socket_is_dropped_and_bound_again(ward: Sandbox, tmp_path: Path):
    config = websocket_config(ward, tmp_path)
    config.subscriptions.heartbeat_s = 1.0  # silence limit: 2 x 1 s + 0.5 s
    async with httpx.AsyncClient(timeout=10) as http, socket_proxy(ward) as proxy, \
            running_relay(config) as relay:
        await bound_relay(relay)
        binder = relay.subscriptions.binder
        assert binder is not None
        binds = binder.binds
        proxy.mute_open_sockets()
        silent = await post_lactate(ward, "pat-03")  # sent on the silent sockets: lost
        await wait_for(lambda: binder.binds >= binds + len(relay.subscriptions.subscriptions),
                       10, "every silent socket replaced")
        assert await scrape(http, relay.ready_info()["metrics_url"],
                            "wardsync_relay_subscription_heartbeats_missed_total") >= 1
        # What went out on the silent sockets is recovered ($status shows the counter ahead,
        # $events replays it; the drops' rounds cover it too) ...
        await wait_for(lambda: all(relay.state.has_version(r, v) for r, v in silent), 5,
                       "the versions sent on the silent sockets")
        # ... and the new sockets carry changes as before.
        later = await post_lactate(ward, "pat-04")
        await wait_for(lambda: all(relay.state.has_version(r, v) for r, v in later), 2,
                       "a change on the new sockets")
