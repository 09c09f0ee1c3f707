"""The desktop's alert center and the relay escalate the same unacknowledged critical result
at the same moment: one escalation Task, created once, with one content."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.relay.relay_fixtures import relay_config, running_relay
from tests.sandbox_fixtures import demo_sign_in
from tests.sync.test_alerts_live import PATIENT, alert_of, server_search, station
from tests.sync.test_sync_live import CRITICAL_LYTES
from tests.waiting import wait_for
from wardsync.core import codes
from wardsync.core.alerts import (
    ALERT_CODE_SYSTEM,
    ESCALATION_CODE,
    AlertStatus,
    escalation_task_id,
)
from wardsync.relay import escalation
from wardsync.sandbox.server import Sandbox

WINDOW_S = 1.5


async def test_desktop_and_relay_escalations_make_one_task(ward: Sandbox, tmp_path: Path,
                                                         http: httpx.AsyncClient) -> None:
    config = relay_config(ward, tmp_path, tmp_path / "relay")
    config.alerts.escalation_after_min = WINDOW_S / 60.0
    session = await demo_sign_in(ward, http)
    try:
        async with (running_relay(config) as relay,
                    station(ward, session, http, "ws-a", escalation_after_s=WINDOW_S,
                            escalation_jitter_s=0.0) as (_, center, metrics)):
            assert relay.escalation is not None
            report, _ = await ward.lab.post_panel(
                PATIENT, codes.ELECTROLYTES_PANEL.code, CRITICAL_LYTES)
            alert_id = alert_of(report)
            await wait_for(lambda: center.get(alert_id) is not None, 5, "alert raised")
            esc = relay.escalation
            await wait_for(lambda: esc.outcome(alert_id) is not None, 10,
                           "the relay's check done")
            await wait_for(
                lambda: center.get(alert_id).status is AlertStatus.ESCALATED,  # type: ignore[union-attr]
                8, "escalated on the workstation")

            tasks = server_search(ward, "Task", ("patient", f"Patient/{PATIENT}"),
                                  ("code", f"{ALERT_CODE_SYSTEM}|{ESCALATION_CODE}"))
            assert [t["id"] for t in tasks] == [escalation_task_id(alert_id)]
            assert ward.store is not None
            history = ward.store.history_entries("Task", tasks[0]["id"])
            assert [h.change.interaction for h in history].count("create") == 1
            contents = {str({k: v for k, v in h.change.resource.items() if k != "meta"})
                        for h in history}
            assert len(contents) == 1, "desktop and relay wrote different escalation Tasks"
            assert esc.outcome(alert_id) in (escalation.ESCALATED, escalation.ALREADY_ESCALATED)
            outcomes = {o: esc.outcomes.labels(o)._value.get()
                        for o in (escalation.ESCALATED, escalation.ALREADY_ESCALATED)}
            # Whichever came first created it; a write racing it (both read "not found" in
            # the same instant) stores the very same content again, never a second Task.
            assert center.escalations_written + outcomes[escalation.ESCALATED] >= 1
            assert outcomes[escalation.ESCALATED] + outcomes[escalation.ALREADY_ESCALATED] == 1
            assert len(metrics.of("alert_escalated")) == 1
    finally:
        await session.aclose()
