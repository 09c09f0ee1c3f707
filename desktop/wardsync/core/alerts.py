"""Critical lab result alerts (docs/architecture.md §5): identity, state machine, escalation times,
read-back, and the FHIR resources that record acknowledgements and escalations. Pure Python.

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

Escalation = a FHIR `Task` (intent order, priority stat, status requested) for the paging
chain: work somebody must now do, which the paging system takes over by updating its status
and owner. Its id is derived from the alert id (`escalation_task_id`) and its content from the
alert and the site window only (authoredOn is the due time, not the moment of writing), so
every workstation writes the very same resource with PUT (http.html#upsert): concurrent
escalations converge on one Task, created once. The window starts at the report version's
`meta.lastUpdated`, stamped by the server, so every workstation computes the same due time.

Read-back: the clinician types the bed or the MRN shown (`read_back_match`), compared without
case, spaces or punctuation, bed numbers as numbers ("bed 4" matches "Bed 04").
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Literal

from wardsync.core import codes
from wardsync.core.critical import (
    DEFAULT_CRITICAL_LIMITS,
    WITHDRAWN_STATUSES,
    CriticalLimit,
    alert_key,
    assess_observation,
    assess_report,
    is_correction,
    relative_ref,
)
from wardsync.core.events import Event
from wardsync.core.fhirtime import parse_instant

Resource = Mapping[str, Any]
Lookup = Callable[[str], Resource | None]

ALERT_CODE_SYSTEM: Final = "urn:wardsync:alerts"
ACK_CODE: Final = "critical-result-acknowledgement"
ESCALATION_CODE: Final = "critical-result-escalation"
WORKSTATION_EXTENSION: Final = "urn:wardsync:alerts:workstation"
READ_BACK_EXTENSION: Final = "urn:wardsync:alerts:read-back"
ESCALATION_ID_PREFIX: Final = "crit-esc-"

RELEASED_REPORT_STATUSES: Final = frozenset({"final", "amended", "corrected", "appended"})
DEFAULT_ESCALATION_AFTER_S: Final = 15 * 60.0  # docs/architecture.md §5: 15-30 min for inpatients
# Alerts are rebuilt from the server for reports released in this window. Guidelines ask for
# acknowledgement within an hour at most and unacknowledged alerts escalate after the site
# window, so an older report has been handled through the paging chain already.
REBUILD_LOOKBACK_S: Final = 72 * 3600.0

ReadBackKind = Literal["bed", "mrn"]


# ------------------------------------------------------------------------------ identity


@dataclass(frozen=True, slots=True, order=True)
class AlertId:
    """One released report version: `DiagnosticReport/<id>` and its `meta.versionId`."""

    report_ref: str
    version: str

    @property
    def report_id(self) -> str:
        return self.report_ref.split("/", 1)[1]

    @property
    def versioned_ref(self) -> str:
        """`DiagnosticReport/<id>/_history/<version>` (R4 references.html#versions)."""
        return f"{self.report_ref}/_history/{self.version}"

    @classmethod
    def parse(cls, reference: object) -> AlertId | None:
        """The alert id named by a versioned DiagnosticReport reference, or None."""
        if not isinstance(reference, str):
            return None
        parts = reference.rstrip("/").split("/")
        if len(parts) < 4 or parts[-2] != "_history" or parts[-4] != "DiagnosticReport":
            return None
        rid, version = parts[-3], parts[-1]
        if not rid or not version:
            return None
        return cls(f"DiagnosticReport/{rid}", version)

    def __str__(self) -> str:
        return self.versioned_ref


@dataclass(frozen=True, slots=True)
class CriticalFinding:
    """One critical result of an alert: "Potassium 6.9 mmol/L", and why it is critical."""

    ref: str
    version: str
    test: str
    value: str
    reasons: tuple[str, ...]

    @property
    def text(self) -> str:
        return f"{self.test} {self.value}".strip()


@dataclass(frozen=True, slots=True)
class CriticalAlert:
    """What a critical report version says, enough to show, acknowledge and escalate it."""

    id: AlertId
    patient_id: str
    released_at: float  # epoch seconds: the version's meta.lastUpdated (server clock)
    title: str
    status: str
    findings: tuple[CriticalFinding, ...]
    reasons: tuple[str, ...]

    @property
    def is_correction(self) -> bool:
        return self.status in ("amended", "corrected", "appended")

    @property
    def summary(self) -> str:
        """"Potassium 6.9 mmol/L; Sodium 118 mmol/L" (or the reasons when no value is known)."""
        texts = [f.text for f in self.findings if f.value]
        return "; ".join(texts) if texts else "; ".join(self.reasons)

    def escalation_due(self, after_s: float) -> float:
        """Epoch seconds at which the alert escalates if still unacknowledged."""
        return self.released_at + after_s


def _instant_s(value: object) -> float | None:
    parsed = parse_instant(value)
    return parsed.timestamp() if parsed is not None else None


def last_updated_s(resource: Resource) -> float | None:
    """The resource's meta.lastUpdated as epoch seconds (None if missing or invalid)."""
    meta = resource.get("meta")
    return _instant_s(meta.get("lastUpdated")) if isinstance(meta, Mapping) else None


def _concept_text(concept: object) -> str:
    if not isinstance(concept, Mapping):
        return ""
    text = concept.get("text")
    if isinstance(text, str):
        return text
    for coding in concept.get("coding") or ():
        display = coding.get("display") if isinstance(coding, Mapping) else None
        if isinstance(display, str):
            return display.split(" [", 1)[0]
    return ""


def _loinc(obs: Resource) -> str | None:
    concept = obs.get("code")
    for coding in (concept.get("coding") or ()) if isinstance(concept, Mapping) else ():
        if isinstance(coding, Mapping) and coding.get("system") == codes.LOINC:
            code = coding.get("code")
            return code if isinstance(code, str) else None
    return None


def _test_name(obs: Resource, limits: Mapping[str, CriticalLimit]) -> str:
    loinc = _loinc(obs)
    if loinc is not None and loinc in limits:
        return limits[loinc].label
    known = codes.LAB_TESTS_BY_CODE.get(loinc or "")
    if known is not None:
        return known.display.split(" [", 1)[0]
    return _concept_text(obs.get("code")) or "Result"


def value_text(obs: Resource) -> str:
    """The result as shown to a clinician: "<2.5 mmol/L", "6.9 mmol/L", or "" if none."""
    quantity = obs.get("valueQuantity")
    if isinstance(quantity, Mapping):
        value = quantity.get("value")
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            comparator = quantity.get("comparator")
            prefix = comparator if comparator in ("<", "<=", ">", ">=") else ""
            unit = quantity.get("unit") or quantity.get("code") or ""
            return f"{prefix}{value:g} {unit}".strip()
    value_string = obs.get("valueString")
    if isinstance(value_string, str):
        return value_string
    return _concept_text(obs.get("valueCodeableConcept"))


def _version(resource: Resource) -> str:
    meta = resource.get("meta")
    version = meta.get("versionId") if isinstance(meta, Mapping) else None
    return version if isinstance(version, str) else ""


def report_patient_id(report: Resource) -> str | None:
    """The logical id of the report's subject when it is a Patient."""
    subject = report.get("subject")
    ref = relative_ref(subject.get("reference")) if isinstance(subject, Mapping) else None
    return ref.split("/", 1)[1] if ref and ref.startswith("Patient/") else None


def critical_alert(
    report: Resource, get: Lookup, limits: Mapping[str, CriticalLimit] = DEFAULT_CRITICAL_LIMITS,
) -> CriticalAlert | None:
    """The alert this report version raises, or None (not released, not critical, no patient).

    `get("Observation/<id>")` returns a held result (or None); results not held count as
    unknown, so a report alerts only on results actually seen to be critical.
    """
    if report.get("resourceType") != "DiagnosticReport":
        return None
    if report.get("status") not in RELEASED_REPORT_STATUSES:
        return None
    ref, version = alert_key(report)
    patient_id = report_patient_id(report)
    if not version or patient_id is None:
        return None
    results: dict[str, Resource] = {}
    for item in report.get("result") or ():
        obs_ref = relative_ref(item.get("reference")) if isinstance(item, Mapping) else None
        held = get(obs_ref) if obs_ref and obs_ref.startswith("Observation/") else None
        if obs_ref and held is not None:
            results[obs_ref] = held
    assessment = assess_report(report, results, limits)
    if not assessment.is_critical:
        return None
    findings = []
    for obs_ref, obs in results.items():
        verdict = assess_observation(obs, limits)
        if verdict.is_critical:
            findings.append(CriticalFinding(obs_ref, _version(obs), _test_name(obs, limits),
                                            value_text(obs), verdict.reasons))
    released = last_updated_s(report)
    if released is None:
        released = _instant_s(report.get("issued")) or 0.0
    return CriticalAlert(
        id=AlertId(ref, version), patient_id=patient_id, released_at=released,
        title=_concept_text(report.get("code")) or "Laboratory report",
        status=str(report.get("status")), findings=tuple(findings),
        reasons=assessment.reasons,
    )


def is_withdrawn(report: Resource) -> bool:
    """True when the report version withdraws what it said (cancelled, entered-in-error)."""
    return report.get("status") in WITHDRAWN_STATUSES


# ------------------------------------------------------------------------------ records


class AlertStatus(StrEnum):
    OPEN = "open"
    ESCALATED = "escalated"
    ACKNOWLEDGED = "acknowledged"
    SUPERSEDED = "superseded"


ACTIVE_STATUSES: Final = frozenset({AlertStatus.OPEN, AlertStatus.ESCALATED})


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """An acknowledgement found on the server (or just written by this workstation)."""

    alert_id: AlertId
    ref: str  # Communication/<id>
    by_ref: str  # Practitioner/<id> ("" if the sender was given by name only)
    by_name: str
    at: float  # epoch seconds (Communication.sent)
    workstation: str
    read_back: str  # "bed" | "mrn" | ""


@dataclass(frozen=True, slots=True)
class Escalation:
    """The escalation Task of an alert, as found on the server."""

    alert_id: AlertId
    ref: str  # Task/<id>
    at: float  # epoch seconds (Task.authoredOn: the due time)
    status: str


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert and where it stands. `raised` is False for a version already acknowledged
    when this workstation first saw it (recorded, never shown as new)."""

    alert: CriticalAlert
    status: AlertStatus
    raised: bool
    acknowledgement: Acknowledgement | None = None
    escalation: Escalation | None = None
    superseded_by: str = ""  # the newer version, or "withdrawn"

    @property
    def id(self) -> AlertId:
        return self.alert.id

    @property
    def patient_id(self) -> str:
        return self.alert.patient_id

    @property
    def active(self) -> bool:
        """Still waiting for an acknowledgement (open or escalated)."""
        return self.status in ACTIVE_STATUSES

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.alert.released_at)


@dataclass(frozen=True, slots=True)
class AlertChanges:
    """What one update changed, by alert id. `problems`: alerts whose escalation could not be
    written (the message is on the alert center), so views show it."""

    raised: tuple[AlertId, ...] = ()
    acknowledged: tuple[AlertId, ...] = ()
    escalated: tuple[AlertId, ...] = ()
    superseded: tuple[AlertId, ...] = ()
    problems: tuple[AlertId, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.raised or self.acknowledged or self.escalated or self.superseded
                    or self.problems)

    def __add__(self, other: AlertChanges) -> AlertChanges:
        return AlertChanges(self.raised + other.raised, self.acknowledged + other.acknowledged,
                            self.escalated + other.escalated, self.superseded + other.superseded,
                            self.problems + other.problems)


@dataclass(frozen=True, slots=True)
class AlertsChanged(Event):
    """Bus event: alerts were raised, acknowledged, escalated or superseded.

    Urgent (delivered at once, not at the next Qt tick) when an alert was raised or escalated.
    """

    changes: AlertChanges

    @property
    def urgent(self) -> bool:
        return bool(self.changes.raised or self.changes.escalated)


def version_newer(candidate: str, held: str) -> bool:
    """True if versionId `candidate` is newer than `held` (numbers compared as numbers)."""
    if candidate.isdigit() and held.isdigit():
        return int(candidate) > int(held)
    return candidate > held


@dataclass
class AlertLedger:
    """The state machine of every alert this workstation knows (see the module docstring)."""

    _records: dict[AlertId, AlertRecord] = field(default_factory=dict)
    _acks: dict[AlertId, Acknowledgement] = field(default_factory=dict)
    _escalations: dict[AlertId, Escalation] = field(default_factory=dict)
    _newest: dict[str, str] = field(default_factory=dict)  # report ref -> newest version seen

    def get(self, alert_id: AlertId) -> AlertRecord | None:
        return self._records.get(alert_id)

    def records(self) -> list[AlertRecord]:
        """Every known alert, oldest release first."""
        return sorted(self._records.values(), key=lambda r: (r.alert.released_at, r.id))

    def active(self) -> list[AlertRecord]:
        """Alerts waiting for acknowledgement, oldest release first."""
        return [r for r in self.records() if r.active]

    def observe_report(
        self, report_ref: str, version: str, alert: CriticalAlert | None, *,
        withdrawn: bool = False,
    ) -> AlertChanges:
        """The newest known version of a report, with the alert it raises (or None)."""
        held = self._newest.get(report_ref)
        if held is not None and held != version and not version_newer(version, held):
            return AlertChanges()  # an older version arriving late changes nothing
        self._newest[report_ref] = version
        superseded = []
        for rid, rec in list(self._records.items()):
            if rid.report_ref == report_ref and rid.version != version and rec.active:
                self._records[rid] = replace(rec, status=AlertStatus.SUPERSEDED,
                                             superseded_by="withdrawn" if withdrawn else version)
                superseded.append(rid)
        raised: list[AlertId] = []
        if alert is not None and alert.id not in self._records:
            if alert.id.report_ref != report_ref or alert.id.version != version:
                raise ValueError("the alert is not about this report version")
            ack = self._acks.get(alert.id)
            esc = self._escalations.get(alert.id)
            if ack is not None:
                self._records[alert.id] = AlertRecord(alert, AlertStatus.ACKNOWLEDGED, False,
                                                      ack, esc)
            else:
                status = AlertStatus.ESCALATED if esc is not None else AlertStatus.OPEN
                self._records[alert.id] = AlertRecord(alert, status, True, None, esc)
                raised.append(alert.id)
        return AlertChanges(raised=tuple(raised), superseded=tuple(superseded))

    def observe_acknowledgement(self, ack: Acknowledgement) -> AlertChanges:
        """An acknowledgement of one exact version: closes that alert (the first one counts)."""
        first = self._acks.get(ack.alert_id)
        if first is None or (ack.at, ack.ref) < (first.at, first.ref):
            self._acks[ack.alert_id] = ack
        rec = self._records.get(ack.alert_id)
        if rec is None:
            return AlertChanges()
        if rec.active or rec.status is AlertStatus.SUPERSEDED:
            self._records[ack.alert_id] = replace(rec, status=AlertStatus.ACKNOWLEDGED,
                                                  acknowledgement=self._acks[ack.alert_id])
            return AlertChanges(acknowledged=(ack.alert_id,))
        if rec.status is AlertStatus.ACKNOWLEDGED:
            self._records[ack.alert_id] = replace(rec, acknowledgement=self._acks[ack.alert_id])
        return AlertChanges()

    def observe_escalation(self, esc: Escalation) -> AlertChanges:
        """The alert's escalation Task exists on the server."""
        self._escalations[esc.alert_id] = esc
        rec = self._records.get(esc.alert_id)
        if rec is None:
            return AlertChanges()
        if rec.status is AlertStatus.OPEN:
            self._records[esc.alert_id] = replace(rec, status=AlertStatus.ESCALATED,
                                                  escalation=esc)
            return AlertChanges(escalated=(esc.alert_id,))
        self._records[esc.alert_id] = replace(rec, escalation=esc)
        return AlertChanges()

    def due_for_escalation(self, now: float, after_s: float) -> list[AlertId]:
        """Open (not yet escalated) alerts whose window has passed at `now`."""
        return [r.id for r in self.records()
                if r.status is AlertStatus.OPEN and r.alert.escalation_due(after_s) <= now]

    def next_escalation_due(self, after_s: float) -> float | None:
        """When the next open alert escalates (epoch seconds), or None if none is open."""
        dues = [r.alert.escalation_due(after_s) for r in self._records.values()
                if r.status is AlertStatus.OPEN]
        return min(dues, default=None)


# ------------------------------------------------------------------------------ census, identity


def _location_refs(encounter: Resource) -> list[str]:
    out = []
    for loc in encounter.get("location") or ():
        inner = loc.get("location") if isinstance(loc, Mapping) else None
        ref = relative_ref(inner.get("reference")) if isinstance(inner, Mapping) else None
        if ref is not None:
            out.append(ref)
    return out


def on_ward(encounter: Resource, get: Lookup, ward_id: str) -> bool:
    """An in-progress stay located on the ward itself or on one of its beds/rooms."""
    if encounter.get("status") != "in-progress":
        return False
    ward_ref = f"Location/{ward_id}"
    for ref in _location_refs(encounter):
        if ref == ward_ref:
            return True
        location = get(ref)
        part_of = location.get("partOf") if location is not None else None
        if isinstance(part_of, Mapping) and relative_ref(part_of.get("reference")) == ward_ref:
            return True
    return False


def ward_patient_ids(encounters: Iterable[Resource], get: Lookup, ward_id: str) -> frozenset[str]:
    """Logical ids of the patients with an in-progress stay on the ward (its census)."""
    out = set()
    for enc in encounters:
        if not on_ward(enc, get, ward_id):
            continue
        subject = enc.get("subject")
        ref = relative_ref(subject.get("reference")) if isinstance(subject, Mapping) else None
        if ref is not None and ref.startswith("Patient/"):
            out.add(ref.split("/", 1)[1])
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class AlertPatient:
    """Who an alert is about, as the banner and the read-back show it."""

    patient_id: str
    name: str
    mrn: str
    bed: str

    @property
    def label(self) -> str:
        """"Bed 04 · DEMOPATIENT, Charlie · MRN SYN1991709" (parts that are known)."""
        parts = [self.bed, self.name, f"MRN {self.mrn}" if self.mrn else ""]
        return " · ".join(p for p in parts if p)


def display_name(patient: Resource | None) -> str:
    """"FAMILY, Given" — the hospital convention for identity banners and lists."""
    if not patient:
        return "Unknown patient"
    names = [n for n in patient.get("name") or () if isinstance(n, Mapping)]
    name = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    family = str(name.get("family", "")).upper()
    given = " ".join(g for g in name.get("given") or () if isinstance(g, str))
    return f"{family}, {given}".strip(", ") or "Unnamed patient"


def mrn_of(patient: Resource | None) -> str:
    for ident in (patient or {}).get("identifier") or ():
        if isinstance(ident, Mapping) and ident.get("system") == codes.MRN_SYSTEM:
            return str(ident.get("value", ""))
    return ""


def _bed_of(encounters: Iterable[Resource], get: Lookup, ward_id: str) -> str:
    for enc in encounters:
        if not on_ward(enc, get, ward_id):
            continue
        for ref in _location_refs(enc):
            location = get(ref)
            if location is None:
                continue
            physical = location.get("physicalType")
            for coding in (physical.get("coding") or ()) if isinstance(physical, Mapping) else ():
                if isinstance(coding, Mapping) and coding.get("code") == "bd":
                    return str(location.get("name", ""))
    return ""


def alert_patient(
    patient_id: str, get: Lookup, encounters: Iterable[Resource], ward_id: str,
) -> AlertPatient:
    """Name, MRN and bed of a patient from held resources (`encounters`: their stays)."""
    patient = get(f"Patient/{patient_id}")
    return AlertPatient(patient_id, display_name(patient), mrn_of(patient),
                        _bed_of(encounters, get, ward_id))


def _squash(text: str) -> str:
    return "".join(ch for ch in text.casefold() if ch.isalnum())


def _bed_number(text: str) -> str:
    squashed = _squash(text)
    for word in ("bed", "bd"):
        if squashed.startswith(word) and squashed[len(word):]:
            squashed = squashed[len(word):]
            break
    return str(int(squashed)) if squashed.isdigit() else squashed


def read_back_match(typed: str, patient: AlertPatient) -> ReadBackKind | None:
    """Which identifier the clinician read back correctly ("mrn" or "bed"), or None."""
    if not isinstance(typed, str) or not _squash(typed):
        return None
    if patient.mrn and _squash(typed) == _squash(patient.mrn):
        return "mrn"
    if patient.bed and _bed_number(patient.bed) and _bed_number(typed) == _bed_number(patient.bed):
        return "bed"
    return None


# ------------------------------------------------------------------------------ FHIR resources


def _coding(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": ALERT_CODE_SYSTEM, "code": code, "display": display}]}


def _instant(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("FHIR instants need a time zone")
    return at.isoformat(timespec="milliseconds")


def acknowledgement_resource(
    record: AlertRecord, patient: AlertPatient, *, practitioner_ref: str | None,
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
    for concept in concepts if isinstance(concepts, list) else [concepts]:
        for coding in (concept.get("coding") or ()) if isinstance(concept, Mapping) else ():
            if (isinstance(coding, Mapping) and coding.get("system") == ALERT_CODE_SYSTEM
                    and coding.get("code") == code):
                return True
    return False


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
    sent = _instant_s(resource.get("sent")) or last_updated_s(resource) or 0.0
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
    at = _instant_s(resource.get("authoredOn")) or last_updated_s(resource) or 0.0
    return Escalation(alert_id, f"Task/{resource.get('id')}", at, status)


__all__ = [
    "ACK_CODE", "ALERT_CODE_SYSTEM", "ESCALATION_CODE", "REBUILD_LOOKBACK_S", "Acknowledgement",
    "AlertChanges", "AlertId", "AlertLedger", "AlertPatient", "AlertRecord", "AlertStatus",
    "AlertsChanged", "CriticalAlert", "CriticalFinding", "Escalation", "acknowledgement_from",
    "acknowledgement_resource", "alert_patient", "critical_alert", "escalation_from",
    "escalation_resource", "escalation_task_id", "is_correction", "is_withdrawn",
    "read_back_match", "ward_patient_ids",
]
