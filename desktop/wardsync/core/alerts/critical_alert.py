"""Which released report version raises a critical-result alert, and what the alert says.

Identity: one alert per *released* DiagnosticReport version (`AlertId`); see the package
docstring (`wardsync.core.alerts`) for why a report version is what a clinician acknowledges.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from wardsync.core import codes
from wardsync.core.critical import (
    DEFAULT_CRITICAL_LIMITS,
    WITHDRAWN_STATUSES,
    CriticalLimit,
    alert_key,
    assess_observation,
    assess_report,
)
from wardsync.core.fhirtime import instant_seconds
from wardsync.core.resources import (
    codings,
    first_code,
    last_updated_s,
    parse_reference,
    reference_id,
    relative_ref,
    version_id,
)

Resource = Mapping[str, Any]
Lookup = Callable[[str], Resource | None]

RELEASED_REPORT_STATUSES: Final = frozenset({"final", "amended", "corrected", "appended"})
DEFAULT_ESCALATION_AFTER_S: Final = 15 * 60.0  # docs/architecture.md §5: 15-30 min inpatients
# Alerts are rebuilt from the server for reports released in this window. Guidelines ask for
# acknowledgement within an hour at most and unacknowledged alerts escalate after the site
# window, so an older report has been handled through the paging chain already.
REBUILD_LOOKBACK_S: Final = 72 * 3600.0


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
        parsed = parse_reference(reference)
        if parsed is None or parsed.type != "DiagnosticReport" or not parsed.version:
            return None
        return cls(parsed.relative, parsed.version)

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



def _concept_text(concept: object) -> str:
    """A CodeableConcept's text, else its first display without the "[unit]" LOINC suffix."""
    if isinstance(concept, Mapping) and isinstance(concept.get("text"), str):
        return str(concept["text"])
    return next((str(c["display"]).split(" [", 1)[0] for c in codings(concept)
                 if isinstance(c.get("display"), str)), "")


def _test_name(obs: Resource, limits: Mapping[str, CriticalLimit]) -> str:
    loinc = first_code(obs.get("code"), codes.LOINC)
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
    text = obs.get("valueString")
    if isinstance(text, str):
        return text
    return _concept_text(obs.get("valueCodeableConcept"))



def report_patient_id(report: Resource) -> str | None:
    """The logical id of the report's subject when it is a Patient."""
    return reference_id(report.get("subject"), "Patient")


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
            findings.append(CriticalFinding(obs_ref, version_id(obs) or "", _test_name(obs, limits),
                                            value_text(obs), verdict.reasons))
    released = last_updated_s(report)
    if released is None:
        released = instant_seconds(report.get("issued")) or 0.0
    return CriticalAlert(
        id=AlertId(ref, version), patient_id=patient_id, released_at=released,
        title=_concept_text(report.get("code")) or "Laboratory report",
        status=str(report.get("status")), findings=tuple(findings),
        reasons=assessment.reasons,
    )


def is_withdrawn(report: Resource) -> bool:
    """True when the report version withdraws what it said (cancelled, entered-in-error)."""
    return report.get("status") in WITHDRAWN_STATUSES
