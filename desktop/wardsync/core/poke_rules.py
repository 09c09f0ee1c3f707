"""Which poke a changed resource makes: its type, priority and patient (pure rules).

Shared by every publisher (the relay, and the sandbox's in-process one) so both announce a
change the same way. Type rules: a released DiagnosticReport (final, amended, corrected,
appended) with a critical result is a `CRITICAL_LAB_RESULT` with priority `urgent`; other
released lab reports and final lab Observations are `LAB_RESULT_READY`; everything else is
`RESOURCE_CHANGED`. Result Observations are never urgent on their own: the laboratory releases
a result by writing its report, which is what raises the alert (one urgent poke per report
version). Criticality comes from `core.critical` with the site's limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wardsync.core import codes
from wardsync.core.alerts import RELEASED_REPORT_STATUSES
from wardsync.core.critical import DEFAULT_CRITICAL_LIMITS, CriticalLimit, assess_report
from wardsync.core.pokes import (
    CRITICAL_LAB_RESULT,
    LAB_RESULT_READY,
    RESOURCE_CHANGED,
    ROUTINE,
    URGENT,
)
from wardsync.core.resources import codes_of, patient_id_of, relative_ref

__all__ = ["classify_change", "is_lab", "is_released_report", "patient_id_of",
           "report_result_refs"]


def is_lab(resource: Mapping[str, Any]) -> bool:
    """True if the resource is in the laboratory category (v2-0074 LAB or observation-category
    laboratory)."""
    found = codes_of(resource.get("category"))
    return codes.CATEGORY_LABORATORY in found or "LAB" in found


def is_released_report(resource: Mapping[str, Any]) -> bool:
    return (resource.get("resourceType") == "DiagnosticReport"
            and resource.get("status") in RELEASED_REPORT_STATUSES)


def report_result_refs(report: Mapping[str, Any]) -> list[str]:
    """The `Observation/<id>` references of a report's results, in order."""
    refs: list[str] = []
    for item in report.get("result") or ():
        ref = relative_ref((item or {}).get("reference"))
        if ref and ref.startswith("Observation/"):
            refs.append(ref)
    return refs


def classify_change(
    resource: Mapping[str, Any],
    results: Mapping[str, Mapping[str, Any]],
    limits: Mapping[str, CriticalLimit] = DEFAULT_CRITICAL_LIMITS,
) -> tuple[str, str]:
    """(poke type, priority) for a changed resource; `results` holds a released report's
    result Observations by reference (those that could be read)."""
    if is_released_report(resource):
        if assess_report(resource, results, limits).is_critical:
            return CRITICAL_LAB_RESULT, URGENT
        return LAB_RESULT_READY, ROUTINE
    if (resource.get("resourceType") == "Observation" and is_lab(resource)
            and resource.get("status") == "final"):
        return LAB_RESULT_READY, ROUTINE
    return RESOURCE_CHANGED, ROUTINE
