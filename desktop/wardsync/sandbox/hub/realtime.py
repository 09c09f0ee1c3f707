"""The websocket side of the hub: handshake, one writer per socket, inbound dispatch.

The client never sends CONNECT: the websocket upgrade is the connect, with credentials,
`format`, `clientId` and `resume` in the query string (docs/realtime-protocol.md §1, §3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import WSMsgType, web

from wardsync.sandbox.hub.config import DROP_HARD_CLOSE_S
from wardsync.sandbox.hub.connection import Connection
from wardsync.sandbox.hub.state import HubState, check_channel_name
from wardsync.sandbox.hub.tokens import Credentials, verify_key, verify_token
from wardsync.sandbox.hub.wire import (
    BAD_REQUEST,
    CONNECTION_LIMIT,
    INVALID_CREDENTIALS,
    PROTOCOL_ERROR,
    Action,
    HubError,
    MalformedFrame,
    OutFrame,
    decode_frame,
    error_frame,
)

log = logging.getLogger("wardsync.sandbox.hub")

FORMATS = {"json": False, "msgpack": True}


def authenticate(query: Mapping[str, str], keys: Mapping[str, str]) -> Credentials:
    """Credentials from `key=` (Basic) or `accessToken=` (token) in the upgrade query."""
    key = query.get("key")
    if key:
        return verify_key(key, keys)
    token = query.get("accessToken") or query.get("access_token")
    if token:
        return verify_token(token, keys)
    raise HubError(INVALID_CREDENTIALS, 401, "no credentials: send key or accessToken")


class RealtimeSession:
    """One websocket. Its writer task drains the bound connection's outbox in order.

    Frames are handed to the socket synchronously (compression is off, so aiohttp writes
    before its first await), which is why a frame taken from the outbox is either written
    or put back, never lost on the hub's side.
    """

    def __init__(self, state: HubState, ws: web.WebSocketResponse, request: web.Request,
                 binary: bool) -> None:
        self.state = state
        self.binary = binary
        self.last_write = time.monotonic()
        self.connection: Connection | None = None
        self._ws = ws
        self._tcp = request.transport
        self._wake = asyncio.Event()
        self._closing = False
        self._final: OutFrame | None = None
        self._writer: asyncio.Task[None] | None = None
        self._hard_close: asyncio.TimerHandle | None = None

    # Transport protocol (connection.py) --------------------------------------------

    def notify(self) -> None:
        self._wake.set()

    def close_socket(self, final: OutFrame | None = None) -> None:
        if self._closing:
            return
        self._closing = True
        self._final = final
        self._wake.set()
        if self._writer is None:
            self._shutdown_tcp()
        self._hard_close = asyncio.get_running_loop().call_later(DROP_HARD_CLOSE_S, self._abort)

    # ---------------------------------------------------------------------------------

    def start(self, connection: Connection) -> None:
        self.connection = connection
        self._writer = asyncio.create_task(self._write_loop(), name=f"hub-writer-{connection.id}")
        self._wake.set()

    async def send_now(self, frame: OutFrame) -> None:
        """Write one frame before any connection exists (handshake errors)."""
        try:
            await self._write(frame)
        except (ConnectionError, RuntimeError, TypeError, ValueError) as exc:
            log.info("handshake reply not written: %s", type(exc).__name__)

    async def _write(self, frame: OutFrame) -> None:
        data = frame.encoded(self.binary)
        if isinstance(data, str):
            data = data.encode("utf-8")  # before any I/O, so a bad frame writes nothing
            await self._ws.send_frame(data, WSMsgType.TEXT)
        else:
            await self._ws.send_bytes(data)
        self.last_write = time.monotonic()

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._closing:
                await self._finish()
                return
            conn = self.connection
            while conn is not None and conn.transport is self and not self._closing:
                frame = conn.take_frame()
                if frame is None:
                    break
                try:
                    await self._write(frame)
                except (TypeError, ValueError):
                    # Validation should make this impossible; never let it stop the writer.
                    log.exception("frame for %s could not be encoded; dropped", conn.id)
                    self.state.counters["unencodable_frames"] += 1
                    continue
                except (ConnectionError, RuntimeError) as exc:
                    # Nothing was written (aiohttp refuses before writing): keep the frame
                    # for the resume buffer and treat the socket as gone.
                    conn.untake_frame(frame)
                    log.info("socket of %s failed on write: %s", conn.id, type(exc).__name__)
                    self.state.transport_lost(conn, self)
                    self._closing = True
                    self._shutdown_tcp()
                    return

    async def _finish(self) -> None:
        if self._final is not None:
            try:
                await self._write(self._final)
            except (ConnectionError, RuntimeError, TypeError, ValueError) as exc:
                log.debug("final frame not written: %s", type(exc).__name__)
        self._shutdown_tcp()

    def _shutdown_tcp(self) -> None:
        # Half-close: our FIN follows every frame already written, so a dropped client
        # still reads them all, and reading on keeps the kernel from answering with RST.
        tcp = self._tcp
        if tcp is None or tcp.is_closing():
            return
        if tcp.can_write_eof():
            tcp.write_eof()
        else:
            tcp.close()

    def _abort(self) -> None:
        self._hard_close = None
        if self._tcp is not None and not self._tcp.is_closing():
            self._tcp.abort()

    async def stop(self) -> None:
        """Owner's cleanup once the socket is finished: writer cancelled and awaited."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        if self._hard_close is not None:
            self._hard_close.cancel()
            self._hard_close = None


