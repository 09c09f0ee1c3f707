"""Fixtures for the ward clients: a recording FHIR/token server on loopback."""

from __future__ import annotations

import asyncio
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


@pytest.fixture(autouse=True)
async def no_dangling_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks running (the simulator must own and await its task)."""
    yield
    current = asyncio.current_task()
    for _ in range(50):  # let transports finish closing
        left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not left:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"tasks left running: {[t.get_name() for t in left]}")
