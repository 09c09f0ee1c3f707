"""The poke: the only thing the realtime channel carries (docs/architecture.md §3.2).

A poke says "resource X changed, go and fetch it"; it is a hint, never data. It holds
logical ids, a version number, a sequence number and a priority, and nothing else. Parsing
is strict so that a misbehaving relay cannot smuggle patient data into the app: unknown
keys, free text, spaces, dates and measured values all fail. A rejection carries a short
reason code that is safe to log; the rejected content itself is never put in the error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from wardsync.core.resources import FHIR_ID

RESOURCE_CHANGED: Final = "RESOURCE_CHANGED"
LAB_RESULT_READY: Final = "LAB_RESULT_READY"
CRITICAL_LAB_RESULT: Final = "CRITICAL_LAB_RESULT"
RESOURCE_DELETED: Final = "RESOURCE_DELETED"
POKE_TYPES: Final = frozenset(
    {RESOURCE_CHANGED, LAB_RESULT_READY, CRITICAL_LAB_RESULT, RESOURCE_DELETED}
)
# Types that may (and by themselves do) make a poke urgent.
URGENT_POKE_TYPES: Final = frozenset({CRITICAL_LAB_RESULT})

ROUTINE: Final = "routine"
URGENT: Final = "urgent"
PRIORITIES: Final = frozenset({ROUTINE, URGENT})

# Resource types whose changes are announced on the ward channel.
POKE_RESOURCE_TYPES: Final = frozenset(
    {
        "AllergyIntolerance",
        "CarePlan",
        "Communication",
        "Condition",
        "DiagnosticReport",
        "DocumentReference",
        "Encounter",
        "Flag",
        "Immunization",
        "Location",
        "MedicationAdministration",
        "MedicationRequest",
        "Observation",
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "Procedure",
        "ServiceRequest",
        "Specimen",
        "Task",
    }
)

MAX_POKE_BYTES: Final = 512  # serialized UTF-8 size; a valid poke is well under 300 bytes
MAX_SEQ: Final = 2**53 - 1  # largest integer every JSON implementation keeps exact (RFC 8259 §6)

_VERSION_ID = re.compile(r"[0-9]{1,18}")
# Defence in depth: strings that fit the id grammar but read like a date (of birth) or a
# measured value are not ids any FHIR server assigns, so a poke carrying one is refused.
_DATE_LIKE = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}|[0-9]{1,2}[-.][0-9]{1,2}[-.][0-9]{2,4}")
_VALUE_LIKE = re.compile(r"-?[0-9]+\.[0-9]+")

# JSON keys (wire names) -> required?
_FIELDS: Final = {
    "type": True,
    "resourceType": True,
    "id": True,
    "versionId": True,
    "patientId": False,
    "seq": True,
    "priority": True,
}


class PokeRejected(ValueError):
    """A poke failed validation. `reason` is a short code, safe to log (never the content)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Poke:
    """A validated poke. Build one with `parse_poke`; `poke_to_json` serializes it."""

    type: str
    resource_type: str
    id: str
    version_id: str
    patient_id: str | None
    seq: int
    priority: str = ROUTINE

    @property
    def ref(self) -> str:
        """The FHIR relative reference, e.g. "DiagnosticReport/abc"."""
        return f"{self.resource_type}/{self.id}"

    @property
    def is_urgent(self) -> bool:
        """True for urgent priority or an urgent type.

        A CRITICAL_LAB_RESULT marked routine by a sloppy publisher is still treated as
        urgent: erring this way costs one early pull, the other way a late critical alert.
        """
        return self.priority == URGENT or self.type in URGENT_POKE_TYPES


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise PokeRejected("duplicate_field")
        out[key] = value
    return out


def _reject_constant(_name: str) -> Any:
    raise PokeRejected("bad_json")  # NaN / Infinity are not JSON (RFC 8259 §6)


def _decode(data: str | bytes | bytearray) -> object:
    return decode_strict_json(data, MAX_POKE_BYTES)


