"""How FHIR values read on screen: concepts, dates, quantities and versions (plain Python).

Dates follow the unambiguous style of identity banners (NHS Common User Interface guidance:
`12-Mar-1948`, never `03/12/48`); times are shown in the workstation's zone. Every function
accepts anything a server might send and returns text, never raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, tzinfo
from typing import Any

from wardsync.core.fhirtime import parse_datetime

Resource = Mapping[str, Any]
NO_VALUE = "—"


def ref_of(resource: Resource) -> str:
    """"Type/id" of a stored resource."""
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def version_of(resource: Resource | None) -> str:
    """`meta.versionId` as text ("" when missing)."""
    meta = (resource or {}).get("meta")
    version = meta.get("versionId") if isinstance(meta, Mapping) else None
    return version if isinstance(version, str) else ""


def concept_text(concept: object, default: str = "") -> str:
    """A CodeableConcept as a person reads it: its text, else the first coding's display,
    else the first code (R4 datatypes.html#CodeableConcept: text is what the user saw)."""
    if not isinstance(concept, Mapping):
        return default
    text = concept.get("text")
    if isinstance(text, str) and text.strip():
        return text.strip()
    for coding in concept.get("coding") or ():
        if isinstance(coding, Mapping) and isinstance(coding.get("display"), str):
            return coding["display"]
    for coding in concept.get("coding") or ():
        if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
            return coding["code"]
    return default


def concept_codes(concept: object, system: str | None = None) -> list[str]:
    """The codes of a CodeableConcept (of one `system` when given)."""
    if not isinstance(concept, Mapping):
        return []
    return [
        c["code"] for c in concept.get("coding") or ()
        if isinstance(c, Mapping) and isinstance(c.get("code"), str)
        and (system is None or c.get("system") == system)
    ]


def first_code(concepts: object, system: str | None = None) -> str | None:
    """The first code in a list of CodeableConcepts (e.g. `clinicalStatus` wrapped in a list)."""
    items = concepts if isinstance(concepts, list) else [concepts]
    for concept in items:
        found = concept_codes(concept, system)
        if found:
            return found[0]
    return None


def when(value: object) -> datetime | None:
    """A FHIR dateTime/instant as an aware datetime, or None."""
    return parse_datetime(value)


def format_moment(value: object, tz: tzinfo | None = None, *, now: datetime | None = None) -> str:
    """"22-Nov 14:05" in the workstation's zone (the year is added when it is not this
    year); a date-only value shows as a date. `NO_VALUE` for anything unreadable."""
    if isinstance(value, str) and len(value) <= 10:
        return format_date(value)
    moment = when(value)
    if moment is None:
        return NO_VALUE
    local = moment.astimezone(tz)
    this_year = (now or datetime.now(local.tzinfo)).astimezone(local.tzinfo).year
    if local.year != this_year:
        return local.strftime("%d-%b-%Y %H:%M")
    return local.strftime("%d-%b %H:%M")


def format_date(value: object) -> str:
    """"12-Mar-1948" from a FHIR date (partial dates keep their precision)."""
    if not isinstance(value, str):
        return NO_VALUE
    parts = value[:10].split("-")
    try:
        if len(parts) == 3:
            return date(int(parts[0]), int(parts[1]), int(parts[2])).strftime("%d-%b-%Y")
        if len(parts) == 2:
            return date(int(parts[0]), int(parts[1]), 1).strftime("%b-%Y")
        if len(parts) == 1 and len(parts[0]) == 4:
            return str(int(parts[0]))
    except ValueError:
        return NO_VALUE
    return NO_VALUE


def format_number(value: object) -> str:
    """A measured number without float noise (`4.1`, `139`, `0.25`)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return NO_VALUE
    return f"{value:g}"


def quantity_unit(quantity: object) -> str:
    """The unit a person reads: `unit`, else the UCUM `code`."""
    if not isinstance(quantity, Mapping):
        return ""
    unit = quantity.get("unit") or quantity.get("code") or ""
    return str(unit)


def format_quantity(quantity: object, *, with_unit: bool = True) -> str:
    """"<1.5 mmol/L": comparator, value and unit."""
    if not isinstance(quantity, Mapping):
        return NO_VALUE
    comparator = quantity.get("comparator")
    prefix = comparator if comparator in ("<", "<=", ">", ">=") else ""
    number = format_number(quantity.get("value"))
    if number == NO_VALUE:
        return NO_VALUE
    unit = quantity_unit(quantity) if with_unit else ""
    return f"{prefix}{number} {unit}".strip()


def reference_id(reference: object, rtype: str) -> str | None:
    """The id in a Reference to `rtype` ("Patient/pat-01" -> "pat-01"), or None."""
    ref = reference.get("reference") if isinstance(reference, Mapping) else None
    if not isinstance(ref, str):
        return None
    parts = ref.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == rtype and parts[-1]:
        return parts[-1]
    return None
