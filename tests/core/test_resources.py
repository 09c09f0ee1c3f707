"""Resource access: ids, meta, references, codings and the patient a resource is about."""

from __future__ import annotations

import string
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wardsync.core.resources import (
    LiteralReference,
    codes_of,
    concept_display,
    first_code,
    has_code,
    is_fhir_id,
    last_updated,
    last_updated_s,
    parse_reference,
    patient_id_of,
    patient_ref_of,
    quantity_value,
    reference_id,
    relative_ref,
    resource_ref,
    version_id,
)

# R4 datatypes.html#id, written out as the spec states it: ASCII letters, digits, '-', '.'.
ID_ALPHABET = string.ascii_letters + string.digits + "-."
# Less the two dot-segments of RFC 3986 §3.3, which no URL can address (core/resources.py).
DOT_SEGMENTS = (".", "..")
fhir_ids = st.text(alphabet=ID_ALPHABET, min_size=1, max_size=64).filter(
    lambda rid: rid not in DOT_SEGMENTS)
resource_types = st.from_regex(r"[A-Z][a-z]{1,20}(?:[A-Z][a-z]{1,10}){0,2}", fullmatch=True)
bases = st.sampled_from(["https://fhir.example.org/r4/", "http://127.0.0.1:8080/fhir/",
                         "https://h.example/a/b/c/"])


@given(st.text(max_size=80))
def test_id_regex_is_the_spec_grammar(text: str) -> None:
    expected = (1 <= len(text) <= 64 and all(c in ID_ALPHABET for c in text)
                and text not in DOT_SEGMENTS)
    assert is_fhir_id(text) is expected


@given(fhir_ids)
def test_every_spec_id_is_accepted(rid: str) -> None:
    assert is_fhir_id(rid)


def test_ids_outside_the_grammar() -> None:
    for bad in ("", "a" * 65, "a_b", "a/b", "pat 1", "pat-1\n", "é", None, 12, ".", ".."):
        assert not is_fhir_id(bad)
    for good in ("...", ".a", "a.", "..b", "1.2"):
        assert is_fhir_id(good)


@given(resource_types, fhir_ids, st.one_of(st.just(""), fhir_ids), st.one_of(st.just(""), bases))
def test_reference_round_trip(rtype: str, rid: str, version: str, base: str) -> None:
    text = f"{base}{rtype}/{rid}" + (f"/_history/{version}" if version else "")
    assert parse_reference(text) == LiteralReference(rtype, rid, version, base)
    assert relative_ref(text) == f"{rtype}/{rid}"
    assert reference_id({"reference": text}, rtype) == rid
    assert reference_id({"reference": text}, rtype + "x") is None


@given(fhir_ids)
def test_contained_and_urn_references_name_no_server_resource(rid: str) -> None:
    for text in (f"#{rid}", f"urn:uuid:{rid}", f"urn:oid:1.2.{rid}"):
        assert parse_reference(text) is None
        assert relative_ref(text) is None


@pytest.mark.parametrize("text", [
    "Observation", "Observation/", "/Observation/1", "observation/1", "Observation/a_b",
    "Observation/1/_history/", "Observation/1/extra", "Observation/..", "Observation/.",
    "Observation/1/_history/..", "ftp://x/Observation/1", "",
])
def test_malformed_references(text: str) -> None:
    assert parse_reference(text) is None


@pytest.mark.parametrize("resource", [
    {"resourceType": "Observation", "subject": {"reference": "Patient/p1"}},
    {"resourceType": "AllergyIntolerance", "patient": {"reference": "https://x/fhir/Patient/p1"}},
    {"resourceType": "Task", "for": {"reference": "Patient/p1/_history/4"}},
    {"resourceType": "Patient", "id": "p1"},
])
def test_patient_of(resource: dict[str, Any]) -> None:
    assert patient_id_of(resource) == "p1"
    assert patient_ref_of(resource) == "Patient/p1"


@pytest.mark.parametrize("resource", [
    {"resourceType": "Location", "id": "bed-1"},
    {"resourceType": "Task", "for": {"reference": "Location/w1"}},
    {"resourceType": "Observation", "subject": {"reference": "#contained"}},
    {"resourceType": "Observation", "subject": "Patient/p1"},
])
def test_no_patient(resource: dict[str, Any]) -> None:
    assert patient_id_of(resource) is None


def test_meta_access() -> None:
    res = {"resourceType": "Task", "id": "t1",
           "meta": {"versionId": "7", "lastUpdated": "2026-01-01T10:00:00.5+01:00"}}
    assert version_id(res) == "7"
    assert last_updated(res) == datetime(2026, 1, 1, 9, 0, 0, 500_000, tzinfo=UTC)
    assert last_updated_s(res) == datetime(2026, 1, 1, 9, 0, 0, 500_000, tzinfo=UTC).timestamp()
    assert resource_ref(res) == "Task/t1"
    for broken in ({}, {"meta": None}, {"meta": {"versionId": 7, "lastUpdated": "today"}}):
        assert version_id(broken) is None and last_updated(broken) is None
    with pytest.raises(ValueError):
        resource_ref({"resourceType": "Task"})


def test_codings_of_a_concept_and_of_a_list() -> None:
    concept = {"text": "Potassium", "coding": [
        {"system": "http://loinc.org", "code": "2823-3", "display": "Potassium [Moles/volume]"},
        {"system": "urn:local", "code": "K"}, "junk", {"system": "urn:local"}]}
    assert codes_of(concept) == ["2823-3", "K"]
    assert codes_of(concept, "http://loinc.org") == ["2823-3"]
    assert first_code([{"coding": "junk"}, concept], "urn:local") == "K"
    assert has_code([concept], "K", "urn:local") and not has_code(concept, "K", "http://loinc.org")
    assert codes_of(None) == [] and codes_of({"coding": {"code": "x"}}) == []
    assert concept_display(concept) == "Potassium"
    assert concept_display({"coding": concept["coding"]}) == "Potassium [Moles/volume]"


UCUM = "http://unitsofmeasure.org"
PER_MIN = frozenset({"/min"})


@given(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-10**6, 10**6))
def test_a_quantity_in_an_accepted_unit_gives_its_value(value: float) -> None:
    assert quantity_value({"value": value, "system": UCUM, "code": "/min"}, PER_MIN) == value
    # Without the UCUM system the free-text unit is what counts.
    assert quantity_value({"value": value, "unit": "/min", "code": "x"}, PER_MIN) == value


@pytest.mark.parametrize("quantity", [
    None, "72 /min", {"value": 72, "system": UCUM, "code": "/h"},
    {"value": 72, "system": UCUM, "unit": "/min"},
    {"value": 72, "system": UCUM, "code": "/min", "comparator": "<"},
    {"value": True, "system": UCUM, "code": "/min"},
    {"value": "72", "system": UCUM, "code": "/min"},
    {"value": float("nan"), "system": UCUM, "code": "/min"},
    {"value": float("inf"), "unit": "/min"},
])
def test_what_is_not_a_measurement_in_an_accepted_unit(quantity: object) -> None:
    assert quantity_value(quantity, PER_MIN) is None
