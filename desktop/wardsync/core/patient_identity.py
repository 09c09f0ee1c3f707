"""Who a patient is, as every screen shows it: name, MRN, bed, and whether they are on the ward.

The identity banner, the ward overview's rows and the critical-alert read-back all read the
patient's identity here, so they cannot disagree about who a patient is or which bed they are
in. Pure functions over held resources; `get("Type/id")` looks a held resource up.

A bed belongs to a patient only through one of *their own* in-progress stays: stays of other
patients passed in by mistake are ignored, so one patient's bed is never shown with another
patient's name (docs/architecture.md §5: read-back of patient identity).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from wardsync.core import codes
from wardsync.core.resources import has_code, reference_id, reference_of

Resource = Mapping[str, Any]
Lookup = Callable[[str], Resource | None]

UNKNOWN_PATIENT: Final = "Unknown patient"
UNNAMED_PATIENT: Final = "Unnamed patient"
# R4 Location.physicalType (location-physical-type value set): "bd" is a bed.
BED_PHYSICAL_TYPE: Final = "bd"


@dataclass(frozen=True, slots=True)
class PatientIdentity:
    """Who a patient is, as the banner, the ward rows and the read-back show it."""

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
    """"FAMILY, Given" — the hospital convention for identity banners and lists.

    The `official` name when there is one (R4 HumanName.use), else the first name given.
    """
    if not patient:
        return UNKNOWN_PATIENT
    names = [n for n in patient.get("name") or () if isinstance(n, Mapping)]
    name = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    family = str(name.get("family", "")).upper()
    given = " ".join(g for g in name.get("given") or () if isinstance(g, str))
    return f"{family}, {given}".strip(", ") or UNNAMED_PATIENT


def mrn_of(patient: Resource | None) -> str:
    """The hospital medical record number (`codes.MRN_SYSTEM` identifier), or ""."""
    for ident in (patient or {}).get("identifier") or ():
        if isinstance(ident, Mapping) and ident.get("system") == codes.MRN_SYSTEM:
            return str(ident.get("value", ""))
    return ""


def location_refs(encounter: Resource) -> list[str]:
    """"Location/<id>" of every place an Encounter lists (Encounter.location.location)."""
    out = []
    for loc in encounter.get("location") or ():
        ref = reference_of(loc.get("location")) if isinstance(loc, Mapping) else None
        if ref is not None:
            out.append(ref)
    return out


def on_ward(encounter: Resource, get: Lookup, ward_id: str) -> bool:
    """An in-progress stay located on the ward itself or on one of its beds/rooms."""
    if encounter.get("status") != "in-progress":
        return False
    ward_ref = f"Location/{ward_id}"
    for ref in location_refs(encounter):
        if ref == ward_ref:
            return True
        location = get(ref)
        if location is not None and reference_of(location.get("partOf")) == ward_ref:
            return True
    return False


def stay_patient_id(encounter: Resource) -> str | None:
    """The logical id of the patient an Encounter is the stay of."""
    return reference_id(encounter.get("subject"), "Patient")


def ward_patient_ids(encounters: Iterable[Resource], get: Lookup, ward_id: str) -> frozenset[str]:
    """Logical ids of the patients with an in-progress stay on the ward (its census)."""
    return frozenset(
        pid for enc in encounters
        if on_ward(enc, get, ward_id) and (pid := stay_patient_id(enc)) is not None
    )


def bed_of_stay(encounter: Resource, get: Lookup) -> str:
    """The name of the bed a stay is in (its first Location that is a bed), or ""."""
    for ref in location_refs(encounter):
        location = get(ref)
        if location is not None and has_code(location.get("physicalType"), BED_PHYSICAL_TYPE):
            return str(location.get("name", ""))
    return ""


def bed_of(patient_id: str, encounters: Iterable[Resource], get: Lookup, ward_id: str) -> str:
    """The bed of the patient's in-progress stay on the ward, or "".

    Only stays whose subject is this patient count (see the module docstring).
    """
    for enc in encounters:
        if stay_patient_id(enc) != patient_id or not on_ward(enc, get, ward_id):
            continue
        bed = bed_of_stay(enc, get)
        if bed:
            return bed
    return ""


def patient_identity(
    patient_id: str, get: Lookup, encounters: Iterable[Resource], ward_id: str,
) -> PatientIdentity:
    """Name, MRN and bed of a patient from held resources (`encounters`: stays to look in)."""
    patient = get(f"Patient/{patient_id}")
    return PatientIdentity(patient_id, display_name(patient), mrn_of(patient),
                           bed_of(patient_id, encounters, get, ward_id))
