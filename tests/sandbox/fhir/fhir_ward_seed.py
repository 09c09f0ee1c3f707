"""A small synthetic ward for search tests: every searchable type, fixed ids, fake people."""

from __future__ import annotations

from typing import Any

LOINC = "http://loinc.org"
MRN = "urn:wardsync:mrn"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"


def _obs(id: str, pat: str, code: str, when: dict[str, Any], *, status: str = "final",
         cat: str = "laboratory", system: str | None = LOINC, enc: str | None = None
         ) -> dict[str, Any]:
    coding: dict[str, Any] = {"code": code}
    if system:
        coding["system"] = system
    obs = {"resourceType": "Observation", "id": id, "status": status,
           "category": [{"coding": [{"system": OBS_CAT, "code": cat}]}],
           "code": {"coding": [coding]}, "subject": {"reference": f"Patient/{pat}"},
           "valueQuantity": {"value": 4.0, "unit": "mmol/L"}, **when}
    if enc:
        obs["encounter"] = {"reference": f"Encounter/{enc}"}
    return obs


def _loc(id: str, code: str, part_of: str | None = None) -> dict[str, Any]:
    loc: dict[str, Any] = {"resourceType": "Location", "id": id, "name": f"Synthetic {id}",
                           "type": [{"coding": [{"system": ROLE, "code": code}]}]}
    if part_of:
        loc["partOf"] = {"reference": f"Location/{part_of}"}
    return loc


def _pat(id: str, family: str, given: str, mrn: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": id,
            "identifier": [{"system": MRN, "value": mrn}],
            "name": [{"family": family, "given": [given]}]}


