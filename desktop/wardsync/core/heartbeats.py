"""The relay heartbeat: a small PHI-free liveness message on a ward channel.

The relay that leads publishes one on each ward channel it serves every `every_s` seconds
(message name `heartbeat`, never `poke`; docs/architecture.md §3.2, docs/realtime-protocol.md
§5), through the same per-ward publish order as the pokes:

    {"seq": <last seq the hub acknowledged on this ward>, "at": <epoch ms>, "every_s": 15}

A workstation that has seen one on a channel expects the next: silence for 3 × `every_s` on
a live link means the relay is down or cut off (the screen would lag silently), and a `seq`
above the highest poke seen means the last pokes of a burst were lost (tail loss). Parsing is
as strict as for pokes (core/pokes.py): exactly these keys, integers in range, at most
MAX_HEARTBEAT_BYTES; a rejection carries a reason code that is safe to log.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from wardsync.core.pokes import MAX_SEQ, PokeRejected, decode_strict_json

HEARTBEAT_MESSAGE_NAME: Final = "heartbeat"
POKE_MESSAGE_NAME: Final = "poke"
MAX_HEARTBEAT_BYTES: Final = 128
# The period a relay may announce (its `ably.heartbeat_s`); a workstation refuses others.
MIN_HEARTBEAT_S: Final = 1.0
MAX_HEARTBEAT_S: Final = 3600.0
# Silence for this many periods on a live link means the relay is not being heard.
MISSED_HEARTBEATS: Final = 3

_FIELDS: Final = frozenset({"seq", "at", "every_s"})


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A validated heartbeat: everything up to `seq` was acknowledged on the channel when it
    was sent (`at_ms`, the relay's wall clock), and the next comes `every_s` later."""

    seq: int
    at_ms: int
    every_s: float

    @property
    def silence_limit_s(self) -> float:
        """How long a live link may stay silent before the relay counts as not heard."""
        return MISSED_HEARTBEATS * self.every_s


def _reject(reason: str) -> PokeRejected:
    return PokeRejected(f"heartbeat_{reason}")


def parse_heartbeat(data: str | bytes | bytearray | Mapping[str, object]) -> Heartbeat:
    """Validate one heartbeat; raises `PokeRejected` (reason `heartbeat_<code>`) otherwise."""
    if isinstance(data, str | bytes | bytearray):
        try:
            obj = decode_strict_json(data, MAX_HEARTBEAT_BYTES)
        except PokeRejected as exc:
            raise _reject(exc.reason) from None
    else:
        obj = data
    if not isinstance(obj, Mapping):
        raise _reject("not_object")
    if any(type(k) is not str or k not in _FIELDS for k in obj):
        raise _reject("unknown_field")
    if any(name not in obj for name in _FIELDS):
        raise _reject("missing_field")
    seq, at, every = obj["seq"], obj["at"], obj["every_s"]
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:  # `type` rejects bool
        raise _reject("bad_seq")
    if type(at) is not int or not 0 <= at <= MAX_SEQ:
        raise _reject("bad_at")
    if type(every) not in (int, float) or not math.isfinite(every) or not (
            MIN_HEARTBEAT_S <= every <= MAX_HEARTBEAT_S):
        raise _reject("bad_every")
    return Heartbeat(seq=seq, at_ms=at, every_s=float(every))


def heartbeat_to_dict(heartbeat: Heartbeat) -> dict[str, object]:
    """The wire form; validated on the way out, so a relay never sends what clients refuse."""
    every: int | float = heartbeat.every_s
    if float(every).is_integer():
        every = int(every)
    wire: dict[str, object] = {"seq": heartbeat.seq, "at": heartbeat.at_ms, "every_s": every}
    parse_heartbeat(wire)
    return wire
