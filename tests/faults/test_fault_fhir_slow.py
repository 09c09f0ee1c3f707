"""Fault: the FHIR server takes 2 s to answer every request for a period.

Nothing fails, so the status must not cry wolf; pulls stay single-flight (pokes arriving during
a slow pull are answered by exactly one more), so a write made during the slow period reaches
every screen within two pulls, and nothing piles up for after it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.faults.harness import eventually, fault_bed, post_marker, write_behind_the_api

DELAY_S = 2.0  # per request, as the issue says
SLOW_S = 14.0
WRITE_EVERY_S = 0.5
SEARCHES_PER_PULL = 2  # PatientLabs: reports with their results, and lab Observations
PULL_S = SEARCHES_PER_PULL * DELAY_S
# Stated bounds: a write lands during a pull at worst, so the pull after it brings it.
SLOW_LATENCY_BOUND_S = 2 * PULL_S + 1.0
RECOVERY_BOUND_S = 2.0  # once the server is fast again, no backlog is left to work off
CONVERGE_BOUND_S = 3.0


async def test_fhir_server_slow_for_a_period(seeded_data_dir: Path, tmp_path: Path) -> None:
    async with fault_bed(seeded_data_dir, tmp_path) as bed:
        traffic = bed.traffic()
        traffic.start()
        await asyncio.sleep(1.0)
        labs = bed.keys[2]  # PatientLabs of the patient written behind the API
        assert labs.label() == "labs Patient/pat-03"
        pulls_before = {s.name: s.ws.queries.state(labs).pulls for s in bed.stations}
        t0 = time.monotonic()
        bed.sandbox.faults.slow(DELAY_S, for_s=SLOW_S)
        written: list[tuple[str, float]] = []
        while time.monotonic() - t0 < SLOW_S - SLOW_LATENCY_BOUND_S:
            written.append((write_behind_the_api(bed), time.monotonic()))
            await asyncio.sleep(WRITE_EVERY_S)
        for ref, at in written:
            await eventually(lambda ref=ref: all(ref in s.ws.store for s in bed.stations),
                             max(0.0, at + SLOW_LATENCY_BOUND_S - time.monotonic()),
                             f"{ref} on every station within {SLOW_LATENCY_BOUND_S} s")
        assert bed.sandbox.faults.active == "slow", "all of that happened while slow"
        for s in bed.stations:
            pulls = s.ws.queries.state(labs).pulls - pulls_before[s.name]
            # Single flight: one pull at a time, one more for whatever came during it.
            assert pulls <= (time.monotonic() - t0) / PULL_S + 2, f"{s.name}: {pulls} pulls"
            assert pulls < len(written), "pokes during slow pulls were coalesced"

        await eventually(lambda: bed.sandbox.faults.active is None, SLOW_S, "fault over")
        marker = await post_marker(bed)
        await eventually(lambda: all(marker in s.ws.store for s in bed.stations),
                         RECOVERY_BOUND_S, "a write after the slow period, at normal speed")
        await traffic.stop()
        await bed.settle()
        await bed.wait_converged(CONVERGE_BOUND_S)
        bed.assert_consistent(traffic.log)
        for s in bed.stations:
            # Slow is not down: no state change, and no query ever showed an error.
            assert s.states_since(t0) == [], f"{s.name}: {s.states_since(t0)}"
            assert all(st.failures == 0 for st in s.ws.queries.states())
