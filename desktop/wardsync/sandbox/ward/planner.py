"""What the ward simulator writes, and when: a pure, seeded plan with no I/O and no clock.

Lab results and vital-sign rounds arrive as two independent Poisson processes (exponential
gaps at `results_per_min` and `vitals_per_min`). A lab event is a correction of an earlier
result with `correction_probability`, otherwise a new panel for a random patient; a new panel
carries a critical value with `critical_probability`. Each patient's values wander around
their own baseline, so a patient's potassium does not jump from 3.6 to 5.1 and back.
The same (patients, config) always gives the same plan.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from wardsync.core import codes

from .lab_ranges import CRITICAL_TESTS_BY_PANEL, LabRange, lab_range
from .observations import VitalSigns
from .scenarios import Acuity, latest_vitals

SECONDS_PER_MIN = 60.0
ABNORMAL_PROBABILITY = 0.2  # of a non-critical value lying outside its reference interval
CORRECTABLE_RECENT = 20  # corrections pick among this many latest new results
ACUITY_WEIGHTS = {Acuity.STABLE: 60, Acuity.WATCH: 25, Acuity.DETERIORATING: 10, Acuity.UNWELL: 5}

# Physiological bounds a simulated vital sign never leaves.
VITAL_BOUNDS: dict[str, tuple[float, float]] = {
    "heart_rate": (35, 170),
    "respiratory_rate": (6, 40),
    "spo2": (80, 100),
    "temperature": (34.5, 41.0),
    "systolic": (70, 220),
    "diastolic": (35, 130),
}
# Random-walk step (uniform ±) per round, and the pull back towards the patient's baseline.
VITAL_STEP: dict[str, float] = {
    "heart_rate": 3,
    "respiratory_rate": 1,
    "spo2": 1,
    "temperature": 0.1,
    "systolic": 4,
    "diastolic": 3,
}
MEAN_REVERSION = 0.2


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """Rates and probabilities of the ward simulator.

    `results_per_min` counts lab events (new panels and corrections); `vitals_per_min` counts
    rounds of vital signs (seven Observations each). `correction_probability` is per lab
    event; `critical_probability` per new panel (and per correction). Write errors are retried
    after `retry_initial_s`, doubling up to `retry_max_s`.
    """

    results_per_min: float = 6.0
    vitals_per_min: float = 12.0
    critical_probability: float = 0.05
    correction_probability: float = 0.02
    seed: int = 1
    retry_initial_s: float = 1.0
    retry_max_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("results_per_min", "vitals_per_min", "retry_initial_s", "retry_max_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
        for name in ("critical_probability", "correction_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value!r}")


@dataclass(frozen=True, slots=True)
class _Write:
    """What every planned write has: its number in the plan, the time since the previous
    write and the patient it is about."""

    seq: int
    delay_s: float
    patient_id: str


@dataclass(frozen=True, slots=True)
class _PanelWrite(_Write):
    """A lab write: `values` maps LOINC test codes of panel `panel_code` to values;
    `critical` says whether one of them is critical."""

    panel_code: str
    values: dict[str, float]
    critical: bool


@dataclass(frozen=True, slots=True)
class LabResultWrite(_PanelWrite):
    """Release a new panel with these `values`."""


@dataclass(frozen=True, slots=True)
class LabCorrectionWrite(_PanelWrite):
    """Correct the panel released by planned write `corrects_seq` with new `values`."""

    corrects_seq: int


@dataclass(frozen=True, slots=True)
class VitalsWrite(_Write):
    """Post one round of vital signs."""

    vitals: VitalSigns


PlannedWrite = LabResultWrite | LabCorrectionWrite | VitalsWrite


@dataclass(slots=True)
class _PatientState:
    lab_baseline: dict[str, float] = field(default_factory=dict)
    vitals_baseline: VitalSigns | None = None
    vitals: VitalSigns | None = None


class WritePlanner:
    """An endless, deterministic iterator of `PlannedWrite`s.

    `delay_s` of each write is the time since the previous one. With both rates zero the
    plan is empty.
    """

    def __init__(self, patients: Sequence[str], config: SimulatorConfig) -> None:
        if not patients:
            raise ValueError("the simulator needs at least one patient")
        self._patients = list(patients)
        self._config = config
        # Separate streams so that, say, a different critical probability does not move the
        # timeline (string seeds are hashed with SHA-512: stable across runs and platforms).
        self._timing = random.Random(f"{config.seed}:timing")
        self._rng = random.Random(f"{config.seed}:content")
        self._now_s = 0.0
        self._next_lab_s = self._gap(config.results_per_min)
        self._next_vitals_s = self._gap(config.vitals_per_min)
        self._seq = 0
        self._state: dict[str, _PatientState] = {}
        self._recent: deque[LabResultWrite] = deque(maxlen=CORRECTABLE_RECENT)

    def __iter__(self) -> Iterator[PlannedWrite]:
        return self

    def __next__(self) -> PlannedWrite:
        at = min(self._next_lab_s, self._next_vitals_s)
        if math.isinf(at):
            raise StopIteration
        delay, self._now_s = at - self._now_s, at
        self._seq += 1
        if self._next_lab_s <= self._next_vitals_s:
            self._next_lab_s = at + self._gap(self._config.results_per_min)
            return self._lab_event(delay)
        self._next_vitals_s = at + self._gap(self._config.vitals_per_min)
        return self._vitals_event(delay)

    def _gap(self, per_min: float) -> float:
        if per_min <= 0:
            return math.inf
        return self._timing.expovariate(per_min / SECONDS_PER_MIN)

    def _patient(self, patient_id: str) -> _PatientState:
        return self._state.setdefault(patient_id, _PatientState())

    # ------------------------------------------------------------------ labs
    def _lab_event(self, delay: float) -> LabResultWrite | LabCorrectionWrite:
        rng = self._rng
        if self._recent and rng.random() < self._config.correction_probability:
            return self._correction(delay, rng.choice(self._recent))
        patient_id = rng.choice(self._patients)
        critical = rng.random() < self._config.critical_probability
        panels = [p for p, tests in CRITICAL_TESTS_BY_PANEL.items() if tests or not critical]
        panel = rng.choice(sorted(panels))
        state = self._patient(patient_id)
        values = {t.code: self._usual_value(state, t.code) for t in codes.LAB_PANELS[panel]}
        if critical:
            test = rng.choice(CRITICAL_TESTS_BY_PANEL[panel])
            values[test] = self._critical_value(test)
        write = LabResultWrite(self._seq, delay, patient_id, panel, values, critical)
        self._recent.append(write)
        return write

    def _correction(self, delay: float, original: LabResultWrite) -> LabCorrectionWrite:
        """A corrected value for one test: a critical one comes back sane (a haemolysed or
        contaminated sample), a sane one shifts a little or, rarely, turns critical."""
        rng = self._rng
        # A critical result is what gets re-checked; otherwise any test may be corrected.
        critical = [t for t, v in original.values.items() if lab_range(t).is_critical(v)]
        test = critical[0] if critical else rng.choice(sorted(original.values))
        table = lab_range(test)
        before = original.values[test]
        if table.is_critical(before):
            after = self._usual_value(self._patient(original.patient_id), test)
        elif (
            rng.random() < self._config.critical_probability
            and test in CRITICAL_TESTS_BY_PANEL[original.panel_code]
        ):
            after = self._critical_value(test)
        else:
            shift = rng.choice([-1, 1]) * rng.uniform(0.03, 0.15)
            after = self._clamp_sane(table, before * (1 + shift))
        if after == before:
            after = self._clamp_sane(table, before + _precision(table))
            if after == before:
                after = self._clamp_sane(table, before - _precision(table))
        return LabCorrectionWrite(
            seq=self._seq,
            delay_s=delay,
            patient_id=original.patient_id,
            panel_code=original.panel_code,
            values={test: after},
            critical=table.is_critical(after),
            corrects_seq=original.seq,
        )

    def _usual_value(self, state: _PatientState, test: str) -> float:
        """A non-critical value near the patient's baseline; sometimes outside the range."""
        rng = self._rng
        table = lab_range(test)
        low, high = _reference_interval(table)
        span = high - low
        baseline = state.lab_baseline.get(test)
        if baseline is None:
            baseline = state.lab_baseline[test] = rng.uniform(low + 0.15 * span, high - 0.15 * span)
        if rng.random() < ABNORMAL_PROBABILITY:
            side = rng.choice([-1, 1]) if table.low is not None else 1
            edge = high if side > 0 else low
            value = edge + side * rng.uniform(0.05, 0.35) * span
        else:
            value = baseline + rng.uniform(-0.08, 0.08) * span
        return self._clamp_sane(table, value)

    def _critical_value(self, test: str) -> float:
        """A value beyond one of the test's critical limits (e.g. potassium 6.3-7.4)."""
        rng = self._rng
        table = lab_range(test)
        sides = [
            (limit, sign)
            for limit, sign in ((table.critical_low, -1), (table.critical_high, 1))
            if limit is not None
        ]
        limit, sign = rng.choice(sides)
        value = table.round(limit + sign * abs(limit) * rng.uniform(0.03, 0.2))
        while not table.is_critical(value):  # rounding may land on the limit itself
            value = table.round(value + sign * _precision(table))
        return value

    @staticmethod
    def _clamp_sane(table: LabRange, value: float) -> float:
        """`value` rounded and kept inside the critical limits (and above zero)."""
        step = _precision(table)
        if table.critical_low is not None:
            value = max(value, table.critical_low + step)
        if table.critical_high is not None:
            value = min(value, table.critical_high - step)
        return table.round(max(value, step))

    # ------------------------------------------------------------------ vitals
    def _vitals_event(self, delay: float) -> VitalsWrite:
        rng = self._rng
        patient_id = rng.choice(self._patients)
        state = self._patient(patient_id)
        if state.vitals_baseline is None:
            acuity = rng.choices(list(ACUITY_WEIGHTS), weights=list(ACUITY_WEIGHTS.values()))[0]
            state.vitals_baseline = state.vitals = latest_vitals(acuity, rng)
        else:
            state.vitals = self._walk(state.vitals or state.vitals_baseline, state.vitals_baseline)
        return VitalsWrite(self._seq, delay, patient_id, state.vitals)

    def _walk(self, current: VitalSigns, baseline: VitalSigns) -> VitalSigns:
        rng = self._rng
        moved: dict[str, float] = {}
        for name, step in VITAL_STEP.items():
            now, home = getattr(current, name), getattr(baseline, name)
            value = now + MEAN_REVERSION * (home - now) + rng.uniform(-step, step)
            low, high = VITAL_BOUNDS[name]
            moved[name] = min(high, max(low, value))
        systolic = round(moved["systolic"])
        return VitalSigns(
            heart_rate=round(moved["heart_rate"]),
            respiratory_rate=round(moved["respiratory_rate"]),
            spo2=round(moved["spo2"]),
            temperature=round(moved["temperature"], 1),
            systolic=systolic,
            diastolic=min(round(moved["diastolic"]), systolic - 15),
            consciousness=current.consciousness,
            on_oxygen=current.on_oxygen,
        )


def _precision(table: LabRange) -> float:
    return 10.0**-table.decimals


def _reference_interval(table: LabRange) -> tuple[float, float]:
    high = table.high if table.high is not None else 0.0
    low = table.low if table.low is not None else high * 0.2  # troponin: upper limit only
    return low, high
