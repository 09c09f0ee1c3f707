"""Poke intake: validate every realtime message, drop duplicates, notice gaps, invalidate keys.

A poke is a hint, never data (docs/architecture.md §2). A message that is not exactly a poke is
rejected, counted and logged by reason only — its content could carry patient data if a relay
misbehaved — and the connection stays up. A sequence gap that is still open after a short grace
period (pokes may arrive out of order) triggers a catch-up pull of every open query.

Relay heartbeats (message name `heartbeat`, core/heartbeats.py) are checked as strictly and
rejected alike; a good one is a sign of life (`last_heard`, `on_heard`) and its `seq` closes
the tail: a seq above the highest poke seen opens a gap exactly as a missing number does.
Pokes are signs of life too. `heartbeat` stays None until the channel's first heartbeat: a
relay that never sends them (an older one) never makes the workstation expect them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from wardsync.core.clock import Clock
from wardsync.core.defaults import SEQ_GAP_GRACE_S
from wardsync.core.events import Event, PokeAccepted, PokeRejectedEvent
from wardsync.core.heartbeats import HEARTBEAT_MESSAGE_NAME, Heartbeat, parse_heartbeat
from wardsync.core.metrics import MetricsSink, NullMetrics
from wardsync.core.pokes import Poke, PokeRejected, parse_poke
from wardsync.core.seq import SeqTracker
from wardsync.core.timer import SYSTEM_TIMER
from wardsync.sync.realtime import UndecodableMessage

log = logging.getLogger(__name__)

class PokeIntake:
    """Turns messages of one poke channel into key invalidations."""

    def __init__(
        self,
        *,
        invalidate: Callable[[Poke], int],
        on_gap: Callable[[], None],
        publish: Callable[[Event], None] | None = None,
        clock: Clock | None = None,
        metrics: MetricsSink | None = None,
        gap_grace_s: float = SEQ_GAP_GRACE_S,
        on_heard: Callable[[], None] | None = None,
    ) -> None:
        self._invalidate = invalidate
        self._on_gap = on_gap
        self._publish = publish
        self._clock = clock or SYSTEM_TIMER  # the workstation passes its timer
        self._metrics = metrics or NullMetrics()
        self.gap_grace_s = gap_grace_s
        self.seq = SeqTracker()
        self.accepted = 0
        self.duplicates = 0
        self.rejected: Counter[str] = Counter()
        self.gaps = 0
        self._on_heard = on_heard
        self.heartbeats = 0
        self.heartbeat: Heartbeat | None = None  # the latest; None: none seen on the channel
        self.last_heard: float | None = None  # monotonic time of the latest poke or heartbeat

    def on_message(self, message: Any) -> None:
        """Realtime listener: `message` is an ably Message (its `data`) or raw data."""
        if isinstance(message, UndecodableMessage):
            # Taken out of its frame before the SDK could drop it (sync/realtime.py).
            self._reject(message.reason)
            return
        data = getattr(message, "data", message)
        if getattr(message, "name", None) == HEARTBEAT_MESSAGE_NAME:
            self._on_heartbeat(data)
            return
        try:
            poke = parse_poke(data)
        except PokeRejected as exc:
            self._reject(exc.reason)
            return
        if self.seq.observe(poke.seq, self._clock.monotonic()) == "duplicate":
            self.duplicates += 1
            return
        self.accepted += 1
        self._metrics.emit(
            "poke_received", ref=poke.ref, versionId=poke.version_id, seq=poke.seq,
            priority=poke.priority, type=poke.type,
        )
        if self._publish is not None:
            self._publish(PokeAccepted(poke=poke))
        self._invalidate(poke)
        self._heard()

    def _on_heartbeat(self, data: Any) -> None:
        try:
            heartbeat = parse_heartbeat(data)
        except PokeRejected as exc:
            self._reject(exc.reason)
            return
        self.heartbeats += 1
        self.heartbeat = heartbeat
        if self.seq.announced(heartbeat.seq, self._clock.monotonic()):
            log.info("relay heartbeat names a seq not received: a gap at the tail")
        self._heard()

    def _heard(self) -> None:
        self.last_heard = self._clock.monotonic()
        if self._on_heard is not None:
            self._on_heard()

    def _reject(self, reason: str) -> None:
        self.rejected[reason] += 1
        log.warning("rejected a realtime message: %s", reason)
        self._metrics.emit("poke_rejected", reason=reason)
        if self._publish is not None:
            self._publish(PokeRejectedEvent(reason=reason))

    def check_gaps(self) -> bool:
        """Called periodically: run the catch-up if a gap outlived the grace period."""
        now = self._clock.monotonic()
        due = self.seq.due_gaps(now, self.gap_grace_s)
        if not due:
            return False
        # The catch-up pulls everything changed until now, so it also covers the gaps still
        # inside their grace period: forget those too rather than catch up again for them.
        covered = [*due, *self.seq.due_gaps(now, 0.0)]
        self.gaps += len(covered)
        log.info("poke sequence gap (%d missing): catching up", sum(g.count for g in covered))
        self._on_gap()
        return True

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())
