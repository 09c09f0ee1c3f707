"""Sequence tracking for one poke channel: duplicates out, gaps noticed.

The backend numbers the pokes of a channel 1, 2, 3, ... A missing number means a poke was
lost (a reconnect that could not resume, a relay hiccup); once it has stayed missing for a
grace period the caller runs a catch-up pull. Pokes can arrive out of order, so a hole is
only reported after the grace period, and a late arrival fills its hole.

Memory is bounded: seen numbers are remembered for a window of recent values and open gaps
are kept as ranges, at most `max_gaps` of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

SEQ_WINDOW: Final = 4096  # how many recent sequence numbers are remembered for dedup
MAX_OPEN_GAPS: Final = 256  # more disjoint holes than this are coalesced into one range

SeqVerdict = Literal["accept", "duplicate"]


@dataclass(frozen=True, slots=True)
class Gap:
    """Sequence numbers `first`..`last` (inclusive) missing since `opened_at` (monotonic s)."""

    first: int
    last: int
    opened_at: float

    @property
    def count(self) -> int:
        return self.last - self.first + 1


class SeqTracker:
    """Classifies the sequence numbers of one channel and reports lasting gaps.

    The first number seen is the baseline; anything below it, or already seen, is a
    duplicate. Call `reset()` after a catch-up pull or when the publisher's numbering
    restarts (a new connection that could not resume), so the next number is a new baseline.
    """

    def __init__(self, *, window: int = SEQ_WINDOW, max_gaps: int = MAX_OPEN_GAPS) -> None:
        if window < 1 or max_gaps < 1:
            raise ValueError("window and max_gaps must be at least 1")
        self._window = window
        self._max_gaps = max_gaps
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next observed number becomes the baseline."""
        self._baseline: int | None = None
        self._highest = 0
        self._seen: set[int] = set()
        self._gaps: list[Gap] = []  # disjoint, sorted by `first`

    @property
    def baseline(self) -> int | None:
        return self._baseline

    @property
    def highest(self) -> int | None:
        """The highest number seen since the last reset (None before the first)."""
        return None if self._baseline is None else self._highest

    @property
    def open_gaps(self) -> tuple[Gap, ...]:
        """Holes not yet reported by `due_gaps`, in sequence order."""
        return tuple(self._gaps)

    def observe(self, seq: int, now: float) -> SeqVerdict:
        """Record `seq` received at monotonic time `now`; "duplicate" means drop it."""
        if self._baseline is None:
            self._baseline = self._highest = seq
            self._seen = {seq}
            return "accept"
        if seq < self._baseline or seq in self._seen:
            return "duplicate"
        if seq > self._highest:
            if seq > self._highest + 1:
                self._open_gap(Gap(self._highest + 1, seq - 1, now))
            self._highest = seq
            self._remember(seq)
            return "accept"
        if self._fill(seq):
            self._remember(seq)
            return "accept"
        if seq <= self._highest - self._window:
            # Too old to tell; it is not an open hole, so it was seen or already reported.
            return "duplicate"
        # A hole that was already reported (a catch-up is under way): harmless to accept.
        self._remember(seq)
        return "accept"

    def announced(self, seq: int, now: float) -> bool:
        """The publisher says `seq` and everything below it went out (a relay heartbeat):
        numbers above the highest seen up to `seq` that never arrived are a gap opened at
        `now` (tail loss), handled like any other. Before any number was seen, `seq` becomes
        the baseline (numbers after it are news). True if a gap opened."""
        if self._baseline is None:
            self._baseline, self._highest, self._seen = seq + 1, seq, set()
            return False
        if seq <= self._highest:
            return False
        self._open_gap(Gap(self._highest + 1, seq, now))
        self._highest = seq
        return True

    def due_gaps(self, now: float, grace_s: float) -> list[Gap]:
        """Gaps open for at least `grace_s` at `now`; each gap is reported once."""
        due = [g for g in self._gaps if now - g.opened_at >= grace_s]
        if due:
            self._gaps = [g for g in self._gaps if now - g.opened_at < grace_s]
        return due

    def _remember(self, seq: int) -> None:
        self._seen.add(seq)
        # Prune lazily (amortised O(1)): keep only the window below the highest number.
        if len(self._seen) > 2 * self._window:
            floor = self._highest - self._window
            self._seen = {s for s in self._seen if s > floor}

    def _open_gap(self, gap: Gap) -> None:
        self._gaps.append(gap)  # above every open gap, so the list stays sorted
        self._bound_gaps()

    def _bound_gaps(self) -> None:
        if len(self._gaps) > self._max_gaps:
            # Too many disjoint holes: keep one covering range instead. Numbers that did
            # arrive fall inside it, which only makes the catch-up it triggers wider.
            self._gaps = [
                Gap(
                    self._gaps[0].first,
                    self._gaps[-1].last,
                    min(g.opened_at for g in self._gaps),
                )
            ]

    def _fill(self, seq: int) -> bool:
        for i, gap in enumerate(self._gaps):
            if gap.first <= seq <= gap.last:
                pieces = []
                if gap.first < seq:
                    pieces.append(Gap(gap.first, seq - 1, gap.opened_at))
                if seq < gap.last:
                    pieces.append(Gap(seq + 1, gap.last, gap.opened_at))
                self._gaps[i : i + 1] = pieces
                self._bound_gaps()
                return True
            if gap.first > seq:
                return False
        return False
