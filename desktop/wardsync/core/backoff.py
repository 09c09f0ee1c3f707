"""Capped exponential backoff with jitter, for retrying pulls and reconnects.

The base delay for attempt n (0-based) is `min(cap_s, initial_s * factor**n)`. Jitter spreads
the retries of many workstations that lost the server at the same moment, so they do not
all come back in the same instant (AWS Architecture Blog, "Exponential Backoff and Jitter",
2015):

- `Jitter.NONE`: exactly the base delay (tests, or a single client);
- `Jitter.FULL`: uniform in [0, base] — the widest spread, lowest total load;
- `Jitter.EQUAL`: base/2 + uniform in [0, base/2] — never retries sooner than half the base.
"""

from __future__ import annotations

import math
import random
from enum import StrEnum


class Jitter(StrEnum):
    NONE = "none"
    FULL = "full"
    EQUAL = "equal"


class Backoff:
    """Delays for successive retry attempts; deterministic given a seeded `rng`."""

    def __init__(
        self,
        initial_s: float,
        factor: float = 2.0,
        cap_s: float = 60.0,
        jitter: Jitter | str = Jitter.FULL,
        rng: random.Random | None = None,
    ) -> None:
        if not (math.isfinite(initial_s) and initial_s > 0):
            raise ValueError(f"initial_s must be a positive number of seconds, got {initial_s!r}")
        if not (math.isfinite(factor) and factor >= 1):
            raise ValueError(f"factor must be at least 1, got {factor!r}")
        if not (math.isfinite(cap_s) and cap_s >= initial_s):
            raise ValueError(f"cap_s must be at least initial_s ({initial_s}), got {cap_s!r}")
        self.initial_s = float(initial_s)
        self.factor = float(factor)
        self.cap_s = float(cap_s)
        self.jitter = Jitter(jitter)
        self._rng = rng if rng is not None else random.Random()

    def base(self, attempt: int) -> float:
        """The un-jittered delay of `attempt` (0 for the first retry), capped at `cap_s`."""
        if attempt < 0:
            raise ValueError(f"attempt must be >= 0, got {attempt}")
        # Compare exponents instead of computing factor**attempt, which overflows a float
        # long before a reconnect loop gives up (2.0**1100).
        if self.factor > 1 and attempt * math.log(self.factor) >= math.log(
            self.cap_s / self.initial_s
        ):
            return self.cap_s
        return min(self.cap_s, self.initial_s * self.factor**attempt)

    def delay(self, attempt: int) -> float:
        """The delay to wait before retry number `attempt` (0-based), jitter applied."""
        base = self.base(attempt)
        if self.jitter is Jitter.FULL:
            return self._rng.uniform(0.0, base)
        if self.jitter is Jitter.EQUAL:
            return base / 2 + self._rng.uniform(0.0, base / 2)
        return base
