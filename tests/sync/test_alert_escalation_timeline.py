"""Escalation of an unacknowledged critical result on fake time, with exact instants.

A real workstation and alert centre on a `FakeTimer` against the real sandbox (FHIR server,
hub, lab client). Escalation is due `escalation_after_s` after the report's release (the
server's `meta.lastUpdated`, wall clock), so the timer's wall clock starts at the real time;
the jitter is fixed, so the write happens exactly due + jitter, and a failed write is retried
exactly `escalation_retry_s` (+ jitter) after it failed. Escalating exactly once across
workstations stays a live test (tests/sync/test_alerts_live.py).
"""

from __future__ import annotations

import asyncio
import math
import time

import httpx

from tests.sync.test_sync_live import CRITICAL_LYTES
from tests.waiting import wait_for as eventually
from wardsync.auth.session import Session
from wardsync.core import codes
from wardsync.core.alerts import AlertId, AlertStatus
from wardsync.core.connection_status import ConnectionState
from wardsync.core.metrics import MemoryMetrics
from wardsync.core.timer import FakeTimer
from wardsync.sandbox.server import Sandbox
from wardsync.sync.alerts import AlertCenter, Clinician
from wardsync.sync.workstation import Workstation, WorkstationConfig

AFTER_S = 60.0
JITTER_S = 0.7  # the jitter drawn from [0, 1.0] (distinct from every periodic wait)
RETRY_S = 30.0


async def test_escalation_is_written_at_due_plus_jitter_and_retried_after_a_failure(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    info = sandbox.ready_info()
    timer = FakeTimer(wall=float(math.floor(time.time())))
    cfg = WorkstationConfig(fhir_base=info["fhir_base"], ward=info["ward"],
                            realtime_endpoint=info["ably_endpoint"],
                            realtime_token_url=info["ably_token_url"], pull_debounce_s=0.0)
    ws = Workstation(cfg, clinician, metrics=MemoryMetrics(), http=http, timer=timer,
                     schedule=asyncio.get_running_loop().call_soon)
    await ws.start()
    center = AlertCenter(
        ws, clinician=Clinician.from_fhir_user(clinician.tokens.fhir_user, "Dr Demo"),
        workstation_name="ws-1", escalation_after_s=AFTER_S, escalation_jitter_s=1.0,
        jitter=lambda top: JITTER_S * top, escalation_retry_s=RETRY_S)
    await center.start()
    try:
        await eventually(lambda: ws.status.state is ConnectionState.LIVE
                         and center.feed_key is not None
                         and ws.queries.state(center.feed_key).status == "ok",
                         what="live, alerts rebuilt")
        report, _ = await sandbox.lab.post_panel(
            "pat-04", codes.ELECTROLYTES_PANEL.code, CRITICAL_LYTES)
        alert_id = AlertId(f"DiagnosticReport/{report['id']}", report["meta"]["versionId"])
        await eventually(lambda: center.get(alert_id) is not None, what="the alert raised")
        record = center.get(alert_id)
        assert record is not None
        # Monotonic fake time at which the escalation window ends (wall = offset + monotonic).
        due = record.alert.escalation_due(AFTER_S) - (timer.wall() - timer.monotonic())
        assert due > timer.monotonic()

        def status() -> AlertStatus:
            held = center.get(alert_id)
            assert held is not None
            return held.status

        async def advance_to(t: float) -> None:
            await timer.advance(t - timer.monotonic())

        await advance_to(due - 0.01)
        assert status() is AlertStatus.OPEN and timer.requested.count(JITTER_S) == 0
        sandbox.faults.fail(503, for_s=3600)
        await advance_to(due)  # due: the jitter wait starts
        assert timer.requested.count(JITTER_S) == 1
        await advance_to(due + JITTER_S - 0.01)
        assert status() is AlertStatus.OPEN and not center.escalation_problems
        await advance_to(due + JITTER_S)  # the write is sent, and refused
        failed_at = timer.monotonic()
        await eventually(lambda: alert_id in center.escalation_problems,
                         what="the failed escalation shown")
        assert status() is AlertStatus.OPEN
        sandbox.faults.clear()

        await advance_to(failed_at + RETRY_S - 0.01)
        assert status() is AlertStatus.OPEN and timer.requested.count(JITTER_S) == 1
        await advance_to(failed_at + RETRY_S)  # the retry is due: jitter again, then the write
        assert timer.requested.count(JITTER_S) == 2
        await advance_to(failed_at + RETRY_S + JITTER_S - 0.01)
        assert status() is AlertStatus.OPEN
        await advance_to(failed_at + RETRY_S + JITTER_S)
        await eventually(lambda: status() is AlertStatus.ESCALATED, what="escalated on retry")
        assert alert_id not in center.escalation_problems
        assert center.escalations_written == 1
    finally:
        await center.aclose()
        await ws.aclose()
