"""Test bed for the hub: a real Hub on loopback, real `ably` SDK clients, raw websockets.

Clients point at the hub as docs/realtime-protocol.md §1 prescribes: realtime clients use
`endpoint="127.0.0.1:P/"` (trailing slash, so their REST calls work too), REST-only clients
`endpoint="127.0.0.1", port=P`, always `tls=False` and short retry timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import msgpack
from ably import AblyRealtime, AblyRest

from wardsync.sandbox.hub import Hub, HubConfig

KEY_NAME = "sandbox.root"
KEY_SECRET = "test-only-secret-0123456789"
ALL = {"*": ["*"]}
UNSET: Any = object()

# Short SDK timeouts (defaults are 10-30 s): reconnects in tests take well under a second.
FAST_SDK = {
    "realtime_request_timeout": 2000,
    "disconnected_retry_timeout": 300,
    "suspended_retry_timeout": 1000,
    "channel_retry_timeout": 500,
}


def fast_config(**overrides: Any) -> HubConfig:
    values: dict[str, Any] = {
        "heartbeat_interval_s": 1.0,
        "max_idle_interval_ms": 5000,
        "presence_grace_s": 0.5,
        "connection_state_ttl_s": 30.0,
    }
    values.update(overrides)
    return HubConfig(**values)


async def wait_until(predicate: Callable[[], bool], within_s: float = 5.0,
                     what: str = "condition") -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def connection_id(client: AblyRealtime) -> str | None:
    return client.connection.connection_manager.connection_id


async def connected(client: AblyRealtime, within_s: float = 5.0) -> None:
    await wait_until(lambda: client.connection.state == "connected", within_s, "connected")


class Inbox:
    """Collects whatever a listener receives (`put` is the listener; the SDK accepts only
    functions and methods); `wait(n)` waits for n items."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def put(self, item: Any) -> None:
        self.items.append(item)

    async def wait(self, count: int, within_s: float = 5.0) -> list[Any]:
        await wait_until(lambda: len(self.items) >= count, within_s, f"{count} items")
        return self.items


class RawClient:
    """A websocket client speaking the wire protocol by hand (malformed-frame and crash
    tests, and to look at frames exactly as the hub sends them)."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse,
                 binary: bool) -> None:
        self.session = session
        self.ws = ws
        self.binary = binary

    async def send(self, message: dict[str, Any]) -> None:
        if self.binary:
            await self.ws.send_bytes(msgpack.packb(message, use_bin_type=True))
        else:
            await self.ws.send_str(json.dumps(message))

    async def recv(self, within_s: float = 3.0, *,
                   skip_heartbeats: bool = True) -> dict[str, Any]:
        deadline = time.monotonic() + within_s
        while True:
            msg = await self.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            if msg.type is aiohttp.WSMsgType.BINARY:
                frame = msgpack.unpackb(msg.data, raw=False)
            elif msg.type is aiohttp.WSMsgType.TEXT:
                frame = json.loads(msg.data)
            else:
                raise ConnectionError(f"socket ended: {msg.type.name}")
            if skip_heartbeats and frame.get("action") == 0 and "id" not in frame:
                continue
            return frame

    async def recv_action(self, action: int, within_s: float = 3.0) -> dict[str, Any]:
        deadline = time.monotonic() + within_s
        while True:
            frame = await self.recv(max(0.01, deadline - time.monotonic()))
            if frame.get("action") == action:
                return frame

    def crash(self) -> None:
        """Vanish without CLOSE or a websocket close frame, as a killed process would."""
        sock = self.ws.get_extra_info("socket")
        assert sock is not None
        sock.shutdown(socket.SHUT_RDWR)

    async def close(self) -> None:
        if not self.ws.closed:
            await self.ws.close()
        await self.session.close()


class HubBed:
    """A started hub plus every client made through it, all closed by `close()`."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.realtime_clients: list[AblyRealtime] = []
        self.rest_clients: list[AblyRest] = []
        self.raw_clients: list[RawClient] = []
        self.tokens_issued: list[dict[str, Any]] = []

    @property
    def port(self) -> int:
        return self.hub.port

    def token(self, *, client_id: str | None = None, capability: dict[str, list[str]] = ALL,
              ttl_s: float = 600.0) -> dict[str, Any]:
        details = self.hub.mint_token(key_name=KEY_NAME, client_id=client_id,
                                      capability=capability, ttl_s=ttl_s)
        self.tokens_issued.append(details)
        return details

    def realtime(
        self,
        *,
        client_id: str | None = None,
        token_client_id: Any = UNSET,
        capability: dict[str, list[str]] | Callable[[], dict[str, list[str]]] = ALL,
        ttl_s: float = 600.0,
        binary: bool = True,
        **options: Any,
    ) -> AblyRealtime:
        """A realtime client whose async auth_callback mints hub tokens (§8: it must be
        async). The token's clientId defaults to the client's own (the clientId trap)."""
        token_cid = client_id if token_client_id is UNSET else token_client_id
        calls: list[dict[str, Any]] = []

        async def auth_callback(params: dict[str, Any]) -> dict[str, Any]:
            calls.append(params)
            cap = capability() if callable(capability) else capability
            return self.token(client_id=token_cid, capability=cap, ttl_s=ttl_s)

        kwargs: dict[str, Any] = {**FAST_SDK, **options}
        if client_id is not None:
            kwargs["client_id"] = client_id
        client = AblyRealtime(
            endpoint=f"127.0.0.1:{self.port}/", tls=False, use_binary_protocol=binary,
            auth_callback=auth_callback, **kwargs,
        )
        client.auth_calls = calls  # type: ignore[attr-defined]
        self.realtime_clients.append(client)
        return client

    def rest(self, *, binary: bool = True, client_id: str | None = None,
             capability: dict[str, list[str]] = ALL, **options: Any) -> AblyRest:
        async def auth_callback(params: dict[str, Any]) -> dict[str, Any]:
            return self.token(client_id=client_id, capability=capability)

        client = AblyRest(endpoint="127.0.0.1", port=self.port, tls=False,
                          use_binary_protocol=binary, auth_callback=auth_callback, **options)
        self.rest_clients.append(client)
        return client

    async def raw(self, *, binary: bool = False, token: str | None = None,
                  query: dict[str, str] | None = None) -> RawClient:
        params = {"v": "5", "accessToken": token or self.token(client_id="raw")["token"]}
        if binary:
            params["format"] = "msgpack"
        params.update(query or {})
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(f"http://127.0.0.1:{self.port}/", params=params)
        except aiohttp.ClientError:
            await session.close()
            raise
        client = RawClient(session, ws, binary)
        self.raw_clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.realtime_clients:
            # Also close FAILED clients: the SDK leaves its connect timers running otherwise.
            if client.connection.state == "connecting":
                # Closing mid-connect makes the SDK log a stray task exception.
                with contextlib.suppress(AssertionError):
                    await wait_until(lambda c=client: c.connection.state != "connecting", 3)
            if client.connection.state != "closed":
                await asyncio.wait_for(client.close(), 5)
        for rest in self.rest_clients:
            await rest.close()
        for raw in self.raw_clients:
            await raw.close()
        await self.hub.stop()
