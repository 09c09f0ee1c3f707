"""Critical result rules: laboratory flags, site limits with units, report status."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wardsync.core import codes
from wardsync.core.critical import (
    DEFAULT_CRITICAL_LIMITS,
    V2_INTERPRETATION,
    Assessment,
    CriticalLimit,
    CriticalLimits,
    CriticalLimitsError,
    alert_key,
    assess_observation,
    assess_report,
    is_correction,
    relative_ref,
)


def lab(
    test: codes.Code,
    value: float | None,
    unit: str | None = None,
    *,
    flag: str | None = None,
    flag_system: str | None = codes.INTERPRETATION,
    comparator: str | None = None,
    ref_low: float | None = None,
    ref_high: float | None = None,
    rid: str = "obs-1",
    status: str = "final",
) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid,
        "meta": {"versionId": "1"},
        "status": status,
        "code": {"coding": [{"system": codes.LOINC, "code": test.code, "display": test.display}]},
        "subject": {"reference": "Patient/p-1", "display": "Testpatient Alpha"},
    }
    if value is not None:
        u = test.unit if unit is None else unit
        obs["valueQuantity"] = {"value": value, "unit": u, "system": codes.UCUM, "code": u}
        if comparator is not None:
            obs["valueQuantity"]["comparator"] = comparator
    if flag is not None:
        coding: dict[str, Any] = {"code": flag}
        if flag_system is not None:
            coding["system"] = flag_system
        obs["interpretation"] = [{"coding": [coding]}]
    if ref_low is not None or ref_high is not None:
        rng: dict[str, Any] = {}
        if ref_low is not None:
            rng["low"] = {
                "value": ref_low,
                "unit": test.unit,
                "system": codes.UCUM,
                "code": test.unit,
            }
        if ref_high is not None:
            rng["high"] = {
                "value": ref_high,
                "unit": test.unit,
                "system": codes.UCUM,
                "code": test.unit,
            }
        obs["referenceRange"] = [rng]
    return obs


def report(status: str, *result_ids: str, rid: str = "dr-1", version: str = "1") -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "id": rid,
        "meta": {"versionId": version},
        "status": status,
        "code": {"coding": [{"system": codes.LOINC, "code": codes.ELECTROLYTES_PANEL.code}]},
        "result": [{"reference": f"Observation/{i}"} for i in result_ids],
    }


# ---------------------------------------------------------------- interpretation flags


@pytest.mark.parametrize(
    ("flag", "level"),
    [
        ("AA", "critical"),
        ("HH", "critical"),
        ("LL", "critical"),
        ("A", "abnormal"),
        ("H", "abnormal"),
        ("L", "abnormal"),
        ("HU", "abnormal"),
        ("LU", "abnormal"),
        ("N", "normal"),
        ("IND", "unknown"),  # not in the normality hierarchy
    ],
)
def test_interpretation_hierarchy(flag: str, level: str) -> None:
    assert assess_observation(lab(codes.CREATININE, None, flag=flag)).level == level


def test_v2_table_0078_and_missing_system_count_unknown_system_does_not() -> None:
    assert assess_observation(
        lab(codes.UREA, None, flag="HH", flag_system=V2_INTERPRETATION)
    ).is_critical
    assert assess_observation(lab(codes.UREA, None, flag="LL", flag_system=None)).is_critical
    other = lab(codes.UREA, None, flag="HH", flag_system="http://example.org/flags")
    assert assess_observation(other).level == "unknown"


def test_flag_reason_names_test_not_patient() -> None:
    a = assess_observation(lab(codes.POTASSIUM, 6.0, flag="HH"))
    assert a.reasons == ("Potassium flagged critical high by the laboratory (HH)",)
    assert all("Testpatient" not in r and "p-1" not in r for r in a.reasons)


# ---------------------------------------------------------------- site limits


@pytest.mark.parametrize(
    ("test", "value", "level"),
    [
        (codes.POTASSIUM, 2.79, "critical"),
        (codes.POTASSIUM, 2.8, "unknown"),  # "< 2.8" is strict
        (codes.POTASSIUM, 6.2, "unknown"),
        (codes.POTASSIUM, 6.21, "critical"),
        (codes.SODIUM, 119.9, "critical"),
        (codes.SODIUM, 120, "unknown"),
        (codes.SODIUM, 160, "unknown"),
        (codes.SODIUM, 160.1, "critical"),
        (codes.GLUCOSE, 2.4, "critical"),
        (codes.GLUCOSE, 2.5, "unknown"),
        (codes.GLUCOSE, 25, "unknown"),
        (codes.GLUCOSE, 25.1, "critical"),
        (codes.HAEMOGLOBIN, 69, "critical"),
        (codes.HAEMOGLOBIN, 70, "unknown"),
        (codes.HAEMOGLOBIN, 250, "unknown"),  # no upper critical limit
        (codes.LACTATE, 4.0, "unknown"),
        (codes.LACTATE, 4.1, "critical"),
        (codes.LACTATE, 0.0, "unknown"),  # no lower critical limit
    ],
)
def test_default_limit_boundaries(test: codes.Code, value: float, level: str) -> None:
    # No flag and no reference range: inside the critical limits says nothing about normal.
    assert assess_observation(lab(test, value)).level == level


def test_limit_reason_wording() -> None:
    high = assess_observation(lab(codes.POTASSIUM, 6.8))
    assert high == Assessment("critical", ("Potassium 6.8 mmol/L above critical limit 6.2",))
    low = assess_observation(lab(codes.SODIUM, 118))
    assert low.reasons == ("Sodium 118 mmol/L below critical limit 120",)


def test_value_beyond_limit_is_critical_even_if_flagged_normal() -> None:
    a = assess_observation(lab(codes.POTASSIUM, 7.1, flag="N", ref_low=3.5, ref_high=5.3))
    assert a.level == "critical"
    assert a.reasons == ("Potassium 7.1 mmol/L above critical limit 6.2",)


def test_other_units_are_not_compared() -> None:
    a = assess_observation(lab(codes.GLUCOSE, 450, "mg/dL"))
    assert a.level == "unknown"
    assert a.reasons == (
        "Glucose unit mg/dL differs from critical limit unit mmol/L; limit not checked",
    )


def test_litre_spelling_is_the_same_unit() -> None:
    assert assess_observation(lab(codes.POTASSIUM, 6.9, "mmol/l")).is_critical


def test_missing_unit_is_not_compared() -> None:
    obs = lab(codes.POTASSIUM, 9.9)
    obs["valueQuantity"] = {"value": 9.9}
    assert assess_observation(obs).level == "unknown"


@pytest.mark.parametrize(
    ("comparator", "value", "level"),
    [
        ("<", 2.8, "critical"),  # true value below 2.8
        ("<=", 2.8, "unknown"),  # could be exactly 2.8
        ("<=", 2.7, "critical"),
        ("<", 5.0, "unknown"),  # could be 2.0 or 4.9
        (">", 6.2, "critical"),
        (">=", 6.2, "unknown"),
        (">", 5.0, "unknown"),
        ("ad", 7.0, "unknown"),
    ],
)
def test_comparators(comparator: str, value: float, level: str) -> None:
    assert assess_observation(lab(codes.POTASSIUM, value, comparator=comparator)).level == level


def test_comparator_shown_in_reason() -> None:
    a = assess_observation(lab(codes.POTASSIUM, 1.5, comparator="<"))
    assert a.reasons == ("Potassium <1.5 mmol/L below critical limit 2.8",)


# ---------------------------------------------------------------- reference range


def test_reference_range_gives_abnormal_and_normal() -> None:
    high = assess_observation(lab(codes.POTASSIUM, 5.8, ref_low=3.5, ref_high=5.3))
    assert high == Assessment("abnormal", ("Potassium outside reference range",))
    assert (
        assess_observation(lab(codes.POTASSIUM, 4.1, ref_low=3.5, ref_high=5.3)).level == "normal"
    )
    assert assess_observation(lab(codes.TROPONIN_T, 3, ref_high=14)).level == "normal"


def test_withdrawn_result_is_not_assessed() -> None:
    a = assess_observation(lab(codes.POTASSIUM, 7.5, flag="HH", status="entered-in-error"))
    assert a == Assessment("unknown", ("Result withdrawn (entered-in-error)",))


@given(st.floats(allow_nan=True, allow_infinity=True) | st.booleans() | st.text(max_size=3))
def test_odd_values_never_crash(value: Any) -> None:
    obs = lab(codes.POTASSIUM, 1.0)
    obs["valueQuantity"]["value"] = value
    result = assess_observation(obs)
    assert result.level in ("critical", "abnormal", "normal", "unknown")


# ---------------------------------------------------------------- site table


def test_site_table_from_mapping() -> None:
    limits = CriticalLimits.from_mapping(
        {
            "2823-3": {"low": 3, "high": 6.0, "unit": "mmol/L"},
            "2160-0": {"high": 500, "unit": "umol/L", "name": "Creatinine"},
        }
    )
    assert limits["2823-3"] == CriticalLimit("2823-3", 3.0, 6.0, "mmol/L")
    assert limits["2823-3"].label == "Potassium"  # from the LOINC display
    a = assess_observation(lab(codes.CREATININE, 612), limits)
    assert a.reasons == ("Creatinine 612 umol/L above critical limit 500",)
    assert assess_observation(lab(codes.POTASSIUM, 6.1), limits).is_critical
    assert not assess_observation(lab(codes.SODIUM, 100), limits).is_critical  # not in table


def test_merged_overrides_defaults_per_test() -> None:
    site = CriticalLimits.from_mapping({"2823-3": {"low": 2.5, "high": 6.5, "unit": "mmol/L"}})
    limits = DEFAULT_CRITICAL_LIMITS.merged(site)
    assert limits["2823-3"].high == 6.5
    assert limits[codes.SODIUM.code] == DEFAULT_CRITICAL_LIMITS[codes.SODIUM.code]
    assert len(limits) == len(DEFAULT_CRITICAL_LIMITS)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"potassium": {"high": 6, "unit": "mmol/L"}},
            "critical_limits['potassium']: key must be a LOINC",
        ),
        ({"2823-3": 6.2}, "critical_limits['2823-3']: must be a table"),
        (
            {"2823-3": {"high": "6.2", "unit": "mmol/L"}},
            "critical_limits['2823-3'].high: must be a number",
        ),
        (
            {"2823-3": {"high": True, "unit": "mmol/L"}},
            "critical_limits['2823-3'].high: must be a number",
        ),
        (
            {"2823-3": {"low": float("nan"), "unit": "mmol/L"}},
            "critical_limits['2823-3'].low: must be a number",
        ),
        ({"2823-3": {"high": 6.2}}, "critical_limits['2823-3'].unit: must be a UCUM"),
        ({"2823-3": {"unit": "mmol/L"}}, "critical_limits['2823-3']: needs a low or a high"),
        (
            {"2823-3": {"low": 7, "high": 6, "unit": "mmol/L"}},
            "critical_limits['2823-3']: low must be below high",
        ),
        ({"2823-3": {"hi": 6, "unit": "mmol/L"}}, "critical_limits['2823-3']: unknown field(s) hi"),
        ({"2823-3": {"high": 6, "unit": "mmol/L", "name": 5}}, "critical_limits['2823-3'].name"),
    ],
)
def test_site_table_errors_name_the_bad_key(table: dict, message: str) -> None:
    with pytest.raises(CriticalLimitsError) as info:
        CriticalLimits.from_mapping(table)
    assert str(info.value).startswith(message)


def test_site_table_must_be_a_mapping() -> None:
    with pytest.raises(CriticalLimitsError):
        CriticalLimits.from_mapping([("2823-3", {})])  # type: ignore[arg-type]


def test_duplicate_limits_are_refused() -> None:
    limit = CriticalLimit("2823-3", 2.8, 6.2, "mmol/L")
    with pytest.raises(CriticalLimitsError, match="twice"):
        CriticalLimits([limit, limit])


# ---------------------------------------------------------------- reports


def electrolytes(potassium: float) -> list[dict[str, Any]]:
    return [
        lab(codes.SODIUM, 139, rid="na", ref_low=133, ref_high=146),
        lab(codes.POTASSIUM, potassium, rid="k", ref_low=3.5, ref_high=5.3),
    ]


@pytest.mark.parametrize(
    "status", ["preliminary", "partial", "final", "amended", "corrected", "appended"]
)
def test_report_with_a_critical_result_is_critical(status: str) -> None:
    a = assess_report(report(status, "na", "k"), electrolytes(6.9))
    assert a == Assessment("critical", ("Potassium 6.9 mmol/L above critical limit 6.2",))


@pytest.mark.parametrize("status", ["registered", "cancelled", "entered-in-error", "unknown", None])
def test_report_in_other_statuses_is_not_assessed(status: str | None) -> None:
    assert assess_report(report(status, "na", "k"), electrolytes(6.9)).level == "unknown"  # type: ignore[arg-type]


def test_report_levels_aggregate() -> None:
    assert assess_report(report("final", "na", "k"), electrolytes(4.0)).level == "normal"
    assert assess_report(report("final", "na", "k"), electrolytes(5.6)).level == "abnormal"
    # A result not loaded yet: the report is not known to be normal.
    partial = assess_report(report("final", "na", "k", "missing"), electrolytes(4.0))
    assert partial == Assessment("unknown", ("1 result(s) not loaded",))
    # ...but a critical result is critical whatever else is missing.
    assert assess_report(report("final", "k", "missing"), electrolytes(7.0)).is_critical


def test_report_ignores_observations_it_does_not_reference() -> None:
    others = [*electrolytes(4.0), lab(codes.LACTATE, 9.0, rid="lactate-elsewhere")]
    assert assess_report(report("final", "na", "k"), others).level == "normal"


def test_report_accepts_a_mapping_and_absolute_or_versioned_refs() -> None:
    obs = {f"Observation/{o['id']}": o for o in electrolytes(2.1)}
    dr = report("final")
    dr["result"] = [
        {"reference": "http://127.0.0.1:8080/fhir/Observation/na"},
        {"reference": "Observation/k/_history/2"},
        {"reference": "#contained"},
    ]
    assert assess_report(dr, obs).is_critical


def test_report_without_results() -> None:
    assert assess_report(report("final"), []) == Assessment("unknown", ("No results yet",))


@pytest.mark.parametrize(
    ("reference", "ref"),
    [
        ("Observation/1", "Observation/1"),
        ("https://x.example/fhir/Observation/1", "Observation/1"),
        ("Observation/1/_history/3", "Observation/1"),
        ("#c1", None),
        ("Observation", None),
        ("Observation/", None),
        (None, None),
    ],
)
def test_relative_ref(reference: Any, ref: str | None) -> None:
    assert relative_ref(reference) == ref


# ---------------------------------------------------------------- keys and corrections


def test_alert_key_changes_with_each_version() -> None:
    assert alert_key(report("final", version="2")) == ("DiagnosticReport/dr-1", "2")
    assert alert_key(report("corrected", version="3")) != alert_key(report("final", version="2"))
    assert alert_key({"resourceType": "Observation", "id": "x"}) == ("Observation/x", "")


@pytest.mark.parametrize(
    ("status", "correction"),
    [
        ("final", False),
        ("preliminary", False),
        ("amended", True),
        ("corrected", True),
        ("appended", True),
    ],
)
def test_is_correction(status: str, correction: bool) -> None:
    assert is_correction(report(status)) is correction
