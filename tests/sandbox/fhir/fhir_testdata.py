"""Test data for the sandbox FHIR server tests: fixed tokens, a fake clock, synthetic resources.

Obviously fake people and values only.
"""

from __future__ import annotations

import time
from typing import Any

from wardsync.sandbox.grants import Grant

FAR_FUTURE = time.time() + 10 * 365 * 86400


def _grant(name: str, *scopes: str, expires_at: float = FAR_FUTURE) -> Grant:
    return Grant(client_id=name, subject=f"Practitioner/{name}", scopes=frozenset(scopes),
                 expires_at=expires_at)


# token string -> what it allows
GRANTS: dict[str, Grant] = {
    "all": _grant("all", "system/*.cruds"),
    "reader": _grant("reader", "user/*.rs"),
    "obs-only": _grant("obs-only", "user/Observation.rs"),
    "obs-search-only": _grant("obs-search-only", "user/Observation.s"),
    "dr-only": _grant("dr-only", "user/DiagnosticReport.rs"),
    "writer-no-create": _grant("writer-no-create", "user/Observation.ru"),
    "expired": _grant("expired", "system/*.cruds", expires_at=1.0),
}


def verify_bearer(token: str | None) -> Grant | None:
    """Stand-in for the OAuth server's token check: fixed tokens only."""
    return GRANTS.get(token) if token is not None else None


class FakeMonotonic:
    """A monotonic clock tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def auth(token: str = "all") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ------------------------------------------------------------------ synthetic resources
# Obviously fake people and values only.

LOINC = "http://loinc.org"
MRN = "urn:wardsync:mrn"


def patient(family: str = "Testpatient", given: str = "Alpha", mrn: str = "MRN-0001"
            ) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": MRN, "value": mrn}],
            "name": [{"family": family, "given": [given]}], "gender": "unknown"}


def observation(patient_id: str, code: str = "2823-3", value: float = 4.1,
                when: str = "2026-11-02T09:00:00Z", status: str = "final",
                category: str = "laboratory", encounter: str | None = None) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "status": status,
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": category}]}],
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": "mmol/L"},
    }
    if encounter:
        obs["encounter"] = {"reference": f"Encounter/{encounter}"}
    return obs
