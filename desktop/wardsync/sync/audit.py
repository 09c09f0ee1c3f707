"""Record access is audited on the server as FHIR AuditEvents, never in a local file.

Opening a patient's record writes one AuditEvent (R4 auditevent.html; type `rest`, subtype
`read`, action `R`) naming the signed-in practitioner, this workstation and the patient. Views
of the same patient by the same user within `COALESCE_S` count as one access, so moving
between windows does not flood the audit log. Writes happen in the background with a few
retries; a write that keeps failing is logged (reference only) and counted, and never blocks
or breaks the clinician's view.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from wardsync.core.fhirtime import format_instant
from wardsync.core.tasks import TaskOwner
from wardsync.core.timer import SYSTEM_TIMER, Timer
from wardsync.fhir.client import FhirClient
from wardsync.fhir.errors import FhirError

log = logging.getLogger(__name__)

COALESCE_S = 300.0  # repeat views of one patient within 5 min are one access
RETRY_DELAYS_S = (1.0, 5.0, 30.0)
AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"


def access_event(
    *, practitioner_id: str, patient_id: str, workstation_id: str, app_version: str,
    recorded: datetime,
) -> dict[str, Any]:
    """One AuditEvent for a clinician viewing a patient's record (R4 AuditEvent)."""
    return {
        "resourceType": "AuditEvent",
        "type": {"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": RESTFUL_INTERACTION, "code": "read", "display": "read"}],
        "action": "R",
        "recorded": format_instant(recorded, "milliseconds"),
        "outcome": "0",
        "agent": [{
            "who": {"reference": f"Practitioner/{practitioner_id}"},
            "requestor": True,
            "network": {"address": workstation_id, "type": "1"},  # 1 = machine name
        }],
        "source": {
            "site": workstation_id,
            "observer": {"display": f"WardSync {app_version}"},
            "type": [{"system": SOURCE_TYPE, "code": "1", "display": "User Device"}],
        },
        "entity": [{
            "what": {"reference": f"Patient/{patient_id}"},
            "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
        }],
    }


class AuditTrail:
    """Writes access AuditEvents for one signed-in user on one workstation."""

    def __init__(
        self, fhir: FhirClient, *, practitioner_id: str, workstation_id: str, app_version: str,
        timer: Timer | None = None,
    ) -> None:
        self._fhir = fhir
        self._practitioner_id = practitioner_id
        self._workstation_id = workstation_id
        self._version = app_version
        self._timer: Timer = timer or SYSTEM_TIMER
        self._last: dict[str, float] = {}
        self._tasks = TaskOwner("audit trail", logger=log, timer=self._timer)
        self.written = 0
        self.failed = 0

    def record_access(self, patient_id: str) -> bool:
        """Note that the user opened this patient's record; True if an event will be written."""
        now = self._timer.monotonic()
        last = self._last.get(patient_id)
        if last is not None and now - last < COALESCE_S:
            return False
        self._last[patient_id] = now
        event = access_event(
            practitioner_id=self._practitioner_id, patient_id=patient_id,
            workstation_id=self._workstation_id, app_version=self._version,
            recorded=datetime.fromtimestamp(self._timer.wall(), UTC),
        )
        self._tasks.spawn(self._write(event, patient_id), name="audit event write")
        return True

    async def _write(self, event: dict[str, Any], patient_id: str) -> None:
        for delay in (*RETRY_DELAYS_S, None):
            try:
                await self._fhir.create(event)
            except FhirError as exc:
                if delay is None:
                    self.failed += 1
                    log.warning("audit event for Patient/%s not written: %s", patient_id, exc)
                    return
                await self._timer.sleep(delay)
            else:
                self.written += 1
                return

    def forget(self) -> None:
        """User switch: the next user's views are new accesses."""
        self._last.clear()

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Wait for pending writes (sign-out, shutdown); then cancel what is still waiting."""
        if not await self._tasks.wait(timeout_s):
            await self._tasks.cancel_all()
