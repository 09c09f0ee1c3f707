"""NEWS2 against every boundary of the RCP 2017 chart, and from FHIR Observations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wardsync.core import codes
from wardsync.core.news2 import (
    News2,
    Parameter,
    RiskBand,
    VitalSignValues,
    news2,
    news2_from_observations,
    risk_band,
    score_air_or_oxygen,
    score_consciousness,
    score_pulse,
    score_respiration_rate,
    score_spo2_scale1,
    score_spo2_scale2,
    score_systolic_bp,
    score_temperature,
)

# ---------------------------------------------------------------- chart boundaries (Chart 1)


@pytest.mark.parametrize(
    ("rate", "score"),
    [(0, 3), (8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3), (60, 3)],
)
def test_respiration_rate(rate: int, score: int) -> None:
    assert score_respiration_rate(rate) == score


@pytest.mark.parametrize(
    ("spo2", "score"), [(70, 3), (91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0)]
)
def test_spo2_scale1(spo2: int, score: int) -> None:
    assert score_spo2_scale1(spo2) == score


@pytest.mark.parametrize(
    ("spo2", "on_oxygen", "score"),
    [
        (83, False, 3),
        (84, False, 2),
        (85, False, 2),
        (86, False, 1),
        (87, False, 1),
        (88, False, 0),
        (92, False, 0),
        (88, True, 0),
        (92, True, 0),
        (93, False, 0),  # >= 93 on air
        (100, False, 0),
        (93, True, 1),
        (94, True, 1),
        (95, True, 2),
        (96, True, 2),
        (97, True, 3),
        (100, True, 3),
        (83, True, 3),
    ],
)
def test_spo2_scale2(spo2: int, on_oxygen: bool, score: int) -> None:
    assert score_spo2_scale2(spo2, on_oxygen) == score


def test_air_or_oxygen() -> None:
    assert (score_air_or_oxygen(True), score_air_or_oxygen(False)) == (2, 0)


@pytest.mark.parametrize(
    ("sbp", "score"),
    [(60, 3), (90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0), (220, 3)],
)
def test_systolic_bp(sbp: int, score: int) -> None:
    assert score_systolic_bp(sbp) == score


@pytest.mark.parametrize(
    ("pulse", "score"),
    [
        (30, 3),
        (40, 3),
        (41, 1),
        (50, 1),
        (51, 0),
        (90, 0),
        (91, 1),
        (110, 1),
        (111, 2),
        (130, 2),
        (131, 3),
        (180, 3),
    ],
)
def test_pulse(pulse: int, score: int) -> None:
    assert score_pulse(pulse) == score


@pytest.mark.parametrize(("level", "score"), [("A", 0), ("C", 3), ("V", 3), ("P", 3), ("U", 3)])
def test_consciousness(level: str, score: int) -> None:
    assert score_consciousness(level) == score


def test_consciousness_rejects_other_codes() -> None:
    with pytest.raises(ValueError):
        score_consciousness("alert")


@pytest.mark.parametrize(
    ("celsius", "score"),
    [
        (34.0, 3),
        (35.0, 3),
        (35.1, 1),
        (36.0, 1),
        (36.1, 0),
        (38.0, 0),
        (38.1, 1),
        (39.0, 1),
        (39.1, 2),
        (41.0, 2),
    ],
)
def test_temperature(celsius: float, score: int) -> None:
    assert score_temperature(celsius) == score


@pytest.mark.parametrize(
    ("scorer", "value", "score"),
    [
        (score_respiration_rate, 20.4, 0),  # recorded as 20
        (score_respiration_rate, 20.5, 2),  # recorded as 21 (half up)
        (score_pulse, 90.5, 1),
        (score_temperature, 38.04, 0),  # 38.0
        (score_temperature, 38.05, 1),  # 38.1
        (score_temperature, 35.04, 3),
        (score_temperature, 36.05, 0),
    ],
)
def test_values_are_rounded_to_chart_precision(scorer: Any, value: float, score: int) -> None:
    assert scorer(value) == score


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True])
def test_non_numbers_are_refused(value: Any) -> None:
    with pytest.raises(ValueError):
        score_pulse(value)


# ---------------------------------------------------------------- aggregate and risk (Chart 2)

NORMAL = VitalSignValues(
    respiration_rate=16,
    spo2=97,
    on_oxygen=False,
    systolic_bp=125,
    pulse=72,
    consciousness="A",
    temperature=36.8,
)


def with_(**changes: Any) -> VitalSignValues:
    fields = {f: getattr(NORMAL, f) for f in NORMAL.__dataclass_fields__} | changes
    return VitalSignValues(**fields)


@pytest.mark.parametrize(
    ("total", "scores", "band"),
    [
        (0, [0], RiskBand.LOW),
        (4, [2, 2], RiskBand.LOW),
        (3, [3], RiskBand.LOW_MEDIUM),
        (4, [3, 1], RiskBand.LOW_MEDIUM),
        (5, [2, 2, 1], RiskBand.MEDIUM),
        (6, [3, 3], RiskBand.MEDIUM),
        (7, [2, 2, 2, 1], RiskBand.HIGH),
        (20, [3] * 6 + [2], RiskBand.HIGH),
    ],
)
def test_risk_bands(total: int, scores: list[int], band: RiskBand) -> None:
    assert risk_band(total, scores) is band


def test_all_normal_scores_zero() -> None:
    result = news2(NORMAL)
    assert (result.total, result.band, result.complete) == (0, RiskBand.LOW, True)
    assert list(result.scores) == list(Parameter)


def test_worked_example() -> None:
    # RR 22 (2), SpO2 93 (2), oxygen (2), SBP 105 (1), pulse 115 (2), A (0), 38.4 (1) = 10.
    result = news2(
        with_(
            respiration_rate=22,
            spo2=93,
            on_oxygen=True,
            systolic_bp=105,
            pulse=115,
            temperature=38.4,
        )
    )
    assert result.total == 10 and result.band is RiskBand.HIGH
    assert result.scores[Parameter.PULSE] == 2


def test_a_single_red_score_is_low_medium() -> None:
    result = news2(with_(consciousness="V"))
    assert (result.total, result.band, result.has_red_score) == (3, RiskBand.LOW_MEDIUM, True)


def test_scale2_with_oxygen() -> None:
    result = news2(with_(spo2=97, on_oxygen=True), spo2_scale=2)
    assert result.scores[Parameter.SPO2] == 3 and result.total == 5


def test_missing_parameters_give_no_total() -> None:
    result = news2(with_(temperature=None, consciousness=None, respiration_rate=25))
    assert result.missing == (Parameter.CONSCIOUSNESS, Parameter.TEMPERATURE)
    assert (result.total, result.band, result.complete) == (None, None, False)
    assert result.partial_total == 3  # a lower bound that can still be shown


def test_scale2_above_92_without_oxygen_status_is_missing() -> None:
    result = news2(with_(spo2=95, on_oxygen=None), spo2_scale=2)
    assert set(result.missing) == {Parameter.SPO2, Parameter.AIR_OR_OXYGEN}
    assert news2(with_(spo2=90, on_oxygen=None), spo2_scale=2).scores[Parameter.SPO2] == 0


def test_scale_must_be_1_or_2() -> None:
    with pytest.raises(ValueError):
        news2(NORMAL, spo2_scale=3)


@given(
    st.builds(
        VitalSignValues,
        respiration_rate=st.integers(0, 60),
        spo2=st.integers(50, 100),
        on_oxygen=st.booleans(),
        systolic_bp=st.integers(50, 260),
        pulse=st.integers(20, 200),
        consciousness=st.sampled_from(codes.CONSCIOUSNESS_LEVELS),
        temperature=st.floats(30, 43).map(lambda t: round(t, 1)),
    ),
    st.sampled_from([1, 2]),
)
def test_complete_inputs_always_give_a_consistent_result(
    values: VitalSignValues, scale: int
) -> None:
    result = news2(values, spo2_scale=scale)
    assert result.complete and result.total == sum(result.scores.values())
    assert all(0 <= s <= 3 for s in result.scores.values()) and 0 <= result.total <= 20
    assert result.band is risk_band(result.total, result.scores.values())


# ---------------------------------------------------------------- from FHIR Observations

WHEN = "2026-03-01T08:00:00Z"
LATER = "2026-03-01T12:00:00Z"


def vital(
    code: codes.Code, value: Any, when: str = WHEN, rid: str | None = None, **extra: Any
) -> dict:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid or f"{code.code}-{when}",
        "status": "final",
        "category": [{"coding": [{"system": codes.OBSERVATION_CATEGORY, "code": "vital-signs"}]}],
        "code": {"coding": [{"system": codes.LOINC, "code": code.code}]},
        "subject": {"reference": "Patient/p-1"},
        "effectiveDateTime": when,
    }
    if isinstance(value, bool):
        obs["valueBoolean"] = value
    elif isinstance(value, str):
        obs["valueCodeableConcept"] = {"coding": [{"code": value}]}
    elif value is not None:
        obs["valueQuantity"] = {
            "value": value,
            "unit": code.unit,
            "system": codes.UCUM,
            "code": code.unit,
        }
    obs.update(extra)
    return obs


def bp(systolic: float, when: str = WHEN) -> dict:
    obs = vital(codes.BLOOD_PRESSURE_PANEL, None, when)
    obs["component"] = [
        {
            "code": {"coding": [{"system": codes.LOINC, "code": codes.DIASTOLIC_BP.code}]},
            "valueQuantity": {
                "value": 80,
                "unit": "mm[Hg]",
                "system": codes.UCUM,
                "code": "mm[Hg]",
            },
        },
        {
            "code": {"coding": [{"system": codes.LOINC, "code": codes.SYSTOLIC_BP.code}]},
            "valueQuantity": {
                "value": systolic,
                "unit": "mm[Hg]",
                "system": codes.UCUM,
                "code": "mm[Hg]",
            },
        },
    ]
    return obs


def round_of_vitals(when: str = WHEN, **v: Any) -> list[dict]:
    values = {
        "rr": 16,
        "spo2": 97,
        "o2": False,
        "sbp": 125,
        "hr": 72,
        "acvpu": "A",
        "temp": 36.8,
    } | v
    return [
        vital(codes.RESPIRATORY_RATE, values["rr"], when),
        vital(codes.OXYGEN_SATURATION, values["spo2"], when),
        vital(codes.SUPPLEMENTAL_OXYGEN, values["o2"], when),
        bp(values["sbp"], when),
        vital(codes.HEART_RATE, values["hr"], when),
        vital(codes.CONSCIOUSNESS, values["acvpu"], when),
        vital(codes.BODY_TEMPERATURE, values["temp"], when),
    ]


def test_scores_a_round_of_vital_sign_observations() -> None:
    result = news2_from_observations(round_of_vitals(rr=26, hr=112, temp=38.5))
    assert result is not None
    assert (result.total, result.band) == (6, RiskBand.MEDIUM)
    assert result.observed_at == datetime(2026, 3, 1, 8, tzinfo=UTC)


def test_uses_the_latest_observation_of_each_parameter() -> None:
    observations = [
        *round_of_vitals(LATER, hr=135),
        *round_of_vitals(WHEN, hr=60, rr=30),  # older, listed after: must not win
    ]
    result = news2_from_observations(observations)
    assert result is not None
    assert result.scores[Parameter.PULSE] == 3 and result.scores[Parameter.RESPIRATION_RATE] == 0


def test_latest_is_by_instant_not_text() -> None:
    early = vital(codes.HEART_RATE, 135, "2026-03-01T13:00:00+02:00")  # 11:00Z
    late = vital(codes.HEART_RATE, 70, "2026-03-01T12:00:00Z")
    result = news2_from_observations([late, early])
    assert result is not None and result.scores[Parameter.PULSE] == 0


def test_missing_vital_sign_gives_an_incomplete_result() -> None:
    observations = [
        o for o in round_of_vitals() if o["code"]["coding"][0]["code"] != codes.CONSCIOUSNESS.code
    ]
    result = news2_from_observations(observations)
    assert result is not None
    assert result.missing == (Parameter.CONSCIOUSNESS,) and result.total is None


def test_latest_unusable_value_is_missing_not_replaced_by_an_older_one() -> None:
    newest = vital(codes.BODY_TEMPERATURE, None, LATER, dataAbsentReason={"text": "refused"})
    result = news2_from_observations([*round_of_vitals(), newest])
    assert result is not None and result.missing == (Parameter.TEMPERATURE,)


def test_unknown_units_are_not_scored_fahrenheit_is_converted() -> None:
    kelvin = vital(codes.BODY_TEMPERATURE, 310.0, LATER)
    kelvin["valueQuantity"].update(unit="K", code="K")
    result = news2_from_observations([*round_of_vitals(), kelvin])
    assert result is not None and Parameter.TEMPERATURE in result.missing
    fahrenheit = vital(codes.BODY_TEMPERATURE, 102.2, LATER)  # 39.0 C
    fahrenheit["valueQuantity"].update(unit="[degF]", code="[degF]")
    result = news2_from_observations([*round_of_vitals(), fahrenheit])
    assert result is not None and result.scores[Parameter.TEMPERATURE] == 1


def test_entered_in_error_observations_are_ignored() -> None:
    wrong = vital(codes.HEART_RATE, 150, LATER, status="entered-in-error")
    result = news2_from_observations([*round_of_vitals(), wrong])
    assert result is not None and result.scores[Parameter.PULSE] == 0


def test_standalone_systolic_and_spo2_alternative_code() -> None:
    observations = round_of_vitals()
    systolic = vital(codes.SYSTOLIC_BP, 88, LATER)
    spo2 = vital(codes.OXYGEN_SATURATION, 90, LATER)
    spo2["code"]["coding"] = [{"system": codes.LOINC, "code": "2708-6"}]
    result = news2_from_observations([*observations, systolic, spo2])
    assert result is not None
    assert result.scores[Parameter.SYSTOLIC_BP] == 3 and result.scores[Parameter.SPO2] == 3


def test_fio2_quantity_means_oxygen_above_21_percent() -> None:
    fio2 = vital(codes.SUPPLEMENTAL_OXYGEN, 28, LATER)
    result = news2_from_observations([*round_of_vitals(), fio2])
    assert result is not None and result.scores[Parameter.AIR_OR_OXYGEN] == 2


def test_same_time_newer_version_wins() -> None:
    v1 = vital(codes.HEART_RATE, 60, rid="hr", meta={"versionId": "1"})
    v2 = vital(codes.HEART_RATE, 140, rid="hr", meta={"versionId": "2"})
    for order in ([v1, v2], [v2, v1]):
        result = news2_from_observations(order)
        assert result is not None and result.scores[Parameter.PULSE] == 3


def test_no_vital_signs_gives_none() -> None:
    lab = vital(codes.POTASSIUM, 4.0)
    assert news2_from_observations([lab]) is None
    assert news2_from_observations([]) is None


def test_result_is_plain_data() -> None:
    result = news2_from_observations(round_of_vitals())
    assert isinstance(result, News2) and result.spo2_scale == 1
