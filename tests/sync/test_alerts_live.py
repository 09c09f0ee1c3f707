"""Critical-result alerts end to end: the real sandbox (FHIR server, hub, lab client), the real
ably SDK and httpx, and two workstations signed in separately (demo.clinician, demo.nurse),
each with its own Workstation + AlertCenter stack. The escalation timeline (due time, jitter,
retry after a failed write) is asserted on fake time in
tests/sync/test_alert_escalation_timeline.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.sync.test_sync_live import CRITICAL_LYTES, NORMAL_LYTES, eventually, workstation
from wardsync.auth.session import Session
from wardsync.core import codes
from wardsync.core.alerts import (
    ACK_CODE,
    ALERT_CODE_SYSTEM,
    ESCALATION_CODE,
    AlertId,
    AlertStatus,
    escalation_resource,
    escalation_task_id,
)
from wardsync.core.connection_status import ConnectionState
from wardsync.core.metrics import MemoryMetrics
from wardsync.core.queries import PatientLabs
from wardsync.sandbox.server import Sandbox
from wardsync.sync.alerts import (
    AcknowledgementFailed,
    AlertCenter,
    AlertNotOpen,
    Clinician,
    ReadBack,
    ReadBackMismatch,
)
from wardsync.sync.workstation import Workstation

PATIENT = "pat-04"
BED = "Bed 04"


@contextlib.asynccontextmanager
async def station(
    sandbox: Sandbox, session: Session, http: httpx.AsyncClient, name: str,
    **alert_options: Any,
) -> AsyncIterator[tuple[Workstation, AlertCenter, MemoryMetrics]]:
    """One workstation: its sync stack and its alert center, started and live."""
    async with workstation(sandbox, session, http) as (ws, metrics):
        clinician = Clinician.from_fhir_user(session.tokens.fhir_user,
                                             session.user_display_name)
        center = AlertCenter(ws, clinician=clinician, workstation_name=name, **alert_options)
        await center.start()
        try:
            await eventually(lambda: ws.status.state is ConnectionState.LIVE, what="live")
            await eventually(lambda: center.feed_key is not None
                             and ws.queries.state(center.feed_key).status == "ok",
                             what="alerts rebuilt from the server")
            yield ws, center, metrics
        finally:
            await center.aclose()


def raised(metrics: MemoryMetrics, alert_id: AlertId) -> int:
    return sum(1 for e in metrics.of("alert_raised")
               if (e["ref"], e["versionId"]) == (alert_id.report_ref, alert_id.version))


def alert_of(report: dict) -> AlertId:
    return AlertId(f"DiagnosticReport/{report['id']}", report["meta"]["versionId"])


def server_search(sandbox: Sandbox, rtype: str, *params: tuple[str, str]) -> list[dict]:
    assert sandbox.store is not None
    return sandbox.store.search(rtype, [*params, ("_count", "500")]).matches


async def test_critical_potassium_raises_one_alert_per_workstation(
    sandbox: Sandbox, clinician: Session, nurse: Session, http: httpx.AsyncClient
) -> None:
    async with (station(sandbox, clinician, http, "ws-doctors-office") as (ws_a, a, metrics_a),
                station(sandbox, nurse, http, "ws-nurses-station") as (ws_b, b, metrics_b)):
        report, _ = await sandbox.lab.post_panel(
            PATIENT, codes.ELECTROLYTES_PANEL.code, CRITICAL_LYTES)
        alert_id = alert_of(report)
        for center in (a, b):
            await eventually(lambda c=center: c.get(alert_id) is not None, timeout_s=5,
                             what="alert raised")
        record = a.get(alert_id)
        assert record is not None and record.status is AlertStatus.OPEN
        assert record.patient_id == PATIENT
        assert [f.text for f in record.alert.findings] == ["Potassium 6.9 mmol/L"]
        assert a.patient(PATIENT).bed == BED
        # Catch-ups (as after a reconnect) and repeated pulls must not raise it again.
        ws_a.catch_up()
        ws_b.catch_up()
        await asyncio.sleep(0.5)
        assert raised(metrics_a, alert_id) == 1 and raised(metrics_b, alert_id) == 1
        assert [r.id for r in a.active()] == [alert_id] == [r.id for r in b.active()]
        # The urgent path: the report was pulled on the urgent poke before anything routine.
        pulls = [e for e in metrics_a.of("pull_done") if e["ref"] == alert_id.report_ref]
        assert pulls and pulls[0]["urgent"] is True


async def test_acknowledging_on_one_workstation_clears_the_alert_on_the_other(
    sandbox: Sandbox, clinician: Session, nurse: Session, http: httpx.AsyncClient
) -> None:
    async with (station(sandbox, clinician, http, "ws-doctors-office") as (_, a, metrics_a),
                station(sandbox, nurse, http, "ws-nurses-station") as (_, b, metrics_b)):
        report, observations = await sandbox.lab.post_panel(
            PATIENT, codes.ELECTROLYTES_PANEL.code, CRITICAL_LYTES)
        alert_id = alert_of(report)
        await eventually(lambda: a.get(alert_id) is not None and b.get(alert_id) is not None,
                         timeout_s=5, what="alert on both workstations")

        with pytest.raises(ReadBackMismatch):  # another patient's bed
            await a.acknowledge(alert_id, ReadBack("Bed 05", value_confirmed=True))
        with pytest.raises(ReadBackMismatch):  # value not confirmed
            await a.acknowledge(alert_id, ReadBack(BED, value_confirmed=False))
        sandbox.faults.fail(503, for_s=30)
        with pytest.raises(AcknowledgementFailed) as failed:
            await a.acknowledge(alert_id, ReadBack("bed 4", value_confirmed=True))
        sandbox.faults.clear()
        assert "could not be recorded" in failed.value.user_message
        assert a.get(alert_id).status is AlertStatus.OPEN  # type: ignore[union-attr]
        assert not server_search(sandbox, "Communication", ("patient", f"Patient/{PATIENT}"))

        record = await a.acknowledge(alert_id, ReadBack("bed 4", value_confirmed=True))
        assert record.status is AlertStatus.ACKNOWLEDGED and not a.active()
        await eventually(lambda: b.get(alert_id).status is AlertStatus.ACKNOWLEDGED,  # type: ignore[union-attr]
                         timeout_s=5, what="acknowledgement reaches the other workstation")
        ack = b.get(alert_id).acknowledgement  # type: ignore[union-attr]
        assert ack is not None
        assert (ack.by_ref, ack.by_name) == ("Practitioner/demo-clinician", "Dr Demo Clinician")
        assert (ack.workstation, ack.read_back) == ("ws-doctors-office", "bed")
        with pytest.raises(AlertNotOpen, match="already acknowledged by Dr Demo Clinician"):
            await b.acknowledge(alert_id, ReadBack(BED, value_confirmed=True))

        # The audit trail is on the server: exactly one acknowledgement of this version.
        comms = server_search(sandbox, "Communication", ("patient", f"Patient/{PATIENT}"),
                              ("category", f"{ALERT_CODE_SYSTEM}|{ACK_CODE}"))
        assert len(comms) == 1
        comm = comms[0]
        assert comm["status"] == "completed"
        assert comm["sender"]["reference"] == "Practitioner/demo-clinician"
        about = [item["reference"] for item in comm["about"]]
        assert about[0] == alert_id.versioned_ref
        potassium = next(o for o in observations if "2823-3" in str(o["code"]))
        assert f"Observation/{potassium['id']}/_history/1" in about
        assert "Potassium 6.9 mmol/L" in comm["payload"][0]["contentString"]
        assert any(e["valueString"] == "ws-doctors-office" for e in comm["extension"]
                   if "valueString" in e)
        assert [e["here"] for e in metrics_a.of("alert_acknowledged")] == [True]
        assert [e["here"] for e in metrics_b.of("alert_acknowledged")] == [False]


@pytest.mark.slow
async def test_a_result_written_while_the_hub_is_down_is_raised_after_reconnect(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    async with station(sandbox, clinician, http, "ws-1") as (ws, center, metrics):
        assert sandbox.hub is not None
        await sandbox.hub.stop()
        await eventually(lambda: ws.status.state is not ConnectionState.LIVE, what="hub down")
        report, _ = await sandbox.lab.post_panel(
            PATIENT, codes.ELECTROLYTES_PANEL.code, CRITICAL_LYTES)
        alert_id = alert_of(report)
        await asyncio.sleep(0.5)
        assert center.get(alert_id) is None  # nothing can have told this workstation yet
        await sandbox.hub.start(sandbox.config.host, sandbox.hub.port)
        await eventually(lambda: center.get(alert_id) is not None, timeout_s=15,
                         what="alert raised after reconnect")
        assert raised(metrics, alert_id) == 1
        await eventually(lambda: ws.status.state is ConnectionState.LIVE, what="live again")
        await asyncio.sleep(0.5)
        assert raised(metrics, alert_id) == 1


async def test_a_restarted_app_shows_the_open_alert_again_and_not_the_acknowledged_one(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    async with station(sandbox, clinician, http, "ws-1") as (_, center, _metrics):
        open_report, _ = await sandbox.lab.post_panel(
            PATIENT, codes.ELECTROLYTES_PANEL.code, CRITICAL_LYTES)
        acked_report, _ = await sandbox.lab.post_panel(
            "pat-05", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 7.5})
        open_id, acked_id = alert_of(open_report), alert_of(acked_report)
        await eventually(lambda: center.get(open_id) is not None
                         and center.get(acked_id) is not None, timeout_s=5)
        await center.acknowledge(acked_id, ReadBack("Bed 05", value_confirmed=True))
    # The app was closed; the workstation starts again from nothing but the server.
    async with station(sandbox, clinician, http, "ws-1") as (_, center, metrics):
        await eventually(lambda: center.get(open_id) is not None, timeout_s=5,
                         what="open alert rebuilt")
        assert [r.id for r in center.active()] == [open_id]
        assert raised(metrics, open_id) == 1
        record = center.get(acked_id)
        assert record is not None and record.status is AlertStatus.ACKNOWLEDGED
        assert not record.raised and raised(metrics, acked_id) == 0


async def test_a_corrected_report_alerts_again_and_a_retracted_value_closes_the_alert(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    async with station(sandbox, clinician, http, "ws-1") as (_, center, metrics):
        report, _ = await sandbox.lab.post_panel(
            PATIENT, codes.ELECTROLYTES_PANEL.code, CRITICAL_LYTES)
        first = alert_of(report)
        await eventually(lambda: center.get(first) is not None, timeout_s=5)
        await center.acknowledge(first, ReadBack(BED, value_confirmed=True))

        corrected, _ = await sandbox.lab.correct_report(report["id"], {codes.POTASSIUM.code: 7.4})
        second = alert_of(corrected)
        assert second.version != first.version
        await eventually(lambda: center.get(second) is not None, timeout_s=5,
                         what="the correction alerts again")
        record = center.get(second)
        assert record is not None and record.status is AlertStatus.OPEN
        assert record.alert.is_correction
        assert record.alert.summary == "Potassium 7.4 mmol/L"
        assert center.get(first).status is AlertStatus.ACKNOWLEDGED  # type: ignore[union-attr]

        retracted, _ = await sandbox.lab.correct_report(report["id"], {codes.POTASSIUM.code: 4.4})
        await eventually(lambda: center.get(second).status is AlertStatus.SUPERSEDED,  # type: ignore[union-attr]
                         timeout_s=5, what="the open alert is superseded")
        assert center.get(second).superseded_by == retracted["meta"]["versionId"]  # type: ignore[union-attr]
        assert center.get(alert_of(retracted)) is None
        assert not center.active()
        assert Counter(e["versionId"] for e in metrics.of("alert_raised")
                       if e["ref"] == first.report_ref) == {first.version: 1, second.version: 1}


async def test_normal_and_merely_abnormal_results_raise_no_alert(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    async with station(sandbox, clinician, http, "ws-1") as (ws, center, metrics):
        normal, _ = await sandbox.lab.post_panel(
            PATIENT, codes.ELECTROLYTES_PANEL.code, NORMAL_LYTES)
        abnormal, _ = await sandbox.lab.post_panel(  # high, but under the 6.2 critical limit
            PATIENT, codes.ELECTROLYTES_PANEL.code, {**NORMAL_LYTES, codes.POTASSIUM.code: 5.8})
        refs = [f"DiagnosticReport/{r['id']}" for r in (normal, abnormal)]
        await eventually(lambda: all(r in ws.store for r in refs), timeout_s=5,
                         what="both reports pulled")
        await asyncio.sleep(0.3)
        assert not center.ledger.records() and not metrics.of("alert_raised")


async def test_an_unacknowledged_alert_escalates_exactly_once_across_workstations(
    sandbox: Sandbox, clinician: Session, nurse: Session, http: httpx.AsyncClient
) -> None:
    options = {"escalation_after_s": 1.5, "escalation_jitter_s": 0.05}
    async with (station(sandbox, clinician, http, "ws-a", **options) as (_, a, metrics_a),
                station(sandbox, nurse, http, "ws-b", **options) as (_, b, metrics_b)):
        report, _ = await sandbox.lab.post_panel(
            PATIENT, codes.ELECTROLYTES_PANEL.code, CRITICAL_LYTES)
        alert_id = alert_of(report)
        await eventually(lambda: a.get(alert_id) is not None and b.get(alert_id) is not None,
                         timeout_s=5)
        assert a.get(alert_id).status is AlertStatus.OPEN  # type: ignore[union-attr]
        for center in (a, b):
            await eventually(
                lambda c=center: c.get(alert_id).status is AlertStatus.ESCALATED,  # type: ignore[union-attr]
                timeout_s=8, what="escalated on every workstation")
        await asyncio.sleep(1.0)  # any late or repeated escalation would show by now

        tasks = server_search(sandbox, "Task", ("patient", f"Patient/{PATIENT}"),
                              ("code", f"{ALERT_CODE_SYSTEM}|{ESCALATION_CODE}"))
        assert [t["id"] for t in tasks] == [escalation_task_id(alert_id)]
        assert sandbox.store is not None
        history = sandbox.store.history_entries("Task", tasks[0]["id"])
        assert [h.change.interaction for h in history].count("create") == 1
        contents = {str({k: v for k, v in h.change.resource.items() if k != "meta"})
                    for h in history}
        assert len(contents) == 1, "concurrent escalations wrote different content"
        assert tasks[0]["focus"]["reference"] == alert_id.versioned_ref
        assert tasks[0]["priority"] == "stat" and tasks[0]["status"] == "requested"
        assert a.escalations_written + b.escalations_written >= 1
        assert len(metrics_a.of("alert_escalated")) == 1 == len(metrics_b.of("alert_escalated"))

        record = await b.acknowledge(alert_id, ReadBack(BED, value_confirmed=True))
        assert record.status is AlertStatus.ACKNOWLEDGED
        comm = server_search(sandbox, "Communication", ("patient", f"Patient/{PATIENT}"))[0]
        assert comm["basedOn"] == [{"reference": f"Task/{escalation_task_id(alert_id)}"}]

        # The loop closes: the nurse's workstation completed the paging chain's Task through
        # the FHIR API under the write policy (an update with If-Match by a person), citing
        # the acknowledgement.
        assert b.escalations_completed == 1 and a.escalations_completed == 0
        task = sandbox.store.read("Task", escalation_task_id(alert_id))
        assert task["status"] == "completed"
        assert task["output"][0]["valueReference"] == {"reference": f"Communication/{comm['id']}"}
        history = sandbox.store.history_entries("Task", task["id"])
        assert [h.change.interaction for h in history].count("update") == 1
        # Every workstation reads the completed Task as the same escalation, still closed.
        await eventually(lambda: a.get(alert_id).escalation is not None  # type: ignore[union-attr]
                         and a.get(alert_id).escalation.status == "completed",  # type: ignore[union-attr]
                         timeout_s=5, what="completed Task reaches the other workstation")
        assert a.get(alert_id).status is AlertStatus.ACKNOWLEDGED  # type: ignore[union-attr]


async def test_acknowledging_completes_a_task_written_elsewhere_and_creates_none(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    async with station(sandbox, clinician, http, "ws-a") as (_, center, _metrics):
        first, _ = await sandbox.lab.post_panel(
            PATIENT, codes.ELECTROLYTES_PANEL.code, CRITICAL_LYTES)
        second, _ = await sandbox.lab.post_panel(
            "pat-05", codes.ELECTROLYTES_PANEL.code, CRITICAL_LYTES)
        ids = alert_of(first), alert_of(second)
        await eventually(lambda: all(center.get(i) is not None for i in ids), timeout_s=5)
        # The relay escalated the first one server-side, moments before the read-back: the
        # workstation has not pulled that Task yet, and the paging chain has accepted it.
        assert sandbox.store is not None
        record = center.get(ids[0])
        assert record is not None
        task = escalation_resource(record.alert, after_s=900, ward_id=center.ward)
        sandbox.store.update("Task", task["id"], task | {"status": "accepted"})

        await center.acknowledge(ids[0], ReadBack(BED, value_confirmed=True))
        stored = sandbox.store.read("Task", task["id"])
        assert stored["status"] == "completed"
        assert stored["meta"]["versionId"] == "2"
        comm = server_search(sandbox, "Communication", ("patient", f"Patient/{PATIENT}"))[0]
        assert stored["output"][-1]["valueReference"]["reference"] == f"Communication/{comm['id']}"

        # An alert that never escalated has no paging work: nothing is created.
        await center.acknowledge(ids[1], ReadBack("Bed 05", value_confirmed=True))
        assert center.escalations_completed == 1
        tasks = server_search(sandbox, "Task", ("code", f"{ALERT_CODE_SYSTEM}|{ESCALATION_CODE}"))
        assert [t["id"] for t in tasks] == [task["id"]]

        # The relay checked for an acknowledgement just before it was stored and writes its
        # Task just after: the acknowledging workstation completes that late Task as well.
        late_record = center.get(ids[1])
        assert late_record is not None
        late = escalation_resource(late_record.alert, after_s=900, ward_id=center.ward)
        sandbox.store.update("Task", late["id"], late)
        # The server stores the completion before the workstation has read its answer.
        await eventually(
            lambda: (sandbox.store.read("Task", late["id"])["status"] == "completed"  # type: ignore[union-attr]
                     and center.escalations_completed == 2),
            timeout_s=5, what="late escalation Task completed")
        assert sandbox.store.read("Task", late["id"])["meta"]["versionId"] == "2"


async def test_a_critical_poke_for_a_patient_outside_the_census_is_still_raised(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    async with station(sandbox, clinician, http, "ws-1") as (ws, center, metrics):
        # A patient with no stay on this ward yet (transfer in progress): the backend still
        # announces the result on this ward's channel.
        # Registered by the hospital's patient administration (a clinician's token may not
        # create patients, docs/security.md §4).
        newcomer = sandbox.store.create({
            "resourceType": "Patient", "name": [{"family": "Zzexample", "given": ["Transfer"]}]})
        assert newcomer["id"] not in center.feed_key.patient_ids  # type: ignore[union-attr]
        report, _ = await sandbox.lab.post_panel(
            newcomer["id"], codes.LACTATE_PANEL.code, {codes.LACTATE.code: 6.5})
        alert_id = alert_of(report)
        await eventually(lambda: center.get(alert_id) is not None, timeout_s=5,
                         what="alert for the poked patient")
        assert raised(metrics, alert_id) == 1
        # From now on the ward query covers the patient, so acknowledgements reach here too.
        assert newcomer["id"] in center.feed_key.patient_ids  # type: ignore[union-attr]
        await eventually(lambda: not any(k.label().startswith("report ")
                                         for k in ws.queries.keys),
                         what="the report's own query released once pulled")


async def test_reports_older_than_the_rebuild_lookback_do_not_alert(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    old, _ = await sandbox.lab.post_panel(PATIENT, codes.ELECTROLYTES_PANEL.code,
                                          CRITICAL_LYTES)
    await asyncio.sleep(1.2)
    async with station(sandbox, clinician, http, "ws-1", lookback_s=1.0) as (ws, center, _):
        # The ward query does not even fetch it; a chart that does must not raise it either.
        ws.open(PatientLabs(PATIENT))
        await eventually(lambda: f"DiagnosticReport/{old['id']}" in ws.store,
                         what="the old report pulled by the patient's labs")
        new, _ = await sandbox.lab.post_panel("pat-05", codes.ELECTROLYTES_PANEL.code,
                                              CRITICAL_LYTES)
        await eventually(lambda: center.get(alert_of(new)) is not None, timeout_s=5)
        assert center.get(alert_of(old)) is None
        assert [r.id for r in center.active()] == [alert_of(new)]
