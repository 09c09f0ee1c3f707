"""Bad input and caps: malformed frames never hurt the hub or other connections, and every
cap (connections, channels, members, history, queues) is enforced deliberately."""

from __future__ import annotations

import base64
import json

import aiohttp
import msgpack
import pytest
from ably import AblyException
from hub_harness import HubBed, Inbox, RawClient, connected, fast_config, wait_until

from wardsync.sandbox.hub.capability import FULL
from wardsync.sandbox.hub.state import HubState
from wardsync.sandbox.hub.tokens import Credentials
from wardsync.sandbox.hub.wire import Action, OutFrame


async def _expect_nack(raw: RawClient, frame: dict, code: int) -> None:
    await raw.send(frame)
    nack = await raw.recv_action(2)
    assert (nack["msgSerial"], nack["error"]["code"]) == (frame["msgSerial"], code)


@pytest.mark.parametrize("binary", [True, False])
async def test_malformed_frames_are_dropped_and_harm_nobody(bed: HubBed, binary: bool):
    bystander = bed.realtime(client_id="bystander")
    inbox = Inbox()
    await bystander.channels.get("room").subscribe(inbox.put)
    raw = await bed.raw(binary=binary)
    await raw.recv_action(4)
    junk: list[str | bytes] = [
        "{not json", "[1, 2, 3]", '{"action": "attach"}', '{"action": 99}',
        '{"action": 10}', '{"action": 15, "channel": "room", "messages": []}',
        '{"action": 0, "id": 7}', '{"action": 17, "auth": "nope"}',
        b"\xc1\xc1", msgpack.packb({"action": 15, "channel": "room"}),
        msgpack.packb([1, 2]),
    ]
    for frame in junk:
        if isinstance(frame, bytes):
            await raw.ws.send_bytes(frame)
        else:
            await raw.ws.send_str(frame)
    # Frames that parse but are wrong in substance get a NACK or a channel ERROR instead.
    await _expect_nack(raw, {"action": 15, "channel": "room", "msgSerial": 0,
                             "messages": "not a list"}, 40000)
    await _expect_nack(raw, {"action": 15, "channel": "room", "msgSerial": 1,
                             "messages": [{"data": 42}]}, 40013)
    await _expect_nack(raw, {"action": 15, "channel": "room", "msgSerial": 2,
                             "messages": [{"data": "x" * 70_000}]}, 40009)
    await _expect_nack(raw, {"action": 15, "channel": "room", "msgSerial": 3,
                             "messages": [{"data": "x", "clientId": "mallory"}]}, 40012)
    await _expect_nack(raw, {"action": 14, "channel": "room", "msgSerial": 4,
                             "presence": [{"action": 2}]}, 91001)
    await _expect_nack(raw, {"action": 21, "channel": "room", "msgSerial": 5}, 40000)
    await _expect_nack(raw, {"action": 15, "channel": ":bad", "msgSerial": 6,
                             "messages": [{"data": "x"}]}, 40010)
    await raw.send({"action": 10, "channel": "[?rewind=1]room", "params": None})
    error = await raw.recv_action(9)
    assert (error["channel"], error["error"]["code"]) == ("[?rewind=1]room", 40010)
    if binary:
        await _expect_nack(raw, {"action": 15, "channel": "room", "msgSerial": 7,
                                 "messages": [{"data": "x", "extras": {b"k": 1}}]}, 40013)
    else:
        await raw.ws.send_str('{"action": 15, "channel": "room", "msgSerial": 7,'
                              ' "messages": [{"data": "\\ud800 lone surrogate"}]}')
        nack = await raw.recv_action(2)
        assert (nack["msgSerial"], nack["error"]["code"]) == (7, 40013)
    # The raw connection still works, and so does everyone else.
    await raw.send({"action": 0, "id": "still-here"})
    assert (await raw.recv_action(0))["id"] == "still-here"
    await bystander.channels.get("room").publish("ok", "fine")
    assert [m.name for m in await inbox.wait(1)] == ["ok"]
    assert bystander.connection.state == "connected"
    assert bed.hub.stats()["malformed_frames"] == len(junk)


