"""Search over real HTTP (R4 search.html): every parameter family the app relies on."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir_testdata import auth
from fhir_ward_seed import WARD

from conftest import FhirServer


@pytest.fixture
async def ward(fhir_server: FhirServer, client: httpx.AsyncClient) -> httpx.AsyncClient:
    fhir_server.store.load(WARD)
    return client


async def search(client: httpx.AsyncClient, rtype: str, params: Any = None, *,
                 headers: dict[str, str] | None = None) -> dict[str, Any]:
    r = await client.get(f"/{rtype}", params=params, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    bundle = r.json()
    get_fhir_model_class("Bundle").model_validate(bundle)
    assert bundle["type"] == "searchset"
    return bundle


def match_ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", ())
            if e["search"]["mode"] == "match"]


async def ids(client: httpx.AsyncClient, rtype: str, params: Any = None) -> set[str]:
    bundle = await search(client, rtype, params)
    found = match_ids(bundle)
    assert bundle["total"] == len(found)
    return set(found)


async def test_id_and_bundle_shape(ward: httpx.AsyncClient, fhir_server: FhirServer) -> None:
    bundle = await search(ward, "Patient", {"_id": "pat-a,pat-c,nobody"})
    assert set(match_ids(bundle)) == {"pat-a", "pat-c"} and bundle["total"] == 2
    entry = bundle["entry"][0]
    assert entry["fullUrl"] == f"{fhir_server.base}/Patient/{entry['resource']['id']}"
    self_link = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    assert self_link.startswith(f"{fhir_server.base}/Patient?_id=")
    assert await ids(ward, "Practitioner", {"_id": "prac-1"}) == {"prac-1"}


async def test_patient_identifier_and_name(ward: httpx.AsyncClient) -> None:
    assert await ids(ward, "Patient", {"identifier": "urn:wardsync:mrn|MRN-B"}) == {"pat-b"}
    assert await ids(ward, "Patient", {"identifier": "MRN-B"}) == {"pat-b"}
    assert await ids(ward, "Patient", {"identifier": "|MRN-B"}) == set()  # it has a system
    assert await ids(ward, "Patient", {"identifier": "urn:wardsync:mrn|"}) == {
        "pat-a", "pat-b", "pat-c"}
    assert await ids(ward, "Patient", {"identifier": "MRN-A,MRN-C"}) == {"pat-a", "pat-c"}
    assert await ids(ward, "Patient", {"name": "TESTP"}) == {"pat-a"}
    assert await ids(ward, "Patient", {"name": "person"}) == {"pat-c"}  # contains
    assert await ids(ward, "Patient", {"name": "oztest"}) == {"pat-b"}  # accent-insensitive
    assert await ids(ward, "Patient", {"name": "beta"}) == {"pat-b"}  # given names too
    assert await ids(ward, "Patient", {"name:exact": "Öztestson"}) == {"pat-b"}
    assert await ids(ward, "Patient", {"name:exact": "öztestson"}) == set()
    assert await ids(ward, "Patient", {"name": "100%"}) == set()  # LIKE wildcards are literal
    assert await ids(ward, "Practitioner", {"identifier": "urn:wardsync:staff|STAFF-1"}) == {
        "prac-1"}


async def test_observation_references(ward: httpx.AsyncClient, fhir_server: FhirServer
                                      ) -> None:
    pat_a = {"obs-k1", "obs-k2", "obs-hr"}
    assert await ids(ward, "Observation", {"patient": "pat-a"}) == pat_a
    assert await ids(ward, "Observation", {"patient": "Patient/pat-a"}) == pat_a
    assert await ids(ward, "Observation",
                     {"patient": f"{fhir_server.base}/Patient/pat-a"}) == pat_a
    assert await ids(ward, "Observation", {"subject": "pat-a"}) == pat_a
    assert await ids(ward, "Observation", {"subject:Patient": "pat-b"}) == {"obs-na"}
    assert await ids(ward, "Observation", {"patient": "pat-a,pat-b"}) == pat_a | {"obs-na"}
    assert await ids(ward, "Observation", {"encounter": "enc-a"}) == {"obs-k1", "obs-k2"}
    assert await ids(ward, "Observation", {"patient": "Location/ward-1"}) == set()


async def test_observation_tokens(ward: httpx.AsyncClient) -> None:
    assert await ids(ward, "Observation", {"code": "http://loinc.org|2823-3"}) == {
        "obs-k1", "obs-k2"}
    assert await ids(ward, "Observation", {"code": "2951-2"}) == {"obs-na"}
    assert await ids(ward, "Observation", {"code": "2823-3,2951-2"}) == {
        "obs-k1", "obs-k2", "obs-na"}
    assert await ids(ward, "Observation", {"code": "|local-1"}) == {"obs-local"}
    assert await ids(ward, "Observation", {"code": "|2823-3"}) == set()
    assert await ids(ward, "Observation", {"code": "http://snomed.info/sct|2823-3"}) == set()
    assert await ids(ward, "Observation", {"category": "vital-signs"}) == {"obs-hr"}
    assert await ids(ward, "Observation", {"status": "amended"}) == {"obs-k2"}
    # Criteria AND together; a repeated parameter ANDs too.
    params = [("patient", "pat-a"), ("code", "2823-3"), ("status", "final")]
    assert await ids(ward, "Observation", params) == {"obs-k1"}
    both = [("code", "2823-3"), ("code", "8867-4")]
    assert await ids(ward, "Observation", both) == set()


@pytest.mark.parametrize(("value", "expected"), [
    ("2026-11-02", {"obs-k2", "obs-na"}),
    ("eq2026-11-02", {"obs-k2", "obs-na"}),
    ("2026-11", {"obs-k1", "obs-k2", "obs-na", "obs-hr"}),
    ("2026-10", {"obs-local"}),
    ("2026-11-02T10:30:00Z", {"obs-na"}),  # written as 12:30+02:00
    ("2026-11-02T12:30:00+02:00", {"obs-na"}),
    ("gt2026-11-02", {"obs-hr"}),
    ("ge2026-11-02", {"obs-k2", "obs-na", "obs-hr"}),
    ("lt2026-11-02", {"obs-k1", "obs-local"}),
    ("le2026-11-02", {"obs-k1", "obs-k2", "obs-na", "obs-local"}),
    ("gt2026-11-02T09:00:00Z", {"obs-na", "obs-hr"}),
    ("ne2026-11-02", {"obs-k1", "obs-hr", "obs-local"}),
    ("sa2026-11-02", {"obs-hr"}),
    ("eb2026-11-01T09:00:00Z", {"obs-k1", "obs-local"}),
    ("2026-11-03T03:00:00Z", set()),  # the period is not within one second
    ("ap2026-11-03T03:00:00Z", {"obs-hr"}),  # but overlaps it
    ("ge2026-11-03T03:00:00Z", {"obs-hr"}),
])
async def test_observation_date_prefixes(ward: httpx.AsyncClient, value: str,
                                         expected: set[str]) -> None:
    assert await ids(ward, "Observation", {"date": value}) == expected


async def test_date_range_with_two_bounds(ward: httpx.AsyncClient) -> None:
    params = [("date", "ge2026-11-02"), ("date", "lt2026-11-03")]
    assert await ids(ward, "Observation", params) == {"obs-k2", "obs-na"}


async def test_diagnostic_report_and_include_results(ward: httpx.AsyncClient) -> None:
    assert await ids(ward, "DiagnosticReport", {"patient": "pat-a"}) == {"dr-1"}
    assert await ids(ward, "DiagnosticReport", {"subject": "Patient/pat-b"}) == {"dr-2"}
    assert await ids(ward, "DiagnosticReport", {"code": "http://loinc.org|24323-8"}) == {
        "dr-1"}
    assert await ids(ward, "DiagnosticReport", {"category": "HM"}) == {"dr-2"}
    assert await ids(ward, "DiagnosticReport", {"status": "preliminary,final"}) == {
        "dr-1", "dr-2"}
    assert await ids(ward, "DiagnosticReport", {"date": "ge2026-11-03"}) == {"dr-2"}
    assert await ids(ward, "DiagnosticReport", {"result": "Observation/obs-na"}) == {"dr-2"}
    bundle = await search(ward, "DiagnosticReport",
                          {"_id": "dr-1", "_include": "DiagnosticReport:result"})
    modes = {(e["resource"]["resourceType"], e["resource"]["id"]): e["search"]["mode"]
             for e in bundle["entry"]}
    assert modes == {("DiagnosticReport", "dr-1"): "match", ("Observation", "obs-k2"): "include",
                     ("Observation", "obs-k1"): "include"}
    assert bundle["total"] == 1  # includes are not counted


async def test_encounter_search_and_includes(ward: httpx.AsyncClient) -> None:
    assert await ids(ward, "Encounter", {"patient": "pat-a"}) == {"enc-a"}
    assert await ids(ward, "Encounter", {"subject": "pat-b"}) == {"enc-b"}
    assert await ids(ward, "Encounter", {"status": "in-progress"}) == {"enc-a"}
    assert await ids(ward, "Encounter", {"location": "room-1"}) == {"enc-a"}
    assert await ids(ward, "Encounter", {"location": "bed-1"}) == {"enc-a"}  # any entry
    assert await ids(ward, "Encounter", {"location": "Location/ward-1"}) == {"enc-b"}
    bundle = await search(ward, "Encounter", [("status", "in-progress"),
                                              ("_include", "Encounter:subject"),
                                              ("_include", "Encounter:location")])
    included = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]
                if e["search"]["mode"] == "include"}
    assert included == {("Patient", "pat-a"), ("Location", "bed-1"), ("Location", "room-1")}


async def test_location_condition_immunization_medication(ward: httpx.AsyncClient) -> None:
    assert await ids(ward, "Location", {"partof": "ward-1"}) == {"room-1"}
    assert await ids(ward, "Location", {"partof": "Location/room-1"}) == {"bed-1"}
    assert await ids(ward, "Location", {"type": f"{'http://terminology.hl7.org/CodeSystem/'}"
                                                f"v3-RoleCode|BD"}) == {"bed-1"}
    assert await ids(ward, "Condition", {"patient": "pat-a"}) == {"cond-1"}
    assert await ids(ward, "Condition", {"clinical-status": "resolved"}) == {"cond-2"}
    assert await ids(ward, "Condition", {"category": "problem-list-item"}) == {"cond-1"}
    assert await ids(ward, "Immunization", {"patient": "pat-a"}) == {"imm-1"}
    assert await ids(ward, "Immunization", {"status": "not-done"}) == {"imm-2"}
    assert await ids(ward, "MedicationRequest", {"patient": "pat-b"}) == {"mr-2"}
    assert await ids(ward, "MedicationRequest", {"status": "active"}) == {"mr-1"}
    assert await ids(ward, "MedicationRequest", {"intent": "plan"}) == {"mr-2"}


async def test_task_communication_audit_event(ward: httpx.AsyncClient) -> None:
    assert await ids(ward, "Task", {"patient": "pat-a"}) == {"task-1"}
    assert await ids(ward, "Task", {"status": "completed"}) == {"task-2"}
    assert await ids(ward, "Task", {"owner": "Practitioner/prac-1"}) == {"task-1"}
    assert await ids(ward, "Task", {"focus": "DiagnosticReport/dr-1"}) == {"task-1"}
    assert await ids(ward, "Task", {"code": "urn:wardsync:task|take-bloods"}) == {"task-2"}
    assert await ids(ward, "Communication", {"patient": "pat-a"}) == {"comm-1"}
    assert await ids(ward, "Communication", {"subject": "Patient/pat-b"}) == {"comm-2"}
    assert await ids(ward, "Communication", {"status": "in-progress"}) == {"comm-2"}
    assert await ids(ward, "Communication", {"category": "critical-result"}) == {"comm-1"}
    assert await ids(ward, "Communication", {"about": "DiagnosticReport/dr-1"}) == {"comm-1"}
    assert await ids(ward, "AuditEvent", {"entity": "Patient/pat-a"}) == {"ae-1"}
    assert await ids(ward, "AuditEvent", {"agent": "Practitioner/prac-2"}) == {"ae-2"}
    assert await ids(ward, "AuditEvent", {"date": "gt2026-11-03"}) == {"ae-2"}


async def test_sort_by_date_and_last_updated(ward: httpx.AsyncClient) -> None:
    pat_a = {"patient": "pat-a"}
    asc = match_ids(await search(ward, "Observation", {**pat_a, "_sort": "date"}))
    assert asc == ["obs-k1", "obs-k2", "obs-hr"]
    desc = match_ids(await search(ward, "Observation", {**pat_a, "_sort": "-date"}))
    assert desc == ["obs-hr", "obs-k2", "obs-k1"]
    # Seed order is WARD order, so lastUpdated ascends through it.
    by_lu = match_ids(await search(ward, "Observation", {"_sort": "-_lastUpdated"}))
    assert by_lu == ["obs-local", "obs-hr", "obs-na", "obs-k2", "obs-k1"]
    multi = match_ids(await search(ward, "Observation", {"_sort": "date,-_lastUpdated"}))
    assert multi == ["obs-local", "obs-k1", "obs-k2", "obs-na", "obs-hr"]


async def test_summary_count_and_count_zero(ward: httpx.AsyncClient) -> None:
    bundle = await search(ward, "Observation", {"patient": "pat-a", "_summary": "count"})
    assert bundle["total"] == 3 and "entry" not in bundle
    bundle = await search(ward, "Observation", {"_count": "0"})
    assert bundle["total"] == 5 and "entry" not in bundle


async def test_unknown_parameters_are_ignored_and_reported(ward: httpx.AsyncClient) -> None:
    bundle = await search(ward, "Observation", {"patient": "pat-b", "_elements": "id",
                                                "colour": "teal"})
    assert match_ids(bundle) == ["obs-na"]
    outcomes = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcomes) == 1
    reported = " ".join(i["diagnostics"] for i in outcomes[0]["issue"])
    assert "_elements" in reported and "colour" in reported
    self_link = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    assert "colour" not in self_link and "patient=pat-b" in self_link
    r = await ward.get("/Observation", params={"colour": "teal"},
                       headers={"Prefer": "handling=strict"})
    assert r.status_code == 400 and "colour" in r.text


@pytest.mark.parametrize("params", [
    {"date": "yesterday"}, {"date": "xx2026-01-01"}, {"date": "2026-13-01"},
    {"_count": "many"}, {"_count": "-1"}, {"_sort": "status"}, {"_sort": "-"},
    {"_include": "Observation:code"}, {"_include": "Patient:link"}, {"_include": "*"},
    {"_include:iterate": "Observation:patient"}, {"code:text": "potassium"},
    {"patient.name": "Alpha"}, {"_summary": "true"}, {"code": "a|b|c"},
    {"patient": "Patient/"}, {"patient:Location": "x"}, {"_snapshot": "999999"},
])
async def test_bad_values_of_known_parameters_are_400(ward: httpx.AsyncClient,
                                                      params: dict[str, str]) -> None:
    r = await ward.get("/Observation", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["resourceType"] == "OperationOutcome"


async def test_includes_the_token_may_not_read_are_left_out(ward: httpx.AsyncClient) -> None:
    bundle = await search(ward, "DiagnosticReport",
                          {"_id": "dr-2", "_include": "DiagnosticReport:result"},
                          headers=auth("dr-only"))
    modes = [e["search"]["mode"] for e in bundle["entry"]]
    assert modes == ["match", "outcome"]
    assert "Observation" in bundle["entry"][1]["resource"]["issue"][0]["diagnostics"]


async def test_post_search_with_form_parameters(ward: httpx.AsyncClient) -> None:
    r = await ward.post("/Observation/_search", data={"patient": "pat-b"})
    assert r.status_code == 200
    assert match_ids(r.json()) == ["obs-na"]


async def test_escaped_commas_are_literal(ward: httpx.AsyncClient, fhir_server: FhirServer
                                          ) -> None:
    fhir_server.store.load([{"resourceType": "Patient", "id": "pat-comma",
                             "identifier": [{"system": "urn:x", "value": "A,B"}]}])
    assert await ids(ward, "Patient", {"identifier": r"urn:x|A\,B"}) == {"pat-comma"}
    assert await ids(ward, "Patient", {"identifier": "urn:x|A,B"}) == set()


async def test_post_search_takes_only_readable_form_bodies(ward: httpx.AsyncClient) -> None:
    multipart = await ward.post("/Observation/_search", files={"patient": (None, "pat-b")})
    assert multipart.status_code == 415
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for content in (b"patient=%ff%fe", b"\xff\xfe=\x00"):
        r = await ward.post("/Observation/_search", content=content, headers=form)
        assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
