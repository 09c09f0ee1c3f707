"""A switch that makes the sandbox FHIR endpoints misbehave for a while, for tests.

One fault is active at a time; a new call replaces it and `clear()` ends it at once (waiting
requests are released). Periods are measured on an injectable monotonic clock; waits re-read
it every `FAULT_POLL_INTERVAL_S`, so a test that advances a fake clock ends them too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

FAULT_POLL_INTERVAL_S = 0.02


@dataclass(frozen=True, slots=True)
class _Fault:
    kind: str  # "fail" | "slow" | "hang"
    until: float  # clock time the fault ends
    status: int = 503
    delay_s: float = 0.0


class FhirFaults:
    """Fault injection for the FHIR endpoints (all of `{prefix}/*` except /metadata)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._fault: _Fault | None = None
        self._generation = 0

    def fail(self, status: int = 503, for_s: float = 30.0) -> None:
        """Answer every request with `status` (and an OperationOutcome) for `for_s` seconds."""
        if not 400 <= status <= 599:
            raise ValueError(f"a fault status must be 4xx or 5xx, not {status}")
        self._set(_Fault("fail", self._clock() + for_s, status=status))

    def slow(self, delay_s: float = 2.0, for_s: float = 30.0) -> None:
        """Delay every request by `delay_s` seconds, then serve it, for `for_s` seconds."""
        if delay_s < 0:
            raise ValueError("delay_s must not be negative")
        self._set(_Fault("slow", self._clock() + for_s, delay_s=delay_s))

    def hang(self, for_s: float = 30.0) -> None:
        """Send nothing until the period ends (or the client gives up), then serve."""
        self._set(_Fault("hang", self._clock() + for_s))

    def clear(self) -> None:
        """End any fault now; requests held by `slow` or `hang` proceed."""
        self._set(None)

    @property
    def active(self) -> str | None:
        """The fault in force ("fail", "slow" or "hang"), or None."""
        fault = self._current()
        return fault.kind if fault else None

    def retry_after_s(self) -> int | None:
        """Whole seconds until the current fault ends (for `Retry-After`), or None."""
        fault = self._current()
        if fault is None:
            return None
        return max(1, int(fault.until - self._clock() + 0.999))

    async def before_request(self) -> int | None:
        """Apply the fault to one request: wait as it says, and return a status to answer
        with instead of serving the request, or None to serve it."""
        fault = self._current()
        if fault is None:
            return None
        if fault.kind == "fail":
            return fault.status
        generation = self._generation
        deadline = fault.until if fault.kind == "hang" else self._clock() + fault.delay_s
        # Polling, not an Event: the injectable clock may be a fake one that tests advance.
        while self._generation == generation and self._clock() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(min(FAULT_POLL_INTERVAL_S, max(deadline - self._clock(), 0)))
        return None

    def _current(self) -> _Fault | None:
        fault = self._fault
        if fault is not None and self._clock() >= fault.until:
            self._fault = fault = None
        return fault

    def _set(self, fault: _Fault | None) -> None:
        self._fault = fault
        self._generation += 1
