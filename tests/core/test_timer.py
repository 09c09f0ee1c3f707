"""Fake time wakes sleepers and callbacks at their own deadlines, in order; real time sleeps."""

from __future__ import annotations

import asyncio

import pytest

from wardsync.core.timer import SYSTEM_TIMER, FakeTimer, Timer, wait_for, wait_until_set


async def test_sleepers_and_callbacks_fire_at_their_deadlines_in_order() -> None:
    timer = FakeTimer(monotonic=100.0)
    fired: list[tuple[str, float]] = []

    async def sleeper(name: str, delay: float) -> None:
        await timer.sleep(delay)
        fired.append((name, timer.monotonic()))

    tasks = [asyncio.create_task(sleeper("b", 2.0)), asyncio.create_task(sleeper("a", 1.0))]
    timer.call_later(1.5, lambda: fired.append(("cb", timer.monotonic())))
    await timer.advance(0.5)
    assert fired == []
    assert timer.pending() == [0.5, 1.0, 1.5]
    await timer.advance(3.0)
    assert fired == [("a", 101.0), ("cb", 101.5), ("b", 102.0)]
    assert timer.monotonic() == 103.5
    assert timer.requested == [2.0, 1.0]
    await asyncio.gather(*tasks)


async def test_a_cancelled_callback_or_sleeper_never_fires() -> None:
    timer = FakeTimer()
    fired: list[str] = []
    handle = timer.call_later(1.0, lambda: fired.append("cb"))
    task = asyncio.create_task(timer.sleep(1.0))
    await timer.advance(0.1)
    handle.cancel()
    task.cancel()
    await timer.advance(5.0)
    assert fired == []
    assert timer.pending() == []
    assert task.cancelled()


async def test_wall_time_moves_with_monotonic_time() -> None:
    timer = FakeTimer(monotonic=0.0, wall=1000.0)
    await timer.advance(2.5)
    assert (timer.monotonic(), timer.wall()) == (2.5, 1002.5)
    with pytest.raises(ValueError, match="backwards"):
        await timer.advance(-1)


async def test_run_until_reports_the_fake_time_taken_and_gives_up_at_the_limit() -> None:
    timer = FakeTimer()
    flag: list[bool] = []
    timer.call_later(3.0, lambda: flag.append(True))
    assert await timer.run_until(lambda: bool(flag), step_s=0.5, limit_s=10) == 3.0
    with pytest.raises(TimeoutError):
        await timer.run_until(lambda: False, step_s=1.0, limit_s=2.0)


async def test_the_system_timer_really_waits() -> None:
    timer: Timer = SYSTEM_TIMER
    start = timer.monotonic()
    await timer.sleep(0.02)
    called = asyncio.Event()
    timer.call_later(0.01, called.set)
    await asyncio.wait_for(called.wait(), 2.0)
    assert timer.monotonic() - start >= 0.02


async def test_wait_for_on_fake_time_returns_the_result_or_times_out_at_the_deadline() -> None:
    timer = FakeTimer()
    done = asyncio.Event()

    async def answer() -> str:
        await done.wait()
        return "echo"

    waiting = asyncio.ensure_future(wait_for(timer, answer(), 5.0))
    await timer.advance(4.0)
    done.set()
    assert await waiting == "echo"
    assert timer.pending() == [], "the deadline is called off once answered"

    never = asyncio.Event()
    waiting = asyncio.ensure_future(wait_for(timer, never.wait(), 5.0))
    await timer.advance(4.999)
    assert not waiting.done()
    await timer.advance(0.001)
    with pytest.raises(TimeoutError):
        await waiting


async def test_wait_for_passes_the_awaitables_error_and_its_caller_s_cancellation() -> None:
    timer = FakeTimer()

    async def boom() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError):
        await wait_for(timer, boom(), 1.0)
    inner_cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            inner_cancelled.set()
            raise

    waiting = asyncio.ensure_future(wait_for(timer, forever(), 60.0))
    await timer.advance(1.0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert inner_cancelled.is_set()
    assert timer.pending() == []


async def test_wait_until_set_wakes_on_the_event_or_at_the_deadline_by_setting_it() -> None:
    timer = FakeTimer()
    wake = asyncio.Event()
    waiting = asyncio.ensure_future(wait_until_set(timer, wake, 5.0))
    await timer.advance(2.0)
    wake.set()
    await waiting
    assert timer.pending() == [], "the deadline is called off once woken"

    wake.clear()
    waiting = asyncio.ensure_future(wait_until_set(timer, wake, 5.0))
    await timer.advance(4.999)
    assert not waiting.done()
    await timer.advance(0.001)
    await waiting
    assert wake.is_set(), "the deadline wakes the waiter through the event"

    wake.clear()
    waiting = asyncio.ensure_future(wait_until_set(timer, wake, None))
    await timer.advance(3600.0)
    assert not waiting.done() and timer.pending() == []
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_past_deadline_wakes_at_once_and_cancelling_calls_the_deadline_off() -> None:
    timer = FakeTimer()
    wake = asyncio.Event()
    waiting = asyncio.ensure_future(wait_until_set(timer, wake, -3.0))
    await timer.advance(0.0)
    assert waiting.done()
    wake.clear()
    waiting = asyncio.ensure_future(wait_until_set(timer, wake, 60.0))
    await timer.advance(1.0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert timer.pending() == [] and not wake.is_set()
