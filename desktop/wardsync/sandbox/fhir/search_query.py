"""Parse a FHIR search query string into a `SearchQuery` (R4 search.html).

Only the parameters in `search_params` are understood. Unknown parameters are ignored and
listed in `SearchQuery.ignored` so the server can report them (R4 search.html#errors), unless
the client asked for strict handling. A known parameter with a value or modifier we cannot
honour is an error (`InvalidSearch`, HTTP 400): silently widening a clinical filter such as
`patient=` would show the wrong patient's data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from wardsync.sandbox.fhir.errors import InvalidSearch, SearchTooCostly
from wardsync.sandbox.fhir.fhir_dates import MicroRange, parse_date_range
from wardsync.sandbox.fhir.search_params import (
    SUPPORTED_TYPES,
    SearchParam,
    fold,
    parse_reference,
    search_param,
)

DEFAULT_COUNT = 50
MAX_COUNT = 500
# Caps on what one search may ask for (docs/security.md §3): every sort key on a date adds a
# correlated subquery per candidate row and every value an OR term per probe, so an uncapped
# query held the server for a minute. The largest legitimate searches are far below them:
# the desktop's ward alerts ask for 50 patients in one `patient=` list (core/queries.py
# MAX_PATIENTS_PER_SEARCH), the relay sorts on one key (relay/reconcile.py).
MAX_PARAMETERS = 64  # every name=value pair, including unknown and ignored ones
MAX_PARAMETER_CHARS = 8192  # one parameter's value
MAX_CRITERIA = 20  # search criteria (ANDed)
MAX_VALUES_PER_CRITERION = 100  # comma-separated values of one criterion (ORed)
MAX_VALUES = 200  # values over all criteria
MAX_SORT_KEYS = 4
MAX_INCLUDES = 4
# R4 search.html#prefix
DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
SORTABLE_COMMON = ("_lastUpdated", "_id")
# Handled by the HTTP layer (R4 http.html#parameters), never search criteria.
TRANSPORT_PARAMETERS = frozenset({"_format", "_pretty"})
_TOTAL_VALUES = frozenset({"none", "estimate", "accurate"})
_PREFIXED = re.compile(r"^([a-z]{2})(\d.*)$")


@dataclass(frozen=True, slots=True)
class TokenValue:
    """`system|code`: system None matches any system, "" means no system; code None any code."""

    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    """A reference search value; `target_type` None matches any type with that id."""

    target_type: str | None
    target_id: str


@dataclass(frozen=True, slots=True)
class DateValue:
    """A date search value: comparison prefix and the interval the value names."""

    prefix: str
    range: MicroRange


@dataclass(frozen=True, slots=True)
class StringValue:
    """A string search value, folded unless the `:exact` modifier was used."""

    text: str
    exact: bool


SearchValue = TokenValue | ReferenceValue | DateValue | StringValue


@dataclass(frozen=True, slots=True)
class Criterion:
    """One parameter occurrence: its values are ORed (comma list), criteria are ANDed."""

    param: SearchParam
    values: tuple[SearchValue, ...]


@dataclass(frozen=True, slots=True)
class SortKey:
    """One `_sort` component."""

    name: str
    descending: bool


@dataclass(frozen=True, slots=True)
class Include:
    """One `_include=Type:param[:Target]`."""

    param: SearchParam
    target_type: str | None


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A parsed search. `echo` holds the parameters actually used, for self/next links."""

    resource_type: str
    criteria: tuple[Criterion, ...] = ()
    sort: tuple[SortKey, ...] = ()
    includes: tuple[Include, ...] = ()
    count: int = DEFAULT_COUNT
    offset: int = 0
    snapshot: int | None = None
    summary_count: bool = False
    ignored: tuple[str, ...] = ()
    echo: tuple[tuple[str, str], ...] = ()


