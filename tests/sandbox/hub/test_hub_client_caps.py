"""One user's token cannot exhaust the hub (docs/security/realtime-and-local.md §4): caps per
clientId on connections and channels, counting connections that lost their socket, so other
users still connect and attach. Real sockets and the real SDK on loopback."""

from __future__ import annotations

import asyncio

import pytest
from ably import AblyException
from hub_harness import HubBed, RawClient, connected, fast_config, wait_until

from wardsync.sandbox.hub.wire import Action


async def raw_as(bed: HubBed, client_id: str) -> tuple[RawClient, dict]:
    """A raw websocket with `client_id`'s token, and the first frame the hub sent it."""
    raw = await bed.raw(token=bed.token(client_id=client_id)["token"])
    return raw, await raw.recv()


async def test_a_flood_of_sockets_from_one_user_leaves_room_for_everyone_else(make_bed) -> None:
    # The review opened 510 sockets in under a second with one token; here the hub holds 50.
    bed = await make_bed(fast_config(max_connections=50, max_connections_per_client=20))
    opened = await asyncio.gather(*(raw_as(bed, "mallory") for _ in range(60)))
    actions = [first["action"] for _, first in opened]
    assert actions.count(Action.CONNECTED) == 20
    refused = [first for _, first in opened if first["action"] == Action.DISCONNECTED]
    assert len(refused) == 40
    assert {(f["error"]["code"], f["error"]["statusCode"]) for f in refused} == {(40111, 429)}
    assert bed.hub.stats()["counters"]["client_connections_refused"] == 40
    # Another user connects, through the SDK, at once.
    alice = bed.realtime(client_id="alice")
    await connected(alice)
    await alice.channels.get("record:Task:1").attach()

    # Sockets that vanish (no CLOSE) do not pile up: the user's longest-detached connection
    # makes room for their next one, so they never hold more than the cap.
    live = [raw for raw, first in opened if first["action"] == Action.CONNECTED]
    for raw in live[:5]:
        raw.crash()
    await wait_until(lambda: bed.hub.stats()["detached_connections"] == 5, what="detached")
    again = await asyncio.gather(*(raw_as(bed, "mallory") for _ in range(5)))
    assert [first["action"] for _, first in again] == [Action.CONNECTED] * 5
    assert bed.hub.stats()["connections"] == 20 + 1  # mallory's cap, and alice
    assert bed.hub.stats()["counters"]["client_connections_evicted"] == 5


@pytest.mark.slow
async def test_one_user_attaching_channels_everywhere_cannot_refuse_others(make_bed) -> None:
    # The review's 6 x 200 channels filled the hub (40114 for everyone); here the hub holds
    # 100 channels and one user 30.
    bed = await make_bed(fast_config(max_channels=100, max_channels_per_client=30))
    clients = [bed.realtime(client_id="mallory") for _ in range(3)]
    attached = refused = 0
    for k, client in enumerate(clients):
        await connected(client)
        for n in range(40):
            try:
                await client.channels.get(f"record:Task:m{k}-{n}").attach()
                attached += 1
            except AblyException as exc:
                assert exc.code == 90010, exc
                refused += 1
    assert (attached, refused) == (30, 90)
    assert bed.hub.stats()["channels"] == 30
    alice = bed.realtime(client_id="alice")
    await connected(alice)
    for n in range(30):  # another user still attaches up to their own cap
        await alice.channels.get(f"record:Task:a{n}").attach()
    assert bed.hub.stats()["channels"] == 60
    assert "channels_refused" not in bed.hub.stats()["counters"]  # the hub never filled


async def test_channels_held_by_a_vanished_connection_make_room_for_the_users_next_one(
        make_bed) -> None:
    bed = await make_bed(fast_config(max_channels_per_client=3, connection_state_ttl_s=120.0))
    raw, first = await raw_as(bed, "mallory")
    assert first["action"] == Action.CONNECTED
    for n in range(3):
        await raw.send({"action": Action.ATTACH, "channel": f"record:Task:{n}"})
        assert (await raw.recv_action(Action.ATTACHED))["channel"] == f"record:Task:{n}"
    raw.crash()  # its state (and its channels) would stay for 120 s
    await wait_until(lambda: bed.hub.stats()["detached_connections"] == 1, what="detached")
    client = bed.realtime(client_id="mallory")
    await connected(client)
    for n in range(3, 6):
        await client.channels.get(f"record:Task:{n}").attach()
    assert bed.hub.stats()["detached_connections"] == 0  # forgotten to make room
    with pytest.raises(AblyException) as over:
        await client.channels.get("record:Task:6").attach()
    assert over.value.code == 90010
