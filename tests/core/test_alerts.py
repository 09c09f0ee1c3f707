"""Alert rules: which report versions alert, the state machine, escalation times, read-back and
the acknowledgement / escalation resources (built, validated as FHIR R4, read back)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wardsync.core import codes
from wardsync.core.alerts import (
    ACK_CODE,
    ALERT_CODE_SYSTEM,
    AlertChanges,
    AlertId,
    AlertLedger,
    AlertPatient,
    AlertsChanged,
    AlertStatus,
    acknowledgement_from,
    acknowledgement_resource,
    alert_patient,
    critical_alert,
    escalation_from,
    escalation_resource,
    escalation_task_id,
    read_back_match,
    version_newer,
    ward_patient_ids,
)
from wardsync.core.critical import CriticalLimit, CriticalLimits
from wardsync.core.events import is_urgent
from wardsync.fhir.validation import validate_resource

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
T0_TEXT = "2026-01-01T00:00:00+00:00"


def obs(rid: str, test: codes.Code, value: float, *, flag: str | None = None,
        version: str = "1") -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation", "id": rid, "meta": {"versionId": version},
        "status": "final",
        "code": {"coding": [{"system": codes.LOINC, "code": test.code, "display": test.display}]},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": value, "unit": test.unit, "system": codes.UCUM,
                          "code": test.unit},
    }
    if flag is not None:
        resource["interpretation"] = [{"coding": [{"system": codes.INTERPRETATION,
                                                   "code": flag}]}]
    return resource


def report(results: list[dict[str, Any]], *, status: str = "final", version: str = "1",
           updated: str = T0_TEXT, rid: str = "r1", patient: str = "p1") -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport", "id": rid,
        "meta": {"versionId": version, "lastUpdated": updated},
        "status": status,
        "code": {"coding": [{"system": codes.LOINC, "code": codes.ELECTROLYTES_PANEL.code,
                             "display": codes.ELECTROLYTES_PANEL.display}]},
        "subject": {"reference": f"Patient/{patient}"},
        "result": [{"reference": f"Observation/{o['id']}"} for o in results],
    }


def lookup(*resources: dict[str, Any]):
    held = {f"{r['resourceType']}/{r['id']}": r for r in resources}
    return held.get


# ----------------------------------------------------------------------------- detection


def test_a_critical_potassium_in_a_final_report_alerts_with_its_value() -> None:
    k = obs("o1", codes.POTASSIUM, 6.9)
    na = obs("o2", codes.SODIUM, 139.0)
    alert = critical_alert(report([k, na]), lookup(k, na))
    assert alert is not None
    assert alert.id == AlertId("DiagnosticReport/r1", "1")
    assert alert.patient_id == "p1" and alert.released_at == T0
    assert [(f.ref, f.text) for f in alert.findings] == [("Observation/o1", "Potassium 6.9 mmol/L")]
    assert alert.summary == "Potassium 6.9 mmol/L"
    assert alert.title == "Electrolytes 1998 panel - Serum or Plasma"
    assert not alert.is_correction


@pytest.mark.parametrize("status", ["final", "amended", "corrected", "appended"])
def test_released_statuses_alert(status: str) -> None:
    k = obs("o1", codes.POTASSIUM, 2.1)
    alert = critical_alert(report([k], status=status), lookup(k))
    assert alert is not None
    assert alert.is_correction is (status != "final")


@pytest.mark.parametrize("status", ["registered", "partial", "preliminary", "cancelled",
                                    "entered-in-error", "unknown"])
def test_unreleased_or_withdrawn_reports_never_alert(status: str) -> None:
    k = obs("o1", codes.POTASSIUM, 2.1)
    assert critical_alert(report([k], status=status), lookup(k)) is None


def test_a_laboratory_critical_flag_alerts_even_inside_the_site_limits() -> None:
    k = obs("o1", codes.POTASSIUM, 6.0, flag="HH")
    alert = critical_alert(report([k]), lookup(k))
    assert alert is not None and "flagged critical high" in alert.findings[0].reasons[0]


@pytest.mark.parametrize(("value", "flag"), [(4.1, None), (5.8, None), (5.8, "H"), (3.0, "L"),
                                             (4.0, "N")])
def test_normal_and_merely_abnormal_results_never_alert(value: float, flag: str | None) -> None:
    k = obs("o1", codes.POTASSIUM, value, flag=flag)
    assert critical_alert(report([k]), lookup(k)) is None


def test_results_not_held_yet_do_not_alert_until_they_arrive() -> None:
    k = obs("o1", codes.POTASSIUM, 6.9)
    assert critical_alert(report([k]), lookup()) is None
    assert critical_alert(report([k]), lookup(k)) is not None


def test_site_limits_decide() -> None:
    k = obs("o1", codes.POTASSIUM, 6.0)
    strict = CriticalLimits([CriticalLimit(codes.POTASSIUM.code, 3.0, 5.9, "mmol/L", "K+")])
    alert = critical_alert(report([k]), lookup(k), strict)
    assert alert is not None and alert.findings[0].text == "K+ 6 mmol/L"


def test_a_report_without_a_patient_or_version_does_not_alert() -> None:
    k = obs("o1", codes.POTASSIUM, 6.9)
    no_patient = report([k]) | {"subject": {"reference": "Group/g1"}}
    no_version = report([k]) | {"meta": {"lastUpdated": T0_TEXT}}
    assert critical_alert(no_patient, lookup(k)) is None
    assert critical_alert(no_version, lookup(k)) is None


# ----------------------------------------------------------------------------- ledger


def alert_v(version: str, *, rid: str = "r1", value: float = 6.9, status: str = "final",
            updated: str = T0_TEXT):
    k = obs(f"o-{rid}", codes.POTASSIUM, value)
    return critical_alert(report([k], version=version, rid=rid, status=status, updated=updated),
                          lookup(k))


def ack(alert_id: AlertId, *, ref: str = "Communication/c1", at: float = T0 + 60):
    from wardsync.core.alerts import Acknowledgement

    return Acknowledgement(alert_id, ref, "Practitioner/dr", "Dr Test", at, "ws-1", "bed")


def esc(alert_id: AlertId):
    from wardsync.core.alerts import Escalation

    return Escalation(alert_id, f"Task/{escalation_task_id(alert_id)}", T0 + 900, "requested")


def test_a_new_critical_version_is_raised_once() -> None:
    ledger = AlertLedger()
    a1 = alert_v("1")
    assert ledger.observe_report("DiagnosticReport/r1", "1", a1) == AlertChanges(raised=(a1.id,))
    assert ledger.observe_report("DiagnosticReport/r1", "1", a1) == AlertChanges()
    record = ledger.get(a1.id)
    assert record is not None and record.status is AlertStatus.OPEN and record.raised
    assert [r.id for r in ledger.active()] == [a1.id]


def test_acknowledgement_closes_exactly_that_version() -> None:
    ledger = AlertLedger()
    a1 = alert_v("1")
    ledger.observe_report("DiagnosticReport/r1", "1", a1)
    other = AlertId("DiagnosticReport/r1", "7")
    assert ledger.observe_acknowledgement(ack(other)) == AlertChanges()
    assert ledger.get(a1.id).status is AlertStatus.OPEN  # type: ignore[union-attr]
    assert ledger.observe_acknowledgement(ack(a1.id)) == AlertChanges(acknowledged=(a1.id,))
    assert ledger.observe_acknowledgement(ack(a1.id, ref="Communication/c2")) == AlertChanges()
    record = ledger.get(a1.id)
    assert record is not None and record.status is AlertStatus.ACKNOWLEDGED
    assert record.acknowledgement is not None and record.acknowledgement.ref == "Communication/c1"
    assert not ledger.active()


def test_the_earliest_acknowledgement_is_the_one_shown() -> None:
    ledger = AlertLedger()
    a1 = alert_v("1")
    ledger.observe_report("DiagnosticReport/r1", "1", a1)
    ledger.observe_acknowledgement(ack(a1.id, ref="Communication/late", at=T0 + 90))
    ledger.observe_acknowledgement(ack(a1.id, ref="Communication/early", at=T0 + 30))
    assert ledger.get(a1.id).acknowledgement.ref == "Communication/early"  # type: ignore[union-attr]


def test_an_acknowledgement_seen_before_its_report_means_it_is_never_raised() -> None:
    ledger = AlertLedger()
    a1 = alert_v("1")
    assert ledger.observe_acknowledgement(ack(a1.id)) == AlertChanges()
    assert ledger.observe_report("DiagnosticReport/r1", "1", a1) == AlertChanges()
    record = ledger.get(a1.id)
    assert record is not None and record.status is AlertStatus.ACKNOWLEDGED and not record.raised


def test_a_correction_supersedes_the_open_alert_and_alerts_again() -> None:
    ledger = AlertLedger()
    a1, a2 = alert_v("1"), alert_v("2", status="corrected")
    ledger.observe_report("DiagnosticReport/r1", "1", a1)
    changes = ledger.observe_report("DiagnosticReport/r1", "2", a2)
    assert changes == AlertChanges(raised=(a2.id,), superseded=(a1.id,))
    assert ledger.get(a1.id).superseded_by == "2"  # type: ignore[union-attr]
    assert [r.id for r in ledger.active()] == [a2.id]


def test_an_acknowledged_version_stays_acknowledged_when_corrected() -> None:
    ledger = AlertLedger()
    a1, a2 = alert_v("1"), alert_v("2", status="corrected")
    ledger.observe_report("DiagnosticReport/r1", "1", a1)
    ledger.observe_acknowledgement(ack(a1.id))
    assert ledger.observe_report("DiagnosticReport/r1", "2", a2) == AlertChanges(raised=(a2.id,))
    assert ledger.get(a1.id).status is AlertStatus.ACKNOWLEDGED  # type: ignore[union-attr]


def test_an_acknowledgement_of_a_superseded_version_is_recorded_whatever_the_order() -> None:
    a1, a2 = alert_v("1"), alert_v("2", status="corrected")
    first_correction = AlertLedger()
    first_correction.observe_report("DiagnosticReport/r1", "1", a1)
    first_correction.observe_report("DiagnosticReport/r1", "2", a2)
    assert first_correction.observe_acknowledgement(ack(a1.id)) == AlertChanges(
        acknowledged=(a1.id,))
    first_ack = AlertLedger()
    first_ack.observe_report("DiagnosticReport/r1", "1", a1)
    first_ack.observe_acknowledgement(ack(a1.id))
    first_ack.observe_report("DiagnosticReport/r1", "2", a2)
    for ledger in (first_correction, first_ack):
        record = ledger.get(a1.id)
        assert record is not None and record.status is AlertStatus.ACKNOWLEDGED
        assert [r.id for r in ledger.active()] == [a2.id]


def test_a_retraction_or_withdrawal_closes_the_open_alert_without_a_new_one() -> None:
    ledger = AlertLedger()
    a1 = alert_v("1")
    ledger.observe_report("DiagnosticReport/r1", "1", a1)
    assert ledger.observe_report("DiagnosticReport/r1", "2", None) == AlertChanges(
        superseded=(a1.id,))
    b1 = alert_v("1", rid="r2")
    ledger.observe_report("DiagnosticReport/r2", "1", b1)
    ledger.observe_report("DiagnosticReport/r2", "2", None, withdrawn=True)
    assert ledger.get(b1.id).superseded_by == "withdrawn"  # type: ignore[union-attr]
    assert not ledger.active()


def test_an_older_version_arriving_late_changes_nothing() -> None:
    ledger = AlertLedger()
    a1, a2 = alert_v("1"), alert_v("2", status="corrected")
    ledger.observe_report("DiagnosticReport/r1", "2", a2)
    assert ledger.observe_report("DiagnosticReport/r1", "1", a1) == AlertChanges()
    assert ledger.get(a1.id) is None
    assert version_newer("10", "9") and not version_newer("9", "10")


def test_the_alert_must_match_the_report_version_it_is_given_with() -> None:
    with pytest.raises(ValueError, match="not about this report version"):
        AlertLedger().observe_report("DiagnosticReport/r1", "2", alert_v("1"))


def test_escalation_is_due_after_the_window_from_the_server_release_time() -> None:
    ledger = AlertLedger()
    a1 = alert_v("1")
    a2 = alert_v("1", rid="r2", updated="2026-01-01T00:05:00+00:00")
    ledger.observe_report("DiagnosticReport/r1", "1", a1)
    ledger.observe_report("DiagnosticReport/r2", "1", a2)
    window = 15 * 60.0
    assert ledger.next_escalation_due(window) == T0 + window
    assert ledger.due_for_escalation(T0 + window - 0.001, window) == []
    assert ledger.due_for_escalation(T0 + window, window) == [a1.id]
    assert ledger.due_for_escalation(T0 + window + 300, window) == [a1.id, a2.id]
    assert ledger.observe_escalation(esc(a1.id)) == AlertChanges(escalated=(a1.id,))
    assert ledger.observe_escalation(esc(a1.id)) == AlertChanges()
    assert ledger.get(a1.id).status is AlertStatus.ESCALATED  # type: ignore[union-attr]
    assert ledger.due_for_escalation(T0 + window + 300, window) == [a2.id]
    assert ledger.next_escalation_due(window) == T0 + 300 + window
    ledger.observe_acknowledgement(ack(a2.id))
    assert ledger.next_escalation_due(window) is None  # escalated/acknowledged are not due


def test_an_escalated_alert_can_still_be_acknowledged_and_keeps_its_escalation() -> None:
    ledger = AlertLedger()
    a1 = alert_v("1")
    ledger.observe_escalation(esc(a1.id))  # found before the report: raised as escalated
    assert ledger.observe_report("DiagnosticReport/r1", "1", a1) == AlertChanges(raised=(a1.id,))
    assert ledger.get(a1.id).status is AlertStatus.ESCALATED  # type: ignore[union-attr]
    assert ledger.observe_acknowledgement(ack(a1.id)) == AlertChanges(acknowledged=(a1.id,))
    record = ledger.get(a1.id)
    assert record is not None and record.escalation is not None and not record.active


events = st.lists(
    st.tuples(st.sampled_from(["report", "ack", "esc"]), st.sampled_from(["1", "2", "3"]),
              st.booleans()),
    max_size=12,
)


@given(events)
def test_whatever_the_order_each_version_is_raised_at_most_once_and_acks_are_final(
    script: list[tuple[str, str, bool]],
) -> None:
    ledger = AlertLedger()
    raised: list[AlertId] = []
    acked: set[AlertId] = set()
    newest = "0"
    for kind, version, critical in script:
        alert_id = AlertId("DiagnosticReport/r1", version)
        if kind == "report":
            a = alert_v(version) if critical else None
            raised += ledger.observe_report("DiagnosticReport/r1", version, a).raised
            newest = max(newest, version)
        elif kind == "ack":
            ledger.observe_acknowledgement(ack(alert_id))
            acked.add(alert_id)
        else:
            ledger.observe_escalation(esc(alert_id))
    assert len(raised) == len(set(raised))
    for record in ledger.records():
        if record.id in acked:
            assert record.status is AlertStatus.ACKNOWLEDGED
        if record.active:
            assert record.id.version == newest and record.id not in acked
    assert len(ledger.active()) <= 1


def test_alert_events_are_urgent_when_something_was_raised_or_escalated() -> None:
    a = AlertId("DiagnosticReport/r1", "1")
    assert is_urgent(AlertsChanged(AlertChanges(raised=(a,))))
    assert is_urgent(AlertsChanged(AlertChanges(escalated=(a,))))
    assert not is_urgent(AlertsChanged(AlertChanges(acknowledged=(a,))))
    assert not AlertChanges() and AlertChanges(problems=(a,))


# ----------------------------------------------------------------------------- census, read-back


WARD = [
    {"resourceType": "Location", "id": "ward-1"},
    {"resourceType": "Location", "id": "bed-04", "name": "Bed 04",
     "partOf": {"reference": "Location/ward-1"},
     "physicalType": {"coding": [{"system": codes.LOCATION_PHYSICAL_TYPE, "code": "bd"}]}},
    {"resourceType": "Location", "id": "bed-x", "name": "Bed 01",
     "partOf": {"reference": "Location/other-ward"},
     "physicalType": {"coding": [{"code": "bd"}]}},
    {"resourceType": "Patient", "id": "p1",
     "name": [{"use": "official", "family": "Testpatient", "given": ["Alpha", "Beta"]}],
     "identifier": [{"system": codes.MRN_SYSTEM, "value": "SYN-0042"}]},
]
STAYS = [
    {"resourceType": "Encounter", "id": "e1", "status": "in-progress",
     "subject": {"reference": "Patient/p1"},
     "location": [{"location": {"reference": "Location/bed-04"}}]},
    {"resourceType": "Encounter", "id": "e2", "status": "in-progress",
     "subject": {"reference": "Patient/p2"},
     "location": [{"location": {"reference": "Location/ward-1"}}]},
    {"resourceType": "Encounter", "id": "e3", "status": "finished",
     "subject": {"reference": "Patient/p3"},
     "location": [{"location": {"reference": "Location/bed-04"}}]},
    {"resourceType": "Encounter", "id": "e4", "status": "in-progress",
     "subject": {"reference": "Patient/p4"},
     "location": [{"location": {"reference": "Location/bed-x"}}]},
]


def test_the_census_is_patients_in_progress_on_the_ward_or_its_beds() -> None:
    assert ward_patient_ids(STAYS, lookup(*WARD), "ward-1") == {"p1", "p2"}


def test_the_alert_patient_has_name_mrn_and_bed() -> None:
    who = alert_patient("p1", lookup(*WARD), STAYS[:1], "ward-1")
    assert who == AlertPatient("p1", "TESTPATIENT, Alpha Beta", "SYN-0042", "Bed 04")
    assert who.label == "Bed 04 · TESTPATIENT, Alpha Beta · MRN SYN-0042"
    unknown = alert_patient("p9", lookup(*WARD), [], "ward-1")
    assert (unknown.name, unknown.mrn, unknown.bed) == ("Unknown patient", "", "")


PATIENT = AlertPatient("p1", "TESTPATIENT, Alpha", "SYN-0042", "Bed 04")


@pytest.mark.parametrize(("typed", "expected"), [
    ("SYN-0042", "mrn"), ("syn0042", "mrn"), (" SYN 0042 ", "mrn"),
    ("Bed 04", "bed"), ("bed 4", "bed"), ("04", "bed"), ("4", "bed"), ("BED4", "bed"),
    ("Bed 40", None), ("14", None), ("SYN-0043", None), ("", None), ("   ", None),
    ("bed", None), ("Testpatient", None),
])
def test_read_back_accepts_the_bed_or_mrn_shown_and_nothing_else(
    typed: str, expected: str | None
) -> None:
    assert read_back_match(typed, PATIENT) == expected


def test_read_back_without_a_known_bed_needs_the_mrn() -> None:
    no_bed = AlertPatient("p1", "X", "SYN-0042", "")
    assert read_back_match("4", no_bed) is None
    assert read_back_match("SYN-0042", no_bed) == "mrn"
    assert read_back_match("x", AlertPatient("p1", "X", "", "")) is None


# ----------------------------------------------------------------------------- FHIR resources


def test_the_acknowledgement_is_a_valid_communication_that_reads_back_the_same() -> None:
    ledger = AlertLedger()
    a1 = alert_v("3")
    ledger.observe_report("DiagnosticReport/r1", "3", a1)
    ledger.observe_escalation(esc(a1.id))
    record = ledger.get(a1.id)
    assert record is not None
    resource = acknowledgement_resource(
        record, PATIENT, practitioner_ref="Practitioner/dr", practitioner_name="Dr Test",
        workstation="ws-7a-1", at=datetime(2026, 1, 1, 0, 10, tzinfo=UTC), read_back="mrn")
    validate_resource(resource)  # R4 Communication, as the server will check it
    assert resource["status"] == "completed"
    assert resource["category"][0]["coding"][0] == {
        "system": ALERT_CODE_SYSTEM, "code": ACK_CODE,
        "display": "Critical result acknowledgement"}
    assert resource["about"][0] == {"reference": "DiagnosticReport/r1/_history/3"}
    assert resource["about"][1] == {"reference": "Observation/o-r1/_history/1"}
    assert resource["basedOn"] == [{"reference": record.escalation.ref}]  # type: ignore[union-attr]
    assert "MRN (SYN-0042): Potassium 6.9 mmol/L" in resource["payload"][0]["contentString"]
    stored = resource | {"id": "c9", "meta": {"versionId": "1", "lastUpdated": T0_TEXT}}
    read = acknowledgement_from(stored)
    assert read is not None
    assert (read.alert_id, read.ref, read.by_ref, read.by_name, read.workstation,
            read.read_back) == (a1.id, "Communication/c9", "Practitioner/dr", "Dr Test",
                                "ws-7a-1", "mrn")
    assert read.at == T0 + 600


@pytest.mark.parametrize("change", [
    {"status": "entered-in-error"},
    {"category": [{"coding": [{"system": "http://other", "code": ACK_CODE}]}]},
    {"about": [{"reference": "DiagnosticReport/r1"}]},  # unversioned: which version?
    {"resourceType": "Task"},
])
def test_things_that_are_not_acknowledgements_are_ignored(change: dict[str, Any]) -> None:
    record = AlertLedger()
    a1 = alert_v("1")
    record.observe_report("DiagnosticReport/r1", "1", a1)
    resource = acknowledgement_resource(
        record.get(a1.id), PATIENT, practitioner_ref=None,  # type: ignore[arg-type]
        practitioner_name="Nurse", workstation="ws", at=datetime.now(UTC), read_back="bed")
    assert acknowledgement_from(resource | {"id": "c1"}) is not None
    assert acknowledgement_from(resource | {"id": "c1"} | change) is None


def test_the_escalation_task_is_deterministic_valid_and_reads_back() -> None:
    a1 = alert_v("2")
    first = escalation_resource(a1, after_s=900, ward_id="ward-1")
    again = escalation_resource(alert_v("2"), after_s=900, ward_id="ward-1")
    assert first == again  # every workstation writes the very same resource
    validate_resource(first)
    assert first["id"] == escalation_task_id(a1.id)
    assert first["focus"] == {"reference": "DiagnosticReport/r1/_history/2"}
    assert first["authoredOn"] == "2026-01-01T00:15:00.000+00:00"
    assert "15 min" in first["description"]
    read = escalation_from(first | {"meta": {"versionId": "1"}})
    assert read is not None and read.alert_id == a1.id and read.at == T0 + 900
    assert escalation_from(first | {"status": "entered-in-error"}) is None
    assert escalation_from(first | {"code": {"text": "Capillary glucose"}}) is None


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=64),
       st.integers(min_value=1, max_value=10**12))
def test_escalation_ids_are_valid_fhir_ids_and_differ_per_version(rid: str, version: int) -> None:
    one = escalation_task_id(AlertId(f"DiagnosticReport/{rid}", str(version)))
    other = escalation_task_id(AlertId(f"DiagnosticReport/{rid}", str(version + 1)))
    assert len(one) <= 64 and all(c.isalnum() or c in "-." for c in one)
    assert one != other


def test_alert_ids_parse_versioned_references_only() -> None:
    assert AlertId.parse("DiagnosticReport/r1/_history/2") == AlertId("DiagnosticReport/r1", "2")
    assert AlertId.parse("http://h/fhir/DiagnosticReport/r1/_history/2") == AlertId(
        "DiagnosticReport/r1", "2")
    for bad in ("DiagnosticReport/r1", "Observation/o1/_history/1", "", None, 7,
                "DiagnosticReport//_history/1"):
        assert AlertId.parse(bad) is None
    assert str(AlertId("DiagnosticReport/r1", "2")) == "DiagnosticReport/r1/_history/2"


def test_alerts_sort_by_release_time() -> None:
    ledger = AlertLedger()
    times = ["2026-01-01T00:03:00+00:00", "2026-01-01T00:01:00+00:00",
             "2026-01-01T00:02:00+00:00"]
    for n, updated in zip(itertools.count(), times, strict=False):
        a = alert_v("1", rid=f"r{n}", updated=updated)
        ledger.observe_report(f"DiagnosticReport/r{n}", "1", a)
    assert [r.id.report_ref for r in ledger.active()] == [
        "DiagnosticReport/r1", "DiagnosticReport/r2", "DiagnosticReport/r0"]
    assert ledger.active()[0].age_s(T0 + 120) == 60.0
