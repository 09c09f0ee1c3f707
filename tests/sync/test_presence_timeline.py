"""Presence and record-lock timelines on fake time, with exact timestamps.

Two workstations (demo.clinician and demo.nurse) share ONE `FakeTimer`, so both read the same
clock, as two synchronised hospital workstations do; presence goes through the real hub and
the real ably SDK in real time. Nothing that waits on the presence service's timer (claim
settle, echo timeout, idle expiry and renewal, the disconnect rule, the leave grace) moves
until the test advances it, so each step happens at a stated instant. The live behaviour
(who is seen, ties, the hub's grace for a vanished member, a failed resume) stays in
tests/sync/test_presence_live.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx

from tests.faults.proxy import FaultProxy
from tests.sync.presence_station import presence_station
from tests.waiting import wait_for as eventually
from wardsync.auth.session import Session
from wardsync.core.clock import DEFAULT_FAKE_WALL_S
from wardsync.core.connection_status import ConnectionState
from wardsync.core.presence import EDITING, EditLockEnded, PresenceChanged
from wardsync.core.timer import FakeTimer
from wardsync.sandbox.server import Sandbox
from wardsync.sync.presence import (
    ClaimOutcome,
    PresenceHandle,
    PresenceService,
)
from wardsync.sync.workstation import Workstation

TASK = ("Task", "task-03-1")
CHANNEL = "record:Task:task-03-1"
SETTLE_S = 0.7  # longer than every periodic wait here, so it is recognisable among them
IDLE_S = 12.0
TIMEOUT_S = 5.0


def station(sandbox: Sandbox, session: Session, http: httpx.AsyncClient,
            timer: FakeTimer, *, realtime_endpoint: str | None = None,
            **presence: Any) -> contextlib.AbstractAsyncContextManager[
                tuple[Workstation, PresenceService]]:
    """A live workstation on fake time, with this module's presence periods unless given."""
    options = {"lock_idle_s": IDLE_S, "claim_settle_s": SETTLE_S,
               "claim_timeout_s": TIMEOUT_S, "leave_grace_s": 2.0, **presence}
    return presence_station(
        sandbox, session, http, timer=timer, realtime_endpoint=realtime_endpoint,
        workstation={"realtime_retry_ms": 200, "realtime_request_timeout_ms": 1000},
        **options)


def names(handle: PresenceHandle) -> list[str]:
    return [m.name for m in handle.others()]


def ended(ws: Workstation) -> list[EditLockEnded]:
    got: list[EditLockEnded] = []
    ws.bus.subscribe(EditLockEnded, got.extend)
    return got


async def advance_to(timer: FakeTimer, t: float) -> None:
    await timer.advance(t - timer.monotonic())
    assert timer.monotonic() == t


async def claim_at_once(timer: FakeTimer, handle: PresenceHandle) -> ClaimOutcome:
    """Claim now: the echo comes back through the hub (real time), then exactly SETTLE_S of
    the timer passes before the outcome."""
    settles = timer.requested.count(SETTLE_S)
    claiming = asyncio.ensure_future(handle.claim("task"))
    await eventually(lambda: timer.requested.count(SETTLE_S) > settles or claiming.done(),
                     timeout_s=10.0, what="the claim's echo")
    start = timer.monotonic()
    await timer.advance(SETTLE_S - 0.001)
    assert not claiming.done(), "decided before the settle time"
    await timer.advance(0.001)
    assert timer.monotonic() == start + SETTLE_S
    return await claiming


def ms(timer: FakeTimer, t: float) -> int:
    """The wall clock in ms at fake monotonic time `t`, as the presence service reads it."""
    return int((DEFAULT_FAKE_WALL_S + t) * 1000)


async def test_an_idle_claim_is_renewed_by_input_and_lapses_exactly_at_its_expiry(
        sandbox: Sandbox, clinician: Session, nurse: Session, http: httpx.AsyncClient) -> None:
    timer = FakeTimer()
    async with station(sandbox, clinician, http, timer) as (ws_a, doctor), \
            station(sandbox, nurse, http, timer) as (_ws_b, ward_nurse):
        told = ended(ws_a)
        a, b = doctor.join(*TASK), ward_nurse.join(*TASK)
        await eventually(lambda: names(a) and names(b), what="both present")
        assert (await claim_at_once(timer, a)).reason == "granted"  # claimed at 0, held at 0.7
        lock = a.lock("task")
        assert (lock.status, lock.claimed_at_ms, lock.expires_at_ms) == (
            "held", ms(timer, 0.0), ms(timer, IDLE_S))
        await eventually(lambda: b.lock("task").blocked, what="the nurse seeing the lock")
        assert b.lock("task").expires_at_ms == ms(timer, IDLE_S)

        await advance_to(timer, 1.0)
        a.touch("task")  # input at 1.0: the claim may now last until 13.0
        # Renewed at most every quarter of the idle time: once 3/4 of it is left (at 3.0).
        await advance_to(timer, 2.75)
        assert a.lock("task").expires_at_ms == ms(timer, IDLE_S)
        await advance_to(timer, 3.0)
        assert a.lock("task").expires_at_ms == ms(timer, 1.0 + IDLE_S)
        await eventually(lambda: b.lock("task").expires_at_ms == ms(timer, 1.0 + IDLE_S),
                         what="the renewed expiry announced to the nurse")

        await advance_to(timer, IDLE_S)  # the first expiry passes: renewed, still held
        assert told == [] and a.lock("task").here and b.lock("task").blocked
        await advance_to(timer, 1.0 + IDLE_S - 0.25)
        assert told == []
        await advance_to(timer, 1.0 + IDLE_S)
        assert [(e.channel, e.component, e.reason) for e in told] == [(CHANNEL, "task", "idle")]
        assert a.lock("task").holder is None
        # The nurse applies the same announced expiry at the same instant.
        assert b.lock("task").holder is None
        assert (await claim_at_once(timer, b)).reason == "granted"
        a.close()
        b.close()


