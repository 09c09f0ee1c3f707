"""Fixtures: a real sandbox FHIR server on 127.0.0.1 (port 0) and httpx clients for it.

Tokens are fixed strings mapped to Grants here; the real OAuth server is not involved.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from aiohttp import web
from fhir_testdata import FakeMonotonic, auth, verify_bearer

from wardsync.sandbox.fhir import FhirApi, FhirFaults, FhirStore


@dataclass
class FhirServer:
    """A running server: its store, fault switch, fault clock and FHIR base URL."""

    store: FhirStore
    faults: FhirFaults
    clock: FakeMonotonic
    base: str
    runner: web.AppRunner = field(repr=False)


@pytest.fixture
def store() -> Iterator[FhirStore]:
    s = FhirStore(":memory:")
    yield s
    s.close()


@pytest.fixture
async def fhir_server(store: FhirStore) -> AsyncIterator[FhirServer]:
    clock = FakeMonotonic()
    faults = FhirFaults(clock=clock)
    app = web.Application()
    FhirApi(store, verify_bearer, faults=faults).install(app, "/fhir")
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield FhirServer(store, faults, clock, f"http://{host}:{port}/fhir", runner)
    await runner.cleanup()


@pytest.fixture
async def client(fhir_server: FhirServer) -> AsyncIterator[httpx.AsyncClient]:
    """A client holding the all-access token."""
    async with httpx.AsyncClient(base_url=fhir_server.base, headers=auth("all"),
                                 timeout=10.0) as c:
        yield c


@pytest.fixture
async def anon(fhir_server: FhirServer) -> AsyncIterator[httpx.AsyncClient]:
    """A client with no token."""
    async with httpx.AsyncClient(base_url=fhir_server.base, timeout=10.0) as c:
        yield c


