"""Timers: the one way code waits, so every timeline can run on fake time in tests.

A `Timer` is a `Clock` (monotonic and wall time) that can also `sleep` and `call_later`.
Production code takes a `Timer` and never calls `asyncio.sleep`, `loop.call_later`,
`time.monotonic` or `datetime.now` itself; `SystemTimer` is the real one and `FakeTimer` moves
only when a test says so, waking each sleeper and callback at its own deadline, in deadline
order (ties in the order they were scheduled). This is how the workstation's status timeline
(live → degraded → polling → live) is asserted with exact timestamps (docs/style.md §11,
fake clocks with timeline assertions; docs/architecture.md §6).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from wardsync.core.clock import DEFAULT_FAKE_WALL_S, Clock, FakeClock, SystemClock

_T = TypeVar("_T")

# Event-loop turns `FakeTimer.advance` lets every ready task run for, between deadlines.
SETTLE_ROUNDS = 50


class TimerHandle(Protocol):
    """A scheduled callback that can still be called off."""

    def cancel(self) -> None: ...


class Timer(Clock, Protocol):
    """Where time comes from and how to wait for it."""

    async def sleep(self, delay_s: float) -> None:
        """Wait `delay_s` seconds of monotonic time."""
        ...

    def call_later(self, delay_s: float, callback: Callable[[], object]) -> TimerHandle:
        """Call `callback()` once, `delay_s` seconds from now, on the running event loop."""
        ...


class SystemTimer(SystemClock):
    """The process's real clocks and the running event loop's timers."""

    async def sleep(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)

    def call_later(self, delay_s: float, callback: Callable[[], object]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(delay_s, callback)


SYSTEM_TIMER = SystemTimer()


class _FakeHandle:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


async def settle(rounds: int = SETTLE_ROUNDS) -> None:
    """Let every task that can make progress without real time do so."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class FakeTimer:
    """Fake time: sleeps and callbacks wait until `advance` moves the clock past them.

    `requested` lists every sleep delay asked for, in order (timeline assertions). Its clock
    is a `FakeClock` (held, not inherited: moving this one is a coroutine, it fires timers).
    """

    def __init__(self, monotonic: float = 0.0, wall: float = DEFAULT_FAKE_WALL_S) -> None:
        # Has a FakeClock rather than being one: `advance` here is a coroutine (it wakes the
        # sleepers), so a FakeTimer must not pass where a FakeClock's plain `advance` is called.
        self._clock = FakeClock(monotonic=monotonic, wall=wall)
        self.requested: list[float] = []
        self._due: list[tuple[float, int, asyncio.Future[None] | _FakeHandle]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self._clock.monotonic()

    def wall(self) -> float:
        return self._clock.wall()

    def set_wall(self, epoch_s: float) -> None:
        """Set the wall clock alone, as when the OS corrects the time; monotonic is unchanged."""
        self._clock.set_wall(epoch_s)

    async def sleep(self, delay_s: float) -> None:
        self.requested.append(delay_s)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._due, (self.monotonic() + max(0.0, delay_s), next(self._order), fut))
        await fut

    def call_later(self, delay_s: float, callback: Callable[[], object]) -> TimerHandle:
        handle = _FakeHandle(callback)
        heapq.heappush(self._due, (self.monotonic() + max(0.0, delay_s), next(self._order),
                                   handle))
        return handle

    def pending(self) -> list[float]:
        """Remaining delays of the sleeps and callbacks still waiting, soonest first."""
        now = self.monotonic()
        return sorted(round(due - now, 9) for due, _, item in self._due if _live(item))

    async def advance(self, seconds: float) -> None:
        """Move time forward `seconds`, firing each sleeper and callback at its own deadline."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (advance by {seconds} s)")
        await settle()
        target = self.monotonic() + seconds
        while self._due and self._due[0][0] <= target + 1e-9:
            due, _, item = heapq.heappop(self._due)
            if not _live(item):
                continue
            self._clock.advance(max(0.0, due - self.monotonic()))
            if isinstance(item, _FakeHandle):
                item.cancelled = True  # fired: a later cancel() is a no-op, as with asyncio
                item.callback()
            else:
                item.set_result(None)
            await settle()
        self._clock.advance(max(0.0, target - self.monotonic()))
        await settle()

    async def run_until(self, predicate: Callable[[], bool], *, step_s: float,
                        limit_s: float) -> float:
        """Advance in `step_s` steps until `predicate()` holds; returns the time it took.

        Raises TimeoutError after `limit_s` of fake time.
        """
        start = self.monotonic()
        while not predicate():
            if self.monotonic() - start >= limit_s:
                raise TimeoutError(f"condition not met within {limit_s} s of fake time")
            await self.advance(step_s)
        return self.monotonic() - start


async def wait_for(timer: Timer, awaitable: Awaitable[_T], timeout_s: float) -> _T:
    """`asyncio.wait_for` on `timer`'s time: the result of `awaitable`, or TimeoutError (and
    `awaitable` cancelled) once `timeout_s` has passed on `timer`.

    Cancelling the caller cancels both and re-raises; unlike `asyncio.wait_for` on Python 3.11
    a cancellation that arrives as `awaitable` completes is never swallowed (bpo-42130).
    """
    inner = asyncio.ensure_future(awaitable)
    deadline = asyncio.ensure_future(timer.sleep(timeout_s))
    try:
        await asyncio.wait((inner, deadline), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        inner.cancel()
        deadline.cancel()
        await asyncio.gather(inner, deadline, return_exceptions=True)
        raise
    deadline.cancel()
    if inner.done():
        await asyncio.gather(deadline, return_exceptions=True)
        return inner.result()
    inner.cancel()
    await asyncio.gather(inner, deadline, return_exceptions=True)
    raise TimeoutError(f"no result within {timeout_s:g} s")


async def wait_until_set(timer: Timer, event: asyncio.Event, timeout_s: float | None) -> None:
    """Wait until `event` is set or `timeout_s` has passed on `timer` (None: no limit).

    The timeout sets `event` itself, so a loop that clears the event before looking at its
    state wakes the same way for news and for a deadline, and re-checks both. A timer callback
    rather than `asyncio.wait_for`: on Python 3.11 wait_for swallows a cancellation that
    arrives as the event completes (bpo-42130), which would leave the loop running after its
    owner closed it.
    """
    alarm = timer.call_later(max(0.0, timeout_s), event.set) if timeout_s is not None else None
    try:
        await event.wait()
    finally:
        if alarm is not None:
            alarm.cancel()


def _live(item: asyncio.Future[None] | _FakeHandle) -> bool:
    if isinstance(item, _FakeHandle):
        return not item.cancelled
    return not item.done()
