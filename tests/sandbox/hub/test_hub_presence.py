"""Presence: enter/update/leave, attach-time SYNC, idempotent re-entry, leaving on CLOSE
and after a connection vanishes (grace period)."""

from __future__ import annotations

import asyncio
import time

import pytest
from ably import AblyException
from ably.types.presence import PresenceAction
from hub_harness import HubBed, Inbox, connected, connection_id, fast_config, wait_until


@pytest.mark.parametrize("binary", [True, False])
async def test_enter_update_leave_are_seen_by_others_and_the_sender(bed: HubBed, binary: bool):
    nurse = bed.realtime(client_id="nurse-a", binary=binary)
    observer = bed.realtime(client_id="observer", binary=not binary)
    seen, own = Inbox(), Inbox()
    await observer.channels.get("record:Patient:1").presence.subscribe(seen.put)
    channel = nurse.channels.get("record:Patient:1")
    await channel.presence.subscribe(own.put)
    await channel.presence.enter({"mode": "viewing"})
    await channel.presence.update({"mode": "editing"})
    await channel.presence.leave()
    for inbox in (seen, own):
        events = await inbox.wait(3)
        assert [(e.action, e.client_id) for e in events] == [
            (PresenceAction.ENTER, "nurse-a"),
            (PresenceAction.UPDATE, "nurse-a"),
            (PresenceAction.LEAVE, "nurse-a"),
        ]
        assert events[0].data == {"mode": "viewing"} and events[1].data == {"mode": "editing"}
        assert all(e.connection_id == connection_id(nurse) for e in events)
    assert bed.hub.stats()["members"] == 0


@pytest.mark.parametrize("binary", [True, False])
async def test_late_joiner_gets_members_from_the_attach_sync(make_bed, binary: bool):
    bed = await make_bed(fast_config(sync_page_size=2))  # five members -> three SYNC pages
    desk = bed.realtime(client_id="*", token_client_id="*")
    await connected(desk)
    channel = desk.channels.get("ward:5")
    await channel.attach()
    for bed_no in range(5):
        await channel.presence.enter_client(f"bed-{bed_no}", {"bed": bed_no})
    late = bed.realtime(client_id="late", binary=binary)
    members = await late.channels.get("ward:5").presence.get()
    assert sorted(m.client_id for m in members) == [f"bed-{n}" for n in range(5)]
    assert {m.client_id: m.data for m in members}["bed-3"] == {"bed": 3}
    assert all(m.action == PresenceAction.PRESENT for m in members)


async def test_wildcard_connection_must_name_the_member(bed: HubBed):
    desk = bed.realtime(client_id="*")  # the SDK needs client_id '*' to act for others
    await connected(desk)
    assert desk.connection.connection_details.client_id == "*"
    channel = desk.channels.get("ward:5")
    await channel.attach()
    with pytest.raises(AblyException) as err:
        await channel.presence.enter("x")  # RTP8j: '*' itself cannot be a member
    assert err.value.code == 40012
    await channel.presence.enter_client("bed-1", "x")
    assert bed.hub.stats()["members"] == 1
    # The hub enforces the same rules for clients that skip the SDK's checks.
    raw = await bed.raw(token=bed.token(client_id="*")["token"])
    await raw.send({"action": 10, "channel": "ward:5", "params": None})
    await raw.recv_action(11)
    await raw.send({"action": 14, "channel": "ward:5", "msgSerial": 0,
                    "presence": [{"action": 2, "data": "no id"}]})
    assert (await raw.recv_action(2))["error"]["code"] == 91000
    await raw.send({"action": 14, "channel": "ward:5", "msgSerial": 1,
                    "presence": [{"action": 2, "clientId": "*"}]})
    assert (await raw.recv_action(2))["error"]["code"] == 40012
    await raw.send({"action": 14, "channel": "ward:5", "msgSerial": 2,
                    "presence": [{"action": 2, "clientId": "bed-2"}]})
    assert (await raw.recv_action(1))["msgSerial"] == 2
    assert bed.hub.stats()["members"] == 2


