"""Fault: malformed frames from every direction while the ward keeps writing.

- A misbehaving relay publishes pokes that are not pokes (junk, patient data, values in ids):
  each station rejects and counts them by reason, logs no content, and stays connected.
- The network corrupts frames on their way to the stations: frames the SDK cannot decode are
  dropped by it; frames that break the websocket protocol close the socket, and the station
  resumes the same connection at once.
- A rogue client floods the hub with garbage: the hub fails that one connection and nobody
  else notices.
Afterwards every station equals the server.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import msgpack
import pytest
from ably import AblyRest

from tests.faults.harness import assert_states, eventually, fault_bed, post_marker
from wardsync.core.connection_status import ConnectionState

pytestmark = pytest.mark.slow  # live fault injection: 5-35 s a test

PHI_MARKERS = ("Zzsample", "1950-01-01", "6.9 mmol")
RESUME_BOUND_S = 2.0  # a dropped socket of a connected client is retried at once (RTN15a)
CONVERGE_BOUND_S = 3.0


def bad_pokes(ward: str) -> list[object]:
    return [
        "not json at all",
        {"type": "RESOURCE_CHANGED", "resourceType": "Patient", "id": "pat-02", "versionId": "2",
         "seq": 10**6, "priority": "routine", "name": "Zzsample Amber"},
        {"type": "LAB_RESULT_READY", "resourceType": "Observation", "id": "K 6.9 mmol/L",
         "versionId": "1", "seq": 10**6 + 1, "priority": "routine"},
        {"type": "RESOURCE_CHANGED", "resourceType": "Patient", "id": "pat-02",
         "versionId": "1", "seq": 10**6 + 2, "priority": "routine", "birthDate": "1950-01-01"},
        {"type": "RESOURCE_CHANGED", "resourceType": "Observation", "id": "x", "versionId": 3,
         "seq": -1, "priority": "routine"},
        {"type": "NO_SUCH_TYPE", "resourceType": "Observation", "id": "x", "versionId": "1",
         "seq": 10**6 + 3, "priority": "routine"},
        ["a", "list"],
        {"type": "RESOURCE_CHANGED", "resourceType": "Observation", "id": "x" * 5000,
         "versionId": "1", "seq": 10**6 + 4, "priority": "routine"},
    ]


def ws_frame(payload: bytes, opcode: int = 2) -> bytes:
    """One unmasked server-to-client websocket frame (RFC 6455 §5.2), payload < 126 bytes."""
    assert len(payload) < 126
    return bytes([0x80 | opcode, len(payload)]) + payload


def corrupt_frames(ward: str) -> dict[str, tuple[bytes, bool]]:
    """name -> (frame, whether it breaks the websocket protocol and so the socket)."""
    junk_message = {"action": 15, "channel": ward, "channelSerial": "zz",
                    "messages": [{"name": "poke", "data": '{"x": 1}', "encoding": "json"}]}
    return {
        "undecodable msgpack": (ws_frame(b"\xc1\xc1\xc1"), False),
        "not a protocol message": (ws_frame(msgpack.packb(5)), False),
        "junk message on the ward channel": (ws_frame(msgpack.packb(junk_message)), False),
        "text frame that is not UTF-8": (ws_frame(b"\xff\xfe", opcode=1), True),  # §8.1
        "reserved opcode": (ws_frame(b"x", opcode=3), True),  # RFC 6455 §5.2
    }


async def rogue_client(hub_port: int, key: str, frames: int) -> aiohttp.WSMessage | None:
    """Connect with a valid key and send `frames` garbage frames; the hub's last word."""
    last = None
    async with aiohttp.ClientSession() as http, http.ws_connect(
        f"http://127.0.0.1:{hub_port}/", params={"key": key, "v": "5", "format": "msgpack"},
    ) as ws:
        for i in range(frames):
            if ws.closed:
                break
            garbage = [b"\xc1" * 8, msgpack.packb([1, 2, 3]), msgpack.packb({"action": 99}),
                       msgpack.packb({"action": "MESSAGE"})][i % 4]
            await ws.send_bytes(garbage)
        async for msg in ws:
            last = msg
    return last


async def test_malformed_frames_from_relay_network_and_rogue_client(
    seeded_data_dir: Path, tmp_path: Path
) -> None:
    async with fault_bed(seeded_data_dir, tmp_path) as bed:
        sb = bed.sandbox
        ward = f"ward:{sb.ward}"
        traffic = bed.traffic()
        traffic.start()
        t0 = time.monotonic()
        connection_ids = {s.name: s.ws.realtime.connection_id for s in bed.stations}

        # 1. A misbehaving relay.
        bad = bad_pokes(ward)
        rest = AblyRest(key=sb.hub_key, use_token_auth=True, endpoint=sb.config.host,
                        port=sb.hub.port, tls=False)
        try:
            for data in bad:
                await rest.channels.get(ward).publish("poke", data)
        finally:
            await rest.close()
        await eventually(lambda: all(s.ws.intake.rejected_total == len(bad)
                                     for s in bed.stations), 3.0, "every junk poke rejected")
        assert all(s.state is ConnectionState.LIVE for s in bed.stations)

        # 2. Corruption on the network, one frame at a time.
        for name, (frame, breaks_socket) in corrupt_frames(ward).items():
            sent_at = time.monotonic()
            assert bed.hub_proxy.inject_downstream(frame) == len(bed.stations)
            if breaks_socket:
                await eventually(
                    lambda t=sent_at: all(s.first_state_after("reconnecting", t) is not None
                                          for s in bed.stations),
                    2.0, f"{name}: the socket closed")
            await eventually(bed.all_live, RESUME_BOUND_S, f"{name}: live again")
            await asyncio.sleep(0.3)
        # Resumed, not replaced: the same connection, nothing to catch up from history.
        assert {s.name: s.ws.realtime.connection_id for s in bed.stations} == connection_ids
        assert all(s.ws.intake.rejected_total == len(bad) + 1 for s in bed.stations), (
            "the junk message on the ward channel was rejected like any junk poke")

        # 3. A rogue client: the hub fails it and carries on.
        t_rogue = time.monotonic()
        malformed_before = sb.hub.stats()["malformed_frames"]
        limit = sb.hub.config.max_malformed_frames
        last = await asyncio.wait_for(rogue_client(sb.hub.port, sb.hub_key, limit + 10), 10.0)
        assert last is not None and last.type is aiohttp.WSMsgType.BINARY
        assert msgpack.unpackb(last.data)["error"]["code"] == 80013, "failed by the hub"
        assert sb.hub.stats()["malformed_frames"] - malformed_before > limit
        marker = await post_marker(bed)
        await eventually(
            lambda: all(any(e["ref"] == marker for e in s.metrics.of("poke_received"))
                        for s in bed.stations), 2.0, "pokes flow after the rogue client")
        assert all(s.states_since(t_rogue) == [] for s in bed.stations)

        await traffic.stop()
        await bed.settle()
        await bed.wait_converged(CONVERGE_BOUND_S)
        bed.assert_consistent(traffic.log)
        assert_states(bed, t0, must={"reconnecting"}, allowed={"reconnecting", "live"})
        for s in bed.stations:
            logged = repr(s.metrics.events)
            assert not any(m in logged for m in PHI_MARKERS), f"{s.name} logged content"
            assert s.ws.intake.rejected["unknown_field"] >= 2, dict(s.ws.intake.rejected)
