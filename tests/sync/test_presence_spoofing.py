"""Presence spoofing and lock theft, performed over loopback (docs/security/realtime-and-local.md).

The attacker is a signed-in nurse who skips the app: a raw `ably==3.1.4` client with the
realtime token the nurse's own FHIR token buys at the sandbox's exchange. She enters a record's
presence calling herself "Dr Head Of Cardiology" and claims the task lock with `claimedAt: 0`
and `expiresAt: 2^53-1` while the doctor is editing. The doctor's workstation and an
onlooker (the nurse's own app) run the real presence service against the real hub.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from ably import AblyRealtime

from tests.sync.presence_station import presence_station
from tests.waiting import wait_for as eventually
from wardsync.auth.session import Session
from wardsync.core.locks import MAX_CLAIM_IDLE_S, MAX_CLAIM_LEAD_MS
from wardsync.core.presence import EditLockEnded
from wardsync.sandbox.server import Sandbox
from wardsync.sync.presence import PresenceService, identity_from_tokens
from wardsync.sync.realtime_token import RealtimeTokenExchange
from wardsync.sync.workstation import Workstation, WorkstationConfig

TASK = ("Task", "task-03-1")
CHANNEL = "record:Task:task-03-1"
FAST_SDK = {"realtime_request_timeout": 3000, "disconnected_retry_timeout": 300,
            "suspended_retry_timeout": 1000}
FOREVER_MS = 2**53 - 1


@contextlib.asynccontextmanager
async def rogue_client(sandbox: Sandbox, session: Session, http: httpx.AsyncClient
                       ) -> AsyncIterator[Any]:
    """A raw SDK client holding `session`'s realtime token, attached to the task's channel."""
    exchange = RealtimeTokenExchange(http, sandbox.ready_info()["ably_token_url"], session)

    async def auth_callback(_params: dict[str, Any]) -> dict[str, Any]:
        return await exchange()

    client = AblyRealtime(endpoint=f"{sandbox.ready_info()['ably_endpoint']}/", tls=False,
                          auth_callback=auth_callback, **FAST_SDK)
    try:
        channel = client.channels.get(CHANNEL)
        await channel.attach()
        yield channel
    finally:
        await client.close()


def forged(practitioner: str, conn: str) -> dict[str, Any]:
    return {"v": 1, "practitioner": practitioner, "name": "Dr Head Of Cardiology",
            "role": "Doctor", "state": "editing", "since": 0, "conn": conn,
            "claims": [{"component": "task", "claimedAt": 0, "expiresAt": FOREVER_MS}]}


async def test_a_forged_name_and_an_antedated_claim_neither_fool_nor_take_the_lock(
        sandbox: Sandbox, clinician: Session, nurse: Session, http: httpx.AsyncClient) -> None:
    async with presence_station(sandbox, clinician, http, leave_grace_s=0.3) as (ws_a, doctor), \
            presence_station(sandbox, nurse, http, leave_grace_s=0.3) as (_ws_b, onlooker):
        told: list[EditLockEnded] = []
        ws_a.bus.subscribe(EditLockEnded, told.extend)
        editing, watching = doctor.join(*TASK), onlooker.join(*TASK)
        await eventually(lambda: editing.others() and watching.others(), what="both present")
        assert (await editing.claim("task")).reason == "granted"
        await eventually(lambda: watching.lock("task").blocked, what="the lock seen")
        held_at = watching.lock("task").ordered_at_ms
        assert held_at is not None

        async with rogue_client(sandbox, nurse, http) as channel:
            conn = channel.ably.connection.connection_manager.connection_id
            await channel.presence.enter(forged("demo-nurse", conn))
            await eventually(lambda: len(editing.others()) == 2 and all(
                m.verified for m in editing.others()), what="the rogue seen and named")

            # Shown as who the token says she is, on every screen; never the forged name.
            for handle in (editing, watching):
                shown = {m.name for m in handle.others()} | {
                    handle.lock("task").holder.name}
                assert "Dr Head Of Cardiology" not in shown, shown
            rogue = next(m for m in editing.others() if m.connection_id == conn)
            assert (rogue.name, rogue.role) == ("Nurse Demo Nightingale", "Nurse")

            # The antedated claim ranks by the hub's timestamp: after the doctor's.
            for handle in (editing, watching):
                lock = handle.lock("task")
                assert lock.holder.client_id == "demo-clinician", handle
            assert editing.lock("task").here and told == []
            assert watching.lock("task").ordered_at_ms == held_at

            # When the doctor finishes, the rogue's claim holds, but not forever.
            editing.release("task")
            await eventually(lambda: watching.lock("task").holder is not None
                             and watching.lock("task").holder.connection_id == conn,
                             what="the rogue's claim holding once the doctor is done")
            lock = watching.lock("task")
            assert lock.expires_at_ms is not None and lock.ordered_at_ms is not None
            assert lock.expires_at_ms <= lock.ordered_at_ms + MAX_CLAIM_LEAD_MS < FOREVER_MS

            # Posing as the doctor's practitioner id: unreadable, and its claim counts for
            # nothing.
            await channel.presence.update(forged("demo-clinician", conn))
            await eventually(lambda: watching.lock("task").holder is None,
                             what="the impersonating claim dropped")
            rogue = next(m for m in watching.others() if m.connection_id == conn)
            assert rogue.data is None and rogue.problem == "practitioner_mismatch"
            assert rogue.name == "Nurse Demo Nightingale"
            assert (await editing.claim("task")).reason == "granted"
        assert told == []
        editing.close()
        watching.close()


async def test_no_workstation_announces_claims_past_the_cap(
        sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient) -> None:
    info = sandbox.ready_info()
    ws = Workstation(WorkstationConfig(fhir_base=info["fhir_base"], ward=info["ward"]),
                     clinician, http=http)
    try:
        with pytest.raises(ValueError):
            PresenceService(ws, identity_from_tokens(clinician.tokens),
                            lock_idle_s=MAX_CLAIM_IDLE_S + 1)
        assert MAX_CLAIM_IDLE_S * 1000 < MAX_CLAIM_LEAD_MS  # an honest claim is never cut
        PresenceService(ws, identity_from_tokens(clinician.tokens), lock_idle_s=MAX_CLAIM_IDLE_S)
    finally:
        await ws.aclose()
