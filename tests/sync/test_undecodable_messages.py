"""Messages the SDK cannot decode are counted as rejected pokes, and a good poke in the same
frame still arrives (sync/realtime.py `_screen_messages`), against the real hub and SDK."""

from __future__ import annotations

import base64
import json

import httpx

from tests.sync.test_sync_live import workstation
from tests.waiting import wait_for as eventually
from wardsync.auth.session import Session
from wardsync.core.connection_status import ConnectionState
from wardsync.sandbox.server import Sandbox
from wardsync.sync.realtime import decodes

GOOD_SEQ = 10**6


def _poke(seq: int) -> dict[str, object]:
    return {"type": "RESOURCE_CHANGED", "resourceType": "Patient", "id": "pat-12",
            "versionId": "1", "seq": seq, "priority": "routine"}


async def test_a_bad_encoding_costs_only_its_own_message(
    sandbox: Sandbox, clinician: Session, http: httpx.AsyncClient
) -> None:
    """Attack (or a broken relay): one frame carries a good poke between messages whose
    `encoding` the SDK cannot apply. ably 3.1.4 used to drop the whole frame inside the SDK,
    logging its content; nothing was counted and the good poke was lost."""
    frame = [
        {"name": "poke", "data": "{not json", "encoding": "json"},
        {"name": "poke", "data": json.dumps(_poke(GOOD_SEQ)), "encoding": "json"},
        {"name": "poke", "data": "%%% not base64 %%%", "encoding": "base64"},
        {"name": "poke", "data": "cbxr", "encoding": "rot13"},
    ]
    async with workstation(sandbox, clinician, http) as (ws, metrics):
        await eventually(lambda: ws.status.state is ConnectionState.LIVE, what="live")
        assert ws.realtime is not None
        rejected_before = ws.intake.rejected_total
        key = base64.b64encode(sandbox.hub_key.encode()).decode()
        response = await http.post(
            f"http://127.0.0.1:{sandbox.hub.port}/channels/ward:{sandbox.ward}/messages",
            json=frame, headers={"Authorization": f"Basic {key}"})
        assert response.status_code == 201, response.text
        await eventually(lambda: ws.intake.rejected_total - rejected_before == 3,
                         what="three rejections")
        await eventually(lambda: any(e.get("seq") == GOOD_SEQ
                                     for e in metrics.of("poke_received")), what="good poke")
        assert ws.intake.rejected["bad_encoding"] == 3
        assert ws.realtime.undecodable == 3
        assert ws.realtime.state == "connected"
        rejected = [e["reason"] for e in metrics.of("poke_rejected")]
        assert rejected.count("bad_encoding") == 3
        assert "not json" not in repr(metrics.events) and "cbxr" not in repr(metrics.events)


def test_what_counts_as_decodable() -> None:
    assert decodes({"data": '{"a": 1}', "encoding": "json"})
    assert decodes({"data": base64.b64encode(b"x").decode(), "encoding": "base64"})
    assert decodes({"data": "plain"})
    for bad in ({"data": "{", "encoding": "json"}, {"data": "abc", "encoding": "base64"},
                {"data": "x", "encoding": "rot13"}, {"data": 5, "encoding": "json"},
                {"data": "x", "encoding": 7}, "not a message", None):
        assert not decodes(bad), bad
