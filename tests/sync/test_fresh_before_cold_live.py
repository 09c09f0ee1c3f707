"""Fresh beats cold, live: a vital sign for a patient already on screen is pulled while the
start-up queue of cold first loads is still draining, not after it (sync/pull.py, the pull
gate's order; the exact order is asserted on fake time in tests/sync/test_pull_loop.py)."""

from __future__ import annotations

import httpx
import pytest

from tests.sync.test_sync_live import loaded, workstation
from tests.waiting import wait_for as eventually
from wardsync.auth.session import Session
from wardsync.core.connection_status import ConnectionState
from wardsync.core.queries import PatientLabs, PatientRecord, PatientVitals, QueryKey
from wardsync.sandbox.server import Sandbox
from wardsync.sandbox.ward.observations import VitalSigns

pytestmark = pytest.mark.slow  # a real sandbox and workstation


async def test_a_loaded_patients_vital_sign_overtakes_queued_cold_loads(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    # One pull slot: every cold load queues, as on a loaded machine at start-up.
    async with workstation(sandbox, clinician, http, max_concurrent_pulls=1) as (ws, _):
        seen = PatientVitals("pat-01")
        ws.open(seen)
        await eventually(lambda: loaded(ws, seen) and ws.status.state is ConnectionState.LIVE,
                         what="the first patient's vitals, live")
        patients = [f"pat-{n:02d}" for n in range(2, 25)]
        cold: list[QueryKey] = [k for p in patients for k in (PatientRecord(p), PatientLabs(p))]
        for key in cold:
            ws.open(key)
        held_before = {f"Observation/{o['id']}" for o in ws.store.of_type("Observation")}
        await sandbox.devices.post_vitals("pat-01", VitalSigns(
            heart_rate=131, respiratory_rate=26, spo2=91, temperature=38.9, systolic=92,
            diastolic=60))

        def arrived() -> bool:
            new = {f"Observation/{o['id']}" for o in ws.store.of_type("Observation")
                   if (o.get("subject") or {}).get("reference") == "Patient/pat-01"
                   and f"Observation/{o['id']}" not in held_before}
            return len(new) >= 7

        await eventually(arrived, what="the new vital signs of the loaded patient")
        still_cold = [k for k in cold if not loaded(ws, k)]
        assert len(still_cold) >= len(cold) // 2, (
            f"the loaded key waited behind the cold loads: {len(still_cold)} of {len(cold)} "
            "still loading when its vital signs arrived")
        await eventually(lambda: all(loaded(ws, k) for k in cold), what="every cold load",
                         timeout_s=120.0)
