"""Reference ranges, critical limits and interpretation flags of lab values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fhir.resources.R4B import get_fhir_model_class

from wardsync.core import codes
from wardsync.core.critical import DEFAULT_CRITICAL_LIMITS, assess_observation
from wardsync.sandbox.ward.lab_ranges import (
    CRITICAL_TESTS_BY_PANEL,
    LAB_RANGES,
    interpret,
    lab_range,
)
from wardsync.sandbox.ward.observations import (
    VitalSigns,
    corrected_lab_observation,
    fhir_datetime,
    lab_observation,
    lab_report,
    vital_sign_observations,
)

NOW = datetime(2026, 11, 22, 21, 0, tzinfo=UTC)


def test_every_lab_test_in_codes_has_a_range():
    assert set(LAB_RANGES) == set(codes.LAB_TESTS_BY_CODE)


def test_critical_limits_match_the_apps_default_table():
    for loinc, limit in DEFAULT_CRITICAL_LIMITS.items():
        table = LAB_RANGES[loinc]
        assert (table.critical_low, table.critical_high) == (limit.low, limit.high)
        assert codes.LAB_TESTS_BY_CODE[loinc].unit == limit.unit
    # and no test has critical limits the app does not know about
    with_limits = {
        c
        for c, t in LAB_RANGES.items()
        if t.critical_low is not None or t.critical_high is not None
    }
    assert with_limits == set(DEFAULT_CRITICAL_LIMITS)


@pytest.mark.parametrize(
    ("test", "value", "flag"),
    [
        (codes.POTASSIUM, 2.7, "LL"),
        (codes.POTASSIUM, 2.8, "L"),  # the limit itself is not critical: "< 2.8"
        (codes.POTASSIUM, 3.4, "L"),
        (codes.POTASSIUM, 3.5, "N"),
        (codes.POTASSIUM, 5.3, "N"),
        (codes.POTASSIUM, 5.4, "H"),
        (codes.POTASSIUM, 6.2, "H"),
        (codes.POTASSIUM, 6.3, "HH"),
        (codes.SODIUM, 119, "LL"),
        (codes.SODIUM, 120, "L"),
        (codes.SODIUM, 161, "HH"),
        (codes.GLUCOSE, 2.4, "LL"),
        (codes.GLUCOSE, 25.1, "HH"),
        (codes.GLUCOSE, 24.0, "H"),
        (codes.HAEMOGLOBIN, 69, "LL"),
        (codes.HAEMOGLOBIN, 70, "L"),
        (codes.HAEMOGLOBIN, 200, "H"),  # no critical high for haemoglobin
        (codes.LACTATE, 4.0, "H"),
        (codes.LACTATE, 4.1, "HH"),
        (codes.LACTATE, 0.1, "L"),  # no critical low for lactate
        (codes.TROPONIN_T, 0, "N"),  # an upper reference limit only
        (codes.TROPONIN_T, 15, "H"),
        (codes.CREATININE, 900, "H"),  # no critical limits at all
    ],
)
def test_interpretation_at_and_around_the_limits(test, value, flag):
    assert interpret(test.code, value) == flag


def test_unknown_test_is_named_in_the_error():
    with pytest.raises(KeyError, match="1234-5"):
        lab_range("1234-5")


def test_critical_tests_by_panel():
    assert set(CRITICAL_TESTS_BY_PANEL[codes.ELECTROLYTES_PANEL.code]) == {
        codes.SODIUM.code,
        codes.POTASSIUM.code,
        codes.GLUCOSE.code,
    }
    assert CRITICAL_TESTS_BY_PANEL[codes.FBC_PANEL.code] == (codes.HAEMOGLOBIN.code,)
    assert CRITICAL_TESTS_BY_PANEL[codes.LACTATE_PANEL.code] == (codes.LACTATE.code,)
    assert CRITICAL_TESTS_BY_PANEL[codes.TROPONIN_PANEL.code] == ()


@pytest.mark.parametrize(
    ("value", "flag", "level"),
    [
        (4.1, "N", "normal"),
        (5.8, "H", "abnormal"),
        (6.9, "HH", "critical"),
        (2.1, "LL", "critical"),
    ],
)
def test_lab_observation_is_valid_and_assessed_as_the_app_would(value, flag, level):
    obs = lab_observation(
        "pat-01",
        codes.POTASSIUM.code,
        value,
        effective=NOW - timedelta(hours=1),
        issued=NOW,
        encounter_id="enc-01",
    )
    get_fhir_model_class("Observation").model_validate(obs)
    assert "id" not in obs  # a POST body: the server assigns the id
    assert obs["valueQuantity"] == {
        "value": value,
        "unit": "mmol/L",
        "system": codes.UCUM,
        "code": "mmol/L",
    }
    assert obs["referenceRange"][0]["low"]["value"] == 3.5
    assert obs["referenceRange"][0]["high"]["value"] == 5.3
    coding = obs["interpretation"][0]["coding"][0]
    assert (coding["system"], coding["code"]) == (codes.INTERPRETATION, flag)
    assert assess_observation(obs).level == level


def test_values_are_rounded_to_the_analyser_precision():
    obs = lab_observation(
        "pat-01", codes.SODIUM.code, 137.6, effective=NOW, issued=NOW, observation_id="x"
    )
    assert obs["valueQuantity"]["value"] == 138
    obs = lab_observation(
        "pat-01", codes.POTASSIUM.code, 4.349, effective=NOW, issued=NOW, observation_id="x"
    )
    assert obs["valueQuantity"]["value"] == 4.3


def test_correction_replaces_value_flag_and_status_only():
    stored = lab_observation("pat-01", codes.POTASSIUM.code, 6.8, effective=NOW, issued=NOW)
    stored |= {"id": "obs-9", "meta": {"versionId": "1"}}
    corrected = corrected_lab_observation(stored, 4.6, issued=NOW + timedelta(hours=1))
    assert corrected["status"] == "corrected"
    assert corrected["valueQuantity"]["value"] == 4.6
    assert corrected["interpretation"][0]["coding"][0]["code"] == "N"
    assert corrected["id"] == "obs-9" and corrected["meta"] == {"versionId": "1"}
    assert stored["valueQuantity"]["value"] == 6.8  # the input is not modified
    get_fhir_model_class("Observation").model_validate(corrected)


def test_report_and_vitals_builders_are_valid():
    report = lab_report(
        "pat-01",
        codes.FBC_PANEL.code,
        ["a", "b", "c"],
        effective=NOW,
        issued=NOW,
        accession="ACC1",
    )
    get_fhir_model_class("DiagnosticReport").model_validate(report)
    assert report["result"][2] == {"reference": "Observation/c"}
    vitals = vital_sign_observations(
        "pat-01",
        VitalSigns(80, 16, 97, 36.8, 128, 76, "V", True),
        effective=NOW,
    )
    assert len(vitals) == len(codes.VITAL_SIGNS)
    for obs in vitals:
        get_fhir_model_class("Observation").model_validate(obs)


def test_bad_builder_input_is_refused_clearly():
    with pytest.raises(ValueError, match="time zone"):
        fhir_datetime(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="consciousness"):
        VitalSigns(80, 16, 97, 36.8, 128, 76, "X")
    with pytest.raises(KeyError, match="panel"):
        lab_report("p", "0000-0", [], effective=NOW, issued=NOW)
    with pytest.raises(KeyError, match="lab test"):
        lab_observation("p", "0000-0", 1.0, effective=NOW, issued=NOW)