async def test_too_many_malformed_frames_fail_that_connection_only(make_bed):
    bed = await make_bed(fast_config(max_malformed_frames=3))
    bystander = bed.realtime(client_id="bystander")
    await connected(bystander)
    raw = await bed.raw()
    await raw.recv_action(4)
    for _ in range(4):
        await raw.ws.send_str("garbage")
    error = await raw.recv_action(9)
    assert error["error"]["code"] == 80013 and "channel" not in error
    with pytest.raises(ConnectionError):
        await raw.recv(within_s=2.0)
    assert bystander.connection.state == "connected"
    await bystander.connection.ping()


async def test_rest_rejects_bad_requests_clearly(bed: HubBed):
    token = bed.token(client_id="tool")["token"]
    bearer = {"Authorization": "Bearer " + base64.b64encode(token.encode()).decode()}
    base = f"http://127.0.0.1:{bed.port}"
    async with aiohttp.ClientSession() as http:
        cases = [
            ("POST", "/channels/room/messages", bearer, b"{oops", 400, 40000),
            ("POST", "/channels/room/messages", bearer, b'[{"data": 5}]', 400, 40013),
            ("GET", "/channels/room/messages?limit=0", bearer, None, 400, 40003),
            ("GET", "/channels/room/messages?direction=up", bearer, None, 400, 40003),
            ("GET", "/channels/room/nothing", bearer, None, 404, 40400),
            ("GET", "/channels/room/messages", {}, None, 401, 40101),
            ("GET", "/channels/room/messages", {"Authorization": "Bearer !!"}, None, 401, 40145),
            ("GET", "/channels/%3Abad/messages", bearer, None, 400, 40010),
            ("POST", "/keys/sandbox.root/requestToken", {}, b'{"keyName": 1}', 400, 40003),
        ]
        for method, path, headers, body, status, code in cases:
            async with http.request(method, base + path, headers=headers, data=body) as resp:
                assert resp.status == status, path
                assert (await resp.json())["error"]["code"] == code, path
                assert resp.headers["X-Ably-Errorcode"] == str(code)
        # Channel names travel quote_plus-encoded; '/' inside a name is fine.
        async with http.post(f"{base}/channels/ward%2F7+east/messages", headers=bearer,
                             json={"name": "n", "data": "d"}) as resp:
            assert resp.status == 201
    assert "ward/7 east" in bed.hub.stats()["history"]


async def test_connection_cap_refuses_then_evicts_the_longest_detached(make_bed):
    bed = await make_bed(fast_config(max_connections=2))
    first = await bed.raw()
    await first.recv_action(4)
    second = await bed.raw()
    await second.recv_action(4)
    third = await bed.raw()
    refused = await third.recv()
    # DISCONNECTED with an error (never without one, §3): the SDK retries later.
    assert (refused["action"], refused["error"]["code"]) == (6, 40111)
    first.crash()
    await wait_until(lambda: bed.hub.stats()["live_connections"] == 1, what="drop noticed")
    fourth = await bed.raw()
    assert (await fourth.recv())["action"] == 4
    stats = bed.hub.stats()
    assert stats["connections"] == 2 and stats["counters"]["connections_evicted"] == 1


async def test_channel_cap_refuses_then_evicts_an_idle_channel(make_bed):
    bed = await make_bed(fast_config(max_channels=2))
    client = bed.realtime(client_id="c")
    one, two = client.channels.get("one"), client.channels.get("two")
    await one.attach()
    await two.attach()
    three = client.channels.get("three")
    with pytest.raises(AblyException) as err:
        await three.attach()
    assert (err.value.code, err.value.status_code) == (40114, 429)
    rest = bed.rest()
    with pytest.raises(AblyException) as err:
        await rest.channels.get("four").publish("x", "y")
    assert err.value.code == 40114
    await one.detach()  # "one" is now idle: the least recently used idle channel goes
    await rest.channels.get("four").publish("x", "y")
    assert set(bed.hub.stats()["history"]) == {"two", "four"}
    assert bed.hub.stats()["counters"]["channels_evicted"] == 1