async def test_a_frozen_holders_claim_lapses_for_others_exactly_at_its_announced_expiry(
        sandbox: Sandbox, clinician: Session, nurse: Session, http: httpx.AsyncClient) -> None:
    # The doctor's lock timer never runs (a hung holder): the nurse still expires the claim at
    # the time it announced, without any presence event from the holder, and repaints.
    timer = FakeTimer()
    async with station(sandbox, clinician, http, timer, tick_s=3600) as (_a, doctor), \
            station(sandbox, nurse, http, timer) as (ws_b, ward_nurse):
        a, b = doctor.join(*TASK), ward_nurse.join(*TASK)
        await eventually(lambda: names(a) and names(b), what="both present")
        assert (await claim_at_once(timer, a)).granted
        await eventually(lambda: b.lock("task").blocked, what="the nurse seeing the lock")
        assert b.lock("task").expires_at_ms == ms(timer, IDLE_S)
        changed: list[PresenceChanged] = []
        ws_b.bus.subscribe(PresenceChanged, changed.extend)
        await advance_to(timer, IDLE_S - 0.25)
        assert b.lock("task").blocked and changed == []
        await advance_to(timer, IDLE_S)
        assert b.lock("task").holder is None
        assert [c.channel for c in changed] == [CHANNEL]  # windows told to repaint, once
        assert [m.state for m in b.others()] == [EDITING]  # the claim is still announced...
        assert (await claim_at_once(timer, b)).granted  # ...but no longer holds
        a.close()
        b.close()


async def test_a_claim_without_an_echo_is_granted_offline_exactly_at_the_timeout(
        sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient) -> None:
    timer = FakeTimer()
    async with FaultProxy("127.0.0.1", sandbox.hub.port) as network, \
            station(sandbox, clinician, http, timer,
                    realtime_endpoint=network.endpoint) as (_ws, doctor):
        a = doctor.join(*TASK)
        await eventually(lambda: a.presence.synced, what="presence synced")
        network.blackhole()  # the link is silent: the claim is sent, no echo comes back
        claiming = asyncio.ensure_future(a.claim("task"))
        await advance_to(timer, TIMEOUT_S - 0.001)
        assert not claiming.done()
        await advance_to(timer, TIMEOUT_S)
        outcome = await claiming
        assert (outcome.granted, outcome.reason) == (True, "offline")
        assert a.lock("task").status == "offline"
        await network.heal()
        a.close()


async def test_a_holder_cut_off_from_realtime_ends_its_claim_exactly_lock_disconnect_s_later(
        sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient) -> None:
    timer = FakeTimer()
    disconnect_s = 4.0
    async with FaultProxy("127.0.0.1", sandbox.hub.port) as network, \
            station(sandbox, clinician, http, timer, realtime_endpoint=network.endpoint,
                    lock_disconnect_s=disconnect_s) as (ws, doctor):
        told = ended(ws)
        a = doctor.join(*TASK)
        await eventually(lambda: a.presence.synced, what="presence synced")
        assert (await claim_at_once(timer, a)).reason == "granted"
        await advance_to(timer, 1.0)
        await network.refuse()
        network.drop_all()
        await eventually(lambda: ws.status.state is not ConnectionState.LIVE, timeout_s=10.0,
                         what="the SDK reporting the cut")
        assert ws.status.realtime_down_since == 1.0
        await advance_to(timer, 1.0 + disconnect_s - 0.25)
        assert told == [] and a.lock("task").status == "held"
        await advance_to(timer, 1.0 + disconnect_s)
        assert [e.reason for e in told] == ["disconnected"]
        assert a.lock("task").holder is None
        await network.heal()
        a.close()


async def test_presence_is_left_exactly_leave_grace_after_the_last_window_closed(
        sandbox: Sandbox, clinician: Session, nurse: Session, http: httpx.AsyncClient) -> None:
    timer = FakeTimer()
    async with station(sandbox, clinician, http, timer, leave_grace_s=2.0) as (_a, doctor), \
            station(sandbox, nurse, http, timer) as (_b, ward_nurse):
        chart, lab_window = doctor.join(*TASK), doctor.join(*TASK)
        seen = ward_nurse.join(*TASK)
        await eventually(lambda: names(seen) == ["Dr Demo Clinician"], what="the doctor seen")
        await advance_to(timer, 1.0)
        chart.close()
        await advance_to(timer, 10.0)
        assert CHANNEL in doctor.channels  # another window still shows the record
        lab_window.close()  # the last one, at 10.0
        await advance_to(timer, 11.999)
        assert CHANNEL in doctor.channels and names(seen) == ["Dr Demo Clinician"]
        reopened = doctor.join(*TASK)  # back within the grace: nothing left, nothing entered
        await advance_to(timer, 20.0)
        assert CHANNEL in doctor.channels and names(seen) == ["Dr Demo Clinician"]
        reopened.close()  # at 20.0
        await advance_to(timer, 21.999)
        assert CHANNEL in doctor.channels
        await advance_to(timer, 22.0)
        assert CHANNEL not in doctor.channels
        await eventually(lambda: names(seen) == [], what="the nurse seeing the doctor leave")
        seen.close()
