"""Fault: the workstations' network is cut (every connection reset, new ones refused), then back.

Both links fail at once, as when a ward switch reboots: the realtime connection drops and its
reconnects are refused, FHIR requests fail to connect, so the status goes from reconnecting to
offline (data may be out of date). When the network is back the SDK's next retry connects, the
channel resumes or catches up, and what was written meanwhile reaches every screen.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.faults.harness import (
    DEGRADED_AFTER_S,
    assert_states,
    eventually,
    fault_bed,
    post_marker,
)
from wardsync.core.connection_status import ConnectionState
from wardsync.sync.realtime import DISCONNECTED_RETRY_MS, REALTIME_REQUEST_TIMEOUT_MS
from wardsync.sync.workstation import WATCHDOG_TICK_S

pytestmark = pytest.mark.slow  # live fault injection: 5-35 s a test

CUT_S = 4.0
# The first poll after degraded_after_s fails to connect: offline.
OFFLINE_BOUND_S = DEGRADED_AFTER_S + 2 * WATCHDOG_TICK_S + 1.0
# A refused websocket connect is given up after the request timeout, then retried after the
# disconnected retry timeout (docs/realtime-protocol.md §3), so recovery takes at most one
# such cycle.
RECOVERY_BOUND_S = (REALTIME_REQUEST_TIMEOUT_MS + DISCONNECTED_RETRY_MS) / 1000 + 2.0
CONVERGE_BOUND_S = 3.0


async def test_network_cut_and_restored(seeded_data_dir: Path, tmp_path: Path) -> None:
    async with fault_bed(seeded_data_dir, tmp_path) as bed:
        traffic = bed.traffic()
        traffic.start()
        await asyncio.sleep(1.0)
        t0 = time.monotonic()
        for proxy in (bed.hub_proxy, bed.fhir_proxy):
            await proxy.refuse()
            assert proxy.drop_all() >= 1
        await eventually(
            lambda: all(s.state is ConnectionState.OFFLINE for s in bed.stations),
            OFFLINE_BOUND_S, "every station offline")
        marker = await post_marker(bed)  # the laboratory's own network still works
        await asyncio.sleep(max(0.0, t0 + CUT_S - time.monotonic()))
        assert all(marker not in s.ws.store for s in bed.stations)

        for proxy in (bed.hub_proxy, bed.fhir_proxy):
            await proxy.heal()
        await eventually(lambda: bed.all_live() and all(marker in s.ws.store
                                                        for s in bed.stations),
                         RECOVERY_BOUND_S, "live again with what was written during the cut")
        await asyncio.sleep(1.0)
        await traffic.stop()
        await bed.settle()
        await bed.wait_converged(CONVERGE_BOUND_S)
        bed.assert_consistent(traffic.log)
        assert_states(bed, t0, must={"reconnecting", "offline"},
                      allowed={"reconnecting", "degraded", "offline", "live"})
