"""Attach, publish, delivery, history and capabilities, with the real SDK on both protocols."""

from __future__ import annotations

import pytest
from ably import AblyException
from ably.types.message import Message
from hub_harness import HubBed, Inbox, connection_id

from wardsync.sandbox.hub.wire import Flag


@pytest.mark.parametrize("publisher_binary", [True, False])
async def test_payloads_cross_between_msgpack_and_json_peers(bed: HubBed, publisher_binary: bool):
    msgpack_client = bed.realtime(client_id="mp", binary=True)
    json_client = bed.realtime(client_id="js", binary=False)
    inboxes = {}
    for client in (msgpack_client, json_client):
        inbox = Inbox()
        await client.channels.get("room").subscribe(inbox.put)
        inboxes[client.options.use_binary_protocol] = inbox
    publisher = msgpack_client if publisher_binary else json_client
    channel = publisher.channels.get("room")
    await channel.publish("dict", {"bed": 4, "flag": True})
    await channel.publish("bytes", b"\x00\x01\xfe\xff")
    await channel.publish("text", "plain")
    for inbox in inboxes.values():
        received = await inbox.wait(3)
        assert [(m.name, m.data) for m in received] == [
            ("dict", {"bed": 4, "flag": True}),
            ("bytes", bytearray(b"\x00\x01\xfe\xff")),
            ("text", "plain"),
        ]
        for message in received:
            # Delivered to every attached connection, the publisher included (echo).
            assert message.connection_id == connection_id(publisher)
            assert message.client_id == publisher.auth.client_id
            assert message.id.startswith(f"{connection_id(publisher)}:")
            assert isinstance(message.timestamp, int)


async def test_ack_serials_match_delivered_serials(bed: HubBed):
    client = bed.realtime(client_id="acker")
    inbox = Inbox()
    channel = client.channels.get("room")
    await channel.subscribe(inbox.put)
    result = await channel.publish([Message("a", "1"), Message("b", "2")])
    received = await inbox.wait(2)
    assert result.serials == [m.serial for m in received]
    assert len(set(result.serials)) == 2


async def test_message_frames_always_carry_the_channel_serial(bed: HubBed):
    raw = await bed.raw()
    await raw.send({"action": 10, "channel": "room", "params": None})
    attached = await raw.recv_action(11)
    assert attached["channelSerial"]
    publisher = bed.realtime(client_id="pub")
    result = await publisher.channels.get("room").publish("x", "y")
    frame = await raw.recv_action(15)
    # The SDK stores whatever channelSerial arrives, even None (§5), and re-attaches with it.
    assert frame["channelSerial"] == result.serials[0] == frame["messages"][0]["serial"]
    assert frame["connectionId"] == connection_id(publisher)


@pytest.mark.parametrize("binary", [True, False])
async def test_history_from_a_realtime_client_and_a_rest_client(bed: HubBed, binary: bool):
    client = bed.realtime(client_id="writer", binary=binary)
    channel = client.channels.get("ward:1")
    for i in range(5):
        await channel.publish("poke", {"seq": i})
    page = await channel.history(limit=2)
    assert [m.data["seq"] for m in page.items] == [4, 3]
    page = await page.next()
    assert [m.data["seq"] for m in page.items] == [2, 1]
    page = await page.next()
    assert [m.data["seq"] for m in page.items] == [0] and page.is_last()
    rest = bed.rest(binary=binary)
    forwards = await rest.channels.get("ward:1").history(direction="forwards")
    assert [m.data["seq"] for m in forwards.items] == [0, 1, 2, 3, 4]
    assert all(m.client_id == "writer" for m in forwards.items)
    empty = await rest.channels.get("never-used").history()
    assert empty.items == []


@pytest.mark.parametrize("binary", [True, False])
async def test_rest_publish_one_or_many_is_idempotent(bed: HubBed, binary: bool):
    subscriber = bed.realtime(client_id="watcher")
    inbox = Inbox()
    await subscriber.channels.get("ward:2").subscribe(inbox.put)
    rest = bed.rest(binary=binary)
    channel = rest.channels.get("ward:2")
    single = await channel.publish("one", {"n": 1})
    batch = [Message("two", "2", id="fixed-id:0"), Message("three", b"\x03", id="fixed-id:1")]
    first = await channel.publish(messages=batch)
    again = await channel.publish(messages=[Message("two", "2", id="fixed-id:0"),
                                            Message("three", b"\x03", id="fixed-id:1")])
    assert len(single.serials) == 1 and len(first.serials) == 2
    assert again.serials == first.serials  # RSL1k: same ids are published once
    received = await inbox.wait(3)
    await subscriber.connection.ping()  # anything further would have arrived by now
    assert [(m.name, m.data) for m in received] == [
        ("one", {"n": 1}), ("two", "2"), ("three", bytearray(b"\x03")),
    ]
    history = await channel.history()
    assert len(history.items) == 3


