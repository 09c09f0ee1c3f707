"""The shared poke rules: type, priority and patient of a changed resource."""

from __future__ import annotations

from typing import Any

from wardsync.core.poke_rules import classify_change, patient_id_of, report_result_refs

LAB = [{"coding": [{"code": "laboratory"}]}]


def _potassium(oid: str, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "id": oid, "status": "final", "category": LAB,
        "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": value, "unit": "mmol/L"},
    }


def _report(status: str, *obs: str) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport", "id": "r1", "status": status, "category": LAB,
        "subject": {"reference": "Patient/p1"},
        "result": [{"reference": f"Observation/{o}"} for o in obs],
    }


def test_a_released_report_with_a_critical_result_is_urgent():
    results = {"Observation/k": _potassium("k", 7.1)}
    assert classify_change(_report("final", "k"), results) == ("CRITICAL_LAB_RESULT", "urgent")


def test_a_released_report_within_limits_is_ready_and_routine():
    results = {"Observation/k": _potassium("k", 4.1)}
    assert classify_change(_report("final", "k"), results) == ("LAB_RESULT_READY", "routine")


def test_a_preliminary_report_is_only_a_change():
    results = {"Observation/k": _potassium("k", 7.1)}
    assert classify_change(_report("preliminary", "k"), results) == (
        "RESOURCE_CHANGED", "routine")


def test_a_critical_observation_alone_is_never_urgent():
    assert classify_change(_potassium("k", 7.1), {}) == ("LAB_RESULT_READY", "routine")


def test_patient_and_result_references():
    assert patient_id_of(_report("final")) == "p1"
    assert patient_id_of({"resourceType": "Patient", "id": "p9"}) == "p9"
    assert patient_id_of({"resourceType": "Task", "for": {"reference": "Patient/p2"}}) == "p2"
    assert patient_id_of({"resourceType": "Location", "id": "ward"}) is None
    assert report_result_refs(_report("final", "a", "b")) == ["Observation/a", "Observation/b"]
