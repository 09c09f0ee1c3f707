"""Terminology the product relies on: code systems and the codes of vitals and lab tests.

The synthetic ward, the critical-limits table, NEWS2 and the panels all refer to these
constants, so one place says which LOINC code means what. Units are UCUM.
"""

from __future__ import annotations

from dataclasses import dataclass

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DIAGNOSTIC_SERVICE = "http://terminology.hl7.org/CodeSystem/v2-0074"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
LOCATION_PHYSICAL_TYPE = "http://terminology.hl7.org/CodeSystem/location-physical-type"
MRN_SYSTEM = "urn:wardsync:sandbox:mrn"
CVX = "http://hl7.org/fhir/sid/cvx"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

CATEGORY_VITAL_SIGNS = "vital-signs"
CATEGORY_LABORATORY = "laboratory"


@dataclass(frozen=True, slots=True)
class Code:
    """A LOINC-coded measurement with its display text and UCUM unit."""

    code: str
    display: str
    unit: str
    system: str = LOINC


# Vital signs (FHIR vital-signs profile codes) — the NEWS2 inputs.
HEART_RATE = Code("8867-4", "Heart rate", "/min")
RESPIRATORY_RATE = Code("9279-1", "Respiratory rate", "/min")
OXYGEN_SATURATION = Code("59408-5", "Oxygen saturation by pulse oximetry", "%")
BODY_TEMPERATURE = Code("8310-5", "Body temperature", "Cel")
BLOOD_PRESSURE_PANEL = Code("85354-9", "Blood pressure panel", "mm[Hg]")
SYSTOLIC_BP = Code("8480-6", "Systolic blood pressure", "mm[Hg]")
DIASTOLIC_BP = Code("8462-4", "Diastolic blood pressure", "mm[Hg]")
# ACVPU level of consciousness; valueCodeableConcept with one of CONSCIOUSNESS_LEVELS.
CONSCIOUSNESS = Code("67775-7", "Level of responsiveness (ACVPU)", "")
CONSCIOUSNESS_LEVELS = ("A", "C", "V", "P", "U")
# Supplemental oxygen: valueBoolean (True when on oxygen).
SUPPLEMENTAL_OXYGEN = Code("3150-0", "Inhaled oxygen concentration", "%")

VITAL_SIGNS = (
    HEART_RATE,
    RESPIRATORY_RATE,
    OXYGEN_SATURATION,
    BODY_TEMPERATURE,
    BLOOD_PRESSURE_PANEL,
    CONSCIOUSNESS,
    SUPPLEMENTAL_OXYGEN,
)

# Laboratory tests (results are Observations grouped by a DiagnosticReport panel).
POTASSIUM = Code("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L")
SODIUM = Code("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L")
CREATININE = Code("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "umol/L")
UREA = Code("22664-7", "Urea [Moles/volume] in Serum or Plasma", "mmol/L")
GLUCOSE = Code("2345-7", "Glucose [Moles/volume] in Serum or Plasma", "mmol/L")
HAEMOGLOBIN = Code("718-7", "Hemoglobin [Mass/volume] in Blood", "g/L")
WHITE_CELL_COUNT = Code("6690-2", "Leukocytes [#/volume] in Blood", "10*9/L")
PLATELETS = Code("777-3", "Platelets [#/volume] in Blood", "10*9/L")
LACTATE = Code("2524-7", "Lactate [Moles/volume] in Serum or Plasma", "mmol/L")
TROPONIN_T = Code("67151-1", "Troponin T.cardiac [Mass/volume] in Serum or Plasma by HS", "ng/L")

# Lab panels: DiagnosticReport.code and the tests each panel reports.
ELECTROLYTES_PANEL = Code("24326-1", "Electrolytes 1998 panel - Serum or Plasma", "")
FBC_PANEL = Code("58410-2", "CBC panel - Blood by Automated count", "")
LACTATE_PANEL = Code("32693-4", "Lactate [Moles/volume] in Blood", "")
TROPONIN_PANEL = Code("89579-7", "Troponin panel - Serum or Plasma", "")

LAB_PANELS: dict[str, tuple[Code, ...]] = {
    ELECTROLYTES_PANEL.code: (SODIUM, POTASSIUM, UREA, CREATININE, GLUCOSE),
    FBC_PANEL.code: (HAEMOGLOBIN, WHITE_CELL_COUNT, PLATELETS),
    LACTATE_PANEL.code: (LACTATE,),
    TROPONIN_PANEL.code: (TROPONIN_T,),
}
PANELS_BY_CODE: dict[str, Code] = {
    p.code: p for p in (ELECTROLYTES_PANEL, FBC_PANEL, LACTATE_PANEL, TROPONIN_PANEL)
}
LAB_TESTS_BY_CODE: dict[str, Code] = {c.code: c for tests in LAB_PANELS.values() for c in tests}
