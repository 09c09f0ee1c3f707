"""The hub's state and protocol semantics, independent of sockets and HTTP.

Every method runs to completion without awaiting: a broadcast, an ATTACHED and its SYNC are
queued atomically, so no other event interleaves with them. Frames go into each connection's
outbox and the socket writers (realtime.py) drain them.

Section numbers (§n) refer to docs/realtime-protocol.md; spec ids (RTN15, RTP17...) to the
Ably features spec.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from wardsync.sandbox.hub.capability import PRESENCE, PUBLISH, modes_for
from wardsync.sandbox.hub.channel import Channel, Member, StoredMessage
from wardsync.sandbox.hub.config import HubConfig
from wardsync.sandbox.hub.connection import Connection, Transport
from wardsync.sandbox.hub.idempotency import RecentMessageIds, check_message_ids
from wardsync.sandbox.hub.tokens import (
    WILDCARD_CLIENT_ID,
    Credentials,
    NonceCache,
    may_act_as,
    now_ms,
    resolve_client_id,
)
from wardsync.sandbox.hub.wire import (
    BAD_REQUEST,
    CHANNEL_LIMIT,
    CHANNELS_PER_CONNECTION,
    CONNECTION_EXPIRED,
    CONNECTION_LIMIT,
    INCOMPATIBLE_CREDENTIALS,
    INVALID_CHANNEL_NAME,
    INVALID_CLIENT_ID,
    INVALID_MESSAGE_DATA,
    MESSAGE_TOO_LARGE,
    MODE_MASK,
    NOT_PERMITTED,
    PRESENCE_MEMBER_LIMIT,
    PRESENCE_NO_CLIENT_ID,
    PRESENCE_NOT_ATTACHED,
    TOKEN_EXPIRED,
    Action,
    Flag,
    HubError,
    OutFrame,
    PresenceAction,
    encode_json,
    error_frame,
    is_text,
)

log = logging.getLogger("wardsync.sandbox.hub")

MAX_CHANNEL_NAME_CHARS = 2048
_FRAME_OVERHEAD_BYTES = 128
_MEMBER_OVERHEAD_BYTES = 96  # a presence item's ids, action and timestamp
_MESSAGE_FIELDS = ("name", "data", "encoding", "clientId", "id", "extras")


def check_channel_name(name: object) -> str:
    """Ably channel-name rules: non-empty, no newline, not starting with `[` or `:`."""
    if (
        not isinstance(name, str) or not is_text(name) or not name
        or len(name) > MAX_CHANNEL_NAME_CHARS
        or name[0] in "[:" or "\n" in name or "\r" in name
    ):
        raise HubError(INVALID_CHANNEL_NAME, 400, "invalid channel name")
    return name


def _payload_size(item: Mapping[str, Any]) -> int:
    """Bytes counted against maxMessageSize: data, name, clientId and extras (TO3l8)."""
    size = 0
    for key in ("data", "name", "clientId"):
        value = item.get(key)
        if isinstance(value, str):
            size += len(value.encode("utf-8", "surrogatepass"))
        elif isinstance(value, (bytes, bytearray)):
            size += len(value)
    if item.get("extras") is not None:
        size += len(encode_json(item["extras"]))
    return size


def _check_payload(item: object, *, presence: bool) -> dict[str, Any]:
    """Validate one Message or PresenceMessage from a client; raises HubError 40013."""
    if not isinstance(item, dict):
        raise HubError(INVALID_MESSAGE_DATA, 400, "message must be an object")
    data = item.get("data")
    if data is not None and not isinstance(data, bytes) and not is_text(data):
        raise HubError(INVALID_MESSAGE_DATA, 400, "data must be a string or binary")
    for key in ("name", "encoding", "clientId", "id"):
        if item.get(key) is not None and not is_text(item[key]):
            raise HubError(INVALID_MESSAGE_DATA, 400, f"{key} must be a string")
    extras = item.get("extras")
    if extras is not None:
        # Must survive JSON for JSON peers: a msgpack map with binary keys would not.
        try:
            if not isinstance(extras, dict):
                raise TypeError("not a map")
            encode_json(extras)
        except (TypeError, ValueError) as exc:
            raise HubError(INVALID_MESSAGE_DATA, 400, "extras must be a JSON object") from exc
    if presence and item.get("action") not in (
        PresenceAction.ENTER, PresenceAction.UPDATE, PresenceAction.LEAVE,
    ):
        raise HubError(INVALID_MESSAGE_DATA, 400, "presence action must be enter, update or leave")
    return item


def _connected_message(conn: Connection, config: HubConfig, server_id: str) -> dict[str, Any]:
    # §3: the SDK reads connectionKey, maxIdleInterval and clientId from connectionDetails.
    return {
        "action": Action.CONNECTED,
        "connectionId": conn.id,
        "connectionDetails": {
            "connectionKey": conn.key,
            "clientId": conn.client_id,
            "maxIdleInterval": config.max_idle_interval_ms,
            "connectionStateTtl": int(config.connection_state_ttl_s * 1000),
            "maxMessageSize": config.max_message_size,
            "serverId": server_id,
        },
    }


class HubState:
    """Connections, channels, presence and history of one running hub."""

    def __init__(self, keys: Mapping[str, str], config: HubConfig) -> None:
        self.keys = dict(keys)
        self.config = config
        self.server_id = f"wardsync-hub-{secrets.token_hex(4)}"
        self.connections: dict[str, Connection] = {}
        self.by_key: dict[str, Connection] = {}
        self.channels: OrderedDict[str, Channel] = OrderedDict()  # least recently used first
        self.nonces = NonceCache()
        self.counters: Counter[str] = Counter()
        self._synthetic_ids = itertools.count(1)
        self._sync_ids = itertools.count(1)
        self.recent_ids = RecentMessageIds(
            window_s=config.idempotency_window_s,
            per_channel_cap=config.idempotent_ids_per_channel,
        )

    # ------------------------------------------------------------------ sending

    def send(self, conn: Connection, frame: OutFrame) -> None:
        if conn.enqueue(frame):
            return
        self.counters["outbox_overflows"] += 1
        log.warning("connection %s outbox overflowed; it can no longer be resumed", conn.id)
        if conn.transport is not None:
            # A live socket that cannot keep up: drop it. Its resume fails (80008) and the
            # client re-attaches with its channelSerial, which replays from history.
            self.counters["slow_consumer_drops"] += 1
            self.drop_transport(conn)

    def _broadcast(self, channel: Channel, frame: OutFrame, mode: Flag) -> None:
        for conn in list(channel.subscribers.values()):
            if conn.attachments.get(channel.name, Flag(0)) & mode:
                self.send(conn, frame)

    # ------------------------------------------------------------------ connections

    def open(
        self,
        transport: Transport,
        credentials: Credentials,
        requested_client_id: str | None,
        resume_key: str | None,
    ) -> Connection:
        """Bind a new socket to a resumed or new connection and queue CONNECTED (§3, §7).

        Raises HubError for an ERROR (credentials) or DISCONNECTED (connection cap) reply.
        """
        client_id = resolve_client_id(credentials, requested_client_id)
        reason: HubError | None = None
        if resume_key:
            old = self.by_key.get(resume_key)
            if (
                old is not None and old.resumable and old.client_id == client_id
                and old.credentials.key_name == credentials.key_name
            ):
                self._resume(old, transport, credentials)
                return old
            self.counters["resumes_failed"] += 1
            if old is None:
                why = "connection expired or unknown"
            elif old.overflowed:
                why = "resume buffer overflowed; messages were lost"
                self.discard(old)
            else:
                why = "credentials do not match the connection"
            # RTN15c7: a failed resume yields a new connectionId plus this error.
            reason = HubError(CONNECTION_EXPIRED, 400, f"unable to recover connection: {why}")
        conn = self._new_connection(credentials, client_id)
        conn.transport = transport
        message = _connected_message(conn, self.config, self.server_id)
        if reason is not None:
            message["error"] = reason.to_wire()
        conn.enqueue(OutFrame(message))
        log.info("connection %s opened (%s)", conn.id, "after failed resume" if reason else "new")
        return conn

    def _client_connections(self, client_id: str | None) -> list[Connection]:
        """The connections of one identified client (none for the backend's: no clientId
        or "*")."""
        if client_id in (None, WILDCARD_CLIENT_ID):
            return []
        return [c for c in self.connections.values() if c.client_id == client_id]

    def _evict_longest_detached(self, connections: list[Connection], counter: str) -> bool:
        detached = [c for c in connections if c.transport is None]
        if not detached:
            return False
        self.counters[counter] += 1
        self.discard(min(detached, key=lambda c: c.detached_at or 0.0))
        return True

    def _new_connection(self, credentials: Credentials, client_id: str | None) -> Connection:
        # One user first: their own longest-detached connection makes room, else they are
        # refused, before anyone else's connection is touched.
        mine = self._client_connections(client_id)
        if len(mine) >= self.config.max_connections_per_client and \
                not self._evict_longest_detached(mine, "client_connections_evicted"):
            self.counters["client_connections_refused"] += 1
            raise HubError(CONNECTION_LIMIT, 429, "connection limit for this clientId reached")
        if len(self.connections) >= self.config.max_connections:
            detached = [c for c in self.connections.values() if c.transport is None]
            if not detached:
                self.counters["connections_refused"] += 1
                raise HubError(CONNECTION_LIMIT, 429, "hub connection limit reached")
            # Deliberate overflow policy: forget the connection detached the longest.
            victim = min(detached, key=lambda c: c.detached_at or 0.0)
            self.counters["connections_evicted"] += 1
            self.discard(victim)
        connection_id = secrets.token_urlsafe(9)
        conn = Connection(
            connection_id=connection_id,
            key=f"{connection_id}!{secrets.token_urlsafe(12)}",
            credentials=credentials,
            client_id=client_id,
            buffer_limits=(self.config.resume_buffer_limit, self.config.resume_buffer_max_bytes),
            queue_limits=(self.config.send_queue_limit, self.config.send_queue_max_bytes),
            ack_cache_size=self.config.ack_cache_size,
        )
        self.connections[conn.id] = conn
        self.by_key[conn.key] = conn
        return conn

    def _resume(self, conn: Connection, transport: Transport, credentials: Credentials) -> None:
        if conn.transport is not None:
            # The client gave up on a socket we still think is open (half-open): take over.
            self.drop_transport(conn)
        buffered = list(conn.outbox)
        conn.outbox.clear()
        conn.outbox_bytes = 0
        conn.transport = transport
        conn.detached_at = None
        conn.members_left = False
        conn.renewal_requested = False
        conn.credentials = credentials
        # §7: CONNECTED with the same connectionId, then the buffered frames, in order.
        conn.enqueue(OutFrame(_connected_message(conn, self.config, self.server_id)))
        for frame in buffered:
            conn.enqueue(frame)
        self._apply_capability(conn)
        self.counters["resumes_ok"] += 1
        log.info("connection %s resumed with %d buffered frames", conn.id, len(buffered))

    def transport_lost(self, conn: Connection, transport: Transport) -> None:
        """The socket went away: keep the connection resumable (RTN15) for the state TTL."""
        if conn.transport is not transport:
            return
        conn.transport = None
        if conn.closed:
            return
        conn.detached_at = time.monotonic()
        conn.renewal_requested = False
        if not conn.keep_only_bufferable():
            self.counters["outbox_overflows"] += 1
            log.warning("connection %s lost its socket with too much unsent; no resume", conn.id)

    def drop_transport(self, conn: Connection, final: OutFrame | None = None) -> None:
        """Close the connection's socket, keeping its state; `final` is written first."""
        transport = conn.transport
        if transport is None:
            return
        self.transport_lost(conn, transport)
        transport.close_socket(final)

    def discard(self, conn: Connection, final: OutFrame | None = None) -> None:
        """Forget a connection: its members leave, its attachments end, it cannot resume."""
        if self.connections.get(conn.id) is not conn:
            return
        self._leave_members(conn)
        for name in conn.attachments:
            channel = self.channels.get(name)
            if channel is not None:
                channel.subscribers.pop(conn.id, None)
        conn.attachments.clear()
        del self.connections[conn.id]
        self.by_key.pop(conn.key, None)
        transport = conn.transport
        conn.closed = True
        conn.transport = None
        conn.outbox.clear()
        conn.outbox_bytes = 0
        if transport is not None:
            transport.close_socket(final)

    def close(self, conn: Connection) -> None:
        """Client CLOSE (RTN12): reply CLOSED, LEAVE its members now, no resume."""
        log.info("connection %s closed by client", conn.id)
        self.discard(conn, final=OutFrame({"action": Action.CLOSED}))

    def fail(self, conn: Connection, error: HubError) -> None:
        """Fatal connection ERROR (RTN15i: the client goes FAILED) and forget the connection."""
        log.info("connection %s failed: %s %s", conn.id, error.code, error.message)
        self.discard(conn, final=error_frame(error))

    def reauthorize(self, conn: Connection, credentials: Credentials) -> None:
        """Client AUTH (RTN22): same identity required; reply CONNECTED, same connectionId."""
        requested = None if conn.client_id == WILDCARD_CLIENT_ID else conn.client_id
        try:
            client_id = resolve_client_id(credentials, requested)
        except HubError as exc:
            self.fail(conn, exc)
            return
        if client_id != conn.client_id:
            self.fail(conn, HubError(
                INCOMPATIBLE_CREDENTIALS, 401, "a new token may not change the clientId"))
            return
        conn.credentials = credentials
        conn.renewal_requested = False
        self.send(conn, OutFrame(_connected_message(conn, self.config, self.server_id)))
        self._apply_capability(conn)
        self.counters["reauthorizations"] += 1

    def _apply_capability(self, conn: Connection) -> None:
        """After a token change, end what the new capability no longer allows."""
        for name in list(conn.attachments):
            ops = conn.credentials.capability.operations(name)
            if not ops:
                self.detach(conn, name, reply=False)
                self.send(conn, error_frame(
                    HubError(NOT_PERMITTED, 401, "channel no longer permitted by token"), name,
                ))
                continue
            conn.attachments[name] &= modes_for(ops)
            if PRESENCE not in ops:
                self._leave_members(conn, [name])

    # ------------------------------------------------------------------ channels

    def channel(self, name: str) -> Channel:
        """The channel called `name`, created if need be (HubError 40114 over the cap)."""
        channel = self.channels.get(name)
        if channel is not None:
            self.channels.move_to_end(name)
            return channel
        if len(self.channels) >= self.config.max_channels:
            victim = next((c for c in self.channels.values() if c.idle), None)
            if victim is None:
                self.counters["channels_refused"] += 1
                raise HubError(CHANNEL_LIMIT, 429, "hub channel limit reached")
            # Deliberate overflow policy: the least recently used idle channel and its
            # history are forgotten.
            del self.channels[victim.name]
            self.counters["channels_evicted"] += 1
        channel = Channel(
            name,
            history_limit=self.config.history_limit,
            history_max_bytes=self.config.history_max_bytes,
        )
        self.channels[name] = channel
        return channel

    def attach(self, conn: Connection, name: str, flags: int, channel_serial: object) -> None:
        """ATTACH (RTL4c) -> ATTACHED (+ replay) (+ SYNC), or a channel ERROR."""
        ops = conn.credentials.capability.operations(name)
        if not ops:
            self.send(conn, error_frame(HubError(
                NOT_PERMITTED, 401, "attach not permitted by capability"), name))
            return
        already = name in conn.attachments
        if not already and len(conn.attachments) >= self.config.max_channels_per_connection:
            self.send(conn, error_frame(HubError(
                CHANNELS_PER_CONNECTION, 400, "too many channels on this connection"), name))
            return
        if not already and not self._client_may_attach(conn, name):
            self.counters["client_channels_refused"] += 1
            self.send(conn, error_frame(HubError(
                CHANNELS_PER_CONNECTION, 400, "too many channels for this clientId"), name))
            return
        try:
            channel = self.channel(name)
        except HubError as exc:
            self.send(conn, error_frame(exc, name))
            return
        requested = Flag(flags & MODE_MASK)
        allowed = modes_for(ops)
        modes = (requested & allowed) if requested else allowed
        conn.attachments[name] = modes
        channel.subscribers[conn.id] = conn
        replay: list[Any] = []
        if already:
            # §7: the connection stayed attached (resume, or re-attach after AUTH): nothing
            # was missed, so no replay; RESUMED tells the SDK continuity held.
            resumed = True
        elif isinstance(channel_serial, str):
            # A new connection re-attaching with the last serial it saw (failed resume):
            # replay retained history after it; RESUMED only if nothing is missing.
            replay, resumed = channel.history_after(channel_serial)
            replay, resumed = self._continuity_only(conn, name, replay, resumed)
        else:
            resumed = False
        has_presence = bool(channel.members) and bool(modes & Flag.PRESENCE_SUBSCRIBE)
        out_flags = modes
        if resumed:
            out_flags |= Flag.RESUMED
        if has_presence:
            out_flags |= Flag.HAS_PRESENCE
        self.send(conn, OutFrame({
            "action": Action.ATTACHED, "channel": name, "flags": int(out_flags),
            "channelSerial": channel.last_serial,
        }))
        if replay and modes & Flag.SUBSCRIBE:
            self.counters["replayed_messages"] += len(replay)
            for stored in replay:
                frame = self._message_frame(name, [stored.wire])
                self.send(conn, OutFrame(frame, size=stored.size))
        if has_presence:
            self._send_sync(conn, channel)

    def _continuity_only(self, conn: Connection, name: str, replay: list[StoredMessage],
                         resumed: bool) -> tuple[list[StoredMessage], bool]:
        """Without the `history` capability, replay only what a client coming back within
        the connection-state window could have missed (docs/realtime-protocol.md §7).

        Ably streams missed messages to a client that returns within the 2 minutes of
        connection-state recovery and sends anyone later to the History API, which needs
        `history` (ably.com/docs/storage-history/history; docs/hub.md "Capabilities"). An
        ATTACH is free to name any serial, so an older serial must not turn into a history
        read: messages older than `connection_state_ttl_s` are withheld and the ATTACHED
        then lacks RESUMED (RTL2f), which tells a real client to catch up by other means.
        """
        if not replay or conn.credentials.capability.allows(name, "history"):
            return replay, resumed
        horizon_ms = now_ms() - int(self.config.connection_state_ttl_s * 1000)
        recent = [m for m in replay if m.timestamp >= horizon_ms]
        withheld = len(replay) - len(recent)
        if withheld:
            self.counters["replay_withheld"] += withheld
            log.info("attach on %s: %d messages older than the continuity window withheld "
                     "(no history capability)", name, withheld)
            return recent, False
        return recent, resumed

    def _client_may_attach(self, conn: Connection, name: str) -> bool:
        """Under `max_channels_per_client` across the client's connections, detached ones
        included (they hold their channels until their state expires); the client's
        longest-detached connection is forgotten to make room if need be."""
        if conn.client_id in (None, WILDCARD_CLIENT_ID):
            return True
        while True:
            others = [c for c in self._client_connections(conn.client_id) if c is not conn]
            held = set(conn.attachments).union(*(c.attachments for c in others))
            if name in held or len(held) < self.config.max_channels_per_client:
                return True
            if not self._evict_longest_detached(others, "client_connections_evicted"):
                return False

    def _send_sync(self, conn: Connection, channel: Channel) -> None:
        # §6, RTP18: "<syncId>:<cursor>", empty cursor on the last page. HAS_PRESENCE without
        # a SYNC would make presence.get() wait forever.
        # Pages are cut by member count and by bytes, and each page counts its bytes against
        # the connection's send queue like any other frame.
        pages: list[tuple[list[dict[str, Any]], int]] = []
        page: list[dict[str, Any]] = []
        page_bytes = 0
        for member in channel.members.values():
            wire = member.to_wire(PresenceAction.PRESENT)
            size = _payload_size(wire) + _MEMBER_OVERHEAD_BYTES
            if page and (len(page) >= self.config.sync_page_size
                         or page_bytes + size > self.config.sync_page_max_bytes):
                pages.append((page, page_bytes))
                page, page_bytes = [], 0
            page.append(wire)
            page_bytes += size
        pages.append((page, page_bytes))
        sync_id = f"sync{next(self._sync_ids)}"
        self.counters["sync_pages"] += len(pages)
        for index, (members, size) in enumerate(pages):
            cursor = str(index + 1) if index < len(pages) - 1 else ""
            self.send(conn, OutFrame({
                "action": Action.SYNC, "channel": channel.name,
                "channelSerial": f"{sync_id}:{cursor}", "presence": members,
            }, size=size + _FRAME_OVERHEAD_BYTES))

    def detach(self, conn: Connection, name: str, *, reply: bool = True) -> None:
        """DETACH (RTL5d): members of this connection leave the channel; reply DETACHED."""
        if conn.attachments.pop(name, None) is not None:
            self._leave_members(conn, [name])
            channel = self.channels.get(name)
            if channel is not None:
                channel.subscribers.pop(conn.id, None)
        if reply:
            self.send(conn, OutFrame({"action": Action.DETACHED, "channel": name}))

    # ------------------------------------------------------------------ messages

    @staticmethod
    def _message_frame(name: str, wires: list[dict[str, Any]]) -> dict[str, Any]:
        first = wires[0]
        frame: dict[str, Any] = {
            "action": Action.MESSAGE, "channel": name,
            "id": first["id"].rpartition(":")[0] or first["id"],
            "timestamp": first["timestamp"],
            # §5: always send channelSerial; the SDK stores whatever arrives, even None.
            "channelSerial": wires[-1]["serial"],
            "messages": wires,
        }
        if first.get("connectionId"):
            frame["connectionId"] = first["connectionId"]
        return frame

    def publish(
        self,
        name: object,
        raw_messages: object,
        *,
        credentials: Credentials,
        client_id: str | None,
        connection_id: str | None,
        proto_id: str,
    ) -> list[str]:
        """Publish messages (realtime RTL6 or REST RSL1) and return their serials.

        Messages whose client-supplied `id` was already published are not published again
        (idempotent publishing, RSL1k); their original serial is returned.
        """
        name = check_channel_name(name)
        if not credentials.capability.allows(name, PUBLISH):
            raise HubError(NOT_PERMITTED, 401, "publish not permitted by capability")
        if not isinstance(raw_messages, list) or not raw_messages:
            raise HubError(BAD_REQUEST, 400, "messages must be a non-empty list")
        messages = [_check_payload(item, presence=False) for item in raw_messages]
        check_message_ids(messages)
        implicit_id = client_id if client_id not in (None, WILDCARD_CLIENT_ID) else None
        for item in messages:
            own = item.get("clientId")
            if own is not None and not may_act_as(client_id, credentials, own):
                raise HubError(INVALID_CLIENT_ID, 400, "message clientId not allowed")
        sizes = [_payload_size(item) for item in messages]
        if sum(sizes) > self.config.max_message_size:
            raise HubError(MESSAGE_TOO_LARGE, 400, "maximum message size exceeded")
        channel = self.channel(name)
        timestamp = now_ms()
        serials: list[str] = []
        fresh: list[dict[str, Any]] = []
        for index, (item, size) in enumerate(zip(messages, sizes, strict=True)):
            known = self.recent_ids.serial_of(name, item.get("id"))
            if known is not None:
                self.counters["idempotent_duplicates"] += 1
                serials.append(known)
                continue
            wire: dict[str, Any] = {
                key: item[key] for key in _MESSAGE_FIELDS if item.get(key) is not None
            }
            wire.setdefault("id", f"{proto_id}:{index}")
            if implicit_id is not None:
                wire.setdefault("clientId", implicit_id)
            if connection_id is not None:
                wire["connectionId"] = connection_id
            wire["timestamp"] = timestamp
            stored = channel.append(wire, size)
            if item.get("id") is not None:
                self.recent_ids.remember(name, item["id"], stored.serial)
            serials.append(stored.serial)
            fresh.append(wire)
        if fresh:
            self.counters["messages_published"] += len(fresh)
            frame = OutFrame(self._message_frame(name, fresh),
                             size=sum(sizes) + _FRAME_OVERHEAD_BYTES)
            self._broadcast(channel, frame, Flag.SUBSCRIBE)
        return serials

    def publish_from(self, conn: Connection, msg: Mapping[str, Any], msg_serial: int) -> None:
        """Realtime MESSAGE -> broadcast + ACK with serials, or NACK (§5)."""

        def publish() -> dict[str, Any]:
            serials = self.publish(
                msg.get("channel"), msg.get("messages"),
                credentials=conn.credentials, client_id=conn.client_id,
                connection_id=conn.id, proto_id=f"{conn.id}:{msg_serial}",
            )
            return {"res": [{"serials": serials}]}

        self._acknowledge_once(conn, msg_serial, publish)

    def _acknowledge_once(
        self, conn: Connection, msg_serial: int, apply: Callable[[], dict[str, Any]],
    ) -> None:
        """Apply a MESSAGE or PRESENCE once and ACK it (extra ACK fields from `apply`), or NACK
        the HubError it raises. A retried msgSerial gets the reply it got before, unapplied."""
        remembered = conn.remembered_ack(msg_serial)
        if remembered is not None:
            self.counters["duplicate_publishes"] += 1
            self.send(conn, remembered)
            return
        try:
            extra = apply()
            reply = OutFrame({"action": Action.ACK, "msgSerial": msg_serial, "count": 1, **extra})
        except HubError as exc:
            reply = self._nack(msg_serial, exc)
        conn.remember_ack(msg_serial, reply)
        self.send(conn, reply)

    @staticmethod
    def _nack(msg_serial: int, error: HubError) -> OutFrame:
        return OutFrame({"action": Action.NACK, "msgSerial": msg_serial, "count": 1,
                         "error": error.to_wire()})

    def nack(self, conn: Connection, msg_serial: int, error: HubError) -> None:
        self.send(conn, self._nack(msg_serial, error))

    # ------------------------------------------------------------------ presence

    def presence_from(self, conn: Connection, msg: Mapping[str, Any], msg_serial: int) -> None:
        """Realtime PRESENCE -> broadcast + ACK, or NACK (§6)."""

        def apply() -> dict[str, Any]:
            self._apply_presence(conn, msg, msg_serial)
            return {}

        self._acknowledge_once(conn, msg_serial, apply)

    def _apply_presence(self, conn: Connection, msg: Mapping[str, Any], msg_serial: int) -> None:
        name = check_channel_name(msg.get("channel"))
        if name not in conn.attachments:
            raise HubError(PRESENCE_NOT_ATTACHED, 400, "channel not attached")
        if not conn.credentials.capability.allows(name, PRESENCE):
            raise HubError(NOT_PERMITTED, 401, "presence not permitted by capability")
        raw = msg.get("presence")
        if not isinstance(raw, list) or not raw:
            raise HubError(BAD_REQUEST, 400, "presence must be a non-empty list")
        items = [_check_payload(item, presence=True) for item in raw]
        default_id = conn.client_id if conn.client_id != WILDCARD_CLIENT_ID else None
        resolved: list[tuple[dict[str, Any], str]] = []
        for item in items:
            client_id = item.get("clientId") or default_id
            if client_id is None:
                raise HubError(PRESENCE_NO_CLIENT_ID, 400, "presence needs a clientId")
            if item.get("clientId") and not may_act_as(conn.client_id, conn.credentials, client_id):
                raise HubError(INVALID_CLIENT_ID, 400, "presence clientId not allowed")
            if _payload_size(item) > self.config.max_message_size:
                raise HubError(MESSAGE_TOO_LARGE, 400, "maximum message size exceeded")
            if _payload_size(item) > self.config.max_presence_data_bytes:
                self.counters["presence_data_refused"] += 1
                raise HubError(MESSAGE_TOO_LARGE, 400,
                               f"presence data over {self.config.max_presence_data_bytes} "
                               "bytes")
            resolved.append((item, client_id))
        channel = self.channel(name)
        joining = {
            f"{conn.id}:{cid}" for item, cid in resolved
            if item["action"] != PresenceAction.LEAVE and f"{conn.id}:{cid}" not in channel.members
        }
        if len(channel.members) + len(joining) > self.config.max_members_per_channel:
            raise HubError(PRESENCE_MEMBER_LIMIT, 400, "presence member limit reached")
        timestamp = now_ms()
        events: list[dict[str, Any]] = []
        for index, (item, client_id) in enumerate(resolved):
            key = f"{conn.id}:{client_id}"
            existing = channel.members.get(key)
            data, encoding, extras = item.get("data"), item.get("encoding"), item.get("extras")
            # RTP2b2: real events carry ids "<connectionId>:<msgSerial>:<index>".
            event_id = f"{conn.id}:{msg_serial}:{index}"
            if item["action"] == PresenceAction.LEAVE:
                if existing is None:
                    continue
                del channel.members[key]
                event = existing.to_wire(PresenceAction.LEAVE)
                event.update(id=event_id, timestamp=timestamp)
                if data is not None:
                    event["data"] = data
                    event["encoding"] = encoding
                events.append(event)
                continue
            if existing is None:
                member = Member(conn.id, client_id, event_id, timestamp, data, encoding, extras)
                channel.members[key] = member
                events.append(member.to_wire(PresenceAction.ENTER))
            elif item["action"] == PresenceAction.ENTER and existing.same_payload(
                data, encoding, extras,
            ):
                # RTP17i: the SDK re-enters its own members after every (re-)attach; an
                # unchanged re-entry is not news to anyone.
                self.counters["presence_reentries_suppressed"] += 1
            else:
                existing.id, existing.timestamp = event_id, timestamp
                existing.data, existing.encoding, existing.extras = data, encoding, extras
                events.append(existing.to_wire(PresenceAction.UPDATE))
        if events:
            self._broadcast(channel, OutFrame({
                "action": Action.PRESENCE, "channel": name, "id": f"{conn.id}:{msg_serial}",
                "connectionId": conn.id, "timestamp": timestamp, "presence": events,
            }, size=sum(_payload_size(e) for e in events) + _FRAME_OVERHEAD_BYTES),
                Flag.PRESENCE_SUBSCRIBE)

    def _leave_members(self, conn: Connection, names: list[str] | None = None) -> None:
        """Server-made LEAVEs for this connection's members (CLOSE, detach, grace expiry).

        Ids are synthesized (`synth<n>:0:<i>`, not prefixed by the connectionId), so clients
        order them by timestamp (RTP2b1) and do not drop their own re-entry state (RTP17b).
        """
        for name in (list(conn.attachments) if names is None else names):
            channel = self.channels.get(name)
            if channel is None:
                continue
            members = channel.members_of(conn.id)
            if not members:
                continue
            timestamp = now_ms()
            synth = f"synth{next(self._synthetic_ids)}:0"
            events = []
            for index, member in enumerate(members):
                del channel.members[member.key]
                event = member.to_wire(PresenceAction.LEAVE)
                event.update(id=f"{synth}:{index}", timestamp=timestamp)
                events.append(event)
            self.counters["presence_leaves_synthesized"] += len(events)
            self._broadcast(channel, OutFrame({
                "action": Action.PRESENCE, "channel": name, "id": synth,
                "connectionId": conn.id, "timestamp": timestamp, "presence": events,
            }), Flag.PRESENCE_SUBSCRIBE)

    # ------------------------------------------------------------------ time

    def renew_at_ms(self, credentials: Credentials) -> int | None:
        """When to ask for a new token: `token_renew_ahead_s` before expiry, or at half its
        remaining life if that is shorter."""
        if credentials.expires_ms is None:
            return None
        issued = credentials.issued_ms or credentials.expires_ms
        ahead_ms = min(self.config.token_renew_ahead_s * 1000,
                       (credentials.expires_ms - issued) / 2)
        return int(credentials.expires_ms - ahead_ms)

    def tick(self, monotonic_s: float, wall_ms: int) -> None:
        """Periodic duties: heartbeats, token renewal and expiry, presence grace, state TTL."""
        config = self.config
        self.recent_ids.prune()
        for conn in list(self.connections.values()):
            transport = conn.transport
            if transport is not None:
                # RTN23a: the SDK drops a connection silent for maxIdleInterval.
                if monotonic_s - transport.last_write >= config.heartbeat_interval_s:
                    self.send(conn, OutFrame({"action": Action.HEARTBEAT}))
                expires = conn.credentials.expires_ms
                if expires is None:
                    continue
                if wall_ms >= expires:
                    # §8: the client never renewed; it gets one token-error reconnect.
                    self.counters["token_expiries"] += 1
                    self.drop_transport(conn, OutFrame({
                        "action": Action.DISCONNECTED,
                        "error": HubError(TOKEN_EXPIRED, 401, "token expired").to_wire(),
                    }))
                elif not conn.renewal_requested and wall_ms >= (self.renew_at_ms(
                        conn.credentials) or expires):
                    # §8: a server AUTH makes the SDK call authorize() and send AUTH back,
                    # which works every time (the DISCONNECTED 40142 path only once).
                    conn.renewal_requested = True
                    self.counters["renewals_requested"] += 1
                    self.send(conn, OutFrame({"action": Action.AUTH}))
                continue
            detached_for = monotonic_s - (conn.detached_at or monotonic_s)
            if detached_for >= config.connection_state_ttl_s:
                self.counters["connections_expired"] += 1
                self.discard(conn)
            elif detached_for >= config.presence_grace_s and not conn.members_left:
                conn.members_left = True
                self._leave_members(conn)

    # ------------------------------------------------------------------ reporting

    def stats(self) -> dict[str, Any]:
        conns = list(self.connections.values())
        detached = [c for c in conns if c.transport is None]
        live = [c for c in conns if c.transport is not None]
        return {
            "connections": len(conns),
            "live_connections": len(live),
            "detached_connections": len(detached),
            "channels": len(self.channels),
            "members": sum(len(ch.members) for ch in self.channels.values()),
            "buffered_frames": sum(len(c.outbox) for c in detached),
            "buffered_bytes": sum(c.outbox_bytes for c in detached),
            "queued_frames": sum(len(c.outbox) for c in live),
            "history_messages": sum(len(ch.history) for ch in self.channels.values()),
            "history_bytes": sum(ch.history_bytes for ch in self.channels.values()),
            "history": {name: len(ch.history) for name, ch in self.channels.items()},
            "malformed_frames": self.counters["malformed_frames"],
            "counters": dict(self.counters),
        }
