"""Fixtures for the ward clients: a recording FHIR/token server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from ward_fhir_double import FhirDouble, start_double


@pytest.fixture
async def fhir_double() -> AsyncIterator[FhirDouble]:
    double, runner = await start_double()
    try:
        yield double
    finally:
        await runner.cleanup()
