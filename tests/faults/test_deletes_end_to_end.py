"""End to end: a lab result deleted on the FHIR server leaves every workstation's screen
within a second, through the sandbox's own relay (a topic notification whose focus read
answers 410 Gone -> one RESOURCE_DELETED poke -> each workstation's pull finds it gone).

Before the relay announced deletes, a deleted resource stayed on screen until the query was
opened again: an incremental search never returns a deleted resource.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.harness import PATIENTS, eventually, fault_bed, post_marker
from wardsync.core.pokes import RESOURCE_DELETED

pytestmark = pytest.mark.slow  # real sandbox, relay and workstations: seconds

GONE_BOUND_S = 1.0


async def test_a_deleted_observation_disappears_from_every_workstation_within_a_second(
    seeded_data_dir: Path, tmp_path: Path
) -> None:
    async with fault_bed(seeded_data_dir, tmp_path, stations=2) as bed:
        report_ref = await post_marker(bed, PATIENTS[0])
        report = bed.sandbox.store.read("DiagnosticReport", report_ref.split("/")[1])
        obs_ref = report["result"][0]["reference"]
        await eventually(lambda: all(obs_ref in s.ws.store and report_ref in s.ws.store
                                     for s in bed.stations), 5.0, "the result on screen")
        await bed.settle()
        started = time.monotonic()
        # Deleted on the server (no clinician may delete a laboratory result: the write
        # policy, docs/security.md §4); the server's Subscriptions carry it as any change.
        bed.sandbox.store.delete("Observation", obs_ref.split("/")[1])
        took = await eventually(lambda: all(obs_ref not in s.ws.store for s in bed.stations),
                                5.0, "the deleted result gone from every workstation")
        assert time.monotonic() - started < GONE_BOUND_S, f"took {took:.2f} s"
        for station in bed.stations:
            deletes = [e for e in station.metrics.of("poke_received")
                       if e["ref"] == obs_ref and e["type"] == RESOURCE_DELETED]
            assert [e["versionId"] for e in deletes] == ["2"], deletes
            assert report_ref in station.ws.store  # the rest of the panel stays
            assert all(obs_ref not in station.ws.queries.state(k).refs for k in bed.keys)
        await bed.wait_converged(5.0, "convergence after the delete")
