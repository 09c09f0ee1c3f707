"""A live workstation with its presence service, against the real sandbox (presence tests)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tests.waiting import wait_for as eventually
from wardsync.auth.session import Session
from wardsync.core.connection_status import ConnectionState
from wardsync.core.metrics import MemoryMetrics
from wardsync.core.timer import Timer
from wardsync.sandbox.server import Sandbox
from wardsync.sync.presence import PresenceService, identity_from_tokens
from wardsync.sync.workstation import Workstation, WorkstationConfig


@contextlib.asynccontextmanager
async def presence_station(
    sandbox: Sandbox, session: Session, http: httpx.AsyncClient, *,
    timer: Timer | None = None, realtime_endpoint: str | None = None,
    workstation: dict[str, Any] | None = None, **presence: Any,
) -> AsyncIterator[tuple[Workstation, PresenceService]]:
    """A workstation once live, and its presence service (`presence` are PresenceService
    options, `workstation` extra WorkstationConfig fields; the hub reached directly or
    through `realtime_endpoint`, e.g. a fault proxy)."""
    info = sandbox.ready_info()
    cfg = WorkstationConfig(
        fhir_base=info["fhir_base"], ward=info["ward"],
        realtime_endpoint=realtime_endpoint or info["ably_endpoint"],
        realtime_token_url=info["ably_token_url"], **(workstation or {}))
    ws = Workstation(cfg, session, metrics=MemoryMetrics(), http=http, timer=timer,
                     schedule=asyncio.get_running_loop().call_soon)
    await ws.start()
    service = PresenceService(ws, identity_from_tokens(session.tokens), **presence)
    await service.start()
    try:
        await eventually(lambda: ws.status.state is ConnectionState.LIVE, what="live")
        yield ws, service
    finally:
        await service.aclose()
        await ws.aclose()
