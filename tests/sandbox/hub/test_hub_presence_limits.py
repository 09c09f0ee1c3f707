"""Oversized presence (docs/security/realtime-and-local.md §3): presence data is capped per
member, the attach-time SYNC is paged by bytes and counted against the send queue, so no
member can make a frame the SDK refuses (over 1 MiB: close 1009, a reconnect storm)."""

from __future__ import annotations

import asyncio

import pytest
from ably import AblyException
from hub_harness import HubBed, connected, fast_config, wait_until

from wardsync.sandbox.hub.config import MAX_PRESENCE_DATA_BYTES

CHANNEL = "record:Task:t1"


async def test_presence_data_over_the_cap_is_refused_with_40009(bed: HubBed) -> None:
    nurse = bed.realtime(client_id="nurse-a")
    channel = nurse.channels.get(CHANNEL)
    await channel.attach()
    # The review's attack: 60 KB of presence data per member (under Ably's 64 KiB message
    # size, so only the presence cap stops it).
    with pytest.raises(AblyException) as refused:
        await channel.presence.enter("x" * 60_000)
    assert refused.value.code == 40009
    assert bed.hub.stats()["members"] == 0
    with pytest.raises(AblyException):
        await channel.presence.enter({"blob": "y" * MAX_PRESENCE_DATA_BYTES})
    await channel.presence.enter("z" * (MAX_PRESENCE_DATA_BYTES - len("nurse-a")))
    assert bed.hub.stats()["members"] == 1
    # Updating past the cap is refused too, and the member keeps its data.
    with pytest.raises(AblyException) as again:
        await channel.presence.update("x" * 60_000)
    assert again.value.code == 40009
    assert nurse.connection.state == "connected"


@pytest.mark.parametrize("binary", [True, False])
async def test_sync_is_paged_by_bytes_and_a_full_channel_attaches_without_dropping(
        make_bed, binary: bool) -> None:
    # 20 members at the data cap, pages of at most 8 KiB: every page small, all delivered.
    bed = await make_bed(fast_config(sync_page_max_bytes=8 * 1024))
    desk = bed.realtime(client_id="*", token_client_id="*", binary=binary)
    await connected(desk)
    channel = desk.channels.get(CHANNEL)
    await channel.attach()
    blob = "d" * (MAX_PRESENCE_DATA_BYTES - 16)
    for n in range(20):
        await channel.presence.enter_client(f"bed-{n:02d}", blob)
    pages_before = bed.hub.stats()["counters"].get("sync_pages", 0)
    states: list[str] = []
    late = bed.realtime(client_id="late", binary=not binary)
    late.connection.on(lambda change: states.append(str(change.current)))
    members = await late.channels.get(CHANNEL).presence.get()
    assert sorted(m.client_id for m in members) == [f"bed-{n:02d}" for n in range(20)]
    pages = bed.hub.stats()["counters"]["sync_pages"] - pages_before
    assert pages >= 20 * MAX_PRESENCE_DATA_BYTES // (8 * 1024)  # cut by bytes, not count
    await asyncio.sleep(0.5)
    assert late.connection.state == "connected"
    assert not any("disconnected" in s for s in states), states


async def test_sync_pages_count_against_the_send_queue(make_bed) -> None:
    # A send queue smaller than the SYNC: the attaching socket is dropped as a slow consumer
    # rather than the hub buffering without bound.
    bed = await make_bed(fast_config(send_queue_max_bytes=16 * 1024,
                                     sync_page_max_bytes=4 * 1024))
    desk = bed.realtime(client_id="*", token_client_id="*")
    await connected(desk)
    channel = desk.channels.get(CHANNEL)
    await channel.attach()
    for n in range(12):
        await channel.presence.enter_client(f"bed-{n:02d}", "d" * 1900)
    late = bed.realtime(client_id="late")
    late.channels.get(CHANNEL)  # attaching it is what sends the SYNC
    attaching = asyncio.ensure_future(late.channels.get(CHANNEL).attach())
    await wait_until(lambda: bed.hub.stats()["counters"].get("outbox_overflows", 0) >= 1,
                     within_s=5.0, what="the SYNC overflowing the send queue")
    attaching.cancel()
    await asyncio.gather(attaching, return_exceptions=True)
