"""Presence and record locks between two independent workstations (demo.clinician and
demo.nurse, each with its own Workstation and realtime connection) on one sandbox: the real
hub, the real ably SDK, shrunk timings. The timelines of claims (settle, echo timeout, idle
expiry and renewal, the disconnect rule, the leave grace) are asserted on fake time in
tests/sync/test_presence_timeline.py."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
import pytest

from tests.faults.proxy import FaultProxy
from tests.sandbox_fixtures import demo_sign_in, running_sandbox
from tests.sync.presence_station import presence_station
from tests.sync.test_sync_live import eventually
from wardsync.auth.session import Session
from wardsync.core.connection_status import ConnectionState
from wardsync.core.presence import EDITING, EditLockEnded, PresenceChanged
from wardsync.core.timer import SystemTimer
from wardsync.sandbox.hub import HubConfig
from wardsync.sandbox.hub import state as hub_state
from wardsync.sandbox.server import Sandbox
from wardsync.sync.presence import PresenceService, identity_from_tokens
from wardsync.sync.workstation import Workstation, WorkstationConfig

PATIENT = ("Patient", "pat-03")
TASK = ("Task", "task-03-1")


class PinnableHubClock:
    """The hub's clock (its presence timestamps), pinnable: two claims the hub stamps in the
    very same millisecond."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pinned: int | None = None
        real = hub_state.now_ms
        monkeypatch.setattr(hub_state, "now_ms",
                            lambda: self.pinned if self.pinned is not None else real())


def station(sandbox: Sandbox, session: Session, http: httpx.AsyncClient, *,
            realtime_endpoint: str | None = None, clock: SystemTimer | None = None,
            **presence: Any) -> contextlib.AbstractAsyncContextManager[
                tuple[Workstation, PresenceService]]:
    """A live workstation and its presence service (a short leave grace unless given)."""
    return presence_station(sandbox, session, http, timer=clock,
                            realtime_endpoint=realtime_endpoint,
                            **{"leave_grace_s": 0.3, **presence})


def names(handle) -> list[str]:
    return [m.name for m in handle.others()]


def ended(ws: Workstation) -> list[EditLockEnded]:
    got: list[EditLockEnded] = []
    ws.bus.subscribe(EditLockEnded, got.extend)
    return got


async def test_presence_appears_once_per_workstation_and_disappears_after_the_last_window(
        sandbox: Sandbox, clinician: Session, nurse: Session, http: httpx.AsyncClient) -> None:
    async with station(sandbox, clinician, http) as (_ws_a, doctor), \
            station(sandbox, nurse, http) as (ws_b, ward_nurse):
        changes: list[PresenceChanged] = []
        ws_b.bus.subscribe(PresenceChanged, changes.extend)
        chart, lab_window = doctor.join(*PATIENT), doctor.join(*PATIENT)
        seen_by_nurse = ward_nurse.join(*PATIENT)
        await eventually(lambda: names(seen_by_nurse) == ["Dr Demo Clinician"],
                         what="the doctor in the nurse's view")
        await eventually(lambda: names(chart) == ["Nurse Demo Nightingale"],
                         what="the nurse in the doctor's view")
        # Two windows, one member: the hub holds exactly two members on the channel.
        assert sandbox.hub.stats()["members"] == 2
        assert doctor.handle_count("record:Patient:pat-03") == 2
        doctor_member = seen_by_nurse.others()[0]
        assert doctor_member.role == "Doctor" and doctor_member.verified
        assert doctor_member.initials == "DC"
        assert doctor_member.state == "viewing"
        assert abs(doctor_member.data.since_ms / 1000 - time.time()) < 30
        assert lab_window.others() == chart.others()  # one view per workstation
        assert any(c.channel == "record:Patient:pat-03" for c in changes)

        # Closing one of two windows leaves presence as it is; the leave grace after the last
        # one is timed exactly in tests/sync/test_presence_timeline.py.
        chart.close()
        assert doctor.handle_count("record:Patient:pat-03") == 1
        lab_window.close()
        await eventually(lambda: names(seen_by_nurse) == [], timeout_s=3.0,
                         what="the doctor leaving after the last window")
        await eventually(lambda: "record:Patient:pat-03" not in doctor.channels,
                         what="presence record released")
        # Reopening joins again.
        again = doctor.join(*PATIENT)
        await eventually(lambda: names(seen_by_nurse) == ["Dr Demo Clinician"], what="rejoin")
        again.close()
        seen_by_nurse.close()


