"""The FHIR server's write policy (sandbox/fhir/write_policy.py, docs/security.md §4).

The attacks of the review, performed against the real sandbox as its demo nurse and
clinician with tokens from its own sign-in, now refused; and every legitimate write WardSync
makes (the laboratory's results and corrections, acknowledgements, audit, Task edits and
escalations, nursing notes) still accepted.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from wardsync.auth.session import Session
from wardsync.core import codes
from wardsync.infra.settings_schema import DEFAULT_SCOPES
from wardsync.sandbox.fhir.write_policy import (
    PolicyRefused,
    PreconditionRequired,
    acts_for_a_person,
    check_if_match,
    check_write,
)
from wardsync.sandbox.grants import Grant
from wardsync.sandbox.oauth.accounts import DESKTOP_SCOPES
from wardsync.sandbox.server import Sandbox

PATIENT = "pat-04"
CRITICAL_LYTES = {codes.SODIUM.code: 138, codes.POTASSIUM.code: 6.9, codes.UREA.code: 9.1,
                  codes.CREATININE.code: 110, codes.GLUCOSE.code: 6.1}
LAB_CATEGORY = {"coding": [{
    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
    "code": "laboratory"}]}

# ------------------------------------------------------------------ the rules, pure

NURSE = Grant("wardsync-desktop", "Practitioner/demo-nurse", frozenset({"user/*.cruds"}), 1e12)
LAB = Grant("lab-system", "lab-system", frozenset({"system/Observation.cru"}), 1e12)


def _lab_observation() -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "category": [LAB_CATEGORY]}


def _communication(sender: str) -> dict[str, Any]:
    return {"resourceType": "Communication", "status": "completed",
            "sender": {"reference": sender}}


@pytest.mark.parametrize(
    ("interaction", "rtype", "new", "current"),
    [
        ("create", "Observation", _lab_observation(), None),
        ("update", "Observation", {**_lab_observation(), "category": []}, _lab_observation()),
        ("update", "Observation", _lab_observation(), {"resourceType": "Observation"}),
        ("delete", "Observation", None, _lab_observation()),
        ("create", "DiagnosticReport", {"resourceType": "DiagnosticReport"}, None),
        ("update", "DiagnosticReport", {"resourceType": "DiagnosticReport"}, {}),
        ("update", "AuditEvent", {"resourceType": "AuditEvent"}, {"resourceType": "AuditEvent"}),
        ("delete", "AuditEvent", None, None),
        ("create", "Communication", _communication("Practitioner/demo-clinician"), None),
        ("create", "Communication", {"resourceType": "Communication"}, None),
        ("update", "Communication", _communication("Practitioner/demo-nurse"),
         _communication("Practitioner/demo-clinician")),
    ],
)
def test_a_person_never_writes_beyond_the_policy_whatever_the_scopes(
        interaction, rtype, new, current):
    with pytest.raises(PolicyRefused):
        check_write(NURSE, interaction, rtype, new, current)


def test_what_the_policy_leaves_to_the_scopes():
    check_write(NURSE, "create", "Communication", _communication("Practitioner/demo-nurse"),
                None)
    check_write(NURSE, "create", "Observation", {"resourceType": "Observation"}, None)
    check_write(NURSE, "create", "AuditEvent", {"resourceType": "AuditEvent"}, None)
    check_write(LAB, "update", "Observation", _lab_observation(), _lab_observation())
    with pytest.raises(PolicyRefused):
        check_write(LAB, "update", "AuditEvent", {}, {})  # append-only for everyone
    assert acts_for_a_person(NURSE) and not acts_for_a_person(LAB)


def test_an_update_of_an_existing_resource_names_its_version():
    check_if_match(None, None)  # a create by PUT
    check_if_match('W/"3"', "3")
    for header in (None, "*", " * "):
        with pytest.raises(PreconditionRequired):
            check_if_match(header, "3")


def test_the_public_client_is_granted_exactly_what_the_app_asks_for():
    assert set(DEFAULT_SCOPES) <= _expanded(DESKTOP_SCOPES)
    assert not any("*" in scope for scope in DESKTOP_SCOPES)
    assert not any(scope.startswith(("user/DiagnosticReport.", "user/AuditEvent."))
                   and set(scope.split(".")[1]) & set("ud") for scope in DESKTOP_SCOPES)


def _expanded(scopes: tuple[str, ...]) -> set[str]:
    """`user/Task.cu` also stands for `user/Task.c` and `user/Task.u`."""
    out = set(scopes)
    for scope in scopes:
        if "/" in scope and "." in scope:
            head, perms = scope.rsplit(".", 1)
            out |= {f"{head}.{p}" for p in perms}
    return out


# ------------------------------------------------------------------ the attacks, live


async def _as(session: Session) -> dict[str, str]:
    return {"Authorization": f"Bearer {await session.access_token()}",
            "Content-Type": "application/fhir+json"}


def _if_match(resource: dict[str, Any]) -> dict[str, str]:
    return {"If-Match": f'W/"{resource["meta"]["versionId"]}"'}


def _refused(response: httpx.Response, status: int = 403) -> str:
    assert response.status_code == status, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    return str(outcome["issue"][0]["diagnostics"])


@pytest.mark.slow
async def test_a_nurse_cannot_forge_change_or_withdraw_laboratory_results(
    sandbox: Sandbox, nurse: Session, http: httpx.AsyncClient,
):
    base = sandbox.fhir_base
    headers = await _as(nurse)
    report, observations = await sandbox.lab.post_panel(PATIENT, codes.ELECTROLYTES_PANEL.code,
                                                        CRITICAL_LYTES)
    potassium = next(o for o in observations
                     if o["code"]["coding"][0]["code"] == codes.POTASSIUM.code)

    # A fake critical potassium (an urgent poke to the whole ward).
    fake = {key: value for key, value in potassium.items() if key not in ("id", "meta")}
    assert "laboratory" in _refused(await http.post(f"{base}/Observation", json=fake,
                                                    headers=headers))
    # A real report set to entered-in-error, and a new one, both refused.
    withdrawn = {**report, "status": "entered-in-error"}
    _refused(await http.put(f"{base}/DiagnosticReport/{report['id']}", json=withdrawn,
                            headers={**headers, **_if_match(report)}))
    _refused(await http.post(f"{base}/DiagnosticReport", json={
        key: value for key, value in report.items() if key not in ("id", "meta")},
        headers=headers))
    # The lab value and its flag changed with the app's own scopes, or the category
    # dropped first to slip past the rule: refused.
    lowered = {**potassium, "valueQuantity": {**potassium["valueQuantity"], "value": 4.2},
               "interpretation": []}
    _refused(await http.put(f"{base}/Observation/{potassium['id']}", json=lowered,
                            headers={**headers, **_if_match(potassium)}))
    relabelled = {**potassium, "category": []}
    _refused(await http.put(f"{base}/Observation/{potassium['id']}", json=relabelled,
                            headers={**headers, **_if_match(potassium)}))
    _refused(await http.delete(f"{base}/Observation/{potassium['id']}", headers=headers))

    # Nothing changed; the laboratory itself still corrects its results.
    assert sandbox.store.read("DiagnosticReport", report["id"]) == report
    assert sandbox.store.read("Observation", potassium["id"]) == potassium
    corrected, _ = await sandbox.lab.correct_report(report["id"], {codes.POTASSIUM.code: 6.7})
    assert corrected["status"] == "corrected"


@pytest.mark.slow
async def test_audit_events_are_append_only(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient,
):
    base = sandbox.fhir_base
    headers = await _as(clinician)
    event = {"resourceType": "AuditEvent",
             "type": {"system": "http://dicom.nema.org/resources/ontology/DCM",
                      "code": "110110"},
             "recorded": "2026-12-08T01:00:00Z",
             "agent": [{"who": {"reference": "Practitioner/demo-clinician"},
                        "requestor": True}],
             "source": {"observer": {"display": "test workstation"}}}
    created = await http.post(f"{base}/AuditEvent", json=event, headers=headers)
    assert created.status_code == 201, created.text
    stored = created.json()
    rewritten = {**stored, "recorded": "2020-01-01T00:00:00Z"}
    _refused(await http.put(f"{base}/AuditEvent/{stored['id']}", json=rewritten,
                            headers={**headers, **_if_match(stored)}))
    _refused(await http.delete(f"{base}/AuditEvent/{stored['id']}", headers=headers))
    assert sandbox.store.read("AuditEvent", stored["id"]) == stored


async def test_audit_events_are_append_only_even_for_a_token_allowed_everything(
    client: httpx.AsyncClient,
):
    """The FHIR server alone, with a `system/*.cruds` token: the scopes allow the rewrite,
    the policy does not."""
    created = await client.post("/AuditEvent", json={
        "resourceType": "AuditEvent",
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
        "recorded": "2026-12-08T01:00:00Z",
        "agent": [{"who": {"reference": "Practitioner/demo-clinician"}, "requestor": True}],
        "source": {"observer": {"display": "test workstation"}}})
    assert created.status_code == 201, created.text
    stored = created.json()
    assert "append-only" in _refused(await client.put(
        f"/AuditEvent/{stored['id']}", json={**stored, "recorded": "2020-01-01T00:00:00Z"},
        headers=_if_match(stored)))
    assert "append-only" in _refused(await client.delete(f"/AuditEvent/{stored['id']}"))
    assert (await client.get(f"/AuditEvent/{stored['id']}")).json() == stored


@pytest.mark.slow
async def test_a_communication_speaks_only_for_its_sender(
    sandbox: Sandbox, nurse: Session, clinician: Session, http: httpx.AsyncClient,
):
    base = sandbox.fhir_base
    as_nurse, as_doctor = await _as(nurse), await _as(clinician)
    message = {"resourceType": "Communication", "status": "completed",
               "subject": {"reference": f"Patient/{PATIENT}"},
               "payload": [{"contentString": "Synthetic test message."}]}
    forged = {**message, "sender": {"reference": "Practitioner/demo-clinician"}}
    assert "sender" in _refused(await http.post(f"{base}/Communication", json=forged,
                                                headers=as_nurse))
    _refused(await http.post(f"{base}/Communication", json=message, headers=as_nurse))
    own = await http.post(f"{base}/Communication", json={
        **message, "sender": {"reference": "Practitioner/demo-nurse"}}, headers=as_nurse)
    assert own.status_code == 201, own.text
    # The doctor may not rewrite the nurse's message, even naming himself the sender.
    stored = own.json()
    taken = {**stored, "sender": {"reference": "Practitioner/demo-clinician"}}
    _refused(await http.put(f"{base}/Communication/{stored['id']}", json=taken,
                            headers={**as_doctor, **_if_match(stored)}))


@pytest.mark.slow
async def test_updates_must_name_the_version_they_replace(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient,
):
    base = sandbox.fhir_base
    headers = await _as(clinician)
    found = await http.get(f"{base}/Task", params={"patient": f"Patient/{PATIENT}"},
                           headers=headers)
    task = found.json()["entry"][0]["resource"]
    changed = {**task, "status": "in-progress"}
    assert "If-Match" in _refused(await http.put(f"{base}/Task/{task['id']}", json=changed,
                                                 headers=headers), 428)
    _refused(await http.put(f"{base}/Task/{task['id']}", json=changed,
                            headers={**headers, "If-Match": "*"}), 428)
    assert sandbox.store.read("Task", task["id"]) == task
    saved = await http.put(f"{base}/Task/{task['id']}", json=changed,
                           headers={**headers, **_if_match(task)})
    assert saved.status_code == 200, saved.text
    # A create by PUT (the escalation Task's deterministic id) needs no version; a second
    # one racing it finds the Task and cannot overwrite it.
    new = {**{k: v for k, v in task.items() if k != "meta"}, "id": "esc-policy-test"}
    first = await http.put(f"{base}/Task/esc-policy-test", json=new, headers=headers)
    assert first.status_code == 201, first.text
    _refused(await http.put(f"{base}/Task/esc-policy-test", json={**new, "status": "failed"},
                            headers=headers), 428)


@pytest.mark.slow
async def test_the_desktop_client_cannot_be_granted_wildcard_scopes(
    sandbox: Sandbox, nurse: Session,
):
    granted = set(nurse.tokens.scope)
    assert not any("*" in scope for scope in granted)
    assert granted <= set(DESKTOP_SCOPES)
    assert "user/DiagnosticReport.rs" in granted
    assert not any(scope.startswith("user/DiagnosticReport.") and "c" in scope.split(".")[1]
                   for scope in granted)
