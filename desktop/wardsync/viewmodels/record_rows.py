"""Problems, immunisations, medicines and tasks of one patient, grouped by clinical meaning
(plain Python, no widgets).

Grouping follows what each status means (FHIR R4 value sets), not how it is spelled:
- Conditions: active / recurrence / relapse are current problems; inactive / remission /
  resolved are past problems (condition-clinical); entered-in-error and refuted are hidden.
- Immunisations: historic doses grouped by the disease they protect against (CDC CVX vaccine
  groups), newest first.
- MedicationRequests: active / on-hold / draft are current; the rest stopped or completed.
- Tasks: open until completed, cancelled, rejected, failed or entered-in-error (task-status).
Searches never filter on these mutable statuses (core/queries.py); the view does, here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import tzinfo
from typing import Any

from wardsync.core import codes
from wardsync.core.store import ResourceStore
from wardsync.viewmodels.clinical_text import (
    NO_VALUE,
    concept_codes,
    concept_text,
    first_code,
    format_date,
    format_moment,
    ref_of,
    reference_id,
    version_of,
    when,
)
from wardsync.viewmodels.table_rows import Group, Level, Row

Resource = Mapping[str, Any]

PROBLEM_COLUMNS = ("Problem or vaccine", "Date", "Detail", "Status")
MEDICATION_COLUMNS = ("Medicine", "Dose and frequency", "Ordered", "Status")
TASK_COLUMNS = ("Task", "Priority", "Requested", "Status", "Details")

ACTIVE_CONDITION = frozenset({"active", "recurrence", "relapse"})
PAST_CONDITION = frozenset({"inactive", "remission", "resolved"})
HIDDEN_VERIFICATION = frozenset({"entered-in-error", "refuted"})
CURRENT_MEDICATION = frozenset({"active", "on-hold", "draft"})
OPEN_TASK = frozenset({"draft", "requested", "received", "accepted", "ready", "in-progress",
                       "on-hold"})
PRIORITY_ORDER = {"stat": 0, "asap": 1, "urgent": 2, "routine": 3}

GROUP_ACTIVE_PROBLEMS = "problems-active"
GROUP_PAST_PROBLEMS = "problems-past"
GROUP_CURRENT_MEDICINES = "medicines-current"
GROUP_STOPPED_MEDICINES = "medicines-stopped"
GROUP_OPEN_TASKS = "tasks-open"
GROUP_DONE_TASKS = "tasks-done"

# CDC "CVX codes mapped to vaccine groups" (www2a.cdc.gov/vaccines/iis/iisstandards), the
# groups a ward sees in adults; any other vaccine is grouped under its own name.
VACCINE_GROUPS: dict[str, str] = {
    **dict.fromkeys(("88", "140", "141", "150", "153", "155", "158", "161", "166", "168",
                     "171", "185", "186", "197", "205"), "Influenza"),
    **dict.fromkeys(("33", "100", "109", "133", "152", "215", "216"), "Pneumococcal"),
    **dict.fromkeys(("9", "09", "113", "115", "138", "139", "196"),
                    "Tetanus, diphtheria, pertussis"),
    **dict.fromkeys(("207", "208", "210", "211", "212", "213", "217", "218", "219", "221",
                     "228", "229", "230", "300", "301", "302", "309", "310", "311", "312",
                     "313"), "COVID-19"),
    **dict.fromkeys(("121", "187", "188"), "Zoster (shingles)"),
    **dict.fromkeys(("43", "44", "45", "08", "104", "189"), "Hepatitis B"),
}


def _for_patient(resource: Resource, patient_id: str) -> bool:
    return any(reference_id(resource.get(f), "Patient") == patient_id
               for f in ("subject", "patient", "for"))


def practitioner_name(store: ResourceStore, reference: object) -> str:
    """A Reference's display, else the held Practitioner's name, else "—"."""
    if isinstance(reference, Mapping) and isinstance(reference.get("display"), str):
        return reference["display"]
    pid = reference_id(reference, "Practitioner")
    person = store.get(f"Practitioner/{pid}") if pid else None
    for name in (person or {}).get("name") or ():
        if isinstance(name, Mapping):
            if isinstance(name.get("text"), str):
                return name["text"]
            given = " ".join(name.get("given") or ())
            return f"{given} {name.get('family', '')}".strip() or NO_VALUE
    return NO_VALUE


# ---------------------------------------------------------------- problems and immunisations


def _condition_row(cond: Resource, status: str) -> Row:
    name = concept_text(cond.get("code"), "Unnamed problem")
    onset = cond.get("onsetDateTime") or cond.get("recordedDate")
    if status in ACTIVE_CONDITION:
        detail = "this admission" if cond.get("encounter") else "long-term"
        date = f"since {format_date(onset)}" if onset else "onset not recorded"
    else:
        abated = cond.get("abatementDateTime")
        detail = f"resolved {format_date(abated)}" if abated else "resolved"
        date = f"onset {format_date(onset)}" if onset else "onset not recorded"
    return Row(ref_of(cond), (name, date, detail, status or "not stated"), version_of(cond),
               tooltip=concept_text(cond.get("code")))


def _sort_key_desc(resource: Resource, *fields: str) -> float:
    for name in fields:
        moment = when(resource.get(name))
        if moment is not None:
            return -moment.timestamp()
    return 0.0


def vaccine_group(imm: Resource) -> str:
    """The disease group a vaccine protects against (CVX), else the vaccine's own name."""
    for code in concept_codes(imm.get("vaccineCode"), codes.CVX):
        if code in VACCINE_GROUPS:
            return VACCINE_GROUPS[code]
    return concept_text(imm.get("vaccineCode"), "Other vaccine")


