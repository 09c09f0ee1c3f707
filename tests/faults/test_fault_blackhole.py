"""Fault: the network to the hub silently blackholes (sockets stay open, nothing arrives).

No error ever reaches the workstations: only the hub's missing heartbeats tell. The SDK drops
a connection that has been silent for maxIdleInterval plus its request timeout (Ably RTN23a),
reconnects (the attempt hangs too, so it stays disconnected), the workstations poll after
`degraded_after_s`, and once the network heals they resume, go live and catch up.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.faults.harness import (
    DEGRADED_AFTER_S,
    MAX_IDLE_INTERVAL_MS,
    POLLING_INTERVAL_S,
    assert_states,
    eventually,
    fault_bed,
    post_marker,
)
from wardsync.core.connection_status import ConnectionState
from wardsync.sync.realtime import DISCONNECTED_RETRY_MS, REALTIME_REQUEST_TIMEOUT_MS
from wardsync.sync.workstation import WATCHDOG_TICK_S

pytestmark = pytest.mark.slow  # live fault injection: 5-35 s a test

# Stated recovery times, derived from the configuration.
# RTN23a: the SDK's idle timer is maxIdleInterval + realtime_request_timeout (+100 ms).
IDLE_DETECT_BOUND_S = (MAX_IDLE_INTERVAL_MS + REALTIME_REQUEST_TIMEOUT_MS) / 1000 + 1.0
DEGRADED_BOUND_S = DEGRADED_AFTER_S + 2 * WATCHDOG_TICK_S
POLLED_BOUND_S = POLLING_INTERVAL_S + 1.5
# ably 3.1.4 awaits the websocket close handshake on the dead socket before reconnecting: the
# websockets library's default close_timeout (a limit of the SDK; the status does not wait).
SDK_CLOSE_WAIT_S = 10.0
# After healing and that wait: a hanging attempt completes at once, or the next retry connects.
RECONNECT_BOUND_S = DISCONNECTED_RETRY_MS / 1000 + 2.0
CONVERGE_BOUND_S = 3.0


async def test_blackholed_hub_link_is_noticed_by_heartbeat_and_recovers(
    seeded_data_dir: Path, tmp_path: Path
) -> None:
    async with fault_bed(seeded_data_dir, tmp_path) as bed:
        traffic = bed.traffic()
        traffic.start()
        await asyncio.sleep(1.0)
        t0 = time.monotonic()
        bed.hub_proxy.blackhole()
        await eventually(
            lambda: all(s.state is not ConnectionState.LIVE for s in bed.stations),
            IDLE_DETECT_BOUND_S, "every station noticed the silence")
        detected = [s.first_state_after("reconnecting", t0) or 0.0 for s in bed.stations]
        assert all(t - t0 >= MAX_IDLE_INTERVAL_MS / 1000 for t in detected), (
            "noticed by the idle timer, not by an error")
        await eventually(
            lambda: all(s.state is ConnectionState.DEGRADED for s in bed.stations),
            DEGRADED_BOUND_S, "every station degraded (polling)")
        marker = await post_marker(bed)
        await eventually(lambda: all(marker in s.ws.store for s in bed.stations),
                         POLLED_BOUND_S, "a write during the blackhole polled by every station")
        assert bed.hub_proxy.open_connections >= len(bed.stations), "sockets held open"

        await bed.hub_proxy.heal()
        # The SDK reconnects once its close handshake on the dead socket has timed out.
        close_wait_left = max(detected) + SDK_CLOSE_WAIT_S - time.monotonic()
        await eventually(bed.all_live, max(0.0, close_wait_left) + RECONNECT_BOUND_S,
                         "every station live again")
        assert not any(s.ws.status.polling for s in bed.stations), "polling stopped"
        after = await post_marker(bed)
        await eventually(
            lambda: all(any(e["ref"] == after for e in s.metrics.of("poke_received"))
                        for s in bed.stations),
            2.0, "pokes flow again")

        await asyncio.sleep(1.0)
        await traffic.stop()
        await bed.settle()
        await bed.wait_converged(CONVERGE_BOUND_S)
        bed.assert_consistent(traffic.log)
        assert_states(bed, t0, must={"reconnecting", "degraded"},
                      allowed={"reconnecting", "degraded", "live"})
