"""The synthetic ward: valid R4, deterministic, complete, synthetic, and alert-free at start."""

from __future__ import annotations

import collections
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from fhir.resources.R4B import get_fhir_model_class

from wardsync.core import codes
from wardsync.core.critical import assess_report
from wardsync.core.news2 import news2_from_observations
from wardsync.sandbox.ward.names import (
    SYNTHETIC_FAMILY_MARKER,
    SYNTHETIC_FAMILY_NAMES,
    SYNTHETIC_GIVEN_NAMES,
)
from wardsync.sandbox.ward.seed import (
    DEMO_CLINICIAN_ID,
    DEMO_NURSE_ID,
    RESOURCE_ORDER,
    WARD_ID,
    build_ward,
    iter_references,
)

NOW = datetime(2026, 11, 22, 21, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ward() -> list[dict]:
    return build_ward(7, now=NOW)


def by_type(resources: list[dict], rtype: str) -> list[dict]:
    return [r for r in resources if r["resourceType"] == rtype]


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_every_resource_is_valid_fhir_r4b(ward):
    for resource in ward:
        model = get_fhir_model_class(resource["resourceType"])
        parsed = model.model_validate(resource)
        assert parsed.id == resource["id"]


def test_same_inputs_same_ward_and_a_different_seed_differs(ward):
    assert build_ward(7, now=NOW) == ward
    other = build_ward(8, now=NOW)
    assert other != ward
    # The shape of the ward does not depend on the seed: same beds, same staff ids.
    assert [r["id"] for r in by_type(other, "Location")] == [
        r["id"] for r in by_type(ward, "Location")
    ]


def test_ids_are_unique_readable_and_fhir_ids(ward):
    keys = [(r["resourceType"], r["id"]) for r in ward]
    assert len(keys) == len(set(keys))
    for _, rid in keys:
        assert re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", rid)
    ids = {rid for _, rid in keys}
    for expected in ("pat-01", "enc-01", "bed-01", "obs-01-hr-001", "dr-01-1", "task-01-1"):
        assert expected in ids


def test_counts_for_a_ward_of_24(ward):
    counts = collections.Counter(r["resourceType"] for r in ward)
    assert counts["Patient"] == 24
    assert counts["Encounter"] == 24
    assert counts["Location"] == 25  # the ward and one bed per patient
    assert counts["Practitioner"] >= 4
    assert 24 <= counts["DiagnosticReport"] <= 72  # 1-3 panels each
    assert counts["Task"] >= 24
    assert counts["Immunization"] >= 24
    assert counts["MedicationRequest"] >= 24
    assert counts["Condition"] >= 24
    assert 1000 <= len(ward) <= 5000


@pytest.mark.parametrize("patients", [1, 3, 40])
def test_patient_count_is_honoured(patients):
    ward = build_ward(1, now=NOW, patients=patients)
    assert len(by_type(ward, "Patient")) == patients
    assert len(by_type(ward, "Location")) == patients + 1


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="patients"):
        build_ward(1, now=NOW, patients=0)
    with pytest.raises(ValueError, match="patients"):
        build_ward(1, now=NOW, patients=100)
    with pytest.raises(ValueError, match="time zone"):
        build_ward(1, now=datetime(2026, 11, 22, 21, 0))


def test_every_reference_points_into_the_set(ward):
    present = {f"{r['resourceType']}/{r['id']}" for r in ward}
    seen_before: set[str] = set()
    for resource in ward:
        for ref in iter_references(resource):
            assert ref in present, f"{resource['id']} refers to missing {ref}"
            # Loadable in order: whatever a resource refers to comes earlier in the list.
            assert ref in seen_before, f"{resource['id']} refers forward to {ref}"
        seen_before.add(f"{resource['resourceType']}/{resource['id']}")
    order = [RESOURCE_ORDER.index(r["resourceType"]) for r in ward]
    assert order == sorted(order)


def test_ward_beds_and_encounters(ward):
    locations = {r["id"]: r for r in by_type(ward, "Location")}
    assert locations[WARD_ID]["physicalType"]["coding"][0] == {
        "system": codes.LOCATION_PHYSICAL_TYPE,
        "code": "wa",
        "display": "Ward",
    }
    beds = [r for r in locations.values() if r["id"] != WARD_ID]
    assert [b["name"] for b in beds[:2]] == ["Bed 01", "Bed 02"]
    for bed in beds:
        assert bed["physicalType"]["coding"][0]["code"] == "bd"
        assert bed["partOf"] == {"reference": f"Location/{WARD_ID}"}

    used_beds = []
    for enc in by_type(ward, "Encounter"):
        assert enc["status"] == "in-progress"
        assert enc["class"]["code"] == "IMP"
        places = [loc["location"]["reference"] for loc in enc["location"]]
        assert places[1] == f"Location/{WARD_ID}"
        used_beds.append(places[0])
        assert when(enc["period"]["start"]) <= NOW - timedelta(hours=24)
    assert len(set(used_beds)) == 24  # one patient per bed


