"""Fault: the FHIR server answers 503 to every request for a period.

Pokes keep arriving (realtime is fine) but every pull fails: the loops back off exponentially
up to `backoff_cap_s` and keep retrying, the status says the server is not reachable, and when
the server answers again the next retry brings everything missed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.faults.harness import (
    BACKOFF_CAP_S,
    assert_states,
    eventually,
    fault_bed,
    write_behind_the_api,
)
from wardsync.core.connection_status import ConnectionState

pytestmark = pytest.mark.slow  # live fault injection: 5-35 s a test

# The issue asks for 30 s; the suite affords it.
FAULT_S = 30.0
WRITE_EVERY_S = 5.0
NOTICED_BOUND_S = 2.0  # first failed pull after a poke
# Stated recovery: the longest backoff wait plus one pull.
RECOVERY_BOUND_S = BACKOFF_CAP_S + 1.5
CONVERGE_BOUND_S = 3.0
# No hammering: with full jitter the capped backoff waits cap/2 on average, so a key makes
# about FAULT_S / (cap / 2) attempts during the fault; allow twice that (no backoff: hundreds).
MAX_ATTEMPTS_PER_KEY = 2 * FAULT_S / (BACKOFF_CAP_S / 2)


async def test_fhir_server_erroring_for_a_period(seeded_data_dir: Path, tmp_path: Path) -> None:
    async with fault_bed(seeded_data_dir, tmp_path) as bed:
        traffic = bed.traffic()
        traffic.start()
        await asyncio.sleep(1.0)
        pulls_before = {(s.name, k): s.ws.queries.state(k).pulls
                        for s in bed.stations for k in bed.keys}
        t0 = time.monotonic()
        bed.sandbox.faults.fail(503, for_s=FAULT_S)
        missed = [write_behind_the_api(bed)]
        await eventually(
            lambda: all(s.state is ConnectionState.OFFLINE for s in bed.stations),
            NOTICED_BOUND_S, "every station says the server is not reachable")
        assert all(any(st.status == "error" and st.user_message
                       for st in s.ws.queries.states()) for s in bed.stations)
        # More writes the workstations cannot pull yet, while the fault lasts.
        for _ in range(int(FAULT_S // WRITE_EVERY_S) - 1):
            await asyncio.sleep(WRITE_EVERY_S)
            missed.append(write_behind_the_api(bed))
            assert all(s.state is ConnectionState.OFFLINE for s in bed.stations)
            assert all(m not in s.ws.store for s in bed.stations for m in missed)

        t_end = t0 + FAULT_S
        await eventually(lambda: bed.sandbox.faults.active is None, FAULT_S, "fault over")
        took = await eventually(
            lambda: bed.all_live() and all(m in s.ws.store for s in bed.stations
                                           for m in missed),
            RECOVERY_BOUND_S + max(0.0, t_end - time.monotonic()),
            "live again with every write made during the fault")
        assert took <= RECOVERY_BOUND_S + 0.5
        for s in bed.stations:
            for k in bed.keys:
                attempts = s.ws.queries.state(k).pulls - pulls_before[(s.name, k)]
                assert attempts <= MAX_ATTEMPTS_PER_KEY, f"{s.name} {k.label()}: {attempts}"
        await asyncio.sleep(1.0)
        await traffic.stop()
        assert traffic.log.failures, "the fault refused writes too"
        await bed.settle()
        await bed.wait_converged(CONVERGE_BOUND_S)
        bed.assert_consistent(traffic.log)
        assert_states(bed, t0, must={"offline"}, allowed={"offline", "live"})
