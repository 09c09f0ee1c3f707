"""The workstation's status timeline on fake time, with exact timestamps (Replicache's way).

A real `Workstation` runs on a `FakeTimer` against the real sandbox: the real FHIR server over
HTTP, the real hub and ably SDK reached through a fault proxy that the test cuts and heals.
The SDK's own reconnects take real time, but nothing of the workstation moves until the test
advances its timer, so every state change, poll and catch-up happens at a stated instant:

    live at 0 -> link cut at CUT_AT: reconnecting -> "degraded: polling" exactly
    degraded_after_s later (first poll) -> a poll exactly every polling_interval_s ->
    link healed: live at that instant, polling stops, exactly one catch-up.

The relay's heartbeats (core/heartbeats.py) are published here by the test itself, on the
real hub through the real SDK, at stated fake instants (the sandbox's own relay sends none in
these tests, and its pokes are real):

    no heartbeat ever seen: live however long the channel stays quiet (an older relay) ->
    first heartbeat at HEARD_AT -> 3 x every_s of silence later: "degraded", "Ward updates
    delayed", polling at that very moment -> a heartbeat: live at that instant, one catch-up,
    polling stops; and a heartbeat naming a seq never received: a catch-up exactly
    gap_grace_s later (tail loss).

Pull loops run without a debounce here, so a poll's pull starts in the same instant; the pull
itself is real HTTP and is awaited in real time (`pulled`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from ably import AblyRest

from tests.faults.proxy import FaultProxy
from tests.waiting import wait_for as eventually
from wardsync.auth.session import Session
from wardsync.core import codes
from wardsync.core.connection_status import (
    DEFAULT_DEGRADED_AFTER_S,
    REASON_CONNECTING,
    REASON_LIVE,
    REASON_RECONNECTING,
    REASON_SERVER_UNREACHABLE,
    ConnectionState,
    polling_reason,
    relay_silent_reason,
)
from wardsync.core.heartbeats import HEARTBEAT_MESSAGE_NAME
from wardsync.core.metrics import MemoryMetrics
from wardsync.core.queries import PatientLabs
from wardsync.core.timer import FakeTimer
from wardsync.sandbox.server import Sandbox
from wardsync.sync.workstation import (
    DEGRADED_AFTER_S,
    POLLING_INTERVAL_S,
    SEQ_GAP_GRACE_S,
    Workstation,
    WorkstationConfig,
)

LIVE = ConnectionState.LIVE
RECONNECTING = ConnectionState.RECONNECTING
DEGRADED = ConnectionState.DEGRADED
POLLING = polling_reason(POLLING_INTERVAL_S)
CUT_AT = 5.0
DEGRADED_AT = CUT_AT + DEGRADED_AFTER_S
KEY = PatientLabs("pat-03")
# SDK timings, real time: how soon the link is back once the proxy is healed.
REALTIME_RETRY_MS = 200
REALTIME_REQUEST_TIMEOUT_MS = 1000


@contextlib.asynccontextmanager
async def station(sandbox: Sandbox, session: Session, http: httpx.AsyncClient,
                  realtime: bool = True, **overrides: Any
                  ) -> AsyncIterator[tuple[Workstation, FakeTimer, FaultProxy]]:
    """A started workstation on fake time (realtime through a fault proxy), KEY open and
    pulled, live at fake time 0."""
    info = sandbox.ready_info()
    async with FaultProxy("127.0.0.1", sandbox.hub.port) as proxy:
        cfg = WorkstationConfig(
            fhir_base=info["fhir_base"], ward=info["ward"],
            realtime_endpoint=proxy.endpoint if realtime else None,
            realtime_token_url=info["ably_token_url"], pull_debounce_s=0.0,
            realtime_retry_ms=REALTIME_RETRY_MS,
            realtime_request_timeout_ms=REALTIME_REQUEST_TIMEOUT_MS, **overrides)
        timer = FakeTimer()
        ws = Workstation(cfg, session, metrics=MemoryMetrics(), http=http, timer=timer,
                         schedule=asyncio.get_running_loop().call_soon)
        await ws.start()
        try:
            ws.open(KEY)
            await pulled(ws, 1)
            if realtime:
                await eventually(lambda: ws.status.state is LIVE, what="live")
            yield ws, timer, proxy
        finally:
            await ws.aclose()


async def pulled(ws: Workstation, pulls: int) -> None:
    """Wait (real time: HTTP) until KEY's pull number `pulls` has been applied."""
    state = ws.queries.state(KEY)
    await eventually(lambda: state.pulls == pulls and state.loading_since is None
                     and state.status == "ok", timeout_s=10.0, what=f"pull {pulls} done")
    assert state.pulls == pulls


