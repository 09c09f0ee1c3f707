"""Property tests of the filter-criteria parser (criteria.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st

from wardsync.sandbox.fhir.search_params import SEARCH_PARAMETERS
from wardsync.sandbox.fhir.subscriptions.criteria import (
    Criteria,
    InvalidCriteria,
    parse_criteria,
)

TYPES = sorted(SEARCH_PARAMETERS)
_value_chars = st.characters(min_codepoint=0x20, max_codepoint=0x2FFF,
                             blacklist_categories=("Cs",))
values = st.text(_value_chars, min_size=1, max_size=20)


@st.composite
def criteria(draw: st.DrawFn) -> Criteria:
    rtype = draw(st.sampled_from(TYPES))
    usable = [p for p in SEARCH_PARAMETERS[rtype] if p.kind != "date"]
    chosen = draw(st.lists(st.sampled_from(usable), max_size=4, unique_by=lambda p: p.name)
                  if usable else st.just([]))
    text = rtype
    parts = []
    for p in chosen:
        vals = draw(st.lists(values, min_size=1, max_size=3))
        parts.append((p, vals))
    if parts:
        text += "?" + "&".join(f"{p.name}={','.join(quote(v, safe='') for v in vs)}"
                               for p, vs in parts)
    return parse_criteria(text, supported_types=SEARCH_PARAMETERS)


@given(criteria())
@settings(max_examples=300, deadline=None)
def test_canonical_text_parses_back_to_the_same_criteria(c: Criteria) -> None:
    again = parse_criteria(c.to_text(), supported_types=SEARCH_PARAMETERS)
    assert again == c
    assert again.to_text() == c.to_text()


@given(st.text(max_size=200))
@settings(max_examples=500, deadline=None)
def test_any_text_parses_or_is_refused_with_a_message(text: str) -> None:
    try:
        parsed = parse_criteria(text, supported_types=SEARCH_PARAMETERS)
    except InvalidCriteria as exc:
        assert str(exc)
        return
    assert parsed.resource_type in SEARCH_PARAMETERS


@given(st.sampled_from(TYPES), st.text(max_size=30), st.text(max_size=30))
@settings(max_examples=300, deadline=None)
def test_unknown_or_date_parameters_are_refused(rtype: str, name: str, value: str) -> None:
    known = {p.name for p in SEARCH_PARAMETERS[rtype]} | {"_id", "_lastUpdated"}
    dates = {p.name for p in SEARCH_PARAMETERS[rtype] if p.kind == "date"} | {"_lastUpdated"}
    text = f"{rtype}?{quote(name, safe='')}={quote(value, safe='')}"
    try:
        parse_criteria(text, supported_types=SEARCH_PARAMETERS)
    except InvalidCriteria:
        return
    assert name in known - dates and value


resources = st.fixed_dictionaries({
    "resourceType": st.just("Observation"),
    "id": st.text("abc123", min_size=1, max_size=6),
    "status": st.sampled_from(["final", "preliminary", "amended"]),
    "subject": st.fixed_dictionaries({"reference": st.sampled_from(
        ["Patient/p1", "Patient/p2", "http://h/fhir/Patient/p1"])}),
    "code": st.fixed_dictionaries({"coding": st.lists(st.fixed_dictionaries({
        "system": st.sampled_from(["http://loinc.org", "urn:x"]),
        "code": st.sampled_from(["1", "2", "3"])}), min_size=1, max_size=2)}),
})


@given(resources, st.sampled_from(["final", "preliminary"]), st.sampled_from(["p1", "p2"]))
@settings(max_examples=300, deadline=None)
def test_matching_agrees_with_the_resource(resource: dict[str, Any], status: str,
                                           patient: str) -> None:
    c = parse_criteria(f"Observation?status={status}&patient=Patient/{patient}",
                       supported_types=SEARCH_PARAMETERS)
    subject = resource["subject"]["reference"].rsplit("/", 1)[1]
    assert c.matches(resource) == (resource["status"] == status and subject == patient)
    # OR within a parameter, AND across parameters.
    either = parse_criteria("Observation?code=http://loinc.org|1,urn:x|2",
                            supported_types=SEARCH_PARAMETERS)
    codes = {(c["system"], c["code"]) for c in resource["code"]["coding"]}
    assert either.matches(resource) == bool(codes & {("http://loinc.org", "1"), ("urn:x", "2")})