WARD: list[dict[str, Any]] = [
    _pat("pat-a", "Testpatient", "Alpha", "MRN-A"),
    _pat("pat-b", "Öztestson", "Beta", "MRN-B"),
    _pat("pat-c", "Sampleperson", "Gamma", "MRN-C"),
    _loc("ward-1", "WARD"),
    _loc("room-1", "RO", "ward-1"),
    _loc("bed-1", "BD", "room-1"),
    {"resourceType": "Encounter", "id": "enc-a", "status": "in-progress",
     "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
     "subject": {"reference": "Patient/pat-a"},
     "location": [{"location": {"reference": "Location/bed-1"}, "status": "completed"},
                  {"location": {"reference": "Location/room-1"}}]},
    {"resourceType": "Encounter", "id": "enc-b", "status": "finished",
     "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
     "subject": {"reference": "Patient/pat-b"},
     "location": [{"location": {"reference": "Location/ward-1"}}]},
    _obs("obs-k1", "pat-a", "2823-3", {"effectiveDateTime": "2026-11-01T08:00:00Z"},
         enc="enc-a"),
    _obs("obs-k2", "pat-a", "2823-3", {"effectiveDateTime": "2026-11-02T08:00:00Z"},
         status="amended", enc="enc-a"),
    # 12:30 at +02:00 is 10:30 UTC
    _obs("obs-na", "pat-b", "2951-2", {"effectiveDateTime": "2026-11-02T12:30:00+02:00"}),
    _obs("obs-hr", "pat-a", "8867-4", {"effectivePeriod": {
        "start": "2026-11-03T00:00:00Z", "end": "2026-11-03T06:00:00Z"}}, cat="vital-signs"),
    _obs("obs-local", "pat-c", "local-1", {"effectiveDateTime": "2026-10"}, system=None),
    {"resourceType": "DiagnosticReport", "id": "dr-1", "status": "final",
     "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                               "code": "CH"}]}],
     "code": {"coding": [{"system": LOINC, "code": "24323-8"}]},
     "subject": {"reference": "Patient/pat-a"}, "effectiveDateTime": "2026-11-02",
     "result": [{"reference": "Observation/obs-k2"}, {"reference": "Observation/obs-k1"}]},
    {"resourceType": "DiagnosticReport", "id": "dr-2", "status": "preliminary",
     "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                               "code": "HM"}]}],
     "code": {"coding": [{"system": LOINC, "code": "58410-2"}]},
     "subject": {"reference": "Patient/pat-b"}, "effectiveDateTime": "2026-11-04T09:00:00Z",
     "result": [{"reference": "Observation/obs-na"}]},
    {"resourceType": "Condition", "id": "cond-1", "subject": {"reference": "Patient/pat-a"},
     "clinicalStatus": {"coding": [{
         "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
         "code": "active"}]},
     "category": [{"coding": [{
         "system": "http://terminology.hl7.org/CodeSystem/condition-category",
         "code": "problem-list-item"}]}]},
    {"resourceType": "Condition", "id": "cond-2", "subject": {"reference": "Patient/pat-b"},
     "clinicalStatus": {"coding": [{
         "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
         "code": "resolved"}]},
     "category": [{"coding": [{
         "system": "http://terminology.hl7.org/CodeSystem/condition-category",
         "code": "encounter-diagnosis"}]}]},
    {"resourceType": "Immunization", "id": "imm-1", "status": "completed",
     "vaccineCode": {"text": "Synthetic vaccine"}, "patient": {"reference": "Patient/pat-a"},
     "occurrenceDateTime": "2026-01-15"},
    {"resourceType": "Immunization", "id": "imm-2", "status": "not-done",
     "vaccineCode": {"text": "Synthetic vaccine"}, "patient": {"reference": "Patient/pat-b"},
     "occurrenceDateTime": "2026-02-15"},
    {"resourceType": "MedicationRequest", "id": "mr-1", "status": "active", "intent": "order",
     "medicationCodeableConcept": {"text": "Synthetic drug"},
     "subject": {"reference": "Patient/pat-a"}},
    {"resourceType": "MedicationRequest", "id": "mr-2", "status": "stopped", "intent": "plan",
     "medicationCodeableConcept": {"text": "Synthetic drug"},
     "subject": {"reference": "Patient/pat-b"}},
    {"resourceType": "Practitioner", "id": "prac-1",
     "identifier": [{"system": "urn:wardsync:staff", "value": "STAFF-1"}],
     "name": [{"family": "Democlinician"}]},
    {"resourceType": "Task", "id": "task-1", "status": "requested", "intent": "order",
     "code": {"coding": [{"system": "urn:wardsync:task", "code": "review-result"}]},
     "for": {"reference": "Patient/pat-a"}, "owner": {"reference": "Practitioner/prac-1"},
     "focus": {"reference": "DiagnosticReport/dr-1"}},
    {"resourceType": "Task", "id": "task-2", "status": "completed", "intent": "order",
     "code": {"coding": [{"system": "urn:wardsync:task", "code": "take-bloods"}]},
     "for": {"reference": "Patient/pat-b"}},
    {"resourceType": "Communication", "id": "comm-1", "status": "completed",
     "category": [{"coding": [{"system": "urn:wardsync:comm", "code": "critical-result"}]}],
     "subject": {"reference": "Patient/pat-a"},
     "about": [{"reference": "DiagnosticReport/dr-1"}]},
    {"resourceType": "Communication", "id": "comm-2", "status": "in-progress",
     "subject": {"reference": "Patient/pat-b"}},
    {"resourceType": "AuditEvent", "id": "ae-1",
     "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
              "code": "rest"},
     "action": "R", "recorded": "2026-11-02T10:00:00Z",
     "agent": [{"who": {"reference": "Practitioner/prac-1"}, "requestor": True}],
     "source": {"observer": {"display": "WardSync sandbox"}},
     "entity": [{"what": {"reference": "Patient/pat-a"}}]},
    {"resourceType": "AuditEvent", "id": "ae-2",
     "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
              "code": "rest"},
     "action": "R", "recorded": "2026-11-05T10:00:00Z",
     "agent": [{"who": {"reference": "Practitioner/prac-2"}, "requestor": True}],
     "source": {"observer": {"display": "WardSync sandbox"}},
     "entity": [{"what": {"reference": "Patient/pat-b"}}]},
]
