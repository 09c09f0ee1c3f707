"""Query keys: what a panel asks for, which FHIR searches fetch it, which pokes invalidate it.

Keys are hashable values; the sync layer runs one pull loop per open key. Searches filter only
on fields that never change for a resource (patient, category, code, ward); mutable state such
as a Task's status is filtered by the view. That way an incremental pull
(`_lastUpdated=gt<cursor>`) always brings back a resource whose state changed, even when the
new state no longer matches what the panel shows.

`_lastUpdated` filters a search's matches only, never the resources it `_include`s (R4
search.html#_lastUpdated, #include). A search whose included resources can change on their
own therefore either has a companion search for them (PatientLabs) or is pulled in full each
time (`Search.incremental=False`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar, Protocol

from wardsync.core import codes
from wardsync.core.alerts import ACK_CODE, ALERT_CODE_SYSTEM, ESCALATION_CODE


@dataclass(frozen=True, slots=True)
class Search:
    """One FHIR search: `GET [resource_type]?params`.

    `incremental=False` means every pull asks for the whole result, without `_lastUpdated`.
    """

    resource_type: str
    params: tuple[tuple[str, str], ...]
    incremental: bool = True

    def with_params(self, *extra: tuple[str, str]) -> list[tuple[str, str]]:
        return [*self.params, *extra]

    def touched_by(self, resource_type: str) -> bool:
        """Can a change to a `resource_type` resource change what this search returns? One of
        its own type can; so can any type when it `_include`s others (which types those are
        is not modelled here, so every poke that touches its key counts)."""
        return resource_type == self.resource_type or any(k == "_include" for k, _ in self.params)


class PokeLike(Protocol):
    resource_type: str
    id: str
    patient_id: str | None


class QueryKey(Protocol):
    """A keyed query. `patient_id` is None for ward-level keys."""

    @property
    def patient_id(self) -> str | None: ...

    def searches(self) -> tuple[Search, ...]: ...

    def touched_by(self, poke: PokeLike) -> bool: ...

    def label(self) -> str: ...


def _patient_search(rtype: str, patient_id: str, *extra: tuple[str, str]) -> Search:
    return Search(rtype, (("patient", f"Patient/{patient_id}"), *extra))


@dataclass(frozen=True, slots=True)
class PatientKey:
    """The base of a query key about one patient: a poke touches it when it is about a
    resource of one of its `types` for this patient, or (with "Patient" among the types) it is
    this Patient itself. `what` names it in the label ("vitals Patient/p1")."""

    patient_id: str
    what: ClassVar[str]
    types: ClassVar[tuple[str, ...]]

    def touched_by(self, poke: PokeLike) -> bool:
        if poke.resource_type == "Patient":
            return "Patient" in self.types and poke.id == self.patient_id
        return poke.resource_type in self.types and poke.patient_id == self.patient_id

    def label(self) -> str:
        return f"{self.what} Patient/{self.patient_id}"


@dataclass(frozen=True, slots=True)
class WardCensus:
    """The ward's beds, in-progress stays and their patients."""

    ward_id: str
    patient_id: None = None

    def searches(self) -> tuple[Search, ...]:
        ward = f"Location/{self.ward_id}"
        return (
            Search("Location", (("partof", ward),)),
            # In full: a corrected Patient (the name beside a bed) changes no Encounter, so
            # an incremental pull would never bring it.
            Search(
                "Encounter", (("location", ward), ("_include", "Encounter:subject")),
                incremental=False,
            ),
        )

    def touched_by(self, poke: PokeLike) -> bool:
        return poke.resource_type in ("Encounter", "Location", "Patient")

    def label(self) -> str:
        return f"census Location/{self.ward_id}"


# How far back vital signs are pulled and kept (a site setting, ui.vitals_window_h): the charts
# show 24 h ending at the latest reading, so 72 h covers a reading up to two days old.
VITALS_WINDOW = timedelta(hours=72)


@dataclass(frozen=True, slots=True)
class PatientVitals(PatientKey):
    """One patient's vital-sign Observations of the recent past (a time series).

    `series_param` makes the pull loop search only `date=ge<now - window>` and forget held
    results whose effective time falls out of the window, so a ward overview open for days
    holds a bounded number of readings.
    """

    what: ClassVar[str] = "vitals"
    types: ClassVar[tuple[str, ...]] = ("Observation",)
    series_param: ClassVar[str] = "date"

    def searches(self) -> tuple[Search, ...]:
        return (
            _patient_search(
                "Observation", self.patient_id, ("category", codes.CATEGORY_VITAL_SIGNS)
            ),
        )


@dataclass(frozen=True, slots=True)
class PatientLabs(PatientKey):
    """One patient's lab reports with their result Observations."""

    what: ClassVar[str] = "labs"
    types: ClassVar[tuple[str, ...]] = ("DiagnosticReport", "Observation")

    def searches(self) -> tuple[Search, ...]:
        return (
            _patient_search(
                "DiagnosticReport", self.patient_id, ("_include", "DiagnosticReport:result")
            ),
            # Results corrected on their own (without a new report version) come from here.
            _patient_search(
                "Observation", self.patient_id, ("category", codes.CATEGORY_LABORATORY)
            ),
        )


# What PatientRecord searches by patient. Allergies have their own key (PatientAllergies): a
# server without AllergyIntolerance must not keep the problems, drugs and tasks from loading,
# and "allergies unknown" must never look like "no allergies".
_RECORD_TYPES = ("Condition", "Immunization", "MedicationRequest", "Task")


