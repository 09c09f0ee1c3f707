"""A bare sandbox hub for publisher tests (no FHIR server), its key, and how to read it back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from ably import AblyRest

from wardsync.core.heartbeats import POKE_MESSAGE_NAME
from wardsync.core.pokes import Poke
from wardsync.sandbox.hub import Hub

KEY_NAME, KEY_SECRET = "relay.test", "test-only-secret-0123456789"
KEY = f"{KEY_NAME}:{KEY_SECRET}"


def draft(rid: str, version: str = "1") -> Poke:
    """An Observation poke before the relay numbers it."""
    return Poke(type="LAB_RESULT_READY", resource_type="Observation", id=rid,
                version_id=version, patient_id="p1", seq=1)


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    running = Hub({KEY_NAME: KEY_SECRET})
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def channel_history(hub: Hub, channel: str, key: str = KEY,
                          name: str | None = POKE_MESSAGE_NAME) -> list[Any]:
    """Every message named `name` (None: any) the hub kept on `channel`, oldest first (the
    real SDK's REST history); `key`: an API key of that hub (the sandbox's `hub_key` for the
    sandbox's hub). Pokes by default: relay heartbeats are left out."""
    rest = AblyRest(key=key, use_token_auth=True, endpoint="127.0.0.1", port=hub.port,
                    tls=False)
    try:
        page = await rest.channels.get(channel).history(direction="forwards", limit=1000)
        return [m for m in page.items if name is None or m.name == name]
    finally:
        await rest.close()
