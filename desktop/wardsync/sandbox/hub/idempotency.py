"""Idempotent publishing as Ably does it: a message id seen on a channel in the last two
minutes is acknowledged again and not delivered again (RSL1k; Ably docs "Idempotent
publishing").

Ably's rules for client-supplied ids (error 40031, "Invalid client-specified message id"):
an id is a non-empty string, and in a multi-message publish every message carries one, all
of the form `<base id>:<index>` with one base and the index its position, from 0.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from wardsync.sandbox.hub.config import IDEMPOTENCY_WINDOW_S
from wardsync.sandbox.hub.wire import HubError

INVALID_MESSAGE_ID = 40031


def check_message_ids(messages: Sequence[dict[str, Any]]) -> None:
    """Raise HubError 40031 unless the messages' ids follow Ably's rules (module docstring)."""
    ids = [m.get("id") for m in messages]
    if any(i == "" for i in ids):
        raise HubError(INVALID_MESSAGE_ID, 400, "Client-specified message id cannot be empty")
    if len(messages) < 2 or all(i is None for i in ids):
        return
    bases: set[str] = set()
    for index, message_id in enumerate(ids):
        base, colon, position = message_id.rpartition(":") if isinstance(message_id, str) else (
            "", "", "")
        if not colon or not base or position != str(index):
            raise HubError(
                INVALID_MESSAGE_ID, 400,
                "Client-specified message ids do not match the required format for "
                "multi-message ProtocolMessages",
            )
        bases.add(base)
    if len(bases) != 1:
        raise HubError(INVALID_MESSAGE_ID, 400,
                       "Client-specified message ids must share one base id")


class RecentMessageIds:
    """Message ids published per channel in the last `window_s`, with the serial each got.

    Kept apart from the channel's history so that neither history trimming nor the eviction
    of an idle channel shortens the window. `per_channel_cap` bounds memory under a flood
    (Ably itself limits a channel to 50 messages/s, 6000 in a window); beyond it a channel's
    oldest ids are forgotten early.
    """

    def __init__(self, *, window_s: float = IDEMPOTENCY_WINDOW_S, per_channel_cap: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._cap = per_channel_cap
        self._clock = clock
        # channel -> id -> (serial, expires_at); insertion order is expiry order.
        self._seen: dict[str, OrderedDict[str, tuple[str, float]]] = {}

    def serial_of(self, channel: str, message_id: object) -> str | None:
        """The serial of the message published with this id within the window, or None."""
        if not isinstance(message_id, str):
            return None
        ids = self._seen.get(channel)
        if ids is None:
            return None
        self._expire(channel, ids, self._clock())
        known = ids.get(message_id)
        return known[0] if known is not None else None

    def remember(self, channel: str, message_id: str, serial: str) -> None:
        ids = self._seen.setdefault(channel, OrderedDict())
        ids[message_id] = (serial, self._clock() + self.window_s)
        ids.move_to_end(message_id)
        while len(ids) > self._cap:
            ids.popitem(last=False)

    def prune(self) -> None:
        """Forget every expired id (called from the hub's periodic tick)."""
        now = self._clock()
        for channel, ids in list(self._seen.items()):
            self._expire(channel, ids, now)

    def _expire(self, channel: str, ids: OrderedDict[str, tuple[str, float]], now: float) -> None:
        while ids and next(iter(ids.values()))[1] <= now:
            ids.popitem(last=False)
        if not ids:
            self._seen.pop(channel, None)

    def __len__(self) -> int:
        return sum(len(ids) for ids in self._seen.values())
