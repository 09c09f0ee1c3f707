"""FHIR R4 JSON builders for vital signs and laboratory results.

The seed, the laboratory client and the ward devices client all build their resources here, so
a result looks the same whether it was seeded or written live. Builders return plain dicts
(what goes on the wire); ids are set only when the caller gives one (the seed), never for a
POST (FHIR R4 http.html#create: the server assigns the id).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from wardsync.core import codes
from wardsync.core.fhirtime import format_instant
from wardsync.core.resources import codes_of

from .lab_ranges import INTERPRETATION_DISPLAY, lab_range

_T = TypeVar("_T")

# Accession (filler order) numbers of the sandbox laboratory: DiagnosticReport.identifier.
ACCESSION_SYSTEM = "urn:wardsync:sandbox:lab-accession"

ACVPU_DISPLAY: dict[str, str] = {
    "A": "Alert",
    "C": "New confusion",
    "V": "Responds to voice",
    "P": "Responds to pain",
    "U": "Unresponsive",
}

# Short slugs of the vital-sign Observations, used in readable seed ids (`obs-01-hr-003`).
VITAL_SLUGS: dict[str, str] = {
    codes.HEART_RATE.code: "hr",
    codes.RESPIRATORY_RATE.code: "rr",
    codes.OXYGEN_SATURATION.code: "spo2",
    codes.BODY_TEMPERATURE.code: "temp",
    codes.BLOOD_PRESSURE_PANEL.code: "bp",
    codes.CONSCIOUSNESS.code: "acvpu",
    codes.SUPPLEMENTAL_OXYGEN.code: "o2",
}
LAB_SLUGS: dict[str, str] = {
    codes.SODIUM.code: "na",
    codes.POTASSIUM.code: "k",
    codes.UREA.code: "urea",
    codes.CREATININE.code: "creat",
    codes.GLUCOSE.code: "glu",
    codes.HAEMOGLOBIN.code: "hb",
    codes.WHITE_CELL_COUNT.code: "wcc",
    codes.PLATELETS.code: "plt",
    codes.LACTATE.code: "lac",
    codes.TROPONIN_T.code: "trop",
}


@dataclass(frozen=True, slots=True)
class VitalSigns:
    """One round of bedside observations: the NEWS2 inputs (RCP NEWS2, 2017)."""

    heart_rate: int
    respiratory_rate: int
    spo2: int
    temperature: float
    systolic: int
    diastolic: int
    consciousness: str = "A"
    on_oxygen: bool = False

    def __post_init__(self) -> None:
        if self.consciousness not in codes.CONSCIOUSNESS_LEVELS:
            raise ValueError(
                f"consciousness must be one of {codes.CONSCIOUSNESS_LEVELS}, "
                f"not {self.consciousness!r}"
            )


def fhir_datetime(moment: datetime) -> str:
    """A FHIR dateTime/instant (seconds, with offset); naive datetimes are refused.

    FHIR R4 datatypes.html#dateTime requires a time zone whenever a time is given.
    """
    return format_instant(moment, "seconds")


def new_resource(resource_type: str, logical_id: str | None) -> dict:
    """A new resource; without `logical_id` the server assigns one (R4 http.html#create)."""
    resource: dict = {"resourceType": resource_type}
    if logical_id is not None:
        resource["id"] = logical_id
    return resource


def _known(table: Mapping[str, _T], code: str, what: str) -> _T:
    found = table.get(code)
    if found is None:
        raise KeyError(f"unknown {what} code {code!r}")
    return found


def reference(resource_type: str, logical_id: str) -> dict:
    """A literal relative Reference (FHIR R4 references.html#literal)."""
    return {"reference": f"{resource_type}/{logical_id}"}


def codeable_concept(code: codes.Code) -> dict:
    """A CodeableConcept with one coding of `code` and its display as text."""
    return {
        "coding": [{"system": code.system, "code": code.code, "display": code.display}],
        "text": code.display,
    }


def ucum_quantity(value: float, unit: str) -> dict:
    """A Quantity in UCUM: the unit string doubles as the UCUM code."""
    return {"value": value, "unit": unit, "system": codes.UCUM, "code": unit}


def category(code: str, display: str) -> list[dict]:
    """Observation.category with one observation-category coding."""
    return [{"coding": [{"system": codes.OBSERVATION_CATEGORY, "code": code, "display": display}]}]


def interpretation(flag: str) -> list[dict]:
    """Observation.interpretation with one v3 ObservationInterpretation coding."""
    return [
        {
            "coding": [
                {
                    "system": codes.INTERPRETATION,
                    "code": flag,
                    "display": INTERPRETATION_DISPLAY[flag],
                }
            ]
        }
    ]


def _subject_and_context(obs: dict, patient_id: str, encounter_id: str | None) -> None:
    obs["subject"] = reference("Patient", patient_id)
    if encounter_id is not None:
        obs["encounter"] = reference("Encounter", encounter_id)


def vital_sign_observations(
    patient_id: str,
    vitals: VitalSigns,
    *,
    effective: datetime,
    encounter_id: str | None = None,
    id_for: Callable[[str], str] | None = None,
) -> list[dict]:
    """The Observations of one round of vital signs (FHIR R4 vital signs profile).

    One Observation each for heart rate, respiratory rate, SpO2, temperature, the blood
    pressure panel (systolic/diastolic components), ACVPU (valueCodeableConcept) and
    supplemental oxygen (valueBoolean). `id_for(slug)` gives each one an id (seed only).
    """
    when = fhir_datetime(effective)

    def base(code: codes.Code) -> dict:
        obs = new_resource("Observation", id_for(VITAL_SLUGS[code.code]) if id_for else None)
        obs["status"] = "final"
        obs["category"] = category(codes.CATEGORY_VITAL_SIGNS, "Vital Signs")
        obs["code"] = codeable_concept(code)
        _subject_and_context(obs, patient_id, encounter_id)
        obs["effectiveDateTime"] = when
        return obs

    out = []
    for code, value in (
        (codes.HEART_RATE, vitals.heart_rate),
        (codes.RESPIRATORY_RATE, vitals.respiratory_rate),
        (codes.OXYGEN_SATURATION, vitals.spo2),
        (codes.BODY_TEMPERATURE, vitals.temperature),
    ):
        obs = base(code)
        obs["valueQuantity"] = ucum_quantity(value, code.unit)
        out.append(obs)

    bp = base(codes.BLOOD_PRESSURE_PANEL)
    bp["component"] = [
        {
            "code": codeable_concept(codes.SYSTOLIC_BP),
            "valueQuantity": ucum_quantity(vitals.systolic, codes.SYSTOLIC_BP.unit),
        },
        {
            "code": codeable_concept(codes.DIASTOLIC_BP),
            "valueQuantity": ucum_quantity(vitals.diastolic, codes.DIASTOLIC_BP.unit),
        },
    ]
    out.append(bp)

    acvpu = base(codes.CONSCIOUSNESS)
    level = ACVPU_DISPLAY[vitals.consciousness]
    # codes.py names the ACVPU letters but no code system for them, so the coding carries
    # code and display only (a Coding's system is optional, datatypes.html#Coding).
    acvpu["valueCodeableConcept"] = {
        "coding": [{"code": vitals.consciousness, "display": level}],
        "text": level,
    }
    out.append(acvpu)

    oxygen = base(codes.SUPPLEMENTAL_OXYGEN)
    oxygen["valueBoolean"] = vitals.on_oxygen
    out.append(oxygen)
    return out


def lab_observation(
    patient_id: str,
    test_code: str,
    value: float,
    *,
    effective: datetime,
    issued: datetime,
    status: str = "final",
    encounter_id: str | None = None,
    observation_id: str | None = None,
) -> dict:
    """One laboratory result with UCUM value, reference range and interpretation flag."""
    test = _known(codes.LAB_TESTS_BY_CODE, test_code, "lab test")
    obs = new_resource("Observation", observation_id)
    obs["status"] = status
    obs["category"] = category(codes.CATEGORY_LABORATORY, "Laboratory")
    obs["code"] = codeable_concept(test)
    _subject_and_context(obs, patient_id, encounter_id)
    obs["effectiveDateTime"] = fhir_datetime(effective)
    obs["issued"] = fhir_datetime(issued)
    _set_lab_value(obs, test_code, value)
    return obs


def _set_lab_value(obs: dict, test_code: str, value: float) -> None:
    table = lab_range(test_code)
    unit = codes.LAB_TESTS_BY_CODE[test_code].unit
    value = table.round(value)
    obs["valueQuantity"] = ucum_quantity(value, unit)
    interval: dict = {}
    if table.low is not None:
        interval["low"] = ucum_quantity(table.low, unit)
    if table.high is not None:
        interval["high"] = ucum_quantity(table.high, unit)
    obs["referenceRange"] = [interval]
    obs["interpretation"] = interpretation(table.interpret(value))


def corrected_lab_observation(existing: dict, value: float, *, issued: datetime) -> dict:
    """A copy of a stored lab Observation with a new value, status `corrected`.

    The value, reference range and interpretation are replaced; everything else the server
    returned (id, meta, subject, ...) is kept so the PUT is a full update (http.html#update).
    """
    test_code = lab_test_code(existing)
    updated = copy.deepcopy(existing)
    updated["status"] = "corrected"
    updated["issued"] = fhir_datetime(issued)
    _set_lab_value(updated, test_code, value)
    return updated


def lab_test_code(obs: dict) -> str:
    """The LOINC code of a lab Observation (`ValueError` if it is not a known lab test)."""
    for code in codes_of(obs.get("code"), codes.LOINC):
        if code in codes.LAB_TESTS_BY_CODE:
            return code
    raise ValueError("the Observation is not one of the known laboratory tests")


def lab_report(
    patient_id: str,
    panel_code: str,
    result_ids: list[str],
    *,
    effective: datetime,
    issued: datetime,
    status: str = "final",
    encounter_id: str | None = None,
    report_id: str | None = None,
    accession: str | None = None,
) -> dict:
    """A laboratory DiagnosticReport (category LAB, v2-0074) grouping `result_ids`."""
    panel = _known(codes.PANELS_BY_CODE, panel_code, "lab panel")
    report = new_resource("DiagnosticReport", report_id)
    if accession is not None:
        report["identifier"] = [{"system": ACCESSION_SYSTEM, "value": accession}]
    report["status"] = status
    report["category"] = [
        {"coding": [{"system": codes.DIAGNOSTIC_SERVICE, "code": "LAB", "display": "Laboratory"}]}
    ]
    report["code"] = codeable_concept(panel)
    report["subject"] = reference("Patient", patient_id)
    if encounter_id is not None:
        report["encounter"] = reference("Encounter", encounter_id)
    report["effectiveDateTime"] = fhir_datetime(effective)
    report["issued"] = fhir_datetime(issued)
    report["result"] = [reference("Observation", rid) for rid in result_ids]
    return report
