"""What the patient identity banner says, computed from the store (plain Python, no widgets).

Every window about a patient repeats the same banner so a clinician can always tell whose
record is on screen: name as "FAMILY, Given", date of birth with age, sex, MRN, bed and
allergies (NHS Common User Interface patient banner; Joint Commission two-identifier rule).
No field is ever blank: what is missing says whether it is still loading, could not be
loaded, or is truly absent. "Allergies unknown" must never read like "no allergies".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from wardsync.core import codes
from wardsync.core.store import ResourceStore
from wardsync.viewmodels.clinical_text import (
    NO_VALUE,
    concept_codes,
    concept_text,
    first_code,
    format_date,
    ref_of,
    reference_id,
    version_of,
)
from wardsync.viewmodels.ward_rows import display_name, mrn

Resource = Mapping[str, Any]
LoadStatus = Literal["loading", "ok", "error"]
AllergyLevel = Literal["recorded", "none", "unknown"]

SEX_WORDS = {"female": "Female", "male": "Male", "other": "Other", "unknown": "Unknown"}
# FHIR R4 allergyintolerance.html: these statuses mean the allergy does not (or no longer)
# apply; refuted / entered-in-error records are not allergies at all.
INACTIVE_ALLERGY_STATUSES = frozenset({"inactive", "resolved"})
NOT_AN_ALLERGY = frozenset({"refuted", "entered-in-error"})
# SNOMED CT findings recorded as AllergyIntolerance to say "none known" (IPS guidance).
NO_KNOWN_ALLERGY_CODES = frozenset({"716186003", "409137002", "428607008", "429625007"})
BED_TYPE = "bd"
WARD_TYPE = "wa"


@dataclass(frozen=True)
class BannerFacts:
    """The banner's fields as text, and the resource versions they show."""

    name: str
    born: str
    sex: str
    mrn: str
    location: str
    allergies: str
    allergy_level: AllergyLevel
    refs: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def accessible_summary(self) -> str:
        """One sentence for screen readers (the banner's accessible description)."""
        return "; ".join((self.name, self.born, self.sex, f"MRN {self.mrn}", self.location,
                          self.allergies))


def _patient_ref(resource: Resource) -> str | None:
    for name in ("subject", "patient", "for"):
        pid = reference_id(resource.get(name), "Patient")
        if pid is not None:
            return f"Patient/{pid}"
    return None


def age_text(born: date, today: date) -> str:
    """"78y", or months/days for the very young (RCPCH age conventions)."""
    months = (today.year - born.year) * 12 + today.month - born.month - (today.day < born.day)
    if months >= 24:
        return f"{months // 12}y"
    if months >= 1:
        return f"{months}m"
    return f"{max(0, (today - born).days)}d"


def born_text(patient: Resource, today: date) -> str:
    """"Born 12-Mar-1948 (78y)"; partial dates show their precision without an age guess."""
    raw = patient.get("birthDate")
    if not isinstance(raw, str) or not raw:
        return "Born: not recorded"
    shown = format_date(raw)
    if len(raw) == 10:
        try:
            return f"Born {shown} ({age_text(date.fromisoformat(raw), today)})"
        except ValueError:
            return f"Born: unreadable date ({raw[:10]})"
    return f"Born {shown}"


def _location_names(encounter: Resource, store: ResourceStore) -> tuple[str, str]:
    bed = ward = ""
    for item in encounter.get("location") or ():
        if not isinstance(item, Mapping) or item.get("status") in ("completed", "planned"):
            continue
        lid = reference_id(item.get("location"), "Location")
        location = store.get(f"Location/{lid}") if lid else None
        if location is None:
            continue
        kinds = concept_codes(location.get("physicalType"), codes.LOCATION_PHYSICAL_TYPE)
        name = str(location.get("name") or "")
        if BED_TYPE in kinds:
            bed = name
            parent = reference_id(location.get("partOf"), "Location")
            parent_res = store.get(f"Location/{parent}") if parent else None
            if parent_res is not None and not ward:
                ward = str(parent_res.get("name") or "")
        elif WARD_TYPE in kinds:
            ward = name
    return bed, ward


def current_stay(store: ResourceStore, patient_id: str) -> Resource | None:
    """The patient's in-progress Encounter (the latest started if there are several)."""
    ref = f"Patient/{patient_id}"
    stays = store.select(
        "Encounter", lambda e: e.get("status") == "in-progress" and _patient_ref(e) == ref)
    return max(stays, key=lambda e: str((e.get("period") or {}).get("start", "")), default=None)


def allergies_of(store: ResourceStore, patient_id: str) -> list[Resource]:
    """The patient's AllergyIntolerance records that apply now (active or unstated)."""
    ref = f"Patient/{patient_id}"

    def applies(a: Resource) -> bool:
        if _patient_ref(a) != ref:
            return False
        clinical = first_code(a.get("clinicalStatus"))
        verification = first_code(a.get("verificationStatus"))
        return clinical not in INACTIVE_ALLERGY_STATUSES and verification not in NOT_AN_ALLERGY

    return store.select("AllergyIntolerance", applies)


def allergy_text(records: list[Resource], status: LoadStatus, message: str = ""
                 ) -> tuple[str, AllergyLevel]:
    """The banner's allergy line and how sure it is."""
    substances = []
    none_known = []
    for record in records:
        name = concept_text(record.get("code"), "Unnamed allergy")
        if set(concept_codes(record.get("code"), codes.SNOMED)) & NO_KNOWN_ALLERGY_CODES:
            none_known.append(name)
            continue
        if record.get("criticality") == "high":
            name += " (high risk)"
        substances.append(name)
    if substances:
        return "Allergies: " + ", ".join(sorted(substances)), "recorded"
    if none_known:
        return "Allergies: " + ", ".join(sorted(none_known)), "none"
    if status == "ok":
        return "Allergies: none recorded", "none"
    if status == "error":
        return f"Allergies: unknown — could not be loaded ({message or 'error'})", "unknown"
    return "Allergies: not loaded yet", "unknown"


def banner_facts(
    store: ResourceStore,
    patient_id: str,
    *,
    today: date,
    identity: LoadStatus = "ok",
    identity_message: str = "",
    allergies: LoadStatus = "ok",
    allergies_message: str = "",
) -> BannerFacts:
    """The banner for `patient_id` from what the store holds and how the queries stand."""
    patient = store.get(f"Patient/{patient_id}")
    refs: dict[str, str] = {}
    if patient is None:
        if identity == "error":
            name = f"Patient could not be loaded: {identity_message or 'error'} — retrying"
        else:
            name = "Loading patient…"
        born = sex = number = NO_VALUE
    else:
        refs[ref_of(patient)] = version_of(patient)
        name = display_name(patient)
        born = born_text(patient, today)
        sex = SEX_WORDS.get(str(patient.get("gender", "")), "Sex not recorded")
        number = mrn(patient) or "not recorded"
    stay = current_stay(store, patient_id)
    if stay is not None:
        refs[ref_of(stay)] = version_of(stay)
        bed, ward = _location_names(stay, store)
        location = ", ".join(p for p in (bed, ward) if p) or "Admitted, no bed assigned"
    elif identity == "ok" and patient is not None:
        location = "Not currently admitted"
    elif identity == "error":
        location = "Bed: unknown"
    else:
        location = "Bed: not loaded yet"
    records = allergies_of(store, patient_id)
    for record in records:
        refs[ref_of(record)] = version_of(record)
    text, level = allergy_text(records, allergies, allergies_message)
    return BannerFacts(name, born, sex, number, location, text, level, refs)