async def test_simultaneous_claims_resolve_identically_on_both_workstations(
        sandbox: Sandbox, clinician: Session, nurse: Session, http: httpx.AsyncClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    hub_clock = PinnableHubClock(monkeypatch)
    async with station(sandbox, clinician, http) as (_ws_a, doctor), \
            station(sandbox, nurse, http) as (_ws_b, ward_nurse):
        a, b = doctor.join(*TASK), ward_nurse.join(*TASK)
        await eventually(lambda: names(a) and names(b), what="both present")
        for round_no in range(4):
            if round_no == 0:
                # The hub stamps both claims with the very same millisecond: the tie goes to
                # the lower clientId.
                hub_clock.pinned = int(time.time() * 1000)
            out_a, out_b = await asyncio.gather(a.claim("task"), b.claim("task"))
            hub_clock.pinned = None
            if round_no == 0:
                assert out_a.granted and not out_b.granted  # "demo-clinician" < "demo-nurse"
            assert out_a.granted != out_b.granted, (out_a, out_b)
            winner, loser = (a, b) if out_a.granted else (b, a)
            lost = out_b if out_a.granted else out_a
            assert lost.reason == "taken"
            await eventually(lambda loser=loser: loser.lock("task").holder is not None
                             and loser.lock("task").holder.state == EDITING,
                             what="the loser seeing the winner's claim")
            held_w, held_l = winner.lock("task"), loser.lock("task")
            # Both apply the rule to the same claims: the same member, ordered by the same
            # hub timestamp.
            assert held_w.ordered_at_ms is not None
            assert (held_w.holder.client_id, held_w.holder.connection_id,
                    held_w.ordered_at_ms) == (held_l.holder.client_id,
                                              held_l.holder.connection_id, held_l.ordered_at_ms)
            assert held_w.by_me and held_w.here and not held_w.blocked and held_w.status == "held"
            assert held_l.blocked and not held_l.by_me
            assert lost.holder.client_id == held_w.holder.client_id
            # The loser withdraws its claim: only one member is editing.
            assert [m.state for m in loser.others()] == [EDITING]
            await eventually(lambda w=winner: [m.state for m in w.others()] == ["viewing"],
                             what="the loser's claim withdrawn")
            winner.release("task")
            await eventually(lambda loser=loser: loser.lock("task").holder is None,
                             what="released")
        a.close()
        b.close()


async def test_another_window_of_the_same_workstation_sees_its_own_lock(
        sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient) -> None:
    async with station(sandbox, clinician, http) as (_ws, doctor):
        first, second = doctor.join(*TASK), doctor.join(*TASK)
        assert (await first.claim("task")).reason == "granted"
        other = await second.claim("task")
        assert not other.granted and other.reason == "elsewhere"
        lock = second.lock("task")
        assert lock.by_me and not lock.here and lock.blocked
        first.close()  # the window closed while editing: the claim goes with it
        assert second.lock("task").holder is None
        assert (await second.claim("task")).granted
        second.close()


@pytest.mark.slow
async def test_a_vanished_workstation_disappears_within_the_hub_grace_and_frees_its_lock(
        sandbox: Sandbox, clinician: Session, nurse: Session, http: httpx.AsyncClient) -> None:
    grace_s = sandbox.hub.config.presence_grace_s
    host, port = sandbox.hub.endpoint.rsplit(":", 1)
    async with FaultProxy(host, int(port)) as network, \
            station(sandbox, clinician, http, realtime_endpoint=network.endpoint,
                    lock_disconnect_s=grace_s) as (ws_a, doctor), \
            station(sandbox, nurse, http) as (_ws_b, ward_nurse):
        told = ended(ws_a)
        a, b = doctor.join(*TASK), ward_nurse.join(*TASK)
        await eventually(lambda: names(a) and names(b), what="both present")
        assert (await a.claim("task")).granted
        await eventually(lambda: b.lock("task").blocked, what="the nurse seeing the lock")
        # The doctor's workstation drops off the network (cable pulled, no CLOSE sent).
        await network.refuse()
        network.drop_all()
        cut = time.monotonic()
        await eventually(lambda: names(b) == [], timeout_s=grace_s + 3.0,
                         what="the vanished member leaving")
        gone_after = time.monotonic() - cut
        assert grace_s - 0.5 <= gone_after <= grace_s + 2.0, gone_after
        assert b.lock("task").holder is None
        assert (await b.claim("task")).granted
        # The holder is told its lock ended, and keeps out of the nurse's way.
        await eventually(lambda: told, timeout_s=grace_s + 3.0, what="the holder told")
        assert [e.reason for e in told] == ["disconnected"]
        assert a.lock("task").holder is None or not a.lock("task").by_me
        # Back on the network: the doctor re-enters and sees the nurse's lock.
        await network.heal()
        await eventually(lambda: ws_a.status.state is ConnectionState.LIVE, timeout_s=10.0,
                         what="the doctor live again")
        await eventually(lambda: names(b) == ["Dr Demo Clinician"], timeout_s=5.0,
                         what="the doctor back in the nurse's view")
        await eventually(lambda: a.lock("task").blocked, what="the doctor seeing the lock")
        a.close()
        b.close()


async def test_without_realtime_claims_are_granted_offline_and_nobody_is_seen(
        sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient) -> None:
    info = sandbox.ready_info()
    ws = Workstation(WorkstationConfig(fhir_base=info["fhir_base"], ward=info["ward"]),
                     clinician, http=http)
    await ws.start()
    service = PresenceService(ws, identity_from_tokens(clinician.tokens))
    await service.start()
    try:
        handle = service.join(*TASK)
        outcome = await handle.claim("task")
        assert (outcome.granted, outcome.reason) == (True, "offline")
        assert handle.others() == () and handle.lock("task").status == "offline"
        with pytest.raises(ValueError):
            service.join("Task", "bad id")
        handle.close()
    finally:
        await service.aclose()
        await ws.aclose()


@pytest.mark.slow
async def test_a_stale_claim_re_entered_after_a_failed_resume_does_not_take_the_lock_back(
        seeded_data_dir, tmp_path, http: httpx.AsyncClient) -> None:
    # The hub forgets the doctor's connection (state TTL) while she is off the network, so
    # she comes back on a new connection and the SDK re-enters her member with the data it
    # last had: still claiming the task (RTP17i). That stale claim must not count.
    config = HubConfig(max_idle_interval_ms=3000, heartbeat_interval_s=1.0,
                       presence_grace_s=1.0, connection_state_ttl_s=2.0)
    async with running_sandbox(seeded_data_dir, tmp_path, hub_config=config) as sandbox:
        doctor_session = await demo_sign_in(sandbox, http)
        nurse_session = await demo_sign_in(sandbox, http, "demo.nurse")
        host, port = sandbox.hub.endpoint.rsplit(":", 1)
        try:
            async with FaultProxy(host, int(port)) as network, \
                    station(sandbox, doctor_session, http, realtime_endpoint=network.endpoint,
                            lock_disconnect_s=1.0) as (ws_a, doctor), \
                    station(sandbox, nurse_session, http) as (ws_b, ward_nurse):
                told_a, told_b = ended(ws_a), ended(ws_b)
                a, b = doctor.join(*TASK), ward_nurse.join(*TASK)
                await eventually(lambda: names(a) and names(b), what="both present")
                assert (await a.claim("task")).granted
                old_connection = ws_a.realtime.connection_id
                await network.refuse()
                network.drop_all()
                await eventually(lambda: names(b) == [], timeout_s=5.0, what="doctor gone")
                await eventually(lambda: told_a, timeout_s=5.0, what="doctor told")
                assert (await b.claim("task")).granted
                await asyncio.sleep(config.connection_state_ttl_s + 0.5)  # state forgotten
                await network.heal()
                await eventually(lambda: ws_a.realtime.connection_id not in (None,
                                                                             old_connection)
                                 and ws_a.status.state is ConnectionState.LIVE,
                                 timeout_s=10.0, what="the doctor on a new connection")
                await eventually(lambda: names(b) == ["Dr Demo Clinician"], timeout_s=5.0,
                                 what="the doctor back")
                await eventually(lambda: b.others()[0].data.connection_id
                                 == ws_a.realtime.connection_id, timeout_s=5.0,
                                 what="the doctor's data rewritten for the new connection")
                assert [m.state for m in b.others()] == ["viewing"]
                await asyncio.sleep(0.5)
                assert told_b == [] and b.lock("task").here  # the nurse kept her lock
                assert a.lock("task").blocked
                a.close()
                b.close()
        finally:
            await doctor_session.aclose()
            await nurse_session.aclose()
