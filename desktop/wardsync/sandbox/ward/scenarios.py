"""Clinical content of the synthetic ward: acuity bands and admission scenarios.

An acuity band fixes the NEWS2 score of a patient's latest vital signs (Royal College of
Physicians, NEWS2 2017, chart 1: every parameter is drawn inside one scoring band), so the ward
always shows the full spread from 0 to 7+ whatever the seed. A scenario fixes what a patient
is in for: active problems (SNOMED CT), which lab panels were sent and which results are
abnormal, the drug chart (RxNorm ingredient codes, or plain text where RxNorm has no UK name),
and the open ward tasks.
"""

from __future__ import annotations

import dataclasses
import enum
import random
from dataclasses import dataclass, field

from wardsync.core import codes

from .observations import VitalSigns


class Acuity(enum.Enum):
    """How unwell a patient is now: sets the latest NEWS2 score and the vitals frequency."""

    STABLE = "stable"  # NEWS2 0
    WATCH = "watch"  # NEWS2 1-4
    DETERIORATING = "deteriorating"  # NEWS2 5-6
    UNWELL = "unwell"  # NEWS2 7 or more


# Hours between vitals rounds: NEWS2 guidance is 12-hourly at 0, 4-6-hourly at 1-4, hourly at
# 5-6 on ward escalation, continuous at 7+; a ward that charts 4-hourly by default does more.
VITALS_INTERVAL_H: dict[Acuity, int] = {
    Acuity.STABLE: 4,
    Acuity.WATCH: 4,
    Acuity.DETERIORATING: 2,
    Acuity.UNWELL: 1,
}
# How long before the latest round a deteriorating trend began.
DETERIORATION_ONSET_H = 12


def stable_vitals(rng: random.Random) -> VitalSigns:
    """A round that scores NEWS2 0: every parameter inside its zero band."""
    systolic = rng.randint(112, 150)
    return VitalSigns(
        heart_rate=rng.randint(58, 88),
        respiratory_rate=rng.randint(12, 18),
        spo2=rng.randint(96, 99),
        temperature=round(rng.uniform(36.2, 37.6), 1),
        systolic=systolic,
        diastolic=rng.randint(60, min(90, systolic - 30)),
    )


def latest_vitals(acuity: Acuity, rng: random.Random) -> VitalSigns:
    """The most recent round of a patient in `acuity`, inside the NEWS2 bands that fix its score.

    WATCH adds one or two single abnormalities (score 1-4); DETERIORATING is the classic early
    sepsis picture (tachycardia, tachypnoea, fever, SpO2 94-95: score 5-6); UNWELL is
    hypoxaemia on oxygen with tachycardia and tachypnoea (score 8-10).
    """
    v = stable_vitals(rng)
    if acuity is Acuity.STABLE:
        return v
    if acuity is Acuity.WATCH:
        changes: list[dict[str, float]] = rng.sample(
            [
                {"heart_rate": rng.randint(91, 105)},  # 1
                {"spo2": rng.randint(94, 95)},  # 1
                {"temperature": round(rng.uniform(38.1, 38.8), 1)},  # 1
                {"systolic": rng.randint(101, 110), "diastolic": rng.randint(55, 70)},  # 1
                {"respiratory_rate": rng.randint(21, 23)},  # 2
            ],
            k=rng.randint(1, 2),
        )
        fields: dict = {}
        for change in changes:
            fields.update(change)
        return dataclasses.replace(v, **fields)
    if acuity is Acuity.DETERIORATING:
        tachycardia = rng.choice([rng.randint(95, 108), rng.randint(111, 124)])  # 1 or 2
        return dataclasses.replace(
            v,
            heart_rate=tachycardia,
            respiratory_rate=rng.randint(21, 24),  # 2
            temperature=round(rng.uniform(38.2, 38.9), 1),  # 1
            spo2=rng.randint(94, 95),  # 1
        )
    systolic = rng.choice([rng.randint(112, 128), rng.randint(96, 100)])  # 0 or 2
    return dataclasses.replace(
        v,
        heart_rate=rng.randint(112, 128),  # 2
        respiratory_rate=rng.randint(23, 24),  # 2
        spo2=rng.randint(92, 93),  # 2
        on_oxygen=True,  # 2
        systolic=systolic,
        diastolic=rng.randint(50, min(75, systolic - 30)),
    )


@dataclass(frozen=True, slots=True)
class Problem:
    """A SNOMED CT coded problem."""

    code: str
    display: str


@dataclass(frozen=True, slots=True)
class Medication:
    """A drug chart line: RxNorm ingredient (or None: text only) and the dose instruction."""

    rxnorm: str | None
    name: str
    dosage: str


