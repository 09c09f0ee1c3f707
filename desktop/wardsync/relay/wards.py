"""Which ward a patient is on: the active Encounter's location, up to the ward Location.

An in-progress Encounter lists the patient's locations (bed, room, ward); each is resolved to
the ward Location it belongs to by its `physicalType` (v3 RoleCode / location-physical-type
`wa`) or by following `partOf` (R4 location.html). Patients are cached and forgotten when one
of their Encounters changes (`forget`); Locations are cached for the relay's lifetime (wards
are configuration, not clinical data).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from wardsync.core.resources import relative_ref

log = logging.getLogger(__name__)

WARD_PHYSICAL_TYPE = "wa"
MAX_PART_OF_DEPTH = 5
ACTIVE_ENCOUNTER_STATUSES = ("in-progress", "arrived", "onleave")
MAX_CACHED_PATIENTS = 50_000  # oldest forgotten first beyond this


class FhirReader(Protocol):
    async def read(self, resource_type: str, id: str) -> dict[str, Any]: ...

    async def search_all(self, resource_type: str,
                         params: Mapping[str, str]) -> list[dict[str, Any]]: ...


def _is_ward(location: Mapping[str, Any]) -> bool:
    physical = location.get("physicalType") or {}
    return any(c.get("code") == WARD_PHYSICAL_TYPE for c in physical.get("coding") or ())


class WardResolver:
    """patient id -> ward Location id, from the FHIR server, cached."""

    def __init__(self, fhir: FhirReader) -> None:
        self._fhir = fhir
        self._patients: dict[str, str | None] = {}
        self._locations: dict[str, str | None] = {}
        self.lookups = 0

    def forget(self, patient_id: str | None) -> str | None:
        """An Encounter of this patient changed: look the ward up again next time. Returns
        the ward the patient was known to be on (None if not cached)."""
        if patient_id is None:
            return None
        return self._patients.pop(patient_id, None)

    async def ward_of(self, patient_id: str) -> str | None:
        if patient_id in self._patients:
            return self._patients[patient_id]
        self.lookups += 1
        encounters = await self._fhir.search_all(
            "Encounter", {"patient": f"Patient/{patient_id}",
                          "status": ",".join(ACTIVE_ENCOUNTER_STATUSES)})
        ward: str | None = None
        for encounter in encounters:
            for entry in encounter.get("location") or ():
                if (entry or {}).get("status") not in (None, "active"):
                    continue
                ref = relative_ref(((entry or {}).get("location") or {}).get("reference"))
                if ref and ref.startswith("Location/"):
                    ward = await self._ward_of_location(ref.split("/", 1)[1])
                    if ward is not None:
                        break
            if ward is not None:
                break
        self._patients[patient_id] = ward
        while len(self._patients) > MAX_CACHED_PATIENTS:
            del self._patients[next(iter(self._patients))]
        return ward

    async def _ward_of_location(self, location_id: str) -> str | None:
        if location_id in self._locations:
            return self._locations[location_id]
        current: str | None = location_id
        ward: str | None = None
        for _ in range(MAX_PART_OF_DEPTH):
            if current is None:
                break
            location = await self._fhir.read("Location", current)
            if _is_ward(location):
                ward = current
                break
            parent = relative_ref((location.get("partOf") or {}).get("reference"))
            current = parent.split("/", 1)[1] if parent and parent.startswith("Location/") else None
        self._locations[location_id] = ward
        return ward
