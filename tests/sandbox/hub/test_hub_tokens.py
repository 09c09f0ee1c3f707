"""Token life: server-initiated renewal, AUTH replies, capability changes, expiry, and the
REST token endpoints (requestToken with the SDK's MAC, /time, 401 retry)."""

from __future__ import annotations

import asyncio
import time

import pytest
from ably import AblyException, AblyRealtime, AblyRest
from hub_harness import (
    FAST_SDK,
    KEY_NAME,
    KEY_SECRET,
    HubBed,
    Inbox,
    connected,
    connection_id,
    wait_until,
)


@pytest.mark.parametrize("binary", [True, False])
async def test_token_is_renewed_repeatedly_without_interrupting_delivery(bed: HubBed,
                                                                         binary: bool):
    # 1.6 s tokens: the hub asks for a new one (AUTH) at half-life, about every 0.8 s.
    client = bed.realtime(client_id="ward-screen", ttl_s=1.6, binary=binary)
    inbox = Inbox()
    channel = client.channels.get("ward:1")
    await channel.subscribe(inbox.put)
    first_id = connection_id(client)
    states = Inbox()
    client.connection.on(states.put)
    rest = bed.rest()
    sent = 0
    started = time.monotonic()
    while len(client.auth_calls) < 4 and time.monotonic() - started < 8:
        await rest.channels.get("ward:1").publish("poke", {"seq": sent})
        sent += 1
        await asyncio.sleep(0.05)
    assert len(client.auth_calls) >= 4, "three renewals after the first token"
    await inbox.wait(sent)
    await client.connection.ping()
    assert [m.data["seq"] for m in inbox.items] == list(range(sent))
    assert connection_id(client) == first_id
    assert client.connection.state == "connected"
    assert {change.current for change in states.items} == {"connected"}  # updates only
    counters = bed.hub.stats()["counters"]
    assert counters["reauthorizations"] >= 3 and counters["renewals_requested"] >= 3
    assert counters.get("token_expiries", 0) == 0


async def test_new_token_with_less_capability_fails_the_lost_channel(bed: HubBed):
    grants = [{"ward:1": ["subscribe"], "ward:2": ["subscribe"]}]
    client = bed.realtime(client_id="ward-screen", capability=lambda: grants[-1])
    kept, lost = client.channels.get("ward:1"), client.channels.get("ward:2")
    await kept.attach()
    await lost.attach()
    grants.append({"ward:1": ["subscribe"]})
    first_id = connection_id(client)
    await client.auth.authorize()
    await wait_until(lambda: lost.state == "failed", what="lost channel to fail")
    assert lost.error_reason.code == 40160
    await wait_until(lambda: kept.state == "attached", what="kept channel re-attached")
    assert connection_id(client) == first_id
    assert client.connection.state == "connected"


async def test_ignored_renewal_request_ends_in_disconnected_40142(bed: HubBed):
    raw = await bed.raw(token=bed.token(client_id="old-desk", ttl_s=1.0)["token"])
    await raw.recv_action(4)
    renewal = await raw.recv_action(17, within_s=1.0)
    assert set(renewal) == {"action"}
    disconnected = await raw.recv_action(6, within_s=2.0)
    assert (disconnected["error"]["code"], disconnected["error"]["statusCode"]) == (40142, 401)
    with pytest.raises(ConnectionError):
        await raw.recv(within_s=2.0)
    stats = bed.hub.stats()
    assert stats["counters"]["token_expiries"] == 1
    assert stats["detached_connections"] == 1  # still resumable with a fresh token


async def test_auth_with_another_identity_fails_the_connection(bed: HubBed):
    raw = await bed.raw(token=bed.token(client_id="alice")["token"])
    await raw.recv_action(4)
    await raw.send({"action": 17, "auth": {"accessToken": bed.token(client_id="bob")["token"]}})
    error = await raw.recv_action(9)
    assert error["error"]["code"] == 40102
    assert bed.hub.stats()["connections"] == 0


async def test_auth_with_a_bad_token_disconnects_with_a_token_error(bed: HubBed):
    raw = await bed.raw()
    await raw.recv_action(4)
    await raw.send({"action": 17, "auth": {"accessToken": "forged.token"}})
    frame = await raw.recv_action(6)
    assert 40140 <= frame["error"]["code"] < 40150


async def test_auth_reply_keeps_the_connection_and_its_key(bed: HubBed):
    raw = await bed.raw(token=bed.token(client_id="alice")["token"])
    first = await raw.recv_action(4)
    await raw.send({"action": 17, "auth": {"accessToken": bed.token(client_id="alice")["token"]}})
    again = await raw.recv_action(4)
    assert again["connectionId"] == first["connectionId"]
    key = first["connectionDetails"]["connectionKey"]
    assert again["connectionDetails"]["connectionKey"] == key
    assert "error" not in again


@pytest.mark.parametrize("binary", [True, False])
async def test_key_with_use_token_auth_requests_tokens_with_a_signed_request(bed: HubBed,
                                                                             binary: bool):
    rest = AblyRest(key=f"{KEY_NAME}:{KEY_SECRET}", use_token_auth=True, endpoint="127.0.0.1",
                    port=bed.port, tls=False, use_binary_protocol=binary, query_time=True)
    bed.rest_clients.append(rest)
    await rest.channels.get("ward:9").publish("lab", "result")
    details = rest.auth.token_details
    assert details.token and details.expires > time.time() * 1000
    realtime = AblyRealtime(key=f"{KEY_NAME}:{KEY_SECRET}", use_token_auth=True,
                            endpoint=f"127.0.0.1:{bed.port}/", tls=False,
                            use_binary_protocol=binary, **FAST_SDK)
    bed.realtime_clients.append(realtime)
    history = await realtime.channels.get("ward:9").history()
    assert [m.data for m in history.items] == ["result"]
    await connected(realtime)


async def test_bad_token_request_is_refused(bed: HubBed):
    wrong = AblyRest(key=f"{KEY_NAME}:not-the-secret", use_token_auth=True,
                     endpoint="127.0.0.1", port=bed.port, tls=False)
    bed.rest_clients.append(wrong)
    with pytest.raises(AblyException) as err:
        await wrong.channels.get("x").publish("a", "b")
    assert (err.value.code, err.value.status_code) == (40101, 401)


async def test_time_endpoint(bed: HubBed):
    rest = bed.rest()
    server_ms = await rest.time()
    assert abs(server_ms - time.time() * 1000) < 5000


async def test_rest_retries_once_after_an_expired_token(bed: HubBed):
    calls: list[int] = []

    async def auth_callback(params):
        calls.append(1)
        ttl = 0.001 if len(calls) == 1 else 600.0
        return bed.hub.mint_token(key_name=KEY_NAME, client_id=None, capability={"*": ["*"]},
                                  ttl_s=ttl)

    rest = AblyRest(endpoint="127.0.0.1", port=bed.port, tls=False, auth_callback=auth_callback)
    bed.rest_clients.append(rest)
    await asyncio.sleep(0.01)
    result = await rest.channels.get("ward:1").publish("x", "y")
    assert len(result.serials) == 1
    assert len(calls) == 2  # 401 40142 -> one re-authorize (RSA4b) -> success