async def test_rest_publish_from_a_token_with_a_client_id_sets_it(bed: HubBed):
    rest = bed.rest(client_id="lab-system")
    await rest.channels.get("ward:3").publish("result", "ready")
    history = await rest.channels.get("ward:3").history()
    assert history.items[0].client_id == "lab-system"


async def test_attached_modes_follow_the_capability(bed: HubBed):
    client = bed.realtime(client_id="viewer", capability={"ward:*": ["subscribe"]})
    channel = client.channels.get("ward:1")
    await channel.attach()
    modes = set(channel.modes)
    assert modes == {Flag.SUBSCRIBE, Flag.PRESENCE_SUBSCRIBE}


async def test_publish_without_capability_is_nacked_40160(bed: HubBed):
    client = bed.realtime(client_id="viewer", capability={"ward:*": ["subscribe"]})
    channel = client.channels.get("ward:1")
    await channel.attach()
    with pytest.raises(AblyException) as err:
        await channel.publish("nope", "x")
    assert (err.value.code, err.value.status_code) == (40160, 401)
    assert channel.state == "attached"  # a refused publish does not fail the channel


async def test_attach_to_a_foreign_channel_fails_only_that_channel(bed: HubBed):
    client = bed.realtime(client_id="viewer", capability={"ward:1": ["subscribe"]})
    foreign = client.channels.get("record:Patient:9")
    with pytest.raises(AblyException) as err:
        await foreign.attach()
    assert (err.value.code, err.value.status_code) == (40160, 401)
    assert foreign.state == "failed"
    assert client.connection.state == "connected"
    allowed = client.channels.get("ward:1")
    await allowed.attach()
    assert allowed.state == "attached"


async def test_presence_without_capability_is_nacked_40160(bed: HubBed):
    client = bed.realtime(client_id="viewer", capability={"record:*": ["subscribe"]})
    channel = client.channels.get("record:Patient:1")
    await channel.attach()
    with pytest.raises(AblyException) as err:
        await channel.presence.enter("viewing")
    assert err.value.code == 40160
    assert bed.hub.stats()["members"] == 0


async def test_rest_refusals(bed: HubBed):
    rest = bed.rest(capability={"ward:*": ["subscribe"]})
    with pytest.raises(AblyException) as err:
        await rest.channels.get("ward:1").publish("x", "y")
    assert (err.value.code, err.value.status_code) == (40160, 401)
    with pytest.raises(AblyException) as err:
        await rest.channels.get("ward:1").history()
    assert err.value.code == 40160


async def test_detach_stops_delivery(bed: HubBed):
    listener = bed.realtime(client_id="listener")
    talker = bed.realtime(client_id="talker")
    inbox = Inbox()
    channel = listener.channels.get("room")
    await channel.subscribe(inbox.put)
    await talker.channels.get("room").publish("before", "1")
    await inbox.wait(1)
    await channel.detach()
    assert channel.state == "detached"
    await talker.channels.get("room").publish("after", "2")
    await listener.connection.ping()
    await talker.connection.ping()
    assert [m.name for m in inbox.items] == ["before"]


async def test_publishing_needs_no_attach_and_only_attached_connections_receive(bed: HubBed):
    subscriber = bed.realtime(client_id="sub")
    got = Inbox()
    await subscriber.channels.get("room").subscribe(got.put)
    raw = await bed.raw()  # never attaches "room"
    await raw.send({"action": 15, "channel": "room", "msgSerial": 0,
                    "messages": [{"name": "hi", "data": "there"}]})
    ack = await raw.recv_action(1)
    assert (ack["msgSerial"], ack["count"]) == (0, 1)
    assert len(ack["res"][0]["serials"]) == 1
    received = await got.wait(1)
    assert (received[0].name, received[0].data, received[0].client_id) == ("hi", "there", "raw")
    with pytest.raises(TimeoutError):
        await raw.recv(within_s=0.3)  # no echo to a connection that is not attached


async def test_history_carries_binary_payloads_across_formats(bed: HubBed):
    msgpack_rest, json_rest = bed.rest(binary=True), bed.rest(binary=False)
    await msgpack_rest.channels.get("bin").publish("from-msgpack", b"\x00\xff")
    await json_rest.channels.get("bin").publish("from-json", b"\x01\x02")
    for reader in (msgpack_rest, json_rest):
        page = await reader.channels.get("bin").history(direction="forwards")
        assert [(m.name, m.data) for m in page.items] == [
            ("from-msgpack", bytearray(b"\x00\xff")), ("from-json", bytearray(b"\x01\x02")),
        ]