async def advance_to(timer: FakeTimer, t: float) -> None:
    await timer.advance(t - timer.monotonic())
    assert timer.monotonic() == t


def timeline(ws: Workstation) -> list[tuple[ConnectionState, str, float]]:
    return [(s.state, s.reason, s.since) for s in ws.status_history]


async def cut(proxy: FaultProxy, ws: Workstation) -> None:
    """Cut the realtime link; returns once the SDK has reported it (real time)."""
    await proxy.refuse()
    proxy.drop_all()
    await eventually(lambda: ws.status.state is RECONNECTING, timeout_s=10.0,
                     what="the SDK reporting the dropped link")


def test_the_one_degraded_after_default() -> None:
    # One default, in core: the workstation uses it (the settings default must too).
    assert DEGRADED_AFTER_S == DEFAULT_DEGRADED_AFTER_S == 10.0
    assert WorkstationConfig(fhir_base="https://fhir.example", ward="w").degraded_after_s \
        == DEFAULT_DEGRADED_AFTER_S


async def test_outage_timeline_degrades_polls_and_catches_up_once_at_exact_times(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    async with station(sandbox, clinician, http) as (ws, timer, proxy):
        assert timeline(ws) == [(RECONNECTING, REASON_CONNECTING, 0.0), (LIVE, REASON_LIVE, 0.0)]
        await advance_to(timer, CUT_AT)
        await cut(proxy, ws)
        assert ws.status.realtime_down_since == CUT_AT

        await advance_to(timer, DEGRADED_AT - 0.001)
        assert ws.status.state is RECONNECTING and ws.polls == 0
        assert ws.queries.state(KEY).pulls == 1, "no pull while reconnecting"
        await advance_to(timer, DEGRADED_AT)
        assert (ws.status.state, ws.status.reason, ws.status.since) == (
            DEGRADED, POLLING, DEGRADED_AT)
        assert ws.polls == 1
        await pulled(ws, 2)  # the first poll, at the very moment of degrading

        # A result written during the outage: its poke cannot arrive, the next poll brings it.
        report, _ = await sandbox.lab.post_panel(
            "pat-03", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 2.1})
        ref = f"DiagnosticReport/{report['id']}"
        await advance_to(timer, DEGRADED_AT + POLLING_INTERVAL_S - 0.001)
        assert ws.polls == 1 and ws.queries.state(KEY).pulls == 2
        assert ref not in ws.store
        await advance_to(timer, DEGRADED_AT + POLLING_INTERVAL_S)
        assert ws.polls == 2
        await pulled(ws, 3)
        assert ref in ws.store
        await advance_to(timer, DEGRADED_AT + 2 * POLLING_INTERVAL_S)
        assert ws.polls == 3
        await pulled(ws, 4)

        healed_at = DEGRADED_AT + 2 * POLLING_INTERVAL_S + 2.0
        await advance_to(timer, healed_at)
        assert ws.polls == 3 and ws.catch_ups == 0
        await proxy.heal()
        await eventually(lambda: ws.status.state is LIVE, timeout_s=15.0,
                         what="the SDK reconnecting (real time)")
        assert ws.catch_ups == 1, "exactly one catch-up when live again"
        assert not ws.status.polling
        assert timeline(ws) == [
            (RECONNECTING, REASON_CONNECTING, 0.0),
            (LIVE, REASON_LIVE, 0.0),
            (RECONNECTING, REASON_RECONNECTING, CUT_AT),
            (DEGRADED, POLLING, DEGRADED_AT),
            (LIVE, REASON_LIVE, healed_at),
        ]
        states = [e["state"] for e in ws.metrics.of("connection_state")]
        assert states == ["live", "reconnecting", "degraded", "live"]
        await eventually(lambda: ws.queries.state(KEY).loading_since is None,
                         what="the catch-up pull")
        assert ws.queries.state(KEY).pulls >= 5
        # Polling has stopped: a whole interval later, nothing more was polled.
        await advance_to(timer, healed_at + 2 * POLLING_INTERVAL_S)
        assert ws.polls == 3 and ws.catch_ups == 1
        assert timer.pending().count(POLLING_INTERVAL_S) == 0