async def test_reentry_after_reattach_is_idempotent(bed: HubBed):
    nurse = bed.realtime(client_id="nurse-b")
    observer = bed.realtime(client_id="observer")
    seen = Inbox()
    await observer.channels.get("record:Patient:2").presence.subscribe(seen.put)
    channel = nurse.channels.get("record:Patient:2")
    await channel.presence.enter("viewing")
    await seen.wait(1)
    reattached = Inbox()
    channel.on("attached", reattached.put)
    # authorize() -> AUTH -> CONNECTED (same connectionId) -> the SDK re-attaches every
    # channel and re-sends ENTER for its own members (RTP17i).
    await nurse.auth.authorize()
    await reattached.wait(1)
    await wait_until(
        lambda: bed.hub.stats()["counters"].get("presence_reentries_suppressed", 0) >= 1,
        what="the re-entry to reach the hub",
    )
    await observer.connection.ping()
    assert [(e.action, e.client_id) for e in seen.items] == [(PresenceAction.ENTER, "nurse-b")]
    members = await observer.channels.get("record:Patient:2").presence.get()
    assert [(m.client_id, m.data) for m in members] == [("nurse-b", "viewing")]


async def test_reentry_with_new_data_is_broadcast_as_update(bed: HubBed):
    nurse = bed.realtime(client_id="nurse-c")
    observer = bed.realtime(client_id="observer")
    seen = Inbox()
    await observer.channels.get("room").presence.subscribe(seen.put)
    channel = nurse.channels.get("room")
    await channel.presence.enter("viewing")
    await channel.presence.enter("editing")
    events = await seen.wait(2)
    assert [(e.action, e.data) for e in events] == [
        (PresenceAction.ENTER, "viewing"), (PresenceAction.UPDATE, "editing"),
    ]


async def test_close_leaves_members_at_once(bed: HubBed):
    nurse = bed.realtime(client_id="nurse-d")
    observer = bed.realtime(client_id="observer")
    seen = Inbox()
    await observer.channels.get("room").presence.subscribe(seen.put)
    await nurse.channels.get("room").presence.enter("here")
    await seen.wait(1)
    started = time.monotonic()
    await nurse.close()
    events = await seen.wait(2, within_s=2.0)
    assert time.monotonic() - started < bed.hub.config.presence_grace_s
    assert (events[1].action, events[1].client_id) == (PresenceAction.LEAVE, "nurse-d")
    assert await observer.channels.get("room").presence.get() == []
    assert bed.hub.stats()["connections"] == 1  # CLOSE forgets the connection: no resume


async def test_vanished_connection_leaves_after_the_grace_period(make_bed):
    bed = await make_bed(fast_config(presence_grace_s=0.6))
    observer = bed.realtime(client_id="observer")
    seen = Inbox()
    await observer.channels.get("room").presence.subscribe(seen.put)
    raw = await bed.raw(token=bed.token(client_id="crashing-desk")["token"])
    connected_frame = await raw.recv_action(4)
    await raw.send({"action": 10, "channel": "room", "params": None})
    await raw.recv_action(11)
    await raw.send({"action": 14, "channel": "room", "msgSerial": 0,
                    "presence": [{"action": 2, "data": "on shift"}]})
    assert (await raw.recv_action(1))["msgSerial"] == 0
    await seen.wait(1)
    raw.crash()
    crashed_at = time.monotonic()
    await asyncio.sleep(0.3)
    assert len(seen.items) == 1, "members must survive a short drop (the client may resume)"
    events = await seen.wait(2, within_s=3.0)
    assert time.monotonic() - crashed_at >= 0.55
    leave = events[1]
    assert (leave.action, leave.client_id) == (PresenceAction.LEAVE, "crashing-desk")
    assert leave.connection_id == connected_frame["connectionId"]
    assert not leave.id.startswith(f"{leave.connection_id}:")  # synthesized (RTP2b1)
    assert await observer.channels.get("room").presence.get() == []


@pytest.mark.parametrize("binary", [True, False])
async def test_rest_presence_lists_members(bed: HubBed, binary: bool):
    nurse = bed.realtime(client_id="nurse-e")
    await nurse.channels.get("record:Patient:3").presence.enter({"mode": "editing"})
    rest = bed.rest(binary=binary)
    page = await rest.channels.get("record:Patient:3").presence.get()
    assert [(m.client_id, m.data, m.action) for m in page.items] == [
        ("nurse-e", {"mode": "editing"}, PresenceAction.PRESENT),
    ]
    assert (await rest.channels.get("record:Patient:4").presence.get()).items == []


async def test_detach_leaves_the_connections_members(bed: HubBed):
    nurse = bed.realtime(client_id="nurse-f")
    observer = bed.realtime(client_id="observer")
    seen = Inbox()
    await observer.channels.get("room").presence.subscribe(seen.put)
    channel = nurse.channels.get("room")
    await channel.presence.enter("x")
    await seen.wait(1)
    await channel.detach()
    events = await seen.wait(2)
    assert events[1].action == PresenceAction.LEAVE
