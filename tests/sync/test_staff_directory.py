"""Staff names for presence clientIds, read from the sandbox's FHIR server (sync/staff.py):
read once, kept for the TTL, an unknown id stays unverified, and nothing else is stored."""

from __future__ import annotations

import httpx

from tests.waiting import wait_for as eventually
from wardsync.auth.session import Session
from wardsync.core.presence import ClinicianIdentity
from wardsync.core.timer import FakeTimer
from wardsync.fhir.client import FhirClient
from wardsync.sandbox.server import Sandbox
from wardsync.sync.staff import StaffDirectory


async def test_names_are_read_once_per_ttl_and_unknown_ids_stay_unverified(
        sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient) -> None:
    timer = FakeTimer()
    changes: list[None] = []
    fhir = FhirClient(sandbox.ready_info()["fhir_base"], clinician, http=http)
    directory = StaffDirectory(fhir, timer, lambda: changes.append(None), ttl_s=60.0,
                               retry_s=5.0, max_entries=2)
    try:
        assert directory.lookup("demo-nurse") is None  # not read yet: unverified
        await eventually(lambda: directory.lookup("demo-nurse") is not None,
                         what="the nurse's name read")
        assert directory.lookup("demo-nurse") == ClinicianIdentity(
            "demo-nurse", "Nurse Demo Nightingale", "Nurse")
        assert directory.reads == 1 and len(changes) == 1
        # A clientId with no Practitioner: read once, then unverified for the TTL.
        assert directory.lookup("no-such-person") is None
        await eventually(lambda: len(changes) == 2, what="the unknown id read")
        for _ in range(5):
            assert directory.lookup("no-such-person") is None
        assert directory.reads == 2
        # Not an id at all: never read.
        assert directory.lookup("has space") is None and directory.reads == 2
        # Past the TTL a name is read again (kept meanwhile: no flicker to unverified).
        await timer.advance(61.0)
        assert directory.lookup("demo-nurse") is not None
        await eventually(lambda: directory.reads == 3, what="the name read again")
        # At most `max_entries` names are kept: the oldest read goes first (the unknown id,
        # not the nurse read again just now).
        directory.lookup("demo-clinician")
        await eventually(lambda: directory.lookup("demo-clinician") is not None,
                         what="the doctor's name read")
        assert directory.lookup("demo-nurse") is not None and directory.reads == 4
        assert directory.lookup("no-such-person") is None
        await eventually(lambda: directory.reads == 5, what="the evicted id read again")
    finally:
        await directory.aclose()
        await fhir.aclose()
