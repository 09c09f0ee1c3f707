"""One channel's state: bounded message history, presence members and subscribers.

Channel serials are `<incarnation>-<seq>`: `incarnation` is random per channel object, so a
serial from before a hub restart or a channel eviction is recognisably foreign and never
mistaken for a position in the current history.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wardsync.sandbox.hub.wire import PresenceAction

if TYPE_CHECKING:
    from wardsync.sandbox.hub.connection import Connection

_SERIAL_DIGITS = 12


@dataclass(slots=True)
class StoredMessage:
    """A published message as delivered: `wire` has id, name, data, encoding, clientId,
    connectionId, timestamp, serial and extras (absent fields omitted)."""

    seq: int
    wire: dict[str, Any]
    size: int

    @property
    def serial(self) -> str:
        return self.wire["serial"]

    @property
    def timestamp(self) -> int:
        return self.wire["timestamp"]


@dataclass(slots=True)
class Member:
    """A presence member, keyed `connectionId:clientId` (RTP2)."""

    connection_id: str
    client_id: str
    id: str
    timestamp: int
    data: Any
    encoding: str | None
    extras: Any

    @property
    def key(self) -> str:
        return f"{self.connection_id}:{self.client_id}"

    def same_payload(self, data: Any, encoding: str | None, extras: Any) -> bool:
        return (self.data, self.encoding or None, self.extras) == (data, encoding or None, extras)

    def to_wire(self, action: PresenceAction) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "action": int(action), "id": self.id, "clientId": self.client_id,
            "connectionId": self.connection_id, "timestamp": self.timestamp,
            "data": self.data,
        }
        if self.encoding:
            wire["encoding"] = self.encoding
        if self.extras is not None:
            wire["extras"] = self.extras
        return wire


def parse_serial(serial: object) -> tuple[str, int] | None:
    """(`incarnation`, `seq`) of a channel serial, or None if it is not one of ours."""
    if not isinstance(serial, str):
        return None
    incarnation, dash, seq = serial.rpartition("-")
    if not dash or not seq.isdigit():
        return None
    return incarnation, int(seq)


class Channel:
    """History, members and subscribers of one channel; caps come from HubConfig."""

    def __init__(self, name: str, *, history_limit: int, history_max_bytes: int) -> None:
        self.name = name
        self.incarnation = secrets.token_hex(5)
        self.seq = 0
        self.history: deque[StoredMessage] = deque()
        self.history_bytes = 0
        self.members: dict[str, Member] = {}
        self.subscribers: dict[str, Connection] = {}
        self._history_limit = history_limit
        self._history_max_bytes = history_max_bytes
        self.last_used = time.monotonic()

    def serial_of(self, seq: int) -> str:
        return f"{self.incarnation}-{seq:0{_SERIAL_DIGITS}d}"

    @property
    def last_serial(self) -> str:
        return self.serial_of(self.seq)

    @property
    def idle(self) -> bool:
        """Nobody attached and nobody present: safe to evict under the channel cap."""
        return not self.subscribers and not self.members

    def append(self, wire: dict[str, Any], size: int) -> StoredMessage:
        """Give `wire` the next serial and keep it in history (trimmed to the caps)."""
        self.seq += 1
        wire["serial"] = self.serial_of(self.seq)
        stored = StoredMessage(self.seq, wire, size)
        self.history.append(stored)
        self.history_bytes += size
        while self.history and (
            len(self.history) > self._history_limit
            or self.history_bytes > self._history_max_bytes
        ):
            self.history_bytes -= self.history.popleft().size
        self.last_used = time.monotonic()
        return stored

    def history_after(self, serial: object) -> tuple[list[StoredMessage], bool]:
        """Messages after `serial` and whether they are everything since then (no gap)."""
        parsed = parse_serial(serial)
        if parsed is None or parsed[0] != self.incarnation or parsed[1] > self.seq:
            return [], False
        after = parsed[1]
        missed = [m for m in self.history if m.seq > after]
        complete = after == self.seq or (bool(self.history) and self.history[0].seq <= after + 1)
        return missed, complete

    def query(self, *, limit: int, backwards: bool, start: int | None, end: int | None,
              cursor: int | None) -> tuple[list[StoredMessage], int | None]:
        """One page of history (REST RSL2) and the cursor (a seq) for the next page."""
        items: Iterator[StoredMessage] = reversed(self.history) if backwards else iter(self.history)
        page: list[StoredMessage] = []
        for message in items:
            if cursor is not None and (
                message.seq >= cursor if backwards else message.seq <= cursor
            ):
                continue
            if start is not None and message.timestamp < start:
                continue
            if end is not None and message.timestamp > end:
                continue
            if len(page) == limit:
                return page, page[-1].seq
            page.append(message)
        return page, None

    def members_of(self, connection_id: str) -> list[Member]:
        return [m for m in self.members.values() if m.connection_id == connection_id]
