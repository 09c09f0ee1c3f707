"""The simulator's plan: deterministic, at the configured rates, with sane and critical values."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime

import pytest

from wardsync.core import codes
from wardsync.core.critical import assess_observation
from wardsync.sandbox.ward.lab_ranges import lab_range
from wardsync.sandbox.ward.observations import lab_observation
from wardsync.sandbox.ward.planner import (
    VITAL_BOUNDS,
    LabCorrectionWrite,
    LabResultWrite,
    SimulatorConfig,
    VitalsWrite,
    WritePlanner,
)

PATIENTS = [f"pat-{n:02d}" for n in range(1, 25)]
NOW = datetime(2026, 11, 22, 21, 0, tzinfo=UTC)


def plan(n: int, config: SimulatorConfig | None = None, patients=PATIENTS) -> list:
    return list(itertools.islice(WritePlanner(patients, config or SimulatorConfig()), n))


def test_same_seed_same_plan_other_seed_other_plan():
    assert plan(500) == plan(500)
    assert plan(500) != plan(500, SimulatorConfig(seed=2))


def test_timeline_does_not_depend_on_content_probabilities():
    calm = plan(300, SimulatorConfig(critical_probability=0.0))
    wild = plan(300, SimulatorConfig(critical_probability=1.0))
    assert [w.delay_s for w in calm] == [w.delay_s for w in wild]


def test_sequence_numbers_and_delays():
    writes = plan(200)
    assert [w.seq for w in writes] == list(range(1, 201))
    assert all(w.delay_s >= 0 for w in writes)
    assert {w.patient_id for w in writes} <= set(PATIENTS)


def test_rates_match_the_configuration():
    config = SimulatorConfig(results_per_min=6.0, vitals_per_min=12.0)
    writes = plan(6000, config)
    minutes = sum(w.delay_s for w in writes) / 60
    labs = sum(not isinstance(w, VitalsWrite) for w in writes)
    vitals = sum(isinstance(w, VitalsWrite) for w in writes)
    assert labs / minutes == pytest.approx(6.0, rel=0.08)
    assert vitals / minutes == pytest.approx(12.0, rel=0.08)


def test_zero_rates():
    only_vitals = plan(50, SimulatorConfig(results_per_min=0))
    assert all(isinstance(w, VitalsWrite) for w in only_vitals)
    only_labs = plan(50, SimulatorConfig(vitals_per_min=0))
    assert all(isinstance(w, LabResultWrite | LabCorrectionWrite) for w in only_labs)
    assert plan(10, SimulatorConfig(results_per_min=0, vitals_per_min=0)) == []


def test_new_results_are_whole_panels_with_plausible_values():
    labs = [w for w in plan(4000) if isinstance(w, LabResultWrite)]
    assert {w.panel_code for w in labs} == set(codes.LAB_PANELS)
    for w in labs:
        assert list(w.values) == [t.code for t in codes.LAB_PANELS[w.panel_code]]
        for test, value in w.values.items():
            assert value > 0 and math.isfinite(value)
            assert lab_range(test).round(value) == value


def test_critical_flag_matches_the_values_and_the_probability():
    labs = [w for w in plan(20000) if isinstance(w, LabResultWrite)]
    critical = [w for w in labs if w.critical]
    assert len(critical) / len(labs) == pytest.approx(0.05, abs=0.015)
    for w in labs:
        flags = {lab_range(t).interpret(v) for t, v in w.values.items()}
        assert w.critical == bool(flags & {"HH", "LL"})
    # Critical values are the kinds the limits describe, on both sides where there are two.
    critical_flags = {
        (t, lab_range(t).interpret(v)) for w in critical for t, v in w.values.items()
    } - {(t, f) for t, f in _all_pairs() if f not in ("HH", "LL")}
    assert (codes.POTASSIUM.code, "HH") in critical_flags
    assert (codes.POTASSIUM.code, "LL") in critical_flags
    assert (codes.LACTATE.code, "HH") in critical_flags
    assert (codes.HAEMOGLOBIN.code, "LL") in critical_flags


def _all_pairs():
    return [(t, f) for t in codes.LAB_TESTS_BY_CODE for f in ("N", "H", "L", "HH", "LL")]


def test_critical_results_are_critical_for_the_app_too():
    for w in plan(3000, SimulatorConfig(critical_probability=1.0)):
        if not isinstance(w, LabResultWrite):
            continue
        assert w.critical
        levels = {
            assess_observation(lab_observation(w.patient_id, t, v, effective=NOW, issued=NOW)).level
            for t, v in w.values.items()
        }
        assert "critical" in levels


def test_no_critical_value_when_probability_is_zero_but_abnormal_ones_occur():
    config = SimulatorConfig(critical_probability=0.0)
    flags = set()
    for w in plan(5000, config):
        if isinstance(w, LabResultWrite | LabCorrectionWrite):
            assert not w.critical
            for t, v in w.values.items():
                flag = lab_range(t).interpret(v)
                assert flag not in ("HH", "LL")
                flags.add(flag)
    assert {"N", "H", "L"} <= flags


def test_corrections_change_one_value_of_an_earlier_result():
    writes = plan(3000, SimulatorConfig(correction_probability=0.2))
    released = {w.seq: w for w in writes if isinstance(w, LabResultWrite)}
    corrections = [w for w in writes if isinstance(w, LabCorrectionWrite)]
    labs = len(released) + len(corrections)
    assert len(corrections) / labs == pytest.approx(0.2, abs=0.04)
    for c in corrections:
        original = released[c.corrects_seq]
        assert c.corrects_seq < c.seq
        assert (c.patient_id, c.panel_code) == (original.patient_id, original.panel_code)
        [(test, value)] = c.values.items()
        assert test in original.values and value != original.values[test]
        assert c.critical == lab_range(test).is_critical(value)


def test_a_critical_result_is_corrected_to_a_sane_value():
    config = SimulatorConfig(critical_probability=0.5, correction_probability=0.5)
    writes = plan(4000, config)
    released = {w.seq: w for w in writes if isinstance(w, LabResultWrite)}
    retracted = 0
    for c in (w for w in writes if isinstance(w, LabCorrectionWrite)):
        [(test, value)] = c.values.items()
        if lab_range(test).is_critical(released[c.corrects_seq].values[test]):
            assert not lab_range(test).is_critical(value)
            retracted += 1
    assert retracted > 0


def test_no_correction_before_any_result():
    writes = plan(30, SimulatorConfig(correction_probability=1.0, vitals_per_min=0))
    assert isinstance(writes[0], LabResultWrite)
    assert all(isinstance(w, LabCorrectionWrite) for w in writes[1:])


def test_vitals_wander_within_physiological_bounds():
    rounds = [w for w in plan(5000) if isinstance(w, VitalsWrite)]
    by_patient: dict[str, list] = {}
    for w in rounds:
        v = w.vitals
        for name, (low, high) in VITAL_BOUNDS.items():
            assert low <= getattr(v, name) <= high
        assert v.diastolic < v.systolic
        assert v.consciousness in codes.CONSCIOUSNESS_LEVELS
        by_patient.setdefault(w.patient_id, []).append(v)
    assert len(by_patient) == len(PATIENTS)
    for series in by_patient.values():
        # consecutive rounds of one patient differ by at most a few beats (no teleporting)
        for a, b in itertools.pairwise(series):
            assert abs(a.heart_rate - b.heart_rate) <= 30
            assert abs(a.temperature - b.temperature) <= 1.0


@pytest.mark.parametrize(
    "bad",
    [
        {"results_per_min": -1},
        {"vitals_per_min": math.inf},
        {"critical_probability": 1.5},
        {"correction_probability": -0.1},
        {"retry_initial_s": math.nan},
    ],
)
def test_bad_configuration_is_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SimulatorConfig(**bad)


def test_no_patients_is_refused():
    with pytest.raises(ValueError, match="patient"):
        WritePlanner([], SimulatorConfig())