def problem_groups(store: ResourceStore, patient_id: str) -> list[Group]:
    """Current problems, past problems, then immunisation history by vaccine group."""
    active: list[Resource] = []
    past: list[Resource] = []
    for cond in store.select("Condition", lambda r: _for_patient(r, patient_id)):
        if first_code(cond.get("verificationStatus")) in HIDDEN_VERIFICATION:
            continue
        status = first_code(cond.get("clinicalStatus")) or ""
        if status in PAST_CONDITION or (not status and cond.get("abatementDateTime")):
            past.append(cond)
        else:
            active.append(cond)
    groups = [
        Group(GROUP_ACTIVE_PROBLEMS, f"Active problems ({len(active)})", tuple(
            _condition_row(c, first_code(c.get("clinicalStatus")) or "active")
            for c in sorted(active, key=lambda c: _sort_key_desc(c, "onsetDateTime"))
        )),
        Group(GROUP_PAST_PROBLEMS, f"Past problems ({len(past)})", tuple(
            _condition_row(c, first_code(c.get("clinicalStatus")) or "resolved")
            for c in sorted(past, key=lambda c: _sort_key_desc(c, "abatementDateTime",
                                                               "onsetDateTime"))
        )),
    ]
    by_group: dict[str, list[Resource]] = {}
    for imm in store.select("Immunization", lambda r: _for_patient(r, patient_id)):
        if imm.get("status") == "entered-in-error":
            continue
        by_group.setdefault(vaccine_group(imm), []).append(imm)
    for name in sorted(by_group):
        doses = sorted(by_group[name], key=lambda i: _sort_key_desc(i, "occurrenceDateTime"))
        rows = []
        for imm in doses:
            given = imm.get("occurrenceDateTime") or imm.get("occurrenceString")
            source = "recorded at the time" if imm.get("primarySource") else "reported"
            status = str(imm.get("status") or "")
            level: Level = "muted" if status == "not-done" else ""
            rows.append(Row(ref_of(imm), (concept_text(imm.get("vaccineCode"), "Vaccine"),
                                          format_date(given), source,
                                          "not given" if status == "not-done" else status),
                            version_of(imm), level))
        groups.append(Group(f"immunisations-{name}", f"Immunisations: {name} ({len(rows)})",
                            tuple(rows)))
    return groups


