"""Critical lab result alerts (docs/architecture.md §5): identity, state machine, escalation
times, read-back, and the FHIR resources that record acknowledgements and escalations. Pure Python.

Identity. One alert per *released* DiagnosticReport version (`AlertId` = the report reference
and its `meta.versionId`, as `critical.alert_key`): the laboratory releases results by writing
the report (diagnosticreport.html#scope), so a report version is what a clinician acknowledges.
Released means final, amended, corrected or appended (R4 valueset-diagnostic-report-status);
preliminary and partial versions do not alert, so the final version of the same value does
not ask for a second acknowledgement. A correction is a new version and alerts again. A
report is critical when `critical.assess_report` says so with the site's limits; results that
are only abnormal never alert (they are flagged in the panels). A report older than the
rebuild lookback (`REBUILD_LOOKBACK_S`, by `meta.lastUpdated`) never alerts: by then it has
escalated through the paging chain long ago.

States (`AlertLedger`)::

    (report version seen, critical) -> open --(window passed)--> escalated
    open | escalated --(acknowledgement for this exact version)--> acknowledged
    open | escalated --(newer report version, or report withdrawn)--> superseded
    superseded --(acknowledgement for this exact version)--> acknowledged

An id is known once: it is raised (shown, sounded) at most once per ledger, i.e. once per
workstation process; a version already acknowledged when first seen is recorded, never
raised. Acknowledgements and escalations may be seen before their report (a start-up pull
brings everything at once), so they are kept on their own and applied when it arrives; an
acknowledgement also closes a superseded version (someone acted on it before the correction
reached them), so every workstation ends in the same state whatever order things arrive in.

Acknowledgement = a FHIR `Communication` (status completed) created with POST. It is the
record of one event that happened — "the critical result was read back to this clinician" —
which is what Communication is for (communication.html#scope); it is immutable and append
only, so two clinicians acknowledging at once leave two true records and nothing to merge.
A Task would instead be a unit of work whose state is overwritten, so the audit trail would
live in its history, and some workstation would first have to create it. The Communication
carries `sender` (the Practitioner), `sent` (when), the workstation (extension
`WORKSTATION_EXTENSION`), which identifier was read back (`READ_BACK_EXTENSION`), `about` the
exact report version (a versioned reference, references.html#versions) and its critical
Observations, and a payload stating the read-back. Other workstations find it by
`Communication?patient=…&category=ACK`.
The workstation that records an acknowledgement then completes the escalation Task, if one
was written, with an update under If-Match (`escalation_completed`: status completed, the
Communication as its output), so the paging chain's work item closes with the loop.

Escalation = a FHIR `Task` (intent order, priority stat, status requested) for the paging
chain: work somebody must now do, which the paging system takes over by updating its status
and owner. Its id is derived from the alert id (`escalation_task_id`) and its content from the
alert and the site window only (authoredOn is the due time, not the moment of writing), so
every workstation writes the very same resource with PUT (http.html#upsert): concurrent
escalations converge on one Task, created once. The window starts at the report version's
`meta.lastUpdated`, stamped by the server, so every workstation computes the same due time.

Read-back: the clinician types the bed or the MRN shown (`read_back_match`), compared without
case, spaces or punctuation, bed numbers as numbers ("bed 4" matches "Bed 04").

Modules: `critical_alert` (which report version alerts, and what it says), `ledger` (the
state machine), `read_back` (the identity check), `records` (the FHIR Communication and Task).
Patient identity (name, MRN, bed, census) is `core.patient_identity`, shared with the banner.
"""

from wardsync.core.alerts.critical_alert import (
    DEFAULT_ESCALATION_AFTER_S,
    REBUILD_LOOKBACK_S,
    RELEASED_REPORT_STATUSES,
    AlertId,
    CriticalAlert,
    CriticalFinding,
    critical_alert,
    is_withdrawn,
    report_patient_id,
    value_text,
)
from wardsync.core.alerts.ledger import (
    ACTIVE_STATUSES,
    Acknowledgement,
    AlertChanges,
    AlertLedger,
    AlertRecord,
    AlertsChanged,
    AlertStatus,
    Escalation,
    version_newer,
)
from wardsync.core.alerts.read_back import ReadBackKind, read_back_match
from wardsync.core.alerts.records import (
    ACK_CODE,
    ALERT_CODE_SYSTEM,
    ESCALATION_CODE,
    ESCALATION_ID_PREFIX,
    READ_BACK_EXTENSION,
    TASK_TERMINAL_STATUSES,
    WORKSTATION_EXTENSION,
    acknowledgement_from,
    acknowledgement_resource,
    escalation_completed,
    escalation_from,
    escalation_resource,
    escalation_task_id,
)
from wardsync.core.critical import alert_key, is_correction
from wardsync.core.patient_identity import PatientIdentity as AlertPatient
from wardsync.core.patient_identity import patient_identity as alert_patient
from wardsync.core.patient_identity import ward_patient_ids
from wardsync.core.resources import last_updated_s

__all__ = [
    "ACK_CODE", "ACTIVE_STATUSES", "ALERT_CODE_SYSTEM", "DEFAULT_ESCALATION_AFTER_S",
    "ESCALATION_CODE", "ESCALATION_ID_PREFIX", "READ_BACK_EXTENSION", "REBUILD_LOOKBACK_S",
    "RELEASED_REPORT_STATUSES", "TASK_TERMINAL_STATUSES", "WORKSTATION_EXTENSION",
    "Acknowledgement", "AlertChanges",
    "AlertId", "AlertLedger", "AlertPatient", "AlertRecord", "AlertStatus", "AlertsChanged",
    "CriticalAlert", "CriticalFinding", "Escalation", "ReadBackKind", "acknowledgement_from",
    "acknowledgement_resource", "alert_key", "alert_patient", "critical_alert",
    "escalation_completed", "escalation_from", "escalation_resource", "escalation_task_id",
    "is_correction",
    "is_withdrawn", "last_updated_s", "read_back_match", "report_patient_id", "value_text",
    "version_newer", "ward_patient_ids",
]
