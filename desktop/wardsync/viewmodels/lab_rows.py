"""Lab results grouped by DiagnosticReport, as the chart and the lab detail window show them.

Each result line has the value, unit, reference range and interpretation flag (v3
ObservationInterpretation: L, H, LL, HH, ...). Critical results come from the same rules as
the alerts (`core.critical.assess_observation`: AA/HH/LL flags or a site critical limit) and
say so in words, not only in colour. Reports are newest first; a result the lab has
released before its report arrives is listed under "Results not yet in a report".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from wardsync.core import codes
from wardsync.core.critical import (
    DEFAULT_CRITICAL_LIMITS,
    CriticalLimit,
    assess_observation,
)
from wardsync.core.resources import relative_ref
from wardsync.core.store import ResourceStore
from wardsync.viewmodels.clinical_text import (
    NO_VALUE,
    concept_codes,
    concept_text,
    format_moment,
    format_quantity,
    quantity_unit,
    ref_of,
    reference_id,
    version_of,
    when,
)
from wardsync.viewmodels.table_rows import Group, Level, Row

Resource = Mapping[str, Any]

LAB_COLUMNS = ("Test", "Result", "Unit", "Reference range", "Flag", "Status")
ORPHAN_GROUP = "orphan-results"
# FHIR R4 valueset-diagnostic-report-status, in words a clinician reads.
REPORT_STATUS_WORDS = {
    "registered": "registered (no results yet)",
    "partial": "partial (some results pending)",
    "preliminary": "preliminary (not yet verified)",
    "final": "final",
    "amended": "amended after release",
    "corrected": "corrected after release",
    "appended": "appended after release",
    "cancelled": "cancelled",
    "entered-in-error": "entered in error (withdrawn)",
    "unknown": "status unknown",
}
FLAG_WORDS = {
    "N": "", "L": "low", "H": "high", "LL": "CRITICAL LOW", "HH": "CRITICAL HIGH",
    "AA": "CRITICAL", "A": "abnormal", "LU": "significantly low", "HU": "significantly high",
}


def short_test_name(obs: Resource) -> str:
    """"Potassium" from "Potassium [Moles/volume] in Serum or Plasma"."""
    full = concept_text(obs.get("code"), "Unnamed test")
    return full.split(" [", 1)[0].strip() or full


def reference_range_text(obs: Resource) -> str:
    """"3.5–5.3", "≤ 14", "≥ 60" or the range's text (first referenceRange)."""
    ranges = obs.get("referenceRange")
    first = ranges[0] if isinstance(ranges, list) and ranges else None
    if not isinstance(first, Mapping):
        return ""
    low = format_quantity(first.get("low"), with_unit=False) if first.get("low") else None
    high = format_quantity(first.get("high"), with_unit=False) if first.get("high") else None
    if low and high and NO_VALUE not in (low, high):
        return f"{low}–{high}"
    if high and high != NO_VALUE:
        return f"≤ {high}"
    if low and low != NO_VALUE:
        return f"≥ {low}"
    text = first.get("text")
    return text if isinstance(text, str) else ""


def interpretation_flags(obs: Resource) -> list[str]:
    """The v3/v2 interpretation codes of a result, as sent."""
    out: list[str] = []
    for concept in obs.get("interpretation") or ():
        out.extend(concept_codes(concept))
    return out


def _decimals(number: object) -> int:
    if isinstance(number, bool) or not isinstance(number, int | float):
        return 0
    text = f"{number:g}"
    return len(text.split(".", 1)[1]) if "." in text and "e" not in text else 0


def range_decimals(obs: Resource) -> int:
    """Decimal places of the reference range bounds (the analyser's reporting precision)."""
    ranges = obs.get("referenceRange")
    first = ranges[0] if isinstance(ranges, list) and ranges else None
    if not isinstance(first, Mapping):
        return 0
    return max((_decimals((first.get(side) or {}).get("value")) for side in ("low", "high")
                if isinstance(first.get(side), Mapping)), default=0)


def result_value(obs: Resource) -> tuple[str, str]:
    """(value text, unit) of a result; non-numeric values as their text.

    JSON numbers lose trailing zeros (a potassium of 5.0 arrives as 5), so a value is shown
    with at least as many decimals as its reference range: "5.0" beside "3.5–5.3".
    """
    quantity = obs.get("valueQuantity")
    if isinstance(quantity, Mapping):
        value = quantity.get("value")
        places = max(_decimals(value), range_decimals(obs))
        text = format_quantity(quantity, with_unit=False)
        if text != NO_VALUE and places and isinstance(value, int | float):
            comparator = quantity.get("comparator")
            prefix = comparator if comparator in ("<", "<=", ">", ">=") else ""
            text = f"{prefix}{value:.{places}f}"
        return text, quantity_unit(quantity)
    if isinstance(obs.get("valueString"), str):
        return obs["valueString"], ""
    if "valueCodeableConcept" in obs:
        return concept_text(obs["valueCodeableConcept"], NO_VALUE), ""
    if obs.get("dataAbsentReason"):
        return "not available: " + concept_text(obs["dataAbsentReason"], "no value"), ""
    return NO_VALUE, ""


