"""The one table of what the sandbox FHIR server serves: resource types and search parameters.

Everything else derives from it: the index rows written for each resource version, what a
search may ask for, which `_include`s exist, and the CapabilityStatement (so /metadata can
never disagree with what is served). Paths follow the R4 SearchParameter expressions for each
parameter, simplified to plain element paths (choice types listed one by one).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from wardsync.core import resources
from wardsync.sandbox.fhir.fhir_dates import MAX_US, MIN_US, MicroRange, parse_date_range

SearchKind = Literal["token", "reference", "date", "string"]


@dataclass(frozen=True, slots=True)
class SearchParam:
    """One search parameter of one resource type (R4 search.html#ptypes).

    `paths` are dotted element paths from the resource root; lists are walked through.
    `targets` limits a reference parameter to these resource types (empty: any type).
    """

    name: str
    kind: SearchKind
    paths: tuple[str, ...]
    description: str
    targets: tuple[str, ...] = ()


def _p(name: str, kind: SearchKind, paths: str, description: str, targets: str = "") -> SearchParam:
    return SearchParam(name, kind, tuple(paths.split()), description, tuple(targets.split()))


_EFFECTIVE = "effectiveDateTime effectivePeriod effectiveInstant"

# Parameters every type has (R4 search.html#all). The store answers these from its own
# columns (logical id, version timestamp) rather than from index rows.
COMMON_PARAMETERS: tuple[SearchParam, ...] = (
    _p("_id", "token", "id", "Logical id of the resource"),
    _p("_lastUpdated", "date", "meta.lastUpdated", "When the resource version last changed"),
)

SEARCH_PARAMETERS: dict[str, tuple[SearchParam, ...]] = {
    "Patient": (
        _p("identifier", "token", "identifier", "A patient identifier (MRN)"),
        _p("name", "string", "name", "Any part of a name (contains, case-insensitive)"),
    ),
    "Encounter": (
        _p("patient", "reference", "subject", "The patient present", "Patient"),
        _p("subject", "reference", "subject", "The patient or group present"),
        _p("status", "token", "status", "Encounter status"),
        _p("location", "reference", "location.location", "Any location of the encounter",
           "Location"),
    ),
    "Location": (
        _p("partof", "reference", "partOf", "The location this one is part of", "Location"),
        _p("type", "token", "type", "Kind of location (ward, room, bed)"),
    ),
    "Observation": (
        _p("patient", "reference", "subject", "The patient observed", "Patient"),
        _p("subject", "reference", "subject", "The subject observed"),
        _p("code", "token", "code", "The observation code (LOINC)"),
        _p("category", "token", "category", "Observation category"),
        _p("status", "token", "status", "Observation status"),
        _p("date", "date", _EFFECTIVE, "Clinically relevant time"),
        _p("encounter", "reference", "encounter", "Encounter of the observation", "Encounter"),
    ),
    "DiagnosticReport": (
        _p("patient", "reference", "subject", "The patient of the report", "Patient"),
        _p("subject", "reference", "subject", "The subject of the report"),
        _p("code", "token", "code", "The report code"),
        _p("category", "token", "category", "Report category (service section)"),
        _p("status", "token", "status", "Report status"),
        _p("date", "date", _EFFECTIVE, "Clinically relevant time"),
        _p("result", "reference", "result", "An Observation in the report", "Observation"),
    ),
    "Condition": (
        _p("patient", "reference", "subject", "The patient with the condition", "Patient"),
        _p("clinical-status", "token", "clinicalStatus", "Clinical status of the condition"),
        _p("category", "token", "category", "Condition category"),
    ),
    "AllergyIntolerance": (
        _p("patient", "reference", "patient", "The patient with the allergy", "Patient"),
        _p("clinical-status", "token", "clinicalStatus", "Active, inactive or resolved"),
        _p("criticality", "token", "criticality", "low, high or unable-to-assess"),
    ),
    "Immunization": (
        _p("patient", "reference", "patient", "The vaccinated patient", "Patient"),
        _p("status", "token", "status", "Immunization event status"),
    ),
    "MedicationRequest": (
        _p("patient", "reference", "subject", "The patient of the order", "Patient"),
        _p("status", "token", "status", "Order status"),
        _p("intent", "token", "intent", "Order intent"),
    ),
    "Task": (
        _p("patient", "reference", "for", "The patient the task is for", "Patient"),
        _p("status", "token", "status", "Task status"),
        _p("owner", "reference", "owner", "Who is responsible for the task"),
        _p("focus", "reference", "focus", "What the task acts on"),
        _p("code", "token", "code", "Task type"),
    ),
    "Communication": (
        _p("patient", "reference", "subject", "The patient the message is about", "Patient"),
        _p("subject", "reference", "subject", "The focus of the message"),
        _p("status", "token", "status", "Communication status"),
        _p("category", "token", "category", "Message category"),
        _p("about", "reference", "about", "Resources the message is about"),
    ),
    "Practitioner": (
        _p("identifier", "token", "identifier", "A practitioner identifier"),
    ),
    "AuditEvent": (
        _p("entity", "reference", "entity.what", "A resource the event is about"),
        _p("agent", "reference", "agent.who", "Who took part in the event"),
        _p("date", "date", "recorded", "When the event was recorded"),
    ),
    # Subscriptions R5 Backport IG STU 1.1 (docs/subscriptions.md); reading or writing one
    # needs an explicit system/Subscription scope (sandbox/fhir/subscriptions/access.py).
    "Subscription": (
        _p("status", "token", "status", "requested, active, error or off"),
        _p("type", "token", "channel.type", "Channel type (rest-hook, websocket)"),
        _p("url", "string", "channel.endpoint", "Where notifications are sent"),
    ),
}

SUPPORTED_TYPES: tuple[str, ...] = tuple(SEARCH_PARAMETERS)

# Interactions each type supports (R4 http.html); the CapabilityStatement lists exactly these.
TYPE_INTERACTIONS: tuple[str, ...] = (
    "read", "vread", "update", "delete", "create", "history-instance", "history-type",
    "search-type",
)


def search_param(resource_type: str, name: str) -> SearchParam | None:
    """The parameter `name` of `resource_type` (common ones included), or None."""
    for param in COMMON_PARAMETERS + SEARCH_PARAMETERS.get(resource_type, ()):
        if param.name == name:
            return param
    return None


def include_params(resource_type: str) -> tuple[SearchParam, ...]:
    """The reference parameters of a type, each usable as `_include=Type:name`."""
    return tuple(p for p in SEARCH_PARAMETERS.get(resource_type, ()) if p.kind == "reference")


# ------------------------------------------------------------------------- index extraction

@dataclass(frozen=True, slots=True)
class TokenKey:
    """A token as indexed: `system` is "" when the value has none."""

    system: str
    code: str


@dataclass(frozen=True, slots=True)
class ReferenceKey:
    """A literal reference reduced to its target (R4 references.html#literal)."""

    target_type: str
    target_id: str


@dataclass(frozen=True, slots=True)
class StringKey:
    """A string as indexed: `folded` for case/accent-insensitive matching, `exact` as given."""

    folded: str
    exact: str


IndexKey = TokenKey | ReferenceKey | MicroRange | StringKey



def walk(node: Any, path: str) -> Iterator[Any]:
    """Every value at a dotted element path, flattening lists on the way."""
    values: list[Any] = [node]
    for part in path.split("."):
        nxt: list[Any] = []
        for value in values:
            if isinstance(value, dict) and part in value:
                child = value[part]
                nxt.extend(child if isinstance(child, list) else [child])
        values = nxt
    yield from values


def parse_reference(text: str) -> ReferenceKey | None:
    """`Patient/1`, `http://host/fhir/Patient/1/_history/2` -> ReferenceKey; None if neither."""
    literal = resources.parse_reference(text)
    return ReferenceKey(literal.type, literal.id) if literal is not None else None


def index_keys(resource: dict[str, Any], param: SearchParam) -> list[IndexKey]:
    """The index entries `param` takes from `resource` (values it cannot read are skipped)."""
    keys: list[IndexKey] = []
    for path in param.paths:
        for value in walk(resource, path):
            keys.extend(_keys_of(param, value))
    return keys


def _keys_of(param: SearchParam, value: Any) -> list[IndexKey]:
    if param.kind == "token":
        return list(_tokens(value))
    if param.kind == "reference":
        ref = value.get("reference") if isinstance(value, dict) else None
        key = parse_reference(ref) if isinstance(ref, str) else None
        if key is None or (param.targets and key.target_type not in param.targets):
            return []
        return [key]
    if param.kind == "date":
        rng = _date_range(value)
        return [rng] if rng is not None else []
    return [StringKey(fold(s), s) for s in _strings(value)]


def _tokens(value: Any) -> Iterator[TokenKey]:
    if isinstance(value, str):
        yield TokenKey("", value)
    elif isinstance(value, bool):
        yield TokenKey("", "true" if value else "false")
    elif isinstance(value, dict):
        if "coding" in value:  # CodeableConcept
            for coding in value["coding"] if isinstance(value["coding"], list) else []:
                yield from _tokens(coding)
        elif isinstance(value.get("code"), str):  # Coding
            system = value.get("system")
            yield TokenKey(system if isinstance(system, str) else "", value["code"])
        elif isinstance(value.get("value"), str):  # Identifier
            system = value.get("system")
            yield TokenKey(system if isinstance(system, str) else "", value["value"])


def _date_range(value: Any) -> MicroRange | None:
    if isinstance(value, str):
        return parse_date_range(value)
    if isinstance(value, dict) and ("start" in value or "end" in value):  # Period
        start = parse_date_range(value["start"]) if isinstance(value.get("start"), str) else None
        end = parse_date_range(value["end"]) if isinstance(value.get("end"), str) else None
        return MicroRange(start.low if start else MIN_US, end.high if end else MAX_US)
    return None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):  # HumanName (R4 search.html#string: any part of the name)
        for part in ("text", "family", "given", "prefix", "suffix"):
            item = value.get(part)
            for s in item if isinstance(item, list) else [item]:
                if isinstance(s, str):
                    yield s


def fold(text: str) -> str:
    """Case- and accent-insensitive form for string search (R4 search.html#string)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
