"""Connecting the real SDK: formats, key and token auth, the clientId rules, ping, idle."""

from __future__ import annotations

import asyncio

import pytest
from ably import AblyRealtime
from hub_harness import (
    FAST_SDK,
    KEY_NAME,
    KEY_SECRET,
    HubBed,
    connected,
    connection_id,
    fast_config,
    wait_until,
)


@pytest.mark.parametrize("binary", [True, False])
async def test_connects_with_token_and_reports_connection_details(bed: HubBed, binary: bool):
    client = bed.realtime(client_id="nurse-one", binary=binary)
    await connected(client)
    details = client.connection.connection_details
    assert connection_id(client)
    assert details.connection_key.startswith(connection_id(client))
    assert details.max_idle_interval == bed.hub.config.max_idle_interval_ms
    assert client.auth.client_id == "nurse-one"
    assert client.auth_calls, "the async auth_callback supplied the token"
    stats = bed.hub.stats()
    assert stats["live_connections"] == 1 and stats["running"]


async def test_key_auth_over_websocket(bed: HubBed):
    client = AblyRealtime(key=f"{KEY_NAME}:{KEY_SECRET}", endpoint=f"127.0.0.1:{bed.port}",
                          tls=False, client_id="device-7", **FAST_SDK)
    bed.realtime_clients.append(client)
    await connected(client)
    assert client.auth.client_id == "device-7"


async def test_wrong_key_fails_the_connection(bed: HubBed):
    client = AblyRealtime(key=f"{KEY_NAME}:not-the-secret", endpoint=f"127.0.0.1:{bed.port}",
                          tls=False, **FAST_SDK)
    bed.realtime_clients.append(client)
    await wait_until(lambda: client.connection.state == "failed", what="failed")
    assert client.connection.error_reason.code == 40101


async def test_wildcard_token_lets_the_client_choose_its_id(bed: HubBed):
    # docs/realtime-protocol.md §8, the clientId trap: client_id set + token clientId '*' is fine.
    client = bed.realtime(client_id="alice", token_client_id="*")
    await connected(client)
    assert client.auth.client_id == "alice"
    channel = client.channels.get("room")
    await channel.attach()
    await channel.presence.enter("here")
    members = await channel.presence.get()
    assert [m.client_id for m in members] == ["alice"]


async def test_token_client_id_is_adopted_when_the_client_sets_none(bed: HubBed):
    client = bed.realtime(token_client_id="bob")
    await connected(client)
    assert client.auth.client_id == "bob"


async def test_anonymous_token_gives_an_anonymous_connection(bed: HubBed):
    client = bed.realtime(token_client_id=None)
    await connected(client)
    assert client.auth.client_id is None
    assert client.connection.connection_details.client_id is None


async def test_token_for_someone_else_is_refused_with_40102(bed: HubBed):
    raw = await bed.raw(token=bed.token(client_id="bob")["token"],
                        query={"clientId": "alice"})
    frame = await raw.recv()
    assert frame["action"] == 9
    assert (frame["error"]["code"], frame["error"]["statusCode"]) == (40102, 401)


async def test_expired_token_at_connect_is_a_token_error(bed: HubBed):
    expired = bed.hub.mint_token(key_name=KEY_NAME, client_id="x", capability={"*": ["*"]},
                                 ttl_s=0.001)
    await asyncio.sleep(0.01)
    raw = await bed.raw(token=expired["token"])
    frame = await raw.recv()
    assert frame["action"] == 9 and frame["error"]["code"] == 40142


@pytest.mark.parametrize("binary", [True, False])
async def test_ping_is_echoed(bed: HubBed, binary: bool):
    client = bed.realtime(client_id="pinger", binary=binary)
    await connected(client)
    rtt_ms = await client.connection.ping()
    assert 0 <= rtt_ms < 2000


async def test_heartbeats_keep_an_idle_connection_alive(make_bed):
    # maxIdleInterval 1.5 s + realtime_request_timeout 0.5 s: without heartbeats the SDK
    # would drop the connection (80003) after ~2 s of silence.
    bed = await make_bed(fast_config(max_idle_interval_ms=1500, heartbeat_interval_s=0.4))
    client = bed.realtime(client_id="idle", realtime_request_timeout=500)
    await connected(client)
    first_id = connection_id(client)
    states: list[str] = []
    client.connection.on(lambda change: states.append(change.current))
    await asyncio.sleep(3.0)
    assert client.connection.state == "connected"
    assert "disconnected" not in states
    assert connection_id(client) == first_id


async def test_unknown_format_is_refused(bed: HubBed):
    raw = await bed.raw(query={"format": "xml"})
    frame = await raw.recv()
    assert frame["action"] == 9 and frame["error"]["code"] == 40000


async def test_no_credentials_is_refused(bed: HubBed):
    raw = await bed.raw(query={"accessToken": ""})
    frame = await raw.recv()
    assert frame["action"] == 9 and frame["error"]["code"] == 40101
