"""Query keys: the searches each key sends and exactly which pokes invalidate it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wardsync.core import codes
from wardsync.core.alerts import ACK_CODE, ALERT_CODE_SYSTEM, ESCALATION_CODE
from wardsync.core.pokes import POKE_RESOURCE_TYPES, POKE_TYPES, Poke, parse_poke
from wardsync.core.queries import (
    MAX_PATIENTS_PER_SEARCH,
    LabReport,
    PatientAllergies,
    PatientIdentity,
    PatientLabs,
    PatientRecord,
    PatientVitals,
    QueryKey,
    Search,
    WardAlerts,
    WardCensus,
)

RECORD_TYPES = ("Condition", "Immunization", "MedicationRequest", "Task")
# Search parameters on fields a resource keeps for life; mutable state (status) is filtered
# by the view, or an incremental pull would never bring back a resource that left the filter.
IMMUTABLE_FILTERS = {"patient", "category", "code", "_id", "partof", "location"}


def poke(rtype: str, rid: str, patient: str | None) -> Poke:
    wire = {"type": "RESOURCE_CHANGED", "resourceType": rtype, "id": rid, "versionId": "1",
            "seq": 1, "priority": "routine"}
    if patient is not None:
        wire["patientId"] = patient
    return parse_poke(wire)  # a real, validated poke: the attribute names must match


def all_keys(patient: str = "p1", report: str = "r1", ward: str = "w1") -> list[QueryKey]:
    return [WardCensus(ward), PatientVitals(patient), PatientLabs(patient),
            PatientRecord(patient), LabReport(report, patient), PatientIdentity(patient),
            PatientAllergies(patient)]


# ---------------------------------------------------------------------------- searches


def test_ward_census_searches_beds_and_stays_with_their_patients() -> None:
    assert WardCensus("w1").searches() == (
        Search("Location", (("partof", "Location/w1"),)),
        Search("Encounter", (("location", "Location/w1"), ("_include", "Encounter:subject")),
               incremental=False),
    )
    assert WardCensus("w1").patient_id is None
    assert WardCensus("w1").label() == "census Location/w1"


def test_patient_vitals_searches_vital_sign_observations() -> None:
    assert PatientVitals("p1").searches() == (
        Search("Observation", (("patient", "Patient/p1"),
                               ("category", codes.CATEGORY_VITAL_SIGNS))),
    )
    assert PatientVitals("p1").label() == "vitals Patient/p1"


def test_patient_labs_searches_reports_and_lab_observations_incrementally() -> None:
    reports, observations = PatientLabs("p1").searches()
    assert reports == Search("DiagnosticReport", (("patient", "Patient/p1"),
                                                  ("_include", "DiagnosticReport:result")))
    assert observations == Search("Observation", (("patient", "Patient/p1"),
                                                  ("category", codes.CATEGORY_LABORATORY)))
    assert reports.incremental and observations.incremental
    assert PatientLabs("p1").label() == "labs Patient/p1"


def test_patient_record_searches_the_patient_and_each_record_type() -> None:
    searches = PatientRecord("p1").searches()
    assert searches[0] == Search("Patient", (("_id", "p1"),))
    assert searches[1:] == tuple(Search(t, (("patient", "Patient/p1"),)) for t in RECORD_TYPES)
    assert PatientRecord("p1").label() == "record Patient/p1"


def test_patient_identity_searches_the_patient_and_stays_with_locations_in_full() -> None:
    assert PatientIdentity("p1").searches() == (
        Search("Patient", (("_id", "p1"),)),
        Search("Encounter", (("patient", "Patient/p1"), ("_include", "Encounter:location")),
               incremental=False),
    )
    assert PatientIdentity("p1").label() == "identity Patient/p1"


def test_patient_allergies_search_every_allergy_record_of_the_patient() -> None:
    assert PatientAllergies("p1").searches() == (
        Search("AllergyIntolerance", (("patient", "Patient/p1"),)),
    )
    assert PatientAllergies("p1").label() == "allergies Patient/p1"
    # Not part of the record: a server without allergies must not stop problems loading.
    assert all(s.resource_type != "AllergyIntolerance" for s in PatientRecord("p1").searches())


def test_lab_report_searches_one_report_with_its_results_in_full() -> None:
    assert LabReport("r1", "p1").searches() == (
        Search("DiagnosticReport", (("_id", "r1"), ("_include", "DiagnosticReport:result")),
               incremental=False),
    )
    assert LabReport("r1", "p1").label() == "report DiagnosticReport/r1"


@pytest.mark.parametrize("key", all_keys(), ids=lambda k: type(k).__name__)
def test_searches_filter_only_on_fields_that_never_change(key: QueryKey) -> None:
    for search in key.searches():
        names = {name for name, _ in search.params if name != "_include"}
        assert names <= IMMUTABLE_FILTERS, f"{key.label()}: mutable filter in {search}"


@pytest.mark.parametrize("key", all_keys(), ids=lambda k: type(k).__name__)
def test_included_resources_are_never_lost_to_an_incremental_pull(key: QueryKey) -> None:
    # `_lastUpdated` filters matches only: an `_include`d type needs its own search, or the
    # including search must be pulled in full.
    searches = key.searches()
    for search in searches:
        for name, value in search.params:
            if name != "_include" or not search.incremental:
                continue
            target = {"DiagnosticReport:result": "Observation",
                      "Encounter:subject": "Patient"}[value]
            assert any(s.resource_type == target and s.incremental for s in searches), (
                f"{key.label()}: {value} changes are invisible to incremental pulls")


def test_with_params_appends_without_changing_the_search() -> None:
    search = PatientVitals("p1").searches()[0]
    params = search.with_params(("_count", "200"))
    params.append(("_lastUpdated", "gt2026-01-01T00:00:00+00:00"))
    assert params[:3] == [*search.params, ("_count", "200")]
    assert search.params == (("patient", "Patient/p1"), ("category", "vital-signs"))


def test_keys_are_values_usable_as_dictionary_keys() -> None:
    assert PatientVitals("p1") == PatientVitals("p1") and PatientVitals("p1") != PatientLabs("p1")
    assert len({*all_keys(), *all_keys()}) == 7
    labels = [k.label() for k in [*all_keys(), *all_keys("p2", "r2", "w2")]]
    assert len(set(labels)) == len(labels)


# ---------------------------------------------------------------------------- touched_by


CASES: list[tuple[str, str, str | None, set[str]]] = [
    # resourceType, id, patientId -> the kinds of key (for p1 / r1 / w1) it touches
    ("Observation", "o1", "p1", {"vitals", "labs", "report"}),
    ("Observation", "o1", "p2", set()),
    ("DiagnosticReport", "r1", "p1", {"labs", "report"}),
    ("DiagnosticReport", "r2", "p1", {"labs"}),
    ("DiagnosticReport", "r1", "p2", {"report"}),  # the report's own id decides
    ("DiagnosticReport", "r2", "p2", set()),
    ("Patient", "p1", "p1", {"census", "record", "identity"}),
    ("Patient", "p1", None, {"census", "record", "identity"}),
    ("Patient", "p2", "p2", {"census"}),
    ("Encounter", "e1", "p1", {"census", "identity"}),
    ("Encounter", "e1", "p2", {"census"}),
    ("Location", "bed-1", None, {"census"}),
    *((t, "x1", "p1", {"record"}) for t in RECORD_TYPES),
    *((t, "x1", "p2", set()) for t in RECORD_TYPES),
    ("AllergyIntolerance", "a1", "p1", {"allergies"}),
    ("AllergyIntolerance", "a1", "p2", set()),
    ("AllergyIntolerance", "a1", None, set()),
    ("Observation", "o1", None, set()),
    ("Task", "t1", None, set()),
    ("Practitioner", "dr-1", None, set()),
    ("Specimen", "s1", "p1", set()),
    ("ServiceRequest", "sr1", "p1", set()),
    ("Flag", "f1", "p1", set()),
]


@pytest.mark.parametrize(("rtype", "rid", "patient", "expected"), CASES,
                         ids=[f"{c[0]}/{c[1]}@{c[2]}" for c in CASES])
def test_touched_by_is_exactly_the_expected_keys(
    rtype: str, rid: str, patient: str | None, expected: set[str]
) -> None:
    kinds = {type(k).__name__: k for k in all_keys()}
    names = {"census": "WardCensus", "vitals": "PatientVitals", "labs": "PatientLabs",
             "record": "PatientRecord", "report": "LabReport", "identity": "PatientIdentity",
             "allergies": "PatientAllergies"}
    the_poke = poke(rtype, rid, patient)
    touched = {kind for kind, cls in names.items() if kinds[cls].touched_by(the_poke)}
    assert touched == expected


ids = st.sampled_from(["p1", "p2", "r1", "r2", "o1", "e1", "bed-1", "x-9"])


@given(
    ptype=st.sampled_from(sorted(POKE_TYPES)),
    rtype=st.sampled_from(sorted(POKE_RESOURCE_TYPES)),
    rid=ids,
    patient=st.none() | ids,
)
def test_a_patient_key_is_only_touched_by_its_own_patient(
    ptype: str, rtype: str, rid: str, patient: str | None
) -> None:
    p = Poke(ptype, rtype, rid, "1", patient, 1)
    for key in all_keys():
        if key.patient_id is None or not key.touched_by(p):
            continue
        own = patient == key.patient_id or (rtype == "Patient" and rid == key.patient_id)
        own_report = isinstance(key, LabReport) and rtype == "DiagnosticReport" and rid == "r1"
        assert own or own_report, f"{key.label()} touched by {p}"
    # A poke about none of the watched types touches nothing.
    watched = {"Observation", "DiagnosticReport", "Patient", "Encounter", "Location",
               "AllergyIntolerance", *RECORD_TYPES}
    if rtype not in watched:
        assert not any(k.touched_by(p) for k in all_keys())


# ---------------------------------------------------------------------------- ward alerts


def test_ward_alerts_search_reports_acknowledgements_and_escalations_of_the_ward() -> None:
    since = ("_lastUpdated", "ge2026-01-01T00:00:00+00:00")
    key = WardAlerts("w1", ("p1", "p2"), "2026-01-01T00:00:00+00:00")
    patients = ("patient", "Patient/p1,Patient/p2")
    assert key.searches() == (
        Search("DiagnosticReport", (patients, since, ("_include", "DiagnosticReport:result"))),
        Search("Communication", (patients, ("category", f"{ALERT_CODE_SYSTEM}|{ACK_CODE}"),
                                 since)),
        Search("Task", (patients, ("code", f"{ALERT_CODE_SYSTEM}|{ESCALATION_CODE}"), since)),
    )
    assert key.patient_id is None
    assert key.label() == "alerts Location/w1 (2 patients)"
    # Only fields a resource keeps for life, and a lower bound on lastUpdated, which a
    # resource that matched once keeps matching as updates only move it forward.
    for search in key.searches():
        names = {name for name, _ in search.params if name != "_include"}
        assert names <= IMMUTABLE_FILTERS | {"_lastUpdated"}
        assert all(v.startswith("ge") for n, v in search.params if n == "_lastUpdated")


def test_ward_alerts_split_a_large_ward_into_several_searches() -> None:
    ids = tuple(f"p{n:03d}" for n in range(MAX_PATIENTS_PER_SEARCH * 2 + 1))
    searches = WardAlerts("w1", ids, "2026-01-01T00:00:00+00:00").searches()
    assert len(searches) == 9
    covered = [p for s in searches if s.resource_type == "Task"
               for p in dict(s.params)["patient"].split(",")]
    assert covered == [f"Patient/{p}" for p in ids]


@pytest.mark.parametrize(("rtype", "patient", "touched"), [
    ("DiagnosticReport", "p1", True), ("Communication", "p2", True), ("Task", "p1", True),
    ("DiagnosticReport", "p3", False), ("Communication", None, False),
    ("Observation", "p1", False), ("Encounter", "p1", False), ("Patient", "p1", False),
])
def test_ward_alerts_are_touched_by_reports_acks_and_tasks_of_their_patients(
    rtype: str, patient: str | None, touched: bool
) -> None:
    key = WardAlerts("w1", ("p1", "p2"), "2026-01-01T00:00:00+00:00")
    assert key.touched_by(poke(rtype, "x1", patient)) is touched


def test_ward_tasks_is_one_search_per_fifty_patients_and_touched_by_their_tasks() -> None:
    from wardsync.core.pokes import Poke
    from wardsync.core.queries import WardTasks

    key = WardTasks("ward-7a", tuple(f"p{i:03d}" for i in range(120)))
    searches = key.searches()
    assert [s.resource_type for s in searches] == ["Task"] * 3
    first = dict(searches[0].params)["patient"].split(",")
    assert len(first) == 50 and first[0] == "Patient/p000"
    assert all(s.incremental for s in searches)

    def poke(rtype: str, patient: str | None) -> Poke:
        return Poke(type="RESOURCE_CHANGED", resource_type=rtype, id="x", version_id="1",
                    patient_id=patient, seq=1)

    assert key.touched_by(poke("Task", "p007"))
    assert not key.touched_by(poke("Task", "somebody-else"))
    assert not key.touched_by(poke("Observation", "p007"))
    assert key.label() == "tasks Location/ward-7a (120 patients)"
