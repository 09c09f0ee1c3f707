"""Relay heartbeats against a bare sandbox hub and the real ably SDK, on fake time for the
publisher's own waits: one per ward channel at the interval (idle and configured wards
included), in the ward's publish order so the seq is always one the hub acknowledged,
counted against the channel's rate, none through a closed fence (a standby) and none while
the relay cannot vouch for its view of the FHIR server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.relay.local_hub import KEY, channel_history, draft
from tests.waiting import wait_for
from wardsync.core.backoff import Backoff, Jitter
from wardsync.core.heartbeats import HEARTBEAT_MESSAGE_NAME, parse_heartbeat
from wardsync.core.timer import FakeTimer
from wardsync.relay.metrics import RelayMetrics
from wardsync.relay.publisher import FENCE_RECHECK_S, VOUCH_RECHECK_S, HubAddress, PokePublisher
from wardsync.relay.state import PUBLISHED, RelayState
from wardsync.sandbox.hub import Hub

EVERY_S = 15.0


@asynccontextmanager
async def publishing(hub: Hub, tmp_path: Path, timer: FakeTimer, **kwargs: Any
                     ) -> AsyncIterator[tuple[PokePublisher, RelayState]]:
    state = RelayState(tmp_path / "relay.sqlite3")
    publisher = PokePublisher(
        state=state, key=KEY, hub=HubAddress("127.0.0.1", hub.port, tls=False),
        metrics=RelayMetrics(), timer=timer, heartbeat_s=EVERY_S,
        backoff=Backoff(0.25, cap_s=2.0, jitter=Jitter.NONE), **kwargs)
    try:
        yield publisher, state
    finally:
        await publisher.aclose()
        state.close()


async def messages(hub: Hub, ward: str) -> list[tuple[str, int]]:
    """(name, seq) of every message on the ward channel, oldest first."""
    items = await channel_history(hub, f"ward:{ward}", name=None)
    return [(m.name, m.data["seq"]) for m in items]


async def heartbeats(hub: Hub, ward: str) -> list[Any]:
    return [parse_heartbeat(m.data) for m in
            await channel_history(hub, f"ward:{ward}", name=HEARTBEAT_MESSAGE_NAME)]


async def test_every_ward_gets_a_heartbeat_at_once_then_every_interval(
        hub: Hub, tmp_path: Path) -> None:
    timer = FakeTimer()
    async with publishing(hub, tmp_path, timer, wards=["w-default"]) as (publisher, state):
        # w1 had two pokes in an earlier run, both acknowledged; w-default never had one.
        for rid in ("a", "b"):
            stored, _ = state.number("w1", draft(rid))
            state.mark(stored.message_id, PUBLISHED)
        assert publisher.start() == 0
        await wait_for(lambda: publisher.heartbeats_sent == 2, 10, "the first heartbeats")
        for n in (1, 2, 3):
            await timer.advance(EVERY_S - 0.001)
            assert publisher.heartbeats_sent == 2 * n
            await timer.advance(0.001)
            want = 2 * (n + 1)
            await wait_for(lambda: publisher.heartbeats_sent == want, 10,  # noqa: B023
                           f"heartbeats at {n * EVERY_S} s")
        for ward, seq in (("w1", 2), ("w-default", 0)):
            beats = await heartbeats(hub, ward)
            assert [b.seq for b in beats] == [seq] * 4
            assert {b.every_s for b in beats} == {EVERY_S}
            assert [b.at_ms for b in beats] == [
                round((timer.wall() - (3 - i) * EVERY_S) * 1000) for i in range(4)]
        assert publisher.published == 0 and publisher.pending == 0
        assert publisher._metrics.ward_heartbeats.labels("sent")._value.get() == 8


async def test_a_heartbeat_names_only_seqs_the_hub_acknowledged(
        hub: Hub, tmp_path: Path) -> None:
    timer = FakeTimer()
    async with publishing(hub, tmp_path, timer) as (publisher, _):
        publisher.start()  # no ward known yet: nothing to send
        assert publisher.heartbeats_sent == 0 and timer.pending() == []
        for i in range(3):
            publisher.submit("w1", draft(f"p{i}"))
        await wait_for(lambda: publisher.pending == 0 and publisher.heartbeats_sent == 1, 10,
                       "the pokes and the ward's first heartbeat")
        await timer.advance(EVERY_S)
        await wait_for(lambda: publisher.heartbeats_sent == 2, 10, "the next heartbeat")
        # The ward's first heartbeat was due at once but waited for the burst's publish to
        # be acknowledged: its seq is the burst's last, never a seq ahead of its poke.
        assert await messages(hub, "w1") == [
            ("poke", 1), ("poke", 2), ("poke", 3), ("heartbeat", 3), ("heartbeat", 3)]


async def test_heartbeats_count_against_the_channel_rate(hub: Hub, tmp_path: Path) -> None:
    timer = FakeTimer()
    async with publishing(hub, tmp_path, timer, max_per_s=2.0,
                          wards=["w1"]) as (publisher, _):
        publisher.start()
        await wait_for(lambda: publisher.heartbeats_sent == 1, 10, "the first heartbeat")
        for i in range(2):
            publisher.submit("w1", draft(f"r{i}"))
        # Heartbeat + 1 poke in the first second (2/s), the other poke a second later.
        await wait_for(lambda: publisher.published == 1 and 1.0 in timer.pending(), 10)
        await timer.advance(1.0)
        await wait_for(lambda: publisher.pending == 0, 10, "the rest")
        assert await messages(hub, "w1") == [("heartbeat", 0), ("poke", 1), ("poke", 2)]


async def test_none_through_a_closed_fence(hub: Hub, tmp_path: Path) -> None:
    timer = FakeTimer()
    held = {"lease": False}
    async with publishing(hub, tmp_path, timer, wards=["w1"],
                          fence=lambda: held["lease"]) as (publisher, _):
        publisher.start()
        for _ in range(int(2 * EVERY_S / FENCE_RECHECK_S)):
            await wait_for(lambda: bool(timer.pending()), 10, "the fence recheck")
            await timer.advance(FENCE_RECHECK_S)
        assert publisher.heartbeats_sent == 0 and await heartbeats(hub, "w1") == []
        held["lease"] = True
        await wait_for(lambda: bool(timer.pending()), 10)
        await timer.advance(FENCE_RECHECK_S)
        await wait_for(lambda: publisher.heartbeats_sent == 1, 10, "a heartbeat once leading")


async def test_none_while_the_relay_cannot_vouch_for_the_channel(
        hub: Hub, tmp_path: Path) -> None:
    timer = FakeTimer()
    current = {"poll": False}
    async with publishing(hub, tmp_path, timer, wards=["w1"],
                          vouch=lambda: current["poll"]) as (publisher, _):
        publisher.start()
        for _ in range(int(2 * EVERY_S / VOUCH_RECHECK_S)):
            await wait_for(lambda: bool(timer.pending()), 10, "the vouch recheck")
            assert timer.pending() == [VOUCH_RECHECK_S]
            await timer.advance(VOUCH_RECHECK_S)
        assert publisher.heartbeats_sent == 0
        current["poll"] = True  # the FHIR server answers the poll again
        await timer.advance(VOUCH_RECHECK_S)
        await wait_for(lambda: publisher.heartbeats_sent == 1, 10, "heartbeats resume")
        await wait_for(lambda: timer.pending() == [EVERY_S], 10, "the next one scheduled")


async def test_a_ward_a_token_was_issued_for_gets_heartbeats_now_and_after_a_restart(
        hub: Hub, tmp_path: Path) -> None:
    timer = FakeTimer()
    async with publishing(hub, tmp_path, timer) as (publisher, state):
        publisher.watch_ward("w9")  # before leading: remembered, nothing sent yet
        assert publisher.heartbeats_sent == 0 and state.wards() == {"w9": 0}
        publisher.start()
        await wait_for(lambda: publisher.heartbeats_sent == 1, 10, "w9's first heartbeat")
        publisher.watch_ward("w10")  # while leading: at once
        await wait_for(lambda: publisher.heartbeats_sent == 2, 10, "w10's first heartbeat")
        assert [b.seq for b in await heartbeats(hub, "w10")] == [0]
    # The next run (or the next leader) knows both wards from the store alone.
    timer2 = FakeTimer()
    async with publishing(hub, tmp_path, timer2) as (again, state):
        assert state.wards() == {"w9": 0, "w10": 0}
        again.start()
        await wait_for(lambda: again.heartbeats_sent == 2, 10, "heartbeats after a restart")
        stored, _ = state.number("w9", draft("first"))  # numbering still starts at 1
        assert stored.poke.seq == 1
