"""An ATTACH naming an old channelSerial is continuity, not a history read: without the
`history` capability only messages inside the connection-state window are replayed
(docs/realtime-protocol.md §7; Ably sends a client that was away longer to the History API,
which needs `history`)."""

from __future__ import annotations

import asyncio
from typing import Any

from hub_harness import HubBed, RawClient, fast_config

from wardsync.sandbox.hub.wire import Action, Flag

CHANNEL = "ward:5"
WINDOW_S = 2.0  # connection_state_ttl_s: short, so "older than the window" is reached quickly


async def _attach_and_collect(raw: RawClient, serial: str) -> tuple[dict[str, Any], list[str]]:
    """ATTACH with `serial`; the ATTACHED frame and the names of the messages replayed."""
    await raw.recv_action(Action.CONNECTED)
    await raw.send({"action": Action.ATTACH, "channel": CHANNEL, "channelSerial": serial,
                    "flags": int(Flag.ATTACH_RESUME)})
    attached = await raw.recv_action(Action.ATTACHED)
    await raw.send({"action": Action.HEARTBEAT, "id": "fence"})  # replies come in order
    names: list[str] = []
    while (frame := await raw.recv()).get("id") != "fence":
        if frame.get("action") == Action.MESSAGE:
            names += [m["name"] for m in frame["messages"]]
    return attached, names


async def test_an_old_channel_serial_replays_only_the_continuity_window(make_bed) -> None:
    """Attack: a workstation token (subscribe only) attached once, kept the channelSerial,
    and attaches later with it to read everything retained since. It used to get every
    retained message, while REST history rightly answered 401."""
    bed: HubBed = await make_bed(fast_config(connection_state_ttl_s=WINDOW_S))
    subscribe_only = bed.token(client_id="nurse-7", capability={CHANNEL: ["subscribe"]})
    first = await bed.raw(token=subscribe_only["token"])
    await first.recv_action(Action.CONNECTED)
    await first.send({"action": Action.ATTACH, "channel": CHANNEL})
    old_serial = (await first.recv_action(Action.ATTACHED))["channelSerial"]
    await first.close()

    rest = bed.rest()
    for name in ("old-1", "old-2"):
        await rest.channels.get(CHANNEL).publish(name, "x")
    await asyncio.sleep(WINDOW_S + 0.3)  # the first two are now older than the window
    await rest.channels.get(CHANNEL).publish("recent-3", "x")

    attacker = await bed.raw(token=subscribe_only["token"])
    attached, replayed = await _attach_and_collect(attacker, old_serial)
    assert replayed == ["recent-3"]
    assert not attached["flags"] & Flag.RESUMED, "continuity did not hold: no RESUMED"
    assert bed.hub.stats()["counters"]["replay_withheld"] == 2

    # The same serial with the history capability is a history read, and allowed.
    historian = bed.token(client_id="audit", capability={CHANNEL: ["subscribe", "history"]})
    reader = await bed.raw(token=historian["token"])
    attached, replayed = await _attach_and_collect(reader, old_serial)
    assert replayed == ["old-1", "old-2", "recent-3"]
    assert attached["flags"] & Flag.RESUMED


async def test_a_return_within_the_window_replays_everything_missed(bed: HubBed) -> None:
    """The continuity a failed resume relies on stays: a subscriber back within the window
    gets every message it missed, and RESUMED (fast_config's window is 30 s)."""
    token = bed.token(client_id="ward-screen", capability={CHANNEL: ["subscribe"]})
    first = await bed.raw(token=token["token"])
    await first.recv_action(Action.CONNECTED)
    await first.send({"action": Action.ATTACH, "channel": CHANNEL})
    serial = (await first.recv_action(Action.ATTACHED))["channelSerial"]
    first.crash()
    rest = bed.rest()
    for name in ("a", "b", "c"):
        await rest.channels.get(CHANNEL).publish(name, "x")
    again = await bed.raw(token=token["token"])
    attached, replayed = await _attach_and_collect(again, serial)
    assert replayed == ["a", "b", "c"]
    assert attached["flags"] & Flag.RESUMED
    assert bed.hub.stats()["counters"].get("replay_withheld", 0) == 0
