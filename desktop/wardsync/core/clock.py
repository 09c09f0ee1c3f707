"""Time sources: the real one and a settable one for deterministic tests.

Durations (timeouts, backoff, grace periods) use `monotonic()`, which never jumps when the
workstation's wall clock is corrected; `wall()` is only for timestamps shown or logged.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Where the current time comes from."""

    def monotonic(self) -> float:
        """Seconds on a clock that only moves forward (arbitrary origin)."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch (may jump when the system clock is set)."""
        ...


class SystemClock:
    """The process's real clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


DEFAULT_FAKE_WALL_S = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class FakeClock:
    """A clock that moves only when told to (tests, simulations, benchmarks)."""

    def __init__(self, monotonic: float = 0.0, wall: float = DEFAULT_FAKE_WALL_S) -> None:
        self._monotonic = float(monotonic)
        # Wall time is kept as an offset from monotonic time, so the wall clock at a given
        # fake instant is the same number however the test got there (exact timelines).
        self._wall_offset = float(wall) - self._monotonic

    def monotonic(self) -> float:
        return self._monotonic

    def wall(self) -> float:
        return self._wall_offset + self._monotonic

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by `seconds` (never backwards: monotonic must stay so)."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (advance by {seconds} s)")
        self._monotonic += seconds

    def set_wall(self, epoch_s: float) -> None:
        """Set the wall clock alone, as when the OS corrects the time; monotonic is unchanged."""
        self._wall_offset = float(epoch_s) - self._monotonic
