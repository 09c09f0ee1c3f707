"""The publisher against a real hub and the real ably SDK, on fake time for its own waits:
per-ward order, pacing under Ably's channel limit, a burst in one publish, capped backoff
while the hub is down, and a republish after a crash that the hub recognises (same ids, same
seqs, one delivery), also when more pokes queued behind it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.relay.local_hub import KEY, channel_history, draft
from tests.waiting import wait_for
from wardsync.core.backoff import Backoff, Jitter
from wardsync.core.timer import FakeTimer
from wardsync.relay.metrics import RelayMetrics
from wardsync.relay.publisher import HubAddress, PokePublisher
from wardsync.relay.state import PENDING, RelayState
from wardsync.sandbox.hub import Hub


def _publisher(state: RelayState, hub: Hub, timer: FakeTimer, **kwargs) -> PokePublisher:
    return PokePublisher(
        state=state, key=KEY, hub=HubAddress("127.0.0.1", hub.port, tls=False),
        metrics=RelayMetrics(), timer=timer,
        backoff=Backoff(0.25, cap_s=2.0, jitter=Jitter.NONE), **kwargs,
    )


async def test_pokes_go_out_in_seq_order_paced_under_the_channel_limit(
    hub: Hub, tmp_path: Path
):
    timer = FakeTimer()
    state = RelayState(tmp_path / "relay.sqlite3")
    publisher = _publisher(state, hub, timer, max_per_s=2.0)
    try:
        for i in range(5):
            publisher.submit("w1", draft(f"o{i}"))
        for _ in range(5):
            await wait_for(lambda: bool(timer.pending()) or publisher.pending == 0, 10)
            await timer.advance(1.0)
        await wait_for(lambda: publisher.pending == 0, 10, "all published")
        # 2/s: two at once, then each further pair when the first of the window is 1 s old.
        pacing = [d for d in timer.requested if d > 0]
        assert pacing == [pytest.approx(1.0), pytest.approx(1.0)]
        items = await channel_history(hub, "ward:w1")
        assert [m.data["seq"] for m in items] == [1, 2, 3, 4, 5]
        assert [m.data["id"] for m in items] == ["o0", "o1", "o2", "o3", "o4"]
        assert all(m.client_id == "wardsync-relay" for m in items)
    finally:
        await publisher.aclose()
        state.close()


async def test_backoff_while_the_hub_is_down_then_delivery(hub: Hub, tmp_path: Path):
    timer = FakeTimer()
    state = RelayState(tmp_path / "relay.sqlite3")
    publisher = _publisher(state, hub, timer)
    port = hub.port
    await hub.stop()
    try:
        publisher.submit("w1", draft("down"))
        for expected in (0.25, 0.5, 1.0, 2.0, 2.0):
            await wait_for(lambda: bool(timer.pending()), 10, "a retry wait")
            assert timer.pending() == [expected]
            await timer.advance(expected)
        await hub.start(port=port)
        await wait_for(lambda: bool(timer.pending()) or publisher.pending == 0, 10)
        await timer.advance(2.0)
        await wait_for(lambda: publisher.pending == 0, 10, "published after the hub returned")
        assert [m.data["id"] for m in await channel_history(hub, "ward:w1")] == ["down"]
    finally:
        await publisher.aclose()
        state.close()


async def test_a_republish_after_a_crash_is_one_delivery_with_the_same_seq(
    hub: Hub, tmp_path: Path
):
    timer = FakeTimer()
    state = RelayState(tmp_path / "relay.sqlite3")
    first = _publisher(state, hub, timer)
    stored = first.submit("w1", draft("x"))
    await wait_for(lambda: first.pending == 0, 10, "published")
    await first.aclose()
    # The crash came after the hub delivered but before the acknowledgement was recorded.
    state.mark(stored.message_id, PENDING)
    second = _publisher(state, hub, timer)
    try:
        assert second.start() == 1
        await wait_for(lambda: second.pending == 0, 10, "republished")
        items = await channel_history(hub, "ward:w1")
        assert [(m.id, m.data["seq"]) for m in items] == [(f"{stored.message_id}:0", 1)]
        assert second.submit("w1", draft("x")).poke.seq == 1  # never renumbered
        assert second.pending == 0
    finally:
        await second.aclose()
        state.close()


async def test_a_burst_goes_out_in_one_publish_with_ids_recorded_before_it(
    hub: Hub, tmp_path: Path
):
    timer = FakeTimer()
    state = RelayState(tmp_path / "relay.sqlite3")
    publisher = _publisher(state, hub, timer)
    try:
        stored = [publisher.submit("w1", draft(f"b{i}")) for i in range(10)]
        await wait_for(lambda: publisher.pending == 0, 10, "published")
        items = await channel_history(hub, "ward:w1")
        base = stored[0].message_id
        assert [(m.id, m.data["seq"]) for m in items] == [
            (f"{base}:{i}", i + 1) for i in range(10)]
        assert hub.stats()["counters"]["messages_published"] == 10
    finally:
        await publisher.aclose()
        state.close()


async def test_a_publish_repeated_after_a_crash_keeps_its_ids_though_more_pokes_queued(
    hub: Hub, tmp_path: Path
):
    timer = FakeTimer()
    state = RelayState(tmp_path / "relay.sqlite3")
    first = _publisher(state, hub, timer)
    batch = [first.submit("w1", draft(f"c{i}")) for i in range(3)]
    await wait_for(lambda: first.pending == 0, 10, "published")
    await first.aclose()
    # The hub delivered the publish but the relay died before recording the acknowledgement;
    # two more versions were numbered before it died and never published.
    for stored in batch:
        state.mark(stored.message_id, PENDING)
    state.number("w1", draft("c3"))
    state.number("w1", draft("c4"))
    second = _publisher(state, hub, timer)
    try:
        assert second.start() == 5
        await wait_for(lambda: second.pending == 0, 10, "republished")
        items = await channel_history(hub, "ward:w1")
        assert [m.data["seq"] for m in items] == [1, 2, 3, 4, 5]  # each once
        assert [m.data["id"] for m in items] == ["c0", "c1", "c2", "c3", "c4"]
        assert hub.stats()["counters"]["idempotent_duplicates"] == 3
        assert state.count(PENDING) == 0
    finally:
        await second.aclose()
        state.close()
