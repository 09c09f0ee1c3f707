"""Fixtures that run the real embedded sandbox on loopback and sign in its demo clinician."""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from wardsync.auth.demo_login import DemoBrowser
from wardsync.auth.login import sign_in
from wardsync.auth.session import Session
from wardsync.sandbox.fhir.store import FhirStore
from wardsync.sandbox.hub import HubConfig
from wardsync.sandbox.server import Sandbox, SandboxConfig
from wardsync.sandbox.ward.seed import build_ward

DESKTOP_CLIENT = "wardsync-desktop"
SCOPES = ("openid", "fhirUser", "offline_access", "user/*.cruds")
SEED = 7


def fast_hub_config() -> HubConfig:
    """Hub timings shrunk so reconnect and presence tests take seconds, not minutes."""
    return HubConfig(max_idle_interval_ms=3000, heartbeat_interval_s=1.0, presence_grace_s=2.0)


@pytest.fixture(scope="session")
def seeded_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory holding the seeded ward, built once and copied per test."""
    path = tmp_path_factory.mktemp("sandbox-template")
    store = FhirStore(path / "fhir.sqlite3")
    store.load(build_ward(SEED, now=datetime.now(UTC)))
    store.close()
    return path


@contextlib.asynccontextmanager
async def running_sandbox(
    seeded_data_dir: Path, tmp_path: Path, **overrides: Any
) -> AsyncIterator[Sandbox]:
    """A sandbox on a copy of the seeded ward; `overrides` go to SandboxConfig."""
    data = tmp_path / f"sandbox-{uuid.uuid4().hex[:6]}"
    shutil.copytree(seeded_data_dir, data)
    # No relay heartbeats unless a test asks: on fake time, real-time heartbeats would make
    # a workstation's timeline depend on how fast the machine runs.
    config = {"data_dir": data, "simulator": False, "seed": SEED,
              "hub_config": fast_hub_config(), "relay_heartbeat_s": 0.0, **overrides}
    sb = Sandbox(SandboxConfig(**config))
    await sb.start()
    try:
        yield sb
    finally:
        await sb.stop()


@pytest.fixture
async def sandbox(seeded_data_dir: Path, tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with running_sandbox(seeded_data_dir, tmp_path) as sb:
        yield sb


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


async def demo_sign_in(
    sandbox: Sandbox, http: httpx.AsyncClient, username: str = "demo.clinician"
) -> Session:
    """The full SMART code + PKCE flow through the loopback redirect, approved as a demo user."""
    config, tokens = await sign_in(
        http, fhir_base=sandbox.fhir_base, client_id=DESKTOP_CLIENT, scopes=SCOPES,
        open_url=DemoBrowser(http, username=username, password="demo"),
    )
    return Session(tokens, http=http, config=config, client_id=DESKTOP_CLIENT)


@pytest.fixture
async def clinician(sandbox: Sandbox, http: httpx.AsyncClient) -> AsyncIterator[Session]:
    session = await demo_sign_in(sandbox, http)
    yield session
    await session.aclose()


@pytest.fixture
async def nurse(sandbox: Sandbox, http: httpx.AsyncClient) -> AsyncIterator[Session]:
    """The demo ward nurse, signed in (a second user on the ward)."""
    session = await demo_sign_in(sandbox, http, "demo.nurse")
    yield session
    await session.aclose()