# ---------------------------------------------------------------- medicines


def _dosage(med: Resource) -> str:
    texts = [str(d.get("text")) for d in med.get("dosageInstruction") or ()
             if isinstance(d, Mapping) and d.get("text")]
    return "; ".join(texts) or "no dose instructions"


def _ordered_by(store: ResourceStore, med: Resource) -> str:
    # Practitioners are not part of the record's searches: a name shows only when the
    # reference carries a display or another window loaded that person.
    name = practitioner_name(store, med.get("requester"))
    return f"Ordered by {name}" if name != NO_VALUE else ""


def medication_groups(store: ResourceStore, patient_id: str, *, tz: tzinfo | None = None
                      ) -> list[Group]:
    """Current medicines, then stopped or completed ones (newest order first)."""
    current: list[Row] = []
    stopped: list[Row] = []
    meds = store.select("MedicationRequest", lambda r: _for_patient(r, patient_id))
    for med in sorted(meds, key=lambda m: _sort_key_desc(m, "authoredOn")):
        status = str(med.get("status") or "unknown")
        name = concept_text(med.get("medicationCodeableConcept"), "")
        if not name:
            ref = (med.get("medicationReference") or {}).get("display")
            name = str(ref) if ref else "Unnamed medicine"
        level: Level = "muted" if status in ("cancelled", "entered-in-error") else ""
        row = Row(ref_of(med), (name, _dosage(med), format_moment(med.get("authoredOn"), tz),
                                status),
                  version_of(med), level, tooltip=_ordered_by(store, med))
        (current if status in CURRENT_MEDICATION else stopped).append(row)
    return [
        Group(GROUP_CURRENT_MEDICINES, f"Current medicines ({len(current)})", tuple(current)),
        Group(GROUP_STOPPED_MEDICINES, f"Stopped or completed ({len(stopped)})", tuple(stopped)),
    ]


# ---------------------------------------------------------------- tasks


def task_groups(store: ResourceStore, patient_id: str, *, tz: tzinfo | None = None
                ) -> list[Group]:
    """Open tasks (most urgent, then oldest first), then done ones (newest first)."""
    open_tasks: list[Resource] = []
    done: list[Resource] = []
    for task in store.select("Task", lambda r: _for_patient(r, patient_id)):
        (open_tasks if task.get("status") in OPEN_TASK else done).append(task)

    def row(task: Resource) -> Row:
        priority = str(task.get("priority") or "routine")
        level: Level = "abnormal" if PRIORITY_ORDER.get(priority, 3) < 3 else ""
        if task.get("status") not in OPEN_TASK:
            level = "muted"
        title = concept_text(task.get("code"), "") or str(task.get("description") or "Task")
        owner = practitioner_name(store, task.get("owner"))
        details = str(task.get("description") or "")
        tooltip = f"{details} (assigned to {owner})" if owner != NO_VALUE else details
        return Row(ref_of(task), (title, priority, format_moment(task.get("authoredOn"), tz),
                                  str(task.get("status") or "unknown"), details),
                   version_of(task), level, tooltip=tooltip)

    open_tasks.sort(key=lambda t: (PRIORITY_ORDER.get(str(t.get("priority")), 3),
                                   -_sort_key_desc(t, "authoredOn")))
    done.sort(key=lambda t: _sort_key_desc(t, "lastModified", "authoredOn"))
    return [
        Group(GROUP_OPEN_TASKS, f"Open tasks ({len(open_tasks)})",
              tuple(row(t) for t in open_tasks)),
        Group(GROUP_DONE_TASKS, f"Done ({len(done)})", tuple(row(t) for t in done)),
    ]