def test_demo_staff_have_their_fixed_ids(ward):
    staff = {p["id"]: p["name"][0]["text"] for p in by_type(ward, "Practitioner")}
    assert staff[DEMO_CLINICIAN_ID] == "Dr Demo Clinician"
    assert staff[DEMO_NURSE_ID] == "Nurse Demo Nightingale"


def test_patients_are_obviously_synthetic_with_mrns(ward):
    names, mrns = set(), set()
    for patient in by_type(ward, "Patient"):
        name = patient["name"][0]
        assert name["family"] in SYNTHETIC_FAMILY_NAMES
        assert SYNTHETIC_FAMILY_MARKER.match(name["family"])
        assert name["given"][0] in SYNTHETIC_GIVEN_NAMES
        names.add(name["text"])
        mrn = patient["identifier"][0]
        assert mrn["system"] == codes.MRN_SYSTEM
        assert re.fullmatch(r"SYN\d{7}", mrn["value"])
        mrns.add(mrn["value"])
        assert patient["gender"] in ("female", "male")
        age = NOW.year - int(patient["birthDate"][:4])
        assert 18 <= age <= 96
    assert len(names) == 24 and len(mrns) == 24


def test_vitals_cover_the_last_24_hours_with_every_news2_input(ward):
    per_patient: dict[str, list[dict]] = collections.defaultdict(list)
    for obs in by_type(ward, "Observation"):
        if obs["category"][0]["coding"][0]["code"] == codes.CATEGORY_VITAL_SIGNS:
            assert obs["status"] == "final"
            assert obs["encounter"]["reference"].startswith("Encounter/enc-")
            per_patient[obs["subject"]["reference"]].append(obs)
    assert len(per_patient) == 24
    vital_codes = {c.code for c in codes.VITAL_SIGNS}
    frequent = 0
    for observations in per_patient.values():
        times = sorted({when(o["effectiveDateTime"]) for o in observations})
        assert NOW - timedelta(hours=24) < times[0] and times[-1] < NOW
        assert len(times) >= 6  # at least 4-hourly
        frequent += len(times) > 6
        for t in times:
            round_codes = {
                o["code"]["coding"][0]["code"]
                for o in observations
                if when(o["effectiveDateTime"]) == t
            }
            assert round_codes == vital_codes
    assert frequent >= 2  # some patients are observed more often


def test_vital_value_types(ward):
    for obs in by_type(ward, "Observation"):
        code = obs["code"]["coding"][0]["code"]
        if code == codes.BLOOD_PRESSURE_PANEL.code:
            systolic, diastolic = obs["component"]
            assert systolic["code"]["coding"][0]["code"] == codes.SYSTOLIC_BP.code
            assert diastolic["code"]["coding"][0]["code"] == codes.DIASTOLIC_BP.code
            assert systolic["valueQuantity"]["value"] > diastolic["valueQuantity"]["value"]
            assert "valueQuantity" not in obs
        elif code == codes.CONSCIOUSNESS.code:
            assert obs["valueCodeableConcept"]["coding"][0]["code"] in codes.CONSCIOUSNESS_LEVELS
        elif code == codes.SUPPLEMENTAL_OXYGEN.code:
            assert isinstance(obs["valueBoolean"], bool)
        elif code == codes.OXYGEN_SATURATION.code:
            assert 80 <= obs["valueQuantity"]["value"] <= 100
            assert obs["valueQuantity"]["code"] == "%"


def test_news2_scores_spread_from_0_to_7_plus_with_deteriorating_trends(ward):
    per_patient: dict[str, list[dict]] = collections.defaultdict(list)
    for obs in by_type(ward, "Observation"):
        if obs["category"][0]["coding"][0]["code"] == codes.CATEGORY_VITAL_SIGNS:
            per_patient[obs["subject"]["reference"]].append(obs)
    latest, first = {}, {}
    for patient, observations in per_patient.items():
        score = news2_from_observations(observations)  # the app's own NEWS2
        assert score is not None and score.complete
        latest[patient] = score.total
        earliest = min(when(o["effectiveDateTime"]) for o in observations)
        start = news2_from_observations(
            [o for o in observations if when(o["effectiveDateTime"]) == earliest]
        )
        first[patient] = start.total
    scores = sorted(latest.values())
    assert scores[0] == 0
    assert scores[-1] >= 7
    assert any(5 <= s <= 6 for s in scores)
    assert any(1 <= s <= 4 for s in scores)
    deteriorated = [p for p in latest if latest[p] >= 5 and latest[p] - first[p] >= 3]
    assert len(deteriorated) >= 2


