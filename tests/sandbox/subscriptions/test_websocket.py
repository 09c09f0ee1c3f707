"""The websocket channel: binding tokens, bind-with-token, handshake, events, heartbeats."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.parameters import Parameters
from subs_bed import SubsBed, event_numbers, notification_type, param, subscription, until


async def websocket_subscription(bed: SubsBed, **kwargs: Any) -> str:
    sub_id = await bed.subscribe(subscription("", channel_type="websocket", **kwargs))
    await until(lambda: bed.service.spec(sub_id) is not None
                and bed.service.spec(sub_id).status == "active", bed.timer)  # type: ignore[union-attr]
    return sub_id


async def binding_token(bed: SubsBed, sub_id: str) -> dict[str, Any]:
    r = await bed.relay.get(f"/Subscription/{sub_id}/$get-ws-binding-token")
    assert r.status_code == 200, r.text
    Parameters.model_validate(r.json())
    return {p["name"]: next(v for k, v in p.items() if k.startswith("value"))
            for p in r.json()["parameter"]}


async def receive_bundle(ws: aiohttp.ClientWebSocketResponse, bed: SubsBed) -> dict[str, Any]:
    msg = await ws.receive(timeout=10)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    bundle: dict[str, Any] = json.loads(msg.data)
    Bundle.model_validate(bundle)
    return bundle


async def test_bind_with_token_then_handshake_events_and_heartbeats(bed: SubsBed) -> None:
    sub_id = await websocket_subscription(bed, heartbeat_s=5)
    token = await binding_token(bed, sub_id)
    assert token["subscription"] == f"{bed.base}/Subscription/{sub_id}"
    assert token["websocket-url"].startswith("ws://")
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(token["websocket-url"]) as ws:
        await ws.send_str(f"bind-with-token: {token['token']}")
        handshake = await receive_bundle(ws, bed)
        assert notification_type(handshake) == "handshake"
        obs_id = await bed.write_observation()
        await until(lambda: bed.service.matched_through == bed.store.last_seq(), bed.timer,
                    step_s=0.1)
        event = await receive_bundle(ws, bed)
        assert notification_type(event) == "event-notification"
        assert event_numbers(event) == [1]
        assert event["entry"][1]["fullUrl"] == f"{bed.base}/Observation/{obs_id}"
        await bed.timer.advance(5.5)
        heartbeat = await receive_bundle(ws, bed)
        assert notification_type(heartbeat) == "heartbeat"
        assert param(heartbeat["entry"][0]["resource"],
                     "events-since-subscription-start")[0]["valueString"] == "1"


async def test_events_committed_before_binding_arrive_after_the_handshake(bed: SubsBed) -> None:
    sub_id = await websocket_subscription(bed)
    await bed.write_observation()
    await bed.write_observation()
    await until(lambda: bed.service.matched_through == bed.store.last_seq(), bed.timer)
    token = await binding_token(bed, sub_id)
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(token["websocket-url"]) as ws:
        await ws.send_str(f"bind-with-token: {token['token']}")
        assert notification_type(await receive_bundle(ws, bed)) == "handshake"
        numbers: list[int] = []
        while len(numbers) < 2:
            numbers += event_numbers(await receive_bundle(ws, bed))
        assert numbers == [1, 2]


async def test_expired_or_reused_token_is_refused(bed: SubsBed) -> None:
    sub_id = await websocket_subscription(bed)
    token = await binding_token(bed, sub_id)
    bed.timer.set_wall(bed.timer.wall() + bed.service.websockets.ttl_s + 1)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(token["websocket-url"]) as ws:
            await ws.send_str(f"bind-with-token: {token['token']}")
            msg = await ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 1008
        fresh = await binding_token(bed, sub_id)
        async with session.ws_connect(fresh["websocket-url"]) as ws:
            await ws.send_str(f"bind-with-token: {fresh['token']}")
            assert notification_type(await receive_bundle(ws, bed)) == "handshake"
        async with session.ws_connect(fresh["websocket-url"]) as ws:
            await ws.send_str(f"bind-with-token: {fresh['token']}")  # single use
            msg = await ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1008
        async with session.ws_connect(fresh["websocket-url"]) as ws:
            await ws.send_str("hello")
            msg = await ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1008


async def test_binding_token_only_for_websocket_subscriptions_and_the_relay(
        bed: SubsBed) -> None:
    sub_id = await bed.subscribe(subscription("http://127.0.0.1:9/hook"))
    r = await bed.relay.get(f"/Subscription/{sub_id}/$get-ws-binding-token")
    assert r.status_code == 400
    ws_id = await websocket_subscription(bed)
    r = await bed.clients["desktop"].get(f"/Subscription/{ws_id}/$get-ws-binding-token")
    assert r.status_code == 403
