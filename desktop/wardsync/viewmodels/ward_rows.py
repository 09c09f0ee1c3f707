"""The ward overview's rows, computed from the resource store (plain Python, no widgets).

A row is one in-progress stay on the ward: bed, patient identity, the latest vital signs and
the NEWS2 early-warning score (RCP 2017) with its risk band. Rows are rebuilt only for the
patients whose resources changed, so a burst of vitals repaints a few rows, not the ward.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from wardsync.core import codes
from wardsync.core.news2 import News2, news2_from_observations
from wardsync.core.patient_identity import bed_of_stay, display_name, on_ward
from wardsync.core.patient_identity import mrn_of as mrn
from wardsync.core.resources import patient_ref_of
from wardsync.core.store import ResourceStore
from wardsync.viewmodels.record_rows import OPEN_TASK

Resource = Mapping[str, Any]


def age_sex(patient: Resource | None, today: date | None = None) -> str:
    if not patient:
        return ""
    today = today or date.today()
    text = ""
    born = patient.get("birthDate")
    if isinstance(born, str) and len(born) >= 4:
        try:
            b = date.fromisoformat(born) if len(born) == 10 else date(int(born[:4]), 1, 1)
            years = today.year - b.year - ((today.month, today.day) < (b.month, b.day))
            text = f"{years}y"
        except ValueError:
            text = ""
    sex = {"male": "M", "female": "F", "other": "X", "unknown": "U"}.get(
        str(patient.get("gender", "")), "")
    return f"{text} {sex}".strip()


def is_vital_sign(obs: Resource) -> bool:
    for cat in obs.get("category") or []:
        for coding in (cat or {}).get("coding") or []:
            if coding.get("code") == codes.CATEGORY_VITAL_SIGNS:
                return True
    return False


def _code(obs: Resource) -> str | None:
    for coding in (obs.get("code") or {}).get("coding") or []:
        if coding.get("system") == codes.LOINC:
            return coding.get("code")
    return None


def _latest(observations: Iterable[Resource]) -> dict[str, Resource]:
    latest: dict[str, Resource] = {}
    for obs in observations:
        code = _code(obs)
        if code is None:
            continue
        held = latest.get(code)
        if held is None or str(obs.get("effectiveDateTime", "")) > str(
                held.get("effectiveDateTime", "")):
            latest[code] = obs
    return latest


def _quantity(obs: Resource | None, code: str | None = None) -> float | None:
    if obs is None:
        return None
    if code is not None:
        for comp in obs.get("component") or []:
            if _code(comp) == code:
                return (comp.get("valueQuantity") or {}).get("value")
        return None
    return (obs.get("valueQuantity") or {}).get("value")


@dataclass
class WardRow:
    """One bed's line in the ward overview."""

    encounter_ref: str
    patient_ref: str
    bed: str
    name: str
    age_sex: str
    mrn: str
    news2: News2 | None = None
    heart_rate: float | None = None
    respiratory_rate: float | None = None
    spo2: float | None = None
    temperature: float | None = None
    systolic: float | None = None
    diastolic: float | None = None
    last_vitals: str = ""
    open_tasks: int = 0
    alerts: int = 0  # unacknowledged critical-result alerts
    viewers: tuple[str, ...] = ()  # names of clinicians at other workstations with it open
    refs: dict[str, str] = field(default_factory=dict)  # ref -> versionId shown in this row

    @property
    def patient_id(self) -> str:
        return self.patient_ref.split("/", 1)[1]


def bed_label(encounter: Resource, store: ResourceStore) -> str:
    return bed_of_stay(encounter, store.get)


def ward_encounters(store: ResourceStore, ward_id: str) -> list[Resource]:
    """In-progress stays with a location on this ward (bed or the ward itself)."""
    return store.select("Encounter", lambda enc: on_ward(enc, store.get, ward_id))


def _version(resource: Resource | None) -> str:
    return str(((resource or {}).get("meta") or {}).get("versionId", ""))


def open_tasks_of(store: ResourceStore, patient_ref: str) -> list[Resource]:
    return store.select("Task", lambda t: patient_ref_of(t) == patient_ref
                        and t.get("status") in OPEN_TASK)


def build_row(encounter: Resource, store: ResourceStore,
              vitals: Iterable[Resource], *, alerts: int = 0) -> WardRow | None:
    patient_ref = patient_ref_of(encounter)
    if patient_ref is None:
        return None
    patient = store.get(patient_ref)
    vitals = list(vitals)
    latest = _latest(vitals)
    row = WardRow(
        encounter_ref=f"Encounter/{encounter['id']}", patient_ref=patient_ref,
        bed=bed_label(encounter, store), name=display_name(patient), age_sex=age_sex(patient),
        mrn=mrn(patient), news2=news2_from_observations(vitals) if vitals else None,
        heart_rate=_quantity(latest.get(codes.HEART_RATE.code)),
        respiratory_rate=_quantity(latest.get(codes.RESPIRATORY_RATE.code)),
        spo2=_quantity(latest.get(codes.OXYGEN_SATURATION.code)),
        temperature=_quantity(latest.get(codes.BODY_TEMPERATURE.code)),
        systolic=_quantity(latest.get(codes.BLOOD_PRESSURE_PANEL.code), codes.SYSTOLIC_BP.code),
        diastolic=_quantity(latest.get(codes.BLOOD_PRESSURE_PANEL.code),
                            codes.DIASTOLIC_BP.code),
        last_vitals=max((str(o.get("effectiveDateTime", "")) for o in latest.values()),
                        default=""),
    )
    tasks = open_tasks_of(store, patient_ref)
    row.open_tasks = len(tasks)
    row.alerts = alerts
    for task in tasks:
        row.refs[f"Task/{task['id']}"] = _version(task)
    row.refs[row.encounter_ref] = _version(encounter)
    if patient is not None:
        row.refs[patient_ref] = _version(patient)
    for obs in latest.values():
        row.refs[f"Observation/{obs['id']}"] = _version(obs)
    return row