@dataclass(frozen=True, slots=True)
class WardTask:
    """An open ward task; `panel` (a LOINC panel code) links it to that lab report."""

    title: str
    description: str
    for_nurse: bool = False
    panel: str | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    """Why a patient is on the ward and what that implies for labs, drugs and tasks.

    `abnormal` maps a LOINC test code to the (low, high) interval its seeded value is drawn
    from; tests not listed are drawn from inside their reference interval. No interval here
    reaches a critical limit (lab_ranges.LAB_RANGES): the seeded ward raises no alert.
    """

    key: str
    problems: tuple[Problem, ...]
    panels: tuple[str, ...]
    abnormal: dict[str, tuple[float, float]] = field(default_factory=dict)
    medications: tuple[Medication, ...] = ()
    tasks: tuple[WardTask, ...] = ()


CAP = Problem("385093006", "Community acquired pneumonia")
SEPSIS = Problem("91302008", "Sepsis")
UTI = Problem("68566005", "Urinary tract infectious disease")
COPD_EXACERBATION = Problem(
    "195951007", "Acute exacerbation of chronic obstructive airways disease"
)
HEART_FAILURE = Problem("84114007", "Heart failure")
AKI = Problem("14669001", "Acute kidney injury")
TYPE_2_DIABETES = Problem("44054006", "Type 2 diabetes mellitus")
CELLULITIS = Problem("128045006", "Cellulitis")
ANAEMIA = Problem("271737000", "Anaemia")
ATRIAL_FIBRILLATION = Problem("49436004", "Atrial fibrillation")
HYPERTENSION = Problem("38341003", "Hypertensive disorder")
COPD = Problem("13645005", "Chronic obstructive lung disease")
APPENDICITIS = Problem("74400008", "Appendicitis")
PNEUMONIA = Problem("233604007", "Pneumonia")

# Long-term problems a patient may also have (active), and past ones (resolved).
COMORBIDITIES: tuple[Problem, ...] = (HYPERTENSION, TYPE_2_DIABETES, COPD)
PAST_PROBLEMS: tuple[Problem, ...] = (APPENDICITIS, PNEUMONIA, UTI)

PARACETAMOL = Medication("161", "Acetaminophen", "Paracetamol 1 g orally every 6 hours as needed")
ENOXAPARIN = Medication("67108", "Enoxaparin", "40 mg subcutaneously once daily at 18:00")
ELECTROLYTES = codes.ELECTROLYTES_PANEL.code
FBC = codes.FBC_PANEL.code
LACTATE = codes.LACTATE_PANEL.code
TROPONIN = codes.TROPONIN_PANEL.code
REPEAT_LACTATE = WardTask("Repeat lactate", "Repeat lactate in 2 hours", panel=LACTATE)
REPEAT_POTASSIUM = WardTask("Repeat potassium", "Repeat potassium in 4 hours", panel=ELECTROLYTES)

