"""Filter criteria: `Observation?patient=Patient/p1&code=http://loinc.org|2823-3`.

Used twice: as the Backport IG's `backport-filter-criteria` on a topic-based Subscription
(STU 1.1, "Subscription Filters": `[resourceType]?[parameter]=[value]`, the type being the
topic's) and as the whole `criteria` of a classic R4 Subscription (R4
subscription.html#criteria: "a search URL ... such as `Observation?code=...`").

The grammar is the search URL subset a change can be tested against without a database:
`&` joins parameters (all must match), `,` joins values of one parameter (any may match,
R4 search.html#combining), values are percent-decoded. Parameter kinds as in R4
search.html#ptypes: token (`code`, `system|code`, `|code`, `system|`), reference (`Type/id`
or a bare `id`) and string (case- and accent-insensitive starts-with). Date parameters,
modifiers, chains and result parameters (`_count`, `_sort`...) are refused with a message
naming them: a filter this server cannot evaluate exactly is an error, never a silent
"match everything".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from wardsync.sandbox.fhir.search_params import (
    ReferenceKey,
    SearchParam,
    StringKey,
    TokenKey,
    fold,
    index_keys,
    search_param,
)

MAX_CRITERIA_CHARS = 2000
MAX_FILTERS = 20
MAX_VALUES = 50


class InvalidCriteria(ValueError):
    """Filter criteria this server cannot evaluate; the message says why."""


@dataclass(frozen=True, slots=True)
class Filter:
    """One `name=value1,value2` part: matches when any value matches."""

    param: SearchParam
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Criteria:
    """A parsed criteria string: a resource type and filters that must all match."""

    resource_type: str
    filters: tuple[Filter, ...]

    def to_text(self) -> str:
        """The canonical criteria string (parses back to an equal `Criteria`)."""
        parts = [
            f"{f.param.name}={','.join(quote(v, safe='/|:') for v in f.values)}"
            for f in self.filters
        ]
        return f"{self.resource_type}?{'&'.join(parts)}" if parts else self.resource_type

    def matches(self, resource: Mapping[str, Any]) -> bool:
        """True if `resource` (of this type) satisfies every filter."""
        if resource.get("resourceType") != self.resource_type:
            return False
        return all(_filter_matches(f, resource) for f in self.filters)


def parse_criteria(text: str, *, supported_types: Mapping[str, object]) -> Criteria:
    """Parse `Type` or `Type?name=value&...`; raises InvalidCriteria with a clear message."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidCriteria("criteria must name a resource type, e.g. Observation?patient=...")
    if len(text) > MAX_CRITERIA_CHARS:
        raise InvalidCriteria(f"criteria longer than {MAX_CRITERIA_CHARS} characters")
    rtype, _, query = text.strip().partition("?")
    if rtype not in supported_types:
        raise InvalidCriteria(f"{rtype[:64]!r} is not a resource type this server serves")
    filters: list[Filter] = []
    for part in query.split("&") if query else []:
        if not part:
            continue
        raw_name, eq, raw_value = part.partition("=")
        name = unquote(raw_name)
        if not eq or not raw_value:
            raise InvalidCriteria(f"parameter {name[:64]!r} has no value")
        if ":" in name or "." in name:
            raise InvalidCriteria(f"modifiers and chains ({name[:64]!r}) are not supported "
                                  "in subscription criteria")
        param = search_param(rtype, name)
        if param is None:
            raise InvalidCriteria(f"{rtype} has no search parameter {name[:64]!r}")
        if param.kind == "date" or param.name == "_lastUpdated":
            raise InvalidCriteria(f"date parameter {name!r} cannot be used in subscription "
                                  "criteria (a change has no fixed 'now' to compare with)")
        values = tuple(unquote(v) for v in raw_value.split(","))
        if any(not v for v in values):
            raise InvalidCriteria(f"parameter {name!r} has an empty value")
        if len(values) > MAX_VALUES:
            raise InvalidCriteria(f"parameter {name!r} has more than {MAX_VALUES} values")
        filters.append(Filter(param, values))
        if len(filters) > MAX_FILTERS:
            raise InvalidCriteria(f"more than {MAX_FILTERS} parameters")
    return Criteria(rtype, tuple(filters))


def _filter_matches(f: Filter, resource: Mapping[str, Any]) -> bool:
    if f.param.name == "_id":
        return resource.get("id") in f.values
    keys = index_keys(dict(resource), f.param)
    return any(_value_matches(f.param, value, key) for value in f.values for key in keys)


def _value_matches(param: SearchParam, value: str, key: object) -> bool:
    if isinstance(key, TokenKey):
        if "|" not in value:
            return key.code == value
        system, _, code = value.partition("|")
        if not code:
            return key.system == system
        return key.system == system and key.code == code
    if isinstance(key, ReferenceKey):
        if "/" in value:
            target_type, _, target_id = value.rpartition("/")
            return (key.target_type == target_type.rsplit("/", 1)[-1]
                    and key.target_id == target_id)
        return key.target_id == value
    if isinstance(key, StringKey):
        return key.folded.startswith(fold(value))
    return False