async def test_a_link_back_within_degraded_after_never_polls(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    async with station(sandbox, clinician, http) as (ws, timer, proxy):
        await advance_to(timer, CUT_AT)
        await cut(proxy, ws)
        await advance_to(timer, DEGRADED_AT - 0.5)
        await proxy.heal()
        await eventually(lambda: ws.status.state is LIVE, timeout_s=15.0,
                         what="the SDK reconnecting (real time)")
        await advance_to(timer, DEGRADED_AT + 2 * POLLING_INTERVAL_S)
        assert ws.polls == 0
        assert ws.catch_ups == 0, "the connection resumed: nothing to catch up"
        assert timeline(ws)[2:] == [
            (RECONNECTING, REASON_RECONNECTING, CUT_AT),
            (LIVE, REASON_LIVE, DEGRADED_AT - 0.5),
        ]
        assert ws.queries.state(KEY).pulls == 1


async def test_without_realtime_polls_from_the_start_every_interval(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    async with station(sandbox, clinician, http, realtime=False,
                       polling_interval_s=7.5) as (ws, timer, _):
        assert timeline(ws) == [(RECONNECTING, REASON_CONNECTING, 0.0),
                                (DEGRADED, polling_reason(7.5), 0.0)]
        assert ws.polls == 1
        for n in (2, 3, 4):
            await advance_to(timer, (n - 1) * 7.5 - 0.001)
            assert ws.polls == n - 1
            await advance_to(timer, (n - 1) * 7.5)
            assert ws.polls == n
            await pulled(ws, n)
        assert ws.catch_ups == 0
    # Closed: no poll, watchdog or pull is left waiting on the timer.
    assert timer.pending() == []


async def test_a_failing_fhir_server_shows_offline_until_the_retry_after_its_backoff(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    async with station(sandbox, clinician, http) as (ws, timer, _):
        await advance_to(timer, 2.0)
        sandbox.faults.fail(503, for_s=3600)
        asked = len(timer.requested)
        ws.catch_up()  # at 2.0: the pull is refused
        await eventually(lambda: ws.status.state is ConnectionState.OFFLINE,
                         what="the refused pull reported")
        assert (ws.status.reason, ws.status.since) == (REASON_SERVER_UNREACHABLE, 2.0)
        # Nothing else waited meanwhile (time stood still): the one new wait is the backoff.
        (backoff,) = timer.requested[asked:]
        assert 0.0 <= backoff <= 0.5, "full jitter under the first backoff step"
        sandbox.faults.clear()
        if backoff > 0.001:  # (a jittered backoff may be next to nothing)
            await advance_to(timer, 2.0 + backoff - 0.001)
            assert ws.queries.state(KEY).pulls == 2
            assert ws.status.state is ConnectionState.OFFLINE
        await advance_to(timer, 2.0 + backoff)
        await pulled(ws, 3)  # the retry, exactly one backoff later
        assert (ws.status.state, ws.status.since) == (LIVE, 2.0 + backoff)
        assert [s.state for s in ws.status_history][-2:] == [ConnectionState.OFFLINE, LIVE]


# ---------------------------------------------------------------------------- relay heartbeats
EVERY_S = 5
SILENCE_S = 3 * EVERY_S
RELAY_SILENT = relay_silent_reason(POLLING_INTERVAL_S)


async def send_heartbeat(sandbox: Sandbox, ws: Workstation, seq: int) -> None:
    """Publish a relay heartbeat on the workstation's ward channel (the hub's REST API, the
    real SDK) and wait (real time) until the workstation has taken it."""
    info = sandbox.ready_info()
    host, port = info["ably_endpoint"].rsplit(":", 1)
    rest = AblyRest(key=info["ably_key"], use_token_auth=True, endpoint=host, port=int(port),
                    tls=False)
    before = ws.intake.heartbeats
    try:
        await rest.channels.get(f"ward:{info['ward']}").publish(
            HEARTBEAT_MESSAGE_NAME, {"seq": seq, "at": 1_765_000_000_000, "every_s": EVERY_S})
    finally:
        await rest.close()
    await eventually(lambda: ws.intake.heartbeats == before + 1, timeout_s=10.0,
                     what="the heartbeat received")


async def all_poked(sandbox: Sandbox, ws: Workstation) -> None:
    """Wait (real time) until the sandbox's relay has published every poke of the writes so
    far and the workstation has received them all (a panel is a report and its results)."""
    await eventually(lambda: sandbox.pokes_pending() == 0 and ws.intake.accepted > 0
                     and ws.intake.seq.highest == last_seq(sandbox),
                     timeout_s=10.0, what="the writes' pokes received")


def last_seq(sandbox: Sandbox) -> int:
    assert sandbox.relay is not None and sandbox.relay.state is not None
    return sandbox.relay.state.last_seq(sandbox.ward)


async def test_a_silent_relay_degrades_a_live_link_after_three_heartbeats_then_live_again(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    async with station(sandbox, clinician, http) as (ws, timer, _):
        # No heartbeat seen on the channel yet (a relay that sends none): never expected.
        await advance_to(timer, 100.0)
        assert ws.status.state is LIVE and ws.polls == 0

        heard_at = 100.0
        await send_heartbeat(sandbox, ws, last_seq(sandbox))
        silent_at = heard_at + SILENCE_S
        await advance_to(timer, silent_at - 0.001)
        assert ws.status.state is LIVE and ws.polls == 0
        await advance_to(timer, silent_at)
        assert (ws.status.state, ws.status.reason, ws.status.since) == (
            DEGRADED, RELAY_SILENT, silent_at)
        assert ws.status.realtime.value == "connected", "the link itself is up"
        assert ws.polls == 1
        await pulled(ws, 2)  # the first poll, at the very moment of degrading
        await advance_to(timer, silent_at + POLLING_INTERVAL_S)
        assert ws.polls == 2
        await pulled(ws, 3)

        back_at = silent_at + POLLING_INTERVAL_S + 2.0
        await advance_to(timer, back_at)
        await send_heartbeat(sandbox, ws, last_seq(sandbox))
        assert (ws.status.state, ws.status.reason, ws.status.since) == (LIVE, REASON_LIVE, back_at)
        assert ws.catch_ups == 1, "exactly one catch-up when the relay is heard again"
        assert not ws.status.polling
        await pulled(ws, 4)
        assert timeline(ws)[2:] == [(DEGRADED, RELAY_SILENT, silent_at),
                                    (LIVE, REASON_LIVE, back_at)]
        assert [e["state"] for e in ws.metrics.of("connection_state")] == [
            "live", "degraded", "live"]

        # Polling has stopped, and the silence is counted again from the last heartbeat.
        await advance_to(timer, back_at + SILENCE_S - 0.001)
        assert ws.polls == 2 and ws.status.state is LIVE
        await advance_to(timer, back_at + SILENCE_S)
        assert (ws.status.state, ws.polls) == (DEGRADED, 3)


async def test_a_poke_is_a_sign_of_life_too(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    async with station(sandbox, clinician, http) as (ws, timer, _):
        await send_heartbeat(sandbox, ws, last_seq(sandbox))
        await advance_to(timer, SILENCE_S - 1.0)
        await sandbox.lab.post_panel("pat-03", codes.LACTATE_PANEL.code,
                                     {codes.LACTATE.code: 1.9})
        await all_poked(sandbox, ws)
        await advance_to(timer, 2 * SILENCE_S - 1.001)
        assert ws.status.state is LIVE and ws.polls == 0
        await advance_to(timer, 2 * SILENCE_S - 1.0)
        assert (ws.status.state, ws.status.since) == (DEGRADED, 2 * SILENCE_S - 1.0)


async def test_a_heartbeat_naming_a_seq_never_received_catches_up_after_the_gap_grace(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    async with station(sandbox, clinician, http) as (ws, timer, _):
        await send_heartbeat(sandbox, ws, last_seq(sandbox))
        # A real poke from the sandbox's relay, received and pulled.
        await sandbox.lab.post_panel(
            "pat-03", codes.LACTATE_PANEL.code, {codes.LACTATE.code: 2.2})
        await all_poked(sandbox, ws)
        await eventually(lambda: ws.queries.state(KEY).loading_since is None, what="pulled")
        seen = last_seq(sandbox)
        await advance_to(timer, 3.0)
        await send_heartbeat(sandbox, ws, seen)  # nothing missing: nothing to do
        await advance_to(timer, 3.0 + SEQ_GAP_GRACE_S)
        assert ws.catch_ups == 0 and ws.intake.gaps == 0

        # The next poke (the last of a burst) was lost on its way: only the heartbeat says so.
        await send_heartbeat(sandbox, ws, seen + 1)
        gap_at = 3.0 + SEQ_GAP_GRACE_S
        pulls = ws.queries.state(KEY).pulls
        await advance_to(timer, gap_at + SEQ_GAP_GRACE_S - 0.5)
        assert ws.catch_ups == 0
        await advance_to(timer, gap_at + SEQ_GAP_GRACE_S)
        assert ws.catch_ups == 1 and ws.intake.gaps == 1
        await pulled(ws, pulls + 1)  # the catch-up's pull
        assert ws.status.state is LIVE  # a tail gap is caught up, not a reason to degrade