def result_row(obs: Resource, limits: Mapping[str, CriticalLimit] = DEFAULT_CRITICAL_LIMITS
               ) -> Row:
    """One result line: test, value, unit, range, flag (with words) and status."""
    assessment = assess_observation(obs, limits)
    # Normal results carry no flag on screen, so the abnormal ones stand out.
    flags = [f for f in interpretation_flags(obs) if f != "N"]
    flag = " ".join(flags)
    words = " ".join(w for w in (FLAG_WORDS.get(f, "") for f in flags) if w)
    level: Level = ""
    if assessment.is_critical:
        level = "critical"
        if "CRITICAL" not in words:
            words = (words + " — CRITICAL").strip(" —")
    elif assessment.level == "abnormal":
        level = "abnormal"
    status = str(obs.get("status") or "")
    if status in ("cancelled", "entered-in-error"):
        level = "muted"
    value, unit = result_value(obs)
    tooltip = "; ".join(assessment.reasons) or concept_text(obs.get("code"))
    return Row(
        key=ref_of(obs),
        cells=(short_test_name(obs), value, unit, reference_range_text(obs),
               f"{flag} {words}".strip() if words else flag, status),
        version=version_of(obs),
        level=level,
        tooltip=tooltip,
    )


def result_refs(report: Resource) -> list[str]:
    """The "Observation/id" references of a report's results, in report order."""
    out = []
    for item in report.get("result") or ():
        ref = relative_ref(item.get("reference")) if isinstance(item, Mapping) else None
        if ref is not None and ref.startswith("Observation/"):
            out.append(ref)
    return out


def _worst(levels: list[Level]) -> Level:
    for level in ("critical", "abnormal"):
        if level in levels:
            return level
    return ""


def report_title(report: Resource, tz: tzinfo | None = None) -> str:
    """"Electrolytes 1998 panel — final — issued 22-Nov 14:05"."""
    panel = concept_text(report.get("code"), "Unnamed report")
    status = REPORT_STATUS_WORDS.get(str(report.get("status")), str(report.get("status")))
    issued = report.get("issued") or report.get("effectiveDateTime")
    return f"{panel} — {status} — issued {format_moment(issued, tz)}"


def report_group(report: Resource, store: ResourceStore, *, tz: tzinfo | None = None,
                 limits: Mapping[str, CriticalLimit] = DEFAULT_CRITICAL_LIMITS) -> Group:
    """A report with its results; results not (yet) held show as "result not loaded"."""
    rows = []
    for ref in result_refs(report):
        obs = store.get(ref)
        if obs is None:
            rows.append(Row(ref, ("Result not loaded yet", "", "", "", "", ""), level="muted"))
        else:
            rows.append(result_row(obs, limits))
    level = _worst([r.level for r in rows])
    title = report_title(report, tz)
    if level == "critical":
        title += " — CRITICAL RESULT"
    if report.get("status") in ("cancelled", "entered-in-error"):
        level = "muted"
    return Group(ref_of(report), title, tuple(rows), version_of(report), level)


def _sort_moment(resource: Resource) -> float:
    moment = when(resource.get("issued")) or when(resource.get("effectiveDateTime"))
    return moment.timestamp() if moment is not None else 0.0


def _is_lab(resource: Resource) -> bool:
    for concept in resource.get("category") or ():
        found = concept_codes(concept)
        if codes.CATEGORY_LABORATORY in found or "LAB" in found:
            return True
    return False


def lab_groups(store: ResourceStore, patient_id: str, *, tz: tzinfo | None = None,
               limits: Mapping[str, CriticalLimit] = DEFAULT_CRITICAL_LIMITS) -> list[Group]:
    """All held lab reports of a patient, newest first, plus results not in any report."""

    def mine(resource: Resource) -> bool:
        return reference_id(resource.get("subject"), "Patient") == patient_id

    reports = [r for r in store.select("DiagnosticReport", mine) if _is_lab(r)]
    reports.sort(key=_sort_moment, reverse=True)
    groups = [report_group(r, store, tz=tz, limits=limits) for r in reports]
    grouped = {ref for r in reports for ref in result_refs(r)}
    loose = [o for o in store.select("Observation", mine)
             if _is_lab(o) and ref_of(o) not in grouped]
    if loose:
        loose.sort(key=_sort_moment, reverse=True)
        rows = tuple(result_row(o, limits) for o in loose)
        groups.append(Group(ORPHAN_GROUP, "Results not yet in a report", rows,
                            level=_worst([r.level for r in rows])))
    return groups


@dataclass(frozen=True)
class ReportSummary:
    """The lab detail window's header."""

    panel: str
    status: str
    status_code: str
    accession: str
    collected: str
    issued: str
    conclusion: str
    performer: str


def report_summary(report: Resource, tz: tzinfo | None = None) -> ReportSummary:
    status = str(report.get("status") or "unknown")
    accession = next(
        (str(i.get("value")) for i in report.get("identifier") or ()
         if isinstance(i, Mapping) and i.get("value")), "not recorded")
    performer = ", ".join(
        str(p.get("display") or p.get("reference")) for p in report.get("performer") or ()
        if isinstance(p, Mapping) and (p.get("display") or p.get("reference")))
    return ReportSummary(
        panel=concept_text(report.get("code"), "Unnamed report"),
        status=REPORT_STATUS_WORDS.get(status, status),
        status_code=status,
        accession=accession,
        collected=format_moment(report.get("effectiveDateTime"), tz),
        issued=format_moment(report.get("issued"), tz),
        conclusion=str(report.get("conclusion") or ""),
        performer=performer or "not recorded",
    )


def value_text(obs: Resource) -> str:
    """"4.1 mmol/L" (for the status history)."""
    value, unit = result_value(obs)
    return f"{value} {unit}".strip()


