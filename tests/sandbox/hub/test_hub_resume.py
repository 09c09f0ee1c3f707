"""Connection continuity: resume after drops (no loss, no duplicates), failed resumes with
history replay, and a hub restart on the same port."""

from __future__ import annotations

import asyncio

import pytest
from ably.types.presence import PresenceAction
from hub_harness import HubBed, Inbox, connected, connection_id, fast_config, wait_until
from websockets.exceptions import ConnectionClosed


def _seqs(inbox: Inbox, source: str) -> list[int]:
    return [m.data["seq"] for m in inbox.items if m.name == source]


@pytest.mark.parametrize("binary", [True, False])
async def test_drops_while_publishing_lose_and_duplicate_nothing(bed: HubBed, binary: bool):
    subscriber = bed.realtime(client_id="ward-screen", binary=binary)
    publisher = bed.realtime(client_id="bedside", binary=not binary)
    rest = bed.rest(binary=binary)
    inbox = Inbox()
    channel = subscriber.channels.get("ward:1")
    await channel.subscribe(inbox.put)
    resumed = Inbox()
    channel.on("attached", resumed.put)
    await connected(publisher)
    ids = (connection_id(subscriber), connection_id(publisher))
    count = 40

    async def publish_realtime() -> None:
        for seq in range(count):
            try:
                await publisher.channels.get("ward:1").publish("rt", {"seq": seq})
            except ConnectionClosed:
                # ably 3.1.4 raises when the socket dies under a send, yet keeps the message
                # queued and re-sends it on resume; retrying here would publish it twice.
                pass
            await asyncio.sleep(0.005)

    async def publish_rest() -> None:
        for seq in range(count):
            await rest.channels.get("ward:1").publish("rest", {"seq": seq})
            await asyncio.sleep(0.005)

    async def drop_repeatedly() -> None:
        for _ in range(3):
            await asyncio.sleep(0.08)
            await bed.hub.drop_connections()

    await asyncio.gather(publish_realtime(), publish_rest(), drop_repeatedly())
    await inbox.wait(2 * count, within_s=10)
    await subscriber.connection.ping()  # duplicates, if any, would have arrived by now
    assert _seqs(inbox, "rt") == list(range(count))
    assert _seqs(inbox, "rest") == list(range(count))
    assert len(inbox.items) == 2 * count
    assert (connection_id(subscriber), connection_id(publisher)) == ids  # resumed, not new
    assert resumed.items and all(change.resumed for change in resumed.items)
    assert bed.hub.stats()["counters"]["resumes_ok"] >= 3


async def test_messages_sent_while_disconnected_arrive_on_resume(make_bed):
    bed = await make_bed(fast_config(presence_grace_s=5.0))
    subscriber = bed.realtime(client_id="ward-screen")
    observer = bed.realtime(client_id="observer")
    rest = bed.rest()
    inbox, presence_seen, attached = Inbox(), Inbox(), Inbox()
    channel = subscriber.channels.get("ward:2")
    await channel.subscribe(inbox.put)
    await channel.presence.enter("on duty")
    await observer.channels.get("ward:2").presence.subscribe(presence_seen.put)
    await presence_seen.wait(1)  # 'present', from the attach SYNC
    channel.on("attached", attached.put)
    first_id = connection_id(subscriber)
    await rest.channels.get("ward:2").publish("poke", {"seq": 0})
    await inbox.wait(1)

    await bed.hub.drop_connections(refuse_reconnects_s=0.8)
    for seq in range(1, 6):
        await rest.channels.get("ward:2").publish("poke", {"seq": seq})
    assert subscriber.connection.state != "connected"
    assert bed.hub.stats()["buffered_frames"] >= 5  # held in the resume buffer

    await inbox.wait(6, within_s=5)
    await connected(subscriber)
    await subscriber.connection.ping()
    assert [m.data["seq"] for m in inbox.items] == list(range(6))
    assert connection_id(subscriber) == first_id
    assert subscriber.connection.error_reason is None or \
        subscriber.connection.error_reason.code != 80008
    await wait_until(lambda: bool(attached.items), what="re-attach")
    assert attached.items[-1].resumed is True
    # The member stayed (drop shorter than the grace period) and its re-entry was silent.
    await observer.connection.ping()
    assert [e.action for e in presence_seen.items] == [PresenceAction.PRESENT]


