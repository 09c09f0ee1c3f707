"""The publish fence against a real hub: a publisher whose lease is not certainly held
publishes nothing, resumes when it is, and `suspend` drops its queues while the pokes stay
pending in the store for the next leader."""

from __future__ import annotations

from pathlib import Path

from tests.relay.local_hub import KEY, channel_history, draft
from tests.waiting import wait_for
from wardsync.core.backoff import Backoff, Jitter
from wardsync.core.timer import FakeTimer
from wardsync.relay.metrics import RelayMetrics
from wardsync.relay.publisher import FENCE_RECHECK_S, HubAddress, PokePublisher
from wardsync.relay.state import PENDING, PUBLISHED, RelayState
from wardsync.sandbox.hub import Hub


async def test_nothing_is_published_while_the_fence_is_closed(hub: Hub, tmp_path: Path):
    timer = FakeTimer()
    held = {"lease": False}
    state = RelayState(tmp_path / "relay.sqlite3")
    publisher = PokePublisher(
        state=state, key=KEY, hub=HubAddress("127.0.0.1", hub.port, tls=False),
        metrics=RelayMetrics(), timer=timer, fence=lambda: held["lease"],
        backoff=Backoff(0.25, cap_s=2.0, jitter=Jitter.NONE))
    try:
        publisher.submit("w1", draft("a"))
        publisher.submit("w1", draft("b"))
        for _ in range(5):  # ten fence checks, seconds of fake time
            await wait_for(lambda: bool(timer.pending()), 10, "the fence recheck")
            await timer.advance(FENCE_RECHECK_S)
        assert publisher.published == 0 and await channel_history(hub, "ward:w1") == []
        assert timer.pending() == [FENCE_RECHECK_S]

        await publisher.suspend()  # the lease is lost: queues dropped, store untouched
        assert publisher.pending == 0 and timer.pending() == []
        assert state.count(PENDING) == 2

        held["lease"] = True  # leading again: the store's pending pokes go out, in order
        assert publisher.start() == 2
        await wait_for(lambda: publisher.pending == 0 or bool(timer.pending()), 10)
        while publisher.pending:
            await timer.advance(0.05)
            await wait_for(lambda: publisher.pending == 0 or bool(timer.pending()), 10)
        items = await channel_history(hub, "ward:w1")
        assert [(m.data["id"], m.data["seq"]) for m in items] == [("a", 1), ("b", 2)]
        assert state.count(PUBLISHED) == 2
    finally:
        await publisher.aclose()
        state.close()
