"""The FHIR resources that record acknowledgements (Communication) and escalations (Task).

Why a Communication and a Task, and how concurrent writers converge, is described in the
package docstring (`wardsync.core.alerts`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from wardsync.core.alerts.critical_alert import AlertId, CriticalAlert
from wardsync.core.alerts.ledger import Acknowledgement, AlertRecord, Escalation
from wardsync.core.alerts.read_back import ReadBackKind
from wardsync.core.fhirtime import format_instant, instant_seconds
from wardsync.core.patient_identity import PatientIdentity
from wardsync.core.resources import has_code, last_updated_s, relative_ref

Resource = Mapping[str, Any]

ALERT_CODE_SYSTEM: Final = "urn:wardsync:alerts"
ACK_CODE: Final = "critical-result-acknowledgement"
ESCALATION_CODE: Final = "critical-result-escalation"
WORKSTATION_EXTENSION: Final = "urn:wardsync:alerts:workstation"
READ_BACK_EXTENSION: Final = "urn:wardsync:alerts:read-back"
ESCALATION_ID_PREFIX: Final = "crit-esc-"


def _coding(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": ALERT_CODE_SYSTEM, "code": code, "display": display}]}


def _instant(at: datetime) -> str:
    return format_instant(at, "milliseconds")


def acknowledgement_resource(
    record: AlertRecord, patient: PatientIdentity, *, practitioner_ref: str | None,
    practitioner_name: str, workstation: str, at: datetime, read_back: ReadBackKind,
) -> dict[str, Any]:
    """The Communication recording that `record`'s exact report version was acknowledged."""
    alert = record.alert
    shown = patient.mrn if read_back == "mrn" else patient.bed
    sender: dict[str, Any] = {"display": practitioner_name or "Unknown user"}
    if practitioner_ref:
        sender["reference"] = practitioner_ref
    about = [{"reference": alert.id.versioned_ref}]
    about += [{"reference": f"{f.ref}/_history/{f.version}" if f.version else f.ref}
              for f in alert.findings]
    text = (f"Critical result acknowledged with read-back of the patient's "
            f"{'MRN' if read_back == 'mrn' else 'bed'} ({shown}): {alert.summary}.")
    resource: dict[str, Any] = {
        "resourceType": "Communication",
        "extension": [
            {"url": WORKSTATION_EXTENSION, "valueString": workstation},
            {"url": READ_BACK_EXTENSION, "valueCode": read_back},
        ],
        "status": "completed",
        "category": [_coding(ACK_CODE, "Critical result acknowledgement")],
        "priority": "stat",
        "subject": {"reference": f"Patient/{alert.patient_id}"},
        "about": about,
        "sent": _instant(at),
        "sender": sender,
        "payload": [{"contentString": text}],
    }
    if record.escalation is not None:
        # The paging chain's Task this acknowledgement answers (communication.html basedOn).
        resource["basedOn"] = [{"reference": record.escalation.ref}]
    return resource


def _has_code(concepts: object, code: str) -> bool:
    return has_code(concepts, code, ALERT_CODE_SYSTEM)


def _extension(resource: Resource, url: str) -> str:
    for ext in resource.get("extension") or ():
        if isinstance(ext, Mapping) and ext.get("url") == url:
            for key in ("valueString", "valueCode"):
                value = ext.get(key)
                if isinstance(value, str):
                    return value
    return ""


def acknowledgement_from(resource: Resource) -> Acknowledgement | None:
    """Read an acknowledgement Communication (None if it is not one, or was withdrawn)."""
    if resource.get("resourceType") != "Communication":
        return None
    if resource.get("status") != "completed" or not _has_code(resource.get("category"), ACK_CODE):
        return None
    alert_id = next((a for item in resource.get("about") or ()
                     if isinstance(item, Mapping)
                     and (a := AlertId.parse(item.get("reference"))) is not None), None)
    if alert_id is None:
        return None
    sender = resource.get("sender")
    sender = sender if isinstance(sender, Mapping) else {}
    by_ref = relative_ref(sender.get("reference")) or ""
    sent = instant_seconds(resource.get("sent")) or last_updated_s(resource) or 0.0
    return Acknowledgement(
        alert_id=alert_id, ref=f"Communication/{resource.get('id')}", by_ref=by_ref,
        by_name=str(sender.get("display") or by_ref or "unknown"), at=sent,
        workstation=_extension(resource, WORKSTATION_EXTENSION),
        read_back=_extension(resource, READ_BACK_EXTENSION),
    )


