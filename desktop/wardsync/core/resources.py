"""Reading FHIR R4 resources held as JSON: ids, meta, references, codings, quantities, patient.

The alert rules, the patient identity, the sync loops and the sandbox server read resources
through these functions, so they agree on what a reference points at and whom a resource is
about. Pure functions of their arguments; malformed input gives None or an empty result, never
an exception, because resources come from servers we do not control.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from wardsync.core.codes import UCUM
from wardsync.core.fhirtime import parse_instant

Resource = Mapping[str, Any]

# R4 datatypes.html#id: "Any combination of upper- or lower-case ASCII letters ('A'..'Z', and
# 'a'..'z'), numerals ('0'..'9'), '-' and '.', with a length limit of 64 characters." Except
# "." and "..": as a URL path segment they are dot-segments (RFC 3986 §3.3) that every client
# removes when it resolves `Patient/..` (RFC 3986 §5.2.4), so such a resource could never be
# addressed, and `PUT /Patient/%2E%2E` would write a resource no reference can name.
_ID: Final = r"(?!\.\.?(?![A-Za-z0-9\-.]))[A-Za-z0-9\-.]{1,64}"
FHIR_ID: Final = re.compile(_ID)
# Resource type names are UpperCamelCase (R4 resourcelist.html); the literal-reference regex of
# references.html#literal lists them one by one, this accepts any such name.
RESOURCE_TYPE: Final = re.compile(r"[A-Z][A-Za-z]{1,63}")
# R4 references.html#literal: [base/]Type/id[/_history/version], base an http(s) URL.
_LITERAL_REFERENCE: Final = re.compile(
    r"(?P<base>https?://(?:[A-Za-z0-9\-\\.:%$]*/)+)?"
    rf"(?P<type>[A-Z][A-Za-z]{{1,63}})/(?P<id>{_ID})"
    rf"(?:/_history/(?P<version>{_ID}))?"
)

# Where each resource type names the patient it is about (Observation.subject,
# AllergyIntolerance.patient, Task.for, ...).
PATIENT_FIELDS: Final = ("subject", "patient", "for")


def is_fhir_id(value: object) -> bool:
    """True if `value` is a valid logical id (R4 datatypes.html#id)."""
    return isinstance(value, str) and FHIR_ID.fullmatch(value) is not None


# ------------------------------------------------------------------------------------ meta


def version_id(resource: Resource | None) -> str | None:
    """`meta.versionId` (a non-empty string), or None."""
    meta = resource.get("meta") if isinstance(resource, Mapping) else None
    version = meta.get("versionId") if isinstance(meta, Mapping) else None
    return version if isinstance(version, str) and version else None


def last_updated(resource: Resource | None) -> datetime | None:
    """`meta.lastUpdated` as an aware datetime, or None when missing or not an instant."""
    meta = resource.get("meta") if isinstance(resource, Mapping) else None
    return parse_instant(meta.get("lastUpdated")) if isinstance(meta, Mapping) else None


def last_updated_s(resource: Resource | None) -> float | None:
    """`meta.lastUpdated` as epoch seconds, or None."""
    moment = last_updated(resource)
    return moment.timestamp() if moment is not None else None


def resource_ref(resource: Resource) -> str:
    """The reference "Type/id" of a resource; ValueError if either part is missing."""
    rtype, rid = resource.get("resourceType"), resource.get("id")
    if not isinstance(rtype, str) or not rtype or not isinstance(rid, str) or not rid:
        raise ValueError("a resource needs resourceType and id to be referenced")
    return f"{rtype}/{rid}"


# ------------------------------------------------------------------------------ references


@dataclass(frozen=True, slots=True)
class LiteralReference:
    """A literal reference (R4 references.html#literal) taken apart.

    `base` is the service base of an absolute reference ("" for a relative one); `version`
    is the `_history` version of a versioned reference ("" when there is none).
    """

    type: str
    id: str
    version: str = ""
    base: str = ""

    @property
    def relative(self) -> str:
        """"Type/id", the key resources are held under."""
        return f"{self.type}/{self.id}"


def parse_reference(reference: object) -> LiteralReference | None:
    """Take apart `Reference.reference`: relative, absolute or versioned; None otherwise.

    A contained reference ("#id", references.html#contained), a logical URI such as
    `urn:uuid:` (only meaningful inside a Bundle, bundle.html#references) or anything not
    matching the literal grammar names no resource on a server, so it gives None.
    """
    if not isinstance(reference, str):
        return None
    m = _LITERAL_REFERENCE.fullmatch(reference)
    if m is None:
        return None
    return LiteralReference(m["type"], m["id"], m["version"] or "", m["base"] or "")


def relative_ref(reference: object) -> str | None:
    """The "Type/id" of a Reference.reference (relative, absolute or versioned), or None."""
    parsed = parse_reference(reference)
    return parsed.relative if parsed is not None else None


def reference_of(value: object) -> str | None:
    """The "Type/id" a Reference element (`{"reference": ...}`) points at, or None."""
    return relative_ref(value.get("reference")) if isinstance(value, Mapping) else None


def reference_id(value: object, rtype: str) -> str | None:
    """The id a Reference element points at when it is a `rtype` ("Patient/p1" -> "p1")."""
    parsed = parse_reference(value.get("reference")) if isinstance(value, Mapping) else None
    return parsed.id if parsed is not None and parsed.type == rtype else None


def patient_ref_of(resource: Resource) -> str | None:
    """"Patient/<id>" of the patient a resource is about; a Patient is about itself.

    None for resources about no patient (Location, Practitioner, a ward-level Task).
    """
    patient_id = patient_id_of(resource)
    return f"Patient/{patient_id}" if patient_id is not None else None


def patient_id_of(resource: Resource) -> str | None:
    """The logical id of the patient a resource is about (see `patient_ref_of`)."""
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return rid if is_fhir_id(rid) else None
    for name in PATIENT_FIELDS:
        found = reference_id(resource.get(name), "Patient")
        if found is not None:
            return found
    return None


# -------------------------------------------------------------------------------- codings


def codings(concepts: object) -> Iterator[Mapping[str, Any]]:
    """The Codings of a CodeableConcept, or of a list of them (e.g. `Observation.category`)."""
    for concept in concepts if isinstance(concepts, list) else (concepts,):
        found = concept.get("coding") if isinstance(concept, Mapping) else None
        for coding in found if isinstance(found, list) else ():
            if isinstance(coding, Mapping):
                yield coding


def codes_of(concepts: object, system: str | None = None) -> list[str]:
    """The codes of a CodeableConcept (or list of them), of one `system` when given."""
    return [
        c["code"] for c in codings(concepts)
        if isinstance(c.get("code"), str) and (system is None or c.get("system") == system)
    ]


def first_code(concepts: object, system: str | None = None) -> str | None:
    """The first code (of `system` when given), or None."""
    return next(iter(codes_of(concepts, system)), None)


def has_code(concepts: object, code: str, system: str | None = None) -> bool:
    """True if any Coding carries `code` (in `system`, when given)."""
    return code in codes_of(concepts, system)


def concept_display(concept: object) -> str:
    """What a CodeableConcept says in words: its `text`, else the first Coding's display."""
    if not isinstance(concept, Mapping):
        return ""
    text = concept.get("text")
    if isinstance(text, str):
        return text
    for coding in codings(concept):
        if isinstance(coding.get("display"), str):
            return str(coding["display"])
    return ""


# ------------------------------------------------------------------------------ quantities


def quantity_value(quantity: object, units: frozenset[str]) -> float | None:
    """The value of a Quantity measured in one of `units`, or None.

    The unit is the UCUM `code` when `system` is UCUM, else the free-text `unit` (R4
    datatypes.html#Quantity). A value with a `comparator` ("<5") is not a measurement, and
    booleans, NaN and infinities are not numbers: all give None.
    """
    if not isinstance(quantity, Mapping) or quantity.get("comparator") is not None:
        return None
    value = quantity.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    unit = quantity.get("code") if quantity.get("system") == UCUM else quantity.get("unit")
    return float(value) if unit in units else None
