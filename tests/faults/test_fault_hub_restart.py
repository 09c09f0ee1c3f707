"""Fault: the realtime hub is killed (all its state forgotten) and restarted on the same port.

Recovery: the SDK retries every `DISCONNECTED_RETRY_MS`; while it is down longer than
`degraded_after_s` the workstations poll; after the restart the ward channel re-attaches
without continuity (RTL2f) and every open query catches up.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.faults.harness import (
    DEGRADED_AFTER_S,
    POLLING_INTERVAL_S,
    assert_states,
    eventually,
    fault_bed,
    post_marker,
)
from wardsync.core.connection_status import ConnectionState
from wardsync.sandbox.relay_component import PUBLISH_RETRY_CAP_S as RETRY_CAP_S
from wardsync.sync.realtime import DISCONNECTED_RETRY_MS
from wardsync.sync.workstation import WATCHDOG_TICK_S

pytestmark = pytest.mark.slow  # live fault injection: 5-35 s a test

OUTAGE_MIN_S = 4.0
# Stated recovery times, derived from the configuration.
DEGRADED_BOUND_S = DEGRADED_AFTER_S + 2 * WATCHDOG_TICK_S
POLLED_BOUND_S = POLLING_INTERVAL_S + 1.5  # a write during the outage reaches every screen
RECONNECT_BOUND_S = DISCONNECTED_RETRY_MS / 1000 + 2.0  # one SDK retry and one connect
# The sandbox relay retries publishing with a backoff capped at RETRY_CAP_S.
POKES_BACK_BOUND_S = RETRY_CAP_S + 2.0
CONVERGE_BOUND_S = 3.0  # after the last write, every station equals the server


async def test_hub_killed_and_restarted(seeded_data_dir: Path, tmp_path: Path) -> None:
    async with fault_bed(seeded_data_dir, tmp_path) as bed:
        hub = bed.sandbox.hub
        traffic = bed.traffic()
        traffic.start()
        await asyncio.sleep(1.0)
        t_kill = time.monotonic()
        await hub.stop()
        await eventually(
            lambda: all(s.state is ConnectionState.DEGRADED for s in bed.stations),
            DEGRADED_BOUND_S, "every station degraded (polling)")
        marker = await post_marker(bed)
        await eventually(lambda: all(marker in s.ws.store for s in bed.stations),
                         POLLED_BOUND_S, "a write during the outage polled by every station")
        await asyncio.sleep(max(0.0, OUTAGE_MIN_S - (time.monotonic() - t_kill)))

        await hub.start(bed.sandbox.config.host, hub.port)
        await eventually(bed.all_live, RECONNECT_BOUND_S, "every station live again")
        assert not any(s.ws.status.polling for s in bed.stations), "polling stopped"
        # Realtime carries pokes again once the relay's publish backoff has run out.
        after = await post_marker(bed)
        await eventually(
            lambda: all(any(e["ref"] == after for e in s.metrics.of("poke_received"))
                        for s in bed.stations),
            POKES_BACK_BOUND_S, "a poke after the restart")

        await asyncio.sleep(1.0)
        await traffic.stop()
        await bed.settle()
        await bed.wait_converged(CONVERGE_BOUND_S)
        bed.assert_consistent(traffic.log)
        # The hub was down, the FHIR server was not: never "offline".
        assert_states(bed, t_kill, must={"reconnecting", "degraded"},
                      allowed={"reconnecting", "degraded", "live"})
        assert all(s.ws.catch_ups >= 1 for s in bed.stations)


QUICK_DEGRADED_AFTER_S = 10.0  # the production default: no polling during a quick restart
QUICK_CATCH_UP_BOUND_S = DISCONNECTED_RETRY_MS / 1000 + 3.0


async def test_hub_crash_with_immediate_restart_is_caught_up(
    seeded_data_dir: Path, tmp_path: Path
) -> None:
    # The hub restarts before polling would start, and the relay republishes what it queued
    # before the workstations are back: those pokes reach the new hub's history only, which
    # cannot continue the old channel serials. The re-attach without continuity (RTL2f) and
    # the catch-up it triggers are all that bring those writes.
    async with fault_bed(seeded_data_dir, tmp_path,
                         degraded_after_s=QUICK_DEGRADED_AFTER_S) as bed:
        hub = bed.sandbox.hub
        traffic = bed.traffic()
        traffic.start()
        await asyncio.sleep(2.0)
        # Quiet before the crash: a later poke for the same query would pull the missed
        # writes too (pulls are incremental by _lastUpdated) and hide a missing catch-up.
        await traffic.stop()
        await bed.settle()
        t_kill = time.monotonic()
        await hub.stop()
        during = [await post_marker(bed), await post_marker(bed, "pat-04")]
        await hub.start(bed.sandbox.config.host, hub.port)
        await eventually(
            lambda: bed.all_live() and all(m in s.ws.store for s in bed.stations
                                           for m in during),
            QUICK_CATCH_UP_BOUND_S, "live again with the writes made while the hub was down")
        assert not any(s.ws.polls for s in bed.stations), "no polling was involved"
        await bed.settle()
        await bed.wait_converged(CONVERGE_BOUND_S)
        bed.assert_consistent(traffic.log)
        assert_states(bed, t_kill, must={"reconnecting"}, allowed={"reconnecting", "live"})
