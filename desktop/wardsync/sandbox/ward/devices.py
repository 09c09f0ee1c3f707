"""The sandbox bedside devices: write rounds of vital signs over the FHIR REST API.

Monitors on a ward post each measurement as its own vital-signs Observation (FHIR R4
vitalsigns.html); a round (heart rate, respiratory rate, SpO2, temperature, blood pressure,
ACVPU, supplemental oxygen) is seven creates.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from .fhir_writer import FhirRestWriter
from .observations import VITAL_SLUGS, VitalSigns, vital_sign_observations

__all__ = ["VitalSigns", "WardDevices"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class WardDevices:
    """Writes vital-sign rounds as a confidential client_credentials client."""

    def __init__(
        self,
        *,
        fhir_base: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        http: httpx.AsyncClient | None = None,
        now: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._writer = FhirRestWriter(
            fhir_base=fhir_base,
            token_url=token_url,
            client_id=client_id,
            client_secret=client_secret,
            http=http,
            clock=monotonic,
        )
        self._now = now

    async def aclose(self) -> None:
        """Close the HTTP client if this client created it."""
        await self._writer.aclose()

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
        writing its first measurements twice. Raises `FhirWriteError` when the server refuses.
        """
        observations = vital_sign_observations(
            patient_id, vitals, effective=effective or self._now(), encounter_id=encounter_id
        )
        items = [(VITAL_SLUGS[o["code"]["coding"][0]["code"]], o) for o in observations]
        return await self._writer.create_batch(round_id or uuid.uuid4().hex, items)