def decode_strict_json(data: str | bytes | bytearray, max_bytes: int) -> object:
    """Strict JSON for channel messages: at most `max_bytes` of UTF-8, no duplicate keys,
    no NaN/Infinity; raises `PokeRejected` with a reason code (also for heartbeats)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise PokeRejected("too_large")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PokeRejected("bad_encoding") from None
    try:
        return json.loads(
            text, object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant
        )
    except PokeRejected:  # from the hooks (a ValueError too): keep its specific reason
        raise
    except (ValueError, RecursionError):  # JSONDecodeError; nesting deeper than the stack
        raise PokeRejected("bad_json") from None


def _is_id(value: object) -> bool:
    return (
        type(value) is str
        and FHIR_ID.fullmatch(value) is not None
        and _DATE_LIKE.fullmatch(value) is None
        and _VALUE_LIKE.fullmatch(value) is None
    )


def parse_poke(data: str | bytes | bytearray | Mapping[str, object]) -> Poke:
    """Validate one poke (JSON text, UTF-8 bytes or an already decoded mapping).

    Raises `PokeRejected` with a reason code for anything that is not exactly a poke; no
    other exception escapes, whatever the input.
    """
    obj = _decode(data) if isinstance(data, str | bytes | bytearray) else data
    if not isinstance(obj, Mapping):
        raise PokeRejected("not_object")

    keys = list(obj.keys())
    if any(type(k) is not str or k not in _FIELDS for k in keys):
        raise PokeRejected("unknown_field")
    if any(required and name not in obj for name, required in _FIELDS.items()):
        raise PokeRejected("missing_field")

    ptype = obj["type"]
    if type(ptype) is not str or ptype not in POKE_TYPES:
        raise PokeRejected("bad_type")
    rtype = obj["resourceType"]
    if type(rtype) is not str or rtype not in POKE_RESOURCE_TYPES:
        raise PokeRejected("bad_resource_type")
    rid = obj["id"]
    if not _is_id(rid):
        raise PokeRejected("bad_id")
    version = obj["versionId"]
    if type(version) is not str or _VERSION_ID.fullmatch(version) is None:
        raise PokeRejected("bad_version_id")
    # patientId may be absent or null (a Location or Practitioner has no patient).
    patient = obj.get("patientId")
    if patient is not None and not _is_id(patient):
        raise PokeRejected("bad_patient_id")
    seq = obj["seq"]
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:  # `type` rejects bool (True == 1)
        raise PokeRejected("bad_seq")
    priority = obj["priority"]
    if type(priority) is not str or priority not in PRIORITIES:
        raise PokeRejected("bad_priority")
    if priority == URGENT and ptype not in URGENT_POKE_TYPES:
        raise PokeRejected("urgent_not_allowed")

    return Poke(
        type=ptype,
        resource_type=rtype,
        id=rid,  # checked by _is_id
        version_id=version,
        patient_id=patient,
        seq=seq,
        priority=priority,
    )


def poke_to_dict(poke: Poke) -> dict[str, object]:
    """The wire form of a poke (JSON keys); `patientId` is omitted when there is none."""
    out: dict[str, object] = {
        "type": poke.type,
        "resourceType": poke.resource_type,
        "id": poke.id,
        "versionId": poke.version_id,
    }
    if poke.patient_id is not None:
        out["patientId"] = poke.patient_id
    out["seq"] = poke.seq
    out["priority"] = poke.priority
    return out


def poke_to_json(poke: Poke) -> str:
    """Serialize a poke for publishing; raises `PokeRejected` if it would not parse back.

    Validating on the way out means the publisher can never emit what clients would reject.
    """
    wire = poke_to_dict(poke)
    parse_poke(wire)
    text = json.dumps(wire, separators=(",", ":"), ensure_ascii=True)
    if len(text) > MAX_POKE_BYTES:  # cannot happen with valid fields; kept as a guard
        raise PokeRejected("too_large")
    return text