async def test_overflowed_resume_buffer_fails_resume_then_history_fills_the_gap(make_bed):
    bed = await make_bed(fast_config(resume_buffer_limit=3))
    subscriber = bed.realtime(client_id="ward-screen")
    rest = bed.rest()
    inbox, connected_changes, attached = Inbox(), Inbox(), Inbox()
    channel = subscriber.channels.get("ward:3")
    await channel.subscribe(inbox.put)
    await rest.channels.get("ward:3").publish("poke", {"seq": 0})
    await inbox.wait(1)
    subscriber.connection.on("connected", connected_changes.put)
    channel.on("attached", attached.put)
    first_id = connection_id(subscriber)

    await bed.hub.drop_connections(refuse_reconnects_s=0.8)
    for seq in range(1, 7):  # six frames for a three-frame buffer
        await rest.channels.get("ward:3").publish("poke", {"seq": seq})
    assert bed.hub.stats()["counters"]["outbox_overflows"] == 1

    await inbox.wait(7, within_s=5)
    await subscriber.connection.ping()
    change = (await connected_changes.wait(1))[0]
    assert change.reason is not None and change.reason.code == 80008
    assert connection_id(subscriber) != first_id
    # The SDK re-attached with its last channelSerial: history replayed the gap exactly.
    assert [m.data["seq"] for m in inbox.items] == list(range(7))
    await wait_until(lambda: bool(attached.items), what="re-attach")
    assert attached.items[-1].resumed is True  # history covered everything missed
    assert bed.hub.stats()["counters"]["replayed_messages"] == 6


async def test_expired_connection_state_fails_resume(make_bed):
    bed = await make_bed(fast_config(connection_state_ttl_s=0.3))
    client = bed.realtime(client_id="sleepy")
    await connected(client)
    first_id = connection_id(client)
    changes = Inbox()
    client.connection.on("connected", changes.put)
    await bed.hub.drop_connections(refuse_reconnects_s=0.7)
    change = (await changes.wait(1, within_s=5))[0]
    assert change.reason.code == 80008
    assert connection_id(client) != first_id


async def test_restart_on_the_same_port_gives_a_new_connection(make_bed):
    bed = await make_bed()
    port = bed.port
    # A refused connect costs the SDK realtime_request_timeout before it retries (§3).
    client = bed.realtime(client_id="ward-screen", realtime_request_timeout=1000)
    inbox, changes, attached = Inbox(), Inbox(), Inbox()
    channel = client.channels.get("ward:4")
    await channel.subscribe(inbox.put)
    await channel.publish("before", "1")
    await inbox.wait(1)
    first_id = connection_id(client)
    token_fetches = len(client.auth_calls)
    client.connection.on("connected", changes.put)
    channel.on("attached", attached.put)

    await bed.hub.stop()
    assert bed.hub.stats()["running"] is False
    assert await bed.hub.start(port=port) == port

    change = (await changes.wait(1, within_s=8))[0]
    assert change.reason is not None and change.reason.code == 80008
    assert connection_id(client) != first_id
    await wait_until(lambda: bool(attached.items), what="re-attach")
    assert attached.items[-1].resumed is False  # the history it asked about is gone
    assert len(client.auth_calls) == token_fetches  # its token outlived the restart
    await channel.publish("after", "2")
    received = await inbox.wait(2)
    assert [m.name for m in received] == ["before", "after"]
    assert bed.hub.stats()["history"] == {"ward:4": 1}
