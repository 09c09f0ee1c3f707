"""A realtime connection's state, which outlives any one websocket (Ably RTN15 resume).

While a connection has a socket its `outbox` is the queue the socket's writer drains (capped
by the send-queue limits: more means a stuck client); while it has none, the MESSAGE and
PRESENCE frames kept in `outbox` are its resume buffer (docs/realtime-protocol.md §7, capped by
the resume-buffer limits). Going over either cap marks the connection `overflowed`, which
makes the next resume fail (80008) so the client knows it must catch up.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Protocol

from wardsync.sandbox.hub.tokens import Credentials
from wardsync.sandbox.hub.wire import Flag, OutFrame


class Transport(Protocol):
    """The socket side of a connection, as the hub state sees it."""

    binary: bool
    last_write: float  # monotonic time of the last frame written

    def notify(self) -> None:
        """Frames are waiting in the connection's outbox."""

    def close_socket(self, final: OutFrame | None = None) -> None:
        """Write `final` (if any), then close the socket without waiting; frames already
        written still reach the peer."""


class Connection:
    """One client connection: identity, credentials, attachments, outbox and ACK memory."""

    def __init__(self, *, connection_id: str, key: str, credentials: Credentials,
                 client_id: str | None, buffer_limits: tuple[int, int],
                 queue_limits: tuple[int, int], ack_cache_size: int) -> None:
        self.id = connection_id
        self.key = key
        self.credentials = credentials
        self.client_id = client_id
        self.transport: Transport | None = None
        self.outbox: deque[OutFrame] = deque()
        self.outbox_bytes = 0
        self.overflowed = False
        self.closed = False
        self.attachments: dict[str, Flag] = {}
        self.detached_at: float | None = None  # monotonic time the socket went away
        self.members_left = False
        self.renewal_requested = False
        self.malformed_frames = 0
        self.created = time.monotonic()
        self._acks: OrderedDict[int, OutFrame] = OrderedDict()
        self._buffer_limits = buffer_limits  # (frames, bytes) while there is no socket
        self._queue_limits = queue_limits  # (frames, bytes) for a live socket
        self._ack_cache_size = ack_cache_size

    @property
    def resumable(self) -> bool:
        return not self.overflowed and not self.closed

    def enqueue(self, frame: OutFrame) -> bool:
        """Queue a frame for the socket (or the resume buffer). False means the outbox
        overflowed: it has been emptied and the connection can no longer be resumed."""
        if self.closed or self.overflowed:
            return True
        if self.transport is None and not frame.bufferable:
            return True
        self.outbox.append(frame)
        self.outbox_bytes += frame.size
        if self._over_limit():
            self._overflow()
            return False
        if self.transport is not None:
            self.transport.notify()
        return True

    def _over_limit(self) -> bool:
        frames, size = self._queue_limits if self.transport is not None else self._buffer_limits
        return len(self.outbox) > frames or self.outbox_bytes > size

    def _overflow(self) -> None:
        self.overflowed = True
        self.outbox.clear()
        self.outbox_bytes = 0

    def take_frame(self) -> OutFrame | None:
        if not self.outbox:
            return None
        frame = self.outbox.popleft()
        self.outbox_bytes -= frame.size
        return frame

    def untake_frame(self, frame: OutFrame) -> None:
        """Put back a frame the socket refused before writing any of it."""
        self.outbox.appendleft(frame)
        self.outbox_bytes += frame.size

    def keep_only_bufferable(self) -> bool:
        """On losing the socket, keep what the client cannot regenerate: MESSAGE, PRESENCE.
        False if that is already more than the resume buffer may hold."""
        kept = [frame for frame in self.outbox if frame.bufferable]
        self.outbox = deque(kept)
        self.outbox_bytes = sum(frame.size for frame in kept)
        if self.transport is None and self._over_limit():
            self._overflow()
            return False
        return True

    def remembered_ack(self, msg_serial: int) -> OutFrame | None:
        """The ACK/NACK already sent for this msgSerial: the SDK re-sends un-ACKed messages
        with their original msgSerial after a resume (RTN19a), and they must not publish twice."""
        return self._acks.get(msg_serial)

    def remember_ack(self, msg_serial: int, frame: OutFrame) -> None:
        self._acks[msg_serial] = frame
        while len(self._acks) > self._ack_cache_size:
            self._acks.popitem(last=False)