@dataclass(frozen=True, slots=True)
class PatientRecord(PatientKey):
    """Identity, problems, immunizations, medications and tasks of one patient."""

    what: ClassVar[str] = "record"
    types: ClassVar[tuple[str, ...]] = ("Patient", *_RECORD_TYPES)

    def searches(self) -> tuple[Search, ...]:
        return (
            Search("Patient", (("_id", self.patient_id),)),
            *(_patient_search(t, self.patient_id) for t in _RECORD_TYPES),
        )


@dataclass(frozen=True, slots=True)
class PatientIdentity(PatientKey):
    """Who and where the patient is: the Patient and their stays with the stays' locations
    (bed and ward), as the identity banner shows them. A move to another bed updates the
    Encounter, so Location pokes need not touch this key."""

    what: ClassVar[str] = "identity"
    types: ClassVar[tuple[str, ...]] = ("Patient", "Encounter")

    def searches(self) -> tuple[Search, ...]:
        return (
            Search("Patient", (("_id", self.patient_id),)),
            # In full: the included beds and wards would be missed by an incremental pull
            # (R4 search.html#_lastUpdated filters matches only).
            Search(
                "Encounter",
                (("patient", f"Patient/{self.patient_id}"), ("_include", "Encounter:location")),
                incremental=False,
            ),
        )


@dataclass(frozen=True, slots=True)
class PatientAllergies(PatientKey):
    """One patient's AllergyIntolerance records (any clinical status; the view filters)."""

    what: ClassVar[str] = "allergies"
    types: ClassVar[tuple[str, ...]] = ("AllergyIntolerance",)

    def searches(self) -> tuple[Search, ...]:
        return (_patient_search("AllergyIntolerance", self.patient_id),)


@dataclass(frozen=True, slots=True)
class LabReport:
    """One DiagnosticReport with its results (the lab result detail window)."""

    report_id: str
    patient_id: str

    def searches(self) -> tuple[Search, ...]:
        return (
            # In full: a result corrected on its own leaves the report's lastUpdated as it
            # was, so an incremental pull of the report would miss the correction.
            Search(
                "DiagnosticReport",
                (("_id", self.report_id), ("_include", "DiagnosticReport:result")),
                incremental=False,
            ),
        )

    def touched_by(self, poke: PokeLike) -> bool:
        if poke.resource_type == "DiagnosticReport":
            return poke.id == self.report_id
        return poke.resource_type == "Observation" and poke.patient_id == self.patient_id

    def label(self) -> str:
        return f"report DiagnosticReport/{self.report_id}"


# Patients per search of a ward-level key: keeps each URL well under the 8 KB that servers
# and proxies commonly accept, whatever the length of the patients' ids.
MAX_PATIENTS_PER_SEARCH = 50


@dataclass(frozen=True, slots=True)
class WardAlerts:
    """What critical-result alerts need for a ward's patients (core.alerts): their reports
    with results, and the acknowledgement Communications and escalation Tasks recorded.

    `patient_ids` are sorted logical ids (comma-separated OR values, R4 search.html#combining);
    `since` is a FHIR instant: only resources updated from then on count (the rebuild
    lookback). `_lastUpdated=ge` only ever keeps matching a resource it matched once, as
    updates move `lastUpdated` forward, so it is as safe for incremental pulls as a filter on
    a field that never changes. The reports' results come with them (`_include`) and need no
    companion search: an alert is about a report version, and the laboratory releases every
    change of a result by writing a new report version (sandbox/ward/lab.py), which brings the
    current results with it.
    """

    ward_id: str
    patient_ids: tuple[str, ...]
    since: str
    patient_id: None = None

    def searches(self) -> tuple[Search, ...]:
        since = ("_lastUpdated", f"ge{self.since}")
        out: list[Search] = []
        ids = list(self.patient_ids)
        for start in range(0, len(ids), MAX_PATIENTS_PER_SEARCH):
            patients = ("patient", ",".join(
                f"Patient/{p}" for p in ids[start:start + MAX_PATIENTS_PER_SEARCH]))
            out += [
                Search("DiagnosticReport",
                       (patients, since, ("_include", "DiagnosticReport:result"))),
                Search("Communication",
                       (patients, ("category", f"{ALERT_CODE_SYSTEM}|{ACK_CODE}"), since)),
                Search("Task",
                       (patients, ("code", f"{ALERT_CODE_SYSTEM}|{ESCALATION_CODE}"), since)),
            ]
        return tuple(out)

    def touched_by(self, poke: PokeLike) -> bool:
        return (poke.resource_type in ("DiagnosticReport", "Communication", "Task")
                and poke.patient_id in self.patient_ids)

    def label(self) -> str:
        return f"alerts Location/{self.ward_id} ({len(self.patient_ids)} patients)"


@dataclass(frozen=True, slots=True)
class WardTasks:
    """The Tasks of a ward's patients, for the ward overview's open-task counts.

    One search (comma-separated patients, chunked like WardAlerts) instead of one record key
    per bed; status is mutable, so it is filtered by the view, never in the search.
    """

    ward_id: str
    patient_ids: tuple[str, ...]
    patient_id: None = None

    def searches(self) -> tuple[Search, ...]:
        ids = list(self.patient_ids)
        return tuple(
            Search("Task", (("patient", ",".join(
                f"Patient/{p}" for p in ids[start:start + MAX_PATIENTS_PER_SEARCH])),))
            for start in range(0, len(ids), MAX_PATIENTS_PER_SEARCH)
        )

    def touched_by(self, poke: PokeLike) -> bool:
        return poke.resource_type == "Task" and poke.patient_id in self.patient_ids

    def label(self) -> str:
        return f"tasks Location/{self.ward_id} ({len(self.patient_ids)} patients)"
