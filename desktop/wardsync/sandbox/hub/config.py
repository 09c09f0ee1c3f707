"""Hub configuration: timings and the caps that keep the hub's memory bounded.

Every cap is a named default here and a field of `HubConfig`, so tests can shrink them.
Worst-case memory is roughly
`max_connections * resume_buffer_max_bytes + max_channels * history_max_bytes` (docs/hub.md).
"""

from __future__ import annotations

from dataclasses import dataclass

# Timings (Ably defaults: maxIdleInterval 15 s, connectionStateTtl 120 s, presence grace 15 s).
MAX_IDLE_INTERVAL_MS = 15_000
HEARTBEAT_INTERVAL_S = 5.0
PRESENCE_GRACE_S = 15.0
CONNECTION_STATE_TTL_S = 120.0
TOKEN_RENEW_AHEAD_S = 30.0
MAINTENANCE_TICK_S = 0.05
# A dropped socket whose peer ignores our FIN is torn down after this long.
DROP_HARD_CLOSE_S = 1.0

# Caps.
MAX_CONNECTIONS = 500
MAX_CHANNELS = 1_000
MAX_CHANNELS_PER_CONNECTION = 200
MAX_MEMBERS_PER_CHANNEL = 500
# Per identified clientId (one signed-in user, whatever the number of tokens): Ably's
# connection and channel limits are per account (docs/scaling.md §1) and the sandbox's whole
# account is one ward, so one user's token must not spend them all. A clinician holds one
# connection per workstation (plus, briefly, one awaiting resume) and about ten channels per
# workstation (docs/scaling.md §2): 20 connections and 200 channels (Ably's per-connection
# channel limit) leave ample room while keeping 25 users able to reach the global caps only
# together. Connections with no clientId or "*" are the backend's (key holders) and uncapped.
MAX_CONNECTIONS_PER_CLIENT = 20
MAX_CHANNELS_PER_CLIENT = 200
HISTORY_LIMIT = 200  # messages kept per channel
HISTORY_MAX_BYTES = 256 * 1024  # payload bytes kept per channel
RESUME_BUFFER_LIMIT = 500  # frames kept per connection while it has no socket
RESUME_BUFFER_MAX_BYTES = 512 * 1024
SEND_QUEUE_LIMIT = 2_000  # frames queued for a live socket; more means a stuck client
SEND_QUEUE_MAX_BYTES = 4 * 1024 * 1024
ACK_CACHE_PER_CONNECTION = 256  # msgSerials remembered to dedupe re-sent publishes
# Client-supplied message ids remembered per channel for the idempotency window: Ably's
# 50 messages/s per channel over its 2-minute window.
IDEMPOTENT_IDS_PER_CHANNEL = 6_000
IDEMPOTENCY_WINDOW_S = 120.0
MAX_MALFORMED_FRAMES_PER_CONNECTION = 50
MAX_INBOUND_FRAME_BYTES = 1024 * 1024
MAX_MESSAGE_SIZE_BYTES = 65_536  # Ably's default maxMessageSize
SYNC_PAGE_SIZE = 100  # members per SYNC frame...
# ...and at most this many bytes of member payload per SYNC frame: the SDK's websocket
# refuses frames over 1 MiB (close 1009, docs/realtime-protocol.md §1), and JSON peers see
# binary data base64-encoded (4/3 larger); a quarter of the limit leaves room for both.
SYNC_PAGE_MAX_BYTES = 256 * 1024
# Presence data of one member (data, clientId, extras). Ably counts presence data against
# the 64 KiB message size and caps a channel's whole presence set (91006); the hub is
# stricter per member, as presence here describes who is on a record (a few hundred bytes;
# core/presence.py allows about 1 KiB): 500 members of 2 KiB still make a SYNC of 1 MiB in
# four pages, and one member can no longer bloat every attaching client's SYNC.
MAX_PRESENCE_DATA_BYTES = 2 * 1024
MAX_TOKEN_TTL_S = 24 * 3600.0
DEFAULT_TOKEN_TTL_S = 3600.0
TOKEN_REQUEST_MAX_SKEW_S = 600.0
NONCE_CACHE_SIZE = 10_000


@dataclass
class HubConfig:
    """Timings and caps for one `Hub`. Defaults suit the sandbox; tests shrink them."""

    max_idle_interval_ms: int = MAX_IDLE_INTERVAL_MS
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S
    presence_grace_s: float = PRESENCE_GRACE_S
    connection_state_ttl_s: float = CONNECTION_STATE_TTL_S
    token_renew_ahead_s: float = TOKEN_RENEW_AHEAD_S
    history_limit: int = HISTORY_LIMIT
    history_max_bytes: int = HISTORY_MAX_BYTES
    resume_buffer_limit: int = RESUME_BUFFER_LIMIT
    resume_buffer_max_bytes: int = RESUME_BUFFER_MAX_BYTES
    send_queue_limit: int = SEND_QUEUE_LIMIT
    send_queue_max_bytes: int = SEND_QUEUE_MAX_BYTES
    max_connections: int = MAX_CONNECTIONS
    max_channels: int = MAX_CHANNELS
    max_channels_per_connection: int = MAX_CHANNELS_PER_CONNECTION
    max_members_per_channel: int = MAX_MEMBERS_PER_CHANNEL
    max_connections_per_client: int = MAX_CONNECTIONS_PER_CLIENT
    max_channels_per_client: int = MAX_CHANNELS_PER_CLIENT
    max_malformed_frames: int = MAX_MALFORMED_FRAMES_PER_CONNECTION
    max_inbound_frame_bytes: int = MAX_INBOUND_FRAME_BYTES
    max_message_size: int = MAX_MESSAGE_SIZE_BYTES
    sync_page_size: int = SYNC_PAGE_SIZE
    sync_page_max_bytes: int = SYNC_PAGE_MAX_BYTES
    max_presence_data_bytes: int = MAX_PRESENCE_DATA_BYTES
    ack_cache_size: int = ACK_CACHE_PER_CONNECTION
    idempotent_ids_per_channel: int = IDEMPOTENT_IDS_PER_CHANNEL
    idempotency_window_s: float = IDEMPOTENCY_WINDOW_S
    maintenance_tick_s: float = MAINTENANCE_TICK_S

    def __post_init__(self) -> None:
        if self.heartbeat_interval_s * 1000 >= self.max_idle_interval_ms > 0:
            # The SDK drops a connection that is silent for maxIdleInterval (RTN23a).
            raise ValueError("heartbeat_interval_s must be shorter than max_idle_interval_ms")
        for name in (
            "history_limit", "resume_buffer_limit", "send_queue_limit", "max_connections",
            "max_channels", "max_channels_per_connection", "max_members_per_channel",
            "sync_page_size", "ack_cache_size", "idempotent_ids_per_channel",
            "sync_page_max_bytes", "max_presence_data_bytes", "max_connections_per_client",
            "max_channels_per_client",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
