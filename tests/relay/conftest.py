"""Relay test fixtures: the real sandbox without its own relay, a bare hub, and the relay's
FHIR access."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.relay.local_hub import hub  # noqa: F401 (fixture: a bare hub)
from tests.sandbox_fixtures import running_sandbox
from wardsync.fhir.client import FhirClient
from wardsync.fhir.client_credentials import ClientCredentials
from wardsync.relay.backend_auth import discover
from wardsync.relay.fhir_access import RelayFhir
from wardsync.sandbox.server import Sandbox


@pytest.fixture
async def ward(seeded_data_dir: Path, tmp_path: Path) -> AsyncIterator[Sandbox]:
    """The sandbox without its own relay (`--no-relay`): the relay under test is the only one
    poking."""
    async with running_sandbox(seeded_data_dir, tmp_path, relay=False) as sb:
        yield sb


@pytest.fixture
async def relay_fhir(ward: Sandbox) -> AsyncIterator[RelayFhir]:
    """The relay's FHIR access with the sandbox's `wardsync-relay` client credentials."""
    info = ward.ready_info()
    async with httpx.AsyncClient(timeout=10.0) as http:
        endpoints = await discover(http, info["fhir_base"])
        tokens = ClientCredentials(
            token_url=endpoints.token_endpoint, client_id=info["relay_client"]["client_id"],
            client_secret=info["relay_client"]["client_secret"], http=http, scope=None)
        client = FhirClient(info["fhir_base"], tokens, http=http, require_tls=False)
        yield RelayFhir(client)
