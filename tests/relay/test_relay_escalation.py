"""Server-side escalation (relay/escalation.py): the timeline on fake time, the checks and the
Task write against the real sandbox FHIR server with the relay's own client credentials."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.relay.relay_fixtures import relay_config, running_relay, scrape
from tests.sync.test_sync_live import CRITICAL_LYTES, NORMAL_LYTES
from tests.waiting import wait_for
from wardsync.core import alerts as rules
from wardsync.core import codes
from wardsync.core.alerts import AlertId, AlertPatient, AlertRecord, AlertStatus, CriticalAlert
from wardsync.core.timer import FakeTimer
from wardsync.fhir.client import FhirClient
from wardsync.fhir.client_credentials import ClientCredentials
from wardsync.relay import escalation
from wardsync.relay.backend_auth import discover
from wardsync.relay.escalation import EscalationStore, PendingEscalation, ServerEscalation
from wardsync.relay.fhir_access import RelayFhir
from wardsync.relay.metrics import RelayMetrics
from wardsync.sandbox.server import Sandbox

PATIENT = "pat-04"
AFTER_S = 900.0  # the site default: 15 min


@dataclass
class Rig:
    """A ServerEscalation on fake time, reading and writing the real sandbox over HTTP."""

    sandbox: Sandbox
    timer: FakeTimer
    esc: ServerEscalation
    store: EscalationStore
    fhir: RelayFhir
    metrics: RelayMetrics

    async def critical_report(self, values: dict[str, float] = CRITICAL_LYTES
                              ) -> tuple[dict[str, Any], CriticalAlert | None]:
        report, observations = await self.sandbox.lab.post_panel(
            PATIENT, codes.ELECTROLYTES_PANEL.code, values)
        results = {f"Observation/{o['id']}": o for o in observations}
        return report, self.esc.watch(report, results, self.sandbox.ward)

    def tasks(self) -> list[dict[str, Any]]:
        assert self.sandbox.store is not None
        return self.sandbox.store.search("Task", [
            ("patient", f"Patient/{PATIENT}"),
            ("code", f"{rules.ALERT_CODE_SYSTEM}|{rules.ESCALATION_CODE}")]).matches

    async def settled(self, alert_id: AlertId) -> str:
        """The check's outcome once its (real) HTTP round trips are done."""
        await wait_for(lambda: self.store.outcome(alert_id) is not None, 10, "check done")
        outcome = self.store.outcome(alert_id)
        assert outcome is not None
        return outcome


def _rig(sandbox: Sandbox, fhir: RelayFhir, data: Path, **options: Any) -> Rig:
    # Wall time starts at the real clock: the window starts at the server's meta.lastUpdated.
    timer = FakeTimer(wall=time.time())
    store = EscalationStore(data / "relay.sqlite3")
    metrics = RelayMetrics()
    esc = ServerEscalation(fhir=fhir, store=store, timer=timer, metrics=metrics,
                           after_s=options.get("after_s", AFTER_S),
                           retry_s=options.get("retry_s", 30.0))
    return Rig(sandbox, timer, esc, store, fhir, metrics)


@pytest.fixture
async def relay_fhir(ward: Sandbox) -> AsyncIterator[RelayFhir]:
    """The relay's FHIR access with the sandbox's `wardsync-relay` client credentials."""
    info = ward.ready_info()
    async with httpx.AsyncClient(timeout=10.0) as http:
        endpoints = await discover(http, info["fhir_base"])
        tokens = ClientCredentials(
            token_url=endpoints.token_endpoint, client_id=info["relay_client"]["client_id"],
            client_secret=info["relay_client"]["client_secret"], http=http, scope=None)
        client = FhirClient(info["fhir_base"], tokens, http=http, require_tls=False)
        yield RelayFhir(client)


@pytest.fixture
async def rig(ward: Sandbox, relay_fhir: RelayFhir, tmp_path: Path) -> AsyncIterator[Rig]:
    r = _rig(ward, relay_fhir, tmp_path)
    r.esc.start()
    yield r
    await r.esc.aclose()
    r.store.close()


async def test_an_unacknowledged_critical_result_escalates_at_the_window(rig: Rig) -> None:
    report, alert = await rig.critical_report()
    assert alert is not None
    due_in = alert.escalation_due(AFTER_S) - rig.timer.wall()
    assert rig.timer.pending() == [pytest.approx(due_in, abs=1e-6)]
    assert abs(due_in - AFTER_S) < 10.0  # written moments after the rig started
    await rig.timer.advance(due_in - 1.0)
    assert rig.store.outcome(alert.id) is None and not rig.tasks()
    await rig.timer.advance(1.0)
    assert await rig.settled(alert.id) == escalation.ESCALATED
    tasks = rig.tasks()
    # The very Task the desktop writes for this alert (same id, same content).
    expected = rules.escalation_resource(alert, after_s=AFTER_S, ward_id=rig.sandbox.ward)
    assert [t["id"] for t in tasks] == [rules.escalation_task_id(alert.id)]
    assert {k: v for k, v in tasks[0].items() if k != "meta"} == expected
    assert rig.esc.armed == 0 and rig.timer.pending() == []
    # Watching the same version again (a re-announcement) schedules nothing.
    results = {r["reference"]: {} for r in report["result"]}
    rig.esc.watch(report, results, rig.sandbox.ward)
    assert rig.timer.pending() == []