def parse_search(
    resource_type: str, params: Iterable[tuple[str, str]], *, strict: bool = False
) -> SearchQuery:
    """Build a SearchQuery; raises InvalidSearch for unusable values of known parameters."""
    criteria: list[Criterion] = []
    sort: tuple[SortKey, ...] = ()
    includes: list[Include] = []
    count, offset, snapshot, summary_count = DEFAULT_COUNT, 0, None, False
    ignored: list[str] = []
    echo: list[tuple[str, str]] = []
    params = list(params)
    if len(params) > MAX_PARAMETERS:
        raise SearchTooCostly(f"a search may have at most {MAX_PARAMETERS} parameters")
    for key, value in params:
        if len(value) > MAX_PARAMETER_CHARS:
            raise SearchTooCostly(
                f"a search parameter's value may be at most {MAX_PARAMETER_CHARS} characters",
                key.partition(":")[0])
    for key, value in params:
        name, _, modifier = key.partition(":")
        if name in TRANSPORT_PARAMETERS:
            continue
        if name == "_count":
            count = min(_non_negative(key, value), MAX_COUNT)
        elif name == "_offset":
            offset = _non_negative(key, value)
        elif name == "_snapshot":
            snapshot = _non_negative(key, value)
        elif name == "_total":
            if value not in _TOTAL_VALUES:
                raise InvalidSearch(f"_total must be one of {sorted(_TOTAL_VALUES)}", key)
        elif name == "_summary":
            summary_count = _summary(key, value)
            echo.append((key, value))
        elif name == "_sort":
            _no_modifier(key, modifier)
            sort = sort + _sort(resource_type, value)
            if len(sort) > MAX_SORT_KEYS:
                raise SearchTooCostly(f"_sort may have at most {MAX_SORT_KEYS} keys", "_sort")
            echo.append((key, value))
        elif name == "_include":
            _no_modifier(key, modifier)
            includes.append(_include(resource_type, value))
            if len(includes) > MAX_INCLUDES:
                raise SearchTooCostly(f"a search may have at most {MAX_INCLUDES} _include",
                                      "_include")
            echo.append((key, value))
        else:
            param = search_param(resource_type, name)
            if param is None:
                base = name.split(".", 1)[0]
                if "." in name and search_param(resource_type, base) is not None:
                    raise InvalidSearch(f"chained search on {base!r} is not supported", key)
                ignored.append(key)
                continue
            if value == "":
                continue  # R4 search.html#search: a parameter with no value is ignored
            if len(criteria) == MAX_CRITERIA:
                raise SearchTooCostly(f"a search may have at most {MAX_CRITERIA} criteria", key)
            if len(_split(value, ",")) > MAX_VALUES_PER_CRITERION:
                raise SearchTooCostly(
                    f"{name} may have at most {MAX_VALUES_PER_CRITERION} comma-separated values",
                    key)
            criteria.append(Criterion(param, _values(param, key, modifier, value)))
            if sum(len(c.values) for c in criteria) > MAX_VALUES:
                raise SearchTooCostly(f"a search may have at most {MAX_VALUES} values in all",
                                      key)
            echo.append((key, value))
    if strict and ignored:
        # R4 search.html#errors: with Prefer: handling=strict unknown parameters are errors.
        raise InvalidSearch(f"unknown search parameter(s): {', '.join(ignored)}", ignored[0])
    return SearchQuery(
        resource_type, tuple(criteria), sort, tuple(includes), count, offset, snapshot,
        summary_count, tuple(ignored), tuple(echo),
    )