SCENARIOS: dict[str, Scenario] = {
    s.key: s
    for s in (
        Scenario(
            "pneumonia",
            (CAP,),
            (FBC, ELECTROLYTES, LACTATE),
            {
                codes.WHITE_CELL_COUNT.code: (13.0, 19.0),
                codes.UREA.code: (7.9, 10.5),
                codes.LACTATE.code: (2.1, 3.2),
            },
            (
                Medication("723", "Amoxicillin", "1 g orally three times daily"),
                Medication("21212", "Clarithromycin", "500 mg orally twice daily"),
                PARACETAMOL,
            ),
            (REPEAT_LACTATE, WardTask("Chase sputum culture", "Chase sputum culture result")),
        ),
        Scenario(
            "urosepsis",
            (SEPSIS, UTI),
            (FBC, LACTATE, ELECTROLYTES),
            {
                codes.WHITE_CELL_COUNT.code: (14.0, 20.0),
                codes.LACTATE.code: (2.5, 3.8),
                codes.CREATININE.code: (115, 160),
            },
            (
                Medication(None, "Co-amoxiclav", "Co-amoxiclav 1.2 g IV three times daily"),
                Medication(None, "Sodium chloride 0.9%", "1 litre IV over 8 hours"),
                PARACETAMOL,
            ),
            (
                REPEAT_LACTATE,
                WardTask("Review blood cultures", "Review blood culture result at 48 hours"),
                WardTask("Fluid balance", "Strict fluid balance chart", for_nurse=True),
            ),
        ),
        Scenario(
            "copd",
            (COPD_EXACERBATION,),
            (FBC, ELECTROLYTES),
            {codes.WHITE_CELL_COUNT.code: (11.5, 14.0)},
            (
                Medication("8638", "Prednisolone", "30 mg orally once daily for 5 days"),
                Medication("435", "Albuterol", "Salbutamol 2.5 mg nebulised four times daily"),
                Medication("3640", "Doxycycline", "100 mg orally once daily"),
            ),
            (
                WardTask(
                    "Blood gas if SpO2 low",
                    "Arterial blood gas if SpO2 falls below 88%",
                    for_nurse=True,
                ),
            ),
        ),
        Scenario(
            "cellulitis",
            (CELLULITIS,),
            (FBC,),
            {codes.WHITE_CELL_COUNT.code: (11.5, 15.0)},
            (Medication(None, "Flucloxacillin", "Flucloxacillin 1 g IV four times daily"),),
            (
                WardTask(
                    "Mark cellulitis margin",
                    "Mark and photograph the cellulitis margin",
                    for_nurse=True,
                ),
            ),
        ),
        Scenario(
            "heart-failure",
            (HEART_FAILURE,),
            (ELECTROLYTES, TROPONIN),
            {
                codes.SODIUM.code: (128, 132),
                codes.POTASSIUM.code: (3.1, 3.4),
                codes.TROPONIN_T.code: (18, 40),
            },
            (
                Medication("4603", "Furosemide", "40 mg IV twice daily"),
                Medication("19484", "Bisoprolol", "2.5 mg orally once daily"),
                Medication("35296", "Ramipril", "2.5 mg orally once daily"),
            ),
            (
                REPEAT_POTASSIUM,
                WardTask("Daily weight", "Weigh daily before breakfast", for_nurse=True),
            ),
        ),
        Scenario(
            "aki",
            (AKI,),
            (ELECTROLYTES,),
            {
                codes.CREATININE.code: (160, 280),
                codes.UREA.code: (12.0, 22.0),
                codes.POTASSIUM.code: (5.4, 5.9),
            },
            (Medication(None, "Sodium chloride 0.9%", "1 litre IV over 6 hours"),),
            (
                REPEAT_POTASSIUM,
                WardTask("Fluid balance", "Strict fluid balance chart", for_nurse=True),
            ),
        ),
        Scenario(
            "hyperglycaemia",
            (TYPE_2_DIABETES,),
            (ELECTROLYTES,),
            {codes.GLUCOSE.code: (11.0, 18.0)},
            (
                Medication("6809", "Metformin", "500 mg orally twice daily with meals"),
                Medication("274783", "Insulin glargine", "14 units subcutaneously at 22:00"),
            ),
            (
                WardTask(
                    "Capillary glucose",
                    "Capillary glucose before meals and at bedtime",
                    for_nurse=True,
                ),
            ),
        ),
        Scenario(
            "anaemia",
            (ANAEMIA,),
            (FBC, ELECTROLYTES),
            {codes.HAEMOGLOBIN.code: (78, 95)},
            (Medication(None, "Ferrous fumarate", "Ferrous fumarate 210 mg orally twice daily"),),
            (WardTask("Group and save", "Send group and save before transfusion decision"),),
        ),
        Scenario(
            "atrial-fibrillation",
            (ATRIAL_FIBRILLATION,),
            (ELECTROLYTES, TROPONIN),
            {codes.TROPONIN_T.code: (10, 20)},
            (
                Medication("1364430", "Apixaban", "5 mg orally twice daily"),
                Medication("19484", "Bisoprolol", "2.5 mg orally once daily"),
            ),
            (WardTask("12-lead ECG", "Repeat 12-lead ECG this morning"),),
        ),
    )
}

# Which scenarios fit an acuity: the sick patients have infections, not a stable anaemia.
SCENARIOS_BY_ACUITY: dict[Acuity, tuple[str, ...]] = {
    Acuity.UNWELL: ("pneumonia", "urosepsis"),
    Acuity.DETERIORATING: ("pneumonia", "urosepsis", "copd", "cellulitis"),
    Acuity.WATCH: ("copd", "cellulitis", "heart-failure", "aki", "hyperglycaemia", "pneumonia"),
    Acuity.STABLE: (
        "heart-failure",
        "aki",
        "hyperglycaemia",
        "anaemia",
        "atrial-fibrillation",
        "cellulitis",
    ),
}

# Routine immunisations a ward patient's record may show: (CVX code, display, years ago range).
HISTORIC_IMMUNIZATIONS: tuple[tuple[str, str, tuple[int, int]], ...] = (
    ("140", "Influenza, seasonal, injectable, preservative free", (1, 3)),
    ("33", "Pneumococcal polysaccharide vaccine, 23 valent", (4, 12)),
    ("115", "Tdap", (3, 10)),
    ("208", "COVID-19, mRNA, LNP-S, PF, 30 mcg/0.3 mL dose", (2, 5)),
    ("121", "Zoster vaccine, live", (5, 12)),
)
