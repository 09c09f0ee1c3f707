"""The sandbox bedside devices: write rounds of vital signs over the FHIR REST API.

Monitors on a ward post each measurement as its own vital-signs Observation (FHIR R4
vitalsigns.html); a round (heart rate, respiratory rate, SpO2, temperature, blood pressure,
ACVPU, supplemental oxygen) is seven creates.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from wardsync.core import codes
from wardsync.core.resources import first_code

from .fhir_writer import BackendSystem
from .observations import VITAL_SLUGS, VitalSigns, vital_sign_observations

__all__ = ["VitalSigns", "WardDevices"]


class WardDevices(BackendSystem):
    """Writes vital-sign rounds as a confidential client_credentials client."""

    async def post_vitals(
        self,
        patient_id: str,
        vitals: VitalSigns,
        *,
        encounter_id: str | None = None,
        effective: datetime | None = None,
        round_id: str | None = None,
    ) -> list[dict]:
        """POST one round of vital signs; returns the Observations as the server stored them.

        If a write fails, calling again with the same `round_id` resumes the round instead of
        writing its first measurements twice. Raises `FhirError` when the server refuses.
        """
        observations = vital_sign_observations(
            patient_id, vitals, effective=effective or self._now(), encounter_id=encounter_id
        )
        items = [(VITAL_SLUGS[first_code(o["code"], codes.LOINC) or ""], o) for o in observations]
        return await self._writer.create_batch(round_id or uuid.uuid4().hex, items)