def _non_negative(key: str, value: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 12:
        raise InvalidSearch(f"{key} must be a whole number of at least 0, not {value!r}", key)
    return int(value)


def _no_modifier(key: str, modifier: str) -> None:
    if modifier:
        raise InvalidSearch(f"modifier :{modifier} is not supported on {key.split(':')[0]}", key)


def _summary(key: str, value: str) -> bool:
    if value == "count":
        return True
    if value == "false":
        return False
    raise InvalidSearch("only _summary=count and _summary=false are supported", key)


def _sort(resource_type: str, value: str) -> tuple[SortKey, ...]:
    keys: list[SortKey] = []
    for part in value.split(","):
        descending = part.startswith("-")
        name = part[1:] if descending else part
        param = search_param(resource_type, name)
        sortable = name in SORTABLE_COMMON or (param is not None and param.kind == "date")
        if not sortable:
            raise InvalidSearch(f"cannot sort {resource_type} by {name!r}", "_sort")
        keys.append(SortKey(name, descending))
    return tuple(keys)


def _include(resource_type: str, value: str) -> Include:
    parts = value.split(":")
    if len(parts) not in (2, 3) or parts[0] != resource_type:
        raise InvalidSearch(
            f"_include must be {resource_type}:<parameter>[:<type>], not {value!r}", "_include"
        )
    param = search_param(resource_type, parts[1])
    if param is None or param.kind != "reference":
        raise InvalidSearch(f"{parts[1]!r} is not a reference parameter of {resource_type}",
                            "_include")
    target = parts[2] if len(parts) == 3 else None
    if target is not None and (
        target not in SUPPORTED_TYPES or (param.targets and target not in param.targets)
    ):
        raise InvalidSearch(f"{value!r} names a target type the parameter cannot have",
                            "_include")
    return Include(param, target)


def _values(param: SearchParam, key: str, modifier: str, value: str) -> tuple[SearchValue, ...]:
    if param.kind == "string":
        if modifier not in ("", "contains", "exact"):
            raise InvalidSearch(f"modifier :{modifier} is not supported on {param.name}", key)
        exact = modifier == "exact"
        texts = [_unescape(v) for v in _split(value, ",")]
        return tuple(StringValue(t if exact else fold(t), exact) for t in texts)
    if param.kind == "reference":
        return tuple(_reference(param, key, modifier, v) for v in _split(value, ","))
    _no_modifier(key, modifier)
    if param.kind == "date":
        return tuple(_date(key, _unescape(v)) for v in _split(value, ","))
    return tuple(_token(param, key, v) for v in _split(value, ","))


def _token(param: SearchParam, key: str, text: str) -> TokenValue:
    if param.name == "_id":
        return TokenValue(None, _unescape(text))
    parts = [_unescape(p) for p in _split(text, "|")]
    if len(parts) == 1:
        return TokenValue(None, parts[0])
    if len(parts) == 2 and (parts[0] or parts[1]):
        return TokenValue(parts[0], parts[1] or None)
    raise InvalidSearch(f"{key} must be [system|]code, not {text!r}", key)


def _reference(param: SearchParam, key: str, modifier: str, text: str) -> ReferenceValue:
    text = _unescape(text)
    if modifier and (modifier not in SUPPORTED_TYPES or
                     (param.targets and modifier not in param.targets)):
        raise InvalidSearch(f"modifier :{modifier} is not a type {param.name} can refer to", key)
    if "/" in text:
        ref = parse_reference(text)
        if ref is None:
            raise InvalidSearch(f"{key} must be Type/id or id, not {text!r}", key)
        if modifier and ref.target_type != modifier:
            raise InvalidSearch(f"{text!r} is not a {modifier}", key)
        return ReferenceValue(ref.target_type, ref.target_id)
    default = param.targets[0] if len(param.targets) == 1 else None
    return ReferenceValue(modifier or default, text)


def _date(key: str, text: str) -> DateValue:
    # A '+' in a time zone arrives as a space when the client did not percent-encode it.
    text = text.replace(" ", "+")
    prefix = "eq"
    m = _PREFIXED.match(text)
    if m:
        prefix, text = m.group(1), m.group(2)
        if prefix not in DATE_PREFIXES:
            raise InvalidSearch(f"{key}: unknown prefix {prefix!r}", key)
    rng = parse_date_range(text)
    if rng is None:
        raise InvalidSearch(f"{key}: {text!r} is not a FHIR date, dateTime or instant", key)
    return DateValue(prefix, rng)


def _split(text: str, sep: str) -> list[str]:
    """Split on `sep` where not escaped with a backslash (R4 search.html#escaping).

    Escapes are kept so a part can be split again (`,` then `|`); `_unescape` the leaves.
    """
    parts, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\([\\,$|])", r"\1", text)
