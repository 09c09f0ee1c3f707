"""Two relays on one data dir (the single-node lease): one leads and publishes, the other
stands by, ready, serving tokens; when the leader stops, the standby takes over and continues
the ward's seq."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.relay.relay_fixtures import (
    clinician_session,
    poke_watcher,
    relay_config,
    running_relay,
    scrape,
)
from tests.waiting import wait_for
from wardsync.core import codes
from wardsync.relay.lease import STANDBY_RETRY_S
from wardsync.relay.service import Relay
from wardsync.sandbox.server import Sandbox

pytestmark = pytest.mark.slow  # real servers, seconds each


async def _role(http: httpx.AsyncClient, relay: Relay) -> tuple[int, str]:
    base = relay.ready_info()["health_url"].rsplit("/", 1)[0]
    reply = await http.get(f"{base}/readyz")
    return reply.status_code, reply.json()["role"]


async def test_one_leader_one_standby_and_a_takeover(ward: Sandbox, tmp_path: Path):
    data_dir = tmp_path / "shared"
    first = relay_config(ward, tmp_path, data_dir)
    second = relay_config(ward, tmp_path, data_dir)
    first.ably.heartbeat_s = second.ably.heartbeat_s = 1.0
    async with httpx.AsyncClient(timeout=10) as http, running_relay(first) as leader:
        session = await clinician_session(ward, http)
        standby = Relay(second)
        await standby.start()
        try:
            assert (leader.role, standby.role) == ("leader", "standby")
            await wait_for(lambda: leader.ready, 10, "the leader's first poll round")
            assert await _role(http, leader) == (200, "leader")
            assert await _role(http, standby) == (200, "standby")  # ready to take over
            assert await scrape(http, leader.ready_info()["metrics_url"],
                                "wardsync_relay_leader") == 1
            assert await scrape(http, standby.ready_info()["metrics_url"],
                                "wardsync_relay_leader") == 0
            # The standby mints tokens too; only the leader polls and publishes.
            async with poke_watcher(ward, session, http,
                                    standby.ready_info()["token_url"]) as w:
                await wait_for(lambda: w.client.connection.state == "connected", 10)
                report, _ = await ward.lab.post_panel(
                    "pat-02", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.1})
                ref = f"DiagnosticReport/{report['id']}"
                await wait_for(lambda: (ref, "1") in w.per_version(), 15, "the leader's poke")
                assert standby.publisher is not None and standby.publisher.published == 0
                assert standby.reconciler is not None and standby.reconciler.rounds == 0
                # Heartbeats on the ward channel come from the leader alone.
                await wait_for(lambda: len(w.heartbeats) >= 2, 10, "the leader's heartbeats")
                assert standby.publisher.heartbeats_sent == 0
                assert await standby.on_change(ref, "1") is None  # a standby ignores it
                seq_before = max(w.seqs())

                await leader.stop()  # releases the lease
                await wait_for(lambda: standby.role == "leader", STANDBY_RETRY_S + 2,
                               "the standby's takeover")
                report2, _ = await ward.lab.post_panel(
                    "pat-02", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 1.2})
                ref2 = f"DiagnosticReport/{report2['id']}"
                await wait_for(lambda: (ref2, "1") in w.per_version(), 15, "the new poke")
                assert standby.publisher.published >= 1
                await wait_for(lambda: standby.publisher is not None
                               and standby.publisher.heartbeats_sent >= 1, 10,
                               "the new leader's heartbeats")
                assert all(n == 1 for n in w.per_version().values()), w.per_version()
                assert w.seqs() == list(range(w.seqs()[0], w.seqs()[0] + len(w.seqs())))
                assert max(w.seqs()) > seq_before
                # Ready once its first round is over (the poke came from the middle of it).
                await wait_for(lambda: standby.ready, 10, "the new leader's first round")
                assert await _role(http, standby) == (200, "leader")
        finally:
            await standby.stop()
