"""The synthetic ward: one adult medical ward as plain FHIR R4 JSON, built from a seed.

`build_ward(seed, now=...)` returns every resource the sandbox starts with: the ward and its
beds, ward staff, patients with their inpatient encounters, 24 h of vital signs, lab reports,
problems, immunisations, drug charts and open tasks. The same (seed, now, patients) always
gives the same resources; ids are readable (`pat-01`, `enc-01`, `obs-01-hr-003`,
`dr-01-2`) so tests and docs can name them.

The seeded ward holds no critical lab value: the app must raise no alert at start-up.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, datetime, timedelta

from wardsync.core import codes

from .lab_ranges import lab_range
from .names import MAX_DISTINCT_NAMES, SYNTHETIC_FAMILY_NAMES, SYNTHETIC_GIVEN_NAMES
from .observations import (
    LAB_SLUGS,
    VitalSigns,
    fhir_datetime,
    lab_observation,
    lab_report,
    reference,
    vital_sign_observations,
)
from .scenarios import (
    COMORBIDITIES,
    DETERIORATION_ONSET_H,
    ENOXAPARIN,
    HISTORIC_IMMUNIZATIONS,
    PAST_PROBLEMS,
    SCENARIOS,
    SCENARIOS_BY_ACUITY,
    VITALS_INTERVAL_H,
    Acuity,
    Medication,
    Problem,
    Scenario,
    latest_vitals,
    stable_vitals,
)

WARD_ID = "ward-7a"
WARD_NAME = "Ward 7A Acute Medicine"
DEMO_CLINICIAN_ID = "demo-clinician"
DEMO_NURSE_ID = "demo-nurse"
MAX_PATIENTS = min(99, MAX_DISTINCT_NAMES)  # two-digit ids (pat-01 .. pat-99), unique names
VITALS_WINDOW_H = 24
MIN_LENGTH_OF_STAY_H = 26  # admitted before the vitals window opens
MAX_LENGTH_OF_STAY_D = 10

ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
# (SNOMED CT code, display, category, criticality); category "" = a "none known" statement.
KNOWN_ALLERGIES = (
    ("91936005", "Allergy to penicillin", "medication", "high"),
    ("294505008", "Allergy to amoxicillin", "medication", "high"),
    ("300916003", "Latex allergy", "environment", "low"),
    ("91935009", "Allergy to peanut", "food", "high"),
    ("293586001", "Allergy to codeine", "medication", "low"),
)
NO_KNOWN_ALLERGY = ("716186003", "No known allergy", "", "")
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
IDENTIFIER_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"

# (id, prefix, given, family) of the ward staff. The two demo ids are fixed: the sandbox
# sign-in server maps its demo users to them.
WARD_STAFF: tuple[tuple[str, str, str, str], ...] = (
    (DEMO_CLINICIAN_ID, "Dr", "Demo", "Clinician"),
    (DEMO_NURSE_ID, "Nurse", "Demo", "Nightingale"),
    ("prac-consultant", "Dr", "Sample", "Consultant"),
    ("prac-registrar", "Dr", "Example", "Registrar"),
    ("prac-staff-nurse", "Nurse", "Test", "Staffnurse"),
)
CONSULTANT_ID = "prac-consultant"
REGISTRAR_ID = "prac-registrar"

# Resource types in the order they are returned: everything a resource refers to comes
# before it, so the set can be loaded one create at a time.
RESOURCE_ORDER: tuple[str, ...] = (
    "Location",
    "Practitioner",
    "Patient",
    "Encounter",
    "Condition",
    "AllergyIntolerance",
    "Observation",
    "DiagnosticReport",
    "Immunization",
    "MedicationRequest",
    "Task",
)


def build_ward(seed: int, *, now: datetime, patients: int = 24) -> list[dict]:
    """Every resource of the synthetic ward as FHIR R4 JSON dicts with ids set.

    `now` (timezone-aware) anchors all times: vitals cover the 24 h before it, nothing is
    dated after it. Deterministic for the same (seed, now, patients); referenced resources
    precede the resources that reference them.
    """
    if not 1 <= patients <= MAX_PATIENTS:
        raise ValueError(f"patients must be between 1 and {MAX_PATIENTS}, not {patients}")
    fhir_datetime(now)  # refuses a naive datetime before anything is built
    rng = random.Random(seed)
    out: list[dict] = [_ward_location()]
    out += [_bed(n) for n in range(1, patients + 1)]
    out += [_practitioner(*staff) for staff in WARD_STAFF]

    names = rng.sample(
        [(g, f) for f in SYNTHETIC_FAMILY_NAMES for g in SYNTHETIC_GIVEN_NAMES], k=patients
    )
    mrns = rng.sample(range(1_000_000, 10_000_000), k=patients)
    acuities = _acuity_mix(patients, rng)
    for n in range(1, patients + 1):
        out += _PatientBuilder(
            n,
            rng=random.Random(rng.getrandbits(64)),
            now=now,
            name=names[n - 1],
            mrn=f"SYN{mrns[n - 1]:07d}",
            acuity=acuities[n - 1],
        ).build()
    rank = {rt: i for i, rt in enumerate(RESOURCE_ORDER)}
    return sorted(out, key=lambda r: rank[r["resourceType"]])  # stable: keeps patient order


def _acuity_mix(patients: int, rng: random.Random) -> list[Acuity]:
    """Mostly stable patients, a few to watch, and at least one deteriorating and one unwell."""
    unwell = max(1, round(patients * 0.08))
    deteriorating = max(1, round(patients * 0.12))
    watch = max(1, round(patients * 0.25))
    mix = [Acuity.UNWELL] * unwell + [Acuity.DETERIORATING] * deteriorating
    mix += [Acuity.WATCH] * watch
    mix += [Acuity.STABLE] * max(0, patients - len(mix))
    mix = mix[:patients]
    rng.shuffle(mix)
    return mix


def _ward_location() -> dict:
    return {
        "resourceType": "Location",
        "id": WARD_ID,
        "status": "active",
        "name": WARD_NAME,
        "mode": "instance",
        "physicalType": _physical_type("wa", "Ward"),
    }


def _bed(n: int) -> dict:
    return {
        "resourceType": "Location",
        "id": f"bed-{n:02d}",
        "status": "active",
        "name": f"Bed {n:02d}",
        "mode": "instance",
        "physicalType": _physical_type("bd", "Bed"),
        "partOf": reference("Location", WARD_ID),
    }


def _physical_type(code: str, display: str) -> dict:
    return {
        "coding": [{"system": codes.LOCATION_PHYSICAL_TYPE, "code": code, "display": display}],
        "text": display,
    }


def _practitioner(pid: str, prefix: str, given: str, family: str) -> dict:
    return {
        "resourceType": "Practitioner",
        "id": pid,
        "active": True,
        "name": [
            {
                "use": "official",
                "text": f"{prefix} {given} {family}",
                "family": family,
                "given": [given],
                "prefix": [prefix],
            }
        ],
    }


class _PatientBuilder:
    """Builds one patient's resources; holds the per-patient ids and times."""

    def __init__(
        self,
        n: int,
        *,
        rng: random.Random,
        now: datetime,
        name: tuple[str, str],
        mrn: str,
        acuity: Acuity,
    ) -> None:
        self.rng = rng
        self.now = now
        self.name = name
        self.mrn = mrn
        self.acuity = acuity
        self.nn = f"{n:02d}"
        self.patient_id = f"pat-{self.nn}"
        self.encounter_id = f"enc-{self.nn}"
        self.bed_id = f"bed-{self.nn}"
        self.scenario: Scenario = SCENARIOS[rng.choice(SCENARIOS_BY_ACUITY[acuity])]
        self.admitted = now - timedelta(
            hours=rng.uniform(MIN_LENGTH_OF_STAY_H, MAX_LENGTH_OF_STAY_D * 24)
        )
        self.reports_by_panel: dict[str, str] = {}

    def build(self) -> list[dict]:
        out = [self._patient(), self._encounter()]
        out += self._conditions()
        out += self._vitals()
        out += self._labs()
        out += self._immunizations()
        out += self._allergies()
        out += self._medication_requests()
        out += self._tasks()
        return out

    def _subject(self) -> dict:
        return reference("Patient", self.patient_id)

    def _encounter_ref(self) -> dict:
        return reference("Encounter", self.encounter_id)

    def _patient(self) -> dict:
        rng = self.rng
        given, family = self.name
        age = rng.choice([rng.randint(19, 64), rng.randint(65, 95), rng.randint(70, 92)])
        birth = date(self.now.year - age, rng.randint(1, 12), rng.randint(1, 28))
        return {
            "resourceType": "Patient",
            "id": self.patient_id,
            "identifier": [
                {
                    "use": "usual",
                    "type": {
                        "coding": [
                            {
                                "system": IDENTIFIER_TYPE,
                                "code": "MR",
                                "display": "Medical record number",
                            }
                        ]
                    },
                    "system": codes.MRN_SYSTEM,
                    "value": self.mrn,
                }
            ],
            "active": True,
            "name": [
                {"use": "official", "text": f"{given} {family}", "family": family, "given": [given]}
            ],
            "gender": rng.choice(["female", "male"]),
            "birthDate": birth.isoformat(),
        }

    def _encounter(self) -> dict:
        return {
            "resourceType": "Encounter",
            "id": self.encounter_id,
            "status": "in-progress",
            "class": {"system": ACT_CODE, "code": "IMP", "display": "inpatient encounter"},
            "subject": self._subject(),
            "participant": [
                {
                    "type": [
                        {
                            "coding": [
                                {
                                    "system": PARTICIPATION_TYPE,
                                    "code": "ATND",
                                    "display": "attender",
                                }
                            ]
                        }
                    ],
                    "individual": reference("Practitioner", CONSULTANT_ID),
                }
            ],
            "period": {"start": fhir_datetime(self.admitted)},
            "location": [
                {"location": reference("Location", self.bed_id), "status": "active"},
                {"location": reference("Location", WARD_ID), "status": "active"},
            ],
        }

    # ------------------------------------------------------------------ problems
    def _conditions(self) -> list[dict]:
        rng = self.rng
        active: list[Problem] = list(self.scenario.problems)
        extra = [p for p in COMORBIDITIES if p not in active]
        active += rng.sample(extra, k=rng.choice([0, 0, 1, 1, 2]))
        past = [p for p in PAST_PROBLEMS if p not in active]
        resolved = rng.sample(past, k=rng.choice([0, 1, 1, 2]))
        out: list[dict] = []
        for problem in active:
            out.append(self._condition(len(out) + 1, problem, resolved=False))
        for problem in resolved:
            out.append(self._condition(len(out) + 1, problem, resolved=True))
        return out

    def _condition(self, k: int, problem: Problem, *, resolved: bool) -> dict:
        rng = self.rng
        status = "resolved" if resolved else "active"
        cond: dict = {
            "resourceType": "Condition",
            "id": f"cond-{self.nn}-{k}",
            "clinicalStatus": {"coding": [{"system": codes.CONDITION_CLINICAL, "code": status}]},
            "verificationStatus": {
                "coding": [{"system": CONDITION_VERIFICATION, "code": "confirmed"}]
            },
            "category": [
                {
                    "coding": [
                        {
                            "system": CONDITION_CATEGORY,
                            "code": "problem-list-item",
                            "display": "Problem List Item",
                        }
                    ]
                }
            ],
            "code": {
                "coding": [
                    {"system": codes.SNOMED, "code": problem.code, "display": problem.display}
                ],
                "text": problem.display,
            },
            "subject": self._subject(),
        }
        if resolved:
            onset = self.now - timedelta(days=rng.randint(2 * 365, 20 * 365))
            cond["onsetDateTime"] = fhir_datetime(onset)
            cond["abatementDateTime"] = fhir_datetime(onset + timedelta(days=rng.randint(5, 30)))
        elif problem in self.scenario.problems:
            cond["encounter"] = self._encounter_ref()
            cond["onsetDateTime"] = fhir_datetime(
                self.admitted - timedelta(hours=rng.randint(6, 72))
            )
            cond["recordedDate"] = fhir_datetime(self.admitted + timedelta(hours=1))
        else:
            cond["onsetDateTime"] = fhir_datetime(
                self.now - timedelta(days=rng.randint(365, 15 * 365))
            )
        return cond

    # ------------------------------------------------------------------ vitals
    def _vital_times(self) -> list[datetime]:
        latest = self.now - timedelta(minutes=self.rng.randint(5, 55))
        step = timedelta(hours=VITALS_INTERVAL_H[self.acuity])
        window_start = self.now - timedelta(hours=VITALS_WINDOW_H)
        times = []
        t = latest
        while t > window_start:
            times.append(t)
            t -= step
        return sorted(times)

    def _vitals(self) -> list[dict]:
        rng = self.rng
        baseline = stable_vitals(rng)
        final = latest_vitals(self.acuity, rng)
        times = self._vital_times()
        latest = times[-1]
        onset = latest - timedelta(hours=DETERIORATION_ONSET_H)
        out = []
        for round_no, t in enumerate(times, start=1):
            if t == latest:
                vitals = final
            else:
                progress = max(0.0, (t - onset) / (latest - onset))
                vitals = self._between(baseline, final, progress)

            def id_for(slug: str, r: int = round_no) -> str:
                return f"obs-{self.nn}-{slug}-{r:03d}"

            out += vital_sign_observations(
                self.patient_id,
                vitals,
                effective=t,
                encounter_id=self.encounter_id,
                id_for=id_for,
            )
        return out

    def _between(self, a: VitalSigns, b: VitalSigns, progress: float) -> VitalSigns:
        """A plausible earlier reading `progress` (0..1) of the way from `a` to `b`, with noise."""
        rng = self.rng

        def mix(x: float, y: float, noise: float) -> float:
            return x + (y - x) * progress + rng.uniform(-noise, noise)

        systolic = round(mix(a.systolic, b.systolic, 6))
        return VitalSigns(
            heart_rate=round(mix(a.heart_rate, b.heart_rate, 4)),
            respiratory_rate=round(mix(a.respiratory_rate, b.respiratory_rate, 1)),
            spo2=min(100, round(mix(a.spo2, b.spo2, 1))),
            temperature=round(mix(a.temperature, b.temperature, 0.2), 1),
            systolic=systolic,
            diastolic=min(systolic - 25, round(mix(a.diastolic, b.diastolic, 4))),
            consciousness=b.consciousness if progress >= 0.9 else a.consciousness,
            on_oxygen=b.on_oxygen and progress >= 0.5,
        )

    # ------------------------------------------------------------------ labs
    def _labs(self) -> list[dict]:
        rng = self.rng
        out: list[dict] = []
        panels = self.scenario.panels[: rng.randint(1, len(self.scenario.panels))]
        earliest_h = min(22.0, (self.now - self.admitted).total_seconds() / 3600 - 1)
        for k, panel in enumerate(panels, start=1):
            collected = self.now - timedelta(hours=rng.uniform(3, earliest_h))
            issued = collected + timedelta(minutes=rng.randint(40, 110))
            report_id = f"dr-{self.nn}-{k}"
            result_ids = []
            for test in codes.LAB_PANELS[panel]:
                obs_id = f"obs-{self.nn}-lab{k}-{LAB_SLUGS[test.code]}"
                out.append(
                    lab_observation(
                        self.patient_id,
                        test.code,
                        self._lab_value(test.code),
                        effective=collected,
                        issued=issued,
                        encounter_id=self.encounter_id,
                        observation_id=obs_id,
                    )
                )
                result_ids.append(obs_id)
            out.append(
                lab_report(
                    self.patient_id,
                    panel,
                    result_ids,
                    effective=collected,
                    issued=issued,
                    encounter_id=self.encounter_id,
                    report_id=report_id,
                    accession=f"SEED{self.nn}{k:02d}",
                )
            )
            self.reports_by_panel[panel] = report_id
        return out

    def _lab_value(self, test_code: str) -> float:
        table = lab_range(test_code)
        interval = self.scenario.abnormal.get(test_code)
        if interval is None:
            low = table.low if table.low is not None else 0.0
            high = table.high if table.high is not None else low
            if table.low is None:  # troponin: an upper limit only; healthy values sit well below
                low = high * 0.2
            interval = (low + (high - low) * 0.1, high - (high - low) * 0.1)
        value = table.round(self.rng.uniform(*interval))
        if table.is_critical(value):  # guards the scenario tables; see Scenario docstring
            raise ValueError(f"seed scenario interval for {test_code} reaches a critical limit")
        return value

    # ------------------------------------------------------------------ history, drugs, tasks
    def _immunizations(self) -> list[dict]:
        rng = self.rng
        out = []
        for k, (cvx, display, (min_y, max_y)) in enumerate(
            rng.sample(HISTORIC_IMMUNIZATIONS, k=rng.randint(1, 3)), start=1
        ):
            given = self.now - timedelta(days=rng.randint(min_y * 365, max_y * 365))
            out.append(
                {
                    "resourceType": "Immunization",
                    "id": f"imm-{self.nn}-{k}",
                    "status": "completed",
                    "vaccineCode": {
                        "coding": [{"system": codes.CVX, "code": cvx, "display": display}],
                        "text": display,
                    },
                    "patient": self._subject(),
                    "occurrenceDateTime": fhir_datetime(given),
                    "primarySource": False,
                }
            )
        return out

    def _allergies(self) -> list[dict]:
        """Most patients: "no known allergy" recorded; some: one or two real allergies.

        Drawn from a separate generator so adding allergies did not change the rest of the
        seeded ward.
        """
        rng = random.Random(f"allergies-{self.nn}-{self.mrn}")
        chosen = rng.sample(KNOWN_ALLERGIES, k=rng.choice([0, 0, 0, 1, 1, 2]))
        picks = chosen or [NO_KNOWN_ALLERGY]
        out = []
        for k, (code, display, category, criticality) in enumerate(picks, start=1):
            allergy = {
                "resourceType": "AllergyIntolerance",
                "id": f"alg-{self.nn}-{k}",
                "clinicalStatus": {"coding": [{"system": ALLERGY_CLINICAL,
                                               "code": "active"}]},
                "verificationStatus": {"coding": [{"system": ALLERGY_VERIFICATION,
                                                   "code": "confirmed"}]},
                "code": {"coding": [{"system": codes.SNOMED, "code": code,
                                     "display": display}], "text": display},
                "patient": self._subject(),
                "recordedDate": fhir_datetime(self.admitted),
            }
            if category:
                allergy["category"] = [category]
                allergy["criticality"] = criticality
            out.append(allergy)
        return out

    def _medication_requests(self) -> list[dict]:
        rng = self.rng
        meds: list[Medication] = list(self.scenario.medications)
        if not any(m.name == "Apixaban" for m in meds):
            meds.append(ENOXAPARIN)  # VTE prophylaxis unless already anticoagulated
        out = []
        for k, med in enumerate(meds, start=1):
            concept: dict = {"text": med.name}
            if med.rxnorm is not None:
                concept["coding"] = [
                    {"system": codes.RXNORM, "code": med.rxnorm, "display": med.name}
                ]
            out.append(
                {
                    "resourceType": "MedicationRequest",
                    "id": f"medreq-{self.nn}-{k}",
                    "status": "active",
                    "intent": "order",
                    "medicationCodeableConcept": concept,
                    "subject": self._subject(),
                    "encounter": self._encounter_ref(),
                    "authoredOn": fhir_datetime(
                        self.admitted + timedelta(minutes=rng.randint(30, 240))
                    ),
                    "requester": reference(
                        "Practitioner", rng.choice([DEMO_CLINICIAN_ID, REGISTRAR_ID])
                    ),
                    "dosageInstruction": [{"text": med.dosage}],
                }
            )
        return out

    def _tasks(self) -> list[dict]:
        rng = self.rng
        out = []
        for k, task in enumerate(self.scenario.tasks, start=1):
            urgent = self.acuity in (Acuity.UNWELL, Acuity.DETERIORATING) and not task.for_nurse
            owner = DEMO_NURSE_ID if task.for_nurse else DEMO_CLINICIAN_ID
            resource: dict = {
                "resourceType": "Task",
                "id": f"task-{self.nn}-{k}",
                "status": rng.choice(["requested", "requested", "in-progress"]),
                "intent": "order",
                "priority": "urgent" if urgent else "routine",
                "code": {"text": task.title},
                "description": task.description,
                "for": self._subject(),
                "encounter": self._encounter_ref(),
                "authoredOn": fhir_datetime(self.now - timedelta(minutes=rng.randint(20, 360))),
                "requester": reference("Practitioner", rng.choice([CONSULTANT_ID, REGISTRAR_ID])),
                "owner": reference("Practitioner", owner),
            }
            focus = self.reports_by_panel.get(task.panel) if task.panel else None
            if focus is not None:
                resource["focus"] = reference("DiagnosticReport", focus)
            out.append(resource)
        return out


def iter_references(value: object) -> Iterator[str]:
    """Every literal `reference` string anywhere inside a resource (for integrity checks)."""
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str):
            yield ref
        for v in value.values():
            yield from iter_references(v)
    elif isinstance(value, list):
        for v in value:
            yield from iter_references(v)


__all__ = [
    "DEMO_CLINICIAN_ID",
    "DEMO_NURSE_ID",
    "WARD_ID",
    "build_ward",
    "iter_references",
]
