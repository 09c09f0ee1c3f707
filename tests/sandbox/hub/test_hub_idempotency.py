"""Idempotent publishing as Ably does it: a client-supplied message id seen on the channel in
the last two minutes is acknowledged (201) and not delivered again; multi-message publishes
need `<base>:<index>` ids (40031 otherwise). Real ably SDK on both sides."""

from __future__ import annotations

import pytest
from ably import AblyException
from ably.types.message import Message
from hub_harness import HubBed, Inbox, fast_config

from wardsync.sandbox.hub.idempotency import RecentMessageIds, check_message_ids
from wardsync.sandbox.hub.wire import HubError


async def _settled(inbox: Inbox, client) -> list:
    await client.connection.ping()  # anything further would have arrived by now
    return inbox.items


@pytest.mark.parametrize("binary", [True, False])
async def test_a_message_id_published_twice_is_delivered_once(bed: HubBed, binary: bool):
    subscriber = bed.realtime(client_id="watcher")
    inbox = Inbox()
    await subscriber.channels.get("ward:7").subscribe(inbox.put)
    rest = bed.rest(binary=binary)
    channel = rest.channels.get("ward:7")
    first = await channel.publish(Message("poke", {"seq": 1}, id="Observation-1-v1"))
    # A restarted publisher re-sends the same version: acknowledged, not delivered again.
    again = await channel.publish(Message("poke", {"seq": 1}, id="Observation-1-v1"))
    other = await channel.publish(Message("poke", {"seq": 2}, id="Observation-1-v2"))
    assert again.serials == first.serials
    assert other.serials != first.serials
    await inbox.wait(2)
    received = await _settled(inbox, subscriber)
    assert [(m.id, m.data) for m in received] == [
        ("Observation-1-v1", {"seq": 1}), ("Observation-1-v2", {"seq": 2}),
    ]
    assert bed.hub.stats()["counters"]["idempotent_duplicates"] == 1
    history = await channel.history()
    assert len(history.items) == 2


async def test_the_same_id_on_another_channel_is_another_message(bed: HubBed):
    subscriber = bed.realtime(client_id="watcher")
    inbox = Inbox()
    for name in ("ward:a", "ward:b"):
        await subscriber.channels.get(name).subscribe(inbox.put)
    rest = bed.rest()
    for name in ("ward:a", "ward:b"):
        await rest.channels.get(name).publish(Message("poke", "x", id="same"))
    await inbox.wait(2)
    assert len(await _settled(inbox, subscriber)) == 2


async def test_a_repeated_multi_message_publish_is_delivered_once(bed: HubBed):
    subscriber = bed.realtime(client_id="watcher")
    inbox = Inbox()
    await subscriber.channels.get("ward:7").subscribe(inbox.put)
    channel = bed.rest().channels.get("ward:7")
    batch = [Message("poke", str(i), id=f"batch-1:{i}") for i in range(3)]
    first = await channel.publish(messages=batch)
    again = await channel.publish(
        messages=[Message("poke", str(i), id=f"batch-1:{i}") for i in range(3)])
    assert again.serials == first.serials
    await inbox.wait(3)
    assert [m.data for m in await _settled(inbox, subscriber)] == ["0", "1", "2"]


@pytest.mark.parametrize("ids", [
    ["a:0", "b:1"],  # two bases
    ["a:1", "a:0"],  # indexes out of position
    ["a:0", None],  # one message without an id
    ["plain", "other"],  # no index at all
])
async def test_multi_message_ids_must_be_base_and_index(bed: HubBed, ids: list):
    channel = bed.rest().channels.get("ward:7")
    with pytest.raises(AblyException) as err:
        await channel.publish(messages=[Message("poke", "x", id=i) for i in ids])
    assert (err.value.code, err.value.status_code) == (40031, 400)
    history = await channel.history()
    assert history.items == []  # nothing of a refused publish is kept


async def test_sdk_generated_ids_still_publish_every_call(bed: HubBed):
    # The SDK gives each REST publish random `<base>:<index>` ids (RSL1k1): two calls with
    # the same content are two messages.
    subscriber = bed.realtime(client_id="watcher")
    inbox = Inbox()
    await subscriber.channels.get("ward:7").subscribe(inbox.put)
    channel = bed.rest().channels.get("ward:7")
    await channel.publish("poke", "same")
    await channel.publish(messages=[Message("poke", "same"), Message("poke", "same")])
    await inbox.wait(3)
    assert len(await _settled(inbox, subscriber)) == 3


async def test_ids_survive_the_eviction_of_an_idle_channel(make_bed):
    bed: HubBed = await make_bed(fast_config(max_channels=1))
    rest = bed.rest()
    await rest.channels.get("ward:1").publish(Message("poke", "x", id="v1"))
    await rest.channels.get("ward:2").publish(Message("poke", "y", id="v2"))  # evicts ward:1
    assert "ward:1" not in bed.hub.stats()["history"]
    await rest.channels.get("ward:1").publish(Message("poke", "x", id="v1"))
    history = await rest.channels.get("ward:1").history()
    assert history.items == []  # the re-sent id was recognised, not published


def test_ids_are_forgotten_after_the_window():
    now = [1000.0]
    recent = RecentMessageIds(window_s=120.0, per_channel_cap=100, clock=lambda: now[0])
    recent.remember("ward:1", "v1", "s-1")
    now[0] += 119.9
    assert recent.serial_of("ward:1", "v1") == "s-1"
    assert recent.serial_of("ward:2", "v1") is None
    now[0] += 0.1
    assert recent.serial_of("ward:1", "v1") is None
    assert len(recent) == 0


def test_prune_forgets_expired_ids_of_quiet_channels():
    now = [0.0]
    recent = RecentMessageIds(window_s=10.0, per_channel_cap=100, clock=lambda: now[0])
    recent.remember("ward:1", "a", "s1")
    now[0] = 5.0
    recent.remember("ward:2", "b", "s2")
    now[0] = 10.0
    recent.prune()
    assert len(recent) == 1 and recent.serial_of("ward:2", "b") == "s2"


def test_the_per_channel_cap_forgets_the_oldest_first():
    recent = RecentMessageIds(window_s=120.0, per_channel_cap=2, clock=lambda: 0.0)
    for i in range(3):
        recent.remember("ward:1", f"m{i}", f"s{i}")
    assert recent.serial_of("ward:1", "m0") is None
    assert recent.serial_of("ward:1", "m2") == "s2"


@pytest.mark.parametrize("ids", [[""], ["x:0", ""]])
def test_an_empty_id_is_refused(ids: list):
    with pytest.raises(HubError) as err:
        check_message_ids([{"id": i} for i in ids])
    assert err.value.code == 40031