def test_news2_spread_holds_for_other_seeds():
    for seed in range(1, 6):
        ward = build_ward(seed, now=NOW)
        per_patient: dict[str, list[dict]] = collections.defaultdict(list)
        for obs in by_type(ward, "Observation"):
            if obs["category"][0]["coding"][0]["code"] == codes.CATEGORY_VITAL_SIGNS:
                per_patient[obs["subject"]["reference"]].append(obs)
        totals = {news2_from_observations(v).total for v in per_patient.values()}
        assert min(totals) == 0 and max(totals) >= 7


def test_lab_reports_are_complete_and_flagged(ward):
    observations = {f"Observation/{o['id']}": o for o in by_type(ward, "Observation")}
    flags = collections.Counter()
    for report in by_type(ward, "DiagnosticReport"):
        assert report["status"] == "final"
        assert report["category"][0]["coding"][0]["system"] == codes.DIAGNOSTIC_SERVICE
        assert report["category"][0]["coding"][0]["code"] == "LAB"
        panel = report["code"]["coding"][0]["code"]
        assert panel in codes.LAB_PANELS
        results = [observations[r["reference"]] for r in report["result"]]
        assert [o["code"]["coding"][0]["code"] for o in results] == [
            t.code for t in codes.LAB_PANELS[panel]
        ]
        for obs in results:
            assert obs["category"][0]["coding"][0]["code"] == codes.CATEGORY_LABORATORY
            test = codes.LAB_TESTS_BY_CODE[obs["code"]["coding"][0]["code"]]
            assert obs["valueQuantity"]["code"] == test.unit
            assert obs["valueQuantity"]["system"] == codes.UCUM
            assert obs["referenceRange"][0]["high"]["code"] == test.unit
            flag = obs["interpretation"][0]["coding"][0]
            assert flag["system"] == codes.INTERPRETATION
            flags[flag["code"]] += 1
            assert obs["subject"] == report["subject"]
            assert when(obs["issued"]) <= NOW
    assert flags["N"] > 0
    assert flags["H"] + flags["L"] > 0  # abnormal-but-not-critical values are present
    assert flags["HH"] == flags["LL"] == 0


def test_no_critical_value_at_start_up_by_the_apps_own_rules():
    for seed in range(1, 11):
        ward = build_ward(seed, now=NOW, patients=30)
        observations = by_type(ward, "Observation")
        for report in by_type(ward, "DiagnosticReport"):
            assessment = assess_report(report, observations)
            assert not assessment.is_critical, assessment.reasons
            assert assessment.level in ("normal", "abnormal")


def test_problems_immunisations_drugs_and_tasks(ward):
    conditions = by_type(ward, "Condition")
    statuses = collections.Counter(c["clinicalStatus"]["coding"][0]["code"] for c in conditions)
    assert statuses["active"] >= 24 and statuses["resolved"] >= 1
    for cond in conditions:
        assert cond["category"][0]["coding"][0]["code"] == "problem-list-item"
        assert cond["code"]["coding"][0]["system"] == codes.SNOMED
    snomed = {c["code"]["coding"][0]["code"] for c in conditions}
    assert {"385093006", "44054006", "84114007", "14669001"} & snomed

    for imm in by_type(ward, "Immunization"):
        assert imm["status"] == "completed"
        assert imm["vaccineCode"]["coding"][0]["system"] == codes.CVX
        assert when(imm["occurrenceDateTime"]) < NOW - timedelta(days=300)

    meds = by_type(ward, "MedicationRequest")
    assert all(m["status"] == "active" and m["intent"] == "order" for m in meds)
    assert all(m["dosageInstruction"][0]["text"] for m in meds)
    assert any("coding" in m["medicationCodeableConcept"] for m in meds)
    assert any("coding" not in m["medicationCodeableConcept"] for m in meds)

    tasks = by_type(ward, "Task")
    assert {t["status"] for t in tasks} <= {"requested", "in-progress"}
    assert all(
        t["intent"] == "order" and t["for"]["reference"].startswith("Patient/") for t in tasks
    )
    assert any(t["description"] == "Repeat potassium in 4 hours" for t in tasks) or any(
        t["description"] == "Repeat lactate in 2 hours" for t in tasks
    )
    owners = {t["owner"]["reference"] for t in tasks}
    assert f"Practitioner/{DEMO_CLINICIAN_ID}" in owners


def test_times_follow_the_given_now_in_any_time_zone():
    later = NOW + timedelta(days=3)
    ward = build_ward(7, now=later.astimezone(timezone(timedelta(hours=2))))
    times = [when(r["effectiveDateTime"]) for r in by_type(ward, "Observation")]
    assert max(times) < later and min(times) > later - timedelta(hours=24)