class RealtimeEndpoint:
    """Accepts websockets and dispatches their frames to the hub state."""

    def __init__(self, state: HubState, *, refusing: Callable[[], bool]) -> None:
        self.state = state
        self.sessions: set[RealtimeSession] = set()
        self._refusing = refusing
        self._all_closed = asyncio.Event()
        self._all_closed.set()
        self._handlers: dict[int, Callable[[Connection, dict[str, Any]], None]] = {
            Action.HEARTBEAT: self._on_heartbeat,
            Action.ATTACH: self._on_attach,
            Action.DETACH: self._on_detach,
            Action.MESSAGE: self._on_message,
            Action.PRESENCE: self._on_presence,
            Action.AUTH: self._on_auth,
            Action.CLOSE: self._on_close,
            Action.DISCONNECT: self._on_disconnect,
            Action.ANNOTATION: self._on_unsupported,
            Action.OBJECT: self._on_unsupported,
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self._refusing():
            # Fault injection: the SDK sees an HTTP error on the upgrade, goes DISCONNECTED
            # (40000) and retries after disconnected_retry_timeout (§3).
            return web.Response(status=503, text="hub refusing connections")
        fmt = request.query.get("format", "json")
        ws = web.WebSocketResponse(
            compress=False, max_msg_size=self.state.config.max_inbound_frame_bytes,
            autoping=True,
        )
        await ws.prepare(request)
        session = RealtimeSession(self.state, ws, request, FORMATS.get(fmt, False))
        self.sessions.add(session)
        self._all_closed.clear()
        conn: Connection | None = None
        try:
            if fmt not in FORMATS:
                await session.send_now(error_frame(HubError(BAD_REQUEST, 400, "unknown format")))
                return ws
            try:
                credentials = authenticate(request.query, self.state.keys)
                conn = self.state.open(
                    session, credentials, request.query.get("clientId"),
                    request.query.get("resume"),
                )
            except HubError as exc:
                await session.send_now(self._refusal(exc))
                return ws
            session.start(conn)
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self._on_frame(session, msg.data)
                elif msg.type is WSMsgType.ERROR:
                    break
        finally:
            if conn is not None:
                self.state.transport_lost(conn, session)
            await session.stop()
            self.sessions.discard(session)
            if not self.sessions:
                self._all_closed.set()
        return ws

    @staticmethod
    def _refusal(error: HubError) -> OutFrame:
        if error.code == CONNECTION_LIMIT:
            # Not fatal: DISCONNECTED (with an error, never without, §3) makes the SDK retry.
            return OutFrame({"action": Action.DISCONNECTED, "error": error.to_wire()})
        log.info("connection refused: %s %s", error.code, error.message)
        return error_frame(error)

    async def close_all(self, timeout_s: float) -> None:
        """Drop every socket (their connections stay resumable) and wait for the handlers."""
        for session in list(self.sessions):
            conn = session.connection
            if conn is not None:
                self.state.drop_transport(conn)
            session.close_socket()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_closed.wait(), timeout_s)

    # ------------------------------------------------------------------ inbound frames

    def _on_frame(self, session: RealtimeSession, data: str | bytes) -> None:
        conn = session.connection
        if conn is None or conn.transport is not session:
            return  # superseded socket: the client re-sends whatever was not ACKed
        try:
            msg = decode_frame(data, session.binary)
            handler = self._handlers.get(msg["action"])
            if handler is None:
                raise MalformedFrame(f"unexpected action {msg['action']}")
            handler(conn, msg)
        except MalformedFrame as exc:
            self._malformed(conn, str(exc))
        except HubError as exc:
            self._malformed(conn, exc.message)
        except Exception:
            # A frame that trips a hub bug costs that frame only, never the hub.
            log.exception("frame on connection %s could not be handled", conn.id)
            self._malformed(conn, "internal error")

    def _malformed(self, conn: Connection, reason: str) -> None:
        conn.malformed_frames += 1
        self.state.counters["malformed_frames"] += 1
        log.info("dropped malformed frame on %s: %s", conn.id, reason)
        if conn.malformed_frames > self.state.config.max_malformed_frames:
            self.state.fail(conn, HubError(PROTOCOL_ERROR, 400, "too many malformed frames"))

    @staticmethod
    def _channel_of(msg: Mapping[str, Any]) -> str:
        channel = msg.get("channel")
        if not isinstance(channel, str):
            raise MalformedFrame("frame has no channel")
        return channel

    @staticmethod
    def _msg_serial_of(msg: Mapping[str, Any]) -> int:
        serial = msg.get("msgSerial")
        if not isinstance(serial, int) or isinstance(serial, bool) or serial < 0:
            raise MalformedFrame("frame needs a msgSerial")
        return serial

    def _on_heartbeat(self, conn: Connection, msg: dict[str, Any]) -> None:
        ping_id = msg.get("id")
        if ping_id is None:
            return
        if not isinstance(ping_id, str):
            raise MalformedFrame("heartbeat id must be a string")
        # RTN13: connection.ping() waits for its id to come back.
        self.state.send(conn, OutFrame({"action": Action.HEARTBEAT, "id": ping_id}))

    def _on_attach(self, conn: Connection, msg: dict[str, Any]) -> None:
        channel = self._channel_of(msg)
        flags = msg.get("flags") or 0
        if not isinstance(flags, int):
            raise MalformedFrame("flags must be an integer")
        try:
            check_channel_name(channel)
        except HubError as exc:
            self.state.send(conn, error_frame(exc, channel))
            return
        self.state.attach(conn, channel, flags, msg.get("channelSerial"))

    def _on_detach(self, conn: Connection, msg: dict[str, Any]) -> None:
        self.state.detach(conn, self._channel_of(msg))

    def _on_message(self, conn: Connection, msg: dict[str, Any]) -> None:
        self.state.publish_from(conn, msg, self._msg_serial_of(msg))

    def _on_presence(self, conn: Connection, msg: dict[str, Any]) -> None:
        self.state.presence_from(conn, msg, self._msg_serial_of(msg))

    def _on_unsupported(self, conn: Connection, msg: dict[str, Any]) -> None:
        # These need an ACK or NACK, or the SDK waits forever for one.
        self.state.nack(conn, self._msg_serial_of(msg), HubError(
            BAD_REQUEST, 400, f"action {msg['action']} is not supported by this hub"))

    def _on_auth(self, conn: Connection, msg: dict[str, Any]) -> None:
        auth = msg.get("auth")
        token = auth.get("accessToken") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            raise MalformedFrame("AUTH needs auth.accessToken")
        try:
            credentials = verify_token(token, self.state.keys)
        except HubError as exc:
            # A token error in DISCONNECTED makes the SDK fetch a new token and resume.
            self.state.drop_transport(conn, OutFrame(
                {"action": Action.DISCONNECTED, "error": exc.to_wire()}))
            return
        self.state.reauthorize(conn, credentials)

    def _on_close(self, conn: Connection, msg: dict[str, Any]) -> None:
        self.state.close(conn)

    def _on_disconnect(self, conn: Connection, msg: dict[str, Any]) -> None:
        self.state.drop_transport(conn)
