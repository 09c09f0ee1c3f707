"""Record access lands on the server as an AuditEvent naming who, where and which patient.

Time is a `FakeTimer`: the coalescing window and the retry delays are asserted exactly, while
the writes go over real HTTP to the sandbox's FHIR server.
"""

from __future__ import annotations

import asyncio

import httpx
from fhir.resources.R4B.auditevent import AuditEvent

from tests.waiting import wait_for as eventually
from wardsync.auth.session import Session
from wardsync.core.timer import FakeTimer
from wardsync.fhir.client import FhirClient
from wardsync.sandbox.server import Sandbox
from wardsync.sync.audit import COALESCE_S, RETRY_DELAYS_S, AuditTrail


async def test_viewing_a_record_writes_one_audit_event(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    timer = FakeTimer(wall=1_767_225_600.0)  # 2026-01-01T00:00:00Z
    fhir = FhirClient(sandbox.fhir_base, clinician, http=http)
    trail = AuditTrail(fhir, practitioner_id="demo-clinician", workstation_id="WS-7A-01",
                       app_version="test", timer=timer)
    assert trail.record_access("pat-02")
    await timer.advance(COALESCE_S - 1)
    assert not trail.record_access("pat-02")  # same patient within the window: one access
    await timer.advance(1)
    assert trail.record_access("pat-02")  # exactly COALESCE_S later: a new access
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
    # `recorded` is the timer's wall time at the view, not the time of the (later) write.
    assert sorted(e["recorded"][:19] for e in page.matches) == [
        "2026-01-01T00:00:00", "2026-01-01T00:05:00"]
    other = sandbox.store.search("AuditEvent", [("entity", "Patient/pat-03")])
    assert other.total == 1


async def test_a_failing_audit_write_is_retried_after_each_delay_then_counted(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    timer = FakeTimer()
    fhir = FhirClient(sandbox.fhir_base, clinician, http=http)
    trail = AuditTrail(fhir, practitioner_id="demo-clinician", workstation_id="WS",
                       app_version="test", timer=timer)
    sandbox.faults.fail(status=503, for_s=3600)
    assert trail.record_access("pat-04")  # never raises into the view
    for delay in RETRY_DELAYS_S:
        # The attempt goes over real HTTP; then the trail waits exactly `delay` of its time.
        await eventually(lambda d=delay: timer.pending() == [d], timeout_s=10.0,
                         what=f"a retry {delay} s after the failure")
        await timer.advance(delay - 0.001)
        assert timer.pending() == [0.001], "no retry before its delay"
        await timer.advance(0.001)
    await eventually(lambda: trail.failed == 1, timeout_s=10.0, what="the last attempt")
    assert trail.written == 0
    assert timer.requested == list(RETRY_DELAYS_S)
    assert timer.monotonic() == sum(RETRY_DELAYS_S)
    await trail.flush()
    sandbox.faults.clear()


async def test_flush_gives_up_on_a_write_still_retrying_after_its_timeout(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    timer = FakeTimer()
    fhir = FhirClient(sandbox.fhir_base, clinician, http=http)
    trail = AuditTrail(fhir, practitioner_id="demo-clinician", workstation_id="WS",
                       app_version="test", timer=timer)
    sandbox.faults.fail(status=503, for_s=3600)
    trail.record_access("pat-05")
    await eventually(lambda: timer.pending() == [RETRY_DELAYS_S[0]], timeout_s=10.0,
                     what="the first retry waiting")
    flushing = asyncio.ensure_future(trail.flush(timeout_s=5.0))
    await timer.advance(4.999)
    assert not flushing.done()
    await timer.advance(0.001)
    await flushing
    assert trail.written == 0 and trail.failed == 0  # cancelled, not counted as failed
    sandbox.faults.clear()
