"""Fixtures: a real OAuth server on loopback per test (see oauth_driver)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import httpx
import pytest
from oauth_driver import FakeClock, OAuthBed, build_server, start_oauth_app


@pytest.fixture
def client_secrets() -> dict[str, str]:
    return {"lab-system": secrets.token_urlsafe(24), "ward-devices": secrets.token_urlsafe(24),
            "wardsync-relay": secrets.token_urlsafe(24)}


@pytest.fixture
async def oauth(client_secrets: dict[str, str]) -> AsyncIterator[OAuthBed]:
    clock = FakeClock()
    holder: dict[str, str] = {}
    server = build_server(clock, holder, client_secrets, signing_key=secrets.token_bytes(32))
    runner, base = await start_oauth_app(server)
    holder["base"] = base
    try:
        async with httpx.AsyncClient(base_url=base, follow_redirects=False) as http:
            yield OAuthBed(server, http, clock, base, client_secrets)
    finally:
        await runner.cleanup()
