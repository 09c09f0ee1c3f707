"""The poke schema: strict enough that nothing resembling patient data gets through."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wardsync.core import pokes
from wardsync.core.pokes import (
    MAX_POKE_BYTES,
    POKE_RESOURCE_TYPES,
    POKE_TYPES,
    Poke,
    PokeRejected,
    parse_poke,
    poke_to_dict,
    poke_to_json,
)

VALID: dict[str, Any] = {
    "type": "LAB_RESULT_READY",
    "resourceType": "DiagnosticReport",
    "id": "dr-0042",
    "versionId": "3",
    "patientId": "pat-7",
    "seq": 1042,
    "priority": "routine",
}


def with_(**changes: Any) -> dict[str, Any]:
    out = dict(VALID)
    for key, value in changes.items():
        if value is ...:
            del out[key]
        else:
            out[key] = value
    return out


def reason_of(data: Any) -> str:
    with pytest.raises(PokeRejected) as info:
        parse_poke(data)
    return info.value.reason


# ---------------------------------------------------------------- accepted


def test_parses_the_contract_example() -> None:
    poke = parse_poke(json.dumps(VALID))
    assert poke == Poke("LAB_RESULT_READY", "DiagnosticReport", "dr-0042", "3", "pat-7", 1042)
    assert poke.ref == "DiagnosticReport/dr-0042"
    assert not poke.is_urgent


def test_accepts_bytes_and_mappings_alike() -> None:
    assert parse_poke(json.dumps(VALID).encode()) == parse_poke(VALID)


def test_patient_id_may_be_absent_or_null() -> None:
    assert parse_poke(with_(patientId=..., resourceType="Location")).patient_id is None
    assert parse_poke(with_(patientId=None)).patient_id is None


def test_critical_result_is_urgent() -> None:
    poke = parse_poke(with_(type="CRITICAL_LAB_RESULT", priority="urgent"))
    assert poke.is_urgent


def test_critical_result_sent_as_routine_is_still_urgent() -> None:
    assert parse_poke(with_(type="CRITICAL_LAB_RESULT", priority="routine")).is_urgent


# ---------------------------------------------------------------- rejected, with reasons


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (with_(name="Testpatient Alpha"), "unknown_field"),
        (with_(value=6.8), "unknown_field"),
        (with_(seq=...), "missing_field"),
        (with_(priority=...), "missing_field"),
        (with_(type="PATIENT_ADMITTED"), "bad_type"),
        (with_(type=1), "bad_type"),
        (with_(resourceType="Basic"), "bad_resource_type"),
        (with_(resourceType="diagnosticreport"), "bad_resource_type"),
        (with_(id="Testpatient Alpha"), "bad_id"),  # a space: free text
        (with_(id="a" * 65), "bad_id"),
        (with_(id=""), "bad_id"),
        (with_(id="dr-1\n"), "bad_id"),  # `$` would have let this through
        (with_(id="dr/1"), "bad_id"),
        (with_(id=42), "bad_id"),
        (with_(id="Ĳ"), "bad_id"),
        (with_(patientId="1970-01-01"), "bad_patient_id"),  # a date of birth
        (with_(patientId="01.02.1970"), "bad_patient_id"),
        (with_(patientId="6.8"), "bad_patient_id"),  # a measured value
        (with_(patientId="Alpha, Testpatient"), "bad_patient_id"),
        (with_(patientId=7), "bad_patient_id"),
        (with_(versionId=3), "bad_version_id"),
        (with_(versionId="3a"), "bad_version_id"),
        (with_(versionId=""), "bad_version_id"),
        (with_(seq=True), "bad_seq"),  # bool is an int in Python, not in the schema
        (with_(seq=-1), "bad_seq"),
        (with_(seq=1.0), "bad_seq"),
        (with_(seq="12"), "bad_seq"),
        (with_(seq=2**53), "bad_seq"),
        (with_(priority="URGENT"), "bad_priority"),
        (with_(priority="urgent"), "urgent_not_allowed"),
        ([VALID], "not_object"),
        ("null", "not_object"),
        (17, "not_object"),
        ("{", "bad_json"),
        ('{"seq": NaN}', "bad_json"),
        (b"\xff\xfe{}", "bad_encoding"),
        ("\ud800", "bad_encoding"),
        ("[" * 300 + "]" * 300, "too_large"),
        ("[" * 250 + "]" * 250, "not_object"),
        ({1: "x"}, "unknown_field"),
    ],
)
def test_rejects_with_reason(data: Any, reason: str) -> None:
    assert reason_of(data) == reason


def test_duplicate_keys_are_rejected() -> None:
    text = json.dumps(VALID)[:-1] + ', "id": "other"}'
    assert reason_of(text) == "duplicate_field"


def test_oversized_payload_is_rejected_before_parsing() -> None:
    text = json.dumps(with_(id="x" * 60)) + " " * MAX_POKE_BYTES
    assert reason_of(text) == "too_large"


def test_reason_never_contains_the_content() -> None:
    secret = "Testpatient-Alpha-1970-01-01"
    with pytest.raises(PokeRejected) as info:
        parse_poke(with_(comment=secret))
    assert secret not in str(info.value)
    assert str(info.value) == info.value.reason == "unknown_field"


# ---------------------------------------------------------------- publishing


def test_poke_to_json_is_compact_and_round_trips() -> None:
    poke = parse_poke(VALID)
    text = poke_to_json(poke)
    assert " " not in text
    assert json.loads(text) == VALID
    assert parse_poke(text) == poke


def test_poke_to_json_omits_missing_patient() -> None:
    poke = Poke("RESOURCE_CHANGED", "Location", "bed-3", "1", None, 5)
    assert "patientId" not in poke_to_dict(poke)


def test_poke_to_json_refuses_an_invalid_poke() -> None:
    bad = Poke("RESOURCE_CHANGED", "Observation", "has space", "1", None, 5)
    with pytest.raises(PokeRejected, match="bad_id"):
        poke_to_json(bad)


# ---------------------------------------------------------------- properties

fhir_ids = st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True).filter(lambda s: pokes._is_id(s))
valid_pokes = st.builds(
    Poke,
    type=st.sampled_from(sorted(POKE_TYPES)),
    resource_type=st.sampled_from(sorted(POKE_RESOURCE_TYPES)),
    id=fhir_ids,
    version_id=st.from_regex(r"[0-9]{1,18}", fullmatch=True),
    patient_id=st.none() | fhir_ids,
    seq=st.integers(min_value=0, max_value=pokes.MAX_SEQ),
    priority=st.just("routine"),
)


@given(valid_pokes)
def test_any_valid_poke_round_trips(poke: Poke) -> None:
    text = poke_to_json(poke)
    assert len(text.encode()) <= MAX_POKE_BYTES
    assert parse_poke(text) == poke
    assert parse_poke(text.encode()) == poke
    assert parse_poke(poke_to_dict(poke)) == poke


@given(valid_pokes.map(lambda p: replace(p, type=pokes.CRITICAL_LAB_RESULT, priority="urgent")))
def test_urgent_critical_pokes_round_trip(poke: Poke) -> None:
    assert parse_poke(poke_to_json(poke)) == poke


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def only_poke_rejected(data: Any) -> None:
    try:
        parse_poke(data)
    except PokeRejected as exc:
        assert exc.reason.isidentifier()  # a short code, never content


@given(json_values)
def test_arbitrary_json_never_raises_anything_else(value: Any) -> None:
    only_poke_rejected(value)
    only_poke_rejected(json.dumps(value))


@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise_anything_else(data: bytes) -> None:
    only_poke_rejected(data)


@given(st.text(max_size=600))
def test_arbitrary_text_never_raises_anything_else(text: str) -> None:
    only_poke_rejected(text)


@given(
    st.dictionaries(
        st.sampled_from(sorted(pokes._FIELDS)) | st.text(max_size=8),
        json_values | st.sampled_from(["urgent", "routine", *sorted(POKE_TYPES)]),
    )
)
def test_arbitrary_dicts_never_raise_anything_else(data: dict[str, Any]) -> None:
    only_poke_rejected(data)
    only_poke_rejected(json.dumps(data))


@given(st.sampled_from(sorted(pokes._FIELDS)), json_values)
def test_one_field_replaced_is_accepted_only_when_valid(key: str, value: Any) -> None:
    data = with_(**{key: value})
    try:
        poke = parse_poke(data)
    except PokeRejected:
        return
    # Whatever got through is exactly representable and re-serializes to the same poke.
    assert parse_poke(poke_to_json(poke)) == poke
    assert " " not in poke.id and (poke.patient_id is None or " " not in poke.patient_id)
