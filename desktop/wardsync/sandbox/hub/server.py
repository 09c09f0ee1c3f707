"""`Hub`: the sandbox's Ably-compatible realtime hub, websockets and REST on one port.

The real, unmodified `ably` SDK (3.1.4) talks to it with
`endpoint="127.0.0.1:<port>/", tls=False` (see docs/hub.md and docs/realtime-protocol.md §1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from wardsync.sandbox.hub.config import HubConfig
from wardsync.sandbox.hub.realtime import RealtimeEndpoint
from wardsync.sandbox.hub.rest import RestApi
from wardsync.sandbox.hub.state import HubState
from wardsync.sandbox.hub.tokens import mint_token, now_ms

log = logging.getLogger("wardsync.sandbox.hub")

SOCKET_CLOSE_WAIT_S = 2.0
RUNNER_SHUTDOWN_TIMEOUT_S = 1.0


class Hub:
    """An Ably-compatible hub with its own `AppRunner`/`TCPSite`.

    `stop()` behaves like a crash and restart of the service: every socket is closed and all
    connection, presence and history state is forgotten, while tokens (self-contained, signed
    with the key secret) stay valid. `start()` may be called again, on the same port.
    """

    def __init__(self, keys: dict[str, str], config: HubConfig | None = None) -> None:
        if not keys:
            raise ValueError("the hub needs at least one key")
        for name, secret in keys.items():
            if not name or ":" in name or not secret:
                raise ValueError("key names must be non-empty without ':' and secrets non-empty")
        self._keys = dict(keys)
        self._config = config or HubConfig()
        self._state: HubState | None = None
        self._endpoint: RealtimeEndpoint | None = None
        self._runner: web.AppRunner | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self._host = "127.0.0.1"
        self._port = 0
        self._refuse_until = 0.0
        self._stopping = False

    @property
    def config(self) -> HubConfig:
        return self._config

    @property
    def port(self) -> int:
        """The bound port (0 before the first start)."""
        return self._port

    @property
    def endpoint(self) -> str:
        """`host:port`, as the SDK's `endpoint` option wants it (add a trailing `/` for
        clients that use both realtime and REST, docs/realtime-protocol.md §1)."""
        return f"{self._host}:{self._port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on `host:port` (0: any free port) and return the bound port."""
        if self._runner is not None:
            raise RuntimeError("hub already started")
        state = HubState(self._keys, self._config)
        endpoint = RealtimeEndpoint(state, refusing=self._refusing)
        rest = RestApi(state)
        app = web.Application(client_max_size=self._config.max_inbound_frame_bytes)
        app.router.add_get("/time", rest.time)
        app.router.add_post("/keys/{key_name}/requestToken", rest.request_token)
        app.router.add_route("*", "/channels/{tail:.+}", rest.channel)
        app.router.add_get("/{tail:.*}", endpoint.handle)  # websockets on any other path
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None,
            shutdown_timeout=RUNNER_SHUTDOWN_TIMEOUT_S,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        bound = runner.addresses[0]
        self._host, self._port = host, int(bound[1])
        self._state, self._endpoint, self._runner = state, endpoint, runner
        self._refuse_until = 0.0
        self._stopping = False
        self._maintenance = asyncio.create_task(self._maintain(state), name="hub-maintenance")
        log.info("hub listening on %s", self.endpoint)
        return self._port

    async def stop(self) -> None:
        """Close every socket and forget all state, like a crash; idempotent."""
        runner, endpoint, task = self._runner, self._endpoint, self._maintenance
        if runner is None:
            return
        # Clients reconnect at once when their socket drops; until the listener is gone
        # they are refused (503) rather than resuming into state about to be forgotten.
        self._stopping = True
        self._runner = self._endpoint = self._maintenance = None
        self._state = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if endpoint is not None:
            await endpoint.close_all(SOCKET_CLOSE_WAIT_S)
        await runner.cleanup()
        log.info("hub on port %s stopped", self._port)

    async def drop_connections(self, *, refuse_reconnects_s: float = 0.0) -> None:
        """Fault injection: close every websocket abruptly, without DISCONNECTED or CLOSED.

        Connections stay resumable (clients resume and get what they missed). With
        `refuse_reconnects_s`, websocket upgrades are answered 503 for that long, which
        keeps clients disconnected (they retry after `disconnected_retry_timeout`).
        """
        if self._endpoint is None:
            return
        if refuse_reconnects_s > 0:
            self._refuse_until = time.monotonic() + refuse_reconnects_s
        await self._endpoint.close_all(SOCKET_CLOSE_WAIT_S)

    def mint_token(
        self,
        *,
        key_name: str,
        client_id: str | None,
        capability: Mapping[str, Sequence[str]],
        ttl_s: float,
    ) -> dict[str, Any]:
        """A signed token for one of the hub's keys, as TokenDetails JSON (token, expires,
        issued in ms, capability as JSON text, clientId). Works whether or not the hub runs."""
        secret = self._keys.get(key_name)
        if secret is None:
            raise ValueError(f"unknown key {key_name!r}")
        return mint_token(key_name=key_name, key_secret=secret, client_id=client_id,
                          capability=capability, ttl_s=ttl_s)

    def stats(self) -> dict[str, Any]:
        """Counts for tests and diagnostics: connections, channels, members, buffered
        frames, history sizes, malformed frames and event counters."""
        caps = {
            "max_connections": self._config.max_connections,
            "max_channels": self._config.max_channels,
            "history_limit": self._config.history_limit,
            "resume_buffer_limit": self._config.resume_buffer_limit,
        }
        if self._state is None:
            return {"running": False, "connections": 0, "channels": 0, "members": 0,
                    "buffered_frames": 0, "history_messages": 0, "malformed_frames": 0,
                    "caps": caps}
        stats = self._state.stats()
        sessions = len(self._endpoint.sessions) if self._endpoint else 0
        stats.update(running=True, sockets=sessions, caps=caps)
        return stats

    def _refusing(self) -> bool:
        return self._stopping or time.monotonic() < self._refuse_until

    async def _maintain(self, state: HubState) -> None:
        while True:
            await asyncio.sleep(self._config.maintenance_tick_s)
            try:
                state.tick(time.monotonic(), now_ms())
            except Exception:
                # Heartbeats and expiry must keep running whatever one connection did.
                log.exception("hub maintenance tick failed")