async def test_per_connection_channel_cap(make_bed):
    bed = await make_bed(fast_config(max_channels_per_connection=2))
    client = bed.realtime(client_id="c")
    await client.channels.get("a").attach()
    await client.channels.get("b").attach()
    with pytest.raises(AblyException) as err:
        await client.channels.get("c").attach()
    assert err.value.code == 90010


async def test_history_cap_keeps_the_newest(make_bed):
    bed = await make_bed(fast_config(history_limit=3))
    rest = bed.rest()
    for seq in range(5):
        await rest.channels.get("room").publish("m", json.dumps(seq))
    history = await rest.channels.get("room").history()
    assert [m.data for m in history.items] == ["4", "3", "2"]
    assert bed.hub.stats()["history"] == {"room": 3}


async def test_member_cap(make_bed):
    bed = await make_bed(fast_config(max_members_per_channel=2))
    desk = bed.realtime(client_id="*")
    channel = desk.channels.get("ward:1")
    await channel.attach()
    await channel.presence.enter_client("a")
    await channel.presence.enter_client("b")
    with pytest.raises(AblyException) as err:
        await channel.presence.enter_client("c")
    assert err.value.code == 91003
    await channel.presence.update_client("a", "still fits")  # not a new member
    assert bed.hub.stats()["members"] == 2


class StuckSocket:
    """A socket that never drains: the hub state's only view of a stuck client."""

    binary = True
    last_write = 0.0

    def __init__(self) -> None:
        self.closed_with: list[OutFrame | None] = []

    def notify(self) -> None:
        pass

    def close_socket(self, final: OutFrame | None = None) -> None:
        self.closed_with.append(final)


def test_stuck_consumer_is_dropped_and_cannot_resume():
    state = HubState({"k": "s"}, fast_config(send_queue_limit=10))
    credentials = Credentials("k", None, FULL, None, None, is_token=False)
    socket = StuckSocket()
    conn = state.open(socket, credentials, "screen", None)
    state.attach(conn, "room", 0, None)
    publisher = Credentials("k", None, FULL, None, None, is_token=False)
    for seq in range(20):
        state.publish("room", [{"data": str(seq)}], credentials=publisher, client_id=None,
                      connection_id=None, proto_id=f"p{seq}")
    assert socket.closed_with == [None]  # dropped, no DISCONNECTED to a stuck socket
    assert conn.transport is None and conn.overflowed
    assert state.counters["slow_consumer_drops"] == 1
    again = StuckSocket()
    new = state.open(again, credentials, "screen", conn.key)
    assert new.id != conn.id
    connected_frame = new.outbox[0].message
    assert connected_frame["action"] == Action.CONNECTED
    assert connected_frame["error"]["code"] == 80008
    assert conn.id not in state.connections


async def test_oversized_frame_closes_only_that_socket(make_bed):
    bed = await make_bed(fast_config(max_inbound_frame_bytes=64 * 1024))
    bystander = bed.realtime(client_id="bystander")
    await connected(bystander)
    raw = await bed.raw()
    await raw.recv_action(4)
    await raw.ws.send_str("x" * (65 * 1024))
    with pytest.raises(ConnectionError):
        await raw.recv(within_s=2.0)
    await bystander.connection.ping()
    assert bystander.connection.state == "connected"
    assert bed.hub.stats()["detached_connections"] == 1  # resumable, like any drop


async def test_hub_lifecycle_api(make_bed):
    bed = await make_bed()
    hub = bed.hub
    assert hub.running and hub.endpoint == f"127.0.0.1:{hub.port}" and hub.port > 0
    with pytest.raises(RuntimeError):
        await hub.start()
    with pytest.raises(ValueError):
        hub.mint_token(key_name="no.such.key", client_id=None, capability={"*": ["*"]},
                       ttl_s=60)
    await hub.stop()
    await hub.stop()  # idempotent
    assert not hub.running and hub.stats()["running"] is False
    # Tokens are verified by signature alone, so ones minted now work after a restart.
    token = bed.token(client_id="later")["token"]
    await hub.start(port=bed.port)
    raw = await bed.raw(token=token)
    assert (await raw.recv())["action"] == 4