async def test_an_acknowledged_result_is_not_escalated(rig: Rig) -> None:
    _, alert = await rig.critical_report()
    assert alert is not None
    patient = AlertPatient(PATIENT, "Test", "MRN1", "Bed 04")
    ack = rules.acknowledgement_resource(
        AlertRecord(alert, AlertStatus.OPEN, raised=True), patient,
        practitioner_ref="Practitioner/demo-nurse", practitioner_name="Nurse",
        workstation="ws-1", at=datetime.now(UTC), read_back="bed")
    assert rig.sandbox.store is not None
    rig.sandbox.store.create(ack)
    await rig.timer.advance(AFTER_S + 10.0)
    assert await rig.settled(alert.id) == escalation.ACKNOWLEDGED
    assert rig.tasks() == []


async def test_a_newer_report_version_supersedes_the_alert(rig: Rig) -> None:
    report, alert = await rig.critical_report()
    assert alert is not None
    assert rig.sandbox.store is not None
    corrected = {k: v for k, v in report.items() if k != "meta"}
    corrected["status"] = "corrected"
    rig.sandbox.store.update("DiagnosticReport", report["id"], corrected)
    await rig.timer.advance(AFTER_S + 10.0)
    assert await rig.settled(alert.id) == escalation.SUPERSEDED
    assert rig.tasks() == []


async def test_a_normal_result_is_not_watched(rig: Rig) -> None:
    _, alert = await rig.critical_report(NORMAL_LYTES)
    assert alert is None and rig.timer.pending() == []


async def test_a_task_already_written_by_a_workstation_is_not_written_again(rig: Rig) -> None:
    _, alert = await rig.critical_report()
    assert alert is not None
    assert rig.sandbox.store is not None
    rig.sandbox.store.update(
        "Task", rules.escalation_task_id(alert.id),
        rules.escalation_resource(alert, after_s=AFTER_S, ward_id=rig.sandbox.ward))
    await rig.timer.advance(AFTER_S + 10.0)
    assert await rig.settled(alert.id) == escalation.ALREADY_ESCALATED
    history = rig.sandbox.store.history_entries("Task", rules.escalation_task_id(alert.id))
    assert len(history) == 1


async def test_a_failed_check_is_retried_and_pending_ones_survive_a_restart(
    ward: Sandbox, relay_fhir: RelayFhir, tmp_path: Path
) -> None:
    first = _rig(ward, relay_fhir, tmp_path, retry_s=30.0)
    first.esc.start()
    _, alert = await first.critical_report()
    assert alert is not None
    # The relay stops before the window ends: the pending escalation is kept on disk.
    await first.esc.aclose()
    first.store.close()

    second = _rig(ward, relay_fhir, tmp_path, retry_s=30.0)
    second.esc.start()
    try:
        assert second.esc.armed == 1
        due_in = alert.escalation_due(AFTER_S) - second.timer.wall()
        assert second.timer.pending() == [pytest.approx(due_in, abs=1e-6)]
        ward.faults.fail(503, for_s=60)
        await second.timer.advance(due_in)
        await wait_for(lambda: second.esc.armed == 1 and second.timer.pending() == [30.0], 10,
                       "retry armed")
        assert second.store.outcome(alert.id) is None and second.tasks() == []
        ward.faults.clear()
        await second.timer.advance(30.0)
        assert await second.settled(alert.id) == escalation.ESCALATED
        assert len(second.tasks()) == 1
        checks = second.esc.outcomes
        assert checks.labels(escalation.RETRY)._value.get() == 1
    finally:
        await second.esc.aclose()
        second.store.close()


async def test_the_relay_escalates_what_it_announced(ward: Sandbox, tmp_path: Path) -> None:
    """End to end: lab result → the relay's poll → critical poke → Task at the window."""
    config = relay_config(ward, tmp_path, tmp_path / "relay")
    config.alerts.escalation_after_min = 1.5 / 60.0
    async with running_relay(config) as relay:
        report, _ = await ward.lab.post_panel(PATIENT, codes.ELECTROLYTES_PANEL.code,
                                             CRITICAL_LYTES)
        alert_id = AlertId(f"DiagnosticReport/{report['id']}", report["meta"]["versionId"])
        assert ward.store is not None
        store = ward.store

        def escalated() -> bool:
            return bool(store.search("Task", [("_id", rules.escalation_task_id(alert_id))])
                        .matches)

        await wait_for(escalated, 15, "escalation Task written by the relay")
        async with httpx.AsyncClient() as http:
            assert await scrape(http, relay.ready_info()["metrics_url"],
                                "wardsync_relay_escalation_checks_total",
                                outcome="escalated") == 1


def test_the_pending_table_keeps_one_row_per_report_version(tmp_path: Path) -> None:
    store = EscalationStore(tmp_path / "relay.sqlite3")
    item = PendingEscalation(AlertId("DiagnosticReport/r1", "2"), "p1", "w1", 1000.0)
    assert store.add(item) is True
    assert store.add(item) is False
    assert store.pending() == [item]
    store.finish(item.alert_id, escalation.ACKNOWLEDGED)
    assert store.pending() == [] and store.outcome(item.alert_id) == escalation.ACKNOWLEDGED
    store.close()


def test_the_escalation_window_is_configured_like_the_desktops() -> None:
    from wardsync.relay.config import RelayConfig, load

    assert RelayConfig().alerts.escalation_after_min * 60.0 == rules.DEFAULT_ESCALATION_AFTER_S
    config = load(config_file=None, env={
        "WARDSYNC_RELAY_ALERTS_ESCALATION_AFTER_MIN": "20",
        "WARDSYNC_RELAY_ALERTS_ESCALATE": "false"})
    assert config.alerts.escalation_after_min == 20.0 and config.alerts.escalate is False
    config.alerts.escalation_after_min = 90.0
    assert "alerts.escalation_after_min must be in [0, 60] (minutes)" in config.validate(env={})
