"""The sandbox laboratory system: writes lab results over the FHIR REST API.

A laboratory information system publishes a panel as one Observation per test followed by
the DiagnosticReport that groups them (FHIR R4 diagnosticreport.html#scope), and corrects a
released report by updating the Observations and setting the report to `corrected`
(diagnosticreport.html status codes: final -> corrected). Every value gets its reference range
and interpretation flag from `lab_ranges`, the same table the seed uses.
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timedelta

from wardsync.core import codes
from wardsync.core.resources import parse_reference

from .fhir_writer import BackendSystem
from .observations import (
    corrected_lab_observation,
    fhir_datetime,
    lab_observation,
    lab_report,
    lab_test_code,
)

# Time from specimen collection to release when the caller does not say.
DEFAULT_TURNAROUND = timedelta(minutes=45)
# DiagnosticReport statuses a laboratory releases new results with (diagnosticreport.html).
RELEASE_STATUSES = frozenset({"partial", "preliminary", "final"})


def check_panel_values(panel_code: str, values: dict[str, float]) -> None:
    """Refuse values that are not finite numbers for tests of `panel_code` (`ValueError`)."""
    tests = codes.LAB_PANELS.get(panel_code)
    if tests is None:
        raise ValueError(f"unknown lab panel code {panel_code!r}")
    if not values:
        raise ValueError("a panel needs at least one result value")
    allowed = {t.code for t in tests}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f"tests {unknown} are not part of panel {panel_code}")
    for code, value in values.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"value of test {code} must be a finite number")


class LabSystem(BackendSystem):
    """Writes laboratory panels and corrections as a confidential client_credentials client."""

    async def post_panel(
        self,
        patient_id: str,
        panel_code: str,
        values: dict[str, float],
        *,
        status: str = "final",
        encounter_id: str | None = None,
        accession: str | None = None,
        collected: datetime | None = None,
    ) -> tuple[dict, list[dict]]:
        """POST one Observation per value, then the DiagnosticReport referencing them.

        `values` maps LOINC test codes of the panel to numbers in the test's UCUM unit.
        Returns (report, observations) as the server stored them. If a write fails, calling
        again with the same `accession` reuses the Observations already created.
        Raises `ValueError` for bad input and `FhirError` when the server refuses.
        """
        check_panel_values(panel_code, values)
        if status not in RELEASE_STATUSES:
            raise ValueError(f"status must be one of {sorted(RELEASE_STATUSES)}")
        accession = accession or f"LAB-{uuid.uuid4().hex[:12].upper()}"
        issued = self._now()
        collected = collected or issued - DEFAULT_TURNAROUND
        obs_status = "final" if status == "final" else "preliminary"
        items = [
            (
                f"{code}={value!r}",
                lab_observation(
                    patient_id,
                    code,
                    value,
                    effective=collected,
                    issued=issued,
                    status=obs_status,
                    encounter_id=encounter_id,
                ),
            )
            for code, value in values.items()
        ]
        observations = await self._writer.create_batch(accession, items)
        report = lab_report(
            patient_id,
            panel_code,
            [o["id"] for o in observations],
            effective=collected,
            issued=issued,
            status=status,
            encounter_id=encounter_id,
            accession=accession,
        )
        stored = await self._writer.create(report)
        return stored, observations

    async def correct_report(
        self, report_id: str, values: dict[str, float]
    ) -> tuple[dict, list[dict]]:
        """Correct released results: PUT the changed Observations, then the report as corrected.

        `values` maps LOINC test codes of the report to their corrected values. Every PUT
        carries If-Match with the version just read; a concurrent change raises `Conflict`.
        Returns (report, observations): the report and all its results as now stored.
        """
        if not values:
            raise ValueError("a correction needs at least one value")
        report = await self._writer.read("DiagnosticReport", report_id)
        observations = [
            await self._writer.read("Observation", _observation_id(r.get("reference", "")))
            for r in report.get("result", [])
        ]
        by_code = {lab_test_code(o): i for i, o in enumerate(observations)}
        missing = sorted(set(values) - set(by_code))
        if missing:
            raise ValueError(f"report {report_id} has no results for tests {missing}")
        panel_code = _panel_code(report)
        check_panel_values(panel_code, values)
        issued = self._now()
        for code, value in values.items():
            i = by_code[code]
            corrected = corrected_lab_observation(observations[i], value, issued=issued)
            observations[i] = await self._writer.update(corrected)
        report["status"] = "corrected"
        report["issued"] = fhir_datetime(issued)
        stored = await self._writer.update(report)
        return stored, observations


def _observation_id(ref: str) -> str:
    """The logical id in `Observation/<id>` (also absolute or versioned forms)."""
    literal = parse_reference(ref)
    if literal is None or literal.type != "Observation":
        raise ValueError("the report refers to a result that is not an Observation")
    return literal.id


def _panel_code(report: dict) -> str:
    for coding in report.get("code", {}).get("coding", []):
        if coding.get("system") == codes.LOINC and coding.get("code") in codes.LAB_PANELS:
            return coding["code"]
    raise ValueError("the report is not one of the known laboratory panels")
