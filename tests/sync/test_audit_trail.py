"""Record access lands on the server as an AuditEvent naming who, where and which patient."""

from __future__ import annotations

import httpx
from fhir.resources.R4B.auditevent import AuditEvent

from wardsync.auth.session import Session
from wardsync.fhir.client import FhirClient
from wardsync.sandbox.server import Sandbox
from wardsync.sync.audit import AuditTrail


async def test_viewing_a_record_writes_one_audit_event(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    now = [0.0]
    fhir = FhirClient(sandbox.fhir_base, clinician, http=http)
    trail = AuditTrail(fhir, practitioner_id="demo-clinician", workstation_id="WS-7A-01",
                       app_version="test", monotonic=lambda: now[0])
    assert trail.record_access("pat-02")
    assert not trail.record_access("pat-02")  # same patient within the window: one access
    now[0] += 301
    assert trail.record_access("pat-02")
    assert trail.record_access("pat-03")
    await trail.flush()
    assert trail.written == 3 and trail.failed == 0

    page = sandbox.store.search("AuditEvent", [("entity", "Patient/pat-02"), ("_count", "50")])
    assert page.total == 2
    event = page.matches[0]
    AuditEvent.model_validate(event)  # a valid R4 resource
    assert event["agent"][0]["who"]["reference"] == "Practitioner/demo-clinician"
    assert event["source"]["site"] == "WS-7A-01"
    assert event["action"] == "R"
    other = sandbox.store.search("AuditEvent", [("entity", "Patient/pat-03")])
    assert other.total == 1


async def test_a_failing_audit_write_never_raises_into_the_view(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    async def no_wait(_: float) -> None:
        return None

    fhir = FhirClient(sandbox.fhir_base, clinician, http=http)
    trail = AuditTrail(fhir, practitioner_id="demo-clinician", workstation_id="WS",
                       app_version="test", sleep=no_wait)
    sandbox.faults.fail(status=503, for_s=60)
    assert trail.record_access("pat-04")
    await trail.flush()
    assert trail.written == 0 and trail.failed == 1
    sandbox.faults.clear()