def escalation_task_id(alert_id: AlertId) -> str:
    """The escalation Task's logical id: the same on every workstation (FHIR ids: 64 chars)."""
    digest = hashlib.sha256(alert_id.versioned_ref.encode("utf-8")).hexdigest()
    return ESCALATION_ID_PREFIX + digest[:40]


def _minutes(seconds: float) -> str:
    minutes = seconds / 60.0
    return f"{minutes:g} min" if minutes >= 1 else f"{seconds:g} s"


def escalation_resource(
    alert: CriticalAlert, *, after_s: float, ward_id: str | None = None,
) -> dict[str, Any]:
    """The escalation Task for the paging chain; deterministic, so concurrent PUTs converge."""
    due = datetime.fromtimestamp(alert.escalation_due(after_s), UTC)
    task: dict[str, Any] = {
        "resourceType": "Task",
        "id": escalation_task_id(alert.id),
        "identifier": [{"system": ALERT_CODE_SYSTEM, "value": alert.id.versioned_ref}],
        "status": "requested",
        "intent": "order",
        "priority": "stat",
        "code": _coding(ESCALATION_CODE, "Escalate unacknowledged critical result"),
        "description": (f"Critical laboratory result not acknowledged within "
                        f"{_minutes(after_s)}: page the responsible clinician."),
        "focus": {"reference": alert.id.versioned_ref},
        "for": {"reference": f"Patient/{alert.patient_id}"},
        "authoredOn": _instant(due),
    }
    if ward_id:
        task["location"] = {"reference": f"Location/{ward_id}"}
    return task


def escalation_from(resource: Resource) -> Escalation | None:
    """Read an escalation Task (None if it is not one, or was entered in error)."""
    if resource.get("resourceType") != "Task" or not _has_code(resource.get("code"),
                                                               ESCALATION_CODE):
        return None
    status = str(resource.get("status", ""))
    if status == "entered-in-error":
        return None
    focus = resource.get("focus")
    alert_id = AlertId.parse(focus.get("reference")) if isinstance(focus, Mapping) else None
    if alert_id is None:
        return None
    at = instant_seconds(resource.get("authoredOn")) or last_updated_s(resource) or 0.0
    return Escalation(alert_id, f"Task/{resource.get('id')}", at, status)


# Task states in which the paging chain's work is over (R4 valueset-task-status: the Task
# state machine's terminal states); a Task in any other state is completed on acknowledgement.
TASK_TERMINAL_STATUSES: Final = frozenset(
    {"completed", "cancelled", "failed", "rejected", "entered-in-error"})


def escalation_completed(task: Resource, acknowledgement_ref: str,
                         at: datetime) -> dict[str, Any] | None:
    """The escalation Task completed by the acknowledgement `Communication/<id>`, or None.

    None when `task` is not an escalation Task or its work is over already. The paging chain
    may have set `owner` or moved the Task on (accepted, in-progress): everything it wrote is
    kept; only `status`, `lastModified` and an `output` referencing the acknowledgement
    (task.html#outputs: "Task.output.valueReference") are set. The caller sends it with
    If-Match of the version read, so a concurrent change is never overwritten.
    """
    if escalation_from(task) is None or task.get("status") in TASK_TERMINAL_STATUSES:
        return None
    done = {k: v for k, v in task.items() if k != "meta"}
    done["status"] = "completed"
    done["lastModified"] = _instant(at.astimezone(UTC))
    outputs = [o for o in task.get("output") or () if isinstance(o, Mapping)
               and not _has_code(o.get("type"), ACK_CODE)]
    outputs.append({"type": _coding(ACK_CODE, "Critical result acknowledgement"),
                    "valueReference": {"reference": acknowledgement_ref}})
    done["output"] = outputs
    return done
